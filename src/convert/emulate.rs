//! Exact emulations of write commands (or command options) a target does not know, built from
//! commands it has: `ZADD GT|LT`, `ZRANGESTORE`, `ZDIFFSTORE`, `GEOSEARCHSTORE … BYRADIUS` and
//! `FLUSHALL|FLUSHDB SYNC` for targets before 6.2, and Valkey's own forms (`SET … IFEQ`,
//! `DELIFEQ`, `HGETDEL`, the hash-field expiry commands) for targets without them.
//!
//! Each function receives a command whose name the caller already matched (any case) and pushes
//! the replacement to `out`; a malformed command is pushed unchanged, so that the target rejects it
//! and the writer counts and logs that with the key.
//!
//! Hash-field expiries have no equivalent on a target without field TTLs. They are dropped: the
//! source propagates the deletion of each field when it expires (`HDEL`), so the target converges
//! to the source's fields; only the field TTLs themselves are not kept. The replication link
//! counts and warns about each field whose TTL is lost (see [`super::loss`]).

use bytes::Bytes;

use crate::cmd;
use crate::cmd::Cmd;

/// Lua: `score` strings as Redis reads them (`inf`, `+inf`, `-inf`, any case).
const LUA_NUM: &str = "local function num(s) local l = string.lower(s) \
if l == 'inf' or l == '+inf' then return math.huge elseif l == '-inf' then return -math.huge end \
return tonumber(s) end ";

/// Lua: `ZADD` of the (score, member) pairs in `t` into `KEYS[1]`, 256 pairs per call.
const LUA_ZADD_ALL: &str = "local function zadd_all(k, t) for i = 1, #t, 512 do \
local a = {} for j = i, math.min(i + 511, #t) do a[#a + 1] = t[j] end \
redis.call('ZADD', k, unpack(a)) end end ";

/// `ZADD key [NX|XX] GT|LT [CH] [INCR] score member …`: ARGV = GT|LT, NX|XX|'', INCR '1'|'',
/// then the score/member pairs.
fn zadd_cmp_script() -> String {
    format!(
        "{LUA_NUM}local k, cmp, cond, incr = KEYS[1], ARGV[1], ARGV[2], ARGV[3] == '1' \
for i = 4, #ARGV, 2 do local s, m = ARGV[i], ARGV[i + 1] \
local old = redis.call('ZSCORE', k, m) \
if not old then if cond ~= 'XX' then redis.call('ZADD', k, s, m) end \
elseif cond ~= 'NX' then local o = num(old) local n = num(s) if incr then n = o + n end \
if (cmp == 'GT' and n > o) or (cmp == 'LT' and n < o) then \
if incr then redis.call('ZINCRBY', k, s, m) else redis.call('ZADD', k, s, m) end end end end \
return 0"
    )
}

/// Rewrites `ZADD` with `GT`/`LT` (Redis 6.2+) for an older target; other `ZADD`s pass.
pub fn zadd_gt_lt(cmd: Cmd, out: &mut Vec<Cmd>) {
    let mut i = 2;
    let (mut cmp, mut cond, mut incr) = (None, "", "");
    while let Some(a) = cmd.args.get(i) {
        if a.eq_ignore_ascii_case(b"GT") {
            cmp = Some("GT");
        } else if a.eq_ignore_ascii_case(b"LT") {
            cmp = Some("LT");
        } else if a.eq_ignore_ascii_case(b"NX") {
            cond = "NX";
        } else if a.eq_ignore_ascii_case(b"XX") {
            cond = "XX";
        } else if a.eq_ignore_ascii_case(b"INCR") {
            incr = "1";
        } else if !a.eq_ignore_ascii_case(b"CH") {
            break;
        }
        i += 1;
    }
    let pairs = cmd.args.len().saturating_sub(i);
    let (Some(cmp), true) = (cmp, pairs > 0 && pairs.is_multiple_of(2)) else {
        out.push(cmd);
        return;
    };
    let mut c = cmd![
        "EVAL",
        zadd_cmp_script(),
        "1",
        &cmd.args[1],
        cmp,
        cond,
        incr
    ];
    c.args.extend(cmd.args[i..].iter().cloned());
    out.push(c);
}

/// `ZRANGESTORE dst src start stop [BYSCORE|BYLEX] [REV] [LIMIT o c]`: ARGV = start, stop,
/// SCORE|LEX|RANK, REV '1'|'', then LIMIT's offset and count or nothing.
const ZRANGESTORE_SCRIPT: &str = "local dst, src = KEYS[1], KEYS[2] \
local a, b, by, rev = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1' \
local lim = {} if ARGV[5] then lim = {'LIMIT', ARGV[5], ARGV[6]} end \
local t = {} \
if by == 'RANK' then \
local r = redis.call(rev and 'ZREVRANGE' or 'ZRANGE', src, a, b, 'WITHSCORES') \
for i = 1, #r, 2 do t[#t + 1] = r[i + 1] t[#t + 1] = r[i] end \
elseif by == 'SCORE' then \
local r = redis.call(rev and 'ZREVRANGEBYSCORE' or 'ZRANGEBYSCORE', src, a, b, 'WITHSCORES', unpack(lim)) \
for i = 1, #r, 2 do t[#t + 1] = r[i + 1] t[#t + 1] = r[i] end \
else \
local r = redis.call(rev and 'ZREVRANGEBYLEX' or 'ZRANGEBYLEX', src, a, b, unpack(lim)) \
for i = 1, #r do t[#t + 1] = redis.call('ZSCORE', src, r[i]) t[#t + 1] = r[i] end \
end \
redis.call('DEL', dst) ";

/// Rewrites `ZRANGESTORE` (Redis 6.2+) for an older target.
pub fn zrangestore(cmd: Cmd, out: &mut Vec<Cmd>) {
    let [_, dst, src, start, stop, opts @ ..] = cmd.args.as_slice() else {
        out.push(cmd);
        return;
    };
    let (mut by, mut rev, mut limit) = ("RANK", "", None);
    let mut i = 0;
    while let Some(o) = opts.get(i) {
        if o.eq_ignore_ascii_case(b"BYSCORE") {
            by = "SCORE";
        } else if o.eq_ignore_ascii_case(b"BYLEX") {
            by = "LEX";
        } else if o.eq_ignore_ascii_case(b"REV") {
            rev = "1";
        } else if o.eq_ignore_ascii_case(b"LIMIT") && i + 2 < opts.len() {
            limit = Some((opts[i + 1].clone(), opts[i + 2].clone()));
            i += 2;
        } else {
            out.push(cmd);
            return;
        }
        i += 1;
    }
    let script = format!("{LUA_ZADD_ALL}{ZRANGESTORE_SCRIPT}zadd_all(dst, t) return #t / 2");
    let mut c = cmd!["EVAL", script, "2", dst, src, start, stop, by, rev];
    if let Some((o, n)) = limit {
        c.args.push(o);
        c.args.push(n);
    }
    out.push(c);
}

/// `ZDIFFSTORE dst n k1 k2 …` (KEYS = dst, k1, k2, …): members of k1 (a sorted set or a set,
/// whose members score 1) in none of the others.
const ZDIFFSTORE_SCRIPT: &str = "local function has(k, m) local ty = redis.call('TYPE', k)['ok'] \
if ty == 'zset' then return redis.call('ZSCORE', k, m) ~= false \
elseif ty == 'set' then return redis.call('SISMEMBER', k, m) == 1 end return false end \
local t = {} local ty = redis.call('TYPE', KEYS[2])['ok'] local r = {} \
if ty == 'zset' then r = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES') \
elseif ty == 'set' then for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do r[#r + 1] = m r[#r + 1] = '1' end end \
for i = 1, #r, 2 do local keep = true \
for j = 3, #KEYS do if has(KEYS[j], r[i]) then keep = false break end end \
if keep then t[#t + 1] = r[i + 1] t[#t + 1] = r[i] end end \
redis.call('DEL', KEYS[1]) ";

/// Rewrites `ZDIFFSTORE` (Redis 6.2+) for an older target.
pub fn zdiffstore(cmd: Cmd, out: &mut Vec<Cmd>) {
    let n = cmd
        .args
        .get(2)
        .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
    let Some(n) = n.filter(|&n| n > 0 && cmd.args.len() == 3 + n) else {
        out.push(cmd);
        return;
    };
    let script = format!("{LUA_ZADD_ALL}{ZDIFFSTORE_SCRIPT}zadd_all(KEYS[1], t) return #t / 2");
    let mut c = cmd!["EVAL", script, n + 1, &cmd.args[1]];
    c.args.extend(cmd.args[3..].iter().cloned());
    out.push(c);
}

/// Rewrites `GEOSEARCHSTORE dst src FROMMEMBER m|FROMLONLAT lon lat BYRADIUS r unit [ASC|DESC]
/// [COUNT n] [STOREDIST]` (Redis 6.2+) as the `GEORADIUS[BYMEMBER] … STORE|STOREDIST dst` with the
/// same result. `BYBOX` and `COUNT … ANY` have no older equivalent: passed unchanged.
pub fn geosearchstore(cmd: Cmd, out: &mut Vec<Cmd>) {
    let [_, dst, src, opts @ ..] = cmd.args.as_slice() else {
        out.push(cmd);
        return;
    };
    let (mut from, mut radius, mut rest, mut storedist) = (None, None, Vec::new(), false);
    let mut i = 0;
    while let Some(o) = opts.get(i) {
        let take = |n: usize| opts.get(i + 1..i + 1 + n).map(|s| s.to_vec());
        if o.eq_ignore_ascii_case(b"FROMMEMBER") {
            let Some(v) = take(1) else { break };
            from = Some((true, v));
            i += 2;
        } else if o.eq_ignore_ascii_case(b"FROMLONLAT") {
            let Some(v) = take(2) else { break };
            from = Some((false, v));
            i += 3;
        } else if o.eq_ignore_ascii_case(b"BYRADIUS") {
            let Some(v) = take(2) else { break };
            radius = Some(v);
            i += 3;
        } else if o.eq_ignore_ascii_case(b"COUNT") {
            let Some(v) = take(1) else { break };
            if opts
                .get(i + 2)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"ANY"))
            {
                break;
            }
            rest.push(Bytes::from_static(b"COUNT"));
            rest.extend(v);
            i += 2;
        } else if o.eq_ignore_ascii_case(b"ASC") || o.eq_ignore_ascii_case(b"DESC") {
            rest.push(o.clone());
            i += 1;
        } else if o.eq_ignore_ascii_case(b"STOREDIST") {
            storedist = true;
            i += 1;
        } else {
            break;
        }
    }
    let (true, Some((member, origin)), Some(radius)) = (i == opts.len(), from, radius) else {
        out.push(cmd);
        return;
    };
    let name = if member {
        "GEORADIUSBYMEMBER"
    } else {
        "GEORADIUS"
    };
    let mut c = cmd![name, src];
    c.args.extend(origin);
    c.args.extend(radius);
    c.args.extend(rest);
    c.args.push(Bytes::from_static(if storedist {
        b"STOREDIST"
    } else {
        b"STORE"
    }));
    c.args.push(dst.clone());
    out.push(c);
}

/// `FLUSHALL|FLUSHDB [SYNC|ASYNC]`: `SYNC` (6.2+) is the default behaviour of older servers.
pub fn flush_sync(cmd: Cmd, out: &mut Vec<Cmd>) {
    let mut args = cmd.args.into_iter();
    let mut kept: Vec<Bytes> = args.next().into_iter().collect();
    kept.extend(args.filter(|a| !a.eq_ignore_ascii_case(b"SYNC")));
    out.push(Cmd { args: kept });
}

/// `SET key value … IFEQ cmp …` (Valkey 8.1+): the source only propagates it when the comparison
/// held, so the plain `SET` has the same effect.
pub fn set_without_ifeq(cmd: Cmd) -> Cmd {
    let mut args = Vec::with_capacity(cmd.args.len());
    let mut i = 0;
    while let Some(a) = cmd.args.get(i) {
        if i >= 3 && a.eq_ignore_ascii_case(b"IFEQ") {
            i += 2;
            continue;
        }
        args.push(a.clone());
        i += 1;
    }
    Cmd { args }
}

/// `DELIFEQ key value` (Valkey 9): propagated only when it deleted, so it is a `DEL`.
pub fn delifeq(cmd: Cmd, out: &mut Vec<Cmd>) {
    match cmd.args.get(1) {
        Some(key) if cmd.args.len() == 3 => out.push(cmd!["DEL", key]),
        _ => out.push(cmd),
    }
}

/// The fields after `FIELDS n` of a Valkey hash-field command, or `None` when malformed;
/// `pairs` says whether each field is followed by a value.
pub(super) fn fields(args: &[Bytes], pairs: bool) -> Option<&[Bytes]> {
    let at = args
        .iter()
        .skip(2)
        .position(|a| a.eq_ignore_ascii_case(b"FIELDS"))?
        + 2;
    let n: usize = std::str::from_utf8(args.get(at + 1)?).ok()?.parse().ok()?;
    let len = if pairs { n.checked_mul(2)? } else { n };
    let rest = args.get(at + 2..)?;
    (n > 0 && rest.len() == len).then_some(rest)
}

/// `HSETEX key [FNX|FXX] [expiry] FIELDS n f v …` → `HSET key f v …` (see the module doc on
/// field expiries).
pub fn hsetex(cmd: Cmd, out: &mut Vec<Cmd>) {
    match fields(&cmd.args, true) {
        Some(fv) => {
            let mut c = cmd!["HSET", &cmd.args[1]];
            c.args.extend(fv.iter().cloned());
            out.push(c);
        }
        None => out.push(cmd),
    }
}

/// `HGETDEL key FIELDS n f …` → `HDEL key f …`.
pub fn hgetdel(cmd: Cmd, out: &mut Vec<Cmd>) {
    match fields(&cmd.args, false) {
        Some(f) => {
            let mut c = cmd!["HDEL", &cmd.args[1]];
            c.args.extend(f.iter().cloned());
            out.push(c);
        }
        None => out.push(cmd),
    }
}

/// `HEXPIRE`/`HPEXPIRE`/`HEXPIREAT`/`HPEXPIREAT`/`HPERSIST`/`HGETEX`: only field TTLs change,
/// which the target cannot hold (see the module doc); nothing is sent. The loss is counted by
/// the caller ([`super::loss::hash_field_ttls_dropped`]).
pub fn field_ttl(_cmd: Cmd) {}
