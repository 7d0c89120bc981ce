//! The store's tables in redb and how each request changes them, inside one write transaction.
//!
//! Tables (one global sequence counter for the whole store, like the core's fake store):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | one per stream, named after it (`$MQTT_sess`, ...) | seq | message record ([`crate::codec`]) |
//! | `subjects` | (stream, subject, seq) | () — one-per-subject streams only |
//! | `pending` | (consumer, seq) | () |
//! | `consumers` | name | consumer record |
//! | `meta` | name | u64 (`format`, `last_seq`, `log_batch`: see [`crate::wal`]) |
//!
//! Invariants kept by every operation: each message of a one-per-subject stream has one
//! `subjects` row and a subject has at most one message; a message of [`Stream::Messages`] is
//! stored only while some consumer has it pending.
//!
//! Which consumers still owe an ack for a message (its interest) is kept in memory, indexed by
//! sequence, and rebuilt from `pending` when the file is opened: a table of it (format 1 had
//! one) cost an insert and a remove per message and consumer, about a fifth of a persisted
//! message's store time.
//!
//! [`Stream::Messages`] has no subject index on purpose: its messages go to many subjects, so
//! an index ordered by subject would dirty one page per distinct subject in every commit, which
//! measured as the largest cost of a batch. Its subject queries (`List`, `GetLast`, `Purge`:
//! start-up and rare operations) scan the stream instead.

use std::collections::BTreeMap;

use bytestring::ByteString;
use jetmq_core::js::{Header, StoreReply, StoredMessage, Stream};
use jetmq_core::time::Timestamp;
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::codec::{self, stream_key, ConsumerRecord, STREAMS};
use crate::consumer::{Consumer, Consumers};
use crate::subject;

/// The table of a stream's messages; one table per stream, so its length is a stream's count.
pub(crate) const fn messages_table(stream: Stream) -> TableDefinition<'static, u64, &'static [u8]> {
    TableDefinition::new(stream.name())
}
pub(crate) const SUBJECTS: TableDefinition<'_, (u8, &str, u64), ()> =
    TableDefinition::new("subjects");
pub(crate) const PENDING: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("pending");
/// Format 1's interest table (sequence, consumer): dropped when such a file is opened.
pub(crate) const INTEREST: TableDefinition<'_, (u64, &str), ()> = TableDefinition::new("interest");
pub(crate) const CONSUMERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("consumers");
pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// The `meta` key of the file format version.
pub(crate) const FORMAT_KEY: &str = "format";
/// The file format this version writes (it reads format 1 too, dropping its interest table;
/// format 1 versions refuse format 2, whose messages they would drop for lack of interest
/// rows).
pub(crate) const FORMAT: u64 = 2;
/// The `meta` key of the last sequence handed out.
pub(crate) const LAST_SEQ_KEY: &str = "last_seq";

/// The largest record redb takes is 3 GiB; refuse well before.
const MAX_RECORD: usize = 1 << 30;

/// Why one operation failed.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The request is invalid; nothing was changed.
    Rejected(String),
    /// The storage engine failed; the whole transaction must be dropped.
    Storage(redb::Error),
}

macro_rules! storage_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Fail {
            fn from(e: $t) -> Self {
                Self::Storage(e.into())
            }
        }
    )*};
}
storage_error!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError,
    redb::Error
);

/// A record that does not decode: the file is damaged.
pub(crate) fn corrupt(what: String) -> Fail {
    Fail::Storage(redb::Error::Corrupted(what))
}

fn reject(why: String) -> Fail {
    Fail::Rejected(why)
}

/// The tables of one write transaction, opened once per commit.
pub(crate) struct Tables<'t> {
    messages: [Table<'t, u64, &'static [u8]>; 5],
    subjects: Table<'t, (u8, &'static str, u64), ()>,
    pending: Table<'t, (&'static str, u64), ()>,
    consumers: Table<'t, &'static str, &'static [u8]>,
    pub(crate) meta: Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    fn messages(&self, stream: Stream) -> &Table<'t, u64, &'static [u8]> {
        &self.messages[usize::from(stream_key(stream))]
    }

    fn messages_mut(&mut self, stream: Stream) -> &mut Table<'t, u64, &'static [u8]> {
        &mut self.messages[usize::from(stream_key(stream))]
    }

    /// Opens (creating them if needed) every table in `txn`.
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, Fail> {
        Ok(Self {
            messages: [
                txn.open_table(messages_table(STREAMS[0]))?,
                txn.open_table(messages_table(STREAMS[1]))?,
                txn.open_table(messages_table(STREAMS[2]))?,
                txn.open_table(messages_table(STREAMS[3]))?,
                txn.open_table(messages_table(STREAMS[4]))?,
            ],
            subjects: txn.open_table(SUBJECTS)?,
            pending: txn.open_table(PENDING)?,
            consumers: txn.open_table(CONSUMERS)?,
            meta: txn.open_table(META)?,
        })
    }
}

/// The state the writer thread keeps besides the file: the sequence counter, the consumers and
/// the interest in each message of [`Stream::Messages`]. After a failed commit it is reloaded
/// from the file.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) last_seq: u64,
    /// The last batch of the write-ahead log the data file includes ([`crate::wal`]).
    pub(crate) log_batch: u64,
    pub(crate) consumers: Consumers,
    /// The consumers that have each message pending (the same pairs as the `pending` table).
    interest: BTreeMap<u64, Vec<ByteString>>,
}

fn collect<K, R>(range: R) -> Result<Vec<K>, Fail>
where
    R: Iterator<Item = Result<K, redb::StorageError>>,
{
    range.map(|r| r.map_err(Fail::from)).collect()
}

impl State {
    /// Appends a message; replaces the subject's message on one-per-subject streams.
    pub(crate) fn publish(
        &mut self,
        t: &mut Tables<'_>,
        stream: Stream,
        subject: &str,
        headers: &[Header],
        payload: &[u8],
    ) -> Result<u64, Fail> {
        self.publish_record(
            t,
            stream,
            subject,
            &codec::encode_message(subject, headers, payload),
        )
    }

    /// [`Self::publish`] with the message already encoded as its record (a publish replayed
    /// from the write-ahead log).
    pub(crate) fn publish_record(
        &mut self,
        t: &mut Tables<'_>,
        stream: Stream,
        subject: &str,
        record: &[u8],
    ) -> Result<u64, Fail> {
        subject::check_subject(subject).map_err(reject)?;
        if record.len() > MAX_RECORD {
            return Err(reject(format!(
                "message of {} bytes is larger than the store's limit of {MAX_RECORD}",
                record.len()
            )));
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        let s = stream_key(stream);
        if stream.one_per_subject() {
            self.purge(t, stream, subject)?;
            t.subjects.insert((s, subject, seq), ())?;
        } else {
            let interested = self.consumers.wanting(subject);
            if interested.is_empty() {
                // Interest retention: nobody would ever read it.
                return Ok(seq);
            }
            for name in &interested {
                t.pending.insert((&**name, seq), ())?;
            }
            self.interest.insert(seq, interested);
        }
        t.messages_mut(stream).insert(seq, record)?;
        Ok(seq)
    }

    /// Removes one message with its subject row and pending entries. Returns whether it existed.
    pub(crate) fn remove_message(
        &mut self,
        t: &mut Tables<'_>,
        stream: Stream,
        seq: u64,
    ) -> Result<bool, Fail> {
        let s = stream_key(stream);
        let Some(record) = t.messages_mut(stream).remove(seq)? else {
            return Ok(false);
        };
        if stream.one_per_subject() {
            let subject = message_subject(seq, record.value())?.to_owned();
            drop(record);
            t.subjects.remove((s, subject.as_str(), seq))?;
        } else {
            drop(record);
            for name in self.interest.remove(&seq).unwrap_or_default() {
                t.pending.remove((&*name, seq))?;
                if let Some(c) = self.consumers.get_mut(&name) {
                    c.delivered.remove(&seq);
                }
            }
        }
        Ok(true)
    }

    /// Removes every message of a subject.
    pub(crate) fn purge(
        &mut self,
        t: &mut Tables<'_>,
        stream: Stream,
        subject: &str,
    ) -> Result<(), Fail> {
        for seq in seqs_of_subject(t, stream, subject)? {
            self.remove_message(t, stream, seq)?;
        }
        Ok(())
    }

    /// Creates a consumer or changes its filters (keeping its pending messages and ack wait).
    pub(crate) fn upsert_consumer(
        &mut self,
        t: &mut Tables<'_>,
        name: &str,
        filters: &[ByteString],
    ) -> Result<(), Fail> {
        subject::check_consumer_name(name).map_err(reject)?;
        for f in filters {
            subject::check_filter(f).map_err(reject)?;
        }
        let mut consumer = self.consumers.get(name).cloned().unwrap_or_default();
        consumer.record.filters = filters.to_vec();
        t.consumers
            .insert(name, codec::encode_consumer(&consumer.record).as_slice())?;
        self.consumers.insert(name.into(), consumer);
        Ok(())
    }

    /// Sets a consumer's ack wait.
    pub(crate) fn set_ack_wait(
        &mut self,
        t: &mut Tables<'_>,
        name: &str,
        ack_wait: Option<std::time::Duration>,
    ) -> Result<(), Fail> {
        let Some(consumer) = self.consumers.get_mut(name) else {
            return Err(reject(format!("no consumer named {name:?}")));
        };
        let record = ConsumerRecord {
            ack_wait,
            ..consumer.record.clone()
        };
        t.consumers
            .insert(name, codec::encode_consumer(&record).as_slice())?;
        consumer.record = record;
        Ok(())
    }

    /// Deletes a consumer; messages it was the last to owe an ack for go with it.
    pub(crate) fn delete_consumer(&mut self, t: &mut Tables<'_>, name: &str) -> Result<(), Fail> {
        subject::check_consumer_name(name).map_err(reject)?;
        let seqs = collect(
            t.pending
                .range((name, 0)..=(name, u64::MAX))?
                .map(|r| r.map(|(k, _)| k.value().1)),
        )?;
        for seq in seqs {
            self.release(t, name, seq)?;
        }
        t.consumers.remove(name)?;
        self.consumers.remove(name);
        Ok(())
    }

    /// Acknowledges `seq` for `name` (idempotent).
    pub(crate) fn ack(&mut self, t: &mut Tables<'_>, name: &str, seq: u64) -> Result<(), Fail> {
        subject::check_consumer_name(name).map_err(reject)?;
        self.release(t, name, seq)?;
        if let Some(c) = self.consumers.get_mut(name) {
            c.delivered.remove(&seq);
        }
        Ok(())
    }

    /// Drops `name`'s interest in `seq`, and the message when nobody else wants it.
    fn release(&mut self, t: &mut Tables<'_>, name: &str, seq: u64) -> Result<(), Fail> {
        if t.pending.remove((name, seq))?.is_none() {
            return Ok(());
        }
        let nobody_else = self.interest.get_mut(&seq).is_none_or(|names| {
            names.retain(|n| n != name);
            names.is_empty()
        });
        if nobody_else {
            self.remove_message(t, Stream::Messages, seq)?;
        }
        Ok(())
    }

    /// One message, with the consumers that still owe an ack for it.
    fn read(
        &self,
        t: &Tables<'_>,
        stream: Stream,
        seq: u64,
    ) -> Result<Option<StoredMessage>, Fail> {
        let Some(record) = t.messages(stream).get(seq)? else {
            return Ok(None);
        };
        let m = codec::decode_message(record.value())
            .map_err(|e| corrupt(format!("message {seq}: {e}")))?;
        let pending_for = if stream == Stream::Messages {
            self.interest.get(&seq).cloned().unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(Some(StoredMessage {
            stream,
            subject: m.subject,
            seq,
            headers: m.headers,
            payload: m.payload,
            pending_for,
        }))
    }

    fn read_all(
        &self,
        t: &Tables<'_>,
        stream: Stream,
        seqs: impl IntoIterator<Item = u64>,
    ) -> Result<Vec<StoredMessage>, Fail> {
        let mut out = Vec::new();
        for seq in seqs {
            if let Some(m) = self.read(t, stream, seq)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The last message of a subject.
    pub(crate) fn get_last(
        &self,
        t: &Tables<'_>,
        stream: Stream,
        subject: &str,
    ) -> Result<Option<StoredMessage>, Fail> {
        subject::check_subject(subject).map_err(reject)?;
        let last = if stream.one_per_subject() {
            seqs_of_subject(t, stream, subject)?.pop()
        } else {
            let mut found = None;
            for row in t.messages(stream).iter()?.rev() {
                let (k, v) = row?;
                let seq = k.value();
                if message_subject(seq, v.value())? == subject {
                    found = Some(seq);
                    break;
                }
            }
            found
        };
        match last {
            Some(seq) => self.read(t, stream, seq),
            None => Ok(None),
        }
    }

    /// Every message whose subject starts with `prefix`, in sequence order.
    pub(crate) fn list(
        &self,
        t: &Tables<'_>,
        stream: Stream,
        prefix: &str,
    ) -> Result<Vec<StoredMessage>, Fail> {
        subject::check_list_prefix(prefix).map_err(reject)?;
        let s = stream_key(stream);
        let mut seqs = Vec::new();
        if stream.one_per_subject() {
            for row in t
                .subjects
                .range((s, prefix, 0)..(s.saturating_add(1), "", 0))?
            {
                let (k, _) = row?;
                let (_, subject, seq) = k.value();
                if !subject.starts_with(prefix) {
                    break;
                }
                seqs.push(seq);
            }
            seqs.sort_unstable();
        } else {
            for row in t.messages(stream).iter()? {
                let (k, v) = row?;
                let seq = k.value();
                if message_subject(seq, v.value())?.starts_with(prefix) {
                    seqs.push(seq);
                }
            }
        }
        self.read_all(t, stream, seqs)
    }

    /// Up to `limit` messages `name` has not acknowledged, oldest first.
    pub(crate) fn pending(
        &self,
        t: &Tables<'_>,
        name: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, Fail> {
        subject::check_consumer_name(name).map_err(reject)?;
        let seqs = collect(
            t.pending
                .range((name, 0)..=(name, u64::MAX))?
                .take(limit)
                .map(|r| r.map(|(k, _)| k.value().1)),
        )?;
        self.read_all(t, Stream::Messages, seqs)
    }

    /// Hands out the messages due for `name` at `now` (never handed out, or longer than the ack
    /// wait ago), keeping at most `max_ack_pending` unexpired deliveries.
    pub(crate) fn fetch(
        &mut self,
        t: &Tables<'_>,
        name: &str,
        max_ack_pending: usize,
        now: Timestamp,
    ) -> Result<Vec<StoredMessage>, Fail> {
        let Some(consumer) = self.consumers.get_mut(name) else {
            return Err(reject(format!("no consumer named {name:?}")));
        };
        let budget = consumer.budget(max_ack_pending, now);
        let mut seqs = Vec::new();
        if budget > 0 {
            for row in t.pending.range((name, 0)..=(name, u64::MAX))? {
                let seq = row?.0.value().1;
                if consumer.due(seq, now) {
                    seqs.push(seq);
                    if seqs.len() == budget {
                        break;
                    }
                }
            }
        }
        for seq in &seqs {
            consumer.delivered.insert(*seq, now);
        }
        self.read_all(t, Stream::Messages, seqs)
    }

    /// Everything a restarting broker needs, in (stream, seq) order.
    pub(crate) fn restore(&self, t: &Tables<'_>) -> Result<Vec<StoredMessage>, Fail> {
        let mut out = Vec::new();
        for stream in STREAMS {
            let seqs = collect(
                t.messages(stream)
                    .iter()?
                    .map(|r| r.map(|(k, _)| k.value())),
            )?;
            for m in self.read_all(t, stream, seqs)? {
                if stream.one_per_subject() || !m.pending_for.is_empty() {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    /// Carries out one core request.
    pub(crate) fn apply(
        &mut self,
        t: &mut Tables<'_>,
        request: &jetmq_core::js::StoreRequest,
    ) -> Result<StoreReply, Fail> {
        use jetmq_core::js::StoreRequest as R;
        Ok(match request {
            R::Publish {
                stream,
                subject,
                headers,
                payload,
            } => StoreReply::Stored {
                seq: self.publish(t, *stream, subject, headers, payload)?,
            },
            R::Purge { stream, subject } => {
                subject::check_subject(subject).map_err(reject)?;
                self.purge(t, *stream, subject)?;
                StoreReply::Done
            }
            R::UpsertConsumer { name, filters } => {
                self.upsert_consumer(t, name, filters)?;
                StoreReply::Done
            }
            R::DeleteConsumer { name } => {
                self.delete_consumer(t, name)?;
                StoreReply::Done
            }
            R::Ack { consumer, seq } => {
                self.ack(t, consumer, *seq)?;
                StoreReply::Done
            }
            R::GetLast { stream, subject } => {
                StoreReply::Message(self.get_last(t, *stream, subject)?)
            }
            R::Get { stream, seq } => StoreReply::Message(self.read(t, *stream, *seq)?),
            R::Delete { stream, seq } => {
                self.remove_message(t, *stream, *seq)?;
                StoreReply::Done
            }
            R::List { stream, prefix } => StoreReply::Messages(self.list(t, *stream, prefix)?),
            R::Pending { consumer, limit } => {
                StoreReply::Messages(self.pending(t, consumer, *limit)?)
            }
            // `Pending` hands every unacknowledged message to every reader: nothing is held.
            R::Release { .. } => StoreReply::Done,
        })
    }
}

fn message_subject(seq: u64, record: &[u8]) -> Result<&str, Fail> {
    codec::message_subject(record).map_err(|e| corrupt(format!("message {seq}: {e}")))
}

/// The sequences of a subject's messages, oldest first.
fn seqs_of_subject(t: &Tables<'_>, stream: Stream, subject: &str) -> Result<Vec<u64>, Fail> {
    let s = stream_key(stream);
    if stream.one_per_subject() {
        return collect(
            t.subjects
                .range((s, subject, 0)..=(s, subject, u64::MAX))?
                .map(|r| r.map(|(k, _)| k.value().2)),
        );
    }
    let mut seqs = Vec::new();
    for row in t.messages(stream).iter()? {
        let (k, v) = row?;
        let seq = k.value();
        if message_subject(seq, v.value())? == subject {
            seqs.push(seq);
        }
    }
    Ok(seqs)
}

/// Whether a request changes the file (and so needs a commit).
pub(crate) fn writes(request: &jetmq_core::js::StoreRequest) -> bool {
    use jetmq_core::js::StoreRequest as R;
    !matches!(
        request,
        R::GetLast { .. } | R::Get { .. } | R::List { .. } | R::Pending { .. } | R::Release { .. }
    )
}

/// Loads the sequence counter and the consumers from a transaction's tables.
pub(crate) fn load_state(t: &Tables<'_>) -> Result<State, Fail> {
    let format = t.meta.get(FORMAT_KEY)?.map(|v| v.value());
    if let Some(f) = format {
        // Format 1 differs only by its interest table, which the caller drops.
        if f != FORMAT && f != 1 {
            return Err(corrupt(format!(
                "file format {f}, this version reads formats 1 and {FORMAT}"
            )));
        }
    }
    let mut last_seq = t.meta.get(LAST_SEQ_KEY)?.map_or(0, |v| v.value());
    let log_batch = t
        .meta
        .get(crate::wal::LOG_BATCH_KEY)?
        .map_or(0, |v| v.value());
    // Every stored sequence was handed out before; never hand it out again.
    for stream in STREAMS {
        if let Some((k, _)) = t.messages(stream).last()? {
            last_seq = last_seq.max(k.value());
        }
    }
    let mut consumers = Consumers::new();
    for row in t.consumers.iter()? {
        let (k, v) = row?;
        let name = k.value();
        let record = codec::decode_consumer(v.value())
            .map_err(|e| corrupt(format!("consumer {name:?}: {e}")))?;
        consumers.insert(
            name.into(),
            Consumer {
                record,
                delivered: Default::default(),
            },
        );
    }
    let mut interest: BTreeMap<u64, Vec<ByteString>> = BTreeMap::new();
    for row in t.pending.iter()? {
        let (k, _) = row?;
        let (name, seq) = k.value();
        interest.entry(seq).or_default().push(name.into());
    }
    Ok(State {
        last_seq,
        log_batch,
        consumers,
        interest,
    })
}
