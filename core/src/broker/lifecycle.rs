//! Connection and session lifecycle: accepting, CONNECT and authentication, keep-alive,
//! takeover, DISCONNECT and every other way a connection ends, wills and session expiry.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;

use super::connection::{Connection, Loading, Phase, Pipeline, Reply, Work};
use super::io::{Action, CloseReason, ConnId, ConnInfo, Notice, Outbox};
use super::io::{SessionKey, DEFAULT_ACCOUNT};
use super::message::{Message, Will};
use super::requests::RequestOwner;
use super::session::{InflightState, PendingWill, Session};
use super::sessions::SessionId;
use super::topic_alias::OutboundAliases;
use super::{Broker, BrokerConfig, Timer};
use crate::codec::{
    ConnAck, Connect, ConnectReason, DecodeError, Disconnect, DisconnectReason, Packet,
    ProtocolVersion, PublishProperties, QoS,
};
use crate::js::{records, StoreError, StoreReply, StoreRequest, Stream};
use crate::topic::TopicName;

impl Broker {
    pub(super) fn on_accepted(&mut self, conn: ConnId, info: ConnInfo, out: &mut Outbox) {
        if self.conns.contains_key(&conn) {
            // A reused number is the shell's bug; keep the existing connection.
            self.unknown_conn(conn, out);
            return;
        }
        let now = self.now.instant;
        let deadline = now.saturating_add(self.config.connect_timeout);
        let c = Connection::new(info, now, deadline, self.config.max_packet_size);
        self.conns.insert(conn, c);
        self.schedule_conn(conn, deadline);
    }

    pub(super) fn on_received(&mut self, conn: ConnId, data: BytesMut, out: &mut Outbox) {
        let now = self.now.instant;
        let Some(c) = self.conns.get_mut(&conn) else {
            self.unknown_conn(conn, out);
            return;
        };
        if !c.is_open() {
            return;
        }
        c.last_activity = now;
        if c.inbuf.is_empty() {
            c.inbuf = data;
        } else {
            c.inbuf.extend_from_slice(&data);
        }
        let waiting = matches!(
            c.phase,
            Phase::Authenticating(_) | Phase::Loading(_) | Phase::Held { .. }
        );
        if waiting && c.inbuf.len() >= WAITING_INBUF {
            // What a client sends behind a CONNECT that waits is kept, up to a point.
            self.conns.pause(conn, out);
        }
        self.process_inbuf(conn, out);
    }

    /// After a CONNECT stopped waiting: reads again from the connection if its reading was
    /// paused meanwhile, and handles the packets the client sent behind the CONNECT
    /// [MQTT-3.1.4].
    pub(super) fn resume_after_connect(&mut self, conn: ConnId, out: &mut Outbox) {
        let limit = self.config.max_pending_per_connection / 2;
        self.conns.unpause(conn, limit, out);
        self.process_inbuf(conn, out);
    }

    /// Decodes and handles the buffered packets of `conn` until it needs more bytes, must
    /// wait (authentication, too many pending writes) or is closed.
    pub(super) fn process_inbuf(&mut self, conn: ConnId, out: &mut Outbox) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.read_paused
                || !matches!(
                    c.phase,
                    Phase::AwaitingConnect { .. }
                        | Phase::AuthExchange(_)
                        | Phase::Connected { .. }
                )
            {
                return;
            }
            let first = c.inbuf.first().copied();
            if matches!(c.phase, Phase::AwaitingConnect { .. })
                && first.is_some_and(|b| b != CONNECT_BYTE)
            {
                // [MQTT-3.1.0-1]: the first packet must be a CONNECT; anything else is refused
                // from its first byte, before its body is buffered.
                let reason = DisconnectReason::ProtocolError;
                self.close(conn, CloseReason::ProtocolViolation(reason), false, out);
                return;
            }
            match c.decoder.decode(&mut c.inbuf) {
                Ok(None) => {
                    if c.inbuf.is_empty() {
                        // Let go of the shell's read buffer: idle connections hold none.
                        c.inbuf = BytesMut::new();
                    }
                    return;
                }
                Ok(Some(packet)) => self.on_packet(conn, packet, out),
                Err(err) => {
                    self.on_decode_error(conn, &err, out);
                    return;
                }
            }
        }
    }

    fn on_decode_error(&mut self, conn: ConnId, err: &DecodeError, out: &mut Outbox) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.phase, Phase::AwaitingConnect { .. }) {
            if matches!(err, DecodeError::UnsupportedProtocolVersion(_)) {
                // [MQTT-3.1.2-2]: return code 1 in the 3.1.1 layout, which every version reads.
                let reason = ConnectReason::UnsupportedProtocolVersion;
                Packet::ConnAck(Box::new(ConnAck::new(reason, false)))
                    .encode(ProtocolVersion::V311, &mut c.out);
                self.mark_dirty(conn);
                self.close(conn, CloseReason::ConnectRefused(reason), false, out);
            } else {
                let reason = err.disconnect_reason();
                self.close(conn, CloseReason::ProtocolViolation(reason), false, out);
            }
            return;
        }
        self.protocol_error(conn, err.disconnect_reason(), out);
    }

    /// Ends a connection because the client broke a rule: DISCONNECT with `reason` for 5.0
    /// clients, then close; the will is published.
    pub(super) fn protocol_error(
        &mut self,
        conn: ConnId,
        reason: DisconnectReason,
        out: &mut Outbox,
    ) {
        out.push(Action::Notice(Notice::ProtocolError { conn, reason }));
        self.send_disconnect(conn, reason);
        self.close(conn, CloseReason::ProtocolViolation(reason), true, out);
    }

    /// Sends a DISCONNECT to a connected 5.0 client.
    pub(super) fn send_disconnect(&mut self, conn: ConnId, reason: DisconnectReason) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.version.is_v5() && matches!(c.phase, Phase::Connected { .. }) {
            let mut d = Disconnect::new(reason);
            // A Reason String is always allowed on DISCONNECT [MQTT-3.1.2-29].
            d.properties.reason_string = Some(ByteString::from_static(reason.description()));
            Packet::Disconnect(Box::new(d)).encode(c.version, &mut c.out);
            self.mark_dirty(conn);
        }
    }

    fn on_packet(&mut self, conn: ConnId, packet: Packet, out: &mut Outbox) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let session = match c.phase {
            Phase::AwaitingConnect { .. } => {
                match packet {
                    Packet::Connect(connect) => self.on_connect(conn, connect, out),
                    // [MQTT-3.1.0-1]: anything else first closes without CONNACK.
                    _ => self.close(
                        conn,
                        CloseReason::ProtocolViolation(DisconnectReason::ProtocolError),
                        false,
                        out,
                    ),
                }
                return;
            }
            Phase::AuthExchange(_) => {
                self.on_auth_exchange_packet(conn, packet, out);
                return;
            }
            Phase::Connected { session } => session,
            Phase::Authenticating(_) | Phase::Loading(_) | Phase::Held { .. } | Phase::Closing => {
                return
            }
        };
        match packet {
            // [MQTT-3.1.0-2]: a second CONNECT is a protocol error.
            Packet::Connect(_) => self.protocol_error(conn, DisconnectReason::ProtocolError, out),
            Packet::Publish(p) => self.on_publish(conn, session, p, out),
            Packet::PubAck(ack) => {
                self.finish_outbound(session, ack.packet_id, InflightState::PubAck, out);
            }
            Packet::PubRec(ack) => self.on_pubrec(conn, session, &ack, out),
            Packet::PubRel(ack) => self.on_pubrel(conn, session, ack.packet_id, out),
            Packet::PubComp(ack) => {
                self.finish_outbound(session, ack.packet_id, InflightState::PubComp, out);
            }
            Packet::Subscribe(s) => self.on_subscribe(conn, session, s, out),
            Packet::Unsubscribe(u) => self.on_unsubscribe(conn, session, u, out),
            Packet::PingReq => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    Packet::PingResp.encode(c.version, &mut c.out);
                    self.mark_dirty(conn);
                }
            }
            Packet::Disconnect(d) => self.on_disconnect(conn, session, &d, out),
            Packet::Auth(auth) => self.on_reauth_packet(conn, &auth, out),
            // The decoder refuses server-to-client packets from a client.
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.protocol_error(conn, DisconnectReason::ProtocolError, out);
            }
        }
    }

    /// Sends CONNACK with a refusal and closes.
    pub(super) fn refuse(
        &mut self,
        conn: ConnId,
        version: ProtocolVersion,
        reason: ConnectReason,
        out: &mut Outbox,
    ) {
        if let Some(c) = self.conns.get_mut(&conn) {
            let mut ack = ConnAck::new(reason, false);
            if version.is_v5() {
                ack.properties.reason_string = Some(ByteString::from_static(reason.description()));
            }
            Packet::ConnAck(Box::new(ack)).encode(version, &mut c.out);
            self.mark_dirty(conn);
        }
        self.close(conn, CloseReason::ConnectRefused(reason), false, out);
    }

    /// A CONNECT: refused (or redirected) when the broker will not take it, given a client
    /// identifier, then handed to the shell to authenticate or accepted.
    fn on_connect(&mut self, conn: ConnId, connect: Box<Connect>, out: &mut Outbox) {
        let version = connect.protocol;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.version = version;
        }
        if self.restoring.is_some() {
            self.refuse(conn, version, ConnectReason::ServerUnavailable, out);
            return;
        }
        if self.config.redirect.is_some() {
            self.redirect(conn, version, out);
            return;
        }
        if let Some(reason) = self.connect_refusal(&connect) {
            self.refuse(conn, version, reason, out);
            return;
        }
        let (client_id, assigned) = match self.client_id_for(&connect) {
            Ok(id) => id,
            Err(reason) => {
                self.refuse(conn, version, reason, out);
                return;
            }
        };
        if self.config.authenticate {
            self.start_authentication(conn, connect, client_id, assigned, out);
            return;
        }
        let account = ByteString::from_static(DEFAULT_ACCOUNT);
        self.accept(conn, connect, client_id, assigned, account, out);
    }

    /// Sends the CONNACK that sends the client to another server [MQTT-4.11], and closes.
    fn redirect(&mut self, conn: ConnId, version: ProtocolVersion, out: &mut Outbox) {
        let Some(redirect) = &self.config.redirect else {
            return;
        };
        let reason = if redirect.permanent {
            ConnectReason::ServerMoved
        } else {
            ConnectReason::UseAnotherServer
        };
        let mut ack = ConnAck::new(reason, false);
        if version.is_v5() {
            ack.properties.server_reference = Some(redirect.server_reference.clone());
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            Packet::ConnAck(Box::new(ack)).encode(version, &mut c.out);
            self.mark_dirty(conn);
        }
        self.close(conn, CloseReason::ConnectRefused(reason), false, out);
    }

    /// Why a CONNECT is refused before its client identifier is looked at, if it is: MQTT 3.1
    /// when not accepted, enhanced authentication without a shell that decides on it, or a
    /// will the broker would not publish (QoS, topic, user properties, payload format).
    fn connect_refusal(&mut self, connect: &Connect) -> Option<ConnectReason> {
        if connect.protocol == ProtocolVersion::V31 && !self.config.accept_mqtt31 {
            return Some(ConnectReason::UnsupportedProtocolVersion);
        }
        if connect.properties.authentication_method.is_some() && !self.config.authenticate {
            // Enhanced authentication needs a shell that decides on it.
            return Some(ConnectReason::BadAuthenticationMethod);
        }
        let will = connect.will.as_ref()?;
        if will.qos > self.config.max_qos {
            return Some(ConnectReason::QosNotSupported);
        }
        let levels_ok = TopicName::new(will.topic.clone())
            .is_ok_and(|t| t.levels().count() <= self.config.max_topic_levels);
        if !levels_ok {
            return Some(ConnectReason::TopicNameInvalid);
        }
        if !self
            .config
            .user_properties_fit(&will.properties.user_properties)
        {
            self.stats.oversized_properties += 1;
            return Some(ConnectReason::QuotaExceeded);
        }
        let utf8 =
            will.properties.payload_format_indicator == Some(crate::codec::PayloadFormat::Utf8);
        // A will payload that is not the UTF-8 its indicator says: CONNACK 0x99 (§3.1.3.2).
        (utf8 && std::str::from_utf8(&will.payload).is_err())
            .then_some(ConnectReason::PayloadFormatInvalid)
    }

    /// The client identifier a CONNECT's session goes by and whether the broker assigned it
    /// (a 5.0 client then learns it); an empty one is made up from the seeded generator.
    fn client_id_for(&mut self, connect: &Connect) -> Result<(ByteString, bool), ConnectReason> {
        let mut client_id = self.client_id_of(connect);
        // A v5 client that sent none learns the identifier it got (Assigned Client Identifier).
        let mut assigned = !client_id.is_empty() && connect.client_id.is_empty();
        if client_id.is_empty() {
            if !connect.protocol.is_v5() && !connect.clean_start {
                // [MQTT-3.1.3-8]: an empty id needs a clean session in 3.1.1.
                return Err(ConnectReason::ClientIdentifierNotValid);
            }
            client_id = format!("jetmq-{:016x}", self.rng.next_u64()).into();
            assigned = true;
        }
        if client_id.len() > self.config.max_client_id_len {
            return Err(ConnectReason::ClientIdentifierNotValid);
        }
        Ok((client_id, assigned))
    }

    /// The client identifier a CONNECT's session goes by: its user name with
    /// `client_id_from_username` (when it has one), else the one it sent (maybe empty).
    fn client_id_of(&self, connect: &Connect) -> ByteString {
        match &connect.username {
            Some(user) if self.config.client_id_from_username && !user.is_empty() => user.clone(),
            _ => connect.client_id.clone(),
        }
    }

    /// An accepted CONNECT: in a fleet, the other nodes hear of it, and a session to resume
    /// that is not connected here is read from the store first; then it is bound.
    pub(super) fn accept(
        &mut self,
        conn: ConnId,
        connect: Box<Connect>,
        client_id: ByteString,
        assigned: bool,
        account: ByteString,
        out: &mut Outbox,
    ) {
        let key = SessionKey {
            account,
            client_id: super::detach(&client_id),
        };
        if self.takeovers.exceeded(&key, self.now.instant) {
            // Flapping: held a moment, then refused (the connection that is in stays).
            let deadline = self.now.instant.saturating_add(TAKEOVER_HOLD);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.phase = Phase::Held { deadline };
                self.schedule_conn(conn, deadline);
            }
            return;
        }
        let owner = self.owner_of(&connect);
        if self.owned_by_another(&key, owner.as_ref()) {
            // Another user's session: neither resumed nor taken over (nor counted towards its
            // owner's takeover limit).
            let version = connect.protocol;
            self.refuse(conn, version, ConnectReason::NotAuthorized, out);
            return;
        }
        let new_here = self.session_id(&key).is_none();
        if new_here && !self.sessions.admits(&self.config, owner.as_ref()) {
            // No room for another session (resuming or replacing one still works).
            self.stats.sessions_refused += 1;
            let version = connect.protocol;
            self.refuse(conn, version, ConnectReason::QuotaExceeded, out);
            return;
        }
        if self.shares_a_record(&key) {
            // Its record's subject is another client's (a hash collision): refused as the
            // NATS server refuses it, or one would overwrite the other's stored session.
            let version = connect.protocol;
            self.refuse(conn, version, ConnectReason::ClientIdentifierNotValid, out);
            return;
        }
        let stamp = self.connect_stamp();
        self.announce_connect(&key, stamp, out);
        let connected_here = self
            .session_id(&key)
            .and_then(|s| self.sessions.get(s))
            .is_some_and(|s| s.conn.is_some());
        if self.config.cluster.is_fleet() && !connected_here {
            // A clean start reads what it ends: the session may be stored by another node.
            self.load_session(conn, connect, key, assigned, stamp, out);
        } else {
            self.bind(conn, connect, key, assigned, (stamp, None), out);
        }
    }

    /// The user a CONNECT's session belongs to: its authenticated user name (`None` without
    /// authentication, where user names are only claims, and for anonymous clients).
    fn owner_of(&self, connect: &Connect) -> Option<ByteString> {
        self.config
            .authenticate
            .then(|| connect.username.clone())
            .flatten()
    }

    /// Whether `key`'s session (here) belongs to a user other than `owner`.
    fn owned_by_another(&self, key: &SessionKey, owner: Option<&ByteString>) -> bool {
        self.session_id(key)
            .and_then(|id| self.sessions.get(id))
            .is_some_and(|s| s.owner.as_deref() != owner)
    }

    /// Why a CONNECT cannot use the stored record a load read, if it cannot: the record is
    /// another client's under the same hash (refused as the NATS server refuses it: its
    /// session must be neither resumed nor ended by this one), or another user's session (a
    /// record the NATS server wrote names no owner).
    fn foreign_record(
        &self,
        record: Option<&crate::js::StoredMessage>,
        key: &SessionKey,
        connect: &Connect,
    ) -> Option<ConnectReason> {
        let stored = records::SessionRecord::from_json(&record?.payload)?;
        if stored.id != key.client_id.as_ref() {
            return Some(ConnectReason::ClientIdentifierNotValid);
        }
        let owner = self.owner_of(connect);
        (stored.jetmq.level != 0 && stored.jetmq.owner.as_deref() != owner.as_deref())
            .then_some(ConnectReason::NotAuthorized)
    }

    /// Whether a persistent session of another client identifier has the record subject
    /// `key`'s session would have.
    fn shares_a_record(&self, key: &SessionKey) -> bool {
        self.sessions.sharing_record(key).any(|s| s.persistent)
    }

    /// Reads a session to resume (or, for a clean start, to end) from the store: its record,
    /// what its consumer holds (not for a clean start) and its QoS 2 state in both directions.
    /// The record is read even when the session is in memory: a connect through another node
    /// that this node did not hear of makes the copy here stale. The connection waits in
    /// [`Phase::Loading`].
    fn load_session(
        &mut self,
        conn: ConnId,
        connect: Box<Connect>,
        key: SessionKey,
        assigned: bool,
        stamp: u64,
        out: &mut Outbox,
    ) {
        let default_deadline = self.now.instant.saturating_add(self.config.connect_timeout);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let deadline = match c.phase {
            Phase::AwaitingConnect { deadline } => deadline,
            ref phase => phase
                .connect_wait()
                .map_or(default_deadline, |(deadline, _)| deadline),
        };
        let clean_start = connect.clean_start;
        let requests = [
            records::session_read(&key.client_id),
            StoreRequest::Pending {
                consumer: records::consumer_name(&key.client_id),
                limit: self.config.max_queued_messages,
            },
            // Inbound QoS 2 messages acknowledged with PUBREC (through any node) and not yet
            // released: a resent PUBLISH is then known as a duplicate, its PUBREL as known.
            records::qos2_list(&key.client_id),
            // Outbound QoS 2 flows waiting for PUBCOMP: their PUBREL is sent again.
            records::pubrel_list(&key.client_id),
        ];
        // A clean start has no use for the consumer's messages (the consumer is deleted).
        let requests: Vec<StoreRequest> = requests
            .into_iter()
            .filter(|r| !(clean_start && matches!(r, StoreRequest::Pending { .. })))
            .collect();
        self.loading.insert(key.clone(), conn);
        c.phase = Phase::Loading(Box::new(Loading {
            deadline,
            connect,
            key,
            assigned,
            stamp,
            waiting: u8::try_from(requests.len()).unwrap_or(u8::MAX),
            record: None,
            pending: Vec::new(),
            failed: false,
        }));
        self.schedule_conn(conn, deadline);
        for request in requests {
            self.request(request, RequestOwner::Load { conn }, out);
        }
    }

    /// A store reply for a session being loaded; the last one binds the connection (or
    /// refuses it when a read failed).
    pub(super) fn on_loaded(
        &mut self,
        conn: ConnId,
        reply: Result<StoreReply, StoreError>,
        out: &mut Outbox,
    ) {
        let Some(loading) = self.load_answered(conn, reply) else {
            return;
        };
        let Loading {
            connect,
            key,
            assigned,
            stamp,
            record,
            pending,
            failed,
            ..
        } = *loading;
        if self.loading.get(&key) == Some(&conn) {
            self.loading.remove(&key);
        }
        // A clean start needs nothing from the store: while it cannot be read (NATS away),
        // clients still connect (QoS 0 keeps flowing), and a stored session is left as it is.
        if failed && !connect.clean_start {
            let reason = ConnectReason::ServerUnavailable;
            self.refuse(conn, connect.protocol, reason, out);
            return;
        }
        if let Some(reason) = self.foreign_record(record.as_ref(), &key, &connect) {
            self.refuse(conn, connect.protocol, reason, out);
            return;
        }
        // The record this connect's record is written over (0: there was none).
        let read_seq = record.as_ref().map_or(0, |r| r.seq);
        let stamp = match &record {
            Some(record) => self.order_after_record(&key, record, stamp, out),
            None => stamp,
        };
        if connect.clean_start {
            // A copy of the session here ends in `bind`; what the store holds ends now.
            self.end_stored_session(&key, record.as_ref(), &pending, out);
        } else {
            self.take_loaded_session(&key, record, &pending, out);
        }
        self.bind(conn, connect, key, assigned, (stamp, Some(read_seq)), out);
        self.resume_after_connect(conn, out);
    }

    /// Counts a store reply for the session `conn` is loading; once the last one came, the
    /// load is over and handed back (the connection leaves [`Phase::Loading`]).
    fn load_answered(
        &mut self,
        conn: ConnId,
        reply: Result<StoreReply, StoreError>,
    ) -> Option<Box<Loading>> {
        let c = self.conns.get_mut(&conn)?;
        let Phase::Loading(loading) = &mut c.phase else {
            return None;
        };
        loading.waiting = loading.waiting.saturating_sub(1);
        match reply {
            Ok(StoreReply::Message(m)) => loading.record = m,
            Ok(StoreReply::Messages(m)) => loading.pending.extend(m),
            Ok(_) => {}
            Err(_) => loading.failed = true,
        }
        if loading.waiting > 0 {
            return None;
        }
        match std::mem::replace(&mut c.phase, Phase::Closing) {
            Phase::Loading(loading) => Some(loading),
            _ => None,
        }
    }

    /// The stamp a connect of `key` stamped `stamp` goes by once the stored `record` was read:
    /// a later one, announced again, when the record's connect is stamped later (another
    /// node's clock runs ahead), so the record it writes and its notice order after the
    /// stored one. A copy of the session here that a later connect elsewhere left behind
    /// gives way to the record.
    fn order_after_record(
        &mut self,
        key: &SessionKey,
        record: &crate::js::StoredMessage,
        mut stamp: u64,
        out: &mut Outbox,
    ) -> u64 {
        let stored = records::record_stamp(record);
        self.clock.observe(stored);
        if stored >= stamp {
            stamp = self.connect_stamp();
            self.announce_connect(key, stamp, out);
        }
        if let Some(id) = self.session_id(key) {
            let copy = self.sessions.get(id).map(|s| s.connect_stamp);
            if copy.is_some_and(|copy| stored > copy) {
                self.remove_session(id, out);
            }
        }
        stamp
    }

    /// Takes what a load read for a resumed session of `key`: its record when the session is
    /// not held here, the messages its consumer handed out, its QoS 2 state in both
    /// directions; its catch-up starts.
    fn take_loaded_session(
        &mut self,
        key: &SessionKey,
        record: Option<crate::js::StoredMessage>,
        pending: &[crate::js::StoredMessage],
        out: &mut Outbox,
    ) {
        let mut by_consumer = BTreeMap::new();
        let mut by_hash16 = BTreeMap::new();
        if let Some(record) = record.filter(|_| self.session_id(key).is_none()) {
            if !self.restore_session(&record, &mut by_consumer, &mut by_hash16) {
                out.push(Action::Notice(Notice::BadRecord {
                    subject: record.subject.clone(),
                }));
            }
        }
        let Some(id) = self.session_id(key) else {
            for message in pending.iter().filter(|m| m.stream == Stream::Messages) {
                self.restore_message(message, &by_consumer, true, out);
            }
            return;
        };
        if let Some(s) = self.sessions.get(id) {
            by_consumer.insert(s.consumer(), id);
        }
        let messages = pending.iter().filter(|m| m.stream == Stream::Messages);
        for message in messages.clone() {
            self.restore_message(message, &by_consumer, true, out);
        }
        // The session's QoS 2 state, by packet identifier.
        let hash16 = records::client_hash16(&key.client_id);
        let qos2_ids = |stream: Stream| -> Vec<u16> {
            pending
                .iter()
                .filter(|m| m.stream == stream)
                .filter_map(records::read_qos2)
                .filter(|(hash, _)| *hash == hash16)
                .map(|(_, pid)| pid)
                .collect()
        };
        let (inbound, outbound) = (qos2_ids(Stream::Qos2In), qos2_ids(Stream::PubRel));
        if let Some(s) = self.sessions.get_mut(id) {
            s.inbound_qos2.extend(inbound);
        }
        self.restore_pubrels(id, outbound);
        self.schedule_catch_up(id, messages.map(|m| m.seq).collect());
    }

    /// A clean start through a fleet node ends the stored session it read: the record and QoS 2
    /// state read are deleted by sequence (so a later connect's writes stay) and the consumer
    /// with them (its messages were for the session that ends).
    fn end_stored_session(
        &mut self,
        key: &SessionKey,
        record: Option<&crate::js::StoredMessage>,
        loaded: &[crate::js::StoredMessage],
        out: &mut Outbox,
    ) {
        let hash16 = records::client_hash16(&key.client_id);
        let qos2 = loaded
            .iter()
            .filter(|m| records::read_qos2(m).is_some_and(|(hash, _)| hash == hash16));
        let mut ends: Vec<StoreRequest> = record
            .into_iter()
            .chain(qos2)
            .map(|m| StoreRequest::Delete {
                stream: m.stream,
                seq: m.seq,
            })
            .collect();
        if record.is_some() {
            ends.push(records::consumer_delete(&key.client_id));
        }
        for request in ends {
            self.request(request, RequestOwner::Background, out);
        }
    }

    /// Binds an accepted CONNECT to its session (new, resumed or taken over) and sends CONNACK.
    /// `stamp` orders the connect; `read_seq` is the stored record a fleet load read, which the
    /// session's record is written over.
    fn bind(
        &mut self,
        conn: ConnId,
        mut connect: Box<Connect>,
        key: SessionKey,
        assigned: bool,
        (stamp, read_seq): (u64, Option<u64>),
        out: &mut Outbox,
    ) {
        let (asked, granted) = self.granted_expiry(&connect);
        let owner = self.owner_of(&connect);
        let (session, session_present) = self.session_for(key, &connect, owner, out);
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        s.conn = Some(conn);
        s.connect_stamp = stamp;
        s.disconnected_at = None;
        s.version = connect.protocol;
        let was_persistent = s.persistent;
        (s.persistent, s.expiry) = session_expiry(granted);
        let persistent = s.persistent;
        if session_present {
            self.drop_unpermitted_subscriptions(conn, session);
        }
        if persistent || was_persistent {
            self.save_session(session, read_seq, out);
        }
        let publisher = self.sessions.get(session).map(|s| s.uid);
        // The will topic was validated in `on_connect`.
        let will = connect.will.take().and_then(|w| will_of(&w, publisher));
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.phase = Phase::Connected { session };
        c.will = will;
        let server_keep_alive = self.apply_connect_properties(conn, &connect);
        let expiry_told = (granted != asked).then_some(granted);
        let ack = self.connack(
            conn,
            session,
            &connect,
            assigned,
            session_present,
            (server_keep_alive, expiry_told),
        );
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        Packet::ConnAck(Box::new(ack)).encode(connect.protocol, &mut c.out);
        let deadline = c.keep_alive.map(|ka| c.last_activity.saturating_add(ka));
        self.mark_dirty(conn);
        if let Some(at) = deadline {
            self.schedule_conn(conn, at);
        }
        self.resume_session(session, out);
    }

    /// The Session Expiry Interval a CONNECT asked for (3.1.1: none, or the longest for a
    /// persistent session) and the one it is granted, capped by `max_session_expiry`.
    fn granted_expiry(&self, connect: &Connect) -> (u32, u32) {
        let max_expiry = self.config.max_session_expiry;
        if connect.protocol.is_v5() {
            let asked = connect.properties.session_expiry_interval.unwrap_or(0);
            (asked, asked.min(max_expiry))
        } else if connect.clean_start {
            (0, 0)
        } else {
            (max_expiry, max_expiry)
        }
    }

    /// The session a CONNECT of `key` binds to, and whether it is resumed (session present):
    /// a persistent session is resumed unless the CONNECT starts clean; any other is ended
    /// and a new one (of `owner`) made. A connection bound to it is taken over.
    fn session_for(
        &mut self,
        key: SessionKey,
        connect: &Connect,
        owner: Option<ByteString>,
        out: &mut Outbox,
    ) -> (SessionId, bool) {
        let version = connect.protocol;
        let Some(existing) = self.session_id(&key) else {
            return (self.sessions.insert(key, version, owner), false);
        };
        // A session that ends with its connection cannot be resumed.
        let resume =
            !connect.clean_start && self.sessions.get(existing).is_some_and(|s| s.persistent);
        if let Some(old) = self.sessions.get(existing).and_then(|s| s.conn) {
            self.count_takeover(&key, out);
            let ending = Ending::TakenOver { resumed: resume };
            self.close_inner(old, CloseReason::SessionTakenOver, true, ending, out);
        }
        if !resume {
            self.discard_session(existing, out);
            return (self.sessions.insert(key, version, owner), false);
        }
        if let Some(s) = self.sessions.get_mut(existing) {
            // [MQTT-3.1.3-9]: a new connection in time cancels a delayed will.
            s.pending_will = None;
            s.generation += 1;
        }
        (existing, true)
    }

    /// Takes what a CONNECT says about the connection itself (Receive Maximum, Request
    /// Problem Information, Maximum Packet Size, Topic Alias Maximum, keep-alive); returns
    /// the Server Keep Alive to tell the client, when the broker chose another keep-alive.
    fn apply_connect_properties(&mut self, conn: ConnId, connect: &Connect) -> Option<u16> {
        let c = self.conns.get_mut(&conn)?;
        let props = &connect.properties;
        if let Some(rm) = props.receive_maximum {
            c.send_window = rm.get();
        }
        c.problem_info = props.request_problem_information != Some(false);
        if let Some(mps) = props.maximum_packet_size {
            c.max_send_size = mps.get();
        }
        if let Some(max) = props.topic_alias_maximum {
            let max = max.min(self.config.outbound_topic_aliases);
            if max > 0 {
                c.extensions().outbound_aliases = OutboundAliases::new(max);
            }
        }
        let (keep_alive, server_keep_alive) =
            negotiate_keep_alive(&self.config, connect.protocol, connect.keep_alive);
        // No keep-alive (0) still ends a connection silent for longer than `max_idle`.
        c.keep_alive = match keep_alive {
            0 => self.config.max_idle,
            secs => Some(Duration::from_millis(u64::from(secs) * 1500)),
        };
        server_keep_alive
    }

    /// The successful CONNACK of `conn`, bound to `session`; `told` is the Server Keep Alive
    /// and the Session Expiry Interval to tell the client, if any (MQTT 5.0).
    fn connack(
        &mut self,
        conn: ConnId,
        session: SessionId,
        connect: &Connect,
        assigned: bool,
        session_present: bool,
        (server_keep_alive, session_expiry): (Option<u16>, Option<u32>),
    ) -> ConnAck {
        let mut ack = ConnAck::new(ConnectReason::Success, session_present);
        if !connect.protocol.is_v5() {
            return ack;
        }
        let p = &mut ack.properties;
        if assigned {
            p.assigned_client_identifier =
                self.sessions.get(session).map(|s| s.key.client_id.clone());
        }
        p.receive_maximum = std::num::NonZeroU16::new(self.config.receive_maximum);
        p.maximum_packet_size = std::num::NonZeroU32::new(self.config.max_packet_size);
        if self.config.max_qos < QoS::ExactlyOnce {
            p.maximum_qos = Some(self.config.max_qos);
        }
        p.topic_alias_maximum =
            (self.config.topic_alias_maximum > 0).then_some(self.config.topic_alias_maximum);
        p.server_keep_alive = server_keep_alive;
        if let (Some(method), Some(c)) = (
            &connect.properties.authentication_method,
            self.conns.get_mut(&conn),
        ) {
            // [MQTT-4.12.0-5]: the successful CONNACK repeats the Authentication Method.
            p.authentication_method = Some(method.clone());
            let extensions = c.extensions();
            p.authentication_data = extensions.auth_reply.take();
            extensions.auth_method = Some(method.clone());
        }
        // The client learns when the broker keeps its session for less than it asked.
        p.session_expiry_interval = session_expiry;
        ack
    }

    fn on_disconnect(
        &mut self,
        conn: ConnId,
        session: SessionId,
        d: &Disconnect,
        out: &mut Outbox,
    ) {
        if let Some(expiry) = d.properties.session_expiry_interval {
            let Some(s) = self.sessions.get_mut(session) else {
                return;
            };
            if !s.persistent && expiry != 0 {
                // §3.14.2.2.2: a session that had expiry 0 cannot be given one at DISCONNECT.
                self.protocol_error(conn, DisconnectReason::ProtocolError, out);
                return;
            }
            let was_persistent = s.persistent;
            (s.persistent, s.expiry) = session_expiry(expiry.min(self.config.max_session_expiry));
            if was_persistent && !s.persistent {
                // It ends with this connection now: what the store keeps of it goes, or a
                // restart would bring it back.
                self.save_session(session, None, out);
            }
        }
        // [MQTT-3.14.4-3]: a normal DISCONNECT discards the will; 0x04 keeps it.
        let publish_will = d.reason == DisconnectReason::DisconnectWithWillMessage;
        self.close(conn, CloseReason::ClientDisconnect, publish_will, out);
    }

    pub(super) fn on_peer_closed(&mut self, conn: ConnId, out: &mut Outbox) {
        if !self.conns.contains_key(&conn) {
            // Closing a connection the core already closed is the normal end of it.
            return;
        }
        self.close(conn, CloseReason::PeerClosed, true, out);
    }

    /// Closes `conn`: flushes what was written to it, tells the shell, unbinds the session and
    /// publishes the will when `publish_will`.
    pub(super) fn close(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        publish_will: bool,
        out: &mut Outbox,
    ) {
        self.close_inner(conn, reason, publish_will, Ending::Normal, out);
    }

    fn close_inner(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        publish_will: bool,
        ending: Ending,
        out: &mut Outbox,
    ) {
        if reason == CloseReason::SessionTakenOver {
            self.send_disconnect(conn, DisconnectReason::SessionTakenOver);
        }
        self.flush_conn(conn, out);
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Phase::Loading(l) = &c.phase {
            if self.loading.get(&l.key) == Some(&conn) {
                self.loading.remove(&l.key);
            }
        }
        if reason != CloseReason::PeerClosed {
            out.push(Action::Close { conn, reason });
        }
        let Some(session) = c.session() else {
            return;
        };
        self.forget_unaccepted(session, &c.pipeline, out);
        let will = if publish_will { c.will } else { None };
        self.unbind(session, will, ending, out);
    }

    /// QoS 2 publishes of `session` still waiting in `pipeline` for their writes were never
    /// accepted: their identifiers are forgotten, or the client's resend would be taken for a
    /// duplicate.
    fn forget_unaccepted(&mut self, session: SessionId, pipeline: &Pipeline, out: &mut Outbox) {
        let unaccepted: Vec<u16> = pipeline
            .entries
            .iter()
            .filter_map(|p| match p.work {
                Work::Publish {
                    reply: Reply::PubRec(pid),
                    ..
                } => Some(pid.get()),
                _ => None,
            })
            .collect();
        for pid in unaccepted {
            self.forget_inbound_qos2(session, pid, out);
        }
    }

    /// `session`'s connection ended (`ending`), leaving `will` to publish: the session goes
    /// offline, its will is published or waits for its delay, and the session ends, starts
    /// expiring, or is left to the connection that took it over.
    fn unbind(
        &mut self,
        session: SessionId,
        will: Option<Box<Will>>,
        ending: Ending,
        out: &mut Outbox,
    ) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        s.conn = None;
        s.disconnected_at = Some(self.now.wall);
        let (persistent, expiry) = (s.persistent, s.expiry);
        // Offline, it would never drain: whom it held back goes on.
        self.release_held(session);
        if self.sessions.get(session).is_none() {
            return;
        }
        if let Some(will) = will {
            let delayed = persistent && !will.delay.is_zero();
            match ending {
                // [MQTT-3.1.3-9]: the new connection arrived within the delay.
                Ending::TakenOver { resumed: true } if delayed => {}
                Ending::Normal if delayed => self.delay_will(session, *will),
                Ending::Shutdown => {}
                _ => self.publish_will(will.message, out),
            }
        }
        match ending {
            Ending::Normal if !persistent => self.discard_session(session, out),
            Ending::Normal => {
                self.hand_over_shared(session, false, out);
                if let (Some(expiry), Some(s)) = (expiry, self.sessions.get(session)) {
                    let at = self.now.instant.saturating_add(expiry);
                    self.schedule(at, Timer::Expiry(session, s.generation));
                }
                // The record learns when the session went offline (so its expiry also runs
                // while the broker is down) and any expiry the DISCONNECT changed.
                self.save_offline_record(session, out);
            }
            Ending::Shutdown if persistent && expiry.is_some() => {
                self.save_offline_record(session, out);
            }
            // The new connection decides what becomes of the session.
            Ending::TakenOver { .. } | Ending::Shutdown => {}
        }
        if persistent && matches!(ending, Ending::Normal | Ending::Shutdown) {
            self.release_consumer(session, out);
        }
    }

    /// Keeps `session`'s will until its Will Delay Interval has passed (a new connection in
    /// time cancels it).
    fn delay_will(&mut self, session: SessionId, will: Will) {
        let at = self.now.instant.saturating_add(will.delay);
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        s.generation += 1;
        let generation = s.generation;
        s.pending_will = Some(Box::new(PendingWill { will, generation }));
        self.schedule(at, Timer::Will(session, generation));
    }

    /// A fleet node gives back what `session`'s consumer handed it and the client did not
    /// acknowledge: the session may resume on another node, which is then handed it at once
    /// rather than after the consumer's ack wait. (What the session holds here stays; should
    /// it resume here, its acknowledgements read the consumer again.)
    fn release_consumer(&mut self, session: SessionId, out: &mut Outbox) {
        if !(self.config.cluster.is_fleet()) {
            return;
        }
        let Some(s) = self.sessions.get(session).filter(|s| s.persistent) else {
            return;
        };
        let request = StoreRequest::Release {
            consumer: s.consumer(),
        };
        self.request(request, RequestOwner::Background, out);
    }

    /// A connection's timer: an idle connection gives back room it kept, and the first of
    /// its deadlines that passed ends it; otherwise the timer is set for the next one.
    pub(super) fn on_conn_timer(
        &mut self,
        conn: ConnId,
        at: crate::time::Timestamp,
        out: &mut Outbox,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.timer_at != Some(at) {
            return;
        }
        c.timer_at = None;
        // Housekeeping, about once per keep-alive: an idle connection gives back the room it
        // kept for bursts.
        c.pipeline.release_room();
        if c.out.is_empty() {
            c.out = BytesMut::new();
        }
        match self.conn_deadline(conn) {
            Err(timeout) => self.time_out(conn, timeout, out),
            Ok(Some(at)) => self.schedule_conn(conn, at),
            Ok(None) => {}
        }
    }

    /// The next deadline of `conn` (connect, keep-alive, slow consumer), or the first one that
    /// passed.
    fn conn_deadline(&self, conn: ConnId) -> Result<Option<crate::time::Timestamp>, ConnTimeout> {
        let now = self.now.instant;
        let slow_timeout = self.config.slow_consumer_timeout;
        let Some(c) = self.conns.get(&conn) else {
            return Ok(None);
        };
        let mut next = None::<crate::time::Timestamp>;
        let mut check = |deadline: crate::time::Timestamp, timeout: ConnTimeout| {
            if now >= deadline {
                return Err(timeout);
            }
            next = Some(next.map_or(deadline, |n| n.min(deadline)));
            Ok(())
        };
        match c.phase {
            Phase::AwaitingConnect { deadline } => check(deadline, ConnTimeout::Connect)?,
            Phase::Connected { session } => {
                if let Some(ka) = c.keep_alive {
                    check(c.last_activity.saturating_add(ka), ConnTimeout::KeepAlive)?;
                }
                // A subscriber holding publishers back must keep acknowledging.
                let stall = self
                    .sessions
                    .get(session)
                    .and_then(|s| s.outbound.overload.as_deref())
                    .and_then(|o| o.stall_deadline(slow_timeout));
                if let Some(deadline) = stall {
                    check(deadline, ConnTimeout::SlowConsumer)?;
                }
            }
            Phase::Authenticating(_)
            | Phase::Loading(_)
            | Phase::AuthExchange(_)
            | Phase::Held { .. } => {
                if let Some((deadline, reason)) = c.phase.connect_wait() {
                    check(deadline, ConnTimeout::ConnectWait(reason))?;
                }
            }
            Phase::Closing => {}
        }
        if let Some(since) = c.slow_since {
            // Its unsent bytes stayed over max_unsent_bytes for too long.
            check(
                since.saturating_add(slow_timeout),
                ConnTimeout::SlowConsumer,
            )?;
        }
        Ok(next)
    }

    /// Ends `conn`, one of whose deadlines passed.
    fn time_out(&mut self, conn: ConnId, timeout: ConnTimeout, out: &mut Outbox) {
        match timeout {
            ConnTimeout::Connect => self.close(conn, CloseReason::ConnectTimeout, false, out),
            ConnTimeout::KeepAlive => {
                self.send_disconnect(conn, DisconnectReason::KeepAliveTimeout);
                self.close(conn, CloseReason::KeepAliveTimeout, true, out);
            }
            ConnTimeout::SlowConsumer => {
                self.send_disconnect(conn, DisconnectReason::QuotaExceeded);
                self.close(conn, CloseReason::SlowConsumer, true, out);
            }
            ConnTimeout::ConnectWait(reason) => {
                if let Some(version) = self.conns.get(&conn).map(|c| c.version) {
                    self.refuse(conn, version, reason, out);
                }
            }
        }
    }

    pub(super) fn on_will_timer(&mut self, session: SessionId, generation: u64, out: &mut Outbox) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        if s.pending_will
            .as_ref()
            .is_none_or(|w| w.generation != generation)
        {
            return;
        }
        if let Some(pending) = s.pending_will.take() {
            self.publish_will(pending.will.message, out);
        }
    }

    pub(super) fn on_expiry_timer(
        &mut self,
        session: SessionId,
        generation: u64,
        out: &mut Outbox,
    ) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        if s.conn.is_some() || s.generation != generation {
            return;
        }
        if self.config.cluster.is_fleet() && s.persistent {
            // Another node may have connected the client since (a connect notice missed while
            // NATS was away): the stored record says.
            let request = records::session_read(&s.key.client_id);
            let owner = RequestOwner::Expiry {
                session,
                generation,
            };
            self.request(request, owner, out);
            return;
        }
        self.expire_session(session, out);
    }

    /// The stored record of a fleet session whose expiry came: when the record holds a later
    /// connect's stamp than this node's copy, another node has connected the client since,
    /// and the copy only leaves this node's memory (its delayed will with it, as a new
    /// connection cancels it [MQTT-3.1.3-9]); otherwise the session expires. A read that
    /// failed is tried again after the store timeout.
    pub(super) fn on_expiry_checked(
        &mut self,
        session: SessionId,
        generation: u64,
        reply: Result<StoreReply, StoreError>,
        out: &mut Outbox,
    ) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        if s.generation != generation || s.conn.is_some() {
            return;
        }
        match reply {
            Ok(StoreReply::Message(Some(record)))
                if records::record_stamp(&record) > s.connect_stamp =>
            {
                self.remove_session(session, out);
            }
            Ok(_) => self.expire_session(session, out),
            Err(_) => {
                let at = self.now.instant.saturating_add(self.config.store_timeout);
                self.schedule(at, Timer::Expiry(session, s.generation));
            }
        }
    }

    /// Ends an expired session; a delayed will still waiting goes out now [MQTT-3.1.2-8].
    fn expire_session(&mut self, session: SessionId, out: &mut Outbox) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let pending = s.pending_will.take();
        let client_id = s.key.client_id.clone();
        if let Some(pending) = pending {
            self.publish_will(pending.will.message, out);
        }
        out.push(Action::Notice(Notice::SessionExpired { client_id }));
        self.discard_session(session, out);
    }

    /// Removes a session and everything it holds, in memory and in the store.
    pub(super) fn discard_session(&mut self, session: SessionId, out: &mut Outbox) {
        if let Some(s) = self.remove_session(session, out) {
            if s.persistent {
                self.forget_session(&s, out);
            }
        }
    }

    /// Takes a session out of memory (its subscriptions too) and returns it.
    pub(super) fn remove_session(
        &mut self,
        session: SessionId,
        out: &mut Outbox,
    ) -> Option<Session> {
        self.hand_over_shared(session, true, out);
        self.release_held(session);
        let s = self.sessions.remove(session)?;
        self.queued_total = self.queued_total.saturating_sub(s.outbound.queued_bytes);
        self.release_held_for_total();
        self.catch_ups.remove(&session);
        for entry in s.subscriptions.values() {
            self.unindex_subscription(session, entry);
        }
        Some(*s)
    }

    /// Another node of the fleet took the session's client over: its connection here closes
    /// (DISCONNECT 0x8E for 5.0, no will, as for a takeover here) and the session leaves this
    /// node's memory, but not the store, which the other node now uses.
    pub(super) fn drop_taken_over(&mut self, session: SessionId, out: &mut Outbox) {
        if let Some((conn, key)) = self
            .sessions
            .get(session)
            .and_then(|s| Some((s.conn?, s.key.clone())))
        {
            self.count_takeover(&key, out);
            self.close_inner(
                conn,
                CloseReason::SessionTakenOver,
                false,
                Ending::TakenOver { resumed: true },
                out,
            );
        }
        self.release_consumer(session, out);
        self.remove_session(session, out);
    }

    /// Counts a takeover of `key`'s connection (flapping protection); the one that reaches the
    /// limit is reported.
    fn count_takeover(&mut self, key: &SessionKey, out: &mut Outbox) {
        if self.takeovers.record(key, self.now.instant) {
            out.push(Action::Notice(Notice::TakeoverLimit {
                client_id: key.client_id.clone(),
            }));
        }
    }

    /// An administrator ends a session, and its connection if it has one.
    pub(super) fn on_discard_session(&mut self, key: &SessionKey, out: &mut Outbox) {
        self.discard_here(key, out);
        // In a fleet the session may be online on another node: it ends there too.
        self.announce_discard(key, out);
    }

    /// Ends the session of `key` on this node: its client disconnected (0x98), the session and
    /// its stored state removed.
    pub(super) fn discard_here(&mut self, key: &SessionKey, out: &mut Outbox) {
        let Some(session) = self.session_id(key) else {
            return;
        };
        if let Some(conn) = self.sessions.get(session).and_then(|s| s.conn) {
            self.send_disconnect(conn, DisconnectReason::AdministrativeAction);
            // The connection ends first (its will is published), then the session.
            self.close_inner(
                conn,
                CloseReason::AdministrativeAction,
                true,
                Ending::TakenOver { resumed: false },
                out,
            );
        }
        self.discard_session(session, out);
    }

    pub(super) fn on_shutdown(&mut self, out: &mut Outbox) {
        let conns: Vec<ConnId> = self.conns.ids().collect();
        for conn in conns {
            self.send_disconnect(conn, DisconnectReason::ServerShuttingDown);
            // Sessions stay as they are for the next start; wills are not published.
            self.close_inner(conn, CloseReason::Shutdown, false, Ending::Shutdown, out);
        }
    }
}

/// The first byte of every CONNECT: packet type 1, no flags.
const CONNECT_BYTE: u8 = 0x10;

/// Bytes kept from a client whose CONNECT waits (for authentication, its session or flapping
/// protection) before its connection is no longer read until the wait ends.
const WAITING_INBUF: usize = 64 * 1024;

/// How long a CONNECT refused by flapping protection is held before its CONNACK, so that a
/// client reconnecting at once does not spin.
const TAKEOVER_HOLD: Duration = Duration::from_secs(1);

/// The will a CONNECT's Last Will becomes, published by the session numbered `publisher`;
/// `None` if its topic is invalid (`on_connect` refused those).
fn will_of(w: &crate::codec::LastWill, publisher: Option<u64>) -> Option<Box<Will>> {
    let topic = TopicName::new(super::detach(&w.topic)).ok()?;
    // The will's properties travel with it like a PUBLISH's [MQTT-3.1.3-10].
    let wp = &w.properties;
    let properties = PublishProperties {
        payload_format_indicator: wp.payload_format_indicator,
        message_expiry_interval: wp.message_expiry_interval,
        content_type: wp.content_type.clone(),
        response_topic: wp.response_topic.clone(),
        correlation_data: wp.correlation_data.clone(),
        user_properties: wp.user_properties.clone(),
        ..PublishProperties::EMPTY
    };
    let properties = (properties != PublishProperties::EMPTY).then(|| Box::new(properties));
    Some(Box::new(Will {
        message: Message {
            topic,
            payload: bytes::Bytes::copy_from_slice(&w.payload),
            qos: w.qos,
            retain: w.retain,
            properties,
            publisher,
            seq: None,
            expires_at: None,
        },
        delay: Duration::from_secs(u64::from(wp.will_delay_interval.unwrap_or(0))),
    }))
}

/// The keep-alive a connection of `version` that asked for `asked` seconds gets (within
/// `max_keep_alive` and `min_keep_alive`, which only a 5.0 client can be told), and the Server
/// Keep Alive to tell it when that differs.
fn negotiate_keep_alive(
    config: &BrokerConfig,
    version: ProtocolVersion,
    asked: u16,
) -> (u16, Option<u16>) {
    let (max, min) = (config.max_keep_alive, config.min_keep_alive);
    if max != 0 && (asked == 0 || asked > max) && version.is_v5() {
        (max, Some(max))
    } else if min != 0 && asked != 0 && asked < min && version.is_v5() {
        (min, Some(min))
    } else {
        (asked, None)
    }
}

/// Whether a session with this Session Expiry Interval outlives its connection, and for how
/// long (`None`: forever).
fn session_expiry(secs: u32) -> (bool, Option<Duration>) {
    match secs {
        0 => (false, None),
        u32::MAX => (true, None),
        secs => (true, Some(Duration::from_secs(u64::from(secs)))),
    }
}

/// Which deadline of a connection passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnTimeout {
    /// No CONNECT in time.
    Connect,
    /// Nothing from the client for 1.5 times its keep-alive.
    KeepAlive,
    /// A slow consumer: unsent bytes over the limit, or holding publishers back without
    /// progress, for `slow_consumer_timeout`.
    SlowConsumer,
    /// A CONNECT that waited (authentication, its session, flapping protection) too long:
    /// refused with this reason.
    ConnectWait(ConnectReason),
}

/// How a connection ends, which decides what becomes of its session and will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Closed on its own: a non-persistent session ends, a persistent one starts expiring.
    Normal,
    /// Replaced by a new connection with the same client identifier, which resumes the
    /// session or starts a clean one.
    TakenOver { resumed: bool },
    /// The broker is stopping: sessions stay as they are for the next start.
    Shutdown,
}
