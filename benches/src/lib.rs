//! Shared inputs for jetmq's benchmarks: the packets and byte streams every bench measures,
//! built once so that jetmq and the peer codecs see exactly the same bytes.

pub mod load;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use jetmq_core::codec::{
    Ack, ConnAck, Connect, ConnectReason, Disconnect, DisconnectReason, Packet, PacketId,
    ProtocolVersion, Publish, PublishQos, QoS, SubAck, SubAckReason, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};

/// The topic every PUBLISH bench uses: four levels, like a typical telemetry topic.
pub const TOPIC: &str = "sensors/building-7/floor-3/temperature";

/// A QoS 1 PUBLISH of `payload_len` bytes on [`TOPIC`].
#[must_use]
pub fn publish(payload_len: usize) -> Publish {
    let mut p = Publish::new(
        ByteString::from_static(TOPIC),
        Bytes::from(vec![0xA5; payload_len]),
    );
    p.qos = PublishQos::AtLeastOnce(packet_id(1));
    p
}

/// The packet identifier `n`, or 1 for 0.
#[must_use]
pub fn packet_id(n: u16) -> PacketId {
    PacketId::new(n.max(1)).expect("n.max(1) is never zero")
}

/// `count` copies of `packet` encoded back to back.
#[must_use]
pub fn stream_of(packet: &Packet, version: ProtocolVersion, count: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(packet.encoded_len(version) * count);
    for _ in 0..count {
        packet.encode(version, &mut buf);
    }
    buf.freeze()
}

/// The packets a client sends in a typical session, one of each type MQTT 3.1.1 has.
#[must_use]
pub fn client_packets() -> Vec<Packet> {
    let mut connect = Connect::new(
        ProtocolVersion::V311,
        ByteString::from_static("bench-client-1"),
    );
    connect.username = Some(ByteString::from_static("user"));
    connect.password = Some(Bytes::from_static(b"password"));
    vec![
        Packet::Connect(Box::new(connect)),
        Packet::Publish(publish(64)),
        Packet::PubAck(Ack::new(packet_id(2))),
        Packet::PubRec(Ack::new(packet_id(3))),
        Packet::PubRel(Ack::new(packet_id(4))),
        Packet::PubComp(Ack::new(packet_id(5))),
        Packet::Subscribe(Subscribe {
            packet_id: packet_id(6),
            properties: Default::default(),
            filters: vec![(
                ByteString::from_static("sensors/+/floor-3/#"),
                SubscriptionOptions::new(QoS::AtLeastOnce),
            )],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: packet_id(7),
            properties: Default::default(),
            filters: vec![ByteString::from_static("sensors/+/floor-3/#")],
        }),
        Packet::PingReq,
        Packet::Disconnect(Box::new(Disconnect::new(
            DisconnectReason::NormalDisconnection,
        ))),
    ]
}

/// The packets a server sends in a typical session.
#[must_use]
pub fn server_packets() -> Vec<Packet> {
    vec![
        Packet::ConnAck(Box::new(ConnAck::new(ConnectReason::Success, false))),
        Packet::Publish(publish(64)),
        Packet::PubAck(Ack::new(packet_id(2))),
        Packet::SubAck(SubAck {
            packet_id: packet_id(6),
            properties: Default::default(),
            reasons: vec![SubAckReason::GrantedQos1],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: packet_id(7),
            properties: Default::default(),
            reasons: Vec::new(),
        }),
        Packet::PingResp,
    ]
}

/// `rounds` repetitions of `packets`, encoded back to back.
#[must_use]
pub fn mixed_stream(packets: &[Packet], version: ProtocolVersion, rounds: usize) -> Bytes {
    let mut buf = BytesMut::new();
    for _ in 0..rounds {
        for p in packets {
            p.encode(version, &mut buf);
        }
    }
    buf.freeze()
}

/// `n` topic filters of the shapes brokers see in practice: exact topics, single-level and
/// multi-level wildcards, spread over many devices so few of them match any one topic.
#[must_use]
pub fn filters(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 5 {
            0 => format!("sensors/building-{}/floor-{}/temperature", i % 97, i % 11),
            1 => format!("sensors/building-{}/+/temperature", i % 97),
            2 => format!("sensors/building-{}/floor-{}/#", i % 97, i % 11),
            3 => format!("devices/{i}/status"),
            _ => format!("+/building-{}/floor-{}/+", i % 97, i % 13),
        })
        .collect()
}

pub mod core_driver;
