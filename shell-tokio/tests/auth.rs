//! Password authentication over real sockets: configured users with Argon2 hashes, wrong
//! passwords and anonymous clients refused with the right CONNACK codes.

use std::time::Duration;

use jetmq::config::ServerConfig;
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet};
use tokio::time::timeout;

mod common;

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

#[tokio::test]
async fn users_and_anonymous_access() {
    let hash = jetmq::auth::hash_password(b"s3cret").expect("hash");
    let (server, port) = common::serve(&format!(
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

/// Runs `jetmq hash-password ARGS` with the password `pw` on standard input; its output.
fn hash_password_command(args: &[&str]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetmq"))
        .arg("hash-password")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"pw\n")
        .expect("write");
    let out = child.wait_with_output().expect("finishes");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_binary_hashes_passwords() {
    let hash = hash_password_command(&[]);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(jetmq::auth::check_hash(hash.trim()).is_ok());
}

#[test]
fn the_binary_prints_scram_credentials() {
    let text = hash_password_command(&["--scram"]);
    assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
    assert!(jetmq::scram::ScramCredential::parse(text.trim()).is_ok());
    let e = ServerConfig::default()
        .apply_toml("[[auth.users]]\nusername = \"bob\"\nscram = \"pw\"\n")
        .expect_err("not a credential")
        .to_string();
    assert!(e.contains("auth.users[0].scram"), "{e}");
}
