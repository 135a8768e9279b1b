//! `DUMP` / `RESTORE` payloads: verification of the footer (RDB version and CRC64) and decoding
//! of the single value inside with the same value decoder as the file parser.

use super::ParseOptions;
use super::error::{RdbError, RdbErrorKind};
use super::parser::{DUMP_FOOTER, MAX_REDIS_VERSION, VALKEY_VERSIONS};
use super::reader::{CRC64, Source};
use super::types::{Chunk, Flavor, ValueKind};
use super::value::{ValueDecoder, chunk_elements, layout_of};

/// One value decoded from a `DUMP` payload.
#[derive(Clone, Debug, PartialEq)]
pub struct DumpValue {
    /// The RDB type byte of the payload (numbering of `flavor`).
    pub rdb_type: u8,
    pub kind: ValueKind,
    /// RDB version from the footer.
    pub version: u16,
    /// Flavor implied by the version (80+ is Valkey's numbering).
    pub flavor: Flavor,
    /// The value's chunks, as [`super::RdbParser`] would emit them (empty for modules).
    pub chunks: Vec<Chunk>,
}

fn err(offset: usize, kind: RdbErrorKind) -> RdbError {
    RdbError {
        offset: offset as u64,
        key: None,
        kind,
    }
}

/// Decode a `DUMP` payload (type byte, value, 2-byte LE RDB version, 8-byte LE CRC64) into the
/// chunks of its value, all at once. A zero CRC is accepted (Redis writes it when checksums are
/// disabled). For large payloads use [`DumpReader`], which holds one chunk at a time.
pub fn parse_dump_payload(payload: &[u8], opts: &ParseOptions) -> Result<DumpValue, RdbError> {
    let mut r = DumpReader::new(payload, opts)?;
    let mut chunks = Vec::new();
    while r.next_chunks(&mut chunks)? {}
    Ok(DumpValue {
        rdb_type: r.rdb_type,
        kind: r.kind,
        version: r.version,
        flavor: r.flavor,
        chunks,
    })
}

/// Checks a `DUMP` payload whole (footer, CRC, and every element, dropping them as they are
/// decoded: memory stays at one chunk), so that a consumer of [`DumpReader`] never acts on the
/// first part of a payload whose end is corrupt.
pub fn validate_dump_payload(payload: &[u8], opts: &ParseOptions) -> Result<(), RdbError> {
    let mut r = DumpReader::new(payload, opts)?;
    let mut chunks = Vec::new();
    while r.next_chunks(&mut chunks)? {
        chunks.clear();
    }
    Ok(())
}

/// Streaming decoder of one `DUMP` payload: the footer is checked up front, then each call of
/// [`DumpReader::next_chunks`] decodes about one chunk of the value.
pub struct DumpReader<'a> {
    pub rdb_type: u8,
    pub kind: ValueKind,
    pub version: u16,
    pub flavor: Flavor,
    src: Source<&'a [u8]>,
    dec: ValueDecoder,
    opts: ParseOptions,
    elements: usize,
    total: usize,
}

impl<'a> DumpReader<'a> {
    /// Checks the footer (version, CRC64) and the type byte.
    pub fn new(payload: &'a [u8], opts: &ParseOptions) -> Result<DumpReader<'a>, RdbError> {
        let n = payload.len();
        if n < DUMP_FOOTER + 1 {
            return Err(err(n, RdbErrorKind::UnexpectedEof));
        }
        let body_end = n - DUMP_FOOTER;
        let (body_and_ver, crc_bytes) = payload.split_at(n - 8);
        let (body, ver_bytes) = body_and_ver.split_at(body_end);
        let version = u16::from_le_bytes([
            ver_bytes.first().copied().unwrap_or(0),
            ver_bytes.get(1).copied().unwrap_or(0),
        ]);
        let mut crc_arr = [0u8; 8];
        crc_arr.copy_from_slice(crc_bytes);
        let expected = u64::from_le_bytes(crc_arr);
        let computed = CRC64.checksum(body_and_ver);
        if expected != 0 && expected != computed {
            return Err(err(n - 8, RdbErrorKind::Checksum { expected, computed }));
        }
        let v = u32::from(version);
        let flavor = if VALKEY_VERSIONS.contains(&v) {
            Flavor::Valkey
        } else if (1..=MAX_REDIS_VERSION).contains(&v) {
            Flavor::Redis
        } else {
            return Err(err(body_end, RdbErrorKind::UnsupportedVersion(v)));
        };
        let rdb_type = body.first().copied().unwrap_or(0);
        let (layout, kind) = layout_of(flavor, rdb_type)
            .ok_or_else(|| err(0, RdbErrorKind::UnknownType(rdb_type)))?;
        let mut src = Source::new(body.get(1..).unwrap_or(&[]));
        src.set_limits(opts);
        Ok(DumpReader {
            rdb_type,
            kind,
            version,
            flavor,
            src,
            dec: ValueDecoder::new(layout),
            opts: opts.clone(),
            elements: 0,
            total: n,
        })
    }

    /// Appends the next chunk(s) of the value to `out`; `Ok(false)` once the value is complete
    /// (trailing bytes and an empty collection are errors).
    pub fn next_chunks(&mut self, out: &mut Vec<Chunk>) -> Result<bool, RdbError> {
        let fix = |mut e: RdbError| {
            e.offset += 1;
            e
        };
        if !self.dec.is_done() {
            let before = out.len();
            self.dec.step(&mut self.src, &self.opts, out).map_err(fix)?;
            self.elements += out[before..].iter().map(chunk_elements).sum::<usize>();
            return Ok(true);
        }
        if self.src.try_read_u8().map_err(fix)?.is_some() {
            return Err(fix(self
                .src
                .corrupt("trailing bytes after the value in DUMP payload")));
        }
        let collection = matches!(
            self.kind,
            ValueKind::List | ValueKind::Set | ValueKind::ZSet | ValueKind::Hash
        );
        if collection && self.elements == 0 {
            return Err(err(self.total, RdbErrorKind::EmptyKey));
        }
        Ok(false)
    }
}
