//! Messages through the broker: inbound PUBLISH and the QoS 1/2 flows from clients, routing
//! to matching sessions with a per-call budget, the outbound window and its acknowledgements.

use std::sync::Arc;

use bytestring::ByteString;

use super::connection::{Pending, Phase, Pipeline, Reply, Work};
use super::connections::Connections;
use super::io::{Action, CloseReason, ConnId, Outbox};
use super::message::Message;
use super::requests::Write;
use super::router::RouteScope;
use super::session::{Delivery, Inflight, InflightState, SubscriptionIds};
use super::sessions::SessionId;
use super::topic_alias::AliasUse;
use super::Broker;
use crate::codec::{
    Ack, DeliveryProperties, DisconnectReason, Packet, PacketId, PayloadFormat, PubAckReason,
    PubRec, PubRelReason, Publish, PublishProperties, PublishQos, PublishRef, QoS,
};
use crate::js::records;
use crate::js::StoreRequest;
use crate::topic::{subject, TopicName};

/// The flags a PUBLISH goes out with, and whether a slow consumer drops it (QoS 0).
#[derive(Debug, Clone, Copy)]
struct SendFlags {
    retain: bool,
    dup: bool,
    drop_if_slow: bool,
}

/// The store writes a publish waits for before it is routed and acknowledged.
#[derive(Debug)]
struct PublishWrites {
    /// Issued at once.
    writes: Vec<(Write, StoreRequest)>,
    /// Issued once those succeeded (the QoS 2 record).
    then: Option<StoreRequest>,
    /// Whether one of `writes` stores the message itself.
    storing: bool,
}

/// Payloads at least this large are sent from their shared buffer instead of being copied
/// into each subscriber's output buffer.
const SHARED_PAYLOAD_MIN: usize = 4096;

impl Broker {
    /// A PUBLISH from a connected client: validated (topic and alias, QoS, payload format,
    /// properties, permissions, retained quota), planned (its acknowledgement and the store
    /// writes it needs), then queued in the connection's pipeline, which routes and
    /// acknowledges it once those writes are done, in arrival order.
    pub(super) fn on_publish(
        &mut self,
        conn: ConnId,
        session: SessionId,
        mut p: Publish,
        out: &mut Outbox,
    ) {
        let Some(topic) = self.publish_topic(conn, &mut p, out) else {
            return;
        };
        let level = p.qos.level();
        if level > self.config.max_qos {
            self.protocol_error(conn, DisconnectReason::QosNotSupported, out);
            return;
        }
        if self.refuses_publish(conn, &p, &topic, out) {
            return;
        }
        let mut msg = Message {
            topic,
            payload: p.payload,
            qos: level,
            retain: p.retain,
            properties: p.properties,
            publisher: self.sessions.get(session).map(|s| s.uid),
            seq: None,
            expires_at: None,
        };
        msg.expires_at = Self::expiry_deadline(self.now.instant, &msg);
        let Some((reply, qos2_new)) = self.publish_reply(conn, session, p.qos, out) else {
            return;
        };
        let qos2_pid = p.qos.packet_id().filter(|_| qos2_new);
        let writes = self.publish_writes(conn, session, &msg, qos2_pid, out);
        self.queue_publish(conn, msg, reply, writes, out);
    }

    /// The topic of a PUBLISH: its topic name, or the one its topic alias stands for (the
    /// alias is taken out of its properties, and set when it comes with a topic). `None`
    /// when the client broke a rule (its connection is closed).
    fn publish_topic(
        &mut self,
        conn: ConnId,
        p: &mut Publish,
        out: &mut Outbox,
    ) -> Option<TopicName> {
        let alias = p
            .properties
            .as_mut()
            .and_then(|props| props.topic_alias.take());
        if p.properties.as_deref() == Some(&PublishProperties::EMPTY) {
            // Aliases are per hop: what is left is passed on, or nothing.
            p.properties = None;
        }
        let topic = if p.topic.is_empty() {
            // A topic alias stands for a topic the client set before on this connection.
            let known = alias.and_then(|a| {
                let c = self.conns.get(&conn)?;
                c.extensions.as_ref()?.inbound_aliases.get(a)
            });
            let Some(topic) = known else {
                let reason = if alias.is_some() {
                    DisconnectReason::ProtocolError
                } else {
                    DisconnectReason::TopicNameInvalid
                };
                self.protocol_error(conn, reason, out);
                return None;
            };
            topic
        } else {
            match TopicName::new(std::mem::take(&mut p.topic)) {
                Ok(t) if t.levels().count() <= self.config.max_topic_levels => t,
                _ => {
                    self.protocol_error(conn, DisconnectReason::TopicNameInvalid, out);
                    return None;
                }
            }
        };
        if let Some(a) = alias {
            // [MQTT-3.2.2-17]: aliases above the advertised maximum are invalid.
            if a.get() > self.config.topic_alias_maximum {
                self.protocol_error(conn, DisconnectReason::TopicAliasInvalid, out);
                return None;
            }
            if let Some(c) = self.conns.get_mut(&conn) {
                c.extensions().inbound_aliases.set(a, topic.clone());
            }
        }
        Some(topic)
    }

    /// Whether a valid PUBLISH on `topic` is refused (answered with a failure code, or dropped
    /// at QoS 0): a payload that is not the UTF-8 its indicator says, too many user
    /// properties, a topic that is not the client's to publish on, or no room for another
    /// retained message.
    fn refuses_publish(
        &mut self,
        conn: ConnId,
        p: &Publish,
        topic: &TopicName,
        out: &mut Outbox,
    ) -> bool {
        let utf8 = p
            .properties
            .as_ref()
            .and_then(|props| props.payload_format_indicator)
            == Some(PayloadFormat::Utf8);
        if utf8 && std::str::from_utf8(&p.payload).is_err() {
            // The payload is not the UTF-8 its indicator says (§3.3.2.3.2): 0x99.
            if !self.refuse_publish(conn, p.qos, PubAckReason::PayloadFormatInvalid, out) {
                self.protocol_error(conn, DisconnectReason::PayloadFormatInvalid, out);
            }
            return true;
        }
        let user_properties = p
            .properties
            .as_ref()
            .map_or(&[][..], |props| &props.user_properties);
        if !self.config.user_properties_fit(user_properties) {
            // More user properties than one message may carry: 0x97; a QoS 0 one is dropped.
            self.stats.oversized_properties += 1;
            self.refuse_publish(conn, p.qos, PubAckReason::QuotaExceeded, out);
            return true;
        }
        let closed_subject = !self.bridge_carries(topic);
        if closed_subject {
            out.push(Action::Notice(super::io::Notice::BridgeRefused {
                conn,
                topic: super::detach(topic.as_str()),
            }));
        }
        let reserved = Self::is_reserved_for_the_broker(topic) || closed_subject;
        let Some(c) = self.conns.get(&conn) else {
            return true;
        };
        if reserved || c.grants().is_some_and(|g| !g.may_publish(topic)) {
            // Not the client's to publish (the broker's own `$SYS/`, a subject of NATS or
            // jetmq in NATS mode, or outside its permissions): 0x87; a QoS 0 publish is
            // dropped.
            self.refuse_publish(conn, p.qos, PubAckReason::NotAuthorized, out);
            return true;
        }
        let kept = (!p.payload.is_empty()).then(|| {
            p.payload.len()
                + topic.as_str().len()
                + p.properties.as_ref().map_or(0, |props| props.wire_len())
        });
        if p.retain && !self.retained_quota_allows(topic, kept, out) {
            // No room for another retained message: 0x97, and the message goes nowhere (it
            // must be retained or not taken at all [MQTT-3.3.1-5]); a QoS 0 one is dropped.
            self.refuse_publish(conn, p.qos, PubAckReason::QuotaExceeded, out);
            return true;
        }
        false
    }

    /// The acknowledgement a taken PUBLISH with `qos` gets, and whether it starts an inbound
    /// QoS 2 flow; `None` when nothing more is to be done (a QoS 2 repeat before PUBREL is
    /// acknowledged again [MQTT-4.3.3]; more unacknowledged publishes than Receive Maximum
    /// close the connection [MQTT-3.3.4-7]).
    fn publish_reply(
        &mut self,
        conn: ConnId,
        session: SessionId,
        qos: PublishQos,
        out: &mut Outbox,
    ) -> Option<(Reply, bool)> {
        self.conns.get(&conn)?;
        let (reply, qos2_new) = match qos {
            PublishQos::AtMostOnce => (Reply::None, false),
            PublishQos::AtLeastOnce(pid) => (Reply::PubAck(pid), false),
            PublishQos::ExactlyOnce(pid) => {
                let duplicate = self
                    .sessions
                    .get(session)
                    .is_some_and(|s| s.inbound_qos2.contains(&pid.get()));
                if duplicate {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.pipeline.push(Work::Reply(Reply::PubRec(pid)), 0);
                    }
                    self.drain_pipeline(Some(conn), out);
                    return None;
                }
                (Reply::PubRec(pid), true)
            }
        };
        if reply != Reply::None {
            let c = self.conns.get_mut(&conn)?;
            if c.receive_in_flight >= self.config.receive_maximum && c.version.is_v5() {
                self.protocol_error(conn, DisconnectReason::ReceiveMaximumExceeded, out);
                return None;
            }
            c.receive_in_flight = c.receive_in_flight.saturating_add(1);
        }
        Some((reply, qos2_new))
    }

    /// The store writes `msg` needs before it is routed and acknowledged: its retained
    /// record (a QoS 0 one is written in the background instead), the message itself when a
    /// persistent session wants it, and, for a new inbound QoS 2 flow `qos2_pid` of a
    /// persistent session, the QoS 2 record, last.
    fn publish_writes(
        &mut self,
        conn: ConnId,
        session: SessionId,
        msg: &Message,
        qos2_pid: Option<PacketId>,
        out: &mut Outbox,
    ) -> PublishWrites {
        let mut writes = Vec::new();
        let qos2_record = qos2_pid.and_then(|pid| {
            let s = self.sessions.get_mut(session)?;
            s.inbound_qos2.insert(pid.get());
            // Only a persistent session's QoS 2 state must outlive the broker: a clean
            // session ends with it anyway, so its PUBREC needs no store write.
            s.persistent
                .then(|| records::qos2_write(&s.key.client_id, pid.get(), msg.retain))
        });
        if msg.retain {
            let req = self.retained_request(msg);
            if msg.qos == QoS::AtMostOnce {
                self.request(req, super::requests::RequestOwner::Background, out);
            } else {
                writes.push((Write::Other, req));
            }
        }
        let storing = msg.qos != QoS::AtMostOnce && self.needs_store(&msg.topic);
        if storing {
            // Earlier messages of this connection still waiting unstored go to the store
            // first, so that it keeps them in the order they were sent.
            self.store_earlier_publishes(conn, out);
            writes.push((Write::Message, self.message_request(msg)));
        }
        // The QoS 2 record goes last: once it exists, a resend counts as a duplicate, so the
        // message must already be stored.
        let then = match qos2_record {
            Some(record) if !writes.is_empty() => Some(record),
            Some(record) => {
                writes.push((Write::Other, record));
                None
            }
            None => None,
        };
        PublishWrites {
            writes,
            then,
            storing,
        }
    }

    /// Queues a taken publish in its connection's pipeline behind `writes` (issued now), and
    /// stops reading the connection when too many wait.
    fn queue_publish(
        &mut self,
        conn: ConnId,
        msg: Message,
        reply: Reply,
        planned: PublishWrites,
        out: &mut Outbox,
    ) {
        let PublishWrites {
            writes,
            then,
            storing,
        } = planned;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let token = c.pipeline.push(
            Work::Publish {
                msg,
                route: true,
                reply,
            },
            u32::try_from(writes.len()).unwrap_or(u32::MAX),
        );
        if let Some(entry) = c.pipeline.get_mut(token) {
            entry.then = then;
            entry.storing = storing;
        }
        let pending = c.pipeline.entries.len();
        for (kind, req) in writes {
            let owner = super::requests::RequestOwner::Pipeline {
                conn: Some(conn),
                token,
                kind,
            };
            self.request(req, owner, out);
        }
        if pending >= self.config.max_pending_per_connection {
            self.conns.pause(conn, out);
        }
        self.drain_pipeline(Some(conn), out);
    }

    /// Whether a publish on `topic` may be taken: without the NATS bridge always, with it
    /// only on a subject the bridge carries (see `bridge_policy`).
    fn bridge_carries(&self, topic: &TopicName) -> bool {
        !self.config.cluster.bridges()
            || self
                .config
                .bridge
                .publish
                .allows_subject(&crate::topic::subject::topic_to_subject(topic))
    }

    /// Whether a persistent session with a QoS ≥ 1 subscription would receive a message on
    /// `topic` (in a fleet: might, on any node), so the message must be stored before it is
    /// acknowledged.
    fn needs_store(&self, topic: &TopicName) -> bool {
        if self.config.cluster.is_fleet() {
            // A persistent session on another node may want it.
            return true;
        }
        self.routes.persistent_interest(topic, &self.sessions)
    }

    /// Stores the QoS ≥ 1 messages `conn` published earlier that still wait in its pipeline
    /// unstored but that a persistent session now wants (it subscribed since they arrived),
    /// before a later message is stored: the store keeps a publisher's messages in the order
    /// they were sent, so a restart hands them out in that order. (Left to the late store at
    /// completion, they would get later sequences than the messages sent after them.)
    fn store_earlier_publishes(&mut self, conn: ConnId, out: &mut Outbox) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let wanted: Vec<(u64, StoreRequest)> = c
            .pipeline
            .entries
            .iter()
            .filter(|p| !p.storing && !p.failed && p.seq.is_none())
            .filter_map(|p| match &p.work {
                Work::Publish {
                    msg, route: true, ..
                } if msg.qos != QoS::AtMostOnce && self.needs_store(&msg.topic) => {
                    Some((p.token, self.message_request(msg)))
                }
                _ => None,
            })
            .collect();
        for (token, req) in wanted {
            let Some(entry) = self
                .conns
                .get_mut(&conn)
                .and_then(|c| c.pipeline.get_mut(token))
            else {
                continue;
            };
            entry.waiting += 1;
            entry.storing = true;
            let owner = super::requests::RequestOwner::Pipeline {
                conn: Some(conn),
                token,
                kind: Write::Message,
            };
            self.request(req, owner, out);
        }
    }

    /// The pipeline of `conn`, or the broker's own for `None`.
    fn pipeline_mut(&mut self, conn: Option<ConnId>) -> Option<&mut Pipeline> {
        self.conns.pipeline_mut(conn)
    }

    /// Puts a ready entry back at the front of its pipeline, waiting for one more write.
    fn wait_again(
        &mut self,
        conn: Option<ConnId>,
        mut pending: Pending,
        req: StoreRequest,
        kind: Write,
        out: &mut Outbox,
    ) {
        pending.waiting = 1;
        let token = pending.token;
        let Some(pipeline) = self.pipeline_mut(conn) else {
            return;
        };
        pipeline.entries.push_front(pending);
        let owner = super::requests::RequestOwner::Pipeline { conn, token, kind };
        self.request(req, owner, out);
    }

    /// Whether a completed publish still needs its message stored: it is QoS ≥ 1, was not
    /// stored, and a persistent session with a QoS ≥ 1 subscription now matches it.
    fn needs_late_store(&self, pending: &Pending) -> bool {
        match &pending.work {
            Work::Publish {
                msg, route: true, ..
            } => {
                !pending.failed
                    && pending.seq.is_none()
                    && msg.qos != QoS::AtMostOnce
                    && self.needs_store(&msg.topic)
            }
            _ => false,
        }
    }

    /// The record of a QoS 1/2 message in the messages stream.
    fn message_request(&self, msg: &Message) -> StoreRequest {
        let subj = subject::topic_to_subject(&msg.topic);
        records::message_write(&subj, msg.qos, msg.payload.clone(), self.v5_fields(msg))
    }

    /// What MQTT 5.0 adds to a stored message: its properties, and when it expires on the
    /// wall clock, so both survive a restart.
    pub(super) fn v5_fields<'m>(&self, msg: &'m Message) -> records::V5Fields<'m> {
        let expires_at = msg.expires_at.map(|at| {
            let left = at.saturating_duration_since(self.now.instant);
            self.now
                .wall
                .as_unix_millis()
                .saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
        });
        records::V5Fields {
            properties: msg.properties.as_deref(),
            expires_at,
        }
    }

    /// The write (or, for an empty payload, the purge) of a retained message's record.
    fn retained_request(&self, msg: &Message) -> StoreRequest {
        let subj = subject::topic_to_subject(&msg.topic);
        let topic = msg.topic.as_byte_string();
        records::retained_write(
            topic,
            &subj,
            msg.qos,
            msg.payload.clone(),
            self.v5_fields(msg),
        )
    }

    /// Completes the pipeline entries of `conn` (or the broker's own, for `None`) whose
    /// writes are all answered, strictly in arrival order.
    pub(super) fn drain_pipeline(&mut self, conn: Option<ConnId>, out: &mut Outbox) {
        loop {
            let Some(mut pending) = self.pipeline_mut(conn).and_then(Pipeline::pop_ready) else {
                break;
            };
            // A write that waits for the first ones (the QoS 2 record) goes out now.
            if let Some(req) = pending.then.take().filter(|_| !pending.failed) {
                self.wait_again(conn, pending, req, Write::Other, out);
                break;
            }
            // A persistent subscription appeared while this message waited for its other
            // writes: store the message for it before acknowledging.
            if self.needs_late_store(&pending) {
                if let Work::Publish { msg, .. } = &pending.work {
                    let req = self.message_request(msg);
                    pending.storing = true;
                    self.wait_again(conn, pending, req, Write::Message, out);
                }
                break;
            }
            self.complete(conn, pending, out);
        }
        let Some(id) = conn else {
            return;
        };
        let limit = self.config.max_pending_per_connection / 2;
        if self.conns.unpause(id, limit, out) {
            self.process_inbuf(id, out);
        }
    }

    fn complete(&mut self, conn: Option<ConnId>, pending: Pending, out: &mut Outbox) {
        let Pending {
            failed, seq, work, ..
        } = pending;
        if failed {
            self.complete_failed(conn, work, out);
            return;
        }
        match work {
            Work::Publish {
                mut msg,
                route,
                reply,
            } => {
                msg.seq = seq;
                if route {
                    self.bridge_publish(&msg, out);
                    self.route(msg, conn);
                    // Deliver now, so a read of many publishes does not hold them all.
                    self.run_fanout(out);
                }
                if let Some(conn) = conn {
                    self.send_reply(conn, reply);
                }
            }
            Work::SubscriptionAck { packet, retained } => {
                let Some(conn) = conn else {
                    return;
                };
                if let Some(c) = self.conns.get_mut(&conn) {
                    packet.encode(c.version, &mut c.out);
                    self.mark_dirty(conn);
                }
                self.send_retained(conn, &retained, out);
            }
            Work::Reply(reply) => {
                if let Some(conn) = conn {
                    self.send_reply(conn, reply);
                }
            }
        }
    }

    /// A store write failed: a 5.0 publisher gets a failure code, anything else closes the
    /// connection so the client sends again. Nothing unacknowledged is routed.
    fn complete_failed(&mut self, conn: Option<ConnId>, work: Work, out: &mut Outbox) {
        let Some(conn) = conn else {
            return;
        };
        if let Work::Publish {
            reply: Reply::PubRec(pid),
            ..
        } = &work
        {
            // The message was not accepted: forget its identifier, or the client's resend
            // would be taken for a duplicate and never delivered.
            if let Some(session) = self.conns.get(&conn).and_then(|c| c.session()) {
                self.forget_inbound_qos2(session, pid.get(), out);
            }
        }
        let v5 = self.conns.get(&conn).is_some_and(|c| c.version.is_v5());
        match work {
            Work::Publish { reply, .. } if v5 && reply != Reply::None => {
                let pid = match reply {
                    Reply::PubAck(pid)
                    | Reply::PubRec(pid)
                    | Reply::PubComp(pid)
                    | Reply::PubCompNotFound(pid)
                    | Reply::Refused { pid, .. } => pid,
                    Reply::None => return,
                };
                let mut ack = Ack::new(pid);
                ack.reason = PubAckReason::UnspecifiedError;
                if self.conns.get(&conn).is_some_and(|c| c.problem_info) {
                    ack.properties.reason_string =
                        Some("the message could not be stored; publish it again".into());
                }
                let packet = if matches!(reply, Reply::PubRec(_)) {
                    Packet::PubRec(ack)
                } else {
                    Packet::PubAck(ack)
                };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.receive_in_flight = c.receive_in_flight.saturating_sub(1);
                    packet.encode(c.version, &mut c.out);
                    self.mark_dirty(conn);
                }
            }
            Work::Publish {
                reply: Reply::None, ..
            } => {
                // A QoS 0 message acknowledges nothing; it was just not routed.
            }
            _ => {
                self.send_disconnect(conn, DisconnectReason::ImplementationSpecificError);
                self.close(conn, CloseReason::StoreFailure, true, out);
            }
        }
    }

    fn send_reply(&mut self, conn: ConnId, reply: Reply) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let packet = match reply {
            Reply::None => return,
            Reply::PubAck(pid) => {
                c.receive_in_flight = c.receive_in_flight.saturating_sub(1);
                Packet::PubAck(Ack::new(pid))
            }
            Reply::PubRec(pid) => Packet::PubRec(Ack::new(pid)),
            Reply::PubComp(pid) => Packet::PubComp(Ack::new(pid)),
            Reply::PubCompNotFound(pid) => {
                let mut comp = Ack::new(pid);
                comp.reason = PubRelReason::PacketIdentifierNotFound;
                Packet::PubComp(comp)
            }
            Reply::Refused { pid, qos2, reason } => {
                // A failure code ends the flow: the identifier is free again.
                c.receive_in_flight = c.receive_in_flight.saturating_sub(1);
                let mut ack = Ack::new(pid);
                ack.reason = reason;
                if c.problem_info {
                    ack.properties.reason_string = Some(reason.description().into());
                }
                if qos2 {
                    Packet::PubRec(ack)
                } else {
                    Packet::PubAck(ack)
                }
            }
        };
        packet.encode(c.version, &mut c.out);
        self.mark_dirty(conn);
    }

    /// When a message's Message Expiry Interval, counted from now, runs out.
    fn expiry_deadline(
        now: crate::time::Timestamp,
        msg: &Message,
    ) -> Option<crate::time::Timestamp> {
        let secs = msg.properties.as_ref()?.message_expiry_interval?;
        Some(now.saturating_add(std::time::Duration::from_secs(u64::from(secs))))
    }

    /// Publishes a will as if its client had sent it.
    pub(super) fn publish_will(&mut self, mut msg: Message, out: &mut Outbox) {
        // A will's lifetime starts when it is published.
        msg.expires_at = Self::expiry_deadline(self.now.instant, &msg);
        let kept = (!msg.payload.is_empty()).then(|| msg.kept_bytes());
        if msg.retain && !self.retained_quota_allows(&msg.topic, kept, out) {
            // Nobody is left to refuse: the will goes out, but is not retained.
            msg.retain = false;
        }
        let mut writes = Vec::new();
        if msg.retain {
            writes.push((Write::Other, self.retained_request(&msg)));
        }
        if msg.qos != QoS::AtMostOnce && self.needs_store(&msg.topic) {
            writes.push((Write::Message, self.message_request(&msg)));
        }
        let Some(system) = self.conns.pipeline_mut(None) else {
            return;
        };
        let token = system.push(
            Work::Publish {
                msg,
                route: true,
                reply: Reply::None,
            },
            u32::try_from(writes.len()).unwrap_or(u32::MAX),
        );
        for (kind, req) in writes {
            self.request(
                req,
                super::requests::RequestOwner::Pipeline {
                    conn: None,
                    token,
                    kind,
                },
                out,
            );
        }
        self.drain_pipeline(None, out);
    }

    /// Answers a QoS 1/2 publish that is not taken with `reason` (a failure code ends its
    /// flow); false for QoS 0, which has no answer.
    fn refuse_publish(
        &mut self,
        conn: ConnId,
        qos: PublishQos,
        reason: PubAckReason,
        out: &mut Outbox,
    ) -> bool {
        let (pid, qos2) = match qos {
            PublishQos::AtMostOnce => return false,
            PublishQos::AtLeastOnce(pid) => (pid, false),
            PublishQos::ExactlyOnce(pid) => (pid, true),
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.receive_in_flight = c.receive_in_flight.saturating_add(1);
            c.pipeline
                .push(Work::Reply(Reply::Refused { pid, qos2, reason }), 0);
        }
        self.drain_pipeline(Some(conn), out);
        true
    }

    /// Queues a message for delivery to every matching session (in a fleet, shared
    /// subscriptions aside: their messages come through NATS queue groups).
    /// `from` is the connection it was published on, if any.
    pub(super) fn route(&mut self, msg: Message, from: Option<ConnId>) {
        let scope = if self.config.cluster.is_fleet() {
            RouteScope::Plain
        } else {
            RouteScope::All
        };
        self.route_to(msg, scope, from);
    }

    /// Queues a message for delivery to the matching sessions `scope` covers; `from` is the
    /// connection it was published on, if any.
    pub(super) fn route_to(&mut self, msg: Message, scope: RouteScope, from: Option<ConnId>) {
        self.stats.messages_routed += 1;
        // A queue group's copy is not the retained message's news: the live copy, which may
        // have been overtaken since (it comes on another connection), was.
        if msg.retain && !matches!(scope, RouteScope::Share(_)) {
            if msg.payload.is_empty() {
                self.retained.remove(&msg.topic);
            } else {
                let mut stored = msg.clone();
                stored.publisher = None;
                // Kept for long: its own copies, not slices of the publisher's read buffer.
                stored.payload = bytes::Bytes::copy_from_slice(&msg.payload);
                if let Ok(topic) = TopicName::new(super::detach(msg.topic.as_str())) {
                    stored.topic = topic;
                }
                self.retained.insert(&msg.topic, Arc::new(stored));
            }
        }
        self.routes.push(msg, scope, from);
    }

    /// Delivers queued messages until they are done or the call's budget is spent.
    pub(super) fn run_fanout(&mut self, out: &mut Outbox) {
        while let Some(mut job) = self.routes.next_job() {
            let mut targets = match job.targets.take() {
                Some(t) => t,
                None => {
                    let targets = self.routes.targets(&job.msg, job.scope, &mut self.sessions);
                    self.release_untargeted(&job.msg, job.scope, out);
                    targets
                }
            };
            while job.next < targets.len() && self.routes.spend() {
                let Some(t) = targets.get_mut(job.next) else {
                    break;
                };
                job.next += 1;
                let qos = job.msg.qos.min(t.qos);
                let retain = t.retain_as_published && job.msg.retain;
                if qos == QoS::AtMostOnce {
                    // Written at once from the shared message, or dropped: no Delivery.
                    if let Some(conn) = self.writes_now(t.session) {
                        let flags = SendFlags {
                            retain,
                            dup: false,
                            drop_if_slow: true,
                        };
                        let ids = &t.subscription_ids;
                        self.write_message(conn, &job.msg, flags, ids, PublishQos::AtMostOnce, out);
                        continue;
                    }
                }
                let (session, subscription_ids) =
                    (t.session, std::mem::take(&mut t.subscription_ids));
                let share = t.share;
                self.deliver_from(
                    session,
                    Delivery {
                        msg: Arc::clone(&job.msg),
                        qos,
                        retain,
                        dup: false,
                        subscription_ids,
                        share,
                        release: None,
                    },
                    job.from,
                    out,
                );
            }
            if job.next < targets.len() {
                job.targets = Some(targets);
                self.routes.requeue(job);
                out.wants_continue = true;
                return;
            }
            self.routes.finish(job.msg, targets);
        }
    }

    /// A stored message stays in the store for every persistent session with a matching
    /// QoS 1/2 subscription; the ones the routing pass just passed over (No Local, the other
    /// members of a shared subscription) release it at once, or the store would keep it for
    /// them and deliver it after a restart.
    fn release_untargeted(&mut self, msg: &Message, scope: RouteScope, out: &mut Outbox) {
        let Some(seq) = msg.seq else {
            return;
        };
        for sid in self.routes.passed_over(msg, scope, &self.sessions) {
            self.release_stored(sid, seq, out);
        }
    }

    /// The connection a QoS 0 message for `session` is written to at once: online, with
    /// nothing queued or spilled ahead of it.
    fn writes_now(&self, session: SessionId) -> Option<ConnId> {
        let s = self.sessions.get(session)?;
        // Spilled messages are ahead of it too (`deliver` drops it then).
        let spilled = s
            .outbound
            .overload
            .as_deref()
            .is_some_and(super::overload::Overload::spilled);
        (s.outbound.queue.is_empty() && !spilled)
            .then_some(s.conn)
            .flatten()
    }

    /// Hands one message to one session: sent now, queued behind the window, or dropped
    /// (counted) when it cannot be kept.
    pub(super) fn deliver(&mut self, session: SessionId, d: Delivery, out: &mut Outbox) {
        self.deliver_from(session, d, None, out);
    }

    /// [`deliver`](Self::deliver) of a message published on connection `from`, which is held
    /// back if the session cannot keep up (see `overflow.rs`).
    pub(super) fn deliver_from(
        &mut self,
        session: SessionId,
        d: Delivery,
        from: Option<ConnId>,
        out: &mut Outbox,
    ) {
        if let Some(seq) = d.msg.seq.filter(|_| !self.catch_ups.is_empty()) {
            if self.has_had(session, seq) {
                // A late live copy of a message the session had from its load.
                return;
            }
        }
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let Some(conn) = s.conn else {
            if s.persistent && d.qos != QoS::AtMostOnce {
                self.enqueue(session, d, from, out);
            }
            return;
        };
        let queue_empty = s.outbound.queue.is_empty();
        let inflight = s.outbound.inflight.len();
        let spilled = s
            .outbound
            .overload
            .as_deref()
            .is_some_and(super::overload::Overload::spilled);
        if d.qos == QoS::AtMostOnce {
            if self.is_slow(conn) || spilled {
                // Spilled messages come first: a QoS 0 one would overtake them.
                self.stats.dropped_slow_consumer += 1;
            } else if queue_empty {
                self.write_publish(conn, &d, PublishQos::AtMostOnce, out);
            } else {
                // Behind queued QoS 1/2 messages, so a topic's order holds across QoS levels.
                self.enqueue(session, d, from, out);
            }
            return;
        }
        if queue_empty && !spilled && inflight < self.window(conn) && !self.is_slow(conn) {
            self.send_new(session, conn, d, out);
        } else {
            self.enqueue(session, d, from, out);
        }
    }

    /// The in-flight window of a connection: the broker's limit and the client's Receive
    /// Maximum, whichever is lower.
    fn window(&self, conn: ConnId) -> usize {
        let client = self.conns.get(&conn).map_or(0, |c| c.send_window);
        usize::from(self.config.max_inflight.min(client).max(1))
    }

    /// Gives a QoS 1/2 delivery a packet identifier, records it in flight and sends it.
    fn send_new(&mut self, session: SessionId, conn: ConnId, d: Delivery, out: &mut Outbox) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let Some(pid) = s.outbound.allocate_pid() else {
            // All identifiers in use: keep it queued.
            self.queued_total += d.msg.kept_bytes();
            let _ = s.outbound.push_queued(d, usize::MAX, usize::MAX);
            return;
        };
        let (qos, state) = if d.qos == QoS::ExactlyOnce {
            (PublishQos::ExactlyOnce(pid), InflightState::PubRec)
        } else {
            (PublishQos::AtLeastOnce(pid), InflightState::PubAck)
        };
        let sent = self.write_publish(conn, &d, qos, out);
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        if sent {
            s.outbound.inflight.push_back(Inflight {
                pid,
                delivery: Some(d),
                state,
            });
        } else {
            // [MQTT-3.1.2-25]: too large for the client, dropped as if delivered.
            self.ack_stored(session, &d, out);
        }
    }

    /// Encodes a PUBLISH for `conn`; false if it exceeds the client's Maximum Packet Size.
    fn write_publish(
        &mut self,
        conn: ConnId,
        d: &Delivery,
        qos: PublishQos,
        out: &mut Outbox,
    ) -> bool {
        let flags = SendFlags {
            retain: d.retain,
            dup: d.dup,
            drop_if_slow: false,
        };
        self.write_message(conn, &d.msg, flags, &d.subscription_ids, qos, out)
    }

    /// The Message Expiry Interval `msg` goes out with: what is left of it [MQTT-3.3.2-6];
    /// `None` (counted) when it ran out before it was sent and it is no resend: it is dropped
    /// [MQTT-3.3.2-5].
    fn expiry_left(&mut self, msg: &Message, dup: bool) -> Option<Option<u32>> {
        let Some(at) = msg.expires_at else {
            return Some(None);
        };
        let left = at.saturating_duration_since(self.now.instant);
        if left.is_zero() && !dup {
            self.stats.dropped_expired += 1;
            return None;
        }
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1)))
    }

    /// Encodes one PUBLISH of `msg` for `conn` (see [`write_publish`](Self::write_publish)),
    /// from borrowed parts, so a QoS 0 fan-out builds no [`Delivery`].
    fn write_message(
        &mut self,
        conn: ConnId,
        msg: &Message,
        flags: SendFlags,
        subscription_ids: &SubscriptionIds,
        qos: PublishQos,
        out: &mut Outbox,
    ) -> bool {
        let Some(expiry) = self.expiry_left(msg, flags.dup) else {
            return false;
        };
        let max_unsent = self.conns.max_unsent();
        let Some((c, flush)) = self.conns.get_mut_with_flush(conn) else {
            return false;
        };
        if flags.drop_if_slow && Connections::over_limit(c, max_unsent) {
            // The same test as `is_slow`, on the connection already at hand.
            self.stats.dropped_slow_consumer += 1;
            return false;
        }
        let alias = c
            .extensions
            .as_ref()
            .map_or(AliasUse::None, |e| e.outbound_aliases.lookup(&msg.topic));
        let (topic, topic_alias) = alias.topic_and_alias(msg.topic.as_str());
        let delivery = (expiry.is_some() || topic_alias.is_some() || !subscription_ids.is_empty())
            .then(|| DeliveryProperties {
                subscription_ids,
                message_expiry_interval: expiry,
                topic_alias,
            });
        let publish = PublishRef {
            dup: flags.dup,
            qos,
            retain: flags.retain,
            topic,
            properties: msg.properties.as_deref(),
            delivery,
            payload: &msg.payload,
        };
        let len = publish.encoded_len(c.version);
        if len > c.max_send_size as usize {
            // [MQTT-3.1.2-25]: dropped for this subscriber, counted.
            self.stats.dropped_too_large += 1;
            return false;
        }
        if let AliasUse::New(a) = alias {
            c.extensions().outbound_aliases.bind(a, &msg.topic);
        }
        self.stats.deliveries += 1;
        if c.out.capacity() - c.out.len() < len {
            // One allocation sized like the last flush instead of a doubling series.
            c.out
                .reserve(len.max(usize::try_from(c.out_hint).unwrap_or(usize::MAX)));
        }
        if msg.payload.len() >= SHARED_PAYLOAD_MIN {
            // What this call wrote before and the header go out first, then the payload from
            // its shared buffer, without a copy per subscriber.
            publish.encode_header(c.version, &mut c.out);
            c.unsent += msg.payload.len();
            self.flush_conn(conn, out);
            out.push(Action::Send {
                conn,
                bytes: msg.payload.clone(),
            });
            return true;
        }
        publish.encode(c.version, &mut c.out);
        // `mark_dirty`, on the connection already at hand (one lookup per delivery, not two).
        flush.mark(conn, c);
        true
    }

    /// Sends queued messages while the window has room and the connection keeps up.
    pub(super) fn fill_window(&mut self, session: SessionId, out: &mut Outbox) {
        let Some(conn) = self.sessions.get(session).and_then(|s| s.conn) else {
            return;
        };
        let window = self.window(conn);
        let mut sent = false;
        loop {
            if self.is_slow(conn) {
                break;
            }
            let Some(s) = self.sessions.get_mut(session) else {
                return;
            };
            let Some(front) = s.outbound.queue.front() else {
                break;
            };
            let qos0 = front.qos == QoS::AtMostOnce;
            if !qos0 && s.outbound.inflight.len() >= window {
                break;
            }
            let Some(d) = s.outbound.pop_queued() else {
                break;
            };
            self.queued_total = self.queued_total.saturating_sub(d.msg.kept_bytes());
            sent = true;
            if qos0 {
                self.write_publish(conn, &d, PublishQos::AtMostOnce, out);
            } else {
                self.send_new(session, conn, d, out);
            }
        }
        if sent {
            self.after_drain(session, out);
        }
    }

    /// After CONNACK on a resumed session: re-send everything in flight with DUP set, then
    /// fill the window from the queue.
    pub(super) fn resume_session(&mut self, session: SessionId, out: &mut Outbox) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let Some(conn) = s.conn else {
            return;
        };
        let resend: Vec<(PacketId, InflightState, Option<Delivery>)> = s
            .outbound
            .inflight
            .iter()
            .map(|e| (e.pid, e.state, e.delivery.clone()))
            .collect();
        for (pid, state, delivery) in resend {
            match (state, delivery) {
                (InflightState::PubComp, _) => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        Packet::PubRel(Ack::new(pid)).encode(c.version, &mut c.out);
                        self.mark_dirty(conn);
                    }
                }
                (_, Some(mut d)) => {
                    d.dup = true;
                    let qos = if state == InflightState::PubRec {
                        PublishQos::ExactlyOnce(pid)
                    } else {
                        PublishQos::AtLeastOnce(pid)
                    };
                    self.write_publish(conn, &d, qos, out);
                }
                (_, None) => {}
            }
        }
        self.fill_window(session, out);
        // What it spilled while offline is read back now.
        self.after_drain(session, out);
    }

    /// Ends an outbound flow that is in `state`; acknowledgements for other identifiers are
    /// ignored.
    pub(super) fn finish_outbound(
        &mut self,
        session: SessionId,
        pid: PacketId,
        state: InflightState,
        out: &mut Outbox,
    ) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let Some(i) = s.outbound.position(pid) else {
            return;
        };
        if s.outbound.inflight[i].state != state {
            return;
        }
        let entry = s.outbound.inflight.remove(i);
        if state == InflightState::PubComp && s.persistent {
            let purge = records::pubrel_purge(&s.key.client_id, pid.get());
            self.request(purge, super::requests::RequestOwner::Background, out);
        }
        if let Some(d) = entry.and_then(|e| e.delivery) {
            self.ack_stored(session, &d, out);
        }
        self.note_progress(session);
        self.fill_window(session, out);
        self.after_drain(session, out);
    }

    pub(super) fn on_pubrec(
        &mut self,
        conn: ConnId,
        session: SessionId,
        ack: &PubRec,
        out: &mut Outbox,
    ) {
        let pid = ack.packet_id;
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let found = s
            .outbound
            .position(pid)
            .filter(|&i| s.outbound.inflight[i].state != InflightState::PubAck);
        let version = self.conns.get(&conn).map(|c| c.version);
        let mut rel = Ack::new(pid);
        match found {
            Some(i) if ack.reason.is_error() => {
                // A failure code ends the flow [MQTT-4.3.3].
                let entry = s.outbound.inflight.remove(i);
                if let Some(d) = entry.and_then(|e| e.delivery) {
                    self.ack_stored(session, &d, out);
                }
                self.fill_window(session, out);
                return;
            }
            Some(i) => {
                s.outbound.inflight[i].state = InflightState::PubComp;
                if s.persistent {
                    // The PUBREL state outlives the broker and follows the session to other
                    // nodes [MQTT-4.4.0-1]: the PUBREL is what is sent again after a
                    // reconnect, not the message, which the store can let go once the record
                    // is written (or at PUBCOMP, whichever comes first). Until then the entry
                    // keeps the delivery: if the record cannot be written, a restart sends
                    // the message again (the client answers a duplicate with PUBREC) instead
                    // of sending nothing.
                    let record = records::pubrel_write(&s.key.client_id, pid.get());
                    let seq = s.outbound.inflight[i]
                        .delivery
                        .as_ref()
                        .and_then(|d| d.msg.seq);
                    let owner = match seq {
                        Some(seq) => {
                            super::requests::RequestOwner::PubRelRecord { session, pid, seq }
                        }
                        None => super::requests::RequestOwner::Background,
                    };
                    self.request(record, owner, out);
                }
            }
            None if version.is_some_and(|v| v.is_v5()) => {
                rel.reason = PubRelReason::PacketIdentifierNotFound;
            }
            None => {}
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            Packet::PubRel(rel).encode(c.version, &mut c.out);
            self.mark_dirty(conn);
        }
    }

    /// The PUBREL record of `session`'s flow `pid` is written: stored message `seq`, which the
    /// flow's entry kept until now, is acknowledged. Nothing is left to do when the flow
    /// already ended (its PUBCOMP acknowledged the message) or the session is another one.
    pub(super) fn on_pubrel_recorded(
        &mut self,
        session: SessionId,
        pid: PacketId,
        seq: u64,
        out: &mut Outbox,
    ) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let Some(entry) = s.outbound.inflight.iter_mut().find(|e| {
            e.pid == pid
                && e.state == InflightState::PubComp
                && e.delivery.as_ref().is_some_and(|d| d.msg.seq == Some(seq))
        }) else {
            return;
        };
        if let Some(d) = entry.delivery.take() {
            self.ack_stored(session, &d, out);
        }
    }

    pub(super) fn on_pubrel(
        &mut self,
        conn: ConnId,
        session: SessionId,
        pid: PacketId,
        out: &mut Outbox,
    ) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if s.inbound_qos2.remove(&pid.get()) {
            c.receive_in_flight = c.receive_in_flight.saturating_sub(1);
            if s.persistent {
                let purge = records::qos2_purge(&s.key.client_id, pid.get());
                // PUBCOMP waits until the identifier is forgotten durably, so a restart cannot
                // mistake the client's next message with this identifier for a duplicate.
                let token = c.pipeline.push(Work::Reply(Reply::PubComp(pid)), 1);
                self.request(
                    purge,
                    super::requests::RequestOwner::Pipeline {
                        conn: Some(conn),
                        token,
                        kind: Write::Other,
                    },
                    out,
                );
            } else {
                // A clean session's QoS 2 state lives in memory only.
                c.pipeline.push(Work::Reply(Reply::PubComp(pid)), 0);
            }
        } else if c.version.is_v5() {
            // Unknown identifier: PUBCOMP 0x92 ([MQTT-3.7.2-1]), behind earlier replies.
            c.pipeline.push(Work::Reply(Reply::PubCompNotFound(pid)), 0);
        } else {
            c.pipeline.push(Work::Reply(Reply::PubComp(pid)), 0);
        }
        self.drain_pipeline(Some(conn), out);
    }

    /// Forgets an inbound QoS 2 identifier whose message was not accepted, in memory and in
    /// the store.
    pub(super) fn forget_inbound_qos2(&mut self, session: SessionId, pid: u16, out: &mut Outbox) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        if s.inbound_qos2.remove(&pid) && s.persistent {
            let purge = records::qos2_purge(&s.key.client_id, pid);
            self.request(purge, super::requests::RequestOwner::Background, out);
        }
    }

    /// Tells the store a delivery of a stored message is done: the consumer of the persistent
    /// session it was for (or of the member it was handed over from) releases it.
    pub(super) fn ack_stored(&mut self, session: SessionId, d: &Delivery, out: &mut Outbox) {
        let Some(seq) = d.msg.seq else {
            return;
        };
        self.note_released(session, seq);
        match &d.release {
            Some(consumer) => {
                let consumer = ByteString::clone(consumer);
                self.request(
                    StoreRequest::Ack { consumer, seq },
                    super::requests::RequestOwner::Background,
                    out,
                );
            }
            None => self.release_stored(session, seq, out),
        }
    }

    /// Tells the store a persistent session no longer needs stored message `seq`.
    pub(super) fn release_stored(&mut self, session: SessionId, seq: u64, out: &mut Outbox) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        if !s.persistent {
            return;
        }
        let consumer = s.consumer();
        self.note_released(session, seq);
        self.request(
            StoreRequest::Ack { consumer, seq },
            super::requests::RequestOwner::Background,
            out,
        );
    }

    /// Sends the retained messages matching new subscriptions, with RETAIN set.
    pub(super) fn send_retained(
        &mut self,
        conn: ConnId,
        filters: &[(crate::topic::TopicFilter, QoS, Option<std::num::NonZeroU32>)],
        out: &mut Outbox,
    ) {
        let Some(session) = self.conns.get(&conn).and_then(|c| match c.phase {
            Phase::Connected { session } => Some(session),
            _ => None,
        }) else {
            return;
        };
        for (filter, granted, id) in filters {
            let mut found = Vec::new();
            self.retained
                .for_each_match(filter, |_, msg| found.push(Arc::clone(msg)));
            for msg in found {
                let qos = msg.qos.min(*granted);
                self.deliver(
                    session,
                    Delivery {
                        msg,
                        qos,
                        retain: true,
                        dup: false,
                        subscription_ids: id.iter().copied().collect(),
                        share: None,
                        release: None,
                    },
                    out,
                );
            }
        }
    }
}
