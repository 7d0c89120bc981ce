//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 §4.8.2, also offered to 3.1.1
//! clients): each message goes to one member of each group, in turn, and the unacknowledged
//! messages of a member that leaves go to another member.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use bytestring::ByteString;

use super::io::Outbox;
use super::session::{Delivery, InflightState};
use super::sessions::SessionId;
use super::Broker;
use crate::codec::QoS;
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
            records::hash(&format!("{}/{}", shared.group(), filter.as_str()), 16)
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

impl Broker {
    /// Hands the shared-subscription messages of `session` that its client has not
    /// acknowledged to other members, when its connection ended (`ending`: and the session
    /// with it): those never sent, and QoS 1 ones sent but not acknowledged. QoS 2 ones
    /// already sent stay with it ([MQTT-4.8.2-4], [MQTT-4.8.2-5]). While the session lives on,
    /// a message moves only to a member that is online; when it ends, also to an offline
    /// persistent one, and is dropped when there is none (as when its group was freed: the
    /// session unsubscribed, and was the last member).
    pub(super) fn hand_over_shared(&mut self, session: SessionId, ending: bool, out: &mut Outbox) {
        let Some((moving, persistent, consumer)) = self.take_movable(session, ending) else {
            return;
        };
        for d in moving {
            self.hand_over(session, d, (persistent, &consumer), out);
        }
        self.fill_window(session, out);
    }

    /// Takes the shared-subscription messages `session` hands over out of its window and
    /// queue (see [`hand_over_shared`](Self::hand_over_shared)), with whether the session is
    /// persistent and its consumer; `None` when there are none.
    fn take_movable(
        &mut self,
        session: SessionId,
        ending: bool,
    ) -> Option<(Vec<Delivery>, bool, ByteString)> {
        let s = self.sessions.get(session)?;
        let movable = |d: &Delivery| {
            d.share.is_some_and(|share| {
                ending
                    || self
                        .routes
                        .next_member(share, &d.msg.topic, session, false, &self.sessions)
                        .is_some()
            })
        };
        let inflight: Vec<bool> = s
            .outbound
            .inflight
            .iter()
            .map(|e| e.state == InflightState::PubAck && e.delivery.as_ref().is_some_and(movable))
            .collect();
        let queued: Vec<bool> = s.outbound.queue.iter().map(movable).collect();
        if !inflight.contains(&true) && !queued.contains(&true) {
            return None;
        }
        let (persistent, consumer) = (s.persistent, s.consumer());
        let s = self.sessions.get_mut(session)?;
        let mut moving = Vec::new();
        let mut flags = inflight.into_iter();
        s.outbound.inflight.retain_mut(|e| {
            if flags.next() == Some(true) {
                moving.extend(e.delivery.take());
                false
            } else {
                true
            }
        });
        let mut flags = queued.into_iter();
        let mut kept = std::collections::VecDeque::new();
        while let Some(d) = s.outbound.pop_queued() {
            if flags.next() == Some(true) {
                self.queued_total = self.queued_total.saturating_sub(d.msg.kept_bytes());
                moving.push(d);
            } else {
                kept.push_back(d);
            }
        }
        for d in kept {
            let _ = s.outbound.push_queued(d, usize::MAX, usize::MAX);
        }
        Some((moving, persistent, consumer))
    }

    /// Hands `d`, a shared-subscription message of `session` (persistent or not, with its
    /// consumer), to the group's next member; with none here it goes to another node of a
    /// fleet, or ends.
    fn hand_over(
        &mut self,
        session: SessionId,
        mut d: Delivery,
        (persistent, consumer): (bool, &ByteString),
        out: &mut Outbox,
    ) {
        let next = d.share.and_then(|share| {
            let next = self
                .routes
                .next_member(share, &d.msg.topic, session, true, &self.sessions);
            Some((share, next?))
        });
        let Some((share, (_, to, sub))) = next else {
            // The session ends and no member is left here: in a fleet, another node's
            // member takes it over; else the message ends with it.
            if let Some(group) = d.share.and_then(|share| self.routes.shares().get(share)) {
                self.hand_over_to_another_node(&group.queue, &d.msg, 0, out);
            }
            self.ack_stored(session, &d, out);
            return;
        };
        let _ = self.routes.take_turn(share);
        d.qos = d.msg.qos.min(sub.options.qos);
        d.retain = sub.options.retain_as_published && d.msg.retain;
        d.dup = false;
        d.subscription_ids = sub.id.into_iter().collect();
        if d.qos == QoS::AtMostOnce {
            // Granted QoS 0 by the new member: nothing more for the store to keep.
            self.ack_stored(session, &d, out);
        } else if persistent && d.msg.seq.is_some() && d.release.is_none() {
            // The store keeps it for this session's consumer until the new member is done.
            d.release = Some(Box::new(consumer.clone()));
        }
        self.deliver(to, d, out);
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
