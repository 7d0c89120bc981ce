//! One client connection: its decoder and buffers, where it is in its lifecycle, its
//! keep-alive, and the pipeline that releases acknowledgements in arrival order.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::io::ConnInfo;
use super::io::SessionKey;
use super::message::{Message, Will};
use super::sessions::SessionId;
use super::topic_alias::{InboundAliases, OutboundAliases};
use crate::codec::{
    Connect, ConnectReason, Decoder, Direction, Packet, PacketId, ProtocolVersion, QoS,
};
use crate::js::{StoreRequest, StoredMessage};
use crate::time::Timestamp;
use crate::topic::TopicFilter;

/// Where a connection is in its lifecycle.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Accepted; the first packet must be CONNECT before `deadline`.
    AwaitingConnect { deadline: Timestamp },
    /// CONNECT received; waiting for the shell's authentication decision until the connect
    /// deadline.
    Authenticating(Box<Authentication>),
    /// Enhanced authentication (MQTT 5.0): an AUTH (0x18) went to the client; waiting for
    /// its answer until the connect deadline.
    AuthExchange(Box<Authentication>),
    /// Accepted; in a fleet, the persistent session is being read from the store (its
    /// record and its consumer's messages) before the CONNACK, until the connect deadline.
    Loading(Box<Loading>),
    /// A CONNECT of a client identifier taken over too often lately: held until `deadline`,
    /// then refused with 0x9F Connection rate exceeded (see `takeovers`).
    Held { deadline: Timestamp },
    /// CONNACK sent; bound to a session.
    Connected { session: SessionId },
    /// Close requested; further input is ignored.
    Closing,
}

impl Phase {
    /// For a CONNECT waiting on the shell (authentication), the store (loading), the client
    /// (an enhanced-authentication exchange) or flapping protection (held): when the wait
    /// ends, and the CONNACK refusal then.
    pub(crate) fn connect_wait(&self) -> Option<(Timestamp, ConnectReason)> {
        match self {
            Self::Authenticating(a) => Some((a.deadline, ConnectReason::ServerUnavailable)),
            Self::Loading(l) => Some((l.deadline, ConnectReason::ServerUnavailable)),
            Self::AuthExchange(a) => Some((a.deadline, ConnectReason::NotAuthorized)),
            Self::Held { deadline } => Some((*deadline, ConnectReason::ConnectionRateExceeded)),
            Self::AwaitingConnect { .. } | Self::Connected { .. } | Self::Closing => None,
        }
    }
}

/// A CONNECT being authenticated ([`Phase::Authenticating`], [`Phase::AuthExchange`]); boxed,
/// so the phase of every other connection stays small.
#[derive(Debug)]
pub(crate) struct Authentication {
    pub(crate) deadline: Timestamp,
    pub(crate) connect: Box<Connect>,
    pub(crate) client_id: ByteString,
    pub(crate) assigned: bool,
    /// In an exchange: what the shell asked to get back with the next step.
    pub(crate) state: Bytes,
}

/// A session being read from the store for a CONNECT ([`Phase::Loading`]).
#[derive(Debug)]
pub(crate) struct Loading {
    pub(crate) deadline: Timestamp,
    pub(crate) connect: Box<Connect>,
    pub(crate) key: SessionKey,
    pub(crate) assigned: bool,
    /// The connect's stamp ([`Broker::connect_stamp`](super::Broker::connect_stamp)).
    pub(crate) stamp: u64,
    /// Store replies still to come.
    pub(crate) waiting: u8,
    /// The session record, when the session was not in memory.
    pub(crate) record: Option<StoredMessage>,
    /// What the session's consumer handed out.
    pub(crate) pending: Vec<StoredMessage>,
    /// A read failed: the CONNECT is refused (server unavailable).
    pub(crate) failed: bool,
}

/// The acknowledgement a pipeline entry sends when it completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    None,
    PubAck(PacketId),
    PubRec(PacketId),
    PubComp(PacketId),
    /// PUBCOMP 0x92 for a PUBREL of an unknown identifier (MQTT 5.0).
    PubCompNotFound(PacketId),
    /// A refused QoS 1 (PUBACK) or QoS 2 (PUBREC) publish, with the reason (MQTT 5.0).
    Refused {
        pid: PacketId,
        qos2: bool,
        reason: crate::codec::PubAckReason,
    },
}

/// What a pipeline entry does when every store write it waits for has succeeded.
#[derive(Debug)]
pub(crate) enum Work {
    /// Route a published message (if `route`), then send `reply`.
    Publish {
        msg: Message,
        route: bool,
        reply: Reply,
    },
    /// Send a finished SUBACK or UNSUBACK, then the retained messages for new subscriptions.
    SubscriptionAck {
        packet: Packet,
        retained: Vec<(TopicFilter, QoS, Option<std::num::NonZeroU32>)>,
    },
    /// Send a reply only (PUBCOMP once the QoS 2 record is gone).
    Reply(Reply),
}

/// One inbound packet waiting for its store writes, in arrival order.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Number that store replies use to find it.
    pub(crate) token: u64,
    /// Store writes not yet answered.
    pub(crate) waiting: u32,
    /// Whether a write it waited for failed.
    pub(crate) failed: bool,
    /// The stream sequence a stored message got.
    pub(crate) seq: Option<u64>,
    /// Whether a write storing its message was issued.
    pub(crate) storing: bool,
    /// A write issued only once the first ones succeeded (the QoS 2 record goes after the
    /// message, so a crash between them can cause a duplicate but never a loss).
    pub(crate) then: Option<StoreRequest>,
    pub(crate) work: Work,
}

/// Inbound packets waiting for store writes; they complete strictly in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    pub(crate) entries: VecDeque<Pending>,
    next_token: u64,
}

impl Pipeline {
    /// Appends work waiting for `waiting` writes and returns its token.
    pub(crate) fn push(&mut self, work: Work, waiting: u32) -> u64 {
        self.next_token += 1;
        if self.entries.capacity() == 0 {
            // One entry at a time is the common case: no room for four from the start.
            self.entries.reserve_exact(1);
        }
        self.entries.push_back(Pending {
            token: self.next_token,
            waiting,
            failed: false,
            seq: None,
            storing: false,
            then: None,
            work,
        });
        self.next_token
    }

    /// The entry with `token`, if it is still waiting.
    pub(crate) fn get_mut(&mut self, token: u64) -> Option<&mut Pending> {
        // Tokens increase along the queue, so a binary search finds it.
        let i = self
            .entries
            .binary_search_by_key(&token, |p| p.token)
            .ok()?;
        self.entries.get_mut(i)
    }

    /// Gives back the room kept for entries when there are none (housekeeping of an idle
    /// connection; a busy one keeps it, so its steady state does not allocate).
    pub(crate) fn release_room(&mut self) {
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
    }

    /// Takes the first entry if nothing it waits for is outstanding.
    pub(crate) fn pop_ready(&mut self) -> Option<Pending> {
        if self.entries.front().is_some_and(|p| p.waiting == 0) {
            self.entries.pop_front()
        } else {
            None
        }
    }
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) info: ConnInfo,
    pub(crate) phase: Phase,
    pub(crate) decoder: Decoder,
    /// Received bytes not yet decoded.
    pub(crate) inbuf: BytesMut,
    /// Bytes encoded during this call, sent as one action at its end.
    pub(crate) out: BytesMut,
    /// Size of the last flush (capped), to size the next output buffer in one allocation.
    /// (A `u32`: with the other small fields it keeps the boxed connection in a smaller
    /// allocation class.)
    pub(crate) out_hint: u32,
    /// Whether `out` has bytes and the connection is on the flush list.
    pub(crate) dirty: bool,
    pub(crate) version: ProtocolVersion,
    /// 1.5 times the keep-alive, or `None` when keep-alive is off.
    pub(crate) keep_alive: Option<Duration>,
    /// When the last bytes arrived.
    pub(crate) last_activity: Timestamp,
    /// Bytes sent but not yet reported written by the shell.
    pub(crate) unsent: usize,
    /// Since when `unsent` has been over the limit.
    pub(crate) slow_since: Option<Timestamp>,
    /// The earliest timer entry queued for this connection.
    pub(crate) timer_at: Option<Timestamp>,
    /// The client's Receive Maximum: most QoS 1/2 messages in flight to it.
    pub(crate) send_window: u16,
    /// The client's Maximum Packet Size.
    pub(crate) max_send_size: u32,
    /// QoS 1/2 publishes from the client not yet answered with PUBACK or PUBCOMP.
    pub(crate) receive_in_flight: u16,
    pub(crate) pipeline: Pipeline,
    /// Whether the shell was told to stop reading.
    pub(crate) read_paused: bool,
    /// How many overloaded sessions (or the total queue limit) hold this publisher back; it
    /// is not read while any does (see `overflow.rs`).
    pub(crate) held_by: u16,
    /// The will, published if the connection ends without a normal DISCONNECT.
    pub(crate) will: Option<Box<Will>>,
    /// Topic aliases and enhanced authentication, made when first used.
    pub(crate) extensions: Option<Box<Extensions>>,
    /// Whether the client accepts Reason Strings on acknowledgements (its Request Problem
    /// Information, default true).
    pub(crate) problem_info: bool,
}

/// What only some MQTT 5.0 connections use: topic aliases and enhanced authentication.
/// Boxed and made on first use, so the other connections do not carry its room.
#[derive(Debug, Default)]
pub(crate) struct Extensions {
    /// Topic aliases the client set on this connection.
    pub(crate) inbound_aliases: InboundAliases,
    /// Topic aliases the broker assigned on this connection.
    pub(crate) outbound_aliases: OutboundAliases,
    /// The enhanced authentication method the client connected with.
    pub(crate) auth_method: Option<ByteString>,
    /// A re-authentication in progress.
    pub(crate) reauth: Option<Reauth>,
    /// The method's final data, for the CONNACK that ends an enhanced authentication.
    pub(crate) auth_reply: Option<Bytes>,
    /// What the client may publish and subscribe to (`None`: everything).
    pub(crate) grants: Option<super::permissions::Grants>,
}

/// Where a re-authentication (MQTT 5.0 §4.12.1) stands.
#[derive(Debug)]
pub(crate) enum Reauth {
    /// Waiting for the shell's decision.
    AwaitingShell,
    /// An AUTH (0x18) went to the client; waiting for its answer.
    AwaitingClient {
        /// What the shell asked to get back with the next step.
        state: Bytes,
    },
}

impl Connection {
    /// The extensions, made if missing.
    pub(crate) fn extensions(&mut self) -> &mut Extensions {
        self.extensions.get_or_insert_with(Box::default)
    }

    /// What the client may publish and subscribe to, when not everything.
    pub(crate) fn grants(&self) -> Option<&super::permissions::Grants> {
        self.extensions.as_ref()?.grants.as_ref()
    }

    /// The enhanced authentication method the client connected with.
    pub(crate) fn auth_method(&self) -> Option<&ByteString> {
        self.extensions.as_ref()?.auth_method.as_ref()
    }

    /// The re-authentication in progress.
    pub(crate) fn reauth(&self) -> Option<&Reauth> {
        self.extensions.as_ref()?.reauth.as_ref()
    }

    pub(crate) fn new(
        info: ConnInfo,
        now: Timestamp,
        deadline: Timestamp,
        max_packet: u32,
    ) -> Self {
        Self {
            info,
            phase: Phase::AwaitingConnect { deadline },
            decoder: Decoder::new(Direction::FromClient, max_packet),
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            out_hint: 0,
            dirty: false,
            version: ProtocolVersion::V311,
            keep_alive: None,
            last_activity: now,
            unsent: 0,
            slow_since: None,
            timer_at: None,
            send_window: u16::MAX,
            max_send_size: crate::codec::MAX_PACKET_SIZE,
            receive_in_flight: 0,
            pipeline: Pipeline::default(),
            read_paused: false,
            held_by: 0,
            will: None,
            extensions: None,
            problem_info: true,
        }
    }

    /// The session this connection is bound to.
    pub(crate) fn session(&self) -> Option<SessionId> {
        match self.phase {
            Phase::Connected { session } => Some(session),
            _ => None,
        }
    }

    /// Whether the connection is still taking input.
    pub(crate) fn is_open(&self) -> bool {
        !matches!(self.phase, Phase::Closing)
    }

    /// Whether nothing keeps its reading paused: no CONNECT waiting, fewer than `limit`
    /// packets waiting for store writes, and no overloaded session holding it back.
    pub(crate) fn may_read(&self, limit: usize) -> bool {
        let waiting = matches!(
            self.phase,
            Phase::Authenticating(_) | Phase::Loading(_) | Phase::Held { .. }
        );
        !waiting && self.held_by == 0 && self.pipeline.entries.len() < limit
    }
}
