//! [`StoreRequests`]: the store requests the broker has issued and not yet seen answered, each
//! with the [`RequestOwner`] its reply (or its timeout) goes to.
//!
//! A request is numbered once ([`RequestId`]s are never reused) and forgotten when its reply
//! or its timeout comes, whichever is first: a reply after the timeout is an unknown request.
//! An owner names its session by [`SessionId`], so a reply for a session that ended never
//! reaches a later session of the same slot.

use std::collections::BTreeMap;
use std::time::Duration;

use super::io::ConnId;
use super::sessions::SessionId;
use crate::codec::PacketId;
use crate::js::RequestId;
use crate::time::Timestamp;

/// What a write contributes to the packet waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// The message itself in the messages stream: its reply carries the stream sequence.
    Message,
    /// Any other write.
    Other,
}

/// Who waits for a store request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestOwner {
    /// A pipeline entry of a connection (or of the broker itself, for `None`).
    Pipeline {
        conn: Option<ConnId>,
        token: u64,
        kind: Write,
    },
    /// A connection whose session is being loaded ([`Phase::Loading`](super::connection::Phase)).
    Load { conn: ConnId },
    /// A fleet node's offline session whose expiry is due, checked against its stored record
    /// (its `generation` tells the expiry from a later one of the same session).
    Expiry { session: SessionId, generation: u64 },
    /// The PUBREL record of an outbound QoS 2 flow: once it is written, the stored message
    /// `seq` it replaces can be acknowledged (until then the message is what a restart sends
    /// again).
    PubRelRecord {
        session: SessionId,
        pid: PacketId,
        seq: u64,
    },
    /// A catch-up read of a fleet session's consumer.
    CatchUp { session: SessionId },
    /// A read of a message a session spilled (see `overflow.rs`): stored message `seq`.
    Spill { session: SessionId, seq: u64 },
    /// The read of a fleet session's stored record before this node's record is written over
    /// it (attempt `attempt`).
    RecordCheck { session: SessionId, attempt: u8 },
    /// The conditional write of a fleet session's record (see `fleet_record`).
    RecordWrite { session: SessionId, attempt: u8 },
    /// A write of a persistent session's subscription save (see `subscription_save`).
    SubscriptionSave { session: SessionId },
    /// Nobody: a failure is reported and counted.
    Background,
}

/// A request just issued: its number, and when it times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Issued {
    /// The number its reply carries.
    pub(crate) id: RequestId,
    /// When it counts as failed if no reply came.
    pub(crate) deadline: Timestamp,
}

/// The store requests waiting for their replies, by number, with their owners.
#[derive(Debug)]
pub(crate) struct StoreRequests {
    owners: BTreeMap<RequestId, RequestOwner>,
    /// The last number handed out.
    issued: u64,
    /// How long a request may wait for its reply.
    timeout: Duration,
}

impl StoreRequests {
    /// No request yet; each one issued times out after `timeout`.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            owners: BTreeMap::new(),
            issued: 0,
            timeout,
        }
    }

    /// Issues a request for `owner` at `now`: the next number, and its deadline.
    pub(crate) fn issue(&mut self, owner: RequestOwner, now: Timestamp) -> Issued {
        self.issued += 1;
        let id = RequestId(self.issued);
        self.owners.insert(id, owner);
        Issued {
            id,
            deadline: now.saturating_add(self.timeout),
        }
    }

    /// The owner of request `id`, now answered (it is forgotten); `None` for a request that
    /// is unknown or was answered (or timed out) before.
    pub(crate) fn answer(&mut self, id: RequestId) -> Option<RequestOwner> {
        self.owners.remove(&id)
    }

    /// Whether request `id` still waits for its reply (its timeout, when due, fails it).
    pub(crate) fn is_waiting(&self, id: RequestId) -> bool {
        self.owners.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_once_and_numbers_are_never_reused() {
        let mut requests = StoreRequests::new(Duration::from_secs(10));
        let now = Timestamp::from_nanos(5);
        let first = requests.issue(RequestOwner::Background, now);
        let load = RequestOwner::Load {
            conn: ConnId::new(3).expect("non-zero"),
        };
        let second = requests.issue(load, now);
        assert_ne!(first.id, second.id);
        assert_eq!(first.deadline, now.saturating_add(Duration::from_secs(10)));
        assert!(requests.is_waiting(second.id));
        assert_eq!(requests.answer(second.id), Some(load));
        assert!(!requests.is_waiting(second.id));
        assert_eq!(requests.answer(second.id), None, "answered before");
        assert_eq!(requests.answer(RequestId(99)), None, "never issued");
        let third = requests.issue(RequestOwner::Background, now);
        assert!(third.id > second.id);
    }
}
