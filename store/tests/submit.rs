//! `Store::submit` from a shell's point of view: callbacks that call the store or drop the
//! last handle must neither deadlock nor crash the writer thread.

mod common;

use std::sync::mpsc;
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
