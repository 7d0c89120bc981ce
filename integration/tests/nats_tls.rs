//! jetmq's connection to NATS over TLS, against a real nats-server that requires TLS and a
//! client certificate: the JetStream store and the subject bridge work through it (two jetmq
//! nodes share state and live messages), the server's `handshake_first` mode works, and a
//! connection without TLS, with an untrusted server certificate or without the client
//! certificate never gets through.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jetmq::jetstream::JetStreamBackend;
use jetmq::nats_config::NatsConfig;
use jetmq_core::js::StoreError;
use rumqttc::QoS;

mod common;
use common::client::client;
use common::nats_server::{free_port, probe, until_answered, NatsServer};
use common::{Pki, Shell, TempDir};

/// The `[nats]` table for `server` over TLS trusting `ca`, presenting `identity`.
fn nats_toml(port: u16, ca: &Path, identity: Option<(&Path, &Path)>, first: bool) -> String {
    let mut toml = format!(
        "[nats]\nurl = \"tls://127.0.0.1:{port}\"\ntls_ca_file = {:?}\napi_timeout_secs = 10\n",
        ca.to_string_lossy()
    );
    if let Some((cert, key)) = identity {
        toml.push_str(&format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
            cert.to_string_lossy(),
            key.to_string_lossy()
        ));
    }
    if first {
        toml.push_str("tls_handshake_first = true\n");
    }
    toml
}

/// The NATS configuration a `[nats]` table gives.
fn nats_config(toml: &str) -> NatsConfig {
    let mut config = jetmq::config::ServerConfig::default();
    config.apply_toml(toml).expect("a valid [nats] table");
    config.nats.expect("a NATS server")
}

/// Two jetmq nodes on one TLS NATS server: a QoS 0 message crosses the subject bridge from
/// one to the other, a QoS 1 message for a persistent session is stored in JetStream and
/// delivered, and a retained message set on one node is delivered on the other.
#[tokio::test]
async fn two_nodes_share_state_and_messages_over_mutual_tls() {
    let pki = Pki::new("nats-tls");
    let dir = TempDir::new("nats-tls-js");
    let nats = NatsServer::with_tls(free_port(), &dir.0, &pki, false);
    let toml = nats_toml(
        nats.port,
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
        false,
    );
    let mut nodes = Vec::new();
    for name in ["tls-a", "tls-b"] {
        let backend = JetStreamBackend::connect(&nats_config(&toml), name).expect("connect");
        until_answered(&backend);
        nodes.push(common::serve_with(Shell::Tokio, &toml, Arc::new(backend)).await);
    }
    let (a, b) = (nodes[0].1, nodes[1].1);

    let mut live = client("tls-live", b, true).await;
    live.subscribe("tls/#", QoS::AtMostOnce).await;
    let mut queued = client("tls-queued", b, false).await;
    queued.subscribe("tls/#", QoS::AtLeastOnce).await;
    let mut publisher = client("tls-pub", a, true).await;
    // The bridge's subscriptions may still be on their way to NATS: publish until the live
    // subscriber on the other node has one.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        publisher
            .publish("tls/ping", QoS::AtMostOnce, false, "0")
            .await;
        if tokio::time::timeout(Duration::from_millis(200), live.next())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no QoS 0 message crossed the bridge"
        );
    }
    publisher
        .publish("tls/stored", QoS::AtLeastOnce, true, "kept")
        .await; // PUBACK: stored in JetStream over TLS
    let got = loop {
        let m = queued.next().await;
        if m.topic == "tls/stored" {
            break m;
        }
    };
    assert_eq!(
        (&got.payload[..], got.qos),
        (&b"kept"[..], QoS::AtLeastOnce)
    );
    let mut late = client("tls-late", b, true).await;
    late.subscribe("tls/stored", QoS::AtMostOnce).await;
    let retained = late.next().await;
    assert_eq!(
        (&retained.payload[..], retained.retain),
        (&b"kept"[..], true)
    );
    drop((live, queued, publisher, late));
    for (server, _) in nodes {
        server.shutdown().await.expect("clean stop");
    }
}

/// The server's `handshake_first` mode (TLS before `INFO`): the store contract holds.
#[test]
fn tls_before_info_works_with_handshake_first() {
    let pki = Pki::new("nats-tls-first");
    let dir = TempDir::new("nats-tls-first-js");
    let nats = NatsServer::with_tls(free_port(), &dir.0, &pki, true);
    let toml = nats_toml(
        nats.port,
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
        true,
    );
    let backend = JetStreamBackend::connect(&nats_config(&toml), "first").expect("connect");
    until_answered(&backend);
    jetmq_store::contract::run_all(&|r| backend.execute(r), "first");
}

/// Connections that must not get through: while a good one is answered, a request on each
/// refused one is never answered (it times out waiting for JetStream, or fails as
/// unavailable).
#[test]
fn without_tls_or_trust_the_connection_is_refused() {
    let pki = Pki::new("nats-tls-refused");
    let dir = TempDir::new("nats-tls-refused-js");
    let nats = NatsServer::with_tls(free_port(), &dir.0, &pki, false);
    let identity = Some((pki.client_cert.as_path(), pki.client_key.as_path()));
    let refused = [
        (
            "no TLS",
            NatsConfig::from_url(&nats.url(), "test").expect("a NATS URL"),
        ),
        (
            "an untrusted server certificate",
            nats_config(&nats_toml(nats.port, &pki.rogue_cert, identity, false)),
        ),
        (
            "no client certificate",
            nats_config(&nats_toml(nats.port, &pki.ca, None, false)),
        ),
        (
            "a client certificate of another CA",
            nats_config(&nats_toml(
                nats.port,
                &pki.ca,
                Some((&pki.rogue_cert, &pki.rogue_key)),
                false,
            )),
        ),
    ]
    .map(|(what, mut config)| {
        config.api_timeout = Duration::from_secs(2);
        let backend = JetStreamBackend::connect(&config, "refused").expect("connect");
        (what, backend)
    });
    // The control: the right settings get through (by then the others have tried too).
    let good = JetStreamBackend::connect(
        &nats_config(&nats_toml(nats.port, &pki.ca, identity, false)),
        "good",
    )
    .expect("connect");
    until_answered(&good);
    std::thread::scope(|scope| {
        for (what, backend) in &refused {
            scope.spawn(move || match backend.execute(probe()) {
                Err(StoreError::Timeout | StoreError::Unavailable(_)) => {}
                other => panic!("{what}: the connection got through: {other:?}"),
            });
        }
    });
}
