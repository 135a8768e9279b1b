//! `shardsync verify`: compares the source and the target before a cut-over, key by key, with
//! bounded memory and a rate limit.
//!
//! Two passes, each over SCAN pages (or a `RANDOMKEY` sample) processed one page at a time:
//! 1. every source key (per selected database, mapped by `db_map`) is compared with the target:
//!    existence, type, value and TTL within a tolerance, stream entries and consumer groups
//!    ([`compare`], [`stream`]); big values are compared in chunks;
//! 2. every target key is looked up on the source (`EXISTS` in each source database mapped to its
//!    database): keys only on the target are *extra*.
//!
//! A key that differs is queued and compared once more after `recheck_ms`, so writes in flight
//! (a sync still applying them) are not reported; the queue is bounded, and when it is full the
//! scan waits for its oldest entry. Both sides may be standalone or a cluster ([`side`]); keys are
//! routed by CRC16 slot. Keys are chosen by a [`KeyFilter`] (today: ignored prefixes such as the
//! heartbeat key; database selection and include/exclude filters plug in there). The result is a
//! [`report::Report`], printed as text or JSON.

pub mod compare;
pub mod report;
pub mod side;
pub mod stream;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cmd::Cmd;
use crate::config::Config;
use crate::resp::Frame;

use compare::{Limits, Outcome, cmd, compare_batch, int};
pub use report::Report;
use report::{Difference, Kind, Reason, Totals, quote};
use side::Side;

/// Why a verification could not be completed (exit code 2). Never contains a password.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Net(String),
    #[error("the {role} answered {what} with an error: {reply}")]
    Reply {
        role: &'static str,
        what: String,
        reply: String,
    },
    #[error("{0}")]
    Config(String),
}

/// Which keys take part. The hook for database selection and key filters: a key the filter
/// rejects is skipped on both sides (counted as ignored).
pub trait KeyFilter: Send + Sync {
    /// Whether source database `db` is synced at all.
    fn db_selected(&self, _db: u32) -> bool {
        true
    }
    /// Whether `key` of source database `db` is synced.
    fn key_selected(&self, db: u32, key: &[u8]) -> bool;
}

/// Skips keys starting with any of the prefixes (shardsync's own keys: the heartbeat, progress).
#[derive(Clone, Debug, Default)]
pub struct IgnorePrefixes(pub Vec<Vec<u8>>);

impl KeyFilter for IgnorePrefixes {
    fn key_selected(&self, _db: u32, key: &[u8]) -> bool {
        !self.0.iter().any(|p| key.starts_with(p))
    }
}

/// The run's own selection (`sync.dbs`, `sync.filter`) plus the ignored prefixes: verify
/// compares exactly what `run` syncs.
#[derive(Clone, Debug, Default)]
pub struct SyncFilter {
    pub ignore: IgnorePrefixes,
    pub filter: crate::router::filter::Filter,
}

impl KeyFilter for SyncFilter {
    fn db_selected(&self, db: u32) -> bool {
        self.filter.db_selected(db)
    }
    fn key_selected(&self, db: u32, key: &[u8]) -> bool {
        self.ignore.key_selected(db, key) && self.filter.keep_key(db, key)
    }
}

/// Settings of one verification.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// `Some(n)`: compare a random sample of `n` keys per side (`RANDOMKEY`) instead of all.
    pub sample: Option<u64>,
    /// Keys per second over both passes; 0 is unlimited.
    pub rate: u64,
    pub ttl_tolerance_ms: u64,
    /// Wait before re-checking a differing key; 0 reports at once.
    pub recheck_ms: u64,
    /// Differences listed in the report (counts stay exact).
    pub max_report: usize,
    /// Keys per SCAN page (the `COUNT` hint) and per pipeline.
    pub page: usize,
    /// Differing keys waiting for their re-check, at most.
    pub recheck_queue: usize,
    pub limits: Limits,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            sample: None,
            rate: 5000,
            ttl_tolerance_ms: 2000,
            recheck_ms: 2000,
            max_report: 100,
            page: 1000,
            recheck_queue: 100_000,
            limits: Limits::default(),
        }
    }
}

/// Paces reads to `per_sec` keys per second (0: unlimited); at most one page runs ahead.
struct Rate {
    per_sec: u64,
    next: tokio::time::Instant,
}

impl Rate {
    async fn take(&mut self, n: usize) {
        if self.per_sec == 0 || n == 0 {
            return;
        }
        let now = tokio::time::Instant::now();
        if self.next < now {
            self.next = now;
        }
        tokio::time::sleep_until(self.next).await;
        self.next += Duration::from_secs_f64(n as f64 / self.per_sec as f64);
    }
}

/// Where a queued key was found differing.
#[derive(Clone, Debug)]
enum Origin {
    /// Source pass: source db, target db.
    Source { sdb: u32, tdb: u32 },
    /// Target pass: target db and the source dbs mapped to it.
    Target { tdb: u32, sdbs: Vec<u32> },
}

struct Queued {
    due: Instant,
    origin: Origin,
    key: Bytes,
}

/// Counts and the capped list of differences.
struct Tally {
    totals: Totals,
    diffs: Vec<Difference>,
    max: usize,
    truncated: bool,
}

impl Tally {
    fn record(
        &mut self,
        kind: Kind,
        reason: Option<Reason>,
        db: u32,
        tdb: u32,
        key: &[u8],
        detail: String,
    ) {
        let t = &mut self.totals;
        match kind {
            Kind::Missing => t.missing += 1,
            Kind::Extra => t.extra += 1,
            Kind::Different => {
                t.different += 1;
                match reason {
                    Some(Reason::Type) => t.different_type += 1,
                    Some(Reason::Ttl) => t.different_ttl += 1,
                    Some(Reason::StreamGroup) => t.different_stream_group += 1,
                    _ => t.different_value += 1,
                }
            }
        }
        if self.diffs.len() < self.max {
            self.diffs.push(Difference {
                kind,
                reason,
                db,
                target_db: tdb,
                key: quote(key),
                detail,
            });
        } else {
            self.truncated = true;
        }
    }

    fn outcome(&mut self, o: Outcome, sdb: u32, tdb: u32, key: &[u8]) {
        match o {
            Outcome::Equal => self.totals.equal += 1,
            Outcome::Vanished => self.totals.vanished += 1,
            Outcome::Missing => self.record(Kind::Missing, None, sdb, tdb, key, String::new()),
            Outcome::Different(r, d) => self.record(Kind::Different, Some(r), sdb, tdb, key, d),
        }
    }
}

/// The verification in progress.
struct Verifier<'a> {
    src: Side,
    tgt: Side,
    opts: &'a VerifyOptions,
    filter: &'a dyn KeyFilter,
    rate: Rate,
    tally: Tally,
    queue: VecDeque<Queued>,
}

impl Verifier<'_> {
    fn recheck_after(&self) -> Option<Duration> {
        (self.opts.recheck_ms > 0).then(|| Duration::from_millis(self.opts.recheck_ms))
    }

    fn enqueue(&mut self, origin: Origin, key: Bytes) {
        let due = Instant::now() + self.recheck_after().unwrap_or_default();
        self.queue.push_back(Queued { due, origin, key });
    }

    /// Re-checks the queued keys that are due (all of them with `all`; waiting for them), and
    /// waits for room when the queue is full.
    async fn drain(&mut self, all: bool) -> Result<(), VerifyError> {
        loop {
            let full = self.queue.len() >= self.opts.recheck_queue.max(1);
            let Some(front) = self.queue.front() else {
                return Ok(());
            };
            let now = Instant::now();
            if front.due > now {
                if !(all || full) {
                    return Ok(());
                }
                tokio::time::sleep(front.due - now).await;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            while self.queue.front().is_some_and(|q| q.due <= now) && due.len() < self.opts.page {
                if let Some(q) = self.queue.pop_front() {
                    due.push(q);
                }
            }
            self.recheck(due).await?;
        }
    }

    async fn recheck(&mut self, due: Vec<Queued>) -> Result<(), VerifyError> {
        // Source-pass keys, grouped by database pair (order kept within a group).
        let mut groups: Vec<((u32, u32), Vec<Bytes>)> = Vec::new();
        for q in due {
            match q.origin {
                Origin::Source { sdb, tdb } => {
                    match groups.iter_mut().find(|(p, _)| *p == (sdb, tdb)) {
                        Some((_, v)) => v.push(q.key),
                        None => groups.push(((sdb, tdb), vec![q.key])),
                    }
                }
                Origin::Target { tdb, sdbs } => {
                    let keys = [q.key];
                    let on_source = self.exists_on_source(&sdbs, &keys).await?;
                    let on_target = self.exists(&keys, tdb, false).await?;
                    if on_source[0] || !on_target[0] {
                        self.tally.totals.settled_on_recheck += 1;
                    } else {
                        let sdb = sdbs.first().copied().unwrap_or(tdb);
                        self.tally
                            .record(Kind::Extra, None, sdb, tdb, &keys[0], String::new());
                    }
                }
            }
        }
        for ((sdb, tdb), keys) in groups {
            let out = self.compare(sdb, tdb, &keys).await?;
            for (k, o) in keys.iter().zip(out) {
                match o {
                    Outcome::Equal | Outcome::Vanished => self.tally.totals.settled_on_recheck += 1,
                    o => self.tally.outcome(o, sdb, tdb, k),
                }
            }
        }
        Ok(())
    }

    /// Compares `keys` of source database `sdb` with target database `tdb`.
    async fn compare(
        &mut self,
        sdb: u32,
        tdb: u32,
        keys: &[Bytes],
    ) -> Result<Vec<Outcome>, VerifyError> {
        compare_batch(
            &mut self.src,
            sdb,
            &mut self.tgt,
            tdb,
            keys,
            &self.opts.limits,
        )
        .await
    }

    /// `EXISTS` for each key on one side (source: `db`; target: `db`).
    async fn exists(
        &mut self,
        keys: &[Bytes],
        db: u32,
        source: bool,
    ) -> Result<Vec<bool>, VerifyError> {
        let side = if source { &mut self.src } else { &mut self.tgt };
        let items: Vec<(usize, Vec<Cmd>)> = keys
            .iter()
            .map(|k| (side.node_of(k), vec![cmd([b"EXISTS", k])]))
            .collect();
        let replies = side.exec_keyed(db, items).await?;
        let mut out = Vec::with_capacity(keys.len());
        for r in replies {
            let f = r.into_iter().next().unwrap_or(Frame::Null);
            compare::check(side, &f, "EXISTS")?;
            out.push(int(&f).unwrap_or(0) > 0);
        }
        Ok(out)
    }

    async fn exists_on_source(
        &mut self,
        sdbs: &[u32],
        keys: &[Bytes],
    ) -> Result<Vec<bool>, VerifyError> {
        let mut found = vec![false; keys.len()];
        for &sdb in sdbs {
            let e = self.exists(keys, sdb, true).await?;
            for (f, e) in found.iter_mut().zip(e) {
                *f |= e;
            }
        }
        Ok(found)
    }

    /// One page of keys: from `SCAN` (cursor in/out) or a `RANDOMKEY` sample (`want` more keys).
    async fn page(
        &mut self,
        source: bool,
        node: usize,
        db: u32,
        cursor: &mut Bytes,
        sample_left: &mut Option<u64>,
        seen: &mut std::collections::HashSet<Bytes>,
    ) -> Result<Vec<Bytes>, VerifyError> {
        let page = self.page_size();
        let side = if source { &mut self.src } else { &mut self.tgt };
        if let Some(left) = sample_left {
            let n = (*left).min(page as u64) as usize;
            let cmds: Vec<Cmd> = (0..n).map(|_| cmd([b"RANDOMKEY"])).collect();
            let replies = side.exec_on(node, db, &cmds).await?;
            let mut keys = Vec::new();
            for f in replies {
                compare::check(side, &f, "RANDOMKEY")?;
                if let Some(k) = f.as_bytes()
                    && seen.insert(k.clone())
                {
                    keys.push(k.clone());
                }
            }
            // Count attempts, not unique keys: a small keyspace cannot make this loop forever.
            *left -= n as u64;
            return Ok(keys);
        }
        let count = page.to_string();
        let c = cmd([b"SCAN", cursor, b"COUNT", count.as_bytes()]);
        let f = side
            .exec_on(node, db, &[c])
            .await?
            .pop()
            .unwrap_or(Frame::Null);
        compare::check(side, &f, "SCAN")?;
        let Frame::Array(mut parts) = f else {
            return Err(VerifyError::Reply {
                role: side.role,
                what: "SCAN".into(),
                reply: f.to_text(),
            });
        };
        let keys = match parts.pop() {
            Some(Frame::Array(v)) => v
                .into_iter()
                .filter_map(|k| k.as_bytes().cloned())
                .collect(),
            _ => Vec::new(),
        };
        *cursor = parts
            .pop()
            .and_then(|c| c.as_bytes().cloned())
            .unwrap_or_default();
        Ok(keys)
    }

    fn page_size(&self) -> usize {
        let p = self.opts.page.max(1);
        if self.opts.rate == 0 {
            p
        } else {
            p.min((self.opts.rate / 10).max(10) as usize)
        }
    }

    /// How many sampled keys to take from server `node`'s database `db` out of `total` keys.
    fn share(side: &Side, node: usize, db: u32, total: u64, sample: u64) -> u64 {
        if total == 0 {
            return 0;
        }
        let k = side.node_keys(node, db);
        ((sample as u128 * k as u128).div_ceil(total as u128)) as u64
    }

    /// Keys in databases `dbs` over all servers of one side (from discovery).
    fn total(&self, source: bool, dbs: impl Iterator<Item = u32>) -> u64 {
        let side = if source { &self.src } else { &self.tgt };
        dbs.map(|db| {
            (0..side.node_count())
                .map(|n| side.node_keys(n, db))
                .sum::<u64>()
        })
        .sum()
    }

    /// Pass 1: every (or each sampled) source key against the target.
    async fn source_pass(&mut self, plan: &[(u32, u32)]) -> Result<(), VerifyError> {
        let total = self.total(true, plan.iter().map(|p| p.0));
        for &(sdb, tdb) in plan {
            for node in 0..self.src.node_count() {
                let Some(mut pages) = Lister::new(self, true, node, sdb, total) else {
                    continue;
                };
                while let Some(keys) = pages.next(self).await? {
                    let before = keys.len();
                    let keys: Vec<Bytes> = keys
                        .into_iter()
                        .filter(|k| self.filter.key_selected(sdb, k))
                        .collect();
                    self.tally.totals.ignored += (before - keys.len()) as u64;
                    self.tally.totals.source_keys += keys.len() as u64;
                    self.rate.take(keys.len()).await;
                    if !keys.is_empty() {
                        let out = self.compare(sdb, tdb, &keys).await?;
                        for (k, o) in keys.into_iter().zip(out) {
                            match o {
                                Outcome::Missing | Outcome::Different(..)
                                    if self.recheck_after().is_some() =>
                                {
                                    self.enqueue(Origin::Source { sdb, tdb }, k)
                                }
                                o => self.tally.outcome(o, sdb, tdb, &k),
                            }
                        }
                    }
                    self.drain(false).await?;
                }
            }
        }
        Ok(())
    }

    /// Pass 2: every (or each sampled) target key must exist on the source.
    async fn target_pass(&mut self, plan: &[(u32, Vec<u32>)]) -> Result<(), VerifyError> {
        let total = self.total(false, plan.iter().map(|p| p.0));
        for (tdb, sdbs) in plan {
            let tdb = *tdb;
            for node in 0..self.tgt.node_count() {
                let Some(mut pages) = Lister::new(self, false, node, tdb, total) else {
                    continue;
                };
                while let Some(keys) = pages.next(self).await? {
                    let before = keys.len();
                    let filter = self.filter;
                    let keys: Vec<Bytes> = keys
                        .into_iter()
                        .filter(|k| match sdbs.as_slice() {
                            [] => filter.key_selected(tdb, k),
                            s => s.iter().any(|&d| filter.key_selected(d, k)),
                        })
                        .collect();
                    self.tally.totals.ignored += (before - keys.len()) as u64;
                    self.tally.totals.target_keys += keys.len() as u64;
                    self.rate.take(keys.len()).await;
                    let found = self.exists_on_source(sdbs, &keys).await?;
                    for (k, f) in keys.into_iter().zip(found) {
                        if f {
                            continue;
                        }
                        if self.recheck_after().is_some() {
                            self.enqueue(
                                Origin::Target {
                                    tdb,
                                    sdbs: sdbs.clone(),
                                },
                                k,
                            );
                        } else {
                            let sdb = sdbs.first().copied().unwrap_or(tdb);
                            self.tally
                                .record(Kind::Extra, None, sdb, tdb, &k, String::new());
                        }
                    }
                    self.drain(false).await?;
                }
            }
        }
        Ok(())
    }
}

/// Walks one database of one server page by page: `SCAN`, or its share of a `RANDOMKEY` sample.
struct Lister {
    source: bool,
    node: usize,
    db: u32,
    cursor: Bytes,
    sample_left: Option<u64>,
    seen: std::collections::HashSet<Bytes>,
    done: bool,
}

impl Lister {
    /// `None` when the server had no keys in `db`; `total` is the side's key count (for the
    /// sample's share).
    fn new(v: &Verifier<'_>, source: bool, node: usize, db: u32, total: u64) -> Option<Lister> {
        let side = if source { &v.src } else { &v.tgt };
        if side.node_keys(node, db) == 0 {
            return None;
        }
        Some(Lister {
            source,
            node,
            db,
            cursor: Bytes::from_static(b"0"),
            sample_left: v
                .opts
                .sample
                .map(|s| Verifier::share(side, node, db, total, s)),
            seen: Default::default(),
            done: false,
        })
    }

    /// The next page, or `None` after the last.
    async fn next(&mut self, v: &mut Verifier<'_>) -> Result<Option<Vec<Bytes>>, VerifyError> {
        if self.done {
            return Ok(None);
        }
        let keys = v
            .page(
                self.source,
                self.node,
                self.db,
                &mut self.cursor,
                &mut self.sample_left,
                &mut self.seen,
            )
            .await?;
        self.done = match self.sample_left {
            Some(left) => left == 0,
            None => self.cursor.as_ref() == b"0" || self.cursor.is_empty(),
        };
        Ok(Some(keys))
    }
}

/// Highest database number considered when mapping target databases back to source ones.
const MAX_DB: u32 = 255;

/// Runs a verification of `cfg.source` against `cfg.target` (with `cfg.sync.db_map`).
pub async fn run(
    cfg: &Config,
    opts: &VerifyOptions,
    filter: &dyn KeyFilter,
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let src = Side::open("source", &cfg.source).await?;
    let tgt = Side::open("target", &cfg.target).await?;
    let cluster_target = tgt.is_cluster();

    // Source databases with keys, and where each goes.
    let mut source_plan = Vec::new();
    for (sdb, _) in src.keyspace() {
        if !filter.db_selected(sdb) {
            continue;
        }
        let Some(tdb) = cfg.sync.target_db(sdb, cluster_target) else {
            return Err(VerifyError::Config(format!(
                "source database {sdb} has keys but the cluster target has only database 0: map it with --db-map {sdb}=0 (or leave it out of the sync)"
            )));
        };
        source_plan.push((sdb, tdb));
    }
    // Target databases with keys, and the selected source databases that map to them. A target
    // database that only unselected source databases map to is not checked.
    let mut target_plan = Vec::new();
    for (tdb, _) in tgt.keyspace() {
        let from: Vec<u32> = (0..=MAX_DB)
            .filter(|&s| cfg.sync.target_db(s, cluster_target) == Some(tdb))
            .filter(|&s| !src.is_cluster() || s == 0 || src.keyspace().iter().any(|(d, _)| *d == s))
            .collect();
        let selected: Vec<u32> = from
            .iter()
            .copied()
            .filter(|&s| filter.db_selected(s))
            .collect();
        if !from.is_empty() && selected.is_empty() {
            continue;
        }
        target_plan.push((tdb, selected));
    }

    let mut limits = opts.limits.clone();
    limits.ttl_tolerance_ms = opts.ttl_tolerance_ms as i64;
    let opts = &VerifyOptions {
        limits,
        ..opts.clone()
    };
    let mut v = Verifier {
        src,
        tgt,
        opts,
        filter,
        rate: Rate {
            per_sec: opts.rate,
            next: tokio::time::Instant::now(),
        },
        tally: Tally {
            totals: Totals::default(),
            diffs: Vec::new(),
            max: opts.max_report,
            truncated: false,
        },
        queue: VecDeque::new(),
    };
    v.source_pass(&source_plan).await?;
    v.target_pass(&target_plan).await?;
    v.drain(true).await?;

    let elapsed = started.elapsed();
    let t = v.tally.totals;
    let keys = (t.source_keys + t.target_keys) as f64;
    let mut report = Report {
        schema: "shardsync.verify/1",
        result: "equal",
        source: v.src.seed.clone(),
        target: v.tgt.seed.clone(),
        mode: if opts.sample.is_some() {
            "sample"
        } else {
            "all"
        },
        sample: opts.sample,
        totals: t,
        elapsed_ms: elapsed.as_millis() as u64,
        keys_per_sec: (keys / elapsed.as_secs_f64().max(1e-3) * 10.0).round() / 10.0,
        differences: v.tally.diffs,
        truncated: v.tally.truncated,
    };
    if !report.is_equal() {
        report.result = "different";
    }
    Ok(report)
}
