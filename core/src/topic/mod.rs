//! Validated MQTT topic names and filters, wildcard matching, shared subscriptions and the MQTT
//! topic ⇄ NATS subject mapping.
//!
//! "Parse, don't validate": a string that passed the checks of MQTT §4.7 has its own type.
//!
//! - [`TopicName`]: a topic a message is published on (no wildcards).
//! - [`TopicFilter`]: a subscription pattern with `+` and `#`; [`TopicFilter::matches`] implements
//!   MQTT §4.7.1 and §4.7.2 without allocating.
//! - [`Subscription`]: the raw SUBSCRIBE string, either a plain filter or a `$share/{group}/{filter}`
//!   shared subscription ([`SharedFilter`]).
//! - [`subject`]: conversion between MQTT topics and NATS subjects, compatible with the NATS server,
//!   plus a reversible escape for characters NATS subjects cannot carry.
//!
//! All three types keep their text in a [`ByteString`] (a UTF-8 [`Bytes`]), so a topic decoded from
//! a packet can stay a zero-copy slice of the frame and clones are cheap.

use bytes::Bytes;
use bytestring::ByteString;

mod error;
mod filter;
mod name;
mod shared;
pub mod subject;

pub use error::TopicError;
pub use filter::TopicFilter;
pub use name::TopicName;
pub use shared::{SharedFilter, Subscription};

/// The longest topic name or filter MQTT can carry: its length prefix is 16 bits ([MQTT-4.7.3-3]).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Runs the checks shared by names and filters: non-empty, at most [`MAX_TOPIC_LEN`] bytes and no
/// U+0000 (UTF-8 validity is guaranteed by the `&str`).
fn check_common(text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: text.len() });
    }
    if text.as_bytes().contains(&0) {
        return Err(TopicError::Null);
    }
    Ok(())
}

/// Turns bytes into a [`ByteString`] without copying, or reports [`TopicError::InvalidUtf8`].
fn utf8(bytes: Bytes) -> Result<ByteString, TopicError> {
    ByteString::try_from(bytes).map_err(|_| TopicError::InvalidUtf8)
}

/// Implements constructors, conversions and formatting for a validated text type `$ty` with a
/// single `text: ByteString` field, given its check function (`fn(&str) -> Result<(), TopicError>`)
/// and a human name for the docs.
macro_rules! text_type_impls {
    ($ty:ident, $check:path, $what:literal) => {
        impl $ty {
            #[doc = concat!("Validates `text` as a ", $what, "; a `String` or `ByteString` is taken over without copying.")]
            pub fn new(text: impl Into<::bytestring::ByteString>) -> Result<Self, TopicError> {
                let text = text.into();
                $check(&text)?;
                Ok(Self { text })
            }

            #[doc = concat!("Validates UTF-8 bytes as a ", $what, " without copying them.")]
            pub fn from_bytes(bytes: ::bytes::Bytes) -> Result<Self, TopicError> {
                Self::new(super::utf8(bytes)?)
            }

            #[doc = concat!("Validates a static string as a ", $what, " without copying it.")]
            pub fn from_static(text: &'static str) -> Result<Self, TopicError> {
                Self::new(::bytestring::ByteString::from_static(text))
            }

            #[doc = concat!("The ", $what, " as text.")]
            pub fn as_str(&self) -> &str {
                &self.text
            }

            #[doc = concat!("The ", $what, " as UTF-8 bytes.")]
            pub fn as_bytes(&self) -> &[u8] {
                self.text.as_bytes()
            }

            #[doc = concat!("The shared buffer holding the ", $what, ".")]
            pub fn as_byte_string(&self) -> &::bytestring::ByteString {
                &self.text
            }

            #[doc = concat!("Gives back the shared buffer holding the ", $what, ".")]
            pub fn into_byte_string(self) -> ::bytestring::ByteString {
                self.text
            }

            /// The levels, split on `/`; empty levels are kept (`/a` has the levels `""` and `"a"`).
            pub fn levels(&self) -> ::std::str::Split<'_, char> {
                self.text.split('/')
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = TopicError;

            #[doc = concat!("Validates a string as a ", $what, ", copying it into a new buffer.")]
            fn try_from(text: &str) -> Result<Self, Self::Error> {
                Self::new(text)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = TopicError;

            #[doc = concat!("Validates a string as a ", $what, ", taking over its buffer.")]
            fn try_from(text: String) -> Result<Self, Self::Error> {
                Self::new(text)
            }
        }

        impl TryFrom<::bytestring::ByteString> for $ty {
            type Error = TopicError;

            #[doc = concat!("Validates a byte string as a ", $what, " without copying it.")]
            fn try_from(text: ::bytestring::ByteString) -> Result<Self, Self::Error> {
                Self::new(text)
            }
        }

        impl TryFrom<::bytes::Bytes> for $ty {
            type Error = TopicError;

            #[doc = concat!("Validates UTF-8 bytes as a ", $what, " without copying them.")]
            fn try_from(bytes: ::bytes::Bytes) -> Result<Self, Self::Error> {
                Self::from_bytes(bytes)
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = TopicError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::new(text)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.text
            }
        }

        impl ::std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.text
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                *self.text == *other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                *self.text == **other
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.text)
            }
        }

        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_tuple(stringify!($ty)).field(&&*self.text).finish()
            }
        }
    };
}
use text_type_impls;
