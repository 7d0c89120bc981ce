//! [`RetainedStore`]: the retained message of each topic in a trie over topic levels, so that a new
//! subscription finds the messages its filter matches without scanning all of them.

use std::collections::{btree_map, BTreeMap};
use std::fmt;
use std::mem;
use std::str::Split;

use crate::topic::{TopicFilter, TopicName};

/// Retained messages indexed by topic name: at most one value per topic, kept with the topic's
/// [`TopicName`] so a lookup by filter can hand both back.
///
/// The trie has one node per topic level, so [`for_each_match`](Self::for_each_match) costs time
/// in proportion to the matching messages and the nodes on their paths: a literal level follows
/// one child, `+` visits the children of one node and `#` one subtree. Nodes left empty by
/// [`remove`](Self::remove) are freed at once.
///
/// Matches are visited in ascending order of their topics' level lists, compared level by level
/// and each level byte by byte: a depth-first, pre-order walk of the trie with siblings in byte
/// order. So `a` comes before `a/b`, `a/b` before `a/c`, and all of `a/…` before `a-b`.
pub struct RetainedStore<V> {
    root: Node<V>,
    len: usize,
    nodes: usize,
}

/// One trie node: a topic level.
struct Node<V> {
    /// The next levels, in byte order.
    children: BTreeMap<Box<str>, Node<V>>,
    /// The message retained on the topic that ends at this level.
    message: Option<(TopicName, V)>,
}

/// A pending step of [`RetainedStore::walk`]: the rest of a node's children to go through.
enum Frame<'s, 'f, V> {
    /// The children of a node reached by a `+` level, each still to be matched with `rest`.
    Plus {
        children: btree_map::Iter<'s, Box<str>, Node<V>>,
        rest: Split<'f, char>,
        skip_dollar: bool,
    },
    /// The children of a node reached by `#`: every message below them matches.
    Hash {
        children: btree_map::Iter<'s, Box<str>, Node<V>>,
        skip_dollar: bool,
    },
}

impl<V> RetainedStore<V> {
    /// An empty store; allocates nothing until the first insert.
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
            nodes: 0,
        }
    }

    /// Retains `value` on `topic`, returning the value it replaces.
    ///
    /// The store keeps a clone of `topic` (a reference-counted buffer, not a copy of the text).
    pub fn insert(&mut self, topic: &TopicName, value: V) -> Option<V> {
        // Fast path: the topic's node already exists, so no level is copied.
        if let Some(node) = self.root.find_mut(topic.levels()) {
            let old = node.message.replace((topic.clone(), value));
            self.len += usize::from(old.is_none());
            return old.map(|(_, value)| value);
        }
        let mut node = &mut self.root;
        for level in topic.levels() {
            node = node.child_or_insert(level, &mut self.nodes);
        }
        // The topic's node was missing, so it is new and this insert adds a message.
        self.len += 1;
        node.message
            .replace((topic.clone(), value))
            .map(|(_, value)| value)
    }

    /// Removes the message retained on `topic` and returns its value; nodes left without a
    /// message or children are freed.
    pub fn remove(&mut self, topic: &TopicName) -> Option<V> {
        let (_, old) = self.root.find_mut(topic.levels())?.message.take()?;
        self.len -= 1;
        self.prune(topic);
        Some(old)
    }

    /// The value retained on exactly `topic`.
    pub fn get(&self, topic: &TopicName) -> Option<&V> {
        let (_, value) = self.root.find(topic.levels())?.message.as_ref()?;
        Some(value)
    }

    /// Calls `f` with every retained message, `$` topics included, in no particular order.
    pub fn for_each(&self, mut f: impl FnMut(&TopicName, &V)) {
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            node.visit(&mut f);
            stack.extend(node.children.values());
        }
    }

    /// Calls `f` with every retained message whose topic `filter` matches, in the order described
    /// on [`RetainedStore`].
    ///
    /// Matching follows [`TopicFilter::matches`]: `+` is one level, `#` any number of trailing
    /// levels including none (`a/#` matches `a`), and a filter starting with a wildcard never
    /// matches a topic starting with `$` ([MQTT-4.7.2-1]). Only `+` and `#` allocate, a stack
    /// entry per trie level below them.
    pub fn for_each_match(&self, filter: &TopicFilter, mut f: impl FnMut(&TopicName, &V)) {
        self.walk(filter, &mut f);
    }

    /// How many trie nodes [`for_each_match`](Self::for_each_match) visits for `filter`; for tests
    /// and metrics.
    pub fn nodes_visited(&self, filter: &TopicFilter) -> usize {
        self.walk(filter, &mut |_, _| {})
    }

    /// The number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no message is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of trie nodes below the root (one per distinct topic prefix); for tests and
    /// metrics. It is 0 whenever the store is empty.
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Calls `f` with the matches of `filter` and returns the number of nodes visited.
    fn walk<F: FnMut(&TopicName, &V)>(&self, filter: &TopicFilter, f: &mut F) -> usize {
        let mut visited = 0;
        let mut stack = Vec::new();
        // The node to match next, the filter levels left for it, and whether it is the root: a
        // wildcard in the first level skips the topics starting with `$` ([MQTT-4.7.2-1]).
        let mut next = Some((&self.root, filter.levels(), true));
        loop {
            if let Some((node, mut levels, at_root)) = next.take() {
                visited += 1;
                match levels.next() {
                    None => node.visit(f),
                    Some("#") => {
                        // `a/#` matches `a` (the root itself never holds a message).
                        node.visit(f);
                        if !node.children.is_empty() {
                            stack.push(Frame::Hash {
                                children: node.children.iter(),
                                skip_dollar: at_root,
                            });
                        }
                    }
                    Some("+") => {
                        if !node.children.is_empty() {
                            stack.push(Frame::Plus {
                                children: node.children.iter(),
                                rest: levels,
                                skip_dollar: at_root,
                            });
                        }
                    }
                    Some(level) => next = node.children.get(level).map(|c| (c, levels, false)),
                }
                continue;
            }
            let Some(frame) = stack.last_mut() else {
                return visited;
            };
            match frame {
                Frame::Plus {
                    children,
                    rest,
                    skip_dollar,
                } => match next_child(children, *skip_dollar) {
                    Some(child) => next = Some((child, rest.clone(), false)),
                    None => {
                        stack.pop();
                    }
                },
                Frame::Hash {
                    children,
                    skip_dollar,
                } => match next_child(children, *skip_dollar) {
                    Some(child) => {
                        visited += 1;
                        child.visit(f);
                        if !child.children.is_empty() {
                            stack.push(Frame::Hash {
                                children: child.children.iter(),
                                skip_dollar: false,
                            });
                        }
                    }
                    None => {
                        stack.pop();
                    }
                },
            }
        }
    }

    /// Frees the nodes along `topic`'s path that no longer hold a message or another branch.
    fn prune(&mut self, topic: &TopicName) {
        let depth = topic.levels().count();
        // The deepest node on the path that must stay (0 is the root, which always stays).
        let mut keep = 0;
        let mut node = &self.root;
        for (index, level) in topic.levels().enumerate() {
            let Some(child) = node.children.get(level) else {
                return;
            };
            // A node above the last one has the path's next level as one of its children.
            let path_branch = usize::from(index + 1 < depth);
            if child.message.is_some() || child.children.len() > path_branch {
                keep = index + 1;
            }
            node = child;
        }
        if keep == depth {
            return;
        }
        let mut levels = topic.levels();
        let mut parent = &mut self.root;
        for level in levels.by_ref().take(keep) {
            parent = match parent.children.get_mut(level) {
                Some(child) => child,
                None => return,
            };
        }
        if let Some(level) = levels.next() {
            if parent.children.remove(level).is_some() {
                self.nodes -= depth - keep;
            }
        }
    }
}

impl<V> Default for RetainedStore<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> fmt::Debug for RetainedStore<V> {
    /// Shows the sizes only: a deep trie would be unreadable and could exhaust the stack.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedStore")
            .field("len", &self.len)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// The next child from `children`, passing over levels starting with `$` if `skip_dollar`.
fn next_child<'s, V>(
    children: &mut btree_map::Iter<'s, Box<str>, Node<V>>,
    skip_dollar: bool,
) -> Option<&'s Node<V>> {
    children
        .find(|(level, _)| !(skip_dollar && level.starts_with('$')))
        .map(|(_, child)| child)
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: BTreeMap::new(),
            message: None,
        }
    }
}

impl<V> Node<V> {
    /// Calls `f` with this node's message, if any.
    fn visit<F: FnMut(&TopicName, &V)>(&self, f: &mut F) {
        if let Some((topic, value)) = &self.message {
            f(topic, value);
        }
    }

    /// The child for `level`, created (and counted in `created`) if missing.
    fn child_or_insert(&mut self, level: &str, created: &mut usize) -> &mut Self {
        match self.children.entry(Box::from(level)) {
            btree_map::Entry::Occupied(entry) => entry.into_mut(),
            btree_map::Entry::Vacant(entry) => {
                *created += 1;
                entry.insert(Self::default())
            }
        }
    }

    fn find<'t>(&self, path: impl Iterator<Item = &'t str>) -> Option<&Self> {
        let mut node = self;
        for level in path {
            node = node.children.get(level)?;
        }
        Some(node)
    }

    fn find_mut<'t>(&mut self, path: impl Iterator<Item = &'t str>) -> Option<&mut Self> {
        let mut node = self;
        for level in path {
            node = node.children.get_mut(level)?;
        }
        Some(node)
    }
}

impl<V> Drop for Node<V> {
    /// Frees the subtree with a heap worklist instead of the recursive drop glue: one topic of
    /// 65,535 bytes can be 65,536 levels deep, enough to overflow a thread's stack.
    fn drop(&mut self) {
        let mut current = mem::take(&mut self.children).into_values();
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
            let below = mem::take(&mut child.children).into_values();
            // `child` has no children left, so its own `drop` returns at once.
            drop(child);
            if below.len() == 0 {
                continue;
            }
            if current.len() == 0 {
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

    /// Counts the nodes below `node` by walking them (the store keeps a counter instead).
    fn recount<V>(node: &Node<V>) -> usize {
        let mut stack = vec![node];
        let mut count = 0;
        while let Some(node) = stack.pop() {
            count += node.children.len();
            stack.extend(node.children.values());
        }
        count
    }

    /// Whether every node below the root holds a message or leads to one.
    fn no_dead_nodes<V>(node: &Node<V>) -> bool {
        node.children.values().all(|child| {
            (child.message.is_some() || !child.children.is_empty()) && no_dead_nodes(child)
        })
    }

    fn name(text: &str) -> TopicName {
        TopicName::try_from(text).unwrap()
    }

    #[test]
    fn node_counter_matches_the_nodes() {
        let mut store = RetainedStore::new();
        let topics = ["a/b/c", "a", "a/b", "/", "a//", "/a", "$SYS/x", "a/c/d/e"];
        for (value, text) in topics.iter().enumerate() {
            store.insert(&name(text), value);
            assert_eq!(store.node_count(), recount(&store.root));
        }
        for (value, text) in topics.iter().enumerate().rev() {
            assert_eq!(store.remove(&name(text)), Some(value));
            assert_eq!(store.node_count(), recount(&store.root));
            assert!(no_dead_nodes(&store.root));
        }
        assert_eq!(store.node_count(), 0);
        assert!(store.is_empty());
    }

    #[test]
    fn removing_from_the_middle_keeps_the_rest() {
        let mut store = RetainedStore::new();
        store.insert(&name("a/b/c/d"), 1);
        store.insert(&name("a/b"), 2);
        store.insert(&name("a/x/y"), 3);
        assert_eq!(store.node_count(), 6);
        assert_eq!(store.remove(&name("a/b/c/d")), Some(1));
        assert_eq!((store.node_count(), recount(&store.root)), (4, 4));
        assert!(no_dead_nodes(&store.root));
        assert_eq!(store.remove(&name("a/b")), Some(2));
        assert_eq!((store.node_count(), recount(&store.root)), (3, 3));
    }
}
