//! End to end with Redis Cluster on either side: 3 → 3 masters, 3 → 4, cluster → standalone and
//! standalone → cluster. The typed dataset and the workload run on every source master (keys
//! hash-tagged to that master, so multi-key commands, transactions and scripts are legal on a
//! cluster source); standalone → cluster also runs untagged multi-key commands, which cross
//! slots on the target. After every shard's heartbeat has reached the target, the whole source
//! is compared with the whole target key by key. Also: a master with another password and an
//! uncovered slot fail the precheck with messages that name them, writing nothing.

use crate::common;
use crate::common::util::now_ms;

use std::time::Duration;

use common::cluster::{KeySource, RedisCluster, StandaloneReader, compare_sources};
use common::compare::{CompareOptions, assert_no_differences};
use common::run::{pair_to_exit, stop};
use common::status::{full_sync_done, started, status_addr_arg};
use common::*;

const HEARTBEAT: &[u8] = b"shardsync:heartbeat*";

/// A hash tag whose slot the given master serves.
fn tag_for(cluster: &RedisCluster, master: &RedisServer) -> String {
    (0..100_000)
        .map(|i| format!("t{i}"))
        .find(|t| cluster.node_for_key(format!("{{{t}}}").as_bytes()).port() == master.port())
        .expect("a tag for every master")
}

/// Fills every master of `cluster` with the typed dataset under its own hash tag.
pub(crate) fn populate_cluster(cluster: &RedisCluster) -> Vec<String> {
    let mut tags = Vec::new();
    for m in cluster.masters() {
        let tag = tag_for(cluster, m);
        let mut opts = DatasetOptions::cluster(&tag);
        opts.big_value_bytes = 2 << 20;
        populate_typed_dataset(&mut m.client(), cluster.kind(), &opts);
        tags.push(tag);
    }
    tags
}

pub(crate) fn workload_cluster(cluster: &RedisCluster, tags: &[String]) {
    for (m, tag) in cluster.masters().into_iter().zip(tags) {
        let mut opts = WorkloadOptions::cluster(tag);
        opts.volume = 1000;
        run_workload(&mut m.client(), cluster.kind(), &opts);
    }
}

/// Waits until every source heartbeat key holds a time ≥ `after` on the target.
pub(crate) fn wait_heartbeats(
    src: &mut dyn KeySource,
    dst: &mut dyn KeySource,
    after: u64,
    ss: &Shardsync,
) {
    let keys: Vec<Vec<u8>> = src
        .all_keys()
        .into_iter()
        .filter(|k| k.starts_with(b"shardsync:heartbeat"))
        .collect();
    assert!(
        !keys.is_empty(),
        "no heartbeat key on the source; log:\n{}",
        ss.log_tail(30)
    );
    let ok = wait_until(Duration::from_secs(90), || {
        keys.iter().all(|k| {
            let v: Option<String> = redis::cmd("GET")
                .arg(k)
                .query(dst.conn_for(k))
                .unwrap_or(None);
            v.and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|v| v >= after)
        })
    });
    assert!(
        ok,
        "heartbeats {keys:?} did not reach the target; log:\n{}",
        ss.log_tail(40)
    );
}

fn spawn(src_url: &str, dst_url: &str, state: &tempfile::TempDir, extra: &[&str]) -> Shardsync {
    let mut args = vec![
        "run",
        "--source",
        src_url,
        "--target",
        dst_url,
        "--state-dir",
        state.path().to_str().expect("utf-8 path"),
        "--metrics-addr",
    ];
    let addr = status_addr_arg();
    args.push(&addr);
    args.extend_from_slice(extra);
    let mut ss = Shardsync::spawn(&args);
    ss.wait_status(Duration::from_secs(30), "replication started", started);
    ss
}

/// Waits until every shard's full sync is applied on the target.
fn wait_full_syncs(ss: &mut Shardsync) {
    ss.wait_status(
        Duration::from_secs(120),
        "every full sync applied",
        full_sync_done,
    );
}

/// One shard, one series: every `shard` label of `/metrics` is a source master's address (the
/// shard's stable name), never a replica replicated from or a later master.
fn assert_shard_labels_are_masters(ss: &Shardsync, src: &RedisCluster) {
    let addr = ss.status_addr().expect("status address");
    let (_, metrics) = util::http_get(&addr, "/metrics").expect("GET /metrics");
    let masters: std::collections::BTreeSet<String> =
        src.masters().iter().map(|m| m.addr()).collect();
    let labels: std::collections::BTreeSet<String> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| Some(l.split_once("shard=\"")?.1.split_once('"')?.0.to_string()))
        .collect();
    assert_eq!(labels, masters, "shard labels of /metrics");
}

fn opts() -> CompareOptions {
    CompareOptions {
        compare_functions: false,
        ..Default::default()
    }
}

fn cluster_to_cluster(masters_src: usize, masters_dst: usize) {
    let kind = ServerKind::Redis70;
    let src = RedisCluster::start(kind, masters_src, 0);
    let dst = RedisCluster::start(kind, masters_dst, 0);
    let tags = populate_cluster(&src);
    let state = tempfile::tempdir().expect("state dir");
    let mut ss = spawn(&src.seed_url(), &dst.seed_url(), &state, &[]);
    wait_full_syncs(&mut ss);
    workload_cluster(&src, &tags);
    let after = now_ms();
    let (mut sr, mut dr) = (src.reader(), dst.reader());
    wait_heartbeats(&mut sr, &mut dr, after, &ss);
    assert_no_differences(&compare_sources(&mut sr, &mut dr, &[HEARTBEAT], &opts()));
    let log = ss.log();
    assert_eq!(
        log.matches("full sync started").count(),
        masters_src,
        "one full sync per source master:\n{log}"
    );
    stop(&mut ss);
}

#[test]
fn cluster3_to_cluster3() {
    cluster_to_cluster(3, 3);
}

#[test]
fn cluster3_to_cluster4() {
    cluster_to_cluster(3, 4);
}

#[test]
fn cluster_to_standalone() {
    let kind = ServerKind::Redis70;
    let src = RedisCluster::start(kind, 3, 0);
    let dst = RedisServer::start(kind);
    let tags = populate_cluster(&src);
    let state = tempfile::tempdir().expect("state dir");
    let mut ss = spawn(&src.seed_url(), &dst.url(), &state, &[]);
    wait_full_syncs(&mut ss);
    workload_cluster(&src, &tags);
    let after = now_ms();
    let mut sr = src.reader();
    let mut dc = dst.client();
    let mut dr = StandaloneReader(&mut dc);
    wait_heartbeats(&mut sr, &mut dr, after, &ss);
    assert_no_differences(&compare_sources(&mut sr, &mut dr, &[HEARTBEAT], &opts()));
    assert_shard_labels_are_masters(&ss, &src);
    stop(&mut ss);
}

#[test]
fn standalone_to_cluster_with_cross_slot_commands() {
    let kind = ServerKind::Redis70;
    let src = RedisServer::start(kind);
    let dst = RedisCluster::start(kind, 3, 0);
    let mut sc = src.client();
    let dataset = DatasetOptions {
        dbs: vec![0],
        big_value_bytes: 2 << 20,
        ..Default::default()
    };
    populate_typed_dataset(&mut sc, kind, &dataset);
    let state = tempfile::tempdir().expect("state dir");
    let mut ss = spawn(&src.url(), &dst.seed_url(), &state, &[]);
    wait_full_syncs(&mut ss);
    let wopts = WorkloadOptions {
        use_dbs: false,
        cross_slot_untagged: true,
        volume: 1000,
        ..Default::default()
    };
    run_workload(&mut sc, kind, &wopts);
    let after = now_ms();
    let mut dr = dst.reader();
    {
        let mut sr = StandaloneReader(&mut sc);
        wait_heartbeats(&mut sr, &mut dr, after, &ss);
        assert_no_differences(&compare_sources(&mut sr, &mut dr, &[HEARTBEAT], &opts()));
    }
    let log = ss.log();
    assert!(
        !log.contains("target rejected a write"),
        "a write was rejected:\n{log}"
    );
    stop(&mut ss);
}

#[test]
fn standalone_with_databases_to_cluster_needs_db_map() {
    let src = RedisServer::start(ServerKind::Redis70);
    let dst = RedisCluster::start(ServerKind::Redis70, 3, 0);
    let mut sc = src.client();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut sc).expect("SELECT");
    let _: () = redis::cmd("SET")
        .arg("in-db-3")
        .arg("v")
        .query(&mut sc)
        .expect("SET");
    let (code, log) = pair_to_exit("run", &src.url(), &dst.seed_url(), &[]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("database(s) [3]") && log.contains("db_map"),
        "{log}"
    );
    assert_eq!(dst.dbsize(), 0, "nothing may be written");

    // With the mapping it syncs db 3 into db 0.
    let state = tempfile::tempdir().expect("state dir");
    let mut ss = spawn(&src.url(), &dst.seed_url(), &state, &["--db-map", "3=0"]);
    let mut reader = dst.reader();
    let ok = wait_until(Duration::from_secs(30), || {
        let k = b"in-db-3".as_slice();
        let v: Option<String> = redis::cmd("GET")
            .arg(k)
            .query(reader.conn_for(k))
            .unwrap_or(None);
        v.as_deref() == Some("v")
    });
    assert!(
        ok,
        "db 3 key did not arrive in db 0 of the cluster:\n{}",
        ss.log_tail(30)
    );
    stop(&mut ss);
}

#[test]
fn master_with_another_password_is_named() {
    let src = RedisCluster::start(ServerKind::Redis70, 3, 0);
    let dst = RedisServer::start(ServerKind::Redis70);
    let masters = src.masters();
    for (i, m) in masters.iter().enumerate() {
        let pw = if i == 2 {
            "other-secret"
        } else {
            "shared-secret"
        };
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(pw)
            .query(&mut m.client())
            .expect("CONFIG SET requirepass");
    }
    let url = format!("redis://:shared-secret@{}", masters[0].addr());
    let (code, log) = pair_to_exit("run", &url, &dst.url(), &[]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains(&format!("source master {}", masters[2].addr()))
            && log.contains("rejected the password"),
        "the failing master must be named:\n{log}"
    );
    assert!(
        !log.contains("shared-secret") && !log.contains("other-secret"),
        "password leaked:\n{log}"
    );
    let n: u64 = redis::cmd("DBSIZE")
        .query(&mut dst.client())
        .expect("DBSIZE");
    assert_eq!(n, 0, "nothing may be written to the target");
}

#[test]
fn uncovered_slot_is_a_clear_error() {
    let src = RedisCluster::start(ServerKind::Redis70, 3, 0);
    let dst = RedisServer::start(ServerKind::Redis70);
    let owner = src.node_for_key(b"{t0}");
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("{t0}")
        .query(&mut owner.client())
        .expect("KEYSLOT");
    let _: () = redis::cmd("CLUSTER")
        .arg("DELSLOTS")
        .arg(slot)
        .query(&mut owner.client())
        .expect("DELSLOTS");
    let (code, log) = pair_to_exit("run", &src.seed_url(), &dst.url(), &[]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains(&format!("slots {slot} are not served by any master")),
        "{log}"
    );
}

#[test]
fn cluster_source_from_replicas_with_prefer_replica() {
    let kind = ServerKind::Redis70;
    let src = RedisCluster::start(kind, 3, 1);
    let dst = RedisCluster::start(kind, 3, 0);
    let tags = populate_cluster(&src);
    let state = tempfile::tempdir().expect("state dir");
    let mut ss = spawn(
        &src.seed_url(),
        &dst.seed_url(),
        &state,
        &["--prefer-replica"],
    );
    wait_full_syncs(&mut ss);
    let log = ss.log();
    assert_eq!(
        log.matches("replicating from a replica of this master")
            .count(),
        3,
        "{log}"
    );
    // Every replica shows shardsync as its own replica; no master does.
    for r in src.replicas() {
        let info = r.info("replication");
        assert!(
            info.contains("connected_slaves:1"),
            "replica {} does not serve shardsync:\n{info}",
            r.addr()
        );
    }
    for m in src.masters() {
        let info = m.info("replication");
        assert!(
            info.contains("connected_slaves:1"),
            "master {} must only serve its own replica:\n{info}",
            m.addr()
        );
    }
    workload_cluster(&src, &tags);
    let after = now_ms();
    let (mut sr, mut dr) = (src.reader(), dst.reader());
    wait_heartbeats(&mut sr, &mut dr, after, &ss);
    assert_no_differences(&compare_sources(&mut sr, &mut dr, &[HEARTBEAT], &opts()));
    assert_shard_labels_are_masters(&ss, &src);
    stop(&mut ss);
}
