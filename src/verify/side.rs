//! One side of a verification (the source or the target): a standalone server or a cluster's
//! masters, one raw RESP connection per server, keys routed by CRC16 slot, and pipelined batches
//! that group commands per server and keep their order.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::cmd::Cmd;
use crate::config::Endpoint;
use crate::net::topology::{self, Topology};
use crate::net::{NetError, RespConn};
use crate::resp::Frame;
use crate::router::{SLOTS, key_slot};

use super::VerifyError;

/// Connection to one server, with the database it has selected.
struct NodeConn {
    conn: RespConn,
    db: Option<u32>,
    /// `(major, minor, patch)` of the server.
    version: (u32, u32, u32),
    /// Keys per database from `INFO keyspace` at discovery.
    keyspace: Vec<(u32, u64)>,
}

/// The servers of one side and the slot → server map.
pub struct Side {
    /// "source" or "target", for messages.
    pub role: &'static str,
    /// The address the user gave (for the report).
    pub seed: String,
    nodes: Vec<NodeConn>,
    /// Server index per slot (cluster only).
    route: Option<Box<[u16]>>,
}

/// Keys per database from an `INFO` text's `# Keyspace` section.
fn keyspace(info: &str) -> Vec<(u32, u64)> {
    info.lines()
        .filter_map(|l| {
            let (db, rest) = l.strip_prefix("db")?.split_once(":keys=")?;
            Some((db.parse().ok()?, rest.split(',').next()?.parse().ok()?))
        })
        .collect()
}

fn net(e: NetError) -> VerifyError {
    VerifyError::Net(e.to_string())
}

impl Side {
    /// Discovers the deployment behind `seed` and opens one connection per master.
    pub async fn open(role: &'static str, seed: &Endpoint) -> Result<Side, VerifyError> {
        let topo = topology::discover(role, seed)
            .await
            .map_err(|e| VerifyError::Net(e.to_string()))?;
        let mut nodes = Vec::new();
        for m in topo.masters() {
            let conn = RespConn::connect(&m.endpoint)
                .await
                .map_err(|e| VerifyError::Net(format!("{role} {}: {e}", m.endpoint)))?;
            nodes.push(NodeConn {
                conn,
                db: None,
                version: m.info.version,
                keyspace: keyspace(&m.raw_info),
            });
        }
        let route = match &topo {
            Topology::Standalone(_) => None,
            Topology::Cluster { masters, .. } => {
                let mut r = vec![0u16; SLOTS].into_boxed_slice();
                for (i, m) in masters.iter().enumerate() {
                    for &(a, b) in &m.slots {
                        for s in a..=b {
                            r[s as usize] = i as u16;
                        }
                    }
                }
                Some(r)
            }
        };
        Ok(Side {
            role,
            seed: seed.to_string(),
            nodes,
            route,
        })
    }

    pub fn is_cluster(&self) -> bool {
        self.route.is_some()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Address of server `i`.
    pub fn node_addr(&self, i: usize) -> &str {
        &self.nodes[i].conn.addr
    }

    /// The oldest server version of this side (decides which commands may be used).
    pub fn min_version(&self) -> (u32, u32, u32) {
        self.nodes
            .iter()
            .map(|n| n.version)
            .min()
            .unwrap_or((0, 0, 0))
    }

    /// Databases holding keys on any server, with their key counts summed.
    pub fn keyspace(&self) -> Vec<(u32, u64)> {
        let mut m = std::collections::BTreeMap::new();
        for n in &self.nodes {
            for &(db, k) in &n.keyspace {
                *m.entry(db).or_insert(0u64) += k;
            }
        }
        m.into_iter().collect()
    }

    /// Keys in `db` on server `i` (from discovery).
    pub fn node_keys(&self, i: usize, db: u32) -> u64 {
        self.nodes[i]
            .keyspace
            .iter()
            .find(|(d, _)| *d == db)
            .map(|(_, k)| *k)
            .unwrap_or(0)
    }

    /// The server holding `key`.
    pub fn node_of(&self, key: &[u8]) -> usize {
        match &self.route {
            None => 0,
            Some(r) => r[key_slot(key) as usize] as usize,
        }
    }

    /// Runs `cmds` on server `node` in database `db` as one pipeline and returns the replies in
    /// order.
    pub async fn exec_on(
        &mut self,
        node: usize,
        db: u32,
        cmds: &[Cmd],
    ) -> Result<Vec<Frame>, VerifyError> {
        let mut all = self.exec_groups(&[(node, cmds.to_vec())], db).await?;
        Ok(all.pop().unwrap_or_default())
    }

    /// Runs each group `(server, commands)` in database `db`: everything is written first (all
    /// servers), then the replies are read; returns one reply list per group, in group order.
    pub async fn exec_groups(
        &mut self,
        groups: &[(usize, Vec<Cmd>)],
        db: u32,
    ) -> Result<Vec<Vec<Frame>>, VerifyError> {
        let role = self.role;
        let mut bufs: Vec<Option<BytesMut>> = vec![None; self.nodes.len()];
        let mut select_sent = vec![false; self.nodes.len()];
        for (node, cmds) in groups {
            let n = &mut self.nodes[*node];
            let buf = bufs[*node].get_or_insert_with(BytesMut::new);
            if n.db != Some(db) && !select_sent[*node] {
                Cmd::new(["SELECT".to_string(), db.to_string()]).encode(buf);
                select_sent[*node] = true;
            }
            for c in cmds {
                c.encode(buf);
            }
        }
        for (i, buf) in bufs.iter().enumerate() {
            if let Some(buf) = buf {
                let n = &mut self.nodes[i];
                n.conn.stream.write_all(buf).await.map_err(|e| {
                    VerifyError::Net(format!("{role} {}: write failed: {e}", n.conn.addr))
                })?;
            }
        }
        for (i, sent) in select_sent.iter().enumerate() {
            if *sent {
                let n = &mut self.nodes[i];
                let f = n.conn.read_frame().await.map_err(net)?;
                if let Frame::Error(e) = f {
                    return Err(VerifyError::Net(format!(
                        "{role} {}: SELECT {db} failed: {}",
                        n.conn.addr,
                        String::from_utf8_lossy(&e)
                    )));
                }
                n.db = Some(db);
            }
        }
        // Replies of one server arrive in the order its commands were written, i.e. group order.
        let mut out = Vec::with_capacity(groups.len());
        for (node, cmds) in groups {
            let n = &mut self.nodes[*node];
            let mut replies = Vec::with_capacity(cmds.len());
            for c in cmds {
                let f = n.conn.read_frame().await.map_err(net)?;
                if let Frame::Error(e) = &f
                    && (e.starts_with(b"NOAUTH")
                        || e.starts_with(b"MOVED")
                        || e.starts_with(b"ASK"))
                {
                    return Err(VerifyError::Net(format!(
                        "{role} {}: {} answered {} (the deployment changed during verify? run it again)",
                        n.conn.addr,
                        c.name_upper(),
                        String::from_utf8_lossy(e)
                    )));
                }
                replies.push(f);
            }
            out.push(replies);
        }
        Ok(out)
    }

    /// Runs per-key command lists, each on the server holding its key, in database `db`;
    /// replies come back per key in the same order.
    pub async fn exec_keyed(
        &mut self,
        db: u32,
        items: Vec<(usize, Vec<Cmd>)>,
    ) -> Result<Vec<Vec<Frame>>, VerifyError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if self.nodes.len() == 1 {
            let counts: Vec<usize> = items.iter().map(|(_, c)| c.len()).collect();
            let all: Vec<Cmd> = items.into_iter().flat_map(|(_, c)| c).collect();
            let mut replies = self.exec_on(0, db, &all).await?.into_iter();
            return Ok(counts
                .into_iter()
                .map(|n| replies.by_ref().take(n).collect())
                .collect());
        }
        // Group per server, run, then put the replies back in item order.
        let mut per: Vec<Vec<Cmd>> = vec![Vec::new(); self.nodes.len()];
        let mut counts = Vec::with_capacity(items.len());
        for (node, cmds) in items {
            counts.push((node, cmds.len()));
            per[node].extend(cmds);
        }
        let groups: Vec<(usize, Vec<Cmd>)> = per
            .into_iter()
            .enumerate()
            .filter(|(_, c)| !c.is_empty())
            .collect();
        let replies = self.exec_groups(&groups, db).await?;
        let mut iters: Vec<Option<std::vec::IntoIter<Frame>>> =
            (0..self.nodes.len()).map(|_| None).collect();
        for ((node, _), r) in groups.iter().zip(replies) {
            iters[*node] = Some(r.into_iter());
        }
        let mut out = Vec::with_capacity(counts.len());
        for (node, n) in counts {
            let it = iters[node].as_mut();
            out.push(match it {
                Some(it) => it.by_ref().take(n).collect(),
                None => Vec::new(),
            });
        }
        Ok(out)
    }
}
