//! The NATS client protocol's wire format: operations from the server decoded incrementally
//! from a `BytesMut`, and operations to the server encoded into one.
//!
//! Server to client: `INFO`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`. Client to server:
//! `CONNECT`, `PUB`, `HPUB`, `SUB`, `UNSUB`, `PING`, `PONG`. Each operation is a line ending in
//! CRLF; `MSG` and `HMSG` are followed by a payload of the announced size and a CRLF.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::headers::Headers;
use super::info::ServerInfo;

/// Longest control line accepted from the server (INFO lines carry JSON; 64 KiB is far more
/// than any server sends).
pub const MAX_CONTROL_LINE: usize = 64 * 1024;

/// A message delivered on a subscription (`MSG` or `HMSG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject it was published to.
    pub subject: ByteString,
    /// The subscription it is delivered on.
    pub sid: u64,
    /// Where to send a reply, if the publisher asked for one.
    pub reply: Option<ByteString>,
    /// Its headers (`HMSG`), if any.
    pub headers: Option<Headers>,
    /// Its payload.
    pub payload: Bytes,
}

/// One operation from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// The server's description, first thing on a connection (and again on cluster changes).
    Info(Box<ServerInfo>),
    /// A message for a subscription.
    Msg(Message),
    /// A keep-alive probe; answer with `PONG`.
    Ping,
    /// The answer to our `PING`.
    Pong,
    /// Acknowledgement in verbose mode.
    Ok,
    /// An error; the server closes the connection after most of them.
    Err(String),
}

/// What is wrong with bytes from the server. The connection cannot go on after any of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A control line longer than [`MAX_CONTROL_LINE`].
    LineTooLong,
    /// An operation that is not one of the server's.
    UnknownOp(String),
    /// An operation whose arguments do not parse.
    BadArguments(String),
    /// A payload larger than the limit set on the decoder.
    PayloadTooLarge(usize),
    /// A payload not followed by CRLF.
    MissingCrlf,
    /// An INFO whose JSON does not parse.
    BadInfo(String),
    /// A header block that does not parse.
    BadHeaders,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong => write!(f, "control line longer than {MAX_CONTROL_LINE} bytes"),
            Self::UnknownOp(op) => write!(f, "unknown operation {op:?}"),
            Self::BadArguments(line) => write!(f, "bad arguments: {line:?}"),
            Self::PayloadTooLarge(n) => write!(f, "payload of {n} bytes is over the limit"),
            Self::MissingCrlf => write!(f, "payload not followed by CRLF"),
            Self::BadInfo(e) => write!(f, "INFO does not parse: {e}"),
            Self::BadHeaders => write!(f, "header block does not parse"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A message's announced layout, waiting for its payload.
#[derive(Debug)]
struct PendingMsg {
    subject: ByteString,
    sid: u64,
    reply: Option<ByteString>,
    header_len: usize,
    total_len: usize,
}

/// Decodes server operations from bytes as they arrive.
#[derive(Debug)]
pub struct Decoder {
    max_payload: usize,
    pending: Option<PendingMsg>,
}

fn text(bytes: &[u8]) -> Option<ByteString> {
    std::str::from_utf8(bytes).ok().map(ByteString::from)
}

impl Decoder {
    /// A decoder refusing messages larger than `max_payload` bytes (headers included).
    #[must_use]
    pub fn new(max_payload: usize) -> Self {
        Self {
            max_payload,
            pending: None,
        }
    }

    /// The next whole operation in `buf` (consumed from it), `Ok(None)` when more bytes are
    /// needed.
    ///
    /// # Errors
    ///
    /// The bytes break the protocol; the connection must be dropped.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ServerOp>, ProtocolError> {
        if self.pending.is_some() {
            return self.decode_body(buf);
        }
        let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
            if buf.len() > MAX_CONTROL_LINE {
                return Err(ProtocolError::LineTooLong);
            }
            return Ok(None);
        };
        if end > MAX_CONTROL_LINE {
            return Err(ProtocolError::LineTooLong);
        }
        let line = buf.split_to(end);
        buf.advance(2);
        let (op, args) = match line.iter().position(|b| *b == b' ' || *b == b'\t') {
            Some(i) => (&line[..i], line[i + 1..].trim_ascii()),
            None => (&line[..], &b""[..]),
        };
        let bad = || ProtocolError::BadArguments(String::from_utf8_lossy(&line).into_owned());
        match op.to_ascii_uppercase().as_slice() {
            b"PING" => Ok(Some(ServerOp::Ping)),
            b"PONG" => Ok(Some(ServerOp::Pong)),
            b"+OK" => Ok(Some(ServerOp::Ok)),
            b"-ERR" => {
                let msg = String::from_utf8_lossy(args);
                Ok(Some(ServerOp::Err(msg.trim_matches('\'').to_string())))
            }
            b"INFO" => serde_json::from_slice::<ServerInfo>(args)
                .map(|info| Some(ServerOp::Info(Box::new(info))))
                .map_err(|e| ProtocolError::BadInfo(e.to_string())),
            b"MSG" | b"HMSG" => {
                let with_headers = op.eq_ignore_ascii_case(b"HMSG");
                self.pending = Some(self.msg_line(args, with_headers).ok_or_else(bad)??);
                self.decode(buf)
            }
            _ => Err(ProtocolError::UnknownOp(
                String::from_utf8_lossy(op).into_owned(),
            )),
        }
    }
}

impl Decoder {
    /// The body of the message whose control line was read, once it is all in `buf`.
    fn decode_body(&mut self, buf: &mut BytesMut) -> Result<Option<ServerOp>, ProtocolError> {
        let Some(p) = &self.pending else {
            return Ok(None);
        };
        if buf.len() < p.total_len + 2 {
            return Ok(None);
        }
        let p = self.pending.take().ok_or(ProtocolError::MissingCrlf)?;
        let mut body = buf.split_to(p.total_len + 2).freeze();
        if &body[p.total_len..] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        body.truncate(p.total_len);
        let headers = if p.header_len > 0 {
            let block = body.split_to(p.header_len);
            Some(Headers::decode(&block).ok_or(ProtocolError::BadHeaders)?)
        } else {
            None
        };
        Ok(Some(ServerOp::Msg(Message {
            subject: p.subject,
            sid: p.sid,
            reply: p.reply,
            headers,
            payload: body,
        })))
    }

    /// The arguments of a `MSG` (or, `with_headers`, `HMSG`) control line: `None` when they
    /// are malformed, an error when the payload is over the limit.
    fn msg_line(
        &self,
        args: &[u8],
        with_headers: bool,
    ) -> Option<Result<PendingMsg, ProtocolError>> {
        let parts: Vec<&[u8]> = args
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|p| !p.is_empty())
            .collect();
        let sizes = if with_headers { 2 } else { 1 };
        let (subject, sid, reply, rest) = match parts.len().checked_sub(sizes) {
            Some(2) => (parts[0], parts[1], None, &parts[2..]),
            Some(3) => (parts[0], parts[1], Some(parts[2]), &parts[3..]),
            _ => return None,
        };
        let num = |b: &[u8]| -> Option<usize> { std::str::from_utf8(b).ok()?.parse().ok() };
        let (header_len, total_len) = if with_headers {
            (num(rest[0])?, num(rest[1])?)
        } else {
            (0, num(rest[0])?)
        };
        if header_len > total_len {
            return None;
        }
        if total_len > self.max_payload {
            return Some(Err(ProtocolError::PayloadTooLarge(total_len)));
        }
        let sid = num(sid).and_then(|s| u64::try_from(s).ok())?;
        let subject = text(subject)?;
        let reply = match reply {
            Some(r) => Some(text(r)?),
            None => None,
        };
        Some(Ok(PendingMsg {
            subject,
            sid,
            reply,
            header_len,
            total_len,
        }))
    }
}

/// One operation to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp<'a> {
    /// The connection's options, as JSON.
    Connect(&'a str),
    /// Publish a message (`HPUB` when it has headers).
    Pub {
        /// Its subject.
        subject: &'a str,
        /// Where replies go, if any.
        reply: Option<&'a str>,
        /// Its headers, if any.
        headers: Option<&'a Headers>,
        /// Its payload.
        payload: &'a [u8],
    },
    /// Subscribe to `subject` (in a queue group, if given) as `sid`.
    Sub {
        /// The subject, wildcards allowed.
        subject: &'a str,
        /// The queue group, if any.
        queue: Option<&'a str>,
        /// The subscription's number.
        sid: u64,
    },
    /// End subscription `sid` (after `max` more messages, if given).
    Unsub {
        /// The subscription's number.
        sid: u64,
        /// Messages still to deliver before it ends.
        max: Option<u64>,
    },
    /// A keep-alive probe.
    Ping,
    /// The answer to the server's `PING`.
    Pong,
}

impl ClientOp<'_> {
    /// Appends the operation's bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Self::Connect(json) => {
                out.put_slice(b"CONNECT ");
                out.put_slice(json.as_bytes());
                out.put_slice(b"\r\n");
            }
            Self::Pub {
                subject,
                reply,
                headers,
                payload,
            } => {
                let header_bytes = headers.map(Headers::encode);
                out.put_slice(if header_bytes.is_some() {
                    b"HPUB "
                } else {
                    b"PUB "
                });
                out.put_slice(subject.as_bytes());
                if let Some(r) = reply {
                    out.put_u8(b' ');
                    out.put_slice(r.as_bytes());
                }
                match &header_bytes {
                    Some(h) => {
                        out.put_slice(
                            format!(" {} {}\r\n", h.len(), h.len() + payload.len()).as_bytes(),
                        );
                        out.put_slice(h);
                    }
                    None => out.put_slice(format!(" {}\r\n", payload.len()).as_bytes()),
                }
                out.put_slice(payload);
                out.put_slice(b"\r\n");
            }
            Self::Sub {
                subject,
                queue,
                sid,
            } => {
                out.put_slice(b"SUB ");
                out.put_slice(subject.as_bytes());
                if let Some(q) = queue {
                    out.put_u8(b' ');
                    out.put_slice(q.as_bytes());
                }
                out.put_slice(format!(" {sid}\r\n").as_bytes());
            }
            Self::Unsub { sid, max } => match max {
                Some(m) => out.put_slice(format!("UNSUB {sid} {m}\r\n").as_bytes()),
                None => out.put_slice(format!("UNSUB {sid}\r\n").as_bytes()),
            },
            Self::Ping => out.put_slice(b"PING\r\n"),
            Self::Pong => out.put_slice(b"PONG\r\n"),
        }
    }
}
