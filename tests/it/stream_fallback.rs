//! Streams above the exact-rebuild hold limit (`sync.max_stream_rebuild_bytes`, lowered here so
//! the stream stays small) go the write-as-they-arrive path when the target cannot `RESTORE`
//! the source's payloads (Redis 7.0 / Valkey 9.1 → Redis 6.2). The streams carry several groups,
//! consumers with and without pending entries, acknowledged entries, and deleted entries that
//! are (and are not) still pending. The target is compared key by key with the source: entries,
//! metadata, groups, consumers, PEL (owners, delivery counts and times).

use crate::common;

use std::time::Duration;

use common::compare::CompareOptions;
use common::run::{SyncRun, assert_synced};
use common::util::{exec, restore_copy};
use common::*;
use redis::Connection;

fn read(c: &mut Connection, key: &str, g: &str, who: &str, count: usize) {
    exec(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            g,
            who,
            "COUNT",
            &count.to_string(),
            "STREAMS",
            key,
            ">",
        ],
    );
}

/// A stream of `n` entries of ~100 bytes (300 are well above the lowered hold limit) with its
/// consumer state, among which `deleted_pending` pending entries (in g1 and g2) of deleted IDs.
fn build(c: &mut Connection, key: &str, n: usize, deleted_pending: usize) {
    let pad = "p".repeat(80);
    for i in 1..=n {
        exec(
            c,
            &[
                "XADD",
                key,
                &format!("{i}-1"),
                "n",
                &i.to_string(),
                "pad",
                &pad,
            ],
        );
    }
    exec(c, &["XGROUP", "CREATE", key, "g1", "0"]);
    exec(c, &["XGROUP", "CREATE", key, "g2", "0"]);
    exec(c, &["XGROUP", "CREATE", key, "g3", "$"]);
    read(c, key, "g1", "alice", 40); // 1..40
    read(c, key, "g1", "bob", 40); // 41..80
    read(c, key, "g2", "carol", 150); // 1..150
    read(c, key, "g3", "idle", 1); // nothing after $: a consumer without pending entries
    exec(c, &["XACK", key, "g1", "2-1", "3-1", "50-1"]);
    exec(c, &["XACK", key, "g2", "100-1"]);
    // Deleted while pending (g1 and/or g2): 10, 45, 120; deleted and not pending: 2, 3, 200, 250.
    let deleted = ["10-1", "45-1", "120-1", "2-1", "3-1", "200-1", "250-1"];
    for id in deleted {
        exec(c, &["XDEL", key, id]);
    }
    // Guard against a vacuous pass: deleted IDs really are still pending.
    let mut still_pending = 0;
    for id in ["10-1", "45-1", "120-1"] {
        let entries = exec(c, &["XRANGE", key, id, id]);
        assert_eq!(entries, redis::Value::Array(vec![]), "{id} deleted");
        for g in ["g1", "g2"] {
            if let redis::Value::Array(p) = exec(c, &["XPENDING", key, g, id, id, "1"]) {
                still_pending += p.len();
            }
        }
    }
    assert_eq!(
        still_pending, deleted_pending,
        "pending entries of deleted IDs on the source"
    );
}

fn stream_fallback(src_kind: ServerKind, dst_kind: ServerKind) {
    let src = RedisServer::start_with(src_kind, &["--repl-diskless-sync", "no"]);
    let dst = RedisServer::start(dst_kind);
    let mut sc = src.client();
    let mut dc = dst.client();
    build(&mut sc, "rdb:big", 300, 5);
    // Below the limit (about 6 KiB of entries): the held path, in the same run.
    build(&mut sc, "rdb:small", 50, 4);
    std::thread::sleep(Duration::from_millis(500));

    let sync = SyncRun::new(Some("[sync]\nmax_stream_rebuild_bytes = 8192\n"));
    let mut ss = sync.spawn_pair(&src.url(), &dst.url(), &[]);
    ss.expect_log("RDB received", Duration::from_secs(20));
    // The live stream: the source's own RESTORE payload, which the 6.2 target cannot read.
    restore_copy(&mut sc, "rdb:big", "live:big");
    let opts = CompareOptions {
        compare_functions: false,
        pending_idle_tolerance_ms: Some(1000),
        strict_stream_meta: false,
        ..Default::default()
    };
    assert_synced((&mut sc, &mut dc), &[0], &ss, &opts);
    ss.terminate();
}

#[test]
fn redis70_to_redis62_above_hold_limit() {
    stream_fallback(ServerKind::Redis70, ServerKind::Redis62);
}

#[test]
fn valkey91_to_redis62_above_hold_limit() {
    stream_fallback(ServerKind::Valkey91, ServerKind::Redis62);
}
