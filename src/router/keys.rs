//! Where the keys are in a command, for every command a Redis or Valkey replication stream can
//! carry (plus a few read commands and not-propagated variants, so the table is not surprised).
//!
//! [`command_keys`] looks the command name up in one sorted static [`TABLE`] (case-insensitive, no
//! allocation) and returns a [`KeySpec`]: the argument indexes of the keys, as a compact
//! [`KeyPositions`] (a `Copy` value, never a heap vector), and a [`Category`] that says how a
//! router may treat the command when its keys fall in different slots.
//!
//! Commands that are not in the table are [`Category::Unknown`] with the first argument taken as
//! the key (right for nearly every module command); the caller should count them.

use crate::cmd::Cmd;

/// How a command relates to keys and slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// One key (or a sharded-pubsub channel, routed the same way).
    Single,
    /// Several keys, each one independent of the others (`DEL`, `UNLINK`, `TOUCH`, `EXISTS`):
    /// can be split per slot, one command per slot.
    Independent,
    /// `key value` pairs (`MSET`, `MSETNX`): can be split per slot by pairs.
    Pairs,
    /// `SMOVE src dst member`: can be split into `SREM` + `SADD`.
    Move,
    /// Several keys whose values depend on each other (`RENAME`, `COPY`, `*STORE`, `BITOP`,
    /// `PFMERGE`, `LMOVE`, `SORT … STORE`, `GEO… STORE`, blocking pops…): all must share a slot.
    Linked,
    /// `EVAL`/`EVALSHA`/`FCALL` (and `_RO`): keys declared by `numkeys`; all must share a slot;
    /// none means "any node".
    Script,
    /// No key; must run on every master (`FLUSHALL`, `FLUSHDB`, `FUNCTION LOAD|DELETE|FLUSH|RESTORE`,
    /// `SCRIPT LOAD|FLUSH`).
    AllNodes,
    /// No key; any one master will do (`PUBLISH`: the cluster spreads it; not-propagated
    /// `SCRIPT`/`FUNCTION` read subcommands; `XGROUP HELP`).
    AnyNode,
    /// Needs databases other than 0 (`SELECT`, `SWAPDB`, `MOVE`, `COPY … DB n`): impossible on a
    /// cluster target.
    Db,
    /// Replication-stream control handled by the caller itself (`MULTI`, `EXEC`, `DISCARD`,
    /// `PING`, `REPLCONF`).
    Control,
    /// Not in the table: the first argument is assumed to be the key.
    Unknown,
    /// Key positions could not be determined (missing arguments, bad `numkeys`, a key without its
    /// value…): the target would reject the command.
    Malformed,
}

/// Argument indexes of the keys of one command: an optional `lead` index, then
/// `first, first + step, …` below `end`. Covers every layout in the table without allocating
/// (`DEL k…`, `MSET k v…`, `ZUNIONSTORE dst n k…`, `SORT k … STORE dst`…).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyPositions {
    /// A key index listed before the range; 0 (the command name) means none.
    lead: usize,
    first: usize,
    end: usize,
    step: usize,
}

impl KeyPositions {
    /// No key.
    pub const NONE: KeyPositions = KeyPositions {
        lead: 0,
        first: 0,
        end: 0,
        step: 1,
    };

    /// The single key at `i`.
    pub const fn one(i: usize) -> Self {
        KeyPositions {
            lead: 0,
            first: i,
            end: i + 1,
            step: 1,
        }
    }

    /// Keys at `first, first + step, …` below `end`.
    pub const fn range(first: usize, end: usize, step: usize) -> Self {
        KeyPositions {
            lead: 0,
            first,
            end,
            step,
        }
    }

    /// The key at `lead`, then the keys of `range(first, end, step)`.
    pub const fn lead_then(lead: usize, first: usize, end: usize, step: usize) -> Self {
        KeyPositions {
            lead,
            first,
            end,
            step,
        }
    }

    /// The key indexes, in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (self.lead != 0)
            .then_some(self.lead)
            .into_iter()
            .chain((self.first..self.end.max(self.first)).step_by(self.step.max(1)))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        let range = if self.end > self.first {
            (self.end - self.first).div_ceil(self.step.max(1))
        } else {
            0
        };
        range + usize::from(self.lead != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first key index, if any.
    pub fn first(&self) -> Option<usize> {
        self.iter().next()
    }

    /// The indexes as a vector (for tests and diagnostics; the hot path uses [`Self::iter`]).
    pub fn to_vec(&self) -> Vec<usize> {
        self.iter().collect()
    }
}

/// What [`command_keys`] found: the command's [`Category`] and its key positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub category: Category,
    pub keys: KeyPositions,
}

impl KeySpec {
    const fn new(category: Category, keys: KeyPositions) -> Self {
        KeySpec { category, keys }
    }
    const fn no_keys(category: Category) -> Self {
        KeySpec::new(category, KeyPositions::NONE)
    }
    const MALFORMED: KeySpec = KeySpec::no_keys(Category::Malformed);
}

/// How to find the keys of a table entry.
#[derive(Clone, Copy, Debug)]
pub enum Rule {
    /// No key.
    None,
    /// Redis's legacy `(first, last, step)`: keys at `first, first + step, …, last`; a negative
    /// `last` counts from the end (`-1` = last argument). Every key must be present, and with
    /// `step` 2 every key needs its value.
    Range(u8, i8, u8),
    /// `numkeys` at this index, keys right after it; `dest`: also a destination key at index 1
    /// (`ZUNIONSTORE dst numkeys k…`).
    NumKeys { at: u8, dest: bool },
    /// `numkeys` at this index, then that many `key value` pairs (Valkey 9.1 `MSETEX numkeys k v …
    /// [options]`).
    NumPairs(u8),
    /// `SORT key … [STORE dst]` (options `BY p`, `LIMIT o c`, `GET p` skipped properly).
    Sort,
    /// `GEORADIUS…` with options from this index: `… [STORE k] [STOREDIST k]` (last one wins).
    GeoRadius(u8),
    /// `XREAD`/`XREADGROUP … STREAMS k… id…`.
    Streams,
    /// `COPY src dst [DB n] [REPLACE]`.
    Copy,
    /// `XGROUP sub key …` (key at 2; `HELP` has none).
    XGroup,
    /// `FUNCTION sub …` / `SCRIPT sub …`: writes on every node or reads on any.
    Admin,
}

/// One command of the table: upper-case name, key rule, category.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub name: &'static str,
    pub rule: Rule,
    pub category: Category,
}

const fn e(name: &'static str, rule: Rule, category: Category) -> Entry {
    Entry {
        name,
        rule,
        category,
    }
}

use Category::*;
use Rule::{Admin, Copy as CopyR, GeoRadius, NumKeys, NumPairs, Range, Sort, Streams, XGroup};

const K1: Rule = Range(1, 1, 1);
const K12: Rule = Range(1, 2, 1);
const ALL: Rule = Range(1, -1, 1);
const NO: Rule = Rule::None;

/// Every known command, sorted by name (a unit test checks the order).
pub static TABLE: &[Entry] = &[
    e("APPEND", K1, Single),
    e("BITFIELD", K1, Single),
    e("BITOP", Range(2, -1, 1), Linked),
    e("BLMOVE", K12, Linked),
    e("BLMPOP", NumKeys { at: 2, dest: false }, Linked),
    e("BLPOP", Range(1, -2, 1), Linked),
    e("BRPOP", Range(1, -2, 1), Linked),
    e("BRPOPLPUSH", K12, Linked),
    e("BZMPOP", NumKeys { at: 2, dest: false }, Linked),
    e("BZPOPMAX", Range(1, -2, 1), Linked),
    e("BZPOPMIN", Range(1, -2, 1), Linked),
    e("COPY", CopyR, Linked),
    e("DECR", K1, Single),
    e("DECRBY", K1, Single),
    e("DEL", ALL, Independent),
    e("DELIFEQ", K1, Single),
    e("DISCARD", NO, Control),
    e("EVAL", NumKeys { at: 2, dest: false }, Script),
    e("EVALSHA", NumKeys { at: 2, dest: false }, Script),
    e("EVALSHA_RO", NumKeys { at: 2, dest: false }, Script),
    e("EVAL_RO", NumKeys { at: 2, dest: false }, Script),
    e("EXEC", NO, Control),
    e("EXISTS", ALL, Independent),
    e("EXPIRE", K1, Single),
    e("EXPIREAT", K1, Single),
    e("FCALL", NumKeys { at: 2, dest: false }, Script),
    e("FCALL_RO", NumKeys { at: 2, dest: false }, Script),
    e("FLUSHALL", NO, AllNodes),
    e("FLUSHDB", NO, AllNodes),
    e("FUNCTION", Admin, AllNodes),
    e("GEOADD", K1, Single),
    e("GEORADIUS", GeoRadius(5), Single),
    e("GEORADIUSBYMEMBER", GeoRadius(4), Single),
    e("GEOSEARCHSTORE", K12, Linked),
    e("GETDEL", K1, Single),
    e("GETEX", K1, Single),
    e("GETSET", K1, Single),
    e("HDEL", K1, Single),
    e("HEXPIRE", K1, Single),
    e("HEXPIREAT", K1, Single),
    e("HGETDEL", K1, Single),
    e("HGETEX", K1, Single),
    e("HINCRBY", K1, Single),
    e("HINCRBYFLOAT", K1, Single),
    e("HMSET", K1, Single),
    e("HPERSIST", K1, Single),
    e("HPEXPIRE", K1, Single),
    e("HPEXPIREAT", K1, Single),
    e("HSET", K1, Single),
    e("HSETEX", K1, Single),
    e("HSETNX", K1, Single),
    e("INCR", K1, Single),
    e("INCRBY", K1, Single),
    e("INCRBYFLOAT", K1, Single),
    e("LINSERT", K1, Single),
    e("LMOVE", K12, Linked),
    e("LMPOP", NumKeys { at: 1, dest: false }, Linked),
    e("LPOP", K1, Single),
    e("LPUSH", K1, Single),
    e("LPUSHX", K1, Single),
    e("LREM", K1, Single),
    e("LSET", K1, Single),
    e("LTRIM", K1, Single),
    e("MOVE", K1, Db),
    e("MSET", Range(1, -1, 2), Pairs),
    e("MSETEX", NumPairs(1), Linked),
    e("MSETNX", Range(1, -1, 2), Pairs),
    e("MULTI", NO, Control),
    e("PERSIST", K1, Single),
    e("PEXPIRE", K1, Single),
    e("PEXPIREAT", K1, Single),
    e("PFADD", K1, Single),
    e("PFCOUNT", ALL, Linked),
    e("PFDEBUG", Range(2, 2, 1), Single),
    e("PFMERGE", ALL, Linked),
    e("PING", NO, Control),
    e("PSETEX", K1, Single),
    e("PUBLISH", NO, AnyNode),
    e("RENAME", K12, Linked),
    e("RENAMENX", K12, Linked),
    e("REPLCONF", NO, Control),
    e("RESTORE", K1, Single),
    e("RESTORE-ASKING", K1, Single),
    e("RPOP", K1, Single),
    e("RPOPLPUSH", K12, Linked),
    e("RPUSH", K1, Single),
    e("RPUSHX", K1, Single),
    e("SADD", K1, Single),
    e("SCRIPT", Admin, AllNodes),
    e("SDIFFSTORE", ALL, Linked),
    e("SELECT", NO, Db),
    e("SET", K1, Single),
    e("SETBIT", K1, Single),
    e("SETEX", K1, Single),
    e("SETNX", K1, Single),
    e("SETRANGE", K1, Single),
    e("SINTERSTORE", ALL, Linked),
    e("SMOVE", Range(1, 2, 1), Move),
    e("SORT", Sort, Linked),
    e("SPOP", K1, Single),
    e("SPUBLISH", K1, Single),
    e("SREM", K1, Single),
    e("SUNIONSTORE", ALL, Linked),
    e("SWAPDB", NO, Db),
    e("TOUCH", ALL, Independent),
    e("UNLINK", ALL, Independent),
    e("XACK", K1, Single),
    e("XACKDEL", K1, Single),
    e("XADD", K1, Single),
    e("XAUTOCLAIM", K1, Single),
    e("XCLAIM", K1, Single),
    e("XDEL", K1, Single),
    e("XDELEX", K1, Single),
    e("XGROUP", XGroup, Single),
    e("XREAD", Streams, Linked),
    e("XREADGROUP", Streams, Linked),
    e("XSETID", K1, Single),
    e("XTRIM", K1, Single),
    e("ZADD", K1, Single),
    e("ZDIFFSTORE", NumKeys { at: 2, dest: true }, Linked),
    e("ZINCRBY", K1, Single),
    e("ZINTERSTORE", NumKeys { at: 2, dest: true }, Linked),
    e("ZMPOP", NumKeys { at: 1, dest: false }, Linked),
    e("ZPOPMAX", K1, Single),
    e("ZPOPMIN", K1, Single),
    e("ZRANGESTORE", K12, Linked),
    e("ZREM", K1, Single),
    e("ZREMRANGEBYLEX", K1, Single),
    e("ZREMRANGEBYRANK", K1, Single),
    e("ZREMRANGEBYSCORE", K1, Single),
    e("ZUNIONSTORE", NumKeys { at: 2, dest: true }, Linked),
];

/// Longest name in [`TABLE`] (`GEORADIUSBYMEMBER`); longer names are unknown without a lookup.
const MAX_NAME: usize = 17;

/// The table entry for a command name (any case), without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static Entry> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    let up = &mut buf[..name.len()];
    up.copy_from_slice(name);
    up.make_ascii_uppercase();
    let up: &[u8] = up;
    TABLE
        .binary_search_by(|e| e.name.as_bytes().cmp(up))
        .ok()
        .map(|i| &TABLE[i])
}

/// Key positions and category of `cmd`. Allocation-free.
pub fn command_keys(cmd: &Cmd) -> KeySpec {
    let args = &cmd.args;
    let n = args.len();
    if n == 0 {
        return KeySpec::MALFORMED;
    }
    let Some(entry) = lookup(cmd.name()) else {
        return if n > 1 {
            KeySpec::new(Unknown, KeyPositions::one(1))
        } else {
            KeySpec::no_keys(Unknown)
        };
    };
    let cat = entry.category;
    match entry.rule {
        Rule::None => KeySpec::no_keys(cat),
        Range(first, last, step) => {
            let (first, step) = (first as usize, step as usize);
            let last = if last < 0 {
                n as isize + last as isize
            } else {
                last as isize
            };
            if last < first as isize || last as usize >= n {
                return KeySpec::MALFORMED;
            }
            let last = last as usize;
            // With pairs (`MSET k v …`), every key needs its value.
            if step == 2 && !(n - first).is_multiple_of(2) {
                return KeySpec::MALFORMED;
            }
            KeySpec::new(cat, KeyPositions::range(first, last + 1, step))
        }
        NumKeys { at, dest } => {
            let at = at as usize;
            let Some(count) = args.get(at).and_then(|a| parse_usize(a)) else {
                return KeySpec::MALFORMED;
            };
            let first = at + 1;
            if count > n - first.min(n) {
                return KeySpec::MALFORMED;
            }
            let keys = if dest {
                KeyPositions::lead_then(1, first, first + count, 1)
            } else {
                KeyPositions::range(first, first + count, 1)
            };
            KeySpec::new(cat, keys)
        }
        NumPairs(at) => {
            let at = at as usize;
            let Some(count) = args.get(at).and_then(|a| parse_usize(a)) else {
                return KeySpec::MALFORMED;
            };
            let first = at + 1;
            let end = count.checked_mul(2).and_then(|c| c.checked_add(first));
            match end {
                Some(end) if count > 0 && end <= n => {
                    KeySpec::new(cat, KeyPositions::range(first, end, 2))
                }
                _ => KeySpec::MALFORMED,
            }
        }
        Sort => {
            if n < 2 {
                return KeySpec::MALFORMED;
            }
            match sort_store(args) {
                Some(dst) => KeySpec::new(Linked, KeyPositions::lead_then(1, dst, dst + 1, 1)),
                None => KeySpec::new(Single, KeyPositions::one(1)),
            }
        }
        GeoRadius(from) => {
            if n <= from as usize {
                return KeySpec::MALFORMED;
            }
            match georadius_store(args, from as usize) {
                Some(dst) => KeySpec::new(Linked, KeyPositions::lead_then(1, dst, dst + 1, 1)),
                None => KeySpec::new(Single, KeyPositions::one(1)),
            }
        }
        Streams => streams_keys(args, cmd.is("XREADGROUP")),
        CopyR => {
            if n < 3 {
                return KeySpec::MALFORMED;
            }
            let db = args[3..].iter().any(|a| a.eq_ignore_ascii_case(b"DB"));
            KeySpec::new(if db { Db } else { Linked }, KeyPositions::range(1, 3, 1))
        }
        XGroup => match args.get(1) {
            Some(sub) if sub.eq_ignore_ascii_case(b"HELP") => KeySpec::no_keys(AnyNode),
            Some(_) if n > 2 => KeySpec::new(Single, KeyPositions::one(2)),
            _ => KeySpec::MALFORMED,
        },
        Admin => {
            let Some(sub) = args.get(1) else {
                return KeySpec::MALFORMED;
            };
            let writes: &[&[u8]] = if cmd.is("FUNCTION") {
                &[b"LOAD", b"DELETE", b"FLUSH", b"RESTORE"]
            } else {
                &[b"LOAD", b"FLUSH"]
            };
            if writes.iter().any(|w| sub.eq_ignore_ascii_case(w)) {
                KeySpec::no_keys(AllNodes)
            } else {
                KeySpec::no_keys(AnyNode)
            }
        }
    }
}

fn parse_usize(b: &[u8]) -> Option<usize> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Index of the `STORE` destination of `SORT key [BY p] [LIMIT o c] [GET p …] [ASC|DESC] [ALPHA]
/// [STORE dst]`, skipping option values (a `GET` pattern may be the word `STORE`).
fn sort_store(args: &[bytes::Bytes]) -> Option<usize> {
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        let a = &args[i];
        let skip = if a.eq_ignore_ascii_case(b"BY") || a.eq_ignore_ascii_case(b"GET") {
            1
        } else if a.eq_ignore_ascii_case(b"LIMIT") {
            2
        } else if a.eq_ignore_ascii_case(b"STORE") && i + 1 < args.len() {
            store = Some(i + 1);
            1
        } else {
            0
        };
        i += 1 + skip;
    }
    store
}

/// Index of the `STORE`/`STOREDIST` destination of a `GEORADIUS…` (the last one, as Redis does),
/// scanning options from `from` (`COUNT n` skipped).
fn georadius_store(args: &[bytes::Bytes], from: usize) -> Option<usize> {
    let mut store = None;
    let mut i = from;
    while i < args.len() {
        let a = &args[i];
        let skip = if a.eq_ignore_ascii_case(b"COUNT") {
            1
        } else if (a.eq_ignore_ascii_case(b"STORE") || a.eq_ignore_ascii_case(b"STOREDIST"))
            && i + 1 < args.len()
        {
            store = Some(i + 1);
            1
        } else {
            0
        };
        i += 1 + skip;
    }
    store
}

/// Keys of `XREAD [COUNT n] [BLOCK ms] STREAMS k… id…` and `XREADGROUP GROUP g c [COUNT n]
/// [BLOCK ms] [NOACK] STREAMS k… id…` (never propagated: Redis sends `XCLAIM`s instead).
fn streams_keys(args: &[bytes::Bytes], group: bool) -> KeySpec {
    let mut i = if group { 4 } else { 1 };
    while i < args.len() {
        let a = &args[i];
        if a.eq_ignore_ascii_case(b"STREAMS") {
            let rest = args.len() - i - 1;
            if rest == 0 || !rest.is_multiple_of(2) {
                return KeySpec::MALFORMED;
            }
            return KeySpec::new(Linked, KeyPositions::range(i + 1, i + 1 + rest / 2, 1));
        }
        i += if a.eq_ignore_ascii_case(b"COUNT") || a.eq_ignore_ascii_case(b"BLOCK") {
            2
        } else {
            1
        };
    }
    KeySpec::MALFORMED
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;

    fn spec(c: Cmd) -> (Category, Vec<usize>) {
        let s = command_keys(&c);
        assert_eq!(s.keys.len(), s.keys.to_vec().len());
        (s.category, s.keys.to_vec())
    }

    #[test]
    fn table_is_sorted_upper_case_and_unique() {
        for w in TABLE.windows(2) {
            assert!(w[0].name < w[1].name, "{} !< {}", w[0].name, w[1].name);
        }
        for e in TABLE {
            assert_eq!(e.name, e.name.to_ascii_uppercase());
            assert!(e.name.len() <= MAX_NAME);
            assert!(lookup(e.name.to_ascii_lowercase().as_bytes()).is_some());
        }
        assert!(lookup(b"GEORADIUSBYMEMBERX").is_none());
        assert!(lookup(b"").is_none());
    }

    #[test]
    fn single_key_commands() {
        for name in [
            "SET",
            "set",
            "SETEX",
            "PSETEX",
            "SETNX",
            "APPEND",
            "INCRBYFLOAT",
            "GETDEL",
            "GETEX",
            "PEXPIREAT",
            "PERSIST",
            "RESTORE",
            "HSET",
            "HPEXPIREAT",
            "HSETEX",
            "LPUSH",
            "LPOP",
            "LSET",
            "SADD",
            "SREM",
            "SPOP",
            "ZADD",
            "ZPOPMIN",
            "ZREMRANGEBYSCORE",
            "GEOADD",
            "PFADD",
            "SETBIT",
            "BITFIELD",
            "XADD",
            "XDEL",
            "XTRIM",
            "XSETID",
            "XCLAIM",
            "XAUTOCLAIM",
            "XACK",
            "DELIFEQ",
            "SPUBLISH",
        ] {
            assert_eq!(spec(cmd![name, "k", "a", "b"]), (Single, vec![1]), "{name}");
        }
        assert_eq!(
            spec(cmd!["XGROUP", "CREATE", "s", "g", "$"]),
            (Single, vec![2])
        );
        assert_eq!(spec(cmd!["XGROUP", "help"]), (AnyNode, vec![]));
        assert_eq!(spec(cmd!["PFDEBUG", "TODENSE", "h"]), (Single, vec![2]));
        assert_eq!(spec(cmd!["SET"]), (Malformed, vec![]));
        assert_eq!(spec(cmd!["XGROUP", "CREATE"]), (Malformed, vec![]));
    }

    #[test]
    fn multi_key_commands() {
        for name in ["DEL", "UNLINK", "EXISTS", "TOUCH"] {
            assert_eq!(
                spec(cmd![name, "a", "b", "c"]),
                (Independent, vec![1, 2, 3])
            );
            assert_eq!(spec(cmd![name]), (Malformed, vec![]));
        }
        assert_eq!(spec(cmd!["MSET", "a", "1", "b", "2"]), (Pairs, vec![1, 3]));
        assert_eq!(spec(cmd!["MSETNX", "a", "1"]), (Pairs, vec![1]));
        assert_eq!(spec(cmd!["MSET", "a", "1", "b"]), (Malformed, vec![]));
        assert_eq!(spec(cmd!["MSET"]), (Malformed, vec![]));
        assert_eq!(spec(cmd!["SMOVE", "s", "d", "m"]), (Move, vec![1, 2]));
        for name in [
            "RENAME",
            "RENAMENX",
            "LMOVE",
            "RPOPLPUSH",
            "BRPOPLPUSH",
            "GEOSEARCHSTORE",
            "ZRANGESTORE",
        ] {
            assert_eq!(
                spec(cmd![name, "a", "b", "x"]),
                (Linked, vec![1, 2]),
                "{name}"
            );
        }
        assert_eq!(spec(cmd!["RENAME", "a"]), (Malformed, vec![]));
        assert_eq!(
            spec(cmd!["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"]),
            (Linked, vec![1, 2])
        );
        for name in ["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE", "PFMERGE"] {
            assert_eq!(
                spec(cmd![name, "d", "a", "b"]),
                (Linked, vec![1, 2, 3]),
                "{name}"
            );
        }
        assert_eq!(spec(cmd!["PFCOUNT", "h"]), (Linked, vec![1]));
        assert_eq!(
            spec(cmd!["BITOP", "AND", "d", "a", "b"]),
            (Linked, vec![2, 3, 4])
        );
        for name in ["ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"] {
            assert_eq!(
                spec(cmd![name, "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
                (Linked, vec![1, 3, 4]),
                "{name}"
            );
            assert_eq!(spec(cmd![name, "d", "3", "a", "b"]), (Malformed, vec![]));
            assert_eq!(spec(cmd![name, "d", "x", "a"]), (Malformed, vec![]));
        }
        assert_eq!(spec(cmd!["BLPOP", "a", "b", "0"]), (Linked, vec![1, 2]));
        assert_eq!(spec(cmd!["BZPOPMAX", "a", "0"]), (Linked, vec![1]));
        assert_eq!(spec(cmd!["BLPOP", "0"]), (Malformed, vec![]));
        assert_eq!(
            spec(cmd!["LMPOP", "2", "a", "b", "LEFT"]),
            (Linked, vec![2, 3])
        );
        assert_eq!(
            spec(cmd!["BLMPOP", "0", "1", "a", "LEFT"]),
            (Linked, vec![3])
        );
        assert_eq!(spec(cmd!["ZMPOP", "1", "z", "MIN"]), (Linked, vec![2]));
        assert_eq!(
            spec(cmd!["BZMPOP", "0", "2", "y", "z", "MIN"]),
            (Linked, vec![3, 4])
        );
    }

    #[test]
    fn commands_with_options() {
        assert_eq!(spec(cmd!["COPY", "a", "b"]), (Linked, vec![1, 2]));
        assert_eq!(
            spec(cmd!["COPY", "a", "b", "REPLACE"]),
            (Linked, vec![1, 2])
        );
        assert_eq!(spec(cmd!["COPY", "a", "b", "db", "3"]), (Db, vec![1, 2]));
        assert_eq!(spec(cmd!["COPY", "a"]), (Malformed, vec![]));
        assert_eq!(spec(cmd!["SORT", "l"]), (Single, vec![1]));
        assert_eq!(
            spec(cmd![
                "SORT", "l", "BY", "w_*", "LIMIT", "0", "5", "GET", "STORE", "ALPHA", "store", "d"
            ]),
            (Linked, vec![1, 11])
        );
        assert_eq!(spec(cmd!["SORT", "l", "GET", "STORE"]), (Single, vec![1]));
        assert_eq!(
            spec(cmd![
                "GEORADIUS",
                "g",
                "1",
                "2",
                "5",
                "km",
                "COUNT",
                "3",
                "ANY",
                "STORE",
                "d"
            ]),
            (Linked, vec![1, 10])
        );
        assert_eq!(
            spec(cmd![
                "GEORADIUS",
                "g",
                "1",
                "2",
                "5",
                "km",
                "STORE",
                "d",
                "STOREDIST",
                "e"
            ]),
            (Linked, vec![1, 9])
        );
        assert_eq!(
            spec(cmd![
                "GEORADIUSBYMEMBER",
                "g",
                "m",
                "5",
                "km",
                "STOREDIST",
                "d"
            ]),
            (Linked, vec![1, 6])
        );
        assert_eq!(
            spec(cmd!["GEORADIUS", "g", "1", "2", "5", "km", "WITHDIST"]),
            (Single, vec![1])
        );
        assert_eq!(
            spec(cmd![
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "COUNT",
                "5",
                "STREAMS",
                "a",
                "b",
                ">",
                ">"
            ]),
            (Linked, vec![7, 8])
        );
        assert_eq!(
            spec(cmd!["XREAD", "BLOCK", "0", "STREAMS", "a", "$"]),
            (Linked, vec![4])
        );
        assert_eq!(spec(cmd!["XREAD", "STREAMS", "a"]), (Malformed, vec![]));
    }

    #[test]
    fn scripts() {
        assert_eq!(spec(cmd!["EVAL", "return 1", "0"]), (Script, vec![]));
        assert_eq!(
            spec(cmd!["EVAL", "s", "2", "a", "b", "x"]),
            (Script, vec![3, 4])
        );
        assert_eq!(spec(cmd!["evalsha", "abc", "1", "a"]), (Script, vec![3]));
        assert_eq!(spec(cmd!["FCALL", "f", "1", "a", "x"]), (Script, vec![3]));
        assert_eq!(spec(cmd!["EVAL", "s", "2", "a"]), (Malformed, vec![]));
        assert_eq!(spec(cmd!["EVAL", "s", "-1"]), (Malformed, vec![]));
        assert_eq!(spec(cmd!["EVAL", "s"]), (Malformed, vec![]));
    }

    #[test]
    fn keyless_commands() {
        for c in [
            cmd!["FLUSHALL"],
            cmd!["FLUSHALL", "ASYNC"],
            cmd!["FLUSHDB"],
            cmd!["FUNCTION", "LOAD", "#!lua name=x\n"],
            cmd!["FUNCTION", "delete", "x"],
            cmd!["FUNCTION", "FLUSH"],
            cmd!["FUNCTION", "RESTORE", "payload"],
            cmd!["SCRIPT", "LOAD", "return 1"],
            cmd!["script", "flush"],
        ] {
            assert_eq!(spec(c.clone()), (AllNodes, vec![]), "{c:?}");
        }
        assert_eq!(spec(cmd!["FUNCTION", "LIST"]), (AnyNode, vec![]));
        assert_eq!(spec(cmd!["SCRIPT", "EXISTS", "abc"]), (AnyNode, vec![]));
        assert_eq!(spec(cmd!["SCRIPT"]), (Malformed, vec![]));
        assert_eq!(spec(cmd!["PUBLISH", "ch", "msg"]), (AnyNode, vec![]));
        assert_eq!(spec(cmd!["SELECT", "3"]), (Db, vec![]));
        assert_eq!(spec(cmd!["SWAPDB", "0", "1"]), (Db, vec![]));
        assert_eq!(spec(cmd!["MOVE", "k", "1"]), (Db, vec![1]));
        for name in ["MULTI", "EXEC", "DISCARD", "PING", "REPLCONF"] {
            assert_eq!(spec(cmd![name]), (Control, vec![]));
        }
    }

    #[test]
    fn unknown_commands_take_the_first_argument() {
        assert_eq!(spec(cmd!["JSON.SET", "doc", "$", "{}"]), (Unknown, vec![1]));
        assert_eq!(
            spec(cmd!["AVERYLONGCOMMANDNAMEINDEED", "k"]),
            (Unknown, vec![1])
        );
        assert_eq!(spec(cmd!["FOO"]), (Unknown, vec![]));
        assert_eq!(spec(Cmd { args: vec![] }), (Malformed, vec![]));
    }

    #[test]
    fn positions_arithmetic() {
        let p = KeyPositions::lead_then(1, 3, 6, 1);
        assert_eq!(p.to_vec(), vec![1, 3, 4, 5]);
        assert_eq!(p.len(), 4);
        let p = KeyPositions::range(1, 6, 2);
        assert_eq!(p.to_vec(), vec![1, 3, 5]);
        assert_eq!(p.len(), 3);
        assert!(KeyPositions::NONE.is_empty());
        assert_eq!(KeyPositions::one(2).first(), Some(2));
    }
}
