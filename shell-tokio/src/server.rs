//! The server: listeners, the broker task and the wiring between them.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jetmq_core::broker::{Action, Broker, ConnId, ConnInfo, Input, ListenerKind, Outbox};
use jetmq_core::time::{Instant, Now};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn, Instrument};

use crate::config::{ServerConfig, Transport};
use crate::connection::{ConnHandle, Connection, Mailbox, OpenSlot};
use crate::inputs::InputQueue;
use crate::record::handle;
use crate::store::{StoreBackend, StoreReplies};
use crate::ws_upgrade::Upgrade;

/// Inputs waiting for the broker task from connections; when full, their reading waits.
const INPUT_QUEUE: usize = 1024;

/// Messages for the broker task that must never wait: registrations, store completions and
/// flushed-bytes reports.
#[derive(Debug)]
enum Control {
    Register(ConnId, ConnHandle),
    Input(Input),
    /// Inputs are waiting in the broker task's [`InputQueue`] (store results).
    Queued,
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    /// The addresses the listeners are bound to (with the ports the system chose for port 0):
    /// those of `listen` first, then those of `listeners`, each in configuration order.
    pub local_addrs: Vec<SocketAddr>,
    /// Where the Prometheus metrics are served, when configured.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl ServerHandle {
    /// Stops the server gracefully and waits until it has.
    ///
    /// # Errors
    ///
    /// The error that stopped the server, if any.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
    }
}

/// Binds the listeners, restores the store and starts serving.
///
/// # Errors
///
/// The listeners are not valid together ([`ServerConfig::check`]), binding a listener failed
/// or restoring the store failed.
pub async fn start(config: ServerConfig, store: Arc<dyn StoreBackend>) -> io::Result<ServerHandle> {
    config
        .check()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let handshake_timeout = config.broker.connect_timeout;
    let max_ws_message = usize::try_from(config.broker.max_packet_size).unwrap_or(usize::MAX);
    let all = config
        .listen
        .iter()
        .map(|addr| (*addr, &Transport::Tcp, None))
        .chain(
            config
                .listeners
                .iter()
                .map(|l| (l.address, &l.transport, l.allowed_origins.as_deref())),
        );
    let mut listeners = Vec::new();
    let mut local_addrs = Vec::new();
    let mut described = Vec::new();
    for (addr, transport, origins) in all {
        let socket = TcpListener::bind(addr).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {addr}: {e} (is another broker running there?)"),
            )
        })?;
        let local = socket.local_addr()?;
        local_addrs.push(local);
        described.push((local, transport.describe()));
        listeners.push(Listener {
            socket,
            mode: Mode::new(transport, origins),
            handshake_timeout,
            max_ws_message,
        });
    }
    let desk = crate::metrics::MetricsDesk::new();
    let metrics = crate::metrics::MetricsServer::for_config(&config, &desk)?;
    let metrics_addr = metrics.as_ref().map(|m| m.local_addr);
    let restored = store
        .restore()
        .map_err(|e| io::Error::other(format!("cannot read the store: {e}")))?;
    // The bridge's NATS connection starts here, so that credentials NATS refuses stop the
    // start-up.
    let (control_tx, control_rx) = mpsc::unbounded_channel::<Control>();
    let control = control_tx.clone();
    let nats = crate::nats_link::NatsLink::for_config(&config, "jetmq", move |input| {
        let _ = control.send(Control::Input(input));
    })?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let task = tokio::spawn(serve(
        config,
        store,
        listeners,
        restored,
        (desk, metrics),
        (control_tx, control_rx, nats),
        shutdown_rx,
    ));
    for (addr, what) in &described {
        info!(%addr, "listening for MQTT over {what}");
    }
    Ok(ServerHandle {
        local_addrs,
        metrics_addr,
        shutdown: Some(shutdown_tx),
        task,
    })
}

/// Runs a server until `shutdown` completes, then stops it gracefully.
///
/// # Errors
///
/// Binding a listener or restoring the store failed, or the server stopped on an error.
pub async fn run(
    config: ServerConfig,
    store: Arc<dyn StoreBackend>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let handle = start(config, store).await?;
    shutdown.await;
    info!("shutting down");
    handle.shutdown().await
}

/// The broker's clock: a monotonic instant from the server's start and the wall clock.
struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    fn now(&self) -> Now {
        crate::clock::now_since(self.start.into_std())
    }

    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        self.start + Duration::from_nanos(at.as_nanos())
    }
}

async fn serve(
    config: ServerConfig,
    store: Arc<dyn StoreBackend>,
    listeners: Vec<Listener>,
    restored: Vec<jetmq_core::js::StoredMessage>,
    (desk, mut metrics): (
        Arc<crate::metrics::MetricsDesk>,
        Option<crate::metrics::MetricsServer>,
    ),
    (control_tx, mut control_rx, nats): (
        mpsc::UnboundedSender<Control>,
        mpsc::UnboundedReceiver<Control>,
        Option<crate::nats_link::NatsLink>,
    ),
    mut shutdown: oneshot::Receiver<()>,
) -> io::Result<()> {
    let clock = Clock {
        start: tokio::time::Instant::now(),
    };
    let start_time = clock.now();
    let mut broker = Broker::new(config.broker.clone(), config.seed, start_time);
    let mut recorder = match &config.record {
        Some(path) => Some(crate::record::Recorder::create(
            path,
            config.seed,
            &config.broker,
            start_time,
        )?),
        None => None,
    };
    let (input_tx, mut input_rx) = mpsc::channel::<Input>(INPUT_QUEUE);
    let mut out = Outbox::new();
    let count = restored.len();
    for record in restored {
        handle(
            &mut broker,
            &mut recorder,
            clock.now(),
            Input::Restored(record),
            &mut out,
        );
    }
    handle(
        &mut broker,
        &mut recorder,
        clock.now(),
        Input::RestoreComplete,
        &mut out,
    );
    info!(
        records = count,
        sessions = broker.session_count(),
        retained = broker.retained_count(),
        "store restored"
    );
    let wake = control_tx.clone();
    let queued = InputQueue::new(Arc::new(move || {
        let _ = wake.send(Control::Queued);
    }));
    let replies = StoreReplies::new(&*store, queued.clone());
    let effects = Effects {
        nats: nats.clone(),
        store: Arc::clone(&store),
        replies,
        auth: crate::auth_pool::AuthPool::start(config.auth_source(), config.auth_limits, {
            let control = control_tx.clone();
            move |input| {
                let _ = control.send(Control::Input(input));
            }
        })?,
        log_pii: config.log_pii,
    };
    let mut conns: HashMap<ConnId, ConnHandle> = HashMap::new();
    let mut pending_store = 0usize;
    // What the restore asked for: store writes, NATS subscriptions.
    for action in out.drain() {
        effects.carry_out(action, &mut conns, &mut pending_store);
    }

    let wiring = Wiring {
        inputs: input_tx.clone(),
        control: control_tx.clone(),
        next_conn: Arc::new(AtomicU64::new(1)),
        open: Arc::new(AtomicU64::new(0)),
    };
    let admission = Admission {
        max_connections: config.max_connections,
        per_address: crate::sockets::PerAddress::new(config.max_connections_per_address),
        keepalive: config.tcp_keepalive,
    };
    let accept_tasks: Vec<JoinHandle<()>> = listeners
        .into_iter()
        .map(|listener| tokio::spawn(accept_loop(listener, wiring.clone(), admission.clone())))
        .collect();
    drop(wiring);
    drop(input_tx);

    let mut stopping: Option<tokio::time::Instant> = None;
    // Inputs taken from `queued`, handled before anything else is awaited.
    let mut ready: VecDeque<Input> = VecDeque::new();
    let wake = control_tx.clone();
    desk.set_wake(move || {
        let _ = wake.send(Control::Queued);
    });
    loop {
        desk.answer(&broker);
        if let Some(since) = stopping {
            let done = conns.is_empty() && pending_store == 0;
            if done || since.elapsed() > config.shutdown_timeout {
                if !done {
                    warn!(
                        connections = conns.len(),
                        store_requests = pending_store,
                        "shutdown timed out"
                    );
                }
                break;
            }
        }
        let deadline = broker.next_deadline().map(|d| clock.deadline(d));
        let input = if let Some(input) = ready.pop_front() {
            input
        } else {
            tokio::select! {
            biased;
            control = control_rx.recv() => match control {
                Some(Control::Register(conn, handle)) => {
                    conns.insert(conn, handle);
                    continue;
                }
                Some(Control::Input(input)) => input,
                Some(Control::Queued) => {
                    ready.extend(queued.take());
                    continue;
                }
                None => break,
            },
            _ = &mut shutdown, if stopping.is_none() => {
                for task in &accept_tasks {
                    task.abort();
                }
                stopping = Some(tokio::time::Instant::now());
                Input::Shutdown
            }
            received = input_rx.recv(), if stopping.is_none() => match received {
                Some(input) => input,
                None => continue,
            },
            () = sleep_until(deadline) => Input::Tick,
            }
        };
        match &input {
            Input::Stored { .. } => pending_store = pending_store.saturating_sub(1),
            Input::Closed { conn } => {
                // A check still queued for it is not worth running.
                effects.auth.cancel(*conn);
                // The peer is gone: the broker will not ask to close it, so stop its writer.
                if let Some(c) = conns.remove(conn) {
                    c.mailbox.close();
                }
            }
            _ => {}
        }
        handle(&mut broker, &mut recorder, clock.now(), input, &mut out);
        loop {
            let again = out.wants_continue;
            for action in out.drain() {
                effects.carry_out(action, &mut conns, &mut pending_store);
            }
            if !again {
                break;
            }
            // A large fan-out goes on in the next call; let the connections run meanwhile.
            tokio::task::yield_now().await;
            handle(
                &mut broker,
                &mut recorder,
                clock.now(),
                Input::Continue,
                &mut out,
            );
        }
    }
    if let Some(link) = &nats {
        link.stop();
    }
    if let Some(m) = metrics.as_mut() {
        m.stop();
    }
    Ok(())
}

/// What carrying out the broker's actions needs besides the connections.
struct Effects {
    nats: Option<crate::nats_link::NatsLink>,
    store: Arc<dyn StoreBackend>,
    replies: StoreReplies,
    auth: crate::auth_pool::AuthPool,
    log_pii: bool,
}

impl Effects {
    /// Carries out one action: the NATS bridge's on the NATS connection, the rest here.
    fn carry_out(
        &self,
        action: Action,
        conns: &mut HashMap<ConnId, ConnHandle>,
        pending_store: &mut usize,
    ) {
        match (&action, &self.nats) {
            (
                Action::NatsPublish { .. }
                | Action::NatsSubscribe { .. }
                | Action::NatsQueueSubscribe { .. }
                | Action::NatsQueueUnsubscribe { .. }
                | Action::NatsUnsubscribe { .. },
                Some(link),
            ) => link.execute(&action),
            _ => execute(action, conns, self, pending_store),
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn execute(
    action: Action,
    conns: &mut HashMap<ConnId, ConnHandle>,
    effects: &Effects,
    pending_store: &mut usize,
) {
    match action {
        Action::Send { conn, bytes } => {
            if let Some(c) = conns.get(&conn) {
                c.mailbox.send(bytes);
            }
        }
        Action::Close { conn, reason } => {
            debug!(conn = conn.get(), ?reason, "closing connection");
            effects.auth.cancel(conn);
            if let Some(c) = conns.remove(&conn) {
                c.mailbox.close();
            }
        }
        Action::PauseRead { conn } => {
            if let Some(c) = conns.get(&conn) {
                c.mailbox.set_paused(true);
            }
        }
        Action::ResumeRead { conn } => {
            if let Some(c) = conns.get(&conn) {
                c.mailbox.set_paused(false);
            }
        }
        // Password hashing is slow on purpose: decided on the bounded authentication pool.
        Action::Authenticate(request) => effects.auth.submit(request),
        Action::Store { id, request } => {
            *pending_store += 1;
            effects
                .store
                .submit(id, request, effects.replies.completion());
        }
        Action::Notice(notice) => crate::notice::log(notice, effects.log_pii),
        // Only with a NATS connection (dispatch hands them to it).
        Action::NatsPublish { .. }
        | Action::NatsSubscribe { .. }
        | Action::NatsQueueSubscribe { .. }
        | Action::NatsQueueUnsubscribe { .. }
        | Action::NatsUnsubscribe { .. } => {}
    }
}

/// How a listener's connections become MQTT byte streams.
#[derive(Clone)]
enum Mode {
    /// The socket is the stream.
    Tcp,
    /// A TLS handshake, then the stream.
    Tls(TlsAcceptor),
    /// A WebSocket handshake for this path and these origins, then binary messages.
    WebSocket(Arc<Upgrade>),
    /// TLS, then WebSocket.
    SecureWebSocket(TlsAcceptor, Arc<Upgrade>),
}

impl Mode {
    fn new(transport: &Transport, origins: Option<&[String]>) -> Self {
        let upgrade = |path: &str| Arc::new(Upgrade::new(path, origins));
        match transport {
            Transport::Tcp => Self::Tcp,
            Transport::Tls(tls) => Self::Tls(TlsAcceptor::from(tls.server_config())),
            Transport::WebSocket { path } => Self::WebSocket(upgrade(path)),
            Transport::SecureWebSocket { path, tls } => {
                Self::SecureWebSocket(TlsAcceptor::from(tls.server_config()), upgrade(path))
            }
        }
    }
}

/// A bound listening socket and how its connections carry MQTT.
struct Listener {
    socket: TcpListener,
    mode: Mode,
    /// How long a TLS or WebSocket handshake may take.
    handshake_timeout: Duration,
    /// The largest WebSocket message or frame accepted.
    max_ws_message: usize,
}

/// What a new connection is wired to: the broker task's channels and the shared counters.
#[derive(Clone)]
struct Wiring {
    inputs: mpsc::Sender<Input>,
    control: mpsc::UnboundedSender<Control>,
    next_conn: Arc<AtomicU64>,
    /// Connections accepted and not yet closed, handshakes included.
    open: Arc<AtomicU64>,
}

/// What every accepted socket is checked against and given.
#[derive(Clone)]
struct Admission {
    max_connections: usize,
    per_address: crate::sockets::PerAddress,
    keepalive: Option<Duration>,
}

impl Wiring {
    /// Registers a connection (its handshakes done) with the broker and starts its task.
    /// False when the broker task is gone.
    fn attach<S>(&self, info: ConnInfo, socket: S, open: OpenSlot) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(conn) = ConnId::new(self.next_conn.fetch_add(1, Ordering::Relaxed)) else {
            return true;
        };
        // One span per connection when info logs are on: what it logs carries its number and
        // peer. Without them the task does not carry a disabled span (nor a copy of the peer).
        let span = tracing::info_span!("conn", id = conn.get(), peer = %info.peer);
        let mailbox = Arc::new(Mailbox::default());
        let handle = ConnHandle {
            mailbox: Arc::clone(&mailbox),
        };
        if self.control.send(Control::Register(conn, handle)).is_err()
            || self
                .control
                .send(Control::Input(Input::Accepted { conn, info }))
                .is_err()
        {
            return false;
        }
        let flushed = self.control.clone();
        let report = move |input| {
            let _ = flushed.send(Control::Input(input));
        };
        let task = Connection::new(conn, socket, self.inputs.clone(), mailbox, report, open);
        if span.is_disabled() {
            tokio::spawn(task);
        } else {
            tokio::spawn(task.instrument(span));
        }
        true
    }
}

fn conn_info(peer: SocketAddr, listener: ListenerKind, tls_identity: Option<String>) -> ConnInfo {
    ConnInfo {
        // Boxed (no spare capacity): a `String` with spare room becomes a `Bytes` with a
        // separate reference-count allocation.
        peer: peer.to_string().into_boxed_str().into(),
        listener,
        tls_identity: tls_identity.map(Into::into),
    }
}

/// Runs a connection's TLS and/or WebSocket handshakes, then attaches it. A failed or timed
/// out handshake only closes that socket.
async fn handshake(
    mode: Mode,
    socket: TcpStream,
    peer: SocketAddr,
    wiring: Wiring,
    open: OpenSlot,
    (limit, max_ws_message): (Duration, usize),
) {
    let steps = async {
        match mode {
            Mode::Tcp => {
                wiring.attach(conn_info(peer, ListenerKind::Tcp, None), socket, open);
            }
            Mode::Tls(acceptor) => {
                let tls = acceptor.accept(socket).await.map_err(|e| e.to_string())?;
                let identity = crate::tls::client_identity(tls.get_ref().1);
                wiring.attach(conn_info(peer, ListenerKind::Tls, identity), tls, open);
            }
            Mode::WebSocket(path) => {
                let ws = crate::ws::accept(socket, &path, max_ws_message)
                    .await
                    .map_err(|e| e.to_string())?;
                wiring.attach(conn_info(peer, ListenerKind::WebSocket, None), ws, open);
            }
            Mode::SecureWebSocket(acceptor, path) => {
                let tls = acceptor.accept(socket).await.map_err(|e| e.to_string())?;
                let identity = crate::tls::client_identity(tls.get_ref().1);
                let ws = crate::ws::accept(tls, &path, max_ws_message)
                    .await
                    .map_err(|e| e.to_string())?;
                let info = conn_info(peer, ListenerKind::SecureWebSocket, identity);
                wiring.attach(info, ws, open);
            }
        }
        Ok::<(), String>(())
    };
    let failure = match tokio::time::timeout(limit, steps).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(_) => format!("no handshake within {limit:?}"),
    };
    // The slot, if the handshake did not get to use it, was dropped with `steps`.
    debug!(%peer, error = %failure, "handshake failed; connection closed");
}

async fn accept_loop(listener: Listener, wiring: Wiring, admission: Admission) {
    // Handshakes run beside the loop; aborting the loop (at shutdown) drops and aborts them.
    let mut handshakes = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.socket.accept() => accepted,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if wiring.open.load(Ordering::Relaxed) >= admission.max_connections as u64 {
            warn!(%peer, "connection refused: max_connections reached");
            drop(socket);
            continue;
        }
        let Some(address) = admission.per_address.admit(peer.ip()) else {
            warn!(%peer, "connection refused: max_connections_per_address reached");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        if let Some(idle) = admission.keepalive {
            if let Err(e) = crate::sockets::set_keepalive(&socket, idle) {
                debug!(%peer, error = %e, "cannot turn TCP keepalive on");
            }
        }
        wiring.open.fetch_add(1, Ordering::Relaxed);
        let open = OpenSlot::adopt(Arc::clone(&wiring.open), address);
        if let Mode::Tcp = listener.mode {
            if !wiring.attach(conn_info(peer, ListenerKind::Tcp, None), socket, open) {
                return;
            }
        } else {
            handshakes.spawn(handshake(
                listener.mode.clone(),
                socket,
                peer,
                wiring.clone(),
                open,
                (listener.handshake_timeout, listener.max_ws_message),
            ));
        }
    }
}
