//! Full-sync write coalescing (`src/sink/coalesce.rs`) on real servers: plain string keys of an
//! RDB reach the target as `MSET`s (the target's own `INFO commandstats` says so) and the target
//! matches the source key by key (TTL strings, big and multi-part strings, other types, several
//! databases, a cluster target); a target refusing every write counts one rejected write per
//! key, not per `MSET`.

use crate::common;

use std::time::Duration;

use common::cluster::{RedisCluster, StandaloneReader, compare_sources};
use common::compare::{CompareOptions, assert_no_differences, compare_servers};
use common::*;
use util::{calls, stat};

/// Fills `conn`: in db 0 and db 2, runs of plain strings with other keys between them, strings
/// with a TTL, a 40 KiB string and a 3 MiB string (several RDB parts).
fn fill(conn: &mut redis::Connection, dbs: &[u32]) -> u64 {
    let mut rng = util::DetRng::new(13);
    let mut strings = 0;
    for &db in dbs {
        util::select(conn, db);
        let mut p = redis::pipe();
        for i in 0..3000u32 {
            let k = format!("s:{db}:{i}");
            match i % 10 {
                3 => {
                    p.cmd("SET")
                        .arg(&k)
                        .arg(rng.bytes(20))
                        .arg("EX")
                        .arg(3600)
                        .ignore();
                }
                7 => {
                    p.cmd("HSET").arg(&k).arg("f").arg(i).ignore();
                }
                _ => {
                    p.cmd("SET")
                        .arg(&k)
                        .arg(rng.bytes(1 + (i % 90) as usize))
                        .ignore();
                    strings += 1;
                }
            }
        }
        p.cmd("SET")
            .arg(format!("big:{db}"))
            .arg(vec![b'b'; 40 * 1024])
            .ignore();
        p.cmd("SET")
            .arg(format!("huge:{db}"))
            .arg(rng.bytes(3 << 20))
            .ignore();
        p.cmd("RPUSH")
            .arg(format!("list:{db}"))
            .arg(&[1, 2, 3])
            .ignore();
        p.query::<()>(conn).expect("fill");
    }
    util::select(conn, 0);
    strings
}

fn load_rdb(src: &RedisServer, target_url: &str) -> (std::process::ExitStatus, String) {
    let mut sc = src.client();
    util::run(&mut sc, &redis::cmd("SAVE"), "SAVE");
    let file = src.dir().join("dump.rdb");
    Shardsync::run_to_exit(
        &[
            "load-rdb",
            "--file",
            file.to_str().expect("utf-8"),
            "--target",
            target_url,
        ],
        Duration::from_secs(120),
    )
}

#[test]
fn rdb_strings_arrive_as_mset_and_match_key_by_key() {
    let src = RedisServer::start(ServerKind::Redis70);
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut sc = src.client();
    let plain = fill(&mut sc, &[0, 2]);
    let (status, out) = load_rdb(&src, &dst.url());
    assert!(status.success(), "load-rdb failed:\n{out}");
    let mut dc = dst.client();
    let (msets, sets) = (calls(&mut dc, "mset"), calls(&mut dc, "set"));
    assert!(msets > 0, "no MSET reached the target");
    // Plain strings go in MSETs of up to 256 keys; SETs remain for TTL-less strings standing
    // alone between other keys, the big ones, and the first part of the multi-part ones.
    assert!(
        sets < plain / 4,
        "{sets} SETs for {plain} plain strings: not coalesced"
    );
    assert_no_differences(&compare_servers(&mut sc, &mut dc, &[0, 2], &[]));
}

#[test]
fn rdb_strings_into_a_cluster_match_key_by_key() {
    let src = RedisServer::start(ServerKind::Redis70);
    let mut sc = src.client();
    // Hash tags put several keys of one batch in one slot: those become per-slot MSETs.
    let mut p = redis::pipe();
    for i in 0..4000u32 {
        p.cmd("SET")
            .arg(format!("{{t{}}}:{i}", i % 8))
            .arg(i)
            .ignore();
        if i % 100 == 0 {
            p.cmd("SET")
                .arg(format!("ttl:{i}"))
                .arg(i)
                .arg("PX")
                .arg(900_000)
                .ignore();
        }
    }
    p.query::<()>(&mut sc).expect("fill");
    let cluster = RedisCluster::start(ServerKind::Redis70, 3, 0);
    let (status, out) = load_rdb(&src, &cluster.seed_url());
    assert!(status.success(), "load-rdb failed:\n{out}");
    let mut msets = 0;
    for node in cluster.masters() {
        let mut c = node.client();
        msets += calls(&mut c, "mset");
    }
    assert!(msets > 0, "no per-slot MSET reached the cluster");
    let mut reader = cluster.reader();
    let diffs = compare_sources(
        &mut StandaloneReader(&mut sc),
        &mut reader,
        &[],
        &CompareOptions::default(),
    );
    assert_no_differences(&diffs);
}

#[test]
fn refused_mset_counts_every_key() {
    let src = RedisServer::start(ServerKind::Redis70);
    // Every write is refused with OOM (used memory is always above 1 byte).
    let dst = RedisServer::start_with(
        ServerKind::Redis70,
        &["--maxmemory", "1", "--maxmemory-policy", "noeviction"],
    );
    let mut sc = src.client();
    let mut p = redis::pipe();
    for i in 0..1000u32 {
        p.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
    }
    p.query::<()>(&mut sc).expect("fill");
    let (status, out) = load_rdb(&src, &dst.url());
    assert!(!status.success(), "must fail:\n{out}");
    assert!(
        out.contains("the target rejected 1000 writes"),
        "every key of the refused MSETs must count as a rejected write:\n{out}"
    );
    let mut dc = dst.client();
    // Redis counts refused commands apart: 1000 keys went in 67 refused MSETs of up to 15 keys.
    let refused = stat(&mut dc, "mset", "rejected_calls");
    assert!((67..=100).contains(&refused), "{refused} refused MSETs");
    assert_eq!(target_dbsize(&mut dc), 0);
}
