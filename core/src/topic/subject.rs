//! Mapping between MQTT topics and NATS subjects, compatible with the NATS server's MQTT gateway.
//!
//! # MQTT → NATS
//!
//! Split the MQTT string on `/`, keeping empty levels, convert each level and join the results with
//! `.`:
//!
//! - an empty level becomes the token `/`;
//! - inside a level, `.` becomes `//`, `+` becomes `*` and `#` becomes `>`;
//! - the characters listed under *Escape* below become `/` plus two hex digits, `*` and `>`
//!   among them: in MQTT they are ordinary characters, and a subject built from a client's topic
//!   must never be a NATS wildcard (a retained delete of the topic `>` would purge every
//!   retained message; the NATS server copies them, so there an MQTT `*` level acts as a
//!   wildcard);
//! - everything else is copied unchanged.
//!
//! For example `/foo/bar/` → `/.foo.bar./`, `foo.bar/baz` → `foo//bar.baz`, `foo//+//bar` →
//! `foo./.*./.bar` and `a/#` → `a.>`. The subject never contains an empty token. Escaping can at most
//! triple the length, so a 65,535-byte topic gives at most 196,605 bytes.
//!
//! # NATS → MQTT
//!
//! Scan the subject left to right:
//!
//! - `.` becomes `/`;
//! - `//` becomes `.`, and `/.` becomes `/`;
//! - `/` followed by an escape (see below) becomes the escaped character;
//! - any other `/` (last, or followed by anything else) is dropped, as the NATS server does, so the
//!   NATS subject `foo/bar` is the MQTT topic `foobar`;
//! - everything else is copied.
//!
//! # Escape
//!
//! The NATS server refuses MQTT topics containing space, tab, LF, CR, FF or DEL, and other C0
//! control characters cannot safely travel in a NATS subject; `*` and `>` are NATS's wildcards.
//! jetmq maps them instead of refusing or copying them:
//!
//! > A byte `b` in U+0001–U+0020 (the C0 controls and space), U+007F (DEL), `*` or `>` is written
//! > as `/` followed by two uppercase hex digits of `b`: space → `/20`, tab → `/09`, DEL → `/7F`,
//! > `*` → `/2A`, `>` → `/3E`. On the way back, `/` followed by two uppercase hex digits that name
//! > a byte in that set becomes the byte; the pairs `//` and `/.` are recognised first, scanning
//! > left to right.
//!
//! The escape is unambiguous. Reading left to right, every `/` the MQTT → NATS rule writes starts
//! one of three units: `//` (a dot), a whole `/` token (an empty level, always followed by `.` or
//! the end of the subject) or an escape `/XX`. Their second characters (`/`; `.` or nothing; a hex
//! digit) differ, so the NATS → MQTT scan always recognises the unit that was written, and the
//! round trip MQTT → NATS → MQTT is the identity for every valid topic name.
//!
//! Every topic the NATS server accepts and that has no C0 control character, `*` or `>` maps
//! exactly as on the NATS server, so NATS clients and jetmq clients see the same messages. Three
//! differences remain: the NATS server copies C0 controls other than tab, LF, FF and CR into the
//! subject unchanged, where jetmq escapes them; it copies `*` and `>` (a wildcard in a subject
//! built from a topic name), where jetmq escapes them; and a NATS client publishing on a subject
//! such as `a/20b` reaches jetmq clients as `a b` but NATS server MQTT clients as `a20b`.

use std::borrow::Cow;

use super::{TopicError, TopicFilter, TopicName};

/// Converts a topic name to its NATS subject; borrows when nothing changes.
pub fn topic_to_subject(topic: &TopicName) -> Cow<'_, str> {
    mqtt_to_subject(topic.as_str())
}

/// Converts a topic filter to its NATS subscription subject (`+` → `*`, `#` → `>`); borrows when
/// nothing changes.
///
/// For a filter ending in `/#`, also subscribe to [`filter_parent_subject`] so that `a/#` matches
/// `a`, as the NATS server does.
pub fn filter_to_subject(filter: &TopicFilter) -> Cow<'_, str> {
    mqtt_to_subject(filter.as_str())
}

/// Every NATS subject a subscription to `filter` needs: its own ([`filter_to_subject`]) and, for
/// a filter ending in `/#`, the parent ([`filter_parent_subject`]), as the NATS server does.
pub fn filter_subjects(filter: &TopicFilter) -> impl Iterator<Item = String> {
    let own = filter_to_subject(filter).into_owned();
    let parent = filter_parent_subject(&own).map(str::to_string);
    std::iter::once(own).chain(parent)
}

/// Converts any MQTT string to a NATS subject without validating it; borrows when nothing changes.
///
/// This is the raw rule of the [module docs](self), with the NATS server's quirks: `+` and `#` are
/// converted wherever they appear (`foo#` → the literal token `foo>`), and `*`, `>`, spaces and
/// control characters are escaped (`/2A`, `/3E`, ...) so that no MQTT topic becomes a NATS
/// wildcard.
/// The empty string gives the empty string. Callers normally use [`topic_to_subject`] or
/// [`filter_to_subject`] on validated values.
pub fn mqtt_to_subject(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(needs_rewrite) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + text.len() / 2 + 2);
    for (index, level) in text.split('/').enumerate() {
        if index > 0 {
            out.push('.');
        }
        if level.is_empty() {
            out.push('/');
            continue;
        }
        for c in level.chars() {
            match c {
                '.' => out.push_str("//"),
                '+' => out.push('*'),
                '#' => out.push('>'),
                _ => match u8::try_from(c) {
                    Ok(byte) if is_escaped(byte) => push_escape(&mut out, byte),
                    _ => out.push(c),
                },
            }
        }
    }
    Cow::Owned(out)
}

/// Converts a NATS subject back to an MQTT topic string; borrows when nothing changes.
///
/// The result is not validated: a subject from a NATS publisher may give an empty string, a
/// wildcard character or U+0000. Use [`subject_to_topic_name`] to get a [`TopicName`].
pub fn subject_to_topic(subject: &str) -> Cow<'_, str> {
    if !subject.contains(['.', '/']) {
        return Cow::Borrowed(subject);
    }
    let mut out = String::with_capacity(subject.len());
    let mut chars = subject.chars();
    while let Some(c) = chars.next() {
        match c {
            '.' => out.push('/'),
            '/' => {
                let mut ahead = chars.clone();
                match ahead.next() {
                    Some('/') => {
                        out.push('.');
                        chars = ahead;
                    }
                    Some('.') => {
                        out.push('/');
                        chars = ahead;
                    }
                    Some(high) => {
                        if let Some(byte) = ahead.next().and_then(|low| decode_escape(high, low)) {
                            out.push(char::from(byte));
                            chars = ahead;
                        }
                        // Otherwise the lone `/` is dropped and `high` is read normally next.
                    }
                    // A trailing lone `/` is dropped.
                    None => {}
                }
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Converts a NATS subject back to a validated MQTT topic name.
pub fn subject_to_topic_name(subject: &str) -> Result<TopicName, TopicError> {
    TopicName::new(subject_to_topic(subject).into_owned())
}

/// Converts a NATS subscription subject back to an MQTT filter string; borrows when nothing
/// changes.
///
/// Token by token: a token `*` becomes `+`, a token `>` becomes `#`, and any other is read as
/// [`subject_to_topic`] reads it (an escaped `*` or `>` stays a literal character). This inverts
/// [`filter_to_subject`] for every filter.
pub fn subject_to_filter(subject: &str) -> Cow<'_, str> {
    if !subject.contains(['.', '/']) && subject != "*" && subject != ">" {
        return Cow::Borrowed(subject);
    }
    let mut out = String::with_capacity(subject.len());
    for (index, token) in subject.split('.').enumerate() {
        if index > 0 {
            out.push('/');
        }
        match token {
            "*" => out.push('+'),
            ">" => out.push('#'),
            other => out.push_str(&subject_to_topic(other)),
        }
    }
    Cow::Owned(out)
}

/// The extra subject the NATS server subscribes to for a filter subject ending in `.>`: the subject
/// without those two characters (`foo.>` → `foo`), so that MQTT `foo/#` also matches `foo`.
///
/// Returns `None` when there is no parent subscription, in particular for `>` alone (MQTT `#`).
pub fn filter_parent_subject(subject: &str) -> Option<&str> {
    subject
        .strip_suffix(".>")
        .filter(|parent| !parent.is_empty())
}

/// Whether a filter subject is "reserved" in the NATS server's sense: it is exactly `*` or `>` or
/// starts with `*.`. Such subscriptions never receive messages whose subject starts with `$`
/// ([MQTT-4.7.2-1]).
///
/// This covers MQTT `#`, `+` and `+/…`, and also a literal `*` or `*/…`.
pub fn is_reserved_subject_filter(subject: &str) -> bool {
    subject == "*" || subject == ">" || subject.starts_with("*.")
}

/// Whether `byte` is written as an escape: C0 controls except NUL, space and DEL.
fn is_escaped(byte: u8) -> bool {
    matches!(byte, 0x01..=0x20 | 0x7F | b'*' | b'>')
}

/// Whether `byte` makes [`mqtt_to_subject`] change the string.
fn needs_rewrite(byte: u8) -> bool {
    matches!(byte, b'/' | b'.' | b'+' | b'#') || is_escaped(byte)
}

/// Appends the escape of `byte`: `/` and two uppercase hex digits.
fn push_escape(out: &mut String, byte: u8) {
    out.push('/');
    out.push(hex_digit(byte >> 4));
    out.push(hex_digit(byte & 0x0F));
}

/// The uppercase hex digit for the low four bits of `nibble`.
fn hex_digit(nibble: u8) -> char {
    match nibble & 0x0F {
        digit @ 0..=9 => char::from(b'0' + digit),
        // `digit` is 10..=15 here, so the sum stays within `A`..=`F`.
        digit => char::from(b'A' + (digit - 10)),
    }
}

/// The value of an uppercase hex digit.
fn hex_value(c: char) -> Option<u8> {
    let byte = u8::try_from(c).ok()?;
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The byte named by the escape digits `high` and `low`, if they form a valid escape.
fn decode_escape(high: char, low: char) -> Option<u8> {
    let byte = (hex_value(high)? << 4) | hex_value(low)?;
    is_escaped(byte).then_some(byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        for byte in (0x01..=0x20).chain([0x7F, b'*', b'>']) {
            let mut out = String::new();
            push_escape(&mut out, byte);
            let mut chars = out.chars().skip(1);
            let (high, low) = (chars.next().unwrap(), chars.next().unwrap());
            assert_eq!(decode_escape(high, low), Some(byte), "{out}");
        }
    }

    #[test]
    fn only_escape_bytes_decode() {
        assert_eq!(decode_escape('0', '0'), None);
        assert_eq!(decode_escape('4', '1'), None);
        assert_eq!(decode_escape('7', 'f'), None);
        assert_eq!(decode_escape('2', '1'), None);
        assert_eq!(decode_escape('2', '0'), Some(b' '));
    }
}
