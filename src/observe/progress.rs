//! Shared, lock-free progress of each source shard: what the link has read and handed to the
//! writers, what the target has acknowledged, and the link's phase. Read by the ACK sender, the
//! checkpointer, `/status` and the metrics; written by the link and the writers.
//!
//! One-to-many: when a run writes to several targets, each shard has one *leg* per target (a
//! `ShardState` of its own, see [`ShardState::with_targets`]) that carries that target's tickets,
//! applied offset, checkpoint and failure. The shard's own applied offset (what `REPLCONF ACK`
//! reports and the link resumes from) is then the slowest live leg's; a failed leg no longer
//! holds it back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

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
    /// Source database selected at `handed_offset` / `applied_offset` (a resumed stream starts
    /// there: masters do not repeat `SELECT` after a partial resync).
    pub handed_db: AtomicU32,
    pub applied_db: AtomicU32,
    /// Source database at the end of the run about to be issued (set by the link before it
    /// hands a run over; copied into the run's ticket).
    pub run_db: AtomicU32,
    /// Exactly-once position of the run about to be issued when it is a piece of one source
    /// command (a large `RESTORE` decoded into several runs): `(offset before the command,
    /// pieces so far)`; `None` for whole runs. Set by the link like `run_db`.
    pub run_piece: Mutex<Option<(u64, u32)>>,
    /// While a command is sent in pieces: the source offset just before it, also inside a
    /// source transaction (where the pieces carry no position). A target ahead of the resume
    /// point skips the pieces when its replay filter is past it (see `sink::exact_many`).
    pub piece_of: Mutex<Option<u64>>,
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
    /// Target name of a leg (`None` for a shard).
    pub target: Option<String>,
    /// One leg per target when the run writes to several (see the module doc); empty otherwise.
    legs: Vec<Arc<ShardState>>,
    /// The shard a leg belongs to.
    parent: Weak<ShardState>,
    /// Serializes the shard's aggregation over its legs with epoch resets.
    agg: Mutex<()>,
    /// Tickets completed (a leg's watchdog sees progress by it, also while offsets do not move).
    pub tickets_done: AtomicU64,
    /// Writes not sent because this leg's target failed (counted, logged once).
    pub dropped_writes: AtomicU64,
    /// Fires whenever tickets are retired (the applied offset may have moved, the queue shrank),
    /// and when the queue goes from empty to not empty: waiters use it instead of polling ([`ShardState::drained`], [`ShardState::progress_watch`]).
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
    /// Source database selected at `offset`.
    pub source_db: u32,
    /// A piece of one source command (see [`ShardState::run_piece`]); `offset` is then `None`.
    pub piece: Option<(u64, u32)>,
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
            handed_db: AtomicU32::new(0),
            applied_db: AtomicU32::new(0),
            run_db: AtomicU32::new(0),
            run_piece: Mutex::new(None),
            piece_of: Mutex::new(None),
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
            target: None,
            legs: Vec::new(),
            parent: Weak::new(),
            agg: Mutex::new(()),
            tickets_done: AtomicU64::new(0),
            dropped_writes: AtomicU64::new(0),
            retired: tokio::sync::watch::Sender::new(()),
        }
    }

    /// A shard writing to several targets: one leg per name in `targets` (a leg's `name` is
    /// `<shard>@<target>`, which also names its checkpoint file).
    pub fn with_targets(name: String, targets: &[String]) -> Arc<ShardState> {
        Arc::new_cyclic(|me| {
            let mut s = ShardState::new(name.clone());
            s.legs = targets
                .iter()
                .map(|t| {
                    let mut leg = ShardState::new(format!("{name}@{t}"));
                    leg.target = Some(t.clone());
                    leg.parent = me.clone();
                    Arc::new(leg)
                })
                .collect();
            s
        })
    }

    /// The shard's name (a leg's shard's, without the `@<target>`).
    pub fn shard_name(&self) -> &str {
        match &self.target {
            Some(t) => self
                .name
                .strip_suffix(t.as_str())
                .and_then(|n| n.strip_suffix('@'))
                .unwrap_or(&self.name),
            None => &self.name,
        }
    }

    /// The per-target legs (empty with one target).
    pub fn legs(&self) -> &[Arc<ShardState>] {
        &self.legs
    }

    /// Legs whose target has not failed.
    fn live_legs(&self) -> impl Iterator<Item = &Arc<ShardState>> {
        self.legs.iter().filter(|l| !l.is_failed())
    }

    /// Recomputes the shard's progress from its live legs: applied offset = the slowest leg's,
    /// full sync done = done on every leg, heartbeat = the oldest one applied everywhere.
    fn aggregate(&self) {
        if self.legs.is_empty() {
            return;
        }
        let _g = self.agg.lock();
        let (mut applied, mut done, mut hb, mut lag, mut any) =
            (u64::MAX, true, u64::MAX, 0, false);
        for l in self.live_legs() {
            any = true;
            applied = applied.min(l.applied_offset.load(Ordering::Acquire));
            done &= l.full_sync_done.load(Ordering::Acquire);
            hb = hb.min(l.heartbeat_applied_ms.load(Ordering::Acquire));
            lag = lag.max(l.heartbeat_lag_ms.load(Ordering::Relaxed));
        }
        if !any {
            return;
        }
        self.applied_offset.store(applied, Ordering::Release);
        self.full_sync_done.store(done, Ordering::Release);
        self.heartbeat_lag_ms.store(lag, Ordering::Relaxed);
        self.heartbeat_applied_ms.store(hb, Ordering::Release);
    }

    /// After `+CONTINUE`: when no full sync was applied in this process, the position resumed
    /// from (a checkpoint) is what the target (every target) holds.
    pub fn resumed_at(&self, offset: u64) {
        for l in self.live_legs() {
            l.resumed_at(offset);
        }
        if !self.full_sync_done.swap(true, Ordering::AcqRel) {
            self.applied_offset.store(offset, Ordering::Release);
        }
        self.aggregate();
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
        if let Some(t) = &self.target {
            tracing::error!(shard = %self.name, target = %t, reason = %reason, "target failed for this shard; its writes are dropped until shardsync is restarted, the other targets go on");
            metrics::gauge!(crate::observe::telemetry::TARGET_FAILED, "shard" => self.shard_name().to_string(), "target" => t.clone())
                .set(1.0);
        } else {
            tracing::error!(shard = %self.name, reason = %reason, "shard failed; it stops until shardsync is restarted");
        }
        self.set_error(Some(reason));
        self.set_phase(Phase::Failed);
        self.failed.send_replace(true);
        if let Some(p) = self.parent.upgrade() {
            if p.live_legs().next().is_none() {
                p.mark_failed(format!(
                    "every target failed (the last: {}); fix them and restart shardsync",
                    self.last_error
                        .lock()
                        .ok()
                        .and_then(|g| g.clone())
                        .unwrap_or_default()
                ));
            } else {
                p.aggregate();
                p.retired.send_replace(());
            }
        }
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
        if let Some(p) = self.parent.upgrade() {
            p.aggregate();
        }
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

    /// `host:port` of the shard's current master (a leg's: its shard's).
    pub fn master_addr(&self) -> String {
        if let Some(p) = self.parent.upgrade() {
            return p.master_addr();
        }
        self.master_addr
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    /// `host:port` of the current source node (a leg's: its shard's).
    pub fn source_addr(&self) -> String {
        if let Some(p) = self.parent.upgrade() {
            return p.source_addr();
        }
        self.source_addr
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    pub fn replid(&self) -> String {
        if let Some(p) = self.parent.upgrade() {
            return p.replid(); // a leg follows its shard's stream
        }
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
            db: self.applied_db.load(Ordering::Acquire),
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
            db: self.handed_db.load(Ordering::Acquire),
        })
    }

    /// Starts a new epoch (a full resync): forgets older tickets, resets the offsets to `offset`.
    pub fn begin_epoch(&self, offset: u64) -> u64 {
        let _g = self.agg.lock();
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.reset_to(epoch, offset);
        for l in self.live_legs() {
            l.reset_to(epoch, offset); // a leg's tickets carry the shard's epoch
        }
        epoch
    }

    fn reset_to(&self, epoch: u64, offset: u64) {
        self.epoch.store(epoch, Ordering::Release);
        if let Ok(mut q) = self.tickets.lock() {
            q.clear();
        }
        self.full_sync_done.store(false, Ordering::Release);
        self.applied_offset.store(offset, Ordering::Release);
        self.handed_offset.store(offset, Ordering::Release);
        for db in [&self.handed_db, &self.applied_db, &self.run_db] {
            db.store(0, Ordering::Release);
        }
        self.retired.send_replace(());
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
            source_db: self.run_db.load(Ordering::Acquire),
            piece: if offset.is_none() {
                self.run_piece.lock().ok().and_then(|p| *p)
            } else {
                None
            },
            remaining: AtomicUsize::new(parts),
        });
        let (moved, busy) = match self.tickets.lock() {
            Ok(mut q) => {
                q.push_back(t.clone());
                let was_idle = q.len() == 1;
                let moved = self.advance(&mut q);
                (moved, was_idle && !q.is_empty())
            }
            Err(_) => (false, false),
        };
        if busy {
            // Idle → busy: wakes a leg's watchdog (`sink::fanout::watch_leg`).
            self.retired.send_replace(());
        }
        if moved {
            self.moved();
        }
        t
    }

    /// Called by a writer when its part of `ticket` is acknowledged.
    pub fn part_done(&self, ticket: &Ticket) {
        if ticket.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let moved = match self.tickets.lock() {
                Ok(mut q) => self.advance(&mut q),
                Err(_) => false,
            };
            if moved {
                self.moved();
            }
        }
    }

    /// A leg's progress moved: its shard recomputes and wakes its waiters (never called with
    /// a tickets lock held).
    fn moved(&self) {
        if let Some(p) = self.parent.upgrade() {
            p.aggregate();
            p.retired.send_replace(());
        }
    }

    /// Pops done tickets off the front; true when any was popped.
    fn advance(&self, q: &mut VecDeque<Arc<Ticket>>) -> bool {
        let epoch = self.epoch.load(Ordering::Acquire);
        let before = q.len();
        while q
            .front()
            .is_some_and(|t| t.remaining.load(Ordering::Acquire) == 0)
        {
            let Some(t) = q.pop_front() else { break };
            self.tickets_done.fetch_add(1, Ordering::Relaxed);
            if t.epoch != epoch {
                continue;
            }
            if let Some(o) = t.offset
                && self.applied_offset.fetch_max(o, Ordering::AcqRel) <= o
            {
                self.applied_db.store(t.source_db, Ordering::Release);
            }
            if t.completes_full_sync {
                self.full_sync_done.store(true, Ordering::Release);
            }
        }
        let changed = q.len() != before;
        if changed {
            self.retired.send_replace(());
        }
        changed
    }

    /// Tickets not yet done (batches in queues or in flight); for a shard with legs, also those
    /// of its live legs.
    pub fn open_tickets(&self) -> usize {
        let own = self.tickets.lock().map(|q| q.len()).unwrap_or(0);
        own + self.live_legs().map(|l| l.open_tickets()).sum::<usize>()
    }

    /// Changes whenever tickets are retired (the applied offset may have moved) and when the
    /// first ticket is issued into an empty queue.
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

    #[test]
    fn a_shard_with_legs_moves_at_the_slowest_live_target() {
        let s = ShardState::with_targets("s".into(), &["a".into(), "b".into()]);
        let (a, b) = (s.legs()[0].clone(), s.legs()[1].clone());
        assert_eq!(a.name, "s@a");
        assert_eq!(a.shard_name(), "s");
        let e = s.begin_epoch(100);
        assert_eq!(
            a.epoch.load(Ordering::Acquire),
            e,
            "legs follow the shard's epoch"
        );
        let ta = a.issue(e, Some(150), true, 1);
        let tb = b.issue(e, Some(150), true, 1);
        assert_eq!(s.open_tickets(), 2);
        a.part_done(&ta);
        assert_eq!(s.applied_offset.load(Ordering::Acquire), 100, "b is behind");
        assert!(!s.full_sync_done.load(Ordering::Acquire));
        b.part_done(&tb);
        assert_eq!(s.applied_offset.load(Ordering::Acquire), 150);
        assert!(s.full_sync_done.load(Ordering::Acquire));
        // b stops acknowledging, then fails: a alone moves the shard.
        let _stuck = b.issue(e, Some(200), false, 1);
        let ta = a.issue(e, Some(200), false, 1);
        a.part_done(&ta);
        assert_eq!(s.applied_offset.load(Ordering::Acquire), 150);
        b.mark_failed("gone");
        assert_eq!(s.applied_offset.load(Ordering::Acquire), 200);
        assert_eq!(
            s.open_tickets(),
            0,
            "a failed leg's tickets no longer count"
        );
        assert!(!s.is_failed(), "one target left");
        // A new epoch leaves the failed leg where it stopped.
        s.begin_epoch(5);
        assert_eq!(b.applied_offset.load(Ordering::Acquire), 150);
        assert_eq!(a.applied_offset.load(Ordering::Acquire), 5);
        assert_eq!(b.replid(), s.replid());
        a.mark_failed("gone too");
        assert!(s.is_failed(), "every target failed");
    }
}
