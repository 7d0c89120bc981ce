//! The `[nats]` configuration: the NATS server jetmq bridges subjects with and, unless told
//! otherwise, keeps its state in (JetStream), with the options of that use.

use std::time::Duration;

use jetmq_core::js::jetstream::api::ApiPrefix;
use jetmq_core::js::jetstream::JetStreamConfig;
use jetmq_core::nats::ConnectOptions;
use serde::Deserialize;

use crate::config::{invalid, ConfigError};

/// The NATS server and how jetmq uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// The servers (`host:port`), tried in turn when connecting and reconnecting.
    pub addresses: Vec<String>,
    /// User name and password, from the URL (`nats://user:pass@host:port`) or the file.
    pub user: Option<(String, String)>,
    /// An authentication token.
    pub token: Option<String>,
    /// Keep sessions, retained and queued messages in JetStream (the default); `false`
    /// bridges subjects only and keeps state in the embedded store.
    pub jetstream: bool,
    /// The JetStream domain, if the streams live in one.
    pub domain: Option<String>,
    /// Copies of each stream jetmq creates (1, or 3 on a cluster of three).
    pub replicas: usize,
    /// How long a handed-out queued message may stay unacknowledged before JetStream hands
    /// it out again.
    pub ack_wait: Duration,
    /// The most queued messages a session has handed out and not had acknowledged.
    pub max_ack_pending: usize,
    /// How long a JetStream request may take.
    pub api_timeout: Duration,
}

impl NatsConfig {
    /// The configuration of `url` with the defaults.
    ///
    /// # Errors
    ///
    /// `url` is not `nats://[user:password@]host:port`; `key` names where it came from.
    pub fn from_url(url: &str, key: &str) -> Result<Self, ConfigError> {
        let mut addresses = Vec::new();
        let mut user = None;
        for one in url.split(',').map(str::trim) {
            let address = parse_url(one).map_err(|_| {
                invalid(
                    key,
                    url,
                    "nats://[user:password@]host:port, or several separated by commas, for \
                     example nats://127.0.0.1:4222",
                )
            })?;
            addresses.push(address);
            let rest = one.strip_prefix("nats://").unwrap_or(one);
            if let Some((creds, _)) = rest.rsplit_once('@') {
                user = user.or_else(|| {
                    creds
                        .split_once(':')
                        .map(|(u, p)| (u.to_string(), p.to_string()))
                });
            }
        }
        Ok(Self {
            addresses,
            user,
            token: None,
            jetstream: true,
            domain: None,
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1024,
            api_timeout: Duration::from_secs(5),
        })
    }

    /// What jetmq sends in `CONNECT`, naming the connection `name`.
    #[must_use]
    pub fn connect_options(&self, name: &str) -> ConnectOptions {
        ConnectOptions {
            name: Some(name.to_string()),
            user: self.user.as_ref().map(|(u, _)| u.clone()),
            pass: self.user.as_ref().map(|(_, p)| p.clone()),
            auth_token: self.token.clone(),
            ..ConnectOptions::default()
        }
    }

    /// The servers, for messages: `a:4222, b:4222`.
    #[must_use]
    pub fn address_list(&self) -> String {
        self.addresses.join(", ")
    }

    /// The JetStream executor's configuration, replies on `inbox`.
    #[must_use]
    pub fn jetstream_config(&self, inbox: String) -> JetStreamConfig {
        JetStreamConfig {
            api: ApiPrefix::new(self.domain.as_deref()),
            inbox,
            replicas: self.replicas,
            ack_wait: self.ack_wait,
            max_ack_pending: self.max_ack_pending,
            api_timeout: self.api_timeout,
        }
    }
}

/// The `[nats]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NatsFile {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    jetstream: Option<bool>,
    domain: Option<String>,
    replicas: Option<usize>,
    ack_wait_secs: Option<u64>,
    max_ack_pending: Option<usize>,
    api_timeout_secs: Option<u64>,
}

impl NatsFile {
    /// The configuration the table describes; `None` without a URL.
    ///
    /// # Errors
    ///
    /// A value is invalid, or options are given without a URL.
    pub(crate) fn into_config(self) -> Result<Option<NatsConfig>, ConfigError> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let mut c = NatsConfig::from_url(url, "nats.url")?;
        match (self.user, self.password) {
            (Some(u), Some(p)) => c.user = Some((u, p)),
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "nats.user",
                    "(user or password alone)",
                    "both nats.user and nats.password, or neither",
                ))
            }
        }
        c.token = self.token;
        c.jetstream = self.jetstream.unwrap_or(true);
        if let Some(d) = self.domain {
            if d.is_empty() || d.contains(['.', '*', '>', ' ']) {
                return Err(invalid(
                    "nats.domain",
                    &d,
                    "a JetStream domain name (no '.', '*', '>' or spaces)",
                ));
            }
            c.domain = Some(d);
        }
        if let Some(r) = self.replicas {
            if !(1..=5).contains(&r) {
                return Err(invalid("nats.replicas", r, "1 to 5"));
            }
            c.replicas = r;
        }
        if let Some(s) = self.ack_wait_secs {
            if s == 0 {
                return Err(invalid("nats.ack_wait_secs", s, "at least 1"));
            }
            c.ack_wait = Duration::from_secs(s);
        }
        if let Some(n) = self.max_ack_pending {
            if n == 0 {
                return Err(invalid("nats.max_ack_pending", n, "at least 1"));
            }
            c.max_ack_pending = n;
        }
        if let Some(s) = self.api_timeout_secs {
            if s == 0 {
                return Err(invalid("nats.api_timeout_secs", s, "at least 1"));
            }
            c.api_timeout = Duration::from_secs(s);
        }
        Ok(Some(c))
    }
}

/// A `nats://[user:password@]host:port` URL's address.
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
