//! Real-server tests of the slot router: `key_slot` against `CLUSTER KEYSLOT` (3000 random binary
//! keys plus hash-tag edge cases), and `SlotTable::from_cluster_nodes` against `CLUSTER SLOTS` of a
//! 3-master cluster made with `redis-cli --cluster create` (plus a replica and a slot being
//! migrated). Runs on redis-server 6.0 / 7.0 and valkey-server 9.1 (a missing one fails the test),
//! started by the shared harness in `tests/common` (own temp dir, free ports, killed on drop).

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::cluster::RedisCluster;
use common::{RedisServer, ServerKind, wait_until};
use redis::Value;
use shardsync::router::{Routed, SlotTable, key_slot, route};

const KINDS: &[ServerKind] = &[
    ServerKind::Redis70,
    ServerKind::Redis60,
    ServerKind::Valkey91,
];

/// Config of a lone cluster-mode node (no slots until a cluster is made).
const CLUSTER_NODE: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
];

// ---------------------------------------------------------------- helpers

/// Small deterministic PRNG (xorshift64*), seeded per test run and printed for reproduction.
struct Rng(u64);
impl Rng {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (std::process::id() as u64).rotate_left(32);
        eprintln!("rng seed {seed}");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn wait_for(what: &str, timeout: Duration, ok: impl FnMut() -> bool) {
    assert!(wait_until(timeout, ok), "timed out waiting for {what}");
}

fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut c = redis::Cmd::new();
    for a in args {
        c.arg(*a);
    }
    c.query(con)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

// ---------------------------------------------------------------- key_slot vs CLUSTER KEYSLOT

fn random_key(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(24) as usize;
    // Mostly bytes that matter for tags, plus arbitrary binary.
    let mut k: Vec<u8> = (0..len)
        .map(|_| match rng.below(10) {
            0 => b'{',
            1 => b'}',
            2..=5 => b'a' + rng.below(4) as u8,
            _ => rng.below(256) as u8,
        })
        .collect();
    if rng.below(3) == 0 {
        // Insert a well-formed (possibly empty) tag somewhere.
        let at = rng.below(k.len() as u64 + 1) as usize;
        let tag_len = rng.below(5) as usize;
        let mut tag = vec![b'{'];
        tag.extend((0..tag_len).map(|_| rng.below(256) as u8));
        tag.push(b'}');
        k.splice(at..at, tag);
    }
    k
}

#[test]
fn key_slot_matches_cluster_keyslot() {
    let mut rng = Rng::new();
    for &kind in KINDS {
        let name = kind.name();
        let server = RedisServer::start_with(kind, CLUSTER_NODE);
        let mut con = server.client();
        let mut keys: Vec<Vec<u8>> = [
            &b""[..],
            b"{}",
            b"{",
            b"}",
            b"}{",
            b"{{a}}",
            b"a{b}c{d}",
            b"{}{a}",
            b"{a}{}",
            b"x{}y{z}",
            b"{\x00}",
            b"\x00{\xff}\x00",
            b"{user1000}.following",
            b"foo",
            b"123456789",
        ]
        .iter()
        .map(|k| k.to_vec())
        .collect();
        keys.extend((0..3000).map(|_| random_key(&mut rng)));
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("CLUSTER").arg("KEYSLOT").arg(k.as_slice());
        }
        let want: Vec<u16> = pipe.query(&mut con).expect("CLUSTER KEYSLOT");
        let mut tagged = 0;
        for (k, w) in keys.iter().zip(&want) {
            assert_eq!(
                key_slot(k),
                *w,
                "{name}: key {:?}",
                String::from_utf8_lossy(k)
            );
            if shardsync::router::hash_tag(k).len() != k.len() {
                tagged += 1;
            }
        }
        assert!(tagged > 500, "too few keys with a hash tag: {tagged}");
        eprintln!(
            "{name}: {} keys agree ({tagged} with a hash tag)",
            keys.len()
        );
    }
}

// ---------------------------------------------------------------- SlotTable vs CLUSTER SLOTS

/// `CLUSTER SLOTS` as (first, last, master port).
fn cluster_slots(con: &mut redis::Connection) -> Vec<(u16, u16, u16)> {
    let v: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(con)
        .expect("CLUSTER SLOTS");
    let Value::Array(items) = v else {
        panic!("CLUSTER SLOTS: {v:?}")
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(f) = item else {
                panic!("CLUSTER SLOTS item: {item:?}")
            };
            let int = |v: &Value| match v {
                Value::Int(i) => *i as u16,
                _ => panic!("not an int: {v:?}"),
            };
            let Value::Array(master) = &f[2] else {
                panic!("master: {:?}", f[2])
            };
            (int(&f[0]), int(&f[1]), int(&master[1]))
        })
        .collect()
}

fn check_table_against_slots(name: &str, table: &SlotTable, slots: &[(u16, u16, u16)]) {
    let mut covered = 0usize;
    for &(a, b, port) in slots {
        for s in a..=b {
            assert_eq!(
                table.node_for(s).map(|n| n.port),
                Some(port),
                "{name}: slot {s}"
            );
            covered += 1;
        }
    }
    assert_eq!(covered, 16384, "{name}: CLUSTER SLOTS covers every slot");
    assert!(
        table.uncovered().is_empty(),
        "{name}: {:?}",
        table.uncovered()
    );
}

fn cluster_nodes(con: &mut redis::Connection) -> String {
    redis::cmd("CLUSTER")
        .arg("NODES")
        .query(con)
        .expect("CLUSTER NODES")
}

fn my_id(con: &mut redis::Connection) -> String {
    q(con, &["CLUSTER", "MYID"])
}

#[test]
fn slot_table_matches_real_cluster() {
    assert!(
        which("redis-cli").is_ok(),
        "redis-cli not found: run scripts/install-deps.sh"
    );
    let mut rng = Rng::new();
    for &kind in KINDS {
        let name = kind.name();
        // A 3-master cluster made with `redis-cli --cluster create`.
        let cluster = RedisCluster::start(kind, 3, 0);
        let masters = cluster.nodes();
        let ports: Vec<u16> = masters.iter().map(|s| s.port()).collect();

        // Every master must see the whole cluster (state ok, 3 masters, all slots).
        let mut c0 = masters[0].client();
        let mut all: Vec<redis::Connection> = masters.iter().map(|m| m.client()).collect();
        wait_for(
            &format!("{name}: cluster ok"),
            Duration::from_secs(30),
            || {
                all.iter_mut().all(|c| {
                    let info: String = q(c, &["CLUSTER", "INFO"]);
                    info.contains("cluster_state:ok")
                        && SlotTable::from_cluster_nodes(&cluster_nodes(c))
                            .map(|t| t.masters().len() == 3 && t.uncovered().is_empty())
                            .unwrap_or(false)
                })
            },
        );

        // Every master's view parses and matches CLUSTER SLOTS.
        for m in masters {
            let mut c = m.client();
            let text = cluster_nodes(&mut c);
            let table = SlotTable::from_cluster_nodes(&text)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
            check_table_against_slots(name, &table, &cluster_slots(&mut c));
            let mut got: Vec<u16> = table.masters().iter().map(|n| n.port).collect();
            got.sort();
            let mut want = ports.clone();
            want.sort();
            assert_eq!(got, want, "{name}: masters");
            assert!(table.nodes().iter().all(|n| n.host == "127.0.0.1"));
        }

        // Writes sent where the table says never get MOVED.
        let table = SlotTable::from_cluster_nodes(&cluster_nodes(&mut c0)).unwrap();
        let mut conns: Vec<redis::Connection> = masters.iter().map(|m| m.client()).collect();
        for i in 0..300 {
            let key = format!("k:{i}:{}", rng.next());
            let cmd = shardsync::cmd!["SET", key.clone(), "v"];
            let Routed::Single { slot, cmd } = route(cmd) else {
                panic!("SET not single")
            };
            let port = table.node_for(slot).unwrap().port;
            let at = ports.iter().position(|p| *p == port).unwrap();
            let mut rc = redis::Cmd::new();
            for a in &cmd.args {
                rc.arg(a.as_ref());
            }
            let r: redis::RedisResult<String> = rc.query(&mut conns[at]);
            assert_eq!(r.as_deref().ok(), Some("OK"), "{name}: SET {key}: {r:?}");
        }

        // A replica of master 0.
        let replica = RedisServer::start_with(kind, CLUSTER_NODE);
        let mut cr = replica.client();
        let id0 = my_id(&mut c0);
        let _: () = q(
            &mut cr,
            &["CLUSTER", "MEET", "127.0.0.1", &ports[0].to_string()],
        );
        wait_for(
            &format!("{name}: replica knows master"),
            Duration::from_secs(30),
            || cluster_nodes(&mut cr).contains(&id0),
        );
        let _: () = q(&mut cr, &["CLUSTER", "REPLICATE", &id0]);
        wait_for(
            &format!("{name}: replica listed"),
            Duration::from_secs(30),
            || {
                SlotTable::from_cluster_nodes(&cluster_nodes(&mut c0))
                    .map(|t| t.replicas_of(&id0).iter().any(|n| n.port == replica.port()))
                    .unwrap_or(false)
            },
        );
        let table = SlotTable::from_cluster_nodes(&cluster_nodes(&mut c0)).unwrap();
        assert_eq!(table.masters().len(), 3, "{name}: replica is not a master");
        check_table_against_slots(name, &table, &cluster_slots(&mut c0));

        // A slot in migration: MIGRATING on the owner, IMPORTING on the destination; both views
        // (with `[s->-id]` and `[s-<-id]` markers) keep the slot on its owner.
        let slot = table.slots_of(
            table
                .nodes()
                .iter()
                .position(|n| n.port == ports[0])
                .unwrap(),
        )[0]
        .0;
        let mut c1 = masters[1].client();
        let id1 = my_id(&mut c1);
        let s = slot.to_string();
        let _: () = q(&mut c1, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &id0]);
        let _: () = q(&mut c0, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &id1]);
        let text0 = cluster_nodes(&mut c0);
        let text1 = cluster_nodes(&mut c1);
        assert!(
            text0.contains(&format!("[{slot}->-{id1}]")),
            "{name}: {text0}"
        );
        assert!(
            text1.contains(&format!("[{slot}-<-{id0}]")),
            "{name}: {text1}"
        );
        for (text, c) in [(text0, &mut c0), (text1, &mut c1)] {
            let t = SlotTable::from_cluster_nodes(&text)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
            assert_eq!(t.node_for(slot).unwrap().port, ports[0], "{name}: {text}");
            check_table_against_slots(name, &t, &cluster_slots(c));
        }
        eprintln!("{name}: slot table agrees with CLUSTER SLOTS (3 masters, replica, migration)");
    }
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
