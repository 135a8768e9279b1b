//! Small real Redis/Valkey clusters and cluster-aware comparison.
//!
//! [`RedisCluster::start`] launches `masters * (1 + replicas_per_master)` servers with
//! `--cluster-enabled yes`, joins them with `redis-cli --cluster create ... --cluster-yes`
//! and waits for `cluster_state:ok` on every node. Reads are routed to the node owning
//! the key's slot (CRC16 with hash tags), so [`compare_sources`] can compare a cluster
//! against a standalone server or another cluster, db 0 only.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use redis::{Connection, Value};

use super::compare::{CompareOptions, Difference, compare_key, scan_keys};
use super::server::{RedisServer, ServerKind};
use super::util::{info_field, select, wait_until};

/// Cluster hash slot of `key` (CRC16/XMODEM of the hash tag or the whole key).
pub fn key_slot(key: &[u8]) -> u16 {
    let mut k = key;
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        k = &key[open + 1..open + 1 + len];
    }
    crc16::State::<crc16::XMODEM>::calculate(k) % 16384
}

pub struct RedisCluster {
    kind: ServerKind,
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(kind: ServerKind, masters: usize, replicas_per_master: usize) -> RedisCluster {
        Self::start_with(kind, masters, replicas_per_master, &[])
    }

    /// Like [`RedisCluster::start`] with extra config args for every node.
    pub fn start_with(
        kind: ServerKind,
        masters: usize,
        replicas_per_master: usize,
        extra: &[&str],
    ) -> RedisCluster {
        Self::start_with_node_args(kind, masters, replicas_per_master, extra, |_| Vec::new())
    }

    /// Like [`RedisCluster::start_with`], plus args of each node from `per_node(index)` (e.g.
    /// its own `--tls-port`), appended after `extra`.
    pub fn start_with_node_args(
        kind: ServerKind,
        masters: usize,
        replicas_per_master: usize,
        extra: &[&str],
        mut per_node: impl FnMut(usize) -> Vec<String>,
    ) -> RedisCluster {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "5000",
            "--cluster-config-file",
            "nodes.conf",
        ];
        args.extend_from_slice(extra);
        let total = masters * (1 + replicas_per_master);
        let nodes: Vec<RedisServer> = (0..total)
            .map(|i| {
                let own = per_node(i);
                let mut all = args.clone();
                all.extend(own.iter().map(String::as_str));
                RedisServer::start_with(kind, &all)
            })
            .collect();
        let cluster = RedisCluster { kind, nodes };

        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            cmd.arg(n.addr());
        }
        cmd.arg("--cluster-replicas")
            .arg(replicas_per_master.to_string())
            .arg("--cluster-yes");
        if let Some(pw) = cluster.nodes[0].password() {
            cmd.arg("-a").arg(pw).arg("--no-auth-warning");
        }
        let out = cmd.output().expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok(Duration::from_secs(30));
        let roles_ok = wait_until(Duration::from_secs(30), || {
            cluster.masters().len() == masters
                && cluster.replicas().iter().all(|r| {
                    info_field(&r.info("replication"), "master_link_status").as_deref()
                        == Some("up")
                })
        });
        assert!(
            roles_ok,
            "cluster roles did not settle: {} masters, {} replicas",
            cluster.masters().len(),
            cluster.replicas().len()
        );
        cluster
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// Waits until every running node reports `cluster_state:ok`, all 16384 slots ok
    /// and knows every node; panics with the CLUSTER INFO of the laggards.
    pub fn wait_ok(&self, timeout: Duration) {
        let total = self.nodes.len().to_string();
        let ok = wait_until(timeout, || {
            self.nodes.iter().all(|n| {
                let info = cluster_info(n);
                info_field(&info, "cluster_state").as_deref() == Some("ok")
                    && info_field(&info, "cluster_slots_ok").as_deref() == Some("16384")
                    && info_field(&info, "cluster_known_nodes").as_deref() == Some(&total)
            })
        });
        if !ok {
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("port {}:\n{}", n.port(), cluster_info(n)))
                .collect();
            panic!("cluster not ok within {timeout:?}:\n{}", states.join("\n"));
        }
    }

    /// True if `node` answers and its own `ROLE` says master.
    fn is_master(node: &RedisServer) -> Option<bool> {
        let client = redis::Client::open(node.url()).ok()?;
        let mut c = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        let role: Vec<Value> = redis::cmd("ROLE").query(&mut c).ok()?;
        match role.first()? {
            Value::BulkString(b) => Some(b == b"master"),
            Value::SimpleString(s) => Some(s == "master"),
            _ => None,
        }
    }

    /// Running nodes whose own `ROLE` is master.
    pub fn masters(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .filter(|n| Self::is_master(n) == Some(true))
            .collect()
    }

    /// Running nodes whose own `ROLE` is replica.
    pub fn replicas(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .filter(|n| Self::is_master(n) == Some(false))
            .collect()
    }

    /// Slot → owning master port, from `CLUSTER SLOTS`.
    pub fn slot_map(&self) -> Vec<u16> {
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.nodes[0].client())
            .expect("CLUSTER SLOTS");
        let mut map = vec![0u16; 16384];
        let Value::Array(ranges) = reply else {
            panic!("CLUSTER SLOTS returned {reply:?}");
        };
        for r in ranges {
            let Value::Array(parts) = r else { continue };
            let (Value::Int(lo), Value::Int(hi), Value::Array(master)) =
                (&parts[0], &parts[1], &parts[2])
            else {
                continue;
            };
            let Value::Int(port) = master[1] else {
                continue;
            };
            for slot in *lo..=*hi {
                map[slot as usize] = port as u16;
            }
        }
        map
    }

    /// The node owning `key`'s slot.
    pub fn node_for_key(&self, key: &[u8]) -> &RedisServer {
        let port = self.slot_map()[key_slot(key) as usize];
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("slot owner is one of our nodes")
    }

    /// URL of the first master (a seed for cluster clients).
    pub fn seed_url(&self) -> String {
        self.masters().first().expect("cluster has a master").url()
    }

    /// Sum of DBSIZE over the masters.
    pub fn dbsize(&self) -> u64 {
        self.masters()
            .iter()
            .map(|m| {
                redis::cmd("DBSIZE")
                    .query::<u64>(&mut m.client())
                    .expect("DBSIZE on master")
            })
            .sum()
    }

    /// A [`KeySource`] reading this cluster.
    pub fn reader(&self) -> ClusterReader {
        ClusterReader {
            masters: self
                .masters()
                .iter()
                .map(|m| (m.port(), m.client()))
                .collect(),
            slots: self.slot_map(),
        }
    }

    /// Kills every node (Drop does this too).
    pub fn kill(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

fn cluster_info(n: &RedisServer) -> String {
    let client = redis::Client::open(n.url()).expect("parse node URL");
    client
        .get_connection_with_timeout(Duration::from_millis(500))
        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
        .unwrap_or_else(|e| format!("<unreachable: {e}>"))
}

/// Something to compare: a set of keys and a connection to read each one from (db 0).
pub trait KeySource {
    fn all_keys(&mut self) -> BTreeSet<Vec<u8>>;
    fn conn_for(&mut self, key: &[u8]) -> &mut Connection;
}

/// A standalone server's db 0 as a [`KeySource`].
pub struct StandaloneReader<'a>(pub &'a mut Connection);

impl KeySource for StandaloneReader<'_> {
    fn all_keys(&mut self) -> BTreeSet<Vec<u8>> {
        select(self.0, 0);
        scan_keys(self.0)
    }
    fn conn_for(&mut self, _key: &[u8]) -> &mut Connection {
        self.0
    }
}

/// A cluster as a [`KeySource`]: SCANs every master, reads from the slot owner.
pub struct ClusterReader {
    masters: BTreeMap<u16, Connection>,
    slots: Vec<u16>,
}

impl KeySource for ClusterReader {
    fn all_keys(&mut self) -> BTreeSet<Vec<u8>> {
        self.masters.values_mut().flat_map(scan_keys).collect()
    }
    fn conn_for(&mut self, key: &[u8]) -> &mut Connection {
        let port = self.slots[key_slot(key) as usize];
        self.masters
            .get_mut(&port)
            .expect("slot owner among the masters")
    }
}

/// Compares db 0 of two key sources (cluster or standalone), key by key, with the
/// same rules as [`super::compare::compare_servers`] (functions not compared).
pub fn compare_sources(
    src: &mut dyn KeySource,
    dst: &mut dyn KeySource,
    ignore: &[&[u8]],
    opts: &CompareOptions,
) -> Vec<Difference> {
    // Progress keys are the target's exactly-once bookkeeping, as in `compare::is_ignored`.
    let ignored = |k: &Vec<u8>| {
        k.starts_with(super::compare::PROGRESS_PREFIX)
            || ignore.iter().any(|pat| match pat.strip_suffix(b"*") {
                Some(prefix) => k.starts_with(prefix),
                None => k.as_slice() == *pat,
            })
    };
    let a: BTreeSet<Vec<u8>> = src.all_keys().into_iter().filter(|k| !ignored(k)).collect();
    let b: BTreeSet<Vec<u8>> = dst.all_keys().into_iter().filter(|k| !ignored(k)).collect();
    let mut diffs = Vec::new();
    let d = |key: &[u8], what: &str| Difference {
        db: Some(0),
        key: key.to_vec(),
        what: what.into(),
    };
    for k in a.difference(&b) {
        diffs.push(d(k, "missing on destination"));
    }
    for k in b.difference(&a) {
        diffs.push(d(k, "extra on destination (not on source)"));
    }
    for k in a.intersection(&b) {
        let s = src.conn_for(k);
        let t = dst.conn_for(k);
        diffs.extend(compare_key(0, k, s, t, opts));
    }
    diffs
}
