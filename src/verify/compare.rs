//! Key-by-key comparison of a batch of keys between the two sides, in a few pipelined rounds
//! per batch: `TYPE` + `PTTL`; then sizes (`STRLEN` + the first window of a string, `HLEN`,
//! `SCARD`, `ZCARD`, `LLEN`); then small collections whole. Big values go one key at a time
//! in bounded chunks (`GETRANGE`, `HSCAN`→`HMGET`, `SSCAN`→`SMISMEMBER`/`SISMEMBER`,
//! `ZSCAN`→`ZMSCORE`/`ZSCORE`, `LRANGE` windows); streams in [`super::stream`].

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::cmd::Cmd;
use crate::resp::Frame;

use super::VerifyError;
use super::report::{Reason, quote_short};
use super::side::Side;

/// The replies of one key on the source and on the target.
type Replies<'a> = (&'a [Frame], &'a [Frame]);

/// Limits of one comparison.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Elements per chunk of a big collection (and entries per stream window).
    pub chunk: usize,
    /// Collections up to this many elements are read whole in the batch.
    pub small: usize,
    /// Bytes of a string read in the batch; longer strings go by windows of `big_window`.
    pub str_window: usize,
    pub big_window: usize,
    pub ttl_tolerance_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            chunk: 512,
            small: 128,
            str_window: 16 * 1024,
            big_window: 1 << 20,
            ttl_tolerance_ms: 2000,
        }
    }
}

/// The verdict for one source key.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Equal,
    /// Gone from the source between listing and reading.
    Vanished,
    Missing,
    Different(Reason, String),
}

/// What the key's value looks like before its content is compared.
enum Plan {
    Done(Outcome),
    /// Same type on both sides; compare the content of this type.
    Content {
        ty: String,
        ttl_diff: Option<String>,
    },
}

pub(super) fn cmd<const N: usize>(args: [&[u8]; N]) -> Cmd {
    Cmd::new(args.map(Bytes::copy_from_slice))
}

fn text(f: &Frame) -> Option<String> {
    f.as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

pub(super) fn int(f: &Frame) -> Option<i64> {
    match f {
        Frame::Integer(i) => Some(*i),
        Frame::Bulk(b) | Frame::Simple(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// `Err` for an error reply other than `WRONGTYPE`; `Ok(true)` for `WRONGTYPE` (the key changed
/// type while being read).
pub(super) fn check(side: &Side, f: &Frame, what: &str) -> Result<bool, VerifyError> {
    match f {
        Frame::Error(e) if e.starts_with(b"WRONGTYPE") => Ok(true),
        Frame::Error(e) => Err(VerifyError::Reply {
            role: side.role,
            what: what.to_string(),
            reply: String::from_utf8_lossy(e).into_owned(),
        }),
        _ => Ok(false),
    }
}

pub(super) fn changed() -> Outcome {
    Outcome::Different(Reason::Value, "changed while being read".into())
}

fn ttl_text(ms: i64) -> String {
    if ms < 0 {
        "none".into()
    } else {
        format!("{ms} ms")
    }
}

/// Compares `keys` of source db `sdb` with target db `tdb`; one outcome per key, in order.
pub async fn compare_batch(
    src: &mut Side,
    sdb: u32,
    tgt: &mut Side,
    tdb: u32,
    keys: &[Bytes],
    lim: &Limits,
) -> Result<Vec<Outcome>, VerifyError> {
    // Round 1: type and TTL, and (speculatively: most keys are strings) the string's length and
    // first window; other types answer WRONGTYPE to those, which is ignored.
    let w = (lim.str_window.max(1) - 1).to_string();
    let round = |side: &Side| -> Vec<(usize, Vec<Cmd>)> {
        keys.iter()
            .map(|k| {
                (
                    side.node_of(k),
                    vec![
                        cmd([b"TYPE", k]),
                        cmd([b"PTTL", k]),
                        cmd([b"STRLEN", k]),
                        cmd([b"GETRANGE", k, b"0", w.as_bytes()]),
                    ],
                )
            })
            .collect()
    };
    let (sa, ta) = (round(src), round(tgt));
    let (r1s, r1t) = tokio::try_join!(src.exec_keyed(sdb, sa), tgt.exec_keyed(tdb, ta))?;
    let mut plans = Vec::with_capacity(keys.len());
    for (s, t) in r1s.iter().zip(&r1t) {
        plans.push(plan(
            src,
            tgt,
            &s[..s.len().min(2)],
            &t[..t.len().min(2)],
            lim,
        )?);
    }

    // Round 2: sizes (and the first window of strings).
    let mut idx2 = Vec::new();
    let (mut s2, mut t2) = (Vec::new(), Vec::new());
    for (i, p) in plans.iter().enumerate() {
        let Plan::Content { ty, .. } = p else {
            continue;
        };
        let k = &keys[i];
        let cmds = match ty.as_str() {
            "string" => continue,
            "hash" => vec![cmd([b"HLEN", k])],
            "set" => vec![cmd([b"SCARD", k])],
            "zset" => vec![cmd([b"ZCARD", k])],
            "list" => vec![cmd([b"LLEN", k])],
            "stream" => continue,
            // Module types: compare the serialized value.
            _ => vec![cmd([b"DUMP", k])],
        };
        idx2.push(i);
        s2.push((src.node_of(k), cmds.clone()));
        t2.push((tgt.node_of(k), cmds));
    }
    let (sr, tr) = tokio::try_join!(src.exec_keyed(sdb, s2), tgt.exec_keyed(tdb, t2))?;
    // Index of a key → (type, size) for round 3 / big keys.
    let mut later: Vec<(usize, String, i64)> = Vec::new();
    let mut verdicts: Vec<Option<Outcome>> = plans
        .iter()
        .map(|p| match p {
            Plan::Done(o) => Some(o.clone()),
            Plan::Content { .. } => None,
        })
        .collect();
    // Strings: from round 1.
    let strings = plans.iter().enumerate().filter_map(|(i, p)| match p {
        Plan::Content { ty, .. } if ty == "string" => Some(i),
        _ => None,
    });
    let round2 = idx2.iter().copied().zip(sr.iter().zip(&tr));
    let from1 = strings.map(|i| {
        (
            i,
            (
                &r1s[i][2.min(r1s[i].len())..],
                &r1t[i][2.min(r1t[i].len())..],
            ),
        )
    });
    let mut all: Vec<(usize, Replies)> = round2
        .map(|(i, (s, t))| (i, (s.as_slice(), t.as_slice())))
        .collect();
    all.extend(from1);
    for (i, (s, t)) in all {
        let Plan::Content { ty, .. } = &plans[i] else {
            continue;
        };
        let mut wrong = false;
        for f in s.iter() {
            wrong |= check(src, f, "reading a value")?;
        }
        for f in t.iter() {
            wrong |= check(tgt, f, "reading a value")?;
        }
        if wrong || s.is_empty() || t.is_empty() {
            verdicts[i] = Some(changed());
            continue;
        }
        if ty == "string" {
            let (sl, tl) = (int(&s[0]).unwrap_or(-1), int(&t[0]).unwrap_or(-1));
            if sl != tl {
                verdicts[i] = Some(Outcome::Different(
                    Reason::Value,
                    format!("string of {sl} bytes on source, {tl} on target"),
                ));
            } else if s.get(1) != t.get(1) {
                verdicts[i] = Some(Outcome::Different(
                    Reason::Value,
                    string_detail(s.get(1), t.get(1)),
                ));
            } else if sl as usize > lim.str_window {
                later.push((i, ty.clone(), sl));
            }
            continue;
        }
        if !matches!(ty.as_str(), "hash" | "set" | "zset" | "list") {
            if s[0] != t[0] {
                verdicts[i] = Some(Outcome::Different(
                    Reason::Value,
                    format!("{ty} values differ (DUMP)"),
                ));
            }
            continue;
        }
        let (sn, tn) = (int(&s[0]).unwrap_or(-1), int(&t[0]).unwrap_or(-1));
        if sn != tn {
            verdicts[i] = Some(Outcome::Different(
                Reason::Value,
                format!("{ty} has {sn} elements on source, {tn} on target"),
            ));
        } else {
            later.push((i, ty.clone(), sn));
        }
    }

    // Round 3: small collections whole; big ones and streams one at a time.
    let (mut s3, mut t3, mut idx3) = (Vec::new(), Vec::new(), Vec::new());
    let mut big = Vec::new();
    for (i, ty, n) in later {
        let k = &keys[i];
        if ty == "string" || n as usize > lim.small {
            big.push((i, ty, n));
            continue;
        }
        let c = match ty.as_str() {
            "hash" => cmd([b"HGETALL", k]),
            "set" => cmd([b"SMEMBERS", k]),
            "zset" => cmd([b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"]),
            _ => cmd([b"LRANGE", k, b"0", b"-1"]),
        };
        idx3.push((i, ty));
        s3.push((src.node_of(k), vec![c.clone()]));
        t3.push((tgt.node_of(k), vec![c]));
    }
    let (sr, tr) = tokio::try_join!(src.exec_keyed(sdb, s3), tgt.exec_keyed(tdb, t3))?;
    for (((i, ty), s), t) in idx3.iter().zip(&sr).zip(&tr) {
        let (Some(s), Some(t)) = (s.first(), t.first()) else {
            verdicts[*i] = Some(changed());
            continue;
        };
        if check(src, s, "reading a value")? | check(tgt, t, "reading a value")? {
            verdicts[*i] = Some(changed());
            continue;
        }
        if let Some(d) = diff_whole(ty, s, t) {
            verdicts[*i] = Some(Outcome::Different(Reason::Value, d));
        }
    }
    for (i, ty, n) in big {
        let k = &keys[i];
        let at = KeyAt::new(src, sdb, tgt, tdb, k);
        if let Some(o) = compare_big(at, k, &ty, n, lim).await? {
            verdicts[i] = Some(o);
        }
    }
    for (i, p) in plans.iter().enumerate() {
        let Plan::Content { ty, ttl_diff } = p else {
            continue;
        };
        if verdicts[i].is_none() && ty == "stream" {
            let at = KeyAt::new(src, sdb, tgt, tdb, &keys[i]);
            verdicts[i] = super::stream::compare(at, &keys[i], lim).await?;
        }
        if verdicts[i].is_none()
            && let Some(d) = ttl_diff
        {
            verdicts[i] = Some(Outcome::Different(Reason::Ttl, d.clone()));
        }
    }
    Ok(verdicts
        .into_iter()
        .map(|v| v.unwrap_or(Outcome::Equal))
        .collect())
}

fn plan(
    src: &Side,
    tgt: &Side,
    s: &[Frame],
    t: &[Frame],
    lim: &Limits,
) -> Result<Plan, VerifyError> {
    for f in s {
        check(src, f, "TYPE/PTTL")?;
    }
    for f in t {
        check(tgt, f, "TYPE/PTTL")?;
    }
    let (Some(st), Some(tt)) = (s.first().and_then(text), t.first().and_then(text)) else {
        return Ok(Plan::Done(changed()));
    };
    if st == "none" {
        return Ok(Plan::Done(Outcome::Vanished));
    }
    if tt == "none" {
        return Ok(Plan::Done(Outcome::Missing));
    }
    if st != tt {
        return Ok(Plan::Done(Outcome::Different(
            Reason::Type,
            format!("{st} on source, {tt} on target"),
        )));
    }
    let sp = s.get(1).and_then(int).unwrap_or(-2);
    let tp = t.get(1).and_then(int).unwrap_or(-2);
    if sp == -2 || tp == -2 {
        return Ok(Plan::Done(changed()));
    }
    let ttl_diff = match (sp, tp) {
        (-1, -1) => None,
        (a, b) if a >= 0 && b >= 0 && (a - b).abs() <= lim.ttl_tolerance_ms => None,
        (a, b) => Some(format!(
            "TTL {} on source, {} on target (tolerance {} ms)",
            ttl_text(a),
            ttl_text(b),
            lim.ttl_tolerance_ms
        )),
    };
    Ok(Plan::Content { ty: st, ttl_diff })
}

fn string_detail(s: Option<&Frame>, t: Option<&Frame>) -> String {
    let b = |f: Option<&Frame>| f.and_then(|f| f.as_bytes().cloned()).unwrap_or_default();
    let (s, t) = (b(s), b(t));
    let at = s
        .iter()
        .zip(t.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    format!(
        "string differs at byte {at}: source {}, target {}",
        quote_short(&s),
        quote_short(&t)
    )
}

fn items(f: &Frame) -> Vec<Bytes> {
    match f {
        Frame::Array(v) | Frame::Set(v) => v.iter().filter_map(|x| x.as_bytes().cloned()).collect(),
        _ => Vec::new(),
    }
}

/// Score as a number (`inf`, `-inf` included), so `1` and `1.0` compare equal.
pub(super) fn score(b: &[u8]) -> Option<f64> {
    match std::str::from_utf8(b).ok()?.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

fn pairs(v: Vec<Bytes>) -> BTreeMap<Bytes, Bytes> {
    let mut m = BTreeMap::new();
    let mut it = v.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        m.insert(a, b);
    }
    m
}

/// First difference of two whole small collections of type `ty`.
fn diff_whole(ty: &str, s: &Frame, t: &Frame) -> Option<String> {
    let (sv, tv) = (items(s), items(t));
    match ty {
        "list" => {
            if sv == tv {
                return None;
            }
            let at = sv
                .iter()
                .zip(&tv)
                .position(|(a, b)| a != b)
                .unwrap_or(sv.len().min(tv.len()));
            Some(format!(
                "list element {at}: source {}, target {}",
                sv.get(at)
                    .map(|b| quote_short(b))
                    .unwrap_or("(none)".into()),
                tv.get(at)
                    .map(|b| quote_short(b))
                    .unwrap_or("(none)".into())
            ))
        }
        "set" => {
            let (mut a, mut b) = (sv, tv);
            a.sort();
            b.sort();
            if a == b {
                return None;
            }
            let only_s = a.iter().find(|x| b.binary_search(x).is_err());
            let only_t = b.iter().find(|x| a.binary_search(x).is_err());
            Some(match (only_s, only_t) {
                (Some(m), _) => format!("set member {} not on target", quote_short(m)),
                (None, Some(m)) => format!("set member {} only on target", quote_short(m)),
                _ => "set members differ".into(),
            })
        }
        "hash" => map_diff("hash field", &pairs(sv), &pairs(tv), |a, b| a == b),
        _ => map_diff("zset member", &pairs(sv), &pairs(tv), |a, b| {
            score(a).is_some() && score(a) == score(b)
        }),
    }
}

fn map_diff(
    what: &str,
    s: &BTreeMap<Bytes, Bytes>,
    t: &BTreeMap<Bytes, Bytes>,
    eq: impl Fn(&[u8], &[u8]) -> bool,
) -> Option<String> {
    for (k, v) in s {
        match t.get(k) {
            None => return Some(format!("{what} {} not on target", quote_short(k))),
            Some(w) if !eq(v, w) => {
                return Some(format!(
                    "{what} {}: source {}, target {}",
                    quote_short(k),
                    quote_short(v),
                    quote_short(w)
                ));
            }
            _ => {}
        }
    }
    t.keys()
        .find(|k| !s.contains_key(*k))
        .map(|k| format!("{what} {} only on target", quote_short(k)))
}

/// One big key, chunk by chunk; `None` when equal. `n` is its length (bytes or elements), equal on
/// both sides.
async fn compare_big(
    mut at: KeyAt<'_>,
    key: &Bytes,
    ty: &str,
    n: i64,
    lim: &Limits,
) -> Result<Option<Outcome>, VerifyError> {
    let chunk = lim.chunk.max(1).to_string();
    match ty {
        "string" | "list" => {
            let step = if ty == "string" {
                lim.big_window
            } else {
                lim.chunk
            }
            .max(1) as i64;
            let mut pos = 0i64;
            while pos < n {
                let (a, b) = (pos.to_string(), (pos + step - 1).to_string());
                let c = if ty == "string" {
                    cmd([b"GETRANGE", key, a.as_bytes(), b.as_bytes()])
                } else {
                    cmd([b"LRANGE", key, a.as_bytes(), b.as_bytes()])
                };
                let Some((s, t)) = at.read(c, "GETRANGE/LRANGE").await? else {
                    return Ok(Some(changed()));
                };
                if s != t {
                    let d = if ty == "string" {
                        let mut d = string_detail(Some(&s), Some(&t));
                        d.push_str(&format!(" (in the window from byte {pos})"));
                        d
                    } else {
                        let mut d = diff_whole("list", &s, &t).unwrap_or_default();
                        d.push_str(&format!(" (in the window from element {pos})"));
                        d
                    };
                    return Ok(Some(Outcome::Different(Reason::Value, d)));
                }
                pos += step;
            }
            Ok(None)
        }
        "hash" | "set" | "zset" => {
            let scan: &[u8] = match ty {
                "hash" => b"HSCAN",
                "set" => b"SSCAN",
                _ => b"ZSCAN",
            };
            let new_cmds = at.tgt.min_version() >= (6, 2, 0);
            let mut cursor = Bytes::from_static(b"0");
            loop {
                let c = cmd([scan, key, &cursor, b"COUNT", chunk.as_bytes()]);
                let mut r = at.src.exec_on(at.sn, at.sdb, &[c]).await?;
                let f = r.pop().ok_or_else(|| short(at.src))?;
                if check(at.src, &f, "xSCAN")? {
                    return Ok(Some(changed()));
                }
                let Frame::Array(mut parts) = f else {
                    return Ok(Some(changed()));
                };
                let elems = parts.pop().map(|f| items(&f)).unwrap_or_default();
                cursor = parts
                    .pop()
                    .and_then(|f| f.as_bytes().cloned())
                    .unwrap_or_default();
                if let Some(d) = check_members(&mut at, key, ty, elems, new_cmds).await? {
                    return Ok(Some(d));
                }
                if cursor.as_ref() == b"0" || cursor.is_empty() {
                    return Ok(None);
                }
            }
        }
        _ => Ok(None),
    }
}

/// Checks one scanned chunk of source elements against the target.
async fn check_members(
    at: &mut KeyAt<'_>,
    key: &Bytes,
    ty: &str,
    elems: Vec<Bytes>,
    new_cmds: bool,
) -> Result<Option<Outcome>, VerifyError> {
    let (names, values): (Vec<Bytes>, Vec<Option<Bytes>>) = if ty == "set" {
        (elems, Vec::new())
    } else {
        let m = pairs(elems);
        m.into_iter().map(|(k, v)| (k, Some(v))).unzip()
    };
    if names.is_empty() {
        return Ok(None);
    }
    let multi = |name: &'static [u8]| {
        let mut args = vec![Bytes::from_static(name), key.clone()];
        args.extend(names.iter().cloned());
        vec![Cmd { args }]
    };
    let cmds = match ty {
        "hash" => multi(b"HMGET"),
        "set" if new_cmds => multi(b"SMISMEMBER"),
        "zset" if new_cmds => multi(b"ZMSCORE"),
        "set" => names.iter().map(|m| cmd([b"SISMEMBER", key, m])).collect(),
        _ => names.iter().map(|m| cmd([b"ZSCORE", key, m])).collect(),
    };
    let single = cmds.len() == 1;
    let replies = at.tgt.exec_on(at.tn, at.tdb, &cmds).await?;
    let mut got: Vec<Frame> = Vec::with_capacity(names.len());
    for f in replies {
        if check(at.tgt, &f, "reading members")? {
            return Ok(Some(changed()));
        }
        match f {
            Frame::Array(v) if single => got.extend(v),
            other => got.push(other),
        }
    }
    for (i, name) in names.iter().enumerate() {
        let t = got.get(i).unwrap_or(&Frame::Null);
        let what = match ty {
            "hash" => "hash field",
            "set" => "set member",
            _ => "zset member",
        };
        let present = !matches!(t, Frame::Null | Frame::Integer(0));
        if !present {
            return Ok(Some(Outcome::Different(
                Reason::Value,
                format!("{what} {} not on target", quote_short(name)),
            )));
        }
        let Some(Some(sv)) = values.get(i) else {
            continue;
        };
        let tv = t.as_bytes().cloned().unwrap_or_default();
        let equal = if ty == "hash" {
            *sv == tv
        } else {
            score(sv).is_some() && score(sv) == score(&tv)
        };
        if !equal {
            return Ok(Some(Outcome::Different(
                Reason::Value,
                format!(
                    "{what} {}: source {}, target {}",
                    quote_short(name),
                    quote_short(sv),
                    quote_short(&tv)
                ),
            )));
        }
    }
    Ok(None)
}

fn short(side: &Side) -> VerifyError {
    VerifyError::Reply {
        role: side.role,
        what: "a pipeline".into(),
        reply: "fewer replies than commands".into(),
    }
}

/// One key's place on both sides: each side, the node that holds the key there and the
/// database it is read in.
pub(super) struct KeyAt<'a> {
    pub src: &'a mut Side,
    pub sn: usize,
    pub sdb: u32,
    pub tgt: &'a mut Side,
    pub tn: usize,
    pub tdb: u32,
}

impl<'a> KeyAt<'a> {
    /// `key` in source database `sdb` and target database `tdb`.
    pub fn new(src: &'a mut Side, sdb: u32, tgt: &'a mut Side, tdb: u32, key: &[u8]) -> Self {
        let (sn, tn) = (src.node_of(key), tgt.node_of(key));
        KeyAt {
            src,
            sn,
            sdb,
            tgt,
            tn,
            tdb,
        }
    }

    /// Runs `c` on both sides at once; one reply each.
    pub async fn two(&mut self, c: Cmd) -> Result<(Frame, Frame), VerifyError> {
        let cs = [c];
        let (mut s, mut t) = tokio::try_join!(
            self.src.exec_on(self.sn, self.sdb, &cs),
            self.tgt.exec_on(self.tn, self.tdb, &cs)
        )?;
        let s = s.pop().ok_or_else(|| short(self.src))?;
        let t = t.pop().ok_or_else(|| short(self.tgt))?;
        Ok((s, t))
    }

    /// [`KeyAt::two`] and [`check`] of both replies (`what` names the command): `None` when
    /// the key changed meanwhile on either side (the caller reports [`changed`]).
    pub async fn read(
        &mut self,
        c: Cmd,
        what: &str,
    ) -> Result<Option<(Frame, Frame)>, VerifyError> {
        let (s, t) = self.two(c).await?;
        if check(self.src, &s, what)? | check(self.tgt, &t, what)? {
            return Ok(None);
        }
        Ok(Some((s, t)))
    }
}
