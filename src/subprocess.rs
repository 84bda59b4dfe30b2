//! Child processes in their own process group, shared by the `exec` check
//! ([`crate::observe::check::exec`]) and the `script` writer ([`crate::act::script`]).
//!
//! A command runs as the leader of a new process group, so that a timeout kills it **and everything it
//! started**: [`GroupGuard`] sends SIGKILL to the whole group when dropped (the probe or operation was
//! cancelled) or on [`GroupGuard::kill_and_reap`], which kills the group while the leader is still
//! unreaped (its pid, which is the group id, cannot be reused yet) and then reaps the leader, so no
//! zombie is left behind. Grandchildren die with the group and are reaped by init.
//!
//! **As PID 1** (a container started without an init), rrguard is that init: the orphans of its
//! commands (a killed group's grandchildren, a plugin's background process) are re-parented to it
//! and would stay zombies for ever. [`spawn_orphan_reaper`] then reaps every zombie child that is not
//! one of the commands rrguard itself waits for: those are spawned through [`spawn`], which records
//! their pids under the lock the reaper takes, so it never takes a command's exit status from the
//! runtime.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The pids of the commands rrguard spawned and waits for itself (through the runtime); the
/// orphan reaper leaves them alone. Entries of processes gone are dropped by the reaper's scans.
static SPAWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Spawns `cmd` and records its pid for the orphan reaper (under its lock, so that a command that
/// exits at once is never reaped by it).
///
/// # Errors
/// The spawn error.
pub(crate) fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let mut spawned = SPAWNED.lock().unwrap_or_else(PoisonError::into_inner);
    let child = cmd.spawn()?;
    if let Some(id) = child.id().and_then(|id| i32::try_from(id).ok()) {
        spawned.insert(id);
    }
    Ok(child)
}

/// How often the orphan reaper looks for zombies besides on SIGCHLD.
const REAP_EVERY: Duration = Duration::from_secs(5);

/// When rrguard runs as PID 1, spawns into `set` a task that reaps orphaned zombies on every
/// SIGCHLD and every [`REAP_EVERY`], until `cancel`; logs once that it does. Otherwise nothing: the
/// system's init reaps them.
pub(crate) fn spawn_orphan_reaper(set: &mut JoinSet<()>, cancel: CancellationToken) {
    if !rustix::process::getpid().is_init() {
        return;
    }
    warn!(
        "rrguard runs as PID 1: it reaps the orphans of its commands itself; an init (docker run --init, tini) would do it for every process"
    );
    set.spawn(async move {
        let mut sigchld =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
        loop {
            let reaped = reap_orphans();
            if reaped > 0 {
                debug!(reaped, "reaped orphaned processes");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(REAP_EVERY) => {}
                Some(()) = async {
                    match sigchld.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    });
}

/// Reaps every zombie child of this process that [`spawn`] did not start; returns how many.
fn reap_orphans() -> usize {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let mut spawned = SPAWNED.lock().unwrap_or_else(PoisonError::into_inner);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut children = BTreeSet::new();
    let mut reaped = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let mut fields = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace();
        let (Some(state), Some(ppid)) = (fields.next(), fields.next()) else {
            continue;
        };
        if ppid.parse::<i32>() != Ok(me) {
            continue;
        }
        children.insert(pid);
        if state == "Z"
            && !spawned.contains(&pid)
            && let Some(pid) = Pid::from_raw(pid)
            && matches!(
                rustix::process::waitpid(Some(pid), WaitOptions::NOHANG),
                Ok(Some(_))
            )
        {
            reaped += 1;
        }
    }
    // Commands already reaped by the runtime are no longer children.
    spawned.retain(|pid| children.contains(pid));
    reaped
}

/// How long to wait for a killed leader to be reaped before leaving it to the runtime.
pub(crate) const REAP_WITHIN: Duration = Duration::from_secs(5);

/// Makes `cmd` start as the leader of a new process group, killed if its [`Child`] is dropped.
pub(crate) fn in_own_group(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0).kill_on_drop(true)
}

/// Kills a child's process group when dropped, unless disarmed once the leader was reaped.
pub(crate) struct GroupGuard(Option<Pid>);

impl GroupGuard {
    /// The guard of `child`'s group (the child was spawned with [`in_own_group`]).
    pub(crate) fn of(child: &Child) -> Self {
        GroupGuard(child.id().and_then(|id| Pid::from_raw(id as i32)))
    }

    /// Sends SIGKILL to the whole group now.
    pub(crate) fn kill(&self) {
        if let Some(pgid) = self.0 {
            // ESRCH (already gone) is fine.
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }

    /// Stops the guard from killing on drop.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }

    /// Kills the group while its leader `child` is still unreaped, then reaps the leader (waiting at
    /// most [`REAP_WITHIN`]).
    pub(crate) async fn kill_and_reap(mut self, child: &mut Child) {
        self.kill();
        let _ = tokio::time::timeout(REAP_WITHIN, child.wait()).await;
        self.disarm();
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `r` to its end, keeping the first `keep` bytes; the rest is read and dropped, so a chatty
/// child never blocks on a full pipe.
pub(crate) async fn read_head(r: impl AsyncRead + Unpin, keep: usize) -> io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    read_head_into(r, &mut kept, keep).await?;
    Ok(kept)
}

/// [`read_head`] into `kept`, so that what was read is there even if the read is cut short (a
/// process the child left running may hold the pipe open after the child exited).
pub(crate) async fn read_head_into(
    mut r: impl AsyncRead + Unpin,
    kept: &mut Vec<u8>,
    keep: usize,
) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let room = keep.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}
