//! Prechecks of ACL rights: the source user may run what a replica needs, the target user every
//! command shardsync itself sends. Each command is asked with real arguments (a key the filters
//! keep, so key patterns count too) on every master, and nothing is executed:
//! - Redis / Valkey 7.0+: `ACL DRYRUN <user> <command> <args…>`;
//! - 6.x, or a user not allowed to run `ACL DRYRUN`: the command is queued inside a `MULTI` and
//!   the transaction `DISCARD`ed. The server checks ACLs when it queues a command (`-NOPERM …`
//!   at once; `+QUEUED` when allowed), so its own verdict is read without running anything.
//!   (On 7.0+ `PSYNC` cannot be queued: that one needs `ACL DRYRUN`, else it is a warning.)
//!
//! A denied command fails the check with the command, the user and the server's reason, e.g.
//! `target user "sync" may not run RESTORE, FLUSHALL: NOPERM this user has no permissions to
//! run the 'restore' command`. What the target needs beyond this list are the write commands of
//! the source's own applications, which arrive in the replication stream (typically `+@write`).

use redis::aio::MultiplexedConnection;

use crate::config::{Config, OnResync};
use crate::net::topology::Topology;
use crate::net::{NetError, client};
use crate::precheck::Check;

/// The server's answer for one command.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Denied(String),
    Unknown(String),
}

/// A probe key that passes the key filters (so ACL key patterns are checked on a key that will
/// really be written).
fn probe_key(cfg: &Config) -> String {
    let base = "shardsync-acl-probe";
    match cfg.sync.filter.include_prefix() {
        Some(p) => format!("{p}{base}"),
        None => base.to_string(),
    }
}

fn words(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What a source master is sent: the replica handshake, discovery, the repair path's reads,
/// the heartbeat.
fn source_commands(cfg: &Config, cluster: bool) -> Vec<Vec<String>> {
    let k = probe_key(cfg);
    let mut v = vec![
        words(&["PING"]),
        words(&["INFO", "replication"]),
        words(&["REPLCONF", "listening-port", "0"]),
        words(&["PSYNC", "?", "-1"]),
        words(&["SELECT", "0"]),
        words(&["MULTI"]),
        words(&["DUMP", &k]),
        words(&["PTTL", &k]),
        words(&["EXEC"]),
    ];
    if cluster {
        // Discovery, and a link's check that its node is still the master.
        v.push(words(&["CLUSTER", "NODES"]));
        v.push(words(&["ROLE"]));
    }
    if !cfg.sync.heartbeat_key.is_empty() {
        // Written every interval, removed at a clean stop.
        v.push(words(&["SET", &cfg.sync.heartbeat_key, "0"]));
        v.push(words(&["DEL", &cfg.sync.heartbeat_key]));
    }
    v
}

/// What the target is sent by shardsync itself: discovery, database selection, the full sync's
/// commands (`RESTORE` and the plain forms of every type), expiries, the scripts that emulate
/// newer commands on older targets, and the clearing before a repeated full sync.
fn target_commands(cfg: &Config, cluster: bool) -> Vec<Vec<String>> {
    let k = probe_key(cfg);
    let k = k.as_str();
    let mut v = vec![
        words(&["PING"]),
        words(&["INFO", "server"]),
        words(&["MULTI"]),
        words(&["EXEC"]),
        words(&["SET", k, "v"]),
        words(&["APPEND", k, "v"]),
        words(&["DEL", k]),
        words(&["UNLINK", k]),
        words(&["RESTORE", k, "0", "payload", "REPLACE", "ABSTTL"]),
        words(&["RPUSH", k, "v"]),
        words(&["HSET", k, "f", "v"]),
        words(&["SADD", k, "m"]),
        words(&["ZADD", k, "1", "m"]),
        words(&["XADD", k, "1-1", "f", "v"]),
        words(&["XSETID", k, "1-1"]),
        words(&["XGROUP", "CREATE", k, "g", "$"]),
        words(&["XCLAIM", k, "g", "c", "0", "1-1", "FORCE"]),
        words(&["XDEL", k, "1-1"]),
        words(&["PEXPIREAT", k, "1"]),
        words(&["EVAL", "return 1", "1", k]),
        words(&["SCAN", "0"]),
    ];
    if cluster {
        // Discovery, redirects, and the cross-slot fallback's reads.
        v.push(words(&["CLUSTER", "NODES"]));
        v.push(words(&["ASKING"]));
        v.push(words(&["DUMP", k]));
        v.push(words(&["PTTL", k]));
        if cfg.sync.on_resync != Some(OnResync::Keep) {
            v.push(words(&["CLUSTER", "GETKEYSINSLOT", "0", "1"]));
        }
    } else {
        v.push(words(&["SELECT", "0"]));
    }
    if !cluster && cfg.sync.exactly_once == crate::config::ExactlyOnce::On {
        // Asked for explicitly: a user who may not run them fails the check (with `auto` the
        // run falls back to at-least-once instead, see `exact_denied`).
        v.extend(exact_commands(cfg));
    }
    if cfg.sync.on_resync != Some(OnResync::Keep) {
        v.push(if cfg.sync.filter.is_noop() {
            words(&["FLUSHALL"])
        } else {
            words(&["FLUSHDB"])
        });
    }
    v
}

fn is_noperm(e: &redis::RedisError) -> bool {
    e.code() == Some("NOPERM") || e.to_string().contains("NOPERM")
}

fn reason(e: &redis::RedisError) -> String {
    // The server's text (never a password: these are replies to commands without secrets).
    // A hostile peer's reply may carry control bytes: never let them reach a terminal or log.
    let s = crate::escape::terminal_safe(&e.to_string());
    s.split_once(": ").map_or(s.clone(), |(_, r)| r.to_string())
}

/// `ACL DRYRUN`: `Ok(None)` when the user may not run `ACL DRYRUN` itself (fall back). Err:
/// the connection failed (I/O).
async fn dryrun(
    conn: &mut MultiplexedConnection,
    user: &str,
    cmd: &[String],
) -> Result<Option<Verdict>, redis::RedisError> {
    let r: redis::RedisResult<redis::Value> = redis::cmd("ACL")
        .arg("DRYRUN")
        .arg(user)
        .arg(cmd)
        .query_async(conn)
        .await;
    match r {
        Ok(redis::Value::Okay) | Ok(redis::Value::SimpleString(_)) => Ok(Some(Verdict::Allowed)),
        Ok(redis::Value::BulkString(why)) => Ok(Some(Verdict::Denied(crate::escape::text(&why)))),
        Ok(other) => Ok(Some(Verdict::Unknown(format!(
            "unexpected reply {other:?}"
        )))),
        Err(e) if e.kind() == redis::ErrorKind::Io => Err(e),
        Err(e) if is_noperm(&e) => Ok(None),
        Err(e) => Ok(Some(Verdict::Unknown(reason(&e)))),
    }
}

/// Queues each command in a `MULTI` and discards it: the server's ACL verdict without running
/// anything. `MULTI`/`EXEC` themselves are judged by the probe's own `MULTI` (and `EXEC` is
/// assumed to go with it). The connection must be dropped afterwards (it may still be inside
/// the `MULTI` when the user may not run `DISCARD`). Err: the connection failed (I/O).
async fn multi_probe(
    conn: &mut MultiplexedConnection,
    cmds: &[Vec<String>],
) -> Result<Vec<Verdict>, redis::RedisError> {
    if let Err(e) = redis::cmd("MULTI").query_async::<()>(conn).await {
        if e.kind() == redis::ErrorKind::Io {
            return Err(e);
        }
        let v = if is_noperm(&e) {
            Verdict::Denied(reason(&e))
        } else {
            Verdict::Unknown(reason(&e))
        };
        return Ok(cmds
            .iter()
            .map(|c| match &v {
                Verdict::Denied(r) if c[0] == "MULTI" => Verdict::Denied(r.clone()),
                _ => Verdict::Unknown(format!("MULTI refused: {}", reason(&e))),
            })
            .collect());
    }
    let mut out = Vec::new();
    for c in cmds {
        if c[0] == "MULTI" || c[0] == "EXEC" {
            out.push(Verdict::Allowed);
            continue;
        }
        let r: redis::RedisResult<redis::Value> =
            redis::cmd(&c[0]).arg(&c[1..]).query_async(conn).await;
        out.push(match r {
            Ok(_) => Verdict::Allowed,
            Err(e) if e.kind() == redis::ErrorKind::Io => return Err(e),
            Err(e) if is_noperm(&e) => Verdict::Denied(reason(&e)),
            Err(e) => Verdict::Unknown(reason(&e)),
        });
    }
    // A user may lack DISCARD: the connection is dropped right after, which discards too.
    match redis::cmd("DISCARD").query_async::<()>(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Io => Err(e),
        _ => Ok(out),
    }
}

/// The verdicts of `cmds` for the user of `ep` on one server, and whether the `MULTI` probe
/// gave them (else `ACL DRYRUN`).
async fn verdicts(
    role: &str,
    ep: &crate::config::Endpoint,
    seven: bool,
    cmds: &[Vec<String>],
) -> Result<(Vec<Verdict>, bool), NetError> {
    let user = ep.username.clone().unwrap_or_else(|| "default".into());
    let mut conn = client::connect(role, ep).await?;
    let io = |e: redis::RedisError| NetError::client(role, ep, client::describe(&e));
    let mut out: Vec<Option<Verdict>> = Vec::new();
    if seven {
        for c in cmds {
            out.push(dryrun(&mut conn, &user, c).await.map_err(io)?);
            if out.last().is_some_and(Option::is_none) {
                break;
            }
        }
    }
    if out.len() == cmds.len() && out.iter().all(Option::is_some) {
        return Ok((out.into_iter().flatten().collect(), false));
    }
    // 6.x, or ACL DRYRUN not allowed: the MULTI probe (PSYNC cannot be queued on 7.0+).
    let probed: Vec<Vec<String>> = cmds
        .iter()
        .filter(|c| !(seven && (c[0] == "PSYNC" || c[0] == "SYNC")))
        .cloned()
        .collect();
    let mut got = multi_probe(&mut conn, &probed)
        .await
        .map_err(io)?
        .into_iter();
    let v = cmds
        .iter()
        .map(|c| {
            if seven && (c[0] == "PSYNC" || c[0] == "SYNC") {
                Verdict::Unknown(
                    "cannot be checked without ACL DRYRUN (the user may not run it)".into(),
                )
            } else {
                got.next()
                    .unwrap_or_else(|| Verdict::Unknown("no verdict".into()))
            }
        })
        .collect();
    Ok((v, true))
}

/// What exactly-once sends the target besides [`target_commands`]: the progress keys (`GET`,
/// `SET`, in db 0) and the fencing of a killed run's connections (`CLIENT SETNAME/ID/LIST/KILL`).
fn exact_commands(cfg: &Config) -> Vec<Vec<String>> {
    let k = format!("{}{}:probe", cfg.sync.progress_prefix, cfg.sync.instance);
    let k = k.as_str();
    vec![
        words(&["GET", k]),
        words(&["SET", k, "v"]),
        words(&["SELECT", "0"]),
        words(&["CLIENT", "SETNAME", "n"]),
        words(&["CLIENT", "ID"]),
        words(&["CLIENT", "LIST"]),
        words(&["CLIENT", "KILL", "ID", "1"]),
    ]
}

/// The exactly-once commands the target user of `ep` may not run (empty: all allowed), as
/// `ACL DRYRUN` or a discarded `MULTI` judge them. Err: the probe could not tell (connection).
pub async fn exact_denied(
    cfg: &Config,
    ep: &crate::config::Endpoint,
    seven: bool,
) -> Result<Vec<String>, NetError> {
    let cmds = exact_commands(cfg);
    let (v, _) = verdicts("target", ep, seven, &cmds).await?;
    Ok(cmds
        .iter()
        .zip(v)
        .filter(|(_, v)| !matches!(v, Verdict::Allowed))
        .map(|(c, _)| c[..c.len().min(2)].join(" "))
        .collect())
}

/// One check per side: `source ACL` and `target ACL`.
pub async fn checks(cfg: &Config, source: &Topology, target: &Topology) -> Vec<Check> {
    vec![
        side(
            "source ACL",
            "source",
            &cfg.source,
            source,
            &source_commands(cfg, source.is_cluster()),
        )
        .await,
        side(
            "target ACL",
            "target",
            &cfg.target,
            target,
            &target_commands(cfg, target.is_cluster()),
        )
        .await,
    ]
}

async fn side(
    name: &'static str,
    role: &str,
    configured: &crate::config::Endpoint,
    topo: &Topology,
    cmds: &[Vec<String>],
) -> Check {
    let user = configured
        .username
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut denied: Vec<String> = Vec::new();
    let mut first_reason = String::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut methods = std::collections::BTreeSet::new();
    for m in topo.masters() {
        let seven = m.info.at_least(7, 0);
        match verdicts(role, &m.endpoint, seven, cmds).await {
            Err(e) => unknown.push(e.to_string()), // names the server
            Ok((v, multi)) => {
                methods.insert(if multi {
                    "queued in a discarded MULTI"
                } else {
                    "ACL DRYRUN"
                });
                for (c, verdict) in cmds.iter().zip(v) {
                    let shown = if c[0] == "CLUSTER" || c[0] == "INFO" || c[0] == "XGROUP" {
                        format!("{} {}", c[0], c[1])
                    } else {
                        c[0].clone()
                    };
                    match verdict {
                        Verdict::Allowed => {}
                        Verdict::Denied(r) => {
                            if !denied.contains(&shown) {
                                denied.push(shown);
                            }
                            if first_reason.is_empty() {
                                first_reason = format!("{role} master {}: {r}", m.endpoint);
                            }
                        }
                        Verdict::Unknown(r) => {
                            let u = format!("{shown} on {} ({r})", m.endpoint);
                            if !unknown.contains(&u) {
                                unknown.push(u);
                            }
                        }
                    }
                }
            }
        }
    }
    if !denied.is_empty() {
        return Check {
            name,
            ok: false,
            warning: false,
            detail: format!(
                "{role} user {user:?} may not run {} ({first_reason}); grant it (e.g. ACL SETUSER {user} +{})",
                denied.join(", "),
                denied[0].to_ascii_lowercase().replace(' ', "|")
            ),
        };
    }
    if !unknown.is_empty() {
        return Check {
            name,
            ok: true,
            warning: true,
            detail: format!(
                "{role} user {user:?}: could not verify {}",
                unknown.join("; ")
            ),
        };
    }
    Check {
        name,
        ok: true,
        warning: false,
        detail: format!(
            "{role} user {user:?} may run the {} commands shardsync sends ({}) on every master",
            cmds.len(),
            methods.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_key_passes_the_filters() {
        let mut cfg = Config::resolve(
            crate::config::FileConfig::default(),
            crate::config::Overrides {
                source: Some("h:1".into()),
                target: Some("h:2".into()),
                filter: crate::router::filter::FilterSpec {
                    include_prefixes: vec!["app:".into()],
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(probe_key(&cfg), "app:shardsync-acl-probe");
        assert!(cfg.sync.filter.keep_key(0, probe_key(&cfg).as_bytes()));
        cfg.sync.filter = Default::default();
        assert_eq!(probe_key(&cfg), "shardsync-acl-probe");
        let t = target_commands(&cfg, false);
        assert!(t.iter().any(|c| c[0] == "RESTORE") && t.iter().any(|c| c[0] == "SELECT"));
    }
}
