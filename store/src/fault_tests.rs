//! Fault injection through the storage backend and the write-ahead log: a full disk that frees
//! up again, a power cut in the middle of a commit (a torn write) at every byte offset class of
//! one commit, and a crash that leaves acknowledged writes only in the log.

use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant as Clock};

use bytes::Bytes;
use jetmq_core::js::{StoreError, StoreReply, StoreRequest, Stream};

use crate::backend::Faults;
use crate::{Store, StoreConfig, SyncPolicy};

struct Dir(PathBuf);

impl Dir {
    fn new(label: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "jetmq-store-unit-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }

    fn config(&self, faults: Option<Arc<Faults>>) -> StoreConfig {
        let mut c = StoreConfig::new(&self.0);
        c.faults = faults;
        c
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn publish(subject: &str, payload: &str) -> StoreRequest {
    StoreRequest::Publish {
        stream: Stream::Retained,
        subject: subject.into(),
        headers: Vec::new(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

fn last(store: &Store, subject: &str) -> Option<Bytes> {
    match store.execute(StoreRequest::GetLast {
        stream: Stream::Retained,
        subject: subject.into(),
    }) {
        Ok(StoreReply::Message(m)) => m.map(|m| m.payload),
        other => panic!("get last: {other:?}"),
    }
}

#[test]
fn a_full_disk_fails_writes_and_the_store_recovers_when_space_returns() {
    let dir = Dir::new("full");
    let faults = Arc::new(Faults::default());
    let (store, _) = Store::open(dir.config(Some(faults.clone()))).expect("open");
    store.execute(publish("a", "before")).expect("publish");

    faults.disk_full.store(true, SeqCst);
    for i in 0..5 {
        match store.execute(publish("b", &i.to_string())) {
            Err(StoreError::Unavailable(why)) => assert!(
                i > 0 || why.contains("disk full"),
                "the first failure names the cause: {why}"
            ),
            other => panic!("write on a full disk: {other:?}"),
        }
    }

    faults.disk_full.store(false, SeqCst);
    let deadline = Clock::now() + Duration::from_secs(10);
    let seq = loop {
        match store.execute(publish("c", "after")) {
            Ok(StoreReply::Stored { seq }) => break seq,
            Err(StoreError::Unavailable(_)) if Clock::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("write after space returned: {other:?}"),
        }
    };
    assert!(seq >= 2);
    assert_eq!(last(&store, "a").as_deref(), Some(&b"before"[..]));
    assert_eq!(last(&store, "b"), None, "no failed write was kept");
    assert_eq!(last(&store, "c").as_deref(), Some(&b"after"[..]));
    store.close().expect("close");

    let (store, report) = Store::open(dir.config(None)).expect("reopen");
    assert_eq!(report.messages.get(&Stream::Retained), Some(&2), "{report}");
    assert_eq!(last(&store, "c").as_deref(), Some(&b"after"[..]));
}

/// The bytes one small publish (its log record and commit) and a durable commit of the data
/// file after it write.
fn bytes_per_commit() -> u64 {
    let dir = Dir::new("measure");
    let faults = Arc::new(Faults::default());
    let (store, _) = Store::open(dir.config(Some(faults.clone()))).expect("open");
    store.execute(publish("a", "acked")).expect("publish");
    faults.written.store(0, SeqCst);
    store.execute(publish("b", "torn")).expect("publish");
    store.flush().expect("flush");
    faults.written.load(SeqCst)
}

#[test]
fn a_torn_commit_is_cut_off_and_nothing_acknowledged_is_lost() {
    let total = bytes_per_commit();
    assert!(total > 4096, "{total}");
    // Cut points: nothing written, inside the log record, inside the first page, page
    // boundaries, the last bytes.
    let mut cuts: Vec<u64> = vec![0, 1, 20, 60, 100, 4095, 4096, 4097, 8192, 12_288];
    cuts.extend([total / 3, total / 2, total - 4096, total - 100, total - 1]);
    cuts.retain(|c| *c < total);
    cuts.sort_unstable();
    cuts.dedup();
    let mut torn_seen = 0;
    let mut replayed_seen = 0;
    for cut in cuts {
        let dir = Dir::new("torn");
        let faults = Arc::new(Faults::default());
        let (store, _) = Store::open(dir.config(Some(faults.clone()))).expect("open");
        store.execute(publish("a", "acked")).expect("publish");
        faults.write_budget.store(cut, SeqCst);
        // The power goes during the publish (its log record) or during the durable commit.
        let b = store.execute(publish("b", "torn"));
        let flushed = store.flush();
        assert!(
            b.is_err() || flushed.is_err(),
            "cut at {cut}: nothing failed ({b:?})"
        );
        let _ = store.close();

        let (store, report) = Store::open(dir.config(None))
            .unwrap_or_else(|e| panic!("cut at {cut} of {total}: {e}"));
        assert!(report.unclean_shutdown, "cut at {cut}: {report}");
        torn_seen += usize::from(report.torn_commit_discarded);
        replayed_seen += usize::from(report.log_batches_replayed > 0);
        assert_eq!(
            last(&store, "a").as_deref(),
            Some(&b"acked"[..]),
            "cut at {cut}: acknowledged write lost; {report}"
        );
        let stored_b = last(&store, "b");
        if b.is_ok() {
            assert_eq!(
                stored_b.as_deref(),
                Some(&b"torn"[..]),
                "cut at {cut}: acknowledged write lost; {report}"
            );
        } else {
            assert!(
                stored_b.is_none() || stored_b.as_deref() == Some(&b"torn"[..]),
                "cut at {cut}: the unacknowledged write is whole or absent"
            );
        }
        // The store takes writes again.
        store
            .execute(publish("c", "next"))
            .expect("write after recovery");
    }
    assert!(
        torn_seen > 0,
        "no cut point produced a torn commit to roll back"
    );
    assert!(
        replayed_seen > 0,
        "no cut point left acknowledged writes for the log to replay"
    );
}

fn publishes_and_syncs(
    sync: SyncPolicy,
    threads: usize,
    each: usize,
) -> (Dir, Store, Arc<Faults>, u64) {
    let dir = Dir::new("sync");
    let faults = Arc::new(Faults::default());
    let (store, _) = Store::open(dir.config(Some(faults.clone())).with_sync(sync)).expect("open");
    let before = faults.syncs.load(SeqCst);
    std::thread::scope(|s| {
        for t in 0..threads {
            let store = &store;
            s.spawn(move || {
                for i in 0..each {
                    store
                        .execute(publish(&format!("t{t}.{i}"), "x"))
                        .expect("publish");
                }
            });
        }
    });
    let syncs = faults.syncs.load(SeqCst) - before;
    (dir, store, faults, syncs)
}

#[test]
fn sync_always_fsyncs_every_commit() {
    let (_dir, _store, _, syncs) = publishes_and_syncs(SyncPolicy::Always, 1, 20);
    assert!(syncs >= 20, "{syncs} fsyncs for 20 sequential writes");
}

#[test]
fn concurrent_writers_share_fsyncs() {
    let (_dir, store, _, syncs) = publishes_and_syncs(SyncPolicy::Always, 32, 20);
    assert!(
        syncs < 640 / 2,
        "{syncs} fsyncs for 640 writes from 32 threads"
    );
    let listed = match store.execute(StoreRequest::List {
        stream: Stream::Retained,
        prefix: "".into(),
    }) {
        Ok(StoreReply::Messages(m)) => m,
        other => panic!("list: {other:?}"),
    };
    assert_eq!(listed.len(), 640);
}

#[test]
fn sync_never_does_not_fsync() {
    let (_dir, _store, _, syncs) = publishes_and_syncs(SyncPolicy::Never, 1, 20);
    assert_eq!(syncs, 0);
}

#[test]
fn sync_interval_fsyncs_once_the_interval_is_over() {
    let (_dir, store, faults, syncs) =
        publishes_and_syncs(SyncPolicy::Interval(Duration::from_millis(300)), 1, 20);
    assert!(
        syncs <= 2,
        "{syncs} fsyncs for 20 writes within one interval"
    );
    let deadline = Clock::now() + Duration::from_secs(10);
    let base = faults.syncs.load(SeqCst);
    while faults.syncs.load(SeqCst) == base {
        assert!(Clock::now() < deadline, "no fsync after the interval");
        std::thread::sleep(Duration::from_millis(20));
    }
    // flush() makes it durable at once too.
    store.execute(publish("late", "x")).expect("publish");
    let base = faults.syncs.load(SeqCst);
    store.flush().expect("flush");
    assert!(faults.syncs.load(SeqCst) > base);
}

/// Opens a store, acknowledges `subjects`, then loses the power: nothing written after that
/// reaches the disk, so the data file's last durable commit predates the writes.
fn crash_after(dir: &Dir, subjects: &[&str]) {
    crash_with(dir.config(None), subjects);
}

fn crash_with(mut config: StoreConfig, subjects: &[&str]) {
    let faults = Arc::new(Faults::default());
    config.faults = Some(faults.clone());
    let (store, _) = Store::open(config).expect("open");
    for s in subjects {
        store.execute(publish(s, s)).expect("publish");
    }
    faults.write_budget.store(0, SeqCst);
    assert!(
        store.close().is_err(),
        "the closing commit fails: power is gone"
    );
}

#[test]
fn acknowledged_writes_only_in_the_log_are_replayed_once_whatever_the_sync_policy() {
    let dir = Dir::new("replay");
    crash_after(&dir, &["a", "b", "c"]);
    let interval = dir
        .config(None)
        .with_sync(SyncPolicy::Interval(Duration::from_millis(50)));
    let (store, report) = Store::open(interval.clone()).expect("reopen");
    assert!(report.log_batches_replayed >= 1, "{report}");
    assert!(report
        .to_string()
        .contains("replayed from the write-ahead log"));
    for s in ["a", "b", "c"] {
        assert_eq!(last(&store, s).as_deref(), Some(s.as_bytes()), "{report}");
    }
    store.close().expect("close");
    // Replayed into the data file durably: not again.
    let (store, report) = Store::open(interval).expect("reopen");
    assert_eq!(report.log_batches_replayed, 0, "{report}");
    assert_eq!(report.messages.get(&Stream::Retained), Some(&3), "{report}");
    store.close().expect("close");
}

#[test]
fn a_data_file_older_than_its_log_is_refused_with_what_to_do() {
    let dir = Dir::new("older");
    let (store, _) = Store::open(dir.config(None)).expect("open");
    store.execute(publish("x", "x")).expect("publish");
    store.close().expect("close");
    let data = dir.0.join(crate::DATA_FILE);
    let backup = std::fs::read(&data).expect("backup");
    // Two batches made durable (the log starts over), then one only in the log.
    let (store, _) = Store::open(dir.config(None)).expect("open");
    store.execute(publish("y", "y")).expect("publish");
    store.execute(publish("z", "z")).expect("publish");
    store.flush().expect("flush");
    store.close().expect("close");
    crash_after(&dir, &["w"]);
    std::fs::write(&data, backup).expect("restore the backup");
    let err = Store::open(dir.config(None)).expect_err("a gap between file and log");
    let text = err.to_string();
    assert!(
        text.contains("older than its log") && text.contains(crate::LOG_FILE),
        "{text}"
    );
    // Without the log, the backup opens.
    std::fs::remove_file(dir.0.join(crate::LOG_FILE)).expect("remove the log");
    let (store, _) = Store::open(dir.config(None)).expect("open without the log");
    assert_eq!(last(&store, "x").as_deref(), Some(&b"x"[..]));
    assert_eq!(last(&store, "w"), None);
}

#[test]
fn a_full_log_is_folded_into_the_data_file_and_starts_over() {
    let dir = Dir::new("fold");
    let mut config = dir.config(None);
    config.log_bytes = 300;
    let subjects: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
    let names: Vec<&str> = subjects.iter().map(String::as_str).collect();
    crash_with(config.clone(), &names);
    // Offset 0 holds a late batch: the log started over after folding the earlier ones.
    let records = crate::wal::read(&dir.0).expect("read the log");
    assert!(
        records.first().is_some_and(|r| r.batch > 10) && records.len() <= 10,
        "{:?}",
        records.iter().map(|r| r.batch).collect::<Vec<_>>()
    );
    let (store, report) = Store::open(config).expect("reopen");
    assert!(
        (1..=10).contains(&report.log_batches_replayed),
        "only what the last fold left: {report}"
    );
    for s in &names {
        assert_eq!(last(&store, s).as_deref(), Some(s.as_bytes()), "{report}");
    }
}
