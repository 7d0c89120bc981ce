//! The groups of shared subscriptions (`$share/{group}/{filter}`) live exactly as long as they
//! have members: a SUBSCRIBE refused by the permissions or the subscription quota makes none
//! (a hostile client cannot grow the broker's memory with refused group names), and the last
//! member to unsubscribe or end its session frees its group. [`Metrics::share_groups`] counts
//! them.
//!
//! [`Metrics::share_groups`]: jetmq_core::broker::Metrics::share_groups

mod harness;

use bytestring::ByteString;
use harness::{connect, pid, publish, subscribe, Harness};
use jetmq_core::broker::{AuthDecision, BrokerConfig, ConnId, Input, Permissions};
use jetmq_core::codec::{
    Packet, ProtocolVersion, PublishQos, QoS, SubAckReason, UnsubAckReason, Unsubscribe,
};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// SUBSCRIBEs sent by the refused-flood tests.
const FLOOD: u16 = 10_000;

fn groups(h: &Harness) -> usize {
    h.broker.metrics().share_groups
}

/// The reasons of the SUBACK `conn` got for SUBSCRIBE `id` to `filter`.
fn subscribe_reasons(h: &mut Harness, conn: ConnId, id: u16, filter: &str) -> Vec<SubAckReason> {
    h.send(conn, &subscribe(id, filter, QoS::AtLeastOnce));
    h.packets(conn)
        .into_iter()
        .find_map(|p| match p {
            Packet::SubAck(a) => Some(a.reasons),
            _ => None,
        })
        .expect("a SUBACK")
}

fn unsubscribe_ok(h: &mut Harness, conn: ConnId, id: u16, filter: &str) {
    h.send(
        conn,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(id),
            properties: Default::default(),
            filters: vec![filter.into()],
        }),
    );
    let packets = h.packets(conn);
    assert!(
        // 3.1.1 UNSUBACKs carry no reason codes.
        matches!(&packets[..], [Packet::UnsubAck(u)]
            if u.reasons.iter().all(|r| *r == UnsubAckReason::Success)),
        "{packets:?}"
    );
}

/// Publishes `count` QoS 0 messages on `topic` from `publisher`.
fn publish_n(h: &mut Harness, publisher: ConnId, topic: &str, count: usize) {
    for i in 0..count {
        h.send(
            publisher,
            &publish(topic, &i.to_string(), PublishQos::AtMostOnce, false),
        );
    }
}

#[test]
fn shared_subscriptions_refused_by_the_permissions_make_no_group() {
    let mut h = Harness::new(BrokerConfig {
        authenticate: true,
        ..BrokerConfig::default()
    });
    let conn = h.connect(connect(V5, "hostile", true));
    h.auth_requests.pop().expect("asked");
    let permissions = Permissions {
        publish: None,
        subscribe: Some(vec![ByteString::from("dev/#")]),
    };
    h.input(Input::Authenticated {
        conn,
        decision: AuthDecision::Allow {
            account: None,
            permissions: Some(Box::new(permissions)),
        },
    });
    assert!(matches!(h.next_packet(conn), Some(Packet::ConnAck(_))));
    for n in 1..=FLOOD {
        let reasons = subscribe_reasons(&mut h, conn, n, &format!("$share/g{n}/a"));
        assert_eq!(reasons, [SubAckReason::NotAuthorized]);
    }
    assert_eq!(groups(&h), 0);
    assert_eq!(h.broker.metrics().subscriptions, 0);
}

#[test]
fn shared_subscriptions_beyond_the_quota_make_no_group() {
    let mut h = Harness::new(BrokerConfig {
        max_subscriptions: 1,
        ..BrokerConfig::default()
    });
    let (conn, _) = h.connect_ok(connect(V5, "hostile", true));
    h.subscribe_ok(conn, 1, "x", QoS::AtMostOnce);
    for n in 2..=FLOOD + 1 {
        let reasons = subscribe_reasons(&mut h, conn, n, &format!("$share/g{n}/a"));
        assert_eq!(reasons, [SubAckReason::QuotaExceeded]);
    }
    assert_eq!(groups(&h), 0);
}

#[test]
fn the_last_member_unsubscribing_frees_the_group() {
    let mut h = Harness::new(BrokerConfig::default());
    let (m, _) = h.connect_ok(connect(V5, "m", true));
    h.subscribe_ok(m, 1, "$share/g/a", QoS::AtLeastOnce);
    assert_eq!(groups(&h), 1);
    // Subscribing again replaces the subscription: still one member, one group.
    h.subscribe_ok(m, 2, "$share/g/a", QoS::AtMostOnce);
    assert_eq!(groups(&h), 1);
    unsubscribe_ok(&mut h, m, 3, "$share/g/a");
    assert_eq!(groups(&h), 0);
}

#[test]
fn the_last_members_session_ending_frees_the_group() {
    let mut h = Harness::new(BrokerConfig::default());
    let (m, _) = h.connect_ok(connect(V3, "m", true));
    h.subscribe_ok(m, 1, "$share/g/a", QoS::AtLeastOnce);
    h.subscribe_ok(m, 2, "$share/h/a", QoS::AtLeastOnce);
    assert_eq!(groups(&h), 2);
    h.input(Input::Closed { conn: m });
    assert_eq!(groups(&h), 0);
}

#[test]
fn a_group_stays_while_a_member_is_left_and_serves_it() {
    let mut h = Harness::new(BrokerConfig::default());
    let (a, _) = h.connect_ok(connect(V5, "a", true));
    let (b, _) = h.connect_ok(connect(V3, "b", true));
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    h.subscribe_ok(a, 1, "$share/g/a", QoS::AtMostOnce);
    h.subscribe_ok(b, 1, "$share/g/a", QoS::AtMostOnce);
    assert_eq!(groups(&h), 1);
    publish_n(&mut h, p, "a", 2);
    assert_eq!((h.publishes(a).len(), h.publishes(b).len()), (1, 1));
    unsubscribe_ok(&mut h, a, 2, "$share/g/a");
    assert_eq!(groups(&h), 1, "b is still a member");
    publish_n(&mut h, p, "a", 3);
    assert_eq!(h.publishes(a).len(), 0);
    assert_eq!(h.publishes(b).len(), 3, "b gets them all");
    h.input(Input::Closed { conn: b });
    assert_eq!(groups(&h), 0);
}

#[test]
fn a_group_made_again_after_it_was_freed_delivers() {
    let mut h = Harness::new(BrokerConfig::default());
    let (m, _) = h.connect_ok(connect(V5, "m", true));
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    h.subscribe_ok(m, 1, "$share/g/a", QoS::AtMostOnce);
    unsubscribe_ok(&mut h, m, 2, "$share/g/a");
    assert_eq!(groups(&h), 0);
    publish_n(&mut h, p, "a", 1);
    assert!(h.publishes(m).is_empty());
    h.subscribe_ok(m, 3, "$share/g/a", QoS::AtMostOnce);
    assert_eq!(groups(&h), 1);
    publish_n(&mut h, p, "a", 2);
    assert_eq!(h.publishes(m).len(), 2);
    // Another session makes it again once the first one's session has ended.
    h.input(Input::Closed { conn: m });
    assert_eq!(groups(&h), 0);
    let (n, _) = h.connect_ok(connect(V3, "n", true));
    h.subscribe_ok(n, 1, "$share/g/a", QoS::AtMostOnce);
    publish_n(&mut h, p, "a", 2);
    assert_eq!(h.publishes(n).len(), 2);
}

/// A message in flight to a member that left its group (the group's last member: it was
/// freed) stays with that member while its session lives, and finds no other member when the
/// session ends: a group made again under the same name is a new group.
#[test]
fn a_delivery_of_a_freed_group_never_reaches_the_group_made_again() {
    let mut h = Harness::new(BrokerConfig::default());
    let (old, _) = h.connect_ok(connect(V3, "old", true));
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    h.subscribe_ok(old, 1, "$share/g/a", QoS::AtLeastOnce);
    h.send(
        p,
        &publish("a", "job", PublishQos::AtLeastOnce(pid(1)), false),
    );
    assert_eq!(h.publishes(old).len(), 1, "in flight, not acknowledged");
    unsubscribe_ok(&mut h, old, 2, "$share/g/a");
    assert_eq!(groups(&h), 0);
    let (new, _) = h.connect_ok(connect(V3, "new", true));
    h.subscribe_ok(new, 1, "$share/g/a", QoS::AtLeastOnce);
    h.input(Input::Closed { conn: old });
    assert!(
        h.publishes(new).is_empty(),
        "the old group's message is not the new group's"
    );
    h.send(
        p,
        &publish("a", "next", PublishQos::AtLeastOnce(pid(2)), false),
    );
    let got = h.publishes(new);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, "next");
}

/// A persistent member restored from the store makes its group again; it is freed when the
/// member unsubscribes.
#[test]
fn a_restored_member_makes_its_group_and_frees_it() {
    let mut h = Harness::new(BrokerConfig::default());
    let (m, _) = h.connect_ok(connect(V3, "m", false));
    h.subscribe_ok(m, 1, "$share/g/a", QoS::AtLeastOnce);
    h.input(Input::Closed { conn: m });
    let records = h.store.records();
    let mut h2 = Harness::new(BrokerConfig::default());
    h2.store = std::mem::take(&mut h.store);
    for r in records {
        h2.input(Input::Restored(r));
    }
    h2.input(Input::RestoreComplete);
    assert_eq!(groups(&h2), 1);
    let (m2, present) = h2.connect_ok(connect(V3, "m", false));
    assert!(present);
    unsubscribe_ok(&mut h2, m2, 2, "$share/g/a");
    assert_eq!(groups(&h2), 0);
}
