//! Prechecks that must pass before any replication starts: both sides reachable with the given
//! passwords, versions known and compatible, target empty when the policy says so, enough memory
//! on the target, a writable state directory. Nothing is written anywhere while checking.

use crate::config::{Config, TargetHasData};
use crate::net::topology::{self, Node, Topology};
use crate::net::{NetError, client};

/// One line of the precheck table.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// A warning passes but is shown.
    pub warning: bool,
    pub detail: String,
}

/// What the precheck learned, for the run that follows.
#[derive(Clone, Debug)]
pub struct Prechecked {
    pub source: Topology,
    pub target: Topology,
    pub checks: Vec<Check>,
}

impl Prechecked {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The table for people: one line per check.
    pub fn table(&self) -> String {
        render(&self.checks)
    }

    /// The first failure, for error messages.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok)
    }
}

pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let mark = match (c.ok, c.warning) {
            (false, _) => "FAIL",
            (true, true) => "WARN",
            (true, false) => "ok",
        };
        s.push_str(&format!("{mark:<5} {:<24} {}\n", c.name, c.detail));
    }
    s
}

/// The checks as JSON (`shardsync check --format json`): schema `shardsync.check/1`, `result`
/// `passed`/`failed`, and each check's `name`, `status` (`ok`, `warn`, `fail`) and `detail`.
pub fn render_json(checks: &[Check]) -> String {
    let passed = checks.iter().all(|c| c.ok);
    let list: Vec<serde_json::Value> = checks
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "status": match (c.ok, c.warning) {
                    (false, _) => "fail",
                    (true, true) => "warn",
                    (true, false) => "ok",
                },
                "detail": c.detail,
            })
        })
        .collect();
    serde_json::json!({
        "schema": "shardsync.check/1",
        "result": if passed { "passed" } else { "failed" },
        "checks": list,
    })
    .to_string()
}

fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok: true,
        warning: false,
        detail: detail.into(),
    }
}
fn fail(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok: false,
        warning: false,
        detail: detail.into(),
    }
}
fn warn(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok: true,
        warning: true,
        detail: detail.into(),
    }
}

/// Runs every check. Returns `Err(checks)` when a side cannot even be discovered.
pub async fn run(cfg: &Config) -> Result<Prechecked, Vec<Check>> {
    let mut checks = Vec::new();
    checks.extend(crate::precheck_tls::check("source", &cfg.source).await);
    checks.extend(crate::precheck_tls::check("target", &cfg.target).await);
    let src = topology::discover("source", &cfg.source).await;
    let dst = topology::discover("target", &cfg.target).await;
    let (source, target) = match (src, dst) {
        (Ok(s), Ok(d)) => (s, d),
        (s, d) => {
            checks.push(match &s {
                Ok(t) => pass("source reachable", describe(t)),
                Err(e) => fail("source reachable", e.to_string()),
            });
            checks.push(match &d {
                Ok(t) => pass("target reachable", describe(t)),
                Err(e) => fail("target reachable", e.to_string()),
            });
            return Err(checks);
        }
    };
    checks.push(pass("source reachable", describe(&source)));
    checks.push(pass("target reachable", describe(&target)));

    checks.extend(crate::precheck_acl::checks(cfg, &source, &target).await);
    checks.push(filters_check(cfg, &source).await);
    checks.push(crate::precheck_functions::check(&source, &target).await);
    checks.extend(crate::precheck_features::check(&source, &target));

    let (si, ti) = (source.info(), target.info());
    let restore = ti.accepts_dump(si.flavor, si.rdb_version());
    checks.push(pass(
        "version compatibility",
        format!(
            "source {:?} {}.{}.{} (RDB {}), target {:?} {}.{}.{} (RDB {}): keys go by {}",
            si.flavor,
            si.version.0,
            si.version.1,
            si.version.2,
            si.rdb_version(),
            ti.flavor,
            ti.version.0,
            ti.version.1,
            ti.version.2,
            ti.rdb_version(),
            if restore {
                "RESTORE of the source's serialized values"
            } else {
                "plain commands (cross-version)"
            }
        ),
    ));

    if target.is_cluster() {
        let unmapped: Vec<u32> = source
            .masters()
            .iter()
            .flat_map(|m| client::keyspace_dbs(&m.raw_info))
            .filter(|&db| cfg.sync.filter.db_selected(db))
            .filter(|&db| cfg.sync.target_db(db, true).is_none())
            .collect();
        checks.push(if unmapped.is_empty() {
            pass("database mapping", "every source database with keys maps to db 0 of the target cluster")
        } else {
            fail(
                "database mapping",
                format!(
                    "the source has keys in database(s) {unmapped:?} but a cluster target has only db 0; map them with sync.db_map (--db-map 3=0)"
                ),
            )
        });
    }

    if !target.is_cluster() {
        checks.push(databases_check(cfg, &source, &target).await);
    }

    let target_keys: u64 = target
        .masters()
        .iter()
        .map(|m| client::keyspace_keys(&m.raw_info))
        .sum();
    // Progress keys (exactly-once) are shardsync's own bookkeeping, not data.
    let target_keys = target_keys.saturating_sub(
        crate::sink::exact::count_on(&target, &cfg.sync.progress_prefix, target_keys).await,
    );
    checks.push(match (cfg.sync.target_has_data, target_keys) {
        (_, 0) => pass("target is empty", "no keys"),
        (TargetHasData::Block, n) => fail(
            "target is empty",
            format!("the target holds {n} keys and target_has_data = block; empty it or choose overwrite"),
        ),
        (TargetHasData::Overwrite, n) => warn(
            "target is empty",
            format!("the target holds {n} keys; keys the source also has will be overwritten"),
        ),
    });

    let field = |n: &Node, f: &str| {
        client::info_field(&n.raw_info, f)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let used: u64 = source
        .masters()
        .iter()
        .map(|m| field(m, "used_memory"))
        .sum();
    let maxmems: Vec<u64> = target
        .masters()
        .iter()
        .map(|m| field(m, "maxmemory"))
        .collect();
    checks.push(if maxmems.contains(&0) {
        pass(
            "target memory",
            format!(
                "target has no maxmemory limit; source uses {} MB",
                used >> 20
            ),
        )
    } else {
        let maxmem: u64 = maxmems.iter().sum();
        if maxmem <= used {
            fail(
                "target memory",
                format!(
                    "target maxmemory {} MB is not more than the source's used memory {} MB",
                    maxmem >> 20,
                    used >> 20
                ),
            )
        } else {
            pass(
                "target memory",
                format!(
                    "target maxmemory {} MB > source used {} MB",
                    maxmem >> 20,
                    used >> 20
                ),
            )
        }
    });

    let backlog: u64 = source
        .masters()
        .iter()
        .map(|m| field(m, "repl_backlog_size"))
        .min()
        .unwrap_or(0);
    checks.push(if backlog < (64 << 20) {
        warn(
            "source backlog",
            format!(
                "repl-backlog-size is {} MB; raise it (e.g. 256mb) so a dropped link resumes without a full sync",
                backlog >> 20
            ),
        )
    } else {
        pass("source backlog", format!("repl-backlog-size {} MB", backlog >> 20))
    });

    checks.push(
        match std::fs::create_dir_all(&cfg.state_dir).and_then(|_| {
            let probe = cfg.state_dir.join(".write-test");
            std::fs::write(&probe, b"x")?;
            std::fs::remove_file(probe)
        }) {
            Ok(()) => pass("state directory", cfg.state_dir.display().to_string()),
            Err(e) => fail(
                "state directory",
                format!("{} is not writable: {e}", cfg.state_dir.display()),
            ),
        },
    );

    Ok(Prechecked {
        source,
        target,
        checks,
    })
}

/// `CONFIG GET databases` of `ep`; `None` when it cannot be read (e.g. `CONFIG` renamed).
pub async fn databases_setting(role: &str, ep: &crate::config::Endpoint) -> Option<u32> {
    let mut conn = client::connect(role, ep).await.ok()?;
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query_async(&mut conn)
        .await
        .ok()?;
    v.get(1)?.parse().ok()
}

/// True when `ep` accepts `SELECT db` (asked on a connection of its own: nothing is written).
async fn select_ok(ep: &crate::config::Endpoint, db: u32) -> Result<bool, NetError> {
    let mut conn = client::connect("target", ep).await?;
    let r: redis::RedisResult<redis::Value> =
        redis::cmd("SELECT").arg(db).query_async(&mut conn).await;
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == redis::ErrorKind::Io => Err(NetError::client(
            "target",
            ep,
            format!("SELECT {db}: {}", client::describe(&e)),
        )),
        Err(_) => Ok(false),
    }
}

/// The target databases among `dbs` that the standalone target `ep` does not have, with the
/// target's `databases` when known. Uses `CONFIG GET databases`, else a `SELECT` probe.
pub async fn missing_target_dbs(
    ep: &crate::config::Endpoint,
    dbs: &[u32],
) -> Result<(Vec<u32>, Option<u32>), NetError> {
    let have = databases_setting("target", ep).await;
    let mut missing = Vec::new();
    for &db in dbs {
        let ok = match have {
            Some(n) => db < n,
            None => select_ok(ep, db).await?,
        };
        if !ok && !missing.contains(&db) {
            missing.push(db);
        }
    }
    missing.sort_unstable();
    Ok((missing, have))
}

/// The source's used databases (INFO keyspace) after `sync.db_map` must exist on a standalone
/// target; a source whose `databases` exceeds the target's is a warning (writes to a database
/// the target lacks would be refused at run time).
async fn databases_check(cfg: &Config, source: &Topology, target: &Topology) -> Check {
    const NAME: &str = "databases";
    let used: Vec<u32> = source
        .masters()
        .iter()
        .flat_map(|m| client::keyspace_dbs(&m.raw_info))
        .filter(|&d| cfg.sync.filter.db_selected(d))
        .collect();
    let mapped: Vec<u32> = used
        .iter()
        .filter_map(|&d| cfg.sync.target_db(d, false))
        .collect();
    let Some(tep) = target.masters().first().map(|m| m.endpoint.clone()) else {
        return warn(NAME, "the target has no master to ask");
    };
    let (missing, target_dbs) = match missing_target_dbs(&tep, &mapped).await {
        Ok(r) => r,
        Err(e) => return warn(NAME, format!("could not ask the target: {e}")),
    };
    let shown = |n: Option<u32>| n.map_or("fewer".to_string(), |n| n.to_string());
    if !missing.is_empty() {
        let src: Vec<u32> = used
            .iter()
            .copied()
            .filter(|&d| {
                cfg.sync
                    .target_db(d, false)
                    .is_some_and(|t| missing.contains(&t))
            })
            .collect();
        let need = missing.iter().max().map_or(0, |m| m + 1);
        return fail(
            NAME,
            format!(
                "the source has keys in database(s) {src:?}, written to target database(s) {missing:?}, but the target has {} databases: \
                 set `databases {need}` (or more) in the target's configuration and restart it, or map them to existing databases with \
                 sync.db_map (e.g. --db-map {}=0)",
                shown(target_dbs),
                src.first().copied().unwrap_or(0)
            ),
        );
    }
    let mut source_dbs = None;
    for m in source.masters() {
        if let Some(n) = databases_setting("source", &m.endpoint).await {
            source_dbs = Some(source_dbs.map_or(n, |s: u32| s.max(n)));
        }
    }
    match (source_dbs, target_dbs) {
        (Some(s), Some(t)) if s > t => {
            let unmapped: Vec<u32> = (t..s)
                .filter(|&d| cfg.sync.target_db(d, false).is_none_or(|x| x >= t))
                .take(4)
                .collect();
            if unmapped.is_empty() {
                pass(
                    NAME,
                    format!("source databases {s}, target {t}; the extra ones are mapped"),
                )
            } else {
                warn(
                    NAME,
                    format!(
                        "the source has {s} databases, the target {t}: the used ones fit, but writes to source database {unmapped:?}… \
                         would be refused by the target (raise `databases` on the target or set sync.db_map)"
                    ),
                )
            }
        }
        _ => pass(
            NAME,
            format!(
                "every used source database {used:?} exists on the target ({} databases)",
                shown(target_dbs)
            ),
        ),
    }
}

/// The database selection and key filters: what will be synced; a selected database the
/// source does not have (`CONFIG GET databases`, when allowed) is a failure, source keys in
/// unselected databases are shown.
async fn filters_check(cfg: &Config, source: &Topology) -> Check {
    const NAME: &str = "selection and filters";
    let f = &cfg.sync.filter;
    let used: std::collections::BTreeSet<u32> = source
        .masters()
        .iter()
        .flat_map(|m| client::keyspace_dbs(&m.raw_info))
        .collect();
    let skipped: Vec<u32> = used
        .iter()
        .copied()
        .filter(|&d| !f.db_selected(d))
        .collect();
    let mut detail = f.describe();
    if !skipped.is_empty() {
        detail.push_str(&format!(
            "; source databases {skipped:?} hold keys and are not synced"
        ));
    }
    let Some(dbs) = f.dbs() else {
        return pass(NAME, detail);
    };
    if source.is_cluster() && dbs.iter().any(|&d| d != 0) {
        return fail(
            NAME,
            format!("{detail}: a cluster source has only db 0 (sync.dbs)"),
        );
    }
    for m in source.masters() {
        if let Some(n) = databases_setting("source", &m.endpoint).await
            && let Some(&d) = dbs.iter().find(|&&d| d >= n)
        {
            return fail(
                NAME,
                format!(
                    "{detail}: sync.dbs selects database {d} but source {} has {n} databases",
                    m.endpoint
                ),
            );
        }
    }
    pass(NAME, detail)
}

fn describe(t: &Topology) -> String {
    match t {
        Topology::Standalone(n) => format!("standalone {}", n.endpoint),
        Topology::Cluster { masters, .. } => format!(
            "cluster of {} masters ({}), password accepted by each",
            masters.len(),
            masters
                .iter()
                .map(|m| m.endpoint.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
