//! A fake Redis master speaking just enough RESP to be replicated from (INFO, PING, REPLCONF, the
//! prechecks' commands) that answers `PSYNC` with whatever a test scenario writes: hostile input
//! a real server cannot produce. Never used where a real server would do.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use shardsync::resp::{Decoder, Frame};

/// What the fake master does after `PSYNC` (it owns the socket until it returns; the connection
/// is then held open until the peer closes it).
pub type Scenario = Arc<dyn Fn(&mut TcpStream) + Send + Sync>;

/// The 40-character replication ID the fake master announces.
pub const REPLID: &str = "0123456789abcdef0123456789abcdef01234567";

/// A fake master (or, with [`FakeMaster::start_on`], a fake target).
pub struct FakeMaster {
    pub port: u16,
    pub psyncs: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeMaster {
    /// Listens on a free loopback port; every connection is served on its own thread.
    pub fn start(scenario: Scenario) -> FakeMaster {
        Self::start_with(scenario, None)
    }

    /// Like [`FakeMaster::start`]; `on_replconf`, when given, answers the replica handshake's
    /// first `REPLCONF` instead (e.g. with a reply that never ends).
    pub fn start_with(scenario: Scenario, on_replconf: Option<Scenario>) -> FakeMaster {
        Self::start_on("REPLCONF", scenario, on_replconf)
    }

    /// A fake server whose first command named `name` on a connection is answered by `hostile`
    /// (which then owns the connection); e.g. a fake target answering a write with a reply that
    /// never ends.
    pub fn start_on(
        name: &'static str,
        scenario: Scenario,
        hostile: Option<Scenario>,
    ) -> FakeMaster {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake master");
        let port = listener.local_addr().expect("local addr").port();
        let psyncs = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2) = (psyncs.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (sc, p3, s3) = (scenario.clone(), p2.clone(), s2.clone());
                let rc = hostile.clone();
                thread::spawn(move || serve(conn, &sc, name, rc.as_ref(), &p3, &s3));
            }
        });
        FakeMaster { port, psyncs, stop }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn bulk(s: &str) -> Vec<u8> {
    format!("${}\r\n{s}\r\n", s.len()).into_bytes()
}

fn reply(args: &[Vec<u8>]) -> Vec<u8> {
    let name = String::from_utf8_lossy(args.first().map(Vec::as_slice).unwrap_or(b""))
        .to_ascii_uppercase();
    match name.as_str() {
        "PING" => b"+PONG\r\n".to_vec(),
        "INFO" => bulk(
            "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nrun_id:fake\r\n\
             # Memory\r\nused_memory:1000000\r\nmaxmemory:0\r\n\
             # Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_replid:0123456789abcdef0123456789abcdef01234567\r\n\
             master_repl_offset:0\r\nrepl_backlog_size:134217728\r\n\
             # Cluster\r\ncluster_enabled:0\r\n# Keyspace\r\n",
        ),
        "ROLE" => b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n".to_vec(),
        "CONFIG" => {
            let key = args.get(2).map(|a| String::from_utf8_lossy(a).into_owned());
            match key.as_deref() {
                Some("databases") => [b"*2\r\n".to_vec(), bulk("databases"), bulk("16")].concat(),
                Some("repl-backlog-size") => [
                    b"*2\r\n".to_vec(),
                    bulk("repl-backlog-size"),
                    bulk("134217728"),
                ]
                .concat(),
                _ => b"*0\r\n".to_vec(),
            }
        }
        "CLUSTER" => b"-ERR This instance has cluster support disabled\r\n".to_vec(),
        "DBSIZE" | "DEL" | "EXISTS" => b":0\r\n".to_vec(),
        "HELLO" => b"-ERR unknown command 'HELLO'\r\n".to_vec(),
        _ => b"+OK\r\n".to_vec(),
    }
}

fn serve(
    mut conn: TcpStream,
    scenario: &Scenario,
    hostile_on: &str,
    hostile: Option<&Scenario>,
    psyncs: &AtomicUsize,
    stop: &AtomicBool,
) {
    let mut dec = Decoder::default();
    let mut buf = BytesMut::new();
    let mut tmp = [0u8; 4096];
    loop {
        match dec.decode(&mut buf) {
            Ok(Some((frame, _))) => {
                let Some(args) = frame.into_args() else {
                    return;
                };
                let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
                if args
                    .first()
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"PSYNC"))
                {
                    psyncs.fetch_add(1, Ordering::Relaxed);
                    scenario(&mut conn);
                    // Hold the link open (draining ACKs) until the peer goes away.
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                    while !stop.load(Ordering::Relaxed) {
                        match conn.read(&mut tmp) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => return,
                        }
                    }
                    return;
                }
                if let Some(f) = hostile
                    && args
                        .first()
                        .is_some_and(|a| a.eq_ignore_ascii_case(hostile_on.as_bytes()))
                {
                    f(&mut conn);
                    return;
                }
                if conn.write_all(&reply(&args)).is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(_) => return,
        }
        match conn.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// Writes `+FULLRESYNC <replid> <offset>` and a `$<len>` RDB header.
pub fn fullresync(conn: &mut TcpStream, offset: u64, rdb_len: u64) -> std::io::Result<()> {
    conn.write_all(format!("+FULLRESYNC {REPLID} {offset}\r\n${rdb_len}\r\n").as_bytes())
}

/// An RDB string header for `len` bytes (the 64-bit form when needed).
pub fn rdb_len(len: u64) -> Vec<u8> {
    if len < 64 {
        vec![len as u8]
    } else if len <= u64::from(u32::MAX) {
        let mut v = vec![0x80];
        v.extend_from_slice(&(len as u32).to_be_bytes());
        v
    } else {
        let mut v = vec![0x81];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }
}

/// An RDB string.
pub fn rdb_str(s: &[u8]) -> Vec<u8> {
    [rdb_len(s.len() as u64), s.to_vec()].concat()
}

/// The end of an RDB: EOF opcode and a zero checksum (accepted: "checksum disabled").
pub const RDB_END: [u8; 9] = [0xff, 0, 0, 0, 0, 0, 0, 0, 0];

/// Writes `n` filler bytes in 1 MiB writes; stops quietly when the peer closes.
pub fn write_filler(conn: &mut TcpStream, mut n: u64) {
    let block = vec![b'x'; 1 << 20];
    while n > 0 {
        let step = n.min(block.len() as u64) as usize;
        if conn.write_all(&block[..step]).is_err() {
            return;
        }
        n -= step as u64;
    }
}

/// Announces an array of `elements` bulk strings of 100 bytes and writes them in blocks of 1000
/// until done or the peer hangs up: a command or reply legal element by element that never
/// ends in practice.
pub fn write_endless_array(conn: &mut TcpStream, elements: usize) {
    if conn
        .write_all(format!("*{elements}\r\n").as_bytes())
        .is_err()
    {
        return;
    }
    let elem = [b"$100\r\n".as_slice(), &[b'x'; 100], b"\r\n"].concat();
    let block = elem.repeat(1000);
    for _ in 0..elements / 1000 {
        if conn.write_all(&block).is_err() {
            return;
        }
    }
}

/// Peak resident memory (`VmHWM`, KiB) of a process.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}
