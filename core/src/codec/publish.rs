//! PUBLISH (§3.3): topic and payload are zero-copy slices of the received frame.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::primitives::{binary_len, put_binary, Reader};
use super::properties::{PropertySet, PublishProperties};
use super::{DecodeError, Direction, PacketId, PacketType, ProtocolVersion, QoS};

/// The QoS of a PUBLISH together with its packet identifier, which exists exactly when the QoS
/// is above 0 [MQTT-2.2.1-2].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishQos {
    /// QoS 0: no identifier.
    AtMostOnce,
    /// QoS 1 with its identifier.
    AtLeastOnce(PacketId),
    /// QoS 2 with its identifier.
    ExactlyOnce(PacketId),
}

impl PublishQos {
    /// The QoS level alone.
    #[must_use]
    pub const fn level(self) -> QoS {
        match self {
            Self::AtMostOnce => QoS::AtMostOnce,
            Self::AtLeastOnce(_) => QoS::AtLeastOnce,
            Self::ExactlyOnce(_) => QoS::ExactlyOnce,
        }
    }

    /// The packet identifier, for QoS 1 and 2.
    #[must_use]
    pub const fn packet_id(self) -> Option<PacketId> {
        match self {
            Self::AtMostOnce => None,
            Self::AtLeastOnce(id) | Self::ExactlyOnce(id) => Some(id),
        }
    }
}

/// An application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Whether this is a re-delivery.
    pub dup: bool,
    /// QoS and packet identifier.
    pub qos: PublishQos,
    /// The retain flag.
    pub retain: bool,
    /// The topic name; empty only in MQTT 5.0 when a topic alias stands for it.
    pub topic: ByteString,
    /// PUBLISH properties (MQTT 5.0).
    pub properties: PublishProperties,
    /// The application payload.
    pub payload: Bytes,
}

const DUP: u8 = 0b1000;
const RETAIN: u8 = 0b0001;

fn has_wildcard(topic: &[u8]) -> bool {
    topic.iter().any(|&b| b == b'+' || b == b'#')
}

impl Publish {
    /// A QoS 0 message with no properties.
    #[must_use]
    pub fn new(topic: ByteString, payload: Bytes) -> Self {
        Self {
            dup: false,
            qos: PublishQos::AtMostOnce,
            retain: false,
            topic,
            properties: PublishProperties::default(),
            payload,
        }
    }

    pub(crate) fn decode(
        mut r: Reader,
        flags: u8,
        version: ProtocolVersion,
        direction: Direction,
    ) -> Result<Self, DecodeError> {
        let dup = flags & DUP != 0;
        let retain = flags & RETAIN != 0;
        let level = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQos)?;
        if dup && level == QoS::AtMostOnce {
            return Err(DecodeError::DupOnQos0);
        }
        let topic = r.string()?;
        if has_wildcard(topic.as_bytes()) {
            return Err(DecodeError::WildcardInTopicName);
        }
        let qos = match level {
            QoS::AtMostOnce => PublishQos::AtMostOnce,
            QoS::AtLeastOnce => PublishQos::AtLeastOnce(PacketId::read(&mut r)?),
            QoS::ExactlyOnce => PublishQos::ExactlyOnce(PacketId::read(&mut r)?),
        };
        let properties = if version.is_v5() {
            let p = PublishProperties::read(&mut r, PacketType::Publish)?;
            if direction == Direction::FromClient && !p.subscription_identifiers.is_empty() {
                return Err(DecodeError::SubscriptionIdFromClient);
            }
            p
        } else {
            PublishProperties::default()
        };
        if topic.is_empty() && properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicName);
        }
        Ok(Self {
            dup,
            qos,
            retain,
            topic,
            properties,
            payload: r.rest(),
        })
    }

    pub(crate) fn flags(&self) -> u8 {
        let mut flags = (self.qos.level() as u8) << 1;
        if self.dup && self.qos != PublishQos::AtMostOnce {
            flags |= DUP;
        }
        if self.retain {
            flags |= RETAIN;
        }
        flags
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut len = binary_len(self.topic.as_bytes()) + self.payload.len();
        if self.qos.packet_id().is_some() {
            len += 2;
        }
        if version.is_v5() {
            len += self.properties.encoded_len();
        }
        len
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        put_binary(buf, self.topic.as_bytes());
        if let Some(id) = self.qos.packet_id() {
            buf.put_u16(id.get());
        }
        if version.is_v5() {
            self.properties.write(buf);
        }
        buf.put_slice(&self.payload);
    }
}
