//! MQTT 5.0 features of the broker driven through its inputs: topic aliases towards clients,
//! session expiry limits, shared-subscription hand-over, server redirection and enhanced
//! authentication.

mod harness;

use std::time::Duration;

use bytes::Bytes;
use harness::{connect, publish, Harness};
use jetmq_core::broker::{AuthDecision, AuthStage, BrokerConfig, Input, Notice};
use jetmq_core::codec::{
    Ack, Auth, AuthReason, ConnectReason, DisconnectReason, Packet, ProtocolVersion, PublishQos,
    QoS,
};
use jetmq_core::js::Stream;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn h() -> Harness {
    Harness::new(BrokerConfig::default())
}

fn publishes(packets: Vec<Packet>) -> Vec<(String, Option<u16>)> {
    packets
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((
                p.topic.to_string(),
                p.properties().topic_alias.map(std::num::NonZeroU16::get),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn the_broker_assigns_topic_aliases_within_the_clients_maximum() {
    let mut h = h();
    let mut c = connect(V5, "sub", true);
    c.properties.topic_alias_maximum = Some(2);
    let (s, _) = h.connect_ok(c);
    h.subscribe_ok(s, 1, "t/#", QoS::AtMostOnce);
    let (p, _) = h.connect_ok(connect(V5, "pub", true));
    for topic in ["t/a", "t/a", "t/b", "t/c", "t/c", "t/a"] {
        h.send(p, &publish(topic, "x", PublishQos::AtMostOnce, false));
    }
    let got = publishes(h.packets(s));
    let expect: Vec<(String, Option<u16>)> = [
        ("t/a", Some(1)),
        ("", Some(1)),
        ("t/b", Some(2)),
        // Both taken: the alias bound longest ago is rebound.
        ("t/c", Some(1)),
        ("", Some(1)),
        ("t/a", Some(2)),
    ]
    .into_iter()
    .map(|(t, a)| (t.to_string(), a))
    .collect();
    assert_eq!(got, expect);
}

#[test]
fn no_topic_aliases_for_clients_that_allow_none() {
    let mut h = h();
    let (s, _) = h.connect_ok(connect(V5, "sub", true));
    h.subscribe_ok(s, 1, "t/#", QoS::AtMostOnce);
    let (p, _) = h.connect_ok(connect(V5, "pub", true));
    for _ in 0..2 {
        h.send(p, &publish("t/a", "x", PublishQos::AtMostOnce, false));
    }
    assert_eq!(
        publishes(h.packets(s)),
        vec![("t/a".to_string(), None), ("t/a".to_string(), None)]
    );
}

#[test]
fn a_message_dropped_as_too_large_binds_no_alias() {
    let mut h = h();
    let mut c = connect(V5, "sub", true);
    c.properties.topic_alias_maximum = Some(4);
    c.properties.maximum_packet_size = std::num::NonZeroU32::new(64);
    let (s, _) = h.connect_ok(c);
    h.subscribe_ok(s, 1, "t/#", QoS::AtMostOnce);
    let (p, _) = h.connect_ok(connect(V5, "pub", true));
    h.send(
        p,
        &publish("t/a", &"x".repeat(100), PublishQos::AtMostOnce, false),
    );
    h.send(p, &publish("t/a", "small", PublishQos::AtMostOnce, false));
    // The client never saw the first one, so the second must carry the topic.
    assert_eq!(publishes(h.packets(s)), vec![("t/a".to_string(), Some(1))]);
    assert_eq!(h.broker.stats().dropped_too_large, 1);
}

/// A restart after `down` of downtime: a new broker restores what the store holds.
fn restart(h: &mut Harness, config: BrokerConfig, down: Duration) -> Harness {
    let mut h2 = Harness::new(config.clone());
    h2.now = h.now.advanced(down);
    h2.new_broker(config, 7);
    h2.store = std::mem::take(&mut h.store);
    for r in h2.store.records() {
        h2.input(Input::Restored(r));
    }
    h2.input(Input::RestoreComplete);
    h2
}

fn v5_with_expiry(client_id: &str, secs: Option<u32>) -> jetmq_core::codec::Connect {
    let mut c = connect(V5, client_id, false);
    c.properties.session_expiry_interval = secs;
    c
}

fn expiry_config(max: u32) -> BrokerConfig {
    BrokerConfig {
        max_session_expiry: max,
        ..BrokerConfig::default()
    }
}

#[test]
fn session_expiry_is_capped_and_the_client_told() {
    let mut h = Harness::new(expiry_config(100));
    for (asked, told) in [
        (Some(u32::MAX), Some(100)),
        (Some(500), Some(100)),
        (Some(50), None),
        (None, None),
    ] {
        let c = h.connect(v5_with_expiry("c", asked));
        let Some(Packet::ConnAck(ack)) = h.next_packet(c) else {
            panic!("no CONNACK")
        };
        assert_eq!(
            ack.properties.session_expiry_interval, told,
            "asked {asked:?}"
        );
        h.input(Input::Closed { conn: c });
    }
}

#[test]
fn an_earlier_sessions_expiry_timer_never_ends_a_later_session_of_the_same_client() {
    // Connect with expiry 5 s and leave at T0; at T0+4 s connect with Clean Start and expiry
    // 5 s and leave; at T0+6 s resume: the second session (ending at T0+9 s) is there. The
    // first session's timer (due at T0+5 s) named its table slot, which the second reused.
    let mut h = h();
    let first = h.connect(v5_with_expiry("c", Some(5)));
    h.packets(first);
    h.send(
        first,
        &Packet::Disconnect(Box::new(jetmq_core::codec::Disconnect::new(
            DisconnectReason::NormalDisconnection,
        ))),
    );
    h.advance(Duration::from_secs(4));
    let mut clean = v5_with_expiry("c", Some(5));
    clean.clean_start = true;
    let (second, present) = h.connect_ok(clean);
    assert!(!present);
    h.send(
        second,
        &Packet::Disconnect(Box::new(jetmq_core::codec::Disconnect::new(
            DisconnectReason::NormalDisconnection,
        ))),
    );
    h.advance(Duration::from_secs(2));
    let (_, present) = h.connect_ok(v5_with_expiry("c", Some(5)));
    assert!(
        present,
        "the second session outlives the first one's expiry"
    );
}

#[test]
fn persistent_311_sessions_expire_at_the_server_maximum() {
    let mut h = Harness::new(expiry_config(100));
    let (c, _) = h.connect_ok(connect(V3, "old", false));
    h.subscribe_ok(c, 1, "t", QoS::AtLeastOnce);
    h.input(Input::Closed { conn: c });
    h.advance(Duration::from_secs(99));
    let (c, present) = h.connect_ok(connect(V3, "old", false));
    assert!(present, "kept within the maximum");
    h.input(Input::Closed { conn: c });
    h.advance(Duration::from_secs(101));
    assert!(h
        .notices
        .iter()
        .any(|n| matches!(n, Notice::SessionExpired { client_id } if client_id == "old")));
    assert!(h.store.records().is_empty(), "its records are gone too");
    let (_, present) = h.connect_ok(connect(V3, "old", false));
    assert!(!present);
}

#[test]
fn session_expiry_counts_while_the_broker_is_down() {
    let config = BrokerConfig::default();
    let mut h = Harness::new(config.clone());
    let (c, _) = h.connect_ok(v5_with_expiry("short", Some(60)));
    h.subscribe_ok(c, 1, "t", QoS::AtLeastOnce);
    h.input(Input::Closed { conn: c });
    // Down for 40 of its 60 seconds: it is restored with 20 left.
    let mut h2 = restart(&mut h, config.clone(), Duration::from_secs(40));
    assert_eq!(h2.broker.session_backlog("short"), Some((0, 0, 0)));
    h2.advance(Duration::from_secs(21));
    assert_eq!(
        h2.broker.session_backlog("short"),
        None,
        "expired 20 s after the restart"
    );

    // Down for longer than its expiry: it is not restored at all.
    let (c, _) = h2.connect_ok(v5_with_expiry("short", Some(60)));
    h2.input(Input::Closed { conn: c });
    let h3 = restart(&mut h2, config, Duration::from_secs(61));
    assert_eq!(h3.broker.session_backlog("short"), None);
    assert!(h3.store.records().is_empty(), "its records were removed");
}

#[test]
fn a_graceful_shutdown_records_when_sessions_went_offline() {
    let config = BrokerConfig::default();
    let mut h = Harness::new(config.clone());
    let (_c, _) = h.connect_ok(v5_with_expiry("online", Some(60)));
    h.input(Input::Shutdown);
    let h2 = restart(&mut h, config, Duration::from_secs(61));
    assert_eq!(h2.broker.session_backlog("online"), None);
}

/// The publishes a client received, as (payload, packet identifier, dup).
fn received(h: &mut Harness, conn: jetmq_core::broker::ConnId) -> Vec<(String, Option<u16>, bool)> {
    h.packets(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.qos.packet_id().map(jetmq_core::codec::PacketId::get),
                p.dup,
            )),
            _ => None,
        })
        .collect()
}

fn puback(h: &mut Harness, conn: jetmq_core::broker::ConnId, pid: u16) {
    h.send(conn, &Packet::PubAck(Ack::new(harness::pid(pid))));
}

fn stored_messages(h: &Harness) -> Vec<(String, Vec<String>)> {
    h.store
        .records()
        .into_iter()
        .filter(|r| r.stream == Stream::Messages)
        .map(|r| {
            (
                String::from_utf8_lossy(&r.payload).into_owned(),
                r.pending_for.iter().map(ToString::to_string).collect(),
            )
        })
        .collect()
}

/// A QoS 1 PUBLISH on `jobs` (packet identifier 1).
fn job(payload: &str) -> Packet {
    publish(
        "jobs",
        payload,
        PublishQos::AtLeastOnce(harness::pid(1)),
        false,
    )
}

#[test]
fn a_shared_members_unacknowledged_messages_go_to_another_member_when_it_leaves() {
    let mut h = Harness::new(BrokerConfig {
        max_inflight: 1,
        ..BrokerConfig::default()
    });
    let (a, _) = h.connect_ok(connect(V5, "a", true));
    h.subscribe_ok(a, 1, "$share/g/jobs", QoS::AtLeastOnce);
    let (b, _) = h.connect_ok(connect(V5, "b", true));
    h.subscribe_ok(b, 1, "$share/g/jobs", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    for (i, job) in ["j1", "j2", "j3"].into_iter().enumerate() {
        h.send(
            p,
            &publish(
                "jobs",
                job,
                PublishQos::AtLeastOnce(harness::pid(i as u16 + 1)),
                false,
            ),
        );
    }
    // In turn: a gets j1 and (queued behind its window of one) j3, b gets j2.
    assert_eq!(received(&mut h, a), vec![("j1".into(), Some(1), false)]);
    let got_b = received(&mut h, b);
    assert_eq!(got_b, vec![("j2".into(), Some(1), false)]);
    puback(&mut h, b, 1);
    // a leaves without acknowledging: j1 (sent) and j3 (queued) go to b, through b's
    // window of one.
    h.input(Input::Closed { conn: a });
    assert_eq!(received(&mut h, b), vec![("j1".into(), Some(2), false)]);
    puback(&mut h, b, 2);
    assert_eq!(received(&mut h, b), vec![("j3".into(), Some(3), false)]);
}

#[test]
fn a_shared_members_qos2_in_flight_stays_with_it() {
    let mut h = h();
    let (a, _) = h.connect_ok(v5_with_expiry("a", Some(600)));
    h.subscribe_ok(a, 1, "$share/g/jobs", QoS::ExactlyOnce);
    let (b, _) = h.connect_ok(connect(V5, "b", true));
    h.subscribe_ok(b, 1, "$share/g/jobs", QoS::ExactlyOnce);
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    h.send(
        p,
        &publish(
            "jobs",
            "j1",
            PublishQos::ExactlyOnce(harness::pid(1)),
            false,
        ),
    );
    assert_eq!(received(&mut h, a).len(), 1);
    h.input(Input::Closed { conn: a });
    assert!(received(&mut h, b).is_empty(), "[MQTT-4.8.2-4]");
    let (a, present) = h.connect_ok(v5_with_expiry("a", Some(600)));
    assert!(present);
    assert_eq!(received(&mut h, a), vec![("j1".into(), Some(1), true)]);
}

#[test]
fn a_shared_members_messages_stay_when_no_other_member_is_online() {
    let mut h = h();
    let (a, _) = h.connect_ok(v5_with_expiry("a", Some(600)));
    h.subscribe_ok(a, 1, "$share/g/jobs", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    h.send(p, &job("j1"));
    assert_eq!(received(&mut h, a).len(), 1);
    h.input(Input::Closed { conn: a });
    let (a, present) = h.connect_ok(v5_with_expiry("a", Some(600)));
    assert!(present);
    assert_eq!(received(&mut h, a), vec![("j1".into(), Some(1), true)]);
}

#[test]
fn a_handed_over_stored_message_stays_stored_until_the_new_member_acknowledges() {
    let mut h = h();
    let (a, _) = h.connect_ok(v5_with_expiry("a", Some(600)));
    h.subscribe_ok(a, 1, "$share/g/jobs", QoS::AtLeastOnce);
    let (b, _) = h.connect_ok(v5_with_expiry("b", Some(600)));
    h.subscribe_ok(b, 1, "$share/g/jobs", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    h.send(p, &job("j1"));
    assert_eq!(received(&mut h, a).len(), 1);
    let stored = stored_messages(&h);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].1.len(),
        1,
        "only the member it went to keeps it: {stored:?}"
    );
    h.input(Input::Closed { conn: a });
    assert_eq!(received(&mut h, b), vec![("j1".into(), Some(1), false)]);
    assert_eq!(stored_messages(&h).len(), 1, "kept for a until b is done");
    puback(&mut h, b, 1);
    assert!(stored_messages(&h).is_empty());
}

#[test]
fn no_local_persistent_sessions_release_stored_messages() {
    let mut h = h();
    let (s, _) = h.connect_ok(v5_with_expiry("self", Some(600)));
    let sub = Packet::Subscribe(jetmq_core::codec::Subscribe {
        packet_id: harness::pid(1),
        properties: jetmq_core::codec::SubscribeProperties::default(),
        filters: vec![(
            "t".into(),
            jetmq_core::codec::SubscriptionOptions {
                no_local: true,
                ..jetmq_core::codec::SubscriptionOptions::new(QoS::AtLeastOnce)
            },
        )],
    });
    h.send(s, &sub);
    let (other, _) = h.connect_ok(v5_with_expiry("other", Some(600)));
    h.subscribe_ok(other, 1, "t", QoS::AtLeastOnce);
    h.packets(s);
    h.send(
        s,
        &publish("t", "mine", PublishQos::AtLeastOnce(harness::pid(2)), false),
    );
    assert!(received(&mut h, s).is_empty());
    assert_eq!(received(&mut h, other).len(), 1);
    puback(&mut h, other, 1);
    assert!(stored_messages(&h).is_empty(), "{:?}", stored_messages(&h));
}

fn auth_config() -> BrokerConfig {
    BrokerConfig {
        authenticate: true,
        ..BrokerConfig::default()
    }
}

fn with_method(client_id: &str, method: &str, data: &[u8]) -> jetmq_core::codec::Connect {
    let mut c = connect(V5, client_id, true);
    c.properties.authentication_method = Some(method.into());
    c.properties.authentication_data = Some(Bytes::copy_from_slice(data));
    c
}

fn auth_packet(reason: AuthReason, method: &str, data: &[u8]) -> Packet {
    let mut a = Auth::new(reason);
    a.properties.authentication_method = Some(method.into());
    a.properties.authentication_data = Some(Bytes::copy_from_slice(data));
    Packet::Auth(Box::new(a))
}

fn decide(h: &mut Harness, conn: jetmq_core::broker::ConnId, decision: AuthDecision) {
    h.input(Input::Authenticated { conn, decision });
}

#[test]
fn enhanced_authentication_is_a_conversation_through_the_shell() {
    let mut h = Harness::new(auth_config());
    let c = h.connect(with_method("e", "TOY", b"hello"));
    let req = h.auth_requests.pop().expect("asked");
    assert_eq!(
        (
            req.method.as_deref(),
            req.data.as_deref(),
            req.stage,
            req.state.clone()
        ),
        (Some("TOY"), Some(&b"hello"[..]), AuthStage::Connect, None)
    );
    decide(
        &mut h,
        c,
        AuthDecision::Continue {
            data: Bytes::from_static(b"challenge"),
            state: Bytes::from_static(b"s1"),
        },
    );
    let Some(Packet::Auth(a)) = h.next_packet(c) else {
        panic!("no AUTH")
    };
    assert_eq!(a.reason, AuthReason::ContinueAuthentication);
    assert_eq!(a.properties.authentication_method.as_deref(), Some("TOY"));
    assert_eq!(
        a.properties.authentication_data.as_deref(),
        Some(&b"challenge"[..])
    );
    h.send(
        c,
        &auth_packet(AuthReason::ContinueAuthentication, "TOY", b"response"),
    );
    let req = h.auth_requests.pop().expect("asked again");
    assert_eq!(req.stage, AuthStage::Continue);
    assert_eq!(req.data.as_deref(), Some(&b"response"[..]));
    assert_eq!(
        req.state.as_deref(),
        Some(&b"s1"[..]),
        "the shell's state comes back"
    );
    decide(
        &mut h,
        c,
        AuthDecision::AllowWith {
            account: None,
            data: Some(Bytes::from_static(b"final")),
            permissions: None,
        },
    );
    let Some(Packet::ConnAck(ack)) = h.next_packet(c) else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.reason, ConnectReason::Success);
    assert_eq!(ack.properties.authentication_method.as_deref(), Some("TOY"));
    assert_eq!(
        ack.properties.authentication_data.as_deref(),
        Some(&b"final"[..])
    );

    // Re-authentication with the same method, while connected.
    h.send(c, &auth_packet(AuthReason::ReAuthenticate, "TOY", b"again"));
    let req = h.auth_requests.pop().expect("asked to re-authenticate");
    assert_eq!(req.stage, AuthStage::Reauthenticate);
    assert_eq!(req.client_id, "e");
    decide(
        &mut h,
        c,
        AuthDecision::Allow {
            account: None,
            permissions: None,
        },
    );
    let Some(Packet::Auth(a)) = h.next_packet(c) else {
        panic!("no AUTH success")
    };
    assert_eq!(a.reason, AuthReason::Success);
    // A failed re-authentication ends the connection.
    h.send(c, &auth_packet(AuthReason::ReAuthenticate, "TOY", b"bad"));
    decide(&mut h, c, AuthDecision::Deny(ConnectReason::NotAuthorized));
    assert!(
        matches!(h.next_packet(c), Some(Packet::Disconnect(d)) if d.reason == DisconnectReason::NotAuthorized)
    );
    assert!(h.closed(c).is_some());
}

/// The shell answers a step with an empty challenge; the client's AUTH is read off.
fn challenge(h: &mut Harness, conn: jetmq_core::broker::ConnId) {
    decide(
        h,
        conn,
        AuthDecision::Continue {
            data: Bytes::new(),
            state: Bytes::new(),
        },
    );
    h.packets(conn);
}

#[test]
fn enhanced_authentication_refusals() {
    // Without a shell that authenticates, a method gets 0x8C.
    let mut h = h();
    let c = h.connect(with_method("e", "TOY", b""));
    assert!(
        matches!(h.next_packet(c), Some(Packet::ConnAck(a)) if a.reason == ConnectReason::BadAuthenticationMethod)
    );
    let mut h = Harness::new(auth_config());
    // Anything but AUTH during the exchange is a protocol error.
    let c = h.connect(with_method("e", "TOY", b""));
    challenge(&mut h, c);
    h.send(c, &Packet::PingReq);
    assert!(
        matches!(h.next_packet(c), Some(Packet::ConnAck(a)) if a.reason == ConnectReason::ProtocolError)
    );
    // A different method in the answer is one too.
    let c = h.connect(with_method("f", "TOY", b""));
    challenge(&mut h, c);
    h.send(
        c,
        &auth_packet(AuthReason::ContinueAuthentication, "OTHER", b""),
    );
    assert!(
        matches!(h.next_packet(c), Some(Packet::ConnAck(a)) if a.reason == ConnectReason::ProtocolError)
    );
    // A client that stops answering is refused at the connect deadline.
    let c = h.connect(with_method("g", "TOY", b""));
    challenge(&mut h, c);
    h.advance(Duration::from_secs(11));
    assert!(
        matches!(h.next_packet(c), Some(Packet::ConnAck(a)) if a.reason == ConnectReason::NotAuthorized)
    );
    // Re-authentication by a client that connected without a method is a protocol error.
    let c = h.connect(connect(V5, "plain", true));
    decide(
        &mut h,
        c,
        AuthDecision::Allow {
            account: None,
            permissions: None,
        },
    );
    h.packets(c);
    h.send(c, &auth_packet(AuthReason::ReAuthenticate, "TOY", b""));
    assert!(
        matches!(h.next_packet(c), Some(Packet::Disconnect(d)) if d.reason == DisconnectReason::ProtocolError)
    );
}

#[test]
fn server_redirection_refuses_with_the_server_reference() {
    for (permanent, reason) in [
        (false, ConnectReason::UseAnotherServer),
        (true, ConnectReason::ServerMoved),
    ] {
        let mut h = Harness::new(BrokerConfig {
            redirect: Some(jetmq_core::broker::Redirect {
                server_reference: "other.example:1883".into(),
                permanent,
            }),
            ..BrokerConfig::default()
        });
        let c = h.connect(connect(V5, "c", true));
        let Some(Packet::ConnAck(ack)) = h.next_packet(c) else {
            panic!("no CONNACK")
        };
        assert_eq!(ack.reason, reason);
        assert_eq!(
            ack.properties.server_reference.as_deref(),
            Some("other.example:1883")
        );
        assert!(h.closed(c).is_some());
        // 3.1.1 has no redirection: server unavailable.
        let c = h.connect(connect(V3, "d", true));
        let Some(Packet::ConnAck(ack)) = h.next_packet(c) else {
            panic!("no CONNACK")
        };
        assert_eq!(ack.reason.v3_return_code(), 3);
    }
}

fn publish_with(topic: &str, payload: &str, qos: PublishQos, retain: bool, expiry: u32) -> Packet {
    let Packet::Publish(mut p) = publish(topic, payload, qos, retain) else {
        unreachable!()
    };
    let props = p.properties_mut();
    props.message_expiry_interval = Some(expiry);
    props.content_type = Some("text/plain".into());
    props.response_topic = Some("replies/1".into());
    props.correlation_data = Some(Bytes::from_static(b"\x00\x01"));
    props.payload_format_indicator = Some(jetmq_core::codec::PayloadFormat::Utf8);
    props.user_properties = vec![jetmq_core::codec::UserProperty {
        name: "k".into(),
        value: "v".into(),
    }];
    Packet::Publish(p)
}

fn first_publish(packets: Vec<Packet>) -> jetmq_core::codec::Publish {
    packets
        .into_iter()
        .find_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .expect("a PUBLISH")
}

#[test]
fn stored_messages_keep_their_properties_and_expiry_across_a_restart() {
    let config = BrokerConfig::default();
    let mut h = Harness::new(config.clone());
    let (s, _) = h.connect_ok(v5_with_expiry("s", Some(3600)));
    h.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    h.input(Input::Closed { conn: s });
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    h.send(
        p,
        &publish_with(
            "t/long",
            "kept",
            PublishQos::AtLeastOnce(harness::pid(1)),
            false,
            60,
        ),
    );
    h.send(
        p,
        &publish_with(
            "t/short",
            "gone",
            PublishQos::AtLeastOnce(harness::pid(2)),
            false,
            10,
        ),
    );
    h.send(
        p,
        &publish_with(
            "r/long",
            "retained",
            PublishQos::AtLeastOnce(harness::pid(3)),
            true,
            60,
        ),
    );
    h.send(
        p,
        &publish_with(
            "r/short",
            "retained",
            PublishQos::AtLeastOnce(harness::pid(4)),
            true,
            10,
        ),
    );
    let mut h2 = restart(&mut h, config, Duration::from_secs(20));
    assert_eq!(
        h2.broker.stats().dropped_expired,
        1,
        "t/short expired while down"
    );
    assert_eq!(h2.broker.retained_count(), 1, "r/short expired while down");
    let (s, present) = h2.connect_ok(v5_with_expiry("s", Some(3600)));
    assert!(present);
    let got = first_publish(h2.packets(s));
    assert_eq!(got.topic, "t/long");
    let props = got.properties();
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic.as_deref(), Some("replies/1"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"\x00\x01"[..]));
    assert_eq!(props.user_properties.len(), 1);
    assert_eq!(
        props.payload_format_indicator,
        Some(jetmq_core::codec::PayloadFormat::Utf8)
    );
    assert_eq!(
        props.message_expiry_interval,
        Some(40),
        "what is left of 60 s"
    );
    // The retained message too.
    h2.subscribe_ok(s, 2, "r/#", QoS::AtLeastOnce);
    let got = first_publish(h2.packets(s));
    assert_eq!(got.topic, "r/long");
    assert_eq!(got.properties().message_expiry_interval, Some(40));
    assert_eq!(got.properties().content_type.as_deref(), Some("text/plain"));
}

#[test]
fn an_administrator_lists_and_discards_sessions() {
    let mut h = h();
    let (online, _) = h.connect_ok(v5_with_expiry("online", Some(600)));
    h.subscribe_ok(online, 1, "a/#", QoS::AtLeastOnce);
    let (off, _) = h.connect_ok(connect(V3, "offline", false));
    h.subscribe_ok(off, 1, "b", QoS::AtLeastOnce);
    h.input(Input::Closed { conn: off });
    let list: Vec<_> = h.broker.sessions().collect();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (
            list[0].key.client_id.as_ref(),
            list[0].online,
            list[0].persistent
        ),
        ("offline", false, true)
    );
    assert!(list[0].disconnected_at.is_some());
    assert_eq!(
        list[0].subscriptions,
        vec![bytestring::ByteString::from("b")]
    );
    assert_eq!(
        (
            list[1].key.client_id.as_ref(),
            list[1].online,
            list[1].expiry
        ),
        ("online", true, Some(Duration::from_secs(600)))
    );
    for id in ["online", "offline"] {
        h.input(Input::DiscardSession(jetmq_core::broker::SessionKey {
            account: jetmq_core::broker::DEFAULT_ACCOUNT.into(),
            client_id: id.into(),
        }));
    }
    assert!(
        matches!(h.next_packet(online), Some(Packet::Disconnect(d)) if d.reason == DisconnectReason::AdministrativeAction)
    );
    assert!(h.closed(online).is_some());
    assert_eq!(h.broker.sessions().count(), 0);
    assert!(h.store.records().is_empty(), "stored state removed too");
}

#[test]
fn payloads_that_are_not_the_utf8_they_claim_are_refused() {
    let mut h = h();
    let (s, _) = h.connect_ok(connect(V5, "s", true));
    h.subscribe_ok(s, 1, "t", QoS::AtMostOnce);
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    let bad = |qos: PublishQos| {
        let Packet::Publish(mut p) = publish("t", "", qos, false) else {
            unreachable!()
        };
        p.payload = Bytes::from_static(b"\xff\xfe");
        p.properties_mut().payload_format_indicator = Some(jetmq_core::codec::PayloadFormat::Utf8);
        Packet::Publish(p)
    };
    // QoS 1 and 2: a negative acknowledgement with 0x99 and a Reason String; not routed.
    h.send(p, &bad(PublishQos::AtLeastOnce(harness::pid(1))));
    h.send(p, &bad(PublishQos::ExactlyOnce(harness::pid(2))));
    let acks = h.packets(p);
    assert!(
        matches!(&acks[..], [Packet::PubAck(a), Packet::PubRec(r)]
            if a.reason == jetmq_core::codec::PubAckReason::PayloadFormatInvalid
            && r.reason == jetmq_core::codec::PubAckReason::PayloadFormatInvalid
            && a.properties.reason_string.is_some()),
        "{acks:?}"
    );
    assert!(h.packets(s).is_empty());
    // QoS 0: DISCONNECT 0x99 with a Reason String.
    h.send(p, &bad(PublishQos::AtMostOnce));
    assert!(matches!(h.next_packet(p), Some(Packet::Disconnect(d))
            if d.reason == DisconnectReason::PayloadFormatInvalid && d.properties.reason_string.is_some()));
    // A client that asks for no problem information gets no Reason String on acks.
    let mut quiet = connect(V5, "quiet", true);
    quiet.properties.request_problem_information = Some(false);
    let (q, _) = h.connect_ok(quiet);
    h.send(q, &bad(PublishQos::AtLeastOnce(harness::pid(1))));
    assert!(
        matches!(h.next_packet(q), Some(Packet::PubAck(a)) if a.properties.reason_string.is_none())
    );
    // A will that claims UTF-8 and is not: CONNACK 0x99.
    let mut c = connect(V5, "will", true);
    let mut will = jetmq_core::codec::LastWill {
        topic: "w".into(),
        payload: Bytes::from_static(b"\xff"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    };
    will.properties.payload_format_indicator = Some(jetmq_core::codec::PayloadFormat::Utf8);
    c.will = Some(will);
    let w = h.connect(c);
    assert!(
        matches!(h.next_packet(w), Some(Packet::ConnAck(a)) if a.reason == ConnectReason::PayloadFormatInvalid)
    );
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let mut h = h();
    let (c, _) = h.connect_ok(connect(V5, "c", true));
    h.send(
        c,
        &Packet::Subscribe(jetmq_core::codec::Subscribe {
            packet_id: harness::pid(1),
            properties: jetmq_core::codec::SubscribeProperties::default(),
            filters: vec![(
                "$share/g/t".into(),
                jetmq_core::codec::SubscriptionOptions {
                    no_local: true,
                    ..jetmq_core::codec::SubscriptionOptions::new(QoS::AtMostOnce)
                },
            )],
        }),
    );
    assert!(
        matches!(h.next_packet(c), Some(Packet::Disconnect(d)) if d.reason == DisconnectReason::ProtocolError)
    );
}

#[test]
fn a_session_that_asks_for_no_expiry_keeps_it_when_the_server_allows() {
    let mut h = Harness::new(expiry_config(u32::MAX));
    let c = h.connect(v5_with_expiry("forever", Some(u32::MAX)));
    let Some(Packet::ConnAck(ack)) = h.next_packet(c) else {
        panic!("no CONNACK")
    };
    assert_eq!(
        ack.properties.session_expiry_interval, None,
        "granted as asked"
    );
    h.input(Input::Closed { conn: c });
    h.advance(Duration::from_secs(10 * 365 * 24 * 3600));
    let (_, present) = h.connect_ok(v5_with_expiry("forever", Some(u32::MAX)));
    assert!(present, "still there ten years later");
}

#[test]
fn a_client_id_whose_record_subject_is_taken_is_refused() {
    // The NATS server's 8-character hash is the same for these two: their session records
    // would share a subject, and the second would overwrite the first's stored session.
    let (first, second) = ("cid-03579431", "cid-09191235");
    let mut h = h();
    let (s, _) = h.connect_ok(v5_with_expiry(first, Some(600)));
    h.input(Input::Closed { conn: s });
    let c = h.connect(v5_with_expiry(second, Some(600)));
    assert!(
        matches!(h.next_packet(c), Some(Packet::ConnAck(a)) if a.reason == jetmq_core::codec::ConnectReason::ClientIdentifierNotValid)
    );
    // A clean session of the first ends its stored one: the second is welcome then.
    let mut clean = v5_with_expiry(first, None);
    clean.clean_start = true;
    let (s, present) = h.connect_ok(clean);
    assert!(!present);
    h.input(Input::Closed { conn: s });
    let (_, present) = h.connect_ok(v5_with_expiry(second, Some(600)));
    assert!(!present);
}
