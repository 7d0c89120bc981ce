//! The shells' NATS connection for the subject bridge: the core's [`NatsClient`] over a TCP
//! socket on threads of its own (so both shells use it, with or without tokio), reconnecting
//! with backoff when the connection drops. Messages of the broker's subscriptions come back
//! as `Input::NatsMessage` through the callback the shell gives.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use jetmq_core::broker::{Action, Input};
use jetmq_core::nats::{ConnectOptions, Event, Headers, NatsClient};
use tracing::{info, warn};

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A write to NATS that takes longer drops the connection (and reconnects), so a stalled NATS
/// server cannot hold the broker, which writes under the connection's lock.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A `nats://host:port` URL's address.
///
/// # Errors
///
/// The URL is not `nats://host:port` (or `host:port`).
pub fn parse_url(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("nats://").unwrap_or(url);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hostport)| hostport);
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(rest.to_string())
        }
        _ => Err(format!(
            "{url} is not a NATS URL: expected nats://host:port, for example nats://127.0.0.1:4222"
        )),
    }
}

struct Shared {
    client: NatsClient,
    /// The socket's write half while connected.
    writer: Option<TcpStream>,
    /// Subscription numbers by subject.
    sids: HashMap<ByteString, u64>,
    stopped: bool,
}

impl Shared {
    /// Writes what the client wants sent; a failed write drops the socket (the reader
    /// notices and reconnects).
    fn flush(&mut self) {
        if !self.client.has_output() {
            return;
        }
        let out = self.client.take_output();
        if let Some(w) = self.writer.as_mut() {
            if w.write_all(&out).is_err() {
                let _ = w.shutdown(std::net::Shutdown::Both);
                self.writer = None;
            }
        }
    }
}

/// A running NATS connection.
#[derive(Clone)]
pub struct NatsLink {
    shared: Arc<(Mutex<Shared>, Condvar)>,
}

impl NatsLink {
    /// Connects to `address` (and keeps reconnecting) on a thread of its own; `deliver`
    /// receives the broker inputs the connection produces.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn start(
        address: String,
        options: ConnectOptions,
        deliver: impl Fn(Input) + Send + 'static,
    ) -> io::Result<Self> {
        let link = Self {
            shared: Arc::new((
                Mutex::new(Shared {
                    client: NatsClient::new(options, 64 * 1024 * 1024),
                    writer: None,
                    sids: HashMap::new(),
                    stopped: false,
                }),
                Condvar::new(),
            )),
        };
        let shared = Arc::clone(&link.shared);
        std::thread::Builder::new()
            .name("jetmq-nats".into())
            .spawn(move || run(&address, &shared, &deliver))?;
        Ok(link)
    }

    /// The bridge's connection for `config` (named `name` on the NATS server), if it has a
    /// NATS server.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn for_config(
        config: &crate::config::ServerConfig,
        name: &str,
        deliver: impl Fn(Input) + Send + 'static,
    ) -> io::Result<Option<Self>> {
        let Some(address) = &config.nats else {
            return Ok(None);
        };
        let options = ConnectOptions {
            name: Some(name.to_string()),
            ..ConnectOptions::default()
        };
        Self::start(address.clone(), options, deliver).map(Some)
    }

    /// Carries out a NATS action of the broker; other actions are ignored.
    pub fn execute(&self, action: &Action) {
        let Ok(mut s) = self.shared.0.lock() else {
            return;
        };
        match action {
            Action::NatsPublish {
                subject,
                qos,
                payload,
            } => {
                // Appendix B of the NATS server's MQTT support: `Nmqtt-Pub:<qos>`.
                let headers = Headers::new(vec![("Nmqtt-Pub".into(), qos.to_string().into())]);
                if s.client
                    .publish(subject, None, Some(&headers), payload)
                    .is_err()
                {
                    warn!(
                        "NATS is unreachable and its buffer is full: a bridged message was dropped"
                    );
                }
            }
            Action::NatsSubscribe { subject } => {
                let sid = s.client.subscribe(subject, None);
                s.sids.insert(subject.clone(), sid);
            }
            Action::NatsUnsubscribe { subject } => {
                if let Some(sid) = s.sids.remove(subject) {
                    s.client.unsubscribe(sid);
                }
            }
            _ => return,
        }
        s.flush();
    }

    /// Closes the connection and stops reconnecting.
    pub fn stop(&self) {
        if let Ok(mut s) = self.shared.0.lock() {
            s.stopped = true;
            if let Some(w) = s.writer.take() {
                let _ = w.shutdown(std::net::Shutdown::Both);
            }
        }
        self.shared.1.notify_all();
    }
}

fn run(address: &str, shared: &Arc<(Mutex<Shared>, Condvar)>, deliver: &dyn Fn(Input)) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if shared.0.lock().map_or(true, |s| s.stopped) {
            return;
        }
        match TcpStream::connect(address) {
            Ok(socket) => {
                let _ = socket.set_nodelay(true);
                let _ = socket.set_write_timeout(Some(WRITE_TIMEOUT));
                let Ok(writer) = socket.try_clone() else {
                    continue;
                };
                if let Ok(mut s) = shared.0.lock() {
                    s.client.connection_started();
                    s.writer = Some(writer);
                }
                info!(%address, "connected to NATS");
                if read_loop(socket, shared, deliver) {
                    backoff = Duration::from_millis(100);
                }
                if let Ok(mut s) = shared.0.lock() {
                    s.client.connection_lost();
                    s.writer = None;
                    if s.stopped {
                        return;
                    }
                }
                warn!(%address, "the NATS connection dropped; reconnecting");
            }
            Err(e) => warn!(%address, error = %e, "cannot reach NATS; retrying"),
        }
        // Wait out the backoff, or less when stopped.
        if let Ok(s) = shared.0.lock() {
            let _ = shared.1.wait_timeout(s, backoff);
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Reads until the connection ends; true if the handshake was done (a good connection).
fn read_loop(
    mut socket: TcpStream,
    shared: &Arc<(Mutex<Shared>, Condvar)>,
    deliver: &dyn Fn(Input),
) -> bool {
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut events = Vec::new();
    let mut connected = false;
    loop {
        let n = match socket.read(&mut chunk) {
            Ok(0) | Err(_) => return connected,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let Ok(mut s) = shared.0.lock() else {
            return connected;
        };
        if let Err(e) = s.client.received(&mut buf, &mut events) {
            warn!(error = %e, "NATS protocol error; reconnecting");
            return connected;
        }
        s.flush();
        drop(s);
        for event in events.drain(..) {
            match event {
                Event::Connected(info) => {
                    connected = true;
                    info!(server = %info.server_id, version = %info.version, "NATS handshake done");
                }
                Event::Message(m) => deliver(Input::NatsMessage {
                    subject: m.subject,
                    payload: m.payload,
                }),
                Event::ServerError(e) => warn!(error = %e, "NATS server error"),
                Event::Pong => {}
            }
        }
    }
}
