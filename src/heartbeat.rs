//! The heartbeat: writes the current Unix time in ms into a key of the source every interval.
//! When that write reaches the target through replication, the writer knows how far behind the
//! target is, in seconds. The key is deleted from the source when shardsync stops.
//!
//! The keys of this instance are exactly `base` (standalone source) or `base:{tag}` (one per
//! master of a cluster source). In a cascade (A → #1 → B → #2 → C) the keys #1 writes into A
//! reach B as data: #2 copies them to C like any other key (C then equals B and B's native
//! replicas) and never measures its lag from them ([`own_ms`] matches names exactly, never by
//! prefix). Two instances of one cascade must use different base names (`--heartbeat-key`).

use std::sync::Arc;
use std::time::Duration;

use crate::cmd::Cmd;
use crate::config::Endpoint;
use crate::net::client;
use crate::observe::progress::ShardState;

/// The shard's master now, with the login of `seed` (follows failovers).
pub fn current_endpoint(seed: &Endpoint, shard: &ShardState) -> Endpoint {
    let addr = shard.master_addr();
    addr.rsplit_once(':')
        .and_then(|(h, p)| {
            Some(crate::net::topology::endpoint_like(
                seed,
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().ok()?,
            ))
        })
        .unwrap_or_else(|| seed.clone())
}

/// Writes the heartbeat into the shard's current source node until the task is dropped.
pub async fn run(seed: Endpoint, shard: Arc<ShardState>, key: String, interval: Duration) {
    let mut conn = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shard.is_failed() {
            return; // a failed shard is not measured (its source may refuse us for good)
        }
        if conn.is_none() {
            let ep = current_endpoint(&seed, &shard);
            match client::connect("source", &ep).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat: cannot connect to the source");
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(crate::now_ms())
            .query_async(c)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %client::describe(&e), "heartbeat: write to the source failed");
            conn = None;
        }
    }
}

/// Deletes the heartbeat key and returns the source's replication offset just after the delete,
/// so that the caller can wait until the target has applied it.
pub async fn remove(ep: &Endpoint, key: &str) -> Result<u64, String> {
    let mut c = client::connect("source", ep).await?;
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut c)
        .await
        .map_err(|e| client::describe(&e))?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .map_err(|e| client::describe(&e))?;
    client::info_field(&info, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "INFO replication has no master_repl_offset".to_string())
}

/// True when `key` is one of this instance's heartbeat keys: `base` itself or `base:{tag}`.
pub fn is_own_key(base: &[u8], key: &[u8]) -> bool {
    if base.is_empty() || !key.starts_with(base) {
        return false;
    }
    let rest = &key[base.len()..];
    rest.is_empty()
        || (rest.len() >= 3
            && rest.starts_with(b":{")
            && rest.ends_with(b"}")
            && !rest[2..rest.len() - 1].contains(&b'}'))
}

/// The source time (Unix ms) carried by `cmd` when it is a `SET` of one of this instance's
/// heartbeat keys (see [`is_own_key`]).
pub fn own_ms(base: &[u8], cmd: &Cmd) -> Option<u64> {
    if cmd.args.len() < 3 || !cmd.is("SET") || !is_own_key(base, &cmd.args[1]) {
        return None;
    }
    std::str::from_utf8(&cmd.args[2]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_keys_match_exactly_never_by_prefix() {
        let base = b"shardsync:heartbeat";
        assert!(is_own_key(base, b"shardsync:heartbeat"));
        assert!(is_own_key(base, b"shardsync:heartbeat:{a1}"));
        // Another instance's key (a cascade's upstream) that starts with our name: data.
        assert!(!is_own_key(base, b"shardsync:heartbeat:a-to-b"));
        assert!(!is_own_key(base, b"shardsync:heartbeat:a-to-b:{a1}"));
        assert!(!is_own_key(base, b"shardsync:heartbeatX"));
        assert!(!is_own_key(b"", b"shardsync:heartbeat"));
        let set = crate::cmd!["SET", "shardsync:heartbeat:{x}", "1700000000000"];
        assert_eq!(own_ms(base, &set), Some(1_700_000_000_000));
        let other = crate::cmd!["SET", "shardsync:heartbeat:a-to-b", "1700000000000"];
        assert_eq!(own_ms(base, &other), None);
        assert_eq!(
            own_ms(base, &crate::cmd!["DEL", "shardsync:heartbeat"]),
            None
        );
    }
}
