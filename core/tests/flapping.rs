//! Flapping protection: a client identifier taken over `takeover_limit` times within
//! `takeover_window` (two clients sharing it) gets its further CONNECTs held a second and
//! refused with 0x9F Connection rate exceeded (3.1.1: return code 3) until the window ends,
//! while the connection that is in keeps its session.

mod harness;

use std::time::Duration;

use harness::{connect, Harness};
use jetmq_core::broker::{BrokerConfig, CloseReason, Notice};
use jetmq_core::codec::{ConnectReason, Packet, ProtocolVersion};

fn broker(limit: u32) -> Harness {
    Harness::new(BrokerConfig {
        takeover_limit: limit,
        takeover_window: Duration::from_secs(10),
        ..BrokerConfig::default()
    })
}

fn connack(h: &mut Harness, conn: jetmq_core::broker::ConnId) -> Option<ConnectReason> {
    h.packets(conn).into_iter().find_map(|p| match p {
        Packet::ConnAck(a) => Some(a.reason),
        _ => None,
    })
}

#[test]
fn a_client_id_taken_over_too_often_is_held_and_refused_until_the_window_ends() {
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let mut h = broker(3);
        let mut conns = Vec::new();
        for _ in 0..4 {
            let (conn, _) = h.connect_ok(connect(version, "twin", true));
            conns.push(conn);
            h.advance(Duration::from_millis(100));
        }
        for old in &conns[..3] {
            assert_eq!(h.closed(*old), Some(CloseReason::SessionTakenOver));
        }
        let reported: Vec<_> = h
            .notices
            .iter()
            .filter(|n| matches!(n, Notice::TakeoverLimit { client_id } if client_id == "twin"))
            .collect();
        assert_eq!(
            reported.len(),
            1,
            "the third takeover reaches the limit, once"
        );

        // The next CONNECT is held, then refused; the connection that is in stays.
        let held = h.connect(connect(version, "twin", true));
        assert_eq!(connack(&mut h, held), None, "held, not answered at once");
        h.advance(Duration::from_millis(900));
        assert_eq!(h.closed(held), None);
        h.advance(Duration::from_millis(200));
        let refused = connack(&mut h, held);
        let expected = if version.is_v5() {
            ConnectReason::ConnectionRateExceeded
        } else {
            ConnectReason::ServerUnavailable // return code 3
        };
        assert_eq!(refused, Some(expected), "{version:?}");
        assert_eq!(
            h.closed(held),
            Some(CloseReason::ConnectRefused(
                ConnectReason::ConnectionRateExceeded
            ))
        );
        assert_eq!(
            h.closed(conns[3]),
            None,
            "the last one in keeps its session"
        );
        // Other identifiers are not affected.
        h.connect_ok(connect(version, "other", true));

        // Once the window has ended, a CONNECT takes over again.
        h.advance(Duration::from_secs(10));
        let (again, _) = h.connect_ok(connect(version, "twin", true));
        assert_eq!(h.closed(conns[3]), Some(CloseReason::SessionTakenOver));
        assert_eq!(h.closed(again), None);
    }
}

#[test]
fn without_a_limit_takeovers_never_stop() {
    let mut h = broker(0);
    let mut last = None;
    for _ in 0..30 {
        let (conn, _) = h.connect_ok(connect(ProtocolVersion::V5, "twin", true));
        if let Some(old) = last {
            assert_eq!(h.closed(old), Some(CloseReason::SessionTakenOver));
        }
        last = Some(conn);
    }
    assert!(!h
        .notices
        .iter()
        .any(|n| matches!(n, Notice::TakeoverLimit { .. })));
}
