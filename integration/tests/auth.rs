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
    assert!(
        e.contains("auth.users[0].password_hash") && e.contains("plaintext"),
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

for_each_shell!(users_and_anonymous_access,);
