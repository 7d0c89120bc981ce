//! Overload without loss: what happens when a session's queue is full
//! (`max_queued_messages`, `max_queued_bytes`) or all queues together are at
//! `max_total_queued_bytes`, and a QoS 1/2 message arrives for it.
//!
//! With [`Overflow::Lossless`] (the default), in this order:
//! 1. **Spill**: a persistent session's stored message stays in the store (its consumer keeps
//!    it, as JetStream keeps the NATS server's) instead of in memory: the session remembers
//!    only its sequence (8 bytes), and every later stored message for the session follows it
//!    there, so the session's order holds. When the queue has drained to half, the spilled
//!    messages are read back by sequence, in the order they were routed, a batch at a time
//!    while the queue stays at half or less. Reading exactly what was spilled, rather than whatever the consumer holds,
//!    never hands the session a message twice (one it acknowledged whose acknowledgement the
//!    store has not applied, one stored but not yet routed, which comes live later). Fast
//!    subscribers of the same topics keep their pace meanwhile.
//! 2. **Hold publishers back**: any other message is kept in the queue beyond its limit, and
//!    the publisher it came from is no longer read (the shell stops reading its socket, so
//!    TCP pushes back) until every queue it was held for has drained to half. How far past
//!    the limit a queue can grow is bounded by what the held publishers had already sent:
//!    `max_pending_per_connection` packets and one read buffer each.
//!    Messages with no publisher to hold back (from NATS, wills) are kept up to twice the
//!    limit and dropped beyond it, counted. A client's messages to its own subscriptions are
//!    kept within `max_total_queued_bytes` (holding it back would stop its acknowledgements),
//!    and past that it is held back too.
//! 3. **Slow consumers end**: a subscriber that holds publishers back and acknowledges nothing
//!    (and whose connection writes nothing) for `slow_consumer_timeout` is disconnected (v5:
//!    DISCONNECT 0x97 Quota exceeded). A clean session then ends and its messages are no longer
//!    owed; a persistent one keeps its stored messages for its next connection.
//!
//! An offline persistent session spills its stored messages and holds nobody back (it would
//! never drain); anything else for it beyond the limit is dropped, counted.
//!
//! With [`Overflow::Drop`] the message is dropped for that session, counted in
//! `dropped_queue_full` and reported as a `QueueOverflow` notice.
//!
//! QoS 0 messages are never held for: beyond the limit (or for a session that spilled, whose
//! order they would break) they are dropped, counted, in either mode.

use super::config::Overflow;
use super::io::{Action, ConnId, Notice, Outbox};
use super::overload::Overload;
use super::requests::RequestOwner;
use super::session::Delivery;
use super::sessions::SessionId;
use super::Broker;
use crate::codec::QoS;
use crate::js::{StoreError, StoreReply, StoreRequest, Stream};

/// What became of a QoS 1/2 message for a session at its limit.
enum Outcome {
    /// Left in the session's consumer, to be read back.
    Spilled,
    /// Kept in the queue beyond the limit; hold this publisher back.
    Kept(Option<ConnId>),
    /// Dropped for the session (counted).
    Dropped,
}

/// Whether a session's queue is at or over its limits.
fn at_limit(queued: usize, bytes: usize, max_messages: usize, max_bytes: usize) -> bool {
    queued >= max_messages || bytes >= max_bytes
}

impl Broker {
    /// Whether `d` is one of `session`'s stored messages that its own consumer holds until it
    /// is acknowledged, so it can be left there and read back later.
    fn spillable(&self, session: SessionId, d: &Delivery) -> bool {
        d.qos != QoS::AtMostOnce
            && d.msg.seq.is_some()
            && d.release.is_none()
            && d.share.is_none()
            && self.sessions.get(session).is_some_and(|s| s.persistent)
    }

    /// Whether a delivery to `session` must go to its consumer rather than to memory: the
    /// session spilled before, and what it spilled comes first.
    pub(super) fn follows_spill(&self, session: SessionId, d: &Delivery) -> bool {
        self.sessions
            .get(session)
            .and_then(|s| s.outbound.overload.as_deref())
            .is_some_and(Overload::spilled)
            && self.spillable(session, d)
    }

    /// Whether all queues together are over `max_total_queued_bytes`.
    fn over_total(&self) -> bool {
        let max = self.config.max_total_queued_bytes;
        max != 0 && self.queued_total > max
    }

    /// Queues a delivery for `session` behind its window; at the queue's limits, the
    /// configured [`Overflow`] decides. `from` is the connection the message came from.
    pub(super) fn enqueue(
        &mut self,
        session: SessionId,
        d: Delivery,
        from: Option<ConnId>,
        out: &mut Outbox,
    ) {
        if self.follows_spill(session, &d) {
            self.spill(session, &d, out);
            return;
        }
        let (max_messages, max_bytes) = (
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
        );
        let lossless = self.config.overflow == Overflow::Lossless;
        let over_total = lossless && self.over_total();
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let size = d.msg.kept_bytes();
        let full = at_limit(
            s.outbound.queue.len(),
            s.outbound.queued_bytes.saturating_add(size),
            max_messages,
            max_bytes.saturating_add(1),
        );
        if !full && !over_total {
            s.outbound.push_queued(d, usize::MAX, usize::MAX).ok();
            self.queued_total += size;
            return;
        }
        let outcome = if !lossless || d.qos == QoS::AtMostOnce {
            Outcome::Dropped
        } else if self.spillable(session, &d) {
            Outcome::Spilled
        } else {
            self.keep_beyond_limit(session, from)
        };
        match outcome {
            Outcome::Spilled => self.spill(session, &d, out),
            Outcome::Kept(hold) => {
                if let Some(s) = self.sessions.get_mut(session) {
                    s.outbound.push_queued(d, usize::MAX, usize::MAX).ok();
                    self.queued_total += size;
                }
                if let Some(publisher) = hold {
                    self.hold_publisher(session, publisher, full, out);
                }
            }
            Outcome::Dropped => self.drop_queue_full(session, &d, out),
        }
    }

    /// For a message at the limit that cannot be spilled: whether it is kept (and whom to
    /// hold back), or dropped because nobody can be held back for it.
    fn keep_beyond_limit(&self, session: SessionId, from: Option<ConnId>) -> Outcome {
        let Some(s) = self.sessions.get(session) else {
            return Outcome::Dropped;
        };
        let Some(own) = s.conn else {
            // Offline: it would never drain, so it holds nobody back.
            return Outcome::Dropped;
        };
        let from = from.filter(|p| self.conns.contains_key(p));
        match from {
            Some(publisher) if publisher != own => Outcome::Kept(Some(publisher)),
            // Its own publishes: holding it back would stop its acknowledgements too, so they
            // are kept within the limit of all queues together, and past that it is held
            // back all the same (a slow consumer then, if it cannot drain).
            Some(publisher) if self.over_total() => Outcome::Kept(Some(publisher)),
            Some(_) => Outcome::Kept(None),
            // A message from NATS or a will: nobody to hold back; kept up to twice the
            // session's limit.
            None => {
                let cap = self.config.max_queued_messages.saturating_mul(2);
                let cap_bytes = self.config.max_queued_bytes.saturating_mul(2);
                if at_limit(
                    s.outbound.queue.len(),
                    s.outbound.queued_bytes,
                    cap,
                    cap_bytes,
                ) {
                    Outcome::Dropped
                } else {
                    Outcome::Kept(None)
                }
            }
        }
    }

    /// Drops `d` for `session` (the queue is full), counted and reported; its stored copy is
    /// released, or the store would keep it for the session forever.
    fn drop_queue_full(&mut self, session: SessionId, d: &Delivery, out: &mut Outbox) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let client_id = s.key.client_id.clone();
        if d.qos == QoS::AtMostOnce {
            self.stats.dropped_slow_consumer += 1;
            return;
        }
        self.stats.dropped_queue_full += 1;
        self.ack_stored(session, d, out);
        out.push(Action::Notice(Notice::QueueOverflow { client_id }));
    }

    /// The session's overload state, made when first needed.
    fn overload_mut(&mut self, session: SessionId) -> Option<&mut Overload> {
        let now = self.now.instant;
        let s = self.sessions.get_mut(session)?;
        Some(
            s.outbound
                .overload
                .get_or_insert_with(|| Box::new(Overload::new(now))),
        )
    }

    /// Leaves stored message `d` in the store for `session`: it is read back as the queue
    /// drains.
    fn spill(&mut self, session: SessionId, d: &Delivery, out: &mut Outbox) {
        let Some(seq) = d.msg.seq else {
            return;
        };
        self.stats.spilled += 1;
        let Some(o) = self.overload_mut(session) else {
            return;
        };
        o.spill(seq);
        self.read_spill_if_room(session, out);
    }

    /// Stops reading `publisher` until `session`'s queue drains to half (or, for a session
    /// within its own limits, until all queues together are under theirs).
    fn hold_publisher(
        &mut self,
        session: SessionId,
        publisher: ConnId,
        session_full: bool,
        out: &mut Outbox,
    ) {
        let newly = if session_full {
            let Some(o) = self.overload_mut(session) else {
                return;
            };
            o.hold(publisher)
        } else {
            self.conns.hold_for_total(publisher)
        };
        if !newly {
            return;
        }
        self.stats.publishers_held += 1;
        self.conns.hold(publisher, out);
        // The subscriber has `slow_consumer_timeout` to make progress from now on.
        let subscriber = self.sessions.get(session).and_then(|s| s.conn);
        if let (true, Some(conn)) = (session_full, subscriber) {
            let at = self
                .now
                .instant
                .saturating_add(self.config.slow_consumer_timeout);
            self.schedule_conn(conn, at);
        }
    }

    /// Notes that `session` made progress: it acknowledged a message, or its connection wrote.
    pub(super) fn note_progress(&mut self, session: SessionId) {
        let now = self.now.instant;
        if let Some(o) = self
            .sessions
            .get_mut(session)
            .and_then(|s| s.outbound.overload.as_deref_mut())
        {
            o.progress(now);
        }
    }

    /// After `session`'s queue shrank: reads its spill back when there is room, and lets the
    /// publishers it held go once the queue is down to half.
    pub(super) fn after_drain(&mut self, session: SessionId, out: &mut Outbox) {
        self.read_spill_if_room(session, out);
        let (max_messages, max_bytes) = (
            self.config.max_queued_messages / 2,
            self.config.max_queued_bytes / 2,
        );
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let drained = !at_limit(
            s.outbound.queue.len(),
            s.outbound.queued_bytes,
            max_messages.max(1),
            max_bytes.max(1),
        );
        if drained {
            self.release_held(session);
        }
        self.release_held_for_total();
    }

    /// Lets go of every publisher `session` held back (its queue drained, or it went offline
    /// or away).
    pub(super) fn release_held(&mut self, session: SessionId) {
        let Some(o) = self
            .sessions
            .get_mut(session)
            .and_then(|s| s.outbound.overload.as_deref_mut())
        else {
            return;
        };
        let held = o.take_held();
        if o.is_idle() {
            if let Some(s) = self.sessions.get_mut(session) {
                s.outbound.overload = None;
            }
        }
        for publisher in held {
            self.conns.unhold(publisher);
        }
    }

    /// Lets go of the publishers held for the total limit once all queues are at three
    /// quarters of it.
    pub(super) fn release_held_for_total(&mut self) {
        let max = self.config.max_total_queued_bytes;
        if !self.conns.any_held_for_total() || self.queued_total > max / 4 * 3 {
            return;
        }
        self.conns.release_held_for_total();
    }

    /// At the end of a call: reads again from the publishers let go during it, unless another
    /// reason to pause them stands.
    pub(super) fn resume_released(&mut self, out: &mut Outbox) {
        let limit = self.config.max_pending_per_connection / 2;
        while let Some(conn) = self.conns.next_to_resume(limit, out) {
            self.process_inbuf(conn, out);
        }
    }

    /// Reads `session`'s first spilled messages back when it is online, no read is out, and
    /// its queue is at half its limit or less: as many as the queue has room for.
    fn read_spill_if_room(&mut self, session: SessionId, out: &mut Outbox) {
        let max = self.config.max_queued_messages;
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let queued = s.outbound.queue.len();
        let online = s.conn.is_some();
        let Some(o) = s.outbound.overload.as_deref_mut() else {
            return;
        };
        if !online || queued > max / 2 {
            return;
        }
        let Some(seqs) = o.start_read(max.saturating_sub(queued)) else {
            return;
        };
        for seq in seqs {
            let request = StoreRequest::Get {
                stream: Stream::Messages,
                seq,
            };
            self.request(request, RequestOwner::Spill { session, seq }, out);
        }
    }

    /// One answer of a read of `session`'s spill. Once all are in, the spilled messages are
    /// queued in the order they were spilled, up to the first whose read failed (read again
    /// later); a message the store no longer has (expired, or its consumer gone) is skipped.
    pub(super) fn on_spill_read(
        &mut self,
        session: SessionId,
        seq: u64,
        reply: Result<StoreReply, StoreError>,
        out: &mut Outbox,
    ) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let consumer = s.consumer();
        let Some(o) = s.outbound.overload.as_deref_mut() else {
            return;
        };
        let got = match reply {
            Ok(StoreReply::Message(m)) => Some(m),
            _ => None,
        };
        let Some(ready) = o.read_answered(seq, got) else {
            return;
        };
        let by_consumer = std::iter::once((consumer.clone(), session)).collect();
        for mut record in ready {
            record.pending_for = vec![consumer.clone()];
            self.restore_message(&record, &by_consumer, false, out);
        }
        if let Some(s) = self.sessions.get_mut(session) {
            if s.outbound
                .overload
                .as_deref()
                .is_some_and(Overload::is_idle)
            {
                s.outbound.overload = None;
            }
        }
        self.fill_window(session, out);
        self.read_spill_if_room(session, out);
    }
}
