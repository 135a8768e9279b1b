//! One-to-many from one process: one PSYNC and one RDB feed several targets (`[[target]]`
//! tables), each with its own writers, db map, progress and checkpoint.
//!
//! - A standalone target (source db 2 → db 5) and a cluster target (db 2 → db 0) both equal the
//!   source key by key after a full sync and a live workload.
//! - A target killed mid-run fails alone: the other keeps converging and equals the source;
//!   `/status` shows the dead one `failed` with dropped writes counted, `/metrics` has
//!   `shardsync_target_failed{…target="dead"} 1`; the stop exits 4 naming it. After the target
//!   is back (empty) and its checkpoint is deleted, a restart full-syncs both targets.
//! - A target frozen (SIGSTOP) past its deadline fails alone too; once it is thawed, a restart
//!   resumes the shard from that target's (older) checkpoint with `+CONTINUE` and both targets
//!   equal the source again. Frozen during the RDB load, it releases the loader when it fails.
//! - The source's own `INFO replication` shows shardsync acknowledging the slowest target's
//!   offset while one target is frozen within its `fail_after_ms`.
//! - A cluster source (three shards) into a Redis 7.0 and a Redis 6.0 target, each converted for
//!   its own server.

use crate::common;
use crate::common::util::now_ms;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::{KeySource, RedisCluster, compare_sources};
use common::compare::{CompareOptions, assert_no_differences, scan_keys};
use common::server::pick_free_port;
use common::status::{resumed, status, sum_shards, synced_shards};
use common::util::{http_get, select, wait_until};
use common::workload::{WorkloadOptions, run_workload};
use common::*;
use nix::sys::signal::Signal;

const HEARTBEAT: &str = "shardsync:heartbeat";

fn opts() -> CompareOptions {
    CompareOptions {
        compare_functions: false,
        ..Default::default()
    }
}

/// One database of a standalone server as a [`KeySource`].
struct Db<'a>(&'a mut redis::Connection, u32);

impl KeySource for Db<'_> {
    fn all_keys(&mut self) -> BTreeSet<Vec<u8>> {
        select(self.0, self.1);
        scan_keys(self.0)
    }
    fn conn_for(&mut self, _key: &[u8]) -> &mut redis::Connection {
        select(self.0, self.1);
        self.0
    }
}

/// Two databases of the source merged (their key names are disjoint: db 2's start with `d2:`).
struct Merged {
    db0: redis::Connection,
    db2: redis::Connection,
}

impl KeySource for Merged {
    fn all_keys(&mut self) -> BTreeSet<Vec<u8>> {
        select(&mut self.db2, 2);
        let mut k = scan_keys(&mut self.db0);
        k.extend(scan_keys(&mut self.db2));
        k
    }
    fn conn_for(&mut self, key: &[u8]) -> &mut redis::Connection {
        if key.starts_with(b"d2:") {
            &mut self.db2
        } else {
            &mut self.db0
        }
    }
}

fn write_db2(conn: &mut redis::Connection, from: usize, n: usize) {
    select(conn, 2);
    let mut p = redis::pipe();
    for i in from..from + n {
        p.cmd("SET").arg(format!("d2:s{i}")).arg(i).ignore();
        p.cmd("HSET")
            .arg(format!("d2:h{}", i % 10))
            .arg(format!("f{i}"))
            .arg(i)
            .ignore();
    }
    p.query::<()>(conn).expect("db 2 writes");
    select(conn, 0);
}

fn set_keys(conn: &mut redis::Connection, prefix: &str, n: usize) {
    let mut p = redis::pipe();
    for i in 0..n {
        p.cmd("SET").arg(format!("{prefix}{i}")).arg(i).ignore();
    }
    p.query::<()>(conn).expect("SET batch");
}

fn heartbeat_at_least(conn: &mut redis::Connection, ms: u64) -> bool {
    let v: Option<String> = redis::cmd("GET").arg(HEARTBEAT).query(conn).unwrap_or(None);
    v.and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|v| v >= ms)
}

/// `/status` entry of target `name` of the only shard.
fn target_status(addr: &str, name: &str) -> Option<serde_json::Value> {
    let st = status(addr)?;
    st["shards"][0]["targets"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
}

/// A run's config file (`[[target]]` tables), state directory and `/status` address.
struct Run {
    _dir: tempfile::TempDir,
    config: String,
    state: String,
    addr: String,
}

impl Run {
    /// `targets`: (name, url, extra lines of its table).
    fn new(source: &str, targets: &[(&str, String, &str)]) -> Run {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = format!("[source]\nurl = \"{source}\"\n\n");
        for (name, url, extra) in targets {
            text.push_str(&format!(
                "[[target]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n\n"
            ));
        }
        text.push_str("[sync]\nheartbeat_interval_ms = 200\ncheckpoint_interval_ms = 200\n");
        let path = dir.path().join("shardsync.toml");
        std::fs::write(&path, text).expect("write config");
        Run {
            config: path.display().to_string(),
            state: dir.path().join("state").display().to_string(),
            addr: format!("127.0.0.1:{}", pick_free_port(false)),
            _dir: dir,
        }
    }

    fn spawn(&self) -> Shardsync {
        Shardsync::spawn(&[
            "run",
            "--config",
            &self.config,
            "--state-dir",
            &self.state,
            "--metrics-addr",
            &self.addr,
            "--log-level",
            "info",
        ])
    }
}

#[test]
fn one_source_to_standalone_and_cluster_targets() {
    let kind = ServerKind::Redis70;
    let src = RedisServer::start_with(kind, &["--repl-diskless-sync-delay", "0"]);
    let t1 = RedisServer::start(kind);
    let t2 = RedisCluster::start(kind, 3, 0);
    let mut sc = src.client();
    let dataset = DatasetOptions {
        dbs: vec![0],
        with_functions: false,
        ..DatasetOptions::small()
    };
    populate_typed_dataset(&mut sc, kind, &dataset);
    write_db2(&mut sc, 0, 200);

    let run = Run::new(
        &src.url(),
        &[
            ("single", t1.url(), "db_map = { \"2\" = 5 }"),
            ("cluster", t2.seed_url(), "db_map = { \"2\" = 0 }"),
        ],
    );
    let (state, addr) = (run.state.clone(), run.addr.clone());
    let mut ss = run.spawn();
    let st = ss.wait_status(Duration::from_secs(60), "the full sync applied", |st| {
        synced_shards(st, 1)
    });
    // One PSYNC for both targets: the source counts one full sync, shardsync one too.
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut sc)
        .expect("INFO");
    assert_eq!(
        common::util::info_field(&info, "sync_full").as_deref(),
        Some("1"),
        "{info}"
    );
    assert_eq!(sum_shards(&st, "full_resyncs"), 1, "{st:#}");

    let wopts = WorkloadOptions {
        use_dbs: false,
        cross_slot_untagged: true,
        volume: 1000,
        ..Default::default()
    };
    run_workload(&mut sc, kind, &wopts);
    write_db2(&mut sc, 200, 300);
    let after = now_ms();
    let mut t1c = t1.client();
    let mut reader = t2.reader();
    let caught_up = wait_until(Duration::from_secs(60), || {
        heartbeat_at_least(&mut t1c, after)
            && heartbeat_at_least(reader.conn_for(HEARTBEAT.as_bytes()), after)
    });
    assert!(caught_up, "targets did not catch up:\n{}", ss.log_tail(40));

    let hb = [HEARTBEAT.as_bytes()];
    // Standalone target: db 0 as is, db 2 in db 5.
    let mut t1c5 = t1.client();
    let mut sc2 = src.client();
    assert_no_differences(&compare_sources(
        &mut Db(&mut sc, 0),
        &mut Db(&mut t1c, 0),
        &hb,
        &opts(),
    ));
    assert_no_differences(&compare_sources(
        &mut Db(&mut sc2, 2),
        &mut Db(&mut t1c5, 5),
        &hb,
        &opts(),
    ));
    // Cluster target: db 0 and db 2 together in db 0.
    let mut merged = Merged {
        db0: src.client(),
        db2: src.client(),
    };
    assert_no_differences(&compare_sources(&mut merged, &mut reader, &hb, &opts()));
    let on_cluster = reader.all_keys().len();
    assert!(
        on_cluster > 1000,
        "only {on_cluster} keys on the cluster target"
    );
    let mut t1c5b = t1.client();
    assert!(
        Db(&mut t1c5b, 5).all_keys().len() >= 300,
        "db 2 did not land in db 5"
    );

    let st = status(&addr).expect("/status");
    let targets = st["shards"][0]["targets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(targets.len(), 2, "{st:#}");
    for t in &targets {
        assert_eq!(t["state"], "syncing", "{st:#}");
        assert_eq!(t["dropped_writes"], 0, "{st:#}");
    }
    let status = ss.terminate();
    assert!(status.success(), "exit {status:?}\n{}", ss.log_tail(40));
    for name in ["single", "cluster"] {
        let f = std::path::Path::new(&state).join(format!(
            "checkpoint-{}_{name}.json",
            src.addr().replace(':', "_")
        ));
        assert!(
            f.is_file(),
            "no checkpoint {} for target {name}",
            f.display()
        );
    }
    assert!(!ss.log().contains("panicked"), "{}", ss.log());
}

/// Waits until `/status` shows target `name` failed; returns its entry.
fn wait_failed(ss: &Shardsync, addr: &str, name: &str) -> serde_json::Value {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(30), || {
        last = target_status(addr, name);
        last.as_ref().is_some_and(|t| t["state"] == "failed")
    });
    assert!(
        ok,
        "target {name} never showed failed; last {last:?}\n{}",
        ss.log_tail(40)
    );
    last.unwrap_or_default()
}

fn assert_equal(src: &RedisServer, dst: &RedisServer, what: &str) {
    let diffs = common::compare::compare_servers_with(
        &mut src.client(),
        &mut dst.client(),
        &[0],
        &[HEARTBEAT.as_bytes()],
        &opts(),
    );
    if !diffs.is_empty() {
        eprintln!("{what}:");
    }
    assert_no_differences(&diffs);
}

/// Waits until `dst` holds the heartbeat written after `after` (then it has everything before).
fn wait_caught_up(dst: &RedisServer, after: u64, ss: &Shardsync, what: &str) {
    let mut c = dst.client();
    assert!(
        wait_until(Duration::from_secs(60), || heartbeat_at_least(
            &mut c, after
        )),
        "{what} did not catch up:\n{}",
        ss.log_tail(40)
    );
}

#[test]
fn killed_target_fails_alone_and_comes_back_with_a_full_sync() {
    let kind = ServerKind::Redis70;
    let src = RedisServer::start_with(kind, &["--repl-diskless-sync-delay", "0"]);
    let good = RedisServer::start(kind);
    let mut dead = RedisServer::start(kind);
    let mut sc = src.client();
    set_keys(&mut sc, "before:", 2000);
    let fast = "reply_timeout_ms = 500\nfail_after_ms = 3000";
    let run = Run::new(
        &src.url(),
        &[("good", good.url(), fast), ("dead", dead.url(), fast)],
    );
    let (state, addr) = (run.state.clone(), run.addr.clone());
    let mut ss = run.spawn();
    ss.wait_status(Duration::from_secs(60), "the full sync applied", |st| {
        synced_shards(st, 1)
    });
    let t0 = now_ms();
    wait_caught_up(&good, t0, &ss, "good");
    wait_caught_up(&dead, t0, &ss, "dead");

    dead.kill();
    // The source goes on; the live target keeps up while the dead one is failed.
    let wopts = WorkloadOptions {
        use_dbs: false,
        volume: 2000,
        ..Default::default()
    };
    run_workload(&mut sc, kind, &wopts);
    let failed = wait_failed(&ss, &addr, "dead");
    set_keys(&mut sc, "after-fail:", 500);
    let after = now_ms();
    wait_caught_up(&good, after, &ss, "the live target");
    assert_equal(&src, &good, "live target while the other is dead");

    let st = status(&addr).expect("/status");
    let shard = &st["shards"][0];
    assert_eq!(shard["phase"], "incremental", "the shard goes on: {st:#}");
    assert_eq!(
        st["state"], "failed",
        "a failed target needs a person: {st:#}"
    );
    let dead_st = target_status(&addr, "dead").unwrap_or_default();
    assert!(
        dead_st["dropped_writes"].as_u64().unwrap_or(0) > 0,
        "no dropped writes counted: {dead_st:#}"
    );
    assert!(
        dead_st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("acknowledged no write")),
        "{failed:#}"
    );
    assert_eq!(
        target_status(&addr, "good").unwrap_or_default()["state"],
        "syncing"
    );
    // The sampler publishes once a second: wait for the series rather than race it.
    let series = |name: &str| {
        let (_, metrics) = http_get(&addr, "/metrics").unwrap_or_default();
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("target=\"dead\""))
            .unwrap_or_default()
            .to_string()
    };
    let mut line = String::new();
    let mut dropped = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        line = series("shardsync_target_failed{");
        dropped = series("shardsync_target_dropped_writes_total{");
        line.ends_with(" 1") && !dropped.is_empty() && !dropped.ends_with(" 0")
    });
    assert!(ok, "metric lines {line:?} {dropped:?}");

    // Stopping reports the failed target (exit 4) and does not wait for it.
    let began = std::time::Instant::now();
    let code = ss.terminate().code();
    assert_eq!(code, Some(4), "{}", ss.log_tail(30));
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "stop waited for the dead target"
    );
    assert!(
        ss.log().contains("target dead: failed"),
        "{}",
        ss.log_tail(20)
    );

    // The target is back, empty: its checkpoint no longer describes it, so it is deleted and
    // the restart full-syncs both targets from one PSYNC.
    dead.restart();
    let ck = std::path::Path::new(&state).join(format!(
        "checkpoint-{}_dead.json",
        src.addr().replace(':', "_")
    ));
    std::fs::remove_file(&ck).expect("the dead target's checkpoint exists");
    let mut ss = run.spawn();
    ss.wait_status(Duration::from_secs(60), "a new full sync applied", |st| {
        sum_shards(st, "full_resyncs") == 1 && synced_shards(st, 1)
    });
    set_keys(&mut sc, "after-restart:", 300);
    let after = now_ms();
    wait_caught_up(&good, after, &ss, "good after restart");
    wait_caught_up(&dead, after, &ss, "revived target after restart");
    assert_equal(&src, &good, "live target after restart");
    assert_equal(&src, &dead, "revived target after restart");
    assert!(ss.terminate().success(), "{}", ss.log_tail(30));
}

#[test]
fn frozen_target_fails_alone_and_a_restart_resumes_from_its_checkpoint() {
    let kind = ServerKind::Redis70;
    let src = RedisServer::start_with(kind, &["--repl-diskless-sync-delay", "0"]);
    let good = RedisServer::start(kind);
    let frozen = RedisServer::start(kind);
    let mut sc = src.client();
    set_keys(&mut sc, "before:", 1000);
    let fast = "reply_timeout_ms = 500\nfail_after_ms = 3000";
    let run = Run::new(
        &src.url(),
        &[("good", good.url(), fast), ("frozen", frozen.url(), fast)],
    );
    let addr = run.addr.clone();
    let mut ss = run.spawn();
    ss.wait_status(Duration::from_secs(60), "the full sync applied", |st| {
        synced_shards(st, 1)
    });
    let t0 = now_ms();
    wait_caught_up(&frozen, t0, &ss, "frozen (before freezing)");
    std::thread::sleep(Duration::from_millis(500)); // a checkpoint of it is written

    frozen.signal(Signal::SIGSTOP);
    set_keys(&mut sc, "during:", 3000);
    wait_failed(&ss, &addr, "frozen");
    set_keys(&mut sc, "after-fail:", 500);
    let after = now_ms();
    wait_caught_up(&good, after, &ss, "the live target");
    assert_equal(&src, &good, "live target while the other is frozen");
    assert_eq!(ss.terminate().code(), Some(4), "{}", ss.log_tail(30));

    frozen.signal(Signal::SIGCONT);
    let mut ss = run.spawn();
    ss.wait_status(Duration::from_secs(30), "a partial resync", resumed);
    set_keys(&mut sc, "after-restart:", 300);
    let after = now_ms();
    wait_caught_up(&good, after, &ss, "good after restart");
    wait_caught_up(&frozen, after, &ss, "thawed target after restart");
    assert_equal(&src, &good, "live target after restart");
    assert_equal(&src, &frozen, "thawed target after restart");
    let st = ss.wait_status(Duration::from_secs(5), "a status", |_| true);
    assert!(resumed(&st), "no full sync after the restart: {st:#}");
    assert!(ss.terminate().success(), "{}", ss.log_tail(30));
}

/// A target frozen while the RDB is being loaded: the loader (a blocking thread waiting on that
/// target's full queue) is released when the target fails, and the other target completes the
/// full sync and then follows the stream.
#[test]
fn target_frozen_during_the_full_sync_fails_alone() {
    let kind = ServerKind::Redis70;
    let src = RedisServer::start_with(kind, &["--repl-diskless-sync-delay", "0"]);
    let good = RedisServer::start(kind);
    let frozen = RedisServer::start(kind);
    let mut sc = src.client();
    for chunk in 0..30 {
        let mut p = redis::pipe();
        for i in 0..10_000 {
            p.cmd("SET")
                .arg(format!("bulk:{chunk}:{i}"))
                .arg("0123456789abcdef0123456789abcdef")
                .ignore();
        }
        p.query::<()>(&mut sc).expect("bulk SETs");
    }
    let fast = "reply_timeout_ms = 300\nfail_after_ms = 3000";
    let run = Run::new(
        &src.url(),
        &[("good", good.url(), fast), ("frozen", frozen.url(), fast)],
    );
    let addr = run.addr.clone();
    let mut ss = run.spawn();
    ss.wait_status(Duration::from_secs(30), "the full sync started", |st| {
        sum_shards(st, "full_resyncs") == 1
    });
    frozen.signal(Signal::SIGSTOP);
    let failed = wait_failed(&ss, &addr, "frozen");
    ss.wait_status(
        Duration::from_secs(120),
        "the full sync applied on the live target",
        |st| synced_shards(st, 1),
    );
    set_keys(&mut sc, "after:", 500);
    let after = now_ms();
    wait_caught_up(&good, after, &ss, "the live target");
    // Every key is a string: compared value by value (pipelined), and the key counts (the
    // heartbeat key is on both).
    let mut gc = good.client();
    let mut groups: Vec<Vec<String>> = (0..30)
        .map(|c| (0..10_000).map(|i| format!("bulk:{c}:{i}")).collect())
        .collect();
    groups.push((0..500).map(|i| format!("after:{i}")).collect());
    for keys in &groups {
        let a: Vec<Option<String>> = redis::cmd("MGET").arg(keys).query(&mut sc).expect("MGET");
        let b: Vec<Option<String>> = redis::cmd("MGET").arg(keys).query(&mut gc).expect("MGET");
        assert!(
            a == b && a.iter().all(Option::is_some),
            "keys from {} on differ",
            keys[0]
        );
    }
    let n = |c: &mut redis::Connection| redis::cmd("DBSIZE").query::<u64>(c).expect("DBSIZE");
    // (The target also holds its exactly-once progress key, left out here.)
    assert_eq!(
        n(&mut sc),
        common::compare::target_dbsize(&mut gc),
        "key counts differ"
    );
    let st = status(&addr).expect("/status");
    assert_eq!(st["shards"][0]["full_sync_done"], true, "{st:#}");
    assert!(
        failed["full_sync_done"] == false,
        "the frozen target never completed its full sync: {failed:#}"
    );
    assert_eq!(ss.terminate().code(), Some(4), "{}", ss.log_tail(30));
    frozen.signal(Signal::SIGCONT);
    assert!(!ss.log().contains("panicked"), "{}", ss.log());
}

/// A cluster source (three shards, each with a leg per target) into a Redis 7.0 and a Redis 6.0
/// target: commands are converted for each target's own server and both equal the source.
#[test]
fn cluster_source_to_a_new_and_an_old_target() {
    let kind = ServerKind::Redis70;
    let src = RedisCluster::start(kind, 3, 0);
    let new = RedisServer::start(ServerKind::Redis70);
    let old = RedisServer::start(ServerKind::Redis60);
    let mut tags = Vec::new();
    for m in src.masters() {
        let tag = (0..100_000)
            .map(|i| format!("t{i}"))
            .find(|t| src.node_for_key(format!("{{{t}}}").as_bytes()).port() == m.port())
            .expect("a tag for every master");
        let opts = DatasetOptions {
            with_functions: false,
            big_value_bytes: 1 << 20,
            ..DatasetOptions::cluster(&tag)
        };
        populate_typed_dataset(&mut m.client(), kind, &opts);
        tags.push(tag);
    }
    let run = Run::new(
        &src.seed_url(),
        &[("new", new.url(), ""), ("old", old.url(), "")],
    );
    let addr = run.addr.clone();
    let mut ss = run.spawn();
    ss.wait_status(Duration::from_secs(120), "3 shards fully synced", |st| {
        synced_shards(st, 3)
    });
    crate::e2e_cluster::workload_cluster(&src, &tags);
    let after = now_ms();
    for dst in [&new, &old] {
        let mut sr = src.reader();
        let mut dc = dst.client();
        let mut dr = Db(&mut dc, 0);
        crate::e2e_cluster::wait_heartbeats(&mut sr, &mut dr, after, &ss);
        // Each converted for its own server: the 7.0 target keeps the 7.0-only stream
        // metadata (entries-added, max-deleted-id), compared wherever the target reports it.
        let diffs = compare_sources(&mut sr, &mut dr, &[b"shardsync:heartbeat*"], &opts());
        if !diffs.is_empty() {
            eprintln!("target {}:", dst.kind().name());
        }
        assert_no_differences(&diffs);
    }
    let st = status(&addr).expect("/status");
    let shards = st["shards"].as_array().cloned().unwrap_or_default();
    assert_eq!(shards.len(), 3, "{st:#}");
    for s in &shards {
        assert_eq!(s["targets"].as_array().map(Vec::len), Some(2), "{st:#}");
        assert_eq!(s["rejected_writes"], 0, "{st:#}");
    }
    assert!(ss.terminate().success(), "{}", ss.log_tail(30));
}

/// The source's own view (`INFO replication`, the offset shardsync's `REPLCONF ACK` reports)
/// follows the slowest target: while one target is frozen (within its `fail_after_ms`) the
/// acknowledged offset stays at what that target applied, then catches up once it is thawed.
#[test]
fn source_is_acknowledged_at_the_slowest_target() {
    let kind = ServerKind::Redis70;
    let src = RedisServer::start_with(kind, &["--repl-diskless-sync-delay", "0"]);
    let fast = RedisServer::start(kind);
    let slow = RedisServer::start(kind);
    let mut sc = src.client();
    let patient = "fail_after_ms = 120000";
    let run = Run::new(
        &src.url(),
        &[("fast", fast.url(), patient), ("slow", slow.url(), patient)],
    );
    let addr = run.addr.clone();
    let mut ss = run.spawn();
    ss.wait_status(Duration::from_secs(60), "the full sync applied", |st| {
        synced_shards(st, 1)
    });
    wait_caught_up(&slow, now_ms(), &ss, "slow (before freezing)");
    // The replica shardsync is, as the source sees it: its acknowledged offset.
    let acked = |c: &mut redis::Connection| -> Option<u64> {
        let info: String = redis::cmd("INFO").arg("replication").query(c).ok()?;
        let line = info.lines().find(|l| l.starts_with("slave0:"))?;
        line.split(',')
            .find_map(|kv| kv.strip_prefix("offset="))?
            .parse()
            .ok()
    };
    let master_offset = |c: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(c)
            .expect("INFO");
        common::util::info_field(&info, "master_repl_offset")
            .and_then(|v| v.parse().ok())
            .expect("master_repl_offset")
    };

    slow.signal(Signal::SIGSTOP);
    set_keys(&mut sc, "while-frozen:", 500);
    let written = master_offset(&mut sc);
    // The fast target gets everything; the source hears only of what the slow one applied.
    let mut fc = fast.client();
    assert!(
        wait_until(Duration::from_secs(20), || {
            redis::cmd("EXISTS")
                .arg("while-frozen:499")
                .query::<i64>(&mut fc)
                .is_ok_and(|n| n == 1)
        }),
        "the fast target did not get the writes:\n{}",
        ss.log_tail(30)
    );
    std::thread::sleep(Duration::from_millis(2500)); // two ACK intervals
    let during = acked(&mut sc).expect("shardsync listed as a replica");
    let slow_applied = target_status(&addr, "slow").unwrap_or_default()["applied_offset"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        during < written && during <= slow_applied,
        "acknowledged {during} while the frozen target applied {slow_applied} of {written}"
    );
    let fast_applied = target_status(&addr, "fast").unwrap_or_default()["applied_offset"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        fast_applied > during,
        "the fast target ({fast_applied}) should be ahead of the acknowledged offset ({during})"
    );

    slow.signal(Signal::SIGCONT);
    assert!(
        wait_until(Duration::from_secs(30), || acked(&mut sc)
            .is_some_and(|a| a >= written)),
        "the acknowledged offset did not catch up after the thaw:\n{}",
        ss.log_tail(30)
    );
    assert_eq!(
        target_status(&addr, "slow").unwrap_or_default()["state"],
        "syncing"
    );
    assert_equal(&src, &slow, "slow target after the thaw");
    assert_equal(&src, &fast, "fast target");
    assert!(ss.terminate().success(), "{}", ss.log_tail(30));
}
