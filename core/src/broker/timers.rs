//! [`Timers`]: every deadline the broker waits for, in one heap, and the one deadline the shell
//! sees ([`Broker::next_deadline`](super::Broker::next_deadline)).
//!
//! A timer is never cancelled: what it was set for checks, when it fires, whether it still
//! applies (a connection's `timer_at`, a session's generation or uid, a request still
//! waiting), so an early or stale timer is a harmless no-op.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::io::ConnId;
use super::sessions::SessionId;
use crate::js::RequestId;
use crate::time::Timestamp;

/// A timer the broker waits for.
///
/// Timers due at the same instant fire in this type's order (variant, then fields), so the
/// order of everything a tick does follows from the timers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// A connection's connect timeout, keep-alive or slow-consumer limit.
    Conn(ConnId),
    /// A delayed will of a session (with the session's generation when it was set).
    Will(SessionId, u64),
    /// A session's expiry (with the session's generation when it went offline).
    Expiry(SessionId, u64),
    /// A store request's timeout.
    Request(RequestId),
    /// A fleet node announces its connected clients once more after NATS came back.
    Reannounce,
    /// The next round of `$SYS/broker/` statistics.
    Sys,
    /// A catch-up read of a fleet session's consumer (true for the last read).
    CatchUp(SessionId, bool),
}

/// The timers set and not yet fired, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Timestamp, Timer)>>,
}

impl Timers {
    /// Sets `timer` to fire at `at`.
    pub(crate) fn schedule(&mut self, at: Timestamp, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// When the earliest timer fires; `None` when none is set.
    #[must_use]
    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the earliest timer if it is due at `now`, with the instant it was set for.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, Timer)> {
        let Reverse((at, _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_nanos(0).saturating_add(Duration::from_secs(secs))
    }

    #[test]
    fn timers_fire_earliest_first_and_only_when_due() {
        let mut timers = Timers::default();
        assert_eq!(timers.next_deadline(), None);
        timers.schedule(at(5), Timer::Sys);
        timers.schedule(at(2), Timer::Reannounce);
        timers.schedule(at(9), Timer::Request(RequestId(1)));
        assert_eq!(timers.next_deadline(), Some(at(2)));
        assert_eq!(timers.pop_due(at(1)), None, "nothing is due yet");
        assert_eq!(timers.pop_due(at(6)), Some((at(2), Timer::Reannounce)));
        assert_eq!(timers.pop_due(at(6)), Some((at(5), Timer::Sys)));
        assert_eq!(timers.pop_due(at(6)), None);
        assert_eq!(timers.next_deadline(), Some(at(9)));
    }

    #[test]
    fn timers_due_together_fire_in_timer_order() {
        let mut timers = Timers::default();
        let conn = ConnId::new(7).expect("non-zero");
        timers.schedule(at(1), Timer::Sys);
        timers.schedule(at(1), Timer::Request(RequestId(3)));
        timers.schedule(at(1), Timer::Conn(conn));
        timers.schedule(at(1), Timer::Request(RequestId(2)));
        let fired: Vec<Timer> = std::iter::from_fn(|| timers.pop_due(at(1)))
            .map(|(_, t)| t)
            .collect();
        assert_eq!(
            fired,
            [
                Timer::Conn(conn),
                Timer::Request(RequestId(2)),
                Timer::Request(RequestId(3)),
                Timer::Sys
            ]
        );
    }
}
