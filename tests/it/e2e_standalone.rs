//! End to end, standalone → standalone, on real servers of every supported version pair: a typed
//! dataset is fully synced, then a workload of every replicated command runs on the source while
//! shardsync streams it; after the heartbeat shows the target caught up, source and target are
//! compared key by key (type, value, TTL).

use crate::common;
use crate::common::util::now_ms;

use common::run::{HEARTBEAT, SyncRun, assert_heartbeat_gone, stop, wait_caught_up};
use common::*;

/// Full sync of the typed dataset, a live workload, a key-by-key comparison, a clean stop.
fn sync_pair(src_kind: ServerKind, dst_kind: ServerKind, diskless: bool) {
    let extra: &[&str] = if diskless {
        &["--repl-diskless-sync", "yes"]
    } else {
        &["--repl-diskless-sync", "no"]
    };
    let src = RedisServer::start_with(src_kind, extra);
    let dst = RedisServer::start(dst_kind);
    let mut sc = src.client();
    let mut dc = dst.client();
    let dataset = DatasetOptions::default();
    let summary = populate_typed_dataset(&mut sc, src_kind, &dataset);
    assert!(summary.total_keys() > 50, "dataset too small: {summary:?}");

    let sync = SyncRun::new(None);
    let mut ss = sync.start_pair(&src.url(), &dst.url(), &["--log-level", "info"]);

    let wopts = WorkloadOptions::default();
    run_workload(&mut sc, src_kind, &wopts);
    wait_caught_up(&mut dc, now_ms(), &ss, "the target (after the workload)");
    let opts = common::compare::CompareOptions {
        compare_functions: src_kind.has_functions() && dst_kind.has_functions(),
        ..Default::default()
    };
    let diffs = common::compare::compare_servers_with(
        &mut sc,
        &mut dc,
        &wopts.dbs_with(&dataset.dbs),
        &[HEARTBEAT.as_bytes()],
        &opts,
    );
    common::compare::assert_no_differences(&diffs);
    stop(&mut ss);
    assert_heartbeat_gone(&mut sc, "source");
    assert_heartbeat_gone(
        &mut dc,
        "target (its deletion did not arrive before the stop)",
    );
}

#[test]
fn redis60_to_redis60() {
    sync_pair(ServerKind::Redis60, ServerKind::Redis60, false);
}

#[test]
fn redis70_to_redis70() {
    sync_pair(ServerKind::Redis70, ServerKind::Redis70, false);
}

#[test]
fn valkey_to_valkey() {
    sync_pair(ServerKind::Valkey91, ServerKind::Valkey91, false);
}

#[test]
fn redis60_to_redis70() {
    sync_pair(ServerKind::Redis60, ServerKind::Redis70, false);
}

#[test]
fn redis70_to_redis60() {
    sync_pair(ServerKind::Redis70, ServerKind::Redis60, false);
}

#[test]
fn valkey_to_redis70() {
    sync_pair(ServerKind::Valkey91, ServerKind::Redis70, false);
}

#[test]
fn redis70_diskless_to_redis70() {
    sync_pair(ServerKind::Redis70, ServerKind::Redis70, true);
}
