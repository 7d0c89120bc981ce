//! Sessions: what the broker keeps for a client across connections, and the outbound QoS 1/2
//! window with the queue behind it.

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU32;
use std::time::Duration;

use bytestring::ByteString;

use super::io::{ConnId, SessionKey};
use super::message::{SharedMessage, Will};
use super::share_groups::ShareId;
use crate::codec::{PacketId, ProtocolVersion, QoS, SubscriptionOptions};
use crate::time::WallClock;
use crate::topic::TopicFilter;

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubscriptionEntry {
    pub(crate) filter: TopicFilter,
    pub(crate) options: SubscriptionOptions,
    pub(crate) id: Option<NonZeroU32>,
    /// For `$share/{group}/{filter}`: the shared subscription's number in the broker.
    pub(crate) share: Option<ShareId>,
}

/// A session's subscriptions by topic filter text, in byte order: a sorted vector, since most
/// sessions have a handful (a B-tree's first node alone would take 900 bytes per session).
#[derive(Debug, Clone, Default)]
pub(crate) struct SubscriptionMap {
    entries: Vec<(ByteString, SubscriptionEntry)>,
}

impl SubscriptionMap {
    /// How many subscriptions there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is a subscription of `text`.
    pub(crate) fn contains(&self, text: &ByteString) -> bool {
        self.entries.binary_search_by(|(k, _)| k.cmp(text)).is_ok()
    }

    /// Adds or replaces the subscription of `text`; returns the one it replaced.
    pub(crate) fn insert(
        &mut self,
        text: ByteString,
        entry: SubscriptionEntry,
    ) -> Option<SubscriptionEntry> {
        match self.entries.binary_search_by(|(k, _)| k.cmp(&text)) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, entry)),
            Err(i) => {
                if self.entries.capacity() == 0 {
                    // Most sessions have one subscription: no room for four from the start.
                    self.entries.reserve_exact(1);
                }
                self.entries.insert(i, (text, entry));
                None
            }
        }
    }

    /// Removes the subscription of `text`.
    pub(crate) fn remove(&mut self, text: &ByteString) -> Option<SubscriptionEntry> {
        let i = self.entries.binary_search_by(|(k, _)| k.cmp(text)).ok()?;
        Some(self.entries.remove(i).1)
    }

    /// The subscriptions, in filter text order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &SubscriptionEntry> + Clone {
        self.entries.iter().map(|(_, e)| e)
    }

    /// Filter texts and subscriptions, in filter text order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ByteString, &SubscriptionEntry)> {
        self.entries.iter().map(|(k, e)| (k, e))
    }
}

impl Extend<(ByteString, SubscriptionEntry)> for SubscriptionMap {
    fn extend<I: IntoIterator<Item = (ByteString, SubscriptionEntry)>>(&mut self, items: I) {
        for (text, entry) in items {
            self.insert(text, entry);
        }
    }
}

/// Subscription Identifiers of the subscriptions a message matched, for one session.
pub(crate) type SubscriptionIds = smallvec::SmallVec<[NonZeroU32; 2]>;

/// What the subscription tree holds for one subscription of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subscriber {
    pub(crate) options: SubscriptionOptions,
    pub(crate) id: Option<NonZeroU32>,
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) msg: SharedMessage,
    /// The QoS it is delivered with: the lower of the published and the granted QoS.
    pub(crate) qos: QoS,
    /// The RETAIN flag it is delivered with.
    pub(crate) retain: bool,
    /// Whether it may have been sent before (restored after a restart).
    pub(crate) dup: bool,
    /// Identifiers of the matching subscriptions (MQTT 5.0).
    pub(crate) subscription_ids: SubscriptionIds,
    /// The shared subscription it came through, if any: it may go to another member.
    pub(crate) share: Option<ShareId>,
    /// The consumer that releases the stored message once this delivery is done, when that
    /// is not the receiving session's own (a message handed over from a shared member).
    pub(crate) release: Option<Box<ByteString>>,
}

/// Where an outbound QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Named after the acknowledgement the broker waits for, hence the shared prefix.
#[allow(clippy::enum_variant_names)]
pub(crate) enum InflightState {
    PubAck,
    PubRec,
    PubComp,
}

/// A QoS 1/2 message sent (or to be re-sent) with a packet identifier.
#[derive(Debug, Clone)]
pub(crate) struct Inflight {
    pub(crate) pid: PacketId,
    /// `None` for a PUBREL restored from the store: only the identifier is known.
    pub(crate) delivery: Option<Delivery>,
    pub(crate) state: InflightState,
}

/// The outbound window of a session and the queue behind it.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// Messages with a packet identifier, in the order they were first sent.
    pub(crate) inflight: VecDeque<Inflight>,
    /// Messages waiting for room in the window.
    pub(crate) queue: VecDeque<Delivery>,
    /// Bytes ([`Message::kept_bytes`](super::Message::kept_bytes)) in `queue`.
    pub(crate) queued_bytes: usize,
    /// What the session spilled and whom it holds back while it cannot keep up; `None`
    /// while it keeps up (see `overflow.rs`).
    pub(crate) overload: Option<Box<super::overload::Overload>>,
    /// The last packet identifier handed out.
    last_pid: u16,
}

impl Outbound {
    /// The next free packet identifier after the last one handed out, skipping identifiers in
    /// flight; `None` when all 65 535 are in use.
    pub(crate) fn allocate_pid(&mut self) -> Option<PacketId> {
        let mut candidate = self.last_pid;
        for _ in 0..u16::MAX {
            candidate = if candidate == u16::MAX {
                1
            } else {
                candidate + 1
            };
            let pid = PacketId::new(candidate)?;
            if self.position(pid).is_none() {
                self.last_pid = candidate;
                return Some(pid);
            }
        }
        None
    }

    /// Where `pid` is in the window.
    pub(crate) fn position(&self, pid: PacketId) -> Option<usize> {
        self.inflight.iter().position(|e| e.pid == pid)
    }

    /// Whether stored message `seq` is queued or in flight here already (a message can reach
    /// a session both live and from its consumer).
    pub(crate) fn holds(&self, seq: u64) -> bool {
        self.queue.iter().any(|d| d.msg.seq == Some(seq))
            || self
                .inflight
                .iter()
                .any(|e| e.delivery.as_ref().is_some_and(|d| d.msg.seq == Some(seq)))
    }

    /// Takes a delivery off the front of the queue.
    pub(crate) fn pop_queued(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(d.msg.kept_bytes());
        Some(d)
    }

    /// Queues a delivery, or gives it back when the queue is at one of its limits.
    pub(crate) fn push_queued(
        &mut self,
        d: Delivery,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<(), Delivery> {
        let len = d.msg.kept_bytes();
        if self.queue.len() >= max_messages || self.queued_bytes + len > max_bytes {
            return Err(d);
        }
        self.queued_bytes += len;
        self.queue.push_back(d);
        Ok(())
    }
}

/// A pending will of a closed connection, waiting for its Will Delay Interval.
#[derive(Debug, Clone)]
pub(crate) struct PendingWill {
    pub(crate) will: Will,
    /// Which timer entry is current.
    pub(crate) generation: u64,
}

/// Everything the broker keeps for one client identifier.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) key: SessionKey,
    /// The authenticated user that made it (`None`: anonymous, or no authentication); only
    /// that user may connect with its client identifier.
    pub(crate) owner: Option<Box<ByteString>>,
    /// The connection bound to it, if the client is online.
    pub(crate) conn: Option<ConnId>,
    /// The protocol version of the last connection.
    pub(crate) version: ProtocolVersion,
    /// Whether the session outlives its connection.
    pub(crate) persistent: bool,
    /// How long a persistent session outlives its connection; `None` means forever.
    pub(crate) expiry: Option<Duration>,
    /// When its last connection ended (wall clock), so expiry counts across restarts.
    pub(crate) disconnected_at: Option<WallClock>,
    /// The stamp of the connect that bound its connection (fleet ordering; see
    /// [`Broker::connect_stamp`](super::Broker::connect_stamp)).
    pub(crate) connect_stamp: u64,
    /// Subscriptions by topic filter text.
    pub(crate) subscriptions: SubscriptionMap,
    pub(crate) outbound: Outbound,
    /// Inbound QoS 2 identifiers acknowledged with PUBREC and not yet released.
    pub inbound_qos2: BTreeSet<u16>,
    pub(crate) pending_will: Option<Box<PendingWill>>,
    /// Bumped whenever a timer of this session becomes stale.
    pub(crate) generation: u64,
    /// A number no other session of this broker has had or will have.
    pub(crate) uid: u64,
    /// Route pass that last touched this session, to deliver each message once.
    pub(crate) route_epoch: u64,
    /// Its slot in that pass's target list.
    pub(crate) route_slot: usize,
}

impl Session {
    /// The durable consumer of the session when it is persistent (named after its client
    /// identifier; made when needed rather than kept by every session).
    pub(crate) fn consumer(&self) -> ByteString {
        crate::js::records::consumer_name(&self.key.client_id)
    }

    pub(crate) fn new(key: SessionKey, version: ProtocolVersion, uid: u64) -> Self {
        Self {
            key,
            owner: None,
            conn: None,
            version,
            persistent: false,
            expiry: None,
            disconnected_at: None,
            connect_stamp: 0,
            subscriptions: SubscriptionMap::default(),
            outbound: Outbound::default(),
            inbound_qos2: BTreeSet::new(),
            pending_will: None,
            generation: 0,
            uid,
            route_epoch: 0,
            route_slot: 0,
        }
    }
}

/// What an administrator sees of one session ([`Broker::sessions`](super::Broker::sessions)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Account and client identifier.
    pub key: SessionKey,
    /// The authenticated user it belongs to (`None`: anonymous, or no authentication).
    pub owner: Option<ByteString>,
    /// The protocol version of its last connection.
    pub protocol: ProtocolVersion,
    /// Whether a client is connected to it.
    pub online: bool,
    /// Whether it outlives its connection.
    pub persistent: bool,
    /// How long it outlives its connection; `None` means forever (or not at all, when not
    /// persistent).
    pub expiry: Option<Duration>,
    /// When its last connection ended, if it is offline and that is known.
    pub disconnected_at: Option<WallClock>,
    /// Its subscriptions' topic filters, as the client wrote them.
    pub subscriptions: Vec<ByteString>,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: usize,
    /// Messages waiting behind the in-flight window.
    pub queued: usize,
}

impl Session {
    /// The administrator's view of this session.
    pub(crate) fn info(&self) -> SessionInfo {
        SessionInfo {
            key: self.key.clone(),
            owner: self.owner.as_deref().cloned(),
            protocol: self.version,
            online: self.conn.is_some(),
            persistent: self.persistent,
            expiry: self.expiry,
            disconnected_at: if self.conn.is_some() {
                None
            } else {
                self.disconnected_at
            },
            subscriptions: self.subscriptions.iter().map(|(k, _)| k.clone()).collect(),
            inflight: self.outbound.inflight.len(),
            queued: self.outbound.queue.len(),
        }
    }
}
