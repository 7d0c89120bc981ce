//! Server configuration: listeners, limits and storage, from the command line and an optional
//! TOML file. Unknown keys and invalid values are refused with a message naming the key, the
//! value and what is allowed.
//!
//! TLS material is read and checked when the configuration is made, so a missing, unreadable
//! or invalid PEM file stops the server at start-up with the file's name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jetmq_core::broker::{BrokerConfig, Cluster, ListenerKind};
use jetmq_core::codec::QoS;
use serde::Deserialize;

pub use crate::command_line::CommandLine;
pub(crate) use crate::config_error::invalid;
pub use crate::config_error::ConfigError;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Addresses to serve MQTT over TCP on.
    pub listen: Vec<SocketAddr>,
    /// Further listeners of any kind (the file's `[[listeners]]`), served besides `listen`
    /// (which defaults to 127.0.0.1:1883: clear it to serve only these).
    pub listeners: Vec<ListenerConfig>,
    /// Where the embedded store keeps its files; `None` keeps state in memory only.
    pub data_dir: Option<PathBuf>,
    /// The broker's limits and policies.
    pub broker: BrokerConfig,
    /// Seed for the broker's deterministic choices (assigned client identifiers, a fleet node's
    /// number). The default is drawn from the operating system at every start, so that no two
    /// runs or fleet nodes assign the same identifiers; a recording keeps it for replay.
    pub seed: u64,
    /// Most simultaneous connections; more are refused at accept.
    pub max_connections: usize,
    /// How long a graceful shutdown waits for clients and store writes.
    pub shutdown_timeout: Duration,
    /// When the embedded store forces its writes to disk.
    pub sync: jetmq_store::SyncPolicy,
    /// A file to record every broker input to, for `jetmq replay`.
    pub record: Option<PathBuf>,
    /// Who may connect.
    pub auth: crate::auth::AuthConfig,
    /// Where a running server reads `auth` from when the caller wants to replace it while
    /// the server runs (the binaries do, on SIGHUP); `None`: `auth`, fixed.
    pub auth_source: Option<crate::auth::AuthSource>,
    /// Log client identifiers and topics (personal data, redacted by default).
    pub log_pii: bool,
    /// The NATS server to bridge MQTT and NATS subjects with and keep state in, if any.
    pub nats: Option<crate::nats_config::NatsConfig>,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// How password and SCRAM checks are bounded: threads, queue, failed-login limits.
    pub auth_limits: crate::auth_pool::AuthLimits,
    /// Most simultaneous connections from one source address (0: no limit); more are refused
    /// at accept.
    pub max_connections_per_address: usize,
    /// TCP keepalive idle time on accepted sockets (`None`: off).
    pub tcp_keepalive: Option<Duration>,
}

/// A seed from the operating system's random source; should that fail, one derived from the
/// time and the process (std's randomly keyed hasher), which still differs between starts.
#[must_use]
pub fn random_seed() -> u64 {
    use rand_core::RngCore;
    let mut bytes = [0u8; 8];
    if rand_core::OsRng.try_fill_bytes(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        (std::time::SystemTime::now(), std::process::id()),
    )
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            listeners: Vec::new(),
            data_dir: Some(PathBuf::from("jetmq-data")),
            broker: BrokerConfig {
                sys_interval: Some(DEFAULT_SYS_INTERVAL),
                ..BrokerConfig::default()
            },
            seed: random_seed(),
            max_connections: 10_000,
            shutdown_timeout: Duration::from_secs(10),
            sync: jetmq_store::SyncPolicy::Always,
            record: None,
            auth: crate::auth::AuthConfig::open(),
            auth_source: None,
            log_pii: false,
            nats: None,
            metrics: None,
            auth_limits: crate::auth_pool::AuthLimits::default(),
            max_connections_per_address: 0,
            tcp_keepalive: Some(crate::sockets::DEFAULT_TCP_KEEPALIVE),
        }
    }
}

/// How often the server publishes its `$SYS/broker/` statistics unless configured.
pub const DEFAULT_SYS_INTERVAL: Duration = Duration::from_secs(10);

/// The path WebSocket listeners serve MQTT on when none is configured.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

const KINDS: &str = "\"tcp\", \"tls\", \"ws\" or \"wss\"";

/// One listener: an address and how MQTT is carried there.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The address to bind.
    pub address: SocketAddr,
    /// How connections there carry MQTT.
    pub transport: Transport,
    /// WebSocket listeners: the origins (`scheme://host[:port]`) whose pages may open
    /// connections; `None`: only requests without an `Origin` header or from the same host
    /// (the Origin's host is the Host header's).
    pub allowed_origins: Option<Vec<String>>,
}

/// How a listener carries MQTT.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls(TlsSettings),
    /// WebSocket (binary messages, subprotocol `mqtt`), upgrading only requests for `path`.
    WebSocket {
        /// The HTTP path served, such as `/mqtt`.
        path: String,
    },
    /// WebSocket over TLS.
    SecureWebSocket {
        /// The HTTP path served, such as `/mqtt`.
        path: String,
        /// The TLS side.
        tls: TlsSettings,
    },
}

impl Transport {
    /// The kind of listener the broker is told connections arrive on.
    #[must_use]
    pub fn kind(&self) -> ListenerKind {
        match self {
            Self::Tcp => ListenerKind::Tcp,
            Self::Tls(_) => ListenerKind::Tls,
            Self::WebSocket { .. } => ListenerKind::WebSocket,
            Self::SecureWebSocket { .. } => ListenerKind::SecureWebSocket,
        }
    }

    /// The listener's kind in words, for logs ("TLS (client certificates required)").
    #[must_use]
    pub fn describe(&self) -> String {
        let client_certs = |tls: &crate::config::TlsSettings| {
            if tls.client_ca().is_some() {
                " (client certificates required)"
            } else {
                ""
            }
        };
        match self {
            Transport::Tcp => "TCP".to_string(),
            Transport::Tls(tls) => format!("TLS{}", client_certs(tls)),
            Transport::WebSocket { path } => format!("WebSocket at {path}"),
            Transport::SecureWebSocket { path, tls } => {
                format!("secure WebSocket at {path}{}", client_certs(tls))
            }
        }
    }
}

/// A TLS listener's certificate, key and optional client CA, read from PEM files and checked.
#[derive(Clone)]
pub struct TlsSettings {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads `cert` (the server's certificate chain, leaf first), `key` (its private key:
    /// PKCS#8, PKCS#1 or SEC1) and, when given, `client_ca` (CA certificates; every client must
    /// then present a certificate signed by one of them). All are PEM files.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] keyed `cert`, `key` or `client_ca` naming the file that is unreadable,
    /// is not PEM, holds nothing usable, or (`key`) does not match the certificate.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        client_ca: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        Self::load("", cert.as_ref(), key.as_ref(), client_ca)
    }

    fn load(
        prefix: &str,
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let server = crate::tls::server_config(prefix, cert, key, client_ca)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
            server,
        })
    }

    /// The certificate chain's file.
    #[must_use]
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// The private key's file.
    #[must_use]
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// The client CA file, when client certificates are required.
    #[must_use]
    pub fn client_ca(&self) -> Option<&Path> {
        self.client_ca.as_deref()
    }

    /// The rustls server configuration built from these files.
    #[must_use]
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server)
    }
}

/// One `[[listeners]]` entry of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerFile {
    kind: Option<String>,
    address: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    path: Option<String>,
    allowed_origins: Option<Vec<String>>,
}

/// The `[limits]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_connections: Option<usize>,
    max_packet_size: Option<u32>,
    max_inflight: Option<u16>,
    receive_maximum: Option<u16>,
    max_queued_messages: Option<usize>,
    max_queued_bytes: Option<usize>,
    max_keep_alive: Option<u16>,
    min_keep_alive: Option<u16>,
    topic_alias_maximum: Option<u16>,
    outbound_topic_aliases: Option<u16>,
    max_session_expiry_secs: Option<u32>,
    connect_timeout_secs: Option<u64>,
    takeover_limit: Option<u32>,
    takeover_window_secs: Option<u64>,
    max_subscriptions: Option<usize>,
    max_retained_messages: Option<usize>,
    max_retained_bytes: Option<usize>,
    max_qos: Option<u8>,
    max_client_id_len: Option<usize>,
    max_unsent_bytes: Option<usize>,
    overflow: Option<String>,
    max_total_queued_bytes: Option<usize>,
    slow_consumer_timeout_secs: Option<u64>,
    max_connections_per_address: Option<usize>,
    tcp_keepalive_secs: Option<u64>,
    max_user_properties: Option<usize>,
    max_user_property_bytes: Option<usize>,
    max_sessions: Option<usize>,
    max_sessions_per_user: Option<usize>,
    max_topic_levels: Option<usize>,
    max_idle_secs: Option<u64>,
}

impl LimitsFile {
    /// Applies what a slow subscriber may cost: its queue, all queues together, what happens
    /// beyond them, and how long it may hold publishers back.
    fn apply_overload(&self, b: &mut BrokerConfig) -> Result<(), ConfigError> {
        if let Some(v) = self.max_queued_messages {
            if v == 0 {
                return Err(invalid("limits.max_queued_messages", v, "1 or more"));
            }
            b.max_queued_messages = v;
        }
        if let Some(v) = self.max_queued_bytes {
            if v < 1024 {
                return Err(invalid("limits.max_queued_bytes", v, "1024 bytes or more"));
            }
            b.max_queued_bytes = v;
        }
        if let Some(v) = &self.overflow {
            b.overflow = match v.as_str() {
                "lossless" => jetmq_core::broker::Overflow::Lossless,
                "drop" => jetmq_core::broker::Overflow::Drop,
                _ => return Err(invalid("limits.overflow", v, "\"lossless\" or \"drop\"")),
            };
        }
        if let Some(v) = self.max_total_queued_bytes {
            b.max_total_queued_bytes = v;
        }
        if let Some(v) = self.slow_consumer_timeout_secs {
            b.slow_consumer_timeout = up_to_an_hour("limits.slow_consumer_timeout_secs", v)?;
        }
        Ok(())
    }

    /// Applies what one client may make the broker keep: user properties per message,
    /// sessions in all and per user, and how long a connection without keep-alive may idle.
    fn apply_state_bounds(&self, b: &mut BrokerConfig) -> Result<(), ConfigError> {
        if let Some(v) = self.max_user_properties {
            b.max_user_properties = v;
        }
        if let Some(v) = self.max_user_property_bytes {
            b.max_user_property_bytes = v;
        }
        if let Some(v) = self.max_sessions {
            b.max_sessions = v;
        }
        if let Some(v) = self.max_sessions_per_user {
            b.max_sessions_per_user = v;
        }
        if let Some(v) = self.max_topic_levels {
            if !(1..=65_535).contains(&v) {
                return Err(invalid("limits.max_topic_levels", v, "1 to 65535 levels"));
            }
            b.max_topic_levels = v;
        }
        match self.max_idle_secs {
            None => {}
            Some(0) => b.max_idle = None,
            Some(secs @ 1..=604_800) => b.max_idle = Some(Duration::from_secs(secs)),
            Some(secs) => {
                return Err(invalid(
                    "limits.max_idle_secs",
                    secs,
                    "0 (no limit) or 1 to 604800 seconds (7 days)",
                ))
            }
        }
        Ok(())
    }
}

/// The `[store]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    sync: Option<String>,
    sync_interval_ms: Option<u64>,
}

/// The `[mqtt]` table: the NATS server's MQTT options that apply to jetmq.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MqttFile {
    reject_qos2_publish: Option<bool>,
    downgrade_qos2_subscribe: Option<bool>,
}

/// The `[redirect]` table: MQTT 5.0 server redirection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedirectFile {
    server_reference: Option<String>,
    permanent: Option<bool>,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    redirect: Option<RedirectFile>,
    nats: Option<crate::nats_config::NatsFile>,
    #[serde(default)]
    auth: AuthFile,
    #[serde(default)]
    mqtt: MqttFile,
    listen: Option<Vec<String>>,
    listeners: Option<Vec<ListenerFile>>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    store: StoreFile,
    #[serde(default)]
    sys: SysFile,
    #[serde(default)]
    metrics: MetricsFile,
}

/// The `[metrics]` table: the Prometheus endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    listen: Option<String>,
}

/// The `[sys]` table: the `$SYS/broker/` statistics.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SysFile {
    interval_secs: Option<u64>,
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFile {
    username: String,
    password_hash: Option<String>,
    scram: Option<String>,
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
}

/// The `[auth]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    allow_anonymous: Option<bool>,
    anonymous_publish: Option<Vec<String>>,
    anonymous_subscribe: Option<Vec<String>>,
    #[serde(default)]
    users: Vec<UserFile>,
    threads: Option<usize>,
    queue: Option<usize>,
    max_failures_per_address: Option<u32>,
    max_failures_per_user: Option<u32>,
    failure_window_secs: Option<u64>,
    client_id_from: Option<String>,
}

/// Topic permissions from the configuration file: each pattern checked as an MQTT topic
/// filter (with `%c` and `%u` standing for a client identifier and a user name).
fn permissions(
    publish: (&str, Option<Vec<String>>),
    subscribe: (&str, Option<Vec<String>>),
) -> Result<Option<jetmq_core::broker::Permissions>, ConfigError> {
    let check = |(key, patterns): (&str, Option<Vec<String>>)| {
        patterns
            .map(|patterns| {
                patterns
                    .into_iter()
                    .map(|p| {
                        let example = p.replace("%c", "c").replace("%u", "u");
                        match jetmq_core::topic::TopicFilter::new(example) {
                            Ok(_) => Ok(bytestring::ByteString::from(p)),
                            Err(_) => Err(invalid(
                                key,
                                &p,
                                "an MQTT topic filter (%c: the client identifier, %u: the user name)",
                            )),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
    };
    let publish = check(publish)?;
    let subscribe = check(subscribe)?;
    Ok((publish.is_some() || subscribe.is_some())
        .then_some(jetmq_core::broker::Permissions { publish, subscribe }))
}

/// Applies the `[auth]` bounds on password and SCRAM checks.
fn apply_auth_limits(
    file: &AuthFile,
    limits: &mut crate::auth_pool::AuthLimits,
) -> Result<(), ConfigError> {
    if let Some(v) = file.threads {
        if !(1..=64).contains(&v) {
            return Err(invalid("auth.threads", v, "1 to 64 threads"));
        }
        limits.threads = v;
    }
    if let Some(v) = file.queue {
        if !(1..=65_536).contains(&v) {
            return Err(invalid("auth.queue", v, "1 to 65536 waiting checks"));
        }
        limits.queue = v;
    }
    if let Some(v) = file.max_failures_per_address {
        limits.max_failures_per_address = v;
    }
    if let Some(v) = file.max_failures_per_user {
        limits.max_failures_per_user = v;
    }
    if let Some(v) = file.failure_window_secs {
        limits.failure_window = up_to_an_hour("auth.failure_window_secs", v)?;
    }
    Ok(())
}

/// A duration of `secs` seconds for `key`, which allows 1 to 3600.
fn up_to_an_hour(key: &str, secs: u64) -> Result<Duration, ConfigError> {
    if secs == 0 || secs > 3600 {
        return Err(invalid(key, secs, "1 to 3600 seconds"));
    }
    Ok(Duration::from_secs(secs))
}

/// Parses a listen address such as `127.0.0.1:1883` or `[::1]:1883`.
///
/// # Errors
///
/// A [`ConfigError`] naming `key` when the text is not an address with a port.
pub fn parse_listen(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| invalid(key, text, "an IP address with a port, like 127.0.0.1:1883"))
}

/// Checks a WebSocket path such as `/mqtt`.
///
/// # Errors
///
/// A [`ConfigError`] naming `key` when the path does not start with `/`, or holds a space, a
/// control character, `?` or `#`.
pub fn parse_ws_path(key: &str, text: &str) -> Result<String, ConfigError> {
    let fine = text.starts_with('/')
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#');
    if fine {
        Ok(text.to_string())
    } else {
        Err(invalid(
            key,
            text,
            "an HTTP path starting with /, without spaces, ? or #, like /mqtt",
        ))
    }
}

fn listener_from_file(i: usize, l: ListenerFile) -> Result<ListenerConfig, ConfigError> {
    let p = format!("listeners[{i}].");
    let key = |name: &str| format!("{p}{name}");
    let kind = l
        .kind
        .ok_or_else(|| invalid(&key("kind"), "(missing)", KINDS))?;
    let (tls, ws) = match kind.as_str() {
        "tcp" => (false, false),
        "tls" => (true, false),
        "ws" => (false, true),
        "wss" => (true, true),
        other => return Err(invalid(&key("kind"), other, KINDS)),
    };
    let address = l.address.ok_or_else(|| {
        invalid(
            &key("address"),
            "(missing)",
            "an IP address with a port, like 127.0.0.1:8883",
        )
    })?;
    let address = parse_listen(&key("address"), &address)?;
    if !tls {
        for (name, file) in [
            ("cert", &l.cert),
            ("key", &l.key),
            ("client_ca", &l.client_ca),
        ] {
            if let Some(file) = file {
                return Err(invalid(
                    &key(name),
                    file.display(),
                    &format!("no {name} on a {kind} listener (only on tls and wss)"),
                ));
            }
        }
    }
    if let (false, Some(_)) = (ws, &l.allowed_origins) {
        return Err(invalid(
            &key("allowed_origins"),
            format!("{:?}", l.allowed_origins.unwrap_or_default()),
            &format!("no allowed_origins on a {kind} listener (only on ws and wss)"),
        ));
    }
    let allowed_origins = l
        .allowed_origins
        .map(|origins| {
            origins
                .into_iter()
                .map(|o| crate::ws_upgrade::parse_origin(&key("allowed_origins"), &o))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    if let (false, Some(path)) = (ws, &l.path) {
        return Err(invalid(
            &key("path"),
            path,
            &format!("no path on a {kind} listener (only on ws and wss)"),
        ));
    }
    let tls = if tls {
        let cert = l.cert.ok_or_else(|| {
            invalid(
                &key("cert"),
                "(missing)",
                "the PEM file of the server's certificate chain (required on tls and wss)",
            )
        })?;
        let private_key = l.key.ok_or_else(|| {
            invalid(
                &key("key"),
                "(missing)",
                "the PEM file of the certificate's private key (required on tls and wss)",
            )
        })?;
        Some(TlsSettings::load(
            &p,
            &cert,
            &private_key,
            l.client_ca.as_deref(),
        )?)
    } else {
        None
    };
    let path = if ws {
        Some(parse_ws_path(
            &key("path"),
            l.path.as_deref().unwrap_or(DEFAULT_WS_PATH),
        )?)
    } else {
        None
    };
    let transport = match (tls, path) {
        (None, None) => Transport::Tcp,
        (Some(tls), None) => Transport::Tls(tls),
        (None, Some(path)) => Transport::WebSocket { path },
        (Some(tls), Some(path)) => Transport::SecureWebSocket { path, tls },
    };
    Ok(ListenerConfig {
        address,
        transport,
        allowed_origins,
    })
}

/// Whether two listen addresses cannot both be bound: the same port (other than 0, which
/// the system picks) on the same IP, or on the unspecified address of the same family.
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl ServerConfig {
    /// Checks the whole set of listeners: there is at least one, and no two of them (in
    /// `listen` and `listeners`) use the same address.
    ///
    /// [`apply_toml`](Self::apply_toml) and both shells' start-up (`jetmq::server::start`,
    /// `jetmq_mio::MioServer::new`) call this; call it again after changing the listeners by
    /// hand (as the command line does).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the listener at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() && self.listeners.is_empty() {
            return Err(invalid(
                "listen",
                "[]",
                "at least one address in listen or one entry in listeners",
            ));
        }
        let all: Vec<(String, SocketAddr)> = self
            .listen
            .iter()
            .map(|a| ("listen".to_string(), *a))
            .chain(
                self.listeners
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (format!("listeners[{i}].address"), l.address)),
            )
            .collect();
        for (i, (key, addr)) in all.iter().enumerate() {
            if let Some((other, _)) = all[..i].iter().find(|(_, a)| overlap(*a, *addr)) {
                return Err(invalid(
                    key,
                    addr,
                    &format!("an address no other listener uses ({other} already does)"),
                ));
            }
        }
        Ok(())
    }

    /// Applies a TOML configuration file's text on top of this configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a syntax error, an unknown key or an invalid value.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let key = msg
                .split('`')
                .nth(1)
                .map_or_else(|| "(file)".to_string(), str::to_string);
            invalid(
                &key,
                msg.clone(),
                "the keys and values listed in the README's configuration reference",
            )
        })?;
        if let Some(listen) = file.listen {
            if listen.is_empty() && file.listeners.is_none() {
                return Err(invalid("listen", "[]", "at least one address"));
            }
            self.listen = listen
                .iter()
                .map(|l| parse_listen("listen", l))
                .collect::<Result<_, _>>()?;
        } else if file.listeners.is_some() {
            // Listeners described in the file replace the default TCP listener.
            self.listen.clear();
        }
        if let Some(listeners) = file.listeners {
            self.listeners = listeners
                .into_iter()
                .enumerate()
                .map(|(i, l)| listener_from_file(i, l))
                .collect::<Result<_, _>>()?;
        }
        if let Some(dir) = file.data_dir {
            self.data_dir = Some(dir);
        }
        if let Some(listen) = &file.metrics.listen {
            self.metrics = Some(parse_listen("metrics.listen", listen)?);
        }
        match file.sys.interval_secs {
            None => {}
            Some(0) => self.broker.sys_interval = None,
            Some(secs @ 1..=3600) => self.broker.sys_interval = Some(Duration::from_secs(secs)),
            Some(secs) => {
                return Err(invalid(
                    "sys.interval_secs",
                    secs,
                    "0 (off) or 1 to 3600 seconds",
                ));
            }
        }
        if file.mqtt.reject_qos2_publish == Some(true) {
            self.broker.max_qos = self.broker.max_qos.min(QoS::AtLeastOnce);
        }
        if file.mqtt.downgrade_qos2_subscribe == Some(true) {
            self.broker.max_subscription_qos = QoS::AtLeastOnce;
        }
        apply_auth_limits(&file.auth, &mut self.auth_limits)?;
        if let Some(anonymous) = file.auth.allow_anonymous {
            self.auth.allow_anonymous = anonymous;
        }
        if let Some(from) = &file.auth.client_id_from {
            self.broker.client_id_from_username = match from.as_str() {
                "client" => false,
                "username" => true,
                _ => {
                    return Err(invalid(
                        "auth.client_id_from",
                        from,
                        "\"client\" or \"username\"",
                    ))
                }
            };
        }
        self.auth.anonymous = permissions(
            ("auth.anonymous_publish", file.auth.anonymous_publish),
            ("auth.anonymous_subscribe", file.auth.anonymous_subscribe),
        )?;
        for (i, user) in file.auth.users.into_iter().enumerate() {
            if user.username.is_empty() {
                return Err(invalid(
                    &format!("auth.users[{i}].username"),
                    "",
                    "a non-empty user name",
                ));
            }
            let key = |field: &str| format!("auth.users[{i}].{field}");
            if user.password_hash.is_none() && user.scram.is_none() {
                return Err(invalid(
                    &key("password_hash"),
                    "",
                    "a password_hash or a scram credential (or both) for each user",
                ));
            }
            let known = self.auth.users.contains_key(&user.username)
                || self.auth.scram.contains_key(&user.username);
            if known {
                return Err(invalid(
                    &key("username"),
                    &user.username,
                    "a user name not listed before",
                ));
            }
            let granted = permissions(
                (&key("publish"), user.publish),
                (&key("subscribe"), user.subscribe),
            )?;
            if let Some(granted) = granted {
                self.auth.permissions.insert(user.username.clone(), granted);
            }
            if let Some(hash) = user.password_hash {
                if let Err(why) = crate::auth::check_hash(&hash) {
                    // The value is never repeated: it may be a password typed in the wrong
                    // place.
                    return Err(invalid(
                        &key("password_hash"),
                        format!("*** ({} characters)", hash.chars().count()),
                        &format!(
                            "an Argon2 PHC hash as printed by `jetmq hash-password`; this one is {why}"
                        ),
                    ));
                }
                self.auth.users.insert(user.username.clone(), hash);
            }
            if let Some(text) = user.scram {
                let credential = crate::scram::ScramCredential::parse(&text).map_err(|why| {
                    invalid(
                        &key("scram"),
                        format!("*** ({} characters)", text.chars().count()),
                        &format!("the output of `jetmq hash-password --scram`: {why}"),
                    )
                })?;
                if credential.iterations() < crate::scram::MIN_ITERATIONS {
                    return Err(invalid(
                        &key("scram"),
                        credential.redacted(),
                        &format!(
                            "a credential with at least {} iterations (user {:?} has {}); \
                             make a new one with `jetmq hash-password --scram`",
                            crate::scram::MIN_ITERATIONS,
                            user.username,
                            credential.iterations()
                        ),
                    ));
                }
                self.auth.scram.insert(user.username.clone(), credential);
            }
        }
        self.broker.authenticate = !self.auth.is_open();
        if let Some(sync) = file.store.sync.as_deref() {
            self.sync = match sync {
                "always" => jetmq_store::SyncPolicy::Always,
                "never" => jetmq_store::SyncPolicy::Never,
                "interval" => {
                    let ms = file.store.sync_interval_ms.unwrap_or(100);
                    if ms == 0 || ms > 60_000 {
                        return Err(invalid(
                            "store.sync_interval_ms",
                            ms,
                            "1 to 60000 milliseconds",
                        ));
                    }
                    jetmq_store::SyncPolicy::Interval(Duration::from_millis(ms))
                }
                other => {
                    return Err(invalid(
                        "store.sync",
                        other,
                        "\"always\", \"interval\" or \"never\"",
                    ))
                }
            };
        }
        if let Some(nats) = file.nats {
            self.broker.bridge = nats.bridge_policy()?;
            if let Some(nats) = nats.into_config()? {
                self.broker.cluster = if nats.jetstream {
                    Cluster::Fleet
                } else {
                    Cluster::Bridge
                };
                self.nats = Some(nats);
            }
        }
        if let Some(r) = file.redirect {
            let reference = r.server_reference.unwrap_or_default();
            if reference.trim().is_empty() {
                return Err(invalid(
                    "redirect.server_reference",
                    &reference,
                    "one or more servers (host or host:port, space separated) to send clients to",
                ));
            }
            self.broker.redirect = Some(jetmq_core::broker::Redirect {
                server_reference: reference.into(),
                permanent: r.permanent.unwrap_or(false),
            });
        }
        let l = file.limits;
        let b = &mut self.broker;
        if let Some(v) = l.max_connections {
            if v == 0 {
                return Err(invalid("limits.max_connections", v, "1 or more"));
            }
            self.max_connections = v;
        }
        if let Some(v) = l.max_packet_size {
            if !(16..=jetmq_core::codec::MAX_PACKET_SIZE).contains(&v) {
                return Err(invalid(
                    "limits.max_packet_size",
                    v,
                    "16 to 268435460 bytes",
                ));
            }
            b.max_packet_size = v;
        }
        if let Some(v) = l.max_inflight {
            if v == 0 {
                return Err(invalid("limits.max_inflight", v, "1 to 65535"));
            }
            b.max_inflight = v;
        }
        if let Some(v) = l.receive_maximum {
            if v == 0 {
                return Err(invalid("limits.receive_maximum", v, "1 to 65535"));
            }
            b.receive_maximum = v;
        }
        l.apply_overload(b)?;
        l.apply_state_bounds(b)?;
        if let Some(v) = l.max_keep_alive {
            b.max_keep_alive = v;
        }
        if let Some(v) = l.min_keep_alive {
            b.min_keep_alive = v;
        }
        if let Some(v) = l.topic_alias_maximum {
            b.topic_alias_maximum = v;
        }
        if let Some(v) = l.outbound_topic_aliases {
            b.outbound_topic_aliases = v;
        }
        if let Some(v) = l.max_session_expiry_secs {
            if v == 0 {
                return Err(invalid(
                    "limits.max_session_expiry_secs",
                    v,
                    "1 to 4294967295 seconds (4294967295 = never)",
                ));
            }
            b.max_session_expiry = v;
        }
        if b.max_keep_alive != 0 && b.min_keep_alive > b.max_keep_alive {
            return Err(invalid(
                "limits.min_keep_alive",
                b.min_keep_alive,
                "at most limits.max_keep_alive",
            ));
        }
        if let Some(v) = l.connect_timeout_secs {
            b.connect_timeout = up_to_an_hour("limits.connect_timeout_secs", v)?;
        }
        if let Some(v) = l.takeover_limit {
            b.takeover_limit = v;
        }
        if let Some(v) = l.takeover_window_secs {
            b.takeover_window = up_to_an_hour("limits.takeover_window_secs", v)?;
        }
        if let Some(v) = l.max_subscriptions {
            b.max_subscriptions = v;
        }
        if let Some(v) = l.max_retained_messages {
            b.max_retained_messages = v;
        }
        if let Some(v) = l.max_retained_bytes {
            b.max_retained_bytes = v;
        }
        if let Some(v) = l.max_qos {
            b.max_qos = QoS::from_u8(v).ok_or_else(|| invalid("limits.max_qos", v, "0, 1 or 2"))?;
        }
        if let Some(v) = l.max_client_id_len {
            if v < 23 {
                return Err(invalid(
                    "limits.max_client_id_len",
                    v,
                    "23 or more (MQTT requires 23)",
                ));
            }
            b.max_client_id_len = v;
        }
        if let Some(v) = l.max_connections_per_address {
            self.max_connections_per_address = v;
        }
        match l.tcp_keepalive_secs {
            None => {}
            Some(0) => self.tcp_keepalive = None,
            Some(secs @ 1..=7200) => self.tcp_keepalive = Some(Duration::from_secs(secs)),
            Some(secs) => {
                return Err(invalid(
                    "limits.tcp_keepalive_secs",
                    secs,
                    "0 (off) or 1 to 7200 seconds",
                ))
            }
        }
        if let Some(v) = l.max_unsent_bytes {
            if v < 1024 {
                return Err(invalid("limits.max_unsent_bytes", v, "1024 or more"));
            }
            b.max_unsent_bytes = v;
        }
        self.check()
    }
}

impl ServerConfig {
    /// The authentication settings a server started with this configuration decides with.
    #[must_use]
    pub fn auth_source(&self) -> crate::auth::AuthSource {
        self.auth_source
            .clone()
            .unwrap_or_else(|| crate::auth::AuthSource::new(self.auth.clone()))
    }

    /// Reads the configuration again (`cli` and its file) and replaces the authentication
    /// settings in `source` (users, passwords, permissions, anonymous access) with the
    /// file's; what else changed needs a restart. `authenticating`: whether the running broker
    /// asks for decisions at all (a server started open does not, so users added to it
    /// only count after a restart, which the message says).
    ///
    /// # Errors
    ///
    /// The file cannot be read or is invalid: nothing is replaced, and the error says why.
    pub fn reload_auth(
        cli: &CommandLine,
        source: &crate::auth::AuthSource,
        authenticating: bool,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let config = Self::load(cli)?;
        let users = config.auth.users.len().max(config.auth.scram.len());
        let wants = config.broker.authenticate;
        source.replace(config.auth);
        Ok(if wants && !authenticating {
            "the server was started without authentication: the new users and permissions \
             count after a restart"
                .to_owned()
        } else {
            format!("authentication reloaded: {users} users")
        })
    }
    /// Bridges MQTT and NATS subjects through the NATS server at `url` and keeps state in
    /// its JetStream (`key` names where the value came from, for the error); options set by
    /// the file are kept.
    ///
    /// # Errors
    ///
    /// `url` is not `nats://[user:password@]host:port` (or `tls://`).
    pub fn set_nats(&mut self, url: &str, key: &str) -> Result<(), ConfigError> {
        match &mut self.nats {
            // The file's settings stay; the URL replaces its servers (and credentials, TLS
            // when it says so).
            Some(nats) if nats.tls.is_some() => {
                let urls = crate::nats_config::parse_urls(url, key)?;
                nats.addresses = urls.addresses;
                nats.use_url_credentials(urls.user, urls.token);
            }
            Some(nats) => {
                let from_url = crate::nats_config::NatsConfig::from_url(url, key)?;
                nats.addresses = from_url.addresses;
                nats.use_url_credentials(from_url.user, from_url.token);
                nats.tls = from_url.tls;
            }
            None => self.nats = Some(crate::nats_config::NatsConfig::from_url(url, key)?),
        }
        self.broker.cluster = if self.nats.as_ref().is_some_and(|n| n.jetstream) {
            Cluster::Fleet
        } else {
            Cluster::Bridge
        };
        Ok(())
    }

    /// The configuration of a shell started with `cli`: the defaults, then the file, then the
    /// command line, checked.
    ///
    /// # Errors
    ///
    /// The file cannot be read, a value is invalid (naming the key, the value and what is
    /// allowed), or the listeners do not fit together.
    pub fn load(cli: &CommandLine) -> Result<Self, Box<dyn std::error::Error>> {
        let mut config = Self::default();
        if let Some(path) = &cli.config {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!("cannot read the configuration file {}: {e}", path.display())
            })?;
            config.apply_toml(&text)?;
        }
        if !cli.listen.is_empty() {
            config.listen = cli
                .listen
                .iter()
                .map(|l| parse_listen("--listen", l))
                .collect::<Result<_, _>>()?;
        }
        if let Some(dir) = &cli.data_dir {
            config.data_dir = Some(dir.clone());
        }
        config.record.clone_from(&cli.record);
        config.log_pii = cli.log_pii;
        if let Some(url) = &cli.nats {
            config.set_nats(url, "--nats")?;
        }
        crate::nats_config::apply_command_line(&mut config.nats, cli)?;
        config.check()?;
        Ok(config)
    }
}
