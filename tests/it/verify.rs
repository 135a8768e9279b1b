//! `shardsync verify` against real servers: an equal copy (a native replica) exits 0; every kind
//! of hand-made difference on the target is reported with its reason (text and JSON); a cluster
//! on either side; the rate limit; unreachable servers and wrong passwords exit 2.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::RedisCluster;
use common::*;
use redis::Connection;
use serde_json::Value as Json;

const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Elements of the "big" collections: beyond one chunk (512) and the whole-read limit (128).
const BIG: usize = 2000;

fn q(c: &mut Connection, args: &[&[u8]]) -> redis::Value {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(args[0])))
}

fn qs(c: &mut Connection, args: &[&str]) -> redis::Value {
    let v: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    q(c, &v)
}

/// Runs `shardsync verify` to its exit; returns (exit code, stdout+stderr).
fn verify(args: &[&str]) -> (i32, String, Duration) {
    let mut all = vec!["verify", "--metrics-addr", "off"];
    all.extend_from_slice(args);
    let t = Instant::now();
    let (status, log) = Shardsync::run_to_exit(&all, Duration::from_secs(300));
    assert!(!log.contains("panicked"), "verify panicked:\n{log}");
    (status.code().unwrap_or(-1), log, t.elapsed())
}

/// The JSON document in verify's output (stdout only carries it; logs go to stderr with
/// timestamps and never start with `{`).
fn json_of(out: &str) -> Json {
    let start = out
        .find("{\n")
        .unwrap_or_else(|| panic!("no JSON in:\n{out}"));
    let end = out
        .rfind("\n}")
        .unwrap_or_else(|| panic!("no JSON end in:\n{out}"))
        + 2;
    serde_json::from_str(&out[start..end]).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{out}"))
}

/// The verify-specific keys: every type, big collections beyond one chunk, TTLs and streams
/// with groups, consumers and pending entries (one stream per mutation so each reason is
/// isolated).
fn fill_specific(c: &mut Connection) {
    for name in ["missing", "str", "type", "ttl", "persist"] {
        qs(c, &["SET", &format!("vfy:{name}"), "value"]);
    }
    qs(c, &["PEXPIRE", "vfy:ttl", "600000"]);
    qs(c, &["PEXPIRE", "vfy:persist", "600000"]);
    let big = "x".repeat(100_000);
    qs(c, &["SET", "vfy:bigstr", &big]);
    qs(c, &["HSET", "vfy:hash", "f1", "v1", "f2", "v2"]);
    qs(c, &["SADD", "vfy:set", "a", "b", "c"]);
    qs(c, &["ZADD", "vfy:zset", "1", "a", "2", "b"]);
    qs(c, &["RPUSH", "vfy:list", "a", "b", "c"]);
    for i in 0..BIG {
        let (f, v) = (format!("f{i}"), format!("v{i}"));
        qs(c, &["HSET", "vfy:bighash", &f, &v]);
        qs(c, &["SADD", "vfy:bigset", &f]);
        qs(c, &["ZADD", "vfy:bigzset", &i.to_string(), &f]);
        qs(c, &["RPUSH", "vfy:biglist", &v]);
    }
    // A key whose name needs quoting.
    q(c, &[b"SET", b"vfy:bin\x00\xff\n\"", b"v"]);
    for s in [
        "vfy:s:entries",
        "vfy:s:owner",
        "vfy:s:count",
        "vfy:s:consumer",
        "vfy:s:lastid",
    ] {
        for i in 1..=700 {
            qs(c, &["XADD", s, &format!("{i}-1"), "f", &i.to_string()]);
        }
        qs(c, &["XGROUP", "CREATE", s, "g", "0"]);
        qs(
            c,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "alice",
                "COUNT",
                "2",
                "STREAMS",
                s,
                ">",
            ],
        );
        qs(
            c,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "bob",
                "COUNT",
                "2",
                "STREAMS",
                s,
                ">",
            ],
        );
        qs(c, &["XGROUP", "CREATECONSUMER", s, "g", "idle-carol"]);
    }
}

/// Every way the target can differ; returns (key, kind, reason) expected in the report.
fn mutate_target(c: &mut Connection) -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    qs(c, &["DEL", "vfy:missing"]);
    qs(c, &["SET", "vfy:extra", "only here"]);
    qs(c, &["SET", "vfy:str", "other"]);
    qs(c, &["SETRANGE", "vfy:bigstr", "70000", "Y"]);
    qs(c, &["DEL", "vfy:type"]);
    qs(c, &["SADD", "vfy:type", "value"]);
    qs(c, &["PEXPIRE", "vfy:ttl", "100000"]);
    qs(c, &["PERSIST", "vfy:persist"]);
    qs(c, &["HSET", "vfy:hash", "f2", "changed"]);
    qs(c, &["HSET", "vfy:bighash", "f1500", "changed"]);
    qs(c, &["SREM", "vfy:set", "b"]);
    qs(c, &["SADD", "vfy:set", "z"]);
    qs(c, &["SREM", "vfy:bigset", "f1700"]);
    qs(c, &["SADD", "vfy:bigset", "zz"]);
    qs(c, &["ZADD", "vfy:zset", "5", "b"]);
    qs(c, &["ZADD", "vfy:bigzset", "0.5", "f1900"]);
    qs(c, &["LSET", "vfy:list", "1", "B"]);
    qs(c, &["LSET", "vfy:biglist", "1800", "B"]);
    // Stream: an entry deleted past the first window (entries cannot be rewritten in place).
    qs(c, &["XDEL", "vfy:s:entries", "600-1"]);
    // Owners of two pending entries swapped (consumer pending counts stay equal).
    let ids = |c: &mut Connection, s: &str| -> Vec<String> {
        let v: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(s)
            .arg("g")
            .arg("-")
            .arg("+")
            .arg(10)
            .query(c)
            .expect("XPENDING");
        v.into_iter().map(|e| e.0).collect()
    };
    let p = ids(c, "vfy:s:owner");
    qs(
        c,
        &["XCLAIM", "vfy:s:owner", "g", "bob", "0", &p[0], "JUSTID"],
    );
    qs(
        c,
        &["XCLAIM", "vfy:s:owner", "g", "alice", "0", &p[2], "JUSTID"],
    );
    // Delivery count of one pending entry.
    let p = ids(c, "vfy:s:count");
    qs(
        c,
        &[
            "XCLAIM",
            "vfy:s:count",
            "g",
            "alice",
            "0",
            &p[0],
            "RETRYCOUNT",
            "9",
        ],
    );
    // A consumer (without pending entries) missing.
    qs(
        c,
        &["XGROUP", "DELCONSUMER", "vfy:s:consumer", "g", "idle-carol"],
    );
    qs(c, &["XGROUP", "SETID", "vfy:s:lastid", "g", "3-1"]);
    vec![
        ("vfy:missing", "missing", None),
        ("vfy:extra", "extra", None),
        ("vfy:str", "different", Some("value")),
        ("vfy:bigstr", "different", Some("value")),
        ("vfy:type", "different", Some("type")),
        ("vfy:ttl", "different", Some("ttl")),
        ("vfy:persist", "different", Some("ttl")),
        ("vfy:hash", "different", Some("value")),
        ("vfy:bighash", "different", Some("value")),
        ("vfy:set", "different", Some("value")),
        ("vfy:bigset", "different", Some("value")),
        ("vfy:zset", "different", Some("value")),
        ("vfy:bigzset", "different", Some("value")),
        ("vfy:list", "different", Some("value")),
        ("vfy:biglist", "different", Some("value")),
        ("vfy:s:entries", "different", Some("value")),
        ("vfy:s:owner", "different", Some("stream_group")),
        ("vfy:s:count", "different", Some("stream_group")),
        ("vfy:s:consumer", "different", Some("stream_group")),
        ("vfy:s:lastid", "different", Some("stream_group")),
    ]
}

#[test]
fn verify_equal_copy_then_every_difference() {
    let src = RedisServer::start(ServerKind::Redis70);
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut s = src.client();
    populate_typed_dataset(&mut s, src.kind(), &DatasetOptions::small());
    common::util::select(&mut s, 0);
    fill_specific(&mut s);
    dst.replicaof(&src);
    dst.wait_replica_synced(&src, SYNC_TIMEOUT);

    let (code, out, _) = verify(&[
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--rate",
        "0",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("result: EQUAL"), "{out}");
    let sizes = dbsize_all(&mut s);
    let total: u64 = sizes.values().sum();
    assert!(
        out.contains(&format!(
            "checked {total} source keys and {total} target keys"
        )),
        "expected {total} keys ({sizes:?}):\n{out}"
    );

    dst.replicaof_no_one();
    let mut d = dst.client();
    let expected = mutate_target(&mut d);
    // A key only in another database of the target (db 1 → db 1).
    common::util::select(&mut d, 1);
    q(&mut d, &[b"SET", b"vfy:extra:db1\x01", b"x"]);
    common::util::select(&mut d, 0);

    let (code, out, _) = verify(&[
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--rate",
        "0",
        "--recheck-ms",
        "200",
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{out}");
    let j = json_of(&out);
    assert_eq!(j["schema"], "shardsync.verify/1");
    assert_eq!(j["result"], "different");
    let diffs = j["differences"].as_array().expect("differences");
    let find = |key: &str| {
        let quoted = format!("\"{key}\"");
        diffs
            .iter()
            .find(|d| d["key"] == quoted.as_str())
            .unwrap_or_else(|| panic!("{key} not reported:\n{out}"))
    };
    for (key, kind, reason) in &expected {
        let d = find(key);
        assert_eq!(d["kind"], *kind, "{key}: {d}");
        match reason {
            Some(r) => assert_eq!(d["reason"], *r, "{key}: {d}"),
            None => assert!(d["reason"].is_null(), "{key}: {d}"),
        }
    }
    // Details name what differs.
    let detail = |key: &str| find(key)["detail"].as_str().unwrap_or("").to_string();
    assert!(
        detail("vfy:bighash").contains("\\\"f1500\\\"") || detail("vfy:bighash").contains("f1500")
    );
    assert!(
        detail("vfy:s:owner").contains("owner"),
        "{}",
        detail("vfy:s:owner")
    );
    assert!(
        detail("vfy:s:count").contains("deliveries"),
        "{}",
        detail("vfy:s:count")
    );
    assert!(
        detail("vfy:s:consumer").contains("idle-carol"),
        "{}",
        detail("vfy:s:consumer")
    );
    assert!(
        detail("vfy:s:lastid").contains("last-delivered-id"),
        "{}",
        detail("vfy:s:lastid")
    );
    assert!(
        detail("vfy:biglist").contains("1800"),
        "{}",
        detail("vfy:biglist")
    );
    let extra1 = find("vfy:extra:db1\\x01");
    assert_eq!(extra1["kind"], "extra");
    assert_eq!(extra1["target_db"], 1);
    let t = &j["totals"];
    let n_expected = expected.len() as u64 + 1;
    assert_eq!(
        t["missing"].as_u64().unwrap()
            + t["extra"].as_u64().unwrap()
            + t["different"].as_u64().unwrap(),
        n_expected,
        "exactly the mutated keys differ:\n{out}"
    );
    assert_eq!(diffs.len() as u64, n_expected);
    assert_eq!(t["different_type"], 1);
    assert_eq!(t["different_ttl"], 2);
    assert_eq!(t["different_stream_group"], 4);

    // Text form, capped list, exact counts, a binary key quoted like redis-cli.
    q(&mut d, &[b"DEL", b"vfy:bin\x00\xff\n\""]);
    let (code, out, _) = verify(&[
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--rate",
        "0",
        "--recheck-ms",
        "0",
        "--max-report",
        "3",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("more differences not listed"), "{out}");
    assert!(
        out.contains(&format!("missing 2, extra 2, different {}", n_expected - 3)),
        "{out}"
    );
    assert!(out.contains("result: DIFFERENT"), "{out}");
    let (code, out, _) = verify(&[
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--rate",
        "0",
        "--recheck-ms",
        "0",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("MISSING   db 0 \"vfy:bin\\x00\\xff\\n\\\"\""),
        "binary key not quoted like redis-cli:\n{out}"
    );
}

/// The same keys written into a cluster and a standalone server, spread over many slots.
fn fill_both(cluster: &RedisCluster, single: &RedisServer) {
    let mut s = single.client();
    let mut conns: Vec<(u16, Connection)> = cluster
        .masters()
        .iter()
        .map(|m| (m.port(), m.client()))
        .collect();
    let at: u64 = 4_000_000_000_000;
    for i in 0..300 {
        let key = format!("k:{i}");
        let node = cluster.node_for_key(key.as_bytes()).port();
        let c = &mut conns.iter_mut().find(|(p, _)| *p == node).expect("owner").1;
        let cmds: Vec<Vec<String>> = match i % 4 {
            0 => vec![vec!["SET".into(), key.clone(), format!("v{i}")]],
            1 => vec![vec!["HSET".into(), key.clone(), "a".into(), i.to_string()]],
            2 => vec![
                vec!["RPUSH".into(), key.clone(), "x".into(), "y".into()],
                vec!["PEXPIREAT".into(), key.clone(), at.to_string()],
            ],
            _ => vec![vec![
                "XADD".into(),
                key.clone(),
                "1-1".into(),
                "f".into(),
                "v".into(),
            ]],
        };
        for cmd in cmds {
            let a: Vec<&str> = cmd.iter().map(String::as_str).collect();
            qs(c, &a);
            qs(&mut s, &a);
        }
    }
}

#[test]
fn verify_cluster_source_to_standalone_and_back() {
    let cluster = RedisCluster::start(ServerKind::Redis70, 3, 0);
    let single = RedisServer::start(ServerKind::Redis70);
    fill_both(&cluster, &single);
    let curl = cluster.seed_url();
    for (s, t) in [(&curl, &single.url()), (&single.url(), &curl)] {
        let (code, out, _) = verify(&["--source", s, "--target", t, "--rate", "0"]);
        assert_eq!(code, 0, "{s} -> {t}:\n{out}");
        assert!(
            out.contains("checked 300 source keys and 300 target keys"),
            "{out}"
        );
    }
    // One key gone from the cluster, one changed in the standalone server.
    let gone = "k:17";
    qs(
        &mut cluster.node_for_key(gone.as_bytes()).client(),
        &["DEL", gone],
    );
    qs(&mut single.client(), &["HSET", "k:21", "a", "changed"]);
    let run = |s: &str, t: &str| {
        let (code, out, _) = verify(&[
            "--source",
            s,
            "--target",
            t,
            "--rate",
            "0",
            "--recheck-ms",
            "0",
            "--format",
            "json",
        ]);
        assert_eq!(code, 1, "{out}");
        json_of(&out)
    };
    let j = run(&curl, &single.url());
    assert_eq!(j["totals"]["extra"], 1, "{j}");
    assert_eq!(j["totals"]["different"], 1, "{j}");
    assert_eq!(j["totals"]["missing"], 0, "{j}");
    let keys: Vec<&str> = j["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"\"k:17\"") && keys.contains(&"\"k:21\""),
        "{j}"
    );
    let j = run(&single.url(), &curl);
    assert_eq!(j["totals"]["missing"], 1, "{j}");
    assert_eq!(j["totals"]["different"], 1, "{j}");
    assert_eq!(j["totals"]["extra"], 0, "{j}");
}

#[test]
fn verify_rate_limit_and_sample() {
    let src = RedisServer::start(ServerKind::Redis62);
    let dst = RedisServer::start(ServerKind::Redis62);
    let mut s = src.client();
    for i in 0..600 {
        qs(&mut s, &["SET", &format!("r:{i}"), "v"]);
    }
    dst.replicaof(&src);
    dst.wait_replica_synced(&src, SYNC_TIMEOUT);
    // 600 source keys + 600 target keys at 300 keys/s: at least ~3.9 s.
    let (code, out, took) = verify(&[
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--rate",
        "300",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        took >= Duration::from_millis(3500),
        "rate not honoured: {took:?}\n{out}"
    );
    assert!(
        took <= Duration::from_secs(20),
        "far too slow: {took:?}\n{out}"
    );
    let (code, out, fast) = verify(&[
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--rate",
        "0",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        fast < took / 2,
        "unlimited run {fast:?} vs limited {took:?}"
    );

    let (code, out, _) = verify(&[
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--rate",
        "0",
        "--sample",
        "50",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}");
    let j = json_of(&out);
    assert_eq!(j["mode"], "sample");
    let n = j["totals"]["source_keys"].as_u64().unwrap();
    assert!((20..=50).contains(&n), "sampled {n} keys:\n{out}");
}

#[test]
fn verify_errors_exit_2_without_leaking_the_password() {
    let secret = "s3cret+Pa55";
    let src = RedisServer::start_with_password(ServerKind::Redis70, secret, &[]);
    let dst = RedisServer::start(ServerKind::Redis70);
    qs(&mut src.client(), &["SET", "a", "1"]);
    qs(&mut dst.client(), &["SET", "a", "1"]);
    // Right password (from the environment-free flag), equal data.
    let (code, out, _) = verify(&[
        "--source",
        &format!("redis://{}", src.addr()),
        "--source-password",
        secret,
        "--target",
        &dst.url(),
        "--rate",
        "0",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = verify(&[
        "--source",
        &format!("redis://:wrong-pw@{}", src.addr()),
        "--target",
        &dst.url(),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&src.addr()) && out.contains("password"),
        "{out}"
    );
    assert!(
        !out.contains("wrong-pw") && !out.contains(secret),
        "password leaked:\n{out}"
    );
    let (code, out, _) = verify(&[
        "--source",
        &format!("redis://{}", src.addr()),
        "--target",
        &dst.url(),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("requires a password"), "{out}");
    let port = common::server::pick_free_port(false);
    let (code, out, _) = verify(&[
        "--source",
        &format!("redis://:{secret}@{}", src.addr()),
        "--target",
        &format!("redis://127.0.0.1:{port}"),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{port}")) && out.contains("connect"),
        "{out}"
    );
    assert!(!out.contains(secret), "password leaked:\n{out}");
}
