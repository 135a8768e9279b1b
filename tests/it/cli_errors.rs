//! Bad input gets a precise error, a non-zero exit, and nothing is written to the target:
//! wrong password, unreachable source or target, malformed URL, bad config, corrupt RDB file.

use crate::common;

use std::time::Duration;

use common::run::{pair_to_exit, run_to_exit as run};
use common::*;

const SECRET: &str = "s3cret-Pa55";

/// `shardsync run --source SOURCE --target TARGET --metrics-addr off` plus `extra`, to exit.
fn run_sync(source: &str, target: &str, extra: &[&str]) -> (i32, String) {
    pair_to_exit("run", source, target, extra)
}

fn assert_target_empty(dst: &RedisServer) {
    let mut c = dst.client();
    let n: u64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(n, 0, "something was written to the target");
}

#[test]
fn wrong_source_password_names_the_node() {
    let src = RedisServer::start_with_password(ServerKind::Redis70, SECRET, &[]);
    let dst = RedisServer::start(ServerKind::Redis70);
    src.client();
    let url = format!("redis://:wrong-password@{}", src.addr());
    let (code, log) = run_sync(&url, &dst.url(), &[]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains(&src.addr()) && log.contains("rejected the password"),
        "{log}"
    );
    assert!(
        !log.contains("wrong-password") && !log.contains(SECRET),
        "password leaked:\n{log}"
    );
    assert_target_empty(&dst);
}

#[test]
fn missing_source_password_says_so() {
    let src = RedisServer::start_with_password(ServerKind::Redis60, SECRET, &[]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let (code, log) = run_sync(&format!("redis://{}", src.addr()), &dst.url(), &[]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("requires a password"), "{log}");
    assert_target_empty(&dst);
}

#[test]
fn password_from_env_works_and_never_leaks() {
    let src = RedisServer::start_with_password(ServerKind::Redis70, SECRET, &[]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut p = Shardsync::spawn_with_env(
        &[
            "check",
            "--source",
            &format!("redis://{}", src.addr()),
            "--target",
            &dst.url(),
            "--log-level",
            "debug",
        ],
        &[("SHARDSYNC_SOURCE_PASSWORD", SECRET)],
    );
    let status = p
        .wait_exit(Duration::from_secs(30))
        .expect("check exits")
        .code();
    let log = p.log();
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains("source reachable"), "{log}");
    assert!(!log.contains(SECRET), "password leaked:\n{log}");
}

#[test]
fn unreachable_source() {
    let dst = RedisServer::start(ServerKind::Redis70);
    let port = common::server::pick_free_port(false);
    let (code, log) = run_sync(&format!("redis://127.0.0.1:{port}"), &dst.url(), &[]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains(&format!("source 127.0.0.1:{port}")) && log.contains("cannot connect"),
        "{log}"
    );
    assert_target_empty(&dst);
}

#[test]
fn unreachable_target() {
    let src = RedisServer::start(ServerKind::Redis70);
    src.client();
    let port = common::server::pick_free_port(false);
    let (code, log) = run_sync(&src.url(), &format!("redis://127.0.0.1:{port}"), &[]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains(&format!("target 127.0.0.1:{port}")) && log.contains("cannot connect"),
        "{log}"
    );
}

#[test]
fn malformed_url_and_bad_config() {
    let (code, log) = run(&[
        "run",
        "--source",
        "redis://:pw@nohostport",
        "--target",
        "redis://127.0.0.1:1",
    ]);
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("source.url") && log.contains("no port"),
        "{log}"
    );
    assert!(!log.contains(":pw@"), "password leaked: {log}");
    let (code, log) = run(&[
        "run",
        "--source",
        "http://127.0.0.1:1",
        "--target",
        "redis://127.0.0.1:1",
    ]);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("scheme"), "{log}");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[source]\nurl = \"redis://127.0.0.1:1\"\n[sync]\nqueue_batches = 0\n",
    )
    .expect("write config");
    let (code, log) = run(&[
        "run",
        "--config",
        cfg.to_str().expect("utf-8"),
        "--target",
        "redis://127.0.0.1:2",
    ]);
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("sync.queue_batches") && log.contains("at least 1"),
        "{log}"
    );
    std::fs::write(&cfg, "[sorce]\nurl = 1\n").expect("write config");
    let (code, log) = run(&["run", "--config", cfg.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("sorce"), "{log}");
}

#[test]
fn target_with_data_blocks_when_asked() {
    let src = RedisServer::start(ServerKind::Redis70);
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut dc = dst.client();
    let _: () = redis::cmd("SET")
        .arg("already")
        .arg("here")
        .query(&mut dc)
        .expect("SET");
    let (code, log) = run_sync(&src.url(), &dst.url(), &["--target-has-data", "block"]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("target holds 1 keys"), "{log}");
}

#[test]
fn user_without_psync_permission_is_refused_before_any_sync() {
    let src = RedisServer::start(ServerKind::Redis70);
    let dst = RedisServer::start(ServerKind::Redis70);
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "limited",
            "on",
            ">limited-pw",
            "~*",
            "&*",
            "+@all",
            "-psync",
        ])
        .query(&mut src.client())
        .expect("ACL SETUSER");
    let url = format!("redis://limited:limited-pw@{}", src.addr());
    let (code, log) = run_sync(&url, &dst.url(), &[]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains(&format!("source master {}", src.addr())) && log.contains("may not run PSYNC"),
        "{log}"
    );
    assert!(!log.contains("limited-pw"), "password leaked:\n{log}");
    assert_target_empty(&dst);
    // The default user passes the same check.
    let (code, log) = run(&["check", "--source", &src.url(), "--target", &dst.url()]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("source user \"default\" may run the"), "{log}");
}
