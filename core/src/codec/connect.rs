//! CONNECT (§3.1) with its will, and CONNACK (§3.2).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::primitives::{binary_len, put_binary, Reader};
use super::properties::{ConnAckProperties, ConnectProperties, PropertySet, WillProperties};
use super::reason::ConnectReason;
use super::{DecodeError, PacketType, ProtocolVersion, QoS};

/// A connection request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level the client speaks; it decides the layout of every later packet.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) or Clean Start (5.0).
    pub clean_start: bool,
    /// Keep-alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// CONNECT properties (MQTT 5.0).
    pub properties: ConnectProperties,
    /// The client identifier; may be empty.
    pub client_id: ByteString,
    /// The will, when the Will Flag is set.
    pub will: Option<LastWill>,
    /// The user name, when the User Name Flag is set.
    pub username: Option<ByteString>,
    /// The password, when the Password Flag is set.
    pub password: Option<Bytes>,
}

/// The will message a CONNECT leaves with the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// The topic to publish the will on.
    pub topic: ByteString,
    /// The will payload.
    pub payload: Bytes,
    /// The QoS of the will.
    pub qos: QoS,
    /// Whether the will is published retained.
    pub retain: bool,
    /// Will properties (MQTT 5.0).
    pub properties: WillProperties,
}

const CLEAN_START: u8 = 0b0000_0010;
const WILL: u8 = 0b0000_0100;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0b0010_0000;
const PASSWORD: u8 = 0b0100_0000;
const USERNAME: u8 = 0b1000_0000;

fn topic_name(topic: ByteString) -> Result<ByteString, DecodeError> {
    if topic.is_empty() {
        return Err(DecodeError::EmptyTopicName);
    }
    if topic.contains(['+', '#']) {
        return Err(DecodeError::WildcardInTopicName);
    }
    Ok(topic)
}

impl Connect {
    /// A CONNECT with no will, no credentials and default properties.
    #[must_use]
    pub fn new(protocol: ProtocolVersion, client_id: ByteString) -> Self {
        Self {
            protocol,
            clean_start: true,
            keep_alive: 60,
            properties: ConnectProperties::default(),
            client_id,
            will: None,
            username: None,
            password: None,
        }
    }

    pub(crate) fn decode(mut r: Reader) -> Result<Self, DecodeError> {
        let name = r.binary()?;
        let level = r.u8()?;
        let protocol = match (&name[..], level) {
            (b"MQTT", 4) => ProtocolVersion::V311,
            (b"MQTT", 5) => ProtocolVersion::V5,
            (b"MQIsdp", 3) => ProtocolVersion::V31,
            (b"MQTT" | b"MQIsdp", other) => {
                return Err(DecodeError::UnsupportedProtocolVersion(other))
            }
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        let flags = r.u8()?;
        if flags & 1 != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_qos = (flags >> WILL_QOS_SHIFT) & 0b11;
        let has_will = flags & WILL != 0;
        if !has_will && (will_qos != 0 || flags & WILL_RETAIN != 0) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidWillQos)?;
        if !protocol.is_v5() && flags & PASSWORD != 0 && flags & USERNAME == 0 {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = if protocol.is_v5() {
            let p = ConnectProperties::read(&mut r, PacketType::Connect)?;
            if p.authentication_data.is_some() && p.authentication_method.is_none() {
                return Err(DecodeError::AuthDataWithoutMethod);
            }
            p
        } else {
            ConnectProperties::default()
        };
        let client_id = r.string()?;
        let will = if has_will {
            let properties = if protocol.is_v5() {
                WillProperties::read(&mut r, PacketType::Connect)?
            } else {
                WillProperties::default()
            };
            let topic = topic_name(r.string()?)?;
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: flags & WILL_RETAIN != 0,
                properties,
            })
        } else {
            None
        };
        let username = if flags & USERNAME != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let password = if flags & PASSWORD != 0 {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Self {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    fn protocol_name(&self) -> &'static [u8] {
        match self.protocol {
            ProtocolVersion::V31 => b"MQIsdp",
            ProtocolVersion::V311 | ProtocolVersion::V5 => b"MQTT",
        }
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= WILL | ((will.qos as u8) << WILL_QOS_SHIFT);
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        flags
    }

    pub(crate) fn body_len(&self) -> usize {
        let v5 = self.protocol.is_v5();
        let mut len = binary_len(self.protocol_name()) + 1 + 1 + 2;
        if v5 {
            len += self.properties.encoded_len();
        }
        len += binary_len(self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if v5 {
                len += will.properties.encoded_len();
            }
            len += binary_len(will.topic.as_bytes()) + binary_len(&will.payload);
        }
        if let Some(u) = &self.username {
            len += binary_len(u.as_bytes());
        }
        if let Some(p) = &self.password {
            len += binary_len(p);
        }
        len
    }

    pub(crate) fn write_body(&self, buf: &mut BytesMut) {
        let v5 = self.protocol.is_v5();
        put_binary(buf, self.protocol_name());
        buf.put_u8(self.protocol as u8);
        buf.put_u8(self.flags());
        buf.put_u16(self.keep_alive);
        if v5 {
            self.properties.write(buf);
        }
        put_binary(buf, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if v5 {
                will.properties.write(buf);
            }
            put_binary(buf, will.topic.as_bytes());
            put_binary(buf, &will.payload);
        }
        if let Some(u) = &self.username {
            put_binary(buf, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_binary(buf, p);
        }
    }
}

/// The server's answer to a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a stored session.
    pub session_present: bool,
    /// The outcome; in MQTT 3.1.1 it is written as the nearest return code.
    pub reason: ConnectReason,
    /// CONNACK properties (MQTT 5.0).
    pub properties: ConnAckProperties,
}

impl ConnAck {
    /// A CONNACK with `reason` and no properties.
    #[must_use]
    pub fn new(reason: ConnectReason, session_present: bool) -> Self {
        Self {
            session_present,
            reason,
            properties: ConnAckProperties::default(),
        }
    }

    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        let code = r.u8()?;
        let reason = if version.is_v5() {
            ConnectReason::from_u8(code)
        } else {
            ConnectReason::from_v3_return_code(code)
        }
        .ok_or(DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code,
        })?;
        if flags & !1 != 0 || (flags == 1 && reason != ConnectReason::Success) {
            return Err(DecodeError::InvalidConnAckFlags(flags));
        }
        let properties = if version.is_v5() {
            ConnAckProperties::read(&mut r, PacketType::ConnAck)?
        } else {
            ConnAckProperties::default()
        };
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::AuthDataWithoutMethod);
        }
        r.finish()?;
        Ok(Self {
            session_present: flags == 1,
            reason,
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + self.properties.encoded_len()
        } else {
            2
        }
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        let present = self.session_present && self.reason == ConnectReason::Success;
        buf.put_u8(u8::from(present));
        if version.is_v5() {
            buf.put_u8(self.reason.into());
            self.properties.write(buf);
        } else {
            buf.put_u8(self.reason.v3_return_code());
        }
    }
}
