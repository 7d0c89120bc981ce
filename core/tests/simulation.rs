//! Deterministic simulation of the broker: seeded virtual clients (publishers and
//! subscribers, clean and persistent, QoS 0/1/2, MQTT 3.1.1 and 5.0) send real MQTT bytes in
//! random chunks, disconnect, reconnect and take each other over, while a fake store answers
//! late, out of order, fails and times out. After every step the invariants are checked, and
//! after a final drain every acknowledged message must have reached every persistent
//! subscriber that was subscribed before it.
//!
//! `JETMQ_SIM_SEEDS=N` runs N seeds (default 1000); `JETMQ_SIM_SEED=S` runs seed S alone.

mod harness;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::BytesMut;
use harness::{connect, pid, Harness};
use jetmq_core::broker::{BrokerConfig, ConnId, Input};
use jetmq_core::codec::{
    Ack, Disconnect, DisconnectReason, Packet, PacketId, ProtocolVersion, Publish, PublishQos, QoS,
};
use jetmq_core::js::StoreError;
use jetmq_core::rng::Rng;
use jetmq_core::topic::{TopicFilter, TopicName};

const TOPICS: [&str; 4] = ["a", "a/b", "b", "a/b/c"];
const FILTERS: [&str; 4] = ["a", "a/#", "#", "+/b"];

/// A message a simulated client published.
#[derive(Debug, Clone)]
struct Sent {
    topic: &'static str,
    qos: QoS,
    publisher: usize,
    /// The publisher's sequence number, for order checks.
    seq: u64,
    /// Whether the broker acknowledged it (PUBACK, or PUBREC for QoS 2).
    acked: bool,
    /// Whether the broker restarted while it was unacknowledged. Its resend may then be
    /// delivered a second time: the message write and the QoS 2 record are two writes, and a
    /// crash between them can duplicate (never lose) the message.
    crash_window: bool,
}

/// The acknowledgement a simulated publisher waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
enum OutState {
    AwaitAck,
    AwaitRec,
    AwaitComp,
}

#[derive(Debug)]
struct SimClient {
    id: String,
    version: ProtocolVersion,
    persistent: bool,
    conn: Option<ConnId>,
    connected: bool,
    /// Bytes encoded but not yet handed to the broker (sent in random chunks).
    pending: BytesMut,
    next_pid: u16,
    /// Own publishes in flight: pid → (message id, state).
    outgoing: BTreeMap<u16, (u64, OutState)>,
    /// QoS 2 identifiers received and not yet released by PUBREL.
    inbound_qos2: BTreeSet<u16>,
    /// Topic aliases the broker bound on the current connection (MQTT 5.0).
    aliases: BTreeMap<u16, String>,
    /// Deliveries that came with only a topic alias.
    aliased: u64,
    /// Identifiers of QoS 1/2 deliveries not yet acknowledged by this client.
    unacked: BTreeSet<u16>,
    /// Acknowledgements this client will send later.
    acks: VecDeque<Packet>,
    /// The subscription (filter, granted QoS) once its SUBACK arrived, and the messages
    /// acknowledged before that (which it may miss).
    subscription: Option<(&'static str, QoS)>,
    subscribe_sent: bool,
    /// Where the SUBSCRIBE ends in `pending`, until its last byte reaches the broker.
    subscribe_end: Option<usize>,
    /// Message ids received (application deliveries, duplicates removed).
    received: BTreeSet<u64>,
    /// Last sequence seen per publisher per topic.
    last_seq: BTreeMap<(usize, &'static str), u64>,
    seq: u64,
}

struct Sim {
    h: Harness,
    rng: Rng,
    clients: Vec<SimClient>,
    sent: BTreeMap<u64, Sent>,
    next_msg: u64,
    /// For each subscriber, the messages it need not get: those published before its
    /// subscription took effect (or acknowledged in the same input).
    acked_before_sub: BTreeMap<usize, BTreeSet<u64>>,
    seed: u64,
    config: BrokerConfig,
    restarts: u64,
}

fn payload(id: u64, seq: u64) -> String {
    format!("{id}:{seq}")
}

fn parse_payload(p: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(p).ok()?;
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let config = BrokerConfig {
            max_inflight: 1 + (rng.next_u64() % 8) as u16,
            max_queued_messages: 100_000,
            max_queued_bytes: usize::MAX,
            fanout_budget: 1 + (rng.next_u64() % 6) as usize,
            store_timeout: Duration::from_secs(5),
            ..BrokerConfig::default()
        };
        let mut h = Harness::with_seed(config.clone(), seed);
        h.auto_store = false;
        h.start_recording(config.clone(), seed);
        let n = 3 + (rng.next_u64() % 4) as usize;
        let clients = (0..n)
            .map(|i| SimClient {
                id: format!("c{i}"),
                version: if rng.next_u64() % 2 == 0 {
                    ProtocolVersion::V311
                } else {
                    ProtocolVersion::V5
                },
                persistent: rng.next_u64() % 2 == 0,
                conn: None,
                connected: false,
                pending: BytesMut::new(),
                next_pid: 0,
                outgoing: BTreeMap::new(),
                inbound_qos2: BTreeSet::new(),
                aliases: BTreeMap::new(),
                aliased: 0,
                unacked: BTreeSet::new(),
                acks: VecDeque::new(),
                subscription: None,
                subscribe_sent: false,
                subscribe_end: None,
                received: BTreeSet::new(),
                last_seq: BTreeMap::new(),
                seq: 0,
            })
            .collect();
        Self {
            h,
            rng,
            clients,
            sent: BTreeMap::new(),
            next_msg: 0,
            acked_before_sub: BTreeMap::new(),
            seed,
            config,
            restarts: 0,
        }
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.next_u64() % 100 < percent
    }

    fn encode(&mut self, i: usize, packet: &Packet) {
        let c = &mut self.clients[i];
        packet.encode(c.version, &mut c.pending);
    }

    /// Hands a random prefix (or all) of a client's pending bytes to the broker.
    fn flush_bytes(&mut self, i: usize, all: bool) {
        let len = self.clients[i].pending.len();
        if len == 0 {
            return;
        }
        let take = if all { len } else { 1 + self.pick(len) };
        let Some(conn) = self.clients[i].conn else {
            self.clients[i].pending.clear();
            return;
        };
        let mut subscribing = false;
        if let Some(end) = self.clients[i].subscribe_end {
            if take >= end {
                // The broker processes the SUBSCRIBE during this input. A message published
                // before may reach the subscription or not, as MQTT allows: one acknowledged
                // already was routed before it existed; one still waiting for its store
                // writes may have been stored before the subscription's consumer changed
                // (then a restart loses the copy routed from memory later), or have its QoS 2
                // record written before a restart (then its resend is only acknowledged).
                let before: BTreeSet<u64> = self.sent.keys().copied().collect();
                self.acked_before_sub.insert(i, before);
                self.clients[i].subscribe_end = None;
                subscribing = true;
            } else {
                self.clients[i].subscribe_end = Some(end - take);
            }
        }
        let chunk = self.clients[i].pending.split_to(take);
        if std::env::var_os("JETMQ_SIM_TRACE").is_some() {
            eprintln!("  client {i} sends {take} of {len} bytes");
        }
        self.h.input(Input::Received { conn, data: chunk });
        self.absorb();
        if subscribing {
            // Publishes acknowledged during the same input may have been routed just before
            // the SUBSCRIBE in the same bytes: either order is right, so neither is required.
            let during = self.acked_ids();
            self.acked_before_sub.entry(i).or_default().extend(during);
        }
    }

    /// The messages acknowledged to their publishers so far.
    fn acked_ids(&self) -> Vec<u64> {
        self.sent
            .iter()
            .filter(|(_, s)| s.acked)
            .map(|(id, _)| *id)
            .collect()
    }

    fn connect(&mut self, i: usize) {
        let c = &self.clients[i];
        let mut packet = connect(c.version, &c.id, !c.persistent);
        if c.version == ProtocolVersion::V5 && c.persistent {
            packet.properties.session_expiry_interval = Some(u32::MAX);
        }
        if c.version == ProtocolVersion::V5 {
            // Fewer aliases than topics, so the broker rebinds them.
            packet.properties.topic_alias_maximum = Some(2);
        }
        let conn = self.h.open(c.version);
        let c = &mut self.clients[i];
        c.conn = Some(conn);
        c.connected = false;
        c.pending.clear();
        c.subscribe_end = None;
        c.inbound_qos2.clear();
        c.aliases.clear();
        c.unacked.clear();
        c.acks.clear();
        self.encode(i, &Packet::Connect(Box::new(packet)));
        self.flush_bytes(i, true);
    }

    fn drop_connection(&mut self, i: usize, graceful: bool) {
        let Some(conn) = self.clients[i].conn else {
            return;
        };
        if graceful && self.clients[i].connected {
            self.encode(
                i,
                &Packet::Disconnect(Box::new(Disconnect::new(
                    DisconnectReason::NormalDisconnection,
                ))),
            );
            self.flush_bytes(i, true);
        }
        self.h.input(Input::Closed { conn });
        self.absorb();
        self.lose_connection(i);
    }

    fn lose_connection(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.conn = None;
        c.connected = false;
        c.pending.clear();
        c.subscribe_end = None;
        if !c.persistent {
            // A clean session forgets its in-flight publishes and its subscription.
            c.outgoing.clear();
            c.subscription = None;
            c.subscribe_sent = false;
        }
    }

    fn publish(&mut self, i: usize) {
        let topic = TOPICS[self.pick(TOPICS.len())];
        let qos = QoS::from_u8((self.rng.next_u64() % 3) as u8).unwrap_or(QoS::AtMostOnce);
        let c = &mut self.clients[i];
        c.seq += 1;
        self.next_msg += 1;
        let id = self.next_msg;
        let body = payload(id, c.seq);
        let qos_pid = match qos {
            QoS::AtMostOnce => PublishQos::AtMostOnce,
            _ => {
                let mut p = c.next_pid;
                loop {
                    p = if p == u16::MAX { 1 } else { p + 1 };
                    if !c.outgoing.contains_key(&p) {
                        break;
                    }
                }
                c.next_pid = p;
                let state = if qos == QoS::AtLeastOnce {
                    OutState::AwaitAck
                } else {
                    OutState::AwaitRec
                };
                c.outgoing.insert(p, (id, state));
                if qos == QoS::AtLeastOnce {
                    PublishQos::AtLeastOnce(pid(p))
                } else {
                    PublishQos::ExactlyOnce(pid(p))
                }
            }
        };
        let seq = self.clients[i].seq;
        if std::env::var_os("JETMQ_SIM_TRACE").is_some() {
            eprintln!("  client {i} publishes message {id} on {topic} {qos:?} {qos_pid:?}");
        }
        self.sent.insert(
            id,
            Sent {
                topic,
                qos,
                publisher: i,
                seq,
                acked: false,
                crash_window: false,
            },
        );
        let mut p = Publish::new(topic.into(), body.into_bytes().into());
        p.qos = qos_pid;
        self.encode(i, &Packet::Publish(p));
    }

    /// Re-sends a persistent client's unfinished publishes after its session was resumed.
    fn resend(&mut self, i: usize) {
        let outgoing: Vec<(u16, (u64, OutState))> = self.clients[i]
            .outgoing
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        for (p, (id, state)) in outgoing {
            let Some(sent) = self.sent.get(&id).cloned() else {
                continue;
            };
            let packet = match state {
                OutState::AwaitComp => Packet::PubRel(Ack::new(pid(p))),
                _ => {
                    let mut publish =
                        Publish::new(sent.topic.into(), payload(id, sent.seq).into_bytes().into());
                    publish.dup = true;
                    publish.qos = if sent.qos == QoS::AtLeastOnce {
                        PublishQos::AtLeastOnce(pid(p))
                    } else {
                        PublishQos::ExactlyOnce(pid(p))
                    };
                    Packet::Publish(publish)
                }
            };
            self.encode(i, &packet);
        }
    }

    /// Reads what the broker sent to every client and reacts like a real client would.
    fn absorb(&mut self) {
        for i in 0..self.clients.len() {
            let Some(conn) = self.clients[i].conn else {
                continue;
            };
            if let Some(err) = self
                .h
                .clients
                .get(&conn)
                .and_then(|c| c.decode_error.clone())
            {
                panic!(
                    "seed {}: client {i} could not decode what the broker sent: {err}",
                    self.seed
                );
            }
            let packets = self.h.packets(conn);
            for packet in packets {
                self.on_packet(i, packet);
            }
            if self.h.closed(conn).is_some() {
                self.lose_connection(i);
            }
        }
    }

    fn on_packet(&mut self, i: usize, packet: Packet) {
        let seed = self.seed;
        if std::env::var_os("JETMQ_SIM_TRACE").is_some() {
            eprintln!("  client {i} <- {packet:?}");
        }
        match packet {
            Packet::ConnAck(ack) => {
                assert!(!self.clients[i].connected, "seed {seed}: second CONNACK");
                if ack.reason.is_error() {
                    return;
                }
                self.clients[i].connected = true;
                let c = &mut self.clients[i];
                if !ack.session_present {
                    c.outgoing.clear();
                    c.subscription = None;
                    c.subscribe_sent = false;
                }
                if c.persistent && ack.session_present {
                    self.resend(i);
                }
            }
            Packet::SubAck(ack) => {
                let granted = match ack.reasons.first() {
                    Some(jetmq_core::codec::SubAckReason::GrantedQos1) => QoS::AtLeastOnce,
                    Some(jetmq_core::codec::SubAckReason::GrantedQos2) => QoS::ExactlyOnce,
                    _ => QoS::AtMostOnce,
                };
                let filter = FILTERS[(ack.packet_id.get() as usize) % FILTERS.len()];
                self.clients[i].subscription = Some((filter, granted));
            }
            Packet::Publish(p) => {
                let c = &mut self.clients[i];
                let Some((id, seq)) = parse_payload(&p.payload) else {
                    panic!("seed {seed}: unexpected payload");
                };
                // Topic aliases resolve to the topic the message was published on.
                let alias = p.properties().topic_alias.map(std::num::NonZeroU16::get);
                let topic = match alias {
                    Some(a) if p.topic.is_empty() => {
                        c.aliased += 1;
                        c.aliases.get(&a).cloned().unwrap_or_else(|| {
                            panic!("seed {seed}: client {i}: alias {a} used before it was bound")
                        })
                    }
                    Some(a) => {
                        c.aliases.insert(a, p.topic.to_string());
                        p.topic.to_string()
                    }
                    None => p.topic.to_string(),
                };
                if let Some(sent) = self.sent.get(&id) {
                    assert_eq!(
                        topic, sent.topic,
                        "seed {seed}: client {i}: message {id} topic"
                    );
                }
                let c = &mut self.clients[i];
                let mut duplicate = false;
                match p.qos {
                    PublishQos::AtMostOnce => {}
                    PublishQos::AtLeastOnce(pid) | PublishQos::ExactlyOnce(pid) => {
                        // [MQTT-2.3.1-4]: a new message never reuses an identifier in flight.
                        if !p.dup {
                            assert!(
                                !c.unacked.contains(&pid.get()),
                                "seed {seed}: client {i}: packet id {} reused while in flight",
                                pid.get()
                            );
                        }
                        c.unacked.insert(pid.get());
                        if let PublishQos::ExactlyOnce(_) = p.qos {
                            duplicate = !c.inbound_qos2.insert(pid.get());
                            c.acks.push_back(Packet::PubRec(Ack::new(pid)));
                        } else {
                            c.acks.push_back(Packet::PubAck(Ack::new(pid)));
                        }
                    }
                }
                if duplicate {
                    return;
                }
                let sent = self
                    .sent
                    .get(&id)
                    .cloned()
                    .expect("a message the simulation sent");
                let first = c.received.insert(id);
                if p.qos.level() == QoS::ExactlyOnce && !sent.crash_window {
                    assert!(
                        first || p.dup,
                        "seed {seed}: client {i}: QoS 2 message {id} delivered twice"
                    );
                }
                // Messages unacknowledged at a restart may come back in any order: the store
                // can hold a later one whose earlier sibling needed no write.
                if first && !p.retain && !sent.crash_window {
                    let key = (sent.publisher, sent.topic);
                    let last = c.last_seq.insert(key, seq).unwrap_or(0);
                    assert!(
                        seq > last,
                        "seed {seed}: client {i}: message {seq} from {} on {} after {last}",
                        sent.publisher,
                        sent.topic
                    );
                }
            }
            Packet::PubRel(ack) => {
                let c = &mut self.clients[i];
                c.inbound_qos2.remove(&ack.packet_id.get());
                c.unacked.remove(&ack.packet_id.get());
                c.acks.push_back(Packet::PubComp(Ack::new(ack.packet_id)));
            }
            Packet::PubAck(ack) => {
                self.on_ack(i, ack.packet_id, OutState::AwaitAck, ack.reason.is_error())
            }
            Packet::PubRec(ack) => {
                self.on_ack(i, ack.packet_id, OutState::AwaitRec, ack.reason.is_error())
            }
            Packet::PubComp(ack) => {
                self.clients[i].outgoing.remove(&ack.packet_id.get());
            }
            Packet::Disconnect(_) | Packet::UnsubAck(_) | Packet::PingResp => {}
            other => panic!("seed {seed}: client {i} got {other:?}"),
        }
    }

    fn on_ack(&mut self, i: usize, p: PacketId, expected: OutState, failed: bool) {
        let Some((id, state)) = self.clients[i].outgoing.get(&p.get()).copied() else {
            return;
        };
        if state != expected {
            return;
        }
        if failed {
            self.clients[i].outgoing.remove(&p.get());
            return;
        }
        if let Some(s) = self.sent.get_mut(&id) {
            s.acked = true;
        }
        if expected == OutState::AwaitRec {
            self.clients[i]
                .outgoing
                .insert(p.get(), (id, OutState::AwaitComp));
            self.encode(i, &Packet::PubRel(Ack::new(p)));
        } else {
            self.clients[i].outgoing.remove(&p.get());
        }
    }

    fn send_acks(&mut self, i: usize, all: bool) {
        let n = self.clients[i].acks.len();
        let count = if all { n } else { self.pick(n + 1) };
        for _ in 0..count {
            let Some(ack) = self.clients[i].acks.pop_front() else {
                break;
            };
            match &ack {
                Packet::PubAck(a) => {
                    self.clients[i].unacked.remove(&a.packet_id.get());
                }
                Packet::PubComp(a) => {
                    self.clients[i].unacked.remove(&a.packet_id.get());
                }
                _ => {}
            }
            self.encode(i, &ack);
        }
    }

    fn step(&mut self) {
        let i = self.pick(self.clients.len());
        let what = self.pick(100);
        if std::env::var_os("JETMQ_SIM_TRACE").is_some() {
            eprintln!(
                "step: client {i} action {what} conn {:?} connected {}",
                self.clients[i].conn, self.clients[i].connected
            );
        }
        match what {
            0..=9 => {
                if self.clients[i].conn.is_none() {
                    self.connect(i);
                } else if self.chance(30) {
                    // Takeover: a new connection with the same client identifier.
                    self.connect(i);
                }
            }
            10..=17 => {
                if self.clients[i].connected && !self.clients[i].subscribe_sent {
                    let f = self.pick(FILTERS.len());
                    let qos =
                        QoS::from_u8((self.rng.next_u64() % 3) as u8).unwrap_or(QoS::AtMostOnce);
                    self.clients[i].subscribe_sent = true;
                    // The packet id tells the SUBACK handler which filter it was.
                    self.encode(i, &harness::subscribe(f as u16 + 4, FILTERS[f], qos));
                    self.clients[i].subscribe_end = Some(self.clients[i].pending.len());
                }
            }
            18..=44 => {
                if self.clients[i].connected {
                    self.publish(i);
                }
            }
            45..=64 => self.flush_bytes(i, false),
            65..=79 => self.send_acks(i, false),
            80..=84 => {
                let graceful = self.chance(50);
                self.drop_connection(i, graceful);
            }
            85..=94 => self.store_step(),
            95 if self.chance(40) => self.restart(),
            _ => {
                let ms = self.pick(3000) as u64;
                self.h.advance(Duration::from_millis(ms));
                self.absorb();
            }
        }
        if self.h.wants_continue {
            self.h.input(Input::Continue);
            self.absorb();
        }
        self.check_bounds();
    }

    /// The broker process dies and starts again on the same store: replies not yet delivered
    /// are lost, every connection drops, and the new broker restores what the store holds.
    fn restart(&mut self) {
        if std::env::var_os("JETMQ_SIM_TRACE").is_some() {
            eprintln!("  restart");
        }
        self.restarts += 1;
        self.check_replay();
        self.h.held.clear();
        for sent in self.sent.values_mut() {
            sent.crash_window |= !sent.acked;
        }
        let records = self.h.store.records();
        self.h
            .new_broker(self.config.clone(), self.seed ^ (self.restarts << 32));
        for i in 0..self.clients.len() {
            self.lose_connection(i);
        }
        for record in records {
            self.h.input(Input::Restored(record));
        }
        self.h.input(Input::RestoreComplete);
    }

    /// The recording of the current broker's life replays to the same actions.
    fn check_replay(&self) {
        let Some(recording) = &self.h.recording else {
            return;
        };
        match jetmq_core::replay::replay(recording) {
            Ok(jetmq_core::replay::ReplayReport::Identical {
                truncated: false, ..
            }) => {}
            other => panic!("seed {}: replay differs: {other:?}", self.seed),
        }
    }

    fn store_step(&mut self) {
        if self.h.held.is_empty() {
            return;
        }
        let index = self.pick(self.h.held.len());
        let fail = match self.pick(100) {
            0..=9 => Some(StoreError::Unavailable("simulated".into())),
            10..=14 => Some(StoreError::Timeout),
            _ => None,
        };
        if std::env::var_os("JETMQ_SIM_TRACE").is_some() {
            eprintln!(
                "  store completes {:?} with {fail:?}",
                self.h.held.get(index).map(|(id, r, _)| (id, r))
            );
        }
        if fail.is_some() {
            self.failing_message(index);
        }
        self.h.complete_held(index, fail);
        self.absorb();
    }

    /// A message's store write (held at `index`) is about to fail: its publisher is refused
    /// (a 3.1.1 publisher loses its connection) and sends it again, while the messages it sent
    /// after it may have been stored and go out before the resend. So, as at a restart, its
    /// publisher's unacknowledged messages may come twice and out of order.
    fn failing_message(&mut self, index: usize) {
        let Some((
            _,
            jetmq_core::js::StoreRequest::Publish {
                stream, payload, ..
            },
            _,
        )) = self.h.held.get(index)
        else {
            return;
        };
        if *stream != jetmq_core::js::Stream::Messages {
            return;
        }
        let Some(publisher) = parse_payload(payload)
            .and_then(|(id, _)| self.sent.get(&id))
            .map(|s| s.publisher)
        else {
            return;
        };
        for sent in self.sent.values_mut() {
            if sent.publisher == publisher {
                sent.crash_window |= !sent.acked;
            }
        }
    }

    fn check_bounds(&self) {
        for c in &self.clients {
            if let Some((inflight, queued, _)) = self.h.broker.session_backlog(&c.id) {
                assert!(
                    inflight <= usize::from(self.config.max_inflight),
                    "seed {}: window exceeded",
                    self.seed
                );
                assert!(
                    queued <= self.config.max_queued_messages,
                    "seed {}: queue bound exceeded",
                    self.seed
                );
            }
        }
    }

    /// Lets everything settle: the store answers, every client connects and acknowledges.
    fn drain(&mut self) {
        self.h.auto_store = true;
        self.h.complete_all_held();
        self.absorb();
        // A deep queue behind a window of one takes two rounds per QoS 2 message.
        for round in 0..2000 {
            for i in 0..self.clients.len() {
                if self.clients[i].conn.is_none() {
                    self.connect(i);
                }
                self.send_acks(i, true);
                self.flush_bytes(i, true);
            }
            if self.h.wants_continue {
                self.h.input(Input::Continue);
            }
            self.h.advance(Duration::from_millis(100));
            self.absorb();
            let idle = self
                .clients
                .iter()
                .all(|c| c.connected && c.acks.is_empty() && c.pending.is_empty())
                && !self.h.wants_continue;
            if idle && round > 3 {
                return;
            }
        }
        let states: Vec<String> = self
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "client {i}: conn {:?} connected {} acks {:?} pending {:?}",
                    c.conn, c.connected, c.acks, c.pending
                )
            })
            .collect();
        panic!(
            "seed {}: the simulation did not settle:\n{}",
            self.seed,
            states.join("\n")
        );
    }

    /// No acknowledged QoS ≥ 1 message is lost for a persistent subscriber; returns how many
    /// (subscriber, message) pairs were checked.
    fn check_delivery(&self) -> u64 {
        let mut checked = 0;
        for (i, c) in self.clients.iter().enumerate() {
            let Some((filter, granted)) = c.subscription else {
                continue;
            };
            if !c.persistent || granted == QoS::AtMostOnce {
                continue;
            }
            let filter = TopicFilter::try_from(filter).expect("valid filter");
            let before = self.acked_before_sub.get(&i).cloned().unwrap_or_default();
            for (id, s) in &self.sent {
                if !s.acked || s.qos == QoS::AtMostOnce || before.contains(id) {
                    continue;
                }
                let topic = TopicName::try_from(s.topic).expect("valid topic");
                if filter.matches(&topic) {
                    checked += 1;
                    assert!(
                        c.received.contains(id),
                        "seed {}: persistent client {i} ({:?}) never received acknowledged message {id} on {} (QoS {:?})",
                        self.seed, c.version, s.topic, s.qos
                    );
                }
            }
        }
        assert_eq!(
            self.h.broker.stats().dropped_queue_full,
            0,
            "seed {}",
            self.seed
        );
        checked
    }
}

/// What one seed exercised, so the suite can show it tests something.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    checked_deliveries: u64,
    acked_qos2: u64,
    store_failures: u64,
    takeovers: u64,
    restarts: u64,
    aliased_deliveries: u64,
}

fn run(seed: u64) -> Coverage {
    let mut sim = Sim::new(seed);
    let steps = 300 + (seed % 300) as usize;
    for _ in 0..steps {
        sim.step();
    }
    sim.drain();
    sim.check_replay();
    let checked_deliveries = sim.check_delivery();
    let stats = sim.h.broker.stats();
    Coverage {
        checked_deliveries,
        acked_qos2: sim
            .sent
            .values()
            .filter(|s| s.acked && s.qos == QoS::ExactlyOnce)
            .count() as u64,
        store_failures: stats.store_failures,
        aliased_deliveries: sim.clients.iter().map(|c| c.aliased).sum(),
        takeovers: sim
            .h
            .clients
            .values()
            .filter(|c| c.closed == Some(jetmq_core::broker::CloseReason::SessionTakenOver))
            .count() as u64,
        restarts: sim.restarts,
    }
}

#[test]
fn simulation_seeds() {
    if let Ok(seed) = std::env::var("JETMQ_SIM_SEED") {
        let coverage = run(seed.parse().expect("JETMQ_SIM_SEED is a number"));
        eprintln!("{coverage:?}");
        return;
    }
    let seeds: u64 = std::env::var("JETMQ_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut total = Coverage::default();
    for seed in 0..seeds {
        match std::panic::catch_unwind(|| run(seed)) {
            Ok(c) => {
                total.checked_deliveries += c.checked_deliveries;
                total.acked_qos2 += c.acked_qos2;
                total.store_failures += c.store_failures;
                total.takeovers += c.takeovers;
                total.restarts += c.restarts;
                total.aliased_deliveries += c.aliased_deliveries;
            }
            Err(panic) => {
                eprintln!(
                    "simulation failed for seed {seed}; reproduce with:\n  JETMQ_SIM_SEED={seed} cargo test -p jetmq-core --test simulation -- --nocapture"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!("{seeds} seeds: {total:?}");
    if seeds >= 100 {
        // The seeds must exercise what the invariants are about.
        // (Messages a restart caught unacknowledged are not checked: about 0.9 per seed are.)
        assert!(total.checked_deliveries > seeds / 2, "{total:?}");
        assert!(total.acked_qos2 > seeds / 2, "{total:?}");
        assert!(total.store_failures > seeds / 10, "{total:?}");
        assert!(total.takeovers > seeds / 10, "{total:?}");
        assert!(total.restarts > seeds / 10, "{total:?}");
        assert!(total.aliased_deliveries > seeds, "{total:?}");
    }
}
