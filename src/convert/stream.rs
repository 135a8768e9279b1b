//! Stream conversion: entries, stream metadata, consumer groups, consumers and pending entries.
//!
//! Order of commands for one stream key:
//! 1. `XADD key <id> f v …` per entry, fields in order (the first one creates the stream).
//! 2. If there were no entries, the empty stream is created with `XGROUP CREATE … MKSTREAM`:
//!    for the first real group when there is one, else for a temporary group destroyed at once.
//! 3. `XSETID key <last_id>` (+ `ENTRIESADDED n MAXDELETEDID id` on targets ≥ 7.0).
//! 4. Per group: `XGROUP CREATE key g <last_delivered_id>` (+ `ENTRIESREAD n` on ≥ 7.0), then
//!    `XGROUP CREATECONSUMER` for consumers without pending entries (≥ 6.2), then the PEL with
//!    `XCLAIM key g consumer 0 id… TIME ms RETRYCOUNT n FORCE JUSTID`, one command per run of
//!    consecutive entries sharing consumer, delivery time and count (how Redis itself propagates
//!    group reads).

use std::collections::HashSet;

use bytes::Bytes;

use super::ConvertError;
use super::keys::Emit;
use crate::cmd;
use crate::cmd::Cmd;
use crate::rdb::{StreamEntry, StreamGroup, StreamId, StreamMeta};

/// Name of the temporary group used to create an empty stream without groups.
pub const TEMP_GROUP: &str = "__shardsync_mkstream__";

/// Progress of one stream key.
#[derive(Default)]
pub(super) struct StreamState {
    entries: u64,
    meta: Option<StreamMeta>,
    /// `XSETID` could not be sent for lack of `StreamMeta` (reported at `KeyEnd`).
    missing_meta: bool,
    /// Stream created (if empty) and `XSETID` sent.
    base_done: bool,
}

fn id_arg(id: StreamId) -> Bytes {
    Bytes::from(id.to_string())
}

/// A u64 counter as Redis's signed argument, or `None` when it is out of range (e.g. the
/// "unknown" marker -1 stored unsigned).
fn signed(n: u64) -> Option<i64> {
    i64::try_from(n).ok()
}

impl StreamState {
    pub fn entries(
        &mut self,
        entries: Vec<StreamEntry>,
        e: &mut Emit<'_>,
    ) -> Result<(), ConvertError> {
        if self.meta.is_some() {
            return Err(seq(e, "stream entries after StreamMeta; ignored"));
        }
        let mut empty = 0usize;
        for entry in entries {
            if entry.fields.is_empty() {
                empty += 1;
                continue;
            }
            let mut c = cmd!["XADD", e.key, id_arg(entry.id)];
            c.args.reserve(entry.fields.len() * 2);
            for (f, v) in entry.fields {
                c.args.push(f);
                c.args.push(v);
            }
            e.write(c);
            self.entries += 1;
        }
        if empty > 0 {
            return Err(ConvertError::Unsupported {
                key: e.key.clone(),
                reason: format!("{empty} stream entries without fields skipped"),
            });
        }
        Ok(())
    }

    pub fn meta(&mut self, meta: StreamMeta, e: &mut Emit<'_>) -> Result<(), ConvertError> {
        if self.meta.is_some() || self.base_done {
            return Err(seq(
                e,
                "second StreamMeta or StreamMeta after groups; ignored",
            ));
        }
        self.meta = Some(meta);
        Ok(())
    }

    pub fn group(&mut self, g: StreamGroup, e: &mut Emit<'_>) -> Result<(), ConvertError> {
        let v7 = e.opts.target.at_least(7, 0);
        let created_with_base = self.base(e, Some(&g));
        if !created_with_base {
            let mut c = cmd![
                "XGROUP",
                "CREATE",
                e.key,
                &g.name,
                id_arg(g.last_delivered_id)
            ];
            if v7 && let Some(n) = g.entries_read.and_then(signed) {
                c.args.push(Bytes::from_static(b"ENTRIESREAD"));
                c.args.push(crate::cmd::arg(n));
            }
            e.write(c);
        }
        // Consumers without pending entries; the others are created by XCLAIM.
        let with_pending: HashSet<&[u8]> = g.pending.iter().map(|p| p.consumer.as_ref()).collect();
        let idle: Vec<&Bytes> = g
            .consumers
            .iter()
            .map(|c| &c.name)
            .filter(|n| !with_pending.contains(n.as_ref()))
            .collect();
        for name in idle {
            e.write(super::compat::create_consumer(
                e.key,
                &g.name,
                name,
                e.opts.target.at_least(6, 2),
            ));
        }
        // The PEL, in runs of entries sharing consumer, delivery time and count.
        let max = e.opts.elements_per_command;
        let mut i = 0;
        while i < g.pending.len() {
            let p = &g.pending[i];
            let mut c = cmd!["XCLAIM", e.key, &g.name, &p.consumer, "0"];
            let mut j = i;
            while j < g.pending.len()
                && j - i < max
                && g.pending[j].consumer == p.consumer
                && g.pending[j].delivery_time_ms == p.delivery_time_ms
                && g.pending[j].delivery_count == p.delivery_count
            {
                c.args.push(id_arg(g.pending[j].id));
                j += 1;
            }
            let Cmd { args } = cmd![
                "TIME",
                p.delivery_time_ms,
                "RETRYCOUNT",
                p.delivery_count,
                "FORCE",
                "JUSTID"
            ];
            c.args.extend(args);
            e.write(c);
            i = j;
        }
        Ok(())
    }

    /// Completes the stream at `KeyEnd`: creates it if it is empty and sends `XSETID`.
    pub fn finish(
        &mut self,
        e: &mut Emit<'_>,
        _unsupported: &mut Vec<String>,
    ) -> Result<(), ConvertError> {
        self.base(e, None);
        if self.missing_meta {
            return Err(seq(e, "stream without StreamMeta; XSETID not sent"));
        }
        Ok(())
    }

    /// Creates the empty stream (through `first_group` when given) and sends `XSETID`, once.
    /// Returns true when `first_group` was created here.
    fn base(&mut self, e: &mut Emit<'_>, first_group: Option<&StreamGroup>) -> bool {
        if self.base_done {
            return false;
        }
        self.base_done = true;
        let v7 = e.opts.target.at_least(7, 0);
        let mut created_group = false;
        if self.entries == 0 {
            match first_group {
                Some(g) => {
                    let mut c = cmd![
                        "XGROUP",
                        "CREATE",
                        e.key,
                        &g.name,
                        id_arg(g.last_delivered_id),
                        "MKSTREAM"
                    ];
                    if v7 && let Some(n) = g.entries_read.and_then(signed) {
                        c.args.push(Bytes::from_static(b"ENTRIESREAD"));
                        c.args.push(crate::cmd::arg(n));
                    }
                    e.write(c);
                    created_group = true;
                }
                None => {
                    e.write(cmd!["XGROUP", "CREATE", e.key, TEMP_GROUP, "$", "MKSTREAM"]);
                    e.write(cmd!["XGROUP", "DESTROY", e.key, TEMP_GROUP]);
                }
            }
        }
        let Some(meta) = &self.meta else {
            self.missing_meta = true;
            return created_group;
        };
        let mut c = cmd!["XSETID", e.key, id_arg(meta.last_id)];
        if v7 {
            if let Some(n) = meta.entries_added.and_then(signed) {
                c.args.push(Bytes::from_static(b"ENTRIESADDED"));
                c.args.push(crate::cmd::arg(n));
            }
            if let Some(id) = meta.max_deleted_id {
                c.args.push(Bytes::from_static(b"MAXDELETEDID"));
                c.args.push(id_arg(id));
            }
        }
        e.write(c);
        created_group
    }
}

fn seq(e: &Emit<'_>, reason: &str) -> ConvertError {
    ConvertError::Sequence {
        key: Some(e.key.clone()),
        reason: reason.into(),
    }
}
