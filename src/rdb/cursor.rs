//! Bounds-checked reading of in-memory encoded blobs (ziplist, listpack, intset, zipmap, stream
//! node keys), the element type those blobs decode to, and [`BlobError`], why a blob is
//! malformed. Every accessor returns an error instead of panicking on short or malformed data.

use bytes::Bytes;

pub(crate) type DecodeResult<T> = Result<T, BlobError>;

/// Why an in-memory encoded blob cannot be decoded; the parser reports it as
/// [`super::RdbErrorKind::Corrupt`] at the blob's offset in the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BlobError {
    #[error("truncated: need {need} bytes at {at}")]
    Truncated { need: usize, at: usize },
    #[error("truncated at {0}")]
    TruncatedAt(usize),
    /// A fixed description of the fault.
    #[error("{0}")]
    Malformed(&'static str),
    #[error("bad {what} encoding {byte:#04x}")]
    BadEncoding { what: &'static str, byte: u8 },
    #[error("{what} header counts {header} entries, found {found}")]
    CountMismatch {
        what: &'static str,
        header: u64,
        found: u64,
    },
    /// A fault with numbers in its description (offsets, lengths).
    #[error("{0}")]
    Detail(String),
    /// `source` found inside a whole blob of encoding `what`, `len` bytes long.
    #[error("invalid {what} ({len} bytes): {source}")]
    Invalid {
        what: &'static str,
        len: usize,
        source: Box<BlobError>,
    },
}

impl From<&'static str> for BlobError {
    fn from(m: &'static str) -> Self {
        BlobError::Malformed(m)
    }
}

impl BlobError {
    /// `self`, found inside the whole `blob` of encoding `what`.
    pub(crate) fn within(self, what: &'static str, blob: &[u8]) -> Self {
        BlobError::Invalid {
            what,
            len: blob.len(),
            source: Box::new(self),
        }
    }
}

/// One element of a compact encoding: a byte string or an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem<'a> {
    Str(&'a [u8]),
    Int(i64),
}

impl Elem<'_> {
    /// The element as Redis shows it: integers in decimal.
    pub(crate) fn to_bytes(self) -> Bytes {
        match self {
            Elem::Str(s) => Bytes::copy_from_slice(s),
            Elem::Int(i) => Bytes::copy_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        }
    }

    /// The element as an integer (a string must be a canonical decimal integer).
    pub(crate) fn as_int(self) -> DecodeResult<i64> {
        match self {
            Elem::Int(i) => Ok(i),
            Elem::Str(s) => std::str::from_utf8(s)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or(BlobError::Malformed("expected an integer element")),
        }
    }

    /// The element as a non-negative integer.
    pub(crate) fn as_u64(self) -> DecodeResult<u64> {
        match self {
            Elem::Int(i) if i >= 0 => Ok(i as u64),
            Elem::Int(_) => Err("expected a non-negative integer element".into()),
            Elem::Str(s) => std::str::from_utf8(s)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or(BlobError::Malformed("expected an integer element")),
        }
    }

    /// The element as a score.
    pub(crate) fn as_f64(self) -> DecodeResult<f64> {
        match self {
            Elem::Int(i) => Ok(i as f64),
            Elem::Str(s) => {
                super::reader::parse_f64(s).ok_or(BlobError::Malformed("invalid score element"))
            }
        }
    }
}

/// A position in a byte slice.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(BlobError::Truncated {
                need: n,
                at: self.pos,
            })?;
        let s = self.data.get(self.pos..end).ok_or("truncated")?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn peek(&self) -> DecodeResult<u8> {
        self.data
            .get(self.pos)
            .copied()
            .ok_or(BlobError::TruncatedAt(self.pos))
    }

    pub(crate) fn u16_le(&mut self) -> DecodeResult<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32_le(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64_be(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}
