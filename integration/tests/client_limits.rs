//! What one client may make the broker keep, through both servers and their configuration
//! files: a first packet that is not a CONNECT is closed at once, user properties per message,
//! sessions in all, connections without keep-alive, and client identifiers from user names.

use std::time::{Duration, Instant};

use bytes::Bytes;
use jetmq_core::codec::{
    Connect, ConnectReason, DisconnectReason, Packet, ProtocolVersion, PubAckReason, Publish,
    PublishProperties, PublishQos, UserProperty,
};

mod common;
use common::raw::RawClient;
use common::Shell;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn connack(answer: Option<Packet>) -> jetmq_core::codec::ConnAck {
    match answer {
        Some(Packet::ConnAck(ack)) => *ack,
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

/// A connection whose first bytes are a PUBLISH header announcing a 256 KiB body is closed
/// at once, without waiting for the body and without a CONNACK.
async fn a_first_packet_that_is_not_a_connect_is_closed_at_once(shell: Shell) {
    let (server, port) = common::serve(shell, "").await;
    let mut c = RawClient::open(port).await;
    let started = Instant::now();
    c.send_bytes(&[0x30, 0x80, 0x80, 0x10]).await;
    assert!(c.next().await.is_none(), "closed, no answer");
    assert!(started.elapsed() < Duration::from_secs(5), "closed at once");
    server.shutdown().await.expect("clean stop");
}

/// `[limits] max_user_properties`: a PUBLISH with more gets PUBACK 0x97, one within gets
/// through.
async fn user_properties_beyond_the_limit_are_refused(shell: Shell) {
    let (server, port) = common::serve(shell, "[limits]\nmax_user_properties = 2\n").await;
    let (mut c, answer) = RawClient::connect(port, Connect::new(V5, "p".into())).await;
    assert_eq!(connack(answer).reason, ConnectReason::Success);
    for (id, count, expected) in [
        (1, 3, PubAckReason::QuotaExceeded),
        (2, 2, PubAckReason::Success),
    ] {
        let mut p = Publish::new("t".into(), Bytes::from_static(b"x"));
        p.qos = PublishQos::AtLeastOnce(jetmq_core::codec::PacketId::new(id).expect("id"));
        p.properties = Some(Box::new(PublishProperties {
            user_properties: (0..count)
                .map(|i| UserProperty {
                    name: format!("k{i}").into(),
                    value: "v".into(),
                })
                .collect(),
            ..PublishProperties::EMPTY
        }));
        c.send(&Packet::Publish(p)).await;
        match c.next().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, expected, "{count} properties"),
            other => panic!("expected a PUBACK, got {other:?}"),
        }
    }
    server.shutdown().await.expect("clean stop");
}

/// `[limits] max_sessions`: with two sessions held, a CONNECT making a third gets CONNACK
/// 0x97; once one ends there is room.
async fn sessions_beyond_max_sessions_are_refused(shell: Shell) {
    let (server, port) = common::serve(shell, "[limits]\nmax_sessions = 2\n").await;
    let (first, answer) = RawClient::connect(port, Connect::new(V5, "a".into())).await;
    assert_eq!(connack(answer).reason, ConnectReason::Success);
    let (_second, answer) = RawClient::connect(port, Connect::new(V5, "b".into())).await;
    assert_eq!(connack(answer).reason, ConnectReason::Success);
    let (mut third, answer) = RawClient::connect(port, Connect::new(V5, "c".into())).await;
    assert_eq!(connack(answer).reason, ConnectReason::QuotaExceeded);
    assert!(third.next().await.is_none(), "closed after the refusal");
    drop(first);
    let started = Instant::now();
    loop {
        let (_c, answer) = RawClient::connect(port, Connect::new(V5, "c".into())).await;
        if connack(answer).reason == ConnectReason::Success {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no room made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await.expect("clean stop");
}

/// `[limits] max_idle_secs`: a client that asked for no keep-alive and sends nothing is
/// closed after that long, with DISCONNECT 0x8D.
async fn a_silent_client_without_keep_alive_is_closed(shell: Shell) {
    let (server, port) = common::serve(shell, "[limits]\nmax_idle_secs = 1\n").await;
    let mut connect = Connect::new(V5, "quiet".into());
    connect.keep_alive = 0;
    let (mut c, answer) = RawClient::connect(port, connect).await;
    assert_eq!(connack(answer).reason, ConnectReason::Success);
    match c.next().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, DisconnectReason::KeepAliveTimeout),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    assert!(c.next().await.is_none(), "closed");
    server.shutdown().await.expect("clean stop");
}

/// `[auth] client_id_from = "username"`: two connections of one user with different client
/// identifiers share one session (the second takes the first over), another user's does not.
async fn client_ids_come_from_user_names(shell: Shell) {
    let hash = jetmq::auth::hash_password(b"pw").expect("hash");
    let toml = format!(
        "[auth]\nallow_anonymous = false\nclient_id_from = \"username\"\n\
         [[auth.users]]\nusername = \"alice\"\npassword_hash = \"{hash}\"\n\
         [[auth.users]]\nusername = \"bob\"\npassword_hash = \"{hash}\"\n"
    );
    let (server, port) = common::serve(shell, &toml).await;
    let login = |id: &str, user: &str| {
        let mut c = Connect::new(V5, id.into());
        c.username = Some(user.into());
        c.password = Some(Bytes::from_static(b"pw"));
        c
    };
    let (mut first, answer) = RawClient::connect(port, login("one", "alice")).await;
    assert_eq!(connack(answer).reason, ConnectReason::Success);
    let (_bob, answer) = RawClient::connect(port, login("one", "bob")).await;
    assert_eq!(connack(answer).reason, ConnectReason::Success);
    let (_second, answer) = RawClient::connect(port, login("two", "alice")).await;
    assert_eq!(connack(answer).reason, ConnectReason::Success);
    match first.next().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(
                d.reason,
                DisconnectReason::SessionTakenOver,
                "alice's own session"
            );
        }
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    server.shutdown().await.expect("clean stop");
}

for_each_shell!(
    a_first_packet_that_is_not_a_connect_is_closed_at_once,
    user_properties_beyond_the_limit_are_refused,
    sessions_beyond_max_sessions_are_refused,
    a_silent_client_without_keep_alive_is_closed,
    client_ids_come_from_user_names,
);
