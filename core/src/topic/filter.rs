//! [`TopicFilter`]: a validated MQTT topic filter, and wildcard matching against topic names.

use bytestring::ByteString;

use super::{check_common, TopicError, TopicName};

/// A validated MQTT topic filter: non-empty, at most 65,535 bytes of UTF-8 with no U+0000, where
/// `+` fills a whole level and `#` fills the last level.
///
/// A filter that starts with `$share/` is still a plain filter here; [`super::Subscription`] is
/// the type that recognises shared subscriptions. Comparison, ordering and hashing are those of the
/// text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicFilter {
    text: ByteString,
}

impl TopicFilter {
    /// Whether the filter contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.text.bytes().any(|b| b == b'+' || b == b'#')
    }

    /// Whether the first level is `+` or `#`; such a filter never matches a topic name starting
    /// with `$` ([MQTT-4.7.2-1]).
    pub fn starts_with_wildcard(&self) -> bool {
        self.text.starts_with(['+', '#'])
    }

    /// The same text as a topic name when the filter has no wildcards, sharing the buffer.
    pub fn to_topic_name(&self) -> Option<TopicName> {
        TopicName::new(self.text.clone()).ok()
    }

    /// Whether every topic name `other` matches is matched by this filter too (so a client
    /// allowed this filter may subscribe to `other`). Exact for the wildcard rules of §4.7,
    /// including `a/#` matching `a` and [MQTT-4.7.2-1]: `#` does not cover `$SYS/#`.
    pub fn covers(&self, other: &TopicFilter) -> bool {
        if self.starts_with_wildcard() && other.text.starts_with('$') {
            return false;
        }
        let mut mine = self.as_bytes().split(|&b| b == b'/');
        let mut theirs = other.as_bytes().split(|&b| b == b'/');
        // Levels of `other` passed, and whether its first one is literally empty: `#` after
        // no level, or after that one empty level, cannot match "no more levels" (the empty
        // name is no topic), so there `#` is `+/#`.
        let mut passed = 0usize;
        let mut first_empty = false;
        loop {
            match (mine.next(), theirs.next()) {
                // `#` takes whatever remains, even nothing (`a/#` matches `a`).
                (Some(b"#"), _) | (None, None) => return true,
                (Some(_), None) | (None, Some(_)) => return false,
                (Some(b"+"), Some(b"#")) => {
                    let no_topic_yet = passed == 0 || (passed == 1 && first_empty);
                    return no_topic_yet && mine.next() == Some(b"#");
                }
                (Some(_), Some(b"#")) => return false,
                (Some(m), Some(t)) => {
                    // `+` covers any one level; a literal only itself (not their `+`).
                    if m != b"+" && (t == b"+" || m != t) {
                        return false;
                    }
                    if passed == 0 {
                        first_empty = t.is_empty();
                    }
                }
            }
            passed += 1;
        }
    }

    /// Whether this filter matches `topic` under MQTT §4.7; never allocates.
    ///
    /// `+` matches exactly one level and `#` matches any number of trailing levels, including none,
    /// so `a/#` matches `a`. Empty levels are real levels (`+/+` matches `/`). Levels are compared
    /// byte for byte with no normalisation ([MQTT-4.7.3-4]). A filter whose first level is a
    /// wildcard never matches a topic starting with `$` ([MQTT-4.7.2-1]).
    pub fn matches(&self, topic: &TopicName) -> bool {
        if self.starts_with_wildcard() && topic.starts_with_dollar() {
            return false;
        }
        let mut filter_levels = self.as_bytes().split(|&b| b == b'/');
        let mut topic_levels = topic.as_bytes().split(|&b| b == b'/');
        loop {
            match (filter_levels.next(), topic_levels.next()) {
                // `#` is always the last filter level, so it takes whatever remains, even nothing.
                (Some(b"#"), _) => return true,
                (Some(b"+"), Some(_)) => {}
                (Some(filter_level), Some(topic_level)) => {
                    if filter_level != topic_level {
                        return false;
                    }
                }
                (None, None) => return true,
                (Some(_), None) | (None, Some(_)) => return false,
            }
        }
    }
}

/// Checks everything a topic filter needs.
pub(super) fn check_filter(text: &str) -> Result<(), TopicError> {
    check_common(text)?;
    let mut levels = text.as_bytes().split(|&b| b == b'/').peekable();
    while let Some(level) = levels.next() {
        match level {
            b"#" if levels.peek().is_some() => return Err(TopicError::HashNotLast),
            b"#" | b"+" => {}
            _ if level.iter().any(|&b| b == b'+' || b == b'#') => {
                return Err(TopicError::WildcardNotAlone)
            }
            _ => {}
        }
    }
    Ok(())
}

super::text_type_impls!(TopicFilter, check_filter, "topic filter");

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(filter: &str, topic: &str) -> bool {
        let filter = TopicFilter::try_from(filter).unwrap();
        let topic = TopicName::try_from(topic).unwrap();
        filter.matches(&topic)
    }

    #[test]
    fn spec_examples() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("#", "a/b/c"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(!matches("Sport", "sport"));
    }
}
