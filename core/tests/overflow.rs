//! Overload without loss: a subscriber slower than its publishers loses no acknowledged QoS 1/2
//! message. A persistent session spills to its consumer and reads it back; anything else holds
//! the publishers back; a subscriber that stops acknowledging is disconnected as a slow
//! consumer; `Overflow::Drop` keeps mosquitto's semantics.

mod harness;

use std::time::Duration;

use harness::{connect, pid, publish, Harness};
use jetmq_core::broker::{BrokerConfig, CloseReason, ConnId, Input, Notice, Overflow};
use jetmq_core::codec::{Ack, DisconnectReason, Packet, ProtocolVersion, PublishQos, QoS};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A window of two in flight and a queue of four behind it.
fn small_queues() -> BrokerConfig {
    BrokerConfig {
        max_inflight: 2,
        max_queued_messages: 4,
        ..BrokerConfig::default()
    }
}

fn q1(n: u16) -> PublishQos {
    PublishQos::AtLeastOnce(pid(n))
}

/// Publishes `count` QoS 1 messages "1", "2", ... on `t` from `p`, packet ids 1, 2, ...
fn publish_numbered(h: &mut Harness, p: ConnId, count: u16) {
    for i in 1..=count {
        h.send(p, &publish("t", &i.to_string(), q1(i), false));
    }
}

/// Acknowledges every PUBLISH `s` received, one at a time, until nothing more comes; returns
/// the payloads and DUP flags in the order they arrived.
fn ack_everything(h: &mut Harness, s: ConnId) -> Vec<(String, bool)> {
    let mut got = Vec::new();
    for _ in 0..10_000 {
        let Some(packet) = h.next_packet(s) else {
            return got;
        };
        if let Packet::Publish(p) = packet {
            got.push((String::from_utf8_lossy(&p.payload).into_owned(), p.dup));
            if let Some(id) = p.qos.packet_id() {
                h.send(s, &Packet::PubAck(Ack::new(id)));
            }
        }
    }
    panic!("the subscriber never stopped receiving");
}

fn numbers(count: u16) -> Vec<String> {
    (1..=count).map(|i| i.to_string()).collect()
}

fn puback_count(h: &mut Harness, p: ConnId) -> usize {
    h.packets(p)
        .iter()
        .filter(|p| matches!(p, Packet::PubAck(_)))
        .count()
}

#[test]
fn a_slow_clean_subscriber_holds_its_publisher_back_and_loses_nothing() {
    let mut h = Harness::new(small_queues());
    let (s, _) = h.connect_ok(connect(V3, "s", true));
    h.subscribe_ok(s, 1, "t", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    publish_numbered(&mut h, p, 20);
    assert!(h.paused.contains(&p), "the publisher is no longer read");
    assert!(h.broker.stats().publishers_held >= 1);
    let (inflight, queued, _) = h.broker.session_backlog("s").expect("session");
    assert_eq!(inflight, 2);
    assert!(
        queued < 20,
        "the held publisher's later messages wait in its socket, not in the queue"
    );
    let got = ack_everything(&mut h, s);
    let payloads: Vec<String> = got.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(payloads, numbers(20), "every message, in order");
    assert!(got.iter().all(|(_, dup)| !dup));
    assert!(!h.paused.contains(&p), "the publisher is read again");
    assert_eq!(puback_count(&mut h, p), 20, "every publish acknowledged");
    assert_eq!(h.broker.stats().dropped_queue_full, 0);
}

#[test]
fn a_slow_persistent_subscriber_spills_to_its_consumer_and_reads_it_back() {
    let mut h = Harness::new(small_queues());
    let (s, _) = h.connect_ok(connect(V3, "s", false));
    h.subscribe_ok(s, 1, "t", QoS::AtLeastOnce);
    let (fast, _) = h.connect_ok(connect(V3, "fast", true));
    h.subscribe_ok(fast, 1, "t", QoS::AtMostOnce);
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    publish_numbered(&mut h, p, 30);
    assert!(
        !h.paused.contains(&p),
        "a persistent subscriber's overflow stays in the store: nobody is held back"
    );
    assert_eq!(puback_count(&mut h, p), 30);
    assert_eq!(
        h.publishes(fast).len(),
        30,
        "the fast subscriber keeps its pace"
    );
    assert!(h.broker.stats().spilled > 0, "the overflow was spilled");
    let (_, queued, _) = h.broker.session_backlog("s").expect("session");
    assert!(queued <= 4, "the queue stays within its limit: {queued}");
    let got = ack_everything(&mut h, s);
    let payloads: Vec<String> = got.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(payloads, numbers(30), "every message, in order");
    assert!(
        got.iter().all(|(_, dup)| !dup),
        "read back from the store, still a first delivery"
    );
    assert_eq!(h.broker.stats().dropped_queue_full, 0);
    // Nothing is left in the consumer once everything was acknowledged.
    assert_eq!(h.broker.session_backlog("s"), Some((0, 0, 0)));
}

#[test]
fn an_offline_persistent_session_spills_and_gets_everything_when_it_resumes() {
    let mut h = Harness::new(small_queues());
    let (s, _) = h.connect_ok(connect(V3, "s", false));
    h.subscribe_ok(s, 1, "t", QoS::AtLeastOnce);
    h.input(Input::Closed { conn: s });
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    publish_numbered(&mut h, p, 12);
    assert!(
        !h.paused.contains(&p),
        "an offline session holds nobody back"
    );
    assert_eq!(h.broker.stats().dropped_queue_full, 0);
    let (s2, present) = h.connect_ok(connect(V3, "s", false));
    assert!(present);
    let got = ack_everything(&mut h, s2);
    let payloads: Vec<String> = got.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(payloads, numbers(12));
}

#[test]
fn a_subscriber_that_stops_acknowledging_is_disconnected_as_a_slow_consumer() {
    let mut h = Harness::new(small_queues());
    let (s, _) = h.connect_ok(connect(V5, "s", true));
    h.subscribe_ok(s, 1, "t", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    publish_numbered(&mut h, p, 20);
    assert!(h.paused.contains(&p));
    h.advance(Duration::from_secs(29));
    assert_eq!(h.closed(s), None, "not before slow_consumer_timeout");
    h.advance(Duration::from_secs(2));
    assert_eq!(h.closed(s), Some(CloseReason::SlowConsumer));
    let disconnect = h.packets(s).into_iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    });
    assert_eq!(disconnect, Some(DisconnectReason::QuotaExceeded));
    // Its clean session ended: nothing is owed to it any more, and the publisher goes on.
    assert!(!h.paused.contains(&p));
    assert_eq!(puback_count(&mut h, p), 20);
    assert_eq!(h.broker.session_backlog("s"), None);
}

#[test]
fn a_subscriber_that_keeps_acknowledging_slowly_is_not_disconnected() {
    let mut h = Harness::new(small_queues());
    let (s, _) = h.connect_ok(connect(V3, "s", true));
    h.subscribe_ok(s, 1, "t", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    publish_numbered(&mut h, p, 20);
    let mut got = Vec::new();
    // One acknowledgement every 20 s: slower than anyone would like, never stalled 30 s.
    for _ in 0..40 {
        h.advance(Duration::from_secs(20));
        assert_eq!(h.closed(s), None);
        let Some(packet) = h.next_packet(s) else {
            break;
        };
        if let Packet::Publish(publish) = packet {
            got.push(String::from_utf8_lossy(&publish.payload).into_owned());
            if let Some(id) = publish.qos.packet_id() {
                h.send(s, &Packet::PubAck(Ack::new(id)));
            }
        }
    }
    assert_eq!(got, numbers(20));
}

#[test]
fn all_queues_together_are_bounded_by_max_total_queued_bytes() {
    // Each message keeps 1 (topic) + 3 (payload) bytes; two subscribers' queues of three
    // messages each are within their own limits but over the total of 20 bytes.
    let mut h = Harness::new(BrokerConfig {
        max_inflight: 1,
        max_queued_messages: 100,
        max_total_queued_bytes: 20,
        ..BrokerConfig::default()
    });
    let (a, _) = h.connect_ok(connect(V3, "a", true));
    h.subscribe_ok(a, 1, "t", QoS::AtLeastOnce);
    let (b, _) = h.connect_ok(connect(V3, "b", true));
    h.subscribe_ok(b, 1, "t", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    for i in 1..=10u16 {
        h.send(p, &publish("t", &format!("{i:03}"), q1(i), false));
    }
    assert!(h.paused.contains(&p), "held back by the total limit");
    let (_, queued, _) = h.broker.session_backlog("a").expect("a");
    assert!(queued < 10, "{queued}");
    // Both drain (one acknowledgement each in turn), the publisher goes on, nothing is lost.
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..100 {
        let mut progressed = false;
        for (conn, got) in [(a, &mut got_a), (b, &mut got_b)] {
            if let Some(Packet::Publish(publish)) = h.next_packet(conn) {
                got.push(String::from_utf8_lossy(&publish.payload).into_owned());
                if let Some(id) = publish.qos.packet_id() {
                    h.send(conn, &Packet::PubAck(Ack::new(id)));
                }
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    let expected: Vec<String> = (1..=10).map(|i| format!("{i:03}")).collect();
    assert_eq!(got_a, expected);
    assert_eq!(got_b, expected);
    assert!(!h.paused.contains(&p));
}

#[test]
fn drop_mode_drops_what_does_not_fit_counted_and_reported() {
    let mut h = Harness::new(BrokerConfig {
        max_queued_messages: 2,
        overflow: Overflow::Drop,
        ..BrokerConfig::default()
    });
    let (s, _) = h.connect_ok(connect(V3, "s", false));
    h.subscribe_ok(s, 1, "t", QoS::AtLeastOnce);
    h.input(Input::Closed { conn: s });
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    publish_numbered(&mut h, p, 4);
    assert_eq!(h.broker.stats().dropped_queue_full, 2);
    assert_eq!(
        h.notices
            .iter()
            .filter(|n| matches!(n, Notice::QueueOverflow { .. }))
            .count(),
        2
    );
    // The dropped messages are not kept in the store for it either.
    let (s2, _) = h.connect_ok(connect(V3, "s", false));
    let got: Vec<String> = ack_everything(&mut h, s2)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(got, numbers(2));
}

#[test]
fn qos0_for_a_full_queue_is_dropped_and_counted_in_lossless_mode_too() {
    let mut h = Harness::new(small_queues());
    let (s, _) = h.connect_ok(connect(V3, "s", true));
    h.subscribe_ok(s, 1, "t", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    // Two in flight, four queued: the window and the queue are full.
    publish_numbered(&mut h, p, 6);
    let (q0, _) = h.connect_ok(connect(V3, "q0", true));
    h.send(q0, &publish("t", "zero", PublishQos::AtMostOnce, false));
    assert!(!h.paused.contains(&q0), "QoS 0 holds nobody back");
    assert_eq!(h.broker.stats().dropped_queue_full, 0);
    assert_eq!(h.broker.stats().dropped_slow_consumer, 1);
}

#[test]
fn qos0_never_overtakes_spilled_messages() {
    // A persistent subscriber at QoS 0 and 1 on the same topic: once its QoS 1 messages spill,
    // a later QoS 0 message of the same publisher is dropped (counted), never sent ahead of them.
    let mut h = Harness::new(small_queues());
    let (s, _) = h.connect_ok(connect(V3, "s", false));
    h.subscribe_ok(s, 1, "t", QoS::AtLeastOnce);
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    publish_numbered(&mut h, p, 12);
    assert!(h.broker.stats().spilled > 0);
    // The reads of the spill wait: what the session holds in memory drains to nothing while
    // its spilled messages are still to come.
    h.auto_store = false;
    let mut got: Vec<String> = ack_everything(&mut h, s)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(got.len() < 12);
    h.send(p, &publish("t", "zero", PublishQos::AtMostOnce, false));
    h.auto_store = true;
    h.complete_all_held();
    got.extend(ack_everything(&mut h, s).into_iter().map(|(p, _)| p));
    assert_eq!(got, numbers(12), "the QoS 0 message did not jump the queue");
    assert_eq!(h.broker.stats().dropped_slow_consumer, 1);
}
