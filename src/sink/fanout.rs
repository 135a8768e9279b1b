//! [`Fanout`]: what a source link writes to — one [`Dispatcher`] per target. With one target it
//! is that target's dispatcher and nothing more. With several (one-to-many: one PSYNC, one RDB,
//! several targets), every run of commands goes to each target's dispatcher in turn, with the
//! target's own leg ([`ShardState::legs`]) as the progress it moves; the shard's applied offset
//! (the `REPLCONF ACK` and the resume point) is the slowest live leg's.
//!
//! Each target gets what its own settings ask for: the link filters (database selection, key
//! filters, deny-list, `db_map` arguments) and converts (for the target's server version and
//! flavor) once per *group* of targets that share all of these ([`Fanout::groups`]), not once
//! per target, and sends the group's result to each target of the group.
//!
//! Failure rule (one-to-many only): a target that acknowledges nothing for `fail_after_ms` while
//! writes wait for it (unreachable, stalled past its reply deadline, refusing connections) is
//! marked failed for that shard ([`watch_leg`]): from then on its writes are dropped and counted
//! (`shardsync_target_dropped_writes_total`), `/status` shows it `failed` with the reason, its
//! checkpoint stays at what it acknowledged, and the other targets go on. It comes back when
//! shardsync restarts: the shard resumes from the oldest target checkpoint (the failed target's)
//! when the source still holds that point, else with a full sync of every target (with
//! exactly-once: from the lowest progress key, the others skipping what they hold, see
//! [`super::exact_many`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::SinkError;
use super::dispatch::{Dispatcher, Feed, RunInfo, WriterGone};
use crate::cmd::DbCmd;
use crate::config::SyncSettings;
use crate::net::server_info::ServerInfo;
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

/// Targets that get the same commands: equal server identity (version, flavor, cluster mode),
/// selection, filters and `db_map`. The link filters and converts once per group.
#[derive(Clone)]
struct Group {
    /// What the group's commands are converted for (`None`: the link's own target).
    target: Option<ServerInfo>,
    /// Indexes into [`Fanout::legs`]; the first one's filter result is the group's.
    legs: Vec<usize>,
}

/// The writer side of one source shard (see the module doc).
pub struct Fanout {
    legs: Vec<Leg>,
    groups: Vec<Group>,
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
            groups: self.groups.clone(),
        }
    }
}

/// True when two targets get the same commands (see [`Group`]).
fn same_commands(a: (&Dispatcher, &ServerInfo), b: (&Dispatcher, &ServerInfo)) -> bool {
    let (sa, sb) = (a.0.sync(), b.0.sync());
    a.1 == b.1 && sa.filter == sb.filter && sa.db_map == sb.db_map
}

impl Fanout {
    /// A single target; its commands are converted for the link's own target.
    pub fn one(dispatcher: Dispatcher) -> Fanout {
        Fanout {
            legs: vec![Leg {
                state: None,
                dispatcher,
            }],
            groups: vec![Group {
                target: None,
                legs: vec![0],
            }],
        }
    }

    /// Several targets: `dispatchers[i]` (converting for its server) writes for
    /// `shard.legs()[i]`; the targets are grouped (see [`Group`]).
    pub fn many(shard: &ShardState, dispatchers: Vec<(Dispatcher, ServerInfo)>) -> Fanout {
        if shard.legs().is_empty() {
            let mut d = dispatchers;
            return match d.pop() {
                Some((one, info)) => {
                    let mut f = Fanout::one(one);
                    f.groups[0].target = Some(info);
                    f
                }
                None => Fanout {
                    legs: Vec::new(),
                    groups: Vec::new(),
                },
            };
        }
        let mut groups: Vec<Group> = Vec::new();
        for (i, (d, info)) in dispatchers.iter().enumerate() {
            let found = groups.iter_mut().find(|g| {
                let (lead, lead_info) = &dispatchers[g.legs[0]];
                same_commands((lead, lead_info), (d, info))
            });
            match found {
                Some(g) => g.legs.push(i),
                None => groups.push(Group {
                    target: Some(info.clone()),
                    legs: vec![i],
                }),
            }
        }
        Fanout {
            legs: shard
                .legs()
                .iter()
                .cloned()
                .zip(dispatchers)
                .map(|(leg, (dispatcher, _))| Leg {
                    state: Some(leg),
                    dispatcher,
                })
                .collect(),
            groups,
        }
    }

    /// How many groups of targets get their own filtered and converted commands (see the
    /// module doc); groups are numbered `0..groups()`.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// What group `g`'s commands are converted for (`None`: the link's own target).
    pub fn group_target(&self, g: usize) -> Option<&ServerInfo> {
        self.groups.get(g).and_then(|g| g.target.as_ref())
    }

    /// The first leg of group `g`.
    fn lead(&self, g: usize) -> Option<&Leg> {
        self.groups
            .get(g)
            .and_then(|g| g.legs.first())
            .and_then(|&i| self.legs.get(i))
    }

    /// The sync settings of group `g` (the RDB loader reads its database selection and
    /// filters; the group's targets share them).
    pub fn group_sync(&self, g: usize) -> &SyncSettings {
        match self.lead(g) {
            Some(l) => l.dispatcher.sync(),
            None => &NO_SETTINGS,
        }
    }

    /// What group `g`'s counts are labelled with: its first leg (one-to-many) or the shard.
    pub fn group_label<'a>(&'a self, g: usize, shard: &'a ShardState) -> &'a str {
        match self.lead(g).and_then(|l| l.state.as_deref()) {
            Some(leg) => &leg.name,
            None => &shard.name,
        }
    }

    /// `sync.dbs` / `sync.filter` of group `g` on a run of source commands (see
    /// [`Dispatcher::filter_stream`]): the group's first target's result is what each of its
    /// targets gets; with filters on, each other live target of the group also runs them, for
    /// its own key copies (its repair queue) and counts (labelled with its leg).
    pub fn filter_group(
        &self,
        g: usize,
        shard: &ShardState,
        cmds: Vec<DbCmd>,
        ends: Vec<u64>,
    ) -> (Vec<DbCmd>, Vec<u64>) {
        let Some((&first, rest)) = self.groups.get(g).and_then(|g| g.legs.split_first()) else {
            return (cmds, ends);
        };
        let lead = &self.legs[first];
        if !lead.dispatcher.sync().filter.is_noop() {
            for l in rest.iter().map(|&i| &self.legs[i]) {
                if let Some(st) = l.state.as_ref().filter(|s| !s.is_failed()) {
                    let _ = l.dispatcher.filter_stream(st, cmds.clone(), ends.clone());
                }
            }
        }
        let st = lead.state.as_deref().unwrap_or(shard);
        lead.dispatcher.filter_stream(st, cmds, ends)
    }

    /// Exactly-once (single target): the target holds a partial full sync of this shard.
    pub fn exact_dirty(&self) -> bool {
        self.legs.iter().any(|l| l.dispatcher.exact_dirty())
    }

    /// Exactly-once: marks a full sync as started in the progress key of each live target
    /// (its leg's key with several targets, see [`super::exact_many`]).
    pub async fn mark_full_sync(&self, shard: &ShardState) -> Result<(), SinkError> {
        for l in self.live() {
            let st = l.state.as_deref().unwrap_or(shard);
            l.dispatcher.mark_full_sync(st).await?;
        }
        Ok(())
    }

    /// Exactly-once: the offset (and database) before a held source transaction (the earliest
    /// among the targets: one ahead may have filtered a replayed block the others hold).
    pub fn handed_before_hold(&self) -> Option<(u64, u32)> {
        self.legs
            .iter()
            .filter_map(|l| l.dispatcher.handed_before_hold())
            .min_by_key(|p| p.0)
    }

    /// True while a `MULTI` block is open on some target (its commands are held until `EXEC`).
    pub fn in_transaction(&self) -> bool {
        self.legs.iter().any(|l| l.dispatcher.in_transaction())
    }

    /// [`Fanout::in_transaction`] for the targets of group `g` only (the groups are converted
    /// one after the other: another group may already hold the next run's open block).
    pub fn group_in_transaction(&self, g: usize) -> bool {
        self.groups.get(g).is_some_and(|group| {
            group
                .legs
                .iter()
                .filter_map(|&i| self.legs.get(i))
                .any(|l| l.dispatcher.in_transaction())
        })
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
        shard: &ShardState,
        run: RunInfo,
        cmds: Vec<DbCmd>,
        kind: Feed<'_>,
    ) -> Result<(), WriterGone> {
        let n = self.legs.len();
        let mut cmds = Some(cmds);
        for (i, leg) in self.legs.iter_mut().enumerate() {
            let mine = take_or_clone(&mut cmds, i + 1 == n);
            leg.follow(shard);
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
            None => self.each(shard, run, cmds, kind).await,
        }
    }

    /// Sends a run of `kind`, filtered and converted for group `g`, to each target of the group.
    pub async fn send_group(
        &mut self,
        g: usize,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
        kind: Feed<'_>,
    ) -> Result<(), WriterGone> {
        if let Some(d) = self.single() {
            return d.feed(shard, run, cmds, kind).await;
        }
        let idx = match self.groups.get(g) {
            Some(group) => group.legs.clone(),
            None => return Ok(()),
        };
        let n = idx.len();
        let mut cmds = Some(cmds);
        for (j, i) in idx.into_iter().enumerate() {
            let mine = take_or_clone(&mut cmds, j + 1 == n);
            if let Some(leg) = self.legs.get_mut(i) {
                leg.follow(shard);
                leg.send(run, mine, kind).await?;
            }
        }
        Ok(())
    }

    /// [`Fanout::send_group`] of RDB batches from the RDB loader's thread (a blocking-pool
    /// thread of the link's runtime, not one of its workers): parks it while a queue is full
    /// (back-pressure); with several targets, one failing while its queue is full releases it.
    pub fn blocking_send_group(
        &mut self,
        g: usize,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
    ) -> Result<(), WriterGone> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(self.send_group(g, shard, run, cmds, Feed::Rdb)),
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
    /// Takes the shard's source database and piece of the run being sent (set by the link on
    /// the shard): the leg's tickets carry them into its checkpoint and progress key.
    fn follow(&self, shard: &ShardState) {
        let Some(state) = &self.state else { return };
        state
            .run_db
            .store(shard.run_db.load(Ordering::Acquire), Ordering::Release);
        if let (Ok(mut mine), Ok(theirs)) = (state.run_piece.lock(), shard.run_piece.lock()) {
            *mine = *theirs;
        }
        if let (Ok(mut mine), Ok(theirs)) = (state.piece_of.lock(), shard.piece_of.lock()) {
            *mine = *theirs;
        }
    }

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
