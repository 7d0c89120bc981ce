//! The MQTT 3.1.1 and 5.0 wire format: every packet of both versions, decoded incrementally and
//! without copying, encoded into a caller's buffer.
//!
//! - [`Decoder`] turns a growing [`BytesMut`] into [`Packet`]s. It returns
//!   `Ok(None)` until a whole packet has arrived, refuses an oversized packet as soon as its fixed
//!   header is read, and never reserves memory for a length the peer declared.
//! - [`Packet::encode`] writes a packet; [`Packet::encoded_len`] is its exact length.
//! - Every violation is a [`DecodeError`] naming its spec clause and its MQTT 5.0 reason code.
//!
//! ```
//! use bytes::BytesMut;
//! use jetmq_core::codec::{Decoder, Direction, Packet, ProtocolVersion};
//!
//! let mut decoder = Decoder::new(Direction::FromClient, 1024 * 1024);
//! decoder.set_version(ProtocolVersion::V5);
//! let mut buf = BytesMut::from(&[0xC0u8, 0x00][..]); // PINGREQ
//! assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Packet::PingReq));
//! assert_eq!(decoder.decode(&mut buf).unwrap(), None);
//! ```

mod ack;
mod auth;
mod connect;
mod decode;
mod disconnect;
mod error;
mod primitives;
mod properties;
mod publish;
mod reason;
mod subscribe;

use std::num::NonZeroU16;

use bytes::{BufMut, BytesMut};

pub use ack::{Ack, AckReason, PubAck, PubComp, PubRec, PubRel};
pub use auth::Auth;
pub use connect::{ConnAck, Connect, LastWill};
pub use decode::Decoder;
pub use disconnect::Disconnect;
pub use error::DecodeError;
pub use primitives::{var_int_len, MAX_VAR_INT};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DeliveryProperties,
    DisconnectProperties, PayloadFormat, PropertyId, PublishProperties, SubscribeProperties,
    UnsubscribeProperties, UserProperty, WillProperties,
};
pub use publish::{Publish, PublishQos, PublishRef};
pub use reason::{
    AuthReason, ConnectReason, DisconnectReason, PubAckReason, PubRelReason, SubAckReason,
    UnsubAckReason,
};
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};

/// The largest packet MQTT can describe: a five-byte fixed header plus the largest remaining
/// length.
pub const MAX_PACKET_SIZE: u32 = 1 + 4 + MAX_VAR_INT;

/// The protocol level a connection speaks, from the CONNECT packet.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3): encoded like 3.1.1.
    V31 = 3,
    /// MQTT 3.1.1 (level 4).
    V311 = 4,
    /// MQTT 5.0 (level 5).
    V5 = 5,
}

impl ProtocolVersion {
    /// True for MQTT 5.0, whose packets carry properties and reason codes.
    #[must_use]
    pub const fn is_v5(self) -> bool {
        matches!(self, Self::V5)
    }
}

/// A quality-of-service level.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum QoS {
    /// QoS 0: at most once.
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its two-bit value, or `None` for 3.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet identifier: never zero [MQTT-2.2.1-3].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// The identifier `value`, or `None` for 0.
    #[must_use]
    pub const fn new(value: u16) -> Option<Self> {
        match NonZeroU16::new(value) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// The identifier as a number.
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0.get()
    }

    pub(crate) fn read(r: &mut primitives::Reader) -> Result<Self, DecodeError> {
        Self::new(r.u16()?).ok_or(DecodeError::PacketIdZero)
    }
}

/// The direction a decoder reads: which side sent the bytes. It decides which packet types are
/// allowed and a few direction-specific rules (a client never sends a Subscription Identifier
/// in a PUBLISH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The bytes come from a client: the broker's side.
    FromClient,
    /// The bytes come from a server: the side of a client or a test tool.
    FromServer,
}

/// The fifteen MQTT control packet types (§2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// CONNECT (1).
    Connect = 1,
    /// CONNACK (2).
    ConnAck = 2,
    /// PUBLISH (3).
    Publish = 3,
    /// PUBACK (4).
    PubAck = 4,
    /// PUBREC (5).
    PubRec = 5,
    /// PUBREL (6).
    PubRel = 6,
    /// PUBCOMP (7).
    PubComp = 7,
    /// SUBSCRIBE (8).
    Subscribe = 8,
    /// SUBACK (9).
    SubAck = 9,
    /// UNSUBSCRIBE (10).
    Unsubscribe = 10,
    /// UNSUBACK (11).
    UnsubAck = 11,
    /// PINGREQ (12).
    PingReq = 12,
    /// PINGRESP (13).
    PingResp = 13,
    /// DISCONNECT (14).
    Disconnect = 14,
    /// AUTH (15, MQTT 5.0 only).
    Auth = 15,
}

impl PacketType {
    /// Whether a packet of this type may travel in `direction`.
    #[must_use]
    pub const fn allowed(self, direction: Direction) -> bool {
        match self {
            Self::Connect | Self::Subscribe | Self::Unsubscribe | Self::PingReq => {
                matches!(direction, Direction::FromClient)
            }
            Self::ConnAck | Self::SubAck | Self::UnsubAck | Self::PingResp => {
                matches!(direction, Direction::FromServer)
            }
            _ => true,
        }
    }
}

/// One MQTT control packet, of either protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Connection request.
    Connect(Box<Connect>),
    /// Connection acknowledgement (boxed: rare and large).
    ConnAck(Box<ConnAck>),
    /// An application message.
    Publish(Publish),
    /// QoS 1 acknowledgement.
    PubAck(PubAck),
    /// QoS 2 delivery, part 1.
    PubRec(PubRec),
    /// QoS 2 delivery, part 2.
    PubRel(PubRel),
    /// QoS 2 delivery, part 3.
    PubComp(PubComp),
    /// Subscription request.
    Subscribe(Subscribe),
    /// Subscription acknowledgement.
    SubAck(SubAck),
    /// Unsubscription request.
    Unsubscribe(Unsubscribe),
    /// Unsubscription acknowledgement.
    UnsubAck(UnsubAck),
    /// Ping request.
    PingReq,
    /// Ping response.
    PingResp,
    /// Disconnect notification (boxed: rare and large).
    Disconnect(Box<Disconnect>),
    /// Authentication exchange (MQTT 5.0; boxed: rare and large).
    Auth(Box<Auth>),
}

impl Packet {
    /// The type of this packet.
    #[must_use]
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }

    /// The low nibble of the fixed header.
    fn flags(&self) -> u8 {
        match self {
            Self::Publish(p) => p.flags(),
            Self::PubRel(_) | Self::Subscribe(_) | Self::Unsubscribe(_) => 0b0010,
            _ => 0,
        }
    }

    /// The length of the body after the fixed header (the Remaining Length).
    #[must_use]
    pub fn remaining_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Self::Connect(p) => p.body_len(),
            Self::ConnAck(p) => p.body_len(version),
            Self::Publish(p) => p.body_len(version),
            Self::PubAck(p) | Self::PubRec(p) => p.body_len(version),
            Self::PubRel(p) | Self::PubComp(p) => p.body_len(version),
            Self::Subscribe(p) => p.body_len(version),
            Self::SubAck(p) => p.body_len(version),
            Self::Unsubscribe(p) => p.body_len(version),
            Self::UnsubAck(p) => p.body_len(version),
            Self::PingReq | Self::PingResp => 0,
            Self::Disconnect(p) => p.body_len(version),
            Self::Auth(p) => p.body_len(version),
        }
    }

    /// The exact number of bytes [`Packet::encode`] writes for this packet.
    #[must_use]
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let remaining = self.remaining_len(version);
        1 + var_int_len(u32::try_from(remaining).unwrap_or(u32::MAX)) + remaining
    }

    /// Writes the packet, as `version` lays it out, at the end of `buf`.
    ///
    /// A CONNECT is written with its own protocol version; fields that `version` cannot carry
    /// (properties and most reason codes in 3.1.1) are left out.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        let remaining = self.remaining_len(version);
        let len_of_len = var_int_len(u32::try_from(remaining).unwrap_or(u32::MAX));
        buf.reserve(1 + len_of_len + remaining);
        buf.put_u8(((self.packet_type() as u8) << 4) | self.flags());
        primitives::put_var_int(buf, u32::try_from(remaining).unwrap_or(u32::MAX));
        match self {
            Self::Connect(p) => p.write_body(buf),
            Self::ConnAck(p) => p.write_body(version, buf),
            Self::Publish(p) => p.write_body(version, buf),
            Self::PubAck(p) | Self::PubRec(p) => p.write_body(version, buf),
            Self::PubRel(p) | Self::PubComp(p) => p.write_body(version, buf),
            Self::Subscribe(p) => p.write_body(version, buf),
            Self::SubAck(p) => p.write_body(version, buf),
            Self::Unsubscribe(p) => p.write_body(version, buf),
            Self::UnsubAck(p) => p.write_body(version, buf),
            Self::PingReq | Self::PingResp => {}
            Self::Disconnect(p) => p.write_body(version, buf),
            Self::Auth(p) => p.write_body(version, buf),
        }
    }
}
