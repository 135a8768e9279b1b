//! Prechecks that must pass before any replication starts: both sides reachable with the given
//! passwords, versions known and compatible, target empty when the policy says so, enough memory
//! on the target, a writable state directory. Nothing is written anywhere while checking.

use crate::client;
use crate::config::{Config, TargetHasData};
use crate::server_info::ServerInfo;

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
    pub source: ServerInfo,
    pub target: ServerInfo,
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

/// Runs every check. Returns `Err(checks)` when a server cannot even be identified.
pub async fn run(cfg: &Config) -> Result<Prechecked, Vec<Check>> {
    let mut checks = Vec::new();
    let src = probe("source", "source reachable", cfg, true).await;
    let dst = probe("target", "target reachable", cfg, false).await;
    let (src, dst) = match (src, dst) {
        (Ok(s), Ok(d)) => {
            checks.push(s.0);
            checks.push(d.0);
            (s.1, d.1)
        }
        (s, d) => {
            for r in [s, d] {
                checks.push(match r {
                    Ok(x) => x.0,
                    Err(c) => c,
                });
            }
            return Err(checks);
        }
    };
    let (source, source_info) = src;
    let (target, target_info) = dst;

    if source.cluster_enabled {
        checks.push(fail(
            "source topology",
            "the source is a Redis Cluster node; cluster sources are not supported yet",
        ));
    } else {
        checks.push(pass("source topology", "standalone"));
    }
    if target.cluster_enabled {
        checks.push(fail(
            "target topology",
            "the target is a Redis Cluster node; cluster targets are not supported yet",
        ));
    } else {
        checks.push(pass("target topology", "standalone"));
    }

    let restore = target.accepts_dump(source.flavor, source.rdb_version());
    checks.push(pass(
        "version compatibility",
        format!(
            "source {:?} {}.{}.{} (RDB {}), target {:?} {}.{}.{} (RDB {}): keys go by {}",
            source.flavor,
            source.version.0,
            source.version.1,
            source.version.2,
            source.rdb_version(),
            target.flavor,
            target.version.0,
            target.version.1,
            target.version.2,
            target.rdb_version(),
            if restore {
                "RESTORE of the source's serialized values"
            } else {
                "plain commands (cross-version)"
            }
        ),
    ));

    let target_keys = client::keyspace_keys(&target_info);
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

    let used: u64 = client::info_field(&source_info, "used_memory")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let maxmem: u64 = client::info_field(&target_info, "maxmemory")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    checks.push(if maxmem == 0 {
        pass(
            "target memory",
            format!(
                "target has no maxmemory limit; source uses {} MB",
                used >> 20
            ),
        )
    } else if maxmem <= used {
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
    });

    let backlog: u64 = client::info_field(&source_info, "repl_backlog_size")
        .and_then(|v| v.parse().ok())
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

async fn probe(
    role: &'static str,
    name: &'static str,
    cfg: &Config,
    is_source: bool,
) -> Result<(Check, (ServerInfo, String)), Check> {
    let ep = if is_source { &cfg.source } else { &cfg.target };
    let mut conn = client::connect(role, ep).await.map_err(|e| fail(name, e))?;
    let (si, info) = client::server_info(role, ep, &mut conn)
        .await
        .map_err(|e| fail(name, e))?;
    Ok((pass(name, format!("{ep}")), (si, info)))
}
