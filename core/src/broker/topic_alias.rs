//! Topic aliases (MQTT 5.0 §3.3.2.3.4), per connection and per direction: the ones a client
//! sets towards the broker, and the ones the broker assigns towards the client.

use std::collections::BTreeMap;
use std::num::NonZeroU16;

use crate::topic::TopicName;

/// The aliases a client set on its connection, resolved when it sends an empty topic.
#[derive(Debug, Default)]
pub(crate) struct InboundAliases {
    /// Topic by alias number (index 0 unused).
    topics: Vec<Option<TopicName>>,
}

impl InboundAliases {
    /// The topic the client bound to `alias`, if any.
    pub(crate) fn get(&self, alias: NonZeroU16) -> Option<TopicName> {
        self.topics.get(usize::from(alias.get())).cloned().flatten()
    }

    /// Binds `alias` to `topic`, replacing what it stood for.
    pub(crate) fn set(&mut self, alias: NonZeroU16, topic: TopicName) {
        let i = usize::from(alias.get());
        if self.topics.len() <= i {
            self.topics.resize(i + 1, None);
        }
        if let Some(slot) = self.topics.get_mut(i) {
            *slot = Some(topic);
        }
    }
}

/// How an outbound PUBLISH uses a topic alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AliasUse {
    /// No alias: the client allows none.
    None,
    /// The topic already has this alias: send an empty topic with it.
    Known(NonZeroU16),
    /// Bind this alias to the topic: send both (and [`OutboundAliases::bind`] once sent).
    New(NonZeroU16),
}

impl AliasUse {
    /// The topic a PUBLISH of `topic` carries (empty for a known alias) and its Topic Alias.
    pub(crate) fn topic_and_alias(self, topic: &str) -> (&str, Option<NonZeroU16>) {
        match self {
            Self::None => (topic, None),
            Self::Known(a) => ("", Some(a)),
            Self::New(a) => (topic, Some(a)),
        }
    }
}

/// The aliases the broker assigns on one connection, within the client's Topic Alias Maximum.
///
/// Topics get aliases in the order they are first sent; once all are taken, the alias bound
/// longest ago is rebound (first in, first out), so every topic still gets one.
#[derive(Debug, Default)]
pub(crate) struct OutboundAliases {
    /// The client's Topic Alias Maximum; 0 means no aliases.
    maximum: u16,
    by_topic: BTreeMap<TopicName, NonZeroU16>,
    /// Topic by alias number minus one.
    topics: Vec<TopicName>,
    /// The alias rebound next once all are taken, minus one.
    next_rebind: u16,
}

impl OutboundAliases {
    /// Aliases for a client that accepts up to `maximum` of them.
    pub(crate) fn new(maximum: u16) -> Self {
        Self {
            maximum,
            ..Self::default()
        }
    }

    /// How a PUBLISH on `topic` would use an alias; changes nothing.
    pub(crate) fn lookup(&self, topic: &TopicName) -> AliasUse {
        if self.maximum == 0 {
            return AliasUse::None;
        }
        if let Some(&alias) = self.by_topic.get(topic) {
            return AliasUse::Known(alias);
        }
        let next = if self.topics.len() < usize::from(self.maximum) {
            self.topics.len()
        } else {
            usize::from(self.next_rebind)
        };
        u16::try_from(next + 1)
            .ok()
            .and_then(NonZeroU16::new)
            .map_or(AliasUse::None, AliasUse::New)
    }

    /// Records that `alias` (from [`AliasUse::New`]) was sent bound to `topic`.
    pub(crate) fn bind(&mut self, alias: NonZeroU16, topic: &TopicName) {
        let i = usize::from(alias.get() - 1);
        if let Some(old) = self.topics.get_mut(i) {
            self.by_topic.remove(old);
            *old = topic.clone();
            self.next_rebind = (alias.get()) % self.maximum.max(1);
        } else if i == self.topics.len() {
            self.topics.push(topic.clone());
        } else {
            return;
        }
        self.by_topic.insert(topic.clone(), alias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::new(s.to_string()).unwrap()
    }

    fn assign(a: &mut OutboundAliases, topic: &str) -> AliasUse {
        let use_ = a.lookup(&t(topic));
        if let AliasUse::New(alias) = use_ {
            a.bind(alias, &t(topic));
        }
        use_
    }

    fn n(v: u16) -> NonZeroU16 {
        NonZeroU16::new(v).unwrap()
    }

    #[test]
    fn no_aliases_when_the_client_allows_none() {
        let mut a = OutboundAliases::new(0);
        assert_eq!(assign(&mut a, "a"), AliasUse::None);
        assert_eq!(assign(&mut a, "a"), AliasUse::None);
    }

    #[test]
    fn topics_get_aliases_in_order_and_keep_them() {
        let mut a = OutboundAliases::new(2);
        assert_eq!(assign(&mut a, "a"), AliasUse::New(n(1)));
        assert_eq!(assign(&mut a, "b"), AliasUse::New(n(2)));
        assert_eq!(assign(&mut a, "a"), AliasUse::Known(n(1)));
        assert_eq!(assign(&mut a, "b"), AliasUse::Known(n(2)));
    }

    #[test]
    fn when_full_the_oldest_binding_is_reused() {
        let mut a = OutboundAliases::new(2);
        assign(&mut a, "a");
        assign(&mut a, "b");
        assert_eq!(assign(&mut a, "c"), AliasUse::New(n(1)));
        assert_eq!(assign(&mut a, "a"), AliasUse::New(n(2)));
        assert_eq!(assign(&mut a, "c"), AliasUse::Known(n(1)));
        assert_eq!(assign(&mut a, "b"), AliasUse::New(n(1)));
        assert_eq!(assign(&mut a, "a"), AliasUse::Known(n(2)));
    }

    #[test]
    fn a_lookup_that_is_not_bound_changes_nothing() {
        let mut a = OutboundAliases::new(1);
        assert_eq!(a.lookup(&t("a")), AliasUse::New(n(1)));
        assert_eq!(assign(&mut a, "b"), AliasUse::New(n(1)));
        assert_eq!(assign(&mut a, "b"), AliasUse::Known(n(1)));
    }

    #[test]
    fn inbound_aliases_resolve_what_was_set() {
        let mut a = InboundAliases::default();
        assert_eq!(a.get(n(3)), None);
        a.set(n(3), t("x"));
        assert_eq!(a.get(n(3)), Some(t("x")));
        a.set(n(3), t("y"));
        assert_eq!(a.get(n(3)), Some(t("y")));
    }
}
