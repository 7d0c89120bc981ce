//! `--record`: a session of real clients against either shell, recorded, replays
//! identically on the core alone (what `jetmq replay` does).

use std::sync::Arc;
use std::time::Duration;

use jetmq::config::ServerConfig;
use jetmq::store::MemoryBackend;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::timeout;

mod common;
use common::Shell;

async fn a_recorded_server_session_replays_identically(shell: Shell) {
    let path =
        std::env::temp_dir().join(format!("jetmq-record-{shell:?}-{}.bin", std::process::id()));
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

    let bytes = std::fs::read(&path).expect("the recording exists");
    match jetmq_core::replay::replay(&bytes).expect("readable") {
        jetmq_core::replay::ReplayReport::Identical { steps, truncated } => {
            assert!(steps >= 5, "{steps} steps");
            assert!(!truncated);
        }
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_file(&path);
}

for_each_shell!(a_recorded_server_session_replays_identically,);
