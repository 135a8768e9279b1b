//! [`SinkError`]: why a target-side job outside the writers' pipelines failed (clearing a shard
//! before a repeated full sync, the cross-slot fallback). Each message names the node and says
//! what to do; none carries a password.

use crate::net::NetError;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Net(#[from] NetError),
    /// A command on the target failed; `why` (from [`crate::net::client::describe`]) says what
    /// to do.
    #[error("target {addr}: {what}: {why}")]
    Command {
        addr: String,
        what: String,
        why: String,
    },
    #[error(
        "no target node serves slot {slot} (the target's slot table is incomplete; check it with redis-cli --cluster check)"
    )]
    NoOwner { slot: u16 },
    /// Reading a key from the source for a repair failed.
    #[error(
        "source {addr}: {why} (the key stays as it is on the target until it is written again; the repair needs MULTI, DUMP, PTTL and INFO on the source)"
    )]
    Source { addr: String, why: String },
    /// The target ran the command and answered with an error (its own words).
    #[error("the target refused it: {0}")]
    Refused(String),
}

impl SinkError {
    /// A failed command `what` on the target node `addr`.
    pub fn command(addr: impl ToString, what: impl Into<String>, e: &redis::RedisError) -> Self {
        SinkError::Command {
            addr: addr.to_string(),
            what: what.into(),
            why: crate::net::client::describe(e),
        }
    }
}
