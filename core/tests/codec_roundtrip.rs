//! Property tests of `jetmq_core::codec`: encode→decode round trips for every packet of both
//! protocol versions, decoding arbitrary and mutated bytes without panicking, decoding the same
//! stream in arbitrary chunks, and the maximum packet size checked from the fixed header alone.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use jetmq_core::codec::{
    Ack, AckProperties, Auth, AuthProperties, AuthReason, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, ConnectReason, DecodeError, Decoder, Direction, Disconnect,
    DisconnectProperties, DisconnectReason, LastWill, Packet, PacketId, PayloadFormat,
    ProtocolVersion, PubAckReason, PubRelReason, Publish, PublishProperties, PublishQos, QoS,
    RetainHandling, SubAck, SubAckReason, Subscribe, SubscribeProperties, SubscriptionOptions,
    UnsubAck, UnsubAckReason, Unsubscribe, UnsubscribeProperties, UserProperty, WillProperties,
    MAX_VAR_INT,
};
use proptest::prelude::*;
use proptest::strategy::Union;

/// Longest generated string, in characters: keeps cases small and fast.
const MAX_STR: usize = 24;
/// Longest generated binary field or payload, in bytes.
const MAX_BIN: usize = 48;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Primitive strategies.

/// Any character but U+0000, biased towards ASCII and towards the characters MQTT treats
/// specially, with one-, two-, three- and four-byte UTF-8 sequences.
fn text_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => prop::char::range('\u{1}', '\u{7f}'),
        1 => prop::char::range('\u{80}', '\u{7ff}'),
        1 => prop::char::range('\u{800}', '\u{d7ff}'),
        1 => prop::char::range('\u{e000}', '\u{ffff}'),
        1 => prop::char::range('\u{10000}', '\u{10ffff}'),
        2 => prop::sample::select(vec!['/', '+', '#', '$', 'é', '中', '😀', '\u{feff}']),
    ]
}

/// A string without U+0000, possibly empty.
fn text() -> impl Strategy<Value = ByteString> {
    prop::collection::vec(text_char(), 0..=MAX_STR)
        .prop_map(|chars| ByteString::from(chars.into_iter().collect::<String>()))
}

/// A topic name: non-empty, no wildcard characters.
fn topic_name() -> impl Strategy<Value = ByteString> {
    let c = text_char().prop_filter("no wildcards in a topic name", |c| *c != '+' && *c != '#');
    prop::collection::vec(c, 1..=MAX_STR)
        .prop_map(|chars| ByteString::from(chars.into_iter().collect::<String>()))
}

/// A topic filter as a client sends it (validation is the broker's), sometimes shared.
fn topic_filter() -> impl Strategy<Value = ByteString> {
    (any::<bool>(), text()).prop_map(|(shared, f)| {
        if shared {
            ByteString::from(format!("$share/{f}"))
        } else {
            f
        }
    })
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..=MAX_BIN).prop_map(Bytes::from)
}

fn opt<S: Strategy>(s: S) -> impl Strategy<Value = Option<S::Value>> {
    prop::option::of(s)
}

fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> {
    prop::collection::vec(
        (text(), text()).prop_map(|(name, value)| UserProperty { name, value }),
        0..=4,
    )
}

fn non_zero_u16() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|v| NonZeroU16::new(v).expect("range starts at 1"))
}

fn non_zero_u32() -> impl Strategy<Value = NonZeroU32> {
    (1..=u32::MAX).prop_map(|v| NonZeroU32::new(v).expect("range starts at 1"))
}

/// A Subscription Identifier: 1 to the largest variable byte integer.
fn subscription_id() -> impl Strategy<Value = NonZeroU32> {
    prop_oneof![
        (1..=MAX_VAR_INT),
        prop::sample::select(vec![
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            MAX_VAR_INT
        ]),
    ]
    .prop_map(|v| NonZeroU32::new(v).expect("never 0"))
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|v| PacketId::new(v).expect("range starts at 1"))
}

fn qos() -> impl Strategy<Value = QoS> {
    prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn payload_format() -> impl Strategy<Value = PayloadFormat> {
    prop::sample::select(vec![PayloadFormat::Unspecified, PayloadFormat::Utf8])
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop::sample::select(ALL_VERSIONS.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Property sets: every field of every set in MQTT 5.0, the defaults in 3.1.1.

fn connect_properties(version: ProtocolVersion) -> BoxedStrategy<ConnectProperties> {
    if !version.is_v5() {
        return Just(ConnectProperties::default()).boxed();
    }
    (
        opt(any::<u32>()),
        opt(non_zero_u16()),
        opt(non_zero_u32()),
        opt(any::<u16>()),
        opt(any::<bool>()),
        opt(any::<bool>()),
        user_properties(),
        opt(text()),
        opt(binary()),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, user_properties, method, data)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties,
                // Authentication Data only comes with an Authentication Method.
                authentication_data: data.filter(|_| method.is_some()),
                authentication_method: method,
            },
        )
        .boxed()
}

fn will_properties(version: ProtocolVersion) -> BoxedStrategy<WillProperties> {
    if !version.is_v5() {
        return Just(WillProperties::default()).boxed();
    }
    (
        opt(any::<u32>()),
        opt(payload_format()),
        opt(any::<u32>()),
        opt(text()),
        opt(topic_name()),
        opt(binary()),
        user_properties(),
    )
        .prop_map(
            |(wdi, pfi, mei, ct, rt, cd, user_properties)| WillProperties {
                will_delay_interval: wdi,
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                user_properties,
            },
        )
        .boxed()
}

fn connack_properties(version: ProtocolVersion) -> BoxedStrategy<ConnAckProperties> {
    if !version.is_v5() {
        return Just(ConnAckProperties::default()).boxed();
    }
    let first = (
        opt(any::<u32>()),
        opt(non_zero_u16()),
        // Maximum QoS is only ever 0 or 1 on the wire.
        opt(prop::sample::select(vec![
            QoS::AtMostOnce,
            QoS::AtLeastOnce,
        ])),
        opt(any::<bool>()),
        opt(non_zero_u32()),
        opt(text()),
        opt(any::<u16>()),
        opt(text()),
        user_properties(),
    );
    let second = (
        opt(any::<bool>()),
        opt(any::<bool>()),
        opt(any::<bool>()),
        opt(any::<u16>()),
        opt(text()),
        opt(text()),
        opt(text()),
        opt(binary()),
    );
    (first, second)
        .prop_map(
            |(
                (sei, rm, mq, ra, mps, aci, tam, rs, user_properties),
                (wsa, sia, ssa, ska, ri, sr, am, ad),
            )| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_data: ad.filter(|_| am.is_some()),
                    authentication_method: am,
                }
            },
        )
        .boxed()
}

/// PUBLISH properties; Subscription Identifiers only when `server` (a client never sends them).
fn publish_properties(version: ProtocolVersion, server: bool) -> BoxedStrategy<PublishProperties> {
    if !version.is_v5() {
        return Just(PublishProperties::default()).boxed();
    }
    let ids = if server {
        prop_oneof![
            Just(Vec::new()),
            prop::collection::vec(subscription_id(), 1..=4)
        ]
        .boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        opt(payload_format()),
        opt(any::<u32>()),
        opt(non_zero_u16()),
        opt(topic_name()),
        opt(binary()),
        user_properties(),
        ids,
        opt(text()),
    )
        .prop_map(
            |(pfi, mei, ta, rt, cd, user_properties, ids, ct)| PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                topic_alias: ta,
                response_topic: rt,
                correlation_data: cd,
                user_properties,
                subscription_identifiers: ids,
                content_type: ct,
            },
        )
        .boxed()
}

fn ack_properties(version: ProtocolVersion) -> BoxedStrategy<AckProperties> {
    if !version.is_v5() {
        return Just(AckProperties::default()).boxed();
    }
    (opt(text()), user_properties())
        .prop_map(|(reason_string, user_properties)| AckProperties {
            reason_string,
            user_properties,
        })
        .boxed()
}

fn subscribe_properties(version: ProtocolVersion) -> BoxedStrategy<SubscribeProperties> {
    if !version.is_v5() {
        return Just(SubscribeProperties::default()).boxed();
    }
    (opt(subscription_id()), user_properties())
        .prop_map(
            |(subscription_identifier, user_properties)| SubscribeProperties {
                subscription_identifier,
                user_properties,
            },
        )
        .boxed()
}

fn unsubscribe_properties(version: ProtocolVersion) -> BoxedStrategy<UnsubscribeProperties> {
    if !version.is_v5() {
        return Just(UnsubscribeProperties::default()).boxed();
    }
    user_properties()
        .prop_map(|user_properties| UnsubscribeProperties { user_properties })
        .boxed()
}

fn disconnect_properties() -> impl Strategy<Value = DisconnectProperties> {
    (
        opt(any::<u32>()),
        opt(text()),
        user_properties(),
        opt(text()),
    )
        .prop_map(|(sei, reason_string, user_properties, server_reference)| {
            DisconnectProperties {
                session_expiry_interval: sei,
                reason_string,
                user_properties,
                server_reference,
            }
        })
}

fn auth_properties() -> impl Strategy<Value = AuthProperties> {
    (opt(text()), opt(binary()), opt(text()), user_properties()).prop_map(
        |(method, data, reason_string, user_properties)| AuthProperties {
            authentication_data: data.filter(|_| method.is_some()),
            authentication_method: method,
            reason_string,
            user_properties,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Packets.

fn connect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let will = opt((
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        will_properties(version),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        }));
    (
        any::<bool>(),
        any::<u16>(),
        connect_properties(version),
        text(),
        will,
        opt(text()),
        opt(binary()),
    )
        .prop_map(
            move |(clean_start, keep_alive, properties, client_id, will, username, password)| {
                // MQTT 3.1 and 3.1.1 forbid a password without a user name.
                let password = if version.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
        .boxed()
}

fn connack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let reason = if version.is_v5() {
        prop::sample::select(ConnectReason::ALL).boxed()
    } else {
        prop::sample::select(vec![
            ConnectReason::Success,
            ConnectReason::UnsupportedProtocolVersion,
            ConnectReason::ClientIdentifierNotValid,
            ConnectReason::ServerUnavailable,
            ConnectReason::BadUserNameOrPassword,
            ConnectReason::NotAuthorized,
        ])
        .boxed()
    };
    (any::<bool>(), reason, connack_properties(version))
        .prop_map(|(session_present, reason, properties)| {
            Packet::ConnAck(Box::new(ConnAck {
                session_present: session_present && reason == ConnectReason::Success,
                reason,
                properties,
            }))
        })
        .boxed()
}

fn publish_qos() -> impl Strategy<Value = PublishQos> {
    prop_oneof![
        Just(PublishQos::AtMostOnce),
        packet_id().prop_map(PublishQos::AtLeastOnce),
        packet_id().prop_map(PublishQos::ExactlyOnce),
    ]
}

/// A PUBLISH; with Subscription Identifiers sometimes when `server`.
fn publish(version: ProtocolVersion, server: bool) -> BoxedStrategy<Packet> {
    (
        any::<bool>(),
        publish_qos(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        publish_properties(version, server),
        binary(),
    )
        .prop_map(
            |(dup, qos, retain, topic, use_alias, properties, payload)| {
                // A topic alias may stand for the whole topic name.
                let topic = if use_alias && properties.topic_alias.is_some() {
                    ByteString::new()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && qos != PublishQos::AtMostOnce,
                    qos,
                    retain,
                    topic,
                    // The decoder gives `None` for an empty set, so the generator does too.
                    properties: (properties != PublishProperties::default())
                        .then(|| Box::new(properties)),
                    payload,
                })
            },
        )
        .boxed()
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
fn ack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let pub_ack_reason = if v5 {
        prop::sample::select(PubAckReason::ALL).boxed()
    } else {
        Just(PubAckReason::Success).boxed()
    };
    let pub_rel_reason = if v5 {
        prop::sample::select(PubRelReason::ALL).boxed()
    } else {
        Just(PubRelReason::Success).boxed()
    };
    let pub_ack = (packet_id(), pub_ack_reason, ack_properties(version))
        .prop_map(|(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties,
        })
        .boxed();
    let pub_rel = (packet_id(), pub_rel_reason, ack_properties(version))
        .prop_map(|(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties,
        })
        .boxed();
    prop_oneof![
        pub_ack.clone().prop_map(Packet::PubAck),
        pub_ack.prop_map(Packet::PubRec),
        pub_rel.clone().prop_map(Packet::PubRel),
        pub_rel.prop_map(Packet::PubComp),
    ]
    .boxed()
}

fn subscribe(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let options = (
        qos(),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![
            RetainHandling::SendAtSubscribe,
            RetainHandling::SendIfNew,
            RetainHandling::DoNotSend,
        ]),
    );
    let filter = (topic_filter(), options).prop_map(move |(filter, (qos, nl, rap, rh))| {
        let options = if v5 {
            SubscriptionOptions {
                qos,
                // No Local is a protocol error on a shared subscription.
                no_local: nl && !filter.starts_with("$share/"),
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions::new(qos)
        };
        (filter, options)
    });
    (
        packet_id(),
        subscribe_properties(version),
        prop::collection::vec(filter, 1..=5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
        .boxed()
}

fn suback(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let reason = if version.is_v5() {
        prop::sample::select(SubAckReason::ALL).boxed()
    } else {
        prop::sample::select(vec![
            SubAckReason::GrantedQos0,
            SubAckReason::GrantedQos1,
            SubAckReason::GrantedQos2,
            SubAckReason::UnspecifiedError,
        ])
        .boxed()
    };
    (
        packet_id(),
        ack_properties(version),
        prop::collection::vec(reason, 1..=5),
    )
        .prop_map(|(packet_id, properties, reasons)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reasons,
            })
        })
        .boxed()
}

fn unsubscribe(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        packet_id(),
        unsubscribe_properties(version),
        prop::collection::vec(topic_filter(), 1..=5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
        .boxed()
}

fn unsuback(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let reasons = if version.is_v5() {
        prop::collection::vec(prop::sample::select(UnsubAckReason::ALL), 1..=5).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), ack_properties(version), reasons)
        .prop_map(|(packet_id, properties, reasons)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reasons,
            })
        })
        .boxed()
}

fn disconnect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !version.is_v5() {
        return Just(Packet::Disconnect(Box::new(Disconnect::new(
            DisconnectReason::NormalDisconnection,
        ))))
        .boxed();
    }
    (
        prop::sample::select(DisconnectReason::ALL),
        disconnect_properties(),
    )
        .prop_map(|(reason, properties)| {
            Packet::Disconnect(Box::new(Disconnect { reason, properties }))
        })
        .boxed()
}

fn auth() -> BoxedStrategy<Packet> {
    (prop::sample::select(AuthReason::ALL), auth_properties())
        .prop_map(|(reason, properties)| Packet::Auth(Box::new(Auth { reason, properties })))
        .boxed()
}

/// Packets a client may send after its CONNECT (so not CONNECT itself).
fn client_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut options = vec![
        publish(version, false),
        ack(version),
        subscribe(version),
        unsubscribe(version),
        Just(Packet::PingReq).boxed(),
        disconnect(version),
    ];
    if version.is_v5() {
        options.push(auth());
    }
    Union::new(options).boxed()
}

/// Packets a server may send.
fn server_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut options = vec![
        connack(version),
        publish(version, true),
        ack(version),
        suback(version),
        unsuback(version),
        Just(Packet::PingResp).boxed(),
        disconnect(version),
    ];
    if version.is_v5() {
        options.push(auth());
    }
    Union::new(options).boxed()
}

/// Any of the fifteen packets that `version` can carry.
fn any_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    prop_oneof![
        1 => connect(version),
        4 => client_packet(version),
        4 => server_packet(version),
    ]
    .boxed()
}

/// A version and a packet of that version.
fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| (Just(v), any_packet(v)))
}

/// The directions `packet` may be decoded from.
fn directions(packet: &Packet) -> Vec<Direction> {
    match packet {
        Packet::Connect(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) | Packet::PingReq => {
            vec![Direction::FromClient]
        }
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            vec![Direction::FromServer]
        }
        Packet::Publish(p) if !p.properties().subscription_identifiers.is_empty() => {
            vec![Direction::FromServer]
        }
        _ => vec![Direction::FromClient, Direction::FromServer],
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding helpers.

fn decoder(direction: Direction, version: ProtocolVersion) -> Decoder {
    let mut decoder = Decoder::new(direction, 0);
    decoder.set_version(version);
    decoder
}

fn encode(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf);
    buf
}

/// Calls `decode` until it returns `Ok(None)` or an error, checking that `Ok(None)` leaves the
/// buffer untouched. Every decoded packet is paired with the version it was read with.
fn drain(
    decoder: &mut Decoder,
    buf: &mut BytesMut,
    out: &mut Vec<(ProtocolVersion, Packet)>,
) -> Result<Result<(), DecodeError>, TestCaseError> {
    loop {
        let before = buf.clone();
        let version = decoder.version();
        match decoder.decode(buf) {
            Ok(Some(packet)) => {
                prop_assert!(buf.len() < before.len(), "a decoded packet consumes bytes");
                out.push((version, packet));
            }
            Ok(None) => {
                prop_assert_eq!(
                    &before[..],
                    &buf[..],
                    "Ok(None) must leave the buffer as it was"
                );
                return Ok(Ok(()));
            }
            Err(e) => return Ok(Err(e)),
        }
    }
}

/// Whatever the decoder accepted, the encoder writes back in a form that decodes to the same
/// packet: decoding is a fixed point of encode→decode.
fn check_reencodes(
    version: ProtocolVersion,
    direction: Direction,
    packet: &Packet,
) -> Result<(), TestCaseError> {
    let mut buf = encode(packet, version);
    prop_assert_eq!(buf.len(), packet.encoded_len(version));
    let decoded = decoder(direction, version).decode(&mut buf);
    prop_assert_eq!(
        decoded,
        Ok(Some(packet.clone())),
        "re-encoding a decoded packet"
    );
    prop_assert!(buf.is_empty());
    Ok(())
}

/// Feeds `bytes` to a fresh decoder of `direction` and `version`, never expecting a panic, and
/// checks every packet it accepts re-encodes faithfully.
fn decode_never_panics(
    bytes: &[u8],
    version: ProtocolVersion,
    direction: Direction,
) -> Result<(), TestCaseError> {
    let mut d = decoder(direction, version);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    let _ = drain(&mut d, &mut buf, &mut out)?;
    for (v, packet) in &out {
        check_reencodes(*v, direction, packet)?;
    }
    Ok(())
}

const BOTH_DIRECTIONS: [Direction; 2] = [Direction::FromClient, Direction::FromServer];
const ALL_VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config())]

    /// Property 1: encode→decode is the identity, and `encoded_len` is exact.
    #[test]
    fn roundtrip_every_packet((version, packet) in versioned_packet()) {
        let encoded = encode(&packet, version);
        prop_assert_eq!(encoded.len(), packet.encoded_len(version));
        prop_assert_eq!(
            encoded.len(),
            1 + jetmq_core::codec::var_int_len(
                u32::try_from(packet.remaining_len(version)).expect("small packet")
            ) + packet.remaining_len(version)
        );
        for direction in directions(&packet) {
            let mut buf = encoded.clone();
            let mut d = decoder(direction, version);
            let decoded = d.decode(&mut buf);
            prop_assert_eq!(decoded, Ok(Some(packet.clone())), "direction {:?}", direction);
            prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
            prop_assert_eq!(d.decode(&mut buf), Ok(None));
            if let Packet::Connect(c) = &packet {
                prop_assert_eq!(d.version(), c.protocol, "a CONNECT sets the decoder's version");
            }
        }
    }

    /// Property 2a: arbitrary bytes never make the decoder panic, in any version or direction.
    #[test]
    fn decode_arbitrary_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..=512),
    ) {
        for version in ALL_VERSIONS {
            for direction in BOTH_DIRECTIONS {
                decode_never_panics(&bytes, version, direction)?;
            }
        }
    }

    /// Property 2a, biased: arbitrary bytes behind a plausible fixed header (a valid type and
    /// flags nibble, a short remaining length), so bodies get parsed rather than rejected at once.
    #[test]
    fn decode_arbitrary_bodies_never_panics(
        first in prop::sample::select(vec![
            0x10u8, 0x20, 0x30, 0x32, 0x34, 0x3B, 0x3D, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2,
            0xB0, 0xC0, 0xD0, 0xE0, 0xF0,
        ]),
        body in prop::collection::vec(any::<u8>(), 0..=120),
    ) {
        let mut bytes = vec![first, u8::try_from(body.len()).expect("at most 120")];
        bytes.extend_from_slice(&body);
        for version in ALL_VERSIONS {
            for direction in BOTH_DIRECTIONS {
                decode_never_panics(&bytes, version, direction)?;
            }
        }
    }

    /// Property 2b: valid packets with a few bytes overwritten never make the decoder panic.
    #[test]
    fn decode_mutated_packets_never_panics(
        (version, packets) in version().prop_flat_map(|v| {
            (Just(v), prop::collection::vec(any_packet(v), 1..=3))
        }),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..=4),
    ) {
        let mut bytes = BytesMut::new();
        for packet in &packets {
            packet.encode(version, &mut bytes);
        }
        for (index, value) in mutations {
            let i = index.index(bytes.len());
            bytes[i] = value;
        }
        for direction in BOTH_DIRECTIONS {
            decode_never_panics(&bytes, version, direction)?;
        }
    }

    /// Property 2c: every strict prefix of a valid packet is `Ok(None)` with the buffer intact.
    #[test]
    fn decode_prefix_waits_for_more((version, packet) in versioned_packet()) {
        let encoded = encode(&packet, version);
        for direction in directions(&packet) {
            for end in 0..encoded.len() {
                let mut buf = BytesMut::from(&encoded[..end]);
                prop_assert_eq!(decoder(direction, version).decode(&mut buf), Ok(None));
                prop_assert_eq!(&buf[..], &encoded[..end]);
            }
        }
    }

    /// Property 3: decoding a stream in arbitrary chunks gives the packets that decoding it at
    /// once gives, which are the packets that were encoded.
    #[test]
    fn chunked_decoding_matches_whole(
        (version, from_client, packets) in version().prop_flat_map(|v| {
            any::<bool>().prop_flat_map(move |from_client| {
                let packets = if from_client {
                    // A client stream opens with the CONNECT that sets the version.
                    (connect(v), prop::collection::vec(client_packet(v), 0..=7))
                        .prop_map(|(c, mut rest)| {
                            rest.insert(0, c);
                            rest
                        })
                        .boxed()
                } else {
                    prop::collection::vec(server_packet(v), 1..=8).boxed()
                };
                (Just(v), Just(from_client), packets)
            })
        }),
        splits in prop::collection::vec(any::<prop::sample::Index>(), 0..=12),
    ) {
        let direction = if from_client { Direction::FromClient } else { Direction::FromServer };
        let new_decoder = || {
            let mut d = Decoder::new(direction, 0);
            if !from_client {
                d.set_version(version);
            }
            d
        };
        let mut stream = BytesMut::new();
        for packet in &packets {
            packet.encode(version, &mut stream);
        }

        // All at once.
        let mut whole = Vec::new();
        let mut buf = stream.clone();
        prop_assert_eq!(drain(&mut new_decoder(), &mut buf, &mut whole)?, Ok(()));
        prop_assert!(buf.is_empty());
        let whole: Vec<Packet> = whole.into_iter().map(|(_, p)| p).collect();
        prop_assert_eq!(&whole, &packets);

        // In chunks.
        let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut d = new_decoder();
        let mut buf = BytesMut::new();
        let mut chunked = Vec::new();
        for pair in cuts.windows(2) {
            buf.extend_from_slice(&stream[pair[0]..pair[1]]);
            prop_assert_eq!(drain(&mut d, &mut buf, &mut chunked)?, Ok(()));
        }
        prop_assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
        let chunked: Vec<Packet> = chunked.into_iter().map(|(_, p)| p).collect();
        prop_assert_eq!(chunked, whole);
        prop_assert_eq!(d.version(), version);
    }
}

/// Property 4: the maximum packet size is enforced from the fixed header alone, before the body
/// arrives and without reserving memory for the declared length.
#[test]
fn max_packet_size_checked_from_fixed_header() {
    // A QoS 0 PUBLISH on "a" whose Remaining Length is exactly 1 000 000.
    let topic = ByteString::from_static("a");
    let publish = Packet::Publish(Publish::new(topic, Bytes::from(vec![0u8; 1_000_000 - 3])));
    assert_eq!(publish.remaining_len(ProtocolVersion::V311), 1_000_000);
    let full = encode(&publish, ProtocolVersion::V311);
    // Type and flags, a three-byte Remaining Length, and the first byte of the topic length.
    assert_eq!(&full[..5], &[0x30, 0xC0, 0x84, 0x3D, 0x00]);

    for version in ALL_VERSIONS {
        for direction in BOTH_DIRECTIONS {
            let mut d = decoder(direction, version);
            let mut decoder_max = Decoder::new(direction, 100);
            decoder_max.set_version(version);
            assert_eq!(decoder_max.max_packet_size(), 100);

            // An incomplete fixed header: nothing to decide yet.
            let mut buf = BytesMut::from(&full[..3]);
            assert_eq!(decoder_max.decode(&mut buf), Ok(None));
            assert_eq!(&buf[..], &full[..3]);

            let mut buf = BytesMut::from(&full[..5]);
            let capacity = buf.capacity();
            let result = decoder_max.decode(&mut buf);
            assert!(
                matches!(
                    result,
                    Err(DecodeError::PacketTooLarge {
                        size: 1_000_004,
                        max: 100
                    })
                ),
                "{result:?}"
            );
            assert_eq!(buf.capacity(), capacity, "the decoder reserved memory");
            assert_eq!(&buf[..], &full[..5]);

            // Without the limit the same five bytes just wait for the rest.
            let mut buf = BytesMut::from(&full[..5]);
            let capacity = buf.capacity();
            assert_eq!(d.decode(&mut buf), Ok(None));
            assert_eq!(buf.capacity(), capacity, "the decoder reserved memory");
        }
    }
}

/// Property 4, at the boundary: a packet of exactly the maximum size is accepted, one byte more
/// is refused.
#[test]
fn max_packet_size_boundary() {
    let topic = ByteString::from_static("t");
    for size in [99usize, 100, 101] {
        // Two header bytes, three bytes of topic, then the payload.
        let publish = Packet::Publish(Publish::new(
            topic.clone(),
            Bytes::from(vec![7u8; size - 5]),
        ));
        let encoded = encode(&publish, ProtocolVersion::V311);
        assert_eq!(encoded.len(), size);
        let mut d = Decoder::new(Direction::FromClient, 100);
        let mut buf = encoded.clone();
        let result = d.decode(&mut buf);
        if size <= 100 {
            assert_eq!(result, Ok(Some(publish)));
        } else {
            assert_eq!(result, Err(DecodeError::PacketTooLarge { size, max: 100 }));
        }
    }
}

/// Round-trips `packet` from every direction that may carry it, checking `encoded_len`.
fn assert_roundtrip(packet: &Packet, version: ProtocolVersion) {
    let encoded = encode(packet, version);
    assert_eq!(encoded.len(), packet.encoded_len(version));
    for direction in directions(packet) {
        let mut buf = encoded.clone();
        let decoded = decoder(direction, version).decode(&mut buf);
        assert!(
            decoded == Ok(Some(packet.clone())),
            "{direction:?}: {decoded:?}"
        );
        assert!(buf.is_empty());
    }
}

/// The sizes the random packets are too small to reach: Remaining Lengths and Property Lengths
/// on each side of the variable byte integer boundaries, and strings and binary data of the
/// largest length a two-byte prefix allows.
#[test]
fn length_boundaries_roundtrip() {
    let topic = ByteString::from_static("a");
    for remaining in [127usize, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
        let publish = Packet::Publish(Publish::new(
            topic.clone(),
            Bytes::from(vec![1u8; remaining - 3]),
        ));
        assert_eq!(publish.remaining_len(ProtocolVersion::V311), remaining);
        let header = 1 + jetmq_core::codec::var_int_len(u32::try_from(remaining).unwrap());
        assert_eq!(
            publish.encoded_len(ProtocolVersion::V311),
            header + remaining
        );
        assert_roundtrip(&publish, ProtocolVersion::V311);
    }

    // Property Length 127, 128, 16 383, 16 384: one Correlation Data (1 + 2 + n bytes) and,
    // past 65 538, User Properties to fill up.
    for property_len in [127usize, 128, 16_383, 16_384, 65_538, 70_000] {
        let mut properties = PublishProperties::default();
        let data = (property_len - 3).min(usize::from(u16::MAX));
        properties.correlation_data = Some(Bytes::from(vec![2u8; data]));
        let rest = property_len - 3 - data;
        if rest > 0 {
            // One User Property takes 1 + 2 + name + 2 + value bytes.
            properties.user_properties.push(UserProperty {
                name: ByteString::from_static("n"),
                value: ByteString::from("v".repeat(rest - 6)),
            });
        }
        let publish = Packet::Publish(Publish {
            properties: Some(Box::new(properties)),
            ..Publish::new(topic.clone(), Bytes::from_static(b"payload"))
        });
        let len_of_len = jetmq_core::codec::var_int_len(u32::try_from(property_len).unwrap());
        assert_eq!(
            publish.remaining_len(ProtocolVersion::V5),
            3 + len_of_len + property_len + 7
        );
        assert_roundtrip(&publish, ProtocolVersion::V5);
    }

    // The longest string and binary data, with multi-byte characters up to the last byte.
    let long = ByteString::from(format!("{}é", "x".repeat(65_533)));
    assert_eq!(long.len(), 65_535);
    for version in ALL_VERSIONS {
        let mut connect = Connect::new(version, long.clone());
        connect.username = Some(long.clone());
        connect.password = Some(Bytes::from(vec![3u8; 65_535]));
        connect.will = Some(LastWill {
            topic: long.clone(),
            payload: Bytes::from(vec![4u8; 65_535]),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: WillProperties::default(),
        });
        assert_roundtrip(&Packet::Connect(Box::new(connect)), version);
        let publish = Packet::Publish(Publish::new(long.clone(), Bytes::new()));
        assert_roundtrip(&publish, version);
    }
}

/// MQTT 5.0 lets a reason code go without a Property Length, but some clients (rumqttc) cannot
/// read that form, so the encoder always writes the length after a reason code.
#[test]
fn v5_reason_codes_are_followed_by_a_property_length() {
    use jetmq_core::codec::{Ack, Disconnect, DisconnectReason, PacketId, PubAckReason};
    let mut ack = Ack::new(PacketId::new(1).expect("non-zero"));
    ack.reason = PubAckReason::NoMatchingSubscribers;
    let mut buf = BytesMut::new();
    Packet::PubAck(ack).encode(ProtocolVersion::V5, &mut buf);
    assert_eq!(&buf[..], &[0x40, 4, 0, 1, 0x10, 0]);
    let mut buf = BytesMut::new();
    Packet::PubAck(Ack::new(PacketId::new(1).expect("non-zero")))
        .encode(ProtocolVersion::V5, &mut buf);
    assert_eq!(
        &buf[..],
        &[0x40, 2, 0, 1],
        "success without properties stays short"
    );
    let mut buf = BytesMut::new();
    Packet::Disconnect(Box::new(Disconnect::new(
        DisconnectReason::ServerShuttingDown,
    )))
    .encode(ProtocolVersion::V5, &mut buf);
    assert_eq!(&buf[..], &[0xE0, 2, 0x8B, 0]);
}
