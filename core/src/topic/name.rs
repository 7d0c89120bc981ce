//! [`TopicName`]: a validated MQTT topic name.

use bytestring::ByteString;

use super::{check_common, TopicError, TopicFilter};

/// A validated MQTT topic name: non-empty, at most 65,535 bytes of UTF-8, with no U+0000, `+` or
/// `#`.
///
/// Comparison, ordering and hashing are those of the text, so a `HashMap<TopicName, _>` can be
/// searched with a `&str`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName {
    text: ByteString,
}

impl TopicName {
    /// Whether the name starts with `$`; filters starting with a wildcard do not match such names
    /// ([MQTT-4.7.2-1]).
    pub fn starts_with_dollar(&self) -> bool {
        self.text.starts_with('$')
    }

    /// Whether `filter` matches this name; the same as [`TopicFilter::matches`].
    pub fn is_matched_by(&self, filter: &TopicFilter) -> bool {
        filter.matches(self)
    }
}

/// Checks everything a topic name needs.
pub(super) fn check_name(text: &str) -> Result<(), TopicError> {
    check_common(text)?;
    if text.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

super::text_type_impls!(TopicName, check_name, "topic name");
