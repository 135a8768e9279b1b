//! Stream comparison: `XINFO STREAM` fields (length, last-generated-id, and max-deleted-entry-id /
//! entries-added where both sides have them), the entries in `XRANGE` windows, the consumer
//! groups (`XINFO GROUPS`: last-delivered-id, pending count, entries-read where both sides have
//! it), each group's consumers with their pending counts, and the pending entries in `XPENDING`
//! windows (id, owner, delivery count; idle time is not compared).

use bytes::Bytes;

use crate::resp::Frame;

use super::VerifyError;
use super::compare::{KeyAt, Limits, Outcome, changed, cmd, int};
use super::report::{Reason, quote_short};

/// A flat `[name, value, name, value…]` reply as pairs.
fn fields(f: &Frame) -> Vec<(String, Frame)> {
    let Frame::Array(v) = f else {
        return Vec::new();
    };
    v.chunks(2)
        .filter_map(|c| match c {
            [k, v] => Some((
                String::from_utf8_lossy(k.as_bytes()?).into_owned(),
                v.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn get<'a>(f: &'a [(String, Frame)], name: &str) -> Option<&'a Frame> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn show(f: Option<&Frame>) -> String {
    match f {
        None => "(absent)".into(),
        Some(Frame::Null) => "(nil)".into(),
        Some(Frame::Integer(i)) => i.to_string(),
        Some(f) => match f.as_bytes() {
            Some(b) => String::from_utf8_lossy(b).into_owned(),
            None => f.to_text(),
        },
    }
}

/// The id right after `id` (`ms-seq` + 1), for the next window.
fn next_id(id: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(id).ok()?;
    let (ms, seq) = s.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(match seq.checked_add(1) {
        Some(q) => format!("{ms}-{q}"),
        None => format!("{}-0", ms.checked_add(1)?),
    })
}

fn diff(reason: Reason, d: String) -> Option<Outcome> {
    Some(Outcome::Different(reason, d))
}

/// Compares stream `key`; `None` when equal.
pub(super) async fn compare(
    mut at: KeyAt<'_>,
    key: &Bytes,
    lim: &Limits,
) -> Result<Option<Outcome>, VerifyError> {
    let Some((s, t)) = at
        .read(cmd([b"XINFO", b"STREAM", key]), "XINFO STREAM")
        .await?
    else {
        return Ok(Some(changed()));
    };
    let (si, ti) = (fields(&s), fields(&t));
    for name in ["length", "last-generated-id"] {
        if get(&si, name) != get(&ti, name) {
            return Ok(diff(
                Reason::Value,
                format!(
                    "stream {name}: source {}, target {}",
                    show(get(&si, name)),
                    show(get(&ti, name))
                ),
            ));
        }
    }
    for name in ["max-deleted-entry-id", "entries-added"] {
        if let (Some(a), Some(b)) = (get(&si, name), get(&ti, name))
            && a != b
        {
            return Ok(diff(
                Reason::Value,
                format!(
                    "stream {name}: source {}, target {}",
                    show(Some(a)),
                    show(Some(b))
                ),
            ));
        }
    }

    // Entries, window by window.
    let chunk = lim.chunk.max(1).to_string();
    let mut start = "-".to_string();
    loop {
        let c = cmd([
            b"XRANGE",
            key,
            start.as_bytes(),
            b"+",
            b"COUNT",
            chunk.as_bytes(),
        ]);
        let Some((s, t)) = at.read(c, "XRANGE").await? else {
            return Ok(Some(changed()));
        };
        if s != t {
            return Ok(diff(Reason::Value, entries_detail(&s, &t)));
        }
        let Frame::Array(v) = &s else { break };
        if v.len() < lim.chunk.max(1) {
            break;
        }
        let last = v.last().and_then(|e| match e {
            Frame::Array(p) => p
                .first()
                .and_then(|i| i.as_bytes())
                .and_then(|b| next_id(b)),
            _ => None,
        });
        match last {
            Some(n) => start = n,
            None => break,
        }
    }

    // Groups.
    let Some((s, t)) = at
        .read(cmd([b"XINFO", b"GROUPS", key]), "XINFO GROUPS")
        .await?
    else {
        return Ok(Some(changed()));
    };
    let list = |f: &Frame| -> Vec<Vec<(String, Frame)>> {
        let mut v: Vec<Vec<(String, Frame)>> = match f {
            Frame::Array(v) => v.iter().map(fields).collect(),
            _ => Vec::new(),
        };
        v.sort_by_key(|g| show(get(g, "name")));
        v
    };
    let (sg, tg) = (list(&s), list(&t));
    let names = |g: &[Vec<(String, Frame)>]| -> Vec<String> {
        g.iter().map(|x| show(get(x, "name"))).collect()
    };
    if names(&sg) != names(&tg) {
        return Ok(diff(
            Reason::StreamGroup,
            format!("groups: source {:?}, target {:?}", names(&sg), names(&tg)),
        ));
    }
    for (a, b) in sg.iter().zip(&tg) {
        let gname = show(get(a, "name"));
        for f in ["last-delivered-id", "pending"] {
            if get(a, f) != get(b, f) {
                return Ok(diff(
                    Reason::StreamGroup,
                    format!(
                        "group {gname:?} {f}: source {}, target {}",
                        show(get(a, f)),
                        show(get(b, f))
                    ),
                ));
            }
        }
        if let (Some(x), Some(y)) = (get(a, "entries-read"), get(b, "entries-read"))
            && x != &Frame::Null
            && y != &Frame::Null
            && x != y
        {
            return Ok(diff(
                Reason::StreamGroup,
                format!(
                    "group {gname:?} entries-read: source {}, target {}",
                    show(Some(x)),
                    show(Some(y))
                ),
            ));
        }
        let g = get(a, "name")
            .and_then(|f| f.as_bytes().cloned())
            .unwrap_or_default();
        if let Some(o) = compare_group(&mut at, key, &g, lim).await? {
            return Ok(Some(o));
        }
    }
    Ok(None)
}

fn entries_detail(s: &Frame, t: &Frame) -> String {
    let ids = |f: &Frame| -> Vec<Frame> {
        match f {
            Frame::Array(v) => v.clone(),
            _ => Vec::new(),
        }
    };
    let (a, b) = (ids(s), ids(t));
    let at = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let id = |v: &[Frame]| -> String {
        match v.get(at) {
            Some(Frame::Array(p)) => show(p.first()),
            _ => "(none)".into(),
        }
    };
    format!("stream entry differs: source {}, target {}", id(&a), id(&b))
}

/// Consumers (name, pending) and the pending entries (id, owner, delivery count) of one group.
async fn compare_group(
    at: &mut KeyAt<'_>,
    key: &Bytes,
    group: &Bytes,
    lim: &Limits,
) -> Result<Option<Outcome>, VerifyError> {
    let gname = quote_short(group);
    let c = cmd([b"XINFO", b"CONSUMERS", key, group]);
    let Some((s, t)) = at.read(c, "XINFO CONSUMERS").await? else {
        return Ok(Some(changed()));
    };
    let consumers = |f: &Frame| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = match f {
            Frame::Array(v) => v
                .iter()
                .map(|c| {
                    let c = fields(c);
                    (show(get(&c, "name")), show(get(&c, "pending")))
                })
                .collect(),
            _ => Vec::new(),
        };
        v.sort();
        v
    };
    let (sc, tc) = (consumers(&s), consumers(&t));
    if sc != tc {
        let missing = sc.iter().find(|c| !tc.contains(c));
        let extra = tc.iter().find(|c| !sc.contains(c));
        let d = match (missing, extra) {
            (Some((n, p)), _) if !tc.iter().any(|(m, _)| m == n) => {
                format!("group {gname} consumer {n:?} (pending {p}) not on target")
            }
            (Some((n, p)), _) => {
                let q = tc
                    .iter()
                    .find(|(m, _)| m == n)
                    .map(|(_, q)| q.as_str())
                    .unwrap_or("");
                format!("group {gname} consumer {n:?} pending: source {p}, target {q}")
            }
            (None, Some((n, _))) => format!("group {gname} consumer {n:?} only on target"),
            _ => format!("group {gname} consumers differ"),
        };
        return Ok(diff(Reason::StreamGroup, d));
    }
    let chunk = lim.chunk.max(1).to_string();
    let mut start = "-".to_string();
    loop {
        let c = cmd([
            b"XPENDING",
            key,
            group,
            start.as_bytes(),
            b"+",
            chunk.as_bytes(),
        ]);
        let Some((s, t)) = at.read(c, "XPENDING").await? else {
            return Ok(Some(changed()));
        };
        // [id, consumer, idle, deliveries]: idle time is not compared.
        let pel = |f: &Frame| -> Vec<(Frame, Frame, Option<i64>)> {
            match f {
                Frame::Array(v) => v
                    .iter()
                    .filter_map(|e| match e {
                        Frame::Array(p) if p.len() >= 4 => {
                            Some((p[0].clone(), p[1].clone(), int(&p[3])))
                        }
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            }
        };
        let (sp, tp) = (pel(&s), pel(&t));
        if sp != tp {
            let at = sp
                .iter()
                .zip(&tp)
                .position(|(x, y)| x != y)
                .unwrap_or(sp.len().min(tp.len()));
            let one = |v: &[(Frame, Frame, Option<i64>)]| match v.get(at) {
                Some((id, owner, n)) => format!(
                    "{} owner {} deliveries {}",
                    show(Some(id)),
                    show(Some(owner)),
                    n.map(|n| n.to_string()).unwrap_or_default()
                ),
                None => "(none)".into(),
            };
            return Ok(diff(
                Reason::StreamGroup,
                format!(
                    "group {gname} pending entry: source {}, target {}",
                    one(&sp),
                    one(&tp)
                ),
            ));
        }
        if sp.len() < lim.chunk.max(1) {
            break;
        }
        match sp
            .last()
            .and_then(|(id, _, _)| id.as_bytes().and_then(|b| next_id(b)))
        {
            Some(n) => start = n,
            None => break,
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_id_steps_over_the_sequence() {
        assert_eq!(super::next_id(b"5-3").as_deref(), Some("5-4"));
        assert_eq!(
            super::next_id(format!("5-{}", u64::MAX).as_bytes()).as_deref(),
            Some("6-0")
        );
        assert_eq!(super::next_id(b"junk"), None);
    }
}
