//! Small helpers shared by the harness modules: a deterministic RNG, printable
//! rendering of binary keys/values, `INFO` parsing and a polling `wait_until`.

use std::time::{Duration, Instant};

/// Deterministic SplitMix64 generator: the harness needs reproducible data, not
/// cryptographic quality, and this keeps it independent of `rand`'s API changes.
pub struct DetRng(u64);

impl DetRng {
    pub fn new(seed: u64) -> Self {
        DetRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `len` bytes of deterministic binary data (all byte values possible).
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Renders bytes for humans: printable ASCII as is, the rest as `\xNN`, truncated
/// after `max` input bytes with a note of the full length.
pub fn printable_limited(bytes: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(max) {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    s
}

/// [`printable_limited`] with a 64-byte limit, quoted.
pub fn printable(bytes: &[u8]) -> String {
    format!("\"{}\"", printable_limited(bytes, 64))
}

/// Value of `field` in an `INFO` reply (`field:value` lines).
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (k, v) = line.trim_end().split_once(':')?;
        (k == field).then(|| v.to_string())
    })
}

/// Polls `cond` every 20 ms until it returns true (→ `true`) or `timeout` passes
/// (→ `false`, after one last try).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Last `lines` lines of a text file, or a note saying why it could not be read.
pub fn file_tail(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Runs `cmd`, panicking with `what` and the server's error if it fails.
pub fn run(conn: &mut redis::Connection, cmd: &redis::Cmd, what: &str) -> redis::Value {
    cmd.query::<redis::Value>(conn)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Runs the command `args` (name first) on `conn`; panics naming it on an error reply.
pub fn exec(conn: &mut redis::Connection, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(conn)
        .unwrap_or_else(|e| panic!("command {args:?} failed: {e}"))
}

/// The server's own `RESTORE` of a key: `DUMP from` then `RESTORE to 0 payload` on `conn` (a
/// live-stream `RESTORE` with the server's own payload version).
pub fn restore_copy(conn: &mut redis::Connection, from: &str, to: &str) {
    let payload: Vec<u8> = redis::cmd("DUMP").arg(from).query(conn).expect("DUMP");
    let _: () = redis::cmd("RESTORE")
        .arg(to)
        .arg(0)
        .arg(payload)
        .query(conn)
        .unwrap_or_else(|e| panic!("RESTORE {to} on the source: {e}"));
}

/// `SELECT db` on `conn`.
pub fn select(conn: &mut redis::Connection, db: u32) {
    redis::cmd("SELECT")
        .arg(db)
        .query::<()>(conn)
        .unwrap_or_else(|e| panic!("SELECT {db}: {e}"));
}

/// Blocking `GET http://addr/path` (HTTP/1.0: the body ends when the connection closes) →
/// (status code, body). For shardsync's `/status`, `/metrics` and `/healthz`.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP: {text:?}"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok((code, body.to_string()))
}

/// `calls` of `cmdstat_<name>` in the target's `INFO commandstats` (0 when never called).
pub fn calls(conn: &mut redis::Connection, name: &str) -> u64 {
    stat(conn, name, "calls")
}

/// A `field` (`calls`, `rejected_calls`…) of `cmdstat_<name>` in `INFO commandstats`.
pub fn stat(conn: &mut redis::Connection, name: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{name}:");
    let want = format!("{field}=");
    info.lines()
        .filter_map(|l| l.trim_end().strip_prefix(&prefix))
        .flat_map(|rest| rest.split(','))
        .find_map(|kv| kv.strip_prefix(&want)?.parse().ok())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The value of the series `name{labels…}` in a Prometheus text page (labels matched as a
/// subset), `None` when absent or not a number.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            if n != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
}
