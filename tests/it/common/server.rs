//! Real Redis/Valkey server processes for tests.
//!
//! [`RedisServer`] starts one server binary from the bin dir (`SHARDSYNC_BIN_DIR`, else
//! `$CARGO_MANIFEST_DIR/.deps/bin`, filled by `scripts/install-deps.sh`) on a free
//! loopback port (never 6379) with its own temp dir, no persistence, and its log in that
//! dir. Dropping it (also while a test panics) SIGKILLs the process and reaps it; the
//! child also gets `PR_SET_PDEATHSIG` so it dies if the test binary is killed.
//!
//! Caveat of that safety net: Linux delivers the death signal when the *thread* that
//! spawned the server exits. Start servers on the test's own thread (the normal case),
//! not in a short-lived helper thread or a lazily-initialised `static` shared between
//! tests, or they die with that thread.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::util::{file_tail, info_field, wait_until};

/// Server binaries the harness knows (see `scripts/install-deps.sh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerKind {
    Redis60,
    Redis62,
    Redis70,
    Valkey91,
}

impl ServerKind {
    pub fn all() -> [ServerKind; 4] {
        [
            ServerKind::Redis60,
            ServerKind::Redis62,
            ServerKind::Redis70,
            ServerKind::Valkey91,
        ]
    }

    /// Human name, e.g. `redis-7.0`.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Redis60 => "redis-6.0",
            ServerKind::Redis62 => "redis-6.2",
            ServerKind::Redis70 => "redis-7.0",
            ServerKind::Valkey91 => "valkey-9.1",
        }
    }

    /// File name in the bin dir.
    pub fn binary_name(self) -> &'static str {
        match self {
            ServerKind::Redis60 => "redis-server-6.0",
            ServerKind::Redis62 => "redis-server-6.2",
            ServerKind::Redis70 => "redis-server-7.0",
            ServerKind::Valkey91 => "valkey-server-9.1",
        }
    }

    /// Full path of the binary (may not exist; see [`ServerKind::is_available`]).
    pub fn binary(self) -> PathBuf {
        bin_dir().join(self.binary_name())
    }

    pub fn is_available(self) -> bool {
        self.binary().is_file()
    }

    /// Compatible Redis version `(major, minor)`; Valkey 9.1 speaks at least Redis 7.2.
    pub fn redis_version(self) -> (u32, u32) {
        match self {
            ServerKind::Redis60 => (6, 0),
            ServerKind::Redis62 => (6, 2),
            ServerKind::Redis70 => (7, 0),
            ServerKind::Valkey91 => (7, 2),
        }
    }

    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self.redis_version() >= (major, minor)
    }

    pub fn is_valkey(self) -> bool {
        self == ServerKind::Valkey91
    }

    /// RDB format version this server writes (`REDIS0009`, `REDIS0010`, `VALKEY080`).
    pub fn rdb_version(self) -> u32 {
        match self {
            ServerKind::Redis60 | ServerKind::Redis62 => 9,
            ServerKind::Redis70 => 10,
            ServerKind::Valkey91 => 80,
        }
    }

    /// FUNCTION LOAD / FCALL (7.0+).
    pub fn has_functions(self) -> bool {
        self.at_least(7, 0)
    }

    /// Small collections are listpacks (7.0+) rather than ziplists.
    pub fn uses_listpack(self) -> bool {
        self.at_least(7, 0)
    }

    /// GETEX, GETDEL, COPY, LMOVE, BLMOVE, SET ... GET, EXAT/PXAT, XAUTOCLAIM (6.2+).
    pub fn has_redis62_commands(self) -> bool {
        self.at_least(6, 2)
    }

    /// EXPIRE ... NX|XX|GT|LT, XADD with `<ms>-*`, stream entries-added/max-deleted-id (7.0+).
    pub fn has_redis70_commands(self) -> bool {
        self.at_least(7, 0)
    }

    /// Non-zero databases in cluster mode (Valkey 9+).
    pub fn has_cluster_databases(self) -> bool {
        self.is_valkey()
    }
}

/// Directory holding the server binaries.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("SHARDSYNC_BIN_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/bin"),
    }
}

/// Free loopback port, never 6379; with `cluster_bus` the port+10000 bus port must be
/// free too.
pub fn pick_free_port(cluster_bus: bool) -> u16 {
    for _ in 0..200 {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local_addr of probe listener")
            .port();
        if port == 6379 || port == 16379 {
            continue;
        }
        if cluster_bus {
            if port > 55_000 {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
                continue;
            }
        }
        return port;
    }
    panic!("could not find a free loopback port after 200 tries");
}

/// One running (or killed) server process with its own temp dir.
pub struct RedisServer {
    kind: ServerKind,
    port: u16,
    dir: TempDir,
    args: Vec<String>,
    password: Option<String>,
    cluster_bus: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `kind` with the harness defaults.
    pub fn start(kind: ServerKind) -> RedisServer {
        Self::start_with(kind, &[])
    }

    /// Starts `kind` with extra `--name value` config args appended after the defaults
    /// (they win). `--requirepass PW` is noticed and used by [`RedisServer::url`] and
    /// [`RedisServer::client`]; `--cluster-enabled yes` makes the port picker also keep
    /// the cluster bus port free.
    pub fn start_with(kind: ServerKind, extra: &[&str]) -> RedisServer {
        let binary = kind.binary();
        assert!(
            binary.is_file(),
            "server binary {} missing: run scripts/install-deps.sh or set SHARDSYNC_BIN_DIR",
            binary.display()
        );
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let password = args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| args.get(i + 1).cloned())
            .filter(|p| !p.is_empty());
        let cluster_bus = args
            .windows(2)
            .any(|w| w[0] == "--cluster-enabled" && w[1] == "yes");
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("shardsync-{}-", kind.name()))
            .tempdir()
            .expect("create temp dir for server");
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = pick_free_port(cluster_bus);
            let mut server = RedisServer {
                kind,
                port,
                dir,
                args: args.clone(),
                password: password.clone(),
                cluster_bus,
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    server.kill();
                    // Reuse the dir for the next attempt; Drop of `server` must not
                    // delete it, so move it out.
                    dir = std::mem::replace(
                        &mut server.dir,
                        tempfile::tempdir().expect("placeholder temp dir"),
                    );
                    let _ = std::fs::remove_file(dir.path().join("server.log"));
                }
            }
        }
        panic!(
            "{} failed to start after 5 attempts: {last_error}",
            kind.name()
        );
    }

    /// Starts `kind` with `requirepass password` plus `extra`.
    pub fn start_with_password(kind: ServerKind, password: &str, extra: &[&str]) -> RedisServer {
        let mut all = vec!["--requirepass", password];
        all.extend_from_slice(extra);
        Self::start_with(kind, &all)
    }

    fn command_line(&self) -> Vec<String> {
        let dir = self.dir.path().to_str().expect("temp dir path is UTF-8");
        let mut v: Vec<String> = vec![
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--repl-diskless-sync-delay".into(),
            "0".into(),
            "--daemonize".into(),
            "no".into(),
            "--logfile".into(),
            format!("{dir}/server.log"),
        ];
        v.extend(self.args.iter().cloned());
        v
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(self.kind.binary());
        cmd.args(self.command_line())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.kind.binary().display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .expect("child just spawned")
                .try_wait()
                .expect("try_wait on server child")
            {
                return Err(format!(
                    "{} on port {} exited early with {status}; log tail:\n{}",
                    self.kind.name(),
                    self.port,
                    self.log_tail()
                ));
            }
            let pid = self.child.as_ref().map(|c| c.id());
            match self.ping_pid() {
                // Make sure the answer comes from our process, not from another test's
                // server that won a race for the same port.
                Ok(answering) if Some(answering) == pid => return Ok(()),
                Ok(answering) => {
                    return Err(format!(
                        "port {} answered by pid {answering}, not ours ({pid:?})",
                        self.port
                    ));
                }
                Err(_) => {}
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} on port {} did not answer PING within 15 s; log tail:\n{}",
                    self.kind.name(),
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// PINGs and returns the answering server's `process_id`.
    fn ping_pid(&self) -> Result<u32, String> {
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query::<String>(&mut conn)
            .map_err(|e| e.to_string())?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        info_field(&info, "process_id")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| "no process_id in INFO server".to_string())
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` as used by `redis-cli --cluster` and `REPLICAOF`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `redis://127.0.0.1:PORT`, or `redis://:PASSWORD@127.0.0.1:PORT` with a password.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// URL selecting database `db`.
    pub fn url_db(&self, db: u32) -> String {
        format!("{}/{db}", self.url())
    }

    /// The server's temp dir (config, log, RDB files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Last 40 lines of the server log.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log_path(), 40)
    }

    /// New synchronous connection (authenticated if a password is set), 60 s read timeout.
    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("parse server URL");
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| {
                panic!(
                    "connect to {} on port {}: {e}; log tail:\n{}",
                    self.kind.name(),
                    self.port,
                    self.log_tail()
                )
            });
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("set read timeout");
        conn.set_write_timeout(Some(Duration::from_secs(60)))
            .expect("set write timeout");
        conn
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL and reap; the dir and port stay reserved for [`RedisServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Sends `signal` (e.g. SIGSTOP/SIGCONT to freeze a server) without reaping.
    pub fn signal(&self, signal: Signal) {
        let pid = self.pid().expect("server is not running");
        kill(Pid::from_raw(pid as i32), signal).expect("send signal to server");
    }

    /// Kills (if running) and starts again on the same port, dir and arguments. With the
    /// default `--save ''` the data is gone unless the extra args enabled persistence.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    self.kill();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!(
            "restart of {} on port {} failed: {last}",
            self.kind.name(),
            self.port
        );
    }

    /// `INFO section` as text.
    pub fn info(&self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query::<String>(&mut self.client())
            .unwrap_or_else(|e| panic!("INFO {section} on port {}: {e}", self.port))
    }

    /// Makes this server a native replica of `master` (sets `masterauth` if needed).
    pub fn replicaof(&self, master: &RedisServer) {
        let mut conn = self.client();
        if let Some(pw) = master.password() {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("masterauth")
                .arg(pw)
                .query::<()>(&mut conn)
                .expect("CONFIG SET masterauth on replica");
        }
        redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(master.port())
            .query::<()>(&mut conn)
            .expect("REPLICAOF on replica");
    }

    /// Promotes back to a master (`REPLICAOF NO ONE`).
    pub fn replicaof_no_one(&self) {
        redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query::<()>(&mut self.client())
            .expect("REPLICAOF NO ONE");
    }

    /// Waits (up to `timeout`) until this replica's link to `master` is up, no sync is
    /// in progress, and its replication offset equals the master's
    /// `master_repl_offset`. Panics with both INFO sections and log tails otherwise.
    pub fn wait_replica_synced(&self, master: &RedisServer, timeout: Duration) {
        let mut mconn = master.client();
        let mut rconn = self.client();
        let synced = wait_until(timeout, || {
            let rinfo: String = match redis::cmd("INFO").arg("replication").query(&mut rconn) {
                Ok(s) => s,
                Err(_) => return false,
            };
            let minfo: String = match redis::cmd("INFO").arg("replication").query(&mut mconn) {
                Ok(s) => s,
                Err(_) => return false,
            };
            let link_up = info_field(&rinfo, "master_link_status").as_deref() == Some("up");
            let no_sync = info_field(&rinfo, "master_sync_in_progress").as_deref() == Some("0");
            let moff = info_field(&minfo, "master_repl_offset");
            let roff = info_field(&rinfo, "master_repl_offset");
            link_up && no_sync && moff.is_some() && moff == roff
        });
        if !synced {
            panic!(
                "replica on port {} not synced with master on port {} within {timeout:?}\n\
                 master INFO:\n{}\nreplica INFO:\n{}\nmaster log:\n{}\nreplica log:\n{}",
                self.port,
                master.port,
                master.info("replication"),
                self.info("replication"),
                master.log_tail(),
                self.log_tail()
            );
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
