//! [`ShareGroups`]: the shared subscriptions (`$share/{group}/{filter}`) with members here,
//! each with its round-robin turn and, for a fleet, its NATS queue group.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use bytestring::ByteString;

use crate::js::records;
use crate::topic::{SharedFilter, TopicFilter};

/// The start of every shared subscription's NATS queue group name.
pub(super) const QUEUE_PREFIX: &str = "jetmq-share-";

/// A shared subscription's number, handed out once: a group freed with its last member and
/// made again gets a new one, so a delivery that still names the old group (a message in
/// flight to a member that left) never reaches the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ShareId(NonZeroU64);

/// One shared subscription (a group and a filter): its round-robin cursor and, for a fleet,
/// the NATS queue group that spreads its messages over the nodes with members.
#[derive(Debug)]
pub(super) struct ShareGroup {
    /// The subscription text, `$share/{group}/{filter}`.
    text: ByteString,
    /// Messages handed out so far (the next member in turn).
    cursor: u64,
    /// The queue group's name, the same on every node: [`QUEUE_PREFIX`] and a hash of
    /// `group/filter`.
    pub(super) queue: ByteString,
    /// The filter.
    pub(super) filter: TopicFilter,
    /// Indexed subscriptions of sessions held here (online or not) that are members.
    members: usize,
}

impl ShareGroup {
    /// Messages handed out so far: the next member in turn.
    pub(super) fn cursor(&self) -> u64 {
        self.cursor
    }
}

impl ShareGroup {
    fn new(shared: &SharedFilter) -> Self {
        let filter = shared.filter();
        let queue = format!(
            "{QUEUE_PREFIX}{}",
            records::hash::<16>(&format!("{}/{}", shared.group(), filter.as_str()))
        );
        Self {
            text: ByteString::from(shared.as_str()),
            cursor: 0,
            queue: queue.into(),
            filter: filter.clone(),
            members: 0,
        }
    }
}

/// The shared subscriptions that have members here, by number, by subscription text and by
/// NATS queue group name. A group is made when its first member joins and freed when its last
/// leaves, so groups nobody belongs to (a refused or undone SUBSCRIBE) cost nothing; numbers
/// are never handed out twice.
#[derive(Debug, Default)]
pub(super) struct ShareGroups {
    groups: BTreeMap<ShareId, ShareGroup>,
    by_text: BTreeMap<ByteString, ShareId>,
    by_queue: BTreeMap<ByteString, ShareId>,
    /// Numbers handed out so far.
    issued: u64,
}

impl ShareGroups {
    /// How many groups have members.
    pub(super) fn len(&self) -> usize {
        self.groups.len()
    }

    /// The group of `$share/{group}/{filter}` (`text`), if it has members.
    pub(super) fn id(&self, text: &str) -> Option<ShareId> {
        self.by_text.get(text).copied()
    }

    /// The group whose NATS queue group is `queue`, if it has members.
    pub(super) fn by_queue(&self, queue: &str) -> Option<ShareId> {
        self.by_queue.get(queue).copied()
    }

    /// The group numbered `share`, unless it was freed.
    pub(super) fn get(&self, share: ShareId) -> Option<&ShareGroup> {
        self.groups.get(&share)
    }

    /// The cursor of group `share` before this turn (advancing it), unless it was freed.
    pub(super) fn take_turn(&mut self, share: ShareId) -> Option<u64> {
        let group = self.groups.get_mut(&share)?;
        let cursor = group.cursor;
        group.cursor += 1;
        Some(cursor)
    }

    /// A member joins `shared`: the group's number (a new group for its first member) and
    /// whether it is the first.
    pub(super) fn join(&mut self, shared: &SharedFilter) -> (ShareId, bool) {
        if let Some(share) = self.id(shared.as_str()) {
            if let Some(group) = self.groups.get_mut(&share) {
                group.members += 1;
                return (share, false);
            }
        }
        self.issued += 1;
        let share = ShareId(NonZeroU64::MIN.saturating_add(self.issued - 1));
        let mut group = ShareGroup::new(shared);
        group.members = 1;
        self.by_text.insert(group.text.clone(), share);
        self.by_queue.insert(group.queue.clone(), share);
        self.groups.insert(share, group);
        (share, true)
    }

    /// A member leaves group `share`; the last one frees it and gets it back.
    pub(super) fn leave(&mut self, share: ShareId) -> Option<ShareGroup> {
        let group = self.groups.get_mut(&share)?;
        group.members = group.members.saturating_sub(1);
        if group.members > 0 {
            return None;
        }
        let group = self.groups.remove(&share)?;
        self.by_text.remove(&group.text);
        self.by_queue.remove(&group.queue);
        Some(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::Subscription;

    fn shared(text: &str) -> SharedFilter {
        match Subscription::new(text.to_owned()) {
            Ok(Subscription::Shared(shared)) => shared,
            other => panic!("not a shared subscription: {other:?}"),
        }
    }

    #[test]
    fn a_group_lives_from_its_first_member_to_its_last() {
        let mut groups = ShareGroups::default();
        let g = shared("$share/g/a/+");
        let (id, first) = groups.join(&g);
        assert!(first);
        let queue = groups.get(id).map(|group| group.queue.clone()).unwrap();
        assert!(queue.starts_with(QUEUE_PREFIX));
        assert_eq!(groups.id("$share/g/a/+"), Some(id));
        assert_eq!(groups.by_queue(&queue), Some(id));
        assert_eq!(groups.join(&g), (id, false));
        assert_eq!(groups.len(), 1);
        assert!(groups.leave(id).is_none(), "one member is left");
        let freed = groups.leave(id).expect("the last member frees it");
        assert_eq!(freed.filter.as_str(), "a/+");
        assert_eq!(groups.len(), 0);
        assert_eq!(groups.id("$share/g/a/+"), None);
        assert_eq!(groups.by_queue(&queue), None);
        assert!(groups.get(id).is_none());
        assert!(groups.leave(id).is_none(), "a freed group is gone");
    }

    #[test]
    fn numbers_are_never_handed_out_twice() {
        let mut groups = ShareGroups::default();
        let g = shared("$share/g/a");
        let (first, _) = groups.join(&g);
        groups.leave(first);
        let (again, made) = groups.join(&g);
        assert!(made);
        assert_ne!(first, again, "the group made again is a new one");
        assert_eq!(groups.take_turn(first), None);
        let (other, _) = groups.join(&shared("$share/h/a"));
        assert!(other != first && other != again);
        assert_eq!(groups.take_turn(again), Some(0));
        assert_eq!(groups.take_turn(again), Some(1));
    }
}
