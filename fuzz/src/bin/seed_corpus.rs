//! Writes the seed corpora of the fuzz targets: one valid packet of every type in both protocol
//! versions (with properties in 5.0), a few multi-packet streams, and topic strings from the
//! subject-mapping examples. Run from `fuzz/`: `cargo run --bin seed_corpus`.

use std::fs;
use std::num::{NonZeroU16, NonZeroU32};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use jetmq_core::codec::{
    Ack, AckProperties, Auth, AuthReason, ConnAck, Connect, ConnectReason, Disconnect,
    DisconnectReason, LastWill, Packet, PacketId, ProtocolVersion, Publish, PublishQos, QoS,
    RetainHandling, SubAck, SubAckReason, Subscribe, SubscriptionOptions, UnsubAck, UnsubAckReason,
    Unsubscribe, UserProperty,
};

fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

fn user() -> Vec<UserProperty> {
    vec![UserProperty {
        name: ByteString::from_static("k"),
        value: ByteString::from_static("v"),
    }]
}

fn packets(v: ProtocolVersion) -> Vec<Packet> {
    let v5 = v.is_v5();
    let props = |p: AckProperties| if v5 { p } else { AckProperties::default() };
    let ack_props = props(AckProperties {
        reason_string: Some(ByteString::from_static("why")),
        user_properties: user(),
    });

    let mut connect = Connect::new(v, ByteString::from_static("client-1"));
    connect.clean_start = false;
    connect.username = Some(ByteString::from_static("user"));
    connect.password = Some(Bytes::from_static(b"secret"));
    let mut will = LastWill {
        topic: ByteString::from_static("will/topic"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    };
    if v5 {
        connect.properties.session_expiry_interval = Some(3600);
        connect.properties.receive_maximum = NonZeroU16::new(10);
        connect.properties.maximum_packet_size = NonZeroU32::new(65536);
        connect.properties.topic_alias_maximum = Some(8);
        connect.properties.user_properties = user();
        will.properties.will_delay_interval = Some(5);
        will.properties.content_type = Some(ByteString::from_static("text/plain"));
    }
    connect.will = Some(will);

    let mut connack = ConnAck::new(ConnectReason::Success, true);
    let mut publish = Publish::new(
        ByteString::from_static("a/b/c"),
        Bytes::from_static(b"hello"),
    );
    publish.qos = PublishQos::AtLeastOnce(id(7));
    publish.retain = true;
    let mut sub = Subscribe {
        packet_id: id(2),
        properties: Default::default(),
        filters: vec![
            (
                ByteString::from_static("a/+/c"),
                SubscriptionOptions::new(QoS::ExactlyOnce),
            ),
            (
                ByteString::from_static("#"),
                SubscriptionOptions::new(QoS::AtMostOnce),
            ),
        ],
    };
    let mut disconnect = Disconnect::new(DisconnectReason::NormalDisconnection);
    if v5 {
        connack.properties.assigned_client_identifier = Some(ByteString::from_static("auto-1"));
        connack.properties.topic_alias_maximum = Some(16);
        connack.properties.maximum_qos = Some(QoS::AtLeastOnce);
        let props = publish.properties_mut();
        props.topic_alias = NonZeroU16::new(3);
        props.message_expiry_interval = Some(60);
        props.response_topic = Some(ByteString::from_static("reply/here"));
        props.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
        props.user_properties = user();
        sub.properties.subscription_identifier = NonZeroU32::new(42);
        sub.filters[0].1.no_local = true;
        sub.filters[0].1.retain_as_published = true;
        sub.filters[0].1.retain_handling = RetainHandling::SendIfNew;
        disconnect = Disconnect::new(DisconnectReason::SessionTakenOver);
        disconnect.properties.reason_string = Some(ByteString::from_static("taken over"));
    }
    let pub_ack = |reason| Ack {
        packet_id: id(7),
        reason,
        properties: ack_props.clone(),
    };
    let mut list = vec![
        Packet::Connect(Box::new(connect)),
        Packet::ConnAck(Box::new(connack)),
        Packet::Publish(publish),
        Packet::Publish(Publish::new(ByteString::from_static("x"), Bytes::new())),
        Packet::PubAck(pub_ack(jetmq_core::codec::PubAckReason::Success)),
        Packet::PubRec(pub_ack(jetmq_core::codec::PubAckReason::Success)),
        Packet::PubRel(Ack::new(id(7))),
        Packet::PubComp(Ack::new(id(7))),
        Packet::Subscribe(sub),
        Packet::SubAck(SubAck {
            packet_id: id(2),
            properties: ack_props.clone(),
            reasons: vec![SubAckReason::GrantedQos2, SubAckReason::UnspecifiedError],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id(3),
            properties: Default::default(),
            filters: vec![ByteString::from_static("a/+/c")],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: id(3),
            properties: ack_props.clone(),
            reasons: if v5 {
                vec![UnsubAckReason::Success]
            } else {
                vec![]
            },
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Box::new(disconnect)),
    ];
    if v5 {
        let mut auth = Auth::new(AuthReason::ContinueAuthentication);
        auth.properties.authentication_method = Some(ByteString::from_static("SCRAM-SHA-256"));
        auth.properties.authentication_data = Some(Bytes::from_static(b"n,,n=user,r=abc"));
        list.push(Packet::Auth(Box::new(auth)));
    }
    list
}

/// Whether a client sends this packet (selector bit 1 clear) or a server does (bit 1 set).
fn selector(v: ProtocolVersion, packet: &Packet) -> u8 {
    let from_server = matches!(
        packet,
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp
    );
    u8::from(v.is_v5()) | (u8::from(from_server) << 1)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create corpus folder");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = Path::new("corpus");
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let tag = if v.is_v5() { "v5" } else { "v311" };
        let mut client_stream = BytesMut::new();
        for (i, packet) in packets(v).into_iter().enumerate() {
            let mut seed = vec![selector(v, &packet)];
            let mut buf = BytesMut::new();
            packet.encode(v, &mut buf);
            seed.extend_from_slice(&buf);
            let name = format!("{tag}-{i:02}-{:?}", packet.packet_type()).to_lowercase();
            write(&root.join("decode"), &name, &seed);
            if selector(v, &packet) & 2 == 0 {
                client_stream.extend_from_slice(&buf);
            }
        }
        // A whole client conversation, for the chunking target, with a few chunk seeds.
        for chunk_seed in [1u8, 7, 200] {
            let mut seed = vec![u8::from(v.is_v5()), chunk_seed];
            seed.extend_from_slice(&client_stream);
            write(
                &root.join("decode_split"),
                &format!("{tag}-stream-{chunk_seed}"),
                &seed,
            );
        }
    }
    // Broker sequences: op byte = kind << 2 | connection (see jetmq_fuzz::broker_sequence).
    for (name, version) in [("v311", ProtocolVersion::V311), ("v5", ProtocolVersion::V5)] {
        let all = packets(version);
        let bytes_of = |p: &Packet| {
            let mut b = BytesMut::new();
            p.encode(version, &mut b);
            b
        };
        let mut seq = vec![0u8];
        let received = |seq: &mut Vec<u8>, conn: u8, bytes: &[u8]| {
            for chunk in bytes.chunks(255) {
                seq.push((3 << 2) | conn);
                seq.push(chunk.len() as u8);
                seq.extend_from_slice(chunk);
            }
        };
        // Two clients: one subscribes, one publishes every kind of client packet.
        for conn in [0u8, 1] {
            seq.push(conn);
            let mut c = Connect::new(version, format!("fuzz-{conn}").into());
            c.clean_start = conn == 0;
            received(&mut seq, conn, &bytes_of(&Packet::Connect(Box::new(c))));
        }
        for p in &all {
            if matches!(
                p,
                Packet::Subscribe(_)
                    | Packet::Publish(_)
                    | Packet::PubAck(_)
                    | Packet::PubRec(_)
                    | Packet::PubRel(_)
                    | Packet::PubComp(_)
                    | Packet::Unsubscribe(_)
                    | Packet::PingReq
            ) {
                received(&mut seq, 0, &bytes_of(p));
                received(&mut seq, 1, &bytes_of(p));
            }
        }
        // Store replies, time, a close and a shutdown.
        seq.extend_from_slice(&[
            43 << 2,
            44 << 2,
            37 << 2,
            31 << 2,
            43 << 2,
            40 << 2,
            62 << 2,
        ]);
        write(&root.join("broker"), &format!("{name}-session"), &seq);
    }
    let topics = [
        "foo",
        "foo/bar",
        "/foo",
        "/foo/bar/",
        "bar/",
        "/",
        "//",
        "foo//bar",
        ".",
        "./",
        ".foo.",
        "foo../bar/.",
        "spBv1.0/plant1",
        "+",
        "/+",
        "foo/+/bar",
        "#",
        "foo/#",
        "+/#",
        "a b",
        "tab\there",
        "del\u{7f}",
        "$SYS/broker",
        "$share/group/a/+",
        "a/20b",
        "sport/tennis/#",
        "ünïcode/トピック",
    ];
    for (i, t) in topics.iter().enumerate() {
        write(&root.join("topic"), &format!("topic-{i:02}"), t.as_bytes());
    }
    println!("seed corpora written under {}", root.display());
}
