//! Key-by-key comparison of two servers, portable across Redis 6.0 … Valkey 9.
//!
//! For each db: SCAN both sides (binary-safe), compare key sets, then per key the TYPE,
//! the value (strings byte-exact, HyperLogLogs by PFCOUNT when bytes differ, sets and
//! hashes order-independent, sorted-set scores numerically), streams (entries, length,
//! last-generated-id, groups with last-delivered-id, consumers with their pending counts,
//! pending entries with owners, delivery counts and delivery times within a tolerance, and,
//! where both sides report them, entries-added, max-deleted-entry-id, recorded-first-entry-id,
//! entries-read and lag) and the TTL within a tolerance. Function libraries are compared server-wide.
//!
//! Reading a HyperLogLog whose bytes differ runs PFCOUNT, which may refresh the HLL's
//! cached cardinality on that server (a write); everything else is read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use redis::{Connection, Value};

pub use super::util::wait_until;
use super::util::{printable, select};

/// One difference between source and destination.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    /// Database, or `None` for server-wide state (function libraries).
    pub db: Option<u32>,
    pub key: Vec<u8>,
    pub what: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.db {
            Some(db) => write!(f, "db {db} key {}: {}", printable(&self.key), self.what),
            None => write!(f, "server-wide {}: {}", printable(&self.key), self.what),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Two positive PTTLs match when they differ by at most this much.
    pub ttl_tolerance_ms: i64,
    /// Also compare stream metadata newer servers keep (max-deleted-entry-id,
    /// entries-added, group entries-read) when both sides report it.
    pub strict_stream_meta: bool,
    /// Compare FUNCTION LIST libraries (a side without functions counts as none).
    pub compare_functions: bool,
    /// Two pending entries' delivery times (XPENDING idle) match when they differ by at most
    /// this much; `None` ignores delivery times.
    pub pending_idle_tolerance_ms: Option<i64>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            ttl_tolerance_ms: 1000,
            strict_stream_meta: true,
            compare_functions: true,
            pending_idle_tolerance_ms: Some(2000),
        }
    }
}

/// A key as read from one server.
#[derive(Clone, Debug, PartialEq)]
pub struct KeySnapshot {
    pub type_name: String,
    pub value: KeyValue,
    /// PTTL: -1 without expiry, else milliseconds left.
    pub pttl: i64,
    /// Local Unix ms when the PTTL reply arrived: TTLs are compared as absolute expiry times
    /// (`read_ms + pttl`), so a slow read of a big value between the two sides (or a loaded
    /// machine) does not show up as a TTL difference.
    pub read_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum KeyValue {
    Str(Vec<u8>),
    List(Vec<Vec<u8>>),
    /// Sorted members.
    Set(Vec<Vec<u8>>),
    /// In ZRANGE order.
    ZSet(Vec<(Vec<u8>, f64)>),
    /// Sorted by field.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    Stream(StreamSnapshot),
    /// A type the harness does not read (module types).
    Other,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct StreamSnapshot {
    pub entries: Vec<(String, Vec<Vec<u8>>)>,
    pub len: i64,
    pub last_generated_id: String,
    pub max_deleted_entry_id: Option<String>,
    pub entries_added: Option<i64>,
    /// `recorded-first-entry-id` (7.0+).
    pub first_entry_id: Option<String>,
    /// Sorted by name.
    pub groups: Vec<GroupSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct GroupSnapshot {
    pub name: Vec<u8>,
    pub last_delivered_id: String,
    pub pending: i64,
    pub consumers: i64,
    pub entries_read: Option<i64>,
    /// (consumer name, pending count), sorted.
    pub consumer_list: Vec<(Vec<u8>, i64)>,
    /// (entry id, consumer, delivery count) in XPENDING order.
    pub pending_entries: Vec<(String, Vec<u8>, i64)>,
    /// Idle time (ms since the last delivery) of each of `pending_entries`, read with them.
    pub pending_idle_ms: Vec<i64>,
    /// `lag` (7.0+; `None` where the server reports none or nil).
    pub lag: Option<i64>,
}

/// Compares `dbs` of two servers with default options; see [`compare_servers_with`].
pub fn compare_servers(
    src: &mut Connection,
    dst: &mut Connection,
    dbs: &[u32],
    ignore: &[&[u8]],
) -> Vec<Difference> {
    compare_servers_with(src, dst, dbs, ignore, &CompareOptions::default())
}

/// Compares `dbs` of two servers. `ignore` lists key names to skip; a name ending in
/// `*` skips every key starting with the rest. Leaves both connections on db 0.
pub fn compare_servers_with(
    src: &mut Connection,
    dst: &mut Connection,
    dbs: &[u32],
    ignore: &[&[u8]],
    opts: &CompareOptions,
) -> Vec<Difference> {
    let mut diffs = Vec::new();
    for &db in dbs {
        select(src, db);
        select(dst, db);
        let skip = |k: &Vec<u8>| is_ignored(k, ignore);
        let src_keys: BTreeSet<Vec<u8>> = scan_keys(src).into_iter().filter(|k| !skip(k)).collect();
        let dst_keys: BTreeSet<Vec<u8>> = scan_keys(dst).into_iter().filter(|k| !skip(k)).collect();
        for key in src_keys.difference(&dst_keys) {
            diffs.push(diff(db, key, "missing on destination".into()));
        }
        for key in dst_keys.difference(&src_keys) {
            diffs.push(diff(db, key, "extra on destination (not on source)".into()));
        }
        for key in src_keys.intersection(&dst_keys) {
            diffs.extend(compare_key(db, key, src, dst, opts));
        }
    }
    select(src, 0);
    select(dst, 0);
    if opts.compare_functions {
        diffs.extend(compare_functions(src, dst));
    }
    diffs
}

/// Panics listing the first 20 differences (with the total) unless the servers match.
pub fn assert_same(src: &mut Connection, dst: &mut Connection, dbs: &[u32], ignore: &[&[u8]]) {
    assert_no_differences(&compare_servers(src, dst, dbs, ignore));
}

/// Panics listing the first 20 of `diffs` unless it is empty.
pub fn assert_no_differences(diffs: &[Difference]) {
    if diffs.is_empty() {
        return;
    }
    let mut msg = format!(
        "{} difference(s) between source and destination:\n",
        diffs.len()
    );
    for d in diffs.iter().take(20) {
        msg.push_str(&format!("  - {d}\n"));
    }
    if diffs.len() > 20 {
        msg.push_str(&format!("  ... and {} more\n", diffs.len() - 20));
    }
    panic!("{msg}");
}

fn diff(db: u32, key: &[u8], what: String) -> Difference {
    Difference {
        db: Some(db),
        key: key.to_vec(),
        what,
    }
}

/// shardsync's exactly-once progress keys (default `sync.progress_prefix`): bookkeeping that
/// exists on the target only, never data to compare.
pub const PROGRESS_PREFIX: &[u8] = b"__shardsync:progress:";

fn is_ignored(key: &[u8], ignore: &[&[u8]]) -> bool {
    key.starts_with(PROGRESS_PREFIX)
        || ignore.iter().any(|pat| match pat.strip_suffix(b"*") {
            Some(prefix) => key.starts_with(prefix),
            None => key == *pat,
        })
}

/// All keys of the connection's current db (SCAN, binary-safe).
pub fn scan_keys(conn: &mut Connection) -> BTreeSet<Vec<u8>> {
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Number of shardsync progress keys (exactly-once bookkeeping, [`PROGRESS_PREFIX`]) in the
/// connection's current db.
pub fn progress_keys(conn: &mut Connection) -> u64 {
    let mut pattern = PROGRESS_PREFIX.to_vec();
    pattern.push(b'*');
    let mut n = 0;
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .expect("SCAN MATCH progress keys");
        n += batch.len() as u64;
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

/// `DBSIZE` of a shardsync target's current db without the progress keys that exactly-once
/// (on by default on a standalone target) keeps there: the keys the sync copied.
pub fn target_dbsize(conn: &mut Connection) -> u64 {
    let n: u64 = redis::cmd("DBSIZE").query(conn).expect("DBSIZE");
    n - progress_keys(conn)
}

/// [`dbsize_all`] of a shardsync target without its progress keys (they live in db 0; the
/// connection is left on db 0). Databases holding only progress keys are left out.
pub fn target_dbsize_all(conn: &mut Connection) -> BTreeMap<u32, u64> {
    let _: () = redis::cmd("SELECT").arg(0).query(conn).expect("SELECT 0");
    let progress = progress_keys(conn);
    let mut sizes = dbsize_all(conn);
    if let Some(n) = sizes.get_mut(&0) {
        *n -= progress;
        if *n == 0 {
            sizes.remove(&0);
        }
    }
    sizes
}

/// Number of keys per non-empty database, from `INFO keyspace`.
pub fn dbsize_all(conn: &mut Connection) -> BTreeMap<u32, u64> {
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query(conn)
        .expect("INFO keyspace");
    info.lines()
        .filter_map(|line| {
            let (db, rest) = line.trim().split_once(':')?;
            let db: u32 = db.strip_prefix("db")?.parse().ok()?;
            let keys = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db, keys))
        })
        .collect()
}

fn q(conn: &mut Connection, cmd: &redis::Cmd, what: &str) -> Value {
    cmd.query::<Value>(conn)
        .unwrap_or_else(|e| panic!("compare: {what} failed: {e}"))
}

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.as_bytes().to_vec(),
        Value::Okay => b"OK".to_vec(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::Nil => Vec::new(),
        other => format!("{other:?}").into_bytes(),
    }
}

fn text(v: &Value) -> String {
    String::from_utf8_lossy(&bytes(v)).into_owned()
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => text(other).parse().unwrap_or(-1),
    }
}

fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// Flat `[name, value, name, value ...]` (or a RESP3 map) into a name → value map.
fn fields(v: &Value) -> BTreeMap<String, Value> {
    match v {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        _ => array(v)
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (text(&c[0]), c[1].clone()))
            .collect(),
    }
}

/// Reads `key` from the connection's current db; `None` if it does not exist.
pub fn snapshot_key(conn: &mut Connection, key: &[u8]) -> Option<KeySnapshot> {
    let type_name = text(&q(conn, redis::cmd("TYPE").arg(key), "TYPE"));
    let value = match type_name.as_str() {
        "none" => return None,
        "string" => KeyValue::Str(bytes(&q(conn, redis::cmd("GET").arg(key), "GET"))),
        "list" => KeyValue::List(
            array(&q(
                conn,
                redis::cmd("LRANGE").arg(key).arg(0).arg(-1),
                "LRANGE",
            ))
            .iter()
            .map(bytes)
            .collect(),
        ),
        "set" => {
            let mut m: Vec<Vec<u8>> = array(&q(conn, redis::cmd("SMEMBERS").arg(key), "SMEMBERS"))
                .iter()
                .map(bytes)
                .collect();
            m.sort();
            KeyValue::Set(m)
        }
        "zset" => {
            let reply = q(
                conn,
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
                "ZRANGE",
            );
            KeyValue::ZSet(
                array(&reply)
                    .chunks(2)
                    .map(|c| {
                        let score = text(&c[1]);
                        let score: f64 = score
                            .parse()
                            .unwrap_or_else(|_| panic!("unparsable zset score {score:?}"));
                        (bytes(&c[0]), score)
                    })
                    .collect(),
            )
        }
        "hash" => {
            let reply = q(conn, redis::cmd("HGETALL").arg(key), "HGETALL");
            let mut h: Vec<(Vec<u8>, Vec<u8>)> = array(&reply)
                .chunks(2)
                .map(|c| (bytes(&c[0]), bytes(&c[1])))
                .collect();
            h.sort();
            KeyValue::Hash(h)
        }
        "stream" => KeyValue::Stream(snapshot_stream(conn, key)),
        _ => KeyValue::Other,
    };
    let pttl = int(&q(conn, redis::cmd("PTTL").arg(key), "PTTL"));
    let read_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Some(KeySnapshot {
        type_name,
        value,
        pttl,
        read_ms,
    })
}

fn snapshot_stream(conn: &mut Connection, key: &[u8]) -> StreamSnapshot {
    let entries = array(&q(
        conn,
        redis::cmd("XRANGE").arg(key).arg("-").arg("+"),
        "XRANGE",
    ))
    .iter()
    .map(|e| {
        let parts = array(e);
        (
            text(&parts[0]),
            array(&parts[1]).iter().map(bytes).collect(),
        )
    })
    .collect();
    let len = int(&q(conn, redis::cmd("XLEN").arg(key), "XLEN"));
    let info = fields(&q(
        conn,
        redis::cmd("XINFO").arg("STREAM").arg(key),
        "XINFO STREAM",
    ));
    let mut snap = StreamSnapshot {
        entries,
        len,
        last_generated_id: info.get("last-generated-id").map(text).unwrap_or_default(),
        max_deleted_entry_id: info.get("max-deleted-entry-id").map(text),
        entries_added: info.get("entries-added").map(int),
        first_entry_id: info.get("recorded-first-entry-id").map(text),
        groups: Vec::new(),
    };
    let groups = q(
        conn,
        redis::cmd("XINFO").arg("GROUPS").arg(key),
        "XINFO GROUPS",
    );
    for g in array(&groups) {
        let g = fields(g);
        let name = g.get("name").map(bytes).unwrap_or_default();
        let pending = g.get("pending").map(int).unwrap_or(0);
        let mut group = GroupSnapshot {
            last_delivered_id: g.get("last-delivered-id").map(text).unwrap_or_default(),
            pending,
            consumers: g.get("consumers").map(int).unwrap_or(0),
            entries_read: g.get("entries-read").and_then(|v| match v {
                Value::Nil => None,
                v => Some(int(v)),
            }),
            lag: g.get("lag").and_then(|v| match v {
                Value::Nil => None,
                v => Some(int(v)),
            }),
            ..Default::default()
        };
        let consumers = q(
            conn,
            redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(&name),
            "XINFO CONSUMERS",
        );
        group.consumer_list = array(&consumers)
            .iter()
            .map(|c| {
                let c = fields(c);
                (
                    c.get("name").map(bytes).unwrap_or_default(),
                    c.get("pending").map(int).unwrap_or(0),
                )
            })
            .collect();
        group.consumer_list.sort();
        if pending > 0 {
            let reply = q(
                conn,
                redis::cmd("XPENDING")
                    .arg(key)
                    .arg(&name)
                    .arg("-")
                    .arg("+")
                    .arg(pending),
                "XPENDING",
            );
            for p in array(&reply) {
                let p = array(p);
                if p.len() < 4 {
                    panic!("compare: XPENDING entry with {} fields", p.len());
                }
                group
                    .pending_entries
                    .push((text(&p[0]), bytes(&p[1]), int(&p[3])));
                group.pending_idle_ms.push(int(&p[2]));
            }
        }
        group.name = name;
        snap.groups.push(group);
    }
    snap.groups.sort_by(|a, b| a.name.cmp(&b.name));
    snap
}

/// Reads `key` on both connections (already on the right db) and returns the
/// differences. HyperLogLogs whose bytes differ are compared by PFCOUNT instead, since
/// versions encode them differently (sparse/dense, cached cardinality).
pub fn compare_key(
    db: u32,
    key: &[u8],
    src: &mut Connection,
    dst: &mut Connection,
    opts: &CompareOptions,
) -> Vec<Difference> {
    let a = snapshot_key(src, key);
    let mut b = snapshot_key(dst, key);
    if let (Some(a), Some(b)) = (&a, &mut b)
        && let (KeyValue::Str(x), KeyValue::Str(y)) = (&a.value, &b.value)
        && x != y
        && x.starts_with(b"HYLL")
        && y.starts_with(b"HYLL")
    {
        let count = |c: &mut Connection| int(&q(c, redis::cmd("PFCOUNT").arg(key), "PFCOUNT"));
        let (n1, n2) = (count(src), count(dst));
        if n1 != n2 {
            return vec![diff(
                db,
                key,
                format!("hyperloglog differs: PFCOUNT source={n1} destination={n2}"),
            )];
        }
        b.value = a.value.clone();
    }
    diff_snapshots(db, key, a.as_ref(), b.as_ref(), opts)
}

/// Differences between two reads of one key (`None` = key vanished meanwhile).
pub fn diff_snapshots(
    db: u32,
    key: &[u8],
    a: Option<&KeySnapshot>,
    b: Option<&KeySnapshot>,
    opts: &CompareOptions,
) -> Vec<Difference> {
    let mut out = Vec::new();
    let (a, b) = match (a, b) {
        (None, None) => return out,
        (Some(_), None) => {
            out.push(diff(
                db,
                key,
                "vanished from destination while comparing".into(),
            ));
            return out;
        }
        (None, Some(_)) => {
            out.push(diff(db, key, "vanished from source while comparing".into()));
            return out;
        }
        (Some(a), Some(b)) => (a, b),
    };
    if a.type_name != b.type_name {
        out.push(diff(
            db,
            key,
            format!(
                "type differs: source={} destination={}",
                a.type_name, b.type_name
            ),
        ));
        return out;
    }
    if let Some(what) = diff_values(&a.value, &b.value, opts) {
        out.push(diff(db, key, what));
    }
    let ttl_ok = match (a.pttl, b.pttl) {
        (-1, -1) => true,
        (x, y) if x >= 0 && y >= 0 => {
            ((x + a.read_ms) - (y + b.read_ms)).abs() <= opts.ttl_tolerance_ms
        }
        _ => false,
    };
    if !ttl_ok {
        out.push(diff(
            db,
            key,
            format!(
                "ttl differs: source PTTL={} destination PTTL={}",
                a.pttl, b.pttl
            ),
        ));
    }
    out
}

fn first_mismatch<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn list_preview(items: &[&Vec<u8>]) -> String {
    let shown: Vec<String> = items.iter().take(5).map(|i| printable(i)).collect();
    let more = if items.len() > 5 {
        format!(" (+{} more)", items.len() - 5)
    } else {
        String::new()
    };
    format!("[{}]{more}", shown.join(", "))
}

fn diff_values(a: &KeyValue, b: &KeyValue, opts: &CompareOptions) -> Option<String> {
    match (a, b) {
        (KeyValue::Str(x), KeyValue::Str(y)) => {
            if x == y {
                None
            } else {
                // Where they part: long values differ far from their (printed) start.
                let at = x.iter().zip(y.iter()).take_while(|(p, q)| p == q).count();
                let from = at.saturating_sub(24);
                Some(format!(
                    "string value differs: source={} ({} bytes) destination={} ({} bytes); from byte {at}: source …{} destination …{}",
                    printable(x),
                    x.len(),
                    printable(y),
                    y.len(),
                    super::util::printable_limited(&x[from..x.len().min(at + 64)], 96),
                    super::util::printable_limited(&y[from..y.len().min(at + 64)], 96),
                ))
            }
        }
        (KeyValue::List(x), KeyValue::List(y)) => (x != y).then(|| {
            let i = first_mismatch(x, y);
            format!(
                "list differs: length source={} destination={}, first difference at index {i}: source={} destination={}",
                x.len(),
                y.len(),
                x.get(i).map(|v| printable(v)).unwrap_or("<end>".into()),
                y.get(i).map(|v| printable(v)).unwrap_or("<end>".into()),
            )
        }),
        (KeyValue::Set(x), KeyValue::Set(y)) => (x != y).then(|| {
            let xs: BTreeSet<&Vec<u8>> = x.iter().collect();
            let ys: BTreeSet<&Vec<u8>> = y.iter().collect();
            let only_a: Vec<&Vec<u8>> = xs.difference(&ys).copied().collect();
            let only_b: Vec<&Vec<u8>> = ys.difference(&xs).copied().collect();
            format!(
                "set differs: only on source {}, only on destination {}",
                list_preview(&only_a),
                list_preview(&only_b)
            )
        }),
        (KeyValue::Hash(x), KeyValue::Hash(y)) => (x != y).then(|| {
            let xm: BTreeMap<&Vec<u8>, &Vec<u8>> = x.iter().map(|(f, v)| (f, v)).collect();
            let ym: BTreeMap<&Vec<u8>, &Vec<u8>> = y.iter().map(|(f, v)| (f, v)).collect();
            let mut parts = Vec::new();
            for (f, v) in &xm {
                match ym.get(f) {
                    None => parts.push(format!("field {} missing on destination", printable(f))),
                    Some(w) if w != v => parts.push(format!(
                        "field {}: source={} destination={}",
                        printable(f),
                        printable(v),
                        printable(w)
                    )),
                    _ => {}
                }
            }
            for f in ym.keys().filter(|f| !xm.contains_key(*f)) {
                parts.push(format!("field {} extra on destination", printable(f)));
            }
            let total = parts.len();
            parts.truncate(5);
            format!("hash differs ({total} field(s)): {}", parts.join("; "))
        }),
        (KeyValue::ZSet(x), KeyValue::ZSet(y)) => (x != y).then(|| {
            let i = first_mismatch(x, y);
            let show = |z: &[(Vec<u8>, f64)]| {
                z.get(i)
                    .map(|(m, s)| format!("{}@{s}", printable(m)))
                    .unwrap_or("<end>".into())
            };
            format!(
                "zset differs: length source={} destination={}, first difference at rank {i}: source={} destination={}",
                x.len(),
                y.len(),
                show(x),
                show(y)
            )
        }),
        (KeyValue::Stream(x), KeyValue::Stream(y)) => diff_streams(x, y, opts),
        (KeyValue::Other, KeyValue::Other) => None,
        _ => Some("value kinds differ".into()),
    }
}

fn diff_streams(a: &StreamSnapshot, b: &StreamSnapshot, opts: &CompareOptions) -> Option<String> {
    let mut parts = Vec::new();
    if a.entries != b.entries {
        let i = first_mismatch(&a.entries, &b.entries);
        parts.push(format!(
            "entries differ (source {} / destination {}), first at index {i}: source id {} destination id {}",
            a.entries.len(),
            b.entries.len(),
            a.entries.get(i).map(|e| e.0.as_str()).unwrap_or("<end>"),
            b.entries.get(i).map(|e| e.0.as_str()).unwrap_or("<end>"),
        ));
    }
    if a.len != b.len {
        parts.push(format!("XLEN source={} destination={}", a.len, b.len));
    }
    if a.last_generated_id != b.last_generated_id {
        parts.push(format!(
            "last-generated-id source={} destination={}",
            a.last_generated_id, b.last_generated_id
        ));
    }
    if opts.strict_stream_meta {
        if let (Some(x), Some(y)) = (&a.max_deleted_entry_id, &b.max_deleted_entry_id)
            && x != y
        {
            parts.push(format!("max-deleted-entry-id source={x} destination={y}"));
        }
        if let (Some(x), Some(y)) = (a.entries_added, b.entries_added)
            && x != y
        {
            parts.push(format!("entries-added source={x} destination={y}"));
        }
        if let (Some(x), Some(y)) = (&a.first_entry_id, &b.first_entry_id)
            && x != y
        {
            parts.push(format!(
                "recorded-first-entry-id source={x} destination={y}"
            ));
        }
    }
    let names = |s: &StreamSnapshot| s.groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>();
    if names(a) != names(b) {
        parts.push(format!(
            "groups differ: source {} destination {}",
            list_preview(&a.groups.iter().map(|g| &g.name).collect::<Vec<_>>()),
            list_preview(&b.groups.iter().map(|g| &g.name).collect::<Vec<_>>())
        ));
    } else {
        for (x, y) in a.groups.iter().zip(&b.groups) {
            let g = printable(&x.name);
            if x.last_delivered_id != y.last_delivered_id {
                parts.push(format!(
                    "group {g} last-delivered-id source={} destination={}",
                    x.last_delivered_id, y.last_delivered_id
                ));
            }
            if x.pending != y.pending {
                parts.push(format!(
                    "group {g} pending count source={} destination={}",
                    x.pending, y.pending
                ));
            }
            if x.consumers != y.consumers || x.consumer_list != y.consumer_list {
                parts.push(format!(
                    "group {g} consumers source={:?} destination={:?}",
                    consumer_names(x),
                    consumer_names(y)
                ));
            }
            if opts.strict_stream_meta
                && let (Some(r1), Some(r2)) = (x.entries_read, y.entries_read)
                && r1 != r2
            {
                parts.push(format!(
                    "group {g} entries-read source={r1} destination={r2}"
                ));
            }
            if opts.strict_stream_meta
                && let (Some(l1), Some(l2)) = (x.lag, y.lag)
                && l1 != l2
            {
                parts.push(format!("group {g} lag source={l1} destination={l2}"));
            }
            if let Some(tol) = opts.pending_idle_tolerance_ms
                && x.pending_entries == y.pending_entries
                && let Some(i) = x
                    .pending_idle_ms
                    .iter()
                    .zip(&y.pending_idle_ms)
                    .position(|(a, b)| (a - b).abs() > tol)
            {
                parts.push(format!(
                    "group {g} pending entry {} delivery time differs: idle source={} ms destination={} ms",
                    x.pending_entries[i].0, x.pending_idle_ms[i], y.pending_idle_ms[i]
                ));
            }
            if x.pending_entries != y.pending_entries {
                let i = first_mismatch(&x.pending_entries, &y.pending_entries);
                let show = |p: &[(String, Vec<u8>, i64)]| {
                    p.get(i)
                        .map(|(id, c, n)| format!("{id} owner {} deliveries {n}", printable(c)))
                        .unwrap_or("<end>".into())
                };
                parts.push(format!(
                    "group {g} pending entries differ at {i}: source {} destination {}",
                    show(&x.pending_entries),
                    show(&y.pending_entries)
                ));
            }
        }
    }
    (!parts.is_empty()).then(|| format!("stream differs: {}", parts.join("; ")))
}

fn consumer_names(g: &GroupSnapshot) -> Vec<String> {
    g.consumer_list
        .iter()
        .map(|(n, p)| format!("{}:{p}", String::from_utf8_lossy(n)))
        .collect()
}

/// Function libraries (name → code) from `FUNCTION LIST WITHCODE`; empty where the
/// server has no functions.
pub fn function_libraries(conn: &mut Connection) -> BTreeMap<String, String> {
    let reply = match redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("WITHCODE")
        .query::<Value>(conn)
    {
        Ok(v) => v,
        Err(_) => return BTreeMap::new(),
    };
    array(&reply)
        .iter()
        .map(|lib| {
            let f = fields(lib);
            (
                f.get("library_name").map(text).unwrap_or_default(),
                f.get("library_code").map(text).unwrap_or_default(),
            )
        })
        .collect()
}

/// Differences in function libraries (server-wide, `db: None`).
pub fn compare_functions(src: &mut Connection, dst: &mut Connection) -> Vec<Difference> {
    let a = function_libraries(src);
    let b = function_libraries(dst);
    let mut out = Vec::new();
    for (name, code) in &a {
        let what = match b.get(name) {
            None => "function library missing on destination",
            Some(c) if c != code => "function library code differs",
            _ => continue,
        };
        out.push(Difference {
            db: None,
            key: name.as_bytes().to_vec(),
            what: what.into(),
        });
    }
    for name in b.keys().filter(|n| !a.contains_key(*n)) {
        out.push(Difference {
            db: None,
            key: name.as_bytes().to_vec(),
            what: "function library extra on destination".into(),
        });
    }
    out
}
