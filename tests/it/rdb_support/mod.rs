//! Helpers shared by the RDB integration tests: locating the corpus and folding parser items
//! back into whole keys.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use shardsync::rdb::{
    Chunk, HashField, Item, KeyHeader, ParseOptions, RdbError, RdbParser, StreamEntry, StreamGroup,
    StreamMeta,
};

/// The shared RDB corpus: `$SHARDSYNC_RDB_CORPUS`, `$CARGO_MANIFEST_DIR/../shared/rdb-corpus`,
/// or `/work/shared/rdb-corpus`. A missing corpus fails the test: CI must never pass by skipping.
pub fn corpus_dir() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("SHARDSYNC_RDB_CORPUS").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_dir(),
            "SHARDSYNC_RDB_CORPUS={} is not a directory",
            p.display()
        );
        candidates.push(p);
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/rdb-corpus"));
    candidates.push(PathBuf::from("/work/shared/rdb-corpus"));
    candidates.into_iter().find(|p| p.is_dir()).unwrap_or_else(|| {
        panic!("RDB corpus not found: put shared/rdb-corpus beside the checkout or set SHARDSYNC_RDB_CORPUS")
    })
}

/// Every `*.rdb` file under `dir`, sorted.
pub fn rdb_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rdb") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A key's value, reassembled from its chunks.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Value {
    pub string: Vec<u8>,
    pub list: Vec<Bytes>,
    pub set: Vec<Bytes>,
    pub zset: Vec<(Bytes, f64)>,
    pub hash: Vec<HashField>,
    pub entries: Vec<StreamEntry>,
    pub meta: Option<StreamMeta>,
    pub groups: Vec<StreamGroup>,
    pub chunks: usize,
}

impl Value {
    pub fn add(&mut self, c: Chunk) {
        self.chunks += 1;
        match c {
            Chunk::StringPart(b) => self.string.extend_from_slice(&b),
            Chunk::ListItems(v) => self.list.extend(v),
            Chunk::SetMembers(v) => self.set.extend(v),
            Chunk::ZSetMembers(v) => self.zset.extend(v),
            Chunk::HashFields(v) => self.hash.extend(v),
            Chunk::StreamEntries(v) => self.entries.extend(v),
            Chunk::StreamMeta(m) => self.meta = Some(m),
            Chunk::StreamGroup(g) => self.groups.push(g),
        }
    }

    /// Same content, ignoring how it was chunked.
    pub fn same_content(&self, other: &Value) -> bool {
        let mut a = self.clone();
        let mut b = other.clone();
        a.chunks = 0;
        b.chunks = 0;
        a == b
    }
}

/// One key as parsed.
#[derive(Clone, Debug)]
pub struct Key {
    pub header: KeyHeader,
    pub value: Value,
    pub dump: Option<Bytes>,
}

/// Everything of a file: keys, other items, and how it ended.
#[derive(Debug, Default)]
pub struct Parsed {
    pub keys: Vec<Key>,
    pub others: Vec<Item>,
    pub end: Option<Item>,
    /// Largest chunk seen (elements) and largest string part (bytes).
    pub max_chunk_elems: usize,
    pub max_string_part: usize,
}

/// Parse a whole stream; the first error is returned.
pub fn parse_all<R: std::io::Read>(r: R, opts: ParseOptions) -> Result<Parsed, RdbError> {
    let mut p = RdbParser::new(r, opts);
    let mut out = Parsed::default();
    let mut cur: Option<Key> = None;
    while let Some(item) = p.next_item()? {
        match item {
            Item::KeyStart(h) => {
                assert!(cur.is_none(), "KeyStart inside a key");
                cur = Some(Key {
                    header: h,
                    value: Value::default(),
                    dump: None,
                });
            }
            Item::Chunk(c) => {
                let n = match &c {
                    Chunk::ListItems(v) | Chunk::SetMembers(v) => v.len(),
                    Chunk::ZSetMembers(v) => v.len(),
                    Chunk::HashFields(v) => v.len(),
                    Chunk::StreamEntries(v) => v.len(),
                    Chunk::StringPart(b) => {
                        out.max_string_part = out.max_string_part.max(b.len());
                        0
                    }
                    _ => 0,
                };
                out.max_chunk_elems = out.max_chunk_elems.max(n);
                cur.as_mut().expect("chunk outside a key").value.add(c);
            }
            Item::KeyEnd { dump } => {
                let mut k = cur.take().expect("KeyEnd outside a key");
                k.dump = dump;
                out.keys.push(k);
            }
            Item::End { .. } => {
                assert!(cur.is_none(), "End inside a key");
                out.end = Some(item);
            }
            other => {
                assert!(cur.is_none(), "{other:?} inside a key");
                out.others.push(other);
            }
        }
    }
    assert!(out.end.is_some(), "stream ended without Item::End");
    Ok(out)
}

pub fn parse_file(path: &Path, opts: ParseOptions) -> Result<Parsed, RdbError> {
    let f = std::fs::File::open(path).expect("open rdb");
    parse_all(f, opts)
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
