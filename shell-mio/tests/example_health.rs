//! The example of a custom event loop (`examples/health.rs`) serves MQTT and its HTTP health
//! endpoint on one thread: both answer, and the health endpoint sees the MQTT connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[path = "../examples/health.rs"]
mod health;

/// MQTT 3.1.1 CONNECT: client id "h", clean session, keep-alive 60 s.
const CONNECT: [u8; 15] = [
    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'h',
];

fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("HTTP connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    answer
}

#[test]
fn one_loop_serves_mqtt_and_the_health_endpoint() {
    let (tx, rx) = std::sync::mpsc::channel();
    let any = "127.0.0.1:0".parse().expect("address");
    let thread = std::thread::spawn(move || {
        health::serve(any, any, |ready| {
            let _ = tx.send(ready);
        })
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the loop starts");

    let mut mqtt = TcpStream::connect(ready.mqtt).expect("MQTT connect");
    mqtt.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    mqtt.write_all(&CONNECT).expect("CONNECT");
    let mut connack = [0u8; 4];
    mqtt.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0]);

    let answer = get(ready.http, "/health");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        answer.contains("\"connections\":1") && answer.contains("\"sessions\":1"),
        "{answer}"
    );
    assert!(get(ready.http, "/other").starts_with("HTTP/1.1 404"));

    ready.stop.store(true, Ordering::SeqCst);
    ready.waker.wake().expect("wake");
    thread
        .join()
        .expect("the loop thread")
        .expect("the loop stops cleanly");
}
