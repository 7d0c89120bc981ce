//! The writer thread: it owns the database, takes every request queued since its last commit,
//! carries them out in one write transaction and commits once, so concurrent writers share one
//! fsync (group commit). Replies go out only after the commit they depend on.
//!
//! After a storage failure (a full disk, an I/O error) every request of the failed commit gets
//! [`StoreError::Unavailable`], the database is closed, and the next batch reopens it (at most
//! every [`REOPEN_BACKOFF`]), so the store works again once the cause is gone.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant as Clock};

use bytestring::ByteString;
use jetmq_core::js::{StoreError, StoreReply, StoreRequest};
use jetmq_core::time::Instant;
use redb::{Database, Durability};

use crate::config::{StoreConfig, SyncPolicy};
use crate::engine::{self, Fail, State, Tables, LAST_SEQ_KEY};
use crate::error::{describe, unavailable};
use crate::recovery;

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
        now: Instant,
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
}

fn run_callback(done: Callback, reply: Reply) {
    // A panicking callback must not take the writer thread (and every later reply) with it.
    let _ = panic::catch_unwind(AssertUnwindSafe(move || done(reply)));
}

impl Writer {
    /// A writer for an open database.
    pub(crate) fn new(config: StoreConfig, db: Database, state: State) -> Self {
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
        let opened = recovery::open_database(&self.config, false)
            .and_then(|(db, _)| recovery::load(&db, &path).map(|state| (db, state)));
        match opened {
            Ok((db, state)) => {
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
        } else {
            self.unsynced = true;
        }
    }

    /// One write transaction for the whole batch.
    fn transact(&mut self, ops: &[Op]) -> Result<Vec<Reply>, redb::Error> {
        let Some(db) = &self.db else {
            return Err(redb::Error::DatabaseClosed);
        };
        let force = ops.iter().any(|o| matches!(o, Op::Flush));
        let writes = ops.iter().any(Op::writes);
        let durability = self.durability(force);
        let mut txn = db.begin_write()?;
        txn.set_durability(durability)?;
        let state = &mut self.state;
        let mut replies = Vec::with_capacity(ops.len());
        {
            let mut t = Tables::open(&txn).map_err(storage)?;
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
        }
        if writes {
            txn.commit()?;
            self.committed(durability);
        } else {
            txn.abort()?;
        }
        Ok(replies)
    }

    /// An empty durable commit, making earlier non-durable ones durable.
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
        let used = db.begin_write().ok().and_then(|txn| {
            let stats = txn.stats().ok();
            let _ = txn.abort();
            stats.map(|s| s.allocated_pages() * s.page_size() as u64)
        });
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
        if let Some(db) = self.db.take() {
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(db)));
            if result.is_ok() {
                recovery::closed_cleanly(&self.config.dir);
            }
        }
        result
    }
}

fn storage(e: Fail) -> redb::Error {
    match e {
        Fail::Storage(e) => e,
        Fail::Rejected(why) => redb::Error::Corrupted(why),
    }
}
