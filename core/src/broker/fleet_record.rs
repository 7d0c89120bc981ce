//! How a fleet node writes a session's record without replacing one another node wrote since.
//! A client may move between nodes faster than their connect notices travel (or while one
//! node's NATS connection is away), and a plain write would then put an older view of the
//! session over the newer one, which a later load, restart or expiry check would trust. The
//! records written when a connect is bound and when its client leaves the node (or the node
//! stops) are therefore written on condition that the record the node read is still the last
//! ([`EXPECTED_LAST_SUBJECT_SEQUENCE`](crate::js::EXPECTED_LAST_SUBJECT_SEQUENCE)): a resume's over the record its load read, the others
//! over a record read just before.
//!
//! When another write came between, the record is read again: a later connect's stamp in it
//! means the session went on elsewhere, and this node writes nothing (and forgets its copy if
//! its client is gone); otherwise its record is written over the one read, a few times at
//! most.

use super::io::Outbox;
use super::requests::RequestOwner;
use super::sessions::SessionId;
use super::Broker;
use crate::js::{records, StoreError, StoreReply};

/// How many times the record is written before the node gives up (each retry means another
/// write came between a read and the write).
const RECORD_ATTEMPTS: u8 = 3;

/// Whether write attempt `attempt`, answered `reply`, is read and written again: it was
/// refused because another write came first (a wrong last sequence; any other refusal is a
/// failure) and attempts are left. Such a refusal is no failure.
pub(super) fn retries_record_write(attempt: u8, reply: &Result<StoreReply, StoreError>) -> bool {
    matches!(reply, Err(e) if e.is_wrong_last_sequence()) && attempt < RECORD_ATTEMPTS
}

impl Broker {
    /// Writes `session`'s record now that its client left: on a fleet node only over the
    /// record it reads first, plainly otherwise (no other broker writes it).
    pub(super) fn save_offline_record(&mut self, session: SessionId, out: &mut Outbox) {
        if self.config.cluster.is_fleet() {
            self.check_record(session, 1, out);
        } else {
            self.save_session_record(session, out);
        }
    }

    /// Reads the stored record of `session` before write attempt `attempt`.
    pub(super) fn check_record(&mut self, session: SessionId, attempt: u8, out: &mut Outbox) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let request = records::session_read(&s.key.client_id);
        let owner = RequestOwner::RecordCheck { session, attempt };
        self.request(request, owner, out);
    }

    /// The stored record was read: a later connect's record means the client went on through
    /// another node (the copy here is forgotten unless its client is connected here);
    /// otherwise this node's record replaces it, on condition that it is still the last.
    pub(super) fn on_record_checked(
        &mut self,
        session: SessionId,
        attempt: u8,
        reply: Result<StoreReply, StoreError>,
        out: &mut Outbox,
    ) {
        let Some(s) = self.persistent_session(session) else {
            return;
        };
        // A failed read was reported; the record stays as it was.
        let Ok(StoreReply::Message(stored)) = reply else {
            return;
        };
        let (seq, stamp) = stored
            .as_ref()
            .map_or((0, 0), |m| (m.seq, records::record_stamp(m)));
        if stamp > s.connect_stamp {
            if s.conn.is_none() {
                self.remove_session(session, out);
            }
            return;
        }
        self.write_record_over(session, seq, attempt, out);
    }

    /// Writes `session`'s record on condition that the subject's last record is still `seq`
    /// (0: none), as write attempt `attempt`.
    pub(super) fn write_record_over(
        &mut self,
        session: SessionId,
        seq: u64,
        attempt: u8,
        out: &mut Outbox,
    ) {
        let Some(request) = self.record_request(session, Some(seq)) else {
            return;
        };
        let owner = RequestOwner::RecordWrite { session, attempt };
        self.request(request, owner, out);
    }

    /// The conditional write was answered: refused because another write came after the
    /// read, the record is read again (a few times).
    pub(super) fn on_record_written(
        &mut self,
        session: SessionId,
        attempt: u8,
        reply: &Result<StoreReply, StoreError>,
        out: &mut Outbox,
    ) {
        let again = retries_record_write(attempt, reply);
        if again && self.sessions.get(session).is_some() {
            self.check_record(session, attempt + 1, out);
        }
    }
}
