//! End to end, standalone → standalone, on real servers of every supported version pair: a typed
//! dataset is fully synced, then a workload of every replicated command runs on the source while
//! shardsync streams it; after the heartbeat shows the target caught up, source and target are
//! compared key by key (type, value, TTL).

use crate::common;
use crate::common::util::now_ms;

use std::time::Duration;

use common::status::{full_sync_done, status_addr_arg};
use common::*;

const HEARTBEAT: &str = "shardsync:heartbeat";

fn heartbeat_at_least(conn: &mut redis::Connection, ms: u64) -> bool {
    let v: Option<String> = redis::cmd("GET").arg(HEARTBEAT).query(conn).unwrap_or(None);
    v.and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|v| v >= ms)
}

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

    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_str().expect("utf-8 temp path");
    let (su, du) = (src.url(), dst.url());
    let mut ss = Shardsync::spawn(&[
        "run",
        "--source",
        &su,
        "--target",
        &du,
        "--state-dir",
        state_dir,
        "--metrics-addr",
        &status_addr_arg(),
        "--log-level",
        "info",
    ]);
    ss.wait_status(
        Duration::from_secs(120),
        "the full sync applied",
        full_sync_done,
    );

    let wopts = WorkloadOptions::default();
    run_workload(&mut sc, src_kind, &wopts);
    let after = now_ms();
    assert!(
        wait_until(Duration::from_secs(60), || heartbeat_at_least(
            &mut dc, after
        )),
        "heartbeat written after the workload never reached the target; shardsync log:\n{}",
        ss.log_tail(40)
    );
    let mut dbs = dataset.dbs.clone();
    for d in wopts.dbs() {
        if !dbs.contains(&d) {
            dbs.push(d);
        }
    }
    let opts = common::compare::CompareOptions {
        compare_functions: src_kind.has_functions() && dst_kind.has_functions(),
        ..Default::default()
    };
    let diffs = common::compare::compare_servers_with(
        &mut sc,
        &mut dc,
        &dbs,
        &[HEARTBEAT.as_bytes()],
        &opts,
    );
    common::compare::assert_no_differences(&diffs);

    let status = ss.terminate();
    assert!(
        status.success(),
        "shardsync did not exit 0 on SIGTERM: {status:?}\n{}",
        ss.log_tail(40)
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg(HEARTBEAT)
        .query(&mut sc)
        .expect("EXISTS");
    assert_eq!(exists, 0, "heartbeat key left on the source after stop");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(HEARTBEAT)
        .query(&mut dc)
        .expect("EXISTS");
    assert_eq!(
        exists, 0,
        "heartbeat key deletion did not reach the target before stop"
    );
    assert!(
        !ss.log().contains("panicked"),
        "shardsync panicked:\n{}",
        ss.log()
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
