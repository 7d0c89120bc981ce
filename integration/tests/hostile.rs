//! Hostile clients, on both shells where it applies: each test is an attack on the broker and
//! what it must get instead of what the attacker wants. An authentication flood is refused as
//! Server busy while a legitimate client still gets in; failed logins are rate-limited per
//! address and per user name; a web page from another origin cannot open a WebSocket; SCRAM
//! does not tell unknown users from known ones; a slow metrics client does not hold up
//! another; recordings are private; accepted sockets have TCP keepalive; one address cannot
//! take every connection; an empty retained PUBLISH on the topic `>` or `a/*` (NATS
//! wildcards, ordinary characters in MQTT) deletes that topic's retained message alone, in the
//! embedded store and in JetStream, and stays so across a restart.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use jetmq::jetstream::JetStreamBackend;
use jetmq::nats_config::NatsConfig;
use jetmq::store::{EmbeddedBackend, StoreBackend};
use jetmq_core::codec::{Auth, AuthReason, Connect, ConnectReason, Packet, ProtocolVersion};
use jetmq_core::js::{StoreReply, StoreRequest, Stream};
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

mod common;
use common::nats_client::Peer;
use common::nats_server::{admin_options, free_port, NatsServer};
use common::raw::RawClient;
use common::{Shell, TempDir};

const V5: ProtocolVersion = ProtocolVersion::V5;
const DEADLINE: Duration = Duration::from_secs(10);

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A CONNECT as `user` with `password`.
fn login(id: &str, user: &str, password: &str) -> Connect {
    let mut c = Connect::new(V5, id.into());
    c.username = Some(user.into());
    c.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    c
}

/// The CONNACK reason a CONNECT as `user` from `source` gets.
async fn connack_from(port: u16, source: IpAddr, user: &str, password: &str) -> ConnectReason {
    let mut c = RawClient::open_from(port, source).await.expect("connects");
    c.send(&Packet::Connect(Box::new(login("c", user, password))))
        .await;
    match c.next().await {
        Some(Packet::ConnAck(ack)) => ack.reason,
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

/// An `[auth]` table with `settings` and the users `names` (name, password).
fn users(settings: &str, names: &[(&str, &str)]) -> String {
    let mut toml = format!("[auth]\nallow_anonymous = false\n{settings}");
    for (name, password) in names {
        let hash = jetmq::auth::hash_password(password.as_bytes()).expect("hash");
        toml.push_str(&format!(
            "[[auth.users]]\nusername = \"{name}\"\npassword_hash = \"{hash}\"\n"
        ));
    }
    toml
}

/// A burst of CONNECTs with wrong passwords: past the pool's queue they are refused at once as
/// Server busy (0x89) instead of each starting an Argon2 check, and a legitimate client gets
/// in right after.
async fn an_authentication_flood_is_refused_as_busy(shell: Shell) {
    let toml = users(
        "threads = 1\nqueue = 4\nmax_failures_per_address = 0\nmax_failures_per_user = 0\n",
        &[("alice", "s3cret")],
    );
    let (server, port) = common::serve(shell, &toml).await;
    const FLOOD: usize = 120;
    let mut clients = Vec::new();
    for _ in 0..FLOOD {
        clients.push(RawClient::open(port).await);
    }
    // Every CONNECT is written before any answer is read: a burst.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&Packet::Connect(Box::new(login(
            &format!("flood-{i}"),
            "alice",
            "wrong",
        ))))
        .await;
    }
    let mut busy = 0;
    let mut checked = 0;
    for c in &mut clients {
        match c.next().await {
            Some(Packet::ConnAck(ack)) if ack.reason == ConnectReason::ServerBusy => busy += 1,
            Some(Packet::ConnAck(ack)) if ack.reason == ConnectReason::BadUserNameOrPassword => {
                checked += 1;
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(busy + checked, FLOOD);
    assert!(
        busy >= FLOOD / 2,
        "{busy} refused as busy, {checked} checked: the flood was not bounded"
    );
    drop(clients);
    let started = Instant::now();
    assert_eq!(
        connack_from(port, loopback(1), "alice", "s3cret").await,
        ConnectReason::Success
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await.expect("clean stop");
}

/// After the allowed failures, attempts from that address, or for that user name from any
/// address, are refused with 0x9F without a check, even with the right password.
async fn failed_logins_are_rate_limited(shell: Shell) {
    let toml = users(
        "max_failures_per_address = 3\nmax_failures_per_user = 5\nfailure_window_secs = 600\n",
        &[("alice", "s3cret"), ("bob", "b0b")],
    );
    let (server, port) = common::serve(shell, &toml).await;
    for _ in 0..3 {
        assert_eq!(
            connack_from(port, loopback(2), "bob", "guess").await,
            ConnectReason::BadUserNameOrPassword
        );
    }
    let started = Instant::now();
    assert_eq!(
        connack_from(port, loopback(2), "bob", "b0b").await,
        ConnectReason::ConnectionRateExceeded,
        "the address has used up its failures"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // Another address is not limited by that one.
    assert_eq!(
        connack_from(port, loopback(3), "bob", "b0b").await,
        ConnectReason::Success
    );
    // Guesses at alice spread over addresses: after five the user name is limited.
    for last in 10..15 {
        assert_eq!(
            connack_from(port, loopback(last), "alice", "guess").await,
            ConnectReason::BadUserNameOrPassword
        );
    }
    assert_eq!(
        connack_from(port, loopback(20), "alice", "s3cret").await,
        ConnectReason::ConnectionRateExceeded,
        "the user name has used up its failures"
    );
    assert_eq!(
        connack_from(port, loopback(21), "bob", "b0b").await,
        ConnectReason::Success
    );
    server.shutdown().await.expect("clean stop");
}

/// Opens a WebSocket to `/mqtt` on `addr` with `origin` (and the Host the client names).
async fn ws_status(addr: std::net::SocketAddr, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
    use tokio_tungstenite::tungstenite::Error as WsError;
    let mut request = format!("ws://{addr}/mqtt")
        .into_client_request()
        .expect("request");
    if let Some(o) = origin {
        request.headers_mut().insert(
            header::ORIGIN,
            HeaderValue::from_str(o).expect("header value"),
        );
    }
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    match timeout(DEADLINE, tokio_tungstenite::client_async(request, tcp))
        .await
        .expect("an answer in time")
    {
        Ok((_, response)) => response.status().as_u16(),
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected WebSocket error {e}"),
    }
}

/// A page from another site cannot open the broker from a visitor's browser: WebSocket
/// upgrades with a foreign Origin get 403, unless the listener allows that origin.
async fn websocket_origins_are_checked(shell: Shell) {
    let (server, _) = common::serve(
        shell,
        "[[listeners]]\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n\
         [[listeners]]\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n\
         allowed_origins = [\"https://app.example\"]\n",
    )
    .await;
    let (same_host, listed) = (server.local_addrs[0], server.local_addrs[1]);
    assert_eq!(
        ws_status(same_host, Some("https://evil.example")).await,
        403
    );
    assert_eq!(ws_status(same_host, Some("null")).await, 403);
    assert_eq!(ws_status(same_host, None).await, 101, "not a browser");
    let own = format!("http://{same_host}");
    assert_eq!(ws_status(same_host, Some(&own)).await, 101, "the same host");
    assert_eq!(ws_status(listed, Some("https://app.example")).await, 101);
    assert_eq!(ws_status(listed, Some("https://evil.example")).await, 403);
    let own = format!("http://{listed}");
    assert_eq!(
        ws_status(listed, Some(&own)).await,
        403,
        "only the listed ones"
    );
    server.shutdown().await.expect("clean stop");
}

/// Starts a SCRAM exchange as `user`; returns the server's first message, or the CONNACK
/// reason when the server refuses at once.
async fn scram_first(client: &mut RawClient, user: &str) -> Result<String, ConnectReason> {
    let mut c = Connect::new(V5, "scram".into());
    c.properties.authentication_method = Some(jetmq::scram::METHOD.into());
    c.properties.authentication_data = Some(Bytes::from(format!("n,,n={user},r=nonce")));
    client.send(&Packet::Connect(Box::new(c))).await;
    match client.next().await {
        Some(Packet::Auth(a)) => Ok(String::from_utf8(
            a.properties
                .authentication_data
                .unwrap_or_default()
                .to_vec(),
        )
        .expect("UTF-8")),
        Some(Packet::ConnAck(ack)) => Err(ack.reason),
        other => panic!("expected AUTH or CONNACK, got {other:?}"),
    }
}

/// The whole SCRAM exchange as `user` with `password`: the CONNACK reason.
async fn scram_login(port: u16, user: &str, password: &[u8]) -> (String, ConnectReason) {
    let mut client = RawClient::open(port).await;
    let first = scram_first(&mut client, user)
        .await
        .unwrap_or_else(|reason| panic!("{user} refused at once with {reason:?}"));
    let last = jetmq::scram::client_final(password, &format!("n={user},r=nonce"), &first)
        .expect("a valid challenge");
    let mut a = Auth::new(AuthReason::ContinueAuthentication);
    a.properties.authentication_method = Some(jetmq::scram::METHOD.into());
    a.properties.authentication_data = Some(Bytes::from(last));
    client.send(&Packet::Auth(Box::new(a))).await;
    match client.next().await {
        Some(Packet::ConnAck(ack)) => (first, ack.reason),
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

fn salt_and_iterations(first: &str) -> (String, String) {
    let get = |name: &str| {
        first
            .split(',')
            .find_map(|a| a.strip_prefix(name))
            .expect("attribute")
            .to_string()
    };
    (get("s="), get("i="))
}

/// SCRAM answers an unknown user as it answers a known one with a wrong password: a challenge
/// (with a salt that stays the same, and the usual iterations), then 0x86 at the end.
async fn scram_does_not_tell_unknown_users(shell: Shell) {
    let credential = jetmq::auth::scram_credential(b"pencil");
    let (server, port) = common::serve(
        shell,
        &format!(
            "[auth]\nallow_anonymous = false\n[[auth.users]]\nusername = \"user\"\n\
             scram = \"{credential}\"\n"
        ),
    )
    .await;
    let (known, known_reason) = scram_login(port, "user", b"crayon").await;
    let (unknown, unknown_reason) = scram_login(port, "nobody", b"crayon").await;
    assert_eq!(known_reason, ConnectReason::BadUserNameOrPassword);
    assert_eq!(unknown_reason, known_reason);
    let (known_salt, known_iterations) = salt_and_iterations(&known);
    let (unknown_salt, unknown_iterations) = salt_and_iterations(&unknown);
    assert_eq!(unknown_iterations, known_iterations);
    assert_eq!(unknown_salt.len(), known_salt.len());
    let (again, _) = scram_login(port, "nobody", b"other").await;
    assert_eq!(
        salt_and_iterations(&again).0,
        unknown_salt,
        "an unknown user's salt does not change between attempts"
    );
    assert_eq!(
        scram_login(port, "user", b"pencil").await.1,
        ConnectReason::Success
    );
    server.shutdown().await.expect("clean stop");
}

/// Stored SCRAM credentials with fewer than 4096 iterations are refused at load, naming the
/// user and the key, without the credential's keys.
#[test]
fn weak_scram_credentials_are_refused() {
    let weak = jetmq::scram::ScramCredential::new(b"pw", b"salt", 1000).to_string();
    let mut config = jetmq::config::ServerConfig::default();
    let e = config
        .apply_toml(&format!(
            "[[auth.users]]\nusername = \"carol\"\nscram = \"{weak}\"\n"
        ))
        .expect_err("1000 iterations");
    assert_eq!(e.key, "auth.users[0].scram");
    let text = e.to_string();
    assert!(text.contains("carol") && text.contains("4096"), "{text}");
    let keys = weak.rsplit('$').next().expect("keys");
    assert!(!text.contains(keys), "{text}");
}

/// An invalid `--nats` URL is refused without echoing its password.
#[test]
fn a_bad_nats_url_does_not_echo_its_password() {
    let cli = jetmq::config::CommandLine {
        nats: Some("nats://jetmq:hunter2@127.0.0.1:notaport".into()),
        ..jetmq::config::CommandLine::default()
    };
    let e = jetmq::config::ServerConfig::load(&cli)
        .expect_err("not a URL")
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}

/// A client that sends half a request and waits does not hold up another's scrape.
async fn a_slow_metrics_client_does_not_block_others(shell: Shell) {
    let (server, _) = common::serve(shell, "[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let addr = server.metrics_addr.expect("metrics address");
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.expect("connects");
        s.write_all(b"GET /metr").await.expect("writes");
        slow.push(s);
    }
    let started = Instant::now();
    let mut fast = TcpStream::connect(addr).await.expect("connects");
    fast.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("writes");
    let mut answer = Vec::new();
    timeout(Duration::from_secs(3), fast.read_to_end(&mut answer))
        .await
        .expect("answered while the slow clients wait")
        .expect("reads");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("jetmq_connections"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The slow ones are cut off at the request deadline.
    let mut cut = Vec::new();
    timeout(
        jetmq::metrics::READ_DEADLINE + Duration::from_secs(5),
        slow[0].read_to_end(&mut cut),
    )
    .await
    .expect("a slow client is cut off")
    .expect("reads");
    assert!(
        String::from_utf8_lossy(&cut).starts_with("HTTP/1.1 408"),
        "{cut:?}"
    );
    server.shutdown().await.expect("clean stop");
}

/// A recording holds passwords and payloads: it is created readable by its owner only, also
/// over an existing file.
#[cfg(unix)]
async fn recordings_are_private(shell: Shell) {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::TempDir::new("record-mode");
    let path = dir.write("recording.bin", "");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = jetmq::config::ServerConfig {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        data_dir: None,
        record: Some(path.clone()),
        ..jetmq::config::ServerConfig::default()
    };
    let server = common::start(
        shell,
        config,
        Arc::new(jetmq::store::MemoryBackend::default()),
    )
    .await
    .expect("starts");
    // The tokio shell creates the recording when its broker task starts.
    let started = Instant::now();
    loop {
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        if mode & 0o777 == 0o600 {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "mode {mode:o}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await.expect("clean stop");
}

/// The server side of a connection has TCP keepalive with the configured idle time: its row
/// in /proc/net/tcp shows the keepalive timer (2) due within that time.
#[cfg(target_os = "linux")]
async fn accepted_sockets_have_tcp_keepalive(shell: Shell) {
    let (server, port) = common::serve(shell, "[limits]\ntcp_keepalive_secs = 30\n").await;
    let (client, answer) = RawClient::connect(port, Connect::new(V5, "ka".into())).await;
    assert!(matches!(answer, Some(Packet::ConnAck(_))), "{answer:?}");
    let client_port = client.local_addr().port();
    let wanted = (
        format!("0100007F:{port:04X}"),
        format!("0100007F:{client_port:04X}"),
    );
    let started = Instant::now();
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let timer = table.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 5 && f[1] == wanted.0 && f[2] == wanted.1).then(|| f[5].to_string())
        });
        // tr:tm->when, the time in hundredths of a second (hex).
        if let Some((tr, when)) = timer.as_deref().and_then(|t| t.split_once(':')) {
            let when = u64::from_str_radix(when, 16).unwrap_or(0);
            if tr == "02" && (1_000..=3_000).contains(&when) {
                break;
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no keepalive timer on the server's socket: {timer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
    server.shutdown().await.expect("clean stop");
}

/// Connects from `source` and sends a CONNECT: the connection once its CONNACK came, `None`
/// when the broker closed it instead.
async fn attempt(port: u16, source: IpAddr) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind((source, 0).into()).ok()?;
    let mut stream = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .ok()?;
    let mut connect = bytes::BytesMut::new();
    Packet::Connect(Box::new(Connect::new(V5, "".into()))).encode(V5, &mut connect);
    stream.write_all(&connect).await.ok()?;
    let mut answer = [0u8; 64];
    match timeout(DEADLINE, stream.read(&mut answer)).await {
        Ok(Ok(n)) if n > 0 => Some(stream),
        Ok(_) => None,
        Err(_) => panic!("neither a CONNACK nor a close in time"),
    }
}

/// With `max_connections_per_address`, one address cannot open more connections than that;
/// others still can, and a closed connection gives its place back.
async fn connections_per_address_are_limited(shell: Shell) {
    let (server, port) = common::serve(shell, "[limits]\nmax_connections_per_address = 2\n").await;
    let connect = |source| attempt(port, source);
    let first = connect(loopback(5)).await.expect("first");
    let _second = connect(loopback(5)).await.expect("second");
    assert!(
        connect(loopback(5)).await.is_none(),
        "a third from one address"
    );
    let _other = connect(loopback(6)).await.expect("another address");
    drop(first);
    let started = Instant::now();
    while connect(loopback(5)).await.is_none() {
        assert!(started.elapsed() < DEADLINE, "the place was not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await.expect("clean stop");
}

/// The topics of the retained-delete attack: `>` and `*` are NATS's wildcards, ordinary
/// characters in MQTT topic names.
const WILDCARD_TOPICS: [&str; 4] = ["a/b", ">", "a/*", "*"];

/// Where the broker of a retained-delete test keeps its state across restarts.
enum StateStore {
    /// The embedded store in a data directory.
    Embedded(TempDir),
    /// JetStream on a real nats-server, which jetmq uses as its least-privilege user.
    JetStream {
        // Declared first: the server stops before its directory is removed.
        nats: NatsServer,
        _dir: TempDir,
    },
}

impl StateStore {
    fn embedded() -> Self {
        Self::Embedded(TempDir::new("wildcard-retained"))
    }

    fn jetstream() -> Self {
        let dir = TempDir::new("wildcard-retained-js");
        Self::JetStream {
            nats: NatsServer::with_jetstream(free_port(), &dir.0),
            _dir: dir,
        }
    }

    /// Starts a broker on `shell` with this store (a new process's worth of broker on the
    /// same files or the same NATS server).
    async fn start(&self, shell: Shell) -> (common::Server, u16) {
        let backend: Arc<dyn StoreBackend> = match self {
            Self::Embedded(dir) => Arc::new(
                EmbeddedBackend::open(&dir.0, jetmq_store::SyncPolicy::Always)
                    .expect("the embedded store opens")
                    .0,
            ),
            Self::JetStream { nats, .. } => {
                let mut config = NatsConfig::from_url(&nats.url(), "test").expect("a NATS URL");
                config.api_timeout = Duration::from_secs(10);
                Arc::new(JetStreamBackend::connect(&config, "jetmq").expect("connect"))
            }
        };
        common::serve_with(shell, "", backend).await
    }

    /// The retained messages the store holds, as (subject, payload), sorted, read around the
    /// broker (which must be stopped): from the embedded store's files, or from nats-server
    /// as its admin user through the JetStream API.
    async fn retained(&self) -> Vec<(String, String)> {
        let mut found = match self {
            Self::Embedded(dir) => {
                let (store, _) = jetmq_store::Store::open(jetmq_store::StoreConfig::new(&dir.0))
                    .expect("the store opens");
                let listed = store.execute(StoreRequest::List {
                    stream: Stream::Retained,
                    prefix: "".into(),
                });
                store.close().expect("the store closes");
                let Ok(StoreReply::Messages(messages)) = listed else {
                    panic!("listing the retained stream: {listed:?}");
                };
                messages
                    .into_iter()
                    .map(|m| {
                        let payload = String::from_utf8_lossy(&m.payload).into_owned();
                        (m.subject.to_string(), payload)
                    })
                    .collect()
            }
            Self::JetStream { nats, .. } => jetstream_retained(nats.port).await,
        };
        found.sort();
        found
    }
}

/// The messages of `$MQTT_rmsgs` on the nats-server on `port`, as (subject, payload): its
/// state as STREAM.INFO gives it (message count, messages per subject), each subject's
/// message by STREAM.MSG.GET, and the `>` topic's subject answered with "no message found".
async fn jetstream_retained(port: u16) -> Vec<(String, String)> {
    let mut admin = Peer::connect(port, admin_options(), None).await;
    let info = admin
        .request(
            "$JS.API.STREAM.INFO.$MQTT_rmsgs",
            r#"{"subjects_filter":">"}"#,
        )
        .await
        .expect("the admin user reads the stream");
    let state = &info["state"];
    let count = state["messages"].as_u64().expect("a message count");
    let subjects = state["subjects"].as_object().cloned().unwrap_or_default();
    assert_eq!(
        subjects
            .values()
            .filter_map(serde_json::Value::as_u64)
            .sum::<u64>(),
        count,
        "every message is under one of the subjects listed: {info}"
    );
    assert!(
        subjects.values().all(|n| n.as_u64() == Some(1)),
        "one retained message per subject: {info}"
    );
    let mut found = Vec::new();
    for subject in subjects.keys() {
        let got = admin
            .request(
                "$JS.API.STREAM.MSG.GET.$MQTT_rmsgs",
                &serde_json::json!({ "last_by_subj": subject }).to_string(),
            )
            .await
            .expect("the admin user reads messages");
        let data = got["message"]["data"].as_str().unwrap_or_default();
        let payload = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 data");
        found.push((
            subject.clone(),
            String::from_utf8_lossy(&payload).into_owned(),
        ));
    }
    let gone = admin
        .request(
            "$JS.API.STREAM.MSG.GET.$MQTT_rmsgs",
            r#"{"last_by_subj":"$MQTT.rmsgs./3E"}"#,
        )
        .await
        .expect("an answer");
    assert_eq!(
        gone["error"]["err_code"].as_u64(),
        Some(10037),
        "the retained message of `>` is gone: {gone}"
    );
    found
}

/// The retained messages a new subscriber to `#` gets, as (topic, payload), sorted: all that
/// arrive before a marker it publishes itself once subscribed (the broker sends a
/// subscription's retained messages with its SUBACK, before it reads the marker).
async fn retained_seen(port: u16, id: &str) -> Vec<(String, String)> {
    let mut reader = common::client::client(id, port, true).await;
    reader.subscribe("#", QoS::AtLeastOnce).await;
    reader
        .publish("marker/end", QoS::AtLeastOnce, false, "end")
        .await;
    let mut seen = Vec::new();
    loop {
        let p = reader.next().await;
        if p.topic == "marker/end" && !p.retain {
            break;
        }
        assert!(p.retain, "a live message before the marker: {p:?}");
        seen.push((
            p.topic.clone(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        ));
    }
    seen.sort();
    seen
}

/// What the retained message of each of `topics` is, (topic, payload), sorted.
fn kept(topics: &[&str]) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = topics
        .iter()
        .map(|t| ((*t).to_owned(), format!("kept {t}")))
        .collect();
    kept.sort();
    kept
}

/// The retained records of `topics` as the store keys them, (subject, payload), sorted: the
/// documented escape, `*` → `/2A` and `>` → `/3E`, makes each a literal subject.
fn records(topics: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut records: Vec<(String, String)> = topics
        .iter()
        .map(|(subject, topic)| (format!("$MQTT.rmsgs.{subject}"), format!("kept {topic}")))
        .collect();
    records.sort();
    records
}

/// Publishes, as a fresh client, an empty retained QoS 1 message on `topic` (a retained
/// delete) and waits for its PUBACK: by then the store has carried the delete out.
async fn delete_retained(port: u16, topic: &str) {
    let mut c = common::client::client("deleter", port, true).await;
    c.publish(topic, QoS::AtLeastOnce, true, "").await;
}

/// Retained messages on `a/b`, `>`, `a/*` and `*`; an empty retained PUBLISH on `>`, which as
/// a NATS subject would purge them all, deletes `>` alone: for a new subscriber to `#`, in
/// the store's own records, and after a restart on the same store. Then deleting `a/*` (as a
/// subject, `a.*` matches `a.b`) spares `a/b`.
async fn retained_deletes_of_wildcard_topics_spare_the_others(shell: Shell, store: StateStore) {
    let (server, port) = store.start(shell).await;
    let mut publisher = common::client::client("retainer", port, true).await;
    for topic in WILDCARD_TOPICS {
        publisher
            .publish(topic, QoS::AtLeastOnce, true, &format!("kept {topic}"))
            .await;
    }
    drop(publisher);
    assert_eq!(retained_seen(port, "seen-0").await, kept(&WILDCARD_TOPICS));
    delete_retained(port, ">").await;
    let survivors = ["a/b", "a/*", "*"];
    assert_eq!(
        retained_seen(port, "seen-1").await,
        kept(&survivors),
        "deleting `>` deleted exactly `>`"
    );
    server.shutdown().await.expect("clean stop");
    assert_eq!(
        store.retained().await,
        records(&[("a.b", "a/b"), ("a./2A", "a/*"), ("/2A", "*")]),
        "the store holds the three others"
    );

    let (server, port) = store.start(shell).await;
    assert_eq!(
        retained_seen(port, "seen-2").await,
        kept(&survivors),
        "after a restart on the same store"
    );
    delete_retained(port, "a/*").await;
    assert_eq!(
        retained_seen(port, "seen-3").await,
        kept(&["a/b", "*"]),
        "deleting `a/*` deleted exactly `a/*`"
    );
    server.shutdown().await.expect("clean stop");
    assert_eq!(
        store.retained().await,
        records(&[("a.b", "a/b"), ("/2A", "*")])
    );
    let (server, port) = store.start(shell).await;
    assert_eq!(
        retained_seen(port, "seen-4").await,
        kept(&["a/b", "*"]),
        "after another restart"
    );
    server.shutdown().await.expect("clean stop");
}

async fn retained_deletes_of_wildcard_topics_in_the_embedded_store(shell: Shell) {
    retained_deletes_of_wildcard_topics_spare_the_others(shell, StateStore::embedded()).await;
}

async fn retained_deletes_of_wildcard_topics_in_jetstream(shell: Shell) {
    retained_deletes_of_wildcard_topics_spare_the_others(shell, StateStore::jetstream()).await;
}

for_each_shell!(
    an_authentication_flood_is_refused_as_busy,
    failed_logins_are_rate_limited,
    websocket_origins_are_checked,
    scram_does_not_tell_unknown_users,
    a_slow_metrics_client_does_not_block_others,
    recordings_are_private,
    accepted_sockets_have_tcp_keepalive,
    connections_per_address_are_limited,
    retained_deletes_of_wildcard_topics_in_the_embedded_store,
    retained_deletes_of_wildcard_topics_in_jetstream,
);
