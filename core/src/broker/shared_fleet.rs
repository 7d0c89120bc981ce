//! Shared subscriptions across a fleet. A node routes a message only to the members it holds,
//! so a group with members on two nodes would get every message once per node. In a fleet a
//! shared subscription is therefore a NATS queue group (`jetmq-share-` and a hash of
//! `group/filter`, the same name on every node): each node holding members subscribes to the
//! filter's subjects in that group, on a NATS connection of its own (the bridge's connection
//! does not echo what it publishes, and NATS never hands a message to a queue subscription of
//! the connection that published it when echo is off, so a group whose members all sit on the
//! publishing node would get nothing). NATS hands each message to one of those nodes, which
//! delivers it to one of its members in turn; messages published by plain NATS clients are
//! shared the same way.
//!
//! A stored QoS 1/2 message waits in the store for the consumer of every persistent member.
//! The node that took it releases it for its other members and tells the other nodes on
//! `$JETMQ.taken.<queue>.<subject>` (header `Jetmq-Seq`), which release it for theirs; a member
//! whose session no node holds in memory gets it when it resumes (at least once, as QoS 1
//! allows). A member whose session ends with unfinished messages, and no other member on its
//! node, hands them to a node that has one on `$JETMQ.handover.<queue>.<subject>` (subscribed
//! in the queue group, so NATS picks one such node).

use bytes::Bytes;
use bytestring::ByteString;

use super::io::{Action, Outbox};
use super::message::Message;
use super::router::RouteScope;
use super::sessions::SessionId;
use super::share_groups::{ShareGroup, ShareId, QUEUE_PREFIX};
use super::Broker;
use crate::codec::QoS;
use crate::fleet::wire::{
    header, HANDOVER_PREFIX, HOPS_HEADER, RESERVED, SEQ_HEADER, TAKEN_PREFIX,
};
use crate::js::Header;
use crate::topic::{subject, TopicFilter, TopicName};

/// Passes after which a handed-over message is dropped.
const MAX_HOPS: u8 = 3;

/// The queue group's subscription to handed-over messages.
fn handovers(queue: &str) -> ByteString {
    format!("{HANDOVER_PREFIX}{queue}.>").into()
}

/// The subscription to the taken notices of queue group `queue`.
fn taken_notices(queue: &str) -> ByteString {
    format!("{TAKEN_PREFIX}{queue}.>").into()
}

impl Broker {
    /// The first member of shared subscription `share` held here joined: in a fleet, the
    /// node joins the subscription's queue group on NATS and listens to its taken notices.
    pub(super) fn share_group_joined(&mut self, share: ShareId) {
        if let Some(group) = self.routes.shares().get(share) {
            let (queue, filter) = (group.queue.clone(), group.filter.clone());
            self.queue_group_changed(&queue, &filter, true);
        }
    }

    /// The last member of `group` held here left (the group is freed): in a fleet, the node
    /// leaves its queue group.
    pub(super) fn share_group_left(&mut self, group: &ShareGroup) {
        self.queue_group_changed(&group.queue, &group.filter, false);
    }

    /// Joins (`added`) or leaves the NATS queue group `queue` of a shared subscription to
    /// `filter`, when this node is part of a fleet.
    fn queue_group_changed(&mut self, queue: &ByteString, filter: &TopicFilter, added: bool) {
        if !(self.config.cluster.is_fleet()) {
            return;
        }
        let subjects = subject::filter_subjects(filter).map(ByteString::from);
        for subject in subjects.chain([handovers(queue)]) {
            let queue = queue.clone();
            self.nats_changes.push(if added {
                Action::NatsQueueSubscribe { subject, queue }
            } else {
                Action::NatsQueueUnsubscribe { subject, queue }
            });
        }
        let subject = taken_notices(queue);
        self.nats_changes.push(if added {
            Action::NatsSubscribe { subject }
        } else {
            Action::NatsUnsubscribe { subject }
        });
    }

    /// NATS handed this node a message for the shared subscription behind `queue`: one of
    /// its members here gets it, and a stored message is announced as taken.
    pub(super) fn on_nats_queue_message(
        &mut self,
        queue: &str,
        subject: &str,
        headers: &[(ByteString, ByteString)],
        payload: Bytes,
        out: &mut Outbox,
    ) {
        if !(self.config.cluster.is_fleet()) {
            self.stats.unknown_inputs += 1;
            return;
        }
        // A group freed with its last member here (NATS may still hand the node a message
        // for it) has no number any more: it is treated as having no member here.
        let share = self.routes.shares().by_queue(queue);
        if share.is_none() && !queue.starts_with(QUEUE_PREFIX) {
            self.stats.unknown_inputs += 1;
            return;
        }
        let handed_over = subject
            .strip_prefix(HANDOVER_PREFIX)
            .and_then(|rest| rest.strip_prefix(queue))
            .and_then(|rest| rest.strip_prefix('.'));
        if let Some(subject) = handed_over {
            // Another node's member left for good: one member here takes its message over.
            // (Its taken notice went out when it was first taken.)
            let Some(msg) = self.message_from_nats(subject, headers, payload) else {
                return;
            };
            if let Some(share) = share.filter(|s| !self.share_members(*s, &msg.topic).is_empty()) {
                self.route_to(msg, RouteScope::Share(share), None);
                return;
            }
            // This node's last member left while NATS still counted it in: passed on again,
            // a few times at most.
            let hops = header(headers, HOPS_HEADER).and_then(|h| h.parse::<u8>().ok());
            match hops.unwrap_or(0) {
                hops @ 0..MAX_HOPS => {
                    self.hand_over_to_another_node(queue, &msg, hops + 1, out);
                }
                _ => self.stats.share_messages_missed += 1,
            }
            return;
        }
        if subject.starts_with(RESERVED) {
            // A group on `#` also matches the nodes' own subjects: none of them is for MQTT.
            return;
        }
        let Some(msg) = self.message_from_nats(subject, headers, payload) else {
            return;
        };
        let Some(share) = share.filter(|s| !self.share_members(*s, &msg.topic).is_empty()) else {
            // The last member left while NATS still counted this node in: a stored message
            // stays with the other members' consumers (it is not announced as taken).
            self.stats.share_messages_missed += 1;
            return;
        };
        if let Some(seq) = msg.seq {
            out.push(Action::NatsPublish {
                subject: format!("{TAKEN_PREFIX}{queue}.{subject}").into(),
                headers: vec![Header {
                    name: SEQ_HEADER,
                    value: seq.to_string().into(),
                }],
                payload: Bytes::new(),
            });
        }
        self.route_to(msg, RouteScope::Share(share), None);
    }

    /// Fleet: hands a message of the shared subscription with queue group `queue` whose
    /// member here ended, with no other member here, to a node with a member (NATS picks one
    /// through the queue group; with none anywhere the message is dropped, as on a single
    /// node). `hops`: how often it was passed on already.
    pub(super) fn hand_over_to_another_node(
        &self,
        queue: &str,
        msg: &Message,
        hops: u8,
        out: &mut Outbox,
    ) {
        if !(self.config.cluster.is_fleet()) {
            return;
        }
        let subject = subject::topic_to_subject(&msg.topic);
        let mut headers = self.live_copy_headers(msg);
        if hops > 0 {
            headers.push(Header {
                name: HOPS_HEADER,
                value: hops.to_string().into(),
            });
        }
        out.push(Action::NatsPublish {
            subject: format!("{HANDOVER_PREFIX}{queue}.{subject}").into(),
            headers,
            payload: msg.payload.clone(),
        });
    }

    /// Another node took stored message `Jetmq-Seq` for a shared subscription: the members
    /// held here let it go.
    pub(super) fn on_taken_notice(
        &mut self,
        subject: &str,
        headers: &[(ByteString, ByteString)],
        out: &mut Outbox,
    ) {
        let taken = subject
            .strip_prefix(TAKEN_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(queue, subject)| {
                let topic = subject::subject_to_topic_name(subject).ok()?;
                let seq = header(headers, SEQ_HEADER)?.parse::<u64>().ok()?;
                Some((self.routes.shares().by_queue(queue), topic, seq))
            });
        let Some((share, topic, seq)) = taken else {
            self.stats.unknown_inputs += 1;
            return;
        };
        // A group freed here (its last member left) has no member to release it for.
        let Some(share) = share else {
            return;
        };
        for (session, qos) in self.share_members(share, &topic) {
            // A QoS 0 member's consumer never held it.
            if qos != QoS::AtMostOnce {
                self.release_stored(session, seq, out);
            }
        }
    }

    /// The sessions held here that are members of `share` for a message on `topic`, each
    /// with the QoS it subscribed with.
    fn share_members(&self, share: ShareId, topic: &TopicName) -> Vec<(SessionId, QoS)> {
        self.routes.share_members(share, topic)
    }
}
