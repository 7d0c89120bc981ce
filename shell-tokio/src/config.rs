//! Server configuration: listeners, limits and storage, from the command line and an optional
//! TOML file. Unknown keys and invalid values are refused with a message naming the key, the
//! value and what is allowed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use jetmq_core::broker::BrokerConfig;
use jetmq_core::codec::QoS;
use serde::Deserialize;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Addresses to serve MQTT over TCP on.
    pub listen: Vec<SocketAddr>,
    /// Where the embedded store keeps its files; `None` keeps state in memory only.
    pub data_dir: Option<PathBuf>,
    /// The broker's limits and policies.
    pub broker: BrokerConfig,
    /// Seed for the broker's deterministic choices.
    pub seed: u64,
    /// Most simultaneous connections; more are refused at accept.
    pub max_connections: usize,
    /// How long a graceful shutdown waits for clients and store writes.
    pub shutdown_timeout: Duration,
    /// When the embedded store forces its writes to disk.
    pub sync: jetmq_store::SyncPolicy,
    /// A file to record every broker input to, for `jetmq replay`.
    pub record: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            data_dir: Some(PathBuf::from("jetmq-data")),
            broker: BrokerConfig::default(),
            seed: 0x006a_6574_6d71, // "jetmq"
            max_connections: 10_000,
            shutdown_timeout: Duration::from_secs(10),
            sync: jetmq_store::SyncPolicy::Always,
            record: None,
        }
    }
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
    connect_timeout_secs: Option<u64>,
    max_qos: Option<u8>,
    max_client_id_len: Option<usize>,
    max_unsent_bytes: Option<usize>,
}

/// The `[store]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    sync: Option<String>,
    sync_interval_ms: Option<u64>,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<Vec<String>>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    store: StoreFile,
}

/// A configuration value that cannot be used, with what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, as written in the file or on the command line.
    pub key: String,
    /// The value that was given.
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid configuration: {} = {:?}; allowed: {}",
            self.key, self.value, self.allowed
        )
    }
}

impl std::error::Error for ConfigError {}

fn invalid(key: &str, value: impl ToString, allowed: &str) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
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

impl ServerConfig {
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
            if listen.is_empty() {
                return Err(invalid("listen", "[]", "at least one address"));
            }
            self.listen = listen
                .iter()
                .map(|l| parse_listen("listen", l))
                .collect::<Result<_, _>>()?;
        }
        if let Some(dir) = file.data_dir {
            self.data_dir = Some(dir);
        }
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
        if let Some(v) = l.max_queued_messages {
            b.max_queued_messages = v;
        }
        if let Some(v) = l.max_queued_bytes {
            b.max_queued_bytes = v;
        }
        if let Some(v) = l.max_keep_alive {
            b.max_keep_alive = v;
        }
        if let Some(v) = l.connect_timeout_secs {
            if v == 0 || v > 3600 {
                return Err(invalid(
                    "limits.connect_timeout_secs",
                    v,
                    "1 to 3600 seconds",
                ));
            }
            b.connect_timeout = Duration::from_secs(v);
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
        if let Some(v) = l.max_unsent_bytes {
            if v < 1024 {
                return Err(invalid("limits.max_unsent_bytes", v, "1024 or more"));
            }
            b.max_unsent_bytes = v;
        }
        Ok(())
    }
}
