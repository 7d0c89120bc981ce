//! A fleet: jetmq nodes (one of each shell) sharing a NATS server's JetStream and subjects.
//! A persistent session and its queued QoS 1 messages resume on the other node, a client id
//! taken over on one node closes the connection on the other, retained messages set through
//! one node reach subscribers of the other, and QoS 1 messages cross between online clients.

use std::sync::Arc;
use std::time::Duration;

use jetmq::jetstream::JetStreamBackend;
use jetmq::nats_config::NatsConfig;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

mod common;
use common::nats_server::{free_port, NatsServer};
use common::{Server, Shell, TempDir};

const DEADLINE: Duration = Duration::from_secs(15);

/// A jetmq node of the fleet on `shell`, on the NATS server at `url`.
async fn node(shell: Shell, url: &str) -> (Server, u16) {
    let config = NatsConfig::from_url(url, "test").expect("a NATS URL");
    let store = JetStreamBackend::connect(&config, "jetmq").expect("connect");
    common::serve_with(
        shell,
        &format!("[nats]\nurl = \"{url}\"\n"),
        Arc::new(store),
    )
    .await
}

/// What a client saw: its CONNACK's session-present flag, publishes, acks, and when its
/// connection ended.
struct Client {
    client: AsyncClient,
    session_present: bool,
    publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    acks: mpsc::UnboundedReceiver<()>,
    ended: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn client(id: &str, port: u16, clean: bool) -> Client {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    let (ptx, publishes) = mpsc::unbounded_channel();
    let (atx, acks) = mpsc::unbounded_channel();
    let (etx, ended) = mpsc::unbounded_channel();
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
                Err(_) => {
                    let _ = etx.send(());
                    return;
                }
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
        ended,
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

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        self.acked().await;
    }

    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.to_string())
            .await
            .expect("publish");
        if qos != QoS::AtMostOnce {
            self.acked().await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_fleet_of_two_nodes_on_one_nats_server() {
    let dir = TempDir::new("fleet");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    let (a, port_a) = node(Shell::Tokio, &nats.url()).await;
    let (b, port_b) = node(Shell::Mio, &nats.url()).await;

    // A persistent session made on a, left with a queued QoS 1 message, resumes on b.
    let mut s = client("fleet-s", port_a, false).await;
    s.subscribe("orders/#", QoS::AtLeastOnce).await;
    drop(s);
    let mut p = client("fleet-p", port_a, true).await;
    p.publish("orders/1", QoS::AtLeastOnce, false, "queued")
        .await;
    let mut s = client("fleet-s", port_b, false).await;
    assert!(s.session_present, "node b read the session from JetStream");
    let got = s.next().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.qos),
        ("orders/1", &b"queued"[..], QoS::AtLeastOnce)
    );

    // Online on b, it gets a's QoS 1 messages live, at QoS 1.
    p.publish("orders/2", QoS::AtLeastOnce, false, "live").await;
    let got = s.next().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.qos),
        ("orders/2", &b"live"[..], QoS::AtLeastOnce)
    );

    // A retained message set through a reaches a late subscriber on b.
    p.publish("status/line", QoS::AtLeastOnce, true, "up").await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut late = client("fleet-late", port_b, true).await;
        late.client
            .subscribe("status/#", QoS::AtMostOnce)
            .await
            .expect("subscribe");
        // The retained copy crosses over live: until it has, b has none to send. (The live
        // copy of the publish itself may also reach this subscriber, without RETAIN.)
        let mut retained = None;
        while let Ok(Some(m)) = timeout(Duration::from_millis(200), late.publishes.recv()).await {
            if m.retain {
                retained = Some(m);
                break;
            }
        }
        if let Some(m) = retained {
            assert_eq!(
                (m.topic.as_str(), &m.payload[..]),
                ("status/line", &b"up"[..])
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retained message never reached b"
        );
    }

    // The client id connects on a again: b closes its connection there.
    let s_on_a = client("fleet-s", port_a, false).await;
    assert!(s_on_a.session_present);
    timeout(DEADLINE, s.ended.recv())
        .await
        .expect("b closed the old connection in time");

    drop(s_on_a);
    drop(s);
    drop(p);
    a.shutdown().await.expect("clean stop");
    b.shutdown().await.expect("clean stop");
}
