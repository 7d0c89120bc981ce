//! Start-up: the recovery report, and damaged files (garbage, truncated, flipped bytes, a
//! zeroed header) refused with an error that names the file and says what to do, never a panic
//! and never a silently emptier store.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};

use bytes::Bytes;
use jetmq_core::js::{StoreReply, StoreRequest, Stream};
use jetmq_store::{OpenError, Store, StoreConfig, DATA_FILE};

use common::TempDir;

fn publish(store: &Store, stream: Stream, subject: &str, payload: &[u8]) -> u64 {
    match store.execute(StoreRequest::Publish {
        stream,
        subject: subject.into(),
        headers: Vec::new(),
        payload: Bytes::copy_from_slice(payload),
    }) {
        Ok(StoreReply::Stored { seq }) => seq,
        other => panic!("publish: {other:?}"),
    }
}

/// A store with sessions, retained messages, a consumer and queued messages, closed.
fn populated(dir: &TempDir, retained: usize) -> u64 {
    let (store, report) = Store::open(dir.config()).expect("open");
    assert!(report.created);
    store
        .execute(StoreRequest::UpsertConsumer {
            name: "c1".into(),
            filters: vec!["$MQTT.msgs.>".into()],
        })
        .expect("consumer");
    store
        .execute(StoreRequest::UpsertConsumer {
            name: "c2".into(),
            filters: vec!["$MQTT.msgs.x".into()],
        })
        .expect("consumer");
    publish(&store, Stream::Sessions, "$MQTT.sess.abc", b"{}");
    let mut last = 0;
    for i in 0..retained {
        let payload = format!("retained-payload-{i:06}");
        last = publish(
            &store,
            Stream::Retained,
            &format!("$MQTT.rmsgs.t{i}"),
            payload.as_bytes(),
        );
    }
    publish(&store, Stream::Messages, "$MQTT.msgs.x", b"q1");
    last = last.max(publish(&store, Stream::Messages, "$MQTT.msgs.y", b"q2"));
    store.close().expect("close");
    last
}

#[test]
fn report_counts_what_the_store_holds() {
    let dir = TempDir::new("report");
    let last = populated(&dir, 10);
    let (store, report) = Store::open(dir.config()).expect("reopen");
    assert!(!report.created && !report.unclean_shutdown && !report.torn_commit_discarded);
    assert!(report.verified, "verification is on by default");
    assert_eq!(report.file, dir.path().join(DATA_FILE));
    assert_eq!(report.messages[&Stream::Sessions], 1);
    assert_eq!(report.messages[&Stream::Retained], 10);
    assert_eq!(report.messages[&Stream::Messages], 2);
    assert_eq!(report.messages[&Stream::Qos2In], 0);
    assert_eq!(report.consumers, 2);
    assert_eq!(report.pending_acks, 3, "x for c1 and c2, y for c1");
    assert_eq!(report.last_seq, last);
    assert!(report.file_bytes > 0);
    let text = report.to_string();
    assert!(
        text.contains("$MQTT_rmsgs=10") && text.contains("2 consumers"),
        "{text}"
    );
    // Sequences continue after the restart.
    assert!(publish(&store, Stream::Retained, "$MQTT.rmsgs.new", b"n") > last);
}

#[test]
fn restore_returns_what_the_broker_needs_in_stream_and_sequence_order() {
    let dir = TempDir::new("restore");
    populated(&dir, 3);
    let (store, _) = Store::open(dir.config()).expect("reopen");
    let restored = store.restore().expect("restore");
    let order: Vec<(Stream, u64)> = restored.iter().map(|m| (m.stream, m.seq)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    let streams: Vec<Stream> = restored.iter().map(|m| m.stream).collect();
    assert_eq!(
        streams,
        [
            Stream::Sessions,
            Stream::Messages,
            Stream::Messages,
            Stream::Retained,
            Stream::Retained,
            Stream::Retained
        ]
    );
    assert_eq!(restored[1].pending_for, ["c1", "c2"]);
    assert_eq!(restored[2].pending_for, ["c1"]);
    // Acked by everyone: no longer restored.
    for name in ["c1", "c2"] {
        store
            .execute(StoreRequest::Ack {
                consumer: name.into(),
                seq: restored[1].seq,
            })
            .expect("ack");
    }
    assert_eq!(store.restore().expect("restore").len(), 5);
}

fn open_error(config: StoreConfig) -> OpenError {
    match Store::open(config) {
        Ok((_, report)) => panic!("a damaged file was opened: {report}"),
        Err(e) => e,
    }
}

fn assert_names_file_and_remedy(e: &OpenError, dir: &TempDir) {
    let text = e.to_string();
    let file = dir.path().join(DATA_FILE);
    assert_eq!(e.path(), file);
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(
        text.contains("move it aside") || text.contains("move the file aside"),
        "{text}"
    );
}

#[test]
fn a_file_that_is_not_a_store_is_refused() {
    let dir = TempDir::new("garbage");
    fs::write(
        dir.path().join(DATA_FILE),
        b"this is not a database, just some text".repeat(200),
    )
    .expect("write");
    let e = open_error(dir.config());
    assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
    assert_names_file_and_remedy(&e, &dir);
}

#[test]
fn a_truncated_file_is_refused() {
    for keep in [0.5, 0.9] {
        let dir = TempDir::new("truncated");
        populated(&dir, 2000);
        let path = dir.path().join(DATA_FILE);
        let len = fs::metadata(&path).expect("stat").len();
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len((len as f64 * keep) as u64).expect("truncate");
        drop(file);
        let e = open_error(dir.config());
        assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
        assert_names_file_and_remedy(&e, &dir);
    }
}

/// Overwrites `len` bytes at the first occurrence of `needle` in the data file.
fn damage_at(path: &std::path::Path, needle: &[u8], len: usize) {
    let bytes = fs::read(path).expect("read");
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in file");
    let mut file = OpenOptions::new().write(true).open(path).expect("open");
    file.seek(SeekFrom::Start(at as u64)).expect("seek");
    file.write_all(&vec![0x5a; len]).expect("write");
}

#[test]
fn flipped_bytes_in_a_data_page_are_detected() {
    let dir = TempDir::new("flipped");
    populated(&dir, 500);
    damage_at(&dir.path().join(DATA_FILE), b"retained-payload-000250", 8);
    let e = open_error(dir.config());
    assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
    assert_names_file_and_remedy(&e, &dir);
}

#[test]
fn a_zeroed_header_is_refused() {
    let dir = TempDir::new("header");
    populated(&dir, 10);
    let path = dir.path().join(DATA_FILE);
    let mut file = OpenOptions::new().write(true).open(&path).expect("open");
    file.write_all(&[0u8; 512]).expect("zero header");
    drop(file);
    let e = open_error(dir.config());
    assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
    assert_names_file_and_remedy(&e, &dir);
}

#[test]
fn a_store_in_use_is_refused() {
    let dir = TempDir::new("locked");
    let (_store, _) = Store::open(dir.config()).expect("open");
    let e = open_error(dir.config());
    assert!(matches!(e, OpenError::Locked { .. }), "{e:?}");
    assert!(e.to_string().contains("in use"), "{e}");
}

#[test]
fn an_unwritable_directory_is_an_io_error_naming_it() {
    let dir = TempDir::new("io");
    let blocker = dir.path().join("file");
    fs::write(&blocker, b"x").expect("write");
    let e = open_error(StoreConfig::new(blocker.join("sub")));
    assert!(matches!(e, OpenError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("sub"), "{e}");
}

/// The consumers owing an ack for each queued message are kept in memory and rebuilt from the
/// pending acks when the store opens. A format 1 file (which kept them in an `interest` table)
/// opens too: it is upgraded to format 2, its table dropped, and its messages stay until
/// every consumer has acknowledged them.
#[test]
fn interest_is_rebuilt_at_open_and_format_1_files_are_upgraded() {
    use redb::{ReadableDatabase as _, TableDefinition};
    const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
    const INTEREST: TableDefinition<'_, (u64, &str), ()> = TableDefinition::new("interest");

    let dir = TempDir::new("format-1");
    populated(&dir, 0);
    let pending = |store: &Store, consumer: &str| match store.execute(StoreRequest::Pending {
        consumer: consumer.into(),
        limit: 10,
    }) {
        Ok(StoreReply::Messages(m)) => m,
        other => panic!("pending: {other:?}"),
    };
    let (store, _) = Store::open(dir.config()).expect("reopen");
    let x = pending(&store, "c2")[0].seq;
    let y = pending(&store, "c1")
        .iter()
        .map(|m| m.seq)
        .find(|s| *s != x)
        .expect("y");
    store.close().expect("close");

    // Make it a format 1 file, as an earlier jetmq left it.
    let path = dir.path().join(DATA_FILE);
    {
        let db = redb::Database::open(&path).expect("redb opens it");
        let txn = db.begin_write().expect("write");
        {
            txn.open_table(META)
                .expect("meta")
                .insert("format", 1)
                .expect("format 1");
            let mut interest = txn.open_table(INTEREST).expect("interest");
            for (seq, consumer) in [(x, "c1"), (x, "c2"), (y, "c1")] {
                interest.insert((seq, consumer), ()).expect("row");
            }
        }
        txn.commit().expect("commit");
    }

    let (store, report) = Store::open(dir.config()).expect("a format 1 file opens");
    assert_eq!(report.pending_acks, 3);
    let for_c1 = pending(&store, "c1");
    let x_msg = for_c1
        .iter()
        .find(|m| m.seq == x)
        .expect("x pending for c1");
    let mut owed: Vec<&str> = x_msg.pending_for.iter().map(|c| c.as_ref()).collect();
    owed.sort_unstable();
    assert_eq!(owed, ["c1", "c2"]);
    // x goes only when both consumers have acknowledged it; y when c1 has.
    let ack = |consumer: &str, seq: u64| {
        store
            .execute(StoreRequest::Ack {
                consumer: consumer.into(),
                seq,
            })
            .expect("ack");
    };
    let last_x = || match store.execute(StoreRequest::GetLast {
        stream: Stream::Messages,
        subject: "$MQTT.msgs.x".into(),
    }) {
        Ok(StoreReply::Message(m)) => m,
        other => panic!("get last: {other:?}"),
    };
    ack("c1", x);
    assert_eq!(
        last_x().map(|m| m.pending_for),
        Some(vec!["c2".into()]),
        "c2 still owes it"
    );
    ack("c1", x); // idempotent: c2's interest stays
    assert!(last_x().is_some());
    ack("c2", x);
    assert!(last_x().is_none(), "nobody owes it: removed");
    ack("c1", y);
    assert!(pending(&store, "c1").is_empty());
    store.close().expect("close");

    let db = redb::Database::open(&path).expect("redb opens it");
    let txn = db.begin_read().expect("read");
    assert_eq!(
        txn.open_table(META)
            .expect("meta")
            .get("format")
            .expect("read")
            .map(|v| v.value()),
        Some(2)
    );
    assert!(
        txn.open_table(INTEREST).is_err(),
        "the interest table is gone"
    );
}
