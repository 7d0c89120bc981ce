//! A Prometheus endpoint: `GET /metrics` on `[metrics] listen` answers with the broker's
//! [`Metrics`] in Prometheus' text format. It runs on a thread of its own (so both shells use
//! it), one request at a time; the broker's loop answers through a [`MetricsDesk`], which it
//! checks on every turn after the desk woke it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use jetmq_core::broker::{Broker, Metrics};
use tracing::{info, warn};

/// How long a request waits for the broker's loop.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send its request, and the most it may send.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 8 * 1024;

/// Where the endpoint's requests wait for the broker's loop, which answers them.
pub struct MetricsDesk {
    asked: AtomicBool,
    waiting: Mutex<Vec<mpsc::Sender<Metrics>>>,
    /// How a request gets the loop's attention, once the loop has said how.
    wake: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for MetricsDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsDesk")
            .field("asked", &self.asked)
            .finish_non_exhaustive()
    }
}

impl MetricsDesk {
    /// A desk; its requests wait until the loop says how to wake it ([`Self::set_wake`]).
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            asked: AtomicBool::new(false),
            waiting: Mutex::new(Vec::new()),
            wake: Mutex::new(None),
        })
    }

    /// How requests get the loop's attention from now on.
    pub fn set_wake(&self, wake: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut w) = self.wake.lock() {
            *w = Some(Box::new(wake));
        }
    }

    /// Answers the requests waiting, if any (the loop calls this on every turn; without
    /// requests it costs one atomic load).
    pub fn answer(&self, broker: &Broker) {
        // A load first: the loop calls this every turn, and a swap would write every time.
        if !self.asked.load(Ordering::Acquire) || !self.asked.swap(false, Ordering::AcqRel) {
            return;
        }
        let waiting = self
            .waiting
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        if waiting.is_empty() {
            return;
        }
        let metrics = broker.metrics();
        for tx in waiting {
            let _ = tx.send(metrics);
        }
    }

    /// The broker's metrics, once its loop has answered (`None` if it did not in time).
    fn ask(&self) -> Option<Metrics> {
        let (tx, rx) = mpsc::channel();
        self.waiting.lock().ok()?.push(tx);
        self.asked.store(true, Ordering::Release);
        if let Some(wake) = self.wake.lock().ok()?.as_ref() {
            wake();
        }
        rx.recv_timeout(ANSWER_TIMEOUT).ok()
    }
}

/// The running endpoint; [`stop`](Self::stop) ends it.
#[derive(Debug)]
pub struct MetricsServer {
    /// The address it listens on (with the port the system chose for port 0).
    pub local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` and serves `GET /metrics` from `desk` (with the fleet counters when
    /// `fleet`).
    ///
    /// # Errors
    ///
    /// The address cannot be bound, or the thread cannot be started.
    pub fn start(addr: SocketAddr, desk: Arc<MetricsDesk>, fleet: bool) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen for metrics on {addr}: {e} (is something else there?)"),
            )
        })?;
        let local_addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let thread = std::thread::Builder::new()
            .name("jetmq-metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        if let Err(e) = respond(stream, &desk, fleet) {
                            warn!(error = %e, "a metrics request failed");
                        }
                    }
                }
            })?;
        info!(addr = %local_addr, "serving metrics at /metrics");
        Ok(Self {
            local_addr,
            stopping,
            thread: Some(thread),
        })
    }

    /// The endpoint `config` asks for (`[metrics] listen`), if any.
    ///
    /// # Errors
    ///
    /// As [`MetricsServer::start`].
    pub fn for_config(
        config: &crate::config::ServerConfig,
        desk: &Arc<MetricsDesk>,
    ) -> io::Result<Option<Self>> {
        config
            .metrics
            .map(|addr| Self::start(addr, Arc::clone(desk), config.broker.fleet))
            .transpose()
    }

    /// Stops listening and waits for the thread.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // Wakes the accept.
        let _ = TcpStream::connect(self.local_addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Answers one HTTP request: the metrics for `GET /metrics`, 404 for other paths, 405 for
/// other methods.
fn respond(mut stream: TcpStream, desk: &MetricsDesk, fleet: bool) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => match desk.ask() {
            Some(metrics) => ("200 OK", render(&metrics, fleet)),
            None => (
                "503 Service Unavailable",
                "the broker did not answer in time\n".to_owned(),
            ),
        },
        ("GET", _) => ("404 Not Found", "metrics are at /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "only GET\n".to_owned()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `metrics` in Prometheus' text exposition format (0.0.4).
#[must_use]
pub fn render(metrics: &Metrics, fleet: bool) -> String {
    use std::fmt::Write as _;
    let s = &metrics.stats;
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    one(
        "jetmq_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        metrics.uptime_secs,
    );
    one(
        "jetmq_clients_connected",
        "gauge",
        "Sessions with a client connected.",
        count(metrics.clients_connected),
    );
    one(
        "jetmq_sessions",
        "gauge",
        "Sessions, connected or not.",
        count(metrics.sessions),
    );
    one(
        "jetmq_connections",
        "gauge",
        "Open connections, including ones not through CONNECT yet.",
        count(metrics.connections),
    );
    one(
        "jetmq_subscriptions",
        "gauge",
        "Subscriptions of all sessions.",
        count(metrics.subscriptions),
    );
    one(
        "jetmq_retained_messages",
        "gauge",
        "Retained messages.",
        count(metrics.retained),
    );
    one(
        "jetmq_retained_bytes",
        "gauge",
        "Bytes kept for the retained messages: topic, properties, payload ($SYS/broker/ aside).",
        count(metrics.retained_bytes),
    );
    one(
        "jetmq_retained_refused_total",
        "counter",
        "Retained messages on new topics refused by the retained-message quota.",
        s.retained_refused,
    );
    one(
        "jetmq_messages_routed_total",
        "counter",
        "Messages routed to subscribers (from clients, wills, NATS).",
        s.messages_routed,
    );
    one(
        "jetmq_publish_sent_total",
        "counter",
        "PUBLISH packets written to clients.",
        s.deliveries,
    );
    one(
        "jetmq_store_failures_total",
        "counter",
        "Store requests that failed or timed out.",
        s.store_failures,
    );
    one(
        "jetmq_overflow_spilled_total",
        "counter",
        "Stored messages for a session at its queue limit left in its consumer, read back later.",
        s.spilled,
    );
    one(
        "jetmq_overflow_publishers_held_total",
        "counter",
        "Times a publisher stopped being read because a session it sent to was at its limit.",
        s.publishers_held,
    );
    one(
        "jetmq_bridge_refused_total",
        "counter",
        "NATS messages on subjects the bridge does not carry, dropped.",
        s.bridge_refused,
    );
    let _ = writeln!(
        out,
        "# HELP jetmq_publish_dropped_total Messages dropped for a subscriber, by reason.\n\
         # TYPE jetmq_publish_dropped_total counter"
    );
    for (reason, value) in [
        ("slow_consumer", s.dropped_slow_consumer),
        ("queue_full", s.dropped_queue_full),
        ("too_large", s.dropped_too_large),
        ("expired", s.dropped_expired),
    ] {
        let _ = writeln!(
            out,
            "jetmq_publish_dropped_total{{reason=\"{reason}\"}} {value}"
        );
    }
    if fleet {
        let mut one = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        one(
            "jetmq_fleet_late_connect_notices_total",
            "Connect notices of other nodes older than a connection here.",
            s.late_connect_notices,
        );
        one(
            "jetmq_fleet_shared_messages_missed_total",
            "Shared-subscription messages that reached this node after its last member left.",
            s.share_messages_missed,
        );
    }
    out
}
