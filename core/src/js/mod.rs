//! The core's storage vocabulary, in JetStream terms: streams with subjects, one message per
//! subject for key-value-like streams, durable consumers with filter subjects and explicit
//! acks. The embedded store and JetStream both execute these requests, so the core cannot tell
//! them apart.
//!
//! The streams and subjects follow the NATS server's MQTT layout (`$MQTT_sess`, `$MQTT_msgs`,
//! `$MQTT_qos2in`, `$MQTT_out`, `$MQTT_rmsgs`); the record formats live in [`records`].

pub mod filter_index;
pub mod jetstream;
pub mod memory;
pub mod records;
pub mod subjects;

use std::fmt;

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

/// The number a request carries so its reply can find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// The streams the broker keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// `$MQTT_sess`: one session record per client (one message per subject).
    Sessions,
    /// `$MQTT_msgs`: QoS 1/2 messages for persistent sessions (interest retention).
    Messages,
    /// `$MQTT_qos2in`: inbound QoS 2 packet identifiers awaiting PUBREL (one per subject).
    Qos2In,
    /// `$MQTT_out`: outbound PUBREL state (one per subject).
    PubRel,
    /// `$MQTT_rmsgs`: retained messages (one per subject).
    Retained,
}

impl Stream {
    /// The JetStream name of the stream.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sessions => "$MQTT_sess",
            Self::Messages => "$MQTT_msgs",
            Self::Qos2In => "$MQTT_qos2in",
            Self::PubRel => "$MQTT_out",
            Self::Retained => "$MQTT_rmsgs",
        }
    }

    /// The prefix of every subject the stream captures (`<prefix>>` in JetStream).
    #[must_use]
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Sessions => "$MQTT.sess.",
            Self::Messages => "$MQTT.msgs.",
            Self::Qos2In => "$MQTT.qos2.in.",
            Self::PubRel => "$MQTT.out.",
            Self::Retained => "$MQTT.rmsgs.",
        }
    }

    /// Whether the stream keeps only the last message of each subject.
    #[must_use]
    pub const fn one_per_subject(self) -> bool {
        !matches!(self, Self::Messages)
    }
}

/// The header that makes a [`StoreRequest::Publish`] on a one-per-subject stream conditional,
/// as JetStream has it: the write is refused ([`Rejection::WrongLastSequence`]) unless the subject's
/// current message has this stream sequence (`0`: the subject has none). Fleet nodes write
/// records with it; JetStream and the [`memory::MemoryStore`] (the fleet tests' shared store)
/// check it, the embedded store (never shared by two brokers) keeps it as a plain header.
pub const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// A NATS-style message header: name and value, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// The header name.
    pub name: &'static str,
    /// The header value.
    pub value: ByteString,
}

/// One request to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StoreRequest {
    /// Append a message to a stream (replacing the subject's message on one-per-subject
    /// streams). Replied with [`StoreReply::Stored`].
    Publish {
        /// The stream.
        stream: Stream,
        /// The subject.
        subject: ByteString,
        /// Headers, in order.
        headers: Vec<Header>,
        /// The body.
        payload: Bytes,
    },
    /// Remove every message of a subject. Replied with [`StoreReply::Done`].
    Purge {
        /// The stream.
        stream: Stream,
        /// The subject.
        subject: ByteString,
    },
    /// Create a durable consumer on [`Stream::Messages`], or change its filter subjects. It
    /// receives the messages stored from now on whose subject matches a filter. Replied with
    /// [`StoreReply::Done`].
    UpsertConsumer {
        /// The durable name.
        name: ByteString,
        /// NATS filter subjects (wildcards allowed).
        filters: Vec<ByteString>,
    },
    /// Delete a durable consumer and its pending acknowledgements. Replied with
    /// [`StoreReply::Done`].
    DeleteConsumer {
        /// The durable name.
        name: ByteString,
    },
    /// Acknowledge a message for a consumer, so it is not redelivered; a message the consumer
    /// does not hold is fine. Replied with [`StoreReply::Done`].
    Ack {
        /// The durable name.
        consumer: ByteString,
        /// The stream sequence of the message.
        seq: u64,
    },
    /// The last message of a subject. Replied with [`StoreReply::Message`].
    GetLast {
        /// The stream.
        stream: Stream,
        /// The subject.
        subject: ByteString,
    },
    /// One message by sequence (a spilled message read back). Replied with
    /// [`StoreReply::Message`]: `None` when the stream has no such message.
    Get {
        /// The stream.
        stream: Stream,
        /// Its sequence.
        seq: u64,
    },
    /// Remove one message by sequence. Replied with [`StoreReply::Done`] (also when there was
    /// no such message).
    Delete {
        /// The stream.
        stream: Stream,
        /// Its sequence.
        seq: u64,
    },
    /// Every message of a stream whose subject starts with `prefix`, in sequence order
    /// (start-up loading). The prefix is empty or ends at a token boundary (`.`), as JetStream
    /// lists by the filter subject `<prefix>>`. Replied with [`StoreReply::Messages`].
    List {
        /// The stream.
        stream: Stream,
        /// The subject prefix (empty for all).
        prefix: ByteString,
    },
    /// Hands out a consumer's messages: those handed out before and not acknowledged, then
    /// new ones, oldest first, at most `limit` (its max ack pending). Each carries
    /// `pending_for: [consumer]`. Replied with [`StoreReply::Messages`].
    Pending {
        /// The durable name.
        consumer: ByteString,
        /// The most messages to return.
        limit: usize,
    },
    /// Gives back what this store connection was handed of a consumer's messages and has not
    /// acknowledged, so that another reader of the consumer (a fleet node the session resumes
    /// on) is handed them at once rather than after the ack wait. A store that hands every
    /// unacknowledged message to every reader has nothing to do. Replied with
    /// [`StoreReply::Done`].
    Release {
        /// The durable name.
        consumer: ByteString,
    },
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreReply {
    /// The message was stored durably under this stream sequence.
    Stored {
        /// The stream sequence.
        seq: u64,
    },
    /// The request was carried out durably.
    Done,
    /// The message asked for, if there is one.
    Message(Option<StoredMessage>),
    /// The messages asked for, in sequence order.
    Messages(Vec<StoredMessage>),
}

/// Why a store request failed. The core never treats a failed write as done: the client gets
/// a failure reason code, or its connection is closed so it sends again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreError {
    /// No answer in time.
    Timeout,
    /// The store cannot take writes now (disk full, NATS down, ...); the same request may
    /// succeed later.
    Unavailable(ByteString),
    /// The store refused this request, for the [`Rejection`]'s reason; sent again as it is,
    /// it is refused again.
    Rejected(Rejection),
}

/// Why a store refused a request ([`StoreError::Rejected`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// The request is invalid (a subject, filter or consumer name the store refuses, an
    /// unknown consumer, a reply the store cannot read back), in the store's words.
    Invalid(ByteString),
    /// A conditional write ([`EXPECTED_LAST_SUBJECT_SEQUENCE`]) found another message last on
    /// its subject than the one it expected: another write came first.
    WrongLastSequence,
}

impl StoreError {
    /// The store refused the request as invalid, for the reason `why`.
    #[must_use]
    pub fn invalid(why: impl Into<ByteString>) -> Self {
        Self::Rejected(Rejection::Invalid(why.into()))
    }

    /// A conditional write's refusal: the subject's last message is not the one expected.
    #[must_use]
    pub const fn wrong_last_sequence() -> Self {
        Self::Rejected(Rejection::WrongLastSequence)
    }

    /// Whether a conditional write was refused because another write came first.
    #[must_use]
    pub fn is_wrong_last_sequence(&self) -> bool {
        matches!(self, Self::Rejected(Rejection::WrongLastSequence))
    }
}

/// A refusal given in words alone is an invalid request ([`Rejection::Invalid`]): the backends
/// build their refusals with `StoreError::Rejected(why.into())`.
impl From<String> for Rejection {
    fn from(why: String) -> Self {
        Self::Invalid(why.into())
    }
}

/// Words alone: an invalid request, as for `String`.
impl From<&str> for Rejection {
    fn from(why: &str) -> Self {
        Self::Invalid(why.into())
    }
}

/// Words alone: an invalid request, as for `String`.
impl From<ByteString> for Rejection {
    fn from(why: ByteString) -> Self {
        Self::Invalid(why)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(why) => f.write_str(why),
            Self::WrongLastSequence => f.write_str(
                "the subject's last message is not the one the write expected (another write \
                 came first)",
            ),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("store request timed out"),
            Self::Unavailable(why) => write!(f, "store unavailable: {why}"),
            Self::Rejected(why) => write!(f, "store refused the request: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A message read back from the store at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The stream it is in.
    pub stream: Stream,
    /// Its subject.
    pub subject: ByteString,
    /// Its stream sequence.
    pub seq: u64,
    /// Its headers, in order.
    pub headers: Vec<(ByteString, ByteString)>,
    /// Its body.
    pub payload: Bytes,
    /// The durable consumers that have not acknowledged it, on [`Stream::Messages`]: every one
    /// of them at start-up from the embedded store, the one asked for in a `Pending` reply.
    pub pending_for: Vec<ByteString>,
}
