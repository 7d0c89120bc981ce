//! Which NATS subjects the bridge carries between MQTT and NATS, in either direction.
//!
//! jetmq's NATS connection is privileged: it owns the streams. So the bridge carries only
//! application subjects. Subjects that belong to NATS or to jetmq, anything starting with `$`
//! (`$JS.` JetStream API, `$JSC.`, `$KV.`, `$O.`, `$SYS.`, `$NRG.`, `$MQTT.`, `$JETMQ.`, ...),
//! `_INBOX.` (every request inbox, jetmq's own included) and `_R_.`, are closed whatever the
//! configuration says. Within the rest, an operator may narrow the bridge with allow and deny
//! lists of NATS subjects (`*` one token, `>` the rest), deny winning.
//!
//! What an MQTT client gets for a topic outside (in NATS mode): a PUBLISH is refused (MQTT 5.0:
//! 0x87 Not authorized; 3.1.1: acknowledged and not delivered), a subscription gets 0x87 (3.1.1:
//! 0x80) unless some subject it covers is open, and no NATS message on a closed subject ever
//! reaches an MQTT subscriber. `$SYS/` filters keep their MQTT meaning (the broker's own
//! statistics): they are accepted and never bridged.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};

/// The first tokens of subjects that belong to NATS and never cross the bridge.
const CLOSED_FIRST_TOKENS: [&str; 2] = ["_INBOX", "_R_"];

/// Allow and deny lists of NATS subjects for one direction of the bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRules {
    /// Subjects (with `*` and `>`) the bridge carries; empty: every application subject.
    pub allow: Vec<ByteString>,
    /// Subjects it never carries, even when an allow pattern covers them.
    pub deny: Vec<ByteString>,
}

/// The bridge's rules in both directions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgePolicy {
    /// MQTT publishes that may become NATS messages.
    pub publish: SubjectRules,
    /// NATS subjects whose messages may reach MQTT subscribers (and filters that may be
    /// subscribed on NATS).
    pub subscribe: SubjectRules,
}

/// Whether `subject` (or a pattern's literal first token) belongs to NATS or jetmq.
#[must_use]
pub fn is_system_subject(subject: &str) -> bool {
    let first = subject.split('.').next().unwrap_or_default();
    first.starts_with('$') || CLOSED_FIRST_TOKENS.contains(&first)
}

/// Whether the subscription pattern `pattern` can only ever match system subjects: its first
/// token is a literal system token (a pattern starting with `*` or `>` also matches
/// application subjects).
#[must_use]
pub fn is_system_pattern(pattern: &str) -> bool {
    let first = pattern.split('.').next().unwrap_or_default();
    first != "*" && first != ">" && is_system_subject(first)
}

/// Whether NATS pattern `pattern` matches every subject pattern `other` matches.
fn covers(pattern: &str, other: &str) -> bool {
    let mut a = pattern.split('.');
    let mut b = other.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) => return true,
            (None, None) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(x), Some(y)) if x == y && x != "*" && x != ">" => {}
            _ => return false,
        }
    }
}

/// Whether NATS patterns `a` and `b` match some subject in common.
fn intersects(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            _ => return false,
        }
    }
}

impl SubjectRules {
    /// Whether the bridge carries a message on `subject` (a subject without wildcards).
    #[must_use]
    pub fn allows_subject(&self, subject: &str) -> bool {
        !is_system_subject(subject)
            && (self.allow.is_empty() || self.allow.iter().any(|p| covers(p, subject)))
            && !self.deny.iter().any(|p| covers(p, subject))
    }

    /// Whether a subscription to `pattern` may be made: some subject it matches is open.
    #[must_use]
    pub fn allows_pattern(&self, pattern: &str) -> bool {
        !is_system_pattern(pattern)
            && (self.allow.is_empty() || self.allow.iter().any(|p| intersects(p, pattern)))
            && !self.deny.iter().any(|p| covers(p, pattern))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> SubjectRules {
        SubjectRules {
            allow: allow.iter().map(|s| ByteString::from(*s)).collect(),
            deny: deny.iter().map(|s| ByteString::from(*s)).collect(),
        }
    }

    #[test]
    fn system_subjects_are_closed_whatever_the_rules_say() {
        let open = rules(&[">"], &[]);
        for subject in [
            "$JS.API.STREAM.DELETE.$MQTT_msgs",
            "$JSC.R.x",
            "$KV.b.k",
            "$O.b",
            "$SYS.REQ.SERVER.PING",
            "$NRG.x",
            "$MQTT.sess.abc",
            "$JETMQ.conn.x",
            "_INBOX.abc.1",
            "_R_.x.y",
            "$G",
        ] {
            assert!(!open.allows_subject(subject), "{subject}");
            assert!(!open.allows_pattern(subject), "{subject}");
        }
        assert!(!open.allows_pattern("$JS.>"));
        assert!(!open.allows_pattern("_INBOX.*"));
        assert!(open.allows_subject("sensors.kitchen"));
        assert!(open.allows_subject("a_INBOX.x"));
        // A wildcard in front matches application subjects too: allowed; each message is
        // checked on its own.
        assert!(open.allows_pattern(">"));
        assert!(open.allows_pattern("*.API.>"));
    }

    #[test]
    fn allow_and_deny_lists_narrow_the_bridge_deny_winning() {
        let r = rules(&["app.>", "metrics.*"], &["app.secret.>"]);
        assert!(r.allows_subject("app.x"));
        assert!(r.allows_subject("metrics.cpu"));
        assert!(!r.allows_subject("metrics.cpu.0"));
        assert!(!r.allows_subject("other"));
        assert!(!r.allows_subject("app.secret.key"));
        assert!(r.allows_pattern("app.*"));
        assert!(r.allows_pattern(">"), "covers app.> in part");
        assert!(!r.allows_pattern("other.>"));
        assert!(!r.allows_pattern("app.secret.>"));
        assert!(!r.allows_pattern("app.secret.*"));
        assert!(r.allows_pattern("app.*.key"), "app.public.key is open");
    }

    #[test]
    fn covers_and_intersects_follow_nats_wildcards() {
        assert!(covers(">", "a.b"));
        assert!(covers("a.>", "a.b.c"));
        assert!(!covers("a.>", "a"));
        assert!(covers("a.*", "a.b"));
        assert!(!covers("a.*", "a.>"));
        assert!(covers("a.*.c", "a.*.c"));
        assert!(!covers("a.b", "a.*"));
        assert!(intersects("a.*", "*.b"));
        assert!(intersects(">", "x"));
        assert!(!intersects("a.b", "a.c"));
        assert!(!intersects("a.*", "a"));
    }
}
