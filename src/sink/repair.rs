//! Repair instead of loss: when the target rejects a write that the source accepted (a command a
//! cluster refuses such as `SORT … BY pattern … STORE`, a command an older target does not know,
//! a `WRONGTYPE` after the target diverged), the keys it touches are copied from the source.
//!
//! Two halves:
//! - [`RepairQueue`] (shared by every writer): [`RepairQueue::rejected`] records the keys of a
//!   rejected command for its shard.
//! - [`Repairer`] (one per shard dispatcher, in the link's task): before the next run of stream
//!   commands is dispatched, [`Repairer::process`] reads each key and the source's replication
//!   offset atomically on the shard's master (`SELECT db`, `MULTI`, `DUMP`, `PTTL`,
//!   `INFO replication`, `EXEC` — `INFO` is allowed in `MULTI` on 6.0–7.x and Valkey 9), puts a
//!   `RESTORE … REPLACE ABSTTL` (or `DEL` when the key is gone) in front of the run — converted
//!   for an older target like any other `RESTORE` — and installs a *fence*: the key's stream
//!   commands at offsets up to that offset are skipped, since the copied value already holds
//!   their effect. A skipped multi-key command repairs its other keys too; a `FLUSHDB`,
//!   `FLUSHALL` or `SWAPDB` inside a fence window repairs the fenced keys again after it.
//!
//! Ordering: the `RESTORE` goes through the same dispatcher and writer queues as the stream, so
//! it lands after every earlier write of its key and before every later one. Each repair is
//! counted (`shardsync_key_repairs_total{result}`) and logged with the key; a key whose repair
//! keeps failing (5 times in a minute) is given up on, counted and logged, never looped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::SinkError;
use crate::cmd::{Cmd, DbCmd};
use crate::config::{Endpoint, SyncSettings};
use crate::net::RespConn;
use crate::net::server_info::ServerInfo;
use crate::observe::events::{Emit, KeyRepairFailed, KeyRepaired, RepairFailure};
use crate::observe::progress::ShardState;
use crate::resp::Frame;

/// Repairs of one key allowed within [`ATTEMPT_WINDOW`] before giving up on it.
const MAX_ATTEMPTS: u32 = 5;
const ATTEMPT_WINDOW: Duration = Duration::from_secs(60);
/// Keys queued per shard at most (beyond: counted as failed repairs, logged).
const MAX_QUEUED: usize = 10_000;
/// Keys repaired before one run of stream commands at most: a storm of rejections must not stall
/// the stream (the rest wait for the next runs).
const MAX_PER_RUN: usize = 256;

/// A key to copy from the source: its *target* database (what the writer knows) and why.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub target_db: u32,
    pub key: Bytes,
    pub why: String,
    /// Asked for by the filters ([`crate::router::filter`]): a legitimate copy each time, not
    /// a failure, so the give-up rule (5 attempts a minute) does not apply.
    pub filtered: bool,
    /// Its record on the target (see [`super::exact_fences`]): `None` not recorded (records
    /// off, key too long), `Some(false)` to be recorded, `Some(true)` recorded (or on its way).
    pub recorded: Option<bool>,
}

/// Keys to repair, per shard name. Filled by writers, drained by each shard's [`Repairer`].
#[derive(Debug, Default)]
pub struct RepairQueue {
    wanted: Mutex<HashMap<String, ShardQueue>>,
    /// Exactly-once: fences and pending repairs are recorded on the target.
    records: std::sync::OnceLock<super::exact_fences::Records>,
}

/// One shard's keys waiting for repair, in arrival order, with a set to drop duplicates.
#[derive(Debug, Default)]
struct ShardQueue {
    order: std::collections::VecDeque<Wanted>,
    queued: std::collections::HashSet<(u32, Bytes)>,
    /// Keys in `order` whose record is due (`recorded == Some(false)`).
    unrecorded: usize,
    /// Fences read from the target at start, for the shard's repairer.
    loaded: Option<super::exact_fences::Loaded>,
}

/// Error replies that say nothing about the command (the target is full, read-only, busy…):
/// copying the key would fail the same way, so these are only reported.
const NOT_REPAIRABLE: &[&str] = &[
    "OOM",
    "READONLY",
    "NOAUTH",
    "NOPERM",
    "BUSY",
    "LOADING",
    "MASTERDOWN",
    "MISCONF",
];

fn repairable(e: &[u8]) -> bool {
    let first = e.split(|&b| b == b' ').next().unwrap_or(b"");
    !NOT_REPAIRABLE
        .iter()
        .any(|k| k.as_bytes().eq_ignore_ascii_case(first))
}

/// The keys of `cmd` (by the router's key table).
fn keys_of(cmd: &Cmd) -> Vec<Bytes> {
    let spec = crate::router::command_keys(cmd);
    let mut out: Vec<Bytes> = Vec::new();
    for i in spec.keys.iter() {
        if let Some(k) = cmd.args.get(i)
            && !out.contains(k)
        {
            out.push(k.clone());
        }
    }
    out
}

/// `MOVE k n` → `(n, k)`; `COPY src dst DB n …` → `(n, dst)`: the key a command writes in
/// another (target) database.
fn cross_db_dest(cmd: &Cmd) -> Option<(u32, Bytes)> {
    let db = |a: &Bytes| std::str::from_utf8(a).ok()?.parse::<u32>().ok();
    if cmd.is("MOVE") {
        return Some((db(cmd.args.get(2)?)?, cmd.args.get(1)?.clone()));
    }
    if cmd.is("COPY") {
        let i = (3..cmd.args.len().saturating_sub(1))
            .find(|&i| cmd.args[i].eq_ignore_ascii_case(b"DB"))?;
        return Some((db(&cmd.args[i + 1])?, cmd.args.get(2)?.clone()));
    }
    None
}

impl RepairQueue {
    pub fn new() -> Arc<RepairQueue> {
        Arc::new(RepairQueue::default())
    }

    /// A writer saw `reply` (an error, or an `EXEC` array holding errors) for `cmds[at]`:
    /// queues the keys it touches (for `EXEC`, those of the failed commands of its block, or of
    /// the whole block when the target aborted it).
    pub fn rejected(&self, shard: &ShardState, cmds: &[DbCmd], at: usize, reply: &Frame) {
        let Some(dc) = cmds.get(at) else { return };
        let mut failed: Vec<(&DbCmd, String)> = Vec::new();
        if dc.cmd.is("EXEC") {
            // The block: the commands after the last MULTI before `at`.
            let start = cmds[..at]
                .iter()
                .rposition(|c| c.cmd.is("MULTI"))
                .map_or(0, |i| i + 1);
            let body = &cmds[start..at];
            match reply {
                Frame::Array(items) => {
                    for (c, r) in body.iter().zip(items) {
                        if let Frame::Error(e) = r
                            && repairable(e)
                        {
                            failed.push((c, crate::escape::text(e)));
                        }
                    }
                }
                Frame::Error(e) if repairable(e) => {
                    for c in body {
                        failed.push((
                            c,
                            format!("transaction aborted: {}", crate::escape::text(e)),
                        ));
                    }
                }
                _ => {}
            }
        } else if let Frame::Error(e) = reply
            && repairable(e)
        {
            failed.push((dc, crate::escape::text(e)));
        }
        for (c, why) in failed {
            let why = format!("{} rejected: {why}", crate::escape::text(c.cmd.name()));
            for key in keys_of(&c.cmd) {
                self.push_key(shard, c.db, key, &why, false);
            }
        }
    }

    /// Queues the keys of a command that could not be applied at all (e.g. the cross-slot
    /// fallback failed).
    pub fn request(&self, shard: &ShardState, target_db: u32, cmd: &Cmd, why: &str) {
        for key in keys_of(cmd) {
            self.push_key(shard, target_db, key, why, false);
        }
    }

    /// Queues one key to copy from the source (a command the filters replaced by a copy,
    /// see [`crate::router::filter`]).
    pub fn request_key(&self, shard: &ShardState, target_db: u32, key: Bytes, why: &str) {
        self.push_key(shard, target_db, key, why, true);
    }

    fn push_key(&self, shard: &ShardState, target_db: u32, key: Bytes, why: &str, filtered: bool) {
        let why = why.to_string();
        let recorded = self
            .records()
            .filter(|r| r.records_pending() && key.len() <= super::exact_fences::MAX_RECORD_KEY)
            .map(|_| false);
        self.push(
            shard,
            Wanted {
                target_db,
                key,
                why,
                filtered,
                recorded,
            },
        );
    }

    /// Exactly-once: records fences and pending repairs on the target from now on.
    pub fn enable_records(&self, records: super::exact_fences::Records) {
        let _ = self.records.set(records);
    }

    /// The target's records, when they are kept.
    pub fn records(&self) -> Option<&super::exact_fences::Records> {
        self.records.get()
    }

    /// At start: what the target recorded for `shard` (its pending repairs are queued again,
    /// its fences wait for the shard's repairer).
    pub fn preload(&self, shard: &str, mut loaded: super::exact_fences::Loaded) {
        let state = ShardState::new(shard.to_string());
        for (target_db, key) in std::mem::take(&mut loaded.pending) {
            self.push(
                &state,
                Wanted {
                    target_db,
                    key,
                    why: "pending when the previous run stopped".into(),
                    filtered: false,
                    recorded: Some(true),
                },
            );
        }
        if let Ok(mut m) = self.wanted.lock() {
            m.entry(shard.to_string()).or_default().loaded = Some(loaded);
        }
    }

    /// The fences loaded at start for `shard` (once).
    fn take_loaded(&self, shard: &str) -> Option<super::exact_fences::Loaded> {
        let mut m = self.wanted.lock().ok()?;
        m.get_mut(shard)?.loaded.take()
    }

    /// The writer's hook: an `HSET` recording up to [`super::exact_fences::MAX_PENDING_PER_TXN`]
    /// of `shard`'s queued keys not recorded yet, for the transaction being encoded.
    pub fn pending_record(&self, shard: &ShardState) -> Option<Cmd> {
        let rec = self.records().filter(|r| r.records_pending())?;
        let items: Vec<(u32, Bytes, String)> = {
            let mut m = self.wanted.lock().ok()?;
            let q = m.get_mut(&shard.name)?;
            if q.unrecorded == 0 {
                return None;
            }
            let mut items = Vec::new();
            for w in q.order.iter_mut() {
                if items.len() >= super::exact_fences::MAX_PENDING_PER_TXN {
                    break;
                }
                if w.recorded == Some(false) {
                    w.recorded = Some(true);
                    items.push((w.target_db, w.key.clone(), w.why.clone()));
                }
            }
            q.unrecorded = q.unrecorded.saturating_sub(items.len());
            items
        };
        rec.record_pending(&shard.name, &items)
    }

    fn push(&self, shard: &ShardState, w: Wanted) {
        let Ok(mut m) = self.wanted.lock() else {
            return;
        };
        let q = m.entry(shard.name.clone()).or_default();
        if q.queued.contains(&(w.target_db, w.key.clone())) {
            return;
        }
        if q.order.len() >= MAX_QUEUED {
            KeyRepairFailed {
                shard: &shard.name,
                state: Some(shard),
                key: &w.key,
                db: w.target_db,
                why: &w.why,
                cause: RepairFailure::Overflow,
            }
            .emit();
            return;
        }
        q.queued.insert((w.target_db, w.key.clone()));
        if w.recorded == Some(false) {
            q.unrecorded += 1;
        }
        q.order.push_back(w);
    }

    fn has(&self, shard: &str) -> bool {
        self.wanted
            .lock()
            .map(|m| {
                m.get(shard)
                    .is_some_and(|q| !q.order.is_empty() || q.loaded.is_some())
            })
            .unwrap_or(false)
    }

    /// Up to `max` of a shard's waiting keys, oldest first.
    fn take(&self, shard: &str, max: usize) -> Vec<Wanted> {
        let Ok(mut m) = self.wanted.lock() else {
            return Vec::new();
        };
        let Some(q) = m.get_mut(shard) else {
            return Vec::new();
        };
        let n = q.order.len().min(max);
        let out: Vec<Wanted> = q.order.drain(..n).collect();
        for w in &out {
            q.queued.remove(&(w.target_db, w.key.clone()));
            if w.recorded == Some(false) {
                q.unrecorded = q.unrecorded.saturating_sub(1);
            }
        }
        out
    }
}

/// What a repairer needs to read the source and convert for the target.
#[derive(Clone, Debug)]
pub struct RepairContext {
    /// The source endpoint as configured (credentials); the host is replaced by the shard's
    /// current master.
    pub source: Endpoint,
    pub source_info: ServerInfo,
    pub target_info: ServerInfo,
    pub sync: Arc<SyncSettings>,
    pub cluster_target: bool,
}

/// What became of one key's repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Its copy (or its `DEL`) is in the run; or there is nothing to copy.
    Written,
    /// Given up on (too many attempts).
    GaveUp,
    /// The source could not be read now.
    Failed,
}

/// A key's copy read from the source with the offset it is valid at.
struct Copy {
    payload: Option<Bytes>,
    pttl: i64,
    offset: u64,
}

#[derive(Debug, Default)]
struct Fences {
    /// (source db, key) → (epoch, offset): skip the key's commands at offsets ≤ offset.
    map: HashMap<(u32, Bytes), (u64, u64)>,
    /// (source db, key) → repairs in the current window.
    attempts: HashMap<(u32, Bytes), (u32, Instant)>,
    /// Fences passed whose record on the target is still to delete (see
    /// [`super::exact_fences`]).
    to_delete: std::collections::VecDeque<(u32, Bytes)>,
}

/// One shard's repair side (see the module doc). Clones share the fences (a restarted link
/// replays commands that may still be fenced) but not the connection.
pub struct Repairer {
    queue: Arc<RepairQueue>,
    ctx: Arc<RepairContext>,
    fences: Arc<Mutex<Fences>>,
    conn: Option<(String, RespConn, u32)>,
    /// Copies read ahead for the keys of one [`Repairer::process`] call.
    prefetched: HashMap<(u32, Bytes), Copy>,
}

impl Clone for Repairer {
    fn clone(&self) -> Repairer {
        Repairer {
            queue: self.queue.clone(),
            ctx: self.ctx.clone(),
            fences: self.fences.clone(),
            conn: None,
            prefetched: HashMap::new(),
        }
    }
}

impl Repairer {
    pub fn new(queue: Arc<RepairQueue>, ctx: RepairContext) -> Repairer {
        Repairer {
            queue,
            ctx: Arc::new(ctx),
            fences: Arc::new(Mutex::new(Fences::default())),
            conn: None,
            prefetched: HashMap::new(),
        }
    }

    pub fn queue(&self) -> &Arc<RepairQueue> {
        &self.queue
    }

    /// True when [`Repairer::process`] has something to do for this shard.
    pub fn busy(&self, shard: &ShardState) -> bool {
        self.queue.has(&shard.name)
            || self
                .fences
                .lock()
                .map(|f| !f.map.is_empty() || !f.to_delete.is_empty())
                .unwrap_or(false)
    }

    /// Source databases whose commands land in `target_db`.
    fn source_dbs(&self, target_db: u32) -> Vec<u32> {
        let s = &self.ctx.sync;
        let mut v: Vec<u32> = s
            .db_map
            .iter()
            .filter(|&(_, &t)| t == target_db)
            .map(|(&d, _)| d)
            .collect();
        if s.target_db(target_db, self.ctx.cluster_target) == Some(target_db)
            && !v.contains(&target_db)
        {
            v.insert(0, target_db);
        }
        // Only selected databases are read (`sync.dbs`).
        v.retain(|&d| s.filter.db_selected(d));
        v
    }

    /// Applies queued repairs and fences to a run of stream commands (`ends[i]`: the source
    /// offset after `cmds[i]`). Returns the run to dispatch: repair writes first, the run without
    /// its fenced commands, then the repairs the run itself made necessary.
    pub async fn process(
        &mut self,
        shard: &ShardState,
        epoch: u64,
        run_end: u64,
        cmds: Vec<DbCmd>,
        ends: &[u64],
    ) -> Vec<DbCmd> {
        let mut out = Vec::new();
        let rec = self.queue.records().cloned();
        if let Some(l) = self.queue.take_loaded(&shard.name)
            && let Ok(mut f) = self.fences.lock()
        {
            // Read at start, where the shard resumed: epoch 0 until its first full sync.
            for (db, key, o) in l.fences {
                let e = f.map.entry((db, key)).or_insert((0, 0));
                e.1 = e.1.max(o);
            }
            f.to_delete.extend(l.stale);
        }
        let wanted = self.queue.take(&shard.name, MAX_PER_RUN);
        // One source round trip per database for the whole lot (a storm of rejections must not
        // become a round trip per key); a failed prefetch falls back to reading key by key.
        let mut by_db: HashMap<u32, Vec<Bytes>> = HashMap::new();
        for w in &wanted {
            if let Some(&db) = self.source_dbs(w.target_db).first() {
                by_db.entry(db).or_default().push(w.key.clone());
            }
        }
        for (db, keys) in by_db {
            match self.read_many(shard, db, &keys).await {
                Ok(copies) => {
                    for (k, c) in keys.into_iter().zip(copies) {
                        self.prefetched.insert((db, k), c);
                    }
                }
                Err(_) => self.conn = None,
            }
        }
        // Pending records: deleted with the copy (or when given up), written when the copy
        // could not be read now (a restart then repairs the key).
        let (mut done, mut keep) = (Vec::new(), Vec::new());
        for w in wanted {
            let dbs = self.source_dbs(w.target_db);
            let outcome = if dbs.is_empty() {
                Outcome::Written
            } else {
                self.repair_key(shard, epoch, &dbs, &w.key, &w.why, !w.filtered, &mut out)
                    .await
            };
            match (outcome, w.recorded) {
                (Outcome::Failed, Some(false)) => keep.push((w.target_db, w.key, w.why)),
                (Outcome::Written | Outcome::GaveUp, Some(true)) => done.push((w.target_db, w.key)),
                _ => {}
            }
        }
        if let Some(r) = &rec {
            out.extend(r.delete_pending(&shard.name, &done));
            out.extend(r.record_pending_run(&shard.name, &keep));
        }
        self.prefetched.clear();
        // Filter the run by the fences.
        // (source databases to read from, first where it exists; key; why)
        let mut again: Vec<(Vec<u32>, Bytes, String)> = Vec::new();
        let mut dropped = 0u64;
        {
            let Ok(mut f) = self.fences.lock() else {
                out.extend(cmds);
                return out;
            };
            f.map.retain(|_, (e, _)| *e == epoch);
            for (i, dc) in cmds.into_iter().enumerate() {
                let end = ends.get(i).copied().unwrap_or(u64::MAX);
                let keys = keys_of(&dc.cmd);
                let fenced = |k: &Bytes| {
                    f.map
                        .get(&(dc.db, k.clone()))
                        .is_some_and(|&(_, o)| end <= o)
                };
                // `MOVE`/`COPY … DB`: the key it writes in another database, whose source
                // databases may hold a fence too.
                let dest = cross_db_dest(&dc.cmd)
                    .map(|(tdb, k)| (self.source_dbs(tdb), k))
                    .filter(|(dbs, _)| !dbs.is_empty());
                let dest_fenced = dest.as_ref().is_some_and(|(dbs, k)| {
                    dbs.iter()
                        .any(|&s| f.map.get(&(s, k.clone())).is_some_and(|&(_, o)| end <= o))
                });
                if (!keys.is_empty() && keys.iter().any(fenced)) || dest_fenced {
                    let why = format!(
                        "{} also touched a key being repaired",
                        crate::escape::text(dc.cmd.name())
                    );
                    for k in keys.iter().filter(|k| dest_fenced || !fenced(k)) {
                        again.push((vec![dc.db], k.clone(), why.clone()));
                    }
                    // Skipped, so its destination is copied too.
                    if let Some((dbs, k)) = dest {
                        again.push((dbs, k, why));
                    }
                    dropped += 1;
                    continue;
                }
                if keys.is_empty() {
                    let all = dc.cmd.is("FLUSHALL") || dc.cmd.is("SWAPDB");
                    // SWAPDB's (target) databases: a copy written before it moved to the other.
                    let swap = dc
                        .cmd
                        .is("SWAPDB")
                        .then(|| {
                            let n = |i: usize| {
                                std::str::from_utf8(dc.cmd.args.get(i)?)
                                    .ok()?
                                    .parse::<u32>()
                                    .ok()
                            };
                            Some((n(1)?, n(2)?))
                        })
                        .flatten();
                    if all || dc.cmd.is("FLUSHDB") {
                        let why = format!(
                            "{} ran inside the repair window",
                            crate::escape::text(dc.cmd.name())
                        );
                        for ((db, k), &(_, o)) in f.map.iter() {
                            if end <= o && (all || *db == dc.db) {
                                again.push((vec![*db], k.clone(), why.clone()));
                                let t = self.ctx.sync.target_db(*db, self.ctx.cluster_target);
                                let other = match swap {
                                    Some((x, y)) if t == Some(x) => Some(y),
                                    Some((x, y)) if t == Some(y) => Some(x),
                                    _ => None,
                                };
                                if let Some(o) = other {
                                    again.push((self.source_dbs(o), k.clone(), why.clone()));
                                }
                            }
                        }
                    }
                }
                out.push(dc);
            }
            // Every later command comes after `run_end`: fences at or below it are done (their
            // records are deleted in this run's transaction, which moves the position past).
            let track = rec.is_some();
            let mut passed = Vec::new();
            f.map.retain(|k, (_, o)| {
                let keep = *o > run_end;
                if !keep && track {
                    passed.push(k.clone());
                }
                keep
            });
            f.to_delete.extend(passed);
        }
        if dropped > 0 {
            tracing::debug!(shard = %shard.name, dropped, "stream commands skipped: their keys were copied from the source at a later offset");
        }
        again.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        // Not failures (each follows a stream command inside a fence window), so the give-up
        // rule does not apply: a hot key copied often must not be given up on.
        for (dbs, key, why) in again {
            self.repair_key(shard, epoch, &dbs, &key, &why, false, &mut out)
                .await;
        }
        if let Some(r) = &rec
            && let Ok(mut f) = self.fences.lock()
        {
            let n = f
                .to_delete
                .len()
                .min(super::exact_fences::MAX_DELETES_PER_RUN);
            let gone: Vec<(u32, Bytes)> = f.to_delete.drain(..n).collect();
            // A key fenced again (in this run or since) keeps its record: its HSET is newer.
            let gone: Vec<(u32, Bytes)> = gone
                .into_iter()
                .filter(|k| !f.map.contains_key(k))
                .collect();
            out.extend(r.delete_fences(&shard.name, &gone));
        }
        out
    }

    /// Copies one key from the first of `dbs` where it exists (or deletes it on the target
    /// when it exists in none), installs its fence (recorded on the target in the same run,
    /// see [`super::exact_fences`]) and appends the writes to `out`. `limited`: the give-up
    /// rule applies (not to copies the filters ask for).
    #[allow(clippy::too_many_arguments)]
    async fn repair_key(
        &mut self,
        shard: &ShardState,
        epoch: u64,
        dbs: &[u32],
        key: &Bytes,
        why: &str,
        limited: bool,
        out: &mut Vec<DbCmd>,
    ) -> Outcome {
        let Some(&first_db) = dbs.first() else {
            return Outcome::Written;
        };
        if limited && !self.allow_attempt(first_db, key) {
            KeyRepairFailed {
                shard: &shard.name,
                state: Some(shard),
                key,
                db: first_db,
                why,
                cause: RepairFailure::GaveUp {
                    attempts: MAX_ATTEMPTS,
                    window: ATTEMPT_WINDOW,
                },
            }
            .emit();
            return Outcome::GaveUp;
        }
        let mut found: Option<(u32, Copy)> = None;
        for &db in dbs {
            let read = match self.prefetched.remove(&(db, key.clone())) {
                Some(c) => Ok(c),
                None => self.read(shard, db, key).await,
            };
            match read {
                Ok(c) => {
                    let exists = c.payload.is_some();
                    found = Some((db, c));
                    if exists {
                        break;
                    }
                }
                Err(e) => {
                    self.conn = None;
                    KeyRepairFailed {
                        shard: &shard.name,
                        state: Some(shard),
                        key,
                        db,
                        why,
                        cause: RepairFailure::ReadFailed(&e.to_string()),
                    }
                    .emit();
                    return Outcome::Failed;
                }
            }
        }
        let Some((db, copy)) = found else {
            return Outcome::Written;
        };
        let (mut fence, mut fences) = (copy.offset, 0);
        if let Ok(mut f) = self.fences.lock() {
            let e = f.map.entry((db, key.clone())).or_insert((epoch, 0));
            *e = (epoch, e.1.max(copy.offset));
            fence = e.1;
            fences = f.map.len();
        }
        let now = crate::now_ms() as i64;
        let cmd = match &copy.payload {
            Some(p) if copy.pttl > 0 => {
                crate::cmd!["RESTORE", key, now + copy.pttl, p, "REPLACE", "ABSTTL"]
            }
            Some(p) => crate::cmd!["RESTORE", key, 0i64, p, "REPLACE"],
            None => crate::cmd!["DEL", key],
        };
        let mut cmds = Vec::new();
        crate::convert::rewrite_for_target(cmd, &self.ctx.target_info, now, &mut cmds);
        out.extend(cmds.into_iter().map(|cmd| DbCmd { db, cmd }));
        if let Some(r) = self.queue.records() {
            out.extend(r.record_fence(&shard.name, db, key, fence, fences));
        }
        KeyRepaired {
            shard,
            key,
            db,
            why,
            source_offset: copy.offset,
            exists: copy.payload.is_some(),
        }
        .emit();
        Outcome::Written
    }

    fn allow_attempt(&self, db: u32, key: &Bytes) -> bool {
        let Ok(mut f) = self.fences.lock() else {
            return false;
        };
        let now = Instant::now();
        let e = f.attempts.entry((db, key.clone())).or_insert((0, now));
        if now.duration_since(e.1) > ATTEMPT_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
        let ok = e.0 <= MAX_ATTEMPTS;
        if f.attempts.len() > MAX_QUEUED {
            f.attempts
                .retain(|_, (_, t)| now.duration_since(*t) <= ATTEMPT_WINDOW);
        }
        ok
    }

    /// `SELECT db; MULTI; DUMP key; PTTL key; INFO replication; EXEC` on the shard's master.
    async fn read(&mut self, shard: &ShardState, db: u32, key: &Bytes) -> Result<Copy, SinkError> {
        let mut copies = self.read_many(shard, db, std::slice::from_ref(key)).await?;
        copies.pop().ok_or_else(|| SinkError::Source {
            addr: shard.master_addr(),
            why: "no reply".into(),
        })
    }

    /// Reads `keys` of source database `db` and the source's offset in one transaction on the
    /// shard's master (one round trip for all of them): every copy is valid at that offset.
    async fn read_many(
        &mut self,
        shard: &ShardState,
        db: u32,
        keys: &[Bytes],
    ) -> Result<Vec<Copy>, SinkError> {
        let master = shard.master_addr();
        let fail = |why: String| SinkError::Source {
            addr: master.clone(),
            why,
        };
        if self.conn.as_ref().is_none_or(|(a, _, _)| *a != master) {
            let ep = crate::net::topology::endpoint_at(&self.ctx.source, &master)
                .ok_or_else(|| fail("bad master address".into()))?;
            let c = RespConn::connect(&ep).await?;
            self.conn = Some((master.clone(), c, 0));
        }
        let Some((_, conn, cur_db)) = self.conn.as_mut() else {
            return Err(fail("no connection".into()));
        };
        if *cur_db != db {
            if let Frame::Error(e) = conn.request(&crate::cmd!["SELECT", db]).await? {
                return Err(fail(format!("SELECT {db}: {}", crate::escape::text(&e))));
            }
            *cur_db = db;
        }
        conn.send(&crate::cmd!["MULTI"]).await?;
        for key in keys {
            conn.send(&crate::cmd!["DUMP", key]).await?;
            conn.send(&crate::cmd!["PTTL", key]).await?;
        }
        for c in [crate::cmd!["INFO", "replication"], crate::cmd!["EXEC"]] {
            conn.send(&c).await?;
        }
        // +OK for MULTI, +QUEUED for each queued command.
        for _ in 0..(2 + 2 * keys.len()) {
            if let Frame::Error(e) = conn.read_frame().await? {
                return Err(fail(crate::escape::text(&e)));
            }
        }
        let exec = conn.read_frame().await?;
        let Frame::Array(items) = exec else {
            return Err(fail(format!(
                "EXEC answered {}",
                crate::escape::text(exec.to_text().as_bytes())
            )));
        };
        if items.len() != 2 * keys.len() + 1 {
            return Err(fail(format!(
                "EXEC answered {} replies, not {}",
                items.len(),
                2 * keys.len() + 1
            )));
        }
        let info = items[items.len() - 1]
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let offset = crate::net::client::info_field(&info, "master_repl_offset")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| fail("INFO replication has no master_repl_offset".into()))?;
        let mut out = Vec::with_capacity(keys.len());
        for pair in items[..items.len() - 1].chunks_exact(2) {
            let payload = match &pair[0] {
                Frame::Error(e) => return Err(fail(format!("DUMP: {}", crate::escape::text(e)))),
                f => f.as_bytes().cloned(),
            };
            let pttl = match &pair[1] {
                Frame::Integer(n) => *n,
                _ => -1,
            };
            out.push(Copy {
                payload,
                pttl,
                offset,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_records_are_drained_once_and_follow_the_keys() {
        let q = RepairQueue::new();
        let s = ShardState::new("s".into());
        let cmd = crate::cmd!["RPUSH", "k1", "x"];
        // Records off: nothing to record.
        q.request(&s, 0, &cmd, "why");
        assert!(q.pending_record(&s).is_none());
        assert_eq!(q.take("s", 10)[0].recorded, None);
        q.enable_records(crate::sink::exact_fences::Records {
            exact: Arc::new(crate::sink::exact::Exact {
                prefix: "p:".into(),
                instance: "i".into(),
                run: "0123456789abcdef".into(),
            }),
            cluster: false,
        });
        q.request(&s, 0, &cmd, "why");
        q.request(&s, 3, &crate::cmd!["SET", "k2", "v"], "why");
        let rec = q.pending_record(&s).expect("two keys to record");
        assert_eq!(
            rec.args,
            vec![
                Bytes::from_static(b"HSET"),
                Bytes::from_static(b"p:i:s:repairs"),
                Bytes::from_static(b"0:k1"),
                Bytes::from_static(b"why"),
                Bytes::from_static(b"3:k2"),
                Bytes::from_static(b"why"),
            ]
        );
        assert!(q.pending_record(&s).is_none(), "recorded once");
        // Taken before the writer recorded it: the repair deletes no record.
        q.request(&s, 0, &crate::cmd!["SET", "k3", "v"], "why");
        let taken: Vec<Option<bool>> = q.take("s", 10).iter().map(|w| w.recorded).collect();
        assert_eq!(taken, vec![Some(true), Some(true), Some(false)]);
        assert!(q.pending_record(&s).is_none());
        // Read back at start: queued again, already recorded.
        q.preload(
            "s",
            crate::sink::exact_fences::Loaded {
                pending: vec![(1, Bytes::from_static(b"k4"))],
                ..Default::default()
            },
        );
        assert!(q.has("s"));
        assert!(q.take_loaded("s").is_some() && q.take_loaded("s").is_none());
        let w = q.take("s", 10);
        assert_eq!((w[0].target_db, w[0].recorded), (1, Some(true)));
    }

    #[test]
    fn queues_keys_of_rejected_commands_and_transactions() {
        let q = RepairQueue::new();
        let s = ShardState::new("s".into());
        let cmds = vec![
            DbCmd {
                db: 2,
                cmd: crate::cmd!["SORT", "src", "BY", "w_*", "STORE", "dst"],
            },
            DbCmd {
                db: 0,
                cmd: crate::cmd!["MULTI"],
            },
            DbCmd {
                db: 0,
                cmd: crate::cmd!["SET", "a", "1"],
            },
            DbCmd {
                db: 0,
                cmd: crate::cmd!["RPUSH", "b", "x"],
            },
            DbCmd {
                db: 0,
                cmd: crate::cmd!["EXEC"],
            },
        ];
        q.rejected(
            &s,
            &cmds,
            0,
            &Frame::Error(Bytes::from_static(
                b"ERR BY option of SORT denied in Cluster mode.",
            )),
        );
        q.rejected(
            &s,
            &cmds,
            0,
            &Frame::Error(Bytes::from_static(b"OOM command not allowed")),
        );
        let reply = Frame::Array(vec![
            Frame::Simple(Bytes::from_static(b"OK")),
            Frame::Error(Bytes::from_static(b"WRONGTYPE Operation")),
        ]);
        q.rejected(&s, &cmds, 4, &reply);
        let got: Vec<(u32, Bytes)> = q
            .take("s", usize::MAX)
            .into_iter()
            .map(|w| (w.target_db, w.key))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, Bytes::from_static(b"src")),
                (2, Bytes::from_static(b"dst")),
                (0, Bytes::from_static(b"b")),
            ]
        );
        q.rejected(
            &s,
            &cmds,
            4,
            &Frame::Error(Bytes::from_static(b"EXECABORT Transaction discarded")),
        );
        assert_eq!(q.take("s", usize::MAX).len(), 2);
        assert!(!q.has("s"));
    }
}
