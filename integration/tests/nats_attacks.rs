//! MQTT clients attacking NATS mode, on a real nats-server with JetStream and a fleet of two jetmq
//! nodes (one of each shell): while jetmq does its own JetStream work (persistent sessions resumed
//! across nodes, queued and retained messages), anonymous and authenticated (a configured user)
//! clients publish to and subscribe on every subject that belongs to NATS or jetmq (stream and
//! consumer delete and purge, stream info, direct gets, system-account requests, inboxes, `$MQTT`,
//! `$JETMQ`, and wildcards that cover them). Every stream, its messages and consumers are intact
//! afterwards, and no message of NATS's or jetmq's own reached an MQTT client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use jetmq::jetstream::JetStreamBackend;
use jetmq::nats_config::NatsConfig;
use rumqttc::QoS;

mod common;
use common::client::{client, connect, Client};
use common::nats_server::{free_port, NatsServer};
use common::{Server, Shell, TempDir};

/// Topics whose NATS subjects belong to NATS or jetmq.
const DANGEROUS_TOPICS: [&str; 12] = [
    "$JS/API/STREAM/DELETE/$MQTT_msgs",
    "$JS/API/STREAM/DELETE/$MQTT_rmsgs",
    "$JS/API/STREAM/PURGE/$MQTT_sess",
    "$JS/API/STREAM/INFO/$MQTT_msgs",
    "$JS/API/CONSUMER/DELETE/$MQTT_msgs/x",
    "$JS/API/DIRECT/GET/$MQTT_sess",
    "$JS/API/STREAM/MSG/DELETE/$MQTT_rmsgs",
    "$SYS/REQ/SERVER/PING",
    "$MQTT/sess/x",
    "$JETMQ/conn/x",
    "_INBOX/x",
    "_R_/x",
];

/// Filters over those subjects, and wildcards that cover them.
const DANGEROUS_FILTERS: [&str; 10] = [
    "$JS/#",
    "$JS/API/+",
    "$MQTT/#",
    "$JETMQ/#",
    "_INBOX/#",
    "_R_/#",
    "$SYS/#",
    "$KV/#",
    "#",
    "+/#",
];

/// A jetmq node of the fleet on `shell`.
async fn node(shell: Shell, url: &str) -> (Server, u16) {
    let config = NatsConfig::from_url(url, "test").expect("a NATS URL");
    let store = JetStreamBackend::connect(&config, "jetmq").expect("connect");
    // Anonymous clients welcome, and one user: attackers come both ways.
    let hash = jetmq::auth::hash_password(b"s3cret").expect("hash");
    common::serve_with(
        shell,
        &format!(
            "[nats]\nurl = \"{url}\"\n[[auth.users]]\nusername = \"mallory\"\npassword_hash = \"{hash}\"\n"
        ),
        Arc::new(store),
    )
    .await
}

/// A plain NATS client for asking the JetStream API what it holds (as an operator would).
struct JsProbe {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next: u32,
}

impl JsProbe {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("NATS");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut info = String::new();
        reader.read_line(&mut info).expect("INFO");
        let mut writer = stream;
        writer
            .write_all(
                b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB probe.replies.* 1\r\n",
            )
            .expect("CONNECT");
        Self {
            reader,
            writer,
            next: 0,
        }
    }

    /// Sends a JetStream API request and returns its JSON answer.
    fn request(&mut self, subject: &str) -> serde_json::Value {
        self.next += 1;
        let reply = format!("probe.replies.{}", self.next);
        write!(self.writer, "PUB {subject} {reply} 0\r\n\r\n").expect("PUB");
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("an answer");
            if line.starts_with("PING") {
                self.writer.write_all(b"PONG\r\n").expect("PONG");
                continue;
            }
            let Some(rest) = line.strip_prefix("MSG ") else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let len: usize = fields.last().and_then(|l| l.parse().ok()).expect("size");
            let mut body = vec![0; len + 2];
            self.reader.read_exact(&mut body).expect("body");
            if fields[0] != reply {
                continue;
            }
            return serde_json::from_slice(&body[..len]).expect("JSON");
        }
    }

    /// Every stream with its message count, first and last sequence and consumer count.
    fn streams(&mut self) -> Vec<(String, u64, u64, u64, u64)> {
        let names = self.request("$JS.API.STREAM.NAMES");
        let mut names: Vec<String> = names["streams"]
            .as_array()
            .expect("stream names")
            .iter()
            .map(|n| n.as_str().expect("a name").to_string())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let info = self.request(&format!("$JS.API.STREAM.INFO.{name}"));
                let state = &info["state"];
                let n = |k: &str| state[k].as_u64().unwrap_or(0);
                (
                    name,
                    n("messages"),
                    n("first_seq"),
                    n("last_seq"),
                    n("consumer_count"),
                )
            })
            .collect()
    }
}

/// Publishes a marker through `via` and waits until `attacker` (subscribed to `#`) has it, so
/// that everything routed before has reached the attacker too; returns what it had received.
async fn received_until_marker(
    attacker: &mut Client,
    via: &mut Client,
    marker: &str,
) -> Vec<String> {
    // QoS 0: not stored, so the streams stay exactly as they were.
    via.publish(marker, QoS::AtMostOnce, false, "end").await;
    let mut topics = Vec::new();
    loop {
        let got = attacker.next().await;
        if got.topic == marker {
            return topics;
        }
        topics.push(got.topic);
    }
}

/// jetmq logged in as the least-privilege NATS user the README documents: NATS refuses what
/// jetmq's own rules would let through, too.
#[tokio::test]
async fn mqtt_clients_cannot_reach_nats_or_jetmq_subjects() {
    let dir = TempDir::new("attacks");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    attack(&nats, &nats.url()).await;
}

/// jetmq logged in as an unrestricted NATS user (a careless deployment): its own bridge rules
/// alone keep every attack out.
#[tokio::test]
async fn mqtt_clients_cannot_reach_them_even_through_an_unrestricted_nats_user() {
    let dir = TempDir::new("attacks-admin");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    attack(&nats, &format!("nats://127.0.0.1:{}", nats.port)).await;
}

async fn attack(nats: &NatsServer, url: &str) {
    let (a, port_a) = node(Shell::Tokio, url).await;
    let (b, port_b) = node(Shell::Mio, url).await;

    // Attackers on both nodes subscribe to everything they can think of, before jetmq's own
    // JetStream work starts, so its inbox replies and records flow while they listen.
    let mut attackers = Vec::new();
    for (i, port) in [port_a, port_b].into_iter().enumerate() {
        // On node a an anonymous attacker, on node b an authenticated one.
        let mut o = rumqttc::MqttOptions::new(format!("attacker-{i}"), "127.0.0.1", port);
        if i == 1 {
            o.set_credentials("mallory", "s3cret");
        }
        let mut attacker = tokio::time::timeout(common::client::DEADLINE, connect(o))
            .await
            .expect("CONNACK in time")
            .expect("the attacker is let in");
        for filter in DANGEROUS_FILTERS {
            attacker.subscribe(filter, QoS::AtLeastOnce).await;
        }
        attackers.push(attacker);
    }

    // jetmq's own work: a persistent session with queued messages resumed on the other node,
    // and a retained message.
    let mut s = client("victim", port_a, false).await;
    s.subscribe("orders/#", QoS::AtLeastOnce).await;
    drop(s);
    let mut p = client("publisher", port_a, true).await;
    for i in 0..3 {
        p.publish(&format!("orders/{i}"), QoS::AtLeastOnce, false, "queued")
            .await;
    }
    p.publish("status/door", QoS::AtLeastOnce, true, "open")
        .await;
    let mut s = client("victim", port_b, false).await;
    assert!(s.session_present);
    for _ in 0..3 {
        assert_eq!(&s.next().await.payload[..], b"queued");
    }
    drop(s);
    p.publish("orders/3", QoS::AtLeastOnce, false, "queued")
        .await;

    let mut probe = JsProbe::connect(nats.port);
    let before = probe.streams();
    assert!(
        before
            .iter()
            .any(|(name, messages, ..)| name == "$MQTT_msgs" && *messages > 0),
        "{before:?}"
    );

    // The attacks, from both nodes, at QoS 0 and 1, retained and not.
    for attacker in &mut attackers {
        for topic in DANGEROUS_TOPICS {
            for (qos, retain) in [(QoS::AtMostOnce, false), (QoS::AtLeastOnce, true)] {
                attacker
                    .client
                    .publish(topic, qos, retain, "{}".to_string())
                    .await
                    .expect("publish");
            }
        }
    }
    // Everything the attackers sent and got is through once a marker published on their own
    // node comes back (jetmq's least-privilege NATS user may not subscribe to `>`, so an
    // attacker's `#` sees only its own node's messages).
    let mut seen = Vec::new();
    for (i, (attacker, port)) in attackers.iter_mut().zip([port_a, port_b]).enumerate() {
        let marker = format!("marker/{i}");
        let mut via = client(&format!("marker-{i}"), port, true).await;
        let got = received_until_marker(attacker, &mut via, &marker).await;
        if i == 0 {
            // The attacker on the publisher's node had its application messages.
            assert!(got.iter().any(|t| t == "orders/0"), "{got:?}");
        }
        seen.extend(got);
    }
    let after = probe.streams();
    assert_eq!(
        before, after,
        "every stream, its messages and consumers intact"
    );

    // No message of NATS's or jetmq's own reached an MQTT client.
    let leaked: Vec<&String> = seen
        .iter()
        .filter(|t| t.starts_with('$') || t.starts_with("_INBOX") || t.starts_with("_R_"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");

    // The victim's session still works: its last queued message comes, the retained one too.
    let mut s = client("victim", port_a, false).await;
    assert!(s.session_present);
    assert_eq!(s.next().await.topic, "orders/3");
    let mut late = client("late", port_b, true).await;
    late.subscribe("status/#", QoS::AtLeastOnce).await;
    assert_eq!(&late.next().await.payload[..], b"open");
    drop((s, late, p, attackers));
    a.shutdown().await.expect("clean shutdown");
    b.shutdown().await.expect("clean shutdown");
}
