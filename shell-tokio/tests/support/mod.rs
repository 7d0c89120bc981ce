//! What the binaries' tests of both shells share (shell-mio includes this file by path): a
//! raw MQTT 3.1.1 CONNECT with credentials, and the port a binary logged.

use std::io::{Read, Write};
use std::time::Duration;

/// The CONNACK return code a 3.1.1 CONNECT with `user` and `password` gets.
pub(crate) fn connack_code(port: u16, user: &str, password: &str) -> u8 {
    let mut packet = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 60, 0, 1, b'r'];
    for field in [user, password] {
        let len = u16::try_from(field.len()).expect("short");
        packet.extend_from_slice(&len.to_be_bytes());
        packet.extend_from_slice(field.as_bytes());
    }
    let mut mqtt = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
    mqtt.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    mqtt.write_all(&[0x10, u8::try_from(packet.len()).expect("short")])
        .and_then(|()| mqtt.write_all(&packet))
        .expect("CONNECT");
    let mut connack = [0u8; 4];
    mqtt.read_exact(&mut connack).expect("a CONNACK");
    connack[3]
}

/// The loopback port a binary's `log` says it listens for MQTT on, once it has said so.
pub(crate) fn logged_port(log: &str) -> Option<u16> {
    log.lines()
        .find(|l| l.contains("listening for MQTT"))
        .and_then(|l| l.split("addr=127.0.0.1:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok())
}

/// A configuration file's user `alice` with `password`.
pub(crate) fn alice(password: &str) -> String {
    let hash = jetmq_shell::auth::hash_password(password.as_bytes()).expect("hash");
    format!("[[auth.users]]\nusername = \"alice\"\npassword_hash = \"{hash}\"\n")
}

/// Sends the running binary `pid` SIGHUP after its configuration file became alice's with
/// password `two`, and waits (at most 15 s) until that password works; `log` tells what the
/// binary said, for the failure message.
pub(crate) fn reload_to_password_two(pid: u32, port: u16, log: impl Fn() -> String) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while connack_code(port, "alice", "two") != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new password never worked: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
