//! Chaos: many clients against a fleet while faults are injected at random from a seeded
//! schedule, every operation logged as its client saw it, and the history checked against a
//! model afterwards (as Jepsen tests NATS JetStream, as FoundationDB's simulation does).
//!
//! - `chaos_fleet`: three jetmq nodes (j0, j1 on tokio, j2 on mio; each a process of its own,
//!   this test binary started again, so that a crash is a real SIGKILL) in fleet mode on a
//!   three-node nats-server JetStream cluster with R3 streams (`[nats] replicas = 3`), each
//!   node's NATS connections through a proxy of its own. 57 clients speak MQTT 3.1.1 and 5.0
//!   packet by packet (clean and persistent sessions, QoS 0/1/2, plain and shared
//!   subscriptions, retained messages and deletes, wills) and move between the nodes. Faults
//!   ([`faults::Kind`]): jetmq SIGKILL and graceful stop (each restarted), nats-server SIGKILL
//!   (restarted on its ports and files) and SIGSTOP past jetmq's timeouts (then SIGCONT), a
//!   node's NATS connections cut, partitioned or stalled. Then every fault is healed and the
//!   clients drain (connected, publishing nothing new; past the ack wait, persistent sessions
//!   resume once), and [`checker`] checks the history: what it checks is written there.
//! - `chaos_single_node_full_disk`: one jetmq node on the embedded store in a small tmpfs that
//!   fills up: refused publishes are never acknowledged, nothing acknowledged is lost through
//!   the full disk and a SIGKILL, and publishes are acknowledged again once there is room.
//!
//! Violations explained by a known fleet hole ([`checker::KNOWN_HOLES`]) or by a hole this
//! harness found ([`checker::FOUND_HOLES`], each recognised by a narrow pattern) are reported
//! and do not fail the run; any other violation does. `JETMQ_CHAOS_STRICT=1` fails on the holes
//! this harness found too (delete an entry there once its hole is fixed, so it fails again).
//!
//! A short run: a chaos phase of 40 s injecting each kind of fault once, in an order and on
//! targets drawn from a seed taken from the clock (about 50-80 s in all). `chaos_fleet` is
//! `#[ignore]`d for now, so it runs by hand:
//! `cargo test -p jetmq-integration --test chaos -- --ignored --nocapture`. Further:
//! `JETMQ_CHAOS_SECS=1800` for a long run (faults drawn at random, sometimes two at once),
//! `JETMQ_CHAOS_SEED=<n>` to run a seed's fault schedule and client scripts again (the
//! interleaving of a real cluster is not replayed: a seed names the schedule, not the run),
//! `JETMQ_CHAOS_HISTORY=<file>` to keep the whole history. Every run prints its seed and
//! schedule first and a summary last (operations, faults, losses, duplicates, resume and
//! latency percentiles by fault kind, the holes seen) with `--nocapture`; a failing run
//! prints them in its panic message, with the nodes' last log lines.

mod common;

#[path = "chaos/checker.rs"]
mod checker;
#[path = "chaos/client.rs"]
mod client;
#[path = "chaos/disk.rs"]
mod disk;
#[path = "chaos/faults.rs"]
mod faults;
#[path = "chaos/history.rs"]
mod history;
#[path = "chaos/procs.rs"]
mod procs;
#[path = "chaos/proxy.rs"]
mod proxy;
#[path = "chaos/rng.rs"]
mod rng;
#[path = "chaos/run.rs"]
mod run;

/// One chaos run at a time in this binary: each wants the machine to itself.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Not a test: the body of a jetmq node process of a chaos run (this binary, started again
/// with `JETMQ_CHAOS_NODE` set); without it, nothing.
#[test]
fn chaos_node_process() {
    if let Ok(shell) = std::env::var(procs::NODE_ENV) {
        procs::node_main(&shell);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "finds acknowledged QoS 1/2 messages lost in the fleet under faults (see the fleet holes in the issue notes); run by hand: cargo test -p jetmq-integration --test chaos -- --ignored"]
async fn chaos_fleet() {
    let _one = ONE_AT_A_TIME.lock().await;
    run::fleet(run::Settings::from_env()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_single_node_full_disk() {
    let _one = ONE_AT_A_TIME.lock().await;
    disk::full_disk(run::Settings::from_env().seed).await;
}
