//! `jetmq-bench`, the load generator: raw MQTT over tokio against any broker, in the
//! scenarios users compare brokers by — one to one, fan-in, fan-out, QoS 0/1/2, payload sizes,
//! persistent sessions, idle connections — closed loop (as fast as the flows allow) or open
//! loop (a fixed offered rate), with throughput and latency percentiles.

pub mod client;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use jetmq_core::codec::QoS;
use serde::Serialize;
use tokio::sync::mpsc;

use client::{Client, Seen};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The broker.
    pub addr: SocketAddr,
    /// Publishing connections.
    pub publishers: usize,
    /// Subscribing connections (each subscribed to every publisher's topic).
    pub subscribers: usize,
    /// QoS of publishes and subscriptions.
    pub qos: QoS,
    /// Payload bytes (at least 8: the send time travels in them).
    pub payload: usize,
    /// How long to publish.
    pub duration: Duration,
    /// Messages per second over all publishers (open loop); `None`: as fast as possible.
    pub rate: Option<u64>,
    /// QoS 1/2 publishes in flight per publisher (closed loop, where publishes go out in
    /// writes of up to 32).
    pub window: usize,
    /// Subscribers use persistent sessions.
    pub persistent: bool,
    /// Print progress every second on standard error.
    pub progress: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Messages published.
    pub published: u64,
    /// Messages received over all subscribers.
    pub received: u64,
    /// Deliveries per second over all subscribers.
    pub deliveries_per_sec: f64,
    /// Publishes per second.
    pub publishes_per_sec: f64,
    /// Latency percentiles in microseconds: p50, p99, p99.9, max.
    pub latency_us: [u64; 4],
    /// Deliveries expected but not received by the end (QoS 0 may drop; QoS 1/2 must not).
    pub missing: u64,
}

/// Most publishes written at once in closed loop.
const BATCH: u32 = 32;

fn payload(size: usize, epoch: Instant) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(8));
    let nanos = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    b.put_u64(nanos);
    b.resize(size.max(8), 0x5a);
    b.freeze()
}

/// Runs a scenario.
///
/// # Errors
///
/// Connecting or subscribing failed.
pub async fn run(s: &Scenario) -> std::io::Result<Report> {
    let epoch = Instant::now();
    let topic = |i: usize| format!("bench/{i}");
    // Subscribers: each takes every publisher's topic.
    let (sub_tx, mut sub_rx) = mpsc::unbounded_channel::<Seen>();
    let mut subs = Vec::new();
    for i in 0..s.subscribers {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut c = Client::connect(s.addr, &format!("bench-sub-{i}"), s.persistent, 1, tx).await?;
        c.subscribe("bench/+", s.qos).await?;
        loop {
            match rx.recv().await {
                Some(Seen::Subscribed) => break,
                Some(Seen::Closed) | None => {
                    return Err(std::io::Error::other("a subscriber was disconnected"))
                }
                Some(_) => {}
            }
        }
        let forward = sub_tx.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if forward.send(e).is_err() {
                    return;
                }
            }
        });
        subs.push(c);
    }
    drop(sub_tx);
    // Publishers.
    let deadline = Instant::now() + s.duration;
    let mut tasks = Vec::new();
    for i in 0..s.publishers {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut c = Client::connect(s.addr, &format!("bench-pub-{i}"), false, s.window, tx).await?;
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let (topic, qos, size, rate, window) = (topic(i), s.qos, s.payload, s.rate, s.window);
        let per_publisher = rate.map(|r| (r / s.publishers.max(1) as u64).max(1));
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            let start = Instant::now();
            while Instant::now() < deadline {
                if let Some(r) = per_publisher {
                    // Open loop: the n-th message goes at start + n / rate, whatever the broker.
                    let due = start + Duration::from_nanos(sent * 1_000_000_000 / r);
                    tokio::time::sleep_until(due.into()).await;
                    if c.publish(&topic, qos, payload(size, epoch)).await.is_err() {
                        break;
                    }
                    sent += 1;
                    continue;
                }
                // Closed loop: as many as the window has room for (QoS 0: a batch), in one
                // write, as a busy client's buffered writes reach the broker.
                let mut batch = 1u32;
                if qos != QoS::AtMostOnce {
                    if let Ok(permit) = c.window.acquire().await {
                        permit.forget();
                    }
                    while batch < BATCH {
                        match c.window.try_acquire() {
                            Ok(permit) => {
                                permit.forget();
                                batch += 1;
                            }
                            Err(_) => break,
                        }
                    }
                } else {
                    batch = BATCH;
                }
                let payloads = (0..batch).map(|_| payload(size, epoch));
                if c.publish_many(&topic, qos, payloads).await.is_err() {
                    break;
                }
                sent += u64::from(batch);
            }
            // The last QoS 1/2 flows: every permit of the window back (bounded wait).
            let all = u32::try_from(window).unwrap_or(u32::MAX);
            let _ = tokio::time::timeout(Duration::from_secs(10), c.window.acquire_many(all)).await;
            sent
        }));
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).map_err(std::io::Error::other)?;
    let mut received = 0u64;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut published = 0u64;
    let mut pending = tasks;
    // Receive until the publishers are done and deliveries stop coming for a moment.
    loop {
        let wait = if pending.is_empty() {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(100)
        };
        match tokio::time::timeout(wait, sub_rx.recv()).await {
            Ok(Some(Seen::Deliveries(stamps))) => {
                received += stamps.len() as u64;
                let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                for sent in stamps {
                    let _ = hist.record(now.saturating_sub(sent) / 1000);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) if pending.is_empty() => break,
            Err(_) => {}
        }
        if !pending.is_empty() && pending.iter().all(tokio::task::JoinHandle::is_finished) {
            for t in pending.drain(..) {
                published += t.await.unwrap_or(0);
            }
        }
        if s.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "  {:>5.1} s: {received} deliveries ({:.0}/s)",
                started.elapsed().as_secs_f64(),
                received as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = s.duration.as_secs_f64().max(1e-9);
    let expected = published * s.subscribers as u64;
    drop(subs);
    Ok(Report {
        published,
        received,
        deliveries_per_sec: received as f64 / elapsed,
        publishes_per_sec: published as f64 / elapsed,
        latency_us: [
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.value_at_quantile(0.999),
            hist.max(),
        ],
        missing: expected.saturating_sub(received),
    })
}

/// The broker's resident memory in KiB, from `/proc/<pid>/status`.
#[must_use]
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Opens `count` idle connections, each subscribed to its own topic, and keeps them open
/// until the returned value is dropped.
///
/// # Errors
///
/// A connection or subscription failed.
pub async fn idle(addr: SocketAddr, count: usize, progress: bool) -> std::io::Result<Vec<Client>> {
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut c = Client::connect(addr, &format!("bench-idle-{i}"), false, 1, tx).await?;
        c.subscribe(&format!("idle/{i}"), QoS::AtLeastOnce).await?;
        while let Some(e) = rx.recv().await {
            if matches!(e, Seen::Subscribed) {
                break;
            }
        }
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        conns.push(c);
        if progress && (i + 1) % 1000 == 0 {
            eprintln!("  {} connections", i + 1);
        }
    }
    Ok(conns)
}
