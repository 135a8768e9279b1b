//! The byte source of the parser: pulls from any [`Read`], counts the offset, keeps the running
//! CRC64 of the file, optionally records the raw bytes of the current value (for `DUMP` payload
//! capture), and decodes RDB's primitive encodings: length encoding, strings (raw, int-encoded,
//! LZF-compressed), binary and textual doubles, millisecond times.

use super::cursor::BlobError;
use std::io::Read;

use bytes::{Bytes, BytesMut};
use crc_fast::{CrcAlgorithm, Digest};

use super::error::{RdbError, RdbErrorKind};

/// The CRC64 variant Redis uses for RDB files and `DUMP` payloads (CRC-64/REDIS: Jones
/// polynomial, reflected). It runs over every byte of the RDB, so it must be fast: `crc-fast`
/// uses carry-less multiplication where the CPU has it (x86-64 `PCLMULQDQ`, AArch64 `PMULL`),
/// tables otherwise. Measured on a `load-rdb` of 100,000 small keys: ~900 instructions per key
/// with the `crc` crate's slice-by-16 tables, ~90 with this (both passes).
pub(crate) struct Crc64;

pub(crate) static CRC64: Crc64 = Crc64;

impl Crc64 {
    /// The CRC64 of `data`.
    pub(crate) fn checksum(&self, data: &[u8]) -> u64 {
        crc_fast::checksum(CrcAlgorithm::Crc64Redis, data)
    }

    /// A running CRC64 (`update`, then `finalize`).
    pub(crate) fn digest(&self) -> Digest {
        Digest::new(CrcAlgorithm::Crc64Redis)
    }
}

/// Largest single string (key, element, encoded blob) held in memory. Redis' own limit
/// (`proto-max-bulk-len`) defaults to 512 MiB; anything beyond this is treated as corrupt.
pub(crate) const MAX_STRING_LEN: u64 = 1 << 32;

/// Reads of untrusted length proceed in pieces of at most this size, so a bogus length fails on
/// EOF before it can cause a large allocation.
const READ_STEP: usize = 64 * 1024;

/// Small reads are hashed in runs of up to this many bytes (see `Source::crc_pending`).
const CRC_BATCH: usize = 1024;

/// Strings up to this long (key names, small values and elements) are read into a shared
/// block ([`Source::read_bytes`]) instead of a buffer of their own.
const SMALL_STRING: u64 = 512;
/// Size of one shared block of small strings.
const ARENA_BLOCK: usize = 32 * 1024;

pub(crate) type Result<T> = std::result::Result<T, RdbError>;

/// An RDB length field: a plain length, or the marker of a specially encoded string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Len {
    Len(u64),
    /// `11xxxxxx`: the six low bits name the string encoding (`RDB_ENC_*`).
    Encoded(u8),
}

/// How a string is stored, as far as its header tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrHead {
    /// `len` raw bytes follow.
    Raw(u64),
    /// An integer stored in binary; its value is the decimal text.
    Int(i64),
    /// LZF-compressed: `clen` bytes follow that inflate to `ulen` bytes.
    Lzf { clen: u64, ulen: u64 },
}

/// Byte source with offset, CRC64 and optional capture of what is read.
pub(crate) struct Source<R> {
    inner: R,
    /// Longest string read whole by [`Self::read_string`] (collection elements, names, code).
    max_element: u64,
    /// Longest encoded blob (ziplist, listpack, intset, zipmap, quicklist node) read whole.
    max_blob: u64,
    offset: u64,
    crc: Digest,
    /// Hashed bytes not yet fed to `crc`: most reads are a few bytes (a type, a length, a short
    /// key), and the table CRC costs ~100 instructions per call on top of its per-byte cost,
    /// so small reads are hashed in [`CRC_BATCH`]-byte runs (measured: the CRC went from 14 %
    /// of a `load-rdb` of small keys to a few).
    crc_pending: Vec<u8>,
    /// `false` in a check-only pass ([`super::RdbParser::check_only`]): raw string values are
    /// read past (hashed, counted) instead of being returned.
    pub(crate) keep_values: bool,
    /// Raw bytes read since capture started; `None` when not capturing.
    capture: Option<Vec<u8>>,
    capture_limit: usize,
    /// The free end of the current shared block of small strings ([`Self::read_bytes`]).
    arena: BytesMut,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R) -> Self {
        Source {
            inner,
            max_element: MAX_STRING_LEN,
            max_blob: MAX_STRING_LEN,
            offset: 0,
            crc: CRC64.digest(),
            crc_pending: Vec::with_capacity(CRC_BATCH),
            keep_values: true,
            capture: None,
            capture_limit: 0,
            arena: BytesMut::new(),
        }
    }

    /// Applies the string limits of `opts` (see [`super::ParseOptions`]).
    pub(crate) fn set_limits(&mut self, opts: &super::ParseOptions) {
        self.max_element = opts.max_element_bytes as u64;
        self.max_blob = opts.max_blob_bytes as u64;
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The error for a string longer than a configured limit.
    pub(crate) fn too_large(&self, what: &str, len: u64, option: &str, limit: u64) -> RdbError {
        self.over_limit(what, len, "bytes", option, limit)
    }

    /// The error for a value holding more `unit`s (e.g. `entries`) than a configured limit.
    pub(crate) fn over_limit(
        &self,
        what: &str,
        len: u64,
        unit: &'static str,
        option: &str,
        limit: u64,
    ) -> RdbError {
        self.err(RdbErrorKind::TooLarge {
            what: what.to_string(),
            len,
            unit,
            option: option.to_string(),
            limit,
        })
    }

    /// CRC64 of everything read so far (excluding bytes read with [`Self::read_unhashed`]).
    pub(crate) fn crc(&self) -> u64 {
        let mut d = self.crc;
        d.update(&self.crc_pending);
        d.finalize()
    }

    /// Feeds `data` to the CRC, batching small pieces (see `crc_pending`).
    fn hash(&mut self, data: &[u8]) {
        // In order: whatever is pending goes before `data`.
        if data.len() >= CRC_BATCH / 2 || self.crc_pending.len() + data.len() > CRC_BATCH {
            self.crc.update(&self.crc_pending);
            self.crc_pending.clear();
        }
        if data.len() >= CRC_BATCH / 2 {
            self.crc.update(data);
        } else {
            self.crc_pending.extend_from_slice(data);
        }
    }

    /// An error at the current offset (the parser adds the key).
    pub(crate) fn err(&self, kind: RdbErrorKind) -> RdbError {
        RdbError {
            offset: self.offset,
            key: None,
            kind,
        }
    }

    pub(crate) fn corrupt(&self, msg: impl std::fmt::Display) -> RdbError {
        self.err(RdbErrorKind::Corrupt(msg.to_string()))
    }

    /// Start recording read bytes, seeded with `prefix`; recording silently stops (and the
    /// buffer is dropped) once it would exceed `limit` bytes.
    pub(crate) fn start_capture(&mut self, prefix: &[u8], limit: usize) {
        if prefix.len() > limit {
            self.capture = None;
            return;
        }
        let mut buf = Vec::with_capacity(prefix.len().max(256).min(limit));
        buf.extend_from_slice(prefix);
        self.capture = Some(buf);
        self.capture_limit = limit;
    }

    /// Whether a capture is still running (it was started and has not overflowed).
    pub(crate) fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    /// Stop recording and return what was captured (None if it overflowed or never started).
    pub(crate) fn take_capture(&mut self) -> Option<Vec<u8>> {
        self.capture.take()
    }

    /// Stop recording and drop the capture.
    pub(crate) fn abandon_capture(&mut self) {
        self.capture = None;
    }

    fn raw_read(&mut self, buf: &mut [u8]) -> Result<()> {
        match self.inner.read_exact(buf) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.err(RdbErrorKind::UnexpectedEof))
            }
            Err(e) => Err(self.err(RdbErrorKind::Io(e))),
        }
    }

    fn account(&mut self, data: &[u8]) {
        self.offset += data.len() as u64;
        self.hash(data);
        if let Some(cap) = &mut self.capture {
            if cap.len() + data.len() > self.capture_limit {
                self.capture = None;
            } else {
                cap.extend_from_slice(data);
            }
        }
    }

    /// Fill `buf` completely.
    pub(crate) fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.raw_read(buf)?;
        self.account(buf);
        Ok(())
    }

    /// Read bytes that are not part of the checksummed content (the trailing CRC itself).
    pub(crate) fn read_unhashed(&mut self, buf: &mut [u8]) -> Result<()> {
        self.raw_read(buf)?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Try to read one byte; `Ok(None)` at a clean end of stream.
    pub(crate) fn try_read_u8(&mut self) -> Result<Option<u8>> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.account(&b);
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err(RdbErrorKind::Io(e))),
            }
        }
    }

    pub(crate) fn read_u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    pub(crate) fn read_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.read_exact(&mut b)?;
        Ok(b)
    }

    /// Read `n` bytes of untrusted length, growing the buffer as data actually arrives.
    pub(crate) fn read_vec(&mut self, n: u64) -> Result<Vec<u8>> {
        if n > MAX_STRING_LEN {
            return Err(self.corrupt(format!("string length {n} exceeds the limit")));
        }
        let n = n as usize;
        let mut out = Vec::with_capacity(n.min(READ_STEP));
        while out.len() < n {
            let step = (n - out.len()).min(READ_STEP);
            let start = out.len();
            out.resize(start + step, 0);
            self.read_exact(&mut out[start..])?;
        }
        Ok(out)
    }

    /// Read `n` bytes as a [`Bytes`]. A small string (most keys, values and elements) is read
    /// into a shared block of [`ARENA_BLOCK`] bytes and handed out as a slice of it: one heap
    /// allocation per block instead of one (plus a shared header when the handle is cloned)
    /// per string. A block is freed when the last slice of it is dropped; in a full sync that
    /// is when its batch was encoded ([`crate::sink::wire`]), so a block is held about as long
    /// as the strings in it.
    pub(crate) fn read_bytes(&mut self, n: u64) -> Result<Bytes> {
        if n > SMALL_STRING {
            return self.read_vec(n).map(Bytes::from);
        }
        let n = n as usize;
        if n == 0 {
            return Ok(Bytes::new());
        }
        let mut arena = std::mem::take(&mut self.arena);
        if arena.capacity() < n {
            arena = BytesMut::with_capacity(ARENA_BLOCK);
        }
        // `arena` is empty here: what was read before was split off.
        arena.resize(n, 0);
        let read = self.read_exact(&mut arena[..]);
        let out = arena.split_to(n).freeze();
        self.arena = arena;
        read.map(|()| out)
    }

    /// Skip `n` bytes (still hashed and captured).
    pub(crate) fn skip(&mut self, n: u64) -> Result<()> {
        if n <= 256 {
            // The common case (a small value in a check-only pass): no 4 KiB buffer to zero.
            let mut buf = [0u8; 256];
            return self.read_exact(&mut buf[..n as usize]);
        }
        let mut buf = [0u8; 4096];
        let mut left = n;
        while left > 0 {
            let step = left.min(buf.len() as u64) as usize;
            self.read_exact(&mut buf[..step])?;
            left -= step as u64;
        }
        Ok(())
    }

    /// An RDB length field (`rdbLoadLen`).
    pub(crate) fn read_len_or_enc(&mut self) -> Result<Len> {
        let first = self.read_u8()?;
        match first >> 6 {
            0 => Ok(Len::Len(u64::from(first & 0x3f))),
            1 => {
                let second = self.read_u8()?;
                Ok(Len::Len((u64::from(first & 0x3f) << 8) | u64::from(second)))
            }
            2 => match first {
                0x80 => Ok(Len::Len(u64::from(u32::from_be_bytes(self.read_array()?)))),
                0x81 => Ok(Len::Len(u64::from_be_bytes(self.read_array()?))),
                other => Err(self.corrupt(format!("invalid length encoding byte {other:#04x}"))),
            },
            _ => Ok(Len::Encoded(first & 0x3f)),
        }
    }

    /// A plain length (an encoded-string marker here is corrupt).
    pub(crate) fn read_len(&mut self) -> Result<u64> {
        match self.read_len_or_enc()? {
            Len::Len(n) => Ok(n),
            Len::Encoded(e) => Err(self.corrupt(format!(
                "expected a length, found string encoding marker {e}"
            ))),
        }
    }

    /// The header of a string: what follows and how long it is.
    pub(crate) fn read_str_head(&mut self) -> Result<StrHead> {
        match self.read_len_or_enc()? {
            Len::Len(n) => Ok(StrHead::Raw(n)),
            Len::Encoded(0) => Ok(StrHead::Int(i64::from(self.read_u8()? as i8))),
            Len::Encoded(1) => Ok(StrHead::Int(i64::from(i16::from_le_bytes(
                self.read_array()?,
            )))),
            Len::Encoded(2) => Ok(StrHead::Int(i64::from(i32::from_le_bytes(
                self.read_array()?,
            )))),
            Len::Encoded(3) => {
                let clen = self.read_len()?;
                let ulen = self.read_len()?;
                Ok(StrHead::Lzf { clen, ulen })
            }
            Len::Encoded(e) => Err(self.corrupt(format!("unknown string encoding {e}"))),
        }
    }

    /// Read and inflate an LZF string whose header was just read.
    pub(crate) fn read_lzf(&mut self, clen: u64, ulen: u64) -> Result<Vec<u8>> {
        if ulen > MAX_STRING_LEN {
            return Err(self.corrupt(format!("LZF length {ulen} exceeds the limit")));
        }
        let compressed = self.read_vec(clen)?;
        decompress_lzf(&compressed, ulen).map_err(|m| self.corrupt(m))
    }

    /// A whole string (`rdbGenericLoadStringObject`), integers rendered in decimal: a
    /// collection element, a consumer name, … at most `max_element_bytes` long.
    pub(crate) fn read_string(&mut self) -> Result<Bytes> {
        let max = self.max_element;
        self.read_string_limited("string", "max_element_bytes", max)
    }

    /// An encoded blob (ziplist, listpack, …), at most `max_blob_bytes` long.
    pub(crate) fn read_string_vec(&mut self) -> Result<Vec<u8>> {
        let head = self.read_str_head()?;
        let max = self.max_blob;
        self.read_head_limited(
            head,
            "encoded value (ziplist/listpack/intset)",
            "max_blob_bytes",
            max,
        )
    }

    /// A whole string of at most `limit` bytes; a longer one is an error naming `what` and the
    /// option (`option`) that sets the limit, before anything is read or allocated.
    pub(crate) fn read_string_limited(
        &mut self,
        what: &str,
        option: &str,
        limit: u64,
    ) -> Result<Bytes> {
        let head = self.read_str_head()?;
        self.read_head_bytes(head, what, option, limit)
    }

    /// The bytes of a string whose header was read.
    pub(crate) fn read_head_limited(
        &mut self,
        head: StrHead,
        what: &str,
        option: &str,
        limit: u64,
    ) -> Result<Vec<u8>> {
        match head {
            StrHead::Raw(n) if n > limit => Err(self.too_large(what, n, option, limit)),
            StrHead::Lzf { ulen, .. } if ulen > limit => {
                Err(self.too_large(what, ulen, option, limit))
            }
            StrHead::Raw(n) => self.read_vec(n),
            StrHead::Int(v) => Ok(itoa::Buffer::new().format(v).as_bytes().to_vec()),
            StrHead::Lzf { clen, ulen } => self.read_lzf(clen, ulen),
        }
    }

    /// [`Self::read_head_limited`] as [`Bytes`]: a small raw string is a slice of a shared
    /// block ([`Self::read_bytes`]).
    pub(crate) fn read_head_bytes(
        &mut self,
        head: StrHead,
        what: &str,
        option: &str,
        limit: u64,
    ) -> Result<Bytes> {
        match head {
            StrHead::Raw(n) if n <= limit => self.read_bytes(n),
            _ => self
                .read_head_limited(head, what, option, limit)
                .map(Bytes::from),
        }
    }

    /// Skips the bytes of a string whose header was read.
    pub(crate) fn skip_head(&mut self, head: StrHead) -> Result<()> {
        match head {
            StrHead::Raw(n) => self.skip(n),
            StrHead::Int(_) => Ok(()),
            StrHead::Lzf { clen, .. } => self.skip(clen),
        }
    }

    /// Skip one string, whatever its encoding.
    pub(crate) fn skip_string(&mut self) -> Result<()> {
        let head = self.read_str_head()?;
        self.skip_head(head)
    }

    /// 8-byte little-endian IEEE double (`rdbLoadBinaryDoubleValue`).
    pub(crate) fn read_binary_double(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.read_array()?))
    }

    /// Old textual double: a length byte (253 NaN, 254 +inf, 255 -inf) then ASCII.
    pub(crate) fn read_text_double(&mut self) -> Result<f64> {
        let len = self.read_u8()?;
        match len {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => {
                let mut buf = [0u8; 252];
                let slot = buf.get_mut(..usize::from(n)).unwrap_or(&mut []);
                self.read_exact(slot)?;
                parse_f64(slot).ok_or_else(|| self.corrupt("invalid textual double"))
            }
        }
    }

    /// 8-byte little-endian signed milliseconds (`rdbLoadMillisecondTime`).
    pub(crate) fn read_ms(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.read_array()?))
    }
}

/// Parse a double as Redis writes it (`%.17g`, `inf`, `-inf`, `nan`).
pub(crate) fn parse_f64(s: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(s).ok()?;
    s.trim().parse::<f64>().ok()
}

/// The first (up to) `n` bytes LZF data inflates to, from a prefix of it: what can be decoded
/// before the data ends or turns invalid (for naming a value too large to inflate whole).
pub(crate) fn lzf_prefix(compressed: &[u8], n: usize) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n {
        let Some(&ctrl) = compressed.get(i) else {
            break;
        };
        i += 1;
        if ctrl < 32 {
            let run = usize::from(ctrl) + 1;
            let Some(lit) = compressed.get(i..i + run) else {
                break;
            };
            out.extend_from_slice(lit);
            i += run;
        } else {
            let mut len = usize::from(ctrl >> 5);
            if len == 7 {
                let Some(&extra) = compressed.get(i) else {
                    break;
                };
                len += usize::from(extra);
                i += 1;
            }
            let Some(&low) = compressed.get(i) else {
                break;
            };
            i += 1;
            let back = (usize::from(ctrl & 0x1f) << 8) + usize::from(low) + 1;
            let Some(mut from) = out.len().checked_sub(back) else {
                break;
            };
            for _ in 0..len + 2 {
                let b = out[from];
                out.push(b);
                from += 1;
            }
        }
    }
    out.truncate(n);
    out
}

/// Inflate LZF data that must expand to exactly `ulen` bytes.
pub(crate) fn decompress_lzf(compressed: &[u8], ulen: u64) -> super::cursor::DecodeResult<Vec<u8>> {
    // LZF cannot expand more than ~132x (a 2-byte back reference copies at most 264 bytes); a
    // larger claim is corrupt and must not drive the allocation below.
    if ulen
        > (compressed.len() as u64)
            .saturating_mul(140)
            .saturating_add(64)
    {
        return Err(BlobError::Detail(format!(
            "LZF length {ulen} impossible for {} compressed bytes",
            compressed.len()
        )));
    }
    if ulen == 0 {
        return if compressed.is_empty() {
            Ok(Vec::new())
        } else {
            Err("LZF data for an empty string".into())
        };
    }
    let out = lzf::decompress(compressed, ulen as usize)
        .map_err(|e| BlobError::Detail(format!("LZF decompression failed: {e:?}")))?;
    if out.len() as u64 != ulen {
        return Err(BlobError::Detail(format!(
            "LZF data inflated to {} bytes, header says {ulen}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(b: &[u8]) -> Source<&[u8]> {
        Source::new(b)
    }

    #[test]
    fn lzf_prefix_matches_the_whole_inflation() {
        let data: Vec<u8> = b"big\nkey:"
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'x', 500))
            .collect();
        let c = lzf::compress(&data).expect("compressible");
        for n in [0, 1, 9, 64, 200, 509, 600] {
            let want = &data[..n.min(data.len())];
            assert_eq!(lzf_prefix(&c, n), want, "n = {n}");
            // A prefix of the compressed bytes gives a prefix of the output.
            let p = lzf_prefix(&c[..c.len().min(80)], n);
            assert_eq!(p, &data[..p.len()]);
        }
        assert!(
            lzf_prefix(&[0x20, 0x00], 8).is_empty(),
            "back reference before any output"
        );
    }

    #[test]
    fn lengths() {
        assert_eq!(src(&[0x05]).read_len().ok(), Some(5));
        assert_eq!(src(&[0x41, 0x02]).read_len().ok(), Some(0x102));
        assert_eq!(src(&[0x80, 0, 1, 0, 0]).read_len().ok(), Some(0x10000));
        assert_eq!(
            src(&[0x81, 0, 0, 0, 1, 0, 0, 0, 0]).read_len().ok(),
            Some(1 << 32)
        );
        assert!(src(&[0x82]).read_len().is_err());
        assert!(src(&[0xc0]).read_len().is_err());
        assert!(src(&[0x41]).read_len().is_err());
    }

    #[test]
    fn int_strings() {
        assert_eq!(&src(&[0xc0, 0xff]).read_string().unwrap()[..], b"-1");
        assert_eq!(
            &src(&[0xc1, 0x39, 0x30]).read_string().unwrap()[..],
            b"12345"
        );
        assert_eq!(
            &src(&[0xc2, 0xff, 0xff, 0xff, 0x7f]).read_string().unwrap()[..],
            b"2147483647"
        );
        assert_eq!(
            &src(&[0x03, b'a', b'b', b'c']).read_string().unwrap()[..],
            b"abc"
        );
        assert!(src(&[0xc4]).read_string().is_err());
    }

    #[test]
    fn lzf_strings() {
        let plain = [b'a'; 60];
        let comp = lzf::compress(&plain).unwrap();
        let mut buf = vec![0xc3, comp.len() as u8, plain.len() as u8];
        buf.extend_from_slice(&comp);
        assert_eq!(&src(&buf).read_string().unwrap()[..], &plain[..]);
        // Wrong uncompressed length.
        let mut bad = vec![0xc3, comp.len() as u8, plain.len() as u8 - 1];
        bad.extend_from_slice(&comp);
        assert!(src(&bad).read_string().is_err());
        // Absurd uncompressed length is refused before allocating.
        let mut huge = vec![0xc3, comp.len() as u8, 0x81, 0, 0, 0, 0x10, 0, 0, 0, 0];
        huge.extend_from_slice(&comp);
        assert!(src(&huge).read_string().is_err());
    }

    #[test]
    fn doubles_and_crc() {
        assert_eq!(src(&[3, b'1', b'.', b'5']).read_text_double().unwrap(), 1.5);
        assert!(src(&[253]).read_text_double().unwrap().is_nan());
        assert_eq!(src(&[254]).read_text_double().unwrap(), f64::INFINITY);
        assert_eq!(
            src(&2.5f64.to_le_bytes()).read_binary_double().unwrap(),
            2.5
        );
        // The catalogue's check value for CRC-64/REDIS.
        let mut s = src(b"123456789");
        s.skip(9).unwrap();
        assert_eq!(s.crc(), 0xe9c6d914c4b8d9ca);
        assert_eq!(s.offset(), 9);
    }

    #[test]
    fn crc_of_batched_small_and_large_reads_is_the_crc_of_the_bytes() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut s = src(&data);
        let mut at = 0usize;
        // Reads below, around and above the batch size, large ones right after small ones.
        let sizes = [
            3usize, 600, 5, 1000, 2, 513, 511, 4000, 1, 1, 700, 10, 300, 900,
        ];
        for n in sizes.into_iter().chain((1..3000).step_by(97)) {
            let n = n.min(data.len() - at);
            s.skip(n as u64).unwrap();
            at += n;
            assert_eq!(s.crc(), CRC64.checksum(&data[..at]), "after {at} bytes");
        }
        assert_eq!(s.offset(), at as u64);
    }

    /// `crc-fast` (SIMD) against the `crc` crate's table implementation of the same catalogue
    /// entry, on every length up to 600 (the SIMD code has separate paths for short inputs,
    /// 16/32/64/128/256-byte blocks and tails) and on larger ones, whole and split in two.
    #[test]
    fn simd_crc64_equals_the_table_crc64() {
        let table = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let lens = (0..600).chain([1023, 1024, 1025, 4096, 65_537, 70_000]);
        for n in lens {
            let d = &data[data.len() - n..];
            assert_eq!(CRC64.checksum(d), table.checksum(d), "length {n}");
            let mut dg = CRC64.digest();
            let (a, b) = d.split_at(n / 3);
            dg.update(a);
            dg.update(b);
            assert_eq!(dg.finalize(), table.checksum(d), "length {n} in two parts");
        }
    }

    #[test]
    fn huge_length_fails_on_eof_not_alloc() {
        let mut s = src(&[0x81, 0, 0, 0, 0, 0xff, 0, 0, 0, 1, 2]);
        assert!(s.read_string().is_err());
    }
}
