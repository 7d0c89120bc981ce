//! Session lifetimes (issue 21): a session lives exactly as long as its Session Expiry
//! Interval says, counted from when its latest connection ended, whatever sessions of the
//! same client identifier (or others in the broker's memory) came and went before it.

mod harness;

use std::time::Duration;

use harness::{connect, Harness};
use jetmq_core::broker::{BrokerConfig, ConnId, Input};
use jetmq_core::codec::{
    Connect, Disconnect, DisconnectReason, Packet, ProtocolVersion, PublishQos, QoS,
};

/// A v5 CONNECT for `client_id` with a Session Expiry Interval.
fn connect_v5(client_id: &str, clean_start: bool, expiry: u32) -> Connect {
    let mut c = connect(ProtocolVersion::V5, client_id, clean_start);
    c.properties.session_expiry_interval = Some(expiry);
    c
}

fn leave(h: &mut Harness, conn: ConnId) {
    h.send(
        conn,
        &Packet::Disconnect(Box::new(Disconnect::new(
            DisconnectReason::NormalDisconnection,
        ))),
    );
}

/// Connect with expiry 5 s and leave at T0; at T0+4 s connect with Clean Start and expiry
/// 5 s and leave; at T0+6 s resume: the second session lives until T0+9 s, so it is present
/// (the first session's expiry timer, due at T0+5 s, must not end it).
#[test]
fn the_expiry_of_a_session_a_clean_start_ended_spares_the_new_session() {
    let mut h = Harness::new(BrokerConfig::default());
    let (conn, present) = h.connect_ok(connect_v5("c", false, 5));
    assert!(!present);
    leave(&mut h, conn);

    h.advance(Duration::from_secs(4));
    let (conn, present) = h.connect_ok(connect_v5("c", true, 5));
    assert!(!present, "a clean start has no session to resume");
    h.subscribe_ok(conn, 1, "t", QoS::AtLeastOnce);
    leave(&mut h, conn);

    h.advance(Duration::from_secs(2));
    let (conn, present) = h.connect_ok(connect_v5("c", false, 5));
    assert!(
        present,
        "the session of the clean start, left 2 s ago with expiry 5 s, must be resumed"
    );
    // And it is that session: its subscription is there.
    let (publisher, _) = h.connect_ok(connect(ProtocolVersion::V5, "p", true));
    h.send(
        publisher,
        &harness::publish("t", "hello", PublishQos::AtMostOnce, false),
    );
    let got = h.publishes(conn);
    assert_eq!(got.len(), 1, "the resumed session's subscription: {got:?}");
}

/// The same with the sessions of two client identifiers: the first one's expiry timer must
/// not end the second one, whose session took the first one's place in memory.
#[test]
fn the_expiry_of_an_ended_session_spares_another_clients_session() {
    let mut h = Harness::new(BrokerConfig::default());
    let (a, _) = h.connect_ok(connect_v5("a", false, 5));
    leave(&mut h, a);
    h.advance(Duration::from_secs(1));
    // "a" comes back with a clean start and no expiry: its session ends with the connection,
    // and its memory is free for the next session.
    let (a, present) = h.connect_ok(connect(ProtocolVersion::V5, "a", true));
    assert!(!present);
    leave(&mut h, a);

    h.advance(Duration::from_secs(1));
    let (b, _) = h.connect_ok(connect_v5("b", false, 60));
    leave(&mut h, b);

    h.advance(Duration::from_secs(5));
    let (_, present) = h.connect_ok(connect_v5("b", false, 60));
    assert!(
        present,
        "b's session, left 5 s ago with expiry 60 s, must be resumed"
    );
}

/// The second session still expires on time: left at T0+4 s with expiry 5 s, it is gone at
/// T0+9 s.
#[test]
fn the_new_session_expires_on_its_own_time() {
    let mut h = Harness::new(BrokerConfig::default());
    let (conn, _) = h.connect_ok(connect_v5("c", false, 5));
    leave(&mut h, conn);
    h.advance(Duration::from_secs(4));
    let (conn, _) = h.connect_ok(connect_v5("c", true, 5));
    leave(&mut h, conn);
    h.advance(Duration::from_millis(4999));
    let (conn, present) = h.connect_ok(connect_v5("c", false, 5));
    assert!(present, "1 ms before its expiry the session is there");
    leave(&mut h, conn);
    h.advance(Duration::from_millis(5001));
    let (_, present) = h.connect_ok(connect_v5("c", false, 5));
    assert!(!present, "1 ms after its expiry the session is gone");
}

/// The broker process dies and starts again on the same store, as the simulation's restart.
fn restart(h: &mut Harness, config: &BrokerConfig) {
    let records = h.store.records();
    h.new_broker(config.clone(), 8);
    for record in records {
        h.input(Input::Restored(record));
    }
    h.input(Input::RestoreComplete);
}

/// A DISCONNECT with Session Expiry Interval 0 ends a persistent session for good: its stored
/// record goes with it, so a restart does not bring it back (found by the simulation's
/// session model).
#[test]
fn a_session_a_disconnect_ended_stays_ended_after_a_restart() {
    let config = BrokerConfig::default();
    let mut h = Harness::new(config.clone());
    let (conn, _) = h.connect_ok(connect_v5("c", false, 60));
    let mut d = Disconnect::new(DisconnectReason::NormalDisconnection);
    d.properties.session_expiry_interval = Some(0);
    h.send(conn, &Packet::Disconnect(Box::new(d)));

    restart(&mut h, &config);
    let (_, present) = h.connect_ok(connect_v5("c", false, 60));
    assert!(
        !present,
        "a restart brought back a session its DISCONNECT ended"
    );
}

/// A session that was connected when the broker died is offline from the restart on; a
/// second restart does not start its expiry again (found by the simulation's session model).
#[test]
fn a_second_restart_does_not_extend_a_sessions_expiry() {
    let config = BrokerConfig::default();
    let mut h = Harness::new(config.clone());
    h.connect_ok(connect_v5("c", false, 5));
    restart(&mut h, &config);
    h.advance(Duration::from_secs(4));
    restart(&mut h, &config);
    h.advance(Duration::from_secs(2));
    let (_, present) = h.connect_ok(connect_v5("c", false, 5));
    assert!(
        !present,
        "offline since the first restart 6 s ago with expiry 5 s, the session has expired"
    );
}
