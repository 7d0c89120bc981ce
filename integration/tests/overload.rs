//! Overload over real sockets, on both shells: a subscriber slower than its publisher gets every
//! message the broker acknowledged, in order, with small queues that overflow at once. A clean
//! subscriber holds the publisher back (its PUBACKs wait); a persistent one spills to the store
//! while a fast subscriber keeps its pace.

use std::time::Duration;

use bytes::Bytes;
use jetmq::store::MemoryBackend;
use jetmq_core::codec::{
    Ack, Connect, Packet, PacketId, ProtocolVersion, Publish, PublishQos, QoS, Subscribe,
    SubscriptionOptions,
};

mod common;
use common::raw::RawClient;
use common::Shell;

/// Two in flight and ten queued per session: every run below overflows many times over.
const SMALL_QUEUES: &str = "[limits]\nmax_inflight = 2\nmax_queued_messages = 10\n";
const MESSAGES: u16 = 600;

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

async fn client(port: u16, id: &str, clean: bool) -> RawClient {
    let mut connect = Connect::new(ProtocolVersion::V5, id.into());
    connect.clean_start = clean;
    if !clean {
        connect.properties.session_expiry_interval = Some(600);
    }
    let (c, answer) = RawClient::connect(port, connect).await;
    assert!(
        matches!(answer, Some(Packet::ConnAck(ref a)) if a.reason == jetmq_core::codec::ConnectReason::Success),
        "{answer:?}"
    );
    c
}

async fn subscribe(c: &mut RawClient, qos: QoS) {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![("t".into(), SubscriptionOptions::new(qos))],
    }))
    .await;
    assert!(matches!(c.next().await, Some(Packet::SubAck(_))));
}

/// Publishes `MESSAGES` QoS 1 messages "1", "2", ... with a window of 32 unacknowledged;
/// returns how many PUBACKs came back.
async fn publish_all(mut p: RawClient) -> usize {
    let mut acked = 0usize;
    let mut sent = 0u16;
    while acked < usize::from(MESSAGES) {
        while sent < MESSAGES && usize::from(sent) < acked + 32 {
            sent += 1;
            let mut publish = Publish::new("t".into(), Bytes::from(sent.to_string()));
            publish.qos = PublishQos::AtLeastOnce(pid(sent));
            p.send(&Packet::Publish(publish)).await;
        }
        match p.next().await {
            Some(Packet::PubAck(_)) => acked += 1,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    acked
}

/// Reads `MESSAGES` publishes, acknowledging each after `pause` (a subscriber slower than the
/// publisher); returns the payloads in arrival order.
async fn receive_all(mut s: RawClient, pause: Duration) -> Vec<u16> {
    let mut got = Vec::new();
    while got.len() < usize::from(MESSAGES) {
        match s.next().await {
            Some(Packet::Publish(p)) => {
                let text = String::from_utf8_lossy(&p.payload).into_owned();
                got.push(text.parse().expect("a number"));
                if let Some(id) = p.qos.packet_id() {
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    s.send(&Packet::PubAck(Ack::new(id))).await;
                }
            }
            Some(_) => {}
            None => panic!(
                "the broker closed the subscriber after {} messages",
                got.len()
            ),
        }
    }
    got
}

fn in_order() -> Vec<u16> {
    (1..=MESSAGES).collect()
}

async fn a_slow_clean_subscriber_gets_every_acknowledged_message(shell: Shell) {
    let (server, port) = common::serve_with(
        shell,
        SMALL_QUEUES,
        std::sync::Arc::new(MemoryBackend::default()),
    )
    .await;
    let mut slow = client(port, "slow", true).await;
    subscribe(&mut slow, QoS::AtLeastOnce).await;
    let publisher = client(port, "pub", true).await;
    let receiving = tokio::spawn(receive_all(slow, Duration::from_micros(200)));
    let acked = tokio::spawn(publish_all(publisher));
    let got = tokio::time::timeout(Duration::from_secs(60), receiving)
        .await
        .expect("in time")
        .expect("receiver");
    assert_eq!(got, in_order());
    assert_eq!(acked.await.expect("publisher"), usize::from(MESSAGES));
    server.shutdown().await.expect("clean shutdown");
}

async fn a_slow_persistent_subscriber_spills_while_a_fast_one_keeps_up(shell: Shell) {
    let (server, port) = common::serve_with(
        shell,
        SMALL_QUEUES,
        std::sync::Arc::new(MemoryBackend::default()),
    )
    .await;
    let mut slow = client(port, "slow", false).await;
    subscribe(&mut slow, QoS::AtLeastOnce).await;
    let mut fast = client(port, "fast", true).await;
    subscribe(&mut fast, QoS::AtLeastOnce).await;
    let publisher = client(port, "pub", true).await;
    // The slow one starts reading only once everything is published and acknowledged.
    let fast_receiving = tokio::spawn(receive_all(fast, Duration::ZERO));
    let acked = tokio::time::timeout(Duration::from_secs(60), publish_all(publisher))
        .await
        .expect("the publisher is not held back by the persistent subscriber");
    assert_eq!(acked, usize::from(MESSAGES));
    assert_eq!(fast_receiving.await.expect("fast"), in_order());
    let got = tokio::time::timeout(Duration::from_secs(60), receive_all(slow, Duration::ZERO))
        .await
        .expect("in time");
    assert_eq!(got, in_order(), "read back from the store, in order");
    server.shutdown().await.expect("clean shutdown");
}

for_each_shell!(
    a_slow_clean_subscriber_gets_every_acknowledged_message,
    a_slow_persistent_subscriber_spills_while_a_fast_one_keeps_up,
);
