//! The server over real sockets on 127.0.0.1 (port 0), with rumqttc as the client (MQTT 3.1.1
//! and 5.0) and raw sockets for malformed input.

use std::sync::Arc;
use std::time::Duration;

use jetmq::config::ServerConfig;
use jetmq::store::MemoryBackend;
use rumqttc::{LastWill, MqttOptions, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;
use common::client::Client;
use common::{Server, Shell};

const DEADLINE: Duration = Duration::from_secs(10);

async fn server(shell: Shell) -> (Server, u16) {
    common::serve(shell, "").await
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connects and waits for a successful CONNACK.
async fn connect(opts: MqttOptions) -> Client {
    timeout(DEADLINE, common::client::connect(opts))
        .await
        .expect("CONNACK in time")
        .expect("a CONNACK accepting the client")
}

async fn pub_sub_at_every_qos(shell: Shell) {
    let (server, port) = server(shell).await;
    let mut sub = connect(options("sub", port)).await;
    sub.subscribe("sensors/+/temp", QoS::ExactlyOnce).await;
    let publisher = connect(options("pub", port)).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .client
            .publish(format!("sensors/{i}/temp"), qos, false, format!("m{i}"))
            .await
            .expect("publish");
        let got = sub.next().await;
        assert_eq!(got.topic, format!("sensors/{i}/temp"));
        assert_eq!(&got.payload[..], format!("m{i}").as_bytes());
        assert_eq!(got.qos, qos);
        assert!(!got.retain);
    }
    server.shutdown().await.expect("clean shutdown");
}

async fn retained_messages_reach_late_subscribers(shell: Shell) {
    let (server, port) = server(shell).await;
    let publisher = connect(options("pub", port)).await;
    publisher
        .client
        .publish("status/door", QoS::AtLeastOnce, true, "open")
        .await
        .expect("publish");
    // Wait until the broker has it: a subscriber on the same connection sees the live copy.
    let mut late = connect(options("late", port)).await;
    let mut tries = 0;
    let got = loop {
        late.client
            .subscribe("status/#", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        if let Ok(Some(p)) = timeout(Duration::from_millis(500), late.publishes.recv()).await {
            break p;
        }
        tries += 1;
        assert!(tries < 20, "retained message never arrived");
    };
    assert_eq!(got.topic, "status/door");
    assert!(
        got.retain,
        "sent because of the subscription, so RETAIN is set"
    );
    server.shutdown().await.expect("clean shutdown");
}

async fn will_is_published_when_a_client_vanishes(shell: Shell) {
    let (server, port) = server(shell).await;
    let mut watcher = connect(options("watcher", port)).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let mut opts = options("doomed", port);
    opts.set_last_will(LastWill::new(
        "wills/doomed",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let doomed = connect(opts).await;
    // Dropping the client (its event loop) closes the socket without DISCONNECT.
    drop(doomed);
    let will = watcher.next().await;
    assert_eq!(will.topic, "wills/doomed");
    assert_eq!(&will.payload[..], b"gone");
    server.shutdown().await.expect("clean shutdown");
}

async fn a_second_connection_takes_the_session_over(shell: Shell) {
    let (server, port) = server(shell).await;
    let mut first = connect(options("twin", port)).await;
    let mut second = connect(options("twin", port)).await;
    // The first connection's event loop ends: the broker closed it.
    timeout(DEADLINE, first.ended.recv())
        .await
        .expect("first connection closed in time");
    second.subscribe("still/alive", QoS::AtMostOnce).await;
    server.shutdown().await.expect("clean shutdown");
}

async fn garbage_on_one_connection_leaves_the_others_alone(shell: Shell) {
    let (server, port) = server(shell).await;
    let mut good = connect(options("good", port)).await;
    good.subscribe("t", QoS::AtMostOnce).await;
    let mut raw = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    raw.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00])
        .await
        .expect("write");
    let mut buf = [0u8; 16];
    let n = timeout(DEADLINE, raw.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "the broker closes a connection that starts with garbage"
    );
    let other = connect(options("other", port)).await;
    other
        .client
        .publish("t", QoS::AtMostOnce, false, "fine")
        .await
        .expect("publish");
    assert_eq!(&good.next().await.payload[..], b"fine");
    server.shutdown().await.expect("clean shutdown");
}

async fn keep_alive_expiry_closes_the_connection(shell: Shell) {
    let (server, port) = server(shell).await;
    let mut raw = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // CONNECT, 3.1.1, client "k", keep-alive 1 s; then silence.
    raw.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 1, 0, 1, b'k',
    ])
    .await
    .expect("write");
    let mut connack = [0u8; 4];
    timeout(DEADLINE, raw.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .expect("read");
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let mut rest = [0u8; 1];
    let n = timeout(Duration::from_secs(5), raw.read(&mut rest))
        .await
        .expect("closed within 1.5 s and change")
        .unwrap_or(0);
    assert_eq!(n, 0);
    server.shutdown().await.expect("clean shutdown");
}

async fn mqtt5_clients_and_shutdown_with_0x8b(shell: Shell) {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as Client5, Event as E5, MqttOptions as O5};
    let (server, port) = server(shell).await;
    let (client, mut eventloop) = Client5::new(O5::new("five", "127.0.0.1", port), 10);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(E5::Incoming(p)) => {
                    let _ = tx.send(Ok(p));
                }
                Ok(_) => {}
                // rumqttc reports a server's DISCONNECT as an error carrying its reason code.
                Err(rumqttc::v5::ConnectionError::MqttState(
                    rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
                )) => {
                    let _ = tx.send(Err(reason_code));
                    return;
                }
                Err(e) => {
                    eprintln!("v5 client error: {e:?}");
                    return;
                }
            }
        }
    });
    client
        .subscribe("v5/t", Q5::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut subscribed = false;
    while !subscribed {
        match timeout(DEADLINE, rx.recv()).await.expect("in time") {
            Some(Ok(P5::SubAck(_))) => subscribed = true,
            Some(_) => {}
            None => panic!("client stopped"),
        }
    }
    client
        .publish("v5/t", Q5::AtLeastOnce, false, "hello")
        .await
        .expect("publish");
    loop {
        match timeout(DEADLINE, rx.recv()).await.expect("in time") {
            Some(Ok(P5::Publish(p))) => {
                assert_eq!(&p.payload[..], b"hello");
                break;
            }
            Some(_) => {}
            None => panic!("client stopped"),
        }
    }
    let stopping = tokio::spawn(server.shutdown());
    loop {
        match timeout(DEADLINE, rx.recv()).await.expect("in time") {
            Some(Err(reason)) => {
                assert_eq!(
                    reason,
                    rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::ServerShuttingDown
                );
                break;
            }
            Some(Ok(_)) => {}
            None => panic!("no DISCONNECT before the connection ended"),
        }
    }
    timeout(DEADLINE, stopping)
        .await
        .expect("shutdown in time")
        .expect("join")
        .expect("clean");
    task.abort();
}

async fn connections_beyond_max_connections_are_refused(shell: Shell) {
    let config = ServerConfig {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        data_dir: None,
        max_connections: 1,
        ..ServerConfig::default()
    };
    let server = common::start(shell, config, Arc::new(MemoryBackend::default()))
        .await
        .expect("starts");
    let port = server.local_addrs[0].port();
    let _first = connect(options("first", port)).await;
    let mut second = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp connect");
    second
        .write_all(&[
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 1, b's',
        ])
        .await
        .expect("write");
    let mut buf = [0u8; 4];
    let n = timeout(DEADLINE, second.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "the connection over the limit is closed without CONNACK"
    );
    server.shutdown().await.expect("clean shutdown");
}

/// A client subscribed to what it publishes that writes a flood without reading its output
/// is still read: the broker's reading never waits for its writing to that client (whose
/// QoS 0 output beyond the unsent limit is dropped), so the flood goes through and its last
/// message reaches another subscriber, long before the slow-consumer timeout could end it.
async fn a_client_flooding_itself_without_reading_is_still_read(shell: Shell) {
    use bytes::Bytes;
    use jetmq_core::codec::{
        Connect, Packet, PacketId, ProtocolVersion, Publish, QoS as RawQoS, Subscribe,
        SubscriptionOptions,
    };
    let (server, port) = server(shell).await;
    let mut watch = common::client::client("flood-watch", port, true).await;
    watch.subscribe("flood/last", QoS::AtMostOnce).await;
    let (mut raw, ack) =
        common::raw::RawClient::connect(port, Connect::new(ProtocolVersion::V5, "flood".into()))
            .await;
    assert!(matches!(ack, Some(Packet::ConnAck(_))), "{ack:?}");
    raw.send(&Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        properties: Default::default(),
        filters: vec![(
            "flood/#".into(),
            SubscriptionOptions::new(RawQoS::AtMostOnce),
        )],
    }))
    .await;
    assert!(matches!(raw.next().await, Some(Packet::SubAck(_))));
    // 32 MiB of publishes, far more than the socket buffers of both directions hold.
    let mut flood = bytes::BytesMut::new();
    let one = Packet::Publish(Publish::new(
        "flood/x".into(),
        Bytes::from(vec![b'x'; 16 * 1024]),
    ));
    for _ in 0..2048 {
        one.encode(ProtocolVersion::V5, &mut flood);
    }
    Packet::Publish(Publish::new(
        "flood/last".into(),
        Bytes::from_static(b"done"),
    ))
    .encode(ProtocolVersion::V5, &mut flood);
    timeout(Duration::from_secs(20), raw.send_bytes(&flood))
        .await
        .expect("the broker kept reading the flood");
    let last = watch.next().await;
    assert_eq!(
        (last.topic.as_str(), &last.payload[..]),
        ("flood/last", &b"done"[..])
    );
    drop(raw);
    server.shutdown().await.expect("clean stop");
}

/// The server's `$SYS/broker/` statistics reach a `$SYS/#` subscriber every interval (here
/// 1 s), through both shells' timers.
async fn sys_statistics_reach_a_sys_subscriber(shell: Shell) {
    let (server, port) = common::serve(shell, "[sys]\ninterval_secs = 1\n").await;
    let mut sub = connect(options("sys", port)).await;
    sub.subscribe("$SYS/broker/#", QoS::AtMostOnce).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut connected = None;
    while connected.is_none() {
        let got = timeout(
            deadline.saturating_duration_since(tokio::time::Instant::now()),
            sub.publishes.recv(),
        )
        .await
        .expect("statistics in time")
        .expect("client running");
        if got.topic == "$SYS/broker/clients/connected" {
            connected = Some(String::from_utf8_lossy(&got.payload).into_owned());
        }
    }
    assert_eq!(connected.as_deref(), Some("1"));
    server.shutdown().await.expect("clean shutdown");
}

/// `GET /metrics` on `[metrics] listen` answers in Prometheus' text format with the broker's
/// figures (here also the retained-message quota at work); other paths get 404.
async fn prometheus_metrics_are_served(shell: Shell) {
    let (server, port) = common::serve(
        shell,
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_retained_messages = 1\n",
    )
    .await;
    let metrics = server.metrics_addr.expect("a metrics address");
    let sub = connect(options("watcher", port)).await;
    let get = |path: &'static str| async move {
        let mut http = TcpStream::connect(metrics).await.expect("connects");
        http.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("request");
        let mut response = String::new();
        timeout(DEADLINE, http.read_to_string(&mut response))
            .await
            .expect("an answer in time")
            .expect("read");
        response
    };
    let response = get("/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.contains("\njetmq_clients_connected 1\n"),
        "{response}"
    );
    assert!(
        response.contains("# TYPE jetmq_publish_sent_total counter"),
        "{response}"
    );
    assert!(
        response.contains("jetmq_publish_dropped_total{reason=\"slow_consumer\"} 0"),
        "{response}"
    );
    assert!(get("/").await.starts_with("HTTP/1.1 404"));

    // Two retained messages on new topics with room for one: the second is refused.
    for (topic, payload) in [("r/1", "four"), ("r/2", "five5")] {
        sub.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
            .expect("publish");
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let response = get("/metrics").await;
        if response.contains("\njetmq_retained_refused_total 1\n") {
            assert!(
                response.contains("\njetmq_retained_messages 1\n"),
                "{response}"
            );
            assert!(
                // Topic "r/1" and payload "four": 3 + 4 bytes kept.
                response.contains("\njetmq_retained_bytes 7\n"),
                "{response}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refusal never showed: {response}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await.expect("clean shutdown");
}

for_each_shell!(
    prometheus_metrics_are_served,
    sys_statistics_reach_a_sys_subscriber,
    pub_sub_at_every_qos,
    a_client_flooding_itself_without_reading_is_still_read,
    retained_messages_reach_late_subscribers,
    will_is_published_when_a_client_vanishes,
    a_second_connection_takes_the_session_over,
    garbage_on_one_connection_leaves_the_others_alone,
    keep_alive_expiry_closes_the_connection,
    mqtt5_clients_and_shutdown_with_0x8b,
    connections_beyond_max_connections_are_refused,
);
