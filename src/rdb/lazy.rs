//! Bounded decoding of an encoded blob (ziplist, listpack, intset): the blob is validated whole
//! once without allocating per element, then its elements are handed out a few at a time from a
//! resumable position. Peak memory is the blob itself plus one chunk of decoded elements, instead
//! of every element decoded at once (tens of bytes per element for a blob of 1-byte integers).

use bytes::Bytes;

use super::cursor::{BlobError, DecodeResult, Elem};
use super::{intset, listpack, ziplist};

/// The encoding of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Ziplist,
    Listpack,
    Intset,
}

/// A validated blob and the position of its next element.
#[derive(Debug)]
pub(crate) struct BlobElems {
    blob: Vec<u8>,
    format: Format,
    pos: usize,
    left: u64,
}

impl BlobElems {
    /// Validates `blob` as a whole (structure, counts, back-links).
    pub(crate) fn new(blob: Vec<u8>, format: Format) -> DecodeResult<BlobElems> {
        let (count, pos) = match format {
            Format::Ziplist => (ziplist::walk(&blob, |_| {})?, ziplist::FIRST),
            Format::Listpack => (listpack::walk(&blob, |_| {})?, listpack::FIRST),
            Format::Intset => (intset::walk(&blob, |_| {})?, intset::FIRST),
        };
        Ok(BlobElems {
            blob,
            format,
            pos,
            left: count,
        })
    }

    /// Elements not handed out yet.
    pub(crate) fn left(&self) -> u64 {
        self.left
    }

    /// Where the next element starts, to read again from there with [`Self::elem_at`].
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The element at `pos` (a [`Self::position`] seen earlier) and where the one after it
    /// starts; the blob was validated whole, so this re-reads without allocating.
    pub(crate) fn elem_at(&self, pos: usize) -> DecodeResult<(Elem<'_>, usize)> {
        elem_in(&self.blob, self.format, pos)
    }

    /// The next element, `None` after the last.
    pub(crate) fn next_elem(&mut self) -> DecodeResult<Option<Elem<'_>>> {
        if self.left == 0 {
            return Ok(None);
        }
        let (elem, next) = elem_in(&self.blob, self.format, self.pos)?;
        self.left -= 1;
        self.pos = next;
        Ok(Some(elem))
    }

    /// The next element as bytes (integers in decimal).
    pub(crate) fn next_bytes(&mut self) -> DecodeResult<Bytes> {
        self.next_elem()?
            .map(Elem::to_bytes)
            .ok_or(BlobError::Malformed("encoded value ends inside an entry"))
    }
}

/// The element of `blob` (in `format`) at `pos`, and where the next one starts.
fn elem_in(blob: &[u8], format: Format, pos: usize) -> DecodeResult<(Elem<'_>, usize)> {
    match format {
        Format::Ziplist => ziplist::at(blob, pos),
        Format::Listpack => listpack::at(blob, pos),
        Format::Intset => {
            let (v, next) = intset::at(blob, pos)?;
            Ok((Elem::Int(v), next))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_every_element_of_each_format() {
        let lp = listpack::build(&[listpack::entry(&[0x05]), listpack::str_entry(b"abc")]);
        let mut e = BlobElems::new(lp, Format::Listpack).unwrap();
        assert_eq!(e.left(), 2);
        assert_eq!(&e.next_bytes().unwrap()[..], b"5");
        assert_eq!(&e.next_bytes().unwrap()[..], b"abc");
        assert_eq!(e.next_elem().unwrap(), None);
        let zl = ziplist::build(&[vec![0x03, b'a', b'b', b'c'], vec![0xfe, 0x80]]);
        let mut e = BlobElems::new(zl, Format::Ziplist).unwrap();
        assert_eq!(&e.next_bytes().unwrap()[..], b"abc");
        assert_eq!(&e.next_bytes().unwrap()[..], b"-128");
        assert!(e.next_bytes().is_err());
        let mut is = 2u32.to_le_bytes().to_vec();
        is.extend_from_slice(&2u32.to_le_bytes());
        is.extend_from_slice(&(-5i16).to_le_bytes());
        is.extend_from_slice(&300i16.to_le_bytes());
        let mut e = BlobElems::new(is, Format::Intset).unwrap();
        assert_eq!(&e.next_bytes().unwrap()[..], b"-5");
        assert_eq!(&e.next_bytes().unwrap()[..], b"300");
        assert_eq!(e.left(), 0);
        // Corrupt blobs fail before anything is handed out.
        assert!(BlobElems::new(vec![1, 2, 3], Format::Listpack).is_err());
    }
}
