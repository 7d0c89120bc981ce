//! What an idle subscribed connection costs the core: a counting global allocator measures
//! the heap the broker keeps for 2 000 clients that connected (3.1.1, clean session,
//! keep-alive 60 s), subscribed to a topic of their own and then stayed quiet past their
//! first timer check, and the figure must stay under a bound (the shells add their sockets
//! and buffers on top; `jetmq-bench --shape idle` measures the whole process). Runs without
//! the test harness, so no other thread allocates meanwhile.

use std::alloc::System;

use bytes::BytesMut;
use bytestring::ByteString;
use jetmq_core::broker::{Broker, BrokerConfig, ConnId, ConnInfo, Input, ListenerKind, Outbox};
use jetmq_core::codec::{
    Connect, Packet, PacketId, ProtocolVersion, QoS, Subscribe, SubscriptionOptions,
};
use jetmq_core::time::{Now, Timestamp, WallClock};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Clients measured.
const CLIENTS: u64 = 2000;

/// The most heap bytes the core may keep per idle subscribed connection: the budget is
/// 2 KiB for the whole process, and a shell's socket state and allocator overhead come on top
/// (at 10 000 connections, about 370 bytes for jetmq-mio and 840 for jetmq on tokio).
const BOUND: usize = 1216;

fn main() {
    let per_connection = idle_subscribed_connection_bytes();
    eprintln!("core heap per idle subscribed connection: {per_connection} bytes (bound {BOUND})");
    assert!(
        per_connection <= BOUND,
        "{per_connection} bytes per idle subscribed connection, over the bound of {BOUND}"
    );
}

fn encode(packet: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    packet.encode(ProtocolVersion::V311, &mut buf);
    buf
}

fn idle_subscribed_connection_bytes() -> usize {
    let now = Now::new(
        Timestamp::from_nanos(1_000_000_000),
        WallClock::from_unix_millis(1_700_000_000_000),
    );
    let mut broker = Broker::new(BrokerConfig::default(), 1, now);
    let mut out = Outbox::new();
    // Past the connect deadline (10 s) the connections' timers run their first check.
    let quiet = |broker: &mut Broker, out: &mut Outbox, now: Now| {
        let later = Now::new(
            now.instant
                .saturating_add(std::time::Duration::from_secs(11)),
            now.wall,
        );
        broker.handle(later, Input::Tick, out);
        out.drain().for_each(drop);
        later
    };
    let connect = |broker: &mut Broker, out: &mut Outbox, now: Now, i: u64| {
        let conn = ConnId::new(i).expect("non-zero");
        let info = ConnInfo {
            peer: "127.0.0.1:40000".into(),
            listener: ListenerKind::Test,
            tls_identity: None,
        };
        broker.handle(now, Input::Accepted { conn, info }, out);
        let mut c = Connect::new(ProtocolVersion::V311, ByteString::from(format!("idle-{i}")));
        c.clean_start = true;
        c.keep_alive = 60;
        broker.handle(
            now,
            Input::Received {
                conn,
                data: encode(&Packet::Connect(Box::new(c))),
            },
            out,
        );
        let sub = Subscribe {
            packet_id: PacketId::new(1).expect("non-zero"),
            properties: Default::default(),
            filters: vec![(
                ByteString::from(format!("idle/{i}")),
                SubscriptionOptions::new(QoS::AtLeastOnce),
            )],
        };
        broker.handle(
            now,
            Input::Received {
                conn,
                data: encode(&Packet::Subscribe(sub)),
            },
            out,
        );
        // The shell writes the CONNACK and SUBACK and reports them written.
        let sent: usize = out
            .drain()
            .map(|a| match a {
                jetmq_core::broker::Action::Send { bytes, .. } => bytes.len(),
                _ => 0,
            })
            .sum();
        broker.handle(now, Input::Flushed { conn, bytes: sent }, out);
        out.drain().for_each(drop);
    };
    // Warm up, so growth of shared structures is not all charged to the measured clients.
    for i in 1..=100 {
        connect(&mut broker, &mut out, now, i);
    }
    let now = quiet(&mut broker, &mut out, now);
    let region = Region::new(GLOBAL);
    for i in 101..=100 + CLIENTS {
        connect(&mut broker, &mut out, now, i);
    }
    quiet(&mut broker, &mut out, now);
    let change = region.change();
    let grown = usize::try_from(change.bytes_reallocated.max(0)).unwrap_or(0);
    let kept = (change.bytes_allocated + grown).saturating_sub(change.bytes_deallocated);
    kept / usize::try_from(CLIENTS).unwrap_or(1)
}
