//! The failure model of a source link: every error that ends a link's attempt is classified as
//! transient (the link retries with backoff) or permanent (retrying cannot help: the shard stops
//! as `failed`, with a `last_error` that says what to do). Transient failures draw on a per-shard
//! retry budget ([`RetryBudget`], `source.retry_budget`): that many consecutive failed attempts
//! without progress, or [`PROTOCOL_VIOLATION_LIMIT`] consecutive protocol violations, turn into
//! a permanent failure too.

use super::link::LinkError;
use crate::net::NetError;

/// Consecutive attempts ending in a protocol violation (bytes that are not the protocol, a
/// corrupt RDB) after which the shard fails: a source that keeps sending them will not heal.
pub const PROTOCOL_VIOLATION_LIMIT: u32 = 3;

/// What a link does after an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Retry with backoff (counts against the retry budget).
    Transient,
    /// Retry with backoff, but the source broke the protocol (counts against the tighter limit).
    ProtocolViolation,
    /// Never retry; the reason says what the user must do.
    Permanent(String),
}

/// Words of an error reply that mean credentials or permissions changed: only a person can fix.
fn is_auth_reply(reply: &str) -> bool {
    let w = reply.trim_start_matches('-');
    ["NOAUTH", "WRONGPASS", "NOPERM"]
        .iter()
        .any(|p| w.starts_with(p))
        || w.contains("invalid password")
        || w.contains("invalid username-password")
}

/// Error replies to `PSYNC` that a source gives while it cannot serve *yet* (loading, its own
/// master link down, busy): worth retrying.
fn is_transient_reply(reply: &str) -> bool {
    let w = reply.trim_start_matches('-');
    [
        "LOADING",
        "NOMASTERLINK",
        "MASTERDOWN",
        "BUSY",
        "TRYAGAIN",
        "CLUSTERDOWN",
    ]
    .iter()
    .any(|p| w.starts_with(p))
        || w.contains("Can't SYNC while not connected with my master")
}

/// Classifies the error that ended one attempt of a link.
pub fn classify(e: &LinkError) -> Class {
    match e {
        LinkError::Net(n) => classify_net(n),
        LinkError::Stream(_) => Class::ProtocolViolation,
        // A value over a configured limit comes again with every full sync: only raising the
        // setting helps (the error names it).
        LinkError::Load(super::rdb_load::LoadError::Rdb(e)) | LinkError::CorruptRdb { error: e, .. }
            if matches!(e.kind, crate::rdb::RdbErrorKind::TooLarge { .. }) =>
        {
            Class::Permanent(
                "the RDB holds a value over a configured limit; raise the setting the error names and restart shardsync".into(),
            )
        }
        LinkError::Load(super::rdb_load::LoadError::Rdb(_)) | LinkError::CorruptRdb { .. } => {
            Class::ProtocolViolation
        }
        LinkError::Load(super::rdb_load::LoadError::WriterGone(_))
        | LinkError::WriterGone(_)
        | LinkError::Internal(_)
        | LinkError::Sink(_)
        | LinkError::NotMaster(_)
        | LinkError::ShardFailed => Class::Transient,
    }
}

fn classify_net(n: &NetError) -> Class {
    match n {
        NetError::Connect { .. }
        | NetError::Tls { .. }
        | NetError::Closed { .. }
        | NetError::Io { .. }
        | NetError::Timeout { .. }
        | NetError::Client { .. }
        | NetError::Table { .. }
        | NetError::Uncovered { .. } => Class::Transient,
        NetError::Protocol { .. } => Class::ProtocolViolation,
        NetError::Auth { addr, .. } => Class::Permanent(format!(
            "the source {addr} no longer accepts the configured password (changed after start?); \
             set the new password (source URL or SHARDSYNC_SOURCE_PASSWORD) and restart shardsync"
        )),
        NetError::NoAuth { addr } => Class::Permanent(format!(
            "the source {addr} now requires a password (requirepass/ACL changed after start); \
             configure it (source URL or SHARDSYNC_SOURCE_PASSWORD) and restart shardsync"
        )),
        NetError::Unexpected { addr, what, reply } => {
            if is_auth_reply(reply) {
                Class::Permanent(format!(
                    "the source {addr} refused {what} for our user ({reply}): its password or ACL \
                     changed after start; grant the user +psync +replconf +ping (or fix the \
                     password) and restart shardsync"
                ))
            } else if what.starts_with("PSYNC") || what.starts_with("the RDB transfer") {
                if is_transient_reply(reply) {
                    Class::Transient
                } else if reply.starts_with('-') {
                    Class::Permanent(format!(
                        "the source {addr} cannot serve a full sync: it answered {what} with \
                         {reply}; check that replication is allowed on it (PSYNC not renamed or \
                         disabled, BGSAVE possible: disk space, repl-diskless-sync) and restart \
                         shardsync"
                    ))
                } else {
                    Class::ProtocolViolation
                }
            } else {
                // An error reply to PING or REPLCONF: the server may be starting or loading.
                Class::Transient
            }
        }
    }
}

/// Consecutive failures of one shard, reset by progress.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    /// Failed attempts without progress allowed before the shard fails; 0: unlimited.
    limit: u32,
    failures: u32,
    violations: u32,
}

/// What to do after recording a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    /// Stop the shard as failed with this reason.
    Fail(String),
}

impl RetryBudget {
    pub fn new(limit: u32) -> RetryBudget {
        RetryBudget {
            limit,
            failures: 0,
            violations: 0,
        }
    }

    /// The attempt made progress (reached the command stream, or moved the applied offset).
    pub fn progress(&mut self) {
        self.failures = 0;
        self.violations = 0;
    }

    /// Consecutive failures without progress so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure of class `class` whose message is `error`.
    pub fn record(&mut self, class: &Class, error: &str) -> Verdict {
        self.failures = self.failures.saturating_add(1);
        match class {
            Class::Permanent(why) => Verdict::Fail(why.clone()),
            Class::ProtocolViolation => {
                self.violations += 1;
                if self.violations >= PROTOCOL_VIOLATION_LIMIT {
                    return Verdict::Fail(format!(
                        "the source broke the replication protocol {} times in a row (last: \
                         {error}); check the source (and anything between it and shardsync), \
                         then restart shardsync",
                        self.violations
                    ));
                }
                self.over_budget(error)
            }
            Class::Transient => {
                self.violations = 0;
                self.over_budget(error)
            }
        }
    }

    fn over_budget(&self, error: &str) -> Verdict {
        if self.limit > 0 && self.failures >= self.limit {
            Verdict::Fail(format!(
                "gave up after {} consecutive failed attempts without progress \
                 (source.retry_budget = {}; last: {error}); fix the cause and restart shardsync, \
                 or raise source.retry_budget (0 retries for ever)",
                self.failures, self.limit
            ))
        } else {
            Verdict::Retry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unexpected(what: &str, reply: &str) -> LinkError {
        LinkError::Net(NetError::Unexpected {
            addr: "h:1".into(),
            what: what.into(),
            reply: reply.into(),
        })
    }

    #[test]
    fn classes() {
        let perm = |e: &LinkError| matches!(classify(e), Class::Permanent(_));
        assert!(perm(&LinkError::Net(NetError::Auth {
            addr: "h:1".into(),
            reply: "WRONGPASS invalid username-password pair".into()
        })));
        assert!(perm(&LinkError::Net(NetError::NoAuth {
            addr: "h:1".into()
        })));
        assert!(perm(&unexpected(
            "PSYNC",
            "-NOPERM User x has no permissions to run the 'psync' command"
        )));
        assert!(perm(&unexpected("PSYNC", "-ERR unknown command 'PSYNC'")));
        assert!(perm(&unexpected("the RDB transfer", "-ERR BGSAVE failed")));
        assert_eq!(
            classify(&unexpected("PSYNC", "-LOADING Redis is loading")),
            Class::Transient
        );
        assert_eq!(
            classify(&unexpected("the RDB transfer header", "garbage")),
            Class::ProtocolViolation
        );
        assert_eq!(
            classify(&LinkError::Net(NetError::Closed { addr: "h:1".into() })),
            Class::Transient
        );
    }

    #[test]
    fn budget() {
        let mut b = RetryBudget::new(3);
        assert_eq!(b.record(&Class::Transient, "x"), Verdict::Retry);
        assert_eq!(b.record(&Class::Transient, "x"), Verdict::Retry);
        b.progress();
        assert_eq!(b.record(&Class::Transient, "x"), Verdict::Retry);
        assert_eq!(b.record(&Class::Transient, "x"), Verdict::Retry);
        assert!(
            matches!(b.record(&Class::Transient, "x"), Verdict::Fail(m) if m.contains("retry_budget = 3"))
        );
        let mut b = RetryBudget::new(0);
        for _ in 0..1000 {
            assert_eq!(b.record(&Class::Transient, "x"), Verdict::Retry);
        }
        for _ in 1..PROTOCOL_VIOLATION_LIMIT {
            assert_eq!(b.record(&Class::ProtocolViolation, "bad"), Verdict::Retry);
        }
        assert!(
            matches!(b.record(&Class::ProtocolViolation, "bad"), Verdict::Fail(m) if m.contains("protocol"))
        );
        assert!(matches!(
            b.record(&Class::Permanent("fix it".into()), "x"),
            Verdict::Fail(m) if m == "fix it"
        ));
    }
}
