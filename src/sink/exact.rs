//! Exactly-once delivery (`sync.exactly_once`): the *progress keys* that make the target the
//! truth about what it applied. One key per (instance, source shard),
//! `<sync.progress_prefix><sync.instance>:<shard name>`, in target database 0, holding
//! `<replid>:<offset>` — written by the writer inside the same `MULTI`/`EXEC` as the batch it
//! covers (see `writer/txn.rs`), so data and position commit together. During a full sync it
//! holds [`FULL_SYNC_MARK`]: the target then holds a partial copy, which a restart must clear.
//!
//! This module owns the key's name and value format, reading it at start (the resume
//! position), marking a full sync, counting and removing the keys (`shardsync reset`).

use std::sync::Arc;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;

use super::SinkError;
use crate::config::{Endpoint, SyncSettings};
use crate::net::client;
use crate::source::handshake::ReplPosition;

/// Value of a progress key while a full sync is being applied.
pub const FULL_SYNC_MARK: &str = "full-sync";

/// What a progress key says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// No key: the target holds nothing of ours for this shard (or was emptied).
    Absent,
    /// A full sync was being applied: the target holds a partial copy.
    FullSync,
    /// Everything up to this position is applied, exactly once.
    At(ReplPosition),
}

/// The exactly-once settings shared by the writers and the dispatchers.
#[derive(Clone, Debug)]
pub struct Exact {
    pub prefix: String,
    pub instance: String,
    /// This process's run: a random nonce in the writers' connection names, so that the start-up
    /// [`fence`] closes a killed run's connections and never this run's own.
    pub run: String,
}

/// Start of every exactly-once writer connection's name.
const CLIENT_NAME_PREFIX: &str = "shardsync-exact-";

impl Exact {
    /// `Some` unless `sync.exactly_once = false` (whether the target supports it is
    /// [`for_target`]'s question).
    pub fn from_settings(s: &SyncSettings) -> Option<Arc<Exact>> {
        (s.exactly_once != crate::config::ExactlyOnce::Off).then(|| {
            Arc::new(Exact {
                prefix: s.progress_prefix.clone(),
                instance: s.instance.clone(),
                run: new_run_nonce(),
            })
        })
    }

    /// The progress key of source shard `shard` (its stable name).
    pub fn key(&self, shard: &str) -> Bytes {
        Bytes::from(format!("{}{}:{}", self.prefix, self.instance, shard))
    }

    /// Name of this run's writer connections on the target (`CLIENT SETNAME`):
    /// `shardsync-exact-<instance>-<run nonce>`, by which a new process finds and closes those
    /// of a killed run of the same instance (see [`fence`]).
    pub fn client_name(&self) -> String {
        format!("{}-{}", self.instance_client_name(), self.run)
    }

    /// The connection name without the run nonce (also what versions before the nonce used).
    fn instance_client_name(&self) -> String {
        let safe: String = self
            .instance
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect();
        format!("{CLIENT_NAME_PREFIX}{safe}")
    }

    /// True when connection name `name` is a writer of this instance from *another* run (a
    /// killed or still running earlier process; also the nonce-less name of older versions).
    /// Another instance's names never match, even one whose name extends this one's
    /// (`a` and `a-b`): the part after the instance must be exactly one nonce.
    pub fn is_other_run(&self, name: &str) -> bool {
        let base = self.instance_client_name();
        let Some(rest) = name.strip_prefix(base.as_str()) else {
            return false;
        };
        match rest.strip_prefix('-') {
            None => rest.is_empty(),
            Some(nonce) => is_run_nonce(nonce) && nonce != self.run,
        }
    }

    /// Prefix of this instance's keys (for `reset`).
    pub fn instance_prefix(&self) -> String {
        format!("{}{}:", self.prefix, self.instance)
    }
}

/// Characters of a run nonce (hex digits of a random `u64`).
const RUN_NONCE_LEN: usize = 16;

/// A fresh run nonce.
fn new_run_nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn is_run_nonce(s: &str) -> bool {
    s.len() == RUN_NONCE_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A position in a shard's command stream as the writers order it: `(offset, pieces)` — every
/// command up to the source offset, plus the first `pieces` batches of the command after it
/// when that command (a large `RESTORE` rewritten for an older target) is written as several
/// batches; 0 for whole runs.
pub type Pos = (u64, u32);

/// The value written for a position: `<replid>:<offset>:<source db selected there>`.
pub fn value(replid: &str, offset: u64, db: u32) -> Bytes {
    Bytes::from(format!("{replid}:{offset}:{db}"))
}

/// [`value`] for a [`Pos`]: `:<pieces>` is appended when pieces of the next command are in.
pub fn value_at(replid: &str, (offset, pieces): Pos, db: u32) -> Bytes {
    if pieces == 0 {
        return value(replid, offset, db);
    }
    Bytes::from(format!("{replid}:{offset}:{db}:{pieces}"))
}

/// A progress key's value that is not shardsync's format (what it holds, shown escaped).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadValue(String);

/// Parses a progress key's value (`None`: the key is absent). A position inside a command's
/// pieces resumes before that command (its rewrite starts with `DEL`, so writing it whole again
/// is exact).
pub fn parse(v: Option<&[u8]>) -> Result<Progress, BadValue> {
    parse_pieces(v).map(|(p, _)| p)
}

/// [`parse`], with the pieces of the next command the value counts (0 for a whole position).
fn parse_pieces(v: Option<&[u8]>) -> Result<(Progress, u32), BadValue> {
    let Some(v) = v else {
        return Ok((Progress::Absent, 0));
    };
    if v == FULL_SYNC_MARK.as_bytes() {
        return Ok((Progress::FullSync, 0));
    }
    let text = std::str::from_utf8(v).map_err(|_| BadValue("not UTF-8".to_string()))?;
    let bad = || {
        BadValue(format!(
            "{} is not REPLID:OFFSET:DB",
            crate::escape::text(v)
        ))
    };
    let mut parts = text.split(':');
    let (Some(replid), Some(off), db, pieces, None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    let offset = off.parse().map_err(|_| bad())?;
    let db = match db {
        Some(d) => d.parse().map_err(|_| bad())?,
        None => 0,
    };
    let pieces = match pieces {
        Some(n) => n.parse().map_err(|_| bad())?,
        None => 0,
    };
    if replid.is_empty() || replid.len() > 64 {
        return Err(bad());
    }
    Ok((
        Progress::At(ReplPosition {
            replid: replid.to_string(),
            offset,
            db,
        }),
        pieces,
    ))
}

/// The offset a progress value names, if it names one.
pub fn offset_of(v: Option<&[u8]>) -> Option<u64> {
    pos_of(v).map(|(offset, _)| offset)
}

/// The position a progress value names, if it names one (the writer's resend check).
pub fn pos_of(v: Option<&[u8]>) -> Option<Pos> {
    match parse_pieces(v) {
        Ok((Progress::At(p), pieces)) => Some((p.offset, pieces)),
        _ => None,
    }
}

/// A connection to database 0 of `ep` (where the progress keys and the repair records live).
pub(super) async fn conn_db0(ep: &Endpoint) -> Result<MultiplexedConnection, SinkError> {
    let mut c = client::connect("target", ep).await?;
    redis::cmd("SELECT")
        .arg(0)
        .query_async::<()>(&mut c)
        .await
        .map_err(|e| SinkError::command(ep, "SELECT 0", &e))?;
    Ok(c)
}

/// Reads the progress key `key` from the target (after [`fence`]). A position inside a
/// command's pieces is set back to the position before that command, where the shard resumes:
/// this run writes the command whole again, and its writers must not take their own first
/// pieces for ones the target already holds (see `writer/txn.rs`, `skip_committed`).
pub async fn read(ep: &Endpoint, key: &[u8]) -> Result<Progress, SinkError> {
    let mut c = conn_db0(ep).await?;
    let v: Option<Vec<u8>> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .map_err(|e| SinkError::command(ep, "GET progress key", &e))?;
    let (p, pieces) = parse_pieces(v.as_deref()).map_err(|e| SinkError::Command {
        addr: ep.to_string(),
        what: format!("progress key {}", crate::escape::quoted(key)),
        why: format!("holds {e}; delete it (the shard then starts with a full sync)"),
    })?;
    if let (Progress::At(at), true) = (&p, pieces > 0) {
        redis::cmd("SET")
            .arg(key)
            .arg(&value(&at.replid, at.offset, at.db)[..])
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| SinkError::command(ep, "SET progress key", &e))?;
    }
    Ok(p)
}

/// Marks a full sync as started: from now until the first position is written, the target
/// holds a partial copy of the shard.
pub async fn mark_full_sync(ep: &Endpoint, key: &[u8]) -> Result<(), SinkError> {
    let mut c = conn_db0(ep).await?;
    redis::cmd("SET")
        .arg(key)
        .arg(FULL_SYNC_MARK)
        .query_async::<()>(&mut c)
        .await
        .map_err(|e| SinkError::command(ep, "SET progress key", &e))
}

/// The keys starting with `prefix` in database 0 of `ep`.
pub async fn list(ep: &Endpoint, prefix: &str) -> Result<Vec<Vec<u8>>, SinkError> {
    let mut c = conn_db0(ep).await?;
    let mut cursor = 0u64;
    let mut out = Vec::new();
    let pattern = format!("{}*", glob_escape(prefix));
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .map_err(|e| SinkError::command(ep, "SCAN", &e))?;
        out.extend(keys);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// How many progress keys (any instance) the target's masters hold; 0 without asking when the
/// target holds no key at all (`total`), or on an error (the precheck then counts them as data).
pub async fn count_on(target: &crate::net::topology::Topology, prefix: &str, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    let mut n = 0u64;
    for m in target.masters() {
        if let Ok(keys) = list(&m.endpoint, prefix).await {
            n += keys.len() as u64;
        }
    }
    n
}

/// Removes the keys starting with `prefix` from database 0 of `ep`; returns how many.
pub async fn remove(ep: &Endpoint, prefix: &str) -> Result<usize, SinkError> {
    let keys = list(ep, prefix).await?;
    if keys.is_empty() {
        return Ok(0);
    }
    let mut c = conn_db0(ep).await?;
    let mut del = redis::cmd("DEL");
    for k in &keys {
        del.arg(k.as_slice());
    }
    del.query_async::<i64>(&mut c)
        .await
        .map_err(|e| SinkError::command(ep, "DEL", &e))?;
    Ok(keys.len())
}

/// Escapes glob characters so a prefix matches literally in `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// True when `cmd`'s first argument after the name starts with `prefix`: a progress key of some
/// shardsync (a cascade's upstream instance writes them into our source); never copied on.
pub fn is_progress_write(prefix: &[u8], cmd: &crate::cmd::Cmd) -> bool {
    !prefix.is_empty() && cmd.args.get(1).is_some_and(|k| k.starts_with(prefix))
}

/// The exactly-once settings for a target: `None` when off, or when `unsupported` (`auto` on a
/// cluster target, served per slot only with `true`, see [`super::exact_slots`]): then the
/// target is at-least-once, with a warning only if the user asked for exactly-once explicitly
/// (`true`); the default (`auto`) stays quiet. Several targets: [`super::exact_many`].
pub fn for_target(s: &SyncSettings, unsupported: bool) -> Option<Arc<Exact>> {
    let e = Exact::from_settings(s)?;
    if unsupported {
        if s.exactly_once == crate::config::ExactlyOnce::On {
            tracing::warn!(
                "sync.exactly_once is not available for this target: delivery is at-least-once (a crash may apply the last writes twice)"
            );
        }
        return None;
    }
    Some(e)
}

/// With `sync.exactly_once = "auto"`: `exact` unless the target user may not run what
/// exactly-once needs (progress keys, `CLIENT …`); then the run is at-least-once, logged at info
/// level with the denied commands (the default must keep working for a restricted user).
pub async fn if_permitted(
    cfg: &crate::config::Config,
    ep: &Endpoint,
    topology: &crate::net::topology::Topology,
    exact: Option<Arc<Exact>>,
) -> Option<Arc<Exact>> {
    let seven = topology.masters().iter().any(|m| m.info.at_least(7, 0));
    match crate::precheck_acl::exact_denied(cfg, ep, seven).await {
        Ok(denied) if denied.is_empty() => exact,
        Ok(denied) => {
            tracing::info!(
                denied = %denied.join(", "),
                "exactly-once is off: the target user may not run these commands (delivery is at-least-once; grant them or set sync.exactly_once = false to silence this)"
            );
            None
        }
        // The writers' own connection reports an unreachable target.
        Err(_) => exact,
    }
}

/// The ids of the clients in a `CLIENT LIST` reply whose name satisfies `pick`.
pub fn ids_where(list: &str, pick: impl Fn(&str) -> bool) -> Vec<u64> {
    list.lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.strip_prefix("name=").is_some_and(&pick))
        })
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// The ids of the clients named `name` in a `CLIENT LIST` reply.
pub fn ids_named(list: &str, name: &str) -> Vec<u64> {
    ids_where(list, |n| n == name)
}

/// Closes the writer connections an earlier process of this instance left on the target
/// (`CLIENT KILL ID`), so none of their pipelined transactions can commit after the progress
/// keys are read: a SIGKILLed process's last transactions may still sit in the target's socket
/// buffer. After `CLIENT KILL`, the target runs no further command of that client. Only other
/// runs' connections are closed ([`Exact::is_other_run`]): this run's writers connect while the
/// fence runs and must survive it.
pub async fn fence(ep: &Endpoint, exact: &Exact) -> Result<usize, SinkError> {
    let mut c = client::connect("target", ep).await?;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c)
        .await
        .map_err(|e| SinkError::command(ep, "CLIENT LIST", &e))?;
    let ids = ids_where(&list, |n| exact.is_other_run(n));
    for id in &ids {
        let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(*id)
            .query_async(&mut c)
            .await;
    }
    Ok(ids.len())
}

/// Reads every source shard's progress key (by shard name) from a standalone target.
pub async fn read_all(
    exact: Option<&Exact>,
    target: &Endpoint,
    source: &crate::net::topology::Topology,
) -> std::collections::HashMap<String, Result<Progress, SinkError>> {
    let mut out = std::collections::HashMap::new();
    let Some(exact) = exact else {
        return out;
    };
    match fence(target, exact).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            connections = n,
            "closed the target connections a previous run of this instance left open"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not close the target connections of a previous run (CLIENT LIST/KILL); a transaction it left in flight could still commit")
        }
    }
    for m in source.masters() {
        let name = m.endpoint.to_string();
        let p = read(target, &exact.key(&name)).await;
        out.insert(name, p);
    }
    out
}

/// True when some progress key shows the target holds data of ours.
pub fn any_ours(progress: &std::collections::HashMap<String, Result<Progress, SinkError>>) -> bool {
    progress
        .values()
        .any(|p| matches!(p, Ok(Progress::At(_)) | Ok(Progress::FullSync)))
}

/// Where a shard resumes in exactly-once mode, from its progress key (`progress`; `None` when
/// the mode is off) and the local checkpoint (a hint). Returns the position and whether the
/// target holds a copy of ours that a full sync must clear first.
pub fn resume_from(
    shard: &crate::observe::progress::ShardState,
    checkpoint: Option<ReplPosition>,
    progress: Option<&Result<Progress, SinkError>>,
) -> (Option<ReplPosition>, bool) {
    let Some(progress) = progress else {
        return (checkpoint, false);
    };
    match progress {
        Ok(Progress::At(p)) => {
            if checkpoint.as_ref().is_some_and(|c| c.offset != p.offset) {
                tracing::info!(shard = %shard.name, checkpoint_offset = checkpoint.as_ref().map(|c| c.offset),
                    "the local checkpoint differs from the target's progress key; the target is the truth");
            }
            tracing::info!(shard = %shard.name, replid = %p.replid, offset = p.offset,
                "found the target's progress key; will resume exactly there");
            (Some(p.clone()), false)
        }
        Ok(Progress::FullSync) => {
            tracing::warn!(shard = %shard.name,
                "the target holds an unfinished full sync of this shard (progress key); it is cleared and the full sync starts over");
            (None, true)
        }
        Ok(Progress::Absent) => {
            if checkpoint.is_some() {
                tracing::warn!(shard = %shard.name,
                    "a checkpoint exists but the target has no progress key (emptied, or written without exactly-once): starting with a full sync");
            }
            (None, checkpoint.is_some())
        }
        Err(e) => {
            shard.mark_failed(e.to_string());
            (None, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_on_for_one_standalone_target_only_and_false_is_off() {
        use crate::config::ExactlyOnce;
        let with = |e| SyncSettings {
            exactly_once: e,
            ..Default::default()
        };
        assert!(for_target(&with(ExactlyOnce::Auto), false).is_some());
        assert!(for_target(&with(ExactlyOnce::Auto), true).is_none());
        assert!(for_target(&with(ExactlyOnce::On), false).is_some());
        assert!(for_target(&with(ExactlyOnce::On), true).is_none());
        assert!(for_target(&with(ExactlyOnce::Off), false).is_none());
    }

    #[test]
    fn values_round_trip() {
        let v = value(&"a".repeat(40), 1234, 2);
        assert_eq!(
            parse(Some(&v)).unwrap(),
            Progress::At(ReplPosition {
                replid: "a".repeat(40),
                offset: 1234,
                db: 2,
            })
        );
        assert_eq!(parse(None).unwrap(), Progress::Absent);
        assert_eq!(parse(Some(b"full-sync")).unwrap(), Progress::FullSync);
        assert!(parse(Some(b"garbage")).is_err());
        assert!(parse(Some(b":12")).is_err());
        assert!(parse(Some(b"a:1:2:3:4")).is_err());
        assert!(parse(Some(b"a:1:2:x")).is_err());
        assert_eq!(pos_of(Some(b"abc:77")), Some((77, 0)));
        // Inside a command's pieces: resumes before the command, ordered after it.
        let v = value_at("r", (77, 3), 1);
        assert_eq!(&v[..], b"r:77:1:3");
        assert_eq!(pos_of(Some(&v)), Some((77, 3)));
        assert_eq!(
            parse(Some(&v)).unwrap(),
            Progress::At(ReplPosition {
                replid: "r".into(),
                offset: 77,
                db: 1,
            })
        );
        assert_eq!(&value_at("r", (77, 0), 1)[..], b"r:77:1");
        assert!((77, 0) < (77, 1) && (77, 9) < (78, 0));
        let e = Exact {
            prefix: "__shardsync:progress:".into(),
            instance: "a".into(),
            run: "0123456789abcdef".into(),
        };
        assert_eq!(
            &e.key("10.0.0.1:6379")[..],
            b"__shardsync:progress:a:10.0.0.1:6379"
        );
        assert_eq!(glob_escape("a*b[c]"), "a\\*b\\[c\\]");
        let list = "id=3 addr=127.0.0.1:1 name=shardsync-exact-a age=1\nid=4 addr=x name= age=2\nid=9 name=shardsync-exact-a\n";
        assert_eq!(ids_named(list, "shardsync-exact-a"), vec![3, 9]);
    }

    #[test]
    fn the_fence_picks_other_runs_of_this_instance_only() {
        let e = Exact {
            prefix: "p:".into(),
            instance: "a".into(),
            run: "0123456789abcdef".into(),
        };
        assert_eq!(e.client_name(), "shardsync-exact-a-0123456789abcdef");
        let list = "\
id=1 name=shardsync-exact-a-0123456789abcdef
id=2 name=shardsync-exact-a-fedcba9876543210
id=3 name=shardsync-exact-a
id=4 name=shardsync-exact-a-b-fedcba9876543210
id=5 name=shardsync-exact-ab-fedcba9876543210
id=6 name=shardsync-exact-a-fedcba987654321
id=7 name=
";
        // Another run of `a` (2) and an older version's nonce-less name (3); never this run
        // (1), instance `a-b` (4) or `ab` (5), or a name that is not `a` plus one nonce (6).
        assert_eq!(ids_where(list, |n| e.is_other_run(n)), vec![2, 3]);
        let fresh = Exact::from_settings(&SyncSettings {
            exactly_once: crate::config::ExactlyOnce::On,
            ..Default::default()
        })
        .expect("on");
        assert!(is_run_nonce(&fresh.run));
        assert!(!fresh.is_other_run(&fresh.client_name()));
    }
}
