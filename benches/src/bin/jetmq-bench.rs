//! `jetmq-bench`: load for any MQTT broker, in raw MQTT over tokio, with results as a line of
//! text or JSON. `jetmq-bench --help` lists the scenarios and options.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use jetmq_benches::load::{self, Scenario};
use jetmq_core::codec::QoS;

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
}

/// Load generator for MQTT brokers.
#[derive(Debug, Parser)]
#[command(version, about)]
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
    /// QoS 0, 1 or 2.
    #[arg(long, default_value_t = 0)]
    qos: u8,
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
    /// The broker's process id, to report its memory (idle).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Print the result as JSON instead of a line of text.
    #[arg(long)]
    json: bool,
}

async fn run(cli: &Cli, qos: QoS) -> std::io::Result<serde_json::Value> {
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
        return Ok(out);
    }
    let (publishers, subscribers) = match cli.shape {
        Shape::FanIn => (cli.clients, 1),
        Shape::FanOut => (1, cli.clients),
        Shape::OneToOne | Shape::Idle => (1, 1),
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
        progress: !cli.json,
    };
    let report = load::run(&scenario).await?;
    Ok(serde_json::json!({
        "shape": format!("{:?}", cli.shape),
        "qos": cli.qos,
        "payload": cli.payload,
        "publishers": publishers,
        "subscribers": subscribers,
        "rate": cli.rate,
        "report": report,
    }))
}

#[allow(clippy::print_stdout)] // the report is the command's output
fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(qos) = QoS::from_u8(cli.qos) else {
        eprintln!("jetmq-bench: --qos must be 0, 1 or 2");
        return ExitCode::from(2);
    };
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
    match runtime.block_on(run(&cli, qos)) {
        Ok(json) if cli.json => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(json) => {
            match json.get("report") {
                Some(r) => println!(
                    "{:?} QoS {} {} B, {} -> {}: {:.0} deliveries/s, {:.0} publishes/s, latency p50 {} us, p99 {} us, p99.9 {} us, max {} us, missing {}",
                    cli.shape,
                    cli.qos,
                    cli.payload,
                    json["publishers"],
                    json["subscribers"],
                    r["deliveries_per_sec"].as_f64().unwrap_or(0.0),
                    r["publishes_per_sec"].as_f64().unwrap_or(0.0),
                    r["latency_us"][0],
                    r["latency_us"][1],
                    r["latency_us"][2],
                    r["latency_us"][3],
                    r["missing"],
                ),
                None => println!("{json}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "jetmq-bench: {e} (is a broker listening on {}?)",
                cli.broker
            );
            ExitCode::FAILURE
        }
    }
}
