//! Golden recordings: the recordings in `tests/recordings/` were made by the scenarios below
//! (an MQTT 3.1.1 conformance-style run, an MQTT 5 run, a fleet node) and are committed. Each
//! is replayed here: it must carry this build's format and types fingerprint, and every step
//! must produce the recorded actions. So a change to a recorded type, to the file layout or to
//! what the broker does for these inputs is seen here, and made on purpose: regenerate them
//! with `JETMQ_BLESS=1 cargo test -p jetmq-core --test replay_golden` (which also writes
//! `types.json`, the traced shapes whose hash is the fingerprint, so a review shows what
//! changed).

mod harness;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use harness::{connect, pid, publish, Harness};
use jetmq_core::broker::{
    Action, AuthDecision, BrokerConfig, ConnId, Input, Permissions, SessionKey, DEFAULT_ACCOUNT,
};
use jetmq_core::codec::{
    Ack, Connect, ConnectReason, Disconnect, DisconnectReason, LastWill, Packet, PayloadFormat,
    ProtocolVersion, Publish, PublishQos, QoS, RetainHandling, Subscribe, SubscriptionOptions,
    Unsubscribe, UserProperty,
};
use jetmq_core::js::StoreError;
use jetmq_core::replay::{
    recorded_by, recorded_types, replay, types_fingerprint, Build, ReplayReport, VERSION,
};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// The command that rewrites the golden recordings.
const REGENERATE: &str = "JETMQ_BLESS=1 cargo test -p jetmq-core --test replay_golden";

fn recordings() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/recordings")
}

fn blessing() -> bool {
    std::env::var_os("JETMQ_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Rewrites the golden recording `name` with `record`'s output when blessing; otherwise
/// replays the committed one and checks its build and every step.
fn golden(name: &str, record: fn() -> Vec<u8>) {
    let path = recordings().join(name);
    if blessing() {
        let bytes = record();
        assert!(
            matches!(
                replay(&bytes),
                Ok(ReplayReport::Identical {
                    truncated: false,
                    ..
                })
            ),
            "{name}: a fresh recording must replay identically"
        );
        std::fs::create_dir_all(recordings()).expect("the recordings directory");
        std::fs::write(&path, &bytes).expect("write the golden recording");
        eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
        return;
    }
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; make it with {REGENERATE}", path.display()));
    let recorded =
        recorded_by(&bytes).unwrap_or_else(|e| panic!("{name}: {e}; regenerate with {REGENERATE}"));
    let current = Build::current();
    assert!(
        recorded.format == VERSION && recorded.types == current.types,
        "{name}: recorded types changed: bump `replay::VERSION` if the layout changed and \
         regenerate with {REGENERATE} (the file says {recorded}; this build is {current})"
    );
    match replay(&bytes) {
        Ok(ReplayReport::Identical { steps, truncated }) => {
            assert!(!truncated, "{name}: cut short");
            assert!(steps > 50, "{name}: only {steps} steps");
        }
        Ok(ReplayReport::Differs {
            step,
            input,
            actions,
            ..
        }) => panic!(
            "{name}: step {step} no longer produces the recorded actions. If the broker's \
             behaviour changed on purpose, regenerate with {REGENERATE}.\ninput: {input}\n\
             actions now: {actions}"
        ),
        Err(e) => panic!("{name}: {e}; regenerate with {REGENERATE}"),
    }
}

#[test]
fn the_recorded_types_trace_completely_and_are_committed() {
    let types = recorded_types().unwrap_or_else(|e| panic!("{e}"));
    let path = recordings().join("types.json");
    if blessing() {
        std::fs::create_dir_all(recordings()).expect("the recordings directory");
        std::fs::write(&path, format!("{types}\n")).expect("write types.json");
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; make it with {REGENERATE}", path.display()));
    assert!(
        committed.trim_end() == types,
        "recorded types changed (fingerprint now {:016x}): bump `replay::VERSION` if the layout \
         changed and regenerate with {REGENERATE}",
        types_fingerprint()
    );
}

#[test]
fn the_mqtt311_golden_recording_replays() {
    golden("mqtt311.jetmqrec", mqtt311);
}

#[test]
fn the_mqtt5_golden_recording_replays() {
    golden("mqtt5.jetmqrec", mqtt5);
}

#[test]
fn the_fleet_golden_recording_replays() {
    golden("fleet.jetmqrec", fleet);
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the scenarios.

/// Connects, answers the broker's authentication request with `decision` when it asks, and
/// returns the connection with its CONNACK.
fn login(h: &mut Harness, c: Connect, decision: Option<AuthDecision>) -> (ConnId, Option<Packet>) {
    let conn = h.connect(c);
    if let Some(decision) = decision {
        assert!(h.auth_requests.pop().is_some(), "the broker asks the shell");
        h.input(Input::Authenticated { conn, decision });
    }
    let ack = h.next_packet(conn);
    (conn, ack)
}

fn allow() -> Option<AuthDecision> {
    Some(AuthDecision::Allow {
        account: None,
        permissions: None,
    })
}

/// Acknowledges every PUBLISH `conn` has received (the whole QoS 2 exchange for QoS 2) and
/// returns their topics and payloads.
fn ack_all(h: &mut Harness, conn: ConnId) -> Vec<(String, String)> {
    let mut got = Vec::new();
    for p in h.packets(conn) {
        if let Packet::Publish(p) = p {
            got.push((
                p.topic.to_string(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            ));
            match p.qos {
                PublishQos::AtMostOnce => {}
                PublishQos::AtLeastOnce(id) => h.send(conn, &Packet::PubAck(Ack::new(id))),
                PublishQos::ExactlyOnce(id) => {
                    h.send(conn, &Packet::PubRec(Ack::new(id)));
                    h.send(conn, &Packet::PubComp(Ack::new(id)));
                }
            }
        }
    }
    got
}

/// Publishes `payload` on `topic` at QoS 2 and completes the exchange.
fn publish_qos2(h: &mut Harness, conn: ConnId, id: u16, topic: &str, payload: &str) {
    h.send(
        conn,
        &publish(topic, payload, PublishQos::ExactlyOnce(pid(id)), false),
    );
    h.send(conn, &Packet::PubRel(Ack::new(pid(id))));
    h.packets(conn);
}

fn qos1(id: u16) -> PublishQos {
    PublishQos::AtLeastOnce(pid(id))
}

fn will(topic: &str, payload: &str, delay: Option<u32>) -> LastWill {
    let mut w = LastWill {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    w.properties.will_delay_interval = delay;
    w
}

fn subscribe_with(id: u16, filters: &[(&str, SubscriptionOptions)], sub_id: Option<u32>) -> Packet {
    let mut s = Subscribe {
        packet_id: pid(id),
        properties: Default::default(),
        filters: filters.iter().map(|(f, o)| ((*f).into(), *o)).collect(),
    };
    s.properties.subscription_identifier = sub_id.and_then(std::num::NonZeroU32::new);
    Packet::Subscribe(s)
}

fn disconnect(reason: DisconnectReason) -> Packet {
    Packet::Disconnect(Box::new(Disconnect::new(reason)))
}

// ---------------------------------------------------------------------------------------------
// (a) MQTT 3.1.1, in the manner of the interoperability test suites: authentication, QoS 0/1/2
// both ways, retained messages, overlapping subscriptions, offline queueing, redelivery, wills,
// takeover, keep-alive, unsubscribe, invalid filters, $SYS, flushed bytes.

fn mqtt311() -> Vec<u8> {
    let config = BrokerConfig {
        authenticate: true,
        sys_interval: Some(Duration::from_secs(10)),
        fanout_budget: 5,
        ..BrokerConfig::default()
    };
    let mut h = Harness::with_seed(config.clone(), 311);
    h.start_recording(config, 311);
    let user = |id: &str, clean: bool, password: &'static [u8]| {
        let mut c = connect(V3, id, clean);
        c.username = Some("alice".into());
        c.password = Some(Bytes::from_static(password));
        c
    };

    // A wrong password is refused (return code 4); the right one is accepted.
    let (bad, ack) = login(
        &mut h,
        user("mallory", true, b"wrong"),
        Some(AuthDecision::Deny(ConnectReason::BadUserNameOrPassword)),
    );
    assert!(matches!(ack, Some(Packet::ConnAck(_))), "{ack:?}");
    assert!(h.closed(bad).is_some());
    let (s, _) = login(&mut h, user("sub", false, b"secret"), allow());
    let (p, _) = login(&mut h, user("pub", true, b"secret"), allow());

    // Overlapping subscriptions, QoS 0, 1 and 2 both ways.
    h.subscribe_ok(s, 1, "t/#", QoS::ExactlyOnce);
    h.subscribe_ok(s, 2, "t/+/x", QoS::AtLeastOnce);
    h.send(p, &publish("t/a/x", "qos0", PublishQos::AtMostOnce, false));
    h.send(p, &publish("t/a/x", "qos1", qos1(1), false));
    publish_qos2(&mut h, p, 2, "t/a/x", "qos2");
    let got = ack_all(&mut h, s);
    assert!(got.len() >= 3, "{got:?}");
    h.input(Input::Flushed {
        conn: s,
        bytes: h.clients[&s].sent_bytes,
    });

    // Retained messages: kept, sent on subscribe, cleared by an empty one.
    h.send(p, &publish("r/1", "kept", qos1(3), true));
    h.send(p, &publish("r/2", "also", PublishQos::AtMostOnce, true));
    let (r, _) = login(&mut h, user("retained", true, b"secret"), allow());
    h.subscribe_ok(r, 1, "r/#", QoS::AtLeastOnce);
    assert_eq!(ack_all(&mut h, r).len(), 2);
    h.send(p, &publish("r/1", "", qos1(4), true));
    h.send(r, &disconnect(DisconnectReason::NormalDisconnection));

    // Offline queueing: the persistent subscriber leaves, messages wait, it comes back.
    h.send(s, &disconnect(DisconnectReason::NormalDisconnection));
    h.send(p, &publish("t/q", "queued1", qos1(5), false));
    publish_qos2(&mut h, p, 6, "t/q", "queued2");
    h.send(p, &publish("t/q", "lost", PublishQos::AtMostOnce, false));
    let (s, ack) = login(&mut h, user("sub", false, b"secret"), allow());
    assert!(matches!(ack, Some(Packet::ConnAck(a)) if a.session_present));
    assert_eq!(ack_all(&mut h, s).len(), 2);

    // Redelivery: unacknowledged messages come again, flagged DUP, after a reconnect.
    h.send(p, &publish("t/re", "again", qos1(7), false));
    h.packets(s);
    h.input(Input::Closed { conn: s });
    let (s, _) = login(&mut h, user("sub", false, b"secret"), allow());
    assert!(ack_all(&mut h, s).iter().any(|(t, _)| t == "t/re"));

    // Wills: published when the connection drops, not after a DISCONNECT.
    h.subscribe_ok(s, 3, "will/#", QoS::AtLeastOnce);
    let mut c = user("w1", true, b"secret");
    c.will = Some(will("will/w1", "gone", None));
    let (w1, _) = login(&mut h, c, allow());
    let mut c = user("w2", true, b"secret");
    c.will = Some(will("will/w2", "never", None));
    let (w2, _) = login(&mut h, c, allow());
    h.input(Input::Closed { conn: w1 });
    h.send(w2, &disconnect(DisconnectReason::NormalDisconnection));
    assert_eq!(ack_all(&mut h, s), [("will/w1".into(), "gone".into())]);

    // Takeover: the same client id connecting again closes the older connection.
    let (t1, _) = login(&mut h, user("twin", true, b"secret"), allow());
    let (_t2, _) = login(&mut h, user("twin", true, b"secret"), allow());
    assert!(h.closed(t1).is_some());

    // Keep-alive: PINGREQ is answered; silence for 1.5 times the keep-alive ends it.
    let mut c = user("k", true, b"secret");
    c.keep_alive = 2;
    let (k, _) = login(&mut h, c, allow());
    h.send(k, &Packet::PingReq);
    assert_eq!(h.packets(k), [Packet::PingResp]);
    h.advance(Duration::from_secs(4));
    assert!(h.closed(k).is_some());

    // A zero-length client id with a clean session gets one assigned.
    let (anon, ack) = login(&mut h, user("", true, b"secret"), allow());
    assert!(matches!(ack, Some(Packet::ConnAck(_))));

    // An invalid filter is refused in the SUBACK; unsubscribing stops delivery.
    h.send(anon, &harness::subscribe(1, "a/#/b", QoS::AtMostOnce));
    h.packets(anon);
    h.subscribe_ok(anon, 2, "u/1", QoS::AtMostOnce);
    h.send(
        anon,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(3),
            properties: Default::default(),
            filters: vec!["u/1".into()],
        }),
    );
    h.send(p, &publish("u/1", "unheard", PublishQos::AtMostOnce, false));
    assert!(h
        .packets(anon)
        .iter()
        .all(|p| !matches!(p, Packet::Publish(_))));

    // A fan-out larger than the budget is finished by `Input::Continue`.
    let fans: Vec<ConnId> = (0..7)
        .map(|i| {
            let (c, _) = login(&mut h, user(&format!("fan{i}"), true, b"secret"), allow());
            h.subscribe_ok(c, 1, "fan", QoS::AtMostOnce);
            c
        })
        .collect();
    h.send(p, &publish("fan", "to all", PublishQos::AtMostOnce, false));
    assert!(h.wants_continue);
    while h.wants_continue {
        h.input(Input::Continue);
    }
    for c in fans {
        assert_eq!(h.publishes(c).len(), 1);
    }

    // A packet split across reads, and two packets in one read.
    let mut bytes = bytes::BytesMut::new();
    publish("t/split", "in two reads", qos1(30), false).encode(V3, &mut bytes);
    let (head, tail) = bytes.split_at(5);
    h.send_bytes(p, head);
    h.send_bytes(p, tail);
    let mut two = bytes::BytesMut::new();
    Packet::PingReq.encode(V3, &mut two);
    publish("t/split", "then one", PublishQos::AtMostOnce, false).encode(V3, &mut two);
    h.send_bytes(p, &two);
    h.packets(p);

    // $SYS: "#" does not match it; a $SYS subscription gets the statistics.
    h.subscribe_ok(anon, 4, "#", QoS::AtMostOnce);
    h.subscribe_ok(anon, 5, "$SYS/broker/clients/#", QoS::AtMostOnce);
    h.advance(Duration::from_secs(11));
    h.packets(anon);
    h.advance(Duration::from_secs(20));
    h.recording.take().expect("recording")
}

// ---------------------------------------------------------------------------------------------
// (b) MQTT 5: a restart that restores stored state, properties, topic aliases both ways,
// subscription identifiers and options, session expiry, will delay, shared subscriptions, an
// enhanced authentication exchange, an administrator discarding a session, shutdown.

fn mqtt5() -> Vec<u8> {
    let config = BrokerConfig {
        authenticate: true,
        max_session_expiry: 3600,
        topic_alias_maximum: 4,
        outbound_topic_aliases: 4,
        ..BrokerConfig::default()
    };
    // A first life, not recorded, leaves a persistent session, a queued message and a
    // retained message in the store.
    let mut first = Harness::with_seed(config.clone(), 5);
    let mut c = connect(V5, "keeper", false);
    c.properties.session_expiry_interval = Some(600);
    let (k, _) = login(&mut first, c, allow());
    first.subscribe_ok(k, 1, "keep/#", QoS::AtLeastOnce);
    first.send(k, &disconnect(DisconnectReason::NormalDisconnection));
    let (p, _) = login(&mut first, connect(V5, "p0", true), allow());
    first.send(p, &publish("keep/1", "from before", qos1(1), true));

    // The recorded life starts with the restore.
    let mut h = Harness::with_seed(config.clone(), 55);
    h.now = first.now.advanced(Duration::from_secs(5));
    h.new_broker(config.clone(), 55);
    h.start_recording(config, 55);
    h.store = std::mem::take(&mut first.store);
    for r in h.store.records() {
        h.input(Input::Restored(r));
    }
    h.input(Input::RestoreComplete);

    // The persistent session resumes with what was queued for it.
    let mut c = connect(V5, "keeper", false);
    c.properties.session_expiry_interval = Some(600);
    let (k, ack) = login(&mut h, c, allow());
    assert!(matches!(ack, Some(Packet::ConnAck(a)) if a.session_present));
    assert!(!ack_all(&mut h, k).is_empty());

    // Properties travel with the message; the subscription identifier is attached.
    let mut c = connect(V5, "props", true);
    c.properties.topic_alias_maximum = Some(2);
    c.properties.receive_maximum = std::num::NonZeroU16::new(5);
    c.properties.user_properties = vec![UserProperty {
        name: "tenant".into(),
        value: "blue".into(),
    }];
    let (s, _) = login(&mut h, c, allow());
    h.send(
        s,
        &subscribe_with(
            1,
            &[
                ("m/#", SubscriptionOptions::new(QoS::ExactlyOnce)),
                (
                    "keep/#",
                    SubscriptionOptions {
                        retain_as_published: true,
                        retain_handling: RetainHandling::SendIfNew,
                        ..SubscriptionOptions::new(QoS::AtLeastOnce)
                    },
                ),
            ],
            Some(7),
        ),
    );
    ack_all(&mut h, s);
    let (p, _) = login(&mut h, connect(V5, "p", true), allow());
    h.send(
        s,
        &subscribe_with(
            2,
            &[(
                "echo/#",
                SubscriptionOptions {
                    no_local: true,
                    ..SubscriptionOptions::new(QoS::AtMostOnce)
                },
            )],
            None,
        ),
    );
    h.packets(s);
    let mut m = Publish::new("m/a".into(), Bytes::from_static(b"{\"v\":1}"));
    m.qos = qos1(1);
    let props = m.properties_mut();
    props.payload_format_indicator = Some(PayloadFormat::Utf8);
    props.content_type = Some("application/json".into());
    props.response_topic = Some("reply/p".into());
    props.correlation_data = Some(Bytes::from_static(b"c-1"));
    props.message_expiry_interval = Some(60);
    props.user_properties = vec![UserProperty {
        name: "k".into(),
        value: "v".into(),
    }];
    h.send(p, &Packet::Publish(m));
    h.send(
        s,
        &publish("echo/1", "not to myself", PublishQos::AtMostOnce, false),
    );

    // Topic aliases: the client sets one, then publishes by alias only; the broker assigns
    // its own towards the subscriber.
    for (i, topic) in ["m/alias", "", "", "m/other", ""].into_iter().enumerate() {
        let mut m = Publish::new(topic.into(), Bytes::from(format!("by alias {i}")));
        m.properties_mut().topic_alias = std::num::NonZeroU16::new(if i < 3 { 1 } else { 2 });
        h.send(p, &Packet::Publish(m));
    }
    let got = ack_all(&mut h, s);
    assert!(got.len() >= 6, "{got:?}");
    h.send(s, &disconnect(DisconnectReason::NormalDisconnection));

    // Session expiry: a session left with a 30 s expiry is gone after 31 s; one resumed
    // within its expiry is kept; one that asks for more than the maximum is capped.
    let mut c = connect(V5, "brief", false);
    c.properties.session_expiry_interval = Some(30);
    let (b, _) = login(&mut h, c, allow());
    h.subscribe_ok(b, 1, "m/#", QoS::AtLeastOnce);
    let mut d = Disconnect::new(DisconnectReason::NormalDisconnection);
    d.properties.session_expiry_interval = Some(20);
    h.send(b, &Packet::Disconnect(Box::new(d)));
    let mut c = connect(V5, "capped", false);
    c.properties.session_expiry_interval = Some(u32::MAX);
    let (capped, _) = login(&mut h, c, allow());
    h.send(p, &publish("m/while-away", "waits", qos1(2), false));
    h.advance(Duration::from_secs(10));
    let mut c = connect(V5, "brief", false);
    c.properties.session_expiry_interval = Some(30);
    let (b, ack) = login(&mut h, c, allow());
    assert!(matches!(ack, Some(Packet::ConnAck(a)) if a.session_present));
    ack_all(&mut h, b);
    h.input(Input::Closed { conn: b });
    h.advance(Duration::from_secs(31));
    let mut c = connect(V5, "brief", false);
    c.properties.session_expiry_interval = Some(30);
    let (_, ack) = login(&mut h, c, allow());
    assert!(matches!(ack, Some(Packet::ConnAck(a)) if !a.session_present));
    h.input(Input::Closed { conn: capped });

    // Will delay: a client back within the delay cancels its will; one that stays away has
    // it published when the delay ends, as does one that sent DISCONNECT 0x04.
    let (wl, _) = login(&mut h, connect(V5, "listener", true), allow());
    h.subscribe_ok(wl, 1, "will/#", QoS::AtLeastOnce);
    let [back, away, now] = ["back", "away", "now"].map(|id| {
        let mut c = connect(V5, id, false);
        c.properties.session_expiry_interval = Some(60);
        c.will = Some(will(&format!("will/{id}"), id, Some(5)));
        login(&mut h, c, allow()).0
    });
    h.input(Input::Closed { conn: back });
    h.input(Input::Closed { conn: away });
    h.send(
        now,
        &disconnect(DisconnectReason::DisconnectWithWillMessage),
    );
    h.advance(Duration::from_secs(2));
    let mut c = connect(V5, "back", false);
    c.properties.session_expiry_interval = Some(60);
    login(&mut h, c, allow());
    h.advance(Duration::from_secs(4));
    let mut wills: Vec<_> = ack_all(&mut h, wl).into_iter().map(|(t, _)| t).collect();
    wills.sort();
    assert_eq!(wills, ["will/away", "will/now"]);

    // Shared subscriptions: members of one group take turns; a member that leaves hands its
    // unacknowledged messages over.
    let (g1, _) = login(&mut h, connect(V5, "g1", true), allow());
    let (g2, _) = login(&mut h, connect(V5, "g2", true), allow());
    h.subscribe_ok(g1, 1, "$share/g/jobs/#", QoS::AtLeastOnce);
    h.subscribe_ok(g2, 1, "$share/g/jobs/#", QoS::AtLeastOnce);
    for i in 0..6u16 {
        h.send(
            p,
            &publish("jobs/x", &format!("job {i}"), qos1(10 + i), false),
        );
    }
    h.packets(p);
    ack_all(&mut h, g1);
    h.packets(g2);
    h.input(Input::Closed { conn: g2 });
    ack_all(&mut h, g1);

    // Enhanced authentication: a challenge, the answer, the final data; then permissions that
    // refuse a publish.
    let mut c = connect(V5, "scram", true);
    c.properties.authentication_method = Some("TOY".into());
    c.properties.authentication_data = Some(Bytes::from_static(b"hello"));
    let e = h.connect(c);
    h.auth_requests.clear();
    h.input(Input::Authenticated {
        conn: e,
        decision: AuthDecision::Continue {
            data: Bytes::from_static(b"challenge"),
            state: Bytes::from_static(b"s1"),
        },
    });
    let mut a = jetmq_core::codec::Auth::new(jetmq_core::codec::AuthReason::ContinueAuthentication);
    a.properties.authentication_method = Some("TOY".into());
    a.properties.authentication_data = Some(Bytes::from_static(b"response"));
    h.send(e, &Packet::Auth(Box::new(a)));
    h.auth_requests.clear();
    h.input(Input::Authenticated {
        conn: e,
        decision: AuthDecision::AllowWith {
            account: Some("tenant".into()),
            data: Some(Bytes::from_static(b"final")),
            permissions: Some(Box::new(Permissions {
                publish: Some(vec!["mine/#".into()]),
                subscribe: None,
            })),
        },
    });
    h.send(e, &publish("mine/1", "allowed", qos1(1), false));
    h.send(e, &publish("yours/1", "refused", qos1(2), false));
    assert!(h.packets(e).len() >= 3);

    // An administrator discards a session; then the broker shuts down.
    h.input(Input::DiscardSession(SessionKey {
        account: DEFAULT_ACCOUNT.into(),
        client_id: "keeper".into(),
    }));
    h.input(Input::Shutdown);
    h.recording.take().expect("recording")
}

// ---------------------------------------------------------------------------------------------
// (c) A fleet node: node `a` (recorded) and node `b` share a store and NATS; what each
// publishes on NATS is handed to the other as `NatsMessage`, and queue group deliveries as
// `NatsQueueMessage`. Store replies come at once, late, out of order and failed.

/// Two fleet nodes with the store at the node that acts.
struct Fleet {
    a: Harness,
    b: Harness,
    store_at_a: bool,
    /// The NATS queue subscriptions: (at node a, subject, queue group).
    queues: Vec<(bool, String, String)>,
}

impl Fleet {
    fn node(&mut self, a: bool) -> &mut Harness {
        if a {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    /// Node `a` or `b`, holding the shared store.
    fn on(&mut self, a: bool) -> &mut Harness {
        if self.store_at_a != a {
            std::mem::swap(&mut self.a.store, &mut self.b.store);
            self.store_at_a = a;
        }
        self.node(a)
    }

    /// Hands what one node published on NATS to the other, and each message on a subject of
    /// a queue group to one member node (`a` when both are). Returns the subjects.
    fn carry(&mut self, from_a: bool) -> Vec<String> {
        for at_a in [true, false] {
            let queues = &mut self.queues;
            let node = if at_a { &mut self.a } else { &mut self.b };
            node.nats.retain(|action| match action {
                Action::NatsQueueSubscribe { subject, queue } => {
                    queues.push((at_a, subject.to_string(), queue.to_string()));
                    false
                }
                Action::NatsQueueUnsubscribe { subject, queue } => {
                    queues
                        .retain(|(n, s, q)| (*n, s.as_str(), q.as_str()) != (at_a, subject, queue));
                    false
                }
                _ => true,
            });
        }
        let published = std::mem::take(&mut self.node(from_a).nats);
        let mut subjects = Vec::new();
        for action in published {
            let Action::NatsPublish {
                subject,
                headers,
                payload,
            } = action
            else {
                continue;
            };
            subjects.push(subject.to_string());
            let headers: Vec<_> = headers
                .into_iter()
                .map(|h| (h.name.into(), h.value))
                .collect();
            let mut groups: Vec<(bool, String)> = Vec::new();
            for (at_a, filter, queue) in &self.queues {
                if jetmq_core::js::subjects::subject_matches(filter, &subject) {
                    match groups.iter_mut().find(|(_, q)| q == queue) {
                        Some(group) => group.0 |= *at_a,
                        None => groups.push((*at_a, queue.clone())),
                    }
                }
            }
            for (at_a, queue) in groups {
                self.node(at_a).input(Input::NatsQueueMessage {
                    queue: queue.into(),
                    subject: subject.clone(),
                    headers: headers.clone(),
                    payload: payload.clone(),
                });
            }
            self.node(!from_a).input(Input::NatsMessage {
                subject,
                headers,
                payload,
            });
        }
        subjects
    }
}

fn fleet() -> Vec<u8> {
    let config = BrokerConfig {
        cluster: jetmq_core::broker::Cluster::Fleet,
        ..BrokerConfig::default()
    };
    let mut f = Fleet {
        a: Harness::with_seed(config.clone(), 1),
        b: Harness::with_seed(config.clone(), 2),
        store_at_a: true,
        queues: Vec::new(),
    };
    f.a.start_recording(config, 1);
    f.a.input(Input::NatsConnected);

    // A persistent session on a, a publisher on b: b's messages reach a over NATS.
    let (s, _) = f.on(true).connect_ok(connect(V3, "s", false));
    f.a.subscribe_ok(s, 1, "t/#", QoS::AtLeastOnce);
    f.carry(true);
    let (p, _) = f.on(false).connect_ok(connect(V5, "p", true));
    f.b.send(p, &publish("t/1", "live", qos1(1), false));
    f.b.send(p, &publish("t/r", "retained", qos1(2), true));
    f.b.send(
        p,
        &publish("t/0", "at most once", PublishQos::AtMostOnce, false),
    );
    f.carry(false);
    f.on(true);
    assert!(ack_all(&mut f.a, s).len() >= 2);

    // A shared subscription on a: its queue group receives b's jobs.
    let (g, _) = f.on(true).connect_ok(connect(V5, "g", true));
    f.a.subscribe_ok(g, 1, "$share/workers/jobs/#", QoS::AtLeastOnce);
    f.carry(true);
    f.on(false);
    for i in 0..3u16 {
        f.b.send(
            p,
            &publish("jobs/1", &format!("job {i}"), qos1(10 + i), false),
        );
    }
    f.carry(false);
    f.on(true);
    ack_all(&mut f.a, g);

    // Store replies held back: completed out of order, failed, or so late that the broker
    // gave up on them first.
    f.a.auto_store = false;
    let (q, _) = {
        let c = connect(V3, "slow", false);
        let conn = f.a.connect(c);
        f.a.complete_all_held();
        (conn, f.a.next_packet(conn))
    };
    f.a.send(q, &harness::subscribe(1, "slow/#", QoS::AtLeastOnce));
    f.a.send(q, &publish("slow/1", "one", qos1(1), false));
    f.a.send(q, &publish("slow/2", "two", qos1(2), false));
    if f.a.held.len() > 1 {
        let last = f.a.held.len() - 1;
        f.a.complete_held(last, None);
    }
    if !f.a.held.is_empty() {
        f.a.complete_held(
            0,
            Some(StoreError::Unavailable("the store is restarting".into())),
        );
    }
    f.a.send(q, &publish("slow/3", "three", qos1(3), false));
    if !f.a.held.is_empty() {
        f.a.complete_held(0, Some(StoreError::Timeout));
    }
    f.a.send(q, &publish("slow/4", "four", qos1(4), false));
    f.a.advance(Duration::from_secs(11));
    f.a.auto_store = true;
    f.a.complete_all_held();
    f.a.advance(Duration::from_secs(1));
    f.a.packets(q);
    f.carry(true);

    // The session moves to b: a hears the connect notice and closes its connection there.
    let (s_on_b, present) = f.on(false).connect_ok(connect(V3, "s", false));
    assert!(present);
    let subjects = f.carry(false);
    assert!(subjects.iter().any(|s| s.starts_with("$JETMQ.conn.")));
    f.on(true);
    assert!(f.a.closed(s).is_some());
    ack_all(&mut f.b, s_on_b);
    f.b.send(s_on_b, &disconnect(DisconnectReason::NormalDisconnection));
    f.carry(false);

    // And back to a, which reads it from the store.
    let (s, present) = f.on(true).connect_ok(connect(V3, "s", false));
    assert!(present);
    f.b.send(p, &publish("t/2", "after the move", qos1(20), false));
    f.carry(false);
    f.on(true);
    ack_all(&mut f.a, s);
    f.carry(true);

    // NATS comes back: a announces its clients again; time passes for catch-up reads.
    f.a.input(Input::NatsConnected);
    f.carry(true);
    f.a.advance(Duration::from_secs(3));
    f.a.advance(Duration::from_secs(5));
    f.a.input(Input::Shutdown);
    f.a.recording.take().expect("recording")
}
