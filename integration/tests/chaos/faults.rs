//! The fault schedule (drawn from the seed before the run starts, so a seed names it exactly)
//! and its injection.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::{sleep, sleep_until, Instant};

use super::client::probe;
use super::history::{History, Op, HARNESS};
use super::procs::{Cluster, Node};
use super::proxy::{Mode, ProxyGroup};
use super::rng::Rng;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// SIGKILL of a jetmq node, restarted after the hold.
    JetmqKill,
    /// A jetmq node stopped gracefully, restarted after the hold.
    JetmqStop,
    /// SIGKILL of a nats-server, restarted (same ports and files) after the hold.
    NatsKill,
    /// SIGSTOP of a nats-server, SIGCONT after the hold.
    NatsPause,
    /// Every NATS connection of a jetmq node closed at once (it reconnects at once).
    LinkCut,
    /// Every NATS connection of a jetmq node closed, and new ones closed, for the hold.
    LinkPartition,
    /// Nothing forwarded on a jetmq node's NATS connections for the hold (they stay open).
    LinkStall,
}

impl Kind {
    pub(crate) const ALL: [Kind; 7] = [
        Kind::JetmqKill,
        Kind::JetmqStop,
        Kind::NatsKill,
        Kind::NatsPause,
        Kind::LinkCut,
        Kind::LinkPartition,
        Kind::LinkStall,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::JetmqKill => "jetmq-kill",
            Kind::JetmqStop => "jetmq-stop",
            Kind::NatsKill => "nats-kill",
            Kind::NatsPause => "nats-pause",
            Kind::LinkCut => "link-cut",
            Kind::LinkPartition => "link-partition",
            Kind::LinkStall => "link-stall",
        }
    }

    /// Faults of one class never overlap: one jetmq node down at a time, one nats-server
    /// (R3 streams keep a quorum), one node's link.
    fn class(self) -> u8 {
        match self {
            Kind::JetmqKill | Kind::JetmqStop => 0,
            Kind::NatsKill | Kind::NatsPause => 1,
            _ => 2,
        }
    }

    /// Whether the target is a nats-server (else a jetmq node).
    pub(crate) fn targets_nats(self) -> bool {
        self.class() == 1
    }

    /// How long the fault holds, from `rng`: short runs keep to the low end.
    fn hold(self, rng: &mut Rng, long: bool) -> Duration {
        let (lo, hi) = match (self, long) {
            (Kind::LinkCut, _) => (0, 0),
            (Kind::JetmqKill | Kind::JetmqStop, false) => (500, 1_500),
            (Kind::JetmqKill | Kind::JetmqStop, true) => (500, 10_000),
            (Kind::NatsKill, false) => (2_000, 3_000),
            (Kind::NatsKill, true) => (1_000, 15_000),
            // Past jetmq's JetStream API timeout (5 s) and its write timeout (2 s).
            (Kind::NatsPause, false) => (5_500, 6_000),
            (Kind::NatsPause, true) => (3_000, 15_000),
            (Kind::LinkPartition, false) => (2_000, 3_000),
            (Kind::LinkPartition, true) => (1_000, 12_000),
            (Kind::LinkStall, false) => (3_000, 4_000),
            (Kind::LinkStall, true) => (1_000, 12_000),
        };
        rng.millis(lo, hi)
    }
}

/// One fault: what, on which node (jetmq node or nats-server by index), when (from the start
/// of the chaos phase) and for how long.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) at: Duration,
    pub(crate) kind: Kind,
    pub(crate) target: usize,
    pub(crate) hold: Duration,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = if self.kind.targets_nats() {
            format!("nats n{}", self.target)
        } else {
            format!("jetmq j{}", self.target)
        };
        write!(
            f,
            "{:>7.2}s {:<15} {:<9} hold {:.2}s",
            self.at.as_secs_f64(),
            self.kind.name(),
            target,
            self.hold.as_secs_f64()
        )
    }
}

/// The faults of a chaos phase of `length`, from `rng`. A short run injects every kind once,
/// in an order and on targets drawn from the seed, one after another; a long run draws kinds
/// at random and sometimes overlaps two faults of different classes.
pub(crate) fn schedule(rng: &mut Rng, length: Duration, long: bool) -> Vec<Fault> {
    let mut faults = Vec::new();
    let mut t = Duration::from_secs(3);
    let end = length.saturating_sub(Duration::from_secs(2));
    let mut kinds: Vec<Kind> = Kind::ALL.to_vec();
    // Fisher-Yates: the order of a short run's faults.
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i + 1));
    }
    let mut next = 0;
    loop {
        let kind = if long {
            rng.weighted(&[
                (Kind::JetmqKill, 3),
                (Kind::JetmqStop, 1),
                (Kind::NatsKill, 2),
                (Kind::NatsPause, 2),
                (Kind::LinkCut, 1),
                (Kind::LinkPartition, 2),
                (Kind::LinkStall, 2),
            ])
        } else {
            match kinds.get(next) {
                Some(k) => *k,
                None => break,
            }
        };
        next += 1;
        let hold = kind.hold(rng, long);
        if t + hold > end {
            break;
        }
        let target = rng.below(3);
        faults.push(Fault {
            at: t,
            kind,
            target,
            hold,
        });
        // Sometimes a second fault of another class during the first.
        if long && rng.chance(0.25) && !hold.is_zero() {
            let other = loop {
                let k = Kind::ALL[rng.below(Kind::ALL.len())];
                if k.class() != kind.class() {
                    break k;
                }
            };
            let offset = rng.millis(0, u64::try_from(hold.as_millis()).unwrap_or(0));
            let hold2 = other.hold(rng, long).min(end.saturating_sub(t + offset));
            faults.push(Fault {
                at: t + offset,
                kind: other,
                target: rng.below(3),
                hold: hold2,
            });
            t += offset + hold2.max(hold - offset.min(hold));
        } else {
            t += hold;
        }
        t += if long {
            rng.millis(2_000, 10_000)
        } else {
            rng.millis(1_000, 2_000)
        };
    }
    faults.sort_by_key(|f| f.at);
    faults
}

/// What the faults act on.
#[derive(Clone)]
pub(crate) struct Targets {
    pub(crate) nodes: Arc<Vec<Mutex<Node>>>,
    pub(crate) cluster: Arc<Mutex<Cluster>>,
    pub(crate) proxies: Arc<Vec<ProxyGroup>>,
    pub(crate) history: Arc<History>,
}

/// Injects `faults` from `start` on, each healed after its hold; returns when every fault is
/// healed and every node it restarted serves again. A fault waits for the one before it of
/// its class to be healed (a node restarting takes longer than its hold when JetStream is slow
/// to answer): one jetmq node down at a time, one nats-server, one node's link.
pub(crate) async fn inject(faults: Vec<Fault>, start: Instant, targets: Targets) {
    let classes: Arc<[Mutex<()>; 3]> = Arc::new(Default::default());
    let tasks: Vec<_> = faults
        .into_iter()
        .map(|f| {
            let targets = targets.clone();
            let classes = Arc::clone(&classes);
            tokio::spawn(async move {
                sleep_until(start + f.at).await;
                let _turn = classes[usize::from(f.kind.class())].lock().await;
                one(&f, &targets).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a fault task");
    }
}

async fn one(f: &Fault, t: &Targets) {
    let log = |heal: bool| {
        t.history.log(
            HARNESS,
            Op::Fault {
                kind: f.kind.name(),
                target: if f.kind.targets_nats() {
                    format!("n{}", f.target)
                } else {
                    format!("j{}", f.target)
                },
                heal,
            },
        );
    };
    log(false);
    match f.kind {
        Kind::JetmqKill => t.nodes[f.target].lock().await.kill(),
        Kind::JetmqStop => {
            t.nodes[f.target]
                .lock()
                .await
                .stop(Duration::from_secs(15))
                .await;
        }
        Kind::NatsKill => t.cluster.lock().await.kill(f.target),
        Kind::NatsPause => t.cluster.lock().await.pause(f.target, true),
        Kind::LinkCut => t.proxies[f.target].cut(),
        Kind::LinkPartition => t.proxies[f.target].set(Mode::Partitioned),
        Kind::LinkStall => t.proxies[f.target].set(Mode::Stalled),
    }
    sleep(f.hold).await;
    match f.kind {
        Kind::JetmqKill | Kind::JetmqStop => restart(&t.nodes[f.target], &t.history).await,
        Kind::NatsKill => t.cluster.lock().await.restart(f.target).await,
        Kind::NatsPause => t.cluster.lock().await.pause(f.target, false),
        Kind::LinkCut => {}
        Kind::LinkPartition | Kind::LinkStall => t.proxies[f.target].set(Mode::Open),
    }
    log(true);
}

/// Starts `node` again and waits until it accepts clients, starting it once more whenever its
/// process exits first (a node cannot start while it cannot read JetStream).
pub(crate) async fn restart(node: &Mutex<Node>, history: &History) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (port, name) = {
            let mut n = node.lock().await;
            n.spawn();
            (n.port, n.name.clone())
        };
        let attempt = Instant::now() + Duration::from_secs(30);
        loop {
            if probe(port).await {
                return;
            }
            let exited = {
                let mut n = node.lock().await;
                n.exited().map(|why| {
                    let said = n.log_tail(6);
                    let said: Vec<&str> =
                        said.lines().filter(|l| l.contains("chaos node")).collect();
                    (why, said.join(" / "))
                })
            };
            if let Some((why, said)) = exited {
                history.log(
                    HARNESS,
                    Op::Note {
                        text: format!("jetmq node {name} did not start ({why}): {said}"),
                    },
                );
                break;
            }
            if Instant::now() > attempt {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
        assert!(
            Instant::now() < deadline,
            "jetmq node {name} never served again: {}",
            node.lock().await.log_tail(30)
        );
        sleep(Duration::from_millis(500)).await;
    }
}
