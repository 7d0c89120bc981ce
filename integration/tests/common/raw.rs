//! A raw MQTT 5.0 client on jetmq-core's codec, for what rumqttc cannot send or does not show:
//! AUTH exchanges, packets that break the broker's limits, properties of refusals.

use std::time::Duration;

use bytes::BytesMut;
use jetmq_core::codec::{Connect, Decoder, Direction, Packet, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// One MQTT 5.0 connection spoken packet by packet.
pub(crate) struct RawClient {
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
}

impl RawClient {
    /// Opens a TCP connection to the broker on `port` (no CONNECT yet).
    pub(crate) async fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connects");
        let mut decoder = Decoder::new(Direction::FromServer, 0);
        decoder.set_version(V5);
        Self {
            stream,
            decoder,
            buf: BytesMut::new(),
        }
    }

    /// Opens a TCP connection to the broker on `port` from the loopback address `source`
    /// (127.0.0.0/8 on Linux), so tests can stand for several clients' addresses.
    pub(crate) async fn open_from(port: u16, source: std::net::IpAddr) -> std::io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((source, 0).into())?;
        let stream = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await?;
        let mut decoder = Decoder::new(Direction::FromServer, 0);
        decoder.set_version(V5);
        Ok(Self {
            stream,
            decoder,
            buf: BytesMut::new(),
        })
    }

    /// The local address of the connection.
    pub(crate) fn local_addr(&self) -> std::net::SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Opens a connection and sends `connect`; returns the client and the broker's answer.
    pub(crate) async fn connect(port: u16, connect: Connect) -> (Self, Option<Packet>) {
        let mut c = Self::open(port).await;
        c.send(&Packet::Connect(Box::new(connect))).await;
        let answer = c.next().await;
        (c, answer)
    }

    /// Writes one packet.
    pub(crate) async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.encode(V5, &mut out);
        self.stream.write_all(&out).await.expect("writes");
    }

    /// Writes raw bytes.
    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("writes");
    }

    /// The next packet, or `None` once the broker closed the connection.
    pub(crate) async fn next(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self.decoder.decode(&mut self.buf).expect("valid packet") {
                return Some(p);
            }
            let n = timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                .await
                .expect("an answer in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }
}
