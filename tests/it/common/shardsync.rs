//! Runs the shardsync binary under test (`CARGO_BIN_EXE_shardsync`).
//!
//! Arguments are passed through untouched (e.g. `run --source URL --target URL
//! --state-dir DIR ...`). stdout and stderr go to one log file in the process's own temp
//! dir; Drop SIGKILLs and reaps the process, also when a test panics. Like the servers,
//! it gets `PR_SET_PDEATHSIG` (spawn it on the test's own thread).

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::util::{file_tail, wait_until};

/// Path of the product binary: `$SHARDSYNC_TEST_BIN` when set (a copy, for an A/B loop of a
/// test against two builds while the tree is rebuilt), else the one cargo built.
pub fn binary() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("SHARDSYNC_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_shardsync").into())
    })
}

pub struct Shardsync {
    child: Option<Child>,
    status: Option<ExitStatus>,
    dir: TempDir,
    args: Vec<String>,
}

impl Shardsync {
    /// Starts the binary with `args`; default `RUST_BACKTRACE=1`.
    pub fn spawn(args: &[&str]) -> Shardsync {
        Self::spawn_with_env(args, &[])
    }

    /// Like [`Shardsync::spawn`] with extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Shardsync {
        let dir = tempfile::Builder::new()
            .prefix("shardsync-proc-")
            .tempdir()
            .expect("create temp dir for shardsync process");
        let log_path = dir.path().join("shardsync.log");
        let log = File::create(&log_path).expect("create shardsync log file");
        let log_err = log.try_clone().expect("clone shardsync log file handle");
        let mut cmd = Command::new(binary());
        // The process runs in its own temp dir, so a default `--state-dir` never lands in the checkout.
        cmd.args(args)
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {args:?}: {e}", binary()));
        Shardsync {
            child: Some(child),
            status: None,
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Runs to completion; kills it and panics (with the log) after `timeout`.
    pub fn run_to_exit(args: &[&str], timeout: Duration) -> (ExitStatus, String) {
        let mut p = Self::spawn(args);
        match p.wait_exit(timeout) {
            Some(status) => (status, p.log()),
            None => {
                p.kill();
                panic!(
                    "shardsync {args:?} did not exit within {timeout:?}; log:\n{}",
                    p.log_tail(60)
                )
            }
        }
    }

    /// The arguments it was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Temp dir owned by this process wrapper (holds the log; tests may put the state
    /// dir here too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("shardsync.log")
    }

    /// Whole log so far (lossy UTF-8).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log_path(), lines)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.poll().is_none()
    }

    /// Exit status if it has exited (reaps it).
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.status = Some(status);
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.poll().is_some());
        self.poll()
    }

    /// Waits until the log contains `needle`; false on timeout or if the process exited
    /// without writing it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if self.poll().is_some() {
                // One more read: it may have written the line just before exiting.
                return self.log().contains(needle);
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// [`Shardsync::wait_for_log`] that panics with the log tail on failure.
    pub fn expect_log(&mut self, needle: &str, timeout: Duration) {
        if !self.wait_for_log(needle, timeout) {
            let status = self.poll();
            panic!(
                "shardsync {:?}: {needle:?} not in log within {timeout:?} (exit status {:?}); log tail:\n{}",
                self.args,
                status,
                self.log_tail(60)
            );
        }
    }

    /// SIGTERM, then wait up to 10 s; SIGKILL if it is still running. Returns the exit
    /// status (a signal death shows as `status.signal()`).
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.poll() {
            return status;
        }
        let pid = self.pid().expect("shardsync child present");
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if let Some(status) = self.wait_exit(Duration::from_secs(10)) {
            return status;
        }
        self.kill();
        self.status.expect("status after SIGKILL")
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.poll() {
            return status;
        }
        let child = self.child.as_mut().expect("shardsync child present");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let status = child.wait().expect("wait for killed shardsync");
        self.status = Some(status);
        status
    }

    /// True if the process died from `signal`.
    pub fn killed_by(status: ExitStatus, signal: Signal) -> bool {
        status.signal() == Some(signal as i32)
    }
}

impl Drop for Shardsync {
    fn drop(&mut self) {
        if self.child.is_some() && self.poll().is_none() {
            self.kill();
        }
    }
}
