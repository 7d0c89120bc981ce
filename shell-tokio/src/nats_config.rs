//! The `[nats]` configuration: the NATS server jetmq bridges subjects with and, unless told
//! otherwise, keeps its state in (JetStream), with the options of that use.

use jetmq_core::broker::bridge_policy::{BridgePolicy, SubjectRules};
use std::path::PathBuf;
use std::sync::Arc;
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
    /// TLS to the NATS server (`tls://` URLs, or `tls = true` and the `tls_*` keys).
    pub tls: Option<NatsTls>,
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

/// How jetmq's connection to NATS is secured: the files it was built from (for messages and
/// comparison) and the rustls client configuration.
#[derive(Debug, Clone)]
pub struct NatsTls {
    /// CA certificates (PEM) that signed the server's certificate; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and its key (PEM), for servers that verify clients.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry; `None`: the host of the address.
    pub server_name: Option<String>,
    /// TLS before anything else (the server's `handshake_first`), instead of after `INFO`.
    pub handshake_first: bool,
    /// The configuration the connection uses.
    pub config: Arc<rustls::ClientConfig>,
}

impl PartialEq for NatsTls {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.ca_file,
            &self.client,
            &self.server_name,
            self.handshake_first,
        ) == (
            &other.ca_file,
            &other.client,
            &other.server_name,
            other.handshake_first,
        )
    }
}

impl Eq for NatsTls {}

impl NatsTls {
    /// TLS verified against the CA certificates of `ca_file` (the system's without it), with
    /// the client certificate `client` when given.
    ///
    /// # Errors
    ///
    /// A file cannot be read or holds no usable certificate or key (the error names the
    /// `nats.tls_*` key).
    pub fn new(
        ca_file: Option<PathBuf>,
        client: Option<(PathBuf, PathBuf)>,
    ) -> Result<Self, ConfigError> {
        let config = crate::tls::client_config(
            "nats.tls_",
            ca_file.as_deref(),
            client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )?;
        Ok(Self {
            ca_file,
            client,
            server_name: None,
            handshake_first: false,
            config,
        })
    }

    /// The name the certificate of the server at `address` (`host:port`) must carry.
    #[must_use]
    pub fn server_name_for<'a>(&'a self, address: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or_else(|| {
            let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
            host.trim_start_matches('[').trim_end_matches(']')
        })
    }
}

/// The addresses, credentials and TLS choice of a URL list.
pub(crate) struct Urls {
    pub(crate) addresses: Vec<String>,
    pub(crate) user: Option<(String, String)>,
    pub(crate) tls: bool,
}

/// The servers of `url` (one URL or several separated by commas); `key` names where it came
/// from in errors.
pub(crate) fn parse_urls(url: &str, key: &str) -> Result<Urls, ConfigError> {
    let mut urls = Urls {
        addresses: Vec::new(),
        user: None,
        tls: false,
    };
    for one in url.split(',').map(str::trim) {
        let address = parse_url(one).map_err(|_| {
            invalid(
                key,
                url,
                "nats://[user:password@]host:port (tls:// for TLS), or several separated by \
                 commas, for example nats://127.0.0.1:4222",
            )
        })?;
        urls.addresses.push(address);
        urls.tls |= one.starts_with("tls://");
        let rest = one
            .strip_prefix("nats://")
            .or_else(|| one.strip_prefix("tls://"))
            .unwrap_or(one);
        if let Some((creds, _)) = rest.rsplit_once('@') {
            urls.user = urls.user.or_else(|| {
                creds
                    .split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            });
        }
    }
    Ok(urls)
}

impl NatsConfig {
    /// The configuration of `url` with the defaults (`tls://` URLs: TLS verified against the
    /// system's CA certificates).
    ///
    /// # Errors
    ///
    /// `url` is not `nats://[user:password@]host:port` (or `tls://`); `key` names where it
    /// came from. TLS without system CA certificates.
    pub fn from_url(url: &str, key: &str) -> Result<Self, ConfigError> {
        let urls = parse_urls(url, key)?;
        let tls = if urls.tls {
            Some(NatsTls::new(None, None)?)
        } else {
            None
        };
        Ok(Self::with_defaults(urls, tls))
    }

    fn with_defaults(urls: Urls, tls: Option<NatsTls>) -> Self {
        Self {
            addresses: urls.addresses,
            user: urls.user,
            token: None,
            tls,
            jetstream: true,
            domain: None,
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1024,
            api_timeout: Duration::from_secs(5),
        }
    }

    /// What jetmq sends in `CONNECT`, naming the connection `name`.
    #[must_use]
    pub fn connect_options(&self, name: &str) -> ConnectOptions {
        ConnectOptions {
            name: Some(name.to_string()),
            user: self.user.as_ref().map(|(u, _)| u.clone()),
            pass: self.user.as_ref().map(|(_, p)| p.clone()),
            auth_token: self.token.clone(),
            tls_required: self.tls.is_some(),
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
    tls: Option<bool>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_server_name: Option<String>,
    tls_handshake_first: Option<bool>,
    jetstream: Option<bool>,
    domain: Option<String>,
    replicas: Option<usize>,
    ack_wait_secs: Option<u64>,
    max_ack_pending: Option<usize>,
    api_timeout_secs: Option<u64>,
    bridge_publish: Option<SubjectRulesFile>,
    bridge_subscribe: Option<SubjectRulesFile>,
}

/// `[nats.bridge_publish]` and `[nats.bridge_subscribe]`: allow and deny lists of NATS
/// subjects the bridge carries (system subjects stay closed whatever they say).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubjectRulesFile {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
}

impl SubjectRulesFile {
    fn rules(&self, key: &str) -> Result<SubjectRules, ConfigError> {
        let patterns = |list: &Option<Vec<String>>, which: &str| {
            list.iter()
                .flatten()
                .map(|p| {
                    if valid_subject_pattern(p) {
                        Ok(p.as_str().into())
                    } else {
                        Err(invalid(
                            &format!("{key}.{which}"),
                            p,
                            "NATS subjects: dot-separated tokens, `*` for one token, `>` last",
                        ))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(SubjectRules {
            allow: patterns(&self.allow, "allow")?,
            deny: patterns(&self.deny, "deny")?,
        })
    }
}

/// Whether `p` is a NATS subject or subscription pattern: non-empty tokens without white
/// space, `*` and `>` as whole tokens, `>` only last.
fn valid_subject_pattern(p: &str) -> bool {
    let tokens: Vec<&str> = p.split('.').collect();
    tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && !t.contains(char::is_whitespace)
            && (*t == "*" || *t == ">" || !t.contains(['*', '>']))
            && (*t != ">" || i + 1 == tokens.len())
    })
}

impl NatsFile {
    /// Which subjects the bridge carries, from `bridge_publish` and `bridge_subscribe`.
    ///
    /// # Errors
    ///
    /// A pattern is no NATS subject.
    pub(crate) fn bridge_policy(&self) -> Result<BridgePolicy, ConfigError> {
        Ok(BridgePolicy {
            publish: self
                .bridge_publish
                .as_ref()
                .map_or(Ok(SubjectRules::default()), |r| {
                    r.rules("nats.bridge_publish")
                })?,
            subscribe: self
                .bridge_subscribe
                .as_ref()
                .map_or(Ok(SubjectRules::default()), |r| {
                    r.rules("nats.bridge_subscribe")
                })?,
        })
    }

    /// The configuration the table describes; `None` without a URL.
    ///
    /// # Errors
    ///
    /// A value is invalid, or options are given without a URL.
    pub(crate) fn into_config(self) -> Result<Option<NatsConfig>, ConfigError> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let urls = parse_urls(url, "nats.url")?;
        let tls = self.tls_settings(urls.tls)?;
        let mut c = NatsConfig::with_defaults(urls, tls);
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

impl NatsFile {
    /// The TLS the table asks for (`tls_url`: a URL said `tls://`).
    fn tls_settings(&self, tls_url: bool) -> Result<Option<NatsTls>, ConfigError> {
        let files = self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.tls_key_file.is_some()
            || self.tls_server_name.is_some()
            || self.tls_handshake_first == Some(true);
        let wanted = match self.tls {
            Some(true) => true,
            Some(false) if tls_url || files => {
                return Err(invalid(
                    "nats.tls",
                    false,
                    "true, or leave it out: a tls:// URL or a nats.tls_* key asks for TLS",
                ))
            }
            Some(false) => false,
            None => tls_url || files,
        };
        if !wanted {
            return Ok(None);
        }
        let client = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "nats.tls_cert_file",
                    "(certificate or key alone)",
                    "both nats.tls_cert_file and nats.tls_key_file, or neither",
                ))
            }
        };
        let mut tls = NatsTls::new(self.tls_ca_file.clone(), client)?;
        if let Some(name) = &self.tls_server_name {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(invalid(
                    "nats.tls_server_name",
                    name,
                    "a DNS name or IP address the server's certificate carries",
                ));
            }
            tls.server_name = Some(name.clone());
        }
        tls.handshake_first = self.tls_handshake_first.unwrap_or(false);
        Ok(Some(tls))
    }
}

/// A `nats://[user:password@]host:port` (or `tls://`) URL's address.
///
/// # Errors
///
/// The URL is not `nats://host:port` (or `tls://host:port`, or `host:port`).
pub fn parse_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("nats://")
        .or_else(|| url.strip_prefix("tls://"))
        .unwrap_or(url);
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
