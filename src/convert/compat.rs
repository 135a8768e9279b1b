//! Rewrites of live replication-stream commands so that the target accepts them with the same
//! effect: forms that only a replica accepts, and commands or options newer than the target.
//!
//! What masters propagate was read from real servers (their replication stream / AOF; the
//! integration test `propagated_forms` replays every form on every version pair):
//! - Redis 6.0: client forms, except `INCRBYFLOAT` → `SET … KEEPTTL`, `HINCRBYFLOAT` → `HSET`,
//!   `SPOP` → `SREM`s (in `MULTI`) or `DEL`, blocking pops → `LPOP`/`RPOP`/`RPOPLPUSH`/`ZPOPMIN`,
//!   `XADD/XTRIM … MAXLEN ~ n` → `MAXLEN = <len>`, group reads → `XCLAIM … FORCE JUSTID LASTID`
//!   and `XGROUP SETID`, script effects in `MULTI`/`EXEC`, `EXPIRE` in the past → `DEL`.
//! - Redis 6.2: also `SET … EX|PX|SETEX` → `SET … PX`, `GETEX` → `PEXPIRE`/`PERSIST`, `GETDEL` →
//!   `DEL`, `BLMOVE` → `LMOVE`, approximate trims with `LIMIT` → `MAXLEN|MINID = n LIMIT m`
//!   (the client's case kept) — a form a normal client may not send.
//! - Redis 7.0: also `SET`/`SETEX`/`GETEX` → `SET … PXAT` / `PEXPIREAT` (GET dropped), the
//!   `EXPIRE` family → `PEXPIREAT key t [NX|XX|GT|LT]`, `LMPOP`/`BLMPOP` → `LPOP|RPOP key n`,
//!   `ZMPOP`/`BZMPOP` → `ZPOPMIN|ZPOPMAX key n`, `GEOADD` → `ZADD`, `RESTORE ttl` → `… ABSTTL`,
//!   `XSETID … ENTRIESADDED … MAXDELETEDID`, `XGROUP SETID … ENTRIESREAD`.
//! - Valkey 9.1: as 7.0, plus `SET … IFEQ v` as sent, `DELIFEQ` → `DEL`, `HSETEX`/`HGETEX`/
//!   `HEXPIRE…` → `HSETEX … PXAT` / `HPEXPIREAT` / `HPERSIST`, `HGETDEL` as sent, and an expired
//!   hash field → `HDEL`.
//!
//! Rewrites, by target:
//! - every target: `XADD/XTRIM … MAXLEN|MINID =|(none) n LIMIT m` → without `LIMIT m` (a replica
//!   ignores it; a client gets "LIMIT cannot be used without the special ~ option"); `RESTORE` of a
//!   payload whose RDB version the target cannot read → the plain commands that recreate the key
//!   (see [`rewrite_for_target`]).
//! - not Valkey 8.1+: `SET … IFEQ v` → without `IFEQ v` (only propagated when it held). Not
//!   Valkey 9+: `DELIFEQ` → `DEL`, `HSETEX` → `HSET`, `HGETDEL` → `HDEL`, field-expiry commands
//!   dropped (the source propagates each field's deletion; see [`super::emulate`]).
//! - below 6.2: `SET … PXAT/EXAT t` → `SET … PX max(1, t − now)` (other options kept in order,
//!   `GET` dropped); `LPOP/RPOP key n` → `LTRIM` (same effect in one command); `LMOVE/BLMOVE` →
//!   `RPOPLPUSH` for RIGHT→LEFT, else a small `EVAL`; `XADD/XTRIM … MINID` → the XADD then an
//!   `EVAL` deleting the entries below the threshold; `NOMKSTREAM` and `LIMIT n` dropped;
//!   `XGROUP CREATECONSUMER` → `XREADGROUP GROUP g c COUNT 1 STREAMS key 0` (reading the
//!   consumer's own, empty history creates it and changes nothing else); `COPY` → an `EVAL` of
//!   `DUMP` + `RESTORE` with the source key's TTL; `ZADD GT|LT`, `ZRANGESTORE`, `ZDIFFSTORE` →
//!   an `EVAL` with the same effect; `GEOSEARCHSTORE … BYRADIUS` → `GEORADIUS[BYMEMBER] … STORE`;
//!   `FLUSHALL|FLUSHDB SYNC` → without `SYNC`.
//! - below 7.0: `XSETID` extra arguments, `XGROUP CREATE/SETID … ENTRIESREAD n`, and the
//!   `NX|XX|GT|LT` options of the EXPIRE family dropped (the source only propagates the command
//!   when the condition held); `SPUBLISH` → `PUBLISH`.
//! - Anything else passes through unchanged (e.g. `GEOSEARCHSTORE … BYBOX`): the target rejects
//!   what it lacks and the writer counts and logs that. `FUNCTION …`: see [`super::functions`].
//!
//! Every keyword match here is ASCII-case-insensitive: masters propagate the client's spelling.

use bytes::Bytes;

use super::emulate;
use super::keys::dump_payload_version;
use super::{ConvertError, ConvertOptions, Converter};
use crate::cmd;
use crate::cmd::Cmd;
use crate::net::server_info::ServerInfo;
use crate::rdb::{
    DumpReader, Flavor, Item, KeyHeader, ParseOptions, ValueKind, validate_dump_payload,
};

/// `EVAL` body moving one element between lists for `LMOVE src dst FROM TO`.
const LMOVE_SCRIPT: &str = "local v = redis.call(ARGV[1] == 'LEFT' and 'LPOP' or 'RPOP', KEYS[1]) \
if v then redis.call(ARGV[2] == 'LEFT' and 'LPUSH' or 'RPUSH', KEYS[2], v) end return v";

/// `EVAL` body for `COPY src dst [DB n] [REPLACE]`: ARGV[1] is 1 for REPLACE, ARGV[2] the db or "".
const COPY_SCRIPT: &str = "local v = redis.call('DUMP', KEYS[1]) if not v then return 0 end \
local ttl = redis.call('PTTL', KEYS[1]) if ttl < 0 then ttl = 0 end \
if ARGV[2] ~= '' then redis.call('SELECT', ARGV[2]) end \
if ARGV[1] == '1' then redis.call('RESTORE', KEYS[2], ttl, v, 'REPLACE') return 1 end \
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end \
redis.call('RESTORE', KEYS[2], ttl, v) return 1";

/// The command that creates consumer `consumer` of `group` with nothing pending; `has_62` says
/// whether the target has `XGROUP CREATECONSUMER` (Redis 6.2+).
pub fn create_consumer(key: &Bytes, group: &Bytes, consumer: &Bytes, has_62: bool) -> Cmd {
    if has_62 {
        cmd!["XGROUP", "CREATECONSUMER", key, group, consumer]
    } else {
        cmd![
            "XREADGROUP",
            "GROUP",
            group,
            consumer,
            "COUNT",
            "1",
            "STREAMS",
            key,
            "0"
        ]
    }
}

/// `COPY src dst [DB n] [REPLACE]` for targets without `COPY` (before 6.2).
fn copy_pre62(cmd: Cmd, out: &mut Vec<Cmd>) {
    let (Some(src), Some(dst)) = (cmd.args.get(1).cloned(), cmd.args.get(2).cloned()) else {
        out.push(cmd);
        return;
    };
    let mut replace = "0";
    let mut db = Bytes::new();
    let mut i = 3;
    while i < cmd.args.len() {
        if cmd.args[i].eq_ignore_ascii_case(b"REPLACE") {
            replace = "1";
        } else if cmd.args[i].eq_ignore_ascii_case(b"DB") {
            if let Some(d) = cmd.args.get(i + 1) {
                db = d.clone();
            }
            i += 1;
        }
        i += 1;
    }
    out.push(cmd!["EVAL", COPY_SCRIPT, "2", src, dst, replace, db]);
}

/// `EVAL` body deleting the entries of stream `KEYS[1]` with an ID below `ARGV[1]` (a full
/// `ms-seq` ID), the effect of `XTRIM key MINID = id`.
const MINID_SCRIPT: &str = "local n = 0 \
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', ARGV[1])) do \
if e[1] ~= ARGV[1] then redis.call('XDEL', KEYS[1], e[1]) n = n + 1 end end return n";

/// Appends to `out` the commands that have `cmd`'s effect on `target` (usually `cmd` itself).
/// `now_ms` is the current Unix time in ms, for turning relative expiries absolute and absolute
/// ones relative.
///
/// A `RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]` whose payload the target
/// cannot read (see [`restore_needs_decode`]) is decoded and replaced by the plain commands that
/// recreate the key, replacing any existing one (`IDLETIME`/`FREQ` are dropped). If the payload
/// cannot be decoded (corrupt, a module value, unknown type or version), or the arguments are
/// malformed, the original `RESTORE` is pushed unchanged: the target will reject it, and the
/// writer logs and counts that error with the key.
pub fn rewrite_for_target(cmd: Cmd, target: &ServerInfo, now_ms: i64, out: &mut Vec<Cmd>) {
    let pre62 = !target.at_least(6, 2);
    let pre70 = !target.at_least(7, 0);
    if cmd.is("FUNCTION") {
        super::functions::rewrite_function(cmd, target, out);
        return;
    }
    // Valkey's own forms (Valkey 8.1: `SET … IFEQ`; 9.0: hash-field expiries, `HGETDEL`,
    // `DELIFEQ`) for a target without them.
    let ifeq = target.valkey_at_least(8, 1);
    let valkey9 = target.valkey_at_least(9, 0);
    let mut buf = [0u8; 20];
    let Some(name) = upper_name(&cmd, &mut buf) else {
        out.push(cmd);
        return;
    };
    match name {
        b"RESTORE" if restore_needs_decode(&cmd, target) => {
            if let Err(cmd) = restore_as_commands(cmd, target, now_ms, out) {
                out.push(cmd);
            }
        }
        // Every target: the replica-only `MAXLEN|MINID = n LIMIT m` form.
        b"XADD" if pre62 => xadd_pre62(cmd, out),
        b"XTRIM" if pre62 => xtrim_pre62(cmd, out),
        b"XADD" => out.push(drop_exact_limit(cmd, 2)),
        b"XTRIM" => out.push(drop_exact_limit(cmd, 2)),
        b"SET" if pre62 || !ifeq => {
            let cmd = if ifeq {
                cmd
            } else {
                emulate::set_without_ifeq(cmd)
            };
            if pre62 {
                set_absolute_to_relative(cmd, now_ms, out)
            } else {
                out.push(cmd)
            }
        }
        b"DELIFEQ" if !valkey9 => emulate::delifeq(cmd, out),
        b"HSETEX" if !valkey9 => emulate::hsetex(cmd, out),
        b"HGETDEL" if !valkey9 => emulate::hgetdel(cmd, out),
        b"HEXPIRE" | b"HPEXPIRE" | b"HEXPIREAT" | b"HPEXPIREAT" | b"HPERSIST" | b"HGETEX"
            if !valkey9 =>
        {
            emulate::field_ttl(cmd)
        }
        b"LPOP" | b"RPOP" if pre62 && cmd.args.len() == 3 => pop_count(cmd, out),
        b"LMOVE" | b"BLMOVE" if pre62 => lmove(cmd, out),
        b"COPY" if pre62 => copy_pre62(cmd, out),
        b"ZADD" if pre62 => emulate::zadd_gt_lt(cmd, out),
        b"ZRANGESTORE" if pre62 => emulate::zrangestore(cmd, out),
        b"ZDIFFSTORE" if pre62 => emulate::zdiffstore(cmd, out),
        b"GEOSEARCHSTORE" if pre62 => emulate::geosearchstore(cmd, out),
        b"FLUSHALL" | b"FLUSHDB" if pre62 => emulate::flush_sync(cmd, out),
        b"XGROUP" if pre70 => xgroup(cmd, pre62, out),
        b"XSETID" if pre70 => out.push(truncated(cmd, 3)),
        b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT" if pre70 => out.push(truncated(cmd, 3)),
        b"SPUBLISH" if pre70 => {
            let mut c = cmd;
            c.args[0] = Bytes::from_static(b"PUBLISH");
            out.push(c);
        }
        _ => out.push(cmd),
    }
}

/// [`rewrite_for_target`] for commands from `source`, which also adapts what depends on the
/// source's semantics: a 7.0+ source drops a pending entry whose stream entry was deleted when it
/// is claimed (and propagates that `XCLAIM`), where an older target would keep it; there the
/// `XCLAIM` becomes an `EVAL` that `XACK`s an ID missing from the stream and claims it otherwise.
pub fn rewrite_between(
    cmd: Cmd,
    source: &ServerInfo,
    target: &ServerInfo,
    now_ms: i64,
    out: &mut Vec<Cmd>,
) {
    if source.at_least(7, 0) && !target.at_least(7, 0) && cmd.is("XCLAIM") && cmd.args.len() >= 6 {
        let mut c = cmd![
            "EVAL",
            XCLAIM_DELETED_SCRIPT,
            "1",
            &cmd.args[1],
            &cmd.args[5]
        ];
        c.args.extend(cmd.args[2..].iter().cloned());
        out.push(c);
        return;
    }
    rewrite_for_target(cmd, target, now_ms, out)
}

/// `XCLAIM key group consumer min-idle id [options]` as 7.0 applies it to one ID (masters
/// propagate one ID per `XCLAIM`): ARGV = id, group, consumer, min-idle, id, options.
const XCLAIM_DELETED_SCRIPT: &str = "if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then \
return redis.call('XACK', KEYS[1], ARGV[2], ARGV[1]) end \
return redis.call('XCLAIM', KEYS[1], unpack(ARGV, 2))";

/// The command name of `cmd` upper-cased into `buf`, or `None` when longer than `buf` (no
/// command this module rewrites is).
fn upper_name<'a>(cmd: &Cmd, buf: &'a mut [u8; 20]) -> Option<&'a [u8]> {
    let name = cmd.name();
    let up = buf.get_mut(..name.len())?;
    up.copy_from_slice(name);
    up.make_ascii_uppercase();
    Some(up)
}

/// `XADD`/`XTRIM` with the trim clause at `args[at..]` (after `NOMKSTREAM` for `XADD`) without
/// its `LIMIT n` when the operator is not `~`. Masters propagate approximate trims as
/// `MAXLEN|MINID = <exact> LIMIT <n>`, which only a replica accepts ("LIMIT cannot be used
/// without the special ~ option"); without `~` the limit has no effect, so dropping it keeps the
/// meaning on every target.
fn drop_exact_limit(mut cmd: Cmd, mut at: usize) -> Cmd {
    if cmd.is("XADD")
        && cmd
            .args
            .get(at)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"NOMKSTREAM"))
    {
        at += 1;
    }
    let Some((_, op, _, end)) = trim_clause(&cmd.args, at) else {
        return cmd;
    };
    let approx = op.as_deref() == Some(b"~".as_slice());
    let limit_at = end.saturating_sub(2);
    if !approx
        && end <= cmd.args.len()
        && cmd
            .args
            .get(limit_at)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"LIMIT"))
        && limit_at > at
    {
        cmd.args.drain(limit_at..end);
    }
    cmd
}

/// True when `cmd` is `RESTORE key ttl payload …` whose payload version `target` cannot read.
pub fn restore_needs_decode(cmd: &Cmd, target: &ServerInfo) -> bool {
    let Some(payload) = cmd.args.get(3) else {
        return false;
    };
    let Some(v) = dump_payload_version(payload) else {
        return false;
    };
    // Redis RDB versions are below 80; Valkey's own start at 80.
    let flavor = if v >= 80 {
        Flavor::Valkey
    } else {
        Flavor::Redis
    };
    !target.accepts_dump(flavor, v)
}

/// Decodes the payload of `RESTORE key ttl payload [options]` and pushes the plain commands that
/// recreate the key on `target`. Gives the command back, with nothing pushed, when that is not
/// possible.
fn restore_as_commands(
    cmd: Cmd,
    target: &ServerInfo,
    now_ms: i64,
    out: &mut Vec<Cmd>,
) -> Result<(), Cmd> {
    restore_as_commands_chunked(cmd, target, now_ms, &mut |cmds| out.extend(cmds))
}

/// [`restore_as_commands`] handing the commands to `emit` a chunk at a time: memory stays at
/// the payload plus one chunk, whatever the value's size. CPU-heavy for a large payload: the
/// replication link runs it on a blocking thread.
pub fn restore_as_commands_chunked(
    cmd: Cmd,
    target: &ServerInfo,
    now_ms: i64,
    emit: &mut dyn FnMut(Vec<Cmd>),
) -> Result<(), Cmd> {
    let [_, key, ttl, payload, opts @ ..] = cmd.args.as_slice() else {
        return Err(cmd);
    };
    let Some(ttl) = parse_i64(ttl).filter(|t| *t >= 0) else {
        return Err(cmd);
    };
    let (mut absttl, mut idle_secs, mut freq) = (false, None, None);
    let mut i = 0;
    while let Some(opt) = opts.get(i) {
        match upper(opt).as_slice() {
            b"REPLACE" => i += 1,
            b"ABSTTL" => {
                absttl = true;
                i += 1;
            }
            b"IDLETIME" => {
                let Some(s) = opts.get(i + 1).and_then(|v| parse_i64(v)) else {
                    return Err(cmd);
                };
                idle_secs = u64::try_from(s).ok();
                i += 2;
            }
            b"FREQ" => {
                let Some(f) = opts.get(i + 1).and_then(|v| parse_i64(v)) else {
                    return Err(cmd);
                };
                freq = u8::try_from(f).ok();
                i += 2;
            }
            _ => return Err(cmd),
        }
    }
    let payload = payload.clone();
    let key = key.clone();
    let opts = ParseOptions::default();
    // Checked whole first (memory: one chunk), so nothing is emitted for a payload that turns
    // out corrupt at its end: the RESTORE then goes through unchanged and is refused visibly.
    if validate_dump_payload(&payload, &opts).is_err() {
        return Err(cmd);
    }
    let Ok(mut value) = DumpReader::new(&payload, &opts) else {
        return Err(cmd);
    };
    if value.kind == ValueKind::Module {
        return Err(cmd);
    }
    let expire_ms = match ttl {
        0 => None,
        t if absttl => Some(t),
        t => Some(now_ms.saturating_add(t)),
    };
    let header = KeyHeader {
        db: 0,
        key,
        rdb_type: value.rdb_type,
        kind: value.kind,
        expire_ms,
        idle_secs,
        freq,
    };
    let mut opts = ConvertOptions::new(target.clone());
    opts.source_flavor = value.flavor;
    opts.source_rdb_version = u32::from(value.version);
    opts.use_restore = false;
    // Without REPLACE the source only propagates the RESTORE when the key did not exist there.
    opts.replace = true;
    let mut conv = Converter::new(opts);
    let mut cmds = Vec::new();
    let mut errors = Vec::new();
    let mut written = false;
    let mut feed = |item: Item, cmds: &mut Vec<_>| {
        if let Err(e) = conv.feed(item, cmds) {
            errors.push(e);
        }
    };
    feed(Item::KeyStart(header), &mut cmds);
    let mut chunks = Vec::new();
    loop {
        match value.next_chunks(&mut chunks) {
            Ok(true) => {}
            Ok(false) => break,
            // Validated above; a failure here cannot happen, but is not silent either.
            Err(e) => {
                tracing::warn!(error = %e, "RESTORE payload failed on its second reading");
                break;
            }
        }
        for c in chunks.drain(..) {
            feed(Item::Chunk(c), &mut cmds);
        }
        if !cmds.is_empty() {
            written = true;
            emit(cmds.drain(..).map(|c| c.cmd).collect());
        }
    }
    feed(Item::KeyEnd { dump: None }, &mut cmds);
    if !cmds.is_empty() {
        written = true;
        emit(cmds.drain(..).map(|c| c.cmd).collect());
    }
    for e in errors {
        match e {
            // The data is written; some property cannot be expressed on this target.
            ConvertError::Unsupported { .. } if written => {
                tracing::warn!(error = %e, "RESTORE rewritten to plain commands")
            }
            _ => {
                tracing::warn!(error = %e, "RESTORE could not be rewritten to plain commands");
                if !written {
                    return Err(cmd);
                }
            }
        }
    }
    Ok(())
}

fn upper(b: &[u8]) -> Vec<u8> {
    b.to_ascii_uppercase()
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn truncated(mut cmd: Cmd, n: usize) -> Cmd {
    cmd.args.truncate(n);
    cmd
}

fn set_absolute_to_relative(cmd: Cmd, now_ms: i64, out: &mut Vec<Cmd>) {
    if cmd.args.len() < 3 {
        out.push(cmd);
        return;
    }
    let mut args: Vec<Bytes> = cmd.args[..3].to_vec();
    let mut i = 3;
    while i < cmd.args.len() {
        let opt = upper(&cmd.args[i]);
        match opt.as_slice() {
            b"EXAT" | b"PXAT" => {
                let abs = cmd
                    .args
                    .get(i + 1)
                    .and_then(|v| parse_i64(v))
                    .and_then(|t| {
                        if opt == b"EXAT" {
                            t.checked_mul(1000)
                        } else {
                            Some(t)
                        }
                    });
                let Some(abs) = abs else {
                    out.push(cmd);
                    return;
                };
                args.push(Bytes::from_static(b"PX"));
                args.push(cmd::arg(abs.saturating_sub(now_ms).max(1)));
                i += 2;
            }
            b"EX" | b"PX" => {
                args.extend(cmd.args[i..(i + 2).min(cmd.args.len())].iter().cloned());
                i += 2;
            }
            b"GET" => i += 1,
            _ => {
                args.push(cmd.args[i].clone());
                i += 1;
            }
        }
    }
    out.push(Cmd { args });
}

fn pop_count(cmd: Cmd, out: &mut Vec<Cmd>) {
    let Some(n) = parse_i64(&cmd.args[2]) else {
        out.push(cmd);
        return;
    };
    if n <= 0 {
        // A zero count pops nothing.
        return;
    }
    let key = cmd.args[1].clone();
    if cmd.is("LPOP") {
        out.push(cmd!["LTRIM", key, n, "-1"]);
    } else {
        out.push(cmd![
            "LTRIM",
            key,
            "0",
            n.saturating_add(1).saturating_neg()
        ]);
    }
}

fn lmove(cmd: Cmd, out: &mut Vec<Cmd>) {
    if cmd.args.len() < 5 {
        out.push(cmd);
        return;
    }
    let from = upper(&cmd.args[3]);
    let to = upper(&cmd.args[4]);
    let (src, dst) = (cmd.args[1].clone(), cmd.args[2].clone());
    let valid = |d: &[u8]| d == b"LEFT" || d == b"RIGHT";
    if !valid(&from) || !valid(&to) {
        out.push(cmd);
    } else if from == b"RIGHT" && to == b"LEFT" {
        out.push(cmd!["RPOPLPUSH", src, dst]);
    } else {
        out.push(cmd!["EVAL", LMOVE_SCRIPT, "2", src, dst, from, to]);
    }
}

/// A stream ID threshold as a full `ms-seq` (`5` means `5-0` for MINID).
fn full_id(id: &[u8]) -> Bytes {
    if id.contains(&b'-') {
        Bytes::copy_from_slice(id)
    } else {
        let mut v = id.to_vec();
        v.extend_from_slice(b"-0");
        Bytes::from(v)
    }
}

/// Parses a trim clause `MAXLEN|MINID [=|~] threshold [LIMIT n]` at `args[i]`; returns
/// (strategy upper-cased, operator, threshold, index after the clause).
fn trim_clause(args: &[Bytes], mut i: usize) -> Option<(Vec<u8>, Option<Bytes>, Bytes, usize)> {
    let strategy = upper(args.get(i)?);
    if strategy != b"MAXLEN" && strategy != b"MINID" {
        return None;
    }
    i += 1;
    let mut op = None;
    if matches!(args.get(i).map(|a| a.as_ref()), Some(b"=") | Some(b"~")) {
        op = args.get(i).cloned();
        i += 1;
    }
    let threshold = args.get(i)?.clone();
    i += 1;
    if args
        .get(i)
        .is_some_and(|a| a.eq_ignore_ascii_case(b"LIMIT"))
    {
        i += 2;
    }
    Some((strategy, op, threshold, i))
}

fn xadd_pre62(cmd: Cmd, out: &mut Vec<Cmd>) {
    let args = &cmd.args;
    if args.len() < 3 {
        out.push(cmd);
        return;
    }
    let mut i = 2;
    let mut trim = None;
    loop {
        let Some(a) = args.get(i) else {
            out.push(cmd);
            return;
        };
        if a.eq_ignore_ascii_case(b"NOMKSTREAM") {
            i += 1;
        } else if let Some((strategy, op, threshold, next)) = trim_clause(args, i) {
            trim = Some((strategy, op, threshold));
            i = next;
        } else {
            break;
        }
    }
    let key = args[1].clone();
    let mut add = cmd!["XADD", key.clone()];
    let mut minid = None;
    match trim {
        Some((strategy, op, threshold)) if strategy == b"MAXLEN" => {
            add.args.push(Bytes::from_static(b"MAXLEN"));
            add.args.extend(op);
            add.args.push(threshold);
        }
        Some((_, _, threshold)) => minid = Some(threshold),
        None => {}
    }
    add.args.extend(args[i..].iter().cloned());
    out.push(add);
    if let Some(t) = minid {
        out.push(cmd!["EVAL", MINID_SCRIPT, "1", key, full_id(&t)]);
    }
}

fn xtrim_pre62(cmd: Cmd, out: &mut Vec<Cmd>) {
    let Some((strategy, op, threshold, _)) = trim_clause(&cmd.args, 2) else {
        out.push(cmd);
        return;
    };
    let key = cmd.args[1].clone();
    if strategy == b"MAXLEN" {
        let mut c = cmd!["XTRIM", key, "MAXLEN"];
        c.args.extend(op);
        c.args.push(threshold);
        out.push(c);
    } else {
        out.push(cmd!["EVAL", MINID_SCRIPT, "1", key, full_id(&threshold)]);
    }
}

fn xgroup(cmd: Cmd, pre62: bool, out: &mut Vec<Cmd>) {
    let sub = cmd.args.get(1).map(|s| upper(s)).unwrap_or_default();
    match sub.as_slice() {
        // An idle consumer cannot be created before 6.2 (XCLAIM only creates it with an entry).
        b"CREATECONSUMER" if pre62 && cmd.args.len() == 5 => {
            out.push(create_consumer(
                &cmd.args[2],
                &cmd.args[3],
                &cmd.args[4],
                false,
            ));
        }
        b"CREATE" | b"SETID" if cmd.args.len() > 5 => {
            let mut args = cmd.args[..5].to_vec();
            let mut i = 5;
            while i < cmd.args.len() {
                if cmd.args[i].eq_ignore_ascii_case(b"ENTRIESREAD") {
                    i += 2;
                } else {
                    args.push(cmd.args[i].clone());
                    i += 1;
                }
            }
            out.push(Cmd { args });
        }
        _ => out.push(cmd),
    }
}
