//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 §4.8.2, also offered to 3.1.1
//! clients): each message goes to one member of each group, in turn, and the unacknowledged
//! messages of a member that leaves go to another member.

use bytestring::ByteString;

use super::io::Outbox;
use super::session::{Delivery, InflightState};
use super::sessions::SessionId;
use super::Broker;
use crate::codec::QoS;

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
