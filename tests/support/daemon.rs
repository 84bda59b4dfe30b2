//! The `rrguard` binary under test, run as a subprocess with its output captured to a file.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::util::{append_file, send_signal, wait_child};

/// The `rrguard` binary cargo built for this test run.
///
/// `RRGUARD_TEST_BIN` overrides it: several worktrees sharing one `CARGO_TARGET_DIR` overwrite each
/// other's `debug/rrguard`, so a run can pin a copy of its own build.
pub fn rrguard_bin() -> PathBuf {
    std::env::var_os("RRGUARD_TEST_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_rrguard")),
        PathBuf::from,
    )
}

/// A running `rrguard` subprocess. Its stdout and stderr go to one log file; dropping it kills it.
pub struct Daemon {
    // A Mutex so that `&self` methods (`log`, `signal`, `wait_for_log`) can poll `try_wait`, which
    // needs `&mut Child`: that is how they notice an early exit instead of waiting for nothing.
    child: Mutex<Child>,
    log_path: PathBuf,
    dir: TempDir,
}

impl Daemon {
    /// Spawns `rrguard_bin()` with `args`, RUST_LOG unset and NO_COLOR=1 (ANSI colour codes in the
    /// log would break substring matching in [`Daemon::wait_for_log`]).
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables (e.g. `("RUST_LOG", "debug")`;
    /// these override the defaults above).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("rrguard-daemon-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let log_path = dir.path().join("daemon.log");
        let log = append_file(&log_path);
        let log_err = log.try_clone().expect("cannot clone log file handle");
        let mut cmd = Command::new(rrguard_bin());
        cmd.args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", rrguard_bin().display()));
        Daemon {
            child: Mutex::new(child),
            log_path,
            dir,
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// A temporary directory owned by this daemon (removed on drop); handy for files it writes.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the daemon printed so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Sends a signal ("HUP", "TERM", "INT", "KILL", ...) with `kill -s`. Panics if the daemon has
    /// already exited (the signal would go nowhere and the test would be wrong about why).
    pub fn signal(&self, sig: &str) {
        let mut child = self.child();
        // Checked under the lock: an unreaped child's pid cannot have been reused.
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "cannot send SIG{sig}: rrguard already exited ({status})\n--- log ---\n{}",
                self.log()
            );
        }
        send_signal(child.id(), sig).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits up to `timeout` for the daemon to exit. Returns its exit code, or 128 + the signal number
    /// if a signal killed it (the shell convention); `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_child(&mut self.child(), timeout).map(exit_code)
    }

    /// Waits up to `timeout` until the log contains `needle`. Panics with the whole log on timeout, or
    /// as soon as the daemon exits without having logged it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            let exited = self.child().try_wait().ok().flatten();
            if let Some(status) = exited {
                // Output written just before exiting is in the file by now: look once more.
                if self.log().contains(needle) {
                    return;
                }
                panic!(
                    "rrguard exited ({status}) without logging {needle:?}\n--- log ---\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "rrguard did not log {needle:?} within {timeout:?}\n--- log ---\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        // SIGKILL at once: a test that wanted a clean shutdown has already asked for one.
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|sig| 128 + sig))
        .unwrap_or(-1)
}
