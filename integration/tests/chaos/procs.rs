//! The processes of a chaos run: jetmq nodes as child processes of this test binary (so that a
//! crash is a real SIGKILL: sockets reset by the kernel, no graceful shutdown, nothing flushed)
//! and a three-node nats-server JetStream cluster whose nodes can be killed, restarted and
//! paused (SIGSTOP/SIGCONT).
//!
//! A jetmq node is this test binary run again with only the test `chaos_node_process` selected
//! and `JETMQ_CHAOS_NODE*` in its environment: it starts the shell named there through the same
//! library calls the other integration tests use ([`crate::common::start`]), and stays until
//! it is killed, told `stop` on its stdin (a graceful shutdown), or its stdin closes (the test
//! process is gone: the node must not outlive it).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jetmq::jetstream::JetStreamBackend;
use jetmq::nats_config::NatsConfig;
use tokio::time::Instant;

use crate::common::nats_server::{free_ports, jetmq_url, NatsServer};
use crate::common::{Shell, TempDir};

/// The environment variable that makes this binary a jetmq node: the shell (`tokio`, `mio`).
pub(crate) const NODE_ENV: &str = "JETMQ_CHAOS_NODE";
const NODE_PORT_ENV: &str = "JETMQ_CHAOS_NODE_PORT";
const NODE_TOML_ENV: &str = "JETMQ_CHAOS_NODE_TOML";

/// The body of a node process: serves until killed, told `stop`, or orphaned.
pub(crate) fn node_main(shell: &str) {
    let shell = match shell {
        "mio" => Shell::Mio,
        _ => Shell::Tokio,
    };
    let port: u16 = std::env::var(NODE_PORT_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("JETMQ_CHAOS_NODE_PORT");
    let toml = std::env::var(NODE_TOML_ENV).unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let mut config = jetmq::config::ServerConfig {
            listen: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
            data_dir: None,
            ..jetmq::config::ServerConfig::default()
        };
        if let Err(e) = config.apply_toml(&toml) {
            eprintln!("chaos node: bad configuration: {e}");
            std::process::exit(2);
        }
        let store = match jetmq::store::open(&config) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("chaos node: the store does not open: {e}");
                std::process::exit(3);
            }
        };
        let server = match crate::common::start(shell, config, store).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("chaos node: the server does not start: {e}");
                std::process::exit(4);
            }
        };
        eprintln!("chaos node: serving MQTT on 127.0.0.1:{port}");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut lines = stdin.lock().lines();
            loop {
                match lines.next() {
                    Some(Ok(line)) if line.trim() == "stop" => {
                        let _ = tx.send(());
                        return;
                    }
                    Some(Ok(_)) => {}
                    // The test process is gone: so is this node, at once.
                    _ => std::process::exit(0),
                }
            }
        });
        let _ = rx.await;
        eprintln!("chaos node: stopping gracefully");
        let stopped = server.shutdown().await;
        eprintln!("chaos node: stopped: {stopped:?}");
        std::process::exit(0);
    });
}

/// A jetmq node of the run: its configuration, and its process while it runs.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) shell: Shell,
    /// The MQTT port, the same for every incarnation.
    pub(crate) port: u16,
    toml: String,
    log: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// How many times it was started.
    pub(crate) incarnations: u32,
}

impl Node {
    /// A node (not started) serving MQTT on `port` with the configuration `toml`, logging its
    /// processes' output to `log`.
    pub(crate) fn new(name: &str, shell: Shell, port: u16, toml: String, log: PathBuf) -> Self {
        Self {
            name: name.into(),
            shell,
            port,
            toml,
            log,
            child: None,
            stdin: None,
            incarnations: 0,
        }
    }

    /// Starts a process for the node (without waiting for it to serve).
    pub(crate) fn spawn(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log");
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "chaos_node_process", "--nocapture"])
            .env(
                NODE_ENV,
                match self.shell {
                    Shell::Tokio => "tokio",
                    Shell::Mio => "mio",
                },
            )
            .env(NODE_PORT_ENV, self.port.to_string())
            .env(NODE_TOML_ENV, &self.toml)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("node log"))
            .stderr(log)
            .spawn()
            .expect("the node process starts");
        self.stdin = child.stdin.take();
        self.child = Some(child);
        self.incarnations += 1;
    }

    /// Whether its process has exited (or was never started); reaps it if so.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            None => Some("not running".into()),
            Some(Ok(Some(status))) => {
                self.child = None;
                self.stdin = None;
                Some(format!("exited: {status}"))
            }
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(format!("cannot wait: {e}")),
        }
    }

    /// SIGKILL: a crash.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stdin = None;
    }

    /// A graceful stop (the server's own shutdown), killed if it takes longer than `limit`.
    pub(crate) async fn stop(&mut self, limit: Duration) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"stop\n");
            let _ = stdin.flush();
        }
        let deadline = Instant::now() + limit;
        while self.child.is_some() && Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    /// The last lines its processes wrote.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three nats-server nodes in a JetStream cluster on loopback ports, each with a directory of
/// its own, that can be killed, restarted and paused.
pub(crate) struct Cluster {
    dirs: Vec<TempDir>,
    pub(crate) ports: Vec<u16>,
    cluster_ports: Vec<u16>,
    servers: Vec<Option<NatsServer>>,
    paused: Vec<bool>,
}

impl Cluster {
    /// Starts the three nodes and waits until JetStream answers for streams of `replicas`.
    pub(crate) async fn start(tag: &str, replicas: usize) -> Self {
        let dirs: Vec<TempDir> = (0..3)
            .map(|i| TempDir::new(&format!("{tag}-nats-{i}")))
            .collect();
        let picked = free_ports(6);
        let mut cluster = Self {
            dirs,
            ports: picked[..3].to_vec(),
            cluster_ports: picked[3..].to_vec(),
            servers: vec![None, None, None],
            paused: vec![false; 3],
        };
        for i in 0..3 {
            cluster.restart(i).await;
        }
        let urls = (0..3).map(|i| cluster.url(i)).collect::<Vec<_>>().join(",");
        let mut config = NatsConfig::from_url(&urls, "chaos").expect("NATS URLs");
        config.replicas = replicas;
        let probe = Arc::new(JetStreamBackend::connect(&config, "chaos-probe").expect("connect"));
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let p = Arc::clone(&probe);
            let answer = tokio::task::spawn_blocking(move || {
                p.execute(jetmq_core::js::StoreRequest::GetLast {
                    stream: jetmq_core::js::Stream::Sessions,
                    subject: "$MQTT.sess.probe".into(),
                })
            })
            .await
            .expect("the probe ran");
            match answer {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the JetStream cluster never became ready: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        probe.stop();
        cluster
    }

    /// Node `i`'s client URL, as jetmq's NATS user.
    pub(crate) fn url(&self, i: usize) -> String {
        jetmq_url(self.ports[i])
    }

    /// SIGKILL of node `i`.
    pub(crate) fn kill(&mut self, i: usize) {
        self.paused[i] = false;
        self.servers[i] = None;
    }

    /// Starts node `i` again (after a kill), on its ports and files.
    pub(crate) async fn restart(&mut self, i: usize) {
        self.kill(i);
        let (name, port, cluster_port, routes, dir) = (
            format!("n{i}"),
            self.ports[i],
            self.cluster_ports[i],
            self.cluster_ports.clone(),
            self.dirs[i].0.clone(),
        );
        let server = tokio::task::spawn_blocking(move || {
            NatsServer::cluster_node(&name, port, cluster_port, &routes, &dir)
        })
        .await
        .expect("nats-server starts");
        self.servers[i] = Some(server);
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to node `i`.
    pub(crate) fn pause(&mut self, i: usize, stop: bool) {
        let signal = if stop { "-STOP" } else { "-CONT" };
        assert!(self.signal(i, signal), "kill {signal} failed");
        self.paused[i] = stop;
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to node `i` if it runs; whether that worked.
    fn signal(&self, i: usize, signal: &str) -> bool {
        self.servers[i].as_ref().is_none_or(|server| {
            Command::new("kill")
                .args([signal, &server.pid().to_string()])
                .status()
                .is_ok_and(|s| s.success())
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            if self.paused[i] {
                self.signal(i, "-CONT");
            }
            self.servers[i] = None;
        }
    }
}
