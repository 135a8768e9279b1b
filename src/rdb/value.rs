//! The value decoder: given an RDB type byte (flavor-specific numbering), reads one value from
//! the source step by step, each step producing at most about one chunk's worth of output
//! (an encoded blob — ziplist, listpack, intset, quicklist node — is read whole, since it is a
//! single string in the file, validated, then decoded one chunk at a time by [`BlobElems`];
//! stream nodes (see [`stream::NodeEntries`]) and zipmaps the same way; strings, raw or
//! LZF-compressed, come out in `chunk_bytes` parts, see [`LzfStream`]).

use std::io::Read;

use bytes::Bytes;

use super::lazy::{BlobElems, Format};
use super::lzf_stream::LzfStream;
use super::reader::{Result, Source, StrHead};
use super::stream::{self, StreamVersion};
use super::types::{Chunk, Flavor, HashField, StreamEntry, ValueKind};
use super::{ParseOptions, module, zipmap};

/// How a value is laid out in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    String,
    List,
    Set,
    ZSet {
        binary: bool,
    },
    Hash,
    /// Redis 7.4 RC `HASH_METADATA_PRE_GA` (22): absolute TTL before each field.
    HashTtlPreGa,
    /// Redis `HASH_METADATA` (24): min expiry, then TTL relative to it before each field.
    HashTtl,
    /// Valkey 9 hash with field expiry (22): field, value, 8-byte expiry (-1: none).
    HashTtlValkey,
    HashZipmap,
    ListZiplist,
    SetIntset,
    ZSetZiplist,
    HashZiplist,
    Quicklist,
    Quicklist2,
    Stream(StreamVersion),
    HashListpack,
    ZSetListpack,
    SetListpack,
    /// Redis `HASH_LISTPACK_EX` (25, with min expiry first) and its RC form (23).
    HashListpackEx {
        min_expire: bool,
    },
    Module,
}

/// The layout and logical kind of an RDB value type, or `None` if unknown for this flavor.
pub(crate) fn layout_of(flavor: Flavor, t: u8) -> Option<(Layout, ValueKind)> {
    use ValueKind as K;
    let l = match t {
        0 => (Layout::String, K::String),
        1 => (Layout::List, K::List),
        2 => (Layout::Set, K::Set),
        3 => (Layout::ZSet { binary: false }, K::ZSet),
        4 => (Layout::Hash, K::Hash),
        5 => (Layout::ZSet { binary: true }, K::ZSet),
        7 => (Layout::Module, K::Module),
        9 => (Layout::HashZipmap, K::Hash),
        10 => (Layout::ListZiplist, K::List),
        11 => (Layout::SetIntset, K::Set),
        12 => (Layout::ZSetZiplist, K::ZSet),
        13 => (Layout::HashZiplist, K::Hash),
        14 => (Layout::Quicklist, K::List),
        15 => (Layout::Stream(StreamVersion(1)), K::Stream),
        16 => (Layout::HashListpack, K::Hash),
        17 => (Layout::ZSetListpack, K::ZSet),
        18 => (Layout::Quicklist2, K::List),
        19 => (Layout::Stream(StreamVersion(2)), K::Stream),
        20 => (Layout::SetListpack, K::Set),
        21 => (Layout::Stream(StreamVersion(3)), K::Stream),
        22 if flavor == Flavor::Valkey => (Layout::HashTtlValkey, K::Hash),
        22 => (Layout::HashTtlPreGa, K::Hash),
        23 if flavor == Flavor::Redis => (Layout::HashListpackEx { min_expire: false }, K::Hash),
        24 if flavor == Flavor::Redis => (Layout::HashTtl, K::Hash),
        25 if flavor == Flavor::Redis => (Layout::HashListpackEx { min_expire: true }, K::Hash),
        _ => return None,
    };
    Some(l)
}

#[derive(Debug)]
enum State {
    Start,
    /// Handing out the elements of an encoded blob; `then` quicklist nodes follow it.
    Blob {
        elems: BlobElems,
        then: u64,
    },
    StringRaw {
        remaining: u64,
    },
    /// An LZF-compressed string larger than one part, inflated a part at a time.
    StringLzf(Box<LzfStream>),
    Elements {
        remaining: u64,
    },
    QuicklistNodes {
        remaining: u64,
    },
    StreamNodes {
        remaining: u64,
    },
    /// Handing out the pairs of a validated zipmap from `pos`.
    Zipmap {
        blob: Vec<u8>,
        pos: usize,
    },
    /// Handing out the entries of one stream node; `remaining` nodes follow it.
    StreamNode {
        node: stream::NodeEntries,
        remaining: u64,
    },
    StreamGroups {
        remaining: u64,
    },
    Done,
}

impl State {
    /// `more(left)` while `left` items remain, else [`State::Done`].
    fn or_done(left: u64, more: impl FnOnce(u64) -> State) -> State {
        if left == 0 { State::Done } else { more(left) }
    }
}

/// Step-wise decoder of one value.
pub(crate) struct ValueDecoder {
    layout: Layout,
    state: State,
    /// `HASH_METADATA`'s minimum field expiry, base of the relative TTLs.
    min_expire: i64,
}

/// Elements allocated up front at most, whatever a length field claims.
const PREALLOC_MAX: usize = 1024;

impl ValueDecoder {
    pub(crate) fn new(layout: Layout) -> Self {
        ValueDecoder {
            layout,
            state: State::Start,
            min_expire: 0,
        }
    }

    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Advance: read some of the value and append the resulting chunks to `out`.
    pub(crate) fn step<R: Read>(
        &mut self,
        src: &mut Source<R>,
        opts: &ParseOptions,
        out: &mut Vec<Chunk>,
    ) -> Result<()> {
        let max_bytes = opts.chunk_bytes.max(1);
        let max_elems = opts.chunk_elements.max(1);
        match self.state {
            State::Done => Ok(()),
            State::Start => self.start(src, opts, out),
            State::Blob {
                ref mut elems,
                then,
            } => {
                emit_blob(self.layout, elems, max_elems, out).map_err(|m| src.corrupt(m))?;
                if elems.left() == 0 {
                    self.state =
                        State::or_done(then, |remaining| State::QuicklistNodes { remaining });
                }
                Ok(())
            }
            State::StringRaw { remaining } => {
                let n = remaining.min(max_bytes as u64);
                out.push(Chunk::StringPart(Bytes::from(src.read_vec(n)?)));
                let left = remaining - n;
                self.state = State::or_done(left, |remaining| State::StringRaw { remaining });
                Ok(())
            }
            State::StringLzf(ref mut lzf) => {
                out.push(Chunk::StringPart(lzf.next_part(src, max_bytes)?));
                if lzf.left() == 0 {
                    self.state = State::Done;
                }
                Ok(())
            }
            State::Elements { remaining } => {
                let left = self.read_elements(src, remaining, max_elems, max_bytes, out)?;
                self.state = State::or_done(left, |remaining| State::Elements { remaining });
                Ok(())
            }
            State::QuicklistNodes { remaining } => {
                let then = remaining.saturating_sub(1);
                self.state = State::or_done(then, |remaining| State::QuicklistNodes { remaining });
                if let Some(elems) = self.read_quicklist_node(src, out)? {
                    self.state = State::Blob { elems, then };
                    return self.step(src, opts, out);
                }
                Ok(())
            }
            State::StreamNodes { remaining } => {
                let Layout::Stream(ver) = self.layout else {
                    return Err(src.corrupt("stream state for a non-stream value"));
                };
                if remaining > 0 {
                    let key = src.read_string_vec()?;
                    let master = stream::parse_node_key(&key).map_err(|m| src.corrupt(m))?;
                    let lp = src.read_string_vec()?;
                    let node = stream::NodeEntries::new(master, lp).map_err(|m| src.corrupt(m))?;
                    self.state = State::StreamNode {
                        node,
                        remaining: remaining - 1,
                    };
                    return self.step(src, opts, out);
                }
                let (meta, groups) = stream::read_meta(src, ver)?;
                out.push(Chunk::StreamMeta(meta));
                self.state = State::or_done(groups, |remaining| State::StreamGroups { remaining });
                Ok(())
            }
            State::Zipmap { ref blob, pos } => {
                let mut fields = Vec::new();
                let mut at = pos;
                while fields.len() < max_elems {
                    let Some((f, v, next)) =
                        zipmap::pair_at(blob, at).map_err(|m| src.corrupt(m))?
                    else {
                        self.state = State::Done;
                        break;
                    };
                    fields.push(HashField {
                        field: Bytes::copy_from_slice(f),
                        value: Bytes::copy_from_slice(v),
                        expire_ms: None,
                    });
                    at = next;
                }
                if let State::Zipmap { pos, .. } = &mut self.state {
                    *pos = at;
                }
                if !fields.is_empty() {
                    out.push(Chunk::HashFields(fields));
                }
                Ok(())
            }
            State::StreamNode {
                ref mut node,
                remaining,
            } => {
                match node.next_chunk(max_elems).map_err(|m| src.corrupt(m))? {
                    Some(entries) if entries.is_empty() => {}
                    Some(entries) => out.push(Chunk::StreamEntries(entries)),
                    None => self.state = State::StreamNodes { remaining },
                }
                Ok(())
            }
            State::StreamGroups { remaining } => {
                let Layout::Stream(ver) = self.layout else {
                    return Err(src.corrupt("stream state for a non-stream value"));
                };
                out.push(Chunk::StreamGroup(stream::read_group(
                    src,
                    ver,
                    opts.max_group_entries,
                )?));
                self.state = State::or_done(remaining.saturating_sub(1), |remaining| {
                    State::StreamGroups { remaining }
                });
                Ok(())
            }
        }
    }

    fn start<R: Read>(
        &mut self,
        src: &mut Source<R>,
        opts: &ParseOptions,
        out: &mut Vec<Chunk>,
    ) -> Result<()> {
        let max_bytes = opts.chunk_bytes.max(1);
        self.state = State::Done;
        match self.layout {
            Layout::String => match src.read_str_head()? {
                StrHead::Raw(n) if n > max_bytes as u64 => {
                    self.state = State::StringRaw { remaining: n };
                    return self.step(src, opts, out);
                }
                StrHead::Raw(n) if !src.keep_values => {
                    // Check-only pass: raw bytes have no structure to check; no copy is kept.
                    src.skip(n)?;
                    out.push(Chunk::StringPart(Bytes::new()));
                }
                StrHead::Raw(n) => string_parts(out, src.read_bytes(n)?, max_bytes),
                StrHead::Int(v) => string_parts(
                    out,
                    Bytes::copy_from_slice(itoa::Buffer::new().format(v).as_bytes()),
                    max_bytes,
                ),
                StrHead::Lzf { clen, ulen } if ulen > max_bytes as u64 => {
                    self.state = State::StringLzf(Box::new(LzfStream::new(src, clen, ulen)?));
                    return self.step(src, opts, out);
                }
                StrHead::Lzf { clen, ulen } => {
                    string_parts(out, Bytes::from(src.read_lzf(clen, ulen)?), max_bytes);
                }
            },
            Layout::List
            | Layout::Set
            | Layout::ZSet { .. }
            | Layout::Hash
            | Layout::HashTtlPreGa
            | Layout::HashTtlValkey
            | Layout::HashTtl => {
                if self.layout == Layout::HashTtl {
                    self.min_expire = src.read_ms()?;
                }
                let n = src.read_len()?;
                if n > 0 {
                    self.state = State::Elements { remaining: n };
                    return self.step(src, opts, out);
                }
            }
            Layout::Quicklist | Layout::Quicklist2 => {
                let n = src.read_len()?;
                if n > 0 {
                    self.state = State::QuicklistNodes { remaining: n };
                    return self.step(src, opts, out);
                }
            }
            Layout::Stream(_) => {
                let n = src.read_len()?;
                self.state = State::StreamNodes { remaining: n };
                return self.step(src, opts, out);
            }
            Layout::Module => {
                module::skip_value(src)?;
            }
            Layout::HashZipmap => {
                let blob = src.read_string_vec()?;
                zipmap::walk(&blob).map_err(|m| src.corrupt(m))?;
                self.state = State::Zipmap {
                    blob,
                    pos: zipmap::FIRST,
                };
                return self.step(src, opts, out);
            }
            Layout::SetIntset
            | Layout::ListZiplist
            | Layout::ZSetZiplist
            | Layout::HashZiplist
            | Layout::HashListpack
            | Layout::ZSetListpack
            | Layout::SetListpack
            | Layout::HashListpackEx { .. } => {
                if let Layout::HashListpackEx { min_expire: true } = self.layout {
                    src.read_ms()?;
                }
                let blob = src.read_string_vec()?;
                let format = match self.layout {
                    Layout::SetIntset => Format::Intset,
                    Layout::ListZiplist | Layout::ZSetZiplist | Layout::HashZiplist => {
                        Format::Ziplist
                    }
                    _ => Format::Listpack,
                };
                let elems = BlobElems::new(blob, format).map_err(|m| src.corrupt(m))?;
                let group = group_size(self.layout);
                if elems.left() % group != 0 {
                    return Err(src.corrupt(format!(
                        "encoded value of {} elements, not a multiple of {group}",
                        elems.left()
                    )));
                }
                self.state = State::Blob { elems, then: 0 };
                return self.step(src, opts, out);
            }
        }
        Ok(())
    }

    /// Read up to one chunk of a plainly encoded collection; returns how many remain.
    fn read_elements<R: Read>(
        &mut self,
        src: &mut Source<R>,
        remaining: u64,
        max_elems: usize,
        max_bytes: usize,
        out: &mut Vec<Chunk>,
    ) -> Result<u64> {
        let want = remaining.min(max_elems as u64) as usize;
        let cap = want.min(PREALLOC_MAX);
        let mut bytes = 0usize;
        let mut taken = 0u64;
        match self.layout {
            Layout::List | Layout::Set => {
                let mut v = Vec::with_capacity(cap);
                while v.len() < want && bytes < max_bytes {
                    let s = src.read_string()?;
                    bytes += s.len();
                    v.push(s);
                }
                taken = v.len() as u64;
                out.push(if self.layout == Layout::List {
                    Chunk::ListItems(v)
                } else {
                    Chunk::SetMembers(v)
                });
            }
            Layout::ZSet { binary } => {
                let mut v = Vec::with_capacity(cap);
                while v.len() < want && bytes < max_bytes {
                    let m = src.read_string()?;
                    let score = if binary {
                        src.read_binary_double()?
                    } else {
                        src.read_text_double()?
                    };
                    bytes += m.len() + 8;
                    v.push((m, score));
                }
                taken = v.len() as u64;
                out.push(Chunk::ZSetMembers(v));
            }
            Layout::Hash | Layout::HashTtlPreGa | Layout::HashTtl | Layout::HashTtlValkey => {
                let mut v = Vec::with_capacity(cap);
                while v.len() < want && bytes < max_bytes {
                    let ttl = match self.layout {
                        Layout::HashTtlPreGa => Some(src.read_len()?),
                        Layout::HashTtl => Some(src.read_len()?),
                        _ => None,
                    };
                    let field = src.read_string()?;
                    let value = src.read_string()?;
                    let expire_ms = match self.layout {
                        Layout::HashTtlPreGa => ttl.filter(|&t| t != 0).map(|t| t as i64),
                        Layout::HashTtl => ttl
                            .filter(|&t| t != 0)
                            .map(|t| self.min_expire.wrapping_add(t as i64).wrapping_sub(1)),
                        Layout::HashTtlValkey => Some(src.read_ms()?).filter(|&t| t >= 0),
                        _ => None,
                    };
                    bytes += field.len() + value.len();
                    v.push(HashField {
                        field,
                        value,
                        expire_ms,
                    });
                }
                taken = v.len() as u64;
                out.push(Chunk::HashFields(v));
            }
            _ => {}
        }
        if taken == 0 {
            return Err(src.corrupt("collection reader made no progress"));
        }
        Ok(remaining - taken)
    }

    /// Reads one quicklist node: a PLAIN node's item goes to `out`; a packed node is returned.
    fn read_quicklist_node<R: Read>(
        &mut self,
        src: &mut Source<R>,
        out: &mut Vec<Chunk>,
    ) -> Result<Option<BlobElems>> {
        if self.layout == Layout::Quicklist2 {
            match src.read_len()? {
                1 => {
                    // PLAIN node: the node is one element.
                    let item = src.read_string()?;
                    out.push(Chunk::ListItems(vec![item]));
                    return Ok(None);
                }
                2 => {}
                other => {
                    return Err(src.corrupt(format!("unknown quicklist container {other}")));
                }
            }
        }
        let blob = src.read_string_vec()?;
        let format = if self.layout == Layout::Quicklist2 {
            Format::Listpack
        } else {
            Format::Ziplist
        };
        // Redis skips empty nodes; so do we (an all-empty list is reported as an empty key).
        BlobElems::new(blob, format)
            .map(Some)
            .map_err(|m| src.corrupt(m))
    }
}

/// Elements per logical entry of a blob layout: pairs for hashes and sorted sets, triples for
/// hashes with field TTLs.
fn group_size(layout: Layout) -> u64 {
    match layout {
        Layout::ZSetZiplist | Layout::ZSetListpack | Layout::HashZiplist | Layout::HashListpack => {
            2
        }
        Layout::HashListpackEx { .. } => 3,
        _ => 1,
    }
}

/// Emits up to `max_elems` entries of a validated blob as one chunk.
fn emit_blob(
    layout: Layout,
    elems: &mut BlobElems,
    max_elems: usize,
    out: &mut Vec<Chunk>,
) -> super::cursor::DecodeResult<()> {
    let n = (elems.left() / group_size(layout)).min(max_elems as u64) as usize;
    if n == 0 {
        return Ok(());
    }
    match layout {
        Layout::ZSetZiplist | Layout::ZSetListpack => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let m = elems.next_bytes()?;
                let score = elems
                    .next_elem()?
                    .ok_or("sorted set blob with an odd number of elements")?
                    .as_f64()?;
                v.push((m, score));
            }
            out.push(Chunk::ZSetMembers(v));
        }
        Layout::HashZiplist | Layout::HashListpack | Layout::HashListpackEx { .. } => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let field = elems.next_bytes()?;
                let value = elems.next_bytes()?;
                let expire_ms = if let Layout::HashListpackEx { .. } = layout {
                    let ttl = elems
                        .next_elem()?
                        .ok_or("hash listpack-ex ends inside an entry")?
                        .as_int()?;
                    (ttl != 0).then_some(ttl)
                } else {
                    None
                };
                v.push(HashField {
                    field,
                    value,
                    expire_ms,
                });
            }
            out.push(Chunk::HashFields(v));
        }
        _ => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(elems.next_bytes()?);
            }
            out.push(
                if matches!(layout, Layout::SetIntset | Layout::SetListpack) {
                    Chunk::SetMembers(v)
                } else {
                    Chunk::ListItems(v)
                },
            );
        }
    }
    Ok(())
}

/// Append a string as parts of at most `max` bytes (one empty part for an empty string).
fn string_parts(out: &mut Vec<Chunk>, data: Bytes, max: usize) {
    if data.len() <= max {
        out.push(Chunk::StringPart(data));
        return;
    }
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + max).min(data.len());
        out.push(Chunk::StringPart(data.slice(pos..end)));
        pos = end;
    }
}

/// Number of elements (list items, members, fields, entries) in a chunk; 0 for strings/meta.
pub(crate) fn chunk_elements(c: &Chunk) -> usize {
    match c {
        Chunk::StringPart(_) | Chunk::StreamMeta(_) | Chunk::StreamGroup(_) => 0,
        Chunk::ListItems(v) | Chunk::SetMembers(v) => v.len(),
        Chunk::ZSetMembers(v) => v.len(),
        Chunk::HashFields(v) => v.len(),
        Chunk::StreamEntries(v) => v.len(),
    }
}

/// Approximate memory held by a chunk.
pub(crate) fn chunk_bytes(c: &Chunk) -> usize {
    const OVERHEAD: usize = 16;
    match c {
        Chunk::StringPart(b) => b.len(),
        Chunk::ListItems(v) | Chunk::SetMembers(v) => v.iter().map(|b| b.len() + OVERHEAD).sum(),
        Chunk::ZSetMembers(v) => v.iter().map(|(b, _)| b.len() + OVERHEAD + 8).sum(),
        Chunk::HashFields(v) => v
            .iter()
            .map(|f| f.field.len() + f.value.len() + 2 * OVERHEAD)
            .sum(),
        Chunk::StreamEntries(v) => v.iter().map(StreamEntry::mem_bytes).sum(),
        Chunk::StreamMeta(_) => 64,
        Chunk::StreamGroup(g) => {
            g.name.len()
                + g.pending
                    .iter()
                    .map(|p| 40 + p.consumer.len())
                    .sum::<usize>()
                + g.consumers.iter().map(|c| 32 + c.name.len()).sum::<usize>()
        }
    }
}
