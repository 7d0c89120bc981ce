//! The contract test suite: what any backend of the core's store vocabulary
//! ([`jetmq_core::js::StoreRequest`]) must do, written once against an executor function so it
//! runs against this store now and against JetStream later.
//!
//! Each case takes the executor and a namespace (a short token such as `t7`) that it puts in
//! every subject and consumer name it uses, so cases can share one store and never see each
//! other's data. Cases assert with `assert!` and panic on the first difference. They make no
//! assumption about sequence values beyond "increasing", so a backend may count per stream or
//! per store.
//!
//! [`CASES`] lists them; [`run_all`] runs them all. Timed redelivery (ack wait) is outside the
//! core vocabulary: [`ack_wait_redelivery`] runs it against a [`TimedRedelivery`].

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use jetmq_core::js::{Header, StoreError, StoreReply, StoreRequest, StoredMessage, Stream};
use jetmq_core::time::Timestamp;

/// Carries out one request, as a backend does.
pub type Executor<'a> = &'a dyn Fn(StoreRequest) -> Result<StoreReply, StoreError>;

/// One case of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// What it checks.
    pub name: &'static str,
    /// Runs it with an executor and a namespace token.
    pub run: fn(Executor<'_>, &str),
}

/// Every case of the suite.
pub const CASES: &[Case] = &[
    Case {
        name: "publish_returns_increasing_sequences",
        run: publish_returns_increasing_sequences,
    },
    Case {
        name: "one_per_subject_keeps_the_last_message",
        run: one_per_subject_keeps_the_last_message,
    },
    Case {
        name: "get_last",
        run: get_last,
    },
    Case {
        name: "purge_removes_one_subject",
        run: purge_removes_one_subject,
    },
    Case {
        name: "get_by_sequence",
        run: get_by_sequence,
    },
    Case {
        name: "delete_by_sequence",
        run: delete_by_sequence,
    },
    Case {
        name: "list_by_prefix_in_sequence_order",
        run: list_by_prefix_in_sequence_order,
    },
    Case {
        name: "headers_and_payload_round_trip",
        run: headers_and_payload_round_trip,
    },
    Case {
        name: "interest_retention",
        run: interest_retention,
    },
    Case {
        name: "consumer_filters_with_wildcards",
        run: consumer_filters_with_wildcards,
    },
    Case {
        name: "several_consumers_share_a_message",
        run: several_consumers_share_a_message,
    },
    Case {
        name: "upsert_changes_filters_and_keeps_pending",
        run: upsert_changes_filters_and_keeps_pending,
    },
    Case {
        name: "delete_consumer_drops_its_pending",
        run: delete_consumer_drops_its_pending,
    },
    Case {
        name: "acks_are_idempotent",
        run: acks_are_idempotent,
    },
    Case {
        name: "pending_limit_order_and_redelivery",
        run: pending_limit_order_and_redelivery,
    },
    Case {
        name: "release_hands_the_messages_out_again",
        run: release_hands_the_messages_out_again,
    },
    Case {
        name: "delete_and_purge_on_the_messages_stream",
        run: delete_and_purge_on_the_messages_stream,
    },
    Case {
        name: "invalid_requests_are_rejected_and_change_nothing",
        run: invalid_requests_are_rejected_and_change_nothing,
    },
];

/// Runs every case, each in namespace `{ns}{index}`.
pub fn run_all(exec: Executor<'_>, ns: &str) {
    for (i, case) in CASES.iter().enumerate() {
        (case.run)(exec, &format!("{ns}{i}"));
    }
}

fn msgs(ns: &str, rest: &str) -> ByteString {
    format!("$MQTT.msgs.{ns}.{rest}").into()
}

fn retained(ns: &str, rest: &str) -> ByteString {
    format!("$MQTT.rmsgs.{ns}.{rest}").into()
}

fn consumer(ns: &str, name: &str) -> ByteString {
    format!("{ns}_{name}").into()
}

fn publish_with(
    exec: Executor<'_>,
    stream: Stream,
    subject: &ByteString,
    headers: Vec<Header>,
    payload: Bytes,
) -> u64 {
    let request = StoreRequest::Publish {
        stream,
        subject: subject.clone(),
        headers,
        payload,
    };
    match exec(request) {
        Ok(StoreReply::Stored { seq }) => seq,
        other => panic!("publish to {subject} on {}: {other:?}", stream.name()),
    }
}

fn publish(exec: Executor<'_>, stream: Stream, subject: &ByteString, payload: &str) -> u64 {
    publish_with(
        exec,
        stream,
        subject,
        Vec::new(),
        Bytes::copy_from_slice(payload.as_bytes()),
    )
}

fn done(exec: Executor<'_>, request: StoreRequest) {
    let what = format!("{request:?}");
    match exec(request) {
        Ok(StoreReply::Done) => {}
        other => panic!("{what}: expected Done, got {other:?}"),
    }
}

fn messages(exec: Executor<'_>, request: StoreRequest) -> Vec<StoredMessage> {
    let what = format!("{request:?}");
    match exec(request) {
        Ok(StoreReply::Messages(m)) => m,
        other => panic!("{what}: expected Messages, got {other:?}"),
    }
}

fn list(exec: Executor<'_>, stream: Stream, prefix: &str) -> Vec<StoredMessage> {
    messages(
        exec,
        StoreRequest::List {
            stream,
            prefix: prefix.into(),
        },
    )
}

fn pending(exec: Executor<'_>, name: &ByteString, limit: usize) -> Vec<StoredMessage> {
    messages(
        exec,
        StoreRequest::Pending {
            consumer: name.clone(),
            limit,
        },
    )
}

fn get_last_of(exec: Executor<'_>, stream: Stream, subject: &ByteString) -> Option<StoredMessage> {
    match exec(StoreRequest::GetLast {
        stream,
        subject: subject.clone(),
    }) {
        Ok(StoreReply::Message(m)) => m,
        other => panic!("get last of {subject}: {other:?}"),
    }
}

/// Whether the messages stream still holds the last message of `subject`, waiting up to five
/// seconds for it to reach `wanted`: JetStream applies interest retention (removing a message
/// once every consumer that wanted it acked it) just after it answers the ack.
fn held(exec: Executor<'_>, subject: &ByteString, wanted: bool) -> Option<u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let last = get_last_of(exec, Stream::Messages, subject).map(|m| m.seq);
        if last.is_some() == wanted || std::time::Instant::now() >= deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn upsert(exec: Executor<'_>, name: &ByteString, filters: &[ByteString]) {
    done(
        exec,
        StoreRequest::UpsertConsumer {
            name: name.clone(),
            filters: filters.to_vec(),
        },
    );
}

fn ack(exec: Executor<'_>, name: &ByteString, seq: u64) {
    done(
        exec,
        StoreRequest::Ack {
            consumer: name.clone(),
            seq,
        },
    );
}

fn seqs(m: &[StoredMessage]) -> Vec<u64> {
    m.iter().map(|m| m.seq).collect()
}

fn payloads(m: &[StoredMessage]) -> Vec<&[u8]> {
    m.iter().map(|m| &m.payload[..]).collect()
}

fn prefix(subject: &str) -> String {
    format!("{subject}.")
}

/// Sequences grow with every publish, on every stream.
pub fn publish_returns_increasing_sequences(exec: Executor<'_>, ns: &str) {
    let mut last = 0;
    for i in 0..5 {
        let seq = publish(exec, Stream::Retained, &retained(ns, &format!("s{i}")), "x");
        assert!(seq > last, "sequence {seq} after {last}");
        last = seq;
    }
    let c = consumer(ns, "c");
    upsert(exec, &c, &[msgs(ns, ">")]);
    let mut last = 0;
    for _ in 0..5 {
        let seq = publish(exec, Stream::Messages, &msgs(ns, "a"), "x");
        assert!(seq > last, "sequence {seq} after {last}");
        last = seq;
    }
    done(exec, StoreRequest::DeleteConsumer { name: c });
}

/// On one-per-subject streams a new message replaces the subject's previous one.
pub fn one_per_subject_keeps_the_last_message(exec: Executor<'_>, ns: &str) {
    for stream in [
        Stream::Sessions,
        Stream::Qos2In,
        Stream::PubRel,
        Stream::Retained,
    ] {
        let base = format!("{}{ns}", stream.prefix());
        let a: ByteString = format!("{base}.a").into();
        let b: ByteString = format!("{base}.b").into();
        publish(exec, stream, &a, "a1");
        publish(exec, stream, &b, "b1");
        let a2 = publish(exec, stream, &a, "a2");
        let all = list(exec, stream, &prefix(&base));
        assert_eq!(payloads(&all), [&b"b1"[..], b"a2"], "{}", stream.name());
        assert_eq!(all[1].seq, a2);
        assert!(all
            .iter()
            .all(|m| m.stream == stream && m.pending_for.is_empty()));
        let last = get_last_of(exec, stream, &a).expect("a is stored");
        assert_eq!((last.seq, &last.payload[..]), (a2, &b"a2"[..]));
    }
}

/// `GetLast` finds the subject's message, or none.
pub fn get_last(exec: Executor<'_>, ns: &str) {
    let s = retained(ns, "x");
    assert_eq!(get_last_of(exec, Stream::Retained, &s), None);
    let seq = publish(exec, Stream::Retained, &s, "1");
    let m = get_last_of(exec, Stream::Retained, &s).expect("stored");
    assert_eq!(
        (m.stream, &m.subject, m.seq, &m.payload[..]),
        (Stream::Retained, &s, seq, &b"1"[..])
    );
    // Another stream's subject of the same name is another message.
    assert_eq!(get_last_of(exec, Stream::Sessions, &s), None);
    // A longer subject is not a match.
    assert_eq!(
        get_last_of(exec, Stream::Retained, &retained(ns, "x.y")),
        None
    );
}

/// `Get` reads one message of the messages stream by sequence (a spilled message read back),
/// or none when there is no such message.
pub fn get_by_sequence(exec: Executor<'_>, ns: &str) {
    let subject = msgs(ns, "g");
    let c = consumer(ns, "g");
    upsert(exec, &c, std::slice::from_ref(&subject));
    let first = publish(exec, Stream::Messages, &subject, "one");
    let second = publish(exec, Stream::Messages, &subject, "two");
    let get = |seq| match exec(StoreRequest::Get {
        stream: Stream::Messages,
        seq,
    }) {
        Ok(StoreReply::Message(m)) => m,
        other => panic!("get {seq}: {other:?}"),
    };
    let m = get(second).expect("stored");
    assert_eq!(
        (m.stream, &m.subject, m.seq, &m.payload[..]),
        (Stream::Messages, &subject, second, &b"two"[..])
    );
    assert_eq!(get(first).map(|m| m.payload), Some("one".into()));
    // (Once acknowledged it goes, but on JetStream an acknowledgement is applied some time
    // after it is sent: not checked here.)
    assert_eq!(get(second + 1_000_000), None);
    ack(exec, &c, first);
    ack(exec, &c, second);
    done(exec, StoreRequest::DeleteConsumer { name: c });
}

/// `Purge` removes every message of one subject and nothing else.
pub fn purge_removes_one_subject(exec: Executor<'_>, ns: &str) {
    let a = retained(ns, "a");
    let ab = retained(ns, "a.b");
    publish(exec, Stream::Retained, &a, "a");
    publish(exec, Stream::Retained, &ab, "ab");
    done(
        exec,
        StoreRequest::Purge {
            stream: Stream::Retained,
            subject: a.clone(),
        },
    );
    assert_eq!(get_last_of(exec, Stream::Retained, &a), None);
    assert!(get_last_of(exec, Stream::Retained, &ab).is_some());
    // Purging what is not there is fine.
    done(
        exec,
        StoreRequest::Purge {
            stream: Stream::Retained,
            subject: a,
        },
    );
}

/// `Delete` removes one message by sequence; an unknown sequence is fine.
pub fn delete_by_sequence(exec: Executor<'_>, ns: &str) {
    let a = retained(ns, "a");
    let b = retained(ns, "b");
    let sa = publish(exec, Stream::Retained, &a, "a");
    let sb = publish(exec, Stream::Retained, &b, "b");
    done(
        exec,
        StoreRequest::Delete {
            stream: Stream::Retained,
            seq: sa,
        },
    );
    assert_eq!(seqs(&list(exec, Stream::Retained, &retained(ns, ""))), [sb]);
    done(
        exec,
        StoreRequest::Delete {
            stream: Stream::Retained,
            seq: sa,
        },
    );
    done(
        exec,
        StoreRequest::Delete {
            stream: Stream::Retained,
            seq: u64::MAX - 1,
        },
    );
    // The subject can be used again.
    let sa2 = publish(exec, Stream::Retained, &a, "a2");
    assert_eq!(
        get_last_of(exec, Stream::Retained, &a).map(|m| m.seq),
        Some(sa2)
    );
}

/// `List` returns exactly the messages under a prefix, in sequence order; a prefix ends at a
/// token boundary (JetStream lists by filter subject).
pub fn list_by_prefix_in_sequence_order(exec: Executor<'_>, ns: &str) {
    let names = ["m.z", "m.a", "n.a", "m.k.x", "ma"];
    let mut expected = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let seq = publish(exec, Stream::Retained, &retained(ns, n), &i.to_string());
        if n.starts_with("m.") {
            expected.push(seq);
        }
    }
    let base = retained(ns, "");
    let got = list(exec, Stream::Retained, &format!("{base}m."));
    assert_eq!(seqs(&got), expected);
    assert_eq!(payloads(&got), [&b"0"[..], b"1", b"3"]);
    // The whole namespace.
    assert_eq!(list(exec, Stream::Retained, &base).len(), names.len());
    assert!(list(exec, Stream::Retained, &format!("{base}q.")).is_empty());
    // Other streams are not listed.
    assert!(list(exec, Stream::Sessions, &base).is_empty());
    // A prefix that is not a token boundary is refused.
    rejected(
        exec,
        StoreRequest::List {
            stream: Stream::Retained,
            prefix: format!("{base}m").into(),
        },
    );
}

/// Headers keep their order and values; payloads keep every byte.
pub fn headers_and_payload_round_trip(exec: Executor<'_>, ns: &str) {
    let s = retained(ns, "h");
    let headers = vec![
        Header {
            name: "Nmqtt-RTopic",
            value: "a/b".into(),
        },
        Header {
            name: "Nmqtt-RFlags",
            value: "3".into(),
        },
    ];
    let payload = Bytes::from((0..=255u8).collect::<Vec<u8>>());
    publish_with(exec, Stream::Retained, &s, headers, payload.clone());
    let m = get_last_of(exec, Stream::Retained, &s).expect("stored");
    assert_eq!(
        m.headers,
        vec![
            ("Nmqtt-RTopic".into(), "a/b".into()),
            ("Nmqtt-RFlags".into(), "3".into())
        ]
    );
    assert_eq!(m.payload, payload);
    let e = retained(ns, "empty");
    publish_with(exec, Stream::Retained, &e, Vec::new(), Bytes::new());
    let m = get_last_of(exec, Stream::Retained, &e).expect("stored");
    assert!(m.payload.is_empty() && m.headers.is_empty());
}

/// Messages are kept while a consumer that matched them at publish time has not acked them.
pub fn interest_retention(exec: Executor<'_>, ns: &str) {
    let subject = msgs(ns, "t");
    // Nobody is interested: not kept.
    publish(exec, Stream::Messages, &subject, "lost");
    assert_eq!(held(exec, &subject, false), None);
    let c = consumer(ns, "c");
    upsert(exec, &c, std::slice::from_ref(&subject));
    let seq = publish(exec, Stream::Messages, &subject, "kept");
    let last = get_last_of(exec, Stream::Messages, &subject).expect("kept");
    assert_eq!((last.seq, last.stream), (seq, Stream::Messages));
    let got = pending(exec, &c, 10);
    assert_eq!(seqs(&got), [seq]);
    assert_eq!(got[0].pending_for, vec![c.clone()]);
    ack(exec, &c, seq);
    assert_eq!(held(exec, &subject, false), None, "acked by all: removed");
    done(exec, StoreRequest::DeleteConsumer { name: c });
}

/// Filters use NATS matching: `*` one token, `>` the rest.
pub fn consumer_filters_with_wildcards(exec: Executor<'_>, ns: &str) {
    let c = consumer(ns, "w");
    upsert(exec, &c, &[msgs(ns, "a.*"), msgs(ns, "b.>"), msgs(ns, "c")]);
    let subjects = [
        ("a.1", true),
        ("a.1.2", false),
        ("a", false),
        ("b", false),
        ("b.1", true),
        ("b.1.2", true),
        ("c", true),
        ("c.1", false),
        ("d", false),
    ];
    let mut expected = Vec::new();
    for (s, wanted) in subjects {
        let seq = publish(exec, Stream::Messages, &msgs(ns, s), s);
        if wanted {
            expected.push(seq);
        }
    }
    let got = pending(exec, &c, 100);
    assert_eq!(seqs(&got), expected);
    assert!(got.iter().all(|m| m.pending_for == [c.clone()]));
    // A consumer without filters wants nothing.
    let none = consumer(ns, "none");
    upsert(exec, &none, &[]);
    publish(exec, Stream::Messages, &msgs(ns, "a.2"), "x");
    assert!(pending(exec, &none, 100).is_empty());
    done(exec, StoreRequest::DeleteConsumer { name: c });
    done(exec, StoreRequest::DeleteConsumer { name: none });
}

/// A message wanted by two consumers stays until both acked it.
pub fn several_consumers_share_a_message(exec: Executor<'_>, ns: &str) {
    let c1 = consumer(ns, "one");
    let c2 = consumer(ns, "two");
    upsert(exec, &c1, &[msgs(ns, ">")]);
    upsert(exec, &c2, &[msgs(ns, "x")]);
    let both = publish(exec, Stream::Messages, &msgs(ns, "x"), "both");
    let only1 = publish(exec, Stream::Messages, &msgs(ns, "y"), "one");
    assert_eq!(seqs(&pending(exec, &c1, 10)), [both, only1]);
    assert_eq!(seqs(&pending(exec, &c2, 10)), [both]);
    ack(exec, &c1, both);
    assert_eq!(seqs(&pending(exec, &c1, 10)), [only1]);
    assert_eq!(seqs(&pending(exec, &c2, 10)), [both]);
    assert_eq!(
        held(exec, &msgs(ns, "x"), true),
        Some(both),
        "c2 still wants it"
    );
    ack(exec, &c2, both);
    assert_eq!(held(exec, &msgs(ns, "x"), false), None);
    assert_eq!(held(exec, &msgs(ns, "y"), true), Some(only1));
    for name in [c1, c2] {
        done(exec, StoreRequest::DeleteConsumer { name });
    }
}

/// Changing a consumer's filters affects new messages; what it was handed out stays pending.
pub fn upsert_changes_filters_and_keeps_pending(exec: Executor<'_>, ns: &str) {
    let c = consumer(ns, "c");
    upsert(exec, &c, &[msgs(ns, "a")]);
    let first = publish(exec, Stream::Messages, &msgs(ns, "a"), "1");
    assert_eq!(seqs(&pending(exec, &c, 10)), [first]);
    upsert(exec, &c, &[msgs(ns, "b")]);
    publish(exec, Stream::Messages, &msgs(ns, "a"), "2");
    let third = publish(exec, Stream::Messages, &msgs(ns, "b"), "3");
    assert_eq!(seqs(&pending(exec, &c, 10)), [first, third]);
    // Upserting the same filters again changes nothing.
    upsert(exec, &c, &[msgs(ns, "b")]);
    assert_eq!(seqs(&pending(exec, &c, 10)), [first, third]);
    done(exec, StoreRequest::DeleteConsumer { name: c });
}

/// Deleting a consumer drops what it owed; messages nobody else wants go.
pub fn delete_consumer_drops_its_pending(exec: Executor<'_>, ns: &str) {
    let c1 = consumer(ns, "one");
    let c2 = consumer(ns, "two");
    upsert(exec, &c1, &[msgs(ns, ">")]);
    upsert(exec, &c2, &[msgs(ns, "shared")]);
    let solo = publish(exec, Stream::Messages, &msgs(ns, "solo"), "s");
    let shared = publish(exec, Stream::Messages, &msgs(ns, "shared"), "sh");
    assert_eq!(seqs(&pending(exec, &c1, 10)), [solo, shared]);
    done(exec, StoreRequest::DeleteConsumer { name: c1.clone() });
    assert_eq!(held(exec, &msgs(ns, "solo"), false), None);
    assert_eq!(held(exec, &msgs(ns, "shared"), true), Some(shared));
    assert_eq!(seqs(&pending(exec, &c2, 10)), [shared]);
    // A deleted (or never created) consumer has nothing pending, and deleting it again is fine.
    assert!(pending(exec, &c1, 10).is_empty());
    done(exec, StoreRequest::DeleteConsumer { name: c1.clone() });
    // A new consumer of the same name starts empty.
    upsert(exec, &c1, &[msgs(ns, ">")]);
    assert!(pending(exec, &c1, 10).is_empty());
    for name in [c1, c2] {
        done(exec, StoreRequest::DeleteConsumer { name });
    }
    assert_eq!(held(exec, &msgs(ns, "shared"), false), None);
}

/// Acking twice, acking an unknown sequence or consumer: all fine.
pub fn acks_are_idempotent(exec: Executor<'_>, ns: &str) {
    let c = consumer(ns, "c");
    upsert(exec, &c, &[msgs(ns, ">")]);
    let s1 = publish(exec, Stream::Messages, &msgs(ns, "a"), "1");
    let s2 = publish(exec, Stream::Messages, &msgs(ns, "a"), "2");
    ack(exec, &c, s1);
    ack(exec, &c, s1);
    ack(exec, &c, u64::MAX - 1);
    ack(exec, &consumer(ns, "nobody"), s2);
    assert_eq!(seqs(&pending(exec, &c, 10)), [s2]);
    done(exec, StoreRequest::DeleteConsumer { name: c });
}

/// `Pending` returns the oldest unacked messages up to the limit, every time it is asked.
pub fn pending_limit_order_and_redelivery(exec: Executor<'_>, ns: &str) {
    let c = consumer(ns, "c");
    upsert(exec, &c, &[msgs(ns, ">")]);
    let all: Vec<u64> = (0..10)
        .map(|i| {
            publish(
                exec,
                Stream::Messages,
                &msgs(ns, &format!("s{}", i % 3)),
                "m",
            )
        })
        .collect();
    assert_eq!(seqs(&pending(exec, &c, 3)), all[..3]);
    // Not acked: handed out again on request.
    assert_eq!(seqs(&pending(exec, &c, 3)), all[..3]);
    ack(exec, &c, all[1]);
    assert_eq!(seqs(&pending(exec, &c, 3)), [all[0], all[2], all[3]]);
    assert!(pending(exec, &c, 0).is_empty());
    assert_eq!(pending(exec, &c, 100).len(), 9);
    let m = &pending(exec, &c, 1)[0];
    assert_eq!(
        (&m.subject, &m.payload[..], &m.pending_for),
        (&msgs(ns, "s0"), &b"m"[..], &vec![c.clone()])
    );
    done(exec, StoreRequest::DeleteConsumer { name: c });
}

/// After `Release`, a consumer's unacknowledged messages are handed out again (a backend that
/// held them for this reader gives them back; one that never holds them has nothing to do).
/// A backend may take a moment to hand out what was given back: asked until a deadline.
pub fn release_hands_the_messages_out_again(exec: Executor<'_>, ns: &str) {
    let c = consumer(ns, "c");
    upsert(exec, &c, &[msgs(ns, ">")]);
    let all: Vec<u64> = (0..3)
        .map(|i| publish(exec, Stream::Messages, &msgs(ns, &format!("s{i}")), "m"))
        .collect();
    assert_eq!(seqs(&pending(exec, &c, 10)), all);
    done(
        exec,
        StoreRequest::Release {
            consumer: c.clone(),
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = seqs(&pending(exec, &c, 10));
        if again == all {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the release: {again:?}, not {all:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ack(exec, &c, all[0]);
    done(
        exec,
        StoreRequest::Release {
            consumer: c.clone(),
        },
    );
    // A release with nothing held, and of a consumer that does not exist, is fine.
    done(
        exec,
        StoreRequest::Release {
            consumer: c.clone(),
        },
    );
    done(
        exec,
        StoreRequest::Release {
            consumer: consumer(ns, "none"),
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seqs(&pending(exec, &c, 10)) != all[1..] {
        assert!(std::time::Instant::now() < deadline, "the ack was kept");
        std::thread::sleep(Duration::from_millis(20));
    }
    done(exec, StoreRequest::DeleteConsumer { name: c });
}

/// Deleting or purging a queued message removes it from every consumer's pending list.
pub fn delete_and_purge_on_the_messages_stream(exec: Executor<'_>, ns: &str) {
    let c = consumer(ns, "c");
    upsert(exec, &c, &[msgs(ns, ">")]);
    let a1 = publish(exec, Stream::Messages, &msgs(ns, "a"), "a1");
    let b1 = publish(exec, Stream::Messages, &msgs(ns, "b"), "b1");
    let a2 = publish(exec, Stream::Messages, &msgs(ns, "a"), "a2");
    let b2 = publish(exec, Stream::Messages, &msgs(ns, "b"), "b2");
    assert_eq!(seqs(&pending(exec, &c, 10)), [a1, b1, a2, b2]);
    done(
        exec,
        StoreRequest::Delete {
            stream: Stream::Messages,
            seq: b1,
        },
    );
    assert_eq!(seqs(&pending(exec, &c, 10)), [a1, a2, b2]);
    done(
        exec,
        StoreRequest::Purge {
            stream: Stream::Messages,
            subject: msgs(ns, "a"),
        },
    );
    assert_eq!(seqs(&pending(exec, &c, 10)), [b2]);
    assert_eq!(held(exec, &msgs(ns, "a"), false), None);
    assert_eq!(held(exec, &msgs(ns, "b"), true), Some(b2));
    // Acking a deleted message is fine.
    ack(exec, &c, a1);
    done(exec, StoreRequest::DeleteConsumer { name: c });
}

fn rejected(exec: Executor<'_>, request: StoreRequest) {
    let what = format!("{request:?}");
    match exec(request) {
        Err(StoreError::Rejected(_)) => {}
        other => panic!("{what}: expected Rejected, got {other:?}"),
    }
}

/// Invalid subjects, consumer names and filters are refused, and a refused request changes
/// nothing.
pub fn invalid_requests_are_rejected_and_change_nothing(exec: Executor<'_>, ns: &str) {
    for subject in ["", "a..b", "a.", ".a", "a b", "a.*", "a.>", ">"] {
        rejected(
            exec,
            StoreRequest::Publish {
                stream: Stream::Retained,
                subject: subject.into(),
                headers: Vec::new(),
                payload: Bytes::new(),
            },
        );
    }
    let bad_names = ["", "a.b", "a*", "a>", "a b"];
    for name in bad_names {
        rejected(
            exec,
            StoreRequest::UpsertConsumer {
                name: name.into(),
                filters: vec![msgs(ns, ">")],
            },
        );
    }
    for filter in ["", "a..b", "a.>.b"] {
        rejected(
            exec,
            StoreRequest::UpsertConsumer {
                name: consumer(ns, "bad"),
                filters: vec![msgs(ns, "ok"), filter.into()],
            },
        );
    }
    // The refused upsert did not create the consumer.
    publish(exec, Stream::Messages, &msgs(ns, "ok"), "x");
    assert!(pending(exec, &consumer(ns, "bad"), 10).is_empty());
    assert_eq!(held(exec, &msgs(ns, "ok"), false), None);
    rejected(
        exec,
        StoreRequest::GetLast {
            stream: Stream::Retained,
            subject: "".into(),
        },
    );
    rejected(
        exec,
        StoreRequest::Purge {
            stream: Stream::Retained,
            subject: "a..b".into(),
        },
    );
    // A wildcard token is not one subject: a purge of `<ns>.>` is refused by every backend
    // (JetStream would read it as a filter and empty the whole namespace).
    let kept = retained(ns, "kept");
    publish(exec, Stream::Retained, &kept, "k");
    rejected(
        exec,
        StoreRequest::Purge {
            stream: Stream::Retained,
            subject: retained(ns, ">"),
        },
    );
    rejected(
        exec,
        StoreRequest::GetLast {
            stream: Stream::Retained,
            subject: retained(ns, "*"),
        },
    );
    assert!(
        get_last_of(exec, Stream::Retained, &kept).is_some(),
        "the refused purge removed nothing"
    );
    rejected(
        exec,
        StoreRequest::Pending {
            consumer: "a.b".into(),
            limit: 1,
        },
    );
}

/// Timed redelivery, which the core vocabulary leaves out: a backend that hands out a
/// consumer's messages and hands them out again when they stay unacknowledged for its ack wait.
/// `now` is the caller's clock; a backend on a real clock may wait until it.
pub trait TimedRedelivery {
    /// Sets a consumer's ack wait (`None`: no timed redelivery).
    ///
    /// # Errors
    ///
    /// As the backend's writes.
    fn set_ack_wait(&self, consumer: &str, ack_wait: Option<Duration>) -> Result<(), StoreError>;

    /// Hands out the messages due at `now`, keeping at most `max_ack_pending` unacked.
    ///
    /// # Errors
    ///
    /// As the backend's reads.
    fn fetch(
        &self,
        consumer: &str,
        max_ack_pending: usize,
        now: Timestamp,
    ) -> Result<Vec<StoredMessage>, StoreError>;
}

impl TimedRedelivery for crate::Store {
    fn set_ack_wait(&self, consumer: &str, ack_wait: Option<Duration>) -> Result<(), StoreError> {
        Self::set_ack_wait(self, consumer, ack_wait)
    }

    fn fetch(
        &self,
        consumer: &str,
        max_ack_pending: usize,
        now: Timestamp,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Self::fetch(self, consumer, max_ack_pending, now)
    }
}

/// Ack wait and max ack pending: handed-out messages come back after the ack wait, acked ones
/// never, and at most `max_ack_pending` are out at once.
pub fn ack_wait_redelivery(exec: Executor<'_>, timed: &dyn TimedRedelivery, ns: &str) {
    let c = consumer(ns, "timed");
    upsert(exec, &c, &[msgs(ns, ">")]);
    let all: Vec<u64> = (0..5)
        .map(|i| publish(exec, Stream::Messages, &msgs(ns, &format!("s{i}")), "m"))
        .collect();
    let t0 = Timestamp::from_nanos(1_000_000_000);
    let at = |secs: u64| t0.saturating_add(Duration::from_secs(secs));
    let fetch = |max: usize, now: Timestamp| {
        seqs(
            &timed
                .fetch(&c, max, now)
                .unwrap_or_else(|e| panic!("fetch: {e}")),
        )
    };
    // Without an ack wait, handed-out messages are not handed out again by fetch.
    assert_eq!(fetch(2, t0), all[..2]);
    assert_eq!(fetch(2, at(100)), Vec::<u64>::new(), "max ack pending 2");
    assert_eq!(fetch(3, at(100)), [all[2]]);
    timed
        .set_ack_wait(&c, Some(Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("set ack wait: {e}"));
    ack(exec, &c, all[0]);
    // all[1], out since t0, has expired and comes back; all[2], out since 100 s, still counts
    // against max ack pending, so two fit.
    assert_eq!(
        fetch(3, at(100)),
        [all[1], all[3]],
        "expired ones come back"
    );
    assert_eq!(fetch(10, at(110)), [all[4]]);
    assert_eq!(fetch(10, at(129)), Vec::<u64>::new(), "within the ack wait");
    ack(exec, &c, all[2]);
    assert_eq!(
        fetch(10, at(130)),
        [all[1], all[3]],
        "redelivered after 30 s"
    );
    assert_eq!(fetch(10, at(140)), [all[4]]);
    // Pending (redelivery on request) still returns everything unacked.
    assert_eq!(seqs(&pending(exec, &c, 10)), [all[1], all[3], all[4]]);
    assert!(timed.fetch(&consumer(ns, "nobody"), 1, t0).is_err());
    done(exec, StoreRequest::DeleteConsumer { name: c });
}
