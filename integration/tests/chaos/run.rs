//! A chaos run of a fleet: three jetmq nodes (two on tokio, one on mio, each a process of its
//! own) on a three-node nats-server JetStream cluster with R3 streams, each node's NATS
//! connections through a proxy of its own; 57 clients; faults from the seed's schedule; a
//! drain with every fault healed; the history checked.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use jetmq_core::codec::QoS;
use tokio::sync::{watch, Mutex};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::checker::{self, FOUND_HOLES, KNOWN_HOLES};
use super::client::{self, Ctx, Phase, Profile, Publishing, Role};
use super::faults::{self, Fault, Targets};
use super::history::{secs, History, Op, HARNESS};
use super::procs::{Cluster, Node};
use super::proxy::ProxyGroup;
use super::rng::Rng;
use crate::common::nats_server::{free_ports, jetmq_url};
use crate::common::{Shell, TempDir};

/// How a run is set: from `JETMQ_CHAOS_SECS` (the length of the chaos phase; set, it is a
/// long run: faults drawn at random, overlapping) and `JETMQ_CHAOS_SEED`.
pub(crate) struct Settings {
    pub(crate) seed: u64,
    pub(crate) chaos: Duration,
    pub(crate) long: bool,
    /// `JETMQ_CHAOS_HISTORY`: a file to write the whole history to.
    pub(crate) history_file: Option<String>,
    /// `JETMQ_CHAOS_STRICT=1`: the holes this harness found fail the run too.
    pub(crate) strict: bool,
}

/// The chaos phase of a short run (the one `cargo test` runs).
const SHORT: Duration = Duration::from_secs(40);
/// JetStream's redelivery wait for what a consumer handed out (`[nats] ack_wait_secs`): a
/// killed node's unacknowledged messages come back after it.
const ACK_WAIT_SECS: u64 = 10;
/// The longest drain of a short run: past the ack wait, the sessions' resume, and a little
/// more (what is still owed then is lost).
const DRAIN: Duration = Duration::from_secs(24);
/// The longest drain of a long run.
const LONG_DRAIN: Duration = Duration::from_secs(60);
/// How much longer than the drain a client may take to connect, or a publish to be resolved.
const LIVENESS: Duration = Duration::from_secs(15);

impl Settings {
    pub(crate) fn from_env() -> Self {
        let secs = std::env::var("JETMQ_CHAOS_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let seed = std::env::var("JETMQ_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                (t.as_nanos() as u64) % 1_000_000_000
            });
        Self {
            seed,
            chaos: secs.map_or(SHORT, Duration::from_secs),
            long: secs.is_some(),
            history_file: std::env::var("JETMQ_CHAOS_HISTORY").ok(),
            strict: std::env::var("JETMQ_CHAOS_STRICT").is_ok_and(|v| v == "1"),
        }
    }
}

fn t_topics() -> Vec<String> {
    (0..6).map(|i| format!("chaos/t/{i}")).collect()
}

/// The clients of a run (their scripts are drawn from the seed as they run).
pub(crate) fn profiles() -> Vec<Profile> {
    let base = |id: String, role: Role, v5: bool, persistent: bool| Profile {
        id,
        role,
        v5,
        persistent,
        subs: Vec::new(),
        churn: Vec::new(),
        churn_qos: QoS::AtLeastOnce,
        publish: None,
        will: false,
        clean_start_chance: 0.0,
        lifetime_ms: (2_000, 8_000),
        offline_ms: (100, 2_000),
        long_offline_chance: 0.0,
        abrupt_chance: 0.3,
        unacked_drop_chance: 0.0,
    };
    let mut all = Vec::new();
    // Publishers: every topic, QoS 0/1/2, half of them with persistent sessions (their
    // unacknowledged publishes go again with DUP on resume), the others clean (they give them
    // up).
    for i in 0..10 {
        let mut topics = t_topics();
        topics.extend((0..2).map(|k| format!("chaos/s/{k}")));
        let persistent = i % 3 != 0;
        all.push(Profile {
            publish: Some(Publishing {
                topics,
                qos: vec![
                    (QoS::AtMostOnce, 1),
                    (QoS::AtLeastOnce, 3),
                    (QoS::ExactlyOnce, 2),
                ],
                retain: false,
                delete_chance: 0.0,
                interval_ms: (250, 700),
                window: if persistent { 4 } else { 2 },
            }),
            lifetime_ms: (3_000, 10_000),
            offline_ms: (100, 1_500),
            ..base(format!("pub-{i}"), Role::Publisher, i % 2 == 0, persistent)
        });
    }
    // Retained publishers: two topics each, one message in flight at a time, deletes too.
    for i in 0..3 {
        all.push(Profile {
            publish: Some(Publishing {
                topics: (0..2).map(|k| format!("chaos/r/{i}/{k}")).collect(),
                qos: vec![
                    (QoS::AtMostOnce, 1),
                    (QoS::AtLeastOnce, 3),
                    (QoS::ExactlyOnce, 1),
                ],
                retain: true,
                delete_chance: 0.15,
                interval_ms: (400, 1_200),
                window: 1,
            }),
            ..base(format!("ret-{i}"), Role::RetainedPublisher, i != 1, i != 0)
        });
    }
    // Persistent subscribers: one wildcard filter, or exact topics that come and go.
    for i in 0..14 {
        let mut p = Profile {
            long_offline_chance: 0.1,
            unacked_drop_chance: 0.01,
            offline_ms: (100, 3_000),
            ..base(format!("psub-{i}"), Role::PersistentSub, i % 2 == 1, true)
        };
        match i % 4 {
            0 => p.subs = vec![("chaos/t/#".into(), QoS::AtLeastOnce)],
            1 => p.subs = vec![("chaos/t/#".into(), QoS::ExactlyOnce)],
            2 => p.subs = vec![("chaos/t/+".into(), QoS::ExactlyOnce)],
            _ => {
                let q = if i % 8 == 3 {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                };
                p.subs = vec![("chaos/t/0".into(), q), ("chaos/t/1".into(), q)];
                p.churn = t_topics();
                p.churn_qos = q;
            }
        }
        all.push(p);
    }
    // Persistent subscribers of the retained topics.
    for i in 0..2 {
        all.push(Profile {
            subs: vec![("chaos/r/#".into(), QoS::AtLeastOnce)],
            ..base(format!("rsub-{i}"), Role::PersistentSub, i == 0, true)
        });
    }
    // Clean subscribers: their session lasts one connection.
    for i in 0..8 {
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i % 3];
        all.push(Profile {
            subs: vec![("chaos/t/#".into(), qos)],
            lifetime_ms: (5_000, 20_000),
            offline_ms: (100, 1_000),
            ..base(format!("csub-{i}"), Role::CleanSub, i % 2 == 0, false)
        });
    }
    // Shared subscriptions: two groups of four persistent members.
    for i in 0..8 {
        let (group, qos) = if i < 4 {
            ("g1", QoS::ExactlyOnce)
        } else {
            ("g2", QoS::AtLeastOnce)
        };
        all.push(Profile {
            subs: vec![(format!("$share/{group}/chaos/s/#"), qos)],
            lifetime_ms: (3_000, 10_000),
            ..base(
                format!("share-{group}-{i}"),
                Role::SharedSub,
                i % 2 == 0,
                true,
            )
        });
    }
    // Wills: clean sessions, each connection with a will of its own.
    for i in 0..6 {
        all.push(Profile {
            will: true,
            lifetime_ms: (1_000, 4_000),
            offline_ms: (200, 1_000),
            ..base(format!("will-{i}"), Role::WillClient, i % 2 == 0, false)
        });
    }
    for i in 0..2 {
        all.push(Profile {
            subs: vec![("chaos/will/#".into(), QoS::AtLeastOnce)],
            ..base(format!("wwatch-{i}"), Role::WillWatcher, i == 0, true)
        });
    }
    // Movers: persistent sessions that sometimes start afresh.
    for i in 0..4 {
        all.push(Profile {
            subs: vec![(format!("chaos/t/{i}"), QoS::AtLeastOnce)],
            clean_start_chance: 0.3,
            lifetime_ms: (2_000, 6_000),
            ..base(format!("mover-{i}"), Role::Mover, i % 2 == 0, true)
        });
    }
    all
}

/// Runs the fleet's chaos test.
pub(crate) async fn fleet(settings: Settings) {
    let rng = Rng::new(settings.seed);
    let schedule = faults::schedule(&mut rng.fork(1), settings.chaos, settings.long);
    let profiles = profiles();
    let header = header(&settings, &schedule, profiles.len());
    eprintln!("{header}");

    let began = Instant::now();
    let run_dir = TempDir::new("chaos");
    let cluster = Cluster::start("chaos", 3).await;
    let nats_ports = cluster.ports.clone();
    let mut proxies = Vec::new();
    for i in 0..3 {
        let targets: Vec<u16> = (0..3).map(|k| nats_ports[(i + k) % 3]).collect();
        proxies.push(ProxyGroup::start(&targets).await);
    }
    let proxies = Arc::new(proxies);
    let mqtt_ports = free_ports(3);
    let shells = [Shell::Tokio, Shell::Tokio, Shell::Mio];
    let nodes: Arc<Vec<Mutex<Node>>> = Arc::new(
        (0..3)
            .map(|i| {
                let urls = proxies[i]
                    .ports
                    .iter()
                    .map(|p| jetmq_url(*p))
                    .collect::<Vec<_>>()
                    .join(",");
                let toml = format!(
                    "[nats]\nurl = \"{urls}\"\nreplicas = 3\nack_wait_secs = {ACK_WAIT_SECS}\n"
                );
                Mutex::new(Node::new(
                    &format!("j{i}"),
                    shells[i],
                    mqtt_ports[i],
                    toml,
                    run_dir.0.join(format!("j{i}.log")),
                ))
            })
            .collect(),
    );
    let history = Arc::new(History::new(Instant::now()));
    for node in nodes.iter() {
        faults::restart(node, &history).await;
    }
    let cluster = Arc::new(Mutex::new(cluster));

    let (phase_tx, phase_rx) = watch::channel(Phase::Chaos);
    let (rejoin_tx, rejoin_rx) = watch::channel(0u32);
    let ctx = Ctx {
        history: Arc::clone(&history),
        ports: Arc::new(mqtt_ports.clone()),
        phase: phase_rx,
        rejoin: rejoin_rx,
        ids: Arc::new(AtomicU64::new(1)),
    };
    let clients: Vec<_> = profiles
        .iter()
        .enumerate()
        .map(|(i, p)| {
            tokio::spawn(client::run(
                i,
                p.clone(),
                ctx.clone(),
                rng.fork(1_000 + i as u64),
            ))
        })
        .collect();

    let set_up = began.elapsed();
    // Chaos.
    history.log(HARNESS, Op::Phase { name: "chaos" });
    let chaos_start = Instant::now();
    let targets = Targets {
        nodes: Arc::clone(&nodes),
        cluster: Arc::clone(&cluster),
        proxies: Arc::clone(&proxies),
        history: Arc::clone(&history),
    };
    tokio::join!(
        faults::inject(schedule.clone(), chaos_start, targets),
        sleep_until(chaos_start + settings.chaos)
    );
    // Every fault is healed; every node serves.
    for node in nodes.iter() {
        let up = client::probe(node.lock().await.port).await;
        if !up {
            faults::restart(node, &history).await;
        }
    }

    let chaos_took = chaos_start.elapsed();
    // Drain: nothing new is published, every client connects and stays; wait until every
    // owed delivery is made (or the drain's time is up: then they are losses).
    history.log(HARNESS, Op::Phase { name: "drain" });
    phase_tx.send_replace(Phase::Drain);
    // Past the ack wait, sessions still owed something leave and resume once: JetStream
    // hands a consumer's unacknowledged messages out again only after the ack wait, and a node
    // reads a session's consumer when it loads the session.
    let drain_start = Instant::now();
    let mut rejoined: Option<usize> = None;
    let drain = if settings.long { LONG_DRAIN } else { DRAIN };
    let (disconnected, in_flight, pending) = loop {
        sleep(Duration::from_millis(500)).await;
        let a = checker::analyze(&history.snapshot(), &profiles, None);
        let live = a.disconnected == 0 && a.in_flight == 0;
        let waited = drain_start.elapsed();
        // Past the drain's time what is owed is lost; every client must be connected and every
        // publish resolved all the same (a connect under way at that moment gets its time).
        if (live && a.pending == 0 && waited > Duration::from_secs(2))
            || (live && waited > drain)
            || waited > drain + LIVENESS
        {
            break (a.disconnected, a.in_flight, a.pending);
        }
        if rejoined.is_none()
            && a.pending > 0
            && drain_start.elapsed() > Duration::from_secs(ACK_WAIT_SECS + 3)
        {
            history.log(HARNESS, Op::Phase { name: "rejoin" });
            rejoined = Some(a.pending);
            rejoin_tx.send_modify(|n| *n += 1);
        }
    };
    let drained_in = drain_start.elapsed();
    let cutoff = history.now();
    history.log(HARNESS, Op::Phase { name: "end" });

    // Retained messages: every node converges to an allowed value.
    let expected = checker::analyze(&history.snapshot(), &profiles, Some(cutoff)).retained;
    let retained_deadline = Instant::now() + Duration::from_secs(20);
    let mut retained_problems;
    let mut round = 0;
    loop {
        round += 1;
        retained_problems = Vec::new();
        let mut views = Vec::new();
        for (i, port) in mqtt_ports.iter().enumerate() {
            match client::read_retained(
                *port,
                &format!("chaos-retained-{i}-{round}"),
                "chaos/r/#",
                Duration::from_millis(1_000),
            )
            .await
            {
                Ok(view) => views.push(view),
                Err(e) => retained_problems.push(format!("j{i} could not be read: {e}")),
            }
        }
        if retained_problems.is_empty() {
            let mut topics: std::collections::BTreeSet<String> = expected.keys().cloned().collect();
            for view in &views {
                topics.extend(view.keys().cloned());
            }
            for topic in topics {
                let values: Vec<Option<u64>> = views
                    .iter()
                    .map(|v| {
                        v.get(&topic)
                            .map(|p| client::parse_payload(p).unwrap_or(u64::MAX))
                    })
                    .collect();
                let allowed = expected.get(&topic).cloned().unwrap_or_else(|| vec![None]);
                let fits = values.iter().all(|v| allowed.contains(v));
                let agree = values.windows(2).all(|w| w[0] == w[1]);
                if !fits || !agree {
                    retained_problems.push(format!(
                        "{topic}: nodes hold {values:?} (m-ids, None: no retained message), \
                         allowed {allowed:?}"
                    ));
                }
            }
        }
        if retained_problems.is_empty() || Instant::now() > retained_deadline {
            break;
        }
        sleep(Duration::from_millis(500)).await;
    }

    // Stop.
    phase_tx.send_replace(Phase::Stop);
    for c in clients {
        let abort = c.abort_handle();
        if timeout(Duration::from_secs(10), c).await.is_err() {
            abort.abort();
        }
    }
    let events = history.snapshot();
    if let Some(path) = &settings.history_file {
        let text: String = events.iter().map(|e| format!("{e:?}\n")).collect();
        let _ = std::fs::write(path, text);
    }
    let analysis = checker::analyze(&events, &profiles, Some(cutoff));
    let mut report = format!(
        "{header}\n{}times: set-up {:.1}s, chaos {:.1}s, drain {:.1}s, all {:.1}s (at the \
         drain's end: {disconnected} clients without a connection, {in_flight} publishes \
         unresolved, {pending} deliveries owed{})\nretained: {}\n",
        analysis.summary,
        set_up.as_secs_f64(),
        chaos_took.as_secs_f64(),
        drained_in.as_secs_f64(),
        began.elapsed().as_secs_f64(),
        match rejoined {
            Some(n) => format!(
                "; {n} owed deliveries had not come 3 s after the ack wait ({ACK_WAIT_SECS} s), \
                 so persistent sessions left and resumed once"
            ),
            None => String::new(),
        },
        if retained_problems.is_empty() {
            format!("{} topics converged on every node", expected.len())
        } else {
            format!("NOT converged: {retained_problems:#?}")
        }
    );
    let known: Vec<_> = analysis
        .violations
        .iter()
        .filter(|v| v.hole.is_some())
        .collect();
    if !known.is_empty() {
        report.push_str(&format!(
            "known holes observed ({} violations, report only):\n",
            known.len()
        ));
        for (name, what) in KNOWN_HOLES.iter().chain(FOUND_HOLES) {
            let n = known.iter().filter(|v| v.hole == Some(name)).count();
            if n > 0 {
                report.push_str(&format!("  {name} x{n}: {what}\n"));
                for v in known.iter().filter(|v| v.hole == Some(name)).take(5) {
                    report.push_str(&format!("    [{}] {}\n", v.check, v.detail));
                }
            }
        }
    }
    let hard = analysis.hard(settings.strict);
    let stuck = disconnected > 0 || in_flight > 0;
    if !hard.is_empty() {
        report.push_str(&format!("VIOLATIONS ({}):\n", hard.len()));
        // A few of each kind.
        let mut shown: std::collections::BTreeMap<&str, usize> = Default::default();
        for v in &hard {
            let n = shown.entry(v.check).or_default();
            *n += 1;
            if *n <= 8 {
                report.push_str(&format!("  [{}] {}\n", v.check, v.detail));
            }
        }
        for (check, n) in shown.iter().filter(|(_, n)| **n > 8) {
            report.push_str(&format!("  [{check}] ... {} more\n", n - 8));
        }
    }
    eprintln!("{report}");
    if !hard.is_empty() || !retained_problems.is_empty() || stuck {
        let mut logs = String::new();
        for node in nodes.iter() {
            let n = node.lock().await;
            logs.push_str(&format!(
                "--- {} ({} starts) ---\n{}\n",
                n.name,
                n.incarnations,
                n.log_tail(15)
            ));
        }
        panic!(
            "the chaos run failed; re-run it with JETMQ_CHAOS_SEED={}{} \
             (history: JETMQ_CHAOS_HISTORY=<file>)\n{report}\n{logs}",
            settings.seed,
            if settings.long {
                format!(" JETMQ_CHAOS_SECS={}", settings.chaos.as_secs())
            } else {
                String::new()
            }
        );
    }
    drop(nodes);
    drop(proxies);
    drop(cluster);
    drop(run_dir);
}

fn header(settings: &Settings, schedule: &[Fault], clients: usize) -> String {
    let mut s = format!(
        "chaos run: seed {} ({} mode, chaos phase {}s), {clients} clients, jetmq j0 tokio, j1 \
         tokio, j2 mio; nats-server n0..n2, R3 streams; fault schedule:\n",
        settings.seed,
        if settings.long { "long" } else { "short" },
        settings.chaos.as_secs()
    );
    for f in schedule {
        s.push_str(&format!("  {f}\n"));
    }
    let _ = secs;
    s
}
