//! The target's command table (`COMMAND`), read by an exactly-once writer when it connects:
//! a command the target would refuse at queue time (unknown name or subcommand, wrong number
//! of arguments) is taken out of its batch *before* the batch's `MULTI`/`EXEC` is sent, and
//! reported and repaired like a refused write. Without this, the refusal aborts the whole
//! transaction (`EXECABORT`) while later batches are already pipelined behind it and commit
//! their positions first: a crash before the retry committed lost the aborted batch, and a
//! reconnect took it for committed (its position was below the target's).

use std::collections::HashMap;

use bytes::Bytes;

use crate::cmd::Cmd;
use crate::resp::Frame;

/// Names (lowercase; subcommands as `name|sub`) and arities of the target's commands.
#[derive(Debug, Default)]
pub(super) struct KnownCommands {
    arity: HashMap<Vec<u8>, i64>,
    /// Commands whose subcommands the table lists (7.0+): others are not checked below the name.
    containers: std::collections::HashSet<Vec<u8>>,
}

impl KnownCommands {
    /// Parses a `COMMAND` reply; `None` when it is not one (then nothing is checked).
    pub(super) fn parse(reply: &Frame) -> Option<KnownCommands> {
        let Frame::Array(items) = reply else {
            return None;
        };
        let mut k = KnownCommands::default();
        for item in items {
            k.add(item, None);
        }
        (!k.arity.is_empty()).then_some(k)
    }

    fn add(&mut self, item: &Frame, parent: Option<&[u8]>) {
        let Frame::Array(fields) = item else {
            return;
        };
        let (Some(name), Some(Frame::Integer(arity))) =
            (fields.first().and_then(|f| f.as_bytes()), fields.get(1))
        else {
            return;
        };
        let name = name.to_ascii_lowercase();
        if let Some(Frame::Array(subs)) = fields.get(9)
            && parent.is_none()
            && !subs.is_empty()
        {
            self.containers.insert(name.clone());
            for s in subs {
                self.add(s, Some(&name));
            }
        }
        self.arity.insert(name, *arity);
    }

    /// The error the target would answer `cmd` with at queue time, if any.
    pub(super) fn refusal(&self, cmd: &Cmd) -> Option<Bytes> {
        let name = cmd.args.first()?.to_ascii_lowercase();
        let shown = |n: &[u8]| crate::escape::text(n);
        let Some(&arity) = self.arity.get(&name) else {
            return Some(Bytes::from(format!(
                "ERR unknown command '{}' (not in the target's COMMAND table; not sent)",
                shown(&name)
            )));
        };
        let (checked, arity) = match cmd.args.get(1) {
            Some(sub) if self.containers.contains(&name) => {
                let mut full = name.clone();
                full.push(b'|');
                full.extend(sub.to_ascii_lowercase());
                match self.arity.get(&full) {
                    Some(&a) => (full, a),
                    None => {
                        return Some(Bytes::from(format!(
                            "ERR unknown subcommand '{}' (not in the target's COMMAND table; not sent)",
                            shown(&full)
                        )));
                    }
                }
            }
            _ => (name, arity),
        };
        let argc = cmd.args.len() as i64;
        let fits = if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        };
        (!fits).then(|| {
            Bytes::from(format!(
                "ERR wrong number of arguments for '{}' command (target's COMMAND table; not sent)",
                shown(&checked)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, arity: i64, subs: Vec<Frame>) -> Frame {
        let mut f = vec![
            Frame::Bulk(Bytes::from(name.to_string())),
            Frame::Integer(arity),
        ];
        if !subs.is_empty() {
            f.extend((0..7).map(|_| Frame::Array(vec![])));
            f.push(Frame::Array(subs));
        }
        Frame::Array(f)
    }

    #[test]
    fn refuses_what_the_target_would_refuse_at_queue_time() {
        let table = Frame::Array(vec![
            entry("set", -3, vec![]),
            entry("incr", 2, vec![]),
            entry("xgroup", -2, vec![entry("xgroup|create", -5, vec![])]),
        ]);
        let k = KnownCommands::parse(&table).expect("table");
        assert!(k.refusal(&crate::cmd!["SET", "k", "v"]).is_none());
        assert!(
            k.refusal(&crate::cmd!["set", "k", "v", "PX", "1"])
                .is_none()
        );
        assert!(k.refusal(&crate::cmd!["SET", "k"]).is_some());
        assert!(k.refusal(&crate::cmd!["INCR", "k", "x"]).is_some());
        assert!(
            k.refusal(&crate::cmd!["GEOSEARCHSTORE", "d", "s"])
                .is_some()
        );
        assert!(
            k.refusal(&crate::cmd!["XGROUP", "CREATE", "s", "g", "$"])
                .is_none()
        );
        assert!(
            k.refusal(&crate::cmd!["XGROUP", "CREATECONSUMER", "s", "g", "c"])
                .is_some()
        );
        assert!(KnownCommands::parse(&Frame::Error(Bytes::from("ERR"))).is_none());
    }
}
