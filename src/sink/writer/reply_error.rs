//! [`ReplyError`]: why a target connection's reply stream cannot be trusted any more (the
//! writer drops the connection, reconnects and resends what was not acknowledged).

/// A reply the pipeline cannot match to what it sent; each message quotes the target's words
/// (escaped) so the operator sees what the node said.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReplyError {
    #[error("target sent bytes that are not RESP: {0}")]
    NotResp(String),
    #[error("target sent a reply nobody asked for: {0}")]
    Unasked(String),
    /// An internal command (`SELECT`, `ASKING`, `MULTI`) the pipeline relies on was refused.
    #[error("{what} failed: {why}")]
    Internal { what: &'static str, why: String },
    /// The target refused a write because it is not ready yet (`LOADING`: restarted, reading
    /// its AOF or RDB): nothing is wrong with the write, so it is sent again on a new
    /// connection instead of being reported and dropped.
    #[error("target not ready: {0}; reconnecting to send the writes again")]
    NotReady(String),
}

/// True for an error reply that says the target is not ready yet (`LOADING …`).
pub(super) fn not_ready(e: &[u8]) -> bool {
    e.starts_with(b"LOADING")
}

impl ReplyError {
    /// The target refused the internal command `what` with the error `e`.
    pub(super) fn internal(what: &'static str, e: &[u8]) -> Self {
        ReplyError::Internal {
            what,
            why: crate::escape::text(e),
        }
    }
}
