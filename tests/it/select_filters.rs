//! Database selection (`sync.dbs`, with `db_map`), key filters (prefix / regex include and
//! exclude) and the command deny-list, end to end on real servers: data loaded before the start
//! goes through the full sync (RDB), then writes in every database — multi-key commands whose
//! keys get different verdicts, `RENAME`, `COPY`, `MOVE` across the selection, scripts on a 6.x
//! source (propagated as `EVAL` with declared keys), a denied `FLUSHDB` and a `SWAPDB` across
//! the selection — go through the incremental sync. The expectation is computed key by key
//! from the source with the filter rules written out independently here: every kept source key
//! equals its copy in the mapped target database, and the target holds no other key.
//! `shardsync verify` with the same settings must agree (exit 0) and without them must not.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::compare::{CompareOptions, assert_no_differences, compare_key, scan_keys};
use common::util::{run, select};
use common::*;

const HEARTBEAT: &str = "shardsync:heartbeat";

/// The rules of the config below, written out by hand (not shardsync's code).
fn kept(db: u32, key: &[u8]) -> bool {
    let selected = db == 0 || db == 3;
    let k = String::from_utf8_lossy(key);
    let included = k.starts_with("keep:") || is_re_key(&k);
    selected && included && !k.starts_with("keep:tmp:")
}

fn is_re_key(k: &str) -> bool {
    k.strip_prefix("re:")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn target_db(db: u32) -> u32 {
    if db == 3 { 1 } else { db }
}

const CONFIG: &str = r#"
[sync]
dbs = [0, 3]
db_map = { "3" = 1 }
[sync.filter]
include_prefixes = ["keep:"]
include_regex = ["^re:[0-9]+$"]
exclude_prefixes = ["keep:tmp:"]
deny_commands = ["FLUSHDB"]
"#;

fn cmd(c: &mut redis::Connection, args: &[&str]) {
    let mut r = redis::cmd(args[0]);
    for a in &args[1..] {
        r.arg(*a);
    }
    run(c, &r, &args.join(" "));
}

/// Every source key of databases 0–4 checked against the target (see the module doc).
fn assert_filtered_copy(src: &mut redis::Connection, dst: &mut redis::Connection) -> usize {
    let expected = common::selection::Expected {
        dbs: 0..5,
        kept: &kept,
        target_db: &target_db,
        ignore: &[],
        opts: CompareOptions::default(),
    };
    common::selection::assert_selected_copy(src, dst, &expected)
}

/// Writes keys of every kind of verdict into `db`.
fn fill(c: &mut redis::Connection, db: u32, tag: &str) {
    select(c, db);
    for i in 0..30 {
        for p in ["keep:", "keep:tmp:", "drop:", "re:", "re:x"] {
            cmd(c, &["SET", &format!("{p}{tag}{i}"), &format!("v{db}-{i}")]);
        }
        cmd(c, &["SET", &format!("re:{db}{i}"), "n"]);
    }
    cmd(c, &["RPUSH", &format!("keep:list{tag}"), "a", "b", "c"]);
    cmd(c, &["HSET", &format!("keep:hash{tag}"), "f", "v", "g", "w"]);
    cmd(c, &["SADD", &format!("keep:set{tag}"), "m1", "m2"]);
    cmd(c, &["SADD", &format!("drop:set{tag}"), "m1", "m2"]);
    cmd(c, &["ZADD", &format!("keep:z{tag}"), "1", "a", "2", "b"]);
    cmd(c, &["XADD", &format!("keep:st{tag}"), "1-1", "f", "v"]);
    cmd(c, &["SET", &format!("keep:ttl{tag}"), "v", "PX", "600000"]);
    select(c, 0);
}

/// Writes during the incremental sync: mixed verdicts, renames, copies, moves.
fn live_writes(c: &mut redis::Connection, scripts: bool) {
    // One value the filters let through is written last in each db run, so the waits below
    // see a quiet stream.
    for db in 0..5u32 {
        select(c, db);
        cmd(
            c,
            &[
                "MSET",
                "keep:m1",
                "1",
                "drop:m1",
                "2",
                "re:77",
                "3",
                "keep:tmp:m",
                "4",
            ],
        );
        cmd(c, &["DEL", "keep:a0", "drop:a0", "keep:tmp:a0"]);
        cmd(c, &["UNLINK", "keep:a1", "drop:a1"]);
        cmd(c, &["SMOVE", "drop:seta", "keep:seta", "m1"]);
        cmd(c, &["SMOVE", "keep:seta", "drop:seta", "m2"]);
        // RENAME out of the filter (the kept source disappears), into it (the kept destination
        // appears with a value shardsync never saw).
        cmd(c, &["RENAME", "keep:a2", "drop:renamed"]);
        cmd(c, &["RENAME", "drop:a3", "keep:renamed"]);
        cmd(c, &["COPY", "drop:a4", "keep:copied"]);
        cmd(c, &["COPY", "keep:a5", "drop:copied"]);
        cmd(c, &["LMOVE", "keep:lista", "drop:list2", "LEFT", "RIGHT"]);
        cmd(c, &["INCR", "re:counter"]);
        cmd(c, &["INCR", "re:9999"]);
        if scripts {
            // Scripts by their declared keys: both kept, mixed, none kept.
            cmd(
                c,
                &[
                    "EVAL",
                    "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1])",
                    "2",
                    "keep:e1",
                    "keep:e2",
                    "x",
                ],
            );
            cmd(
                c,
                &[
                    "EVAL",
                    "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1])",
                    "2",
                    "keep:e3",
                    "drop:e3",
                    "y",
                ],
            );
            cmd(
                c,
                &[
                    "EVAL",
                    "redis.call('SET', KEYS[1], ARGV[1])",
                    "1",
                    "drop:e4",
                    "z",
                ],
            );
        }
    }
    // MOVE within the selection (0 → 3, i.e. target 0 → 1), out of it (0 → 2: a DEL on the
    // target), into it (2 → 3: copied from the source), outside (2 → 4).
    select(c, 0);
    cmd(c, &["SET", "keep:mv1", "within"]);
    cmd(c, &["MOVE", "keep:mv1", "3"]);
    cmd(c, &["SET", "keep:mv2", "out"]);
    cmd(c, &["MOVE", "keep:mv2", "2"]);
    select(c, 2);
    cmd(c, &["HSET", "keep:mv3", "f", "into"]);
    cmd(c, &["MOVE", "keep:mv3", "3"]);
    cmd(c, &["SET", "keep:mv4", "outside"]);
    cmd(c, &["MOVE", "keep:mv4", "4"]);
    // COPY … DB into the selection from an unselected db, and between selected ones.
    cmd(c, &["SET", "keep:cp1", "from2"]);
    cmd(c, &["COPY", "keep:cp1", "keep:fromdb2", "DB", "0"]);
    select(c, 0);
    cmd(c, &["SET", "keep:cp2", "from0"]);
    cmd(c, &["COPY", "keep:cp2", "keep:from0", "DB", "3"]);
    select(c, 3);
    cmd(c, &["SET", "keep:last", "1"]);
    select(c, 0);
}

fn start_run(
    src: &RedisServer,
    dst: &RedisServer,
    config: &std::path::Path,
    metrics: &str,
) -> Shardsync {
    let state = tempfile::tempdir().expect("state dir").keep();
    Shardsync::spawn(&[
        "run",
        "--config",
        config.to_str().expect("utf-8"),
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--metrics-addr",
        metrics,
        "--state-dir",
        state.to_str().expect("utf-8"),
    ])
}

fn wait_key(dst: &RedisServer, db: u32, key: &str, run: &mut Shardsync) {
    let mut t = dst.client();
    select(&mut t, db);
    let ok = wait_until(Duration::from_secs(60), || {
        redis::cmd("EXISTS")
            .arg(key)
            .query::<u64>(&mut t)
            .unwrap_or(0)
            == 1
    });
    assert!(
        ok,
        "{key} never reached target db {db}:\n{}",
        run.log_tail(60)
    );
}

/// Keys the target should hold per target database, from the source and [`kept`].
fn expected_sizes(src: &mut redis::Connection) -> std::collections::BTreeMap<u32, u64> {
    let mut m = std::collections::BTreeMap::new();
    for db in 0..5u32 {
        select(src, db);
        let n = scan_keys(src)
            .iter()
            .filter(|k| kept(db, k) && k.as_slice() != HEARTBEAT.as_bytes())
            .count() as u64;
        if n > 0 {
            *m.entry(target_db(db)).or_insert(0) += n;
        }
    }
    select(src, 0);
    m
}

fn scenario(source_kind: ServerKind) {
    // A 6.x source propagates scripts verbatim (EVAL with its declared keys) when asked to.
    let extra: &[&str] = if source_kind.has_redis70_commands() {
        &[]
    } else {
        &["--lua-replicate-commands", "no"]
    };
    let src = RedisServer::start_with(source_kind, extra);
    let dst = RedisServer::start(ServerKind::Redis70);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("shardsync.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let mut c = src.client();
    for db in 0..5 {
        fill(&mut c, db, "");
        fill(&mut c, db, "a");
    }
    let metrics = format!("127.0.0.1:{}", common::server::pick_free_port(false));
    let mut run = start_run(&src, &dst, &config, &metrics);
    let mut sc = src.client();
    let mut dc = dst.client();
    // Full sync done when the target holds as many keys per database as expected (the
    // heartbeat key aside).
    let want = expected_sizes(&mut sc);
    let done = wait_until(Duration::from_secs(60), || {
        let mut got = target_dbsize_all(&mut dc);
        if let Some(n) = got.get_mut(&0) {
            *n -= redis::cmd("EXISTS")
                .arg(HEARTBEAT)
                .query::<u64>(&mut dc)
                .unwrap_or(0);
        }
        got.retain(|_, n| *n > 0);
        got == want
    });
    assert!(
        done,
        "full sync: target {:?}, expected {want:?}\n{}",
        dbsize_all(&mut dc),
        run.log_tail(40)
    );
    let n = assert_filtered_copy(&mut sc, &mut dc);
    assert!(n > 250, "only {n} keys kept");

    live_writes(&mut c, true);
    wait_key(&dst, 1, "keep:last", &mut run);
    // Repairs (copies from the source) ride on the next run of commands: give them one.
    cmd(&mut c, &["SET", "keep:final", "1"]);
    wait_key(&dst, 0, "keep:final", &mut run);
    let checked = assert_filtered_copy(&mut sc, &mut dc);
    assert!(checked > 250, "{checked}");

    // verify with the same settings agrees; without them it sees the filtered keys as missing.
    let base = [
        "verify",
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--rate",
        "0",
        "--recheck-ms",
        "500",
    ];
    let mut with_cfg = base.to_vec();
    with_cfg.extend(["--config", config.to_str().expect("utf-8")]);
    let (status, out) = Shardsync::run_to_exit(&with_cfg, Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{out}");
    let (status, out) = Shardsync::run_to_exit(&base, Duration::from_secs(120));
    assert_eq!(status.code(), Some(1), "{out}");

    // The denied FLUSHDB: the target keeps db 0.
    let before = dbsize_all(&mut dc).get(&0).copied().unwrap_or(0);
    cmd(&mut c, &["FLUSHDB"]);
    cmd(&mut c, &["SET", "keep:after-flush", "1"]);
    wait_key(&dst, 0, "keep:after-flush", &mut run);
    let after = dbsize_all(&mut dc).get(&0).copied().unwrap_or(0);
    assert_eq!(after, before + 1, "the denied FLUSHDB reached the target");

    // SWAPDB across the selection cannot be applied: refused, the shard is flagged.
    cmd(&mut c, &["SWAPDB", "0", "2"]);
    run.wait_status(Duration::from_secs(30), "the SWAPDB refused", |st| {
        common::status::shards(st).iter().any(|s| {
            s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("swapped a selected and an unselected database"))
        })
    });
    // Every rule was counted.
    let (_, body) = common::util::http_get(&metrics, "/metrics").expect("/metrics");
    let sum = |metric: &str, label: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(metric) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for rule in [
        "db",
        "key",
        "denied",
        "split",
        "repair",
        "move_out",
        "swapdb_refused",
    ] {
        let label = format!("rule=\"{rule}\"");
        assert!(
            sum("shardsync_filtered_commands_total", &label) > 0.0,
            "rule {rule} never counted:\n{body}"
        );
    }
    assert!(sum("shardsync_filtered_rdb_keys_total", "rule=\"db\"") > 0.0);
    assert!(sum("shardsync_filtered_rdb_keys_total", "rule=\"key\"") > 0.0);
    run.terminate();
}

#[test]
fn dbs_and_filters_redis70_full_and_incremental() {
    scenario(ServerKind::Redis70);
}

#[test]
fn dbs_and_filters_redis62_scripts_by_declared_keys() {
    scenario(ServerKind::Redis62);
}

/// A standalone source into a cluster target: `dbs = [0, 3]` with `db_map 3 = 0`, an exclude
/// prefix; multi-key commands are first reduced by the filters, then split per slot. The
/// cluster's keys must be exactly the kept keys of source databases 0 and 3 (distinct names),
/// each equal to its source.
#[test]
fn dbs_and_filters_into_a_cluster_target() {
    use common::cluster::{KeySource, RedisCluster};
    let src = RedisServer::start(ServerKind::Redis70);
    let dst = RedisCluster::start(ServerKind::Redis70, 3, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("shardsync.toml");
    std::fs::write(
        &config,
        "[sync]\ndbs = [0, 3]\ndb_map = { \"3\" = 0 }\n[sync.filter]\nexclude_prefixes = [\"drop\"]\n",
    )
    .expect("write config");
    let keep = |db: u32, k: &[u8]| (db == 0 || db == 3) && !k.starts_with(b"drop");
    let mut c = src.client();
    for (db, p) in [(0u32, ""), (3, "three:"), (5, "five:")] {
        select(&mut c, db);
        for i in 0..200 {
            cmd(&mut c, &["SET", &format!("{p}k{i}"), &format!("{db}-{i}")]);
            cmd(&mut c, &["SET", &format!("drop:{p}k{i}"), "x"]);
        }
        cmd(&mut c, &["HSET", &format!("{p}hash"), "f", "v"]);
    }
    select(&mut c, 0);
    let state = tempfile::tempdir().expect("state dir");
    let mut run = Shardsync::spawn(&[
        "run",
        "--config",
        config.to_str().expect("utf-8"),
        "--source",
        &src.url(),
        "--target",
        &dst.seed_url(),
        "--metrics-addr",
        "off",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    // Incremental: mixed verdicts across slots, in both selected databases and an unselected one.
    let live = |c: &mut redis::Connection, p: &str| {
        cmd(
            c,
            &[
                "MSET",
                &format!("{p}m1"),
                "1",
                &format!("drop:{p}m1"),
                "2",
                &format!("{p}m2"),
                "3",
            ],
        );
        cmd(
            c,
            &[
                "DEL",
                &format!("{p}k1"),
                &format!("drop:{p}k1"),
                &format!("{p}k2"),
            ],
        );
        cmd(c, &["RENAME", &format!("{p}k3"), &format!("drop:{p}r3")]);
        cmd(c, &["RENAME", &format!("drop:{p}k4"), &format!("{p}r4")]);
        cmd(c, &["HSET", &format!("{p}hash"), "g", "w"]);
    };
    for (db, p) in [(0u32, ""), (3, "three:"), (5, "five:")] {
        select(&mut c, db);
        live(&mut c, p);
    }
    select(&mut c, 0);
    cmd(&mut c, &["SET", "last", "1"]);
    // Expected: the kept keys of databases 0 and 3.
    let mut expected: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut sc = src.client();
    for db in [0u32, 3, 5] {
        select(&mut sc, db);
        for k in scan_keys(&mut sc) {
            if keep(db, &k) && k != HEARTBEAT.as_bytes() {
                expected.push((db, k));
            }
        }
    }
    let want: BTreeSet<Vec<u8>> = expected.iter().map(|(_, k)| k.clone()).collect();
    let mut reader = dst.reader();
    let done = wait_until(Duration::from_secs(90), || {
        let mut got = reader.all_keys();
        got.remove(HEARTBEAT.as_bytes());
        got == want
    });
    let mut got = reader.all_keys();
    got.remove(HEARTBEAT.as_bytes());
    assert!(
        done,
        "missing {:?}\nextra {:?}\n{}",
        want.difference(&got).take(10).collect::<Vec<_>>(),
        got.difference(&want).take(10).collect::<Vec<_>>(),
        run.log_tail(40)
    );
    let mut diffs = Vec::new();
    for (db, k) in &expected {
        select(&mut sc, *db);
        diffs.extend(compare_key(
            *db,
            k,
            &mut sc,
            reader.conn_for(k),
            &CompareOptions::default(),
        ));
    }
    assert_no_differences(&diffs);
    assert!(want.len() > 400, "{}", want.len());
    run.terminate();
}

/// A repeated full sync with `on_resync = clear` under a selection clears only what the run
/// syncs: a key deleted on the source while shardsync was stopped goes, but target keys in an
/// unselected database and keys outside the key filter stay (a `FLUSHALL` would remove them).
#[test]
fn repeated_full_sync_clears_only_the_selection() {
    let mut src = RedisServer::start_with(
        ServerKind::Redis70,
        &["--appendonly", "yes", "--appendfsync", "always"],
    );
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut c = src.client();
    for i in 0..50 {
        cmd(&mut c, &["SET", &format!("app:{i}"), &i.to_string()]);
    }
    select(&mut c, 2);
    cmd(&mut c, &["SET", "app:unselected", "x"]);
    select(&mut c, 0);
    let mut d = dst.client();
    cmd(&mut d, &["SET", "zz:foreign", "stays"]);
    select(&mut d, 5);
    cmd(&mut d, &["SET", "app:foreign", "stays"]);
    select(&mut d, 0);
    let state = tempfile::tempdir().expect("state dir");
    let args = [
        "run",
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--dbs",
        "0",
        "--include-prefix",
        "app:",
        "--on-resync",
        "clear",
        "--metrics-addr",
        "off",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]
    .map(String::from);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut run = Shardsync::spawn(&argv);
    wait_key(&dst, 0, "app:49", &mut run);
    run.terminate();
    // Deleted while shardsync is stopped; the restart gives the source a new replication ID.
    cmd(&mut c, &["DEL", "app:7"]);
    drop(c);
    src.kill();
    src.restart();
    let mut run = Shardsync::spawn(&argv);
    assert!(
        wait_until(Duration::from_secs(60), || {
            run.log()
                .contains("cleared the shard's keys from the target")
                && redis::cmd("EXISTS")
                    .arg("app:7")
                    .query::<u64>(&mut d)
                    .unwrap_or(1)
                    == 0
                && redis::cmd("EXISTS")
                    .arg("app:49")
                    .query::<u64>(&mut d)
                    .unwrap_or(0)
                    == 1
        }),
        "the repeated full sync did not clear app:7:\n{}",
        run.log_tail(40)
    );
    let mut sc = src.client();
    let keys: BTreeSet<Vec<u8>> = scan_keys(&mut d)
        .into_iter()
        .filter(|k| k.starts_with(b"app:"))
        .collect();
    let source_keys: BTreeSet<Vec<u8>> = scan_keys(&mut sc)
        .into_iter()
        .filter(|k| k.starts_with(b"app:"))
        .collect();
    assert_eq!(
        keys, source_keys,
        "target db 0 (app:*) differs from the source"
    );
    let get = |d: &mut redis::Connection, k: &str| -> Option<String> {
        redis::cmd("GET").arg(k).query(d).expect("GET")
    };
    assert_eq!(get(&mut d, "zz:foreign").as_deref(), Some("stays"));
    select(&mut d, 5);
    assert_eq!(get(&mut d, "app:foreign").as_deref(), Some("stays"));
    select(&mut d, 2);
    assert_eq!(get(&mut d, "app:unselected"), None);
    run.terminate();
}

/// The precheck's `selection and filters` row: shows the selection, names source databases
/// with keys that are skipped, and fails on a database the source does not have; bad filter
/// settings are configuration errors naming the setting.
#[test]
fn check_shows_the_selection_and_refuses_a_missing_database() {
    let src = RedisServer::start(ServerKind::Redis70);
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut c = src.client();
    select(&mut c, 4);
    cmd(&mut c, &["SET", "k", "v"]);
    let state = tempfile::tempdir().expect("state dir");
    let base = [
        "check",
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--state-dir",
        state.path().to_str().expect("utf-8"),
        "--format",
        "json",
    ];
    let row = |out: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
        v["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == "selection and filters")
            .cloned()
            .expect("row")
    };
    let mut a = base.to_vec();
    a.extend([
        "--dbs",
        "0,3",
        "--exclude-regex",
        "^tmp:",
        "--deny-command",
        "flushall",
    ]);
    let (status, out) = Shardsync::run_to_exit(&a, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{out}");
    let r = row(&out);
    assert_eq!(r["status"], "ok", "{out}");
    let detail = r["detail"].as_str().expect("detail");
    for want in [
        "databases [0, 3]",
        "exclude regex ^tmp:",
        "FLUSHALL",
        "[4] hold keys",
    ] {
        assert!(detail.contains(want), "{want}: {detail}");
    }
    let mut a = base.to_vec();
    a.extend(["--dbs", "0,20"]);
    let (status, out) = Shardsync::run_to_exit(&a, Duration::from_secs(60));
    assert_eq!(status.code(), Some(3), "{out}");
    let r = row(&out);
    assert_eq!(r["status"], "fail");
    assert!(
        r["detail"]
            .as_str()
            .expect("detail")
            .contains("database 20"),
        "{out}"
    );
    // Bad settings: exit 2 naming the setting.
    let mut a = base.to_vec();
    a.extend(["--include-regex", "("]);
    let (status, out) = Shardsync::run_to_exit(&a, Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("sync.filter.include_regex"), "{out}");
    let mut a = base.to_vec();
    a.extend(["--dbs", "0,x"]);
    let (status, out) = Shardsync::run_to_exit(&a, Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("--dbs"), "{out}");
}

/// Key filter of the fuzz test below, written out by hand: the generator's second key of each
/// type (`<type>:b`) is excluded.
fn fuzz_kept(key: &[u8]) -> bool {
    let excluded = key.iter().position(|&b| b == b':').is_some_and(|i| {
        i > 0 && key[..i].iter().all(u8::is_ascii_lowercase) && &key[i..] == b":b"
    });
    !excluded
}

/// The differential fuzzer's sequences (every propagated write, transactions, scripts,
/// `SWAPDB`, `FLUSHDB`, `RENAME`/`COPY`/`MOVE`/`SORT … STORE` between kept and excluded keys)
/// with an exclude regex, against a native replica of the source: after each sequence every
/// kept key of the replica equals the target's and the target holds no other key.
#[test]
fn filtered_differential_fuzz_redis70() {
    filtered_fuzz(
        ServerKind::Redis70,
        &["--exclude-regex", "^[a-z]+:b$"],
        |db| db,
    );
}

/// The same on Valkey 9.1 (its own propagated forms).
#[test]
fn filtered_differential_fuzz_valkey91() {
    filtered_fuzz(
        ServerKind::Valkey91,
        &["--exclude-regex", "^[a-z]+:b$"],
        |db| db,
    );
}

/// The same with `db_map 1=2` (the generator writes databases 0 and 1; `SWAPDB 0 1` and
/// `MOVE k 1` become `SWAPDB 0 2` and `MOVE k 2`).
#[test]
fn filtered_differential_fuzz_with_db_map() {
    filtered_fuzz(
        ServerKind::Redis70,
        &["--exclude-regex", "^[a-z]+:b$", "--db-map", "1=2"],
        |db| if db == 1 { 2 } else { db },
    );
}

fn filtered_fuzz(kind: ServerKind, extra: &[&str], target_db: fn(u32) -> u32) {
    use crate::fuzz_gen::{ops, render};
    use crate::oracle::{IGNORED, Trio};
    use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
    let mut trio = Trio::start_with(kind, kind, extra);
    if kind.has_functions() {
        // FCALL steps (keys declared by numkeys) need the generator's library on the source.
        let _: () = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(crate::fuzz_gen::FUNCTION_LIB)
            .query(&mut trio.src.client())
            .expect("FUNCTION LOAD");
        trio.catch_up();
    }
    let t = std::cell::RefCell::new(trio);
    let config = Config {
        cases: std::env::var("SHARDSYNC_FILTER_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30),
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    };
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(
        &std::env::var("SHARDSYNC_FILTER_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(14)
            .to_le_bytes(),
    );
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let ignored = |k: &[u8]| {
        IGNORED
            .iter()
            .any(|p| k.starts_with(p.strip_suffix(b"*").unwrap_or(p)))
    };
    let result = runner.run(&ops(25), |ops| {
        let mut t = t.borrow_mut();
        let mut conn = t.src.client();
        let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
        let mut sent = Vec::new();
        for op in &ops {
            let mut cmds = Vec::new();
            render(op, kind, &mut conn, &mut cmds);
            for c in cmds {
                let mut cmd = redis::cmd(&String::from_utf8_lossy(&c[0]));
                for a in &c[1..] {
                    cmd.arg(a.as_slice());
                }
                let _ = cmd.query::<redis::Value>(&mut conn);
                sent.push(
                    c.iter()
                        .map(|a| common::util::printable_limited(a, 30))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
        }
        t.catch_up();
        let (mut rc, mut dc) = (t.replica.client(), t.dst.client());
        let mut diffs = Vec::new();
        for db in [0u32, 1] {
            select(&mut rc, db);
            select(&mut dc, target_db(db));
            let want: BTreeSet<Vec<u8>> = scan_keys(&mut rc)
                .into_iter()
                .filter(|k| !ignored(k) && fuzz_kept(k))
                .collect();
            let got: BTreeSet<Vec<u8>> = scan_keys(&mut dc)
                .into_iter()
                .filter(|k| !ignored(k))
                .collect();
            for k in got.difference(&want) {
                diffs.push(format!(
                    "db {db} {:?}: on the target only",
                    common::util::printable(k)
                ));
            }
            for k in &want {
                for d in compare_key(db, k, &mut rc, &mut dc, &CompareOptions::default()) {
                    diffs.push(d.to_string());
                }
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{} difference(s):\n  {}\nafter:\n    {}\nlog:\n{}",
                diffs.len(),
                diffs
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n  "),
                sent.join("\n    "),
                t.ss.log_tail(15)
            )))
        }
    });
    if let Err(e) = result {
        panic!("filtered fuzz: {e}");
    }
}
