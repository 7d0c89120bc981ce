//! MQTT 5.0 reason codes (§2.4), one enum per packet so a packet can only carry the codes the
//! spec allows on it ([MQTT-3.2.2-8], [MQTT-3.4.2-1], [MQTT-3.9.3-2], ...).

use std::fmt;

/// Defines a reason-code enum with its byte values and the conversions both ways.
macro_rules! reason_codes {
    ($(#[$doc:meta])* $name:ident { $($(#[doc = $vdoc:literal])* $variant:ident = $value:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[repr(u8)]
        pub enum $name {
            $($(#[doc = $vdoc])* $variant = $value,)+
        }

        impl $name {
            /// What the code means, in a sentence (its documentation): the Reason String the
            /// broker sends with it.
            #[must_use]
            pub fn description(self) -> &'static str {
                match self {
                    $(Self::$variant => concat!($($vdoc),*).trim_start(),)+
                }
            }

            /// Every code of this enum, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The code for `value`, or `None` when this packet may not carry it.
            #[must_use]
            pub const fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $($value => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// True for codes of 0x80 and above, which report a failure.
            #[must_use]
            pub const fn is_error(self) -> bool {
                self as u8 >= 0x80
            }
        }

        impl From<$name> for u8 {
            fn from(code: $name) -> u8 {
                code as u8
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?} ({:#04x})", self, *self as u8)
            }
        }
    };
}

reason_codes! {
    /// CONNACK reason codes. MQTT 3.1.1 return codes map onto the first six failure kinds.
    ConnectReason {
        /// The connection is accepted.
        Success = 0x00,
        /// Unspecified error.
        UnspecifiedError = 0x80,
        /// The CONNECT could not be parsed.
        MalformedPacket = 0x81,
        /// The CONNECT broke a protocol rule.
        ProtocolError = 0x82,
        /// Valid but refused by this implementation.
        ImplementationSpecificError = 0x83,
        /// The protocol level is not supported (3.1.1 return code 1).
        UnsupportedProtocolVersion = 0x84,
        /// The client identifier is refused (3.1.1 return code 2).
        ClientIdentifierNotValid = 0x85,
        /// Wrong user name or password (3.1.1 return code 4).
        BadUserNameOrPassword = 0x86,
        /// The client is not authorised (3.1.1 return code 5).
        NotAuthorized = 0x87,
        /// The server is not available (3.1.1 return code 3).
        ServerUnavailable = 0x88,
        /// The server is busy.
        ServerBusy = 0x89,
        /// The client is banned.
        Banned = 0x8A,
        /// The authentication method is not supported.
        BadAuthenticationMethod = 0x8C,
        /// The will topic is not accepted.
        TopicNameInvalid = 0x90,
        /// The CONNECT exceeds the maximum packet size.
        PacketTooLarge = 0x95,
        /// A quota has been exceeded.
        QuotaExceeded = 0x97,
        /// The will payload does not match its format indicator.
        PayloadFormatInvalid = 0x99,
        /// A retained will was asked for, but retain is not available.
        RetainNotSupported = 0x9A,
        /// The will QoS is not supported.
        QosNotSupported = 0x9B,
        /// The client should use another server, temporarily.
        UseAnotherServer = 0x9C,
        /// The client should use another server, permanently.
        ServerMoved = 0x9D,
        /// Connections arrive too fast.
        ConnectionRateExceeded = 0x9F,
    }
}

impl ConnectReason {
    /// The MQTT 3.1.1 CONNACK return code closest to this reason.
    #[must_use]
    pub const fn v3_return_code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::UnsupportedProtocolVersion => 1,
            Self::ClientIdentifierNotValid => 2,
            Self::BadUserNameOrPassword => 4,
            Self::NotAuthorized | Self::Banned | Self::BadAuthenticationMethod => 5,
            _ => 3,
        }
    }

    /// The reason for an MQTT 3.1.1 CONNACK return code, or `None` for codes above 5.
    #[must_use]
    pub const fn from_v3_return_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Success),
            1 => Some(Self::UnsupportedProtocolVersion),
            2 => Some(Self::ClientIdentifierNotValid),
            3 => Some(Self::ServerUnavailable),
            4 => Some(Self::BadUserNameOrPassword),
            5 => Some(Self::NotAuthorized),
            _ => None,
        }
    }
}

reason_codes! {
    /// PUBACK and PUBREC reason codes.
    PubAckReason {
        /// The message is accepted.
        Success = 0x00,
        /// Accepted, but nobody is subscribed.
        NoMatchingSubscribers = 0x10,
        /// Unspecified error.
        UnspecifiedError = 0x80,
        /// Valid but refused by this implementation.
        ImplementationSpecificError = 0x83,
        /// The publisher may not publish here.
        NotAuthorized = 0x87,
        /// The topic name is valid but not accepted.
        TopicNameInvalid = 0x90,
        /// The packet identifier is already in use.
        PacketIdentifierInUse = 0x91,
        /// A quota has been exceeded.
        QuotaExceeded = 0x97,
        /// The payload does not match its format indicator.
        PayloadFormatInvalid = 0x99,
    }
}

reason_codes! {
    /// PUBREL and PUBCOMP reason codes.
    PubRelReason {
        /// The message is released or completed.
        Success = 0x00,
        /// The packet identifier is not known.
        PacketIdentifierNotFound = 0x92,
    }
}

reason_codes! {
    /// SUBACK reason codes, one per topic filter.
    SubAckReason {
        /// Subscribed, maximum QoS 0.
        GrantedQos0 = 0x00,
        /// Subscribed, maximum QoS 1.
        GrantedQos1 = 0x01,
        /// Subscribed, maximum QoS 2.
        GrantedQos2 = 0x02,
        /// Unspecified error (the only failure code of MQTT 3.1.1).
        UnspecifiedError = 0x80,
        /// Valid but refused by this implementation.
        ImplementationSpecificError = 0x83,
        /// The client may not subscribe to this filter.
        NotAuthorized = 0x87,
        /// The topic filter is not valid.
        TopicFilterInvalid = 0x8F,
        /// The packet identifier is already in use.
        PacketIdentifierInUse = 0x91,
        /// A quota has been exceeded.
        QuotaExceeded = 0x97,
        /// Shared subscriptions are not supported.
        SharedSubscriptionsNotSupported = 0x9E,
        /// Subscription identifiers are not supported.
        SubscriptionIdentifiersNotSupported = 0xA1,
        /// Wildcard subscriptions are not supported.
        WildcardSubscriptionsNotSupported = 0xA2,
    }
}

reason_codes! {
    /// UNSUBACK reason codes, one per topic filter.
    UnsubAckReason {
        /// The subscription is deleted.
        Success = 0x00,
        /// There was no such subscription.
        NoSubscriptionExisted = 0x11,
        /// Unspecified error.
        UnspecifiedError = 0x80,
        /// Valid but refused by this implementation.
        ImplementationSpecificError = 0x83,
        /// The client may not unsubscribe.
        NotAuthorized = 0x87,
        /// The topic filter is not valid.
        TopicFilterInvalid = 0x8F,
        /// The packet identifier is already in use.
        PacketIdentifierInUse = 0x91,
    }
}

reason_codes! {
    /// DISCONNECT reason codes.
    DisconnectReason {
        /// Normal disconnection: the will is discarded.
        NormalDisconnection = 0x00,
        /// The client disconnects but wants its will published.
        DisconnectWithWillMessage = 0x04,
        /// Unspecified error.
        UnspecifiedError = 0x80,
        /// A packet could not be parsed.
        MalformedPacket = 0x81,
        /// A packet broke a protocol rule.
        ProtocolError = 0x82,
        /// Valid but refused by this implementation.
        ImplementationSpecificError = 0x83,
        /// The request is not authorised.
        NotAuthorized = 0x87,
        /// The server is busy.
        ServerBusy = 0x89,
        /// The server is shutting down.
        ServerShuttingDown = 0x8B,
        /// The authentication method is not supported.
        BadAuthenticationMethod = 0x8C,
        /// No packet arrived within 1.5 times the keep-alive.
        KeepAliveTimeout = 0x8D,
        /// Another connection took over the session.
        SessionTakenOver = 0x8E,
        /// A topic filter is not valid.
        TopicFilterInvalid = 0x8F,
        /// A topic name is not valid.
        TopicNameInvalid = 0x90,
        /// More unacknowledged QoS > 0 publishes than Receive Maximum.
        ReceiveMaximumExceeded = 0x93,
        /// A topic alias is not valid.
        TopicAliasInvalid = 0x94,
        /// A packet exceeded the maximum packet size.
        PacketTooLarge = 0x95,
        /// Messages arrive too fast.
        MessageRateTooHigh = 0x96,
        /// A quota has been exceeded.
        QuotaExceeded = 0x97,
        /// An administrator closed the connection.
        AdministrativeAction = 0x98,
        /// A payload does not match its format indicator.
        PayloadFormatInvalid = 0x99,
        /// Retained messages are not supported.
        RetainNotSupported = 0x9A,
        /// The QoS is not supported.
        QosNotSupported = 0x9B,
        /// The client should use another server, temporarily.
        UseAnotherServer = 0x9C,
        /// The client should use another server, permanently.
        ServerMoved = 0x9D,
        /// Shared subscriptions are not supported.
        SharedSubscriptionsNotSupported = 0x9E,
        /// Connections arrive too fast.
        ConnectionRateExceeded = 0x9F,
        /// The connection has lasted its maximum time.
        MaximumConnectTime = 0xA0,
        /// Subscription identifiers are not supported.
        SubscriptionIdentifiersNotSupported = 0xA1,
        /// Wildcard subscriptions are not supported.
        WildcardSubscriptionsNotSupported = 0xA2,
    }
}

reason_codes! {
    /// AUTH reason codes.
    AuthReason {
        /// Authentication succeeded.
        Success = 0x00,
        /// Another step of the exchange follows.
        ContinueAuthentication = 0x18,
        /// The client starts re-authentication.
        ReAuthenticate = 0x19,
    }
}
