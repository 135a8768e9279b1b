//! Ordinary request/response connections (redis-rs) for prechecks, the heartbeat and `INFO`, with
//! errors that name the server and its role and never carry a password.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::config::Endpoint;
use crate::net::server_info::ServerInfo;

/// Opens a redis-rs connection to `ep`; `role` ("source", "target") prefixes every error.
pub async fn connect(role: &str, ep: &Endpoint) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(ep.connection_info())
        .map_err(|e| format!("{role} {ep}: {}", describe(&e)))?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| format!("{role} {ep}: {}", describe(&e)))
}

/// A person-readable reason for a redis-rs error, with what to do about it.
pub fn describe(e: &redis::RedisError) -> String {
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("invalid password")
        || text.contains("invalid username-password")
    {
        "the server rejected the password; check the password configured for it".into()
    } else if text.contains("NOAUTH") {
        "the server requires a password and none was given (put it in the URL or the *_PASSWORD env var)".into()
    } else if e.is_connection_refusal() || e.is_io_error() || e.is_timeout() {
        format!("cannot connect ({text}); is the server running and reachable?")
    } else {
        text
    }
}

/// Runs `INFO` and parses the server identity.
pub async fn server_info(
    role: &str,
    ep: &Endpoint,
    conn: &mut MultiplexedConnection,
) -> Result<(ServerInfo, String), String> {
    let info: String = redis::cmd("INFO")
        .arg("everything")
        .query_async(conn)
        .await
        .map_err(|e| format!("{role} {ep}: INFO failed: {}", describe(&e)))?;
    let si = ServerInfo::parse(&info)
        .ok_or_else(|| format!("{role} {ep}: INFO does not say which server version this is"))?;
    Ok((si, info))
}

/// The value of `field` in `INFO` text.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
}

/// Total keys over all databases, from the `# Keyspace` section of `INFO`.
pub fn keyspace_keys(info: &str) -> u64 {
    info.lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| {
            l.split_once(":keys=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Databases with keys, from the `# Keyspace` section of `INFO`.
pub fn keyspace_dbs(info: &str) -> Vec<u32> {
    info.lines()
        .filter_map(|l| l.strip_prefix("db")?.split_once(":keys=")?.0.parse().ok())
        .collect()
}
