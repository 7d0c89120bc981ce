//! The codec's hot path does not touch the heap: decoding a PUBLISH (3.1.1, or 5.0 without
//! properties) and encoding one into a buffer with room make zero allocations. A counting
//! global allocator proves it; it runs without the test harness (`harness = false`), so no other thread runs meanwhile.

use std::alloc::System;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use jetmq_core::codec::{
    Decoder, Direction, Packet, PacketId, ProtocolVersion, Publish, PublishQos,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn publish(payload_len: usize, qos: PublishQos) -> Packet {
    let mut p = Publish::new(
        ByteString::from_static("sensors/building-7/floor-3/temperature"),
        Bytes::from(vec![7u8; payload_len]),
    );
    p.qos = qos;
    Packet::Publish(p)
}

fn main() {
    publish_decode_and_encode_do_not_allocate();
    eprintln!("publish_decode_and_encode_do_not_allocate: ok");
}

fn publish_decode_and_encode_do_not_allocate() {
    let id = PacketId::new(9).expect("non-zero");
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for (len, qos) in [
            (16, PublishQos::AtMostOnce),
            (16, PublishQos::AtLeastOnce(id)),
            (1024, PublishQos::ExactlyOnce(id)),
        ] {
            let packet = publish(len, qos);
            let count = 1000;
            let mut buf = BytesMut::with_capacity(packet.encoded_len(version) * (count + 1));

            // Encoding into a buffer with room allocates nothing.
            let region = Region::new(GLOBAL);
            for _ in 0..=count {
                packet.encode(version, &mut buf);
            }
            let encoded = region.change();
            assert_eq!(
                encoded.allocations, 0,
                "{version:?} {len} B encode: {encoded:?}"
            );

            let mut decoder = Decoder::new(Direction::FromClient, 0);
            decoder.set_version(version);
            // The first split of a fresh buffer makes its storage shareable once.
            let first = decoder.decode(&mut buf).expect("valid").expect("whole");
            assert_eq!(first, packet);

            let region = Region::new(GLOBAL);
            let mut decoded = 0;
            while let Some(p) = decoder.decode(&mut buf).expect("valid") {
                if let Packet::Publish(p) = &p {
                    assert_eq!(p.payload.len(), len);
                }
                decoded += 1;
            }
            let stats = region.change();
            assert_eq!(decoded, count);
            assert_eq!(
                (stats.allocations, stats.reallocations),
                (0, 0),
                "{version:?} {len} B: {count} decoded PUBLISH packets allocated: {stats:?}"
            );
        }
    }
}
