//! One raw MQTT 3.1.1 connection for the load generator: jetmq-core's codec over a tokio
//! socket, no client library. A reader task decodes what the broker sends, answers the QoS
//! 1/2 acknowledgements a subscriber owes, and reports deliveries and the publisher's
//! completed flows.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use jetmq_core::codec::{
    Ack, Connect, Decoder, Direction, Packet, PacketId, ProtocolVersion, Publish, PublishQos, QoS,
    Subscribe, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex, Semaphore};

const V4: ProtocolVersion = ProtocolVersion::V311;

/// What the reader task reports.
#[derive(Debug)]
pub enum Seen {
    /// PUBLISH packets arrived (all those of one read): the first 8 bytes of each payload,
    /// big-endian (the send time the load generator puts there).
    Deliveries(Vec<u64>),
    /// One of our QoS 1/2 publishes completed (PUBACK or PUBCOMP).
    Completed,
    /// Our subscription is in place (SUBACK).
    Subscribed,
    /// The connection ended.
    Closed,
}

/// A connected client.
pub struct Client {
    writer: Arc<Mutex<OwnedWriteHalf>>,
    /// Room in the in-flight window of our QoS 1/2 publishes.
    pub window: Arc<Semaphore>,
    next_pid: u16,
}

fn encode(packet: &Packet) -> BytesMut {
    let mut out = BytesMut::with_capacity(packet.encoded_len(V4));
    packet.encode(V4, &mut out);
    out
}

impl Client {
    /// Connects as `client_id` (clean session unless `persistent`) and starts the reader;
    /// what it sees goes to `events`.
    ///
    /// # Errors
    ///
    /// The connection or the CONNECT failed.
    pub async fn connect(
        addr: std::net::SocketAddr,
        client_id: &str,
        persistent: bool,
        window: usize,
        events: mpsc::UnboundedSender<Seen>,
    ) -> std::io::Result<Self> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let (mut read, mut write) = socket.into_split();
        let mut connect = Connect::new(V4, client_id.into());
        connect.clean_start = !persistent;
        // Some brokers (rumqttd) refuse a keep-alive of 0; runs are far shorter than this.
        connect.keep_alive = 600;
        write
            .write_all(&encode(&Packet::Connect(Box::new(connect))))
            .await?;
        // CONNACK first.
        let mut decoder = Decoder::new(Direction::FromServer, 0);
        decoder.set_version(V4);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Packet::ConnAck(_))) => break,
                Ok(Some(other)) => {
                    return Err(std::io::Error::other(format!(
                        "expected CONNACK, got {other:?}"
                    )))
                }
                Ok(None) => {
                    if read.read_buf(&mut buf).await? == 0 {
                        return Err(std::io::Error::other("closed before CONNACK"));
                    }
                }
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        let writer = Arc::new(Mutex::new(write));
        let reader_writer = Arc::clone(&writer);
        let window = Arc::new(Semaphore::new(window));
        let reader_window = Arc::clone(&window);
        tokio::spawn(async move {
            let mut replies = BytesMut::new();
            let mut stamps = Vec::new();
            loop {
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(p)) => reply(p, &mut replies, &mut stamps, &events, &reader_window),
                        Ok(None) => break,
                        Err(_) => {
                            let _ = events.send(Seen::Closed);
                            return;
                        }
                    }
                }
                if !stamps.is_empty() {
                    let _ = events.send(Seen::Deliveries(std::mem::take(&mut stamps)));
                }
                if !replies.is_empty() {
                    let out = replies.split();
                    if reader_writer.lock().await.write_all(&out).await.is_err() {
                        let _ = events.send(Seen::Closed);
                        return;
                    }
                }
                match read.read_buf(&mut buf).await {
                    Ok(n) if n > 0 => {}
                    _ => {
                        let _ = events.send(Seen::Closed);
                        return;
                    }
                }
            }
        });
        Ok(Self {
            writer,
            window,
            next_pid: 0,
        })
    }

    /// Subscribes to `filter` at `qos`; [`Seen::Subscribed`] reports the SUBACK.
    ///
    /// # Errors
    ///
    /// The write failed.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> std::io::Result<()> {
        let packet = Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap_or_else(|| unreachable!()),
            properties: Default::default(),
            filters: vec![(filter.into(), SubscriptionOptions::new(qos))],
        });
        self.writer.lock().await.write_all(&encode(&packet)).await
    }

    /// Publishes every payload on `topic` at `qos` in one write (one packet identifier each
    /// for QoS 1/2; the caller has taken their room in [`Client::window`]).
    ///
    /// # Errors
    ///
    /// The write failed.
    pub async fn publish_many(
        &mut self,
        topic: &str,
        qos: QoS,
        payloads: impl IntoIterator<Item = Bytes>,
    ) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        for payload in payloads {
            let mut p = Publish::new(topic.to_string().into(), payload);
            p.qos = self.next_qos(qos);
            Packet::Publish(p).encode(V4, &mut out);
        }
        self.writer.lock().await.write_all(&out).await
    }

    fn next_qos(&mut self, qos: QoS) -> PublishQos {
        if qos == QoS::AtMostOnce {
            return PublishQos::AtMostOnce;
        }
        self.next_pid = self.next_pid.checked_add(1).filter(|p| *p > 0).unwrap_or(1);
        let pid = PacketId::new(self.next_pid).unwrap_or_else(|| unreachable!());
        if qos == QoS::AtLeastOnce {
            PublishQos::AtLeastOnce(pid)
        } else {
            PublishQos::ExactlyOnce(pid)
        }
    }

    /// Publishes `payload` on `topic` at `qos`, waiting for room in the in-flight window for
    /// QoS 1/2.
    ///
    /// # Errors
    ///
    /// The write failed.
    pub async fn publish(&mut self, topic: &str, qos: QoS, payload: Bytes) -> std::io::Result<()> {
        if qos != QoS::AtMostOnce {
            if let Ok(permit) = self.window.acquire().await {
                permit.forget();
            }
        }
        let qos = self.next_qos(qos);
        let mut p = Publish::new(topic.to_string().into(), payload);
        p.qos = qos;
        self.writer
            .lock()
            .await
            .write_all(&encode(&Packet::Publish(p)))
            .await
    }
}

/// Handles one packet from the broker: acknowledgements to send and what to report.
fn reply(
    packet: Packet,
    out: &mut BytesMut,
    stamps: &mut Vec<u64>,
    events: &mpsc::UnboundedSender<Seen>,
    window: &Semaphore,
) {
    match packet {
        Packet::Publish(p) => {
            match p.qos {
                PublishQos::AtMostOnce => {}
                PublishQos::AtLeastOnce(pid) => Packet::PubAck(Ack::new(pid)).encode(V4, out),
                PublishQos::ExactlyOnce(pid) => Packet::PubRec(Ack::new(pid)).encode(V4, out),
            }
            let mut stamp = [0u8; 8];
            let n = p.payload.len().min(8);
            stamp[..n].copy_from_slice(&p.payload[..n]);
            stamps.push(u64::from_be_bytes(stamp));
        }
        Packet::PubRel(a) => Packet::PubComp(Ack::new(a.packet_id)).encode(V4, out),
        Packet::PubRec(a) => Packet::PubRel(Ack::new(a.packet_id)).encode(V4, out),
        Packet::PubAck(_) | Packet::PubComp(_) => {
            window.add_permits(1);
            let _ = events.send(Seen::Completed);
        }
        Packet::SubAck(_) => {
            let _ = events.send(Seen::Subscribed);
        }
        _ => {}
    }
}
