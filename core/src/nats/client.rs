//! The NATS client as a sans-IO state machine: the shell hands it the bytes of the socket and
//! sends what it asks to send; it does the handshake (`INFO` → `CONNECT`), answers `PING`,
//! numbers subscriptions and restores them on every new connection, and turns `MSG`/`HMSG`
//! into events.
//!
//! TLS follows the NATS protocol: the server's `INFO` comes in plain text, then (when the
//! client's options or the server ask for TLS) the client stops with [`Event::UpgradeToTls`],
//! the shell runs the TLS handshake on the socket and calls
//! [`tls_established`](NatsClient::tls_established), and `CONNECT` goes through TLS.
//!
//! nkey and JWT authentication sign the nonce of the server's `INFO`: the shell gives the
//! client a [`NonceSigner`] (the core does no cryptography of its own), and each `CONNECT`
//! carries the signature of that connection's nonce.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::headers::Headers;
use super::info::{ConnectOptions, ServerInfo};
use super::proto::{ClientOp, Decoder, Message, ProtocolError, ServerOp};

/// Bytes kept for publishes made while no connection is up; more is refused.
pub const MAX_PENDING: usize = 8 * 1024 * 1024;

/// What happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake is done: the server's description. Subscriptions were sent again.
    Connected(Box<ServerInfo>),
    /// A message on one of our subscriptions.
    Message(Message),
    /// The answer to a `PING` we sent.
    Pong,
    /// The server reported an error (it usually closes the connection after).
    ServerError(String),
    /// The server's `INFO` arrived and TLS is required (by the client's options or by the
    /// server): the shell runs the TLS handshake, then calls
    /// [`NatsClient::tls_established`]. Nothing is sent until then, and the bytes after
    /// `INFO` are the server's TLS records, not protocol. A shell without TLS drops the socket.
    UpgradeToTls(Box<ServerInfo>),
}

/// Signs the nonce of the server's `INFO` with the user's nkey, for the `sig` of `CONNECT`
/// (nkey and JWT authentication). The shell implements it with its cryptography.
pub trait NonceSigner: Send + Sync {
    /// The signature of `nonce`, base64url-encoded without padding.
    fn sign(&self, nonce: &[u8]) -> String;
}

/// The client's signer, shown by `Debug` without its insides.
#[derive(Clone)]
struct Signer(Arc<dyn NonceSigner>);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceSigner")
    }
}

/// A publish made while no connection was up, or before the handshake was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[derive(Debug, Clone)]
struct Subscription {
    subject: ByteString,
    queue: Option<ByteString>,
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket.
    Disconnected,
    /// A socket; the server's `INFO` is awaited.
    AwaitingInfo,
    /// `INFO` came; the shell is running the TLS handshake.
    AwaitingTls,
    /// `CONNECT` sent: operations flow.
    Connected,
}

/// One logical NATS connection, across reconnects.
#[derive(Debug)]
pub struct NatsClient {
    options: ConnectOptions,
    signer: Option<Signer>,
    decoder: Decoder,
    state: State,
    info: Option<ServerInfo>,
    subs: BTreeMap<u64, Subscription>,
    next_sid: u64,
    /// Bytes for the socket.
    out: BytesMut,
    /// Publishes waiting for the handshake.
    pending: BytesMut,
}

impl NatsClient {
    /// A client that will connect with `options`, accepting messages up to `max_payload`.
    #[must_use]
    pub fn new(options: ConnectOptions, max_payload: usize) -> Self {
        Self {
            options,
            signer: None,
            decoder: Decoder::new(max_payload),
            state: State::Disconnected,
            info: None,
            subs: BTreeMap::new(),
            next_sid: 1,
            out: BytesMut::new(),
            pending: BytesMut::new(),
        }
    }

    /// The client signs the server's nonce with `signer` in every `CONNECT` (nkey and JWT
    /// authentication; the options carry the `nkey` or the `jwt`).
    #[must_use]
    pub fn with_signer(mut self, signer: Arc<dyn NonceSigner>) -> Self {
        self.signer = Some(Signer(signer));
        self
    }

    /// A new socket is up (the first, or one after a reconnect): the handshake starts again.
    pub fn connection_started(&mut self) {
        self.state = State::AwaitingInfo;
        self.decoder = Decoder::new(self.decoder_limit());
        self.out.clear();
    }

    /// The socket is gone; publishes from now on wait for the next one.
    pub fn connection_lost(&mut self) {
        self.state = State::Disconnected;
        self.out.clear();
    }

    fn decoder_limit(&self) -> usize {
        self.info
            .as_ref()
            .map_or(64 * 1024 * 1024, |i| i.max_payload.max(1) + 64 * 1024)
    }

    /// Whether the handshake is done.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// The last `INFO` of the server.
    #[must_use]
    pub fn server_info(&self) -> Option<&ServerInfo> {
        self.info.as_ref()
    }

    /// Handles the bytes received (consumed from `buf`), adding what happened to `events`.
    ///
    /// # Errors
    ///
    /// The server broke the protocol; drop the socket and reconnect.
    pub fn received(
        &mut self,
        buf: &mut BytesMut,
        events: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        while let Some(op) = self.decoder.decode(buf)? {
            match op {
                ServerOp::Info(info) => {
                    let first = self.state == State::AwaitingInfo;
                    self.info = Some((*info).clone());
                    if first && (self.options.tls_required || info.tls_required) {
                        self.state = State::AwaitingTls;
                        events.push(Event::UpgradeToTls(info));
                        // What follows on the socket is TLS.
                        return Ok(());
                    }
                    if first {
                        self.handshake();
                        events.push(Event::Connected(info));
                    }
                }
                ServerOp::Ping => ClientOp::Pong.encode(&mut self.out),
                ServerOp::Pong => events.push(Event::Pong),
                ServerOp::Ok => {}
                ServerOp::Err(e) => events.push(Event::ServerError(e)),
                ServerOp::Msg(m) => {
                    if self.subs.contains_key(&m.sid) {
                        events.push(Event::Message(m));
                    }
                }
            }
        }
        Ok(())
    }

    /// The shell finished the TLS handshake that [`Event::UpgradeToTls`] asked for: the
    /// protocol handshake goes on (through TLS) and [`Event::Connected`] is pushed to
    /// `events`. Ignored unless that handshake was awaited.
    pub fn tls_established(&mut self, events: &mut Vec<Event>) {
        if self.state != State::AwaitingTls {
            return;
        }
        self.handshake();
        if let Some(info) = &self.info {
            events.push(Event::Connected(Box::new(info.clone())));
        }
    }

    /// `CONNECT`, every subscription, a `PING` (its `PONG` confirms the server took them),
    /// then the publishes that waited.
    fn handshake(&mut self) {
        let nonce = self.info.as_ref().and_then(|i| i.nonce.as_deref());
        let json = match (&self.signer, nonce) {
            (Some(Signer(signer)), Some(nonce)) => {
                let signed = ConnectOptions {
                    sig: Some(signer.sign(nonce.as_bytes())),
                    ..self.options.clone()
                };
                serde_json::to_string(&signed)
            }
            _ => serde_json::to_string(&self.options),
        }
        .unwrap_or_default();
        ClientOp::Connect(&json).encode(&mut self.out);
        for (sid, s) in &self.subs {
            ClientOp::Sub {
                subject: &s.subject,
                queue: s.queue.as_deref(),
                sid: *sid,
            }
            .encode(&mut self.out);
        }
        ClientOp::Ping.encode(&mut self.out);
        self.out.extend_from_slice(&self.pending.split());
        self.state = State::Connected;
    }

    /// Subscribes to `subject` (in `queue`, if given); the subscription lives across
    /// reconnects until [`unsubscribe`](Self::unsubscribe). Returns its number.
    pub fn subscribe(&mut self, subject: &str, queue: Option<&str>) -> u64 {
        let sid = self.next_sid;
        self.next_sid += 1;
        self.subs.insert(
            sid,
            Subscription {
                subject: subject.into(),
                queue: queue.map(Into::into),
            },
        );
        if self.is_connected() {
            ClientOp::Sub {
                subject,
                queue,
                sid,
            }
            .encode(&mut self.out);
        }
        sid
    }

    /// Ends subscription `sid`.
    pub fn unsubscribe(&mut self, sid: u64) {
        if self.subs.remove(&sid).is_some() && self.is_connected() {
            ClientOp::Unsub { sid, max: None }.encode(&mut self.out);
        }
    }

    /// Publishes a message; while no connection is up it waits (up to [`MAX_PENDING`] bytes).
    ///
    /// # Errors
    ///
    /// [`Full`] when the waiting publishes would pass [`MAX_PENDING`].
    pub fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: Option<&Headers>,
        payload: &[u8],
    ) -> Result<(), Full> {
        let op = ClientOp::Pub {
            subject,
            reply,
            headers,
            payload,
        };
        if self.is_connected() {
            op.encode(&mut self.out);
            return Ok(());
        }
        if self.pending.len() + payload.len() > MAX_PENDING {
            return Err(Full);
        }
        op.encode(&mut self.pending);
        Ok(())
    }

    /// Sends a `PING` (the shell's keep-alive; a `Pong` event answers it).
    pub fn ping(&mut self) {
        if self.is_connected() {
            ClientOp::Ping.encode(&mut self.out);
        }
    }

    /// The bytes to write to the socket, taken.
    pub fn take_output(&mut self) -> Bytes {
        self.out.split().freeze()
    }

    /// Whether bytes wait to be written.
    #[must_use]
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signs by reversing the nonce, so the test can tell what was signed.
    struct Reverse;

    impl NonceSigner for Reverse {
        fn sign(&self, nonce: &[u8]) -> String {
            nonce.iter().rev().map(|&b| char::from(b)).collect()
        }
    }

    fn connect_json(info: &str, signer: bool) -> serde_json::Value {
        let options = ConnectOptions {
            nkey: Some("UPUBLIC".into()),
            ..ConnectOptions::default()
        };
        let mut client = NatsClient::new(options, 1 << 20);
        if signer {
            client = client.with_signer(Arc::new(Reverse));
        }
        client.connection_started();
        let mut buf = BytesMut::from(format!("INFO {info}\r\n").as_bytes());
        let mut events = Vec::new();
        client.received(&mut buf, &mut events).expect("valid INFO");
        assert!(matches!(events.as_slice(), [Event::Connected(_)]));
        let out = client.take_output();
        let line = std::str::from_utf8(&out)
            .ok()
            .and_then(|s| s.strip_prefix("CONNECT "))
            .and_then(|s| s.split("\r\n").next())
            .expect("CONNECT first");
        serde_json::from_str(line).expect("CONNECT JSON")
    }

    #[test]
    fn the_nonce_is_signed_when_the_server_sends_one() {
        let json = connect_json(r#"{"server_id":"s","nonce":"abc"}"#, true);
        assert_eq!(json["sig"], "cba");
        assert_eq!(json["nkey"], "UPUBLIC");
        // No nonce (a server without nkey authentication): nothing to sign.
        let json = connect_json(r#"{"server_id":"s"}"#, true);
        assert!(json.get("sig").is_none());
        // No signer: no signature.
        let json = connect_json(r#"{"server_id":"s","nonce":"abc"}"#, false);
        assert!(json.get("sig").is_none());
    }
}
