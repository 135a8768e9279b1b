//! The target side under errors, on real servers: a database the target does not have (the
//! precheck fails with the fix; at run time nothing lands elsewhere, nothing repeats, the shard
//! is `failed`), `load-rdb` of such a file, a target that stops answering (a stall in the log
//! and `/status`, reconnects, a bounded stop with exit code 4), and writes the target rejects
//! although the source accepted them, repaired by copying the keys from the source.

use crate::common;
use crate::common::util::now_ms;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{RedisCluster, StandaloneReader, compare_sources};
use common::compare::{CompareOptions, assert_no_differences, compare_servers_with};
use common::status::{every_shard, started, status_addr_arg, sum_shards};
use common::*;

const HEARTBEAT: &str = "shardsync:heartbeat";

/// `GET path` → body (panics when shardsync does not answer).
fn http_body(addr: &str, path: &str) -> String {
    util::http_get(addr, path)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .1
}

fn status(addr: &str) -> serde_json::Value {
    let body = http_body(addr, "/status");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

/// Sum of the samples of `name` whose series contain every `needle`.
fn metric_sum(metrics: &str, name: &str, needles: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Where `/metrics` and `/status` are served, once replication started (`/status` says so).
fn metrics_addr(ss: &mut Shardsync) -> String {
    ss.wait_status(Duration::from_secs(30), "replication started", started);
    ss.status_addr().expect("a fixed --metrics-addr")
}

fn heartbeat_reached(dst: &mut redis::Connection, after: u64) -> bool {
    let v: Option<String> = redis::cmd("GET").arg(HEARTBEAT).query(dst).unwrap_or(None);
    v.and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|v| v >= after)
}

/// Waits until a heartbeat written after now has reached `dst` (db 0).
fn wait_caught_up(ss: &Shardsync, dst: &mut redis::Connection) {
    let after = now_ms();
    assert!(
        wait_until(Duration::from_secs(60), || heartbeat_reached(dst, after)),
        "the target never caught up; shardsync log:\n{}",
        ss.log_tail(60)
    );
}

/// `run` with `/status` on a free port (the tests wait on it).
fn spawn_run(src: &str, dst: &str, state: &tempfile::TempDir) -> Shardsync {
    let state_dir = state.path().to_str().expect("utf-8 temp path");
    Shardsync::spawn(&[
        "run",
        "--source",
        src,
        "--target",
        dst,
        "--state-dir",
        state_dir,
        "--metrics-addr",
        &status_addr_arg(),
    ])
}

fn get_i64(conn: &mut redis::Connection, db: u32, key: &str) -> Option<i64> {
    util::select(conn, db);
    let v: Option<i64> = redis::cmd("GET").arg(key).query(conn).expect("GET");
    util::select(conn, 0);
    v
}

/// Source `databases 32` with keys in db 20, target with 16: the check fails naming the fix;
/// at run time the writes of db 20 are refused, never land in another db, never repeat, and
/// the shard is `failed` in /status with the fix; writes of valid dbs are exact.
#[test]
fn database_beyond_the_target_fails_check_and_never_lands_elsewhere() {
    let src = RedisServer::start_with(
        ServerKind::Redis70,
        &["--databases", "32", "--repl-diskless-sync-delay", "0"],
    );
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut sc = src.client();
    let mut dc = dst.client();
    util::select(&mut sc, 20);
    util::run(
        &mut sc,
        redis::cmd("SET").arg("early").arg("1"),
        "SET db 20",
    );
    util::select(&mut sc, 0);

    let (su, du) = (src.url(), dst.url());
    let (checked, out) = Shardsync::run_to_exit(
        &["check", "--source", &su, "--target", &du],
        Duration::from_secs(60),
    );
    assert_eq!(checked.code(), Some(3), "check must fail:\n{out}");
    assert!(
        out.contains("[20]") && out.contains("databases 21") && out.contains("db_map"),
        "the check must name the database and the fix:\n{out}"
    );

    // Run with db 20 empty at start (so the precheck passes), then write into it.
    util::select(&mut sc, 20);
    util::run(&mut sc, &redis::cmd("FLUSHDB"), "FLUSHDB");
    util::select(&mut sc, 0);
    let state = tempfile::tempdir().expect("state dir");
    let mut ss = spawn_run(&su, &du, &state);
    let addr = metrics_addr(&mut ss);
    wait_caught_up(&ss, &mut dc);

    for _ in 0..5 {
        for db in [1u32, 20, 1] {
            util::select(&mut sc, db);
            util::run(&mut sc, redis::cmd("INCR").arg("counter"), "INCR");
        }
    }
    util::select(&mut sc, 0);
    util::run(&mut sc, redis::cmd("INCR").arg("counter0"), "INCR");
    wait_caught_up(&ss, &mut dc);
    ss.wait_status(Duration::from_secs(10), "db 20 refused", |st| {
        every_shard(st, |sh| {
            sh["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("refused SELECT 20"))
        })
    });

    // Let any resend loop show itself, then check exact counts.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        get_i64(&mut dc, 1, "counter"),
        Some(10),
        "db 1 must be exact"
    );
    assert_eq!(
        get_i64(&mut dc, 0, "counter0"),
        Some(1),
        "db 0 must be exact"
    );
    let keys0: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut dc).expect("KEYS");
    let mut keys0: Vec<String> = keys0
        .into_iter()
        .filter(|k| k != HEARTBEAT && !k.as_bytes().starts_with(compare::PROGRESS_PREFIX))
        .collect();
    keys0.sort();
    assert_eq!(
        keys0,
        vec!["counter0".to_string()],
        "nothing of db 20 may land in db 0"
    );
    let all = target_dbsize_all(&mut dc);
    assert!(
        all.keys().all(|&db| db == 0 || db == 1),
        "keys in unexpected dbs: {all:?}"
    );

    let st = status(&addr);
    assert_eq!(st["state"], "failed", "/status: {st}");
    let err = st["shards"][0]["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("SELECT 20") && err.contains("databases") && err.contains("db_map"),
        "/status last_error must name the db and the fix: {st}"
    );
    let m = http_body(&addr, "/metrics");
    let refused = metric_sum(&m, "shardsync_db_refused_writes_total", &[]);
    assert_eq!(refused, 5.0, "refused writes counted once each:\n{m}");
    let log = ss.log();
    assert_eq!(
        log.matches("refused SELECT 20").count(),
        1,
        "the refusal is logged once, not in a loop:\n{}",
        ss.log_tail(40)
    );
    assert!(
        !log.contains("target connection failed"),
        "a SELECT error is not a connection failure:\n{}",
        ss.log_tail(40)
    );

    let code = ss.terminate();
    assert_eq!(
        code.code(),
        Some(4),
        "a stop with refused writes is not a success:\n{}",
        ss.log_tail(20)
    );
}

/// `load-rdb` of a file with keys in a database the target lacks: a clear error, nothing
/// written, no hang.
#[test]
fn load_rdb_with_a_database_beyond_the_target_errors() {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--databases", "32"]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut sc = src.client();
    util::run(&mut sc, redis::cmd("SET").arg("a").arg("0"), "SET");
    util::select(&mut sc, 20);
    util::run(&mut sc, redis::cmd("SET").arg("b").arg("20"), "SET");
    util::run(&mut sc, &redis::cmd("SAVE"), "SAVE");
    let file = src.dir().join("dump.rdb");
    let du = dst.url();
    let started = Instant::now();
    let (status, out) = Shardsync::run_to_exit(
        &[
            "load-rdb",
            "--file",
            file.to_str().expect("utf-8"),
            "--target",
            &du,
        ],
        Duration::from_secs(60),
    );
    assert!(!status.success(), "must fail:\n{out}");
    assert!(
        out.contains("[20]") && out.contains("databases 21"),
        "must name the db and the fix:\n{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "took too long");
    let mut dc = dst.client();
    assert!(
        target_dbsize_all(&mut dc).is_empty(),
        "nothing may be written"
    );
}

/// A TCP proxy in front of a real server that can go silent: it keeps accepting and reading
/// but forwards nothing (the target "never answers").
struct SilentProxy {
    port: u16,
    silent: Arc<AtomicBool>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl SilentProxy {
    fn start(upstream: u16) -> SilentProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let silent = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, a) = (silent.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let silent = s.clone();
                if silent.load(Ordering::SeqCst) {
                    // Read and discard forever.
                    std::thread::spawn(move || {
                        let mut c = client;
                        let mut buf = [0u8; 65536];
                        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                    });
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c1, mut u1) = (
                    client.try_clone().expect("clone"),
                    up.try_clone().expect("clone"),
                );
                let s1 = silent.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = c1.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if !s1.load(Ordering::SeqCst) && u1.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
                let (mut c2, mut u2) = (client, up);
                let s2 = silent.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = u2.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if !s2.load(Ordering::SeqCst) && c2.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        SilentProxy {
            port,
            silent,
            accepted,
        }
    }
}

/// The target stops answering mid-run: a stall in the log and /status within the deadline,
/// reconnect attempts, and a stop that is bounded, says what is pending and exits 4.
#[test]
fn silent_target_is_a_visible_stall_and_a_bounded_stop() {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let proxy = SilentProxy::start(dst.port());
    let mut sc = src.client();
    let mut dc = dst.client();
    let state = tempfile::tempdir().expect("state dir");
    let config = state.path().join("shardsync.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[source]\nurl = \"{}\"\n[target]\nurl = \"redis://127.0.0.1:{}\"\nreply_timeout_ms = 2000\n",
            state.path().join("state").display().to_string(),
            src.url(),
            proxy.port
        ),
    )
    .expect("write config");
    let mut ss = Shardsync::spawn(&[
        "run",
        "--config",
        config.to_str().expect("utf-8"),
        "--metrics-addr",
        &status_addr_arg(),
    ]);
    let addr = metrics_addr(&mut ss);
    wait_caught_up(&ss, &mut dc);

    proxy.silent.store(true, Ordering::SeqCst);
    let silenced = Instant::now();
    let before = proxy.accepted.load(Ordering::SeqCst);
    for i in 0..20 {
        util::run(&mut sc, redis::cmd("RPUSH").arg("list").arg(i), "RPUSH");
    }
    ss.wait_status(Duration::from_secs(10), "a target stall", |st| {
        every_shard(st, |sh| {
            sh["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("stalled"))
        })
    });
    let seen_after = silenced.elapsed();
    assert!(
        seen_after < Duration::from_secs(8),
        "stall reported after {seen_after:?} with a 2 s deadline"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            status(&addr)["shards"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("stalled"))
        }),
        "/status does not show the stall: {}",
        status(&addr)
    );
    assert!(
        wait_until(Duration::from_secs(15), || proxy
            .accepted
            .load(Ordering::SeqCst)
            >= before + 2),
        "no reconnect attempts; log:\n{}",
        ss.log_tail(30)
    );
    let m = http_body(&addr, "/metrics");
    assert!(
        metric_sum(&m, "shardsync_target_stalls_total", &[]) >= 1.0,
        "stalls not counted:\n{m}"
    );

    let stop = Instant::now();
    let code = ss.terminate();
    let took = stop.elapsed();
    assert!(
        took < Duration::from_secs(16),
        "stop took {took:?} with a dead target"
    );
    assert_eq!(
        code.code(),
        Some(4),
        "a stop with unacknowledged writes must not exit 0:\n{}",
        ss.log_tail(30)
    );
    let log = ss.log();
    assert!(
        log.contains("did not acknowledge") && log.contains("bytes of the source stream"),
        "the stop must say what is pending:\n{}",
        ss.log_tail(30)
    );
}

/// Runs shardsync from `src` into a standalone `dst`, applies `work` on the source, waits for
/// the repair and the catch-up, and compares db 0 key by key.
fn repaired_standalone(
    src_kind: ServerKind,
    dst_kind: ServerKind,
    setup: impl FnOnce(&mut redis::Connection),
    diverge: impl FnOnce(&mut redis::Connection),
    work: impl FnOnce(&mut redis::Connection),
    repaired_key: &str,
) {
    let src = RedisServer::start_with(src_kind, &["--repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start(dst_kind);
    let mut sc = src.client();
    let mut dc = dst.client();
    setup(&mut sc);
    let state = tempfile::tempdir().expect("state dir");
    let mut ss = spawn_run(&src.url(), &dst.url(), &state);
    ss.wait_status(Duration::from_secs(30), "replication started", started);
    wait_caught_up(&ss, &mut dc);
    diverge(&mut dc);
    work(&mut sc);
    ss.wait_status(Duration::from_secs(20), "a key repaired", |st| {
        sum_shards(st, "key_repairs") >= 1
    });
    assert!(
        ss.log().contains(repaired_key),
        "the repair log must name the key {repaired_key}:\n{}",
        ss.log_tail(30)
    );
    wait_caught_up(&ss, &mut dc);
    let diffs = compare_servers_with(
        &mut sc,
        &mut dc,
        &[0],
        &[HEARTBEAT.as_bytes()],
        &CompareOptions::default(),
    );
    assert_no_differences(&diffs);
    let code = ss.terminate();
    assert!(code.success(), "exit {code:?}:\n{}", ss.log_tail(30));
}

/// A command the older target does not know and that has no rewrite (`GEOSEARCHSTORE … BYBOX`,
/// 6.2+, into 6.0: the `BYRADIUS` form becomes `GEORADIUS … STORE`, a box has no 6.0 form): the
/// destination key is copied from the source.
#[test]
fn unknown_command_on_an_older_target_is_repaired() {
    repaired_standalone(
        ServerKind::Redis70,
        ServerKind::Redis60,
        |sc| {
            util::run(sc, &common::dataset::geoadd_places(), "GEOADD");
        },
        |_| {},
        |sc| {
            util::run(
                sc,
                &common::dataset::geosearchstore_near(),
                "GEOSEARCHSTORE",
            );
            // Later writes of the key after the repair still apply.
            util::run(
                sc,
                redis::cmd("ZADD").arg("near").arg("1").arg("extra"),
                "ZADD",
            );
        },
        "near",
    );
}

/// A key changed to another type by hand on the target mid-run: the next write gets
/// `WRONGTYPE`, and the key is copied from the source.
#[test]
fn wrongtype_after_divergence_is_repaired() {
    repaired_standalone(
        ServerKind::Redis70,
        ServerKind::Redis70,
        |sc| {
            util::run(
                sc,
                redis::cmd("RPUSH").arg("jobs").arg("a").arg("b"),
                "RPUSH",
            );
            util::run(sc, redis::cmd("SET").arg("other").arg("x"), "SET");
        },
        |dc| {
            util::run(dc, redis::cmd("DEL").arg("jobs"), "DEL");
            util::run(dc, redis::cmd("SET").arg("jobs").arg("diverged"), "SET");
        },
        |sc| {
            for i in 0..5 {
                util::run(sc, redis::cmd("RPUSH").arg("jobs").arg(i), "RPUSH");
            }
            util::run(sc, redis::cmd("LPOP").arg("jobs"), "LPOP");
        },
        "jobs",
    );
}

/// `SORT … BY pattern … STORE dst` into a cluster target (BY patterns of another slot are
/// denied in cluster mode): `dst` is copied from the source.
#[test]
fn sort_by_store_into_a_cluster_is_repaired() {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync-delay", "0"]);
    let cluster = RedisCluster::start(ServerKind::Redis70, 3, 0);
    let mut sc = src.client();
    util::run(
        &mut sc,
        redis::cmd("RPUSH").arg("{t}src").arg("3").arg("1").arg("2"),
        "RPUSH",
    );
    for (k, w) in [("w_1", "30"), ("w_2", "10"), ("w_3", "20")] {
        util::run(&mut sc, redis::cmd("SET").arg(k).arg(w), "SET");
    }
    let state = tempfile::tempdir().expect("state dir");
    let seed = cluster.seed_url();
    let mut ss = spawn_run(&src.url(), &seed, &state);
    ss.wait_status(Duration::from_secs(30), "replication started", started);
    let hb_node = cluster.node_for_key(HEARTBEAT.as_bytes());
    let mut hc = hb_node.client();
    wait_caught_up(&ss, &mut hc);

    util::run(
        &mut sc,
        redis::cmd("SORT")
            .arg("{t}src")
            .arg("BY")
            .arg("w_*")
            .arg("STORE")
            .arg("{t}dst"),
        "SORT",
    );
    util::run(
        &mut sc,
        redis::cmd("RPUSH").arg("{t}dst").arg("after"),
        "RPUSH",
    );
    ss.wait_status(Duration::from_secs(20), "a key repaired", |st| {
        sum_shards(st, "key_repairs") >= 1
    });
    wait_caught_up(&ss, &mut hc);
    let mut reader = cluster.reader();
    let diffs = compare_sources(
        &mut StandaloneReader(&mut sc),
        &mut reader,
        &[HEARTBEAT.as_bytes()],
        &CompareOptions::default(),
    );
    assert_no_differences(&diffs);
    let want: Vec<String> = redis::cmd("LRANGE")
        .arg("{t}dst")
        .arg(0)
        .arg(-1)
        .query(&mut sc)
        .expect("LRANGE");
    assert_eq!(want, vec!["2", "3", "1", "after"], "source result itself");
    let code = ss.terminate();
    assert!(code.success(), "exit {code:?}:\n{}", ss.log_tail(30));
}
