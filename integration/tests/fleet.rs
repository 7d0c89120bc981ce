//! A fleet: jetmq nodes (one of each shell) sharing a NATS server's JetStream and subjects.
//! A persistent session and its queued QoS 1 messages resume on the other node, a client id
//! taken over on one node closes the connection on the other, retained messages set through
//! one node reach subscribers of the other, and QoS 1 messages cross between online clients.

use std::sync::Arc;
use std::time::Duration;

use jetmq::jetstream::JetStreamBackend;
use jetmq::nats_config::NatsConfig;
use jetmq_core::js::records::{self, SessionRecord};
use jetmq_core::js::{StoreReply, StoreRequest, Stream};
use rumqttc::{MqttOptions, QoS};
use tokio::time::{timeout, Instant};

mod common;
use common::client::{client, Client, DEADLINE};
use common::nats_server::{free_port, free_ports, jetmq_url, NatsServer};
use common::{Server, Shell, TempDir};

/// A jetmq node of the fleet on `shell`, on the NATS server at `url`.
async fn node(shell: Shell, url: &str) -> (Server, u16) {
    let config = NatsConfig::from_url(url, "test").expect("a NATS URL");
    let store = JetStreamBackend::connect(&config, "jetmq").expect("connect");
    common::serve_with(
        shell,
        &format!("[nats]\nurl = \"{url}\"\n"),
        Arc::new(store),
    )
    .await
}

#[tokio::test]
async fn a_fleet_of_two_nodes_on_one_nats_server() {
    let dir = TempDir::new("fleet");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    let (a, port_a) = node(Shell::Tokio, &nats.url()).await;
    let (b, port_b) = node(Shell::Mio, &nats.url()).await;

    // A persistent session made on a, left with a queued QoS 1 message, resumes on b.
    let mut s = client("fleet-s", port_a, false).await;
    s.subscribe("orders/#", QoS::AtLeastOnce).await;
    drop(s);
    let mut p = client("fleet-p", port_a, true).await;
    p.publish("orders/1", QoS::AtLeastOnce, false, "queued")
        .await;
    let mut s = client("fleet-s", port_b, false).await;
    assert!(s.session_present, "node b read the session from JetStream");
    let got = s.next().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.qos),
        ("orders/1", &b"queued"[..], QoS::AtLeastOnce)
    );

    // Online on b, it gets a's QoS 1 messages live, at QoS 1.
    p.publish("orders/2", QoS::AtLeastOnce, false, "live").await;
    let got = s.next().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.qos),
        ("orders/2", &b"live"[..], QoS::AtLeastOnce)
    );

    // A retained message set through a reaches a late subscriber on b.
    p.publish("status/line", QoS::AtLeastOnce, true, "up").await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut late = client("fleet-late", port_b, true).await;
        late.client
            .subscribe("status/#", QoS::AtMostOnce)
            .await
            .expect("subscribe");
        // The retained copy crosses over live: until it has, b has none to send. (The live
        // copy of the publish itself may also reach this subscriber, without RETAIN.)
        let mut retained = None;
        while let Ok(Some(m)) = timeout(Duration::from_millis(200), late.publishes.recv()).await {
            if m.retain {
                retained = Some(m);
                break;
            }
        }
        if let Some(m) = retained {
            assert_eq!(
                (m.topic.as_str(), &m.payload[..]),
                ("status/line", &b"up"[..])
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retained message never reached b"
        );
    }

    // The client id connects on a again: b closes its connection there.
    let s_on_a = client("fleet-s", port_a, false).await;
    assert!(s_on_a.session_present);
    timeout(DEADLINE, s.ended.recv())
        .await
        .expect("b closed the old connection in time");

    drop(s_on_a);
    drop(s);
    drop(p);
    a.shutdown().await.expect("clean stop");
    b.shutdown().await.expect("clean stop");
}

/// What a node's consumer reads handed it for a session (JetStream keeps such messages from
/// other readers until they are acknowledged, or its ack wait of 30 s has passed) is released
/// when the session's client leaves: resumed on another node, the session gets it at once.
#[tokio::test]
async fn messages_handed_to_a_node_are_released_when_its_client_leaves() {
    let dir = TempDir::new("fleet-release");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    let (a, port_a) = node(Shell::Tokio, &nats.url()).await;
    let (b, port_b) = node(Shell::Mio, &nats.url()).await;

    let mut s = client("release-s", port_a, false).await;
    s.subscribe("jobs/#", QoS::AtLeastOnce).await;
    drop(s);
    let mut p = client("release-p", port_a, true).await;
    for i in 0..3 {
        p.publish(&format!("jobs/{i}"), QoS::AtLeastOnce, false, "queued")
            .await;
    }

    // Back on a, the client acknowledges the first message only: a reads the consumer to
    // acknowledge it, and is handed the other two as well.
    let mut o = MqttOptions::new("release-s", "127.0.0.1", port_a);
    o.set_clean_session(false);
    o.set_manual_acks(true);
    let mut s = timeout(DEADLINE, common::client::connect(o))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK accepting the client");
    let mut topics = Vec::new();
    for _ in 0..3 {
        let m = s.next().await;
        topics.push(m.topic.clone());
        if topics.len() == 1 {
            s.client.ack(&m).await.expect("ack");
        }
    }
    topics.sort();
    assert_eq!(topics, ["jobs/0", "jobs/1", "jobs/2"]);
    // Its own acknowledged publish after the ack: a has read the consumer by then.
    s.publish("elsewhere", QoS::AtLeastOnce, false, "x").await;
    drop(s);

    // On b, well within the ack wait: the two unacknowledged messages.
    let mut s = client("release-s", port_b, false).await;
    assert!(s.session_present, "node b read the session from JetStream");
    let mut topics = Vec::new();
    while topics.len() < 2 {
        let m = s.next().await;
        if m.topic != "jobs/0" {
            topics.push(m.topic.clone());
        }
    }
    topics.sort();
    assert_eq!(topics, ["jobs/1", "jobs/2"]);

    drop(s);
    drop(p);
    a.shutdown().await.expect("clean stop");
    b.shutdown().await.expect("clean stop");
}

/// The session record of `client_id` as JetStream holds it, once `ready` says it is the one
/// awaited (the nodes write records in the background).
async fn record_when(
    store: &Arc<JetStreamBackend>,
    client_id: &str,
    ready: impl Fn(&SessionRecord) -> bool,
) -> SessionRecord {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let request = StoreRequest::GetLast {
            stream: Stream::Sessions,
            subject: records::session_subject(client_id),
        };
        // The backend waits for its answer: off the runtime the nodes run on.
        let reader = Arc::clone(store);
        let reply = tokio::task::spawn_blocking(move || reader.execute(request))
            .await
            .expect("the read ran");
        let record = match reply {
            Ok(StoreReply::Message(Some(m))) => SessionRecord::from_json(&m.payload),
            _ => None,
        };
        if let Some(r) = record.filter(|r| ready(r)) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "the record of {client_id} never became the one awaited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The records the nodes write on condition that the record they read is still the last
/// (when a resumed session is bound, when its client leaves) are taken by JetStream: the
/// record follows the client through both nodes.
#[tokio::test]
async fn session_records_follow_the_client_through_the_nodes() {
    let dir = TempDir::new("fleet-records");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    let (a, port_a) = node(Shell::Tokio, &nats.url()).await;
    let (b, port_b) = node(Shell::Mio, &nats.url()).await;
    let config = NatsConfig::from_url(&nats.url(), "test").expect("a NATS URL");
    let store = Arc::new(JetStreamBackend::connect(&config, "reader").expect("connect"));

    let mut s = client("records-s", port_a, false).await;
    s.subscribe("x/#", QoS::AtLeastOnce).await;
    drop(s);
    let left_a = record_when(&store, "records-s", |r| r.jetmq.disconnected_at.is_some()).await;
    assert!(left_a.jetmq.subs.contains_key("x/#"), "{left_a:?}");

    let mut s = client("records-s", port_b, false).await;
    assert!(s.session_present);
    let bound_b = record_when(&store, "records-s", |r| r.jetmq.stamp > left_a.jetmq.stamp).await;
    assert_eq!(bound_b.jetmq.disconnected_at, None, "written at the resume");
    s.subscribe("y/#", QoS::AtLeastOnce).await;
    drop(s);
    let left_b = record_when(&store, "records-s", |r| r.jetmq.disconnected_at.is_some()).await;
    assert_eq!(left_b.jetmq.stamp, bound_b.jetmq.stamp);
    assert!(
        left_b.jetmq.subs.contains_key("x/#") && left_b.jetmq.subs.contains_key("y/#"),
        "{left_b:?}"
    );

    store.stop();
    a.shutdown().await.expect("clean stop");
    b.shutdown().await.expect("clean stop");
}

/// Connects until the CONNACK accepts with a session present (a cluster that is electing a
/// stream leader makes jetmq refuse with "server unavailable" meanwhile).
async fn resume(id: &str, port: u16) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(false);
        let attempt = tokio::spawn(common::client::connect(o));
        if let Ok(Ok(Some(c))) = timeout(DEADLINE, attempt).await {
            if c.session_present {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "{id} never resumed its session");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes at QoS 1 until a PUBACK comes (meanwhile jetmq may close the connection, as it
/// does when it cannot store the message).
async fn publish_until_acked(port: u16, topic: &str, payload: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = MqttOptions::new("r3-retrying", "127.0.0.1", port);
        if let Ok(Some(mut c)) = timeout(DEADLINE, common::client::connect(o)).await {
            c.client
                .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
                .await
                .expect("publish");
            let acked = tokio::select! {
                a = timeout(DEADLINE, c.acks.recv()) => matches!(a, Ok(Some(()))),
                _ = c.ended.recv() => false,
            };
            if acked {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{topic} was never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three nats-server nodes in a JetStream cluster on loopback ports, each with a directory of
/// its own.
struct Cluster {
    dirs: Vec<TempDir>,
    ports: Vec<u16>,
    cluster_ports: Vec<u16>,
    servers: Vec<Option<NatsServer>>,
}

impl Cluster {
    /// Starts the three nodes and waits until the cluster's JetStream answers for streams of
    /// `replicas` replicas.
    async fn start(tag: &str, replicas: usize) -> Self {
        let dirs: Vec<TempDir> = (0..3)
            .map(|i| TempDir::new(&format!("{tag}-{i}")))
            .collect();
        // Six distinct ports: two that collide would leave the cluster a node short, and its
        // R3 streams never ready.
        let picked = free_ports(6);
        let mut cluster = Self {
            dirs,
            ports: picked[..3].to_vec(),
            cluster_ports: picked[3..].to_vec(),
            servers: Vec::new(),
        };
        cluster.servers = (0..3).map(|i| Some(cluster.spawn(i))).collect();
        // The cluster elects its JetStream leader: wait until the streams exist.
        let probe = JetStreamBackend::connect(&cluster.config(&cluster.url(1), replicas), "probe")
            .expect("connect");
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = probe.execute(jetmq_core::js::StoreRequest::GetLast {
            stream: jetmq_core::js::Stream::Sessions,
            subject: "$MQTT.sess.probe".into(),
        }) {
            assert!(
                Instant::now() < deadline,
                "the JetStream cluster never became ready: {e}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster
    }

    /// Node `i`'s process.
    fn spawn(&self, i: usize) -> NatsServer {
        NatsServer::cluster_node(
            &format!("n{i}"),
            self.ports[i],
            self.cluster_ports[i],
            &self.cluster_ports,
            &self.dirs[i].0,
        )
    }

    /// Node `i`'s client URL (as jetmq's NATS user).
    fn url(&self, i: usize) -> String {
        jetmq_url(self.ports[i])
    }

    /// The NATS settings for `urls` with streams of `replicas` replicas.
    fn config(&self, urls: &str, replicas: usize) -> NatsConfig {
        let mut c = NatsConfig::from_url(urls, "test").expect("NATS URLs");
        c.replicas = replicas;
        c
    }

    /// A jetmq node on `shell` using the NATS nodes of `urls`.
    async fn jetmq(&self, shell: Shell, urls: &str, replicas: usize) -> (Server, u16) {
        let store =
            JetStreamBackend::connect(&self.config(urls, replicas), "jetmq").expect("connect");
        let toml = format!("[nats]\nurl = \"{urls}\"\nreplicas = {replicas}\n");
        common::serve_with(shell, &toml, Arc::new(store)).await
    }
}

/// Three nats-server nodes in a JetStream cluster with R3 streams: the acknowledged QoS 1
/// messages of a persistent session survive the loss of the node its publisher's jetmq used
/// (which fails over to another NATS node from its URL list), and the session resumes
/// through a jetmq node on another NATS node.
#[tokio::test]
async fn r3_streams_lose_nothing_acknowledged_when_a_nats_node_dies() {
    let mut cluster = Cluster::start("r3", 3).await;
    // Node a knows every NATS node (it starts on n0 and fails over), node b only n1.
    let all = format!("{},{},{}", cluster.url(0), cluster.url(1), cluster.url(2));
    let (a, port_a) = cluster.jetmq(Shell::Tokio, &all, 3).await;
    let (b, port_b) = cluster.jetmq(Shell::Mio, &cluster.url(1), 3).await;

    let mut s = client("r3-s", port_a, false).await;
    s.subscribe("ledger/#", QoS::AtLeastOnce).await;
    drop(s);
    let mut p = client("r3-p", port_a, true).await;
    const N: usize = 50;
    for i in 0..N / 2 {
        p.publish(
            &format!("ledger/{i}"),
            QoS::AtLeastOnce,
            false,
            &i.to_string(),
        )
        .await;
    }
    drop(p);
    // Every one of them was acknowledged; the NATS node node a used dies. Node a reconnects
    // to another one and takes QoS 1 publishes again.
    cluster.servers[0] = None;
    for i in N / 2..N {
        publish_until_acked(port_a, &format!("ledger/{i}"), &i.to_string()).await;
    }
    a.shutdown().await.expect("clean stop");

    let mut s = resume("r3-s", port_b).await;
    let mut got = std::collections::BTreeSet::new();
    while got.len() < N {
        let m = s.next().await;
        got.insert(String::from_utf8_lossy(&m.payload).into_owned());
    }
    let want: std::collections::BTreeSet<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "every acknowledged message arrived");
    drop(s);
    b.shutdown().await.expect("clean stop");
    drop(cluster);
}

/// A client connects through node b while node a's only NATS server is down, so a never
/// hears of it and keeps the client's older connection. When that NATS server is back, a
/// announces its clients again, b answers with its newer connect, and a closes the old
/// connection.
#[tokio::test]
async fn a_connect_notice_missed_while_nats_was_down_is_made_good_when_it_returns() {
    let mut cluster = Cluster::start("missed", 1).await;
    let (a, port_a) = cluster.jetmq(Shell::Tokio, &cluster.url(0), 1).await;
    let (b, port_b) = cluster.jetmq(Shell::Mio, &cluster.url(1), 1).await;
    let mut on_a = client("twice", port_a, true).await;
    cluster.servers[0] = None;
    let mut on_b = client("twice", port_b, true).await;
    // Node a missed that connect: its connection stays open until n0 is back.
    assert!(
        timeout(Duration::from_millis(500), on_a.ended.recv())
            .await
            .is_err(),
        "node a cannot have heard of the connect through b yet"
    );
    cluster.servers[0] = Some(cluster.spawn(0));
    timeout(Duration::from_secs(30), on_a.ended.recv())
        .await
        .expect("node a closed the older connection once NATS was back");
    // The newer connection through b stays.
    assert!(
        timeout(Duration::from_millis(500), on_b.ended.recv())
            .await
            .is_err(),
        "the newer connection was closed"
    );
    drop(on_a);
    drop(on_b);
    a.shutdown().await.expect("clean stop");
    b.shutdown().await.expect("clean stop");
    drop(cluster);
}

/// Takes every message that arrives on `clients` until `distinct` different payloads have
/// come (within the deadline), and then whatever else arrives within a short grace period
/// (duplicates would be there by then); returns the payloads each client got.
async fn collect_until(clients: &mut [&mut Client], distinct: usize) -> Vec<Vec<String>> {
    let mut got = vec![Vec::new(); clients.len()];
    let seen = |got: &Vec<Vec<String>>| {
        let mut all: Vec<&String> = got.iter().flatten().collect();
        all.sort();
        all.dedup();
        all.len()
    };
    let deadline = Instant::now() + DEADLINE;
    let mut grace = None;
    loop {
        let now = Instant::now();
        if grace.is_none() && seen(&got) >= distinct {
            grace = Some(now + Duration::from_millis(500));
        }
        let until = grace.unwrap_or(deadline);
        if now >= until {
            assert!(
                grace.is_some(),
                "only {} of {distinct} arrived: {got:?}",
                seen(&got)
            );
            return got;
        }
        let mut any = false;
        for (i, c) in clients.iter_mut().enumerate() {
            while let Ok(m) = c.publishes.try_recv() {
                got[i].push(String::from_utf8_lossy(&m.payload).into_owned());
                any = true;
            }
        }
        if !any {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A shared subscription with members on both nodes of a fleet gets each message once, spread
/// over the members of both nodes (NATS queue groups), and a group whose members all sit on
/// the node the publisher uses still gets every message.
#[tokio::test]
async fn a_shared_subscription_across_the_fleet_gets_each_message_once() {
    let dir = TempDir::new("fleet-share");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    let (a, port_a) = node(Shell::Tokio, &nats.url()).await;
    let (b, port_b) = node(Shell::Mio, &nats.url()).await;

    let mut on_a = client("share-a", port_a, true).await;
    on_a.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce)
        .await;
    let mut on_b = client("share-b", port_b, true).await;
    on_b.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce)
        .await;
    let mut solo = client("share-solo", port_a, true).await;
    solo.subscribe("$share/solo/solo/#", QoS::AtLeastOnce).await;

    let mut p = client("share-p", port_a, true).await;
    const JOBS: usize = 40;
    for i in 0..JOBS {
        p.publish(
            &format!("jobs/{i}"),
            QoS::AtLeastOnce,
            false,
            &format!("job-{i}"),
        )
        .await;
    }
    let got = collect_until(&mut [&mut on_a, &mut on_b], JOBS).await;
    let mut all: Vec<&String> = got.iter().flatten().collect();
    all.sort();
    let total = all.len();
    all.dedup();
    assert_eq!(
        (total, all.len()),
        (JOBS, JOBS),
        "each job once in the fleet: {got:?}"
    );
    assert!(
        got.iter().all(|g| !g.is_empty()),
        "members on both nodes got jobs: {got:?}"
    );

    for i in 0..5 {
        p.publish(
            &format!("solo/{i}"),
            QoS::AtLeastOnce,
            false,
            &format!("solo-{i}"),
        )
        .await;
    }
    let got = collect_until(&mut [&mut solo], 5).await;
    assert_eq!(got[0].len(), 5, "{got:?}");

    drop((on_a, on_b, solo, p));
    a.shutdown().await.expect("clean stop");
    b.shutdown().await.expect("clean stop");
}
