//! Clearing a source shard's keys from the target before a repeated full sync, as a native
//! replica empties itself before loading a new RDB: without it, keys deleted on the source while
//! the link was down (or lost by a source restart) would stay on the target for ever. A
//! standalone source owns the whole target (`FLUSHALL` on each target master); a cluster source
//! shard owns its slots (`CLUSTER GETKEYSINSLOT` + `UNLINK` on a cluster target, a `SCAN` that
//! keeps keys of those slots on a standalone target). Under a database selection or key filters
//! ([`clear_selected`]) only the selected target databases and the keys the filters keep go.

use redis::aio::MultiplexedConnection;

use super::SinkError;
use super::targets::Targets;
use crate::config::Endpoint;
use crate::net::client;
use crate::router::key_slot;

fn in_ranges(ranges: &[(u16, u16)], slot: u16) -> bool {
    ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
}

async fn unlink(
    conn: &mut MultiplexedConnection,
    ep: &Endpoint,
    keys: &[Vec<u8>],
) -> Result<(), SinkError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut c = redis::cmd("UNLINK");
    for k in keys {
        c.arg(k.as_slice());
    }
    c.query_async::<i64>(conn)
        .await
        .map(|_| ())
        .map_err(|e| SinkError::command(ep, "UNLINK", &e))
}

/// Removes the keys of a shard from the target: every key for a standalone source (`slots` is
/// `None`), else the keys in `slots`. Returns how many keys were removed (`FLUSHALL`: unknown, 0).
///
/// Keys starting with `keep` (exactly-once progress keys: other shards' may hash into this
/// shard's slots; this shard's own are reset by its full-sync mark) stay.
pub async fn clear_shard(
    targets: &Targets,
    slots: Option<&[(u16, u16)]>,
    keep: &[u8],
) -> Result<u64, SinkError> {
    let kept = |k: &[u8]| !keep.is_empty() && k.starts_with(keep);
    let masters = targets.master_endpoints();
    let mut removed = 0u64;
    for ep in masters {
        let mut conn = client::connect("target", &ep).await?;
        match slots {
            None => {
                redis::cmd("FLUSHALL")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| SinkError::command(&ep, "FLUSHALL", &e))?;
            }
            Some(ranges) if targets.cluster => {
                for &(a, b) in ranges {
                    for slot in a..=b {
                        // Only the node that owns the slot has its keys.
                        if targets.endpoint_for_slot(slot).as_ref() != Some(&ep) {
                            continue;
                        }
                        loop {
                            let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                                .arg("GETKEYSINSLOT")
                                .arg(slot)
                                .arg(1000)
                                .query_async(&mut conn)
                                .await
                                .map_err(|e| SinkError::command(&ep, "GETKEYSINSLOT", &e))?;
                            let keys: Vec<Vec<u8>> =
                                keys.into_iter().filter(|k| !kept(k)).collect();
                            if keys.is_empty() {
                                break;
                            }
                            removed += keys.len() as u64;
                            unlink(&mut conn, &ep, &keys).await?;
                        }
                    }
                }
            }
            Some(ranges) => {
                removed += unlink_scanned(&mut conn, &ep, |k| {
                    in_ranges(ranges, key_slot(k)) && !kept(k)
                })
                .await?;
            }
        }
    }
    Ok(removed)
}

/// [`clear_shard`] under `sync.dbs` / `sync.filter`: only what this run syncs is removed. Each
/// target database in `target_dbs` (`None`: every database holding keys) is emptied with
/// `FLUSHDB` when no key rule and no slot range narrows it, else scanned and the keys the key
/// rules keep (and in `slots`, if given) are unlinked. Returns the keys removed (`FLUSHDB`: 0).
pub async fn clear_selected(
    targets: &Targets,
    slots: Option<&[(u16, u16)]>,
    filter: &crate::router::filter::Filter,
    target_dbs: Option<Vec<u32>>,
) -> Result<u64, SinkError> {
    let mut removed = 0u64;
    for ep in targets.master_endpoints() {
        let mut conn = client::connect("target", &ep).await?;
        let dbs = match (&target_dbs, targets.cluster) {
            (_, true) => vec![0],
            (Some(d), false) => d.clone(),
            (None, false) => {
                let info: String = redis::cmd("INFO")
                    .arg("keyspace")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| SinkError::command(&ep, "INFO", &e))?;
                client::keyspace_dbs(&info)
            }
        };
        for db in dbs {
            if !targets.cluster {
                redis::cmd("SELECT")
                    .arg(db)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| SinkError::command(&ep, format!("SELECT {db}"), &e))?;
            }
            if slots.is_none() && !filter.has_key_rules() {
                redis::cmd("FLUSHDB")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| SinkError::command(&ep, "FLUSHDB", &e))?;
                continue;
            }
            removed += unlink_scanned(&mut conn, &ep, |k| {
                filter.key_passes(k) && slots.is_none_or(|r| in_ranges(r, key_slot(k)))
            })
            .await?;
        }
    }
    Ok(removed)
}

/// Scans the connection's current database and unlinks the keys `mine` accepts; returns how
/// many were unlinked.
async fn unlink_scanned(
    conn: &mut MultiplexedConnection,
    ep: &Endpoint,
    mine: impl Fn(&[u8]) -> bool,
) -> Result<u64, SinkError> {
    let mut removed = 0u64;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|e| SinkError::command(ep, "SCAN", &e))?;
        let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| mine(k)).collect();
        removed += keys.len() as u64;
        unlink(conn, ep, &keys).await?;
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}
