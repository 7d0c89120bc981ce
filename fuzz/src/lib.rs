//! Shared pieces of jetmq's fuzz targets: how a target reads its settings from the first
//! input byte, and the checks every decoded packet must pass.

use bytes::BytesMut;
use jetmq_core::codec::{Decoder, Direction, Packet, ProtocolVersion};

/// The decoder settings a fuzz input selects with its first byte: bit 0 picks MQTT 5.0 over
/// 3.1.1, bit 1 picks bytes from a server over bytes from a client.
pub fn decoder_for(selector: u8) -> Decoder {
    let direction = if selector & 2 == 0 {
        Direction::FromClient
    } else {
        Direction::FromServer
    };
    let mut decoder = Decoder::new(direction, 0);
    decoder.set_version(version_for(selector));
    decoder
}

/// The protocol version bit 0 of the selector byte picks.
pub fn version_for(selector: u8) -> ProtocolVersion {
    if selector & 1 == 0 {
        ProtocolVersion::V311
    } else {
        ProtocolVersion::V5
    }
}

/// Decodes `buf` to the end or the first error, checking each packet, and returns the
/// packets and whether an error stopped it.
pub fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> (Vec<Packet>, bool) {
    let mut packets = Vec::new();
    loop {
        match decoder.decode(buf) {
            Ok(Some(packet)) => {
                check_reencode(&packet, decoder.version());
                packets.push(packet);
            }
            Ok(None) => return (packets, false),
            Err(err) => {
                // Every error names a clause and maps to a reason code without panicking.
                assert!(!err.clause().is_empty());
                let _ = (
                    err.disconnect_reason(),
                    err.connect_reason(),
                    err.to_string(),
                );
                return (packets, true);
            }
        }
    }
}

/// A decoded packet re-encodes to exactly its encoded length.
pub fn check_reencode(packet: &Packet, version: ProtocolVersion) {
    let mut out = BytesMut::new();
    packet.encode(version, &mut out);
    assert_eq!(out.len(), packet.encoded_len(version));
}
