//! An in-memory store with the semantics of the embedded store and JetStream: the reference
//! model for tests and simulations, and a store for brokers that need no durability.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use bytestring::ByteString;

use super::{StoreError, StoreReply, StoreRequest, Stream, StoredMessage};

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
    /// Durable consumers: their filter subjects and unacknowledged sequences.
    pub consumers: BTreeMap<ByteString, (Vec<ByteString>, BTreeSet<u64>)>,
    /// How many requests were executed.
    pub executed: u64,
}

/// NATS subject matching: `*` matches one token, `>` one or more trailing tokens.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
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
    /// Never, in memory; the signature matches the durable stores.
    pub fn execute(&mut self, request: &StoreRequest) -> Result<StoreReply, StoreError> {
        self.executed += 1;
        match request {
            StoreRequest::Publish {
                stream,
                subject,
                headers,
                payload,
            } => {
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
                    self.kv.insert((*stream, subject.clone()), msg);
                } else {
                    for (filters, pending) in self.consumers.values_mut() {
                        if filters.iter().any(|f| subject_matches(f, subject)) {
                            pending.insert(self.next_seq);
                        }
                    }
                    self.log.insert(self.next_seq, msg);
                }
                Ok(StoreReply::Stored { seq: self.next_seq })
            }
            StoreRequest::Purge { stream, subject } => {
                self.kv.remove(&(*stream, subject.clone()));
                Ok(StoreReply::Done)
            }
            StoreRequest::UpsertConsumer { name, filters } => {
                self.consumers.entry(name.clone()).or_default().0 = filters.clone();
                Ok(StoreReply::Done)
            }
            StoreRequest::DeleteConsumer { name } => {
                self.consumers.remove(name);
                Ok(StoreReply::Done)
            }
            StoreRequest::Ack { consumer, seq } => {
                if let Some((_, pending)) = self.consumers.get_mut(consumer) {
                    pending.remove(seq);
                }
                Ok(StoreReply::Done)
            }
            StoreRequest::GetLast { stream, subject } => Ok(StoreReply::Message(
                self.records()
                    .into_iter()
                    .find(|r| r.stream == *stream && r.subject == *subject),
            )),
            StoreRequest::Delete { seq, .. } => {
                self.log.remove(seq);
                self.kv.retain(|_, m| m.seq != *seq);
                Ok(StoreReply::Done)
            }
            StoreRequest::List { stream, prefix } => Ok(StoreReply::Messages(
                self.records()
                    .into_iter()
                    .filter(|r| {
                        r.stream == *stream && r.subject.starts_with(prefix.as_ref() as &str)
                    })
                    .collect(),
            )),
            StoreRequest::Pending { consumer, limit } => Ok(StoreReply::Messages(
                self.records()
                    .into_iter()
                    .filter(|r| r.pending_for.contains(consumer))
                    .take(*limit)
                    .collect(),
            )),
        }
    }

    /// Everything a restarting broker reads back: every message of the one-per-subject streams
    /// and the messages still pending for some consumer, in (stream, sequence) order.
    #[must_use]
    pub fn records(&self) -> Vec<StoredMessage> {
        let mut out = Vec::new();
        for ((stream, _), m) in &self.kv {
            out.push(StoredMessage {
                stream: *stream,
                subject: m.subject.clone(),
                seq: m.seq,
                headers: m.headers.clone(),
                payload: m.payload.clone(),
                pending_for: Vec::new(),
            });
        }
        for m in self.log.values() {
            let pending_for: Vec<ByteString> = self
                .consumers
                .iter()
                .filter(|(_, (_, p))| p.contains(&m.seq))
                .map(|(n, _)| n.clone())
                .collect();
            if pending_for.is_empty() {
                continue;
            }
            out.push(StoredMessage {
                stream: Stream::Messages,
                subject: m.subject.clone(),
                seq: m.seq,
                headers: m.headers.clone(),
                payload: m.payload.clone(),
                pending_for,
            });
        }
        out
    }
}
