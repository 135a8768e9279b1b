//! The heartbeat: writes the current Unix time in ms into a key of the source every interval.
//! When that write reaches the target through replication, the writer knows how far behind the
//! target is, in seconds. The key is deleted from the source when shardsync stops.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Endpoint;
use crate::net::{NetError, client};
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
