//! Shared, lock-free progress of each source shard: what the link has read and handed to the
//! writers, what the target has acknowledged, and the link's phase. Read by the ACK sender, the
//! checkpointer, `/status` and the metrics; written by the link and the writers.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use crate::source::handshake::ReplPosition;

/// Phase of a shard's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Connecting = 0,
    FullSync = 1,
    Incremental = 2,
    Backoff = 3,
    Stopped = 4,
    Failed = 5,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Connecting,
        Phase::FullSync,
        Phase::Incremental,
        Phase::Backoff,
        Phase::Stopped,
        Phase::Failed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::FullSync => "full_sync",
            Phase::Incremental => "incremental",
            Phase::Backoff => "backoff",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        }
    }
    fn from_u8(v: u8) -> Phase {
        Phase::ALL.get(v as usize).copied().unwrap_or(Phase::Failed)
    }
}

/// Progress of one source shard.
#[derive(Debug)]
pub struct ShardState {
    /// Shard name used in logs, metrics and checkpoint file names (the source node address).
    pub name: String,
    phase: AtomicU8,
    /// Bumped on every full resync: batches of an older epoch no longer move `applied_offset`.
    pub epoch: AtomicU64,
    /// Replication ID of the current stream.
    pub replid: Mutex<String>,
    /// Offset of the last command handed to the writers (where an in-process reconnect resumes).
    pub handed_offset: AtomicU64,
    /// Offset of the last command the target acknowledged.
    pub applied_offset: AtomicU64,
    /// True once the current epoch's RDB was fully applied: only then is a checkpoint valid.
    pub full_sync_done: AtomicBool,
    pub rdb_bytes: AtomicU64,
    pub rdb_size: AtomicU64,
    pub rdb_keys: AtomicU64,
    pub restarts: AtomicU64,
    pub full_resyncs: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Writes of this shard that the target rejected (each also logged with its key).
    pub rejected_writes: AtomicU64,
    /// Unix ms carried by the last heartbeat applied to the target, and when it was applied.
    pub heartbeat_applied_ms: AtomicU64,
    /// Lag measured when that heartbeat was acknowledged: ack time − heartbeat time, in ms.
    pub heartbeat_lag_ms: AtomicU64,
}

impl ShardState {
    pub fn new(name: String) -> ShardState {
        ShardState {
            name,
            phase: AtomicU8::new(Phase::Connecting as u8),
            epoch: AtomicU64::new(0),
            replid: Mutex::new(String::new()),
            handed_offset: AtomicU64::new(0),
            applied_offset: AtomicU64::new(0),
            full_sync_done: AtomicBool::new(false),
            rdb_bytes: AtomicU64::new(0),
            rdb_size: AtomicU64::new(0),
            rdb_keys: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            full_resyncs: AtomicU64::new(0),
            last_error: Mutex::new(None),
            rejected_writes: AtomicU64::new(0),
            heartbeat_applied_ms: AtomicU64::new(0),
            heartbeat_lag_ms: AtomicU64::new(0),
        }
    }

    /// Called by a writer when the target acknowledged a heartbeat `SET` carrying `source_ms`
    /// (Unix ms on the source side). The lag gauges are published from this by the sampler in
    /// [`crate::status`].
    pub fn heartbeat_applied(&self, source_ms: u64) {
        let lag = crate::now_ms().saturating_sub(source_ms);
        self.heartbeat_lag_ms.store(lag, Ordering::Relaxed);
        self.heartbeat_applied_ms
            .store(source_ms, Ordering::Release);
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
        for q in Phase::ALL {
            metrics::gauge!("shardsync_link_state", "shard" => self.name.clone(), "state" => q.name())
                .set(if q == p { 1.0 } else { 0.0 });
        }
    }

    pub fn set_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }

    pub fn replid(&self) -> String {
        self.replid.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Where a new process may resume: set only when the RDB of the current epoch is applied.
    pub fn resumable_position(&self) -> Option<ReplPosition> {
        if !self.full_sync_done.load(Ordering::Acquire) {
            return None;
        }
        let replid = self.replid();
        (!replid.is_empty()).then(|| ReplPosition {
            replid,
            offset: self.applied_offset.load(Ordering::Acquire),
        })
    }

    /// Where an in-process reconnect resumes: after the last command handed to the writers.
    pub fn reconnect_position(&self) -> Option<ReplPosition> {
        if !self.full_sync_done.load(Ordering::Acquire) && self.phase() != Phase::Incremental {
            return None;
        }
        let replid = self.replid();
        (!replid.is_empty()).then(|| ReplPosition {
            replid,
            offset: self.handed_offset.load(Ordering::Acquire),
        })
    }

    /// Called by a writer when a batch of `epoch` ending at `offset` is acknowledged.
    pub fn acknowledge(&self, epoch: u64, offset: Option<u64>, completes_full_sync: bool) {
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if let Some(o) = offset {
            self.applied_offset.fetch_max(o, Ordering::AcqRel);
        }
        if completes_full_sync {
            self.full_sync_done.store(true, Ordering::Release);
        }
    }
}
