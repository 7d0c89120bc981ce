//! The NATS subject bridge: messages MQTT clients publish also go to their NATS subjects
//! (header `Nmqtt-Pub:<qos>`, as the NATS server's MQTT support does), and messages published
//! on NATS subjects that MQTT subscriptions cover reach those subscribers at QoS 0. The broker
//! subscribes to a NATS subject while at least one MQTT subscription maps to it; the shell's
//! NATS connection does not echo the broker's own publishes back, so nothing loops.
//!
//! Between jetmq nodes of a fleet the live copy carries more: `Jetmq-Seq` (the stream
//! sequence of a stored QoS 1/2 message, so the receiving node delivers it at its QoS and
//! acknowledges it for the persistent sessions it serves), `Jetmq-Retain` (so every node's
//! retained messages follow) and the MQTT 5.0 headers of stored messages. Connect notices on
//! `$JETMQ.conn.<client hash>` close a client's connection on the node it left; with the header
//! `Jetmq-Discard` (an administrator deleted the session) they end the session on every node,
//! its client disconnected with 0x98 Administrative action. A connect notice carries its
//! connect's stamp (`Jetmq-Connect`, see [`Broker::connect_stamp`]): a node whose own
//! connection for that client is newer keeps it, so a notice that arrives late never closes
//! the connection that replaced it. Shared subscriptions of a fleet go through NATS queue
//! groups instead of the live copy (`shared_fleet.rs`). Subjects
//! under `$JETMQ.` are the nodes' own: MQTT publishes there are not bridged, and NATS
//! messages there never reach MQTT subscribers.

use bytes::Bytes;
use bytestring::ByteString;

use super::connection::{Loading, Phase};
use super::io::SessionKey;
use super::io::{Action, ConnId, Outbox};
use super::message::Message;
use super::session::SubscriptionEntry;
use super::Broker;
use crate::codec::{ConnectReason, QoS};
use crate::fleet::wire::{
    header, ConnectNotice, NoticeKey, CONNECT_NOTICE_PREFIX, RESERVED, RETAINED_PREFIX,
    RETAIN_HEADER, SEQ_HEADER, TAKEN_PREFIX,
};
use crate::js::{records, Header};
use crate::topic::subject;

/// How long after NATS came back a fleet node announces its clients a second time.
const REANNOUNCE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

impl Broker {
    /// Counts a new MQTT subscription's subjects; a subject's first one subscribes on NATS.
    /// In a fleet, a shared subscription's members count towards its queue group instead
    /// (see `shared_fleet.rs`).
    pub(super) fn bridge_subscribed(&mut self, entry: &SubscriptionEntry) {
        if !self.config.cluster.bridges()
            || (entry.share.is_some() && self.config.cluster.is_fleet())
        {
            return;
        }
        let filter = &entry.filter;
        for subject in bridged_subjects(filter) {
            let count = self.nats_subjects.entry(subject.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                self.nats_changes.push(Action::NatsSubscribe { subject });
            }
        }
    }

    /// Uncounts a removed MQTT subscription's subjects; a subject's last one unsubscribes.
    pub(super) fn bridge_unsubscribed(&mut self, entry: &SubscriptionEntry) {
        if !self.config.cluster.bridges()
            || (entry.share.is_some() && self.config.cluster.is_fleet())
        {
            return;
        }
        let filter = &entry.filter;
        for subject in bridged_subjects(filter) {
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
        if !self.config.cluster.bridges() {
            return;
        }
        let subject = subject::topic_to_subject(&msg.topic);
        if !self.config.bridge.publish.allows_subject(&subject) {
            // Never a system subject (wills are not checked at publish time).
            return;
        }
        let headers = self.live_copy_headers(msg);
        if self.config.cluster.is_fleet() && msg.retain {
            // Every node keeps the retained messages, subscribed to the topic or not.
            out.push(Action::NatsPublish {
                subject: format!("{RETAINED_PREFIX}{subject}").into(),
                headers: headers.clone(),
                payload: msg.payload.clone(),
            });
        }
        out.push(Action::NatsPublish {
            subject: ByteString::from(subject.as_ref()),
            headers,
            payload: msg.payload.clone(),
        });
    }

    /// The headers of a message's live copy on NATS: its QoS (`Nmqtt-Pub`), and in a fleet
    /// what the other nodes need (stream sequence, RETAIN, MQTT 5.0 properties).
    pub(super) fn live_copy_headers(&self, msg: &Message) -> Vec<Header> {
        let mut headers = vec![Header {
            name: records::PUB_HEADER,
            value: records::published_qos_value(msg.qos),
        }];
        if self.config.cluster.is_fleet() {
            if let Some(seq) = msg.seq {
                headers.push(Header {
                    name: SEQ_HEADER,
                    value: seq.to_string().into(),
                });
            }
            if msg.retain {
                headers.push(Header {
                    name: RETAIN_HEADER,
                    value: ByteString::from_static("1"),
                });
            }
            self.v5_fields(msg).push_headers(&mut headers);
        }
        headers
    }

    /// Stamps a CONNECT accepted here: later than every connect this node has accepted or
    /// heard of, and not earlier than the wall clock (a hybrid logical clock), so the connects
    /// of one client through different nodes are ordered as they happened; between equal
    /// stamps the higher node number is the later.
    pub(super) fn connect_stamp(&mut self) -> u64 {
        self.clock.stamp(self.now.wall)
    }

    /// Tells the other nodes of a fleet that `key`'s client connected here, with the stamp of
    /// that connect.
    pub(super) fn announce_connect(&mut self, key: &SessionKey, stamp: u64, out: &mut Outbox) {
        if !self.config.cluster.is_fleet() {
            return;
        }
        let notice = ConnectNotice::Connected {
            key: notice_key(key),
            order: Some(self.clock.order(stamp)),
        };
        self.connect_notice(&notice, out);
    }

    /// The NATS connection is up: every client connected here (or whose session is being
    /// read for its connect) is announced again with its connect's stamp, now and once more
    /// after [`REANNOUNCE_AFTER`] (a NATS server that has just restarted takes clients before
    /// its cluster routes, and with them the other nodes' subscriptions, are up).
    pub(super) fn on_nats_connected(&mut self, out: &mut Outbox) {
        if !(self.config.cluster.is_fleet()) {
            return;
        }
        self.announce_connected(out);
        let at = self.now.instant.saturating_add(REANNOUNCE_AFTER);
        self.schedule(at, super::Timer::Reannounce);
    }

    /// Announces every client connected here (or being connected) with its connect's stamp.
    pub(super) fn announce_connected(&mut self, out: &mut Outbox) {
        let mut connected: Vec<(SessionKey, u64)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.conn.is_some())
            .map(|(_, s)| (s.key.clone(), s.connect_stamp))
            .collect();
        connected.extend(
            self.loading
                .values()
                .filter_map(|conn| self.loading_connect(*conn))
                .map(|l| (l.key.clone(), l.stamp)),
        );
        for (key, stamp) in connected {
            self.announce_connect(&key, stamp, out);
        }
    }

    /// The CONNECT of `conn` while its session is being read from the store.
    fn loading_connect(&self, conn: ConnId) -> Option<&Loading> {
        match &self.conns.get(&conn)?.phase {
            Phase::Loading(l) => Some(l),
            _ => None,
        }
    }

    /// Tells the other nodes of a fleet that `key`'s session was discarded (by an
    /// administrator): they disconnect its client and end the session too.
    pub(super) fn announce_discard(&mut self, key: &SessionKey, out: &mut Outbox) {
        let notice = ConnectNotice::Discarded {
            key: notice_key(key),
        };
        self.connect_notice(&notice, out);
    }

    /// Publishes a connect notice to the other nodes of a fleet.
    fn connect_notice(&mut self, notice: &ConnectNotice, out: &mut Outbox) {
        if !(self.config.cluster.is_fleet()) {
            return;
        }
        let (subject, headers, payload) = notice.write();
        out.push(Action::NatsPublish {
            subject,
            headers,
            payload,
        });
    }

    /// A message from NATS: a connect notice of another node, or a message routed to the MQTT
    /// subscribers; subjects that are no MQTT topic (empty levels the escape cannot express)
    /// are counted and dropped.
    pub(super) fn on_nats_message(
        &mut self,
        subject: &str,
        headers: &[(ByteString, ByteString)],
        payload: Bytes,
        out: &mut Outbox,
    ) {
        if !self.config.cluster.bridges() {
            self.stats.unknown_inputs += 1;
            return;
        }
        if subject.starts_with(RESERVED) {
            match (
                subject.strip_prefix(RETAINED_PREFIX),
                self.config.cluster.is_fleet(),
            ) {
                (Some(subject), true) => self.on_retained_notice(subject, headers, payload),
                (None, true) if subject.starts_with(CONNECT_NOTICE_PREFIX) => {
                    match ConnectNotice::read(headers, &payload) {
                        Some(notice) => self.on_connect_notice(notice, out),
                        None => self.stats.unknown_inputs += 1,
                    }
                }
                (None, true) if subject.starts_with(TAKEN_PREFIX) => {
                    self.on_taken_notice(subject, headers, out);
                }
                _ => self.stats.unknown_inputs += 1,
            }
            return;
        }
        if let Some(msg) = self.message_from_nats(subject, headers, payload) {
            self.route(msg, None);
        }
    }

    /// The message a NATS message on an MQTT subject carries: at QoS 0, or, from another
    /// jetmq node of the fleet, with its QoS, stream sequence, RETAIN flag and MQTT 5.0
    /// properties. `None` (counted) when the subject is no MQTT topic (empty levels the
    /// escape cannot express), or when the message expired on its way.
    pub(super) fn message_from_nats(
        &mut self,
        subject: &str,
        headers: &[(ByteString, ByteString)],
        payload: Bytes,
    ) -> Option<Message> {
        if !self.config.bridge.subscribe.allows_subject(subject) {
            self.stats.bridge_refused += 1;
            return None;
        }
        let Ok(topic) = subject::subject_to_topic_name(subject) else {
            self.stats.unknown_inputs += 1;
            return None;
        };
        let mut msg = Message {
            topic,
            payload,
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
            publisher: None,
            seq: None,
            expires_at: None,
        };
        // What another jetmq node of the fleet sent: at its QoS only when stored, since a
        // QoS 1/2 delivery is acknowledged to the store.
        let seq = header(headers, SEQ_HEADER).and_then(|v| v.parse::<u64>().ok());
        let qos = published_qos(headers);
        if self.config.cluster.is_fleet() {
            if let (Some(seq), Some(qos)) = (seq, qos) {
                msg.qos = qos;
                msg.seq = Some(seq);
            }
            msg.retain = header(headers, RETAIN_HEADER).is_some();
            let (properties, expires_at) = self.v5_fields_from_headers(headers)?;
            msg.properties = properties;
            msg.expires_at = expires_at;
        }
        Some(msg)
    }

    /// Another node's retained message (or its removal, with an empty payload).
    fn on_retained_notice(
        &mut self,
        subject: &str,
        headers: &[(ByteString, ByteString)],
        payload: Bytes,
    ) {
        let Ok(topic) = subject::subject_to_topic_name(subject) else {
            self.stats.unknown_inputs += 1;
            return;
        };
        if payload.is_empty() {
            self.retained.remove(&topic);
            return;
        }
        let qos = published_qos(headers).unwrap_or(QoS::AtMostOnce);
        let Some((properties, expires_at)) = self.v5_fields_from_headers(headers) else {
            return;
        };
        self.keep_retained(topic, payload, qos, properties, expires_at);
    }

    /// Another node took `account\nclient id` over: its connection here closes (no will, as
    /// for a takeover), and the session leaves this node's memory, not the store, which the
    /// other node now owns. A connection here that is newer than the notice's `order` (stamp,
    /// node) stays: the notice arrived late, and this node announces its connection again, so
    /// that the other node closes its own even if it missed the first notice. A connection
    /// here whose session is still being read is refused
    /// when the notice is newer (server unavailable; the client's retry is the newest connect).
    /// A notice without an order (an older jetmq) counts as the newest.
    /// With `discard`, an administrator deleted the session: it ends here as
    /// [`Input::DiscardSession`](super::Input::DiscardSession) ends it.
    fn on_connect_notice(&mut self, notice: ConnectNotice, out: &mut Outbox) {
        let (key, order) = match notice {
            ConnectNotice::Discarded { key } => {
                self.discard_here(&session_key(key), out);
                return;
            }
            ConnectNotice::Connected { key, order } => (session_key(key), order),
        };
        if let Some((stamp, _)) = order {
            self.clock.observe(stamp);
        }
        let loading = self.loading.get(&key).copied();
        let session = self.session_id(&key);
        // The stamp of this node's connection for the client, if it has one.
        let here = match loading {
            Some(conn) => self.loading_connect(conn).map(|l| l.stamp),
            None => session
                .and_then(|id| self.sessions.get(id))
                .filter(|s| s.conn.is_some())
                .map(|s| s.connect_stamp),
        };
        if let (Some(here), Some(theirs)) = (here, order) {
            if self.clock.later_here(here, theirs) {
                // The other node may have missed this node's notice: it hears it again and
                // closes its older connection.
                self.stats.late_connect_notices += 1;
                self.announce_connect(&key, here, out);
                return;
            }
        }
        if let Some(conn) = loading {
            // Not answered yet: refused, as when its session could not be read.
            let version = self.conns.get(&conn).map(|c| c.version);
            if let Some(version) = version {
                self.refuse(conn, version, ConnectReason::ServerUnavailable, out);
            }
        }
        if let Some(session) = session {
            self.drop_taken_over(session, out);
        }
    }
}

/// How a connect notice names the session of `key`.
fn notice_key(key: &SessionKey) -> NoticeKey {
    NoticeKey {
        account: key.account.clone(),
        client_id: key.client_id.clone(),
    }
}

/// The session a connect notice names.
fn session_key(key: NoticeKey) -> SessionKey {
    SessionKey {
        account: key.account,
        client_id: key.client_id,
    }
}

/// The NATS subjects a subscription to `filter` is bridged through: its subjects but those
/// that can only be system subjects (a `$SYS/` filter stays an MQTT one).
fn bridged_subjects(filter: &crate::topic::TopicFilter) -> impl Iterator<Item = ByteString> {
    subject::filter_subjects(filter)
        .filter(|s| !super::bridge_policy::is_system_pattern(s))
        .map(ByteString::from)
}

/// The QoS an MQTT client published a message with (`Nmqtt-Pub`).
fn published_qos(headers: &[(ByteString, ByteString)]) -> Option<QoS> {
    header(headers, records::PUB_HEADER)
        .and_then(|v| v.parse::<u8>().ok())
        .and_then(QoS::from_u8)
}
