//! SUBSCRIBE and SUBACK (§3.8–3.9), UNSUBSCRIBE and UNSUBACK (§3.10–3.11).

use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

use super::primitives::{binary_len, put_binary, Reader};
use super::properties::{AckProperties, PropertySet, SubscribeProperties, UnsubscribeProperties};
use super::reason::{SubAckReason, UnsubAckReason};
use super::{DecodeError, PacketId, PacketType, ProtocolVersion, QoS};

/// When retained messages are sent for a new subscription (MQTT 5.0 §3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send them at subscribe time (the only behaviour of 3.1.1).
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist before.
    SendIfNew = 1,
    /// 2: never send them at subscribe time.
    DoNotSend = 2,
}

/// The options byte of one topic filter in a SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// The highest QoS the client wants for this filter.
    pub qos: QoS,
    /// Do not deliver the client's own publishes back to it (MQTT 5.0).
    pub no_local: bool,
    /// Keep the publisher's RETAIN flag on forwarded messages (MQTT 5.0).
    pub retain_as_published: bool,
    /// When to send retained messages (MQTT 5.0).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with `qos` and the MQTT 3.1.1 behaviour for everything else.
    #[must_use]
    pub const fn new(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }

    fn decode(byte: u8, filter: &str, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = if version.is_v5() {
            0b1100_0000
        } else {
            0b1111_1100
        };
        if byte & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions(byte));
        }
        let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::InvalidSubscriptionOptions(byte))?;
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        let no_local = byte & 0b0100 != 0;
        if no_local && filter.starts_with("$share/") {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        Ok(Self {
            qos,
            no_local,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }

    fn encode(self, version: ProtocolVersion) -> u8 {
        let mut byte = self.qos as u8;
        if version.is_v5() {
            byte |= u8::from(self.no_local) << 2;
            byte |= u8::from(self.retain_as_published) << 3;
            byte |= (self.retain_handling as u8) << 4;
        }
        byte
    }
}

/// A subscription request: one or more topic filters with their options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The identifier the SUBACK answers with.
    pub packet_id: PacketId,
    /// SUBSCRIBE properties (MQTT 5.0).
    pub properties: SubscribeProperties,
    /// Topic filters, as sent (validation is the broker's), with their options.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

impl Subscribe {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(&mut r)?;
        let properties = if version.is_v5() {
            SubscribeProperties::read(&mut r, PacketType::Subscribe)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            let options = SubscriptionOptions::decode(r.u8()?, &filter, version)?;
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::NoSubscribeFilters);
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut len = 2;
        if version.is_v5() {
            len += self.properties.encoded_len();
        }
        len + self
            .filters
            .iter()
            .map(|(f, _)| binary_len(f.as_bytes()) + 1)
            .sum::<usize>()
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.write(buf);
        }
        for (filter, options) in &self.filters {
            put_binary(buf, filter.as_bytes());
            buf.put_u8(options.encode(version));
        }
    }
}

/// The answer to a SUBSCRIBE: one reason code per filter, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE's identifier.
    pub packet_id: PacketId,
    /// Reason string and user properties (MQTT 5.0).
    pub properties: AckProperties,
    /// One code per filter; in 3.1.1 every failure is written as 0x80.
    pub reasons: Vec<SubAckReason>,
}

impl SubAck {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(&mut r)?;
        let properties = if version.is_v5() {
            AckProperties::read(&mut r, PacketType::SubAck)?
        } else {
            AckProperties::default()
        };
        let mut reasons = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = r.u8()?;
            let reason = SubAckReason::from_u8(code)
                .filter(|c| version.is_v5() || code <= 2 || *c == SubAckReason::UnspecifiedError)
                .ok_or(DecodeError::InvalidReasonCode {
                    packet: PacketType::SubAck,
                    code,
                })?;
            reasons.push(reason);
        }
        Ok(Self {
            packet_id,
            properties,
            reasons,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let props = if version.is_v5() {
            self.properties.encoded_len()
        } else {
            0
        };
        2 + props + self.reasons.len()
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.write(buf);
            buf.extend(self.reasons.iter().map(|&r| u8::from(r)));
        } else {
            buf.extend(
                self.reasons
                    .iter()
                    .map(|&r| if r.is_error() { 0x80 } else { u8::from(r) }),
            );
        }
    }
}

/// A request to remove subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The identifier the UNSUBACK answers with.
    pub packet_id: PacketId,
    /// UNSUBSCRIBE properties (MQTT 5.0).
    pub properties: UnsubscribeProperties,
    /// The filters to remove, compared character by character with existing ones.
    pub filters: Vec<ByteString>,
}

impl Unsubscribe {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(&mut r)?;
        let properties = if version.is_v5() {
            UnsubscribeProperties::read(&mut r, PacketType::Unsubscribe)?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(r.string()?);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoUnsubscribeFilters);
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let props = if version.is_v5() {
            self.properties.encoded_len()
        } else {
            0
        };
        2 + props
            + self
                .filters
                .iter()
                .map(|f| binary_len(f.as_bytes()))
                .sum::<usize>()
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.write(buf);
        }
        for filter in &self.filters {
            put_binary(buf, filter.as_bytes());
        }
    }
}

/// The answer to an UNSUBSCRIBE. In MQTT 3.1.1 it carries no reason codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE's identifier.
    pub packet_id: PacketId,
    /// Reason string and user properties (MQTT 5.0).
    pub properties: AckProperties,
    /// One code per filter (MQTT 5.0; empty in 3.1.1).
    pub reasons: Vec<UnsubAckReason>,
}

impl UnsubAck {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(&mut r)?;
        let mut ack = Self {
            packet_id,
            properties: AckProperties::default(),
            reasons: Vec::new(),
        };
        if version.is_v5() {
            ack.properties = AckProperties::read(&mut r, PacketType::UnsubAck)?;
            while !r.is_empty() {
                let code = r.u8()?;
                ack.reasons.push(UnsubAckReason::from_u8(code).ok_or(
                    DecodeError::InvalidReasonCode {
                        packet: PacketType::UnsubAck,
                        code,
                    },
                )?);
            }
        }
        r.finish()?;
        Ok(ack)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + self.properties.encoded_len() + self.reasons.len()
        } else {
            2
        }
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.write(buf);
            buf.extend(self.reasons.iter().map(|&r| u8::from(r)));
        }
    }
}
