//! Child processes in their own process group, shared by the `exec` check
//! ([`crate::observe::check::exec`]) and the `script` writer ([`crate::act::script`]).
//!
//! A command runs as the leader of a new process group, so that a timeout kills it **and everything it
//! started**: [`GroupGuard`] sends SIGKILL to the whole group when dropped (the probe or operation was
//! cancelled) or on [`GroupGuard::kill_and_reap`], which kills the group while the leader is still
//! unreaped (its pid, which is the group id, cannot be reused yet) and then reaps the leader, so no
//! zombie is left behind. Grandchildren die with the group and are reaped by init.

use std::io;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::{Child, Command};

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
pub(crate) async fn read_head(mut r: impl AsyncRead + Unpin, keep: usize) -> io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = keep.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}
