//! The options every shell's binary takes for serving, shared so both binaries read the same
//! command line.

use std::path::PathBuf;

/// The options every shell's binary takes for serving (flattened into its clap parser).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommandLine {
    /// Address to serve MQTT over TCP on; repeat for several. Default 127.0.0.1:1883.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Directory for the embedded store. Default ./jetmq-data.
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file; command-line options override it.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: text (for people) or json (one JSON object per line, for log pipelines).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log client identifiers and topics, which are personal data and redacted by default.
    #[arg(long)]
    pub log_pii: bool,
    /// Record every broker input to FILE, so `jetmq replay FILE` can re-run it exactly.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Bridge MQTT topics and NATS subjects through this NATS server (nats://host:port,
    /// nats://user:password@host:port, nats://token@host:port, or tls://host:port for TLS)
    /// and keep sessions, retained and queued messages in its JetStream.
    #[arg(long, value_name = "URL", global = true)]
    pub nats: Option<String>,
    /// Authenticate to NATS with this .creds file (the user JWT and nkey seed nsc writes).
    #[arg(long, value_name = "FILE", global = true)]
    pub nats_creds: Option<PathBuf>,
    /// Authenticate to NATS with the user nkey seed (SU...) in this file.
    #[arg(long, value_name = "FILE", global = true)]
    pub nats_nkey: Option<PathBuf>,
    /// CA certificates (PEM) that signed the NATS server's certificate (asks for TLS).
    #[arg(long, value_name = "FILE", global = true)]
    pub nats_tls_ca: Option<PathBuf>,
    /// A TLS client certificate chain (PEM) to present to NATS, with --nats-tls-key.
    #[arg(long, value_name = "FILE", global = true)]
    pub nats_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --nats-tls-cert.
    #[arg(long, value_name = "FILE", global = true)]
    pub nats_tls_key: Option<PathBuf>,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people: time, level, target, message and fields.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and the event's
    /// fields at the top level, `span`/`spans` when inside spans), for log pipelines.
    Json,
}

impl LogFormat {
    /// The name the command line takes (`text`, `json`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl CommandLine {
    /// Sends logs to standard error at `log_level` (`info` if it is not a valid filter) in
    /// `log_format`; text is in colour only on a terminal. Standard output is left to
    /// commands' results.
    pub fn init_logging(&self) {
        use std::io::IsTerminal as _;
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let logs = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter);
        match self.log_format {
            // Colours for a terminal only: a log file or a pipe gets plain text.
            LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
            // The message and the event's fields at the top level of each object, where log
            // pipelines look for them; never colour codes inside the JSON strings.
            LogFormat::Json => logs.json().flatten_event(true).with_ansi(false).init(),
        }
    }
}
