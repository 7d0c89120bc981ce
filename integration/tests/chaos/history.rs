//! Every operation of a run as its client saw it (and every fault as it was injected), in the
//! order they happened, with times since the start of the run.

use std::sync::Mutex;
use std::time::Duration;

use jetmq_core::codec::QoS;
use tokio::time::Instant;

/// Microseconds since the start of the run.
pub(crate) type Micros = u64;

/// How a connection that had been accepted ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Close {
    /// The client sent DISCONNECT (reason 0): its will is discarded.
    Graceful,
    /// MQTT 5.0 DISCONNECT 0x04: the will is to be published.
    WithWill,
    /// The client closed the socket without a DISCONNECT: the will is to be published.
    Abrupt,
    /// The connection ended without the client's doing: the broker closed it (with the
    /// DISCONNECT reason it sent, if any), the node died, or keep-alive gave up.
    Lost { reason: Option<u8>, why: String },
}

/// One operation. (Some fields are read only through `Debug`, in the history file.)
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// A CONNECT sent to `node`.
    Connect {
        conn: u64,
        node: usize,
        clean_start: bool,
        /// Whether the session outlives the connection (3.1.1 Clean Session 0, 5.0 a
        /// session expiry above 0).
        persistent: bool,
        /// The message id of the will's payload, if it has one.
        will: Option<u64>,
    },
    /// The CONNACK: accepted (`code` 0) or refused.
    ConnAck {
        conn: u64,
        session_present: bool,
        code: u8,
    },
    /// A connection attempt ended without a CONNACK.
    ConnFailed { conn: u64, why: String },
    /// An accepted connection ended.
    Closed { conn: u64, close: Close },
    /// A SUBSCRIBE sent.
    Subscribe { conn: u64, filter: String, qos: QoS },
    /// Its SUBACK: the granted QoS, `None` for a refusal.
    SubAck {
        conn: u64,
        filter: String,
        granted: Option<QoS>,
    },
    /// An UNSUBSCRIBE sent.
    Unsubscribe { conn: u64, filter: String },
    /// A PUBLISH sent (again, with DUP, when `dup`).
    Publish {
        conn: u64,
        msg: u64,
        topic: String,
        qos: QoS,
        retain: bool,
        dup: bool,
        /// An empty retained payload: the retained message of the topic is deleted.
        delete: bool,
    },
    /// The broker took the message: PUBACK (QoS 1) or PUBREC (QoS 2) with a success code.
    Acked { msg: u64, code: u8 },
    /// The broker refused it (a failure reason code).
    Refused { msg: u64, code: u8 },
    /// The publisher gave it up unacknowledged: its session ended.
    Abandoned { msg: u64 },
    /// A PUBLISH received.
    Recv {
        conn: u64,
        node: usize,
        /// The message id in its payload (`None`: empty or foreign payload).
        msg: Option<u64>,
        topic: String,
        qos: QoS,
        pkid: Option<u16>,
        dup: bool,
        retain: bool,
        /// False for a QoS 2 PUBLISH whose packet id was still awaiting PUBREL (the same
        /// message again, which the client does not deliver twice).
        fresh: bool,
    },
    /// A PUBREL received: the QoS 2 delivery under `pkid` is complete (PUBCOMP goes back).
    Released { conn: u64, pkid: u16 },
    /// A fault began (`heal: false`) or was healed.
    Fault {
        kind: &'static str,
        target: String,
        heal: bool,
    },
    /// Something the harness saw (a node that would not start, ...).
    Note { text: String },
    /// The run's phases: chaos, drain (faults healed, publishing done), end.
    Phase { name: &'static str },
}

/// An operation, when, and by which client (`usize::MAX` for the harness).
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) t: Micros,
    pub(crate) client: usize,
    pub(crate) op: Op,
}

/// The log of a run.
pub(crate) struct History {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

/// The harness's own "client" number.
pub(crate) const HARNESS: usize = usize::MAX;

impl History {
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            events: Mutex::new(Vec::with_capacity(1 << 16)),
        }
    }

    /// Now, as the log counts time.
    pub(crate) fn now(&self) -> Micros {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Logs `op` by `client`, now.
    pub(crate) fn log(&self, client: usize, op: Op) {
        let mut events = self.events.lock().expect("history");
        // Taken under the lock, so times never go backwards in the log.
        let t = self.now();
        events.push(Event { t, client, op });
    }

    /// A copy of everything logged so far.
    pub(crate) fn snapshot(&self) -> Vec<Event> {
        self.events.lock().expect("history").clone()
    }
}

/// Microseconds as seconds, for reports.
pub(crate) fn secs(t: Micros) -> f64 {
    Duration::from_micros(t).as_secs_f64()
}
