//! The slot → node map of a cluster, built from `CLUSTER NODES` text.
//!
//! Line format:
//!
//! ```text
//! <id> <ip:port@cport[,hostname]> <flags> <master-id|-> <ping> <pong> <epoch> <link> <slot>…
//! ```
//!
//! where a slot item is `a-b`, `a`, or a migration marker `[a->-id]` / `[a-<-id]` (ignored: the
//! slot still belongs to the node that lists it as a plain slot).
//!
//! Only live masters own slots: flag `master` without `fail` (`fail?`, a suspicion, still owns).
//! Nodes in `handshake` are ignored. A node without a usable address (`:0@0`, `noaddr`) is left out
//! of the node list, and is an error if it owns slots (it cannot be written to).

use super::slot::SLOTS;

/// Address and id of one cluster node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
    pub id: String,
}

/// Role of a node in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    /// Replica of the master with this id.
    Replica {
        master_id: String,
    },
}

/// Marks a slot without an owner in [`SlotTable`]'s slot array.
const NO_NODE: u16 = u16::MAX;

/// Slot → node map plus the node list.
/// Why `CLUSTER NODES` output could not be read (the router layer's error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error(
        "CLUSTER NODES line {line}: {why}: {text:?} (the cluster's view is inconsistent or not Redis output: check it with `redis-cli cluster nodes`, fix it, then restart)"
    )]
    Line {
        line: usize,
        why: LineError,
        text: String,
    },
}

/// What is wrong with one `CLUSTER NODES` line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected at least 8 fields, got {0}")]
    Fields(usize),
    #[error("bad slot {0:?}")]
    Slot(String),
    #[error("bad slot range {0}")]
    Range(String),
    #[error("node {0} owns slots but has no address")]
    NoAddress(String),
    #[error("node {id} is neither master nor replica ({flags})")]
    Role { id: String, flags: String },
    #[error("too many nodes")]
    TooMany,
    #[error("slot {slot} claimed by {a} and {b}")]
    Claimed { slot: u16, a: String, b: String },
    #[error("bad address {0:?}")]
    Address(String),
    #[error("bad port in address {0:?}")]
    Port(String),
}

#[derive(Clone, Debug)]
pub struct SlotTable {
    /// Node index per slot, [`NO_NODE`] when uncovered.
    owner: Box<[u16]>,
    nodes: Vec<NodeAddr>,
    roles: Vec<Role>,
}

impl SlotTable {
    /// Parses `CLUSTER NODES` output.
    pub fn from_cluster_nodes(text: &str) -> Result<SlotTable, TableError> {
        let mut table = SlotTable {
            owner: vec![NO_NODE; SLOTS].into_boxed_slice(),
            nodes: Vec::new(),
            roles: Vec::new(),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            table.add_line(line).map_err(|why| TableError::Line {
                line: n + 1,
                why,
                text: line.to_string(),
            })?;
        }
        Ok(table)
    }

    fn add_line(&mut self, line: &str) -> Result<(), LineError> {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 8 {
            return Err(LineError::Fields(f.len()));
        }
        let (id, addr, flags, master_id) = (f[0], f[1], f[2], f[3]);
        let has = |flag: &str| flags.split(',').any(|x| x == flag);
        if has("handshake") {
            return Ok(());
        }
        let owns = has("master") && !has("fail");
        let mut ranges = Vec::new();
        for item in &f[8..] {
            if item.starts_with('[') {
                continue; // migrating / importing marker
            }
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (parse_slot(a)?, parse_slot(b)?),
                None => {
                    let s = parse_slot(item)?;
                    (s, s)
                }
            };
            if a > b {
                return Err(LineError::Range(item.to_string()));
            }
            ranges.push((a, b));
        }
        let address = if has("noaddr") {
            None
        } else {
            parse_addr(addr)?
        };
        let Some((host, port)) = address else {
            if owns && !ranges.is_empty() {
                return Err(LineError::NoAddress(id.to_string()));
            }
            return Ok(());
        };
        let role = if has("master") {
            Role::Master
        } else if has("slave") || has("replica") {
            if master_id == "-" {
                // A replica whose master this node has not learned yet (it was just
                // attached, or its master was forgotten): it serves nothing and cannot be
                // used until the cluster agrees on its master, as with `handshake`.
                return Ok(());
            }
            Role::Replica {
                master_id: master_id.to_string(),
            }
        } else {
            return Err(LineError::Role {
                id: id.to_string(),
                flags: flags.to_string(),
            });
        };
        if self.nodes.len() >= NO_NODE as usize {
            return Err(LineError::TooMany);
        }
        let index = self.nodes.len() as u16;
        if owns {
            for &(a, b) in &ranges {
                for s in a..=b {
                    let o = &mut self.owner[s as usize];
                    if *o != NO_NODE {
                        return Err(LineError::Claimed {
                            slot: s,
                            a: id.to_string(),
                            b: self.nodes[*o as usize].id.clone(),
                        });
                    }
                    *o = index;
                }
            }
        }
        self.nodes.push(NodeAddr {
            host,
            port,
            id: id.to_string(),
        });
        self.roles.push(role);
        Ok(())
    }

    /// Index in [`Self::nodes`] of the master serving `slot`.
    #[inline]
    pub fn node_index_for(&self, slot: u16) -> Option<usize> {
        match self.owner.get(slot as usize) {
            Some(&o) if o != NO_NODE => Some(o as usize),
            _ => None,
        }
    }

    /// The master serving `slot`.
    pub fn node_for(&self, slot: u16) -> Option<&NodeAddr> {
        self.node_index_for(slot).map(|i| &self.nodes[i])
    }

    /// Every node with an address, masters and replicas, in `CLUSTER NODES` order.
    pub fn nodes(&self) -> &[NodeAddr] {
        &self.nodes
    }

    /// The role of node `index`.
    pub fn role(&self, index: usize) -> &Role {
        &self.roles[index]
    }

    /// Masters that own at least one slot, in `CLUSTER NODES` order.
    pub fn masters(&self) -> Vec<&NodeAddr> {
        let mut owns = vec![false; self.nodes.len()];
        for &o in self.owner.iter() {
            if o != NO_NODE {
                owns[o as usize] = true;
            }
        }
        self.nodes
            .iter()
            .zip(owns)
            .filter_map(|(n, o)| o.then_some(n))
            .collect()
    }

    /// Replicas of the master with id `master_id` (failed ones included: the caller checks).
    pub fn replicas_of(&self, master_id: &str) -> Vec<&NodeAddr> {
        self.nodes
            .iter()
            .zip(&self.roles)
            .filter(|(_, r)| matches!(r, Role::Replica { master_id: m } if m == master_id))
            .map(|(n, _)| n)
            .collect()
    }

    /// Inclusive slot ranges owned by node `index`.
    pub fn slots_of(&self, index: usize) -> Vec<(u16, u16)> {
        self.ranges_where(|o| o as usize == index)
    }

    /// Inclusive slot ranges no master serves (empty when the cluster is fully covered).
    pub fn uncovered(&self) -> Vec<(u16, u16)> {
        self.ranges_where(|o| o == NO_NODE)
    }

    /// True when every slot has a master.
    pub fn is_complete(&self) -> bool {
        !self.owner.contains(&NO_NODE)
    }

    fn ranges_where(&self, pred: impl Fn(u16) -> bool) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (s, &o) in self.owner.iter().enumerate() {
            if !pred(o) {
                continue;
            }
            let s = s as u16;
            match out.last_mut() {
                Some((_, end)) if *end + 1 == s => *end = s,
                _ => out.push((s, s)),
            }
        }
        out
    }
}

fn parse_slot(s: &str) -> Result<u16, LineError> {
    match s.parse::<u16>() {
        Ok(v) if (v as usize) < SLOTS => Ok(v),
        _ => Err(LineError::Slot(s.to_string())),
    }
}

/// `ip:port@cport[,hostname…]` (or `ip:port` before Redis 4) → host and port; `None` when the node
/// has no address (`:0@0`). IPv6 addresses are written unbracketed (`::1:7000@17000`); the port is
/// after the last `:`. The ip is preferred; a node with an empty ip but a hostname uses the
/// hostname.
fn parse_addr(addr: &str) -> Result<Option<(String, u16)>, LineError> {
    let (main, hostname) = match addr.split_once(',') {
        Some((m, rest)) => (m, rest.split(',').next().unwrap_or("")),
        None => (addr, ""),
    };
    let hostport = main.split_once('@').map_or(main, |(hp, _)| hp);
    let (ip, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| LineError::Address(addr.to_string()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| LineError::Port(addr.to_string()))?;
    let host = if !ip.is_empty() { ip } else { hostname };
    if port == 0 || host.is_empty() {
        return Ok(None);
    }
    Ok(Some((host.to_string(), port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922 [5461-<-e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca]
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
";

    #[test]
    fn parses_three_masters_with_replicas_and_markers() {
        let t = SlotTable::from_cluster_nodes(THREE).unwrap();
        assert_eq!(t.nodes().len(), 6);
        assert!(t.is_complete());
        assert!(t.uncovered().is_empty());
        let port = |s: u16| t.node_for(s).unwrap().port;
        assert_eq!(port(0), 30001);
        assert_eq!(port(5460), 30001);
        assert_eq!(port(5461), 30002);
        assert_eq!(port(10922), 30002);
        assert_eq!(port(10923), 30003);
        assert_eq!(port(16383), 30003);
        let masters: Vec<u16> = t.masters().iter().map(|n| n.port).collect();
        assert_eq!(masters, vec![30002, 30003, 30001]);
        let r: Vec<u16> = t
            .replicas_of("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
            .iter()
            .map(|n| n.port)
            .collect();
        assert_eq!(r, vec![30004]);
        assert_eq!(t.nodes()[0].host, "127.0.0.1");
        let i = t.node_index_for(0).unwrap();
        assert_eq!(t.slots_of(i), vec![(0, 5460)]);
        assert_eq!(t.role(i), &Role::Master);
    }

    #[test]
    fn single_slots_and_gaps() {
        let text = "a 10.0.0.1:7000@17000 master - 0 0 1 connected 0-99 101 200-16383\n\
                    b 10.0.0.2:7001@17001 myself,master - 0 0 2 connected\n";
        let t = SlotTable::from_cluster_nodes(text).unwrap();
        assert_eq!(t.uncovered(), vec![(100, 100), (102, 199)]);
        assert_eq!(t.node_for(101).unwrap().id, "a");
        assert_eq!(t.node_for(100), None);
        assert!(!t.is_complete());
        assert_eq!(t.masters().len(), 1);
        assert_eq!(t.nodes().len(), 2);
    }

    #[test]
    fn failed_masters_own_nothing_and_pfail_still_owns() {
        let text = "a 10.0.0.1:7000@17000 master,fail - 0 0 1 disconnected 0-8191\n\
                    b 10.0.0.2:7001@17001 master,fail? - 0 0 2 connected 8192-16383\n\
                    c 10.0.0.3:7002@17002 master - 0 0 3 connected 0-8191\n";
        let t = SlotTable::from_cluster_nodes(text).unwrap();
        assert_eq!(t.node_for(0).unwrap().id, "c");
        assert_eq!(t.node_for(9000).unwrap().id, "b");
        assert!(t.is_complete());
    }

    #[test]
    fn nodes_without_address() {
        // A forgotten/unknown node without slots is skipped.
        let text = "a 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\n\
                    b :0@0 master,noaddr - 0 0 2 disconnected\n\
                    c :0@0 slave a 0 0 2 disconnected\n";
        let t = SlotTable::from_cluster_nodes(text).unwrap();
        assert_eq!(t.nodes().len(), 1);
        assert!(t.replicas_of("a").is_empty());
        // One that owns slots is an error.
        let text = "a 10.0.0.1:7000@17000 master - 0 0 1 connected 0-100\n\
                    b :0@0 master - 0 0 2 connected 101-16383\n";
        let e = SlotTable::from_cluster_nodes(text).unwrap_err().to_string();
        assert!(e.contains("no address"), "{e}");
        // Failed and address-less: fine (it owns nothing).
        let text = "b :0@0 master,fail,noaddr - 0 0 2 disconnected 0-16383\n";
        assert_eq!(
            SlotTable::from_cluster_nodes(text).unwrap().uncovered(),
            vec![(0, 16383)]
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:7000@17000").unwrap(),
            Some(("127.0.0.1".into(), 7000))
        );
        assert_eq!(
            parse_addr("10.1.2.3:6380@16380,redis-1.example,shard-id=abc").unwrap(),
            Some(("10.1.2.3".into(), 6380))
        );
        assert_eq!(
            parse_addr(":6380@16380,redis-1.example").unwrap(),
            Some(("redis-1.example".into(), 6380))
        );
        assert_eq!(
            parse_addr("::1:7000@17000").unwrap(),
            Some(("::1".into(), 7000))
        );
        assert_eq!(
            parse_addr("10.0.0.1:7000").unwrap(),
            Some(("10.0.0.1".into(), 7000))
        );
        assert_eq!(parse_addr(":0@0").unwrap(), None);
        assert!(parse_addr("nonsense").is_err());
        assert!(parse_addr("h:x@1").is_err());
    }

    #[test]
    fn errors() {
        for (text, want) in [
            ("a 1.1.1.1:1@2 master - 0 0 1\n", "at least 8 fields"),
            (
                "a 1.1.1.1:1@2 master - 0 0 1 connected 0-16384\n",
                "bad slot",
            ),
            (
                "a 1.1.1.1:1@2 master - 0 0 1 connected 9-3\n",
                "bad slot range",
            ),
            ("a 1.1.1.1:1@2 master - 0 0 1 connected x\n", "bad slot"),
            (
                "a 1.1.1.1:1@2 master - 0 0 1 connected 0-10\nb 1.1.1.2:1@2 master - 0 0 1 connected 10\n",
                "slot 10 claimed by b and a",
            ),
        ] {
            let e = SlotTable::from_cluster_nodes(text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
        let ok = "a 1.1.1.1:1@2 handshake - 0 0 0 disconnected\n\n";
        assert_eq!(SlotTable::from_cluster_nodes(ok).unwrap().nodes().len(), 0);
        // A replica whose master is not known yet (seen while a replica is attached under
        // load) is left out instead of failing the whole table.
        let fresh = "a 1.1.1.1:1@2 master - 0 0 1 connected 0-16383\nb 1.1.1.2:1@2 slave - 0 0 0 disconnected\n";
        assert_eq!(
            SlotTable::from_cluster_nodes(fresh).unwrap().nodes().len(),
            1
        );
    }
}
