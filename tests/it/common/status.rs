//! Waiting on shardsync's own view, `/status`, instead of its log text or fixed sleeps: a test
//! starts the process with `--metrics-addr` on a free port ([`status_addr_arg`]) and waits for
//! a field ([`wait_status`], [`Shardsync::wait_status`]); on timeout it panics with the last
//! document and the log tail.

use std::time::Duration;

use serde_json::Value;

use super::server::pick_free_port;
use super::shardsync::Shardsync;
use super::util::{http_get, wait_until};

/// A `--metrics-addr` value on a free loopback port (a fixed port, so the test knows it).
pub fn status_addr_arg() -> String {
    format!("127.0.0.1:{}", pick_free_port(false))
}

/// `GET /status`, parsed; `None` while nothing answers.
pub fn status(addr: &str) -> Option<Value> {
    let (code, body) = http_get(addr, "/status").ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Waits until `/status` at `addr` satisfies `cond`; panics with the last document and the log
/// tail.
pub fn wait_status(
    ss: &mut Shardsync,
    addr: &str,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = None;
    let ok = wait_until(timeout, || {
        last = status(addr);
        last.as_ref().is_some_and(&cond)
    });
    if !ok {
        panic!(
            "/status never showed {what} within {timeout:?}; last: {last:#?}\nlog:\n{}",
            ss.log_tail(40)
        );
    }
    last.unwrap_or_default()
}

/// The shards of a `/status` document.
pub fn shards(st: &Value) -> &[Value] {
    st["shards"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// True when there are shards and every one satisfies `f`.
pub fn every_shard(st: &Value, f: impl Fn(&Value) -> bool) -> bool {
    let s = shards(st);
    !s.is_empty() && s.iter().all(f)
}

/// The sum of a numeric shard field over all shards.
pub fn sum_shards(st: &Value, field: &str) -> u64 {
    shards(st)
        .iter()
        .map(|s| s[field].as_u64().unwrap_or(0))
        .sum()
}

/// The replication started: every shard is registered and past prechecks.
pub fn started(st: &Value) -> bool {
    st["state"].as_str().is_some_and(|s| s != "prechecking") && !shards(st).is_empty()
}

/// Every shard's full sync is applied on the target.
pub fn full_sync_done(st: &Value) -> bool {
    every_shard(st, |s| s["full_sync_done"].as_bool() == Some(true))
}

/// Every shard streams commands (`incremental`).
pub fn streaming(st: &Value) -> bool {
    every_shard(st, |s| s["phase"] == "incremental")
}

impl Shardsync {
    /// [`wait_status`] on this process's `--metrics-addr` (it must be a fixed port).
    pub fn wait_status(
        &mut self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let addr = self
            .status_addr()
            .unwrap_or_else(|| panic!("shardsync runs without a fixed --metrics-addr"));
        wait_status(self, &addr, timeout, what, cond)
    }

    /// The `--metrics-addr` it was started with, unless `off` or port 0.
    pub fn status_addr(&self) -> Option<String> {
        let args = self.args();
        let i = args.iter().position(|a| a == "--metrics-addr")?;
        let a = args.get(i + 1)?;
        (a != "off" && !a.ends_with(":0")).then(|| a.clone())
    }
}

/// The source stream the target has acknowledged, summed over the shards.
pub fn applied(st: &Value) -> u64 {
    sum_shards(st, "applied_offset")
}

impl Shardsync {
    /// Waits until the target has acknowledged `bytes` more of the source stream than when
    /// called: the command stream flows (a data condition, not a fixed sleep).
    pub fn wait_stream_flows(&mut self, bytes: u64, timeout: Duration) {
        let from = applied(&self.wait_status(timeout, "a status", |_| true));
        self.wait_status(
            timeout,
            &format!("{bytes} more stream bytes applied"),
            |st| applied(st) >= from + bytes,
        );
    }
}
