//! Logging the core's notices: warnings for what an operator must see, debug lines for the
//! rest; client identifiers and topics only with `--log-pii`. Warnings that can come once per
//! message (a full queue, a failing store) are written at most once a second, with how many
//! were left out, so an overload does not also flood the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jetmq_core::broker::Notice;
use tracing::{debug, warn};

/// How often a repeating warning is written.
const EVERY: Duration = Duration::from_secs(1);

/// When a kind of warning was last written, and how many were left out since.
struct Limiter {
    last: Option<Instant>,
    skipped: u64,
}

static QUEUE_FULL: Mutex<Limiter> = Mutex::new(Limiter {
    last: None,
    skipped: 0,
});
static STORE_FAILED: Mutex<Limiter> = Mutex::new(Limiter {
    last: None,
    skipped: 0,
});

/// Whether to write this occurrence, and how many were left out before it.
fn admit(limiter: &Mutex<Limiter>) -> Option<u64> {
    let mut l = limiter.lock().ok()?;
    let now = Instant::now();
    if l.last.is_some_and(|t| now.duration_since(t) < EVERY) {
        l.skipped += 1;
        return None;
    }
    l.last = Some(now);
    Some(std::mem::take(&mut l.skipped))
}

/// Client identifiers and topics are personal data: logged only with `--log-pii`.
fn pii(text: &str, log_pii: bool) -> &str {
    if log_pii {
        text
    } else {
        "<redacted>"
    }
}

/// Logs one notice.
pub fn log(notice: Notice, log_pii: bool) {
    match notice {
        Notice::StoreFailed(e) => {
            if let Some(skipped) = admit(&STORE_FAILED) {
                warn!(error = %e, more_since_last = skipped, "store request failed");
            }
        }
        Notice::QueueOverflow { client_id } => {
            if let Some(skipped) = admit(&QUEUE_FULL) {
                warn!(
                    client_id = pii(&client_id, log_pii),
                    more_since_last = skipped,
                    "a session's queue is full; a message was dropped for it (limits.max_queued_messages)"
                );
            }
        }
        Notice::BadRecord { subject } => warn!(
            subject = pii(&subject, log_pii),
            "a stored record could not be read at start-up; it was skipped"
        ),
        Notice::TakeoverLimit { client_id } => warn!(
            client_id = pii(&client_id, log_pii),
            "a client identifier keeps being taken over (two clients sharing it?); its CONNECTs \
             are refused until its window ends (limits.takeover_limit, limits.takeover_window_secs)"
        ),
        Notice::SessionExpired { client_id } => debug!(
            client_id = pii(&client_id, log_pii),
            "a session expired and was discarded"
        ),
        Notice::ProtocolError { conn, reason } => {
            debug!(conn = conn.get(), %reason, "protocol error; connection closed");
        }
        Notice::SlowConsumerDrop(conn) => debug!(conn = conn.get(), "slow consumer: QoS 0 dropped"),
        Notice::BridgeRefused { conn, topic } => debug!(
            conn = conn.get(),
            topic = pii(&topic, log_pii),
            "refused: the subject belongs to NATS or jetmq, or lies outside the bridge's rules"
        ),
        Notice::UnknownConnection(conn) => {
            debug!(conn = conn.get(), "input for an unknown connection")
        }
        Notice::UnknownRequest(id) => debug!(request = id.0, "reply for an unknown store request"),
    }
}
