//! Full-sync write coalescing: runs of plain `SET key value` commands (string keys without a TTL,
//! as the RDB converter writes them) become `MSET key value …`. A target spends less CPU per key
//! on one `MSET` of many keys than on as many `SET`s (one command to look up, dispatch, propagate
//! and answer instead of one per key), and shardsync reads one `+OK` instead of many.
//!
//! Only batches of an RDB load go through here ([`super::dispatch::Feed::Rdb`], before
//! routing); the
//! command stream is never rewritten. What is coalesced and why it is exact:
//! - only commands that are exactly `SET key value` (no option: `PXAT`, `KEEPTTL`, `GET`, `NX`…
//!   change the meaning), within one *run* of consecutive such commands of one database. `MSET`
//!   sets each key like `SET` without options does (the value replaced, any TTL removed).
//! - standalone target: the run becomes one `MSET` per [`MAX_PAIRS`] keys / [`MAX_BYTES`] bytes,
//!   keys in their order.
//! - cluster target: an `MSET` must stay in one hash slot, so the run's keys are grouped per slot,
//!   each group in its original order, each `MSET` placed where the first of its keys was. Keys of
//!   different slots are different keys and a run holds nothing but these `SET`s, so moving one
//!   ahead of another's `SET` cannot change the result; a key repeated in a run keeps its order
//!   (same slot, same group). A group of one key stays a `SET`.
//!
//! Error attribution: a rejected `MSET` is counted as one rejected write per key
//! ([`writes_in`], used by the writer) and [`super::repair`] queues every key of it; its log line
//! names the first key and the number of keys.

use std::collections::HashMap;

use bytes::Bytes;

use crate::cmd::{Cmd, DbCmd};

/// Most keys in one coalesced `MSET`. Its argument vector (1 + 2 × 15 entries of 32 bytes)
/// stays below 1 KiB, glibc's first "large" request size: larger vectors, allocated once per
/// `MSET` on the thread that also frees each `SET`'s small vector, made the allocator
/// consolidate its fast bins on every `MSET` (measured: more CPU in shardsync than the `SET`s
/// saved). 15 keys already take most of the target's per-command cost off: callgrind counts
/// 5,600 instructions per key for `SET`, 3,340 for `MSET`s of 100.
pub const MAX_PAIRS: usize = 15;
/// Most argument bytes (keys and values) in one coalesced `MSET`: big values gain nothing from
/// it and a huge command only holds the target longer.
pub const MAX_BYTES: usize = 256 * 1024;
/// Values longer than this are left as `SET`s.
const MAX_VALUE: usize = 16 * 1024;

/// How many key writes a command stands for when counting rejected writes: the keys of an
/// `MSET`, 1 for anything else.
pub fn writes_in(cmd: &Cmd) -> u64 {
    if cmd.args.len() >= 3 && cmd.args.len() % 2 == 1 && cmd.is("MSET") {
        ((cmd.args.len() - 1) / 2) as u64
    } else {
        1
    }
}

/// True for exactly `SET key value` with a value small enough to be worth coalescing.
fn plain_set(c: &Cmd) -> bool {
    c.args.len() == 3 && c.args[2].len() <= MAX_VALUE && c.is("SET")
}

/// Appends `SET key value` (a plain string key without a TTL) to `out` as the RDB converter
/// writes it. With `merge` (`Some(progress_prefix)`, standalone targets only), the pair is
/// added to the `SET`/`MSET` at the end of `out` instead when [`batch`] would have put them in
/// one `MSET` (same database, at most [`MAX_PAIRS`] keys, [`MAX_BYTES`] and [`MAX_VALUE`]):
/// the same commands as coalescing a batch of `SET`s, without a command vector per key. A key
/// starting with the progress prefix is never merged, in either place, so that the
/// dispatcher's filter of progress writes (which reads the first key) still sees it alone.
pub fn push_set(out: &mut Vec<DbCmd>, db: u32, key: Bytes, value: Bytes, merge: Option<&[u8]>) {
    if let (Some(prefix), Some(last)) = (merge, out.last_mut())
        && last.db == db
        && value.len() <= MAX_VALUE
        && mergeable(&last.cmd, prefix)
        && (prefix.is_empty() || !key.starts_with(prefix))
    {
        let args = &mut last.cmd.args;
        let pairs = (args.len() - 1) / 2;
        let size = key.len() + value.len();
        let bytes: usize = args[1..].iter().map(Bytes::len).sum();
        if pairs < MAX_PAIRS && bytes + size <= MAX_BYTES {
            if pairs == 1 {
                // Sized once: growing it step by step costs copies and allocator work per key.
                args.reserve_exact(2 * MAX_PAIRS - 2);
                args[0] = Bytes::from_static(b"MSET");
            }
            args.push(key);
            args.push(value);
            return;
        }
    }
    out.push(DbCmd {
        db,
        cmd: Cmd {
            args: vec![Bytes::from_static(b"SET"), key, value],
        },
    });
}

/// A plain `SET` or an `MSET` that [`push_set`] may add a pair to: not a progress write.
fn mergeable(c: &Cmd, prefix: &[u8]) -> bool {
    let first_ok = c
        .args
        .get(1)
        .is_some_and(|k| prefix.is_empty() || !k.starts_with(prefix));
    first_ok && (plain_set(c) || (c.args.len() >= 3 && c.args.len() % 2 == 1 && c.is("MSET")))
}

/// Coalesces one RDB batch before it is routed (see the module documentation). `cluster`
/// selects per-slot grouping: the router keeps an `MSET` of one slot whole.
pub fn batch(cmds: Vec<DbCmd>, cluster: bool) -> Vec<DbCmd> {
    // Nothing to do (the common case of a batch of collections or RESTOREs): no new vector.
    if !cmds
        .windows(2)
        .any(|w| w[0].db == w[1].db && plain_set(&w[0].cmd) && plain_set(&w[1].cmd))
    {
        return cmds;
    }
    let mut out: Vec<DbCmd> = Vec::with_capacity(cmds.len() / 4 + 8);
    let mut run: Vec<(u32, Cmd)> = Vec::new();
    for dc in cmds {
        if plain_set(&dc.cmd) && run.first().is_none_or(|(db, _)| *db == dc.db) {
            run.push((dc.db, dc.cmd));
            continue;
        }
        flush(&mut run, cluster, &mut out);
        if plain_set(&dc.cmd) {
            run.push((dc.db, dc.cmd));
        } else {
            out.push(dc);
        }
    }
    flush(&mut run, cluster, &mut out);
    out
}

/// Emits a run of plain `SET`s of one database as `MSET`s.
fn flush(run: &mut Vec<(u32, Cmd)>, cluster: bool, out: &mut Vec<DbCmd>) {
    let Some(&(db, _)) = run.first() else { return };
    if !cluster {
        let mut group = Group::default();
        for (_, c) in run.drain(..) {
            group.add(c, db, out);
        }
        group.finish(db, out);
        return;
    }
    // Per slot, in order of each slot's first key.
    let mut groups: HashMap<u16, usize> = HashMap::with_capacity(run.len());
    let mut slotted: Vec<Vec<Cmd>> = Vec::new();
    for (_, c) in run.drain(..) {
        let slot = crate::router::slot::key_slot(&c.args[1]);
        match groups.get(&slot) {
            Some(&i) => slotted[i].push(c),
            None => {
                groups.insert(slot, slotted.len());
                slotted.push(vec![c]);
            }
        }
    }
    for cmds in slotted {
        let mut group = Group::default();
        for c in cmds {
            group.add(c, db, out);
        }
        group.finish(db, out);
    }
}

/// Moves the key and value of a plain `SET` (checked by [`plain_set`]) to `args`.
fn push_pair(args: &mut Vec<Bytes>, mut c: Cmd) {
    if let [_, k, v] = c.args.as_mut_slice() {
        args.push(std::mem::take(k));
        args.push(std::mem::take(v));
    }
}

/// An `MSET` being filled; its first `SET` is held so that a group of one stays a `SET`.
#[derive(Default)]
struct Group {
    first: Option<Cmd>,
    args: Vec<Bytes>,
    bytes: usize,
}

impl Group {
    fn add(&mut self, c: Cmd, db: u32, out: &mut Vec<DbCmd>) {
        let size = c.args[1].len() + c.args[2].len();
        let pairs = (self.args.len().saturating_sub(1)) / 2 + usize::from(self.first.is_some());
        if pairs >= MAX_PAIRS || (pairs > 0 && self.bytes + size > MAX_BYTES) {
            self.finish(db, out);
        }
        self.bytes += size;
        if self.first.is_none() && self.args.is_empty() {
            self.first = Some(c);
            return;
        }
        if let Some(first) = self.first.take() {
            // Sized once: growing it step by step costs copies and allocator work per key.
            self.args.reserve_exact(1 + 2 * MAX_PAIRS);
            self.args.push(Bytes::from_static(b"MSET"));
            push_pair(&mut self.args, first);
        }
        push_pair(&mut self.args, c);
    }

    fn finish(&mut self, db: u32, out: &mut Vec<DbCmd>) {
        self.bytes = 0;
        if let Some(first) = self.first.take() {
            out.push(DbCmd { db, cmd: first });
        } else if !self.args.is_empty() {
            out.push(DbCmd {
                db,
                cmd: Cmd {
                    args: std::mem::take(&mut self.args),
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;

    fn set(db: u32, k: &str, v: &str) -> DbCmd {
        DbCmd {
            db,
            cmd: cmd!["SET", k.to_string(), v.to_string()],
        }
    }

    fn names(v: &[DbCmd]) -> Vec<String> {
        v.iter()
            .map(|c| {
                c.cmd
                    .args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn standalone_runs_become_mset_in_order() {
        let cmds = vec![
            set(0, "a", "1"),
            set(0, "b", "2"),
            DbCmd {
                db: 0,
                cmd: cmd!["SET", "t", "x", "PXAT", "99"],
            },
            set(0, "c", "3"),
            set(1, "d", "4"),
            set(1, "e", "5"),
            DbCmd {
                db: 1,
                cmd: cmd!["PEXPIREAT", "e", "7"],
            },
            set(1, "f", "6"),
        ];
        let out = batch(cmds, false);
        assert_eq!(
            names(&out),
            [
                "MSET a 1 b 2",
                "SET t x PXAT 99",
                "SET c 3",
                "MSET d 4 e 5",
                "PEXPIREAT e 7",
                "SET f 6"
            ]
        );
        assert_eq!(out[3].db, 1);
        assert_eq!(writes_in(&out[0].cmd), 2);
        assert_eq!(writes_in(&out[1].cmd), 1);
    }

    #[test]
    fn caps_pairs_per_mset() {
        let cmds: Vec<DbCmd> = (0..MAX_PAIRS * 2 + 1)
            .map(|i| set(0, &format!("k{i}"), "v"))
            .collect();
        let out = batch(cmds, false);
        assert_eq!(out.len(), 3);
        assert_eq!(writes_in(&out[0].cmd), MAX_PAIRS as u64);
        assert_eq!(writes_in(&out[1].cmd), MAX_PAIRS as u64);
        assert!(out[2].cmd.is("SET"));
        // Every key once, in order.
        let keys: Vec<Bytes> = out
            .iter()
            .flat_map(|c| c.cmd.args[1..].iter().step_by(2).cloned())
            .collect();
        let want: Vec<Bytes> = (0..MAX_PAIRS * 2 + 1)
            .map(|i| Bytes::from(format!("k{i}")))
            .collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn cluster_groups_per_slot_keeping_order_within_slot() {
        // {a} and {b} hash tags: two slots.
        let cmds = vec![
            set(0, "{a}1", "1"),
            set(0, "{b}1", "2"),
            set(0, "{a}2", "3"),
            set(0, "{a}1", "4"),
            set(0, "x", "5"),
        ];
        let out = batch(cmds, true);
        let mut n = names(&out);
        n.sort();
        let mut want = vec!["MSET {a}1 1 {a}2 3 {a}1 4", "SET {b}1 2", "SET x 5"];
        want.sort();
        assert_eq!(n, want);
        for c in &out {
            let slots: std::collections::BTreeSet<u16> = c.cmd.args[1..]
                .iter()
                .step_by(2)
                .map(|k| crate::router::slot::key_slot(k))
                .collect();
            assert_eq!(slots.len(), 1);
        }
    }

    #[test]
    fn leaves_batches_without_runs_alone() {
        let cmds = vec![
            DbCmd {
                db: 0,
                cmd: cmd!["RESTORE", "h", "0", "payload", "REPLACE"],
            },
            set(0, "a", "1"),
            set(1, "b", "2"),
        ];
        let out = batch(cmds.clone(), false);
        assert_eq!(out, cmds);
    }

    /// Converting with [`push_set`] gives exactly the commands that coalescing the converter's
    /// `SET`s with [`batch`] gives (and `batch` leaves its output alone): runs across
    /// databases, options, big values, the pair and byte caps, on pseudo-random sequences.
    #[test]
    fn push_set_makes_what_batch_makes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..300 {
            let mut cmds = Vec::new();
            for i in 0..next(80) {
                let db = next(2) as u32;
                let len = match next(10) {
                    0 => MAX_VALUE + 1,
                    1 => MAX_VALUE,
                    _ => next(40) as usize,
                };
                let c = match next(8) {
                    0 => cmd!["SET", format!("t{i}"), "x", "PXAT", "9"],
                    1 => cmd!["HSET", format!("h{i}"), "f", "v"],
                    _ => cmd!["SET", format!("k{i}"), vec![b'v'; len]],
                };
                cmds.push(DbCmd { db, cmd: c });
            }
            let want = batch(cmds.clone(), false);
            let mut got: Vec<DbCmd> = Vec::new();
            for dc in cmds {
                if dc.cmd.args.len() == 3 && dc.cmd.is("SET") {
                    let [_, k, v] = <[Bytes; 3]>::try_from(dc.cmd.args).expect("3 args");
                    push_set(&mut got, dc.db, k, v, Some(b""));
                } else {
                    got.push(dc);
                }
            }
            assert_eq!(names(&got), names(&want), "round {round}");
            assert_eq!(batch(got.clone(), false), got, "round {round}");
        }
    }

    /// A key with the progress prefix is never merged, and nothing is merged into it: the
    /// dispatcher drops progress writes by their first key.
    #[test]
    fn push_set_keeps_progress_keys_alone() {
        let mut out = Vec::new();
        for k in ["a", "p:1", "b", "c", "p:2", "p:3", "d"] {
            push_set(
                &mut out,
                0,
                Bytes::from(k),
                Bytes::from_static(b"v"),
                Some(b"p:"),
            );
        }
        assert_eq!(
            names(&out),
            [
                "SET a v",
                "SET p:1 v",
                "MSET b v c v",
                "SET p:2 v",
                "SET p:3 v",
                "SET d v"
            ]
        );
        // Without merging: one SET per key.
        let mut out = Vec::new();
        for k in ["a", "b"] {
            push_set(&mut out, 0, Bytes::from(k), Bytes::from_static(b"v"), None);
        }
        assert_eq!(names(&out), ["SET a v", "SET b v"]);
    }
}
