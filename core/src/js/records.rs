//! Subjects and record formats of the broker's state, following the NATS server's MQTT layout
//! (facts §4–5) where it has one:
//!
//! - session: `$MQTT.sess.<cidHash>`, a JSON record with `id`, `clean` and `subs` (converted
//!   filter → QoS) as the NATS server writes it, plus a `jetmq` object with what MQTT 5.0 needs
//!   (account, session expiry, subscription options);
//! - QoS 1/2 message: `$MQTT.msgs.<subject>`, header `Nmqtt-Pub:<qos>`, raw payload;
//! - retained message: `$MQTT.rmsgs.<subject>`, headers `Nmqtt-RTopic` and `Nmqtt-RFlags`,
//!   raw payload; deleted by purging the subject;
//! - on both, what MQTT 5.0 adds (the NATS server ignores these headers): `Jetmq-Props`, the
//!   message's properties (a v5 PUBLISH holding only them, in hex), and `Jetmq-Expires`, when
//!   its Message Expiry Interval runs out (milliseconds since the Unix epoch);
//! - inbound QoS 2: `$MQTT.qos2.in.<cidHash16>.<pi>`, header `Nmqtt-Pub:2<flags>`. The NATS
//!   server puts the raw client identifier in the subject, which breaks for identifiers with
//!   spaces or wildcards; jetmq uses a 16-character hash;
//! - outbound PUBREL: `$MQTT.out.pubrel.<cidHash16>.<pi>`, header `Nmqtt-PubRel:<pi>`, one
//!   message per identifier, purged on PUBCOMP (the NATS server keeps them in an interest
//!   stream acknowledged by a consumer).
//!
//! Each persistent session has one durable consumer, `jetmq_<cidHash16>`, whose filter
//! subjects are its QoS ≥ 1 subscriptions: consumers per session stay O(1), where the NATS
//! server creates one per subscription.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use super::{Header, Stream};
use crate::codec::{Decoder, Direction, Packet, ProtocolVersion, Publish, PublishProperties};
use sha2::{Digest, Sha256};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The NATS server's 8-character identifier hash (facts §4.1): SHA-256, then each of the first
/// `len` digest bytes modulo 62 into a base-62 alphabet.
#[must_use]
pub fn hash(input: &str, len: usize) -> String {
    let digest = Sha256::digest(input.as_bytes());
    digest
        .iter()
        .take(len.min(32))
        .map(|b| char::from(ALPHABET[usize::from(*b) % 62]))
        .collect()
}

/// The 8-character client-id hash the NATS server uses in session subjects.
#[must_use]
pub fn client_hash(client_id: &str) -> String {
    hash(client_id, 8)
}

/// A 16-character client-id hash for names that must not collide in practice (consumers,
/// QoS 2 and PUBREL subjects).
#[must_use]
pub fn client_hash16(client_id: &str) -> String {
    hash(client_id, 16)
}

/// The subject of a session record.
#[must_use]
pub fn session_subject(client_id: &str) -> ByteString {
    format!("{SESSIONS_PREFIX}{}", client_hash(client_id)).into()
}

/// The durable consumer of a persistent session.
#[must_use]
pub fn consumer_name(client_id: &str) -> ByteString {
    format!("jetmq_{}", client_hash16(client_id)).into()
}

/// `prefix` followed by `subject`, in one allocation of the exact size (a store subject is
/// made for every persisted message; `format!` and a `String` with spare room cost more).
#[must_use]
pub fn prefixed_subject(prefix: &str, subject: &str) -> ByteString {
    let mut text = String::with_capacity(prefix.len() + subject.len());
    text.push_str(prefix);
    text.push_str(subject);
    ByteString::from(text)
}

/// The `Nmqtt-Pub` header value of a QoS 1/2 message published with `qos` (no allocation).
#[must_use]
pub fn published_qos_value(qos: crate::codec::QoS) -> ByteString {
    ByteString::from_static(match qos {
        crate::codec::QoS::AtMostOnce => "0",
        crate::codec::QoS::AtLeastOnce => "1",
        crate::codec::QoS::ExactlyOnce => "2",
    })
}

/// The subject prefix of session records.
pub const SESSIONS_PREFIX: &str = Stream::Sessions.prefix();
/// The subject prefix of QoS 1/2 messages.
pub const MESSAGES_PREFIX: &str = Stream::Messages.prefix();
/// The subject prefix of retained messages.
pub const RETAINED_PREFIX: &str = Stream::Retained.prefix();
/// The subject prefix of inbound QoS 2 records.
pub const QOS2_PREFIX: &str = Stream::Qos2In.prefix();
/// The subject prefix of outbound PUBREL records.
pub const PUBREL_PREFIX: &str = "$MQTT.out.pubrel.";

/// The subject of an inbound QoS 2 record.
#[must_use]
pub fn qos2_subject(client_id: &str, packet_id: u16) -> ByteString {
    format!("{QOS2_PREFIX}{}.{packet_id}", client_hash16(client_id)).into()
}

/// The subject of an outbound PUBREL record.
#[must_use]
pub fn pubrel_subject(client_id: &str, packet_id: u16) -> ByteString {
    format!("{PUBREL_PREFIX}{}.{packet_id}", client_hash16(client_id)).into()
}

/// Splits `<hash16>.<pi>` off a QoS 2 or PUBREL subject.
#[must_use]
pub fn split_hash_and_packet_id<'a>(subject: &'a str, prefix: &str) -> Option<(&'a str, u16)> {
    let rest = subject.strip_prefix(prefix)?;
    let (hash, pi) = rest.split_once('.')?;
    Some((hash, pi.parse().ok()?))
}

/// The options of one subscription in a session record (MQTT 5.0 fields default to 3.1.1
/// behaviour when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SubscriptionRecord {
    /// Granted QoS.
    pub qos: u8,
    /// No Local.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nl: bool,
    /// Retain As Published.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rap: bool,
    /// Subscription Identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<u32>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(b: &bool) -> bool {
    !*b
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What jetmq adds to the NATS server's session record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JetmqSessionFields {
    /// The account (tenant); absent for the default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Session expiry in seconds; absent means it never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<u32>,
    /// When the session's last connection ended, in milliseconds since the Unix epoch;
    /// absent while connected (or if the broker stopped without writing it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<u64>,
    /// The stamp of the session's latest connect (a fleet's connect order): a node holding an
    /// offline copy of the session expires it only while the stored record still has the
    /// stamp its copy has, that is while no node has connected the client since.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stamp: u64,
    /// Protocol level of the last connection (4 or 5).
    #[serde(default)]
    pub level: u8,
    /// The authenticated user that made the session; absent for anonymous clients and
    /// brokers without authentication. A CONNECT of another user with the client id is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Options of each subscription, by MQTT topic filter.
    #[serde(default)]
    pub subs: BTreeMap<String, SubscriptionRecord>,
}

/// A session record, readable by the NATS server (which ignores the `jetmq` object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SessionRecord {
    /// The server that wrote it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// The client identifier; a mismatch on load means a hash collision.
    pub id: String,
    /// Whether the connection that wrote it had a clean session.
    #[serde(default, skip_serializing_if = "is_false")]
    pub clean: bool,
    /// Converted NATS filter → granted QoS, as the NATS server writes it.
    #[serde(default)]
    pub subs: BTreeMap<String, u8>,
    /// jetmq's fields.
    #[serde(default)]
    pub jetmq: JetmqSessionFields,
}

impl SessionRecord {
    /// The record as JSON bytes.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, integers and maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a record, or `None` if it is not one.
    #[must_use]
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The `Nmqtt-RFlags` value of a retained message: the PUBLISH flags nibble with the retain
/// bit, in lowercase hex.
#[must_use]
pub fn retained_flags(qos: u8) -> ByteString {
    format!("{:x}", (qos << 1) | 1).into()
}

/// Reads a `Nmqtt-RFlags` value back into the QoS, refusing invalid flags.
#[must_use]
pub fn parse_retained_flags(value: &str) -> Option<u8> {
    let flags = u8::from_str_radix(value.trim(), 16).ok()?;
    let qos = (flags >> 1) & 0b11;
    (flags < 0x0f && qos <= 2).then_some(qos)
}

/// Name of the header holding a message's MQTT 5.0 properties.
pub const PROPERTIES_HEADER: &str = "Jetmq-Props";

/// Name of the header holding when a message expires (milliseconds since the Unix epoch).
pub const EXPIRES_HEADER: &str = "Jetmq-Expires";

/// The header that keeps a message's MQTT 5.0 properties: a v5 PUBLISH (topic `p`, no
/// payload) carrying only them, in lowercase hex.
#[must_use]
pub fn properties_header(properties: &PublishProperties) -> Header {
    let mut publish = Publish::new(ByteString::from_static("p"), Bytes::new());
    publish.properties = Some(Box::new(properties.clone()));
    let packet = Packet::Publish(publish);
    let mut buf = BytesMut::with_capacity(packet.encoded_len(ProtocolVersion::V5));
    packet.encode(ProtocolVersion::V5, &mut buf);
    let mut hex = String::with_capacity(buf.len() * 2);
    for b in &buf {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    Header {
        name: PROPERTIES_HEADER,
        value: hex.into(),
    }
}

/// Reads a [`properties_header`] value back, or `None` if it is not one.
#[must_use]
pub fn parse_properties_header(value: &str) -> Option<Box<PublishProperties>> {
    let digits = value.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut buf = BytesMut::with_capacity(digits.len() / 2);
    for pair in digits.chunks_exact(2) {
        buf.extend_from_slice(&[(nibble(pair[0])? << 4) | nibble(pair[1])?]);
    }
    let mut decoder = Decoder::new(Direction::FromClient, 0);
    decoder.set_version(ProtocolVersion::V5);
    match decoder.decode(&mut buf) {
        Ok(Some(Packet::Publish(p))) if buf.is_empty() => p.properties,
        _ => None,
    }
}
