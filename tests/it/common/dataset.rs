//! Deterministic typed dataset for full-sync tests.
//!
//! [`populate_typed_dataset`] writes, into an empty server, every value type and the
//! encodings that matter to an RDB parser: strings (raw, embstr, int, binary, empty, the
//! empty key name), small and large lists/hashes/sets/sorted sets, streams with deleted
//! entries, consumer groups and pending entries, an empty stream with a group,
//! HyperLogLogs (sparse and dense), bitmaps, geo, TTLs, several databases, one big value
//! and (7.0+/Valkey) a function library. Key names carry an optional prefix/suffix (e.g.
//! a `{tag}` hash tag) so cluster tests can reuse it. [`geoadd_places`] and
//! [`geosearchstore_near`] are the small geo set and the 6.2+ command an older target refuses
//! (tests of repairs and of exactly-once batches).

use std::collections::BTreeMap;

use redis::Connection;

use super::server::ServerKind;
use super::util::{DetRng, run, select};

/// Name of the function library loaded on 7.0+/Valkey.
pub const FUNCTION_LIBRARY: &str = "shardsync_lib";

/// Lua source of [`FUNCTION_LIBRARY`] (uses `redis.*`, which Valkey also accepts).
pub const FUNCTION_CODE: &str = "#!lua name=shardsync_lib\n\
redis.register_function('ss_echo', function(keys, args) return args[1] end)\n\
redis.register_function('ss_set', function(keys, args) return redis.call('SET', keys[1], args[1]) end)\n";

#[derive(Clone, Debug)]
pub struct DatasetOptions {
    /// Databases to fill; the first gets the full dataset, the others a smaller one.
    pub dbs: Vec<u32>,
    /// Prepended to every key name (e.g. `"{t}"` to keep a cluster test in one slot).
    pub key_prefix: String,
    /// Appended to every key name.
    pub key_suffix: String,
    /// Size of the one big string value (`big:value`); 0 skips it.
    pub big_value_bytes: usize,
    /// Element count of the "large" list/hash/set/zset/stream (list must stay > 1000).
    pub large_len: usize,
    /// Load [`FUNCTION_LIBRARY`] on servers that have functions.
    pub with_functions: bool,
    pub seed: u64,
    /// Unix time (ms) the absolute expiry `ttl:at` is based on; fixed when the options
    /// are built so two servers get the identical deadline.
    pub base_time_ms: u64,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            dbs: vec![0, 1, 3],
            key_prefix: String::new(),
            key_suffix: String::new(),
            big_value_bytes: 20 * 1024 * 1024,
            large_len: 1500,
            with_functions: true,
            seed: 0x5AAD_5EED,
            base_time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after epoch")
                .as_millis() as u64,
        }
    }
}

impl DatasetOptions {
    /// Cluster-friendly: db 0 only, every key prefixed with hash tag `{tag}`.
    pub fn cluster(tag: &str) -> Self {
        DatasetOptions {
            dbs: vec![0],
            key_prefix: format!("{{{tag}}}"),
            ..Default::default()
        }
    }

    /// Same coverage with a 1 MiB big value, for quick tests.
    pub fn small() -> Self {
        DatasetOptions {
            big_value_bytes: 1024 * 1024,
            ..Default::default()
        }
    }

    /// Full key name for `name`.
    pub fn key(&self, name: &[u8]) -> Vec<u8> {
        let mut k = self.key_prefix.as_bytes().to_vec();
        k.extend_from_slice(name);
        k.extend_from_slice(self.key_suffix.as_bytes());
        k
    }
}

#[derive(Clone, Debug, Default)]
pub struct DatasetSummary {
    /// `DBSIZE` of every filled database after population.
    pub keys_per_db: BTreeMap<u32, u64>,
    /// Function libraries loaded (empty below 7.0).
    pub function_libraries: Vec<String>,
}

impl DatasetSummary {
    pub fn total_keys(&self) -> u64 {
        self.keys_per_db.values().sum()
    }
}

/// Fills `conn`'s server (expected empty in `opts.dbs`) and returns what it wrote.
/// Leaves the connection on the first db of `opts.dbs`.
pub fn populate_typed_dataset(
    conn: &mut Connection,
    kind: ServerKind,
    opts: &DatasetOptions,
) -> DatasetSummary {
    assert!(
        !opts.dbs.is_empty(),
        "DatasetOptions::dbs must not be empty"
    );
    assert!(
        opts.large_len > 1000,
        "large_len must exceed 1000 (quicklist)"
    );
    let mut rng = DetRng::new(opts.seed);
    let mut summary = DatasetSummary::default();
    for (i, &db) in opts.dbs.iter().enumerate() {
        select(conn, db);
        if i == 0 {
            full_dataset(conn, opts, &mut rng);
        } else {
            secondary_dataset(conn, opts, db);
        }
    }
    for &db in &opts.dbs {
        select(conn, db);
        let n: u64 = redis::cmd("DBSIZE")
            .query(conn)
            .expect("DBSIZE after populate");
        summary.keys_per_db.insert(db, n);
    }
    select(conn, opts.dbs[0]);
    if opts.with_functions && kind.has_functions() {
        run(
            conn,
            redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(FUNCTION_CODE),
            "FUNCTION LOAD",
        );
        summary
            .function_libraries
            .push(FUNCTION_LIBRARY.to_string());
    }
    summary
}

fn set(conn: &mut Connection, key: &[u8], value: &[u8]) {
    run(conn, redis::cmd("SET").arg(key).arg(value), "dataset SET");
}

fn full_dataset(conn: &mut Connection, o: &DatasetOptions, rng: &mut DetRng) {
    let k = |name: &str| o.key(name.as_bytes());

    // Strings in every encoding.
    set(
        conn,
        &k("str:raw"),
        b"a raw-encoded string value that is clearly longer than forty-four bytes",
    );
    set(conn, &k("str:embstr"), b"short value");
    set(conn, &k("str:int"), b"12345");
    set(conn, &k("str:negint"), b"-987654321");
    set(conn, &k("str:maxint"), i64::MAX.to_string().as_bytes());
    set(conn, &k("str:float"), b"3.14159");
    set(conn, &k("str:binary"), b"bin\x00ary\r\nvalue\xff\xfe\x00");
    set(conn, &k("str:empty"), b"");
    set(
        conn,
        &k("str:utf8"),
        "h\u{e9}llo w\u{f6}rld \u{2713}".as_bytes(),
    );
    set(conn, &k("str:counter"), b"100");
    set(conn, &o.key(b""), b"value of the empty key name");
    set(conn, &o.key(b"bin:\x00\r\n\xff key"), b"binary key name");
    for i in 0..50 {
        set(
            conn,
            &k(&format!("str:many:{i}")),
            format!("value-{i}").as_bytes(),
        );
    }

    // Lists.
    run(
        conn,
        redis::cmd("RPUSH")
            .arg(k("list:small"))
            .arg("a")
            .arg("1")
            .arg("-2")
            .arg(&b"bin\x00\r\n"[..])
            .arg(""),
        "RPUSH list:small",
    );
    run(
        conn,
        redis::cmd("RPUSH")
            .arg(k("list:ints"))
            .arg(&[1, 2, 3, 300000, -7][..]),
        "RPUSH list:ints",
    );
    let mut cmd = redis::cmd("RPUSH");
    cmd.arg(k("list:large"));
    for i in 0..o.large_len {
        if i % 100 == 50 {
            cmd.arg(rng.bytes(16 * 1024));
        } else {
            cmd.arg(format!("item-{i}"));
        }
    }
    run(conn, &cmd, "RPUSH list:large");

    // Hashes.
    run(
        conn,
        redis::cmd("HSET")
            .arg(k("hash:small"))
            .arg("f1")
            .arg("v1")
            .arg("int")
            .arg("42")
            .arg("empty")
            .arg("")
            .arg(&b"bin\x00field"[..])
            .arg(&b"bin\r\nvalue\xff"[..]),
        "HSET hash:small",
    );
    let mut cmd = redis::cmd("HSET");
    cmd.arg(k("hash:large"));
    for i in 0..o.large_len {
        cmd.arg(format!("field-{i}"));
        if i % 97 == 0 {
            cmd.arg(rng.bytes(2048));
        } else {
            cmd.arg(format!("value-{i}"));
        }
    }
    run(conn, &cmd, "HSET hash:large");

    // Sets.
    run(
        conn,
        redis::cmd("SADD")
            .arg(k("set:int"))
            .arg(&[1i64, 2, 3, -5, 100000, 9007199254740993][..]),
        "SADD set:int",
    );
    run(
        conn,
        redis::cmd("SADD")
            .arg(k("set:small"))
            .arg("a")
            .arg("b")
            .arg("c")
            .arg(&b"bin\x00\xff"[..])
            .arg(""),
        "SADD set:small",
    );
    let mut cmd = redis::cmd("SADD");
    cmd.arg(k("set:large"));
    for i in 0..o.large_len {
        cmd.arg(format!("member-{i}"));
    }
    run(conn, &cmd, "SADD set:large");
    let mut cmd = redis::cmd("SADD");
    cmd.arg(k("set:largeint"));
    for i in 0..o.large_len {
        cmd.arg(i as i64 * 3 - 100);
    }
    run(conn, &cmd, "SADD set:largeint");
    run(
        conn,
        redis::cmd("SADD")
            .arg(k("set:pop"))
            .arg("p1")
            .arg("p2")
            .arg("p3"),
        "SADD set:pop",
    );

    // Sorted sets, with the scores that break naive double formatting.
    run(
        conn,
        redis::cmd("ZADD")
            .arg(k("zset:small"))
            .arg("0.1")
            .arg("tenth")
            .arg("-0.5")
            .arg("neg-half")
            .arg("1e300")
            .arg("huge")
            .arg("inf")
            .arg("pinf")
            .arg("-inf")
            .arg("ninf")
            .arg("42")
            .arg("int")
            .arg("0")
            .arg("zero")
            .arg("-7")
            .arg("negint")
            .arg("1.5")
            .arg(&b"bin\x00member"[..]),
        "ZADD zset:small",
    );
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(k("zset:large"));
    for i in 0..o.large_len {
        cmd.arg(i as f64 * 1.5 - 100.25).arg(format!("zm-{i}"));
    }
    run(conn, &cmd, "ZADD zset:large");
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(k("zset:lex"));
    for c in b'a'..=b'z' {
        cmd.arg(0).arg(vec![c]);
    }
    run(conn, &cmd, "ZADD zset:lex");
    run(
        conn,
        redis::cmd("GEOADD")
            .arg(k("geo:sicily"))
            .arg("13.361389")
            .arg("38.115556")
            .arg("Palermo")
            .arg("15.087269")
            .arg("37.502669")
            .arg("Catania")
            .arg("14.2681")
            .arg("40.8518")
            .arg("Naples"),
        "GEOADD geo:sicily",
    );

    // Streams.
    streams(conn, o);

    // HyperLogLog (sparse and dense), bitmap.
    let mut cmd = redis::cmd("PFADD");
    cmd.arg(k("hll:sparse"));
    for i in 0..10 {
        cmd.arg(format!("visitor-{i}"));
    }
    run(conn, &cmd, "PFADD hll:sparse");
    let mut cmd = redis::cmd("PFADD");
    cmd.arg(k("hll:dense"));
    for i in 0..5000 {
        cmd.arg(format!("dense-{i}"));
    }
    run(conn, &cmd, "PFADD hll:dense");
    for bit in [0u64, 7, 100, 1000, 100_000] {
        run(
            conn,
            redis::cmd("SETBIT").arg(k("bitmap")).arg(bit).arg(1),
            "SETBIT bitmap",
        );
    }

    // TTLs: ms-precise, long, absolute, on collections.
    set(conn, &k("ttl:ms"), b"expires in 86400.123 s");
    run(
        conn,
        redis::cmd("PEXPIRE").arg(k("ttl:ms")).arg(86_400_123),
        "PEXPIRE ttl:ms",
    );
    set(conn, &k("ttl:long"), b"expires in ten years");
    run(
        conn,
        redis::cmd("EXPIRE").arg(k("ttl:long")).arg(315_360_000),
        "EXPIRE ttl:long",
    );
    let now_ms = o.base_time_ms;
    set(conn, &k("ttl:at"), b"expires at an absolute time");
    run(
        conn,
        redis::cmd("PEXPIREAT")
            .arg(k("ttl:at"))
            .arg(now_ms + 3 * 86_400_000 + 777),
        "PEXPIREAT ttl:at",
    );
    run(
        conn,
        redis::cmd("HSET").arg(k("ttl:hash")).arg("f").arg("v"),
        "HSET ttl:hash",
    );
    run(
        conn,
        redis::cmd("EXPIRE").arg(k("ttl:hash")).arg(100_000),
        "EXPIRE ttl:hash",
    );
    run(
        conn,
        redis::cmd("RPUSH").arg(k("ttl:list")).arg("x").arg("y"),
        "RPUSH ttl:list",
    );
    run(
        conn,
        redis::cmd("PEXPIRE").arg(k("ttl:list")).arg(7_200_500),
        "PEXPIRE ttl:list",
    );
    run(
        conn,
        redis::cmd("SET")
            .arg(k("ttl:persist-me"))
            .arg("v")
            .arg("EX")
            .arg(5000),
        "SET ttl:persist-me EX",
    );

    // One big value.
    if o.big_value_bytes > 0 {
        let big = rng.bytes(o.big_value_bytes);
        set(conn, &k("big:value"), &big);
    }
}

fn streams(conn: &mut Connection, o: &DatasetOptions) {
    let k = |name: &str| o.key(name.as_bytes());
    let main = k("stream:main");
    for i in 0..12 {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&main).arg(format!("1000-{i}")).arg("n").arg(i);
        if i % 3 == 0 {
            cmd.arg("extra").arg(&b"bin\x00\r\n"[..]);
        }
        run(conn, &cmd, "XADD stream:main");
    }
    run(
        conn,
        redis::cmd("XDEL").arg(&main).arg("1000-3").arg("1000-7"),
        "XDEL stream:main",
    );
    run(
        conn,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&main)
            .arg("g1")
            .arg("0"),
        "XGROUP CREATE g1",
    );
    run(
        conn,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&main)
            .arg("g2")
            .arg("1000-10"),
        "XGROUP CREATE g2",
    );
    for (consumer, count) in [("alice", 3), ("bob", 2)] {
        run(
            conn,
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g1")
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&main)
                .arg(">"),
            "XREADGROUP g1",
        );
    }
    // carol exists with nothing pending: she reads the last entry of g2 and ACKs it
    // (an XREADGROUP that returns nothing creates no consumer on Redis 7.0).
    run(
        conn,
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g2")
            .arg("carol")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&main)
            .arg(">"),
        "XREADGROUP g2 carol",
    );
    run(
        conn,
        redis::cmd("XACK").arg(&main).arg("g1").arg("1000-0"),
        "XACK g1",
    );
    run(
        conn,
        redis::cmd("XACK").arg(&main).arg("g2").arg("1000-11"),
        "XACK g2",
    );

    run(
        conn,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(k("stream:empty"))
            .arg("grp")
            .arg("$")
            .arg("MKSTREAM"),
        "XGROUP CREATE stream:empty MKSTREAM",
    );

    let trimmed = k("stream:trimmed");
    for i in 1..=20 {
        run(
            conn,
            redis::cmd("XADD")
                .arg(&trimmed)
                .arg(format!("2000-{i}"))
                .arg("i")
                .arg(i),
            "XADD stream:trimmed",
        );
    }
    run(
        conn,
        redis::cmd("XTRIM").arg(&trimmed).arg("MAXLEN").arg(5),
        "XTRIM stream:trimmed",
    );

    let large = k("stream:large");
    let mut pipe = redis::pipe();
    for i in 0..o.large_len {
        pipe.cmd("XADD")
            .arg(&large)
            .arg(format!("{}-{}", 3000 + i / 10, i % 10))
            .arg("seq")
            .arg(i)
            .arg("payload")
            .arg(format!("payload-{i}"))
            .ignore();
    }
    pipe.query::<()>(conn).expect("XADD stream:large pipeline");
}

fn secondary_dataset(conn: &mut Connection, o: &DatasetOptions, db: u32) {
    let k = |name: &str| o.key(name.as_bytes());
    set(conn, &k("str:raw"), format!("db{db} raw string").as_bytes());
    set(
        conn,
        &k("str:int"),
        (db as i64 * 1000).to_string().as_bytes(),
    );
    set(conn, &k(&format!("str:only-db{db}")), b"x");
    run(
        conn,
        redis::cmd("RPUSH")
            .arg(k("list:small"))
            .arg(format!("db{db}"))
            .arg("b"),
        "RPUSH secondary",
    );
    run(
        conn,
        redis::cmd("HSET")
            .arg(k("hash:small"))
            .arg("db")
            .arg(db)
            .arg("f")
            .arg("v"),
        "HSET secondary",
    );
    run(
        conn,
        redis::cmd("SADD").arg(k("set:small")).arg("x").arg(db),
        "SADD secondary",
    );
    run(
        conn,
        redis::cmd("ZADD")
            .arg(k("zset:small"))
            .arg(db)
            .arg("m")
            .arg("0.25")
            .arg("q"),
        "ZADD secondary",
    );
    run(
        conn,
        redis::cmd("XADD")
            .arg(k("stream:main"))
            .arg("5-1")
            .arg("db")
            .arg(db),
        "XADD secondary",
    );
    run(
        conn,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(k("stream:main"))
            .arg("g")
            .arg("0"),
        "XGROUP secondary",
    );
    set(conn, &k("ttl:ms"), b"secondary ttl");
    run(
        conn,
        redis::cmd("PEXPIRE").arg(k("ttl:ms")).arg(3_600_321),
        "PEXPIRE secondary",
    );
}

/// `GEOADD places` of Palermo and Catania: the geo set [`geosearchstore_near`] reads.
pub fn geoadd_places() -> redis::Cmd {
    let mut cmd = redis::cmd("GEOADD");
    cmd.arg("places")
        .arg("13.361389")
        .arg("38.115556")
        .arg("Palermo")
        .arg("15.087269")
        .arg("37.502669")
        .arg("Catania");
    cmd
}

/// `GEOSEARCHSTORE near places … BYBOX`: a 6.2+ command with no 6.0 form (a Redis 6.0 target
/// refuses it at queue time; shardsync copies `near` from the source instead).
pub fn geosearchstore_near() -> redis::Cmd {
    let mut cmd = redis::cmd("GEOSEARCHSTORE");
    cmd.arg("near")
        .arg("places")
        .arg("FROMLONLAT")
        .arg("15")
        .arg("37")
        .arg("BYBOX")
        .arg("400")
        .arg("400")
        .arg("km")
        .arg("ASC");
    cmd
}
