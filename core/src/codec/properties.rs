//! MQTT 5.0 properties (§2.2.2): identifiers, the typed property set of every packet, and the
//! one reader and writer they share.
//!
//! Each set is a plain struct with one typed field per property the packet may carry. Reading
//! rejects unknown identifiers, properties the packet may not carry, repeats of properties that
//! may appear once, and out-of-range values. Writing and length calculation share one visitor, so
//! [`encoded_len`](super::Packet::encoded_len) cannot drift from what is written.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::primitives::{binary_len, put_binary, put_var_int, var_int_len, Reader};
use super::{DecodeError, PacketType, QoS};

/// Identifiers of the MQTT 5.0 properties (§2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertyId {
    /// Payload Format Indicator (byte).
    PayloadFormatIndicator = 0x01,
    /// Message Expiry Interval (four-byte integer, seconds).
    MessageExpiryInterval = 0x02,
    /// Content Type (string).
    ContentType = 0x03,
    /// Response Topic (string).
    ResponseTopic = 0x08,
    /// Correlation Data (binary).
    CorrelationData = 0x09,
    /// Subscription Identifier (variable byte integer).
    SubscriptionIdentifier = 0x0B,
    /// Session Expiry Interval (four-byte integer, seconds).
    SessionExpiryInterval = 0x11,
    /// Assigned Client Identifier (string).
    AssignedClientIdentifier = 0x12,
    /// Server Keep Alive (two-byte integer, seconds).
    ServerKeepAlive = 0x13,
    /// Authentication Method (string).
    AuthenticationMethod = 0x15,
    /// Authentication Data (binary).
    AuthenticationData = 0x16,
    /// Request Problem Information (byte).
    RequestProblemInformation = 0x17,
    /// Will Delay Interval (four-byte integer, seconds).
    WillDelayInterval = 0x18,
    /// Request Response Information (byte).
    RequestResponseInformation = 0x19,
    /// Response Information (string).
    ResponseInformation = 0x1A,
    /// Server Reference (string).
    ServerReference = 0x1C,
    /// Reason String (string).
    ReasonString = 0x1F,
    /// Receive Maximum (two-byte integer).
    ReceiveMaximum = 0x21,
    /// Topic Alias Maximum (two-byte integer).
    TopicAliasMaximum = 0x22,
    /// Topic Alias (two-byte integer).
    TopicAlias = 0x23,
    /// Maximum QoS (byte).
    MaximumQos = 0x24,
    /// Retain Available (byte).
    RetainAvailable = 0x25,
    /// User Property (string pair).
    UserProperty = 0x26,
    /// Maximum Packet Size (four-byte integer).
    MaximumPacketSize = 0x27,
    /// Wildcard Subscription Available (byte).
    WildcardSubscriptionAvailable = 0x28,
    /// Subscription Identifier Available (byte).
    SubscriptionIdentifierAvailable = 0x29,
    /// Shared Subscription Available (byte).
    SharedSubscriptionAvailable = 0x2A,
}

impl PropertyId {
    /// The property for an identifier, or `None` for identifiers the spec does not define.
    #[must_use]
    pub const fn from_u32(id: u32) -> Option<Self> {
        Some(match id {
            0x01 => Self::PayloadFormatIndicator,
            0x02 => Self::MessageExpiryInterval,
            0x03 => Self::ContentType,
            0x08 => Self::ResponseTopic,
            0x09 => Self::CorrelationData,
            0x0B => Self::SubscriptionIdentifier,
            0x11 => Self::SessionExpiryInterval,
            0x12 => Self::AssignedClientIdentifier,
            0x13 => Self::ServerKeepAlive,
            0x15 => Self::AuthenticationMethod,
            0x16 => Self::AuthenticationData,
            0x17 => Self::RequestProblemInformation,
            0x18 => Self::WillDelayInterval,
            0x19 => Self::RequestResponseInformation,
            0x1A => Self::ResponseInformation,
            0x1C => Self::ServerReference,
            0x1F => Self::ReasonString,
            0x21 => Self::ReceiveMaximum,
            0x22 => Self::TopicAliasMaximum,
            0x23 => Self::TopicAlias,
            0x24 => Self::MaximumQos,
            0x25 => Self::RetainAvailable,
            0x26 => Self::UserProperty,
            0x27 => Self::MaximumPacketSize,
            0x28 => Self::WildcardSubscriptionAvailable,
            0x29 => Self::SubscriptionIdentifierAvailable,
            0x2A => Self::SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    /// Whether the property may appear more than once in one packet.
    const fn may_repeat(self) -> bool {
        matches!(self, Self::UserProperty | Self::SubscriptionIdentifier)
    }
}

/// A User Property: a name/value pair passed through unchanged and in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserProperty {
    /// The name.
    pub name: ByteString,
    /// The value.
    pub value: ByteString,
}

/// The Payload Format Indicator of a PUBLISH or will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    Unspecified,
    /// 1: UTF-8 encoded character data.
    Utf8,
}

/// One decoded property value, before it is stored in its typed field.
#[derive(Debug)]
pub(crate) enum Value {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(ByteString),
    Bin(Bytes),
    Pair(ByteString, ByteString),
}

impl Value {
    fn read(id: PropertyId, r: &mut Reader) -> Result<Self, DecodeError> {
        use PropertyId as P;
        Ok(match id {
            P::PayloadFormatIndicator
            | P::RequestProblemInformation
            | P::RequestResponseInformation
            | P::MaximumQos
            | P::RetainAvailable
            | P::WildcardSubscriptionAvailable
            | P::SubscriptionIdentifierAvailable
            | P::SharedSubscriptionAvailable => Self::Byte(r.u8()?),
            P::ServerKeepAlive | P::ReceiveMaximum | P::TopicAliasMaximum | P::TopicAlias => {
                Self::U16(r.u16()?)
            }
            P::MessageExpiryInterval
            | P::SessionExpiryInterval
            | P::WillDelayInterval
            | P::MaximumPacketSize => Self::U32(r.u32()?),
            P::SubscriptionIdentifier => Self::VarInt(r.var_int()?),
            P::ContentType
            | P::ResponseTopic
            | P::AssignedClientIdentifier
            | P::AuthenticationMethod
            | P::ResponseInformation
            | P::ServerReference
            | P::ReasonString => Self::Str(r.string()?),
            P::CorrelationData | P::AuthenticationData => Self::Bin(r.binary()?),
            P::UserProperty => Self::Pair(r.string()?, r.string()?),
        })
    }
}

/// Conversions from a decoded [`Value`] to a typed field, failing with the property's id.
struct Typed(PropertyId, Value);

impl Typed {
    fn u8(self) -> Result<u8, DecodeError> {
        match self.1 {
            Value::Byte(v) => Ok(v),
            _ => Err(DecodeError::InvalidPropertyValue(self.0)),
        }
    }
    fn flag(self) -> Result<bool, DecodeError> {
        let id = self.0;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    fn u16(self) -> Result<u16, DecodeError> {
        match self.1 {
            Value::U16(v) => Ok(v),
            _ => Err(DecodeError::InvalidPropertyValue(self.0)),
        }
    }
    fn non_zero_u16(self) -> Result<NonZeroU16, DecodeError> {
        let id = self.0;
        NonZeroU16::new(self.u16()?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    fn u32(self) -> Result<u32, DecodeError> {
        match self.1 {
            Value::U32(v) | Value::VarInt(v) => Ok(v),
            _ => Err(DecodeError::InvalidPropertyValue(self.0)),
        }
    }
    fn non_zero_u32(self) -> Result<NonZeroU32, DecodeError> {
        let id = self.0;
        NonZeroU32::new(self.u32()?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    fn string(self) -> Result<ByteString, DecodeError> {
        match self.1 {
            Value::Str(v) => Ok(v),
            _ => Err(DecodeError::InvalidPropertyValue(self.0)),
        }
    }
    fn topic(self) -> Result<ByteString, DecodeError> {
        let topic = self.string()?;
        if topic.contains(['+', '#']) {
            return Err(DecodeError::WildcardInTopicName);
        }
        if topic.is_empty() {
            return Err(DecodeError::EmptyTopicName);
        }
        Ok(topic)
    }
    fn binary(self) -> Result<Bytes, DecodeError> {
        match self.1 {
            Value::Bin(v) => Ok(v),
            _ => Err(DecodeError::InvalidPropertyValue(self.0)),
        }
    }
    fn payload_format(self) -> Result<PayloadFormat, DecodeError> {
        let id = self.0;
        match self.u8()? {
            0 => Ok(PayloadFormat::Unspecified),
            1 => Ok(PayloadFormat::Utf8),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    fn user_property(self) -> Result<UserProperty, DecodeError> {
        match self.1 {
            Value::Pair(name, value) => Ok(UserProperty { name, value }),
            _ => Err(DecodeError::InvalidPropertyValue(self.0)),
        }
    }
}

/// Receives the properties of a set, either to count their encoded length or to write them.
pub(crate) trait PropertySink {
    fn byte(&mut self, id: PropertyId, value: u8);
    fn u16(&mut self, id: PropertyId, value: u16);
    fn u32(&mut self, id: PropertyId, value: u32);
    fn var_int(&mut self, id: PropertyId, value: u32);
    fn binary(&mut self, id: PropertyId, value: &[u8]);
    fn pair(&mut self, id: PropertyId, name: &[u8], value: &[u8]);
}

/// Counts the encoded length of a property set.
#[derive(Default)]
struct LengthCounter(usize);

impl PropertySink for LengthCounter {
    fn byte(&mut self, _: PropertyId, _: u8) {
        self.0 += 2;
    }
    fn u16(&mut self, _: PropertyId, _: u16) {
        self.0 += 3;
    }
    fn u32(&mut self, _: PropertyId, _: u32) {
        self.0 += 5;
    }
    fn var_int(&mut self, _: PropertyId, value: u32) {
        self.0 += 1 + var_int_len(value);
    }
    fn binary(&mut self, _: PropertyId, value: &[u8]) {
        self.0 += 1 + binary_len(value);
    }
    fn pair(&mut self, _: PropertyId, name: &[u8], value: &[u8]) {
        self.0 += 1 + binary_len(name) + binary_len(value);
    }
}

/// Writes a property set into a buffer.
struct Writer<'a>(&'a mut BytesMut);

impl PropertySink for Writer<'_> {
    fn byte(&mut self, id: PropertyId, value: u8) {
        self.0.put_u8(id as u8);
        self.0.put_u8(value);
    }
    fn u16(&mut self, id: PropertyId, value: u16) {
        self.0.put_u8(id as u8);
        self.0.put_u16(value);
    }
    fn u32(&mut self, id: PropertyId, value: u32) {
        self.0.put_u8(id as u8);
        self.0.put_u32(value);
    }
    fn var_int(&mut self, id: PropertyId, value: u32) {
        self.0.put_u8(id as u8);
        put_var_int(self.0, value);
    }
    fn binary(&mut self, id: PropertyId, value: &[u8]) {
        self.0.put_u8(id as u8);
        put_binary(self.0, value);
    }
    fn pair(&mut self, id: PropertyId, name: &[u8], value: &[u8]) {
        self.0.put_u8(id as u8);
        put_binary(self.0, name);
        put_binary(self.0, value);
    }
}

/// A typed set of properties: how it stores each decoded property and how it lists its own.
pub(crate) trait PropertySet: Default {
    /// Stores one property; `Ok(false)` means this packet may not carry it.
    fn store(&mut self, id: PropertyId, value: Value) -> Result<bool, DecodeError>;
    /// Hands every present property to `sink`.
    fn visit<S: PropertySink>(&self, sink: &mut S);

    /// Reads a Property Length and the properties it covers.
    fn read(r: &mut Reader, packet: PacketType) -> Result<Self, DecodeError> {
        let len = r.var_int()? as usize;
        let mut r = Reader::new(r.take(len)?);
        let mut set = Self::default();
        let mut seen: u64 = 0;
        while !r.is_empty() {
            let raw = r.var_int()?;
            let id = PropertyId::from_u32(raw).ok_or(DecodeError::UnknownProperty(raw))?;
            let bit = 1u64 << (id as u8);
            if seen & bit != 0 && !id.may_repeat() {
                return Err(DecodeError::DuplicateProperty(id));
            }
            seen |= bit;
            let value = Value::read(id, &mut r)?;
            if !set.store(id, value)? {
                return Err(DecodeError::PropertyNotAllowed {
                    property: id,
                    packet,
                });
            }
        }
        Ok(set)
    }

    /// The length of the properties alone, without the Property Length prefix.
    fn body_len(&self) -> usize {
        let mut counter = LengthCounter::default();
        self.visit(&mut counter);
        counter.0
    }

    /// The length of the Property Length prefix and the properties.
    fn encoded_len(&self) -> usize {
        let len = self.body_len();
        var_int_len(u32::try_from(len).unwrap_or(u32::MAX)) + len
    }

    /// Writes the Property Length prefix and the properties.
    fn write(&self, buf: &mut BytesMut) {
        put_var_int(buf, u32::try_from(self.body_len()).unwrap_or(u32::MAX));
        self.visit(&mut Writer(buf));
    }

    /// True when the set holds no property at all.
    fn is_empty(&self) -> bool {
        self.body_len() == 0
    }
}

fn visit_opt_u32<S: PropertySink>(sink: &mut S, id: PropertyId, value: Option<u32>) {
    if let Some(v) = value {
        sink.u32(id, v);
    }
}

fn visit_opt_u16<S: PropertySink>(sink: &mut S, id: PropertyId, value: Option<u16>) {
    if let Some(v) = value {
        sink.u16(id, v);
    }
}

fn visit_opt_flag<S: PropertySink>(sink: &mut S, id: PropertyId, value: Option<bool>) {
    if let Some(v) = value {
        sink.byte(id, u8::from(v));
    }
}

fn visit_opt_bytes<S: PropertySink>(sink: &mut S, id: PropertyId, value: Option<&[u8]>) {
    if let Some(v) = value {
        sink.binary(id, v);
    }
}

fn visit_user_properties<S: PropertySink>(sink: &mut S, props: &[UserProperty]) {
    for p in props {
        sink.pair(
            PropertyId::UserProperty,
            p.name.as_bytes(),
            p.value.as_bytes(),
        );
    }
}

fn visit_payload_format<S: PropertySink>(sink: &mut S, value: Option<PayloadFormat>) {
    if let Some(f) = value {
        let byte = match f {
            PayloadFormat::Unspecified => 0,
            PayloadFormat::Utf8 => 1,
        };
        sink.byte(PropertyId::PayloadFormatIndicator, byte);
    }
}

fn str_bytes(s: &Option<ByteString>) -> Option<&[u8]> {
    s.as_ref().map(|s| s.as_bytes().as_ref())
}

/// Properties of a CONNECT (§3.1.2.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Seconds the session outlives the connection; `None` means 0.
    pub session_expiry_interval: Option<u32>,
    /// How many QoS > 0 publishes the client accepts unacknowledged; `None` means 65 535.
    pub receive_maximum: Option<NonZeroU16>,
    /// The largest packet the client accepts; `None` means no limit beyond the protocol's.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// The highest topic alias the client accepts from the server; `None` means 0.
    pub topic_alias_maximum: Option<u16>,
    /// Whether the client asks for Response Information in the CONNACK.
    pub request_response_information: Option<bool>,
    /// Whether the server may send Reason Strings and User Properties on every packet.
    pub request_problem_information: Option<bool>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// The enhanced authentication method.
    pub authentication_method: Option<ByteString>,
    /// Data of the enhanced authentication method.
    pub authentication_data: Option<Bytes>,
}

impl PropertySet for ConnectProperties {
    fn store(&mut self, id: PropertyId, value: Value) -> Result<bool, DecodeError> {
        use PropertyId as P;
        let v = Typed(id, value);
        match id {
            P::SessionExpiryInterval => self.session_expiry_interval = Some(v.u32()?),
            P::ReceiveMaximum => self.receive_maximum = Some(v.non_zero_u16()?),
            P::MaximumPacketSize => self.maximum_packet_size = Some(v.non_zero_u32()?),
            P::TopicAliasMaximum => self.topic_alias_maximum = Some(v.u16()?),
            P::RequestResponseInformation => self.request_response_information = Some(v.flag()?),
            P::RequestProblemInformation => self.request_problem_information = Some(v.flag()?),
            P::UserProperty => self.user_properties.push(v.user_property()?),
            P::AuthenticationMethod => self.authentication_method = Some(v.string()?),
            P::AuthenticationData => self.authentication_data = Some(v.binary()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn visit<S: PropertySink>(&self, s: &mut S) {
        use PropertyId as P;
        visit_opt_u32(s, P::SessionExpiryInterval, self.session_expiry_interval);
        visit_opt_u16(
            s,
            P::ReceiveMaximum,
            self.receive_maximum.map(NonZeroU16::get),
        );
        visit_opt_u32(
            s,
            P::MaximumPacketSize,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        visit_opt_u16(s, P::TopicAliasMaximum, self.topic_alias_maximum);
        visit_opt_flag(
            s,
            P::RequestResponseInformation,
            self.request_response_information,
        );
        visit_opt_flag(
            s,
            P::RequestProblemInformation,
            self.request_problem_information,
        );
        visit_user_properties(s, &self.user_properties);
        visit_opt_bytes(
            s,
            P::AuthenticationMethod,
            str_bytes(&self.authentication_method),
        );
        visit_opt_bytes(
            s,
            P::AuthenticationData,
            self.authentication_data.as_deref(),
        );
    }
}

/// Properties of the will in a CONNECT (§3.1.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Seconds to wait after the connection closes before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// Whether the will payload is UTF-8.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Lifetime of the will message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content type of the will payload.
    pub content_type: Option<ByteString>,
    /// Topic for a response to the will.
    pub response_topic: Option<ByteString>,
    /// Correlation data for a response to the will.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for WillProperties {
    fn store(&mut self, id: PropertyId, value: Value) -> Result<bool, DecodeError> {
        use PropertyId as P;
        let v = Typed(id, value);
        match id {
            P::WillDelayInterval => self.will_delay_interval = Some(v.u32()?),
            P::PayloadFormatIndicator => self.payload_format_indicator = Some(v.payload_format()?),
            P::MessageExpiryInterval => self.message_expiry_interval = Some(v.u32()?),
            P::ContentType => self.content_type = Some(v.string()?),
            P::ResponseTopic => self.response_topic = Some(v.topic()?),
            P::CorrelationData => self.correlation_data = Some(v.binary()?),
            P::UserProperty => self.user_properties.push(v.user_property()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn visit<S: PropertySink>(&self, s: &mut S) {
        use PropertyId as P;
        visit_opt_u32(s, P::WillDelayInterval, self.will_delay_interval);
        visit_payload_format(s, self.payload_format_indicator);
        visit_opt_u32(s, P::MessageExpiryInterval, self.message_expiry_interval);
        visit_opt_bytes(s, P::ContentType, str_bytes(&self.content_type));
        visit_opt_bytes(s, P::ResponseTopic, str_bytes(&self.response_topic));
        visit_opt_bytes(s, P::CorrelationData, self.correlation_data.as_deref());
        visit_user_properties(s, &self.user_properties);
    }
}

/// Properties of a CONNACK (§3.2.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// The session expiry the server will use, when it differs from the client's.
    pub session_expiry_interval: Option<u32>,
    /// How many QoS > 0 publishes the server accepts unacknowledged.
    pub receive_maximum: Option<NonZeroU16>,
    /// The highest QoS the server supports (0 or 1; absent means 2).
    pub maximum_qos: Option<QoS>,
    /// Whether the server supports retained messages.
    pub retain_available: Option<bool>,
    /// The largest packet the server accepts.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// The client identifier the server assigned to an empty one.
    pub assigned_client_identifier: Option<ByteString>,
    /// The highest topic alias the server accepts from the client.
    pub topic_alias_maximum: Option<u16>,
    /// A human-readable diagnostic.
    pub reason_string: Option<ByteString>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Whether wildcard subscriptions are supported.
    pub wildcard_subscription_available: Option<bool>,
    /// Whether subscription identifiers are supported.
    pub subscription_identifiers_available: Option<bool>,
    /// Whether shared subscriptions are supported.
    pub shared_subscription_available: Option<bool>,
    /// The keep-alive the client must use instead of its own.
    pub server_keep_alive: Option<u16>,
    /// Basis for response topics, when the client asked for it.
    pub response_information: Option<ByteString>,
    /// Another server the client should use.
    pub server_reference: Option<ByteString>,
    /// The enhanced authentication method.
    pub authentication_method: Option<ByteString>,
    /// Data of the enhanced authentication method.
    pub authentication_data: Option<Bytes>,
}

impl PropertySet for ConnAckProperties {
    fn store(&mut self, id: PropertyId, value: Value) -> Result<bool, DecodeError> {
        use PropertyId as P;
        let v = Typed(id, value);
        match id {
            P::SessionExpiryInterval => self.session_expiry_interval = Some(v.u32()?),
            P::ReceiveMaximum => self.receive_maximum = Some(v.non_zero_u16()?),
            P::MaximumQos => {
                self.maximum_qos = Some(match v.u8()? {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(DecodeError::InvalidPropertyValue(id)),
                });
            }
            P::RetainAvailable => self.retain_available = Some(v.flag()?),
            P::MaximumPacketSize => self.maximum_packet_size = Some(v.non_zero_u32()?),
            P::AssignedClientIdentifier => self.assigned_client_identifier = Some(v.string()?),
            P::TopicAliasMaximum => self.topic_alias_maximum = Some(v.u16()?),
            P::ReasonString => self.reason_string = Some(v.string()?),
            P::UserProperty => self.user_properties.push(v.user_property()?),
            P::WildcardSubscriptionAvailable => {
                self.wildcard_subscription_available = Some(v.flag()?);
            }
            P::SubscriptionIdentifierAvailable => {
                self.subscription_identifiers_available = Some(v.flag()?);
            }
            P::SharedSubscriptionAvailable => self.shared_subscription_available = Some(v.flag()?),
            P::ServerKeepAlive => self.server_keep_alive = Some(v.u16()?),
            P::ResponseInformation => self.response_information = Some(v.string()?),
            P::ServerReference => self.server_reference = Some(v.string()?),
            P::AuthenticationMethod => self.authentication_method = Some(v.string()?),
            P::AuthenticationData => self.authentication_data = Some(v.binary()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn visit<S: PropertySink>(&self, s: &mut S) {
        use PropertyId as P;
        visit_opt_u32(s, P::SessionExpiryInterval, self.session_expiry_interval);
        visit_opt_u16(
            s,
            P::ReceiveMaximum,
            self.receive_maximum.map(NonZeroU16::get),
        );
        if let Some(q) = self.maximum_qos {
            s.byte(P::MaximumQos, q as u8);
        }
        visit_opt_flag(s, P::RetainAvailable, self.retain_available);
        visit_opt_u32(
            s,
            P::MaximumPacketSize,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        visit_opt_bytes(
            s,
            P::AssignedClientIdentifier,
            str_bytes(&self.assigned_client_identifier),
        );
        visit_opt_u16(s, P::TopicAliasMaximum, self.topic_alias_maximum);
        visit_opt_bytes(s, P::ReasonString, str_bytes(&self.reason_string));
        visit_user_properties(s, &self.user_properties);
        visit_opt_flag(
            s,
            P::WildcardSubscriptionAvailable,
            self.wildcard_subscription_available,
        );
        visit_opt_flag(
            s,
            P::SubscriptionIdentifierAvailable,
            self.subscription_identifiers_available,
        );
        visit_opt_flag(
            s,
            P::SharedSubscriptionAvailable,
            self.shared_subscription_available,
        );
        visit_opt_u16(s, P::ServerKeepAlive, self.server_keep_alive);
        visit_opt_bytes(
            s,
            P::ResponseInformation,
            str_bytes(&self.response_information),
        );
        visit_opt_bytes(s, P::ServerReference, str_bytes(&self.server_reference));
        visit_opt_bytes(
            s,
            P::AuthenticationMethod,
            str_bytes(&self.authentication_method),
        );
        visit_opt_bytes(
            s,
            P::AuthenticationData,
            self.authentication_data.as_deref(),
        );
    }
}

/// Properties of a PUBLISH (§3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Whether the payload is UTF-8.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Lifetime of the message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// A topic alias standing for the topic name.
    pub topic_alias: Option<NonZeroU16>,
    /// Topic for a response.
    pub response_topic: Option<ByteString>,
    /// Correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Identifiers of the subscriptions that matched (server to client only).
    pub subscription_identifiers: Vec<NonZeroU32>,
    /// Content type of the payload.
    pub content_type: Option<ByteString>,
}

impl PublishProperties {
    /// The empty set, usable in constants.
    pub const EMPTY: Self = Self {
        payload_format_indicator: None,
        message_expiry_interval: None,
        topic_alias: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
        subscription_identifiers: Vec::new(),
        content_type: None,
    };

    /// The bytes these properties take in a PUBLISH (Property Length prefix included): what
    /// a broker keeping the message keeps of them, for its quotas.
    #[must_use]
    pub fn wire_len(&self) -> usize {
        PropertySet::encoded_len(self)
    }
}

impl PropertySet for PublishProperties {
    fn store(&mut self, id: PropertyId, value: Value) -> Result<bool, DecodeError> {
        use PropertyId as P;
        let v = Typed(id, value);
        match id {
            P::PayloadFormatIndicator => self.payload_format_indicator = Some(v.payload_format()?),
            P::MessageExpiryInterval => self.message_expiry_interval = Some(v.u32()?),
            P::TopicAlias => self.topic_alias = Some(v.non_zero_u16()?),
            P::ResponseTopic => self.response_topic = Some(v.topic()?),
            P::CorrelationData => self.correlation_data = Some(v.binary()?),
            P::UserProperty => self.user_properties.push(v.user_property()?),
            P::SubscriptionIdentifier => self.subscription_identifiers.push(v.non_zero_u32()?),
            P::ContentType => self.content_type = Some(v.string()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn visit<S: PropertySink>(&self, s: &mut S) {
        visit_publish(s, Some(self), None);
    }
}

/// The PUBLISH properties a broker sets per subscriber, in place of the message's own:
/// the identifiers of the subscriber's matching subscriptions and the remaining lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryProperties<'a> {
    /// Subscription Identifiers of the matching subscriptions.
    pub subscription_ids: &'a [NonZeroU32],
    /// The Message Expiry Interval left, in seconds.
    pub message_expiry_interval: Option<u32>,
    /// The Topic Alias the broker uses for this topic on this connection.
    pub topic_alias: Option<NonZeroU16>,
}

/// Visits a PUBLISH's properties; `delivery`, when given, replaces the subscription
/// identifiers, the message expiry interval and the topic alias.
fn visit_publish<S: PropertySink>(
    s: &mut S,
    base: Option<&PublishProperties>,
    delivery: Option<&DeliveryProperties<'_>>,
) {
    use PropertyId as P;
    let expiry = match delivery {
        Some(d) => d.message_expiry_interval,
        None => base.and_then(|p| p.message_expiry_interval),
    };
    let ids: &[NonZeroU32] = match (delivery, base) {
        (Some(d), _) => d.subscription_ids,
        (None, Some(p)) => &p.subscription_identifiers,
        (None, None) => &[],
    };
    if let Some(p) = base {
        visit_payload_format(s, p.payload_format_indicator);
    }
    visit_opt_u32(s, P::MessageExpiryInterval, expiry);
    let alias = match delivery {
        Some(d) => d.topic_alias,
        None => base.and_then(|p| p.topic_alias),
    };
    visit_opt_u16(s, P::TopicAlias, alias.map(NonZeroU16::get));
    if let Some(p) = base {
        visit_opt_bytes(s, P::ResponseTopic, str_bytes(&p.response_topic));
        visit_opt_bytes(s, P::CorrelationData, p.correlation_data.as_deref());
        visit_user_properties(s, &p.user_properties);
    }
    for id in ids {
        s.var_int(P::SubscriptionIdentifier, id.get());
    }
    if let Some(p) = base {
        visit_opt_bytes(s, P::ContentType, str_bytes(&p.content_type));
    }
}

/// The encoded length (Property Length prefix included) of a PUBLISH's properties with a
/// subscriber's [`DeliveryProperties`].
pub(crate) fn publish_properties_len(
    base: Option<&PublishProperties>,
    delivery: &DeliveryProperties<'_>,
) -> usize {
    let mut counter = LengthCounter::default();
    visit_publish(&mut counter, base, Some(delivery));
    var_int_len(u32::try_from(counter.0).unwrap_or(u32::MAX)) + counter.0
}

/// Writes a PUBLISH's properties with a subscriber's [`DeliveryProperties`].
pub(crate) fn write_publish_properties(
    base: Option<&PublishProperties>,
    delivery: &DeliveryProperties<'_>,
    buf: &mut BytesMut,
) {
    let mut counter = LengthCounter::default();
    visit_publish(&mut counter, base, Some(delivery));
    put_var_int(buf, u32::try_from(counter.0).unwrap_or(u32::MAX));
    visit_publish(&mut Writer(buf), base, Some(delivery));
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK (§3.4.2.2 and
/// following): a reason string and user properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// A human-readable diagnostic.
    pub reason_string: Option<ByteString>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for AckProperties {
    fn store(&mut self, id: PropertyId, value: Value) -> Result<bool, DecodeError> {
        let v = Typed(id, value);
        match id {
            PropertyId::ReasonString => self.reason_string = Some(v.string()?),
            PropertyId::UserProperty => self.user_properties.push(v.user_property()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn visit<S: PropertySink>(&self, s: &mut S) {
        visit_opt_bytes(s, PropertyId::ReasonString, str_bytes(&self.reason_string));
        visit_user_properties(s, &self.user_properties);
    }
}

/// Properties of a SUBSCRIBE (§3.8.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// The identifier to attach to messages delivered through these subscriptions.
    pub subscription_identifier: Option<NonZeroU32>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for SubscribeProperties {
    fn store(&mut self, id: PropertyId, value: Value) -> Result<bool, DecodeError> {
        let v = Typed(id, value);
        match id {
            PropertyId::SubscriptionIdentifier => {
                if self.subscription_identifier.is_some() {
                    return Err(DecodeError::DuplicateProperty(id));
                }
                self.subscription_identifier = Some(v.non_zero_u32()?);
            }
            PropertyId::UserProperty => self.user_properties.push(v.user_property()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn visit<S: PropertySink>(&self, s: &mut S) {
        if let Some(id) = self.subscription_identifier {
            s.var_int(PropertyId::SubscriptionIdentifier, id.get());
        }
        visit_user_properties(s, &self.user_properties);
    }
}

/// Properties of an UNSUBSCRIBE (§3.10.2.1): user properties only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubscribeProperties {
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for UnsubscribeProperties {
    fn store(&mut self, id: PropertyId, value: Value) -> Result<bool, DecodeError> {
        if id != PropertyId::UserProperty {
            return Ok(false);
        }
        self.user_properties.push(Typed(id, value).user_property()?);
        Ok(true)
    }

    fn visit<S: PropertySink>(&self, s: &mut S) {
        visit_user_properties(s, &self.user_properties);
    }
}

/// Properties of a DISCONNECT (§3.14.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// A new session expiry (client to server only).
    pub session_expiry_interval: Option<u32>,
    /// A human-readable diagnostic.
    pub reason_string: Option<ByteString>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Another server the client should use.
    pub server_reference: Option<ByteString>,
}

impl PropertySet for DisconnectProperties {
    fn store(&mut self, id: PropertyId, value: Value) -> Result<bool, DecodeError> {
        use PropertyId as P;
        let v = Typed(id, value);
        match id {
            P::SessionExpiryInterval => self.session_expiry_interval = Some(v.u32()?),
            P::ReasonString => self.reason_string = Some(v.string()?),
            P::UserProperty => self.user_properties.push(v.user_property()?),
            P::ServerReference => self.server_reference = Some(v.string()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn visit<S: PropertySink>(&self, s: &mut S) {
        use PropertyId as P;
        visit_opt_u32(s, P::SessionExpiryInterval, self.session_expiry_interval);
        visit_opt_bytes(s, P::ReasonString, str_bytes(&self.reason_string));
        visit_user_properties(s, &self.user_properties);
        visit_opt_bytes(s, P::ServerReference, str_bytes(&self.server_reference));
    }
}

/// Properties of an AUTH (§3.15.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// The enhanced authentication method.
    pub authentication_method: Option<ByteString>,
    /// Data of the enhanced authentication method.
    pub authentication_data: Option<Bytes>,
    /// A human-readable diagnostic.
    pub reason_string: Option<ByteString>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for AuthProperties {
    fn store(&mut self, id: PropertyId, value: Value) -> Result<bool, DecodeError> {
        use PropertyId as P;
        let v = Typed(id, value);
        match id {
            P::AuthenticationMethod => self.authentication_method = Some(v.string()?),
            P::AuthenticationData => self.authentication_data = Some(v.binary()?),
            P::ReasonString => self.reason_string = Some(v.string()?),
            P::UserProperty => self.user_properties.push(v.user_property()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn visit<S: PropertySink>(&self, s: &mut S) {
        use PropertyId as P;
        visit_opt_bytes(
            s,
            P::AuthenticationMethod,
            str_bytes(&self.authentication_method),
        );
        visit_opt_bytes(
            s,
            P::AuthenticationData,
            self.authentication_data.as_deref(),
        );
        visit_opt_bytes(s, P::ReasonString, str_bytes(&self.reason_string));
        visit_user_properties(s, &self.user_properties);
    }
}
