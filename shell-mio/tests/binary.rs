//! The `jetmq-mio` binary: it reads the configuration file format of `jetmq`, serves MQTT,
//! records, and stops gracefully on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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

#[test]
fn the_binary_serves_records_and_stops_on_sigterm() {
    let dir = TempDir::new("serve");
    let port = free_port();
    let recording = dir.0.join("run.rec");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetmq-mio"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .arg("--record")
        .arg(&recording)
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("jetmq-mio starts");
    // Wait (with a deadline) until it listens.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut mqtt = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("jetmq-mio never listened: {e}"),
        }
    };
    mqtt.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    mqtt.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'm',
    ])
    .expect("CONNECT");
    let mut connack = [0u8; 4];
    mqtt.read_exact(&mut connack).expect("CONNACK");
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
