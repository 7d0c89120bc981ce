//! The `[nats]` configuration: the NATS server jetmq bridges subjects with and, unless told
//! otherwise, keeps its state in (JetStream), with the options of that use.

use jetmq_core::broker::bridge_policy::{BridgePolicy, SubjectRules};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jetmq_core::js::jetstream::api::ApiPrefix;
use jetmq_core::js::jetstream::JetStreamConfig;
use jetmq_core::nats::{ConnectOptions, NonceSigner};
use serde::Deserialize;

use crate::config_error::{invalid, ConfigError};

/// The NATS server and how jetmq uses it. Its `Debug` leaves the password and token out.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// The servers (`host:port`), tried in turn when connecting and reconnecting.
    pub addresses: Vec<String>,
    /// User name and password, from the URL (`nats://user:pass@host:port`) or the file.
    pub user: Option<(String, String)>,
    /// An authentication token, from the URL (`nats://token@host:port`) or the file.
    pub token: Option<String>,
    /// A user nkey (`nkey_seed_file`) or user JWT and nkey (`creds_file`): jetmq signs the
    /// server's nonce with it.
    pub key: Option<NatsKey>,
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

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("addresses", &self.addresses)
            .field("user", &self.user.as_ref().map(|(u, _)| (u, "<redacted>")))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("key", &self.key)
            .field("tls", &self.tls)
            .field("jetstream", &self.jetstream)
            .field("domain", &self.domain)
            .field("replicas", &self.replicas)
            .field("ack_wait", &self.ack_wait)
            .field("max_ack_pending", &self.max_ack_pending)
            .field("api_timeout", &self.api_timeout)
            .finish()
    }
}

/// Which kind of file a [`NatsKey`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `nkey_seed_file` / `--nats-nkey`: a user nkey seed alone.
    SeedFile,
    /// `creds_file` / `--nats-creds`: a user JWT and its nkey seed, as `nsc` writes them.
    CredsFile,
}

/// A user's nkey, read from an nkey seed file or a `.creds` file (with the user JWT): jetmq
/// signs the nonce of the server's `INFO` with it (the `nkeys` crate does the signing). Its
/// `Debug` shows the file and the public key only.
#[derive(Clone)]
pub struct NatsKey {
    /// The file it was read from.
    pub path: PathBuf,
    /// What kind of file that is.
    pub source: KeySource,
    /// The user JWT of a `.creds` file.
    pub jwt: Option<String>,
    /// The user's public nkey (`U...`).
    pub public_key: String,
    pair: Arc<nkeys::KeyPair>,
}

impl PartialEq for NatsKey {
    fn eq(&self, other: &Self) -> bool {
        (&self.path, self.source, &self.jwt, &self.public_key)
            == (&other.path, other.source, &other.jwt, &other.public_key)
    }
}

impl Eq for NatsKey {}

impl std::fmt::Debug for NatsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsKey")
            .field("path", &self.path)
            .field("source", &self.source)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// Signs with a user's key pair.
struct KeySigner(Arc<nkeys::KeyPair>);

impl NonceSigner for KeySigner {
    fn sign(&self, nonce: &[u8]) -> String {
        // A key read from a seed always signs; an empty signature would only be refused.
        self.0
            .sign(nonce)
            .map(|sig| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))
            .unwrap_or_default()
    }
}

/// What the remedy for a bad key file says, by kind of file.
const SEED_REMEDY: &str = "point it at a file holding a user nkey seed (SU..., as `nk -gen user` \
                           or nsc wrote it) whose public key the NATS server lists in its users";
const CREDS_REMEDY: &str = "point it at the .creds file nsc wrote for jetmq's user (`nsc generate \
                            creds -a <account> -n <user>`): a user JWT and its nkey seed";

impl NatsKey {
    /// The user nkey seed in the file at `path`; `key` names the setting in errors.
    ///
    /// # Errors
    ///
    /// The file cannot be read or holds no user seed. The error names `key`, the file and
    /// the remedy, never the file's content.
    pub fn from_seed_file(path: &Path, key: &str) -> Result<Self, ConfigError> {
        let text = read_key_file(path, key, SEED_REMEDY)?;
        let fail = |why: &str| key_error(key, path, why, SEED_REMEDY);
        let seed = decorated_blocks(&text)
            .into_iter()
            .find(|(label, _)| label.contains("SEED"))
            .map(|(_, body)| body)
            .or_else(|| text.lines().map(str::trim).find(|l| !l.is_empty()))
            .ok_or_else(|| fail("the file is empty"))?;
        let pair = user_pair(seed).map_err(|why| fail(&why))?;
        Ok(Self {
            path: path.to_path_buf(),
            source: KeySource::SeedFile,
            jwt: None,
            public_key: pair.public_key(),
            pair: Arc::new(pair),
        })
    }

    /// The user JWT and nkey seed of the `.creds` file at `path`; `key` names the setting in
    /// errors.
    ///
    /// # Errors
    ///
    /// The file cannot be read, lacks either part, its JWT is not a user's, has expired or
    /// belongs to another key than the seed's. The error names `key`, the file and the
    /// remedy, never the file's content.
    pub fn from_creds_file(path: &Path, key: &str) -> Result<Self, ConfigError> {
        let text = read_key_file(path, key, CREDS_REMEDY)?;
        let fail = |why: &str| key_error(key, path, why, CREDS_REMEDY);
        let blocks = decorated_blocks(&text);
        let find = |what: &str| {
            blocks
                .iter()
                .find(|(label, _)| label.contains(what))
                .map(|(_, body)| *body)
        };
        let jwt = find("JWT")
            .ok_or_else(|| fail("no user JWT between -----BEGIN NATS USER JWT----- lines"))?;
        let seed = find("SEED")
            .ok_or_else(|| fail("no nkey seed between -----BEGIN USER NKEY SEED----- lines"))?;
        let claims = jwt_claims(jwt).ok_or_else(|| fail("its user JWT does not decode"))?;
        let kind = claims
            .get("nats")
            .and_then(|n| n.get("type"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        if kind != "user" {
            return Err(fail(&format!(
                "its JWT is {}, not a user's",
                if kind.is_empty() {
                    "of no known type"
                } else {
                    kind
                }
            )));
        }
        let pair = user_pair(seed).map_err(|why| fail(&why))?;
        let public_key = pair.public_key();
        if claims.get("sub").and_then(serde_json::Value::as_str) != Some(public_key.as_str()) {
            return Err(fail(
                "its nkey seed is not the key of its JWT's user (the two parts come from \
                 different users)",
            ));
        }
        let expires = claims.get("exp").and_then(serde_json::Value::as_u64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(at) = expires.filter(|&at| at > 0 && at <= now) {
            return Err(fail(&format!(
                "its user JWT expired (at {at}, Unix time): have nsc issue a new one"
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            source: KeySource::CredsFile,
            jwt: Some(jwt.to_string()),
            public_key,
            pair: Arc::new(pair),
        })
    }

    /// What signs the server's nonce with this key.
    #[must_use]
    pub fn signer(&self) -> Arc<dyn NonceSigner> {
        Arc::new(KeySigner(Arc::clone(&self.pair)))
    }
}

/// The text of the key file at `path` for setting `key`.
fn read_key_file(path: &Path, key: &str, remedy: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied: jetmq's user cannot read it".to_owned()
            }
            std::io::ErrorKind::InvalidData => "it is not text".to_owned(),
            _ => format!("cannot read it: {e}"),
        };
        key_error(key, path, &why, remedy)
    })
}

/// The error of a key file: the setting, the file, what is wrong and the remedy.
fn key_error(key: &str, path: &Path, why: &str, remedy: &str) -> ConfigError {
    invalid(
        key,
        path.display(),
        &format!("a readable key file, and this one is not ({why}); {remedy}"),
    )
}

/// The key pair of a user seed, or why it is none (never quoting the seed).
fn user_pair(seed: &str) -> Result<nkeys::KeyPair, String> {
    let pair = nkeys::KeyPair::from_seed(seed.trim())
        .map_err(|_| "its nkey seed does not decode (a user seed starts with SU)".to_owned())?;
    let public = pair.public_key();
    let kind = match public.chars().next() {
        Some('U') => return Ok(pair),
        Some('A') => "an account's",
        Some('O') => "an operator's",
        Some('N') => "a server's",
        Some('C') => "a cluster's",
        _ => "not a user's",
    };
    Err(format!("its seed is {kind}, not a user's"))
}

/// The `-----BEGIN <label>-----` blocks of a decorated key file: each label with the first
/// non-empty line after it.
fn decorated_blocks(text: &str) -> Vec<(&str, &str)> {
    let mut blocks = Vec::new();
    let mut label: Option<&str> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("---") {
            label = line
                .trim_matches('-')
                .trim()
                .strip_prefix("BEGIN ")
                .map(str::trim);
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(l) = label.take() {
            blocks.push((l, line));
        }
    }
    blocks
}

/// The claims of a JWT (its middle part, base64url JSON), unverified: the server verifies.
fn jwt_claims(jwt: &str) -> Option<serde_json::Value> {
    let mut parts = jwt.split('.');
    let (Some(_), Some(body), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let engines = [
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD,
    ];
    let bytes = engines.iter().find_map(|e| e.decode(body).ok())?;
    serde_json::from_slice(&bytes).ok()
}

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
    /// `nats://token@host:port`: a token (user information without a colon).
    pub(crate) token: Option<String>,
    pub(crate) tls: bool,
}

/// `url` with any user information replaced by `***`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            let (scheme, rest) = one
                .find("://")
                .map_or(("", one), |at| (&one[..at + 3], &one[at + 3..]));
            match rest.rsplit_once('@') {
                Some((_, hostport)) => format!("{scheme}***@{hostport}"),
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The servers of `url` (one URL or several separated by commas); `key` names where it came
/// from in errors.
pub(crate) fn parse_urls(url: &str, key: &str) -> Result<Urls, ConfigError> {
    let mut urls = Urls {
        addresses: Vec::new(),
        user: None,
        token: None,
        tls: false,
    };
    for one in url.split(',').map(str::trim) {
        let address = parse_url(one).map_err(|_| {
            invalid(
                key,
                redact_url(url),
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
            match creds.split_once(':') {
                Some((u, p)) => {
                    urls.user = urls.user.take().or(Some((u.to_string(), p.to_string())));
                }
                None if !creds.is_empty() => {
                    urls.token = urls.token.take().or(Some(creds.to_string()));
                }
                None => {}
            }
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
    /// `url` is not `nats://[user:password@]host:port` (or `nats://token@host:port`, or
    /// `tls://`); `key` names where it came from. TLS without system CA certificates.
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
            token: urls.token,
            key: None,
            tls,
            jetstream: true,
            domain: None,
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1024,
            api_timeout: Duration::from_secs(5),
        }
    }

    /// What jetmq sends in `CONNECT`, naming the connection `name` (the signature of the
    /// server's nonce is added at each handshake by [`signer`](Self::signer)'s).
    #[must_use]
    pub fn connect_options(&self, name: &str) -> ConnectOptions {
        let key = self.key.as_ref();
        ConnectOptions {
            name: Some(name.to_string()),
            user: self.user.as_ref().map(|(u, _)| u.clone()),
            pass: self.user.as_ref().map(|(_, p)| p.clone()),
            auth_token: self.token.clone(),
            jwt: key.and_then(|k| k.jwt.clone()),
            nkey: key
                .filter(|k| k.jwt.is_none())
                .map(|k| k.public_key.clone()),
            tls_required: self.tls.is_some(),
            ..ConnectOptions::default()
        }
    }

    /// What signs the server's nonce, with an nkey or a `.creds` file.
    #[must_use]
    pub fn signer(&self) -> Option<Arc<dyn NonceSigner>> {
        self.key.as_ref().map(NatsKey::signer)
    }

    /// The credentials jetmq presents, as the settings that gave them and what to check when
    /// the server refuses them (for messages: no secret in it).
    #[must_use]
    pub fn credentials_remedy(&self) -> String {
        let cert = self
            .tls
            .as_ref()
            .and_then(|t| t.client.as_ref())
            .map(|(c, _)| c.display().to_string());
        let what = if let Some(key) = &self.key {
            match key.source {
                KeySource::SeedFile => format!(
                    "nats.nkey_seed_file (--nats-nkey) = {} holds user {}: the server must list \
                     it among its users' nkeys",
                    key.path.display(),
                    key.public_key
                ),
                KeySource::CredsFile => format!(
                    "nats.creds_file (--nats-creds) = {} holds user {}: the server must trust \
                     its operator and resolve its account, and the user must be neither \
                     expired nor revoked (nsc describe user)",
                    key.path.display(),
                    key.public_key
                ),
            }
        } else if let Some((user, _)) = &self.user {
            format!(
                "nats.user and nats.password (or user:password@ in the URL) give user {user:?}: \
                 check both against the server's authorization users"
            )
        } else if self.token.is_some() {
            "nats.token (or token@ in the URL) gives a token: check it against the server's \
             authorization token"
                .to_owned()
        } else if let Some(cert) = &cert {
            return format!(
                "jetmq presented only the TLS client certificate of nats.tls_cert_file = {cert}: \
                 the server must map it to a user (tls {{ verify_and_map: true }}), or set \
                 nats.user and nats.password, nats.token, nats.nkey_seed_file or \
                 nats.creds_file"
            );
        } else {
            return "jetmq presented no credentials: set nats.user and nats.password, \
                    nats.token, nats.nkey_seed_file (--nats-nkey) or nats.creds_file \
                    (--nats-creds) as the server's authorization wants"
                .to_owned();
        };
        match cert {
            Some(cert) => format!(
                "{what} (jetmq also presents the TLS client certificate of nats.tls_cert_file = \
                 {cert})"
            ),
            None => what,
        }
    }

    /// The credentials settings that are given: at most one may be.
    fn credential_settings(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if self.user.is_some() {
            given.push("nats.user/nats.password");
        }
        if self.token.is_some() {
            given.push("nats.token");
        }
        match self.key.as_ref().map(|k| k.source) {
            Some(KeySource::SeedFile) => given.push("nats.nkey_seed_file"),
            Some(KeySource::CredsFile) => given.push("nats.creds_file"),
            None => {}
        }
        given
    }

    /// Checks that one way of authenticating is configured at most (a TLS client certificate
    /// goes with any).
    ///
    /// # Errors
    ///
    /// Two or more are, naming them.
    pub fn check_credentials(&self) -> Result<(), ConfigError> {
        let given = self.credential_settings();
        if given.len() > 1 {
            return Err(invalid(
                given[0],
                format!("given with {}", given[1..].join(" and ")),
                "one way of authenticating to NATS: user and password, a token, an nkey seed \
                 file or a .creds file (a TLS client certificate goes with any)",
            ));
        }
        Ok(())
    }

    /// Authenticates with the key of `source`'s kind in the file at `path` instead of any
    /// credentials set before (the command line's `--nats-nkey` and `--nats-creds`, named by
    /// `key`).
    ///
    /// # Errors
    ///
    /// The file does not hold such a key.
    pub fn use_key_file(
        &mut self,
        path: &Path,
        source: KeySource,
        key: &str,
    ) -> Result<(), ConfigError> {
        let loaded = match source {
            KeySource::SeedFile => NatsKey::from_seed_file(path, key)?,
            KeySource::CredsFile => NatsKey::from_creds_file(path, key)?,
        };
        self.user = None;
        self.token = None;
        self.key = Some(loaded);
        Ok(())
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

impl NatsConfig {
    /// The credentials of a URL given on the command line replace those of the file, when it
    /// has any.
    pub(crate) fn use_url_credentials(
        &mut self,
        user: Option<(String, String)>,
        token: Option<String>,
    ) {
        if user.is_none() && token.is_none() {
            return;
        }
        self.user = user;
        self.token = token;
        self.key = None;
    }
}

/// The command line's NATS options (`--nats-creds`, `--nats-nkey`, `--nats-tls-*`) on top of
/// the configuration so far (the file's and `--nats`'s): they override the file.
///
/// # Errors
///
/// An option without a NATS server, both key files at once, or a file that does not hold
/// what the option wants.
pub(crate) fn apply_command_line(
    nats: &mut Option<NatsConfig>,
    cli: &crate::command_line::CommandLine,
) -> Result<(), ConfigError> {
    let keys = [
        ("--nats-creds", &cli.nats_creds, KeySource::CredsFile),
        ("--nats-nkey", &cli.nats_nkey, KeySource::SeedFile),
    ];
    let tls_given =
        cli.nats_tls_ca.is_some() || cli.nats_tls_cert.is_some() || cli.nats_tls_key.is_some();
    let Some(config) = nats.as_mut() else {
        if let Some((key, _, _)) = keys.iter().find(|(_, v, _)| v.is_some()) {
            return Err(invalid(
                key,
                "(no NATS server)",
                "--nats URL or [nats] url with it",
            ));
        }
        if tls_given {
            return Err(invalid(
                "--nats-tls-ca",
                "(no NATS server)",
                "--nats URL or [nats] url with it",
            ));
        }
        return Ok(());
    };
    if cli.nats_creds.is_some() && cli.nats_nkey.is_some() {
        return Err(invalid(
            "--nats-nkey",
            "given with --nats-creds",
            "one of them: a .creds file holds its nkey seed itself",
        ));
    }
    for (key, path, source) in keys {
        if let Some(path) = path {
            let url_credentials = cli
                .nats
                .as_deref()
                .and_then(|u| parse_urls(u, "--nats").ok())
                .is_some_and(|u| u.user.is_some() || u.token.is_some());
            if url_credentials {
                return Err(invalid(
                    key,
                    "given with credentials in --nats",
                    "one way of authenticating: leave user:password@ or token@ out of --nats",
                ));
            }
            config.use_key_file(path, source, key)?;
        }
    }
    if tls_given {
        let client = match (&cli.nats_tls_cert, &cli.nats_tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => config.tls.as_ref().and_then(|t| t.client.clone()),
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "--nats-tls-cert",
                    "(certificate or key alone)",
                    "both --nats-tls-cert and --nats-tls-key, or neither",
                ))
            }
        };
        let ca = cli
            .nats_tls_ca
            .clone()
            .or_else(|| config.tls.as_ref().and_then(|t| t.ca_file.clone()));
        let mut tls = NatsTls::new(ca, client)?;
        if let Some(old) = &config.tls {
            tls.server_name.clone_from(&old.server_name);
            tls.handshake_first = old.handshake_first;
        }
        config.tls = Some(tls);
    }
    config.check_credentials()
}

/// The `[nats]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NatsFile {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    nkey_seed_file: Option<PathBuf>,
    creds_file: Option<PathBuf>,
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
        if let Some(token) = self.token {
            c.token = Some(token);
        }
        if let Some(path) = &self.nkey_seed_file {
            c.key = Some(NatsKey::from_seed_file(path, "nats.nkey_seed_file")?);
        }
        if let Some(path) = &self.creds_file {
            if c.key.is_some() {
                return Err(invalid(
                    "nats.nkey_seed_file",
                    "given with nats.creds_file",
                    "one of them: a .creds file holds its nkey seed itself",
                ));
            }
            c.key = Some(NatsKey::from_creds_file(path, "nats.creds_file")?);
        }
        c.check_credentials()?;
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

/// A `nats://[user:password@]host:port` (or `nats://token@`, or `tls://`) URL's address.
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
            "{} is not a NATS URL: expected nats://host:port, for example nats://127.0.0.1:4222",
            redact_url(url)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_a_token_and_never_show_credentials_in_messages() {
        let c = NatsConfig::from_url("nats://s3cret-t0ken@h:4222", "test").expect("a URL");
        assert_eq!(c.token.as_deref(), Some("s3cret-t0ken"));
        assert_eq!(c.user, None);
        assert_eq!(
            redact_url("nats://u:pw@a:1, tls://tok@b:2,c:3"),
            "nats://***@a:1, tls://***@b:2, c:3"
        );
        let e = NatsConfig::from_url("nats://u:pw-secret@h", "test").expect_err("no port");
        assert!(!e.to_string().contains("pw-secret"), "{e}");
        let e = parse_url("nats://u:pw-secret@h").expect_err("no port");
        assert!(!e.contains("pw-secret"), "{e}");
    }

    #[test]
    fn debug_leaves_secrets_out() {
        let mut c = NatsConfig::from_url("nats://u:pw-secret@h:4222", "test").expect("a URL");
        c.token = Some("tok-secret".into());
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("pw-secret") && !debug.contains("tok-secret"),
            "{debug}"
        );
        assert!(debug.contains("\"u\""), "{debug}");
    }

    #[test]
    fn creds_files_are_read_block_by_block() {
        let text =
            "-----BEGIN NATS USER JWT-----\neyJa.eyJb.c2ln\n------END NATS USER JWT------\n\n\
                    ************************* IMPORTANT *************************\n\
                    NKEY Seed printed below can be used to sign and prove identity.\n\n\
                    -----BEGIN USER NKEY SEED-----\nSUABC\n------END USER NKEY SEED------\n";
        assert_eq!(
            decorated_blocks(text),
            [
                ("NATS USER JWT", "eyJa.eyJb.c2ln"),
                ("USER NKEY SEED", "SUABC")
            ]
        );
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"UX","nats":{"type":"user"}}"#);
        let claims = jwt_claims(&format!("h.{body}.s")).expect("claims");
        assert_eq!(claims["sub"], "UX");
        assert!(jwt_claims("not-a-jwt").is_none());
    }

    #[test]
    fn a_seed_signs_the_nonce_as_nats_verifies_it() {
        let pair = nkeys::KeyPair::new_user();
        let dir = std::env::temp_dir().join(format!("jetmq-nkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("user.nk");
        std::fs::write(&path, format!("{}\n", pair.seed().expect("seed"))).expect("write");
        let key = NatsKey::from_seed_file(&path, "nats.nkey_seed_file").expect("a user seed");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(key.public_key, pair.public_key());
        let sig = key.signer().sign(b"nonce");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .expect("base64url");
        pair.verify(b"nonce", &raw).expect("a valid signature");
        let c = NatsConfig {
            key: Some(key),
            ..NatsConfig::from_url("nats://h:4222", "test").expect("a URL")
        };
        let options = c.connect_options("jetmq");
        assert_eq!(options.nkey.as_deref(), Some(pair.public_key().as_str()));
        assert!(options.jwt.is_none() && options.sig.is_none());
        assert!(!format!("{c:?}").contains(&pair.seed().expect("seed")));
    }

    #[test]
    fn the_command_line_names_its_nats_options() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: crate::command_line::CommandLine,
        }
        let cli = Cli::try_parse_from([
            "jetmq",
            "--nats",
            "nats://h:4222",
            "--nats-creds",
            "/a.creds",
            "--nats-nkey",
            "/b.nk",
            "--nats-tls-ca",
            "/ca.pem",
            "--nats-tls-cert",
            "/c.pem",
            "--nats-tls-key",
            "/c.key",
        ])
        .expect("the options parse");
        let s = cli.serve;
        assert_eq!(s.nats_creds.as_deref(), Some(Path::new("/a.creds")));
        assert_eq!(s.nats_nkey.as_deref(), Some(Path::new("/b.nk")));
        assert_eq!(s.nats_tls_ca.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(s.nats_tls_cert.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(s.nats_tls_key.as_deref(), Some(Path::new("/c.key")));
        // Both key files at once are refused.
        let mut config = Some(NatsConfig::from_url("nats://h:4222", "test").expect("a URL"));
        let e = apply_command_line(&mut config, &s).expect_err("two key files");
        assert!(e.to_string().contains("--nats-nkey"), "{e}");
    }
}
