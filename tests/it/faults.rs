//! Fault injection against real servers, each under a write load running on its own thread:
//! the source kills the replica connection (during the full sync and during the stream), the
//! target dies for 10 s, shardsync is SIGKILLed and restarted from its checkpoint, shardsync is
//! stopped cleanly and restarted, the source dies and comes back with a new replication ID.
//! Every test ends with a key-by-key comparison of source and target and checks that shardsync
//! never panicked.
//!
//! The load writes `ld:*` keys: `SET`/`EXPIRE` on strings, `HSET`, `ZADD` (all of them
//! idempotent when a stretch of the stream is applied twice) and the non-idempotent `INCR` on
//! counters `ld:c:*` and `RPUSH` of unique sequence numbers onto lists `ld:l:*`. The latter are
//! compared by [`check_tracked`], which tolerates (and counts) writes applied twice: a list item
//! present twice, a counter higher on the target. Everything else goes through the general
//! comparison. Each test prints its figures (`cargo test -- --nocapture` shows them).

use crate::common;
use crate::common::util::now_ms;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::compare::{CompareOptions, assert_no_differences, compare_servers_with};
use common::run::SyncRun;
use common::status::{applied, full_sync_done, streaming, sum_shards};
use common::util::info_field;
use common::*;

const KIND: ServerKind = ServerKind::Redis70;
const HEARTBEAT: &str = "shardsync:heartbeat";
/// Counters (`INCR`) and lists (`RPUSH`) of the load: `ld:c:0..N`, `ld:l:0..N`.
const TRACKED: u64 = 16;

// ---------------------------------------------------------------------------------------------
// Write load generator.

#[derive(Clone, Debug)]
struct LoadOptions {
    /// Target rate (ops/s), paced per pipeline.
    ops_per_sec: u64,
    /// Commands per pipeline.
    pipeline: u64,
    /// Size of the `SET` values.
    value_bytes: usize,
    /// Stop after this many ops even if not told to stop.
    max_ops: u64,
    /// Stop after this long even if not told to stop.
    max_time: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            ops_per_sec: 6000,
            pipeline: 60,
            value_bytes: 32,
            max_ops: 2_000_000,
            max_time: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct LoadReport {
    /// Ops of pipelines the source acknowledged.
    ops: u64,
    /// Ops of pipelines that failed (the source was down or loading); may be partly applied.
    failed_ops: u64,
    /// `RPUSH`es (onto the tracked lists) the source acknowledged.
    rpushes: u64,
    secs: f64,
}

/// A load thread writing to the source until stopped (or its own limits).
struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    handle: Option<JoinHandle<LoadReport>>,
}

impl Load {
    fn start(url: String, opts: LoadOptions) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let (stop2, ops2) = (stop.clone(), ops.clone());
        let handle = std::thread::spawn(move || load_loop(&url, &opts, &stop2, &ops2));
        Load {
            stop,
            ops,
            handle: Some(handle),
        }
    }

    /// Ops acknowledged so far.
    fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("load thread present")
            .join()
            .expect("load thread panicked")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn connect_quick(url: &str) -> Option<redis::Connection> {
    let client = redis::Client::open(url).ok()?;
    let conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    conn.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(conn)
}

/// Appends op number `n` (≥ 1) to `p`; true if it is a tracked `RPUSH`.
fn push_op(p: &mut redis::Pipeline, n: u64, value: &str) -> bool {
    match n % 6 {
        0 => {
            p.cmd("SET")
                .arg(format!("ld:s:{}", n % 1000))
                .arg(format!("{n}:{value}"))
                .ignore();
        }
        1 => {
            p.cmd("INCR").arg(format!("ld:c:{}", n % TRACKED)).ignore();
        }
        2 => {
            p.cmd("RPUSH")
                .arg(format!("ld:l:{}", n % TRACKED))
                .arg(n)
                .ignore();
            return true;
        }
        3 => {
            p.cmd("HSET")
                .arg(format!("ld:h:{}", n % 200))
                .arg(format!("f{}", n % 16))
                .arg(n)
                .ignore();
        }
        4 => {
            p.cmd("ZADD")
                .arg(format!("ld:z:{}", n % 200))
                .arg(n)
                .arg(format!("m{}", n % 32))
                .ignore();
        }
        _ => {
            p.cmd("EXPIRE")
                .arg(format!("ld:s:{}", (n / 6) % 1000))
                .arg(3600)
                .ignore();
        }
    }
    false
}

fn load_loop(url: &str, opts: &LoadOptions, stop: &AtomicBool, acked: &AtomicU64) -> LoadReport {
    let value = "x".repeat(opts.value_bytes);
    let started = Instant::now();
    let mut report = LoadReport::default();
    let mut conn: Option<redis::Connection> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed)
        && report.ops < opts.max_ops
        && started.elapsed() < opts.max_time
    {
        if conn.is_none() {
            conn = connect_quick(url);
            if conn.is_none() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        let mut p = redis::pipe();
        let mut rpushes = 0;
        for _ in 0..opts.pipeline {
            n += 1;
            rpushes += u64::from(push_op(&mut p, n, &value));
        }
        let c = conn.as_mut().expect("connected");
        match p.query::<()>(c) {
            Ok(()) => {
                report.ops += opts.pipeline;
                report.rpushes += rpushes;
                acked.store(report.ops, Ordering::Relaxed);
            }
            Err(_) => {
                report.failed_ops += opts.pipeline;
                conn = None;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Pace: op count so far at the configured rate.
        let due = Duration::from_secs_f64(
            (report.ops + report.failed_ops) as f64 / opts.ops_per_sec as f64,
        );
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    report.secs = started.elapsed().as_secs_f64();
    report
}

// ---------------------------------------------------------------------------------------------
// Checks.

#[derive(Debug, Default)]
struct Duplicates {
    /// Items on the source's tracked lists.
    list_items: usize,
    /// List items present twice on the target (RPUSHes applied twice).
    list_dups: usize,
    /// Sum of (target − source) over the tracked counters (INCRs applied twice).
    counter_excess: i64,
}

/// Compares the tracked lists and counters allowing duplicated writes, and counts them: with its
/// repeated items removed (first occurrence kept), each target list must equal the source's;
/// each target counter must be at least the source's.
fn check_tracked(sc: &mut redis::Connection, dc: &mut redis::Connection) -> Duplicates {
    let mut d = Duplicates::default();
    for i in 0..TRACKED {
        let key = format!("ld:l:{i}");
        let src: Vec<u64> = redis::cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query(sc)
            .expect("LRANGE source");
        let dst: Vec<u64> = redis::cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query(dc)
            .expect("LRANGE target");
        let mut seen = HashSet::new();
        let dedup: Vec<u64> = dst.iter().copied().filter(|v| seen.insert(*v)).collect();
        if dedup != src {
            let first = dedup.iter().zip(&src).position(|(a, b)| a != b);
            panic!(
                "list {key}: target (duplicates removed) differs from source: source {} items, \
                 target {} items ({} after removing duplicates), first difference at {first:?}",
                src.len(),
                dst.len(),
                dedup.len()
            );
        }
        d.list_items += src.len();
        d.list_dups += dst.len() - dedup.len();

        let key = format!("ld:c:{i}");
        let src: Option<i64> = redis::cmd("GET").arg(&key).query(sc).expect("GET source");
        let dst: Option<i64> = redis::cmd("GET").arg(&key).query(dc).expect("GET target");
        let (s, t) = (src.unwrap_or(0), dst.unwrap_or(0));
        assert_eq!(
            src.is_some(),
            dst.is_some(),
            "counter {key}: source {src:?}, target {dst:?}"
        );
        assert!(
            t >= s,
            "counter {key} lost increments: source {s}, target {t}"
        );
        d.counter_excess += t - s;
    }
    d
}

/// Key-by-key comparison of db 0, except the heartbeat, the tracked keys (see
/// [`check_tracked`]) and the keys starting with each of `also_ignore`.
fn compare_all(
    sc: &mut redis::Connection,
    dc: &mut redis::Connection,
    dbs: &[u32],
    also_ignore: &[&[u8]],
) {
    let mut ignore: Vec<&[u8]> = vec![b"shardsync:heartbeat*", b"ld:c:*", b"ld:l:*"];
    ignore.extend_from_slice(also_ignore);
    let diffs = compare_servers_with(sc, dc, dbs, &ignore, &CompareOptions::default());
    assert_no_differences(&diffs);
}

fn heartbeat_at_least(conn: &mut redis::Connection, ms: u64) -> bool {
    let v: Option<String> = redis::cmd("GET").arg(HEARTBEAT).query(conn).unwrap_or(None);
    v.and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|v| v >= ms)
}

/// Waits until a heartbeat written after now reached the target: everything written to the
/// source before this call is then applied.
fn wait_caught_up(ss: &Shardsync, dst: &RedisServer, timeout: Duration) -> Duration {
    let after = now_ms();
    let t = Instant::now();
    let mut dc = dst.client();
    assert!(
        wait_until(timeout, || heartbeat_at_least(&mut dc, after)),
        "target did not catch up within {timeout:?}; shardsync log:\n{}",
        ss.log_tail(40)
    );
    t.elapsed()
}

/// Waits until the source no longer lists a replica (the killed or stopped shardsync's link is
/// gone), so a restarted process is the only one.
fn wait_replica_gone(src: &RedisServer) {
    assert!(
        wait_until(Duration::from_secs(10), || {
            info_field(&src.info("replication"), "connected_slaves").as_deref() == Some("0")
        }),
        "the source still lists the old replica"
    );
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

fn assert_no_panic(ss: &Shardsync) {
    let log = ss.log();
    assert!(!log.contains("panicked"), "shardsync panicked:\n{log}");
}

/// Peak resident set (VmHWM) of a running process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status");
    kb * 1024
}

fn master_offset(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(conn)
        .expect("INFO");
    info_field(&info, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .expect("master_repl_offset")
}

fn kill_replicas(conn: &mut redis::Connection) -> i64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query(conn)
        .expect("CLIENT KILL TYPE replica")
}

/// A run whose config has a fast heartbeat (quicker catch-up checks) plus `extra` `[sync]`
/// lines.
fn run_with_config(extra: &str) -> SyncRun {
    SyncRun::new(Some(&format!(
        "[sync]\nheartbeat_interval_ms = 200\n{extra}"
    )))
}

fn spawn(src: &RedisServer, dst: &RedisServer, run: &SyncRun) -> Shardsync {
    run.spawn_pair(&src.url(), &dst.url(), &["--log-level", "info"])
}

/// A source whose full sync takes long enough to be interrupted: `keys` 32-byte `bulk:*` keys
/// (`DEBUG POPULATE`) and a diskless RDB; `extra` config args are appended.
fn bulk_source(keys: u64, extra: &[&str]) -> RedisServer {
    let mut args = vec![
        "--enable-debug-command",
        "yes",
        "--repl-diskless-sync",
        "yes",
    ];
    args.extend_from_slice(extra);
    let src = RedisServer::start_with(KIND, &args);
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(keys)
        .arg("bulk")
        .arg(32)
        .query(&mut src.client())
        .expect("DEBUG POPULATE");
    src
}

fn checkpoint_files(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("checkpoint-") && n.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// The source drops the replica connection twice: while the RDB of the full sync is streaming
/// (a new full sync follows, nothing else possible) and while the command stream flows under
/// load (`PSYNC` from the handed-out position must be accepted with `+CONTINUE`).
#[test]
fn source_kills_replica_during_full_sync_and_stream() {
    let t0 = Instant::now();
    const BULK: u64 = 300_000;
    let src = bulk_source(BULK, &["--repl-backlog-size", "64mb"]);
    let dst = RedisServer::start(KIND);
    let mut sc = src.client();
    let run = run_with_config("");
    let mut ss = spawn(&src, &dst, &run);
    let load = Load::start(src.url(), LoadOptions::default());

    // Kill 1: during the full sync, once the target holds part of the dataset.
    ss.wait_status(Duration::from_secs(20), "a full sync", |st| {
        sum_shards(st, "full_resyncs") >= 1
    });
    let mut dc = dst.client();
    let dbsize = |c: &mut redis::Connection| -> u64 { redis::cmd("DBSIZE").query(c).unwrap_or(0) };
    // The target's count without its exactly-once progress keys.
    let copied = |c: &mut redis::Connection| -> u64 { dbsize(c) - compare::progress_keys(c) };
    assert!(
        wait_until(Duration::from_secs(30), || copied(&mut dc) > 20_000),
        "target never started filling; log:\n{}",
        ss.log_tail(30)
    );
    assert!(
        !ss.log().contains("RDB received"),
        "full sync finished before the kill: make the dataset bigger"
    );
    let killed = kill_replicas(&mut sc);
    let at_kill = copied(&mut dc);
    assert_eq!(killed, 1, "CLIENT KILL TYPE replica found no replica");
    ss.wait_status(Duration::from_secs(10), "a link restart", |st| {
        sum_shards(st, "restarts") >= 1
    });
    ss.wait_status(
        Duration::from_secs(20),
        "a second full sync after the kill",
        |st| sum_shards(st, "full_resyncs") == 2,
    );
    let full_sync_started = Instant::now();
    ss.wait_status(
        Duration::from_secs(120),
        "the full sync applied",
        full_sync_done,
    );
    let second_full_sync = full_sync_started.elapsed();

    // Kill 2: during the stream, under load.
    ss.wait_stream_flows(64 << 10, Duration::from_secs(20));
    let ops_before = load.ops();
    assert_eq!(
        kill_replicas(&mut sc),
        1,
        "no replica to kill in the stream phase"
    );
    ss.wait_status(
        Duration::from_secs(20),
        "the stream again after a second restart, without a full sync (+CONTINUE)",
        |st| {
            sum_shards(st, "restarts") >= 2 && sum_shards(st, "full_resyncs") == 2 && streaming(st)
        },
    );
    ss.wait_stream_flows(64 << 10, Duration::from_secs(20));
    assert!(load.ops() > ops_before, "load stalled");
    let report = load.finish();
    let catch_up = wait_caught_up(&ss, &dst, Duration::from_secs(60));

    let log = ss.log();
    assert_eq!(
        count(&log, "full sync started"),
        2,
        "full syncs: the first plus one for the kill during the full sync; log:\n{log}"
    );
    assert_eq!(count(&log, "partial resync accepted"), 1, "log:\n{log}");
    let dups = check_tracked(&mut sc, &mut dc);
    assert_eq!(
        (dups.list_dups, dups.counter_excess),
        (0, 0),
        "an in-process reconnect resumes after what it handed out: nothing applied twice"
    );
    // The bulk keys by MGET (the general comparison of 300k keys would take minutes here).
    let compare_started = Instant::now();
    for start in (0..BULK).step_by(5000) {
        let keys: Vec<String> = (start..(start + 5000).min(BULK))
            .map(|i| format!("bulk:{i}"))
            .collect();
        let a: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query(&mut sc).expect("MGET");
        let b: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query(&mut dc).expect("MGET");
        if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y || x.is_none()) {
            panic!("{} differs: source {:?}, target {:?}", keys[i], a[i], b[i]);
        }
    }
    compare_all(&mut sc, &mut dc, &[0], &[b"bulk:*"]);
    let compare_time = compare_started.elapsed();
    assert_eq!(
        dbsize(&mut sc),
        copied(&mut dc),
        "key counts differ (bulk keys extra on the target?)"
    );
    assert_no_panic(&ss);
    println!(
        "FAULTS kill-replica: target had {at_kill} keys at the full-sync kill; second full sync {second_full_sync:.1?}; \
         load {report:?}; dups {dups:?}; catch-up {catch_up:.1?}; compare {compare_time:.1?}; total {:.1?}",
        t0.elapsed()
    );
}

/// The target dies for 10 s under load and comes back with what it acknowledged (AOF, fsync
/// always). The writer must resend what was not acknowledged; small queues must keep
/// shardsync's memory bounded while the source keeps producing.
#[test]
fn target_down_for_10s_under_load() {
    target_down(&[], "target-down", false);
}

/// Same, but the source's replica output-buffer limit (8 MB hard) is far below what the
/// outage produces: the source drops shardsync while its writer is stuck, and shardsync must
/// resume (`+CONTINUE` from the 64 MB backlog) once the target is back.
#[test]
fn target_down_source_drops_replica_on_buffer_limit() {
    target_down(
        &["--client-output-buffer-limit", "replica 8mb 4mb 1"],
        "target-down-obuf",
        true,
    );
}

fn target_down(src_extra: &[&str], label: &str, expect_drop: bool) {
    let t0 = Instant::now();
    let mut src_args = vec!["--repl-backlog-size", "64mb"];
    src_args.extend_from_slice(src_extra);
    let src = RedisServer::start_with(KIND, &src_args);
    let mut dst =
        RedisServer::start_with(KIND, &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut sc = src.client();
    let run = run_with_config("queue_batches = 4\nbatch_max_bytes = 262144\n");
    let mut ss = spawn(&src, &dst, &run);
    ss.wait_status(
        Duration::from_secs(20),
        "the full sync applied",
        full_sync_done,
    );
    let pid = ss.pid().expect("pid");
    let load = Load::start(
        src.url(),
        LoadOptions {
            value_bytes: 4096,
            ..LoadOptions::default()
        },
    );
    ss.wait_stream_flows(1 << 20, Duration::from_secs(20));
    let rss_before = peak_rss(pid);
    let off_before = master_offset(&mut sc);
    dst.kill();
    std::thread::sleep(Duration::from_secs(10));
    let produced = master_offset(&mut sc) - off_before;
    let rss_down = peak_rss(pid);
    let stuck = applied(&ss.wait_status(Duration::from_secs(5), "a status", |_| true));
    dst.restart();
    let restarted = Instant::now();
    // The load keeps running until the target acknowledges writes again.
    ss.wait_status(
        Duration::from_secs(60),
        "writes acknowledged after the restart",
        |st| applied(st) > stuck,
    );
    let report = load.finish();
    let catch_up = wait_caught_up(&ss, &dst, Duration::from_secs(90));
    let recovered = restarted.elapsed();
    let rss_peak = peak_rss(pid);

    let mut dc = dst.client();
    let dups = check_tracked(&mut sc, &mut dc);
    compare_all(&mut sc, &mut dc, &[0], &[]);
    let log = ss.log();
    let source_dropped = count(&log, "source link failed");
    let full = count(&log, "full sync started");
    let partial = count(&log, "partial resync accepted");
    assert!(
        log.contains("target connection failed; will reconnect"),
        "the writer never noticed the target was down; log:\n{}",
        ss.log_tail(30)
    );
    if expect_drop {
        assert!(
            source_dropped > 0 && partial > 0 && full == 1,
            "expected the source to drop the link and a partial resync from the backlog; log:\n{log}"
        );
    }
    if source_dropped > 0 {
        assert!(
            full + partial > 1,
            "the source dropped shardsync but it never resynced"
        );
    }
    assert_no_panic(&ss);
    const RSS_LIMIT: u64 = 128 << 20;
    assert!(
        rss_peak < RSS_LIMIT,
        "peak RSS {} MB ≥ {} MB",
        rss_peak >> 20,
        RSS_LIMIT >> 20
    );
    println!(
        "FAULTS {label}: source produced {} MB of stream during the 10 s outage; peak RSS before {} MB, \
         during outage {} MB, overall {} MB; source dropped link {source_dropped}x (full syncs {full}, \
         partial resyncs {partial}); recovered {recovered:.1?} after restart (catch-up wait {catch_up:.1?}); \
         load {report:?}; dups {dups:?}; total {:.1?}",
        produced >> 20,
        rss_before >> 20,
        rss_down >> 20,
        rss_peak >> 20,
        t0.elapsed()
    );
}

/// shardsync is SIGKILLed under load and started again on the same state dir: it must resume
/// from its checkpoint with `+CONTINUE`. What the target applied after the last checkpoint is
/// applied twice (at-least-once); the tracked lists and counters measure how much.
#[test]
fn sigkill_under_load_resumes_from_checkpoint() {
    let t0 = Instant::now();
    let src = RedisServer::start_with(KIND, &["--repl-backlog-size", "64mb"]);
    let dst = RedisServer::start(KIND);
    let mut sc = src.client();
    let run = run_with_config("");
    let mut ss1 = spawn(&src, &dst, &run);
    ss1.wait_status(
        Duration::from_secs(20),
        "the full sync applied",
        full_sync_done,
    );
    let opts = LoadOptions::default();
    let load = Load::start(src.url(), opts.clone());
    // Under load, past a checkpoint of the stream.
    ss1.wait_stream_flows(64 << 10, Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(10), || checkpoint_files(&run.state)
            .len()
            == 1),
        "no checkpoint written"
    );
    ss1.wait_stream_flows(64 << 10, Duration::from_secs(20));
    let status = ss1.kill();
    assert!(
        Shardsync::killed_by(status, nix::sys::signal::Signal::SIGKILL),
        "{status:?}"
    );
    assert_eq!(
        checkpoint_files(&run.state).len(),
        1,
        "no checkpoint after the kill"
    );
    assert_no_panic(&ss1);
    wait_replica_gone(&src);

    let mut ss2 = spawn(&src, &dst, &run);
    ss2.wait_status(
        Duration::from_secs(20),
        "the stream resumed from the checkpoint without a full sync (+CONTINUE)",
        |st| streaming(st) && sum_shards(st, "full_resyncs") == 0,
    );
    ss2.wait_stream_flows(64 << 10, Duration::from_secs(20));
    let report = load.finish();
    let catch_up = wait_caught_up(&ss2, &dst, Duration::from_secs(60));
    let log2 = ss2.log();
    assert!(
        log2.contains("found checkpoint; will try to resume"),
        "{log2}"
    );
    assert!(
        !log2.contains("full sync started"),
        "restart from the checkpoint fell back to a full sync:\n{log2}"
    );

    let mut dc = dst.client();
    let dups = check_tracked(&mut sc, &mut dc);
    compare_all(&mut sc, &mut dc, &[0], &[]);
    assert_no_panic(&ss2);
    // INCR and RPUSH alternate in the load, so a replayed stretch holds as many of each (± 1 at
    // each end).
    assert!(
        (dups.counter_excess - dups.list_dups as i64).abs() <= 1,
        "{dups:?}"
    );
    // Replayed: what the target applied between the last checkpoint (written every second) and
    // the kill, i.e. at most about one second of the load's RPUSHes.
    let rpush_per_sec = opts.ops_per_sec as f64 / 6.0;
    assert!(
        (dups.list_dups as f64) <= 1.5 * rpush_per_sec,
        "{} RPUSHes applied twice, more than 1.5 s of load ({rpush_per_sec:.0}/s)",
        dups.list_dups
    );
    println!(
        "FAULTS sigkill: duplicates {} RPUSH + {} INCR (load {rpush_per_sec:.0} RPUSH/s, {} ops/s overall, \
         i.e. ~{:.2} s of writes replayed); load {report:?}; catch-up {catch_up:.1?}; total {:.1?}",
        dups.list_dups,
        dups.counter_excess,
        opts.ops_per_sec,
        dups.list_dups as f64 / rpush_per_sec,
        t0.elapsed()
    );
}

/// SIGTERM under load: exit 0, a checkpoint on disk, the heartbeat key gone from both sides,
/// and a restart resumes with `+CONTINUE` without applying anything twice (the final
/// checkpoint is written after the writers drained).
#[test]
fn sigterm_under_load_then_resume() {
    let t0 = Instant::now();
    let src = RedisServer::start_with(KIND, &["--repl-backlog-size", "64mb"]);
    let dst = RedisServer::start(KIND);
    let mut sc = src.client();
    let mut dc = dst.client();
    let run = run_with_config("");
    let mut ss1 = spawn(&src, &dst, &run);
    ss1.wait_status(
        Duration::from_secs(20),
        "the full sync applied",
        full_sync_done,
    );
    let load = Load::start(src.url(), LoadOptions::default());
    ss1.wait_stream_flows(128 << 10, Duration::from_secs(20));
    let stop_started = Instant::now();
    let status = ss1.terminate();
    let stop_time = stop_started.elapsed();
    assert!(
        status.success(),
        "SIGTERM did not exit 0: {status:?}\n{}",
        ss1.log_tail(30)
    );
    assert_eq!(
        checkpoint_files(&run.state).len(),
        1,
        "no checkpoint after SIGTERM"
    );
    for (side, c) in [("source", &mut sc), ("target", &mut dc)] {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(HEARTBEAT)
            .query(c)
            .expect("EXISTS");
        assert_eq!(exists, 0, "heartbeat key left on the {side} after SIGTERM");
    }
    assert_no_panic(&ss1);
    wait_replica_gone(&src);

    let mut ss2 = spawn(&src, &dst, &run);
    ss2.wait_status(
        Duration::from_secs(20),
        "the stream resumed from the checkpoint without a full sync (+CONTINUE)",
        |st| streaming(st) && sum_shards(st, "full_resyncs") == 0,
    );
    ss2.wait_stream_flows(64 << 10, Duration::from_secs(20));
    let report = load.finish();
    let catch_up = wait_caught_up(&ss2, &dst, Duration::from_secs(60));
    let log2 = ss2.log();
    assert!(
        !log2.contains("full sync started"),
        "restart after a clean stop fell back to a full sync:\n{log2}"
    );
    let dups = check_tracked(&mut sc, &mut dc);
    assert_eq!(
        (dups.list_dups, dups.counter_excess),
        (0, 0),
        "writes applied twice after a clean stop"
    );
    compare_all(&mut sc, &mut dc, &[0], &[]);
    assert_no_panic(&ss2);
    println!(
        "FAULTS sigterm: stop took {stop_time:.1?}; load {report:?}; dups {dups:?}; catch-up {catch_up:.1?}; total {:.1?}",
        t0.elapsed()
    );
}

/// The source dies under load and comes back from its AOF with a new replication ID: the
/// `PSYNC` is refused, shardsync does a second full sync and the target matches again (typed
/// dataset with functions, several databases).
#[test]
fn source_restart_forces_full_resync() {
    let t0 = Instant::now();
    let mut src =
        RedisServer::start_with(KIND, &["--appendonly", "yes", "--appendfsync", "always"]);
    let dst = RedisServer::start(KIND);
    let dataset = DatasetOptions {
        big_value_bytes: 1 << 20,
        dbs: vec![0, 2],
        ..DatasetOptions::default()
    };
    populate_typed_dataset(&mut src.client(), KIND, &dataset);
    let run = run_with_config("");
    let mut ss = spawn(&src, &dst, &run);
    ss.wait_status(
        Duration::from_secs(30),
        "the full sync applied",
        full_sync_done,
    );
    let replid = |s: &RedisServer| info_field(&s.info("replication"), "master_replid");
    let id_before = replid(&src);
    let load = Load::start(src.url(), LoadOptions::default());
    ss.wait_stream_flows(64 << 10, Duration::from_secs(20));
    src.kill();
    std::thread::sleep(Duration::from_millis(1000));
    src.restart();
    let restarted = Instant::now();
    let id_after = replid(&src);
    assert_ne!(id_before, id_after, "replication ID survived the restart");
    ss.wait_status(
        Duration::from_secs(30),
        "a second full sync applied after the source restart",
        |st| sum_shards(st, "full_resyncs") == 2 && full_sync_done(st),
    );
    let resynced = restarted.elapsed();
    ss.wait_stream_flows(64 << 10, Duration::from_secs(20));
    let report = load.finish();
    let catch_up = wait_caught_up(&ss, &dst, Duration::from_secs(60));

    let log = ss.log();
    assert_eq!(count(&log, "full sync started"), 2, "log:\n{log}");
    assert!(!log.contains("partial resync accepted"), "log:\n{log}");
    let (mut sc, mut dc) = (src.client(), dst.client());
    let dups = check_tracked(&mut sc, &mut dc);
    assert_eq!(
        (dups.list_dups, dups.counter_excess),
        (0, 0),
        "a full resync replaces the lists"
    );
    compare_all(&mut sc, &mut dc, &[0, 2], &[]);
    assert_no_panic(&ss);
    println!(
        "FAULTS source-restart: second full sync done {resynced:.1?} after the restart; load {report:?}; \
         dups {dups:?}; catch-up {catch_up:.1?}; total {:.1?}",
        t0.elapsed()
    );
}

/// A full resync after the first one must remove from the target the keys the source deleted
/// in between: they are neither in the new RDB nor in the stream from the new offset. The
/// target was empty at start, so shardsync clears the shard's keys before the repeated sync.
#[test]
fn keys_deleted_during_interrupted_full_sync_do_not_stay_on_target() {
    let src = bulk_source(300_000, &[]);
    let dst = RedisServer::start(KIND);
    let mut sc = src.client();
    let run = run_with_config("");
    let mut ss = spawn(&src, &dst, &run);
    ss.wait_status(Duration::from_secs(20), "a full sync", |st| {
        sum_shards(st, "full_resyncs") >= 1
    });
    let mut dc = dst.client();
    assert!(wait_until(Duration::from_secs(30), || {
        redis::cmd("DBSIZE").query::<u64>(&mut dc).unwrap_or(0) > 20_000
    }));
    // Keys already copied to the target, deleted on the source, then the link is cut.
    let (_, copied): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(200)
        .query(&mut dc)
        .expect("SCAN");
    // Not the exactly-once progress key: it is the target's own, never on the source.
    let copied: Vec<String> = copied
        .into_iter()
        .filter(|k| !k.as_bytes().starts_with(compare::PROGRESS_PREFIX))
        .collect();
    let deleted: i64 = redis::cmd("DEL").arg(&copied).query(&mut sc).expect("DEL");
    assert!(deleted > 0);
    assert_eq!(kill_replicas(&mut sc), 1);
    ss.wait_status(
        Duration::from_secs(60),
        "the second full sync applied",
        |st| sum_shards(st, "full_resyncs") == 2 && full_sync_done(st),
    );
    wait_caught_up(&ss, &dst, Duration::from_secs(60));
    let stale: i64 = redis::cmd("EXISTS")
        .arg(&copied)
        .query(&mut dc)
        .expect("EXISTS");
    assert_eq!(
        stale, 0,
        "{stale} of {deleted} keys deleted on the source during the interrupted full sync are still on the target"
    );
    assert_no_panic(&ss);
}
