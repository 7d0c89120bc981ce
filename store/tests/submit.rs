//! `Store::submit` from a shell's point of view: callbacks that call the store or drop the
//! last handle must neither deadlock nor crash the writer thread, and the after-replies hook
//! runs once per batch, after that batch's callbacks.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use jetmq_core::js::{RequestId, StoreError, StoreReply, StoreRequest};
use jetmq_store::Store;

#[test]
fn a_callback_may_drop_the_last_handle() {
    let dir = common::TempDir::new("drop_in_callback");
    let (store, _) = Store::open(dir.config()).expect("open");
    let store = std::sync::Arc::new(store);
    let (tx, rx) = mpsc::channel();
    let inner = store.clone();
    store.submit(
        RequestId(1),
        StoreRequest::Ack {
            consumer: "c".into(),
            seq: 1,
        },
        move |_, reply| {
            // A store call from a callback is refused rather than deadlocking.
            let nested = inner.execute(StoreRequest::Pending {
                consumer: "c".into(),
                limit: 1,
            });
            drop(inner);
            let _ = tx.send((reply, nested));
        },
    );
    drop(store);
    let (reply, nested) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("callback ran");
    assert_eq!(reply, Ok(StoreReply::Done));
    assert!(matches!(nested, Err(StoreError::Rejected(_))), "{nested:?}");
    // The store closed cleanly once the writer finished: it opens again at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(dir.config()) {
            Ok(_) => break,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

#[test]
fn a_panicking_callback_does_not_stop_the_store() {
    let dir = common::TempDir::new("panicking_callback");
    let (store, _) = Store::open(dir.config()).expect("open");
    store.submit(
        RequestId(1),
        StoreRequest::Ack {
            consumer: "c".into(),
            seq: 1,
        },
        |_, _| panic!("a buggy callback"),
    );
    let reply = store.execute(StoreRequest::Pending {
        consumer: "c".into(),
        limit: 1,
    });
    assert_eq!(reply, Ok(StoreReply::Messages(Vec::new())));
}

#[test]
fn the_after_replies_hook_follows_each_batch_of_callbacks() {
    const REQUESTS: u64 = 200;
    let dir = common::TempDir::new("after_replies");
    let (store, _) = Store::open(dir.config()).expect("open");
    // Replies seen by the callbacks, and what the hook saw each time it ran.
    let replied = Arc::new(Mutex::new(0u64));
    let (hook_tx, hook_rx) = mpsc::channel();
    let seen = Arc::clone(&replied);
    store.after_replies(move || {
        let _ = hook_tx.send(*seen.lock().expect("lock"));
    });
    for i in 1..=REQUESTS {
        let replied = Arc::clone(&replied);
        store.submit(
            RequestId(i),
            StoreRequest::Publish {
                stream: jetmq_core::js::Stream::Retained,
                subject: format!("$MQTT.rmsgs.t{i}").into(),
                headers: Vec::new(),
                payload: bytes::Bytes::from_static(b"x"),
            },
            move |_, reply| {
                assert!(reply.is_ok(), "{reply:?}");
                *replied.lock().expect("lock") += 1;
            },
        );
    }
    // The hook runs after every batch; the last time it runs, every callback has run.
    let mut runs = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while runs.last() != Some(&REQUESTS) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        runs.push(
            hook_rx
                .recv_timeout(left)
                .expect("the hook ran for every batch"),
        );
    }
    assert!(
        runs.windows(2).all(|w| w[0] < w[1]),
        "each run follows at least one more reply: {runs:?}"
    );
    assert!(
        (runs.len() as u64) <= REQUESTS,
        "at most one run per batch: {} runs",
        runs.len()
    );
}
