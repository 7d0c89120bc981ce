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

use super::{Header, StoreRequest, StoredMessage, Stream, EXPECTED_LAST_SUBJECT_SEQUENCE};
use crate::codec::{Decoder, Direction, Packet, ProtocolVersion, Publish, PublishProperties, QoS};
use sha2::{Digest, Sha256};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A client-identifier hash: `N` base-62 characters, kept inline (no allocation).
pub type Hash<const N: usize> = heapless::String<N>;

/// The NATS server's identifier hash (facts §4.1): SHA-256, then each of the first `N` (at
/// most 32) digest bytes modulo 62 into a base-62 alphabet.
#[must_use]
pub fn hash<const N: usize>(input: &str) -> Hash<N> {
    let digest = Sha256::digest(input.as_bytes());
    let mut out = Hash::new();
    for b in digest.iter().take(N.min(32)) {
        // Cannot fail: at most N characters are pushed into room for N.
        let _ = out.push(char::from(ALPHABET[usize::from(*b) % 62]));
    }
    out
}

/// The 8-character client-id hash the NATS server uses in session subjects.
#[must_use]
pub fn client_hash(client_id: &str) -> Hash<8> {
    hash(client_id)
}

/// A 16-character client-id hash for names that must not collide in practice (consumers,
/// QoS 2 and PUBREL subjects).
#[must_use]
pub fn client_hash16(client_id: &str) -> Hash<16> {
    hash(client_id)
}

/// The subject of a session record.
#[must_use]
pub fn session_subject(client_id: &str) -> ByteString {
    format!("{SESSIONS_PREFIX}{}", client_hash(client_id)).into()
}

/// The durable consumer of a persistent session.
#[must_use]
pub fn consumer_name(client_id: &str) -> ByteString {
    format!("{CONSUMER_PREFIX}{}", client_hash16(client_id)).into()
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

/// The [`PUB_HEADER`] value of a message published with `qos` (no allocation).
#[must_use]
pub fn published_qos_value(qos: QoS) -> ByteString {
    ByteString::from_static(match qos {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    })
}

/// The header of a QoS 1/2 message's record and of an MQTT message's copy on NATS: the QoS it
/// was published with (the NATS server's Appendix B); on an inbound QoS 2 record, `2` and the
/// PUBLISH flags in hex.
pub const PUB_HEADER: &str = "Nmqtt-Pub";
/// The header of a retained message's record holding its MQTT topic.
pub const RETAINED_TOPIC_HEADER: &str = "Nmqtt-RTopic";
/// The header of a retained message's record holding its PUBLISH flags ([`retained_flags`]).
pub const RETAINED_FLAGS_HEADER: &str = "Nmqtt-RFlags";
/// The start of the name of every session's durable consumer ([`consumer_name`]).
pub const CONSUMER_PREFIX: &str = "jetmq_";

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

/// What MQTT 5.0 adds to a message's record: its properties and when its Message Expiry
/// Interval runs out, in milliseconds since the Unix epoch (so both survive a restart).
#[derive(Debug, Clone, Copy, Default)]
pub struct V5Fields<'a> {
    /// The message's properties, if it has any.
    pub properties: Option<&'a PublishProperties>,
    /// When it expires, if it does.
    pub expires_at: Option<u64>,
}

impl V5Fields<'_> {
    /// Appends the headers that hold these fields ([`PROPERTIES_HEADER`], [`EXPIRES_HEADER`]).
    pub fn push_headers(self, headers: &mut Vec<Header>) {
        if let Some(props) = self.properties {
            headers.push(properties_header(props));
        }
        if let Some(at) = self.expires_at {
            headers.push(Header {
                name: EXPIRES_HEADER,
                value: at.to_string().into(),
            });
        }
    }
}

/// The record of a QoS 1/2 message published with `qos` on the NATS subject `subject` (the
/// topic's), in the messages stream.
#[must_use]
pub fn message_write(subject: &str, qos: QoS, payload: Bytes, v5: V5Fields<'_>) -> StoreRequest {
    let mut headers = vec![Header {
        name: PUB_HEADER,
        value: published_qos_value(qos),
    }];
    v5.push_headers(&mut headers);
    StoreRequest::Publish {
        stream: Stream::Messages,
        subject: prefixed_subject(MESSAGES_PREFIX, subject),
        headers,
        payload,
    }
}

/// The record of the message retained on `topic` (NATS subject `subject`): written, or, for
/// an empty payload, purged ([MQTT-3.3.1-10]: an empty retained message deletes the topic's).
#[must_use]
pub fn retained_write(
    topic: &ByteString,
    subject: &str,
    qos: QoS,
    payload: Bytes,
    v5: V5Fields<'_>,
) -> StoreRequest {
    if payload.is_empty() {
        return retained_purge(subject);
    }
    let mut headers = vec![
        Header {
            name: RETAINED_TOPIC_HEADER,
            value: topic.clone(),
        },
        Header {
            name: RETAINED_FLAGS_HEADER,
            value: retained_flags(qos as u8),
        },
    ];
    v5.push_headers(&mut headers);
    StoreRequest::Publish {
        stream: Stream::Retained,
        subject: prefixed_subject(RETAINED_PREFIX, subject),
        headers,
        payload,
    }
}

/// The purge of the message retained on the NATS subject `subject`.
#[must_use]
pub fn retained_purge(subject: &str) -> StoreRequest {
    StoreRequest::Purge {
        stream: Stream::Retained,
        subject: prefixed_subject(RETAINED_PREFIX, subject),
    }
}

/// The inbound QoS 2 record of `client_id`'s packet `packet_id` (PUBREC sent, PUBREL not yet
/// received), for a PUBLISH with the RETAIN flag `retain`.
#[must_use]
pub fn qos2_write(client_id: &str, packet_id: u16, retain: bool) -> StoreRequest {
    let flags = 0b0100 | u8::from(retain);
    StoreRequest::Publish {
        stream: Stream::Qos2In,
        subject: qos2_subject(client_id, packet_id),
        headers: vec![Header {
            name: PUB_HEADER,
            value: format!("2{flags:x}").into(),
        }],
        payload: Bytes::new(),
    }
}

/// The purge of `client_id`'s inbound QoS 2 record of `packet_id` (released).
#[must_use]
pub fn qos2_purge(client_id: &str, packet_id: u16) -> StoreRequest {
    StoreRequest::Purge {
        stream: Stream::Qos2In,
        subject: qos2_subject(client_id, packet_id),
    }
}

/// The read of every inbound QoS 2 record of `client_id`.
#[must_use]
pub fn qos2_list(client_id: &str) -> StoreRequest {
    StoreRequest::List {
        stream: Stream::Qos2In,
        prefix: format!("{QOS2_PREFIX}{}.", client_hash16(client_id)).into(),
    }
}

/// The outbound PUBREL record of `client_id`'s packet `packet_id` (PUBREL sent, PUBCOMP not
/// yet received): its subject alone says it all.
#[must_use]
pub fn pubrel_write(client_id: &str, packet_id: u16) -> StoreRequest {
    StoreRequest::Publish {
        stream: Stream::PubRel,
        subject: pubrel_subject(client_id, packet_id),
        headers: Vec::new(),
        payload: Bytes::new(),
    }
}

/// The purge of `client_id`'s PUBREL record of `packet_id` (PUBCOMP received).
#[must_use]
pub fn pubrel_purge(client_id: &str, packet_id: u16) -> StoreRequest {
    StoreRequest::Purge {
        stream: Stream::PubRel,
        subject: pubrel_subject(client_id, packet_id),
    }
}

/// The read of every PUBREL record of `client_id`.
#[must_use]
pub fn pubrel_list(client_id: &str) -> StoreRequest {
    StoreRequest::List {
        stream: Stream::PubRel,
        prefix: format!("{PUBREL_PREFIX}{}.", client_hash16(client_id)).into(),
    }
}

/// The write that makes `client_id`'s consumer take the QoS 1/2 messages stored on these
/// NATS filter subjects (the session's QoS 1/2 subscriptions').
#[must_use]
pub fn consumer_upsert<S: AsRef<str>>(
    client_id: &str,
    filters: impl IntoIterator<Item = S>,
) -> StoreRequest {
    StoreRequest::UpsertConsumer {
        name: consumer_name(client_id),
        filters: filters
            .into_iter()
            .map(|f| prefixed_subject(MESSAGES_PREFIX, f.as_ref()))
            .collect(),
    }
}

/// The deletion of `client_id`'s consumer (and what it holds for the session).
#[must_use]
pub fn consumer_delete(client_id: &str) -> StoreRequest {
    StoreRequest::DeleteConsumer {
        name: consumer_name(client_id),
    }
}

/// The write of a session record; with `expected_last`, only if the subject's last record is
/// still that stream sequence (0: none), see [`EXPECTED_LAST_SUBJECT_SEQUENCE`].
#[must_use]
pub fn session_write(record: &SessionRecord, expected_last: Option<u64>) -> StoreRequest {
    let headers = expected_last
        .map(|seq| Header {
            name: EXPECTED_LAST_SUBJECT_SEQUENCE,
            value: seq.to_string().into(),
        })
        .into_iter()
        .collect();
    StoreRequest::Publish {
        stream: Stream::Sessions,
        subject: session_subject(&record.id),
        headers,
        payload: record.to_json().into(),
    }
}

/// The read of `client_id`'s session record.
#[must_use]
pub fn session_read(client_id: &str) -> StoreRequest {
    StoreRequest::GetLast {
        stream: Stream::Sessions,
        subject: session_subject(client_id),
    }
}

/// The purge of `client_id`'s session record.
#[must_use]
pub fn session_purge(client_id: &str) -> StoreRequest {
    StoreRequest::Purge {
        stream: Stream::Sessions,
        subject: session_subject(client_id),
    }
}

/// The value of the first header named exactly `name`.
fn header<'a>(headers: &'a [(ByteString, ByteString)], name: &str) -> Option<&'a ByteString> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// A QoS 1/2 message's record read back: its NATS subject (the topic's) and the QoS it was
/// published with; `None` when it is no such record.
#[must_use]
pub fn read_message(record: &StoredMessage) -> Option<(&str, QoS)> {
    let subject = record.subject.strip_prefix(MESSAGES_PREFIX)?;
    let qos = header(&record.headers, PUB_HEADER)
        .and_then(|v| v.as_bytes().first().copied())
        .and_then(|b| QoS::from_u8(b.wrapping_sub(b'0')))
        .filter(|q| *q != QoS::AtMostOnce)?;
    Some((subject, qos))
}

/// A retained message's record read back: its NATS subject (the topic's) and its QoS; `None`
/// when it is no such record (or holds no message).
#[must_use]
pub fn read_retained(record: &StoredMessage) -> Option<(&str, QoS)> {
    let subject = record.subject.strip_prefix(RETAINED_PREFIX)?;
    let qos = header(&record.headers, RETAINED_FLAGS_HEADER)
        .and_then(|v| parse_retained_flags(v))
        .and_then(QoS::from_u8)?;
    (!record.payload.is_empty()).then_some((subject, qos))
}

/// What MQTT 5.0 adds to a message, read back from its headers (a record's, or a fleet
/// node's live copy's): its properties, and when it expires in milliseconds since the Unix
/// epoch.
#[must_use]
pub fn read_v5_fields(
    headers: &[(ByteString, ByteString)],
) -> (Option<Box<PublishProperties>>, Option<u64>) {
    let properties = header(headers, PROPERTIES_HEADER).and_then(|v| parse_properties_header(v));
    let expires_at = header(headers, EXPIRES_HEADER).and_then(|v| v.parse::<u64>().ok());
    (properties, expires_at)
}

/// A QoS 2 record read back (inbound on [`Stream::Qos2In`], PUBREL on [`Stream::PubRel`]): the
/// 16-character hash of its client identifier and its packet identifier; `None` when it is
/// no such record.
#[must_use]
pub fn read_qos2(record: &StoredMessage) -> Option<(&str, u16)> {
    let prefix = match record.stream {
        Stream::Qos2In => QOS2_PREFIX,
        Stream::PubRel => PUBREL_PREFIX,
        Stream::Sessions | Stream::Messages | Stream::Retained => return None,
    };
    split_hash_and_packet_id(&record.subject, prefix)
}

/// A session record read back, if it is one and is filed under its own client identifier's
/// subject.
#[must_use]
pub fn read_session(record: &StoredMessage) -> Option<SessionRecord> {
    let rec = SessionRecord::from_json(&record.payload)?;
    (session_subject(&rec.id) == record.subject).then_some(rec)
}

/// The connect stamp a stored session record holds (0 when it has none, as in records the
/// NATS server's MQTT support wrote, or when it is no record).
#[must_use]
pub fn record_stamp(record: &StoredMessage) -> u64 {
    SessionRecord::from_json(&record.payload).map_or(0, |r| r.jetmq.stamp)
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
