//! The NATS subject bridge: messages MQTT clients publish also go to their NATS subjects
//! (header `Nmqtt-Pub:<qos>`, as the NATS server's MQTT support does), and messages published
//! on NATS subjects that MQTT subscriptions cover reach those subscribers at QoS 0. The broker
//! subscribes to a NATS subject while at least one MQTT subscription maps to it; the shell's
//! NATS connection does not echo the broker's own publishes back, so nothing loops.

use bytes::Bytes;
use bytestring::ByteString;

use super::io::{Action, Outbox};
use super::message::Message;
use super::Broker;
use crate::codec::QoS;
use crate::topic::{subject, TopicFilter};

impl Broker {
    /// Counts a new MQTT subscription's subjects; a subject's first one subscribes on NATS.
    pub(super) fn bridge_subscribed(&mut self, filter: &TopicFilter) {
        if !self.config.nats_bridge {
            return;
        }
        for subject in subject::filter_subjects(filter).map(ByteString::from) {
            let count = self.nats_subjects.entry(subject.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                self.nats_changes.push(Action::NatsSubscribe { subject });
            }
        }
    }

    /// Uncounts a removed MQTT subscription's subjects; a subject's last one unsubscribes.
    pub(super) fn bridge_unsubscribed(&mut self, filter: &TopicFilter) {
        if !self.config.nats_bridge {
            return;
        }
        for subject in subject::filter_subjects(filter).map(ByteString::from) {
            let gone = match self.nats_subjects.get_mut(&subject) {
                Some(count) => {
                    *count -= 1;
                    *count == 0
                }
                None => false,
            };
            if gone {
                self.nats_subjects.remove(&subject);
                self.nats_changes.push(Action::NatsUnsubscribe { subject });
            }
        }
    }

    /// Hands the subscription changes of this call to the shell.
    pub(super) fn flush_bridge(&mut self, out: &mut Outbox) {
        for action in self.nats_changes.drain(..) {
            out.push(action);
        }
    }

    /// Publishes an MQTT client's message (or a will) on NATS too.
    pub(super) fn bridge_publish(&mut self, msg: &Message, out: &mut Outbox) {
        if !self.config.nats_bridge {
            return;
        }
        out.push(Action::NatsPublish {
            subject: ByteString::from(subject::topic_to_subject(&msg.topic).as_ref()),
            qos: msg.qos as u8,
            payload: msg.payload.clone(),
        });
    }

    /// A message from NATS: routed to the MQTT subscribers at QoS 0; subjects that are no
    /// MQTT topic (empty levels the escape cannot express) are counted and dropped.
    pub(super) fn on_nats_message(&mut self, subject: &str, payload: Bytes) {
        if !self.config.nats_bridge {
            self.stats.unknown_inputs += 1;
            return;
        }
        let Ok(topic) = subject::subject_to_topic_name(subject) else {
            self.stats.unknown_inputs += 1;
            return;
        };
        self.route(Message {
            topic,
            payload,
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
            publisher: None,
            seq: None,
            expires_at: None,
        });
    }
}
