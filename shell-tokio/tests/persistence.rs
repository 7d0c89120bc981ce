//! A persistent session across broker restarts on the same data directory: queued QoS 1
//! messages, retained messages and subscriptions survive a graceful stop and a `kill -9`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jetmq::config::ServerConfig;
use jetmq::server::{start, ServerHandle};
use jetmq::store::EmbeddedBackend;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(15);

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "jetmq-test-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn server_on(dir: &TempDir) -> (ServerHandle, u16) {
    let config = ServerConfig {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        data_dir: Some(dir.0.clone()),
        ..ServerConfig::default()
    };
    let (backend, _report) =
        EmbeddedBackend::open(&dir.0, jetmq_store::SyncPolicy::Always).expect("store opens");
    let handle = start(config, Arc::new(backend))
        .await
        .expect("server starts");
    let port = handle.local_addrs[0].port();
    (handle, port)
}

/// A connected rumqttc client: incoming publishes and SUBACK/PUBACK arrivals on channels
/// (its event loop acknowledges QoS 1 deliveries itself).
struct Client {
    client: AsyncClient,
    session_present: bool,
    publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    acks: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn client(id: &str, port: u16, clean: bool) -> Client {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    let (ptx, publishes) = mpsc::unbounded_channel();
    let (atx, acks) = mpsc::unbounded_channel();
    let (ctx, mut connack) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = ptx.send(p);
                }
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    let _ = ctx.send(c.session_present);
                }
                Ok(Event::Incoming(Packet::SubAck(_) | Packet::PubAck(_))) => {
                    let _ = atx.send(());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let session_present = timeout(DEADLINE, connack.recv())
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    Client {
        client,
        session_present,
        publishes,
        acks,
        task,
    }
}

impl Client {
    /// Waits for the next SUBACK or PUBACK.
    async fn acked(&mut self) {
        timeout(DEADLINE, self.acks.recv())
            .await
            .expect("acknowledged in time")
            .expect("client running");
    }

    async fn next(&mut self) -> rumqttc::Publish {
        timeout(DEADLINE, self.publishes.recv())
            .await
            .expect("a message in time")
            .expect("client running")
    }
}

/// A persistent client `id` subscribes to `filter` and goes away; a publisher then sends it
/// `topic` = `payload` at QoS 1, acknowledged (so stored for it).
async fn leave_a_queued_message(port: u16, id: &str, filter: &str, topic: &str, payload: &str) {
    let mut sub = client(id, port, false).await;
    sub.client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    sub.acked().await; // the SUBACK comes once the subscription is stored
    sub.task.abort();
    let mut publisher = client("publisher", port, true).await;
    publisher
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
        .await
        .expect("publish");
    publisher.acked().await;
}

#[tokio::test]
async fn a_persistent_session_survives_a_restart() {
    let dir = TempDir::new("restart");
    let (server, port) = server_on(&dir).await;
    leave_a_queued_message(port, "keeper", "q/#", "q/1", "while-away").await;
    let mut publisher = client("publisher", port, true).await;
    publisher
        .client
        .publish("r/1", QoS::AtLeastOnce, true, "retained")
        .await
        .expect("publish");
    publisher.acked().await;
    server.shutdown().await.expect("clean stop");

    let (server, port) = server_on(&dir).await;
    let mut sub = client("keeper", port, false).await;
    assert!(sub.session_present, "the session was restored");
    let m = sub.next().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("q/1", &b"while-away"[..])
    );
    let mut late = client("late", port, true).await;
    late.client
        .subscribe("r/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let r = late.next().await;
    assert!(r.retain);
    assert_eq!(&r.payload[..], b"retained");
    server.shutdown().await.expect("clean stop");
}

/// The `jetmq` binary, killed with SIGKILL.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn spawn_binary(dir: &TempDir, port: u16) -> Broker {
    let child = Command::new(env!("CARGO_BIN_EXE_jetmq"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&dir.0)
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the jetmq binary starts");
    // Wait until it accepts connections.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "jetmq did not start listening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Broker(child)
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_9() {
    let dir = TempDir::new("kill");
    let port = free_port();
    let broker = spawn_binary(&dir, port).await;
    let mut sub = client("durable", port, false).await;
    sub.client
        .subscribe("d/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    sub.acked().await;
    sub.task.abort();
    // The publisher's event loop reports PUBACKs; count them so only acknowledged messages
    // are expected after the crash.
    let mut o = MqttOptions::new("writer", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (publisher, mut eventloop) = AsyncClient::new(o, 100);
    for i in 0..20 {
        publisher
            .publish(format!("d/{i}"), QoS::AtLeastOnce, false, format!("m{i}"))
            .await
            .expect("publish");
    }
    let mut acked = 0;
    while acked < 20 {
        match timeout(DEADLINE, eventloop.poll()).await.expect("in time") {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publisher failed: {e}"),
        }
    }
    drop(broker); // SIGKILL: no graceful shutdown, no final flush.

    let _broker = spawn_binary(&dir, port).await;
    let mut sub = client("durable", port, false).await;
    assert!(sub.session_present);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 20 {
        seen.insert(sub.next().await.topic);
    }
}

#[tokio::test]
async fn sigterm_stops_the_binary_cleanly_and_state_survives() {
    let dir = TempDir::new("term");
    let port = free_port();
    let mut broker = spawn_binary(&dir, port).await;
    leave_a_queued_message(port, "survivor", "s/#", "s/queued", "q").await;
    let mut publisher = client("pub", port, true).await;
    publisher
        .client
        .publish("keep/me", QoS::AtLeastOnce, true, "r")
        .await
        .expect("publish");
    publisher.acked().await;

    // SIGTERM: graceful shutdown, exit status 0 in bounded time.
    let status = Command::new("kill")
        .args(["-TERM", &broker.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = std::time::Instant::now() + DEADLINE;
    let exit = loop {
        if let Some(exit) = broker.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jetmq did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit}");

    let _broker = spawn_binary(&dir, port).await;
    let mut sub = client("survivor", port, false).await;
    assert!(sub.session_present, "subscriptions survived");
    assert_eq!(
        sub.next().await.topic,
        "s/queued",
        "the queued QoS 1 message survived"
    );
    let mut late = client("late", port, true).await;
    late.client
        .subscribe("keep/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let r = late.next().await;
    assert!(r.retain, "the retained message survived");
}

/// Runs `jetmq sessions ARGS --data-dir DIR`: (success, stdout, stderr).
fn sessions_command(dir: &TempDir, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jetmq"))
        .arg("sessions")
        .args(args)
        .arg("--data-dir")
        .arg(&dir.0)
        .output()
        .expect("the jetmq binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn sessions_are_listed_and_deleted_from_the_command_line() {
    let dir = TempDir::new("sessions-cli");
    let (server, port) = server_on(&dir).await;
    leave_a_queued_message(port, "keeper", "q/#", "q/1", "queued").await;
    // While the server runs, the store is in use: the command says so.
    let (ok, _, err) = sessions_command(&dir, &["list"]);
    assert!(!ok && err.contains("in use"), "{err}");
    server.shutdown().await.expect("clean stop");

    let (ok, out, err) = sessions_command(&dir, &["list"]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.contains("keeper"))
        .unwrap_or_else(|| panic!("keeper listed: {out}"));
    assert!(line.contains("offline") && line.contains("q/#"), "{line}");
    assert!(out.contains("1 session(s)"), "{out}");

    let (ok, out, err) = sessions_command(&dir, &["delete", "keeper"]);
    assert!(ok, "{err}");
    assert!(out.contains("deleted session keeper"), "{out}");
    let (ok, _, err) = sessions_command(&dir, &["delete", "keeper"]);
    assert!(!ok && err.contains("no session keeper"), "{err}");
    let (_, out, _) = sessions_command(&dir, &["list"]);
    assert!(out.contains("0 session(s)"), "{out}");

    // The server starts without it: no session, nothing queued.
    let (server, port) = server_on(&dir).await;
    let sub = client("keeper", port, false).await;
    assert!(!sub.session_present);
    server.shutdown().await.expect("clean stop");
}
