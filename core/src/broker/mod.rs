//! The broker state machine: connections, sessions, subscriptions, retained messages, wills and
//! the QoS flows, driven by [`Input`]s and answering with [`Action`]s.
//!
//! ```
//! use bytes::BytesMut;
//! use jetmq_core::broker::{Action, Broker, BrokerConfig, ConnId, ConnInfo, Input, ListenerKind, Outbox};
//! use jetmq_core::time::Now;
//!
//! let mut broker = Broker::new(BrokerConfig::default(), 42, Now::default());
//! let mut outbox = Outbox::new();
//! let conn = ConnId::new(1).unwrap();
//! let info = ConnInfo { peer: "127.0.0.1:50000".into(), listener: ListenerKind::Test, tls_identity: None };
//! broker.handle(Now::default(), Input::Accepted { conn, info }, &mut outbox);
//! // CONNECT, MQTT 3.1.1, client id "c", clean session, keep-alive 60 s.
//! let connect = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'c'];
//! broker.handle(Now::default(), Input::Received { conn, data: BytesMut::from(&connect[..]) }, &mut outbox);
//! let sent: Vec<_> = outbox.drain().collect();
//! assert!(matches!(&sent[..], [Action::Send { bytes, .. }] if bytes[..] == [0x20, 2, 0, 0]));
//! ```
//!
//! # Parts
//!
//! `Broker` keeps [`Broker::handle`] and the flows (connect, publish, subscribe,
//! authentication, statistics); each flow validates its input, plans what to do, then applies
//! it through parts that own their data and rules and are tested on their own:
//!
//! ```text
//!                       Input ──► Broker::handle ──► flows ──► Outbox (Actions)
//!                                         │
//!   ┌─────────────┬──────────────┬────────┴──────┬──────────────┬──────────────┐
//!   Connections   Sessions       Router          Retained       StoreRequests  Timers
//!   (pipelines,   (generational  (subscription   (retained      (requests in   (deadlines,
//!   flushing,     SessionId,     trees, shared   messages and   flight, their  next wake-up)
//!   slow          key index,     groups, fan-out their quota)   owners and
//!   consumers,    per-user       and its budget)                timeouts)
//!   held          quota)
//!   publishers)
//!                     Cluster: Standalone | Bridge | Fleet (fleet::ConnectClock, fleet::wire)
//! ```
//!
//! `connections.rs`, `sessions.rs`, `router.rs`, `retained_quota.rs`, `requests.rs` and
//! `timers.rs` hold the parts; smaller owners sit beside them (`SubscriptionTree`,
//! `RetainedStore`, `ShareGroups`, `SessionQuota`, `SubscriptionSave`, `Overload`,
//! `TakeoverCounter`, `TopicAliases`). Store records are encoded and decoded in
//! [`crate::js::records`] only.
//!
//! # Choices the spec leaves open
//!
//! - **Overlapping subscriptions** of one session deliver a message once, at the highest QoS
//!   granted among the matching subscriptions (Retain As Published if any of them asks).
//! - **MQTT 3.1** (`MQIsdp`, level 3) clients are accepted like 3.1.1 ones, as mosquitto does,
//!   unless `accept_mqtt31` is off (then CONNACK return code 1).
//! - **Empty client identifiers** get `jetmq-` and 16 hex digits from the seeded generator
//!   (3.1.1 only with clean session; 5.0 returns it as Assigned Client Identifier).
//! - **Queue overflow** ([`Overflow`]): by default nothing acknowledged is lost. A persistent
//!   session whose queue is at `max_queued_messages` or `max_queued_bytes` leaves further
//!   stored messages in its consumer and reads them back as it drains; for any other message
//!   the publishers sending to it are held back (not read) until it catches up. With
//!   [`Overflow::Drop`] the message is dropped for that session, counted in [`BrokerStats`]
//!   and reported as [`Notice::QueueOverflow`].
//! - **QoS 0 messages** are not queued for offline sessions.
//! - **Delivery order**: messages are routed in the order their publishes complete, and a
//!   publish completes after the store writes it needs; each connection's publishes complete
//!   in arrival order, so per-publisher order holds.
//! - **Session expiry** is capped by `max_session_expiry` (7 days by default), which is also
//!   the expiry of 3.1.1 persistent sessions.
//! - **Topic aliases towards clients** are assigned in the order topics are first sent; when
//!   all are taken the oldest binding is rebound.
//! - **Shared subscriptions** serve members in turn, online ones first, send no retained
//!   messages, and hand a leaving member's unsent and unacknowledged QoS 1 messages to another
//!   member (see `shared.rs`). In a fleet they are NATS queue groups, so each message goes to
//!   one member across the nodes (see `shared_fleet.rs`).
//! - **`$SYS/broker/` statistics** (with `sys_interval`): retained QoS 0 messages, local to the
//!   node, and client publishes there refused (see `sys_topics.rs`).
//! - **Payload Format Indicator** 1 with a payload that is not UTF-8 is refused (0x99).
//! - **Reason Strings** are the reason code's description, sent with every refusal (on
//!   acknowledgements only when Request Problem Information allows).

mod auth;
mod bridge;
pub mod bridge_policy;
mod catch_up;
mod config;
mod connection;
mod connections;
mod fleet_record;
mod io;
mod lifecycle;
mod message;
mod metrics;
mod overflow;
mod overload;
mod permissions;
mod persist;
mod publish;
mod requests;
pub mod retained;
mod retained_quota;
mod router;
mod session;
mod session_index;
mod session_quota;
mod sessions;
mod share_groups;
mod shared;
mod shared_fleet;
mod subscribe;
mod subscription_save;
pub mod subscriptions;
mod sys_topics;
mod takeovers;
mod timers;
mod topic_alias;

use std::collections::BTreeMap;

pub use config::{BrokerConfig, Cluster, Overflow, Redirect};
pub use io::{
    Action, AuthDecision, AuthRequest, AuthStage, CloseReason, ConnId, ConnInfo, Input,
    ListenerKind, Notice, Outbox, SessionKey, DEFAULT_ACCOUNT,
};
pub use message::{Message, SharedMessage, Will};
pub use metrics::Metrics;
pub use permissions::Permissions;
pub use session::SessionInfo;

use connections::Connections;
use requests::StoreRequests;
use router::Router;
use session::Session;
use sessions::{SessionId, Sessions};
use timers::{Timer, Timers};

use crate::fleet::clock::ConnectClock;
use crate::fleet::wire;
use crate::js::StoredMessage;
use crate::rng::Rng;
use crate::time::{Now, Timestamp};

/// Counters for metrics; they only ever grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Messages published by clients (and wills) that were routed.
    pub messages_routed: u64,
    /// Deliveries written to connections.
    pub deliveries: u64,
    /// QoS 0 deliveries skipped because the connection was a slow consumer.
    pub dropped_slow_consumer: u64,
    /// Deliveries dropped because a session's queue was full.
    pub dropped_queue_full: u64,
    /// Deliveries dropped because they exceeded the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Deliveries dropped because the message's expiry interval ran out first.
    pub dropped_expired: u64,
    /// Inputs that named an unknown connection or request.
    pub unknown_inputs: u64,
    /// Store requests that failed or timed out.
    pub store_failures: u64,
    /// Connect notices of other fleet nodes that arrived after a newer connect of the same
    /// client here, and were ignored.
    pub late_connect_notices: u64,
    /// Fleet: messages NATS handed to this node for a shared subscription after its last
    /// member here had left (a stored one stays with the other members' consumers).
    pub share_messages_missed: u64,
    /// Retained messages on new topics refused because the retained-message quota was
    /// reached (`max_retained_messages`, `max_retained_bytes`).
    pub retained_refused: u64,
    /// Stored messages for a session at its queue limit left in its consumer, to be read back
    /// as it drains ([`Overflow::Lossless`]).
    pub spilled: u64,
    /// NATS messages on subjects the bridge does not carry (system subjects, or outside
    /// `bridge`'s rules), dropped before they reach any MQTT subscriber.
    pub bridge_refused: u64,
    /// Times a publisher stopped being read because a session it sent to (or all queues
    /// together) was at its limit ([`Overflow::Lossless`]).
    pub publishers_held: u64,
    /// PUBLISHes and wills refused for carrying more user properties than
    /// `max_user_properties` / `max_user_property_bytes` allow.
    pub oversized_properties: u64,
    /// CONNECTs refused because a new session would exceed `max_sessions` or
    /// `max_sessions_per_user`.
    pub sessions_refused: u64,
}

/// The broker: one deterministic state machine for every connection and session.
///
/// Drive it with [`Broker::handle`] and wake it at [`Broker::next_deadline`]. It performs no
/// I/O and never panics on any input sequence; the same seed and inputs give the same actions.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    rng: Rng,
    now: Now,
    /// The stamps that order connects across a fleet ([`Broker::connect_stamp`]).
    clock: ConnectClock,
    /// Connections whose session is being read from the store (fleet), by session key, so
    /// that a newer connect through another node refuses them.
    loading: BTreeMap<SessionKey, ConnId>,
    /// Recent takeovers per client identifier (flapping protection).
    takeovers: takeovers::TakeoverCounter,
    conns: Connections,
    sessions: Sessions,
    routes: Router,
    retained: retained_quota::Retained,
    /// Fleet: catch-up reads of sessions' consumers in flight.
    catch_ups: BTreeMap<SessionId, catch_up::CatchUp>,
    /// Persistent sessions' subscription saves in flight, with the acknowledgements waiting
    /// for them or for the next (see `subscription_save`).
    subscription_saves: BTreeMap<SessionId, subscription_save::SubscriptionSave>,
    /// NATS bridge: MQTT subscriptions per NATS subject, and the changes to hand the shell.
    nats_subjects: BTreeMap<bytestring::ByteString, u32>,
    nats_changes: Vec<Action>,
    timers: Timers,
    requests: StoreRequests,
    /// Bytes queued for all sessions together (see `overflow.rs`).
    queued_total: usize,
    /// Records read at start-up, applied together on `RestoreComplete`.
    restoring: Option<Vec<StoredMessage>>,
    stats: BrokerStats,
    /// The `$SYS/broker/` values last published.
    sys: sys_topics::SysValues,
    /// When the broker was made (for its uptime).
    started: Timestamp,
}

impl Broker {
    /// A broker with `config`, whose identifiers and choices all derive from `seed`.
    #[must_use]
    pub fn new(config: BrokerConfig, seed: u64, now: Now) -> Self {
        let nats_changes = if config.cluster.is_fleet() {
            [wire::CONNECT_NOTICES, wire::RETAINED_NOTICES]
                .into_iter()
                .map(|subject| Action::NatsSubscribe {
                    subject: subject.into(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let takeovers =
            takeovers::TakeoverCounter::new(config.takeover_limit, config.takeover_window);
        let requests = StoreRequests::new(config.store_timeout);
        let retained = retained_quota::Retained::new(&config);
        let conns = Connections::new(config.max_unsent_bytes);
        let mut broker = Self {
            config,
            rng: Rng::new(seed),
            clock: ConnectClock::from_seed(seed),
            loading: BTreeMap::new(),
            takeovers,
            now,
            conns,
            sessions: Sessions::default(),
            routes: Router::default(),
            retained,
            catch_ups: BTreeMap::new(),
            subscription_saves: BTreeMap::new(),
            nats_subjects: BTreeMap::new(),
            nats_changes,
            timers: Timers::default(),
            requests,
            queued_total: 0,
            restoring: None,
            stats: BrokerStats::default(),
            sys: sys_topics::SysValues::default(),
            started: now.instant,
        };
        broker.schedule_sys();
        broker
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Counters for metrics.
    #[must_use]
    pub fn stats(&self) -> BrokerStats {
        self.stats
    }

    /// Number of open connections.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Number of sessions, online and offline.
    #[must_use]
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of retained messages.
    #[must_use]
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// The session that holds `key`, if one does.
    fn session_id(&self, key: &SessionKey) -> Option<SessionId> {
        self.sessions.find(key)
    }

    /// Every session, online and offline, as an administrator sees it, in key order.
    pub fn sessions(&self) -> impl Iterator<Item = SessionInfo> + '_ {
        let mut sessions: Vec<&Session> = self.sessions.by_key().collect();
        sessions.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        sessions.into_iter().map(Session::info)
    }

    /// Messages queued and in flight for the session of `client_id` in the default account,
    /// for tests and admin tools: `(in flight, queued, queued bytes)` (topic, properties and payload).
    #[must_use]
    pub fn session_backlog(&self, client_id: &str) -> Option<(usize, usize, usize)> {
        let key = SessionKey {
            account: bytestring::ByteString::from_static(DEFAULT_ACCOUNT),
            client_id: client_id.into(),
        };
        let s = self.sessions.get(self.session_id(&key)?)?;
        Some((
            s.outbound.inflight.len(),
            s.outbound.queue.len(),
            s.outbound.queued_bytes,
        ))
    }

    /// When the broker next wants an [`Input::Tick`]; `None` when no timer is set. Calling
    /// earlier is harmless.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.next_deadline()
    }

    /// Feeds one input at time `now` and appends the resulting actions to `out`.
    ///
    /// Never panics: peer misbehaviour becomes actions (a reason code, a close), and inputs
    /// for unknown connections or requests are ignored and counted.
    pub fn handle(&mut self, now: Now, input: Input, out: &mut Outbox) {
        if now.instant > self.now.instant {
            self.now = now;
        } else {
            // A clock that went back is treated as standing still.
            self.now.wall = now.wall;
        }
        self.routes.set_budget(self.config.fanout_budget.max(1));
        match input {
            Input::Accepted { conn, info } => self.on_accepted(conn, info, out),
            Input::Received { conn, data } => self.on_received(conn, data, out),
            Input::Flushed { conn, bytes } => self.on_flushed(conn, bytes, out),
            Input::Closed { conn } => self.on_peer_closed(conn, out),
            Input::Authenticated { conn, decision } => self.on_authenticated(conn, decision, out),
            Input::Stored { id, reply } => self.on_stored(id, reply, out),
            Input::Restored(record) => self.restoring.get_or_insert_with(Vec::new).push(record),
            Input::RestoreComplete => self.on_restore_complete(out),
            Input::Tick => self.on_tick(out),
            Input::Continue => {}
            Input::Shutdown => self.on_shutdown(out),
            Input::DiscardSession(key) => self.on_discard_session(&key, out),
            Input::NatsMessage {
                subject,
                headers,
                payload,
            } => self.on_nats_message(&subject, &headers, payload, out),
            Input::NatsQueueMessage {
                queue,
                subject,
                headers,
                payload,
            } => self.on_nats_queue_message(&queue, &subject, &headers, payload, out),
            Input::NatsConnected => self.on_nats_connected(out),
        }
        self.resume_released(out);
        self.run_fanout(out);
        self.flush_bridge(out);
        self.flush(out);
    }

    fn unknown_conn(&mut self, conn: ConnId, out: &mut Outbox) {
        self.stats.unknown_inputs += 1;
        out.push(Action::Notice(Notice::UnknownConnection(conn)));
    }

    fn schedule(&mut self, at: Timestamp, timer: Timer) {
        self.timers.schedule(at, timer);
    }

    /// Makes sure a timer entry for `conn` exists no later than `at`.
    fn schedule_conn(&mut self, conn: ConnId, at: Timestamp) {
        if self.conns.arm_timer(conn, at) {
            self.timers.schedule(at, Timer::Conn(conn));
        }
    }

    fn on_tick(&mut self, out: &mut Outbox) {
        let now = self.now.instant;
        while let Some((at, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Conn(conn) => self.on_conn_timer(conn, at, out),
                Timer::Will(session, generation) => self.on_will_timer(session, generation, out),
                Timer::Expiry(session, generation) => {
                    self.on_expiry_timer(session, generation, out);
                }
                Timer::Request(id) => self.on_request_timeout(id, out),
                Timer::Reannounce => self.announce_connected(out),
                Timer::Sys => self.on_sys_timer(),
                Timer::CatchUp(session, last) => self.on_catch_up_timer(session, last, out),
            }
        }
    }

    /// Appends `bytes`-producing work for `conn` to the flush list.
    fn mark_dirty(&mut self, conn: ConnId) {
        self.conns.mark_dirty(conn);
    }

    /// Sends what each connection accumulated during this call, one action per connection.
    fn flush(&mut self, out: &mut Outbox) {
        let dirty = self.conns.take_flush_list();
        for conn in &dirty {
            self.flush_conn(*conn, out);
        }
        self.conns.restore_flush_list(dirty);
    }

    /// Sends what `conn` accumulated now; a connection that just became a slow consumer has
    /// `slow_consumer_timeout` to catch up.
    fn flush_conn(&mut self, conn: ConnId, out: &mut Outbox) {
        let now = self.now.instant;
        if self.conns.flush_one(conn, now, out) {
            let at = now.saturating_add(self.config.slow_consumer_timeout);
            self.schedule_conn(conn, at);
        }
    }

    /// Whether `conn` has more unsent bytes than a healthy connection may have.
    fn is_slow(&self, conn: ConnId) -> bool {
        self.conns.is_slow(conn)
    }

    fn on_flushed(&mut self, conn: ConnId, bytes: usize, out: &mut Outbox) {
        let Some(caught_up) = self.conns.flushed(conn, bytes) else {
            self.unknown_conn(conn, out);
            return;
        };
        let session = self.conns.get(&conn).and_then(|c| c.session());
        if let Some(session) = session.filter(|_| bytes > 0) {
            self.note_progress(session);
        }
        if let Some(session) = session.filter(|_| caught_up) {
            self.fill_window(session, out);
        }
    }
}

/// A copy of `text` in an allocation of its own. Decoded packets hand out slices of the
/// buffer they were read into; what the broker keeps for long (client identifiers,
/// subscription filters, wills, retained messages) is copied, or a few bytes would keep a
/// whole read buffer alive.
fn detach(text: &str) -> bytestring::ByteString {
    bytestring::ByteString::from(text)
}
