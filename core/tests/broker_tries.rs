//! Tests of the broker's two tries: `SubscriptionTree` (which sessions receive a topic) and
//! `RetainedStore` (which retained messages a filter matches), each checked against
//! `TopicFilter::matches` by model-based property tests.

use std::collections::{BTreeMap, BTreeSet};

use jetmq_core::broker::retained::RetainedStore;
use jetmq_core::broker::subscriptions::SubscriptionTree;
use jetmq_core::topic::{TopicFilter, TopicName};
use proptest::prelude::*;
use proptest::sample::{select, Index};

fn name(text: &str) -> TopicName {
    TopicName::try_from(text).unwrap_or_else(|e| panic!("{text:?} should be a valid name: {e}"))
}

fn filter(text: &str) -> TopicFilter {
    TopicFilter::try_from(text).unwrap_or_else(|e| panic!("{text:?} should be a valid filter: {e}"))
}

/// The (filter, key) pairs of `tree` matching `topic`, in visiting order.
fn sub_matches<V: Copy>(
    tree: &SubscriptionTree<&'static str, V>,
    topic: &str,
) -> Vec<&'static str> {
    let mut out = Vec::new();
    tree.for_each_match(&name(topic), |key, _| out.push(*key));
    out
}

/// The topics of `store` matching `filter`, in visiting order.
fn retained_matches<V>(store: &RetainedStore<V>, filter_text: &str) -> Vec<String> {
    let mut out = Vec::new();
    store.for_each_match(&filter(filter_text), |topic, _| out.push(topic.to_string()));
    out
}

/// A subscription tree where each filter is subscribed once, keyed by its own text.
fn tree_of(filters: &[&'static str]) -> SubscriptionTree<&'static str, ()> {
    let mut tree = SubscriptionTree::new();
    for &text in filters {
        assert_eq!(tree.insert(&filter(text), text, ()), None);
    }
    tree
}

/// A retained store holding each topic, with its text as value.
fn store_of(topics: &[&str]) -> RetainedStore<String> {
    let mut store = RetainedStore::new();
    for text in topics {
        assert_eq!(store.insert(&name(text), text.to_string()), None);
    }
    store
}

// ---------------------------------------------------------------------------------------------
// SubscriptionTree

#[test]
fn sub_new_tree_is_empty() {
    let tree: SubscriptionTree<u32, ()> = SubscriptionTree::default();
    assert!(tree.is_empty());
    assert_eq!((tree.len(), tree.node_count()), (0, 0));
    assert_eq!(tree.get(&filter("a"), &1), None);
    let mut calls = 0;
    tree.for_each_match(&name("a"), |_, _| calls += 1);
    assert_eq!(calls, 0);
    assert_eq!(
        format!("{tree:?}"),
        "SubscriptionTree { len: 0, nodes: 0, .. }"
    );
}

#[test]
fn sub_insert_replaces_the_value_of_the_same_filter_and_key() {
    let mut tree = SubscriptionTree::new();
    assert_eq!(tree.insert(&filter("a/+"), 1u32, "qos0"), None);
    assert_eq!(tree.insert(&filter("a/+"), 2, "qos1"), None);
    assert_eq!(tree.insert(&filter("a/#"), 1, "qos2"), None);
    assert_eq!(tree.len(), 3);
    assert_eq!(tree.insert(&filter("a/+"), 1, "qos1"), Some("qos0"));
    assert_eq!(tree.len(), 3);
    assert_eq!(tree.get(&filter("a/+"), &1), Some(&"qos1"));
    assert_eq!(tree.get(&filter("a/+"), &2), Some(&"qos1"));
    assert_eq!(tree.get(&filter("a/#"), &1), Some(&"qos2"));
    // `get` looks up the filter itself, it does not match.
    assert_eq!(tree.get(&filter("a/b"), &1), None);
    assert_eq!(tree.get(&filter("a"), &1), None);
    assert_eq!(tree.get(&filter("a/#"), &2), None);
}

#[test]
fn sub_remove_returns_the_value_and_prunes() {
    let mut tree = SubscriptionTree::new();
    tree.insert(&filter("a/b/c"), 1u32, 10u32);
    tree.insert(&filter("a/b/c"), 2, 20);
    tree.insert(&filter("a/+/#"), 1, 30);
    assert_eq!(tree.node_count(), 4); // a, a/b, a/b/c, a/+
    assert_eq!(tree.remove(&filter("a/b/c"), &3), None);
    assert_eq!(tree.remove(&filter("a/b"), &1), None);
    assert_eq!(tree.remove(&filter("a/b/#"), &1), None);
    assert_eq!(tree.remove(&filter("x/y"), &1), None);
    assert_eq!(tree.len(), 3);
    assert_eq!(tree.remove(&filter("a/b/c"), &1), Some(10));
    assert_eq!(tree.remove(&filter("a/b/c"), &1), None);
    assert_eq!((tree.len(), tree.node_count()), (2, 4));
    assert_eq!(tree.remove(&filter("a/b/c"), &2), Some(20));
    assert_eq!((tree.len(), tree.node_count()), (1, 2));
    assert_eq!(tree.remove(&filter("a/+/#"), &1), Some(30));
    assert!(tree.is_empty());
    assert_eq!(tree.node_count(), 0);
}

#[test]
fn sub_root_hash_and_plus_are_stored_and_removed() {
    let mut tree = SubscriptionTree::new();
    tree.insert(&filter("#"), 1u32, ());
    assert_eq!(tree.node_count(), 0, "a lone `#` lives on the root");
    tree.insert(&filter("+"), 1, ());
    assert_eq!(tree.node_count(), 1);
    assert_eq!(tree.get(&filter("#"), &1), Some(&()));
    assert_eq!(tree.remove(&filter("#"), &1), Some(()));
    assert_eq!(tree.remove(&filter("+"), &1), Some(()));
    assert_eq!((tree.len(), tree.node_count()), (0, 0));
}

#[test]
fn sub_thousand_filters_inserted_and_removed_leave_an_empty_tree() {
    let mut tree = SubscriptionTree::new();
    let filters: Vec<TopicFilter> = (0..1000)
        .map(|i| match i % 4 {
            0 => filter(&format!("dev/{i}/temp")),
            1 => filter(&format!("dev/+/{i}/#")),
            2 => filter(&format!("{i}/+")),
            _ => filter(&format!("site/{}/{i}", i % 7)),
        })
        .collect();
    for (i, f) in filters.iter().enumerate() {
        assert_eq!(tree.insert(f, i % 3, i), None);
    }
    assert_eq!(tree.len(), 1000);
    assert!(tree.node_count() > 1000);
    // Remove in an order unrelated to the insertion order.
    for step in 0..1000 {
        let i = (step * 389) % 1000;
        assert_eq!(tree.remove(&filters[i], &(i % 3)), Some(i));
    }
    assert!(tree.is_empty());
    assert_eq!((tree.len(), tree.node_count()), (0, 0));
}

#[test]
fn sub_hash_matches_the_parent_level() {
    let tree = tree_of(&["a/#", "a/b/#", "#", "a/+/#"]);
    assert_eq!(sub_matches(&tree, "a"), ["#", "a/#"]);
    assert_eq!(sub_matches(&tree, "a/b"), ["#", "a/#", "a/b/#", "a/+/#"]);
    assert_eq!(
        sub_matches(&tree, "a/b/c/d"),
        ["#", "a/#", "a/b/#", "a/+/#"]
    );
    assert_eq!(sub_matches(&tree, "ab"), ["#"]);
    assert_eq!(sub_matches(&tree, "b/a"), ["#"]);
}

#[test]
fn sub_plus_matches_exactly_one_level() {
    let tree = tree_of(&["a/+", "+/+", "+", "a/+/c"]);
    assert_eq!(sub_matches(&tree, "a"), ["+"]);
    assert_eq!(sub_matches(&tree, "a/b"), ["a/+", "+/+"]);
    assert_eq!(sub_matches(&tree, "a/b/c"), ["a/+/c"]);
    assert_eq!(sub_matches(&tree, "a/b/c/d"), Vec::<&str>::new());
}

#[test]
fn sub_dollar_topics_skip_leading_wildcards() {
    let tree = tree_of(&["#", "+/x", "+", "$SYS/#", "$SYS/+", "$SYS/x", "a/+", "a/#"]);
    assert_eq!(sub_matches(&tree, "$SYS/x"), ["$SYS/#", "$SYS/x", "$SYS/+"]);
    assert_eq!(sub_matches(&tree, "$SYS"), ["$SYS/#"]);
    assert_eq!(sub_matches(&tree, "$x"), Vec::<&str>::new());
    // Only the first level counts: `$` further down is ordinary text.
    assert_eq!(sub_matches(&tree, "a/$x"), ["#", "a/#", "a/+"]);
    assert_eq!(sub_matches(&tree, "b/x"), ["#", "+/x"]);
}

#[test]
fn sub_empty_levels_are_levels() {
    let tree = tree_of(&[
        "a//b", "a/+/b", "+/+/+", "/a", "/+", "+/a", "/#", "a/", "a/+", "a",
    ]);
    assert_eq!(sub_matches(&tree, "a//b"), ["a//b", "a/+/b", "+/+/+"]);
    assert_eq!(sub_matches(&tree, "/a"), ["/#", "/a", "/+", "+/a"]);
    assert_eq!(sub_matches(&tree, "a/"), ["a/", "a/+"]);
    assert_eq!(sub_matches(&tree, "a"), ["a"]);
    assert_eq!(sub_matches(&tree, "/"), ["/#", "/+"]);
    assert_eq!(sub_matches(&tree, "//"), ["/#", "+/+/+"]);
}

#[test]
fn sub_visiting_order_is_hash_exact_literal_plus_then_key() {
    let mut tree = SubscriptionTree::new();
    for (text, key) in [
        ("+/b", 2u32),
        ("a/b", 9),
        ("a/#", 4),
        ("#", 7),
        ("a/+", 1),
        ("a/b/#", 3),
        ("+/+", 5),
        ("a/b", 2),
        ("+/#", 6),
    ] {
        tree.insert(&filter(text), key, text);
    }
    let mut seen = Vec::new();
    tree.for_each_match(&name("a/b"), |key, text| seen.push((*text, *key)));
    assert_eq!(
        seen,
        [
            ("#", 7),
            ("a/#", 4),
            ("a/b/#", 3),
            ("a/b", 2),
            ("a/b", 9),
            ("a/+", 1),
            ("+/#", 6),
            ("+/b", 2),
            ("+/+", 5),
        ]
    );
}

#[test]
fn sub_matching_walks_only_the_branches_that_can_match() {
    let mut tree = SubscriptionTree::new();
    for i in 0..10_000 {
        tree.insert(&filter(&format!("p{i}/+/y")), i, ());
        tree.insert(&filter(&format!("x/q{i}/#")), i, ());
    }
    tree.insert(&filter("x/1/y"), 0, ());
    tree.insert(&filter("x/+/y"), 1, ());
    // root, x, x/1, x/1/y, x/+, x/+/y
    assert_eq!(tree.nodes_visited(&name("x/1/y")), 6);
    assert_eq!(tree.nodes_visited(&name("x/2/y")), 4);
    assert_eq!(tree.nodes_visited(&name("z/1/y")), 1);
    let mut keys = Vec::new();
    tree.for_each_match(&name("x/1/y"), |key, _| keys.push(*key));
    assert_eq!(keys, [0, 1]);
}

// ---------------------------------------------------------------------------------------------
// RetainedStore

#[test]
fn retained_new_store_is_empty() {
    let store: RetainedStore<u32> = RetainedStore::default();
    assert!(store.is_empty());
    assert_eq!((store.len(), store.node_count()), (0, 0));
    assert_eq!(store.get(&name("a")), None);
    assert!(retained_matches(&store, "#").is_empty());
    assert_eq!(
        format!("{store:?}"),
        "RetainedStore { len: 0, nodes: 0, .. }"
    );
}

#[test]
fn retained_insert_replaces_and_get_is_exact() {
    let mut store = RetainedStore::new();
    assert_eq!(store.insert(&name("a/b"), 1u32), None);
    assert_eq!(store.insert(&name("a"), 2), None);
    assert_eq!(store.insert(&name("a/b"), 3), Some(1));
    assert_eq!(store.len(), 2);
    assert_eq!(store.get(&name("a/b")), Some(&3));
    assert_eq!(store.get(&name("a")), Some(&2));
    assert_eq!(store.get(&name("a/b/c")), None);
    assert_eq!(store.get(&name("b")), None);
    assert_eq!(store.node_count(), 2);
}

#[test]
fn retained_callback_gets_the_stored_topic() {
    let mut store = RetainedStore::new();
    store.insert(&name("a/b"), 1u32);
    store.insert(&name("a/b"), 2);
    let mut seen = Vec::new();
    store.for_each_match(&filter("a/+"), |topic, value| {
        seen.push((topic.clone(), *value))
    });
    assert_eq!(seen, [(name("a/b"), 2)]);
}

#[test]
fn retained_remove_returns_the_value_and_prunes() {
    let mut store = RetainedStore::new();
    store.insert(&name("a/b/c"), 1u32);
    store.insert(&name("a"), 2);
    assert_eq!(store.node_count(), 3);
    assert_eq!(store.remove(&name("a/b")), None);
    assert_eq!(store.remove(&name("a/b/c/d")), None);
    assert_eq!(store.remove(&name("x")), None);
    assert_eq!(store.remove(&name("a/b/c")), Some(1));
    assert_eq!(store.remove(&name("a/b/c")), None);
    assert_eq!((store.len(), store.node_count()), (1, 1));
    assert_eq!(store.remove(&name("a")), Some(2));
    assert!(store.is_empty());
    assert_eq!(store.node_count(), 0);
}

#[test]
fn retained_thousand_topics_inserted_and_removed_leave_an_empty_store() {
    let mut store = RetainedStore::new();
    let topics: Vec<TopicName> = (0..1000)
        .map(|i| match i % 3 {
            0 => name(&format!("dev/{i}/temp")),
            1 => name(&format!("dev/{}/{i}", i % 10)),
            _ => name(&format!("{i}")),
        })
        .collect();
    for (i, topic) in topics.iter().enumerate() {
        assert_eq!(store.insert(topic, i), None);
    }
    assert_eq!(store.len(), 1000);
    for step in 0..1000 {
        let i = (step * 389) % 1000;
        assert_eq!(store.remove(&topics[i]), Some(i));
    }
    assert!(store.is_empty());
    assert_eq!((store.len(), store.node_count()), (0, 0));
}

#[test]
fn retained_hash_matches_the_parent_level() {
    let store = store_of(&["a", "a/b", "a/b/c", "ab", "b/a"]);
    assert_eq!(retained_matches(&store, "a/#"), ["a", "a/b", "a/b/c"]);
    assert_eq!(retained_matches(&store, "a/b/#"), ["a/b", "a/b/c"]);
    assert_eq!(retained_matches(&store, "a/b/c/#"), ["a/b/c"]);
    assert_eq!(
        retained_matches(&store, "#"),
        ["a", "a/b", "a/b/c", "ab", "b/a"]
    );
    assert_eq!(
        retained_matches(&store, "+/#"),
        ["a", "a/b", "a/b/c", "ab", "b/a"]
    );
    assert_eq!(retained_matches(&store, "+/+/#"), ["a/b", "a/b/c", "b/a"]);
}

#[test]
fn retained_plus_matches_exactly_one_level() {
    let store = store_of(&["a", "a/b", "a/c", "a/b/c", "b/b"]);
    assert_eq!(retained_matches(&store, "+"), ["a"]);
    assert_eq!(retained_matches(&store, "a/+"), ["a/b", "a/c"]);
    assert_eq!(retained_matches(&store, "+/b"), ["a/b", "b/b"]);
    assert_eq!(retained_matches(&store, "+/+/c"), ["a/b/c"]);
    assert_eq!(retained_matches(&store, "a/b/+"), ["a/b/c"]);
    assert!(retained_matches(&store, "a/b/c/+").is_empty());
}

#[test]
fn retained_dollar_topics_skip_leading_wildcards() {
    let store = store_of(&["$SYS", "$SYS/x", "$x", "a/$x", "x"]);
    assert_eq!(retained_matches(&store, "#"), ["a/$x", "x"]);
    assert_eq!(retained_matches(&store, "+"), ["x"]);
    assert_eq!(retained_matches(&store, "+/x"), Vec::<String>::new());
    assert_eq!(retained_matches(&store, "+/+"), ["a/$x"]);
    assert_eq!(retained_matches(&store, "$SYS/#"), ["$SYS", "$SYS/x"]);
    assert_eq!(retained_matches(&store, "$SYS/+"), ["$SYS/x"]);
    assert_eq!(retained_matches(&store, "$x"), ["$x"]);
}

#[test]
fn retained_empty_levels_are_levels() {
    let store = store_of(&["a//b", "/a", "a/", "a", "/", "//"]);
    assert_eq!(retained_matches(&store, "a/+/b"), ["a//b"]);
    assert_eq!(retained_matches(&store, "+/+/+"), ["//", "a//b"]);
    assert_eq!(retained_matches(&store, "/+"), ["/", "/a"]);
    assert_eq!(retained_matches(&store, "+/a"), ["/a"]);
    assert_eq!(retained_matches(&store, "a/+"), ["a/"]);
    assert_eq!(retained_matches(&store, "a/#"), ["a", "a/", "a//b"]);
    assert_eq!(retained_matches(&store, "/#"), ["/", "//", "/a"]);
    assert_eq!(retained_matches(&store, "a/"), ["a/"]);
}

#[test]
fn retained_visiting_order_follows_the_levels() {
    let store = store_of(&["b", "a-b", "a/c", "a/b/z", "a", "a/b", "A"]);
    assert_eq!(
        retained_matches(&store, "#"),
        ["A", "a", "a/b", "a/b/z", "a/c", "a-b", "b"]
    );
}

#[test]
fn retained_plus_filter_visits_only_a_few_nodes() {
    let mut store = RetainedStore::new();
    for i in 0..10_000 {
        store.insert(&name(&format!("p{}/{i}/y", i % 100)), i);
    }
    store.insert(&name("x/1/y"), 1);
    store.insert(&name("x/2/y"), 2);
    store.insert(&name("x/2/z"), 3);
    assert_eq!(store.node_count(), 10_000 * 2 + 100 + 6);
    // root, x, x/1, x/2, x/1/y, x/2/y
    assert_eq!(store.nodes_visited(&filter("x/+/y")), 6);
    assert_eq!(retained_matches(&store, "x/+/y"), ["x/1/y", "x/2/y"]);
    // root and x, then x's subtree of five nodes.
    assert_eq!(store.nodes_visited(&filter("x/#")), 7);
    assert_eq!(store.nodes_visited(&filter("q/+/y")), 1);
}

// ---------------------------------------------------------------------------------------------
// Deep tries: no operation may recurse once per level.

#[test]
fn deep_filters_and_topics_do_not_overflow_the_stack() {
    // A small stack makes recursion per level fail loudly.
    let worker = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let slashes = "/".repeat(65_534); // 65,535 empty levels
            let pluses = format!("{}+", "+/".repeat(32_767)); // 32,768 `+` levels
            let deep_topic = name(&slashes);
            let half_topic = name(&"/".repeat(32_767));

            let mut tree = SubscriptionTree::new();
            tree.insert(&filter(&slashes), 1u32, ());
            tree.insert(&filter(&pluses), 2, ());
            tree.insert(&filter(&format!("{slashes}#")), 3, ());
            let mut keys = Vec::new();
            tree.for_each_match(&deep_topic, |key, _| keys.push(*key));
            assert_eq!(keys, [3, 1]);
            keys.clear();
            tree.for_each_match(&half_topic, |key, _| keys.push(*key));
            assert_eq!(keys, [2]);
            assert_eq!(tree.remove(&filter(&slashes), &1), Some(()));
            drop(tree); // still holds two deep branches

            let mut store = RetainedStore::new();
            store.insert(&deep_topic, 1u32);
            store.insert(&half_topic, 2);
            assert_eq!(store.get(&deep_topic), Some(&1));
            let mut seen = Vec::new();
            store.for_each_match(&filter("#"), |_, value| seen.push(*value));
            assert_eq!(seen, [2, 1]);
            seen.clear();
            store.for_each_match(&filter(&pluses), |_, value| seen.push(*value));
            assert_eq!(seen, [2]);
            assert_eq!(store.remove(&half_topic), Some(2));
            drop(store);
        })
        .unwrap();
    worker.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Model-based property tests

const FILTER_LEVELS: &[&str] = &["a", "b", "$s", "", "+"];
const TOPIC_LEVELS: &[&str] = &["a", "b", "$s", ""];

fn filter_strategy() -> impl Strategy<Value = TopicFilter> {
    (
        prop::collection::vec(select(FILTER_LEVELS), 0..4),
        any::<bool>(),
    )
        .prop_filter_map("not a valid filter", |(mut levels, hash)| {
            if hash {
                levels.push("#");
            }
            TopicFilter::try_from(levels.join("/")).ok()
        })
}

fn topic_strategy() -> impl Strategy<Value = TopicName> {
    prop::collection::vec(select(TOPIC_LEVELS), 1..5)
        .prop_filter_map("not a valid name", |levels| {
            TopicName::try_from(levels.join("/")).ok()
        })
}

/// Where a matching filter's levels put it in `SubscriptionTree`'s visiting order: `#` first,
/// then the end of the filter, then a literal level, then `+`.
fn visit_rank(filter: &TopicFilter) -> Vec<u8> {
    let mut rank: Vec<u8> = filter
        .levels()
        .map(|level| match level {
            "#" => 0,
            "+" => 3,
            _ => 2,
        })
        .collect();
    if !filter.as_str().ends_with('#') {
        rank.push(1);
    }
    rank
}

/// The number of distinct non-empty prefixes of the given level lists: the trie's node count.
fn prefix_count<'a>(paths: impl Iterator<Item = Vec<&'a str>>) -> usize {
    let mut prefixes = BTreeSet::new();
    for path in paths {
        for len in 1..=path.len() {
            prefixes.insert(path[..len].to_vec());
        }
    }
    prefixes.len()
}

#[derive(Debug, Clone)]
enum SubOp {
    Insert(Index, u8, u32),
    Remove(Index, u8),
}

#[derive(Debug, Clone)]
enum RetainedOp {
    Insert(Index, u32),
    Remove(Index),
}

fn check_tree(
    tree: &SubscriptionTree<u8, u32>,
    model: &BTreeMap<(TopicFilter, u8), u32>,
    filters: &[TopicFilter],
    topics: &[TopicName],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(tree.len(), model.len());
    prop_assert_eq!(tree.is_empty(), model.is_empty());
    let paths = model
        .keys()
        .map(|(f, _)| f.levels().filter(|level| *level != "#").collect());
    prop_assert_eq!(tree.node_count(), prefix_count(paths));
    for f in filters {
        for key in 0..3 {
            prop_assert_eq!(tree.get(f, &key), model.get(&(f.clone(), key)));
        }
    }
    for topic in topics {
        let mut expected: Vec<(Vec<u8>, u8, u32)> = model
            .iter()
            .filter(|((f, _), _)| f.matches(topic))
            .map(|((f, key), value)| (visit_rank(f), *key, *value))
            .collect();
        expected.sort();
        let expected: Vec<(u8, u32)> = expected.into_iter().map(|(_, k, v)| (k, v)).collect();
        let mut seen = Vec::new();
        tree.for_each_match(topic, |key, value| seen.push((*key, *value)));
        prop_assert_eq!(seen, expected, "topic {}", topic);
    }
    Ok(())
}

fn check_store(
    store: &RetainedStore<u32>,
    model: &BTreeMap<TopicName, u32>,
    filters: &[TopicFilter],
    topics: &[TopicName],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.len(), model.len());
    prop_assert_eq!(store.is_empty(), model.is_empty());
    prop_assert_eq!(
        store.node_count(),
        prefix_count(model.keys().map(|t| t.levels().collect()))
    );
    for topic in topics {
        prop_assert_eq!(store.get(topic), model.get(topic));
    }
    for f in filters {
        let mut expected: Vec<(Vec<&str>, &TopicName, u32)> = model
            .iter()
            .filter(|(topic, _)| f.matches(topic))
            .map(|(topic, value)| (topic.levels().collect(), topic, *value))
            .collect();
        expected.sort();
        let expected: Vec<(TopicName, u32)> = expected
            .into_iter()
            .map(|(_, t, v)| (t.clone(), v))
            .collect();
        let mut seen = Vec::new();
        store.for_each_match(f, |topic, value| seen.push((topic.clone(), *value)));
        prop_assert_eq!(seen, expected, "filter {}", f);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn subscription_tree_agrees_with_the_model(
        filters in prop::collection::vec(filter_strategy(), 1..10),
        topics in prop::collection::vec(topic_strategy(), 1..8),
        ops in prop::collection::vec(
            prop_oneof![
                3 => (any::<Index>(), 0u8..3, any::<u32>())
                    .prop_map(|(i, key, value)| SubOp::Insert(i, key, value)),
                2 => (any::<Index>(), 0u8..3).prop_map(|(i, key)| SubOp::Remove(i, key)),
            ],
            1..40,
        ),
    ) {
        let mut tree = SubscriptionTree::new();
        let mut model = BTreeMap::new();
        for op in ops {
            match op {
                SubOp::Insert(i, key, value) => {
                    let f = i.get(&filters).clone();
                    let old = tree.insert(&f, key, value);
                    prop_assert_eq!(old, model.insert((f, key), value));
                }
                SubOp::Remove(i, key) => {
                    let f = i.get(&filters).clone();
                    prop_assert_eq!(tree.remove(&f, &key), model.remove(&(f, key)));
                }
            }
            check_tree(&tree, &model, &filters, &topics)?;
        }
        // Removing everything leaves no node behind.
        for (f, key) in model.keys() {
            prop_assert!(tree.remove(f, key).is_some());
        }
        prop_assert_eq!((tree.len(), tree.node_count()), (0, 0));
    }

    #[test]
    fn retained_store_agrees_with_the_model(
        filters in prop::collection::vec(filter_strategy(), 1..10),
        topics in prop::collection::vec(topic_strategy(), 1..10),
        ops in prop::collection::vec(
            prop_oneof![
                3 => (any::<Index>(), any::<u32>())
                    .prop_map(|(i, value)| RetainedOp::Insert(i, value)),
                2 => any::<Index>().prop_map(RetainedOp::Remove),
            ],
            1..40,
        ),
    ) {
        let mut store = RetainedStore::new();
        let mut model = BTreeMap::new();
        for op in ops {
            match op {
                RetainedOp::Insert(i, value) => {
                    let topic = i.get(&topics).clone();
                    let old = store.insert(&topic, value);
                    prop_assert_eq!(old, model.insert(topic, value));
                }
                RetainedOp::Remove(i) => {
                    let topic = i.get(&topics);
                    prop_assert_eq!(store.remove(topic), model.remove(topic));
                }
            }
            check_store(&store, &model, &filters, &topics)?;
        }
        for topic in model.keys() {
            prop_assert!(store.remove(topic).is_some());
        }
        prop_assert_eq!((store.len(), store.node_count()), (0, 0));
    }
}
