//! ACL users on real servers of every version (Redis 6.0, 6.2, 7.0, Valkey 9.1; `ACL DRYRUN`
//! on 7.0+, a command queued in a discarded `MULTI` on 6.x): a source user without `PSYNC` and
//! a target user without `RESTORE` make `shardsync check` fail naming the missing permission
//! (text and `--format json`), and nothing is written; users with only the rights the README
//! lists make the check pass, and `run` then replicates (full sync + incremental), compared key
//! by key.

use crate::common;

use std::time::Duration;

use common::compare::{CompareOptions, assert_no_differences};
use common::run::{SyncRun, pair_to_exit};
use common::*;

const HEARTBEAT: &[u8] = b"shardsync:heartbeat";

fn setuser(srv: &RedisServer, rules: &[String]) {
    let mut c = redis::cmd("ACL");
    c.arg("SETUSER");
    for r in rules {
        c.arg(r.as_str());
    }
    let _: () = c.query(&mut srv.client()).expect("ACL SETUSER");
}

/// The rights the README lists for each side (nothing more).
const SOURCE_RULES: &[&str] = &[
    "-@all",
    "+psync",
    "+replconf",
    "+ping",
    "+info",
    "+select",
    "+multi",
    "+exec",
    "+dump",
    "+pttl",
    "+set",
    "+del",
    "~*",
];
const TARGET_RULES: &[&str] = &[
    "-@all", "+@write", "+select", "+multi", "+exec", "+ping", "+info", "+scan", "+eval", "~*",
];

// Distinctive passwords, so a match in the output is a leak, never a coincidence (the 3-letter
// "pw1" could appear inside a random temp path or nonce).
const BAD_SRC_PW: &str = "Bad-Src-Secret-71";
const BAD_DST_PW: &str = "Bad-Dst-Secret-72";
const SRC_PW: &str = "Src-Secret-73";
const DST_PW: &str = "Dst-Secret-74";

fn user(name: &str, pw: &str, rules: &[&str]) -> Vec<String> {
    let mut v = vec![name.to_string(), "on".into(), format!(">{pw}")];
    v.extend(rules.iter().map(|s| s.to_string()));
    v
}

/// Panics when `out` contains one of `passwords`, listing the lines that do with the password
/// masked (so a failure in CI shows where it leaked without printing it).
fn assert_no_password(out: &str, passwords: &[&str]) {
    let leaks: Vec<String> = out
        .lines()
        .filter(|l| passwords.iter().any(|p| l.contains(p)))
        .map(|l| {
            passwords
                .iter()
                .fold(l.to_string(), |l, p| l.replace(p, "<PASSWORD>"))
        })
        .collect();
    assert!(leaks.is_empty(), "password shown in:\n{}", leaks.join("\n"));
}

fn scenario(kind: ServerKind) {
    let src = RedisServer::start(kind);
    let dst = RedisServer::start(kind);
    setuser(
        &src,
        &user("repl-bad", BAD_SRC_PW, &["~*", "+@all", "-psync"]),
    );
    setuser(
        &dst,
        &user("writer-bad", BAD_DST_PW, &["~*", "+@all", "-restore"]),
    );
    // On 7.0+ `PSYNC` can only be checked by `ACL DRYRUN` (it cannot be queued in a MULTI):
    // the source user may run it; the target user is checked by the MULTI probe.
    let mut source_rules = SOURCE_RULES.to_vec();
    if kind.at_least(7, 0) {
        source_rules.push("+acl|dryrun");
    }
    setuser(&src, &user("repl", SRC_PW, &source_rules));
    setuser(&dst, &user("writer", DST_PW, TARGET_RULES));
    let opts = DatasetOptions {
        dbs: vec![0, 2],
        big_value_bytes: 64 * 1024,
        with_functions: false,
        ..DatasetOptions::small()
    };
    populate_typed_dataset(&mut src.client(), kind, &opts);
    let sync = SyncRun::new(None);
    let state = sync.state.to_str().expect("utf-8").to_string();

    // Missing rights: named, exit 3, nothing written.
    let bad_src = format!("redis://repl-bad:{BAD_SRC_PW}@{}", src.addr());
    let bad_dst = format!("redis://writer-bad:{BAD_DST_PW}@{}", dst.addr());
    let (code, out) = pair_to_exit("check", &bad_src, &bad_dst, &["--state-dir", &state]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("source user \"repl-bad\" may not run PSYNC"),
        "{kind:?}: {out}"
    );
    assert!(
        out.contains("target user \"writer-bad\" may not run RESTORE"),
        "{kind:?}: {out}"
    );
    assert_no_password(&out, &[BAD_SRC_PW, BAD_DST_PW]);
    let json_args = ["--state-dir", &state, "--format", "json"];
    let (code, out) = pair_to_exit("check", &bad_src, &bad_dst, &json_args);
    assert_eq!(code, 3, "{out}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("check JSON");
    assert_eq!(json["schema"], "shardsync.check/1");
    assert_eq!(json["result"], "failed");
    let acl: Vec<&serde_json::Value> = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.ends_with("ACL")))
        .collect();
    assert_eq!(acl.len(), 2, "{out}");
    assert!(acl.iter().all(|c| c["status"] == "fail"), "{out}");
    assert!(dbsize_all(&mut dst.client()).is_empty(), "check wrote");

    // Enough rights: the check passes, the sync works.
    let good_src = format!("redis://repl:{SRC_PW}@{}", src.addr());
    let good_dst = format!("redis://writer:{DST_PW}@{}", dst.addr());
    let (code, out) = pair_to_exit("check", &good_src, &good_dst, &["--state-dir", &state]);
    assert_eq!(code, 0, "{kind:?}: {out}");
    assert_no_password(&out, &[SRC_PW, DST_PW]);
    assert!(
        out.lines()
            .filter(|l| l.contains(" ACL "))
            .all(|l| l.starts_with("ok")),
        "{kind:?}: ACL rows not all ok:\n{out}"
    );
    let mut run = sync.spawn_pair(&good_src, &good_dst, &[]);
    let mut c = src.client();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("live:{i}"))
            .arg(i)
            .query(&mut c)
            .expect("SET");
    }
    let _: () = redis::cmd("SET")
        .arg("live:last")
        .arg("1")
        .query(&mut c)
        .expect("SET");
    // The writes may land in the RDB (in any order) or in the stream: wait until both sides
    // compare equal, then assert it.
    let synced = wait_until(Duration::from_secs(60), || {
        compare_servers(&mut src.client(), &mut dst.client(), &[0, 2], &[HEARTBEAT]).is_empty()
    });
    assert!(synced, "{kind:?}: not synced:\n{}", run.log_tail(40));
    assert_same(&mut src.client(), &mut dst.client(), &[0, 2], &[HEARTBEAT]);
    let log = run.log();
    assert!(
        !log.contains("NOPERM") && !log.contains("rejected"),
        "{kind:?}: the target refused writes:\n{}",
        run.log_tail(40)
    );
    run.terminate();
}

#[test]
fn acl_redis60() {
    scenario(ServerKind::Redis60);
}

#[test]
fn acl_redis62() {
    scenario(ServerKind::Redis62);
}

#[test]
fn acl_redis70() {
    scenario(ServerKind::Redis70);
}

#[test]
fn acl_valkey91() {
    scenario(ServerKind::Valkey91);
}

/// ACL users on every node of a cluster source and a cluster target: a target user without
/// `DUMP` (the cross-slot fallback reads the target) is named; with the README's cluster rights
/// the check passes and the clusters sync, compared key by key.
#[test]
fn acl_clusters() {
    use common::cluster::{RedisCluster, compare_sources};
    let src = RedisCluster::start(ServerKind::Redis70, 3, 0);
    let dst = RedisCluster::start(ServerKind::Redis70, 3, 0);
    let mut source_rules = SOURCE_RULES.to_vec();
    source_rules.extend(["+cluster|nodes", "+role", "+acl|dryrun"]);
    let mut target_rules = TARGET_RULES.to_vec();
    target_rules.extend([
        "+cluster|nodes",
        "+cluster|getkeysinslot",
        "+asking",
        "+pttl",
    ]);
    for n in src.nodes() {
        setuser(n, &user("repl", SRC_PW, &source_rules));
    }
    for n in dst.nodes() {
        setuser(n, &user("writer", DST_PW, &target_rules));
    }
    let seed = |c: &RedisCluster, who: &str| {
        let m = &c.masters()[0];
        format!("redis://{who}@{}", m.addr())
    };
    let (su, du) = (
        seed(&src, &format!("repl:{SRC_PW}")),
        seed(&dst, &format!("writer:{DST_PW}")),
    );
    let sync = SyncRun::new(None);
    let state = sync.state.to_str().expect("utf-8").to_string();
    let check = |du: &str| pair_to_exit("check", &su, du, &["--state-dir", &state]);
    let (code, out) = check(&du);
    assert_eq!(code, 3, "{out}");
    assert_no_password(&out, &[SRC_PW, DST_PW]);
    assert!(
        out.contains("target user \"writer\" may not run DUMP"),
        "{out}"
    );
    for n in dst.nodes() {
        setuser(n, &user("writer", DST_PW, &["+dump"]));
    }
    let (code, out) = check(&du);
    assert_eq!(code, 0, "{out}");
    // Writes go to the slot owner of each key.
    let write = |args: &[String]| {
        let node = src.node_for_key(args[1].as_bytes());
        let mut r = redis::cmd(&args[0]);
        r.arg(&args[1..]);
        let _: () = r.query(&mut node.client()).expect("write");
    };
    for i in 0..100 {
        write(&[String::from("SET"), format!("k{i}"), i.to_string()]);
    }
    let mut run = sync.spawn_pair(&su, &du, &[]);
    for i in 0..100 {
        write(&[
            String::from("HSET"),
            format!("h{i}"),
            "f".into(),
            i.to_string(),
        ]);
    }
    let ignore: &[&[u8]] = &[b"shardsync:heartbeat*"];
    let synced = wait_until(Duration::from_secs(90), || {
        compare_sources(
            &mut src.reader(),
            &mut dst.reader(),
            ignore,
            &CompareOptions::default(),
        )
        .is_empty()
    });
    assert!(synced, "not synced:\n{}", run.log_tail(40));
    assert_no_differences(&compare_sources(
        &mut src.reader(),
        &mut dst.reader(),
        ignore,
        &CompareOptions::default(),
    ));
    run.terminate();
}
