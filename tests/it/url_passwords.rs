//! Passwords with `+ % @ : / #` and non-ASCII characters, in URLs percent-encoded as for
//! redis-cli (`+` stays `+`), for the default user (`requirepass`) and for an ACL user, on real
//! servers: `shardsync run` replicates with them (replication link, writers, heartbeat) and
//! `shardsync verify` compares with them.

use crate::common;

use std::time::Duration;

use common::*;

/// Every character the URL syntax cares about, and some that are not ASCII.
const PW_SOURCE: &str = "p+w%d@x:y/z#ä€";
const PW_TARGET: &str = "wr+it%er@:/#ö";

/// Percent-encodes what a URL user-info cannot hold; `+` and non-ASCII are left raw on purpose
/// (`+` must stay `+`; the URL parser encodes non-ASCII itself).
fn enc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '%' => "%25".into(),
            '@' => "%40".into(),
            ':' => "%3A".into(),
            '/' => "%2F".into(),
            '#' => "%23".into(),
            c => c.to_string(),
        })
        .collect()
}

fn conn(port: u16, user: Option<&str>, pw: &str) -> redis::Connection {
    let mut settings = redis::RedisConnectionInfo::default().set_password(pw);
    if let Some(u) = user {
        settings = settings.set_username(u);
    }
    let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
        "127.0.0.1".into(),
        port,
    ))
    .expect("connection info")
    .set_redis_settings(settings);
    redis::Client::open(info)
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect with the password")
}

#[test]
fn special_passwords_and_acl_user_work_for_run_and_verify() {
    let src = RedisServer::start(ServerKind::Redis70);
    let dst = RedisServer::start(ServerKind::Redis70);
    {
        let mut c = src.client();
        for i in 0..50 {
            let _: () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(i)
                .query(&mut c)
                .expect("SET");
        }
        let _: () = redis::cmd("HSET")
            .arg("h")
            .arg("f")
            .arg("v")
            .query(&mut c)
            .expect("HSET");
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(PW_SOURCE)
            .query(&mut c)
            .expect("requirepass");
    }
    {
        let mut c = dst.client();
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("sync-user")
            .arg("on")
            .arg(format!(">{PW_TARGET}"))
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .query(&mut c)
            .expect("ACL SETUSER");
        // Only the ACL user can log in now.
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg("off")
            .query(&mut c)
            .expect("default off");
    }
    let source = format!("redis://:{}@{}", enc(PW_SOURCE), src.addr());
    let target = format!("redis://sync-user:{}@{}", enc(PW_TARGET), dst.addr());

    let state = tempfile::tempdir().expect("state dir");
    let mut run = Shardsync::spawn(&[
        "run",
        "--source",
        &source,
        "--target",
        &target,
        "--metrics-addr",
        "off",
        "--state-dir",
        state.path().to_str().expect("utf-8 path"),
    ]);
    let mut t = conn(dst.port(), Some("sync-user"), PW_TARGET);
    let synced = wait_until(Duration::from_secs(60), || {
        redis::cmd("EXISTS")
            .arg("h")
            .query::<u64>(&mut t)
            .unwrap_or(0)
            == 1
    });
    assert!(synced, "no data reached the target:\n{}", run.log_tail(40));

    let (status, out) = Shardsync::run_to_exit(
        &[
            "verify", "--source", &source, "--target", &target, "--rate", "0",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(
        status.code(),
        Some(0),
        "{out}\nrun log:\n{}",
        run.log_tail(40)
    );
    assert!(out.contains("checked 51 source keys"), "{out}");
    let log = run.log();
    run.terminate();
    for secret in [PW_SOURCE, PW_TARGET, &enc(PW_SOURCE), &enc(PW_TARGET)] {
        assert!(
            !log.contains(secret) && !out.contains(secret),
            "password leaked"
        );
    }
    // The old form-decoding would have turned `+` into a space: that login must fail.
    let spaced = source.replace('+', " ");
    let (status, out) = Shardsync::run_to_exit(
        &["verify", "--source", &spaced, "--target", &target],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(2), "{out}");
}
