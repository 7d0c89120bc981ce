//! The retained-message quota: the most retained messages and bytes (topic, properties and
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

use super::message::SharedMessage;
use super::requests::RequestOwner;
use super::Broker;
use crate::broker::io::Outbox;
use crate::js::records;
use crate::topic::{subject, TopicName};

/// The shortest time between two sweeps of expired retained messages, which walk them all.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Broker {
    /// Retains `msg` on `topic`, in place of the message retained there before.
    pub(super) fn retain(&mut self, topic: &TopicName, msg: SharedMessage) {
        let added = msg.kept_bytes();
        let old = self.retained.insert(topic, msg);
        if self.is_sys_topic(topic) {
            self.retained_sys += usize::from(old.is_none());
            return;
        }
        if let Some(old) = old {
            self.retained_bytes -= old.kept_bytes();
        }
        self.retained_bytes += added;
    }

    /// Forgets the message retained on `topic`, if any.
    pub(super) fn unretain(&mut self, topic: &TopicName) {
        let Some(old) = self.retained.remove(topic) else {
            return;
        };
        if self.is_sys_topic(topic) {
            self.retained_sys -= 1;
        } else {
            self.retained_bytes -= old.kept_bytes();
        }
    }

    /// Payload bytes of the retained messages the quota counts.
    pub(super) fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }

    /// Whether a client may retain a message that keeps `kept` bytes on `topic` (`None`: an
    /// empty payload, which deletes): deleting always, replacing or adding only within the
    /// quota. A refusal first lets go of expired retained messages (at most once a second) and
    /// asks again.
    pub(super) fn retained_quota_allows(
        &mut self,
        topic: &TopicName,
        kept: Option<usize>,
        out: &mut Outbox,
    ) -> bool {
        let Some(len) = kept else {
            return true;
        };
        if self.within_retained_quota(topic, len) {
            return true;
        }
        let now = self.now.instant;
        let due = self
            .retained_swept_at
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_INTERVAL);
        if due {
            self.retained_swept_at = Some(now);
            self.sweep_expired_retained(out);
            if self.within_retained_quota(topic, len) {
                return true;
            }
        }
        self.stats.retained_refused += 1;
        false
    }

    fn within_retained_quota(&self, topic: &TopicName, len: usize) -> bool {
        let replaced = self.retained.get(topic).map(|m| m.kept_bytes());
        let most = self.config.max_retained_messages;
        let counted = self.retained.len() - self.retained_sys;
        let count_ok = most == 0 || replaced.is_some() || counted < most;
        let most_bytes = self.config.max_retained_bytes;
        let bytes_ok = most_bytes == 0
            || (self.retained_bytes - replaced.unwrap_or(0)).saturating_add(len) <= most_bytes;
        count_ok && bytes_ok
    }

    /// Drops the retained messages whose Message Expiry Interval has run out (they are never
    /// delivered again) from memory and from the store.
    fn sweep_expired_retained(&mut self, out: &mut Outbox) {
        let now = self.now.instant;
        let mut expired = Vec::new();
        self.retained.for_each(|topic, msg| {
            if msg.expires_at.is_some_and(|at| at <= now) {
                expired.push(topic.clone());
            }
        });
        for topic in expired {
            self.unretain(&topic);
            let request = records::retained_purge(&subject::topic_to_subject(&topic));
            self.request(request, RequestOwner::Background, out);
        }
    }
}
