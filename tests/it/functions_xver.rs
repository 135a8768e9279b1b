//! Function libraries across versions, on real servers: libraries in the RDB, `FUNCTION LOAD`
//! and `FUNCTION RESTORE` (a payload from the source's own `FUNCTION DUMP`, taken on a scratch
//! server of the source's version) in the live stream. A newer payload is converted for an older
//! target; a Valkey-only library is named by the precheck and fails visibly (logged by name,
//! counted); a target without functions gets a counted failure per library, named.

use crate::common;
use crate::common::util::now_ms;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::compare::{
    CompareOptions, assert_no_differences, compare_functions, compare_servers_with,
};
use common::run::SyncRun;
use common::*;
use redis::Connection;

const HEARTBEAT: &str = "shardsync:heartbeat";

fn lib(name: &str) -> String {
    format!(
        "#!lua name={name}\nredis.register_function('{name}_get', function(keys, args) return redis.call('GET', keys[1]) end)"
    )
}

/// Loads on Valkey, fails to load on Redis (`server` is no global there).
const VALKEY_ONLY: &str = "#!lua name=vlib\nserver.register_function('vget', function(keys, args) return server.call('GET', keys[1]) end)";

fn load(c: &mut Connection, code: &str) {
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(code)
        .query(c)
        .unwrap_or_else(|e| panic!("FUNCTION LOAD {code:?}: {e}"));
}

/// `FUNCTION DUMP` of a scratch server of `kind` holding `libs`.
fn dump_of(kind: ServerKind, libs: &[&str]) -> Vec<u8> {
    let scratch = RedisServer::start(kind);
    let mut c = scratch.client();
    for l in libs {
        load(&mut c, &lib(l));
    }
    redis::cmd("FUNCTION")
        .arg("DUMP")
        .query(&mut c)
        .expect("FUNCTION DUMP")
}

fn restore(c: &mut Connection, payload: &[u8], policy: Option<&str>) {
    let mut cmd = redis::cmd("FUNCTION");
    cmd.arg("RESTORE").arg(payload);
    if let Some(p) = policy {
        cmd.arg(p);
    }
    let _: () = cmd.query(c).expect("FUNCTION RESTORE on the source");
}

/// Waits until a heartbeat written after now reached the target.
fn caught_up(ss: &Shardsync, dc: &mut Connection) {
    let after = now_ms();
    let ok = wait_until(Duration::from_secs(60), || {
        let v: Option<String> = redis::cmd("GET").arg(HEARTBEAT).query(dc).unwrap_or(None);
        v.and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|v| v >= after)
    });
    assert!(ok, "target never caught up:\n{}", ss.log_tail(40));
}

fn libraries(c: &mut Connection) -> Vec<String> {
    common::compare::function_libraries(c).into_keys().collect()
}

/// A metric's value from `/metrics` (summed over label sets).
fn metric(ss: &mut Shardsync, name: &str) -> f64 {
    let addr = ss.status_addr().expect("a fixed --metrics-addr");
    let mut s = TcpStream::connect(&addr).expect("connect /metrics");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read /metrics");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let n = series.split('{').next()?;
            (n == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn spawn(src: &RedisServer, dst: &RedisServer, run: &SyncRun) -> Shardsync {
    run.start_pair(&src.url(), &dst.url(), &[])
}

fn precheck(src: &RedisServer, dst: &RedisServer) -> String {
    let (su, du) = (src.url(), dst.url());
    let (status, out) = Shardsync::run_to_exit(
        &["check", "--source", &su, "--target", &du],
        Duration::from_secs(30),
    );
    assert!(status.success(), "precheck failed:\n{out}");
    out
}

fn precheck_line(out: &str) -> String {
    out.lines()
        .find(|l| l.contains("function libraries"))
        .unwrap_or_else(|| panic!("no function line in the precheck:\n{out}"))
        .to_string()
}

/// Valkey 9.1 → Redis 7.0: a portable library in the RDB and live `FUNCTION LOAD`; a live
/// `FUNCTION RESTORE` of a Valkey payload (RDB 80, unreadable by 7.0) converted to loads; a
/// Valkey-only library warned about by the precheck and rejected by name.
#[test]
fn valkey_to_redis70() {
    let src = RedisServer::start_with(ServerKind::Valkey91, &["--repl-diskless-sync", "no"]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let (mut sc, mut dc) = (src.client(), dst.client());
    load(&mut sc, &lib("lib1"));
    load(&mut sc, VALKEY_ONLY);

    let line = precheck_line(&precheck(&src, &dst));
    assert!(
        line.starts_with("WARN") && line.contains("vlib") && line.contains("server.*"),
        "{line}"
    );
    assert!(!line.contains("lib1"), "portable library flagged: {line}");

    let run = SyncRun::new(None);
    let mut ss = spawn(&src, &dst, &run);
    load(&mut sc, &lib("lib2"));
    restore(
        &mut sc,
        &dump_of(ServerKind::Valkey91, &["lib3", "lib4"]),
        None,
    );
    caught_up(&ss, &mut dc);
    assert_eq!(libraries(&mut dc), ["lib1", "lib2", "lib3", "lib4"]);
    let diffs = compare_functions(&mut sc, &mut dc);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0].key, b"vlib");
    let log = ss.log();
    assert!(
        log.lines()
            .any(|l| l.contains("target rejected a write") && l.contains("library vlib")),
        "the rejected library is not named:\n{log}"
    );
    assert!(
        !log.contains("key=LOAD") && !log.contains("key=REPLACE"),
        "{log}"
    );
    assert!(metric(&mut ss, "shardsync_target_errors_total") >= 1.0);

    // FLUSH policy: both sides end with exactly the payload's libraries.
    restore(
        &mut sc,
        &dump_of(ServerKind::Valkey91, &["lib5"]),
        Some("FLUSH"),
    );
    caught_up(&ss, &mut dc);
    assert_eq!(libraries(&mut dc), ["lib5"]);
    assert_no_differences(&compare_functions(&mut sc, &mut dc));
    ss.terminate();
}

/// Redis 7.0 → 7.0: libraries in the RDB; live `FUNCTION RESTORE` passes through.
#[test]
fn redis70_to_redis70() {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync", "no"]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let (mut sc, mut dc) = (src.client(), dst.client());
    load(&mut sc, &lib("lib1"));
    let line = precheck_line(&precheck(&src, &dst));
    assert!(line.starts_with("ok"), "{line}");
    let run = SyncRun::new(None);
    let ss = spawn(&src, &dst, &run);
    restore(&mut sc, &dump_of(ServerKind::Redis70, &["lib2"]), None);
    restore(
        &mut sc,
        &dump_of(ServerKind::Redis70, &["lib3"]),
        Some("APPEND"),
    );
    caught_up(&ss, &mut dc);
    assert_eq!(libraries(&mut dc), ["lib1", "lib2", "lib3"]);
    let opts = CompareOptions::default();
    assert_no_differences(&compare_servers_with(
        &mut sc,
        &mut dc,
        &[0],
        &[HEARTBEAT.as_bytes()],
        &opts,
    ));
    assert!(
        !ss.log().contains("target rejected a write"),
        "{}",
        ss.log()
    );
}

/// Redis 7.0 → 6.x: no functions on the target. The precheck names the library; the RDB's
/// library, a live `FUNCTION LOAD` and a live `FUNCTION RESTORE` are each a counted failure
/// naming the library; nothing is sent that the target would reject; keys still replicate.
fn redis70_to_6x(dst_kind: ServerKind) {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync", "no"]);
    let dst = RedisServer::start(dst_kind);
    let (mut sc, mut dc) = (src.client(), dst.client());
    load(&mut sc, &lib("lib1"));
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut sc)
        .expect("SET");
    let line = precheck_line(&precheck(&src, &dst));
    assert!(
        line.starts_with("WARN") && line.contains("lib1") && line.contains("no functions"),
        "{line}"
    );
    let run = SyncRun::new(None);
    let mut ss = spawn(&src, &dst, &run);
    load(&mut sc, &lib("lib2"));
    restore(&mut sc, &dump_of(ServerKind::Redis70, &["lib3"]), None);
    let _: () = redis::cmd("SET")
        .arg("k2")
        .arg("v2")
        .query(&mut sc)
        .expect("SET");
    caught_up(&ss, &mut dc);
    let log = ss.log();
    for (name, needle) in [
        ("lib1", "function library lib1"),
        ("lib2", "library=\"lib2\""),
        ("lib3", "library=\"lib3\""),
    ] {
        assert!(
            log.contains(needle) || log.contains(&format!("library={name}")),
            "{name} not named in the log:\n{log}"
        );
    }
    assert!(!log.contains("target rejected a write"), "{log}");
    assert_eq!(metric(&mut ss, "shardsync_function_errors_total"), 2.0);
    assert!(metric(&mut ss, "shardsync_convert_errors_total") >= 1.0);
    let opts = CompareOptions {
        compare_functions: false,
        ..Default::default()
    };
    assert_no_differences(&compare_servers_with(
        &mut sc,
        &mut dc,
        &[0],
        &[HEARTBEAT.as_bytes()],
        &opts,
    ));
    ss.terminate();
}

#[test]
fn redis70_to_redis62() {
    redis70_to_6x(ServerKind::Redis62);
}

#[test]
fn redis70_to_redis60() {
    redis70_to_6x(ServerKind::Redis60);
}
