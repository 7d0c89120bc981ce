//! The chaos run's MQTT clients: each one a task with its own seeded script (connect to a node,
//! publish, subscribe, leave, come back through another node), speaking MQTT 3.1.1 or 5.0
//! packet by packet through jetmq-core's codec, so that every packet id, DUP flag, Session
//! Present flag and reason code is seen and logged, and the client keeps its side of the
//! session as the specification asks (unacknowledged publishes sent again with DUP on resume,
//! QoS 2 packet ids awaiting PUBREL remembered, so a QoS 2 message is delivered to it once).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use jetmq_core::codec::{
    ConnectProperties, Decoder, Direction, Disconnect, DisconnectReason, LastWill, Packet,
    PacketId, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, PublishQos, QoS,
    Subscribe, SubscriptionOptions, Unsubscribe, WillProperties,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::history::{Close, History, Op};
use super::rng::Rng;

/// The phases of a run, as clients follow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Clients come and go, publish and subscribe; faults are injected.
    Chaos,
    /// Faults are healed: clients stay connected (reconnecting when they lose a connection),
    /// publish nothing new and finish what is in flight.
    Drain,
    /// Clients leave with DISCONNECT and stop.
    Stop,
}

/// What a client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Publisher,
    RetainedPublisher,
    PersistentSub,
    CleanSub,
    SharedSub,
    WillClient,
    WillWatcher,
    Mover,
}

/// Publishing of a client.
#[derive(Debug, Clone)]
pub(crate) struct Publishing {
    pub(crate) topics: Vec<String>,
    pub(crate) qos: Vec<(QoS, u32)>,
    pub(crate) retain: bool,
    /// Chance that a retained publish is a delete (empty payload).
    pub(crate) delete_chance: f64,
    pub(crate) interval_ms: (u64, u64),
    /// QoS 1/2 publishes in flight at most.
    pub(crate) window: usize,
}

/// One client's script.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) id: String,
    pub(crate) role: Role,
    pub(crate) v5: bool,
    /// Whether its session outlives its connections (3.1.1 Clean Session 0; 5.0 a session
    /// expiry of an hour).
    pub(crate) persistent: bool,
    /// Subscriptions made when its session is new.
    pub(crate) subs: Vec<(String, QoS)>,
    /// Exact topics it subscribes to and unsubscribes from as it goes.
    pub(crate) churn: Vec<String>,
    pub(crate) churn_qos: QoS,
    pub(crate) publish: Option<Publishing>,
    /// Every connection leaves a will (QoS 1 on `chaos/will/<id>`).
    pub(crate) will: bool,
    /// Chance that a connect starts the session afresh (Clean Start / Clean Session 1).
    pub(crate) clean_start_chance: f64,
    pub(crate) lifetime_ms: (u64, u64),
    pub(crate) offline_ms: (u64, u64),
    pub(crate) long_offline_chance: f64,
    /// Chance that a connection is left by closing the socket instead of DISCONNECT.
    pub(crate) abrupt_chance: f64,
    /// Chance, per QoS 1/2 message received, of closing the socket before acknowledging it.
    pub(crate) unacked_drop_chance: f64,
}

impl Profile {
    fn version(&self) -> ProtocolVersion {
        if self.v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        }
    }
}

/// What every client shares.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) history: Arc<History>,
    /// The MQTT ports of the nodes.
    pub(crate) ports: Arc<Vec<u16>>,
    pub(crate) phase: watch::Receiver<Phase>,
    /// Bumped in the drain: every client with a persistent session leaves and resumes once
    /// (a load reads the session's consumer, which picks up what came back after its ack
    /// wait).
    pub(crate) rejoin: watch::Receiver<u32>,
    /// Message, will and connection numbers, unique in the run.
    pub(crate) ids: Arc<AtomicU64>,
}

impl Ctx {
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    fn phase(&self) -> Phase {
        *self.phase.borrow()
    }
}

/// The payload carrying message id `id`.
pub(crate) fn payload(id: u64) -> Bytes {
    Bytes::from(format!("m{id}"))
}

/// The message id a payload carries (`m<id>`, perhaps followed by a space and padding).
pub(crate) fn parse_payload(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?.strip_prefix('m')?;
    text.split(' ').next()?.parse().ok()
}

/// One MQTT connection: packets in through a decoder, out through the codec.
pub(crate) struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    decoder: Decoder,
    buf: BytesMut,
    version: ProtocolVersion,
    pub(crate) last_sent: Instant,
    pub(crate) last_received: Instant,
}

impl Conn {
    /// Opens a TCP connection to `port` speaking `version`.
    pub(crate) async fn open(port: u16, version: ProtocolVersion) -> Result<Self, String> {
        let stream = timeout(
            Duration::from_secs(3),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .map_err(|_| "TCP connect timed out".to_string())?
        .map_err(|e| format!("TCP connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let mut decoder = Decoder::new(Direction::FromServer, 0);
        decoder.set_version(version);
        Ok(Self {
            rd,
            wr,
            decoder,
            buf: BytesMut::with_capacity(4096),
            version,
            last_sent: Instant::now(),
            last_received: Instant::now(),
        })
    }

    /// Writes one packet.
    pub(crate) async fn send(&mut self, packet: &Packet) -> Result<(), String> {
        let mut out = BytesMut::new();
        packet.encode(self.version, &mut out);
        self.last_sent = Instant::now();
        timeout(Duration::from_secs(10), self.wr.write_all(&out))
            .await
            .map_err(|_| "write timed out".to_string())?
            .map_err(|e| format!("write: {e}"))
    }

    /// The next packet (cancel-safe: bytes read stay in the buffer).
    pub(crate) async fn next(&mut self) -> Result<Packet, String> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(p)) => {
                    self.last_received = Instant::now();
                    return Ok(p);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("undecodable packet: {e}")),
            }
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) => return Err("closed by the broker".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// A client's side of its session, kept across its connections.
#[derive(Default)]
struct Session {
    next_pkid: u16,
    /// Unfinished QoS 1/2 publishes, in the order they were first sent.
    out: BTreeMap<u64, Out>,
    /// QoS 2 packet ids received and awaiting PUBREL.
    in_qos2: HashSet<u16>,
    /// The subscriptions it wants, and whether a SUBACK has granted each in this session.
    subs: BTreeMap<String, (QoS, bool)>,
    /// Packet ids of SUBSCRIBEs and UNSUBSCRIBEs awaiting their acknowledgement.
    pending_sub: HashMap<u16, String>,
    pending_unsub: HashMap<u16, String>,
    /// The topic of each unfinished publish by packet id, for acknowledgements.
    by_pkid: HashMap<u16, u64>,
}

struct Out {
    msg: u64,
    pkid: u16,
    topic: String,
    qos: QoS,
    retain: bool,
    payload: Bytes,
    /// PUBREC received (QoS 2): PUBREL is what remains.
    released: bool,
}

impl Session {
    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            let id = self.next_pkid;
            if id != 0
                && !self.by_pkid.contains_key(&id)
                && !self.pending_sub.contains_key(&id)
                && !self.pending_unsub.contains_key(&id)
            {
                return id;
            }
        }
    }

    /// The session is new (Session Present 0): what the client kept of the old one is gone.
    fn reset(&mut self, client: usize, ctx: &Ctx) {
        for (_, o) in std::mem::take(&mut self.out) {
            if !o.released {
                ctx.history.log(client, Op::Abandoned { msg: o.msg });
            }
        }
        self.by_pkid.clear();
        self.in_qos2.clear();
        self.pending_sub.clear();
        self.pending_unsub.clear();
        for (_, (_, granted)) in self.subs.iter_mut() {
            *granted = false;
        }
    }
}

fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("packet ids are never 0")
}

/// Why a connection's loop ended.
enum End {
    /// Leave now; reconnect after the offline pause.
    Leave,
    /// The connection was lost.
    Lost,
    /// The run is over.
    Stop,
}

/// Runs client `idx` with `profile` until the run stops.
pub(crate) async fn run(idx: usize, profile: Profile, ctx: Ctx, mut rng: Rng) {
    let mut session = Session::default();
    for (filter, qos) in &profile.subs {
        session.subs.insert(filter.clone(), (*qos, false));
    }
    let mut ever_connected = false;
    loop {
        if ctx.phase() == Phase::Stop {
            return;
        }
        let clean_start = !profile.persistent
            || (ever_connected
                && ctx.phase() == Phase::Chaos
                && rng.chance(profile.clean_start_chance));
        // A 3.1.1 client's Clean Session 1 makes a session that ends with the connection.
        let persistent = profile.persistent && (profile.v5 || !clean_start);
        let node = rng.below(ctx.ports.len());
        let end = connection(
            idx,
            &profile,
            &ctx,
            &mut rng,
            &mut session,
            node,
            clean_start,
            persistent,
        )
        .await;
        let Some(end) = end else {
            // No CONNACK accepting it: try again soon, perhaps elsewhere.
            sleep(rng.millis(100, 600)).await;
            continue;
        };
        ever_connected = true;
        if !persistent {
            session.reset(idx, &ctx);
        }
        match end {
            End::Stop => return,
            End::Lost => sleep(rng.millis(50, 300)).await,
            End::Leave => {
                let pause = if rng.chance(profile.long_offline_chance) {
                    rng.millis(3_000, 8_000)
                } else {
                    rng.millis(profile.offline_ms.0, profile.offline_ms.1)
                };
                let mut phase = ctx.phase.clone();
                tokio::select! {
                    () = sleep(pause) => {}
                    _ = phase.wait_for(|p| *p != Phase::Chaos) => {}
                }
            }
        }
    }
}

/// One connection of client `idx` to `node`: `None` when no CONNACK accepted it.
#[allow(clippy::too_many_arguments)]
async fn connection(
    idx: usize,
    p: &Profile,
    ctx: &Ctx,
    rng: &mut Rng,
    s: &mut Session,
    node: usize,
    clean_start: bool,
    persistent: bool,
) -> Option<End> {
    let h = &ctx.history;
    let conn_id = ctx.next_id();
    let will_id = p.will.then(|| ctx.next_id());
    h.log(
        idx,
        Op::Connect {
            conn: conn_id,
            node,
            clean_start,
            persistent,
            will: will_id,
        },
    );
    let failed = |why: String| {
        h.log(idx, Op::ConnFailed { conn: conn_id, why });
        None
    };
    let mut c = match Conn::open(ctx.ports[node], p.version()).await {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let connect = jetmq_core::codec::Connect {
        protocol: p.version(),
        clean_start,
        keep_alive: 15,
        properties: ConnectProperties {
            session_expiry_interval: (p.v5 && persistent).then_some(3600),
            ..ConnectProperties::default()
        },
        client_id: p.id.clone().into(),
        will: will_id.map(|w| LastWill {
            topic: format!("chaos/will/{}", p.id).into(),
            payload: payload(w),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: WillProperties::default(),
        }),
        username: None,
        password: None,
    };
    if let Err(e) = c.send(&Packet::Connect(Box::new(connect))).await {
        return failed(e);
    }
    let ack = match timeout(Duration::from_secs(10), c.next()).await {
        Err(_) => return failed("no CONNACK within 10 s".into()),
        Ok(Err(e)) => return failed(e),
        Ok(Ok(Packet::ConnAck(a))) => a,
        Ok(Ok(other)) => return failed(format!("{other:?} instead of CONNACK")),
    };
    let code = u8::from(ack.reason);
    h.log(
        idx,
        Op::ConnAck {
            conn: conn_id,
            session_present: ack.session_present,
            code,
        },
    );
    if code != 0 {
        return None;
    }
    if !ack.session_present {
        s.reset(idx, ctx);
    }
    let lost = |why: String, reason: Option<u8>| {
        h.log(
            idx,
            Op::Closed {
                conn: conn_id,
                close: Close::Lost { reason, why },
            },
        );
        Some(End::Lost)
    };
    // Resume: what was unfinished goes again, in order.
    let resend: Vec<Packet> = s
        .out
        .values()
        .map(|o| {
            if o.released {
                Packet::PubRel(PubRel::new(pid(o.pkid)))
            } else {
                h.log(
                    idx,
                    Op::Publish {
                        conn: conn_id,
                        msg: o.msg,
                        topic: o.topic.clone(),
                        qos: o.qos,
                        retain: o.retain,
                        dup: true,
                        delete: o.payload.is_empty(),
                    },
                );
                Packet::Publish(publish_packet(o, true))
            }
        })
        .collect();
    for packet in resend {
        if let Err(e) = c.send(&packet).await {
            return lost(e, None);
        }
    }
    // Subscriptions this session does not have yet (a new session, or a SUBSCRIBE whose
    // SUBACK never came).
    let wanted: Vec<(String, QoS)> = s
        .subs
        .iter()
        .filter(|(_, (_, granted))| !granted)
        .map(|(f, (q, _))| (f.clone(), *q))
        .collect();
    s.pending_sub.clear();
    s.pending_unsub.clear();
    for (filter, qos) in wanted {
        if let Err(e) = subscribe(idx, h, &mut c, s, conn_id, &filter, qos).await {
            return lost(e, None);
        }
    }

    let started = Instant::now();
    let lifetime = rng.millis(p.lifetime_ms.0, p.lifetime_ms.1);
    let mut next_publish = started + rng.millis(0, 200);
    let mut next_churn = started + rng.millis(1_000, 4_000);
    let mut phase = ctx.phase.clone();
    let mut rejoin = ctx.rejoin.clone();
    rejoin.mark_unchanged();
    let far = Duration::from_secs(3600);
    loop {
        let chaos = *phase.borrow() == Phase::Chaos;
        let publish_at = match &p.publish {
            Some(pb) if chaos && s.out.len() < pb.window => next_publish,
            _ => Instant::now() + far,
        };
        let churn_at = if chaos && !p.churn.is_empty() && s.pending_sub.is_empty() {
            next_churn
        } else {
            Instant::now() + far
        };
        let leave_at = if chaos {
            started + lifetime
        } else {
            Instant::now() + far
        };
        let ping_at = c.last_sent + Duration::from_secs(5);
        enum Ev {
            Packet(Result<Packet, String>),
            Publish,
            Churn,
            Leave,
            Ping,
            Phase,
            Rejoin,
        }
        let ev = tokio::select! {
            r = c.next() => Ev::Packet(r),
            () = sleep_until(publish_at) => Ev::Publish,
            () = sleep_until(churn_at) => Ev::Churn,
            () = sleep_until(leave_at) => Ev::Leave,
            () = sleep_until(ping_at) => Ev::Ping,
            _ = phase.changed() => Ev::Phase,
            _ = rejoin.changed(), if persistent => Ev::Rejoin,
        };
        match ev {
            Ev::Rejoin => {
                let _ = c
                    .send(&Packet::Disconnect(Box::new(Disconnect::new(
                        DisconnectReason::NormalDisconnection,
                    ))))
                    .await;
                h.log(
                    idx,
                    Op::Closed {
                        conn: conn_id,
                        close: Close::Graceful,
                    },
                );
                return Some(End::Lost);
            }
            Ev::Phase => {
                if *phase.borrow() == Phase::Stop {
                    let _ = c
                        .send(&Packet::Disconnect(Box::new(Disconnect::new(
                            DisconnectReason::NormalDisconnection,
                        ))))
                        .await;
                    h.log(
                        idx,
                        Op::Closed {
                            conn: conn_id,
                            close: Close::Graceful,
                        },
                    );
                    return Some(End::Stop);
                }
            }
            Ev::Ping => {
                if c.last_received.elapsed() > Duration::from_secs(25) {
                    return lost("no packet from the broker for 25 s".into(), None);
                }
                if let Err(e) = c.send(&Packet::PingReq).await {
                    return lost(e, None);
                }
            }
            Ev::Leave => {
                let close = if p.will {
                    match rng.weighted(&[(0, 4), (1, 4), (2, 2)]) {
                        0 => Close::Graceful,
                        2 if p.v5 => Close::WithWill,
                        _ => Close::Abrupt,
                    }
                } else if rng.chance(p.abrupt_chance) {
                    Close::Abrupt
                } else {
                    Close::Graceful
                };
                let reason = match close {
                    Close::Graceful => Some(DisconnectReason::NormalDisconnection),
                    Close::WithWill => Some(DisconnectReason::DisconnectWithWillMessage),
                    _ => None,
                };
                if let Some(reason) = reason {
                    if let Err(e) = c
                        .send(&Packet::Disconnect(Box::new(Disconnect::new(reason))))
                        .await
                    {
                        return lost(e, None);
                    }
                }
                h.log(
                    idx,
                    Op::Closed {
                        conn: conn_id,
                        close,
                    },
                );
                return Some(End::Leave);
            }
            Ev::Churn => {
                next_churn = Instant::now() + rng.millis(1_000, 4_000);
                let topic = p.churn[rng.below(p.churn.len())].clone();
                let result = if s.subs.contains_key(&topic) {
                    s.subs.remove(&topic);
                    let id = s.pkid();
                    s.pending_unsub.insert(id, topic.clone());
                    h.log(
                        idx,
                        Op::Unsubscribe {
                            conn: conn_id,
                            filter: topic.clone(),
                        },
                    );
                    c.send(&Packet::Unsubscribe(Unsubscribe {
                        packet_id: pid(id),
                        properties: Default::default(),
                        filters: vec![topic.into()],
                    }))
                    .await
                } else {
                    s.subs.insert(topic.clone(), (p.churn_qos, false));
                    subscribe(idx, h, &mut c, s, conn_id, &topic, p.churn_qos).await
                };
                if let Err(e) = result {
                    return lost(e, None);
                }
            }
            Ev::Publish => {
                let pb = p.publish.as_ref().expect("a publisher");
                next_publish = Instant::now() + rng.millis(pb.interval_ms.0, pb.interval_ms.1);
                let topic = pb.topics[rng.below(pb.topics.len())].clone();
                let qos = rng.weighted(&pb.qos);
                let msg = ctx.next_id();
                let delete = pb.retain && rng.chance(pb.delete_chance);
                let body = if delete { Bytes::new() } else { payload(msg) };
                h.log(
                    idx,
                    Op::Publish {
                        conn: conn_id,
                        msg,
                        topic: topic.clone(),
                        qos,
                        retain: pb.retain,
                        dup: false,
                        delete,
                    },
                );
                let packet = if qos == QoS::AtMostOnce {
                    let mut m = Publish::new(topic.into(), body);
                    m.retain = pb.retain;
                    m
                } else {
                    let pkid = s.pkid();
                    let o = Out {
                        msg,
                        pkid,
                        topic,
                        qos,
                        retain: pb.retain,
                        payload: body,
                        released: false,
                    };
                    let m = publish_packet(&o, false);
                    s.by_pkid.insert(pkid, msg);
                    s.out.insert(msg, o);
                    m
                };
                if let Err(e) = c.send(&Packet::Publish(packet)).await {
                    return lost(e, None);
                }
            }
            Ev::Packet(Err(e)) => return lost(e, None),
            Ev::Packet(Ok(packet)) => {
                let reply = match packet {
                    Packet::Publish(m) => {
                        let qos = m.qos.level();
                        let pkid = m.qos.packet_id().map(PacketId::get);
                        let fresh = match (qos, pkid) {
                            (QoS::ExactlyOnce, Some(id)) => s.in_qos2.insert(id),
                            _ => true,
                        };
                        h.log(
                            idx,
                            Op::Recv {
                                conn: conn_id,
                                node,
                                msg: parse_payload(&m.payload),
                                topic: m.topic.to_string(),
                                qos,
                                pkid,
                                dup: m.dup,
                                retain: m.retain,
                                fresh,
                            },
                        );
                        if qos != QoS::AtMostOnce && rng.chance(p.unacked_drop_chance) {
                            // Gone before acknowledging: the message must come again.
                            h.log(
                                idx,
                                Op::Closed {
                                    conn: conn_id,
                                    close: Close::Abrupt,
                                },
                            );
                            return Some(End::Leave);
                        }
                        match m.qos {
                            PublishQos::AtMostOnce => None,
                            PublishQos::AtLeastOnce(id) => Some(Packet::PubAck(PubAck::new(id))),
                            PublishQos::ExactlyOnce(id) => Some(Packet::PubRec(PubRec::new(id))),
                        }
                    }
                    Packet::PubRel(r) => {
                        s.in_qos2.remove(&r.packet_id.get());
                        h.log(
                            idx,
                            Op::Released {
                                conn: conn_id,
                                pkid: r.packet_id.get(),
                            },
                        );
                        Some(Packet::PubComp(PubComp::new(r.packet_id)))
                    }
                    Packet::PubAck(a) => {
                        if let Some(msg) = s.by_pkid.remove(&a.packet_id.get()) {
                            s.out.remove(&msg);
                            let code = u8::from(a.reason);
                            h.log(
                                idx,
                                if code < 0x80 {
                                    Op::Acked { msg, code }
                                } else {
                                    Op::Refused { msg, code }
                                },
                            );
                        }
                        None
                    }
                    Packet::PubRec(a) => {
                        let id = a.packet_id.get();
                        let code = u8::from(a.reason);
                        match s.by_pkid.get(&id).copied() {
                            Some(msg) if code < 0x80 => {
                                let o = s.out.get_mut(&msg).expect("in flight");
                                if !o.released {
                                    o.released = true;
                                    h.log(idx, Op::Acked { msg, code });
                                }
                                Some(Packet::PubRel(PubRel::new(a.packet_id)))
                            }
                            Some(msg) => {
                                s.by_pkid.remove(&id);
                                s.out.remove(&msg);
                                h.log(idx, Op::Refused { msg, code });
                                None
                            }
                            None => None,
                        }
                    }
                    Packet::PubComp(a) => {
                        if let Some(msg) = s.by_pkid.remove(&a.packet_id.get()) {
                            s.out.remove(&msg);
                        }
                        None
                    }
                    Packet::SubAck(a) => {
                        if let Some(filter) = s.pending_sub.remove(&a.packet_id.get()) {
                            let granted = a.reasons.first().and_then(|r| match u8::from(*r) {
                                0 => Some(QoS::AtMostOnce),
                                1 => Some(QoS::AtLeastOnce),
                                2 => Some(QoS::ExactlyOnce),
                                _ => None,
                            });
                            h.log(
                                idx,
                                Op::SubAck {
                                    conn: conn_id,
                                    filter: filter.clone(),
                                    granted,
                                },
                            );
                            if granted.is_some() {
                                if let Some(sub) = s.subs.get_mut(&filter) {
                                    sub.1 = true;
                                }
                            } else {
                                s.subs.remove(&filter);
                            }
                        }
                        None
                    }
                    Packet::UnsubAck(a) => {
                        s.pending_unsub.remove(&a.packet_id.get());
                        None
                    }
                    Packet::Disconnect(d) => {
                        return lost(format!("DISCONNECT {}", d.reason), Some(u8::from(d.reason)));
                    }
                    _ => None,
                };
                if let Some(reply) = reply {
                    if let Err(e) = c.send(&reply).await {
                        return lost(e, None);
                    }
                }
            }
        }
    }
}

fn publish_packet(o: &Out, dup: bool) -> Publish {
    let mut m = Publish::new(o.topic.clone().into(), o.payload.clone());
    m.retain = o.retain;
    m.dup = dup;
    m.qos = match o.qos {
        QoS::AtMostOnce => PublishQos::AtMostOnce,
        QoS::AtLeastOnce => PublishQos::AtLeastOnce(pid(o.pkid)),
        QoS::ExactlyOnce => PublishQos::ExactlyOnce(pid(o.pkid)),
    };
    m
}

async fn subscribe(
    idx: usize,
    h: &History,
    c: &mut Conn,
    s: &mut Session,
    conn: u64,
    filter: &str,
    qos: QoS,
) -> Result<(), String> {
    let id = s.pkid();
    s.pending_sub.insert(id, filter.to_owned());
    h.log(
        idx,
        Op::Subscribe {
            conn,
            filter: filter.to_owned(),
            qos,
        },
    );
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: Default::default(),
        filters: vec![(filter.into(), SubscriptionOptions::new(qos))],
    }))
    .await
}

/// A clean MQTT 5.0 connection as `id` to `port`, accepted by its CONNACK.
pub(crate) async fn connect_clean(port: u16, id: &str) -> Result<Conn, String> {
    let mut c = Conn::open(port, ProtocolVersion::V5).await?;
    let connect = jetmq_core::codec::Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 30,
        properties: ConnectProperties::default(),
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
    };
    c.send(&Packet::Connect(Box::new(connect))).await?;
    match timeout(Duration::from_secs(10), c.next()).await {
        Ok(Ok(Packet::ConnAck(a))) if u8::from(a.reason) == 0 => Ok(c),
        Ok(Ok(other)) => Err(format!("{other:?}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("no CONNACK within 10 s".into()),
    }
}

/// Whether the node on `port` accepts a clean MQTT 5.0 client.
pub(crate) async fn probe(port: u16) -> bool {
    match connect_clean(port, &format!("chaos-probe-{port}")).await {
        Ok(mut c) => {
            let _ = c
                .send(&Packet::Disconnect(Box::new(Disconnect::new(
                    DisconnectReason::NormalDisconnection,
                ))))
                .await;
            true
        }
        Err(_) => false,
    }
}

/// The retained messages the node on `port` has under `filter`: topic and payload, read by a
/// fresh subscriber until nothing more came for `quiet`.
pub(crate) async fn read_retained(
    port: u16,
    id: &str,
    filter: &str,
    quiet: Duration,
) -> Result<BTreeMap<String, Bytes>, String> {
    let mut c = connect_clean(port, id).await?;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(filter.into(), SubscriptionOptions::new(QoS::AtLeastOnce))],
    }))
    .await?;
    let mut got = BTreeMap::new();
    let mut subacked = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let wait = quiet.min(deadline.saturating_duration_since(Instant::now()));
        match timeout(wait, c.next()).await {
            Err(_) if subacked => break,
            Err(_) => return Err("no SUBACK".into()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Packet::SubAck(_))) => subacked = true,
            Ok(Ok(Packet::Publish(m))) => {
                if let PublishQos::AtLeastOnce(id) = m.qos {
                    c.send(&Packet::PubAck(PubAck::new(id))).await?;
                }
                if m.retain {
                    got.insert(m.topic.to_string(), m.payload.clone());
                }
            }
            Ok(Ok(_)) => {}
        }
    }
    let _ = c
        .send(&Packet::Disconnect(Box::new(Disconnect::new(
            DisconnectReason::NormalDisconnection,
        ))))
        .await;
    Ok(got)
}
