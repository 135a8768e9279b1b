//! Exactly-once delivery (`sync.exactly_once`, issue 12): shardsync is SIGKILLed again and again
//! (during the full sync, during `MULTI`/`EXEC` bursts, under steady load) while a mixed,
//! non-idempotent workload runs on the source (`INCR`, `RPUSH`, `APPEND`, `LPOP`, `RENAME`,
//! `SPOP`, `XADD *`, `EVAL` that writes, `MULTI`/`EXEC`, two databases); the target must then
//! equal the source key by key — no duplicate tolerance. A second test SIGKILLs the *target*
//! (AOF, `appendfsync always`) under load and restarts it from its AOF.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::compare::{CompareOptions, compare_servers_with};
use common::dataset;
use common::run::{
    SyncRun, assert_no_panic, sigkill, stop, wait_server_caught_up as wait_caught_up,
};
use common::util::{self, DetRng, wait_until};
use common::*;

const KIND: ServerKind = ServerKind::Redis70;
pub(crate) const IGNORE: &[&[u8]] = &[b"shardsync:heartbeat*", b"__shardsync:progress:*"];

/// What the workload does: a steady mix, or only `MULTI`/`EXEC` blocks.
#[derive(Clone)]
pub(crate) struct Workload {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) bursts: Arc<AtomicBool>,
    pub(crate) ops: Arc<AtomicU64>,
    /// For a cluster target: database 0 only, and the keys a command links share a hash tag
    /// (`RENAME`, the script's two keys) so that each stays in one slot.
    cluster: bool,
}

impl Workload {
    pub(crate) fn start(url: String, seed: u64) -> (Workload, JoinHandle<()>) {
        Self::start_with(url, seed, false)
    }

    /// The workload for a cluster target (see `cluster`).
    pub(crate) fn start_cluster(url: String, seed: u64) -> (Workload, JoinHandle<()>) {
        Self::start_with(url, seed, true)
    }

    fn start_with(url: String, seed: u64, cluster: bool) -> (Workload, JoinHandle<()>) {
        let w = Workload {
            stop: Arc::new(AtomicBool::new(false)),
            bursts: Arc::new(AtomicBool::new(false)),
            ops: Arc::new(AtomicU64::new(0)),
            cluster,
        };
        let w2 = w.clone();
        let h = std::thread::spawn(move || w2.run(&url, seed));
        (w, h)
    }

    fn run(&self, url: &str, seed: u64) {
        let client = redis::Client::open(url).expect("client");
        let mut c0 = client.get_connection().expect("connect db 0");
        let mut c2 = client.get_connection().expect("connect db 2");
        let _: () = redis::cmd("SELECT")
            .arg(2)
            .query(&mut c2)
            .expect("SELECT 2");
        let mut rng = DetRng::new(seed);
        let mut n = 0u64;
        let script = "redis.call('INCR', KEYS[1]); redis.call('RPUSH', KEYS[2], ARGV[1]); return 1";
        while !self.stop.load(Ordering::Acquire) {
            let bursts = self.bursts.load(Ordering::Acquire);
            let mut p = redis::pipe();
            let use2 = !self.cluster && rng.below(5) == 0;
            // Keys a command links: one hash tag on a cluster target.
            let (tmp, moved, ev, evl) = if self.cluster {
                ("{r}tmp:", "{r}moved:", "{ev}a:", "{ev}l:")
            } else {
                ("tmp:", "moved:", "ev:", "evl:")
            };
            for _ in 0..40 {
                n += 1;
                let k = rng.below(8);
                let op = if bursts { 9 } else { rng.below(11) };
                match op {
                    0 => {
                        p.cmd("INCR").arg(format!("ctr:{k}")).ignore();
                    }
                    1 => {
                        p.cmd("RPUSH").arg(format!("list:{k}")).arg(n).ignore();
                    }
                    2 => {
                        p.cmd("APPEND")
                            .arg(format!("str:{k}"))
                            .arg(format!("{n};"))
                            .ignore();
                    }
                    3 => {
                        p.cmd("LPOP").arg(format!("list:{k}")).ignore();
                    }
                    4 => {
                        // RENAME: a key made and moved; replayed, it would fail or move twice.
                        p.cmd("SET").arg(format!("{tmp}{n}")).arg(n).ignore();
                        p.cmd("RENAME")
                            .arg(format!("{tmp}{n}"))
                            .arg(format!("{moved}{k}"))
                            .ignore();
                    }
                    5 => {
                        p.cmd("SADD").arg(format!("set:{k}")).arg(n).ignore();
                        p.cmd("SPOP").arg(format!("set:{}", (k + 1) % 8)).ignore();
                    }
                    6 => {
                        p.cmd("XADD")
                            .arg(format!("stream:{}", k % 4))
                            .arg("*")
                            .arg("n")
                            .arg(n)
                            .ignore();
                    }
                    7 => {
                        p.cmd("EVAL")
                            .arg(script)
                            .arg(2)
                            .arg(format!("{ev}{k}"))
                            .arg(format!("{evl}{k}"))
                            .arg(n)
                            .ignore();
                    }
                    8 => {
                        p.cmd("INCRBY").arg(format!("ctr:{k}")).arg(3).ignore();
                        p.cmd("LPUSH").arg(format!("list:{k}")).arg(n).ignore();
                    }
                    _ => {
                        // A MULTI/EXEC block (queued by the pipeline: MULTI … EXEC).
                        p.cmd("MULTI").ignore();
                        p.cmd("INCR").arg(format!("tx:ctr:{k}")).ignore();
                        p.cmd("RPUSH").arg(format!("tx:list:{k}")).arg(n).ignore();
                        p.cmd("APPEND").arg(format!("tx:str:{k}")).arg("x").ignore();
                        p.cmd("LPOP").arg(format!("list:{k}")).ignore();
                        p.cmd("EXEC").ignore();
                    }
                }
            }
            let conn = if use2 { &mut c2 } else { &mut c0 };
            match p.query::<()>(conn) {
                Ok(()) => {
                    self.ops.fetch_add(40, Ordering::Relaxed);
                }
                Err(e) => panic!("workload: {e}"),
            }
            std::thread::sleep(Duration::from_millis(4));
        }
    }

    /// The end of a kill test on its last run `ss`: once it streams, the load goes on for
    /// `settle`, then stops (its thread `handle` ends).
    pub(crate) fn finish_on(&self, ss: &mut Shardsync, handle: JoinHandle<()>, settle: Duration) {
        ss.expect_log("replication started", Duration::from_secs(30));
        std::thread::sleep(settle);
        self.stop_and_join(handle);
    }

    /// Stops the load and waits for its thread `handle`.
    pub(crate) fn stop_and_join(&self, handle: JoinHandle<()>) {
        self.stop.store(true, Ordering::Release);
        handle.join().expect("workload thread");
    }
}

/// A Redis 7.0 source (128 MB backlog, diskless sync) holding `keys` keys of `bytes` bytes: a
/// full sync long enough to be interrupted.
pub(crate) fn populated_source(keys: u64, bytes: u64) -> RedisServer {
    let src = RedisServer::start_with(
        KIND,
        &[
            "--enable-debug-command",
            "yes",
            "--repl-backlog-size",
            "128mb",
            "--repl-diskless-sync",
            "yes",
        ],
    );
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(keys)
        .arg("bulk")
        .arg(bytes)
        .query(&mut src.client())
        .expect("DEBUG POPULATE");
    src
}

/// The run of these tests (and of `exactly_once_cluster`'s): exactly-once, a heartbeat every
/// 100 ms, no `/status` (restarted again and again).
pub(crate) fn exact_run() -> SyncRun {
    // With `$EXACT_KEEP_LOGS` set, debug logs (kept there when a comparison fails).
    let level = if std::env::var_os("EXACT_KEEP_LOGS").is_some() {
        "log_level = \"shardsync=debug,info\"\n"
    } else {
        ""
    };
    SyncRun::without_status(Some(&format!(
        "{level}[sync]\nheartbeat_interval_ms = 100\nexactly_once = true\n"
    )))
}

/// Databases 0 and 2 of `dst` equal the source's key by key (progress keys aside).
pub(crate) fn assert_exact(src: &RedisServer, dst: &RedisServer) {
    assert_same(&mut src.client(), &mut dst.client(), &[0, 2], IGNORE);
}

/// The last run of a kill test (`log`) resumed from the target's keys (`resume_line` is in its
/// log) without a full sync, and at least 8 of the restarts before it (`resumed`) resumed with
/// `+CONTINUE`.
pub(crate) fn assert_last_run_resumed(log: &str, resume_line: &str, resumed: usize) {
    assert!(
        log.contains(resume_line),
        "the last run did not resume from the target ({resume_line:?} not in its log):\n{log}"
    );
    assert!(
        !log.contains("full sync started"),
        "the last run did a full sync:\n{log}"
    );
    assert!(
        resumed >= 8,
        "only {resumed} of the restarts resumed with +CONTINUE"
    );
}

/// With `$EXACT_KEEP_LOGS` set and the copy different: keeps shardsync's log, the target's log
/// and its AOF directory there (`<name>-<pid>.*`), for the post-mortem.
fn keep_logs_if_different(src: &RedisServer, dst: &RedisServer, ss: &Shardsync, name: &str) {
    let Ok(d) = std::env::var("EXACT_KEEP_LOGS") else {
        return;
    };
    let diffs = compare_servers_with(
        &mut src.client(),
        &mut dst.client(),
        &[0, 2],
        IGNORE,
        &CompareOptions::default(),
    );
    if diffs.is_empty() {
        return;
    }
    let base = format!("{d}/{name}-{}", std::process::id());
    let _ = std::fs::create_dir_all(&base);
    let _ = std::fs::write(format!("{base}/diffs.txt"), format!("{diffs:#?}"));
    let _ = std::fs::copy(ss.log_path(), format!("{base}/shardsync.log"));
    let _ = std::fs::copy(dst.log_path(), format!("{base}/target.log"));
    let _ = std::process::Command::new("cp")
        .arg("-r")
        .arg(dst.dir())
        .arg(format!("{base}/target-dir"))
        .status();
}

/// SIGKILLs of shardsync at random moments under a [`Workload`] ([`Kills::kill`]), counting the
/// rounds that had resumed with a partial resync.
pub(crate) struct Kills<'a> {
    load: &'a Workload,
    rng: DetRng,
    /// How long a run may take to reach the stream phase.
    stream_timeout: Duration,
    /// The test's start (printed with each kill).
    t0: Instant,
    /// Names the kept logs.
    name: &'a str,
    /// Rounds whose run had resumed with a partial resync (`+CONTINUE`).
    pub(crate) resumed: usize,
}

impl<'a> Kills<'a> {
    pub(crate) fn new(
        load: &'a Workload,
        seed: u64,
        stream_timeout: Duration,
        t0: Instant,
        name: &'a str,
    ) -> Kills<'a> {
        Kills {
            load,
            rng: DetRng::new(seed),
            stream_timeout,
            t0,
            name,
            resumed: 0,
        }
    }

    /// One round of a kill test on the running `ss`: rounds 0 and 1 are killed during the full
    /// sync, the others once the stream flows (with `MULTI`/`EXEC` bursts in rounds 5–7), after
    /// a random pause. Counts the round in `resumed` when it resumed with a partial resync.
    /// Keeps each round's log in `$EXACT_KEEP_LOGS/<name>-<round>.log` when that is set.
    pub(crate) fn kill(&mut self, ss: Shardsync, round: usize) {
        self.kill_when(ss, round, |_| {});
    }

    /// [`Kills::kill`], calling `before` on the run right before its SIGKILL (to bring the
    /// targets to a state the kill must find, e.g. at different positions).
    pub(crate) fn kill_when(
        &mut self,
        mut ss: Shardsync,
        round: usize,
        before: impl FnOnce(&Shardsync),
    ) {
        if round < 2 {
            // During the full sync: the RDB is being applied.
            ss.expect_log("full sync started", Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(150 + self.rng.below(300)));
            assert!(
                !ss.log().contains("RDB received"),
                "round {round}: the full sync ended before the kill; log:\n{}",
                ss.log_tail(30)
            );
        } else {
            ss.expect_log("replication started", Duration::from_secs(30));
            if !wait_until(self.stream_timeout, || {
                let l = ss.log();
                l.contains("partial resync accepted") || l.contains("RDB received")
            }) {
                panic!("round {round}: no stream phase; log:\n{}", ss.log_tail(40));
            }
            if ss.log().contains("partial resync accepted") {
                self.resumed += 1;
            }
            self.load
                .bursts
                .store((5..8).contains(&round), Ordering::Release);
            std::thread::sleep(Duration::from_millis(100 + self.rng.below(1400)));
        }
        before(&ss);
        assert_no_panic(&ss);
        sigkill(&mut ss);
        println!(
            "round {round} killed at {:.1?} ops {}",
            self.t0.elapsed(),
            self.load.ops.load(Ordering::Relaxed)
        );
        if let Ok(d) = std::env::var("EXACT_KEEP_LOGS") {
            let _ = std::fs::create_dir_all(&d);
            let _ = std::fs::write(format!("{d}/{}-{round}.log", self.name), ss.log());
        }
    }
}

/// Twelve SIGKILLs of shardsync: two during the full sync, three during `MULTI`/`EXEC` bursts,
/// the rest under the steady mix, at random moments. The target must equal the source exactly.
#[test]
fn sigkill_twelve_times_standalone_target_is_exact() {
    let t0 = Instant::now();
    let src = populated_source(20_000, 4000);
    let dst = RedisServer::start(KIND);
    let run = exact_run();
    let spawn = || run.spawn_pair(&src.url(), &dst.url(), &[]);
    let (load, handle) = Workload::start(src.url(), 12);
    let mut kills = Kills::new(&load, 0x5eed, Duration::from_secs(40), t0, "round");
    for round in 0..12 {
        kills.kill(spawn(), round);
    }
    load.bursts.store(false, Ordering::Release);
    // The last run: catch up, stop the load, catch up again, compare.
    let mut ss = spawn();
    load.finish_on(&mut ss, handle, Duration::from_millis(1000));
    wait_caught_up(&ss, &dst, Duration::from_secs(60));
    assert_exact(&src, &dst);
    let resumed = kills.resumed;
    assert_last_run_resumed(&ss.log(), "found the target's progress key", resumed);
    stop(&mut ss);
    println!(
        "EXACTLY-ONCE standalone: 12 SIGKILLs ({resumed} partial resyncs), {} source writes, target exact; {:.1?}",
        load.ops.load(Ordering::Relaxed),
        t0.elapsed()
    );
}

/// Writes one pipeline (one batch on the target side) around a `GEOSEARCHSTORE`, which a Redis
/// 6.0 target refuses at queue time: `INCR ctr`, `RPUSH list a`, the refused command, `INCR ctr`,
/// `RPUSH list b` (`places` must hold Palermo and Catania: [`dataset::geoadd_places`]).
pub(crate) fn write_batch_with_a_refused_command(sc: &mut redis::Connection) {
    let mut p = redis::pipe();
    p.cmd("INCR").arg("ctr").ignore();
    p.cmd("RPUSH").arg("list").arg("a").ignore();
    p.add_command(dataset::geosearchstore_near()).ignore();
    p.cmd("INCR").arg("ctr").ignore();
    p.cmd("RPUSH").arg("list").arg("b").ignore();
    p.query::<()>(sc).expect("pipeline");
}

/// The target is SIGKILLed under load and restarted from its AOF (`appendfsync always`):
/// shardsync reconnects, reads its progress key, and sends again only what the target did not
/// commit. Nothing lost, nothing doubled.
#[test]
fn target_sigkill_restarts_from_aof_exact() {
    let t0 = Instant::now();
    let src = RedisServer::start_with(KIND, &["--repl-backlog-size", "128mb"]);
    let mut dst =
        RedisServer::start_with(KIND, &["--appendonly", "yes", "--appendfsync", "always"]);
    let run = exact_run();
    let (load, handle) = Workload::start(src.url(), 34);
    let mut ss = run.spawn_pair(&src.url(), &dst.url(), &[]);
    ss.expect_log("RDB received", Duration::from_secs(30));
    let mut rng = DetRng::new(7);
    for round in 0..3 {
        load.bursts.store(round == 1, Ordering::Release);
        std::thread::sleep(Duration::from_millis(500 + rng.below(800)));
        dst.kill();
        std::thread::sleep(Duration::from_millis(300));
        dst.restart();
    }
    load.bursts.store(false, Ordering::Release);
    load.finish_on(&mut ss, handle, Duration::from_millis(800));
    wait_caught_up(&ss, &dst, Duration::from_secs(60));
    keep_logs_if_different(&src, &dst, &ss, "target-aof");
    assert_exact(&src, &dst);
    assert_no_panic(&ss);
    assert!(ss.is_running(), "shardsync stopped:\n{}", ss.log_tail(40));
    println!(
        "EXACTLY-ONCE target kill: 3 target SIGKILLs + AOF restarts, {} source writes, target exact; {:.1?}",
        load.ops.load(Ordering::Relaxed),
        t0.elapsed()
    );
}

/// A batch holding a command the older target would refuse at queue time (`GEOSEARCHSTORE …
/// BYBOX` into Redis 6.0): the writer knows it from the target's `COMMAND` table and leaves it
/// out of the transaction (no `EXECABORT`), so the other writes of the batch apply exactly
/// once, and the refused command's key is repaired from the source.
#[test]
fn refused_command_stays_out_of_the_transaction() {
    let src = RedisServer::start_with(KIND, &["--repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start(ServerKind::Redis60);
    let mut sc = src.client();
    util::run(&mut sc, &dataset::geoadd_places(), "GEOADD");
    let run = exact_run();
    let spawn = || run.spawn_pair(&src.url(), &dst.url(), &[]);
    let mut ss = spawn();
    ss.expect_log("RDB received", Duration::from_secs(30));
    wait_caught_up(&ss, &dst, Duration::from_secs(30));
    // One pipeline: one batch on the target side.
    write_batch_with_a_refused_command(&mut sc);
    ss.expect_log("not in the target's COMMAND table", Duration::from_secs(20));
    ss.expect_log("repairing the key", Duration::from_secs(20));
    assert!(
        !ss.log().contains("target aborted a write transaction"),
        "no EXECABORT:\n{}",
        ss.log_tail(40)
    );
    wait_caught_up(&ss, &dst, Duration::from_secs(30));
    assert_same(&mut src.client(), &mut dst.client(), &[0], IGNORE);
    // And a kill right after still resumes exactly.
    ss.kill();
    let _: () = redis::cmd("INCR")
        .arg("ctr")
        .query::<i64>(&mut sc)
        .map(|_| ())
        .expect("INCR");
    let ss2 = spawn();
    wait_caught_up(&ss2, &dst, Duration::from_secs(30));
    let v: i64 = redis::cmd("GET")
        .arg("ctr")
        .query(&mut dst.client())
        .expect("GET");
    assert_eq!(v, 3, "ctr applied exactly once per INCR");
    assert_no_panic(&ss2);
}

/// The start-up fence closes the writer connections of *another* run of this instance (a
/// killed process whose connections the target still holds; also the nonce-less name of older
/// versions) and never this run's own writers, which connect while it runs (before per-run
/// names, it closed them in about half the starts: one target connection error at start).
/// Another instance's connections — even one whose name extends this one's — stay.
#[test]
fn fence_closes_other_runs_connections_only() {
    let src = RedisServer::start_with(KIND, &["--repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start(KIND);
    let mut sc = src.client();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut sc)
        .expect("SET");
    let names = [
        "shardsync-exact-default-fedcba9876543210", // another run of `default`: closed
        "shardsync-exact-default",                  // an older version's run: closed
        "shardsync-exact-default-x-fedcba9876543210", // instance `default-x`: stays
    ];
    let mut held: Vec<redis::Connection> = names
        .iter()
        .map(|n| {
            let mut c = dst.client();
            let _: () = redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(*n)
                .query(&mut c)
                .expect("SETNAME");
            c
        })
        .collect();
    // No config: exactly-once is on by default ("auto") on a standalone target.
    let run = SyncRun::without_status(None);
    let ss = run.spawn_pair(&src.url(), &dst.url(), &[]);
    wait_caught_up(&ss, &dst, Duration::from_secs(30));
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut dst.client())
        .expect("CLIENT LIST");
    let named: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("name=")))
        .filter(|n| n.starts_with("shardsync-exact-"))
        .collect();
    let ours: Vec<&&str> = named
        .iter()
        .filter(|n| {
            n.strip_prefix("shardsync-exact-default-")
                .is_some_and(|r| r.len() == 16 && r.bytes().all(|b| b.is_ascii_hexdigit()))
                && **n != names[0]
        })
        .collect();
    assert_eq!(ours.len(), 1, "this run's one writer connection: {named:?}");
    assert!(
        !named.contains(&names[0]) && !named.contains(&names[1]),
        "another run's connections must be closed: {named:?}"
    );
    assert!(
        named.contains(&names[2]),
        "another instance's connection must stay: {named:?}"
    );
    let log = ss.log();
    assert!(
        log.contains(
            "closed the target connections a previous run of this instance left open connections=2"
        ),
        "the fence reports the two it closed:\n{log}"
    );
    assert!(
        !log.contains("target connection failed"),
        "this run's writer was cut:\n{log}"
    );
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query(&mut dst.client())
        .expect("GET");
    assert_eq!(v.as_deref(), Some("v"));
    assert!(
        redis::cmd("PING").query::<String>(&mut held[2]).is_ok(),
        "another instance's connection answers"
    );
    assert_no_panic(&ss);
}
