//! Application messages as the broker holds them: shared by every subscriber they go to.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::codec::{PublishProperties, QoS};
use crate::topic::TopicName;

/// One published message, shared (through an `Arc`) by every delivery of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published on.
    pub topic: TopicName,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The publisher's RETAIN flag.
    pub retain: bool,
    /// MQTT 5.0 properties passed through to subscribers.
    pub properties: Option<Box<PublishProperties>>,
    /// The unique number of the session that published it (for No Local), if it came from a
    /// client. Session numbers are never reused, unlike table slots.
    pub publisher: Option<u64>,
    /// Its sequence in the messages stream, when it was stored for persistent sessions.
    pub seq: Option<u64>,
    /// When its Message Expiry Interval runs out (MQTT 5.0), on the broker's clock.
    pub expires_at: Option<crate::time::Timestamp>,
}

impl Message {
    /// The bytes the broker keeps for this message: payload, topic and properties, which
    /// every quota on kept messages counts (a small payload can carry large properties).
    #[must_use]
    pub fn kept_bytes(&self) -> usize {
        self.payload.len()
            + self.topic.as_str().len()
            + self.properties.as_ref().map_or(0, |p| p.wire_len())
    }
}

/// A shared message.
pub type SharedMessage = Arc<Message>;

/// A will: the message to publish when a connection ends without DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The will message.
    pub message: Message,
    /// How long after the connection closes to publish it (MQTT 5.0 Will Delay Interval).
    pub delay: Duration,
}
