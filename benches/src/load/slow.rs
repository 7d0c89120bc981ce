//! The slow-subscriber scenario: one publisher sends a fixed number of QoS 1/2 messages on one
//! topic, as fast as its in-flight window allows, to fast subscribers (the fast reader of
//! [`super::client`]) and one subscriber that reads and acknowledges at a fixed rate (a
//! [`DecodingClient`] that takes the next packet off its socket only when its pace allows).
//! All are clean sessions (persistent ones with `persistent`). It reports what each subscriber received of what the broker
//! acknowledged to the publisher, and the publisher's rate: a broker that drops for the slow
//! subscriber shows it in the slow one's count, a broker that holds the publisher back shows it
//! in the publisher's rate.
//!
//! The run ends when every subscriber has every message, when the deadline passes, or when the
//! publisher is done and no subscriber has received anything for [`QUIET`]; it reports what had
//! arrived by then.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use jetmq_core::codec::QoS;
use serde::Serialize;
use tokio::sync::mpsc;

use super::client::{Client, Seen};
use super::decoding::DecodingClient;
use super::BATCH;

/// How long nothing may arrive, once the publisher is done, before the run ends.
pub const QUIET: Duration = Duration::from_secs(5);

/// How far the slow subscriber may fall behind its schedule (the broker sent it nothing)
/// before it starts a new one, so it never reads faster than its rate to catch up.
const SLACK: Duration = Duration::from_millis(20);

/// What to measure.
#[derive(Debug, Clone)]
pub struct SlowScenario {
    /// The broker.
    pub addr: SocketAddr,
    /// Messages the publisher sends.
    pub messages: u64,
    /// Subscribers that read as fast as they can.
    pub fast: usize,
    /// Messages per second the slow subscriber reads and acknowledges.
    pub slow_rate: u64,
    /// QoS of the publishes and the subscriptions (1 or 2).
    pub qos: QoS,
    /// Payload bytes (at least 8: the message's sequence number travels in them).
    pub payload: usize,
    /// Publishes in flight.
    pub window: usize,
    /// Longest the run may take, from the first publish.
    pub deadline: Duration,
    /// The broker's process id, to report its peak memory.
    pub broker_pid: Option<u32>,
    /// Print progress every second on standard error.
    pub progress: bool,
    /// The subscribers use persistent sessions (a broker may then keep the slow one's backlog
    /// in its store instead of holding the publisher back).
    pub persistent: bool,
}

/// What one subscriber received.
#[derive(Debug, Clone, Serialize)]
pub struct Delivered {
    /// Distinct messages received of those expected.
    pub delivered: u64,
    /// Messages the broker acknowledged to the publisher.
    pub expected: u64,
    /// Deliveries of a message already received.
    pub duplicates: u64,
    /// Deliveries of a message older than one already received (the topic's order broken).
    pub out_of_order: u64,
    /// Seconds from the first publish to the last delivery.
    pub last_delivery_s: Option<f64>,
    /// Latency from publish to delivery in microseconds: p50, p99, max.
    pub latency_us: [u64; 3],
    /// The broker closed the connection.
    pub disconnected: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct SlowReport {
    /// Messages published.
    pub published: u64,
    /// Publishes the broker acknowledged (PUBACK, or PUBCOMP for QoS 2).
    pub acknowledged: u64,
    /// Seconds from the first publish to the last acknowledgement.
    pub publish_s: f64,
    /// Acknowledged publishes per second.
    pub publishes_per_sec: f64,
    /// The slow subscriber.
    pub slow: Delivered,
    /// The fast subscribers.
    pub fast: Vec<Delivered>,
    /// Seconds from the first publish to the end of the run.
    pub run_s: f64,
    /// The run ended at the deadline.
    pub deadline_reached: bool,
    /// The broker's largest resident memory seen during the run, in KiB.
    pub broker_peak_rss_kib: Option<u64>,
    /// Acknowledged messages some subscriber did not receive, over all subscribers.
    pub lost: u64,
}

/// What a subscriber's task reports to the run.
enum Event {
    /// Sequence numbers received by subscriber `.0`.
    Delivered(usize, Vec<u64>),
    /// Subscriber `.0`'s connection ended.
    Closed(usize),
}

/// One subscriber's deliveries as they arrive.
struct Tally {
    seen: Vec<bool>,
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
    newest: Option<u64>,
    /// (sequence number, nanoseconds since the epoch) of first deliveries.
    arrivals: Vec<(u64, u64)>,
    disconnected: bool,
}

impl Tally {
    fn new(messages: u64) -> Self {
        Self {
            seen: vec![false; usize::try_from(messages).unwrap_or(usize::MAX)],
            distinct: 0,
            duplicates: 0,
            out_of_order: 0,
            newest: None,
            arrivals: Vec::new(),
            disconnected: false,
        }
    }

    fn record(&mut self, seq: u64, now: u64) {
        if self.newest.is_some_and(|n| seq < n) {
            self.out_of_order += 1;
        }
        self.newest = self.newest.max(Some(seq));
        let Some(slot) = usize::try_from(seq).ok().and_then(|i| self.seen.get_mut(i)) else {
            // Not a message of this run: a duplicate of nothing; count it as one.
            self.duplicates += 1;
            return;
        };
        if *slot {
            self.duplicates += 1;
        } else {
            *slot = true;
            self.distinct += 1;
            self.arrivals.push((seq, now));
        }
    }

    /// The subscriber's figures, counting the first `expected` messages (brokers acknowledge
    /// a publisher's messages in order), with send times from `sent_at` and times measured
    /// from `start` (nanoseconds since the epoch).
    fn report(&self, expected: u64, sent_at: &[u64], start: u64) -> Delivered {
        let expected_slots = usize::try_from(expected).unwrap_or(usize::MAX);
        let delivered = self
            .seen
            .iter()
            .take(expected_slots)
            .filter(|s| **s)
            .count() as u64;
        let mut hist = hdrhistogram::Histogram::<u64>::new(3).ok();
        let mut last = None;
        for &(seq, at) in &self.arrivals {
            last = last.max(Some(at));
            let sent = usize::try_from(seq).ok().and_then(|i| sent_at.get(i));
            if let (Some(h), Some(sent)) = (hist.as_mut(), sent) {
                let _ = h.record(at.saturating_sub(*sent) / 1000);
            }
        }
        let latency_us = hist.map_or([0; 3], |h| {
            [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()]
        });
        Delivered {
            delivered,
            expected,
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            last_delivery_s: last.map(|l: u64| l.saturating_sub(start) as f64 / 1e9),
            latency_us,
            disconnected: self.disconnected,
        }
    }
}

fn nanos(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A payload carrying `seq` in its first 8 bytes.
fn sequenced(seq: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(8));
    b.put_u64(seq);
    b.resize(size.max(8), 0x5a);
    b.freeze()
}

/// Reads and acknowledges one message at a time, no faster than `rate` per second, and
/// reports each one's sequence number as subscriber `index`.
async fn read_slowly(
    mut client: DecodingClient,
    rate: u64,
    index: usize,
    events: mpsc::UnboundedSender<Event>,
) {
    let rate = rate.max(1);
    let mut begin = Instant::now();
    let mut n = 0u64;
    loop {
        let message = match client.next_message().await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        let due = begin + Duration::from_nanos(n.saturating_mul(1_000_000_000) / rate);
        let now = Instant::now();
        if n == 0 || now > due + SLACK {
            // The first message, or the broker sent nothing for a while: a new schedule.
            begin = now;
            n = 0;
        } else if due > now {
            tokio::time::sleep_until(due.into()).await;
        }
        n += 1;
        if client.acknowledge(&message).await.is_err() {
            break;
        }
        if events
            .send(Event::Delivered(index, vec![message.stamp()]))
            .is_err()
        {
            return;
        }
    }
    let _ = events.send(Event::Closed(index));
}

/// Runs the scenario.
///
/// # Errors
///
/// Connecting or subscribing failed.
pub async fn run(s: &SlowScenario) -> std::io::Result<SlowReport> {
    let epoch = Instant::now();
    let topic = "bench/slow";
    let (events, mut rx) = mpsc::unbounded_channel::<Event>();
    // Fast subscribers first, then the slow one (index `s.fast`).
    let mut fast = Vec::new();
    for i in 0..s.fast {
        let (tx, mut seen) = mpsc::unbounded_channel();
        let mut c =
            Client::connect(s.addr, &format!("bench-fast-{i}"), s.persistent, 1, tx).await?;
        c.subscribe(topic, s.qos).await?;
        loop {
            match seen.recv().await {
                Some(Seen::Subscribed) => break,
                Some(Seen::Closed) | None => {
                    return Err(std::io::Error::other("a fast subscriber was disconnected"))
                }
                Some(_) => {}
            }
        }
        let forward = events.clone();
        tokio::spawn(async move {
            while let Some(e) = seen.recv().await {
                let event = match e {
                    Seen::Deliveries(seqs) => Event::Delivered(i, seqs),
                    Seen::Closed => Event::Closed(i),
                    _ => continue,
                };
                if forward.send(event).is_err() {
                    return;
                }
            }
        });
        fast.push(c);
    }
    let mut slow = DecodingClient::connect(s.addr, "bench-slow", s.persistent).await?;
    slow.subscribe(topic, s.qos).await?;
    tokio::spawn(read_slowly(slow, s.slow_rate, s.fast, events.clone()));
    drop(events);
    // The publisher: the send time of every message, its acknowledgements counted as they
    // come (so a run cut at the deadline still knows them).
    let (tx, mut seen) = mpsc::unbounded_channel();
    let mut publisher = Client::connect(s.addr, "bench-slow-pub", false, s.window, tx).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let last_ack = Arc::new(AtomicU64::new(0));
    {
        let (acked, last_ack) = (Arc::clone(&acked), Arc::clone(&last_ack));
        tokio::spawn(async move {
            while let Some(e) = seen.recv().await {
                if let Seen::Completed = e {
                    acked.fetch_add(1, Ordering::Relaxed);
                    last_ack.store(nanos(epoch), Ordering::Relaxed);
                }
            }
        });
    }
    let sent_at = Arc::new(Mutex::new(Vec::<u64>::new()));
    let started = Instant::now();
    let start = nanos(epoch);
    let deadline = started + s.deadline;
    let publishing = {
        let sent_at = Arc::clone(&sent_at);
        let (messages, qos, size, window) = (s.messages, s.qos, s.payload, s.window);
        tokio::spawn(tokio::time::timeout_at(deadline.into(), async move {
            let mut seq = 0u64;
            while seq < messages {
                if let Ok(permit) = publisher.window.acquire().await {
                    permit.forget();
                }
                let mut batch = 1u64;
                while batch < u64::from(BATCH) && seq + batch < messages {
                    match publisher.window.try_acquire() {
                        Ok(permit) => {
                            permit.forget();
                            batch += 1;
                        }
                        Err(_) => break,
                    }
                }
                let payloads: Vec<Bytes> = (seq..seq + batch).map(|q| sequenced(q, size)).collect();
                let now = nanos(epoch);
                if let Ok(mut times) = sent_at.lock() {
                    times.extend((0..batch).map(|_| now));
                }
                if publisher.publish_many(topic, qos, payloads).await.is_err() {
                    return;
                }
                seq += batch;
            }
            let all = u32::try_from(window).unwrap_or(u32::MAX);
            let _ = publisher.window.acquire_many(all).await;
        }))
    };
    let subscribers = s.fast + 1;
    let mut tallies: Vec<Tally> = (0..subscribers).map(|_| Tally::new(s.messages)).collect();
    let mut peak_rss = s.broker_pid.and_then(super::rss_kib);
    let mut last_arrival = Instant::now();
    let mut last_sample = Instant::now();
    let mut last_progress = Instant::now();
    let mut deadline_reached = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            deadline_reached = true;
            break;
        }
        if publishing.is_finished() {
            let published = sent_at.lock().map_or(0, |t| t.len() as u64);
            if tallies.iter().all(|t| t.distinct >= published) {
                break;
            }
            if now.duration_since(last_arrival) >= QUIET {
                break;
            }
        }
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some(Event::Delivered(i, seqs))) => {
                let at = nanos(epoch);
                last_arrival = Instant::now();
                if let Some(t) = tallies.get_mut(i) {
                    for seq in seqs {
                        t.record(seq, at);
                    }
                }
            }
            Ok(Some(Event::Closed(i))) => {
                if let Some(t) = tallies.get_mut(i) {
                    t.disconnected = true;
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
        if last_sample.elapsed() >= Duration::from_millis(100) {
            last_sample = Instant::now();
            let rss = s.broker_pid.and_then(super::rss_kib);
            peak_rss = peak_rss.max(rss);
        }
        if s.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let fast: Vec<u64> = tallies[..s.fast].iter().map(|t| t.distinct).collect();
            eprintln!(
                "  {:>5.1} s: {} acknowledged, slow {}, fast {fast:?}",
                started.elapsed().as_secs_f64(),
                acked.load(Ordering::Relaxed),
                tallies[s.fast].distinct,
            );
        }
    }
    publishing.abort();
    drop(fast);
    let run_s = started.elapsed().as_secs_f64();
    let acknowledged = acked.load(Ordering::Relaxed);
    let sent_at = sent_at.lock().map(|t| t.clone()).unwrap_or_default();
    let publish_s = if acknowledged > 0 {
        last_ack.load(Ordering::Relaxed).saturating_sub(start) as f64 / 1e9
    } else {
        run_s
    };
    let mut reports: Vec<Delivered> = tallies
        .iter()
        .map(|t| t.report(acknowledged, &sent_at, start))
        .collect();
    let lost = reports.iter().map(|d| d.expected - d.delivered).sum();
    let slow = reports.pop().unwrap_or_else(|| unreachable!());
    Ok(SlowReport {
        published: sent_at.len() as u64,
        acknowledged,
        publish_s,
        publishes_per_sec: acknowledged as f64 / publish_s.max(1e-9),
        slow,
        fast: reports,
        run_s,
        deadline_reached,
        broker_peak_rss_kib: peak_rss,
        lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_distinct_duplicate_and_late_deliveries() {
        let mut t = Tally::new(5);
        for (seq, at) in [(0, 10), (2, 20), (1, 30), (2, 40), (9, 50)] {
            t.record(seq, at);
        }
        assert_eq!((t.distinct, t.duplicates, t.out_of_order), (3, 2, 1));
        // Three of the first four acknowledged messages arrived; sent at 0, 5, 10, 15.
        let d = t.report(4, &[0, 5, 10, 15, 20], 0);
        assert_eq!((d.delivered, d.expected), (3, 4));
        assert_eq!(d.last_delivery_s, Some(30.0 / 1e9));
        assert!(!d.disconnected);
    }

    #[test]
    fn sequenced_payloads_carry_their_number() {
        let p = sequenced(0x0102, 16);
        assert_eq!(p.len(), 16);
        assert_eq!(p[..8], 0x0102u64.to_be_bytes());
        assert_eq!(sequenced(7, 2).len(), 8);
    }
}
