//! The `jetmq-mio` binary: it reads the configuration file format of `jetmq`, serves MQTT,
//! records, and stops gracefully on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../shell-tokio/tests/support/mod.rs"]
mod support;
use support::{alice, connack_code, logged_port, reload_to_password_two};

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("jetmq-mio-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_bad_configuration_is_refused_naming_the_key() {
    let dir = TempDir::new("config");
    let file = dir.0.join("jetmq.toml");
    std::fs::write(&file, "[limits]\nmax_qos = 3\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_jetmq-mio"))
        .arg("--config")
        .arg(&file)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("limits.max_qos") && stderr.contains("0, 1 or 2"),
        "{stderr}"
    );
}

/// A running `jetmq-mio` with `args`, its log in `dir`: the child, its MQTT port (it binds
/// port 0 and logs the port: no port picked here can be taken by something else, or carry old
/// loopback connections, before the broker binds it) and a reader of what it logged.
fn spawn(dir: &TempDir, args: &[&std::ffi::OsStr]) -> (std::process::Child, u16) {
    let child = Command::new(env!("CARGO_BIN_EXE_jetmq-mio"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .args(args)
        .args(["--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.0.join("stderr")).expect("a log file"))
        .spawn()
        .expect("jetmq-mio starts");
    let deadline = Instant::now() + Duration::from_secs(15);
    let port = loop {
        let log = said(dir);
        if let Some(port) = logged_port(&log) {
            break port;
        }
        assert!(Instant::now() < deadline, "jetmq-mio never listened: {log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    (child, port)
}

/// What the broker logged so far: the bound address, and the reason for any failure.
fn said(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.0.join("stderr")).unwrap_or_default()
}

#[test]
fn the_binary_serves_records_and_stops_on_sigterm() {
    let dir = TempDir::new("serve");
    let recording = dir.0.join("run.rec");
    let (mut child, port) = spawn(&dir, &["--record".as_ref(), recording.as_os_str()]);
    let said = || said(&dir);
    let mut mqtt = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    mqtt.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    mqtt.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'm',
    ])
    .expect("CONNECT");
    let mut connack = [0u8; 4];
    if let Err(e) = mqtt.read_exact(&mut connack) {
        panic!(
            "no CONNACK: {e}; jetmq-mio {:?} said: {}",
            child.try_wait(),
            said()
        );
    }
    assert_eq!(connack, [0x20, 2, 0, 0]);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "jetmq-mio did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");

    // The recording replays identically on the core.
    let bytes = std::fs::read(&recording).expect("the recording exists");
    match jetmq_core::replay::replay(&bytes).expect("readable") {
        jetmq_core::replay::ReplayReport::Identical { steps, .. } => {
            assert!(steps >= 3, "{steps} steps");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sighup_reloads_the_users() {
    let dir = TempDir::new("reload");
    let file = dir.0.join("jetmq.toml");
    std::fs::write(&file, alice("one")).expect("write");
    let (mut child, port) = spawn(&dir, &["--config".as_ref(), file.as_os_str()]);
    assert_eq!(connack_code(port, "alice", "one"), 0);
    std::fs::write(&file, alice("two")).expect("rewrite");
    reload_to_password_two(child.id(), port, || said(&dir));
    assert_eq!(
        connack_code(port, "alice", "one"),
        4,
        "bad user name or password"
    );
    assert!(
        said(&dir).contains("authentication reloaded"),
        "{}",
        said(&dir)
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[path = "../../shell-tokio/tests/support/operator.rs"]
mod operator;

#[test]
fn check_config_prints_the_effective_configuration_or_the_error() {
    operator::check_config_exits_0_or_1(env!("CARGO_BIN_EXE_jetmq-mio").as_ref());
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    operator::logs_json_lines(env!("CARGO_BIN_EXE_jetmq-mio").as_ref());
}

#[test]
fn completions_and_the_man_page() {
    operator::prints_completions_and_man_page(env!("CARGO_BIN_EXE_jetmq-mio").as_ref());
}
