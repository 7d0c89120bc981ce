//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 §4.8.2) and the [`Subscription`]
//! type that tells them apart from plain filters.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use bytestring::ByteString;

use super::{check_common, utf8, TopicError, TopicFilter, TopicName};

/// The prefix that marks a shared subscription.
const SHARE_PREFIX: &str = "$share/";

/// A validated shared subscription `$share/{group}/{filter}`: the share name is non-empty and has
/// no `/`, `+` or `#`, and the rest is a valid, non-empty [`TopicFilter`].
///
/// The group and filter are zero-copy slices of the original string, which is kept because an
/// UNSUBSCRIBE must repeat it exactly.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct SharedFilter {
    text: ByteString,
    group: ByteString,
    filter: TopicFilter,
}

impl SharedFilter {
    /// The whole subscription string, `$share/` prefix included.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The share name (the group between `$share/` and the filter).
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The share name as a shared buffer.
    pub fn group_byte_string(&self) -> &ByteString {
        &self.group
    }

    /// The topic filter that selects the messages.
    pub fn filter(&self) -> &TopicFilter {
        &self.filter
    }
}

impl fmt::Display for SharedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A validated SUBSCRIBE or UNSUBSCRIBE topic filter string: either a plain filter or a shared
/// subscription.
///
/// Only the exact prefix `$share/` makes a subscription shared (case sensitive); a filter such as
/// `$share` or `$SHARE/x` is plain. A broker that does not support shared subscriptions on a
/// connection (for example MQTT 3.1.1) can parse with [`TopicFilter`] instead.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Subscription {
    /// An ordinary filter; every matching session gets each message.
    Plain(TopicFilter),
    /// A shared subscription; each message goes to one session of the group.
    Shared(SharedFilter),
}

impl Subscription {
    /// Parses and validates a subscription string; a `String` or `ByteString` is taken over
    /// without copying, and the parts of a shared subscription are slices of it.
    pub fn new(text: impl Into<ByteString>) -> Result<Self, TopicError> {
        let text = text.into();
        check_common(&text)?;
        let Some(rest) = text.strip_prefix(SHARE_PREFIX) else {
            return TopicFilter::new(text).map(Self::Plain);
        };
        let (group, filter) = match rest.split_once('/') {
            Some((group, filter)) => (group, filter),
            None => (rest, ""),
        };
        if group.is_empty() {
            return Err(TopicError::SharedEmptyGroup);
        }
        if group.contains(['+', '#']) {
            return Err(TopicError::SharedGroupWildcard);
        }
        if filter.is_empty() {
            return Err(TopicError::SharedMissingFilter);
        }
        // `slice_ref` panics only for a slice that does not point into `text`; `group` and
        // `filter` were both cut out of `text` above, and `filter` is non-empty.
        let filter = TopicFilter::new(text.slice_ref(filter))?;
        let group = text.slice_ref(group);
        Ok(Self::Shared(SharedFilter {
            text,
            group,
            filter,
        }))
    }

    /// Parses and validates UTF-8 bytes as a subscription string without copying them.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, TopicError> {
        Self::new(utf8(bytes)?)
    }

    /// The whole subscription string as received.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Plain(filter) => filter.as_str(),
            Self::Shared(shared) => shared.as_str(),
        }
    }

    /// The topic filter that selects messages (for a shared subscription, the part after the
    /// share name).
    pub fn filter(&self) -> &TopicFilter {
        match self {
            Self::Plain(filter) => filter,
            Self::Shared(shared) => shared.filter(),
        }
    }

    /// The share name of a shared subscription, or `None` for a plain one.
    pub fn share_group(&self) -> Option<&str> {
        match self {
            Self::Plain(_) => None,
            Self::Shared(shared) => Some(shared.group()),
        }
    }

    /// Whether this is a shared subscription.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Shared(_))
    }

    /// Whether the subscription's filter matches `topic`; see [`TopicFilter::matches`].
    pub fn matches(&self, topic: &TopicName) -> bool {
        self.filter().matches(topic)
    }
}

impl TryFrom<&str> for Subscription {
    type Error = TopicError;

    /// Parses a subscription string, copying it into a new buffer.
    fn try_from(text: &str) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl TryFrom<String> for Subscription {
    type Error = TopicError;

    /// Parses a subscription string, taking over its buffer.
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl TryFrom<ByteString> for Subscription {
    type Error = TopicError;

    /// Parses a subscription string without copying it.
    fn try_from(text: ByteString) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl TryFrom<Bytes> for Subscription {
    type Error = TopicError;

    /// Parses UTF-8 bytes as a subscription string without copying them.
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        Self::from_bytes(bytes)
    }
}

impl FromStr for Subscription {
    type Err = TopicError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

impl From<TopicFilter> for Subscription {
    fn from(filter: TopicFilter) -> Self {
        Self::Plain(filter)
    }
}

impl From<SharedFilter> for Subscription {
    fn from(shared: SharedFilter) -> Self {
        Self::Shared(shared)
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_parts_are_slices() {
        let sub = Subscription::try_from("$share/g1/a/+/#").unwrap();
        assert!(sub.is_shared());
        assert_eq!(sub.share_group(), Some("g1"));
        assert_eq!(sub.filter().as_str(), "a/+/#");
        assert_eq!(sub.as_str(), "$share/g1/a/+/#");
    }

    #[test]
    fn share_prefix_is_exact() {
        for text in ["$share", "$SHARE/g/x", "$sharex/g/x", "share/g/x"] {
            let sub = Subscription::try_from(text).unwrap();
            assert!(!sub.is_shared(), "{text}");
        }
    }
}
