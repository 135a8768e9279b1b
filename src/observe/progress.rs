//! Shared, lock-free progress of each source shard: what the link has read and handed to the
//! writers, what the target has acknowledged, and the link's phase. Read by the ACK sender, the
//! checkpointer, `/status` and the metrics; written by the link and the writers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    /// `host:port` of the node the link replicates from now (changes after a source failover).
    pub source_addr: Mutex<String>,
    /// `host:port` of the shard's master (where the heartbeat is written; differs from
    /// `source_addr` when replicating from a replica).
    pub master_addr: Mutex<String>,
    /// Offset of the last command handed to the writers (where an in-process reconnect resumes).
    pub handed_offset: AtomicU64,
    /// Offset of the last command the target acknowledged.
    pub applied_offset: AtomicU64,
    /// True once the current epoch's RDB was fully applied: only then is a checkpoint valid.
    pub full_sync_done: AtomicBool,
    pub rdb_bytes: AtomicU64,
    pub rdb_size: AtomicU64,
    pub rdb_keys: AtomicU64,
    /// Keys of the current RDB whose commands (some or all) were handed to the writers: what a
    /// failed full sync may have left on the target.
    pub rdb_keys_handed: AtomicU64,
    pub restarts: AtomicU64,
    pub full_resyncs: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Writes of this shard that the target rejected (each also logged with its key).
    pub rejected_writes: AtomicU64,
    /// Parts of the data the target cannot hold (see [`crate::observe::events::LossyConversion`]).
    pub lossy_conversions: AtomicU64,
    /// Keys copied from the source after the target rejected a write ([`crate::sink::repair`]).
    pub key_repairs: AtomicU64,
    /// Keys whose repair failed (the target keeps what it has).
    pub key_repairs_failed: AtomicU64,
    /// Unix ms carried by the last heartbeat applied to the target, and when it was applied.
    pub heartbeat_applied_ms: AtomicU64,
    /// Lag measured when that heartbeat was acknowledged: ack time − heartbeat time, in ms.
    pub heartbeat_lag_ms: AtomicU64,
    /// Tickets of handed-out batches, oldest first (see [`Ticket`]).
    tickets: Mutex<VecDeque<Arc<Ticket>>>,
    /// Set by [`ShardState::mark_degraded`]: part of the shard's writes cannot be applied; the
    /// phase stays `failed` and the error stays, while the rest keeps syncing.
    degraded: AtomicBool,
    /// Becomes true, once and for good, when the shard fails (see [`ShardState::mark_failed`]).
    failed: tokio::sync::watch::Sender<bool>,
    /// Fires whenever tickets are retired (the applied offset may have moved, the queue shrank):
    /// waiters use it instead of polling ([`ShardState::drained`], [`ShardState::progress_watch`]).
    retired: tokio::sync::watch::Sender<()>,
}

/// One run of a shard's commands in stream order, possibly split over several target writers.
/// It is done when every part is acknowledged; the shard's applied offset moves only over a
/// prefix of done tickets, so a fast node never lets the offset pass a slow node's writes.
#[derive(Debug)]
pub struct Ticket {
    pub epoch: u64,
    /// Source offset after the run's last command (`None` inside an RDB load).
    pub offset: Option<u64>,
    /// The last run of a full sync: once done, the shard's position is resumable.
    pub completes_full_sync: bool,
    /// Parts not yet acknowledged.
    remaining: AtomicUsize,
}

impl Ticket {
    /// Adds a part (a writer forwarding a redirected command keeps the ticket open).
    pub fn add_part(&self) {
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }
}

impl ShardState {
    pub fn new(name: String) -> ShardState {
        let addr = name.clone();
        ShardState {
            name,
            phase: AtomicU8::new(Phase::Connecting as u8),
            epoch: AtomicU64::new(0),
            replid: Mutex::new(String::new()),
            source_addr: Mutex::new(addr.clone()),
            master_addr: Mutex::new(addr),
            handed_offset: AtomicU64::new(0),
            applied_offset: AtomicU64::new(0),
            full_sync_done: AtomicBool::new(false),
            rdb_bytes: AtomicU64::new(0),
            rdb_size: AtomicU64::new(0),
            rdb_keys: AtomicU64::new(0),
            rdb_keys_handed: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            full_resyncs: AtomicU64::new(0),
            last_error: Mutex::new(None),
            rejected_writes: AtomicU64::new(0),
            lossy_conversions: AtomicU64::new(0),
            key_repairs: AtomicU64::new(0),
            key_repairs_failed: AtomicU64::new(0),
            heartbeat_applied_ms: AtomicU64::new(0),
            heartbeat_lag_ms: AtomicU64::new(0),
            tickets: Mutex::new(VecDeque::new()),
            degraded: AtomicBool::new(false),
            failed: tokio::sync::watch::Sender::new(false),
            retired: tokio::sync::watch::Sender::new(()),
        }
    }

    /// Stops the shard for good: phase `failed` (in `/status` and `shardsync_link_state`),
    /// `last_error` = `reason`, which must say what the user should do. The source link stops
    /// (it watches [`ShardState::failed_watch`]) and is not restarted; the run ends with exit
    /// code 4 once no shard can make progress. Callable from anywhere (the link, the writers);
    /// the first reason wins.
    pub fn mark_failed(&self, reason: impl Into<String>) {
        let reason = reason.into();
        if self.is_failed() {
            return;
        }
        tracing::error!(shard = %self.name, reason = %reason, "shard failed; it stops until shardsync is restarted");
        self.set_error(Some(reason));
        self.set_phase(Phase::Failed);
        self.failed.send_replace(true);
    }

    /// Part of the shard's writes cannot be applied until a person acts (e.g. a database the
    /// target refuses: only that database's writes are skipped): the shard shows `failed` with
    /// `reason` from now on, but keeps syncing what it can, and the run does not stop for it.
    pub fn mark_degraded(&self, reason: impl Into<String>) {
        self.degraded.store(true, Ordering::Release);
        self.set_error(Some(reason.into()));
        self.set_phase(Phase::Failed);
    }

    /// True once [`ShardState::mark_failed`] was called.
    pub fn is_failed(&self) -> bool {
        *self.failed.borrow()
    }

    /// Resolves when the shard has failed (at once if it already has).
    pub fn failed_watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.failed.subscribe()
    }

    /// Called by a writer when the target acknowledged a heartbeat `SET` carrying `source_ms`
    /// (Unix ms on the source side). The lag gauges are published from this by the sampler in
    /// [`crate::observe::status`].
    pub fn heartbeat_applied(&self, source_ms: u64) {
        let lag = crate::now_ms().saturating_sub(source_ms);
        self.heartbeat_lag_ms.store(lag, Ordering::Relaxed);
        self.heartbeat_applied_ms
            .store(source_ms, Ordering::Release);
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Sets the phase; `failed` is final (a failed shard stays failed).
    pub fn set_phase(&self, p: Phase) {
        let sticky =
            |cur: u8| (cur != Phase::Failed as u8 || p == Phase::Failed).then_some(p as u8);
        if self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, sticky)
            .is_err()
        {
            return;
        }
        for q in Phase::ALL {
            metrics::gauge!(crate::observe::telemetry::LINK_STATE, "shard" => self.name.clone(), "state" => q.name())
                .set(if q == p { 1.0 } else { 0.0 });
        }
    }

    pub fn set_error(&self, e: Option<String>) {
        if e.is_none() && (self.is_failed() || self.degraded.load(Ordering::Acquire)) {
            return;
        }
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }

    /// `host:port` of the shard's current master.
    pub fn master_addr(&self) -> String {
        self.master_addr
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    /// `host:port` of the current source node.
    pub fn source_addr(&self) -> String {
        self.source_addr
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
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

    /// Starts a new epoch (a full resync): forgets older tickets, resets the offsets to `offset`.
    pub fn begin_epoch(&self, offset: u64) -> u64 {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        if let Ok(mut q) = self.tickets.lock() {
            q.clear();
        }
        self.full_sync_done.store(false, Ordering::Release);
        self.applied_offset.store(offset, Ordering::Release);
        self.handed_offset.store(offset, Ordering::Release);
        self.retired.send_replace(());
        epoch
    }

    /// Issues a ticket for a run of `parts` batches (0 parts: a pure offset marker).
    pub fn issue(
        &self,
        epoch: u64,
        offset: Option<u64>,
        completes_full_sync: bool,
        parts: usize,
    ) -> Arc<Ticket> {
        let t = Arc::new(Ticket {
            epoch,
            offset,
            completes_full_sync,
            remaining: AtomicUsize::new(parts),
        });
        if let Ok(mut q) = self.tickets.lock() {
            q.push_back(t.clone());
            self.advance(&mut q);
        }
        t
    }

    /// Called by a writer when its part of `ticket` is acknowledged.
    pub fn part_done(&self, ticket: &Ticket) {
        if ticket.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            && let Ok(mut q) = self.tickets.lock()
        {
            self.advance(&mut q);
        }
    }

    fn advance(&self, q: &mut VecDeque<Arc<Ticket>>) {
        let epoch = self.epoch.load(Ordering::Acquire);
        let before = q.len();
        while q
            .front()
            .is_some_and(|t| t.remaining.load(Ordering::Acquire) == 0)
        {
            let Some(t) = q.pop_front() else { break };
            if t.epoch != epoch {
                continue;
            }
            if let Some(o) = t.offset {
                self.applied_offset.fetch_max(o, Ordering::AcqRel);
            }
            if t.completes_full_sync {
                self.full_sync_done.store(true, Ordering::Release);
            }
        }
        if q.len() != before {
            self.retired.send_replace(());
        }
    }

    /// Tickets not yet done (batches in queues or in flight).
    pub fn open_tickets(&self) -> usize {
        self.tickets.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Changes whenever tickets are retired (the applied offset may have moved).
    pub fn progress_watch(&self) -> tokio::sync::watch::Receiver<()> {
        self.retired.subscribe()
    }

    /// Resolves once every ticket handed out so far is done (at once when none is open).
    pub async fn drained(&self) {
        let mut w = self.progress_watch();
        while self.open_tickets() > 0 {
            if w.changed().await.is_err() {
                return;
            }
        }
    }

    /// Resolves once the target has acknowledged the stream up to `offset`.
    pub async fn applied_reaches(&self, offset: u64) {
        let mut w = self.progress_watch();
        while self.applied_offset.load(Ordering::Acquire) < offset {
            if w.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_offset_moves_over_done_prefix_only() {
        let s = ShardState::new("s".into());
        let e = s.begin_epoch(100);
        let a = s.issue(e, Some(110), false, 2);
        let b = s.issue(e, Some(120), false, 1);
        s.part_done(&b);
        assert_eq!(
            s.applied_offset.load(Ordering::Acquire),
            100,
            "b done but a is not"
        );
        s.part_done(&a);
        assert_eq!(s.applied_offset.load(Ordering::Acquire), 100);
        s.part_done(&a);
        assert_eq!(s.applied_offset.load(Ordering::Acquire), 120);
        let _marker = s.issue(e, Some(130), true, 0);
        assert_eq!(s.applied_offset.load(Ordering::Acquire), 130);
        assert!(s.full_sync_done.load(Ordering::Acquire));
        let old = s.issue(e, Some(140), false, 1);
        let e2 = s.begin_epoch(5);
        s.part_done(&old);
        assert_eq!(
            s.applied_offset.load(Ordering::Acquire),
            5,
            "a stale epoch never moves the offset"
        );
        assert!(e2 > e && !s.full_sync_done.load(Ordering::Acquire));
    }
}
