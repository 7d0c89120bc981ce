//! The shells' NATS connection for the subject bridge: the core's [`NatsClient`] over a TCP
//! socket (TLS when configured) on threads of its own (so both shells use it, with or without
//! tokio), reconnecting with backoff when the connection drops. Messages of the broker's
//! subscriptions come back as `Input::NatsMessage` (and each completed handshake as
//! `Input::NatsConnected`) through the callback the shell gives.
//!
//! At start-up the shells wait a moment for the first connection's outcome: credentials the
//! NATS server refuses (or a TLS handshake that fails) stop the server with a message naming
//! the setting to fix, instead of a broker that retries forever in the background.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;
use jetmq_core::broker::{Action, Input};
use jetmq_core::nats::{ConnectOptions, Event, Headers, NatsClient, NonceSigner};
use tracing::{info, warn};

use crate::nats_config::{NatsConfig, NatsTls};
use crate::nats_tls::TlsSession;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A write to NATS that takes longer drops the connection (and reconnects), so a stalled NATS
/// server cannot hold the writer thread for long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and as whom a connection connects.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// The servers (`host:port`), tried in turn.
    pub(crate) addresses: Vec<String>,
    /// TLS, when configured.
    pub(crate) tls: Option<NatsTls>,
    /// What `CONNECT` says.
    pub(crate) options: ConnectOptions,
    /// Signs the server's nonce (nkey and `.creds` authentication).
    pub(crate) signer: Option<Arc<dyn NonceSigner>>,
    /// The credentials' settings and what to check when the server refuses them.
    pub(crate) remedy: String,
}

impl Endpoint {
    /// The endpoint of `config`, naming the connection `name` on the server.
    pub(crate) fn new(config: &NatsConfig, name: &str) -> Self {
        Self {
            addresses: config.addresses.clone(),
            tls: config.tls.clone(),
            options: config.connect_options(name),
            signer: config.signer(),
            remedy: config.credentials_remedy(),
        }
    }
}

/// How the first connection attempts went (see [`Link::wait_settled`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The server accepted the credentials (it answered the handshake's `PING`).
    Authenticated,
    /// The server refused the credentials, or the TLS handshake failed: why, naming the
    /// settings to check.
    Refused(String),
    /// No server could be reached (yet): jetmq keeps trying.
    Unreachable,
    /// Nothing is known yet.
    Undecided,
}

/// Whether a server error is a refusal of the credentials (`Authorization Violation`,
/// `User Authentication Expired`, ...) rather than of one operation.
fn is_auth_error(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("authorization violation") || e.contains("authentication")
}

/// What the connection's threads found out about the credentials.
#[derive(Debug, Default)]
struct Outcome {
    /// The current socket's handshake was answered (the server took the credentials).
    authenticated: bool,
    /// The last refusal (of the credentials, or a TLS failure), until a handshake succeeds.
    refused: Option<String>,
    /// The last attempt could not reach a server.
    unreachable: bool,
}

/// What a connection's threads share: the protocol state, the socket while connected and the
/// user's state `S` (the bridge's subscriptions, the JetStream executor).
pub(crate) struct Shared<S> {
    pub(crate) client: NatsClient,
    /// The socket while connected (the writer thread writes to a clone of it).
    socket: Option<TcpStream>,
    /// Its TLS session, once TLS is up.
    tls: Option<TlsSession>,
    /// TLS has records of its own to send (the writer sends them).
    tls_wants_write: bool,
    /// Counts sockets, so the writer thread knows when to take a new clone.
    generation: u64,
    /// The writer thread waits for work (so it needs waking).
    writer_idle: bool,
    stopped: bool,
    outcome: Outcome,
    pub(crate) state: S,
}

/// The lock and the things threads wait for.
struct Inner<S> {
    shared: Mutex<Shared<S>>,
    /// Stop requested (ends a reconnection backoff early).
    stopping: Condvar,
    /// Bytes to write, a new socket, or stop: wakes the writer thread.
    writable: Condvar,
    /// The credentials were accepted or refused, or no server was reachable.
    settled: Condvar,
    /// The credentials' settings and what to check when the server refuses them.
    remedy: String,
}

/// What a connection does as it comes and goes and as messages arrive.
pub(crate) trait Hooks<S>: Send + 'static {
    /// A socket is up (under the lock, before anything is read).
    fn connected(&self, _shared: &mut Shared<S>) {}

    /// The socket is gone (under the lock).
    fn lost(&self, _shared: &mut Shared<S>) {}

    /// What arrived (messages, and `Connected` once a handshake is done), outside the lock
    /// (take it again to answer).
    fn events(&self, link: &Link<S>, events: &mut Vec<Event>);
}

/// A NATS connection on threads of its own (a reader that also reconnects with backoff, and
/// a writer); its state `S` sits under the same lock as the protocol. Whatever is queued
/// under the lock is written by the writer thread, outside it, many operations per write.
pub(crate) struct Link<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Link<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Send + 'static> Link<S> {
    /// Connects to one of the endpoint's addresses (and keeps reconnecting, trying them in
    /// turn); its threads are named after `thread`.
    pub(crate) fn start(
        endpoint: Endpoint,
        state: S,
        thread: &str,
        hooks: impl Hooks<S>,
    ) -> io::Result<Self> {
        let Endpoint {
            addresses,
            tls,
            options,
            signer,
            remedy,
        } = endpoint;
        let mut client = NatsClient::new(options, 64 * 1024 * 1024);
        if let Some(signer) = signer {
            client = client.with_signer(signer);
        }
        let link = Self {
            inner: Arc::new(Inner {
                shared: Mutex::new(Shared {
                    client,
                    socket: None,
                    tls: None,
                    tls_wants_write: false,
                    generation: 0,
                    writer_idle: false,
                    stopped: false,
                    outcome: Outcome::default(),
                    state,
                }),
                stopping: Condvar::new(),
                writable: Condvar::new(),
                settled: Condvar::new(),
                remedy,
            }),
        };
        let reading = link.clone();
        std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || run(&addresses, tls.as_ref(), &reading, &hooks))?;
        let writing = link.clone();
        std::thread::Builder::new()
            .name(format!("{thread}-write"))
            .spawn(move || write_loop(&writing))?;
        Ok(link)
    }

    /// Runs `f` on the shared state; what it queued is written soon after. `None` if a
    /// thread panicked.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Shared<S>) -> R) -> Option<R> {
        let mut s = self.inner.shared.lock().ok()?;
        let r = f(&mut s);
        let wake = s.writer_idle && s.has_output();
        drop(s);
        if wake {
            self.inner.writable.notify_one();
        }
        Some(r)
    }

    /// Waits up to `timeout` for the first connection's outcome: the credentials accepted or
    /// refused, or no server reachable.
    pub(crate) fn wait_settled(&self, timeout: Duration) -> Settled {
        let deadline = Instant::now() + timeout;
        let Ok(mut s) = self.inner.shared.lock() else {
            return Settled::Undecided;
        };
        loop {
            if s.outcome.authenticated {
                return Settled::Authenticated;
            }
            if let Some(why) = &s.outcome.refused {
                return Settled::Refused(why.clone());
            }
            if s.outcome.unreachable {
                return Settled::Unreachable;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || s.stopped {
                return Settled::Undecided;
            }
            s = match self.inner.settled.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(_) => return Settled::Undecided,
            };
        }
    }

    /// Records what the connection found out, and wakes [`wait_settled`](Self::wait_settled).
    fn settle(&self, s: &mut Shared<S>, change: impl FnOnce(&mut Outcome)) {
        change(&mut s.outcome);
        self.inner.settled.notify_all();
    }

    /// Records a refusal: `why` (no secret in it), with the credentials' remedy.
    fn refuse(&self, address: &str, why: &str, credentials: bool) {
        let message = if credentials {
            format!(
                "the NATS server at {address} refused jetmq's credentials ({why}): {}",
                self.inner.remedy
            )
        } else {
            format!("the connection to the NATS server at {address} failed: {why}")
        };
        warn!("{message}");
        if let Ok(mut s) = self.inner.shared.lock() {
            self.settle(&mut s, |o| o.refused = Some(message));
        }
    }

    /// Whether [`stop`](Self::stop) was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.inner.shared.lock().map_or(true, |s| s.stopped)
    }

    /// Closes the connection and stops reconnecting.
    pub(crate) fn stop(&self) {
        if let Ok(mut s) = self.inner.shared.lock() {
            s.stopped = true;
            if let Some(w) = s.socket.take() {
                let _ = w.shutdown(std::net::Shutdown::Both);
            }
        }
        self.inner.stopping.notify_all();
        self.inner.writable.notify_all();
        self.inner.settled.notify_all();
    }
}

impl<S> Shared<S> {
    /// Whether the writer has something to write.
    fn has_output(&self) -> bool {
        self.client.has_output() || self.tls_wants_write
    }
}

/// The writer thread's socket: a clone of the connection's, with its TLS session.
struct Writer {
    generation: u64,
    socket: TcpStream,
    tls: Option<TlsSession>,
}

impl Writer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &self.tls {
            Some(tls) => tls.write(bytes, &mut self.socket),
            None => self.socket.write_all(bytes),
        }
    }
}

/// Writes what the client queued, as it comes, to the current socket; a failed write shuts
/// the socket down (the reader notices and reconnects).
fn write_loop<S>(link: &Link<S>) {
    let inner = &link.inner;
    let mut current: Option<Writer> = None;
    loop {
        let (bytes, generation) = {
            let Ok(mut s) = inner.shared.lock() else {
                return;
            };
            while !s.stopped && (s.socket.is_none() || !s.has_output()) {
                s.writer_idle = true;
                s = match inner.writable.wait(s) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            }
            s.writer_idle = false;
            if s.stopped {
                return;
            }
            if current.as_ref().map(|w| w.generation) != Some(s.generation) {
                current = s
                    .socket
                    .as_ref()
                    .and_then(|w| w.try_clone().ok())
                    .map(|socket| Writer {
                        generation: s.generation,
                        socket,
                        tls: s.tls.clone(),
                    });
            }
            s.tls_wants_write = false;
            (s.client.take_output(), s.generation)
        };
        if let Some(w) = current.as_mut() {
            if w.generation == generation && w.write(&bytes).is_err() {
                let _ = w.socket.shutdown(std::net::Shutdown::Both);
                current = None;
            }
        }
    }
}

/// A request inbox no one can guess: `_INBOX.` and 22 characters of `[0-9A-Za-z]` from the
/// operating system's random generator (about 131 bits, as NATS clients' own inboxes).
/// The executor's replies come on `<inbox>.<n>`.
#[must_use]
pub fn new_inbox() -> String {
    use rand_core::RngCore as _;
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut inbox = String::with_capacity(INBOX_PREFIX.len() + 22);
    inbox.push_str(INBOX_PREFIX);
    let mut bytes = [0u8; 64];
    while inbox.len() < INBOX_PREFIX.len() + 22 {
        rand_core::OsRng.fill_bytes(&mut bytes);
        // 248 = 4 * 62: bytes from 248 up would favour the first characters.
        for b in bytes.iter().filter(|&&b| b < 248) {
            if inbox.len() == INBOX_PREFIX.len() + 22 {
                break;
            }
            inbox.push(char::from(ALPHABET[usize::from(*b % 62)]));
        }
    }
    inbox
}

/// What every jetmq request inbox starts with (NATS's usual inbox prefix; the bridge never
/// carries subjects under it).
pub const INBOX_PREFIX: &str = "_INBOX.";

/// The bridge's state: subscription numbers by subject.
#[derive(Default)]
pub(crate) struct BridgeState {
    sids: HashMap<ByteString, u64>,
}

/// The bridge's hooks: messages become `Input::NatsMessage`, each (re)connection
/// `Input::NatsConnected`.
struct BridgeHooks<F> {
    deliver: F,
}

impl<F: Fn(Input) + Send + 'static> Hooks<BridgeState> for BridgeHooks<F> {
    fn events(&self, _link: &Link<BridgeState>, events: &mut Vec<Event>) {
        for event in events.drain(..) {
            match event {
                Event::Message(m) => (self.deliver)(Input::NatsMessage {
                    subject: m.subject,
                    headers: m.headers.map(|h| h.entries).unwrap_or_default(),
                    payload: m.payload,
                }),
                Event::Connected(_) => (self.deliver)(Input::NatsConnected),
                _ => {}
            }
        }
    }
}

/// The queue connection's state: subscription numbers by (subject, queue group), and the
/// queue group of each.
#[derive(Default)]
pub(crate) struct QueueState {
    sids: HashMap<(ByteString, ByteString), u64>,
    queues: HashMap<u64, ByteString>,
}

/// The queue connection's hooks: messages become `Input::NatsQueueMessage`, named after the
/// queue group of the subscription they came through.
struct QueueHooks<F> {
    deliver: F,
}

impl<F: Fn(Input) + Send + 'static> Hooks<QueueState> for QueueHooks<F> {
    fn events(&self, link: &Link<QueueState>, events: &mut Vec<Event>) {
        let messages: Vec<(ByteString, jetmq_core::nats::Message)> = link
            .with(|s| {
                events
                    .drain(..)
                    .filter_map(|event| match event {
                        Event::Message(m) => Some((s.state.queues.get(&m.sid)?.clone(), m)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (queue, m) in messages {
            (self.deliver)(Input::NatsQueueMessage {
                queue,
                subject: m.subject,
                headers: m.headers.map(|h| h.entries).unwrap_or_default(),
                payload: m.payload,
            });
        }
    }
}

/// A running NATS connection of the subject bridge, and in a fleet a second one for the
/// queue groups of shared subscriptions: NATS does not hand a connection that turned echo
/// off (as the bridge's does, against loops) the messages it published itself, not even
/// through a queue group, so a group whose members are all on this node would get nothing on
/// the bridge's connection.
#[derive(Clone)]
pub struct NatsLink {
    link: Link<BridgeState>,
    queues: Option<Link<QueueState>>,
}

impl NatsLink {
    /// Connects to `config`'s NATS server (and keeps reconnecting) on threads of its own,
    /// naming the connection `name` there; `deliver` receives the broker inputs the
    /// connection produces. With `queues`, the fleet's queue connection too (it takes
    /// [`Action::NatsQueueSubscribe`], whose messages come back as
    /// `Input::NatsQueueMessage`).
    ///
    /// # Errors
    ///
    /// A thread cannot be started.
    pub fn start(
        config: &NatsConfig,
        name: &str,
        queues: bool,
        deliver: impl Fn(Input) + Clone + Send + 'static,
    ) -> io::Result<Self> {
        let queues = if queues {
            // It publishes nothing, so it gets everything the bridge's connection publishes.
            let deliver = deliver.clone();
            Some(Link::start(
                Endpoint::new(config, &format!("{name}-share")),
                QueueState::default(),
                "jetmq-nats-share",
                QueueHooks { deliver },
            )?)
        } else {
            None
        };
        let link = Link::start(
            Endpoint::new(config, name),
            BridgeState::default(),
            "jetmq-nats",
            BridgeHooks { deliver },
        )?;
        Ok(Self { link, queues })
    }

    /// The bridge's connection for `config` (named `name` on the NATS server), if it has a
    /// NATS server. It waits (up to the API timeout) for the first connection's outcome, so
    /// that credentials the server refuses stop the server at start-up; an unreachable
    /// server does not (the connection keeps trying).
    ///
    /// # Errors
    ///
    /// A thread cannot be started; the NATS server refused the credentials, or the TLS
    /// handshake failed (the message names the settings to check).
    pub fn for_config(
        config: &crate::config::ServerConfig,
        name: &str,
        deliver: impl Fn(Input) + Clone + Send + 'static,
    ) -> io::Result<Option<Self>> {
        let Some(nats) = &config.nats else {
            return Ok(None);
        };
        let link = Self::start(nats, name, config.broker.cluster.is_fleet(), deliver)?;
        if let Settled::Refused(why) = link.link.wait_settled(nats.api_timeout) {
            link.stop();
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
        }
        Ok(Some(link))
    }

    /// Carries out a NATS action of the broker; other actions are ignored.
    pub fn execute(&self, action: &Action) {
        if let Action::NatsQueueSubscribe { .. } | Action::NatsQueueUnsubscribe { .. } = action {
            if let Some(queues) = &self.queues {
                queues.with(|s| queue_subscription(s, action));
            }
            return;
        }
        self.link.with(|s| match action {
            Action::NatsPublish { .. } => {
                let queued = publish(&mut s.client, action);
                if !queued {
                    warn!(
                        "NATS is unreachable and its buffer is full: a bridged message was dropped"
                    );
                }
            }
            Action::NatsSubscribe { subject } => {
                let sid = s.client.subscribe(subject, None);
                s.state.sids.insert(subject.clone(), sid);
            }
            Action::NatsUnsubscribe { subject } => {
                if let Some(sid) = s.state.sids.remove(subject) {
                    s.client.unsubscribe(sid);
                }
            }
            _ => {}
        });
    }

    /// Closes the connections and stops reconnecting.
    pub fn stop(&self) {
        self.link.stop();
        if let Some(queues) = &self.queues {
            queues.stop();
        }
    }
}

/// Joins or leaves a queue group on the queue connection.
fn queue_subscription(s: &mut Shared<QueueState>, action: &Action) {
    match action {
        Action::NatsQueueSubscribe { subject, queue } => {
            let key = (subject.clone(), queue.clone());
            if !s.state.sids.contains_key(&key) {
                let sid = s.client.subscribe(subject, Some(queue));
                s.state.sids.insert(key, sid);
                s.state.queues.insert(sid, queue.clone());
            }
        }
        Action::NatsQueueUnsubscribe { subject, queue } => {
            if let Some(sid) = s.state.sids.remove(&(subject.clone(), queue.clone())) {
                s.client.unsubscribe(sid);
                s.state.queues.remove(&sid);
            }
        }
        _ => {}
    }
}

/// Queues the broker's `Action::NatsPublish` on `client` (other actions are ignored); false
/// when NATS is unreachable and the client's buffer for that time is full.
pub(crate) fn publish(client: &mut NatsClient, action: &Action) -> bool {
    let Action::NatsPublish {
        subject,
        headers,
        payload,
    } = action
    else {
        return true;
    };
    let headers = (!headers.is_empty()).then(|| {
        Headers::new(
            headers
                .iter()
                .map(|h| (ByteString::from_static(h.name), h.value.clone()))
                .collect(),
        )
    });
    client
        .publish(subject, None, headers.as_ref(), payload)
        .is_ok()
}

fn run<S: Send + 'static>(
    addresses: &[String],
    tls: Option<&NatsTls>,
    link: &Link<S>,
    hooks: &dyn Hooks<S>,
) {
    let inner = &link.inner;
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0usize;
    loop {
        let address = addresses
            .get(attempt % addresses.len().max(1))
            .map_or("", String::as_str);
        attempt = attempt.wrapping_add(1);
        if inner.shared.lock().map_or(true, |s| s.stopped) {
            return;
        }
        match TcpStream::connect(address) {
            Ok(socket) => {
                let _ = socket.set_nodelay(true);
                let _ = socket.set_write_timeout(Some(WRITE_TIMEOUT));
                let Ok(writer) = socket.try_clone() else {
                    continue;
                };
                if let Ok(mut s) = inner.shared.lock() {
                    s.client.connection_started();
                    s.socket = Some(writer);
                    s.tls = None;
                    s.generation += 1;
                    s.outcome.authenticated = false;
                    s.outcome.unreachable = false;
                    hooks.connected(&mut s);
                }
                inner.writable.notify_one();
                info!(%address, "connected to NATS");
                let mut reader = Reader {
                    socket,
                    address,
                    tls: None,
                    settings: tls,
                };
                if reader.run(link, hooks) {
                    backoff = Duration::from_millis(100);
                }
                if let Ok(mut s) = inner.shared.lock() {
                    s.client.connection_lost();
                    s.socket = None;
                    s.tls = None;
                    s.outcome.authenticated = false;
                    hooks.lost(&mut s);
                    if s.stopped {
                        return;
                    }
                }
                warn!(%address, "the NATS connection dropped; reconnecting");
            }
            Err(e) => {
                warn!(%address, error = %e, "cannot reach NATS; retrying");
                if let Ok(mut s) = inner.shared.lock() {
                    link.settle(&mut s, |o| o.unreachable = true);
                }
            }
        }
        // Wait out the backoff, or less when stopped.
        if let Ok(s) = inner.shared.lock() {
            if !s.stopped {
                let _ = inner.stopping.wait_timeout(s, backoff);
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The reader thread's side of one connection.
struct Reader<'a> {
    socket: TcpStream,
    address: &'a str,
    /// The TLS session, once up.
    tls: Option<TlsSession>,
    /// The configured TLS, if any.
    settings: Option<&'a NatsTls>,
}

impl Reader<'_> {
    /// Reads until the connection ends; true if the handshake was done (a good connection).
    fn run<S: Send + 'static>(&mut self, link: &Link<S>, hooks: &dyn Hooks<S>) -> bool {
        let mut buf = BytesMut::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut events = Vec::new();
        let mut connected = false;
        if let Some(settings) = self.settings.filter(|t| t.handshake_first) {
            if !self.start_tls(link, settings, &[]) {
                return false;
            }
        }
        loop {
            let n = match self.socket.read(&mut chunk) {
                Ok(0) | Err(_) => return connected,
                Ok(n) => n,
            };
            let mut tls_wants_write = false;
            match &self.tls {
                None => buf.extend_from_slice(&chunk[..n]),
                Some(tls) => match tls.decrypt(&chunk[..n], &mut buf) {
                    Ok(d) if !d.closed => tls_wants_write = d.wants_write,
                    Ok(_) => return connected,
                    Err(e) => {
                        let authenticated = link
                            .inner
                            .shared
                            .lock()
                            .is_ok_and(|s| s.outcome.authenticated);
                        if authenticated {
                            warn!(address = %self.address, error = %e, "TLS error on the NATS connection; reconnecting");
                        } else {
                            // The server's verdict on the client certificate comes after the
                            // client's side of a TLS 1.3 handshake is done.
                            link.refuse(
                                self.address,
                                &format!(
                                    "TLS: {e}; check nats.tls_cert_file and nats.tls_key_file \
                                     (a certificate signed by a CA the server's tls ca_file \
                                     trusts) and nats.tls_ca_file"
                                ),
                                false,
                            );
                        }
                        return connected;
                    }
                },
            }
            let Ok(mut s) = link.inner.shared.lock() else {
                return connected;
            };
            s.tls_wants_write |= tls_wants_write;
            if let Err(e) = s.client.received(&mut buf, &mut events) {
                warn!(error = %e, "NATS protocol error; reconnecting");
                return connected;
            }
            // The handshake's PING is answered once the server took the credentials.
            if !s.outcome.authenticated && events.iter().any(|e| matches!(e, Event::Pong)) {
                link.settle(&mut s, |o| {
                    o.authenticated = true;
                    o.refused = None;
                });
            }
            let wake = s.writer_idle && s.has_output();
            drop(s);
            if wake {
                link.inner.writable.notify_one();
            }
            let mut upgrade = false;
            events.retain(|event| match event {
                Event::Connected(info) => {
                    connected = true;
                    info!(server = %info.server_id, version = %info.version, tls = self.tls.is_some(), "NATS handshake done");
                    // The hooks hear of it too (the bridge tells the broker).
                    true
                }
                Event::UpgradeToTls(_) => {
                    upgrade = true;
                    false
                }
                Event::ServerError(e) if is_auth_error(e) => {
                    link.refuse(self.address, e, true);
                    false
                }
                Event::ServerError(e) if e.contains("Permissions Violation") => {
                    warn!(
                        error = %e,
                        "NATS refused an operation: jetmq's NATS user lacks a permission it \
                         needs (the README's \"Securing NATS mode\" lists them)"
                    );
                    false
                }
                Event::ServerError(e) => {
                    warn!(error = %e, "NATS server error");
                    false
                }
                Event::Pong => false,
                Event::Message(_) => true,
            });
            hooks.events(link, &mut events);
            events.clear();
            if upgrade {
                if !self.upgrade(link, &mut buf) {
                    return connected;
                }
                connected = true;
            }
        }
    }

    /// The server's `INFO` asked for TLS (or jetmq did): the handshake, unless it was done
    /// first, then the protocol's `CONNECT` through it. False if the connection is unusable.
    fn upgrade<S: Send + 'static>(&mut self, link: &Link<S>, buf: &mut BytesMut) -> bool {
        if self.tls.is_none() {
            let Some(settings) = self.settings else {
                link.refuse(
                    self.address,
                    "the NATS server requires TLS: use a tls:// URL, or set nats.tls = true \
                     (with nats.tls_ca_file when its certificate is signed by a private CA)",
                    false,
                );
                return false;
            };
            let early = buf.split();
            if !self.start_tls(link, settings, &early) {
                return false;
            }
        }
        let Ok(mut s) = link.inner.shared.lock() else {
            return false;
        };
        s.tls.clone_from(&self.tls);
        // The writer takes the TLS session with a fresh clone of the socket.
        s.generation += 1;
        let mut events = Vec::new();
        s.client.tls_established(&mut events);
        drop(s);
        link.inner.writable.notify_one();
        if let Some(Event::Connected(info)) = events.first() {
            info!(server = %info.server_id, version = %info.version, "NATS handshake done (TLS)");
        }
        true
    }

    /// Runs the TLS handshake; false (with the reason logged and recorded as a refusal) if
    /// it failed.
    fn start_tls<S: Send + 'static>(
        &mut self,
        link: &Link<S>,
        settings: &NatsTls,
        early: &[u8],
    ) -> bool {
        match TlsSession::handshake(settings, self.address, &mut self.socket, early) {
            Ok(tls) => {
                self.tls = Some(tls);
                true
            }
            Err(e) => {
                link.refuse(
                    self.address,
                    &format!(
                        "the TLS handshake failed ({e}): check nats.tls_ca_file (the CA that \
                         signed the server's certificate), nats.tls_server_name, \
                         nats.tls_cert_file and nats.tls_key_file, and the server's TLS settings"
                    ),
                    false,
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inboxes_are_random_and_well_formed() {
        let a = new_inbox();
        let b = new_inbox();
        assert_ne!(a, b);
        for inbox in [&a, &b] {
            let token = inbox.strip_prefix(INBOX_PREFIX).expect("the prefix");
            assert_eq!(token.len(), 22, "{inbox}");
            assert!(token.bytes().all(|c| c.is_ascii_alphanumeric()), "{inbox}");
        }
    }

    #[test]
    fn refusals_of_credentials_are_told_apart() {
        assert!(is_auth_error("Authorization Violation"));
        assert!(is_auth_error("User Authentication Expired"));
        assert!(!is_auth_error(
            "Permissions Violation for Publish to \"$JS.API.STREAM.DELETE.x\""
        ));
    }
}
