//! jetmq's embedded stream store: the subset of JetStream semantics the broker core uses
//! ([`jetmq_core::js`]), durable on local disk, used whenever no NATS server is configured.
//!
//! ```no_run
//! use jetmq_core::js::{StoreReply, StoreRequest, Stream};
//! use jetmq_store::{Store, StoreConfig};
//!
//! let (store, report) = Store::open(StoreConfig::new("/var/lib/jetmq"))?;
//! eprintln!("{report}");
//! let restored = store.restore()?; // sessions, retained and queued messages
//! let reply = store.execute(StoreRequest::Publish {
//!     stream: Stream::Retained,
//!     subject: "$MQTT.rmsgs.a.b".into(),
//!     headers: Vec::new(),
//!     payload: "hello".into(),
//! })?;
//! assert!(matches!(reply, StoreReply::Stored { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Semantics
//!
//! - One sequence counter for the whole store (as in the core's fake store): sequences grow
//!   across all streams and are never reused, also across restarts.
//! - One-per-subject streams (all but [`jetmq_core::js::Stream::Messages`]) keep the last
//!   message of each subject (limits retention, max messages per subject 1).
//! - [`jetmq_core::js::Stream::Messages`] has interest retention: a message becomes pending for
//!   every durable consumer with a matching filter subject (NATS matching: `*` one token, `>`
//!   the rest) when
//!   it is published, and is removed once all of them acknowledged it or were deleted. A
//!   message no consumer wants is not stored. A consumer with no filter wants nothing.
//! - `Pending` returns a consumer's unacknowledged messages whenever asked (redelivery on
//!   reconnect); [`Store::fetch`] adds JetStream's ack wait and max ack pending for callers that
//!   want timed redelivery.
//! - Publishing to a subject with an empty token, whitespace or control characters, and
//!   consumer names or filters JetStream refuses, give [`jetmq_core::js::StoreError::Rejected`].
//!   Subject tokens `*` and `>` are stored literally (the core maps MQTT topic levels `*` and
//!   `>` to them).
//!
//! # Durability
//!
//! All operations go through one writer thread that carries out everything queued since its
//! last commit in one redb write transaction and commits once: concurrent writers share one
//! fsync (group commit). Replies are sent after the commit. With [`SyncPolicy::Always`] (the
//! default) an acknowledged write survives `kill -9` and power loss: the batch's writes go to
//! a write-ahead log ([`wal`], file [`LOG_FILE`]) whose record is synced on its own thread
//! while the batch is applied to redb; the batches go on in one open redb transaction,
//! committed durably when the log is full, at a flush, before compaction and at close.
//! Start-up applies the log's batches the data file lacks. See [`SyncPolicy`] for
//! the others. A full disk or an I/O error fails the requests of that commit with
//! [`jetmq_core::js::StoreError::Unavailable`] and nothing of them is kept; the file is reopened
//! on a later request, so the store works again once space returns. [`Store::submit`] queues
//! without a bound: callers limit how many requests they have in flight.
//!
//! Start-up ([`Store::open`]) checks every page's checksum by default, lets redb cut off a
//! torn last commit, and returns a [`RecoveryReport`] (duration, messages per stream,
//! consumers, pending acks, whether the last run crashed and whether a torn commit was cut
//! off). A damaged, truncated or foreign file is refused with an [`OpenError`] that names the
//! file and what to do. Delivery times for [`Store::fetch`] live in memory only.
//!
//! # Storage engine: redb
//!
//! The store keeps its tables in [redb](https://docs.rs/redb) 4.x, one file, rather than in a
//! log of its own:
//!
//! - a request touches several tables (a stream's messages, the subject index, pending acks by
//!   consumer and by message); redb commits them atomically, so there is no multi-file
//!   recovery to write and test;
//! - its commits are copy-on-write with checksummed roots: a torn last commit fails its
//!   checksum at start-up and redb goes back to the previous one, which is exactly "cut off the
//!   torn write, lose nothing acknowledged" (a fault-injection test cuts a commit at a dozen
//!   byte offsets); [`StoreConfig::verify_on_open`] checks every page as well, so a damaged
//!   file is refused instead of misread;
//! - freed pages are reused by later commits, so disk use stays bounded under a steady load
//!   without compaction; [`Store::compact`] (also run automatically when a large file is
//!   mostly free) shrinks the file after a burst;
//! - it is pure Rust, needs no other crate and runs no background threads, which matters on a
//!   2-core broker host; fjall, the alternative, is an LSM tree with a journal and background
//!   compaction threads, built for write-heavy data much larger than memory, which the
//!   broker's state is not, and would still need our own atomicity across its keyspaces for
//!   recovery to be as simple;
//! - the cost is a few pages written per commit (a B-tree path per table touched; about 29 KB
//!   for one small message), which group commit spreads over the batch, and a sync of those
//!   scattered pages (about 250 µs for a batch of 64 messages and their acks). With a broker
//!   whose clients wait for each commit, that sync, during which the writer could do nothing,
//!   was the largest part of a persisted message's time. The write-ahead log ([`wal`]) moves
//!   it off the writer's path: one sequential record per batch, synced while redb applies the
//!   batch (persistent QoS 1 through the broker: 110–123 k → 160–164 k messages/s). The log
//!   only replays whole batches into redb; redb still gives atomic commits, torn-commit
//!   rollback and page reuse.
//!
//! # Modules
//!
//! [`config`] (how to open), [`Store`] (the handle), [`recovery`] (start-up and its report),
//! [`wal`] (the write-ahead log), [`contract`] (the backend-independent test suite).
#![forbid(unsafe_code)]

mod backend;
mod codec;
pub mod config;
mod consumer;
pub mod contract;
mod engine;
mod error;
mod group_commit;
pub mod recovery;
mod store;
mod subject;
pub mod wal;

#[cfg(test)]
mod fault_tests;

pub use config::{StoreConfig, SyncPolicy, DATA_FILE};
pub use error::OpenError;
pub use recovery::RecoveryReport;
pub use store::{Compaction, Store};
pub use wal::LOG_FILE;
