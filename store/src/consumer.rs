//! Durable consumers as the writer thread keeps them in memory: filter subjects and ack wait
//! (loaded from disk), and when each pending message was last handed out (memory only).
//!
//! Delivery times are not persisted: after a restart every pending message counts as never
//! delivered, which is what a reconnecting MQTT session wants anyway (it resends everything
//! unacknowledged with DUP set).

use std::collections::BTreeMap;

use bytestring::ByteString;
use jetmq_core::time::Instant;

use jetmq_core::js::subjects::subject_matches;

use crate::codec::ConsumerRecord;

/// One durable consumer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Consumer {
    /// What is on disk.
    pub(crate) record: ConsumerRecord,
    /// Pending sequences handed out by `fetch`, with when.
    pub(crate) delivered: BTreeMap<u64, Instant>,
}

impl Consumer {
    /// Whether a message on `subject` becomes pending for this consumer.
    pub(crate) fn wants(&self, subject: &str) -> bool {
        self.record
            .filters
            .iter()
            .any(|f| subject_matches(f, subject))
    }

    /// Whether a handed-out message may be handed out again at `now`.
    fn expired(&self, at: Instant, now: Instant) -> bool {
        self.record
            .ack_wait
            .is_some_and(|wait| now.saturating_duration_since(at) >= wait)
    }

    /// How many more messages `fetch` may hand out at `now` without exceeding
    /// `max_ack_pending` unexpired deliveries.
    pub(crate) fn budget(&self, max_ack_pending: usize, now: Instant) -> usize {
        let outstanding = self
            .delivered
            .values()
            .filter(|at| !self.expired(**at, now))
            .count();
        max_ack_pending.saturating_sub(outstanding)
    }

    /// Whether the pending message `seq` is due at `now`: never handed out, or handed out longer
    /// than the ack wait ago.
    pub(crate) fn due(&self, seq: u64, now: Instant) -> bool {
        self.delivered
            .get(&seq)
            .is_none_or(|at| self.expired(*at, now))
    }
}

/// Every durable consumer, by name (so `pending_for` lists come out in name order).
pub(crate) type Consumers = BTreeMap<ByteString, Consumer>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn due_and_budget() {
        let mut c = Consumer::default();
        c.delivered.insert(1, at(0));
        assert!(!c.due(1, at(10_000)), "no ack wait: never redelivered");
        assert!(c.due(2, at(0)));
        assert_eq!(c.budget(3, at(0)), 2);
        c.record.ack_wait = Some(Duration::from_secs(1));
        assert!(!c.due(1, at(999)));
        assert!(c.due(1, at(1000)));
        assert_eq!(
            c.budget(3, at(1000)),
            3,
            "an expired delivery no longer counts"
        );
        assert_eq!(c.budget(0, at(0)), 0);
    }
}
