//! [`Fanout`]: what a source link writes to — one [`Dispatcher`] per target. With one target it
//! is that target's dispatcher and nothing more. With several (one-to-many: one PSYNC, one RDB,
//! several targets), every run of commands goes to each target's dispatcher in turn, with the
//! target's own leg ([`ShardState::legs`]) as the progress it moves; the shard's applied offset
//! (the `REPLCONF ACK` and the resume point) is the slowest live leg's.
//!
//! Failure rule (one-to-many only): a target that acknowledges nothing for `fail_after_ms` while
//! writes wait for it (unreachable, stalled past its reply deadline, refusing connections) is
//! marked failed for that shard ([`watch_leg`]): from then on its writes are dropped and counted
//! (`shardsync_target_dropped_writes_total`), `/status` shows it `failed` with the reason, its
//! checkpoint stays at what it acknowledged, and the other targets go on. It comes back when
//! shardsync restarts: the shard resumes from the oldest target checkpoint (the failed target's)
//! when the source still holds that point, else with a full sync of every target.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::SinkError;
use super::dispatch::{Dispatcher, Feed, RunInfo, WriterGone};
use crate::cmd::DbCmd;
use crate::config::SyncSettings;
use crate::observe::progress::ShardState;

/// Settings of a fan-out without targets (never built by a run).
static NO_SETTINGS: std::sync::LazyLock<SyncSettings> =
    std::sync::LazyLock::new(SyncSettings::default);

/// One target's share of a shard: its dispatcher and, with several targets, its leg.
struct Leg {
    /// `None` with a single target (the shard's own state is the progress).
    state: Option<Arc<ShardState>>,
    dispatcher: Dispatcher,
}

/// The writer side of one source shard (see the module doc).
pub struct Fanout {
    legs: Vec<Leg>,
}

impl Clone for Fanout {
    /// A fresh fan-out: fresh dispatchers (no open transaction carried over), the same legs.
    fn clone(&self) -> Fanout {
        Fanout {
            legs: self
                .legs
                .iter()
                .map(|l| Leg {
                    state: l.state.clone(),
                    dispatcher: l.dispatcher.clone(),
                })
                .collect(),
        }
    }
}

impl Fanout {
    /// A single target.
    pub fn one(dispatcher: Dispatcher) -> Fanout {
        Fanout {
            legs: vec![Leg {
                state: None,
                dispatcher,
            }],
        }
    }

    /// Several targets: `dispatchers[i]` writes for `shard.legs()[i]`.
    pub fn many(shard: &ShardState, dispatchers: Vec<Dispatcher>) -> Fanout {
        if shard.legs().is_empty() {
            let mut d = dispatchers;
            return match d.pop() {
                Some(one) => Fanout::one(one),
                None => Fanout { legs: Vec::new() },
            };
        }
        Fanout {
            legs: shard
                .legs()
                .iter()
                .cloned()
                .zip(dispatchers)
                .map(|(leg, dispatcher)| Leg {
                    state: Some(leg),
                    dispatcher,
                })
                .collect(),
        }
    }

    /// The sync settings the RDB loader reads (database selection and filters: the same for
    /// every target; only `db_map` differs per target, and it is applied per target).
    pub fn sync(&self) -> &SyncSettings {
        match self.legs.first() {
            Some(l) => l.dispatcher.sync(),
            None => &NO_SETTINGS,
        }
    }

    /// `sync.dbs` / `sync.filter` on a run of source commands (see
    /// [`Dispatcher::filter_stream`]): the first target's result is what every target gets
    /// (the selection and filters are shared); with filters on, each other live target also
    /// runs them, for its own key copies (its repair queue and `db_map`) and counts (labelled
    /// with its leg).
    pub fn filter_stream(
        &self,
        shard: &ShardState,
        cmds: Vec<DbCmd>,
        ends: Vec<u64>,
    ) -> (Vec<DbCmd>, Vec<u64>) {
        let Some((first, rest)) = self.legs.split_first() else {
            return (cmds, ends);
        };
        if !first.dispatcher.sync().filter.is_noop() {
            for l in rest {
                if let Some(st) = l.state.as_ref().filter(|s| !s.is_failed()) {
                    let _ = l.dispatcher.filter_stream(st, cmds.clone(), ends.clone());
                }
            }
        }
        first.dispatcher.filter_stream(shard, cmds, ends)
    }

    /// Exactly-once (single target): the target holds a partial full sync of this shard.
    pub fn exact_dirty(&self) -> bool {
        self.legs.iter().any(|l| l.dispatcher.exact_dirty())
    }

    /// Exactly-once: marks a full sync as started in the progress key (see [`super::exact`]).
    pub async fn mark_full_sync(&self, shard: &ShardState) -> Result<(), SinkError> {
        for l in &self.legs {
            l.dispatcher.mark_full_sync(shard).await?;
        }
        Ok(())
    }

    /// Exactly-once: the offset (and database) before a held source transaction.
    pub fn handed_before_hold(&self) -> Option<(u64, u32)> {
        self.legs
            .first()
            .and_then(|l| l.dispatcher.handed_before_hold())
    }

    /// True while a `MULTI` block is open on some target (its commands are held until `EXEC`).
    pub fn in_transaction(&self) -> bool {
        self.legs.iter().any(|l| l.dispatcher.in_transaction())
    }

    /// Removes the keys of a shard from every live target (see [`super::clear`]).
    pub async fn clear_shard(&self, slots: Option<&[(u16, u16)]>) -> Result<u64, SinkError> {
        let mut removed = 0;
        for l in self.live() {
            removed += l.dispatcher.clear_shard(slots).await?;
        }
        Ok(removed)
    }

    fn live(&self) -> impl Iterator<Item = &Leg> {
        self.legs
            .iter()
            .filter(|l| l.state.as_ref().is_none_or(|s| !s.is_failed()))
    }

    /// The dispatcher of a single target (no legs): every call goes straight to it.
    fn single(&mut self) -> Option<&mut Dispatcher> {
        match self.legs.as_mut_slice() {
            [one] if one.state.is_none() => Some(&mut one.dispatcher),
            _ => None,
        }
    }

    /// Sends a run to every target in turn (a copy each, the original to the last).
    async fn each(
        &mut self,
        run: RunInfo,
        cmds: Vec<DbCmd>,
        kind: Feed<'_>,
    ) -> Result<(), WriterGone> {
        let n = self.legs.len();
        let mut cmds = Some(cmds);
        for (i, leg) in self.legs.iter_mut().enumerate() {
            let mine = take_or_clone(&mut cmds, i + 1 == n);
            leg.send(run, mine, kind).await?;
        }
        Ok(())
    }

    /// Sends a run of `kind` to the target(s) (see [`Dispatcher::feed`]).
    pub async fn send(
        &mut self,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
        kind: Feed<'_>,
    ) -> Result<(), WriterGone> {
        match self.single() {
            Some(d) => d.feed(shard, run, cmds, kind).await,
            None => self.each(run, cmds, kind).await,
        }
    }

    /// [`Fanout::send`] of RDB batches from the RDB loader's thread (a blocking-pool thread of
    /// the link's runtime, not one of its workers): parks it while a queue is full
    /// (back-pressure); with several targets, one failing while its queue is full releases it.
    pub fn blocking_send(
        &mut self,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
    ) -> Result<(), WriterGone> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(self.send(shard, run, cmds, Feed::Rdb)),
            Err(_) => Err(WriterGone),
        }
    }
}

fn take_or_clone(cmds: &mut Option<Vec<DbCmd>>, last: bool) -> Vec<DbCmd> {
    if last {
        cmds.take().unwrap_or_default()
    } else {
        cmds.clone().unwrap_or_default()
    }
}

impl Leg {
    /// Sends a run to this target unless it failed; a send waiting on a full queue gives up
    /// (dropping the run) when the target fails meanwhile.
    async fn send(
        &mut self,
        run: RunInfo,
        cmds: Vec<DbCmd>,
        kind: Feed<'_>,
    ) -> Result<(), WriterGone> {
        let Some(state) = self.state.clone() else {
            return Ok(());
        };
        let n = cmds.len() as u64;
        if state.is_failed() {
            dropped(&state, n);
            return Ok(());
        }
        let mut failed = state.failed_watch();
        let d = &mut self.dispatcher;
        let send = d.feed(&state, run, cmds, kind);
        tokio::select! {
            r = send => r,
            _ = failed.wait_for(|f| *f) => {
                dropped(&state, n);
                Ok(())
            }
        }
    }
}

/// Counts writes not sent to a failed target.
fn dropped(leg: &ShardState, n: u64) {
    if n == 0 {
        return;
    }
    leg.dropped_writes.fetch_add(n, Ordering::Relaxed);
    let target = leg.target.clone().unwrap_or_default();
    metrics::counter!(crate::observe::telemetry::TARGET_DROPPED_WRITES, "shard" => leg.shard_name().to_string(), "target" => target)
        .increment(n);
}

/// Marks `leg` failed when its target acknowledges nothing for `fail_after` while writes wait
/// for it. Ends when the leg fails (its supervisor, [`crate::supervise::Group::Watchdogs`],
/// drops it at the stop). Sleeps on the leg's progress watch: it wakes when tickets are
/// retired (progress) or when writes start waiting, never on a tick.
pub async fn watch_leg(leg: Arc<ShardState>, fail_after: Duration) {
    let mut progress = leg.progress_watch();
    let mut failed = leg.failed_watch();
    loop {
        // Idle (nothing waits for this target): sleep until a write is handed out.
        while leg.open_tickets() == 0 {
            tokio::select! {
                r = progress.changed() => if r.is_err() { return },
                _ = failed.wait_for(|f| *f) => return,
            }
        }
        // Busy: any progress within `fail_after` starts the window again.
        tokio::select! {
            r = progress.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
            _ = failed.wait_for(|f| *f) => return,
            _ = tokio::time::sleep(fail_after) => {}
        }
        if leg.open_tickets() == 0 {
            continue;
        }
        let why = leg
            .last_error
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        leg.mark_failed(format!(
            "target {} acknowledged no write for {:.1} s while {} runs waited{why}; its writes are dropped from now on and the other targets go on; restart shardsync once it is back (it resumes from this target's checkpoint, or full-syncs if the source no longer holds that point)",
            leg.target.as_deref().unwrap_or(""),
            fail_after.as_secs_f64(),
            leg.open_tickets()
        ));
        return;
    }
}
