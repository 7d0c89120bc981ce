//! [`ConnectClock`]: how a fleet node stamps the connects it accepts, so that the connects of
//! one client through different nodes are ordered as they happened.

use crate::rng::Rng;
use crate::time::WallClock;

/// Mixed into the seed for the node number.
const NODE_SALT: u64 = 0x6e6f_6465_6e75_6d62; // "nodenumb"

/// Logical steps per wall-clock millisecond in a connect stamp.
const STAMPS_PER_MILLI: u64 = 1 << 12;

/// A hybrid logical clock of connects: each stamp is later than every connect this node has
/// accepted or heard of, and not earlier than the wall clock; between equal stamps the
/// higher node number is the later.
#[derive(Debug)]
pub(crate) struct ConnectClock {
    /// This node's number (from the seed).
    node: u64,
    /// The latest stamp accepted here or heard of.
    last: u64,
}

impl ConnectClock {
    /// The clock of the node whose broker is seeded with `seed`: its number comes from a
    /// generator of its own, so that the broker's main sequence does not depend on the fleet.
    pub(crate) fn from_seed(seed: u64) -> Self {
        Self {
            node: Rng::new(seed ^ NODE_SALT).next_u64(),
            last: 0,
        }
    }

    /// Stamps a connect accepted here at `wall`.
    pub(crate) fn stamp(&mut self, wall: WallClock) -> u64 {
        let wall = wall.as_unix_millis().saturating_mul(STAMPS_PER_MILLI);
        self.last = self.last.saturating_add(1).max(wall);
        self.last
    }

    /// Notes a connect stamped `stamp` elsewhere (a notice, a stored record): later stamps
    /// here order after it.
    pub(crate) fn observe(&mut self, stamp: u64) {
        self.last = self.last.max(stamp);
    }

    /// The order of this node's connect stamped `stamp`: (stamp, node number).
    pub(crate) fn order(&self, stamp: u64) -> (u64, u64) {
        (stamp, self.node)
    }

    /// Whether this node's connect stamped `here` is later than another node's of order
    /// `theirs`.
    pub(crate) fn later_here(&self, here: u64, theirs: (u64, u64)) -> bool {
        self.order(here) > theirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_grow_follow_the_wall_clock_and_order_after_what_was_heard() {
        let mut clock = ConnectClock::from_seed(1);
        let wall = WallClock::from_unix_millis(1_000);
        let first = clock.stamp(wall);
        assert_eq!(first, 1_000 * STAMPS_PER_MILLI);
        assert_eq!(
            clock.stamp(wall),
            first + 1,
            "later even on the same millisecond"
        );
        clock.observe(first + 100);
        assert_eq!(clock.stamp(wall), first + 101);
        clock.observe(5);
        assert_eq!(
            clock.stamp(wall),
            first + 102,
            "an older stamp changes nothing"
        );
        let (stamp, node) = clock.order(first);
        assert!(clock.later_here(first, (stamp, node.wrapping_sub(1))) || node == 0);
        assert!(!clock.later_here(first, (first + 1, 0)));
    }

    #[test]
    fn the_node_number_comes_from_the_seed_alone() {
        let (a, b) = (ConnectClock::from_seed(7), ConnectClock::from_seed(7));
        assert_eq!(a.order(0), b.order(0));
        assert_ne!(a.order(0), ConnectClock::from_seed(8).order(0));
    }
}
