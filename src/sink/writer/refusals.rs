//! Whether the target may refuse a queued write for a reason the `COMMAND` table cannot predict
//! (see [`super::known`] for the ones it can): `OOM` when `maxmemory` is set, `NOPERM` when the
//! writer's user is restricted by an ACL. Either aborts a whole transaction (`EXECABORT`).
//!
//! Why it matters: with transactions pipelined, the batches behind an aborted one commit a
//! higher position before the writer reads the `EXECABORT`; a crash (or a reconnect) in between
//! then takes the aborted batch for committed and its writes are lost. So when such a refusal is
//! possible, the writer sends one transaction at a time (*serial*): a transaction's `MULTI` goes
//! out only once every earlier batch is answered, so nothing commits past a batch whose outcome
//! is unknown. Cost: one round trip per batch on those targets only; the common case (no
//! `maxmemory`, an unrestricted user) keeps full pipelining. The writer also turns serial for
//! its life after any `EXECABORT` it did not predict (a `maxmemory` or ACL set later).

use crate::net::RespConn;
use crate::resp::Frame;

/// Why the target may refuse queued writes unpredictably (`None`: it cannot).
pub(super) async fn unpredictable(conn: &mut RespConn) -> Result<Option<String>, String> {
    let info = conn
        .request(&crate::cmd!["INFO", "memory"])
        .await
        .map_err(|e| e.to_string())?;
    match &info {
        Frame::Error(e) => {
            return Ok(Some(format!(
                "INFO memory refused ({}): maxmemory unknown",
                crate::escape::text(e)
            )));
        }
        f => {
            let text = f
                .as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            match info_field(&text, "maxmemory") {
                Some("0") => {}
                Some(v) => return Ok(Some(format!("maxmemory is {v} bytes (OOM refusals)"))),
                None => return Ok(Some("INFO memory shows no maxmemory".into())),
            }
        }
    }
    let who = conn
        .request(&crate::cmd!["ACL", "WHOAMI"])
        .await
        .map_err(|e| e.to_string())?;
    let user = match who {
        // A server without ACLs (before 6.0) refuses nothing by user.
        Frame::Error(e) if e.starts_with(b"ERR unknown command") => return Ok(None),
        Frame::Error(e) => {
            return Ok(Some(format!(
                "the user may not run ACL WHOAMI ({}): ACL-restricted",
                crate::escape::text(&e)
            )));
        }
        f => f
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default(),
    };
    let rules = conn
        .request(&crate::cmd!["ACL", "GETUSER", user.clone()])
        .await
        .map_err(|e| e.to_string())?;
    if unrestricted(&rules) {
        Ok(None)
    } else {
        Ok(Some(format!(
            "user {:?} is restricted by an ACL (NOPERM refusals)",
            crate::escape::text(user.as_bytes())
        )))
    }
}

/// `field:value` of an `INFO` text.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// True when an `ACL GETUSER` reply grants every command, key and channel (6.0: the flags
/// `allcommands`/`allkeys`/`allchannels`; 7.0+: `commands "+@all"`, `keys "~*"`,
/// `channels "&*"`). Anything else (an error, a subtraction like `+@all -flushall`, a key
/// pattern) counts as restricted.
fn unrestricted(reply: &Frame) -> bool {
    let Frame::Array(items) = reply else {
        return false;
    };
    let mut flags: Vec<String> = Vec::new();
    let (mut commands, mut keys, mut channels) = (None, None, None);
    for pair in items.chunks(2) {
        let [name, value] = pair else { break };
        let Some(name) = name.as_bytes() else {
            continue;
        };
        let text = |v: &Frame| -> Vec<String> {
            match v {
                Frame::Array(xs) => xs
                    .iter()
                    .filter_map(|x| x.as_bytes())
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect(),
                other => other
                    .as_bytes()
                    .map(|b| vec![String::from_utf8_lossy(b).into_owned()])
                    .unwrap_or_default(),
            }
        };
        match &name[..] {
            b"flags" => flags = text(value),
            b"commands" => commands = Some(text(value).join(" ")),
            b"keys" => keys = Some(text(value).join(" ")),
            b"channels" => channels = Some(text(value).join(" ")),
            _ => {}
        }
    }
    let flag = |f: &str| flags.iter().any(|x| x == f);
    let all_commands = flag("allcommands") || commands.as_deref() == Some("+@all");
    let all_keys = flag("allkeys") || matches!(keys.as_deref(), Some("~*") | Some("*"));
    // 6.0 has no channel rules.
    let all_channels = flag("allchannels")
        || channels.is_none()
        || matches!(channels.as_deref(), Some("&*") | Some("*"));
    all_commands && all_keys && all_channels
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::from(s.to_string()))
    }

    fn arr(xs: &[&str]) -> Frame {
        Frame::Array(xs.iter().map(|s| bulk(s)).collect())
    }

    #[test]
    fn default_user_70_is_unrestricted() {
        let r = Frame::Array(vec![
            bulk("flags"),
            arr(&["on", "nopass", "sanitize-payload"]),
            bulk("passwords"),
            arr(&[]),
            bulk("commands"),
            bulk("+@all"),
            bulk("keys"),
            bulk("~*"),
            bulk("channels"),
            bulk("&*"),
            bulk("selectors"),
            arr(&[]),
        ]);
        assert!(unrestricted(&r));
    }

    #[test]
    fn default_user_60_is_unrestricted() {
        let r = Frame::Array(vec![
            bulk("flags"),
            arr(&["on", "allkeys", "allcommands", "nopass"]),
            bulk("passwords"),
            arr(&[]),
            bulk("commands"),
            bulk("+@all"),
            bulk("keys"),
            arr(&["*"]),
        ]);
        assert!(unrestricted(&r));
    }

    #[test]
    fn restrictions_are_seen() {
        for (cmds, keys, chans) in [
            ("+@all -lpush", "~*", "&*"),
            ("+@all", "~app:*", "&*"),
            ("+@all", "~*", ""),
            ("+@write", "~*", "&*"),
        ] {
            let r = Frame::Array(vec![
                bulk("flags"),
                arr(&["on"]),
                bulk("commands"),
                bulk(cmds),
                bulk("keys"),
                bulk(keys),
                bulk("channels"),
                bulk(chans),
            ]);
            assert!(!unrestricted(&r), "{cmds} {keys} {chans}");
        }
        assert!(!unrestricted(&Frame::Error(Bytes::from_static(b"NOPERM"))));
    }

    #[test]
    fn maxmemory_field() {
        let t = "# Memory\r\nused_memory:100\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\n";
        assert_eq!(info_field(t, "maxmemory"), Some("0"));
    }
}
