//! Two broker cores of a fleet sharing one store (the same [`MemoryStore`], handed to
//! whichever node acts) and the NATS subjects (each node's `NatsPublish` delivered to the
//! other as `NatsMessage`): sessions resume on the other node with their queued messages,
//! a connect on one node closes the client's connection on the other, retained messages and
//! stored QoS 1 messages cross over live and are acknowledged for the sessions they reach.
//! A property test runs random connects, closes and lost or delayed notices through both
//! nodes: once NATS has settled, each client has exactly its latest connection left, and the
//! stored session record is its latest connect's.

mod harness;

use harness::{connect, publish, Harness};
use jetmq_core::broker::{Action, BrokerConfig, CloseReason, ConnId, Input};
use jetmq_core::codec::{Packet, ProtocolVersion, PublishQos, QoS};
use jetmq_core::js::records::{self, SessionRecord};
use jetmq_core::js::subjects::subject_matches;
use jetmq_core::js::{StoreReply, StoreRequest, Stream};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const V3: ProtocolVersion = ProtocolVersion::V311;

/// Nodes `a` and `b`; the store sits with the node that acts.
struct Fleet {
    a: Harness,
    b: Harness,
    /// Which node holds the store.
    store_at: Node,
    /// The NATS queue subscriptions of each node: (node, queue group, subject).
    queue_subs: BTreeSet<(Node, String, String)>,
    /// How many queue deliveries were made: the member node chosen next is this count modulo
    /// the number of member nodes (NATS picks at random; the tests pick in turn).
    queue_turn: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Node {
    A,
    B,
}

impl Fleet {
    fn new() -> Self {
        Self::with_seeds((1, 2))
    }

    /// Nodes whose brokers are seeded with `a` and `b` (which decides their node numbers).
    fn with_seeds((a, b): (u64, u64)) -> Self {
        let config = BrokerConfig {
            cluster: jetmq_core::broker::Cluster::Fleet,
            // Random runs take one client over many times; flapping protection has its own
            // tests (core/tests/flapping.rs).
            takeover_limit: 0,
            ..BrokerConfig::default()
        };
        Self {
            a: Harness::with_seed(config.clone(), a),
            b: Harness::with_seed(config, b),
            store_at: Node::A,
            queue_subs: BTreeSet::new(),
            queue_turn: 0,
        }
    }

    /// Takes the queue subscription changes both nodes asked for.
    fn take_queue_changes(&mut self) {
        for (node, nats) in [(Node::A, &mut self.a.nats), (Node::B, &mut self.b.nats)] {
            nats.retain(|action| match action {
                Action::NatsQueueSubscribe { subject, queue } => {
                    self.queue_subs
                        .insert((node, queue.to_string(), subject.to_string()));
                    false
                }
                Action::NatsQueueUnsubscribe { subject, queue } => {
                    self.queue_subs
                        .remove(&(node, queue.to_string(), subject.to_string()));
                    false
                }
                _ => true,
            });
        }
    }

    /// For each queue group with a subscription matching `subject`, the node NATS hands the
    /// message to (in turn among the member nodes), with the group's name.
    fn queue_deliveries(&mut self, subject: &str) -> Vec<(Node, String)> {
        let mut groups: BTreeMap<String, Vec<Node>> = BTreeMap::new();
        for (node, queue, filter) in &self.queue_subs {
            if subject_matches(filter, subject) {
                let nodes = groups.entry(queue.clone()).or_default();
                if !nodes.contains(node) {
                    nodes.push(*node);
                }
            }
        }
        groups
            .into_iter()
            .map(|(queue, nodes)| {
                self.queue_turn += 1;
                (nodes[self.queue_turn % nodes.len()], queue)
            })
            .collect()
    }

    /// Node `n`, holding the shared store.
    fn on(&mut self, n: Node) -> &mut Harness {
        if self.store_at != n {
            std::mem::swap(&mut self.a.store, &mut self.b.store);
            self.store_at = n;
        }
        match n {
            Node::A => &mut self.a,
            Node::B => &mut self.b,
        }
    }

    /// Lets `d` pass on both nodes.
    fn advance(&mut self, d: std::time::Duration) {
        self.a.advance(d);
        self.b.advance(d);
    }

    /// Delivers what `from` published on NATS to the other node, and to one node of each
    /// queue group whose subscriptions match (either node, `from` too); returns the subjects.
    /// The store stays where it is.
    fn carry(&mut self, from: Node) -> Vec<String> {
        self.take_queue_changes();
        let published = match from {
            Node::A => std::mem::take(&mut self.a.nats),
            Node::B => std::mem::take(&mut self.b.nats),
        };
        let mut subjects = Vec::new();
        for action in published {
            if let Action::NatsPublish {
                subject,
                headers,
                payload,
            } = action
            {
                subjects.push(subject.to_string());
                let headers: Vec<_> = headers
                    .into_iter()
                    .map(|h| (h.name.into(), h.value))
                    .collect();
                for (node, queue) in self.queue_deliveries(&subject) {
                    self.node(node).input(Input::NatsQueueMessage {
                        queue: queue.into(),
                        subject: subject.clone(),
                        headers: headers.clone(),
                        payload: payload.clone(),
                    });
                }
                let to = match from {
                    Node::A => Node::B,
                    Node::B => Node::A,
                };
                self.node(to).input(Input::NatsMessage {
                    subject,
                    headers,
                    payload,
                });
            }
        }
        subjects
    }

    /// Node `n`, leaving the store where it is.
    fn node(&mut self, n: Node) -> &mut Harness {
        match n {
            Node::A => &mut self.a,
            Node::B => &mut self.b,
        }
    }
}

#[test]
fn a_persistent_session_resumes_on_the_other_node_with_its_queued_messages() {
    let mut f = Fleet::new();
    let (s, present) = f.on(Node::A).connect_ok(connect(V3, "s", false));
    assert!(!present);
    f.a.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    f.a.input(Input::Closed { conn: s });
    let (p, _) = f.a.connect_ok(connect(V3, "p", true));
    f.a.send(
        p,
        &publish(
            "t/x",
            "queued",
            PublishQos::AtLeastOnce(harness::pid(1)),
            false,
        ),
    );
    assert!(matches!(f.a.next_packet(p), Some(Packet::PubAck(_))));

    // The client comes back through node b, which never saw it.
    let (s2, present) = f.on(Node::B).connect_ok(connect(V3, "s", false));
    assert!(present, "the session was read from the store");
    let got = f.b.publishes(s2);
    assert_eq!(got.len(), 1, "{got:?}");
    let (topic, payload, qos, _, dup) = got[0].clone();
    assert_eq!(
        (topic.as_str(), payload.as_str(), qos),
        ("t/x", "queued", QoS::AtLeastOnce)
    );
    assert!(dup, "it may have been sent before");
    // Acknowledged: the store lets it go.
    f.b.send(
        s2,
        &Packet::PubAck(jetmq_core::codec::PubAck::new(harness::pid(1))),
    );
    assert!(f.b.store.log.is_empty(), "released: {:?}", f.b.store.log);
    // Node a hears of the connect and forgets the session (the store is node b's now).
    let subjects = f.carry(Node::B);
    assert!(
        subjects.iter().any(|s| s.starts_with("$JETMQ.conn.")),
        "{subjects:?}"
    );
    assert!(f.a.broker.sessions().all(|i| i.key.client_id != "s"));
    assert!(online(&f.b, "s"));
}

/// A message stored for a session that was just loaded on node b, whose live copy b missed
/// (its NATS subscription had not reached the server yet), is read from the consumer a
/// little later; messages the session holds or already released are not delivered again.
#[test]
fn a_live_copy_missed_right_after_a_resume_is_caught_up_from_the_consumer() {
    let mut f = Fleet::new();
    let (s, _) = f.on(Node::A).connect_ok(connect(V3, "s", false));
    f.a.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    f.a.input(Input::Closed { conn: s });
    let (s2, present) = f.on(Node::B).connect_ok(connect(V3, "s", false));
    assert!(present);
    f.carry(Node::B);
    f.b.nats.clear();

    // Through a: one message whose live copy b misses, then one it gets live.
    let (p, _) = f.on(Node::A).connect_ok(connect(V3, "p", true));
    let q1 = |n| PublishQos::AtLeastOnce(harness::pid(n));
    f.a.send(p, &publish("t/missed", "1", q1(1), false));
    f.a.nats.clear();
    f.a.send(p, &publish("t/live", "2", q1(2), false));
    f.carry(Node::A);
    f.on(Node::B);
    let got = f.b.publishes(s2);
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["t/live"],
        "only the live copy so far"
    );

    // The catch-up read finds the missed one; the live one, in flight, is not sent again.
    f.advance(std::time::Duration::from_secs(1));
    let got = f.b.packets(s2);
    let topics: Vec<_> = got
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(m) => Some(m.topic.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(topics, ["t/missed"], "{got:?}");

    // Both acknowledged: the second catch-up read finds nothing, and the store is empty.
    for m in f.b.broker.sessions().filter(|i| i.key.client_id == "s") {
        assert_eq!(m.inflight, 2, "{m:?}");
    }
    for pid in [1, 2] {
        f.b.send(
            s2,
            &Packet::PubAck(jetmq_core::codec::PubAck::new(harness::pid(pid))),
        );
    }
    f.advance(std::time::Duration::from_secs(4));
    assert!(f.b.publishes(s2).is_empty(), "nothing twice");
    assert!(f.b.store.log.is_empty(), "released: {:?}", f.b.store.log);
}

/// The same after a subscription change: a message stored for the new filter whose live copy
/// b missed comes from the consumer a little later.
#[test]
fn a_live_copy_missed_after_a_new_subscription_is_caught_up_from_the_consumer() {
    let mut f = Fleet::new();
    let (s, _) = f.on(Node::B).connect_ok(connect(V3, "s", false));
    f.b.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    f.advance(std::time::Duration::from_secs(5));
    f.b.subscribe_ok(s, 2, "u/#", QoS::AtLeastOnce);
    f.carry(Node::B);
    let (p, _) = f.on(Node::A).connect_ok(connect(V3, "p", true));
    f.a.send(
        p,
        &publish(
            "u/1",
            "new",
            PublishQos::AtLeastOnce(harness::pid(1)),
            false,
        ),
    );
    f.a.nats.clear();
    f.on(Node::B);
    assert!(f.b.publishes(s).is_empty());
    f.advance(std::time::Duration::from_secs(1));
    let got = f.b.publishes(s);
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["u/1"],
        "{got:?}"
    );
}

/// A session that went offline right after its load is not read again: a read hands the
/// consumer's messages to the reading node until they are acknowledged, so a client resuming
/// on another node would wait for them. Its next load (here, on node a) has them at once.
#[test]
fn an_offline_session_is_not_caught_up() {
    let mut f = Fleet::new();
    let (s, _) = f.on(Node::A).connect_ok(connect(V3, "s", false));
    f.a.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    f.a.input(Input::Closed { conn: s });
    let (s2, present) = f.on(Node::B).connect_ok(connect(V3, "s", false));
    assert!(present);
    f.b.input(Input::Closed { conn: s2 });
    f.carry(Node::B);
    let (p, _) = f.on(Node::A).connect_ok(connect(V3, "p", true));
    f.a.send(
        p,
        &publish(
            "t/1",
            "stored",
            PublishQos::AtLeastOnce(harness::pid(1)),
            false,
        ),
    );
    f.a.nats.clear();

    // Both catch-up timers pass on b with the client away: no read of its consumer.
    f.on(Node::B).auto_store = false;
    f.advance(std::time::Duration::from_secs(5));
    let reads: Vec<_> = f
        .b
        .held
        .iter()
        .filter(|(_, request, _)| matches!(request, jetmq_core::js::StoreRequest::Pending { .. }))
        .collect();
    assert!(reads.is_empty(), "{reads:?}");
    f.b.complete_all_held();

    let (s3, present) = f.on(Node::A).connect_ok(connect(V3, "s", false));
    assert!(present);
    let got = f.a.publishes(s3);
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["t/1"],
        "{got:?}"
    );
}

/// The consumers node `h` gave back its reads of (`Release`) since its store requests were
/// held; the held requests are then completed and the store answers at once again.
fn releases(h: &mut Harness) -> Vec<String> {
    let released = h
        .held
        .iter()
        .filter_map(|(_, request, _)| match request {
            jetmq_core::js::StoreRequest::Release { consumer } => Some(consumer.to_string()),
            _ => None,
        })
        .collect();
    h.complete_all_held();
    h.auto_store = true;
    released
}

/// What a node's consumer reads handed it for a session (JetStream keeps it from other readers
/// until acknowledged, or for the ack wait) is given back whenever the session may go on
/// elsewhere: its client leaves, another node takes it over, the node shuts down. Not when
/// the session goes on here, nor for a clean session.
#[test]
fn a_node_gives_back_its_consumer_reads_when_the_session_may_move() {
    let mut f = Fleet::new();
    let (s, _) = f.on(Node::A).connect_ok(connect(V3, "s", false));
    f.a.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    f.a.auto_store = false;
    f.a.input(Input::Closed { conn: s });
    let consumer = releases(&mut f.a);
    assert_eq!(consumer.len(), 1, "the client left: {consumer:?}");

    // A takeover on the same node keeps the session here.
    let (s2, present) = f.a.connect_ok(connect(V3, "s", false));
    assert!(present);
    f.a.auto_store = false;
    let (_s3, present) = f.a.connect_ok(connect(V3, "s", false));
    assert!(present);
    assert_eq!(f.a.closed(s2), Some(CloseReason::SessionTakenOver));
    assert_eq!(releases(&mut f.a), Vec::<String>::new());
    f.carry(Node::A);

    // Another node takes the session over: a's connection closes, and a gives back.
    let (_s4, present) = f.on(Node::B).connect_ok(connect(V3, "s", false));
    assert!(present);
    f.a.auto_store = false;
    f.carry(Node::B);
    assert!(!online(&f.a, "s"));
    assert_eq!(releases(&mut f.a), consumer, "taken over elsewhere");

    // A clean session has nothing stored to give back.
    let (c, _) = f.on(Node::B).connect_ok(connect(V3, "clean", true));
    f.b.subscribe_ok(c, 1, "t/#", QoS::AtLeastOnce);
    f.b.auto_store = false;
    f.b.input(Input::Closed { conn: c });
    assert_eq!(releases(&mut f.b), Vec::<String>::new());

    // The node shuts down with the client connected.
    f.b.auto_store = false;
    f.b.input(Input::Shutdown);
    assert_eq!(releases(&mut f.b), consumer, "shut down");
}

/// Outside a fleet, a session's messages are read by this node alone: nothing is given back.
#[test]
fn a_single_node_does_not_give_back_consumer_reads() {
    let mut h = Harness::new(BrokerConfig::default());
    let (s, _) = h.connect_ok(connect(V3, "s", false));
    h.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    h.auto_store = false;
    h.input(Input::Closed { conn: s });
    assert_eq!(releases(&mut h), Vec::<String>::new());
}

/// The session record of `client_id` in `store`, if there is one.
fn stored_record(
    store: &mut jetmq_core::js::memory::MemoryStore,
    client_id: &str,
) -> Option<SessionRecord> {
    let reply = store.execute(&StoreRequest::GetLast {
        stream: Stream::Sessions,
        subject: records::session_subject(client_id),
    });
    match reply {
        Ok(StoreReply::Message(Some(m))) => {
            Some(SessionRecord::from_json(&m.payload).expect("a record"))
        }
        _ => None,
    }
}

/// The connect stamp of the session record of `client_id` in `store`.
fn stored_stamp(store: &mut jetmq_core::js::memory::MemoryStore, client_id: &str) -> Option<u64> {
    stored_record(store, client_id).map(|r| r.jetmq.stamp)
}

/// The client resumes on node b while node a still has its old connection (b's connect
/// notice has not reached a); then a sees that connection end. Whether a reads the stored
/// record before or after b wrote its own, a's record never replaces b's (a's write is
/// conditional on the record it read), and a forgets its copy.
#[test]
fn the_node_a_client_left_never_writes_its_record_over_a_newer_one() {
    for b_writes_first in [true, false] {
        let mut f = Fleet::new();
        let (s, _) = f.on(Node::A).connect_ok(connect(V3, "s", false));
        f.a.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
        f.carry(Node::A);
        let a_stamp = stored_stamp(&mut f.a.store, "s");
        assert!(a_stamp.is_some());

        if !b_writes_first {
            // a reads the record (its own) before b's connect; the answer comes after it.
            f.a.auto_store = false;
            f.a.input(Input::Closed { conn: s });
        }
        let (s2, present) = f.on(Node::B).connect_ok(connect(V3, "s", false));
        assert!(present);
        f.b.nats.clear();
        let b_stamp = stored_stamp(&mut f.b.store, "s");
        assert!(b_stamp > a_stamp, "{b_stamp:?} after {a_stamp:?}");

        f.on(Node::A);
        if b_writes_first {
            f.a.input(Input::Closed { conn: s });
        } else {
            f.a.complete_all_held();
            f.a.auto_store = true;
        }
        assert_eq!(
            stored_stamp(&mut f.a.store, "s"),
            b_stamp,
            "b's record stays (b wrote first: {b_writes_first})"
        );
        assert!(
            f.a.broker.sessions().all(|i| i.key.client_id != "s"),
            "a forgot its copy"
        );
        assert!(f
            .a
            .notices
            .iter()
            .all(|n| !matches!(n, jetmq_core::broker::Notice::StoreFailed(_))));
        assert!(online(&f.b, "s"));
        assert_eq!(f.b.closed(s2), None);
    }
}

/// Two connects of one client id through two nodes at once (two clients sharing it): node b
/// read the record for its load, then the later connect through node a wrote its record, then
/// b's load ended. b's record does not replace a's, and a's connection is the one left.
#[test]
fn a_resume_does_not_write_its_record_over_a_later_connects() {
    let mut f = Fleet::new();
    let (s, _) = f.on(Node::A).connect_ok(connect(V3, "s", false));
    f.a.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    f.a.input(Input::Closed { conn: s });
    f.carry(Node::A);

    // b reads the record; its answers come later.
    f.on(Node::B).auto_store = false;
    let on_b = f.b.connect(connect(V3, "s", false));
    f.carry(Node::B);
    let (on_a, present) = f.on(Node::A).connect_ok(connect(V3, "s", false));
    assert!(present);
    let a_stamp = stored_stamp(&mut f.a.store, "s");

    f.on(Node::B);
    f.b.complete_all_held();
    f.b.auto_store = true;
    assert_eq!(
        stored_stamp(&mut f.b.store, "s"),
        a_stamp,
        "a's record stays"
    );
    assert!(f
        .b
        .notices
        .iter()
        .all(|n| !matches!(n, jetmq_core::broker::Notice::StoreFailed(_))));
    // a's connect notice reaches b: b's connection closes, a's stays.
    f.carry(Node::A);
    assert_eq!(f.b.closed(on_b), Some(CloseReason::SessionTakenOver));
    assert!(online(&f.a, "s"));
    assert_eq!(f.a.closed(on_a), None);
    assert_eq!(stored_stamp(&mut f.b.store, "s"), a_stamp);
}

/// A clean start through a node that does not hold the session ends the session everywhere:
/// its record, its consumer and its QoS 2 state leave the store, so a later resume through
/// any node starts afresh (and a new QoS 2 publish reusing an old packet identifier is a new
/// message, not a duplicate).
#[test]
fn a_clean_start_through_another_node_ends_the_stored_session() {
    let mut f = Fleet::new();
    let (s, _) = f.on(Node::A).connect_ok(connect(V3, "s", false));
    f.a.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    // A QoS 2 publish whose PUBREL never comes: its packet identifier is stored as received.
    f.a.send(
        s,
        &publish(
            "u/x",
            "old",
            PublishQos::ExactlyOnce(harness::pid(7)),
            false,
        ),
    );
    assert!(matches!(f.a.next_packet(s), Some(Packet::PubRec(_))));
    f.a.input(Input::Closed { conn: s });
    f.carry(Node::A);

    let (s2, present) = f.on(Node::B).connect_ok(connect(V3, "s", true));
    assert!(!present);
    f.carry(Node::B);
    assert!(f.a.broker.sessions().all(|i| i.key.client_id != "s"));
    f.b.input(Input::Closed { conn: s2 });
    assert!(
        stored_record(&mut f.b.store, "s").is_none(),
        "the record is gone"
    );
    let consumer = f.b.store.execute(&StoreRequest::Pending {
        consumer: records::consumer_name("s"),
        limit: 10,
    });
    assert!(
        matches!(&consumer, Ok(StoreReply::Messages(m)) if m.is_empty()),
        "{consumer:?}"
    );

    // Resumed through a: nothing of the old session, and pid 7 starts a new flow.
    let (s3, present) = f.on(Node::A).connect_ok(connect(V3, "s", false));
    assert!(!present, "the clean start ended the session");
    let (sub, _) = f.a.connect_ok(connect(V3, "sub", true));
    f.a.subscribe_ok(sub, 1, "u/#", QoS::ExactlyOnce);
    f.a.send(
        s3,
        &publish(
            "u/x",
            "new",
            PublishQos::ExactlyOnce(harness::pid(7)),
            false,
        ),
    );
    assert!(matches!(f.a.next_packet(s3), Some(Packet::PubRec(_))));
    f.a.send(
        s3,
        &Packet::PubRel(jetmq_core::codec::PubRel::new(harness::pid(7))),
    );
    let got = f.a.publishes(sub);
    assert_eq!(
        got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
        ["new"],
        "{got:?}"
    );
}

/// A clean start needs nothing from the store: when its reads fail (NATS away), the client
/// connects all the same; a resume is refused (server unavailable) instead.
#[test]
fn a_clean_start_connects_while_the_store_cannot_be_read() {
    let mut f = Fleet::new();
    let fail = || Some(jetmq_core::js::StoreError::Unavailable("NATS away".into()));
    f.on(Node::A).auto_store = false;
    let clean = f.a.connect(connect(V3, "clean", true));
    assert!(!f.a.held.is_empty(), "the clean start reads the store");
    while !f.a.held.is_empty() {
        f.a.complete_held(0, fail());
    }
    assert!(
        matches!(f.a.next_packet(clean), Some(Packet::ConnAck(a)) if a.reason == jetmq_core::codec::ConnectReason::Success),
        "accepted"
    );

    let resume = f.a.connect(connect(V3, "resume", false));
    while !f.a.held.is_empty() {
        f.a.complete_held(0, fail());
    }
    assert!(
        matches!(f.a.next_packet(resume), Some(Packet::ConnAck(a)) if a.reason == jetmq_core::codec::ConnectReason::ServerUnavailable),
        "refused"
    );
}

/// With no other node involved, a client that leaves has its record written (conditionally
/// on the record read, which is its own) with the time it went offline.
#[test]
fn a_client_that_leaves_has_its_record_written() {
    let mut f = Fleet::new();
    let (s, _) = f.on(Node::A).connect_ok(connect(V3, "s", false));
    f.a.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    f.a.input(Input::Closed { conn: s });
    let record = stored_record(&mut f.a.store, "s").expect("a record");
    assert!(record.jetmq.disconnected_at.is_some(), "{record:?}");
    assert!(f.a.broker.sessions().any(|i| i.key.client_id == "s"));
}

/// A message stored before a resume on node b, whose live copy reaches b only after the
/// session had it from its consumer (and acknowledged it), is not delivered twice.
#[test]
fn a_late_live_copy_of_a_message_had_from_the_load_is_dropped() {
    let mut f = Fleet::new();
    let (s, _) = f.on(Node::A).connect_ok(connect(V3, "s", false));
    f.a.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    f.a.input(Input::Closed { conn: s });
    let (p, _) = f.a.connect_ok(connect(V3, "p", true));
    f.a.send(
        p,
        &publish(
            "t/early",
            "1",
            PublishQos::AtLeastOnce(harness::pid(1)),
            false,
        ),
    );
    // a's live copy is still on its way when the client resumes on b.
    let late = std::mem::take(&mut f.a.nats);
    let (s2, present) = f.on(Node::B).connect_ok(connect(V3, "s", false));
    assert!(present);
    let got = f.b.publishes(s2);
    assert_eq!(got.len(), 1, "{got:?}");
    f.b.send(
        s2,
        &Packet::PubAck(jetmq_core::codec::PubAck::new(harness::pid(1))),
    );
    f.a.nats = late;
    let subjects = f.carry(Node::A);
    assert!(
        subjects.iter().any(|s| s == "t.early"),
        "the live copy went out: {subjects:?}"
    );
    assert!(f.b.publishes(s2).is_empty(), "not delivered twice");
}

#[test]
fn a_connect_on_one_node_closes_the_connection_on_the_other() {
    let mut f = Fleet::new();
    let (old, _) = f
        .on(Node::A)
        .connect_ok(connect(ProtocolVersion::V5, "c", true));
    f.carry(Node::A);
    let (_new, _) = f.on(Node::B).connect_ok(connect(V3, "c", true));
    f.carry(Node::B);
    assert_eq!(f.a.closed(old), Some(CloseReason::SessionTakenOver));
    let disconnect = f.a.packets(old).into_iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    });
    assert_eq!(
        disconnect,
        Some(jetmq_core::codec::DisconnectReason::SessionTakenOver)
    );
    assert!(f.a.broker.sessions().next().is_none());
}

/// Whether node `h` holds `client_id`'s session with its client connected.
fn online(h: &Harness, client_id: &str) -> bool {
    h.broker
        .sessions()
        .any(|i| i.key.client_id == client_id && i.online)
}

/// Whether `conn` on node `h` is still open (not closed by the broker).
fn open(h: &Harness, conn: jetmq_core::broker::ConnId) -> bool {
    h.closed(conn).is_none()
}

/// A client moves a → b → a, and b's notice reaches a only after the client is back on a:
/// the late notice does not close the newer connection on a, while a's notice closes b's.
#[test]
fn a_late_connect_notice_does_not_close_the_newer_connection() {
    let mut f = Fleet::new();
    let step = std::time::Duration::from_millis(5);
    let (first, _) = f.on(Node::A).connect_ok(connect(V3, "m", true));
    f.carry(Node::A);
    f.advance(step);
    let (on_b, _) = f.on(Node::B).connect_ok(connect(V3, "m", true));
    // b's notice is delayed; the client comes back to a meanwhile.
    let late = std::mem::take(&mut f.b.nats);
    f.advance(step);
    let (second, _) = f.on(Node::A).connect_ok(connect(V3, "m", true));
    assert_eq!(f.a.closed(first), Some(CloseReason::SessionTakenOver));
    f.carry(Node::A);
    assert_eq!(
        f.b.closed(on_b),
        Some(CloseReason::SessionTakenOver),
        "a's newer notice closes b's connection"
    );
    f.b.nats = late;
    f.carry(Node::B);
    assert!(
        open(&f.a, second),
        "the late notice left a's newer connection"
    );
    assert_eq!(f.a.broker.stats().late_connect_notices, 1);
    assert!(online(&f.a, "m"));
}

/// Two connects of one client through two nodes at the same moment, each node unaware of the
/// other's: once the notices cross, exactly one connection is left (both nodes agree on which
/// connect was the later), never none and never both.
#[test]
fn crossing_connect_notices_leave_exactly_one_connection() {
    for seeds in [(1, 2), (2, 1), (5, 9), (9, 5)] {
        let mut f = Fleet::with_seeds(seeds);
        let (on_a, _) = f.on(Node::A).connect_ok(connect(V3, "x", true));
        let (on_b, _) = f.on(Node::B).connect_ok(connect(V3, "x", true));
        f.carry(Node::A);
        f.carry(Node::B);
        let left = [open(&f.a, on_a), open(&f.b, on_b)];
        assert_eq!(
            left.iter().filter(|&&o| o).count(),
            1,
            "seeds {seeds:?}: {left:?}"
        );
    }
}

/// The same for a persistent session, whose connects wait for the store on both nodes when
/// the notices cross: the older one is refused (server unavailable) before it is answered,
/// the newer one resumes the session.
#[test]
fn crossing_resumes_of_a_persistent_session_leave_exactly_one_connection() {
    for seeds in [(1, 2), (2, 1), (5, 9), (9, 5)] {
        let mut f = Fleet::with_seeds(seeds);
        let (first, _) = f.on(Node::A).connect_ok(connect(V3, "p", false));
        f.a.subscribe_ok(first, 1, "p/#", QoS::AtLeastOnce);
        f.a.input(Input::Closed { conn: first });
        f.carry(Node::A);
        f.a.auto_store = false;
        f.b.auto_store = false;
        let on_a = f.on(Node::A).connect(connect(V3, "p", false));
        let on_b = f.on(Node::B).connect(connect(V3, "p", false));
        f.carry(Node::A);
        f.carry(Node::B);
        f.on(Node::A).complete_all_held();
        f.on(Node::B).complete_all_held();
        // (open, CONNACK success, session present) of each connection.
        let state = |h: &mut Harness, conn| {
            let ack = h.packets(conn).into_iter().find_map(|p| match p {
                Packet::ConnAck(a) => Some(a),
                _ => None,
            });
            let ok = ack
                .as_ref()
                .is_some_and(|a| a.reason == jetmq_core::codec::ConnectReason::Success);
            (
                h.closed(conn).is_none() && ok,
                ack.is_some_and(|a| a.session_present),
            )
        };
        let left = [state(&mut f.a, on_a), state(&mut f.b, on_b)];
        let accepted: Vec<_> = left.iter().filter(|s| s.0).collect();
        assert_eq!(accepted.len(), 1, "seeds {seeds:?}: {left:?}");
        assert!(accepted[0].1, "seeds {seeds:?}: the session was resumed");
    }
}

/// Node a missed node b's connect notice while its NATS connection was down, so the client's
/// old connection stays open on a. When a's NATS connection comes back it announces its
/// clients again; b, whose connection is newer, answers with its own notice, which closes a's.
#[test]
fn a_missed_connect_notice_is_made_good_when_nats_comes_back() {
    let mut f = Fleet::new();
    let step = std::time::Duration::from_millis(5);
    let (on_a, _) = f.on(Node::A).connect_ok(connect(V3, "r", true));
    f.carry(Node::A);
    f.advance(step);
    let (on_b, _) = f.on(Node::B).connect_ok(connect(V3, "r", true));
    f.b.nats.clear();
    assert!(open(&f.a, on_a), "a never heard of b's connect");
    f.a.input(Input::NatsConnected);
    assert!(
        f.carry(Node::A)
            .iter()
            .any(|s| s.starts_with("$JETMQ.conn.")),
        "a announces its client again"
    );
    assert!(open(&f.b, on_b), "b's newer connection stays");
    assert!(
        f.carry(Node::B)
            .iter()
            .any(|s| s.starts_with("$JETMQ.conn.")),
        "b answers with its own notice"
    );
    assert_eq!(f.a.closed(on_a), Some(CloseReason::SessionTakenOver));
    assert!(open(&f.b, on_b));
    // Nothing more goes back and forth.
    assert!(f
        .carry(Node::A)
        .iter()
        .all(|s| !s.starts_with("$JETMQ.conn.")));
    // A NATS server that has just restarted may not route to the other nodes yet: the
    // clients are announced once more two seconds later.
    f.b.input(Input::NatsConnected);
    assert_eq!(notices(&mut f.b), 1);
    f.b.advance(std::time::Duration::from_millis(1900));
    assert_eq!(notices(&mut f.b), 0);
    f.b.advance(std::time::Duration::from_millis(200));
    assert_eq!(notices(&mut f.b), 1);
}

/// The connect notices `h` published since the last look.
fn notices(h: &mut Harness) -> usize {
    std::mem::take(&mut h.nats)
        .iter()
        .filter(|a| matches!(a, Action::NatsPublish { subject, .. } if subject.starts_with("$JETMQ.conn.")))
        .count()
}

/// Node a holds an offline copy of a session; its client resumes it through node b (a misses
/// the notice), subscribes to more there and comes back to a. Node a reads the stored record
/// at the resume, sees a later connect than its copy's and takes the record's session: the
/// subscription made on b is there.
#[test]
fn a_resume_reads_the_record_over_a_stale_copy() {
    let mut f = Fleet::new();
    let (first, _) = f.on(Node::A).connect_ok(connect(V3, "w", false));
    f.a.subscribe_ok(first, 1, "old/#", QoS::AtLeastOnce);
    f.a.input(Input::Closed { conn: first });
    f.carry(Node::A);
    f.advance(std::time::Duration::from_millis(5));
    let (on_b, present) = f.on(Node::B).connect_ok(connect(V3, "w", false));
    assert!(present);
    f.b.subscribe_ok(on_b, 2, "new/#", QoS::AtLeastOnce);
    f.b.input(Input::Closed { conn: on_b });
    f.b.nats.clear();
    f.advance(std::time::Duration::from_millis(5));
    let (back, present) = f.on(Node::A).connect_ok(connect(V3, "w", false));
    assert!(present);
    let (p, _) = f.a.connect_ok(connect(V3, "p", true));
    for topic in ["old/1", "new/1"] {
        f.a.send(p, &publish(topic, "live", PublishQos::AtMostOnce, false));
    }
    let topics: Vec<String> = f.a.publishes(back).into_iter().map(|m| m.0).collect();
    assert_eq!(topics, ["old/1", "new/1"]);
}

/// Node a keeps an offline copy of a session whose client then connected through node b, and
/// a missed b's connect notice (NATS away): when the copy's expiry comes, a reads the stored
/// record, sees a later connect's stamp and only forgets its copy; the session b serves keeps
/// its record and queued messages. Without a later connect the same expiry ends the session.
#[test]
fn a_stale_copy_never_expires_a_session_another_node_took_over() {
    let expiring = |id: &str| {
        let mut c = connect(ProtocolVersion::V5, id, false);
        c.properties.session_expiry_interval = Some(60);
        c
    };
    let stored = |h: &Harness, id: &str| {
        h.store.records().iter().any(|r| {
            r.subject.starts_with("$MQTT.sess.")
                && String::from_utf8_lossy(&r.payload).contains(&format!("\"id\":\"{id}\""))
        })
    };
    let expired = |h: &Harness, id: &str| {
        h.notices.iter().any(|n| {
            matches!(n, jetmq_core::broker::Notice::SessionExpired { client_id } if client_id == id)
        })
    };
    let mut f = Fleet::new();
    for id in ["moved", "stays"] {
        let (conn, _) = f.on(Node::A).connect_ok(expiring(id));
        f.a.subscribe_ok(conn, 1, "e/#", QoS::AtLeastOnce);
        f.a.input(Input::Closed { conn });
    }
    f.carry(Node::A);
    let (on_b, present) = f.on(Node::B).connect_ok(expiring("moved"));
    assert!(present);
    // Node a never hears of it.
    f.b.nats.clear();
    f.on(Node::A).advance(std::time::Duration::from_secs(61));
    assert!(f.a.broker.sessions().all(|i| i.key.client_id != "moved"));
    assert!(!expired(&f.a, "moved"), "not expired: {:?}", f.a.notices);
    assert!(stored(&f.a, "moved"), "the record b uses is kept");
    assert!(expired(&f.a, "stays"));
    assert!(!stored(&f.a, "stays"), "an expired session's record goes");
    // The session on b still gets its messages.
    let (p, _) = f.on(Node::B).connect_ok(connect(V3, "p", true));
    f.b.send(
        p,
        &publish(
            "e/1",
            "after",
            PublishQos::AtLeastOnce(harness::pid(1)),
            false,
        ),
    );
    let got = f.b.publishes(on_b);
    assert_eq!(got.len(), 1, "{got:?}");
}

/// Node b's clock runs an hour ahead, so the record its connect wrote carries a stamp later
/// than node a's clock. When the client resumes through node a (b missing the notice), a
/// stamps its connect after the record's and says so again; so when b's stale copy expires,
/// b sees a later connect in the record and leaves the session a serves alone.
#[test]
fn a_clock_running_behind_still_orders_its_connect_after_the_stored_one() {
    let mut f = Fleet::new();
    f.b.advance(std::time::Duration::from_secs(3600));
    let mut c = connect(ProtocolVersion::V5, "skew", false);
    c.properties.session_expiry_interval = Some(60);
    let (on_b, _) = f.on(Node::B).connect_ok(c.clone());
    f.b.subscribe_ok(on_b, 1, "skew/#", QoS::AtLeastOnce);
    f.b.input(Input::Closed { conn: on_b });
    f.b.nats.clear();
    let (on_a, present) = f.on(Node::A).connect_ok(c);
    assert!(present);
    assert_eq!(
        notices(&mut f.a),
        2,
        "announced at the connect, and again with the later stamp"
    );
    f.on(Node::B).advance(std::time::Duration::from_secs(61));
    assert!(f.b.broker.sessions().all(|i| i.key.client_id != "skew"));
    assert!(
        f.b.store
            .records()
            .iter()
            .any(|r| r.subject.starts_with("$MQTT.sess.")),
        "the record node a uses is kept"
    );
    assert!(open(&f.a, on_a));
}

/// A client may send packets right after its CONNECT without waiting for the CONNACK
/// [MQTT-3.1.4]: a SUBSCRIBE that arrived with the CONNECT of a session being read from the
/// store is handled once the session is bound.
#[test]
fn packets_sent_behind_a_connect_wait_for_the_session_and_are_then_handled() {
    let mut f = Fleet::new();
    let (first, _) = f.on(Node::A).connect_ok(connect(V3, "eager", false));
    f.a.input(Input::Closed { conn: first });
    f.carry(Node::A);
    let h = f.on(Node::B);
    let conn = h.open(V3);
    let mut bytes = bytes::BytesMut::new();
    Packet::Connect(Box::new(connect(V3, "eager", false))).encode(V3, &mut bytes);
    harness::subscribe(7, "eager/#", QoS::AtLeastOnce).encode(V3, &mut bytes);
    h.send_bytes(conn, &bytes);
    let packets = h.packets(conn);
    assert!(
        matches!(packets.first(), Some(Packet::ConnAck(a)) if a.session_present),
        "{packets:?}"
    );
    assert!(
        packets
            .iter()
            .any(|p| matches!(p, Packet::SubAck(a) if a.packet_id.get() == 7)),
        "the SUBSCRIBE sent with the CONNECT is answered: {packets:?}"
    );
}

/// A client that floods behind a CONNECT still being loaded is no longer read once 64 KiB
/// wait (the broker keeps what it read, nothing more), and is read again, losing nothing, once
/// its session is bound.
#[test]
fn a_flood_behind_a_waiting_connect_pauses_reading_until_the_connack() {
    let mut f = Fleet::new();
    let (first, _) = f.on(Node::A).connect_ok(connect(V3, "big", false));
    f.a.subscribe_ok(first, 1, "big/#", QoS::AtMostOnce);
    f.a.input(Input::Closed { conn: first });
    f.carry(Node::A);
    let h = f.on(Node::B);
    h.auto_store = false;
    let conn = h.connect(connect(V3, "big", false));
    let payload = "x".repeat(1024);
    for _ in 0..70 {
        h.send(
            conn,
            &publish("big/x", &payload, PublishQos::AtMostOnce, false),
        );
    }
    assert!(
        h.paused.contains(&conn),
        "no longer read while the CONNECT waits"
    );
    assert!(h.packets(conn).is_empty(), "no CONNACK yet");
    h.auto_store = true;
    h.complete_all_held();
    assert!(!h.paused.contains(&conn), "read again once bound");
    let got = h.publishes(conn);
    assert_eq!(
        got.len(),
        70,
        "every publish sent behind the CONNECT was handled"
    );
}

/// A QoS 2 message received through node a (PUBREC sent, PUBREL not yet) and a client that
/// comes back through node b: b reads the session's inbound QoS 2 state with it, so the
/// resent PUBLISH is a duplicate (not delivered again) and the PUBREL completes normally.
#[test]
fn inbound_qos2_state_follows_the_session_to_another_node() {
    let mut f = Fleet::new();
    let mut c = connect(ProtocolVersion::V5, "q2", false);
    c.properties.session_expiry_interval = Some(600);
    let (sub, _) = f.on(Node::A).connect_ok(connect(V3, "watcher", true));
    f.a.subscribe_ok(sub, 1, "q2/#", QoS::AtLeastOnce);
    let (first, _) = f.a.connect_ok(c.clone());
    let exactly_once = PublishQos::ExactlyOnce(harness::pid(5));
    f.a.send(first, &publish("q2/x", "once", exactly_once, false));
    assert!(matches!(f.a.next_packet(first), Some(Packet::PubRec(_))));
    assert_eq!(f.a.publishes(sub).len(), 1);
    f.a.input(Input::Closed { conn: first });
    f.carry(Node::A);

    let (second, present) = f.on(Node::B).connect_ok(c);
    assert!(present);
    let mut resent = publish("q2/x", "once", exactly_once, false);
    if let Packet::Publish(p) = &mut resent {
        p.dup = true;
    }
    f.b.send(second, &resent);
    assert!(matches!(f.b.next_packet(second), Some(Packet::PubRec(_))));
    f.b.send(
        second,
        &Packet::PubRel(jetmq_core::codec::PubRel::new(harness::pid(5))),
    );
    match f.b.next_packet(second) {
        Some(Packet::PubComp(ack)) => assert_eq!(
            ack.reason,
            jetmq_core::codec::PubRelReason::Success,
            "the PUBREL's identifier is known on b"
        ),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    f.on(Node::A);
    f.carry(Node::B);
    assert!(
        f.a.publishes(sub).is_empty(),
        "the resent PUBLISH was not delivered again"
    );
}

/// An outbound QoS 2 flow (PUBREC received through node a, PUBCOMP not yet) follows the
/// session to node b as its PUBREL: b sends the PUBREL again, not the message.
#[test]
fn outbound_qos2_state_follows_the_session_to_another_node() {
    let mut f = Fleet::new();
    let (s, _) = f.on(Node::A).connect_ok(connect(V3, "rx", false));
    f.a.subscribe_ok(s, 1, "rx/#", QoS::ExactlyOnce);
    let (p, _) = f.a.connect_ok(connect(V3, "tx", true));
    f.a.send(
        p,
        &publish(
            "rx/1",
            "once",
            PublishQos::ExactlyOnce(harness::pid(1)),
            false,
        ),
    );
    let id =
        f.a.packets(s)
            .into_iter()
            .find_map(|pk| match pk {
                Packet::Publish(m) => m.qos.packet_id(),
                _ => None,
            })
            .expect("delivered at QoS 2");
    f.a.send(s, &Packet::PubRec(jetmq_core::codec::PubRec::new(id)));
    assert!(matches!(f.a.next_packet(s), Some(Packet::PubRel(_))));
    f.a.input(Input::Closed { conn: s });
    f.carry(Node::A);
    let (s2, present) = f.on(Node::B).connect_ok(connect(V3, "rx", false));
    assert!(present);
    let again = f.b.packets(s2);
    assert_eq!(again.len(), 1, "the PUBREL only: {again:?}");
    assert!(matches!(&again[0], Packet::PubRel(a) if a.packet_id == id));
}

/// An administrator deleting a session through one node (or an offline admin broker of the
/// fleet) ends it on the node where its client is online: DISCONNECT 0x98, the connection
/// closed, the session gone there, and that node's store writes remove it again (a record it
/// wrote meanwhile cannot bring it back).
#[test]
fn a_discarded_session_ends_on_the_node_its_client_is_on() {
    let mut f = Fleet::new();
    let mut c = connect(ProtocolVersion::V5, "d", false);
    c.properties.session_expiry_interval = Some(600);
    let (conn, _) = f.on(Node::A).connect_ok(c);
    f.a.subscribe_ok(conn, 1, "d/#", QoS::AtLeastOnce);
    f.carry(Node::A);
    assert!(
        f.a.store
            .records()
            .iter()
            .any(|r| r.subject.starts_with("$MQTT.sess.")),
        "the session record is stored"
    );
    // Node b does not hold the session in memory; its discard still tells the fleet (as the
    // broker of `jetmq sessions delete` does).
    let key = f.a.broker.sessions().next().expect("the session").key;
    f.on(Node::B).input(Input::DiscardSession(key.clone()));
    // The notice reaches node a, which holds the store as it acts.
    f.on(Node::A);
    let subjects = f.carry(Node::B);
    assert!(
        subjects.iter().any(|s| s.starts_with("$JETMQ.conn.")),
        "a discard notice: {subjects:?}"
    );
    assert_eq!(f.a.closed(conn), Some(CloseReason::AdministrativeAction));
    let disconnect = f.a.packets(conn).into_iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    });
    assert_eq!(
        disconnect,
        Some(jetmq_core::codec::DisconnectReason::AdministrativeAction)
    );
    assert!(f.a.broker.sessions().all(|s| s.key != key));
    assert!(
        !f.a.store
            .records()
            .iter()
            .any(|r| r.subject.starts_with("$MQTT.sess.")),
        "the session record is gone"
    );
    // The node that ends a session because of a notice does not announce it again.
    assert!(
        f.carry(Node::A)
            .iter()
            .all(|s| !s.starts_with("$JETMQ.conn.")),
        "no notice loop"
    );
}

#[test]
fn retained_messages_and_stored_messages_cross_over_live() {
    let mut f = Fleet::new();
    // A persistent subscriber online on node b.
    let (s, _) = f.on(Node::B).connect_ok(connect(V3, "s", false));
    f.b.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    f.carry(Node::B);
    // A publisher on node a: a retained message and a QoS 1 message, both stored.
    let (p, _) = f.on(Node::A).connect_ok(connect(V3, "p", true));
    f.a.send(p, &publish("t/r", "kept", PublishQos::AtMostOnce, true));
    f.a.send(
        p,
        &publish(
            "t/q",
            "one",
            PublishQos::AtLeastOnce(harness::pid(2)),
            false,
        ),
    );
    assert!(matches!(f.a.next_packet(p), Some(Packet::PubAck(_))));
    f.carry(Node::A);
    // Node b delivers both live; the QoS 1 one at QoS 1, acknowledged to the store.
    let got = f.on(Node::B).publishes(s);
    assert_eq!(
        got.iter()
            .map(|(t, p, q, _, _)| (t.as_str(), p.as_str(), *q))
            .collect::<Vec<_>>(),
        [
            ("t/r", "kept", QoS::AtMostOnce),
            ("t/q", "one", QoS::AtLeastOnce)
        ]
    );
    f.b.send(
        s,
        &Packet::PubAck(jetmq_core::codec::PubAck::new(harness::pid(1))),
    );
    assert!(
        f.b.store
            .consumers
            .values()
            .all(|(_, pending)| pending.is_empty()),
        "acknowledged for s: {:?}",
        f.b.store.consumers
    );
    // Node b's retained messages follow node a's: a late subscriber there gets it, also
    // for a topic nobody on b subscribed to when it was set.
    f.on(Node::A).send(
        p,
        &publish("u/r", "elsewhere", PublishQos::AtMostOnce, true),
    );
    f.carry(Node::A);
    let (late, _) = f.on(Node::B).connect_ok(connect(V3, "late", true));
    f.b.subscribe_ok(late, 1, "t/#", QoS::AtMostOnce);
    f.b.subscribe_ok(late, 2, "u/#", QoS::AtMostOnce);
    let got = f.b.publishes(late);
    assert_eq!(
        got.iter()
            .map(|(t, _, _, r, _)| (t.as_str(), *r))
            .collect::<Vec<_>>(),
        [("t/r", true), ("u/r", true)]
    );
    // An empty retained message clears it on every node.
    f.on(Node::A)
        .send(p, &publish("u/r", "", PublishQos::AtMostOnce, true));
    f.carry(Node::A);
    let live = f.on(Node::B).publishes(late);
    assert_eq!(live.len(), 1, "the empty message itself, live: {live:?}");
    f.b.subscribe_ok(late, 3, "u/#", QoS::AtMostOnce);
    assert!(f.b.publishes(late).is_empty(), "no retained message left");
}

#[test]
fn nats_messages_on_reserved_subjects_never_reach_mqtt() {
    let mut f = Fleet::new();
    let (s, _) = f.on(Node::A).connect_ok(connect(V3, "s", true));
    f.a.subscribe_ok(s, 1, "$JETMQ/#", QoS::AtMostOnce);
    f.a.input(Input::NatsMessage {
        subject: "$JETMQ.conn.xyz".into(),
        headers: Vec::new(),
        payload: "default\nnobody".into(),
    });
    f.a.input(Input::NatsMessage {
        subject: "$JETMQ.other".into(),
        headers: Vec::new(),
        payload: "x".into(),
    });
    assert!(f.a.publishes(s).is_empty());
    // And MQTT publishes there are not bridged.
    f.a.nats.clear();
    f.a.send(
        s,
        &publish("$JETMQ/conn/xyz", "forged", PublishQos::AtMostOnce, false),
    );
    assert!(
        !f.a.nats
            .iter()
            .any(|a| matches!(a, Action::NatsPublish { .. })),
        "{:?}",
        f.a.nats
    );
}

/// One step of a random fleet run.
#[derive(Debug, Clone)]
enum Step {
    /// Client `id` connects through node b (`on_b`) or a, with a persistent session or not.
    Connect {
        on_b: bool,
        id: u8,
        persistent: bool,
    },
    /// The client's latest connection through that node ends from the client's side.
    Close { on_b: bool, id: u8 },
    /// What that node published on NATS so far reaches the other node.
    Deliver { from_b: bool },
    /// What that node published on NATS so far is lost (its NATS connection dropped).
    Lose { from_b: bool },
    /// Time passes on both nodes.
    Wait { ms: u16 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (any::<bool>(), 0u8..3, any::<bool>())
            .prop_map(|(on_b, id, persistent)| Step::Connect { on_b, id, persistent }),
        1 => (any::<bool>(), 0u8..3).prop_map(|(on_b, id)| Step::Close { on_b, id }),
        2 => any::<bool>().prop_map(|from_b| Step::Deliver { from_b }),
        1 => any::<bool>().prop_map(|from_b| Step::Lose { from_b }),
        1 => (0u16..1500).prop_map(|ms| Step::Wait { ms }),
    ]
}

/// A connection a run made: its node, client, the order of its connect and whether the
/// client closed it.
struct Made {
    on_b: bool,
    id: u8,
    conn: ConnId,
    order: (u64, u64),
    persistent: bool,
    closed_by_client: bool,
}

/// The `Jetmq-Connect` order of the last connect notice among `actions`.
fn last_connect_order(actions: &[Action]) -> Option<(u64, u64)> {
    actions.iter().rev().find_map(|a| match a {
        Action::NatsPublish {
            subject, headers, ..
        } if subject.starts_with("$JETMQ.conn.") => headers
            .iter()
            .find(|h| h.name == "Jetmq-Connect")
            .and_then(|h| h.value.split_once(' '))
            .and_then(|(s, n)| Some((s.parse().ok()?, n.parse().ok()?))),
        _ => None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the interleaving of connects, closes, delays and lost notices, once both
    /// nodes' NATS connections are (again) up and their notices have gone round, every client
    /// has at most one connection left, and it is its latest connect (unless the client
    /// closed that one itself); the stored record is the latest connect's when all of the
    /// client's connects were persistent.
    #[test]
    fn each_client_keeps_exactly_its_latest_connection(
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let mut f = Fleet::new();
        let mut made: Vec<Made> = Vec::new();
        for s in steps {
            match s {
                Step::Connect { on_b, id, persistent } => {
                    let node = if on_b { Node::B } else { Node::A };
                    let h = f.on(node);
                    let before = h.nats.len();
                    let conn = h.connect(connect(V3, &format!("c{id}"), !persistent));
                    let order = last_connect_order(&h.nats[before..]);
                    prop_assert!(order.is_some(), "every connect is announced");
                    if let Some(order) = order {
                        made.push(Made { on_b, id, conn, order, persistent, closed_by_client: false });
                    }
                }
                Step::Close { on_b, id } => {
                    let node = if on_b { Node::B } else { Node::A };
                    if let Some(m) = made.iter_mut().rev().find(|m| m.on_b == on_b && m.id == id) {
                        if !m.closed_by_client {
                            m.closed_by_client = true;
                            let conn = m.conn;
                            f.on(node).input(Input::Closed { conn });
                        }
                    }
                }
                Step::Deliver { from_b } => {
                    let (from, to) = if from_b { (Node::B, Node::A) } else { (Node::A, Node::B) };
                    f.on(to);
                    f.carry(from);
                }
                Step::Lose { from_b } => {
                    if from_b { f.b.nats.clear() } else { f.a.nats.clear() }
                }
                Step::Wait { ms } => f.advance(std::time::Duration::from_millis(u64::from(ms))),
            }
        }
        // Both NATS connections come back; the notices go round until nothing is left.
        f.on(Node::A).input(Input::NatsConnected);
        f.on(Node::B).input(Input::NatsConnected);
        for _ in 0..8 {
            f.on(Node::B);
            f.carry(Node::A);
            f.on(Node::A);
            f.carry(Node::B);
        }
        prop_assert!(f.a.nats.is_empty() && f.b.nats.is_empty(), "the notices settle");
        for id in 0u8..3 {
            let open: Vec<&Made> = made
                .iter()
                .filter(|m| m.id == id && !m.closed_by_client)
                .filter(|m| if m.on_b { open(&f.b, m.conn) } else { open(&f.a, m.conn) })
                .collect();
            prop_assert!(open.len() <= 1, "client {id}: {} connections left", open.len());
            if let Some(latest) = made.iter().filter(|m| m.id == id).max_by_key(|m| m.order) {
                if !latest.closed_by_client {
                    prop_assert_eq!(open.len(), 1, "client {}: its latest connection was closed", id);
                    prop_assert_eq!(open[0].conn, latest.conn);
                    prop_assert_eq!(open[0].on_b, latest.on_b);
                }
                // The stored record is the latest connect's: no older view is written over it
                // (a clean start's purge is a plain write, README: left out).
                if made.iter().filter(|m| m.id == id).all(|m| m.persistent) {
                    let stamp = stored_stamp(&mut f.on(Node::A).store, &format!("c{id}"));
                    prop_assert_eq!(stamp, Some(latest.order.0), "client {}'s record", id);
                }
            }
        }
    }
}

/// The queue subscriptions node `n` holds, as (queue group, subject).
fn queue_subs_of(f: &Fleet, n: Node) -> Vec<(String, String)> {
    f.queue_subs
        .iter()
        .filter(|(node, _, _)| *node == n)
        .map(|(_, q, s)| (q.clone(), s.clone()))
        .collect()
}

/// A publisher on node `a` publishes QoS 1 messages on `jobs/1` to `jobs/<count>`, and NATS
/// carries them.
fn publish_jobs(f: &mut Fleet, count: u16) {
    let (p, _) = f.on(Node::A).connect_ok(connect(V3, "p", true));
    for i in 1..=count {
        let topic = format!("jobs/{i}");
        let job = publish(
            &topic,
            "job",
            PublishQos::AtLeastOnce(harness::pid(i)),
            false,
        );
        f.a.send(p, &job);
    }
    f.carry(Node::A);
}

/// A shared subscription with members on both nodes: each message goes to one member in the
/// whole fleet (on the node NATS hands it to), not to one member per node; a plain
/// subscription still gets every message.
#[test]
fn a_shared_subscription_spread_over_two_nodes_gets_each_message_once() {
    let mut f = Fleet::new();
    let (m1, _) = f.on(Node::A).connect_ok(connect(V3, "m1", true));
    f.a.subscribe_ok(m1, 1, "$share/g/jobs/#", QoS::AtLeastOnce);
    let (m2, _) = f.on(Node::B).connect_ok(connect(V3, "m2", true));
    f.b.subscribe_ok(m2, 1, "$share/g/jobs/#", QoS::AtLeastOnce);
    let (all, _) = f.b.connect_ok(connect(V3, "all", true));
    f.b.subscribe_ok(all, 1, "jobs/#", QoS::AtLeastOnce);
    f.carry(Node::B);
    // One queue group, the same name on both nodes, on the filter's two subjects and the
    // group's handed-over messages.
    let on_a = queue_subs_of(&f, Node::A);
    assert_eq!(on_a, queue_subs_of(&f, Node::B));
    let queue = &on_a[0].0;
    let subjects: Vec<&str> = on_a.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        subjects,
        [
            format!("$JETMQ.handover.{queue}.>").as_str(),
            "jobs",
            "jobs.>"
        ]
    );

    publish_jobs(&mut f, 4);
    let got_a = f.a.publishes(m1);
    let got_b = f.b.publishes(m2);
    let mut topics: Vec<String> = got_a.iter().chain(&got_b).map(|m| m.0.clone()).collect();
    topics.sort();
    assert_eq!(
        topics,
        ["jobs/1", "jobs/2", "jobs/3", "jobs/4"],
        "each job once: {got_a:?} {got_b:?}"
    );
    assert!(!got_a.is_empty() && !got_b.is_empty(), "both members work");
    assert!(got_a.iter().chain(&got_b).all(|m| m.2 == QoS::AtLeastOnce));
    assert_eq!(
        f.b.publishes(all).len(),
        4,
        "the plain subscription gets all"
    );
}

/// A stored message taken for a shared subscription by one node is released for the
/// persistent members of the other node when it hears so, and for its own when they are
/// passed over, so no member gets it again when it resumes and the store lets it go once the
/// member that got it acknowledges it.
#[test]
fn a_stored_message_taken_for_a_shared_subscription_is_released_on_every_node() {
    let mut f = Fleet::new();
    let (m1, _) = f.on(Node::A).connect_ok(connect(V3, "m1", false));
    f.a.subscribe_ok(m1, 1, "$share/g/jobs/#", QoS::AtLeastOnce);
    let (m3, _) = f.a.connect_ok(connect(V3, "m3", false));
    f.a.subscribe_ok(m3, 1, "$share/g/jobs/#", QoS::AtLeastOnce);
    let (m2, _) = f.on(Node::B).connect_ok(connect(V3, "m2", false));
    f.b.subscribe_ok(m2, 1, "$share/g/jobs/#", QoS::AtLeastOnce);
    f.carry(Node::A);
    f.carry(Node::B);
    let (p, _) = f.on(Node::A).connect_ok(connect(V3, "p", true));
    f.a.send(
        p,
        &publish(
            "jobs/1",
            "job",
            PublishQos::AtLeastOnce(harness::pid(1)),
            false,
        ),
    );
    assert!(matches!(f.a.next_packet(p), Some(Packet::PubAck(_))));
    let pending = |f: &Fleet, id: &str| {
        f.a.store
            .consumers
            .get(&jetmq_core::js::records::consumer_name(id))
            .map(|(_, unacked)| unacked.len())
            .unwrap_or(0)
    };
    for id in ["m1", "m2", "m3"] {
        assert_eq!(pending(&f, id), 1, "stored for {id}");
    }

    f.carry(Node::A);
    let got: Vec<(Node, ConnId, usize)> = [(Node::A, m1), (Node::A, m3), (Node::B, m2)]
        .into_iter()
        .map(|(n, c)| (n, c, f.node(n).publishes(c).len()))
        .collect();
    let takers: Vec<_> = got.iter().filter(|g| g.2 > 0).collect();
    assert_eq!(takers.len(), 1, "one member got it: {got:?}");
    let &&(taker_node, taker, _) = takers.first().expect("a taker");
    let other = if taker_node == Node::A {
        Node::B
    } else {
        Node::A
    };

    // The other node hears of it (the store is with it for its releases).
    f.on(other);
    let subjects = f.carry(taker_node);
    assert!(
        subjects.iter().any(|s| s.starts_with("$JETMQ.taken.")),
        "{subjects:?}"
    );
    // Only the member that got it still holds it.
    let store = if f.store_at == Node::A {
        &f.a.store
    } else {
        &f.b.store
    };
    let left: Vec<_> = store
        .consumers
        .iter()
        .filter(|(_, (_, unacked))| !unacked.is_empty())
        .map(|(name, _)| name.to_string())
        .collect();
    let taker_id = match (taker_node, taker) {
        (Node::B, _) => "m2",
        (Node::A, c) if c == m1 => "m1",
        _ => "m3",
    };
    assert_eq!(
        left,
        [jetmq_core::js::records::consumer_name(taker_id).to_string()]
    );
    f.on(taker_node).send(
        taker,
        &Packet::PubAck(jetmq_core::codec::PubAck::new(harness::pid(1))),
    );
    let store = if taker_node == Node::A {
        &f.a.store
    } else {
        &f.b.store
    };
    assert!(store.log.is_empty(), "released by all: {:?}", store.log);
}

/// The last member of a shared subscription on a node leaves its queue group; a message NATS
/// still hands to the node is counted, not delivered to anyone else.
#[test]
fn the_last_member_on_a_node_leaves_the_queue_group() {
    let mut f = Fleet::new();
    let (m1, _) = f.on(Node::A).connect_ok(connect(V3, "m1", true));
    f.a.subscribe_ok(m1, 1, "$share/g/jobs/#", QoS::AtMostOnce);
    let (m1b, _) = f.a.connect_ok(connect(V3, "m1b", true));
    f.a.subscribe_ok(m1b, 1, "$share/g/jobs/#", QoS::AtMostOnce);
    let (plain, _) = f.a.connect_ok(connect(V3, "plain", true));
    f.a.subscribe_ok(plain, 1, "jobs/#", QoS::AtMostOnce);
    f.take_queue_changes();
    let subs = queue_subs_of(&f, Node::A);
    assert_eq!(subs.len(), 3, "{subs:?}");
    let queue = subs[0].0.clone();
    f.a.input(Input::Closed { conn: m1 });
    f.take_queue_changes();
    assert_eq!(queue_subs_of(&f, Node::A).len(), 3, "one member is left");
    f.a.input(Input::Closed { conn: m1b });
    f.take_queue_changes();
    assert!(queue_subs_of(&f, Node::A).is_empty());
    f.a.input(Input::NatsQueueMessage {
        queue: queue.into(),
        subject: "jobs.1".into(),
        headers: Vec::new(),
        payload: bytes::Bytes::from_static(b"late"),
    });
    assert_eq!(f.a.broker.stats().share_messages_missed, 1);
    assert!(
        f.a.publishes(plain).is_empty(),
        "a queue delivery is no plain one"
    );
}

/// A shared subscription's group freed with its last member on a node (by UNSUBSCRIBE) and
/// made again by a new member joins the queue group again, and its members get the messages
/// NATS hands the node.
#[test]
fn a_group_made_again_on_a_node_joins_its_queue_group_again() {
    let mut f = Fleet::new();
    let (m, _) = f.on(Node::A).connect_ok(connect(V3, "m", true));
    f.a.subscribe_ok(m, 1, "$share/g/jobs/#", QoS::AtMostOnce);
    f.take_queue_changes();
    let subs = queue_subs_of(&f, Node::A);
    assert_eq!(subs.len(), 3, "jobs, jobs.> and handovers: {subs:?}");
    f.a.send(
        m,
        &Packet::Unsubscribe(jetmq_core::codec::Unsubscribe {
            packet_id: harness::pid(2),
            properties: Default::default(),
            filters: vec!["$share/g/jobs/#".into()],
        }),
    );
    f.take_queue_changes();
    assert!(queue_subs_of(&f, Node::A).is_empty());
    assert_eq!(f.a.broker.metrics().share_groups, 0);
    let (n, _) = f.a.connect_ok(connect(V3, "n", true));
    f.a.subscribe_ok(n, 1, "$share/g/jobs/#", QoS::AtMostOnce);
    f.take_queue_changes();
    assert_eq!(queue_subs_of(&f, Node::A), subs, "the same queue group");
    f.a.input(Input::NatsQueueMessage {
        queue: subs[0].0.clone().into(),
        subject: "jobs.1".into(),
        headers: Vec::new(),
        payload: bytes::Bytes::from_static(b"job"),
    });
    assert_eq!(f.a.publishes(n).len(), 1);
    assert!(f.a.publishes(m).is_empty());
}

/// A queue group's copy of a retained message comes on another NATS connection than the live
/// copy and may arrive after a newer retained message: it reaches its member but leaves the
/// retained message alone.
#[test]
fn a_late_queue_delivery_of_a_retained_message_keeps_the_newer_one_retained() {
    let mut f = Fleet::new();
    let (m, _) = f.on(Node::B).connect_ok(connect(V3, "m", true));
    f.b.subscribe_ok(m, 1, "$share/g/jobs/#", QoS::AtMostOnce);
    f.take_queue_changes();
    let queue = queue_subs_of(&f, Node::B)[0].0.clone();
    let headers = || {
        vec![
            ("Nmqtt-Pub".into(), "0".into()),
            ("Jetmq-Retain".into(), "1".into()),
        ]
    };
    f.b.input(Input::NatsMessage {
        subject: "jobs.r".into(),
        headers: headers(),
        payload: bytes::Bytes::from_static(b"new"),
    });
    f.b.input(Input::NatsQueueMessage {
        queue: queue.into(),
        subject: "jobs.r".into(),
        headers: headers(),
        payload: bytes::Bytes::from_static(b"old"),
    });
    let got = f.b.publishes(m);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, "old");
    let (late, _) = f.b.connect_ok(connect(V3, "late", true));
    f.b.subscribe_ok(late, 1, "jobs/#", QoS::AtMostOnce);
    let got = f.b.publishes(late);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].1.as_str(), got[0].3), ("new", true));
}

/// A member whose session ends with an unacknowledged message of its shared subscription, and
/// no other member on its node, hands the message to a member on the other node instead of
/// dropping it.
#[test]
fn a_leaving_members_message_goes_to_a_member_on_the_other_node() {
    let mut f = Fleet::new();
    let (m1, _) = f.on(Node::A).connect_ok(connect(V3, "m1", true));
    f.a.subscribe_ok(m1, 1, "$share/g/jobs/#", QoS::AtLeastOnce);
    let (m2, _) = f.on(Node::B).connect_ok(connect(V3, "m2", true));
    f.b.subscribe_ok(m2, 1, "$share/g/jobs/#", QoS::AtLeastOnce);
    f.carry(Node::B);
    publish_jobs(&mut f, 2);
    let on_a = f.a.publishes(m1);
    assert_eq!(on_a.len(), 1, "one job each: {on_a:?}");
    assert_eq!(f.b.publishes(m2).len(), 1);

    // m1 leaves without acknowledging its job; its session ends with it.
    f.a.input(Input::Closed { conn: m1 });
    let subjects = f.carry(Node::A);
    assert!(
        subjects.iter().any(|s| s.starts_with("$JETMQ.handover.")),
        "{subjects:?}"
    );
    let got = f.b.publishes(m2);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0.as_str(), got[0].2),
        (on_a[0].0.as_str(), QoS::AtLeastOnce)
    );
}

/// A handed-over message that reaches a node whose last member has just left is passed on
/// again, a few times at most, then counted as missed.
#[test]
fn a_handed_over_message_without_a_member_here_is_passed_on_a_few_times() {
    let mut f = Fleet::new();
    let (m, _) = f.on(Node::A).connect_ok(connect(V3, "m", true));
    f.a.subscribe_ok(m, 1, "$share/g/jobs/#", QoS::AtLeastOnce);
    f.take_queue_changes();
    let queue = queue_subs_of(&f, Node::A)[0].0.clone();
    f.a.input(Input::Closed { conn: m });
    f.a.nats.clear();
    let handover = |hops: &str| Input::NatsQueueMessage {
        queue: queue.clone().into(),
        subject: format!("$JETMQ.handover.{queue}.jobs.1").into(),
        headers: vec![
            ("Nmqtt-Pub".into(), "1".into()),
            ("Jetmq-Hops".into(), hops.into()),
        ],
        payload: bytes::Bytes::from_static(b"job"),
    };
    f.a.input(handover("1"));
    let passed: Vec<_> =
        f.a.nats
            .iter()
            .filter_map(|a| match a {
                Action::NatsPublish {
                    subject, headers, ..
                } => Some((subject.to_string(), headers.clone())),
                _ => None,
            })
            .collect();
    assert_eq!(passed.len(), 1, "{passed:?}");
    assert_eq!(passed[0].0, format!("$JETMQ.handover.{queue}.jobs.1"));
    assert!(passed[0]
        .1
        .iter()
        .any(|h| h.name == "Jetmq-Hops" && h.value == "2"));
    f.a.nats.clear();
    f.a.input(handover("3"));
    assert!(f.a.nats.is_empty(), "not passed on again");
    assert_eq!(f.a.broker.stats().share_messages_missed, 1);
}

/// One step of [`a_shared_subscription_delivers_each_job_once_per_member_turn`].
#[derive(Debug, Clone)]
enum ShareStep {
    /// A new member joins on node b (or a).
    Join { on_b: bool },
    /// The `n`th member still connected leaves (its session ends with its connection).
    Leave { n: usize },
    /// A job is published through node b (or a).
    Job { on_b: bool },
}

fn share_step() -> impl Strategy<Value = ShareStep> {
    prop_oneof![
        any::<bool>().prop_map(|on_b| ShareStep::Join { on_b }),
        (0..8usize).prop_map(|n| ShareStep::Leave { n }),
        any::<bool>().prop_map(|on_b| ShareStep::Job { on_b }),
        any::<bool>().prop_map(|on_b| ShareStep::Job { on_b }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the members joining and leaving on both nodes, and whatever node NATS picks,
    /// every job published while the group had a member reaches one, no member gets a job
    /// twice, and a job reaches a second member only after one that got it left without
    /// acknowledging it (members here never acknowledge).
    #[test]
    fn a_shared_subscription_delivers_each_job_once_per_member_turn(
        steps in prop::collection::vec(share_step(), 1..40),
    ) {
        let mut f = Fleet::new();
        let (pa, _) = f.on(Node::A).connect_ok(connect(V3, "pa", true));
        let (pb, _) = f.on(Node::B).connect_ok(connect(V3, "pb", true));
        // (node, connection, jobs received), for members in join order.
        let mut members: Vec<(Node, ConnId, Vec<String>, bool)> = Vec::new();
        let mut jobs = 0u16;
        // Jobs published while at least one member was connected, and the leaves that
        // happened after each member got its jobs.
        let mut wanted = Vec::new();
        let mut joined = 0;
        for step in steps {
            match step {
                ShareStep::Join { on_b } => {
                    let node = if on_b { Node::B } else { Node::A };
                    joined += 1;
                    let id = format!("m{joined}");
                    let (c, _) = f.on(node).connect_ok(connect(V3, &id, true));
                    f.node(node).subscribe_ok(c, 1, "$share/g/jobs/#", QoS::AtLeastOnce);
                    members.push((node, c, Vec::new(), true));
                }
                ShareStep::Leave { n } => {
                    let connected: Vec<usize> =
                        (0..members.len()).filter(|&i| members[i].3).collect();
                    if connected.is_empty() {
                        continue;
                    }
                    let i = connected[n % connected.len()];
                    let (node, c) = (members[i].0, members[i].1);
                    let got = f.node(node).publishes(c);
                    members[i].2.extend(got.into_iter().map(|m| m.0));
                    f.node(node).input(Input::Closed { conn: c });
                    members[i].3 = false;
                }
                ShareStep::Job { on_b } => {
                    jobs += 1;
                    let (node, p) = if on_b { (Node::B, pb) } else { (Node::A, pa) };
                    let topic = format!("jobs/{jobs}");
                    let job = publish(&topic, "job", PublishQos::AtLeastOnce(harness::pid(jobs)), false);
                    f.on(node).send(p, &job);
                    if members.iter().any(|m| m.3) {
                        wanted.push(topic);
                    }
                }
            }
            // NATS carries everything both ways before the next step.
            for _ in 0..3 {
                f.carry(Node::A);
                f.carry(Node::B);
            }
        }
        for m in members.iter_mut().filter(|m| m.3) {
            let got = f.node(m.0).publishes(m.1);
            m.2.extend(got.into_iter().map(|g| g.0));
        }
        for (_, _, got, _) in &members {
            let mut unique = got.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), got.len(), "a member got a job twice: {:?}", got);
        }
        let left = members.iter().filter(|m| !m.3).count();
        for topic in &wanted {
            let deliveries = members.iter().filter(|m| m.2.contains(topic)).count();
            prop_assert!(deliveries >= 1, "{} never arrived: {:?}", topic, members);
            prop_assert!(
                deliveries <= 1 + left,
                "{} reached {} members with {} leaves", topic, deliveries, left
            );
        }
    }
}

/// Two client identifiers whose session records share a subject (the NATS server's 8-character
/// hash collides for these two): the second is refused through any node, as the NATS server
/// refuses it, and the first one's stored session stays whole.
#[test]
fn a_client_id_whose_record_subject_is_taken_is_refused_on_every_node() {
    let (first, second) = ("cid-03579431", "cid-09191235");
    assert_eq!(records::client_hash(first), records::client_hash(second));
    let mut f = Fleet::new();
    let (s, _) = f.on(Node::A).connect_ok(connect(V3, first, false));
    f.a.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    f.a.input(Input::Closed { conn: s });
    for node in [Node::A, Node::B] {
        // 3.1.1: return code 2 (identifier rejected); 5.0: 0x85.
        for version in [V3, ProtocolVersion::V5] {
            let h = f.on(node);
            let c = h.connect(connect(version, second, false));
            match h.next_packet(c) {
                Some(Packet::ConnAck(ack)) => {
                    assert_eq!(
                        ack.reason,
                        jetmq_core::codec::ConnectReason::ClientIdentifierNotValid,
                        "{node:?} {version:?}"
                    );
                }
                other => panic!("{node:?}: expected a refusal, got {other:?}"),
            }
        }
    }
    // The first client's session is intact, through the other node too.
    let (s2, present) = f.on(Node::B).connect_ok(connect(V3, first, false));
    assert!(present);
    f.b.input(Input::Closed { conn: s2 });
    assert_eq!(
        stored_record(&mut f.b.store, first).map(|r| r.id),
        Some(first.to_string())
    );
}
