//! One way to start a shardsync run in a test ([`SyncRun`]): `shardsync run` with its state
//! directory in a temp dir, `/status` on a free loopback port (or none: [`SyncRun::without_status`])
//! and, when given, a config file written there; [`SyncRun::start`] also waits for every shard's
//! full sync. Then [`wait_caught_up`] waits for a target to hold everything written before a
//! moment (the heartbeat written after it; [`wait_marker`] without heartbeats),
//! [`assert_clean_log`] checks the log reported no error, [`sigkill`] crashes the run and [`stop`]
//! ends it, which must exit 0. Commands that run to their exit (`check`, a run that must fail)
//! go through [`run_to_exit`] / [`pair_to_exit`].

use std::path::PathBuf;
use std::time::Duration;

use super::server::RedisServer;
use super::shardsync::Shardsync;
use super::status::{status_addr_arg, synced_shards};
use super::util::{now_ms, wait_until};

/// shardsync's default heartbeat key (always copied; tests leave it out of comparisons).
pub const HEARTBEAT: &str = "shardsync:heartbeat";

/// A run's temp directory: its config file (if any), its state directory and its `/status`
/// address. Keep it alive as long as the process.
pub struct SyncRun {
    dir: tempfile::TempDir,
    /// `shardsync.toml` in the temp dir, when a config was given.
    pub config: Option<PathBuf>,
    pub state: PathBuf,
    /// The `--metrics-addr` (a fixed free port: `/status` can be waited on).
    pub addr: String,
}

impl SyncRun {
    /// A temp dir holding `config` as `shardsync.toml` (when given) and a state directory.
    pub fn new(config: Option<&str>) -> SyncRun {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config.map(|text| {
            let path = dir.path().join("shardsync.toml");
            std::fs::write(&path, text).expect("write config");
            path
        });
        SyncRun {
            config,
            state: dir.path().join("state"),
            addr: status_addr_arg(),
            dir,
        }
    }

    /// [`SyncRun::new`] without `/status` (`--metrics-addr off`), for tests that SIGKILL and
    /// restart shardsync again and again: no fixed port another test could take between two
    /// runs. [`SyncRun::start`] needs `/status`; wait on the log or the data instead.
    pub fn without_status(config: Option<&str>) -> SyncRun {
        SyncRun {
            addr: "off".to_string(),
            ..SyncRun::new(config)
        }
    }

    /// The temp directory (for other files of the test).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `run --state-dir … --metrics-addr … [--config …]` followed by `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = ["run", "--state-dir", utf8(&self.state), "--metrics-addr"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(self.addr.clone());
        if let Some(c) = &self.config {
            a.extend(["--config".to_string(), utf8(c).to_string()]);
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Starts `shardsync` with [`SyncRun::args`].
    pub fn spawn(&self, extra: &[&str]) -> Shardsync {
        let args = self.args(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Shardsync::spawn(&refs)
    }

    /// [`SyncRun::spawn`] with `--source` and `--target`.
    pub fn spawn_pair(&self, source: &str, target: &str, extra: &[&str]) -> Shardsync {
        let mut a = vec!["--source", source, "--target", target];
        a.extend_from_slice(extra);
        self.spawn(&a)
    }

    /// [`SyncRun::start`] of one shard with `--source` and `--target`.
    pub fn start_pair(&self, source: &str, target: &str, extra: &[&str]) -> Shardsync {
        self.start(
            &[&["--source", source, "--target", target][..], extra].concat(),
            1,
        )
    }

    /// Starts `shardsync` and waits until `shards` shards have their full sync applied.
    pub fn start(&self, extra: &[&str], shards: usize) -> Shardsync {
        let mut ss = self.spawn(extra);
        ss.wait_status(Duration::from_secs(120), "the full sync applied", |st| {
            synced_shards(st, shards)
        });
        ss
    }
}

fn utf8(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// True when `conn` holds a heartbeat (ms since the epoch) of at least `ms`.
pub fn heartbeat_at_least(conn: &mut redis::Connection, ms: u64) -> bool {
    let v: Option<String> = redis::cmd("GET").arg(HEARTBEAT).query(conn).unwrap_or(None);
    v.and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|v| v >= ms)
}

/// Waits (60 s) until `target` holds the heartbeat written after `after` (ms): it then holds
/// everything the source had before. Panics naming `what` with the log tail.
pub fn wait_caught_up(target: &mut redis::Connection, after: u64, ss: &Shardsync, what: &str) {
    wait_caught_up_within(target, after, Duration::from_secs(60), ss, what);
}

/// [`wait_caught_up`] within `timeout`.
pub fn wait_caught_up_within(
    target: &mut redis::Connection,
    after: u64,
    timeout: Duration,
    ss: &Shardsync,
    what: &str,
) {
    assert!(
        wait_until(timeout, || heartbeat_at_least(target, after)),
        "{what} did not catch up within {timeout:?} (no heartbeat of {after} or later); log:\n{}",
        ss.log_tail(60)
    );
}

/// Waits (`timeout`) until the standalone `dst` holds the heartbeat written after now, so
/// everything written to the source before; connects once `dst` accepts connections (it may
/// be restarting).
pub fn wait_server_caught_up(ss: &Shardsync, dst: &RedisServer, timeout: Duration) {
    let after = now_ms();
    let mut dc = loop {
        if let Ok(c) = redis::Client::open(dst.url()).and_then(|c| c.get_connection()) {
            break c;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    wait_caught_up_within(&mut dc, after, timeout, ss, "the target");
}

/// Sets `marker` to `value` on `src` and waits (`timeout`) until `dst` holds it: everything
/// written to the source before is then applied (for runs without heartbeats).
pub fn wait_marker(
    ss: &Shardsync,
    src: &mut redis::Connection,
    dst: &mut redis::Connection,
    value: &str,
    timeout: Duration,
) {
    let _: () = redis::cmd("SET")
        .arg("marker")
        .arg(value)
        .query(src)
        .expect("SET marker");
    assert!(
        wait_until(timeout, || {
            redis::cmd("GET")
                .arg("marker")
                .query::<Option<String>>(dst)
                .ok()
                .flatten()
                .is_some_and(|m| m == value)
        }),
        "the target never got marker {value} within {timeout:?}; log:\n{}",
        ss.log_tail(40)
    );
}

/// `shardsync ARGS` run to its exit (60 s at most); panics if it panicked. Returns the exit code
/// (-1 when a signal ended it) and its output.
pub fn run_to_exit(args: &[&str]) -> (i32, String) {
    let (status, log) = Shardsync::run_to_exit(args, Duration::from_secs(60));
    assert_no_panic_in(&log);
    (status.code().unwrap_or(-1), log)
}

/// `shardsync COMMAND --source SOURCE --target TARGET --metrics-addr off` and `extra`, run to
/// its exit ([`run_to_exit`]).
pub fn pair_to_exit(command: &str, source: &str, target: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        command,
        "--source",
        source,
        "--target",
        target,
        "--metrics-addr",
        "off",
    ];
    args.extend_from_slice(extra);
    run_to_exit(&args)
}

/// Stops `ss` with SIGTERM; panics unless it exits 0 without a panic in its log.
pub fn stop(ss: &mut Shardsync) {
    let status = ss.terminate();
    assert!(
        status.success(),
        "shardsync did not exit 0 on SIGTERM: {status:?}\n{}",
        ss.log_tail(40)
    );
    assert_no_panic(ss);
}

/// SIGKILLs `ss`; panics if it had exited by itself before.
pub fn sigkill(ss: &mut Shardsync) {
    let status = ss.kill();
    assert!(
        Shardsync::killed_by(status, nix::sys::signal::Signal::SIGKILL),
        "shardsync exited by itself ({status:?}):\n{}",
        ss.log_tail(40)
    );
}

/// Panics when the log of `ss` shows a panic.
pub fn assert_no_panic(ss: &Shardsync) {
    assert_no_panic_in(&ss.log());
}

fn assert_no_panic_in(log: &str) {
    assert!(!log.contains("panicked"), "shardsync panicked:\n{log}");
}

/// Waits until `dst` holds everything written to `src` so far ([`wait_caught_up`]), then
/// compares databases `dbs` key by key (the heartbeat aside) and checks the log
/// ([`assert_clean_log`]).
pub fn assert_synced(
    (src, dst): (&mut redis::Connection, &mut redis::Connection),
    dbs: &[u32],
    ss: &Shardsync,
    opts: &super::compare::CompareOptions,
) {
    wait_caught_up(dst, super::util::now_ms(), ss, "the target");
    let diffs = super::compare::compare_servers_with(src, dst, dbs, &[HEARTBEAT.as_bytes()], opts);
    super::compare::assert_no_differences(&diffs);
    assert_clean_log(ss);
}

/// After a clean stop: the heartbeat key is gone from `conn` (`side`: "source" or "target").
pub fn assert_heartbeat_gone(conn: &mut redis::Connection, side: &str) {
    let exists: i64 = redis::cmd("EXISTS")
        .arg(HEARTBEAT)
        .query(conn)
        .expect("EXISTS");
    assert_eq!(exists, 0, "heartbeat key left on the {side} after the stop");
}

/// Panics when the log reports a refused or unconvertible write, or a panic.
pub fn assert_clean_log(ss: &Shardsync) {
    let log = ss.log();
    assert!(
        !log.contains("target rejected a write")
            && !log.contains("could not be written")
            && !log.contains("could not be rewritten"),
        "shardsync reported errors:\n{log}"
    );
    assert_no_panic_in(&log);
}
