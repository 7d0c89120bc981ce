//! The retained-message quota (`max_retained_messages`, `max_retained_bytes`): a retained
//! PUBLISH on a new topic beyond it is refused (MQTT 5.0: 0x97 Quota exceeded; 3.1.1:
//! acknowledged and dropped) and goes nowhere; replacing and deleting always work; expired
//! retained messages make room; a will beyond it goes out unretained; messages read back from
//! the store are all kept.

mod harness;

use std::time::Duration;

use harness::{connect, pid, publish, Harness};
use jetmq_core::broker::{BrokerConfig, ConnId, Input};
use jetmq_core::codec::{LastWill, Packet, ProtocolVersion, PubAckReason, PublishQos, QoS};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V311;

fn quota(messages: usize, bytes: usize) -> BrokerConfig {
    BrokerConfig {
        max_retained_messages: messages,
        max_retained_bytes: bytes,
        ..BrokerConfig::default()
    }
}

/// Publishes a retained QoS 1 message and returns the PUBACK's reason.
fn retain(h: &mut Harness, c: ConnId, id: u16, topic: &str, payload: &str) -> PubAckReason {
    let p = publish(topic, payload, PublishQos::AtLeastOnce(pid(id)), true);
    h.send(c, &p);
    h.packets(c)
        .into_iter()
        .find_map(|p| match p {
            Packet::PubAck(a) => Some(a.reason),
            _ => None,
        })
        .expect("a PUBACK")
}

#[test]
fn a_new_retained_topic_beyond_the_count_is_refused_and_goes_nowhere() {
    let mut h = Harness::new(quota(2, 0));
    let (s, _) = h.connect_ok(connect(V5, "s", true));
    h.subscribe_ok(s, 1, "r/#", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    assert_eq!(retain(&mut h, p, 1, "r/a", "1"), PubAckReason::Success);
    assert_eq!(retain(&mut h, p, 2, "r/b", "2"), PubAckReason::Success);
    assert_eq!(h.publishes(s).len(), 2);

    assert_eq!(
        retain(&mut h, p, 3, "r/c", "3"),
        PubAckReason::QuotaExceeded
    );
    assert!(h.publishes(s).is_empty(), "a refused message is not routed");
    assert_eq!(h.broker.retained_count(), 2);
    assert_eq!(h.broker.stats().retained_refused, 1);

    // Replacing one is fine, and so is deleting one; then there is room again.
    assert_eq!(retain(&mut h, p, 4, "r/a", "one"), PubAckReason::Success);
    assert_eq!(retain(&mut h, p, 5, "r/b", ""), PubAckReason::Success);
    assert_eq!(h.broker.retained_count(), 1);
    assert_eq!(retain(&mut h, p, 6, "r/c", "3"), PubAckReason::Success);
    assert_eq!(h.broker.retained_count(), 2);

    // A message that is not retained is not counted.
    h.packets(s);
    h.send(p, &publish("r/d", "live", PublishQos::AtMostOnce, false));
    assert_eq!(h.publishes(s).len(), 1);
}

#[test]
fn mqtt_3_1_1_publishers_are_acknowledged_and_qos_0_is_dropped() {
    let mut h = Harness::new(quota(1, 0));
    let (s, _) = h.connect_ok(connect(V3, "s", true));
    h.subscribe_ok(s, 1, "r/#", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    assert_eq!(retain(&mut h, p, 1, "r/a", "1"), PubAckReason::Success);
    h.packets(s);
    // 3.1.1 has no code for it: a plain PUBACK, and the message goes nowhere.
    h.send(
        p,
        &publish("r/b", "2", PublishQos::AtLeastOnce(pid(2)), true),
    );
    assert_eq!(
        h.packets(p),
        vec![Packet::PubAck(jetmq_core::codec::Ack::new(pid(2)))]
    );
    h.send(p, &publish("r/c", "3", PublishQos::AtMostOnce, true));
    assert!(h.publishes(s).is_empty());
    assert_eq!(h.broker.retained_count(), 1);
    assert_eq!(h.broker.stats().retained_refused, 2);
    assert_eq!(h.closed(p), None, "the publisher stays connected");
}

#[test]
fn the_byte_quota_counts_what_is_kept_and_replacements() {
    // Topic and payload bytes (one-byte topics here), properties too.
    let mut h = Harness::new(quota(0, 12));
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    assert_eq!(retain(&mut h, p, 1, "a", "12345"), PubAckReason::Success);
    assert_eq!(h.broker.metrics().retained_bytes, 6);
    assert_eq!(
        retain(&mut h, p, 2, "b", "123456"),
        PubAckReason::QuotaExceeded,
        "6 + 7 > 12"
    );
    assert_eq!(retain(&mut h, p, 3, "b", "12345"), PubAckReason::Success);
    assert_eq!(h.broker.metrics().retained_bytes, 12);
    // A replacement counts its own size instead of the old one's.
    assert_eq!(retain(&mut h, p, 4, "a", "1"), PubAckReason::Success);
    assert_eq!(h.broker.metrics().retained_bytes, 8);
    assert_eq!(retain(&mut h, p, 5, "c", "123"), PubAckReason::Success);
    assert_eq!(retain(&mut h, p, 6, "a", ""), PubAckReason::Success);
    assert_eq!(h.broker.metrics().retained_bytes, 10);
}

#[test]
fn user_properties_count_against_the_byte_quota() {
    // A one-byte payload with a large user property keeps far more than one byte.
    let mut h = Harness::new(quota(0, 1000));
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    let mut big = publish("a", "x", PublishQos::AtLeastOnce(pid(1)), true);
    if let Packet::Publish(m) = &mut big {
        m.properties_mut()
            .user_properties
            .push(jetmq_core::codec::UserProperty {
                name: "n".into(),
                value: "v".repeat(2000).into(),
            });
    }
    h.send(p, &big);
    let reason = h.packets(p).into_iter().find_map(|p| match p {
        Packet::PubAck(a) => Some(a.reason),
        _ => None,
    });
    assert_eq!(reason, Some(PubAckReason::QuotaExceeded));
    assert_eq!(h.broker.retained_count(), 0);
}

#[test]
fn expired_retained_messages_make_room() {
    let mut h = Harness::new(quota(1, 0));
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    let mut short = publish("a", "short-lived", PublishQos::AtLeastOnce(pid(1)), true);
    if let Packet::Publish(m) = &mut short {
        m.properties_mut().message_expiry_interval = Some(1);
    }
    h.send(p, &short);
    h.packets(p);
    assert_eq!(retain(&mut h, p, 2, "b", "x"), PubAckReason::QuotaExceeded);
    h.advance(Duration::from_secs(2));
    assert_eq!(retain(&mut h, p, 3, "b", "x"), PubAckReason::Success);
    assert_eq!(h.broker.retained_count(), 1);
    assert!(
        h.store.records().iter().all(|r| !r.subject.contains(".a")),
        "the expired message left the store too: {:?}",
        h.store.records()
    );
}

#[test]
fn a_will_beyond_the_quota_goes_out_unretained() {
    let mut h = Harness::new(quota(1, 0));
    let (s, _) = h.connect_ok(connect(V3, "s", true));
    h.subscribe_ok(s, 1, "will/#", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    assert_eq!(retain(&mut h, p, 1, "other", "1"), PubAckReason::Success);
    let mut c = connect(V3, "w", true);
    c.will = Some(LastWill {
        topic: "will/w".into(),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    });
    let (w, _) = h.connect_ok(c);
    h.input(Input::Closed { conn: w });
    let got = h.publishes(s);
    assert_eq!(got.len(), 1, "the will is delivered: {got:?}");
    assert_eq!(h.broker.retained_count(), 1, "but not retained");
}

#[test]
fn messages_read_back_from_the_store_are_all_kept() {
    let mut h = Harness::new(quota(0, 0));
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    for (i, t) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(
            retain(&mut h, p, u16::try_from(i + 1).unwrap(), t, "x"),
            PubAckReason::Success
        );
    }
    let records = h.store.records();
    let mut h2 = Harness::new(quota(1, 0));
    h2.store = std::mem::take(&mut h.store);
    for r in records {
        h2.input(Input::Restored(r));
    }
    h2.input(Input::RestoreComplete);
    assert_eq!(h2.broker.retained_count(), 3);
    assert_eq!(
        h2.broker.metrics().retained_bytes,
        6,
        "topic and payload, 2 bytes each"
    );
    let (p2, _) = h2.connect_ok(connect(V5, "p", true));
    assert_eq!(
        retain(&mut h2, p2, 1, "d", "x"),
        PubAckReason::QuotaExceeded
    );
    assert_eq!(retain(&mut h2, p2, 2, "a", "y"), PubAckReason::Success);
}

#[test]
fn the_brokers_own_statistics_are_not_counted() {
    let mut h = Harness::new(BrokerConfig {
        sys_interval: Some(Duration::from_secs(10)),
        ..quota(1, 0)
    });
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    h.advance(Duration::from_secs(11));
    let statistics = h.broker.retained_count();
    assert!(statistics > 1, "a $SYS round retained its figures");
    assert_eq!(h.broker.metrics().retained_bytes, 0);
    assert_eq!(retain(&mut h, p, 1, "a", "x"), PubAckReason::Success);
    assert_eq!(retain(&mut h, p, 2, "b", "x"), PubAckReason::QuotaExceeded);
    assert_eq!(h.broker.retained_count(), statistics + 1);
}
