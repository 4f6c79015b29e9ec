//! Byte-level reading shared by every decoder.
//!
//! All integers on the wire are big-endian. Strings and byte strings carry a
//! `u16` length prefix; strings must be UTF-8.

use bytes::{BufMut, Bytes, BytesMut};

/// Why a field could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The message ended before the field did.
    #[error(
        "field `{field}` truncated at offset {offset}: needs {needed} bytes, {available} left"
    )]
    Truncated {
        /// Name of the field being read.
        field: &'static str,
        /// Offset of the field within the message body.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the body.
        available: usize,
    },
    /// A string field is not valid UTF-8.
    #[error("field `{field}` at offset {offset} is not valid UTF-8")]
    NotUtf8 {
        /// Name of the field.
        field: &'static str,
        /// Offset of the field within the message body.
        offset: usize,
    },
    /// A field holds a value this version does not know.
    #[error("field `{field}` at offset {offset} has unknown value {value}")]
    UnknownValue {
        /// Name of the field.
        field: &'static str,
        /// Offset of the field within the message body.
        offset: usize,
        /// The value found.
        value: u64,
    },
    /// Bytes remain after the last field.
    #[error("{extra} unexpected trailing bytes at offset {offset}")]
    Trailing {
        /// Offset of the first unexpected byte.
        offset: usize,
        /// How many bytes remain.
        extra: usize,
    },
}

/// A cursor over a complete message body that names the field it fails on.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Offset of the next unread byte.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Whether every byte has been read (an optional trailing field is absent).
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Takes `n` bytes.
    pub fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], FieldError> {
        let available = self.buf.len() - self.pos;
        if n > available {
            return Err(FieldError::Truncated {
                field,
                offset: self.pos,
                needed: n,
                available,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, FieldError> {
        Ok(self.take(field, 1)?[0])
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, FieldError> {
        let b = self.take(field, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, FieldError> {
        let b = self.take(field, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, FieldError> {
        let b = self.take(field, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Reads a field with `read` and keeps it only if `known` maps it to a
    /// value: anything else is [`FieldError::UnknownValue`] at the field's
    /// offset. The one place an enum tag or a range is checked.
    fn known<R: Copy + Into<u64>, T>(
        &mut self,
        field: &'static str,
        read: fn(&mut Self, &'static str) -> Result<R, FieldError>,
        known: impl FnOnce(R) -> Option<T>,
    ) -> Result<T, FieldError> {
        let offset = self.pos;
        let raw = read(self, field)?;
        known(raw).ok_or(FieldError::UnknownValue {
            field,
            offset,
            value: raw.into(),
        })
    }

    /// Reads a `u8` that `known` accepts (an enum tag, a range).
    pub fn u8_known<T>(
        &mut self,
        field: &'static str,
        known: impl FnOnce(u8) -> Option<T>,
    ) -> Result<T, FieldError> {
        self.known(field, Self::u8, known)
    }

    /// Reads a big-endian `u16` that `known` accepts.
    pub fn u16_known<T>(
        &mut self,
        field: &'static str,
        known: impl FnOnce(u16) -> Option<T>,
    ) -> Result<T, FieldError> {
        self.known(field, Self::u16, known)
    }

    /// Reads a big-endian `u32` that `known` accepts.
    pub fn u32_known<T>(
        &mut self,
        field: &'static str,
        known: impl FnOnce(u32) -> Option<T>,
    ) -> Result<T, FieldError> {
        self.known(field, Self::u32, known)
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FieldError> {
        let b = self.take(field, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// Reads a `u16`-length-prefixed byte string.
    pub fn bytes16(&mut self, field: &'static str) -> Result<Bytes, FieldError> {
        let len = self.u16(field)? as usize;
        Ok(Bytes::copy_from_slice(self.take(field, len)?))
    }

    /// Reads a `u16`-length-prefixed UTF-8 string.
    pub fn string16(&mut self, field: &'static str) -> Result<String, FieldError> {
        let offset = self.pos;
        let len = self.u16(field)? as usize;
        let raw = self.take(field, len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| FieldError::NotUtf8 { field, offset })
    }

    /// Fails when bytes remain.
    pub fn finish(self) -> Result<(), FieldError> {
        let extra = self.buf.len() - self.pos;
        if extra == 0 {
            Ok(())
        } else {
            Err(FieldError::Trailing {
                offset: self.pos,
                extra,
            })
        }
    }
}

/// Writes a `u16`-length-prefixed byte string, cutting it at `u16::MAX` bytes.
///
/// Encoders validate lengths before they get here; the cut only keeps a
/// caller's mistake from producing a frame the peer would misparse.
pub(crate) fn put_bytes16(out: &mut BytesMut, data: &[u8]) {
    let len = data.len().min(u16::MAX as usize);
    out.put_u16(len as u16);
    out.put_slice(&data[..len]);
}

/// Writes a `u16`-length-prefixed string, cut at a character boundary.
pub(crate) fn put_string16(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_bytes16(out, &s.as_bytes()[..end]);
}

/// The core every length-prefixed stream decoder shares ([`crate::FrameDecoder`],
/// [`crate::MessageDecoder`]): the read buffer, the stream offset of its
/// first byte, the `u32` length prefix, poisoning after an error (the rest
/// of the stream is garbage: the buffer is freed and the error returned
/// again on every call) and the end-of-stream check.
///
/// A decoder supplies only its `parse` step, which sees the buffer and its
/// stream offset and returns the item and the bytes it consumed, or
/// `Ok(None)` while more bytes are needed.
#[derive(Debug)]
pub(crate) struct LengthPrefixed<E> {
    buf: BytesMut,
    offset: u64,
    failed: Option<E>,
}

impl<E> Default for LengthPrefixed<E> {
    fn default() -> Self {
        Self {
            buf: BytesMut::new(),
            offset: 0,
            failed: None,
        }
    }
}

impl<E: Clone> LengthPrefixed<E> {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Runs one `parse` step on the buffer; an error poisons the decoder.
    pub(crate) fn next<T>(
        &mut self,
        parse: impl FnOnce(&mut BytesMut, u64) -> Result<Option<(T, usize)>, E>,
    ) -> Result<Option<T>, E> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match parse(&mut self.buf, self.offset) {
            Ok(Some((item, consumed))) => {
                self.offset += consumed as u64;
                Ok(Some(item))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = BytesMut::new();
                Err(e)
            }
        }
    }

    /// Fails if the decoder is poisoned or a partial item is buffered
    /// (`truncated` of the offset and the bytes buffered).
    pub(crate) fn finish(&self, truncated: impl FnOnce(u64, usize) -> E) -> Result<(), E> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None if self.buf.is_empty() => Ok(()),
            None => Err(truncated(self.offset, self.buf.len())),
        }
    }
}

/// The big-endian `u32` length prefix at the start of `buf`, once all four bytes are there.
pub(crate) fn length_prefix(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(prefix) as usize)
}
