//! Stream consumer state across versions, on real servers: trimmed streams whose groups still
//! have pending entries of deleted IDs, consumers without pending entries, several groups, an
//! empty stream with pending entries only. The state is built on the source, fully synced (RDB),
//! then copied again in the live stream (`DUMP` + `RESTORE` on the source, so the target gets the
//! source's own `RESTORE` payload, converted by shardsync when the target cannot read it). The
//! target must equal the source: groups, last-delivered-ids, consumers and their pending counts,
//! PEL entries with owners, delivery counts and delivery times, and the metadata both sides have.

use crate::common;
use crate::common::util::now_ms;

use std::time::Duration;

use common::compare::{CompareOptions, assert_no_differences, compare_servers_with};
use common::status::{full_sync_done, status_addr_arg};
use common::*;
use redis::Connection;

const HEARTBEAT: &str = "shardsync:heartbeat";

fn run(c: &mut Connection, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
        .unwrap_or_else(|e| panic!("source command {args:?} failed: {e}"))
}

fn int(c: &mut Connection, args: &[&str]) -> i64 {
    match run(c, args) {
        redis::Value::Int(n) => n,
        other => panic!("{args:?}: expected an integer, got {other:?}"),
    }
}

/// Builds the streams `{p}trim`, `{p}empty` and `{p}plain` on the source.
fn build_streams(c: &mut Connection, p: &str) {
    let trim = format!("{p}trim");
    let empty = format!("{p}empty");
    let plain = format!("{p}plain");
    for i in 1..=20 {
        run(c, &["XADD", &trim, &format!("{i}-1"), "n", &i.to_string()]);
    }
    run(c, &["XGROUP", "CREATE", &trim, "g1", "0"]);
    run(c, &["XGROUP", "CREATE", &trim, "g2", "0"]);
    run(c, &["XGROUP", "CREATE", &trim, "g3", "$"]);
    let read = |c: &mut Connection, g: &str, who: &str, count: &str, from: &str| {
        run(
            c,
            &[
                "XREADGROUP",
                "GROUP",
                g,
                who,
                "COUNT",
                count,
                "STREAMS",
                &trim,
                from,
            ],
        );
    };
    read(c, "g1", "alice", "4", ">"); // 1..4
    read(c, "g1", "bob", "4", ">"); // 5..8
    read(c, "g1", "alice", "10", "0"); // re-delivers 1..4: delivery count 2
    read(c, "g1", "idle", "1", "0"); // own empty history: a consumer without pending entries
    read(c, "g2", "carol", "12", ">"); // 1..12
    assert_eq!(int(c, &["XACK", &trim, "g2", "2-1", "3-1"]), 2);
    read(c, "g3", "zed", "1", ">"); // nothing new after $: consumer without pending entries
    assert_eq!(int(c, &["XDEL", &trim, "10-1", "15-1"]), 2);
    // 18 live entries; keeping 12 trims 1-1 … 6-1, all of them pending.
    assert_eq!(int(c, &["XTRIM", &trim, "MAXLEN", "12"]), 6);

    run(c, &["XADD", &empty, "1-1", "a", "1"]);
    run(c, &["XADD", &empty, "2-1", "a", "2"]);
    run(c, &["XGROUP", "CREATE", &empty, "g", "0"]);
    run(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "5",
            "STREAMS",
            &empty,
            ">",
        ],
    );
    assert_eq!(int(c, &["XDEL", &empty, "1-1", "2-1"]), 2);

    run(c, &["XADD", &plain, "5-5", "f", "v"]);
    run(c, &["XADD", &plain, "6-0", "f", "w"]);
    assert_eq!(int(c, &["XDEL", &plain, "6-0"]), 1);
}

/// The state the test is about really exists on the source (guards against a vacuous pass).
fn assert_source_state(c: &mut Connection, p: &str) {
    let trim = format!("{p}trim");
    let pending = |c: &mut Connection, k: &str, g: &str| -> i64 {
        match run(c, &["XPENDING", k, g]) {
            redis::Value::Array(v) => match v.first() {
                Some(redis::Value::Int(n)) => *n,
                other => panic!("XPENDING summary: {other:?}"),
            },
            other => panic!("XPENDING: {other:?}"),
        }
    };
    assert_eq!(pending(c, &trim, "g1"), 8);
    assert_eq!(pending(c, &trim, "g2"), 10);
    assert_eq!(pending(c, &format!("{p}empty"), "g"), 2);
    assert_eq!(int(c, &["XLEN", &trim]), 12);
}

fn heartbeat_at_least(conn: &mut Connection, ms: u64) -> bool {
    let v: Option<String> = redis::cmd("GET").arg(HEARTBEAT).query(conn).unwrap_or(None);
    v.and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|v| v >= ms)
}

/// Builds the streams, syncs `src_kind` → `dst_kind` (with an optional config file body), copies
/// them again in the live stream by `RESTORE`, and compares.
fn stream_state(src_kind: ServerKind, dst_kind: ServerKind, config: Option<&str>) {
    let src = RedisServer::start_with(src_kind, &["--repl-diskless-sync", "no"]);
    let dst = RedisServer::start(dst_kind);
    let mut sc = src.client();
    let mut dc = dst.client();
    build_streams(&mut sc, "rdb:");
    assert_source_state(&mut sc, "rdb:");
    // Delivery times a second old: a rebuild that lost them (idle ≈ 0) is caught below.
    std::thread::sleep(Duration::from_millis(1000));

    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().join("state");
    let config_path = state.path().join("shardsync.toml");
    let (su, du) = (src.url(), dst.url());
    let status_addr = status_addr_arg();
    let mut args = vec![
        "run",
        "--source",
        &su,
        "--target",
        &du,
        "--state-dir",
        state_dir.to_str().expect("utf-8 temp path"),
        "--metrics-addr",
        &status_addr,
    ];
    if let Some(body) = config {
        std::fs::write(&config_path, body).expect("write config");
        args.extend(["--config", config_path.to_str().expect("utf-8 temp path")]);
    }
    let mut ss = Shardsync::spawn(&args);
    ss.wait_status(
        Duration::from_secs(60),
        "the full sync applied",
        full_sync_done,
    );

    // The live stream: the source's own RESTORE payloads (its RDB version).
    for k in ["trim", "empty", "plain"] {
        let payload: Vec<u8> = redis::cmd("DUMP")
            .arg(format!("rdb:{k}"))
            .query(&mut sc)
            .expect("DUMP");
        let _: () = redis::cmd("RESTORE")
            .arg(format!("live:{k}"))
            .arg(0)
            .arg(payload)
            .query(&mut sc)
            .expect("RESTORE on the source");
    }
    assert_source_state(&mut sc, "live:");
    let after = now_ms();
    assert!(
        wait_until(Duration::from_secs(60), || heartbeat_at_least(
            &mut dc, after
        )),
        "target never caught up; shardsync log:\n{}",
        ss.log_tail(40)
    );
    let opts = CompareOptions {
        compare_functions: false,
        pending_idle_tolerance_ms: Some(300),
        ..Default::default()
    };
    let diffs = compare_servers_with(&mut sc, &mut dc, &[0], &[HEARTBEAT.as_bytes()], &opts);
    let log = ss.log();
    assert_no_differences(&diffs);
    assert!(
        !log.contains("target rejected a write")
            && !log.contains("could not be written")
            && !log.contains("could not be rewritten"),
        "shardsync reported errors:\n{log}"
    );
    assert!(!log.contains("panicked"), "shardsync panicked:\n{log}");
    ss.terminate();
}

#[test]
fn redis70_to_redis62() {
    stream_state(ServerKind::Redis70, ServerKind::Redis62, None);
}

#[test]
fn redis70_to_redis60() {
    stream_state(ServerKind::Redis70, ServerKind::Redis60, None);
}

#[test]
fn redis62_to_redis60() {
    stream_state(ServerKind::Redis62, ServerKind::Redis60, None);
}

#[test]
fn valkey_to_redis70() {
    stream_state(ServerKind::Valkey91, ServerKind::Redis70, None);
}

#[test]
fn valkey_to_redis60() {
    stream_state(ServerKind::Valkey91, ServerKind::Redis60, None);
}

/// Same version: the RDB path and the live stream use `RESTORE`.
#[test]
fn redis70_to_redis70_restore() {
    stream_state(ServerKind::Redis70, ServerKind::Redis70, None);
}

/// Same version with `RESTORE` disabled for collections: the command path on a 7.0 target.
#[test]
fn redis70_to_redis70_commands() {
    stream_state(
        ServerKind::Redis70,
        ServerKind::Redis70,
        Some("[sync]\nrestore_max_bytes = 0\n"),
    );
}

#[test]
fn valkey_to_valkey_commands() {
    stream_state(
        ServerKind::Valkey91,
        ServerKind::Valkey91,
        Some("[sync]\nrestore_max_bytes = 0\n"),
    );
}
