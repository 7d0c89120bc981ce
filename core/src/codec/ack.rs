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

    /// What MQTT 5.0 lets the encoder leave out: everything after the id when the reason is
    /// success and there are no properties, the properties when they are empty.
    fn v5_tail(&self) -> (bool, bool) {
        let props = !self.properties.is_empty();
        let reason = props || self.reason != R::SUCCESS;
        (reason, props)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            return 2;
        }
        match self.v5_tail() {
            (false, _) => 2,
            (true, false) => 3,
            (true, true) => 3 + self.properties.encoded_len(),
        }
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        if !version.is_v5() {
            return;
        }
        let (reason, props) = self.v5_tail();
        if reason {
            buf.put_u8(self.reason.into());
        }
        if props {
            self.properties.write(buf);
        }
    }
}
