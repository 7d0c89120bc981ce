//! The writer thread: it owns the database, takes every request queued since its last commit,
//! carries them out in one write transaction and commits once, so concurrent writers share one
//! fsync (group commit). Replies go out only after the commit they depend on.
//!
//! With [`SyncPolicy::Always`] a batch's writes also go to the write-ahead log ([`crate::wal`]),
//! synced on the log's thread while the batch is applied here, and the replies wait for the
//! log. The batches then go on in one open write transaction, committed (durably) only when the
//! log is full, at a flush, before compaction and at close: the log keeps them meanwhile, and
//! a commit per batch would only cost time.
//!
//! After a storage failure (a full disk, an I/O error) every request of the failed commit gets
//! [`StoreError::Unavailable`], the database is closed, and the next batch reopens it (at most
//! every [`REOPEN_BACKOFF`]), so the store works again once the cause is gone. A batch whose
//! log record was synced but whose commit then failed is applied again from the log when the
//! file is reopened: its callers were told it failed, but it may have taken effect (never the
//! other way round).

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant as Clock};

use bytestring::ByteString;
use jetmq_core::js::{StoreError, StoreReply, StoreRequest};
use jetmq_core::time::Timestamp;
use redb::{Database, Durability, WriteTransaction};

use crate::codec;
use crate::config::{StoreConfig, SyncPolicy};
use crate::engine::{self, Fail, State, Tables, LAST_SEQ_KEY};
use crate::error::{describe, unavailable};
use crate::recovery;
use crate::wal::{WriteAheadLog, LOG_BATCH_KEY};

/// How long the writer waits before trying to reopen a database that failed.
pub(crate) const REOPEN_BACKOFF: Duration = Duration::from_millis(100);

/// A reply as the writer thread produces it.
pub(crate) type Reply = Result<StoreReply, StoreError>;
/// Where a reply goes.
pub(crate) type Callback = Box<dyn FnOnce(Reply) + Send>;
/// Called after the replies of a batch have gone out (see [`crate::Store::after_replies`]).
pub(crate) type AfterReplies = Box<dyn Fn() + Send>;
/// Where the result of a compaction goes: file sizes before and after.
pub(crate) type CompactCallback = Box<dyn FnOnce(Result<(u64, u64), StoreError>) + Send>;

/// One operation of a batch.
#[derive(Debug)]
pub(crate) enum Op {
    /// A core request.
    Request(StoreRequest),
    /// Messages due for a consumer ([`crate::Store::fetch`]).
    Fetch {
        consumer: ByteString,
        max_ack_pending: usize,
        now: Timestamp,
    },
    /// Sets a consumer's ack wait.
    SetAckWait {
        consumer: ByteString,
        ack_wait: Option<Duration>,
    },
    /// Everything a restarting broker reads.
    Restore,
    /// A durable commit now, whatever the sync policy.
    Flush,
}

impl Op {
    fn writes(&self) -> bool {
        match self {
            Self::Request(r) => engine::writes(r),
            Self::SetAckWait { .. } | Self::Flush => true,
            Self::Fetch { .. } | Self::Restore => false,
        }
    }
}

/// What the writer thread receives.
pub(crate) enum Msg {
    /// An operation and where its reply goes.
    Job(Op, Callback),
    /// Compact the file (after the operations queued before it).
    Compact(CompactCallback),
    /// Make everything durable, close the database and stop.
    Close(Callback),
    /// From now on, call this after the replies of each batch.
    AfterReplies(AfterReplies),
}

/// The writer thread's state.
pub(crate) struct Writer {
    config: StoreConfig,
    db: Option<Database>,
    state: State,
    /// When the last durable commit happened (for [`SyncPolicy::Interval`]).
    last_durable: Clock,
    /// A commit since then is not durable yet.
    unsynced: bool,
    /// Why the database is closed, and when to try again.
    failure: Option<(String, Clock)>,
    /// When automatic compaction last looked at the file.
    last_compact_check: Clock,
    /// Called after each batch's replies.
    after_replies: Option<AfterReplies>,
    /// The write-ahead log, with [`SyncPolicy::Always`].
    log: Option<WriteAheadLog>,
    /// With the log: the transaction the batches since the last commit went into.
    open: Option<WriteTransaction>,
}

fn run_callback(done: Callback, reply: Reply) {
    // A panicking callback must not take the writer thread (and every later reply) with it.
    let _ = panic::catch_unwind(AssertUnwindSafe(move || done(reply)));
}

impl Writer {
    /// A writer for an open database, and its write-ahead log with [`SyncPolicy::Always`].
    pub(crate) fn new(
        config: StoreConfig,
        db: Database,
        state: State,
        log: Option<WriteAheadLog>,
    ) -> Self {
        let now = Clock::now();
        Self {
            config,
            db: Some(db),
            state,
            last_durable: now,
            unsynced: false,
            failure: None,
            last_compact_check: now,
            after_replies: None,
            log,
            open: None,
        }
    }

    /// Serves requests until the store is closed or dropped.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        let mut batch: Vec<(Op, Callback)> = Vec::new();
        loop {
            let first = match self.sync_interval() {
                Some(d) if self.unsynced => {
                    let due = self.last_durable + d;
                    match rx.recv_timeout(due.saturating_duration_since(Clock::now())) {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => {
                            self.durable_commit();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            // Let the threads that queue requests finish what they are doing (on a busy core
            // the request that woke this thread is rarely the last of its burst), so one
            // commit takes the whole burst instead of one request each.
            std::thread::yield_now();
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Job(op, done) => {
                        batch.push((op, done));
                        if batch.len() < self.config.max_batch {
                            next = rx.try_recv().ok();
                        }
                    }
                    Msg::Compact(done) => {
                        self.run_batch(&mut batch);
                        let r = self.compact();
                        let _ = panic::catch_unwind(AssertUnwindSafe(move || done(r)));
                    }
                    Msg::AfterReplies(hook) => self.after_replies = Some(hook),
                    Msg::Close(done) => {
                        self.run_batch(&mut batch);
                        let r = self.close();
                        run_callback(done, r);
                        return;
                    }
                }
            }
            self.run_batch(&mut batch);
            if self
                .log
                .as_ref()
                .is_some_and(|log| log.len() >= self.config.log_bytes)
            {
                self.durable_commit();
            }
            self.maybe_compact();
        }
        self.run_batch(&mut batch);
        let _ = self.close();
    }

    fn sync_interval(&self) -> Option<Duration> {
        match self.config.sync {
            SyncPolicy::Interval(d) => Some(d),
            SyncPolicy::Always | SyncPolicy::Never => None,
        }
    }

    /// Carries out a batch in one transaction, then replies in order.
    fn run_batch(&mut self, batch: &mut Vec<(Op, Callback)>) {
        if batch.is_empty() {
            return;
        }
        let (ops, callbacks): (Vec<Op>, Vec<Callback>) = batch.drain(..).unzip();
        let replies = match self.transact_guarded(&ops) {
            Ok(replies) => replies,
            Err(reason) => ops.iter().map(|_| Err(unavailable(&reason))).collect(),
        };
        for (done, reply) in callbacks.into_iter().zip(replies) {
            run_callback(done, reply);
        }
        if let Some(hook) = &self.after_replies {
            let _ = panic::catch_unwind(AssertUnwindSafe(hook));
        }
    }

    /// Opens the database again after a failure, at most every [`REOPEN_BACKOFF`].
    fn ensure_open(&mut self) -> Result<(), String> {
        if self.db.is_some() {
            return Ok(());
        }
        if let Some((reason, retry_at)) = &self.failure {
            if Clock::now() < *retry_at {
                return Err(reason.clone());
            }
        }
        let path = self.config.data_file();
        let opened = recovery::open_database(&self.config, false).and_then(|(db, _)| {
            let mut state = recovery::load(&db, &path)?;
            recovery::replay_log(&db, &mut state, &self.config)?;
            Ok((db, state))
        });
        match opened {
            Ok((db, state)) => {
                if let Some(log) = &mut self.log {
                    // Everything logged is now durable in the data file.
                    log.reset_to(state.log_batch);
                }
                self.db = Some(db);
                self.state = state;
                self.failure = None;
                self.unsynced = false;
                self.last_durable = Clock::now();
                Ok(())
            }
            Err(e) => {
                let reason = format!("store file cannot be reopened: {e}");
                self.failure = Some((reason.clone(), Clock::now() + REOPEN_BACKOFF));
                Err(reason)
            }
        }
    }

    /// Closes the database after a storage failure; the in-memory state is reloaded on reopen.
    fn fail(&mut self, reason: String) {
        // Its batches are in the log, and come back from it when the file is reopened.
        let open = self.open.take();
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(open)));
        let db = self.db.take();
        // redb may find the failure again while closing; nothing more can be done about it here.
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(db)));
        self.state = State::default();
        // Reopening goes back to the last durable commit: nothing is left to sync.
        self.unsynced = false;
        self.failure = Some((reason, Clock::now()));
    }

    fn transact_guarded(&mut self, ops: &[Op]) -> Result<Vec<Reply>, String> {
        self.ensure_open()?;
        match panic::catch_unwind(AssertUnwindSafe(|| self.transact(ops))) {
            Ok(Ok(replies)) => Ok(replies),
            Ok(Err(e)) => {
                let reason = describe(&e);
                self.fail(reason.clone());
                Err(reason)
            }
            Err(_) => {
                let reason = "internal error in the storage engine".to_owned();
                self.fail(reason.clone());
                Err(reason)
            }
        }
    }

    fn durability(&self, force: bool) -> Durability {
        match self.config.sync {
            SyncPolicy::Always | SyncPolicy::Never => Durability::Immediate,
            SyncPolicy::Interval(d) => {
                if force || self.last_durable.elapsed() >= d {
                    Durability::Immediate
                } else {
                    Durability::None
                }
            }
        }
    }

    fn committed(&mut self, durability: Durability) {
        if matches!(durability, Durability::Immediate) {
            self.last_durable = Clock::now();
            self.unsynced = false;
            if let Some(log) = &mut self.log {
                log.restart();
            }
        } else {
            self.unsynced = true;
        }
    }

    /// One write transaction for the whole batch; with a write-ahead log, the batch's record
    /// is written and synced meanwhile, and the replies wait for it.
    fn transact(&mut self, ops: &[Op]) -> Result<Vec<Reply>, redb::Error> {
        let force = ops.iter().any(|o| matches!(o, Op::Flush));
        let writes = ops.iter().any(Op::writes);
        let Some(db) = &self.db else {
            return Err(redb::Error::DatabaseClosed);
        };
        if self.log.is_none() {
            let durability = self.durability(force);
            let replies = apply(db, &mut self.state, ops, durability, writes)?;
            if writes {
                self.committed(durability);
            }
            return Ok(replies);
        }
        let txn = match self.open.take() {
            Some(txn) => txn,
            None => db.begin_write()?,
        };
        let logged = match &mut self.log {
            Some(log) if writes => log_batch(log, ops)?,
            _ => None,
        };
        let ran = run_ops(&txn, &mut self.state, ops, logged);
        // Even when the batch failed, the log's thread must be done with the record.
        let synced = self.log.as_mut().map_or(Ok(()), WriteAheadLog::finish);
        // On a failure the transaction is dropped here, undoing the batches since the last
        // commit in the file; the log has every one of them that was acknowledged.
        let replies = ran?;
        synced?;
        if let Some(batch) = logged {
            self.state.log_batch = batch;
        }
        if force {
            let mut txn = txn;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            self.committed(Durability::Immediate);
        } else {
            self.open = Some(txn);
            if writes {
                self.unsynced = true;
            }
        }
        Ok(replies)
    }

    /// Drops the open transaction when it holds no writes (it only served reads).
    fn drop_idle_transaction(&mut self) {
        if !self.unsynced {
            self.open = None;
        }
    }

    /// An empty durable commit, making earlier non-durable ones (or the open transaction)
    /// durable.
    fn durable_commit(&mut self) {
        if let Err(reason) = self.transact_guarded(&[Op::Flush]) {
            // The next request will see the failure too and reopen.
            self.failure.get_or_insert((reason, Clock::now()));
        }
    }

    fn file_len(&self) -> u64 {
        std::fs::metadata(self.config.data_file()).map_or(0, |m| m.len())
    }

    /// Compacts the file; returns its size before and after.
    fn compact(&mut self) -> Result<(u64, u64), StoreError> {
        self.ensure_open().map_err(|r| unavailable(&r))?;
        if self.unsynced {
            self.durable_commit();
            self.ensure_open().map_err(|r| unavailable(&r))?;
        }
        self.drop_idle_transaction();
        let before = self.file_len();
        let Some(db) = self.db.as_mut() else {
            return Err(unavailable("store file is closed"));
        };
        // Each call moves pages towards the start of the file; a few rounds reach the minimum.
        for _ in 0..16 {
            match panic::catch_unwind(AssertUnwindSafe(|| db.compact())) {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => break,
                Ok(Err(e)) => {
                    let reason = describe(&e.into());
                    self.fail(reason.clone());
                    return Err(unavailable(&reason));
                }
                Err(_) => {
                    let reason = "internal error in the storage engine while compacting";
                    self.fail(reason.to_owned());
                    return Err(unavailable(reason));
                }
            }
        }
        Ok((before, self.file_len()))
    }

    /// Compacts when the file is large and mostly free space: looked at every
    /// [`StoreConfig::compact_check`] at most.
    fn maybe_compact(&mut self) {
        if self.last_compact_check.elapsed() < self.config.compact_check {
            return;
        }
        self.last_compact_check = Clock::now();
        let len = self.file_len();
        if len < self.config.compact_min_bytes {
            return;
        }
        let Some(db) = &self.db else {
            return;
        };
        let stats = match &self.open {
            Some(txn) => txn.stats().ok(),
            None => db.begin_write().ok().and_then(|txn| {
                let stats = txn.stats().ok();
                let _ = txn.abort();
                stats
            }),
        };
        let used = stats.map(|s| s.allocated_pages() * s.page_size() as u64);
        if used.is_some_and(|used| used < len / 2) {
            let _ = self.compact();
        }
    }

    /// Makes everything durable and closes the database.
    fn close(&mut self) -> Reply {
        let result = if self.db.is_some() && self.unsynced {
            self.transact_guarded(&[Op::Flush])
                .map(|_| StoreReply::Done)
                .map_err(|r| unavailable(&r))
        } else {
            Ok(StoreReply::Done)
        };
        self.open = None;
        if let Some(db) = self.db.take() {
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(db)));
            if result.is_ok() {
                recovery::closed_cleanly(&self.config.dir);
            }
        }
        result
    }
}

/// Starts writing the batch's record to the log; returns its number, or `None` when the batch
/// writes nothing the log keeps.
fn log_batch(log: &mut WriteAheadLog, ops: &[Op]) -> Result<Option<u64>, redb::Error> {
    let mut body = Vec::new();
    let mut count = 0;
    for op in ops {
        match op {
            Op::Request(request) => count += usize::from(codec::log_request(&mut body, request)),
            Op::SetAckWait { consumer, ack_wait } => {
                codec::log_ack_wait(&mut body, consumer, *ack_wait);
                count += 1;
            }
            Op::Fetch { .. } | Op::Restore | Op::Flush => {}
        }
    }
    if count == 0 {
        return Ok(None);
    }
    log.start(&codec::encode_logged_ops(count, &body))?;
    Ok(Some(log.next_batch()))
}

/// Carries out a batch in a write transaction of its own and commits it (or aborts it, when
/// nothing was written).
fn apply(
    db: &Database,
    state: &mut State,
    ops: &[Op],
    durability: Durability,
    writes: bool,
) -> Result<Vec<Reply>, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    let replies = run_ops(&txn, state, ops, None)?;
    if writes {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(replies)
}

/// Carries out a batch in `txn`, recording the log batch it includes.
fn run_ops(
    txn: &WriteTransaction,
    state: &mut State,
    ops: &[Op],
    logged: Option<u64>,
) -> Result<Vec<Reply>, redb::Error> {
    let mut replies = Vec::with_capacity(ops.len());
    {
        let mut t = Tables::open(txn).map_err(storage)?;
        let last_seq = state.last_seq;
        for op in ops {
            let result = match op {
                Op::Request(request) => state.apply(&mut t, request),
                Op::Fetch {
                    consumer,
                    max_ack_pending,
                    now,
                } => state
                    .fetch(&t, consumer, *max_ack_pending, *now)
                    .map(StoreReply::Messages),
                Op::SetAckWait { consumer, ack_wait } => state
                    .set_ack_wait(&mut t, consumer, *ack_wait)
                    .map(|()| StoreReply::Done),
                Op::Restore => state.restore(&t).map(StoreReply::Messages),
                Op::Flush => Ok(StoreReply::Done),
            };
            replies.push(match result {
                Ok(reply) => Ok(reply),
                Err(Fail::Rejected(why)) => Err(StoreError::Rejected(why.into())),
                Err(Fail::Storage(e)) => return Err(e),
            });
        }
        if state.last_seq != last_seq {
            t.meta.insert(LAST_SEQ_KEY, state.last_seq)?;
        }
        if let Some(batch) = logged {
            t.meta.insert(LOG_BATCH_KEY, batch)?;
        }
    }
    Ok(replies)
}

fn storage(e: Fail) -> redb::Error {
    match e {
        Fail::Storage(e) => e,
        Fail::Rejected(why) => redb::Error::Corrupted(why),
    }
}
