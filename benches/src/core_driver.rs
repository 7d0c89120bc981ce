//! Drives a [`Broker`] with no sockets: connected subscribers and one publisher, fed raw
//! MQTT bytes, with the outbox cleared after every call as a shell would. Shared by the
//! criterion benches and the allocation tests.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use jetmq_core::broker::{
    Action, Broker, BrokerConfig, ConnId, ConnInfo, Input, ListenerKind, Outbox,
};
use jetmq_core::codec::{
    Ack, Connect, Decoder, Direction, Packet, PacketId, ProtocolVersion, Publish, PublishQos, QoS,
    Subscribe, SubscriptionOptions,
};
use jetmq_core::time::Now;

/// The topic the benches publish on.
pub const TOPIC: &str = "bench/topic";

/// A broker with `n` subscribers on [`TOPIC`] and one publisher.
pub struct Driver {
    broker: Broker,
    out: Outbox,
    now: Now,
    publisher: ConnId,
    subscribers: Vec<ConnId>,
    /// PUBACKs the subscribers owe, encoded once per packet id.
    pending_acks: Vec<(ConnId, u16)>,
    deliveries: u64,
}

fn conn(n: u64) -> ConnId {
    ConnId::new(n).expect("connection numbers start at 1")
}

impl Driver {
    /// Sets up the broker; subscribers subscribe with `qos`.
    #[must_use]
    pub fn new(subscribers: usize, qos: QoS) -> Self {
        let config = BrokerConfig {
            max_unsent_bytes: usize::MAX,
            max_inflight: u16::MAX,
            fanout_budget: usize::MAX,
            ..BrokerConfig::default()
        };
        let now = Now::default();
        let mut d = Self {
            broker: Broker::new(config, 1, now),
            out: Outbox::new(),
            now,
            publisher: conn(1),
            subscribers: Vec::new(),
            pending_acks: Vec::new(),
            deliveries: 0,
        };
        d.open(conn(1), "publisher");
        for i in 0..subscribers {
            let id = conn(i as u64 + 2);
            d.open(id, &format!("sub-{i}"));
            let sub = Packet::Subscribe(Subscribe {
                packet_id: PacketId::new(1).expect("non-zero"),
                properties: Default::default(),
                filters: vec![(ByteString::from(TOPIC), SubscriptionOptions::new(qos))],
            });
            d.feed(id, encode(&sub));
            d.subscribers.push(id);
        }
        d.pending_acks.clear();
        d.deliveries = 0;
        d
    }

    fn open(&mut self, id: ConnId, client_id: &str) {
        let info = ConnInfo {
            peer: "bench".into(),
            listener: ListenerKind::Test,
            tls_identity: None,
        };
        self.handle(Input::Accepted { conn: id, info });
        let mut c = Connect::new(ProtocolVersion::V311, client_id.into());
        c.keep_alive = 0;
        self.feed(id, encode(&Packet::Connect(Box::new(c))));
    }

    fn handle(&mut self, input: Input) {
        self.now = self.now.advanced(Duration::from_nanos(1));
        self.broker.handle(self.now, input, &mut self.out);
        for action in self.out.drain() {
            if let Action::Send { conn, bytes } = action {
                if conn != self.publisher {
                    count_publishes(&bytes, conn, &mut self.deliveries, &mut self.pending_acks);
                }
            }
        }
    }

    fn feed(&mut self, conn: ConnId, data: BytesMut) {
        self.handle(Input::Received { conn, data });
    }

    /// One PUBLISH on `topic` with a `len`-byte payload.
    #[must_use]
    pub fn publish_bytes(&self, topic: &str, len: usize, qos: QoS, pid: u16) -> Bytes {
        let mut p = Publish::new(topic.into(), Bytes::from(vec![b'x'; len]));
        let id = PacketId::new(pid.max(1)).expect("non-zero");
        p.qos = match qos {
            QoS::AtMostOnce => PublishQos::AtMostOnce,
            QoS::AtLeastOnce => PublishQos::AtLeastOnce(id),
            QoS::ExactlyOnce => PublishQos::ExactlyOnce(id),
        };
        encode(&Packet::Publish(p)).freeze()
    }

    /// `count` PUBLISH packets back to back, as one read would bring them.
    #[must_use]
    pub fn publish_batch(&self, topic: &str, len: usize, qos: QoS, count: usize) -> Bytes {
        let mut buf = BytesMut::new();
        for i in 0..count {
            buf.extend_from_slice(&self.publish_bytes(topic, len, qos, (i % 60_000 + 1) as u16));
        }
        buf.freeze()
    }

    /// Feeds bytes from the publisher, as one socket read.
    pub fn feed_publisher(&mut self, data: BytesMut) {
        let publisher = self.publisher;
        self.feed(publisher, data);
    }

    /// Sends the PUBACKs the subscribers owe, one read per subscriber.
    pub fn ack_subscribers(&mut self) {
        let acks = std::mem::take(&mut self.pending_acks);
        let mut per_conn: Vec<(ConnId, BytesMut)> = Vec::new();
        for (c, pid) in &acks {
            let ack = Packet::PubAck(Ack::new(PacketId::new(*pid).expect("non-zero")));
            match per_conn.iter_mut().find(|(k, _)| k == c) {
                Some((_, buf)) => ack.encode(ProtocolVersion::V311, buf),
                None => per_conn.push((*c, encode(&ack))),
            }
        }
        for (c, buf) in per_conn {
            self.feed(c, buf);
        }
        self.pending_acks = acks;
        self.pending_acks.clear();
    }

    /// How many deliveries one PUBLISH makes.
    pub fn deliveries_per_publish(&mut self, publish: &Bytes) -> u64 {
        let before = self.deliveries;
        self.feed_publisher(BytesMut::from(&publish[..]));
        self.ack_subscribers();
        self.deliveries - before
    }

    /// Deliveries counted so far.
    #[must_use]
    pub fn deliveries(&self) -> u64 {
        self.deliveries
    }
}

fn encode(p: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    p.encode(ProtocolVersion::V311, &mut buf);
    buf
}

/// Counts PUBLISH packets in bytes sent to a subscriber, noting the QoS 1 ones to acknowledge.
/// The bytes are whole packets: the broker sends each packet in one piece.
fn count_publishes(
    bytes: &Bytes,
    conn: ConnId,
    deliveries: &mut u64,
    acks: &mut Vec<(ConnId, u16)>,
) {
    let mut rest = &bytes[..];
    while let Some(&first) = rest.first() {
        let mut len: usize = 0;
        let mut shift = 0;
        let mut i = 1;
        while let Some(&b) = rest.get(i) {
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let Some(packet) = rest.get(..i + len) else {
            return;
        };
        if first >> 4 == 3 {
            *deliveries += 1;
            if (first >> 1) & 3 == 1 {
                // Topic length, topic, then the packet id.
                let tlen = usize::from(u16::from_be_bytes([packet[i], packet[i + 1]]));
                let at = i + 2 + tlen;
                acks.push((conn, u16::from_be_bytes([packet[at], packet[at + 1]])));
            }
        }
        rest = &rest[i + len..];
    }
}

/// Decodes every packet in `bytes` as a client would (for tests).
#[must_use]
pub fn decode_all(bytes: &[u8]) -> Vec<Packet> {
    let mut d = Decoder::new(Direction::FromServer, 0);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(Some(p)) = d.decode(&mut buf) {
        out.push(p);
    }
    out
}
