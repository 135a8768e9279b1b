//! Stream consumer state across versions, on real servers: trimmed streams whose groups still
//! have pending entries of deleted IDs, consumers without pending entries, several groups, an
//! empty stream with pending entries only. The state is built on the source, fully synced (RDB),
//! then copied again in the live stream (`DUMP` + `RESTORE` on the source, so the target gets the
//! source's own `RESTORE` payload, converted by shardsync when the target cannot read it). The
//! target must equal the source: groups, last-delivered-ids, consumers and their pending counts,
//! PEL entries with owners, delivery counts and delivery times, and the metadata both sides have.

use crate::common;

use std::time::Duration;

use common::compare::CompareOptions;
use common::run::{SyncRun, assert_synced};
use common::util::{exec, restore_copy};
use common::*;
use redis::Connection;

fn int(c: &mut Connection, args: &[&str]) -> i64 {
    match exec(c, args) {
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
        exec(c, &["XADD", &trim, &format!("{i}-1"), "n", &i.to_string()]);
    }
    exec(c, &["XGROUP", "CREATE", &trim, "g1", "0"]);
    exec(c, &["XGROUP", "CREATE", &trim, "g2", "0"]);
    exec(c, &["XGROUP", "CREATE", &trim, "g3", "$"]);
    let read = |c: &mut Connection, g: &str, who: &str, count: &str, from: &str| {
        exec(
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

    exec(c, &["XADD", &empty, "1-1", "a", "1"]);
    exec(c, &["XADD", &empty, "2-1", "a", "2"]);
    exec(c, &["XGROUP", "CREATE", &empty, "g", "0"]);
    exec(
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

    exec(c, &["XADD", &plain, "5-5", "f", "v"]);
    exec(c, &["XADD", &plain, "6-0", "f", "w"]);
    assert_eq!(int(c, &["XDEL", &plain, "6-0"]), 1);
}

/// The state the test is about really exists on the source (guards against a vacuous pass).
fn assert_source_state(c: &mut Connection, p: &str) {
    let trim = format!("{p}trim");
    let pending = |c: &mut Connection, k: &str, g: &str| -> i64 {
        match exec(c, &["XPENDING", k, g]) {
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

    let sync = SyncRun::new(config);
    let mut ss = sync.start(&["--source", &src.url(), "--target", &dst.url()], 1);

    // The live stream: the source's own RESTORE payloads (its RDB version).
    for k in ["trim", "empty", "plain"] {
        restore_copy(&mut sc, &format!("rdb:{k}"), &format!("live:{k}"));
    }
    assert_source_state(&mut sc, "live:");
    let opts = CompareOptions {
        compare_functions: false,
        pending_idle_tolerance_ms: Some(300),
        ..Default::default()
    };
    assert_synced((&mut sc, &mut dc), &[0], &ss, &opts);
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
