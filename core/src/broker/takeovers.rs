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

use super::io::SessionKey;
use crate::time::Timestamp;

/// Takeovers per client identifier, each counted in a window that starts at its first one.
#[derive(Debug)]
pub(super) struct TakeoverCounter {
    /// Takeovers per window at which an identifier's CONNECTs are refused; 0: no limit.
    limit: u32,
    /// How long a window lasts.
    window: Duration,
    /// Window start and takeovers in it, by session key.
    counts: BTreeMap<SessionKey, (Timestamp, u32)>,
    /// Window starts in order, to forget ended windows without a scan.
    starts: VecDeque<(Timestamp, SessionKey)>,
}

impl TakeoverCounter {
    /// A counter refusing after `limit` takeovers (0: never) within `window`.
    pub(super) fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            counts: BTreeMap::new(),
            starts: VecDeque::new(),
        }
    }

    /// Counts a takeover of `key` at `now`; true when this one reaches the limit (the moment
    /// to tell the operator).
    pub(super) fn record(&mut self, key: &SessionKey, now: Timestamp) -> bool {
        if self.limit == 0 {
            return false;
        }
        self.forget_ended(now);
        match self.counts.get_mut(key) {
            Some((_, count)) => {
                *count = count.saturating_add(1);
                *count == self.limit
            }
            None => {
                self.counts.insert(key.clone(), (now, 1));
                self.starts.push_back((now, key.clone()));
                self.limit == 1
            }
        }
    }

    /// Whether `key` has reached the limit in its current window.
    pub(super) fn exceeded(&mut self, key: &SessionKey, now: Timestamp) -> bool {
        if self.limit == 0 {
            return false;
        }
        self.forget_ended(now);
        self.counts
            .get(key)
            .is_some_and(|(_, count)| *count >= self.limit)
    }

    /// Drops the windows that ended by `now`.
    fn forget_ended(&mut self, now: Timestamp) {
        while let Some((start, _)) = self.starts.front() {
            if start.saturating_add(self.window) > now {
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

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn the_limit_holds_within_the_window_and_ends_with_it() {
        let mut t = TakeoverCounter::new(3, Duration::from_secs(10));
        let k = key("twin");
        assert!(!t.record(&k, at(0)));
        assert!(!t.exceeded(&k, at(1)));
        assert!(!t.record(&k, at(2)));
        assert!(t.record(&k, at(3)), "the third reaches the limit");
        assert!(!t.record(&k, at(4)), "reported once");
        assert!(t.exceeded(&k, at(9_999)));
        assert!(!t.exceeded(&key("other"), at(9_999)));
        assert!(!t.exceeded(&k, at(10_000)), "the window ended");
        assert_eq!(t.len(), 0, "and was forgotten");
        // A new window starts at the next takeover.
        assert!(!t.record(&k, at(10_001)));
        assert!(!t.exceeded(&k, at(10_002)));
    }

    #[test]
    fn a_limit_of_zero_counts_nothing() {
        let mut t = TakeoverCounter::new(0, Duration::from_secs(10));
        for ms in 0..100 {
            assert!(!t.record(&key("x"), at(ms)));
        }
        assert!(!t.exceeded(&key("x"), at(100)));
        assert_eq!(t.len(), 0);
    }
}
