//! `$SYS/broker/` statistics: published every `sys_interval` as retained QoS 0 messages (the
//! values that changed), to `$SYS/#` subscribers only, never stored or bridged; client
//! publishes under `$SYS/broker/` are refused while they are on; off by default in the core.

mod harness;

use std::time::Duration;

use harness::{connect, pid, publish, Harness};
use jetmq_core::broker::{Action, BrokerConfig};
use jetmq_core::codec::{Packet, ProtocolVersion, PubAckReason, PublishQos, QoS};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn broker(config: BrokerConfig) -> Harness {
    Harness::new(BrokerConfig {
        sys_interval: Some(Duration::from_secs(10)),
        ..config
    })
}

/// The value of `$SYS/broker/<name>` among `got`, if there.
fn value(got: &[(String, String, QoS, bool, bool)], name: &str) -> Option<String> {
    got.iter()
        .rev()
        .find(|m| m.0 == format!("$SYS/broker/{name}"))
        .map(|m| m.1.clone())
}

#[test]
fn statistics_are_published_every_interval_to_sys_subscribers_only() {
    let mut h = broker(BrokerConfig::default());
    let (sys, _) = h.connect_ok(connect(V5, "sys", true));
    h.subscribe_ok(sys, 1, "$SYS/#", QoS::AtMostOnce);
    let (all, _) = h.connect_ok(connect(V5, "all", true));
    h.subscribe_ok(all, 1, "#", QoS::AtMostOnce);
    h.subscribe_ok(all, 2, "x/y", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    h.send(p, &publish("x/y", "m", PublishQos::AtMostOnce, false));

    h.advance(Duration::from_secs(9));
    assert!(h.publishes(sys).is_empty(), "not before the interval");
    h.advance(Duration::from_secs(1));
    let first = h.publishes(sys);
    // Live: RETAIN cleared for an established subscription [MQTT-3.3.1-9].
    assert!(
        first.iter().all(|m| m.2 == QoS::AtMostOnce && !m.3),
        "{first:?}"
    );
    let version = value(&first, "version").expect("version");
    assert!(version.starts_with("jetmq "), "{version}");
    assert_eq!(value(&first, "uptime").as_deref(), Some("10 seconds"));
    assert_eq!(value(&first, "clients/connected").as_deref(), Some("3"));
    assert_eq!(value(&first, "clients/total").as_deref(), Some("3"));
    assert_eq!(value(&first, "subscriptions/count").as_deref(), Some("3"));
    // Two matching subscriptions of one session: one delivery.
    assert_eq!(value(&first, "publish/messages/sent").as_deref(), Some("1"));
    assert!(
        h.publishes(all).iter().all(|m| !m.0.starts_with('$')),
        "`#` does not match `$SYS` [MQTT-4.7.2-1]"
    );

    // The next round sends what changed: the uptime, the connected count, not the version.
    h.input(jetmq_core::broker::Input::Closed { conn: p });
    h.advance(Duration::from_secs(10));
    let second = h.publishes(sys);
    assert_eq!(value(&second, "uptime").as_deref(), Some("20 seconds"));
    assert_eq!(value(&second, "clients/connected").as_deref(), Some("2"));
    assert_eq!(value(&second, "version"), None, "unchanged: not sent again");
    assert!(second.len() < first.len(), "{second:?}");

    // Retained: a late subscriber gets the latest values at once.
    let (late, _) = h.connect_ok(connect(ProtocolVersion::V311, "late", true));
    h.subscribe_ok(late, 1, "$SYS/broker/uptime", QoS::AtMostOnce);
    let got = h.publishes(late);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].1.as_str(), got[0].3), ("20 seconds", true));
}

#[test]
fn statistics_are_neither_stored_nor_bridged() {
    let mut h = broker(BrokerConfig {
        cluster: jetmq_core::broker::Cluster::Bridge,
        ..BrokerConfig::default()
    });
    let (sys, _) = h.connect_ok(connect(V5, "sys", false));
    h.subscribe_ok(sys, 1, "$SYS/#", QoS::AtLeastOnce);
    h.nats.clear();
    let executed = h.store.executed;
    h.advance(Duration::from_secs(10));
    assert!(!h.publishes(sys).is_empty());
    assert!(
        !h.nats.iter().any(
            |a| matches!(a, Action::NatsPublish { subject, .. } if subject.starts_with("$SYS"))
        ),
        "{:?}",
        h.nats
    );
    assert_eq!(h.store.executed, executed, "nothing written to the store");
}

#[test]
fn clients_cannot_publish_the_brokers_statistics() {
    let mut h = broker(BrokerConfig::default());
    let (sys, _) = h.connect_ok(connect(V5, "sys", true));
    h.subscribe_ok(sys, 1, "$SYS/#", QoS::AtMostOnce);
    for version in [V5, ProtocolVersion::V311] {
        let (p, _) = h.connect_ok(connect(version, "p", true));
        h.send(
            p,
            &publish(
                "$SYS/broker/uptime",
                "forever",
                PublishQos::AtLeastOnce(harness::pid(1)),
                true,
            ),
        );
        match h.next_packet(p) {
            Some(Packet::PubAck(a)) => {
                let expected = if version.is_v5() {
                    PubAckReason::NotAuthorized
                } else {
                    PubAckReason::Success
                };
                assert_eq!(a.reason, expected);
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
        h.send(
            p,
            &publish(
                "$SYS/broker/uptime",
                "forever",
                PublishQos::AtMostOnce,
                true,
            ),
        );
        assert_eq!(h.closed(p), None, "the connection stays");
    }
    // Nowhere under `$SYS/` is the clients': a message there would pass for the broker's.
    let (p, _) = h.connect_ok(connect(V5, "p2", true));
    h.send(
        p,
        &publish("$SYS/other", "no", PublishQos::AtLeastOnce(pid(9)), false),
    );
    assert!(
        matches!(h.next_packet(p), Some(Packet::PubAck(a)) if a.reason == PubAckReason::NotAuthorized)
    );
    let got = h.publishes(sys);
    assert!(got.iter().all(|m| m.0 != "$SYS/other"), "{got:?}");
}

#[test]
fn statistics_are_off_by_default_in_the_core() {
    let mut h = Harness::new(BrokerConfig::default());
    assert_eq!(h.broker.next_deadline(), None, "no timer");
    let (sys, _) = h.connect_ok(connect(V5, "sys", true));
    h.subscribe_ok(sys, 1, "$SYS/#", QoS::AtMostOnce);
    h.advance(Duration::from_secs(60));
    assert!(h.publishes(sys).is_empty());
}
