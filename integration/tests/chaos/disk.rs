//! One jetmq node on the embedded store in a small tmpfs that fills up: publishes it cannot
//! store are refused (never acknowledged falsely), the node stays up, and after a SIGKILL with
//! the disk still full and room made again, every acknowledged message reaches its persistent
//! session, no refused one does, the retained message is still there and publishes are
//! acknowledged again.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use jetmq_core::codec::{
    ConnectProperties, Disconnect, DisconnectReason, Packet, PacketId, ProtocolVersion, PubAck,
    Publish, PublishQos, QoS, Subscribe, SubscriptionOptions,
};
use tokio::time::{timeout, Instant};

use super::client::{connect_clean, parse_payload, read_retained, Conn};
use super::faults::restart;
use super::history::History;
use super::procs::Node;
use crate::common::nats_server::free_port;
use crate::common::{toml_path, Shell, TempDir};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(at: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Self(at.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("not 0")
}

/// A persistent MQTT 5.0 session `id` on `port`: the connection and Session Present.
async fn persistent(port: u16, id: &str) -> (Conn, bool) {
    let mut c = Conn::open(port, ProtocolVersion::V5)
        .await
        .expect("the node accepts");
    let connect = jetmq_core::codec::Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 30,
        properties: ConnectProperties {
            session_expiry_interval: Some(3600),
            ..ConnectProperties::default()
        },
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
    };
    c.send(&Packet::Connect(Box::new(connect)))
        .await
        .expect("CONNECT");
    match timeout(Duration::from_secs(10), c.next()).await {
        Ok(Ok(Packet::ConnAck(a))) if u8::from(a.reason) == 0 => (c, a.session_present),
        other => panic!("{id} was not accepted: {other:?}"),
    }
}

/// Publishes `body` at QoS 1 as packet `id`: `Some(true)` acknowledged, `Some(false)` refused
/// with a reason code, `None` no answer (the connection closed or stalled).
async fn publish(c: &mut Conn, id: u16, topic: &str, body: Bytes, retain: bool) -> Option<bool> {
    let mut m = Publish::new(topic.into(), body);
    m.qos = PublishQos::AtLeastOnce(pid(id));
    m.retain = retain;
    c.send(&Packet::Publish(m)).await.ok()?;
    loop {
        match timeout(Duration::from_secs(20), c.next()).await {
            Ok(Ok(Packet::PubAck(a))) if a.packet_id.get() == id => {
                return Some(u8::from(a.reason) < 0x80)
            }
            Ok(Ok(_)) => {}
            _ => return None,
        }
    }
}

async fn leave(c: &mut Conn) {
    let _ = c
        .send(&Packet::Disconnect(Box::new(Disconnect::new(
            DisconnectReason::NormalDisconnection,
        ))))
        .await;
}

/// The full-disk scenario (a tmpfs mount needs root: without it, the test says so and passes).
pub(crate) async fn full_disk(seed: u64) {
    let dir = TempDir::new("chaos-disk");
    let mount = match Mount::new(&dir.0.join("mnt"), "24m") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("chaos_single_node_full_disk skipped: cannot mount a tmpfs ({e})");
            return;
        }
    };
    let data = mount.0.join("data");
    let port = free_port();
    let history = History::new(Instant::now());
    let mut node = tokio::sync::Mutex::new(Node::new(
        "disk",
        Shell::Tokio,
        port,
        format!("data_dir = {}\n", toml_path(&data)),
        dir.0.join("node.log"),
    ));
    restart(&node, &history).await;

    // A persistent session subscribed to disk/#, offline: what is published queues for it.
    let (mut sub, _) = persistent(port, "disk-sub").await;
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![("disk/#".into(), SubscriptionOptions::new(QoS::AtLeastOnce))],
    }))
    .await
    .expect("SUBSCRIBE");
    assert!(matches!(sub.next().await, Ok(Packet::SubAck(_))));
    leave(&mut sub).await;
    drop(sub);

    let mut publisher = connect_clean(port, "disk-pub").await.expect("publisher");
    assert_eq!(
        publish(&mut publisher, 1, "disk/retained", Bytes::from("m0"), true).await,
        Some(true),
        "the retained message is stored"
    );

    // The rest of the disk goes to a filler, but for about 1 MiB.
    let filler_path = mount.0.join("filler");
    {
        let mut filler = std::fs::File::create(&filler_path).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while filler.write_all(&chunk).is_ok() {}
        let len = filler.metadata().expect("filler size").len();
        filler
            .set_len(len.saturating_sub(1 << 20))
            .expect("room for about 1 MiB");
    }

    // Publish until the store refuses ten in a row.
    let padding = "x".repeat(8 * 1024);
    let (mut acked, mut refused, mut unknown) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut refusals_in_a_row = 0;
    let mut next_id: u64 = 1;
    let mut pkid: u16 = 1;
    while refusals_in_a_row < 10 && next_id < 3_000 {
        let body = Bytes::from(format!("m{next_id} {padding}"));
        pkid = pkid % 60_000 + 1;
        match publish(
            &mut publisher,
            pkid,
            &format!("disk/{}", next_id % 5),
            body,
            false,
        )
        .await
        {
            Some(true) => {
                acked.insert(next_id);
                refusals_in_a_row = 0;
            }
            Some(false) => {
                refused.insert(next_id);
                refusals_in_a_row += 1;
            }
            None => {
                unknown.insert(next_id);
                refusals_in_a_row += 1;
                publisher = connect_clean(port, "disk-pub")
                    .await
                    .expect("the node still takes clients with its disk full");
            }
        }
        next_id += 1;
    }
    eprintln!(
        "full disk (seed {seed}): {} acknowledged, {} refused, {} unanswered before ten \
         refusals in a row",
        acked.len(),
        refused.len(),
        unknown.len()
    );
    assert!(
        refusals_in_a_row >= 10,
        "the disk never filled up: {} messages acknowledged",
        acked.len()
    );
    assert!(
        super::client::probe(port).await,
        "the node serves with its disk full"
    );
    // A retained message set while the disk is full: refused, or kept.
    let retained_now: &[u64] = match publish(
        &mut publisher,
        60_001,
        "disk/retained",
        Bytes::from("m1"),
        true,
    )
    .await
    {
        Some(true) => &[1],
        Some(false) => &[0],
        None => &[0, 1],
    };
    drop(publisher);

    // A crash with the disk full; then room again, and the node back.
    node.get_mut().kill();
    std::fs::remove_file(&filler_path).expect("the filler goes");
    restart(&node, &history).await;

    let (mut sub, present) = persistent(port, "disk-sub").await;
    assert!(present, "the session survived the full disk and the crash");
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !acked.is_subset(&got) && Instant::now() < deadline {
        match timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Ok(Packet::Publish(m))) => {
                if let PublishQos::AtLeastOnce(id) = m.qos {
                    let _ = sub.send(&Packet::PubAck(PubAck::new(id))).await;
                }
                if let Some(id) = parse_payload(&m.payload) {
                    got.insert(id);
                }
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    leave(&mut sub).await;
    let lost: Vec<_> = acked.difference(&got).collect();
    let phantom: Vec<_> = refused.intersection(&got).collect();
    assert!(
        lost.is_empty(),
        "acknowledged messages lost through the full disk and the crash (seed {seed}): {lost:?}"
    );
    assert!(
        phantom.is_empty(),
        "refused messages delivered all the same (seed {seed}): {phantom:?}"
    );
    let retained = read_retained(
        port,
        "disk-ret",
        "disk/retained",
        Duration::from_millis(500),
    )
    .await
    .expect("retained read");
    let kept = retained.get("disk/retained").and_then(|p| parse_payload(p));
    assert!(
        kept.is_some_and(|k| retained_now.contains(&k)),
        "the retained message survived (the one acknowledged last, one of {retained_now:?}): \
         {kept:?}"
    );

    // With room again, publishes are acknowledged.
    let mut publisher = connect_clean(port, "disk-pub").await.expect("publisher");
    for i in 0..10u16 {
        assert_eq!(
            publish(
                &mut publisher,
                i + 1,
                "disk/after",
                Bytes::from("m999999"),
                false
            )
            .await,
            Some(true),
            "publishes are acknowledged once the disk has room"
        );
    }
    leave(&mut publisher).await;
    node.get_mut().kill();
    drop(node);
    drop(mount);
}
