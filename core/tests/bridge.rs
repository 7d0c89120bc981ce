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
        cluster: jetmq_core::broker::Cluster::Bridge,
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

mod policy {
    //! The bridge carries only application subjects: nothing of NATS's or jetmq's own, in
    //! either direction, whatever MQTT clients publish or subscribe to.

    use super::*;
    use jetmq_core::broker::bridge_policy::{BridgePolicy, SubjectRules};
    use jetmq_core::codec::{PubAckReason, SubAckReason};

    const V5: ProtocolVersion = ProtocolVersion::V5;

    /// Topics whose subjects belong to NATS or jetmq (JetStream API, system account, jetmq's
    /// and the NATS server's MQTT records, inboxes).
    const DANGEROUS_TOPICS: [&str; 8] = [
        "$JS/API/STREAM/DELETE/$MQTT_msgs",
        "$JS/API/CONSUMER/DELETE/$MQTT_msgs/x",
        "$JS/API/DIRECT/GET/$MQTT_sess",
        "$SYS/REQ/SERVER/PING",
        "$MQTT/sess/abc",
        "$JETMQ/conn/abc",
        "_INBOX/abc/1",
        "_R_/abc",
    ];
    const DANGEROUS_FILTERS: [&str; 7] = [
        "$JS/#",
        "$JS/API/+",
        "$MQTT/#",
        "$JETMQ/#",
        "_INBOX/#",
        "_R_/+",
        "$KV/#",
    ];

    fn publishes_to_nats(h: &Harness) -> usize {
        h.nats
            .iter()
            .filter(|a| matches!(a, Action::NatsPublish { .. }))
            .count()
    }

    fn puback_reason(h: &mut Harness, conn: jetmq_core::broker::ConnId) -> Option<PubAckReason> {
        h.packets(conn).into_iter().find_map(|p| match p {
            Packet::PubAck(a) => Some(a.reason),
            _ => None,
        })
    }

    fn suback(h: &mut Harness, conn: jetmq_core::broker::ConnId, filter: &str) -> SubAckReason {
        h.send(conn, &harness::subscribe(9, filter, QoS::AtLeastOnce));
        h.packets(conn)
            .into_iter()
            .find_map(|p| match p {
                Packet::SubAck(a) => a.reasons.first().copied(),
                _ => None,
            })
            .expect("a SUBACK")
    }

    #[test]
    fn publishes_to_system_subjects_are_refused_and_never_reach_nats() {
        let mut h = bridged();
        let (p5, _) = h.connect_ok(connect(V5, "p5", true));
        let (p3, _) = h.connect_ok(connect(V3, "p3", true));
        let (local, _) = h.connect_ok(connect(V3, "local", true));
        h.subscribe_ok(local, 1, "#", QoS::AtLeastOnce);
        h.subscribe_ok(local, 2, "$JS/#", QoS::AtLeastOnce);
        h.packets(local);
        for (i, topic) in DANGEROUS_TOPICS.into_iter().enumerate() {
            let id = harness::pid(u16::try_from(i + 1).expect("few"));
            h.send(p5, &publish(topic, "", PublishQos::AtLeastOnce(id), false));
            assert_eq!(
                puback_reason(&mut h, p5),
                Some(PubAckReason::NotAuthorized),
                "{topic}"
            );
            h.send(p3, &publish(topic, "", PublishQos::AtLeastOnce(id), false));
            assert_eq!(
                puback_reason(&mut h, p3),
                Some(PubAckReason::Success),
                "3.1.1 cannot be told: acknowledged and dropped ({topic})"
            );
        }
        assert_eq!(publishes_to_nats(&h), 0, "{:?}", subjects(&h.nats));
        assert!(
            h.publishes(local).is_empty(),
            "not delivered in MQTT either"
        );
        let logged = h
            .notices
            .iter()
            .filter(|n| matches!(n, jetmq_core::broker::Notice::BridgeRefused { .. }))
            .count();
        // Each publish, and the `$JS/#` subscription, is logged.
        assert_eq!(logged, 2 * DANGEROUS_TOPICS.len() + 1);
    }

    #[test]
    fn subscriptions_to_system_subjects_are_refused_and_never_made_on_nats() {
        let mut h = bridged();
        let (s5, _) = h.connect_ok(connect(V5, "s5", true));
        let (s3, _) = h.connect_ok(connect(V3, "s3", true));
        for filter in DANGEROUS_FILTERS {
            assert_eq!(
                suback(&mut h, s5, filter),
                SubAckReason::NotAuthorized,
                "{filter}"
            );
            assert_eq!(
                suback(&mut h, s3, filter),
                SubAckReason::UnspecifiedError,
                "{filter}"
            );
        }
        assert!(h.nats.is_empty(), "{:?}", subjects(&h.nats));
        // `$SYS/` keeps its MQTT meaning (the broker's statistics): accepted, never bridged.
        assert_eq!(suback(&mut h, s5, "$SYS/#"), SubAckReason::GrantedQos1);
        assert!(h.nats.is_empty(), "{:?}", subjects(&h.nats));
    }

    #[test]
    fn nats_messages_on_system_subjects_never_reach_mqtt_subscribers() {
        let mut h = bridged();
        let (s, _) = h.connect_ok(connect(V3, "s", true));
        h.subscribe_ok(s, 1, "#", QoS::AtMostOnce);
        h.subscribe_ok(s, 2, "+/API/#", QoS::AtMostOnce);
        assert!(subjects(&h.nats).contains(&"+>".to_string()));
        for subject in [
            "$JS.API.STREAM.INFO.$MQTT_msgs",
            "$SYS.ACCOUNT.x.CONNECT",
            "_INBOX.abc.1",
            "_R_.abc",
            "$MQTT.sess.abc",
        ] {
            h.input(Input::NatsMessage {
                subject: subject.into(),
                headers: Vec::new(),
                payload: "secret".into(),
            });
        }
        assert!(h.publishes(s).is_empty());
        assert_eq!(h.broker.stats().bridge_refused, 5);
        h.input(Input::NatsMessage {
            subject: "app.x".into(),
            headers: Vec::new(),
            payload: "hello".into(),
        });
        assert_eq!(h.publishes(s).len(), 1, "application subjects still arrive");
    }

    #[test]
    fn allow_and_deny_lists_narrow_the_bridge() {
        let rules = SubjectRules {
            allow: vec!["app.>".into()],
            deny: vec!["app.secret.>".into()],
        };
        let mut h = Harness::new(BrokerConfig {
            cluster: jetmq_core::broker::Cluster::Bridge,
            bridge: BridgePolicy {
                publish: rules.clone(),
                subscribe: SubjectRules {
                    allow: vec![">".into()],
                    ..rules
                },
            },
            ..BrokerConfig::default()
        });
        let (c, _) = h.connect_ok(connect(V5, "c", true));
        for (topic, allowed) in [("app/x", true), ("other/x", false), ("app/secret/k", false)] {
            h.send(
                c,
                &publish(topic, "", PublishQos::AtLeastOnce(harness::pid(1)), false),
            );
            let expected = if allowed {
                PubAckReason::Success
            } else {
                PubAckReason::NotAuthorized
            };
            assert_eq!(puback_reason(&mut h, c), Some(expected), "{topic}");
        }
        assert_eq!(subjects(&h.nats), ["pub app.x q1 "]);
        assert_eq!(
            suback(&mut h, c, "app/secret/+"),
            SubAckReason::NotAuthorized
        );
        assert_eq!(
            suback(&mut h, c, "other/+"),
            SubAckReason::GrantedQos1,
            "subscribe allows >"
        );
        assert_eq!(suback(&mut h, c, "#"), SubAckReason::GrantedQos1);
        h.input(Input::NatsMessage {
            subject: "app.secret.k".into(),
            headers: Vec::new(),
            payload: "no".into(),
        });
        assert!(h.publishes(c).is_empty(), "denied subjects do not arrive");
    }

    #[test]
    fn without_the_bridge_dollar_topics_keep_their_mqtt_meaning_but_sys_is_the_brokers() {
        let mut h = Harness::new(BrokerConfig::default());
        let (c, _) = h.connect_ok(connect(V5, "c", true));
        h.subscribe_ok(c, 1, "$JS/#", QoS::AtLeastOnce);
        h.send(
            c,
            &publish("$JS/x", "", PublishQos::AtLeastOnce(harness::pid(1)), false),
        );
        assert_eq!(h.publishes(c).len(), 1);
        h.send(
            c,
            &publish(
                "$SYS/x",
                "",
                PublishQos::AtLeastOnce(harness::pid(2)),
                false,
            ),
        );
        assert_eq!(
            puback_reason(&mut h, c),
            Some(PubAckReason::NotAuthorized),
            "nobody publishes under $SYS/ but the broker"
        );
    }
}
