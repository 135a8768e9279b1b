//! Self-tests of the integration harness, validated against native Redis/Valkey
//! replication (independent of shardsync's own replication code).

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::{ClusterReader, RedisCluster, StandaloneReader, compare_sources, key_slot};
use common::compare::{CompareOptions, Difference, assert_no_differences, compare_servers_with};
use common::dataset::FUNCTION_LIBRARY;
use common::workload::NONDETERMINISTIC_KEYS;
use common::{
    DatasetOptions, RedisServer, ServerKind, Shardsync, WorkloadOptions, assert_same,
    compare_servers, dbsize_all, populate_typed_dataset, run_workload,
};

const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Commands the workload must send on every server kind.
const REQUIRED_COMMANDS: &[&str] = &[
    "APPEND",
    "BITOP",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "DECR",
    "DECRBY",
    "DEL",
    "EVAL",
    "EVALSHA",
    "EXEC",
    "EXPIRE",
    "EXPIREAT",
    "GEOADD",
    "GETSET",
    "HDEL",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HMSET",
    "HSET",
    "HSETNX",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "LINSERT",
    "LPOP",
    "LPUSH",
    "LPUSHX",
    "LREM",
    "LSET",
    "LTRIM",
    "MOVE",
    "MSET",
    "MSETNX",
    "MULTI",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PFADD",
    "PFMERGE",
    "PSETEX",
    "PUBLISH",
    "RENAME",
    "RENAMENX",
    "RESTORE",
    "RPOP",
    "RPOPLPUSH",
    "RPUSH",
    "RPUSHX",
    "SADD",
    "SDIFFSTORE",
    "SET",
    "SETBIT",
    "SETEX",
    "SETNX",
    "SETRANGE",
    "SINTERSTORE",
    "SMOVE",
    "SPOP",
    "SREM",
    "SUNIONSTORE",
    "ZADD",
    "ZINCRBY",
    "ZINTERSTORE",
    "ZREM",
    "ZREMRANGEBYLEX",
    "ZUNIONSTORE",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "SWAPDB",
    "UNLINK",
    "FLUSHDB",
    "XADD",
    "XDEL",
    "XTRIM",
    "XREADGROUP",
    "XACK",
    "XCLAIM",
    "XGROUP",
];

fn union_dbs(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter()
        .chain(b)
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Populate a master, attach a native replica, run the workload, and require the
/// harness comparison to find the two identical.
fn native_roundtrip(master_kind: ServerKind, replica_kind: ServerKind) {
    let master = RedisServer::start(master_kind);
    let replica = RedisServer::start(replica_kind);
    let mut m = master.client();

    let dopts = DatasetOptions::default();
    let summary = populate_typed_dataset(&mut m, master_kind, &dopts);
    assert!(
        summary.keys_per_db[&0] > 60,
        "dataset db 0 too small: {summary:?}"
    );
    assert!(summary.keys_per_db[&1] >= 9 && summary.keys_per_db[&3] >= 9);
    assert_eq!(
        summary.function_libraries.is_empty(),
        !master_kind.has_functions()
    );

    replica.replicaof(&master);
    replica.wait_replica_synced(&master, SYNC_TIMEOUT);

    let wopts = WorkloadOptions::default();
    let ws = run_workload(&mut m, master_kind, &wopts);
    let missing: Vec<&&str> = REQUIRED_COMMANDS
        .iter()
        .filter(|c| !ws.executed.contains(**c))
        .collect();
    assert!(missing.is_empty(), "workload never sent {missing:?}");
    assert!(ws.commands > wopts.volume);
    replica.wait_replica_synced(&master, SYNC_TIMEOUT);

    let dbs = union_dbs(&dopts.dbs, &wopts.dbs());
    let mut r = replica.client();
    assert_same(&mut m, &mut r, &dbs, &[]);

    // The comparison really looked at data.
    let sizes = dbsize_all(&mut m);
    assert!(sizes[&0] > 1100, "db 0 has {sizes:?}");
    assert_eq!(
        sizes.get(&5),
        Some(&1),
        "FLUSHDB db keeps only the post-flush key"
    );
    assert_eq!(sizes, dbsize_all(&mut r));
    // Keys that expired mid-run are gone on both sides.
    let short: Option<Vec<u8>> = redis::cmd("GET")
        .arg("w:short-0")
        .query(&mut r)
        .expect("GET expired key on replica");
    assert_eq!(short, None);
}

#[test]
fn native_replication_redis70() {
    native_roundtrip(ServerKind::Redis70, ServerKind::Redis70);
}

#[test]
fn native_replication_redis60() {
    native_roundtrip(ServerKind::Redis60, ServerKind::Redis60);
}

#[test]
fn native_replication_valkey91() {
    native_roundtrip(ServerKind::Valkey91, ServerKind::Valkey91);
}

#[test]
fn native_replication_redis62() {
    native_roundtrip(ServerKind::Redis62, ServerKind::Redis62);
}

/// Cross-version: the comparison must tolerate encoding/formatting differences
/// (HLL sparse/dense, double formatting, XINFO fields) between 6.0 and Valkey 9.
#[test]
fn native_replication_redis60_to_valkey91() {
    native_roundtrip(ServerKind::Redis60, ServerKind::Valkey91);
}

/// Master + writable replica with a small synced dataset; returns (master, replica).
fn synced_pair(kind: ServerKind) -> (RedisServer, RedisServer) {
    let master = RedisServer::start(kind);
    let replica = RedisServer::start_with(kind, &["--replica-read-only", "no"]);
    let opts = DatasetOptions {
        big_value_bytes: 4096,
        large_len: 1100,
        ..Default::default()
    };
    populate_typed_dataset(&mut master.client(), kind, &opts);
    replica.replicaof(&master);
    replica.wait_replica_synced(&master, SYNC_TIMEOUT);
    assert_same(&mut master.client(), &mut replica.client(), &opts.dbs, &[]);
    (master, replica)
}

fn diffs_of(master: &RedisServer, replica: &RedisServer) -> Vec<Difference> {
    compare_servers(&mut master.client(), &mut replica.client(), &[0, 1, 3], &[])
}

fn assert_single_difference(diffs: &[Difference], db: u32, key: &[u8], contains: &str) {
    assert_eq!(
        diffs.len(),
        1,
        "expected exactly one difference, got {diffs:#?}"
    );
    let d = &diffs[0];
    assert_eq!(d.db, Some(db), "{d}");
    assert_eq!(d.key, key, "{d}");
    assert!(
        d.what.contains(contains),
        "difference {d} should mention {contains:?}"
    );
    // The rendered message names the key (binary bytes escaped).
    assert!(d.to_string().contains(&common::util::printable(key)), "{d}");
}

#[test]
fn negative_changed_value_is_reported() {
    let (master, replica) = synced_pair(ServerKind::Redis70);
    redis::cmd("SET")
        .arg("str:int")
        .arg("99999")
        .query::<()>(&mut replica.client())
        .expect("SET on writable replica");
    assert_single_difference(
        &diffs_of(&master, &replica),
        0,
        b"str:int",
        "string value differs",
    );
}

#[test]
fn negative_changed_collection_member_is_reported() {
    let (master, replica) = synced_pair(ServerKind::Redis60);
    let mut r = replica.client();
    redis::cmd("SELECT")
        .arg(3)
        .query::<()>(&mut r)
        .expect("SELECT 3");
    redis::cmd("ZADD")
        .arg("zset:small")
        .arg("0.26")
        .arg("q")
        .query::<()>(&mut r)
        .expect("ZADD on writable replica");
    assert_single_difference(
        &diffs_of(&master, &replica),
        3,
        b"zset:small",
        "zset differs",
    );
}

#[test]
fn negative_changed_ttl_is_reported() {
    let (master, replica) = synced_pair(ServerKind::Redis70);
    redis::cmd("EXPIRE")
        .arg("ttl:long")
        .arg(1000)
        .query::<()>(&mut replica.client())
        .expect("EXPIRE on writable replica");
    assert_single_difference(&diffs_of(&master, &replica), 0, b"ttl:long", "ttl differs");
}

#[test]
fn negative_removed_ttl_is_reported() {
    let (master, replica) = synced_pair(ServerKind::Valkey91);
    redis::cmd("PERSIST")
        .arg("ttl:hash")
        .query::<()>(&mut replica.client())
        .expect("PERSIST on writable replica");
    assert_single_difference(&diffs_of(&master, &replica), 0, b"ttl:hash", "ttl differs");
}

#[test]
fn negative_deleted_key_is_reported() {
    let (master, replica) = synced_pair(ServerKind::Redis70);
    redis::cmd("DEL")
        .arg("hash:small")
        .query::<()>(&mut replica.client())
        .expect("DEL on writable replica");
    assert_single_difference(
        &diffs_of(&master, &replica),
        0,
        b"hash:small",
        "missing on destination",
    );
}

#[test]
fn negative_extra_key_is_reported() {
    let (master, replica) = synced_pair(ServerKind::Redis70);
    let mut r = replica.client();
    redis::cmd("SELECT")
        .arg(1)
        .query::<()>(&mut r)
        .expect("SELECT 1");
    redis::cmd("SET")
        .arg(&b"extra\x00key"[..])
        .arg("x")
        .query::<()>(&mut r)
        .expect("SET on writable replica");
    assert_single_difference(
        &diffs_of(&master, &replica),
        1,
        b"extra\x00key",
        "extra on destination",
    );
}

#[test]
fn negative_stream_pending_entry_is_reported() {
    let (master, replica) = synced_pair(ServerKind::Redis70);
    // Rewind g2 to 0 on the replica only, then deliver one entry to a new consumer.
    let mut r = replica.client();
    redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g1")
        .arg("zed")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg("stream:main")
        .arg(">")
        .query::<redis::Value>(&mut r)
        .expect("XREADGROUP on writable replica");
    let diffs = diffs_of(&master, &replica);
    assert_single_difference(&diffs, 0, b"stream:main", "stream differs");
    let what = &diffs[0].what;
    assert!(what.contains("pending count"), "{what}");
    assert!(
        what.contains("zed"),
        "consumer list should name the new consumer: {what}"
    );
    assert!(what.contains("last-delivered-id"), "{what}");
}

#[test]
fn negative_function_library_is_reported() {
    let (master, replica) = synced_pair(ServerKind::Redis70);
    redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg(FUNCTION_LIBRARY)
        .query::<()>(&mut replica.client())
        .expect("FUNCTION DELETE on writable replica");
    let diffs = diffs_of(&master, &replica);
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert_eq!(diffs[0].db, None);
    assert_eq!(diffs[0].key, FUNCTION_LIBRARY.as_bytes());
}

#[test]
fn ttl_tolerance_and_ignore_list() {
    let (master, replica) = synced_pair(ServerKind::Redis70);
    let mut r = replica.client();
    // 300 ms off is within the default 1000 ms tolerance ...
    let pttl: i64 = redis::cmd("PTTL")
        .arg("ttl:ms")
        .query(&mut r)
        .expect("PTTL on replica");
    redis::cmd("PEXPIRE")
        .arg("ttl:ms")
        .arg(pttl - 300)
        .query::<()>(&mut r)
        .expect("PEXPIRE on replica");
    assert!(diffs_of(&master, &replica).is_empty());
    // ... but not within 100 ms.
    let strict = CompareOptions {
        ttl_tolerance_ms: 100,
        ..Default::default()
    };
    let diffs = compare_servers_with(&mut master.client(), &mut r, &[0], &[], &strict);
    assert_single_difference(&diffs, 0, b"ttl:ms", "ttl differs");
    // Ignored keys (exact and prefix*) are skipped.
    redis::cmd("SET")
        .arg("heartbeat:1")
        .arg("x")
        .query::<()>(&mut r)
        .expect("SET heartbeat");
    redis::cmd("SET")
        .arg("str:raw")
        .arg("changed")
        .query::<()>(&mut r)
        .expect("SET str:raw");
    let diffs = compare_servers(
        &mut master.client(),
        &mut r,
        &[0],
        &[b"heartbeat:*", b"str:raw"],
    );
    assert!(diffs.is_empty(), "{diffs:#?}");
}

#[test]
fn server_password_restart_and_kill() {
    let mut s = RedisServer::start_with_password(ServerKind::Redis62, "s3cret pw", &[]);
    assert!(s.url().contains("s3cret"));
    assert_ne!(s.port(), 6379);
    let mut c = s.client();
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut c)
        .expect("SET with auth");
    // Without the password the server refuses.
    let anon = redis::Client::open(format!("redis://127.0.0.1:{}", s.port()))
        .expect("parse URL")
        .get_connection()
        .and_then(|mut c| redis::cmd("GET").arg("k").query::<Option<String>>(&mut c));
    assert!(anon.is_err(), "unauthenticated GET should fail: {anon:?}");
    let port = s.port();
    s.restart();
    assert_eq!(s.port(), port);
    assert!(s.log_tail().contains("Ready to accept connections"));
    s.kill();
    assert!(!s.is_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "killed server still listening"
    );
}

#[test]
fn every_kind_starts_and_reports_its_version() {
    for kind in ServerKind::all() {
        let s = RedisServer::start(kind);
        let info = s.info("server");
        let (major, minor) = kind.redis_version();
        if kind.is_valkey() {
            assert!(info.contains("valkey_version:9.1"), "{info}");
        } else {
            assert!(
                info.contains(&format!("redis_version:{major}.{minor}")),
                "{info}"
            );
        }
    }
}

#[test]
fn shardsync_wrapper_captures_output_and_exit() {
    let (status, log) = Shardsync::run_to_exit(&["--help"], Duration::from_secs(30));
    assert!(status.code().is_some(), "exited normally: {status:?}");
    assert!(!log.trim().is_empty(), "log should capture stdout/stderr");

    let mut p = Shardsync::spawn(&["--help"]);
    let status = p.terminate();
    assert!(status.code().is_some() || status.signal_is_some());
    assert!(p.log_path().exists());
}

trait SignalIsSome {
    fn signal_is_some(&self) -> bool;
}

impl SignalIsSome for std::process::ExitStatus {
    fn signal_is_some(&self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        self.signal().is_some()
    }
}

#[test]
fn cluster_three_masters() {
    let mut cluster = RedisCluster::start(ServerKind::Redis70, 3, 1);
    assert_eq!(cluster.masters().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);
    let standalone = RedisServer::start(ServerKind::Redis70);
    let mut s = standalone.client();
    for i in 0..30 {
        let key = format!("key:{i}");
        let node = cluster.node_for_key(key.as_bytes());
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query(&mut node.client())
            .expect("CLUSTER KEYSLOT");
        assert_eq!(slot, key_slot(key.as_bytes()));
        for conn in [&mut node.client(), &mut s] {
            redis::cmd("SET")
                .arg(&key)
                .arg(i)
                .query::<()>(conn)
                .expect("SET on slot owner / standalone");
        }
    }
    let tagged = b"{tag}a";
    assert_eq!(key_slot(tagged), key_slot(b"{tag}b"));
    assert_eq!(cluster.dbsize(), 30);

    let opts = CompareOptions::default();
    let diffs = compare_sources(
        &mut StandaloneReader(&mut s),
        &mut cluster.reader(),
        &[],
        &opts,
    );
    assert_no_differences(&diffs);
    // A difference is found through the routing too.
    redis::cmd("SET")
        .arg("key:7")
        .arg("changed")
        .query::<()>(&mut cluster.node_for_key(b"key:7").client())
        .expect("SET key:7");
    let mut reader: ClusterReader = cluster.reader();
    let diffs = compare_sources(&mut StandaloneReader(&mut s), &mut reader, &[], &opts);
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert_eq!(diffs[0].key, b"key:7");
    cluster.kill();
}

fn nondeterministic(prefix: &str) -> Vec<Vec<u8>> {
    NONDETERMINISTIC_KEYS
        .iter()
        .map(|k| format!("{prefix}{k}").into_bytes())
        .collect()
}

/// Two servers fed the same dataset and workload independently end up identical
/// (except server-generated stream IDs): the inputs are deterministic, and the
/// comparison copes with Redis 7.0 vs Valkey 9.1 differences.
#[test]
fn dataset_and_workload_are_deterministic() {
    let ignore_owned = nondeterministic("");
    let ignore: Vec<&[u8]> = ignore_owned.iter().map(|k| k.as_slice()).collect();
    for (a, b) in [
        (ServerKind::Redis70, ServerKind::Redis70),
        (ServerKind::Redis70, ServerKind::Valkey91),
    ] {
        let s1 = RedisServer::start(a);
        let s2 = RedisServer::start(b);
        let dopts = DatasetOptions::small();
        let wopts = WorkloadOptions::default();
        for (server, kind) in [(&s1, a), (&s2, b)] {
            let mut c = server.client();
            populate_typed_dataset(&mut c, kind, &dopts);
            run_workload(&mut c, kind, &wopts);
        }
        let diffs = compare_servers(&mut s1.client(), &mut s2.client(), &wopts.dbs(), &ignore);
        assert!(diffs.is_empty(), "{a:?} vs {b:?}: {diffs:#?}");
    }
}

/// The cluster presets (db 0, `{tag}` keys) run on a cluster node and compare equal to
/// a standalone server fed the same way, reading through slot routing.
#[test]
fn cluster_presets_match_standalone() {
    let kind = ServerKind::Valkey91;
    let cluster = RedisCluster::start(kind, 3, 0);
    let standalone = RedisServer::start(kind);
    let dopts = DatasetOptions {
        big_value_bytes: 1 << 20,
        ..DatasetOptions::cluster("t")
    };
    let wopts = WorkloadOptions::cluster("t");
    let owner = cluster.node_for_key(b"{t}");
    for mut c in [owner.client(), standalone.client()] {
        let summary = populate_typed_dataset(&mut c, kind, &dopts);
        assert_eq!(
            summary.keys_per_db.keys().copied().collect::<Vec<_>>(),
            vec![0]
        );
        run_workload(&mut c, kind, &wopts);
    }
    assert!(cluster.dbsize() > 1000);
    let ignore_owned = nondeterministic("{t}");
    let ignore: Vec<&[u8]> = ignore_owned.iter().map(|k| k.as_slice()).collect();
    let diffs = compare_sources(
        &mut StandaloneReader(&mut standalone.client()),
        &mut cluster.reader(),
        &ignore,
        &CompareOptions::default(),
    );
    assert_no_differences(&diffs);
}

/// HyperLogLogs compare by cardinality when their bytes differ: a refreshed cardinality
/// cache alone is no difference, a different cardinality is.
#[test]
fn hyperloglog_compared_by_cardinality() {
    let (master, replica) = synced_pair(ServerKind::Redis62);
    let mut r = replica.client();
    let _: i64 = redis::cmd("PFCOUNT")
        .arg("hll:dense")
        .query(&mut r)
        .expect("PFCOUNT on replica refreshes its cache");
    let m_bytes: Vec<u8> = redis::cmd("GET")
        .arg("hll:dense")
        .query(&mut master.client())
        .expect("GET hll on master");
    let r_bytes: Vec<u8> = redis::cmd("GET")
        .arg("hll:dense")
        .query(&mut r)
        .expect("GET hll on replica");
    assert_ne!(
        m_bytes, r_bytes,
        "PFCOUNT should have changed the cache bytes"
    );
    assert!(diffs_of(&master, &replica).is_empty());

    redis::cmd("PFADD")
        .arg("hll:sparse")
        .arg("only-on-replica")
        .query::<()>(&mut r)
        .expect("PFADD on writable replica");
    assert_single_difference(&diffs_of(&master, &replica), 0, b"hll:sparse", "PFCOUNT");
}

/// With a hash-tag prefix and `cross_slot_untagged`, multi-key commands also run on
/// untagged keys that spread over slots; the tagged ones share one slot.
#[test]
fn workload_untagged_multi_key_option() {
    for kind in [ServerKind::Redis60, ServerKind::Valkey91] {
        workload_untagged_on(kind);
    }
}

fn workload_untagged_on(kind: ServerKind) {
    let s = RedisServer::start(kind);
    let mut c = s.client();
    let opts = WorkloadOptions {
        key_prefix: "{t}".into(),
        cross_slot_untagged: true,
        use_dbs: false,
        volume: 30,
        ..Default::default()
    };
    run_workload(&mut c, kind, &opts);
    let keys = common::compare::scan_keys(&mut c);
    let untagged: Vec<&Vec<u8>> = keys
        .iter()
        .filter(|k| k.starts_with(b"untagged:"))
        .collect();
    assert!(untagged.len() > 10, "untagged keys: {untagged:?}");
    let slots: BTreeSet<u16> = untagged.iter().map(|k| key_slot(k)).collect();
    assert!(
        slots.len() > 5,
        "untagged keys should spread over slots: {slots:?}"
    );
    let tagged_slots: BTreeSet<u16> = keys
        .iter()
        .filter(|k| !k.starts_with(b"untagged:"))
        .map(|k| key_slot(k))
        .collect();
    assert_eq!(tagged_slots.len(), 1, "tagged keys share one slot");
    assert!(dbsize_all(&mut c).keys().all(|db| *db == 0));
}
