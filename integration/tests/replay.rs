//! `--record`: a session of real clients against either shell, recorded, replays
//! identically on the core alone and through `jetmq replay`; the same recording rewritten as
//! if another build had made it (another format version, other recorded types, the old
//! format 1) is refused by `jetmq replay` with exit status 2 and a message naming that build.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jetmq::config::ServerConfig;
use jetmq::store::MemoryBackend;
use jetmq_core::replay::{types_fingerprint, JETMQ_VERSION, MAGIC, VERSION};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::timeout;

mod common;
use common::Shell;

fn temp_path(shell: Shell, tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "jetmq-record-{shell:?}-{tag}-{}.bin",
        std::process::id()
    ))
}

/// Runs a short session of a real client against `shell` with `--record` on; returns the
/// recording's path.
async fn record_a_session(shell: Shell, tag: &str) -> PathBuf {
    let path = temp_path(shell, tag);
    let config = ServerConfig {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        data_dir: None,
        record: Some(path.clone()),
        ..ServerConfig::default()
    };
    let server = common::start(shell, config, Arc::new(MemoryBackend::default()))
        .await
        .expect("starts");
    let port = server.local_addrs[0].port();

    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("rec", "127.0.0.1", port), 10);
    client
        .subscribe("r/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    client
        .publish("r/1", QoS::AtLeastOnce, true, "recorded")
        .await
        .expect("publish");
    let got = timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = eventloop.poll().await {
                return p;
            }
        }
    })
    .await
    .expect("the message comes back");
    assert_eq!(&got.payload[..], b"recorded");
    client.disconnect().await.expect("disconnect");
    let _ = timeout(Duration::from_secs(5), eventloop.poll()).await;
    server.shutdown().await.expect("clean stop");
    path
}

/// What `jetmq replay FILE` prints and returns: (exit status, stdout, stderr).
fn jetmq_replay(path: &Path) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = jetmq::record::replay_file(path, &mut out, &mut err);
    (
        status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

async fn a_recorded_server_session_replays_identically(shell: Shell) {
    let path = record_a_session(shell, "same").await;
    let bytes = std::fs::read(&path).expect("the recording exists");
    match jetmq_core::replay::replay(&bytes).expect("readable") {
        jetmq_core::replay::ReplayReport::Identical { steps, truncated } => {
            assert!(steps >= 5, "{steps} steps");
            assert!(!truncated);
        }
        other => panic!("{other:?}"),
    }
    let (status, out, err) = jetmq_replay(&path);
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains("steps identical"), "{out}");
    let _ = std::fs::remove_file(&path);
}

async fn a_recording_of_another_build_is_refused_by_jetmq_replay(shell: Shell) {
    let path = record_a_session(shell, "other").await;
    let recording = std::fs::read(&path).expect("the recording exists");
    let _ = std::fs::remove_file(&path);
    // The layout: magic, format version, u16 length and the jetmq version, 8 bytes of types
    // fingerprint, then the frames.
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
    let cases = [
        (
            "format",
            written_by(VERSION + 1, "9.9.9", types_fingerprint()),
            format!("recorded by jetmq 9.9.9 (format {}", VERSION + 1),
        ),
        (
            "types",
            written_by(VERSION, JETMQ_VERSION, !types_fingerprint()),
            format!(
                "recorded by jetmq {JETMQ_VERSION} (format {VERSION}, types {:016x})",
                !types_fingerprint()
            ),
        ),
        ("v1", v1, "recorded in format 1".to_owned()),
    ];
    for (tag, bytes, says) in cases {
        let path = temp_path(shell, tag);
        std::fs::write(&path, &bytes).expect("write");
        let (status, out, err) = jetmq_replay(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(status, 2, "{tag}: {out}{err}");
        assert!(out.is_empty(), "{tag}: {out}");
        assert!(
            err.contains(&says) && err.contains("replay it with the build that recorded it"),
            "{tag}: {err}"
        );
    }
}

for_each_shell!(
    a_recorded_server_session_replays_identically,
    a_recording_of_another_build_is_refused_by_jetmq_replay,
);
