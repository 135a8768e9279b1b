//! The `run` job: precheck, build the actor tree (one supervised [`ShardLink`] per source
//! master, one [`crate::sink::TargetWriter`] per target node behind [`Targets`]), run the
//! heartbeats and the checkpointer, and on SIGTERM or SIGINT shut down cleanly: remove the
//! heartbeat keys, wait until the target has applied everything up to that point, write the
//! final checkpoints, exit 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use crate::checkpoint;
use crate::config::Config;
use crate::heartbeat;
use crate::net::topology::Node;
use crate::observe::progress::{Phase, ShardState};
use crate::observe::status::{RunState, StatusBoard};
use crate::precheck;
use crate::router::hashtag_in;
use crate::sink::writer::WriterSettings;
use crate::sink::{Dispatcher, Targets};
use crate::source::ShardLink;
use crate::source::link::{ClusterShard, LinkSettings, StopLink};

/// How a run ended badly; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("precheck failed:\n{0}")]
    Precheck(String),
    #[error("{0}")]
    Fatal(String),
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Precheck(_) => 3,
            RunError::Fatal(_) => 1,
        }
    }
}

/// One source shard with everything the app keeps about it.
struct Shard {
    state: Arc<ShardState>,
    node: Node,
    heartbeat_key: String,
    link: Addr<ShardLink>,
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
    let observability = crate::observe::status::start(cfg.metrics_addr, board.clone())
        .await
        .map_err(RunError::Fatal)?;
    let pre = match precheck::run(&cfg).await {
        Ok(p) if p.passed() => p,
        Ok(p) => return Err(board.failed(RunError::Precheck(p.table()))),
        Err(checks) => return Err(board.failed(RunError::Precheck(precheck::render(&checks)))),
    };
    for c in pre.checks.iter().filter(|c| c.warning) {
        tracing::warn!(check = c.name, "{}", c.detail);
    }
    board.set_state(RunState::Syncing);

    // Writers get their own thread: decoding and writing then use both cores.
    let writer_arbiter = Arbiter::new();
    let targets = Targets::start(
        &pre.target,
        &cfg.target,
        WriterSettings {
            endpoint: cfg.target.clone(),
            heartbeat_key: Bytes::from(cfg.sync.heartbeat_key.clone()),
        },
        cfg.sync.queue_batches,
        writer_arbiter.handle(),
    );
    let mut cfg = cfg;
    if cfg.sync.on_resync.is_none() {
        let target_was_empty = pre
            .target
            .masters()
            .iter()
            .all(|m| crate::net::client::keyspace_keys(&m.raw_info) == 0);
        // Data on the target that an earlier run of ours wrote (it left checkpoints) is ours too.
        let ours = pre.source.masters().iter().all(|m| {
            checkpoint::load(&cfg.state_dir, &m.endpoint.to_string())
                .ok()
                .flatten()
                .is_some()
        });
        cfg.sync.on_resync = Some(if target_was_empty || ours {
            crate::config::OnResync::Clear
        } else {
            tracing::warn!(
                "the target held keys at start: a repeated full sync will only overwrite, so keys deleted on the source meanwhile may stay (set sync.on_resync = \"clear\" to remove them)"
            );
            crate::config::OnResync::Keep
        });
    }
    let sync = Arc::new(cfg.sync.clone());
    let shutdown = Arc::new(AtomicBool::new(false));
    let source_cluster = pre.source.is_cluster();
    let target_info = pre.target.info();

    let mut shards = Vec::new();
    for node in pre.source.masters() {
        let state = Arc::new(ShardState::new(node.endpoint.to_string()));
        board.register_shard(state.clone()); // observability
        let resume = checkpoint::load(&cfg.state_dir, &state.name).map_err(RunError::Fatal)?;
        if let Some(p) = &resume {
            tracing::info!(shard = %state.name, replid = %p.replid, offset = p.offset, "found checkpoint; will try to resume");
        }
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
            listening_port: observability.addr.map(|a| a.port()).unwrap_or(0),
        });
        let dispatcher = Dispatcher::new(targets.clone(), sync.clone());
        let (st, sd) = (state.clone(), shutdown.clone());
        let link = Supervisor::start(move |_| ShardLink::new(settings, st, dispatcher, resume, sd));
        shards.push(Shard {
            state,
            node: node.clone(),
            heartbeat_key: heartbeat_key(&cfg.sync.heartbeat_key, node, source_cluster),
            link,
        });
    }
    tracing::info!(
        shards = shards.len(),
        source = if source_cluster {
            "cluster"
        } else {
            "standalone"
        },
        target = if targets.cluster {
            "cluster"
        } else {
            "standalone"
        },
        "replication started"
    );

    let heartbeats: Vec<_> = shards
        .iter()
        .filter(|s| !s.heartbeat_key.is_empty())
        .map(|s| {
            tokio::spawn(heartbeat::run(
                s.node.endpoint.clone(),
                s.state.clone(),
                s.heartbeat_key.clone(),
                Duration::from_millis(cfg.sync.heartbeat_interval_ms),
            ))
        })
        .collect();
    let states: Vec<Arc<ShardState>> = shards.iter().map(|s| s.state.clone()).collect();
    let checkpointer = tokio::spawn(checkpoint_loop(
        cfg.state_dir.clone(),
        states.clone(),
        Duration::from_millis(cfg.sync.checkpoint_interval_ms),
    ));

    wait_for_signal().await;
    board.set_state(RunState::Stopping); // observability
    tracing::info!("stopping: removing the heartbeat keys and draining writes");

    for h in heartbeats {
        h.abort();
    }
    for s in shards.iter().filter(|s| !s.heartbeat_key.is_empty()) {
        if s.state.phase() != Phase::Incremental {
            continue;
        }
        let ep = heartbeat::current_endpoint(&s.node.endpoint, &s.state);
        match heartbeat::remove(&ep, &s.heartbeat_key).await {
            Ok(offset) => wait_applied(&s.state, offset, Duration::from_secs(10)).await,
            Err(e) => {
                tracing::warn!(shard = %s.state.name, error = %e, "could not remove the heartbeat key from the source")
            }
        }
    }
    shutdown.store(true, Ordering::Release);
    for s in &shards {
        let _ = s.link.send(StopLink).await;
    }
    let done = targets.close();
    drop(shards);
    // The links' dispatchers are gone once the actors stop; the writers then drain and stop.
    let all_done = async {
        for d in done {
            let _ = d.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), all_done)
        .await
        .is_err()
    {
        tracing::warn!(
            "the target did not acknowledge every write within 10 s; the checkpoints cover what it did"
        );
    }
    checkpointer.abort();
    for s in &states {
        write_checkpoint(&cfg.state_dir, s);
        tracing::info!(shard = %s.name, applied_offset = s.applied_offset.load(Ordering::Acquire), "stopped");
    }
    writer_arbiter.stop();
    Ok(())
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

async fn wait_applied(shard: &ShardState, offset: u64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while shard.applied_offset.load(Ordering::Acquire) < offset
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_checkpoint(dir: &std::path::Path, shard: &ShardState) -> Option<u64> {
    let pos = shard.resumable_position()?;
    match checkpoint::store(dir, &shard.name, &pos) {
        Ok(()) => {
            metrics::gauge!("shardsync_checkpoint_offset_bytes", "shard" => shard.name.clone())
                .set(pos.offset as f64);
            Some(pos.offset)
        }
        Err(e) => {
            tracing::error!(shard = %shard.name, error = %e, dir = %dir.display(), "cannot write checkpoint");
            None
        }
    }
}

/// Persists each shard's resumable position when it moves.
async fn checkpoint_loop(dir: std::path::PathBuf, shards: Vec<Arc<ShardState>>, every: Duration) {
    let mut last: Vec<Option<u64>> = vec![None; shards.len()];
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        for (i, s) in shards.iter().enumerate() {
            let now = s.resumable_position().map(|p| p.offset);
            if now.is_some() && now != last[i] {
                last[i] = write_checkpoint(&dir, s);
            }
        }
    }
}
