//! Ordinary request/response connections (redis-rs) for prechecks, the heartbeat and `INFO`, with
//! errors that name the server and its role and never carry a password.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::config::Endpoint;
use crate::net::NetError;
use crate::net::server_info::ServerInfo;

/// Opens a redis-rs connection to `ep` (TCP or TLS, [`crate::net::stream::connect`]); `role`
/// ("source", "target") prefixes every error.
pub async fn connect(role: &str, ep: &Endpoint) -> Result<MultiplexedConnection, NetError> {
    let stream = crate::net::stream::connect(ep).await.map_err(|e| match e {
        NetError::Connect { why, .. } => NetError::client(
            role,
            ep,
            format!("cannot connect ({why}); is the server running and reachable?"),
        ),
        e => NetError::client(role, ep, e.to_string()),
    })?;
    let cfg =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let info = ep.connection_info();
    let setup = MultiplexedConnection::new_with_config(info.redis_settings(), stream, cfg);
    match tokio::time::timeout(CONNECT_TIMEOUT, setup).await {
        Ok(Ok((conn, driver))) => {
            tokio::spawn(driver);
            Ok(conn)
        }
        Ok(Err(e)) => Err(NetError::client(role, ep, describe(&e))),
        Err(_) => Err(NetError::client(
            role,
            ep,
            format!(
                "cannot connect (no answer to the login within {} s); is the server running and reachable?",
                CONNECT_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// How long to wait for the TCP connection (and login).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a whole `INFO` reply (a few KB from any healthy server).
pub const INFO_TIMEOUT: Duration = Duration::from_secs(10);

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
    } else if e.is_timeout() {
        format!(
            "timed out waiting for the reply ({text}); the server accepted the connection but did not answer in time (overloaded, blocked, or not a Redis server?)"
        )
    } else if text.contains("TLS: ") {
        // Already says what to change (crate::net::tls::explain).
        text
    } else if e.is_connection_refusal() {
        format!("cannot connect ({text}); is the server running and reachable?")
    } else if e.is_io_error() {
        format!("connection failed ({text}); is the server running and reachable?")
    } else {
        text
    }
}

/// Runs `INFO` and parses the server identity.
pub async fn server_info(
    role: &str,
    ep: &Endpoint,
    conn: &mut MultiplexedConnection,
) -> Result<(ServerInfo, String), NetError> {
    let timed_out = || {
        NetError::client(
            role,
            ep,
            format!(
                "timed out after {} s waiting for the INFO reply (the server accepted the connection but its reply never completed; is it overloaded, or not a Redis server?)",
                INFO_TIMEOUT.as_secs()
            ),
        )
    };
    let info: String = match tokio::time::timeout(
        INFO_TIMEOUT,
        redis::cmd("INFO").arg("everything").query_async(conn),
    )
    .await
    {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) if e.is_timeout() => return Err(timed_out()),
        Ok(Err(e)) => {
            return Err(NetError::client(
                role,
                ep,
                format!("INFO failed: {}", describe(&e)),
            ));
        }
        Ok(Ok(info)) => info,
    };
    let si = ServerInfo::parse(&info).ok_or_else(|| {
        NetError::client(
            role,
            ep,
            "INFO does not say which server version this is (is it a Redis-compatible server?)",
        )
    })?;
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
