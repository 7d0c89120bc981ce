//! Crash safety: a child process (this test binary, re-run with an environment variable) writes
//! with four threads and prints every acknowledged operation; the parent kills it with SIGKILL
//! at seeded random moments, 40 times, and after each kill reopens the store and checks that
//! every acknowledged record is there, in order, that acknowledged acks and replacements took
//! effect, and that sequences are never reused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jetmq_core::js::{StoreReply, StoreRequest, Stream};
use jetmq_store::{Store, StoreConfig};

const CHILD_DIR: &str = "JETMQ_STORE_CRASH_DIR";
const CHILD_ROUND: &str = "JETMQ_STORE_CRASH_ROUND";
const ROUNDS: u64 = 40;
const WRITERS: usize = 4;
const CONSUMER: &str = "crash";
const PREFIX: &str = "$MQTT.msgs.crash.";

/// The child's side: runs only when the parent re-executes this binary.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(round)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ROUND)) else {
        return;
    };
    let (store, _) = Store::open(StoreConfig::new(dir)).expect("child: open");
    store
        .execute(StoreRequest::UpsertConsumer {
            name: CONSUMER.into(),
            filters: vec![format!("{PREFIX}>").into()],
        })
        .expect("child: consumer");
    say("OPEN");
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (store, round) = (&store, &round);
            s.spawn(move || write_forever(store, round, w));
        }
    });
}

/// One line to the parent, written whole.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

fn write_forever(store: &Store, round: &str, w: usize) {
    let started = Instant::now();
    let mut mine = Vec::new();
    for j in 0u64.. {
        if started.elapsed() > Duration::from_secs(30) {
            return; // the parent should have killed us long ago
        }
        let payload = format!("r{round}.w{w}.{j}");
        let reply = store.execute(StoreRequest::Publish {
            stream: Stream::Messages,
            subject: format!("{PREFIX}w{w}").into(),
            headers: Vec::new(),
            payload: Bytes::from(payload.clone()),
        });
        let Ok(StoreReply::Stored { seq }) = reply else {
            panic!("child: publish {reply:?}");
        };
        say(&format!("ACK {seq} {payload}"));
        mine.push(seq);
        if j % 4 == 3 {
            // Acknowledge an older message of ours: it must be gone after a restart.
            let seq = mine.remove(0);
            say(&format!("ACKING {seq}"));
            store
                .execute(StoreRequest::Ack {
                    consumer: CONSUMER.into(),
                    seq,
                })
                .expect("child: ack");
            say(&format!("ACKED {seq}"));
        }
        if j % 3 == 0 {
            let reply = store.execute(StoreRequest::Publish {
                stream: Stream::Sessions,
                subject: format!("$MQTT.sess.w{w}").into(),
                headers: Vec::new(),
                payload: Bytes::from(payload.clone()),
            });
            let Ok(StoreReply::Stored { seq }) = reply else {
                panic!("child: session publish {reply:?}");
            };
            say(&format!("KV {seq} {w} {payload}"));
        }
    }
}

/// splitmix64: a seeded, deterministic source of kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the parent knows was acknowledged.
#[derive(Default)]
struct Expected {
    /// Queued messages acknowledged as stored and not acknowledged as acked: seq → payload.
    queued: BTreeMap<u64, String>,
    /// Sequences whose ack was acknowledged: must be gone.
    acked: Vec<u64>,
    /// Sequences whose ack was sent, acknowledged or not: may be gone.
    acking: BTreeSet<u64>,
    /// Per writer, the last acknowledged session record: (seq, payload).
    sessions: BTreeMap<usize, (u64, String)>,
    /// Every session record acknowledged: seq → payload.
    session_payloads: BTreeMap<u64, String>,
}

impl Expected {
    fn take(&mut self, line: &str, floor: u64) -> usize {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("ACK"), Some(seq), Some(payload), None) => {
                let seq: u64 = seq.parse().expect("seq");
                assert!(seq > floor, "sequence {seq} reused (last before: {floor})");
                self.queued.insert(seq, payload.to_owned());
                1
            }
            (Some("ACKING"), Some(seq), None, None) => {
                self.acking.insert(seq.parse().expect("seq"));
                0
            }
            (Some("ACKED"), Some(seq), None, None) => {
                let seq: u64 = seq.parse().expect("seq");
                self.queued.remove(&seq);
                self.acked.push(seq);
                1
            }
            (Some("KV"), Some(seq), Some(w), Some(payload)) => {
                let seq: u64 = seq.parse().expect("seq");
                assert!(seq > floor, "sequence {seq} reused (last before: {floor})");
                let w: usize = w.parse().expect("writer");
                self.sessions.insert(w, (seq, payload.to_owned()));
                self.session_payloads.insert(seq, payload.to_owned());
                1
            }
            _ => 0, // the test harness's own lines, or a line cut by the kill
        }
    }
}

/// Opens the store after a kill and checks everything acknowledged; returns the last sequence.
fn verify(dir: &common::TempDir, expected: &mut Expected, round: u64, opened: bool) -> u64 {
    let (store, report) = Store::open(dir.config()).expect("reopen after kill");
    assert!(
        report.unclean_shutdown || !opened,
        "round {round}: {report}"
    );
    let listed = match store.execute(StoreRequest::List {
        stream: Stream::Messages,
        prefix: PREFIX.into(),
    }) {
        Ok(StoreReply::Messages(m)) => m,
        other => panic!("list: {other:?}"),
    };
    let present: BTreeMap<u64, String> = listed
        .iter()
        .map(|m| {
            let payload = String::from_utf8(m.payload.to_vec()).expect("utf-8");
            (m.seq, payload)
        })
        .collect();
    assert!(
        listed.windows(2).all(|w| w[0].seq < w[1].seq),
        "listed in sequence order"
    );
    for (seq, payload) in &expected.queued {
        if expected.acking.contains(seq) && !present.contains_key(seq) {
            continue; // its ack was sent and took effect, though the kill hid the reply
        }
        assert_eq!(
            present.get(seq),
            Some(payload),
            "round {round}: acknowledged message {seq} lost or changed; {report}"
        );
    }
    for seq in &expected.acked {
        assert!(
            !present.contains_key(seq),
            "round {round}: acknowledged ack of {seq} lost"
        );
    }
    // Per writer and round, payload counters grow with the sequence: writes kept their order.
    let mut last_counter: BTreeMap<String, u64> = BTreeMap::new();
    for payload in present.values() {
        let (key, counter) = payload.rsplit_once('.').expect("payload shape");
        let counter: u64 = counter.parse().expect("counter");
        if let Some(prev) = last_counter.insert(key.to_owned(), counter) {
            assert!(prev < counter, "round {round}: {key} out of order");
        }
    }
    for (w, (seq, payload)) in &expected.sessions {
        let m = match store.execute(StoreRequest::GetLast {
            stream: Stream::Sessions,
            subject: format!("$MQTT.sess.w{w}").into(),
        }) {
            Ok(StoreReply::Message(Some(m))) => m,
            other => panic!("round {round}: session of writer {w}: {other:?}"),
        };
        assert!(
            m.seq >= *seq,
            "round {round}: acknowledged session record {seq} replaced by older {}",
            m.seq
        );
        if m.seq == *seq {
            assert_eq!(&m.payload[..], payload.as_bytes());
        } else if let Some(p) = expected.session_payloads.get(&m.seq) {
            assert_eq!(&m.payload[..], p.as_bytes());
        }
    }
    // What survived is durable from now on, acknowledged or not.
    expected.queued = present;
    let last = report.last_seq;
    store.close().expect("close");
    last
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = common::TempDir::new("crash");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = Rng(0x6a65_746d_7121);
    let mut expected = Expected::default();
    let mut floor = 0;
    let mut acknowledged = 0;
    let mut kills = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Most kills land while writes are in flight; one in four may land during start-up
        // and recovery.
        let mut early = Vec::new();
        if round % 4 != 3 {
            loop {
                match rx.recv_timeout(Duration::from_secs(60)) {
                    Ok(line) if line.ends_with("OPEN") => {
                        early.push(line);
                        break;
                    }
                    Ok(line) => early.push(line),
                    Err(e) => panic!("round {round}: the child did not open the store: {e}"),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(
            !status.success(),
            "round {round}: the child exited by itself"
        );
        kills += 1;
        reader.join().expect("reader");
        early.extend(rx.try_iter());
        for line in &early {
            acknowledged += expected.take(line, floor);
        }
        let opened = early.iter().any(|l| l.ends_with("OPEN"));
        floor = verify(&dir, &mut expected, round, opened);
    }
    eprintln!(
        "{kills} kills, {acknowledged} acknowledged operations, {} messages kept",
        expected.queued.len()
    );
    assert!(kills >= 20);
    assert!(
        acknowledged > 200,
        "only {acknowledged} acknowledged operations over {kills} kills"
    );
}
