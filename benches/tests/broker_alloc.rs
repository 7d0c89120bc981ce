//! The broker's delivery path does not allocate in steady state: neither per delivery nor per
//! message. The only allocation left is one per socket read, when the core first shares the
//! read buffer it took over (a `bytes` buffer becomes shareable once). A counting global
//! allocator proves it; it runs without the test harness (`harness = false`), so no other thread runs meanwhile.

use std::alloc::System;

use bytes::BytesMut;
use jetmq_benches::core_driver::{Driver, TOPIC};
use jetmq_core::codec::QoS;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    steady_state_delivery_does_not_allocate_per_delivery();
    eprintln!("steady_state_delivery_does_not_allocate_per_delivery: ok");
}

fn steady_state_delivery_does_not_allocate_per_delivery() {
    // Fan-out: 100 subscribers.
    let mut d = Driver::new(100, QoS::AtMostOnce);
    let publish = d.publish_bytes(TOPIC, 16, QoS::AtMostOnce, 1);
    let inputs: Vec<BytesMut> = (0..1100).map(|_| BytesMut::from(&publish[..])).collect();
    let mut inputs = inputs.into_iter();
    for input in inputs.by_ref().take(100) {
        d.feed_publisher(input);
    }
    let before = d.deliveries();
    let region = Region::new(GLOBAL);
    for input in inputs {
        d.feed_publisher(input);
    }
    let stats = region.change();
    let delivered = d.deliveries() - before;
    assert_eq!(delivered, 1000 * 100);
    assert!(
        stats.allocations <= 1000,
        "{} allocations for 1000 reads of one PUBLISH to 100 subscribers: {stats:?}",
        stats.allocations
    );

    // 1-to-1 in batches of 100 messages per read.
    let mut d = Driver::new(1, QoS::AtMostOnce);
    let batch = d.publish_batch(TOPIC, 16, QoS::AtMostOnce, 100);
    let inputs: Vec<BytesMut> = (0..110).map(|_| BytesMut::from(&batch[..])).collect();
    let mut inputs = inputs.into_iter();
    for input in inputs.by_ref().take(10) {
        d.feed_publisher(input);
    }
    let before = d.deliveries();
    let region = Region::new(GLOBAL);
    for input in inputs {
        d.feed_publisher(input);
    }
    let stats = region.change();
    assert_eq!(d.deliveries() - before, 100 * 100);
    assert!(
        stats.allocations <= 100,
        "{} allocations for 100 reads of 100 1-to-1 messages: {stats:?}",
        stats.allocations
    );
}
