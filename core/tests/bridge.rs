//! The NATS subject bridge in the core: MQTT publishes and wills go to their NATS subjects,
//! the broker subscribes to a subject while MQTT subscriptions map to it, and NATS messages
//! reach MQTT subscribers at QoS 0 without going back to NATS.

mod harness;

use harness::{connect, publish, Harness};
use jetmq_core::broker::{Action, BrokerConfig, Input};
use jetmq_core::codec::{Packet, ProtocolVersion, PublishQos, QoS, Unsubscribe};

const V3: ProtocolVersion = ProtocolVersion::V311;

fn bridged() -> Harness {
    Harness::new(BrokerConfig {
        nats_bridge: true,
        ..BrokerConfig::default()
    })
}

fn subjects(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::NatsSubscribe { subject } => format!("+{subject}"),
            Action::NatsUnsubscribe { subject } => format!("-{subject}"),
            Action::NatsPublish {
                subject,
                headers,
                payload,
            } => {
                let qos = headers
                    .iter()
                    .find(|h| h.name == "Nmqtt-Pub")
                    .map_or("?", |h| h.value.as_ref());
                format!("pub {subject} q{qos} {}", String::from_utf8_lossy(payload))
            }
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn mqtt_publishes_and_wills_go_to_their_nats_subjects() {
    let mut h = bridged();
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    h.send(
        p,
        &publish(
            "sensors/kitchen temp",
            "21",
            PublishQos::AtLeastOnce(harness::pid(1)),
            false,
        ),
    );
    h.send(p, &publish("a/b", "x", PublishQos::AtMostOnce, false));
    let mut c = connect(V3, "dies", true);
    c.will = Some(jetmq_core::codec::LastWill {
        topic: "wills/dies".into(),
        payload: "gone".into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    let (d, _) = h.connect_ok(c);
    h.input(Input::Closed { conn: d });
    assert_eq!(
        subjects(&h.nats),
        [
            "pub sensors.kitchen/20temp q1 21",
            "pub a.b q0 x",
            "pub wills.dies q0 gone"
        ]
    );
}

#[test]
fn nats_subscriptions_follow_the_mqtt_ones() {
    let mut h = bridged();
    let (a, _) = h.connect_ok(connect(V3, "a", true));
    let (b, _) = h.connect_ok(connect(V3, "b", true));
    h.subscribe_ok(a, 1, "a/#", QoS::AtMostOnce);
    assert_eq!(subjects(&std::mem::take(&mut h.nats)), ["+a.>", "+a"]);
    // A second subscription to the same subjects, or the same one again: nothing new.
    h.subscribe_ok(b, 1, "a/#", QoS::AtLeastOnce);
    h.subscribe_ok(a, 2, "a/#", QoS::AtLeastOnce);
    assert!(h.nats.is_empty(), "{:?}", subjects(&h.nats));
    // The last one gone: unsubscribed.
    h.send(
        a,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: harness::pid(3),
            properties: Default::default(),
            filters: vec!["a/#".into()],
        }),
    );
    assert!(h.nats.is_empty());
    h.input(Input::Closed { conn: b });
    assert_eq!(subjects(&h.nats), ["-a.>", "-a"]);
}

#[test]
fn nats_messages_reach_mqtt_subscribers_and_do_not_loop() {
    let mut h = bridged();
    let (s, _) = h.connect_ok(connect(V3, "s", true));
    h.subscribe_ok(s, 1, "a/#", QoS::AtLeastOnce);
    h.nats.clear();
    h.input(Input::NatsMessage {
        headers: Vec::new(),
        subject: "a.b".into(),
        payload: "from nats".into(),
    });
    h.input(Input::NatsMessage {
        headers: Vec::new(),
        subject: "a".into(),
        payload: "parent".into(),
    });
    h.input(Input::NatsMessage {
        headers: Vec::new(),
        subject: "a.b+c".into(),
        payload: "+ in a topic name is refused".into(),
    });
    let got = h.publishes(s);
    assert_eq!(
        got.iter()
            .map(|(t, p, q, _, _)| (t.as_str(), p.as_str(), *q))
            .collect::<Vec<_>>(),
        [
            ("a/b", "from nats", QoS::AtMostOnce),
            ("a", "parent", QoS::AtMostOnce)
        ]
    );
    assert!(
        h.nats.is_empty(),
        "not published back: {:?}",
        subjects(&h.nats)
    );
}

#[test]
fn without_the_bridge_nothing_goes_to_nats() {
    let mut h = Harness::new(BrokerConfig::default());
    let (s, _) = h.connect_ok(connect(V3, "s", true));
    h.subscribe_ok(s, 1, "a/#", QoS::AtMostOnce);
    h.send(s, &publish("a/b", "x", PublishQos::AtMostOnce, false));
    h.input(Input::NatsMessage {
        headers: Vec::new(),
        subject: "a.c".into(),
        payload: "ignored".into(),
    });
    assert!(h.nats.is_empty());
    assert_eq!(h.publishes(s).len(), 1, "only the MQTT message");
}
