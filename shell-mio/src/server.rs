//! [`MioServer`]: the broker, its listeners and connections on a `mio::Poll` the application
//! owns.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use jetmq_core::broker::{ConnId, ConnInfo, Input};
use jetmq_shell::config::{ServerConfig, Transport as ListenerTransport};
use jetmq_shell::driver::{ConnAction, Driver};
use jetmq_shell::store::StoreBackend;
use jetmq_shell::ws_upgrade::Upgrade;
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token, Waker};
use slab::Slab;
use tracing::{debug, info, warn};

use crate::connection::{Connection, ReadOutcome};
use crate::transport::{self, Handshake, Transport};

/// The tokens jetmq may use on the application's `Poll`: `count` of them from `first`, one
/// per listener, then one per connection, so `count` bounds the connections too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    /// The first token jetmq uses.
    pub first: usize,
    /// How many tokens from `first` jetmq may use.
    pub count: usize,
}

/// How a listener's connections carry MQTT.
#[derive(Clone)]
enum Mode {
    Tcp,
    Tls(Arc<rustls::ServerConfig>),
    Ws(Arc<Upgrade>),
    Wss(Arc<rustls::ServerConfig>, Arc<Upgrade>),
}

impl Mode {
    fn new(transport: &ListenerTransport, origins: Option<&[String]>) -> Self {
        let upgrade = |path: &str| Arc::new(Upgrade::new(path, origins));
        match transport {
            ListenerTransport::Tcp => Self::Tcp,
            ListenerTransport::Tls(tls) => Self::Tls(tls.server_config()),
            ListenerTransport::WebSocket { path } => Self::Ws(upgrade(path)),
            ListenerTransport::SecureWebSocket { path, tls } => {
                Self::Wss(tls.server_config(), upgrade(path))
            }
        }
    }

    fn kind(&self) -> jetmq_core::broker::ListenerKind {
        use jetmq_core::broker::ListenerKind as K;
        match self {
            Self::Tcp => K::Tcp,
            Self::Tls(_) => K::Tls,
            Self::Ws(_) => K::WebSocket,
            Self::Wss(..) => K::SecureWebSocket,
        }
    }
}

struct Listener {
    socket: TcpListener,
    mode: Mode,
}

/// The jetmq broker on a `mio::Poll`: register it with [`MioServer::new`], pass it the events
/// of its tokens ([`MioServer::owns`], [`MioServer::handle_event`]), poll with
/// [`MioServer::poll_timeout`] and call [`MioServer::after_poll`] after every poll.
///
/// mio allows one `Waker` per `Poll`, so the application lends jetmq its own: jetmq wakes it
/// when store or authentication work finishes, and collects that work in `after_poll`.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use jetmq_mio::{MioServer, Tokens};
/// let mut poll = mio::Poll::new()?;
/// let mut events = mio::Events::with_capacity(1024);
/// let config = jetmq_shell::config::ServerConfig::default();
/// let store = Arc::new(jetmq_shell::store::MemoryBackend::default());
/// let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0))?);
/// let tokens = Tokens { first: 1000, count: 100_000 };
/// let mut jetmq = MioServer::new(config, store, poll.registry(), tokens, waker)?;
/// loop {
///     poll.poll(&mut events, jetmq.poll_timeout())?;
///     for event in &events {
///         if jetmq.owns(event.token()) {
///             jetmq.handle_event(poll.registry(), event);
///         } // else: the application's own sockets
///     }
///     jetmq.after_poll(poll.registry());
/// }
/// # }
/// ```
pub struct MioServer {
    /// The broker, its recording and its workers (store, authentication, NATS, metrics).
    driver: Driver,
    /// Listeners and connections.
    net: Net,
    stopped: bool,
}

/// The sockets: listeners, connections, and the inputs they made that wait for the driver.
struct Net {
    tokens: Tokens,
    listeners: Vec<Listener>,
    local_addrs: Vec<SocketAddr>,
    conns: Slab<Connection>,
    by_id: HashMap<ConnId, usize>,
    next_conn: u64,
    /// Connections per source address (`[limits] max_connections_per_address`).
    per_address: jetmq_shell::sockets::PerAddress,
    /// TCP keepalive idle time on accepted sockets.
    keepalive: Option<Duration>,
    inputs: VecDeque<Input>,
    max_ws_message: usize,
    handshake_timeout: Duration,
    max_connections: usize,
    read_buf: BytesMut,
    /// Connections with bytes to write once the waiting inputs are handled, so a turn's
    /// sends to one connection go out in one write.
    dirty: Vec<usize>,
    /// Connections whose read budget ran out with bytes possibly left: read on the next turn.
    more_to_read: Vec<usize>,
}

impl MioServer {
    /// Binds the listeners (registered on `registry` with tokens from `tokens`), restores the
    /// store and starts the broker; `waker` is the `Poll`'s waker, woken when work done on
    /// other threads is ready for [`after_poll`](Self::after_poll).
    ///
    /// # Errors
    ///
    /// The configuration's listeners do not fit together, `tokens` has too few tokens, binding
    /// a listener failed, or the driver could not start ([`Driver::start`]: the store cannot
    /// be read, NATS refused the credentials, the recording cannot be created, ...).
    pub fn new(
        config: ServerConfig,
        store: Arc<dyn StoreBackend>,
        registry: &Registry,
        tokens: Tokens,
        waker: Arc<Waker>,
    ) -> io::Result<Self> {
        config
            .check()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let all: Vec<(SocketAddr, ListenerTransport, Option<&[String]>)> = config
            .listen
            .iter()
            .map(|a| (*a, ListenerTransport::Tcp, None))
            .chain(
                config
                    .listeners
                    .iter()
                    .map(|l| (l.address, l.transport.clone(), l.allowed_origins.as_deref())),
            )
            .collect();
        if tokens.count <= all.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "jetmq needs more than {} tokens ({} listeners, then connections)",
                    all.len(),
                    all.len()
                ),
            ));
        }
        let mut listeners = Vec::new();
        let mut local_addrs = Vec::new();
        for (i, (addr, transport, origins)) in all.iter().enumerate() {
            let std_listener = std::net::TcpListener::bind(addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr}: {e} (is another broker running there?)"),
                )
            })?;
            std_listener.set_nonblocking(true)?;
            let mut socket = TcpListener::from_std(std_listener);
            registry.register(&mut socket, Token(tokens.first + i), Interest::READABLE)?;
            let local = socket.local_addr()?;
            info!(addr = %local, "listening for MQTT over {}", transport.describe());
            local_addrs.push(local);
            listeners.push(Listener {
                socket,
                mode: Mode::new(transport, *origins),
            });
        }
        let driver = Driver::start(
            &config,
            store,
            "jetmq-mio",
            Arc::new(move || {
                let _ = waker.wake();
            }),
        )?;
        Ok(Self {
            driver,
            net: Net {
                tokens,
                listeners,
                local_addrs,
                conns: Slab::new(),
                by_id: HashMap::new(),
                next_conn: 1,
                per_address: jetmq_shell::sockets::PerAddress::new(
                    config.max_connections_per_address,
                ),
                keepalive: config.tcp_keepalive,
                inputs: VecDeque::new(),
                max_ws_message: usize::try_from(config.broker.max_packet_size)
                    .unwrap_or(usize::MAX),
                handshake_timeout: config.broker.connect_timeout,
                max_connections: config.max_connections,
                read_buf: BytesMut::new(),
                dirty: Vec::new(),
                more_to_read: Vec::new(),
            },
            stopped: false,
        })
    }

    /// The addresses the listeners are bound to (with the ports the system chose for port 0):
    /// those of `listen` first, then those of `listeners`, each in configuration order.
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.net.local_addrs
    }

    /// Where the Prometheus metrics are served (`[metrics] listen`), if configured.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.driver.metrics_addr()
    }

    /// Open MQTT connections (handshakes done), for health checks and metrics.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.driver.broker().connection_count()
    }

    /// Sessions, online and offline, for health checks and metrics.
    #[must_use]
    pub fn session_count(&self) -> usize {
        self.driver.broker().session_count()
    }

    /// Whether `token` is one of jetmq's.
    #[must_use]
    pub fn owns(&self, token: Token) -> bool {
        let tokens = self.net.tokens;
        token.0 >= tokens.first && token.0 - tokens.first < tokens.count
    }

    /// How long the application may wait in `poll` before jetmq needs
    /// [`after_poll`](Self::after_poll): until the broker's next timer, a handshake deadline
    /// or the end of a graceful stop; zero when work is waiting.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.driver.wants_continue()
            || !self.net.inputs.is_empty()
            || !self.net.more_to_read.is_empty()
            || self.stopped
        {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut at: Option<Instant> = self.driver.next_deadline();
        let mut earliest = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        for (_, c) in &self.net.conns {
            if c.transport.handshaking() {
                earliest(c.handshake_deadline);
            }
        }
        if let Some(end) = self.driver.stop_deadline() {
            earliest(end);
        }
        at.map(|t| t.saturating_duration_since(now))
    }

    /// Handles an event for one of jetmq's tokens.
    pub fn handle_event(&mut self, registry: &Registry, event: &Event) {
        let Some(offset) = event.token().0.checked_sub(self.net.tokens.first) else {
            return;
        };
        if offset < self.net.listeners.len() {
            self.net.accept(registry, offset);
        } else {
            let key = offset - self.net.listeners.len();
            self.net
                .conn_event(registry, key, event.is_readable(), event.is_writable());
        }
        self.process(registry);
    }

    /// Runs what is due after a poll: finished store and authentication work, the broker's
    /// timers, handshake timeouts, a large fan-out's next part and the end of a stop.
    pub fn after_poll(&mut self, registry: &Registry) {
        self.driver.answer_metrics();
        self.net.inputs.extend(self.driver.take_completions());
        let now = Instant::now();
        if self.driver.next_deadline().is_some_and(|at| at <= now) {
            self.net.inputs.push_back(Input::Tick);
        }
        let expired: Vec<usize> = self
            .net
            .conns
            .iter()
            .filter(|(_, c)| c.transport.handshaking() && c.handshake_deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            debug!("handshake timed out; connection closed");
            self.net.drop_conn(registry, key);
        }
        if self.driver.wants_continue() {
            self.net.inputs.push_back(Input::Continue);
        }
        for key in std::mem::take(&mut self.net.more_to_read) {
            self.net.read(registry, key);
        }
        self.process(registry);
        if !self.stopped && self.driver.stop_finished(self.net.conns.len()) {
            let keys: Vec<usize> = self.net.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.net.drop_conn(registry, key);
            }
            self.driver.stop_nats();
            self.stopped = true;
        }
    }

    /// Starts a graceful stop: no more connections, v5 clients get DISCONNECT 0x8B, pending
    /// store writes finish. [`is_stopped`](Self::is_stopped) tells when it is over.
    pub fn shutdown(&mut self, registry: &Registry) {
        if self.driver.stopping() {
            return;
        }
        for l in &mut self.net.listeners {
            let _ = registry.deregister(&mut l.socket);
        }
        self.net.inputs.push_back(Input::Shutdown);
        self.process(registry);
    }

    /// Whether a stop begun with [`shutdown`](Self::shutdown) is over.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds the waiting inputs to the broker and carries out its actions.
    fn process(&mut self, registry: &Registry) {
        loop {
            while let Some(input) = self.net.inputs.pop_front() {
                let net = &mut self.net;
                self.driver
                    .handle(input, &mut |action| net.execute(registry, action));
            }
            // Writing reports flushed bytes, which are inputs again.
            let dirty = std::mem::take(&mut self.net.dirty);
            if dirty.is_empty() {
                return;
            }
            for key in dirty {
                if let Some(c) = self.net.conns.get_mut(key) {
                    c.dirty = false;
                }
                self.net.write(registry, key);
            }
        }
    }
}

impl Net {
    /// Puts a connection on the list written at the end of the turn.
    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Carries out what the broker asks of a connection.
    fn execute(&mut self, registry: &Registry, action: ConnAction) {
        match action {
            ConnAction::Send { conn, bytes } => {
                if let Some(&key) = self.by_id.get(&conn) {
                    if let Some(c) = self.conns.get_mut(key) {
                        c.push(bytes);
                    }
                    self.mark_dirty(key);
                }
            }
            ConnAction::Close { conn, reason: _ } => {
                if let Some(&key) = self.by_id.get(&conn) {
                    if let Some(c) = self.conns.get_mut(key) {
                        c.closing = true;
                    }
                    self.mark_dirty(key);
                }
            }
            ConnAction::PauseRead { conn } => {
                if let Some(c) = self.by_id.get(&conn).and_then(|&k| self.conns.get_mut(k)) {
                    c.paused = true;
                }
            }
            ConnAction::ResumeRead { conn } => {
                if let Some(&key) = self.by_id.get(&conn) {
                    let readable = self.conns.get_mut(key).is_some_and(|c| {
                        c.paused = false;
                        std::mem::take(&mut c.readable)
                    });
                    if readable {
                        // Edge-triggered: the bytes that arrived while paused raise no event.
                        self.read(registry, key);
                    }
                }
            }
        }
    }

    fn accept(&mut self, registry: &Registry, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let (socket, peer) = match listener.socket.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    return;
                }
            };
            let mode = listener.mode.clone();
            let capacity = self.tokens.count - self.listeners.len();
            if self.conns.len() >= self.max_connections || self.conns.len() >= capacity {
                warn!(%peer, "connection refused: max_connections reached");
                continue;
            }
            let Some(address) = self.per_address.admit(peer.ip()) else {
                warn!(%peer, "connection refused: max_connections_per_address reached");
                continue;
            };
            let _ = socket.set_nodelay(true);
            if let Some(idle) = self.keepalive {
                if let Err(e) = jetmq_shell::sockets::set_keepalive(&socket, idle) {
                    debug!(%peer, error = %e, "cannot turn TCP keepalive on");
                }
            }
            self.open(registry, socket, peer, mode, address);
        }
    }

    fn open(
        &mut self,
        registry: &Registry,
        socket: TcpStream,
        peer: SocketAddr,
        mode: Mode,
        address: jetmq_shell::sockets::AddressSlot,
    ) {
        let info = ConnInfo {
            // Boxed (no spare capacity): a `String` with spare room becomes a `Bytes` with a
            // separate reference-count allocation.
            peer: peer.to_string().into_boxed_str().into(),
            listener: mode.kind(),
            tls_identity: None,
        };
        let (transport, state) = match mode {
            Mode::Tcp => (Transport::Tcp(socket), Handshake::Done),
            Mode::Ws(path) => Transport::websocket(socket, path, self.max_ws_message),
            Mode::Tls(config) => match transport::tls(socket, config, None) {
                Ok(t) => (t, Handshake::Pending),
                Err(e) => {
                    debug!(%peer, error = %e, "TLS setup failed");
                    return;
                }
            },
            Mode::Wss(config, path) => match transport::tls(socket, config, Some(path)) {
                Ok(t) => (t, Handshake::Pending),
                Err(e) => {
                    debug!(%peer, error = %e, "TLS setup failed");
                    return;
                }
            },
        };
        if let Handshake::Failed(e) = &state {
            debug!(%peer, error = %e, "handshake failed; connection closed");
            return;
        }
        let deadline = Instant::now() + self.handshake_timeout;
        let key = self
            .conns
            .insert(Connection::new(transport, info, deadline, address));
        let token = Token(self.tokens.first + self.listeners.len() + key);
        let registered = self
            .conns
            .get_mut(key)
            .and_then(|c| c.transport.socket())
            .map(|s| registry.register(s, token, Interest::READABLE | Interest::WRITABLE));
        match registered {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                warn!(%peer, error = %e, "cannot watch the connection's socket; closed");
                self.conns.remove(key);
                return;
            }
            None => {
                self.conns.remove(key);
                return;
            }
        }
        if let Handshake::Done = state {
            self.attach(key);
        }
    }

    /// A connection's handshakes are done: the broker learns of it.
    fn attach(&mut self, key: usize) {
        let Some(id) = ConnId::new(self.next_conn) else {
            return;
        };
        self.next_conn += 1;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.id = Some(id);
        c.info.tls_identity = c
            .transport
            .tls()
            .and_then(jetmq_shell::tls::client_identity)
            .map(Into::into);
        self.by_id.insert(id, key);
        let info = c.info.clone();
        self.inputs.push_back(Input::Accepted { conn: id, info });
    }

    fn conn_event(&mut self, registry: &Registry, key: usize, readable: bool, writable: bool) {
        let max_message = self.max_ws_message;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.transport.handshaking() {
            match c.advance(max_message) {
                Handshake::Pending => return,
                Handshake::Failed(e) => {
                    debug!(peer = %c.info.peer, error = %e, "handshake failed; connection closed");
                    self.drop_conn(registry, key);
                    return;
                }
                Handshake::Done => {
                    self.attach(key);
                    // TLS may hold application bytes that came with the handshake.
                    self.read(registry, key);
                    return;
                }
            }
        }
        if writable {
            self.write(registry, key);
        }
        if readable {
            self.read(registry, key);
        }
    }

    fn read(&mut self, registry: &Registry, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Some(id) = c.id else {
            return;
        };
        if c.closing {
            return;
        }
        if c.paused {
            c.readable = true;
            return;
        }
        let outcome = c.read(&mut self.read_buf);
        if !self.read_buf.is_empty() {
            let data = self.read_buf.split();
            self.inputs.push_back(Input::Received { conn: id, data });
        }
        // Replies (WebSocket pongs) may wait to be written.
        self.write(registry, key);
        if let ReadOutcome::More = outcome {
            self.more_to_read.push(key);
        }
        if let ReadOutcome::Closed = outcome {
            self.inputs.push_back(Input::Closed { conn: id });
            self.drop_conn(registry, key);
        }
    }

    fn write(&mut self, registry: &Registry, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match c.write() {
            Ok(n) => {
                if let (Some(id), true) = (c.id, n > 0) {
                    self.inputs.push_back(Input::Flushed { conn: id, bytes: n });
                }
                if c.closing && c.drained() {
                    self.drop_conn(registry, key);
                }
            }
            Err(_) => {
                let id = c.id;
                let closing = c.closing;
                if let (Some(id), false) = (id, closing) {
                    self.inputs.push_back(Input::Closed { conn: id });
                }
                self.drop_conn(registry, key);
            }
        }
    }

    /// Closes a connection's stream and forgets it.
    fn drop_conn(&mut self, registry: &Registry, key: usize) {
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        // (Its authentication, if queued, the driver cancelled when the broker closed it or
        // heard that the peer did.)
        if let Some(id) = c.id {
            self.by_id.remove(&id);
        }
        if let Some(s) = c.transport.socket() {
            let _ = registry.deregister(s);
        }
        c.transport.close();
    }
}
