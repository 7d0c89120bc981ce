//! `jetmq-bench`'s scenarios against a jetmq server in the same process: every message of a
//! QoS 1 run at a fixed rate arrives, fan-out multiplies deliveries, the latency percentiles
//! are ordered, the decoding subscriber completes QoS 1 and 2 flows, and the slow-subscriber
//! scenario counts what each subscriber received.

use std::sync::Arc;
use std::time::Duration;

use jetmq::config::ServerConfig;
use jetmq::store::MemoryBackend;
use jetmq_benches::load::slow::SlowScenario;
use jetmq_benches::load::{self, Scenario};
use jetmq_core::codec::QoS;

async fn server() -> (jetmq::server::ServerHandle, std::net::SocketAddr) {
    let config = ServerConfig {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        data_dir: None,
        ..ServerConfig::default()
    };
    let h = jetmq::server::start(config, Arc::new(MemoryBackend::default()))
        .await
        .expect("starts");
    let addr = h.local_addrs[0];
    (h, addr)
}

fn scenario(addr: std::net::SocketAddr) -> Scenario {
    Scenario {
        addr,
        publishers: 1,
        subscribers: 1,
        qos: QoS::AtLeastOnce,
        payload: 32,
        duration: Duration::from_secs(1),
        rate: Some(500),
        window: 16,
        persistent: false,
        decoding: false,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_qos1_run_delivers_everything_with_ordered_percentiles() {
    let (server, addr) = server().await;
    let r = load::run(&scenario(addr)).await.expect("runs");
    assert!(r.published >= 250, "{r:?}");
    assert_eq!(r.received, r.published, "{r:?}");
    assert_eq!(r.missing, 0);
    let [p50, p99, p999, max] = r.latency_us;
    assert!(p50 <= p99 && p99 <= p999 && p999 <= max, "{r:?}");
    server.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_delivers_each_message_to_every_subscriber() {
    let (server, addr) = server().await;
    let s = Scenario {
        subscribers: 4,
        qos: QoS::AtMostOnce,
        ..scenario(addr)
    };
    let r = load::run(&s).await.expect("runs");
    assert_eq!(r.received, 4 * r.published, "{r:?}");
    let conns = load::idle(addr, 50, false).await.expect("idle connections");
    assert_eq!(conns.len(), 50);
    assert!(load::rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    drop(conns);
    server.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decoding_subscriber_completes_qos1_and_qos2_flows() {
    let (server, addr) = server().await;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let s = Scenario {
            qos,
            decoding: true,
            ..scenario(addr)
        };
        let r = load::run(&s).await.expect("runs");
        assert!(r.published >= 250, "{r:?}");
        assert_eq!(r.acknowledged, r.published, "{r:?}");
        assert_eq!((r.received, r.missing), (r.published, 0), "{r:?}");
        assert_eq!(r.lost(qos), None);
    }
    server.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slow_subscriber_scenario_counts_every_subscriber() {
    let (server, addr) = server().await;
    // Few enough messages for any broker's queue: this checks the counting, not overload.
    let s = SlowScenario {
        addr,
        messages: 300,
        fast: 2,
        slow_rate: 1000,
        qos: QoS::AtLeastOnce,
        payload: 16,
        window: 16,
        deadline: Duration::from_secs(20),
        broker_pid: Some(std::process::id()),
        progress: false,
        persistent: false,
    };
    let r = load::slow::run(&s).await.expect("runs");
    assert_eq!(
        (r.published, r.acknowledged, r.lost),
        (300, 300, 0),
        "{r:?}"
    );
    assert!(!r.deadline_reached, "{r:?}");
    assert_eq!(r.fast.len(), 2);
    for d in r.fast.iter().chain([&r.slow]) {
        assert_eq!((d.delivered, d.expected), (300, 300), "{r:?}");
        assert_eq!(
            (d.duplicates, d.out_of_order, d.disconnected),
            (0, 0, false)
        );
    }
    // 300 messages at 1000/s: the slow one is paced.
    assert!(r.slow.last_delivery_s.is_some_and(|s| s >= 0.25), "{r:?}");
    assert!(r.broker_peak_rss_kib.is_some());
    server.shutdown().await.expect("clean stop");
}
