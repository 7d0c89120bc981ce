//! MQTT 5.0 features of the broker driven through its inputs: topic aliases towards clients,
//! session expiry limits, shared-subscription hand-over, server redirection and enhanced
//! authentication.

mod harness;

use std::time::Duration;

use harness::{connect, publish, Harness};
use jetmq_core::broker::{BrokerConfig, Input, Notice};
use jetmq_core::codec::{Packet, ProtocolVersion, PublishQos, QoS};

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
