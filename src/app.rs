//! The `run` job: precheck, build the actor tree (one supervised [`ShardLink`] per source shard,
//! one [`TargetWriter`] per target node), run the heartbeat and the checkpointer, and on SIGTERM or
//! SIGINT shut down cleanly: remove the heartbeat key, wait until the target has applied
//! everything up to that point, write the final checkpoint, exit 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use crate::checkpoint;
use crate::config::Config;
use crate::heartbeat;
use crate::precheck;
use crate::progress::{Phase, ShardState};
use crate::source::ShardLink;
use crate::source::link::{LinkSettings, StopLink};
use crate::status::{RunState, StatusBoard};
use crate::target::TargetWriter;
use crate::target::writer::WriterSettings;

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

/// Runs the sync until a signal arrives. Must be called inside an actix `System`.
pub async fn run(cfg: Config) -> Result<(), RunError> {
    // observability: /metrics + /status listener, gauge sampler, progress log (src/status.rs)
    let board = StatusBoard::for_config(&cfg);
    let _observability = crate::status::start(cfg.metrics_addr, board.clone())
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

    let shard = Arc::new(ShardState::new(cfg.source.to_string()));
    board.register_shard(shard.clone()); // observability
    board.register_target_node(&cfg.target.to_string()); // observability
    let resume = checkpoint::load(&cfg.state_dir, &shard.name).map_err(RunError::Fatal)?;
    if let Some(p) = &resume {
        tracing::info!(shard = %shard.name, replid = %p.replid, offset = p.offset, "found checkpoint; will try to resume");
    }

    let (writer, writer_tx, writer_done) = TargetWriter::new(
        WriterSettings {
            endpoint: cfg.target.clone(),
            heartbeat_key: Bytes::from(cfg.sync.heartbeat_key.clone()),
        },
        cfg.sync.queue_batches,
    );
    // The writer gets its own thread: decoding and writing then use both cores.
    let writer_arbiter = Arbiter::new();
    let _writer_addr = TargetWriter::start_in_arbiter(&writer_arbiter.handle(), move |_| writer);

    let shutdown = Arc::new(AtomicBool::new(false));
    let link_settings = Arc::new(LinkSettings {
        endpoint: cfg.source.clone(),
        sync: cfg.sync.clone(),
        source: pre.source.clone(),
        target: pre.target.clone(),
        listening_port: cfg.metrics_addr.map(|a| a.port()).unwrap_or(0),
    });
    let dispatcher = crate::target::Dispatcher::single(writer_tx);
    let link = {
        let (s, sh, tx, sd) = (
            link_settings.clone(),
            shard.clone(),
            dispatcher.clone(),
            shutdown.clone(),
        );
        Supervisor::start(move |_| ShardLink::new(s, sh, tx, resume, sd))
    };
    drop(dispatcher);

    let heartbeat = (!cfg.sync.heartbeat_key.is_empty()).then(|| {
        tokio::spawn(heartbeat::run(
            cfg.source.clone(),
            cfg.sync.heartbeat_key.clone(),
            Duration::from_millis(cfg.sync.heartbeat_interval_ms),
        ))
    });
    let checkpointer = tokio::spawn(checkpoint_loop(
        cfg.state_dir.clone(),
        vec![shard.clone()],
        Duration::from_millis(cfg.sync.checkpoint_interval_ms),
    ));

    wait_for_signal().await;
    board.set_state(RunState::Stopping); // observability
    tracing::info!("stopping: removing the heartbeat key and draining writes");

    if let Some(h) = heartbeat {
        h.abort();
        if shard.phase() == Phase::Incremental {
            match heartbeat::remove(&cfg.source, &cfg.sync.heartbeat_key).await {
                Ok(offset) => wait_applied(&shard, offset, Duration::from_secs(10)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not remove the heartbeat key from the source")
                }
            }
        }
    }
    shutdown.store(true, Ordering::Release);
    let _ = link.send(StopLink).await;
    drop(link);
    // The link's queue sender is gone once the actor stops; the writer then drains and stops.
    if tokio::time::timeout(Duration::from_secs(10), writer_done)
        .await
        .is_err()
    {
        tracing::warn!(
            "the target did not acknowledge every write within 10 s; the checkpoint covers what it did"
        );
    }
    checkpointer.abort();
    write_checkpoint(&cfg.state_dir, &shard);
    writer_arbiter.stop();
    tracing::info!(shard = %shard.name, applied_offset = shard.applied_offset.load(Ordering::Acquire), "stopped");
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

/// Persists each shard's resumable position when it moves, and publishes offset gauges.
async fn checkpoint_loop(dir: std::path::PathBuf, shards: Vec<Arc<ShardState>>, every: Duration) {
    let mut last: Vec<Option<u64>> = vec![None; shards.len()];
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        for (i, s) in shards.iter().enumerate() {
            let applied = s.applied_offset.load(Ordering::Acquire);
            let handed = s.handed_offset.load(Ordering::Acquire);
            metrics::gauge!("shardsync_applied_offset_bytes", "shard" => s.name.clone())
                .set(applied as f64);
            metrics::gauge!("shardsync_lag_bytes", "shard" => s.name.clone())
                .set(handed.saturating_sub(applied) as f64);
            let now = s.resumable_position().map(|p| p.offset);
            if now.is_some() && now != last[i] {
                last[i] = write_checkpoint(&dir, s);
            }
        }
    }
}
