//! The byte layout of the records the store keeps: messages and consumers. Every record starts
//! with a format byte, so a later version can read old files. Lengths are little-endian `u32`.
//!
//! - message: `1`, subject length, subject, header count, then per header name length, name,
//!   value length, value; the payload is the rest.
//! - consumer: `1`, ack wait in nanoseconds (`u64`, `u64::MAX` for none), filter count, then
//!   per filter its length and bytes.
//! - logged batch ([`crate::wal`]): operation count, then per operation a tag byte and its
//!   fields: `1` publish (stream key, subject, message record), `2` purge (stream key,
//!   subject), `3` upsert consumer (name, filter count, filters), `4` delete consumer (name),
//!   `5` ack (consumer, `u64` sequence), `6` delete (stream key, `u64` sequence), `7` set ack
//!   wait (consumer, nanoseconds as in a consumer record).

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use jetmq_core::js::{Header, StoreRequest, Stream};

/// Every stream, in the order of [`Stream`]'s `Ord` (and of their table keys).
pub(crate) const STREAMS: [Stream; 5] = [
    Stream::Sessions,
    Stream::Messages,
    Stream::Qos2In,
    Stream::PubRel,
    Stream::Retained,
];

/// The table key of a stream.
pub(crate) fn stream_key(stream: Stream) -> u8 {
    match stream {
        Stream::Sessions => 0,
        Stream::Messages => 1,
        Stream::Qos2In => 2,
        Stream::PubRel => 3,
        Stream::Retained => 4,
    }
}

const FORMAT: u8 = 1;
const NO_ACK_WAIT: u64 = u64::MAX;

/// A message as read back from a record.
#[derive(Debug)]
pub(crate) struct MessageRecord {
    pub(crate) subject: ByteString,
    pub(crate) headers: Vec<(ByteString, ByteString)>,
    pub(crate) payload: Bytes,
}

/// A consumer's durable settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConsumerRecord {
    pub(crate) filters: Vec<ByteString>,
    pub(crate) ack_wait: Option<Duration>,
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Subjects, header values and filters are far below 4 GiB: the core caps packets at 256 MiB.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Encodes a message record.
pub(crate) fn encode_message(subject: &str, headers: &[Header], payload: &[u8]) -> Vec<u8> {
    let size = 1
        + 4
        + subject.len()
        + 4
        + headers
            .iter()
            .map(|h| 8 + h.name.len() + h.value.len())
            .sum::<usize>()
        + payload.len();
    let mut out = Vec::with_capacity(size);
    out.push(FORMAT);
    put_bytes(&mut out, subject.as_bytes());
    put_len(&mut out, headers.len());
    for h in headers {
        put_bytes(&mut out, h.name.as_bytes());
        put_bytes(&mut out, h.value.as_bytes());
    }
    out.extend_from_slice(payload);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!(
                "record ends early: {n} bytes wanted, {} left",
                self.bytes.len()
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self) -> Result<ByteString, String> {
        let len = self.u32()?;
        let b = self.take(len)?;
        std::str::from_utf8(b)
            .map(ByteString::from)
            .map_err(|_| "a string in the record is not UTF-8".to_owned())
    }

    fn stream(&mut self) -> Result<Stream, String> {
        let key = self.take(1)?[0];
        STREAMS
            .get(usize::from(key))
            .copied()
            .ok_or_else(|| format!("unknown stream key {key}"))
    }

    fn format(&mut self) -> Result<(), String> {
        match self.take(1)?[0] {
            FORMAT => Ok(()),
            other => Err(format!("unknown record format {other}")),
        }
    }
}

/// The subject of a message record, without decoding the rest.
pub(crate) fn message_subject(bytes: &[u8]) -> Result<&str, String> {
    let mut r = Reader { bytes };
    r.format()?;
    let len = r.u32()?;
    std::str::from_utf8(r.take(len)?).map_err(|_| "the subject is not UTF-8".to_owned())
}

/// Decodes a message record.
pub(crate) fn decode_message(bytes: &[u8]) -> Result<MessageRecord, String> {
    let mut r = Reader { bytes };
    r.format()?;
    let subject = r.string()?;
    let count = r.u32()?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = r.string()?;
        let value = r.string()?;
        headers.push((name, value));
    }
    Ok(MessageRecord {
        subject,
        headers,
        payload: Bytes::copy_from_slice(r.bytes),
    })
}

/// A write as the write-ahead log keeps it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoggedOp {
    /// A publish, its message already encoded as the record the stream keeps.
    Publish {
        stream: Stream,
        subject: ByteString,
        record: Vec<u8>,
    },
    /// Any other writing request.
    Request(StoreRequest),
    /// A consumer's new ack wait.
    SetAckWait {
        consumer: ByteString,
        ack_wait: Option<Duration>,
    },
}

fn encode_wait(ack_wait: Option<Duration>) -> u64 {
    ack_wait.map_or(NO_ACK_WAIT, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(NO_ACK_WAIT - 1)
    })
}

fn decode_wait(wait: u64) -> Option<Duration> {
    (wait != NO_ACK_WAIT).then(|| Duration::from_nanos(wait))
}

/// Appends one writing request to a batch being logged; returns false, appending nothing, for
/// a request that only reads.
pub(crate) fn log_request(out: &mut Vec<u8>, request: &StoreRequest) -> bool {
    match request {
        StoreRequest::Publish {
            stream,
            subject,
            headers,
            payload,
        } => {
            out.push(1);
            out.push(stream_key(*stream));
            put_bytes(out, subject.as_bytes());
            put_bytes(out, &encode_message(subject, headers, payload));
        }
        StoreRequest::Purge { stream, subject } => {
            out.push(2);
            out.push(stream_key(*stream));
            put_bytes(out, subject.as_bytes());
        }
        StoreRequest::UpsertConsumer { name, filters } => {
            out.push(3);
            put_bytes(out, name.as_bytes());
            put_len(out, filters.len());
            for f in filters {
                put_bytes(out, f.as_bytes());
            }
        }
        StoreRequest::DeleteConsumer { name } => {
            out.push(4);
            put_bytes(out, name.as_bytes());
        }
        StoreRequest::Ack { consumer, seq } => {
            out.push(5);
            put_bytes(out, consumer.as_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
        }
        StoreRequest::Delete { stream, seq } => {
            out.push(6);
            out.push(stream_key(*stream));
            out.extend_from_slice(&seq.to_le_bytes());
        }
        StoreRequest::GetLast { .. }
        | StoreRequest::Get { .. }
        | StoreRequest::List { .. }
        | StoreRequest::Pending { .. }
        | StoreRequest::Release { .. } => {
            return false;
        }
    }
    true
}

/// Logs a consumer's new ack wait.
pub(crate) fn log_ack_wait(out: &mut Vec<u8>, consumer: &str, ack_wait: Option<Duration>) {
    out.push(7);
    put_bytes(out, consumer.as_bytes());
    out.extend_from_slice(&encode_wait(ack_wait).to_le_bytes());
}

/// A logged batch: the operation count, then the operations ([`log_request`],
/// [`log_ack_wait`]) as `ops` holds them.
pub(crate) fn encode_logged_ops(count: usize, ops: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + ops.len());
    put_len(&mut out, count);
    out.extend_from_slice(ops);
    out
}

/// Decodes a logged batch.
pub(crate) fn decode_logged_ops(bytes: &[u8]) -> Result<Vec<LoggedOp>, String> {
    let mut r = Reader { bytes };
    let count = r.u32()?;
    let mut ops = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let tag = r.take(1)?[0];
        ops.push(match tag {
            1 => {
                let stream = r.stream()?;
                let subject = r.string()?;
                let len = r.u32()?;
                LoggedOp::Publish {
                    stream,
                    subject,
                    record: r.take(len)?.to_vec(),
                }
            }
            2 => LoggedOp::Request(StoreRequest::Purge {
                stream: r.stream()?,
                subject: r.string()?,
            }),
            3 => {
                let name = r.string()?;
                let n = r.u32()?;
                let mut filters = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    filters.push(r.string()?);
                }
                LoggedOp::Request(StoreRequest::UpsertConsumer { name, filters })
            }
            4 => LoggedOp::Request(StoreRequest::DeleteConsumer { name: r.string()? }),
            5 => LoggedOp::Request(StoreRequest::Ack {
                consumer: r.string()?,
                seq: r.u64()?,
            }),
            6 => LoggedOp::Request(StoreRequest::Delete {
                stream: r.stream()?,
                seq: r.u64()?,
            }),
            7 => LoggedOp::SetAckWait {
                consumer: r.string()?,
                ack_wait: decode_wait(r.u64()?),
            },
            other => return Err(format!("unknown logged operation {other}")),
        });
    }
    if !r.bytes.is_empty() {
        return Err("logged batch has trailing bytes".into());
    }
    Ok(ops)
}

/// Encodes a consumer record.
pub(crate) fn encode_consumer(record: &ConsumerRecord) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(1 + 8 + 4 + record.filters.iter().map(|f| 4 + f.len()).sum::<usize>());
    out.push(FORMAT);
    out.extend_from_slice(&encode_wait(record.ack_wait).to_le_bytes());
    put_len(&mut out, record.filters.len());
    for f in &record.filters {
        put_bytes(&mut out, f.as_bytes());
    }
    out
}

/// Decodes a consumer record.
pub(crate) fn decode_consumer(bytes: &[u8]) -> Result<ConsumerRecord, String> {
    let mut r = Reader { bytes };
    r.format()?;
    let wait = r.u64()?;
    let count = r.u32()?;
    let mut filters = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        filters.push(r.string()?);
    }
    if !r.bytes.is_empty() {
        return Err("consumer record has trailing bytes".into());
    }
    Ok(ConsumerRecord {
        filters,
        ack_wait: decode_wait(wait),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let headers = [
            Header {
                name: "Nmqtt-Pub",
                value: "1".into(),
            },
            Header {
                name: "X",
                value: "".into(),
            },
        ];
        let bytes = encode_message("a.b", &headers, b"payload");
        assert_eq!(message_subject(&bytes).unwrap(), "a.b");
        let m = decode_message(&bytes).unwrap();
        assert_eq!(m.subject, "a.b");
        assert_eq!(
            m.headers,
            vec![("Nmqtt-Pub".into(), "1".into()), ("X".into(), "".into())]
        );
        assert_eq!(&m.payload[..], b"payload");
        assert!(decode_message(&bytes[..5]).is_err());
        assert!(decode_message(&[9]).is_err());
    }

    #[test]
    fn logged_ops_round_trip() {
        let requests = [
            StoreRequest::Publish {
                stream: Stream::Messages,
                subject: "$MQTT.msgs.a".into(),
                headers: vec![Header {
                    name: "Nmqtt-Pub",
                    value: "1".into(),
                }],
                payload: Bytes::from_static(b"hello"),
            },
            StoreRequest::Purge {
                stream: Stream::Retained,
                subject: "$MQTT.rmsgs.a".into(),
            },
            StoreRequest::UpsertConsumer {
                name: "c".into(),
                filters: vec!["a.>".into(), "b".into()],
            },
            StoreRequest::DeleteConsumer { name: "c".into() },
            StoreRequest::Ack {
                consumer: "c".into(),
                seq: u64::MAX,
            },
            StoreRequest::Delete {
                stream: Stream::PubRel,
                seq: 7,
            },
            StoreRequest::List {
                stream: Stream::Sessions,
                prefix: "".into(),
            },
        ];
        let mut ops = Vec::new();
        let logged = requests.iter().filter(|r| log_request(&mut ops, r)).count();
        assert_eq!(logged, 6, "reads are not logged");
        log_ack_wait(&mut ops, "c", Some(Duration::from_millis(5)));
        let bytes = encode_logged_ops(logged + 1, &ops);
        let decoded = decode_logged_ops(&bytes).unwrap();
        assert_eq!(
            decoded[0],
            LoggedOp::Publish {
                stream: Stream::Messages,
                subject: "$MQTT.msgs.a".into(),
                record: encode_message(
                    "$MQTT.msgs.a",
                    &[Header {
                        name: "Nmqtt-Pub",
                        value: "1".into()
                    }],
                    b"hello"
                ),
            }
        );
        for (d, r) in decoded[1..6].iter().zip(&requests[1..6]) {
            assert_eq!(d, &LoggedOp::Request(r.clone()));
        }
        assert_eq!(
            decoded[6],
            LoggedOp::SetAckWait {
                consumer: "c".into(),
                ack_wait: Some(Duration::from_millis(5))
            }
        );
        for cut in 0..bytes.len() {
            assert!(decode_logged_ops(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn consumer_round_trip() {
        for ack_wait in [None, Some(Duration::from_millis(1500))] {
            let c = ConsumerRecord {
                filters: vec!["a.>".into(), "b.*".into()],
                ack_wait,
            };
            assert_eq!(decode_consumer(&encode_consumer(&c)).unwrap(), c);
        }
        assert!(decode_consumer(&[1, 0]).is_err());
    }
}
