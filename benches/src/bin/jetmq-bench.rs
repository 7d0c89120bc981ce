//! `jetmq-bench`: load for any MQTT broker, in raw MQTT over tokio, with results as a line of
//! text or JSON. `jetmq-bench --help` lists the scenarios and options.
//!
//! A QoS 1 or 2 run in which an expected delivery never arrived has no figure: it exits with
//! [`LOST`] and says how many deliveries were lost.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use jetmq_benches::load::slow::{SlowReport, SlowScenario};
use jetmq_benches::load::{self, Report, Scenario};
use jetmq_core::codec::QoS;

/// The exit status of a QoS 1/2 run that lost deliveries (1: the run could not be made; 2: a
/// bad command line).
const LOST: u8 = 3;

/// The shape of the load.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Shape {
    /// One publisher, one subscriber.
    OneToOne,
    /// `--clients` publishers, one subscriber.
    FanIn,
    /// One publisher, `--clients` subscribers.
    FanOut,
    /// `--clients` idle subscribed connections; reports the broker's memory per connection.
    Idle,
    /// One publisher sending `--messages` QoS 1/2 messages to `--fast` subscribers that read as
    /// fast as they can and one that reads and acknowledges `--slow-rate` messages per second;
    /// reports what each received by `--deadline` and the publisher's rate.
    SlowSubscriber,
}

/// Load generator for MQTT brokers.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit status: 0 done; 1 the run could not be made; 2 a bad command line; 3 a QoS 1/2 \
                  run lost deliveries (it has no figure: the JSON holds `lost` and the counts, not \
                  the rates; a slow-subscriber run still reports what arrived)."
)]
struct Cli {
    /// The broker's address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: SocketAddr,
    /// The scenario.
    #[arg(long, value_enum, default_value = "one-to-one")]
    shape: Shape,
    /// Connections on the "many" side of fan-in, fan-out and idle.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// QoS 0, 1 or 2 [default: 1 for slow-subscriber, 0 otherwise].
    #[arg(long)]
    qos: Option<u8>,
    /// Payload bytes (8 or more: they carry the send time).
    #[arg(long, default_value_t = 16)]
    payload: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Messages per second over all publishers (open loop); default: as fast as possible.
    #[arg(long)]
    rate: Option<u64>,
    /// QoS 1/2 publishes in flight per publisher.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Subscribers use persistent sessions.
    #[arg(long)]
    persistent: bool,
    /// Subscribers read as an ordinary client library does: every packet decoded whole into an
    /// owned message, every acknowledgement its own write (not the fast reader that takes
    /// deliveries off the read buffer).
    #[arg(long)]
    decoding: bool,
    /// slow-subscriber: messages the publisher sends.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// slow-subscriber: the subscribers that read as fast as they can.
    #[arg(long, default_value_t = 2)]
    fast: usize,
    /// slow-subscriber: messages per second the slow subscriber reads and acknowledges.
    #[arg(long, default_value_t = 4_000)]
    slow_rate: u64,
    /// slow-subscriber: seconds from the first publish after which the run reports what
    /// arrived.
    #[arg(long, default_value_t = 30)]
    deadline: u64,
    /// The broker's process id, to report its memory (idle, slow-subscriber).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Print the result as JSON instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// The outcome of a run.
struct Outcome {
    /// The result as JSON.
    json: serde_json::Value,
    /// The result as text (none for a run that lost deliveries and has no figure).
    text: Option<String>,
    /// Why the run failed: QoS 1/2 deliveries lost.
    lost: Option<String>,
}

async fn run(cli: &Cli, qos: QoS) -> std::io::Result<Outcome> {
    if let Shape::Idle = cli.shape {
        let before = cli.broker_pid.and_then(load::rss_kib);
        let conns = load::idle(cli.broker, cli.clients, !cli.json).await?;
        let after = cli.broker_pid.and_then(load::rss_kib);
        let per = match (before, after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 * 1024.0 / cli.clients as f64),
            _ => None,
        };
        let out = serde_json::json!({
            "shape": "idle",
            "connections": conns.len(),
            "broker_rss_kib_before": before,
            "broker_rss_kib_after": after,
            "bytes_per_connection": per,
        });
        drop(conns);
        return Ok(Outcome {
            text: Some(out.to_string()),
            json: out,
            lost: None,
        });
    }
    if let Shape::SlowSubscriber = cli.shape {
        let scenario = SlowScenario {
            addr: cli.broker,
            messages: cli.messages,
            fast: cli.fast,
            slow_rate: cli.slow_rate.max(1),
            qos,
            payload: cli.payload,
            window: cli.window.max(1),
            deadline: Duration::from_secs(cli.deadline),
            broker_pid: cli.broker_pid,
            progress: !cli.json,
            persistent: cli.persistent,
        };
        let report = load::slow::run(&scenario).await?;
        let lost = (report.lost > 0).then(|| slow_loss(&report));
        return Ok(Outcome {
            text: Some(slow_lines(cli, qos, &report)),
            json: serde_json::json!({
                "shape": "slow-subscriber",
                "qos": qos as u8,
                "payload": cli.payload,
                "messages": cli.messages,
                "fast": cli.fast,
                "slow_rate": cli.slow_rate,
                "deadline_s": cli.deadline,
                "report": report,
            }),
            lost,
        });
    }
    let (publishers, subscribers) = match cli.shape {
        Shape::FanIn => (cli.clients, 1),
        Shape::FanOut => (1, cli.clients),
        Shape::OneToOne | Shape::Idle | Shape::SlowSubscriber => (1, 1),
    };
    let scenario = Scenario {
        addr: cli.broker,
        publishers,
        subscribers,
        qos,
        payload: cli.payload,
        duration: Duration::from_secs(cli.seconds),
        rate: cli.rate,
        window: cli.window.max(1),
        persistent: cli.persistent,
        decoding: cli.decoding,
        progress: !cli.json,
    };
    let report = load::run(&scenario).await?;
    let lost = report.lost(qos);
    let mut json = serde_json::json!({
        "shape": format!("{:?}", cli.shape),
        "qos": qos as u8,
        "payload": cli.payload,
        "publishers": publishers,
        "subscribers": subscribers,
        "rate": cli.rate,
        "decoding": cli.decoding,
    });
    let Some(lost) = lost else {
        json["report"] = serde_json::to_value(&report).unwrap_or_default();
        return Ok(Outcome {
            text: Some(line(cli, qos, &json, &report)),
            json,
            lost: None,
        });
    };
    // No figure for a run that lost acknowledged messages: the counts only.
    let expected = report.published * subscribers as u64;
    json["lost"] = lost.into();
    json["published"] = report.published.into();
    json["acknowledged"] = report.acknowledged.into();
    json["expected"] = expected.into();
    json["received"] = report.received.into();
    let all = if report.acknowledged == report.published {
        " (all of them)"
    } else {
        ""
    };
    Ok(Outcome {
        json,
        text: None,
        lost: Some(format!(
            "{lost} of {expected} expected QoS {} deliveries never arrived; the broker acknowledged \
             {} of {} publishes{all}. This run has no figure.",
            qos as u8, report.acknowledged, report.published,
        )),
    })
}

/// What a slow-subscriber run lost.
fn slow_loss(r: &SlowReport) -> String {
    format!(
        "{} deliveries of messages the broker acknowledged never arrived (slow subscriber {} of {}, \
         fast subscribers {} of {})",
        r.lost,
        r.slow.expected - r.slow.delivered,
        r.slow.expected,
        r.fast.iter().map(|d| d.expected - d.delivered).sum::<u64>(),
        r.fast.iter().map(|d| d.expected).sum::<u64>(),
    )
}

/// The line of text for a run without loss.
fn line(cli: &Cli, qos: QoS, json: &serde_json::Value, r: &Report) -> String {
    format!(
        "{:?}{} QoS {} {} B, {} -> {}: {:.0} deliveries/s (last at {:.1} s), {:.0} publishes/s, latency p50 {} us, p99 {} us, p99.9 {} us, max {} us, missing {}",
        cli.shape,
        if cli.decoding { " (decoding)" } else { "" },
        qos as u8,
        cli.payload,
        json["publishers"],
        json["subscribers"],
        r.deliveries_per_sec,
        r.delivery_s,
        r.publishes_per_sec,
        r.latency_us[0],
        r.latency_us[1],
        r.latency_us[2],
        r.latency_us[3],
        r.missing,
    )
}

/// The lines of text for a slow-subscriber run.
fn slow_lines(cli: &Cli, qos: QoS, r: &SlowReport) -> String {
    let fast: Vec<String> = r
        .fast
        .iter()
        .map(|d| format!("{}/{}", d.delivered, d.expected))
        .collect();
    let mut out = format!(
        "SlowSubscriber QoS {} {} B, 1 -> {} fast + 1 at {}/s: publisher {}/{} acknowledged at {:.0}/s in {:.2} s; slow subscriber {}/{}{}; fast {}; {:.1} s{}",
        qos as u8,
        cli.payload,
        r.fast.len(),
        cli.slow_rate,
        r.acknowledged,
        r.published,
        r.publishes_per_sec,
        r.publish_s,
        r.slow.delivered,
        r.slow.expected,
        r.slow
            .last_delivery_s
            .map(|s| format!(" (last at {s:.2} s)"))
            .unwrap_or_default(),
        fast.join(", "),
        r.run_s,
        if r.deadline_reached { " (deadline)" } else { "" },
    );
    if let Some(kib) = r.broker_peak_rss_kib {
        out.push_str(&format!("; broker peak RSS {:.1} MiB", kib as f64 / 1024.0));
    }
    for (name, d) in r
        .fast
        .iter()
        .map(|d| ("fast", d))
        .chain([("slow", &r.slow)])
    {
        if d.duplicates > 0 || d.out_of_order > 0 || d.disconnected {
            out.push_str(&format!(
                "\n  a {name} subscriber: {} duplicates, {} out of order{}",
                d.duplicates,
                d.out_of_order,
                if d.disconnected {
                    ", disconnected by the broker"
                } else {
                    ""
                },
            ));
        }
    }
    out
}

#[allow(clippy::print_stdout)] // the report is the command's output
fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_qos = match cli.shape {
        Shape::SlowSubscriber => 1,
        _ => 0,
    };
    let Some(qos) = QoS::from_u8(cli.qos.unwrap_or(default_qos)) else {
        eprintln!("jetmq-bench: --qos must be 0, 1 or 2");
        return ExitCode::from(2);
    };
    if matches!(cli.shape, Shape::SlowSubscriber) && qos == QoS::AtMostOnce {
        eprintln!("jetmq-bench: slow-subscriber measures QoS 1 or 2");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jetmq-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match runtime.block_on(run(&cli, qos)) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!(
                "jetmq-bench: {e} (is a broker listening on {}?)",
                cli.broker
            );
            return ExitCode::FAILURE;
        }
    };
    if cli.json {
        println!("{}", outcome.json);
    } else if let Some(text) = &outcome.text {
        println!("{text}");
    }
    match outcome.lost {
        None => ExitCode::SUCCESS,
        Some(lost) => {
            eprintln!("jetmq-bench: LOST: {lost}");
            ExitCode::from(LOST)
        }
    }
}
