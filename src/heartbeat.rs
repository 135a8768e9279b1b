//! The heartbeat: writes the current Unix time in ms into a key of the source every interval.
//! When that write reaches the target through replication, the writer knows how far behind the
//! target is, in seconds. The key is deleted from the source when shardsync stops.
//!
//! The keys of this instance are exactly `base` (standalone source) or `base:{tag}` (one per
//! master of a cluster source). In a cascade (A → #1 → B → #2 → C) the keys #1 writes into A
//! reach B as data: #2 copies them to C like any other key (C then equals B and B's native
//! replicas) and never measures its lag from them ([`own_ms`] matches names exactly, never by
//! prefix). Two instances of one cascade should use different base names (`--heartbeat-key`);
//! when they do not, both write one key into B: the downstream instance notices values in its
//! key that it never wrote ([`own_ms`] remembers what this process wrote), logs a warning once,
//! copies them as data and leaves them out of its lag.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use crate::cmd::Cmd;
use crate::config::Endpoint;
use crate::net::{NetError, client};
use crate::observe::progress::ShardState;

/// The shard's master now, with the login of `seed` (follows failovers).
pub fn current_endpoint(seed: &Endpoint, shard: &ShardState) -> Endpoint {
    crate::net::topology::endpoint_at(seed, &shard.master_addr()).unwrap_or_else(|| seed.clone())
}

/// Values this process wrote into each heartbeat key, oldest first (at most [`REMEMBERED`]).
static WRITTEN: LazyLock<Mutex<HashMap<Vec<u8>, VecDeque<u64>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
/// When this process wrote its first heartbeat (Unix ms).
static FIRST_WRITE: OnceLock<u64> = OnceLock::new();
/// Heartbeat values remembered per key: an hour at the default interval.
const REMEMBERED: usize = 4096;

fn remember(key: &[u8], ms: u64) {
    FIRST_WRITE.get_or_init(|| ms);
    if let Ok(mut m) = WRITTEN.lock() {
        let q = m.entry(key.to_vec()).or_default();
        if q.len() >= REMEMBERED {
            q.pop_front();
        }
        q.push_back(ms);
    }
}

/// A value in one of our keys that this process did not write although it is newer than our
/// first write: another process writes the same key into our source.
fn foreign(key: &[u8], ms: u64) -> bool {
    let Some(&first) = FIRST_WRITE.get() else {
        return false;
    };
    if ms < first {
        return false; // an earlier run's, replayed
    }
    WRITTEN
        .lock()
        .map(|m| m.get(key).is_some_and(|q| !q.contains(&ms)))
        .unwrap_or(false)
}

/// Writes the heartbeat into the shard's current source node until `stop` is cancelled.
pub async fn run(
    seed: Endpoint,
    shard: Arc<ShardState>,
    key: String,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut conn = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
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
        let now = crate::now_ms();
        remember(key.as_bytes(), now);
        let r: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(now).query_async(c).await;
        if let Err(e) = r {
            tracing::warn!(error = %client::describe(&e), "heartbeat: write to the source failed");
            conn = None;
        }
    }
}

/// Deletes the heartbeat key and returns the source's replication offset just after the delete,
/// so that the caller can wait until the target has applied it.
pub async fn remove(ep: &Endpoint, key: &str) -> Result<u64, NetError> {
    let fail = |why: String| NetError::client("source", ep, why);
    let mut c = client::connect("source", ep).await?;
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut c)
        .await
        .map_err(|e| {
            fail(format!(
                "DEL of the heartbeat key: {}",
                client::describe(&e)
            ))
        })?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .map_err(|e| fail(format!("INFO replication: {}", client::describe(&e))))?;
    client::info_field(&info, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            fail("INFO replication has no master_repl_offset (is this node still a master?)".into())
        })
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
/// heartbeat keys (see [`is_own_key`]) with a value this process wrote (or an earlier run's).
/// A value someone else wrote into our key is left out (and reported once): its time says
/// nothing about this instance's lag.
pub fn own_ms(base: &[u8], cmd: &Cmd) -> Option<u64> {
    if cmd.args.len() < 3 || !cmd.is("SET") || !is_own_key(base, &cmd.args[1]) {
        return None;
    }
    let ms: u64 = std::str::from_utf8(&cmd.args[2]).ok()?.parse().ok()?;
    if foreign(&cmd.args[1], ms) {
        let key = crate::escape::quoted(&cmd.args[1]);
        if let Some(suppressed) = crate::observe::lograte::allow(&key, "foreign_heartbeat") {
            tracing::warn!(key = %key, suppressed,
                "the heartbeat key is also written by someone else (another shardsync replicating into this instance's source — a cascade — with the same heartbeat key?): those writes are copied as data but not used for the lag; give each instance its own --heartbeat-key");
        }
        return None;
    }
    Some(ms)
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

    #[test]
    fn values_someone_else_wrote_into_our_key_are_not_our_lag() {
        let key = b"hb-test-foreign";
        let base = key.as_slice();
        let t = crate::now_ms();
        let set = |ms: u64| crate::cmd!["SET", &key[..], ms.to_string()];
        remember(key, t);
        remember(key, t + 1000);
        assert_eq!(own_ms(base, &set(t + 1000)), Some(t + 1000));
        assert_eq!(own_ms(base, &set(t + 500)), None, "a value we never wrote");
        assert_eq!(
            own_ms(base, &set(t - 3_600_000)),
            Some(t - 3_600_000),
            "an earlier run's"
        );
    }
}
