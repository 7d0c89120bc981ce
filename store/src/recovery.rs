//! Opening the data file: checking it, letting redb roll back a torn last commit, loading the
//! consumers and the sequence counter, and reporting what was found.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jetmq_core::js::Stream;
use redb::{Builder, Database, DatabaseError, Durability};

use crate::backend::DiskBackend;
use crate::codec::STREAMS;
use crate::codec::{self, LoggedOp};
use crate::config::{StoreConfig, SyncPolicy};
use crate::engine::{self, Fail, State, Tables, FORMAT, FORMAT_KEY, LAST_SEQ_KEY};
use crate::error::OpenError;
use crate::wal::{self, LOG_BATCH_KEY};

/// The marker file that exists while a store is open: found at start-up, it means the last
/// process did not close the store (it crashed or was killed).
const OPEN_MARKER: &str = "jetmq-store.open";

/// What start-up found and did, for the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The data file.
    pub file: PathBuf,
    /// How long opening, checking and loading took.
    pub duration: Duration,
    /// The file was new (or empty): there was nothing to recover.
    pub created: bool,
    /// The previous process did not close the store (crash, `kill -9`, power loss).
    pub unclean_shutdown: bool,
    /// The last commit in the file was incomplete (a torn write): it was cut off and the store
    /// went back to the commit before it. Such a commit was never acknowledged to a caller.
    pub torn_commit_discarded: bool,
    /// Every page's checksum was verified.
    pub verified: bool,
    /// The size of the data file, in bytes.
    pub file_bytes: u64,
    /// How many messages each stream holds.
    pub messages: BTreeMap<Stream, u64>,
    /// How many durable consumers there are.
    pub consumers: usize,
    /// How many (consumer, message) acknowledgements are outstanding.
    pub pending_acks: u64,
    /// The last sequence number handed out.
    pub last_seq: u64,
    /// Batches of writes applied again from the write-ahead log: acknowledged before the last
    /// run ended, and not yet in the data file's last durable commit.
    pub log_batches_replayed: u64,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "store {} opened in {:.1?}",
            self.file.display(),
            self.duration
        )?;
        if self.created {
            return f.write_str(" (new, empty)");
        }
        if self.unclean_shutdown {
            f.write_str("; not closed cleanly last time")?;
        }
        if self.torn_commit_discarded {
            f.write_str("; an incomplete last commit was cut off")?;
        }
        if self.log_batches_replayed > 0 {
            write!(
                f,
                "; {} batches replayed from the write-ahead log",
                self.log_batches_replayed
            )?;
        }
        if self.verified {
            f.write_str("; all checksums verified")?;
        }
        write!(f, "; {} bytes; messages:", self.file_bytes)?;
        for (stream, n) in &self.messages {
            write!(f, " {}={n}", stream.name())?;
        }
        write!(
            f,
            "; {} consumers, {} pending acks; last seq {}",
            self.consumers, self.pending_acks, self.last_seq
        )
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

fn classify(e: redb::Error, path: &Path) -> OpenError {
    let path = path.to_owned();
    match e {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            OpenError::Locked { path }
        }
        redb::Error::UpgradeRequired(v) => OpenError::Incompatible {
            path,
            detail: format!("storage format {v} needs an upgrade"),
        },
        redb::Error::Io(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            OpenError::Corrupt {
                path,
                detail: format!("the file is shorter than its contents say (truncated?): {source}"),
            }
        }
        redb::Error::Io(source) if source.kind() == std::io::ErrorKind::InvalidData => {
            OpenError::Corrupt {
                path,
                detail: source.to_string(),
            }
        }
        redb::Error::Io(source) => OpenError::Io { path, source },
        redb::Error::Corrupted(detail) => OpenError::Corrupt { path, detail },
        other => OpenError::Corrupt {
            path,
            detail: other.to_string(),
        },
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Opens redb on the data file. Shared by start-up and by the writer thread when it reopens the
/// file after an I/O error.
pub(crate) fn open_database(
    config: &StoreConfig,
    verify: bool,
) -> Result<(Database, bool), OpenError> {
    let path = config.data_file();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(&path))?;
    let backend = DiskBackend::new(
        file,
        config.sync != SyncPolicy::Never,
        #[cfg(test)]
        config.faults.clone(),
    )
    .map_err(|e| classify(e.into(), &path))?;
    // redb reports the stages of its repair: 0.3 is only reached when the last commit fails its
    // checksum and the previous one is restored.
    let stages = Arc::new(Mutex::new(Vec::<f64>::new()));
    let seen = Arc::clone(&stages);
    let mut builder = Builder::new();
    builder
        .set_cache_size(config.cache_bytes)
        .set_check_integrity_on_open(verify)
        .set_repair_callback(move |session| {
            if let Ok(mut s) = seen.lock() {
                s.push(session.progress());
            }
        });
    // redb may panic on some damaged files in debug builds; a damaged file must never crash
    // the broker.
    let opened = panic::catch_unwind(AssertUnwindSafe(|| builder.create_with_backend(backend)))
        .map_err(|p| OpenError::Corrupt {
            path: path.clone(),
            detail: format!("the storage engine failed reading it: {}", panic_text(&*p)),
        })?;
    let db = opened.map_err(|e: DatabaseError| classify(e.into(), &path))?;
    let torn = stages
        .lock()
        .map(|s| s.iter().any(|p| (*p - 0.3).abs() < 1e-9))
        .unwrap_or(false);
    Ok((db, torn))
}

fn open_error(e: Fail, path: &Path) -> OpenError {
    match e {
        Fail::Rejected(detail) => OpenError::Corrupt {
            path: path.to_owned(),
            detail,
        },
        Fail::Storage(redb::Error::Corrupted(detail)) if detail.starts_with("file format") => {
            OpenError::Incompatible {
                path: path.to_owned(),
                detail,
            }
        }
        Fail::Storage(e) => classify(e, path),
    }
}

/// Runs `run`, turning a panic of the storage engine (possible on some damaged files) into an
/// error.
fn guarded<T>(path: &Path, run: impl FnOnce() -> Result<T, Fail>) -> Result<T, OpenError> {
    panic::catch_unwind(AssertUnwindSafe(run))
        .map_err(|p| OpenError::Corrupt {
            path: path.to_owned(),
            detail: format!("the storage engine failed reading it: {}", panic_text(&*p)),
        })?
        .map_err(|e| open_error(e, path))
}

/// Creates the tables if needed, checks the format and loads the writer's state; the commit
/// that records the format is durable, so whatever the file shows from now on is on the disk.
pub(crate) fn load(db: &Database, path: &Path) -> Result<State, OpenError> {
    guarded(path, || {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let state = {
            let mut t = Tables::open(&txn)?;
            let state = engine::load_state(&t)?;
            t.meta.insert(FORMAT_KEY, FORMAT)?;
            state
        };
        // Format 1 kept the interest in a table; it is rebuilt in memory now.
        txn.delete_table(engine::INTEREST)
            .map_err(|e| Fail::Storage(e.into()))?;
        txn.commit()?;
        Ok(state)
    })
}

/// Applies, durably, the batches of the write-ahead log in `config.dir` that the data file does
/// not include yet ([`crate::wal`]); returns how many there were.
pub(crate) fn replay_log(
    db: &Database,
    state: &mut State,
    config: &StoreConfig,
) -> Result<u64, OpenError> {
    let log_path = config.dir.join(wal::LOG_FILE);
    let records = wal::read(&config.dir).map_err(io_error(&log_path))?;
    let included = state.log_batch;
    let pending: Vec<_> = records.into_iter().filter(|r| r.batch > included).collect();
    let Some(first) = pending.first() else {
        return Ok(0);
    };
    if first.batch != included + 1 {
        return Err(OpenError::Corrupt {
            path: log_path,
            detail: format!(
                "the write-ahead log goes on from batch {} but the data file ends at batch \
                 {included}: the data file is older than its log (restored from a backup?). \
                 Remove the log to open the data file without the log's batches",
                first.batch
            ),
        });
    }
    let path = config.data_file();
    guarded(&path, || {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut t = Tables::open(&txn)?;
            for record in &pending {
                let ops = codec::decode_logged_ops(&record.payload).map_err(|e| {
                    engine::corrupt(format!(
                        "write-ahead log batch {}: {e} ({})",
                        record.batch,
                        log_path.display()
                    ))
                })?;
                for op in ops {
                    let applied = match op {
                        LoggedOp::Publish {
                            stream,
                            subject,
                            record,
                        } => state
                            .publish_record(&mut t, stream, &subject, &record)
                            .map(drop),
                        LoggedOp::Request(request) => state.apply(&mut t, &request).map(drop),
                        LoggedOp::SetAckWait { consumer, ack_wait } => {
                            state.set_ack_wait(&mut t, &consumer, ack_wait)
                        }
                    };
                    match applied {
                        // Refused the first time too: it changed nothing then either.
                        Ok(()) | Err(Fail::Rejected(_)) => {}
                        Err(e @ Fail::Storage(_)) => return Err(e),
                    }
                }
                state.log_batch = record.batch;
            }
            t.meta.insert(LAST_SEQ_KEY, state.last_seq)?;
            t.meta.insert(LOG_BATCH_KEY, state.log_batch)?;
        }
        txn.commit()?;
        Ok(pending.len() as u64)
    })
}

/// Counts what the store holds, for the report.
fn count(db: &Database, report: &mut RecoveryReport) -> Result<(), Fail> {
    use redb::{ReadableDatabase, ReadableTableMetadata as _};
    let txn = db.begin_read().map_err(redb::Error::from)?;
    for stream in STREAMS {
        let n = txn.open_table(engine::messages_table(stream))?.len()?;
        report.messages.insert(stream, n);
    }
    report.pending_acks = txn.open_table(engine::PENDING)?.len()?;
    Ok(())
}

/// Opens the store's file: the start-up half of [`crate::Store::open`].
pub(crate) fn open(config: &StoreConfig) -> Result<(Database, State, RecoveryReport), OpenError> {
    let started = std::time::Instant::now();
    fs::create_dir_all(&config.dir).map_err(io_error(&config.dir))?;
    let path = config.data_file();
    let existing = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let created = existing == 0;
    let marker = config.dir.join(OPEN_MARKER);
    let unclean_shutdown = !created && marker.exists();
    let verify = config.verify_on_open && !created;
    let (db, torn) = open_database(config, verify)?;
    let mut state = load(&db, &path)?;
    let log_batches_replayed = replay_log(&db, &mut state, config)?;
    let mut report = RecoveryReport {
        file: path.clone(),
        duration: Duration::ZERO,
        created,
        unclean_shutdown,
        torn_commit_discarded: torn,
        verified: verify,
        file_bytes: 0,
        messages: BTreeMap::new(),
        consumers: state.consumers.len(),
        pending_acks: 0,
        last_seq: state.last_seq,
        log_batches_replayed,
    };
    count(&db, &mut report).map_err(|e| open_error(e, &path))?;
    fs::write(&marker, b"").map_err(io_error(&marker))?;
    report.file_bytes = fs::metadata(&path).map_err(io_error(&path))?.len();
    report.duration = started.elapsed();
    Ok((db, state, report))
}

/// Removes the open marker after a clean close.
pub(crate) fn closed_cleanly(dir: &Path) {
    let _ = fs::remove_file(dir.join(OPEN_MARKER));
}
