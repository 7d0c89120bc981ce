//! The JetStream executor against arbitrary server behaviour: whatever replies arrive (valid
//! JSON, errors, statuses, garbage, pulled messages for any consumer, in any order), it never
//! panics, and every request it was given finishes exactly once by the time its requests
//! time out or the connection is lost.

use std::collections::BTreeMap;

use bytes::Bytes;
use jetmq_core::js::jetstream::{JetStream, JetStreamConfig};
use jetmq_core::js::{RequestId, StoreReply, StoreRequest, Stream};
use jetmq_core::nats::{ConnectOptions, Headers, Message, NatsClient};
use proptest::prelude::*;

const INBOX: &str = "_INBOX.test";

/// The inbox subscription is the client's first.
const INBOX_SID: u64 = 1;

fn request(kind: u8, n: u64) -> StoreRequest {
    let consumer = format!("c{}", n % 3);
    match kind % 9 {
        0 => StoreRequest::Publish {
            stream: Stream::Messages,
            subject: format!("$MQTT.msgs.t{}", n % 5).into(),
            headers: Vec::new(),
            payload: Bytes::from_static(b"x"),
        },
        1 => StoreRequest::GetLast {
            stream: Stream::Retained,
            subject: "$MQTT.rmsgs.a".into(),
        },
        2 => StoreRequest::List {
            stream: Stream::Sessions,
            prefix: "$MQTT.sess.".into(),
        },
        3 => StoreRequest::Pending {
            consumer: consumer.into(),
            limit: usize::try_from(n % 7).unwrap_or(1),
        },
        4 => StoreRequest::Ack {
            consumer: consumer.into(),
            seq: n % 20,
        },
        5 => StoreRequest::UpsertConsumer {
            name: consumer.into(),
            filters: vec!["$MQTT.msgs.a.>".into(), "$MQTT.msgs.a.b".into()],
        },
        6 => StoreRequest::Delete {
            stream: Stream::Messages,
            seq: n % 20,
        },
        7 => StoreRequest::DeleteConsumer {
            name: consumer.into(),
        },
        _ => StoreRequest::Release {
            consumer: consumer.into(),
        },
    }
}

fn reply(kind: u8, token: u64, n: u64) -> Message {
    let on_inbox = |payload: &'static [u8], headers: Option<Headers>| Message {
        subject: format!("{INBOX}.{token}").into(),
        sid: INBOX_SID,
        reply: None,
        headers,
        payload: Bytes::from_static(payload),
    };
    let status = |code| Headers {
        status: Some(code),
        description: None,
        entries: Vec::new(),
    };
    match kind % 9 {
        0 => on_inbox(b"{}", None),
        1 => on_inbox(br#"{"stream":"$MQTT_msgs","seq":7}"#, None),
        2 => on_inbox(
            br#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#,
            None,
        ),
        3 => on_inbox(
            br#"{"message":{"subject":"$MQTT.sess.x","seq":3,"data":"e30="}}"#,
            None,
        ),
        4 => on_inbox(b"", Some(status(404))),
        5 => on_inbox(b"", Some(status(503))),
        6 => on_inbox(b"\xff not json", None),
        7 => on_inbox(b"", None),
        _ => Message {
            subject: "$MQTT.msgs.t".into(),
            sid: INBOX_SID,
            reply: Some(format!("$JS.ACK.$MQTT_msgs.c{}.1.{}.1.0.0", n % 3, n % 20).into()),
            headers: None,
            payload: Bytes::from_static(b"m"),
        },
    }
}

/// A client connected to a server that sends headers.
fn connected() -> NatsClient {
    let mut nats = NatsClient::new(ConnectOptions::default(), 1 << 20);
    nats.connection_started();
    let mut info = bytes::BytesMut::from(&b"INFO {\"server_id\":\"t\",\"headers\":true}\r\n"[..]);
    nats.received(&mut info, &mut Vec::new()).expect("INFO");
    assert!(nats.is_connected());
    nats
}

/// A connected client and an executor whose five streams exist.
fn ready() -> (NatsClient, JetStream) {
    let mut nats = connected();
    let mut js = JetStream::new(JetStreamConfig::new(INBOX));
    js.start(&mut nats);
    for token in 1..=5 {
        js.on_message(&reply(0, token, 0), &mut nats);
    }
    assert!(js.is_ready());
    (nats, js)
}

/// A message consumer `c0` hands out by a pull: stream sequence `seq`.
fn pulled(seq: u64) -> Message {
    Message {
        subject: "$MQTT.msgs.t".into(),
        sid: INBOX_SID,
        reply: Some(format!("$JS.ACK.$MQTT_msgs.c0.1.{seq}.{seq}.0.0").into()),
        headers: None,
        payload: Bytes::from_static(b"m"),
    }
}

fn output(nats: &mut NatsClient) -> String {
    String::from_utf8_lossy(&nats.take_output()).into_owned()
}

#[test]
fn release_gives_back_what_was_handed_out_here() {
    let (mut nats, mut js) = ready();
    output(&mut nats);
    let pending = StoreRequest::Pending {
        consumer: "c0".into(),
        limit: 2,
    };
    js.submit(RequestId(1), pending.clone(), &mut nats);
    // A consumer not seen here yet: its info first (token 6), then the pull.
    assert!(output(&mut nats).contains("CONSUMER.INFO.$MQTT_msgs.c0"));
    js.on_message(&reply(0, 6, 0), &mut nats);
    assert!(output(&mut nats).contains("CONSUMER.MSG.NEXT.$MQTT_msgs.c0"));
    js.on_message(&pulled(7), &mut nats);
    js.on_message(&pulled(9), &mut nats);
    let finished = js.take_finished();
    assert!(
        matches!(&finished[..], [(RequestId(1), Ok(StoreReply::Messages(m)))] if m.len() == 2),
        "{finished:?}"
    );

    js.submit(
        RequestId(2),
        StoreRequest::Release {
            consumer: "c0".into(),
        },
        &mut nats,
    );
    // Both deliveries are given back, then a request whose reply says the server read them.
    let sent = output(&mut nats);
    let naks: Vec<&str> = sent.lines().filter(|l| l.starts_with("-NAK")).collect();
    assert_eq!(naks.len(), 2, "{sent}");
    assert!(
        sent.contains("PUB $JS.ACK.$MQTT_msgs.c0.1.7.7.0.0 4"),
        "{sent}"
    );
    assert!(
        sent.contains("PUB $JS.ACK.$MQTT_msgs.c0.1.9.9.0.0 4"),
        "{sent}"
    );
    let info = sent.find("$JS.API.INFO").expect("a request after the NAKs");
    assert!(info > sent.rfind("-NAK").unwrap_or(0), "{sent}");
    assert!(
        js.take_finished().is_empty(),
        "answered before the server read the NAKs"
    );
    js.on_message(&reply(0, 8, 0), &mut nats);
    let finished = js.take_finished();
    assert!(
        matches!(&finished[..], [(RequestId(2), Ok(StoreReply::Done))]),
        "{finished:?}"
    );

    // Nothing is held any more: the next read pulls, and a second release has nothing to do.
    js.submit(RequestId(3), pending, &mut nats);
    assert!(output(&mut nats).contains("CONSUMER.MSG.NEXT.$MQTT_msgs.c0"));
    js.submit(
        RequestId(4),
        StoreRequest::Release {
            consumer: "c1".into(),
        },
        &mut nats,
    );
    let finished = js.take_finished();
    assert!(
        matches!(&finished[..], [(RequestId(4), Ok(StoreReply::Done))]),
        "{finished:?}"
    );
}

#[test]
fn a_missing_consumer_is_found_missing_without_waiting_for_no_responders() {
    // With a `>` subscriber anywhere in the account (an MQTT client's `#` through the bridge),
    // NATS never says "no responders" to a pull from a consumer that does not exist: the
    // executor asks for the consumer's info (answered by JetStream itself) first.
    let (mut nats, mut js) = ready();
    output(&mut nats);
    js.submit(
        RequestId(1),
        StoreRequest::Pending {
            consumer: "c0".into(),
            limit: 5,
        },
        &mut nats,
    );
    let sent = output(&mut nats);
    assert!(sent.contains("CONSUMER.INFO.$MQTT_msgs.c0"), "{sent}");
    assert!(!sent.contains("MSG.NEXT"), "{sent}");
    let missing = Message {
        payload: Bytes::from_static(
            br#"{"error":{"code":404,"err_code":10014,"description":"consumer not found"}}"#,
        ),
        ..reply(0, 6, 0)
    };
    js.on_message(&missing, &mut nats);
    let finished = js.take_finished();
    assert!(
        matches!(&finished[..], [(RequestId(1), Ok(StoreReply::Messages(m)))] if m.is_empty()),
        "{finished:?}"
    );
    assert!(!output(&mut nats).contains("MSG.NEXT"));
}

proptest! {
    #[test]
    fn any_replies_never_panic_and_every_request_finishes_once(
        ready_first in any::<bool>(),
        steps in prop::collection::vec((any::<bool>(), any::<u8>(), 0u64..40, any::<u64>()), 0..120),
        time_out in any::<bool>(),
    ) {
        let mut nats = connected();
        let mut js = JetStream::new(JetStreamConfig::new(INBOX));
        js.start(&mut nats);
        if ready_first {
            // Every stream exists: the five look-ups succeed.
            for token in 1..=5 {
                js.on_message(&reply(0, token, 0), &mut nats);
            }
            prop_assert!(js.is_ready());
        }
        let mut next_id = 0;
        let mut finished: BTreeMap<RequestId, usize> = BTreeMap::new();
        let mut record = |js: &mut JetStream| {
            for (id, _) in js.take_finished() {
                *finished.entry(id).or_default() += 1;
            }
        };
        for (submit, kind, token, n) in steps {
            if submit {
                next_id += 1;
                js.submit(RequestId(next_id), request(kind, n), &mut nats);
            } else {
                js.on_message(&reply(kind, token, n), &mut nats);
            }
            record(&mut js);
        }
        if time_out {
            // Nothing more comes: everything in flight times out.
            js.tick(jetmq_core::time::Timestamp::from_nanos(u64::MAX / 2), &mut nats);
            record(&mut js);
        }
        js.connection_lost();
        record(&mut js);
        // Requests made before the streams were ready wait for them; the rest all ended.
        let waiting_for_setup = !js.is_ready();
        for id in 1..=next_id {
            let times = finished.get(&RequestId(id)).copied().unwrap_or(0);
            prop_assert!(times <= 1, "request {id} finished {times} times");
            prop_assert!(times == 1 || waiting_for_setup, "request {id} never finished");
        }
    }
}
