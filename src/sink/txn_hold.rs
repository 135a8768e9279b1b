//! Keeps a source `MULTI`/`EXEC` block whole within one run of the command stream (exactly-once
//! mode on a standalone target): a run that ends inside an open block is cut before its `MULTI`,
//! and the tail is held and put in front of the next run. Each run the writers receive then
//! ends on a transaction boundary, so the run's offset is a position a restart can resume from,
//! and the writer's own `MULTI`/`EXEC` around the run contains the whole source transaction.

use crate::cmd::DbCmd;

/// The held tail of an open source transaction.
#[derive(Debug, Default)]
pub struct TxnHold {
    cmds: Vec<DbCmd>,
    ends: Vec<u64>,
    /// Source offset just before the held `MULTI` (what was handed on so far), and the source
    /// database selected there.
    before: Option<(u64, u32)>,
}

impl TxnHold {
    /// True while a block is held (its `EXEC` has not arrived).
    pub fn holding(&self) -> bool {
        !self.cmds.is_empty()
    }

    /// The offset before the held block: everything up to it was handed to the writers.
    pub fn handed_before(&self) -> Option<(u64, u32)> {
        self.before
    }

    /// Prepends the held tail to `cmds`/`ends` (`ends[i]`: the source offset after `cmds[i]`),
    /// then cuts before an unclosed `MULTI`. Returns the commands to send now, their ends and
    /// the run's new offset (`None` when nothing is to be sent).
    pub fn cut(
        &mut self,
        cmds: Vec<DbCmd>,
        ends: &[u64],
        offset: Option<u64>,
    ) -> (Vec<DbCmd>, Vec<u64>, Option<u64>) {
        let start_before = if self.holding() { self.before } else { None };
        let mut all = std::mem::take(&mut self.cmds);
        let mut all_ends = std::mem::take(&mut self.ends);
        // `ends` can be shorter than `cmds` only if a caller lost track; pad with the run's end.
        let pad = offset.or(ends.last().copied()).unwrap_or(0);
        all_ends.extend((0..cmds.len()).map(|i| ends.get(i).copied().unwrap_or(pad)));
        all.extend(cmds);
        let mut open: Option<usize> = None;
        for (i, c) in all.iter().enumerate() {
            if c.cmd.is("MULTI") {
                open = Some(i);
            } else if c.cmd.is("EXEC") || c.cmd.is("DISCARD") {
                open = None;
            }
        }
        let Some(at) = open else {
            self.before = None;
            return (all, all_ends, offset);
        };
        self.cmds = all.split_off(at);
        self.ends = all_ends.split_off(at);
        self.before = match (all_ends.last(), all.last()) {
            (Some(&e), Some(c)) => Some((e, c.db)),
            _ => start_before,
        };
        let off = if all.is_empty() {
            None
        } else {
            all_ends.last().copied()
        };
        (all, all_ends, off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &'static str) -> DbCmd {
        DbCmd {
            db: 0,
            cmd: crate::cmd![name, "k"],
        }
    }

    #[test]
    fn holds_an_open_block_until_exec() {
        let mut h = TxnHold::default();
        let (out, ends, off) = h.cut(
            vec![c("SET"), c("MULTI"), c("INCR")],
            &[10, 20, 30],
            Some(30),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(ends, vec![10]);
        assert_eq!(off, Some(10));
        assert!(h.holding());
        assert_eq!(h.handed_before(), Some((10, 0)));
        let (out, _, off) = h.cut(vec![c("INCR")], &[40], Some(40));
        assert!(out.is_empty() && off.is_none() && h.holding());
        assert_eq!(h.handed_before(), Some((10, 0)));
        let (out, ends, off) = h.cut(vec![c("EXEC"), c("SET")], &[50, 60], Some(60));
        assert_eq!(out.len(), 5);
        assert_eq!(ends, vec![20, 30, 40, 50, 60]);
        assert_eq!(off, Some(60));
        assert!(!h.holding());
    }
}
