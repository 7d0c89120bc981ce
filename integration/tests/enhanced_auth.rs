//! MQTT 5.0 enhanced authentication over a real socket: SCRAM-SHA-256 with AUTH packets, at
//! CONNECT and as re-authentication, spoken by a raw client built on jetmq-core's codec
//! (rumqttc does not implement AUTH exchanges).

use bytes::Bytes;
use jetmq_core::codec::{
    Auth, AuthReason, Connect, ConnectReason, DisconnectReason, Packet, ProtocolVersion,
};

mod common;
use common::raw::RawClient;
use common::{Server, Shell};

const V5: ProtocolVersion = ProtocolVersion::V5;
const METHOD: &str = "SCRAM-SHA-256";

/// Sends an AUTH with the SCRAM method and `data`.
async fn auth(client: &mut RawClient, reason: AuthReason, data: String) {
    let mut a = Auth::new(reason);
    a.properties.authentication_method = Some(METHOD.into());
    a.properties.authentication_data = Some(Bytes::from(data));
    client.send(&Packet::Auth(Box::new(a))).await;
}

/// Expects an AUTH with reason `reason` and returns its data as text.
async fn expect_auth(client: &mut RawClient, reason: AuthReason) -> String {
    match client.next().await {
        Some(Packet::Auth(a)) => {
            assert_eq!(a.reason, reason);
            assert_eq!(a.properties.authentication_method.as_deref(), Some(METHOD));
            String::from_utf8(
                a.properties
                    .authentication_data
                    .unwrap_or_default()
                    .to_vec(),
            )
            .expect("UTF-8")
        }
        other => panic!("expected AUTH {reason:?}, got {other:?}"),
    }
}

async fn server(shell: Shell) -> (Server, u16) {
    let credential = jetmq::auth::scram_credential(b"pencil");
    common::serve(
        shell,
        &format!(
        "[auth]\nallow_anonymous = false\n[[auth.users]]\nusername = \"user\"\nscram = \"{credential}\"\n"
    ))
    .await
}

/// Runs SCRAM up to the client's final message; returns the server's first message.
async fn scram_connect(client: &mut RawClient, nonce: &str, password: &[u8]) -> String {
    let bare = format!("n=user,r={nonce}");
    let mut c = Connect::new(V5, "scram-client".into());
    c.properties.authentication_method = Some(METHOD.into());
    c.properties.authentication_data = Some(Bytes::from(format!("n,,{bare}")));
    client.send(&Packet::Connect(Box::new(c))).await;
    let server_first = expect_auth(client, AuthReason::ContinueAuthentication).await;
    assert!(
        server_first.starts_with(&format!("r={nonce}")),
        "{server_first}"
    );
    let last = jetmq::scram::client_final(password, &bare, &server_first).expect("valid");
    auth(client, AuthReason::ContinueAuthentication, last).await;
    server_first
}

/// Runs a SCRAM re-authentication with `password` up to the client's final message.
async fn reauthenticate(client: &mut RawClient, password: &[u8]) {
    let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
    auth(client, AuthReason::ReAuthenticate, format!("n,,{bare}")).await;
    let server_first = expect_auth(client, AuthReason::ContinueAuthentication).await;
    let last = jetmq::scram::client_final(password, bare, &server_first).expect("valid");
    auth(client, AuthReason::ContinueAuthentication, last).await;
}

async fn scram_sha_256_at_connect_and_as_reauthentication(shell: Shell) {
    let (server, port) = server(shell).await;

    let mut client = RawClient::open(port).await;
    scram_connect(&mut client, "fyko+d2lbbFgONRv9qkxdawL", b"pencil").await;
    let Some(Packet::ConnAck(ack)) = client.next().await else {
        panic!("no CONNACK");
    };
    assert_eq!(ack.reason, ConnectReason::Success);
    assert_eq!(
        ack.properties.authentication_method.as_deref(),
        Some(METHOD)
    );
    let server_final = ack
        .properties
        .authentication_data
        .expect("server-final-message");
    assert!(server_final.starts_with(b"v="), "{server_final:?}");

    // The client is connected: it can ping, then re-authenticate with the same method.
    client.send(&Packet::PingReq).await;
    assert!(matches!(client.next().await, Some(Packet::PingResp)));
    reauthenticate(&mut client, b"pencil").await;
    let done = expect_auth(&mut client, AuthReason::Success).await;
    assert!(done.starts_with("v="), "{done}");

    // A re-authentication with the wrong password ends the connection with 0x87.
    reauthenticate(&mut client, b"crayon").await;
    assert!(
        matches!(client.next().await, Some(Packet::Disconnect(d)) if d.reason == DisconnectReason::NotAuthorized)
    );
    assert!(client.next().await.is_none(), "closed");

    server.shutdown().await.expect("clean stop");
}

async fn scram_refusals(shell: Shell) {
    let (server, port) = server(shell).await;

    // Wrong password: CONNACK 0x86.
    let mut client = RawClient::open(port).await;
    scram_connect(&mut client, "abc", b"crayon").await;
    assert!(
        matches!(client.next().await, Some(Packet::ConnAck(a)) if a.reason == ConnectReason::BadUserNameOrPassword)
    );

    // A method the server does not offer: CONNACK 0x8C.
    let mut client = RawClient::open(port).await;
    let mut c = Connect::new(V5, "other".into());
    c.properties.authentication_method = Some("KERBEROS".into());
    client.send(&Packet::Connect(Box::new(c))).await;
    assert!(
        matches!(client.next().await, Some(Packet::ConnAck(a)) if a.reason == ConnectReason::BadAuthenticationMethod)
    );

    server.shutdown().await.expect("clean stop");
}

for_each_shell!(
    scram_sha_256_at_connect_and_as_reauthentication,
    scram_refusals,
);
