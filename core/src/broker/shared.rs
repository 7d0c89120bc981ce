//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 §4.8.2, also offered to 3.1.1
//! clients): each message goes to one member of each group, in turn, and the unacknowledged
//! messages of a member that leaves go to another member.

use bytestring::ByteString;
use slab::Slab;

use super::io::Outbox;
use super::publish::Target;
use super::session::{Delivery, InflightState, Session, SessionId, Subscriber};
use super::Broker;
use crate::codec::QoS;
use crate::js::records;
use crate::topic::{TopicFilter, TopicName};

/// A member of a shared subscription matching a message: (share number, session, options).
type Member = (u32, SessionId, Subscriber);

/// The member a message goes to, trying members in turn from `start`: the first one online,
/// else (when `offline` allows) the first persistent one, never `exclude`.
fn choose(
    group: &[Member],
    start: usize,
    sessions: &Slab<Box<Session>>,
    exclude: Option<SessionId>,
    offline: bool,
) -> Option<Member> {
    let len = group.len();
    let in_turn = || {
        (0..len)
            .filter_map(move |k| group.get((start + k) % len))
            .filter(move |m| Some(m.1) != exclude)
    };
    in_turn()
        .find(|m| sessions.get(m.1).is_some_and(|s| s.conn.is_some()))
        .or_else(|| {
            offline
                .then(|| in_turn().find(|m| sessions.get(m.1).is_some_and(|s| s.persistent)))
                .flatten()
        })
        .copied()
}

/// One shared subscription (a group and a filter): its round-robin cursor and, for a fleet,
/// the NATS queue group that spreads its messages over the nodes with members.
#[derive(Debug)]
pub(super) struct ShareGroup {
    /// Messages handed out so far (the next member in turn).
    pub(super) cursor: u64,
    /// The queue group's name, the same on every node: `jetmq-share-` and a hash of
    /// `group/filter`.
    pub(super) queue: ByteString,
    /// The filter.
    pub(super) filter: TopicFilter,
    /// Subscriptions of sessions held here (online or not) that are members.
    pub(super) members: u32,
}

impl ShareGroup {
    fn new(group: &str, filter: TopicFilter) -> Self {
        let queue = format!(
            "jetmq-share-{}",
            records::hash(&format!("{group}/{}", filter.as_str()), 16)
        );
        Self {
            cursor: 0,
            queue: queue.into(),
            filter,
            members: 0,
        }
    }
}

impl Broker {
    /// The number of the shared subscription `$share/{group}/{filter}`, made on first use.
    pub(super) fn share_id(&mut self, group: &str, filter: &TopicFilter) -> u32 {
        let key = (ByteString::from(group), ByteString::from(filter.as_str()));
        if let Some(id) = self.shares.get(&key) {
            return *id;
        }
        let id = u32::try_from(self.share_groups.len()).unwrap_or(u32::MAX);
        let group = ShareGroup::new(group, filter.clone());
        self.share_queues.insert(group.queue.clone(), id);
        self.share_groups.push(group);
        self.shares.insert(key, id);
        id
    }

    /// Adds one member of each shared subscription matching `topic` (or of `only` that one),
    /// chosen in turn (round robin in member order, deterministic), preferring members that
    /// are online.
    pub(super) fn add_shared_targets(
        &mut self,
        topic: &TopicName,
        only: Option<u32>,
        targets: &mut Vec<Target>,
    ) {
        let mut candidates = std::mem::take(&mut self.shared_scratch);
        self.shared.for_each_match(topic, |(share, sid), sub| {
            if only.is_none_or(|only| only == *share) {
                candidates.push((*share, *sid, *sub));
            }
        });
        candidates.sort_by_key(|(share, sid, _)| (*share, *sid));
        let epoch = self.route_epoch;
        for group in candidates.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(share, _, _)) = group.first() else {
                continue;
            };
            let Some(cursor) = self
                .share_groups
                .get_mut(share as usize)
                .map(|g| &mut g.cursor)
            else {
                continue;
            };
            let start = usize::try_from(*cursor % group.len() as u64).unwrap_or(0);
            *cursor += 1;
            if let Some((_, session, sub)) = choose(group, start, &self.sessions, None, true) {
                if let Some(s) = self.sessions.get_mut(session) {
                    // Marks it as a target of this routing pass.
                    s.route_epoch = epoch;
                }
                targets.push(Target {
                    session,
                    qos: sub.options.qos,
                    retain_as_published: sub.options.retain_as_published,
                    subscription_ids: sub.id.into_iter().collect(),
                    share: Some(share),
                });
            }
        }
        candidates.clear();
        self.shared_scratch = candidates;
    }

    /// The member of shared subscription `share` that a message on `topic` handed over by
    /// `from` goes to next: one online, or (when `offline`) a persistent one.
    fn next_member(
        &self,
        share: u32,
        topic: &TopicName,
        from: SessionId,
        offline: bool,
    ) -> Option<Member> {
        let mut group = Vec::new();
        self.shared.for_each_match(topic, |(s, sid), sub| {
            if *s == share {
                group.push((*s, *sid, *sub));
            }
        });
        group.sort_by_key(|m| m.1);
        let cursor = self.share_groups.get(share as usize)?.cursor;
        let start = usize::try_from(cursor % group.len().max(1) as u64).unwrap_or(0);
        choose(&group, start, &self.sessions, Some(from), offline)
    }

    /// Hands the shared-subscription messages of `session` that its client has not
    /// acknowledged to other members, when its connection ended (`ending`: and the session
    /// with it): those never sent, and QoS 1 ones sent but not acknowledged. QoS 2 ones
    /// already sent stay with it ([MQTT-4.8.2-4], [MQTT-4.8.2-5]). While the session lives on,
    /// a message moves only to a member that is online; when it ends, also to an offline
    /// persistent one, and is dropped when there is none.
    pub(super) fn hand_over_shared(&mut self, session: SessionId, ending: bool, out: &mut Outbox) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let movable = |d: &Delivery| {
            d.share.is_some_and(|share| {
                ending
                    || self
                        .next_member(share, &d.msg.topic, session, false)
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
            return;
        }
        let (persistent, consumer) = (s.persistent, s.consumer());
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
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
        for mut d in moving {
            let next = d.share.and_then(|share| {
                Some((share, self.next_member(share, &d.msg.topic, session, true)?))
            });
            let Some((share, (_, to, sub))) = next else {
                // The session ends and no member is left here: in a fleet, another node's
                // member takes it over; else the message ends with it.
                if let Some(share) = d.share {
                    self.hand_over_to_another_node(share, &d.msg, 0, out);
                }
                self.ack_stored(session, &d, out);
                continue;
            };
            if let Some(group) = self.share_groups.get_mut(share as usize) {
                group.cursor += 1;
            }
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
        self.fill_window(session, out);
    }
}
