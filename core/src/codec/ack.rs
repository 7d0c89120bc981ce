//! PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4–3.7): a packet identifier, and in MQTT 5.0 a reason
//! code and properties that may be left out when they are the defaults.

use bytes::{BufMut, BytesMut};

use super::primitives::Reader;
use super::properties::{AckProperties, PropertySet};
use super::reason::{PubAckReason, PubRelReason};
use super::{DecodeError, PacketId, PacketType, ProtocolVersion};

/// The reason codes an acknowledgement may carry, with its default.
pub trait AckReason: Copy + Eq + Into<u8> {
    /// The success code, which an encoder may leave out.
    const SUCCESS: Self;
    /// The code for a byte, or `None` when this packet may not carry it.
    fn from_byte(value: u8) -> Option<Self>;
}

impl AckReason for PubAckReason {
    const SUCCESS: Self = Self::Success;
    fn from_byte(value: u8) -> Option<Self> {
        Self::from_u8(value)
    }
}

impl AckReason for PubRelReason {
    const SUCCESS: Self = Self::Success;
    fn from_byte(value: u8) -> Option<Self> {
        Self::from_u8(value)
    }
}

/// An acknowledgement in a QoS 1 or QoS 2 flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack<R> {
    /// The identifier of the PUBLISH being acknowledged.
    pub packet_id: PacketId,
    /// The outcome (always success in MQTT 3.1.1).
    pub reason: R,
    /// Reason string and user properties (MQTT 5.0).
    pub properties: AckProperties,
}

/// PUBACK: QoS 1 acknowledgement.
pub type PubAck = Ack<PubAckReason>;
/// PUBREC: QoS 2 publish received.
pub type PubRec = Ack<PubAckReason>;
/// PUBREL: QoS 2 publish released.
pub type PubRel = Ack<PubRelReason>;
/// PUBCOMP: QoS 2 publish complete.
pub type PubComp = Ack<PubRelReason>;

impl<R: AckReason> Ack<R> {
    /// A successful acknowledgement with no properties.
    #[must_use]
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason: R::SUCCESS,
            properties: AckProperties::default(),
        }
    }

    pub(crate) fn decode(
        mut r: Reader,
        packet: PacketType,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(&mut r)?;
        let mut ack = Self::new(packet_id);
        if version.is_v5() && !r.is_empty() {
            let code = r.u8()?;
            ack.reason =
                R::from_byte(code).ok_or(DecodeError::InvalidReasonCode { packet, code })?;
            if !r.is_empty() {
                ack.properties = AckProperties::read(&mut r, packet)?;
            }
        }
        r.finish()?;
        Ok(ack)
    }

    /// Whether MQTT 5.0 needs anything after the identifier: not for a success without
    /// properties. When the reason code is written, the Property Length is written too, even
    /// when zero: the spec lets it be left out, but some clients cannot read that form.
    fn v5_tail(&self) -> bool {
        self.reason != R::SUCCESS || !self.properties.is_empty()
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() && self.v5_tail() {
            3 + self.properties.encoded_len()
        } else {
            2
        }
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        if version.is_v5() && self.v5_tail() {
            buf.put_u8(self.reason.into());
            self.properties.write(buf);
        }
    }
}
