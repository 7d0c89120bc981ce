//! The data representations of MQTT §1.5: integers, variable byte integers, UTF-8 strings and
//! binary data, read from a frame without copying and written into a caller's buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::DecodeError;

/// The largest value a variable byte integer can carry (four bytes of seven bits).
pub const MAX_VAR_INT: u32 = 268_435_455;

/// Reads the fields of one packet body, handing out zero-copy slices of the frame.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    #[inline]
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// A variable byte integer [MQTT-1.5.5-1]: at most four bytes, minimally encoded.
    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        match read_var_int(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(DecodeError::Truncated),
        }
    }

    /// Consumes a Property Length of 0 and says so; leaves any other length in place.
    #[inline]
    pub(crate) fn skip_empty_properties(&mut self) -> Result<bool, DecodeError> {
        match self.buf.first() {
            Some(0) => {
                self.buf.advance(1);
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(DecodeError::Truncated),
        }
    }

    /// Takes the next `n` bytes as a zero-copy slice.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Binary data: a two-byte length and that many bytes.
    #[inline]
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    /// A topic name (a UTF-8 string without wildcards).
    #[inline]
    pub(crate) fn topic_name(&mut self) -> Result<ByteString, DecodeError> {
        let raw = self.binary()?;
        topic_name(raw)
    }

    /// A UTF-8 encoded string [MQTT-1.5.4-1] [MQTT-1.5.4-2].
    #[inline]
    pub(crate) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let raw = self.binary()?;
        utf8(raw)
    }

    /// Everything left in the body, as a zero-copy slice.
    #[inline]
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Fails unless the body has been read to its last byte.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count: self.buf.len(),
            })
        }
    }
}

/// Validates MQTT UTF-8: well-formed (which excludes surrogates) and free of U+0000.
#[inline]
pub(crate) fn utf8(raw: Bytes) -> Result<ByteString, DecodeError> {
    if scan(&raw, |b| b == 0) {
        return Err(DecodeError::NullCharacter);
    }
    ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)
}

/// A topic name: MQTT UTF-8 with no `+` or `#` [MQTT-3.3.2-2], checked in one pass.
#[inline]
pub(crate) fn topic_name(raw: Bytes) -> Result<ByteString, DecodeError> {
    if scan(&raw, |b| b == 0 || b == b'+' || b == b'#') {
        return Err(if raw.contains(&0) {
            DecodeError::NullCharacter
        } else {
            DecodeError::WildcardInTopicName
        });
    }
    ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)
}

/// Whether any byte satisfies `hit`. There is no early exit, so the loop vectorises; strings
/// are short and a hit is an error, which is rare.
#[inline(always)]
fn scan(bytes: &[u8], hit: impl Fn(u8) -> bool) -> bool {
    bytes.iter().fold(false, |found, &b| found | hit(b))
}

/// Reads a variable byte integer from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` ends before the integer does, and the value with its length
/// otherwise.
pub(crate) fn read_var_int(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().enumerate() {
        if i == 4 {
            return Err(DecodeError::VarIntTooLong);
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(DecodeError::VarIntTooLong);
    }
    Ok(None)
}

/// How many bytes the variable byte integer encoding of `value` takes.
#[must_use]
pub const fn var_int_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` as a minimal variable byte integer. Values above [`MAX_VAR_INT`] are the
/// caller's bug; they are clamped so the output stays well formed.
pub(crate) fn put_var_int(buf: &mut BytesMut, value: u32) {
    let mut value = value.min(MAX_VAR_INT);
    loop {
        // The mask keeps the low seven bits, so the cast is exact.
        let mut byte = (value & 0x7f) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Writes binary data (or a string's bytes) with its two-byte length prefix. Longer input is
/// the caller's bug; it is cut at 65 535 bytes so the frame stays well formed.
pub(crate) fn put_binary(buf: &mut BytesMut, data: &[u8]) {
    let len = data.len().min(usize::from(u16::MAX));
    // `len` was just limited to u16::MAX.
    buf.put_u16(len as u16);
    buf.put_slice(&data[..len]);
}

/// The encoded length of binary data or a string: two length bytes plus the content.
#[must_use]
pub(crate) fn binary_len(data: &[u8]) -> usize {
    2 + data.len().min(usize::from(u16::MAX))
}
