//! One raw MQTT 3.1.1 connection for the load generator: jetmq-core's codec over a tokio
//! socket, no client library. A reader task decodes what the broker sends, answers the QoS
//! 1/2 acknowledgements a subscriber owes, and reports deliveries and the publisher's
//! completed flows.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
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
                    // QoS 0 deliveries are most of what a subscriber reads: taken without
                    // decoding them into packets (no reference counting per message), so the
                    // generator keeps up with fast brokers.
                    while let Some(stamp) = qos0_publish(&mut buf) {
                        stamps.push(stamp);
                    }
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

/// Takes a whole MQTT 3.1.1 QoS 0 PUBLISH off the front of `buf` and returns its send time
/// (the payload's first 8 bytes); `None` (taking nothing) for anything else or a partial
/// frame, which the decoder then handles.
fn qos0_publish(buf: &mut BytesMut) -> Option<u64> {
    // Fixed header: PUBLISH with QoS 0 (DUP and RETAIN may be set).
    if buf.first()? & 0xF6 != 0x30 {
        return None;
    }
    let mut len = 0usize;
    let mut at = 1;
    loop {
        let byte = *buf.get(at)?;
        len |= usize::from(byte & 0x7F) << (7 * (at - 1));
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return None;
        }
    }
    let end = at + len;
    if buf.len() < end || len < 2 {
        return None;
    }
    let topic = usize::from(u16::from_be_bytes([buf[at], buf[at + 1]]));
    let payload = at + 2 + topic;
    if payload > end {
        return None;
    }
    let mut stamp = [0u8; 8];
    let n = (end - payload).min(8);
    stamp[..n].copy_from_slice(&buf[payload..payload + n]);
    buf.advance(end);
    Some(u64::from_be_bytes(stamp))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(topic: &str, payload: &[u8], qos: PublishQos, retain: bool) -> BytesMut {
        let mut p = Publish::new(topic.to_string().into(), Bytes::copy_from_slice(payload));
        p.qos = qos;
        p.retain = retain;
        encode(&Packet::Publish(p))
    }

    #[test]
    fn qos0_publishes_are_taken_whole_and_everything_else_is_left() {
        let stamp = 0x0102_0304_0506_0708u64.to_be_bytes();
        // Short and long (a 3-byte remaining length) payloads, retained or not, back to back.
        let mut buf = frame("a/b", &stamp, PublishQos::AtMostOnce, false);
        let long = [stamp.as_slice(), &[0u8; 20_000]].concat();
        buf.extend_from_slice(&frame("t", &long, PublishQos::AtMostOnce, true));
        buf.extend_from_slice(&frame("x", b"abc", PublishQos::AtMostOnce, false));
        assert_eq!(qos0_publish(&mut buf), Some(0x0102_0304_0506_0708));
        assert_eq!(qos0_publish(&mut buf), Some(0x0102_0304_0506_0708));
        assert_eq!(
            qos0_publish(&mut buf),
            Some(u64::from_be_bytes(*b"abc\0\0\0\0\0"))
        );
        assert!(buf.is_empty());
        // A partial frame waits; a QoS 1 PUBLISH goes to the decoder.
        let whole = frame("a", &stamp, PublishQos::AtMostOnce, false);
        let mut partial = BytesMut::from(&whole[..whole.len() - 1]);
        assert_eq!(qos0_publish(&mut partial), None);
        assert_eq!(partial.len(), whole.len() - 1);
        let pid = PacketId::new(7).unwrap_or_else(|| unreachable!());
        let mut qos1 = frame("a", &stamp, PublishQos::AtLeastOnce(pid), false);
        let len = qos1.len();
        assert_eq!(qos0_publish(&mut qos1), None);
        assert_eq!(qos1.len(), len);
    }
}
