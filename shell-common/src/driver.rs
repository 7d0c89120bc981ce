//! The loop every shell runs around the broker, written once: [`Driver`].
//!
//! A shell owns its sockets, its timer and the way work finished on other threads wakes its
//! loop; everything between an input and the actions it causes is here. The driver restores the
//! store at start-up, feeds the broker each input (recording it when a recording is on) and
//! carries out every action that is not a connection's: store requests go to the store
//! backend, authentication to the checking pool, the NATS bridge's actions to the NATS link,
//! notices to the log. What is left, the connections' actions, it hands the shell as
//! [`ConnAction`]s, which the shell `match`es without a catch-all arm: a new kind of connection
//! action breaks every shell's build instead of being ignored by one.
//!
//! ```text
//! shell                                   driver
//!  socket bytes, flushes, closes ──────►  handle(input, conns) ──► store, auth, NATS, log
//!  timer (next_deadline)          ──────►      │
//!  wake ─► take_completions()     ──────►      └──► conns(ConnAction): write, close, pause
//! ```
//!
//! The hot path (bytes in, handle, bytes out) allocates nothing here: the broker writes its
//! actions into one [`Outbox`] the driver keeps and reuses, and each connection action is moved
//! to the shell's callback as it is drained.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jetmq_core::broker::{Action, Broker, CloseReason, ConnId, Input, Outbox};
use tracing::{debug, info, warn};

use crate::auth_pool::AuthPool;
use crate::config::ServerConfig;
use crate::inputs::{InputQueue, Wake};
use crate::metrics::{MetricsDesk, MetricsServer};
use crate::nats_link::NatsLink;
use crate::record::{self, Recorder};
use crate::store::{StoreBackend, StoreReplies};

/// What the broker asks of a connection: the actions only a shell can carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnAction {
    /// Write bytes to the connection, after everything sent to it before.
    Send {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Bytes,
    },
    /// Close the connection once the bytes sent before are written.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why (already logged at debug level by the driver).
        reason: CloseReason,
    },
    /// Stop reading from the connection until [`ConnAction::ResumeRead`].
    PauseRead {
        /// The connection.
        conn: ConnId,
    },
    /// Read from the connection again.
    ResumeRead {
        /// The connection.
        conn: ConnId,
    },
}

/// The broker with its outbox, recording and workers: the part of a shell's loop that does
/// not depend on its runtime.
///
/// A shell starts it with [`Driver::start`] (after binding its listeners), then for every
/// input calls [`handle`](Self::handle) with a callback that carries out [`ConnAction`]s;
/// sleeps until [`next_deadline`](Self::next_deadline) to feed [`Input::Tick`]; feeds
/// [`Input::Continue`] while [`wants_continue`](Self::wants_continue); and, when the `wake` it
/// gave `start` is called, handles what [`take_completions`](Self::take_completions) returns.
/// After [`Input::Shutdown`] it stops once [`stop_finished`](Self::stop_finished) says so.
pub struct Driver {
    broker: Broker,
    /// Reused for every input: the steady state allocates no actions list.
    out: Outbox,
    recorder: Option<Recorder>,
    /// The broker's time is counted from here.
    started: Instant,
    workers: Workers,
    /// Inputs finished off the loop's thread (store results, authentication decisions,
    /// NATS messages).
    completions: InputQueue,
    desk: Arc<MetricsDesk>,
    metrics: Option<MetricsServer>,
    /// Whether the last call to the broker stopped on its work budget.
    wants_continue: bool,
    /// When [`Input::Shutdown`] was handled.
    stopping: Option<Instant>,
    shutdown_timeout: Duration,
}

/// Where the actions that are not a connection's go.
struct Workers {
    store: Arc<dyn StoreBackend>,
    /// Where store results go (into the driver's completions).
    replies: StoreReplies,
    /// Decides on authentication requests off the loop (password hashing is slow on purpose).
    auth: AuthPool,
    /// The NATS bridge's connection (its own threads), if configured.
    nats: Option<NatsLink>,
    /// Store requests sent and not yet answered.
    pending_store: usize,
    log_pii: bool,
}

impl Driver {
    /// Starts the metrics endpoint, reads the store, connects to NATS (so that credentials
    /// NATS refuses stop the start-up), starts the authentication pool and the recording,
    /// makes the broker and restores what the store held. `name` is the NATS connection's
    /// client name. `wake` wakes the shell's loop from other threads when inputs are waiting
    /// in [`take_completions`](Self::take_completions) or a metrics request waits for
    /// [`answer_metrics`](Self::answer_metrics).
    ///
    /// # Errors
    ///
    /// The metrics endpoint cannot listen, the store cannot be read, NATS refused the
    /// credentials or cannot be reached, a thread cannot start or the recording cannot be
    /// created.
    pub fn start(
        config: &ServerConfig,
        store: Arc<dyn StoreBackend>,
        name: &str,
        wake: Wake,
    ) -> io::Result<Self> {
        let desk = MetricsDesk::new();
        let metrics_wake = Arc::clone(&wake);
        desk.set_wake(move || metrics_wake());
        let metrics = MetricsServer::for_config(config, &desk)?;
        let restored = store
            .restore()
            .map_err(|e| io::Error::other(format!("cannot read the store: {e}")))?;
        let completions = InputQueue::new(wake);
        let replies = StoreReplies::new(&*store, completions.clone());
        let deliver = completions.clone();
        let nats = NatsLink::for_config(config, name, move |input| deliver.push(input))?;
        let started = Instant::now();
        let now = crate::clock::now_since(started);
        let decided = completions.clone();
        let auth_and_recorder = || -> io::Result<_> {
            let auth = AuthPool::start(config.auth_source(), config.auth_limits, move |input| {
                decided.push(input);
            })?;
            let recorder = match &config.record {
                Some(path) => Some(Recorder::create(path, config.seed, &config.broker, now)?),
                None => None,
            };
            Ok((auth, recorder))
        };
        let (auth, recorder) = auth_and_recorder().inspect_err(|_| {
            // The NATS connection's threads would otherwise go on reconnecting.
            if let Some(link) = &nats {
                link.stop();
            }
        })?;
        let mut driver = Self {
            broker: Broker::new(config.broker.clone(), config.seed, now),
            out: Outbox::new(),
            recorder,
            started,
            workers: Workers {
                store,
                replies,
                auth,
                nats,
                pending_store: 0,
                log_pii: config.log_pii,
            },
            completions,
            desk,
            metrics,
            wants_continue: false,
            stopping: None,
            shutdown_timeout: config.shutdown_timeout,
        };
        let count = restored.len();
        // No connection exists yet: the restore asks only for store writes and NATS
        // subscriptions, and a connection action could name no connection of the shell's.
        let mut no_conns = |_: ConnAction| {};
        for record in restored {
            driver.handle(Input::Restored(record), &mut no_conns);
        }
        driver.handle(Input::RestoreComplete, &mut no_conns);
        info!(
            records = count,
            sessions = driver.broker.session_count(),
            retained = driver.broker.retained_count(),
            "store restored"
        );
        Ok(driver)
    }

    /// Hands one input to the broker (recording it first when a recording is on) and carries
    /// out the actions it caused, in order: a connection's through `conns`, the rest here.
    pub fn handle(&mut self, input: Input, conns: &mut impl FnMut(ConnAction)) {
        match &input {
            Input::Stored { .. } => {
                self.workers.pending_store = self.workers.pending_store.saturating_sub(1);
            }
            // A check still queued for it is not worth running.
            Input::Closed { conn } => self.workers.auth.cancel(*conn),
            Input::Shutdown => {
                self.stopping.get_or_insert_with(Instant::now);
            }
            _ => {}
        }
        let now = crate::clock::now_since(self.started);
        record::handle(
            &mut self.broker,
            &mut self.recorder,
            now,
            input,
            &mut self.out,
        );
        self.wants_continue = self.out.wants_continue;
        for action in self.out.drain() {
            self.workers.carry_out(action, conns);
        }
    }

    /// Whether the broker stopped on its work budget (a large fan-out) and wants
    /// [`Input::Continue`]; a shell lets its connections run, then feeds it.
    #[must_use]
    pub fn wants_continue(&self) -> bool {
        self.wants_continue
    }

    /// When the broker next wants [`Input::Tick`]; `None` when no timer is set. A tick
    /// earlier is harmless.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.broker
            .next_deadline()
            .map(|at| self.started + Duration::from_nanos(at.as_nanos()))
    }

    /// The inputs finished on other threads since the last call, in order: handle each.
    #[must_use]
    pub fn take_completions(&self) -> Vec<Input> {
        self.completions.take()
    }

    /// Answers the metrics endpoint's waiting requests, if any: call it on every turn of the
    /// loop (without requests it costs one atomic load).
    pub fn answer_metrics(&self) {
        self.desk.answer(&self.broker);
    }

    /// Where the Prometheus metrics are served (`[metrics] listen`), if configured.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.local_addr)
    }

    /// The broker, for its counts.
    #[must_use]
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Whether [`Input::Shutdown`] has been handled.
    #[must_use]
    pub fn stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// When a graceful stop gives up waiting (`shutdown_timeout` after [`Input::Shutdown`]).
    #[must_use]
    pub fn stop_deadline(&self) -> Option<Instant> {
        self.stopping.map(|since| since + self.shutdown_timeout)
    }

    /// Whether a graceful stop is over: every connection closed (`open_connections` is the
    /// shell's count) and every store request answered, or `shutdown_timeout` passed (logged
    /// with what was left). False before [`Input::Shutdown`].
    #[must_use]
    pub fn stop_finished(&self, open_connections: usize) -> bool {
        let Some(since) = self.stopping else {
            return false;
        };
        let done = open_connections == 0 && self.workers.pending_store == 0;
        if done {
            return true;
        }
        if since.elapsed() > self.shutdown_timeout {
            warn!(
                connections = open_connections,
                store_requests = self.workers.pending_store,
                "shutdown timed out"
            );
            return true;
        }
        false
    }

    /// Stops the NATS connection, whose threads would otherwise go on reconnecting: for a
    /// shell whose stop is over but that keeps the driver. Dropping the driver stops it too,
    /// with the metrics endpoint and the authentication pool.
    pub fn stop_nats(&self) {
        if let Some(link) = &self.workers.nats {
            link.stop();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop_nats();
        if let Some(m) = self.metrics.as_mut() {
            m.stop();
        }
    }
}

impl Workers {
    /// Carries out one action: a connection's through `conns`, the rest on its worker.
    fn carry_out(&mut self, action: Action, conns: &mut impl FnMut(ConnAction)) {
        match action {
            Action::Send { conn, bytes } => conns(ConnAction::Send { conn, bytes }),
            Action::Close { conn, reason } => {
                debug!(conn = conn.get(), ?reason, "closing connection");
                // A check still queued for it is not worth running.
                self.auth.cancel(conn);
                conns(ConnAction::Close { conn, reason });
            }
            Action::PauseRead { conn } => conns(ConnAction::PauseRead { conn }),
            Action::ResumeRead { conn } => conns(ConnAction::ResumeRead { conn }),
            // Password hashing is slow on purpose: decided on the bounded authentication pool.
            Action::Authenticate(request) => self.auth.submit(request),
            Action::Store { id, request } => {
                self.pending_store += 1;
                self.store.submit(id, request, self.replies.completion());
            }
            Action::Notice(notice) => crate::notice::log(notice, self.log_pii),
            // The NATS bridge's: ignored when no NATS server is configured.
            Action::NatsPublish { .. }
            | Action::NatsSubscribe { .. }
            | Action::NatsQueueSubscribe { .. }
            | Action::NatsQueueUnsubscribe { .. }
            | Action::NatsUnsubscribe { .. } => {
                if let Some(link) = &self.nats {
                    link.execute(&action);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use jetmq_core::broker::{ConnInfo, ListenerKind};

    use super::*;
    use crate::store::MemoryBackend;

    /// A driver on the memory store, and how often it woke its (absent) loop.
    fn driver() -> (Driver, Arc<AtomicUsize>) {
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&woken);
        let wake: Wake = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let store = Arc::new(MemoryBackend::default());
        let driver = Driver::start(&ServerConfig::default(), store, "test", wake).expect("starts");
        (driver, woken)
    }

    /// An MQTT 3.1.1 CONNECT from client `r`, with a clean or a persistent session.
    fn connect(clean: bool) -> Bytes {
        let flags = if clean { 0x02 } else { 0x00 };
        Bytes::from(vec![
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60, 0, 1, b'r',
        ])
    }

    /// Feeds `input`, then what the workers finish, until `until` holds for what the shell
    /// was asked (at most 10 s); returns the connection actions in order.
    fn run(
        driver: &mut Driver,
        input: Input,
        until: impl Fn(&[ConnAction]) -> bool,
    ) -> Vec<ConnAction> {
        let mut asked = Vec::new();
        driver.handle(input, &mut |a| asked.push(a));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !until(&asked) {
            assert!(Instant::now() < deadline, "never came: {asked:?}");
            for input in driver.take_completions() {
                driver.handle(input, &mut |a| asked.push(a));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        asked
    }

    fn accepted(conn: ConnId) -> Input {
        Input::Accepted {
            conn,
            info: ConnInfo {
                peer: "127.0.0.1:50000".into(),
                listener: ListenerKind::Tcp,
                tls_identity: None,
            },
        }
    }

    fn connack(asked: &[ConnAction]) -> bool {
        asked
            .iter()
            .any(|a| matches!(a, ConnAction::Send { bytes, .. } if bytes.first() == Some(&0x20)))
    }

    #[test]
    fn a_connect_is_answered_through_the_shells_callback() {
        let (mut driver, _) = driver();
        let conn = ConnId::new(1).expect("non-zero");
        let asked = run(&mut driver, accepted(conn), |_| true);
        assert!(asked.is_empty(), "{asked:?}");
        let asked = run(
            &mut driver,
            Input::Received {
                conn,
                data: connect(true).into(),
            },
            connack,
        );
        assert!(
            asked
                .iter()
                .all(|a| matches!(a, ConnAction::Send { conn: c, .. } if *c == conn)),
            "{asked:?}"
        );
        assert_eq!(driver.broker().connection_count(), 1);
    }

    #[test]
    fn a_stop_waits_for_the_store_requests() {
        let (mut driver, woken) = driver();
        let conn = ConnId::new(1).expect("non-zero");
        run(&mut driver, accepted(conn), |_| true);
        // A persistent session is saved before its CONNACK: the store's answer woke the loop
        // and came back through the completions.
        let data = connect(false).into();
        run(&mut driver, Input::Received { conn, data }, connack);
        assert!(woken.load(Ordering::SeqCst) > 0);
        assert!(!driver.stopping());
        assert!(!driver.stop_finished(0));
        assert_eq!(driver.stop_deadline(), None);
        let asked = run(&mut driver, Input::Shutdown, |_| true);
        assert!(driver.stopping());
        assert!(driver.stop_deadline().is_some());
        assert!(!driver.stop_finished(1), "a connection is open: {asked:?}");
        // The shutdown saved the session: its writes wait for their answers.
        assert!(!driver.stop_finished(0), "no store request waits");
        // What the shutdown wrote is answered through the completions; once every answer is
        // handled, the stop is over (well before it would time out).
        while !driver.stop_finished(0) {
            for input in driver.take_completions() {
                driver.handle(input, &mut |_| {});
            }
        }
        let timeout = driver.stop_deadline().expect("stopping");
        assert!(Instant::now() < timeout, "the stop timed out instead");
    }
}
