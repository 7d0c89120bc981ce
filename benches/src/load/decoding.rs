//! A subscriber that works as an ordinary client library does, for the scenarios that must not
//! flatter the broker with [`super::client`]'s fast reader: every packet is decoded whole by a
//! decoder of its own (independent of jetmq-core's, so a bug shared by jetmq's encoder and
//! decoder cannot hide here), every PUBLISH becomes an owned [`Message`] (topic and payload
//! copied out of the read buffer), and every acknowledgement goes out as its own write.
//!
//! CONNECT and SUBSCRIBE are encoded with jetmq-core's codec: only what the broker sends is
//! read independently.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use jetmq_core::codec::{
    Connect, Packet, PacketId, ProtocolVersion, QoS, Subscribe, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V4: ProtocolVersion = ProtocolVersion::V311;

/// A PUBLISH as a client library hands it to its application: everything owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic name.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The QoS it was delivered at.
    pub qos: QoS,
    /// The RETAIN flag.
    pub retain: bool,
    /// The DUP flag.
    pub dup: bool,
    /// The packet identifier (QoS 1 and 2).
    pub packet_id: Option<u16>,
}

impl Message {
    /// The first 8 bytes of the payload, big-endian (where the load generator puts the send
    /// time or the sequence number), zero-padded.
    #[must_use]
    pub fn stamp(&self) -> u64 {
        let mut stamp = [0u8; 8];
        let n = self.payload.len().min(8);
        stamp[..n].copy_from_slice(&self.payload[..n]);
        u64::from_be_bytes(stamp)
    }
}

/// A packet from the broker (MQTT 3.1.1), as far as a subscriber cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// CONNACK: session present, return code.
    ConnAck {
        /// The session-present flag.
        session_present: bool,
        /// The return code (0: accepted).
        code: u8,
    },
    /// PUBLISH.
    Publish(Message),
    /// PUBREL of a QoS 2 delivery.
    PubRel(u16),
    /// SUBACK: packet identifier and one return code per filter.
    SubAck {
        /// The SUBSCRIBE's packet identifier.
        packet_id: u16,
        /// Granted QoS per filter, or 0x80 for a refusal.
        codes: Vec<u8>,
    },
    /// Any other packet, by its type (the fixed header's high nibble).
    Other(u8),
}

fn malformed(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("malformed packet: {what}"),
    )
}

/// Takes one whole packet off the front of `buf` and decodes it: `Ok(None)` (taking nothing)
/// while the packet is incomplete.
///
/// # Errors
///
/// The packet is malformed (bad remaining length, QoS 3, a PUBLISH topic that is not UTF-8, a
/// packet identifier of 0, a truncated body).
pub fn decode(buf: &mut BytesMut) -> std::io::Result<Option<Incoming>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut at = 1;
    loop {
        let Some(&byte) = buf.get(at) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7F) << (7 * (at - 1));
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return Err(malformed("remaining length longer than 4 bytes"));
        }
    }
    if buf.len() < at + len {
        return Ok(None);
    }
    buf.advance(at);
    let mut body = buf.split_to(len);
    let packet_id = |body: &mut BytesMut| -> std::io::Result<u16> {
        if body.len() < 2 {
            return Err(malformed("no packet identifier"));
        }
        match body.get_u16() {
            0 => Err(malformed("packet identifier 0")),
            id => Ok(id),
        }
    };
    Ok(Some(match first >> 4 {
        2 => {
            if body.len() != 2 {
                return Err(malformed("CONNACK length"));
            }
            Incoming::ConnAck {
                session_present: body[0] & 1 == 1,
                code: body[1],
            }
        }
        3 => {
            let qos = match (first >> 1) & 3 {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                2 => QoS::ExactlyOnce,
                _ => return Err(malformed("PUBLISH with QoS 3")),
            };
            if body.len() < 2 {
                return Err(malformed("PUBLISH without a topic"));
            }
            let topic_len = usize::from(body.get_u16());
            if body.len() < topic_len {
                return Err(malformed("PUBLISH topic longer than the packet"));
            }
            let topic = String::from_utf8(body.split_to(topic_len).to_vec())
                .map_err(|_| malformed("PUBLISH topic is not UTF-8"))?;
            let packet_id = match qos {
                QoS::AtMostOnce => None,
                _ => Some(packet_id(&mut body)?),
            };
            Incoming::Publish(Message {
                topic,
                payload: body.to_vec(),
                qos,
                retain: first & 1 == 1,
                dup: first & 8 == 8,
                packet_id,
            })
        }
        6 => {
            if first & 0x0F != 2 {
                return Err(malformed("PUBREL flags"));
            }
            Incoming::PubRel(packet_id(&mut body)?)
        }
        9 => Incoming::SubAck {
            packet_id: packet_id(&mut body)?,
            codes: body.to_vec(),
        },
        kind => Incoming::Other(kind),
    }))
}

/// An acknowledgement packet (PUBACK, PUBREC, PUBCOMP: `kind` is the fixed header's first byte).
fn ack(kind: u8, packet_id: u16) -> [u8; 4] {
    let [hi, lo] = packet_id.to_be_bytes();
    [kind, 2, hi, lo]
}

/// One MQTT 3.1.1 connection read the way a client library reads it: one packet at a time,
/// each decoded whole, each acknowledgement its own write.
#[derive(Debug)]
pub struct DecodingClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl DecodingClient {
    /// Connects as `client_id` (clean session unless `persistent`) and waits for the CONNACK.
    ///
    /// # Errors
    ///
    /// The connection failed, or the broker refused it.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        persistent: bool,
    ) -> std::io::Result<Self> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut connect = Connect::new(V4, client_id.into());
        connect.clean_start = !persistent;
        // Some brokers (rumqttd) refuse a keep-alive of 0; runs are far shorter than this.
        connect.keep_alive = 600;
        let packet = Packet::Connect(Box::new(connect));
        let mut out = BytesMut::with_capacity(packet.encoded_len(V4));
        packet.encode(V4, &mut out);
        stream.write_all(&out).await?;
        let mut client = Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
        };
        match client.next_packet().await? {
            Some(Incoming::ConnAck { code: 0, .. }) => Ok(client),
            Some(Incoming::ConnAck { code, .. }) => Err(std::io::Error::other(format!(
                "the broker refused the connection (return code {code})"
            ))),
            Some(other) => Err(std::io::Error::other(format!(
                "expected CONNACK, got {other:?}"
            ))),
            None => Err(std::io::Error::other("closed before CONNACK")),
        }
    }

    /// Subscribes to `filter` at `qos` and waits for the SUBACK.
    ///
    /// # Errors
    ///
    /// The write failed, the connection closed, or the broker refused the subscription.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> std::io::Result<()> {
        let packet = Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap_or_else(|| unreachable!()),
            properties: Default::default(),
            filters: vec![(filter.into(), SubscriptionOptions::new(qos))],
        });
        let mut out = BytesMut::with_capacity(packet.encoded_len(V4));
        packet.encode(V4, &mut out);
        self.stream.write_all(&out).await?;
        loop {
            match self.next_packet().await? {
                Some(Incoming::SubAck { codes, .. }) if codes.iter().all(|c| *c < 0x80) => {
                    return Ok(())
                }
                Some(Incoming::SubAck { .. }) => {
                    return Err(std::io::Error::other("the broker refused the subscription"))
                }
                Some(_) => {}
                None => return Err(std::io::Error::other("closed before SUBACK")),
            }
        }
    }

    /// The next packet, reading from the socket only when the buffer holds no whole one;
    /// `None` when the broker closed the connection.
    async fn next_packet(&mut self) -> std::io::Result<Option<Incoming>> {
        loop {
            if let Some(packet) = decode(&mut self.buf)? {
                return Ok(Some(packet));
            }
            self.buf.reserve(4096);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next PUBLISH, answering the PUBRELs of QoS 2 deliveries (PUBCOMP, its own write) on
    /// the way; `None` when the broker closed the connection. The caller acknowledges it with
    /// [`DecodingClient::acknowledge`].
    ///
    /// # Errors
    ///
    /// Reading, decoding or writing failed.
    pub async fn next_message(&mut self) -> std::io::Result<Option<Message>> {
        loop {
            match self.next_packet().await? {
                Some(Incoming::Publish(m)) => return Ok(Some(m)),
                Some(Incoming::PubRel(id)) => self.stream.write_all(&ack(0x70, id)).await?,
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// Acknowledges a delivery in its own write: PUBACK for QoS 1, PUBREC for QoS 2, nothing
    /// for QoS 0.
    ///
    /// # Errors
    ///
    /// The write failed.
    pub async fn acknowledge(&mut self, message: &Message) -> std::io::Result<()> {
        match (message.qos, message.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.stream.write_all(&ack(0x40, id)).await,
            (QoS::ExactlyOnce, Some(id)) => self.stream.write_all(&ack(0x50, id)).await,
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use jetmq_core::codec::{Ack, Publish, PublishQos};

    fn encoded(packet: &Packet) -> BytesMut {
        let mut out = BytesMut::new();
        packet.encode(V4, &mut out);
        out
    }

    fn publish(topic: &str, payload: &[u8], qos: PublishQos, retain: bool) -> BytesMut {
        let mut p = Publish::new(topic.to_string().into(), Bytes::copy_from_slice(payload));
        p.qos = qos;
        p.retain = retain;
        encoded(&Packet::Publish(p))
    }

    fn pid(n: u16) -> PacketId {
        PacketId::new(n).unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn decodes_what_jetmq_encodes_packet_by_packet() {
        let long = vec![7u8; 20_000];
        let mut buf = publish("a/b", b"12345678", PublishQos::AtMostOnce, true);
        buf.extend_from_slice(&publish("t", &long, PublishQos::AtLeastOnce(pid(9)), false));
        buf.extend_from_slice(&publish(
            "é",
            b"",
            PublishQos::ExactlyOnce(pid(65535)),
            false,
        ));
        buf.extend_from_slice(&encoded(&Packet::PubRel(Ack::new(pid(3)))));
        let Some(Incoming::Publish(m)) = decode(&mut buf).unwrap() else {
            panic!("not a PUBLISH")
        };
        assert_eq!(m.topic, "a/b");
        assert_eq!(m.stamp(), u64::from_be_bytes(*b"12345678"));
        assert_eq!(
            (m.qos, m.retain, m.dup, m.packet_id),
            (QoS::AtMostOnce, true, false, None)
        );
        let Some(Incoming::Publish(m)) = decode(&mut buf).unwrap() else {
            panic!("not a PUBLISH")
        };
        assert_eq!((m.topic.as_str(), m.payload.len()), ("t", 20_000));
        assert_eq!((m.qos, m.packet_id), (QoS::AtLeastOnce, Some(9)));
        let Some(Incoming::Publish(m)) = decode(&mut buf).unwrap() else {
            panic!("not a PUBLISH")
        };
        assert_eq!((m.topic.as_str(), m.payload.len()), ("é", 0));
        assert_eq!(
            (m.qos, m.packet_id, m.stamp()),
            (QoS::ExactlyOnce, Some(65535), 0)
        );
        assert_eq!(decode(&mut buf).unwrap(), Some(Incoming::PubRel(3)));
        assert!(buf.is_empty());
        assert_eq!(decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn a_partial_packet_waits_whole() {
        let whole = publish("a", &[1u8; 300], PublishQos::AtLeastOnce(pid(1)), false);
        for cut in [1, 2, whole.len() - 1] {
            let mut partial = BytesMut::from(&whole[..cut]);
            assert_eq!(decode(&mut partial).unwrap(), None);
            assert_eq!(partial.len(), cut);
        }
    }

    #[test]
    fn connack_and_suback() {
        let mut buf = BytesMut::from(&[0x20, 2, 1, 0, 0x90, 4, 0, 1, 1, 0x80][..]);
        assert_eq!(
            decode(&mut buf).unwrap(),
            Some(Incoming::ConnAck {
                session_present: true,
                code: 0
            })
        );
        assert_eq!(
            decode(&mut buf).unwrap(),
            Some(Incoming::SubAck {
                packet_id: 1,
                codes: vec![1, 0x80]
            })
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        for bad in [
            &[0x36, 3, 0, 1, b'a'][..],             // QoS 3
            &[0x30, 3, 0, 5, b'a'][..],             // topic longer than the packet
            &[0x30, 3, 0, 1, 0xff][..],             // topic not UTF-8
            &[0x32, 5, 0, 1, b'a', 0, 0][..],       // packet identifier 0
            &[0x62, 1, 0][..],                      // PUBREL without an identifier
            &[0x60, 2, 0, 1][..],                   // PUBREL flags
            &[0x30, 0xff, 0xff, 0xff, 0xff, 1][..], // remaining length of 5 bytes
        ] {
            assert!(decode(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
    }
}
