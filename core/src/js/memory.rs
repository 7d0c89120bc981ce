//! An in-memory store with the semantics of the embedded store and JetStream: the reference
//! model for tests and simulations, and a store for brokers that need no durability.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use bytestring::ByteString;

use super::filter_index::FilterIndex;
use super::subjects::validate;
use super::{
    StoreError, StoreReply, StoreRequest, StoredMessage, Stream, EXPECTED_LAST_SUBJECT_SEQUENCE,
};

/// One message held by the [`MemoryStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryMessage {
    /// Its sequence (one counter for the whole store).
    pub seq: u64,
    /// Its subject.
    pub subject: ByteString,
    /// Its headers, in order.
    pub headers: Vec<(ByteString, ByteString)>,
    /// Its body.
    pub payload: Bytes,
}

/// An in-memory store: requests are applied in the order they are executed, with one sequence
/// counter for all streams.
#[derive(Debug, Default)]
pub struct MemoryStore {
    next_seq: u64,
    /// The one-per-subject streams, by stream and subject.
    pub kv: BTreeMap<(Stream, ByteString), MemoryMessage>,
    /// The messages stream, by sequence.
    pub log: BTreeMap<u64, MemoryMessage>,
    /// Durable consumers: their filter subjects and unacknowledged sequences (to read; they
    /// change through [`MemoryStore::execute`], which keeps `filters` with them).
    pub consumers: BTreeMap<ByteString, (Vec<ByteString>, BTreeSet<u64>)>,
    /// The consumers' filter subjects, indexed.
    filters: FilterIndex,
    /// How many requests were executed.
    pub executed: u64,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Carries out a request.
    ///
    /// # Errors
    ///
    /// [`StoreError::Rejected`] for a request with an invalid subject, filter or consumer name
    /// ([`Rejection::Invalid`](super::Rejection::Invalid)) and for a conditional write that
    /// expected another last message ([`Rejection::WrongLastSequence`](super::Rejection::WrongLastSequence)):
    /// nothing changes. The signature matches the durable stores.
    pub fn execute(&mut self, request: &StoreRequest) -> Result<StoreReply, StoreError> {
        self.executed += 1;
        validate(request).map_err(StoreError::invalid)?;
        match request {
            StoreRequest::Publish {
                stream,
                subject,
                headers,
                payload,
            } => self.publish(*stream, subject, headers, payload),
            StoreRequest::Purge { stream, subject } => {
                self.purge(*stream, subject);
                Ok(StoreReply::Done)
            }
            StoreRequest::UpsertConsumer { name, filters } => {
                let entry = self.consumers.entry(name.clone()).or_default();
                self.filters.replace(name, &entry.0, filters);
                entry.0 = filters.clone();
                Ok(StoreReply::Done)
            }
            StoreRequest::DeleteConsumer { name } => {
                if let Some((filters, _)) = self.consumers.remove(name) {
                    self.filters.replace(name, &filters, &[]);
                }
                self.drop_uninteresting();
                Ok(StoreReply::Done)
            }
            StoreRequest::Ack { consumer, seq } => {
                if let Some((_, pending)) = self.consumers.get_mut(consumer) {
                    pending.remove(seq);
                }
                self.drop_uninteresting();
                Ok(StoreReply::Done)
            }
            StoreRequest::GetLast { stream, subject } => Ok(StoreReply::Message(
                self.last_of(*stream, subject)
                    .map(|m| self.stored(*stream, m)),
            )),
            StoreRequest::Get { stream, seq } => {
                let found = self.by_seq(*stream, *seq);
                Ok(StoreReply::Message(found.map(|m| self.stored(*stream, m))))
            }
            StoreRequest::Delete { stream, seq } => {
                if stream.one_per_subject() {
                    self.kv.retain(|(s, _), m| !(s == stream && m.seq == *seq));
                } else {
                    self.forget(&[*seq]);
                }
                Ok(StoreReply::Done)
            }
            StoreRequest::List { stream, prefix } => Ok(StoreReply::Messages(
                self.stream_messages(*stream)
                    .into_iter()
                    .filter(|m| m.subject.starts_with(prefix.as_ref() as &str))
                    .collect(),
            )),
            // Every reader is handed every unacknowledged message: nothing is held back.
            StoreRequest::Release { .. } => Ok(StoreReply::Done),
            StoreRequest::Pending { consumer, limit } => {
                let Some((_, pending)) = self.consumers.get(consumer) else {
                    return Ok(StoreReply::Messages(Vec::new()));
                };
                Ok(StoreReply::Messages(
                    pending
                        .iter()
                        .filter_map(|seq| self.log.get(seq))
                        .take(*limit)
                        .map(|m| self.stored(Stream::Messages, m))
                        .collect(),
                ))
            }
        }
    }

    /// Appends a message to `stream` (in place of the subject's message on one-per-subject
    /// streams), if the subject's last message is the one a conditional write expects.
    fn publish(
        &mut self,
        stream: Stream,
        subject: &ByteString,
        headers: &[super::Header],
        payload: &Bytes,
    ) -> Result<StoreReply, StoreError> {
        if let Some(expected) = headers
            .iter()
            .find(|h| h.name == EXPECTED_LAST_SUBJECT_SEQUENCE)
        {
            let last = self.last_of(stream, subject).map_or(0, |m| m.seq);
            if expected.value.parse::<u64>() != Ok(last) {
                return Err(StoreError::wrong_last_sequence());
            }
        }
        self.next_seq += 1;
        let msg = MemoryMessage {
            seq: self.next_seq,
            subject: subject.clone(),
            headers: headers
                .iter()
                .map(|h| (ByteString::from(h.name), h.value.clone()))
                .collect(),
            payload: payload.clone(),
        };
        if stream.one_per_subject() {
            self.kv.insert((stream, subject.clone()), msg);
        } else {
            let mut interested = false;
            for name in self.filters.matching(subject) {
                if let Some((_, pending)) = self.consumers.get_mut(&name) {
                    pending.insert(self.next_seq);
                    interested = true;
                }
            }
            // Interest retention: a message nobody is interested in is not kept.
            if interested {
                self.log.insert(self.next_seq, msg);
            }
        }
        Ok(StoreReply::Stored { seq: self.next_seq })
    }

    /// Removes every message of `subject` in `stream`.
    fn purge(&mut self, stream: Stream, subject: &ByteString) {
        if stream.one_per_subject() {
            self.kv.remove(&(stream, subject.clone()));
        } else {
            let gone: Vec<u64> = self
                .log
                .values()
                .filter(|m| m.subject == *subject)
                .map(|m| m.seq)
                .collect();
            self.forget(&gone);
        }
    }

    /// The message of `stream` with sequence `seq`.
    fn by_seq(&self, stream: Stream, seq: u64) -> Option<&MemoryMessage> {
        if stream.one_per_subject() {
            self.kv
                .iter()
                .find(|((s, _), m)| *s == stream && m.seq == seq)
                .map(|(_, m)| m)
        } else {
            self.log.get(&seq)
        }
    }

    /// A subject's last message.
    fn last_of(&self, stream: Stream, subject: &ByteString) -> Option<&MemoryMessage> {
        if stream.one_per_subject() {
            self.kv.get(&(stream, subject.clone()))
        } else {
            self.log.values().rev().find(|m| m.subject == *subject)
        }
    }

    /// A held message as a [`StoredMessage`], with the consumers that still owe an ack.
    fn stored(&self, stream: Stream, m: &MemoryMessage) -> StoredMessage {
        let pending_for = if stream.one_per_subject() {
            Vec::new()
        } else {
            self.consumers
                .iter()
                .filter(|(_, (_, p))| p.contains(&m.seq))
                .map(|(n, _)| n.clone())
                .collect()
        };
        StoredMessage {
            stream,
            subject: m.subject.clone(),
            seq: m.seq,
            headers: m.headers.clone(),
            payload: m.payload.clone(),
            pending_for,
        }
    }

    /// The messages of one stream, in sequence order.
    fn stream_messages(&self, stream: Stream) -> Vec<StoredMessage> {
        let mut out: Vec<StoredMessage> = if stream.one_per_subject() {
            self.kv
                .iter()
                .filter(|((s, _), _)| *s == stream)
                .map(|(_, m)| self.stored(stream, m))
                .collect()
        } else {
            self.log.values().map(|m| self.stored(stream, m)).collect()
        };
        out.sort_by_key(|m| m.seq);
        out
    }

    /// Removes messages of the messages stream and every pending ack for them.
    fn forget(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.log.remove(seq);
            for (_, pending) in self.consumers.values_mut() {
                pending.remove(seq);
            }
        }
    }

    /// Interest retention: drops messages no consumer still owes an ack for.
    fn drop_uninteresting(&mut self) {
        let consumers = &self.consumers;
        self.log
            .retain(|seq, _| consumers.values().any(|(_, p)| p.contains(seq)));
    }

    /// Everything a restarting broker reads back: every message of the one-per-subject streams
    /// and the messages still pending for some consumer, in (stream, sequence) order.
    #[must_use]
    pub fn records(&self) -> Vec<StoredMessage> {
        [
            Stream::Sessions,
            Stream::Messages,
            Stream::Qos2In,
            Stream::PubRel,
            Stream::Retained,
        ]
        .into_iter()
        .flat_map(|stream| self.stream_messages(stream))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::js::Header;

    #[test]
    fn a_conditional_write_that_lost_is_no_invalid_request() {
        let mut store = MemoryStore::default();
        let write = |store: &mut MemoryStore, expected: u64| {
            store.execute(&StoreRequest::Publish {
                stream: Stream::Sessions,
                subject: "$MQTT.sess.x".into(),
                headers: vec![Header {
                    name: EXPECTED_LAST_SUBJECT_SEQUENCE,
                    value: expected.to_string().into(),
                }],
                payload: Bytes::from_static(b"{}"),
            })
        };
        let Ok(StoreReply::Stored { seq }) = write(&mut store, 0) else {
            panic!("a first record expecting none");
        };
        assert_eq!(write(&mut store, 0), Err(StoreError::wrong_last_sequence()));
        assert!(write(&mut store, seq).is_ok());
        let invalid = store.execute(&StoreRequest::Purge {
            stream: Stream::Sessions,
            subject: "a..b".into(),
        });
        assert!(
            matches!(&invalid, Err(e) if !e.is_wrong_last_sequence()),
            "{invalid:?}"
        );
    }
}
