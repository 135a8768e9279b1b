//! Valkey 9.1 hash-field TTLs going to a Redis 7.0 target, which cannot hold them: the fields and
//! values arrive (key by key equal), and every field whose TTL is lost is counted in
//! `shardsync_lossy_conversions_total{kind="hash_field_ttl"}` and `/status`, in the full sync
//! (RDB hashes with field TTLs) and in the live stream (`HSETEX … EX`, `HEXPIRE`, `HPEXPIRE`,
//! `HPEXPIREAT`, `HGETEX … PX`, the source's own `RESTORE` of such a hash; `HPERSIST` and
//! `HSETEX` without expiry lose nothing). The RDB and `RESTORE` counts are checked against the
//! source's own `HTTL` replies.

use crate::common;
use crate::common::util::{now_ms, sample};

use std::time::Duration;

use common::compare::{CompareOptions, assert_no_differences, compare_servers_with};
use common::run::{HEARTBEAT, SyncRun, wait_caught_up};
use common::util::{exec, http_get, restore_copy};
use common::*;
use redis::Connection;

/// Fields of `key` with a TTL, as the source itself reports them (`HTTL`).
fn fields_with_ttl(c: &mut Connection, key: &str) -> u64 {
    let fields: Vec<String> = redis::cmd("HKEYS").arg(key).query(c).expect("HKEYS");
    let mut cmd = redis::cmd("HTTL");
    cmd.arg(key).arg("FIELDS").arg(fields.len());
    for f in &fields {
        cmd.arg(f);
    }
    let ttls: Vec<i64> = cmd.query(c).expect("HTTL");
    ttls.iter().filter(|&&t| t > 0).count() as u64
}

fn lost(addr: &str, shard: &str) -> (f64, u64) {
    let (code, metrics) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    let m = sample(
        &metrics,
        "shardsync_lossy_conversions_total",
        &[("shard", shard), ("kind", "hash_field_ttl")],
    )
    .unwrap_or_else(|| panic!("lossy conversions series missing:\n{metrics}"));
    let (code, body) = http_get(addr, "/status").expect("GET /status");
    assert_eq!(code, 200);
    let st: serde_json::Value = serde_json::from_str(&body).expect("/status JSON");
    let s = st["shards"][0]["lossy_conversions"]
        .as_u64()
        .unwrap_or_else(|| panic!("no lossy_conversions in /status: {body}"));
    (m, s)
}

#[test]
fn valkey91_field_ttls_to_redis70_are_counted() {
    let src = RedisServer::start_with(ServerKind::Valkey91, &["--repl-diskless-sync", "no"]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut sc = src.client();
    let mut dc = dst.client();

    // Full sync: 3 of 5 fields of h1 and all 4 of h2 carry a TTL; `plain` has none.
    exec(
        &mut sc,
        &[
            "HSET", "h1", "f0", "0", "f1", "1", "f2", "2", "f3", "3", "f4", "4",
        ],
    );
    exec(
        &mut sc,
        &["HEXPIRE", "h1", "1000", "FIELDS", "3", "f0", "f1", "f2"],
    );
    exec(
        &mut sc,
        &[
            "HSETEX", "h2", "EX", "900", "FIELDS", "4", "a", "1", "b", "2", "c", "3", "d", "4",
        ],
    );
    exec(&mut sc, &["HSET", "plain", "x", "1", "y", "2"]);
    exec(&mut sc, &["PEXPIRE", "h2", "800000"]);
    let rdb_lost = fields_with_ttl(&mut sc, "h1") + fields_with_ttl(&mut sc, "h2");
    assert_eq!(rdb_lost, 7, "source state");

    let sync = SyncRun::new(None);
    let mut ss = sync.spawn_pair(&src.url(), &dst.url(), &[]);
    let addr = sync.addr.clone();
    let shard = src.addr();
    ss.expect_log("RDB received", Duration::from_secs(30));
    assert!(
        wait_until(Duration::from_secs(20), || lost(&addr, &shard)
            == (rdb_lost as f64, rdb_lost)),
        "full sync: lossy conversions {:?}, expected {rdb_lost}; log:\n{}",
        lost(&addr, &shard),
        ss.log_tail(30)
    );

    // Live stream. Each line: the command and the field TTLs it loses on the target.
    let at = (now_ms() / 1000 + 3600).to_string();
    let pat = (now_ms() + 3_600_000).to_string();
    let live: &[(&[&str], u64)] = &[
        (
            &[
                "HSETEX", "l1", "EX", "500", "FIELDS", "2", "a", "1", "b", "2",
            ],
            2,
        ),
        (&["HSETEX", "l1", "FIELDS", "1", "c", "3"], 0),
        (&["HSETEX", "l1", "KEEPTTL", "FIELDS", "1", "a", "9"], 0),
        (&["HEXPIRE", "plain", "700", "FIELDS", "2", "x", "y"], 2),
        (&["HPEXPIRE", "l1", "700000", "FIELDS", "1", "c"], 1),
        (&["HEXPIREAT", "h1", &at, "FIELDS", "1", "f3"], 1),
        (&["HPEXPIREAT", "h1", &pat, "FIELDS", "1", "f4"], 1),
        (
            &["HGETEX", "h2", "PX", "600000", "FIELDS", "2", "a", "b"],
            2,
        ),
        (&["HPERSIST", "h1", "FIELDS", "1", "f0"], 0),
        (&["HGETEX", "h2", "PERSIST", "FIELDS", "1", "c"], 0),
    ];
    let mut expected = rdb_lost;
    for (args, n) in live {
        exec(&mut sc, args);
        expected += n;
    }
    // The source's own RESTORE of a hash with field TTLs: decoded for the 7.0 target, which
    // gets the fields without their TTLs.
    let in_payload = fields_with_ttl(&mut sc, "h1");
    assert!(in_payload >= 3, "h1 keeps field TTLs: {in_payload}");
    restore_copy(&mut sc, "h1", "restored");
    expected += in_payload;
    let after = now_ms();
    wait_caught_up(&mut dc, after, &ss, "the target");
    assert!(
        wait_until(Duration::from_secs(10), || lost(&addr, &shard)
            == (expected as f64, expected)),
        "live: lossy conversions {:?}, expected {expected}; log:\n{}",
        lost(&addr, &shard),
        ss.log_tail(30)
    );

    let opts = CompareOptions {
        compare_functions: false,
        ..Default::default()
    };
    let diffs = compare_servers_with(&mut sc, &mut dc, &[0], &[HEARTBEAT.as_bytes()], &opts);
    assert_no_differences(&diffs);
    let log = ss.log();
    assert!(
        log.contains("kind=\"hash_field_ttl\"") || log.contains("kind=hash_field_ttl"),
        "no warning about the lost field TTLs:\n{log}"
    );
    assert!(
        log.contains("\"h1\"") && log.contains("live stream"),
        "the warning names key and phase:\n{log}"
    );
    assert!(
        log.contains("Valkey-only features"),
        "precheck did not report Valkey-only features:\n{log}"
    );
    assert!(!log.contains("panicked"), "shardsync panicked:\n{log}");
    ss.terminate();
}

/// Per-field TTLs of `key` (`HPTTL`) on one side, by field.
fn field_pttls(c: &mut Connection, key: &str) -> Vec<(String, i64)> {
    let mut fields: Vec<String> = redis::cmd("HKEYS").arg(key).query(c).expect("HKEYS");
    fields.sort();
    let mut cmd = redis::cmd("HPTTL");
    cmd.arg(key).arg("FIELDS").arg(fields.len());
    for f in &fields {
        cmd.arg(f);
    }
    let ttls: Vec<i64> = cmd.query(c).expect("HPTTL");
    fields.into_iter().zip(ttls).collect()
}

/// Valkey 9.1 → Valkey 9.1: a source holding hashes with field TTLs full-syncs (before the
/// replica declared its version, the master tried to write RDB 11, failed on such a key, and
/// the full sync never completed), the field TTLs arrive, and nothing is counted as lost.
#[test]
fn valkey91_field_ttls_to_valkey91_are_kept() {
    let src = RedisServer::start_with(ServerKind::Valkey91, &["--repl-diskless-sync", "no"]);
    let dst = RedisServer::start(ServerKind::Valkey91);
    let mut sc = src.client();
    let mut dc = dst.client();
    exec(&mut sc, &["HSET", "h1", "f0", "0", "f1", "1", "f2", "2"]);
    exec(
        &mut sc,
        &["HEXPIRE", "h1", "1000", "FIELDS", "2", "f0", "f1"],
    );
    let sync = SyncRun::new(None);
    let mut ss = sync.spawn_pair(&src.url(), &dst.url(), &[]);
    let addr = sync.addr.clone();
    let shard = src.addr();
    ss.expect_log("RDB received", Duration::from_secs(20));
    exec(
        &mut sc,
        &["HSETEX", "l1", "PX", "900000", "FIELDS", "1", "a", "1"],
    );
    let after = now_ms();
    wait_caught_up(&mut dc, after, &ss, "the target");
    for key in ["h1", "l1"] {
        let (s, d) = (field_pttls(&mut sc, key), field_pttls(&mut dc, key));
        assert_eq!(s.len(), d.len(), "{key}: fields {s:?} vs {d:?}");
        for ((sf, st), (df, dt)) in s.iter().zip(&d) {
            assert_eq!(sf, df, "{key}");
            assert!(
                (*st < 0 && *dt < 0 && st == dt) || (*st > 0 && *dt > 0 && (st - dt).abs() < 2000),
                "{key}.{sf}: source PTTL {st}, target {dt}"
            );
        }
    }
    assert_eq!(lost(&addr, &shard), (0.0, 0));
    let opts = CompareOptions {
        compare_functions: false,
        ..Default::default()
    };
    let diffs = compare_servers_with(&mut sc, &mut dc, &[0], &[HEARTBEAT.as_bytes()], &opts);
    assert_no_differences(&diffs);
    assert!(!ss.log().contains("panicked"));
    ss.terminate();
}
