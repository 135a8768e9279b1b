//! Streams (RDB types 15, 19, 21): entries decoded from the listpack nodes (master entry,
//! delta-encoded IDs, deleted and same-fields flags), then the stream metadata and the consumer
//! groups with their PEL and consumers.

use std::io::Read;

use bytes::Bytes;

use super::cursor::{BlobError, Cursor, DecodeResult, Elem};
use super::lazy::{BlobElems, Format};
use super::reader::{Result, Source};
use super::types::{PendingEntry, StreamConsumer, StreamEntry, StreamGroup, StreamId, StreamMeta};

const FLAG_DELETED: i64 = 1;
const FLAG_SAMEFIELDS: i64 = 2;

/// Which stream layout: 1 = `STREAM_LISTPACKS`, 2 adds first/max-deleted IDs, entries-added and
/// group entries-read, 3 adds consumer active time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StreamVersion(pub u8);

/// A node key: the master entry ID, 16 bytes big-endian.
pub(crate) fn parse_node_key(key: &[u8]) -> DecodeResult<StreamId> {
    if key.len() != 16 {
        return Err(BlobError::Detail(format!(
            "stream node key is {} bytes, not 16",
            key.len()
        )));
    }
    let mut c = Cursor::new(key);
    Ok(StreamId {
        ms: c.u64_be()?,
        seq: c.u64_be()?,
    })
}

/// The live entries of one stream listpack node, handed out a chunk at a time. The listpack is
/// validated whole once (like every blob, see [`BlobElems`]); entries are then decoded as they
/// are asked for, and entries with the master's fields read those names again from the blob
/// instead of holding copies, so a node costs its encoded size plus one chunk, whatever its
/// entries look like (a node of millions of one-byte fields decoded at once took tens of times
/// its size). The node's live/deleted counts are checked when its last entry is read.
#[derive(Debug)]
pub(crate) struct NodeEntries {
    elems: BlobElems,
    master: StreamId,
    /// Where the master entry's field names start in the blob, and how many there are.
    master_fields_at: usize,
    master_fields: u64,
    count: u64,
    deleted: u64,
    seen_live: u64,
    seen_deleted: u64,
}

impl NodeEntries {
    /// Validates the node's listpack and reads its header (counts and the master entry).
    pub(crate) fn new(master: StreamId, lp: Vec<u8>) -> DecodeResult<NodeEntries> {
        let mut elems = BlobElems::new(lp, Format::Listpack)?;
        if elems.left() == 0 {
            return Err("empty stream listpack".into());
        }
        let count = next(&mut elems)?.as_u64()?;
        let deleted = next(&mut elems)?.as_u64()?;
        let master_fields = next(&mut elems)?.as_u64()?;
        if master_fields > elems.left() {
            return Err("stream master entry has more fields than the listpack".into());
        }
        let master_fields_at = elems.position();
        for _ in 0..master_fields {
            next(&mut elems)?;
        }
        if next(&mut elems)?.as_int()? != 0 {
            return Err("stream master entry not terminated by 0".into());
        }
        Ok(NodeEntries {
            elems,
            master,
            master_fields_at,
            master_fields,
            count,
            deleted,
            seen_live: 0,
            seen_deleted: 0,
        })
    }

    /// The next live entries: at most `max` entries holding at most `max` fields together (one
    /// entry with more fields is handed out alone); `None` after the last.
    pub(crate) fn next_chunk(&mut self, max: usize) -> DecodeResult<Option<Vec<StreamEntry>>> {
        if self.elems.left() == 0 {
            if self.seen_live != self.count || self.seen_deleted != self.deleted {
                return Err(BlobError::Detail(format!(
                    "stream node counts {}/{} live/deleted entries, found {}/{}",
                    self.count, self.deleted, self.seen_live, self.seen_deleted
                )));
            }
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut fields_out = 0usize;
        while self.elems.left() > 0 && out.len() < max && fields_out < max {
            if let Some(entry) = self.next_entry()? {
                fields_out += entry.fields.len();
                out.push(entry);
            }
        }
        Ok(Some(out))
    }

    /// One entry; `None` for a deleted one (its fields are stepped over, not copied).
    fn next_entry(&mut self) -> DecodeResult<Option<StreamEntry>> {
        let flags = next(&mut self.elems)?.as_int()?;
        let ms = self
            .master
            .ms
            .wrapping_add(next(&mut self.elems)?.as_int()? as u64);
        let seq = self
            .master
            .seq
            .wrapping_add(next(&mut self.elems)?.as_int()? as u64);
        let live = flags & FLAG_DELETED == 0;
        let mut fields = Vec::new();
        if flags & FLAG_SAMEFIELDS != 0 {
            let mut at = self.master_fields_at;
            for _ in 0..self.master_fields {
                let (name, after) = self.elems.elem_at(at)?;
                let name = live.then(|| name.to_bytes());
                at = after;
                let value = next(&mut self.elems)?;
                if let Some(name) = name {
                    fields.push((name, value.to_bytes()));
                }
            }
        } else {
            let n = next(&mut self.elems)?.as_u64()?;
            if n > self.elems.left() / 2 {
                return Err("stream entry has more fields than the listpack".into());
            }
            for _ in 0..n {
                let name = next(&mut self.elems)?;
                let name = live.then(|| name.to_bytes());
                let value = next(&mut self.elems)?;
                if let Some(name) = name {
                    fields.push((name, value.to_bytes()));
                }
            }
        }
        next(&mut self.elems)?; // lp-count of the entry
        if !live {
            self.seen_deleted += 1;
            return Ok(None);
        }
        self.seen_live += 1;
        Ok(Some(StreamEntry {
            id: StreamId { ms, seq },
            fields,
        }))
    }
}

/// The next element of a stream node; the node must not end inside an entry.
fn next<'a>(elems: &'a mut BlobElems) -> DecodeResult<Elem<'a>> {
    elems
        .next_elem()?
        .ok_or(BlobError::Malformed("stream listpack ends inside an entry"))
}

/// Decode every live entry of one stream listpack node at once (tests and small nodes).
#[cfg(test)]
pub(crate) fn decode_node(master: StreamId, lp: &[u8]) -> DecodeResult<Vec<StreamEntry>> {
    let mut node = NodeEntries::new(master, lp.to_vec())?;
    let mut out = Vec::new();
    while let Some(mut chunk) = node.next_chunk(usize::MAX)? {
        out.append(&mut chunk);
    }
    Ok(out)
}

fn read_id<R: Read>(src: &mut Source<R>) -> Result<StreamId> {
    Ok(StreamId {
        ms: src.read_len()?,
        seq: src.read_len()?,
    })
}

fn read_raw_id<R: Read>(src: &mut Source<R>) -> Result<StreamId> {
    let raw: [u8; 16] = src.read_array()?;
    parse_node_key(&raw).map_err(|m| src.corrupt(m))
}

/// The stream metadata after the nodes, and the number of consumer groups that follow.
pub(crate) fn read_meta<R: Read>(
    src: &mut Source<R>,
    ver: StreamVersion,
) -> Result<(StreamMeta, u64)> {
    let length = src.read_len()?;
    let last_id = read_id(src)?;
    let mut meta = StreamMeta {
        length,
        last_id,
        ..StreamMeta::default()
    };
    if ver >= StreamVersion(2) {
        meta.first_id = Some(read_id(src)?);
        meta.max_deleted_id = Some(read_id(src)?);
        meta.entries_added = Some(src.read_len()?);
    }
    let groups = src.read_len()?;
    Ok((meta, groups))
}

/// Entries kept in memory before any is known to exist: untrusted counts only grow vectors
/// as data arrives.
const PREALLOC_MAX: u64 = 1024;

/// One consumer group with its PEL and consumers. The PEL and the consumers together may hold at
/// most `max_entries` (announced counts above it fail before anything is read). Redis writes
/// both the group PEL and each consumer's PEL in ID order (they are rax trees), which this checks
/// and uses: consumers find their entries by binary search, without an index beside the PEL.
pub(crate) fn read_group<R: Read>(
    src: &mut Source<R>,
    ver: StreamVersion,
    max_entries: usize,
) -> Result<StreamGroup> {
    let name = src.read_string()?;
    let last_delivered_id = read_id(src)?;
    let entries_read = if ver >= StreamVersion(2) {
        // -1 (SCG_INVALID_ENTRIES_READ) is stored as u64::MAX: unknown.
        Some(src.read_len()?).filter(|&v| v != u64::MAX)
    } else {
        None
    };
    let max = max_entries as u64;
    let too_many = |src: &Source<R>, n: u64| {
        src.over_limit(
            "consumer group (pending entries + consumers)",
            n,
            "entries",
            "max_group_entries",
            max,
        )
    };
    let pel_len = src.read_len()?;
    if pel_len > max {
        return Err(too_many(src, pel_len));
    }
    let mut pending: Vec<PendingEntry> = Vec::with_capacity(pel_len.min(PREALLOC_MAX) as usize);
    for _ in 0..pel_len {
        let id = read_raw_id(src)?;
        let delivery_time_ms = src.read_ms()? as u64;
        let delivery_count = src.read_len()?;
        if let Some(last) = pending.last().filter(|last| id <= last.id) {
            return Err(src.corrupt(format!(
                "PEL entry {id} after {} (duplicated or out of ID order)",
                last.id
            )));
        }
        pending.push(PendingEntry {
            id,
            consumer: Bytes::new(),
            delivery_time_ms,
            delivery_count,
        });
    }
    let nconsumers = src.read_len()?;
    if nconsumers.saturating_add(pel_len) > max {
        return Err(too_many(src, nconsumers.saturating_add(pel_len)));
    }
    let mut consumers = Vec::with_capacity(nconsumers.min(PREALLOC_MAX) as usize);
    for _ in 0..nconsumers {
        let cname = src.read_string()?;
        let seen_time_ms = src.read_ms()? as u64;
        let active_time_ms = if ver >= StreamVersion(3) {
            Some(src.read_ms()? as u64)
        } else {
            None
        };
        let n = src.read_len()?;
        // The consumer's PEL is in ID order too: each search starts after the previous hit.
        let mut from = 0;
        for _ in 0..n {
            let id = read_raw_id(src)?;
            let found = pending
                .get(from..)
                .and_then(|rest| rest.binary_search_by(|p| p.id.cmp(&id)).ok())
                .map(|i| from + i);
            let Some(i) = found else {
                return Err(src.corrupt(format!(
                    "consumer PEL entry {id} missing from the group PEL (or out of ID order)"
                )));
            };
            if let Some(slot) = pending.get_mut(i) {
                slot.consumer = cname.clone();
            }
            from = i + 1;
        }
        consumers.push(StreamConsumer {
            name: cname,
            seen_time_ms,
            active_time_ms,
        });
    }
    Ok(StreamGroup {
        name,
        last_delivered_id,
        entries_read,
        pending,
        consumers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::listpack::{build, int_entry, str_entry};

    #[test]
    fn node_with_samefields_and_deleted() {
        let master = StreamId { ms: 1000, seq: 5 };
        let lp = build(&[
            int_entry(2), // live
            int_entry(1), // deleted
            int_entry(2), // master fields
            str_entry(b"f1"),
            str_entry(b"f2"),
            int_entry(0),
            // entry 1: same fields, id 1000-5
            int_entry(FLAG_SAMEFIELDS),
            int_entry(0),
            int_entry(0),
            str_entry(b"a"),
            int_entry(7),
            int_entry(4),
            // entry 2: deleted, same fields
            int_entry(FLAG_SAMEFIELDS | FLAG_DELETED),
            int_entry(1),
            int_entry(0),
            str_entry(b"b"),
            str_entry(b"c"),
            int_entry(4),
            // entry 3: own fields, id 1010-0 (seq diff negative)
            int_entry(0),
            int_entry(10),
            int_entry(-5),
            int_entry(1),
            str_entry(b"x"),
            str_entry(b"y"),
            int_entry(5),
        ]);
        let got = decode_node(master, &lp).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, StreamId { ms: 1000, seq: 5 });
        assert_eq!(
            got[0].fields,
            vec![
                (Bytes::from("f1"), Bytes::from("a")),
                (Bytes::from("f2"), Bytes::from("7"))
            ]
        );
        assert_eq!(got[1].id, StreamId { ms: 1010, seq: 0 });
        assert_eq!(got[1].fields, vec![(Bytes::from("x"), Bytes::from("y"))]);
        // Wrong live count is detected.
        let mut bad = lp.clone();
        bad[6] = 3;
        assert!(decode_node(master, &bad).is_err());
    }

    /// A version-1 group: name "g", last id 0-0, the PEL ids (ms = the number, seq 0) and one
    /// consumer "c" owning `owned`.
    fn group_bytes(pel: &[u64], owned: &[u64]) -> Vec<u8> {
        let raw = |ms: u64| {
            let mut v = ms.to_be_bytes().to_vec();
            v.extend_from_slice(&0u64.to_be_bytes());
            v
        };
        let mut b = vec![1, b'g', 0, 0, pel.len() as u8];
        for &ms in pel {
            b.extend(raw(ms));
            b.extend_from_slice(&7i64.to_le_bytes());
            b.push(1);
        }
        b.extend_from_slice(&[1, 1, b'c']);
        b.extend_from_slice(&9i64.to_le_bytes());
        b.push(owned.len() as u8);
        for &ms in owned {
            b.extend(raw(ms));
        }
        b
    }

    fn group(bytes: &[u8], max: usize) -> Result<StreamGroup> {
        let mut src = Source::new(bytes);
        read_group(&mut src, StreamVersion(1), max)
    }

    #[test]
    fn group_pel_is_owned_by_binary_search() {
        let g = group(&group_bytes(&[1, 2, 5, 9], &[2, 9]), 100).unwrap();
        let owners: Vec<&[u8]> = g.pending.iter().map(|p| &p.consumer[..]).collect();
        assert_eq!(owners, vec![&b""[..], b"c", b"", b"c"]);
        assert_eq!(g.consumers.len(), 1);
    }

    #[test]
    fn group_over_the_limit_names_the_setting() {
        // 4 pending entries alone exceed 3; 3 pending + 1 consumer exceed 3 as well.
        for pel in [&[1u64, 2, 3, 4][..], &[1, 2, 3]] {
            let e = group(&group_bytes(pel, &[]), 3).unwrap_err().to_string();
            assert!(e.contains("max_group_entries"), "{e}");
        }
        assert!(group(&group_bytes(&[1, 2], &[]), 3).is_ok());
    }

    #[test]
    fn group_pel_out_of_order_or_unknown_is_corrupt() {
        for (pel, owned) in [
            (&[2u64, 1][..], &[][..]),
            (&[1, 1], &[]),
            (&[1, 2], &[3]),
            (&[1, 2], &[2, 1]),
        ] {
            let e = group(&group_bytes(pel, owned), 100)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("order") || e.contains("missing"),
                "{pel:?} {owned:?}: {e}"
            );
        }
    }
}
