//! The JetStream store backend against a real nats-server with JetStream: the store contract
//! suite (the same cases the embedded store passes), and jetmq keeping its state there.

use std::sync::Arc;
use std::time::Duration;

use jetmq::jetstream::JetStreamBackend;
use jetmq::nats_config::NatsConfig;
use jetmq_core::js::{StoreReply, StoreRequest, Stream};
use jetmq_store::contract;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;
use common::nats_server::{free_port, NatsServer};
use common::{Shell, TempDir};

fn nats_config(server: &NatsServer) -> NatsConfig {
    let mut config = NatsConfig::from_url(&server.url(), "test").expect("a NATS URL");
    config.api_timeout = Duration::from_secs(10);
    config
}

#[test]
fn store_contract_on_jetstream() {
    let dir = TempDir::new("js-contract");
    let server = NatsServer::with_jetstream(free_port(), &dir.0);
    let backend = JetStreamBackend::connect(&nats_config(&server), "contract").expect("connect");
    contract::run_all(&|r| backend.execute(r), "a");
    backend.stop();
    // A second backend (a restarted broker) finds the streams and shares them.
    let again = JetStreamBackend::connect(&nats_config(&server), "contract").expect("connect");
    contract::run_all(&|r| again.execute(r), "b");
}

const DEADLINE: Duration = Duration::from_secs(15);

/// A connected rumqttc client: its CONNACK's session-present flag and its incoming publishes
/// (its event loop acknowledges QoS 1 deliveries itself).
struct Client {
    client: AsyncClient,
    session_present: bool,
    publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    acks: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn client(id: &str, port: u16, clean: bool) -> Client {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    let (ptx, publishes) = mpsc::unbounded_channel();
    let (atx, acks) = mpsc::unbounded_channel();
    let (ctx, mut connack) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = ptx.send(p);
                }
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    let _ = ctx.send(c.session_present);
                }
                Ok(Event::Incoming(Packet::SubAck(_) | Packet::PubAck(_))) => {
                    let _ = atx.send(());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let session_present = timeout(DEADLINE, connack.recv())
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    Client {
        client,
        session_present,
        publishes,
        acks,
        task,
    }
}

impl Client {
    async fn acked(&mut self) {
        timeout(DEADLINE, self.acks.recv())
            .await
            .expect("acknowledged in time")
            .expect("client running");
    }

    async fn next(&mut self) -> rumqttc::Publish {
        timeout(DEADLINE, self.publishes.recv())
            .await
            .expect("a message in time")
            .expect("client running")
    }
}

/// jetmq on `shell` keeping its state in the JetStream of `nats`.
async fn jetmq_on(shell: Shell, nats: &NatsServer) -> (common::Server, u16) {
    let backend = JetStreamBackend::connect(&nats_config(nats), "jetmq").expect("connect");
    common::serve_with(shell, "", Arc::new(backend)).await
}

/// A persistent session, its queued QoS 1 message and a retained message live in JetStream:
/// a new jetmq process on the same NATS server has them all, and the delivered message is
/// released from the stream once the client acknowledged it.
async fn state_survives_a_jetmq_restart(shell: Shell) {
    let dir = TempDir::new("js-restart");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    let (server, port) = jetmq_on(shell, &nats).await;

    let mut sub = client("js-sub", port, false).await;
    sub.client
        .subscribe("alerts/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    sub.acked().await;
    sub.task.abort();
    let mut publisher = client("js-pub", port, true).await;
    publisher
        .client
        .publish("alerts/fire", QoS::AtLeastOnce, false, "queued")
        .await
        .expect("publish");
    publisher.acked().await; // PUBACK: stored in JetStream for js-sub
    publisher
        .client
        .publish("status/door", QoS::AtLeastOnce, true, "open")
        .await
        .expect("publish");
    publisher.acked().await;
    publisher.task.abort();
    server.shutdown().await.expect("clean stop");

    // A new jetmq process: nothing of the old one but the NATS server.
    let (server, port) = jetmq_on(shell, &nats).await;
    let mut sub = client("js-sub", port, false).await;
    assert!(sub.session_present, "the session came back from JetStream");
    let got = sub.next().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.qos),
        ("alerts/fire", &b"queued"[..], QoS::AtLeastOnce)
    );
    let mut late = client("js-late", port, true).await;
    late.client
        .subscribe("status/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let retained = late.next().await;
    assert_eq!(
        (
            retained.topic.as_str(),
            &retained.payload[..],
            retained.retain
        ),
        ("status/door", &b"open"[..], true)
    );

    // The acknowledged message leaves the interest-retained stream.
    let probe = JetStreamBackend::connect(&nats_config(&nats), "probe").expect("connect");
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let last = probe.execute(StoreRequest::GetLast {
            stream: Stream::Messages,
            subject: "$MQTT.msgs.alerts.fire".into(),
        });
        match last {
            Ok(StoreReply::Message(None)) => break,
            Ok(StoreReply::Message(Some(_))) => {
                assert!(std::time::Instant::now() < deadline, "never acknowledged");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("get last: {other:?}"),
        }
    }
    sub.task.abort();
    late.task.abort();
    server.shutdown().await.expect("clean stop");
}

for_each_shell!(state_survives_a_jetmq_restart);
