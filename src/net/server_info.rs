//! What a server is: flavor, version, the RDB version it writes and reads, cluster mode. Parsed
//! from `INFO server` / `INFO cluster` text; decides RESTORE vs plain commands and command
//! rewrites for older targets.

use crate::rdb::Flavor;

/// A server's identity as far as replication cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub flavor: Flavor,
    /// (major, minor, patch) of `redis_version` or, for Valkey, `valkey_version`.
    pub version: (u32, u32, u32),
    pub cluster_enabled: bool,
}

impl ServerInfo {
    /// Parses the text of `INFO` (any sections that include `server`; `cluster` when present).
    pub fn parse(info: &str) -> Option<ServerInfo> {
        let mut redis_ver = None;
        let mut valkey_ver = None;
        let mut server_name = None;
        let mut cluster_enabled = false;
        for line in info.lines() {
            let Some((k, v)) = line.trim_end().split_once(':') else {
                continue;
            };
            match k {
                "redis_version" => redis_ver = parse_version(v),
                "valkey_version" => valkey_ver = parse_version(v),
                "server_name" => server_name = Some(v.to_string()),
                "cluster_enabled" => cluster_enabled = v == "1",
                _ => {}
            }
        }
        let (flavor, version) = match (valkey_ver, server_name.as_deref()) {
            (Some(v), _) => (Flavor::Valkey, v),
            (None, Some("valkey")) => (Flavor::Valkey, redis_ver?),
            _ => (Flavor::Redis, redis_ver?),
        };
        Some(ServerInfo {
            flavor,
            version,
            cluster_enabled,
        })
    }

    /// The RDB version this server writes, hence the newest `DUMP` payload version it accepts in
    /// `RESTORE`.
    pub fn rdb_version(&self) -> u32 {
        let (maj, min, _) = self.version;
        match self.flavor {
            Flavor::Valkey if maj >= 9 => 80,
            // Valkey 7.2 / 8.x kept Redis 7.2's format.
            Flavor::Valkey => 11,
            Flavor::Redis => match (maj, min) {
                (0..=2, _) => 6,
                (3, 0..=1) => 6,
                (3, _) => 7,
                (4, _) => 8,
                (5 | 6, _) => 9,
                (7, 0..=1) => 10,
                (7, 2..=3) => 11,
                (7, _) | (8, 0..=4) => 12,
                (8, 5..=6) => 13,
                _ => 14,
            },
        }
    }

    /// True when this server can `RESTORE` a payload written with `flavor` at `rdb_version`.
    pub fn accepts_dump(&self, flavor: Flavor, rdb_version: u32) -> bool {
        match (self.flavor, flavor) {
            (Flavor::Redis, Flavor::Redis) => rdb_version <= self.rdb_version(),
            // Valkey reads Redis payloads of the versions it shares (≤ 11).
            (Flavor::Valkey, Flavor::Redis) => rdb_version <= 11,
            (Flavor::Valkey, Flavor::Valkey) => rdb_version <= self.rdb_version(),
            (Flavor::Redis, Flavor::Valkey) => false,
        }
    }

    /// True when the server knows `SET … PXAT/EXAT`, `GETEX` and other 6.2 syntax.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.flavor == Flavor::Valkey || (self.version.0, self.version.1) >= (major, minor)
    }

    /// True for Valkey at `major.minor` or later (Valkey's own commands and options).
    pub fn valkey_at_least(&self, major: u32, minor: u32) -> bool {
        self.flavor == Flavor::Valkey && (self.version.0, self.version.1) >= (major, minor)
    }
}

fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.trim().split('.').map(|p| p.parse::<u32>().ok());
    Some((
        it.next()??,
        it.next().flatten().unwrap_or(0),
        it.next().flatten().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_and_valkey() {
        let r = ServerInfo::parse("# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n")
            .unwrap();
        assert_eq!(
            (r.flavor, r.version, r.rdb_version()),
            (Flavor::Redis, (7, 0, 15), 10)
        );
        let v = ServerInfo::parse("redis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2\r\ncluster_enabled:1\r\n").unwrap();
        assert_eq!(
            (v.flavor, v.version, v.rdb_version(), v.cluster_enabled),
            (Flavor::Valkey, (9, 1, 2), 80, true)
        );
        assert!(!r.accepts_dump(Flavor::Valkey, 80));
        assert!(r.accepts_dump(Flavor::Redis, 9));
        assert!(
            !ServerInfo::parse("redis_version:6.0.9")
                .unwrap()
                .accepts_dump(Flavor::Redis, 10)
        );
    }
}
