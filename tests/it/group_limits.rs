//! A stream consumer group is held whole while the RDB is parsed (its pending entries come
//! before the consumers that own them), so `sync.max_group_entries` bounds it. A real source's
//! group with 300 pending entries: under a limit of 301 (300 entries + 1 consumer) it is copied
//! exactly, pending entries and owners included; under a limit of 100 the shard fails at once
//! with an error naming the count and the setting, and the run exits 4.

use crate::common;

use std::time::Duration;

use common::compare::assert_same;
use common::run::{HEARTBEAT, SyncRun, stop};
use common::status::{every_shard, full_sync_done};
use common::*;

/// A source holding `s`, a stream of 300 entries whose group `g` delivered all of them to `c1`.
fn source_with_pending() -> RedisServer {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync", "no"]);
    let mut sc = src.client();
    for i in 0..300 {
        let _: String = redis::cmd("XADD")
            .arg("s")
            .arg("*")
            .arg("f")
            .arg(i)
            .query(&mut sc)
            .expect("XADD");
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("s")
        .arg("g")
        .arg("0")
        .query(&mut sc)
        .expect("XGROUP CREATE");
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c1")
        .arg("COUNT")
        .arg(1000)
        .arg("STREAMS")
        .arg("s")
        .arg(">")
        .query(&mut sc)
        .expect("XREADGROUP");
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg("s")
        .arg("g")
        .query(&mut sc)
        .expect("XPENDING");
    let redis::Value::Array(summary) = pending else {
        panic!("XPENDING summary: {pending:?}");
    };
    assert_eq!(summary.first(), Some(&redis::Value::Int(300)));
    src
}

fn run(src: &RedisServer, dst: &RedisServer, limit: usize) -> (Shardsync, SyncRun) {
    let run = SyncRun::new(Some(&format!("[sync]\nmax_group_entries = {limit}\n")));
    let ss = run.spawn_pair(&src.url(), &dst.url(), &[]);
    (ss, run)
}

#[test]
fn consumer_group_at_the_limit_is_copied_exactly() {
    let src = source_with_pending();
    let dst = RedisServer::start(ServerKind::Redis70);
    let (mut ss, _dir) = run(&src, &dst, 301);
    ss.wait_status(
        Duration::from_secs(60),
        "the full sync applied",
        full_sync_done,
    );
    let (mut sc, mut dc) = (src.client(), dst.client());
    // The harness compares stream groups, consumers and every pending entry with its owner.
    let ignore: &[&[u8]] = &[HEARTBEAT.as_bytes()];
    assert!(
        wait_until(Duration::from_secs(20), || {
            common::compare::compare_servers(&mut sc, &mut dc, &[0], ignore).is_empty()
        }),
        "target never matched; log:\n{}",
        ss.log_tail(30)
    );
    assert_same(&mut sc, &mut dc, &[0], ignore);
    stop(&mut ss);
}

#[test]
fn consumer_group_over_the_limit_fails_the_shard_naming_the_setting() {
    let src = source_with_pending();
    let dst = RedisServer::start(ServerKind::Redis70);
    let (mut ss, _dir) = run(&src, &dst, 100);
    let st = ss.wait_status(Duration::from_secs(30), "the shard failed", |st| {
        every_shard(st, |s| s["phase"] == "failed")
    });
    let err = st["shards"][0]["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("consumer group (pending entries + consumers) of 300 entries exceeds the limit of 100 entries; raise sync.max_group_entries"),
        "last_error does not name the count and the setting: {err}"
    );
    assert_eq!(
        st["shards"][0]["full_resyncs"].as_u64(),
        Some(1),
        "retried: {st}"
    );
    let status = ss
        .wait_exit(Duration::from_secs(20))
        .expect("shardsync exits");
    assert_eq!(status.code(), Some(4), "{}", ss.log_tail(20));
    assert!(!ss.log().contains("panicked"), "{}", ss.log());
}
