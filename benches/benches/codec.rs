//! Decode and encode throughput of jetmq's codec against rumqttc's `mqttbytes`, on the same
//! bytes in the same run: PUBLISH with 16 B, 1 KiB and 64 KiB payloads (MQTT 3.1.1 and 5.0)
//! and a mixed stream of every packet type.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use jetmq_benches::{client_packets, mixed_stream, publish, server_packets, stream_of, TOPIC};
use jetmq_core::codec::{Decoder, Direction, Packet, ProtocolVersion};
use rumqttc::mqttbytes::v4 as mq4;
use rumqttc::v5::mqttbytes::v5 as mq5;

const MAX: usize = 1 << 20;

fn decode_jetmq(stream: &Bytes, direction: Direction, version: ProtocolVersion) -> usize {
    let mut decoder = Decoder::new(direction, MAX as u32);
    decoder.set_version(version);
    let mut buf = BytesMut::from(&stream[..]);
    let mut n = 0;
    while let Ok(Some(packet)) = decoder.decode(&mut buf) {
        std::hint::black_box(packet);
        n += 1;
    }
    n
}

fn sizes() -> [(&'static str, usize, usize); 3] {
    // name, payload length, packets per iteration
    [("16B", 16, 1000), ("1KiB", 1024, 256), ("64KiB", 65536, 16)]
}

fn decode_publish(c: &mut Criterion) {
    for (name, len, count) in sizes() {
        let mut group = c.benchmark_group(format!("decode_publish/{name}"));
        group.throughput(Throughput::Elements(count as u64));
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let tag = if version.is_v5() { "v5" } else { "v311" };
            let stream = stream_of(&Packet::Publish(publish(len)), version, count);
            group.bench_function(format!("jetmq/{tag}"), |b| {
                b.iter_batched(
                    || BytesMut::from(&stream[..]),
                    |mut buf| {
                        let mut decoder = Decoder::new(Direction::FromClient, MAX as u32);
                        decoder.set_version(version);
                        while let Ok(Some(packet)) = decoder.decode(&mut buf) {
                            std::hint::black_box(packet);
                        }
                        buf
                    },
                    BatchSize::SmallInput,
                );
            });
            group.bench_function(format!("mqttbytes/{tag}"), |b| {
                b.iter_batched(
                    || BytesMut::from(&stream[..]),
                    |mut buf| {
                        if version.is_v5() {
                            while let Ok(packet) = mq5::Packet::read(&mut buf, Some(MAX as u32)) {
                                std::hint::black_box(packet);
                            }
                        } else {
                            while let Ok(packet) = mq4::Packet::read(&mut buf, MAX) {
                                std::hint::black_box(packet);
                            }
                        }
                        buf
                    },
                    BatchSize::SmallInput,
                );
            });
        }
        group.finish();
    }
}

fn encode_publish(c: &mut Criterion) {
    for (name, len, _) in sizes() {
        let mut group = c.benchmark_group(format!("encode_publish/{name}"));
        group.throughput(Throughput::Elements(1));
        let ours = Packet::Publish(publish(len));
        let payload = Bytes::from(vec![0xA5; len]);
        let mut theirs4 =
            mq4::Publish::from_bytes(TOPIC, rumqttc::mqttbytes::QoS::AtLeastOnce, payload.clone());
        theirs4.pkid = 1;
        let theirs4 = mq4::Packet::Publish(theirs4);
        let mut theirs5 = mq5::Publish::new(
            TOPIC,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            payload,
            None,
        );
        theirs5.pkid = 1;
        let theirs5 = mq5::Packet::Publish(theirs5);
        let mut buf = BytesMut::with_capacity(len + 128);
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let tag = if version.is_v5() { "v5" } else { "v311" };
            group.bench_function(format!("jetmq/{tag}"), |b| {
                b.iter(|| {
                    buf.clear();
                    ours.encode(version, &mut buf);
                    std::hint::black_box(buf.len())
                });
            });
            group.bench_function(format!("mqttbytes/{tag}"), |b| {
                b.iter(|| {
                    buf.clear();
                    let n = if version.is_v5() {
                        theirs5.write(&mut buf, None).unwrap_or(0)
                    } else {
                        theirs4.write(&mut buf, MAX).unwrap_or(0)
                    };
                    std::hint::black_box(n)
                });
            });
        }
        group.finish();
    }
}

fn decode_mixed(c: &mut Criterion) {
    let version = ProtocolVersion::V311;
    let rounds = 100;
    let client = mixed_stream(&client_packets(), version, rounds);
    let server = mixed_stream(&server_packets(), version, rounds);
    let total = (client_packets().len() + server_packets().len()) * rounds;
    // Both codecs must read every packet, or the comparison is meaningless.
    assert_eq!(
        decode_jetmq(&client, Direction::FromClient, version)
            + decode_jetmq(&server, Direction::FromServer, version),
        total
    );
    let mut group = c.benchmark_group("decode_mixed/v311");
    group.throughput(Throughput::Elements(total as u64));
    group.bench_function("jetmq", |b| {
        b.iter(|| {
            decode_jetmq(&client, Direction::FromClient, version)
                + decode_jetmq(&server, Direction::FromServer, version)
        });
    });
    let read_all = |stream: &Bytes| {
        let mut buf = BytesMut::from(&stream[..]);
        let mut n = 0;
        while let Ok(packet) = mq4::Packet::read(&mut buf, MAX) {
            std::hint::black_box(packet);
            n += 1;
        }
        n
    };
    assert_eq!(read_all(&client) + read_all(&server), total);
    group.bench_function("mqttbytes", |b| {
        b.iter(|| read_all(&client) + read_all(&server));
    });
    group.finish();
}

criterion_group!(benches, decode_publish, encode_publish, decode_mixed);
criterion_main!(benches);
