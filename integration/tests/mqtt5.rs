//! MQTT 5.0 end to end: every feature of the spec through the tokio server and a real v5
//! client (rumqttc), with a raw client where rumqttc cannot send the packet a case needs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jetmq::store::{EmbeddedBackend, StoreBackend};
use jetmq_core::codec::{
    Connect, ConnectReason, DisconnectReason, Packet as RawPacket, ProtocolVersion,
    Publish as RawPublish, PublishQos,
};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, DisconnectReasonCode, Filter, Packet, PubAck,
    PubAckReason as RPubAckReason, Publish, PublishProperties, RetainForwardRule, SubAck,
    SubscribeProperties,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;
use common::raw::RawClient;
use common::{Shell, TempDir};

const DEADLINE: Duration = Duration::from_secs(15);

use common::{serve as server, serve_with as server_with};

/// What a v5 client's event loop reports.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a test helper: one value in flight at a time
enum Seen {
    Packet(Packet),
    /// The broker sent DISCONNECT.
    Disconnected(DisconnectReasonCode, Option<String>),
    /// The broker refused the CONNECT.
    Refused(ConnectReturnCode),
    /// The connection ended otherwise (the error, for failure messages).
    Ended(#[allow(dead_code)] String),
}

/// A rumqttc v5 client whose event loop runs in a task, reporting what it sees.
struct Client {
    client: AsyncClient,
    connack: ConnAck,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connects; `Err` carries what happened instead of a CONNACK.
async fn try_connect(o: MqttOptions) -> Result<Client, Seen> {
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    let (tx, mut seen) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let event = match eventloop.poll().await {
                Ok(Event::Incoming(p)) => Seen::Packet(p),
                Ok(Event::Outgoing(_)) => continue,
                Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code,
                    reason_string,
                })) => Seen::Disconnected(reason_code, reason_string),
                Err(ConnectionError::ConnectionRefused(code)) => Seen::Refused(code),
                Err(e) => Seen::Ended(e.to_string()),
            };
            let last = !matches!(event, Seen::Packet(_));
            if tx.send(event).is_err() || last {
                return;
            }
        }
    });
    match timeout(DEADLINE, seen.recv())
        .await
        .expect("an answer in time")
    {
        Some(Seen::Packet(Packet::ConnAck(connack))) => Ok(Client {
            client,
            connack,
            seen,
            task,
        }),
        Some(other) => Err(other),
        None => Err(Seen::Ended("no answer".into())),
    }
}

async fn connect(o: MqttOptions) -> Client {
    match try_connect(o).await {
        Ok(c) => c,
        Err(e) => panic!("connection refused: {e:?}"),
    }
}

impl Client {
    async fn next(&mut self) -> Seen {
        timeout(DEADLINE, self.seen.recv())
            .await
            .expect("an event in time")
            .expect("the client is running")
    }

    /// The next PUBLISH (skipping acknowledgements).
    async fn publish(&mut self) -> Publish {
        loop {
            match self.next().await {
                Seen::Packet(Packet::Publish(p)) => return p,
                Seen::Packet(_) => {}
                other => panic!("expected a PUBLISH, got {other:?}"),
            }
        }
    }

    async fn suback(&mut self) -> SubAck {
        loop {
            match self.next().await {
                Seen::Packet(Packet::SubAck(s)) => return s,
                Seen::Packet(Packet::Publish(p)) => panic!("unexpected PUBLISH {p:?}"),
                Seen::Packet(_) => {}
                other => panic!("expected a SUBACK, got {other:?}"),
            }
        }
    }

    async fn puback(&mut self) -> PubAck {
        loop {
            match self.next().await {
                Seen::Packet(Packet::PubAck(a)) => return a,
                Seen::Packet(_) => {}
                other => panic!("expected a PUBACK, got {other:?}"),
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        self.suback().await;
    }

    async fn subscribe_with(&mut self, filter: Filter, props: Option<SubscribeProperties>) {
        match props {
            Some(p) => {
                self.client
                    .subscribe_many_with_properties([filter], p)
                    .await
            }
            None => self.client.subscribe_many([filter]).await,
        }
        .expect("subscribe");
        self.suback().await;
    }

    async fn publish_props(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &str,
        props: PublishProperties,
    ) {
        self.client
            .publish_with_properties(topic, qos, retain, payload.to_string(), props)
            .await
            .expect("publish");
    }

    /// Publishes and waits for the PUBACK, so the broker has routed it.
    async fn publish_acked(
        &mut self,
        topic: &str,
        retain: bool,
        payload: &str,
        props: PublishProperties,
    ) {
        self.publish_props(topic, QoS::AtLeastOnce, retain, payload, props)
            .await;
        let ack = self.puback().await;
        assert_eq!(ack.reason, RPubAckReason::Success);
    }

    /// Disconnects normally and waits until the broker has seen it.
    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("disconnect");
        while let Some(e) = timeout(DEADLINE, self.seen.recv())
            .await
            .expect("ends in time")
        {
            if !matches!(e, Seen::Packet(_)) {
                break;
            }
        }
        self.task.abort();
    }
}

fn expiry_props(secs: u32) -> PublishProperties {
    PublishProperties {
        message_expiry_interval: Some(secs),
        ..PublishProperties::default()
    }
}

/// Waits out a timer of the broker's (an expiry); the behaviour under test is the passing of
/// that time, so there is no condition to wait on instead.
async fn let_time_pass(d: Duration) {
    tokio::time::sleep(d).await;
}

async fn session_expiry_zero_some_and_the_server_maximum(shell: Shell) {
    let (server, port) = server(shell, "[limits]\nmax_session_expiry_secs = 1\n").await;
    // Asking for "never" gets the server's maximum, told in CONNACK.
    let mut o = options("forever", port);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(u32::MAX));
    let mut forever = connect(o.clone()).await;
    assert_eq!(
        forever
            .connack
            .properties
            .as_ref()
            .and_then(|p| p.session_expiry_interval),
        Some(1)
    );
    forever.subscribe("x", QoS::AtLeastOnce).await;
    forever.disconnect().await;
    // Expiry 0: the session ends with the connection.
    let mut z = options("zero", port);
    z.set_clean_start(false);
    z.set_session_expiry_interval(Some(0));
    connect(z.clone()).await.disconnect().await;
    assert!(!connect(z).await.connack.session_present);
    // A 3.1.1 persistent session gets the server maximum too.
    let mut o4 = rumqttc::MqttOptions::new("old", "127.0.0.1", port);
    o4.set_clean_session(false);
    let (c4, mut el4) = rumqttc::AsyncClient::new(o4.clone(), 10);
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = timeout(DEADLINE, el4.poll())
            .await
            .expect("in time")
            .expect("connects")
        {
            break;
        }
    }
    c4.disconnect().await.expect("disconnect");
    while timeout(DEADLINE, el4.poll())
        .await
        .expect("in time")
        .is_ok()
    {}

    // Within the expiry the session is there; after it, gone.
    let again = connect(o.clone()).await;
    assert!(again.connack.session_present, "resumed within its expiry");
    again.disconnect().await;
    let_time_pass(Duration::from_millis(1600)).await;
    assert!(
        !connect(o).await.connack.session_present,
        "expired after 1 s"
    );
    let (_c4, mut el4) = rumqttc::AsyncClient::new(o4, 10);
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)) =
            timeout(DEADLINE, el4.poll())
                .await
                .expect("in time")
                .expect("connects")
        {
            assert!(
                !ack.session_present,
                "the 3.1.1 session expired at the maximum"
            );
            break;
        }
    }
    server.shutdown().await.expect("clean stop");
}

/// The embedded store in `dir` (opened again for each start of a server on it).
fn embedded(dir: &TempDir) -> Arc<dyn StoreBackend> {
    let (backend, _) =
        EmbeddedBackend::open(&dir.0, jetmq_store::SyncPolicy::Always).expect("store opens");
    Arc::new(backend)
}

async fn session_expiry_runs_while_the_broker_is_down(shell: Shell) {
    let dir = TempDir::new("mqtt5-expiry");
    let open = || embedded(&dir);
    let (server, port) = server_with(shell, "", open()).await;
    for (id, secs) in [("short", 1), ("long", 3600)] {
        let mut o = options(id, port);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(secs));
        let mut c = connect(o).await;
        c.subscribe("t", QoS::AtLeastOnce).await;
    }
    // A graceful stop while both are connected records when they went offline.
    server.shutdown().await.expect("clean stop");
    let_time_pass(Duration::from_millis(1600)).await;
    let (server, port) = server_with(shell, "", open()).await;
    for (id, present) in [("short", false), ("long", true)] {
        let mut o = options(id, port);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(3600));
        assert_eq!(connect(o).await.connack.session_present, present, "{id}");
    }
    server.shutdown().await.expect("clean stop");
}

async fn message_expiry_for_queued_in_flight_and_retained_messages(shell: Shell) {
    let (server, port) = server(shell, "").await;
    let mut o = options("sub", port);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(600));
    o.set_receive_maximum(Some(1));
    o.set_manual_acks(true);
    let mut sub = connect(o.clone()).await;
    sub.subscribe("m/#", QoS::AtLeastOnce).await;
    let mut publ = connect(options("pub", port)).await;
    // m/1 goes out at once and waits for its PUBACK; m/2 (1 s to live) and m/3 queue.
    publ.publish_acked("m/1", false, "first", expiry_props(100))
        .await;
    publ.publish_acked("m/2", false, "short-lived", expiry_props(1))
        .await;
    publ.publish_acked("m/3", false, "third", PublishProperties::default())
        .await;
    publ.publish_acked("r/1", true, "retained", expiry_props(100))
        .await;
    let first = sub.publish().await;
    assert_eq!(first.payload, Bytes::from("first"));
    let left = first
        .properties
        .as_ref()
        .and_then(|p| p.message_expiry_interval);
    assert!(matches!(left, Some(95..=100)), "{left:?}");
    let_time_pass(Duration::from_millis(1600)).await;
    sub.client.ack(&first).await.expect("ack");
    // m/2 expired in the queue: the next one is m/3.
    let next = sub.publish().await;
    assert_eq!(next.payload, Bytes::from("third"));
    sub.client.ack(&next).await.expect("ack");
    // The retained message carries what is left of its lifetime.
    let mut late = connect(options("late", port)).await;
    late.subscribe("r/#", QoS::AtLeastOnce).await;
    let r = late.publish().await;
    assert!(r.retain);
    let left = r
        .properties
        .as_ref()
        .and_then(|p| p.message_expiry_interval);
    assert!(matches!(left, Some(90..=99)), "{left:?}");
    server.shutdown().await.expect("clean stop");
}

async fn topic_aliases_in_both_directions(shell: Shell) {
    let (server, port) = server(shell, "[limits]\ntopic_alias_maximum = 4\n").await;
    let mut o = options("sub", port);
    o.set_topic_alias_max(Some(8));
    let mut sub = connect(o).await;
    sub.subscribe("alias/#", QoS::AtMostOnce).await;
    let publ = connect(options("pub", port)).await;
    assert_eq!(
        publ.connack
            .properties
            .as_ref()
            .and_then(|p| p.topic_alias_max),
        Some(4),
        "the broker's Topic Alias Maximum"
    );
    let aliased = PublishProperties {
        topic_alias: Some(3),
        ..PublishProperties::default()
    };
    // The publisher sets alias 3, then uses it with an empty topic.
    publ.publish_props(
        "alias/a/rather/long/topic",
        QoS::AtMostOnce,
        false,
        "one",
        aliased.clone(),
    )
    .await;
    publ.publish_props("", QoS::AtMostOnce, false, "two", aliased)
        .await;
    // The broker gave the topic an alias of its own towards the subscriber: the first
    // PUBLISH binds it, the second carries only the alias (rumqttc resolves it internally
    // and reports the packet as it came).
    for (payload, topic) in [("one", "alias/a/rather/long/topic"), ("two", "")] {
        let p = sub.publish().await;
        assert_eq!(p.payload, Bytes::from(payload));
        assert_eq!(p.topic, Bytes::from(topic));
        assert_eq!(p.properties.as_ref().and_then(|p| p.topic_alias), Some(1));
    }
    // An alias above the broker's maximum is refused with DISCONNECT 0x94.
    let (mut raw, _) =
        RawClient::connect(port, Connect::new(ProtocolVersion::V5, "raw".into())).await;
    let mut p = RawPublish::new("alias/x".into(), Bytes::from_static(b"x"));
    p.properties_mut().topic_alias = std::num::NonZeroU16::new(5);
    raw.send(&RawPacket::Publish(p)).await;
    assert!(
        matches!(raw.next().await, Some(RawPacket::Disconnect(d)) if d.reason == DisconnectReason::TopicAliasInvalid && d.properties.reason_string.is_some())
    );
    server.shutdown().await.expect("clean stop");
}

async fn maximum_packet_size_in_both_directions(shell: Shell) {
    let (server, port) = server(shell, "[limits]\nmax_packet_size = 1024\n").await;
    let mut o = options("small", port);
    o.set_max_packet_size(Some(200));
    let mut sub = connect(o).await;
    sub.subscribe("size/#", QoS::AtLeastOnce).await;
    let mut publ = connect(options("pub", port)).await;
    assert_eq!(
        publ.connack
            .properties
            .as_ref()
            .and_then(|p| p.max_packet_size),
        Some(1024)
    );
    // Too large for the subscriber: dropped for it (and counted), the next one arrives.
    publ.publish_acked(
        "size/big",
        false,
        &"x".repeat(500),
        PublishProperties::default(),
    )
    .await;
    publ.publish_acked("size/small", false, "fits", PublishProperties::default())
        .await;
    let p = sub.publish().await;
    assert_eq!(p.payload, Bytes::from("fits"));
    // Too large for the broker: DISCONNECT 0x95.
    let (mut raw, _) =
        RawClient::connect(port, Connect::new(ProtocolVersion::V5, "raw".into())).await;
    raw.send(&RawPacket::Publish(RawPublish::new(
        "size/huge".into(),
        Bytes::from(vec![b'x'; 2000]),
    )))
    .await;
    assert!(
        matches!(raw.next().await, Some(RawPacket::Disconnect(d)) if d.reason == DisconnectReason::PacketTooLarge)
    );
    server.shutdown().await.expect("clean stop");
}

async fn receive_maximum_in_both_directions(shell: Shell) {
    let (server, port) = server(shell, "[limits]\nreceive_maximum = 2\n").await;
    let mut o = options("slow", port);
    o.set_receive_maximum(Some(2));
    o.set_manual_acks(true);
    let mut sub = connect(o).await;
    sub.subscribe("rm/#", QoS::AtLeastOnce).await;
    let mut publ = connect(options("pub", port)).await;
    assert_eq!(
        publ.connack.properties.as_ref().and_then(|p| p.receive_max),
        Some(2)
    );
    for i in 0..4 {
        publ.publish_acked(
            "rm/t",
            false,
            &format!("m{i}"),
            PublishProperties::default(),
        )
        .await;
    }
    let first = sub.publish().await;
    let second = sub.publish().await;
    // Nothing more is in flight: a SUBACK asked for now arrives before any third message.
    sub.subscribe("rm-other", QoS::AtMostOnce).await;
    sub.client.ack(&first).await.expect("ack");
    assert_eq!(sub.publish().await.payload, Bytes::from("m2"));
    sub.client.ack(&second).await.expect("ack");
    assert_eq!(sub.publish().await.payload, Bytes::from("m3"));
    // A client with more unacknowledged QoS 2 publishes than the broker's Receive Maximum
    // gets DISCONNECT 0x93.
    let (mut raw, _) =
        RawClient::connect(port, Connect::new(ProtocolVersion::V5, "raw".into())).await;
    for id in 1..=3 {
        let mut p = RawPublish::new("rm/q2".into(), Bytes::from_static(b"x"));
        p.qos = PublishQos::ExactlyOnce(jetmq_core::codec::PacketId::new(id).expect("non-zero"));
        raw.send(&RawPacket::Publish(p)).await;
    }
    loop {
        match raw.next().await {
            Some(RawPacket::PubRec(_)) => {}
            Some(RawPacket::Disconnect(d)) => {
                assert_eq!(d.reason, DisconnectReason::ReceiveMaximumExceeded);
                break;
            }
            other => panic!("expected DISCONNECT 0x93, got {other:?}"),
        }
    }
    server.shutdown().await.expect("clean stop");
}

async fn shared_subscriptions_balance_skip_retained_and_hand_over(shell: Shell) {
    let (server, port) = server(shell, "").await;
    let mut publ = connect(options("pub", port)).await;
    publ.publish_acked("jobs", true, "retained", PublishProperties::default())
        .await;
    let mut o = options("a", port);
    o.set_manual_acks(true);
    let mut a = connect(o).await;
    a.subscribe("$share/g/jobs", QoS::AtLeastOnce).await;
    a.subscribe("marker", QoS::AtMostOnce).await;
    let mut b = connect(options("b", port)).await;
    b.subscribe("$share/g/jobs", QoS::AtLeastOnce).await;
    b.subscribe("marker", QoS::AtMostOnce).await;
    // No retained message on a shared subscription: the marker comes first.
    publ.publish_props(
        "marker",
        QoS::AtMostOnce,
        false,
        "marker",
        PublishProperties::default(),
    )
    .await;
    assert_eq!(a.publish().await.payload, Bytes::from("marker"));
    assert_eq!(b.publish().await.payload, Bytes::from("marker"));
    // In turn: each member gets half.
    for i in 0..4 {
        publ.publish_acked(
            "jobs",
            false,
            &format!("j{i}"),
            PublishProperties::default(),
        )
        .await;
    }
    let mut got_a = vec![a.publish().await, a.publish().await];
    let got_b = [b.publish().await, b.publish().await];
    let mut all: Vec<Bytes> = got_a
        .iter()
        .chain(&got_b)
        .map(|p| p.payload.clone())
        .collect();
    all.sort();
    assert_eq!(all, ["j0", "j1", "j2", "j3"].map(Bytes::from).to_vec());
    // a acknowledges one and leaves: the other goes to b.
    let kept = got_a.remove(0);
    a.client.ack(&kept).await.expect("ack");
    // A SUBACK after the PUBACK: the broker has seen the acknowledgement.
    a.subscribe("sync", QoS::AtMostOnce).await;
    let unacked = got_a.remove(0).payload;
    a.task.abort();
    drop(a.client);
    assert_eq!(b.publish().await.payload, unacked, "handed over");
    server.shutdown().await.expect("clean stop");
}

async fn subscription_identifiers_no_local_retain_as_published_and_retain_handling(shell: Shell) {
    let (server, port) = server(shell, "").await;
    let mut publ = connect(options("pub", port)).await;
    publ.publish_acked("o/r", true, "kept", PublishProperties::default())
        .await;
    let mut c = connect(options("c", port)).await;
    // Subscription identifier 7 comes back with each matching message.
    c.subscribe_with(
        Filter::new("o/id/#", QoS::AtMostOnce),
        Some(SubscribeProperties {
            id: Some(7),
            user_properties: Vec::new(),
        }),
    )
    .await;
    // No Local: the client's own messages are not sent back.
    let mut nl = Filter::new("o/nl", QoS::AtMostOnce);
    nl.nolocal = true;
    c.subscribe_with(nl, None).await;
    c.publish_props(
        "o/nl",
        QoS::AtMostOnce,
        false,
        "own",
        PublishProperties::default(),
    )
    .await;
    publ.publish_props(
        "o/id/x",
        QoS::AtMostOnce,
        false,
        "with-id",
        PublishProperties::default(),
    )
    .await;
    let p = c.publish().await;
    assert_eq!(
        p.payload,
        Bytes::from("with-id"),
        "the own message was not sent back"
    );
    assert_eq!(
        p.properties.map(|p| p.subscription_identifiers),
        Some(vec![7])
    );
    // Retain As Published: the RETAIN flag of a live message is kept or cleared.
    let mut rap = Filter::new("o/rap", QoS::AtMostOnce);
    rap.preserve_retain = true;
    c.subscribe_with(rap, None).await;
    let mut d = connect(options("d", port)).await;
    d.subscribe("o/rap", QoS::AtMostOnce).await;
    publ.publish_props(
        "o/rap",
        QoS::AtMostOnce,
        true,
        "live",
        PublishProperties::default(),
    )
    .await;
    assert!(c.publish().await.retain, "kept with Retain As Published");
    assert!(!d.publish().await.retain, "cleared without it");
    // Retain Handling: 0 sends the retained message on every SUBSCRIBE, 1 only on a new
    // subscription, 2 never.
    for (rule, times) in [
        (RetainForwardRule::OnEverySubscribe, 2),
        (RetainForwardRule::OnNewSubscribe, 1),
        (RetainForwardRule::Never, 0),
    ] {
        let mut e = connect(options("e", port)).await;
        e.subscribe("o/marker", QoS::AtMostOnce).await;
        let mut f = Filter::new("o/r", QoS::AtMostOnce);
        f.retain_forward_rule = rule.clone();
        let mut received = 0;
        for _ in 0..2 {
            e.subscribe_with(f.clone(), None).await;
            publ.publish_props(
                "o/marker",
                QoS::AtMostOnce,
                false,
                "m",
                PublishProperties::default(),
            )
            .await;
            loop {
                let p = e.publish().await;
                if p.payload == "m" {
                    break;
                }
                assert_eq!(p.payload, Bytes::from("kept"));
                received += 1;
            }
        }
        assert_eq!(received, times, "{rule:?}");
        e.disconnect().await;
    }
    server.shutdown().await.expect("clean stop");
}

async fn request_response_and_properties_pass_through_unchanged(shell: Shell) {
    let (server, port) = server(shell, "").await;
    let mut responder = connect(options("responder", port)).await;
    responder.subscribe("req", QoS::AtLeastOnce).await;
    let mut requester = connect(options("requester", port)).await;
    requester
        .subscribe("resp/requester", QoS::AtLeastOnce)
        .await;
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        response_topic: Some("resp/requester".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01\x02")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
        content_type: Some("application/json".into()),
        ..PublishProperties::default()
    };
    requester
        .publish_acked("req", false, "{\"q\":1}", props.clone())
        .await;
    let req = responder.publish().await;
    let got = req.properties.clone().expect("properties");
    assert_eq!(got.payload_format_indicator, Some(1));
    assert_eq!(got.response_topic, props.response_topic);
    assert_eq!(got.correlation_data, props.correlation_data);
    assert_eq!(got.user_properties, props.user_properties);
    assert_eq!(got.content_type, props.content_type);
    // The responder answers on the Response Topic with the Correlation Data.
    let answer = PublishProperties {
        correlation_data: got.correlation_data.clone(),
        ..PublishProperties::default()
    };
    responder
        .publish_acked(
            &got.response_topic.expect("response topic"),
            false,
            "answer",
            answer,
        )
        .await;
    let resp = requester.publish().await;
    assert_eq!(
        resp.properties.and_then(|p| p.correlation_data),
        Some(Bytes::from_static(b"\x00\x01\x02"))
    );
    // A payload that is not the UTF-8 its indicator says: PUBACK 0x99.
    requester
        .client
        .publish_with_properties(
            "req",
            QoS::AtLeastOnce,
            false,
            Bytes::from_static(b"\xff\xfe"),
            PublishProperties {
                payload_format_indicator: Some(1),
                ..PublishProperties::default()
            },
        )
        .await
        .expect("publish");
    let ack = requester.puback().await;
    assert_eq!(ack.reason, RPubAckReason::PayloadFormatInvalid);
    assert!(ack.properties.and_then(|p| p.reason_string).is_some());
    server.shutdown().await.expect("clean stop");
}

async fn server_disconnects_carry_the_reason_code_and_a_reason_string(shell: Shell) {
    let (server, port) = server(shell, "").await;
    let mut first = connect(options("twin", port)).await;
    let _second = connect(options("twin", port)).await;
    match first.next().await {
        Seen::Disconnected(code, reason) => {
            assert_eq!(code, DisconnectReasonCode::SessionTakenOver);
            assert!(reason.is_some_and(|r| !r.is_empty()));
        }
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    // Keep-alive: a raw client that never sends again gets 0x8D.
    let mut c = Connect::new(ProtocolVersion::V5, "quiet".into());
    c.keep_alive = 1;
    let (mut raw, _) = RawClient::connect(port, c).await;
    assert!(
        matches!(raw.next().await, Some(RawPacket::Disconnect(d)) if d.reason == DisconnectReason::KeepAliveTimeout)
    );
    // A protocol error: a second CONNECT gets 0x82.
    let (mut raw, _) =
        RawClient::connect(port, Connect::new(ProtocolVersion::V5, "again".into())).await;
    raw.send(&RawPacket::Connect(Box::new(Connect::new(
        ProtocolVersion::V5,
        "again".into(),
    ))))
    .await;
    assert!(
        matches!(raw.next().await, Some(RawPacket::Disconnect(d)) if d.reason == DisconnectReason::ProtocolError)
    );
    // Shutdown: 0x8B.
    let mut last = connect(options("last", port)).await;
    let stop = tokio::spawn(server.shutdown());
    match last.next().await {
        Seen::Disconnected(code, _) => assert_eq!(code, DisconnectReasonCode::ServerShuttingDown),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    stop.await.expect("joins").expect("clean stop");
}

async fn server_redirection_sends_clients_elsewhere(shell: Shell) {
    let (server, port) = server(
        shell,
        "[redirect]\nserver_reference = \"other.example:1883\"\n",
    )
    .await;
    match try_connect(options("moving", port)).await {
        Err(Seen::Refused(code)) => assert_eq!(code, ConnectReturnCode::UseAnotherServer),
        Err(other) => panic!("expected CONNACK 0x9C, got {other:?}"),
        Ok(_) => panic!("expected CONNACK 0x9C, got a connection"),
    }
    let (_, answer) =
        RawClient::connect(port, Connect::new(ProtocolVersion::V5, "raw".into())).await;
    match answer {
        Some(RawPacket::ConnAck(a)) => {
            assert_eq!(a.reason, ConnectReason::UseAnotherServer);
            assert_eq!(
                a.properties.server_reference.as_deref(),
                Some("other.example:1883")
            );
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    server.shutdown().await.expect("clean stop");
}

async fn shared_subscriptions_of_persistent_sessions_survive_a_restart(shell: Shell) {
    let dir = TempDir::new("mqtt5-shared");
    let open = || embedded(&dir);
    let (server, port) = server_with(shell, "", open()).await;
    let mut o = options("worker", port);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(3600));
    let mut worker = connect(o).await;
    worker.subscribe("$share/pool/work", QoS::AtLeastOnce).await;
    worker.disconnect().await;
    let mut publ = connect(options("pub", port)).await;
    publ.publish_acked(
        "work",
        false,
        "queued for the pool",
        PublishProperties::default(),
    )
    .await;
    server.shutdown().await.expect("clean stop");

    let (server, port) = server_with(shell, "", open()).await;
    let mut o = options("worker", port);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(3600));
    let mut worker = connect(o).await;
    assert!(worker.connack.session_present);
    assert_eq!(
        worker.publish().await.payload,
        Bytes::from("queued for the pool")
    );
    // The shared subscription itself was restored: live messages reach the member.
    let mut publ = connect(options("pub", port)).await;
    publ.publish_acked("work", false, "live", PublishProperties::default())
        .await;
    assert_eq!(worker.publish().await.payload, Bytes::from("live"));
    server.shutdown().await.expect("clean stop");
}

/// Two clients sharing an identifier: after `takeover_limit` takeovers its next CONNECT is
/// refused with 0x9F Connection rate exceeded (after a short hold), and the client that is in
/// stays connected.
async fn a_client_id_that_keeps_being_taken_over_is_refused(shell: Shell) {
    let (server, port) = server(shell, "[limits]\ntakeover_limit = 2\n").await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (c, answer) =
            RawClient::connect(port, Connect::new(ProtocolVersion::V5, "twin".into())).await;
        assert!(
            matches!(answer, Some(RawPacket::ConnAck(ref a)) if a.reason == ConnectReason::Success),
            "{answer:?}"
        );
        clients.push(c);
    }
    let (_refused, answer) =
        RawClient::connect(port, Connect::new(ProtocolVersion::V5, "twin".into())).await;
    assert!(
        matches!(answer, Some(RawPacket::ConnAck(ref a)) if a.reason == ConnectReason::ConnectionRateExceeded),
        "{answer:?}"
    );
    // The last one in is still served.
    let mut last = clients.pop().expect("three clients");
    last.send(&RawPacket::PingReq).await;
    assert!(matches!(last.next().await, Some(RawPacket::PingResp)));
    server.shutdown().await.expect("clean stop");
}

/// A persistent session under an identifier the server assigned belongs to the client it was
/// assigned to: after a restart, the next client without an identifier gets another one and
/// a fresh session (the broker's seed comes from the operating system at every start; a fixed
/// seed handed out the same identifiers again, resuming the first client's session).
async fn assigned_client_ids_are_not_handed_out_again_after_a_restart(shell: Shell) {
    let dir = TempDir::new("mqtt5-assigned");
    let open = || embedded(&dir);
    let anonymous = || {
        let mut c = Connect::new(ProtocolVersion::V5, "".into());
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
        c
    };
    let assigned = |answer: Option<RawPacket>| match answer {
        Some(RawPacket::ConnAck(ack)) => {
            assert_eq!(ack.reason, ConnectReason::Success);
            let id = ack
                .properties
                .assigned_client_identifier
                .clone()
                .expect("an assigned identifier");
            (id.to_string(), ack.session_present)
        }
        other => panic!("expected a CONNACK, got {other:?}"),
    };
    let mut first = Vec::new();
    let (server, port) = server_with(shell, "", open()).await;
    for _ in 0..3 {
        let (client, answer) = RawClient::connect(port, anonymous()).await;
        let (id, present) = assigned(answer);
        assert!(!present);
        first.push(id);
        drop(client);
    }
    server.shutdown().await.expect("clean stop");

    let (server, port) = server_with(shell, "", open()).await;
    for _ in 0..3 {
        let (_client, answer) = RawClient::connect(port, anonymous()).await;
        let (id, present) = assigned(answer);
        assert!(!first.contains(&id), "{id} was assigned before the restart");
        assert!(!present, "{id}: a fresh session, not another client's");
    }
    server.shutdown().await.expect("clean stop");
}

for_each_shell!(
    session_expiry_zero_some_and_the_server_maximum,
    assigned_client_ids_are_not_handed_out_again_after_a_restart,
    a_client_id_that_keeps_being_taken_over_is_refused,
    session_expiry_runs_while_the_broker_is_down,
    message_expiry_for_queued_in_flight_and_retained_messages,
    topic_aliases_in_both_directions,
    maximum_packet_size_in_both_directions,
    receive_maximum_in_both_directions,
    shared_subscriptions_balance_skip_retained_and_hand_over,
    subscription_identifiers_no_local_retain_as_published_and_retain_handling,
    request_response_and_properties_pass_through_unchanged,
    server_disconnects_carry_the_reason_code_and_a_reason_string,
    server_redirection_sends_clients_elsewhere,
    shared_subscriptions_of_persistent_sessions_survive_a_restart,
);
