//! The NATS client protocol: every server operation decoded (whole and in any chunks), every
//! client operation encoded byte for byte, and the client state machine's handshake,
//! keep-alive, subscriptions across reconnects and waiting publishes.

use bytes::BytesMut;
use jetmq_core::nats::client::{Full, MAX_PENDING};
use jetmq_core::nats::{
    ClientOp, ConnectOptions, Decoder, Event, Headers, NatsClient, ProtocolError, ServerOp,
};
use proptest::prelude::*;

const INFO: &[u8] = b"INFO {\"server_id\":\"S1\",\"version\":\"2.15.1\",\"headers\":true,\"max_payload\":1048576,\"jetstream\":true}\r\n";

fn decode_all(bytes: &[u8]) -> Result<Vec<ServerOp>, ProtocolError> {
    let mut d = Decoder::new(1 << 20);
    let mut buf = BytesMut::from(bytes);
    let mut ops = Vec::new();
    while let Some(op) = d.decode(&mut buf)? {
        ops.push(op);
    }
    Ok(ops)
}

const STREAM: &[u8] = b"INFO {\"server_id\":\"S1\",\"max_payload\":1024}\r\nPING\r\nPONG\r\n+OK\r\n-ERR 'Unknown Protocol Operation'\r\nMSG a.b 1 5\r\nhello\r\nMSG a.b 2 _INBOX.x 0\r\n\r\nHMSG a.c 3 18 23\r\nNATS/1.0\r\nK: v\r\n\r\nworld\r\nHMSG a.d 4 reply 16 16\r\nNATS/1.0 503\r\n\r\n\r\n";

#[test]
fn every_server_operation_decodes() {
    let ops = decode_all(STREAM).expect("valid");
    assert_eq!(ops.len(), 9);
    assert!(matches!(&ops[0], ServerOp::Info(i) if i.server_id == "S1" && i.max_payload == 1024));
    assert_eq!(ops[1], ServerOp::Ping);
    assert_eq!(ops[2], ServerOp::Pong);
    assert_eq!(ops[3], ServerOp::Ok);
    assert_eq!(ops[4], ServerOp::Err("Unknown Protocol Operation".into()));
    let ServerOp::Msg(m) = &ops[5] else { panic!() };
    assert_eq!(
        (
            m.subject.as_ref(),
            m.sid,
            m.reply.as_deref(),
            &m.payload[..]
        ),
        ("a.b", 1, None, &b"hello"[..])
    );
    let ServerOp::Msg(m) = &ops[6] else { panic!() };
    assert_eq!((m.reply.as_deref(), m.payload.len()), (Some("_INBOX.x"), 0));
    let ServerOp::Msg(m) = &ops[7] else { panic!() };
    assert_eq!(m.headers.as_ref().and_then(|h| h.get("K")), Some("v"));
    assert_eq!(&m.payload[..], b"world");
    let ServerOp::Msg(m) = &ops[8] else { panic!() };
    assert_eq!(m.headers.as_ref().and_then(|h| h.status), Some(503));
}

#[test]
fn broken_server_input_is_an_error() {
    for bad in [
        &b"FOO bar\r\n"[..],
        b"MSG a.b\r\n",
        b"MSG a.b x 5\r\nhello\r\n",
        b"MSG a.b 1 5\r\nhelloXY",
        b"HMSG a.b 1 30 20\r\n",
        b"INFO {not json}\r\n",
        b"HMSG a.b 1 4 4\r\nABCD\r\n",
    ] {
        assert!(
            decode_all(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let mut d = Decoder::new(10);
    assert_eq!(
        d.decode(&mut BytesMut::from(&b"MSG a 1 11\r\n"[..])),
        Err(ProtocolError::PayloadTooLarge(11))
    );
    let long = vec![b'x'; 70 * 1024];
    assert_eq!(decode_all(&long), Err(ProtocolError::LineTooLong));
}

#[test]
fn client_operations_encode_exactly() {
    let mut out = BytesMut::new();
    ClientOp::Pub {
        subject: "a.b",
        reply: None,
        headers: None,
        payload: b"hi",
    }
    .encode(&mut out);
    ClientOp::Pub {
        subject: "a.b",
        reply: Some("r"),
        headers: None,
        payload: b"",
    }
    .encode(&mut out);
    let h = Headers::new(vec![("Nmqtt-Pub".into(), "1".into())]);
    ClientOp::Pub {
        subject: "a",
        reply: None,
        headers: Some(&h),
        payload: b"x",
    }
    .encode(&mut out);
    ClientOp::Sub {
        subject: "a.>",
        queue: None,
        sid: 7,
    }
    .encode(&mut out);
    ClientOp::Sub {
        subject: "a.*",
        queue: Some("q"),
        sid: 8,
    }
    .encode(&mut out);
    ClientOp::Unsub { sid: 7, max: None }.encode(&mut out);
    ClientOp::Unsub {
        sid: 8,
        max: Some(3),
    }
    .encode(&mut out);
    ClientOp::Ping.encode(&mut out);
    ClientOp::Pong.encode(&mut out);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "PUB a.b 2\r\nhi\r\nPUB a.b r 0\r\n\r\nHPUB a 26 27\r\nNATS/1.0\r\nNmqtt-Pub: 1\r\n\r\nx\r\nSUB a.> 7\r\nSUB a.* q 8\r\nUNSUB 7\r\nUNSUB 8 3\r\nPING\r\nPONG\r\n"
    );
}

fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .split("\r\n")
        .map(str::to_string)
        .collect()
}

#[test]
fn the_client_connects_answers_pings_and_keeps_subscriptions_across_reconnects() {
    let mut c = NatsClient::new(ConnectOptions::default(), 1 << 20);
    let sid = c.subscribe("mqtt.>", None);
    c.publish("early", None, None, b"waited").expect("room");
    c.connection_started();
    assert!(!c.has_output(), "nothing before INFO");
    let mut events = Vec::new();
    c.received(&mut BytesMut::from(INFO), &mut events)
        .expect("valid");
    assert!(matches!(&events[..], [Event::Connected(i)] if i.jetstream));
    let out = lines(&c.take_output());
    assert!(
        out[0].starts_with("CONNECT {")
            && out[0].contains("\"headers\":true")
            && out[0].contains("\"echo\":false"),
        "{out:?}"
    );
    assert_eq!(
        &out[1..5],
        [
            format!("SUB mqtt.> {sid}"),
            "PING".into(),
            "PUB early 6".into(),
            "waited".into()
        ]
    );
    // PING is answered; messages for our subscriptions become events, others are dropped.
    events.clear();
    c.received(
        &mut BytesMut::from(&b"PING\r\nMSG mqtt.a 1 1\r\nx\r\nMSG other 99 1\r\ny\r\nPONG\r\n"[..]),
        &mut events,
    )
    .expect("valid");
    assert_eq!(&c.take_output()[..], b"PONG\r\n");
    assert!(matches!(&events[..], [Event::Message(m), Event::Pong] if m.sid == sid));
    // A reconnect sends the subscriptions again; an unsubscribed one is gone.
    let other = c.subscribe("b", Some("g"));
    assert_eq!(
        &c.take_output()[..],
        format!("SUB b g {other}\r\n").as_bytes()
    );
    c.unsubscribe(sid);
    assert_eq!(&c.take_output()[..], format!("UNSUB {sid}\r\n").as_bytes());
    c.connection_lost();
    c.connection_started();
    c.received(&mut BytesMut::from(INFO), &mut events)
        .expect("valid");
    let out = lines(&c.take_output());
    assert_eq!(out[1], format!("SUB b g {other}"));
    assert_eq!(out[2], "PING");
}

#[test]
fn tls_is_started_after_info_and_connect_waits_for_it() {
    // Asked for by the client: the server's INFO does not require it.
    let mut c = NatsClient::new(
        ConnectOptions {
            tls_required: true,
            ..ConnectOptions::default()
        },
        1 << 20,
    );
    let sid = c.subscribe("a", None);
    c.connection_started();
    let mut events = Vec::new();
    let mut buf = BytesMut::from(INFO);
    buf.extend_from_slice(b"\x16\x03\x03");
    c.received(&mut buf, &mut events)
        .expect("INFO is plain text");
    assert!(
        matches!(&events[..], [Event::UpgradeToTls(_)]),
        "{events:?}"
    );
    assert_eq!(
        &buf[..],
        b"\x16\x03\x03",
        "the TLS bytes after INFO are left alone"
    );
    assert!(!c.has_output() && !c.is_connected(), "nothing before TLS");
    assert_eq!(c.publish("p", None, None, b"x"), Ok(()), "waits for TLS");
    assert!(!c.has_output());
    events.clear();
    c.tls_established(&mut events);
    assert!(matches!(&events[..], [Event::Connected(_)]));
    let out = lines(&c.take_output());
    assert!(out[0].contains("\"tls_required\":true"), "{out:?}");
    assert_eq!(
        &out[1..4],
        [format!("SUB a {sid}"), "PING".into(), "PUB p 1".into()]
    );
    // Only once per connection.
    events.clear();
    c.tls_established(&mut events);
    assert!(events.is_empty() && !c.has_output());

    // Required by the server: a client without the option is asked to upgrade too.
    let mut plain = NatsClient::new(ConnectOptions::default(), 1 << 20);
    plain.connection_started();
    let info = String::from_utf8_lossy(INFO)
        .replace("\"jetstream\"", "\"tls_required\":true,\"jetstream\"");
    plain
        .received(&mut BytesMut::from(info.as_bytes()), &mut events)
        .expect("valid");
    assert!(
        matches!(&events[..], [Event::UpgradeToTls(i)] if i.tls_required),
        "{events:?}"
    );
    assert!(!plain.has_output());
}

#[test]
fn publishes_without_a_connection_are_bounded() {
    let mut c = NatsClient::new(ConnectOptions::default(), 1 << 20);
    let big = vec![0u8; MAX_PENDING / 2];
    assert_eq!(c.publish("a", None, None, &big), Ok(()));
    assert_eq!(c.publish("a", None, None, &big), Err(Full));
}

proptest! {
    #[test]
    fn chunks_decode_like_the_whole(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..12)) {
        let whole = decode_all(STREAM).expect("valid");
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut d = Decoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut ops = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([STREAM.len()]) {
            buf.extend_from_slice(&STREAM[start..cut.max(start)]);
            start = cut.max(start);
            while let Some(op) = d.decode(&mut buf).expect("valid") {
                ops.push(op);
            }
        }
        prop_assert_eq!(ops, whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut c = NatsClient::new(ConnectOptions::default(), 4096);
        c.connection_started();
        let mut events = Vec::new();
        let _ = c.received(&mut BytesMut::from(&bytes[..]), &mut events);
        let _ = decode_all(&bytes);
    }
}
