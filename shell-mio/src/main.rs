//! `jetmq-mio`: the jetmq broker on one mio event loop, configured like `jetmq`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use jetmq::config::{CommandLine, ServerConfig};

/// jetmq on a mio event loop: an MQTT 3.1.1 and 5.0 broker with a deterministic core.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to serve MQTT over TCP on; repeat for several. Default 127.0.0.1:1883.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<String>,
    /// Directory for the embedded store. Default ./jetmq-data.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file (the format of `jetmq`); command-line options override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: String,
    /// Log client identifiers and topics, which are personal data and redacted by default.
    #[arg(long)]
    log_pii: bool,
    /// Record every broker input to FILE, so `jetmq replay FILE` can re-run it exactly.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match ServerConfig::load(&CommandLine {
        config: cli.config,
        listen: cli.listen,
        data_dir: cli.data_dir,
        record: cli.record,
        log_pii: cli.log_pii,
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jetmq-mio: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match jetmq::store::open(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("jetmq-mio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match jetmq_mio::spawn(config, store) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jetmq-mio: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SIGINT or SIGTERM stops the loop gracefully.
    let stopper = running.stopper();
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]);
    match signals {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    tracing::info!("shutting down");
                    stopper.stop();
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot catch SIGINT/SIGTERM"),
    }
    match running.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jetmq-mio: {e}");
            ExitCode::FAILURE
        }
    }
}
