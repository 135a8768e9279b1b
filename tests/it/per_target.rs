//! One-to-many with per-target settings, on real servers: one PSYNC and one RDB, and each
//! target gets what its own `[[target]]` table asks for.
//!
//! - Selection and filters: target `a` takes db 0 and keys `a:` only, `b` dbs 0 and 3 (3 → 1)
//!   without `a:` keys and with `UNLINK` denied, `c` and `d` set nothing of their own and take
//!   the shared `[sync]` ones (dbs 0 and 1, no `a:tmp:` keys). After the full sync and after
//!   live writes whose keys get different verdicts per target (split `MSET`/`DEL`, `RENAME` and
//!   `COPY` across a filter: the key copied from the source), each target equals the source key
//!   by key under its own rules (written out here, not shardsync's code). `c` and `d` share one
//!   conversion: the run logs three groups for four targets.
//! - Conversion: a Redis 7.0 source into a 7.0 and a 6.0 target. The 7.0 target gets the 7.0
//!   commands (stream metadata — entries-read, entries-added, max-deleted-id — and function
//!   libraries compared strictly), the 6.0 one their downgraded forms (`LMPOP`, `ZMPOP`,
//!   `SET … GET`, `EXPIRE … NX`, `XGROUP CREATE … ENTRIESREAD`, `XSETID … ENTRIESADDED`), from
//!   the same parsed stream, in the full sync (RDB) and the incremental sync.

use crate::common;
use crate::common::util::now_ms;

use common::compare::{CompareOptions, assert_no_differences, compare_servers_with};
use common::run::{HEARTBEAT, SyncRun, assert_clean_log, run_to_exit, wait_caught_up};
use common::selection::{Expected, selected_differences};
use common::util::{exec, select};
use common::*;

fn starts(k: &[u8], p: &str) -> bool {
    k.starts_with(p.as_bytes())
}

/// Target `a`: db 0, `a:` keys but the shared exclusion `a:tmp:`.
fn kept_a(db: u32, k: &[u8]) -> bool {
    db == 0 && starts(k, "a:") && !starts(k, "a:tmp:")
}

/// Target `b`: dbs 0 and 3, no `a:` key (its own exclusion replaces the shared one).
fn kept_b(db: u32, k: &[u8]) -> bool {
    (db == 0 || db == 3) && !starts(k, "a:")
}

/// Targets `c` and `d`: the shared `[sync]` selection, dbs 0 and 1 without `a:tmp:` keys.
fn kept_shared(db: u32, k: &[u8]) -> bool {
    (db == 0 || db == 1) && !starts(k, "a:tmp:")
}

fn same_db(db: u32) -> u32 {
    db
}

fn b_db(db: u32) -> u32 {
    if db == 3 { 1 } else { db }
}

/// Keys of every verdict in databases 0–4.
fn fill(c: &mut redis::Connection) {
    for db in 0..5u32 {
        select(c, db);
        for i in 0..40 {
            for p in ["a:", "a:tmp:", "b:", "z:"] {
                exec(c, &["SET", &format!("{p}{i}"), &format!("v{db}-{i}")]);
            }
        }
        for p in ["a:", "b:"] {
            exec(c, &["RPUSH", &format!("{p}list"), "x", "y", "z"]);
            exec(c, &["HSET", &format!("{p}hash"), "f", "1", "g", "2"]);
            exec(c, &["SADD", &format!("{p}set"), "m1", "m2", "m3"]);
            exec(c, &["ZADD", &format!("{p}zset"), "1", "m1", "2", "m2"]);
            exec(c, &["XADD", &format!("{p}stream"), "1-1", "f", "v"]);
            exec(c, &["SET", &format!("{p}ttl"), "v", "PX", "600000"]);
        }
    }
    select(c, 0);
}

/// Live writes whose keys get different verdicts per target.
fn live_writes(c: &mut redis::Connection) {
    for db in 0..5u32 {
        select(c, db);
        exec(c, &["SET", "a:new", "1"]);
        exec(c, &["SET", "b:new", "2"]);
        exec(c, &["SET", "a:tmp:new", "3"]);
        exec(
            c,
            &["MSET", "a:m", "1", "b:m", "2", "a:tmp:m", "3", "z:m", "4"],
        );
        exec(c, &["DEL", "a:0", "b:0", "a:tmp:0", "z:0"]);
        // Denied for `b` only: it keeps `b:1`.
        exec(c, &["UNLINK", "b:1", "a:1"]);
        // Kept source, filtered destination for `b`; the reverse for `a`; both kept for `c`.
        exec(c, &["RENAME", "b:2", "a:renamed"]);
        exec(c, &["COPY", "b:3", "a:copied"]);
        exec(c, &["SMOVE", "b:set", "a:set", "m1"]);
        exec(c, &["HSET", "a:hash", "h", "3"]);
        exec(c, &["RPUSH", "b:list", "w"]);
        exec(c, &["INCR", "a:tmp:counter"]);
        exec(c, &["EXPIRE", "b:4", "1000"]);
        exec(c, &["XADD", "b:stream", "2-1", "f", "w"]);
    }
    select(c, 0);
}

fn filters_config(src: &str, t: [&RedisServer; 4]) -> String {
    format!(
        r#"
[source]
url = "{src}"

[[target]]
name = "a"
url = "{}"
dbs = [0]
[target.filter]
include_prefixes = ["a:"]

[[target]]
name = "b"
url = "{}"
dbs = [0, 3]
db_map = {{ "3" = 1 }}
[target.filter]
exclude_prefixes = ["a:"]
deny_commands = ["UNLINK"]

[[target]]
name = "c"
url = "{}"

[[target]]
name = "d"
url = "{}"

[sync]
dbs = [0, 1]
heartbeat_interval_ms = 200
checkpoint_interval_ms = 200
[sync.filter]
exclude_prefixes = ["a:tmp:"]
"#,
        t[0].url(),
        t[1].url(),
        t[2].url(),
        t[3].url()
    )
}

/// Each target against the source under its own rules; returns the keys compared per target.
fn assert_each_target(
    src: &RedisServer,
    t: [&RedisServer; 4],
    b_keeps: &'static [&'static [u8]],
    ss: &Shardsync,
) -> Vec<usize> {
    let opts = CompareOptions {
        compare_functions: false,
        ..Default::default()
    };
    let expect = |kept: &'static dyn Fn(u32, &[u8]) -> bool,
                  target_db: &'static dyn Fn(u32) -> u32,
                  ignore: &'static [&'static [u8]]| Expected {
        dbs: 0..5,
        kept,
        target_db,
        ignore,
        opts: opts.clone(),
    };
    let rules = [
        expect(&kept_a, &same_db, &[]),
        expect(&kept_b, &b_db, b_keeps),
        expect(&kept_shared, &same_db, &[]),
        expect(&kept_shared, &same_db, &[]),
    ];
    let mut sc = src.client();
    t.iter()
        .zip(rules)
        .zip(["a", "b", "c", "d"])
        .map(|((dst, e), name)| {
            let (diffs, checked) = selected_differences(&mut sc, &mut dst.client(), &e);
            if !diffs.is_empty() {
                eprintln!("target {name}; log:\n{}", ss.log_tail(60));
            }
            assert_no_differences(&diffs);
            checked
        })
        .collect()
}

#[test]
fn each_target_gets_its_own_selection_and_filters() {
    let kind = ServerKind::Redis70;
    let src = RedisServer::start_with(kind, &["--repl-diskless-sync-delay", "0"]);
    let servers: Vec<RedisServer> = (0..4).map(|_| RedisServer::start(kind)).collect();
    let t = [&servers[0], &servers[1], &servers[2], &servers[3]];
    let mut sc = src.client();
    fill(&mut sc);

    let run = SyncRun::new(Some(&filters_config(&src.url(), t)));
    let mut ss = run.start(&["--log-level", "info"], 1);
    assert!(
        ss.log().contains("conversions=3"),
        "four targets, three distinct settings: three conversions\n{}",
        ss.log_tail(30)
    );
    let after = now_ms();
    for (dst, name) in t.iter().zip(["a", "b", "c", "d"]) {
        wait_caught_up(&mut dst.client(), after, &ss, name);
    }
    let full = assert_each_target(&src, t, &[], &ss);
    // a: 40 strings + 6 typed keys of db 0; b: 2 dbs of 80 strings + 6 typed keys (and `z:`).
    assert_eq!(
        full,
        [46, 2 * (40 * 2 + 6), 2 * (40 * 3 + 12), 2 * (40 * 3 + 12)]
    );

    live_writes(&mut sc);
    let after = now_ms();
    for (dst, name) in t.iter().zip(["a", "b", "c", "d"]) {
        wait_caught_up(&mut dst.client(), after, &ss, name);
    }
    // `UNLINK` is denied for `b`: it still holds `b:1` (source db 0 → 0, db 3 → 1).
    for db in [0, 1] {
        let mut bc = t[1].client();
        select(&mut bc, db);
        let n: i64 = redis::cmd("EXISTS")
            .arg("b:1")
            .query(&mut bc)
            .expect("EXISTS");
        assert_eq!(n, 1, "b:1 in target b's db {db} (UNLINK denied there)");
    }
    assert_each_target(&src, t, &[b"b:1"], &ss);
    assert_clean_log(&ss);

    // `verify` with the same config checks each target under its own rules: a, c and d are
    // equal; b holds the `b:1` its denied UNLINK left, in both of its databases.
    let config = run
        .config
        .as_ref()
        .and_then(|p| p.to_str())
        .expect("config path");
    let (code, out) = run_to_exit(&[
        "verify",
        "--config",
        config,
        "--format",
        "json",
        "--rate",
        "0",
        "--recheck-ms",
        "0",
    ]);
    assert_eq!(code, 1, "b differs by design:\n{out}");
    let docs: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("one JSON report per line"))
        .collect();
    let summary: Vec<(String, String, u64)> = docs
        .iter()
        .map(|d| {
            let name = d["target_name"].as_str().unwrap_or_default().to_string();
            let result = d["result"].as_str().unwrap_or_default().to_string();
            (name, result, d["totals"]["extra"].as_u64().unwrap_or(99))
        })
        .collect();
    let want = |n: &str, r: &str, e: u64| (n.to_string(), r.to_string(), e);
    assert_eq!(
        summary,
        [
            want("a", "equal", 0),
            want("b", "different", 2),
            want("c", "equal", 0),
            want("d", "equal", 0)
        ],
        "{out}"
    );
    let b_keys: Vec<(&str, u64)> = docs[1]["differences"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|d| {
                    (
                        d["key"].as_str().unwrap_or(""),
                        d["target_db"].as_u64().unwrap_or(99),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(b_keys, [("\"b:1\"", 0), ("\"b:1\"", 1)], "{out}");
    assert!(ss.terminate().success(), "{}", ss.log_tail(30));
}

/// Commands a 6.0 server does not know, each with a meaning the 6.0 target must get.
fn seven_only_writes(c: &mut redis::Connection) {
    exec(c, &["XADD", "v7:st", "1-1", "f", "a"]);
    exec(c, &["XADD", "v7:st", "2-1", "f", "b"]);
    exec(c, &["XADD", "v7:st", "3-1", "f", "c"]);
    // (No XREADGROUP here: after one, a 7.0 master's own native replica reports another
    // entries-read than the master does; the workload reads groups with its own care.)
    exec(
        c,
        &["XGROUP", "CREATE", "v7:st", "g1", "0", "ENTRIESREAD", "1"],
    );
    exec(c, &["XDEL", "v7:st", "2-1"]);
    exec(
        c,
        &[
            "XSETID",
            "v7:st",
            "9-0",
            "ENTRIESADDED",
            "12",
            "MAXDELETEDID",
            "5-0",
        ],
    );
    exec(c, &["RPUSH", "v7:list", "a", "b", "c", "d"]);
    exec(
        c,
        &["LMPOP", "2", "v7:none", "v7:list", "LEFT", "COUNT", "2"],
    );
    exec(c, &["ZADD", "v7:z", "1", "a", "2", "b", "3", "c"]);
    exec(c, &["ZMPOP", "1", "v7:z", "MAX", "COUNT", "2"]);
    exec(c, &["SET", "v7:get", "old"]);
    exec(c, &["SET", "v7:get", "new", "GET"]);
    exec(c, &["SET", "v7:ex", "v"]);
    exec(c, &["EXPIRE", "v7:ex", "5000", "NX"]);
    exec(c, &["EXPIRE", "v7:ex", "9000", "GT"]);
    exec(c, &["EXPIRE", "v7:ex", "100", "NX"]);
}

#[test]
fn a_new_and_an_old_target_each_get_their_own_conversion() {
    let kind = ServerKind::Redis70;
    let src = RedisServer::start_with(kind, &["--repl-diskless-sync-delay", "0"]);
    let new = RedisServer::start(ServerKind::Redis70);
    let old = RedisServer::start(ServerKind::Redis60);
    let mut sc = src.client();
    let dataset = DatasetOptions::default();
    populate_typed_dataset(&mut sc, kind, &dataset);
    let config = format!(
        "[source]\nurl = \"{}\"\n\n[[target]]\nname = \"new\"\nurl = \"{}\"\n\n\
         [[target]]\nname = \"old\"\nurl = \"{}\"\n\n[sync]\nheartbeat_interval_ms = 200\n",
        src.url(),
        new.url(),
        old.url()
    );
    let run = SyncRun::new(Some(&config));
    let mut ss = run.start(&["--log-level", "info"], 1);
    assert!(ss.log().contains("conversions=2"), "{}", ss.log_tail(30));

    let compare = |what: &str, dbs: &[u32]| {
        for (dst, functions) in [(&new, true), (&old, false)] {
            // Stream metadata is compared wherever the target reports it (7.0: strictly).
            let opts = CompareOptions {
                compare_functions: functions,
                ..Default::default()
            };
            let diffs = compare_servers_with(
                &mut src.client(),
                &mut dst.client(),
                dbs,
                &[HEARTBEAT.as_bytes()],
                &opts,
            );
            if !diffs.is_empty() {
                eprintln!("{what}, target {}:", dst.kind().name());
            }
            assert_no_differences(&diffs);
        }
    };
    let after = now_ms();
    wait_caught_up(&mut new.client(), after, &ss, "new (full sync)");
    wait_caught_up(&mut old.client(), after, &ss, "old (full sync)");
    compare("full sync", &dataset.dbs);

    let wopts = WorkloadOptions::default();
    run_workload(&mut sc, kind, &wopts);
    seven_only_writes(&mut sc);
    let after = now_ms();
    wait_caught_up(&mut new.client(), after, &ss, "new");
    wait_caught_up(&mut old.client(), after, &ss, "old");
    compare("incremental sync", &wopts.dbs_with(&dataset.dbs));
    assert!(ss.terminate().success(), "{}", ss.log_tail(30));
}
