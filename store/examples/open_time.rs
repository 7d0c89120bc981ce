//! How long start-up takes: fills a store with `N` queued QoS 1 messages (1 KiB, one durable
//! consumer) and `N / 10` retained messages, exits without closing it (as a crash would), then
//! times the recovery open, a clean open with checksum verification and one without.
//!
//! `cargo run --release -p jetmq-store --example open_time -- DIR N`

use std::sync::mpsc;

use bytes::Bytes;
use jetmq_core::js::{RequestId, StoreRequest, Stream};
use jetmq_store::{Store, StoreConfig};

fn fill(dir: &str, n: usize) {
    let (store, _) = Store::open(StoreConfig::new(dir)).expect("open");
    store
        .execute(StoreRequest::UpsertConsumer {
            name: "c".into(),
            filters: vec!["$MQTT.msgs.>".into()],
        })
        .expect("consumer");
    let (tx, rx) = mpsc::channel();
    let payload = Bytes::from(vec![b'x'; 1024]);
    let total = n + n / 10;
    for i in 0..total {
        let (stream, subject) = if i % 11 == 10 {
            (Stream::Retained, format!("$MQTT.rmsgs.t.{i}"))
        } else {
            (Stream::Messages, format!("$MQTT.msgs.t.{}", i % 1000))
        };
        let tx = tx.clone();
        store.submit(
            RequestId(i as u64),
            StoreRequest::Publish {
                stream,
                subject: subject.into(),
                headers: Vec::new(),
                payload: payload.clone(),
            },
            move |_, r| {
                let _ = tx.send(r.is_ok());
            },
        );
    }
    assert!(rx.iter().take(total).all(|ok| ok), "a publish failed");
    // Leave without closing: the next open finds an unclean shutdown.
    std::process::exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, n] = &args[..] else {
        eprintln!("usage: open_time DIR N");
        std::process::exit(2);
    };
    if std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none()) {
        fill(dir, n.parse().expect("N"));
    }
    let (store, report) = Store::open(StoreConfig::new(dir)).expect("recovery open");
    eprintln!("after a crash, verify on: {report}");
    store.close().expect("close");
    let (store, report) = Store::open(StoreConfig::new(dir)).expect("clean open");
    eprintln!("clean, verify on:         {report}");
    store.close().expect("close");
    let mut config = StoreConfig::new(dir);
    config.verify_on_open = false;
    let (_store, report) = Store::open(config).expect("clean open");
    eprintln!("clean, verify off:        {report}");
}
