//! Broker limits and policies, with the defaults a serious deployment starts from.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::QoS;

/// Limits and policies of a [`Broker`](super::Broker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerConfig {
    /// Largest packet accepted from a client, fixed header included (advertised to v5
    /// clients as Maximum Packet Size). Default 1 MiB.
    pub max_packet_size: u32,
    /// How long a new connection may take to send CONNECT. Default 10 s.
    pub connect_timeout: Duration,
    /// Largest keep-alive accepted in seconds; a v5 client asking for more (or for none) is
    /// told this value as Server Keep Alive. 0 means no limit. Default 0.
    pub max_keep_alive: u16,
    /// Smallest keep-alive accepted in seconds; a v5 client asking for less is told this value
    /// as Server Keep Alive (3.1.1 clients cannot be told). 0 means no limit. Default 0.
    pub min_keep_alive: u16,
    /// Most QoS 1/2 messages in flight to one client (further limited by its Receive
    /// Maximum). Default 64.
    pub max_inflight: u16,
    /// Most QoS 1/2 publishes a client may have unacknowledged towards the broker (advertised
    /// to v5 clients as Receive Maximum). Default 64.
    pub receive_maximum: u16,
    /// Most messages queued for one session behind its in-flight window; what happens to a
    /// QoS 1/2 message beyond it is `overflow`'s choice. Default 100 000 (chosen by measurement:
    /// at 1 000 a publisher sending a 20 000-message burst to a slow clean subscriber was held
    /// to the subscriber's pace after 1 000; at 100 000 a burst passes at full speed while the
    /// subscriber catches up, and `max_queued_bytes` and `max_total_queued_bytes` still bound
    /// the memory).
    pub max_queued_messages: usize,
    /// Most bytes (payload, topic and properties) queued for one session. Default 64 MiB.
    pub max_queued_bytes: usize,
    /// What a session whose queue is full does with a further QoS 1/2 message: keep it
    /// without loss (the default) or drop it, counted. See [`Overflow`].
    #[serde(default)]
    pub overflow: Overflow,
    /// Most bytes queued for all sessions together: beyond it, in [`Overflow::Lossless`],
    /// publishers are held back as when one session's queue is full, so memory stays bounded
    /// with any number of slow subscribers. 0: no limit. Default 512 MiB.
    #[serde(default)]
    pub max_total_queued_bytes: usize,
    /// Bytes sent to a connection but not yet written to its socket above which it is a slow
    /// consumer: it stops receiving QoS 0 messages. Default 4 MiB.
    pub max_unsent_bytes: usize,
    /// How long a connection may stay a slow consumer (over `max_unsent_bytes`, or holding
    /// publishers back while it acknowledges nothing) before it is closed with DISCONNECT
    /// 0x97. Default 30 s.
    pub slow_consumer_timeout: Duration,
    /// Deliveries made per call to `handle` before the core asks to be called again with
    /// `Input::Continue`. Default 10 000.
    pub fanout_budget: usize,
    /// Ask the shell to authenticate every CONNECT; when false every client is accepted into
    /// the default account (allow anonymous). Default false.
    pub authenticate: bool,
    /// Accept MQTT 3.1 (`MQIsdp`, level 3) clients, as mosquitto does. Default true.
    pub accept_mqtt31: bool,
    /// Longest client identifier accepted, in bytes. Default 256.
    pub max_client_id_len: usize,
    /// Highest QoS accepted on publishes and wills (advertised to v5 clients as Maximum QoS);
    /// it also caps subscriptions. Default QoS 2.
    pub max_qos: QoS,
    /// Highest QoS granted to subscriptions, below `max_qos` if set lower (the NATS server's
    /// `downgrade_qos2_subscribe`). Default QoS 2.
    pub max_subscription_qos: QoS,
    /// How long a store request may take before it counts as failed. Default 10 s.
    pub store_timeout: Duration,
    /// Most inbound packets waiting on store writes per connection before the broker stops
    /// reading from it. Default 256.
    pub max_pending_per_connection: usize,
    /// Highest topic alias a v5 client may use towards the broker (advertised as Topic Alias
    /// Maximum); 0 turns aliases off. Default 16.
    pub topic_alias_maximum: u16,
    /// Longest a persistent session outlives its connection, in seconds: caps a v5 client's
    /// Session Expiry Interval (the client is told in CONNACK) and is the expiry of 3.1.1
    /// persistent sessions, so abandoned sessions do not pile up. `u32::MAX` means never.
    /// Default 7 days.
    pub max_session_expiry: u32,
    /// Whether the broker is on its own, bridges MQTT and NATS subjects, or is a node of a
    /// fleet (see [`Cluster`]). Default [`Cluster::Standalone`].
    pub cluster: Cluster,
    /// Which NATS subjects the bridge carries (see
    /// [`bridge_policy`](super::bridge_policy)); system subjects never. Default: every
    /// application subject.
    #[serde(default)]
    pub bridge: super::bridge_policy::BridgePolicy,
    /// Server redirection (MQTT 5.0 §4.11): when set, every CONNECT is refused with 0x9C
    /// (Use another server) or 0x9D (Server moved) and the Server Reference; 3.1.1 clients
    /// get return code 3 (server unavailable). Default: none.
    pub redirect: Option<Redirect>,
    /// Most topic aliases the broker assigns towards one v5 client (further limited by the
    /// client's Topic Alias Maximum); 0 turns them off. Default 16.
    pub outbound_topic_aliases: u16,
    /// Most levels in a topic name or filter; deeper ones are refused, which bounds the work
    /// and stack depth of matching. Default 128.
    pub max_topic_levels: usize,
    /// Flapping protection: once a client identifier has been taken over this many times
    /// within `takeover_window` (two clients sharing it), its further CONNECTs are held for a
    /// second and refused with 0x9F Connection rate exceeded (3.1.1: server unavailable) until
    /// the window ends. 0 turns it off. Default 10.
    pub takeover_limit: u32,
    /// The window of `takeover_limit`, from an identifier's first takeover. Default 10 s.
    pub takeover_window: Duration,
    /// How often the broker publishes its statistics under `$SYS/broker/` (retained, QoS 0,
    /// the values that changed); `None` (the default here; the server's is 10 s) for never.
    #[serde(default)]
    pub sys_interval: Option<Duration>,
    /// Most subscriptions one session may hold; SUBSCRIBE beyond it gets 0x97 Quota exceeded
    /// (3.1.1: 0x80) for each new filter. 0: no limit. Default 100 000.
    #[serde(default)]
    pub max_subscriptions: usize,
    /// Most retained messages clients may make the broker keep (it keeps them all in
    /// memory); a retained PUBLISH on a new topic beyond it is refused with 0x97 Quota
    /// exceeded (3.1.1: acknowledged and dropped). 0: no limit. Default 1 000 000.
    #[serde(default)]
    pub max_retained_messages: usize,
    /// Most bytes of all retained messages together (topic, properties and payload: what is
    /// kept), refused the same way. 0: no limit. Default 1 GiB.
    #[serde(default)]
    pub max_retained_bytes: usize,
    /// Most user properties one message (a PUBLISH or a will) may carry: what the broker would
    /// keep for it. A PUBLISH with more is refused with 0x97 Quota exceeded (QoS 0: dropped,
    /// counted), a CONNECT whose will has more with CONNACK 0x97 (3.1.1 cannot carry
    /// properties). 0: no limit. Default 64.
    #[serde(default)]
    pub max_user_properties: usize,
    /// Most bytes of user properties (names and values) one message may carry, refused the
    /// same way. 0: no limit. Default 16 KiB.
    #[serde(default)]
    pub max_user_property_bytes: usize,
    /// Most sessions (online, and persistent ones offline) the broker holds; a CONNECT that
    /// would make a new one beyond it is refused with CONNACK 0x97 Quota exceeded (3.1.1:
    /// server unavailable), while resuming or replacing an existing session still works.
    /// On a fleet node it counts the sessions held on that node. 0: no limit. Default
    /// 1 000 000.
    #[serde(default)]
    pub max_sessions: usize,
    /// Most sessions one authenticated user may hold, refused the same way (anonymous
    /// clients are not counted here: `max_sessions` bounds them). 0: no limit. Default 0.
    #[serde(default)]
    pub max_sessions_per_user: usize,
    /// Longest a connection whose client asked for no keep-alive (0) may stay without sending
    /// anything; it is then closed as on a keep-alive timeout (DISCONNECT 0x8D for 5.0). A
    /// keep-alive of 0 would otherwise let a connection hold its resources forever.
    /// `None`: no limit. Default 2 hours.
    #[serde(default)]
    pub max_idle: Option<Duration>,
    /// Use the authenticated user name as the client identifier, whatever the CONNECT says
    /// (mosquitto's `use_username_as_clientid`): one session per user, and no client can
    /// take another's identifier. Clients without a user name keep theirs. Default false.
    #[serde(default)]
    pub client_id_from_username: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_keep_alive: 0,
            min_keep_alive: 0,
            max_inflight: 64,
            receive_maximum: 64,
            max_queued_messages: 100_000,
            max_queued_bytes: 64 * 1024 * 1024,
            overflow: Overflow::Lossless,
            max_total_queued_bytes: 512 * 1024 * 1024,
            max_unsent_bytes: 4 * 1024 * 1024,
            slow_consumer_timeout: Duration::from_secs(30),
            fanout_budget: 10_000,
            authenticate: false,
            accept_mqtt31: true,
            max_client_id_len: 256,
            max_qos: QoS::ExactlyOnce,
            max_subscription_qos: QoS::ExactlyOnce,
            store_timeout: Duration::from_secs(10),
            max_pending_per_connection: 256,
            max_topic_levels: 128,
            topic_alias_maximum: 16,
            outbound_topic_aliases: 16,
            max_session_expiry: 7 * 24 * 3600,
            redirect: None,
            cluster: Cluster::Standalone,
            bridge: super::bridge_policy::BridgePolicy::default(),
            takeover_limit: 10,
            takeover_window: Duration::from_secs(10),
            sys_interval: None,
            max_subscriptions: 100_000,
            max_retained_messages: 1_000_000,
            max_retained_bytes: 1 << 30,
            max_user_properties: 64,
            max_user_property_bytes: 16 * 1024,
            max_sessions: 1_000_000,
            max_sessions_per_user: 0,
            max_idle: Some(Duration::from_secs(2 * 3600)),
            client_id_from_username: false,
        }
    }
}

impl BrokerConfig {
    /// Whether a message's user properties are within `max_user_properties` and
    /// `max_user_property_bytes`.
    #[must_use]
    pub fn user_properties_fit(&self, properties: &[crate::codec::UserProperty]) -> bool {
        let count_ok =
            self.max_user_properties == 0 || properties.len() <= self.max_user_properties;
        let bytes: usize = properties
            .iter()
            .map(|p| p.name.len() + p.value.len())
            .sum();
        count_ok && (self.max_user_property_bytes == 0 || bytes <= self.max_user_property_bytes)
    }
}

/// Where clients are sent instead of being served (MQTT 5.0 server redirection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// The Server Reference: one or more servers (`host[:port]`, space separated) to use.
    pub server_reference: bytestring::ByteString,
    /// Whether the move is permanent (0x9D Server moved) rather than temporary (0x9C Use
    /// another server).
    pub permanent: bool,
}

/// Where the broker stands among NATS and other jetmq nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cluster {
    /// On its own: no NATS connection.
    #[default]
    Standalone,
    /// MQTT and NATS subjects are bridged ([`Action::NatsPublish`](super::Action::NatsPublish)
    /// and friends): the shell has a NATS connection.
    Bridge,
    /// A node of a fleet, bridged as [`Cluster::Bridge`]: other jetmq nodes share the store
    /// (JetStream) and the NATS subjects, so every QoS 1/2 message is stored (a persistent
    /// session elsewhere may want it), a persistent session is loaded from the store when its
    /// client connects, each CONNECT is announced on NATS so the node that had the client
    /// closes its connection there, and shared subscriptions are NATS queue groups.
    Fleet,
}

impl Cluster {
    /// Whether MQTT and NATS subjects are bridged (a bridge or a fleet node).
    #[must_use]
    pub const fn bridges(self) -> bool {
        !matches!(self, Self::Standalone)
    }

    /// Whether this broker is a node of a fleet.
    #[must_use]
    pub const fn is_fleet(self) -> bool {
        matches!(self, Self::Fleet)
    }
}

/// What a session whose queue is full (`max_queued_messages`, `max_queued_bytes`) does with a
/// further QoS 1/2 message. QoS 0 messages for a slow consumer are dropped (counted) either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// Nothing acknowledged is lost. A persistent session's stored messages stay in its
    /// consumer and are read back as the queue drains (spilled to the store); any other
    /// message is kept and the publishers sending to the session stop being read until its
    /// queue is down to half (TCP pushes back on them). A subscriber that acknowledges
    /// nothing for `slow_consumer_timeout` meanwhile is disconnected as a slow consumer.
    #[default]
    Lossless,
    /// The message is dropped for that session, counted in `dropped_queue_full` and
    /// reported as a `QueueOverflow` notice (mosquitto's `max_queued_messages` semantics).
    Drop,
}
