//! Time as data. The core never reads a clock: every input comes with a [`Now`] from the
//! shell, made of a monotonic [`Timestamp`] (for timers) and a [`WallClock`] reading (for
//! records that outlive the process). Both are plain integers, so a recorded run replays
//! exactly.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point on the shell's monotonic clock, in nanoseconds from an arbitrary origin.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `nanos` nanoseconds after the clock's origin.
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the clock's origin.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The instant `d` later, saturating at the end of time.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Wall-clock time in milliseconds since the Unix epoch, as the shell read it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct WallClock(u64);

impl WallClock {
    /// The wall-clock reading `millis` milliseconds after the Unix epoch.
    #[must_use]
    pub const fn from_unix_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn as_unix_millis(self) -> u64 {
        self.0
    }
}

/// The time that comes with every input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Now {
    /// The monotonic clock, for timers and deadlines.
    pub instant: Timestamp,
    /// The wall clock, for persisted timestamps.
    pub wall: WallClock,
}

impl Now {
    /// A reading of both clocks.
    #[must_use]
    pub const fn new(instant: Timestamp, wall: WallClock) -> Self {
        Self { instant, wall }
    }

    /// A reading `d` later on both clocks, as a simulation advances virtual time.
    #[must_use]
    pub fn advanced(self, d: Duration) -> Self {
        let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            instant: self.instant.saturating_add(d),
            wall: WallClock(self.wall.0.saturating_add(millis)),
        }
    }
}
