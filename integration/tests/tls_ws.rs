//! TLS, WebSocket and secure WebSocket listeners over real sockets on 127.0.0.1 (port 0), with
//! certificates made by rcgen in a temporary directory: MQTT round trips with rumqttc, client
//! certificate verification, the WebSocket path and subprotocol checks, and handshakes that
//! fail or never come.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{toml_path, Pki, Server, Shell};
use jetmq::config::ServerConfig;
use jetmq::store::MemoryBackend;
use jetmq_core::broker::{ConnInfo, Input, ListenerKind};
use jetmq_core::replay::Recording;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const DEADLINE: Duration = Duration::from_secs(5);

/// MQTT 3.1.1 CONNECT: client id "c", clean session, keep-alive 60 s.
const CONNECT: [u8; 15] = [
    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'c',
];
const CONNACK: [u8; 4] = [0x20, 2, 0, 0];

async fn server(shell: Shell, toml: &str) -> Server {
    recorded_server(shell, toml, None).await
}

/// A server whose broker inputs are recorded to `record`, if given.
async fn recorded_server(shell: Shell, toml: &str, record: Option<PathBuf>) -> Server {
    let mut config = ServerConfig::default();
    config.apply_toml(toml).expect("valid configuration");
    config.data_dir = None;
    config.record = record;
    common::start(shell, config, Arc::new(MemoryBackend::default()))
        .await
        .expect("server starts")
}

/// The `ConnInfo` of every connection the broker was told of, read from a recording.
fn accepted(recording: &Path) -> Vec<ConnInfo> {
    let bytes = std::fs::read(recording).expect("the recording exists");
    let recording = Recording::read(&bytes).expect("a recording of this build");
    recording
        .steps()
        .filter_map(|step| match step.expect("a step").input {
            Input::Accepted { info, .. } => Some(info),
            _ => None,
        })
        .collect()
}

/// A `[[listeners]]` entry on 127.0.0.1:0 with the test PKI's server certificate.
fn tls_listener(kind: &str, pki: &Pki, client_ca: bool, path: Option<&str>) -> String {
    let mut entry = format!(
        "[[listeners]]\nkind = \"{kind}\"\naddress = \"127.0.0.1:0\"\ncert = {}\nkey = {}\n",
        toml_path(&pki.server_cert),
        toml_path(&pki.server_key)
    );
    if client_ca {
        entry.push_str(&format!("client_ca = {}\n", toml_path(&pki.ca)));
    }
    if let Some(path) = path {
        entry.push_str(&format!("path = \"{path}\"\n"));
    }
    entry
}

/// How a test client reaches the broker.
#[derive(Clone)]
enum Via {
    Tcp,
    Tls(Arc<rustls::ClientConfig>),
    Ws(&'static str),
    Wss(Arc<rustls::ClientConfig>, &'static str),
}

fn options(id: &str, addr: SocketAddr, via: Via) -> MqttOptions {
    let port = addr.port();
    let mut o = match &via {
        Via::Tcp | Via::Tls(_) => MqttOptions::new(id, "127.0.0.1", port),
        Via::Ws(path) => MqttOptions::new(id, format!("ws://127.0.0.1:{port}{path}"), port),
        Via::Wss(_, path) => MqttOptions::new(id, format!("wss://127.0.0.1:{port}{path}"), port),
    };
    o.set_keep_alive(Duration::from_secs(30));
    match via {
        Via::Tcp => {}
        Via::Tls(config) => {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        Via::Ws(_) => {
            o.set_transport(Transport::Ws);
        }
        Via::Wss(config, _) => {
            o.set_transport(Transport::Wss(TlsConfiguration::Rustls(config)));
        }
    }
    o
}

/// A rumqttc client whose incoming packets arrive on a channel.
struct Client {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Packet>,
    /// Packets that arrived while waiting for another kind.
    backlog: VecDeque<Packet>,
    task: JoinHandle<()>,
}

/// Connects and waits for the CONNACK; the error is the connection's, if it failed first.
async fn connect(opts: MqttOptions) -> Result<Client, String> {
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let (tx, mut incoming) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    let _ = tx.send(Ok(packet));
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    let first = timeout(DEADLINE, incoming.recv())
        .await
        .map_err(|_| "no CONNACK in time".to_string())?
        .ok_or("the event loop stopped")?;
    match first? {
        Packet::ConnAck(ack) if ack.code == rumqttc::ConnectReturnCode::Success => {}
        other => return Err(format!("expected a CONNACK, got {other:?}")),
    }
    let (ptx, prx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(packet)) = incoming.recv().await {
            if ptx.send(packet).is_err() {
                return;
            }
        }
    });
    Ok(Client {
        client,
        incoming: prx,
        backlog: VecDeque::new(),
        task,
    })
}

impl Client {
    /// The first packet, in arrival order, that `pick` takes; the others stay for later.
    async fn expect<T>(&mut self, what: &str, pick: impl Fn(&Packet) -> Option<T>) -> T {
        if let Some(i) = self.backlog.iter().position(|p| pick(p).is_some()) {
            let packet = self.backlog.remove(i).expect("present");
            return pick(&packet).expect("picked");
        }
        loop {
            let packet = timeout(DEADLINE, self.incoming.recv())
                .await
                .unwrap_or_else(|_| panic!("{what} in time"))
                .unwrap_or_else(|| panic!("connection open while waiting for {what}"));
            match pick(&packet) {
                Some(found) => return found,
                None => self.backlog.push_back(packet),
            }
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
        self.expect("SUBACK", |p| match p {
            Packet::SubAck(_) => Some(()),
            _ => None,
        })
        .await;
    }

    async fn publish(&mut self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .expect("publish queued");
        self.expect("PUBACK", |p| match p {
            Packet::PubAck(_) => Some(()),
            _ => None,
        })
        .await;
    }

    async fn receive(&mut self) -> rumqttc::Publish {
        self.expect("a PUBLISH", |p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    async fn stop(self) {
        let _ = self.client.disconnect().await;
        let _ = timeout(DEADLINE, self.task).await;
    }
}

/// Subscribes with `sub`, publishes at QoS 1 with `publisher` and checks the delivery.
async fn round_trip(sub: &mut Client, publisher: &mut Client, topic: &str) {
    sub.subscribe(topic).await;
    publisher.publish(topic, "hello").await;
    let got = sub.receive().await;
    assert_eq!(got.topic, topic);
    assert_eq!(&got.payload[..], b"hello");
    assert_eq!(got.qos, QoS::AtLeastOnce);
}

async fn every_kind_of_listener_carries_mqtt_to_every_other(shell: Shell) {
    let pki = Pki::new("kinds");
    let toml = format!(
        "[[listeners]]\nkind = \"tcp\"\naddress = \"127.0.0.1:0\"\n\
         {}{}[[listeners]]\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n",
        tls_listener("tls", &pki, false, None),
        tls_listener("wss", &pki, false, Some("/ws/mqtt")),
    );
    let recording = pki.dir.0.join("kinds.rec");
    let server = recorded_server(shell, &toml, Some(recording.clone())).await;
    assert_eq!(server.local_addrs.len(), 4, "only the file's listeners");
    let [tcp, tls, wss, ws] = [0, 1, 2, 3].map(|i| server.local_addrs[i]);
    let trust = pki.client_config(None);
    let vias = [
        ("tcp", tcp, Via::Tcp),
        ("tls", tls, Via::Tls(Arc::clone(&trust))),
        ("wss", wss, Via::Wss(Arc::clone(&trust), "/ws/mqtt")),
        ("ws", ws, Via::Ws("/mqtt")),
    ];
    let mut clients = Vec::new();
    for (name, addr, via) in vias {
        let mut client = connect(options(name, addr, via))
            .await
            .unwrap_or_else(|e| panic!("{name} connects: {e}"));
        client.subscribe("kinds/#").await;
        clients.push((name, client));
    }
    for i in 0..clients.len() {
        let name = clients[i].0;
        clients[i]
            .1
            .publish(&format!("kinds/{name}"), &format!("from {name}"))
            .await;
        for (to, client) in &mut clients {
            let got = client.receive().await;
            assert_eq!(got.topic, format!("kinds/{name}"), "{name} -> {to}");
            assert_eq!(&got.payload[..], format!("from {name}").as_bytes());
            assert_eq!(got.qos, QoS::AtLeastOnce);
        }
    }
    for (_, client) in clients {
        client.stop().await;
    }
    server.shutdown().await.expect("clean shutdown");
    // The broker was told which kind of listener each connection came through.
    let infos = accepted(&recording);
    let mut kinds: Vec<String> = infos.iter().map(|i| format!("{:?}", i.listener)).collect();
    kinds.sort();
    assert_eq!(kinds, ["SecureWebSocket", "Tcp", "Tls", "WebSocket"]);
    assert!(infos.iter().all(|i| i.tls_identity.is_none()));
    assert!(infos.iter().all(|i| i.peer.starts_with("127.0.0.1:")));
}

/// Asserts that exactly `count` connections reached the broker, all through `kind` and all
/// identified as the test PKI's client certificate.
fn assert_identified(recording: &Path, kind: ListenerKind, count: usize) {
    let infos = accepted(recording);
    assert_eq!(infos.len(), count, "{infos:?}");
    for info in infos {
        assert_eq!(info.listener, kind);
        assert_eq!(
            info.tls_identity.as_deref(),
            Some("CN=device-1,O=jetmq tests")
        );
    }
}

/// Asserts that the connection failed with the TLS alert `alert` from the server.
fn refused(result: Result<Client, String>, alert: &str) {
    match result {
        Ok(_) => panic!("connected; expected the server's {alert} alert"),
        Err(e) => assert!(e.contains(alert), "expected the {alert} alert, got: {e}"),
    }
}

async fn client_certificates_are_required_and_verified_on_tls(shell: Shell) {
    let pki = Pki::new("mtls");
    let recording = pki.dir.0.join("mtls.rec");
    let server = recorded_server(
        shell,
        &tls_listener("tls", &pki, true, None),
        Some(recording.clone()),
    )
    .await;
    let addr = server.local_addrs[0];

    let anonymous = connect(options("anon", addr, Via::Tls(pki.client_config(None)))).await;
    refused(anonymous, "CertificateRequired");
    let rogue = pki.client_config(Some((&pki.rogue_cert, &pki.rogue_key)));
    let rogue = connect(options("rogue", addr, Via::Tls(rogue))).await;
    refused(rogue, "UnknownCA");

    let trusted = pki.client_config(Some((&pki.client_cert, &pki.client_key)));
    let mut sub = connect(options("sub", addr, Via::Tls(Arc::clone(&trusted))))
        .await
        .expect("a certificate signed by the CA is accepted");
    let mut publisher = connect(options("pub", addr, Via::Tls(trusted)))
        .await
        .expect("a second client with the certificate");
    round_trip(&mut sub, &mut publisher, "devices/1").await;
    sub.stop().await;
    publisher.stop().await;
    server.shutdown().await.expect("clean shutdown");
    // The refused clients never reached the broker; the others carry their identity.
    assert_identified(&recording, ListenerKind::Tls, 2);
}

async fn client_certificates_are_required_and_verified_on_wss(shell: Shell) {
    let pki = Pki::new("mwss");
    let recording = pki.dir.0.join("mwss.rec");
    let server = recorded_server(
        shell,
        &tls_listener("wss", &pki, true, None),
        Some(recording.clone()),
    )
    .await;
    let addr = server.local_addrs[0];

    let anonymous = connect(options(
        "anon",
        addr,
        Via::Wss(pki.client_config(None), "/mqtt"),
    ));
    refused(anonymous.await, "CertificateRequired");
    let rogue = pki.client_config(Some((&pki.rogue_cert, &pki.rogue_key)));
    let rogue = connect(options("rogue", addr, Via::Wss(rogue, "/mqtt"))).await;
    refused(rogue, "UnknownCA");
    let trusted = pki.client_config(Some((&pki.client_cert, &pki.client_key)));
    let mut sub = connect(options(
        "sub",
        addr,
        Via::Wss(Arc::clone(&trusted), "/mqtt"),
    ))
    .await
    .expect("a certificate signed by the CA is accepted");
    let mut publisher = connect(options("pub", addr, Via::Wss(trusted, "/mqtt")))
        .await
        .expect("a second client with the certificate");
    round_trip(&mut sub, &mut publisher, "devices/2").await;
    sub.stop().await;
    publisher.stop().await;
    server.shutdown().await.expect("clean shutdown");
    assert_identified(&recording, ListenerKind::SecureWebSocket, 2);
}

/// Opens a WebSocket to `path` on 127.0.0.1, offering `protocols` if given.
async fn ws_open(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&'static str>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<TcpStream>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    if let Some(p) = protocols {
        request
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    timeout(DEADLINE, tokio_tungstenite::client_async(request, tcp))
        .await
        .expect("handshake in time")
}

fn refused_with(result: Result<impl std::fmt::Debug, WsError>) -> StatusCode {
    match result {
        Err(WsError::Http(response)) => response.status(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

/// Reads binary messages until `want` bytes have arrived.
async fn ws_read(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, want: usize) -> Vec<u8> {
    use futures_util::StreamExt;
    let mut got = Vec::new();
    while got.len() < want {
        match timeout(DEADLINE, ws.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Message::Binary(data))) => got.extend_from_slice(&data),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
    got
}

async fn websocket_path_and_subprotocol_are_checked(shell: Shell) {
    use futures_util::{SinkExt, StreamExt};
    let server = server(
        shell,
        "[[listeners]]\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\npath = \"/broker\"\n\
         [limits]\nmax_packet_size = 4096\n",
    )
    .await;
    let addr = server.local_addrs[0];

    assert_eq!(
        refused_with(ws_open(addr, "/mqtt", Some("mqtt")).await),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        refused_with(ws_open(addr, "/", None).await),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        refused_with(ws_open(addr, "/broker", Some("mqttv3.1")).await),
        StatusCode::BAD_REQUEST,
        "only another subprotocol is offered"
    );

    // Offered among others: the answer names mqtt, and MQTT flows in binary messages.
    let (mut ws, response) = ws_open(addr, "/broker?client=1", Some("wamp, mqtt"))
        .await
        .expect("upgrade");
    assert_eq!(
        response.headers().get(header::SEC_WEBSOCKET_PROTOCOL),
        Some(&HeaderValue::from_static("mqtt"))
    );
    // A CONNECT split over two messages is one packet to the broker.
    ws.send(Message::Binary(CONNECT[..5].to_vec().into()))
        .await
        .expect("send");
    ws.send(Message::Binary(CONNECT[5..].to_vec().into()))
        .await
        .expect("send");
    assert_eq!(ws_read(&mut ws, CONNACK.len()).await, CONNACK);
    // Text messages are not MQTT: the connection is closed.
    ws.send(Message::text("hello")).await.expect("send text");
    loop {
        match timeout(DEADLINE, ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(other)) => assert!(!other.is_text(), "{other:?}"),
        }
    }

    // No subprotocol offered: served without one.
    let (mut ws, response) = ws_open(addr, "/broker", None).await.expect("upgrade");
    assert!(response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .is_none());
    ws.send(Message::Binary(CONNECT.to_vec().into()))
        .await
        .expect("send");
    assert_eq!(ws_read(&mut ws, CONNACK.len()).await, CONNACK);
    // A message larger than the maximum packet size is not buffered: the connection closes
    // (even though these 4096 PINGREQs would each be fine).
    let _ = ws
        .send(Message::Binary([0xc0, 0x00].repeat(4096).into()))
        .await;
    match timeout(DEADLINE, ws.next()).await.expect("closed in time") {
        Some(Ok(Message::Close(_)) | Err(_)) | None => {}
        Some(Ok(other)) => panic!("still open: a {}-byte message came", other.len()),
    }
    server.shutdown().await.expect("clean shutdown");
}

/// Reads until the peer closes; true if it did within the deadline.
async fn closed(socket: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    timeout(DEADLINE, socket.read_to_end(&mut sink))
        .await
        .is_ok()
}

async fn failed_or_missing_handshakes_only_close_their_socket(shell: Shell) {
    let pki = Pki::new("handshakes");
    let toml = format!(
        "{}[[listeners]]\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n\
         [limits]\nconnect_timeout_secs = 1\n",
        tls_listener("tls", &pki, false, None)
    );
    let server = server(shell, &toml).await;
    let (tls, ws) = (server.local_addrs[0], server.local_addrs[1]);

    // Plain MQTT to the TLS listener.
    let mut plain = TcpStream::connect(tls).await.expect("connect");
    plain.write_all(&CONNECT).await.expect("write");
    assert!(closed(&mut plain).await, "not TLS: closed");
    // Plain MQTT to the WebSocket listener.
    let mut plain = TcpStream::connect(ws).await.expect("connect");
    plain.write_all(&CONNECT).await.expect("write");
    assert!(closed(&mut plain).await, "not an HTTP upgrade: closed");
    // Silence: closed after connect_timeout_secs.
    let started = Instant::now();
    let mut silent = TcpStream::connect(ws).await.expect("connect");
    assert!(closed(&mut silent).await, "no handshake: closed");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // The listeners still serve.
    let mut sub = connect(options("sub", ws, Via::Ws("/mqtt")))
        .await
        .expect("ws connects");
    let mut publisher = connect(options("pub", tls, Via::Tls(pki.client_config(None))))
        .await
        .expect("tls connects");
    round_trip(&mut sub, &mut publisher, "still/up").await;
    sub.stop().await;
    publisher.stop().await;
    server.shutdown().await.expect("clean shutdown");
}

for_each_shell!(
    every_kind_of_listener_carries_mqtt_to_every_other,
    client_certificates_are_required_and_verified_on_tls,
    client_certificates_are_required_and_verified_on_wss,
    websocket_path_and_subprotocol_are_checked,
    failed_or_missing_handshakes_only_close_their_socket,
);
