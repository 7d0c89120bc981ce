//! The model a run's history is checked against. Hard checks (a violation fails the run,
//! unless a hole below explains it):
//!
//! - **no acknowledged message lost**: a QoS 1/2 message acknowledged to its publisher (PUBACK,
//!   PUBREC), whose publish (from its first send to its acknowledgement) lies within the life
//!   of a QoS 1/2 subscription of a session (from its SUBACK to its UNSUBSCRIBE or the
//!   session's end), reaches that session. Persistent sessions are checked over their whole
//!   life; clean sessions when their connection lasted to the end of the drain. A session its
//!   client ended (Clean Start) owes nothing it had queued, nor does a subscription ended by
//!   UNSUBSCRIBE (the server may drop what it had not begun to send, MQTT-3.10.4). A shared
//!   group owes each such message to one of its members;
//! - **QoS 2 exactly once** per session, as the client's side of the protocol counts it (a
//!   QoS 2 PUBLISH under a packet id still awaiting PUBREL is the same delivery), and per
//!   shared group;
//! - **order**: per receiving session, publisher, topic and QoS, no message is first received
//!   after a later one when it was acknowledged before the later one was sent (or both went
//!   on one connection);
//! - **Session Present** on every CONNACK: 0 after Clean Start (and after a 3.1.1 Clean
//!   Session 1 connection ended), 1 when the session exists;
//! - **wills**: never published after DISCONNECT 0; always after a close without DISCONNECT
//!   (or 5.0's 0x04) while a watcher is subscribed, unless the will's connection was lost with
//!   its node;
//! - **no stray deliveries**: every message received was published, on its topic, and matches
//!   a filter its session subscribed to;
//! - **retained state** converges to the same allowed value on every node (the run checks it
//!   at the end against [`Analysis::retained`]: the last acknowledged retained publish of a
//!   topic, or a later one whose outcome is unknown);
//! - **liveness**: after the drain every client is connected and every publish resolved.
//!
//! Counted, not failed: QoS 1 duplicates. Report-only: violations a hole explains, each
//! recognised by a narrow pattern: the fleet's known holes ([`KNOWN_HOLES`]) and those this
//! harness found ([`FOUND_HOLES`]; failed too with `JETMQ_CHAOS_STRICT=1`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use jetmq_core::codec::QoS;

use super::client::{Profile, Role};
use super::history::{secs, Close, Event, Micros, Op};

/// Fleet holes known and to be fixed separately: violations they explain are reported, not
/// failed. Each: its name, and what it is.
pub(crate) const KNOWN_HOLES: &[(&str, &str)] = &[
    (
        "shared-duplicates-on-resume",
        "a shared-subscription member whose session no node holds in memory is given, when it \
         resumes, the messages its group took meanwhile (README, shared subscriptions in a \
         fleet): a QoS 2 message reaches the group twice",
    ),
    (
        "handover-not-in-jetstream",
        "a message handed over to another member of a shared group is not kept in JetStream \
         until that member acknowledges it: a node that dies first loses it for the group",
    ),
    (
        "shares-while-nats-unreachable",
        "while a node's NATS connection is down, shared subscriptions there get nothing and \
         what the queue group handed that node is not taken by another",
    ),
    (
        "unconditional-record-writes",
        "subscription changes and a clean start's purge write the session record without \
         Nats-Expected-Last-Subject-Sequence: a record a later connect wrote can be overwritten \
         (a session resumed with older subscriptions, or found after a clean start)",
    ),
    (
        "extra-reads-on-clean-start",
        "a clean start reads the stored session and QoS 2 state before its CONNACK: slower, \
         and refused while JetStream is unreachable",
    ),
];

/// Holes this harness found (not in [`KNOWN_HOLES`]): reported, not failed, unless the run is
/// strict (`JETMQ_CHAOS_STRICT=1`). Each: its name, what it is, and a seed that shows it.
pub(crate) const FOUND_HOLES: &[(&str, &str)] = &[
    (
        "overlapping-nats-subscriptions",
        "a node whose MQTT subscriptions map to overlapping NATS subjects (chaos.t.> and \
         chaos.t.* for chaos/t/# and chaos/t/+) is handed a message published through another \
         node once per NATS subscription, and delivers every copy: duplicates at QoS 0 and 1, \
         and at QoS 2 under new packet ids (any seed)",
    ),
    (
        "qos2-resent-new-packet-id",
        "a QoS 2 message a session was given and had not completed is sent again, when the \
         session resumes (often on another node), as a new PUBLISH under a new packet id: the \
         client cannot tell it from a new message (MQTT-4.4.0-1 wants the original id)",
    ),
    (
        "qos2-twice-on-one-connection",
        "a session is given one QoS 2 message twice on one connection under two packet ids, \
         at least one copy re-sent (DUP) or late: its queued copy (read from its consumer) and \
         its live copy, or two reads of its consumer, are not told apart",
    ),
    (
        "subscription-save-lost",
        "a subscription granted (SUBACK) to a persistent session is missing when the session \
         resumes, Session Present 1: none of its messages come any more. Seen when a node \
         restarted (its start-up restore read the session's record) before the SUBSCRIBE and \
         the session then resumed through that node: a subscription change keeps the record's \
         connect stamp, so the node's older copy passes for current; and when the SUBSCRIBE \
         came while JetStream was electing",
    ),
    (
        "offline-queue-lost-after-refused-resume",
        "a persistent session offline on one node, whose resume through another node is \
         refused while NATS is disturbed (CONNACK server unavailable), then resumes (Session \
         Present 1) without the messages published while it was away: they never come, not \
         after further resumes nor after the ack wait",
    ),
    (
        "clean-sessions-miss-while-nats-down",
        "a clean session on a node whose NATS connection is down or being re-established \
         misses the QoS 1/2 messages published through other nodes meanwhile: they are \
         stored and acknowledged, but clean sessions are served from live NATS copies only",
    ),
    (
        "will-dropped-while-jetstream-unavailable",
        "a will due (the client closed its socket, or sent DISCONNECT 0x04) while JetStream is \
         out of reach (a fault on the NATS path, or a cluster still recovering: connects and \
         publishes refused around then) is dropped, never published later",
    ),
    (
        "qos2-resend-not-delivered-live",
        "a QoS 2 PUBLISH whose connection ends before its PUBREC is stored (persistent sessions \
         get it) but not delivered live; sent again on the publisher's next connection, it is \
         recognised as a duplicate and acknowledged, and online clean sessions never get it",
    ),
    (
        "clean-start-without-jetstream",
        "a Clean Start (3.1.1: Clean Session 1) accepted while its node cannot reach \
         JetStream does not end the stored session: a later resume finds it, Session Present \
         1, with its subscriptions and queue",
    ),
    (
        "order-on-catch-up",
        "a message the live path missed (NATS fault, a node restarting, or a restarting \
         node's start-up restore holding every session's pending messages for the ack wait) \
         comes later from the session's consumer, after later messages of the same publisher \
         and topic (MQTT 4.6 ordering)",
    ),
    (
        "order-of-publishes-resent",
        "QoS 1/2 publishes unacknowledged when their publisher's connection ends are sent again, \
         in order, on its next connection; a later one the broker had stored from the first \
         connection is delivered before an earlier one it had not (the core says they may be \
         reordered on resend; MQTT 4.6 wants the order they were received in)",
    ),
    (
        "qos2-resent-after-completion",
        "a QoS 2 message whose delivery the client completed (PUBREL received, PUBCOMP sent) \
         is sent again when the session resumes after a fault: its completion was not kept",
    ),
];

/// A broken rule.
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    pub(crate) check: &'static str,
    /// The known hole that explains it, if any: then it is reported, not failed.
    pub(crate) hole: Option<&'static str>,
    pub(crate) detail: String,
}

#[derive(Debug, Clone)]
struct Msg {
    publisher: usize,
    topic: String,
    qos: QoS,
    retain: bool,
    delete: bool,
    first_sent: Micros,
    first_conn: u64,
    /// Its place among its publisher's messages.
    send_idx: u64,
    acked: Option<Micros>,
    refused: bool,
    /// Sent again (DUP) on a later connection of its publisher.
    resent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpochEnd {
    /// Still there at the end of the drain.
    Open,
    /// Its client started afresh (Clean Start): what was queued is legitimately gone.
    CleanStart,
    /// A CONNACK said Session Present 0 when it should have been 1: the broker lost it.
    Lost,
    /// A session of one connection, ended with it.
    ConnectionEnd,
    /// A clean start that got no CONNACK: the session may or may not have ended.
    Ambiguous,
}

#[derive(Debug, Clone)]
struct Interval {
    filter: String,
    qos: QoS,
    start: Micros,
    end: Option<Micros>,
    /// Ended by an UNSUBSCRIBE: then nothing is owed (the server may drop what it had
    /// buffered and not begun to send, MQTT-3.10.4).
    unsubscribed: bool,
}

/// One session of a client, from the CONNACK that made it to its end.
#[derive(Debug, Clone)]
struct Epoch {
    client: usize,
    /// The node of the connection that made it.
    node: usize,
    end: Option<Micros>,
    end_kind: EpochEnd,
    intervals: Vec<Interval>,
    /// Every filter a SUBSCRIBE of it named.
    filters: Vec<String>,
}

impl Epoch {
    fn close(&mut self, t: Micros, kind: EpochEnd) {
        if self.end.is_none() {
            self.end = Some(t);
            self.end_kind = kind;
            for i in &mut self.intervals {
                if i.end.is_none() {
                    i.end = Some(t);
                }
            }
        }
    }

    /// Whether what was queued for it had to reach it.
    fn owes(&self) -> bool {
        matches!(self.end_kind, EpochEnd::Open | EpochEnd::Lost)
    }
}

#[derive(Debug, Clone)]
struct Recv {
    client: usize,
    epoch: Option<usize>,
    conn: u64,
    t: Micros,
    msg: Option<u64>,
    topic: String,
    qos: QoS,
    pkid: Option<u16>,
    dup: bool,
    retain: bool,
    fresh: bool,
}

#[derive(Debug, Clone)]
struct Will {
    client: usize,
    node: usize,
    id: u64,
    accepted: bool,
    close: Option<(Close, Micros)>,
}

#[derive(Debug, Clone)]
struct FaultSpan {
    kind: &'static str,
    target: String,
    start: Micros,
    end: Option<Micros>,
}

/// Whether MQTT filter `filter` matches `topic`.
pub(crate) fn matches(filter: &str, topic: &str) -> bool {
    let filter = shared_filter(filter).map_or(filter, |(_, f)| f);
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if t.next().is_none() {
                    return false;
                }
            }
            level => {
                if t.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

/// `$share/<group>/<filter>`: the group and the filter.
fn shared_filter(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix("$share/")?.split_once('/')
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    secs(sorted[i.min(sorted.len() - 1)])
}

/// What a history shows.
#[derive(Default)]
pub(crate) struct Analysis {
    pub(crate) violations: Vec<Violation>,
    /// Deliveries owed and not (yet) made: the drain waits for none.
    pub(crate) pending: usize,
    /// Clients without an accepted connection, and publishes still unresolved.
    pub(crate) disconnected: usize,
    pub(crate) in_flight: usize,
    /// Per retained topic, the values allowed at the end (`None`: no retained message).
    pub(crate) retained: BTreeMap<String, Vec<Option<u64>>>,
    pub(crate) summary: String,
}

impl Analysis {
    /// The violations that fail the run: those no hole explains, and with `strict` those of
    /// the holes this harness found.
    pub(crate) fn hard(&self, strict: bool) -> Vec<&Violation> {
        self.violations
            .iter()
            .filter(|v| match v.hole {
                None => true,
                Some(h) => strict && FOUND_HOLES.iter().any(|(name, _)| *name == h),
            })
            .collect()
    }
}

/// Checks `events` of clients `profiles`. `cutoff`: the end of the drain (what is open then
/// counts as open); `None` while the run goes on.
pub(crate) fn analyze(events: &[Event], profiles: &[Profile], cutoff: Option<Micros>) -> Analysis {
    let mut a = Analysis::default();
    let mut v = Vec::new();
    let now = events.last().map_or(0, |e| e.t);
    let cutoff_t = cutoff.unwrap_or(Micros::MAX);

    let mut msgs: HashMap<u64, Msg> = HashMap::new();
    let mut send_idx: HashMap<usize, u64> = HashMap::new();
    let mut epochs: Vec<Epoch> = Vec::new();
    let mut current: HashMap<usize, usize> = HashMap::new(); // client -> open epoch
    let mut exists: HashMap<usize, Option<bool>> = HashMap::new(); // None: unknown
    let mut pending_conn: HashMap<usize, (u64, Micros, bool, bool, usize)> = HashMap::new();
    let mut conn_epoch: HashMap<u64, usize> = HashMap::new();
    let mut connected: HashMap<usize, bool> = HashMap::new();
    let mut recvs: Vec<Recv> = Vec::new();
    let mut wills: Vec<Will> = Vec::new();
    let mut will_by_conn: HashMap<u64, usize> = HashMap::new();
    let mut faults: Vec<FaultSpan> = Vec::new();
    let mut lost_at: HashMap<usize, (Micros, usize)> = HashMap::new(); // client -> (t, node)
    let mut resumes: Vec<(Micros, Micros, usize)> = Vec::new(); // (lost, resumed, node)
    let mut sp_checked = 0usize;
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut node_of_conn: HashMap<u64, usize> = HashMap::new();
    // Per client: its last clean start (node, sent, accepted), and when a connection of a
    // session that outlives it last ended.
    let mut last_clean: HashMap<usize, (usize, Micros, Micros)> = HashMap::new();
    let mut last_persistent_close: HashMap<usize, Micros> = HashMap::new();
    let mut closes: HashMap<usize, Vec<Micros>> = HashMap::new();
    // Per client: since when it is without a connection, and whether a CONNACK refused it
    // meanwhile; then the windows it was away, with that flag.
    let mut away: HashMap<usize, (Micros, bool)> = HashMap::new();
    let mut away_windows: HashMap<usize, Vec<(Micros, Micros, bool)>> = HashMap::new();
    let mut notes: Vec<String> = Vec::new();
    let mut connack_latency: Vec<(Micros, Micros)> = Vec::new();
    // When each client resumed a session (CONNACK Session Present 1).
    let mut resumed_at: HashMap<usize, Vec<Micros>> = HashMap::new();
    // When the fleet said JetStream was out of reach: CONNACK 0x88, publishes refused.
    let mut unavailable_at: Vec<Micros> = Vec::new();
    // (client, packet id) -> when PUBREL came (on any of its connections: a resumed session
    // gets the PUBREL of a delivery begun on an earlier one).
    let mut released: HashMap<(usize, u16), Vec<Micros>> = HashMap::new();

    for e in events {
        let c = e.client;
        match &e.op {
            Op::Connect {
                conn,
                node,
                clean_start,
                persistent,
                will,
            } => {
                *counts.entry("connects").or_default() += 1;
                pending_conn.insert(c, (*conn, e.t, *clean_start, *persistent, *node));
                node_of_conn.insert(*conn, *node);
                if let Some(id) = will {
                    will_by_conn.insert(*conn, wills.len());
                    wills.push(Will {
                        client: c,
                        node: *node,
                        id: *id,
                        accepted: false,
                        close: None,
                    });
                }
            }
            Op::ConnAck {
                conn,
                session_present,
                code,
            } => {
                let Some(&(pconn, pt, clean_start, persistent, node)) = pending_conn.get(&c) else {
                    continue;
                };
                if pconn != *conn {
                    continue;
                }
                if *code != 0 {
                    *counts.entry("connects refused").or_default() += 1;
                    if *code == 0x88 {
                        unavailable_at.push(e.t);
                    }
                    if let Some(a) = away.get_mut(&c) {
                        a.1 = true;
                    }
                    no_connack(
                        c,
                        pt,
                        clean_start,
                        persistent,
                        &mut exists,
                        &mut current,
                        &mut epochs,
                    );
                    continue;
                }
                let known = exists.get(&c).copied().unwrap_or(Some(false));
                let expected = if clean_start { Some(false) } else { known };
                if let Some(want) = expected {
                    sp_checked += 1;
                    if want != *session_present {
                        // A session found that a clean start should have ended: the clean
                        // start came while its node could not reach JetStream, or right
                        // after the client left another connection (whose record write may
                        // land after the purge).
                        let hole = match last_clean.get(&c) {
                            Some(&(n, sent, accepted)) if !clean_start && *session_present => {
                                if faults.iter().any(|f| {
                                    (f.kind.starts_with("nats")
                                        || (f.kind.starts_with("link")
                                            && f.target == format!("j{n}")))
                                        && overlaps(f, sent.saturating_sub(1_000_000), accepted)
                                }) {
                                    Some("clean-start-without-jetstream")
                                } else if last_persistent_close
                                    .get(&c)
                                    .is_some_and(|t| *t <= sent && sent - *t < 2_000_000)
                                {
                                    Some("unconditional-record-writes")
                                } else {
                                    None
                                }
                            }
                            _ => None,
                        };
                        v.push(Violation {
                            check: "session-present",
                            hole,
                            detail: format!(
                                "{} at {:.3}s through j{node}: Session Present {} where {} was \
                                 due (clean start {clean_start})",
                                profiles[c].id,
                                secs(e.t),
                                u8::from(*session_present),
                                u8::from(want)
                            ),
                        });
                    }
                }
                let open = current.get(&c).copied();
                if !session_present {
                    if let Some(i) = open {
                        let kind = if clean_start {
                            EpochEnd::CleanStart
                        } else if expected.is_none() {
                            EpochEnd::Ambiguous
                        } else {
                            EpochEnd::Lost
                        };
                        epochs[i].close(pt, kind);
                    }
                }
                let epoch = match (session_present, open) {
                    (true, Some(i)) if epochs[i].end.is_none() => i,
                    _ => {
                        // A new session; after an ambiguous end (or a session found that
                        // should not have been), the filters of the one before may be there.
                        let inherited = if *session_present {
                            open.map(|i| epochs[i].filters.clone()).unwrap_or_default()
                        } else {
                            Vec::new()
                        };
                        if let Some(i) = open {
                            epochs[i].close(pt, EpochEnd::Ambiguous);
                        }
                        epochs.push(Epoch {
                            client: c,
                            node,
                            end: None,
                            end_kind: EpochEnd::Open,
                            intervals: Vec::new(),
                            filters: inherited,
                        });
                        epochs.len() - 1
                    }
                };
                if clean_start {
                    last_clean.insert(c, (node, pt, e.t));
                }
                if *session_present {
                    resumed_at.entry(c).or_default().push(e.t);
                }
                connack_latency.push((pt, e.t - pt));
                current.insert(c, epoch);
                conn_epoch.insert(*conn, epoch);
                exists.insert(c, Some(persistent));
                connected.insert(c, true);
                if let Some((since, refused)) = away.remove(&c) {
                    away_windows
                        .entry(c)
                        .or_default()
                        .push((since, e.t, refused));
                }
                if let Some((t0, lost_node)) = lost_at.remove(&c) {
                    resumes.push((t0, e.t, lost_node));
                }
                if let Some(&w) = will_by_conn.get(conn) {
                    wills[w].accepted = true;
                }
            }
            Op::ConnFailed { conn, .. } => {
                *counts.entry("connects failed").or_default() += 1;
                if let Some(&(pconn, pt, clean_start, persistent, _)) = pending_conn.get(&c) {
                    if pconn == *conn {
                        no_connack(
                            c,
                            pt,
                            clean_start,
                            persistent,
                            &mut exists,
                            &mut current,
                            &mut epochs,
                        );
                    }
                }
            }
            Op::Closed { conn, close } => {
                connected.insert(c, false);
                closes.entry(c).or_default().push(e.t);
                away.insert(c, (e.t, false));
                if pending_conn.get(&c).is_some_and(|p| p.0 == *conn && p.3) {
                    last_persistent_close.insert(c, e.t);
                }
                if let Some(&i) = conn_epoch.get(conn) {
                    let persistent = pending_conn.get(&c).is_some_and(|p| p.3);
                    if !persistent && e.t <= cutoff_t {
                        epochs[i].close(e.t, EpochEnd::ConnectionEnd);
                        exists.insert(c, Some(false));
                    }
                }
                if let Some(&w) = will_by_conn.get(conn) {
                    wills[w].close = Some((close.clone(), e.t));
                }
                if matches!(close, Close::Lost { .. }) {
                    lost_at.insert(c, (e.t, node_of_conn.get(conn).copied().unwrap_or(0)));
                }
            }
            Op::Subscribe { conn, filter, .. } => {
                *counts.entry("subscribes").or_default() += 1;
                if let Some(&i) = conn_epoch.get(conn) {
                    epochs[i].filters.push(filter.clone());
                }
            }
            Op::SubAck {
                conn,
                filter,
                granted,
            } => {
                if let (Some(&i), Some(qos)) = (conn_epoch.get(conn), granted) {
                    if epochs[i].end.is_none() {
                        epochs[i].intervals.push(Interval {
                            filter: filter.clone(),
                            qos: *qos,
                            start: e.t,
                            end: None,
                            unsubscribed: false,
                        });
                    }
                }
            }
            Op::Unsubscribe { conn, filter } => {
                *counts.entry("unsubscribes").or_default() += 1;
                if let Some(&i) = conn_epoch.get(conn) {
                    for iv in &mut epochs[i].intervals {
                        if &iv.filter == filter && iv.end.is_none() {
                            iv.end = Some(e.t);
                            iv.unsubscribed = true;
                        }
                    }
                }
            }
            Op::Publish {
                conn,
                msg,
                topic,
                qos,
                retain,
                dup,
                delete,
            } => {
                if *dup {
                    *counts.entry("publishes resent").or_default() += 1;
                    if let Some(m) = msgs.get_mut(msg) {
                        m.resent = true;
                    }
                    continue;
                }
                *counts.entry("publishes").or_default() += 1;
                let idx = send_idx.entry(c).or_default();
                *idx += 1;
                msgs.insert(
                    *msg,
                    Msg {
                        publisher: c,
                        topic: topic.clone(),
                        qos: *qos,
                        retain: *retain,
                        delete: *delete,
                        first_sent: e.t,
                        first_conn: *conn,
                        send_idx: *idx,
                        acked: None,
                        refused: false,
                        resent: false,
                    },
                );
            }
            Op::Acked { msg, .. } => {
                if let Some(m) = msgs.get_mut(msg) {
                    if m.acked.is_none() {
                        m.acked = Some(e.t);
                        *counts.entry("publishes acknowledged").or_default() += 1;
                    }
                }
            }
            Op::Refused { msg, .. } => {
                *counts.entry("publishes refused").or_default() += 1;
                unavailable_at.push(e.t);
                if let Some(m) = msgs.get_mut(msg) {
                    m.refused = true;
                }
            }
            Op::Abandoned { .. } => {
                *counts.entry("publishes abandoned").or_default() += 1;
            }
            Op::Recv {
                conn,
                msg,
                topic,
                qos,
                pkid,
                dup,
                retain,
                fresh,
                ..
            } => {
                *counts.entry("deliveries").or_default() += 1;
                recvs.push(Recv {
                    client: c,
                    epoch: conn_epoch.get(conn).copied(),
                    conn: *conn,
                    t: e.t,
                    msg: *msg,
                    topic: topic.clone(),
                    qos: *qos,
                    pkid: *pkid,
                    dup: *dup,
                    retain: *retain,
                    fresh: *fresh,
                });
            }
            Op::Released { pkid, .. } => {
                released.entry((c, *pkid)).or_default().push(e.t);
            }
            Op::Fault { kind, target, heal } => {
                if *heal {
                    if let Some(f) = faults
                        .iter_mut()
                        .rev()
                        .find(|f| f.kind == *kind && &f.target == target && f.end.is_none())
                    {
                        f.end = Some(e.t);
                    }
                } else {
                    faults.push(FaultSpan {
                        kind,
                        target: target.clone(),
                        start: e.t,
                        end: None,
                    });
                }
            }
            Op::Phase { .. } => {}
            Op::Note { text } => {
                *counts.entry("harness notes").or_default() += 1;
                notes.push(format!("{:.3}s {text}", secs(e.t)));
            }
        }
    }

    // Who is connected, what is unresolved.
    a.disconnected = profiles
        .iter()
        .enumerate()
        .filter(|(i, _)| !connected.get(i).copied().unwrap_or(false))
        .count();
    a.in_flight = msgs
        .values()
        .filter(|m| m.qos != QoS::AtMostOnce && m.acked.is_none() && !m.refused)
        .count();
    // Unresolved ones a clean session gave up are not in flight.
    let abandoned: HashSet<u64> = events
        .iter()
        .filter_map(|e| match e.op {
            Op::Abandoned { msg } => Some(msg),
            _ => None,
        })
        .collect();
    a.in_flight = msgs
        .iter()
        .filter(|(id, m)| {
            m.qos != QoS::AtMostOnce && m.acked.is_none() && !m.refused && !abandoned.contains(id)
        })
        .count();

    // Who received what.
    let mut received: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    let mut by_msg: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, r) in recvs.iter().enumerate() {
        if let Some(m) = r.msg {
            received.entry((r.client, m)).or_default().push(i);
            by_msg.entry(m).or_default().push(i);
        }
    }
    let will_ids: HashMap<u64, usize> = wills.iter().enumerate().map(|(i, w)| (w.id, i)).collect();

    // Stray deliveries: unknown messages, wrong topics, no matching filter in the session.
    let mut stray = 0usize;
    for r in &recvs {
        let problem = match r.msg {
            None if r.topic.starts_with("chaos/r/") => None, // a retained delete, passed on
            None => Some("a payload no client published".to_string()),
            Some(id) => match msgs.get(&id) {
                Some(m) if m.topic != r.topic => Some(format!("published on {}", m.topic)),
                Some(_) => None,
                None if will_ids.contains_key(&id) => {
                    let w = &wills[will_ids[&id]];
                    let topic = format!("chaos/will/{}", profiles[w.client].id);
                    (topic != r.topic).then(|| format!("a will of topic {topic}"))
                }
                None => Some("never published".into()),
            },
        };
        let problem = problem.or_else(|| {
            let filters = r.epoch.map(|i| &epochs[i].filters)?;
            (!filters.iter().any(|f| matches(f, &r.topic)))
                .then(|| format!("no filter of its session matches (filters {filters:?})"))
        });
        if let Some(p) = problem {
            stray += 1;
            if stray <= 20 {
                v.push(Violation {
                    check: "stray-delivery",
                    hole: None,
                    detail: format!(
                        "{} got {:?} on {} at {:.3}s: {p}",
                        profiles[r.client].id,
                        r.msg,
                        r.topic,
                        secs(r.t)
                    ),
                });
            }
        }
    }

    // Messages by topic, in the order they were first sent.
    let mut by_topic: BTreeMap<&str, Vec<(Micros, u64)>> = BTreeMap::new();
    for (id, m) in &msgs {
        if m.qos != QoS::AtMostOnce && m.acked.is_some() && !m.delete {
            by_topic
                .entry(m.topic.as_str())
                .or_default()
                .push((m.first_sent, *id));
        }
    }
    for list in by_topic.values_mut() {
        list.sort_unstable();
    }
    // A message is owed where its publish, from its first send to its acknowledgement, lies
    // within the subscription's life, from its SUBACK to its UNSUBSCRIBE (or the session's
    // end): a publish still unacknowledged when the subscription ends may be routed after it.
    let owed_in = |iv: &Interval, out: &mut Vec<u64>| {
        if iv.qos == QoS::AtMostOnce || iv.unsubscribed {
            return;
        }
        let end = iv.end.unwrap_or(Micros::MAX);
        for (topic, list) in &by_topic {
            if !matches(&iv.filter, topic) {
                continue;
            }
            let from = list.partition_point(|(t, _)| *t <= iv.start);
            for (t, id) in &list[from..] {
                if *t >= end {
                    break;
                }
                if msgs[id].acked.is_some_and(|a| a < end) {
                    out.push(*id);
                }
            }
        }
    };

    // Losses: sessions. What each client received, in order, to tell a subscription gone
    // (none of its later messages came) from messages missing.
    let mut receipts: HashMap<usize, Vec<(Micros, Micros, &str)>> = HashMap::new();
    for r in &recvs {
        if let Some(m) = r.msg.and_then(|id| msgs.get(&id)) {
            receipts
                .entry(r.client)
                .or_default()
                .push((r.t, m.first_sent, r.topic.as_str()));
        }
    }
    let nats_fault_near = |node: usize, from: Micros, to: Micros| {
        faults.iter().any(|f| {
            (f.kind.starts_with("nats")
                || (f.kind.starts_with("link") && f.target == format!("j{node}")))
                && overlaps(f, from.saturating_sub(1_000_000), to + 5_000_000)
        })
    };
    let mut owed_total = 0usize;
    let mut lost = 0usize;
    let mut pending = 0usize;
    // (client, hole) -> lost ids
    let mut lost_by: BTreeMap<(usize, Option<&'static str>), Vec<u64>> = BTreeMap::new();
    for ep in &epochs {
        if !ep.owes() {
            continue;
        }
        let persistent = profiles[ep.client].persistent && ep.end_kind != EpochEnd::ConnectionEnd;
        let mut owed: Vec<(u64, &Interval)> = Vec::new();
        for iv in ep
            .intervals
            .iter()
            .filter(|iv| shared_filter(&iv.filter).is_none())
        {
            let mut ids = Vec::new();
            owed_in(iv, &mut ids);
            owed.extend(ids.into_iter().map(|id| (id, iv)));
        }
        owed.sort_unstable_by_key(|(id, _)| *id);
        owed.dedup_by_key(|(id, _)| *id);
        for (id, iv) in owed {
            owed_total += 1;
            if received.contains_key(&(ep.client, id)) {
                continue;
            }
            pending += 1;
            lost += 1;
            let m = &msgs[&id];
            let acked = m.acked.unwrap_or(m.first_sent);
            let got = receipts.get(&ep.client).map_or(&[][..], Vec::as_slice);
            let hole = if !persistent {
                if m.qos == QoS::ExactlyOnce && m.resent {
                    Some("qos2-resend-not-delivered-live")
                } else {
                    nats_fault_near(ep.node, m.first_sent, acked)
                        .then_some("clean-sessions-miss-while-nats-down")
                }
            } else {
                // The subscription is gone: nothing of its filter sent later came, though the
                // session resumed after this message was acknowledged.
                let filter_stopped = !got
                    .iter()
                    .any(|(_, sent, topic)| *sent > m.first_sent && matches(&iv.filter, topic));
                let still_served = resumed_at
                    .get(&ep.client)
                    .is_some_and(|ts| ts.iter().any(|t| *t > acked));
                // Published while the client was away, and a connect of it was refused then.
                let away_refused = away_windows.get(&ep.client).is_some_and(|ws| {
                    ws.iter()
                        .any(|&(from, to, refused)| refused && from <= m.first_sent && acked <= to)
                });
                if filter_stopped && still_served {
                    Some("subscription-save-lost")
                } else if away_refused {
                    Some("offline-queue-lost-after-refused-resume")
                } else {
                    None
                }
            };
            lost_by.entry((ep.client, hole)).or_default().push(id);
        }
    }
    for ((client, hole), ids) in &lost_by {
        let shown: Vec<String> = ids
            .iter()
            .take(6)
            .map(|id| {
                let m = &msgs[id];
                format!(
                    "m{id} ({} QoS {} by {} sent {:.3}s acked {:.3}s)",
                    m.topic,
                    m.qos as u8,
                    profiles[m.publisher].id,
                    secs(m.first_sent),
                    secs(m.acked.unwrap_or(0))
                )
            })
            .collect();
        v.push(Violation {
            check: "lost",
            hole: *hole,
            detail: format!(
                "{} never got {} acknowledged message(s) its session subscribed to: {}{}",
                profiles[*client].id,
                ids.len(),
                shown.join(", "),
                if ids.len() > 6 { ", ..." } else { "" }
            ),
        });
    }
    // Losses: shared groups.
    let mut groups: BTreeMap<String, Vec<(usize, Interval)>> = BTreeMap::new();
    for ep in epochs.iter().filter(|e| e.owes()) {
        for iv in &ep.intervals {
            if let Some((g, f)) = shared_filter(&iv.filter) {
                groups
                    .entry(format!("{g}/{f}"))
                    .or_default()
                    .push((ep.client, iv.clone()));
            }
        }
    }
    let mut shared_owed = 0usize;
    let mut shared_lost: Vec<(String, u64)> = Vec::new();
    let mut shared_dups: Vec<(String, u64, usize)> = Vec::new();
    for (group, members) in &groups {
        let mut owed = Vec::new();
        for (_, iv) in members {
            owed_in(iv, &mut owed);
        }
        owed.sort_unstable();
        owed.dedup();
        let clients: HashSet<usize> = members.iter().map(|(c, _)| *c).collect();
        for id in owed {
            shared_owed += 1;
            let got: Vec<&Recv> = by_msg
                .get(&id)
                .map(|l| l.iter().map(|&i| &recvs[i]).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .filter(|r| clients.contains(&r.client))
                .collect();
            if got.is_empty() {
                pending += 1;
                shared_lost.push((group.clone(), id));
            }
            let qos2 = got
                .iter()
                .filter(|r| r.qos == QoS::ExactlyOnce && r.fresh)
                .count();
            if qos2 > 1 {
                shared_dups.push((group.clone(), id, qos2));
            }
        }
    }
    a.pending = pending;
    // Only near a fault, or a member leaving a node, can a known hole explain a group's loss:
    // NATS out of reach, or a member's messages handed over (not kept in JetStream) as it left.
    let member_moved = |group: &str, from: Micros, to: Micros| {
        groups[group].iter().any(|(c, _)| {
            closes.get(c).is_some_and(|ts| {
                ts.iter()
                    .any(|t| *t + 3_000_000 >= from && *t <= to + 3_000_000)
            })
        })
    };
    for (n, (group, id)) in shared_lost.iter().enumerate() {
        let m = &msgs[id];
        let acked = m.acked.unwrap_or(m.first_sent);
        let hole = match fault_near(&faults, m.first_sent, 2_000_000, 10_000_000) {
            Some(kind) if kind.starts_with("jetmq") => Some("handover-not-in-jetstream"),
            Some(_) => Some("shares-while-nats-unreachable"),
            None => member_moved(group, m.first_sent, acked).then_some("handover-not-in-jetstream"),
        };
        if n < 30 || hole.is_none() {
            v.push(Violation {
                check: "shared-lost",
                hole,
                detail: format!(
                    "group {group} never got m{id} ({} QoS {} by {} sent {:.3}s)",
                    m.topic,
                    m.qos as u8,
                    profiles[m.publisher].id,
                    secs(m.first_sent)
                ),
            });
        }
    }
    for (group, id, n) in shared_dups.iter().take(30) {
        v.push(Violation {
            check: "shared-qos2-duplicate",
            hole: Some("shared-duplicates-on-resume"),
            detail: format!("group {group} got m{id} {n} times at QoS 2"),
        });
    }

    // QoS 2 exactly once per session; QoS 1 duplicates counted.
    let mut qos1_dups = 0usize;
    let mut qos2_deliveries = 0usize;
    let mut qos2_dups = 0usize;
    for ((client, id), list) in &received {
        let shared = profiles[*client].role == Role::SharedSub;
        let mut per_epoch: BTreeMap<Option<usize>, Vec<&Recv>> = BTreeMap::new();
        let mut q1 = 0usize;
        for &i in list {
            let r = &recvs[i];
            match r.qos {
                QoS::ExactlyOnce if r.fresh && !r.retain => {
                    per_epoch.entry(r.epoch).or_default().push(r);
                }
                QoS::AtLeastOnce if !r.retain => q1 += 1,
                _ => {}
            }
        }
        qos1_dups += q1.saturating_sub(1);
        for (epoch, copies) in per_epoch {
            qos2_deliveries += 1;
            if copies.len() < 2 {
                continue;
            }
            qos2_dups += 1;
            // What the second copy was: its pattern names the hole that explains it.
            let (a, b) = (copies[0], copies[1]);
            let completed = a
                .pkid
                .and_then(|p| released.get(&(a.client, p)))
                .is_some_and(|ts| ts.iter().any(|t| *t > a.t && *t < b.t));
            let (pattern, hole) = if shared {
                ("shared", Some("shared-duplicates-on-resume"))
            } else if a.conn == b.conn && !a.dup && !b.dup && b.t - a.t < 200_000 {
                (
                    "two copies at once on one connection",
                    Some("overlapping-nats-subscriptions"),
                )
            } else if a.conn != b.conn && completed {
                (
                    "sent again on a later connection after PUBREL had completed it",
                    Some("qos2-resent-after-completion"),
                )
            } else if a.conn != b.conn && a.pkid != b.pkid {
                (
                    "sent again on a later connection under a new packet id",
                    Some("qos2-resent-new-packet-id"),
                )
            } else if a.conn == b.conn && a.pkid != b.pkid {
                (
                    "twice on one connection under two packet ids",
                    Some("qos2-twice-on-one-connection"),
                )
            } else {
                ("other", None)
            };
            v.push(Violation {
                check: "qos2-duplicate",
                hole,
                detail: format!(
                    "{} got m{id} {} times at QoS 2 in one session (epoch {epoch:?}): {pattern}; \
                     first {:.3}s conn {} pkid {:?} dup {}, then {:.3}s conn {} pkid {:?} dup {}",
                    profiles[*client].id,
                    copies.len(),
                    secs(a.t),
                    a.conn,
                    a.pkid,
                    a.dup,
                    secs(b.t),
                    b.conn,
                    b.pkid,
                    b.dup,
                ),
            });
        }
    }

    // Order: per receiving session, publisher, topic and QoS, first receipts only.
    let mut order_violations = 0usize;
    let mut seen: HashSet<(usize, u64)> = HashSet::new();
    // (epoch, publisher, topic, qos) -> (max first_sent seen, per-connection max send_idx)
    type Key = (usize, usize, String, u8);
    let mut state: HashMap<Key, (Micros, u64, HashMap<u64, u64>)> = HashMap::new();
    for r in &recvs {
        let (Some(id), Some(epoch)) = (r.msg, r.epoch) else {
            continue;
        };
        if r.retain || profiles[r.client].role == Role::SharedSub || !seen.insert((r.client, id)) {
            continue;
        }
        let Some(m) = msgs.get(&id) else { continue };
        let Some(acked) = m.acked else { continue };
        if m.qos == QoS::AtMostOnce {
            continue;
        }
        let key = (epoch, m.publisher, m.topic.clone(), m.qos as u8);
        let st = state.entry(key).or_insert((0, 0, HashMap::new()));
        let after_ack = st.0 > acked;
        let same_conn = st.2.get(&m.first_conn).is_some_and(|&max| max > m.send_idx);
        if after_ack || same_conn {
            order_violations += 1;
            // Sent again (DUP) or late by a second or more: it came by a catch-up path (a read
            // of the session's consumer, a resume, a redelivery), not live.
            let hole = if same_conn && !after_ack && m.resent {
                // Both were unacknowledged when their publisher's connection ended: sent
                // again in order, the later one had been stored from the first connection.
                Some("order-of-publishes-resent")
            } else {
                (r.dup || r.t > acked + 1_000_000).then_some("order-on-catch-up")
            };
            v.push(Violation {
                check: "order",
                hole,
                detail: format!(
                    "{} got m{id} ({} QoS {} by {}, sent {:.3}s, acked {:.3}s) at {:.3}s, \
                     after a later message of that publisher and topic ({})",
                    profiles[r.client].id,
                    m.topic,
                    m.qos as u8,
                    profiles[m.publisher].id,
                    secs(m.first_sent),
                    secs(acked),
                    secs(r.t),
                    if after_ack {
                        "one sent after this one was acknowledged"
                    } else {
                        "sent after it on the same connection"
                    }
                ),
            });
        }
        st.0 = st.0.max(m.first_sent);
        let e = st.2.entry(m.first_conn).or_default();
        *e = (*e).max(m.send_idx);
    }

    // Wills.
    let watchers: Vec<&Epoch> = epochs
        .iter()
        .filter(|e| e.owes() && profiles[e.client].role == Role::WillWatcher)
        .collect();
    let (mut wills_due, mut wills_fired, mut wills_excused, mut wills_kept) = (0, 0, 0, 0);
    for w in wills.iter().filter(|w| w.accepted) {
        let Some((close, t)) = &w.close else { continue };
        if *t > cutoff_t {
            continue;
        }
        let fired = by_msg.contains_key(&w.id);
        let topic = format!("chaos/will/{}", profiles[w.client].id);
        let watched = watchers.iter().any(|e| {
            e.intervals.iter().any(|iv| {
                matches(&iv.filter, &topic) && iv.start < *t && iv.end.is_none_or(|end| end > *t)
            })
        });
        match close {
            Close::Graceful => {
                wills_kept += 1;
                if fired {
                    v.push(Violation {
                        check: "will-after-disconnect",
                        hole: None,
                        detail: format!(
                            "the will of {} (m{}) was published although it left with \
                             DISCONNECT at {:.3}s",
                            profiles[w.client].id,
                            w.id,
                            secs(*t)
                        ),
                    });
                }
            }
            Close::Abrupt | Close::WithWill | Close::Lost { .. } => {
                // A node that dies takes its clients' wills with it (as the NATS server's
                // MQTT does); a will published while JetStream is out of reach (a fault on
                // the node's NATS path, or connects and publishes refused around then) has
                // nowhere to go.
                let node_fault = faults.iter().any(|f| {
                    let on_node = f.target == format!("j{}", w.node) || f.kind.starts_with("nats");
                    on_node && overlaps(f, t.saturating_sub(2_000_000), t + 10_000_000)
                });
                let unavailable = node_fault
                    || unavailable_at
                        .iter()
                        .any(|u| u + 5_000_000 >= *t && *u <= t + 5_000_000);
                if fired {
                    wills_fired += 1;
                } else if !watched || matches!(close, Close::Lost { .. }) {
                    wills_excused += 1;
                } else {
                    wills_due += 1;
                    pending += 1;
                    v.push(Violation {
                        check: "will-not-published",
                        hole: unavailable.then_some("will-dropped-while-jetstream-unavailable"),
                        detail: format!(
                            "the will of {} (m{}, through j{}) was never published after \
                             {close:?} at {:.3}s",
                            profiles[w.client].id,
                            w.id,
                            w.node,
                            secs(*t)
                        ),
                    });
                }
            }
        }
    }
    a.pending = pending;

    // Retained: the values allowed at the end, per topic.
    let mut retained_pubs: BTreeMap<&str, Vec<(&u64, &Msg)>> = BTreeMap::new();
    for (id, m) in &msgs {
        if m.retain {
            retained_pubs
                .entry(m.topic.as_str())
                .or_default()
                .push((id, m));
        }
    }
    for (topic, mut list) in retained_pubs {
        list.sort_by_key(|(_, m)| m.first_sent);
        let last_acked = list.iter().filter_map(|(_, m)| m.acked).max();
        let mut allowed = Vec::new();
        for (id, m) in &list {
            let value = (!m.delete).then_some(**id);
            let is_last = m.acked.is_some() && m.acked == last_acked;
            let later = last_acked.is_none_or(|t| m.first_sent > t) && !m.refused;
            if is_last || later {
                allowed.push(value);
            }
        }
        if last_acked.is_none() {
            allowed.push(None);
        }
        a.retained.insert(topic.to_owned(), allowed);
    }

    // Resume times by the fault under way when the connection was lost.
    let mut by_kind: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (t0, t1, node) in &resumes {
        let kind = faults
            .iter()
            .filter(|f| overlaps(f, t0.saturating_sub(1_000_000), t0 + 3_000_000))
            .max_by_key(|f| (f.target == format!("j{node}"), f.start))
            .map_or("no fault", |f| f.kind);
        by_kind.entry(kind).or_default().push(t1 - t0);
    }

    // The summary.
    let mut s = String::new();
    let _ = writeln!(s, "operations: {} logged", events.len());
    for (k, n) in &counts {
        let _ = writeln!(s, "  {k}: {n}");
    }
    let mut fault_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &faults {
        *fault_counts.entry(f.kind).or_default() += 1;
    }
    let _ = writeln!(s, "faults: {fault_counts:?}");
    for n in &notes {
        let _ = writeln!(s, "  note: {n}");
    }
    let _ = writeln!(
        s,
        "deliveries owed to sessions: {owed_total}, lost: {lost}; to shared groups: \
         {shared_owed}, lost: {} (QoS 2 twice in a group: {})",
        shared_lost.len(),
        shared_dups.len()
    );
    let _ = writeln!(
        s,
        "QoS 2 deliveries: {qos2_deliveries} (twice in a session: {qos2_dups}); QoS 1 \
         duplicates: {qos1_dups}; order violations: {order_violations}; stray deliveries: \
         {stray}"
    );
    let _ = writeln!(
        s,
        "Session Present checked on {sp_checked} CONNACKs; wills: {wills_fired} published as \
         due, {wills_due} missing, {wills_excused} not owed (no watcher subscribed, or the \
         connection was lost with its node), {wills_kept} rightly withheld after DISCONNECT"
    );
    // Connect and publish latencies, by the fault under way when they began.
    let under_way = |t: Micros| {
        faults
            .iter()
            .filter(|f| overlaps(f, t, t))
            .max_by_key(|f| f.start)
            .map_or("no fault", |f| f.kind)
    };
    let mut connacks: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (sent, took) in &connack_latency {
        connacks.entry(under_way(*sent)).or_default().push(*took);
    }
    let mut pubacks: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for m in msgs.values() {
        if let Some(acked) = m.acked {
            pubacks
                .entry(under_way(m.first_sent))
                .or_default()
                .push(acked - m.first_sent);
        }
    }
    for (title, table) in [
        (
            "resume after a lost connection (to the next accepted CONNACK), by the fault under \
             way when it was lost:",
            by_kind,
        ),
        (
            "CONNECT to accepting CONNACK, by the fault under way:",
            connacks,
        ),
        (
            "QoS 1/2 PUBLISH to PUBACK/PUBREC (first send to acknowledgement), by the fault \
             under way:",
            pubacks,
        ),
    ] {
        let _ = writeln!(s, "{title}");
        for (kind, mut list) in table {
            list.sort_unstable();
            let _ = writeln!(
                s,
                "  {kind:<15} n={:<5} p50 {:.3}s  p99 {:.3}s  max {:.3}s",
                list.len(),
                pct(&list, 0.5),
                pct(&list, 0.99),
                secs(*list.last().unwrap_or(&0))
            );
        }
    }
    let _ = now;
    a.summary = s;
    a.violations = v;
    a
}

/// A connect that got no accepting CONNACK: a clean start may have ended the session.
fn no_connack(
    c: usize,
    t: Micros,
    clean_start: bool,
    persistent: bool,
    exists: &mut HashMap<usize, Option<bool>>,
    current: &mut HashMap<usize, usize>,
    epochs: &mut [Epoch],
) {
    if clean_start {
        if let Some(&i) = current.get(&c) {
            epochs[i].close(t, EpochEnd::Ambiguous);
        }
        exists.insert(c, None);
    } else if persistent && exists.get(&c).copied().unwrap_or(Some(false)) == Some(false) {
        exists.insert(c, None);
    }
}

fn overlaps(f: &FaultSpan, from: Micros, to: Micros) -> bool {
    f.start <= to && f.end.is_none_or(|e| e >= from)
}

/// A fault whose span comes within `before`/`after` of `t`.
fn fault_near(faults: &[FaultSpan], t: Micros, before: Micros, after: Micros) -> Option<&str> {
    faults
        .iter()
        .find(|f| overlaps(f, t.saturating_sub(before), t + after))
        .map(|f| f.kind)
}
