//! Decoding errors: one variant per violation, each naming its spec clause and mapping to the
//! MQTT 5.0 reason code the broker sends before closing the connection.

use std::fmt;

use super::reason::{ConnectReason, DisconnectReason};
use super::{PacketType, PropertyId};

/// Why a byte stream is not a valid MQTT packet.
///
/// Every variant is caused by the peer. The broker answers with
/// [`DecodeError::connect_reason`] before CONNACK or [`DecodeError::disconnect_reason`] after,
/// then closes that one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet is larger than the configured maximum packet size.
    PacketTooLarge {
        /// Size of the whole packet as declared by its fixed header.
        size: usize,
        /// The configured maximum.
        max: u32,
    },
    /// A variable byte integer runs past four bytes.
    VarIntTooLong,
    /// A variable byte integer is not in its shortest form.
    VarIntNotMinimal,
    /// Packet type 0, or 15 (AUTH) outside MQTT 5.0.
    ReservedPacketType(u8),
    /// The flags of the fixed header are not the ones the packet type requires.
    InvalidFlags {
        /// The packet whose flags are wrong.
        packet: PacketType,
        /// The low nibble that arrived.
        flags: u8,
    },
    /// A PUBLISH with both QoS bits set.
    InvalidQos,
    /// A QoS 0 PUBLISH with DUP set.
    DupOnQos0,
    /// A string is not well-formed UTF-8 (surrogates included).
    InvalidUtf8,
    /// A string contains U+0000.
    NullCharacter,
    /// The body ends before a field it must hold.
    Truncated,
    /// The body goes on after its last field.
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// A packet identifier of 0.
    PacketIdZero,
    /// A SUBSCRIBE with no topic filter.
    NoSubscribeFilters,
    /// An UNSUBSCRIBE with no topic filter.
    NoUnsubscribeFilters,
    /// Reserved bits set, or QoS 3, in a SUBSCRIBE's options byte.
    InvalidSubscriptionOptions(u8),
    /// Retain Handling 3 in a SUBSCRIBE's options byte.
    InvalidRetainHandling,
    /// No Local set on a shared subscription.
    NoLocalOnSharedSubscription,
    /// A property appears twice where it may appear once.
    DuplicateProperty(PropertyId),
    /// A property that this packet may not carry.
    PropertyNotAllowed {
        /// The property.
        property: PropertyId,
        /// The packet (or will properties of a CONNECT) carrying it.
        packet: PacketType,
    },
    /// A property identifier the spec does not define.
    UnknownProperty(u32),
    /// A property value outside its allowed range (a zero Receive Maximum, a byte flag of 2, ...).
    InvalidPropertyValue(PropertyId),
    /// Authentication Data without an Authentication Method.
    AuthDataWithoutMethod,
    /// A reason code that this packet may not carry.
    InvalidReasonCode {
        /// The packet carrying it.
        packet: PacketType,
        /// The code that arrived.
        code: u8,
    },
    /// The CONNECT protocol name is neither `MQTT` nor `MQIsdp`, or does not fit the level.
    InvalidProtocolName,
    /// A protocol level other than 3, 4 or 5.
    UnsupportedProtocolVersion(u8),
    /// The reserved bit of the CONNECT flags is set.
    ConnectReservedFlag,
    /// Will QoS or Will Retain set while the Will Flag is 0.
    WillFlagsWithoutWill,
    /// Will QoS 3.
    InvalidWillQos,
    /// A password without a user name (MQTT 3.1.1 only).
    PasswordWithoutUsername,
    /// A CONNACK whose reserved acknowledge flags are set, or with Session Present and an error.
    InvalidConnAckFlags(u8),
    /// A topic name with `+` or `#`, in PUBLISH, a will or a Response Topic.
    WildcardInTopicName,
    /// An empty topic name (without a topic alias in 5.0).
    EmptyTopicName,
    /// A packet type that only a server sends arrived from a client, or the other way round.
    WrongDirection(PacketType),
    /// A client's PUBLISH carrying a Subscription Identifier.
    SubscriptionIdFromClient,
}

impl DecodeError {
    /// The spec clause the violation breaks, in the form `[MQTT-x.y.z-n]` (with the version
    /// where 3.1.1 and 5.0 number it differently), or the section for un-numbered rules.
    #[must_use]
    pub fn clause(&self) -> &'static str {
        match self {
            Self::PacketTooLarge { .. } => "[MQTT-3.2.2-15]",
            Self::VarIntTooLong => "§1.5.5 (5.0), §2.2.3 (3.1.1): at most four bytes",
            Self::VarIntNotMinimal => "[MQTT-1.5.5-1]",
            Self::ReservedPacketType(_) => "§2.1.2: reserved packet type",
            Self::InvalidFlags { packet, .. } => match packet {
                PacketType::PubRel => "[MQTT-3.6.1-1]",
                PacketType::Subscribe => "[MQTT-3.8.1-1]",
                PacketType::Unsubscribe => "[MQTT-3.10.1-1]",
                PacketType::Disconnect => "[MQTT-3.14.1-1]",
                PacketType::Auth => "[MQTT-3.15.1-1]",
                _ => "[MQTT-2.1.3-1] (5.0), [MQTT-2.2.2-2] (3.1.1)",
            },
            Self::InvalidQos => "[MQTT-3.3.1-4]",
            Self::DupOnQos0 => "[MQTT-3.3.1-2]",
            Self::InvalidUtf8 => "[MQTT-1.5.4-1] (5.0), [MQTT-1.5.3-1] (3.1.1)",
            Self::NullCharacter => "[MQTT-1.5.4-2] (5.0), [MQTT-1.5.3-2] (3.1.1)",
            Self::Truncated => "§2.1.4: Remaining Length shorter than the fields",
            Self::TrailingBytes { .. } => "§2.1.4: Remaining Length longer than the fields",
            Self::PacketIdZero => "[MQTT-2.2.1-3] (5.0), [MQTT-2.3.1-1] (3.1.1)",
            Self::NoSubscribeFilters => "[MQTT-3.8.3-2] (5.0), [MQTT-3.8.3-3] (3.1.1)",
            Self::NoUnsubscribeFilters => "[MQTT-3.10.3-2]",
            Self::InvalidSubscriptionOptions(_) => "[MQTT-3.8.3-5] (5.0), [MQTT-3.8.3-4] (3.1.1)",
            Self::InvalidRetainHandling => "§3.8.3.1: Retain Handling 3",
            Self::NoLocalOnSharedSubscription => "[MQTT-3.8.3-4] (5.0)",
            Self::DuplicateProperty(_) => "§2.2.2.2: property included more than once",
            Self::PropertyNotAllowed { .. } | Self::UnknownProperty(_) => {
                "§2.2.2.2: property not valid for this packet"
            }
            Self::InvalidPropertyValue(_) => "§3: property value out of range",
            Self::AuthDataWithoutMethod => "§3.1.2.11.10: Authentication Data without Method",
            Self::InvalidReasonCode { packet, .. } => match packet {
                PacketType::ConnAck => "[MQTT-3.2.2-8]",
                PacketType::PubAck => "[MQTT-3.4.2-1]",
                PacketType::PubRec => "[MQTT-3.5.2-1]",
                PacketType::PubRel => "[MQTT-3.6.2-1]",
                PacketType::PubComp => "[MQTT-3.7.2-1]",
                PacketType::SubAck => "[MQTT-3.9.3-2]",
                PacketType::UnsubAck => "[MQTT-3.11.3-2]",
                PacketType::Disconnect => "[MQTT-3.14.2-1]",
                _ => "[MQTT-3.15.2-1]",
            },
            Self::InvalidProtocolName => "[MQTT-3.1.2-1]",
            Self::UnsupportedProtocolVersion(_) => "[MQTT-3.1.2-2]",
            Self::ConnectReservedFlag => "[MQTT-3.1.2-3]",
            Self::WillFlagsWithoutWill => {
                "[MQTT-3.1.2-11] [MQTT-3.1.2-13] (5.0), [MQTT-3.1.2-11] [MQTT-3.1.2-15] (3.1.1)"
            }
            Self::InvalidWillQos => "[MQTT-3.1.2-12] (5.0), [MQTT-3.1.2-14] (3.1.1)",
            Self::PasswordWithoutUsername => "[MQTT-3.1.2-22] (3.1.1)",
            Self::InvalidConnAckFlags(_) => "[MQTT-3.2.2-1] [MQTT-3.2.2-6]",
            Self::WildcardInTopicName => "[MQTT-3.3.2-2] [MQTT-3.3.2-14]",
            Self::EmptyTopicName => "[MQTT-4.7.3-1], §3.3.2.3.4",
            Self::WrongDirection(_) => "§2.1.2: direction of flow",
            Self::SubscriptionIdFromClient => "[MQTT-3.3.4-6]",
        }
    }

    /// The reason code for a DISCONNECT sent because of this error (MQTT 5.0, after CONNACK).
    #[must_use]
    pub fn disconnect_reason(&self) -> DisconnectReason {
        match self {
            Self::PacketTooLarge { .. } => DisconnectReason::PacketTooLarge,
            Self::InvalidPropertyValue(PropertyId::TopicAlias) => {
                DisconnectReason::TopicAliasInvalid
            }
            Self::WildcardInTopicName | Self::EmptyTopicName => DisconnectReason::TopicNameInvalid,
            Self::DuplicateProperty(_)
            | Self::InvalidPropertyValue(_)
            | Self::AuthDataWithoutMethod
            | Self::PacketIdZero
            | Self::NoSubscribeFilters
            | Self::NoUnsubscribeFilters
            | Self::InvalidRetainHandling
            | Self::NoLocalOnSharedSubscription
            | Self::WrongDirection(_)
            | Self::SubscriptionIdFromClient
            | Self::UnsupportedProtocolVersion(_)
            | Self::InvalidProtocolName => DisconnectReason::ProtocolError,
            Self::VarIntTooLong
            | Self::VarIntNotMinimal
            | Self::ReservedPacketType(_)
            | Self::InvalidFlags { .. }
            | Self::InvalidQos
            | Self::DupOnQos0
            | Self::InvalidUtf8
            | Self::NullCharacter
            | Self::Truncated
            | Self::TrailingBytes { .. }
            | Self::InvalidSubscriptionOptions(_)
            | Self::PropertyNotAllowed { .. }
            | Self::UnknownProperty(_)
            | Self::InvalidReasonCode { .. }
            | Self::ConnectReservedFlag
            | Self::WillFlagsWithoutWill
            | Self::InvalidWillQos
            | Self::PasswordWithoutUsername
            | Self::InvalidConnAckFlags(_) => DisconnectReason::MalformedPacket,
        }
    }

    /// The reason code for a CONNACK refusing a CONNECT because of this error (MQTT 5.0).
    #[must_use]
    pub fn connect_reason(&self) -> ConnectReason {
        match self {
            Self::UnsupportedProtocolVersion(_) | Self::InvalidProtocolName => {
                ConnectReason::UnsupportedProtocolVersion
            }
            other => match other.disconnect_reason() {
                DisconnectReason::PacketTooLarge => ConnectReason::PacketTooLarge,
                DisconnectReason::TopicNameInvalid => ConnectReason::TopicNameInvalid,
                DisconnectReason::MalformedPacket => ConnectReason::MalformedPacket,
                _ => ConnectReason::ProtocolError,
            },
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PacketTooLarge { size, max } => {
                write!(
                    f,
                    "packet of {size} bytes exceeds the maximum packet size {max}"
                )
            }
            Self::VarIntTooLong => f.write_str("variable byte integer longer than 4 bytes"),
            Self::VarIntNotMinimal => f.write_str("variable byte integer not minimally encoded"),
            Self::ReservedPacketType(t) => write!(f, "reserved packet type {t}"),
            Self::InvalidFlags { packet, flags } => {
                write!(f, "invalid fixed-header flags {flags:#06b} on {packet:?}")
            }
            Self::InvalidQos => f.write_str("PUBLISH with QoS 3"),
            Self::DupOnQos0 => f.write_str("QoS 0 PUBLISH with DUP set"),
            Self::InvalidUtf8 => f.write_str("string is not well-formed UTF-8"),
            Self::NullCharacter => f.write_str("string contains U+0000"),
            Self::Truncated => f.write_str("packet body ends before its last field"),
            Self::TrailingBytes { count } => {
                write!(f, "{count} bytes left after the packet's last field")
            }
            Self::PacketIdZero => f.write_str("packet identifier 0"),
            Self::NoSubscribeFilters => f.write_str("SUBSCRIBE without a topic filter"),
            Self::NoUnsubscribeFilters => f.write_str("UNSUBSCRIBE without a topic filter"),
            Self::InvalidSubscriptionOptions(b) => {
                write!(f, "invalid subscription options byte {b:#04x}")
            }
            Self::InvalidRetainHandling => f.write_str("Retain Handling 3"),
            Self::NoLocalOnSharedSubscription => {
                f.write_str("No Local set on a shared subscription")
            }
            Self::DuplicateProperty(p) => write!(f, "property {p:?} included more than once"),
            Self::PropertyNotAllowed { property, packet } => {
                write!(f, "property {property:?} is not allowed on {packet:?}")
            }
            Self::UnknownProperty(id) => write!(f, "unknown property identifier {id:#04x}"),
            Self::InvalidPropertyValue(p) => write!(f, "property {p:?} has an invalid value"),
            Self::AuthDataWithoutMethod => {
                f.write_str("Authentication Data without Authentication Method")
            }
            Self::InvalidReasonCode { packet, code } => {
                write!(f, "reason code {code:#04x} is not valid on {packet:?}")
            }
            Self::InvalidProtocolName => f.write_str("protocol name is not MQTT"),
            Self::UnsupportedProtocolVersion(v) => write!(f, "unsupported protocol level {v}"),
            Self::ConnectReservedFlag => f.write_str("reserved CONNECT flag is set"),
            Self::WillFlagsWithoutWill => f.write_str("Will QoS or Will Retain set without a will"),
            Self::InvalidWillQos => f.write_str("Will QoS 3"),
            Self::PasswordWithoutUsername => f.write_str("password without user name"),
            Self::InvalidConnAckFlags(b) => write!(f, "invalid CONNACK flags {b:#04x}"),
            Self::WildcardInTopicName => f.write_str("topic name contains a wildcard"),
            Self::EmptyTopicName => f.write_str("empty topic name"),
            Self::WrongDirection(p) => write!(f, "{p:?} is not sent in this direction"),
            Self::SubscriptionIdFromClient => {
                f.write_str("client PUBLISH carries a Subscription Identifier")
            }
        }
        .and_then(|()| write!(f, " {}", self.clause()))
    }
}

impl std::error::Error for DecodeError {}
