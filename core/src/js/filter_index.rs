//! Consumers' filter subjects as a tree of tokens, so that a store finds the consumers a
//! message is for by walking the subject's tokens instead of testing every filter of every
//! consumer (with one consumer per persistent MQTT session, that scan grew with the sessions).
//! Matching is NATS's, as [`subject_matches`](super::subjects::subject_matches) has it: `*`
//! stands for one token, `>` for one or more trailing ones. Used by the embedded store and
//! [`MemoryStore`](super::memory::MemoryStore).

use std::collections::BTreeMap;

use bytestring::ByteString;

/// Consumer names by filter subject, one tree level per token.
#[derive(Debug, Default)]
pub struct FilterIndex {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    /// Filters going on with a literal token.
    literal: BTreeMap<Box<str>, Node>,
    /// Filters going on with `*`.
    star: Option<Box<Node>>,
    /// Consumers whose filter ends here.
    here: Vec<ByteString>,
    /// Consumers whose filter ends with `>` here.
    rest: Vec<ByteString>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.rest.is_empty()
    }
}

impl FilterIndex {
    /// Adds `consumer`'s `filter`.
    pub fn insert(&mut self, filter: &str, consumer: &ByteString) {
        let mut node = &mut self.root;
        for token in filter.split('.') {
            match token {
                ">" => {
                    node.rest.push(consumer.clone());
                    return;
                }
                "*" => node = node.star.get_or_insert_with(Box::default),
                literal => node = node.literal.entry(literal.into()).or_default(),
            }
        }
        node.here.push(consumer.clone());
    }

    /// Removes `consumer`'s `filter` (once), and the branches left empty.
    pub fn remove(&mut self, filter: &str, consumer: &str) {
        let tokens: Vec<&str> = filter.split('.').collect();
        remove_from(&mut self.root, &tokens, consumer);
    }

    /// Replaces `consumer`'s filters `old` with `new` (either may be empty).
    pub fn replace(&mut self, consumer: &ByteString, old: &[ByteString], new: &[ByteString]) {
        for f in old {
            self.remove(f, consumer);
        }
        for f in new {
            self.insert(f, consumer);
        }
    }

    /// The consumers with a filter matching `subject`, each once, in name order.
    #[must_use]
    pub fn matching(&self, subject: &str) -> Vec<ByteString> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let mut found = Vec::new();
        collect(&self.root, &tokens, &mut found);
        found.sort_unstable();
        found.dedup();
        found
    }
}

/// Removes one `consumer` entry at the end of `tokens`; true when `node` is left empty.
fn remove_from(node: &mut Node, tokens: &[&str], consumer: &str) -> bool {
    let drop_one = |list: &mut Vec<ByteString>| {
        if let Some(i) = list.iter().position(|c| c == consumer) {
            list.swap_remove(i);
        }
    };
    match tokens.split_first() {
        None => drop_one(&mut node.here),
        Some((&">", _)) => drop_one(&mut node.rest),
        Some((&"*", rest)) => {
            if let Some(star) = node.star.as_deref_mut() {
                if remove_from(star, rest, consumer) {
                    node.star = None;
                }
            }
        }
        Some((literal, rest)) => {
            if let Some(child) = node.literal.get_mut(*literal) {
                if remove_from(child, rest, consumer) {
                    node.literal.remove(*literal);
                }
            }
        }
    }
    node.is_empty()
}

/// Adds the consumers under `node` whose filters match the remaining `tokens`.
fn collect(node: &Node, tokens: &[&str], found: &mut Vec<ByteString>) {
    let Some((token, rest)) = tokens.split_first() else {
        found.extend(node.here.iter().cloned());
        return;
    };
    // `>` takes this token and everything after it.
    found.extend(node.rest.iter().cloned());
    if let Some(child) = node.literal.get(*token) {
        collect(child, rest, found);
    }
    if let Some(star) = &node.star {
        collect(star, rest, found);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::js::subjects::subject_matches;

    use super::*;

    fn names(v: &[&str]) -> Vec<ByteString> {
        v.iter().map(|s| ByteString::from(*s)).collect()
    }

    #[test]
    fn literal_star_and_rest() {
        let mut index = FilterIndex::default();
        index.insert("$MQTT.msgs.a.b", &"exact".into());
        index.insert("$MQTT.msgs.a.*", &"star".into());
        index.insert("$MQTT.msgs.a.>", &"rest".into());
        index.insert("$MQTT.msgs.a", &"parent".into());
        index.insert("$MQTT.msgs.*.b", &"mid".into());
        assert_eq!(
            index.matching("$MQTT.msgs.a.b"),
            names(&["exact", "mid", "rest", "star"])
        );
        assert_eq!(index.matching("$MQTT.msgs.a"), names(&["parent"]));
        assert_eq!(index.matching("$MQTT.msgs.a.b.c"), names(&["rest"]));
        assert_eq!(index.matching("$MQTT.msgs.x.b"), names(&["mid"]));
        assert!(index.matching("$MQTT.msgs").is_empty());
    }

    #[test]
    fn a_consumer_matching_twice_is_listed_once_and_removal_prunes() {
        let mut index = FilterIndex::default();
        let c = ByteString::from("c");
        index.insert("a.>", &c);
        index.insert("a.b", &c);
        assert_eq!(index.matching("a.b"), names(&["c"]));
        index.remove("a.>", "c");
        index.remove("a.b", "c");
        assert!(index.matching("a.b").is_empty());
        assert!(index.root.is_empty(), "{:?}", index.root);
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[abc]",
            1 => Just("*".to_string()),
            1 => Just(">".to_string()),
        ]
    }

    fn subject() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 1..5).prop_map(|t| t.join("."))
    }

    proptest! {
        /// The index finds exactly the consumers the plain matcher finds, through inserts and
        /// removals of arbitrary filters.
        #[test]
        fn agrees_with_testing_every_filter(
            filters in prop::collection::vec((0u8..6, subject()), 0..30),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            subjects in prop::collection::vec(subject(), 1..20),
        ) {
            let mut index = FilterIndex::default();
            let mut live: Vec<(ByteString, String)> = Vec::new();
            for (c, f) in filters {
                let name = ByteString::from(format!("c{c}"));
                index.insert(&f, &name);
                live.push((name, f));
            }
            for r in removed {
                if live.is_empty() {
                    break;
                }
                let (name, f) = live.remove(r.index(live.len()));
                index.remove(&f, &name);
            }
            for s in subjects {
                let mut expected: Vec<ByteString> = live
                    .iter()
                    .filter(|(_, f)| subject_matches(f, &s))
                    .map(|(n, _)| n.clone())
                    .collect();
                expected.sort_unstable();
                expected.dedup();
                prop_assert_eq!(index.matching(&s), expected, "subject {}", s);
            }
        }
    }
}
