//! Key repairs across a crash (exactly-once, see [`super::exact`] and [`super::repair`]): the
//! records on the target that let a repair's *fence* and the keys *pending* repair survive a
//! `kill -9` of shardsync.
//!
//! - **Fences.** When a repair's copy is put in front of a run, the same run (so the same
//!   `MULTI`/`EXEC`, with the position) writes `HSET <fences key> <db>:<key> <offset>`: the key's
//!   stream commands up to that source offset are already in the copy. On start the fences still
//!   ahead of the resume position are loaded back into the repairer; a replayed command of such a
//!   key is skipped as before the crash. A fence the position passed is deleted in the
//!   transaction that moves the position past it (at most [`MAX_DELETES_PER_RUN`] fields per
//!   run; the rest in the next runs); one a crash left behind is ignored at start and deleted
//!   the same way.
//!   Standalone target: one hash per source shard, `<prefix><instance>:<shard>:fences`.
//!   Cluster target: one hash per slot, `<prefix><instance>:<shard>:fences:{tag}` with the tag of
//!   the repaired key's slot ([`super::exact_slots::tag`]), so the record commits in that slot's
//!   transaction and moves with the slot.
//! - **Pending repairs** (standalone target). A key handed to the repair queue (a write the
//!   target rejected, …) is recorded in `HSET <prefix><instance>:<shard>:repairs <db>:<key>
//!   <why>` by the first transaction the writer encodes after it learned of it; the repair's
//!   copy deletes the record in its own transaction. On start the records are queued again.
//!   A rejection inside `EXEC` is known only after that `EXEC` committed the position past the
//!   write: a crash between that commit and the commit of the next transaction (the batches
//!   already pipelined behind it) still loses the record (README, *Exactly once*).
//!
//! Fields are `<db>:` followed by the key's bytes (hash fields are binary-safe); keys longer
//! than [`MAX_RECORD_KEY`] bytes are not recorded (logged). Everything lives under
//! `sync.progress_prefix` in database 0, so the precheck, `verify`, a cascade and the reset step
//! treat these keys like the progress keys. A full sync deletes the shard's records.
//!
//! The repairer's commands reach target database 0 through [`RECORD_DB`] (a source database no
//! source has), mapped by [`target_db`] in the dispatcher.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::SinkError;
use super::exact::{Exact, Progress};
use super::repair::RepairQueue;
use super::targets::Targets;
use crate::cmd::{Cmd, DbCmd};
use crate::config::{Endpoint, SyncSettings};

/// The "source database" of a record command: written into target database 0 as it is.
pub const RECORD_DB: u32 = u32::MAX;
/// Keys longer than this are not recorded (their fence or pending repair stays in memory).
pub const MAX_RECORD_KEY: usize = 4096;
/// Fence fields deleted per run at most.
pub const MAX_DELETES_PER_RUN: usize = 256;
/// Pending repairs recorded per writer transaction at most.
pub const MAX_PENDING_PER_TXN: usize = 1024;
/// Records read back per shard and kind at start at most (the repair queue's bound).
pub const MAX_LOADED: usize = 10_000;
/// Bytes of a pending record's value (the reason, for a person reading the target).
const MAX_WHY: usize = 200;

/// [`SyncSettings::target_db`], with [`RECORD_DB`] mapped to database 0.
pub fn target_db(sync: &SyncSettings, db: u32, cluster: bool) -> Option<u32> {
    if db == RECORD_DB {
        return Some(0);
    }
    sync.target_db(db, cluster)
}

/// A record's field: `<db>:<key>`; `None` when the key is too long to record.
pub fn field(db: u32, key: &[u8]) -> Option<Bytes> {
    if key.len() > MAX_RECORD_KEY {
        return None;
    }
    let mut f = format!("{db}:").into_bytes();
    f.extend_from_slice(key);
    Some(Bytes::from(f))
}

/// The `(db, key)` of a record's field.
pub fn parse_field(f: &[u8]) -> Option<(u32, Bytes)> {
    let colon = f.iter().position(|&b| b == b':')?;
    let db = std::str::from_utf8(&f[..colon]).ok()?.parse().ok()?;
    Some((db, Bytes::copy_from_slice(&f[colon + 1..])))
}

/// Names and writes the records of one target (set on the target's [`RepairQueue`] when
/// exactly-once is on).
#[derive(Clone, Debug)]
pub struct Records {
    pub exact: Arc<Exact>,
    pub cluster: bool,
}

impl Records {
    /// `<prefix><instance>:<shard>:fences` (every fence key of the shard starts with it).
    fn fences_base(&self, shard: &str) -> String {
        format!("{}:fences", String::from_utf8_lossy(&self.exact.key(shard)))
    }

    /// The hash holding `key`'s fence.
    pub fn fences_key(&self, shard: &str, key: &[u8]) -> Bytes {
        let base = self.fences_base(shard);
        if !self.cluster {
            return Bytes::from(base);
        }
        let tag = super::exact_slots::tag(crate::router::key_slot(key));
        Bytes::from(format!("{base}:{{{tag}}}"))
    }

    /// The hash of the shard's pending repairs (standalone target).
    pub fn pending_key(&self, shard: &str) -> Bytes {
        Bytes::from(format!(
            "{}:repairs",
            String::from_utf8_lossy(&self.exact.key(shard))
        ))
    }

    /// Pending repairs are recorded on a standalone target only.
    pub fn records_pending(&self) -> bool {
        !self.cluster
    }

    /// `HSET <fences key> <db>:<key> <offset>`; `None` when the key is too long to record, or
    /// when the shard holds `fences` fences, more than [`MAX_LOADED`] (logged: a crash before
    /// the position passes that fence may apply the key's commands twice).
    pub fn record_fence(
        &self,
        shard: &str,
        db: u32,
        key: &[u8],
        offset: u64,
        fences: usize,
    ) -> Option<DbCmd> {
        let f = field(db, key).filter(|_| fences <= MAX_LOADED);
        let Some(f) = f else {
            if let Some(suppressed) = crate::observe::lograte::allow(shard, "fence-unrecorded") {
                tracing::warn!(
                    shard,
                    db,
                    key_bytes = key.len(),
                    fences,
                    suppressed,
                    "a repair's fence is not recorded on the target (key longer than 4096 bytes, or more than 10000 fences at once); a crash before the position passes it may apply the key's commands twice"
                );
            }
            return None;
        };
        Some(DbCmd {
            db: RECORD_DB,
            cmd: crate::cmd!["HSET", self.fences_key(shard, key), f, offset],
        })
    }

    /// `HDEL`s of the fences of `keys` (one per fence hash).
    pub fn delete_fences(&self, shard: &str, keys: &[(u32, Bytes)]) -> Vec<DbCmd> {
        let mut by_hash: Vec<(Bytes, Cmd)> = Vec::new();
        for (db, key) in keys {
            let Some(f) = field(*db, key) else { continue };
            let h = self.fences_key(shard, key);
            match by_hash.iter_mut().find(|(k, _)| *k == h) {
                Some((_, c)) => c.args.push(f),
                None => by_hash.push((h.clone(), crate::cmd!["HDEL", h, f])),
            }
        }
        by_hash
            .into_iter()
            .map(|(_, cmd)| DbCmd { db: RECORD_DB, cmd })
            .collect()
    }

    /// `HSET <repairs key> <db>:<key> <why> …` for the writer (target database 0).
    pub fn record_pending(&self, shard: &str, items: &[(u32, Bytes, String)]) -> Option<Cmd> {
        let mut cmd = crate::cmd!["HSET", self.pending_key(shard)];
        for (db, key, why) in items {
            let Some(f) = field(*db, key) else { continue };
            let mut why = why.clone();
            if why.len() > MAX_WHY {
                let mut end = MAX_WHY;
                while !why.is_char_boundary(end) {
                    end -= 1;
                }
                why.truncate(end);
            }
            cmd.args.push(f);
            cmd.args.push(Bytes::from(why));
        }
        (cmd.args.len() > 2).then_some(cmd)
    }

    /// `HDEL <repairs key> <db>:<key> …` in a run of the repairer.
    pub fn delete_pending(&self, shard: &str, keys: &[(u32, Bytes)]) -> Option<DbCmd> {
        let mut cmd = crate::cmd!["HDEL", self.pending_key(shard)];
        cmd.args
            .extend(keys.iter().filter_map(|(db, k)| field(*db, k)));
        (cmd.args.len() > 2).then_some(DbCmd { db: RECORD_DB, cmd })
    }

    /// `HSET <repairs key> …` in a run of the repairer (a repair that could not be written now).
    pub fn record_pending_run(&self, shard: &str, items: &[(u32, Bytes, String)]) -> Option<DbCmd> {
        self.record_pending(shard, items)
            .map(|cmd| DbCmd { db: RECORD_DB, cmd })
    }
}

/// What a shard's records said at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// `(source db, key, offset)`: fences ahead of the resume position.
    pub fences: Vec<(u32, Bytes, u64)>,
    /// Fences the position already passed (deleted in the next runs).
    pub stale: Vec<(u32, Bytes)>,
    /// `(target db, key)`: repairs that were pending.
    pub pending: Vec<(u32, Bytes)>,
}

/// Up to `max` field/value pairs of hash `key` (`HSCAN`).
async fn hscan(
    c: &mut redis::aio::MultiplexedConnection,
    ep: &Endpoint,
    key: &[u8],
    max: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, SinkError> {
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, flat): (u64, Vec<Vec<u8>>) = redis::cmd("HSCAN")
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await
            .map_err(|e| SinkError::command(ep, "HSCAN repair records", &e))?;
        let mut it = flat.into_iter();
        while let (Some(f), Some(v)) = (it.next(), it.next()) {
            out.push((f, v));
        }
        if next == 0 || out.len() >= max {
            out.truncate(max);
            return Ok(out);
        }
        cursor = next;
    }
}

/// Reads shard `shard`'s records from every master of the target; `resume`: the offset the
/// shard resumes at.
pub async fn load(
    targets: &Targets,
    rec: &Records,
    shard: &str,
    resume: u64,
) -> Result<Loaded, SinkError> {
    let mut out = Loaded::default();
    let base = rec.fences_base(shard);
    let pending = rec.pending_key(shard);
    for ep in targets.master_endpoints() {
        let mut c = super::exact::conn_db0(&ep).await?;
        for key in super::exact::list(&ep, &base).await? {
            for (f, v) in hscan(&mut c, &ep, &key, MAX_LOADED).await? {
                let Some((db, k)) = parse_field(&f) else {
                    continue;
                };
                match std::str::from_utf8(&v)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    Some(o) if o > resume && out.fences.len() < MAX_LOADED => {
                        out.fences.push((db, k, o))
                    }
                    _ => out.stale.push((db, k)),
                }
            }
        }
        if rec.records_pending() {
            for (f, _) in hscan(&mut c, &ep, &pending, MAX_LOADED).await? {
                if let Some(p) = parse_field(&f) {
                    out.pending.push(p);
                }
            }
        }
    }
    Ok(out)
}

/// At start, after the progress keys were read: loads each resuming shard's records into the
/// target's repair queue (nothing when the queue records nothing, i.e. exactly-once is off).
pub async fn load_all(
    queue: &RepairQueue,
    targets: &Targets,
    progress: &HashMap<String, Result<Progress, SinkError>>,
) {
    let Some(rec) = queue.records() else { return };
    for (shard, p) in progress {
        let Ok(Progress::At(at)) = p else { continue };
        match load(targets, rec, shard, at.offset).await {
            Ok(l) => {
                if !l.fences.is_empty() || !l.pending.is_empty() {
                    tracing::info!(shard = %shard, fences = l.fences.len(), pending = l.pending.len(),
                        "found key repairs of a previous run on the target: fenced keys skip their replayed commands, pending repairs are queued again");
                }
                queue.preload(shard, l);
            }
            Err(e) => {
                tracing::warn!(shard = %shard, error = %e, "could not read the key repair records on the target; a key repaired just before the crash may get its replayed commands twice")
            }
        }
    }
}

/// Before a full sync of `shard`: deletes its records (their offsets mean nothing in the new
/// history; the full sync copies every key anyway).
pub async fn clear(queue: &RepairQueue, targets: &Targets, shard: &str) {
    let Some(rec) = queue.records() else { return };
    let base = rec.fences_base(shard);
    let pending = rec.pending_key(shard);
    for ep in targets.master_endpoints() {
        let r = async {
            // The keys listed on this master live there (on a cluster, in its slots).
            let mut keys = super::exact::list(&ep, &base).await?;
            if rec.records_pending() {
                keys.push(pending.to_vec());
            }
            let mut c = super::exact::conn_db0(&ep).await?;
            for k in keys {
                // One key per DEL: on a cluster the keys are in different slots.
                let _: i64 = redis::cmd("DEL")
                    .arg(k)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| SinkError::command(&ep, "DEL repair records", &e))?;
            }
            Ok::<(), SinkError>(())
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(shard, error = %e, "could not delete the key repair records before a full sync");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cluster: bool) -> Records {
        Records {
            exact: Arc::new(Exact {
                prefix: "__shardsync:progress:".into(),
                instance: "a".into(),
                run: "0123456789abcdef".into(),
            }),
            cluster,
        }
    }

    #[test]
    fn fields_are_binary_safe_and_bounded() {
        let key = Bytes::from_static(b"k:\x00\xff\r\n{x}");
        let f = field(3, &key).expect("short key");
        assert_eq!(parse_field(&f), Some((3, key)));
        assert!(field(0, &vec![b'x'; MAX_RECORD_KEY + 1]).is_none());
        assert!(parse_field(b"x:1").is_none());
        assert_eq!(
            target_db(&SyncSettings::default(), RECORD_DB, false),
            Some(0)
        );
    }

    #[test]
    fn record_keys_are_under_the_prefix_and_in_the_key_slot_on_a_cluster() {
        let s = rec(false);
        assert_eq!(
            &s.fences_key("h:1", b"k")[..],
            b"__shardsync:progress:a:h:1:fences"
        );
        assert_eq!(
            &s.pending_key("h:1")[..],
            b"__shardsync:progress:a:h:1:repairs"
        );
        let c = rec(true);
        for key in [&b"user:1"[..], b"{t}x", b"\xff\x00"] {
            let h = c.fences_key("h:1", key);
            assert!(h.starts_with(b"__shardsync:progress:a:h:1:fences:{"));
            assert_eq!(
                crate::router::key_slot(&h),
                crate::router::key_slot(key),
                "{h:?}"
            );
        }
        // Deletions are grouped per hash.
        let d = c.delete_fences(
            "h:1",
            &[
                (0, Bytes::from_static(b"{t}a")),
                (0, Bytes::from_static(b"{t}b")),
                (0, Bytes::from_static(b"z")),
            ],
        );
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].cmd.args.len(), 4);
        let p = s
            .record_pending("h:1", &[(2, Bytes::from_static(b"k"), "é".repeat(150))])
            .expect("one");
        assert_eq!(p.args.len(), 4);
        assert!(p.args[3].len() <= MAX_WHY);
        assert!(s.record_pending("h:1", &[]).is_none());
    }
}
