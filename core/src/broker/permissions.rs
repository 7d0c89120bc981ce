//! Topic permissions: what an authenticated client may publish to and subscribe to, handed to
//! the broker with the shell's [`AuthDecision`](super::AuthDecision). A PUBLISH to a topic not
//! allowed is refused (MQTT 5.0: 0x87 Not authorized; 3.1.1, which cannot say so:
//! acknowledged and dropped [MQTT-3.3.5-2]); a subscription whose filter does not lie within
//! an allowed one gets 0x87 (3.1.1: 0x80) in its SUBACK; a CONNECT whose will goes to a topic
//! not allowed is refused with 0x87 (3.1.1: return code 5).

use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::topic::{TopicFilter, TopicName};

/// What a client may do, as MQTT topic filters in which `%c` stands for its client
/// identifier and `%u` for its user name (filled by the shell, which knows who authenticated:
/// [`Permissions::for_user`]). A pattern with a placeholder that cannot be filled safely,
/// because the value is missing or holds `/`, `+` or `#`, allows nothing. `None` allows
/// everything; an empty list nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Filters of the topics the client may publish to (its will included).
    pub publish: Option<Vec<ByteString>>,
    /// Filters the client may subscribe within (`$share/<group>/` aside).
    pub subscribe: Option<Vec<ByteString>>,
}

/// [`Permissions`] with one client's identifier and user name filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grants {
    publish: Option<Vec<TopicFilter>>,
    subscribe: Option<Vec<TopicFilter>>,
}

/// Whether `value` can stand in a pattern without widening it.
fn safe(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#'])
}

impl Permissions {
    /// These permissions for user `user`: `%u` filled in (patterns it cannot fill safely are
    /// dropped).
    #[must_use]
    pub fn for_user(&self, user: &str) -> Self {
        let fill = |patterns: &Option<Vec<ByteString>>| {
            patterns.as_ref().map(|patterns| {
                patterns
                    .iter()
                    .filter(|p| safe(user) || !p.contains("%u"))
                    .map(|p| ByteString::from(p.replace("%u", user)))
                    .collect()
            })
        };
        Self {
            publish: fill(&self.publish),
            subscribe: fill(&self.subscribe),
        }
    }

    /// The grants of the client `client_id`: `%c` filled in; patterns still holding `%u`
    /// (no user name) are dropped.
    pub(crate) fn resolve(&self, client_id: &str) -> Grants {
        let resolve = |patterns: &Option<Vec<ByteString>>| {
            patterns.as_ref().map(|patterns| {
                patterns
                    .iter()
                    .filter(|p| !p.contains("%u"))
                    .filter(|p| safe(client_id) || !p.contains("%c"))
                    .filter_map(|p| TopicFilter::new(p.replace("%c", client_id)).ok())
                    .collect()
            })
        };
        Grants {
            publish: resolve(&self.publish),
            subscribe: resolve(&self.subscribe),
        }
    }
}

impl Grants {
    /// Whether the client may publish to `topic`.
    pub(crate) fn may_publish(&self, topic: &TopicName) -> bool {
        self.publish
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|f| f.matches(topic)))
    }

    /// Whether the client may subscribe to `filter`: it lies within an allowed filter.
    pub(crate) fn may_subscribe(&self, filter: &TopicFilter) -> bool {
        self.subscribe
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|f| f.covers(filter)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(publish: &[&str], subscribe: &[&str]) -> Permissions {
        let list = |l: &[&str]| Some(l.iter().map(|s| ByteString::from(*s)).collect());
        Permissions {
            publish: list(publish),
            subscribe: list(subscribe),
        }
    }

    #[test]
    fn placeholders_are_filled_with_safe_values_only() {
        let p = perms(&["clients/%c/#", "users/%u"], &["+/%u/#"]);
        let g = p.for_user("alice").resolve("dev1");
        let t = |s: &str| TopicName::new(s.to_owned()).unwrap();
        let f = |s: &str| TopicFilter::new(s.to_owned()).unwrap();
        assert!(g.may_publish(&t("clients/dev1/x")));
        assert!(g.may_publish(&t("users/alice")));
        assert!(!g.may_publish(&t("clients/dev2/x")));
        assert!(g.may_subscribe(&f("x/alice/y")));
        assert!(!g.may_subscribe(&f("x/bob/y")));
        // A client id that is a wildcard, or a missing user name, fills nothing.
        let g = p.resolve("#");
        assert!(!g.may_publish(&t("clients/a/x")));
        assert!(!g.may_publish(&t("users/a")));
        assert!(!g.may_subscribe(&f("x/a/y")));
        let g = p.for_user("x/y").resolve("a/b");
        assert!(!g.may_publish(&t("clients/a/b/c")));
    }

    #[test]
    fn none_allows_everything_and_an_empty_list_nothing() {
        let t = TopicName::new("a").unwrap();
        let f = TopicFilter::new("#").unwrap();
        let all = Permissions::default().resolve("c");
        assert!(all.may_publish(&t) && all.may_subscribe(&f));
        let none = perms(&[], &[]).resolve("c");
        assert!(!none.may_publish(&t) && !none.may_subscribe(&f));
    }
}
