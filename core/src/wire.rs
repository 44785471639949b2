//! The one codec layer: a tiny big-endian [`Writer`] and a bounds-checked
//! [`Reader`].
//!
//! Every decoder in veil reads peer bytes through [`Reader`], so the safety
//! argument lives here once: a read never indexes past the buffer (it
//! returns [`DecodeError::Truncated`] instead), every length prefix is
//! compared with the caller's maximum *before* anything is sliced or
//! allocated (so a hostile length costs nothing), strings are UTF-8 checked,
//! and [`Reader::finish`] rejects trailing bytes so that each value has
//! exactly one encoding. Readers borrow from the input; the only allocation a
//! decoder makes is the one it chooses after the bounds check.
//!
//! Integers are big-endian. Length prefixes are `u8` or `u16`; the writer
//! refuses (with [`EncodeError`]) to write a field whose length does not fit
//! its prefix, rather than truncating it silently.

use thiserror::Error;

/// A malformed encoding. Always the peer's fault when the bytes came from a
/// peer: the caller may penalise it.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("truncated input: needed {needed} more bytes, {remaining} left")]
    Truncated {
        /// Bytes the read needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A length prefix exceeds the bound for its field.
    #[error("{field} is {len} bytes long, at most {max} allowed")]
    TooLong {
        /// The field being read.
        field: &'static str,
        /// The length found (a prefix, or a whole input).
        len: usize,
        /// The bound for this field.
        max: usize,
    },
    /// Bytes were left after a complete value.
    #[error("{count} trailing bytes after the value")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// A text field is not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    BadUtf8 {
        /// The field being read.
        field: &'static str,
    },
    /// A field holds a value outside its domain.
    #[error("bad value for {field}: {reason}")]
    BadValue {
        /// The field being read.
        field: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The format version is not one this build understands.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// A kind/type tag is not one this build understands.
    #[error("unknown kind {0}")]
    UnknownKind(u8),
    /// The input does not start with the expected magic bytes.
    #[error("bad magic: not a {expected}")]
    BadMagic {
        /// What the input was supposed to be.
        expected: &'static str,
    },
}

/// A value too long for its length prefix. Always a local bug or API misuse:
/// encoders validate their fields before writing.
#[derive(Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("field of {len} bytes does not fit a length prefix of at most {max}")]
pub struct EncodeError {
    /// The length of the field.
    pub len: usize,
    /// The largest length the prefix can carry.
    pub max: usize,
}

/// Appends big-endian values to a growing buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(cap),
        }
    }

    /// Appends one byte.
    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Appends `0` or `1`.
    pub fn put_bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// Appends a big-endian `u16`.
    pub fn put_u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a big-endian `u32`.
    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a big-endian `u64`.
    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends raw bytes, without a length prefix.
    pub fn put_bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Appends a `u8` length then the bytes. Fails, writing nothing, if
    /// `v` is longer than 255 bytes.
    pub fn put_bytes_u8len(&mut self, v: &[u8]) -> Result<(), EncodeError> {
        let len = u8::try_from(v.len()).map_err(|_| EncodeError {
            len: v.len(),
            max: usize::from(u8::MAX),
        })?;
        self.put_u8(len);
        self.put_bytes(v);
        Ok(())
    }

    /// Appends a big-endian `u16` length then the bytes. Fails, writing
    /// nothing, if `v` is longer than 65535 bytes.
    pub fn put_bytes_u16len(&mut self, v: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(v.len()).map_err(|_| EncodeError {
            len: v.len(),
            max: usize::from(u16::MAX),
        })?;
        self.put_u16(len);
        self.put_bytes(v);
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// The finished buffer.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads big-endian values from a borrowed buffer. No method panics,
/// whatever the bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Ok if everything was read, [`DecodeError::TrailingBytes`] otherwise.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count: self.buf.len(),
            })
        }
    }

    /// The next `n` bytes, borrowed.
    pub fn get_bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(DecodeError::Truncated {
            needed: n,
            remaining: self.buf.len(),
        })?;
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes, copied into an array.
    pub fn get_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated {
                needed: N,
                remaining: self.buf.len(),
            })?;
        self.buf = tail;
        Ok(*head)
    }

    /// One byte.
    pub fn get_u8(&mut self) -> Result<u8, DecodeError> {
        self.get_array::<1>().map(|[b]| b)
    }

    /// A strict boolean: `0` or `1`, anything else is
    /// [`DecodeError::BadValue`] (so each value has one encoding).
    pub fn get_bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.get_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadValue {
                field,
                reason: "boolean must be 0 or 1",
            }),
        }
    }

    /// A big-endian `u16`.
    pub fn get_u16(&mut self) -> Result<u16, DecodeError> {
        self.get_array().map(u16::from_be_bytes)
    }

    /// A big-endian `u32`.
    pub fn get_u32(&mut self) -> Result<u32, DecodeError> {
        self.get_array().map(u32::from_be_bytes)
    }

    /// A big-endian `u64`.
    pub fn get_u64(&mut self) -> Result<u64, DecodeError> {
        self.get_array().map(u64::from_be_bytes)
    }

    /// A `u8`-length-prefixed byte string of at most `max` bytes. The
    /// length is checked against `max` before the bytes are touched.
    pub fn get_bytes_u8len(
        &mut self,
        max: usize,
        field: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.get_u8()?);
        self.get_bounded(len, max, field)
    }

    /// A `u16`-length-prefixed byte string of at most `max` bytes. The
    /// length is checked against `max` before the bytes are touched.
    pub fn get_bytes_u16len(
        &mut self,
        max: usize,
        field: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.get_u16()?);
        self.get_bounded(len, max, field)
    }

    /// A `u8`-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn get_str_u8len(
        &mut self,
        max: usize,
        field: &'static str,
    ) -> Result<&'a str, DecodeError> {
        let bytes = self.get_bytes_u8len(max, field)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::BadUtf8 { field })
    }

    /// A `u16`-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn get_str_u16len(
        &mut self,
        max: usize,
        field: &'static str,
    ) -> Result<&'a str, DecodeError> {
        let bytes = self.get_bytes_u16len(max, field)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::BadUtf8 { field })
    }

    fn get_bounded(
        &mut self,
        len: usize,
        max: usize,
        field: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        self.get_bytes(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integers_are_big_endian() {
        let mut w = Writer::new();
        w.put_u8(0x01);
        w.put_u16(0x0203);
        w.put_u32(0x0405_0607);
        w.put_u64(0x0809_0a0b_0c0d_0e0f);
        w.put_bool(true);
        let bytes = w.into_vec();
        assert_eq!(hex::encode(&bytes), "0102030405060708090a0b0c0d0e0f01");
        let mut r = Reader::new(&bytes);
        assert_eq!(r.get_u8(), Ok(0x01));
        assert_eq!(r.get_u16(), Ok(0x0203));
        assert_eq!(r.get_u32(), Ok(0x0405_0607));
        assert_eq!(r.get_u64(), Ok(0x0809_0a0b_0c0d_0e0f));
        assert_eq!(r.get_bool("b"), Ok(true));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn length_prefixed() {
        let mut w = Writer::with_capacity(16);
        w.put_bytes_u8len(b"abc").unwrap();
        w.put_bytes_u16len(b"de").unwrap();
        assert_eq!(hex::encode(w.as_slice()), "0361626300026465");
        let bytes = w.into_vec();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.get_str_u8len(3, "a"), Ok("abc"));
        assert_eq!(r.get_bytes_u16len(2, "d"), Ok(&b"de"[..]));
        r.finish().unwrap();
    }

    #[test]
    fn writer_refuses_overlong_fields() {
        let mut w = Writer::new();
        assert_eq!(
            w.put_bytes_u8len(&[0; 256]),
            Err(EncodeError { len: 256, max: 255 })
        );
        assert_eq!(
            w.put_bytes_u16len(&vec![0; 65536]),
            Err(EncodeError {
                len: 65536,
                max: 65535
            })
        );
        assert!(w.is_empty());
        w.put_bytes_u8len(&[0; 255]).unwrap();
        assert_eq!(w.len(), 256);
    }

    #[test]
    fn bound_is_checked_before_slicing() {
        // A length of 200 with only 1 byte behind it: the bound check fires
        // first, so the error names the field rather than truncation.
        let mut r = Reader::new(&[200, 0]);
        assert_eq!(
            r.get_bytes_u8len(10, "name"),
            Err(DecodeError::TooLong {
                field: "name",
                len: 200,
                max: 10
            })
        );
        let mut r = Reader::new(&[0xff, 0xff]);
        assert_eq!(
            r.get_bytes_u16len(100, "blob"),
            Err(DecodeError::TooLong {
                field: "blob",
                len: 65535,
                max: 100
            })
        );
    }

    #[test]
    fn errors() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(
            r.get_u32(),
            Err(DecodeError::Truncated {
                needed: 4,
                remaining: 3
            })
        );
        assert_eq!(r.get_u16(), Ok(0x0102));
        assert_eq!(
            r.clone().finish(),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        assert_eq!(
            r.get_bool("flag"),
            Err(DecodeError::BadValue {
                field: "flag",
                reason: "boolean must be 0 or 1"
            })
        );
        let mut r = Reader::new(&[2, 0xc3, 0x28]);
        assert_eq!(
            r.get_str_u8len(10, "s"),
            Err(DecodeError::BadUtf8 { field: "s" })
        );
        let mut r = Reader::new(&[5, 1, 2]);
        assert_eq!(
            r.get_bytes_u8len(10, "s"),
            Err(DecodeError::Truncated {
                needed: 5,
                remaining: 2
            })
        );
    }

    #[derive(Debug, Clone)]
    enum Item {
        U8(u8),
        U16(u16),
        U32(u32),
        U64(u64),
        Bool(bool),
        Arr([u8; 4]),
        B8(Vec<u8>),
        B16(Vec<u8>),
        S8(String),
    }

    fn item() -> impl Strategy<Value = Item> {
        prop_oneof![
            any::<u8>().prop_map(Item::U8),
            any::<u16>().prop_map(Item::U16),
            any::<u32>().prop_map(Item::U32),
            any::<u64>().prop_map(Item::U64),
            any::<bool>().prop_map(Item::Bool),
            any::<[u8; 4]>().prop_map(Item::Arr),
            proptest::collection::vec(any::<u8>(), 0..=255).prop_map(Item::B8),
            proptest::collection::vec(any::<u8>(), 0..=600).prop_map(Item::B16),
            "\\PC{0,40}".prop_map(Item::S8),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(items in proptest::collection::vec(item(), 0..20)) {
            let mut w = Writer::new();
            for it in &items {
                match it {
                    Item::U8(v) => w.put_u8(*v),
                    Item::U16(v) => w.put_u16(*v),
                    Item::U32(v) => w.put_u32(*v),
                    Item::U64(v) => w.put_u64(*v),
                    Item::Bool(v) => w.put_bool(*v),
                    Item::Arr(v) => w.put_bytes(v),
                    Item::B8(v) => w.put_bytes_u8len(v).unwrap(),
                    Item::B16(v) => w.put_bytes_u16len(v).unwrap(),
                    Item::S8(v) => w.put_bytes_u8len(v.as_bytes()).unwrap(),
                }
            }
            let bytes = w.into_vec();
            let mut r = Reader::new(&bytes);
            for it in &items {
                match it {
                    Item::U8(v) => prop_assert_eq!(r.get_u8()?, *v),
                    Item::U16(v) => prop_assert_eq!(r.get_u16()?, *v),
                    Item::U32(v) => prop_assert_eq!(r.get_u32()?, *v),
                    Item::U64(v) => prop_assert_eq!(r.get_u64()?, *v),
                    Item::Bool(v) => prop_assert_eq!(r.get_bool("b")?, *v),
                    Item::Arr(v) => prop_assert_eq!(&r.get_array::<4>()?, v),
                    Item::B8(v) => prop_assert_eq!(r.get_bytes_u8len(255, "b")?, &v[..]),
                    Item::B16(v) => prop_assert_eq!(r.get_bytes_u16len(600, "b")?, &v[..]),
                    Item::S8(v) => prop_assert_eq!(r.get_str_u8len(255, "s")?, v.as_str()),
                }
            }
            prop_assert_eq!(r.finish(), Ok(()));
        }

        /// Arbitrary bytes and an arbitrary sequence of reads: never a
        /// panic, and a failed read never claims more than was there.
        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                               ops in proptest::collection::vec(0u8..12, 0..40),
                               max in 0usize..300) {
            let mut r = Reader::new(&bytes);
            for op in ops {
                let before = r.remaining();
                let ok = match op {
                    0 => r.get_u8().is_ok(),
                    1 => r.get_u16().is_ok(),
                    2 => r.get_u32().is_ok(),
                    3 => r.get_u64().is_ok(),
                    4 => r.get_bool("b").is_ok(),
                    5 => r.get_array::<32>().is_ok(),
                    6 => r.get_bytes(max).is_ok(),
                    7 => r.get_bytes_u8len(max, "b").is_ok(),
                    8 => r.get_bytes_u16len(max, "b").is_ok(),
                    9 => r.get_str_u8len(max, "s").is_ok(),
                    10 => r.get_str_u16len(max, "s").is_ok(),
                    _ => r.clone().finish().is_ok(),
                };
                prop_assert!(r.remaining() <= before);
                let _ = ok;
            }
        }
    }
}
