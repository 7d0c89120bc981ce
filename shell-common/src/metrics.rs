//! A Prometheus endpoint: `GET /metrics` on `[metrics] listen` answers with the broker's
//! [`Metrics`] in Prometheus' text format. It runs on threads of its own (so both shells use
//! it); the broker's loop answers through a [`MetricsDesk`], which it checks on every turn
//! after the desk woke it.
//!
//! Requests are parsed with `httparse` and served concurrently, each on a thread of its own, at
//! most [`MAX_CONCURRENT`] at once (more are answered 503 at once), and each within
//! [`REQUEST_DEADLINE`] from its connection to its last byte written (reading it may take at
//! most [`READ_DEADLINE`]): a slow or silent client holds only its own thread, and only for so
//! long.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jetmq_core::broker::{Broker, Metrics};
use tracing::{debug, info, warn};

/// How long a request waits for the broker's loop.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send its request line and headers.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// How long a whole request may take, from its connection to the last byte of the answer.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(12);
/// Requests served at once; connections beyond are answered 503 at once.
pub const MAX_CONCURRENT: usize = 16;
/// The most a request line and its headers may take.
const MAX_REQUEST: usize = 8 * 1024;
/// The most headers a request may have.
const MAX_HEADERS: usize = 32;

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

    /// The broker's metrics, once its loop has answered (`None` if it did not within `wait`).
    fn ask(&self, wait: Duration) -> Option<Metrics> {
        let (tx, rx) = mpsc::channel();
        self.waiting.lock().ok()?.push(tx);
        self.asked.store(true, Ordering::Release);
        if let Some(wake) = self.wake.lock().ok()?.as_ref() {
            wake();
        }
        rx.recv_timeout(wait).ok()
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
                let active = Arc::new(AtomicUsize::new(0));
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    match stream {
                        Ok(stream) => serve(stream, &desk, fleet, &active),
                        Err(e) => debug!(error = %e, "a metrics connection failed"),
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
            .map(|addr| Self::start(addr, Arc::clone(desk), config.broker.cluster.is_fleet()))
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

/// Serves one connection on a thread of its own, or answers 503 at once when
/// [`MAX_CONCURRENT`] are being served.
fn serve(mut stream: TcpStream, desk: &Arc<MetricsDesk>, fleet: bool, active: &Arc<AtomicUsize>) {
    let started = Instant::now();
    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONCURRENT {
        active.fetch_sub(1, Ordering::AcqRel);
        // The socket buffer takes this short answer without waiting.
        let _ = stream.set_nonblocking(true);
        let _ = write_answer(
            &mut stream,
            "503 Service Unavailable",
            "too many metrics requests at once\n",
        );
        return;
    }
    let desk = Arc::clone(desk);
    let done = Arc::clone(active);
    let spawned = std::thread::Builder::new()
        .name("jetmq-metrics-request".into())
        .spawn(move || {
            if let Err(e) = respond(stream, &desk, fleet, started) {
                debug!(error = %e, "a metrics request failed");
            }
            done.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = spawned {
        active.fetch_sub(1, Ordering::AcqRel);
        warn!(error = %e, "cannot start a thread for a metrics request");
    }
}

/// What a request asked for, or why it cannot be answered.
enum Asked {
    Get(String),
    Other,
    Bad(&'static str, &'static str),
}

/// Reads the request line and headers within [`READ_DEADLINE`] and parses them.
fn read_request(stream: &mut TcpStream, started: Instant) -> io::Result<Option<Asked>> {
    let deadline = started + READ_DEADLINE;
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Some(Asked::Bad(
                "408 Request Timeout",
                "the request took too long\n",
            )));
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Some(Asked::Bad(
                    "408 Request Timeout",
                    "the request took too long\n",
                )))
            }
            Err(e) => return Err(e),
        };
        request.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&request) {
            Ok(httparse::Status::Complete(_)) => {
                let path = parsed.path.unwrap_or_default();
                return Ok(Some(if parsed.method == Some("GET") {
                    Asked::Get(path.split('?').next().unwrap_or_default().to_owned())
                } else {
                    Asked::Other
                }));
            }
            Ok(httparse::Status::Partial) if request.len() < MAX_REQUEST => {}
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Ok(Some(Asked::Bad(
                    "431 Request Header Fields Too Large",
                    "the request is too large\n",
                )))
            }
            Err(_) => return Ok(Some(Asked::Bad("400 Bad Request", "not an HTTP request\n"))),
        }
    }
}

/// Answers one HTTP request: the metrics for `GET /metrics`, 404 for other paths, 405 for
/// other methods, 400, 408 or 431 for requests that are malformed, too slow or too large.
/// Everything happens within [`REQUEST_DEADLINE`] from `started`.
fn respond(
    mut stream: TcpStream,
    desk: &MetricsDesk,
    fleet: bool,
    started: Instant,
) -> io::Result<()> {
    let Some(asked) = read_request(&mut stream, started)? else {
        return Ok(());
    };
    let deadline = started + REQUEST_DEADLINE;
    let (status, body) = match asked {
        Asked::Get(path) if path == "/metrics" => {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(ANSWER_TIMEOUT);
            match desk.ask(wait) {
                Some(metrics) => ("200 OK", render(&metrics, fleet)),
                None => (
                    "503 Service Unavailable",
                    "the broker did not answer in time\n".to_owned(),
                ),
            }
        }
        Asked::Get(_) => ("404 Not Found", "metrics are at /metrics\n".to_owned()),
        Asked::Other => ("405 Method Not Allowed", "only GET\n".to_owned()),
        Asked::Bad(status, body) => (status, body.to_owned()),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request deadline passed",
        ));
    }
    stream.set_write_timeout(Some(left))?;
    write_answer(&mut stream, status, &body)
}

fn write_answer(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
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
        "jetmq_share_groups",
        "gauge",
        "Shared subscriptions ($share/group/filter) with at least one member on this node.",
        count(metrics.share_groups),
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
    one(
        "jetmq_oversized_properties_total",
        "counter",
        "PUBLISHes and wills refused for carrying too many user properties.",
        s.oversized_properties,
    );
    one(
        "jetmq_sessions_refused_total",
        "counter",
        "CONNECTs refused because a new session would exceed max_sessions or max_sessions_per_user.",
        s.sessions_refused,
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
