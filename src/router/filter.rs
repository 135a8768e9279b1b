//! What is synced: the database selection (`sync.dbs`), key filters (prefix and regex include /
//! exclude lists) and the command deny-list (`sync.filter`). Pure code, no I/O: the full sync asks
//! [`Filter::keep_key`] for each RDB key; the command stream passes every command through
//! [`Filter::apply`], which keeps it, drops it, reduces it to its kept keys, or asks for keys to
//! be copied from the source (the caller runs the repair path, [`crate::sink::repair`]).
//!
//! A key is *kept* when its database is selected (no `dbs`: all are), it starts with an include
//! prefix or matches an include regex (no include list: every key), and it matches no exclude
//! prefix or regex. Keys starting with one of the [`Filter::always`] prefixes (shardsync's own
//! heartbeat key) are always kept. Rules for commands of the stream (documented in the README,
//! each counted in `shardsync_filtered_commands_total{rule}`):
//! - denied command (`deny_commands`, by name, or `NAME SUBCOMMAND`) → dropped (`denied`);
//! - every key kept → unchanged; no key kept (or an unselected database) → dropped (`db`, `key`);
//! - some keys kept: `DEL`/`UNLINK`/`TOUCH`/`EXISTS` and `MSET`/`MSETNX` (as `MSET`) are reduced
//!   to their kept keys, `SMOVE` to the `SREM` or `SADD` of its kept side (`split`); any other
//!   command (`RENAME`, `COPY`, `LMOVE`, `*STORE`, scripts by their declared keys…) is not sent
//!   and each of its kept keys is copied from the source instead (`repair`);
//! - `FLUSHDB` of an unselected database is dropped; `FLUSHALL` with a database selection
//!   becomes a `FLUSHDB` of each selected database (`flushall_per_db`). Key filters do not narrow
//!   flushes: deny them to protect target keys outside the filter;
//! - `MOVE key db` / `COPY src dst DB db` between selected databases pass with the database
//!   argument mapped by `db_map`; a `MOVE` out of the selection becomes a `DEL` of the key
//!   (`move_out`); a `MOVE`/`COPY` into the selection copies the key from the source (`repair`);
//! - `SWAPDB a b` of two selected databases passes (mapped); of two unselected ones is dropped;
//!   of a selected and an unselected one cannot be applied (the selected database now holds data
//!   shardsync never read): it is refused and the shard is flagged until a full sync
//!   (`swapdb_refused`).
//! - `MULTI`/`EXEC`, `FUNCTION`, `SCRIPT`, `PUBLISH` and scripts without declared keys pass.

use std::collections::BTreeSet;

use bytes::Bytes;
use regex::bytes::RegexSet;
use serde::Deserialize;

use super::keys::{Category, command_keys};
use crate::cmd::{Cmd, DbCmd};

/// The `[sync.filter]` table (and the matching flags).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    #[serde(default)]
    pub include_prefixes: Vec<String>,
    #[serde(default)]
    pub exclude_prefixes: Vec<String>,
    #[serde(default)]
    pub include_regex: Vec<String>,
    #[serde(default)]
    pub exclude_regex: Vec<String>,
    /// Command names (`FLUSHALL`) or `NAME SUBCOMMAND` (`FUNCTION FLUSH`) never replicated.
    #[serde(default)]
    pub deny_commands: Vec<String>,
}

impl FilterSpec {
    /// Adds `other`'s entries (the command line extends the file).
    pub fn extend(&mut self, other: FilterSpec) {
        self.include_prefixes.extend(other.include_prefixes);
        self.exclude_prefixes.extend(other.exclude_prefixes);
        self.include_regex.extend(other.include_regex);
        self.exclude_regex.extend(other.exclude_regex);
        self.deny_commands.extend(other.deny_commands);
    }
}

/// A target's own `filter` table (`[[target]]` … `[target.filter]`): each list it sets replaces
/// that list of `[sync.filter]` for this target; the lists it leaves out are the shared ones.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilterOverride {
    pub include_prefixes: Option<Vec<String>>,
    pub exclude_prefixes: Option<Vec<String>>,
    pub include_regex: Option<Vec<String>>,
    pub exclude_regex: Option<Vec<String>>,
    pub deny_commands: Option<Vec<String>>,
}

impl FilterOverride {
    /// `base` with this table's lists in place of its own.
    pub fn over(&self, base: &FilterSpec) -> FilterSpec {
        let pick = |own: &Option<Vec<String>>, shared: &Vec<String>| {
            own.clone().unwrap_or_else(|| shared.clone())
        };
        FilterSpec {
            include_prefixes: pick(&self.include_prefixes, &base.include_prefixes),
            exclude_prefixes: pick(&self.exclude_prefixes, &base.exclude_prefixes),
            include_regex: pick(&self.include_regex, &base.include_regex),
            exclude_regex: pick(&self.exclude_regex, &base.exclude_regex),
            deny_commands: pick(&self.deny_commands, &base.deny_commands),
        }
    }
}

/// The compiled selection and filters. The default keeps everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    dbs: Option<BTreeSet<u32>>,
    include_prefixes: Vec<Bytes>,
    exclude_prefixes: Vec<Bytes>,
    include_regex: Option<RegexSet>,
    exclude_regex: Option<RegexSet>,
    /// Upper-case `NAME` or `NAME SUB`.
    deny: Vec<String>,
    /// Key prefixes kept whatever the rules (shardsync's own keys).
    always: Vec<Bytes>,
}

/// Two filters are equal when they select and filter alike (regexes by their patterns): targets
/// with equal filters share one filtered and converted stream (see [`crate::sink::fanout`]).
impl PartialEq for Filter {
    fn eq(&self, o: &Filter) -> bool {
        let pats = |r: &Option<RegexSet>| r.as_ref().map(|r| r.patterns().to_vec());
        self.dbs == o.dbs
            && self.include_prefixes == o.include_prefixes
            && self.exclude_prefixes == o.exclude_prefixes
            && pats(&self.include_regex) == pats(&o.include_regex)
            && pats(&self.exclude_regex) == pats(&o.exclude_regex)
            && self.deny == o.deny
            && self.always == o.always
    }
}

/// What [`Filter::apply`] did, counted per rule; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    Db,
    Key,
    Denied,
    Split,
    Repair,
    FlushallPerDb,
    MoveOut,
    SwapdbRefused,
}

impl Rule {
    pub const ALL: [Rule; 8] = [
        Rule::Db,
        Rule::Key,
        Rule::Denied,
        Rule::Split,
        Rule::Repair,
        Rule::FlushallPerDb,
        Rule::MoveOut,
        Rule::SwapdbRefused,
    ];
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Db => "db",
            Rule::Key => "key",
            Rule::Denied => "denied",
            Rule::Split => "split",
            Rule::Repair => "repair",
            Rule::FlushallPerDb => "flushall_per_db",
            Rule::MoveOut => "move_out",
            Rule::SwapdbRefused => "swapdb_refused",
        }
    }
}

/// Side effects of filtering a run of commands, for the caller to act on.
#[derive(Debug, Default)]
pub struct Effects {
    /// `(source db, key)` to copy from the source (the repair path).
    pub repairs: Vec<(u32, Bytes)>,
    /// Commands that cannot be applied at all: the shard needs a full sync (a sentence each).
    pub refused: Vec<String>,
    /// Commands per rule.
    pub counts: [u64; 8],
}

impl Effects {
    fn count(&mut self, r: Rule) {
        self.counts[r as usize] += 1;
    }
}

/// A config error: the setting and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {why}")]
pub struct FilterError {
    pub key: String,
    pub why: String,
}

fn regex_set(key: &str, v: &[String]) -> Result<Option<RegexSet>, FilterError> {
    if v.is_empty() {
        return Ok(None);
    }
    RegexSet::new(v).map(Some).map_err(|e| FilterError {
        key: key.to_string(),
        why: format!("not a regular expression: {e}"),
    })
}

/// The database number in argument `i` of `cmd`.
fn db_arg(cmd: &Cmd, i: usize) -> Option<u32> {
    cmd.args.get(i).and_then(|a| parse_db(a))
}

/// Where source databases `a` and `b` land on the target: `None` when both land in one target
/// database (a move between them is a no-op there), else their target numbers (`None`: not
/// mapped).
fn land(map: &dyn Fn(u32) -> Option<u32>, a: u32, b: u32) -> Option<(Option<u32>, Option<u32>)> {
    match (map(a), map(b)) {
        (Some(x), Some(y)) if x == y => None,
        p => Some(p),
    }
}

fn parse_db(a: &[u8]) -> Option<u32> {
    std::str::from_utf8(a).ok()?.parse().ok()
}

impl Filter {
    /// Compiles the settings; `dbs: None` selects every database.
    pub fn new(dbs: Option<Vec<u32>>, spec: &FilterSpec) -> Result<Filter, FilterError> {
        if dbs.as_ref().is_some_and(|d| d.is_empty()) {
            return Err(FilterError {
                key: "sync.dbs".into(),
                why: "selects no database (leave it out to sync every database)".into(),
            });
        }
        let prefixes = |v: &[String]| v.iter().map(|p| Bytes::from(p.clone())).collect();
        Ok(Filter {
            dbs: dbs.map(|d| d.into_iter().collect()),
            include_prefixes: prefixes(&spec.include_prefixes),
            exclude_prefixes: prefixes(&spec.exclude_prefixes),
            include_regex: regex_set("sync.filter.include_regex", &spec.include_regex)?,
            exclude_regex: regex_set("sync.filter.exclude_regex", &spec.exclude_regex)?,
            deny: spec
                .deny_commands
                .iter()
                .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
                .map(|c| c.to_ascii_uppercase())
                .filter(|c| !c.is_empty())
                .collect(),
            always: Vec::new(),
        })
    }

    /// Keys starting with `prefix` are kept whatever the rules (the heartbeat key).
    pub fn always_keep(mut self, prefix: &[u8]) -> Filter {
        if !prefix.is_empty() {
            self.always.push(Bytes::copy_from_slice(prefix));
        }
        self
    }

    /// True when nothing is filtered (the stream path skips [`Filter::apply`]).
    pub fn is_noop(&self) -> bool {
        self.dbs.is_none() && !self.has_key_rules() && self.deny.is_empty()
    }

    /// True when include or exclude lists are set.
    pub fn has_key_rules(&self) -> bool {
        !self.include_prefixes.is_empty()
            || !self.exclude_prefixes.is_empty()
            || self.include_regex.is_some()
            || self.exclude_regex.is_some()
    }

    /// The first include prefix, if any (a key that passes the include lists).
    pub fn include_prefix(&self) -> Option<&str> {
        self.include_prefixes
            .first()
            .and_then(|p| std::str::from_utf8(p).ok())
    }

    /// One line for the precheck table: what is selected and filtered.
    pub fn describe(&self) -> String {
        let list = |v: &[Bytes]| {
            v.iter()
                .map(crate::escape::quoted)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut parts = Vec::new();
        match &self.dbs {
            Some(d) => parts.push(format!("databases {:?}", d.iter().collect::<Vec<_>>())),
            None => parts.push("every database".into()),
        }
        if !self.include_prefixes.is_empty() {
            parts.push(format!("include prefixes {}", list(&self.include_prefixes)));
        }
        if let Some(r) = &self.include_regex {
            parts.push(format!("include regex {}", r.patterns().join(" ")));
        }
        if !self.exclude_prefixes.is_empty() {
            parts.push(format!("exclude prefixes {}", list(&self.exclude_prefixes)));
        }
        if let Some(r) = &self.exclude_regex {
            parts.push(format!("exclude regex {}", r.patterns().join(" ")));
        }
        if !self.deny.is_empty() {
            parts.push(format!("denied commands {}", self.deny.join(", ")));
        }
        if !self.has_key_rules() {
            parts.push("every key".into());
        }
        parts.join("; ")
    }

    /// The selected databases (`None`: all).
    pub fn dbs(&self) -> Option<&BTreeSet<u32>> {
        self.dbs.as_ref()
    }

    pub fn db_selected(&self, db: u32) -> bool {
        self.dbs.as_ref().is_none_or(|d| d.contains(&db))
    }

    /// The rule that drops a command on `dbs`: a key rule when any of them is selected, else
    /// the database selection.
    fn dropped_by(&self, dbs: &[u32]) -> Rule {
        if dbs.iter().any(|&d| self.db_selected(d)) {
            Rule::Key
        } else {
            Rule::Db
        }
    }

    /// The key rules alone (database aside).
    pub fn key_passes(&self, key: &[u8]) -> bool {
        let included = (self.include_prefixes.is_empty() && self.include_regex.is_none())
            || self.include_prefixes.iter().any(|p| key.starts_with(p))
            || self.include_regex.as_ref().is_some_and(|r| r.is_match(key));
        included
            && !self.exclude_prefixes.iter().any(|p| key.starts_with(p))
            && !self.exclude_regex.as_ref().is_some_and(|r| r.is_match(key))
    }

    fn always(&self, key: &[u8]) -> bool {
        self.always.iter().any(|p| key.starts_with(p))
    }

    /// Whether `key` of source database `db` is synced.
    pub fn keep_key(&self, db: u32, key: &[u8]) -> bool {
        self.always(key) || (self.db_selected(db) && self.key_passes(key))
    }

    /// Whether the command is on the deny-list (by name, or name and subcommand).
    pub fn denied(&self, cmd: &Cmd) -> bool {
        if self.deny.is_empty() {
            return false;
        }
        let name = cmd.name();
        self.deny.iter().any(|d| match d.split_once(' ') {
            None => name.eq_ignore_ascii_case(d.as_bytes()),
            Some((n, sub)) => {
                name.eq_ignore_ascii_case(n.as_bytes())
                    && cmd
                        .args
                        .get(1)
                        .is_some_and(|a| a.eq_ignore_ascii_case(sub.as_bytes()))
            }
        })
    }

    /// Filters one command of the stream into `out` (zero or more commands, each with its
    /// source database); `map(db)` is the target database of a source database (for the
    /// database arguments of `MOVE`, `COPY … DB`, `SWAPDB`).
    pub fn apply(
        &self,
        dc: DbCmd,
        map: &dyn Fn(u32) -> Option<u32>,
        out: &mut Vec<DbCmd>,
        fx: &mut Effects,
    ) {
        let DbCmd { db, cmd } = dc;
        if self.denied(&cmd) {
            fx.count(Rule::Denied);
            return;
        }
        let spec = command_keys(&cmd);
        match spec.category {
            Category::Control | Category::AnyNode | Category::Malformed => {
                out.push(DbCmd { db, cmd });
            }
            Category::AllNodes => self.flush(db, cmd, out, fx),
            _ if cmd.is("COPY") => self.copy(db, cmd, DbOut { map, out, fx }),
            Category::Db if cmd.is("MOVE") => self.move_key(db, cmd, DbOut { map, out, fx }),
            Category::Db if cmd.is("SWAPDB") => self.swapdb(db, cmd, DbOut { map, out, fx }),
            Category::Db => out.push(DbCmd { db, cmd }),
            _ => {
                let n = spec.keys.len();
                if n == 0 && !self.db_selected(db) {
                    fx.count(Rule::Db);
                    return;
                }
                let kept = spec
                    .keys
                    .iter()
                    .filter(|&i| self.keep_key(db, &cmd.args[i]))
                    .count();
                if kept == n {
                    out.push(DbCmd { db, cmd });
                    return;
                }
                if kept == 0 {
                    fx.count(self.dropped_by(&[db]));
                    return;
                }
                let keys: Vec<Bytes> = spec
                    .keys
                    .iter()
                    .map(|i| cmd.args[i].clone())
                    .filter(|k| self.keep_key(db, k))
                    .collect();
                match super::split::split_by_verdict(cmd, spec, |k| self.keep_key(db, k)) {
                    Ok(parts) => {
                        fx.count(Rule::Split);
                        out.extend(parts.into_iter().map(|cmd| DbCmd { db, cmd }));
                    }
                    Err(_) => {
                        fx.count(Rule::Repair);
                        for k in keys {
                            if !fx.repairs.iter().any(|(d, x)| *d == db && *x == k) {
                                fx.repairs.push((db, k));
                            }
                        }
                    }
                }
            }
        }
    }

    fn flush(&self, db: u32, cmd: Cmd, out: &mut Vec<DbCmd>, fx: &mut Effects) {
        if cmd.is("FLUSHDB") && !self.db_selected(db) {
            fx.count(Rule::Db);
            return;
        }
        match (&self.dbs, cmd.is("FLUSHALL")) {
            (Some(dbs), true) => {
                fx.count(Rule::FlushallPerDb);
                let mut args = cmd.args;
                args[0] = Bytes::from_static(b"FLUSHDB");
                for &d in dbs {
                    out.push(DbCmd {
                        db: d,
                        cmd: Cmd { args: args.clone() },
                    });
                }
            }
            _ => out.push(DbCmd { db, cmd }),
        }
    }

    /// `MOVE key db`.
    fn move_key(&self, db: u32, mut cmd: Cmd, e: DbOut<'_>) {
        let (Some(key), Some(to)) = (cmd.args.get(1).cloned(), db_arg(&cmd, 2)) else {
            e.out.push(DbCmd { db, cmd });
            return;
        };
        match (self.keep_key(db, &key), self.keep_key(to, &key)) {
            // Both databases land in one target database: the key stays where it is.
            (true, true) => {
                if let Some((_, t)) = land(e.map, db, to) {
                    if let Some(b) = t {
                        cmd.args[2] = crate::cmd::arg(b);
                    }
                    e.out.push(DbCmd { db, cmd });
                }
            }
            (true, false) => {
                e.fx.count(Rule::MoveOut);
                e.out.push(DbCmd {
                    db,
                    cmd: crate::cmd!["DEL", key],
                });
            }
            (false, true) => {
                e.fx.count(Rule::Repair);
                e.fx.repairs.push((to, key));
            }
            (false, false) => e.fx.count(self.dropped_by(&[db, to])),
        }
    }

    /// `COPY src dst [DB n] [REPLACE]`.
    fn copy(&self, db: u32, mut cmd: Cmd, e: DbOut<'_>) {
        if cmd.args.len() < 3 {
            e.out.push(DbCmd { db, cmd });
            return;
        }
        let db_at = (3..cmd.args.len().saturating_sub(1))
            .find(|&i| cmd.args[i].eq_ignore_ascii_case(b"DB"));
        let to = match db_at {
            Some(i) => match parse_db(&cmd.args[i + 1]) {
                Some(d) => d,
                None => {
                    e.out.push(DbCmd { db, cmd });
                    return;
                }
            },
            None => db,
        };
        let (src, dst) = (cmd.args[1].clone(), cmd.args[2].clone());
        // Only the destination changes: it decides.
        if !self.keep_key(to, &dst) {
            e.fx.count(self.dropped_by(&[to]));
            return;
        }
        if !self.keep_key(db, &src) {
            e.fx.count(Rule::Repair);
            e.fx.repairs.push((to, dst));
            return;
        }
        if let Some(i) = db_at {
            match land(e.map, db, to) {
                None => {
                    cmd.args.drain(i..i + 2);
                }
                Some((_, Some(b))) => cmd.args[i + 1] = crate::cmd::arg(b),
                Some(_) => {}
            }
        }
        e.out.push(DbCmd { db, cmd });
    }

    /// `SWAPDB a b`.
    fn swapdb(&self, db: u32, mut cmd: Cmd, e: DbOut<'_>) {
        let (Some(a), Some(b)) = (db_arg(&cmd, 1), db_arg(&cmd, 2)) else {
            e.out.push(DbCmd { db, cmd });
            return;
        };
        match (self.db_selected(a), self.db_selected(b)) {
            (true, true) => {
                if let Some(p) = land(e.map, a, b) {
                    if let (Some(x), Some(y)) = p {
                        cmd.args[1] = crate::cmd::arg(x);
                        cmd.args[2] = crate::cmd::arg(y);
                    }
                    e.out.push(DbCmd { db, cmd });
                }
            }
            (false, false) => e.fx.count(Rule::Db),
            _ => {
                e.fx.count(Rule::SwapdbRefused);
                e.fx.refused.push(format!(
                    "SWAPDB {a} {b} swapped a selected and an unselected database (sync.dbs): the selected one now holds data shardsync never read; run a full sync (remove the checkpoint in the state directory and restart)"
                ));
            }
        }
    }
}

/// What the database commands' filters (`MOVE`, `COPY`, `SWAPDB`) work with: the target
/// database of a source database, where kept commands go, and the effects they count.
struct DbOut<'a> {
    map: &'a dyn Fn(u32) -> Option<u32>,
    out: &'a mut Vec<DbCmd>,
    fx: &'a mut Effects,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;

    fn filter(dbs: Option<Vec<u32>>, f: impl FnOnce(&mut FilterSpec)) -> Filter {
        let mut spec = FilterSpec::default();
        f(&mut spec);
        Filter::new(dbs, &spec).unwrap()
    }

    fn run(f: &Filter, db: u32, c: Cmd) -> (Vec<DbCmd>, Effects) {
        let mut out = Vec::new();
        let mut fx = Effects::default();
        let map = |d: u32| Some(if d == 3 { 0 } else { d });
        f.apply(DbCmd { db, cmd: c }, &map, &mut out, &mut fx);
        (out, fx)
    }

    fn cmds(v: &[DbCmd]) -> Vec<(u32, Cmd)> {
        v.iter().map(|d| (d.db, d.cmd.clone())).collect()
    }

    #[test]
    fn key_rules() {
        let f = filter(None, |s| {
            s.include_prefixes = vec!["user:".into()];
            s.include_regex = vec!["^order:[0-9]+$".into()];
            s.exclude_prefixes = vec!["user:tmp:".into()];
        })
        .always_keep(b"shardsync:heartbeat");
        assert!(f.keep_key(5, b"user:1"));
        assert!(f.keep_key(0, b"order:12"));
        assert!(!f.keep_key(0, b"order:12x"));
        assert!(!f.keep_key(0, b"user:tmp:1"));
        assert!(!f.keep_key(0, b"other"));
        assert!(f.keep_key(0, b"shardsync:heartbeat"));
        let e = Filter::new(
            None,
            &FilterSpec {
                exclude_regex: vec!["(".into()],
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sync.filter.exclude_regex"), "{e}");
        assert!(Filter::new(Some(vec![]), &FilterSpec::default()).is_err());
        assert!(Filter::default().is_noop());
        let d = filter(None, |s| {
            s.deny_commands = vec!["function  flush".into(), "FlushAll".into()]
        });
        assert!(d.denied(&cmd!["FUNCTION", "FLUSH", "ASYNC"]));
        assert!(d.denied(&cmd!["flushall"]));
        assert!(!d.denied(&cmd!["FUNCTION", "LOAD", "code"]));
        assert!(!d.denied(&cmd!["FLUSHDB"]));
    }

    #[test]
    fn multi_key_commands_split_or_repair() {
        let f = filter(None, |s| s.exclude_prefixes = vec!["x".into()]);
        let (o, fx) = run(&f, 0, cmd!["DEL", "a", "x1", "b"]);
        assert_eq!(cmds(&o), [(0, cmd!["DEL", "a", "b"])]);
        assert_eq!(fx.counts[Rule::Split as usize], 1);
        let (o, _) = run(&f, 0, cmd!["MSETNX", "x1", "1", "a", "2"]);
        assert_eq!(cmds(&o), [(0, cmd!["MSET", "a", "2"])]);
        let (o, _) = run(&f, 0, cmd!["SMOVE", "x1", "a", "m"]);
        assert_eq!(cmds(&o), [(0, cmd!["SADD", "a", "m"])]);
        let (o, fx) = run(&f, 0, cmd!["RENAME", "a", "x1"]);
        assert!(o.is_empty());
        assert_eq!(fx.repairs, [(0, bytes::Bytes::from("a"))]);
        let (o, fx) = run(&f, 0, cmd!["EVAL", "s", "2", "x1", "b", "arg"]);
        assert!(o.is_empty());
        assert_eq!(fx.repairs, [(0, bytes::Bytes::from("b"))]);
        let (o, fx) = run(&f, 0, cmd!["DEL", "x1", "x2"]);
        assert!(o.is_empty() && fx.counts[Rule::Key as usize] == 1);
        let (o, _) = run(&f, 0, cmd!["EVAL", "s", "0"]);
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn database_rules() {
        let f = filter(Some(vec![0, 3]), |s| {
            s.deny_commands = vec!["flushdb".into()]
        });
        let (o, fx) = run(&f, 1, cmd!["SET", "a", "1"]);
        assert!(o.is_empty() && fx.counts[Rule::Db as usize] == 1);
        let (o, _) = run(&f, 3, cmd!["SET", "a", "1"]);
        assert_eq!(cmds(&o), [(3, cmd!["SET", "a", "1"])]);
        let (o, fx) = run(&f, 0, cmd!["FLUSHDB"]);
        assert!(o.is_empty() && fx.counts[Rule::Denied as usize] == 1);
        let (o, _) = run(&f, 1, cmd!["FLUSHALL", "ASYNC"]);
        assert_eq!(
            cmds(&o),
            [(0, cmd!["FLUSHDB", "ASYNC"]), (3, cmd!["FLUSHDB", "ASYNC"])]
        );
        // MOVE: within the selection (mapped), out of it (DEL), into it (repair), outside.
        let (o, _) = run(&f, 0, cmd!["MOVE", "k", "3"]);
        assert!(o.is_empty(), "3 maps to 0: the key stays");
        let f2 = filter(Some(vec![0, 2]), |_| {});
        let (o, _) = run(&f2, 0, cmd!["MOVE", "k", "2"]);
        assert_eq!(cmds(&o), [(0, cmd!["MOVE", "k", "2"])]);
        let (o, fx) = run(&f2, 0, cmd!["MOVE", "k", "5"]);
        assert_eq!(cmds(&o), [(0, cmd!["DEL", "k"])]);
        assert_eq!(fx.counts[Rule::MoveOut as usize], 1);
        let (o, fx) = run(&f2, 5, cmd!["MOVE", "k", "2"]);
        assert!(o.is_empty());
        assert_eq!(fx.repairs, [(2, bytes::Bytes::from("k"))]);
        let (o, fx) = run(&f2, 5, cmd!["MOVE", "k", "6"]);
        assert!(o.is_empty() && fx.counts[Rule::Db as usize] == 1);
        // COPY … DB: the destination decides.
        let (o, fx) = run(&f2, 5, cmd!["COPY", "s", "d", "DB", "0", "REPLACE"]);
        assert!(o.is_empty());
        assert_eq!(fx.repairs, [(0, bytes::Bytes::from("d"))]);
        let (o, _) = run(&f2, 0, cmd!["COPY", "s", "d", "DB", "5"]);
        assert!(o.is_empty());
        let (o, _) = run(&f, 0, cmd!["COPY", "s", "d", "db", "3"]);
        assert_eq!(cmds(&o), [(0, cmd!["COPY", "s", "d"])]);
        // SWAPDB.
        let (o, _) = run(&f2, 0, cmd!["SWAPDB", "0", "2"]);
        assert_eq!(o.len(), 1);
        let (o, fx) = run(&f2, 0, cmd!["SWAPDB", "0", "1"]);
        assert!(o.is_empty() && fx.refused.len() == 1);
        let (o, _) = run(&f2, 0, cmd!["SWAPDB", "4", "1"]);
        assert!(o.is_empty());
        // Control commands pass whatever the database.
        let (o, _) = run(&f2, 7, cmd!["MULTI"]);
        assert_eq!(o.len(), 1);
    }
}
