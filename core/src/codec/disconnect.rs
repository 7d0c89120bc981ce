//! DISCONNECT (§3.14).

use bytes::{BufMut, BytesMut};

use super::primitives::Reader;
use super::properties::{DisconnectProperties, PropertySet};
use super::reason::DisconnectReason;
use super::{DecodeError, PacketType, ProtocolVersion};

/// A disconnect notification; in MQTT 3.1.1 it has no body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Why the connection ends (MQTT 5.0).
    pub reason: DisconnectReason,
    /// DISCONNECT properties (MQTT 5.0).
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with `reason` and no properties.
    #[must_use]
    pub fn new(reason: DisconnectReason) -> Self {
        Self {
            reason,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut packet = Self::new(DisconnectReason::NormalDisconnection);
        if version.is_v5() && !r.is_empty() {
            let code = r.u8()?;
            packet.reason =
                DisconnectReason::from_u8(code).ok_or(DecodeError::InvalidReasonCode {
                    packet: PacketType::Disconnect,
                    code,
                })?;
            if !r.is_empty() {
                packet.properties = DisconnectProperties::read(&mut r, PacketType::Disconnect)?;
            }
        }
        r.finish()?;
        Ok(packet)
    }

    /// Whether MQTT 5.0 needs a body: not for a normal disconnection without properties. When
    /// the reason code is written, the Property Length is written too, even when zero: the
    /// spec lets it be left out, but some clients cannot read that form.
    fn v5_tail(&self) -> bool {
        self.reason != DisconnectReason::NormalDisconnection || !self.properties.is_empty()
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() && self.v5_tail() {
            1 + self.properties.encoded_len()
        } else {
            0
        }
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        if version.is_v5() && self.v5_tail() {
            buf.put_u8(self.reason.into());
            self.properties.write(buf);
        }
    }
}
