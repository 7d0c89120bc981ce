//! [`Overload`]: what a session that cannot keep up remembers (see `overflow.rs`): the stored
//! messages it left in its consumer (spilled), the read of them back that is out, the
//! publishers it holds back, and when it last made progress.

use std::collections::{BTreeMap, VecDeque};

use super::io::ConnId;
use crate::js::StoredMessage;
use crate::time::Timestamp;

/// The most spilled messages read back at once: a read is one store request per message, and
/// the store serves them in turn with everyone's writes, so a large read would hold up the
/// publishers' acknowledgements behind it.
const SPILL_READ_BATCH: usize = 256;

/// A session that could not keep up: what it spilled and whom it holds back. Boxed in the
/// session's outbound state only while the session is overloaded.
#[derive(Debug)]
pub(crate) struct Overload {
    /// Publishers not read until this session's queue drains to half.
    held: Vec<ConnId>,
    /// The stored messages left in the store for the session, by sequence, in the order they
    /// were routed to it.
    spilled: VecDeque<u64>,
    /// The read of the first spilled messages that is out.
    reading: Option<SpillRead>,
    /// When the session last acknowledged a message or its connection wrote bytes.
    last_progress: Timestamp,
}

/// A read of the first `asked` spilled messages of a session, one request each.
#[derive(Debug)]
struct SpillRead {
    asked: usize,
    /// Replies still to come.
    waiting: usize,
    /// What came back by sequence: the message, or `None` when the store has it no more.
    got: BTreeMap<u64, Option<StoredMessage>>,
}

impl Overload {
    /// Nothing spilled or held yet; progress counts from `now`.
    pub(crate) fn new(now: Timestamp) -> Self {
        Self {
            held: Vec::new(),
            spilled: VecDeque::new(),
            reading: None,
            last_progress: now,
        }
    }

    /// Whether this session's stored messages are being kept in its consumer only.
    pub(crate) fn spilled(&self) -> bool {
        !self.spilled.is_empty()
    }

    /// Whether nothing is left to remember.
    pub(crate) fn is_idle(&self) -> bool {
        self.spilled.is_empty() && self.reading.is_none() && self.held.is_empty()
    }

    /// When a subscriber holding publishers back counts as a slow consumer, if it holds any.
    pub(crate) fn stall_deadline(&self, timeout: std::time::Duration) -> Option<Timestamp> {
        (!self.held.is_empty()).then(|| self.last_progress.saturating_add(timeout))
    }

    /// Notes that stored message `seq` stays in the session's consumer, after those spilled
    /// before.
    pub(crate) fn spill(&mut self, seq: u64) {
        self.spilled.push_back(seq);
    }

    /// Holds `publisher` back for this session; false when it is held already.
    pub(crate) fn hold(&mut self, publisher: ConnId) -> bool {
        if self.held.contains(&publisher) {
            return false;
        }
        self.held.push(publisher);
        true
    }

    /// Lets go of every publisher held back, and returns them.
    pub(crate) fn take_held(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.held)
    }

    /// The session made progress at `now`.
    pub(crate) fn progress(&mut self, now: Timestamp) {
        self.last_progress = now;
    }

    /// Starts reading back the first spilled messages, as many as `room` (at least one, at
    /// most a batch): their sequences, to read one request each; `None` while a read is out
    /// or nothing is spilled.
    pub(crate) fn start_read(&mut self, room: usize) -> Option<Vec<u64>> {
        if self.reading.is_some() || self.spilled.is_empty() {
            return None;
        }
        let asked = room.clamp(1, self.spilled.len()).min(SPILL_READ_BATCH);
        self.reading = Some(SpillRead {
            asked,
            waiting: asked,
            got: BTreeMap::new(),
        });
        Some(self.spilled.iter().take(asked).copied().collect())
    }

    /// One answer of the read out: for `seq`, the message (`Some(None)`: the store has it no
    /// more), or `None` when the read failed. Once all are in, the spilled messages read
    /// back, in the order they were spilled, up to the first whose read failed (it and what
    /// follows wait for the next read); a message the store no longer has is skipped.
    pub(crate) fn read_answered(
        &mut self,
        seq: u64,
        got: Option<Option<StoredMessage>>,
    ) -> Option<Vec<StoredMessage>> {
        let read = self.reading.as_mut()?;
        read.waiting = read.waiting.saturating_sub(1);
        if let Some(m) = got {
            read.got.insert(seq, m);
        }
        if read.waiting > 0 {
            return None;
        }
        let mut read = self.reading.take()?;
        let mut ready = Vec::new();
        for _ in 0..read.asked {
            let Some(front) = self.spilled.front().copied() else {
                break;
            };
            match read.got.remove(&front) {
                Some(found) => {
                    self.spilled.pop_front();
                    ready.extend(found);
                }
                // Its read failed: it and what follows wait for the next read.
                None => break,
            }
        }
        Some(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::js::Stream;

    fn message(seq: u64) -> StoredMessage {
        StoredMessage {
            stream: Stream::Messages,
            subject: "$MQTT.msgs.a".into(),
            seq,
            headers: Vec::new(),
            payload: bytes::Bytes::new(),
            pending_for: Vec::new(),
        }
    }

    #[test]
    fn spilled_messages_come_back_in_order_up_to_the_first_failed_read() {
        let mut o = Overload::new(Timestamp::from_nanos(0));
        for seq in [5, 3, 9] {
            o.spill(seq);
        }
        assert!(o.spilled());
        assert_eq!(o.start_read(10), Some(vec![5, 3, 9]));
        assert_eq!(o.start_read(10), None, "one read at a time");
        assert_eq!(o.read_answered(9, Some(Some(message(9)))), None);
        assert_eq!(o.read_answered(3, None), None, "a failed read");
        let ready = o
            .read_answered(5, Some(Some(message(5))))
            .expect("all answered");
        assert_eq!(ready.iter().map(|m| m.seq).collect::<Vec<_>>(), [5]);
        assert_eq!(
            o.start_read(1),
            Some(vec![3]),
            "the failed one is read again first"
        );
        let ready = o.read_answered(3, Some(None)).expect("answered");
        assert!(ready.is_empty(), "gone from the store: skipped");
        assert_eq!(o.start_read(0), Some(vec![9]), "at least one");
    }

    #[test]
    fn a_publisher_is_held_once_and_stalls_count_from_the_last_progress() {
        let mut o = Overload::new(Timestamp::from_nanos(0));
        let publisher = ConnId::new(4).expect("non-zero");
        let timeout = std::time::Duration::from_secs(1);
        assert_eq!(o.stall_deadline(timeout), None, "holds nobody");
        assert!(o.hold(publisher));
        assert!(!o.hold(publisher));
        o.progress(Timestamp::from_nanos(7));
        assert_eq!(
            o.stall_deadline(timeout),
            Some(Timestamp::from_nanos(7).saturating_add(timeout))
        );
        assert_eq!(o.take_held(), [publisher]);
        assert!(o.is_idle());
    }
}
