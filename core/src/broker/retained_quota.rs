//! [`Retained`]: the retained messages the broker keeps, with the retained-message quota: the
//! most retained messages and bytes (topic, properties and
//! payload: what is kept, see [`Message::kept_bytes`](super::Message::kept_bytes)) clients may make
//! the broker keep ([`BrokerConfig::max_retained_messages`](super::BrokerConfig),
//! [`BrokerConfig::max_retained_bytes`](super::BrokerConfig)), and the bookkeeping of every
//! change to the retained set that the quota counts.
//!
//! The quota is checked where a client publishes: a retained message on a new topic beyond it
//! is refused, while replacing or deleting a retained message always works. Retained messages
//! read back from the store or set through another node of a fleet are always kept, so every
//! node of a fleet holds the same set and counts the fleet's messages against the same quota
//! (messages still being written when the count is taken can take it a little over). The
//! broker's own `$SYS/broker/` statistics are not counted.

use std::time::Duration;

use super::config::BrokerConfig;
use super::message::SharedMessage;
use super::requests::RequestOwner;
use super::retained::RetainedStore;
use super::sys_topics::SYS_BROKER;
use super::Broker;
use crate::broker::io::Outbox;
use crate::js::records;
use crate::time::Timestamp;
use crate::topic::{subject, TopicFilter, TopicName};

/// The shortest time between two sweeps of expired retained messages, which walk them all.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The retained messages, what the quota counts of them, and when expired ones were last
/// swept out.
#[derive(Debug)]
pub(crate) struct Retained {
    store: RetainedStore<SharedMessage>,
    /// Bytes kept for the counted messages (topic, properties, payload).
    bytes: usize,
    /// How many of `store` are the broker's own `$SYS/broker/` statistics (not counted).
    sys: usize,
    /// When expired retained messages were last swept out to make room.
    swept_at: Option<Timestamp>,
    /// Whether the broker publishes `$SYS/broker/` statistics (`sys_interval`).
    sys_on: bool,
    /// `max_retained_messages` (0: no limit).
    max_messages: usize,
    /// `max_retained_bytes` (0: no limit).
    max_bytes: usize,
}

/// The answer to a client's retained message that needs room ([`Retained::admit`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Whether it fits within the quota.
    pub(crate) admitted: bool,
    /// Expired messages swept out to make room: gone from memory, to be purged from the store.
    pub(crate) expired: Vec<TopicName>,
}

impl Retained {
    /// No retained message yet, with `config`'s quota.
    pub(crate) fn new(config: &BrokerConfig) -> Self {
        Self {
            store: RetainedStore::new(),
            bytes: 0,
            sys: 0,
            swept_at: None,
            sys_on: config.sys_interval.is_some(),
            max_messages: config.max_retained_messages,
            max_bytes: config.max_retained_bytes,
        }
    }

    /// Whether `topic` belongs to the broker's own statistics (while they are on).
    pub(crate) fn is_sys(&self, topic: &TopicName) -> bool {
        self.sys_on && topic.as_str().starts_with(SYS_BROKER)
    }

    /// Retains `msg` on `topic`, in place of the message retained there before.
    pub(crate) fn insert(&mut self, topic: &TopicName, msg: SharedMessage) {
        let added = msg.kept_bytes();
        let old = self.store.insert(topic, msg);
        if self.is_sys(topic) {
            self.sys += usize::from(old.is_none());
            return;
        }
        if let Some(old) = old {
            self.bytes -= old.kept_bytes();
        }
        self.bytes += added;
    }

    /// Forgets the message retained on `topic`, if any.
    pub(crate) fn remove(&mut self, topic: &TopicName) {
        let Some(old) = self.store.remove(topic) else {
            return;
        };
        if self.is_sys(topic) {
            self.sys -= 1;
        } else {
            self.bytes -= old.kept_bytes();
        }
    }

    /// How many messages are retained (statistics included).
    pub(crate) fn len(&self) -> usize {
        self.store.len()
    }

    /// Bytes of the retained messages the quota counts.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Calls `f` with every retained message `filter` matches (see
    /// [`RetainedStore::for_each_match`]).
    pub(crate) fn for_each_match(
        &self,
        filter: &TopicFilter,
        f: impl FnMut(&TopicName, &SharedMessage),
    ) {
        self.store.for_each_match(filter, f);
    }

    /// Whether a client may retain a message that keeps `len` bytes on `topic`: replacing or
    /// adding only within the quota. A refusal first sweeps out the expired retained messages
    /// (at most once a second, from `now`) and asks again.
    pub(crate) fn admit(&mut self, topic: &TopicName, len: usize, now: Timestamp) -> Admission {
        let mut expired = Vec::new();
        if self.within_quota(topic, len) {
            return Admission {
                admitted: true,
                expired,
            };
        }
        let due = self
            .swept_at
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_INTERVAL);
        if due {
            self.swept_at = Some(now);
            expired = self.sweep_expired(now);
        }
        let admitted = due && self.within_quota(topic, len);
        Admission { admitted, expired }
    }

    fn within_quota(&self, topic: &TopicName, len: usize) -> bool {
        let replaced = self.store.get(topic).map(|m| m.kept_bytes());
        let counted = self.store.len() - self.sys;
        let count_ok = self.max_messages == 0 || replaced.is_some() || counted < self.max_messages;
        let bytes_ok = self.max_bytes == 0
            || (self.bytes - replaced.unwrap_or(0)).saturating_add(len) <= self.max_bytes;
        count_ok && bytes_ok
    }

    /// Drops the retained messages whose Message Expiry Interval has run out at `now` (they
    /// are never delivered again), and returns their topics.
    fn sweep_expired(&mut self, now: Timestamp) -> Vec<TopicName> {
        let mut expired = Vec::new();
        self.store.for_each(|topic, msg| {
            if msg.expires_at.is_some_and(|at| at <= now) {
                expired.push(topic.clone());
            }
        });
        for topic in &expired {
            self.remove(topic);
        }
        expired
    }
}

impl Broker {
    /// Whether a client may retain a message that keeps `kept` bytes on `topic` (`None`: an
    /// empty payload, which deletes): deleting always, replacing or adding only within the
    /// quota. Expired retained messages swept out to make room are purged from the store; a
    /// refusal is counted.
    pub(super) fn retained_quota_allows(
        &mut self,
        topic: &TopicName,
        kept: Option<usize>,
        out: &mut Outbox,
    ) -> bool {
        let Some(len) = kept else {
            return true;
        };
        let Admission { admitted, expired } = self.retained.admit(topic, len, self.now.instant);
        for topic in expired {
            let request = records::retained_purge(&subject::topic_to_subject(&topic));
            self.request(request, RequestOwner::Background, out);
        }
        if !admitted {
            self.stats.retained_refused += 1;
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::broker::Message;
    use crate::codec::QoS;

    fn message(
        topic: &str,
        payload: &'static [u8],
        expires_at: Option<Timestamp>,
    ) -> SharedMessage {
        Arc::new(Message {
            topic: TopicName::new(topic.to_owned()).expect("a topic"),
            payload: bytes::Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: None,
            publisher: None,
            seq: None,
            expires_at,
        })
    }

    fn topic(t: &str) -> TopicName {
        TopicName::new(t.to_owned()).expect("a topic")
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_nanos(secs * 1_000_000_000)
    }

    #[test]
    fn the_quota_counts_clients_messages_not_statistics_and_replacing_always_fits() {
        let config = BrokerConfig {
            max_retained_messages: 1,
            sys_interval: Some(Duration::from_secs(10)),
            ..BrokerConfig::default()
        };
        let mut retained = Retained::new(&config);
        retained.insert(
            &topic("$SYS/broker/uptime"),
            message("$SYS/broker/uptime", b"1", None),
        );
        assert!(retained.admit(&topic("a"), 2, at(0)).admitted);
        retained.insert(&topic("a"), message("a", b"x", None));
        assert_eq!(retained.bytes(), 2, "topic and payload");
        assert_eq!(retained.len(), 2);
        assert!(
            retained.admit(&topic("a"), 5, at(0)).admitted,
            "a replacement"
        );
        assert!(
            !retained.admit(&topic("b"), 2, at(0)).admitted,
            "a second topic"
        );
        retained.remove(&topic("a"));
        assert_eq!(retained.bytes(), 0);
        assert!(retained.admit(&topic("b"), 2, at(0)).admitted);
    }

    #[test]
    fn a_refusal_sweeps_expired_messages_out_at_most_once_a_second() {
        let ms = |ms: u64| Timestamp::from_nanos(ms * 1_000_000);
        let config = BrokerConfig {
            max_retained_bytes: 4,
            ..BrokerConfig::default()
        };
        let mut retained = Retained::new(&config);
        retained.insert(&topic("a"), message("a", b"xyz", Some(ms(1000))));
        let early = retained.admit(&topic("b"), 2, ms(500));
        assert!(
            !early.admitted && early.expired.is_empty(),
            "nothing expired yet"
        );
        let soon = retained.admit(&topic("b"), 2, ms(1200));
        assert!(
            !soon.admitted && soon.expired.is_empty(),
            "swept less than a second ago: no sweep"
        );
        let later = retained.admit(&topic("b"), 2, ms(1600));
        assert_eq!(later.expired, [topic("a")]);
        assert!(later.admitted);
        assert_eq!(retained.len(), 0);
    }
}
