//! Topic permissions handed over with the shell's authentication decision: publishes to other
//! topics are refused (MQTT 5.0: 0x87; 3.1.1: acknowledged and dropped) and never delivered,
//! subscriptions outside the allowed filters get 0x87 (3.1.1: 0x80), a will to a topic the
//! client may not publish to refuses the CONNECT, and `%c` stands for the client identifier.

mod harness;

use bytestring::ByteString;
use harness::{connect, publish, Harness};
use jetmq_core::broker::{AuthDecision, BrokerConfig, ConnId, Input, Permissions};
use jetmq_core::codec::{
    Connect, ConnectReason, LastWill, Packet, ProtocolVersion, PubAckReason, PublishQos, QoS,
    SubAckReason,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V311;

fn broker() -> Harness {
    Harness::new(BrokerConfig {
        authenticate: true,
        ..BrokerConfig::default()
    })
}

fn devices() -> Permissions {
    let list = |l: &[&str]| Some(l.iter().map(|s| ByteString::from(*s)).collect());
    Permissions {
        publish: list(&["dev/%c/#"]),
        subscribe: list(&["dev/#", "$SYS/#"]),
    }
}

/// Connects `c` and lets the shell allow it with `permissions`; returns the connection and
/// its CONNACK's reason.
fn admit(h: &mut Harness, c: Connect, permissions: Option<Permissions>) -> (ConnId, ConnectReason) {
    let conn = h.connect(c);
    h.auth_requests.pop().expect("asked");
    h.input(Input::Authenticated {
        conn,
        decision: AuthDecision::Allow {
            account: None,
            permissions: permissions.map(Box::new),
        },
    });
    let reason = h
        .packets(conn)
        .into_iter()
        .find_map(|p| match p {
            Packet::ConnAck(a) => Some(a.reason),
            _ => None,
        })
        .expect("a CONNACK");
    (conn, reason)
}

fn subscribe_reasons(h: &mut Harness, conn: ConnId, filter: &str) -> Vec<SubAckReason> {
    h.send(conn, &harness::subscribe(7, filter, QoS::AtLeastOnce));
    h.packets(conn)
        .into_iter()
        .find_map(|p| match p {
            Packet::SubAck(a) => Some(a.reasons),
            _ => None,
        })
        .expect("a SUBACK")
}

#[test]
fn publishes_outside_the_permissions_are_refused_and_never_delivered() {
    let mut h = broker();
    let (watcher, _) = admit(&mut h, connect(V5, "watcher", true), None);
    assert_eq!(
        subscribe_reasons(&mut h, watcher, "#"),
        [SubAckReason::GrantedQos1]
    );
    for (version, id) in [(V5, "d5"), (V3, "d3")] {
        let (d, reason) = admit(&mut h, connect(version, id, true), Some(devices()));
        assert_eq!(reason, ConnectReason::Success);
        let own = format!("dev/{id}/temp");
        h.send(
            d,
            &publish(&own, "21", PublishQos::AtLeastOnce(harness::pid(1)), false),
        );
        assert!(
            matches!(h.next_packet(d), Some(Packet::PubAck(a)) if a.reason == PubAckReason::Success)
        );
        h.send(
            d,
            &publish(
                "dev/other/temp",
                "spoof",
                PublishQos::AtLeastOnce(harness::pid(2)),
                false,
            ),
        );
        let expected = if version.is_v5() {
            PubAckReason::NotAuthorized
        } else {
            // 3.1.1 cannot say no: acknowledged and dropped [MQTT-3.3.5-2].
            PubAckReason::Success
        };
        assert!(
            matches!(h.next_packet(d), Some(Packet::PubAck(a)) if a.reason == expected),
            "{version:?}"
        );
        h.send(d, &publish("x", "spoof", PublishQos::AtMostOnce, false));
        assert_eq!(h.closed(d), None, "the connection stays");
        let got = h.publishes(watcher);
        let topics: Vec<&str> = got.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            topics,
            [own.as_str()],
            "only the allowed publish is delivered"
        );
    }
}

#[test]
fn subscriptions_must_lie_within_an_allowed_filter() {
    let mut h = broker();
    for version in [V5, V3] {
        let (d, _) = admit(&mut h, connect(version, "d", true), Some(devices()));
        for (filter, allowed) in [
            ("dev/+/temp", true),
            ("dev/#", true),
            ("dev", true),
            ("$SYS/broker/uptime", true),
            ("#", false),
            ("+/x/temp", false),
            ("other/#", false),
            ("$share/g/dev/#", true),
            ("$share/g/other", false),
        ] {
            let reasons = subscribe_reasons(&mut h, d, filter);
            let refused = if version.is_v5() {
                SubAckReason::NotAuthorized
            } else {
                SubAckReason::UnspecifiedError
            };
            if allowed {
                assert_eq!(reasons, [SubAckReason::GrantedQos1], "{filter} {version:?}");
            } else {
                assert_eq!(reasons, [refused], "{filter} {version:?}");
            }
        }
    }
}

#[test]
fn a_will_the_client_may_not_publish_refuses_the_connect() {
    let mut h = broker();
    for (version, expected) in [
        (V5, ConnectReason::NotAuthorized),
        (V3, ConnectReason::NotAuthorized),
    ] {
        let mut c = connect(version, "w", true);
        c.will = Some(LastWill {
            topic: "alarms/all".into(),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        });
        let (_, reason) = admit(&mut h, c.clone(), Some(devices()));
        assert_eq!(reason, expected, "{version:?}");
        c.will.as_mut().expect("will").topic = "dev/w/status".into();
        let (_, reason) = admit(&mut h, c, Some(devices()));
        assert_eq!(reason, ConnectReason::Success, "{version:?}");
    }
}

#[test]
fn a_resumed_session_loses_the_subscriptions_its_permissions_no_longer_allow() {
    let mut h = broker();
    let (d, _) = admit(&mut h, connect(V3, "d", false), None);
    assert_eq!(
        subscribe_reasons(&mut h, d, "other/#"),
        [SubAckReason::GrantedQos1]
    );
    assert_eq!(
        subscribe_reasons(&mut h, d, "dev/d/#"),
        [SubAckReason::GrantedQos1]
    );
    h.input(Input::Closed { conn: d });
    // The user's permissions shrank meanwhile.
    let (d, reason) = admit(&mut h, connect(V3, "d", false), Some(devices()));
    assert_eq!(reason, ConnectReason::Success);
    let (p, _) = admit(&mut h, connect(V3, "p", true), None);
    for topic in ["other/x", "dev/d/x"] {
        h.send(p, &publish(topic, "m", PublishQos::AtMostOnce, false));
    }
    let got = h.publishes(d);
    let topics: Vec<&str> = got.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(topics, ["dev/d/x"]);
}
