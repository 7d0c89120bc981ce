//! Both shells side by side: the same broker core behind the tokio server (`jetmq`) and the
//! mio loop (`jetmq-mio`), measured end to end over loopback TCP in the same run. A publisher
//! socket writes a batch of 16-byte PUBLISH packets and a subscriber socket reads until all of
//! them arrived (QoS 1: each side answers PUBACKs), with raw MQTT so no client library's cost
//! is in the figure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jetmq::config::ServerConfig;
use jetmq::store::MemoryBackend;

/// Messages per measured batch.
const BATCH: u64 = 2_000;
const TOPIC: &[u8] = b"bench/t";

/// A running server of one shell; dropping it stops the server.
enum Shell {
    Tokio(tokio::runtime::Runtime, Option<jetmq::server::ServerHandle>),
    Mio(Option<jetmq_mio::Running>),
}

impl Drop for Shell {
    fn drop(&mut self) {
        match self {
            Self::Tokio(rt, handle) => {
                if let Some(h) = handle.take() {
                    let _ = rt.block_on(h.shutdown());
                }
            }
            Self::Mio(running) => {
                if let Some(r) = running.take() {
                    let _ = r.stop();
                }
            }
        }
    }
}

fn config() -> ServerConfig {
    let mut config = ServerConfig {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        data_dir: None,
        ..ServerConfig::default()
    };
    // A whole batch may wait behind the subscriber's in-flight window without being dropped.
    config.broker.max_queued_messages = 2 * BATCH as usize;
    config
}

fn start(name: &str) -> (Shell, SocketAddr) {
    let store = Arc::new(MemoryBackend::default());
    if name == "tokio" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let handle = rt
            .block_on(jetmq::server::start(config(), store))
            .expect("starts");
        let addr = handle.local_addrs[0];
        (Shell::Tokio(rt, Some(handle)), addr)
    } else {
        let running = jetmq_mio::spawn(config(), store).expect("starts");
        let addr = running.local_addrs[0];
        (Shell::Mio(Some(running)), addr)
    }
}

/// An MQTT 3.1.1 connection on a blocking socket.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    id: String,
}

impl Raw {
    fn connect(addr: SocketAddr, id: &str) -> Self {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let mut raw = Self {
            s,
            buf: Vec::new(),
            id: id.to_string(),
        };
        let mut connect = vec![0x10, (12 + id.len()) as u8, 0, 4];
        connect.extend_from_slice(b"MQTT");
        connect.extend_from_slice(&[4, 2, 0, 60, 0, id.len() as u8]);
        connect.extend_from_slice(id.as_bytes());
        raw.s.write_all(&connect).expect("CONNECT");
        let p = raw.packet();
        assert_eq!(p[0], 0x20, "CONNACK");
        raw
    }

    fn subscribe(&mut self, qos: u8) {
        let mut sub = vec![0x82, (5 + TOPIC.len()) as u8, 0, 1, 0, TOPIC.len() as u8];
        sub.extend_from_slice(TOPIC);
        sub.push(qos);
        self.s.write_all(&sub).expect("SUBSCRIBE");
        let p = self.packet();
        assert_eq!(p[0], 0x90, "SUBACK");
    }

    /// The next whole packet (remaining lengths below 128 only: these packets are small).
    fn packet(&mut self) -> Vec<u8> {
        loop {
            if self.buf.len() >= 2 && self.buf.len() >= 2 + usize::from(self.buf[1]) {
                let len = 2 + usize::from(self.buf[1]);
                return self.buf.drain(..len).collect();
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.s.read(&mut chunk).expect("read");
            assert!(n > 0, "the broker closed {}'s connection", self.id);
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn publish_bytes(qos: u8, count: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        let pid = (i % 65_000 + 1) as u16;
        let extra = if qos > 0 { 2 } else { 0 };
        out.push(0x30 | (qos << 1));
        out.push((2 + TOPIC.len() + extra + 16) as u8);
        out.extend_from_slice(&[0, TOPIC.len() as u8]);
        out.extend_from_slice(TOPIC);
        if qos > 0 {
            out.extend_from_slice(&pid.to_be_bytes());
        }
        out.extend_from_slice(&[7u8; 16]);
    }
    out
}

/// Sends `count` messages and waits until the subscriber has them all.
fn run_batch(publisher: &mut Raw, subscriber: &mut Raw, qos: u8, count: u64) -> Duration {
    let bytes = publish_bytes(qos, count);
    let start = Instant::now();
    let mut writer = publisher.s.try_clone().expect("clone");
    let sender = std::thread::spawn(move || writer.write_all(&bytes).expect("publish"));
    let mut received = 0;
    while received < count {
        let p = subscriber.packet();
        if p[0] >> 4 == 3 {
            received += 1;
            if (p[0] >> 1) & 3 == 1 {
                // PUBACK with the delivery's packet identifier.
                let at = 4 + usize::from(p[3]);
                subscriber
                    .s
                    .write_all(&[0x40, 2, p[at], p[at + 1]])
                    .expect("PUBACK");
            }
        }
    }
    sender.join().expect("sender");
    if qos > 0 {
        for _ in 0..count {
            let a = publisher.packet();
            assert_eq!(a[0], 0x40, "PUBACK");
        }
    }
    start.elapsed()
}

fn shells(c: &mut Criterion) {
    for qos in [0u8, 1] {
        let mut group = c.benchmark_group(format!("shells_1to1_16B_qos{qos}"));
        group.throughput(Throughput::Elements(BATCH));
        group.sample_size(20);
        for name in ["tokio", "mio"] {
            let (shell, addr) = start(name);
            let mut subscriber = Raw::connect(addr, "sub");
            subscriber.subscribe(qos);
            let mut publisher = Raw::connect(addr, "pub");
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| run_batch(&mut publisher, &mut subscriber, qos, BATCH))
                        .sum()
                });
            });
            drop(publisher);
            drop(subscriber);
            drop(shell);
        }
        group.finish();
    }
}

criterion_group!(benches, shells);
criterion_main!(benches);
