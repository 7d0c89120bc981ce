//! Logging the core's notices: warnings for what an operator must see, debug lines for the
//! rest; client identifiers and topics only with `--log-pii`.

use jetmq_core::broker::Notice;
use tracing::{debug, warn};

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
        Notice::StoreFailed(e) => warn!(error = %e, "store request failed"),
        Notice::QueueOverflow { client_id } => warn!(
            client_id = pii(&client_id, log_pii),
            "a session's queue is full; a message was dropped for it"
        ),
        Notice::BadRecord { subject } => warn!(
            subject = pii(&subject, log_pii),
            "a stored record could not be read at start-up; it was skipped"
        ),
        Notice::SessionExpired { client_id } => debug!(
            client_id = pii(&client_id, log_pii),
            "a session expired and was discarded"
        ),
        Notice::ProtocolError { conn, reason } => {
            debug!(conn = conn.get(), %reason, "protocol error; connection closed");
        }
        Notice::SlowConsumerDrop(conn) => debug!(conn = conn.get(), "slow consumer: QoS 0 dropped"),
        Notice::UnknownConnection(conn) => {
            debug!(conn = conn.get(), "input for an unknown connection")
        }
        Notice::UnknownRequest(id) => debug!(request = id.0, "reply for an unknown store request"),
    }
}
