//! Discovery of a deployment from one address: a standalone server, or a Redis Cluster whose
//! masters are all found from any one node. Every master is contacted with the shared password
//! (a node that refuses it is named in the error) and every slot must be served.

use crate::config::Endpoint;
use crate::net::server_info::ServerInfo;
use crate::net::{NetError, client};
use crate::router::SlotTable;

/// One server of a deployment, with what it said about itself.
#[derive(Clone, Debug)]
pub struct Node {
    pub endpoint: Endpoint,
    pub info: ServerInfo,
    /// Full `INFO` text (keyspace, memory, replication…).
    pub raw_info: String,
    /// Slot ranges the node serves (cluster masters only).
    pub slots: Vec<(u16, u16)>,
    /// Its replicas that are up (for `source.prefer_replica`).
    pub replicas: Vec<Endpoint>,
}

/// A standalone server or a cluster's masters.
#[derive(Clone, Debug)]
pub enum Topology {
    Standalone(Node),
    Cluster {
        table: SlotTable,
        masters: Vec<Node>,
    },
}

impl Topology {
    /// The servers that take writes: the standalone server or every master.
    pub fn masters(&self) -> Vec<&Node> {
        match self {
            Topology::Standalone(n) => vec![n],
            Topology::Cluster { masters, .. } => masters.iter().collect(),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster { .. })
    }

    /// The identity used for version decisions (the first master; clusters are homogeneous in
    /// practice, and the oldest master decides when they are not).
    pub fn info(&self) -> ServerInfo {
        let masters = self.masters();
        let mut oldest = masters[0].info.clone();
        for m in &masters[1..] {
            if m.info.version < oldest.version {
                oldest = m.info.clone();
            }
        }
        oldest
    }
}

/// An endpoint for `host:port` with the login and TLS settings of `seed` (a TLS cluster's nodes
/// are checked against the seed's server name).
pub fn endpoint_like(seed: &Endpoint, host: &str, port: u16) -> Endpoint {
    Endpoint {
        host: host.to_string(),
        port,
        username: seed.username.clone(),
        password: seed.password.clone(),
        tls: seed.tls.clone(),
    }
}

/// The endpoint of a `host:port` address (as in `MOVED`/`ASK` replies and `INFO`; an IPv6 host
/// may be in brackets) with the login and TLS settings of `seed`; `None` when unreadable.
pub fn endpoint_at(seed: &Endpoint, addr: &str) -> Option<Endpoint> {
    let (h, p) = addr.rsplit_once(':')?;
    Some(endpoint_like(
        seed,
        h.trim_start_matches('[').trim_end_matches(']'),
        p.parse().ok()?,
    ))
}

/// Formats slot ranges as `0-5460, 5462`.
pub fn format_ranges(r: &[(u16, u16)]) -> String {
    r.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads `CLUSTER NODES` from `ep` and parses it.
pub async fn cluster_table(role: &str, ep: &Endpoint) -> Result<SlotTable, NetError> {
    let mut conn = client::connect(role, ep).await?;
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .map_err(|e| {
            NetError::client(
                role,
                ep,
                format!("CLUSTER NODES failed: {}", client::describe(&e)),
            )
        })?;
    SlotTable::from_cluster_nodes(&text).map_err(|source| NetError::Table {
        role: role.to_string(),
        addr: ep.to_string(),
        source,
    })
}

async fn node(role: &str, ep: Endpoint, slots: Vec<(u16, u16)>) -> Result<Node, NetError> {
    let mut conn = client::connect(role, &ep).await?;
    let (info, raw_info) = client::server_info(role, &ep, &mut conn).await?;
    let replicas = online_replicas(&raw_info, &ep);
    Ok(Node {
        endpoint: ep,
        info,
        raw_info,
        slots,
        replicas,
    })
}

/// Replicas a master lists as online in `INFO replication` (`slaveN:ip=…,port=…,state=online`).
fn online_replicas(info: &str, master: &Endpoint) -> Vec<Endpoint> {
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains(":ip="))
        .filter_map(|l| {
            let fields = l.split_once(':')?.1;
            let get = |k: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
            };
            (get("state")? == "online").then_some(())?;
            Some(endpoint_like(
                master,
                get("ip")?,
                get("port")?.parse().ok()?,
            ))
        })
        .collect()
}

/// Finds the deployment behind `seed`. `role` ("source", "target") starts every error.
pub async fn discover(role: &str, seed: &Endpoint) -> Result<Topology, NetError> {
    let first = node(role, seed.clone(), Vec::new()).await?;
    if !first.info.cluster_enabled {
        return Ok(Topology::Standalone(first));
    }
    let table = cluster_table(role, seed).await?;
    // Each master is asked for its own slots: the seed's view can lag behind a change (gossip),
    // the owner's view of itself cannot.
    let mut covered = vec![false; crate::router::SLOTS];
    let mut masters = Vec::new();
    for n in table.masters() {
        let ep = endpoint_like(seed, &n.host, n.port);
        let own = cluster_table(&format!("{role} master"), &ep).await?;
        let me = own
            .nodes()
            .iter()
            .position(|m| m.host == n.host && m.port == n.port);
        let slots = me.map(|i| own.slots_of(i)).unwrap_or_default();
        for &(a, b) in &slots {
            for s in a..=b {
                covered[s as usize] = true;
            }
        }
        masters.push(node(&format!("{role} master"), ep, slots).await?);
    }
    let mut uncovered: Vec<(u16, u16)> = Vec::new();
    for (s, c) in covered.iter().enumerate() {
        if *c {
            continue;
        }
        let s = s as u16;
        match uncovered.last_mut() {
            Some((_, b)) if *b + 1 == s => *b = s,
            _ => uncovered.push((s, s)),
        }
    }
    if !uncovered.is_empty() {
        return Err(NetError::Uncovered {
            role: role.to_string(),
            slots: format_ranges(&uncovered),
        });
    }
    masters.retain(|m| !m.slots.is_empty());
    Ok(Topology::Cluster { table, masters })
}
