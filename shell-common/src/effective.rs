//! The effective configuration as TOML: every setting of the configuration file with the
//! value a server started with it would use, defaults included, secrets masked. `jetmq
//! check-config` and `jetmq-mio check-config` print it.
//!
//! The text is the configuration file's own format, so an operator can paste it back: a
//! setting that is not set (an optional one, such as `[metrics] listen`) is a comment saying
//! so, and what would be a secret is `***` ([`MASK`]): password hashes, SCRAM credentials, the
//! NATS password and token. Key files (TLS private keys, nkey seed and `.creds` files) are
//! named by path, never read here. Settings of the command line alone (`--log-level`,
//! `--record`, ...) come first, as comments.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use jetmq_core::broker::bridge_policy::SubjectRules;
use jetmq_core::broker::{Overflow, Permissions};
use jetmq_core::codec::QoS;

use crate::command_line::CommandLine;
use crate::config::{ServerConfig, Transport};
use crate::nats_config::{KeySource, NatsConfig};

/// What a secret is shown as.
pub const MASK: &str = "***";

/// `config` (as [`ServerConfig::load`] made it from `cli`) as a TOML configuration file, with
/// the command line's own settings as comments at the top.
#[must_use]
pub fn render(config: &ServerConfig, cli: &CommandLine) -> String {
    let mut out = Toml::default();
    out.comment(
        "The effective configuration: every setting with the value the server uses, defaults \
         included.",
    );
    out.comment(&format!(
        "Secrets are shown as {MASK}: put them back before using this as a configuration file."
    ));
    out.comment(&format!(
        "Command line only: --log-level {} --log-format {} --log-pii {} --record {}",
        cli.log_level,
        cli.log_format.name(),
        config.log_pii,
        config
            .record
            .as_deref()
            .map_or_else(|| "(off)".to_owned(), |p| p.display().to_string()),
    ));
    out.blank();
    top_level(&mut out, config);
    limits(&mut out, config);
    store(&mut out, config);
    out.table("sys");
    out.key(
        "interval_secs",
        config.broker.sys_interval.map_or(0, |d| d.as_secs()),
    );
    out.table("metrics");
    match config.metrics {
        Some(addr) => out.string("listen", &addr.to_string()),
        None => out.unset("listen", "no metrics endpoint"),
    }
    out.table("mqtt");
    out.key(
        "reject_qos2_publish",
        config.broker.max_qos < QoS::ExactlyOnce,
    );
    out.key(
        "downgrade_qos2_subscribe",
        config.broker.max_subscription_qos < QoS::ExactlyOnce,
    );
    match &config.broker.redirect {
        Some(r) => {
            out.table("redirect");
            out.string("server_reference", &r.server_reference);
            out.key("permanent", r.permanent);
        }
        None => {
            out.blank();
            out.comment("[redirect]: not set (clients are served here)");
        }
    }
    auth(&mut out, config);
    match &config.nats {
        Some(nats) => self::nats(&mut out, nats, config),
        None => {
            out.blank();
            out.comment("[nats]: not set (no NATS: no bridge, state in the embedded store)");
        }
    }
    out.text
}

/// `listen`, `data_dir` and the `[[listeners]]`.
fn top_level(out: &mut Toml, config: &ServerConfig) {
    out.list(
        "listen",
        config.listen.iter().map(ToString::to_string).collect(),
    );
    match &config.data_dir {
        Some(dir) => out.path("data_dir", dir),
        None => out.unset("data_dir", "state in memory only"),
    }
    if config.listeners.is_empty() {
        out.blank();
        out.comment("[[listeners]]: none besides listen");
    }
    for l in &config.listeners {
        out.blank();
        out.line("[[listeners]]");
        let (kind, tls, path) = match &l.transport {
            Transport::Tcp => ("tcp", None, None),
            Transport::Tls(tls) => ("tls", Some(tls), None),
            Transport::WebSocket { path } => ("ws", None, Some(path)),
            Transport::SecureWebSocket { path, tls } => ("wss", Some(tls), Some(path)),
        };
        out.string("kind", kind);
        out.string("address", &l.address.to_string());
        if let Some(tls) = tls {
            out.path("cert", tls.cert());
            out.path("key", tls.key());
            match tls.client_ca() {
                Some(ca) => out.path("client_ca", ca),
                None => out.unset("client_ca", "no client certificates asked for"),
            }
        }
        if let Some(path) = path {
            out.string("path", path);
            match &l.allowed_origins {
                Some(origins) => out.list("allowed_origins", origins.clone()),
                None => out.unset(
                    "allowed_origins",
                    "requests without Origin and pages of the broker's own host",
                ),
            }
        }
    }
}

/// The `[limits]` table, in the order of the README's reference.
fn limits(out: &mut Toml, config: &ServerConfig) {
    let b = &config.broker;
    out.table("limits");
    out.key("max_connections", config.max_connections);
    out.key("max_packet_size", b.max_packet_size);
    out.key("max_inflight", b.max_inflight);
    out.key("receive_maximum", b.receive_maximum);
    out.key("max_queued_messages", b.max_queued_messages);
    out.key("max_queued_bytes", b.max_queued_bytes);
    out.string(
        "overflow",
        match b.overflow {
            Overflow::Lossless => "lossless",
            Overflow::Drop => "drop",
        },
    );
    out.key("max_total_queued_bytes", b.max_total_queued_bytes);
    out.key("slow_consumer_timeout_secs", secs(b.slow_consumer_timeout));
    out.key("max_keep_alive", b.max_keep_alive);
    out.key("min_keep_alive", b.min_keep_alive);
    out.key("topic_alias_maximum", b.topic_alias_maximum);
    out.key("outbound_topic_aliases", b.outbound_topic_aliases);
    out.key("max_session_expiry_secs", b.max_session_expiry);
    out.key("connect_timeout_secs", secs(b.connect_timeout));
    out.key("takeover_limit", b.takeover_limit);
    out.key("takeover_window_secs", secs(b.takeover_window));
    out.key("max_subscriptions", b.max_subscriptions);
    out.key("max_retained_messages", b.max_retained_messages);
    out.key("max_retained_bytes", b.max_retained_bytes);
    out.key("max_qos", b.max_qos as u8);
    out.key("max_client_id_len", b.max_client_id_len);
    out.key("max_unsent_bytes", b.max_unsent_bytes);
    out.key("max_user_properties", b.max_user_properties);
    out.key("max_user_property_bytes", b.max_user_property_bytes);
    out.key("max_sessions", b.max_sessions);
    out.key("max_sessions_per_user", b.max_sessions_per_user);
    out.key("max_topic_levels", b.max_topic_levels);
    out.key("max_idle_secs", b.max_idle.map_or(0, secs));
    out.key(
        "max_connections_per_address",
        config.max_connections_per_address,
    );
    out.key("tcp_keepalive_secs", config.tcp_keepalive.map_or(0, secs));
}

/// The `[store]` table.
fn store(out: &mut Toml, config: &ServerConfig) {
    out.table("store");
    let (sync, interval) = match config.sync {
        jetmq_store::SyncPolicy::Always => ("always", None),
        jetmq_store::SyncPolicy::Never => ("never", None),
        jetmq_store::SyncPolicy::Interval(every) => ("interval", Some(every)),
    };
    out.string("sync", sync);
    // The interval counts only with "interval"; otherwise the default it would have.
    let ms = interval.map_or(100, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    out.key("sync_interval_ms", ms);
}

/// The `[auth]` table and its `[[auth.users]]`, passwords and SCRAM credentials masked.
fn auth(out: &mut Toml, config: &ServerConfig) {
    let (a, limits) = (&config.auth, &config.auth_limits);
    out.table("auth");
    out.key("allow_anonymous", a.allow_anonymous);
    permissions(
        out,
        ("anonymous_publish", "anonymous_subscribe"),
        a.anonymous.as_ref(),
    );
    out.string(
        "client_id_from",
        if config.broker.client_id_from_username {
            "username"
        } else {
            "client"
        },
    );
    out.key("threads", limits.threads);
    out.key("queue", limits.queue);
    out.key("max_failures_per_address", limits.max_failures_per_address);
    out.key("max_failures_per_user", limits.max_failures_per_user);
    out.key("failure_window_secs", secs(limits.failure_window));
    let mut names: Vec<&String> = a.users.keys().chain(a.scram.keys()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        out.blank();
        out.comment("[[auth.users]]: none");
    }
    for name in names {
        out.blank();
        out.line("[[auth.users]]");
        out.string("username", name);
        if a.users.contains_key(name) {
            out.string("password_hash", MASK);
        } else {
            out.unset("password_hash", "no password: SCRAM only");
        }
        if a.scram.contains_key(name) {
            out.string("scram", MASK);
        } else {
            out.unset("scram", "no SCRAM-SHA-256");
        }
        permissions(out, ("publish", "subscribe"), a.permissions.get(name));
    }
}

/// Topic permissions under the keys `names` (publish, subscribe); an absent list allows
/// anything.
fn permissions(out: &mut Toml, names: (&str, &str), granted: Option<&Permissions>) {
    let lists = granted.map_or((None, None), |p| (p.publish.as_ref(), p.subscribe.as_ref()));
    for (name, list) in [(names.0, lists.0), (names.1, lists.1)] {
        match list {
            Some(filters) => out.list(name, filters.iter().map(ToString::to_string).collect()),
            None => out.unset(name, "anything allowed"),
        }
    }
}

/// The `[nats]` table: user name shown, password and token masked, key files by path.
fn nats(out: &mut Toml, nats: &NatsConfig, config: &ServerConfig) {
    out.table("nats");
    // Credentials are keys of their own below, never the URL's user information.
    let urls: Vec<String> = nats
        .addresses
        .iter()
        .map(|a| format!("nats://{a}"))
        .collect();
    out.string("url", &urls.join(","));
    match &nats.user {
        Some((user, _)) => {
            out.string("user", user);
            out.string("password", MASK);
        }
        None => {
            out.unset("user", "no user name and password");
            out.unset("password", "no user name and password");
        }
    }
    match &nats.token {
        Some(_) => out.string("token", MASK),
        None => out.unset("token", "no token"),
    }
    let key = nats.key.as_ref();
    let key_file = |source| key.filter(|k| k.source == source);
    match key_file(KeySource::SeedFile) {
        Some(k) => {
            out.path("nkey_seed_file", &k.path);
            out.comment(&format!("  its user's public key: {}", k.public_key));
        }
        None => out.unset("nkey_seed_file", "no nkey"),
    }
    match key_file(KeySource::CredsFile) {
        Some(k) => {
            out.path("creds_file", &k.path);
            out.comment(&format!("  its user's public key: {}", k.public_key));
        }
        None => out.unset("creds_file", "no .creds file"),
    }
    out.key("jetstream", nats.jetstream);
    match &nats.domain {
        Some(domain) => out.string("domain", domain),
        None => out.unset("domain", "the local JetStream"),
    }
    out.key("replicas", nats.replicas);
    out.key("ack_wait_secs", secs(nats.ack_wait));
    out.key("max_ack_pending", nats.max_ack_pending);
    out.key("api_timeout_secs", secs(nats.api_timeout));
    out.key("tls", nats.tls.is_some());
    let tls = nats.tls.as_ref();
    match tls.and_then(|t| t.ca_file.as_deref()) {
        Some(ca) => out.path("tls_ca_file", ca),
        None => out.unset("tls_ca_file", "the system's CA certificates"),
    }
    match tls.and_then(|t| t.client.as_ref()) {
        Some((cert, key)) => {
            out.path("tls_cert_file", cert);
            out.path("tls_key_file", key);
        }
        None => {
            out.unset("tls_cert_file", "no client certificate");
            out.unset("tls_key_file", "no client certificate");
        }
    }
    match tls.and_then(|t| t.server_name.as_deref()) {
        Some(name) => out.string("tls_server_name", name),
        None => out.unset("tls_server_name", "the host of each address"),
    }
    if tls.is_some() {
        out.key(
            "tls_handshake_first",
            tls.is_some_and(|t| t.handshake_first),
        );
    } else {
        out.unset("tls_handshake_first", "no TLS");
    }
    let bridge = &config.broker.bridge;
    out.raw("bridge_publish", &rules(&bridge.publish));
    out.raw("bridge_subscribe", &rules(&bridge.subscribe));
}

/// Subject rules as an inline table (an empty `allow`: every application subject).
fn rules(r: &SubjectRules) -> String {
    let list = |l: &[bytestring::ByteString]| array(l.iter().map(ToString::to_string).collect());
    format!("{{ allow = {}, deny = {} }}", list(&r.allow), list(&r.deny))
}

/// Whole seconds, as the file has them.
fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// A TOML string literal, escaped.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML array of strings.
fn array(items: Vec<String>) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

/// The text being written.
#[derive(Default)]
struct Toml {
    text: String,
}

impl Toml {
    fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn blank(&mut self) {
        self.text.push('\n');
    }

    fn comment(&mut self, text: &str) {
        let _ = writeln!(self.text, "# {text}");
    }

    fn table(&mut self, name: &str) {
        self.blank();
        let _ = writeln!(self.text, "[{name}]");
    }

    fn raw(&mut self, key: &str, value: &str) {
        let _ = writeln!(self.text, "{key} = {value}");
    }

    fn key(&mut self, key: &str, value: impl std::fmt::Display) {
        self.raw(key, &value.to_string());
    }

    fn string(&mut self, key: &str, value: &str) {
        self.raw(key, &quoted(value));
    }

    fn path(&mut self, key: &str, value: &Path) {
        self.string(key, &value.display().to_string());
    }

    fn list(&mut self, key: &str, items: Vec<String>) {
        self.raw(key, &array(items));
    }

    /// An optional setting that is not set, and what that means.
    fn unset(&mut self, key: &str, meaning: &str) {
        let _ = writeln!(self.text, "# {key}: not set ({meaning})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the file parser takes in `table` (`""`: the top level), as its error for an
    /// unknown key lists them: taken from the parser itself, so a key added there and
    /// forgotten here fails the tests.
    fn parser_keys(table: &str) -> Vec<String> {
        let probe = match table {
            "" => "no_such_key = 1\n".to_owned(),
            "listeners" => "[[listeners]]\nno_such_key = 1\n".to_owned(),
            "auth.users" => "[[auth.users]]\nusername = \"u\"\nno_such_key = 1\n".to_owned(),
            t => format!("[{t}]\nno_such_key = 1\n"),
        };
        let e = ServerConfig::default()
            .apply_toml(&probe)
            .expect_err("an unknown key is refused");
        let (_, expected) = e
            .value
            .split_once("expected")
            .unwrap_or_else(|| panic!("the parser lists its keys: {e}"));
        let keys: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        assert!(!keys.is_empty(), "{e}");
        keys
    }

    /// The table a line of the rendered text opens (`[limits]`, `[[auth.users]]`, or one said
    /// to be unset: `# [redirect]: not set ...`), if it opens one.
    fn opens(line: &str) -> Option<&str> {
        let header = line.strip_prefix("# ").unwrap_or(line);
        let name = header
            .strip_prefix("[[")
            .and_then(|t| t.split_once("]]"))
            .or_else(|| header.strip_prefix('[').and_then(|t| t.split_once(']')))?
            .0;
        Some(name)
    }

    /// Whether `text` sets `key` in `table` (`""`: the top level), or says it is not set.
    fn mentions(text: &str, table: &str, key: &str) -> bool {
        let mut current = "";
        for line in text.lines() {
            if let Some(name) = opens(line) {
                current = name;
                continue;
            }
            let sets = line.starts_with(&format!("{key} = "))
                || line.starts_with(&format!("# {key}: not set"));
            if current == table && sets {
                return true;
            }
        }
        false
    }

    /// Whether `text` has the table `name`, or says it is not set.
    fn has_table(text: &str, name: &str) -> bool {
        text.lines().any(|l| opens(l) == Some(name))
    }

    fn rendered(toml: &str) -> String {
        let mut config = ServerConfig::default();
        config.apply_toml(toml).expect("valid");
        render(&config, &CommandLine::default())
    }

    #[test]
    fn every_limits_key_appears_with_its_default() {
        let text = rendered("");
        let keys = parser_keys("limits");
        assert!(keys.len() >= 30, "{keys:?}");
        for key in keys {
            assert!(
                mentions(&text, "limits", &key),
                "[limits] {key} missing:\n{text}"
            );
        }
        // The defaults, as the README's reference gives them.
        for line in [
            "max_connections = 10000",
            "max_packet_size = 1048576",
            "max_inflight = 64",
            "receive_maximum = 64",
            "max_queued_messages = 100000",
            "max_queued_bytes = 67108864",
            "overflow = \"lossless\"",
            "max_total_queued_bytes = 536870912",
            "slow_consumer_timeout_secs = 30",
            "max_keep_alive = 0",
            "min_keep_alive = 0",
            "topic_alias_maximum = 16",
            "outbound_topic_aliases = 16",
            "max_session_expiry_secs = 604800",
            "connect_timeout_secs = 10",
            "takeover_limit = 10",
            "takeover_window_secs = 10",
            "max_subscriptions = 100000",
            "max_retained_messages = 1000000",
            "max_retained_bytes = 1073741824",
            "max_qos = 2",
            "max_client_id_len = 256",
            "max_unsent_bytes = 4194304",
            "max_user_properties = 64",
            "max_user_property_bytes = 16384",
            "max_sessions = 1000000",
            "max_sessions_per_user = 0",
            "max_topic_levels = 128",
            "max_idle_secs = 7200",
            "max_connections_per_address = 0",
            "tcp_keepalive_secs = 60",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn every_key_of_every_table_appears() {
        let pki = TestPki::new();
        // Every optional table present, so that each of its keys is rendered or said unset.
        let text = rendered(&format!(
            "[[listeners]]\nkind = \"wss\"\naddress = \"127.0.0.1:0\"\ncert = {}\nkey = {}\n\
             [redirect]\nserver_reference = \"b.example\"\n\
             [[auth.users]]\nusername = \"u\"\nscram = {:?}\n\
             [nats]\nurl = \"nats://127.0.0.1:4222\"\n",
            pki.cert,
            pki.key,
            crate::auth::scram_credential(b"pw").to_string(),
        ));
        let tables = [
            "listeners",
            "limits",
            "store",
            "sys",
            "metrics",
            "mqtt",
            "redirect",
            "auth",
            "nats",
        ];
        for table in std::iter::once("").chain(tables).chain(["auth.users"]) {
            for key in parser_keys(table) {
                let sub_table = match table {
                    "" if tables.contains(&key.as_str()) => Some(key.clone()),
                    "auth" if key == "users" => Some("auth.users".to_owned()),
                    _ => None,
                };
                match sub_table {
                    Some(name) => assert!(has_table(&text, &name), "[{name}] missing:\n{text}"),
                    None => assert!(
                        mentions(&text, table, &key),
                        "[{table}] {key} missing:\n{text}"
                    ),
                }
            }
        }
        // Without them, each optional table says it is not set.
        let bare = rendered("");
        for name in ["listeners", "redirect", "auth.users", "nats"] {
            assert!(has_table(&bare, name), "[{name}] missing:\n{bare}");
        }
    }

    #[test]
    fn secrets_never_appear() {
        let hash = crate::auth::hash_password(b"hunter2").expect("hash");
        let scram = crate::auth::scram_credential(b"hunter2").to_string();
        let salted = scram.split('$').nth(2).expect("keys").to_owned();
        let toml = format!(
            "[[auth.users]]\nusername = \"alice\"\npassword_hash = {hash:?}\nscram = {scram:?}\n\
             [nats]\nurl = \"nats://127.0.0.1:4222\"\nuser = \"jetmq\"\n\
             password = \"S3cretNatsPassword\"\n"
        );
        let mut config = ServerConfig::default();
        config.apply_toml(&toml).expect("valid");
        let cli = CommandLine {
            nats: Some("nats://tok3nSecret@127.0.0.1:4222".into()),
            ..CommandLine::default()
        };
        config
            .set_nats(cli.nats.as_deref().expect("given"), "--nats")
            .expect("a URL");
        let text = render(&config, &cli);
        for secret in [
            hash.as_str(),
            "$argon2id$",
            scram.as_str(),
            salted.as_str(),
            "S3cretNatsPassword",
            "tok3nSecret",
        ] {
            assert!(!text.contains(secret), "{secret} shown:\n{text}");
        }
        assert!(text.contains("username = \"alice\""), "{text}");
        assert!(text.contains("password_hash = \"***\""), "{text}");
        assert!(text.contains("scram = \"***\""), "{text}");
        assert!(text.contains("token = \"***\""), "{text}");
        // The URL's credentials replaced the file's user and password.
        assert!(text.contains("# user: not set"), "{text}");
        assert!(text.contains("url = \"nats://127.0.0.1:4222\""), "{text}");
    }

    #[test]
    fn the_nats_password_of_the_file_is_masked() {
        let text = rendered(
            "[nats]\nurl = \"nats://127.0.0.1:4222\"\nuser = \"jetmq\"\npassword = \"pw-xyzzy\"\n",
        );
        assert!(!text.contains("pw-xyzzy"), "{text}");
        assert!(
            text.contains("user = \"jetmq\"\npassword = \"***\""),
            "{text}"
        );
    }

    #[test]
    fn the_text_reads_back_as_the_same_configuration() {
        let pki = TestPki::new();
        let file = format!(
            "listen = [\"127.0.0.1:1884\", \"[::1]:1885\"]\ndata_dir = \"/var/lib/jetmq\"\n\
             [[listeners]]\nkind = \"ws\"\naddress = \"127.0.0.1:8083\"\npath = \"/m\"\n\
             allowed_origins = [\"https://app.example\"]\n\
             [[listeners]]\nkind = \"tls\"\naddress = \"127.0.0.1:8883\"\ncert = {}\nkey = {}\n\
             client_ca = {}\n\
             [limits]\nmax_qos = 1\noverflow = \"drop\"\nmax_idle_secs = 0\n\
             tcp_keepalive_secs = 0\nmax_connections = 7\n\
             [store]\nsync = \"interval\"\nsync_interval_ms = 250\n\
             [sys]\ninterval_secs = 0\n[metrics]\nlisten = \"127.0.0.1:9100\"\n\
             [mqtt]\ndowngrade_qos2_subscribe = true\n\
             [redirect]\nserver_reference = \"b.example:1883\"\npermanent = true\n\
             [auth]\nallow_anonymous = false\nanonymous_publish = [\"public/#\"]\n\
             client_id_from = \"username\"\nthreads = 3\nfailure_window_secs = 90\n\
             [nats]\nurl = \"nats://a:4222,nats://b:4222\"\njetstream = false\n\
             domain = \"hub\"\nreplicas = 3\nack_wait_secs = 7\n\
             bridge_publish = {{ allow = [\"s.>\"], deny = [\"s.x\"] }}\n",
            pki.cert, pki.key, pki.cert,
        );
        let once = rendered(&file);
        let twice = rendered(&once);
        assert_eq!(once, twice);
        for line in [
            "sync = \"interval\"",
            "sync_interval_ms = 250",
            "reject_qos2_publish = true",
            "downgrade_qos2_subscribe = true",
            "client_id_from = \"username\"",
            "listen = [\"127.0.0.1:1884\", \"[::1]:1885\"]",
            "bridge_publish = { allow = [\"s.>\"], deny = [\"s.x\"] }",
            "bridge_subscribe = { allow = [], deny = [] }",
            "url = \"nats://a:4222,nats://b:4222\"",
            "interval_secs = 0",
        ] {
            assert!(once.lines().any(|l| l == line), "{line} missing:\n{once}");
        }
    }

    /// A certificate and its key in PEM files, removed when dropped.
    struct TestPki {
        dir: std::path::PathBuf,
        cert: String,
        key: String,
    }

    impl TestPki {
        fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "jetmq-effective-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
            let cert = dir.join("server.pem");
            let key = dir.join("server.key");
            std::fs::write(&cert, made.cert.pem()).expect("write");
            std::fs::write(&key, made.key_pair.serialize_pem()).expect("write");
            let quote = |p: &Path| quoted(&p.display().to_string());
            Self {
                cert: quote(&cert),
                key: quote(&key),
                dir,
            }
        }
    }

    impl Drop for TestPki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
