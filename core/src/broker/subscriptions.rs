//! [`SubscriptionTree`]: the subscriptions of all sessions in a trie over topic levels, answering
//! "who receives a message published on this topic" without looking at unrelated filters.

use std::collections::{btree_map, BTreeMap};
use std::fmt;
use std::mem;
use std::str::Split;

use crate::topic::{TopicFilter, TopicName};

/// Subscriptions indexed by filter: one entry per (filter, key), where the key names the
/// subscriber (a session id, say) and the value holds the subscription's options.
///
/// The trie has one node per filter level; a `+` level has its own slot and a trailing `#` is
/// stored on the node of the level before it, so matching a topic walks only the branches that can
/// match: its cost grows with the topic's depth and the number of matches, not with the number of
/// filters. Nodes left empty by [`remove`](Self::remove) are freed at once.
///
/// [`for_each_match`](Self::for_each_match) visits the matching filters depth first: at each level
/// of the topic, first the filters ending in `#` there, then (after the topic's last level) the
/// filters ending exactly there, then those continuing with the topic's literal level, and last
/// those continuing with `+`; the subscribers of one filter come in ascending key order. The
/// order is therefore a function of the entries alone, never of insertion history or hashing.
pub struct SubscriptionTree<K, V> {
    root: Node<K, V>,
    len: usize,
    nodes: usize,
}

/// One trie node: the filters that reach this level.
struct Node<K, V> {
    /// The next levels, boxed: most nodes end a filter and have none, and a node is stored in
    /// its parent's B-tree, so every byte of it counts once per subscribed topic.
    children: Option<Box<Children<K, V>>>,
    /// Subscribers whose filter ends at this level.
    exact: Subscribers<K, V>,
    /// Subscribers whose filter continues with a final `#` after this level.
    hash: Subscribers<K, V>,
}

/// The levels after a node.
struct Children<K, V> {
    /// The next levels that are literal text, in byte order.
    literal: BTreeMap<Box<str>, Node<K, V>>,
    /// The next level when it is `+`.
    plus: Option<Box<Node<K, V>>>,
}

impl<K, V> Default for Children<K, V> {
    fn default() -> Self {
        Self {
            literal: BTreeMap::new(),
            plus: None,
        }
    }
}

/// The subscribers of one filter, sorted by key: a vector sized to its contents, since most
/// filters have one subscriber (a B-tree map would allocate a node for eleven).
struct Subscribers<K, V>(Vec<(K, V)>);

impl<K: Ord, V> Subscribers<K, V> {
    fn position(&self, key: &K) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// Stores `value` for `key`, returning the value it replaces.
    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Ok(at) => Some(mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                if self.0.is_empty() {
                    self.0.reserve_exact(1);
                }
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let at = self.position(key).ok()?;
        let (_, value) = self.0.remove(at);
        if self.0.len() < self.0.capacity() / 4 {
            self.0.shrink_to_fit();
        }
        Some(value)
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.position(key).ok().map(|at| &self.0[at].1)
    }
}

impl<K, V> Subscribers<K, V> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in key order.
    fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<K: Ord, V> SubscriptionTree<K, V> {
    /// An empty tree; allocates nothing until the first insert.
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
            nodes: 0,
        }
    }

    /// Stores `value` for `key` under `filter`, returning the value it replaces if that key was
    /// already subscribed with this exact filter.
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        let (path, hash) = node_path(filter);
        // Fast path: the filter's node already exists, so no level is copied.
        if let Some(node) = self.root.find_mut(path.clone()) {
            let old = node.subscribers_mut(hash).insert(key, value);
            self.len += usize::from(old.is_none());
            return old;
        }
        let mut node = &mut self.root;
        for level in path {
            node = node.child_or_insert(level, &mut self.nodes);
        }
        // The filter's node was missing, so it is new and this insert adds an entry.
        self.len += 1;
        node.subscribers_mut(hash).insert(key, value)
    }

    /// Removes the entry of `key` under `filter` and returns its value; nodes left without
    /// subscribers or branches are freed.
    pub fn remove(&mut self, filter: &TopicFilter, key: &K) -> Option<V> {
        let (path, hash) = node_path(filter);
        let old = self
            .root
            .find_mut(path.clone())?
            .subscribers_mut(hash)
            .remove(key)?;
        self.len -= 1;
        self.prune(path);
        Some(old)
    }

    /// The value stored for `key` under exactly `filter` (no wildcard matching).
    pub fn get(&self, filter: &TopicFilter, key: &K) -> Option<&V> {
        let (path, hash) = node_path(filter);
        self.root.find(path)?.subscribers(hash).get(key)
    }

    /// Calls `f` once for every (filter, key) entry whose filter matches `topic`, in the order
    /// described on [`SubscriptionTree`]; allocates nothing.
    ///
    /// Matching follows [`TopicFilter::matches`]: `+` is one level, `#` any number of trailing
    /// levels including none (`a/#` matches `a`), and a filter starting with a wildcard never
    /// matches a topic starting with `$` ([MQTT-4.7.2-1]).
    pub fn for_each_match(&self, topic: &TopicName, mut f: impl FnMut(&K, &V)) {
        self.walk(topic, &mut f);
    }

    /// How many trie nodes [`for_each_match`](Self::for_each_match) visits for `topic`; for tests
    /// and metrics.
    pub fn nodes_visited(&self, topic: &TopicName) -> usize {
        self.walk(topic, &mut |_, _| {})
    }

    /// The number of (filter, key) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of trie nodes below the root (one per distinct filter prefix, not counting a
    /// final `#`); for tests and metrics. It is 0 whenever the tree is empty.
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Runs the match walk from the root and returns the number of nodes visited.
    fn walk<F: FnMut(&K, &V)>(&self, topic: &TopicName, f: &mut F) -> usize {
        let mut visited = 0;
        // [MQTT-4.7.2-1]: wildcards in the first level do not match a `$` topic.
        let root_wildcards = !topic.starts_with_dollar();
        walk_from(&self.root, topic.levels(), root_wildcards, f, &mut visited);
        visited
    }

    /// Frees the nodes along `path` that no longer hold a subscriber or another branch.
    fn prune<'f>(&mut self, path: impl Iterator<Item = &'f str> + Clone) {
        let depth = path.clone().count();
        // The deepest node on the path that must stay (0 is the root, which always stays).
        let mut keep = 0;
        let mut node = &self.root;
        for (index, level) in path.clone().enumerate() {
            let Some(child) = node.child(level) else {
                return;
            };
            // A node above the last one has the path's next level as one of its branches.
            let path_branch = usize::from(index + 1 < depth);
            if child.has_subscribers() || child.branch_count() > path_branch {
                keep = index + 1;
            }
            node = child;
        }
        if keep == depth {
            return;
        }
        let mut levels = path;
        let mut parent = &mut self.root;
        for level in levels.by_ref().take(keep) {
            parent = match parent.child_mut(level) {
                Some(child) => child,
                None => return,
            };
        }
        if let Some(level) = levels.next() {
            if parent.remove_child(level).is_some() {
                self.nodes -= depth - keep;
            }
        }
    }
}

impl<K: Ord, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for SubscriptionTree<K, V> {
    /// Shows the sizes only: a deep trie would be unreadable and could exhaust the stack.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTree")
            .field("len", &self.len)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// The levels leading to a filter's node (all but a final `#`), and whether it ends with `#`.
fn node_path(filter: &TopicFilter) -> (impl Iterator<Item = &str> + Clone, bool) {
    // A valid filter has `#` only as its whole last level.
    let hash = filter.as_str().ends_with('#');
    (filter.levels().filter(|level| *level != "#"), hash)
}

/// Visits the matches below `node`, where `levels` are the topic levels not yet consumed and
/// `wildcards` tells whether `+` and `#` at this node may match (not at the root of a `$` topic).
///
/// It loops down single branches and recurses only where both the literal level and `+` go on,
/// so a deep chain of levels costs no stack.
fn walk_from<K, V, F: FnMut(&K, &V)>(
    mut node: &Node<K, V>,
    mut levels: Split<'_, char>,
    mut wildcards: bool,
    f: &mut F,
    visited: &mut usize,
) {
    loop {
        *visited += 1;
        if wildcards {
            // `#` matches the remaining levels, even none.
            for (key, value) in node.hash.iter() {
                f(key, value);
            }
        }
        let Some(level) = levels.next() else {
            for (key, value) in node.exact.iter() {
                f(key, value);
            }
            return;
        };
        let literal = node.literal(level);
        let plus = if wildcards { node.plus() } else { None };
        wildcards = true;
        node = match (literal, plus) {
            (Some(literal), Some(plus)) => {
                walk_from(literal, levels.clone(), true, f, visited);
                plus
            }
            (Some(next), None) | (None, Some(next)) => next,
            (None, None) => return,
        };
    }
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self {
            children: None,
            exact: Subscribers(Vec::new()),
            hash: Subscribers(Vec::new()),
        }
    }
}

impl<K, V> Node<K, V> {
    /// The subscribers ending here (`hash == false`) or with a `#` after this level.
    fn subscribers(&self, hash: bool) -> &Subscribers<K, V> {
        if hash {
            &self.hash
        } else {
            &self.exact
        }
    }

    /// Mutable form of [`Node::subscribers`].
    fn subscribers_mut(&mut self, hash: bool) -> &mut Subscribers<K, V> {
        if hash {
            &mut self.hash
        } else {
            &mut self.exact
        }
    }

    fn has_subscribers(&self) -> bool {
        !self.exact.is_empty() || !self.hash.is_empty()
    }

    fn branch_count(&self) -> usize {
        self.children
            .as_ref()
            .map_or(0, |c| c.literal.len() + usize::from(c.plus.is_some()))
    }

    /// The child for the literal level `level`.
    fn literal(&self, level: &str) -> Option<&Self> {
        self.children.as_ref()?.literal.get(level)
    }

    /// The child for a `+` level.
    fn plus(&self) -> Option<&Self> {
        self.children.as_ref()?.plus.as_deref()
    }

    /// Every child, `+` last.
    #[cfg(test)]
    fn child_nodes(&self) -> impl Iterator<Item = &Self> {
        self.children
            .iter()
            .flat_map(|c| c.literal.values().chain(c.plus.as_deref()))
    }

    /// The child for a filter level (`+` or literal text).
    fn child(&self, level: &str) -> Option<&Self> {
        if level == "+" {
            self.plus()
        } else {
            self.literal(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        let children = self.children.as_deref_mut()?;
        if level == "+" {
            children.plus.as_deref_mut()
        } else {
            children.literal.get_mut(level)
        }
    }

    /// The child for `level`, created (and counted in `created`) if missing.
    fn child_or_insert(&mut self, level: &str, created: &mut usize) -> &mut Self {
        let children = self.children.get_or_insert_with(Box::default);
        if level == "+" {
            if children.plus.is_none() {
                *created += 1;
            }
            return children.plus.get_or_insert_with(Box::default);
        }
        match children.literal.entry(Box::from(level)) {
            btree_map::Entry::Occupied(entry) => entry.into_mut(),
            btree_map::Entry::Vacant(entry) => {
                *created += 1;
                entry.insert(Self::default())
            }
        }
    }

    fn remove_child(&mut self, level: &str) -> Option<Self> {
        let children = self.children.as_deref_mut()?;
        let removed = if level == "+" {
            children.plus.take().map(|child| *child)
        } else {
            children.literal.remove(level)
        };
        if children.literal.is_empty() && children.plus.is_none() {
            self.children = None;
        }
        removed
    }

    fn find<'f>(&self, path: impl Iterator<Item = &'f str>) -> Option<&Self> {
        let mut node = self;
        for level in path {
            node = node.child(level)?;
        }
        Some(node)
    }

    fn find_mut<'f>(&mut self, path: impl Iterator<Item = &'f str>) -> Option<&mut Self> {
        let mut node = self;
        for level in path {
            node = node.child_mut(level)?;
        }
        Some(node)
    }

    /// Moves the children out, leaving this node without branches.
    fn take_branches(&mut self) -> Branches<K, V> {
        let children = self.children.take().map(|c| *c).unwrap_or_default();
        Branches {
            plus: children.plus,
            literal: children.literal.into_values(),
        }
    }
}

/// The children taken out of a node being dropped.
struct Branches<K, V> {
    plus: Option<Box<Node<K, V>>>,
    literal: btree_map::IntoValues<Box<str>, Node<K, V>>,
}

impl<K, V> Branches<K, V> {
    fn next(&mut self) -> Option<Node<K, V>> {
        match self.plus.take() {
            Some(plus) => Some(*plus),
            None => self.literal.next(),
        }
    }

    fn is_empty(&self) -> bool {
        self.plus.is_none() && self.literal.len() == 0
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Frees the subtree with a heap worklist instead of the recursive drop glue: one filter of
    /// 65,535 bytes can be 32,768 levels deep, enough to overflow a thread's stack.
    fn drop(&mut self) {
        let mut current = self.take_branches();
        // Siblings still to free, one entry per level where a branch point was left; a pure chain
        // never touches it, so it does not allocate.
        let mut pending = Vec::new();
        loop {
            let Some(mut child) = current.next() else {
                match pending.pop() {
                    Some(next) => {
                        current = next;
                        continue;
                    }
                    None => return,
                }
            };
            let below = child.take_branches();
            // `child` has no branches left, so its own `drop` returns at once.
            drop(child);
            if below.is_empty() {
                continue;
            }
            if current.is_empty() {
                current = below;
            } else {
                pending.push(mem::replace(&mut current, below));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the nodes below `node` by walking them (the tree keeps a counter instead).
    fn recount<K, V>(node: &Node<K, V>) -> usize {
        let mut stack: Vec<&Node<K, V>> = vec![node];
        let mut count = 0;
        while let Some(node) = stack.pop() {
            for child in node.child_nodes() {
                count += 1;
                stack.push(child);
            }
        }
        count
    }

    /// Whether every node below the root holds a subscriber or leads to one.
    fn no_dead_nodes<K, V>(node: &Node<K, V>) -> bool {
        node.child_nodes().all(|child| {
            (child.has_subscribers() || child.branch_count() > 0) && no_dead_nodes(child)
        })
    }

    fn filter(text: &str) -> TopicFilter {
        TopicFilter::try_from(text).unwrap()
    }

    #[test]
    fn node_counter_matches_the_nodes() {
        let mut tree = SubscriptionTree::new();
        let filters = [
            "a/b/c", "a/+/c", "a/#", "#", "+", "a//", "/a", "a/b", "+/+/#",
        ];
        for (key, text) in filters.iter().enumerate() {
            tree.insert(&filter(text), key, ());
            assert_eq!(tree.node_count(), recount(&tree.root));
        }
        for (key, text) in filters.iter().enumerate().rev() {
            assert_eq!(tree.remove(&filter(text), &key), Some(()));
            assert_eq!(tree.node_count(), recount(&tree.root));
            assert!(no_dead_nodes(&tree.root));
        }
        assert_eq!(tree.node_count(), 0);
        assert!(tree.is_empty());
    }

    #[test]
    fn removing_from_the_middle_keeps_the_rest() {
        let mut tree = SubscriptionTree::new();
        tree.insert(&filter("a/b/c/d"), 1, ());
        tree.insert(&filter("a/b"), 2, ());
        tree.insert(&filter("a/+/x"), 3, ());
        assert_eq!(tree.node_count(), 6);
        assert_eq!(tree.remove(&filter("a/b/c/d"), &1), Some(()));
        assert_eq!(tree.node_count(), 4);
        assert_eq!(recount(&tree.root), 4);
        assert!(no_dead_nodes(&tree.root));
        assert_eq!(tree.remove(&filter("a/+/x"), &3), Some(()));
        assert_eq!((tree.node_count(), recount(&tree.root)), (2, 2));
    }
}
