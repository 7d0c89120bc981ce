//! The typed error returned when a topic name, filter or subscription string is refused.

use std::fmt;

/// Why a topic name, topic filter or shared subscription string was refused.
///
/// Each variant is one cause; the broker decides which MQTT reaction (close, SUBACK failure code)
/// it leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicError {
    /// The string is empty ([MQTT-4.7.3-1]).
    Empty,
    /// The string encodes to more than 65,535 bytes ([MQTT-4.7.3-3]); `len` is its length.
    TooLong {
        /// Length of the refused string in bytes.
        len: usize,
    },
    /// The bytes are not valid UTF-8 (MQTT UTF-8 Encoded String rules).
    InvalidUtf8,
    /// The string contains U+0000 ([MQTT-4.7.3-2]).
    Null,
    /// A topic name contains `+` or `#`; wildcards belong to filters only (v3 [MQTT-4.7.1-1], v5
    /// [MQTT-4.7.0-1]).
    WildcardInName,
    /// A `+` or `#` shares its level with other characters, as in `a+` or `#a` (v3
    /// [MQTT-4.7.1-2]/[MQTT-4.7.1-3], v5 [MQTT-4.7.1-1]/[MQTT-4.7.1-2]).
    WildcardNotAlone,
    /// A `#` level is followed by more levels, as in `a/#/b`.
    HashNotLast,
    /// A shared subscription has an empty share name, as in `$share//x` (§4.8.2).
    SharedEmptyGroup,
    /// A shared subscription's share name contains `+` or `#` (§4.8.2).
    SharedGroupWildcard,
    /// A shared subscription has no filter after its share name, as in `$share/g` or `$share/g/`
    /// ([MQTT-4.8.2-1]/[MQTT-4.8.2-2]).
    SharedMissingFilter,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("topic cannot be empty"),
            Self::TooLong { len } => write!(f, "topic is {len} bytes long, the limit is 65535"),
            Self::InvalidUtf8 => f.write_str("topic is not valid UTF-8"),
            Self::Null => f.write_str("topic contains U+0000"),
            Self::WildcardInName => f.write_str("topic name contains a wildcard ('+' or '#')"),
            Self::WildcardNotAlone => {
                f.write_str("wildcard ('+' or '#') does not occupy a whole topic level")
            }
            Self::HashNotLast => f.write_str("multi-level wildcard '#' is not the last level"),
            Self::SharedEmptyGroup => f.write_str("shared subscription has an empty share name"),
            Self::SharedGroupWildcard => {
                f.write_str("shared subscription share name contains '+' or '#'")
            }
            Self::SharedMissingFilter => {
                f.write_str("shared subscription has no topic filter after the share name")
            }
        }
    }
}

impl std::error::Error for TopicError {}
