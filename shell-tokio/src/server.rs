//! The server: listeners, the broker task and the wiring between them.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jetmq_core::broker::{ConnId, ConnInfo, Input, ListenerKind};
use jetmq_shell::driver::{ConnAction, Driver};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn, Instrument};

use crate::config::{ServerConfig, Transport};
use crate::connection::{ConnHandle, Connection, Mailbox, OpenSlot};
use crate::store::StoreBackend;
use crate::ws_upgrade::Upgrade;

/// Inputs waiting for the broker task from connections; when full, their reading waits.
const INPUT_QUEUE: usize = 1024;

/// Messages for the broker task that must never wait: registrations, accepted connections,
/// flushed-bytes reports, and the driver's wake-ups.
#[derive(Debug)]
enum Control {
    Register(ConnId, ConnHandle),
    Input(Input),
    /// Inputs are waiting in the driver's completions (store results, authentication
    /// decisions, NATS messages), or a metrics request waits for an answer.
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

/// Binds the listeners, starts the driver (which restores the store) and starts serving.
///
/// # Errors
///
/// The listeners are not valid together ([`ServerConfig::check`]), binding a listener failed
/// or the driver could not start ([`Driver::start`]: restoring the store failed, NATS refused
/// the credentials, ...).
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
    // The driver connects to NATS here, so that credentials NATS refuses stop the start-up.
    let (control_tx, control_rx) = mpsc::unbounded_channel::<Control>();
    let wake = control_tx.clone();
    let driver = Driver::start(
        &config,
        store,
        "jetmq",
        Arc::new(move || {
            let _ = wake.send(Control::Queued);
        }),
    )?;
    let metrics_addr = driver.metrics_addr();
    let admission = Admission {
        max_connections: config.max_connections,
        per_address: crate::sockets::PerAddress::new(config.max_connections_per_address),
        keepalive: config.tcp_keepalive,
    };
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let task = tokio::spawn(serve(
        driver,
        listeners,
        admission,
        (control_tx, control_rx),
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

async fn serve(
    mut driver: Driver,
    listeners: Vec<Listener>,
    admission: Admission,
    (control_tx, mut control_rx): (
        mpsc::UnboundedSender<Control>,
        mpsc::UnboundedReceiver<Control>,
    ),
    mut shutdown: oneshot::Receiver<()>,
) -> io::Result<()> {
    let (input_tx, mut input_rx) = mpsc::channel::<Input>(INPUT_QUEUE);
    let mut conns: HashMap<ConnId, ConnHandle> = HashMap::new();
    let wiring = Wiring {
        inputs: input_tx,
        control: control_tx,
        next_conn: Arc::new(AtomicU64::new(1)),
        open: Arc::new(AtomicU64::new(0)),
    };
    let accept_tasks: Vec<JoinHandle<()>> = listeners
        .into_iter()
        .map(|listener| tokio::spawn(accept_loop(listener, wiring.clone(), admission.clone())))
        .collect();
    drop(wiring);

    // Inputs taken from the driver's completions, handled before anything else is awaited.
    let mut ready: VecDeque<Input> = VecDeque::new();
    loop {
        driver.answer_metrics();
        if driver.stop_finished(conns.len()) {
            break;
        }
        // While stopping, the loop also wakes when the shutdown timeout is due, so a
        // connection that never closes cannot hold the stop past it.
        let deadline = [driver.next_deadline(), driver.stop_deadline()]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
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
                    ready.extend(driver.take_completions());
                    continue;
                }
                None => break,
            },
            _ = &mut shutdown, if !driver.stopping() => {
                for task in &accept_tasks {
                    task.abort();
                }
                Input::Shutdown
            }
            received = input_rx.recv(), if !driver.stopping() => match received {
                Some(input) => input,
                None => continue,
            },
            () = sleep_until(deadline) => Input::Tick,
            }
        };
        if let Input::Closed { conn } = &input {
            // The peer is gone: the broker will not ask to close it, so stop its writer.
            if let Some(c) = conns.remove(conn) {
                c.mailbox.close();
            }
        }
        let mut carry_out = |action| execute(action, &mut conns);
        driver.handle(input, &mut carry_out);
        while driver.wants_continue() {
            // A large fan-out goes on in the next call; let the connections run meanwhile.
            tokio::task::yield_now().await;
            driver.handle(Input::Continue, &mut carry_out);
        }
    }
    // Dropping the driver stops the NATS connection and the metrics endpoint.
    drop(driver);
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Carries out what the broker asks of a connection.
fn execute(action: ConnAction, conns: &mut HashMap<ConnId, ConnHandle>) {
    match action {
        ConnAction::Send { conn, bytes } => {
            if let Some(c) = conns.get(&conn) {
                c.mailbox.send(bytes);
            }
        }
        ConnAction::Close { conn, reason: _ } => {
            if let Some(c) = conns.remove(&conn) {
                c.mailbox.close();
            }
        }
        ConnAction::PauseRead { conn } => {
            if let Some(c) = conns.get(&conn) {
                c.mailbox.set_paused(true);
            }
        }
        ConnAction::ResumeRead { conn } => {
            if let Some(c) = conns.get(&conn) {
                c.mailbox.set_paused(false);
            }
        }
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
