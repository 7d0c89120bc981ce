//! Shared pieces of jetmq's fuzz targets: how a target reads its settings from the first
//! input byte, and the checks every decoded packet must pass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::BytesMut;
use jetmq_core::broker::{
    Action, AuthDecision, Broker, BrokerConfig, Cluster, ConnId, ConnInfo, Input, ListenerKind,
    Outbox,
};
use jetmq_core::codec::{ConnectReason, Decoder, Direction, Packet, ProtocolVersion};
use jetmq_core::js::{RequestId, StoreError, StoreReply};
use jetmq_core::time::Now;

/// The decoder settings a fuzz input selects with its first byte: bit 0 picks MQTT 5.0 over
/// 3.1.1, bit 1 picks bytes from a server over bytes from a client.
pub fn decoder_for(selector: u8) -> Decoder {
    let direction = if selector & 2 == 0 {
        Direction::FromClient
    } else {
        Direction::FromServer
    };
    let mut decoder = Decoder::new(direction, 0);
    decoder.set_version(version_for(selector));
    decoder
}

/// The protocol version bit 0 of the selector byte picks.
pub fn version_for(selector: u8) -> ProtocolVersion {
    if selector & 1 == 0 {
        ProtocolVersion::V311
    } else {
        ProtocolVersion::V5
    }
}

/// Decodes `buf` to the end or the first error, checking each packet, and returns the
/// packets and whether an error stopped it.
pub fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> (Vec<Packet>, bool) {
    let mut packets = Vec::new();
    loop {
        match decoder.decode(buf) {
            Ok(Some(packet)) => {
                check_reencode(&packet, decoder.version());
                packets.push(packet);
            }
            Ok(None) => return (packets, false),
            Err(err) => {
                // Every error names a clause and maps to a reason code without panicking.
                assert!(!err.clause().is_empty());
                let _ = (
                    err.disconnect_reason(),
                    err.connect_reason(),
                    err.to_string(),
                );
                return (packets, true);
            }
        }
    }
}

/// A decoded packet re-encodes to exactly its encoded length.
pub fn check_reencode(packet: &Packet, version: ProtocolVersion) {
    let mut out = BytesMut::new();
    packet.encode(version, &mut out);
    assert_eq!(out.len(), packet.encoded_len(version));
}

/// Runs one fuzz input as a sequence of broker inputs. Each operation is one byte, some
/// followed by a length and that many bytes.
pub fn broker_sequence(data: &[u8]) {
    let config = BrokerConfig {
        authenticate: data.first().is_some_and(|b| b & 1 == 1),
        cluster: match data.first().map_or(0, |b| b & 6) {
            6 => Cluster::Fleet,
            2 => Cluster::Bridge,
            _ => Cluster::Standalone,
        },
        sys_interval: data
            .first()
            .is_some_and(|b| b & 8 == 8)
            .then(|| Duration::from_secs(1)),
        max_inflight: 3,
        max_queued_messages: 16,
        fanout_budget: 4,
        max_unsent_bytes: 512,
        max_retained_messages: 4,
        max_retained_bytes: 256,
        // Small client bounds, so the fuzzer reaches them (client_bounds.rs holds the property).
        max_subscriptions: 8,
        max_user_properties: 2,
        max_user_property_bytes: 64,
        max_sessions: 4,
        max_sessions_per_user: 2,
        max_idle: Some(Duration::from_secs(5)),
        client_id_from_username: data.first().is_some_and(|b| b & 16 == 16),
        ..BrokerConfig::default()
    };
    let mut broker = Broker::new(config, 1, Now::default());
    let mut out = Outbox::new();
    let mut now = Now::default();
    let mut closed: BTreeSet<u64> = BTreeSet::new();
    let mut pending: Vec<RequestId> = Vec::new();
    let mut answered: BTreeSet<RequestId> = BTreeSet::new();
    let mut auth: Vec<ConnId> = Vec::new();
    let mut sent: BTreeMap<u64, usize> = BTreeMap::new();
    let mut rest = data.get(1..).unwrap_or_default();
    let info = || ConnInfo {
        peer: "fuzz".into(),
        listener: ListenerKind::Test,
        tls_identity: None,
    };
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let conn = ConnId::new(u64::from(op & 0x03) + 1).unwrap_or_else(|| unreachable!());
        let input = match op >> 2 {
            0..=2 => Input::Accepted { conn, info: info() },
            3..=30 => {
                let len = rest
                    .first()
                    .map_or(0, |&l| usize::from(l))
                    .min(rest.len().saturating_sub(1));
                let bytes = rest.get(1..1 + len).unwrap_or_default();
                rest = rest.get(1 + len..).unwrap_or_default();
                Input::Received {
                    conn,
                    data: BytesMut::from(bytes),
                }
            }
            31..=33 => Input::Closed { conn },
            34..=36 => Input::Flushed {
                conn,
                bytes: usize::from(op) * 64,
            },
            37..=42 => {
                now = now.advanced(Duration::from_millis(u64::from(op) * 500));
                Input::Tick
            }
            43..=52 => match pending.pop() {
                Some(id) => Input::Stored {
                    id,
                    reply: if op & 1 == 0 {
                        Ok(StoreReply::Stored { seq: u64::from(op) })
                    } else {
                        Err(StoreError::Unavailable("fuzz".into()))
                    },
                },
                None => Input::Continue,
            },
            53..=55 => match auth.pop() {
                Some(conn) => Input::Authenticated {
                    conn,
                    decision: match op % 4 {
                        0 => AuthDecision::Allow {
                            account: None,
                            // Half the time with topic permissions.
                            permissions: (op & 0x04 != 0).then(|| {
                                Box::new(jetmq_core::broker::Permissions {
                                    publish: Some(vec!["a/%c/#".into(), "b".into()]),
                                    subscribe: Some(vec!["a/#".into(), "$SYS/#".into()]),
                                })
                            }),
                        },
                        1 => AuthDecision::Deny(ConnectReason::NotAuthorized),
                        2 => AuthDecision::Continue {
                            data: bytes::Bytes::from_static(b"challenge"),
                            state: bytes::Bytes::from_static(b"state"),
                        },
                        _ => AuthDecision::AllowWith {
                            account: None,
                            data: Some(bytes::Bytes::from_static(b"final")),
                            permissions: None,
                        },
                    },
                },
                None => Input::Continue,
            },
            56 => Input::Continue,
            57 => {
                // Fleet shared subscriptions: a queue group's delivery (or a handed-over
                // message), or another node's notice that it took a stored message, for a few
                // `$share/g/...` filters.
                let pick = rest.first().copied().unwrap_or(0);
                rest = rest.get(1..).unwrap_or_default();
                let filter = ["g/a", "g/#", "g/a/+", "h/a"][usize::from(pick & 0x03)];
                let queue = format!(
                    "jetmq-share-{}",
                    jetmq_core::js::records::hash::<16>(filter)
                );
                let subject = if pick & 0x40 == 0 {
                    ["a", "a.b", "$JETMQ.conn.x", "a.b/20c"][usize::from((pick >> 2) & 0x03)]
                        .to_owned()
                } else {
                    // Another node's member left: its message handed over.
                    format!("$JETMQ.handover.{queue}.a.b")
                };
                let headers = if pick & 0x10 == 0 {
                    Vec::new()
                } else {
                    vec![
                        ("Nmqtt-Pub".into(), "1".into()),
                        ("Jetmq-Seq".into(), "7".into()),
                    ]
                };
                if pick & 0x20 == 0 {
                    Input::NatsQueueMessage {
                        queue: queue.into(),
                        subject: subject.into(),
                        headers,
                        payload: bytes::Bytes::from_static(b"job"),
                    }
                } else {
                    Input::NatsMessage {
                        subject: format!("$JETMQ.taken.{queue}.{subject}").into(),
                        headers,
                        payload: bytes::Bytes::new(),
                    }
                }
            }
            58 => Input::NatsConnected,
            59..=60 => Input::NatsMessage {
                subject: ["a", "a.b", "$SYS.x", "a.b/20c", "", "a..b", "$JETMQ.conn.x"]
                    [usize::from(op & 0x03) + usize::from(op >> 7) * 3]
                    .into(),
                headers: match op & 0x30 {
                    0x00 => Vec::new(),
                    0x10 => vec![
                        ("Nmqtt-Pub".into(), "1".into()),
                        ("Jetmq-Seq".into(), "7".into()),
                    ],
                    0x20 if op & 0x40 == 0 => vec![("Jetmq-Retain".into(), "1".into())],
                    0x20 => vec![(
                        "Jetmq-Connect".into(),
                        ["1 2", "18446744073709551615 0", "x", "3"][usize::from(op & 0x03)].into(),
                    )],
                    _ => vec![
                        ("Nmqtt-Pub".into(), "9".into()),
                        ("Jetmq-Seq".into(), "x".into()),
                    ],
                },
                // A connect notice names `account\nclient id`.
                payload: bytes::Bytes::from_static(if op & 0x08 == 0 { b"nats" } else { b"$G\na" }),
            },
            61 => Input::RestoreComplete,
            62 => Input::DiscardSession(jetmq_core::broker::SessionKey {
                account: jetmq_core::broker::DEFAULT_ACCOUNT.into(),
                client_id: ["a", "b", "c", "d"][usize::from(op & 0x03)].into(),
            }),
            _ => Input::Shutdown,
        };
        if let Input::Accepted { conn, .. } = &input {
            if sent.contains_key(&conn.get()) || closed.contains(&conn.get()) {
                // The shell never reuses a connection number.
                continue;
            }
            sent.insert(conn.get(), 0);
        }
        broker.handle(now, input, &mut out);
        for action in out.drain() {
            match action {
                Action::Send { conn, bytes } => {
                    assert!(!closed.contains(&conn.get()), "bytes after close");
                    *sent.entry(conn.get()).or_default() += bytes.len();
                }
                Action::Close { conn, .. } => {
                    closed.insert(conn.get());
                }
                Action::Store { id, .. } => {
                    assert!(answered.insert(id), "request id reused");
                    pending.push(id);
                }
                Action::Authenticate(req) => auth.push(req.conn),
                Action::PauseRead { .. }
                | Action::ResumeRead { .. }
                | Action::Notice(_)
                | Action::NatsPublish { .. }
                | Action::NatsSubscribe { .. }
                | Action::NatsUnsubscribe { .. }
                | Action::NatsQueueSubscribe { .. }
                | Action::NatsQueueUnsubscribe { .. } => {}
            }
        }
        let _ = broker.next_deadline();
    }
}
