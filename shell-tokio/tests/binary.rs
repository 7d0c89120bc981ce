//! The `jetmq` binary: its subcommands and its start-up checks. (The server itself is tested
//! through the library in the integration suite, `integration/tests/`, against both shells.)

use std::process::Command;

mod support;
use support::{alice, connack_code, logged_port, reload_to_password_two};

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("jetmq-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A path as a TOML string.
fn toml_path(path: &std::path::Path) -> String {
    format!("{:?}", path.display().to_string())
}

#[test]
fn the_binary_refuses_a_bad_listener_at_start_up() {
    let dir = TempDir::new("config-binary");
    let missing = dir.0.join("nope.pem");
    let config = dir.write(
        "jetmq.toml",
        &format!(
            "[[listeners]]\nkind = \"wss\"\naddress = \"127.0.0.1:0\"\ncert = {}\nkey = {}\n",
            toml_path(&missing),
            toml_path(&missing)
        ),
    );
    let stderr = refused_at_start_up(&dir, &config, &[]);
    assert!(
        stderr.contains("listeners[0].cert") && stderr.contains(&missing.display().to_string()),
        "{stderr}"
    );
    // A command-line address that clashes with a file listener.
    let config = dir.write(
        "clash.toml",
        "[[listeners]]\nkind = \"ws\"\naddress = \"127.0.0.1:18083\"\n",
    );
    let stderr = refused_at_start_up(&dir, &config, &["--listen", "127.0.0.1:18083"]);
    assert!(
        stderr.contains("--listen") || stderr.contains("listen"),
        "{stderr}"
    );
}

/// Runs `jetmq --config FILE ARGS` and expects it to refuse to start (exit status 2); its
/// standard error.
fn refused_at_start_up(dir: &TempDir, config: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_jetmq"))
        .arg("--config")
        .arg(config)
        .args(args)
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .output()
        .expect("run jetmq");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

/// Runs `jetmq hash-password ARGS` with the password `pw` on standard input; its output.
fn hash_password_command(args: &[&str]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetmq"))
        .arg("hash-password")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"pw\n")
        .expect("write");
    let out = child.wait_with_output().expect("finishes");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_binary_hashes_passwords() {
    let hash = hash_password_command(&[]);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(jetmq::auth::check_hash(hash.trim()).is_ok());
}

#[test]
fn the_binary_prints_scram_credentials() {
    let text = hash_password_command(&["--scram"]);
    assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
    assert!(jetmq::scram::ScramCredential::parse(text.trim()).is_ok());
    let e = jetmq::config::ServerConfig::default()
        .apply_toml("[[auth.users]]\nusername = \"bob\"\nscram = \"pw\"\n")
        .expect_err("not a credential")
        .to_string();
    assert!(e.contains("auth.users[0].scram"), "{e}");
}

/// A recording of a short broker run, made by the core's replay encoder as a shell would.
fn short_recording() -> Vec<u8> {
    let config = jetmq_core::broker::BrokerConfig::default();
    let now = jetmq_core::time::Now::default();
    let mut bytes = Vec::new();
    jetmq_core::replay::encode_header(
        &jetmq_core::replay::RecordHeader {
            seed: 7,
            config: config.clone(),
            start: now,
        },
        &mut bytes,
    );
    let mut broker = jetmq_core::broker::Broker::new(config, 7, now);
    let mut out = jetmq_core::broker::Outbox::new();
    let conn = jetmq_core::broker::ConnId::new(1).expect("non-zero");
    let connect = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'c',
    ];
    for input in [
        jetmq_core::broker::Input::Accepted {
            conn,
            info: jetmq_core::broker::ConnInfo {
                peer: "127.0.0.1:1".into(),
                listener: jetmq_core::broker::ListenerKind::Tcp,
                tls_identity: None,
            },
        },
        jetmq_core::broker::Input::Received {
            conn,
            data: bytes::BytesMut::from(&connect[..]),
        },
    ] {
        let encoded = jetmq_core::replay::encode_input(&input);
        broker.handle(now, input, &mut out);
        let digest = jetmq_core::replay::actions_digest(out.actions());
        jetmq_core::replay::encode_step(now, &encoded, digest, &mut bytes);
        out.drain().for_each(drop);
    }
    bytes
}

/// Runs `jetmq replay` on `bytes` written to a file.
fn replay_command(tag: &str, bytes: &[u8]) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("jetmq-binary-{tag}-{}.bin", std::process::id()));
    std::fs::write(&path, bytes).expect("write the recording");
    let output = Command::new(env!("CARGO_BIN_EXE_jetmq"))
        .arg("replay")
        .arg(&path)
        .output()
        .expect("jetmq replay runs");
    let _ = std::fs::remove_file(&path);
    output
}

#[test]
fn the_binary_replays_a_recording() {
    let output = replay_command("replay", &short_recording());
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("all 2 steps identical"),
        "{output:?}"
    );
}

/// A recording of another build (another format version, other recorded types, the old
/// format 1) is refused with exit status 2 and a message naming the build that wrote it.
#[test]
fn the_binary_refuses_a_recording_of_another_build() {
    use jetmq_core::replay::{types_fingerprint, JETMQ_VERSION, MAGIC, VERSION};
    let recording = short_recording();
    let frames = &recording[MAGIC.len() + 1 + 2 + JETMQ_VERSION.len() + 8..];
    let written_by = |format: u8, jetmq: &str, types: u64| {
        let build = jetmq_core::replay::Build {
            jetmq: jetmq.to_owned(),
            format,
            types,
        };
        jetmq_core::replay::relabel(&recording, &build).expect("a recording")
    };
    let mut v1 = MAGIC.to_vec();
    v1.push(1);
    v1.extend_from_slice(frames);
    for (tag, bytes, says) in [
        (
            "format",
            written_by(VERSION + 1, "9.9.9", types_fingerprint()),
            format!("recorded by jetmq 9.9.9 (format {}", VERSION + 1),
        ),
        (
            "types",
            written_by(VERSION, JETMQ_VERSION, !types_fingerprint()),
            format!("types {:016x}", !types_fingerprint()),
        ),
        ("v1", v1, "recorded in format 1".to_owned()),
    ] {
        let output = replay_command(tag, &bytes);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{tag}: {output:?}");
        assert!(
            stderr.contains(&says) && stderr.contains("replay it with the build that recorded it"),
            "{tag}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{tag}: {output:?}");
    }
}

/// SIGHUP makes the running binary read its configuration file's users again.
#[test]
fn sighup_reloads_the_users() {
    use std::time::{Duration, Instant};
    let dir = TempDir::new("reload");
    let file = dir.write("jetmq.toml", &alice("one"));
    let log = dir.0.join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetmq"))
        .args(["--listen", "127.0.0.1:0", "--log-level", "info"])
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .arg("--config")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .expect("jetmq starts");
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(15);
    // It binds port 0 and logs the port it got.
    let port = loop {
        if let Some(port) = logged_port(&said()) {
            break port;
        }
        assert!(
            Instant::now() < deadline,
            "jetmq never listened: {}",
            said()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(connack_code(port, "alice", "one"), 0);
    std::fs::write(&file, alice("two")).expect("rewrite");
    reload_to_password_two(child.id(), port, said);
    assert_eq!(
        connack_code(port, "alice", "one"),
        4,
        "bad user name or password"
    );
    assert!(said().contains("authentication reloaded"), "{}", said());
    let _ = child.kill();
    let _ = child.wait();
}

#[path = "support/operator.rs"]
mod operator;

#[test]
fn check_config_prints_the_effective_configuration_or_the_error() {
    operator::check_config_exits_0_or_1(env!("CARGO_BIN_EXE_jetmq").as_ref());
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    operator::logs_json_lines(env!("CARGO_BIN_EXE_jetmq").as_ref());
}

#[test]
fn completions_and_the_man_page() {
    operator::prints_completions_and_man_page(env!("CARGO_BIN_EXE_jetmq").as_ref());
}
