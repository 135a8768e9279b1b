//! Deterministic command workload for incremental-replication tests.
//!
//! [`run_workload`] sends every write command shardsync must replicate (see the list in
//! the issue) to one server, touching keys of the typed dataset (same key naming) and new
//! ones, plus a few thousand plain writes for volume and keys that expire mid-run. Run it
//! once per server: stream IDs are explicit. Commands the server lacks are skipped by
//! `kind` and listed in the summary.

use std::time::Duration;

use redis::{Connection, Value};

use super::dataset::FUNCTION_CODE;
use super::server::ServerKind;
use super::util::select;

/// Keys whose content differs between two servers that ran the same workload
/// independently (server-generated stream IDs from `XADD key *`). Replication must
/// still reproduce them exactly.
pub const NONDETERMINISTIC_KEYS: &[&str] = &["w:stream-auto"];

/// Database the workload fills and then `FLUSHDB`s (only with `use_dbs`).
pub const FLUSHDB_DB: u32 = 5;

#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Use databases 1, 3 and [`FLUSHDB_DB`]: SELECT, MOVE, SWAPDB, FLUSHDB. Off for
    /// clusters (db 0 only).
    pub use_dbs: bool,
    /// Prepended to every key (e.g. `"{t}"` keeps multi-key commands in one slot).
    pub key_prefix: String,
    /// Appended to every key.
    pub key_suffix: String,
    /// Also run the multi-key commands on untagged `untagged:*` keys (cross-slot in a
    /// cluster; harmless on a standalone server). Has no extra effect when the prefix
    /// and suffix are empty (the main run is already untagged).
    pub cross_slot_untagged: bool,
    /// Number of plain SET/HSET/RPUSH volume writes.
    pub volume: usize,
    /// Create keys with `PX 50`, wait for them to expire, and touch them.
    pub expire_during_run: bool,
    /// Unix time (s) that absolute expiries (EXPIREAT, PEXPIREAT, EXAT, PXAT) are based
    /// on; fixed when the options are built so two servers get identical deadlines.
    pub base_time_secs: u64,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            use_dbs: true,
            key_prefix: String::new(),
            key_suffix: String::new(),
            cross_slot_untagged: true,
            volume: 3000,
            expire_during_run: true,
            base_time_secs: now_secs(),
        }
    }
}

impl WorkloadOptions {
    /// Cluster-friendly: db 0 only, keys tagged `{tag}`, no untagged multi-key commands.
    pub fn cluster(tag: &str) -> Self {
        WorkloadOptions {
            use_dbs: false,
            key_prefix: format!("{{{tag}}}"),
            cross_slot_untagged: false,
            ..Default::default()
        }
    }

    /// Databases the workload may write (compare these).
    pub fn dbs(&self) -> Vec<u32> {
        if self.use_dbs {
            vec![0, 1, 3, FLUSHDB_DB]
        } else {
            vec![0]
        }
    }

    /// `dataset`'s databases (in order) followed by those of [`WorkloadOptions::dbs`] it lacks:
    /// every database to compare after a dataset and this workload.
    pub fn dbs_with(&self, dataset: &[u32]) -> Vec<u32> {
        let mut dbs = dataset.to_vec();
        for d in self.dbs() {
            if !dbs.contains(&d) {
                dbs.push(d);
            }
        }
        dbs
    }

    pub fn key(&self, name: &str) -> Vec<u8> {
        let mut k = self.key_prefix.as_bytes().to_vec();
        k.extend_from_slice(name.as_bytes());
        k.extend_from_slice(self.key_suffix.as_bytes());
        k
    }
}

#[derive(Clone, Debug, Default)]
pub struct WorkloadSummary {
    /// Commands sent (pipelined ones counted individually).
    pub commands: usize,
    /// Command names executed at least once.
    pub executed: std::collections::BTreeSet<String>,
    /// Commands skipped because the server version lacks them.
    pub skipped: Vec<&'static str>,
}

struct W<'a> {
    conn: &'a mut Connection,
    kind: ServerKind,
    summary: WorkloadSummary,
}

impl W<'_> {
    fn run(&mut self, cmd: &redis::Cmd) -> Value {
        let name = cmd_name(cmd);
        self.summary.commands += 1;
        self.summary.executed.insert(name.clone());
        cmd.query::<Value>(self.conn).unwrap_or_else(|e| {
            panic!(
                "workload on {}: {name} failed: {e} (args: {:?})",
                self.kind.name(),
                printable_args(cmd)
            )
        })
    }

    fn skip(&mut self, name: &'static str) {
        if !self.summary.skipped.contains(&name) {
            self.summary.skipped.push(name);
        }
    }
}

fn cmd_name(cmd: &redis::Cmd) -> String {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(b)) => String::from_utf8_lossy(b).to_uppercase(),
        _ => "?".into(),
    }
}

fn printable_args(cmd: &redis::Cmd) -> Vec<String> {
    cmd.args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => super::util::printable_limited(b, 40),
            _ => "<cursor>".into(),
        })
        .collect()
}

fn c(name: &str) -> redis::Cmd {
    redis::cmd(name)
}

/// Applies the workload; leaves the connection on db 0.
pub fn run_workload(
    conn: &mut Connection,
    kind: ServerKind,
    opts: &WorkloadOptions,
) -> WorkloadSummary {
    let mut w = W {
        conn,
        kind,
        summary: WorkloadSummary::default(),
    };
    select(w.conn, 0);
    let k = |name: &str| opts.key(name);

    strings(&mut w, opts);
    expiry(&mut w, opts);
    lists(&mut w, opts);
    hashes(&mut w, opts);
    sets(&mut w, opts);
    zsets(&mut w, opts);
    streams(&mut w, opts);
    scripts_and_tx(&mut w, opts);

    multi_key(&mut w, &|n: &str| opts.key(&format!("mk:{n}")));
    if opts.cross_slot_untagged && !(opts.key_prefix.is_empty() && opts.key_suffix.is_empty()) {
        multi_key(&mut w, &|n: &str| format!("untagged:{n}").into_bytes());
    }

    // RESTORE from a DUMP of another key on the same server.
    w.run(
        c("HSET")
            .arg(k("dump:src"))
            .arg("a")
            .arg("1")
            .arg("b")
            .arg("2"),
    );
    let payload = match w.run(c("DUMP").arg(k("dump:src"))) {
        Value::BulkString(b) => b,
        other => panic!("DUMP returned {other:?}"),
    };
    w.run(c("RESTORE").arg(k("restored:plain")).arg(0).arg(&payload));
    w.run(
        c("RESTORE")
            .arg(k("restored:ttl"))
            .arg(3_600_000)
            .arg(&payload),
    );
    w.run(c("SET").arg(k("restored:replace")).arg("old"));
    w.run(
        c("RESTORE")
            .arg(k("restored:replace"))
            .arg(0)
            .arg(&payload)
            .arg("REPLACE"),
    );

    w.run(c("PUBLISH").arg("shardsync-test-channel").arg("hello"));

    if opts.use_dbs {
        databases(&mut w, opts);
    }
    if opts.expire_during_run {
        expiring(&mut w, opts);
    }
    volume(&mut w, opts);
    select(w.conn, 0);
    w.summary
}

fn strings(w: &mut W, o: &WorkloadOptions) {
    let k = |name: &str| o.key(name);
    w.run(c("APPEND").arg(k("str:raw")).arg("+appended"));
    w.run(c("APPEND").arg(k("w:append-new")).arg(&b"\x00start"[..]));
    w.run(c("INCR").arg(k("str:counter")));
    w.run(c("INCRBY").arg(k("str:counter")).arg(41));
    w.run(c("DECR").arg(k("str:int")));
    w.run(c("DECRBY").arg(k("str:int")).arg(1000));
    w.run(c("INCR").arg(k("w:incr-new")));
    w.run(c("INCRBYFLOAT").arg(k("str:float")).arg("1.1"));
    w.run(c("INCRBYFLOAT").arg(k("w:float-new")).arg("-2.5e3"));
    w.run(c("GETSET").arg(k("str:embstr")).arg("replaced by getset"));
    w.run(c("SETRANGE").arg(k("str:raw")).arg(2).arg("XYZ"));
    w.run(c("SETRANGE").arg(k("w:setrange-new")).arg(10).arg("padded"));
    w.run(c("SETNX").arg(k("w:setnx")).arg("first"));
    w.run(c("SETNX").arg(k("w:setnx")).arg("second (ignored)"));
    w.run(c("SETEX").arg(k("w:setex")).arg(5000).arg("setex value"));
    w.run(
        c("PSETEX")
            .arg(k("w:psetex"))
            .arg(5_000_123)
            .arg("psetex value"),
    );
    w.run(c("SET").arg(k("w:set-ex")).arg("v").arg("EX").arg(4000));
    w.run(
        c("SET")
            .arg(k("w:set-px"))
            .arg("v")
            .arg("PX")
            .arg(4_000_456),
    );
    w.run(c("SET").arg(k("w:set-nx")).arg("v").arg("NX"));
    w.run(c("SET").arg(k("w:set-nx")).arg("ignored").arg("NX"));
    w.run(c("SET").arg(k("str:utf8")).arg("xx overwrite").arg("XX"));
    w.run(c("SET").arg(k("w:set-xx-missing")).arg("never").arg("XX"));
    w.run(c("SET").arg(k("w:keepttl")).arg("v1").arg("EX").arg(3000));
    w.run(c("SET").arg(k("w:keepttl")).arg("v2").arg("KEEPTTL"));
    w.run(c("SET").arg(k("str:empty")).arg(""));
    w.run(c("SET").arg(k("w:binary")).arg(&b"\r\n\x00\xff"[..]));
    w.run(c("SETBIT").arg(k("bitmap")).arg(5).arg(1));
    w.run(c("SETBIT").arg(k("bitmap")).arg(7).arg(0));
    w.run(c("SETBIT").arg(k("w:bitmap-new")).arg(12345).arg(1));
    w.run(
        c("GEOADD")
            .arg(k("geo:sicily"))
            .arg("12.4964")
            .arg("41.9028")
            .arg("Rome"),
    );
    w.run(
        c("PFADD")
            .arg(k("hll:sparse"))
            .arg("new-visitor")
            .arg("another"),
    );
    if w.kind.has_redis62_commands() {
        w.run(c("SET").arg(k("w:set-get")).arg("old"));
        w.run(c("SET").arg(k("w:set-get")).arg("new").arg("GET"));
        let now = o.base_time_secs;
        w.run(
            c("SET")
                .arg(k("w:exat"))
                .arg("v")
                .arg("EXAT")
                .arg(now + 7200),
        );
        w.run(
            c("SET")
                .arg(k("w:pxat"))
                .arg("v")
                .arg("PXAT")
                .arg(now * 1000 + 7_200_999),
        );
        w.run(c("GETEX").arg(k("ttl:long")).arg("EX").arg(999_999));
        w.run(
            c("SET")
                .arg(k("w:getex-persist"))
                .arg("v")
                .arg("EX")
                .arg(100),
        );
        w.run(c("GETEX").arg(k("w:getex-persist")).arg("PERSIST"));
        w.run(c("SET").arg(k("w:getdel")).arg("v"));
        w.run(c("GETDEL").arg(k("w:getdel")));
    } else {
        for name in ["SET GET", "SET EXAT/PXAT", "GETEX", "GETDEL"] {
            w.skip(name);
        }
    }
}

fn expiry(w: &mut W, o: &WorkloadOptions) {
    let k = |name: &str| o.key(name);
    let now = o.base_time_secs;
    for (name, ttl) in [
        ("w:expire", 1000),
        ("w:expireat", 0),
        ("w:pexpire", 0),
        ("w:pexpireat", 0),
    ] {
        w.run(c("SET").arg(k(name)).arg(ttl));
    }
    w.run(c("EXPIRE").arg(k("w:expire")).arg(1000));
    w.run(c("EXPIREAT").arg(k("w:expireat")).arg(now + 3600));
    w.run(c("PEXPIRE").arg(k("w:pexpire")).arg(1_234_567));
    w.run(
        c("PEXPIREAT")
            .arg(k("w:pexpireat"))
            .arg(now * 1000 + 5_555_555),
    );
    w.run(c("EXPIRE").arg(k("hash:small")).arg(86_400));
    w.run(
        c("SET")
            .arg(k("ttl:persist-me"))
            .arg("v")
            .arg("EX")
            .arg(5000),
    );
    w.run(c("PERSIST").arg(k("ttl:persist-me")));
    w.run(c("PEXPIRE").arg(k("zset:small")).arg(99_000_000));
    if w.kind.has_redis70_commands() {
        w.run(c("EXPIRE").arg(k("w:expire")).arg(50).arg("GT"));
        w.run(c("EXPIRE").arg(k("w:expire")).arg(2000).arg("GT"));
        w.run(c("EXPIRE").arg(k("w:setnx")).arg(3000).arg("NX"));
    } else {
        w.skip("EXPIRE NX/XX/GT/LT");
    }
}

fn lists(w: &mut W, o: &WorkloadOptions) {
    let k = |name: &str| o.key(name);
    w.run(c("LPUSH").arg(k("list:small")).arg("head1").arg("head2"));
    w.run(
        c("RPUSH")
            .arg(k("list:small"))
            .arg("tail1")
            .arg(&b"\x00tail\r\n"[..]),
    );
    w.run(c("LPUSHX").arg(k("list:small")).arg("lpushx"));
    w.run(c("RPUSHX").arg(k("list:small")).arg("rpushx"));
    w.run(c("LPUSHX").arg(k("w:missing-list")).arg("never"));
    w.run(c("RPUSHX").arg(k("w:missing-list")).arg("never"));
    w.run(
        c("LINSERT")
            .arg(k("list:small"))
            .arg("BEFORE")
            .arg("tail1")
            .arg("inserted-before"),
    );
    w.run(
        c("LINSERT")
            .arg(k("list:small"))
            .arg("AFTER")
            .arg("head1")
            .arg("inserted-after"),
    );
    w.run(c("LSET").arg(k("list:small")).arg(0).arg("lset-first"));
    w.run(
        c("RPUSH")
            .arg(k("w:list"))
            .arg(&["a", "b", "a", "c", "a", "d", "e", "f"][..]),
    );
    w.run(c("LREM").arg(k("w:list")).arg(2).arg("a"));
    w.run(c("LTRIM").arg(k("w:list")).arg(0).arg(3));
    w.run(c("LPOP").arg(k("w:list")));
    w.run(c("RPOP").arg(k("w:list")));
    w.run(c("RPUSH").arg(k("list:large")).arg("large-tail"));
    // Index 10 sits inside a quicklist node when the dataset is there; without it the
    // list has one element.
    let large_len = match w.run(c("LLEN").arg(k("list:large"))) {
        Value::Int(n) => n,
        other => panic!("LLEN returned {other:?}"),
    };
    let index = if large_len > 10 { 10 } else { 0 };
    w.run(
        c("LSET")
            .arg(k("list:large"))
            .arg(index)
            .arg("lset-in-large"),
    );
    w.run(c("LPOP").arg(k("list:large")));
    w.run(c("RPOP").arg(k("list:large")));
    w.run(c("LTRIM").arg(k("list:large")).arg(0).arg(1199));
    w.run(c("LREM").arg(k("list:large")).arg(0).arg("item-20"));
    w.run(
        c("RPUSH")
            .arg(k("w:blocking"))
            .arg(&["b1", "b2", "b3", "b4", "b5"][..]),
    );
    w.run(c("BLPOP").arg(k("w:blocking")).arg(1));
    w.run(c("BRPOP").arg(k("w:blocking")).arg(1));
    w.run(c("BLPOP").arg(k("w:blocking-empty")).arg("0.05"));
    w.run(c("RPOPLPUSH").arg(k("w:blocking")).arg(k("w:blocking")));
    w.run(
        c("BRPOPLPUSH")
            .arg(k("w:blocking"))
            .arg(k("w:blocking"))
            .arg(1),
    );
    if w.kind.has_redis62_commands() {
        w.run(c("LPOP").arg(k("list:ints")).arg(2));
        w.run(
            c("LMOVE")
                .arg(k("w:blocking"))
                .arg(k("w:blocking"))
                .arg("LEFT")
                .arg("RIGHT"),
        );
    } else {
        w.skip("LPOP count");
        w.skip("LMOVE");
    }
}

fn hashes(w: &mut W, o: &WorkloadOptions) {
    let k = |name: &str| o.key(name);
    w.run(
        c("HSET")
            .arg(k("hash:small"))
            .arg("f1")
            .arg("changed")
            .arg("new")
            .arg("n"),
    );
    w.run(
        c("HMSET")
            .arg(k("hash:large"))
            .arg("field-1")
            .arg("hmset")
            .arg("hm-new")
            .arg("x"),
    );
    w.run(c("HSETNX").arg(k("hash:small")).arg("f1").arg("ignored"));
    w.run(c("HSETNX").arg(k("hash:small")).arg("setnx").arg("yes"));
    w.run(c("HDEL").arg(k("hash:small")).arg("empty"));
    w.run(c("HDEL").arg(k("hash:large")).arg("field-2").arg("field-3"));
    w.run(c("HINCRBY").arg(k("hash:small")).arg("int").arg(-50));
    w.run(c("HINCRBY").arg(k("w:hash")).arg("counter").arg(7));
    w.run(c("HINCRBYFLOAT").arg(k("w:hash")).arg("float").arg("0.1"));
    w.run(c("HINCRBYFLOAT").arg(k("w:hash")).arg("float").arg("1e3"));
    w.run(
        c("HSET")
            .arg(k("w:hash"))
            .arg(&b"bin\x00"[..])
            .arg(&b"\r\n"[..]),
    );
}

fn sets(w: &mut W, o: &WorkloadOptions) {
    let k = |name: &str| o.key(name);
    w.run(c("SADD").arg(k("set:int")).arg(77).arg(-1));
    w.run(c("SADD").arg(k("set:small")).arg("d").arg("e"));
    w.run(c("SREM").arg(k("set:small")).arg("a"));
    w.run(
        c("SREM")
            .arg(k("set:large"))
            .arg("member-5")
            .arg("member-6"),
    );
    w.run(c("SADD").arg(k("set:int")).arg("not-an-int"));
    w.run(c("SADD").arg(k("w:spop")).arg(&["x", "y", "z"][..]));
    w.run(c("SPOP").arg(k("w:spop")).arg(3));
    w.run(c("SADD").arg(k("w:spop-one")).arg("only"));
    w.run(c("SPOP").arg(k("w:spop-one")));
    w.run(c("SPOP").arg(k("set:pop")).arg(3));
}

fn zsets(w: &mut W, o: &WorkloadOptions) {
    let k = |name: &str| o.key(name);
    w.run(
        c("ZADD")
            .arg(k("zset:small"))
            .arg("2.5")
            .arg("new")
            .arg("-inf")
            .arg("int"),
    );
    w.run(
        c("ZADD")
            .arg(k("zset:small"))
            .arg("XX")
            .arg("CH")
            .arg("99")
            .arg("zero"),
    );
    w.run(
        c("ZADD")
            .arg(k("zset:small"))
            .arg("NX")
            .arg("1")
            .arg("zero"),
    );
    w.run(c("ZINCRBY").arg(k("zset:small")).arg("0.2").arg("tenth"));
    w.run(c("ZINCRBY").arg(k("w:zset")).arg("5").arg("m"));
    w.run(c("ZREM").arg(k("zset:small")).arg("huge"));
    w.run(c("ZADD").arg(k("zset:lex")).arg(0).arg("zz"));
    w.run(c("ZREMRANGEBYLEX").arg(k("zset:lex")).arg("[c").arg("(f"));
    w.run(c("ZREMRANGEBYRANK").arg(k("zset:large")).arg(0).arg(9));
    w.run(
        c("ZREMRANGEBYSCORE")
            .arg(k("zset:large"))
            .arg("-100")
            .arg("(0"),
    );
    w.run(
        c("ZADD")
            .arg(k("zset:large"))
            .arg("1e-7")
            .arg("tiny")
            .arg("-1e-300")
            .arg("negtiny"),
    );
}

fn streams(w: &mut W, o: &WorkloadOptions) {
    let k = |name: &str| o.key(name);
    let main = k("stream:main");
    for i in 0..5 {
        w.run(
            c("XADD")
                .arg(&main)
                .arg(format!("2000000-{i}"))
                .arg("w")
                .arg(i),
        );
    }
    w.run(c("XDEL").arg(&main).arg("2000000-1"));
    w.run(
        c("XADD")
            .arg(k("stream:large"))
            .arg("MAXLEN")
            .arg(1400)
            .arg("2000000-0")
            .arg("f")
            .arg("v"),
    );
    w.run(c("XTRIM").arg(k("stream:large")).arg("MAXLEN").arg(1000));
    w.run(
        c("XADD")
            .arg(k("w:stream-auto"))
            .arg("*")
            .arg("auto")
            .arg("id"),
    );

    // A stream owned by the workload: groups, pending, claims, consumer deletion.
    let ws = k("w:stream");
    for i in 1..=8 {
        w.run(c("XADD").arg(&ws).arg(format!("10-{i}")).arg("i").arg(i));
    }
    w.run(c("XGROUP").arg("CREATE").arg(&ws).arg("wg").arg("0"));
    w.run(c("XGROUP").arg("CREATE").arg(&ws).arg("wg2").arg("$"));
    w.run(
        c("XREADGROUP")
            .arg("GROUP")
            .arg("wg")
            .arg("dave")
            .arg("COUNT")
            .arg(4)
            .arg("STREAMS")
            .arg(&ws)
            .arg(">"),
    );
    w.run(
        c("XREADGROUP")
            .arg("GROUP")
            .arg("wg")
            .arg("erin")
            .arg("COUNT")
            .arg(2)
            .arg("STREAMS")
            .arg(&ws)
            .arg(">"),
    );
    w.run(c("XACK").arg(&ws).arg("wg").arg("10-1"));
    w.run(
        c("XCLAIM")
            .arg(&ws)
            .arg("wg")
            .arg("frank")
            .arg(0)
            .arg("10-2")
            .arg("10-3"),
    );
    w.run(
        c("XCLAIM")
            .arg(&ws)
            .arg("wg")
            .arg("erin")
            .arg(0)
            .arg("10-4")
            .arg("JUSTID"),
    );
    w.run(c("XGROUP").arg("SETID").arg(&ws).arg("wg2").arg("10-5"));
    w.run(
        c("XREADGROUP")
            .arg("GROUP")
            .arg("wg")
            .arg("gone")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&ws)
            .arg(">"),
    );
    w.run(
        c("XGROUP")
            .arg("DELCONSUMER")
            .arg(&ws)
            .arg("wg")
            .arg("gone"),
    );
    if w.kind.has_redis62_commands() {
        w.run(
            c("XGROUP")
                .arg("CREATECONSUMER")
                .arg(&ws)
                .arg("wg2")
                .arg("idle-one"),
        );
        w.run(
            c("XAUTOCLAIM")
                .arg(&ws)
                .arg("wg")
                .arg("dave")
                .arg(0)
                .arg("0-0")
                .arg("COUNT")
                .arg(1),
        );
    } else {
        w.skip("XGROUP CREATECONSUMER");
        w.skip("XAUTOCLAIM");
    }

    // The dataset's groups on stream:main, when present.
    let has_g1 = matches!(
        c("XINFO").arg("GROUPS").arg(&main).query::<Vec<Value>>(w.conn),
        Ok(groups) if !groups.is_empty()
    );
    if has_g1 {
        w.run(c("XACK").arg(&main).arg("g1").arg("1000-1"));
        w.run(
            c("XCLAIM")
                .arg(&main)
                .arg("g1")
                .arg("bob")
                .arg(0)
                .arg("1000-2"),
        );
        w.run(c("XGROUP").arg("SETID").arg(&main).arg("g2").arg("1000-5"));
        w.run(
            c("XREADGROUP")
                .arg("GROUP")
                .arg("g1")
                .arg("alice")
                .arg("COUNT")
                .arg(2)
                .arg("STREAMS")
                .arg(&main)
                .arg(">"),
        );
    }
}

fn scripts_and_tx(w: &mut W, o: &WorkloadOptions) {
    let k = |name: &str| o.key(name);
    w.run(
        c("EVAL")
            .arg("return redis.call('HSET', KEYS[1], 'lua', ARGV[1])")
            .arg(1)
            .arg(k("w:eval-hash"))
            .arg("from eval"),
    );
    let sha = match w.run(
        c("SCRIPT")
            .arg("LOAD")
            .arg("return redis.call('INCRBY', KEYS[1], ARGV[1])"),
    ) {
        Value::BulkString(b) => String::from_utf8(b).expect("SHA is ASCII"),
        Value::SimpleString(s) => s,
        other => panic!("SCRIPT LOAD returned {other:?}"),
    };
    w.run(c("EVALSHA").arg(&sha).arg(1).arg(k("w:evalsha")).arg(5));
    w.run(c("EVALSHA").arg(&sha).arg(1).arg(k("w:evalsha")).arg(6));

    // MULTI ... EXEC on one key family.
    w.run(&c("MULTI"));
    w.run(c("INCR").arg(k("w:tx-counter")));
    w.run(c("SET").arg(k("w:tx-string")).arg("in transaction"));
    w.run(c("LPUSH").arg(k("w:tx-list")).arg("t1").arg("t2"));
    w.run(c("HSET").arg(k("hash:small")).arg("tx").arg("1"));
    w.run(&c("EXEC"));

    if w.kind.has_functions() {
        w.run(c("FUNCTION").arg("LOAD").arg("REPLACE").arg(FUNCTION_CODE));
        w.run(
            c("FCALL")
                .arg("ss_set")
                .arg(1)
                .arg(k("w:fcall"))
                .arg("from function"),
        );
    } else {
        w.skip("FUNCTION LOAD / FCALL");
    }
}

/// Multi-key commands; `k` names the keys (tagged, or deliberately untagged).
fn multi_key(w: &mut W, k: &dyn Fn(&str) -> Vec<u8>) {
    w.run(
        c("MSET")
            .arg(k("a"))
            .arg("1")
            .arg(k("b"))
            .arg("2")
            .arg(k("c"))
            .arg("3"),
    );
    w.run(c("MSETNX").arg(k("n1")).arg("x").arg(k("n2")).arg("y"));
    w.run(
        c("MSETNX")
            .arg(k("n1"))
            .arg("ignored")
            .arg(k("n3"))
            .arg("ignored"),
    );
    w.run(c("SET").arg(k("bits1")).arg(&b"\xf0\x0f"[..]));
    w.run(c("SET").arg(k("bits2")).arg(&b"\xff\x00\xaa"[..]));
    for op in ["AND", "OR", "XOR"] {
        w.run(
            c("BITOP")
                .arg(op)
                .arg(k(&format!("bitop-{op}")))
                .arg(k("bits1"))
                .arg(k("bits2")),
        );
    }
    w.run(c("BITOP").arg("NOT").arg(k("bitop-NOT")).arg(k("bits1")));
    w.run(c("DEL").arg(k("a")).arg(k("b")).arg(k("missing")));
    w.run(c("UNLINK").arg(k("bitop-XOR")).arg(k("c")));
    w.run(c("SET").arg(k("rename-src")).arg("r"));
    w.run(c("RENAME").arg(k("rename-src")).arg(k("rename-dst")));
    w.run(c("SET").arg(k("renamenx-src")).arg("r"));
    w.run(c("RENAMENX").arg(k("renamenx-src")).arg(k("rename-dst")));
    w.run(c("RENAMENX").arg(k("renamenx-src")).arg(k("renamenx-dst")));
    w.run(c("RPUSH").arg(k("l1")).arg(&["1", "2", "3"][..]));
    w.run(c("RPOPLPUSH").arg(k("l1")).arg(k("l2")));
    w.run(c("BRPOPLPUSH").arg(k("l1")).arg(k("l2")).arg(1));
    w.run(c("BLPOP").arg(k("empty")).arg(k("l2")).arg(1));
    w.run(c("BRPOP").arg(k("empty")).arg(k("l1")).arg(1));
    w.run(c("SADD").arg(k("s1")).arg(&["a", "b", "c", "d"][..]));
    w.run(c("SADD").arg(k("s2")).arg(&["c", "d", "e"][..]));
    w.run(c("SDIFFSTORE").arg(k("sdiff")).arg(k("s1")).arg(k("s2")));
    w.run(c("SINTERSTORE").arg(k("sinter")).arg(k("s1")).arg(k("s2")));
    w.run(c("SUNIONSTORE").arg(k("sunion")).arg(k("s1")).arg(k("s2")));
    w.run(c("SMOVE").arg(k("s1")).arg(k("s2")).arg("a"));
    w.run(
        c("ZADD")
            .arg(k("z1"))
            .arg(1)
            .arg("a")
            .arg(2)
            .arg("b")
            .arg("inf")
            .arg("c"),
    );
    w.run(c("ZADD").arg(k("z2")).arg(10).arg("b").arg("0.5").arg("d"));
    w.run(
        c("ZINTERSTORE")
            .arg(k("zinter"))
            .arg(2)
            .arg(k("z1"))
            .arg(k("z2")),
    );
    w.run(
        c("ZUNIONSTORE")
            .arg(k("zunion"))
            .arg(2)
            .arg(k("z1"))
            .arg(k("z2"))
            .arg("WEIGHTS")
            .arg(2)
            .arg("0.5")
            .arg("AGGREGATE")
            .arg("MAX"),
    );
    w.run(c("PFADD").arg(k("hll1")).arg("a").arg("b"));
    w.run(c("PFADD").arg(k("hll2")).arg("b").arg("c"));
    w.run(
        c("PFMERGE")
            .arg(k("hllmerged"))
            .arg(k("hll1"))
            .arg(k("hll2")),
    );
    w.run(
        c("EVAL")
            .arg("redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCR', KEYS[2])")
            .arg(2)
            .arg(k("eval-a"))
            .arg(k("eval-b"))
            .arg("lua"),
    );
    w.run(&c("MULTI"));
    w.run(c("SET").arg(k("tx1")).arg("1"));
    w.run(c("RENAME").arg(k("tx1")).arg(k("tx2")));
    w.run(&c("EXEC"));
    if w.kind.has_redis62_commands() {
        w.run(c("COPY").arg(k("s2")).arg(k("s2-copy")));
        w.run(
            c("LMOVE")
                .arg(k("l2"))
                .arg(k("l1"))
                .arg("RIGHT")
                .arg("LEFT"),
        );
    } else {
        w.skip("COPY");
    }
}

fn databases(w: &mut W, o: &WorkloadOptions) {
    let k = |name: &str| o.key(name);
    w.run(c("SELECT").arg(1));
    w.run(c("SET").arg(k("w:db1")).arg("in db 1"));
    w.run(c("INCR").arg(k("str:int")));
    w.run(c("RPUSH").arg(k("list:small")).arg("db1-tail"));
    w.run(c("SELECT").arg(3));
    w.run(c("SET").arg(k("w:db3")).arg("in db 3"));
    w.run(c("HSET").arg(k("hash:small")).arg("db3").arg("yes"));
    select(w.conn, 0);
    w.run(
        c("SET")
            .arg(k("w:move-me"))
            .arg("moved")
            .arg("EX")
            .arg(9000),
    );
    w.run(c("MOVE").arg(k("w:move-me")).arg(1));
    w.run(c("SET").arg(k("w:move-to-3")).arg("moved to 3"));
    w.run(c("MOVE").arg(k("w:move-to-3")).arg(3));
    w.run(c("SWAPDB").arg(1).arg(3));
    w.run(c("SELECT").arg(FLUSHDB_DB));
    w.run(c("SET").arg(k("w:flush-a")).arg("gone"));
    w.run(c("RPUSH").arg(k("w:flush-b")).arg("gone"));
    w.run(&c("FLUSHDB"));
    w.run(c("SET").arg(k("w:after-flush")).arg("survives"));
    select(w.conn, 0);
}

fn expiring(w: &mut W, o: &WorkloadOptions) {
    let k = |name: &str| o.key(name);
    for i in 0..5 {
        w.run(
            c("SET")
                .arg(k(&format!("w:short-{i}")))
                .arg("soon gone")
                .arg("PX")
                .arg(50),
        );
    }
    w.run(c("HSET").arg(k("w:short-hash")).arg("f").arg("v"));
    w.run(c("PEXPIRE").arg(k("w:short-hash")).arg(50));
    std::thread::sleep(Duration::from_millis(150));
    // Touch them so the master expires them now and propagates the DELs.
    for i in 0..5 {
        w.run(c("EXISTS").arg(k(&format!("w:short-{i}"))));
    }
    w.run(c("EXISTS").arg(k("w:short-hash")));
}

fn volume(w: &mut W, o: &WorkloadOptions) {
    let k = |name: &str| o.key(name);
    let mut pipe = redis::pipe();
    let mut queued = 0;
    for i in 0..o.volume {
        match i % 3 {
            0 => pipe
                .cmd("SET")
                .arg(k(&format!("vol:str:{i}")))
                .arg(format!("v{i}"))
                .ignore(),
            1 => pipe
                .cmd("HSET")
                .arg(k(&format!("vol:hash:{}", i % 50)))
                .arg(format!("f{i}"))
                .arg(i)
                .ignore(),
            _ => pipe
                .cmd("RPUSH")
                .arg(k(&format!("vol:list:{}", i % 20)))
                .arg(i)
                .ignore(),
        };
        queued += 1;
        if queued == 500 || i + 1 == o.volume {
            pipe.query::<()>(w.conn).expect("volume pipeline");
            pipe = redis::pipe();
            queued = 0;
        }
    }
    w.summary.commands += o.volume;
    for name in ["SET", "HSET", "RPUSH"] {
        w.summary.executed.insert(name.to_string());
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after epoch")
        .as_secs()
}
