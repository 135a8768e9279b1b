//! Differential fuzzer with a native replica as the oracle.
//!
//! Proptest generates random write sequences (`fuzz_gen`); each sequence runs on a real source
//! that has a native replica (same version as the source) while shardsync replicates the same
//! source into a target. After each sequence both catch up and the target is compared with the
//! replica completely (types, values, TTLs, stream groups, consumers, PELs; functions when both
//! sides have them). For a downgrade pair the replica is still the source's own version, so the
//! comparison keeps what the older target can hold (`compare.rs` compares newer stream metadata
//! only when both sides report it). A failure shrinks to a minimal sequence, printed with the
//! commands it sent.
//!
//! CI runs a short fixed-seed run per pair. The long run is `diff_fuzz::long` (`--ignored`),
//! driven by `scripts/fuzz-diff.sh --minutes N [--pair SRC:DST]`, which sets
//! `SHARDSYNC_FUZZ_MINUTES`, `SHARDSYNC_FUZZ_PAIR` (e.g. `7.0:6.0`, `valkey:7.0`) and
//! optionally `SHARDSYNC_FUZZ_SEED`.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::common::ServerKind;
use crate::fuzz_gen::{FUNCTION_LIB, Op, ops, render};
use crate::oracle::Trio;

use ServerKind::*;

/// What a run did.
#[derive(Debug, Default)]
pub struct Stats {
    pub cases: u64,
    pub commands: u64,
    /// Commands the source refused (no-ops everywhere).
    pub refused: u64,
    pub elapsed: Duration,
}

fn show(cmd: &[Vec<u8>]) -> String {
    cmd.iter()
        .map(|a| crate::common::util::printable_limited(a, 40))
        .collect::<Vec<_>>()
        .join(" ")
}

fn start(src: ServerKind, dst: ServerKind) -> Trio {
    let mut t = Trio::start(src, dst);
    if src.has_functions() {
        let _: () = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(FUNCTION_LIB)
            .query(&mut t.src.client())
            .expect("FUNCTION LOAD on source");
        t.catch_up();
    }
    t
}

/// Runs one sequence from an empty keyspace; `Err` lists the commands and the differences.
fn run_case(
    t: &mut Trio,
    ops: &[Op],
    commands: &Cell<u64>,
    refused: &Cell<u64>,
) -> Result<(), String> {
    let kind = t.src.kind();
    let mut conn = t.src.client();
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut conn)
        .map_err(|e| e.to_string())?;
    let mut sent = Vec::new();
    for op in ops {
        let mut cmds = Vec::new();
        render(op, kind, &mut conn, &mut cmds);
        for c in cmds {
            let mut cmd = redis::cmd(&String::from_utf8_lossy(&c[0]));
            for a in &c[1..] {
                cmd.arg(a.as_slice());
            }
            // Refused commands (wrong type, nothing to act on) are no-ops on all sides.
            let reply = cmd.query::<redis::Value>(&mut conn);
            sent.push(format!(
                "{}{}",
                show(&c),
                if reply.is_err() { "   (refused)" } else { "" }
            ));
        }
    }
    commands.set(commands.get() + sent.len() as u64);
    refused.set(refused.get() + sent.iter().filter(|s| s.ends_with("(refused)")).count() as u64);
    if std::env::var_os("SHARDSYNC_FUZZ_SHOW").is_some() {
        eprintln!("case:\n    {}", sent.join("\n    "));
    }
    t.catch_up();
    let diffs = t.diffs(&[0, 1]);
    if diffs.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "{} → {}: {} difference(s) after:\n",
        kind.name(),
        t.dst.kind().name(),
        diffs.len()
    );
    for s in &sent {
        msg.push_str(&format!("    {s}\n"));
    }
    for d in diffs.iter().take(10) {
        msg.push_str(&format!("  - {d}\n"));
    }
    msg.push_str(&format!("shardsync log tail:\n{}", t.ss.log_tail(15)));
    Err(msg)
}

/// `cases` sequences of up to `max_ops` steps from `seed` on one trio; panics with the minimal
/// failing sequence.
fn fuzz(t: &RefCell<Trio>, cases: u32, max_ops: usize, seed: u64, stats: &mut Stats) {
    let begin = Instant::now();
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        max_shrink_iters: 400,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let commands = Cell::new(0u64);
    let refused = Cell::new(0u64);
    let n = Cell::new(0u64);
    let result = runner.run(&ops(max_ops), |ops| {
        n.set(n.get() + 1);
        run_case(&mut t.borrow_mut(), &ops, &commands, &refused).map_err(TestCaseError::fail)
    });
    stats.cases += n.get();
    stats.commands += commands.get();
    stats.refused += refused.get();
    stats.elapsed += begin.elapsed();
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, minimal)) => panic!(
            "differential fuzzer (seed {seed}) found a divergence; minimal sequence {minimal:#?}\n{reason}"
        ),
        Err(TestError::Abort(why)) => panic!("fuzzer aborted (seed {seed}): {why}"),
    }
}

fn ci(src: ServerKind, dst: ServerKind) {
    let t = RefCell::new(start(src, dst));
    let mut stats = Stats::default();
    fuzz(&t, 40, 30, 0x5eed_0009, &mut stats);
    eprintln!("diff_fuzz {} → {}: {stats:?}", src.name(), dst.name());
}

#[test]
fn redis70_to_redis70() {
    ci(Redis70, Redis70);
}

#[test]
fn redis60_to_redis60() {
    ci(Redis60, Redis60);
}

#[test]
fn redis62_to_redis62() {
    ci(Redis62, Redis62);
}

#[test]
fn valkey91_to_valkey91() {
    ci(Valkey91, Valkey91);
}

#[test]
fn redis70_to_redis60() {
    ci(Redis70, Redis60);
}

#[test]
fn valkey91_to_redis70() {
    ci(Valkey91, Redis70);
}

fn parse_kind(s: &str) -> ServerKind {
    match s {
        "6.0" => Redis60,
        "6.2" => Redis62,
        "7.0" => Redis70,
        "valkey" | "9.1" | "valkey-9.1" => Valkey91,
        other => panic!("unknown server kind {other:?} (6.0, 6.2, 7.0, valkey)"),
    }
}

/// The long run: `SHARDSYNC_FUZZ_MINUTES` (default 1) on `SHARDSYNC_FUZZ_PAIR` (default
/// `7.0:7.0`), batches of 25 sequences of up to 40 steps with consecutive seeds from
/// `SHARDSYNC_FUZZ_SEED`; prints the figures at the end.
#[test]
#[ignore = "long run: scripts/fuzz-diff.sh"]
fn long() {
    let minutes: f64 = std::env::var("SHARDSYNC_FUZZ_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let pair = std::env::var("SHARDSYNC_FUZZ_PAIR").unwrap_or_else(|_| "7.0:7.0".into());
    let (s, d) = pair
        .split_once(':')
        .expect("SHARDSYNC_FUZZ_PAIR is SRC:DST");
    let (src, dst) = (parse_kind(s), parse_kind(d));
    let mut seed: u64 = std::env::var("SHARDSYNC_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    let deadline = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let t = RefCell::new(start(src, dst));
    let mut stats = Stats::default();
    let first_seed = seed;
    while Instant::now() < deadline {
        fuzz(&t, 25, 40, seed, &mut stats);
        eprintln!(
            "diff_fuzz long {} → {}: seed {seed} done; total {stats:?}",
            src.name(),
            dst.name()
        );
        seed += 1;
    }
    eprintln!(
        "diff_fuzz long {} → {}: {} cases, {} commands ({} refused by the source) in {:.1} min, seeds {first_seed}..{seed}, no divergence",
        src.name(),
        dst.name(),
        stats.cases,
        stats.commands,
        stats.refused,
        stats.elapsed.as_secs_f64() / 60.0
    );
}
