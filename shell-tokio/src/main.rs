//! `jetmq`: the MQTT broker binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser};
use jetmq::config::{CommandLine, ServerConfig};
use jetmq::operator::OperatorCommand;
use jetmq::store::EmbeddedBackend;

/// jetmq: an MQTT 3.1.1 and 5.0 broker with a deterministic core.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    serve: CommandLine,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Commands other than serving.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Re-run a recording on the broker core alone and report the first step whose actions
    /// differ, or that every step was identical.
    Replay {
        /// The file written by `--record`.
        file: PathBuf,
    },
    /// Read a password from standard input and print its Argon2 hash for `[[auth.users]]`
    /// `password_hash` (or, with --scram, its SCRAM-SHA-256 credential for `scram`).
    HashPassword {
        /// Print a SCRAM-SHA-256 credential (MQTT 5.0 enhanced authentication) instead.
        #[arg(long)]
        scram: bool,
    },
    /// List or delete the sessions in the embedded store (run while the server is stopped), or
    /// in JetStream with --nats (while the servers run: a deleted session's client is
    /// disconnected).
    Sessions {
        #[command(subcommand)]
        action: SessionsCommand,
    },
    #[command(flatten)]
    Operator(OperatorCommand),
}

/// What `jetmq sessions` does.
#[derive(Debug, clap::Subcommand)]
enum SessionsCommand {
    /// Print every session: client, protocol, state, expiry, backlog and filters.
    List,
    /// Delete a session with its subscriptions, queued messages and QoS 2 state.
    Delete {
        /// The session's client identifier.
        client_id: String,
        /// The account it belongs to.
        #[arg(long, default_value = jetmq_core::broker::DEFAULT_ACCOUNT)]
        account: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Replay { file }) => return replay(file),
        Some(Command::HashPassword { scram }) => return hash_password(*scram),
        Some(Command::Sessions { action }) => return sessions(&cli, action),
        Some(Command::Operator(command)) => {
            return ExitCode::from(command.run(
                Cli::command(),
                &cli.serve,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr(),
            ))
        }
        None => {}
    }
    cli.serve.init_logging();
    match configure(&cli) {
        Ok(config) => serve(config, &cli.serve),
        Err(e) => {
            eprintln!("jetmq: {e}");
            ExitCode::from(2)
        }
    }
}

fn configure(cli: &Cli) -> Result<ServerConfig, Box<dyn std::error::Error>> {
    ServerConfig::load(&cli.serve)
}

fn serve(mut config: ServerConfig, cli: &jetmq::config::CommandLine) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jetmq: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store = match jetmq::store::open(&config) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("jetmq: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The signal handlers go in before the server serves: a signal right after the first
    // connection stops it gracefully too.
    let signal = {
        let _runtime = runtime.enter();
        let source = config.auth_source();
        config.auth_source = Some(source.clone());
        reload_on_hangup(cli.clone(), source, config.broker.authenticate);
        shutdown_signal()
    };
    let result = runtime.block_on(jetmq::server::run(config, store, signal));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jetmq: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sessions(cli: &Cli, action: &SessionsCommand) -> ExitCode {
    let config = match configure(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jetmq: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(nats) = config.nats.as_ref().filter(|n| n.jetstream) {
        // The servers may run meanwhile: a deleted session's client is disconnected from the
        // node it is on by a notice on this connection.
        return match jetmq::jetstream::JetStreamBackend::connect(nats, "jetmq-sessions") {
            Ok(store) => administer(&config, &store, Some(&store), action),
            Err(e) => {
                eprintln!("jetmq: cannot start the JetStream connection: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(dir) = &config.data_dir else {
        eprintln!("jetmq: no data directory: sessions live in the embedded store (--data-dir)");
        return ExitCode::from(2);
    };
    if !dir.exists() {
        eprintln!(
            "jetmq: {} does not exist: no store to read (give --data-dir)",
            dir.display()
        );
        return ExitCode::from(2);
    }
    let store = match EmbeddedBackend::open(dir, config.sync) {
        Ok((store, _)) => store,
        Err(e) => {
            eprintln!("jetmq: {e}");
            return ExitCode::FAILURE;
        }
    };
    administer(&config, &store, None, action)
}

/// Lists or deletes sessions in `store`; with a JetStream `fleet`, a deleted session ends on
/// the running node its client is on.
#[allow(clippy::print_stdout)] // the list is the command's output
fn administer(
    config: &jetmq::config::ServerConfig,
    store: &dyn jetmq::store::StoreBackend,
    fleet: Option<&jetmq::jetstream::JetStreamBackend>,
    action: &SessionsCommand,
) -> ExitCode {
    let mut admin = match jetmq::admin::Admin::open(config, store) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("jetmq: {e}");
            return ExitCode::FAILURE;
        }
    };
    match action {
        SessionsCommand::List => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            print!(
                "{}",
                jetmq::admin::format_sessions(
                    &admin.sessions(),
                    jetmq_core::time::WallClock::from_unix_millis(now)
                )
            );
            ExitCode::SUCCESS
        }
        SessionsCommand::Delete { client_id, account } => {
            let key = jetmq_core::broker::SessionKey {
                account: account.as_str().into(),
                client_id: client_id.as_str().into(),
            };
            match admin.delete(key) {
                Ok(true) => {
                    println!("deleted session {client_id} (account {account})");
                    let notices = admin.take_notices();
                    if let Some(Err(e)) = fleet.map(|f| f.publish(&notices)) {
                        eprintln!(
                            "jetmq: the running jetmq nodes could not be told ({e}): a client \
                             still connected keeps its connection until it reconnects"
                        );
                    }
                    ExitCode::SUCCESS
                }
                Ok(false) => {
                    eprintln!("jetmq: no session {client_id} in account {account} (see `jetmq sessions list`)");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("jetmq: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Reloads the authentication settings (users, passwords, permissions) from the
/// configuration file at every SIGHUP, on the runtime entered; an invalid file is logged and
/// changes nothing.
fn reload_on_hangup(
    cli: jetmq::config::CommandLine,
    source: jetmq::auth::AuthSource,
    authenticating: bool,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot catch SIGHUP: no reloading");
            return;
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match ServerConfig::reload_auth(&cli, &source, authenticating) {
                    Ok(done) => tracing::info!("{done}"),
                    Err(e) => {
                        tracing::warn!(error = %e, "reload refused: the previous settings stay");
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (cli, source, authenticating);
}

/// Completes at SIGINT or SIGTERM (Ctrl-C elsewhere). The handlers are installed when this is
/// called, inside the runtime, rather than when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn replay(file: &std::path::Path) -> ExitCode {
    ExitCode::from(jetmq::record::replay_file(
        file,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ))
}

#[allow(clippy::print_stdout)] // the hash is the command's output
fn hash_password(scram: bool) -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err()
        || line.trim_end_matches(['\r', '\n']).is_empty()
    {
        eprintln!("jetmq: give the password on standard input, for example: echo -n secret | jetmq hash-password");
        return ExitCode::from(2);
    }
    let password = line.trim_end_matches(['\r', '\n']).as_bytes();
    let hashed = if scram {
        Ok(jetmq::auth::scram_credential(password).to_string())
    } else {
        jetmq::auth::hash_password(password)
    };
    match hashed {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jetmq: cannot hash the password: {e}");
            ExitCode::FAILURE
        }
    }
}
