//! The JetStream store backend against a real nats-server with JetStream: the store contract
//! suite (the same cases the embedded store passes), and jetmq keeping its state there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jetmq::jetstream::JetStreamBackend;
use jetmq::nats_config::NatsConfig;
use jetmq_core::js::memory::MemoryStore;
use jetmq_core::js::{
    Header, StoreError, StoreReply, StoreRequest, Stream, EXPECTED_LAST_SUBJECT_SEQUENCE,
};
use jetmq_store::contract;
use rumqttc::QoS;
use tokio::time::timeout;

mod common;
use common::client::{client, DEADLINE};
use common::nats_server::{
    free_port, jetmq_permissions, permissions_block, probe, until_answered, NatsServer,
};
use common::{Shell, TempDir};

fn nats_config(server: &NatsServer) -> NatsConfig {
    let mut config = NatsConfig::from_url(&server.url(), "test").expect("a NATS URL");
    config.api_timeout = Duration::from_secs(10);
    config
}

#[test]
fn store_contract_on_jetstream() {
    let dir = TempDir::new("js-contract");
    let server = NatsServer::with_jetstream(free_port(), &dir.0);
    let backend = JetStreamBackend::connect(&nats_config(&server), "contract").expect("connect");
    contract::run_all(&|r| backend.execute(r), "a");
    backend.stop();
    // A second backend (a restarted broker) finds the streams and shares them.
    let again = JetStreamBackend::connect(&nats_config(&server), "contract").expect("connect");
    contract::run_all(&|r| again.execute(r), "b");
}

/// Writes on `exec` conditional on the subject's last sequence, as fleet nodes write session
/// records: refused unless the subject's message is still the one expected (0: none).
fn conditional_writes(exec: &dyn Fn(StoreRequest) -> Result<StoreReply, StoreError>) {
    let write = |expected: u64| {
        exec(StoreRequest::Publish {
            stream: Stream::Sessions,
            subject: "$MQTT.sess.conditional".into(),
            headers: vec![Header {
                name: EXPECTED_LAST_SUBJECT_SEQUENCE,
                value: expected.to_string().into(),
            }],
            payload: Bytes::from_static(b"{}"),
        })
    };
    let Ok(StoreReply::Stored { seq: first }) = write(0) else {
        panic!("a first record expecting none");
    };
    assert!(
        matches!(write(0), Err(StoreError::Rejected(_))),
        "there is one now"
    );
    let Ok(StoreReply::Stored { seq: second }) = write(first) else {
        panic!("over the record read");
    };
    assert!(second > first);
    assert!(
        matches!(write(first), Err(StoreError::Rejected(_))),
        "another write came between"
    );
    let last = exec(StoreRequest::GetLast {
        stream: Stream::Sessions,
        subject: "$MQTT.sess.conditional".into(),
    });
    assert!(
        matches!(&last, Ok(StoreReply::Message(Some(m))) if m.seq == second),
        "{last:?}"
    );
}

/// JetStream and the memory store the fleet tests share between nodes agree on conditional
/// writes.
#[test]
fn conditional_record_writes_on_jetstream_and_in_memory() {
    let dir = TempDir::new("js-conditional");
    let server = NatsServer::with_jetstream(free_port(), &dir.0);
    let backend = JetStreamBackend::connect(&nats_config(&server), "conditional").expect("connect");
    conditional_writes(&|r| backend.execute(r));
    let memory = std::cell::RefCell::new(MemoryStore::default());
    conditional_writes(&|r| memory.borrow_mut().execute(&r));
}

/// jetmq on `shell` keeping its state in the JetStream of `nats`.
async fn jetmq_on(shell: Shell, nats: &NatsServer) -> (common::Server, u16) {
    let backend = JetStreamBackend::connect(&nats_config(nats), "jetmq").expect("connect");
    common::serve_with(shell, "", Arc::new(backend)).await
}

/// A persistent session, its queued QoS 1 message and a retained message live in JetStream:
/// a new jetmq process on the same NATS server has them all, and the delivered message is
/// released from the stream once the client acknowledged it.
async fn state_survives_a_jetmq_restart(shell: Shell) {
    let dir = TempDir::new("js-restart");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    let (server, port) = jetmq_on(shell, &nats).await;

    let mut sub = client("js-sub", port, false).await;
    sub.subscribe("alerts/#", QoS::AtLeastOnce).await;
    drop(sub);
    let mut publisher = client("js-pub", port, true).await;
    publisher
        .publish("alerts/fire", QoS::AtLeastOnce, false, "queued")
        .await; // PUBACK: stored in JetStream for js-sub
    publisher
        .publish("status/door", QoS::AtLeastOnce, true, "open")
        .await;
    drop(publisher);
    server.shutdown().await.expect("clean stop");

    // A new jetmq process: nothing of the old one but the NATS server.
    let (server, port) = jetmq_on(shell, &nats).await;
    let mut sub = client("js-sub", port, false).await;
    assert!(sub.session_present, "the session came back from JetStream");
    let got = sub.next().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.qos),
        ("alerts/fire", &b"queued"[..], QoS::AtLeastOnce)
    );
    let mut late = client("js-late", port, true).await;
    late.subscribe("status/#", QoS::AtMostOnce).await;
    let retained = late.next().await;
    assert_eq!(
        (
            retained.topic.as_str(),
            &retained.payload[..],
            retained.retain
        ),
        ("status/door", &b"open"[..], true)
    );

    // The acknowledged message leaves the interest-retained stream.
    let reader = JetStreamBackend::connect(&nats_config(&nats), "probe").expect("connect");
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let last = reader.execute(StoreRequest::GetLast {
            stream: Stream::Messages,
            subject: "$MQTT.msgs.alerts.fire".into(),
        });
        match last {
            Ok(StoreReply::Message(None)) => break,
            Ok(StoreReply::Message(Some(_))) => {
                assert!(std::time::Instant::now() < deadline, "never acknowledged");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("get last: {other:?}"),
        }
    }
    drop(sub);
    drop(late);
    server.shutdown().await.expect("clean stop");
}

/// State written by the NATS server's own MQTT support is readable by jetmq on the same
/// JetStream: a persistent session (its subscription keeps working through jetmq) and a
/// retained message.
async fn reads_what_the_nats_servers_mqtt_wrote(shell: Shell) {
    let dir = TempDir::new("js-compat");
    let mqtt_port = free_port();
    let nats = NatsServer::with_mqtt(free_port(), mqtt_port, &dir.0);
    let mut sub = client("compat-s", mqtt_port, false).await;
    sub.subscribe("compat/#", QoS::AtLeastOnce).await;
    drop(sub);
    let mut publisher = client("compat-p", mqtt_port, true).await;
    publisher
        .publish("compat/config", QoS::AtLeastOnce, true, "v1")
        .await;
    drop(publisher);

    let (server, port) = jetmq_on(shell, &nats).await;
    let mut sub = client("compat-s", port, false).await;
    assert!(
        sub.session_present,
        "the NATS server's session record was read"
    );
    let mut publisher = client("compat-p2", port, true).await;
    publisher
        .publish("compat/live", QoS::AtLeastOnce, false, "through jetmq")
        .await;
    let got = sub.next().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("compat/live", &b"through jetmq"[..]),
        "the restored subscription delivers"
    );
    let mut late = client("compat-late", port, true).await;
    late.subscribe("compat/config", QoS::AtMostOnce).await;
    let retained = late.next().await;
    assert_eq!(
        (
            retained.topic.as_str(),
            &retained.payload[..],
            retained.retain
        ),
        ("compat/config", &b"v1"[..], true)
    );
    drop(sub);
    drop(publisher);
    drop(late);
    server.shutdown().await.expect("clean stop");
}

/// While the NATS server is away, QoS 0 goes on between local clients, and a QoS 1 publish
/// is never acknowledged falsely: the 3.1.1 publisher's connection is closed so it sends
/// again, and the message is not delivered. Once NATS is back (jetmq reconnects by itself),
/// QoS 1 works again.
async fn while_nats_is_down_nothing_is_acknowledged_falsely(shell: Shell) {
    let dir = TempDir::new("js-down");
    let port = free_port();
    let nats = NatsServer::with_jetstream(port, &dir.0);
    let backend = JetStreamBackend::connect(&nats_config(&nats), "jetmq").expect("connect");
    let (server, mqtt) = common::serve_with(
        shell,
        &format!("[nats]\nurl = \"{}\"\n", nats.url()),
        Arc::new(backend),
    )
    .await;
    let mut sub = client("down-sub", mqtt, true).await;
    sub.subscribe("local/#", QoS::AtLeastOnce).await;
    let mut publisher = client("down-pub", mqtt, true).await;
    publisher
        .publish("local/before", QoS::AtLeastOnce, false, "1")
        .await;
    assert_eq!(sub.next().await.topic, "local/before");

    drop(nats);
    publisher
        .publish("local/qos0", QoS::AtMostOnce, false, "2")
        .await;
    assert_eq!(sub.next().await.topic, "local/qos0", "QoS 0 goes on");
    publisher
        .client
        .publish("local/qos1", QoS::AtLeastOnce, false, "3")
        .await
        .expect("publish");
    tokio::select! {
        Some(()) = publisher.acks.recv() => panic!("a QoS 1 publish was acknowledged without NATS"),
        ended = timeout(DEADLINE, publisher.ended.recv()) => {
            ended.expect("the publisher's connection is closed in time");
        }
    }

    let _nats = NatsServer::with_jetstream(port, &dir.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut again = client("down-pub", mqtt, true).await;
        again
            .client
            .publish("local/after", QoS::AtLeastOnce, false, "4")
            .await
            .expect("publish");
        let acked = tokio::select! {
            a = timeout(DEADLINE, again.acks.recv()) => matches!(a, Ok(Some(()))),
            _ = again.ended.recv() => false,
        };
        if acked {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "QoS 1 never worked again"
        );
    }
    let next = sub.next().await;
    assert_eq!(
        next.topic, "local/after",
        "the unacknowledged message was not delivered"
    );
    server.shutdown().await.expect("clean stop");
}

for_each_shell!(
    state_survives_a_jetmq_restart,
    reads_what_the_nats_servers_mqtt_wrote,
    while_nats_is_down_nothing_is_acknowledged_falsely
);

/// The `[nats]` options that reach the server: user and password (in the URL and as keys), a
/// token, and a JetStream domain (the API under `$JS.<domain>.API`, which the documented
/// permissions name for that domain). Wrong credentials are refused (no request is
/// answered); the right ones work.
#[test]
fn credentials_token_and_domain_against_a_real_server() {
    let config = |toml: &str| {
        let mut c = jetmq::config::ServerConfig::default();
        c.apply_toml(toml).expect("a valid [nats] table");
        let mut n = c.nats.expect("a NATS server");
        n.api_timeout = Duration::from_secs(3);
        n
    };
    let dir = TempDir::new("js-creds");
    let port = free_port();
    // jetmq's user has the documented permissions for a domain: the API under both
    // prefixes (the server of the domain checks after mapping `$JS.hub.API` to `$JS.API`).
    let (mut publish, subscribe) = jetmq_permissions("$JS.hub.API", &[]);
    publish.extend(jetmq_permissions("$JS.API", &[]).0);
    let _nats = NatsServer::with_settings(
        port,
        &dir.0,
        "domain: hub",
        &format!(
            "authorization {{ users: [ {{ user: jetmq, password: s3cret, {} }} ] }}",
            permissions_block(&publish, &subscribe)
        ),
    );
    let good = [
        format!("[nats]\nurl = \"nats://jetmq:s3cret@127.0.0.1:{port}\"\ndomain = \"hub\"\n"),
        format!(
            "[nats]\nurl = \"nats://127.0.0.1:{port}\"\nuser = \"jetmq\"\npassword = \"s3cret\"\n\
             domain = \"hub\"\n"
        ),
    ];
    for toml in &good {
        let backend = JetStreamBackend::connect(&config(toml), "creds").expect("connect");
        until_answered(&backend);
    }
    // Wrong password; right credentials but no domain (the local API has no JetStream here).
    let bad = [
        format!("[nats]\nurl = \"nats://jetmq:wrong@127.0.0.1:{port}\"\ndomain = \"hub\"\n"),
        format!("[nats]\nurl = \"nats://jetmq:s3cret@127.0.0.1:{port}\"\ndomain = \"elsewhere\"\n"),
    ];
    std::thread::scope(|scope| {
        for toml in &bad {
            scope.spawn(move || {
                let backend = JetStreamBackend::connect(&config(toml), "bad").expect("connect");
                let result = backend.execute(probe());
                assert!(result.is_err(), "{toml}: answered: {result:?}");
            });
        }
    });

    let dir = TempDir::new("js-token");
    let port = free_port();
    let _nats = NatsServer::with_settings(port, &dir.0, "", "authorization { token: t0ken }");
    let backend = JetStreamBackend::connect(
        &config(&format!(
            "[nats]\nurl = \"nats://127.0.0.1:{port}\"\ntoken = \"t0ken\"\n"
        )),
        "token",
    )
    .expect("connect");
    until_answered(&backend);
}

/// `jetmq sessions` on JetStream: the administration lists a session kept there and deletes
/// it (record and consumer), so the client finds no session afterwards.
#[tokio::test]
async fn sessions_in_jetstream_are_listed_and_deleted() {
    let dir = TempDir::new("js-admin");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    let (server, port) = jetmq_on(Shell::Tokio, &nats).await;
    let mut s = client("js-admin-s", port, false).await;
    s.subscribe("admin/#", QoS::AtLeastOnce).await;
    drop(s);
    server.shutdown().await.expect("clean stop");

    let mut config = jetmq::config::ServerConfig::default();
    config.set_nats(&nats.url(), "test").expect("a NATS URL");
    let backend = JetStreamBackend::connect(&nats_config(&nats), "admin").expect("connect");
    let mut admin = jetmq::admin::Admin::open(&config, &backend).expect("read JetStream");
    let listed = admin.sessions();
    let found = listed
        .iter()
        .find(|i| i.key.client_id == "js-admin-s")
        .expect("the session is listed");
    assert_eq!(
        found
            .subscriptions
            .iter()
            .map(|f| f.as_ref())
            .collect::<Vec<&str>>(),
        ["admin/#"]
    );
    let key = found.key.clone();
    assert_eq!(admin.delete(key), Ok(true));
    drop(admin);

    let (server, port) = jetmq_on(Shell::Tokio, &nats).await;
    let s = client("js-admin-s", port, false).await;
    assert!(!s.session_present, "the session was deleted from JetStream");
    drop(s);
    server.shutdown().await.expect("clean stop");
}

/// `jetmq sessions delete` on JetStream while a fleet node runs: the session's client, online
/// there, is disconnected, and the session is gone when it comes back.
#[tokio::test]
async fn a_session_deleted_while_its_client_is_online_ends_on_its_node() {
    let dir = TempDir::new("js-admin-live");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    let backend = JetStreamBackend::connect(&nats_config(&nats), "jetmq").expect("connect");
    let (server, port) = common::serve_with(
        Shell::Tokio,
        &format!("[nats]\nurl = \"{}\"\n", nats.url()),
        Arc::new(backend),
    )
    .await;
    let mut s = client("js-live", port, false).await;
    s.subscribe("live/#", QoS::AtMostOnce).await;

    let mut config = jetmq::config::ServerConfig::default();
    config.set_nats(&nats.url(), "test").expect("a NATS URL");
    let admin_link = JetStreamBackend::connect(&nats_config(&nats), "admin").expect("connect");
    // The node's NATS subscriptions (the connect notices' among them, sent before the
    // bridge's) are in place once a NATS message reaches its MQTT subscriber.
    let ping = jetmq_core::broker::Action::NatsPublish {
        subject: "live.ping".into(),
        headers: Vec::new(),
        payload: bytes::Bytes::from_static(b"ping"),
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        admin_link
            .publish(std::slice::from_ref(&ping))
            .expect("published");
        if timeout(Duration::from_millis(200), s.next()).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bridge never came up"
        );
    }
    let mut admin = jetmq::admin::Admin::open(&config, &admin_link).expect("read JetStream");
    let key = admin
        .sessions()
        .into_iter()
        .find(|i| i.key.client_id == "js-live")
        .expect("the session is listed")
        .key;
    assert_eq!(admin.delete(key), Ok(true));
    let notices = admin.take_notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    admin_link.publish(&notices).expect("the notice is sent");
    timeout(DEADLINE, s.ended.recv())
        .await
        .expect("the client is disconnected in time");

    let again = client("js-live", port, false).await;
    assert!(!again.session_present, "the session was deleted");
    drop(again);
    server.shutdown().await.expect("clean stop");
}
