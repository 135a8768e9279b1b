//! Observability end to end: `/metrics` values move with the data during a real sync, `/status`
//! and `shardsync status` report it, passwords appear nowhere; a real Prometheus scrapes a
//! running shardsync and every PromQL expression of every Grafana dashboard returns data; the
//! deployment files (Prometheus config, docker-compose, dashboards, provisioning) are valid.

use crate::common;
use crate::common::compare::target_dbsize;
use crate::common::util::http_get;
use crate::common::util::sample;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::status::{full_sync_done, wait_status};
use common::*;

const SOURCE_PW: &str = "src-Pw-7f3a9c";
const TARGET_PW: &str = "dst-Pw-91be02";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Value of the first sample of `name` whose labels include every `k="v"` of `labels`.
/// The address shardsync logged for its listener (started with `--metrics-addr 127.0.0.1:0`).
fn metrics_addr(ss: &mut Shardsync) -> String {
    ss.expect_log(
        "serving /metrics and /status on http://",
        Duration::from_secs(20),
    );
    let log = ss.log();
    let at = log
        .find("serving /metrics and /status on http://")
        .expect("line present");
    let rest = &log[at + "serving /metrics and /status on http://".len()..];
    rest.split(|c: char| c.is_whitespace() || c == '\u{1b}')
        .next()
        .expect("address")
        .to_string()
}

fn scrape(addr: &str) -> String {
    let (code, body) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "/metrics answered {code}: {body}");
    body
}

fn status(addr: &str) -> serde_json::Value {
    let (code, body) = http_get(addr, "/status").expect("GET /status");
    assert_eq!(code, 200, "/status answered {code}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

fn set_keys(conn: &mut redis::Connection, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("SET")
                .arg(format!("{prefix}:{i}"))
                .arg(format!("value-{i}"))
                .ignore();
        }
        p.query::<()>(conn).expect("SET pipeline");
    }
}

fn master_offset(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(conn)
        .expect("INFO");
    common::util::info_field(&info, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .expect("master_repl_offset")
}

fn dbsize(conn: &mut redis::Connection) -> u64 {
    redis::cmd("DBSIZE").query(conn).expect("DBSIZE")
}

/// Every metric of the catalog (README, dashboards and this test agree on these names).
const SERIES_AT_START: &[&str] = &[
    "shardsync_state",
    "shardsync_link_state",
    "shardsync_rdb_bytes_total",
    "shardsync_rdb_received_bytes",
    "shardsync_rdb_size_bytes",
    "shardsync_rdb_keys_total",
    "shardsync_full_sync_progress_ratio",
    "shardsync_source_offset_bytes",
    "shardsync_applied_offset_bytes",
    "shardsync_checkpoint_offset_bytes",
    "shardsync_lag_bytes",
    "shardsync_lag_seconds",
    "shardsync_convert_errors_total",
    "shardsync_rejected_writes_total",
    "shardsync_link_restarts_total",
    "shardsync_full_resyncs_total",
    "shardsync_target_writes_total",
    "shardsync_target_errors_total",
    "shardsync_write_batch_seconds_bucket",
    "shardsync_target_redirects_total",
    "shardsync_link_errors_total",
];

#[test]
fn metrics_and_status_follow_a_real_sync_without_leaking_passwords() {
    let src = RedisServer::start_with_password(
        ServerKind::Redis70,
        SOURCE_PW,
        &["--repl-diskless-sync", "no"],
    );
    let dst = RedisServer::start_with_password(ServerKind::Redis70, TARGET_PW, &[]);
    let mut sc = src.client();
    let mut dc = dst.client();
    const N: usize = 20_000;
    set_keys(&mut sc, "full", N);

    let state = tempfile::tempdir().expect("state dir");
    let (su, du) = (src.url(), dst.url());
    assert!(
        su.contains(SOURCE_PW) && du.contains(TARGET_PW),
        "URLs carry the passwords"
    );
    let mut ss = Shardsync::spawn(&[
        "run",
        "--source",
        &su,
        "--target",
        &du,
        "--state-dir",
        state.path().to_str().expect("utf-8"),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&mut ss);
    let shard = src.addr();
    let node = dst.addr();

    // Every series exists from the start, with the shard and node labels.
    let early = scrape(&addr);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let m = scrape(&addr);
            SERIES_AT_START.iter().all(|n| m.contains(n))
        }),
        "series missing at start; /metrics:\n{early}"
    );
    let m = scrape(&addr);
    for c in [
        "shardsync_link_restarts_total",
        "shardsync_rejected_writes_total",
    ] {
        assert_eq!(
            sample(&m, c, &[("shard", &shard)]),
            Some(0.0),
            "{c} not registered at 0:\n{m}"
        );
    }
    assert_eq!(
        sample(
            &m,
            "shardsync_target_errors_total",
            &[("node", &node), ("kind", "connection")]
        ),
        Some(0.0),
        "{m}"
    );

    // Full sync: keys loaded equals the keys of the source.
    wait_status(
        &mut ss,
        &addr,
        Duration::from_secs(60),
        "the full sync applied",
        full_sync_done,
    );
    assert!(
        wait_until(Duration::from_secs(60), || target_dbsize(&mut dc)
            >= N as u64),
        "target has {} keys, want {N}",
        target_dbsize(&mut dc)
    );
    let m = scrape(&addr);
    let keys = sample(&m, "shardsync_rdb_keys_total", &[("shard", &shard)]).expect("keys");
    // The RDB holds the N keys, plus the heartbeat key when it was written before the fork.
    assert!(
        keys == N as f64 || keys == N as f64 + 1.0,
        "rdb keys {keys}, source had {N}:\n{m}"
    );
    let rdb_bytes = sample(&m, "shardsync_rdb_bytes_total", &[("shard", &shard)]).expect("rdb");
    let rdb_size = sample(&m, "shardsync_rdb_size_bytes", &[("shard", &shard)]).expect("size");
    assert!(
        rdb_bytes > 0.0 && rdb_bytes == rdb_size,
        "rdb {rdb_bytes} of {rdb_size}"
    );
    assert_eq!(
        sample(&m, "shardsync_full_resyncs_total", &[("shard", &shard)]),
        Some(1.0)
    );

    // Incremental: the applied offset reaches the source's offset, the lag is small.
    const M: usize = 3_000;
    set_keys(&mut sc, "incr", M);
    let want = master_offset(&mut sc);
    let mut last = String::new();
    let reached = wait_until(Duration::from_secs(60), || {
        last = scrape(&addr);
        let applied = sample(
            &last,
            "shardsync_applied_offset_bytes",
            &[("shard", &shard)],
        );
        let source = sample(&last, "shardsync_source_offset_bytes", &[("shard", &shard)]);
        applied.is_some_and(|a| a >= want as f64) && source.is_some_and(|s| s >= want as f64)
    });
    assert!(reached, "applied offset never reached {want}:\n{last}");
    assert_eq!(
        target_dbsize(&mut dc),
        dbsize(&mut sc),
        "target and source key counts"
    );
    let m = scrape(&addr);
    let sets = sample(
        &m,
        "shardsync_commands_total",
        &[("shard", &shard), ("command", "SET")],
    )
    .expect("SET commands counted");
    assert!(sets >= M as f64, "SET commands {sets} < {M}");
    let writes = sample(&m, "shardsync_target_writes_total", &[("node", &node)]).expect("writes");
    // Every SET and MSET the target executed came from shardsync (the test writes only to the
    // source), and each one was acknowledged: the target's own count is the oracle. Full-sync
    // strings arrive coalesced into MSETs, so that count is below N + M.
    // Exactly-once (the default here) adds shardsync's own bookkeeping, not counted as writes:
    // one progress-key SET per transaction (the target's EXEC count) and one `full-sync` mark
    // per full sync (one here).
    let progress_sets = common::util::calls(&mut dc, "exec") + 1;
    let applied =
        common::util::calls(&mut dc, "set") + common::util::calls(&mut dc, "mset") - progress_sets;
    assert!(
        applied >= M as u64 && writes >= applied as f64,
        "target writes {writes}, the target executed {applied} SET/MSET (without {progress_sets} progress-key SETs)"
    );
    let batches = sample(&m, "shardsync_write_batch_seconds_count", &[]).expect("histogram");
    assert!(batches > 0.0, "no write batch observed");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let m = scrape(&addr);
            sample(&m, "shardsync_lag_seconds", &[("shard", &shard)])
                .is_some_and(|l| l.is_finite() && (0.0..2.0).contains(&l))
                && sample(&m, "shardsync_state", &[("state", "incremental")]) == Some(1.0)
                && sample(
                    &m,
                    "shardsync_link_state",
                    &[("shard", &shard), ("state", "incremental")],
                ) == Some(1.0)
                && sample(
                    &m,
                    "shardsync_full_sync_progress_ratio",
                    &[("shard", &shard)],
                ) == Some(1.0)
        }),
        "lag/state gauges not as expected:\n{}",
        scrape(&addr)
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            sample(
                &scrape(&addr),
                "shardsync_checkpoint_offset_bytes",
                &[("shard", &shard)],
            )
            .is_some_and(|c| c >= want as f64)
        }),
        "checkpoint offset never reached {want}"
    );

    // /status.
    let st = status(&addr);
    assert_eq!(st["state"], "incremental", "{st:#}");
    assert_eq!(st["target_nodes"][0], node.as_str(), "{st:#}");
    let s0 = &st["shards"][0];
    assert_eq!(s0["source"], shard.as_str(), "{st:#}");
    assert_eq!(s0["phase"], "incremental", "{st:#}");
    assert_eq!(s0["full_sync_done"], true, "{st:#}");
    assert_eq!(s0["rdb"]["keys"].as_f64(), Some(keys), "{st:#}");
    assert_eq!(s0["rdb"]["ratio"].as_f64(), Some(1.0), "{st:#}");
    assert!(
        s0["applied_offset"].as_u64().expect("applied") >= want,
        "{st:#}"
    );
    assert!(
        s0["lag_seconds"].as_f64().is_some_and(|l| l < 2.0),
        "{st:#}"
    );
    assert!(s0["last_error"].is_null(), "{st:#}");
    assert_eq!(s0["restarts"], 0, "{st:#}");

    // `shardsync status` prints it as a table.
    let out = Command::new(env!("CARGO_BIN_EXE_shardsync"))
        .args(["status", "--addr", &addr])
        .output()
        .expect("run shardsync status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status exit {:?}: {table}",
        out.status
    );
    assert!(table.contains("state: incremental"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&shard) && l.contains("incremental")),
        "{table}"
    );
    let json = Command::new(env!("CARGO_BIN_EXE_shardsync"))
        .args(["status", "--json", "--addr", &addr])
        .output()
        .expect("run shardsync status --json");
    let parsed: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("status --json prints JSON");
    assert_eq!(parsed["state"], "incremental");
    let down = Command::new(env!("CARGO_BIN_EXE_shardsync"))
        .args(["status", "--addr", "127.0.0.1:1"])
        .output()
        .expect("run shardsync status");
    assert_eq!(
        down.status.code(),
        Some(2),
        "unreachable status must exit 2"
    );

    // Passwords: never in /metrics, /status or the log.
    let metrics_text = scrape(&addr);
    let (_, status_text) = http_get(&addr, "/status").expect("status");
    let exit = ss.terminate();
    assert!(
        exit.success(),
        "shardsync exit {exit:?}:\n{}",
        ss.log_tail(30)
    );
    let log = ss.log();
    for pw in [SOURCE_PW, TARGET_PW] {
        assert!(!metrics_text.contains(pw), "password in /metrics");
        assert!(!status_text.contains(pw), "password in /status");
        assert!(!log.contains(pw), "password in the log:\n{log}");
        assert!(!table.contains(pw), "password in shardsync status");
    }
    assert!(!log.contains("panicked"), "{log}");
}

/// A real Prometheus process on a free port, killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(scrape_target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("prometheus dir");
        let cfg = dir.path().join("p.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
                 - job_name: shardsync\n    static_configs:\n      - targets: [\"{scrape_target}\"]\n"
            ),
        )
        .expect("write p.yml");
        let port = common::server::pick_free_port(false);
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start /usr/bin/prometheus (scripts/install-deps.sh installs it)");
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        assert!(
            wait_until(Duration::from_secs(30), || {
                http_get(&p.addr, "/-/ready").is_ok_and(|(c, _)| c == 200)
            }),
            "prometheus not ready; log:\n{}",
            p.log()
        );
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Instant query → (status, number of results, raw body).
    fn query(&self, expr: &str) -> Result<(usize, String), String> {
        let (code, body) = http_get(
            &self.addr,
            &format!("/api/v1/query?query={}", urlencode(expr)),
        )?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {code}, not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            return Err(format!("HTTP {code}: {body}"));
        }
        let n = match &v["data"]["result"] {
            serde_json::Value::Array(a) => a.len(),
            serde_json::Value::Null => 0,
            _ => 1, // scalar or string
        };
        Ok((n, body))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every dashboard JSON of `grafana/dashboards`.
fn dashboards() -> Vec<(PathBuf, serde_json::Value)> {
    let dir = repo().join("grafana/dashboards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("grafana/dashboards") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&p).expect("read dashboard");
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()));
            out.push((p, v));
        }
    }
    assert!(!out.is_empty(), "no dashboards in {}", dir.display());
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// All panels, rows' nested panels included.
fn panels(dash: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack: Vec<serde_json::Value> = dash["panels"].as_array().cloned().unwrap_or_default();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner.iter().cloned());
        }
        out.push(p);
    }
    out
}

/// (panel title, expr) of every query target of every panel.
fn panel_exprs(dash: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            if let Some(e) = t["expr"].as_str() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    e.to_string(),
                ));
            }
        }
    }
    out
}

fn substitute(expr: &str, shard: &str) -> String {
    let shard_re = shard.replace('.', "\\\\.");
    expr.replace("${shard}", &shard_re)
        .replace("$shard", &shard_re)
        .replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync", "no"]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut sc = src.client();
    set_keys(&mut sc, "k", 5_000);
    let state = tempfile::tempdir().expect("state dir");
    let mut ss = Shardsync::spawn(&[
        "run",
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--state-dir",
        state.path().to_str().expect("utf-8"),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&mut ss);
    let prom = Prometheus::start(&addr);
    wait_status(
        &mut ss,
        &addr,
        Duration::from_secs(60),
        "the full sync applied",
        full_sync_done,
    );

    // Keep data flowing while Prometheus collects enough scrapes for rate() over 1m.
    let start = Instant::now();
    let mut i = 0;
    let scraped = loop {
        set_keys(&mut sc, &format!("live{i}"), 200);
        i += 1;
        std::thread::sleep(Duration::from_millis(250));
        let enough = prom
            .query("count_over_time(up{job=\"shardsync\"}[1m]) >= 6")
            .is_ok_and(|(n, _)| n > 0);
        if enough || start.elapsed() > Duration::from_secs(60) {
            break enough;
        }
    };
    assert!(
        scraped,
        "prometheus did not scrape shardsync; log:\n{}",
        prom.log()
    );
    let up = prom.query("up{job=\"shardsync\"} == 1").expect("up");
    assert_eq!(up.0, 1, "shardsync target down: {}", up.1);

    let shard = src.addr();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (path, dash) in dashboards() {
        // Template variables' queries (label_values(metric, label)) must find values too.
        for var in dash["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let q = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .unwrap_or("");
            if let Some(inner) = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
            {
                let metric = inner
                    .rsplit_once(',')
                    .map(|(m, _)| m.trim())
                    .unwrap_or(inner);
                match prom.query(metric) {
                    Ok((0, body)) => failures.push(format!(
                        "{}: variable {q}: no data ({body})",
                        path.display()
                    )),
                    Ok(_) => checked += 1,
                    Err(e) => failures.push(format!("{}: variable {q}: {e}", path.display())),
                }
            }
        }
        for (title, expr) in panel_exprs(&dash) {
            let q = substitute(&expr, &shard);
            assert!(!q.contains('$'), "unsubstituted variable in {q}");
            match prom.query(&q) {
                Ok((0, body)) => failures.push(format!(
                    "{}: panel {title:?}: {q}: no data ({body})",
                    path.display()
                )),
                Ok(_) => checked += 1,
                Err(e) => failures.push(format!("{}: panel {title:?}: {q}: {e}", path.display())),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 10, "only {checked} queries checked");
    drop(prom);
    assert!(ss.terminate().success(), "{}", ss.log_tail(30));
}

/// Metric names a PromQL expression refers to (identifiers starting with `shardsync_`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("shardsync_") {
        let s = i + at;
        let mut e = s;
        while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
            e += 1;
        }
        out.insert(expr[s..e].to_string());
        i = e;
    }
    out
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: cannot run ({e}); scripts/install-deps.sh installs it")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{text}",
        out.status
    );
    text
}

#[test]
fn deployment_files_are_valid() {
    let root = repo();
    // Prometheus config.
    run_ok(
        Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(root.join("prometheus/prometheus.yml")),
        "promtool check config prometheus/prometheus.yml",
    );
    let prom_cfg = std::fs::read_to_string(root.join("prometheus/prometheus.yml")).expect("read");
    assert!(
        prom_cfg.contains("shardsync:9108"),
        "prometheus must scrape the compose service"
    );

    // docker-compose accepts the file; the shardsync service's command is one the CLI accepts.
    let config = run_ok(
        Command::new("docker-compose").current_dir(&root).args([
            "-f",
            "docker-compose.yml",
            "config",
        ]),
        "docker-compose config",
    );
    for svc in [
        "shardsync:",
        "prometheus:",
        "grafana:",
        "source-init:",
        "target-init:",
    ] {
        assert!(
            config.contains(svc),
            "service {svc} missing from compose:\n{config}"
        );
    }
    assert!(config.contains("healthcheck"), "healthchecks missing");
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).expect("compose");
    assert!(
        compose.contains("0.0.0.0:9108"),
        "shardsync must listen on 0.0.0.0:9108"
    );
    let help = run_ok(
        Command::new(env!("CARGO_BIN_EXE_shardsync")).args(["run", "--help"]),
        "shardsync run --help",
    );
    for flag in ["--source", "--target", "--metrics-addr", "--state-dir"] {
        assert!(
            help.contains(flag),
            "compose uses {flag}, `shardsync run` lacks it"
        );
    }
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_shardsync")).args(["status", "--help"]),
        "shardsync status --help (compose healthcheck)",
    );
    for f in [
        "Dockerfile",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/shardsync.yml",
    ] {
        assert!(root.join(f).is_file(), "{f} missing");
    }

    // Provisioning: the datasource uid the dashboards use, and the path they are loaded from.
    let ds = std::fs::read_to_string(root.join("grafana/provisioning/datasources/prometheus.yml"))
        .expect("datasource provisioning");
    assert!(
        ds.contains("apiVersion: 1") && ds.contains("type: prometheus"),
        "{ds}"
    );
    let uid = ds
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid:"))
        .map(|u| u.trim().trim_matches('"').to_string())
        .expect("datasource has a fixed uid");
    let provider =
        std::fs::read_to_string(root.join("grafana/provisioning/dashboards/shardsync.yml"))
            .expect("dashboard provisioning");
    assert!(
        provider.contains("apiVersion: 1") && provider.contains("type: file"),
        "{provider}"
    );
    let dash_path = provider
        .lines()
        .find_map(|l| l.trim().strip_prefix("path:"))
        .map(|p| p.trim().to_string())
        .expect("provider path");
    assert!(
        compose.contains(&format!("./grafana/dashboards:{dash_path}")),
        "compose must mount grafana/dashboards at the provider path {dash_path}"
    );

    // Dashboards: what Grafana's file provisioning needs, and only metrics shardsync exports.
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let exported: BTreeSet<&str> = SERIES_AT_START
        .iter()
        .copied()
        .chain([
            "shardsync_commands_total",
            "shardsync_unroutable_commands_total",
            "shardsync_write_batch_seconds_count",
            "shardsync_write_batch_seconds_sum",
        ])
        .collect();
    let mut uids = BTreeSet::new();
    for (path, d) in dashboards() {
        let name = path.display();
        let duid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no uid"));
        assert!(!duid.is_empty() && duid.len() <= 40, "{name}: uid {duid:?}");
        assert!(
            uids.insert(duid.to_string()),
            "{name}: duplicate uid {duid}"
        );
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: no title"
        );
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 30),
            "{name}: schemaVersion"
        );
        assert!(
            d.get("id").is_none_or(|v| v.is_null()),
            "{name}: provisioned dashboards carry no id"
        );
        assert!(
            !d.to_string().contains("${DS_"),
            "{name}: import-only datasource input"
        );
        let vars: Vec<String> = d["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect();
        assert!(
            vars.iter().any(|v| v == "shard"),
            "{name}: no shard variable"
        );
        let ps = panels(&d);
        assert!(ps.len() >= 6, "{name}: too few panels");
        for p in &ps {
            let title = p["title"].as_str().unwrap_or("?");
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"],
                uid.as_str(),
                "{name}: panel {title:?} datasource"
            );
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{name}: panel {title:?} has no query");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"],
                    uid.as_str(),
                    "{name}: {title:?} target datasource"
                );
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {title:?} no expr"));
                for m in metric_names(expr) {
                    assert!(
                        exported.contains(m.as_str()),
                        "{name}: {title:?} uses {m}, not exported"
                    );
                }
            }
        }
    }
    // The README's metrics table lists every exported metric.
    for m in SERIES_AT_START
        .iter()
        .map(|m| m.trim_end_matches("_bucket"))
        .chain([
            "shardsync_commands_total",
            "shardsync_unroutable_commands_total",
        ])
    {
        assert!(readme.contains(m), "README does not document {m}");
    }
}
