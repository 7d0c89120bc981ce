//! A snapshot of what the broker is doing, for monitoring: the `$SYS/broker/` topics
//! (`sys_topics.rs`) and the servers' metrics endpoint read it.

use super::{Broker, BrokerStats};

/// The broker's state and counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Seconds since the broker was made.
    pub uptime_secs: u64,
    /// Sessions with a client connected.
    pub clients_connected: usize,
    /// Sessions, connected or not.
    pub sessions: usize,
    /// Open connections, including ones not through CONNECT yet.
    pub connections: usize,
    /// Subscriptions of all sessions.
    pub subscriptions: usize,
    /// Shared subscriptions (`$share/{group}/{filter}`) with at least one member here; a group
    /// is freed with its last member.
    pub share_groups: usize,
    /// Retained messages.
    pub retained: usize,
    /// Bytes kept for the retained messages: topic, properties and payload (`$SYS/broker/`
    /// statistics aside).
    pub retained_bytes: usize,
    /// The counters.
    pub stats: BrokerStats,
}

impl Metrics {
    /// Messages dropped for any reason.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        let s = &self.stats;
        s.dropped_slow_consumer + s.dropped_queue_full + s.dropped_too_large + s.dropped_expired
    }
}

impl Broker {
    /// The metrics now (counting sessions and subscriptions walks every session: meant for
    /// monitoring rounds, not per message).
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        Metrics {
            uptime_secs: self
                .now
                .instant
                .saturating_duration_since(self.started)
                .as_secs(),
            clients_connected: self
                .sessions
                .iter()
                .filter(|(_, s)| s.conn.is_some())
                .count(),
            sessions: self.sessions.len(),
            connections: self.conns.len(),
            subscriptions: self
                .sessions
                .iter()
                .map(|(_, s)| s.subscriptions.values().count())
                .sum(),
            share_groups: self.routes.shares().len(),
            retained: self.retained.len(),
            retained_bytes: self.retained.bytes(),
            stats: self.stats,
        }
    }
}
