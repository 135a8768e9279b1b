//! Fault injection with clusters on either side, each ending with a key-by-key comparison of the
//! whole source and the whole target: a source failover (`CLUSTER FAILOVER` on a replica, and a
//! killed master) continues with `+CONTINUE` on the promoted replica, without a new full sync;
//! target slots resharded while writes flow follow `MOVED`/`ASK`; a target failover hands the
//! old master's writes to the new one. A background writer keeps writing through every fault.

use crate::common;
use crate::common::util::now_ms;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::cluster::{KeySource, RedisCluster, compare_sources, key_slot};
use common::compare::{CompareOptions, assert_no_differences};
use common::status::{full_sync_done, started, status_addr_arg};
use common::util::info_field;
use common::*;

const HEARTBEAT: &[u8] = b"shardsync:heartbeat*";

/// Slot → master port, asked of the first reachable node among `ports`.
fn slot_map(ports: &[u16]) -> Option<Vec<u16>> {
    for p in ports {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{p}")) else {
            continue;
        };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(300)) else {
            continue;
        };
        let Ok(redis::Value::Array(ranges)) = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<redis::Value>(&mut c)
        else {
            continue;
        };
        let mut map = vec![0u16; 16384];
        for r in ranges {
            let redis::Value::Array(parts) = r else {
                continue;
            };
            if let (
                Some(redis::Value::Int(lo)),
                Some(redis::Value::Int(hi)),
                Some(redis::Value::Array(m)),
            ) = (parts.first(), parts.get(1), parts.get(2))
                && let Some(redis::Value::Int(port)) = m.get(1)
            {
                for s in *lo..=*hi {
                    map[s as usize] = *port as u16;
                }
            }
        }
        return Some(map);
    }
    None
}

/// The master port serving `slot`.
fn owner(ports: &[u16], slot: u16) -> Option<u16> {
    slot_map(ports)
        .map(|m| m[slot as usize])
        .filter(|&p| p != 0)
}

/// Writes INCR/RPUSH/SET/HSET on many keys (spread over every master) until stopped, following
/// the cluster through failovers. Returns the number of writes that succeeded.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Load {
    fn start(ports: Vec<u16>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s, d) = (stop.clone(), done.clone());
        let handle = std::thread::spawn(move || {
            let mut i = 0u64;
            let mut conns: std::collections::HashMap<u16, redis::Connection> = Default::default();
            let mut map = slot_map(&ports).unwrap_or_default();
            while !s.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("{{load:{}}}", i % 200);
                let port = map
                    .get(key_slot(key.as_bytes()) as usize)
                    .copied()
                    .unwrap_or(0);
                if port == 0 {
                    std::thread::sleep(Duration::from_millis(50));
                    map = slot_map(&ports).unwrap_or_default();
                    continue;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = conns.entry(port) {
                    let c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                        .and_then(|cl| cl.get_connection_with_timeout(Duration::from_millis(500)));
                    match c {
                        Ok(c) => {
                            e.insert(c);
                        }
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(50));
                            map = slot_map(&ports).unwrap_or_default();
                            continue;
                        }
                    }
                }
                let Some(c) = conns.get_mut(&port) else {
                    continue;
                };
                let cmd = match i % 4 {
                    0 => redis::cmd("INCR").arg(format!("{key}:n")).clone(),
                    1 => redis::cmd("RPUSH").arg(format!("{key}:l")).arg(i).clone(),
                    2 => redis::cmd("SET").arg(format!("{key}:s")).arg(i).clone(),
                    _ => redis::cmd("HSET")
                        .arg(format!("{key}:h"))
                        .arg(i % 17)
                        .arg(i)
                        .clone(),
                };
                match cmd.query::<redis::Value>(c) {
                    Ok(redis::Value::ServerError(_)) | Err(_) => {
                        conns.remove(&port);
                        std::thread::sleep(Duration::from_millis(20));
                        map = slot_map(&ports).unwrap_or_default();
                    }
                    Ok(_) => {
                        d.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if i.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Load {
            stop,
            done,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("load thread");
        }
        self.done.load(Ordering::Relaxed)
    }
}

fn ports(c: &RedisCluster) -> Vec<u16> {
    c.nodes().iter().map(|n| n.port()).collect()
}

fn spawn(src: &str, dst: &str, state: &tempfile::TempDir) -> Shardsync {
    let mut ss = Shardsync::spawn(&[
        "run",
        "--source",
        src,
        "--target",
        dst,
        "--state-dir",
        state.path().to_str().expect("utf-8"),
        "--metrics-addr",
        &status_addr_arg(),
    ]);
    ss.wait_status(Duration::from_secs(30), "replication started", started);
    ss
}

/// Waits until every heartbeat key of the source holds a time ≥ `after` on the target, reading
/// each key from the node that owns it now.
fn wait_heartbeats(src: &[u16], dst: &[u16], after: u64, ss: &Shardsync) {
    let mut keys = Vec::new();
    for p in src {
        if let Ok(mut c) =
            redis::Client::open(format!("redis://127.0.0.1:{p}")).and_then(|c| c.get_connection())
        {
            let ks: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg("shardsync:heartbeat*")
                .query(&mut c)
                .unwrap_or_default();
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).unwrap_or_default();
            if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
                keys.extend(ks);
            }
        }
    }
    assert!(!keys.is_empty(), "no heartbeat keys on the source");
    let ok = wait_until(Duration::from_secs(90), || {
        keys.iter().all(|k| {
            let Some(port) = owner(dst, key_slot(k)) else {
                return false;
            };
            let Ok(mut c) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .and_then(|c| c.get_connection())
            else {
                return false;
            };
            let v: Option<String> = redis::cmd("GET").arg(k).query(&mut c).unwrap_or(None);
            v.and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|v| v >= after)
        })
    });
    assert!(
        ok,
        "heartbeats did not reach the target; log:\n{}",
        ss.log_tail(60)
    );
}

/// Asserts that `src` and `dst` hold the same keys and values (heartbeats and functions aside).
fn compare_keys(src: &mut dyn KeySource, dst: &mut dyn KeySource) {
    let opts = CompareOptions {
        compare_functions: false,
        ..Default::default()
    };
    assert_no_differences(&compare_sources(src, dst, &[HEARTBEAT], &opts));
}

fn compare(src: &RedisCluster, dst: &RedisCluster) {
    compare_keys(&mut src.reader(), &mut dst.reader());
}

/// Fills `src`, starts shardsync from `src` to `dst` on a fresh state dir and waits until the
/// RDB of each of the 3 source shards has been received.
fn populate_and_sync(src: &RedisCluster, dst: &RedisCluster) -> (tempfile::TempDir, Shardsync) {
    populate(src);
    let state = tempfile::tempdir().expect("state");
    let mut ss = spawn(&src.seed_url(), &dst.seed_url(), &state);
    ss.wait_status(
        Duration::from_secs(60),
        "every full sync applied",
        full_sync_done,
    );
    (state, ss)
}

/// Stops the background writer; it must have written through the fault.
fn finish_load(load: Load) {
    let writes = load.finish();
    assert!(writes > 100, "the load wrote only {writes} times");
}

fn stop(ss: &mut Shardsync) -> String {
    let status = ss.terminate();
    let log = ss.log();
    assert!(
        status.success(),
        "shardsync did not exit 0: {status:?}\n{}",
        ss.log_tail(60)
    );
    assert!(!log.contains("panicked"), "shardsync panicked:\n{log}");
    log
}

fn populate(c: &RedisCluster) {
    for (i, m) in c.masters().into_iter().enumerate() {
        let mut conn = m.client();
        // Keys that this master serves: pick them by slot.
        let mut n = 0;
        let mut j = 0u64;
        while n < 2000 {
            j += 1;
            let k = format!("pre:{i}:{j}");
            if c.node_for_key(k.as_bytes()).port() != m.port() {
                continue;
            }
            let _: () = redis::cmd("SET")
                .arg(&k)
                .arg(j)
                .query(&mut conn)
                .expect("SET");
            n += 1;
        }
    }
}

/// Source failover with `CLUSTER FAILOVER` (graceful) or by killing the master.
fn source_failover(kill: bool) {
    let kind = ServerKind::Redis70;
    let mut src = RedisCluster::start(kind, 3, 1);
    let dst = RedisCluster::start(kind, 3, 0);
    let (_state, mut ss) = populate_and_sync(&src, &dst);
    let names: BTreeSet<String> = src.masters().iter().map(|m| m.addr()).collect();
    let load = Load::start(ports(&src));
    ss.wait_stream_flows(16 << 10, Duration::from_secs(20));

    // The master to fail over: not node 0 (the harness reads the slot map from it).
    let victim_port = src
        .masters()
        .iter()
        .map(|m| m.port())
        .find(|&p| p != src.nodes()[0].port())
        .expect("a master");
    let victim_id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(
            &mut src
                .nodes()
                .iter()
                .find(|n| n.port() == victim_port)
                .expect("victim")
                .client(),
        )
        .expect("MYID");
    let replica_port = src
        .replicas()
        .iter()
        .find(|r| {
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut r.client())
                .unwrap_or_default();
            nodes
                .lines()
                .any(|l| l.contains("myself") && l.contains(&victim_id))
        })
        .map(|r| r.port())
        .expect("a replica of the victim");
    if kill {
        let idx = src
            .nodes()
            .iter()
            .position(|n| n.port() == victim_port)
            .expect("victim index");
        src.nodes_mut()[idx].kill();
    } else {
        let replica = src
            .nodes()
            .iter()
            .find(|n| n.port() == replica_port)
            .expect("replica");
        let _: () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut replica.client())
            .expect("CLUSTER FAILOVER");
    }
    let promoted = wait_until(Duration::from_secs(40), || {
        let r = src
            .nodes()
            .iter()
            .find(|n| n.port() == replica_port)
            .expect("replica");
        info_field(&r.info("replication"), "role").as_deref() == Some("master")
    });
    assert!(promoted, "the replica was not promoted");
    // The load goes on until the stream flows again after the failover.
    ss.wait_stream_flows(16 << 10, Duration::from_secs(30));
    finish_load(load);

    let live: Vec<u16> = src
        .nodes()
        .iter()
        .filter(|n| n.port() != victim_port || !kill)
        .map(|n| n.port())
        .collect();
    wait_heartbeats(&live, &ports(&dst), now_ms(), &ss);
    if kill {
        // The dead master's keys now live on the promoted replica; compare what is alive.
        compare_keys(&mut LiveCluster::new(&live), &mut dst.reader());
    } else {
        compare(&src, &dst);
    }
    // One shard, one series: after the failover every `shard` label is still a master's
    // address at start (the stable name), never the promoted replica's.
    let addr = ss.status_addr().expect("status address");
    let (_, metrics) = util::http_get(&addr, "/metrics").expect("GET /metrics");
    let labels: BTreeSet<String> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| Some(l.split_once("shard=\"")?.1.split_once('"')?.0.to_string()))
        .collect();
    assert_eq!(labels, names, "shard labels of /metrics after the failover");
    let log = stop(&mut ss);
    assert!(
        log.contains("source shard moved to another master"),
        "no failover seen:\n{log}"
    );
    assert!(
        log.contains("partial resync accepted (+CONTINUE)"),
        "no partial resync:\n{log}"
    );
    assert_eq!(
        log.matches("full sync started").count(),
        3,
        "a failover must not cause a full sync:\n{log}"
    );
}

/// A cluster seen through the nodes that are still alive.
struct LiveCluster {
    conns: Vec<(u16, redis::Connection)>,
    ports: Vec<u16>,
}

impl LiveCluster {
    fn new(ports: &[u16]) -> LiveCluster {
        let conns = ports
            .iter()
            .filter_map(|p| {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{p}"))
                    .ok()?
                    .get_connection()
                    .ok()?;
                let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).ok()?;
                matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
                    .then_some((*p, c))
            })
            .collect();
        LiveCluster {
            conns,
            ports: ports.to_vec(),
        }
    }
}

impl KeySource for LiveCluster {
    fn all_keys(&mut self) -> std::collections::BTreeSet<Vec<u8>> {
        self.conns
            .iter_mut()
            .flat_map(|(_, c)| common::compare::scan_keys(c))
            .collect()
    }
    fn conn_for(&mut self, key: &[u8]) -> &mut redis::Connection {
        let port = owner(&self.ports, key_slot(key)).expect("owner");
        &mut self
            .conns
            .iter_mut()
            .find(|(p, _)| *p == port)
            .expect("owner is alive")
            .1
    }
}

#[test]
fn source_cluster_failover_graceful() {
    source_failover(false);
}

#[test]
fn source_cluster_master_killed() {
    source_failover(true);
}

#[test]
fn target_resharding_under_load() {
    let kind = ServerKind::Redis70;
    let src = RedisCluster::start(kind, 3, 0);
    let dst = RedisCluster::start(kind, 3, 0);
    let (_state, mut ss) = populate_and_sync(&src, &dst);
    let load = Load::start(ports(&src));
    let masters = dst.masters();
    let id = |n: &RedisServer| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut n.client())
            .expect("MYID")
    };
    let (from, to) = (id(masters[0]), id(masters[1]));
    let out = std::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "reshard",
            &masters[0].addr(),
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
        ])
        .args([
            "--cluster-slots",
            "3000",
            "--cluster-yes",
            "--cluster-pipeline",
            "50",
        ])
        .output()
        .expect("redis-cli --cluster reshard");
    assert!(
        out.status.success(),
        "reshard failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dst.wait_ok(Duration::from_secs(30));
    ss.wait_stream_flows(16 << 10, Duration::from_secs(30));
    finish_load(load);
    wait_heartbeats(&ports(&src), &ports(&dst), now_ms(), &ss);
    compare(&src, &dst);
    let log = stop(&mut ss);
    assert!(
        !log.contains("target rejected a write"),
        "a write was rejected:\n{log}"
    );
}

#[test]
fn target_cluster_failover_under_load() {
    let kind = ServerKind::Redis70;
    let src = RedisCluster::start(kind, 3, 0);
    let dst = RedisCluster::start(kind, 3, 1);
    let (_state, mut ss) = populate_and_sync(&src, &dst);
    let load = Load::start(ports(&src));
    ss.wait_stream_flows(16 << 10, Duration::from_secs(20));
    let replica = dst.replicas()[0];
    let _: () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query(&mut replica.client())
        .expect("CLUSTER FAILOVER");
    let promoted = wait_until(Duration::from_secs(30), || {
        info_field(&replica.info("replication"), "role").as_deref() == Some("master")
    });
    assert!(promoted, "target replica not promoted");
    ss.wait_stream_flows(16 << 10, Duration::from_secs(30));
    finish_load(load);
    wait_heartbeats(&ports(&src), &ports(&dst), now_ms(), &ss);
    compare_keys(&mut src.reader(), &mut LiveCluster::new(&ports(&dst)));
    stop(&mut ss);
}

/// A restart whose checkpoint the source can no longer serve (backlog overrun) forces a full
/// sync of that shard only; its slots are cleared on the target first, so keys deleted on the
/// source while shardsync was down do not survive, and the other shards resume with `+CONTINUE`.
#[test]
fn repeated_full_sync_of_one_shard_clears_its_slots_only() {
    let kind = ServerKind::Redis70;
    let src = RedisCluster::start_with(kind, 3, 0, &["--repl-backlog-size", "16kb"]);
    let dst = RedisCluster::start(kind, 3, 0);
    let (state, mut ss) = populate_and_sync(&src, &dst);
    // Every shard has a checkpoint to resume from.
    let checkpoints = || {
        std::fs::read_dir(state.path())
            .map(|d| {
                d.filter_map(Result::ok)
                    // Not `checkpoint-….json.tmp`: a checkpoint being written does not count
                    // (counting it made the test go on with a shard that had none yet).
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.starts_with("checkpoint-") && n.ends_with(".json")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || checkpoints() == 3),
        "not every shard wrote a checkpoint"
    );
    ss.kill();

    // While shardsync is down: delete keys on one master and overrun its backlog.
    let victim = src.masters()[1];
    let mut c = victim.client();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("pre:*").query(&mut c).expect("KEYS");
    assert!(keys.len() > 100);
    for k in keys.iter().take(100) {
        let _: () = redis::cmd("DEL").arg(k).query(&mut c).expect("DEL");
    }
    let filler = "x".repeat(1000);
    for i in 0..200 {
        let k = format!("pre:filler:{i}");
        if src.node_for_key(k.as_bytes()).port() == victim.port() {
            let _: () = redis::cmd("SET")
                .arg(&k)
                .arg(&filler)
                .query(&mut c)
                .expect("SET");
        }
    }
    let _: () = redis::cmd("DEL")
        .arg(&keys[100])
        .query(&mut c)
        .expect("DEL");

    let mut ss = spawn(&src.seed_url(), &dst.seed_url(), &state);
    wait_heartbeats(&ports(&src), &ports(&dst), now_ms(), &ss);
    compare(&src, &dst);
    let log = stop(&mut ss);
    assert_eq!(
        log.matches("full sync started").count(),
        1,
        "only the overrun shard syncs again:\n{log}"
    );
    assert_eq!(
        log.matches("partial resync accepted (+CONTINUE)").count(),
        2,
        "{log}"
    );
    assert!(
        log.contains("cleared the shard's keys from the target"),
        "{log}"
    );
}
