//! Every form a master propagates lands on every target version it can reach.
//!
//! The forms are the server's own: the test sends *client* commands (mixed-case keywords, with
//! their options) to a real source, which rewrites them for its replicas as it does in
//! production (`SET … PXAT`, `PEXPIREAT`, `XADD … MAXLEN = n LIMIT m`, `XCLAIM … FORCE`, script
//! effects in `MULTI`, `HPEXPIREAT`, …). A native replica of the source receives the same stream
//! and is the oracle; shardsync replicates the source into a target of each version (same, older,
//! newer). One shardsync run per pair applies all forms; then target and replica are compared key
//! by key (types, values, TTLs, stream groups, consumers and PELs) and no write may have been
//! rejected.
//!
//! Not expressible on some targets, hence left out there (see `convert::compat`):
//! `GEOSEARCHSTORE … BYBOX` and `COUNT … ANY` before 6.2; functions before 7.0 (`FUNCTION LOAD`
//! is refused; `FCALL` effects still land); hash-field TTLs on Redis targets (the fields land,
//! the TTLs do not; the compare does not read field TTLs).
//!
//! Known gap, from a source before 7.0 into a 7.0+ target: a pending entry whose stream entry was
//! deleted and that is claimed afterwards (`XCLAIM`/`XAUTOCLAIM`) stays pending on the source;
//! 7.0+'s `XCLAIM` drops it, and no command can create a pending entry for a deleted ID on a live
//! stream (it needs the key rebuilt: the key-repair path). That case is left out of the forms.
//! The reverse (7.0+ source, older target) is rewritten (`convert::compat::rewrite_between`).

use crate::common::ServerKind;
use crate::common::compare::assert_no_differences;
use crate::common::util::now_ms;
use crate::oracle::Trio;

use ServerKind::*;

/// Splits on spaces (no argument here contains one, except scripts, given separately).
fn c(s: &str) -> Vec<Vec<u8>> {
    s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
}

fn with(mut v: Vec<Vec<u8>>, tail: &[&[u8]]) -> Vec<Vec<u8>> {
    v.extend(tail.iter().map(|a| a.to_vec()));
    v
}

/// The client commands for a source of kind `k`, in order. Keys are unique per form.
fn forms(k: ServerKind, dst: ServerKind) -> Vec<Vec<Vec<u8>>> {
    let r62 = k.at_least(6, 2);
    let r70 = k.at_least(7, 0);
    let now = now_ms();
    let (s_at, ms_at) = (now / 1000 + 300, now + 400_000);
    let mut f: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut add = |s: String| f.push(c(&s));
    // Strings and expiries.
    add("set f:s1 v EX 100".into());
    add("Set f:s2 v px 100000".into());
    add("SETEX f:s3 100 v".into());
    add("psetex f:s4 100000 v".into());
    add("set f:s5 v nx".into());
    add("set f:s5 w Xx KeepTTL".into());
    add("getset f:s9 v".into());
    add("incrbyfloat f:n1 1.5".into());
    add("IncrByFloat f:n1 1e2".into());
    add("set f:n2 10 ex 100".into());
    add("incrbyfloat f:n2 0.25".into());
    add("setrange f:s10 3 abc".into());
    add("append f:s10 xyz".into());
    add("mset f:m1 a f:m2 b".into());
    add("msetnx f:m3 a f:m4 b".into());
    add("setnx f:m5 a".into());
    add("expire f:m1 100".into());
    add("pexpire f:m2 100000".into());
    add(format!("expireat f:m3 {s_at}"));
    add(format!("pexpireat f:m4 {ms_at}"));
    add("expire f:m5 -1".into());
    add("set f:m6 v ex 100".into());
    add("persist f:m6".into());
    if r62 {
        add(format!("set f:s6 v exat {s_at}"));
        add(format!("set f:s7 v PXAT {ms_at}"));
        add("set f:s8 v get".into());
        add("set f:s2 v2 keepttl GET".into());
        add("getex f:s1 ex 50".into());
        add("GetEx f:s3 persist".into());
        add(format!("getex f:s4 pxat {ms_at}"));
        add("getdel f:s5".into());
    }
    if r70 {
        add("expire f:m1 200 gt".into());
        add("expire f:m2 10 NX".into());
        add("pexpire f:m6 5000 nx".into());
        add("set f:s11 v nx get".into());
    }
    // Hashes.
    add("hset f:h1 b 1 c 2".into());
    add("hincrbyfloat f:h1 a 2.5".into());
    add("HINCRBYFLOAT f:h1 a 1e1".into());
    add("hsetnx f:h1 d 4".into());
    add("hincrby f:h1 b 7".into());
    add("hdel f:h1 c".into());
    // Sets.
    add("sadd f:set1 a b c d e f g".into());
    add("spop f:set1".into());
    add("SPOP f:set1 2".into());
    add("sadd f:set2 a b c".into());
    add("spop f:set2 100".into());
    add("srandmember f:set1 2".into());
    add("sadd f:set3 x y".into());
    add("smove f:set3 f:set1 x".into());
    add("sunionstore f:set4 f:set1 f:set3".into());
    add("sdiffstore f:set5 f:set1 f:set3".into());
    // Lists and blocking pops.
    add("rpush f:l1 a b c d e f g h i j".into());
    add("blpop f:l1 0".into());
    add("BRPOP f:lnone f:l1 0".into());
    add("brpoplpush f:l1 f:l2 0".into());
    add("rpoplpush f:l1 f:l2".into());
    add("linsert f:l2 before e x".into());
    add("lset f:l2 0 y".into());
    add("lrem f:l2 1 x".into());
    if r62 {
        add("blmove f:l1 f:l2 left right 0".into());
        add("LMove f:l1 f:l3 Right Left".into());
        add("lpop f:l1 2".into());
        add("rpop f:l1 1".into());
    }
    if r70 {
        add("lmpop 1 f:l1 left count 2".into());
        add("BLMPOP 0 2 f:lnone f:l2 right COUNT 1".into());
    }
    add("ltrim f:l2 0 5".into());
    // Sorted sets and blocking pops.
    add("zadd f:z1 1 a 2 b 3 c 4 d 5 e 6 f".into());
    add("bzpopmin f:z1 0".into());
    add("bzpopmax f:znone f:z1 0".into());
    add("zpopmin f:z1 1".into());
    add("zincrby f:z1 2.5 c".into());
    add("zadd f:z2 1 a 2 b 3 c 1 x 1 y 1 z".into());
    add("zunionstore f:z3 2 f:z1 f:z2 weights 1 2 aggregate max".into());
    add("zinterstore f:z4 2 f:z1 f:z2".into());
    add("zremrangebyscore f:z3 -inf (2".into());
    if r62 {
        add("zadd f:z2 gt ch 5 a".into());
        add("ZADD f:z2 lt 9 b".into());
        add("zadd f:z2 xx gt incr 2 c".into());
        add("zadd f:z2 lt -inf new".into());
        add("zrangestore f:z5 f:z2 0 -1".into());
        add("zrangestore f:z6 f:z2 (1 +inf byscore limit 0 2".into());
        add("ZRangeStore f:z7 f:z2 [z - bylex rev".into());
        add("zdiffstore f:z8 2 f:z2 f:z1".into());
    }
    if r70 {
        add("zmpop 1 f:z1 max count 1".into());
        add("bzmpop 0 1 f:z1 MIN count 2".into());
    }
    // Geo.
    add("geoadd f:g 13.361389 38.115556 Palermo 15.087269 37.502669 Catania".into());
    add("georadius f:g 15 37 200 km asc store f:g1".into());
    add("georadiusbymember f:g Palermo 300 km storedist f:g2".into());
    if r62 {
        add("geosearchstore f:g3 f:g fromlonlat 15 37 byradius 200 km desc count 1".into());
        add("GeoSearchStore f:g4 f:g frommember Palermo ByRadius 300 km StoreDist".into());
    }
    // HyperLogLog, bits.
    add("pfadd f:p1 a b c".into());
    add("pfadd f:p2 c d".into());
    add("pfmerge f:p3 f:p1 f:p2".into());
    add("pfcount f:p1".into());
    add("setbit f:b1 7 1".into());
    add("bitfield f:b2 set u8 0 255 incrby u8 0 1 overflow sat incrby u8 8 300".into());
    add("bitop or f:b3 f:b1 f:b2".into());
    // Keyspace.
    add("rpush f:k1 3 1 2".into());
    add("sort f:k1 store f:k2".into());
    add("Sort f:k1 Desc Limit 0 2 Store f:k3".into());
    add("rename f:k2 f:k4".into());
    add("renamenx f:k3 f:k5".into());
    add("set f:k6 v".into());
    add("move f:k6 1".into());
    add("unlink f:k5".into());
    add("del f:k4".into());
    if r62 {
        add("copy f:k1 f:k7".into());
        add("COPY f:k1 f:k8 db 1 replace".into());
    }
    // Streams: approximate trims with LIMIT (propagated as `= n LIMIT m`), groups, claims.
    for i in 1..=250 {
        add(format!("xadd f:x1 {i}-1 a {i}"));
    }
    if r62 {
        add("XADD f:x1 MAXLEN ~ 10 LIMIT 120 * a x".into());
        add("xadd f:x1 maxlen ~ 10 limit 120 * a y".into());
        add("xtrim f:x1 minid ~ 0 limit 5".into());
        add("xadd f:x1 nomkstream minid = 200 * a z".into());
        add("xadd f:xnone nomkstream * a z".into());
    } else {
        add("xadd f:x1 maxlen ~ 10 * a x".into());
        add("XTRIM f:x1 MAXLEN = 60".into());
    }
    for i in 1..=6 {
        add(format!("xadd f:x2 1-{i} a {i}"));
    }
    add("xgroup create f:x2 g1 0".into());
    add("XGROUP CREATE f:x2 g2 $".into());
    add("xgroup create f:x3 g 0 mkstream".into());
    add("xreadgroup group g1 c1 count 3 streams f:x2 >".into());
    add("XReadGroup Group g1 c2 Count 1 NoAck Streams f:x2 >".into());
    add("xreadgroup group g2 c1 count 1 streams f:x2 0".into());
    add("xack f:x2 g1 1-1".into());
    add("xclaim f:x2 g1 c3 0 1-2 retrycount 5".into());
    add("xclaim f:x2 g1 c3 0 1-3 idle 1000 justid".into());
    add("xdel f:x2 1-3".into());
    add("xreadgroup group g1 c4 count 2 streams f:x2 >".into());
    if r62 {
        if !r70 && dst.at_least(7, 0) {
            // Known gap (see the module doc): skip the deleted entry 1-3.
            add("xautoclaim f:x2 g1 c5 0 1-4 count 2".into());
        } else {
            add("xautoclaim f:x2 g1 c5 0 0 count 2".into());
        }
        add("xgroup createconsumer f:x2 g1 c6".into());
    }
    add("xgroup delconsumer f:x2 g1 c4".into());
    add("xgroup setid f:x2 g2 1-4".into());
    if r70 {
        add("XGROUP SETID f:x2 g2 1-5 entriesread 5".into());
        add("xsetid f:x3 5-5 entriesadded 10 maxdeletedid 2-2".into());
    } else {
        add("xadd f:x3 3-1 a b".into());
        add("xsetid f:x3 5-5".into());
    }
    add("xgroup destroy f:x2 g2".into());
    // Transactions, scripts, functions.
    f.push(c("multi"));
    f.push(c("incr f:t1"));
    f.push(c("lpush f:t2 a"));
    f.push(c("expire f:t2 100"));
    f.push(c("exec"));
    f.push(with(
        c("eval"),
        &[
            b"redis.call('set', KEYS[1], ARGV[1]) redis.call('incr', KEYS[2]) \
              redis.call('pexpire', KEYS[1], 100000) return redis.call('spop', KEYS[3])",
            b"3",
            b"f:e1",
            b"f:e2",
            b"f:set1",
            b"x",
        ],
    ));
    f.push(with(
        c("EVAL"),
        &[
            b"redis.call('set', KEYS[1], redis.call('time')[1]) return 1",
            b"1",
            b"f:e3",
        ],
    ));
    if r70 {
        f.push(with(
            c("function load replace"),
            &[b"#!lua name=formslib\nredis.register_function('fset', function(keys, args) \
                redis.call('set', keys[1], args[1]) return redis.call('lpush', keys[2], args[1]) end)"],
        ));
        f.push(c("fcall fset 2 f:fn1 f:fn2 v"));
    }
    // Binary keys and values.
    f.push(vec![
        b"SET".to_vec(),
        b"f:bin\x00\xff\r\n".to_vec(),
        b"\x00\x01\x02\xfe".to_vec(),
        b"PX".to_vec(),
        b"100000".to_vec(),
    ]);
    // Valkey's own forms.
    if k.is_valkey() {
        let mut add = |s: String| f.push(c(&s));
        add("set f:v1 x".into());
        add("set f:v1 y ifeq x".into());
        add("SET f:v1 z IFEQ nope".into());
        add("set f:v2 a".into());
        add("delifeq f:v2 a".into());
        add("hset f:vh a 1 b 2 c 3 d 4 e 5".into());
        add("hsetex f:vh2 ex 100 fields 2 a 1 b 2".into());
        add("HSETEX f:vh px 100000 FIELDS 1 a 5".into());
        add("hexpire f:vh 100 fields 1 b".into());
        add(format!("hexpireat f:vh {s_at} fields 1 c"));
        add("hpersist f:vh fields 1 c".into());
        add("hgetex f:vh ex 50 fields 1 a".into());
        add("hgetdel f:vh fields 1 d".into());
        add("hexpire f:vh 0 fields 1 e".into());
    }
    // A database that is flushed, and the last: SWAPDB moves everything.
    f.push(c("select 2"));
    f.push(c("set f:d2 a"));
    f.push(c("flushdb async"));
    f.push(c("set f:d2b b"));
    if r62 {
        f.push(c("select 3"));
        f.push(c("set f:d3 a"));
        f.push(c("FlushDB Sync"));
    }
    f.push(c("select 0"));
    f.push(c("swapdb 0 1"));
    f
}

fn send(conn: &mut redis::Connection, args: &[Vec<u8>]) {
    let mut cmd = redis::cmd(&String::from_utf8_lossy(&args[0]));
    for a in &args[1..] {
        cmd.arg(a.as_slice());
    }
    if let Err(e) = cmd.query::<redis::Value>(conn) {
        let shown: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        panic!("source refused {shown:?}: {e}");
    }
}

fn pair(src: ServerKind, dst: ServerKind) {
    let mut t = Trio::start(src, dst);
    let mut sc = t.src.client();
    send(&mut sc, &c("rpush f:r0 a b c 1 2 3"));
    // RESTORE of a DUMP made by the source (7.0+ propagates it with ABSTTL).
    let dump: Vec<u8> = redis::cmd("DUMP")
        .arg("f:r0")
        .query(&mut sc)
        .expect("DUMP f:r0");
    send(
        &mut sc,
        &[
            b"restore".to_vec(),
            b"f:r1".to_vec(),
            b"100000".to_vec(),
            dump,
            b"replace".to_vec(),
        ],
    );
    for form in forms(src, dst) {
        send(&mut sc, &form);
    }
    t.catch_up();
    let diffs = t.diffs(&[0, 1, 2, 3]);
    // Functions need 7.0: there, `FUNCTION LOAD` is refused (counted); `FCALL` effects land.
    let rejected: Vec<String> = t
        .rejected_writes()
        .into_iter()
        .filter(|l| {
            dst.has_functions()
                || !(l.contains("command=FUNCTION") || l.contains("function library not written"))
        })
        .collect();
    assert!(
        rejected.is_empty(),
        "{} → {}: the target rejected writes:\n{}",
        src.name(),
        dst.name(),
        rejected.join("\n")
    );
    assert_no_differences(&diffs);
}

macro_rules! pairs {
    ($($name:ident: $src:expr => $dst:expr;)*) => {$(
        #[test]
        fn $name() {
            pair($src, $dst);
        }
    )*};
}

pairs! {
    redis60_to_redis60: Redis60 => Redis60;
    redis60_to_redis62: Redis60 => Redis62;
    redis60_to_redis70: Redis60 => Redis70;
    redis60_to_valkey91: Redis60 => Valkey91;
    redis62_to_redis60: Redis62 => Redis60;
    redis62_to_redis62: Redis62 => Redis62;
    redis62_to_redis70: Redis62 => Redis70;
    redis62_to_valkey91: Redis62 => Valkey91;
    redis70_to_redis60: Redis70 => Redis60;
    redis70_to_redis62: Redis70 => Redis62;
    redis70_to_redis70: Redis70 => Redis70;
    redis70_to_valkey91: Redis70 => Valkey91;
    valkey91_to_redis60: Valkey91 => Redis60;
    valkey91_to_redis62: Valkey91 => Redis62;
    valkey91_to_redis70: Valkey91 => Redis70;
    valkey91_to_valkey91: Valkey91 => Valkey91;
}
