//! The run's targets ([`Outputs`]): for each configured target (`[target]`, every `[[target]]`,
//! every `--target`) its writers ([`Targets`]), repair queue, data-path settings and server
//! info; and what one-to-many adds around the shards — a leg per target in each shard's state,
//! a [`Fanout`] per link, per-target checkpoints and the resume rule, the failure watchdogs.
//!
//! With one target nothing changes from a plain run: the shard's own state is the progress and
//! its checkpoint file is `checkpoint-<shard>.json`. With several, each target's progress of a
//! shard is checkpointed as `checkpoint-<shard>@<target>.json`; at start a shard resumes from the
//! oldest of its targets' checkpoints when they all exist and name the same replication ID
//! (targets that were ahead get those writes again: at least once), else it full-syncs every
//! target. With exactly-once the targets' progress keys decide instead, and a target ahead
//! skips what it holds ([`crate::sink::exact_many`]). The failure rule is in
//! [`crate::sink::fanout`].

use std::sync::{Arc, Mutex};

use actix::ArbiterHandle;
use bytes::Bytes;

use crate::app::RunError;
use crate::checkpoint::{self, CheckpointError};
use crate::config::{Config, SyncSettings, TargetSpec};
use crate::net::server_info::ServerInfo;
use crate::net::topology::{Node, Topology};
use crate::observe::progress::ShardState;
use crate::sink::repair::{RepairContext, RepairQueue, Repairer};
use crate::sink::writer::WriterSettings;
use crate::sink::{Dispatcher, Fanout, Targets};
use crate::source::handshake::ReplPosition;
use crate::supervise::{Group, Tree};

/// One target of the run.
pub struct Output {
    pub spec: TargetSpec,
    pub targets: Arc<Targets>,
    pub repairs: Arc<RepairQueue>,
    pub sync: Arc<SyncSettings>,
    pub topology: Topology,
    /// Watches this target's writers: the run's tree with one target; with several, a tree of
    /// its own, so that a failed target's writers are let go at the stop instead of waited for.
    tree: Arc<Tree>,
    /// This target's leg of every shard (one-to-many).
    legs: Arc<Mutex<Vec<Arc<ShardState>>>>,
    /// Exactly-once mode for this target.
    pub exact: Option<Arc<crate::sink::exact::Exact>>,
}

impl Output {
    /// True when this target failed for some shard.
    fn failed(&self) -> bool {
        self.legs
            .lock()
            .map(|l| l.iter().any(|s| s.is_failed()))
            .unwrap_or(false)
    }
}

/// Every target of the run (see the module doc).
pub struct Outputs {
    pub list: Vec<Output>,
    /// Exactly-once: each shard's progress key as read at start (by shard name).
    pub progress: std::collections::HashMap<
        String,
        Result<crate::sink::exact::Progress, crate::sink::SinkError>,
    >,
    /// Exactly-once on a cluster target: each shard's replay filter (by shard name).
    pub replays: std::collections::HashMap<String, crate::sink::exact_slots::SharedReplay>,
    /// Exactly-once with several targets: each target's part of each shard.
    many: crate::sink::exact_many::Many,
}

/// A failed precheck of one of the targets after the first.
fn failed_precheck(spec: &TargetSpec, table: &str) -> RunError {
    RunError::Precheck(format!("target {}:\n{table}", spec.name))
}

impl Outputs {
    /// Prechecks the targets after the first (`first` is the first target's topology, checked
    /// with the source by [`crate::precheck::run`]) and starts every target's writers on
    /// `arbiter`. Err: [`RunError::Precheck`] with the failed precheck's table, naming the target.
    pub async fn start(
        cfg: &Config,
        first: &Topology,
        arbiter: &ArbiterHandle,
        run_tree: &Arc<Tree>,
    ) -> Result<Outputs, RunError> {
        let multi = cfg.targets.len() > 1;
        let run_exact = crate::sink::exact::Exact::from_settings(&cfg.sync);
        let mut list = Vec::new();
        for (i, spec) in cfg.targets.iter().enumerate() {
            let topology = if i == 0 {
                first.clone()
            } else {
                match precheck_target(cfg, spec).await {
                    Ok(p) if p.passed() => {
                        for w in p.checks.iter().filter(|c| c.warning) {
                            tracing::warn!(target_name = %spec.name, check = w.name, "{}", w.detail);
                        }
                        p.target
                    }
                    Ok(p) => return Err(failed_precheck(spec, &p.table())),
                    Err(checks) => {
                        return Err(failed_precheck(spec, &crate::precheck::render(&checks)));
                    }
                }
            };
            let repairs = RepairQueue::new();
            let legs: Arc<Mutex<Vec<Arc<ShardState>>>> = Arc::default();
            let tree = if multi {
                // A writer of this target that dies fails this target, not the run.
                let t = Arc::new(Tree::new());
                let l = legs.clone();
                t.on_fatal(move |why| {
                    if let Ok(l) = l.lock() {
                        for leg in l.iter() {
                            leg.mark_failed(why);
                        }
                    }
                });
                t
            } else {
                run_tree.clone()
            };
            // Exactly-once: each target holds the truth about what it applied (several
            // targets: sink/exact_many.rs); on a cluster per slot (sink/exact_slots.rs), which
            // costs about twice the target CPU (README, *Exactly once*): there only `true`
            // turns it on, not `auto`. One run nonce for every target (the fences).
            let auto = cfg.sync.exactly_once == crate::config::ExactlyOnce::Auto;
            if auto && topology.is_cluster() {
                tracing::info!(target_name = %spec.name,
                    "exactly-once is off on a cluster target unless sync.exactly_once = true (its cost there: see the README)"
                );
            }
            let mut exact =
                crate::sink::exact::for_target(&cfg.sync, auto && topology.is_cluster())
                    .and(run_exact.clone());
            if exact.is_some() && cfg.sync.exactly_once == crate::config::ExactlyOnce::Auto {
                exact =
                    crate::sink::exact::if_permitted(cfg, &spec.endpoint, &topology, exact).await;
            }
            if let Some(e) = &exact {
                repairs.enable_records(crate::sink::exact_fences::Records {
                    exact: e.clone(),
                    cluster: topology.is_cluster(),
                });
            }
            let targets = Targets::start(
                &topology,
                &spec.endpoint,
                WriterSettings {
                    endpoint: spec.endpoint.clone(),
                    heartbeat_key: Bytes::from(cfg.sync.heartbeat_key.clone()),
                    reply_timeout: spec.reply_timeout,
                    repairs: Some(repairs.clone()),
                    exact: exact.clone(),
                },
                cfg.sync.queue_batches,
                arbiter.clone(),
                tree.clone(),
            );
            list.push(Output {
                sync: Arc::new(spec.sync_settings(&cfg.sync)),
                spec: spec.clone(),
                targets,
                repairs,
                topology,
                tree,
                legs,
                exact,
            });
        }
        Ok(Outputs {
            list,
            progress: Default::default(),
            replays: Default::default(),
            many: Default::default(),
        })
    }

    /// Exactly-once: closes a killed run's connections and reads every shard's progress key.
    pub async fn read_progress(&mut self, source: &Topology, state_dir: &std::path::Path) {
        if self.multi() {
            let views: Vec<_> = self
                .list
                .iter()
                .map(|o| crate::sink::exact_many::TargetView {
                    name: &o.spec.name,
                    endpoint: &o.spec.endpoint,
                    targets: &o.targets,
                    exact: o.exact.as_ref(),
                })
                .collect();
            (self.progress, self.many) =
                crate::sink::exact_many::read(&views, source, state_dir).await;
            // Each target's key repair records, from its own position of each leg.
            for (i, o) in self.list.iter().enumerate() {
                let own = self.many.own_positions(i);
                crate::sink::exact_fences::load_all(&o.repairs, &o.targets, &own).await;
            }
            return;
        }
        if let Some(o) = self.list.first()
            && let Some(e) = o.exact.as_deref()
            && o.targets.cluster
        {
            (self.progress, self.replays) =
                crate::sink::exact_slots::read_all(e, &o.targets, source, state_dir).await;
        } else if let Some(o) = self.list.first() {
            self.progress =
                crate::sink::exact::read_all(o.exact.as_deref(), &o.spec.endpoint, source).await;
        }
        if let Some(o) = self.list.first() {
            crate::sink::exact_fences::load_all(&o.repairs, &o.targets, &self.progress).await;
        }
    }

    /// True when the target holds a copy of shard `name` that a full sync must clear first.
    fn exact_dirty(&self, dir: &std::path::Path, name: &str) -> bool {
        match self.progress.get(name) {
            Some(Ok(crate::sink::exact::Progress::FullSync)) => true,
            Some(Ok(crate::sink::exact::Progress::Absent)) => {
                checkpoint::load(dir, name).ok().flatten().is_some()
            }
            _ => false,
        }
    }

    /// More than one target.
    pub fn multi(&self) -> bool {
        self.list.len() > 1
    }

    /// The first target's writers (`None` only without targets).
    pub fn first(&self) -> Option<&Output> {
        self.list.first()
    }

    /// True when no target holds a key.
    pub fn all_empty(&self) -> bool {
        self.list.iter().all(|o| {
            o.topology
                .masters()
                .iter()
                .all(|m| crate::net::client::keyspace_keys(&m.raw_info) == 0)
        })
    }

    /// The link's own target info: with several targets the oldest (lowest RDB version; `first`
    /// when there is none). Commands are converted for each target's own server (see
    /// [`crate::sink::fanout`]); this one is what the link falls back to.
    pub fn link_target_info(&self, first: &Topology) -> ServerInfo {
        self.list
            .iter()
            .map(|o| o.topology.info())
            .min_by_key(|i| i.rdb_version())
            .unwrap_or_else(|| first.info())
    }

    /// The progress of a new shard: with several targets, one leg per target.
    pub fn shard_state(&self, name: String) -> Arc<ShardState> {
        if !self.multi() {
            return Arc::new(ShardState::new(name));
        }
        let names: Vec<String> = self.list.iter().map(|o| o.spec.name.clone()).collect();
        let s = ShardState::with_targets(name.clone(), &names);
        for (t, (o, leg)) in names.iter().zip(self.list.iter().zip(s.legs())) {
            crate::observe::telemetry::register_leg(&name, t);
            if let Ok(mut l) = o.legs.lock() {
                l.push(leg.clone());
            }
        }
        s
    }

    /// The writer side of a shard's link.
    pub fn fanout(&self, cfg: &Config, node: &Node, shard: &ShardState) -> Fanout {
        let ds = self
            .list
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let d =
                    Dispatcher::new(o.targets.clone(), o.sync.clone()).with_repair(Repairer::new(
                        o.repairs.clone(),
                        RepairContext {
                            source: cfg.source.clone(),
                            source_info: node.info.clone(),
                            target_info: o.topology.info(),
                            sync: o.sync.clone(),
                            cluster_target: o.targets.cluster,
                        },
                    ));
                if self.multi() {
                    let d = self.many.dispatcher(i, &shard.name, o.exact.as_ref(), d);
                    return (d, o.topology.info());
                }
                let d = match self.replays.get(&shard.name) {
                    Some(r) if o.targets.cluster => d.with_replay(r.clone()),
                    _ => d,
                };
                let d = match &o.exact {
                    Some(e) => {
                        d.with_exact(e.clone(), self.exact_dirty(&cfg.state_dir, &shard.name))
                    }
                    None => d,
                };
                (d, o.topology.info())
            })
            .collect();
        let f = Fanout::many(shard, ds);
        if self.multi() {
            tracing::info!(shard = %shard.name, targets = self.list.len(), conversions = f.groups(),
                "each target gets commands filtered and converted for its own settings and server, once per group of targets that share them");
        }
        f
    }

    /// Where a shard resumes (see the module doc). Err: a checkpoint file cannot be used.
    pub fn resume(
        &self,
        dir: &std::path::Path,
        shard: &ShardState,
    ) -> Result<Option<ReplPosition>, CheckpointError> {
        let r = self.resume_by_name(dir, &shard.name)?;
        if r.is_none() && self.multi() && !self.progress.contains_key(&shard.name) {
            tracing::info!(shard = %shard.name, "the targets' checkpoints are missing or from different histories: every target gets a full sync");
        }
        Ok(r)
    }

    /// [`Outputs::resume`] of the shard named `shard`.
    pub fn resume_by_name(
        &self,
        dir: &std::path::Path,
        shard: &str,
    ) -> Result<Option<ReplPosition>, CheckpointError> {
        if !self.multi() {
            return checkpoint::load(dir, shard);
        }
        let mut all = Vec::new();
        for o in &self.list {
            all.push(checkpoint::load(dir, &format!("{shard}@{}", o.spec.name))?);
        }
        let Some(Some(first)) = all.first().cloned() else {
            return Ok(None);
        };
        if all
            .iter()
            .any(|p| p.as_ref().is_none_or(|p| p.replid != first.replid))
        {
            return Ok(None);
        }
        // The earliest position, with the source database selected there.
        let (offset, db) = all
            .iter()
            .flatten()
            .map(|p| (p.offset, p.db))
            .min_by_key(|p| p.0)
            .unwrap_or((first.offset, first.db));
        Ok(Some(ReplPosition {
            replid: first.replid,
            offset,
            db,
        }))
    }

    /// Starts a failure watchdog per leg of `shards` under `tree` ([`Group::Watchdogs`];
    /// one-to-many only; see [`crate::sink::fanout::watch_leg`]): a failed target acknowledged
    /// nothing for its `fail_after_ms` while writes waited.
    pub fn watchdogs(&self, tree: &Tree, shards: &[Arc<ShardState>]) {
        for s in shards {
            for (leg, o) in s.legs().iter().zip(&self.list) {
                let name = format!("{} -> {}", s.name, leg.target.as_deref().unwrap_or(""));
                let watch = crate::sink::fanout::watch_leg(leg.clone(), o.spec.fail_after);
                tree.spawn_once(Group::Watchdogs, name, watch);
            }
        }
    }

    /// Stops taking work: the writers' queues close once the links are gone.
    pub fn close(&self) {
        for o in &self.list {
            o.targets.close();
        }
    }

    /// Resolves once the writers of every target that did not fail have drained and stopped.
    pub async fn drained(&self, run_tree: &Tree) {
        if !self.multi() {
            return run_tree.join(Group::Writers).await;
        }
        for o in self.list.iter().filter(|o| !o.failed()) {
            o.tree.join(Group::Writers).await;
        }
    }
}

/// The config as [`crate::precheck::run`] sees it for one target: that target and its settings.
pub fn config_for(cfg: &Config, spec: &TargetSpec) -> Config {
    let mut c = cfg.clone();
    c.target = spec.endpoint.clone();
    c.target_reply_timeout = spec.reply_timeout;
    c.sync = spec.sync_settings(&cfg.sync);
    c
}

/// The precheck of the source with the first target (the run's own precheck).
pub async fn precheck_first(
    cfg: &Config,
) -> Result<crate::precheck::Prechecked, Vec<crate::precheck::Check>> {
    match cfg.targets.first() {
        Some(t) => precheck_target(cfg, t).await,
        None => crate::precheck::run(cfg).await,
    }
}

/// The precheck of the source with one target.
pub async fn precheck_target(
    cfg: &Config,
    spec: &TargetSpec,
) -> Result<crate::precheck::Prechecked, Vec<crate::precheck::Check>> {
    crate::precheck::run(&config_for(cfg, spec)).await
}

/// What the checkpointer writes for a shard: the shard itself, or each live leg.
pub fn checkpointed(shards: &[Arc<ShardState>]) -> Vec<Arc<ShardState>> {
    shards
        .iter()
        .flat_map(|s| {
            if s.legs().is_empty() {
                vec![s.clone()]
            } else {
                s.legs().to_vec()
            }
        })
        .collect()
}
