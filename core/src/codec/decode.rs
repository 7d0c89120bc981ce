//! The incremental packet decoder.

use bytes::{Buf, BytesMut};

use super::primitives::{read_var_int, Reader};
use super::{
    Ack, Auth, ConnAck, Connect, DecodeError, Direction, Disconnect, Packet, PacketType,
    ProtocolVersion, Publish, SubAck, Subscribe, UnsubAck, Unsubscribe, MAX_PACKET_SIZE,
};

/// Decodes the packets of one connection from a growing buffer.
///
/// The decoder remembers the protocol version: until it is set, packets are read as MQTT 3.1.1,
/// and a decoded CONNECT sets it for every later packet.
#[derive(Debug, Clone)]
pub struct Decoder {
    direction: Direction,
    max_packet_size: u32,
    version: ProtocolVersion,
}

impl Decoder {
    /// A decoder for bytes sent from `direction`, refusing packets larger than
    /// `max_packet_size` bytes (fixed header included; 0 or values above the protocol limit
    /// mean the protocol limit).
    #[must_use]
    pub fn new(direction: Direction, max_packet_size: u32) -> Self {
        let max_packet_size = if max_packet_size == 0 {
            MAX_PACKET_SIZE
        } else {
            max_packet_size.min(MAX_PACKET_SIZE)
        };
        Self {
            direction,
            max_packet_size,
            version: ProtocolVersion::V311,
        }
    }

    /// Sets the protocol version for the packets that follow.
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// The protocol version packets are read with.
    #[must_use]
    pub const fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The largest packet this decoder accepts.
    #[must_use]
    pub const fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Takes the next whole packet off the front of `buf`.
    ///
    /// Returns `Ok(None)` and leaves `buf` untouched while the packet is incomplete; the size is
    /// checked against the maximum as soon as the fixed header is complete, before any body is
    /// buffered, and no memory is reserved for the declared length. Topic and payload of a
    /// PUBLISH share the frame's memory. After an error the connection must be closed: the
    /// buffer is left where the bad packet starts.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let Some((remaining, len_bytes)) = read_var_int(&buf[1..])? else {
            return Ok(None);
        };
        let header = 1 + len_bytes;
        let size = header + remaining as usize;
        if size > self.max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge {
                size,
                max: self.max_packet_size,
            });
        }
        let packet_type = packet_type(first >> 4, self.version)?;
        check_flags(packet_type, first & 0x0f)?;
        if !packet_type.allowed(self.direction) {
            return Err(DecodeError::WrongDirection(packet_type));
        }
        if buf.len() < size {
            return Ok(None);
        }
        let mut frame = buf.split_to(size).freeze();
        frame.advance(header);
        let body = Reader::new(frame);
        let packet = self.decode_body(packet_type, first & 0x0f, body)?;
        if let Packet::Connect(connect) = &packet {
            self.version = connect.protocol;
        }
        Ok(Some(packet))
    }

    #[inline(always)]
    fn decode_body(
        &self,
        packet_type: PacketType,
        flags: u8,
        body: Reader,
    ) -> Result<Packet, DecodeError> {
        let v = self.version;
        Ok(match packet_type {
            PacketType::Connect => Packet::Connect(Box::new(Connect::decode(body)?)),
            PacketType::ConnAck => Packet::ConnAck(Box::new(ConnAck::decode(body, v)?)),
            PacketType::Publish => {
                Packet::Publish(Publish::decode(body, flags, v, self.direction)?)
            }
            PacketType::PubAck => Packet::PubAck(Ack::decode(body, packet_type, v)?),
            PacketType::PubRec => Packet::PubRec(Ack::decode(body, packet_type, v)?),
            PacketType::PubRel => Packet::PubRel(Ack::decode(body, packet_type, v)?),
            PacketType::PubComp => Packet::PubComp(Ack::decode(body, packet_type, v)?),
            PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(body, v)?),
            PacketType::SubAck => Packet::SubAck(SubAck::decode(body, v)?),
            PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(body, v)?),
            PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(body, v)?),
            PacketType::PingReq => {
                body.finish()?;
                Packet::PingReq
            }
            PacketType::PingResp => {
                body.finish()?;
                Packet::PingResp
            }
            PacketType::Disconnect => Packet::Disconnect(Box::new(Disconnect::decode(body, v)?)),
            PacketType::Auth => Packet::Auth(Box::new(Auth::decode(body)?)),
        })
    }
}

fn packet_type(nibble: u8, version: ProtocolVersion) -> Result<PacketType, DecodeError> {
    Ok(match nibble {
        1 => PacketType::Connect,
        2 => PacketType::ConnAck,
        3 => PacketType::Publish,
        4 => PacketType::PubAck,
        5 => PacketType::PubRec,
        6 => PacketType::PubRel,
        7 => PacketType::PubComp,
        8 => PacketType::Subscribe,
        9 => PacketType::SubAck,
        10 => PacketType::Unsubscribe,
        11 => PacketType::UnsubAck,
        12 => PacketType::PingReq,
        13 => PacketType::PingResp,
        14 => PacketType::Disconnect,
        15 if version.is_v5() => PacketType::Auth,
        other => return Err(DecodeError::ReservedPacketType(other)),
    })
}

/// Checks the fixed-header flags against the table of §2.1.3; PUBLISH flags are checked with
/// the PUBLISH.
fn check_flags(packet: PacketType, flags: u8) -> Result<(), DecodeError> {
    let expected = match packet {
        PacketType::Publish => return Ok(()),
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
        _ => 0,
    };
    if flags == expected {
        Ok(())
    } else {
        Err(DecodeError::InvalidFlags { packet, flags })
    }
}
