//! Every RDB in `../shared/rdb-corpus/` parses; each one that its server version can load is
//! loaded into a real server and replicated through shardsync to a second one, and compared.
//!
//! 1. **Probe**: for every `*.rdb` of the corpus (recursively) and each of redis-server 6.0, 7.0
//!    and valkey-server 9.1, the file is copied into a fresh temp dir as `dump.rdb` and the server
//!    is started on it without a TCP listener (`--port 0`). Redis refuses to start with no
//!    listener at all ("Configured to not listen anywhere, exiting") *before* it loads the RDB,
//!    so the probe also gives it a unix socket in its temp dir: still no TCP port, so no races.
//!    It counts as loaded when the log says "DB loaded from disk" / "Ready to accept
//!    connections", as refused when the process exits first (the log's reason is recorded:
//!    RDB version too new, module data, checksum, corrupt encoding).
//! 2. **Sync**: for each file, on the newest kind that loads it, plus redis 6.0 when that loads
//!    it too (a 6.0 source re-serialises the data as RDB 9 with ziplists, valkey as `VALKEY080`
//!    with listpacks; at most [`MAX_SYNC_RUNS`] runs overall), a source server starts on the file
//!    (`RedisServer::start_with(kind, ["--dir", tmp, "--dbfilename", "dump.rdb"])`: extra args
//!    come after the harness's own `--dir`, so they win) and an empty target of the same kind:
//!    - `shardsync load-rdb --file <original file>` into the empty target, compared with the
//!      source (which loaded the file natively): this covers the file's own encodings, also the
//!      old ones no server writes any more;
//!    - the target is flushed, `shardsync run` replicates source → target (the source sends its
//!      own re-serialisation of the data), the test waits for "RDB received", for a heartbeat
//!      written after it, and for equal per-db key counts, compares every db either side has
//!      keys in (function libraries where the kind has functions), then stops shardsync with
//!      SIGTERM: it must exit 0 with no "panicked" and no ERROR line in its log.
//! 3. **Must fail** (`corrupt_ziplist`, `corrupt_empty_keys`, `invalid_chksum_v8`, `future_v19`):
//!    `shardsync load-rdb` into an empty valkey exits non-zero with a specific message and the
//!    byte offset, and the target stays empty in every db.
//!    `corrupt_empty_keys.rdb` holds collections with no elements. Redis 7.0 and valkey *load* it
//!    (they drop the empty keys); the parser on this branch reports each as
//!    `RdbErrorKind::EmptyKey` and `load-rdb` validates the whole file first and treats any
//!    parse error as fatal, so the file is refused and nothing is written. The test pins that
//!    behaviour (it still runs the sync for the kinds that load it: the server drops the empty
//!    keys, so the RDB shardsync receives is clean).
//! 4. **Parse only**: files no server here loads (RDB 12, module values without the module) are
//!    run through `load-rdb` into an empty valkey: they must parse; the only accepted failure is
//!    the target refusing module values (named by key in the log).
//!
//! A summary table (file, RDB version, kinds that load it, keys, result) is printed at the end;
//! the test fails listing every failing file. Skipped (with a message) when the corpus or the
//! server binaries are absent.

use crate::common;
use crate::common::util::now_ms;
use crate::rdb_support::corpus_dir;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::compare::{CompareOptions, Difference, compare_servers_with};
use common::status::{full_sync_done, status, status_addr_arg};
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const HEARTBEAT: &str = "shardsync:heartbeat";

/// Server kinds probed, newest first.
const KINDS: [ServerKind; 3] = [
    ServerKind::Valkey91,
    ServerKind::Redis70,
    ServerKind::Redis60,
];

/// Upper bound on `shardsync run` runs (CI time): the newest kind of every file first, then the
/// extra redis 6.0 runs in corpus order until the budget is used. One run (two server starts,
/// `load-rdb`, a full sync, a comparison, a clean stop) takes about 0.5 s on 2 cores: 63 files
/// load natively somewhere, 35 of them on 6.0 too, so ~100 runs take under a minute.
const MAX_SYNC_RUNS: usize = 110;

/// How long a probe waits for a server to load (or refuse) a file.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A file that `load-rdb` must refuse.
struct MustFail {
    path: &'static str,
    /// Fragments the error must contain.
    needles: &'static [&'static str],
    /// Why no sync run is made for the kinds that load it (`None`: the sync runs).
    no_sync: Option<&'static str>,
}

const MUST_FAIL: &[MustFail] = &[
    MustFail {
        path: "redis-tests-assets/corrupt_ziplist.rdb",
        needles: &[
            "RDB parse error at byte 494",
            "key:000000000091",
            "corrupt encoding",
            "ziplist",
        ],
        // Redis 6.0 loads it without deep sanitisation, then its BGSAVE child dies of SIGSEGV
        // serialising the broken ziplist: the source cannot serve a full sync at all (shardsync
        // retries with backoff, as a native replica would).
        no_sync: Some("redis-6.0 loads it unsanitised but its BGSAVE child crashes (SIGSEGV)"),
    },
    MustFail {
        path: "redis-tests-assets/corrupt_empty_keys.rdb",
        needles: &["RDB parse error at byte", "empty key"],
        // Redis 7.0 / valkey load it dropping the empty keys; the sync of what they kept runs.
        no_sync: None,
    },
    MustFail {
        path: "librdb/invalid_chksum_v8.rdb",
        needles: &["RDB parse error at byte 209", "checksum mismatch"],
        no_sync: None,
    },
    MustFail {
        path: "librdb/future_v19.rdb",
        needles: &["RDB parse error at byte 9", "unsupported RDB version 99"],
        no_sync: None,
    },
];

// ---------------------------------------------------------------- corpus

fn rdb_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rdb") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `REDIS0011` → "11", `VALKEY080` → "valkey 80".
fn rdb_version(path: &Path) -> String {
    let head = std::fs::read(path).unwrap_or_default();
    let head = String::from_utf8_lossy(&head[..head.len().min(9)]).into_owned();
    if let Some(v) = head.strip_prefix("REDIS") {
        v.trim_start_matches('0').to_string()
    } else if let Some(v) = head.strip_prefix("VALKEY") {
        format!("valkey {}", v.trim_start_matches('0'))
    } else {
        format!("? ({head:?})")
    }
}

// ---------------------------------------------------------------- probe

/// Whether `kind` loads `file`: `Ok(note)` (e.g. keys loaded/expired), `Err(reason)` if not.
fn probe(kind: ServerKind, file: &Path) -> Result<String, String> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("corpus-probe-{}-", kind.name()))
        .tempdir()
        .expect("probe temp dir");
    let d = dir.path();
    std::fs::copy(file, d.join("dump.rdb")).expect("copy RDB into probe dir");
    let log = d.join("log");
    let mut cmd = Command::new(kind.binary());
    cmd.arg("--port")
        .arg("0")
        .arg("--unixsocket")
        .arg(d.join("s.sock"))
        .arg("--dir")
        .arg(d)
        .args([
            "--dbfilename",
            "dump.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--logfile"])
        .arg(&log)
        .current_dir(d)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let mut child: Child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", kind.binary().display()));
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let verdict = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("DB loaded from disk") || text.contains("Ready to accept connections") {
            break Ok(load_note(&text));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            break Err(refusal_reason(&text, &status.to_string()));
        }
        if Instant::now() > deadline {
            break Err(format!("no verdict within {PROBE_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
    verdict
}

/// "keys loaded: 3, keys expired: 1" from Redis 7+/valkey's "Done loading RDB" line.
fn load_note(log: &str) -> String {
    log.lines()
        .find_map(|l| l.split_once("Done loading RDB, ").map(|(_, r)| r))
        .map(|r| r.trim_end_matches('.').to_string())
        .unwrap_or_default()
}

/// The most telling warning line of a server that refused a file, without its prefix.
fn refusal_reason(log: &str, status: &str) -> String {
    const TELLING: &[&str] = &[
        "Can't handle RDB format",
        "Wrong RDB checksum",
        "I can't load",
        "integrity check failed",
        "Internal error in RDB",
        "Short read",
        "Bad file format",
        "module",
    ];
    let strip = |l: &str| {
        l.split_once(" # ")
            .or_else(|| l.split_once(" * "))
            .map(|(_, r)| r)
            .unwrap_or(l)
            .trim()
            .to_string()
    };
    let lines: Vec<&str> = log.lines().collect();
    for pat in TELLING {
        if let Some(l) = lines.iter().find(|l| l.contains(pat)) {
            return strip(l);
        }
    }
    lines
        .iter()
        .rev()
        .find(|l| l.contains(" # "))
        .map(|l| strip(l))
        .unwrap_or_else(|| format!("exited ({status}) without a reason in its log"))
}

// ---------------------------------------------------------------- helpers

fn heartbeat_at_least(conn: &mut redis::Connection, ms: u64) -> bool {
    let v: Option<String> = redis::cmd("GET").arg(HEARTBEAT).query(conn).unwrap_or(None);
    v.and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|v| v >= ms)
}

/// Keys per non-empty db, not counting the heartbeat key (db 0).
fn keys_per_db(conn: &mut redis::Connection) -> BTreeMap<u32, u64> {
    let mut sizes = target_dbsize_all(conn);
    let hb: i64 = redis::cmd("EXISTS")
        .arg(HEARTBEAT)
        .query(conn)
        .expect("EXISTS heartbeat");
    if hb > 0
        && let Some(n) = sizes.get_mut(&0)
    {
        *n -= 1;
    }
    sizes.retain(|_, n| *n > 0);
    sizes
}

fn total(sizes: &BTreeMap<u32, u64>) -> u64 {
    sizes.values().sum()
}

fn compare(
    kind: ServerKind,
    src: &mut redis::Connection,
    dst: &mut redis::Connection,
    src_sizes: &BTreeMap<u32, u64>,
) -> Vec<Difference> {
    let mut dbs: BTreeSet<u32> = src_sizes.keys().copied().collect();
    dbs.extend(keys_per_db(dst).keys());
    let opts = CompareOptions {
        compare_functions: kind.has_functions(),
        ..Default::default()
    };
    let dbs: Vec<u32> = dbs.into_iter().collect();
    compare_servers_with(src, dst, &dbs, &[HEARTBEAT.as_bytes()], &opts)
}

fn describe(diffs: &[Difference]) -> String {
    let mut s: Vec<String> = diffs.iter().take(10).map(|d| d.to_string()).collect();
    if diffs.len() > 10 {
        s.push(format!("... and {} more", diffs.len() - 10));
    }
    s.join("; ")
}

/// Log lines with "panicked" or an ERROR level.
fn bad_log_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("panicked") || l.contains("ERROR"))
        .map(|l| l.to_string())
        .collect()
}

fn flush_all(server: &RedisServer) {
    let mut c = server.client();
    redis::cmd("FLUSHALL")
        .query::<()>(&mut c)
        .expect("FLUSHALL");
    if server.kind().has_functions() {
        redis::cmd("FUNCTION")
            .arg("FLUSH")
            .query::<()>(&mut c)
            .expect("FUNCTION FLUSH");
    }
    assert!(
        dbsize_all(&mut c).is_empty(),
        "target not empty after FLUSHALL"
    );
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Runs `f`, turning a panic (of the harness, say) into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(format!("panic: {}", panic_text(p))))
}

/// `shardsync load-rdb --file F --target URL`: (success, combined log).
fn load_rdb(file: &Path, target: &RedisServer) -> (bool, i32, String) {
    let f = file.to_str().expect("utf-8 corpus path");
    let url = target.url();
    let (status, log) = Shardsync::run_to_exit(
        &["load-rdb", "--file", f, "--target", &url],
        Duration::from_secs(60),
    );
    (
        status.success(),
        status.code().unwrap_or(-1),
        strip_ansi(&log),
    )
}

// ---------------------------------------------------------------- one sync run

struct RunOutcome {
    keys: u64,
    dbs: usize,
    /// Function libraries on the source (kinds with functions).
    functions: usize,
    /// Failures (empty = passed).
    errors: Vec<String>,
}

/// Source `kind` on `file`, `load-rdb` check (unless `skip_load_rdb`), then a full sync.
fn sync_run(file: &Path, kind: ServerKind, skip_load_rdb: bool, hb_config: &Path) -> RunOutcome {
    let mut out = RunOutcome {
        keys: 0,
        dbs: 0,
        functions: 0,
        errors: Vec::new(),
    };
    let r = guarded(|| {
        let tmp = tempfile::Builder::new()
            .prefix("corpus-src-")
            .tempdir()
            .expect("source data dir");
        std::fs::copy(file, tmp.path().join("dump.rdb")).expect("copy RDB");
        let tdir = tmp.path().to_str().expect("utf-8 temp path");
        let src = RedisServer::start_with(kind, &["--dir", tdir, "--dbfilename", "dump.rdb"]);
        let dst = RedisServer::start(kind);
        let mut sc = src.client();
        let mut dc = dst.client();
        let src_sizes = keys_per_db(&mut sc);
        out.keys = total(&src_sizes);
        out.dbs = src_sizes.len();
        if kind.has_functions() {
            out.functions = common::compare::function_libraries(&mut sc).len();
        }

        // load-rdb of the original file vs. the server that loaded it natively.
        if !skip_load_rdb {
            let (ok, code, log) = load_rdb(file, &dst);
            if !ok {
                out.errors.push(format!(
                    "load-rdb exited {code}: {}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                ));
            } else {
                let bad = bad_log_lines(&log);
                if !bad.is_empty() {
                    out.errors
                        .push(format!("load-rdb log has bad lines: {}", bad.join(" | ")));
                }
                let diffs = compare(kind, &mut sc, &mut dc, &src_sizes);
                if !diffs.is_empty() {
                    out.errors.push(format!(
                        "load-rdb result differs from the native load ({} difference(s)): {}",
                        diffs.len(),
                        describe(&diffs)
                    ));
                }
            }
            flush_all(&dst);
        }

        // Full sync source → target.
        let state = tempfile::tempdir().expect("state dir");
        let state_dir = state.path().to_str().expect("utf-8 temp path");
        let cfg = hb_config.to_str().expect("utf-8 temp path");
        let (su, du) = (src.url(), dst.url());
        let status_at = status_addr_arg();
        let mut ss = Shardsync::spawn(&[
            "run",
            "--config",
            cfg,
            "--source",
            &su,
            "--target",
            &du,
            "--state-dir",
            state_dir,
            "--metrics-addr",
            &status_at,
        ]);
        let applied = wait_until(Duration::from_secs(60), || {
            status(&status_at).is_some_and(|st| full_sync_done(&st))
        });
        if !applied {
            return Err(format!(
                "the full sync was not applied within 60 s (exit {:?}); log tail:\n{}",
                ss.poll(),
                strip_ansi(&ss.log_tail(30))
            ));
        }
        let after = now_ms();
        let caught_up = wait_until(Duration::from_secs(30), || {
            heartbeat_at_least(&mut dc, after) && keys_per_db(&mut dc) == src_sizes
        });
        if !caught_up {
            out.errors.push(format!(
                "target did not catch up within 30 s: source keys {src_sizes:?}, target keys {:?}, heartbeat arrived: {}",
                keys_per_db(&mut dc),
                heartbeat_at_least(&mut dc, after)
            ));
        }
        let diffs = compare(kind, &mut sc, &mut dc, &src_sizes);
        if !diffs.is_empty() {
            out.errors.push(format!(
                "sync result differs from the source ({} difference(s)): {}",
                diffs.len(),
                describe(&diffs)
            ));
        }
        let status = ss.terminate();
        let log = strip_ansi(&ss.log());
        if !status.success() {
            out.errors.push(format!(
                "shardsync run exited {status:?} on SIGTERM; log tail:\n{}",
                strip_ansi(&ss.log_tail(20))
            ));
        }
        let bad = bad_log_lines(&log);
        if !bad.is_empty() {
            out.errors.push(format!(
                "shardsync run log has bad lines: {}",
                bad.join(" | ")
            ));
        }
        Ok(())
    });
    if let Err(e) = r {
        out.errors.push(e);
    }
    out
}

// ---------------------------------------------------------------- load-rdb only

/// A must-fail file: `load-rdb` exits non-zero with every one of `needles` in its output and
/// leaves the (empty) target empty.
fn check_refused(file: &Path, needles: &[&str], target: &RedisServer) -> Result<String, String> {
    flush_all(target);
    let (ok, code, log) = load_rdb(file, target);
    let mut errs = Vec::new();
    if ok {
        errs.push("load-rdb exited 0".to_string());
    }
    for n in needles {
        if !log.contains(n) {
            errs.push(format!("message lacks {n:?}"));
        }
    }
    if log.contains("panicked") {
        errs.push("panicked".into());
    }
    let left = target_dbsize_all(&mut target.client());
    if !left.is_empty() {
        errs.push(format!("target not empty afterwards: {left:?}"));
    }
    if !errs.is_empty() {
        return Err(format!("{}; output: {log}", errs.join(", ")));
    }
    let msg = log
        .lines()
        .find_map(|l| l.split_once("RDB parse error ").map(|(_, r)| r))
        .unwrap_or("")
        .trim_end_matches("; nothing was written to the target");
    Ok(format!("refused (exit {code}), target empty: {msg}"))
}

/// A file no server here loads: it must parse. `load-rdb` may only fail because the target
/// refuses module values (the keys are named in the log).
fn check_parses(file: &Path, target: &RedisServer) -> Result<String, String> {
    flush_all(target);
    let (ok, code, log) = load_rdb(file, target);
    if log.contains("panicked") || log.contains("RDB parse error") {
        return Err(format!("load-rdb (exit {code}) did not parse it: {log}"));
    }
    if ok {
        let n = total(&keys_per_db(&mut target.client()));
        return Ok(format!(
            "parsed; load-rdb wrote {n} key(s) (no native load to compare)"
        ));
    }
    let module_keys: BTreeSet<String> = log
        .lines()
        .filter(|l| l.contains("ERROR"))
        .filter_map(|l| {
            if l.contains("not fully expressible on target: module") {
                l.split_once("key \"")
                    .map(|(_, r)| r.split('"').next().unwrap_or("").to_string())
            } else if l.contains("RESTORE") {
                l.split_once("key=")
                    .map(|(_, r)| r.split_whitespace().next().unwrap_or("").to_string())
            } else {
                None
            }
        })
        .collect();
    if module_keys.is_empty() {
        return Err(format!(
            "load-rdb exited {code}, not because of module values: {log}"
        ));
    }
    Ok(format!(
        "parsed; target refused the module value(s) of {}",
        module_keys.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// Removes ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut in_esc = false;
    for c in s.chars() {
        match (in_esc, c) {
            (false, '\u{1b}') => in_esc = true,
            (true, 'm') => in_esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------- the test

struct Row {
    file: String,
    version: String,
    loads: Vec<String>,
    keys: String,
    result: String,
}

#[test]
fn corpus_parses_loads_and_syncs() {
    let corpus = corpus_dir();
    let started = Instant::now();
    let files = rdb_files(&corpus);
    assert!(
        files.len() >= 60,
        "corpus at {} has only {} RDB files",
        corpus.display(),
        files.len()
    );
    let rel = |p: &Path| {
        p.strip_prefix(&corpus)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    for m in MUST_FAIL {
        assert!(
            corpus.join(m.path).is_file(),
            "must-fail file {} missing from the corpus",
            m.path
        );
    }

    // 1. Probe every (file, kind), a few servers at a time.
    let pairs: Vec<(usize, ServerKind)> = (0..files.len())
        .flat_map(|i| KINDS.iter().map(move |&k| (i, k)))
        .collect();
    let mut probes: BTreeMap<(usize, ServerKind), Result<String, String>> = BTreeMap::new();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .min(8);
    std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .chunks(pairs.len().div_ceil(workers))
            .map(|chunk| {
                let files = &files;
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|&(i, k)| ((i, k), probe(k, &files[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            probes.extend(h.join().expect("probe thread"));
        }
    });
    let probe_time = started.elapsed();
    eprintln!(
        "probed {} files x {} kinds in {:.1} s",
        files.len(),
        KINDS.len(),
        probe_time.as_secs_f64()
    );
    for (i, f) in files.iter().enumerate() {
        for k in KINDS {
            match &probes[&(i, k)] {
                Ok(note) => eprintln!("  {:<55} {:<10} loads {note}", rel(f), k.name()),
                Err(why) => eprintln!("  {:<55} {:<10} skipped: {why}", rel(f), k.name()),
            }
        }
    }

    // 2. Plan the sync runs: newest kind per file, then redis 6.0 where it loads too.
    let loads = |i: usize| -> Vec<ServerKind> {
        KINDS
            .iter()
            .copied()
            .filter(|&k| probes[&(i, k)].is_ok())
            .collect()
    };
    let must_fail = |i: usize| MUST_FAIL.iter().find(|m| corpus.join(m.path) == files[i]);
    let syncable = |i: usize| must_fail(i).is_none_or(|m| m.no_sync.is_none());
    let mut plan: Vec<(usize, ServerKind)> = (0..files.len())
        .filter(|&i| syncable(i))
        .filter_map(|i| loads(i).first().map(|&k| (i, k)))
        .collect();
    let mut over_budget = BTreeSet::new();
    for i in (0..files.len()).filter(|&i| syncable(i)) {
        let l = loads(i);
        if l.len() > 1 && l.contains(&ServerKind::Redis60) {
            if plan.len() < MAX_SYNC_RUNS {
                plan.push((i, ServerKind::Redis60));
            } else {
                over_budget.insert(i);
            }
        }
    }
    plan.sort();
    assert!(
        plan.len() <= MAX_SYNC_RUNS,
        "{} files load natively: more sync runs than the budget of {MAX_SYNC_RUNS}",
        plan.len()
    );
    let hb_dir = tempfile::tempdir().expect("config dir");
    let hb_config = hb_dir.path().join("shardsync.toml");
    std::fs::write(&hb_config, "[sync]\nheartbeat_interval_ms = 50\n").expect("write config");

    let sync_started = Instant::now();
    let mut results: BTreeMap<usize, Vec<(ServerKind, RunOutcome)>> = BTreeMap::new();
    for &(i, kind) in &plan {
        let t = Instant::now();
        let outcome = sync_run(&files[i], kind, must_fail(i).is_some(), &hb_config);
        eprintln!(
            "sync {:<55} {:<10} {} keys in {} db(s), {:.2} s: {}",
            rel(&files[i]),
            kind.name(),
            outcome.keys,
            outcome.dbs,
            t.elapsed().as_secs_f64(),
            if outcome.errors.is_empty() {
                "ok".to_string()
            } else {
                format!("FAILED: {}", outcome.errors.join(" || "))
            }
        );
        results.entry(i).or_default().push((kind, outcome));
    }
    let sync_time = sync_started.elapsed();

    // 3 + 4. load-rdb into an empty valkey: must-fail files and files no server here loads.
    let scratch = RedisServer::start(ServerKind::Valkey91);
    let mut load_only: BTreeMap<usize, Result<String, String>> = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        let r = if let Some(m) = must_fail(i) {
            guarded(|| check_refused(file, m.needles, &scratch))
        } else if !results.contains_key(&i) {
            guarded(|| check_parses(file, &scratch))
        } else {
            continue;
        };
        load_only.insert(i, r);
    }
    drop(scratch);

    // Summary.
    let mut rows = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let loads_on: Vec<String> = loads(i).iter().map(|k| k.name().to_string()).collect();
        let mut parts = Vec::new();
        let mut keys = Vec::new();
        if let Some(runs) = results.get(&i) {
            for (k, o) in runs {
                keys.push(if o.functions > 0 {
                    format!("{}+{}fn", o.keys, o.functions)
                } else {
                    o.keys.to_string()
                });
                if o.errors.is_empty() {
                    let what = if must_fail(i).is_some() {
                        "sync ok"
                    } else {
                        "load-rdb+sync ok"
                    };
                    parts.push(format!("{}: {what}", k.name()));
                } else {
                    parts.push(format!("{}: FAILED", k.name()));
                }
            }
        }
        if over_budget.contains(&i) {
            parts.push("redis-6.0 sync skipped (run budget)".into());
        }
        if let Some(why) = must_fail(i).and_then(|m| m.no_sync)
            && !loads(i).is_empty()
        {
            parts.push(format!("no sync: {why}"));
        }
        if let Some(n) = loads(i)
            .first()
            .and_then(|&k| probes[&(i, k)].as_ref().ok())
            .and_then(|note| note.split_once("keys expired: "))
            .and_then(|(_, r)| r.split(',').next())
            .filter(|n| *n != "0")
        {
            parts.push(format!("{n} key(s) already expired at native load"));
        }
        if let Some(r) = load_only.get(&i) {
            match r {
                Ok(s) => parts.push(s.clone()),
                Err(_) => parts.push("FAILED".into()),
            }
        }
        rows.push(Row {
            file: rel(f),
            version: rdb_version(f),
            loads: loads_on,
            keys: if keys.is_empty() {
                "-".into()
            } else {
                keys.join("/")
            },
            result: parts.join("; "),
        });
    }
    let mut table = String::from("\nRDB corpus summary\n");
    table.push_str(&format!(
        "| {:<52} | {:<9} | {:<30} | {:<5} | result\n",
        "file", "version", "loads on", "keys"
    ));
    for r in &rows {
        table.push_str(&format!(
            "| {:<52} | {:<9} | {:<30} | {:<5} | {}\n",
            r.file,
            r.version,
            if r.loads.is_empty() {
                "-".to_string()
            } else {
                r.loads.join(", ")
            },
            r.keys,
            r.result
        ));
    }
    let total_time = started.elapsed();
    table.push_str(&format!(
        "{} files, {} sync runs; probe {:.1} s, sync {:.1} s, total {:.1} s\n",
        files.len(),
        plan.len(),
        probe_time.as_secs_f64(),
        sync_time.as_secs_f64(),
        total_time.as_secs_f64()
    ));
    eprintln!("{table}");

    let mut failures = Vec::new();
    for (i, runs) in &results {
        for (k, o) in runs {
            for e in &o.errors {
                failures.push(format!("{} on {}: {e}", rel(&files[*i]), k.name()));
            }
        }
    }
    for (i, r) in &load_only {
        if let Err(e) = r {
            failures.push(format!("{}: {e}", rel(&files[*i])));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
