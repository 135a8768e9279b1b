//! The `run` job: precheck, build the supervision tree ([`crate::supervise::Tree`]: one
//! supervised [`ShardLink`] per source master, one [`crate::sink::TargetWriter`] per target node
//! behind [`Targets`] for each target of [`Outputs`] — one-to-many when there are several — the
//! heartbeats, the checkpointer, the HTTP listener), and on SIGTERM or
//! SIGINT shut down cleanly through the tree, group by group: stop the heartbeats and remove their
//! keys, wait until the target has applied everything up to that point, stop the links, drain the
//! writers, stop the checkpointer, write the final checkpoints, exit 0. When every shard has failed (see [`crate::source::failure`]), the
//! same shutdown runs by itself and the run ends with [`RunError::NoProgress`] (exit code 4).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;

use crate::checkpoint;
use crate::config::Config;
use crate::heartbeat;
use crate::net::topology::Node;
use crate::observe::progress::{Phase, ShardState};
use crate::observe::status::{RunState, StatusBoard};
use crate::outputs::Outputs;
use crate::precheck;
use crate::router::hashtag_in;
#[cfg(doc)]
use crate::sink::Targets;
use crate::source::ShardLink;
use crate::source::link::{ClusterShard, LinkSettings};
use crate::supervise::{Group, Restart, Tree};

/// How long a stop waits at most for the target to acknowledge what was handed to it; it gives
/// up sooner when nothing was acknowledged for `target.reply_timeout_ms`.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// How a run ended badly; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("precheck failed:\n{0}")]
    Precheck(String),
    #[error("{0}")]
    Fatal(String),
    /// Stopped on request, but some writes were not applied to the target (pending when the
    /// drain deadline passed, or refused); the checkpoints only cover what was applied.
    #[error("stopped with writes not applied to the target:\n{0}")]
    Incomplete(String),
    /// Every source shard failed for good: nothing can make progress without a person.
    #[error("no shard can make progress; every shard failed:\n{0}")]
    NoProgress(String),
}

impl RunError {
    /// The process exit code (documented in the README and `src/main.rs`).
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Precheck(_) => 3,
            RunError::Fatal(_) => 1,
            RunError::Incomplete(_) => 4,
            RunError::NoProgress(_) => 4,
        }
    }
}

/// One source shard with everything the app keeps about it.
struct Shard {
    state: Arc<ShardState>,
    node: Node,
    heartbeat_key: String,
    /// Keeps the link's actor alive; dropped after the links' group is stopped.
    _link: Addr<ShardLink>,
}

/// The heartbeat key of a source master: the configured name, plus (on a cluster source) a hash
/// tag that lands in a slot this master serves, so every shard's lag is measured.
fn heartbeat_key(base: &str, node: &Node, cluster: bool) -> String {
    if !cluster || base.is_empty() {
        return base.to_string();
    }
    let tag = hashtag_in(|s| node.slots.iter().any(|&(a, b)| a <= s && s <= b)).unwrap_or_default();
    format!("{base}:{{{tag}}}")
}

/// Every node of a cluster source (masters and replicas), to ask after a failover.
fn known_source_nodes(
    t: &crate::net::topology::Topology,
    seed: &crate::config::Endpoint,
) -> Vec<crate::config::Endpoint> {
    match t {
        crate::net::topology::Topology::Cluster { table, .. } => table
            .nodes()
            .iter()
            .map(|n| crate::net::topology::endpoint_like(seed, &n.host, n.port))
            .collect(),
        crate::net::topology::Topology::Standalone(n) => vec![n.endpoint.clone()],
    }
}

/// Runs the sync until a signal arrives. Must be called inside an actix `System`.
pub async fn run(cfg: Config) -> Result<(), RunError> {
    // observability: /metrics + /status listener, gauge sampler, progress log (src/observe/)
    let board = StatusBoard::for_config(&cfg);
    // Every long-lived task of the run hangs under this tree; the run stops through it.
    let tree = Arc::new(Tree::new());
    let b = board.clone();
    tree.on_fatal(move |why| {
        for s in b.shards() {
            s.mark_failed(why);
        }
    });
    let metrics_addr = crate::observe::status::start(cfg.metrics_addr, board.clone(), &tree)
        .await
        .map_err(|e| RunError::Fatal(e.to_string()))?;
    let pre = match crate::outputs::precheck_first(&cfg).await {
        Ok(p) if p.passed() => p,
        Ok(p) => return Err(board.failed(RunError::Precheck(p.table()))),
        Err(checks) => return Err(board.failed(RunError::Precheck(precheck::render(&checks)))),
    };
    for c in pre.checks.iter().filter(|c| c.warning) {
        tracing::warn!(check = c.name, "{}", c.detail);
    }
    board.set_state(RunState::Syncing);

    // Writers get their own thread: decoding and writing then use both cores. Each target has
    // its writers and its repair queue (rejected writes are repaired by copying their keys from
    // the source, sink/repair.rs); with several targets each is prechecked here first.
    let writer_arbiter = Arbiter::new();
    let mut outputs = Outputs::start(&cfg, &pre.target, &writer_arbiter.handle(), &tree)
        .await
        .map_err(|e| board.failed(e))?;
    // Exactly-once (sink/exact.rs): the target's progress keys are where each shard resumes.
    outputs.read_progress(&pre.source, &cfg.state_dir).await;
    let mut cfg = cfg;
    if cfg.sync.on_resync.is_none() {
        let target_was_empty = outputs.all_empty();
        // Data on the target that an earlier run of ours wrote (it left checkpoints) is ours too.
        let ours = pre.source.masters().iter().all(|m| {
            outputs
                .resume_by_name(&cfg.state_dir, &m.endpoint.to_string())
                .ok()
                .flatten()
                .is_some()
        });
        let ours = ours || crate::sink::exact::any_ours(&outputs.progress);
        cfg.sync.on_resync = Some(if target_was_empty || ours {
            crate::config::OnResync::Clear
        } else {
            tracing::warn!(
                "the target held keys at start: a repeated full sync will only overwrite, so keys deleted on the source meanwhile may stay (set sync.on_resync = \"clear\" to remove them)"
            );
            crate::config::OnResync::Keep
        });
    }
    let source_cluster = pre.source.is_cluster();
    let target_info = outputs.link_target_info(&pre.target);

    let mut shards = Vec::new();
    for node in pre.source.masters() {
        let state = outputs.shard_state(node.endpoint.to_string());
        board.register_shard(state.clone()); // observability
        let resume = match outputs.resume(&cfg.state_dir, &state) {
            Ok(r) => r,
            Err(e) => {
                // Resuming from a guess could skip writes; a full sync could undo a good state.
                // Only a person can choose: this shard fails, the others run.
                state.mark_failed(format!(
                    "{e}; repair or delete that checkpoint file (without it the shard starts with a full sync) and restart shardsync"
                ));
                None
            }
        };
        if let Some(p) = &resume {
            tracing::info!(shard = %state.name, replid = %p.replid, offset = p.offset, "found checkpoint; will try to resume");
        }
        let (resume, _) =
            crate::sink::exact::resume_from(&state, resume, outputs.progress.get(&state.name));
        let from = if cfg.source_prefer_replica {
            let r = node.replicas.first().cloned().ok_or_else(|| {
                board.failed(RunError::Precheck(format!(
                    "source.prefer_replica is set but master {} has no online replica",
                    node.endpoint
                )))
            })?;
            tracing::info!(shard = %state.name, replica = %r, "replicating from a replica of this master");
            if let Ok(mut a) = state.source_addr.lock() {
                *a = r.to_string();
            }
            r
        } else {
            node.endpoint.clone()
        };
        let settings = Arc::new(LinkSettings {
            endpoint: from,
            cluster: source_cluster.then(|| ClusterShard {
                slots: node.slots.clone(),
                known_nodes: known_source_nodes(&pre.source, &cfg.source),
                prefer_replica: cfg.source_prefer_replica,
            }),
            sync: cfg.sync.clone(),
            source: node.info.clone(),
            target: target_info.clone(),
            listening_port: metrics_addr.map(|a| a.port()).unwrap_or(0),
            retry_budget: cfg.source_retry_budget,
        });
        let dispatcher = outputs.fanout(&cfg, node, &state);
        let (st, stop, work) = (
            state.clone(),
            tree.token(Group::Links),
            tree.actor_work(Group::Links),
        );
        let link = Supervisor::start(move |_| {
            ShardLink::new(settings, st, dispatcher, resume, stop, work)
        });
        shards.push(Shard {
            state,
            node: node.clone(),
            heartbeat_key: heartbeat_key(&cfg.sync.heartbeat_key, node, source_cluster),
            _link: link,
        });
    }
    tracing::info!(
        shards = shards.len(),
        source = if source_cluster {
            "cluster"
        } else {
            "standalone"
        },
        target = if outputs.first().is_some_and(|o| o.targets.cluster) {
            "cluster"
        } else {
            "standalone"
        },
        targets = outputs.list.len(),
        "replication started"
    );

    let every = Duration::from_millis(cfg.sync.heartbeat_interval_ms);
    for s in shards.iter().filter(|s| !s.heartbeat_key.is_empty()) {
        let (ep, st, key) = (
            s.node.endpoint.clone(),
            s.state.clone(),
            s.heartbeat_key.clone(),
        );
        tree.spawn(
            Group::Heartbeats,
            st.name.clone(),
            Restart::Always,
            move |stop| heartbeat::run(ep.clone(), st.clone(), key.clone(), every, stop),
        );
    }
    let states: Vec<Arc<ShardState>> = shards.iter().map(|s| s.state.clone()).collect();
    outputs.watchdogs(&tree, &states); // one-to-many: a failed target stops alone
    let (dir, st) = (cfg.state_dir.clone(), crate::outputs::checkpointed(&states));
    let every = Duration::from_millis(cfg.sync.checkpoint_interval_ms);
    tree.spawn(
        Group::Checkpointer,
        "checkpointer".into(),
        Restart::Always,
        move |stop| checkpoint_loop(stop, dir.clone(), st.clone(), every),
    );

    let no_progress = tokio::select! {
        _ = wait_for_signal() => false,
        _ = all_failed(&states) => true,
    };
    if no_progress {
        tracing::error!(
            linger_secs = FAILED_LINGER.as_secs(),
            "every shard has failed; /status and /metrics stay up a few seconds, then shardsync stops (exit code 4)"
        );
        tokio::select! {
            _ = wait_for_signal() => {}
            _ = tokio::time::sleep(FAILED_LINGER) => {}
        }
    } else {
        board.set_state(RunState::Stopping); // observability
    }
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    let idle = cfg.target_reply_timeout;
    tracing::info!(
        limit_s = DRAIN_LIMIT.as_secs(),
        idle_limit_s = idle.as_secs_f64(),
        "stopping: removing the heartbeat keys and draining writes"
    );
    let mut progress = Progress::new(&states, idle, deadline);

    tree.stop(Group::Heartbeats).await;
    tree.stop(Group::Watchdogs).await;
    for s in shards.iter().filter(|s| !s.heartbeat_key.is_empty()) {
        if s.state.phase() != Phase::Incremental {
            continue;
        }
        let ep = heartbeat::current_endpoint(&s.node.endpoint, &s.state);
        match tokio::time::timeout_at(deadline, heartbeat::remove(&ep, &s.heartbeat_key)).await {
            Ok(Ok(offset)) => {
                let reached = s.state.applied_reaches(offset);
                tokio::pin!(reached);
                loop {
                    tokio::select! {
                        _ = &mut reached => break,
                        _ = tokio::time::sleep_until(progress.next_check()) => {
                            if !progress.keep_waiting() {
                                break;
                            }
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(shard = %s.state.name, error = %e, "could not remove the heartbeat key from the source")
            }
            Err(_) => {
                tracing::warn!(shard = %s.state.name, "removing the heartbeat key from the source timed out")
            }
        }
    }
    tree.stop(Group::Links).await;
    outputs.close();
    drop(shards);
    // The links' dispatchers are gone once the actors stop; the writers then drain and stop
    // (a failed target's writers are not waited for).
    let drained = {
        let all_done = outputs.drained(&tree);
        tokio::pin!(all_done);
        let every = Duration::from_secs(2);
        let mut log_tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = &mut all_done => break true,
                _ = tokio::time::sleep_until(progress.next_check()) => {
                    if !progress.keep_waiting() {
                        break false;
                    }
                }
                _ = log_tick.tick() => {
                    let pending: u64 = states.iter().map(|s| pending_bytes(s)).sum();
                    tracing::warn!(pending_bytes = pending, "waiting for the target to acknowledge the last writes");
                }
            }
        }
    };
    // The loop stops between two writes (never half-way: the final write below uses the same
    // temp file).
    tree.stop(Group::Checkpointer).await;
    let mut unapplied = Vec::new();
    for c in crate::outputs::checkpointed(&states) {
        write_checkpoint(&cfg.state_dir, &c);
    }
    for s in &states {
        let applied = s.applied_offset.load(Ordering::Acquire);
        let pending = pending_bytes(s);
        tracing::info!(shard = %s.name, applied_offset = applied, "stopped");
        if !drained && (pending > 0 || s.open_tickets() > 0) {
            unapplied.push(format!(
                "shard {}: the target did not acknowledge {pending} bytes of the source stream \
                 (handed up to offset {}, applied up to {applied}; nothing acknowledged for {:.1} s or {} s in all); \
                 the checkpoint stays at {applied}, so the next run resumes there and applies them if the source still holds them",
                s.name,
                s.handed_offset.load(Ordering::Acquire),
                idle.as_secs_f64(),
                DRAIN_LIMIT.as_secs()
            ));
        }
        if s.phase() == Phase::Failed {
            let why = s
                .last_error
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .unwrap_or_default();
            unapplied.push(format!("shard {}: failed: {why}", s.name));
        }
        for leg in s.legs().iter().filter(|l| l.is_failed()) {
            let why = leg
                .last_error
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .unwrap_or_default();
            unapplied.push(format!(
                "shard {} target {}: failed ({} writes dropped): {why}",
                s.name,
                leg.target.as_deref().unwrap_or(""),
                leg.dropped_writes.load(Ordering::Relaxed)
            ));
        }
    }
    writer_arbiter.stop();
    drop(outputs); // a failed target's writers are let go, not waited for
    tree.shutdown().await;
    if no_progress {
        let why: Vec<String> = states
            .iter()
            .map(|s| {
                let e = s.last_error.lock().ok().and_then(|g| g.clone());
                format!("  {}: {}", s.name, e.unwrap_or_default())
            })
            .collect();
        return Err(RunError::NoProgress(why.join("\n")));
    }
    if unapplied.is_empty() {
        Ok(())
    } else {
        for u in &unapplied {
            tracing::error!("{u}");
        }
        Err(RunError::Incomplete(unapplied.join("\n")))
    }
}

/// Bytes of the source stream handed to the writers and not yet acknowledged.
fn pending_bytes(s: &ShardState) -> u64 {
    s.handed_offset
        .load(Ordering::Acquire)
        .saturating_sub(s.applied_offset.load(Ordering::Acquire))
}

/// How long `/status` and `/metrics` keep showing a run whose every shard failed before it exits
/// (so a scrape or a person sees why).
pub const FAILED_LINGER: Duration = Duration::from_secs(5);

/// Resolves once every shard has failed (never while one can still make progress).
async fn all_failed(shards: &[Arc<ShardState>]) {
    if shards.is_empty() {
        return std::future::pending().await;
    }
    for s in shards {
        let mut w = s.failed_watch();
        let _ = w.wait_for(|f| *f).await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The drain of a stop: goes on while the target acknowledges something at least every `idle`,
/// up to a hard deadline.
struct Progress {
    states: Vec<Arc<ShardState>>,
    idle: Duration,
    deadline: tokio::time::Instant,
    last: u64,
    moved_at: tokio::time::Instant,
}

impl Progress {
    fn new(states: &[Arc<ShardState>], idle: Duration, deadline: tokio::time::Instant) -> Progress {
        let mut p = Progress {
            states: states.to_vec(),
            idle,
            deadline,
            last: 0,
            moved_at: tokio::time::Instant::now(),
        };
        p.last = p.applied();
        p
    }

    fn applied(&self) -> u64 {
        self.states
            .iter()
            .map(|s| s.applied_offset.load(Ordering::Acquire))
            .fold(0u64, u64::wrapping_add)
    }

    /// When [`Progress::keep_waiting`] may first say false: `idle` after the last movement it
    /// saw, or the hard deadline.
    fn next_check(&self) -> tokio::time::Instant {
        (self.moved_at + self.idle).min(self.deadline)
    }

    /// False once the hard deadline passed or nothing was acknowledged for `idle`.
    fn keep_waiting(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let a = self.applied();
        if a != self.last {
            self.last = a;
            self.moved_at = now;
        }
        now < self.deadline && now.duration_since(self.moved_at) < self.idle
    }
}

fn write_checkpoint(dir: &std::path::Path, shard: &ShardState) -> Option<u64> {
    if shard.target.is_some() && shard.is_failed() {
        return None; // a failed target's checkpoint stays where it last was (one-to-many)
    }
    let pos = shard.resumable_position()?;
    match checkpoint::store(dir, &shard.name, &pos) {
        Ok(()) => {
            metrics::gauge!(crate::observe::telemetry::CHECKPOINT_OFFSET, "shard" => shard.name.clone())
                .set(pos.offset as f64);
            Some(pos.offset)
        }
        Err(e) => {
            tracing::error!(shard = %shard.name, error = %e, dir = %dir.display(), "cannot write checkpoint");
            None
        }
    }
}

/// Persists each shard's resumable position when it moves. The write (temp file, fsync, rename)
/// runs on a blocking thread, never on the async threads that carry the links and writers.
async fn checkpoint_loop(
    stop: tokio_util::sync::CancellationToken,
    dir: std::path::PathBuf,
    shards: Vec<Arc<ShardState>>,
    every: Duration,
) {
    let mut last: Vec<Option<u64>> = vec![None; shards.len()];
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        for (i, s) in shards.iter().enumerate() {
            let now = s.resumable_position().map(|p| p.offset);
            if now.is_some() && now != last[i] {
                let (dir, s) = (dir.clone(), s.clone());
                last[i] = tokio::task::spawn_blocking(move || write_checkpoint(&dir, &s))
                    .await
                    .ok()
                    .flatten();
            }
        }
    }
}
