//! The exactly-once writer's readiness check after connecting: nothing is pipelined into a
//! target that is still loading its AOF or RDB.
//!
//! Why: a restarted target accepts connections while it loads and answers `CLIENT SETNAME`,
//! `MULTI` and `EXEC` (allowed while loading), but refuses every data command with `LOADING`.
//! Pipelined batches then split in two: those the target read while loading abort
//! (`EXECABORT`), those it read after the load commit, with a higher position. The writer sees
//! the first `LOADING`, reconnects, reads the progress key (now past the aborted batches) and
//! skips them as "committed, reply lost": their writes were lost (issue 12, about 1 run in 55 of
//! `target_sigkill_restarts_from_aof_exact`; `tests/it/exact_loading.rs`). A data command
//! (`GET`) answered without `LOADING` proves the load is over; on the same connection no later
//! command can meet it again (only `DEBUG RELOAD` or a `REPLICAOF` reload the data set).

use bytes::Bytes;

use crate::net::RespConn;
use crate::resp::Frame;
use crate::sink::exact::Exact;
use crate::sink::targets::Targets;

/// What the readiness `GET` said.
pub(super) enum Readiness {
    /// The target answered a data command: it is not loading.
    Ready,
    /// `LOADING …` (escaped): try again on a new connection after the backoff.
    Loading(String),
    /// Another error (`NOPERM`…), escaped.
    Refused(String),
}

/// The key read to check readiness: on a standalone target this instance's key prefix; on a
/// cluster node a key of a slot the node serves (else a `MOVED` would answer before any
/// `LOADING`). Under `sync.progress_prefix`, so the writer's ACL already allows it.
pub(super) fn probe_key(exact: &Exact, targets: Option<&Targets>, node: &str) -> Bytes {
    let base = exact.instance_prefix();
    let Some(targets) = targets else {
        return Bytes::from(base);
    };
    let routing = targets.routing();
    let slot = (0..crate::router::SLOTS as u16).find(|&s| {
        routing
            .writer_index(Some(s))
            .and_then(|i| routing.writers.get(i))
            .and_then(Option::as_ref)
            .is_some_and(|w| w.addr == node)
    });
    match slot {
        Some(s) => Bytes::from(format!("{base}{{{}}}", crate::sink::exact_slots::tag(s))),
        None => Bytes::from(base),
    }
}

/// Sends `GET key` and says whether the target is ready (a `MOVED`/`ASK` counts as ready: the
/// node's table changed, and the writes it refuses are redirected).
pub(super) async fn check(conn: &mut RespConn, key: Bytes) -> Result<Readiness, String> {
    let reply = conn
        .request(&crate::cmd!["GET", key])
        .await
        .map_err(|e| e.to_string())?;
    Ok(match reply {
        Frame::Error(e) if super::reply_error::not_ready(&e) => {
            Readiness::Loading(crate::escape::text(&e))
        }
        Frame::Error(e) if super::parse_redirect(&e).is_some() => Readiness::Ready,
        Frame::Error(e) => Readiness::Refused(crate::escape::text(&e)),
        _ => Readiness::Ready,
    })
}
