//! The JetStream API as JSON: the request bodies jetmq sends and the replies it reads, with the
//! subjects they go to. Only the fields jetmq uses are modelled; the server's others are
//! ignored when read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::Stream;

/// Where the JetStream API listens: `$JS.API`, or `$JS.<domain>.API` for a JetStream domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPrefix(pub String);

impl ApiPrefix {
    /// The prefix of the local JetStream, or of `domain`'s.
    #[must_use]
    pub fn new(domain: Option<&str>) -> Self {
        match domain {
            Some(d) => Self(format!("$JS.{d}.API")),
            None => Self("$JS.API".into()),
        }
    }

    /// `<prefix>.<rest>`.
    #[must_use]
    pub fn subject(&self, rest: &str) -> String {
        format!("{}.{rest}", self.0)
    }
}

/// A stream's configuration, as `STREAM.CREATE` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamConfig {
    /// The stream's name.
    pub name: &'static str,
    /// The subjects it captures.
    pub subjects: Vec<String>,
    /// `limits` or `interest`.
    pub retention: &'static str,
    /// 1 on the one-per-subject streams, -1 (no limit) elsewhere.
    pub max_msgs_per_subject: i64,
    /// Always `file`: the messages must survive a restart.
    pub storage: &'static str,
    /// How many servers keep a copy.
    pub num_replicas: usize,
}

impl StreamConfig {
    /// The configuration jetmq creates `stream` with: the NATS server's (facts §4.2), except
    /// that the inbound QoS 2 stream replaces a subject's message instead of refusing a new
    /// one, and the PUBREL stream keeps one message per subject (limits retention) since jetmq
    /// reads it back rather than through a consumer.
    #[must_use]
    pub fn for_stream(stream: Stream, replicas: usize) -> Self {
        Self {
            name: stream.name(),
            subjects: vec![format!("{}>", stream.prefix())],
            retention: if stream == Stream::Messages {
                "interest"
            } else {
                "limits"
            },
            max_msgs_per_subject: if stream.one_per_subject() { 1 } else { -1 },
            storage: "file",
            num_replicas: replicas.max(1),
        }
    }
}

/// A durable pull consumer's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerConfig {
    /// Its durable name.
    pub durable_name: String,
    /// Always `explicit`: each message is acknowledged by itself.
    pub ack_policy: &'static str,
    /// Always `new`: only messages stored after it was created.
    pub deliver_policy: &'static str,
    /// How long a handed-out message may stay unacknowledged before it is handed out again,
    /// in nanoseconds.
    pub ack_wait: u64,
    /// The most messages handed out and not yet acknowledged.
    pub max_ack_pending: usize,
    /// The subjects it wants (no two overlapping).
    pub filter_subjects: Vec<String>,
}

impl ConsumerConfig {
    /// A consumer named `name` wanting `filters`.
    #[must_use]
    pub fn new(
        name: &str,
        filters: Vec<String>,
        ack_wait: Duration,
        max_ack_pending: usize,
    ) -> Self {
        Self {
            durable_name: name.to_string(),
            ack_policy: "explicit",
            deliver_policy: "new",
            ack_wait: u64::try_from(ack_wait.as_nanos()).unwrap_or(u64::MAX),
            max_ack_pending,
            filter_subjects: filters,
        }
    }
}

/// The body of `CONSUMER.CREATE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateConsumer<'a> {
    /// The stream it reads.
    pub stream_name: &'a str,
    /// Its configuration.
    pub config: ConsumerConfig,
}

/// The body of `CONSUMER.MSG.NEXT`: a batch, answered at once with what is there, or
/// after a short wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NextRequest {
    /// The most messages wanted.
    pub batch: usize,
    /// Answer at once: a `404 No Messages` status ends a short batch.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_wait: bool,
    /// Otherwise wait this long (nanoseconds) for the batch to fill; a `408` status ends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// The body of `STREAM.MSG.GET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct MsgGet<'a> {
    /// The last message of this subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_by_subj: Option<&'a str>,
    /// The first message at or after `seq` matching this filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_by_subj: Option<&'a str>,
    /// Where `next_by_subj` starts; alone, the message with this sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The body of `STREAM.MSG.DELETE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MsgDelete {
    /// The message's sequence.
    pub seq: u64,
    /// Remove without overwriting the bytes (faster; the NATS server's MQTT does the same).
    pub no_erase: bool,
}

/// The body of `STREAM.PURGE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Purge<'a> {
    /// Only this subject's messages.
    pub filter: &'a str,
}

/// An error in an API reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// An HTTP-like status (404 not found, 503 unavailable, ...).
    pub code: u16,
    /// JetStream's own error number.
    #[serde(default)]
    pub err_code: u32,
    /// What went wrong.
    #[serde(default)]
    pub description: String,
}

impl ApiError {
    /// JetStream's "stream not found".
    pub const STREAM_NOT_FOUND: u32 = 10059;
    /// JetStream's "stream name already in use" (a create race, harmless).
    pub const STREAM_NAME_IN_USE: u32 = 10058;
    /// JetStream's "no message found".
    pub const NO_MESSAGE_FOUND: u32 = 10037;
    /// JetStream's "sequence not found" (a delete of a message that is gone).
    pub const SEQUENCE_NOT_FOUND: u32 = 10043;
    /// JetStream's "consumer not found".
    pub const CONSUMER_NOT_FOUND: u32 = 10014;
    /// JetStream's "wrong last sequence: {seq}" (a conditional publish whose expected last
    /// subject sequence did not match).
    pub const WRONG_LAST_SEQUENCE: u32 = 10071;
    /// JetStream's "wrong last sequence" without the sequence (the same refusal, from a
    /// clustered stream's in-flight check).
    pub const WRONG_LAST_SEQUENCE_CONSTANT: u32 = 10164;

    /// Whether it says there is no such message (a get past the last one, a delete of
    /// what is gone). A missing stream is not that: it is an error.
    #[must_use]
    pub fn is_missing_message(&self) -> bool {
        matches!(
            self.err_code,
            Self::NO_MESSAGE_FOUND | Self::SEQUENCE_NOT_FOUND
        )
    }

    /// Whether it says there is no such consumer.
    #[must_use]
    pub fn is_missing_consumer(&self) -> bool {
        self.err_code == Self::CONSUMER_NOT_FOUND
    }

    /// Whether it refuses a conditional publish because the subject's last message is not the
    /// one expected (another write came first).
    #[must_use]
    pub fn is_wrong_last_sequence(&self) -> bool {
        matches!(
            self.err_code,
            Self::WRONG_LAST_SEQUENCE | Self::WRONG_LAST_SEQUENCE_CONSTANT
        )
    }
}

/// Any API reply: an error, or the fields of the successful replies jetmq reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct Reply {
    /// Set when the request failed.
    pub error: Option<ApiError>,
    /// A publish acknowledgement's stream sequence.
    pub seq: Option<u64>,
    /// `STREAM.MSG.GET`'s message.
    pub message: Option<RawMessage>,
}

/// A stored message as `STREAM.MSG.GET` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RawMessage {
    /// Its subject.
    pub subject: String,
    /// Its stream sequence.
    pub seq: u64,
    /// Its header block, base64.
    #[serde(default)]
    pub hdrs: Option<String>,
    /// Its payload, base64.
    #[serde(default)]
    pub data: Option<String>,
}

/// What a delivered message's `$JS.ACK.` reply subject tells: the consumer that handed it
/// out and its stream sequence. The 9-token form is
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`; the 12-token form
/// adds a domain and an account hash after `ACK` and a random token at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckInfo<'a> {
    /// The consumer's name.
    pub consumer: &'a str,
    /// The message's stream sequence.
    pub stream_seq: u64,
}

impl<'a> AckInfo<'a> {
    /// Reads an ack subject; `None` when it is not one.
    #[must_use]
    pub fn parse(ack: &'a str) -> Option<Self> {
        let tokens: Vec<&str> = ack.split('.').collect();
        if tokens.get(..2) != Some(&["$JS", "ACK"][..]) {
            return None;
        }
        let consumer_at = match tokens.len() {
            9 => 3,
            n if n >= 11 => 5,
            _ => return None,
        };
        Some(Self {
            consumer: tokens[consumer_at],
            stream_seq: tokens[consumer_at + 2].parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects() {
        let info = |s| AckInfo::parse(s).map(|i| (i.consumer, i.stream_seq));
        assert_eq!(
            info("$JS.ACK.$MQTT_msgs.jetmq_x.1.42.7.1700000000.3"),
            Some(("jetmq_x", 42))
        );
        assert_eq!(
            info("$JS.ACK.hub.ACCHASH.$MQTT_msgs.jetmq_y.2.43.8.1700000000.0.xyz"),
            Some(("jetmq_y", 43))
        );
        assert_eq!(info("$JS.ACK.short"), None);
        assert_eq!(info("_INBOX.a.b.c.d.e.f.g.h"), None);
    }

    #[test]
    fn replies_parse() {
        let r: Reply = serde_json::from_str(
            r#"{"type":"x","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#,
        )
        .unwrap_or_default();
        let e = r.error.expect("an error");
        assert!(!e.is_missing_message() && !e.is_missing_consumer());
        assert_eq!(e.err_code, ApiError::STREAM_NOT_FOUND);
        let r: Reply =
            serde_json::from_str(r#"{"stream":"$MQTT_sess","seq":5}"#).unwrap_or_default();
        assert_eq!(r.seq, Some(5));
    }
}
