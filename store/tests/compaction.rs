//! Disk use: under a steady publish-and-ack load the file stops growing (freed pages are
//! reused); after a burst is deleted, compaction (explicit or automatic) gives the space back.
//! Also exercises `Store::submit`, whose callbacks come back in submission order.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use jetmq_core::js::{RequestId, StoreReply, StoreRequest, Stream};
use jetmq_store::Store;

/// Submits every request without waiting, then waits for all replies; returns them in order.
fn pipeline(store: &Store, requests: Vec<StoreRequest>) -> Vec<StoreReply> {
    let (tx, rx) = mpsc::channel();
    let n = requests.len();
    for (i, request) in requests.into_iter().enumerate() {
        let tx = tx.clone();
        store.submit(RequestId(i as u64), request, move |id, reply| {
            let _ = tx.send((id, reply));
        });
    }
    let replies: Vec<(RequestId, StoreReply)> = rx
        .iter()
        .take(n)
        .map(|(id, r)| (id, r.expect("request")))
        .collect();
    assert!(
        replies
            .iter()
            .enumerate()
            .all(|(i, (id, _))| id.0 == i as u64),
        "callbacks in submission order"
    );
    replies.into_iter().map(|(_, r)| r).collect()
}

fn file_len(store: &Store) -> u64 {
    std::fs::metadata(store.data_file()).expect("stat").len()
}

fn publishes(stream: Stream, subjects: impl Iterator<Item = String>) -> Vec<StoreRequest> {
    subjects
        .map(|subject| StoreRequest::Publish {
            stream,
            subject: subject.into(),
            headers: Vec::new(),
            payload: Bytes::from(vec![7u8; 1024]),
        })
        .collect()
}

#[test]
fn steady_publish_and_ack_keeps_the_file_bounded() {
    let dir = common::TempDir::new("steady");
    let (store, _) = Store::open(dir.config()).expect("open");
    store
        .execute(StoreRequest::UpsertConsumer {
            name: "c".into(),
            filters: vec!["$MQTT.msgs.>".into()],
        })
        .expect("consumer");
    let mut sizes = Vec::new();
    for round in 0..12 {
        let replies = pipeline(
            &store,
            publishes(
                Stream::Messages,
                (0..400).map(|i| format!("$MQTT.msgs.r{round}.{i}")),
            ),
        );
        let acks = replies
            .into_iter()
            .map(|r| match r {
                StoreReply::Stored { seq } => StoreRequest::Ack {
                    consumer: "c".into(),
                    seq,
                },
                other => panic!("publish: {other:?}"),
            })
            .collect();
        pipeline(&store, acks);
        sizes.push(file_len(&store));
    }
    let restored = store.restore().expect("restore");
    assert!(restored.is_empty(), "everything was acknowledged");
    // 4 800 messages of 1 KiB went through; the file holds far less and stopped growing.
    let (early, last) = (sizes[3], sizes[11]);
    assert!(
        last <= early + early / 2,
        "file grew from {early} to {last} bytes under a steady load: {sizes:?}"
    );
    assert!(last < 4_800 * 1024, "{sizes:?}");
}

#[test]
fn compaction_gives_back_the_space_of_deleted_messages() {
    let dir = common::TempDir::new("compact");
    let (store, _) = Store::open(dir.config()).expect("open");
    pipeline(
        &store,
        publishes(
            Stream::Retained,
            (0..8000).map(|i| format!("$MQTT.rmsgs.burst.{i}")),
        ),
    );
    let full = file_len(&store);
    assert!(full > 8000 * 1024, "{full}");
    pipeline(
        &store,
        (0..8000)
            .map(|i| StoreRequest::Purge {
                stream: Stream::Retained,
                subject: format!("$MQTT.rmsgs.burst.{i}").into(),
            })
            .collect(),
    );
    let compaction = store.compact().expect("compact");
    // Deleting left the burst's space in the file (some of it reused within the write-ahead
    // log's open transaction, so not necessarily all of it).
    assert!(
        compaction.before > 8000 * 1024,
        "{compaction:?}, {full} before purging"
    );
    assert!(
        compaction.after < compaction.before / 4,
        "{compaction:?} after deleting everything"
    );
    assert_eq!(file_len(&store), compaction.after);
    // Still a working store.
    pipeline(
        &store,
        publishes(
            Stream::Retained,
            (0..10).map(|i| format!("$MQTT.rmsgs.{i}")),
        ),
    );
    store.close().expect("close");
    let (_store, report) = Store::open(dir.config()).expect("reopen");
    assert_eq!(report.messages[&Stream::Retained], 10);
}

#[test]
fn automatic_compaction_shrinks_a_mostly_empty_file() {
    let dir = common::TempDir::new("auto");
    let mut config = dir.config();
    config.compact_min_bytes = 1 << 20;
    config.compact_check = Duration::ZERO;
    let (store, _) = Store::open(config).expect("open");
    pipeline(
        &store,
        publishes(
            Stream::Retained,
            (0..4000).map(|i| format!("$MQTT.rmsgs.burst.{i}")),
        ),
    );
    let full = file_len(&store);
    pipeline(
        &store,
        (0..4000)
            .map(|i| StoreRequest::Purge {
                stream: Stream::Retained,
                subject: format!("$MQTT.rmsgs.burst.{i}").into(),
            })
            .collect(),
    );
    // Freed pages count as free once the purges are committed (a flush commits the open
    // transaction; under load the whole burst may otherwise share one). The check runs after
    // a batch; one more write gives it a turn.
    store.flush().expect("flush");
    store
        .execute(StoreRequest::Publish {
            stream: Stream::Retained,
            subject: "$MQTT.rmsgs.x".into(),
            headers: Vec::new(),
            payload: Bytes::from_static(b"x"),
        })
        .expect("publish");
    store.flush().expect("flush");
    let after = file_len(&store);
    assert!(after < full / 4, "{full} -> {after}");
}
