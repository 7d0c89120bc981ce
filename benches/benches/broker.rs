//! The broker core alone, no sockets: one QoS 0 PUBLISH fanned out to 1, 100 and 10 000
//! subscribers, and 1-to-1 QoS 0 and QoS 1 message rates through `Broker::handle`.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use jetmq_benches::core_driver::{Driver, TOPIC};
use jetmq_core::codec::QoS;

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("broker_fanout_qos0");
    for subscribers in [1usize, 100, 10_000] {
        let mut d = Driver::new(subscribers, QoS::AtMostOnce);
        let publish = d.publish_bytes(TOPIC, 16, QoS::AtMostOnce, 1);
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(format!("{subscribers}_subscribers"), |b| {
            b.iter(|| d.feed_publisher(BytesMut::from(&publish[..])));
        });
        assert_eq!(d.deliveries_per_publish(&publish), subscribers as u64);
    }
    group.finish();
}

fn one_to_one(c: &mut Criterion) {
    let mut group = c.benchmark_group("broker_1to1_16B");
    let batch = 100;
    // QoS 0: a read of 100 PUBLISH packets, each delivered to one subscriber.
    let mut d = Driver::new(1, QoS::AtMostOnce);
    let publishes = d.publish_batch(TOPIC, 16, QoS::AtMostOnce, batch);
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function("qos0", |b| {
        b.iter_batched(
            || BytesMut::from(&publishes[..]),
            |bytes| d.feed_publisher(bytes),
            BatchSize::SmallInput,
        );
    });
    // QoS 1: the publisher gets PUBACKs, the subscriber receives QoS 1 and acknowledges.
    let mut d = Driver::new(1, QoS::AtLeastOnce);
    let publishes = d.publish_batch(TOPIC, 16, QoS::AtLeastOnce, batch);
    group.bench_function("qos1", |b| {
        b.iter_batched(
            || BytesMut::from(&publishes[..]),
            |bytes| {
                d.feed_publisher(bytes);
                d.ack_subscribers();
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, fanout, one_to_one);
criterion_main!(benches);
