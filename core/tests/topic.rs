//! Tests of `jetmq_core::topic`: validation, matching, shared subscriptions and the NATS subject
//! mapping (tables from the NATS server's own tests, see `facts/nats-mqtt.md` §3).

use std::borrow::Cow;

use bytes::Bytes;
use jetmq_core::topic::subject::{
    filter_parent_subject, filter_to_subject, is_reserved_subject_filter, mqtt_to_subject,
    subject_to_filter, subject_to_topic, subject_to_topic_name, topic_to_subject,
};
use jetmq_core::topic::{Subscription, TopicError, TopicFilter, TopicName, MAX_TOPIC_LEN};
use proptest::prelude::*;

fn name(text: &str) -> TopicName {
    TopicName::try_from(text).unwrap_or_else(|e| panic!("{text:?} should be a valid name: {e}"))
}

fn filter(text: &str) -> TopicFilter {
    TopicFilter::try_from(text).unwrap_or_else(|e| panic!("{text:?} should be a valid filter: {e}"))
}

fn filter_subject(f: &str) -> String {
    filter_to_subject(&filter(f)).into_owned()
}

fn matches(f: &str, t: &str) -> bool {
    filter(f).matches(&name(t))
}

// ---------------------------------------------------------------------------------------------
// One test per error variant.

#[test]
fn error_empty() {
    assert_eq!(TopicName::try_from(""), Err(TopicError::Empty));
    assert_eq!(TopicFilter::try_from(""), Err(TopicError::Empty));
    assert_eq!(Subscription::try_from(""), Err(TopicError::Empty));
    assert_eq!(TopicError::Empty.to_string(), "topic cannot be empty");
}

#[test]
fn error_too_long() {
    let max = "a".repeat(MAX_TOPIC_LEN);
    assert!(TopicName::try_from(max.as_str()).is_ok());
    assert!(TopicFilter::try_from(max.as_str()).is_ok());
    let over = "a".repeat(MAX_TOPIC_LEN + 1);
    let err = TopicError::TooLong {
        len: MAX_TOPIC_LEN + 1,
    };
    assert_eq!(TopicName::try_from(over.as_str()), Err(err));
    assert_eq!(TopicFilter::try_from(over.as_str()), Err(err));
    let shared = format!("$share/g/{over}");
    assert_eq!(
        Subscription::try_from(shared.as_str()),
        Err(TopicError::TooLong { len: shared.len() })
    );
    assert!(err.to_string().contains("65536"));
}

#[test]
fn error_invalid_utf8() {
    let bytes = Bytes::from_static(b"a/\xff");
    assert_eq!(
        TopicName::from_bytes(bytes.clone()),
        Err(TopicError::InvalidUtf8)
    );
    assert_eq!(
        TopicFilter::from_bytes(bytes.clone()),
        Err(TopicError::InvalidUtf8)
    );
    assert_eq!(
        Subscription::from_bytes(bytes),
        Err(TopicError::InvalidUtf8)
    );
    // A surrogate encoded as UTF-8 is refused too.
    let surrogate = Bytes::from_static(b"\xed\xa0\x80");
    assert_eq!(
        TopicName::from_bytes(surrogate),
        Err(TopicError::InvalidUtf8)
    );
    assert!(!TopicError::InvalidUtf8.to_string().is_empty());
}

#[test]
fn error_null() {
    assert_eq!(TopicName::try_from("a\0b"), Err(TopicError::Null));
    assert_eq!(TopicFilter::try_from("a/\0"), Err(TopicError::Null));
    assert_eq!(
        Subscription::try_from("$share/g\0/a"),
        Err(TopicError::Null)
    );
    assert!(!TopicError::Null.to_string().is_empty());
}

#[test]
fn error_wildcard_in_name() {
    for text in ["+", "#", "a/+", "a/#", "a+", "sport/tennis/#", "$SYS/+/x"] {
        assert_eq!(
            TopicName::try_from(text),
            Err(TopicError::WildcardInName),
            "{text}"
        );
    }
    assert!(!TopicError::WildcardInName.to_string().is_empty());
}

#[test]
fn error_wildcard_not_alone() {
    for text in [
        "a+",
        "+a",
        "a/b+/c",
        "#a",
        "a#",
        "a/b#",
        "sport/tennis#",
        "++",
        "+#",
    ] {
        assert_eq!(
            TopicFilter::try_from(text),
            Err(TopicError::WildcardNotAlone),
            "{text}"
        );
    }
    assert_eq!(
        Subscription::try_from("$share/g/a+"),
        Err(TopicError::WildcardNotAlone)
    );
    assert!(!TopicError::WildcardNotAlone.to_string().is_empty());
}

#[test]
fn error_hash_not_last() {
    for text in ["#/a", "a/#/b", "#/#", "sport/tennis/#/ranking", "#/"] {
        assert_eq!(
            TopicFilter::try_from(text),
            Err(TopicError::HashNotLast),
            "{text}"
        );
    }
    assert_eq!(
        Subscription::try_from("$share/g/#/a"),
        Err(TopicError::HashNotLast)
    );
    assert!(!TopicError::HashNotLast.to_string().is_empty());
}

#[test]
fn error_shared_empty_group() {
    assert_eq!(
        Subscription::try_from("$share//x"),
        Err(TopicError::SharedEmptyGroup)
    );
    assert_eq!(
        Subscription::try_from("$share/"),
        Err(TopicError::SharedEmptyGroup)
    );
    assert!(!TopicError::SharedEmptyGroup.to_string().is_empty());
}

#[test]
fn error_shared_group_wildcard() {
    for text in ["$share/+/x", "$share/#/x", "$share/g+/x", "$share/#"] {
        assert_eq!(
            Subscription::try_from(text),
            Err(TopicError::SharedGroupWildcard),
            "{text}"
        );
    }
    assert!(!TopicError::SharedGroupWildcard.to_string().is_empty());
}

#[test]
fn error_shared_missing_filter() {
    assert_eq!(
        Subscription::try_from("$share/group"),
        Err(TopicError::SharedMissingFilter)
    );
    assert_eq!(
        Subscription::try_from("$share/group/"),
        Err(TopicError::SharedMissingFilter)
    );
    assert!(!TopicError::SharedMissingFilter.to_string().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Valid names, filters and subscriptions.

#[test]
fn valid_names() {
    for text in [
        "/",
        "//",
        "a",
        "/a",
        "a/",
        "a//b",
        "sport/tennis/player1",
        "with spaces / and\ttabs",
        "$SYS/broker/uptime",
        "*/>",
        "€/𝄞",
        "a.b",
    ] {
        let topic = name(text);
        assert_eq!(topic.as_str(), text);
        assert_eq!(topic, text);
        assert_eq!(topic.to_string(), text);
    }
}

#[test]
fn valid_filters() {
    for text in [
        "#",
        "+",
        "+/+",
        "/+",
        "+/",
        "sport/#",
        "sport/+/player1",
        "sport/tennis/player1/#",
        "+/tennis/#",
        "/",
        "$SYS/#",
        "a//+//#",
        "$share",
    ] {
        assert_eq!(filter(text).as_str(), text);
    }
}

#[test]
fn levels_keep_empty_levels() {
    let topic = name("/a//b/");
    assert!(topic.levels().eq(["", "a", "", "b", ""]));
    let f = filter("+/#");
    assert!(f.levels().eq(["+", "#"]));
}

#[test]
fn zero_copy_constructors() {
    let bytes = Bytes::from_static(b"a/b");
    let topic = TopicName::from_bytes(bytes.clone()).unwrap();
    assert_eq!(topic.as_byte_string().as_bytes().as_ptr(), bytes.as_ptr());
    let topic = TopicName::from_static("x/y").unwrap();
    assert_eq!(topic.as_bytes(), b"x/y");
}

#[test]
#[allow(clippy::disallowed_types)] // only checks that Hash agrees with str; nothing iterates
fn names_hash_like_str() {
    let mut map = std::collections::BTreeMap::new();
    map.insert(name("a/b"), 1);
    assert_eq!(map.get("a/b"), Some(&1));
    let mut map = std::collections::HashMap::new();
    map.insert(name("a/b"), 1);
    assert_eq!(map.get("a/b"), Some(&1));
}

#[test]
fn filter_helpers() {
    assert!(filter("a/+").has_wildcards());
    assert!(!filter("a/b").has_wildcards());
    assert!(filter("#").starts_with_wildcard());
    assert!(filter("+/a").starts_with_wildcard());
    assert!(!filter("a/#").starts_with_wildcard());
    assert_eq!(filter("a/b").to_topic_name(), Some(name("a/b")));
    assert_eq!(filter("a/+").to_topic_name(), None);
}

#[test]
fn shared_subscription_parts() {
    let sub = Subscription::try_from("$share/consumers/sport/+/player1").unwrap();
    assert!(sub.is_shared());
    assert_eq!(sub.share_group(), Some("consumers"));
    assert_eq!(sub.filter().as_str(), "sport/+/player1");
    assert_eq!(sub.as_str(), "$share/consumers/sport/+/player1");
    assert!(sub.matches(&name("sport/tennis/player1")));

    let sub = Subscription::try_from("$share/g/#").unwrap();
    assert!(!sub.matches(&name("$SYS/x")));
    assert!(sub.matches(&name("a")));

    let sub = Subscription::try_from("$share/g//").unwrap();
    assert_eq!(sub.filter().as_str(), "/");

    let sub = Subscription::try_from("sport/#").unwrap();
    assert!(!sub.is_shared());
    assert_eq!(sub.share_group(), None);
    assert_eq!(sub.filter().as_str(), "sport/#");
}

// ---------------------------------------------------------------------------------------------
// Matching ([MQTT-4.7.1-*], [MQTT-4.7.2-1]).

#[test]
fn matching_spec_examples() {
    let cases = [
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/#", "sport", true),
        ("#", "sport", true),
        ("#", "/", true),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("+", "a", true),
        ("a//b", "a//b", true),
        ("a/+/b", "a//b", true),
        ("a/b", "a//b", false),
        ("/a", "a", false),
        ("a/#", "a/", true),
        ("/#", "/", true),
        ("Sport", "sport", false),
        ("a b", "a b", true),
        ("a/*", "a/b", false),
        ("a/*", "a/*", true),
    ];
    for (f, t, expected) in cases {
        assert_eq!(matches(f, t), expected, "{f} vs {t}");
        assert_eq!(name(t).is_matched_by(&filter(f)), expected, "{f} vs {t}");
    }
}

#[test]
fn wildcards_do_not_match_dollar_topics() {
    assert!(!matches("#", "$SYS/monitor/Clients"));
    assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert!(!matches("+", "$SYS"));
    assert!(!matches("+/#", "$SYS/x"));
    assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
    assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    assert!(matches("a/#", "a/$b"));
    assert!(matches("+/$b", "a/$b"));
}

// ---------------------------------------------------------------------------------------------
// Subject mapping: the tables of facts §3.1, both directions.

const TOPIC_TABLE: &[(&str, &str)] = &[
    ("foo", "foo"),
    ("foo/bar", "foo.bar"),
    ("/foo", "/.foo"),
    ("/foo/bar/", "/.foo.bar./"),
    ("bar/", "bar./"),
    ("/", "/./"),
    ("//", "/././"),
    ("///", "/./././"),
    ("//foo", "/./.foo"),
    ("///foo//", "/././.foo././"),
    ("foo//bar", "foo./.bar"),
    ("foo///bar", "foo././.bar"),
    (".", "//"),
    ("..", "////"),
    ("./", "//./"),
    (".//.", "//././/"),
    (".foo.", "//foo//"),
    ("foo../bar/.", "foo////.bar.//"),
    ("foo.bar/baz", "foo//bar.baz"),
    ("spBv1.0/plant1", "spBv1//0.plant1"),
    ("//.foo.//", "/././/foo//././"),
];

const FILTER_TABLE: &[(&str, &str)] = &[
    ("+", "*"),
    ("/+", "/.*"),
    ("+/", "*./"),
    ("foo/+/bar", "foo.*.bar"),
    ("foo//+//bar", "foo./.*./.bar"),
    ("#", ">"),
    ("/#", "/.>"),
    ("foo/#", "foo.>"),
    ("foo//#", "foo./.>"),
    ("foo/bar.baz/#", "foo.bar//baz.>"),
    ("+/#", "*.>"),
];

#[test]
fn topic_table_forward() {
    for &(topic, subject) in TOPIC_TABLE {
        assert_eq!(topic_to_subject(&name(topic)), subject, "{topic}");
        assert_eq!(mqtt_to_subject(topic), subject, "{topic}");
    }
}

#[test]
fn topic_table_reverse() {
    for &(topic, subject) in TOPIC_TABLE {
        assert_eq!(subject_to_topic(subject), topic, "{subject}");
        assert_eq!(subject_to_topic_name(subject), Ok(name(topic)), "{subject}");
    }
}

#[test]
fn filter_table_forward() {
    for &(f, subject) in FILTER_TABLE {
        assert_eq!(filter_to_subject(&filter(f)), subject, "{f}");
    }
    // Topic-table strings are valid filters too and convert the same way.
    for &(f, subject) in TOPIC_TABLE {
        assert_eq!(filter_to_subject(&filter(f)), subject, "{f}");
    }
}

#[test]
fn filter_table_reverse() {
    for &(f, subject) in FILTER_TABLE.iter().chain(TOPIC_TABLE) {
        assert_eq!(subject_to_filter(subject), f, "{subject}");
    }
}

#[test]
fn reverse_rule_consequences() {
    let cases = [
        ("foo.bar", "foo/bar"),
        ("/./", "/"),
        ("foo./", "foo/"),
        ("a//b", "a.b"),
        ("foo/bar", "foobar"),
        ("$JS.API.INFO", "$JS/API/INFO"),
        ("foo/", "foo"),
        ("/", ""),
        ("*.>", "*/>"),
    ];
    for (subject, topic) in cases {
        assert_eq!(subject_to_topic(subject), topic, "{subject}");
    }
    assert_eq!(subject_to_topic_name("/"), Err(TopicError::Empty));
    assert_eq!(
        subject_to_topic_name("a.+"),
        Err(TopicError::WildcardInName)
    );
}

#[test]
fn nats_wildcard_characters_are_escaped() {
    // `*` and `>` are ordinary characters in MQTT: a subject built from a topic or filter never
    // holds them as wildcards (a retained delete of `>` must address `>` alone).
    assert_eq!(filter_to_subject(&filter("foo/*/bar")), "foo./2A.bar");
    assert_eq!(filter_to_subject(&filter("foo/>")), "foo./3E");
    assert_eq!(filter_to_subject(&filter("foo*/bar")), "foo/2A.bar");
    assert_eq!(topic_to_subject(&name("foo/*")), "foo./2A");
    assert_eq!(topic_to_subject(&name(">")), "/3E");
    assert_eq!(topic_to_subject(&name("a/*")), "a./2A");
    assert_eq!(subject_to_topic("a./2A"), "a/*");
    assert_eq!(subject_to_filter("a./2A.*.>"), "a/*/+/#");
    // The raw converter does not validate wildcard placement.
    assert_eq!(mqtt_to_subject("foo#"), "foo>");
    assert_eq!(mqtt_to_subject("foo/#/bar"), "foo.>.bar");
    assert_eq!(mqtt_to_subject(""), "");
}

#[test]
fn conversion_borrows_when_unchanged() {
    assert!(matches!(
        topic_to_subject(&name("foo")),
        Cow::Borrowed("foo")
    ));
    assert!(matches!(topic_to_subject(&name("$SYS")), Cow::Borrowed(_)));
    assert!(matches!(topic_to_subject(&name("a/b")), Cow::Owned(_)));
    assert!(matches!(subject_to_topic("foo"), Cow::Borrowed("foo")));
    assert!(matches!(subject_to_filter("foo"), Cow::Borrowed("foo")));
}

#[test]
fn parent_subject_rule() {
    let cases = [
        ("foo/#", Some("foo")),
        ("foo//#", Some("foo./")),
        ("/#", Some("/")),
        ("+/#", Some("*")),
        ("foo/bar.baz/#", Some("foo.bar//baz")),
        ("#", None),
        ("foo/+", None),
        ("foo", None),
    ];
    for (f, parent) in cases {
        let subject = filter_subject(f);
        assert_eq!(filter_parent_subject(&subject), parent, "{f}");
    }
}

#[test]
fn reserved_subject_filters() {
    for f in ["#", "+", "+/a", "+/#"] {
        let subject = filter_subject(f);
        assert!(is_reserved_subject_filter(&subject), "{f}");
    }
    // A literal `*` is no wildcard.
    for f in ["a/+", "a/#", "$SYS/#", "*a", "a/*", "/+", "/#", "*", "*/a"] {
        let subject = filter_subject(f);
        assert!(!is_reserved_subject_filter(&subject), "{f}");
    }
}

// ---------------------------------------------------------------------------------------------
// The escape for characters NATS subjects cannot carry.

#[test]
fn escape_examples() {
    let cases = [
        ("a b", "a/20b"),
        ("x\u{7f}", "x/7F"),
        ("\t\n\r\u{c}", "/09/0A/0D/0C"),
        ("\u{1}/\u{1f}", "/01./1F"),
        (" ", "/20"),
        ("a b/c.d", "a/20b.c//d"),
        (". ", "///20"),
        (" .", "/20//"),
        ("/ ", "/./20"),
        (" /", "/20./"),
        (" 20", "/2020"),
        (".20", "//20"),
        ("hello world/€ 1", "hello/20world.€/201"),
    ];
    for (topic, subject) in cases {
        assert_eq!(topic_to_subject(&name(topic)), subject, "{topic:?}");
        assert_eq!(subject_to_topic(subject), topic, "{subject}");
    }
    assert_eq!(filter_to_subject(&filter("a b/+/#")), "a/20b.*.>");
    assert_eq!(subject_to_filter("a/20b.*.>"), "a b/+/#");
}

#[test]
fn non_escapes_are_lone_slashes() {
    // Only uppercase hex naming an escaped byte decodes; any other `/` is dropped as on NATS.
    let cases = [
        ("a/41", "a41"),
        ("a/7f", "a7f"),
        ("a/00", "a00"),
        ("a/21", "a21"),
        ("a/2", "a2"),
        ("a/", "a"),
        ("a/G0", "aG0"),
        ("a/€", "a€"),
        ("a/ b", "a b"),
    ];
    for (subject, topic) in cases {
        assert_eq!(subject_to_topic(subject), topic, "{subject}");
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// Characters that exercise every branch of the mapping, including escapes and hex digits.
const TOPIC_CHARS: &[char] = &[
    '/', '/', '/', '.', '.', ' ', '\t', '\n', '\r', '\u{c}', '\u{7f}', '\u{1}', '\u{1f}', '$', '*',
    '>', 'a', 'b', 'A', 'F', '0', '2', '7', 'é', '€', '𝄞', '\u{a0}', '\u{85}',
];

fn arb_topic_name() -> impl Strategy<Value = TopicName> {
    prop::collection::vec(prop::sample::select(TOPIC_CHARS), 1..24)
        .prop_filter_map("valid topic name", |chars| {
            TopicName::new(chars.into_iter().collect::<String>()).ok()
        })
}

fn arb_filter_string() -> impl Strategy<Value = String> {
    let level = prop_oneof![
        3 => prop::collection::vec(prop::sample::select(TOPIC_CHARS), 0..5)
            .prop_map(|chars| chars.into_iter().filter(|&c| c != '/').collect::<String>()),
        1 => Just("+".to_owned()),
    ];
    (prop::collection::vec(level, 1..5), any::<bool>()).prop_map(|(mut levels, hash)| {
        if hash {
            levels.push("#".to_owned());
        }
        levels.join("/")
    })
}

/// Naive reference matcher: split on `/`, compare recursively.
fn reference_matches(filter: &str, topic: &str) -> bool {
    fn levels(f: &[&str], t: &[&str]) -> bool {
        match (f.split_first(), t.split_first()) {
            (Some((&"#", _)), _) => true,
            (Some((&"+", f_rest)), Some((_, t_rest))) => levels(f_rest, t_rest),
            (Some((f_level, f_rest)), Some((t_level, t_rest))) => {
                f_level == t_level && levels(f_rest, t_rest)
            }
            (None, None) => true,
            _ => false,
        }
    }
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    levels(&f, &t)
}

/// NATS subject matching: `*` is one token, `>` one or more trailing tokens.
fn nats_matches(filter: &str, subject: &str) -> bool {
    fn tokens(f: &[&str], s: &[&str]) -> bool {
        match (f.split_first(), s.split_first()) {
            (Some((&">", _)), Some(_)) => true,
            (Some((&"*", f_rest)), Some((_, s_rest))) => tokens(f_rest, s_rest),
            (Some((f_tok, f_rest)), Some((s_tok, s_rest))) => {
                f_tok == s_tok && tokens(f_rest, s_rest)
            }
            (None, None) => true,
            _ => false,
        }
    }
    let f: Vec<&str> = filter.split('.').collect();
    let s: Vec<&str> = subject.split('.').collect();
    tokens(&f, &s)
}

/// A small alphabet of levels so that filters and topics actually match.
fn arb_small_topic() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(&["a", "b", "", "$", "$a", "a.b", "a b"][..]),
        1..5,
    )
    .prop_map(|levels| levels.join("/"))
}

fn arb_small_filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            prop::sample::select(&["a", "b", "", "$", "$a", "+", "a.b", "a b"][..]),
            0..5,
        ),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
}

/// Cases of `covers` the property test found or that the permissions rely on.
#[test]
fn covers_examples() {
    for (allowed, sub, covered) in [
        ("#", "a/+/#", true),
        ("+/#", "#", true),
        ("/+/#", "/#", true),
        ("/#", "/+/#", true),
        ("+/#", "+", true),
        ("+", "#", false),
        ("a/#", "a", true),
        ("a", "a/#", false),
        ("devices/#", "devices/+/temp", true),
        ("devices/+/temp", "devices/#", false),
        ("#", "$SYS/#", false),
        ("$SYS/#", "$SYS/broker/uptime", true),
    ] {
        let (a, s) = (
            TopicFilter::new(allowed).expect("filter"),
            TopicFilter::new(sub).expect("filter"),
        );
        assert_eq!(a.covers(&s), covered, "{allowed} covers {sub}");
    }
}

/// Short filters for [`covers_agrees_with_every_topic`]: up to four levels and a `#`.
fn arb_short_filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(&["a", "b", "", "$a", "+"][..]), 0..4),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// `covers` says exactly whether every topic one filter matches the other matches too,
    /// checked against every topic made of the filters' levels and one more value, up to one
    /// level longer than the longer filter (a witness of a difference is never longer).
    #[test]
    fn covers_agrees_with_every_topic(a in arb_short_filter(), s in arb_short_filter()) {
        let (Ok(fa), Ok(fs)) = (TopicFilter::new(a.clone()), TopicFilter::new(s.clone())) else {
            return Ok(());
        };
        let mut values: Vec<&str> = a
            .split('/')
            .chain(s.split('/'))
            .filter(|l| *l != "+" && *l != "#")
            .chain(["c"])
            .collect();
        values.sort_unstable();
        values.dedup();
        let longest = a.split('/').count().max(s.split('/').count()) + 1;
        let mut topics: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let mut all = topics.clone();
        for _ in 1..longest {
            topics = topics
                .iter()
                .flat_map(|t| values.iter().map(move |v| format!("{t}/{v}")))
                .collect();
            all.extend(topics.iter().cloned());
        }
        // (The one-level empty topic is no topic name.)
        let exact = all
            .iter()
            .filter_map(|t| TopicName::new(t.clone()).ok())
            .all(|topic| !fs.matches(&topic) || fa.matches(&topic));
        prop_assert_eq!(fa.covers(&fs), exact, "{} covers {}?", a, s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn topic_subject_round_trip(topic in arb_topic_name()) {
        let subject = topic_to_subject(&topic);
        prop_assert_eq!(subject_to_topic(&subject), topic.as_str());
        prop_assert_eq!(subject_to_topic_name(&subject), Ok(topic.clone()));
        prop_assert!(
            !subject.bytes().any(|b| b < 0x21 || b == 0x7f),
            "subject {:?} carries a space or control character", subject
        );
        prop_assert!(
            subject.split('.').all(|token| !token.is_empty()),
            "subject {:?} has an empty token", subject
        );
    }

    #[test]
    fn filter_subject_round_trip(text in arb_filter_string()) {
        let Ok(f) = TopicFilter::new(text) else { return Ok(()) };
        let subject = filter_to_subject(&f);
        prop_assert_eq!(subject_to_filter(&subject), f.as_str());
        prop_assert!(subject.split('.').all(|token| !token.is_empty()));
        prop_assert!(!subject.bytes().any(|b| b < 0x21 || b == 0x7f));
    }

    #[test]
    fn matching_agrees_with_reference(f in arb_small_filter(), t in arb_small_topic()) {
        let Ok(topic) = TopicName::new(t.clone()) else { return Ok(()) };
        let Ok(f) = TopicFilter::new(f) else { return Ok(()) };
        prop_assert_eq!(f.matches(&topic), reference_matches(f.as_str(), &t), "{} vs {}", f, t);
    }

    #[test]
    fn matching_agrees_with_nats_subjects(f in arb_small_filter(), t in arb_small_topic()) {
        // What a NATS server would deliver: the subject filter, plus the parent subscription for
        // `/#`, minus `$` subjects for reserved filters.
        let Ok(topic) = TopicName::new(t) else { return Ok(()) };
        let Ok(f) = TopicFilter::new(f) else { return Ok(()) };
        let fs = filter_to_subject(&f);
        let ts = topic_to_subject(&topic);
        let nats = if is_reserved_subject_filter(&fs) && ts.starts_with('$') {
            false
        } else {
            nats_matches(&fs, &ts)
                || filter_parent_subject(&fs).is_some_and(|parent| nats_matches(parent, &ts))
        };
        prop_assert_eq!(f.matches(&topic), nats, "{} ({}) vs {} ({})", f, fs, topic, ts);
    }

    #[test]
    fn arbitrary_subjects_do_not_panic(subject in "[./A-F0-9a*> \u{1}é]{0,16}") {
        let topic = subject_to_topic(&subject);
        let _ = subject_to_filter(&subject);
        // Whatever comes back, mapping it again and back gives the same topic.
        let again = mqtt_to_subject(&topic).into_owned();
        prop_assert_eq!(subject_to_topic(&again), topic.as_ref());
    }
}

#[test]
fn a_filter_needs_its_own_subject_and_for_a_trailing_hash_the_parent() {
    use jetmq_core::topic::{subject::filter_subjects, TopicFilter};
    let subjects = |f: &str| -> Vec<String> {
        filter_subjects(&TopicFilter::try_from(f).expect("valid filter")).collect()
    };
    assert_eq!(subjects("a/#"), ["a.>", "a"]);
    assert_eq!(subjects("a/+/b"), ["a.*.b"]);
    assert_eq!(subjects("#"), [">"]);
}
