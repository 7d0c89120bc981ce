//! The public handle: [`Store`].

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

use bytestring::ByteString;
use jetmq_core::js::{RequestId, StoreError, StoreReply, StoreRequest, StoredMessage};
use jetmq_core::time::Timestamp;

use crate::config::StoreConfig;
use crate::error::OpenError;
use crate::group_commit::{AfterReplies, Callback, Msg, Op, Reply, Writer};
use crate::recovery::{self, RecoveryReport};

/// The embedded stream store: a handle to one data directory, safe to share between threads.
///
/// Every operation goes to one writer thread, which carries out what has queued up since its
/// last commit in one transaction and commits once (group commit). A reply means the operation
/// is durable under the configured [`crate::SyncPolicy`].
#[derive(Debug)]
pub struct Store {
    tx: Sender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
    writer_id: ThreadId,
    request_timeout: Duration,
    file: PathBuf,
}

/// What [`Store::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// The file size before, in bytes.
    pub before: u64,
    /// The file size after, in bytes.
    pub after: u64,
}

fn closed() -> StoreError {
    StoreError::Unavailable("store is closed".into())
}

impl Store {
    /// Opens (or creates) the store in `config.dir`, checks and recovers the file, and starts
    /// the writer thread. The report says how long that took and what was found.
    ///
    /// # Errors
    ///
    /// [`OpenError`] when the file cannot be opened, is in use, damaged or incompatible; its
    /// message names the file and what to do.
    pub fn open(config: StoreConfig) -> Result<(Self, RecoveryReport), OpenError> {
        let (db, state, report) = recovery::open(&config)?;
        let (tx, rx) = mpsc::channel();
        let request_timeout = config.request_timeout;
        let file = config.data_file();
        let log = if config.sync == crate::SyncPolicy::Always {
            let log_path = config.dir.join(crate::wal::LOG_FILE);
            Some(
                crate::wal::WriteAheadLog::open(&config, state.log_batch).map_err(|source| {
                    OpenError::Io {
                        path: log_path,
                        source,
                    }
                })?,
            )
        } else {
            None
        };
        let writer = Writer::new(config, db, state, log);
        let handle = thread::Builder::new()
            .name("jetmq-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| OpenError::Io {
                path: file.clone(),
                source,
            })?;
        let store = Self {
            tx,
            writer_id: handle.thread().id(),
            writer: Mutex::new(Some(handle)),
            request_timeout,
            file,
        };
        Ok((store, report))
    }

    /// The data file.
    #[must_use]
    pub fn data_file(&self) -> &Path {
        &self.file
    }

    /// Has the writer thread call `hook` after the replies of each commit have gone out (and
    /// after each batch that only reads). A caller whose callbacks only queue their replies
    /// wakes its own loop here, once per batch instead of once per reply: on a busy core, a
    /// wake per reply hands the core back and forth between the two threads for every reply.
    /// Replaces an earlier hook; takes effect for the batches after those queued before it.
    pub fn after_replies(&self, hook: impl Fn() + Send + 'static) {
        let hook: AfterReplies = Box::new(hook);
        let _ = self.tx.send(Msg::AfterReplies(hook));
    }

    fn send(&self, op: Op, done: Callback) {
        if let Err(mpsc::SendError(Msg::Job(_, done))) = self.tx.send(Msg::Job(op, done)) {
            done(Err(closed()));
        }
    }

    fn call(&self, op: Op, timeout: Option<Duration>) -> Reply {
        if thread::current().id() == self.writer_id {
            return Err(StoreError::Rejected(
                "a store callback must not wait for the store".into(),
            ));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(
            op,
            Box::new(move |reply| {
                let _ = tx.send(reply);
            }),
        );
        match timeout {
            Some(t) => rx.recv_timeout(t).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => StoreError::Timeout,
                mpsc::RecvTimeoutError::Disconnected => closed(),
            })?,
            None => rx.recv().map_err(|_| closed())?,
        }
    }

    /// Carries out one request and waits for its durable result (at most
    /// [`StoreConfig::request_timeout`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Rejected`] for an invalid request (nothing changed),
    /// [`StoreError::Unavailable`] when the disk failed or is full (nothing changed; the store
    /// works again once the cause is gone), [`StoreError::Timeout`] when no reply came in time
    /// (the outcome is unknown).
    pub fn execute(&self, request: StoreRequest) -> Result<StoreReply, StoreError> {
        self.call(Op::Request(request), Some(self.request_timeout))
    }

    /// Queues one request and returns at once; `callback` gets the result on the store's
    /// writer thread after the commit, in submission order. It must be quick and must not
    /// wait for the store.
    pub fn submit(
        &self,
        id: RequestId,
        request: StoreRequest,
        callback: impl FnOnce(RequestId, Result<StoreReply, StoreError>) + Send + 'static,
    ) {
        self.send(
            Op::Request(request),
            Box::new(move |reply| callback(id, reply)),
        );
    }

    /// Everything the broker needs at start-up, in (stream, seq) order: every message of the
    /// one-per-subject streams, and the messages of [`jetmq_core::js::Stream::Messages`] still
    /// pending for some consumer, with `pending_for`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the file cannot be read.
    pub fn restore(&self) -> Result<Vec<StoredMessage>, StoreError> {
        messages(self.call(Op::Restore, None)?)
    }

    /// Hands out a consumer's due messages, oldest first: those never handed out and those
    /// handed out longer than its ack wait before `now` (redelivery), so that at most
    /// `max_ack_pending` handed-out messages are unacknowledged and within their ack wait.
    /// Delivery times live in memory: after a restart every pending message is due again.
    ///
    /// # Errors
    ///
    /// [`StoreError::Rejected`] for an unknown consumer.
    pub fn fetch(
        &self,
        consumer: &str,
        max_ack_pending: usize,
        now: Timestamp,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        messages(self.call(
            Op::Fetch {
                consumer: consumer.into(),
                max_ack_pending,
                now,
            },
            Some(self.request_timeout),
        )?)
    }

    /// Sets how long a message handed out by [`Store::fetch`] may stay unacknowledged before
    /// it is handed out again (`None`: only on request, with `Pending`). Kept with the consumer.
    ///
    /// # Errors
    ///
    /// [`StoreError::Rejected`] for an unknown consumer; [`StoreError::Unavailable`] when the
    /// write failed.
    pub fn set_ack_wait(
        &self,
        consumer: &str,
        ack_wait: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.call(
            Op::SetAckWait {
                consumer: ByteString::from(consumer),
                ack_wait,
            },
            Some(self.request_timeout),
        )
        .map(|_| ())
    }

    /// Makes every earlier write durable now, whatever the sync policy.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the commit failed.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.call(Op::Flush, None).map(|_| ())
    }

    /// Shrinks the file to what its contents need. The store also does this by itself when the
    /// file is large and mostly free; freed space is reused without it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the file cannot be rewritten.
    pub fn compact(&self) -> Result<Compaction, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Compact(Box::new(move |r| {
                let _ = tx.send(r);
            })))
            .map_err(|_| closed())?;
        let (before, after) = rx.recv().map_err(|_| closed())??;
        Ok(Compaction { before, after })
    }

    /// Makes everything durable, closes the file and stops the writer thread. Dropping the
    /// store does the same, ignoring errors.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the final commit failed.
    pub fn close(self) -> Result<(), StoreError> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<(), StoreError> {
        let Some(handle) = self.writer.lock().ok().and_then(|mut w| w.take()) else {
            return Ok(());
        };
        if thread::current().id() == self.writer_id {
            // Dropped by a callback on the writer thread itself: it closes after this batch.
            let _ = self.tx.send(Msg::Close(Box::new(|_| {})));
            return Ok(());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let sent = self.tx.send(Msg::Close(Box::new(move |r| {
            let _ = tx.send(r);
        })));
        let result = if sent.is_ok() {
            rx.recv().unwrap_or_else(|_| Err(closed())).map(|_| ())
        } else {
            Err(closed())
        };
        let _ = handle.join();
        result
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn messages(reply: StoreReply) -> Result<Vec<StoredMessage>, StoreError> {
    match reply {
        StoreReply::Messages(m) => Ok(m),
        other => Err(StoreError::Rejected(
            format!("unexpected reply {other:?}").into(),
        )),
    }
}
