//! The top-level RDB stream parser: magic and version, opcodes (AUX, SELECTDB, RESIZEDB, expiry,
//! IDLE/FREQ, MODULE_AUX, functions, SLOT_INFO, EOF with CRC64 check), key framing
//! (`KeyStart`, chunks, `KeyEnd`) and `DUMP`-payload capture with bounded buffering.

use std::collections::VecDeque;
use std::io::{BufReader, Read};

use bytes::Bytes;

use super::error::{RdbError, RdbErrorKind};
use super::reader::{CRC64, Result, Source, StrHead};
use super::types::{Chunk, Flavor, Item, KeyHeader, ValueKind};
use super::value::{Layout, ValueDecoder, chunk_bytes, chunk_elements, layout_of};
use super::{ParseOptions, module};

/// Redis Enterprise's RAM LRU hint (a length), found in some RDBs it writes.
const OPCODE_RAM_LRU: u8 = 107;
const OPCODE_SLOT_INFO: u8 = 244;
/// Bytes of a key name over `max_key_bytes` that its error shows.
const KEY_PREFIX_SHOWN: u64 = 64;
const OPCODE_FUNCTION2: u8 = 245;
const OPCODE_FUNCTION_PRE_GA: u8 = 246;
const OPCODE_MODULE_AUX: u8 = 247;
const OPCODE_IDLE: u8 = 248;
const OPCODE_FREQ: u8 = 249;
const OPCODE_AUX: u8 = 250;
const OPCODE_RESIZEDB: u8 = 251;
const OPCODE_EXPIRETIME_MS: u8 = 252;
const OPCODE_EXPIRETIME: u8 = 253;
const OPCODE_SELECTDB: u8 = 254;
const OPCODE_EOF: u8 = 255;

/// Newest Redis RDB version accepted. 13 (Redis 8.6) and 14 (8.8) only add types and opcodes
/// (stream IDMP, key metadata, arrays, …) which are reported as unknown when met; the layouts of
/// every type decoded here are unchanged.
pub(crate) const MAX_REDIS_VERSION: u32 = 14;
/// Valkey RDB versions accepted (`VALKEY080` = Valkey 9.x).
pub(crate) const VALKEY_VERSIONS: std::ops::RangeInclusive<u32> = 80..=80;

/// Size of the `DUMP` payload footer: 2-byte version + 8-byte CRC64.
pub(crate) const DUMP_FOOTER: usize = 10;

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Magic,
    Body,
    Value,
    Finished,
    Failed,
}

/// The key being read.
struct KeyCtx {
    header: Option<KeyHeader>,
    name: Bytes,
    kind: ValueKind,
    decoder: ValueDecoder,
    /// Chunks held back while the value is being captured; `None` when not capturing.
    held: Option<Vec<Chunk>>,
    held_bytes: usize,
    elements: u64,
}

/// Streaming RDB parser: see the [module documentation](super).
pub struct RdbParser<R: Read> {
    pub(super) src: Source<BufReader<R>>,
    pub(super) opts: ParseOptions,
    header: Option<(Flavor, u32)>,
    phase: Phase,
    pub(super) db: u32,
    out: VecDeque<Item>,
    pub(super) expire_ms: Option<i64>,
    pub(super) idle_secs: Option<u64>,
    pub(super) freq: Option<u8>,
    key: Option<KeyCtx>,
    scratch: Vec<Chunk>,
    /// A validation walk's counts ([`RdbParser::check_all`]); `None` otherwise.
    pub(super) walk: Option<super::walk::Walked>,
}

/// Parse `REDIS0011` / `VALKEY080` magic.
fn parse_magic(m: &[u8; 9]) -> std::result::Result<(Flavor, u32), RdbErrorKind> {
    let (flavor, digits): (Flavor, &[u8]) = if let Some(d) = m.strip_prefix(b"REDIS") {
        (Flavor::Redis, d)
    } else if let Some(d) = m.strip_prefix(b"VALKEY") {
        (Flavor::Valkey, d)
    } else {
        return Err(RdbErrorKind::BadMagic(m.to_vec()));
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(RdbErrorKind::BadMagic(m.to_vec()));
    }
    let version = digits
        .iter()
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    let ok = match flavor {
        Flavor::Redis => (1..=MAX_REDIS_VERSION).contains(&version),
        Flavor::Valkey => VALKEY_VERSIONS.contains(&version),
    };
    if ok {
        Ok((flavor, version))
    } else {
        Err(RdbErrorKind::UnsupportedVersion(version))
    }
}

impl<R: Read> RdbParser<R> {
    pub fn new(reader: R, opts: ParseOptions) -> Self {
        let mut src = Source::new(BufReader::with_capacity(64 * 1024, reader));
        src.set_limits(&opts);
        RdbParser {
            src,
            opts,
            header: None,
            phase: Phase::Magic,
            db: 0,
            out: VecDeque::new(),
            expire_ms: None,
            idle_secs: None,
            freq: None,
            key: None,
            scratch: Vec::new(),
            walk: None,
        }
    }

    /// A check-only parser (a validation pass): everything is parsed and checked as usual
    /// (structure, encodings, limits, CRC64), but the value of a plain string key is read past
    /// and comes out as one empty [`Chunk::StringPart`] instead of its bytes.
    pub fn check_only(mut self) -> Self {
        self.src.keep_values = false;
        self
    }

    /// Bytes consumed from the reader so far.
    pub fn bytes_read(&self) -> u64 {
        self.src.offset()
    }

    /// Flavor and version from the magic, once read.
    pub fn header(&self) -> Option<(Flavor, u32)> {
        self.header
    }

    /// The next item; `Ok(None)` after [`Item::End`].
    ///
    /// Errors are final, except [`RdbErrorKind::EmptyKey`]: such a key has been skipped whole
    /// (nothing of it was emitted) and calling again continues with the next one.
    pub fn next_item(&mut self) -> std::result::Result<Option<Item>, RdbError> {
        loop {
            if let Some(item) = self.out.pop_front() {
                return Ok(Some(item));
            }
            match self.phase {
                Phase::Finished => return Ok(None),
                Phase::Failed => {
                    return Err(self.src.corrupt("parser stopped after an earlier error"));
                }
                _ => {}
            }
            if let Err(mut e) = self.advance() {
                if e.key.is_none() {
                    e.key = self.key.as_ref().map(|k| k.name.clone());
                }
                if matches!(e.kind, RdbErrorKind::EmptyKey) {
                    self.key = None;
                    self.phase = Phase::Body;
                } else {
                    self.phase = Phase::Failed;
                    self.key = None;
                    self.out.clear();
                }
                return Err(e);
            }
        }
    }

    fn advance(&mut self) -> Result<()> {
        match self.phase {
            Phase::Magic => {
                let m: [u8; 9] = self.src.read_array()?;
                let (flavor, version) = parse_magic(&m).map_err(|k| self.src.err(k))?;
                self.header = Some((flavor, version));
                self.out.push_back(Item::Header { flavor, version });
                self.phase = Phase::Body;
                Ok(())
            }
            Phase::Body => self.read_opcode(),
            Phase::Value => self.step_value(),
            Phase::Finished | Phase::Failed => Ok(()),
        }
    }

    fn flavor_version(&self) -> (Flavor, u32) {
        self.header.unwrap_or((Flavor::Redis, 0))
    }

    fn read_opcode(&mut self) -> Result<()> {
        let t = self.src.read_u8()?;
        let (flavor, version) = self.flavor_version();
        match t {
            OPCODE_EOF => {
                let checksum = if version >= 5 {
                    let computed = self.src.crc();
                    let mut b = [0u8; 8];
                    self.src.read_unhashed(&mut b)?;
                    let expected = u64::from_le_bytes(b);
                    if expected != 0 && expected != computed {
                        return Err(self.src.err(RdbErrorKind::Checksum { expected, computed }));
                    }
                    (expected != 0).then_some(expected)
                } else {
                    None
                };
                self.out.push_back(Item::End { checksum });
                self.phase = Phase::Finished;
            }
            OPCODE_SELECTDB => {
                let db = self.src.read_len()?;
                self.db = u32::try_from(db)
                    .map_err(|_| self.src.corrupt(format!("database number {db} too large")))?;
                self.out.push_back(Item::SelectDb(self.db));
            }
            OPCODE_EXPIRETIME => {
                let secs = i32::from_le_bytes(self.src.read_array()?);
                self.expire_ms = Some(i64::from(secs) * 1000);
            }
            OPCODE_EXPIRETIME_MS => self.expire_ms = Some(self.src.read_ms()?),
            OPCODE_RESIZEDB => {
                let db_size = self.src.read_len()?;
                let expires_size = self.src.read_len()?;
                self.out.push_back(Item::ResizeDb {
                    db_size,
                    expires_size,
                });
            }
            OPCODE_AUX => {
                let max = self.opts.max_aux_bytes as u64;
                let key = self
                    .src
                    .read_string_limited("AUX field name", "max_aux_bytes", max)?;
                let head = self.src.read_str_head()?;
                let len = match head {
                    StrHead::Raw(n) | StrHead::Lzf { ulen: n, .. } => n,
                    StrHead::Int(_) => 0,
                };
                if len > max {
                    // Informational only: skipped in bounded steps, never held.
                    self.src.skip_head(head)?;
                    self.out.push_back(Item::AuxSkipped { key, len });
                } else {
                    let value =
                        self.src
                            .read_head_limited(head, "AUX value", "max_aux_bytes", max)?;
                    self.out.push_back(Item::Aux {
                        key,
                        value: Bytes::from(value),
                    });
                }
            }
            OPCODE_FREQ => self.freq = Some(self.src.read_u8()?),
            OPCODE_IDLE => self.idle_secs = Some(self.src.read_len()?),
            OPCODE_MODULE_AUX => {
                let module_id = self.src.read_len()?;
                let when_opcode = self.src.read_len()?;
                if when_opcode != 2 {
                    return Err(self.src.corrupt(format!(
                        "module AUX of {} has bad when-opcode {when_opcode}",
                        module::module_name(module_id)
                    )));
                }
                self.src.read_len()?;
                module::skip_fields(&mut self.src)?;
                self.out.push_back(Item::ModuleAux { module_id });
            }
            OPCODE_FUNCTION2 => {
                let max = self.opts.max_element_bytes as u64;
                let code = self.src.read_string_limited(
                    "function library code",
                    "max_element_bytes",
                    max,
                )?;
                self.out.push_back(Item::Function { code });
            }
            OPCODE_FUNCTION_PRE_GA => {
                // Redis 7.0 RC1/RC2 only; Redis itself refuses to load it.
                return Err(self.src.err(RdbErrorKind::Unsupported(
                    "pre-release (Redis 7.0 RC) function format".into(),
                )));
            }
            OPCODE_RAM_LRU if flavor == Flavor::Redis => {
                // Redis Enterprise: an LRU hint before a key, like IDLE.
                self.src.read_len()?;
            }
            OPCODE_SLOT_INFO => {
                let slot = self.src.read_len()?;
                let slot_size = self.src.read_len()?;
                let expires_slot_size = self.src.read_len()?;
                self.out.push_back(Item::SlotInfo {
                    slot,
                    slot_size,
                    expires_slot_size,
                });
            }
            t => {
                if t == 6 {
                    return Err(self.src.err(RdbErrorKind::Unsupported(
                        "pre-release (Redis 4.0 RC) module value format, type 6".into(),
                    )));
                }
                let (layout, kind) = layout_of(flavor, t)
                    .ok_or_else(|| self.src.err(RdbErrorKind::UnknownType(t)))?;
                self.start_key(t, layout, kind)?;
            }
        }
        Ok(())
    }

    /// Whether a key of `layout`/`kind` is captured as a `DUMP` payload.
    fn captures(&self, layout: Layout, kind: ValueKind) -> bool {
        let wanted = kind != ValueKind::String || self.opts.capture_strings;
        layout == Layout::Module || (self.opts.capture_dump_max > DUMP_FOOTER && wanted)
    }

    fn start_key(&mut self, t: u8, layout: Layout, kind: ValueKind) -> Result<()> {
        let max = self.opts.max_key_bytes as u64;
        let head = self.src.read_str_head()?;
        if layout == Layout::String
            && self.walk.is_some()
            && !self.captures(layout, kind)
            && self.walk_string_key(head)?
        {
            return Ok(());
        }
        let over = match head {
            StrHead::Raw(n) if n > max => Some((n, None)),
            StrHead::Lzf { clen, ulen } if ulen > max => Some((ulen, Some(clen))),
            _ => None,
        };
        if let Some((n, compressed)) = over {
            // Named by its first bytes (the whole name is over the limit by definition); an LZF
            // name is inflated only that far, from a bounded read.
            let mut err = self.src.too_large("key name", n, "max_key_bytes", max);
            let prefix = match compressed {
                None => self.src.read_vec(n.min(KEY_PREFIX_SHOWN)).ok(),
                Some(clen) => self
                    .src
                    .read_vec(clen.min(2 * KEY_PREFIX_SHOWN))
                    .ok()
                    .map(|c| super::reader::lzf_prefix(&c, KEY_PREFIX_SHOWN as usize)),
            };
            if let (Some(prefix), RdbErrorKind::TooLarge { what, .. }) = (prefix, &mut err.kind) {
                *what = format!("key name {}…", crate::escape::quoted(&prefix));
            }
            return Err(err);
        }
        let name = self
            .src
            .read_head_bytes(head, "key name", "max_key_bytes", max)?;
        let header = KeyHeader {
            db: self.db,
            key: name.clone(),
            rdb_type: t,
            kind,
            expire_ms: self.expire_ms.take(),
            idle_secs: self.idle_secs.take(),
            freq: self.freq.take(),
        };
        let limit = if layout == Layout::Module {
            // Sent whole as one RESTORE argument: bounded like any single element.
            self.opts.max_element_bytes
        } else {
            self.opts.capture_dump_max.saturating_sub(DUMP_FOOTER)
        };
        let capture = self.captures(layout, kind);
        if capture {
            self.src.start_capture(&[t], limit);
        }
        self.key = Some(KeyCtx {
            header: Some(header),
            name,
            kind,
            decoder: ValueDecoder::new(layout),
            held: capture.then(Vec::new),
            held_bytes: 0,
            elements: 0,
        });
        self.phase = Phase::Value;
        Ok(())
    }

    fn step_value(&mut self) -> Result<()> {
        let Some(key) = self.key.as_mut() else {
            self.phase = Phase::Body;
            return Ok(());
        };
        let mut chunks = std::mem::take(&mut self.scratch);
        chunks.clear();
        key.decoder.step(&mut self.src, &self.opts, &mut chunks)?;
        let is_module = key.decoder.layout() == Layout::Module;
        for c in chunks.drain(..) {
            key.elements += chunk_elements(&c) as u64;
            match key.held.as_mut() {
                Some(held) => {
                    key.held_bytes += chunk_bytes(&c);
                    held.push(c);
                }
                None => {
                    if let Some(h) = key.header.take() {
                        self.out.push_back(Item::KeyStart(h));
                    }
                    self.out.push_back(Item::Chunk(c));
                }
            }
        }
        self.scratch = chunks;
        // Give up capturing when the raw bytes overflowed or the held chunks grew too large.
        let over =
            !self.src.capturing() || (!is_module && key.held_bytes > self.opts.capture_dump_max);
        if key.held.is_some() && over {
            self.src.abandon_capture();
            if let Some(held) = key.held.take() {
                if let Some(h) = key.header.take() {
                    self.out.push_back(Item::KeyStart(h));
                }
                self.out.extend(held.into_iter().map(Item::Chunk));
            }
        }
        if key.decoder.is_done() {
            self.finish_key()?;
        }
        Ok(())
    }

    fn finish_key(&mut self) -> Result<()> {
        let Some(mut key) = self.key.take() else {
            return Ok(());
        };
        self.phase = Phase::Body;
        let collection = matches!(
            key.kind,
            ValueKind::List | ValueKind::Set | ValueKind::ZSet | ValueKind::Hash
        );
        if collection && key.elements == 0 {
            self.src.abandon_capture();
            self.key = Some(key); // so the error names it
            return Err(self.src.err(RdbErrorKind::EmptyKey));
        }
        let dump = if key.held.take().is_some() {
            let raw = self.src.take_capture();
            let version = self.flavor_version().1;
            raw.map(|raw| Bytes::from(finish_dump_payload(raw, version)))
        } else {
            None
        };
        if dump.is_none() && key.kind == ValueKind::Module {
            return Err(self.src.err(RdbErrorKind::Unsupported(format!(
                "module value larger than the limit of {} bytes (ParseOptions::max_element_bytes)",
                self.opts.max_element_bytes
            ))));
        }
        if let Some(h) = key.header.take() {
            self.out.push_back(Item::KeyStart(h));
        }
        self.out.push_back(Item::KeyEnd { dump });
        Ok(())
    }
}

/// Append the `DUMP` footer (2-byte LE version, CRC64 LE of everything before it).
pub(crate) fn finish_dump_payload(mut raw: Vec<u8>, version: u32) -> Vec<u8> {
    raw.extend_from_slice(&(version as u16).to_le_bytes());
    let crc = CRC64.checksum(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    raw
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use crate::rdb::Item;

    fn items(data: &[u8], opts: ParseOptions) -> (Vec<Item>, Option<RdbError>) {
        let mut p = RdbParser::new(data, opts);
        let mut v = Vec::new();
        loop {
            match p.next_item() {
                Ok(Some(i)) => v.push(i),
                Ok(None) => return (v, None),
                Err(e) => return (v, Some(e)),
            }
        }
    }

    #[test]
    fn long_aux_is_skipped_and_long_key_names_the_limit() {
        let opts = ParseOptions {
            max_aux_bytes: 4,
            max_key_bytes: 3,
            ..ParseOptions::default()
        };
        let mut rdb = b"REDIS0010".to_vec();
        rdb.extend_from_slice(&[0xfa, 1, b'a', 5]);
        rdb.extend_from_slice(b"12345");
        rdb.extend_from_slice(&[0xfa, 1, b'b', 4]);
        rdb.extend_from_slice(b"1234");
        rdb.extend_from_slice(&[0, 3, b'k', b'e', b'y', 1, b'v']);
        rdb.extend_from_slice(&[0, 4, b'l', b'o', b'n', b'g']);
        let (v, e) = items(&rdb, opts);
        assert!(matches!(&v[1], Item::AuxSkipped { key, len: 5 } if &key[..] == b"a"));
        assert!(matches!(&v[2], Item::Aux { value, .. } if &value[..] == b"1234"));
        assert!(matches!(&v[3], Item::KeyStart(h) if &h.key[..] == b"key"));
        let e = e.expect("error").to_string();
        assert_eq!(
            e,
            "RDB parse error at byte 35: key name \"long\"… of 4 bytes exceeds the limit of 3 bytes; raise sync.max_key_bytes (ParseOptions::max_key_bytes) to at least 4 if the source really holds one this large"
        );
    }

    #[test]
    fn check_only_reads_past_string_values_and_keeps_every_check() {
        let mut rdb = b"REDIS0009".to_vec();
        rdb.extend_from_slice(&[0xfe, 2]);
        rdb.extend_from_slice(&[0, 1, b'k', 3, b'v', b'a', b'l']);
        // An int-encoded string and a list (structure still decoded).
        rdb.extend_from_slice(&[0, 1, b'n', 0xc0, 7]);
        rdb.extend_from_slice(&[1, 1, b'l', 2, 1, b'a', 1, b'b']);
        rdb.push(0xff);
        let crc = CRC64.checksum(&rdb);
        let mut good = rdb.clone();
        good.extend_from_slice(&crc.to_le_bytes());
        let (full, e) = items(&good, ParseOptions::default());
        assert!(e.is_none(), "{e:?}");
        let mut p = RdbParser::new(&good[..], ParseOptions::default()).check_only();
        let mut checked = Vec::new();
        while let Some(i) = p.next_item().expect("valid") {
            checked.push(i);
        }
        assert_eq!(full.len(), checked.len());
        let part = |i: &Item| match i {
            Item::Chunk(crate::rdb::Chunk::StringPart(b)) => Some(b.clone()),
            _ => None,
        };
        let full_parts: Vec<_> = full.iter().filter_map(part).collect();
        let checked_parts: Vec<_> = checked.iter().filter_map(part).collect();
        assert_eq!(
            full_parts,
            [Bytes::from_static(b"val"), Bytes::from_static(b"7")]
        );
        // The raw value is read past; the int-encoded one costs nothing to keep.
        assert_eq!(checked_parts, [Bytes::new(), Bytes::from_static(b"7")]);
        // A wrong checksum and a truncated file: the same errors either way.
        let mut bad = rdb.clone();
        bad.extend_from_slice(&(crc ^ 1).to_le_bytes());
        for data in [&bad[..], &good[..20]] {
            let (_, e1) = items(data, ParseOptions::default());
            let mut p = RdbParser::new(data, ParseOptions::default()).check_only();
            let e2 = loop {
                match p.next_item() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            assert_eq!(
                e1.map(|e| e.to_string()),
                e2.map(|e| e.to_string()),
                "same error"
            );
        }
    }

    #[test]
    fn zipmap_pairs_come_a_chunk_at_a_time() {
        let opts = ParseOptions {
            chunk_elements: 2,
            ..ParseOptions::default()
        };
        let mut zm = vec![5u8];
        for (k, v) in [
            (b'a', b'1'),
            (b'b', b'2'),
            (b'c', b'3'),
            (b'd', b'4'),
            (b'e', b'5'),
        ] {
            zm.extend_from_slice(&[1, k, 1, 0, v]);
        }
        zm.push(0xff);
        let mut rdb = b"REDIS0003".to_vec();
        rdb.extend_from_slice(&[9, 1, b'h', zm.len() as u8]);
        rdb.extend_from_slice(&zm);
        rdb.push(0xff);
        let (v, e) = items(&rdb, opts);
        assert!(e.is_none(), "{e:?}");
        let sizes: Vec<usize> = v
            .iter()
            .filter_map(|i| match i {
                Item::Chunk(crate::rdb::Chunk::HashFields(f)) => Some(f.len()),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        // A zipmap cut anywhere is an error, never a panic or a partial key.
        for cut in 1..zm.len() {
            let mut bad = b"REDIS0003".to_vec();
            bad.extend_from_slice(&[9, 1, b'h', cut as u8]);
            bad.extend_from_slice(&zm[..cut]);
            bad.push(0xff);
            let (_, e) = items(&bad, ParseOptions::default());
            assert!(e.is_some(), "cut at {cut}");
        }
    }
}
