//! Exactly-once on a **cluster target** (`sync.exactly_once`): a transaction must stay in one
//! slot, so the writer commits each batch *per slot*: `MULTI`, the batch's commands of slot `s`,
//! `SET <progress_prefix><instance>:<shard>:{tag_s} <replid>:<offset>:<db>`, `EXEC`, where `tag_s`
//! is a short hash tag that maps to `s` ([`tag`]). The per-slot key lives in the slot it
//! describes, so it moves with the slot (`MIGRATE` during a resharding) and a redirected group
//! takes it along.
//!
//! Where a shard resumes: the shard key `<prefix><instance>:<shard>` holds
//! [`super::exact::FULL_SYNC_MARK`] while an RDB is applied, then the position the full sync
//! ended at (written once every node acknowledged the RDB, [`mark_synced`]), moved past each
//! `FLUSHALL`/`FLUSHDB` of the stream (a barrier, [`apply_flush`]). The resume point
//! `W` is the later of that position and the local checkpoint (the checkpointer writes only
//! offsets every node acknowledged, so everything up to `W` is applied everywhere). From `W`
//! on, a replayed command ending at offset `o` in slot `s` is skipped when `o <=` the offset in
//! `s`'s key ([`Replay`]): the keys were read once at start (pipelined `GET`s per node).
//!
//! This module owns the tags, the per-slot split of a writer batch, the replay filter and the
//! cluster reads/writes of the keys. Hooks: `writer::Pipeline::take`, `Dispatcher` (full-sync
//! mark, replay filter), `Outputs::read_progress`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use super::exact::{Exact, Progress};
use super::targets::Targets;
use super::{Batch, SinkError};
use crate::cmd::{Cmd, DbCmd};
use crate::config::Endpoint;
use crate::net::client;
use crate::router::{self, Routed, SLOTS, key_slot};
use crate::source::handshake::ReplPosition;

/// The shortest tag (`0-9a-z`, shortest first) hashing to each slot; 4 characters reach all.
pub fn tag(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut out = vec![String::new(); SLOTS];
        let mut missing = SLOTS;
        let mut buf = [0u8; 4];
        let mut count = 1usize;
        for len in 1..=4 {
            count *= ALPHABET.len();
            for n in 0..count {
                let mut rest = n;
                for b in buf[..len].iter_mut().rev() {
                    *b = ALPHABET[rest % ALPHABET.len()];
                    rest /= ALPHABET.len();
                }
                let s = key_slot(&buf[..len]) as usize;
                if out[s].is_empty() {
                    out[s] = String::from_utf8_lossy(&buf[..len]).into_owned();
                    missing -= 1;
                    if missing == 0 {
                        return out;
                    }
                }
            }
        }
        out
    });
    tags.get(slot as usize).map(String::as_str).unwrap_or("")
}

/// The progress key of `slot` for source shard `shard`: `<prefix><instance>:<shard>:{tag}`.
pub fn slot_key(exact: &Exact, shard: &str, slot: u16) -> Bytes {
    Bytes::from(format!(
        "{}{}:{}:{{{}}}",
        exact.prefix,
        exact.instance,
        shard,
        tag(slot)
    ))
}

/// The slot of a command routed to one slot (its first key), `None` when it has no key.
fn slot_of(cmd: &Cmd) -> Option<u16> {
    let spec = router::command_keys(cmd);
    let at = spec.keys.first()?;
    cmd.args.get(at).map(|k| key_slot(k))
}

/// One slot group of a writer batch: the batch and the progress `(key, value, offset)` its
/// transaction writes (`None`: sent as plain commands).
pub struct Part {
    pub batch: Batch,
    pub progress: Option<(Bytes, Bytes, u64)>,
}

/// Splits a cluster writer batch into one transaction per slot (see the module doc) when it is
/// a batch of the current epoch that ends at a source position; otherwise returns it whole and
/// plain. Keyless commands (`PUBLISH`, `FLUSHALL`, `FUNCTION LOAD`…) cut the batch: the groups
/// before them go first, they go plain, then the groups after them. A source `MULTI`/`EXEC`
/// block (the dispatcher sends a block here only when it is in one slot) joins its slot's
/// group. Each extra part adds a part to the batch's ticket.
pub fn split_batch(batch: Batch, exact: &Exact) -> Vec<Part> {
    let plain = |batch| {
        vec![Part {
            batch,
            progress: None,
        }]
    };
    let Some(offset) = batch.ticket.offset else {
        return plain(batch);
    };
    if batch.ticket.epoch != batch.shard.epoch.load(std::sync::atomic::Ordering::Acquire) {
        return plain(batch);
    }
    let replid = batch.shard.replid();
    if replid.is_empty() {
        return plain(batch);
    }
    let value = super::exact::value(&replid, offset, batch.ticket.source_db);
    let Batch {
        shard,
        ticket,
        cmds,
        asking,
        ..
    } = batch;
    // Groups in order of first appearance; a keyless command closes the current segment.
    let mut out: Vec<(Option<u16>, Vec<DbCmd>)> = Vec::new();
    let mut segment: Vec<(u16, Vec<DbCmd>)> = Vec::new();
    let mut block: Option<Vec<DbCmd>> = None;
    let flush = |segment: &mut Vec<(u16, Vec<DbCmd>)>, out: &mut Vec<(Option<u16>, Vec<DbCmd>)>| {
        out.extend(segment.drain(..).map(|(s, c)| (Some(s), c)));
    };
    let add = |segment: &mut Vec<(u16, Vec<DbCmd>)>, slot: u16, cmds: Vec<DbCmd>| match segment
        .iter_mut()
        .find(|(s, _)| *s == slot)
    {
        Some((_, g)) => g.extend(cmds),
        None => segment.push((slot, cmds)),
    };
    for dc in cmds {
        if dc.cmd.is("MULTI") {
            block = Some(vec![dc]);
            continue;
        }
        if let Some(b) = &mut block {
            let end = dc.cmd.is("EXEC") || dc.cmd.is("DISCARD");
            b.push(dc);
            if end {
                let b = block.take().unwrap_or_default();
                match b.iter().find_map(|c| slot_of(&c.cmd)) {
                    Some(slot) => add(&mut segment, slot, b),
                    None => {
                        flush(&mut segment, &mut out);
                        out.push((None, b));
                    }
                }
            }
            continue;
        }
        match slot_of(&dc.cmd) {
            Some(slot) => add(&mut segment, slot, vec![dc]),
            None => {
                flush(&mut segment, &mut out);
                out.push((None, vec![dc]));
            }
        }
    }
    if let Some(b) = block {
        // An unclosed block (cannot happen: runs end on transaction boundaries): plain.
        flush(&mut segment, &mut out);
        out.push((None, b));
    }
    flush(&mut segment, &mut out);
    if out.is_empty() {
        out.push((None, Vec::new()));
    }
    for _ in 1..out.len() {
        ticket.add_part();
    }
    out.into_iter()
        .map(|(slot, cmds)| Part {
            progress: slot.map(|s| (slot_key(exact, &shard.name, s), value.clone(), offset)),
            batch: Batch {
                shard: shard.clone(),
                ticket: ticket.clone(),
                cmds,
                asking,
                wire: None,
                detour: None,
            },
        })
        .collect()
}

/// The per-slot offsets read at start, and the filter that skips replayed commands the target
/// already committed (see the module doc). Inactive past the highest offset read.
#[derive(Debug, Default)]
pub struct Replay {
    /// Committed offset per slot (0: nothing of ours).
    applied: Vec<u64>,
    /// Every command ending at or below it is committed, whatever its slot (keyless and
    /// cross-slot ones included): the resume point of a target that is ahead of the `PSYNC`
    /// (one-to-many, see [`super::exact_many`]); 0 otherwise.
    floor: u64,
    /// Highest offset in `applied`: commands ending after it are all new.
    until: u64,
    /// Commands skipped so far (logged when the replay ends).
    skipped: u64,
    /// Whose filter this is in the log (a one-to-many leg `shard@target`; empty otherwise).
    label: String,
}

/// A shard's replay filter, shared by its dispatchers; `None` once past (or after a full sync).
pub type SharedReplay = Arc<Mutex<Option<Replay>>>;

impl Replay {
    /// From the per-slot offsets (`None` when nothing is committed beyond `from`).
    pub fn new(applied: Vec<u64>, from: u64) -> Option<Replay> {
        Replay::with_floor(applied, 0, from)
    }

    /// [`Replay::new`] that also skips every command ending at or below `floor` (a target
    /// that committed everything up to `floor`; `applied` may be empty: a standalone target).
    pub fn with_floor(applied: Vec<u64>, floor: u64, from: u64) -> Option<Replay> {
        let until = applied.iter().copied().max().unwrap_or(0).max(floor);
        (until > from).then_some(Replay {
            applied,
            floor,
            until,
            skipped: 0,
            label: String::new(),
        })
    }

    /// Names the filter in its log line (see `label`).
    pub fn labelled(mut self, label: String) -> Replay {
        self.label = label;
        self
    }

    fn done(&self, o: u64, slot: u16) -> bool {
        self.applied.get(slot as usize).is_some_and(|&p| o <= p)
    }

    /// Drops the commands (or the per-slot parts of split commands) the target already
    /// committed. `ends[i]` is the source offset after `cmds[i]`. Returns whether the filter is
    /// finished (the run reached past every committed offset).
    pub fn filter(&mut self, cmds: &mut Vec<DbCmd>, ends: &mut Vec<u64>) -> bool {
        let mut out_c = Vec::with_capacity(cmds.len());
        let mut out_e = Vec::with_capacity(ends.len());
        let mut last = 0;
        for (i, dc) in std::mem::take(cmds).into_iter().enumerate() {
            let o = ends.get(i).copied().unwrap_or(u64::MAX);
            last = last.max(o);
            if o > self.until {
                out_c.push(dc);
                out_e.push(o);
                continue;
            }
            if o <= self.floor {
                self.skipped += 1;
                continue;
            }
            let DbCmd { db, cmd } = dc;
            match router::route(cmd) {
                Routed::Single { slot, cmd } => {
                    if self.done(o, slot) {
                        self.skipped += 1;
                    } else {
                        out_c.push(DbCmd { db, cmd });
                        out_e.push(o);
                    }
                }
                Routed::PerSlot(parts) => {
                    for (slot, cmd) in parts {
                        if self.done(o, slot) {
                            self.skipped += 1;
                        } else {
                            out_c.push(DbCmd { db, cmd });
                            out_e.push(o);
                        }
                    }
                }
                // Keyless (`MULTI`/`EXEC` markers, `PUBLISH`, `FLUSHALL`…) and cross-slot
                // commands carry no per-slot position: sent again (see the README's limits).
                Routed::NoKey { cmd, .. } | Routed::CrossSlot { cmd, .. } => {
                    out_c.push(DbCmd { db, cmd });
                    out_e.push(o);
                }
            }
        }
        *cmds = out_c;
        *ends = out_e;
        let finished = last >= self.until;
        if finished {
            tracing::info!(
                skipped = self.skipped,
                up_to = self.until,
                leg = %self.label,
                "replay after restart done: commands the target had committed were not sent again"
            );
        }
        finished
    }
}

/// True when the command that starts after source offset `before` (a large `RESTORE` written
/// in pieces) is committed: the replay filter's floor is past it (positions are whole commands
/// or `before` plus pieces, so a floor above `before` is at or after the command's end).
pub fn replayed_piece(replay: &SharedReplay, before: u64) -> bool {
    replay
        .lock()
        .ok()
        .is_some_and(|g| g.as_ref().is_some_and(|r| before < r.floor))
}

/// Applies the shard's replay filter (when one is active) to a run of stream commands.
pub fn filter_replay(replay: &SharedReplay, cmds: &mut Vec<DbCmd>, ends: &mut Vec<u64>) {
    let Ok(mut g) = replay.lock() else {
        return;
    };
    if let Some(r) = g.as_mut()
        && r.filter(cmds, ends)
    {
        *g = None;
    }
}

async fn conn(ep: &Endpoint) -> Result<redis::aio::MultiplexedConnection, SinkError> {
    Ok(client::connect("target", ep).await?)
}

/// The owner of `key`'s slot.
async fn owner(targets: &Targets, key: &[u8]) -> Result<Endpoint, SinkError> {
    let slot = key_slot(key);
    match targets.endpoint_for_slot(slot) {
        Some(ep) => Ok(ep),
        None => Err(SinkError::NoOwner { slot }),
    }
}

/// Runs one command per slot on the slots' owners (pipelined per node); returns the replies in
/// slot order.
async fn per_slot<T: redis::FromRedisValue + Default + Clone>(
    targets: &Targets,
    what: &str,
    make: impl Fn(u16) -> redis::Cmd,
) -> Result<Vec<T>, SinkError> {
    let mut by_node: Vec<(Endpoint, Vec<u16>)> = Vec::new();
    for slot in 0..SLOTS as u16 {
        let ep = targets
            .endpoint_for_slot(slot)
            .ok_or(SinkError::NoOwner { slot })?;
        match by_node.iter_mut().find(|(e, _)| *e == ep) {
            Some((_, v)) => v.push(slot),
            None => by_node.push((ep, vec![slot])),
        }
    }
    let mut out = vec![T::default(); SLOTS];
    for (ep, slots) in by_node {
        let mut c = conn(&ep).await?;
        for chunk in slots.chunks(4096) {
            let mut p = redis::pipe();
            for &s in chunk {
                p.add_command(make(s));
            }
            let replies: Vec<redis::RedisResult<T>> =
                p.ignore_errors()
                    .query_async(&mut c)
                    .await
                    .map_err(|e| SinkError::command(&ep, what, &e))?;
            for (&s, r) in chunk.iter().zip(replies) {
                out[s as usize] = match r {
                    Ok(v) => v,
                    // A slot moving (a resharding under way): asked where it is now.
                    Err(e) => match e.redirect_node() {
                        Some((addr, _)) => {
                            let ask =
                                e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Ask);
                            redirected(&ep, addr, ask, make(s))
                                .await
                                .map_err(|e| SinkError::command(&ep, what, &e))?
                        }
                        None => return Err(SinkError::command(&ep, what, &e)),
                    },
                };
            }
        }
    }
    Ok(out)
}

/// Runs `cmd` on the node `addr` (`host:port`) named by a redirect, after `ASKING` for `ASK`.
async fn redirected<T: redis::FromRedisValue>(
    like: &Endpoint,
    addr: &str,
    ask: bool,
    cmd: redis::Cmd,
) -> redis::RedisResult<T> {
    let ep = crate::net::topology::endpoint_at(like, addr).ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::Client,
            "unreadable redirect address",
            addr.to_string(),
        ))
    })?;
    let mut c = conn(&ep)
        .await
        .map_err(|e| redis::RedisError::from((redis::ErrorKind::Io, "connect", e.to_string())))?;
    let mut p = redis::pipe();
    if ask {
        p.cmd("ASKING").ignore();
    }
    p.add_command(cmd);
    let (v,): (T,) = p.query_async(&mut c).await?;
    Ok(v)
}

/// Reads a shard's per-slot offsets (0 where absent or unreadable as a position).
pub async fn read_slots(
    targets: &Targets,
    exact: &Exact,
    shard: &str,
) -> Result<Vec<u64>, SinkError> {
    let vals: Vec<Option<Vec<u8>>> = per_slot(targets, "GET slot progress keys", |s| {
        let mut c = redis::cmd("GET");
        c.arg(&slot_key(exact, shard, s)[..]);
        c
    })
    .await?;
    Ok(vals
        .iter()
        .map(|v| super::exact::offset_of(v.as_deref()).unwrap_or(0))
        .collect())
}

/// Reads the shard key of `shard` from its owner.
async fn read_shard_key(
    targets: &Targets,
    exact: &Exact,
    shard: &str,
) -> Result<Progress, SinkError> {
    let key = exact.key(shard);
    let ep = owner(targets, &key).await?;
    super::exact::read(&ep, &key).await
}

/// At start (cluster target): closes a killed run's connections on every master, then for each
/// source shard reads its shard key and per-slot keys. Returns each shard's progress (the
/// resume point, see the module doc) and its replay filter.
pub async fn read_all(
    exact: &Exact,
    targets: &Targets,
    source: &crate::net::topology::Topology,
    state_dir: &std::path::Path,
) -> (
    HashMap<String, Result<Progress, SinkError>>,
    HashMap<String, SharedReplay>,
) {
    fence_all(exact, targets).await;
    let mut progress = HashMap::new();
    let mut replays = HashMap::new();
    for m in source.masters() {
        let name = m.endpoint.to_string();
        let replay: SharedReplay = Arc::default();
        let p = match read_shard(exact, targets, &name, state_dir).await {
            Ok((Progress::At(w), applied)) => {
                if let Ok(mut g) = replay.lock() {
                    *g = Replay::new(applied, w.offset);
                }
                Ok(Progress::At(w))
            }
            Ok((other, _)) => Ok(other),
            Err(e) => Err(e),
        };
        progress.insert(name.clone(), p);
        replays.insert(name, replay);
    }
    (progress, replays)
}

/// Closes a killed run's connections on every master of a cluster target (see
/// [`super::exact::fence`]).
pub async fn fence_all(exact: &Exact, targets: &Targets) {
    for ep in targets.master_endpoints() {
        match super::exact::fence(&ep, exact).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(node = %ep, connections = n,
                "closed the target connections a previous run of this instance left open"),
            Err(e) => {
                tracing::warn!(node = %ep, error = %e, "could not close the target connections of a previous run (CLIENT LIST/KILL); a transaction it left in flight could still commit")
            }
        }
    }
}

/// One shard's progress on a cluster target, by its key name `name` (a source shard, or a
/// one-to-many leg `shard@target`): its resume point `W` (the later of the shard key and the
/// local checkpoint `name`) and, when it has one, the per-slot offsets.
pub async fn read_shard(
    exact: &Exact,
    targets: &Targets,
    name: &str,
    state_dir: &std::path::Path,
) -> Result<(Progress, Vec<u64>), SinkError> {
    match read_shard_key(targets, exact, name).await? {
        Progress::At(synced) => {
            let cp = crate::checkpoint::load(state_dir, name).ok().flatten();
            let w = match cp {
                Some(c) if c.offset >= synced.offset && c.replid == synced.replid => c,
                _ => synced,
            };
            let applied = read_slots(targets, exact, name).await?;
            Ok((Progress::At(w), applied))
        }
        other => Ok((other, Vec::new())),
    }
}

/// Before a full sync's first key (cluster target): the shard key says "partial copy" and the
/// shard's per-slot keys of an earlier history are removed (their offsets mean nothing in the
/// new one).
pub async fn mark_full_sync(
    targets: &Targets,
    exact: &Exact,
    shard: &str,
    replay: Option<&SharedReplay>,
) -> Result<(), SinkError> {
    if let Some(r) = replay
        && let Ok(mut g) = r.lock()
    {
        *g = None;
    }
    let key = exact.key(shard);
    let ep = owner(targets, &key).await?;
    super::exact::mark_full_sync(&ep, &key).await?;
    let _: Vec<i64> = per_slot(targets, "DEL slot progress keys", |s| {
        let mut c = redis::cmd("DEL");
        c.arg(&slot_key(exact, shard, s)[..]);
        c
    })
    .await?;
    Ok(())
}

/// After every node acknowledged a full sync's RDB (cluster target): the shard key holds the
/// position the stream starts at.
pub async fn mark_synced(
    targets: &Targets,
    exact: &Exact,
    shard: &str,
    pos: &ReplPosition,
) -> Result<(), SinkError> {
    let key = exact.key(shard);
    let ep = owner(targets, &key).await?;
    let mut c = conn(&ep).await?;
    redis::cmd("SET")
        .arg(&key[..])
        .arg(&super::exact::value(&pos.replid, pos.offset, pos.db)[..])
        .query_async::<()>(&mut c)
        .await
        .map_err(|e| SinkError::command(&ep, "SET progress key", &e))
}

/// The first `FLUSHALL`/`FLUSHDB` of a run outside a `MULTI` block (with a known end offset).
pub fn flush_at(cmds: &[DbCmd], ends: &[u64]) -> Option<usize> {
    let mut open = false;
    for (i, c) in cmds.iter().enumerate() {
        if c.cmd.is("MULTI") {
            open = true;
        } else if c.cmd.is("EXEC") || c.cmd.is("DISCARD") {
            open = false;
        } else if !open && (c.cmd.is("FLUSHALL") || c.cmd.is("FLUSHDB")) && i < ends.len() {
            return Some(i);
        }
    }
    None
}

/// Runs a stream `FLUSHALL`/`FLUSHDB` on a cluster target, after every earlier write of the
/// shard was applied: first on every master but the one holding the shard key, then on that one
/// as `MULTI`, the flush, `SET <shard key> <position after it>`, `EXEC`. A flush carries no slot
/// position and removes every progress key, so it is a barrier: a crash before the last step
/// leaves the shard key (at an earlier position) and a restart replays the flush over a target
/// holding nothing written after it; after, the flush is done everywhere and not replayed.
/// There is no moment without a shard key (which would force a full sync). Each node is tried
/// three times; the error names the node that refused.
pub async fn apply_flush(
    targets: &Targets,
    exact: &Exact,
    shard: &crate::observe::progress::ShardState,
    flush: &Cmd,
    after: &ReplPosition,
) -> Result<(), SinkError> {
    shard.drained().await;
    let key = exact.key(&shard.name);
    let keeper = owner(targets, &key).await?;
    let name = flush.name_upper();
    let as_redis = || {
        let mut c = redis::cmd(&name);
        for a in flush.args.iter().skip(1) {
            c.arg(&a[..]);
        }
        c
    };
    let mut masters = targets.master_endpoints();
    masters.retain(|m| m.to_string() != keeper.to_string());
    for ep in masters {
        retry(|| async {
            let mut c = conn(&ep).await?;
            as_redis()
                .query_async::<()>(&mut c)
                .await
                .map_err(|e| SinkError::command(&ep, &name, &e))
        })
        .await?;
    }
    let value = super::exact::value(&after.replid, after.offset, after.db);
    retry(|| async {
        let mut c = conn(&keeper).await?;
        redis::pipe()
            .atomic()
            .add_command(as_redis())
            .ignore()
            .cmd("SET")
            .arg(&key[..])
            .arg(&value[..])
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| SinkError::command(&keeper, &name, &e))
    })
    .await
}

/// Runs `op` up to three times, 200 ms apart; the last error if none succeeds.
async fn retry<F, Fut>(op: F) -> Result<(), SinkError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), SinkError>>,
{
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        match op().await {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(SinkError::NoOwner { slot: 0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for s in 0..SLOTS as u16 {
            let t = tag(s);
            assert!(!t.is_empty() && t.len() <= 4, "slot {s}");
            assert_eq!(key_slot(t.as_bytes()), s);
            let e = Exact {
                prefix: "__shardsync:progress:".into(),
                instance: "a".into(),
                run: "0123456789abcdef".into(),
            };
            if s % 1000 == 0 {
                let k = slot_key(&e, "10.0.0.1:6379", s);
                assert_eq!(key_slot(&k), s);
                assert!(k.starts_with(b"__shardsync:progress:a:10.0.0.1:6379:{"));
            }
        }
    }

    #[test]
    fn replay_skips_committed_slots_and_split_parts() {
        let a = key_slot(b"a");
        let b = key_slot(b"b");
        let mut applied = vec![0u64; SLOTS];
        applied[a as usize] = 100;
        let mut r = Replay::new(applied, 50).expect("active");
        let mut cmds = vec![
            DbCmd {
                db: 0,
                cmd: crate::cmd!["INCR", "a"],
            },
            DbCmd {
                db: 0,
                cmd: crate::cmd!["DEL", "a", "b"],
            },
            DbCmd {
                db: 0,
                cmd: crate::cmd!["INCR", "a"],
            },
        ];
        let mut ends = vec![60, 100, 120];
        assert!(r.filter(&mut cmds, &mut ends));
        assert_eq!(ends, vec![100, 120]);
        assert_eq!(cmds[0].cmd, crate::cmd!["DEL", "b"]);
        assert_eq!(key_slot(b"b"), b);
        assert!(Replay::new(vec![0; SLOTS], 0).is_none());
    }
}
