//! Configuration files: every invalid value is refused with the key, the value and what is
//! allowed; unknown keys are errors.

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
"#,
    )
    .expect("valid");
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.max_connections, 50);
    assert_eq!(c.broker.max_packet_size, 65536);
    assert_eq!(c.broker.max_inflight, 10);
    assert_eq!(c.broker.max_qos, QoS::AtLeastOnce);
    assert_eq!(c.broker.connect_timeout.as_secs(), 5);
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
