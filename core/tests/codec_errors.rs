//! One test per decoding error: each feeds the smallest packet that breaks one rule and checks
//! the error, its spec clause and its MQTT 5.0 reason code.

use bytes::{BufMut, BytesMut};
use jetmq_core::codec::{
    ConnectReason, DecodeError, Decoder, Direction, DisconnectReason, Packet, PacketType,
    PropertyId, ProtocolVersion,
};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A whole packet: first byte, minimal remaining length, body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len & 0x7f) as u8;
        len >>= 7;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn decode_as(
    direction: Direction,
    version: ProtocolVersion,
    bytes: &[u8],
) -> Result<Option<Packet>, DecodeError> {
    let mut decoder = Decoder::new(direction, 0);
    decoder.set_version(version);
    decoder.decode(&mut BytesMut::from(bytes))
}

fn client(version: ProtocolVersion, bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    decode_as(Direction::FromClient, version, bytes)
}

fn server(version: ProtocolVersion, bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    decode_as(Direction::FromServer, version, bytes)
}

#[track_caller]
fn expect_err(
    result: Result<Option<Packet>, DecodeError>,
    expected: DecodeError,
    clause: &str,
    reason: DisconnectReason,
) {
    let err = result.expect_err("decoding must fail");
    assert_eq!(err, expected);
    assert!(
        err.clause().contains(clause),
        "clause {:?} should mention {clause}",
        err.clause()
    );
    assert_eq!(err.disconnect_reason(), reason);
    assert!(
        err.to_string().contains(clause),
        "message {err} names the clause"
    );
}

/// A string field: two length bytes and the bytes.
fn s(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text);
    out
}

/// A CONNECT body with the given protocol name, level, flags, and payload after keep-alive.
fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = s(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&[0, 60]);
    body.extend_from_slice(rest);
    body
}

/// A v5 PUBLISH (QoS 0) to `a` with the given raw property bytes.
fn publish_v5_with_props(props: &[u8]) -> Vec<u8> {
    let mut body = s(b"a");
    body.push(props.len() as u8);
    body.extend_from_slice(props);
    frame(0x30, &body)
}

#[test]
fn packet_too_large_is_refused_from_the_fixed_header() {
    let mut decoder = Decoder::new(Direction::FromClient, 64);
    // PUBLISH declaring 1000 bytes; only the fixed header has arrived.
    let mut buf = BytesMut::from(&[0x30u8, 0xE8, 0x07][..]);
    let capacity = buf.capacity();
    let err = decoder.decode(&mut buf).expect_err("too large");
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 1003,
            max: 64
        }
    );
    assert_eq!(err.disconnect_reason(), DisconnectReason::PacketTooLarge);
    assert_eq!(err.connect_reason(), ConnectReason::PacketTooLarge);
    assert!(err.clause().contains("MQTT-3.2.2-15"));
    assert_eq!(
        buf.capacity(),
        capacity,
        "no memory reserved for the declared length"
    );
}

#[test]
fn var_int_longer_than_four_bytes() {
    expect_err(
        client(V5, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        DecodeError::VarIntTooLong,
        "§1.5.5",
        DisconnectReason::MalformedPacket,
    );
    // A property value (subscription identifier) too.
    let mut sub = vec![0, 1, 6, 0x0B, 0x80, 0x80, 0x80, 0x80, 0x01];
    sub.extend(s(b"a"));
    sub.push(0);
    expect_err(
        client(V5, &frame(0x82, &sub)),
        DecodeError::VarIntTooLong,
        "§1.5.5",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn var_int_not_minimal() {
    expect_err(
        client(V5, &[0xC0, 0x80, 0x00]),
        DecodeError::VarIntNotMinimal,
        "MQTT-1.5.5-1",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn reserved_packet_types() {
    expect_err(
        client(V5, &[0x00, 0x00]),
        DecodeError::ReservedPacketType(0),
        "§2.1.2",
        DisconnectReason::MalformedPacket,
    );
    // 15 is AUTH in 5.0 but reserved in 3.1.1.
    expect_err(
        client(V3, &[0xF0, 0x00]),
        DecodeError::ReservedPacketType(15),
        "§2.1.2",
        DisconnectReason::MalformedPacket,
    );
    assert!(matches!(
        client(V5, &[0xF0, 0x00]),
        Ok(Some(Packet::Auth(_)))
    ));
}

#[test]
fn invalid_fixed_header_flags() {
    let cases: [(u8, PacketType, &str, &[u8]); 6] = [
        (0xC1, PacketType::PingReq, "MQTT-2.1.3-1", &[]),
        (0x60, PacketType::PubRel, "MQTT-3.6.1-1", &[0, 1]),
        (
            0x80,
            PacketType::Subscribe,
            "MQTT-3.8.1-1",
            &[0, 1, 0, 1, b'a', 0],
        ),
        (
            0xA3,
            PacketType::Unsubscribe,
            "MQTT-3.10.1-1",
            &[0, 1, 0, 1, b'a'],
        ),
        (0xE1, PacketType::Disconnect, "MQTT-3.14.1-1", &[]),
        (0xF2, PacketType::Auth, "MQTT-3.15.1-1", &[]),
    ];
    for (first, packet, clause, body) in cases {
        expect_err(
            client(V5, &frame(first, body)),
            DecodeError::InvalidFlags {
                packet,
                flags: first & 0x0f,
            },
            clause,
            DisconnectReason::MalformedPacket,
        );
    }
    expect_err(
        server(V3, &frame(0x42, &[0, 1])),
        DecodeError::InvalidFlags {
            packet: PacketType::PubAck,
            flags: 2,
        },
        "MQTT-2.2.2-2",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn publish_with_qos_3() {
    let mut body = s(b"a");
    body.extend_from_slice(&[0, 1]);
    expect_err(
        client(V3, &frame(0x36, &body)),
        DecodeError::InvalidQos,
        "MQTT-3.3.1-4",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn dup_on_qos_0() {
    expect_err(
        client(V3, &frame(0x38, &s(b"a"))),
        DecodeError::DupOnQos0,
        "MQTT-3.3.1-2",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn invalid_utf8_and_surrogates() {
    expect_err(
        client(V3, &frame(0x30, &s(&[0xC3, 0x28]))),
        DecodeError::InvalidUtf8,
        "MQTT-1.5.3-1",
        DisconnectReason::MalformedPacket,
    );
    // U+D800 encoded as UTF-8 bytes is a surrogate: ill-formed.
    expect_err(
        client(V5, &publish_v5_with_props(&[0x03, 0, 3, 0xED, 0xA0, 0x80])),
        DecodeError::InvalidUtf8,
        "MQTT-1.5.4-1",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn null_character_in_string() {
    expect_err(
        client(V3, &frame(0x30, &s(b"a\0b"))),
        DecodeError::NullCharacter,
        "MQTT-1.5.3-2",
        DisconnectReason::MalformedPacket,
    );
    // In a user property name as well.
    expect_err(
        client(V5, &publish_v5_with_props(&[0x26, 0, 1, 0, 0, 1, b'v'])),
        DecodeError::NullCharacter,
        "MQTT-1.5.4-2",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn body_shorter_than_its_fields() {
    expect_err(
        server(V3, &frame(0x40, &[0])),
        DecodeError::Truncated,
        "§2.1.4",
        DisconnectReason::MalformedPacket,
    );
    // A string whose length runs past the body.
    expect_err(
        client(V3, &frame(0x30, &[0, 5, b'a'])),
        DecodeError::Truncated,
        "§2.1.4",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn trailing_bytes() {
    expect_err(
        client(V3, &frame(0xC0, &[0])),
        DecodeError::TrailingBytes { count: 1 },
        "§2.1.4",
        DisconnectReason::MalformedPacket,
    );
    expect_err(
        server(V3, &frame(0x40, &[0, 1, 0])),
        DecodeError::TrailingBytes { count: 1 },
        "§2.1.4",
        DisconnectReason::MalformedPacket,
    );
    let mut body = connect_body(b"MQTT", 4, 0x02, &s(b"c"));
    body.push(0);
    expect_err(
        client(V3, &frame(0x10, &body)),
        DecodeError::TrailingBytes { count: 1 },
        "§2.1.4",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn packet_identifier_zero() {
    expect_err(
        server(V3, &frame(0x40, &[0, 0])),
        DecodeError::PacketIdZero,
        "MQTT-2.3.1-1",
        DisconnectReason::ProtocolError,
    );
    let mut publish = s(b"a");
    publish.extend_from_slice(&[0, 0]);
    expect_err(
        client(V3, &frame(0x32, &publish)),
        DecodeError::PacketIdZero,
        "MQTT-2.2.1-3",
        DisconnectReason::ProtocolError,
    );
    let mut sub = vec![0, 0];
    sub.extend(s(b"a"));
    sub.push(0);
    expect_err(
        client(V3, &frame(0x82, &sub)),
        DecodeError::PacketIdZero,
        "MQTT-2.3.1-1",
        DisconnectReason::ProtocolError,
    );
}

#[test]
fn subscribe_without_filters() {
    expect_err(
        client(V3, &frame(0x82, &[0, 1])),
        DecodeError::NoSubscribeFilters,
        "MQTT-3.8.3-3",
        DisconnectReason::ProtocolError,
    );
    expect_err(
        client(V5, &frame(0x82, &[0, 1, 0])),
        DecodeError::NoSubscribeFilters,
        "MQTT-3.8.3-2",
        DisconnectReason::ProtocolError,
    );
}

#[test]
fn unsubscribe_without_filters() {
    expect_err(
        client(V3, &frame(0xA2, &[0, 1])),
        DecodeError::NoUnsubscribeFilters,
        "MQTT-3.10.3-2",
        DisconnectReason::ProtocolError,
    );
    expect_err(
        client(V5, &frame(0xA2, &[0, 1, 0])),
        DecodeError::NoUnsubscribeFilters,
        "MQTT-3.10.3-2",
        DisconnectReason::ProtocolError,
    );
}

#[test]
fn subscription_options_reserved_bits_and_qos_3() {
    let sub = |version: ProtocolVersion, options: u8| {
        let mut body = vec![0, 1];
        if version.is_v5() {
            body.push(0);
        }
        body.extend(s(b"a"));
        body.push(options);
        client(version, &frame(0x82, &body))
    };
    expect_err(
        sub(V3, 0x04),
        DecodeError::InvalidSubscriptionOptions(0x04),
        "MQTT-3.8.3-4",
        DisconnectReason::MalformedPacket,
    );
    expect_err(
        sub(V3, 0x03),
        DecodeError::InvalidSubscriptionOptions(0x03),
        "MQTT-3.8.3-4",
        DisconnectReason::MalformedPacket,
    );
    expect_err(
        sub(V5, 0x41),
        DecodeError::InvalidSubscriptionOptions(0x41),
        "MQTT-3.8.3-5",
        DisconnectReason::MalformedPacket,
    );
    expect_err(
        sub(V5, 0x30),
        DecodeError::InvalidRetainHandling,
        "Retain Handling",
        DisconnectReason::ProtocolError,
    );
    // The same v5 bits are fine: No Local, Retain As Published, Retain Handling 2.
    assert!(matches!(sub(V5, 0x2E), Ok(Some(Packet::Subscribe(_)))));
}

#[test]
fn no_local_on_shared_subscription() {
    let mut body = vec![0, 1, 0];
    body.extend(s(b"$share/g/a"));
    body.push(0x04);
    expect_err(
        client(V5, &frame(0x82, &body)),
        DecodeError::NoLocalOnSharedSubscription,
        "MQTT-3.8.3-4",
        DisconnectReason::ProtocolError,
    );
}

#[test]
fn duplicate_property() {
    expect_err(
        client(
            V5,
            &publish_v5_with_props(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
        ),
        DecodeError::DuplicateProperty(PropertyId::MessageExpiryInterval),
        "§2.2.2.2",
        DisconnectReason::ProtocolError,
    );
    // User properties may repeat.
    let repeated = [0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0, 1, b'k', 0, 1, b'w'];
    match client(V5, &publish_v5_with_props(&repeated)) {
        Ok(Some(Packet::Publish(p))) => assert_eq!(p.properties().user_properties.len(), 2),
        other => panic!("unexpected {other:?}"),
    }
    // A SUBSCRIBE carries at most one subscription identifier.
    let mut sub = vec![0, 1, 4, 0x0B, 1, 0x0B, 2];
    sub.extend(s(b"a"));
    sub.push(0);
    expect_err(
        client(V5, &frame(0x82, &sub)),
        DecodeError::DuplicateProperty(PropertyId::SubscriptionIdentifier),
        "§2.2.2.2",
        DisconnectReason::ProtocolError,
    );
}

#[test]
fn property_not_allowed_on_packet() {
    expect_err(
        client(V5, &publish_v5_with_props(&[0x11, 0, 0, 0, 1])),
        DecodeError::PropertyNotAllowed {
            property: PropertyId::SessionExpiryInterval,
            packet: PacketType::Publish,
        },
        "§2.2.2.2",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn unknown_property() {
    expect_err(
        client(V5, &publish_v5_with_props(&[0x05, 0])),
        DecodeError::UnknownProperty(5),
        "§2.2.2.2",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn property_values_out_of_range() {
    // Receive Maximum 0 on CONNECT.
    let body = connect_body(
        b"MQTT",
        5,
        0x02,
        &[&[3u8, 0x21, 0, 0][..], &s(b"c")].concat(),
    );
    expect_err(
        client(V5, &frame(0x10, &body)),
        DecodeError::InvalidPropertyValue(PropertyId::ReceiveMaximum),
        "§3",
        DisconnectReason::ProtocolError,
    );
    // Payload Format Indicator 2.
    expect_err(
        client(V5, &publish_v5_with_props(&[0x01, 2])),
        DecodeError::InvalidPropertyValue(PropertyId::PayloadFormatIndicator),
        "§3",
        DisconnectReason::ProtocolError,
    );
    // Topic Alias 0 maps to its own reason code.
    expect_err(
        client(V5, &publish_v5_with_props(&[0x23, 0, 0])),
        DecodeError::InvalidPropertyValue(PropertyId::TopicAlias),
        "§3",
        DisconnectReason::TopicAliasInvalid,
    );
    // Subscription Identifier 0.
    let mut sub = vec![0, 1, 2, 0x0B, 0];
    sub.extend(s(b"a"));
    sub.push(0);
    expect_err(
        client(V5, &frame(0x82, &sub)),
        DecodeError::InvalidPropertyValue(PropertyId::SubscriptionIdentifier),
        "§3",
        DisconnectReason::ProtocolError,
    );
}

#[test]
fn authentication_data_without_method() {
    let body = connect_body(
        b"MQTT",
        5,
        0x02,
        &[&[4u8, 0x16, 0, 1, 9][..], &s(b"c")].concat(),
    );
    expect_err(
        client(V5, &frame(0x10, &body)),
        DecodeError::AuthDataWithoutMethod,
        "Authentication Data",
        DisconnectReason::ProtocolError,
    );
}

#[test]
fn reason_code_not_allowed_on_packet() {
    expect_err(
        server(V5, &frame(0x40, &[0, 1, 0x04])),
        DecodeError::InvalidReasonCode {
            packet: PacketType::PubAck,
            code: 4,
        },
        "MQTT-3.4.2-1",
        DisconnectReason::MalformedPacket,
    );
    expect_err(
        server(V5, &frame(0x70, &[0, 1, 0x80])),
        DecodeError::InvalidReasonCode {
            packet: PacketType::PubComp,
            code: 0x80,
        },
        "MQTT-3.7.2-1",
        DisconnectReason::MalformedPacket,
    );
    expect_err(
        client(V5, &frame(0xE0, &[0x03])),
        DecodeError::InvalidReasonCode {
            packet: PacketType::Disconnect,
            code: 3,
        },
        "MQTT-3.14.2-1",
        DisconnectReason::MalformedPacket,
    );
    expect_err(
        server(V3, &frame(0x90, &[0, 1, 0x83])),
        DecodeError::InvalidReasonCode {
            packet: PacketType::SubAck,
            code: 0x83,
        },
        "MQTT-3.9.3-2",
        DisconnectReason::MalformedPacket,
    );
    expect_err(
        server(V3, &frame(0x20, &[0, 6])),
        DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code: 6,
        },
        "MQTT-3.2.2-8",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn protocol_name_and_level() {
    let err =
        client(V3, &frame(0x10, &connect_body(b"MQTX", 4, 0x02, &s(b"c")))).expect_err("bad name");
    assert_eq!(err, DecodeError::InvalidProtocolName);
    assert!(err.clause().contains("MQTT-3.1.2-1"));
    assert_eq!(
        err.connect_reason(),
        ConnectReason::UnsupportedProtocolVersion
    );
    for (name, level) in [(&b"MQTT"[..], 6), (&b"MQTT"[..], 3), (&b"MQIsdp"[..], 4)] {
        let err = client(V3, &frame(0x10, &connect_body(name, level, 0x02, &s(b"c"))))
            .expect_err("bad level");
        assert_eq!(err, DecodeError::UnsupportedProtocolVersion(level));
        assert!(err.clause().contains("MQTT-3.1.2-2"));
        assert_eq!(
            err.connect_reason(),
            ConnectReason::UnsupportedProtocolVersion
        );
        assert_eq!(
            ConnectReason::UnsupportedProtocolVersion.v3_return_code(),
            1
        );
    }
    // MQTT 3.1 ("MQIsdp", level 3) is accepted and read like 3.1.1.
    match client(
        V3,
        &frame(0x10, &connect_body(b"MQIsdp", 3, 0x02, &s(b"c"))),
    ) {
        Ok(Some(Packet::Connect(c))) => assert_eq!(c.protocol, ProtocolVersion::V31),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn connect_reserved_flag() {
    expect_err(
        client(V3, &frame(0x10, &connect_body(b"MQTT", 4, 0x03, &s(b"c")))),
        DecodeError::ConnectReservedFlag,
        "MQTT-3.1.2-3",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn will_qos_or_retain_without_will() {
    for flags in [0x0A, 0x22] {
        expect_err(
            client(V3, &frame(0x10, &connect_body(b"MQTT", 4, flags, &s(b"c")))),
            DecodeError::WillFlagsWithoutWill,
            "MQTT-3.1.2-11",
            DisconnectReason::MalformedPacket,
        );
    }
}

#[test]
fn will_qos_3() {
    let rest = [s(b"c"), s(b"t"), s(b"m")].concat();
    expect_err(
        client(V3, &frame(0x10, &connect_body(b"MQTT", 4, 0x1E, &rest))),
        DecodeError::InvalidWillQos,
        "MQTT-3.1.2-14",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn password_without_user_name() {
    let rest = [s(b"c"), s(b"pw")].concat();
    expect_err(
        client(V3, &frame(0x10, &connect_body(b"MQTT", 4, 0x42, &rest))),
        DecodeError::PasswordWithoutUsername,
        "MQTT-3.1.2-22",
        DisconnectReason::MalformedPacket,
    );
    // MQTT 5.0 allows it.
    let rest5 = [vec![0], s(b"c"), s(b"pw")].concat();
    match client(V5, &frame(0x10, &connect_body(b"MQTT", 5, 0x42, &rest5))) {
        Ok(Some(Packet::Connect(c))) => {
            assert_eq!(c.username, None);
            assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn connack_flags() {
    expect_err(
        server(V3, &frame(0x20, &[0x02, 0])),
        DecodeError::InvalidConnAckFlags(2),
        "MQTT-3.2.2-1",
        DisconnectReason::MalformedPacket,
    );
    // Session present with a refusal.
    expect_err(
        server(V3, &frame(0x20, &[0x01, 5])),
        DecodeError::InvalidConnAckFlags(1),
        "MQTT-3.2.2-6",
        DisconnectReason::MalformedPacket,
    );
}

#[test]
fn wildcards_in_topic_names() {
    expect_err(
        client(V3, &frame(0x30, &s(b"a/+"))),
        DecodeError::WildcardInTopicName,
        "MQTT-3.3.2-2",
        DisconnectReason::TopicNameInvalid,
    );
    expect_err(
        client(V3, &frame(0x30, &s(b"#"))),
        DecodeError::WildcardInTopicName,
        "MQTT-3.3.2-2",
        DisconnectReason::TopicNameInvalid,
    );
    let will = [s(b"c"), s(b"a/#"), s(b"m")].concat();
    let err =
        client(V3, &frame(0x10, &connect_body(b"MQTT", 4, 0x06, &will))).expect_err("will topic");
    assert_eq!(err, DecodeError::WildcardInTopicName);
    assert_eq!(err.connect_reason(), ConnectReason::TopicNameInvalid);
    expect_err(
        client(V5, &publish_v5_with_props(&[0x08, 0, 1, b'+'])),
        DecodeError::WildcardInTopicName,
        "MQTT-3.3.2-14",
        DisconnectReason::TopicNameInvalid,
    );
}

#[test]
fn empty_topic_name() {
    expect_err(
        client(V3, &frame(0x30, &s(b""))),
        DecodeError::EmptyTopicName,
        "MQTT-4.7.3-1",
        DisconnectReason::TopicNameInvalid,
    );
    let mut body = s(b"");
    body.push(0);
    expect_err(
        client(V5, &frame(0x30, &body)),
        DecodeError::EmptyTopicName,
        "MQTT-4.7.3-1",
        DisconnectReason::TopicNameInvalid,
    );
    // With a topic alias an empty topic is how 5.0 uses the alias.
    let mut aliased = s(b"");
    aliased.extend_from_slice(&[3, 0x23, 0, 7]);
    assert!(matches!(
        client(V5, &frame(0x30, &aliased)),
        Ok(Some(Packet::Publish(_)))
    ));
}

#[test]
fn packet_in_the_wrong_direction() {
    expect_err(
        client(V3, &frame(0x20, &[0, 0])),
        DecodeError::WrongDirection(PacketType::ConnAck),
        "§2.1.2",
        DisconnectReason::ProtocolError,
    );
    expect_err(
        client(V3, &frame(0xD0, &[])),
        DecodeError::WrongDirection(PacketType::PingResp),
        "§2.1.2",
        DisconnectReason::ProtocolError,
    );
    expect_err(
        server(V3, &frame(0xC0, &[])),
        DecodeError::WrongDirection(PacketType::PingReq),
        "§2.1.2",
        DisconnectReason::ProtocolError,
    );
    expect_err(
        server(V3, &frame(0x10, &connect_body(b"MQTT", 4, 2, &s(b"c")))),
        DecodeError::WrongDirection(PacketType::Connect),
        "§2.1.2",
        DisconnectReason::ProtocolError,
    );
}

#[test]
fn subscription_identifier_from_client() {
    let bytes = publish_v5_with_props(&[0x0B, 5]);
    expect_err(
        client(V5, &bytes),
        DecodeError::SubscriptionIdFromClient,
        "MQTT-3.3.4-6",
        DisconnectReason::ProtocolError,
    );
    // From the server it is how matching subscriptions are reported.
    match server(V5, &bytes) {
        Ok(Some(Packet::Publish(p))) => {
            assert_eq!(p.properties().subscription_identifiers.len(), 1)
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn incomplete_input_needs_more_bytes() {
    let whole = frame(0x30, &[s(b"topic"), b"payload".to_vec()].concat());
    let mut decoder = Decoder::new(Direction::FromClient, 0);
    let mut buf = BytesMut::new();
    for (i, byte) in whole.iter().enumerate() {
        buf.put_u8(*byte);
        let result = decoder.decode(&mut buf).expect("valid prefix");
        if i + 1 < whole.len() {
            assert_eq!(result, None, "after {} bytes", i + 1);
            assert_eq!(buf.len(), i + 1, "an incomplete packet stays in the buffer");
        } else {
            assert!(matches!(result, Some(Packet::Publish(_))));
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn connect_switches_the_decoder_to_its_version() {
    let mut decoder = Decoder::new(Direction::FromClient, 0);
    let mut buf = BytesMut::from(
        &frame(
            0x10,
            &connect_body(b"MQTT", 5, 0x02, &[vec![0], s(b"c")].concat()),
        )[..],
    );
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(Packet::Connect(_)))
    ));
    assert_eq!(decoder.version(), V5);
    // AUTH is now a valid packet type.
    buf.extend_from_slice(&[0xF0, 0x00]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(Packet::Auth(_)))
    ));
}
