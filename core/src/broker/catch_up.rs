//! Catching up with a fleet session's consumer after it was loaded here (or its subscriptions
//! changed). A persistent session's messages reach a fleet node two ways: live, through the
//! node's NATS subscriptions, and stored, through the session's consumer (read when the
//! session is loaded). Around a load the two overlap or miss each other:
//! - a message another node stores after the consumer read (or after the consumer took a new
//!   filter) but before this node's NATS subscription for it has taken effect at the NATS
//!   server comes neither way, and would wait in the consumer until the session is next
//!   loaded: so a little after, the consumer is read once more ([`CATCH_UP_AFTER`]);
//! - a message stored before the load whose live copy is still on its way (the storing
//!   node's NATS connection was slow to send it) comes both ways: its live copy is dropped
//!   while the session holds the message, or has had it from the load.
//!
//! What a session already holds, had from its load, or released while a read was out is not
//! delivered again.

use std::collections::BTreeSet;
use std::time::Duration;

use super::io::Outbox;
use super::requests::RequestOwner;
use super::sessions::SessionId;
use super::{Broker, Timer};
use crate::js::{StoreError, StoreReply, StoreRequest, Stream};

/// When a session's consumer is read again after its subscriptions took effect here: long
/// past the moment this node's NATS subscriptions reach the server, twice in case the first
/// came too early on a busy machine. The last read ends the catch-up.
const CATCH_UP_AFTER: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];

/// A session catching up after its load or subscription change.
#[derive(Debug)]
pub(super) struct CatchUp {
    /// The stored messages it had from its load.
    loaded: BTreeSet<u64>,
    /// Whether a read of its consumer is out.
    reading: bool,
    /// Whether the last read is due or out: its answer ends the catch-up.
    last: bool,
    /// Stored messages the session released while a read was out.
    released: Vec<u64>,
}

impl Broker {
    /// Starts (or restarts) `session`'s catch-up, fleet nodes and persistent sessions only;
    /// `loaded` are the stored messages it just had from its consumer.
    pub(super) fn schedule_catch_up(&mut self, session: SessionId, loaded: BTreeSet<u64>) {
        if !(self.config.cluster.is_fleet()) {
            return;
        }
        if self.persistent_session(session).is_none() {
            return;
        }
        match self.catch_ups.get_mut(&session) {
            Some(c) => {
                c.loaded.extend(loaded);
                c.last = false;
            }
            None => {
                self.catch_ups.insert(
                    session,
                    CatchUp {
                        loaded,
                        reading: false,
                        last: false,
                        released: Vec::new(),
                    },
                );
            }
        }
        for (i, after) in CATCH_UP_AFTER.into_iter().enumerate() {
            let at = self.now.instant.saturating_add(after);
            let last = i + 1 == CATCH_UP_AFTER.len();
            self.schedule(at, Timer::CatchUp(session, last));
        }
    }

    /// A catch-up read is due: the session's consumer is read unless a read is still out, or
    /// the session is offline (a read hands the consumer's messages to this node until they
    /// are acknowledged, so a session that may resume elsewhere is left to its next load).
    pub(super) fn on_catch_up_timer(&mut self, session: SessionId, last: bool, out: &mut Outbox) {
        let Some(s) = self.persistent_session(session) else {
            return;
        };
        if s.conn.is_none() {
            // No read now; the last timer ends the catch-up (at the answer of a read out).
            match self.catch_ups.get_mut(&session) {
                Some(c) if last && c.reading => c.last = true,
                Some(_) if last => {
                    self.catch_ups.remove(&session);
                }
                _ => {}
            }
            return;
        }
        let consumer = s.consumer();
        // A later schedule's timers find the catch-up an earlier one's last read ended.
        let c = self.catch_ups.entry(session).or_insert_with(|| CatchUp {
            loaded: BTreeSet::new(),
            reading: false,
            last: false,
            released: Vec::new(),
        });
        c.last |= last;
        if c.reading {
            return;
        }
        c.reading = true;
        let request = StoreRequest::Pending {
            consumer,
            limit: self.config.max_queued_messages,
        };
        self.request(request, RequestOwner::CatchUp { session }, out);
    }

    /// Notes that `session` released stored message `seq`, for a catch-up read out.
    pub(super) fn note_released(&mut self, session: SessionId, seq: u64) {
        if let Some(c) = self.catch_ups.get_mut(&session).filter(|c| c.reading) {
            c.released.push(seq);
        }
    }

    /// Whether a live copy of stored message `seq` would be a second copy for `session`,
    /// which is catching up: it holds the message, or had it from its load.
    pub(super) fn has_had(&self, session: SessionId, seq: u64) -> bool {
        let (Some(c), Some(s)) = (self.catch_ups.get(&session), self.sessions.get(session)) else {
            return false;
        };
        c.loaded.contains(&seq) || s.outbound.holds(seq)
    }

    /// The answer to a catch-up read: the messages the session has not had are queued for it.
    pub(super) fn on_caught_up(
        &mut self,
        session: SessionId,
        reply: Result<StoreReply, StoreError>,
        out: &mut Outbox,
    ) {
        let Some(c) = self.catch_ups.get_mut(&session) else {
            return;
        };
        c.reading = false;
        let released = std::mem::take(&mut c.released);
        let fresh: Vec<_> = match reply {
            Ok(StoreReply::Messages(messages)) => messages
                .into_iter()
                .filter(|m| m.stream == Stream::Messages)
                .filter(|m| !released.contains(&m.seq) && !c.loaded.contains(&m.seq))
                .collect(),
            _ => Vec::new(),
        };
        if c.last {
            self.catch_ups.remove(&session);
        }
        let Some(s) = self.sessions.get(session) else {
            self.catch_ups.remove(&session);
            return;
        };
        let by_consumer = std::iter::once((s.consumer(), session)).collect();
        for message in &fresh {
            self.restore_message(message, &by_consumer, true, out);
        }
        self.fill_window(session, out);
    }
}
