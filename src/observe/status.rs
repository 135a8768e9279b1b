//! What a person or a dashboard sees of a run: the [`StatusBoard`] (overall state plus the
//! [`ShardState`] of every source shard, registered as shards become known), the JSON model of
//! `/status`, the sampler that publishes per-shard gauges from the shard states once a second,
//! and the full-sync progress reporter (a log line every 5 s; a live line on a terminal).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::observe::ObserveError;
use crate::observe::progress::{Phase, ShardState};
use crate::observe::telemetry;
use crate::supervise::{Group, Restart, Tree};

/// The run as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RunState {
    Prechecking = 0,
    /// Links are running; the reported state is `full_sync` or `incremental` from the shards.
    Syncing = 1,
    Stopping = 2,
    Failed = 3,
}

/// The overall state reported by `/status` and `shardsync_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverallState {
    Prechecking,
    FullSync,
    Incremental,
    Stopping,
    Failed,
}

impl OverallState {
    pub const ALL: [OverallState; 5] = [
        OverallState::Prechecking,
        OverallState::FullSync,
        OverallState::Incremental,
        OverallState::Stopping,
        OverallState::Failed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            OverallState::Prechecking => "prechecking",
            OverallState::FullSync => "full_sync",
            OverallState::Incremental => "incremental",
            OverallState::Stopping => "stopping",
            OverallState::Failed => "failed",
        }
    }
}

/// One entry of the shard registry of [`StatusBoard`].
#[derive(Clone, Debug)]
struct RegisteredShard {
    state: Arc<ShardState>,
    registered_ms: u64,
    order: usize,
}

/// Shared by the app (which registers shards and sets the run state), the HTTP server and the
/// background tasks.
#[derive(Debug)]
pub struct StatusBoard {
    run_state: AtomicU8,
    /// Every source shard by its stable name (a concurrent map: links, writers, the sampler and
    /// the HTTP server read it from several threads), with when and in which order it was
    /// registered (the lag before any heartbeat; the order `/status` lists them in).
    shards: DashMap<String, RegisteredShard>,
    /// Heartbeat interval; `None` when the heartbeat is disabled (lag in seconds unknown).
    heartbeat_interval: Option<Duration>,
    started_ms: u64,
}

impl StatusBoard {
    pub fn new(heartbeat_interval: Option<Duration>) -> Arc<StatusBoard> {
        Arc::new(StatusBoard {
            run_state: AtomicU8::new(RunState::Prechecking as u8),
            shards: DashMap::new(),
            heartbeat_interval,
            started_ms: crate::now_ms(),
        })
    }

    /// For the run job: the board of a config (heartbeat interval from its sync settings).
    pub fn for_config(cfg: &crate::config::Config) -> Arc<StatusBoard> {
        let hb = (!cfg.sync.heartbeat_key.is_empty())
            .then(|| Duration::from_millis(cfg.sync.heartbeat_interval_ms));
        StatusBoard::new(hb)
    }

    pub fn set_state(&self, s: RunState) {
        self.run_state.store(s as u8, Ordering::Release);
    }

    /// Marks the run failed and passes `e` through (for `return Err(board.failed(e))`).
    pub fn failed<E>(&self, e: E) -> E {
        self.set_state(RunState::Failed);
        e
    }

    fn run_state(&self) -> RunState {
        match self.run_state.load(Ordering::Acquire) {
            0 => RunState::Prechecking,
            1 => RunState::Syncing,
            2 => RunState::Stopping,
            _ => RunState::Failed,
        }
    }

    /// Adds a source shard (any time, e.g. when a cluster grows) and registers its series.
    pub fn register_shard(&self, shard: Arc<ShardState>) {
        let order = self.shards.len();
        if let dashmap::Entry::Vacant(v) = self.shards.entry(shard.name.clone()) {
            telemetry::register_shard(&shard.name);
            v.insert(RegisteredShard {
                state: shard,
                registered_ms: crate::now_ms(),
                order,
            });
        }
    }

    /// Adds a target node and registers its series. Every `TargetWriter` also registers its
    /// node when it starts, so nodes discovered at runtime (clusters) appear by themselves.
    pub fn register_target_node(&self, node: &str) {
        telemetry::register_node(node);
    }

    /// The shards in the order they were registered.
    pub fn shards(&self) -> Vec<Arc<ShardState>> {
        self.registered_shards()
            .into_iter()
            .map(|r| r.state)
            .collect()
    }

    fn registered_shards(&self) -> Vec<RegisteredShard> {
        let mut v: Vec<RegisteredShard> = self.shards.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|r| r.order);
        v
    }

    /// The overall state: the run state, refined by the shards while syncing (`failed` when a
    /// shard's link failed for good, `incremental` once every shard's full sync is applied).
    pub fn overall(&self) -> OverallState {
        match self.run_state() {
            RunState::Prechecking => OverallState::Prechecking,
            RunState::Stopping => OverallState::Stopping,
            RunState::Failed => OverallState::Failed,
            RunState::Syncing => {
                let shards = self.shards();
                // A failed target of a shard (one-to-many) needs a person too.
                let failed = |s: &Arc<ShardState>| {
                    s.phase() == Phase::Failed || s.legs().iter().any(|l| l.is_failed())
                };
                if shards.iter().any(failed) {
                    OverallState::Failed
                } else if !shards.is_empty()
                    && shards
                        .iter()
                        .all(|s| s.full_sync_done.load(Ordering::Acquire))
                {
                    OverallState::Incremental
                } else {
                    OverallState::FullSync
                }
            }
        }
    }

    /// Lag of a shard in seconds (see `shardsync_lag_seconds`): `None` when the heartbeat is off.
    fn lag_seconds(&self, s: &ShardState, registered_ms: u64, now: u64) -> Option<f64> {
        let interval = self.heartbeat_interval?;
        let hb = s.heartbeat_applied_ms.load(Ordering::Acquire);
        let ms = if hb == 0 {
            now.saturating_sub(registered_ms)
        } else {
            // Heartbeats arrive every `interval`: when the last one is older than that, the
            // target is at least that much behind, even if nothing was acknowledged since.
            let stale = now
                .saturating_sub(hb)
                .saturating_sub(interval.as_millis() as u64);
            s.heartbeat_lag_ms.load(Ordering::Relaxed).max(stale)
        };
        Some(ms as f64 / 1000.0)
    }

    /// The `/status` document.
    pub fn snapshot(&self) -> Status {
        let now = crate::now_ms();
        let shards = self.registered_shards();
        Status {
            state: self.overall(),
            uptime_seconds: now.saturating_sub(self.started_ms) as f64 / 1000.0,
            target_nodes: telemetry::nodes(),
            shards: shards
                .iter()
                .map(|r| shard_status(&r.state, self.lag_seconds(&r.state, r.registered_ms, now)))
                .collect(),
        }
    }
}

/// `/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub state: OverallState,
    pub uptime_seconds: f64,
    pub target_nodes: Vec<String>,
    pub shards: Vec<ShardStatus>,
}

/// One source shard in `/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardStatus {
    /// The shard's stable name (its master's address at start): the `shard` label of every
    /// series of this shard, unchanged by failovers and `prefer_replica`.
    #[serde(default)]
    pub name: String,
    /// The source node replicated from now (host:port; never credentials).
    pub source: String,
    pub phase: String,
    pub replid: String,
    pub full_sync_done: bool,
    pub rdb: RdbProgress,
    pub source_offset: u64,
    pub applied_offset: u64,
    pub lag_bytes: u64,
    /// `null` when the heartbeat is disabled.
    pub lag_seconds: Option<f64>,
    pub restarts: u64,
    pub full_resyncs: u64,
    pub rejected_writes: u64,
    /// Parts of the data the target cannot hold (e.g. hash field TTLs), written without them.
    #[serde(default)]
    pub lossy_conversions: u64,
    /// Keys copied from the source after the target rejected a write to them.
    #[serde(default)]
    pub key_repairs: u64,
    /// Keys whose repair failed (the target keeps what it has; each is logged).
    #[serde(default)]
    pub key_repairs_failed: u64,
    pub last_error: Option<String>,
    /// One-to-many: each target's progress for this shard (absent with one target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetStatus>,
}

/// One target of a shard in `/status` (one-to-many).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetStatus {
    pub name: String,
    /// `syncing`, or `failed` (its writes are dropped until shardsync restarts).
    pub state: String,
    pub applied_offset: u64,
    pub lag_bytes: u64,
    pub full_sync_done: bool,
    pub rejected_writes: u64,
    pub dropped_writes: u64,
    pub last_error: Option<String>,
}

fn target_status(leg: &ShardState, handed: u64) -> TargetStatus {
    let applied = leg.applied_offset.load(Ordering::Acquire);
    TargetStatus {
        name: leg.target.clone().unwrap_or_default(),
        state: if leg.is_failed() { "failed" } else { "syncing" }.to_string(),
        applied_offset: applied,
        lag_bytes: handed.saturating_sub(applied),
        full_sync_done: leg.full_sync_done.load(Ordering::Acquire),
        rejected_writes: leg.rejected_writes.load(Ordering::Relaxed),
        dropped_writes: leg.dropped_writes.load(Ordering::Relaxed),
        last_error: leg.last_error.lock().ok().and_then(|g| g.clone()),
    }
}

/// RDB transfer of the current (or last) full sync.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RdbProgress {
    pub bytes: u64,
    /// 0 when the source sends a diskless RDB of unknown size.
    pub size: u64,
    pub keys: u64,
    /// `bytes / size`, when the size is known.
    pub ratio: Option<f64>,
}

fn shard_status(s: &ShardState, lag_seconds: Option<f64>) -> ShardStatus {
    let handed = s.handed_offset.load(Ordering::Acquire);
    let applied = s.applied_offset.load(Ordering::Acquire);
    let (bytes, size) = (
        s.rdb_bytes.load(Ordering::Relaxed),
        s.rdb_size.load(Ordering::Relaxed),
    );
    ShardStatus {
        name: s.name.clone(),
        source: s.source_addr(),
        phase: s.phase().name().to_string(),
        replid: s.replid(),
        full_sync_done: s.full_sync_done.load(Ordering::Acquire),
        rdb: RdbProgress {
            bytes,
            size,
            keys: s.rdb_keys.load(Ordering::Relaxed),
            ratio: (size > 0).then(|| (bytes as f64 / size as f64).min(1.0)),
        },
        source_offset: handed,
        applied_offset: applied,
        lag_bytes: handed.saturating_sub(applied),
        lag_seconds,
        restarts: s.restarts.load(Ordering::Relaxed),
        full_resyncs: s.full_resyncs.load(Ordering::Relaxed),
        rejected_writes: s.rejected_writes.load(Ordering::Relaxed)
            + s.legs()
                .iter()
                .map(|l| l.rejected_writes.load(Ordering::Relaxed))
                .sum::<u64>(),
        lossy_conversions: s.lossy_conversions.load(Ordering::Relaxed),
        key_repairs: s.key_repairs.load(Ordering::Relaxed)
            + s.legs()
                .iter()
                .map(|l| l.key_repairs.load(Ordering::Relaxed))
                .sum::<u64>(),
        key_repairs_failed: s.key_repairs_failed.load(Ordering::Relaxed)
            + s.legs()
                .iter()
                .map(|l| l.key_repairs_failed.load(Ordering::Relaxed))
                .sum::<u64>(),
        last_error: s.last_error.lock().ok().and_then(|g| g.clone()),
        targets: s.legs().iter().map(|l| target_status(l, handed)).collect(),
    }
}

/// Publishes the gauges derived from the shard states (offsets, lag, RDB progress, overall state).
pub fn publish(board: &StatusBoard) {
    let st = board.snapshot();
    for s in OverallState::ALL {
        metrics::gauge!(telemetry::STATE, "state" => s.name()).set(if s == st.state {
            1.0
        } else {
            0.0
        });
    }
    for sh in &st.shards {
        // One shard, one series: the stable name, not the node replicated from now.
        let l = || sh.name.clone();
        metrics::gauge!(telemetry::SOURCE_OFFSET, "shard" => l()).set(sh.source_offset as f64);
        metrics::gauge!(telemetry::APPLIED_OFFSET, "shard" => l()).set(sh.applied_offset as f64);
        metrics::gauge!(telemetry::LAG_BYTES, "shard" => l()).set(sh.lag_bytes as f64);
        metrics::gauge!(telemetry::LAG_SECONDS, "shard" => l())
            .set(sh.lag_seconds.unwrap_or(f64::NAN));
        metrics::gauge!(telemetry::RDB_RECEIVED, "shard" => l()).set(sh.rdb.bytes as f64);
        for t in &sh.targets {
            let failed = if t.state == "failed" { 1.0 } else { 0.0 };
            metrics::gauge!(telemetry::TARGET_FAILED, "shard" => l(), "target" => t.name.clone())
                .set(failed);
            metrics::gauge!(telemetry::TARGET_APPLIED_OFFSET, "shard" => l(), "target" => t.name.clone())
                .set(t.applied_offset as f64);
        }
        metrics::gauge!(telemetry::RDB_SIZE, "shard" => l()).set(sh.rdb.size as f64);
        let progress = if sh.full_sync_done {
            1.0
        } else {
            sh.rdb.ratio.unwrap_or(0.0)
        };
        metrics::gauge!(telemetry::FULL_SYNC_PROGRESS, "shard" => l()).set(progress);
        metrics::counter!(telemetry::REJECTED_WRITES, "shard" => l()).absolute(sh.rejected_writes);
    }
}

/// Starts everything observable of a run under `tree` ([`Group::Observe`]): the metrics
/// recorder and the `/metrics` + `/status` listener on `metrics_addr` (unless `None`), the gauge
/// sampler and the progress reporter. Returns where the listener is bound.
pub async fn start(
    metrics_addr: Option<SocketAddr>,
    board: Arc<StatusBoard>,
    tree: &Tree,
) -> Result<Option<SocketAddr>, ObserveError> {
    let mut addr = None;
    if let Some(a) = metrics_addr {
        let handle = telemetry::install_recorder()?;
        let (bound, server) = crate::observe::http::serve(a, board.clone(), handle.clone()).await?;
        tracing::info!(addr = %bound, "serving /metrics and /status on http://{bound}");
        addr = Some(bound);
        tree.spawn_once(Group::Observe, "http listener".into(), server);
        let b = board.clone();
        tree.spawn(
            Group::Observe,
            "gauge sampler".into(),
            Restart::Always,
            move |stop| {
                let (b, handle) = (b.clone(), handle.clone());
                async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    let mut n = 0u64;
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = stop.cancelled() => return,
                        }
                        publish(&b);
                        n += 1;
                        if n.is_multiple_of(5) {
                            handle.run_upkeep();
                        }
                    }
                }
            },
        );
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tree.spawn(
        Group::Observe,
        "progress reporter".into(),
        Restart::Always,
        move |stop| {
            let b = board.clone();
            async move {
                tokio::select! {
                    _ = progress_reporter(b, Duration::from_secs(5), tty) => {}
                    _ = stop.cancelled() => {}
                }
            }
        },
    );
    Ok(addr)
}

/// Per-shard full-sync progress since the last report.
struct Seen {
    name: String,
    bytes: u64,
    at: Instant,
    /// The last tick before the first RDB byte arrived (the fork's delay is not transfer time).
    started: Option<Instant>,
    epoch: u64,
}

/// One line describing a shard's full sync: bytes (of size, %), keys, rate, ETA.
pub fn progress_line(s: &ShardStatus, rate_bytes_per_s: f64) -> String {
    let mb = |b: u64| b as f64 / 1_048_576.0;
    let mut line = format!("{}: {:.1} MB", s.source, mb(s.rdb.bytes));
    if let Some(r) = s.rdb.ratio {
        line.push_str(&format!(" of {:.1} MB ({:.1}%)", mb(s.rdb.size), r * 100.0));
    }
    line.push_str(&format!(
        ", {} keys, {:.1} MB/s",
        s.rdb.keys,
        rate_bytes_per_s / 1_048_576.0
    ));
    if s.rdb.size > s.rdb.bytes && rate_bytes_per_s > 0.0 {
        let eta = (s.rdb.size - s.rdb.bytes) as f64 / rate_bytes_per_s;
        line.push_str(&format!(", ETA {}", human_secs(eta)));
    }
    line
}

fn human_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Logs the progress of every shard in full sync every `every`; on a terminal also keeps one
/// live line on stderr, refreshed every second.
async fn progress_reporter(board: Arc<StatusBoard>, every: Duration, tty: bool) {
    let tick_len = if tty { Duration::from_secs(1) } else { every };
    let mut tick = tokio::time::interval(tick_len);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Vec<Seen> = Vec::new();
    let mut last_log = Instant::now();
    let mut live_shown = false;
    loop {
        tick.tick().await;
        let shards = board.shards();
        let now = Instant::now();
        let log_now = now.duration_since(last_log) + Duration::from_millis(100) >= every;
        let mut live = Vec::new();
        for sh in &shards {
            let epoch = sh.epoch.load(Ordering::Acquire);
            let st = shard_status(sh, None);
            let entry = match seen.iter_mut().position(|e| e.name == sh.name) {
                Some(i) => &mut seen[i],
                None => {
                    seen.push(Seen {
                        name: sh.name.clone(),
                        bytes: 0,
                        at: now,
                        started: None,
                        epoch,
                    });
                    seen.last_mut().expect("just pushed")
                }
            };
            if entry.epoch != epoch || st.rdb.bytes < entry.bytes {
                *entry = Seen {
                    name: sh.name.clone(),
                    bytes: 0,
                    at: now,
                    started: None,
                    epoch,
                };
            }
            if sh.phase() != Phase::FullSync {
                entry.bytes = st.rdb.bytes;
                entry.at = now;
                continue;
            }
            if st.rdb.bytes > 0 && entry.started.is_none() {
                entry.started = Some(entry.at);
            }
            let dt = now.duration_since(entry.at).as_secs_f64();
            let overall = entry
                .started
                .map_or(0.0, |s| now.duration_since(s).as_secs_f64());
            // Rate over the whole transfer so far: steadier than the last interval.
            let rate = if overall > 0.0 {
                st.rdb.bytes as f64 / overall
            } else if dt > 0.0 {
                (st.rdb.bytes - entry.bytes) as f64 / dt
            } else {
                0.0
            };
            let line = progress_line(&st, rate);
            if log_now {
                if live_shown {
                    eprint!("\r\x1b[2K");
                    live_shown = false;
                }
                tracing::info!(shard = %sh.name, rdb_bytes = st.rdb.bytes, rdb_size = st.rdb.size,
                    keys = st.rdb.keys, mb_per_s = rate / 1_048_576.0, "full sync progress: {line}");
            }
            live.push(line);
            entry.bytes = st.rdb.bytes;
            entry.at = now;
        }
        if log_now {
            last_log = now;
        }
        if tty {
            if !live.is_empty() {
                eprint!("\r\x1b[2K{}", live.join(" | "));
                live_shown = true;
            } else if live_shown {
                eprintln!();
                live_shown = false;
            }
        }
    }
}

/// `shardsync status`: the `/status` document as a table for a person.
pub fn render_table(st: &Status) -> String {
    let mut out = format!(
        "state: {}   uptime: {}   target nodes: {}\n\n",
        st.state.name(),
        human_secs(st.uptime_seconds),
        if st.target_nodes.is_empty() {
            "-".to_string()
        } else {
            st.target_nodes.join(", ")
        }
    );
    let header = [
        "SHARD",
        "PHASE",
        "RDB",
        "KEYS",
        "SOURCE OFF",
        "APPLIED OFF",
        "LAG B",
        "LAG S",
        "RESTARTS",
        "ERROR",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for s in &st.shards {
        let mb = |b: u64| format!("{:.1}MB", b as f64 / 1_048_576.0);
        let rdb = match s.rdb.ratio {
            Some(r) if !s.full_sync_done => {
                format!("{}/{} {:.0}%", mb(s.rdb.bytes), mb(s.rdb.size), r * 100.0)
            }
            _ if s.rdb.bytes > 0 => mb(s.rdb.bytes),
            _ => "-".into(),
        };
        let shard = match (s.name.as_str(), s.source.as_str()) {
            ("", src) => src.to_string(),
            (name, src) if name == src => name.to_string(),
            (name, src) => format!("{name} (via {src})"),
        };
        rows.push(vec![
            shard,
            s.phase.clone(),
            rdb,
            s.rdb.keys.to_string(),
            s.source_offset.to_string(),
            s.applied_offset.to_string(),
            s.lag_bytes.to_string(),
            s.lag_seconds
                .map(|l| format!("{l:.3}"))
                .unwrap_or_else(|| "-".into()),
            s.restarts.to_string(),
            s.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
        // One-to-many: a line per target under its shard.
        for t in &s.targets {
            let dropped = if t.dropped_writes > 0 {
                format!("{} writes dropped; ", t.dropped_writes)
            } else {
                String::new()
            };
            rows.push(vec![
                format!("  -> {}", t.name),
                t.state.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                t.applied_offset.to_string(),
                t.lag_bytes.to_string(),
                "-".into(),
                "-".into(),
                match (&t.last_error, dropped.is_empty()) {
                    (Some(e), _) => format!("{dropped}{e}"),
                    (None, false) => dropped.trim_end_matches("; ").to_string(),
                    (None, true) => "-".into(),
                },
            ]);
        }
    }
    // Nothing from a peer reaches the terminal raw (errors are escaped when made; this is the
    // last guard for anything that was not).
    for r in rows.iter_mut() {
        for c in r.iter_mut() {
            *c = crate::escape::terminal_safe(c);
        }
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_state_follows_shards() {
        let b = StatusBoard::new(Some(Duration::from_secs(1)));
        assert_eq!(b.overall(), OverallState::Prechecking);
        b.set_state(RunState::Syncing);
        assert_eq!(b.overall(), OverallState::FullSync);
        let s = Arc::new(ShardState::new("10.0.0.1:6379".into()));
        b.register_shard(s.clone());
        b.register_shard(s.clone());
        assert_eq!(b.shards().len(), 1);
        assert_eq!(b.overall(), OverallState::FullSync);
        s.full_sync_done.store(true, Ordering::Release);
        assert_eq!(b.overall(), OverallState::Incremental);
        s.set_phase(Phase::Failed);
        assert_eq!(b.overall(), OverallState::Failed);
        s.set_phase(Phase::Incremental);
        b.set_state(RunState::Failed);
        assert_eq!(b.overall(), OverallState::Failed);
    }

    #[test]
    fn json_and_table() {
        let b = StatusBoard::new(None);
        b.set_state(RunState::Syncing);
        let s = Arc::new(ShardState::new("10.0.0.1:6379".into()));
        s.rdb_size.store(2 << 20, Ordering::Relaxed);
        s.rdb_bytes.store(1 << 20, Ordering::Relaxed);
        s.rdb_keys.store(42, Ordering::Relaxed);
        s.set_error(Some("connection refused".into()));
        b.register_shard(s);
        b.register_target_node("10.0.0.2:6379");
        let st = b.snapshot();
        let json = serde_json::to_value(&st).expect("json");
        assert_eq!(json["state"], "full_sync");
        assert_eq!(json["shards"][0]["source"], "10.0.0.1:6379");
        assert_eq!(json["shards"][0]["rdb"]["ratio"], 0.5);
        assert!(json["shards"][0]["lag_seconds"].is_null());
        let back: Status = serde_json::from_value(json).expect("round trip");
        let table = render_table(&back);
        assert!(table.contains("state: full_sync"), "{table}");
        assert!(table.contains("1.0MB/2.0MB 50%"), "{table}");
        assert!(table.contains("connection refused"), "{table}");
        let line = progress_line(&back.shards[0], 1_048_576.0);
        assert_eq!(
            line,
            "10.0.0.1:6379: 1.0 MB of 2.0 MB (50.0%), 42 keys, 1.0 MB/s, ETA 1s"
        );
    }

    #[test]
    fn lag_grows_when_heartbeats_stop() {
        let b = StatusBoard::new(Some(Duration::from_secs(1)));
        let s = ShardState::new("a:1".into());
        let now = crate::now_ms();
        // No heartbeat yet: time since registration.
        assert_eq!(b.lag_seconds(&s, now - 3000, now), Some(3.0));
        s.heartbeat_applied(now - 5);
        let fresh = b.lag_seconds(&s, now, now).expect("lag");
        assert!(fresh < 0.5, "{fresh}");
        s.heartbeat_applied_ms
            .store(now - 10_000, Ordering::Release);
        assert_eq!(b.lag_seconds(&s, now, now), Some(9.0));
        let off = StatusBoard::new(None);
        assert_eq!(off.lag_seconds(&s, now, now), None);
    }
}
