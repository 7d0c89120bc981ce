//! `jetmq-bench`, the load generator: raw MQTT over tokio against any broker, in the
//! scenarios users compare brokers by — one to one, fan-in, fan-out, QoS 0/1/2, payload sizes,
//! persistent sessions, idle connections — closed loop (as fast as the flows allow) or open
//! loop (a fixed offered rate), with throughput and latency percentiles; and two overload
//! scenarios: subscribers that decode every packet as a client library does
//! ([`decoding`], [`Scenario::decoding`]) and a slow subscriber beside fast ones ([`slow`]).

pub mod client;
pub mod decoding;
pub mod slow;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use jetmq_core::codec::QoS;
use serde::Serialize;
use tokio::sync::mpsc;

use client::{Client, Seen};
use decoding::DecodingClient;

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
    /// Subscribers read as an ordinary client library does ([`DecodingClient`]: every packet
    /// decoded whole into an owned message, every acknowledgement its own write) instead of
    /// [`Client`]'s fast reader.
    pub decoding: bool,
    /// Print progress every second on standard error.
    pub progress: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Messages published.
    pub published: u64,
    /// QoS 1/2 publishes the broker acknowledged (PUBACK, or PUBCOMP for QoS 2); for QoS 0,
    /// the messages published.
    pub acknowledged: u64,
    /// Messages received over all subscribers.
    pub received: u64,
    /// Deliveries per second over all subscribers, over [`Report::delivery_s`].
    pub deliveries_per_sec: f64,
    /// Seconds from the start of publishing to the last delivery, or the publishing time if
    /// longer: a broker that buffers a backlog is measured by when its subscribers got it.
    pub delivery_s: f64,
    /// Publishes per second.
    pub publishes_per_sec: f64,
    /// Latency percentiles in microseconds: p50, p99, p99.9, max.
    pub latency_us: [u64; 4],
    /// Deliveries expected but not received by the end (QoS 0 may drop; QoS 1/2 must not).
    pub missing: u64,
}

impl Report {
    /// Deliveries lost by a QoS 1/2 run (its `missing`); such a run has no figure. `None` for
    /// QoS 0, which may drop, and for a run that lost nothing.
    #[must_use]
    pub fn lost(&self, qos: QoS) -> Option<u64> {
        (qos != QoS::AtMostOnce && self.missing > 0).then_some(self.missing)
    }
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
        if s.decoding {
            let mut c =
                DecodingClient::connect(s.addr, &format!("bench-sub-{i}"), s.persistent).await?;
            c.subscribe("bench/+", s.qos).await?;
            tokio::spawn(read_decoding(c, sub_tx.clone()));
            continue;
        }
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
            // Publishes still in flight: the window's permits not given back.
            let in_flight = if qos == QoS::AtMostOnce {
                0
            } else {
                window.saturating_sub(c.window.available_permits()) as u64
            };
            (sent, sent.saturating_sub(in_flight))
        }));
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).map_err(std::io::Error::other)?;
    let mut received = 0u64;
    let started = Instant::now();
    let mut last_delivery = started;
    let mut last_progress = Instant::now();
    let mut published = 0u64;
    let mut acknowledged = 0u64;
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
                last_delivery = Instant::now();
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
                let (sent, acked) = t.await.unwrap_or((0, 0));
                published += sent;
                acknowledged += acked;
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
    let delivery_s = elapsed.max(
        last_delivery
            .saturating_duration_since(deadline - s.duration)
            .as_secs_f64(),
    );
    let expected = published * s.subscribers as u64;
    drop(subs);
    Ok(Report {
        published,
        acknowledged,
        received,
        deliveries_per_sec: received as f64 / delivery_s,
        delivery_s,
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

/// Reads deliveries with a [`DecodingClient`], acknowledging each one as it is read, and
/// reports each one's send time to `events`, one message at a time, as a client library hands
/// messages to its application.
async fn read_decoding(mut c: DecodingClient, events: mpsc::UnboundedSender<Seen>) {
    while let Ok(Some(m)) = c.next_message().await {
        if c.acknowledge(&m).await.is_err() {
            break;
        }
        if events.send(Seen::Deliveries(vec![m.stamp()])).is_err() {
            return;
        }
    }
    let _ = events.send(Seen::Closed);
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
