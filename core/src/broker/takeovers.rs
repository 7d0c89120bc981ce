//! Flapping protection: how often each client identifier was taken over lately. Two clients
//! that share an identifier (a copied configuration, a device cloned with its settings) take
//! each other over as fast as they reconnect, each connect costing a CONNACK, a session
//! handover and, in a fleet, a notice to every node. Once an identifier has been taken over
//! [`BrokerConfig::takeover_limit`](super::BrokerConfig::takeover_limit) times within
//! [`BrokerConfig::takeover_window`](super::BrokerConfig::takeover_window), further CONNECTs
//! for it are held for a second and refused (0x9F Connection rate exceeded) until the window
//! ends, so the connection that is in keeps its session. The NATS server's "flapper jail"
//! does this after a single takeover; counting lets a client that reconnects quickly after
//! one takeover (a network change) through.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::session::SessionKey;
use crate::time::Instant;

/// Takeovers per client identifier, each counted in a window that starts at its first one.
#[derive(Debug, Default)]
pub(super) struct TakeoverCounter {
    /// Window start and takeovers in it, by session key.
    counts: BTreeMap<SessionKey, (Instant, u32)>,
    /// Window starts in order, to forget ended windows without a scan.
    starts: VecDeque<(Instant, SessionKey)>,
}

impl TakeoverCounter {
    /// Counts a takeover of `key` at `now`; true when this one reaches `limit` (the moment
    /// to tell the operator). A `limit` of 0 counts nothing.
    pub(super) fn record(
        &mut self,
        key: &SessionKey,
        now: Instant,
        limit: u32,
        window: Duration,
    ) -> bool {
        if limit == 0 {
            return false;
        }
        self.forget_ended(now, window);
        match self.counts.get_mut(key) {
            Some((_, count)) => {
                *count = count.saturating_add(1);
                *count == limit
            }
            None => {
                self.counts.insert(key.clone(), (now, 1));
                self.starts.push_back((now, key.clone()));
                limit == 1
            }
        }
    }

    /// Whether `key` has been taken over `limit` times in its current window.
    pub(super) fn exceeded(
        &mut self,
        key: &SessionKey,
        now: Instant,
        limit: u32,
        window: Duration,
    ) -> bool {
        if limit == 0 {
            return false;
        }
        self.forget_ended(now, window);
        self.counts
            .get(key)
            .is_some_and(|(_, count)| *count >= limit)
    }

    /// Drops the windows that ended by `now`.
    fn forget_ended(&mut self, now: Instant, window: Duration) {
        while let Some((start, _)) = self.starts.front() {
            if start.saturating_add(window) > now {
                break;
            }
            if let Some((start, key)) = self.starts.pop_front() {
                if self.counts.get(&key).is_some_and(|(s, _)| *s == start) {
                    self.counts.remove(&key);
                }
            }
        }
    }

    /// Identifiers with a window open (for tests of the bookkeeping).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> SessionKey {
        SessionKey {
            account: "$G".into(),
            client_id: id.into(),
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn the_limit_holds_within_the_window_and_ends_with_it() {
        let mut t = TakeoverCounter::default();
        let w = Duration::from_secs(10);
        let k = key("twin");
        assert!(!t.record(&k, at(0), 3, w));
        assert!(!t.exceeded(&k, at(1), 3, w));
        assert!(!t.record(&k, at(2), 3, w));
        assert!(t.record(&k, at(3), 3, w), "the third reaches the limit");
        assert!(!t.record(&k, at(4), 3, w), "reported once");
        assert!(t.exceeded(&k, at(9_999), 3, w));
        assert!(!t.exceeded(&key("other"), at(9_999), 3, w));
        assert!(!t.exceeded(&k, at(10_000), 3, w), "the window ended");
        assert_eq!(t.len(), 0, "and was forgotten");
        // A new window starts at the next takeover.
        assert!(!t.record(&k, at(10_001), 3, w));
        assert!(!t.exceeded(&k, at(10_002), 3, w));
    }

    #[test]
    fn a_limit_of_zero_counts_nothing() {
        let mut t = TakeoverCounter::default();
        let w = Duration::from_secs(10);
        for ms in 0..100 {
            assert!(!t.record(&key("x"), at(ms), 0, w));
        }
        assert!(!t.exceeded(&key("x"), at(100), 0, w));
        assert_eq!(t.len(), 0);
    }
}
