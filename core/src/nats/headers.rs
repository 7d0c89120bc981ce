//! NATS message headers: `NATS/1.0[ <status>[ <description>]]\r\n`, then `Name: value` lines,
//! then an empty line. Names keep their case and order; a name may repeat.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

/// The header block of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// A status code on the version line (the server's `503` for "no responders", for one).
    pub status: Option<u16>,
    /// The status's description, if any.
    pub description: Option<ByteString>,
    /// Name and value pairs, in order.
    pub entries: Vec<(ByteString, ByteString)>,
}

impl Headers {
    /// Headers with these entries and no status.
    #[must_use]
    pub fn new(entries: Vec<(ByteString, ByteString)>) -> Self {
        Self {
            status: None,
            description: None,
            entries,
        }
    }

    /// The first value of `name` (compared without case, as NATS servers do).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// The block as bytes.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(
            16 + self
                .entries
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>(),
        );
        out.put_slice(b"NATS/1.0");
        if let Some(status) = self.status {
            out.put_slice(format!(" {status}").as_bytes());
            if let Some(d) = &self.description {
                out.put_u8(b' ');
                out.put_slice(d.as_bytes());
            }
        }
        out.put_slice(b"\r\n");
        for (name, value) in &self.entries {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        out.freeze()
    }

    /// Parses a block, or `None` if it is not one.
    #[must_use]
    pub fn decode(block: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(block).ok()?;
        let body = text
            .strip_suffix("\r\n\r\n")
            .or_else(|| text.strip_suffix("\r\n"))?;
        let mut lines = body.split("\r\n");
        let version = lines.next()?;
        let rest = version.strip_prefix("NATS/1.0")?;
        let mut headers = Self::default();
        let rest = rest.trim();
        if !rest.is_empty() {
            let (code, description) = match rest.split_once(' ') {
                Some((c, d)) => (c, Some(d.trim())),
                None => (rest, None),
            };
            headers.status = Some(code.parse().ok()?);
            headers.description = description.filter(|d| !d.is_empty()).map(ByteString::from);
        }
        for line in lines {
            if line.is_empty() {
                continue;
            }
            let (name, value) = line.split_once(':')?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return None;
            }
            headers
                .entries
                .push((ByteString::from(name), ByteString::from(value.trim())));
        }
        Some(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_in_order_with_repeats() {
        let h = Headers::new(vec![
            ("Nmqtt-Pub".into(), "1".into()),
            ("X".into(), "a".into()),
            ("X".into(), "b".into()),
        ]);
        let bytes = h.encode();
        assert_eq!(
            &bytes[..],
            b"NATS/1.0\r\nNmqtt-Pub: 1\r\nX: a\r\nX: b\r\n\r\n"
        );
        assert_eq!(Headers::decode(&bytes), Some(h.clone()));
        assert_eq!(h.get("nmqtt-pub"), Some("1"));
    }

    #[test]
    fn status_lines_are_read() {
        let h = Headers::decode(b"NATS/1.0 503\r\n\r\n").expect("parses");
        assert_eq!(h.status, Some(503));
        let h = Headers::decode(b"NATS/1.0 408 Request Timeout\r\n\r\n").expect("parses");
        assert_eq!(
            (h.status, h.description.as_deref()),
            (Some(408), Some("Request Timeout"))
        );
        // The NATS server writes headers without a space after the colon too.
        let h = Headers::decode(b"NATS/1.0\r\nNmqtt-Pub:2\r\n\r\n").expect("parses");
        assert_eq!(h.get("Nmqtt-Pub"), Some("2"));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        for bad in [
            &b""[..],
            b"HTTP/1.1\r\n\r\n",
            b"NATS/1.0 abc\r\n\r\n",
            b"NATS/1.0\r\nno-colon\r\n\r\n",
            b"NATS/1.0\r\n: empty name\r\n\r\n",
            b"NATS/1.0\r\nX: y",
            b"\xff",
        ] {
            assert_eq!(Headers::decode(bad), None, "{bad:?}");
        }
    }
}
