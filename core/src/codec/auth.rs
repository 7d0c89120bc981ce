//! AUTH (§3.15), the enhanced authentication exchange of MQTT 5.0.

use bytes::{BufMut, BytesMut};

use super::primitives::Reader;
use super::properties::{AuthProperties, PropertySet};
use super::reason::AuthReason;
use super::{DecodeError, PacketType, ProtocolVersion};

/// One step of an enhanced authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Success, continue, or re-authenticate.
    pub reason: AuthReason,
    /// Method, data, reason string and user properties.
    pub properties: AuthProperties,
}

impl Auth {
    /// An AUTH with `reason` and no properties.
    #[must_use]
    pub fn new(reason: AuthReason) -> Self {
        Self {
            reason,
            properties: AuthProperties::default(),
        }
    }

    pub(crate) fn decode(mut r: Reader) -> Result<Self, DecodeError> {
        let mut packet = Self::new(AuthReason::Success);
        if !r.is_empty() {
            let code = r.u8()?;
            packet.reason = AuthReason::from_u8(code).ok_or(DecodeError::InvalidReasonCode {
                packet: PacketType::Auth,
                code,
            })?;
            if !r.is_empty() {
                packet.properties = AuthProperties::read(&mut r, PacketType::Auth)?;
            }
            if packet.properties.authentication_data.is_some()
                && packet.properties.authentication_method.is_none()
            {
                return Err(DecodeError::AuthDataWithoutMethod);
            }
        }
        r.finish()?;
        Ok(packet)
    }

    fn has_tail(&self) -> bool {
        self.reason != AuthReason::Success || !self.properties.is_empty()
    }

    pub(crate) fn body_len(&self, _version: ProtocolVersion) -> usize {
        if self.has_tail() {
            1 + self.properties.encoded_len()
        } else {
            0
        }
    }

    pub(crate) fn write_body(&self, _version: ProtocolVersion, buf: &mut BytesMut) {
        if self.has_tail() {
            buf.put_u8(self.reason.into());
            self.properties.write(buf);
        }
    }
}
