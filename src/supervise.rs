//! [`Tree`]: the supervision tree of a run. Every long-lived task hangs under one root, in a
//! [`Group`] (HTTP listener and samplers, source links, heartbeats, one-to-many target
//! watchdogs, target writers, the checkpointer); a run stops through one path: [`Tree::stop`] per group, in the order the app's
//! shutdown needs (each group's [`CancellationToken`] is a child of the root, so [`Tree::shutdown`]
//! stops whatever is left).
//!
//! A child that ends on its own is done. A child that panics is never lost silently: the tree
//! logs it (with what to do), counts it in `shardsync_task_failures_total{task}` and, when its
//! [`Restart`] policy says so, starts it again after a backoff. Children that are actix actors
//! rather than tasks (the target writers, the source links with their own actix `Supervisor`)
//! are watched through a "done" signal: one dropped without firing means the actor died.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::net::backoff::Backoff;

/// The groups of the tree, in the order a run stops them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Heartbeats = 0,
    /// One-to-many: a watchdog per target leg ([`crate::sink::fanout::watch_leg`]).
    Watchdogs = 1,
    Links = 2,
    Writers = 3,
    Checkpointer = 4,
    Observe = 5,
}

impl Group {
    pub const ALL: [Group; 6] = [
        Group::Heartbeats,
        Group::Watchdogs,
        Group::Links,
        Group::Writers,
        Group::Checkpointer,
        Group::Observe,
    ];

    /// The `task` label of `shardsync_task_failures_total`.
    pub fn name(self) -> &'static str {
        match self {
            Group::Heartbeats => "heartbeat",
            Group::Watchdogs => "watchdog",
            Group::Links => "link",
            Group::Writers => "writer",
            Group::Checkpointer => "checkpointer",
            Group::Observe => "observe",
        }
    }
}

/// What the tree does when a child panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Start it again after a backoff (its work is idempotent: a heartbeat, a checkpoint loop).
    Always,
    /// Report it and leave it stopped (its caller decides, e.g. through `on_death`).
    Never,
}

struct Branch {
    token: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
    /// Work that runs inside actors rather than as tasks of the tree (a link's replication
    /// attempt): [`Tree::stop`] waits for it too.
    actor_work: TaskTracker,
}

/// The root of a run's tasks. Shared as `Arc<Tree>`.
pub struct Tree {
    root: CancellationToken,
    branches: Vec<Branch>,
    /// What the run does when a child that is not restarted dies (see [`Tree::on_fatal`]).
    fatal: std::sync::OnceLock<FatalHook>,
}

type FatalHook = Box<dyn Fn(&str) + Send + Sync>;

impl Default for Tree {
    fn default() -> Tree {
        Tree::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        let root = CancellationToken::new();
        let branches = Group::ALL
            .iter()
            .map(|_| Branch {
                token: root.child_token(),
                tasks: Mutex::new(JoinSet::new()),
                actor_work: TaskTracker::new(),
            })
            .collect();
        Tree {
            root,
            branches,
            fatal: std::sync::OnceLock::new(),
        }
    }

    /// Sets what happens when a child that is not restarted dies (once; e.g. the app marks every
    /// shard failed, so the run stops with the reason in `/status` instead of stalling).
    pub fn on_fatal(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.fatal.set(Box::new(hook));
    }

    fn fatal(&self, why: &str) {
        if let Some(h) = self.fatal.get() {
            h(why);
        }
    }

    fn branch(&self, g: Group) -> &Branch {
        &self.branches[g as usize]
    }

    /// The token a child of `g` watches: cancelled when the group (or the tree) stops.
    pub fn token(&self, g: Group) -> CancellationToken {
        self.branch(g).token.clone()
    }

    /// Where an actor child of `g` registers the work it runs (wrap it with
    /// [`TaskTracker::track_future`]): stopping `g` waits until that work has ended or been
    /// dropped, so a stopped group leaves nothing running (e.g. a link still writing).
    pub fn actor_work(&self, g: Group) -> TaskTracker {
        self.branch(g).actor_work.clone()
    }

    fn add(&self, g: Group, fut: impl Future<Output = ()> + Send + 'static) {
        match self.branch(g).tasks.lock() {
            Ok(mut set) => {
                set.spawn(fut);
            }
            Err(_) => {
                tokio::spawn(fut);
            }
        }
    }

    /// Runs `make(token)` as a child of `g` until it returns or its group stops. A panic is
    /// reported and, with [`Restart::Always`], the child starts again after a backoff.
    pub fn spawn<F, Fut>(&self, g: Group, name: String, restart: Restart, mut make: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let token = self.token(g);
        self.add(g, async move {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            loop {
                let mut child = tokio::spawn(make(token.clone()));
                let ended = tokio::select! {
                    r = &mut child => r,
                    // A child that does not see its token in time is aborted with the group.
                    _ = token.cancelled() => {
                        if tokio::time::timeout(STOP_GRACE, &mut child).await.is_err() {
                            child.abort();
                        }
                        return;
                    }
                };
                match ended {
                    Ok(()) => return,
                    Err(e) if e.is_cancelled() => return,
                    Err(e) => {
                        let again = restart == Restart::Always && !token.is_cancelled();
                        report(g, &name, &panic_text(e), again);
                        if !again {
                            return;
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = token.cancelled() => return,
                }
            }
        });
    }

    /// Runs `fut` as a child of `g` until it ends or the group stops (it is dropped then); a
    /// panic is reported, never restarted (`fut` cannot be made again).
    pub fn spawn_once(
        &self,
        g: Group,
        name: String,
        fut: impl Future<Output = ()> + Send + 'static,
    ) {
        let mut once = Some(fut);
        self.spawn(g, name, Restart::Never, move |stop| {
            let fut = once.take();
            async move {
                if let Some(fut) = fut {
                    tokio::select! {
                        _ = fut => {}
                        _ = stop.cancelled() => {}
                    }
                }
            }
        });
    }

    /// Watches a child of `g` that is an actor: `done` fires when it ended as planned; when it is
    /// dropped unfired the actor died, which is reported and `on_death` runs.
    pub fn watch(self: &Arc<Self>, g: Group, name: String, done: oneshot::Receiver<()>) {
        let tree = Arc::downgrade(self);
        self.add(g, async move {
            if done.await.is_err() {
                let why = "it stopped without finishing its work (a panic; see the log above)";
                report(g, &name, why, false);
                if let Some(t) = tree.upgrade() {
                    t.fatal(&format!(
                        "the {} task {name} died: {why}; restart shardsync (it resumes from the checkpoints)",
                        g.name()
                    ));
                }
            }
        });
    }

    /// Stops a group: cancels its token, then waits until every child of it has ended, and
    /// (for at most [`STOP_GRACE`]) until its actors' work has ended; work still running then
    /// is logged (its actor did not see the token).
    pub async fn stop(&self, g: Group) {
        let b = self.branch(g);
        b.token.cancel();
        self.join(g).await;
        b.actor_work.close();
        if tokio::time::timeout(STOP_GRACE, b.actor_work.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                task = g.name(),
                running = b.actor_work.len(),
                "some {} work did not stop within {STOP_GRACE:?} of shutdown (this is a bug: please report it with this log)",
                g.name()
            );
        }
    }

    /// Waits until every child of `g` has ended (without cancelling it: writers end when their
    /// queues close and drain).
    pub async fn join(&self, g: Group) {
        let mut set = match self.branch(g).tasks.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(_) => return,
        };
        while set.join_next().await.is_some() {}
    }

    /// Stops every group still running, in order.
    pub async fn shutdown(&self) {
        for g in Group::ALL {
            self.stop(g).await;
        }
        self.root.cancel();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.root.cancel();
    }
}

/// How long a cancelled child may take to return before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(2);

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}

fn report(g: Group, name: &str, why: &str, restarting: bool) {
    metrics::counter!(crate::observe::telemetry::TASK_FAILURES, "task" => g.name()).increment(1);
    let then = if restarting {
        "restarting it"
    } else {
        "it stays stopped"
    };
    tracing::error!(
        task = g.name(),
        name,
        error = why,
        "a {} task failed; {then} (this is a bug: please report it with this log)",
        g.name()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_panicking_child_is_restarted_until_its_group_stops() {
        let tree = Tree::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        tree.spawn(Group::Heartbeats, "t".into(), Restart::Always, move |tok| {
            let n = r.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("first run fails");
                }
                tok.cancelled().await;
            }
        });
        let t0 = tokio::time::Instant::now();
        while runs.load(Ordering::SeqCst) < 2 && t0.elapsed() < Duration::from_secs(5) {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted once");
        tokio::time::timeout(Duration::from_secs(5), tree.stop(Group::Heartbeats))
            .await
            .expect("the group stops when cancelled");
    }

    #[tokio::test]
    async fn stop_waits_for_tracked_actor_work() {
        let tree = Tree::new();
        let (token, work) = (tree.token(Group::Links), tree.actor_work(Group::Links));
        let ended = Arc::new(AtomicUsize::new(0));
        let e = ended.clone();
        // Work that takes a while to wind down after its token fires (as a link dropping its
        // connection); it runs outside the tree's tasks, as inside an actor.
        tokio::spawn(work.track_future(async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            e.fetch_add(1, Ordering::SeqCst);
        }));
        tree.stop(Group::Links).await;
        assert_eq!(
            ended.load(Ordering::SeqCst),
            1,
            "stop returned before the work ended"
        );
    }

    #[tokio::test]
    async fn a_dead_actor_is_reported() {
        let tree = Arc::new(Tree::new());
        let (tx, rx) = oneshot::channel::<()>();
        let (dtx, drx) = std::sync::mpsc::channel::<String>();
        tree.on_fatal(move |why| {
            let _ = dtx.send(why.to_string());
        });
        tree.watch(Group::Writers, "w".into(), rx);
        drop(tx);
        tree.join(Group::Writers).await;
        let why = drx.try_recv().expect("reported");
        assert!(why.contains("writer task w"), "{why}");
    }
}
