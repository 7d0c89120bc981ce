//! Durable consumers as the writer thread keeps them in memory: filter subjects and ack wait
//! (loaded from disk), and when each pending message was last handed out (memory only).
//!
//! Delivery times are not persisted: after a restart every pending message counts as never
//! delivered, which is what a reconnecting MQTT session wants anyway (it resends everything
//! unacknowledged with DUP set).

use std::collections::BTreeMap;

use bytestring::ByteString;
use jetmq_core::time::Timestamp;

use crate::codec::ConsumerRecord;
use jetmq_core::js::filter_index::FilterIndex;

/// One durable consumer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Consumer {
    /// What is on disk.
    pub(crate) record: ConsumerRecord,
    /// Pending sequences handed out by `fetch`, with when.
    pub(crate) delivered: BTreeMap<u64, Timestamp>,
}

impl Consumer {
    /// Whether a handed-out message may be handed out again at `now`.
    fn expired(&self, at: Timestamp, now: Timestamp) -> bool {
        self.record
            .ack_wait
            .is_some_and(|wait| now.saturating_duration_since(at) >= wait)
    }

    /// How many more messages `fetch` may hand out at `now` without exceeding
    /// `max_ack_pending` unexpired deliveries.
    pub(crate) fn budget(&self, max_ack_pending: usize, now: Timestamp) -> usize {
        let outstanding = self
            .delivered
            .values()
            .filter(|at| !self.expired(**at, now))
            .count();
        max_ack_pending.saturating_sub(outstanding)
    }

    /// Whether the pending message `seq` is due at `now`: never handed out, or handed out longer
    /// than the ack wait ago.
    pub(crate) fn due(&self, seq: u64, now: Timestamp) -> bool {
        self.delivered
            .get(&seq)
            .is_none_or(|at| self.expired(*at, now))
    }
}

/// Every durable consumer, by name, with an index of their filter subjects: finding the
/// consumers a message is for walks the subject's tokens rather than every consumer's filters.
#[derive(Debug, Default)]
pub(crate) struct Consumers {
    by_name: BTreeMap<ByteString, Consumer>,
    filters: FilterIndex,
}

impl Consumers {
    /// No consumers.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The consumer named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Consumer> {
        self.by_name.get(name)
    }

    /// The consumer named `name`, to change its deliveries or ack wait; its filters change
    /// only through [`Consumers::insert`], which keeps the index.
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Consumer> {
        self.by_name.get_mut(name)
    }

    /// Adds or replaces the consumer `name`.
    pub(crate) fn insert(&mut self, name: ByteString, consumer: Consumer) {
        let old = self
            .by_name
            .get(&name)
            .map_or(&[][..], |c| &c.record.filters);
        self.filters.replace(&name, old, &consumer.record.filters);
        self.by_name.insert(name, consumer);
    }

    /// Removes the consumer `name`.
    pub(crate) fn remove(&mut self, name: &str) {
        if let Some((name, old)) = self.by_name.remove_entry(name) {
            self.filters.replace(&name, &old.record.filters, &[]);
        }
    }

    /// How many consumers there are.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The consumers a message on `subject` becomes pending for, in name order.
    pub(crate) fn wanting(&self, subject: &str) -> Vec<ByteString> {
        self.filters.matching(subject)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
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
