//! The broker's side of storage: issuing store requests and matching their replies, session
//! records, and restoring sessions, retained messages, queued messages and QoS 2 state at
//! start-up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

use super::fleet_record::retries_record_write;
use super::io::{Action, Notice, Outbox};
use super::io::{SessionKey, DEFAULT_ACCOUNT};
use super::message::Message;
use super::requests::{RequestOwner, Write};
use super::session::{Delivery, Inflight, InflightState, Session, SubscriptionEntry};
use super::sessions::SessionId;
use super::{Broker, Timer};
use crate::codec::{
    PacketId, ProtocolVersion, PublishProperties, QoS, RetainHandling, SubscriptionOptions,
};
use crate::js::records::{self, SessionRecord, SubscriptionRecord};
use crate::js::{RequestId, StoreError, StoreReply, StoreRequest, StoredMessage, Stream};
use crate::time::{Timestamp, WallClock};
use crate::topic::{subject, Subscription, TopicName};

impl Broker {
    /// Emits a store request; its reply (or timeout) goes to `owner`.
    pub(super) fn request(&mut self, request: StoreRequest, owner: RequestOwner, out: &mut Outbox) {
        let issued = self.requests.issue(owner, self.now.instant);
        self.schedule(issued.deadline, Timer::Request(issued.id));
        out.push(Action::Store {
            id: issued.id,
            request,
        });
    }

    pub(super) fn on_stored(
        &mut self,
        id: RequestId,
        reply: Result<StoreReply, StoreError>,
        out: &mut Outbox,
    ) {
        let Some(owner) = self.requests.answer(id) else {
            self.stats.unknown_inputs += 1;
            out.push(Action::Notice(Notice::UnknownRequest(id)));
            return;
        };
        // A conditional record write refused because another write came first is tried
        // again, not a failure.
        let retried = matches!(&owner, RequestOwner::RecordWrite { attempt, .. }
            if retries_record_write(*attempt, &reply));
        if let (Err(err), false) = (&reply, retried) {
            self.stats.store_failures += 1;
            out.push(Action::Notice(Notice::StoreFailed(err.clone())));
        }
        let (conn, token, kind) = match owner {
            RequestOwner::Pipeline { conn, token, kind } => (conn, token, kind),
            RequestOwner::Load { conn } => {
                self.on_loaded(conn, reply, out);
                return;
            }
            RequestOwner::Expiry {
                session,
                generation,
            } => {
                self.on_expiry_checked(session, generation, reply, out);
                return;
            }
            RequestOwner::PubRelRecord { session, pid, seq } => {
                if reply.is_ok() {
                    self.on_pubrel_recorded(session, pid, seq, out);
                }
                return;
            }
            RequestOwner::CatchUp { session } => {
                self.on_caught_up(session, reply, out);
                return;
            }
            RequestOwner::Spill { session, seq } => {
                self.on_spill_read(session, seq, reply, out);
                return;
            }
            RequestOwner::RecordCheck { session, attempt } => {
                self.on_record_checked(session, attempt, reply, out);
                return;
            }
            RequestOwner::RecordWrite { session, attempt } => {
                self.on_record_written(session, attempt, &reply, out);
                return;
            }
            RequestOwner::SubscriptionSave { session } => {
                self.on_subscriptions_saved(session, reply.is_ok(), out);
                return;
            }
            RequestOwner::Background => return,
        };
        // A connection that is gone took its pending packets with it.
        let Some(pipeline) = self.conns.pipeline_mut(conn) else {
            return;
        };
        let Some(entry) = pipeline.get_mut(token) else {
            return;
        };
        entry.waiting = entry.waiting.saturating_sub(1);
        match reply {
            Ok(StoreReply::Stored { seq }) if kind == Write::Message => entry.seq = Some(seq),
            Ok(_) => {}
            Err(_) => entry.failed = true,
        }
        self.drain_pipeline(conn, out);
    }

    pub(super) fn on_request_timeout(&mut self, id: RequestId, out: &mut Outbox) {
        if self.requests.is_waiting(id) {
            self.on_stored(id, Err(StoreError::Timeout), out);
        }
    }

    /// The session record of a persistent session.
    fn session_record(&self, session: SessionId) -> Option<SessionRecord> {
        let s = self.sessions.get(session)?;
        let mut record = SessionRecord {
            id: s.key.client_id.to_string(),
            ..SessionRecord::default()
        };
        record.jetmq.level = s.version as u8;
        record.jetmq.disconnected_at = s.disconnected_at.map(WallClock::as_unix_millis);
        record.jetmq.stamp = s.connect_stamp;
        record.jetmq.owner = s.owner.as_deref().map(ToString::to_string);
        record.jetmq.expiry = s
            .expiry
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        if s.key.account != DEFAULT_ACCOUNT {
            record.jetmq.account = Some(s.key.account.to_string());
        }
        for (text, entry) in s.subscriptions.iter() {
            let qos = entry.options.qos as u8;
            record
                .subs
                .insert(subject::filter_to_subject(&entry.filter).into_owned(), qos);
            record.jetmq.subs.insert(
                text.to_string(),
                SubscriptionRecord {
                    qos,
                    nl: entry.options.no_local,
                    rap: entry.options.retain_as_published,
                    sid: entry.id.map(std::num::NonZeroU32::get),
                },
            );
        }
        Some(record)
    }

    /// The write that stores a persistent session's record; with `expected`, only if the
    /// subject's last record is still that one (see `fleet_record`).
    pub(super) fn record_request(
        &self,
        session: SessionId,
        expected: Option<u64>,
    ) -> Option<StoreRequest> {
        let record = self.session_record(session)?;
        Some(records::session_write(&record, expected))
    }

    /// The write that gives a session's consumer its QoS ≥ 1 filter subjects.
    fn consumer_upsert(&self, session: SessionId) -> Option<StoreRequest> {
        let s = self.sessions.get(session)?;
        let filters = s
            .subscriptions
            .values()
            .filter(|e| e.options.qos != QoS::AtMostOnce)
            .flat_map(|e| subject::filter_subjects(&e.filter));
        Some(records::consumer_upsert(&s.key.client_id, filters))
    }

    /// The writes that make a persistent session's current state durable: its record and its
    /// consumer's filter subjects.
    pub(super) fn session_writes(&self, session: SessionId) -> Vec<StoreRequest> {
        match (
            self.record_request(session, None),
            self.consumer_upsert(session),
        ) {
            (Some(record), Some(upsert)) => vec![record, upsert],
            _ => Vec::new(),
        }
    }

    /// Stores a session's record and consumer in the background (at CONNECT), or forgets them
    /// when the session stopped being persistent. On a fleet node the record is written over
    /// the one read (at the load, `read_seq`, or just before) only if that is still the last
    /// (see `fleet_record`).
    pub(super) fn save_session(
        &mut self,
        session: SessionId,
        read_seq: Option<u64>,
        out: &mut Outbox,
    ) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let writes = if s.persistent && self.config.cluster.is_fleet() {
            match read_seq {
                Some(seq) => self.write_record_over(session, seq, 1, out),
                None => self.check_record(session, 1, out),
            }
            self.consumer_upsert(session).into_iter().collect()
        } else if s.persistent {
            self.session_writes(session)
        } else {
            // Its stored QoS 2 state goes too: from now on it lives in memory only.
            let qos2 = qos2_purges(s);
            [
                records::session_purge(&s.key.client_id),
                records::consumer_delete(&s.key.client_id),
            ]
            .into_iter()
            .chain(qos2)
            .collect()
        };
        for req in writes {
            self.request(req, RequestOwner::Background, out);
        }
    }

    /// The session `session`, if it still exists and is persistent.
    pub(super) fn persistent_session(&self, session: SessionId) -> Option<&Session> {
        self.sessions.get(session).filter(|s| s.persistent)
    }

    /// Rewrites a persistent session's record alone (its consumer is unchanged), in the
    /// background: when its connection ended (a single node's; see
    /// [`save_offline_record`](Self::save_offline_record)).
    pub(super) fn save_session_record(&mut self, session: SessionId, out: &mut Outbox) {
        if let Some(req) = self.record_request(session, None) {
            self.request(req, RequestOwner::Background, out);
        }
    }

    /// Removes a discarded session's record, consumer and QoS 2 state from the store.
    pub(super) fn forget_session(&mut self, s: &Session, out: &mut Outbox) {
        let mut writes = vec![
            records::session_purge(&s.key.client_id),
            records::consumer_delete(&s.key.client_id),
        ];
        writes.extend(qos2_purges(s));
        for req in writes {
            self.request(req, RequestOwner::Background, out);
        }
    }

    /// Adds the outbound QoS 2 flows read from the store (PUBREL sent, PUBCOMP not received)
    /// to a session: its next connection gets the PUBREL again.
    pub(super) fn restore_pubrels(
        &mut self,
        session: SessionId,
        pids: impl IntoIterator<Item = u16>,
    ) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        for pid in pids.into_iter().filter_map(PacketId::new) {
            if s.outbound.position(pid).is_none() {
                s.outbound.inflight.push_back(Inflight {
                    pid,
                    delivery: None,
                    state: InflightState::PubComp,
                });
            }
        }
    }

    /// Applies everything read at start-up: sessions first, then retained messages, queued
    /// messages and QoS 2 state.
    pub(super) fn on_restore_complete(&mut self, out: &mut Outbox) {
        let Some(mut records) = self.restoring.take() else {
            return;
        };
        records.sort_by_key(|r| (r.stream, r.seq));
        let mut by_consumer: BTreeMap<ByteString, SessionId> = BTreeMap::new();
        let mut by_hash16: BTreeMap<records::Hash<16>, SessionId> = BTreeMap::new();
        for record in records {
            let ok = match record.stream {
                Stream::Sessions => self.restore_session(&record, &mut by_consumer, &mut by_hash16),
                Stream::Retained => self.restore_retained(&record, out),
                Stream::Messages => self.restore_message(&record, &by_consumer, true, out),
                Stream::Qos2In | Stream::PubRel => self.restore_qos2(&record, &by_hash16),
            };
            if !ok {
                out.push(Action::Notice(Notice::BadRecord {
                    subject: record.subject.clone(),
                }));
            }
        }
        self.note_crash_time_as_disconnect(out);
        // Restored sessions are offline: the time since their connection ended counts
        // against their expiry (from now if that time was never written).
        let now = self.now.wall.as_unix_millis();
        let expiring: Vec<(SessionId, Duration, u64)> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| {
                let expiry = s.expiry?;
                let since = s
                    .disconnected_at
                    .map_or(0, |at| now.saturating_sub(at.as_unix_millis()));
                Some((
                    id,
                    expiry.saturating_sub(Duration::from_millis(since)),
                    s.generation,
                ))
            })
            .collect();
        for (id, left, generation) in expiring {
            if left.is_zero() {
                out.push(Action::Notice(Notice::SessionExpired {
                    client_id: self
                        .sessions
                        .get(id)
                        .map(|s| s.key.client_id.clone())
                        .unwrap_or_default(),
                }));
                self.discard_session(id, out);
            } else {
                let at = self.now.instant.saturating_add(left);
                if self.sessions.get(id).is_some() {
                    self.schedule(at, Timer::Expiry(id, generation));
                }
            }
        }
    }

    /// A single node's restored session that has no disconnect time was connected when the
    /// broker stopped without writing it (a crash): its connection ended then, and the record
    /// learns it now, or every later restart would grant its whole expiry again. (In a fleet
    /// such a session may be connected through another node: left as it is.)
    fn note_crash_time_as_disconnect(&mut self, out: &mut Outbox) {
        if self.config.cluster.is_fleet() {
            return;
        }
        let wall = self.now.wall;
        let ended: Vec<SessionId> = self
            .sessions
            .iter_mut()
            .filter(|(_, s)| s.persistent && s.expiry.is_some() && s.disconnected_at.is_none())
            .map(|(id, s)| {
                s.disconnected_at = Some(wall);
                id
            })
            .collect();
        for id in ended {
            self.save_session_record(id, out);
        }
    }

    pub(super) fn restore_session(
        &mut self,
        record: &StoredMessage,
        by_consumer: &mut BTreeMap<ByteString, SessionId>,
        by_hash16: &mut BTreeMap<records::Hash<16>, SessionId>,
    ) -> bool {
        let Some(rec) = records::read_session(record) else {
            return false;
        };
        let account = rec.jetmq.account.clone().map_or_else(
            || ByteString::from_static(DEFAULT_ACCOUNT),
            ByteString::from,
        );
        let key = SessionKey {
            account,
            client_id: rec.id.clone().into(),
        };
        let version = if rec.jetmq.level == 5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        let owner = rec.jetmq.owner.clone().map(ByteString::from);
        let id = self.sessions.insert(key, version, owner);
        // Indexing makes the groups of shared subscriptions (see `shared.rs`).
        let mut subs: Vec<(ByteString, SubscriptionEntry)> = Vec::new();
        if rec.jetmq.subs.is_empty() {
            // A record written by the NATS server: filters are NATS subjects.
            for (subj, qos) in &rec.subs {
                let text: ByteString = subject::subject_to_filter(subj).into_owned().into();
                if let (Ok(sub), Some(qos)) = (Subscription::new(text.clone()), QoS::from_u8(*qos))
                {
                    let options = SubscriptionOptions::new(qos);
                    subs.push((text, self.index_subscription(id, sub, options, None)));
                }
            }
        } else {
            for (text, sr) in &rec.jetmq.subs {
                let text: ByteString = text.clone().into();
                if let (Ok(sub), Some(qos)) =
                    (Subscription::new(text.clone()), QoS::from_u8(sr.qos))
                {
                    let options = SubscriptionOptions {
                        qos,
                        no_local: sr.nl,
                        retain_as_published: sr.rap,
                        retain_handling: RetainHandling::SendAtSubscribe,
                    };
                    let sid = sr.sid.and_then(std::num::NonZeroU32::new);
                    subs.push((text, self.index_subscription(id, sub, options, sid)));
                }
            }
        }
        // Later connects here order after the one the record holds, whatever this node's
        // clock says.
        self.clock.observe(rec.jetmq.stamp);
        let Some(s) = self.sessions.get_mut(id) else {
            return false;
        };
        s.persistent = true;
        s.expiry = rec
            .jetmq
            .expiry
            .map(|secs| Duration::from_secs(u64::from(secs)));
        s.disconnected_at = rec.jetmq.disconnected_at.map(WallClock::from_unix_millis);
        s.connect_stamp = rec.jetmq.stamp;
        s.subscriptions.extend(subs);
        by_consumer.insert(s.consumer(), id);
        by_hash16.insert(records::client_hash16(&s.key.client_id), id);
        true
    }

    /// The MQTT 5.0 properties and the expiry of a stored or bridged message, from its
    /// headers; `None` when it has expired.
    pub(super) fn v5_fields_from_headers(
        &self,
        headers: &[(ByteString, ByteString)],
    ) -> Option<(Option<Box<PublishProperties>>, Option<Timestamp>)> {
        let (properties, expires_at) = records::read_v5_fields(headers);
        let expires_at = match expires_at {
            Some(at) => {
                let left = at.saturating_sub(self.now.wall.as_unix_millis());
                if left == 0 {
                    return None;
                }
                Some(self.now.instant.saturating_add(Duration::from_millis(left)))
            }
            None => None,
        };
        Some((properties, expires_at))
    }

    fn restore_retained(&mut self, record: &StoredMessage, out: &mut Outbox) -> bool {
        let Some((subj, qos)) = records::read_retained(record) else {
            return false;
        };
        let Ok(topic) = subject::subject_to_topic_name(subj) else {
            return false;
        };
        let Some((properties, expires_at)) = self.v5_fields_from_headers(&record.headers) else {
            // It expired while the broker was down: it is gone.
            let purge = StoreRequest::Purge {
                stream: Stream::Retained,
                subject: record.subject.clone(),
            };
            self.request(purge, RequestOwner::Background, out);
            return true;
        };
        self.keep_retained(topic, record.payload.clone(), qos, properties, expires_at);
        true
    }

    /// Keeps a retained message that did not come from a local client (read back from the
    /// store, or set through another node of a fleet).
    pub(super) fn keep_retained(
        &mut self,
        topic: TopicName,
        payload: bytes::Bytes,
        qos: QoS,
        properties: Option<Box<PublishProperties>>,
        expires_at: Option<Timestamp>,
    ) {
        let msg = Message {
            topic: topic.clone(),
            payload,
            qos,
            retain: true,
            properties,
            publisher: None,
            seq: None,
            expires_at,
        };
        self.retained.insert(&topic, Arc::new(msg));
    }

    /// Queues a stored message for the sessions whose consumers handed it out (and do not
    /// hold it already); `dup` when it may have been sent before (restored, loaded), not for
    /// a message read back from a spill. False when the record is no stored message.
    pub(super) fn restore_message(
        &mut self,
        record: &StoredMessage,
        by_consumer: &BTreeMap<ByteString, SessionId>,
        dup: bool,
        out: &mut Outbox,
    ) -> bool {
        let Some((subj, qos)) = records::read_message(record) else {
            return false;
        };
        let Ok(topic) = subject::subject_to_topic_name(subj) else {
            return false;
        };
        let Some((properties, expires_at)) = self.v5_fields_from_headers(&record.headers) else {
            // It expired while the broker was down: every consumer releases it.
            for consumer in &record.pending_for {
                self.request(
                    StoreRequest::Ack {
                        consumer: consumer.clone(),
                        seq: record.seq,
                    },
                    RequestOwner::Background,
                    out,
                );
            }
            self.stats.dropped_expired += record.pending_for.len() as u64;
            return true;
        };
        let msg = Arc::new(Message {
            topic: topic.clone(),
            payload: record.payload.clone(),
            qos,
            retain: false,
            properties,
            publisher: None,
            seq: Some(record.seq),
            expires_at,
        });
        for consumer in &record.pending_for {
            let Some(&session) = by_consumer.get(consumer) else {
                continue;
            };
            let Some(s) = self.sessions.get_mut(session) else {
                continue;
            };
            if s.outbound.holds(record.seq) {
                continue;
            }
            let matching = s
                .subscriptions
                .values()
                .filter(|e| e.filter.matches(&topic));
            let granted = matching.clone().map(|e| e.options.qos).max();
            let subscription_ids = matching.filter_map(|e| e.id).collect();
            let Some(granted) = granted.filter(|q| *q != QoS::AtMostOnce) else {
                continue;
            };
            // It may have been sent before the restart: DUP tells the client so.
            let d = Delivery {
                msg: Arc::clone(&msg),
                qos: qos.min(granted),
                retain: false,
                dup,
                subscription_ids,
                share: None,
                release: None,
            };
            self.queued_total += d.msg.kept_bytes();
            let _ = s.outbound.push_queued(d, usize::MAX, usize::MAX);
        }
        true
    }

    /// A QoS 2 record read at start-up (`$MQTT_qos2in` or `$MQTT_out`), added to its session's
    /// state in that direction.
    fn restore_qos2(
        &mut self,
        record: &StoredMessage,
        by_hash16: &BTreeMap<records::Hash<16>, SessionId>,
    ) -> bool {
        let Some((session, pid)) = records::read_qos2(record).and_then(|(hash, pid)| {
            let hash = records::Hash::<16>::try_from(hash).ok()?;
            Some((*by_hash16.get(&hash)?, pid))
        }) else {
            return false;
        };
        if record.stream == Stream::Qos2In {
            let Some(s) = self.sessions.get_mut(session) else {
                return false;
            };
            s.inbound_qos2.insert(pid);
        } else {
            self.restore_pubrels(session, [pid]);
        }
        true
    }
}

/// The purges of a session's stored QoS 2 state: inbound identifiers awaiting PUBREL and
/// outbound flows awaiting PUBCOMP.
fn qos2_purges(s: &Session) -> Vec<StoreRequest> {
    let client_id = &s.key.client_id;
    let inbound = s
        .inbound_qos2
        .iter()
        .map(|pid| records::qos2_purge(client_id, *pid));
    let outbound = s
        .outbound
        .inflight
        .iter()
        .filter(|e| e.state == InflightState::PubComp)
        .map(|e| records::pubrel_purge(client_id, e.pid.get()));
    inbound.chain(outbound).collect()
}
