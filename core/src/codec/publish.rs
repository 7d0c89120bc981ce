//! PUBLISH (§3.3): topic and payload are zero-copy slices of the received frame.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::primitives::{binary_len, put_binary, put_var_int, var_int_len, Reader};
use super::properties::{
    publish_properties_len, write_publish_properties, DeliveryProperties, PropertySet,
    PublishProperties,
};
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
    /// PUBLISH properties (MQTT 5.0); `None` when there are none, which is always the case in
    /// 3.1.1. They live behind a box so that the common PUBLISH stays small and cheap to move.
    pub properties: Option<Box<PublishProperties>>,
    /// The application payload.
    pub payload: Bytes,
}

/// What [`Publish::properties`] lends when a PUBLISH has none.
static EMPTY_PROPERTIES: PublishProperties = PublishProperties::EMPTY;

const DUP: u8 = 0b1000;
const RETAIN: u8 = 0b0001;

impl Publish {
    /// A QoS 0 message with no properties.
    #[must_use]
    pub fn new(topic: ByteString, payload: Bytes) -> Self {
        Self {
            dup: false,
            qos: PublishQos::AtMostOnce,
            retain: false,
            topic,
            properties: None,
            payload,
        }
    }

    /// The properties, or an empty set when there are none.
    #[must_use]
    pub fn properties(&self) -> &PublishProperties {
        self.properties.as_deref().unwrap_or(&EMPTY_PROPERTIES)
    }

    /// The properties for editing, created empty if there were none.
    pub fn properties_mut(&mut self) -> &mut PublishProperties {
        self.properties.get_or_insert_with(Box::default)
    }

    #[inline(always)]
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
        let topic = r.topic_name()?;
        let qos = match level {
            QoS::AtMostOnce => PublishQos::AtMostOnce,
            QoS::AtLeastOnce => PublishQos::AtLeastOnce(PacketId::read(&mut r)?),
            QoS::ExactlyOnce => PublishQos::ExactlyOnce(PacketId::read(&mut r)?),
        };
        let properties = if version.is_v5() && !r.skip_empty_properties()? {
            let p = PublishProperties::read(&mut r, PacketType::Publish)?;
            if direction == Direction::FromClient && !p.subscription_identifiers.is_empty() {
                return Err(DecodeError::SubscriptionIdFromClient);
            }
            Some(Box::new(p))
        } else {
            None
        };
        if topic.is_empty() && properties.as_ref().is_none_or(|p| p.topic_alias.is_none()) {
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
        self.as_ref().flags()
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        self.as_ref().body_len(version)
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        self.as_ref().write_header(version, buf);
        buf.put_slice(&self.payload);
    }

    /// A borrowed view of this PUBLISH, for encoding.
    #[must_use]
    pub fn as_ref(&self) -> PublishRef<'_> {
        PublishRef {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            properties: self.properties.as_deref(),
            delivery: None,
            payload: &self.payload,
        }
    }
}

/// A PUBLISH made of borrowed parts: how the broker encodes one shared message for many
/// subscribers without building a [`Publish`] for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRef<'a> {
    /// Whether this is a re-delivery.
    pub dup: bool,
    /// QoS and packet identifier.
    pub qos: PublishQos,
    /// The retain flag.
    pub retain: bool,
    /// The topic name.
    pub topic: &'a str,
    /// MQTT 5.0 properties, if any.
    pub properties: Option<&'a PublishProperties>,
    /// Per-subscriber properties to send instead of the message's own (subscription
    /// identifiers, remaining expiry), or `None` to send `properties` as they are.
    pub delivery: Option<DeliveryProperties<'a>>,
    /// The payload.
    pub payload: &'a [u8],
}

impl PublishRef<'_> {
    fn flags(&self) -> u8 {
        let mut flags = (self.qos.level() as u8) << 1;
        if self.dup && self.qos != PublishQos::AtMostOnce {
            flags |= DUP;
        }
        if self.retain {
            flags |= RETAIN;
        }
        flags
    }

    fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut len = binary_len(self.topic.as_bytes()) + self.payload.len();
        if self.qos.packet_id().is_some() {
            len += 2;
        }
        if version.is_v5() {
            len += match (&self.delivery, self.properties) {
                (Some(d), base) => publish_properties_len(base, d),
                (None, Some(p)) => p.encoded_len(),
                (None, None) => 1,
            };
        }
        len
    }

    /// The exact number of bytes [`PublishRef::encode`] writes.
    #[must_use]
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let body = self.body_len(version);
        1 + var_int_len(u32::try_from(body).unwrap_or(u32::MAX)) + body
    }

    /// Writes the whole PUBLISH at the end of `buf`.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len(version));
        self.encode_header(version, buf);
        buf.put_slice(self.payload);
    }

    /// Writes everything but the payload, so a large payload can be sent from its own shared
    /// buffer right after.
    pub fn encode_header(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        let body = self.body_len(version);
        buf.put_u8(((PacketType::Publish as u8) << 4) | self.flags());
        put_var_int(buf, u32::try_from(body).unwrap_or(u32::MAX));
        self.write_header(version, buf);
    }

    fn write_header(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        put_binary(buf, self.topic.as_bytes());
        if let Some(id) = self.qos.packet_id() {
            buf.put_u16(id.get());
        }
        if version.is_v5() {
            match (&self.delivery, self.properties) {
                (Some(d), base) => write_publish_properties(base, d, buf),
                (None, Some(p)) => p.write(buf),
                (None, None) => buf.put_u8(0),
            }
        }
    }
}
