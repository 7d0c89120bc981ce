//! What goes in and what comes out of the broker: [`Input`]s from the shell, [`Action`]s for
//! the shell to carry out, and the caller-owned [`Outbox`] that collects them.

use std::num::NonZeroU64;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::codec::{ConnectReason, DisconnectReason, ProtocolVersion};
use crate::js::{RequestId, StoreError, StoreReply, StoreRequest, StoredMessage};

/// What identifies a session: the account (tenant) and the client identifier.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SessionKey {
    /// The account; the default account is `$G`, as on the NATS server.
    pub account: ByteString,
    /// The client identifier.
    pub client_id: ByteString,
}

/// The name of the default account.
pub const DEFAULT_ACCOUNT: &str = "$G";

/// A connection, numbered by the shell. Numbers are never reused within a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnId(NonZeroU64);

impl ConnId {
    /// The connection numbered `n`, or `None` for 0.
    #[must_use]
    pub const fn new(n: u64) -> Option<Self> {
        match NonZeroU64::new(n) {
            Some(n) => Some(Self(n)),
            None => None,
        }
    }

    /// The number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

/// The kind of listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ListenerKind {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// MQTT over WebSocket.
    WebSocket,
    /// MQTT over secure WebSocket.
    SecureWebSocket,
    /// A test or simulation harness.
    Test,
}

/// Facts about a new connection that authentication and logs may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnInfo {
    /// The peer's address as text (for logs and auth decisions).
    pub peer: ByteString,
    /// The listener it arrived on.
    pub listener: ListenerKind,
    /// The subject of the client certificate, when TLS verified one.
    pub tls_identity: Option<ByteString>,
}

/// The credentials and facts of a CONNECT, for the shell to decide on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthRequest {
    /// The connection asking.
    pub conn: ConnId,
    /// Facts about the connection.
    pub info: ConnInfo,
    /// The protocol version of the CONNECT.
    pub protocol: ProtocolVersion,
    /// The client identifier (possibly assigned by the broker).
    pub client_id: ByteString,
    /// The user name, if any.
    pub username: Option<ByteString>,
    /// The password, if any.
    pub password: Option<Bytes>,
    /// MQTT 5.0 enhanced authentication: the method the client named in CONNECT, if any.
    pub method: Option<ByteString>,
    /// Enhanced authentication: the data of the CONNECT or of the client's latest AUTH.
    pub data: Option<Bytes>,
    /// Where in an enhanced authentication exchange this request is.
    pub stage: AuthStage,
    /// Enhanced authentication: what the shell asked to get back with the next step
    /// ([`AuthDecision::Continue`]), so the shell keeps no state of its own between steps.
    pub state: Option<Bytes>,
}

/// Where an [`AuthRequest`] stands in an authentication exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthStage {
    /// The CONNECT (with its Authentication Data, for enhanced authentication).
    Connect,
    /// The client answered an AUTH the broker sent (reason 0x18, Continue authentication).
    Continue,
    /// A connected client started re-authentication (AUTH reason 0x19).
    Reauthenticate,
}

/// The shell's answer to an [`AuthRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthDecision {
    /// Accept the client, in the given account (`None`: the default account).
    Allow {
        /// The tenant the client belongs to.
        account: Option<ByteString>,
        /// What it may publish and subscribe to; `None`: everything.
        #[serde(default)]
        permissions: Option<Box<super::Permissions>>,
    },
    /// Accept an enhanced authentication, sending the method's final data in the CONNACK
    /// (or in the AUTH that ends a re-authentication). The account is kept on
    /// re-authentication.
    AllowWith {
        /// The tenant the client belongs to.
        account: Option<ByteString>,
        /// The method's final data for the client, if any.
        data: Option<Bytes>,
        /// What it may publish and subscribe to; `None`: everything.
        #[serde(default)]
        permissions: Option<Box<super::Permissions>>,
    },
    /// Enhanced authentication goes on: send the client an AUTH (0x18) with `data`, and hand
    /// `state` back with its answer.
    Continue {
        /// The method's data for the client.
        data: Bytes,
        /// What the shell needs to check the next step.
        state: Bytes,
    },
    /// Refuse the client with this CONNACK reason (3.1.1 gets the nearest return code); on
    /// re-authentication the client is disconnected with the matching reason.
    Deny(ConnectReason),
}

/// One input to [`Broker::handle`](super::Broker::handle).
#[derive(Debug, Serialize, Deserialize)]
pub enum Input {
    /// The shell accepted a connection.
    Accepted {
        /// Its number.
        conn: ConnId,
        /// Facts about it.
        info: ConnInfo,
    },
    /// Bytes arrived on a connection. The core takes the buffer over when it has nothing
    /// pending for that connection, so a read costs no copy.
    Received {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: BytesMut,
    },
    /// The shell wrote `bytes` more bytes of what the core sent to the socket.
    Flushed {
        /// The connection.
        conn: ConnId,
        /// How many bytes left the process.
        bytes: usize,
    },
    /// The connection closed: the peer hung up or the socket failed.
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// The shell's authentication decision.
    Authenticated {
        /// The connection it is for.
        conn: ConnId,
        /// The decision.
        decision: AuthDecision,
    },
    /// A store request completed.
    Stored {
        /// The request it answers.
        id: RequestId,
        /// Its outcome.
        reply: Result<StoreReply, StoreError>,
    },
    /// A record found at start-up, before any connection is accepted.
    Restored(StoredMessage),
    /// Every record has been restored.
    RestoreComplete,
    /// The deadline from [`Broker::next_deadline`](super::Broker::next_deadline) passed.
    Tick,
    /// Resume work the core split across calls (large fan-outs).
    Continue,
    /// Stop: disconnect every client (v5 clients get DISCONNECT 0x8B).
    Shutdown,
    /// NATS bridge: a message arrived on a subject the broker subscribed to; it goes to the
    /// matching MQTT subscribers (it is not published to NATS again): at QoS 0, or, from
    /// another jetmq node, with its QoS, stream sequence and RETAIN flag (headers
    /// `Nmqtt-Pub`, `Jetmq-Seq`, `Jetmq-Retain`). A connect notice of another node
    /// (`$JETMQ.conn.`) closes the client's connection here.
    NatsMessage {
        /// Its NATS subject.
        subject: ByteString,
        /// Its headers, in order.
        headers: Vec<(ByteString, ByteString)>,
        /// Its payload.
        payload: Bytes,
    },
    /// Fleet: a message NATS handed to this node as the member of queue group `queue` (a
    /// shared subscription's, see [`Action::NatsQueueSubscribe`]): it goes to one member of
    /// that shared subscription here, and the other nodes hear that this node took it.
    NatsQueueMessage {
        /// The queue group it came through.
        queue: ByteString,
        /// Its NATS subject.
        subject: ByteString,
        /// Its headers, in order.
        headers: Vec<(ByteString, ByteString)>,
        /// Its payload.
        payload: Bytes,
    },
    /// NATS bridge: the connection to NATS is up (again; its subscriptions were renewed). A
    /// fleet node announces each client connected here once more, with its connect's stamp,
    /// since other nodes may have missed the notices while it was away: a node holding an
    /// older connection of the client closes it, one holding a newer connection answers with
    /// its own notice, which closes the one here.
    NatsConnected,
    /// An administrator ends a session: its client, if connected, is disconnected (v5:
    /// DISCONNECT 0x98, Administrative action; its will is published) and the session and
    /// its stored state are removed.
    DiscardSession(SessionKey),
}

/// Why the core closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CloseReason {
    /// The client sent DISCONNECT.
    ClientDisconnect,
    /// The peer closed the socket.
    PeerClosed,
    /// A protocol violation; the v5 reason code that was sent or would have been.
    ProtocolViolation(DisconnectReason),
    /// The CONNECT was refused.
    ConnectRefused(ConnectReason),
    /// No CONNECT arrived within the connect timeout.
    ConnectTimeout,
    /// No packet arrived within 1.5 times the keep-alive.
    KeepAliveTimeout,
    /// Another connection took over the session.
    SessionTakenOver,
    /// The connection could not keep up with what was sent to it.
    SlowConsumer,
    /// A store write it depended on failed.
    StoreFailure,
    /// The broker is shutting down.
    Shutdown,
    /// An administrator ended the session.
    AdministrativeAction,
}

/// Events for logs and metrics; they change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Notice {
    /// An input named a connection the core does not know (already closed, or never accepted).
    UnknownConnection(ConnId),
    /// A store reply named a request the core is not waiting for.
    UnknownRequest(RequestId),
    /// In NATS mode, a client's PUBLISH or subscription was refused because its subject
    /// belongs to NATS or jetmq, or lies outside the bridge's rules (see `bridge_policy`).
    BridgeRefused {
        /// The connection.
        conn: ConnId,
        /// The topic or filter (personal data: logs redact it by default).
        topic: ByteString,
    },
    /// A message for a session was dropped because its queue was full.
    QueueOverflow {
        /// The session's client identifier.
        client_id: ByteString,
    },
    /// A QoS 0 message was not sent to a connection over its unsent-bytes limit.
    SlowConsumerDrop(ConnId),
    /// A packet from a client was malformed or broke a rule.
    ProtocolError {
        /// The connection.
        conn: ConnId,
        /// The reason code.
        reason: DisconnectReason,
    },
    /// A store request failed.
    StoreFailed(StoreError),
    /// A restored record could not be read.
    BadRecord {
        /// Its subject.
        subject: ByteString,
    },
    /// A persistent session's expiry interval ran out (while it was offline, or while the
    /// broker was down); it was discarded.
    SessionExpired {
        /// The session's client identifier.
        client_id: ByteString,
    },
    /// A client identifier reached the takeover limit (most likely two clients share it): its
    /// CONNECTs are refused until the window ends.
    TakeoverLimit {
        /// The client identifier.
        client_id: ByteString,
    },
}

/// One thing for the shell to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    /// Write bytes to a connection, after everything sent to it before.
    Send {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Bytes,
    },
    /// Close a connection once the bytes sent before are written. No more input is expected
    /// for it but `Closed`, which may come or not.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Stop reading from a connection until [`Action::ResumeRead`].
    PauseRead {
        /// The connection.
        conn: ConnId,
    },
    /// Read from a connection again.
    ResumeRead {
        /// The connection.
        conn: ConnId,
    },
    /// Decide whether a client may connect; answer with [`Input::Authenticated`].
    Authenticate(Box<AuthRequest>),
    /// Run a store request; answer with [`Input::Stored`] carrying the same id.
    Store {
        /// The id the reply must carry.
        id: RequestId,
        /// The request.
        request: StoreRequest,
    },
    /// Something worth logging or counting.
    Notice(Notice),
    /// NATS bridge: publish a message from an MQTT client on its NATS subject, with the header
    /// `Nmqtt-Pub:<qos>` (the NATS server's Appendix B) and what other jetmq nodes need
    /// (stream sequence, RETAIN, MQTT 5.0 properties), for plain NATS subscribers and other
    /// jetmq nodes; or a connect notice to the other nodes.
    NatsPublish {
        /// The NATS subject.
        subject: ByteString,
        /// Its headers, in order.
        headers: Vec<crate::js::Header>,
        /// The payload.
        payload: Bytes,
    },
    /// NATS bridge: subscribe to a NATS subject (an MQTT subscription appeared whose filter
    /// maps to it); its messages come back as [`Input::NatsMessage`].
    NatsSubscribe {
        /// The NATS subject, wildcards allowed.
        subject: ByteString,
    },
    /// NATS bridge: the last MQTT subscription for this subject is gone.
    NatsUnsubscribe {
        /// The NATS subject given to [`Action::NatsSubscribe`].
        subject: ByteString,
    },
    /// Fleet: join queue group `queue` on a NATS subject (a shared subscription got its first
    /// member on this node), so that NATS hands each message on it to one node of the fleet;
    /// they come back as [`Input::NatsQueueMessage`]. Made on a NATS connection of its own
    /// that receives what the bridge's connection publishes (which does not echo it back).
    NatsQueueSubscribe {
        /// The NATS subject, wildcards allowed.
        subject: ByteString,
        /// The queue group: one per shared subscription, the same name on every node.
        queue: ByteString,
    },
    /// Fleet: leave queue group `queue` on the subject (the shared subscription's last member
    /// here is gone).
    NatsQueueUnsubscribe {
        /// The NATS subject given to [`Action::NatsQueueSubscribe`].
        subject: ByteString,
        /// Its queue group.
        queue: ByteString,
    },
}

/// The caller-owned list of actions a call to `handle` produced. Clear it and reuse it, so the
/// steady state does not allocate.
#[derive(Debug, Default)]
pub struct Outbox {
    actions: Vec<Action>,
    /// Whether the core wants an [`Input::Continue`] because it stopped on its work budget.
    pub wants_continue: bool,
}

impl Outbox {
    /// An empty outbox.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an action.
    pub fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    /// The actions so far, in order.
    #[must_use]
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// Takes the actions out, in order, leaving the outbox empty with its capacity.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Action> {
        self.wants_continue = false;
        self.actions.drain(..)
    }

    /// Forgets every action, keeping the capacity.
    pub fn clear(&mut self) {
        self.actions.clear();
        self.wants_continue = false;
    }

    /// Number of actions.
    #[must_use]
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether there is no action.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}
