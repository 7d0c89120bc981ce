//! The write-ahead log that makes commits durable under [`SyncPolicy::Always`].
//!
//! Why it exists: a redb commit that is durable costs one `fdatasync` of the pages it touched
//! (measured about 250 µs for a batch of 64 publishes and 64 acks), and the writer thread can do
//! nothing else meanwhile. With the log, each batch's write requests go to this file as one
//! record, written and synced on the log's own thread *while* the writer applies the same batch
//! to redb: the apply (CPU) and the sync (waiting on the disk) overlap, and one sequential
//! write costs less to sync than scattered pages. A reply still goes out only once the record
//! is synced, so an acknowledged write survives `kill -9` and power loss as before. The batches go on in one open redb transaction, committed
//! (durably) when the log reaches [`StoreConfig::log_bytes`], at close, at
//! [`crate::Store::flush`] and before compaction; the log then starts over at offset 0. The
//! file grows by 1 MiB of zeros at a time and keeps its size, so most syncs never change its
//! length.
//!
//! Record layout (little-endian): batch number `u64`, payload length `u32`, CRC-32 of those
//! twelve bytes and the payload `u32`, payload (the batch's write requests, laid out as
//! `codec.rs` describes). Batch numbers count up by one across restarts of the log.
//!
//! Recovery: every commit of the data file stores the number of the last batch it includes
//! (`meta` key `log_batch`). At open, records are read from offset 0 as long as they are
//! whole (checksum) and numbered one after the other; those numbered above the data file's are
//! applied again, in order, and made durable. A record cut short by a crash fails its checksum
//! and ends the log: its batch was never acknowledged. Records left over from before the last
//! restart of the log are numbered lower than the data file's and skipped.
//!
//! [`SyncPolicy::Always`]: crate::SyncPolicy::Always
//! [`StoreConfig::log_bytes`]: crate::StoreConfig::log_bytes

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use crate::config::StoreConfig;

/// The log's file name in the data directory.
pub const LOG_FILE: &str = "jetmq-store.wal";

/// The `meta` key of the last logged batch the data file includes.
pub(crate) const LOG_BATCH_KEY: &str = "log_batch";

/// Bytes before a record's payload.
const HEADER: usize = 8 + 4 + 4;

/// One whole record read back from the log.
#[derive(Debug)]
pub(crate) struct Record {
    /// Its batch number.
    pub(crate) batch: u64,
    /// What the batch wrote ([`crate::codec::decode_logged_ops`]).
    pub(crate) payload: Vec<u8>,
}

fn checksum(head: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(payload);
    h.finalize()
}

/// Frames a batch's payload as a record.
fn frame(batch: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&batch.to_le_bytes());
    // A batch holds requests the core capped at 256 MiB each; a payload over 4 GiB cannot be
    // framed and is refused by the caller before it gets here.
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    let sum = checksum(&out[..12], payload);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The whole, consecutively numbered records at the start of `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    let mut at = 0usize;
    while let Some(head) = bytes.get(at..at + HEADER) {
        let batch = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default()) as usize;
        let sum = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default());
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if checksum(&head[..12], payload) != sum {
            break;
        }
        if records
            .last()
            .is_some_and(|r| r.batch.checked_add(1) != Some(batch))
        {
            break;
        }
        records.push(Record {
            batch,
            payload: payload.to_vec(),
        });
        at += HEADER + len;
    }
    records
}

/// A record on its way to the disk.
struct Job {
    offset: u64,
    bytes: Vec<u8>,
}

/// The log file, its write position, and the thread that writes and syncs it.
#[derive(Debug)]
pub(crate) struct WriteAheadLog {
    /// Where the next record goes.
    end: u64,
    /// The number of the last record written (or of the last batch the data file includes).
    batch: u64,
    /// A record being written: its length, for `end` once it is synced.
    in_flight: Option<u64>,
    jobs: Option<Sender<Job>>,
    done: Receiver<io::Result<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The records of the log file in `dir`, if there is one.
pub(crate) fn read(dir: &Path) -> io::Result<Vec<Record>> {
    match std::fs::read(dir.join(LOG_FILE)) {
        Ok(bytes) => Ok(parse(&bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

impl WriteAheadLog {
    /// The log of `config`'s directory, writing from offset 0 after batch `batch` (the data
    /// file includes everything logged so far).
    pub(crate) fn open(config: &StoreConfig, batch: u64) -> io::Result<Self> {
        let writing = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(config.dir.join(LOG_FILE))?;
        let mut allocated = writing.metadata()?.len();
        let (jobs, rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        #[cfg(test)]
        let faults = config.faults.clone();
        let thread = std::thread::Builder::new()
            .name("jetmq-store-log".into())
            .spawn(move || {
                for job in rx {
                    #[cfg(test)]
                    let result =
                        write_with_faults(&writing, &job, &mut allocated, faults.as_deref());
                    #[cfg(not(test))]
                    let result = write(&writing, &job, &mut allocated);
                    if done_tx.send(result).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            end: 0,
            batch,
            in_flight: None,
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// The number the next record gets.
    pub(crate) fn next_batch(&self) -> u64 {
        self.batch + 1
    }

    /// Bytes written since the log last started over.
    pub(crate) fn len(&self) -> u64 {
        self.end
    }

    /// Starts writing and syncing the next record on the log's thread; [`Self::finish`] waits
    /// for it.
    pub(crate) fn start(&mut self, payload: &[u8]) -> io::Result<()> {
        let bytes = frame(self.next_batch(), payload);
        let len = bytes.len() as u64;
        let job = Job {
            offset: self.end,
            bytes,
        };
        match &self.jobs {
            Some(jobs) if jobs.send(job).is_ok() => {
                self.in_flight = Some(len);
                // On a busy core the log's thread would wait for this one to block before it
                // runs: let it start its write now, so its sync overlaps the batch's apply.
                std::thread::yield_now();
                Ok(())
            }
            _ => Err(io::Error::other("the write-ahead log's thread has stopped")),
        }
    }

    /// Waits for the record [`Self::start`] began: once this returns `Ok`, the batch is durable.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        let Some(len) = self.in_flight.take() else {
            return Ok(());
        };
        let result = self
            .done
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the write-ahead log's thread has stopped")));
        if result.is_ok() {
            self.end += len;
            self.batch += 1;
        }
        result
    }

    /// Starts over at offset 0: the data file now durably includes every logged batch.
    pub(crate) fn restart(&mut self) {
        self.end = 0;
    }

    /// Goes on after batch `batch` from offset 0 (after the data file was reopened and the log
    /// replayed into it).
    pub(crate) fn reset_to(&mut self, batch: u64) {
        self.end = 0;
        self.batch = batch;
    }
}

impl Drop for WriteAheadLog {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How much the log file grows at a time.
const GROWTH: u64 = 1 << 20;

/// Makes the file at least `end` bytes long, writing zeros up to the next [`GROWTH`] boundary:
/// a sync that changes the file's length also commits the file system's journal, which costs
/// several times a plain one, so the length changes once per [`GROWTH`] instead of per record.
fn grow(file: &File, allocated: &mut u64, end: u64) -> io::Result<()> {
    if end <= *allocated {
        return Ok(());
    }
    let to = end.div_ceil(GROWTH) * GROWTH;
    let zeros = vec![0; usize::try_from(to - *allocated).unwrap_or(usize::MAX)];
    file.write_all_at(&zeros, *allocated)?;
    *allocated = to;
    Ok(())
}

#[cfg(not(test))]
fn write(file: &File, job: &Job, allocated: &mut u64) -> io::Result<()> {
    grow(file, allocated, job.offset + job.bytes.len() as u64)?;
    file.write_all_at(&job.bytes, job.offset)?;
    file.sync_data()
}

/// [`write`] through a test's fault switches, as the data file's backend does.
#[cfg(test)]
fn write_with_faults(
    file: &File,
    job: &Job,
    allocated: &mut u64,
    faults: Option<&crate::backend::Faults>,
) -> io::Result<()> {
    if let Some(f) = faults {
        // Growing fails on a full disk, and after a power cut, like any write.
        f.before_write(0)?;
    }
    grow(file, allocated, job.offset + job.bytes.len() as u64)?;
    if let Some(f) = faults {
        let allowed = f.before_write(job.bytes.len())?;
        if allowed < job.bytes.len() {
            file.write_all_at(&job.bytes[..allowed], job.offset)?;
            return Err(io::Error::other("simulated power cut"));
        }
    }
    file.write_all_at(&job.bytes, job.offset)?;
    if let Some(f) = faults {
        f.before_sync()?;
        f.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_until_the_first_damaged_or_out_of_order_one() {
        let mut bytes = Vec::new();
        for (batch, payload) in [(7u64, &b"one"[..]), (8, b""), (9, b"three")] {
            bytes.extend(frame(batch, payload));
        }
        let whole = parse(&bytes);
        assert_eq!(
            whole.iter().map(|r| r.batch).collect::<Vec<_>>(),
            vec![7, 8, 9]
        );
        assert_eq!(whole[2].payload, b"three");
        // Cut anywhere inside the last record: the first two remain.
        for cut in bytes.len() - HEADER - 5..bytes.len() {
            assert_eq!(parse(&bytes[..cut]).len(), 2, "cut at {cut}");
        }
        // A flipped payload byte ends the log there.
        let mut damaged = bytes.clone();
        let at = damaged.len() - 1;
        damaged[at] ^= 1;
        assert_eq!(parse(&damaged).len(), 2);
        // A record left over from before a restart (numbered lower) ends it too.
        let mut restarted = frame(3, b"new");
        restarted.extend(frame(1, b"old"));
        assert_eq!(parse(&restarted).len(), 1);
        assert!(parse(&[0; 64]).is_empty(), "zeros are no record");
    }
}
