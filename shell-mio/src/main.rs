//! `jetmq-mio`: the jetmq broker on one mio event loop, configured like `jetmq`.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser};
use jetmq_shell::config::{CommandLine, ServerConfig};
use jetmq_shell::operator::OperatorCommand;

/// jetmq on a mio event loop: an MQTT 3.1.1 and 5.0 broker with a deterministic core.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    serve: CommandLine,
    /// Without a command: serve.
    #[command(subcommand)]
    command: Option<OperatorCommand>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        return ExitCode::from(command.run(
            Cli::command(),
            &cli.serve,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        ));
    }
    cli.serve.init_logging();
    let mut config = match ServerConfig::load(&cli.serve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jetmq-mio: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match jetmq_shell::backends::open(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("jetmq-mio: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SIGINT or SIGTERM stops the loop gracefully: caught from before the first connection is
    // served, so a signal right after it is not fatal.
    // SIGHUP reloads the authentication settings (users, passwords, permissions).
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]);
    let source = config.auth_source();
    config.auth_source = Some(source.clone());
    let authenticating = config.broker.authenticate;
    let running = match jetmq_mio::spawn(config, store) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jetmq-mio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stopper = running.stopper();
    match signals {
        Ok(mut signals) => {
            let cli = cli.serve.clone();
            std::thread::spawn(move || {
                for signal in signals.forever() {
                    if signal == signal_hook::consts::SIGHUP {
                        match ServerConfig::reload_auth(&cli, &source, authenticating) {
                            Ok(done) => tracing::info!("{done}"),
                            Err(e) => tracing::warn!(
                                error = %e,
                                "reload refused: the previous settings stay"
                            ),
                        }
                        continue;
                    }
                    tracing::info!("shutting down");
                    stopper.stop();
                    break;
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot catch SIGINT/SIGTERM/SIGHUP"),
    }
    match running.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jetmq-mio: {e}");
            ExitCode::FAILURE
        }
    }
}
