//! Stream conversion: entries, stream metadata, consumer groups, consumers and pending entries,
//! rebuilt exactly with plain commands (downgrades, and streams too large for `RESTORE`).
//!
//! The RDB gives a stream's entries first, then its metadata, then each group with its whole PEL.
//! A PEL may name entries that are no longer in the stream (trimmed or `XDEL`ed): `XCLAIM … FORCE`
//! only creates a pending entry for an ID present in the stream, and `XADD` only appends above
//! the top ID. So the entries are held back (up to [`HOLD_MAX_BYTES`]) until the key ends, and the
//! missing PEL IDs are inserted as placeholder entries in ID order, claimed, then deleted (`XDEL`
//! keeps the PEL).
//!
//! Order of commands for one stream key:
//! 1. `XADD key <id> f v …` per entry and per placeholder ([`PLACEHOLDER_FIELD`]), in ID order
//!    (the first one creates the stream).
//! 2. If nothing was added, the empty stream is created with `XGROUP CREATE … MKSTREAM`: for the
//!    first group when there is one, else for a temporary group destroyed at once.
//! 3. `XSETID key <last_id>` (+ `ENTRIESADDED n MAXDELETEDID id` on targets ≥ 7.0).
//! 4. Per group: `XGROUP CREATE key g <last_delivered_id>` (+ `ENTRIESREAD n` on ≥ 7.0), then the
//!    consumers without pending entries ([`super::compat::create_consumer`]: `XGROUP
//!    CREATECONSUMER` on ≥ 6.2, else an `XREADGROUP` of the consumer's own empty history), then
//!    the PEL with `XCLAIM key g consumer 0 id… TIME ms RETRYCOUNT n FORCE JUSTID`, one command per
//!    run of consecutive entries sharing consumer, delivery time and count.
//! 5. `XDEL key <placeholder ids>`, then on ≥ 7.0 `XSETID` again (the `XDEL`s moved the target's
//!    max-deleted-entry-id).
//!
//! Memory: the held entries (at most [`HOLD_MAX_BYTES`], counted as field bytes + 48 per entry)
//! plus every group of the stream with its whole PEL (the parser already yields each group whole:
//! about 40 bytes per pending entry plus consumer names). A stream whose entries exceed the hold
//! limit (`sync.max_stream_rebuild_bytes`) is written as it arrives into a staging stream in the
//! same slot (`{<tag>}__shardsync_stream_rebuild__<key>`); at the key's end, scripts move it into the
//! key `elements_per_command` entries per call, inserting the placeholders for the pending IDs in
//! ID order ([`MERGE_STEP`]; shardsync keeps only the first ID of each step), then the rebuild goes
//! on as above and the placeholders are deleted by a script that checks each is one. Only when no
//! staging name shares the key's slot (a key with a `}` but no hash tag) are the entries written
//! to the key directly; pending IDs below the last entry are then claimed through a small script
//! that counts the ones it cannot recreate and fails visibly (the writer logs and counts it with
//! the key).
//!
//! Not expressible by commands: consumers' seen-time and active-time (the target's are the time
//! of the rebuild).

use std::collections::HashSet;

use bytes::Bytes;

use super::ConvertError;
use super::keys::Emit;
use crate::cmd;
use crate::cmd::Cmd;
use crate::rdb::{StreamEntry, StreamGroup, StreamId, StreamMeta};

/// Name of the temporary group used to create an empty stream without groups.
pub const TEMP_GROUP: &str = "__shardsync_mkstream__";

/// Field of the placeholder entries standing in for deleted IDs that are still pending.
pub const PLACEHOLDER_FIELD: &str = "__shardsync_deleted__";

/// Most entry bytes held back per stream before entries are written as they arrive, by default
/// ([`super::ConvertOptions::stream_hold_max_bytes`], `sync.max_stream_rebuild_bytes`).
pub const HOLD_MAX_BYTES: usize = 32 << 20;

/// `EVAL` body: `XCLAIM … FORCE JUSTID` of the IDs in `ARGV[5..]` that exist in stream `KEYS[1]`
/// (group `ARGV[1]`, consumer `ARGV[2]`, time `ARGV[3]`, count `ARGV[4]`); an error reply counts
/// the IDs that do not exist.
const CHECKED_XCLAIM: &str = "redis.replicate_commands() local n = 0 \
for i = 5, #ARGV do \
if #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) == 0 then n = n + 1 else \
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], '0', ARGV[i], 'TIME', ARGV[3], \
'RETRYCOUNT', ARGV[4], 'FORCE', 'JUSTID') end end \
if n > 0 then return redis.error_reply('ERR shardsync: ' .. n .. \
' pending entries of deleted stream IDs not recreated (stream above the hold limit)') end \
return 0";

/// `EVAL` body, one step of the rebuild of a stream above the hold limit: moves the first
/// `ARGV[1]` entries of the staging stream `KEYS[2]` into `KEYS[1]`, inserting in ID order a
/// placeholder for each ID of `ARGV[2..]` (sorted) that is not among them. IDs compare exactly
/// (as digit strings), not as Lua numbers.
const MERGE_STEP: &str = "redis.replicate_commands() \
local function lt(a, b) local am, as = string.match(a, '^(%d+)-(%d+)$') \
local bm, bs = string.match(b, '^(%d+)-(%d+)$') \
if #am ~= #bm then return #am < #bm end if am ~= bm then return am < bm end \
if #as ~= #bs then return #as < #bs end return as < bs end \
local k, t = KEYS[1], KEYS[2] local j = 2 \
local function ph() redis.call('XADD', k, ARGV[j], '__shardsync_deleted__', '1') j = j + 1 end \
for _, en in ipairs(redis.call('XRANGE', t, '-', '+', 'COUNT', ARGV[1])) do \
while j <= #ARGV and lt(ARGV[j], en[1]) do ph() end \
if j <= #ARGV and ARGV[j] == en[1] then j = j + 1 end \
redis.call('XADD', k, en[1], unpack(en[2])) redis.call('XDEL', t, en[1]) end \
while j <= #ARGV do ph() end return 0";

/// `EVAL` body: `XDEL` of the IDs in `ARGV` whose entry in `KEYS[1]` is a placeholder.
const DEL_PLACEHOLDERS: &str = "redis.replicate_commands() local n = 0 for i = 1, #ARGV do \
local r = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) \
if #r == 1 and r[1][2][1] == '__shardsync_deleted__' then redis.call('XDEL', KEYS[1], ARGV[i]) n = n + 1 end end \
return n";

/// Suffix of the staging stream of a stream above the hold limit.
const STAGING_SUFFIX: &str = "__shardsync_stream_rebuild__";

/// The staging key of `key`, in the same cluster slot: `{<tag>}__shardsync_stream_rebuild__<key>`
/// where the tag is the key's hash tag, or a generated one of the same slot when that cannot be
/// written between braces (empty, or holding a `}`). `None` only if no tag is found.
fn staging_key(key: &[u8]) -> Option<Bytes> {
    use crate::router::slot::{hash_tag, hashtag_in, key_slot};
    let own = hash_tag(key);
    let generated;
    let tag = if own.is_empty() || own.contains(&b'}') {
        let slot = key_slot(key);
        generated = hashtag_in(|s| s == slot)?;
        generated.as_bytes()
    } else {
        own
    };
    let mut name = Vec::with_capacity(tag.len() + STAGING_SUFFIX.len() + key.len() + 2);
    name.push(b'{');
    name.extend_from_slice(tag);
    name.push(b'}');
    name.extend_from_slice(STAGING_SUFFIX.as_bytes());
    name.extend_from_slice(key);
    (key_slot(&name) == key_slot(key)).then(|| Bytes::from(name))
}

/// Progress of one stream key.
#[derive(Default)]
pub(super) struct StreamState {
    /// Entries held back until the key ends (in ID order, as the RDB stores them).
    held: Vec<StreamEntry>,
    held_bytes: usize,
    /// The hold limit was exceeded: entries are written as they arrive.
    overflowed: bool,
    /// First and last entry IDs written while overflowed.
    first_written: Option<StreamId>,
    last_written: Option<StreamId>,
    /// Entries (and placeholders) written so far.
    added: u64,
    meta: Option<StreamMeta>,
    groups: Vec<StreamGroup>,
    /// Above the hold limit: entries go to this staging stream first, and are moved into the key
    /// at the end with the placeholders the PEL needs (see [`MERGE_STEP`]).
    staging: Option<Bytes>,
    /// Entries written to the staging stream, and the ID of the first of every
    /// `elements_per_command` of them (where each merge step starts).
    staged: u64,
    step_starts: Vec<StreamId>,
}

fn id_arg(id: StreamId) -> Bytes {
    Bytes::from(id.to_string())
}

/// A u64 counter as Redis's signed argument, or `None` when it is out of range (e.g. the
/// "unknown" marker -1 stored unsigned).
fn signed(n: u64) -> Option<i64> {
    i64::try_from(n).ok()
}

impl StreamState {
    pub fn entries(
        &mut self,
        entries: Vec<StreamEntry>,
        e: &mut Emit<'_>,
    ) -> Result<(), ConvertError> {
        if self.meta.is_some() {
            return Err(seq(e, "stream entries after StreamMeta; ignored"));
        }
        if self.overflowed {
            return self.write_entries(entries, e);
        }
        self.held_bytes += entries.iter().map(StreamEntry::mem_bytes).sum::<usize>();
        self.held.extend(entries);
        if self.held_bytes > e.opts.stream_hold_max_bytes {
            self.overflowed = true;
            self.staging = staging_key(e.key);
            if let Some(t) = &self.staging {
                e.write(cmd!["DEL", t]);
            }
            let held = std::mem::take(&mut self.held);
            self.held_bytes = 0;
            return self.write_entries(held, e);
        }
        Ok(())
    }

    /// Writes entries as they arrive (after the hold limit was exceeded).
    fn write_entries(
        &mut self,
        entries: Vec<StreamEntry>,
        e: &mut Emit<'_>,
    ) -> Result<(), ConvertError> {
        let mut empty = 0usize;
        for entry in entries {
            let id = entry.id;
            if let Some(t) = self.staging.clone() {
                if entry.fields.is_empty() {
                    empty += 1;
                    continue;
                }
                if self
                    .staged
                    .is_multiple_of(e.opts.elements_per_command as u64)
                {
                    self.step_starts.push(id);
                }
                self.staged += 1;
                let mut c = cmd!["XADD", &t, id_arg(id)];
                for (f, v) in entry.fields {
                    c.args.push(f);
                    c.args.push(v);
                }
                e.write(c);
                self.first_written.get_or_insert(id);
                self.last_written = Some(id);
            } else if self.xadd(entry, e) {
                self.first_written.get_or_insert(id);
                self.last_written = Some(id);
            } else {
                empty += 1;
            }
        }
        empty_error(empty, e)
    }

    /// `XADD` of one entry; false (nothing sent) when it has no fields.
    fn xadd(&mut self, entry: StreamEntry, e: &mut Emit<'_>) -> bool {
        if entry.fields.is_empty() {
            return false;
        }
        let mut c = cmd!["XADD", e.key, id_arg(entry.id)];
        c.args.reserve(entry.fields.len() * 2);
        for (f, v) in entry.fields {
            c.args.push(f);
            c.args.push(v);
        }
        e.write(c);
        self.added += 1;
        true
    }

    pub fn meta(&mut self, meta: StreamMeta, e: &mut Emit<'_>) -> Result<(), ConvertError> {
        if self.meta.is_some() || !self.groups.is_empty() {
            return Err(seq(
                e,
                "second StreamMeta or StreamMeta after groups; ignored",
            ));
        }
        self.meta = Some(meta);
        Ok(())
    }

    pub fn group(&mut self, g: StreamGroup, _e: &mut Emit<'_>) -> Result<(), ConvertError> {
        self.groups.push(g);
        Ok(())
    }

    /// Writes the stream at `KeyEnd`; see the module documentation for the order.
    pub fn finish(
        &mut self,
        e: &mut Emit<'_>,
        unsupported: &mut Vec<String>,
    ) -> Result<(), ConvertError> {
        let v7 = e.opts.target.at_least(7, 0);
        let last_id = self.meta.as_ref().map(|m| m.last_id);
        // Every pending ID of every group, sorted and unique.
        let mut pel: Vec<StreamId> = self
            .groups
            .iter()
            .flat_map(|g| g.pending.iter().map(|p| p.id))
            .collect();
        pel.sort_unstable();
        pel.dedup();
        // Pending IDs the already written entries may or may not hold (claimed by a script).
        let mut unsure: HashSet<StreamId> = HashSet::new();
        let mut beyond_top = 0usize;
        let mut candidates = Vec::new();
        for id in pel {
            if self.last_written.is_some_and(|w| id <= w) {
                unsure.insert(id);
            } else if id == StreamId::default() || last_id.is_some_and(|l| id > l) {
                // Not a valid stream ID, or above the stream's top: XSETID would refuse the top.
                beyond_top += 1;
            } else {
                candidates.push(id);
            }
        }
        if beyond_top > 0 {
            unsupported.push(format!(
                "{beyond_top} pending entries with IDs above the stream's last ID (or 0-0) cannot be recreated"
            ));
        }
        // 0. Above the hold limit with a staging stream: its entries move into the key with the
        // placeholders; every pending ID then exists and is claimed normally.
        let mut staged_pending = Vec::new();
        if let Some(t) = self.staging.take() {
            staged_pending = unsure.drain().collect();
            staged_pending.sort_unstable();
            let step = e.opts.elements_per_command;
            let mut ids = staged_pending.iter().peekable();
            for (k, _) in self.step_starts.iter().enumerate() {
                let mut c = cmd!["EVAL", MERGE_STEP, "2", e.key, &t, step];
                let next = self.step_starts.get(k + 1).copied();
                while let Some(&&id) = ids.peek()
                    && next.is_none_or(|n| id < n)
                {
                    c.args.push(id_arg(id));
                    ids.next();
                }
                e.write(c);
            }
            e.write(cmd!["DEL", &t]);
            self.added += self.staged;
        }
        // 1. Held entries merged with placeholders for the pending IDs they lack.
        let held = std::mem::take(&mut self.held);
        let mut placeholders = Vec::new();
        let mut pending_ids = candidates.into_iter().peekable();
        let mut empty = 0usize;
        for entry in held {
            while let Some(&p) = pending_ids.peek()
                && p < entry.id
            {
                pending_ids.next();
                self.placeholder(p, e);
                placeholders.push(p);
            }
            if pending_ids.peek() == Some(&entry.id) {
                pending_ids.next();
                if entry.fields.is_empty() {
                    // Cannot be written as is; stands in as a placeholder (and is reported).
                    self.placeholder(entry.id, e);
                    placeholders.push(entry.id);
                    empty += 1;
                    continue;
                }
            }
            if !self.xadd(entry, e) {
                empty += 1;
            }
        }
        for p in pending_ids {
            self.placeholder(p, e);
            placeholders.push(p);
        }
        // 2-3. Create the stream if empty, XSETID.
        let mut groups = std::mem::take(&mut self.groups).into_iter();
        let mut first = None;
        if self.added == 0 {
            match groups.next() {
                Some(g) => {
                    e.write(group_create(e, &g, v7, true));
                    first = Some(g);
                }
                None => {
                    e.write(cmd!["XGROUP", "CREATE", e.key, TEMP_GROUP, "$", "MKSTREAM"]);
                    e.write(cmd!["XGROUP", "DESTROY", e.key, TEMP_GROUP]);
                }
            }
        }
        if let Some(meta) = &self.meta {
            e.write(xsetid(e, meta, v7));
        }
        // 4. Groups, consumers, PELs.
        if let Some(g) = first {
            group_members(e, &g, &unsure);
        }
        for g in groups {
            e.write(group_create(e, &g, v7, false));
            group_members(e, &g, &unsure);
        }
        // 5. Placeholders removed; the metadata restored once more.
        for ids in placeholders.chunks(e.opts.elements_per_command) {
            let mut c = cmd!["XDEL", e.key];
            c.args.extend(ids.iter().map(|&id| id_arg(id)));
            e.write(c);
        }
        for ids in staged_pending.chunks(e.opts.elements_per_command) {
            let mut c = cmd!["EVAL", DEL_PLACEHOLDERS, "1", e.key];
            c.args.extend(ids.iter().map(|&id| id_arg(id)));
            e.write(c);
        }
        if v7
            && !(placeholders.is_empty() && staged_pending.is_empty())
            && let Some(meta) = &self.meta
        {
            e.write(xsetid(e, meta, v7));
        }
        if self.meta.is_none() {
            return Err(seq(e, "stream without StreamMeta; XSETID not sent"));
        }
        empty_error(empty, e)
    }

    fn placeholder(&mut self, id: StreamId, e: &mut Emit<'_>) {
        e.write(cmd!["XADD", e.key, id_arg(id), PLACEHOLDER_FIELD, "1"]);
        self.added += 1;
    }
}

fn empty_error(empty: usize, e: &Emit<'_>) -> Result<(), ConvertError> {
    if empty > 0 {
        return Err(ConvertError::Unsupported {
            key: e.key.clone(),
            reason: format!("{empty} stream entries without fields skipped"),
        });
    }
    Ok(())
}

/// `XSETID key last [ENTRIESADDED n MAXDELETEDID id]` (the options on ≥ 7.0 when known).
fn xsetid(e: &Emit<'_>, meta: &StreamMeta, v7: bool) -> Cmd {
    let mut c = cmd!["XSETID", e.key, id_arg(meta.last_id)];
    if v7 {
        if let Some(n) = meta.entries_added.and_then(signed) {
            c.args.push(Bytes::from_static(b"ENTRIESADDED"));
            c.args.push(crate::cmd::arg(n));
        }
        if let Some(id) = meta.max_deleted_id {
            c.args.push(Bytes::from_static(b"MAXDELETEDID"));
            c.args.push(id_arg(id));
        }
    }
    c
}

/// `XGROUP CREATE key g <last-delivered> [MKSTREAM] [ENTRIESREAD n]`.
fn group_create(e: &Emit<'_>, g: &StreamGroup, v7: bool, mkstream: bool) -> Cmd {
    let mut c = cmd![
        "XGROUP",
        "CREATE",
        e.key,
        &g.name,
        id_arg(g.last_delivered_id)
    ];
    if mkstream {
        c.args.push(Bytes::from_static(b"MKSTREAM"));
    }
    if v7 && let Some(n) = g.entries_read.and_then(signed) {
        c.args.push(Bytes::from_static(b"ENTRIESREAD"));
        c.args.push(crate::cmd::arg(n));
    }
    c
}

/// The consumers without pending entries, then the PEL in runs of entries sharing consumer,
/// delivery time and count (IDs in `unsure` go through [`CHECKED_XCLAIM`]).
fn group_members(e: &mut Emit<'_>, g: &StreamGroup, unsure: &HashSet<StreamId>) {
    let with_pending: HashSet<&[u8]> = g.pending.iter().map(|p| p.consumer.as_ref()).collect();
    for c in &g.consumers {
        if !with_pending.contains(c.name.as_ref()) {
            let cmd = super::compat::create_consumer(
                e.key,
                &g.name,
                &c.name,
                e.opts.target.at_least(6, 2),
            );
            e.write(cmd);
        }
    }
    let max = e.opts.elements_per_command;
    let mut i = 0;
    while i < g.pending.len() {
        let p = &g.pending[i];
        let checked = unsure.contains(&p.id);
        let mut ids = Vec::new();
        let mut j = i;
        while j < g.pending.len()
            && j - i < max
            && g.pending[j].consumer == p.consumer
            && g.pending[j].delivery_time_ms == p.delivery_time_ms
            && g.pending[j].delivery_count == p.delivery_count
            && unsure.contains(&g.pending[j].id) == checked
        {
            ids.push(id_arg(g.pending[j].id));
            j += 1;
        }
        let c = if checked {
            let mut c = cmd![
                "EVAL",
                CHECKED_XCLAIM,
                "1",
                e.key,
                &g.name,
                &p.consumer,
                p.delivery_time_ms,
                p.delivery_count
            ];
            c.args.extend(ids);
            c
        } else {
            let mut c = cmd!["XCLAIM", e.key, &g.name, &p.consumer, "0"];
            c.args.extend(ids);
            let Cmd { args } = cmd![
                "TIME",
                p.delivery_time_ms,
                "RETRYCOUNT",
                p.delivery_count,
                "FORCE",
                "JUSTID"
            ];
            c.args.extend(args);
            c
        };
        e.write(c);
        i = j;
    }
}

fn seq(e: &Emit<'_>, reason: &str) -> ConvertError {
    ConvertError::Sequence {
        key: Some(e.key.clone()),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod staging_tests {
    use super::*;
    use crate::router::slot::key_slot;

    #[test]
    fn staging_key_shares_the_slot() {
        for key in [
            &b"plain"[..],
            b"user:{42}:events",
            b"a{b",
            b"{}x",
            b"",
            b"a{}b",
            b"x}{",
            b"\xff{\x00}",
        ] {
            let t = staging_key(key).expect("a staging name");
            assert_eq!(key_slot(&t), key_slot(key), "{key:?}");
            assert!(t.ends_with(key) && t.len() > key.len(), "{t:?}");
        }
    }
}
