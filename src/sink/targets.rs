//! [`Targets`]: the target deployment as the data path sees it — one [`TargetWriter`] per node
//! and, for a cluster, the slot table that says which node owns each slot. The [`SlotRouter`]
//! actor owns that table: it builds it from `CLUSTER NODES` at start and rebuilds it whenever a
//! writer is told `MOVED`, starting writers for nodes it has not seen. Readers take a snapshot
//! ([`Routing`]) per run of commands, so the per-key lookup is a plain array index.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc::error::TrySendError;

use super::Batch;
use super::writer::{TargetWriter, WriterHandle, WriterSettings};
use crate::config::Endpoint;
use crate::net::topology::{self, Topology};
use crate::router::SlotTable;
use crate::supervise::{Group, Tree};

/// A routing snapshot: the slot table and the writer of each of its nodes.
#[derive(Debug, Default)]
pub struct Routing {
    /// `None` for a standalone target.
    pub table: Option<SlotTable>,
    /// Writer per table node index (cluster) or the one writer at index 0 (standalone).
    pub writers: Vec<Option<WriterHandle>>,
}

impl Routing {
    /// The writer for `slot` (cluster) or the only writer (standalone).
    pub fn writer_index(&self, slot: Option<u16>) -> Option<usize> {
        match (&self.table, slot) {
            (Some(t), Some(s)) => t
                .node_index_for(s)
                .filter(|&i| self.writers.get(i).is_some_and(Option::is_some)),
            _ => self.writers.iter().position(Option::is_some),
        }
    }

    /// Indexes of every node with a writer (every master).
    pub fn all_writers(&self) -> Vec<usize> {
        (0..self.writers.len())
            .filter(|&i| self.writers[i].is_some())
            .collect()
    }
}

/// The target side, shared by links (through dispatchers), writers and the router.
pub struct Targets {
    pub cluster: bool,
    seed: Endpoint,
    settings: WriterSettings,
    capacity: usize,
    arbiter: ArbiterHandle,
    routing: RwLock<Arc<Routing>>,
    by_addr: Mutex<HashMap<String, WriterHandle>>,
    /// Supervises the writers ([`Group::Writers`]): a writer that dies is reported.
    tree: Arc<Tree>,
    router: OnceLock<Addr<SlotRouter>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field("cluster", &self.cluster)
            .field("seed", &self.seed.to_string())
            .finish()
    }
}

impl Targets {
    /// Starts one writer per target master (on `arbiter`, watched by `tree`) and, for a
    /// cluster, the slot router.
    pub fn start(
        topology: &Topology,
        seed: &Endpoint,
        settings: WriterSettings,
        capacity: usize,
        arbiter: ArbiterHandle,
        tree: Arc<Tree>,
    ) -> Arc<Targets> {
        let targets = Arc::new(Targets {
            cluster: topology.is_cluster(),
            seed: seed.clone(),
            settings,
            capacity,
            arbiter,
            routing: RwLock::new(Arc::new(Routing::default())),
            by_addr: Mutex::new(HashMap::new()),
            tree,
            router: OnceLock::new(),
            closed: AtomicBool::new(false),
        });
        match topology {
            Topology::Standalone(n) => {
                let w = targets.writer_for(&n.endpoint.host, n.endpoint.port);
                targets.set_routing(Routing {
                    table: None,
                    writers: vec![w],
                });
            }
            Topology::Cluster { table, .. } => {
                targets.install_table(table.clone());
                let router = SlotRouter {
                    targets: targets.clone(),
                    busy: false,
                    again: false,
                };
                let _ = targets.router.set(router.start());
            }
        }
        targets
    }

    /// The current routing snapshot.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.read().map(|r| r.clone()).unwrap_or_default()
    }

    fn set_routing(&self, r: Routing) {
        if let Ok(mut g) = self.routing.write() {
            *g = Arc::new(r);
        }
    }

    /// Makes `table` current, starting writers for its masters as needed.
    fn install_table(self: &Arc<Self>, table: SlotTable) {
        let masters: Vec<(String, u16)> = table
            .masters()
            .iter()
            .map(|n| (n.host.clone(), n.port))
            .collect();
        let mut writers = vec![None; table.nodes().len()];
        for (i, n) in table.nodes().iter().enumerate() {
            if masters.iter().any(|(h, p)| *h == n.host && *p == n.port) {
                writers[i] = self.writer_for(&n.host, n.port);
            }
        }
        self.set_routing(Routing {
            table: Some(table),
            writers,
        });
    }

    /// The writer of `host:port`, started if needed (`None` once closed).
    pub fn writer_for(self: &Arc<Self>, host: &str, port: u16) -> Option<WriterHandle> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let ep = topology::endpoint_like(&self.seed, host, port);
        let addr = ep.to_string();
        let mut map = self.by_addr.lock().ok()?;
        if let Some(h) = map.get(&addr) {
            return Some(h.clone());
        }
        let settings = WriterSettings {
            endpoint: ep,
            ..self.settings.clone()
        };
        let redirects = self.cluster.then(|| self.clone());
        let (writer, handle, done) = TargetWriter::new(settings, self.capacity, redirects);
        TargetWriter::start_in_arbiter(&self.arbiter, move |_| writer);
        tracing::info!(node = %addr, "target writer started");
        self.tree.watch(Group::Writers, addr.clone(), done);
        map.insert(addr, handle.clone());
        Some(handle)
    }

    /// Sends a redirected batch to `addr` (`host:port`), after `delay` if given. A batch that
    /// cannot be delivered (shutting down) is logged and counted, never dropped silently. When
    /// that writer's redirect queue is full, the batch comes back as [`Held`]: the calling writer
    /// keeps it and sends it when there is room (see [`super::writer::REDIRECT_QUEUE`]).
    #[must_use]
    pub fn redirect(
        self: &Arc<Self>,
        addr: &str,
        batch: Batch,
        delay: Option<Duration>,
    ) -> Option<Held> {
        let handle = topology::endpoint_at(&self.seed, addr)
            .and_then(|ep| self.writer_for(&ep.host, ep.port));
        let Some(handle) = handle else {
            lost(addr, &batch);
            return None;
        };
        match delay {
            None => match handle.redirect.try_send(batch) {
                Ok(()) => None,
                Err(TrySendError::Full(batch)) => Some(Held { to: handle, batch }),
                Err(TrySendError::Closed(batch)) => {
                    lost(addr, &batch);
                    None
                }
            },
            Some(d) => {
                // The wait runs in its own task (never in a writer's loop): one command each.
                actix::spawn(async move {
                    tokio::time::sleep(d).await;
                    if let Err(e) = handle.redirect.send(batch).await {
                        lost(&handle.addr, &e.0);
                    }
                });
                None
            }
        }
    }

    /// Sends a held batch from its own task: for a writer that is going away (it cannot keep
    /// it); the wait never blocks a writer's loop.
    pub fn deliver_later(&self, h: Held) {
        actix::spawn(async move {
            if let Err(e) = h.to.redirect.send(h.batch).await {
                lost(&h.to.addr, &e.0);
            }
        });
    }

    /// True when `addr` is a master of the current routing (always true for a standalone target).
    pub fn serves(&self, addr: &str) -> bool {
        let r = self.routing();
        r.table.is_none() || r.writers.iter().flatten().any(|w| w.addr == addr)
    }

    /// Sends a batch of a node that is no longer a master to the master that serves its keys
    /// now. A batch's commands all belong to one node's slots, which move together on a
    /// failover, so the first keyed command decides.
    pub fn reroute(self: &Arc<Self>, batch: Batch) {
        let routing = self.routing();
        let slot = batch.cmds.iter().find_map(|c| {
            let spec = crate::router::command_keys(&c.cmd);
            spec.keys
                .first()
                .and_then(|i| c.cmd.args.get(i))
                .map(|k| crate::router::key_slot(k))
        });
        let target = routing
            .writer_index(slot)
            .and_then(|i| routing.writers[i].clone());
        match target {
            Some(h) => self.deliver_later(Held { to: h, batch }),
            None => lost("no master", &batch),
        }
    }

    /// Forgets the writer of `addr` (it stopped after handing its work over).
    pub fn forget(&self, addr: &str) {
        if let Ok(mut m) = self.by_addr.lock() {
            m.remove(addr);
        }
    }

    /// Asks the slot router to rebuild the table (after `MOVED`).
    pub fn request_refresh(&self) {
        if let Some(r) = self.router.get() {
            r.do_send(Refresh);
        }
    }

    /// Stops taking work: forgets every writer handle so that their queues close once the links
    /// are gone; the writers then drain and end ([`Tree::join`] of [`Group::Writers`] waits).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.set_routing(Routing::default());
        if let Ok(mut m) = self.by_addr.lock() {
            m.clear();
        }
    }

    /// Addresses of the nodes that take writes now.
    pub fn master_endpoints(&self) -> Vec<Endpoint> {
        let r = self.routing();
        match &r.table {
            None => vec![self.seed.clone()],
            Some(t) => t
                .masters()
                .iter()
                .map(|n| topology::endpoint_like(&self.seed, &n.host, n.port))
                .collect(),
        }
    }

    /// The endpoint of the node owning `slot` (cluster) or the target (standalone).
    pub fn endpoint_for_slot(&self, slot: u16) -> Option<Endpoint> {
        let r = self.routing();
        match &r.table {
            None => Some(self.seed.clone()),
            Some(t) => t
                .node_for(slot)
                .map(|n| topology::endpoint_like(&self.seed, &n.host, n.port)),
        }
    }
}

/// A redirected batch waiting for room in the redirect queue of the writer `to`.
pub struct Held {
    pub to: WriterHandle,
    pub batch: Batch,
}

/// Counts and logs a redirected batch that cannot be delivered.
pub(super) fn lost(addr: &str, batch: &Batch) {
    let n = batch.cmds.len() as u64;
    batch.shard.rejected_writes.fetch_add(n, Ordering::Relaxed);
    metrics::counter!(crate::observe::telemetry::TARGET_ERRORS, "node" => addr.to_string(), "kind" => "redirect_lost").increment(n);
    for c in &batch.cmds {
        let Some(suppressed) = crate::observe::lograte::allow(addr, "redirect_lost") else {
            continue;
        };
        let key = crate::escape::quoted_key(&c.cmd);
        tracing::error!(node = addr, command = %c.cmd.name_upper(), key = %key, suppressed, "a redirected write could not be delivered (shutting down or unknown node)");
    }
}

/// Rebuild the slot table from the cluster.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh;

/// Owns the target cluster's slot table: rebuilds it on [`Refresh`], one rebuild at a time;
/// requests that arrive during a rebuild fold into one more.
pub struct SlotRouter {
    targets: Arc<Targets>,
    busy: bool,
    again: bool,
}

impl Actor for SlotRouter {
    type Context = Context<Self>;
}

impl Handler<Refresh> for SlotRouter {
    type Result = ();

    fn handle(&mut self, _: Refresh, ctx: &mut Context<Self>) {
        if self.busy {
            self.again = true;
            return;
        }
        self.busy = true;
        let targets = self.targets.clone();
        ctx.spawn(
            async move { refresh(&targets).await }
                .into_actor(self)
                .map(|_, act, ctx| {
                    act.busy = false;
                    if std::mem::take(&mut act.again) {
                        ctx.notify_later(Refresh, Duration::from_millis(50));
                    }
                }),
        );
    }
}

async fn refresh(targets: &Arc<Targets>) {
    let mut candidates = targets.master_endpoints();
    candidates.push(targets.seed.clone());
    for ep in candidates {
        match topology::cluster_table("target", &ep).await {
            Ok(t) if t.is_complete() => {
                tracing::info!(node = %ep, masters = t.masters().len(), "target slot table refreshed");
                targets.install_table(t);
                return;
            }
            Ok(t) => {
                tracing::warn!(node = %ep, uncovered = %topology::format_ranges(&t.uncovered()), "target cluster has uncovered slots")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the target slot table from this node")
            }
        }
    }
}
