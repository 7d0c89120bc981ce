//! Test harness for the broker: virtual clients speaking real MQTT bytes through the codec, a
//! virtual clock, and an in-memory store with JetStream semantics that can answer at once or
//! hold requests so tests complete them late, out of order or with errors.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use jetmq_core::broker::{
    Action, AuthRequest, Broker, BrokerConfig, CloseReason, ConnId, ConnInfo, Input, ListenerKind,
    Notice, Outbox,
};
use jetmq_core::codec::{
    Connect, Decoder, Direction, Packet, PacketId, ProtocolVersion, Publish, PublishQos, QoS,
    Subscribe, SubscriptionOptions,
};
use jetmq_core::js::memory::MemoryStore;
use jetmq_core::js::{RequestId, StoreError, StoreReply, StoreRequest};
use jetmq_core::time::{Now, Timestamp, WallClock};

/// What one virtual client has seen.
#[derive(Debug)]
pub struct ClientView {
    pub version: ProtocolVersion,
    decoder: Decoder,
    buf: BytesMut,
    pub received: VecDeque<Packet>,
    pub closed: Option<CloseReason>,
    pub decode_error: Option<String>,
    /// Bytes the broker sent to this client, in all.
    pub sent_bytes: usize,
    /// Bytes sent and not yet read, for a client that reads its socket at its own pace (see
    /// [`Harness::hold_reads`] and [`Harness::read`]).
    pub unread: BytesMut,
    hold_reads: bool,
}

impl ClientView {
    /// Decodes the packets complete in what was read.
    fn decode(&mut self) {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(p)) => self.received.push_back(p),
                Ok(None) => break,
                Err(e) => {
                    self.decode_error = Some(e.to_string());
                    break;
                }
            }
        }
    }
}

/// The broker with virtual clients, clock and store.
pub struct Harness {
    pub broker: Broker,
    pub now: Now,
    pub out: Outbox,
    pub clients: BTreeMap<ConnId, ClientView>,
    pub store: MemoryStore,
    /// Answer store requests at once (true) or hold their replies in `held`. Either way the
    /// store applies each request when it is emitted, in order, as a real store does; only
    /// the replies come late, out of order or as failures.
    pub auto_store: bool,
    pub held: VecDeque<(RequestId, StoreRequest, Result<StoreReply, StoreError>)>,
    pub auth_requests: Vec<AuthRequest>,
    pub notices: Vec<Notice>,
    /// Connections the broker asked not to read from (until it asks again).
    pub paused: std::collections::BTreeSet<ConnId>,
    /// NATS bridge actions, in order.
    pub nats: Vec<Action>,
    pub wants_continue: bool,
    /// Every input since `start_recording`, in the replay format.
    pub recording: Option<Vec<u8>>,
    /// Connections opened while this is set leave what the broker sends them unread until
    /// [`read`](Self::read) (default: every byte is read and decoded at once).
    pub hold_reads: bool,
    next_conn: u64,
}

pub fn conn_info() -> ConnInfo {
    ConnInfo {
        peer: "127.0.0.1:40000".into(),
        listener: ListenerKind::Test,
        tls_identity: None,
    }
}

pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero packet id")
}

/// A CONNECT for `client_id`.
pub fn connect(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    let mut c = Connect::new(version, client_id.into());
    c.clean_start = clean_start;
    c.keep_alive = 0;
    c
}

/// A SUBSCRIBE for one filter.
pub fn subscribe(id: u16, filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: Default::default(),
        filters: vec![(filter.into(), SubscriptionOptions::new(qos))],
    })
}

/// A PUBLISH.
pub fn publish(topic: &str, payload: &str, qos: PublishQos, retain: bool) -> Packet {
    let mut p = Publish::new(topic.into(), Bytes::copy_from_slice(payload.as_bytes()));
    p.qos = qos;
    p.retain = retain;
    Packet::Publish(p)
}

impl Harness {
    pub fn new(config: BrokerConfig) -> Self {
        Self::with_seed(config, 7)
    }

    pub fn with_seed(config: BrokerConfig, seed: u64) -> Self {
        let now = Now::new(
            Timestamp::from_nanos(1_000_000_000),
            WallClock::from_unix_millis(1_700_000_000_000),
        );
        Self {
            broker: Broker::new(config, seed, now),
            now,
            out: Outbox::new(),
            clients: BTreeMap::new(),
            store: MemoryStore::default(),
            auto_store: true,
            held: VecDeque::new(),
            auth_requests: Vec::new(),
            notices: Vec::new(),
            paused: std::collections::BTreeSet::new(),
            nats: Vec::new(),
            wants_continue: false,
            recording: None,
            hold_reads: false,
            next_conn: 0,
        }
    }

    /// Feeds one input and carries out the actions.
    pub fn input(&mut self, input: Input) {
        self.feed(input);
        self.process();
    }

    /// Hands one input to the broker, recording it when a recording is on.
    fn feed(&mut self, input: Input) {
        let encoded = self
            .recording
            .as_ref()
            .map(|_| jetmq_core::replay::encode_input(&input));
        let before = self.out.len();
        self.broker.handle(self.now, input, &mut self.out);
        if let (Some(recording), Some(input)) = (self.recording.as_mut(), encoded) {
            let digest = jetmq_core::replay::actions_digest(&self.out.actions()[before..]);
            jetmq_core::replay::encode_step(self.now, &input, digest, recording);
        }
    }

    /// Replaces the broker with a new one (a restart) and starts recording it from scratch.
    pub fn new_broker(&mut self, config: BrokerConfig, seed: u64) {
        self.broker = Broker::new(config.clone(), seed, self.now);
        if self.recording.is_some() {
            self.start_recording(config, seed);
        }
    }

    /// Records every input from now on, for a broker created now with `config` and `seed`.
    pub fn start_recording(&mut self, config: BrokerConfig, seed: u64) {
        let mut recording = Vec::new();
        jetmq_core::replay::encode_header(
            &jetmq_core::replay::RecordHeader {
                seed,
                config,
                start: self.now,
            },
            &mut recording,
        );
        self.recording = Some(recording);
    }

    fn process(&mut self) {
        let mut wants_continue = false;
        loop {
            wants_continue |= self.out.wants_continue;
            self.wants_continue = wants_continue;
            let actions: Vec<Action> = self.out.drain().collect();
            if actions.is_empty() {
                return;
            }
            let mut replies = Vec::new();
            for action in actions {
                match action {
                    Action::Send { conn, bytes } => {
                        if let Some(c) = self.clients.get_mut(&conn) {
                            assert!(c.closed.is_none(), "bytes sent after close to {conn:?}");
                            c.sent_bytes += bytes.len();
                            if c.hold_reads {
                                c.unread.extend_from_slice(&bytes);
                            } else {
                                c.buf.extend_from_slice(&bytes);
                                c.decode();
                            }
                        }
                    }
                    Action::Close { conn, reason } => {
                        if let Some(c) = self.clients.get_mut(&conn) {
                            c.closed = Some(reason);
                        }
                    }
                    Action::PauseRead { conn } => {
                        if std::env::var_os("JETMQ_SIM_TRACE").is_some() {
                            eprintln!("  broker pauses {conn:?}");
                        }
                        self.paused.insert(conn);
                    }
                    Action::ResumeRead { conn } => {
                        if std::env::var_os("JETMQ_SIM_TRACE").is_some() {
                            eprintln!("  broker resumes {conn:?}");
                        }
                        self.paused.remove(&conn);
                    }
                    Action::Authenticate(req) => self.auth_requests.push(*req),
                    Action::Store { id, request } => {
                        let reply = self.store.execute(&request);
                        if self.auto_store {
                            replies.push((id, reply));
                        } else {
                            self.held.push_back((id, request, reply));
                        }
                    }
                    Action::Notice(n) => self.notices.push(n),
                    a @ (Action::NatsPublish { .. }
                    | Action::NatsSubscribe { .. }
                    | Action::NatsUnsubscribe { .. }
                    | Action::NatsQueueSubscribe { .. }
                    | Action::NatsQueueUnsubscribe { .. }) => self.nats.push(a),
                }
            }
            for (id, reply) in replies {
                self.feed(Input::Stored { id, reply });
            }
        }
    }

    /// Delivers the held reply at `index`, or `fail` instead (the write may have been
    /// applied all the same, which the broker must cope with).
    pub fn complete_held(&mut self, index: usize, fail: Option<StoreError>) {
        let Some((id, _request, reply)) = self.held.remove(index) else {
            return;
        };
        let reply = match fail {
            Some(e) => Err(e),
            None => reply,
        };
        self.input(Input::Stored { id, reply });
    }

    /// Completes every held request in order.
    pub fn complete_all_held(&mut self) {
        while !self.held.is_empty() {
            self.complete_held(0, None);
        }
    }

    /// A new broker (default configuration) on this harness's store, taken from it and
    /// restored from what it holds, as after a crash of this broker.
    pub fn restarted(&mut self) -> Harness {
        let records = self.store.records();
        let mut next = Harness::new(BrokerConfig::default());
        next.store = std::mem::take(&mut self.store);
        for r in records {
            next.input(Input::Restored(r));
        }
        next.input(Input::RestoreComplete);
        next
    }

    /// Opens a connection and returns its id (no CONNECT yet).
    pub fn open(&mut self, version: ProtocolVersion) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId::new(self.next_conn).expect("non-zero");
        let mut decoder = Decoder::new(Direction::FromServer, 0);
        decoder.set_version(version);
        self.clients.insert(
            conn,
            ClientView {
                version,
                decoder,
                buf: BytesMut::new(),
                received: VecDeque::new(),
                closed: None,
                decode_error: None,
                sent_bytes: 0,
                unread: BytesMut::new(),
                hold_reads: self.hold_reads,
            },
        );
        self.input(Input::Accepted {
            conn,
            info: conn_info(),
        });
        conn
    }

    /// Opens a connection and sends `connect` on it.
    pub fn connect(&mut self, connect: Connect) -> ConnId {
        let conn = self.open(connect.protocol);
        self.send(conn, &Packet::Connect(Box::new(connect)));
        conn
    }

    /// Connects and expects a successful CONNACK; returns its session-present flag.
    pub fn connect_ok(&mut self, connect: Connect) -> (ConnId, bool) {
        let conn = self.connect(connect);
        match self.next_packet(conn) {
            Some(Packet::ConnAck(ack))
                if ack.reason == jetmq_core::codec::ConnectReason::Success =>
            {
                (conn, ack.session_present)
            }
            other => panic!("expected a successful CONNACK, got {other:?}"),
        }
    }

    /// Sends a packet from a client.
    pub fn send(&mut self, conn: ConnId, packet: &Packet) {
        let version = self
            .clients
            .get(&conn)
            .map_or(ProtocolVersion::V311, |c| c.version);
        let mut buf = BytesMut::new();
        packet.encode(version, &mut buf);
        self.send_bytes(conn, &buf);
    }

    pub fn send_bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        self.input(Input::Received {
            conn,
            data: BytesMut::from(bytes),
        });
    }

    /// A client that holds its reads reads up to `max` of the bytes sent to it, and decodes
    /// them; returns how many it read.
    pub fn read(&mut self, conn: ConnId, max: usize) -> usize {
        let Some(c) = self.clients.get_mut(&conn) else {
            return 0;
        };
        let n = max.min(c.unread.len());
        if n > 0 {
            let bytes = c.unread.split_to(n);
            c.buf.extend_from_slice(&bytes);
            c.decode();
        }
        n
    }

    /// The next packet a client received.
    pub fn next_packet(&mut self, conn: ConnId) -> Option<Packet> {
        self.clients.get_mut(&conn)?.received.pop_front()
    }

    /// Every packet a client received since the last call.
    pub fn packets(&mut self, conn: ConnId) -> Vec<Packet> {
        self.clients
            .get_mut(&conn)
            .map(|c| c.received.drain(..).collect())
            .unwrap_or_default()
    }

    pub fn closed(&self, conn: ConnId) -> Option<CloseReason> {
        self.clients.get(&conn).and_then(|c| c.closed)
    }

    /// Subscribes and expects a SUBACK.
    pub fn subscribe_ok(&mut self, conn: ConnId, id: u16, filter: &str, qos: QoS) {
        self.send(conn, &subscribe(id, filter, qos));
        let packets = self.packets(conn);
        assert!(
            packets
                .iter()
                .any(|p| matches!(p, Packet::SubAck(a) if a.packet_id == pid(id))),
            "expected SUBACK {id}, got {packets:?}"
        );
        // Retained messages after the SUBACK go back in the queue for the test to read.
        let c = self.clients.get_mut(&conn).expect("client");
        for p in packets
            .into_iter()
            .filter(|p| !matches!(p, Packet::SubAck(_)))
        {
            c.received.push_back(p);
        }
    }

    /// Advances the virtual clock and fires the timers that are due.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now.advanced(d);
        while let Some(at) = self.broker.next_deadline() {
            if at > target.instant {
                break;
            }
            let step = at.saturating_duration_since(self.now.instant);
            self.now = self.now.advanced(step);
            self.input(Input::Tick);
        }
        self.now = target;
        self.input(Input::Tick);
    }

    /// Publishes received by a client, as (topic, payload, qos, retain, dup).
    pub fn publishes(&mut self, conn: ConnId) -> Vec<(String, String, QoS, bool, bool)> {
        self.packets(conn)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some((
                    p.topic.to_string(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                    p.qos.level(),
                    p.retain,
                    p.dup,
                )),
                _ => None,
            })
            .collect()
    }
}
