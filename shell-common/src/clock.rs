//! The shell's reading of time for the core: a monotonic instant counted from a start and the
//! wall clock, as one [`Now`].

use std::time::{SystemTime, UNIX_EPOCH};

use jetmq_core::time::{Now, Timestamp, WallClock};

/// Both clocks now: nanoseconds since `start` and milliseconds since the Unix epoch.
pub fn now_since(start: std::time::Instant) -> Now {
    let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Now::new(
        Timestamp::from_nanos(nanos),
        WallClock::from_unix_millis(wall),
    )
}
