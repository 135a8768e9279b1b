//! Exactly-once with several targets (one-to-many): one `PSYNC` per source shard, several
//! targets, each holding the truth about what *it* applied.
//!
//! Each target's writers commit their batches with the progress key of their *leg*,
//! `<progress_prefix><instance>:<shard>@<target name>` (per slot on a cluster target, see
//! [`super::exact_slots`]), exactly as with a single target. At start this module reads every
//! target's key of every shard (after closing a killed run's connections on it) and decides,
//! per shard:
//!
//! - **Resume** when every target names a position of the same replication history: `PSYNC`
//!   starts at the *lowest* of them (a target without exactly-once — `auto` on a cluster, or a
//!   user without the rights — contributes its local checkpoint, as today). Each exactly-once
//!   target that is ahead skips the replayed commands ending at or below its own position: a
//!   [`Replay`] filter with that position as its floor (a cluster target's also keeps its
//!   per-slot offsets), so nothing is applied twice on any target.
//! - **Full sync** of the shard for *every* target otherwise: a key missing (the target was
//!   emptied, is new, or was written without exactly-once), a full sync left unfinished, or
//!   two targets in different histories. The targets that held a copy of ours are cleared
//!   first (the dispatchers are marked *dirty*), then all reload from the one RDB. Simplest,
//!   and the same rule as one-to-many's checkpoints.
//!
//! This module owns that read and that decision ([`read`], [`decide`]) and hands each target's
//! dispatcher its part ([`Many::dispatcher`]). Hooks: `Outputs::read_progress`,
//! `Outputs::fanout`.

use std::collections::HashMap;
use std::sync::Arc;

use super::exact::{Exact, Progress};
use super::exact_slots::{Replay, SharedReplay};
use super::{Dispatcher, SinkError, Targets};
use crate::config::Endpoint;
use crate::source::handshake::ReplPosition;

/// One target of the run, as this module needs it.
pub struct TargetView<'a> {
    /// The target's name (`[[target]] name`): legs are `<shard>@<name>`.
    pub name: &'a str,
    pub endpoint: &'a Endpoint,
    pub targets: &'a Targets,
    /// `None`: this target is at-least-once (its local checkpoint is its position).
    pub exact: Option<&'a Arc<Exact>>,
}

/// What one target says about one shard.
#[derive(Debug)]
pub enum Said {
    /// An exactly-once target's progress; with the per-slot offsets on a cluster target.
    Exact(Progress, Vec<u64>),
    /// An at-least-once target's local checkpoint.
    Plain(Option<ReplPosition>),
    /// An exactly-once target without a progress key but with a local checkpoint: it holds a
    /// copy written without exactly-once (or was emptied since).
    Stale,
}

impl Said {
    fn position(&self) -> Option<&ReplPosition> {
        match self {
            Said::Exact(Progress::At(p), _) | Said::Plain(Some(p)) => Some(p),
            _ => None,
        }
    }

    /// The target holds a copy of ours (a full sync must clear it first).
    fn ours(&self) -> bool {
        !matches!(self, Said::Exact(Progress::Absent, _) | Said::Plain(None))
    }
}

/// What one target's dispatcher of one shard gets.
#[derive(Default)]
struct Part {
    /// The target holds a copy a full sync must clear first.
    dirty: bool,
    /// Skips the replayed commands this target already committed.
    replay: SharedReplay,
}

/// The per-target parts of every shard (see the module doc); empty with exactly-once off.
#[derive(Default)]
pub struct Many {
    /// By (target index, source shard name).
    parts: HashMap<(usize, String), Part>,
    /// Per target: its own position of each leg it resumes (by leg name), where its key repair
    /// records are read back from ([`super::exact_fences::load_all`]).
    own: Vec<HashMap<String, Progress>>,
}

impl Many {
    /// Target `i`'s own position of each leg that resumes (see `own`).
    pub fn own_positions(&self, i: usize) -> HashMap<String, Result<Progress, SinkError>> {
        self.own
            .get(i)
            .map(|m| m.iter().map(|(k, p)| (k.clone(), Ok(p.clone()))).collect())
            .unwrap_or_default()
    }

    /// Gives target `i`'s dispatcher of `shard` its exactly-once settings and replay filter.
    pub fn dispatcher(
        &self,
        i: usize,
        shard: &str,
        exact: Option<&Arc<Exact>>,
        d: Dispatcher,
    ) -> Dispatcher {
        let Some(e) = exact else {
            return d;
        };
        match self.parts.get(&(i, shard.to_string())) {
            Some(p) => d
                .with_replay(p.replay.clone())
                .with_exact(e.clone(), p.dirty),
            None => d.with_exact(e.clone(), false),
        }
    }
}

/// The leg name of `shard` on target `target` (as `ShardState::with_targets` names it).
pub fn leg_name(shard: &str, target: &str) -> String {
    format!("{shard}@{target}")
}

/// The shard-level outcome of [`decide`]: the progress the run resumes from (what a single
/// target's key would say: `At` the lowest position, or `FullSync` when a target holds a copy
/// of ours that the full sync must clear, else `Absent`), and each target's part.
pub struct Decision {
    pub progress: Progress,
    /// Per target: `(dirty, replay filter)`.
    pub parts: Vec<(bool, Option<Replay>)>,
    /// Why the shard full-syncs (logged), when it does.
    pub why: Option<String>,
}

/// Decides where one shard resumes from what each target (`names[i]`) says (see the module
/// doc).
pub fn decide(names: &[&str], said: Vec<Said>) -> Decision {
    let positions: Vec<Option<&ReplPosition>> = said.iter().map(Said::position).collect();
    let missing = names
        .iter()
        .zip(&said)
        .find(|(_, s)| s.position().is_none())
        .map(|(n, s)| match s {
            Said::Exact(Progress::FullSync, _) => {
                format!("target {n} holds an unfinished full sync")
            }
            Said::Exact(..) => format!("target {n} has no progress key (new, emptied, or written without exactly-once)"),
            Said::Plain(_) => format!("target {n} (at-least-once) has no checkpoint"),
            Said::Stale => format!("target {n} has a checkpoint but no progress key (written without exactly-once, or emptied)"),
        });
    let first = positions.first().copied().flatten();
    let split = first.and_then(|f| {
        names
            .iter()
            .zip(&positions)
            .find(|(_, p)| p.is_some_and(|p| p.replid != f.replid))
            .map(|(n, _)| {
                format!(
                    "targets {} and {n} hold positions of different replication histories",
                    names.first().copied().unwrap_or_default()
                )
            })
    });
    let why = missing.or(split);
    if why.is_some() || first.is_none() {
        let ours = said.iter().any(Said::ours);
        return Decision {
            progress: if ours {
                Progress::FullSync
            } else {
                Progress::Absent
            },
            parts: said.iter().map(|_| (ours, None)).collect(),
            why,
        };
    }
    let Some(low) = positions.iter().flatten().min_by_key(|p| p.offset).copied() else {
        return Decision {
            progress: Progress::Absent,
            parts: Vec::new(),
            why,
        };
    };
    let low = low.clone();
    let parts = said
        .into_iter()
        .map(|s| match s {
            Said::Exact(Progress::At(p), applied) => {
                (false, Replay::with_floor(applied, p.offset, low.offset))
            }
            _ => (false, None),
        })
        .collect();
    Decision {
        progress: Progress::At(low),
        parts,
        why: None,
    }
}

/// What target `t` says about the shard whose leg on it is `leg`.
async fn said(
    t: &TargetView<'_>,
    leg: &str,
    state_dir: &std::path::Path,
) -> Result<Said, SinkError> {
    let Some(e) = t.exact else {
        let cp = crate::checkpoint::load(state_dir, leg).map_err(|e| SinkError::Command {
            addr: t.endpoint.to_string(),
            what: format!("checkpoint of {leg}"),
            why: e.to_string(),
        })?;
        return Ok(Said::Plain(cp));
    };
    if t.targets.cluster {
        let (p, applied) = super::exact_slots::read_shard(e, t.targets, leg, state_dir).await?;
        if p == Progress::Absent && matches!(crate::checkpoint::load(state_dir, leg), Ok(Some(_))) {
            return Ok(Said::Stale);
        }
        return Ok(Said::Exact(p, applied));
    }
    let p = super::exact::read(t.endpoint, &e.key(leg)).await?;
    if p == Progress::Absent && matches!(crate::checkpoint::load(state_dir, leg), Ok(Some(_))) {
        return Ok(Said::Stale);
    }
    Ok(Said::Exact(p, Vec::new()))
}

/// At start, with several targets: closes a killed run's connections on every exactly-once
/// target, reads each target's position of every source shard and decides where each shard
/// resumes ([`decide`]). Returns each shard's progress (by shard name, what the run resumes
/// from) and the targets' parts.
pub async fn read(
    targets: &[TargetView<'_>],
    source: &crate::net::topology::Topology,
    state_dir: &std::path::Path,
) -> (HashMap<String, Result<Progress, SinkError>>, Many) {
    let mut progress = HashMap::new();
    let mut many = Many::default();
    if targets.iter().all(|t| t.exact.is_none()) {
        return (progress, many);
    }
    for t in targets {
        let Some(e) = t.exact else { continue };
        if t.targets.cluster {
            super::exact_slots::fence_all(e, t.targets).await;
            continue;
        }
        match super::exact::fence(t.endpoint, e).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(target_name = %t.name, connections = n,
                "closed the target connections a previous run of this instance left open"),
            Err(e) => {
                tracing::warn!(target_name = %t.name, error = %e, "could not close the target connections of a previous run (CLIENT LIST/KILL); a transaction it left in flight could still commit")
            }
        }
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    many.own = targets.iter().map(|_| HashMap::new()).collect();
    'shards: for m in source.masters() {
        let shard = m.endpoint.to_string();
        let mut all = Vec::new();
        for t in targets {
            match said(t, &leg_name(&shard, t.name), state_dir).await {
                Ok(s) => all.push(s),
                Err(e) => {
                    progress.insert(shard, Err(e));
                    continue 'shards;
                }
            }
        }
        let own: Vec<Option<ReplPosition>> = all
            .iter()
            .map(|s| match s {
                Said::Exact(Progress::At(p), _) => Some(p.clone()),
                _ => None,
            })
            .collect();
        let d = decide(&names, all);
        if matches!(d.progress, Progress::At(_)) {
            for (i, p) in own.into_iter().enumerate() {
                if let (Some(p), Some(m), Some(n)) = (p, many.own.get_mut(i), names.get(i)) {
                    m.insert(leg_name(&shard, n), Progress::At(p));
                }
            }
        }
        match (&d.progress, &d.why) {
            (Progress::At(p), _) => tracing::info!(shard = %shard, offset = p.offset,
                ahead = d.parts.iter().filter(|p| p.1.is_some()).count(),
                "every target holds a position: resuming at the lowest; the targets ahead skip what they already committed"),
            (_, Some(why)) => tracing::warn!(shard = %shard, reason = %why,
                "exactly-once with several targets: this shard gets a full sync on every target (those holding a copy are cleared first)"),
            _ => {}
        }
        for (i, (dirty, replay)) in d.parts.into_iter().enumerate() {
            let name = names.get(i).copied().unwrap_or_default();
            let replay = replay.map(|r| r.labelled(leg_name(&shard, name)));
            many.parts.insert(
                (i, shard.clone()),
                Part {
                    dirty,
                    replay: Arc::new(std::sync::Mutex::new(replay)),
                },
            );
        }
        progress.insert(shard, Ok(d.progress));
    }
    (progress, many)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(replid: &str, offset: u64, db: u32) -> ReplPosition {
        ReplPosition {
            replid: replid.into(),
            offset,
            db,
        }
    }

    /// What an exactly-once target without slot offsets says.
    fn exact(p: Progress) -> Said {
        Said::Exact(p, Vec::new())
    }

    /// [`decide`] for targets `a` and `b`.
    fn decide_ab(a: Said, b: Said) -> Decision {
        decide(&["a", "b"], vec![a, b])
    }

    /// The replay filter of the first target of `d` (it must have one).
    fn first_filter(d: Decision) -> Replay {
        d.parts
            .into_iter()
            .next()
            .and_then(|p| p.1)
            .expect("filter")
    }

    /// `cmds` in database 0.
    fn in_db0(cmds: Vec<crate::cmd::Cmd>) -> Vec<crate::cmd::DbCmd> {
        cmds.into_iter()
            .map(|cmd| crate::cmd::DbCmd { db: 0, cmd })
            .collect()
    }

    #[test]
    fn resumes_at_the_lowest_and_filters_the_targets_ahead() {
        let d = decide(
            &["a", "b", "c"],
            vec![
                exact(Progress::At(at("r", 500, 2))),
                exact(Progress::At(at("r", 300, 1))),
                Said::Plain(Some(at("r", 400, 0))),
            ],
        );
        assert_eq!(d.progress, Progress::At(at("r", 300, 1)));
        assert!(d.why.is_none());
        assert!(d.parts.iter().all(|p| !p.0));
        assert!(d.parts[0].1.is_some(), "a is ahead: filtered");
        assert!(d.parts[1].1.is_none(), "b is the resume point");
        assert!(
            d.parts[2].1.is_none(),
            "an at-least-once target is not filtered"
        );
        // a skips what it committed, whatever the command, and nothing after.
        let mut r = first_filter(d);
        let mut cmds = in_db0(vec![
            crate::cmd!["INCR", "x"],
            crate::cmd!["FLUSHALL"],
            crate::cmd!["RENAME", "a", "b"],
            crate::cmd!["INCR", "x"],
        ]);
        let mut ends = vec![350, 420, 500, 510];
        assert!(r.filter(&mut cmds, &mut ends));
        assert_eq!(ends, vec![510]);
        assert_eq!(cmds[0].cmd, crate::cmd!["INCR", "x"]);
    }

    #[test]
    fn a_missing_key_or_another_history_full_syncs_every_target() {
        let d = decide_ab(
            exact(Progress::At(at("r", 500, 0))),
            exact(Progress::Absent),
        );
        assert_eq!(d.progress, Progress::FullSync);
        assert!(d.why.as_deref().is_some_and(|w| w.contains("target b")));
        assert!(d.parts.iter().all(|p| p.0 && p.1.is_none()), "all dirty");
        let d = decide_ab(
            exact(Progress::At(at("r", 500, 0))),
            exact(Progress::At(at("s", 900, 0))),
        );
        assert_eq!(d.progress, Progress::FullSync);
        assert!(d.why.as_deref().is_some_and(|w| w.contains("histories")));
        let d = decide_ab(
            exact(Progress::At(at("r", 500, 0))),
            exact(Progress::FullSync),
        );
        assert_eq!(d.progress, Progress::FullSync);
        let d = decide_ab(exact(Progress::Absent), Said::Stale);
        assert_eq!(d.progress, Progress::FullSync, "b holds an older copy");
        assert!(d.parts.iter().all(|p| p.0));
        // Nothing of ours anywhere: a first full sync, nothing to clear.
        let d = decide_ab(exact(Progress::Absent), Said::Plain(None));
        assert_eq!(d.progress, Progress::Absent);
        assert!(d.parts.iter().all(|p| !p.0));
    }

    #[test]
    fn a_cluster_target_ahead_keeps_its_slot_offsets_above_its_floor() {
        let mut applied = vec![0u64; crate::router::SLOTS];
        let a = crate::router::key_slot(b"a") as usize;
        applied[a] = 700;
        let d = decide(
            &["c", "s"],
            vec![
                Said::Exact(Progress::At(at("r", 500, 0)), applied),
                exact(Progress::At(at("r", 300, 0))),
            ],
        );
        let mut r = first_filter(d);
        let mut cmds = in_db0(vec![
            crate::cmd!["PUBLISH", "ch", "m"],
            crate::cmd!["INCR", "b"],
            crate::cmd!["INCR", "a"],
            crate::cmd!["INCR", "a"],
        ]);
        let mut ends = vec![400, 600, 650, 800];
        assert!(r.filter(&mut cmds, &mut ends));
        // Under the floor: skipped even keyless; above it: per slot.
        assert_eq!(ends, vec![600, 800]);
    }
}
