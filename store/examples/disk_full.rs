//! A real full disk: run it on a small file system (for example a 16 MiB tmpfs). It puts a
//! ballast file next to the store, writes 4 KiB retained messages until the store answers
//! `Unavailable`, checks that later writes either fail cleanly or are stored, removes the ballast, checks that
//! writes succeed again, and reopens the store to check every acknowledged message is there.
//!
//! ```text
//! mount -t tmpfs -o size=16m tmpfs /mnt/small
//! cargo run --release -p jetmq-store --example disk_full -- /mnt/small/store
//! ```

use bytes::Bytes;
use jetmq_core::js::{StoreError, StoreReply, StoreRequest, Stream};
use jetmq_store::{Store, StoreConfig};

fn publish(store: &Store, i: usize) -> Result<StoreReply, StoreError> {
    store.execute(StoreRequest::Publish {
        stream: Stream::Retained,
        subject: format!("$MQTT.rmsgs.fill.{i}").into(),
        headers: Vec::new(),
        payload: Bytes::from(vec![b'x'; 4096]),
    })
}

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: disk_full DIR (on a small file system)");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&dir).expect("dir");
    let ballast = std::path::Path::new(&dir).join("ballast");
    std::fs::write(&ballast, vec![0u8; 4 << 20]).expect("ballast");
    let (store, _) = Store::open(StoreConfig::new(&dir)).expect("open");
    let mut acked = Vec::new();
    let error = loop {
        match publish(&store, acked.len()) {
            Ok(_) => acked.push(acked.len()),
            Err(e) => break e,
        }
    };
    eprintln!("after {} acknowledged writes: {error}", acked.len());
    assert!(matches!(error, StoreError::Unavailable(_)));
    // Writes that still fit in pages the file already has may succeed; the rest fail cleanly.
    let mut failures = 0;
    for _ in 0..20 {
        match publish(&store, acked.len()) {
            Ok(_) => acked.push(acked.len()),
            Err(StoreError::Unavailable(_)) => failures += 1,
            Err(e) => panic!("while full: {e}"),
        }
    }
    eprintln!("while full: {failures} of 20 writes failed with Unavailable, the rest were stored");
    assert!(failures > 0);
    std::fs::remove_file(&ballast).expect("free space");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let after = loop {
        match publish(&store, acked.len()) {
            Ok(r) => break r,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("space freed, still: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    };
    acked.push(acked.len());
    eprintln!("space freed: {after:?}");
    store.close().expect("close");
    let (store, report) = Store::open(StoreConfig::new(&dir)).expect("reopen");
    eprintln!("{report}");
    for i in &acked {
        let r = store.execute(StoreRequest::GetLast {
            stream: Stream::Retained,
            subject: format!("$MQTT.rmsgs.fill.{i}").into(),
        });
        assert!(
            matches!(r, Ok(StoreReply::Message(Some(_)))),
            "acknowledged message {i} lost"
        );
    }
    eprintln!("all {} acknowledged messages present", acked.len());
}
