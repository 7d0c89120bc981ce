//! Password authentication over real sockets: configured users with Argon2 hashes, wrong
//! passwords and anonymous clients refused with the right CONNACK codes.

use std::time::Duration;

use jetmq::config::ServerConfig;
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet};
use tokio::time::timeout;

mod common;
use common::Shell;

async fn connack(port: u16, id: &str, credentials: Option<(&str, &str)>) -> ConnectReturnCode {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    if let Some((user, password)) = credentials {
        o.set_credentials(user, password);
    }
    let (_client, mut eventloop) = AsyncClient::new(o, 10);
    loop {
        match timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .expect("an answer in time")
        {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => return ack.code,
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) => return code,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
}

async fn users_and_anonymous_access(shell: Shell) {
    let hash = jetmq::auth::hash_password(b"s3cret").expect("hash");
    let (server, port) = common::serve(
        shell,
        &format!(
        "[auth]\nallow_anonymous = false\n[[auth.users]]\nusername = \"alice\"\npassword_hash = \"{hash}\"\n"
    ))
    .await;
    assert_eq!(
        connack(port, "a", Some(("alice", "s3cret"))).await,
        ConnectReturnCode::Success
    );
    assert_eq!(
        connack(port, "b", Some(("alice", "wrong"))).await,
        ConnectReturnCode::BadUserNamePassword
    );
    assert_eq!(
        connack(port, "c", Some(("mallory", "s3cret"))).await,
        ConnectReturnCode::BadUserNamePassword
    );
    assert_eq!(
        connack(port, "d", None).await,
        ConnectReturnCode::NotAuthorized
    );
    server.shutdown().await.expect("clean stop");
}

#[test]
fn bad_auth_config_is_refused() {
    let mut c = ServerConfig::default();
    let e = c
        .apply_toml("[[auth.users]]\nusername = \"bob\"\npassword_hash = \"plaintext\"\n")
        .expect_err("not a hash")
        .to_string();
    assert!(e.contains("auth.users[0].password_hash"), "{e}");
    assert!(
        !e.contains("plaintext"),
        "a value that may be a password is never repeated: {e}"
    );
    let e = ServerConfig::default()
        .apply_toml("[[auth.users]]\nusername = \"bob\"\nscram = \"hunter2\"\n")
        .expect_err("not a SCRAM credential")
        .to_string();
    assert!(
        e.contains("auth.users[0].scram") && !e.contains("hunter2"),
        "{e}"
    );
    let hash = jetmq::auth::hash_password(b"x").expect("hash");
    let twice = format!(
        "[[auth.users]]\nusername = \"bob\"\npassword_hash = \"{hash}\"\n[[auth.users]]\nusername = \"bob\"\npassword_hash = \"{hash}\"\n"
    );
    let e = ServerConfig::default()
        .apply_toml(&twice)
        .expect_err("duplicate")
        .to_string();
    assert!(e.contains("auth.users[1].username"), "{e}");
    let e = ServerConfig::default()
        .apply_toml("[auth]\nallow_anonymus = true\n")
        .expect_err("unknown key")
        .to_string();
    assert!(e.contains("allow_anonymus"), "{e}");
}

/// The next packet the broker sends `eventloop`'s client.
async fn incoming(eventloop: &mut rumqttc::EventLoop) -> Packet {
    loop {
        match timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .expect("an answer in time")
            .expect("connected")
        {
            Event::Incoming(p) => return p,
            Event::Outgoing(_) => {}
        }
    }
}

/// Topic permissions from `[[auth.users]]`: a user subscribes only within its filters and
/// its publishes outside its topics are acknowledged (3.1.1) but never delivered, `%c`
/// standing for its client identifier.
async fn users_publish_and_subscribe_within_their_permissions(shell: Shell) {
    let hash = jetmq::auth::hash_password(b"s3cret").expect("hash");
    let (server, port) = common::serve(
        shell,
        &format!(
            "[[auth.users]]\nusername = \"dev\"\npassword_hash = \"{hash}\"\npublish = [\"dev/%c/#\"]\nsubscribe = [\"dev/#\"]\n"
        ),
    )
    .await;
    let mut o = MqttOptions::new("dev1", "127.0.0.1", port);
    o.set_credentials("dev", "s3cret");
    let (client, mut events) = AsyncClient::new(o, 10);
    assert!(
        matches!(incoming(&mut events).await, Packet::ConnAck(a) if a.code == ConnectReturnCode::Success)
    );
    for (filter, granted) in [("dev/#", true), ("#", false), ("other/+", false)] {
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let Packet::SubAck(ack) = incoming(&mut events).await else {
            panic!("expected SUBACK");
        };
        let ok = matches!(
            ack.return_codes[..],
            [rumqttc::SubscribeReasonCode::Success(_)]
        );
        assert_eq!(ok, granted, "{filter}: {:?}", ack.return_codes);
    }
    for topic in ["dev/dev2/t", "dev/dev1/t"] {
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, topic.to_string())
            .await
            .expect("publish");
    }
    // Both acknowledged (3.1.1 cannot refuse); only the own topic comes back.
    let mut acks = 0;
    let mut delivered = Vec::new();
    while acks < 2 || delivered.is_empty() {
        match incoming(&mut events).await {
            Packet::PubAck(_) => acks += 1,
            Packet::Publish(p) => delivered.push(p.topic),
            _ => {}
        }
    }
    assert_eq!(delivered, ["dev/dev1/t"]);
    server.shutdown().await.expect("clean stop");
}

/// A reload (what SIGHUP does in the binaries) replaces users and passwords for the CONNECTs
/// that follow; an invalid file changes nothing.
async fn a_reload_replaces_the_users(shell: Shell) {
    let dir = common::TempDir::new("reload");
    let user = |password: &str| {
        let hash = jetmq::auth::hash_password(password.as_bytes()).expect("hash");
        format!("[[auth.users]]\nusername = \"alice\"\npassword_hash = \"{hash}\"\n")
    };
    let file = dir.write("jetmq.toml", &user("one"));
    let cli = jetmq::config::CommandLine {
        config: Some(file.clone()),
        ..Default::default()
    };
    let mut config = ServerConfig::load(&cli).expect("valid");
    config.listen = vec!["127.0.0.1:0".parse().expect("address")];
    config.data_dir = None;
    let source = config.auth_source();
    config.auth_source = Some(source.clone());
    let server = common::start(
        shell,
        config,
        std::sync::Arc::new(jetmq::store::MemoryBackend::default()),
    )
    .await
    .expect("starts");
    let port = server.local_addrs[0].port();
    assert_eq!(
        connack(port, "a", Some(("alice", "one"))).await,
        ConnectReturnCode::Success
    );

    std::fs::write(&file, user("two")).expect("rewrite");
    let done = ServerConfig::reload_auth(&cli, &source, true).expect("reloaded");
    assert!(done.contains("1 users"), "{done}");
    assert_eq!(
        connack(port, "b", Some(("alice", "one"))).await,
        ConnectReturnCode::BadUserNamePassword
    );
    assert_eq!(
        connack(port, "c", Some(("alice", "two"))).await,
        ConnectReturnCode::Success
    );

    std::fs::write(&file, "[[auth.users]]\nusername = \"alice\"\n").expect("rewrite");
    let e = ServerConfig::reload_auth(&cli, &source, true).expect_err("no password");
    assert!(e.to_string().contains("auth.users[0]"), "{e}");
    assert_eq!(
        connack(port, "d", Some(("alice", "two"))).await,
        ConnectReturnCode::Success,
        "the previous settings stay"
    );
    server.shutdown().await.expect("clean stop");
}

for_each_shell!(
    users_and_anonymous_access,
    users_publish_and_subscribe_within_their_permissions,
    a_reload_replaces_the_users,
);

#[test]
fn permissions_must_be_topic_filters() {
    for (text, key) in [
        (
            "[[auth.users]]\nusername = \"u\"\npassword_hash = \"HASH\"\npublish = [\"a/#/b\"]\n",
            "auth.users[0].publish",
        ),
        (
            "[[auth.users]]\nusername = \"u\"\npassword_hash = \"HASH\"\nsubscribe = [\"\"]\n",
            "auth.users[0].subscribe",
        ),
        (
            "[auth]\nanonymous_subscribe = [\"a+\"]\n",
            "auth.anonymous_subscribe",
        ),
    ] {
        let hash = jetmq::auth::hash_password(b"x").expect("hash");
        let e = ServerConfig::default()
            .apply_toml(&text.replace("HASH", &hash))
            .expect_err("not a filter")
            .to_string();
        assert!(e.contains(key) && e.contains("topic filter"), "{e}");
    }
    let mut c = ServerConfig::default();
    c.apply_toml("[auth]\nanonymous_publish = []\nanonymous_subscribe = [\"public/#\"]\n")
        .expect("valid");
    assert!(
        c.broker.authenticate,
        "anonymous clients get their permissions from the shell"
    );
}
