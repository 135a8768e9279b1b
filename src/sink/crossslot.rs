//! The cross-slot fallback: runs a command whose keys live in several slots of a cluster target
//! (`RENAME`, `COPY`, `*STORE`, `BITOP`, `PFMERGE`, `LMOVE`, multi-key scripts…), which only a
//! standalone source can produce. Gather: each key is copied (`DUMP` + `RESTORE` with its TTL)
//! into a temporary key of one slot; the command runs there on the temporaries; scatter: every
//! temporary is copied back over its original key (or the original deleted when the temporary
//! is gone), then the temporaries are deleted. The caller first waits until every earlier write
//! of the shard is applied, so the copies read the right values.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;

use super::SinkError;
use super::targets::Targets;
use crate::cmd::Cmd;
use crate::net::client;
use crate::router::{self, key_slot};

/// Hash tag of the temporary keys: they all live in this tag's slot.
const TEMP_TAG: &str = "{shardsync-xslot}";

/// Executes cross-slot commands; keeps a connection per target node.
pub struct CrossSlot {
    targets: Arc<Targets>,
    conns: HashMap<String, MultiplexedConnection>,
}

impl CrossSlot {
    pub fn new(targets: Arc<Targets>) -> CrossSlot {
        CrossSlot {
            targets,
            conns: HashMap::new(),
        }
    }

    async fn conn(&mut self, slot: u16) -> Result<(&mut MultiplexedConnection, String), SinkError> {
        let ep = self
            .targets
            .endpoint_for_slot(slot)
            .ok_or(SinkError::NoOwner { slot })?;
        let addr = ep.to_string();
        let c = match self.conns.entry(addr.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => v.insert(client::connect("target", &ep).await?),
        };
        Ok((c, addr))
    }

    async fn query(&mut self, slot: u16, cmd: &redis::Cmd) -> Result<redis::Value, SinkError> {
        let (c, addr) = self.conn(slot).await?;
        let r: redis::RedisResult<redis::Value> = cmd.query_async(c).await;
        r.map_err(|e| SinkError::command(addr, "cross-slot fallback", &e))
    }

    /// Copies `from` (slot `fs`) over `to` (slot `ts`), TTL included; deletes `to` when `from` is gone.
    async fn copy(&mut self, from: &[u8], fs: u16, to: &[u8], ts: u16) -> Result<(), SinkError> {
        let dump = self.query(fs, redis::cmd("DUMP").arg(from)).await?;
        match dump {
            redis::Value::BulkString(payload) => {
                let ttl = match self.query(fs, redis::cmd("PTTL").arg(from)).await? {
                    redis::Value::Int(t) if t > 0 => t,
                    _ => 0,
                };
                self.query(
                    ts,
                    redis::cmd("RESTORE")
                        .arg(to)
                        .arg(ttl)
                        .arg(payload)
                        .arg("REPLACE"),
                )
                .await?;
            }
            _ => {
                self.query(ts, redis::cmd("DEL").arg(to)).await?;
            }
        }
        Ok(())
    }

    /// Runs `cmd` on the cluster with the gather/execute/scatter scheme.
    pub async fn execute(&mut self, cmd: &Cmd) -> Result<(), SinkError> {
        let spec = router::command_keys(cmd);
        let positions: Vec<usize> = spec.keys.iter().collect();
        let temp_slot = key_slot(TEMP_TAG.as_bytes());
        let mut temps: Vec<(Bytes, Bytes)> = Vec::new();
        let mut args = cmd.args.clone();
        for &p in &positions {
            let Some(key) = cmd.args.get(p) else { continue };
            let temp = match temps.iter().find(|(k, _)| k == key) {
                Some((_, t)) => t.clone(),
                None => {
                    let t = Bytes::from(format!("{TEMP_TAG}:{}", temps.len()));
                    self.copy(key, key_slot(key), &t, temp_slot).await?;
                    temps.push((key.clone(), t.clone()));
                    t
                }
            };
            args[p] = temp;
        }
        let mut run = redis::cmd(&String::from_utf8_lossy(&args[0]));
        for a in &args[1..] {
            run.arg(a.as_ref());
        }
        let result = self.query(temp_slot, &run).await;
        if let Ok(redis::Value::ServerError(e)) = &result {
            tracing::warn!(command = %cmd.name_upper(), error = ?e, "cross-slot command failed on the target");
        }
        for (key, temp) in &temps {
            self.copy(temp, temp_slot, key, key_slot(key)).await?;
        }
        let mut del = redis::cmd("DEL");
        for (_, t) in &temps {
            del.arg(t.as_ref());
        }
        if !temps.is_empty() {
            self.query(temp_slot, &del).await?;
        }
        match result? {
            redis::Value::ServerError(e) => Err(SinkError::Refused(format!("{e:?}"))),
            _ => Ok(()),
        }
    }
}
