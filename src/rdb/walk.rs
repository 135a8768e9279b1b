//! The validation walk ([`RdbParser::check_all`]): a check-only parse of a whole file that
//! walks plain string keys by their lengths alone (no item, no buffer, no key state per key)
//! and parses everything else as [`RdbParser::check_only`] does. What it checks is what the
//! check-only parse checks: every opcode and length, the key name limit, that LZF strings
//! inflate to their announced length, every collection's structure, the end marker and the
//! CRC64 of the file; raw string bytes have no structure, so they are only read (and hashed).
//! Why: `load-rdb` validates the whole file before writing anything, and on a file of small
//! strings that pass was a third of its CPU, mostly spent making and dropping the items of
//! keys nobody looks at.

use std::io::Read;

use bytes::Bytes;

use super::RdbError;
use super::lzf_stream::LzfStream;
use super::parser::RdbParser;
use super::reader::{Result, StrHead};
use super::types::{Flavor, Item};

/// What a validation walk found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSummary {
    /// Flavor and version from the magic (always there after a successful walk).
    pub header: Option<(Flavor, u32)>,
    /// Keys in the file.
    pub keys: u64,
    /// The databases that hold keys, in the order first met.
    pub dbs: Vec<u32>,
}

/// The walk's running counts.
#[derive(Default)]
pub(super) struct Walked {
    keys: u64,
    dbs: Vec<u32>,
}

impl Walked {
    fn key_in(&mut self, db: u32) {
        self.keys += 1;
        if self.dbs.last() != Some(&db) && !self.dbs.contains(&db) {
            self.dbs.push(db);
        }
    }
}

impl<R: Read> RdbParser<R> {
    /// Validates the whole input (see the module documentation); `Ok` with what it holds, or
    /// the first error, exactly as [`RdbParser::next_item`] reports it. An empty collection is
    /// an error here (the check does not skip keys).
    pub fn check_all(self) -> std::result::Result<CheckSummary, RdbError> {
        let mut p = self.check_only();
        p.walk = Some(Walked::default());
        while let Some(item) = p.next_item()? {
            if let (Item::KeyStart(h), Some(w)) = (&item, p.walk.as_mut()) {
                w.key_in(h.db);
            }
        }
        let w = p.walk.take().unwrap_or_default();
        Ok(CheckSummary {
            header: p.header(),
            keys: w.keys,
            dbs: w.dbs,
        })
    }

    /// In a validation walk, a plain string key whose name is not over the limit is walked here and `Ok(true)` returned; otherwise nothing is read past `head` (the
    /// name's header) and the caller parses the key as usual.
    pub(super) fn walk_string_key(&mut self, head: StrHead) -> Result<bool> {
        let StrHead::Raw(n) = head else {
            return Ok(false);
        };
        if self.walk.is_none() || n > self.opts.max_key_bytes as u64 {
            return Ok(false);
        }
        let name = self.src.read_bytes(n)?;
        self.expire_ms = None;
        self.idle_secs = None;
        self.freq = None;
        self.walk_string_value().map_err(|mut e| {
            e.key.get_or_insert(name);
            e
        })?;
        if let Some(w) = self.walk.as_mut() {
            w.key_in(self.db);
        }
        Ok(true)
    }

    /// Reads past a string value, checking what the decoder checks.
    fn walk_string_value(&mut self) -> Result<()> {
        let max_bytes = self.opts.chunk_bytes.max(1);
        match self.src.read_str_head()? {
            StrHead::Raw(n) => self.src.skip(n),
            StrHead::Int(_) => Ok(()),
            StrHead::Lzf { clen, ulen } if ulen > max_bytes as u64 => {
                let mut lzf = LzfStream::new(&self.src, clen, ulen)?;
                while lzf.left() > 0 {
                    let _: Bytes = lzf.next_part(&mut self.src, max_bytes)?;
                }
                Ok(())
            }
            StrHead::Lzf { clen, ulen } => self.src.read_lzf(clen, ulen).map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::ParseOptions;
    use crate::rdb::reader::CRC64;

    /// Every item of a check-only parse, or its error.
    fn check_only(data: &[u8]) -> std::result::Result<(u64, Vec<u32>), String> {
        let mut p = RdbParser::new(data, ParseOptions::default()).check_only();
        let (mut keys, mut dbs) = (0, Vec::new());
        loop {
            match p.next_item() {
                Ok(Some(Item::KeyStart(h))) => {
                    keys += 1;
                    if !dbs.contains(&h.db) {
                        dbs.push(h.db);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok((keys, dbs)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn walk(data: &[u8]) -> std::result::Result<(u64, Vec<u32>), String> {
        RdbParser::new(data, ParseOptions::default())
            .check_all()
            .map(|s| (s.keys, s.dbs))
            .map_err(|e| e.to_string())
    }

    /// Strings of every encoding (raw, int, LZF), with a TTL, a list, in two databases.
    fn sample() -> Vec<u8> {
        let mut r = b"REDIS0009".to_vec();
        r.extend_from_slice(&[0xfa, 3, b'a', b'u', b'x', 1, b'x']);
        r.extend_from_slice(&[0xfe, 0]);
        r.extend_from_slice(&[0, 1, b'k', 3, b'v', b'a', b'l']);
        r.extend_from_slice(&[0, 1, b'n', 0xc1, 0x39, 0x30]);
        let plain = vec![b'z'; 300];
        let z = lzf::compress(&plain).expect("compressible");
        r.extend_from_slice(&[0, 1, b'z', 0xc3, 0x40 | (z.len() >> 8) as u8, z.len() as u8]);
        r.extend_from_slice(&[0x41, 0x2c]); // 300
        r.extend_from_slice(&z);
        r.push(0xfc);
        r.extend_from_slice(&1_700_000_000_000i64.to_le_bytes());
        r.extend_from_slice(&[0, 1, b't', 1, b'1']);
        r.extend_from_slice(&[0xfe, 2]);
        r.extend_from_slice(&[1, 1, b'l', 2, 1, b'a', 1, b'b']);
        r.extend_from_slice(&[0, 2, b'k', b'2', 0]);
        r.push(0xff);
        let crc = CRC64.checksum(&r);
        r.extend_from_slice(&crc.to_le_bytes());
        r
    }

    #[test]
    fn the_walk_counts_what_the_check_only_parse_sees() {
        let good = sample();
        assert_eq!(walk(&good), Ok((6, vec![0, 2])));
        assert_eq!(walk(&good), check_only(&good));
        let s = RdbParser::new(&good[..], ParseOptions::default())
            .check_all()
            .expect("valid");
        assert_eq!(s.header, Some((Flavor::Redis, 9)));
    }

    /// Cut anywhere, one byte flipped anywhere, a wrong checksum: the walk fails exactly where
    /// and as the check-only parse does (same message, offset and key).
    #[test]
    fn the_walk_reports_every_error_the_check_only_parse_does() {
        let good = sample();
        for cut in 0..good.len() {
            assert_eq!(walk(&good[..cut]), check_only(&good[..cut]), "cut at {cut}");
            assert!(walk(&good[..cut]).is_err(), "cut at {cut}");
        }
        for at in 9..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                assert_eq!(walk(&bad), check_only(&bad), "byte {at} ^ {flip:#x}");
                assert!(walk(&bad).is_err(), "byte {at} ^ {flip:#x}");
            }
        }
    }
}
