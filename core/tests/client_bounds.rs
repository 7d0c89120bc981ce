//! What one client may make the broker keep or wait for (hostile-client hardening): user
//! properties per message, sessions in all and per user, connections without keep-alive, the
//! first packet of a connection, and client identifiers taken from user names.

mod harness;

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use harness::{connect, pid, publish, Harness};
use jetmq_core::broker::{AuthDecision, BrokerConfig, CloseReason, ConnId, Input};
use jetmq_core::codec::{
    Connect, ConnectReason, Disconnect, DisconnectReason, LastWill, Packet, ProtocolVersion,
    PubAckReason, Publish, PublishProperties, PublishQos, QoS, UserProperty, WillProperties,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V311;

fn properties(count: usize, value_len: usize) -> Vec<UserProperty> {
    (0..count)
        .map(|i| UserProperty {
            name: format!("k{i}").into(),
            value: "v".repeat(value_len).into(),
        })
        .collect()
}

fn publish_with(topic: &str, qos: PublishQos, user_properties: Vec<UserProperty>) -> Packet {
    let mut p = Publish::new(topic.into(), Bytes::from_static(b"x"));
    p.qos = qos;
    p.properties = Some(Box::new(PublishProperties {
        user_properties,
        ..PublishProperties::EMPTY
    }));
    Packet::Publish(p)
}

fn connack(h: &mut Harness, conn: ConnId) -> jetmq_core::codec::ConnAck {
    h.packets(conn)
        .into_iter()
        .find_map(|p| match p {
            Packet::ConnAck(a) => Some(*a),
            _ => None,
        })
        .expect("a CONNACK")
}

/// Connects `c` through the shell's authentication, allowed as its user name says.
fn admit(h: &mut Harness, c: Connect) -> (ConnId, jetmq_core::codec::ConnAck) {
    let conn = h.connect(c);
    if h.auth_requests.pop().is_some() {
        h.input(Input::Authenticated {
            conn,
            decision: AuthDecision::Allow {
                account: None,
                permissions: None,
            },
        });
    }
    let ack = connack(h, conn);
    (conn, ack)
}

fn with_user(mut c: Connect, user: &str) -> Connect {
    c.username = Some(user.into());
    c.password = Some(Bytes::from_static(b"pw"));
    c
}

mod user_properties {
    use super::*;

    fn bounded(count: usize, bytes: usize) -> Harness {
        Harness::new(BrokerConfig {
            max_user_properties: count,
            max_user_property_bytes: bytes,
            ..BrokerConfig::default()
        })
    }

    #[test]
    fn a_publish_with_too_many_user_properties_is_refused_and_goes_nowhere() {
        let mut h = bounded(4, 0);
        let (s, _) = h.connect_ok(connect(V5, "s", true));
        h.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
        let (p, _) = h.connect_ok(connect(V5, "p", true));

        h.send(
            p,
            &publish_with("t/a", PublishQos::AtLeastOnce(pid(1)), properties(4, 1)),
        );
        assert_eq!(h.publishes(s).len(), 1, "four properties fit");

        h.send(
            p,
            &publish_with("t/a", PublishQos::AtLeastOnce(pid(2)), properties(5, 1)),
        );
        h.send(
            p,
            &publish_with("t/a", PublishQos::ExactlyOnce(pid(3)), properties(5, 1)),
        );
        h.send(
            p,
            &publish_with("t/a", PublishQos::AtMostOnce, properties(5, 1)),
        );
        let reasons: Vec<_> = h
            .packets(p)
            .into_iter()
            .filter_map(|p| match p {
                Packet::PubAck(a) if a.packet_id == pid(2) => Some(a.reason),
                Packet::PubRec(a) if a.packet_id == pid(3) => Some(a.reason),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons,
            [PubAckReason::QuotaExceeded, PubAckReason::QuotaExceeded]
        );
        assert!(h.publishes(s).is_empty(), "refused messages are not routed");
        assert_eq!(h.broker.stats().oversized_properties, 3);
        assert_eq!(h.closed(p), None, "the publisher stays connected");
    }

    #[test]
    fn the_byte_bound_counts_names_and_values() {
        // Two properties: "k0"/"k1" (2 bytes each) and 10-byte values: 24 bytes.
        let mut h = bounded(0, 24);
        let (p, _) = h.connect_ok(connect(V5, "p", true));
        h.send(
            p,
            &publish_with("t", PublishQos::AtLeastOnce(pid(1)), properties(2, 10)),
        );
        h.send(
            p,
            &publish_with("t", PublishQos::AtLeastOnce(pid(2)), properties(2, 11)),
        );
        let reasons: Vec<_> = h
            .packets(p)
            .into_iter()
            .filter_map(|p| match p {
                Packet::PubAck(a) => Some(a.reason),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons,
            [PubAckReason::Success, PubAckReason::QuotaExceeded]
        );
    }

    #[test]
    fn a_will_with_too_many_user_properties_refuses_the_connect() {
        let mut h = bounded(2, 0);
        let mut c = connect(V5, "w", true);
        c.will = Some(LastWill {
            topic: "w/gone".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties {
                user_properties: properties(3, 1),
                ..WillProperties::default()
            },
        });
        let conn = h.connect(c);
        assert_eq!(connack(&mut h, conn).reason, ConnectReason::QuotaExceeded);
        assert!(h.closed(conn).is_some());
    }

    #[test]
    fn zero_means_no_bound() {
        let mut h = bounded(0, 0);
        let (p, _) = h.connect_ok(connect(V5, "p", true));
        h.send(
            p,
            &publish_with("t", PublishQos::AtLeastOnce(pid(1)), properties(1000, 100)),
        );
        assert!(h
            .packets(p)
            .iter()
            .any(|p| matches!(p, Packet::PubAck(a) if a.reason == PubAckReason::Success)));
    }
}

mod sessions {
    use super::*;

    #[test]
    fn a_new_session_beyond_max_sessions_is_refused_while_resuming_one_still_works() {
        let mut h = Harness::new(BrokerConfig {
            max_sessions: 2,
            ..BrokerConfig::default()
        });
        let (a, _) = h.connect_ok(connect(V5, "a", false));
        let mut persistent = connect(V3, "b", false);
        persistent.clean_start = false;
        let (b, _) = h.connect_ok(persistent.clone());
        h.send(
            b,
            &Packet::Disconnect(Box::new(Disconnect::new(
                DisconnectReason::NormalDisconnection,
            ))),
        );
        assert!(h.closed(b).is_some());

        // Two sessions held (one online, one offline): a third is refused, 5.0 and 3.1.1.
        let c = h.connect(connect(V5, "c", true));
        assert_eq!(connack(&mut h, c).reason, ConnectReason::QuotaExceeded);
        let d = h.connect(connect(V3, "d", true));
        assert_eq!(connack(&mut h, d).reason, ConnectReason::ServerUnavailable);
        assert_eq!(h.broker.stats().sessions_refused, 2);

        // The offline session resumes; the online one's client id takes its session over.
        let (_, present) = h.connect_ok(persistent);
        assert!(present, "the stored session is resumed");
        let (_, _) = h.connect_ok(connect(V5, "a", true));
        assert!(h.closed(a).is_some(), "taken over");

        // A session that ends makes room.
        let (e, _) = h.connect_ok(connect(V5, "a", true));
        h.send(
            e,
            &Packet::Disconnect(Box::new(Disconnect::new(
                DisconnectReason::NormalDisconnection,
            ))),
        );
        let (_, _) = h.connect_ok(connect(V5, "f", true));
    }

    #[test]
    fn each_user_holds_at_most_max_sessions_per_user() {
        let mut h = Harness::new(BrokerConfig {
            authenticate: true,
            max_sessions_per_user: 2,
            ..BrokerConfig::default()
        });
        for id in ["a1", "a2"] {
            let (_, ack) = admit(&mut h, with_user(connect(V3, id, false), "alice"));
            assert_eq!(ack.reason, ConnectReason::Success);
        }
        let (_, ack) = admit(&mut h, with_user(connect(V3, "a3", false), "alice"));
        assert_eq!(ack.reason, ConnectReason::ServerUnavailable, "3.1.1 code 3");
        let (_, ack) = admit(&mut h, with_user(connect(V5, "a4", true), "alice"));
        assert_eq!(ack.reason, ConnectReason::QuotaExceeded);
        // Another user, and anonymous clients, are not held to alice's count.
        let (_, ack) = admit(&mut h, with_user(connect(V3, "b1", false), "bob"));
        assert_eq!(ack.reason, ConnectReason::Success);
        let (_, ack) = admit(&mut h, connect(V5, "anon", true));
        assert_eq!(ack.reason, ConnectReason::Success);
        // alice reconnecting to one of her sessions is fine.
        let (_, ack) = admit(&mut h, with_user(connect(V3, "a1", false), "alice"));
        assert_eq!(ack.reason, ConnectReason::Success);
        assert!(ack.session_present);
    }
}

mod idle {
    use super::*;

    fn idle_after(secs: u64) -> Harness {
        Harness::new(BrokerConfig {
            max_idle: Some(Duration::from_secs(secs)),
            ..BrokerConfig::default()
        })
    }

    #[test]
    fn a_client_without_keep_alive_is_closed_after_max_idle_of_silence() {
        let mut h = idle_after(100);
        let (c, _) = h.connect_ok(connect(V5, "quiet", true));
        h.advance(Duration::from_secs(90));
        h.send(c, &Packet::PingReq);
        h.advance(Duration::from_secs(90));
        assert_eq!(h.closed(c), None, "activity restarts the idle time");
        h.advance(Duration::from_secs(20));
        assert_eq!(h.closed(c), Some(CloseReason::KeepAliveTimeout));
    }

    #[test]
    fn a_client_with_keep_alive_keeps_its_own_deadline_and_none_means_no_limit() {
        let mut h = idle_after(100);
        let mut c = connect(V3, "ka", true);
        c.keep_alive = 200;
        let (ka, _) = h.connect_ok(c);
        h.advance(Duration::from_secs(250));
        assert_eq!(h.closed(ka), None, "1.5 x 200 s not yet over");

        let mut h = Harness::new(BrokerConfig {
            max_idle: None,
            ..BrokerConfig::default()
        });
        let (c, _) = h.connect_ok(connect(V3, "forever", true));
        h.advance(Duration::from_secs(30 * 24 * 3600));
        assert_eq!(h.closed(c), None);
    }
}

mod first_packet {
    use super::*;

    #[test]
    fn a_first_byte_that_is_not_a_connect_closes_before_the_body_arrives() {
        let mut h = Harness::new(BrokerConfig::default());
        for first in [0x30u8, 0x82, 0xC0, 0x11, 0x00] {
            let conn = h.open(V5);
            // A PUBLISH (or other) fixed header announcing a 256 KiB body (under max_packet_size), body not sent.
            h.send_bytes(conn, &[first, 0x80, 0x80, 0x10]);
            assert!(h.closed(conn).is_some(), "first byte {first:#x}");
            assert!(h.packets(conn).is_empty(), "no CONNACK for {first:#x}");
        }
        // A CONNECT still works, byte by byte.
        let conn = h.open(V3);
        let mut buf = bytes::BytesMut::new();
        Packet::Connect(Box::new(connect(V3, "ok", true))).encode(V3, &mut buf);
        for b in buf.iter() {
            h.send_bytes(conn, &[*b]);
        }
        assert_eq!(connack(&mut h, conn).reason, ConnectReason::Success);
    }
}

mod client_id_from_username {
    use super::*;

    fn broker() -> Harness {
        Harness::new(BrokerConfig {
            authenticate: true,
            client_id_from_username: true,
            ..BrokerConfig::default()
        })
    }

    #[test]
    fn the_user_name_is_the_session_whatever_the_client_id() {
        let mut h = broker();
        let (first, ack) = admit(&mut h, with_user(connect(V3, "one", false), "alice"));
        assert_eq!(ack.reason, ConnectReason::Success);
        h.subscribe_ok(first, 1, "a/#", QoS::AtLeastOnce);
        // Another client id of the same user resumes (and takes over) the same session.
        let (second, ack) = admit(&mut h, with_user(connect(V3, "two", false), "alice"));
        assert_eq!(ack.reason, ConnectReason::Success);
        assert!(ack.session_present);
        assert!(h.closed(first).is_some(), "taken over");
        let sessions: Vec<ByteString> = h.broker.sessions().map(|s| s.key.client_id).collect();
        assert_eq!(sessions, ["alice"]);
        // Bob using alice's client id gets his own session.
        let (_, ack) = admit(&mut h, with_user(connect(V3, "alice", false), "bob"));
        assert_eq!(ack.reason, ConnectReason::Success);
        assert!(!ack.session_present);
        assert_eq!(h.closed(second), None, "alice is not taken over by bob");
    }

    #[test]
    fn an_empty_client_id_is_fine_and_a_v5_client_learns_its_identifier() {
        let mut h = broker();
        // 3.1.1 refuses an empty id with a persistent session, unless the user name gives one.
        let (_, ack) = admit(&mut h, with_user(connect(V3, "", false), "carol"));
        assert_eq!(ack.reason, ConnectReason::Success);
        let (_, ack) = admit(&mut h, with_user(connect(V5, "", true), "dave"));
        assert_eq!(ack.reason, ConnectReason::Success);
        assert_eq!(
            ack.properties.assigned_client_identifier.as_deref(),
            Some("dave")
        );
        // A client without a user name keeps its own id.
        let mut h = Harness::new(BrokerConfig {
            client_id_from_username: true,
            ..BrokerConfig::default()
        });
        let (_, _) = h.connect_ok(connect(V5, "own", true));
        let ids: Vec<ByteString> = h.broker.sessions().map(|s| s.key.client_id).collect();
        assert_eq!(ids, ["own"]);
    }
}

#[test]
fn bounded_publishes_still_flow_as_plain_publishes() {
    // Sanity: the default bounds let an ordinary message through.
    let mut h = Harness::new(BrokerConfig::default());
    let (s, _) = h.connect_ok(connect(V5, "s", true));
    h.subscribe_ok(s, 1, "t", QoS::AtMostOnce);
    let (p, _) = h.connect_ok(connect(V5, "p", true));
    h.send(p, &publish("t", "hi", PublishQos::AtMostOnce, false));
    assert_eq!(h.publishes(s).len(), 1);
}

mod property {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// One step of a client population against the bounds.
    #[derive(Debug, Clone)]
    enum Step {
        /// Client `id` of user `user` (none: anonymous) connects, persistent or clean, with a
        /// will carrying `will_properties` user properties.
        Connect {
            id: u8,
            user: Option<u8>,
            persistent: bool,
            will_properties: usize,
        },
        /// The `n`th open connection publishes a QoS 1 message with `properties` user
        /// properties.
        Publish { n: usize, properties: usize },
        /// The `n`th open connection closes.
        Close { n: usize },
        /// Time passes.
        Wait { secs: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (
                0u8..12,
                proptest::option::of(0u8..3),
                any::<bool>(),
                0usize..5
            )
                .prop_map(|(id, user, persistent, will_properties)| Step::Connect {
                    id,
                    user,
                    persistent,
                    will_properties,
                }),
            (0usize..8, 0usize..6).prop_map(|(n, properties)| Step::Publish { n, properties }),
            (0usize..8).prop_map(|n| Step::Close { n }),
            (1u64..200).prop_map(|secs| Step::Wait { secs }),
        ]
    }

    const MAX_SESSIONS: usize = 6;
    const PER_USER: usize = 2;
    const MAX_PROPERTIES: usize = 3;

    fn login(id: u8, user: Option<u8>, persistent: bool, will_properties: usize) -> Connect {
        let mut c = connect(V3, &format!("c{id}"), !persistent);
        if let Some(u) = user {
            c = with_user(c, &format!("u{u}"));
        }
        if will_properties > 0 {
            c.protocol = V5;
            c.clean_start = !persistent;
            c.properties.session_expiry_interval = persistent.then_some(3600);
            c.will = Some(LastWill {
                topic: "will".into(),
                payload: Bytes::from_static(b"w"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: WillProperties {
                    user_properties: properties(will_properties, 1),
                    ..WillProperties::default()
                },
            });
        }
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever clients do, the broker never holds more sessions than `max_sessions`,
        /// nor more per user than `max_sessions_per_user`, never routes a message with more
        /// user properties than allowed, and closes silent connections without keep-alive
        /// after `max_idle`.
        #[test]
        fn the_bounds_hold_for_any_client_population(steps in proptest::collection::vec(step(), 1..60)) {
            let mut h = Harness::new(BrokerConfig {
                authenticate: true,
                max_sessions: MAX_SESSIONS,
                max_sessions_per_user: PER_USER,
                max_user_properties: MAX_PROPERTIES,
                max_idle: Some(Duration::from_secs(300)),
                ..BrokerConfig::default()
            });
            let mut watching = connect(V5, "watcher", true);
            watching.keep_alive = u16::MAX;
            let (watcher, _) = admit(&mut h, watching);
            h.subscribe_ok(watcher, 1, "#", QoS::AtLeastOnce);
            let mut open: Vec<ConnId> = Vec::new();
            let mut next_pid = 1u16;
            for step in steps {
                match step {
                    Step::Connect { id, user, persistent, will_properties } => {
                        let (conn, ack) = admit(&mut h, login(id, user, persistent, will_properties));
                        if will_properties > MAX_PROPERTIES {
                            prop_assert_eq!(ack.reason, ConnectReason::QuotaExceeded);
                        }
                        if ack.reason == ConnectReason::Success {
                            open.push(conn);
                        }
                    }
                    Step::Publish { n, properties: count } => {
                        let Some(&conn) = open.get(n) else { continue };
                        next_pid = next_pid.checked_add(1).unwrap_or(1);
                        h.send(conn, &publish_with("t", PublishQos::AtLeastOnce(pid(next_pid)), properties(count, 1)));
                    }
                    Step::Close { n } => {
                        if n < open.len() {
                            let conn = open.remove(n);
                            h.input(Input::Closed { conn });
                        }
                    }
                    Step::Wait { secs } => h.advance(Duration::from_secs(secs)),
                }
                open.retain(|c| h.closed(*c).is_none());
                let sessions: Vec<_> = h.broker.sessions().collect();
                prop_assert!(sessions.len() <= MAX_SESSIONS, "{} sessions", sessions.len());
                let mut per_user: BTreeMap<ByteString, usize> = BTreeMap::new();
                for s in &sessions {
                    if let Some(owner) = &s.owner {
                        *per_user.entry(owner.clone()).or_default() += 1;
                    }
                }
                prop_assert!(per_user.values().all(|n| *n <= PER_USER), "{:?}", per_user);
                for p in h.packets(watcher) {
                    if let Packet::Publish(p) = p {
                        let count = p.properties.map_or(0, |props| props.user_properties.len());
                        prop_assert!(count <= MAX_PROPERTIES, "a message with {} properties was routed", count);
                    }
                }
            }
        }
    }
}
