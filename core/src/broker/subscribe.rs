//! SUBSCRIBE and UNSUBSCRIBE: the session's subscriptions, the subscription tree, the record
//! of a persistent session, and the retained messages a new subscription receives.

use bytestring::ByteString;

use super::connection::Work;
use super::io::{Action, ConnId, Outbox};
use std::num::NonZeroU32;

use super::session::SubscriptionEntry;
use super::sessions::SessionId;
use super::Broker;
use crate::codec::{
    AckProperties, DisconnectReason, Packet, QoS, RetainHandling, SubAck, SubAckReason, Subscribe,
    SubscriptionOptions, UnsubAck, UnsubAckReason, Unsubscribe,
};
use crate::topic::{Subscription, TopicFilter};

/// A filter of a SUBSCRIBE applied: its granted QoS, whether the session's subscriptions
/// changed, and the retained messages to send for it (filter, granted QoS, identifier).
type Applied = (
    SubAckReason,
    bool,
    Option<(TopicFilter, QoS, Option<NonZeroU32>)>,
);

impl Broker {
    /// Whether a subscription to `filter` may be made: without the NATS bridge always; with
    /// it, a `$SYS/` filter (the broker's statistics, never bridged) or one some open subject
    /// of the bridge matches (see `bridge_policy`).
    fn bridge_may_subscribe(&self, filter: &TopicFilter) -> bool {
        if !self.config.cluster.bridges() {
            return true;
        }
        let f = filter.as_str();
        if f == "$SYS" || f.starts_with("$SYS/") {
            return true;
        }
        let rules = &self.config.bridge.subscribe;
        crate::topic::subject::filter_subjects(filter).any(|s| rules.allows_pattern(&s))
    }

    /// A SUBSCRIBE: each filter checked and applied (or refused with its reason), then the
    /// SUBACK, once a persistent session's change is saved, and the retained messages.
    pub(super) fn on_subscribe(
        &mut self,
        conn: ConnId,
        session: SessionId,
        sub: Subscribe,
        out: &mut Outbox,
    ) {
        let sub_id = sub.properties.subscription_identifier;
        let mut reasons = Vec::with_capacity(sub.filters.len());
        let mut retained: Vec<(TopicFilter, QoS, Option<NonZeroU32>)> = Vec::new();
        let mut changed = false;
        for (text, options) in sub.filters {
            let Some(applied) = self.subscribe_one(conn, session, &text, options, sub_id, out)
            else {
                return;
            };
            match applied {
                Ok((reason, change, send)) => {
                    reasons.push(reason);
                    changed |= change;
                    retained.extend(send);
                }
                Err(reason) => reasons.push(reason),
            }
        }
        let problem = reasons
            .iter()
            .find(|r| r.is_error())
            .map(|r| r.description());
        let ack = Packet::SubAck(SubAck {
            packet_id: sub.packet_id,
            properties: self.explain(conn, problem),
            reasons,
        });
        self.acknowledge_subscription_change(conn, session, changed, ack, retained, out);
    }

    /// One filter of a SUBSCRIBE: refused with a reason (`Err`), or applied: its granted QoS,
    /// whether the session's subscriptions changed, and the retained messages to send for it.
    /// `None` when the SUBSCRIBE ends here (a protocol error closed the connection).
    fn subscribe_one(
        &mut self,
        conn: ConnId,
        session: SessionId,
        text: &str,
        mut options: SubscriptionOptions,
        sub_id: Option<NonZeroU32>,
        out: &mut Outbox,
    ) -> Option<Result<Applied, SubAckReason>> {
        let text = super::detach(text);
        // Nothing is made for a shared subscription's group before every check passed: a
        // group is made when its first member is indexed.
        let parsed = match Subscription::new(text.clone()) {
            Ok(parsed) if parsed.filter().levels().count() <= self.config.max_topic_levels => {
                parsed
            }
            _ => return Some(Err(SubAckReason::TopicFilterInvalid)),
        };
        let (filter, shared) = (parsed.filter().clone(), parsed.is_shared());
        if shared && options.no_local {
            // [MQTT-3.8.3-4]: No Local on a shared subscription is a protocol error.
            self.protocol_error(conn, DisconnectReason::ProtocolError, out);
            return None;
        }
        let closed_subject = !self.bridge_may_subscribe(&filter);
        if closed_subject {
            out.push(Action::Notice(super::io::Notice::BridgeRefused {
                conn,
                topic: text.clone(),
            }));
        }
        let denied = closed_subject
            || self
                .conns
                .get(&conn)
                .and_then(|c| c.grants())
                .is_some_and(|g| !g.may_subscribe(&filter));
        if denied {
            return Some(Err(SubAckReason::NotAuthorized));
        }
        options.qos = options
            .qos
            .min(self.config.max_qos.min(self.config.max_subscription_qos));
        let s = self.sessions.get(session)?;
        let most = self.config.max_subscriptions;
        if most != 0 && s.subscriptions.len() >= most && !s.subscriptions.contains(&text) {
            // A new filter beyond the session's quota (replacing one is fine).
            return Some(Err(SubAckReason::QuotaExceeded));
        }
        let entry = self.index_subscription(session, parsed, options, sub_id);
        let previous = self
            .sessions
            .get_mut(session)?
            .subscriptions
            .insert(text, entry);
        let changed = previous
            .as_ref()
            .is_none_or(|p| p.options != options || p.id != sub_id);
        let reason = match options.qos {
            QoS::AtMostOnce => SubAckReason::GrantedQos0,
            QoS::AtLeastOnce => SubAckReason::GrantedQos1,
            QoS::ExactlyOnce => SubAckReason::GrantedQos2,
        };
        // No retained messages on a shared subscription (MQTT 5.0 §4.8.2).
        let send = !shared
            && match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => previous.is_none(),
                RetainHandling::DoNotSend => false,
            };
        Some(Ok((
            reason,
            changed,
            send.then_some((filter, options.qos, sub_id)),
        )))
    }

    pub(super) fn on_unsubscribe(
        &mut self,
        conn: ConnId,
        session: SessionId,
        unsub: Unsubscribe,
        out: &mut Outbox,
    ) {
        let mut reasons = Vec::with_capacity(unsub.filters.len());
        let mut changed = false;
        for text in unsub.filters {
            let removed = self
                .sessions
                .get_mut(session)
                .and_then(|s| s.subscriptions.remove(&ByteString::from(text.as_ref())));
            match removed {
                Some(entry) => {
                    self.unindex_subscription(session, &entry);
                    changed = true;
                    reasons.push(UnsubAckReason::Success);
                }
                // [MQTT-3.10.4-5]: answered even when nothing was removed.
                None => reasons.push(UnsubAckReason::NoSubscriptionExisted),
            }
        }
        let ack = Packet::UnsubAck(UnsubAck {
            packet_id: unsub.packet_id,
            properties: Default::default(),
            reasons,
        });
        self.acknowledge_subscription_change(conn, session, changed, ack, Vec::new(), out);
    }

    /// Removes the subscriptions of a resumed session that its new connection's permissions
    /// no longer allow (they shrank since the subscriptions were made).
    pub(super) fn drop_unpermitted_subscriptions(&mut self, conn: ConnId, session: SessionId) {
        let Some(grants) = self.conns.get(&conn).and_then(|c| c.grants()) else {
            return;
        };
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let denied: Vec<ByteString> = s
            .subscriptions
            .iter()
            .filter(|(_, e)| !grants.may_subscribe(&e.filter))
            .map(|(text, _)| text.clone())
            .collect();
        for text in denied {
            let removed = self
                .sessions
                .get_mut(session)
                .and_then(|s| s.subscriptions.remove(&text));
            if let Some(entry) = removed {
                self.unindex_subscription(session, &entry);
            }
        }
    }

    /// Sends `ack` once a persistent session's new subscriptions are stored (its record and
    /// its consumer's filters, by a save that includes this change: see `subscription_save`),
    /// then the retained messages.
    fn acknowledge_subscription_change(
        &mut self,
        conn: ConnId,
        session: SessionId,
        changed: bool,
        ack: Packet,
        retained: Vec<(TopicFilter, QoS, Option<NonZeroU32>)>,
        out: &mut Outbox,
    ) {
        let save = changed && self.sessions.get(session).is_some_and(|s| s.persistent);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let token = c.pipeline.push(
            Work::SubscriptionAck {
                packet: ack,
                retained,
            },
            u32::from(save),
        );
        if save {
            self.save_subscriptions(session, (conn, token), out);
        }
        self.drain_pipeline(Some(conn), out);
        // Subscription changes are rare: once done, the room their entry took is given back
        // rather than kept for a burst (a client that subscribes and then idles keeps none).
        if let Some(c) = self.conns.get_mut(&conn) {
            c.pipeline.release_room();
        }
    }
}

impl Broker {
    /// Acknowledgement properties with `problem` as Reason String, when there is one and the
    /// client accepts them (Request Problem Information).
    pub(super) fn explain(&self, conn: ConnId, problem: Option<&'static str>) -> AckProperties {
        let mut properties = AckProperties::default();
        if self.conns.get(&conn).is_some_and(|c| c.problem_info) {
            properties.reason_string = problem.map(ByteString::from_static);
        }
        properties
    }

    /// Adds a session's subscription `sub` to the tree that routes it and returns the entry
    /// the session keeps. A shared one joins its group, which its first member makes (in a
    /// fleet, the node then joins the group's NATS queue group). The first index of a
    /// subscription counts towards the NATS bridge's subjects; indexing it again (a SUBSCRIBE
    /// repeating the filter) only replaces its options.
    pub(super) fn index_subscription(
        &mut self,
        session: SessionId,
        sub: Subscription,
        options: SubscriptionOptions,
        id: Option<NonZeroU32>,
    ) -> SubscriptionEntry {
        let indexed = self.routes.index(session, sub, options, id);
        if let Some(share) = indexed.made_group {
            self.share_group_joined(share);
        }
        if indexed.fresh {
            self.bridge_subscribed(&indexed.entry);
        }
        indexed.entry
    }

    /// Removes a session's subscription from the tree that routes it; the last member of a
    /// shared subscription frees its group (in a fleet, the node leaves its queue group).
    pub(super) fn unindex_subscription(&mut self, session: SessionId, entry: &SubscriptionEntry) {
        let Some(freed) = self.routes.unindex(session, entry) else {
            return;
        };
        self.bridge_unsubscribed(entry);
        if let Some(group) = freed {
            self.share_group_left(&group);
        }
    }
}
