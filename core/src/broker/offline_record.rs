//! The record a fleet node writes when a persistent session's client leaves it (or the node
//! stops). Another node may have connected the client a moment before (its connect notice
//! still on the way, or lost while NATS was away) and written its own record: a plain write
//! would put this node's older view over it, and a later load, restart or expiry check would
//! trust that. So the record is read first: when it holds a later connect's stamp, the session
//! went on elsewhere and this node only forgets its copy; otherwise this node's record is
//! written on condition that the record read is still the last
//! ([`EXPECTED_LAST_SUBJECT_SEQUENCE`]), and read again when another write came between.

use super::io::Outbox;
use super::lifecycle::record_stamp;
use super::persist::{session_record_read, RequestOwner};
use super::session::SessionId;
use super::Broker;
use crate::js::{Header, StoreError, StoreReply, StoreRequest, EXPECTED_LAST_SUBJECT_SEQUENCE};

/// How many times the record is read and written before the node gives up (each retry
/// means another write came between the read and the write).
pub(super) const RECORD_ATTEMPTS: u8 = 3;

impl Broker {
    /// Writes `session`'s record now that its client left: on a fleet node only over the
    /// record it read, plainly otherwise (no other broker writes it).
    pub(super) fn save_offline_record(&mut self, session: SessionId, out: &mut Outbox) {
        if self.config.fleet {
            self.check_record(session, 1, out);
        } else {
            self.save_session_record(session, out);
        }
    }

    /// Reads the stored record of `session` (attempt `attempt`).
    fn check_record(&mut self, session: SessionId, attempt: u8, out: &mut Outbox) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let request = session_record_read(&s.key.client_id);
        let owner = RequestOwner::RecordCheck {
            session,
            uid: s.uid,
            attempt,
        };
        self.request(request, owner, out);
    }

    /// The stored record was read: a later connect's record means the client went on through
    /// another node (the copy here is forgotten unless its client came back meanwhile);
    /// otherwise this node's record replaces it, on condition that it is still the last.
    pub(super) fn on_record_checked(
        &mut self,
        session: SessionId,
        (uid, attempt): (u64, u8),
        reply: Result<StoreReply, StoreError>,
        out: &mut Outbox,
    ) {
        let Some(s) = self.persistent_session(session, uid) else {
            return;
        };
        // A failed read was reported; the record stays as it was.
        let Ok(StoreReply::Message(stored)) = reply else {
            return;
        };
        let (seq, stamp) = stored.as_ref().map_or((0, 0), |m| (m.seq, record_stamp(m)));
        if stamp > s.connect_stamp {
            if s.conn.is_none() {
                self.remove_session(session, out);
            }
            return;
        }
        let Some(StoreRequest::Publish {
            stream,
            subject,
            mut headers,
            payload,
        }) = self.record_request(session)
        else {
            return;
        };
        headers.push(Header {
            name: EXPECTED_LAST_SUBJECT_SEQUENCE,
            value: seq.to_string().into(),
        });
        let request = StoreRequest::Publish {
            stream,
            subject,
            headers,
            payload,
        };
        let owner = RequestOwner::RecordWrite {
            session,
            uid,
            attempt,
        };
        self.request(request, owner, out);
    }

    /// The conditional write was answered: refused because another write came after the
    /// read, the record is read again (a few times).
    pub(super) fn on_record_written(
        &mut self,
        session: SessionId,
        (uid, attempt): (u64, u8),
        reply: &Result<StoreReply, StoreError>,
        out: &mut Outbox,
    ) {
        let again = matches!(reply, Err(StoreError::Rejected(_))) && attempt < RECORD_ATTEMPTS;
        if again && self.sessions.get(session).is_some_and(|s| s.uid == uid) {
            self.check_record(session, attempt + 1, out);
        }
    }
}
