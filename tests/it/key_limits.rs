//! A key name longer than `sync.max_key_bytes` in a real source's RDB: the full sync stops with an
//! error that names the key (its first bytes, escaped) and the setting to raise, the shard fails
//! at once (retrying would fetch the same RDB again) and is counted as a permanent link error,
//! `/status` shows it, and the run exits 4 with the message.

use crate::common;
use crate::common::util::sample;

use std::time::Duration;

use common::run::SyncRun;
use common::util::http_get;
use common::*;

#[test]
fn key_over_max_key_bytes_fails_the_shard_naming_key_and_setting() {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync", "no"]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut sc = src.client();
    // A 300-byte name with a newline in it (it must come out escaped), and short keys around it.
    let long = format!("big\nkey:{}", "x".repeat(292));
    assert_eq!(long.len(), 300);
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut sc)
            .expect("SET");
    }
    let _: () = redis::cmd("SET")
        .arg(&long)
        .arg("v")
        .query(&mut sc)
        .expect("SET");

    let sync = SyncRun::new(Some("[sync]\nmax_key_bytes = 100\n"));
    let started = std::time::Instant::now();
    let mut ss = sync.spawn_pair(&src.url(), &dst.url(), &[]);
    let addr = sync.addr.clone();

    // The shard fails at once (no retry loop over the same RDB) with the actionable message.
    let expected = format!(
        "key name \"big\\nkey:{}\"… of 300 bytes exceeds the limit of 100 bytes; raise sync.max_key_bytes",
        "x".repeat(56)
    );
    let mut st = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(15), || {
            let Ok((200, body)) = http_get(&addr, "/status") else {
                return false;
            };
            st = serde_json::from_str(&body).unwrap_or_default();
            st["shards"][0]["phase"] == "failed"
        }),
        "shard never failed: {st}\n{}",
        ss.log_tail(30)
    );
    let shard = &st["shards"][0];
    let err = shard["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains(&expected),
        "last_error does not name the key prefix and the setting: {err}"
    );
    assert_eq!(shard["full_resyncs"].as_u64(), Some(1), "retried: {shard}");
    let (_, metrics) = http_get(&addr, "/metrics").expect("GET /metrics");
    let shard_name = src.addr();
    assert_eq!(
        sample(
            &metrics,
            "shardsync_link_errors_total",
            &[("shard", &shard_name), ("class", "permanent")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "shardsync_link_errors_total",
            &[("shard", &shard_name), ("class", "transient")]
        ),
        Some(0.0)
    );

    let status = ss
        .wait_exit(Duration::from_secs(20))
        .expect("shardsync exits");
    assert_eq!(
        status.code(),
        Some(4),
        "exit status; log:\n{}",
        ss.log_tail(20)
    );
    let log = ss.log();
    assert!(log.contains("raise sync.max_key_bytes"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("failed and exited in {:?}", started.elapsed());
}
