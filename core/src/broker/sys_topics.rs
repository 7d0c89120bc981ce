//! The broker's statistics as retained QoS 0 messages under `$SYS/broker/`, as mosquitto
//! publishes them: every `sys_interval` the values that changed since the last round (the
//! uptime each time), for any client subscribed to `$SYS/#`. They are the node's own: kept in
//! memory, never stored, never bridged to NATS. While they are on, clients cannot publish
//! under `$SYS/broker/` (v5: 0x87 Not authorized; 3.1.1: acknowledged and dropped).

use bytes::Bytes;

use super::message::Message;
use super::router::RouteScope;
use super::{Broker, Timer};
use crate::codec::QoS;
use crate::topic::TopicName;

/// The subtree the broker publishes in.
pub(super) const SYS_BROKER: &str = "$SYS/broker/";

/// The values published each round, by topic (under [`SYS_BROKER`]); the round publishes the
/// ones that changed.
#[derive(Debug, Default)]
pub(super) struct SysValues {
    last: Vec<(&'static str, String)>,
}

impl Broker {
    /// Whether `topic` is the broker's own and no client may publish there: everything under
    /// `$SYS/` (statistics on or off: a client's message there would pass for the broker's).
    pub(super) fn is_reserved_for_the_broker(topic: &TopicName) -> bool {
        let t = topic.as_str();
        t == "$SYS" || t.starts_with("$SYS/")
    }

    /// Sets the first round's timer (at start, when statistics are on).
    pub(super) fn schedule_sys(&mut self) {
        if let Some(every) = self.config.sys_interval {
            let at = self.now.instant.saturating_add(every);
            self.schedule(at, Timer::Sys);
        }
    }

    /// One round: routes the values that changed, and sets the next round.
    pub(super) fn on_sys_timer(&mut self) {
        let values = self.sys_values();
        let mut changed = Vec::new();
        for (topic, value) in values {
            let known = self.sys.last.iter_mut().find(|(t, _)| *t == topic);
            match known {
                Some((_, last)) if *last == value => {}
                Some((_, last)) => {
                    last.clone_from(&value);
                    changed.push((topic, value));
                }
                None => {
                    self.sys.last.push((topic, value.clone()));
                    changed.push((topic, value));
                }
            }
        }
        for (topic, value) in changed {
            let Ok(topic) = TopicName::new(format!("{SYS_BROKER}{topic}")) else {
                continue;
            };
            let msg = Message {
                topic,
                payload: Bytes::from(value),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: None,
                publisher: None,
                seq: None,
                expires_at: None,
            };
            // Local only, and not through the publish path: nothing is stored or bridged.
            self.route_to(msg, RouteScope::All, None);
        }
        self.schedule_sys();
    }

    /// The statistics now, as (topic under `$SYS/broker/`, value).
    fn sys_values(&self) -> Vec<(&'static str, String)> {
        let m = self.metrics();
        let s = &m.stats;
        let mut values = vec![
            ("version", format!("jetmq {}", env!("CARGO_PKG_VERSION"))),
            ("uptime", format!("{} seconds", m.uptime_secs)),
            ("clients/connected", m.clients_connected.to_string()),
            (
                "clients/disconnected",
                m.sessions.saturating_sub(m.clients_connected).to_string(),
            ),
            ("clients/total", m.sessions.to_string()),
            ("connections", m.connections.to_string()),
            ("subscriptions/count", m.subscriptions.to_string()),
            ("retained messages/count", m.retained.to_string()),
            ("messages/routed", s.messages_routed.to_string()),
            ("publish/messages/sent", s.deliveries.to_string()),
            ("publish/messages/dropped", m.dropped().to_string()),
            (
                "publish/messages/dropped/slow consumer",
                s.dropped_slow_consumer.to_string(),
            ),
            (
                "publish/messages/dropped/queue full",
                s.dropped_queue_full.to_string(),
            ),
            (
                "publish/messages/dropped/too large",
                s.dropped_too_large.to_string(),
            ),
            (
                "publish/messages/dropped/expired",
                s.dropped_expired.to_string(),
            ),
            ("store/failures", s.store_failures.to_string()),
        ];
        if self.config.cluster.is_fleet() {
            values.push((
                "fleet/late connect notices",
                s.late_connect_notices.to_string(),
            ));
            values.push((
                "fleet/shared messages missed",
                s.share_messages_missed.to_string(),
            ));
        }
        values
    }
}
