//! Saves of a persistent session's subscriptions: one in flight at a time, changes made
//! meanwhile folded into one next save, and every SUBACK/UNSUBACK only after a save that
//! includes its change completed (hostile-client hardening: pipelined SUBSCRIBEs must not
//! cost one ever larger record per packet).

mod harness;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::BytesMut;
use harness::{connect, pid, publish, subscribe, Harness};
use jetmq_core::broker::{BrokerConfig, CloseReason, ConnId, Input};
use jetmq_core::codec::{
    Ack, DisconnectReason, Packet, ProtocolVersion, PublishQos, QoS, SubAckReason,
};
use jetmq_core::js::records::SessionRecord;
use jetmq_core::js::{StoreError, StoreRequest, Stream};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn h() -> Harness {
    Harness::new(BrokerConfig::default())
}

/// The filters a session record write holds, if `request` is one.
fn record_filters(request: &StoreRequest) -> Option<BTreeSet<String>> {
    match request {
        StoreRequest::Publish {
            stream: Stream::Sessions,
            payload,
            ..
        } => {
            let record = SessionRecord::from_json(payload).expect("a session record");
            Some(record.jetmq.subs.keys().cloned().collect())
        }
        _ => None,
    }
}

/// How many session record writes are held.
fn held_record_writes(h: &Harness) -> usize {
    h.held
        .iter()
        .filter(|(_, r, _)| record_filters(r).is_some())
        .count()
}

/// The packet ids of the SUBACKs `conn` received since the last call.
fn subacks(h: &mut Harness, conn: ConnId) -> Vec<u16> {
    h.packets(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::SubAck(a) => Some(a.packet_id.get()),
            _ => None,
        })
        .collect()
}

/// What the store answered so far, and the SUBACKs a client got.
#[derive(Default)]
struct Tally {
    /// Filters in the answered record writes.
    in_record: BTreeSet<String>,
    /// The last two levels of the filter subjects of the answered consumer updates.
    in_consumer: BTreeSet<String>,
    record_writes: usize,
    batches: usize,
    next_ack: u16,
}

impl Tally {
    /// Every SUBACK `conn` got since the last call comes in order, after a record write and a
    /// consumer update holding its filter (`f/{id}`) were answered.
    fn check_acks(&mut self, h: &mut Harness, conn: ConnId) {
        for id in subacks(h, conn) {
            assert_eq!(id, self.next_ack + 1, "SUBACKs in order");
            self.next_ack = id;
            let filter = format!("f/{id}");
            assert!(
                self.in_record.contains(&filter),
                "SUBACK {id} before a record with {filter} was written"
            );
            assert!(
                self.in_consumer.contains(&format!("f.{id}")),
                "SUBACK {id} before the consumer took {filter}"
            );
        }
    }

    /// Answers every reply held now, one by one, as one batch.
    fn answer_batch(&mut self, h: &mut Harness, conn: ConnId) {
        self.batches += 1;
        let batch: Vec<_> = h.held.drain(..).collect();
        for (id, request, reply) in batch {
            if let Some(filters) = record_filters(&request) {
                self.record_writes += 1;
                self.in_record.extend(filters);
            }
            if let StoreRequest::UpsertConsumer { filters, .. } = &request {
                // A subject ends in its filter's levels: `f/7` is `….f.7`.
                self.in_consumer.extend(filters.iter().map(|f| {
                    let levels: Vec<&str> = f.rsplitn(3, '.').collect();
                    format!("{}.{}", levels[1], levels[0])
                }));
            }
            h.input(Input::Stored { id, reply });
            self.check_acks(h, conn);
        }
    }
}

/// 1 000 SUBSCRIBEs sent without waiting, while the store answers in batches, cost a handful
/// of record writes instead of 1 000; every SUBACK comes, in order, only after a record write
/// and a consumer update holding its filter were answered; the last record holds them all.
#[test]
fn pipelined_subscribes_cost_a_bounded_number_of_record_writes() {
    const N: u16 = 1000;
    let mut h = h();
    let (s, _) = h.connect_ok(connect(V3, "s", false));
    h.auto_store = false;
    let mut tally = Tally::default();
    for i in 1..=N {
        let mut bytes = BytesMut::new();
        subscribe(i, &format!("f/{i}"), QoS::AtLeastOnce).encode(V3, &mut bytes);
        h.send_bytes(s, &bytes);
        tally.check_acks(&mut h, s);
        if i % 37 == 0 {
            tally.answer_batch(&mut h, s);
        }
    }
    while !h.held.is_empty() {
        tally.answer_batch(&mut h, s);
    }
    assert_eq!(tally.next_ack, N, "every SUBACK came");
    let (writes, batches) = (tally.record_writes, tally.batches);
    assert!(
        writes <= batches + 1 && writes < 60,
        "{writes} record writes for {N} SUBSCRIBEs in {batches} batches"
    );
    let stored: Vec<_> = h
        .store
        .records()
        .into_iter()
        .filter(|r| r.stream == Stream::Sessions)
        .collect();
    assert_eq!(stored.len(), 1);
    let record = SessionRecord::from_json(&stored[0].payload).expect("a session record");
    assert_eq!(
        record.jetmq.subs.len(),
        usize::from(N),
        "the last record holds every filter"
    );
    let h2 = h.restarted();
    let info: Vec<_> = h2.broker.sessions().collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].subscriptions.len(), usize::from(N));
}

/// A SUBACK waits for both writes of its save (record and consumer); a SUBSCRIBE made while
/// that save is in flight waits for the next save, not this one.
#[test]
fn a_suback_waits_for_the_save_that_includes_its_change() {
    let mut h = h();
    let (s, _) = h.connect_ok(connect(V3, "s", false));
    h.auto_store = false;
    h.send(s, &subscribe(1, "a", QoS::AtLeastOnce));
    assert!(subacks(&mut h, s).is_empty(), "no SUBACK before its save");
    assert_eq!(h.held.len(), 2, "record and consumer: {:?}", h.held);
    h.send(s, &subscribe(2, "b", QoS::AtLeastOnce));
    assert_eq!(
        h.held.len(),
        2,
        "the second change waits for the first save"
    );
    h.complete_held(0, None);
    assert!(
        subacks(&mut h, s).is_empty(),
        "the consumer is not updated yet"
    );
    h.complete_held(0, None);
    assert_eq!(subacks(&mut h, s), [1]);
    assert_eq!(
        held_record_writes(&h),
        1,
        "the next save went out: {:?}",
        h.held
    );
    let filters = h.held.iter().find_map(|(_, r, _)| record_filters(r));
    assert_eq!(
        filters,
        Some(["a", "b"].into_iter().map(String::from).collect())
    );
    h.complete_held(0, None);
    assert!(subacks(&mut h, s).is_empty());
    h.complete_held(0, None);
    assert_eq!(subacks(&mut h, s), [2]);
    assert!(h.held.is_empty());
    // An UNSUBSCRIBE waits the same way.
    h.send(
        s,
        &Packet::Unsubscribe(jetmq_core::codec::Unsubscribe {
            packet_id: pid(3),
            properties: Default::default(),
            filters: vec!["a".into()],
        }),
    );
    assert!(h.packets(s).is_empty(), "no UNSUBACK before its save");
    h.complete_all_held();
    assert!(matches!(&h.packets(s)[..], [Packet::UnsubAck(a)] if a.packet_id == pid(3)));
    // A SUBSCRIBE that changes nothing is answered at once.
    h.send(s, &subscribe(4, "b", QoS::AtLeastOnce));
    assert_eq!(subacks(&mut h, s), [4]);
    assert!(h.held.is_empty());
}

/// A failed or timed-out save fails what waits for it as a failed write does (5.0 DISCONNECT
/// 0x83, the connection closed): no SUBACK. Changes waiting for the next save are still saved.
#[test]
fn a_failed_save_fails_its_acknowledgements_like_a_failed_write() {
    let mut h = h();
    let mut c = connect(V5, "s", false);
    c.properties.session_expiry_interval = Some(600);
    let (s, _) = h.connect_ok(c.clone());
    h.auto_store = false;
    h.send(s, &subscribe(1, "a", QoS::AtLeastOnce));
    h.send(s, &subscribe(2, "b", QoS::AtLeastOnce));
    h.complete_held(0, Some(StoreError::Unavailable("disk full".into())));
    assert!(
        h.packets(s).is_empty(),
        "the other write is not answered yet"
    );
    h.complete_held(0, None);
    let packets = h.packets(s);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason == DisconnectReason::ImplementationSpecificError),
        "{packets:?}"
    );
    assert_eq!(h.closed(s), Some(CloseReason::StoreFailure));
    // The session lives on offline; the change that waited is saved with the next save.
    h.complete_all_held();
    let record = h
        .store
        .records()
        .into_iter()
        .find(|r| r.stream == Stream::Sessions)
        .and_then(|r| SessionRecord::from_json(&r.payload))
        .expect("a session record");
    assert!(record.jetmq.subs.contains_key("b"), "{record:?}");

    // A store that never answers times out: the same failure.
    let (s2, present) = h.connect_ok(c);
    assert!(present);
    h.complete_all_held();
    h.send(s2, &subscribe(3, "c", QoS::AtLeastOnce));
    h.advance(Duration::from_secs(11));
    let packets = h.packets(s2);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason == DisconnectReason::ImplementationSpecificError),
        "{packets:?}"
    );
    assert_eq!(h.closed(s2), Some(CloseReason::StoreFailure));
    // Late replies of the timed-out writes are ignored.
    h.complete_all_held();
}

/// A connection that closes while a save is in flight leaves nothing hanging: its
/// acknowledgements go with it, and the change that waited for the next save is still saved,
/// consumer included (a message stored later comes back after a restart).
#[test]
fn a_connection_closed_during_a_save_leaves_the_next_save_to_finish() {
    let mut h = h();
    let (s, _) = h.connect_ok(connect(V3, "s", false));
    h.auto_store = false;
    h.send(s, &subscribe(1, "a", QoS::AtLeastOnce));
    h.send(s, &subscribe(2, "b", QoS::AtLeastOnce));
    h.input(Input::Closed { conn: s });
    h.complete_all_held();
    assert!(h.held.is_empty());
    h.auto_store = true;
    let (p, _) = h.connect_ok(connect(V3, "p", true));
    h.send(
        p,
        &publish("b", "kept", PublishQos::AtLeastOnce(pid(1)), false),
    );
    assert_eq!(h.packets(p), [Packet::PubAck(Ack::new(pid(1)))]);
    let mut h2 = h.restarted();
    let (s2, present) = h2.connect_ok(connect(V3, "s", false));
    assert!(present);
    let got: Vec<String> = h2.publishes(s2).into_iter().map(|m| m.1).collect();
    assert_eq!(got, ["kept"]);
}

/// A session taken over while its save is in flight: resumed, the new connection's changes
/// wait for the next save; replaced by a new session (in the same slot), the old save's
/// answers do not touch the new session's saves.
#[test]
fn a_takeover_during_a_save_keeps_each_session_to_its_own_saves() {
    // Resumed: the old connection's SUBACK is gone with it; the new one's follows the next save.
    let mut h = h();
    let (old, _) = h.connect_ok(connect(V3, "s", false));
    h.auto_store = false;
    h.send(old, &subscribe(1, "a", QoS::AtLeastOnce));
    let (new, present) = h.connect_ok(connect(V3, "s", false));
    assert!(present);
    assert_eq!(h.closed(old), Some(CloseReason::SessionTakenOver));
    h.send(new, &subscribe(2, "b", QoS::AtLeastOnce));
    assert!(subacks(&mut h, new).is_empty());
    h.complete_all_held();
    assert_eq!(subacks(&mut h, new), [2]);
    assert!(subacks(&mut h, old).is_empty());

    // Replaced: Clean Start discards the session; the new one gets the same slot.
    let mut h = self::h();
    let mut c = connect(V5, "s", false);
    c.properties.session_expiry_interval = Some(600);
    let (old, _) = h.connect_ok(c.clone());
    h.auto_store = false;
    h.send(old, &subscribe(1, "a", QoS::AtLeastOnce));
    assert_eq!(h.held.len(), 2, "{:?}", h.held);
    c.clean_start = true;
    let (new, present) = h.connect_ok(c);
    assert!(!present);
    assert_eq!(h.closed(old), Some(CloseReason::SessionTakenOver));
    h.send(new, &subscribe(2, "b", QoS::AtLeastOnce));
    let last = h.held.len();
    assert!(
        matches!(
            h.held.back(),
            Some((_, StoreRequest::UpsertConsumer { .. }, _))
        ),
        "the new session's save is not held back by the old one's: {:?}",
        h.held
    );
    // The old session's save is answered (a failure, so a mix-up would show).
    h.complete_held(0, Some(StoreError::Timeout));
    h.complete_held(0, Some(StoreError::Timeout));
    assert!(h.packets(new).is_empty());
    assert_eq!(h.held.len(), last - 2);
    h.complete_all_held();
    assert!(matches!(
        &h.packets(new)[..],
        [Packet::SubAck(a)] if a.packet_id == pid(2) && a.reasons == [SubAckReason::GrantedQos1]
    ));
    assert_eq!(h.closed(new), None);
}
