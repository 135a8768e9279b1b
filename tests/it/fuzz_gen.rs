//! Proptest generator of write sequences for the differential fuzzer (`diff_fuzz`): every kind of
//! write a source can propagate, with its options, mixed-case keywords, small and large
//! encodings, binary keys, streams with groups, transactions, scripts and functions.
//!
//! An [`Op`] is rendered into client commands at run time ([`render`]), against the source's
//! current state where a command needs existing stream IDs (`XACK`/`XCLAIM`/`XDEL` pick the n-th
//! entry), so that shrinking keeps sequences meaningful. Commands the source refuses (a wrong
//! type, a missing key) are simply no-ops: the oracle sees the same.

use proptest::prelude::*;
use redis::Connection;

use crate::common::ServerKind;

/// Keys per type: a few names each (collisions across types happen on purpose, rarely).
fn key(kind: &str, n: u8) -> Vec<u8> {
    match n {
        0 => format!("{kind}:a").into_bytes(),
        1 => format!("{kind}:b").into_bytes(),
        2 => [kind.as_bytes(), b":\x00\xff\r\n"].concat(),
        _ => b"shared".to_vec(),
    }
}

/// One generated step.
#[derive(Clone, Debug)]
pub enum Op {
    Set { k: u8, v: u16, opt: u8 },
    GetEx { k: u8, opt: u8 },
    Expire { t: u8, k: u8, how: u8, cond: u8 },
    Str { k: u8, how: u8, v: u16 },
    Hash { k: u8, how: u8, n: u16 },
    Members { k: u8, how: u8, n: u16 },
    List { k: u8, how: u8, n: u16 },
    ZSet { k: u8, how: u8, n: u16, opt: u8 },
    Stream { k: u8, how: u8, n: u8, opt: u8 },
    Group { k: u8, how: u8, g: u8, c: u8, n: u8 },
    Keyspace { k: u8, how: u8 },
    Script { k: u8, how: u8, v: u16 },
    Multi(Vec<Op>),
    Select(u8),
    SwapDb,
    FlushDb,
}

fn leaf() -> impl Strategy<Value = Op> {
    let k = 0u8..4;
    prop_oneof![
        3 => (k.clone(), any::<u16>(), any::<u8>()).prop_map(|(k, v, opt)| Op::Set { k, v, opt }),
        1 => (k.clone(), any::<u8>()).prop_map(|(k, opt)| Op::GetEx { k, opt }),
        2 => (0u8..6, k.clone(), any::<u8>(), any::<u8>())
            .prop_map(|(t, k, how, cond)| Op::Expire { t, k, how, cond }),
        2 => (k.clone(), any::<u8>(), any::<u16>()).prop_map(|(k, how, v)| Op::Str { k, how, v }),
        3 => (k.clone(), any::<u8>(), any::<u16>()).prop_map(|(k, how, n)| Op::Hash { k, how, n }),
        3 => (k.clone(), any::<u8>(), any::<u16>()).prop_map(|(k, how, n)| Op::Members { k, how, n }),
        3 => (k.clone(), any::<u8>(), any::<u16>()).prop_map(|(k, how, n)| Op::List { k, how, n }),
        3 => (k.clone(), any::<u8>(), any::<u16>(), any::<u8>())
            .prop_map(|(k, how, n, opt)| Op::ZSet { k, how, n, opt }),
        4 => (k.clone(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(k, how, n, opt)| Op::Stream { k, how, n, opt }),
        4 => (k.clone(), any::<u8>(), 0u8..2, 0u8..3, any::<u8>())
            .prop_map(|(k, how, g, c, n)| Op::Group { k, how, g, c, n }),
        2 => (k.clone(), any::<u8>()).prop_map(|(k, how)| Op::Keyspace { k, how }),
        2 => (k, any::<u8>(), any::<u16>()).prop_map(|(k, how, v)| Op::Script { k, how, v }),
        1 => (0u8..2).prop_map(Op::Select),
        1 => Just(Op::SwapDb),
        1 => Just(Op::FlushDb),
    ]
}

/// A sequence of up to `max` steps, some of them `MULTI` blocks.
pub fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    let step = prop_oneof![
        9 => leaf(),
        1 => prop::collection::vec(leaf(), 1..5).prop_map(Op::Multi),
    ];
    prop::collection::vec(step, 1..max)
}

/// Writes `word` with the case of each letter chosen by `mask` (mixed-case keywords).
fn kw(word: &str, mask: u64) -> Vec<u8> {
    word.bytes()
        .enumerate()
        .map(|(i, b)| {
            if mask >> (i % 64) & 1 == 1 {
                b.to_ascii_lowercase()
            } else {
                b
            }
        })
        .collect()
}

/// Builds one command: keyword words (upper case in the literal) get mixed case, `Arg::B` and
/// numbers go verbatim.
pub enum A {
    K(&'static str),
    B(Vec<u8>),
    N(i64),
    S(String),
}

fn build(mask: u64, parts: Vec<A>) -> Vec<Vec<u8>> {
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| match p {
            A::K(w) => kw(w, mask.rotate_left(i as u32 * 7)),
            A::B(b) => b,
            A::N(n) => n.to_string().into_bytes(),
            A::S(s) => s.into_bytes(),
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The n-th entry ID of stream `key` on the source (read-only), or `0-1`.
fn nth_id(conn: &mut Connection, key: &[u8], n: u8) -> Vec<u8> {
    let v: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(8)
        .query(conn)
        .unwrap_or_default();
    match v.get(n as usize % 9) {
        Some((id, _)) => id.clone().into_bytes(),
        None => format!("0-{}", n % 4 + 1).into_bytes(),
    }
}

use A::*;

/// The client commands of `op` for a source of kind `k`; `conn` is the source (read-only use).
pub fn render(op: &Op, k: ServerKind, conn: &mut Connection, out: &mut Vec<Vec<Vec<u8>>>) {
    let r62 = k.at_least(6, 2);
    let r70 = k.at_least(7, 0);
    let mask = {
        let s = format!("{op:?}");
        s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        })
    };
    let c = |parts: Vec<A>| build(mask, parts);
    let now = now_ms();
    match *op {
        Op::Set { k: n, v, opt } => {
            let mut p = vec![K("SET"), B(key("s", n)), N(v as i64)];
            match opt % 8 {
                0 => p.extend([K("EX"), N(100 + v as i64 % 50)]),
                1 => p.extend([K("PX"), N(100_000 + v as i64)]),
                2 if r62 => p.extend([K("EXAT"), N(now / 1000 + 200)]),
                3 if r62 => p.extend([K("PXAT"), N(now + 300_000)]),
                4 => p.push(K("KEEPTTL")),
                5 => p.push(K("NX")),
                6 => p.extend([K("XX"), K("KEEPTTL")]),
                _ => {}
            }
            if r62 && opt & 0x10 != 0 && (r70 || opt % 8 != 5) {
                p.push(K("GET"));
            }
            if opt & 0x20 != 0 {
                // A big value (raw encoding) instead.
                p[2] = B(vec![b'x'; 100 + v as usize % 200]);
            }
            out.push(c(p));
        }
        Op::GetEx { k: n, opt } if r62 => {
            let mut p = vec![K("GETEX"), B(key("s", n))];
            match opt % 5 {
                0 => p.extend([K("EX"), N(500)]),
                1 => p.extend([K("PXAT"), N(now + 400_000)]),
                2 => p.push(K("PERSIST")),
                3 => {
                    out.push(c(vec![K("GETDEL"), B(key("s", n))]));
                    return;
                }
                _ => p.extend([K("PX"), N(250_000)]),
            }
            out.push(c(p));
        }
        Op::GetEx { .. } => {}
        Op::Expire { t, k: n, how, cond } => {
            let kinds = ["s", "h", "l", "z", "x", "set"];
            let kk = key(kinds[t as usize % 6], n);
            let mut p = match how % 6 {
                0 => vec![K("EXPIRE"), B(kk), N(100 + how as i64)],
                1 => vec![K("PEXPIRE"), B(kk), N(200_000)],
                2 => vec![K("EXPIREAT"), B(kk), N(now / 1000 + 300)],
                3 => vec![K("PEXPIREAT"), B(kk), N(now + 350_000)],
                4 => vec![K("PERSIST"), B(kk)],
                _ => vec![K("EXPIRE"), B(kk), N(-1)],
            };
            if r70 && how % 6 < 4 {
                match cond % 6 {
                    0 => p.push(K("NX")),
                    1 => p.push(K("XX")),
                    2 => p.push(K("GT")),
                    3 => p.push(K("LT")),
                    _ => {}
                }
            }
            out.push(c(p));
        }
        Op::Str { k: n, how, v } => {
            let kk = key("s", n);
            out.push(c(match how % 7 {
                0 => vec![K("INCRBYFLOAT"), B(kk), S(format!("{}.5", v % 100))],
                1 => vec![K("APPEND"), B(kk), N(v as i64)],
                2 => vec![K("SETRANGE"), B(kk), N(v as i64 % 20), S("abc".into())],
                3 => vec![K("INCRBY"), B(kk), N(v as i64)],
                4 => vec![K("SETBIT"), B(kk), N(v as i64 % 64), N(1)],
                5 => vec![K("PFADD"), B(key("p", n)), N(v as i64), N(v as i64 / 2)],
                _ => vec![K("DEL"), B(kk)],
            }));
        }
        Op::Hash { k: n, how, n: m } => {
            let kk = key("h", n);
            out.push(c(match how % 5 {
                0 => {
                    // Large: 150 fields leaves the small encoding.
                    let cnt = if m % 4 == 0 { 150 } else { 1 + m % 5 };
                    let mut p = vec![K("HSET"), B(kk)];
                    for i in 0..cnt {
                        p.extend([S(format!("f{i}")), N(m as i64 + i as i64)]);
                    }
                    p
                }
                1 => vec![
                    K("HINCRBYFLOAT"),
                    B(kk),
                    S(format!("f{}", m % 4)),
                    S("1.25".into()),
                ],
                2 => vec![K("HDEL"), B(kk), S(format!("f{}", m % 4))],
                3 => vec![K("HSETNX"), B(kk), S(format!("f{}", m % 6)), N(m as i64)],
                _ => vec![K("HINCRBY"), B(kk), S(format!("f{}", m % 4)), N(3)],
            }));
        }
        Op::Members { k: n, how, n: m } => {
            let kk = key("set", n);
            out.push(c(match how % 6 {
                0 => {
                    // 600 integers leave the intset.
                    let cnt = if m % 5 == 0 { 600 } else { 1 + m % 6 };
                    let mut p = vec![K("SADD"), B(kk)];
                    p.extend((0..cnt).map(|i| N((m as i64 + i as i64) % 1000)));
                    p
                }
                1 => vec![K("SPOP"), B(kk)],
                2 => vec![K("SPOP"), B(kk), N(m as i64 % 700)],
                3 => vec![K("SMOVE"), B(kk), B(key("set", n + 1)), N(m as i64 % 10)],
                4 => vec![K("SREM"), B(kk), N(m as i64 % 10)],
                _ => vec![
                    K("SUNIONSTORE"),
                    B(key("set", n + 1)),
                    B(kk),
                    B(key("set", 0)),
                ],
            }));
        }
        Op::List { k: n, how, n: m } => {
            let kk = key("l", n);
            let other = key("l", (n + 1) % 3);
            out.push(c(match how % 9 {
                0 => {
                    let cnt = if m % 4 == 0 { 200 } else { 1 + m % 6 };
                    let mut p = vec![K(if m % 2 == 0 { "RPUSH" } else { "LPUSH" }), B(kk)];
                    p.extend((0..cnt).map(|i| N(m as i64 + i as i64)));
                    p
                }
                1 => vec![K("BLPOP"), B(kk), S("0.01".into())],
                2 => vec![K("BRPOPLPUSH"), B(kk), B(other), S("0.01".into())],
                3 if r62 => vec![K("LPOP"), B(kk), N(m as i64 % 4)],
                4 if r62 => vec![
                    K("BLMOVE"),
                    B(kk),
                    B(other),
                    K("LEFT"),
                    K("RIGHT"),
                    S("0.01".into()),
                ],
                5 if r62 => vec![K("LMOVE"), B(kk), B(other), K("RIGHT"), K("LEFT")],
                6 if r70 => vec![
                    K("LMPOP"),
                    N(2),
                    B(other),
                    B(kk),
                    K("RIGHT"),
                    K("COUNT"),
                    N(2),
                ],
                7 if r70 => vec![K("BLMPOP"), S("0.01".into()), N(1), B(kk), K("LEFT")],
                8 => vec![K("LTRIM"), B(kk), N(1), N(-2)],
                _ => vec![K("RPOP"), B(kk)],
            }));
        }
        Op::ZSet {
            k: n,
            how,
            n: m,
            opt,
        } => {
            let kk = key("z", n);
            let other = key("z", (n + 1) % 3);
            out.push(c(match how % 8 {
                0 => {
                    let mut p = vec![K("ZADD"), B(kk)];
                    if r62 {
                        match opt % 6 {
                            0 => p.push(K("GT")),
                            1 => p.push(K("LT")),
                            2 => p.extend([K("XX"), K("GT"), K("CH")]),
                            _ => {}
                        }
                    }
                    if opt % 6 == 3 {
                        p.push(K("NX"));
                    }
                    let cnt = if m % 5 == 0 { 150 } else { 1 + m % 4 };
                    if opt & 0x40 != 0 && r62 && cnt == 1 {
                        p.push(K("INCR"));
                    }
                    for i in 0..cnt {
                        let score = match (m as u32 + i as u32) % 7 {
                            0 => "-inf".to_string(),
                            1 => "+inf".to_string(),
                            x => format!("{}.{}", x as i64 - 3, m % 10),
                        };
                        p.extend([S(score), S(format!("m{}", (m as u32 + i as u32) % 20))]);
                    }
                    p
                }
                1 => vec![K("BZPOPMIN"), B(kk), S("0.01".into())],
                2 => vec![K("ZPOPMAX"), B(kk), N(m as i64 % 3)],
                3 if r62 => vec![K("ZRANGESTORE"), B(other), B(kk), N(0), N(m as i64 % 4)],
                4 if r62 => vec![
                    K("ZRANGESTORE"),
                    B(other),
                    B(kk),
                    S("(0".into()),
                    S("+inf".into()),
                    K("BYSCORE"),
                    K("LIMIT"),
                    N(0),
                    N(2),
                ],
                5 if r62 => vec![K("ZDIFFSTORE"), B(other), N(2), B(kk), B(key("z", 0))],
                6 if r70 => vec![K("ZMPOP"), N(1), B(kk), K("MIN"), K("COUNT"), N(2)],
                7 => vec![
                    K("ZINCRBY"),
                    B(kk),
                    S("2.5".into()),
                    S(format!("m{}", m % 20)),
                ],
                _ => vec![
                    K("ZUNIONSTORE"),
                    B(other),
                    N(2),
                    B(kk),
                    B(key("z", 0)),
                    K("AGGREGATE"),
                    K("MAX"),
                ],
            }));
        }
        Op::Stream {
            k: n,
            how,
            n: m,
            opt,
        } => {
            let kk = key("x", n);
            match how % 5 {
                0 | 1 => {
                    let mut p = vec![K("XADD"), B(kk)];
                    if r62 && opt % 7 == 0 {
                        p.push(K("NOMKSTREAM"));
                    }
                    match opt % 5 {
                        0 => p.extend([K("MAXLEN"), S("~".into()), N(m as i64 % 20)]),
                        1 => p.extend([K("MAXLEN"), N(m as i64 % 20 + 1)]),
                        2 if r62 => p.extend([K("MINID"), S("~".into()), N(0)]),
                        _ => {}
                    }
                    if r62 && opt % 5 == 0 && opt & 0x8 != 0 {
                        p.extend([K("LIMIT"), N(m as i64 % 50)]);
                    }
                    p.push(S("*".into()));
                    let fields = if opt & 0x80 != 0 { 40 } else { 1 };
                    for i in 0..fields {
                        p.extend([S(format!("f{i}")), N(m as i64)]);
                    }
                    // Several at once, so trims with ~ and node boundaries happen.
                    for _ in 0..(1 + m as usize % 3 * 40) {
                        out.push(c(p.iter().map(clone_a).collect()));
                    }
                }
                2 => {
                    let mut p = vec![K("XTRIM"), B(kk)];
                    if r62 && opt % 3 == 0 {
                        let id = nth_id(conn, &key("x", n), m);
                        p.extend([
                            K("MINID"),
                            S("~".into()),
                            B(id),
                            K("LIMIT"),
                            N(m as i64 % 150),
                        ]);
                    } else if r62 && opt % 3 == 1 {
                        p.extend([
                            K("MAXLEN"),
                            S("~".into()),
                            N(m as i64 % 30),
                            K("LIMIT"),
                            N(100 + m as i64),
                        ]);
                    } else {
                        p.extend([K("MAXLEN"), S("=".into()), N(m as i64 % 30)]);
                    }
                    out.push(c(p));
                }
                3 => {
                    let id = nth_id(conn, &kk, m);
                    out.push(c(vec![K("XDEL"), B(kk), B(id)]));
                }
                _ => {
                    let id = nth_id(conn, &kk, m);
                    let mut p = vec![K("XSETID"), B(kk), B(id)];
                    if r70 && opt % 2 == 0 {
                        p.extend([
                            K("ENTRIESADDED"),
                            N(100_000),
                            K("MAXDELETEDID"),
                            S("0-1".into()),
                        ]);
                    }
                    out.push(c(p));
                }
            }
        }
        Op::Group {
            k: n,
            how,
            g,
            c: cn,
            n: m,
        } => {
            let kk = key("x", n);
            let group = S(format!("g{g}"));
            let consumer = S(format!("c{cn}"));
            let p = match how % 10 {
                0 => vec![
                    K("XGROUP"),
                    K("CREATE"),
                    B(kk),
                    group,
                    S(if m % 2 == 0 { "0" } else { "$" }.into()),
                    K("MKSTREAM"),
                ],
                1 | 2 => {
                    let mut p = vec![
                        K("XREADGROUP"),
                        K("GROUP"),
                        group,
                        consumer,
                        K("COUNT"),
                        N(1 + m as i64 % 5),
                    ];
                    if m % 5 == 0 {
                        p.push(K("NOACK"));
                    }
                    p.extend([
                        K("STREAMS"),
                        B(kk),
                        S(if m % 7 == 0 { "0" } else { ">" }.into()),
                    ]);
                    p
                }
                3 => {
                    let id = nth_id(conn, &kk, m);
                    vec![K("XACK"), B(kk), group, B(id)]
                }
                4 => {
                    let id = nth_id(conn, &kk, m);
                    let mut p = vec![K("XCLAIM"), B(kk), group, consumer, N(0), B(id)];
                    if m % 3 == 0 {
                        p.extend([K("RETRYCOUNT"), N(m as i64)]);
                    }
                    if m % 4 == 0 {
                        p.push(K("JUSTID"));
                    }
                    p
                }
                5 if r62 => vec![
                    K("XAUTOCLAIM"),
                    B(kk),
                    group,
                    consumer,
                    N(0),
                    S("0".into()),
                    K("COUNT"),
                    N(1 + m as i64 % 3),
                ],
                6 if r62 => vec![K("XGROUP"), K("CREATECONSUMER"), B(kk), group, consumer],
                7 => vec![K("XGROUP"), K("DELCONSUMER"), B(kk), group, consumer],
                8 => {
                    let id = nth_id(conn, &kk, m);
                    let mut p = vec![K("XGROUP"), K("SETID"), B(kk), group, B(id)];
                    if r70 && m % 2 == 0 {
                        p.extend([K("ENTRIESREAD"), N(m as i64 % 4)]);
                    }
                    p
                }
                _ => vec![K("XGROUP"), K("DESTROY"), B(kk), group],
            };
            out.push(c(p));
        }
        Op::Keyspace { k: n, how } => {
            let kinds = ["s", "h", "l", "z", "x", "set"];
            let kk = key(kinds[how as usize % 6], n);
            let other = key(kinds[how as usize % 6], (n + 1) % 3);
            out.push(c(match how / 6 % 7 {
                0 => vec![K("RENAME"), B(kk), B(other)],
                1 if r62 => vec![K("COPY"), B(kk), B(other), K("REPLACE")],
                2 => vec![K("SORT"), B(key("l", n)), K("STORE"), B(key("l", 2))],
                3 => vec![K("UNLINK"), B(kk)],
                4 => vec![K("MOVE"), B(kk), N(1)],
                5 => vec![K("RENAMENX"), B(kk), B(other)],
                _ => vec![K("DEL"), B(kk), B(other)],
            }));
        }
        Op::Script { k: n, how, v } => {
            const SCRIPTS: [&str; 4] = [
                "redis.pcall('SET', KEYS[1], ARGV[1]) redis.pcall('PEXPIRE', KEYS[1], 300000) return 1",
                "redis.pcall('INCRBYFLOAT', KEYS[1], ARGV[1]) return redis.pcall('SPOP', KEYS[2])",
                "redis.pcall('XADD', KEYS[3], '*', 'f', ARGV[1]) redis.pcall('LPUSH', KEYS[2], ARGV[1]) return 1",
                "redis.pcall('SET', KEYS[1], redis.call('TIME')[1]) return 1",
            ];
            if r70 && how % 5 == 4 {
                out.push(c(vec![
                    K("FCALL"),
                    S("fuzzwrite".into()),
                    N(2),
                    B(key("s", n)),
                    B(key("l", n)),
                    N(v as i64),
                ]));
                return;
            }
            out.push(c(vec![
                K("EVAL"),
                S(SCRIPTS[how as usize % 4].into()),
                N(3),
                B(key("s", n)),
                B(key(if how % 4 == 1 { "set" } else { "l" }, n)),
                B(key("x", n)),
                N(v as i64 % 100),
            ]));
        }
        Op::Multi(ref ops) => {
            out.push(c(vec![K("MULTI")]));
            for o in ops {
                render(o, k, conn, out);
            }
            out.push(c(vec![K("EXEC")]));
        }
        Op::Select(db) => out.push(c(vec![K("SELECT"), N(db as i64)])),
        Op::SwapDb => out.push(c(vec![K("SWAPDB"), N(0), N(1)])),
        Op::FlushDb => out.push(c(vec![K("FLUSHDB"), K(if r62 { "SYNC" } else { "ASYNC" })])),
    }
}

fn clone_a(a: &A) -> A {
    match a {
        K(w) => K(w),
        B(b) => B(b.clone()),
        N(n) => N(*n),
        S(s) => S(s.clone()),
    }
}

/// The function library the fuzzer's `FCALL`s use (7.0+ sources).
pub const FUNCTION_LIB: &str = "#!lua name=fuzzlib\n\
redis.register_function('fuzzwrite', function(keys, args) \
redis.pcall('SET', keys[1], args[1]) return redis.pcall('RPUSH', keys[2], args[1]) end)";
