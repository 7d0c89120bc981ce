//! Persisted QoS 1 messages per second with sync `always`: publishes to `$MQTT_msgs` that one
//! durable consumer wants (so each is stored), 16 B and 1 KiB payloads, from 1 and 64 writer
//! threads blocking on `Store::execute`, and from one thread keeping 256 requests in flight
//! with `Store::submit` (as a shell does). The same pipelined publishes with 10 000 other
//! consumers (one per persistent session, each on a subject of its own) show what finding the
//! consumers of a message costs. Also the raw cost of one 4 KiB write plus `fdatasync` on the
//! same disk, the floor of a single writer.
//!
//! `cargo bench -p jetmq-store --bench persist`

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jetmq_core::js::{RequestId, StoreReply, StoreRequest, Stream};
use jetmq_store::{Store, StoreConfig};

/// Messages each writer thread publishes per timed iteration.
const PER_WRITER: usize = 64;

fn temp_dir(label: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("jetmq-store-bench-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn open(label: &str) -> (Store, PathBuf) {
    let dir = temp_dir(label);
    let (store, _) = Store::open(StoreConfig::new(&dir)).expect("open store");
    store
        .execute(StoreRequest::UpsertConsumer {
            name: "bench".into(),
            filters: vec!["$MQTT.msgs.>".into()],
        })
        .expect("consumer");
    (store, dir)
}

fn publish(payload: &Bytes, writer: usize) -> StoreRequest {
    StoreRequest::Publish {
        stream: Stream::Messages,
        subject: format!("$MQTT.msgs.bench.w{writer}").into(),
        headers: Vec::new(),
        payload: payload.clone(),
    }
}

/// Time for `iters` rounds of `writers` threads each publishing `PER_WRITER` messages.
fn run_writers(store: &Arc<Store>, writers: usize, payload: &Bytes, iters: u64) -> Duration {
    let start = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (store, start, payload) = (store.clone(), start.clone(), payload.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..iters * PER_WRITER as u64 {
                    match store.execute(publish(&payload, w)) {
                        Ok(StoreReply::Stored { .. }) => {}
                        other => panic!("publish: {other:?}"),
                    }
                }
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for h in handles {
        h.join().expect("writer");
    }
    t.elapsed()
}

/// Time for `iters * per_iter` publishes from one thread with up to `window` in flight.
fn run_pipelined(
    store: &Store,
    window: usize,
    per_iter: usize,
    payload: &Bytes,
    iters: u64,
) -> Duration {
    let total = iters as usize * per_iter;
    let (tx, rx) = mpsc::channel();
    let t = Instant::now();
    let mut sent = 0;
    let mut done = 0;
    while done < total {
        while sent < total && sent - done < window {
            let tx = tx.clone();
            store.submit(RequestId(sent as u64), publish(payload, 0), move |_, r| {
                let _ = tx.send(r.is_ok());
            });
            sent += 1;
        }
        assert!(rx.recv().expect("reply"), "publish failed");
        done += 1;
    }
    t.elapsed()
}

fn persist(c: &mut Criterion) {
    let mut group = c.benchmark_group("persist_qos1_sync_always");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    for (size_name, size) in [("16B", 16usize), ("1KiB", 1024)] {
        let payload = Bytes::from(vec![b'x'; size]);
        for writers in [1usize, 64] {
            let (store, dir) = open(&format!("{size_name}-{writers}"));
            let store = Arc::new(store);
            group.throughput(Throughput::Elements((writers * PER_WRITER) as u64));
            group.bench_function(format!("{size_name}/{writers}_writers"), |b| {
                b.iter_custom(|iters| run_writers(&store, writers, &payload, iters));
            });
            drop(store);
            let _ = std::fs::remove_dir_all(dir);
        }
        let (store, dir) = open(&format!("{size_name}-pipelined"));
        let per_iter = 1024;
        group.throughput(Throughput::Elements(per_iter as u64));
        group.bench_function(format!("{size_name}/submit_window_256"), |b| {
            b.iter_custom(|iters| run_pipelined(&store, 256, per_iter, &payload, iters));
        });
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
    group.finish();
}

/// Pipelined 16 B publishes that one consumer wants, beside `others` consumers that do not.
fn many_consumers(c: &mut Criterion) {
    let mut group = c.benchmark_group("persist_qos1_sync_always_consumers");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    let payload = Bytes::from(vec![b'x'; 16]);
    for others in [0usize, 10_000] {
        let (store, dir) = open(&format!("consumers-{others}"));
        let (tx, rx) = mpsc::channel();
        for i in 0..others {
            let tx = tx.clone();
            let request = StoreRequest::UpsertConsumer {
                name: format!("session{i}").into(),
                filters: vec![
                    format!("$MQTT.msgs.devices.d{i}.>").into(),
                    format!("$MQTT.msgs.devices.d{i}").into(),
                ],
            };
            store.submit(RequestId(i as u64), request, move |_, r| {
                let _ = tx.send(r.is_ok());
            });
        }
        for _ in 0..others {
            assert!(rx.recv().expect("reply"), "consumer");
        }
        let per_iter = 1024;
        group.throughput(Throughput::Elements(per_iter as u64));
        group.bench_function(
            format!("16B/submit_window_256/{others}_other_consumers"),
            |b| {
                b.iter_custom(|iters| run_pipelined(&store, 256, per_iter, &payload, iters));
            },
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
    group.finish();
}

fn fsync_floor(c: &mut Criterion) {
    let dir = temp_dir("fsync");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("probe");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("probe file");
    file.write_all(&[0u8; 1 << 20]).expect("preallocate");
    file.sync_all().expect("sync");
    let page = [1u8; 4096];
    let mut group = c.benchmark_group("disk");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("write_4KiB_fdatasync", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 1) % 256;
            file.write_all_at(&page, i * 4096).expect("write");
            file.sync_data().expect("fdatasync");
        });
    });
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, persist, many_consumers, fsync_floor);
criterion_main!(benches);
