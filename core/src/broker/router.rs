//! [`Router`]: who receives a message. It owns the subscription tries (plain and shared), the
//! shared subscriptions' groups, the queue of messages being delivered with the call's
//! delivery budget, and the spare buffers that keep steady-state routing free of
//! allocations. It answers with decisions (targets, members, what to release); the broker
//! delivers.

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;

use super::io::ConnId;
use super::message::{Message, SharedMessage};
use super::session::{Subscriber, SubscriptionEntry, SubscriptionIds};
use super::sessions::{SessionId, Sessions};
use super::share_groups::{ShareGroup, ShareGroups, ShareId};
use super::subscriptions::SubscriptionTree;
use crate::codec::{QoS, SubscriptionOptions};
use crate::topic::{Subscription, TopicName};

/// How many finished messages are kept for reuse, so steady-state routing does not allocate.
const SPARE_MESSAGES: usize = 64;

/// One session a message goes to, with the combined options of its matching subscriptions.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) session: SessionId,
    pub(crate) qos: QoS,
    pub(crate) retain_as_published: bool,
    /// Identifiers of the matching subscriptions that have one.
    pub(crate) subscription_ids: SubscriptionIds,
    /// The shared subscription that chose this session, if any.
    pub(crate) share: Option<ShareId>,
}

/// Which subscriptions a routed message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteScope {
    /// Every matching subscription: a broker on its own.
    All,
    /// Plain subscriptions only: in a fleet, shared subscriptions get their messages from
    /// NATS queue groups (see `shared_fleet.rs`).
    Plain,
    /// One member of the shared subscription with this number (a queue group's delivery).
    Share(ShareId),
}

/// A message being delivered to its targets, possibly over several calls.
#[derive(Debug)]
pub(crate) struct FanoutJob {
    pub(crate) msg: SharedMessage,
    /// Which subscriptions it goes to.
    pub(crate) scope: RouteScope,
    /// Computed when the job reaches the front of the queue.
    pub(crate) targets: Option<Vec<Target>>,
    pub(crate) next: usize,
    /// The connection it was published on, held back if a session it goes to is at its
    /// limit (see `overflow.rs`).
    pub(crate) from: Option<ConnId>,
}

/// A member of a shared subscription matching a message: (share number, session, options).
pub(crate) type Member = (ShareId, SessionId, Subscriber);

/// The member a message goes to, trying members in turn from `start`: the first one online,
/// else (when `offline` allows) the first persistent one, never `exclude`.
fn choose(
    group: &[Member],
    start: usize,
    sessions: &Sessions,
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

/// A subscription just indexed ([`Router::index`]).
#[derive(Debug)]
pub(crate) struct Indexed {
    /// What the session keeps of it.
    pub(crate) entry: SubscriptionEntry,
    /// Whether it is new (not a SUBSCRIBE repeating the filter, which only replaces options).
    pub(crate) fresh: bool,
    /// The shared subscription it made, as its first member here.
    pub(crate) made_group: Option<ShareId>,
}

/// Who receives what: subscriptions, shared groups and the messages being delivered.
#[derive(Debug, Default)]
pub(crate) struct Router {
    /// Plain subscriptions.
    plain: SubscriptionTree<SessionId, Subscriber>,
    /// Shared subscriptions, keyed by (shared subscription number, member session).
    shared: SubscriptionTree<(ShareId, SessionId), Subscriber>,
    /// The shared subscriptions with members here.
    shares: ShareGroups,
    /// Reused list of shared-subscription members matching a message.
    scratch: Vec<Member>,
    /// Messages being delivered, oldest first; routing never overtakes them.
    fanout: VecDeque<FanoutJob>,
    /// The routing pass under way (sessions note the pass that last made them a target).
    epoch: u64,
    /// Reused target lists of finished fan-outs.
    spare_targets: Vec<Vec<Target>>,
    /// Finished messages nobody holds, reused for the next ones.
    spare_messages: Vec<SharedMessage>,
    /// Deliveries left in this call's budget.
    budget: usize,
}

impl Router {
    /// Adds `session`'s subscription `sub` to the trie that routes it. A shared one joins
    /// its group, which its first member makes.
    pub(crate) fn index(
        &mut self,
        session: SessionId,
        sub: Subscription,
        options: SubscriptionOptions,
        id: Option<NonZeroU32>,
    ) -> Indexed {
        let subscriber = Subscriber { options, id };
        let (filter, share, fresh, made_group) = match sub {
            Subscription::Plain(filter) => {
                let fresh = self.plain.insert(&filter, session, subscriber).is_none();
                (filter, None, fresh, None)
            }
            Subscription::Shared(shared) => {
                let filter = shared.filter().clone();
                let member = self
                    .shares
                    .id(shared.as_str())
                    .filter(|share| self.shared.get(&filter, &(*share, session)).is_some());
                let (share, fresh, made) = match member {
                    // Already a member: the options change, the member count does not.
                    Some(share) => (share, false, None),
                    None => {
                        let (share, first) = self.shares.join(&shared);
                        (share, true, first.then_some(share))
                    }
                };
                self.shared.insert(&filter, (share, session), subscriber);
                (filter, Some(share), fresh, made)
            }
        };
        let entry = SubscriptionEntry {
            filter,
            options,
            id,
            share,
        };
        Indexed {
            entry,
            fresh,
            made_group,
        }
    }

    /// Removes `session`'s subscription `entry` from the trie that routes it: `None` when it
    /// was not there, else the shared subscription's group its last member freed, if any.
    pub(crate) fn unindex(
        &mut self,
        session: SessionId,
        entry: &SubscriptionEntry,
    ) -> Option<Option<ShareGroup>> {
        let removed = match entry.share {
            Some(share) => self
                .shared
                .remove(&entry.filter, &(share, session))
                .is_some(),
            None => self.plain.remove(&entry.filter, &session).is_some(),
        };
        removed.then(|| entry.share.and_then(|share| self.shares.leave(share)))
    }

    /// Whether a persistent session held here has a QoS ≥ 1 subscription matching `topic`.
    pub(crate) fn persistent_interest(&self, topic: &TopicName, sessions: &Sessions) -> bool {
        let mut needed = false;
        self.plain.for_each_match(topic, |sid, sub| {
            if !needed && sub.options.qos != QoS::AtMostOnce {
                needed = sessions.get(*sid).is_some_and(|s| s.persistent);
            }
        });
        self.shared.for_each_match(topic, |(_, sid), sub| {
            if !needed && sub.options.qos != QoS::AtMostOnce {
                needed = sessions.get(*sid).is_some_and(|s| s.persistent);
            }
        });
        needed
    }

    /// The sessions `msg` goes to within `scope`: one entry per session, with the highest
    /// granted QoS of its matching subscriptions (No Local ones passed over), and one member
    /// of each matching shared subscription in turn. Starts a routing pass: the sessions
    /// chosen are marked with it.
    pub(crate) fn targets(
        &mut self,
        msg: &Message,
        scope: RouteScope,
        sessions: &mut Sessions,
    ) -> Vec<Target> {
        let mut targets = self.spare_targets.pop().unwrap_or_default();
        self.epoch += 1;
        let epoch = self.epoch;
        if let RouteScope::Share(share) = scope {
            self.add_shared_targets(&msg.topic, Some(share), &mut targets, sessions);
            return targets;
        }
        self.plain.for_each_match(&msg.topic, |sid, sub| {
            let opts = &sub.options;
            let Some(s) = sessions.get_mut(*sid) else {
                return;
            };
            if opts.no_local && msg.publisher == Some(s.uid) {
                return;
            }
            if s.route_epoch == epoch {
                if let Some(t) = targets.get_mut(s.route_slot) {
                    t.qos = t.qos.max(opts.qos);
                    t.retain_as_published |= opts.retain_as_published;
                    t.subscription_ids.extend(sub.id);
                }
            } else {
                s.route_epoch = epoch;
                s.route_slot = targets.len();
                targets.push(Target {
                    session: *sid,
                    qos: opts.qos,
                    retain_as_published: opts.retain_as_published,
                    subscription_ids: sub.id.into_iter().collect(),
                    share: None,
                });
            }
        });
        if scope == RouteScope::All {
            self.add_shared_targets(&msg.topic, None, &mut targets, sessions);
        }
        targets
    }

    /// Adds one member of each shared subscription matching `topic` (or of `only` that one),
    /// chosen in turn (round robin in member order, deterministic), preferring members that
    /// are online.
    fn add_shared_targets(
        &mut self,
        topic: &TopicName,
        only: Option<ShareId>,
        targets: &mut Vec<Target>,
        sessions: &mut Sessions,
    ) {
        let mut candidates = std::mem::take(&mut self.scratch);
        self.shared.for_each_match(topic, |(share, sid), sub| {
            if only.is_none_or(|only| only == *share) {
                candidates.push((*share, *sid, *sub));
            }
        });
        candidates.sort_by_key(|(share, sid, _)| (*share, *sid));
        let epoch = self.epoch;
        for group in candidates.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(share, _, _)) = group.first() else {
                continue;
            };
            let Some(cursor) = self.shares.take_turn(share) else {
                continue;
            };
            let start = usize::try_from(cursor % group.len() as u64).unwrap_or(0);
            if let Some((_, session, sub)) = choose(group, start, sessions, None, true) {
                if let Some(s) = sessions.get_mut(session) {
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
        self.scratch = candidates;
    }

    /// The persistent sessions with a matching QoS 1/2 subscription within `scope` that the
    /// last routing pass ([`targets`](Self::targets)) passed over (No Local, the other members
    /// of a shared subscription): a stored message stays in the store for each of them unless
    /// they release it.
    pub(crate) fn passed_over(
        &self,
        msg: &Message,
        scope: RouteScope,
        sessions: &Sessions,
    ) -> BTreeSet<SessionId> {
        let epoch = self.epoch;
        let mut release = BTreeSet::new();
        let mut consider = |sid: SessionId, qos: QoS| {
            if qos != QoS::AtMostOnce {
                if let Some(s) = sessions.get(sid) {
                    if s.persistent && s.route_epoch != epoch {
                        release.insert(sid);
                    }
                }
            }
        };
        if !matches!(scope, RouteScope::Share(_)) {
            self.plain
                .for_each_match(&msg.topic, |sid, sub| consider(*sid, sub.options.qos));
        }
        // Plain: a fleet's shared subscriptions are released by the node NATS hands the
        // message to, and by the others when they hear it took it (`shared_fleet.rs`).
        if scope != RouteScope::Plain {
            self.shared.for_each_match(&msg.topic, |(share, sid), sub| {
                if scope == RouteScope::All || scope == RouteScope::Share(*share) {
                    consider(*sid, sub.options.qos);
                }
            });
        }
        release
    }

    /// The member of shared subscription `share` that a message on `topic` handed over by
    /// `from` goes to next: one online, or (when `offline`) a persistent one.
    pub(crate) fn next_member(
        &self,
        share: ShareId,
        topic: &TopicName,
        from: SessionId,
        offline: bool,
        sessions: &Sessions,
    ) -> Option<Member> {
        let mut group = Vec::new();
        self.shared.for_each_match(topic, |(s, sid), sub| {
            if *s == share {
                group.push((*s, *sid, *sub));
            }
        });
        group.sort_by_key(|m| m.1);
        let cursor = self.shares.get(share)?.cursor();
        let start = usize::try_from(cursor % group.len().max(1) as u64).unwrap_or(0);
        choose(&group, start, sessions, Some(from), offline)
    }

    /// The sessions held here that are members of `share` for a message on `topic`, each
    /// with the QoS it subscribed with (a session has one subscription per shared
    /// subscription).
    pub(crate) fn share_members(&self, share: ShareId, topic: &TopicName) -> Vec<(SessionId, QoS)> {
        let mut members = Vec::new();
        self.shared.for_each_match(topic, |(s, session), sub| {
            if *s == share {
                members.push((*session, sub.options.qos));
            }
        });
        members
    }

    /// The shared subscriptions with members here.
    pub(crate) fn shares(&self) -> &ShareGroups {
        &self.shares
    }

    /// Advances the turn of shared subscription `share` (a message went to a member).
    pub(crate) fn take_turn(&mut self, share: ShareId) -> Option<u64> {
        self.shares.take_turn(share)
    }

    /// Queues `msg` for delivery within `scope`; `from` is the connection it was published on.
    pub(crate) fn push(&mut self, msg: Message, scope: RouteScope, from: Option<ConnId>) {
        // Reuse the allocation of a finished message nobody holds any more.
        let msg = match self.spare_messages.pop() {
            Some(mut shared) => match Arc::get_mut(&mut shared) {
                Some(slot) => {
                    *slot = msg;
                    shared
                }
                None => Arc::new(msg),
            },
            None => Arc::new(msg),
        };
        self.fanout.push_back(FanoutJob {
            msg,
            scope,
            targets: None,
            next: 0,
            from,
        });
    }

    /// The oldest message being delivered, taken off the queue (put it back with
    /// [`requeue`](Self::requeue) or end it with [`finish`](Self::finish)).
    pub(crate) fn next_job(&mut self) -> Option<FanoutJob> {
        self.fanout.pop_front()
    }

    /// Puts a job whose delivery the budget cut short back at the front of the queue.
    pub(crate) fn requeue(&mut self, job: FanoutJob) {
        self.fanout.push_front(job);
    }

    /// Ends a job delivered to all its targets: its buffers are kept for reuse.
    pub(crate) fn finish(&mut self, msg: SharedMessage, mut targets: Vec<Target>) {
        targets.clear();
        self.spare_targets.push(targets);
        if Arc::strong_count(&msg) == 1 && self.spare_messages.len() < SPARE_MESSAGES {
            self.spare_messages.push(msg);
        }
    }

    /// Starts a call's budget of `deliveries`.
    pub(crate) fn set_budget(&mut self, deliveries: usize) {
        self.budget = deliveries;
    }

    /// Spends one delivery of the call's budget; false when none is left.
    pub(crate) fn spend(&mut self) -> bool {
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::io::SessionKey;
    use crate::codec::ProtocolVersion;

    fn subscribe(router: &mut Router, session: SessionId, filter: &str, qos: QoS) -> Indexed {
        let sub = Subscription::new(filter.to_owned()).expect("a filter");
        router.index(session, sub, SubscriptionOptions::new(qos), None)
    }

    fn message(topic: &str) -> Message {
        Message {
            topic: TopicName::new(topic.to_owned()).expect("a topic"),
            payload: bytes::Bytes::new(),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: None,
            publisher: None,
            seq: None,
            expires_at: None,
        }
    }

    fn sessions(n: usize) -> (Sessions, Vec<SessionId>) {
        let mut sessions = Sessions::default();
        let ids = (0..n)
            .map(|i| {
                let key = SessionKey {
                    account: "$G".into(),
                    client_id: format!("c{i}").into(),
                };
                sessions.insert(key, ProtocolVersion::V5, None)
            })
            .collect();
        (sessions, ids)
    }

    #[test]
    fn a_session_is_one_target_with_its_highest_qos() {
        let (mut sessions, ids) = sessions(2);
        let mut router = Router::default();
        assert!(subscribe(&mut router, ids[0], "a/+", QoS::AtMostOnce).fresh);
        subscribe(&mut router, ids[0], "a/#", QoS::AtLeastOnce);
        subscribe(&mut router, ids[1], "a/b", QoS::ExactlyOnce);
        assert!(!subscribe(&mut router, ids[1], "a/b", QoS::ExactlyOnce).fresh);
        let targets = router.targets(&message("a/b"), RouteScope::All, &mut sessions);
        let got: Vec<(SessionId, QoS)> = targets.iter().map(|t| (t.session, t.qos)).collect();
        assert_eq!(
            got,
            [(ids[0], QoS::AtLeastOnce), (ids[1], QoS::ExactlyOnce)]
        );
        router.finish(Arc::new(message("a/b")), targets);
    }

    #[test]
    fn a_shared_subscription_serves_its_members_in_turn_and_frees_its_group() {
        let (mut sessions, ids) = sessions(2);
        let mut router = Router::default();
        let first = subscribe(&mut router, ids[0], "$share/g/t", QoS::AtMostOnce);
        let share = first.made_group.expect("the first member makes the group");
        let second = subscribe(&mut router, ids[1], "$share/g/t", QoS::AtMostOnce);
        assert_eq!(second.made_group, None);
        // Both offline and not persistent: nobody takes it.
        let none = router.targets(&message("t"), RouteScope::All, &mut sessions);
        assert!(none.is_empty());
        for id in &ids {
            if let Some(s) = sessions.get_mut(*id) {
                s.persistent = true;
            }
        }
        let pick = |router: &mut Router, sessions: &mut Sessions| {
            let t = router.targets(&message("t"), RouteScope::Share(share), sessions);
            t.first().map(|t| t.session)
        };
        let a = pick(&mut router, &mut sessions);
        let b = pick(&mut router, &mut sessions);
        assert_ne!(a, b, "in turn");
        assert!(matches!(router.unindex(ids[0], &first.entry), Some(None)));
        assert!(
            router.unindex(ids[0], &first.entry).is_none(),
            "removed once"
        );
        let freed = router.unindex(ids[1], &second.entry).flatten();
        assert_eq!(
            freed.map(|g| g.filter.as_str().to_owned()),
            Some("t".into())
        );
        assert_eq!(router.shares().len(), 0);
    }

    #[test]
    fn the_budget_is_spent_one_delivery_at_a_time() {
        let mut router = Router::default();
        router.set_budget(2);
        assert!(router.spend() && router.spend());
        assert!(!router.spend());
        router.push(message("x"), RouteScope::All, None);
        let job = router.next_job().expect("queued");
        router.requeue(job);
        assert!(router.next_job().is_some());
        assert!(router.next_job().is_none());
    }
}
