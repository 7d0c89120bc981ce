//! Configuration files: every invalid value is refused with the key, the value and what is
//! allowed; unknown keys are errors.

use std::time::Duration;

use jetmq::config::{parse_listen, ServerConfig};
use jetmq_core::codec::QoS;

fn apply(text: &str) -> Result<ServerConfig, String> {
    let mut c = ServerConfig::default();
    c.apply_toml(text).map(|()| c).map_err(|e| e.to_string())
}

#[test]
fn a_valid_file_sets_listeners_and_limits() {
    let c = apply(
        r#"
listen = ["127.0.0.1:1884", "[::1]:1885"]
data_dir = "/var/lib/jetmq"

[limits]
max_connections = 50
max_packet_size = 65536
max_inflight = 10
max_qos = 1
connect_timeout_secs = 5
takeover_limit = 3
takeover_window_secs = 60
max_subscriptions = 7
max_retained_messages = 3
max_retained_bytes = 4096
"#,
    )
    .expect("valid");
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.max_connections, 50);
    assert_eq!(c.broker.max_packet_size, 65536);
    assert_eq!(c.broker.max_inflight, 10);
    assert_eq!(c.broker.max_qos, QoS::AtLeastOnce);
    assert_eq!(c.broker.connect_timeout.as_secs(), 5);
    assert_eq!(c.broker.takeover_limit, 3);
    assert_eq!(c.broker.takeover_window.as_secs(), 60);
    assert_eq!(c.broker.max_subscriptions, 7);
    assert_eq!(c.broker.max_retained_messages, 3);
    assert_eq!(c.broker.max_retained_bytes, 4096);
}

#[test]
fn bounds_on_what_a_client_may_keep_are_read_with_their_defaults() {
    let c = apply("").expect("valid");
    assert_eq!(c.broker.max_user_properties, 64);
    assert_eq!(c.broker.max_user_property_bytes, 16 * 1024);
    assert_eq!(c.broker.max_sessions, 1_000_000);
    assert_eq!(c.broker.max_sessions_per_user, 0);
    assert_eq!(c.broker.max_idle, Some(Duration::from_secs(7200)));
    assert_eq!(c.broker.max_topic_levels, 128);
    assert!(!c.broker.client_id_from_username);
    let c = apply(
        r#"
[limits]
max_user_properties = 3
max_user_property_bytes = 100
max_sessions = 10
max_sessions_per_user = 2
max_idle_secs = 0
max_topic_levels = 8

[auth]
client_id_from = "username"
"#,
    )
    .expect("valid");
    assert_eq!(c.broker.max_user_properties, 3);
    assert_eq!(c.broker.max_user_property_bytes, 100);
    assert_eq!(c.broker.max_sessions, 10);
    assert_eq!(c.broker.max_sessions_per_user, 2);
    assert_eq!(c.broker.max_idle, None, "0: no limit");
    assert_eq!(c.broker.max_topic_levels, 8);
    assert!(c.broker.client_id_from_username);
}

#[test]
fn overload_limits_are_read_and_lossless_is_the_default() {
    use jetmq_core::broker::Overflow;
    let c = apply("").expect("valid");
    assert_eq!(c.broker.overflow, Overflow::Lossless);
    let c = apply(
        r#"
[limits]
overflow = "drop"
max_queued_messages = 10
max_queued_bytes = 2048
max_total_queued_bytes = 4096
slow_consumer_timeout_secs = 5
"#,
    )
    .expect("valid");
    assert_eq!(c.broker.overflow, Overflow::Drop);
    assert_eq!(c.broker.max_queued_messages, 10);
    assert_eq!(c.broker.max_queued_bytes, 2048);
    assert_eq!(c.broker.max_total_queued_bytes, 4096);
    assert_eq!(c.broker.slow_consumer_timeout, Duration::from_secs(5));
}

#[test]
fn the_bridges_allow_and_deny_lists_are_read_and_checked() {
    let c = apply(
        r#"
[nats]
url = "nats://127.0.0.1:4222"
bridge_publish = { allow = ["app.>"], deny = ["app.secret.>"] }
[nats.bridge_subscribe]
allow = ["app.*", "metrics.>"]
"#,
    )
    .expect("valid");
    let bridge = &c.broker.bridge;
    assert_eq!(bridge.publish.allow, ["app.>"]);
    assert_eq!(bridge.publish.deny, ["app.secret.>"]);
    assert_eq!(bridge.subscribe.allow, ["app.*", "metrics.>"]);
    assert!(bridge.subscribe.deny.is_empty());
    for bad in ["a..b", "a.>.b", "a b", "a*", ""] {
        let text = format!(
            "[nats]\nurl = \"nats://127.0.0.1:4222\"\nbridge_publish = {{ deny = [\"{bad}\"] }}"
        );
        let e = apply(&text).expect_err(bad);
        assert!(
            e.contains("nats.bridge_publish.deny") && e.contains("NATS subjects"),
            "{e}"
        );
    }
}

#[test]
fn sys_statistics_default_to_every_ten_seconds_and_can_be_turned_off() {
    let c = apply("").expect("valid");
    assert_eq!(c.broker.sys_interval, Some(Duration::from_secs(10)));
    let c = apply("[sys]\ninterval_secs = 30").expect("valid");
    assert_eq!(c.broker.sys_interval, Some(Duration::from_secs(30)));
    let c = apply("[sys]\ninterval_secs = 0").expect("valid");
    assert_eq!(c.broker.sys_interval, None);
}

#[test]
fn unknown_keys_are_refused() {
    let e = apply("listn = [\"127.0.0.1:1883\"]").expect_err("unknown key");
    assert!(e.contains("listn"), "{e}");
    let e = apply("[limits]\nmax_conections = 5").expect_err("unknown key");
    assert!(e.contains("max_conections"), "{e}");
}

#[test]
fn invalid_values_name_the_key_the_value_and_what_is_allowed() {
    for (text, key, value, allowed) in [
        ("[limits]\nmax_qos = 3", "limits.max_qos", "3", "0, 1 or 2"),
        (
            "[limits]\nmax_idle_secs = 604801",
            "limits.max_idle_secs",
            "604801",
            "0 (no limit) or 1 to 604800",
        ),
        (
            "[auth]\nclient_id_from = \"name\"",
            "auth.client_id_from",
            "name",
            "\"client\" or \"username\"",
        ),
        (
            "[limits]\noverflow = \"spill\"",
            "limits.overflow",
            "spill",
            "\"lossless\" or \"drop\"",
        ),
        (
            "[limits]\nmax_queued_messages = 0",
            "limits.max_queued_messages",
            "0",
            "1 or more",
        ),
        (
            "[limits]\nslow_consumer_timeout_secs = 0",
            "limits.slow_consumer_timeout_secs",
            "0",
            "1 to 3600",
        ),
        (
            "[limits]\nmax_inflight = 0",
            "limits.max_inflight",
            "0",
            "1 to 65535",
        ),
        (
            "[limits]\nmax_packet_size = 4",
            "limits.max_packet_size",
            "4",
            "16 to",
        ),
        (
            "[limits]\nconnect_timeout_secs = 0",
            "limits.connect_timeout_secs",
            "0",
            "1 to 3600",
        ),
        (
            "[limits]\ntakeover_window_secs = 0",
            "limits.takeover_window_secs",
            "0",
            "1 to 3600",
        ),
        (
            "[metrics]\nlisten = \"nowhere\"",
            "metrics.listen",
            "nowhere",
            "IP address with a port",
        ),
        (
            "[sys]\ninterval_secs = 3601",
            "sys.interval_secs",
            "3601",
            "0 (off) or 1 to 3600",
        ),
        (
            "[limits]\nmax_client_id_len = 8",
            "limits.max_client_id_len",
            "8",
            "23 or more",
        ),
        (
            "[limits]\nmax_connections = 0",
            "limits.max_connections",
            "0",
            "1 or more",
        ),
        (
            "listen = [\"localhost\"]",
            "listen",
            "localhost",
            "IP address with a port",
        ),
        ("listen = []", "listen", "[]", "at least one"),
        (
            "[limits]\nmax_session_expiry_secs = 0",
            "limits.max_session_expiry_secs",
            "0",
            "4294967295 = never",
        ),
        (
            "[redirect]\npermanent = true",
            "redirect.server_reference",
            "",
            "host:port",
        ),
    ] {
        let e = apply(text).expect_err(text);
        assert!(
            e.contains(key) && e.contains(value) && e.contains(allowed),
            "{text}: {e}"
        );
    }
}

#[test]
fn a_syntax_error_is_reported() {
    let e = apply("listen = [").expect_err("syntax");
    assert!(e.starts_with("invalid configuration"), "{e}");
}

#[test]
fn command_line_addresses_are_checked() {
    assert!(parse_listen("--listen", "127.0.0.1:1883").is_ok());
    let e = parse_listen("--listen", "1883")
        .expect_err("no host")
        .to_string();
    assert!(e.contains("--listen") && e.contains("1883"), "{e}");
}

mod common;

use std::net::SocketAddr;

use common::{toml_path, Pki, TempDir};
use jetmq::config::{ListenerConfig, TlsSettings, Transport, DEFAULT_WS_PATH};
use jetmq_core::broker::ListenerKind;

fn tls_entry(kind: &str, cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "[[listeners]]\nkind = \"{kind}\"\naddress = \"127.0.0.1:8883\"\ncert = {}\nkey = {}\n",
        toml_path(cert),
        toml_path(key)
    )
}

#[test]
fn listeners_of_every_kind_are_read() {
    let pki = Pki::new("config-kinds");
    let c = apply(&format!(
        r#"
[[listeners]]
kind = "tcp"
address = "127.0.0.1:1883"

[[listeners]]
kind = "tls"
address = "127.0.0.1:8883"
cert = {cert}
key = {key}
client_ca = {ca}

[[listeners]]
kind = "ws"
address = "127.0.0.1:8083"

[[listeners]]
kind = "wss"
address = "[::1]:8084"
cert = {cert}
key = {key}
path = "/ws/mqtt"
"#,
        cert = toml_path(&pki.server_cert),
        key = toml_path(&pki.server_key),
        ca = toml_path(&pki.ca),
    ))
    .expect("valid");
    assert!(c.listen.is_empty(), "listeners replace the default listen");
    let kinds: Vec<ListenerKind> = c.listeners.iter().map(|l| l.transport.kind()).collect();
    assert_eq!(
        kinds,
        [
            ListenerKind::Tcp,
            ListenerKind::Tls,
            ListenerKind::WebSocket,
            ListenerKind::SecureWebSocket
        ]
    );
    match &c.listeners[1].transport {
        Transport::Tls(tls) => {
            assert_eq!(tls.cert(), pki.server_cert);
            assert_eq!(tls.key(), pki.server_key);
            assert_eq!(tls.client_ca(), Some(pki.ca.as_path()));
        }
        other => panic!("{other:?}"),
    }
    match &c.listeners[2].transport {
        Transport::WebSocket { path } => assert_eq!(path, DEFAULT_WS_PATH),
        other => panic!("{other:?}"),
    }
    match &c.listeners[3].transport {
        Transport::SecureWebSocket { path, tls } => {
            assert_eq!(path, "/ws/mqtt");
            assert_eq!(tls.client_ca(), None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.listeners[3].address,
        "[::1]:8084".parse::<SocketAddr>().expect("address")
    );
}

#[test]
fn listen_and_listeners_are_served_together() {
    let c = apply(
        "listen = [\"127.0.0.1:1883\"]\n[[listeners]]\nkind = \"ws\"\naddress = \"127.0.0.1:8083\"\n",
    )
    .expect("valid");
    assert_eq!(c.listen.len(), 1);
    assert_eq!(c.listeners.len(), 1);
    // `listen = []` is fine when listeners are given, not when nothing is left.
    let c = apply("listen = []\n[[listeners]]\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n")
        .expect("valid");
    assert!(c.listen.is_empty());
    let e = apply("listeners = []").expect_err("no listener at all");
    assert!(e.contains("listen") && e.contains("at least one"), "{e}");
}

/// `(file text, key, value, allowed)`: each must be refused naming all three.
fn assert_refused(cases: &[(String, &str, String, &str)]) {
    for (text, key, value, allowed) in cases {
        let e = apply(text).expect_err(text);
        assert!(
            e.contains(key) && e.contains(value.as_str()) && e.contains(allowed),
            "{text}\n=> {e}\n(wanted key {key}, value {value}, allowed {allowed})"
        );
    }
}

#[test]
fn listener_values_are_checked() {
    let entry = |body: &str| format!("[[listeners]]\n{body}\n");
    let tcp = |more: &str| {
        entry(&format!(
            "kind = \"tcp\"\naddress = \"127.0.0.1:1\"\n{more}"
        ))
    };
    let ws = |more: &str| entry(&format!("kind = \"ws\"\naddress = \"127.0.0.1:1\"\n{more}"));
    assert_refused(&[
        (
            entry("kind = \"quic\"\naddress = \"127.0.0.1:1\""),
            "listeners[0].kind",
            "quic".into(),
            "\"tcp\", \"tls\", \"ws\" or \"wss\"",
        ),
        (
            entry("address = \"127.0.0.1:1\""),
            "listeners[0].kind",
            "(missing)".into(),
            "\"tcp\"",
        ),
        (
            entry("kind = \"tcp\""),
            "listeners[0].address",
            "(missing)".into(),
            "IP address with a port",
        ),
        (
            entry("kind = \"ws\"\naddress = \"localhost:80\""),
            "listeners[0].address",
            "localhost:80".into(),
            "IP address with a port",
        ),
        (
            tcp("path = \"/mqtt\""),
            "listeners[0].path",
            "/mqtt".into(),
            "only on ws and wss",
        ),
        (
            tcp("cert = \"server.pem\""),
            "listeners[0].cert",
            "server.pem".into(),
            "only on tls and wss",
        ),
        (
            ws("client_ca = \"ca.pem\""),
            "listeners[0].client_ca",
            "ca.pem".into(),
            "only on tls and wss",
        ),
        (
            ws("path = \"mqtt\""),
            "listeners[0].path",
            "mqtt".into(),
            "starting with /",
        ),
        (
            ws("path = \"/my mqtt\""),
            "listeners[0].path",
            "/my mqtt".into(),
            "without spaces",
        ),
        (
            ws("path = \"/mqtt?x=1\""),
            "listeners[0].path",
            "/mqtt?x=1".into(),
            "without spaces, ? or #",
        ),
        (
            entry("kind = \"tls\"\naddress = \"127.0.0.1:1\"\nkey = \"k.pem\""),
            "listeners[0].cert",
            "(missing)".into(),
            "required on tls and wss",
        ),
        (
            entry("kind = \"wss\"\naddress = \"127.0.0.1:1\"\ncert = \"c.pem\""),
            "listeners[0].key",
            "(missing)".into(),
            "required on tls and wss",
        ),
    ]);
    let e = apply(&tcp("certs = \"x.pem\"")).expect_err("unknown key in a listener");
    assert!(e.contains("certs"), "{e}");
}

#[test]
fn tls_files_are_read_and_checked_naming_the_file() {
    let pki = Pki::new("config-files");
    let dir = TempDir::new("config-bad-pem");
    let missing = dir.0.join("missing.pem");
    let garbage = dir.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let empty = dir.write("empty.pem", "just text, no PEM sections\n");
    let not_a_cert = dir.write(
        "not-a-cert.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let show = |p: &std::path::Path| p.display().to_string();
    let (cert, key, ca) = (&pki.server_cert, &pki.server_key, &pki.ca);
    let with_ca = |ca: &std::path::Path| {
        format!(
            "{}client_ca = {}\n",
            tls_entry("tls", cert, key),
            toml_path(ca)
        )
    };
    assert_refused(&[
        (
            tls_entry("tls", &missing, key),
            "listeners[0].cert",
            show(&missing),
            "readable PEM file",
        ),
        (
            tls_entry("wss", &garbage, key),
            "listeners[0].cert",
            show(&garbage),
            "not valid PEM",
        ),
        (
            tls_entry("tls", &empty, key),
            "listeners[0].cert",
            show(&empty),
            "no CERTIFICATE",
        ),
        (
            tls_entry("tls", key, key),
            "listeners[0].cert",
            show(key),
            "no CERTIFICATE",
        ),
        (
            tls_entry("tls", &not_a_cert, key),
            "listeners[0].cert",
            show(&not_a_cert),
            "valid X.509 certificate",
        ),
        (
            tls_entry("tls", cert, &missing),
            "listeners[0].key",
            show(&missing),
            "readable PEM file",
        ),
        (
            tls_entry("tls", cert, cert),
            "listeners[0].key",
            show(cert),
            "private key",
        ),
        (
            tls_entry("wss", cert, &pki.client_key),
            "listeners[0].key",
            show(&pki.client_key),
            "the private key of the certificate in",
        ),
        (
            with_ca(&missing),
            "listeners[0].client_ca",
            show(&missing),
            "readable PEM file",
        ),
        (
            with_ca(&empty),
            "listeners[0].client_ca",
            show(&empty),
            "no CERTIFICATE",
        ),
        (
            with_ca(&not_a_cert),
            "listeners[0].client_ca",
            show(&not_a_cert),
            "unusable",
        ),
    ]);
    // The second entry is named when it is the one at fault.
    let text = format!(
        "{}{}",
        tls_entry("tls", cert, key).replace("8883", "8884"),
        tls_entry("tls", &missing, key)
    );
    let e = apply(&text).expect_err("second entry");
    assert!(e.contains("listeners[1].cert"), "{e}");

    // The same checks for a configuration built in code, keyed by the argument's name.
    let e = TlsSettings::from_pem_files(&missing, key, None).expect_err("missing cert");
    assert_eq!((e.key.as_str(), e.value), ("cert", show(&missing)));
    let e = TlsSettings::from_pem_files(cert, key, Some(&empty)).expect_err("empty CA");
    assert_eq!(e.key, "client_ca");
    assert!(TlsSettings::from_pem_files(cert, key, Some(ca)).is_ok());
}

#[test]
fn two_listeners_on_one_address_are_refused() {
    let ws = |addr: &str| format!("[[listeners]]\nkind = \"ws\"\naddress = \"{addr}\"\n");
    assert_refused(&[
        (
            format!("{}{}", ws("127.0.0.1:8083"), ws("127.0.0.1:8083")),
            "listeners[1].address",
            "127.0.0.1:8083".into(),
            "no other listener uses (listeners[0].address",
        ),
        (
            format!("listen = [\"127.0.0.1:1883\"]\n{}", ws("127.0.0.1:1883")),
            "listeners[0].address",
            "127.0.0.1:1883".into(),
            "(listen already does)",
        ),
        (
            format!("{}{}", ws("0.0.0.0:8083"), ws("127.0.0.1:8083")),
            "listeners[1].address",
            "127.0.0.1:8083".into(),
            "no other listener uses",
        ),
        (
            "listen = [\"127.0.0.1:1883\", \"127.0.0.1:1883\"]".to_string(),
            "listen",
            "127.0.0.1:1883".into(),
            "no other listener uses",
        ),
    ]);
    // Port 0 lets the system choose: never a clash. Other ports or families are fine.
    apply(&format!("{}{}", ws("127.0.0.1:0"), ws("127.0.0.1:0"))).expect("port 0 twice");
    apply(&format!("{}{}", ws("127.0.0.1:8083"), ws("127.0.0.1:8084"))).expect("two ports");
    apply(&format!("{}{}", ws("0.0.0.0:8083"), ws("[::1]:8083"))).expect("two families");

    // A command-line address is checked against the file's listeners too.
    let mut c = apply(&ws("127.0.0.1:8083")).expect("valid");
    c.listen = vec![parse_listen("--listen", "127.0.0.1:8083").expect("address")];
    let e = c.check().expect_err("clash").to_string();
    assert!(e.contains("listeners[0].address"), "{e}");
    c.listeners.push(ListenerConfig {
        address: "127.0.0.1:9000".parse().expect("address"),
        transport: Transport::Tcp,
        allowed_origins: None,
    });
    c.listen.clear();
    c.check().expect("no clash");
}

#[test]
fn nats_qos_options_map_onto_the_broker() {
    let c = apply("[mqtt]\nreject_qos2_publish = true\ndowngrade_qos2_subscribe = true\n")
        .expect("valid");
    assert_eq!(c.broker.max_qos, QoS::AtLeastOnce);
    assert_eq!(c.broker.max_subscription_qos, QoS::AtLeastOnce);
    let e = apply("[mqtt]\nack_wait = 5\n").expect_err("not supported yet");
    assert!(e.contains("ack_wait"), "{e}");
}

#[test]
fn keep_alive_bounds() {
    let c = apply("[limits]\nmin_keep_alive = 5\nmax_keep_alive = 300\n").expect("valid");
    assert_eq!((c.broker.min_keep_alive, c.broker.max_keep_alive), (5, 300));
    let e =
        apply("[limits]\nmin_keep_alive = 600\nmax_keep_alive = 300\n").expect_err("min above max");
    assert!(
        e.contains("limits.min_keep_alive") && e.contains("600"),
        "{e}"
    );
}

#[test]
fn mqtt5_options_map_onto_the_broker() {
    let c = apply(
        "[limits]\noutbound_topic_aliases = 4\nmax_session_expiry_secs = 3600\n[redirect]\nserver_reference = \"b.example:1883\"\npermanent = true\n",
    )
    .expect("valid");
    assert_eq!(c.broker.outbound_topic_aliases, 4);
    assert_eq!(c.broker.max_session_expiry, 3600);
    let r = c.broker.redirect.expect("redirect");
    assert_eq!(
        (r.server_reference.as_ref(), r.permanent),
        ("b.example:1883", true)
    );
    let d = apply("").expect("empty file");
    assert_eq!(
        d.broker.max_session_expiry,
        7 * 24 * 3600,
        "7 days by default"
    );
    assert!(d.broker.redirect.is_none());
}

#[test]
fn a_nats_url_turns_the_bridge_and_jetstream_on() {
    let c = apply("[nats]\nurl = \"nats://127.0.0.1:4222\"\n").expect("valid");
    let n = c.nats.as_ref().expect("nats");
    assert_eq!(n.addresses, ["127.0.0.1:4222"]);
    assert!(n.jetstream, "state in JetStream by default");
    assert_eq!(
        (n.replicas, n.ack_wait, n.max_ack_pending),
        (1, Duration::from_secs(30), 1024)
    );
    assert!(c.broker.cluster.bridges());
    assert!(
        !apply("").expect("valid").broker.cluster.bridges(),
        "off by default"
    );
    let e = apply("[nats]\nurl = \"http://x\"\n").expect_err("not a NATS URL");
    assert!(
        e.contains("nats.url") && e.contains("nats://[user:password@]host:port"),
        "{e}"
    );
    let mut c = ServerConfig::default();
    let e = c
        .set_nats("127.0.0.1", "--nats")
        .expect_err("no port")
        .to_string();
    assert!(e.contains("--nats"), "{e}");
}

/// TLS to NATS: `tls://` URLs and the `tls_*` keys, checked when the file is read.
#[test]
fn nats_tls_options() {
    let pki = Pki::new("config-nats-tls");
    let full = format!(
        "[nats]\nurl = \"nats://10.0.0.1:4222\"\ntls_ca_file = {}\ntls_cert_file = {}\n\
         tls_key_file = {}\ntls_server_name = \"nats.example\"\ntls_handshake_first = true\n",
        toml_path(&pki.ca),
        toml_path(&pki.client_cert),
        toml_path(&pki.client_key)
    );
    let n = apply(&full).expect("valid").nats.expect("nats");
    let tls = n.tls.as_ref().expect("the tls_* keys ask for TLS");
    assert_eq!(tls.ca_file.as_deref(), Some(pki.ca.as_path()));
    assert_eq!(
        tls.client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        Some((pki.client_cert.as_path(), pki.client_key.as_path()))
    );
    assert!(tls.handshake_first);
    assert_eq!(tls.server_name_for("10.0.0.1:4222"), "nats.example");
    assert!(n.connect_options("jetmq").tls_required);
    // A tls:// URL asks for TLS; the certificate's name defaults to the URL's host.
    let url = format!(
        "[nats]\nurl = \"tls://u:p@nats.internal:4443\"\ntls_ca_file = {}\n",
        toml_path(&pki.ca)
    );
    let n = apply(&url).expect("valid").nats.expect("nats");
    assert_eq!(n.addresses, ["nats.internal:4443"]);
    assert_eq!(n.user, Some(("u".into(), "p".into())));
    let tls = n.tls.expect("tls:// asks for TLS");
    assert_eq!(tls.server_name_for("nats.internal:4443"), "nats.internal");
    assert_eq!(tls.server_name_for("[::1]:4443"), "::1");
    // Without any of it, no TLS.
    let plain = apply("[nats]\nurl = \"nats://h:4222\"\n").expect("valid");
    let plain = plain.nats.expect("nats");
    assert!(plain.tls.is_none() && !plain.connect_options("jetmq").tls_required);

    let missing = pki.dir.0.join("missing.pem");
    for (bad, key) in [
        (
            format!("tls_ca_file = {}", toml_path(&missing)),
            "nats.tls_ca_file",
        ),
        (
            format!("tls_ca_file = {}", toml_path(&pki.client_key)),
            "nats.tls_ca_file",
        ),
        (
            format!(
                "tls_ca_file = {}\ntls_cert_file = {}",
                toml_path(&pki.ca),
                toml_path(&pki.client_cert)
            ),
            "nats.tls_cert_file",
        ),
        (
            format!(
                "tls_ca_file = {}\ntls_cert_file = {}\ntls_key_file = {}",
                toml_path(&pki.ca),
                toml_path(&pki.client_cert),
                toml_path(&pki.server_key)
            ),
            "nats.tls_key_file",
        ),
        (
            format!("tls_ca_file = {}\ntls = false", toml_path(&pki.ca)),
            "nats.tls",
        ),
        (
            format!(
                "tls_ca_file = {}\ntls_server_name = \"not a name\"",
                toml_path(&pki.ca)
            ),
            "nats.tls_server_name",
        ),
    ] {
        let e = apply(&format!("[nats]\nurl = \"nats://h:4222\"\n{bad}\n")).expect_err(&bad);
        assert!(e.contains(key), "{bad}: {e}");
    }
    let e = apply("[nats]\nurl = \"tls://h:4222\"\ntls = false\n").expect_err("contradiction");
    assert!(e.contains("nats.tls"), "{e}");
}

#[test]
fn nats_options() {
    let c = apply(
        "[nats]\nurl = \"nats://alice:s3cret@10.0.0.1:4222\"\njetstream = false\n\
         domain = \"hub\"\nreplicas = 3\nack_wait_secs = 5\nmax_ack_pending = 64\n\
         api_timeout_secs = 2\n",
    )
    .expect("valid");
    let n = c.nats.expect("nats");
    assert_eq!(n.addresses, ["10.0.0.1:4222"]);
    assert_eq!(n.user, Some(("alice".into(), "s3cret".into())));
    assert!(!n.jetstream);
    assert_eq!(n.domain.as_deref(), Some("hub"));
    assert_eq!(
        (n.replicas, n.ack_wait, n.max_ack_pending, n.api_timeout),
        (3, Duration::from_secs(5), 64, Duration::from_secs(2))
    );
    let options = n.connect_options("jetmq");
    assert_eq!(
        (options.user.as_deref(), options.pass.as_deref()),
        (Some("alice"), Some("s3cret"))
    );
    let list = apply("[nats]\nurl = \"nats://a:4222, nats://u:p@b:4223\"\n").expect("a list");
    let n = list.nats.expect("nats");
    assert_eq!(n.addresses, ["a:4222", "b:4223"]);
    assert_eq!(n.user, Some(("u".into(), "p".into())));
    for (bad, key) in [
        ("replicas = 0", "nats.replicas"),
        ("replicas = 7", "nats.replicas"),
        ("ack_wait_secs = 0", "nats.ack_wait_secs"),
        ("max_ack_pending = 0", "nats.max_ack_pending"),
        ("api_timeout_secs = 0", "nats.api_timeout_secs"),
        ("domain = \"a.b\"", "nats.domain"),
        ("user = \"bob\"", "nats.user"),
        ("acks = 1", "acks"),
    ] {
        let e = apply(&format!("[nats]\nurl = \"nats://h:4222\"\n{bad}\n")).expect_err(bad);
        assert!(e.contains(key), "{bad}: {e}");
    }
}
