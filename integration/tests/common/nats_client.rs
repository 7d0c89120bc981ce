//! A plain NATS client for the tests: the core's NATS protocol state machine over a socket,
//! as whichever user its options and signer say.

use std::sync::Arc;

use bytes::BytesMut;
use jetmq_core::nats::{ConnectOptions, Event, Message, NatsClient, NonceSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::client::DEADLINE;

/// A plain NATS client (the core's protocol state machine over a socket), as whichever user
/// its options and signer say.
pub(crate) struct Peer {
    socket: TcpStream,
    pub(crate) client: NatsClient,
    buf: BytesMut,
    events: Vec<Event>,
    next_reply: u64,
}

impl Peer {
    /// Connects to `port` and waits until the server took the credentials.
    pub(crate) async fn connect(
        port: u16,
        options: ConnectOptions,
        signer: Option<Arc<dyn NonceSigner>>,
    ) -> Self {
        let socket = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut client = NatsClient::new(
            ConnectOptions {
                echo: true,
                ..options
            },
            1 << 20,
        );
        if let Some(signer) = signer {
            client = client.with_signer(signer);
        }
        client.connection_started();
        let mut peer = Self {
            socket,
            client,
            buf: BytesMut::new(),
            events: Vec::new(),
            next_reply: 0,
        };
        peer.until(|e| matches!(e, Event::Connected(_))).await;
        // The handshake's PING: its PONG says the credentials were taken.
        match peer
            .until(|e| matches!(e, Event::Pong | Event::ServerError(_)))
            .await
        {
            Event::Pong => peer,
            other => panic!("the test's NATS client was refused: {other:?}"),
        }
    }

    pub(crate) async fn flush(&mut self) {
        let out = self.client.take_output();
        self.socket.write_all(&out).await.expect("write");
    }

    /// Reads until an event matching `want` arrives, and returns it.
    pub(crate) async fn until(&mut self, want: impl Fn(&Event) -> bool) -> Event {
        loop {
            if let Some(i) = self.events.iter().position(&want) {
                return self.events.remove(i);
            }
            self.flush().await;
            let n = timeout(DEADLINE, self.socket.read_buf(&mut self.buf))
                .await
                .expect("NATS answers in time")
                .expect("read");
            assert!(n > 0, "NATS closed the connection");
            self.client
                .received(&mut self.buf, &mut self.events)
                .expect("valid protocol");
        }
    }

    /// Subscribes, then a PING round trip, so the server has the subscription.
    pub(crate) async fn subscribe(&mut self, subject: &str) {
        self.client.subscribe(subject, None);
        self.client.ping();
        self.until(|e| matches!(e, Event::Pong)).await;
    }

    pub(crate) async fn next_message(&mut self) -> Message {
        match self.until(|e| matches!(e, Event::Message(_))).await {
            Event::Message(m) => m,
            _ => unreachable!(),
        }
    }

    /// A request: its reply's payload as JSON, or the server's error (a permissions
    /// violation).
    pub(crate) async fn request(
        &mut self,
        subject: &str,
        body: &str,
    ) -> Result<serde_json::Value, String> {
        self.next_reply += 1;
        let inbox = format!("_INBOX.peer{}", self.next_reply);
        let sid = self.client.subscribe(&format!("{inbox}.*"), None);
        let reply = format!("{inbox}.1");
        self.client
            .publish(subject, Some(&reply), None, body.as_bytes())
            .expect("room");
        let event = self
            .until(|e| match e {
                Event::Message(m) => m.subject == reply,
                Event::ServerError(_) => true,
                _ => false,
            })
            .await;
        self.client.unsubscribe(sid);
        match event {
            Event::Message(m) => Ok(serde_json::from_slice(&m.payload).expect("a JSON reply")),
            Event::ServerError(e) => Err(e),
            _ => unreachable!(),
        }
    }
}
