//! The threads `rrguard run` works on: the probe engine on a tokio runtime of its own, everything
//! else (lanes, agreement, writers, the HTTP API, the stores) on the main runtime, whose threads run
//! at a lower scheduling priority ([`BOOKKEEPING_NICE`] above the process's nice value).
//!
//! When the machine has less CPU than the node asks for — every endpoint's first verdicts at
//! start-up, a burst of plans and state writes — the kernel then runs the probes first and lets the
//! rest catch up a little later: a probe that starts late is a wrong measurement (its gap is
//! jitter, its timeout may fire on rrguard's own lateness), while a plan or a status update made a
//! few hundred milliseconds later is the same plan. On one runtime, both slowed down alike.
//! Measured with `benches/engine.rs` at 10,000 HTTP endpoints with `keep_alive` at 1 s on 2 CPUs,
//! the two builds run alternately, 60 s each (docs/benchmarks.md): scheduling jitter p99 from start
//! 8–141 ms on one runtime, 6 ms in every run with the two; first probe of every endpoint 1.37–2.39 s
//! against 1.44–1.95 s. At 10,000 TCP endpoints, p99 74–369 ms against 19–33 ms.
//!
//! The main runtime still gets its share when both are busy (CFS weights: 1024 for the probe
//! threads, 335 at nice +5, so about a quarter of the CPU), and all of it when the probes are
//! idle, which at steady state is most of the time. Its threads are named `rrguard-main`, the
//! engine's `rrguard-probe` (`top -H`, `ps -L`).

use std::io;
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};

/// How much lower than the process the main runtime's threads run: nice +5 (weight 335 against
/// 1024 under Linux's CFS/EEVDF). At 10,000 HTTP endpoints with `keep_alive` (20 s runs), +2
/// left jitter p99 at 4–34 ms and +5 at 4–8 ms; with a new connection per probe, where the machine
/// is full, neither changed the probes per second beyond the run-to-run spread.
pub const BOOKKEEPING_NICE: i32 = 5;

/// How long stopping waits for the probe engine's threads to finish what they run.
const PROBES_STOP: Duration = Duration::from_secs(1);

/// The two runtimes of `rrguard run`.
#[derive(Debug)]
pub struct DaemonRuntimes {
    /// Runs the daemon ([`crate::daemon::run`]) and all but the probe engine.
    pub main: Runtime,
    /// Runs the probe engine: given to the daemon as
    /// [`crate::daemon::RunOptions::probe_runtime`].
    pub probes: Runtime,
}

impl DaemonRuntimes {
    /// Builds both, each with one worker per CPU. A thread whose priority cannot be lowered (a
    /// system that refuses it) keeps the process's and says so at debug level: the daemon runs
    /// the same, only without the preference.
    ///
    /// # Errors
    /// The I/O error of a runtime that cannot start (threads, the I/O driver).
    pub fn build() -> io::Result<DaemonRuntimes> {
        let probes = Builder::new_multi_thread()
            .thread_name("rrguard-probe")
            .enable_all()
            .build()?;
        let main = Builder::new_multi_thread()
            .thread_name("rrguard-main")
            .on_thread_start(|| {
                if let Err(e) = lower_this_thread(BOOKKEEPING_NICE) {
                    tracing::debug!("cannot lower the priority of a main runtime thread: {e}");
                }
            })
            .enable_all()
            .build()?;
        Ok(DaemonRuntimes { main, probes })
    }

    /// Runs `task` to its end as a task of the main runtime and returns what it returns. On a
    /// worker, not on the calling thread as `block_on` would: the threads it starts (the audit log's
    /// and the endpoint history's committers) then inherit the main runtime's lower priority.
    ///
    /// # Panics
    /// Resumes `task`'s panic.
    pub fn run<F>(&self, task: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.main.block_on(self.main.spawn(task)) {
            Ok(out) => out,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only a shutdown of the runtime cancels it, and only `stop` shuts it down.
                Err(e) => unreachable!("the daemon's task was cancelled: {e}"),
            },
        }
    }

    /// Stops the probe engine's runtime, waiting at most [`PROBES_STOP`] for its threads (the
    /// daemon has already stopped every probe loop when [`crate::daemon::run`] returns).
    pub fn stop(self) {
        self.probes.shutdown_timeout(PROBES_STOP);
        drop(self.main);
    }
}

/// Raises the calling thread's nice value by `by` (a lower priority), up to 19.
///
/// # Errors
/// The OS error of `getpriority`/`setpriority` (`EACCES`/`EPERM` under a policy that forbids it).
#[cfg(target_os = "linux")]
pub fn lower_this_thread(by: i32) -> io::Result<()> {
    let target = (this_thread_nice()? + by).min(19);
    // On Linux the nice value is per thread, and PRIO_PROCESS with who = 0 is the calling thread
    // (the kernel's `find_task` is `current`; setpriority(2), NOTES).
    rustix::process::setpriority_process(None, target)?;
    Ok(())
}

/// The calling thread's nice value (-20 to 19).
///
/// # Errors
/// The OS error of `getpriority`.
#[cfg(target_os = "linux")]
pub fn this_thread_nice() -> io::Result<i32> {
    Ok(rustix::process::getpriority_process(None)?)
}

/// Elsewhere the main runtime keeps the process's priority.
///
/// # Errors
/// Never.
#[cfg(not(target_os = "linux"))]
pub fn lower_this_thread(_by: i32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The nice value and thread name of a task run on `rt`.
    fn seen_from(rt: &Runtime) -> (i32, String) {
        rt.block_on(async {
            tokio::spawn(async {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                (this_thread_nice().unwrap(), name)
            })
            .await
            .unwrap()
        })
    }

    #[test]
    fn the_main_runtime_runs_below_the_probe_engine() {
        let base = this_thread_nice().unwrap();
        let rts = DaemonRuntimes::build().unwrap();
        let (probe_nice, probe_thread) = seen_from(&rts.probes);
        let (main_nice, main_thread) = seen_from(&rts.main);
        assert_eq!(probe_thread, "rrguard-probe");
        assert_eq!(main_thread, "rrguard-main");
        assert_eq!(probe_nice, base);
        assert_eq!(main_nice, (base + BOOKKEEPING_NICE).min(19));
        // Blocking threads (the stores' commits) are the main runtime's too.
        let blocking = rts.main.block_on(async {
            tokio::task::spawn_blocking(|| this_thread_nice().unwrap())
                .await
                .unwrap()
        });
        assert_eq!(blocking, main_nice);
        // So are the threads that what `run` runs starts, like the stores' committers.
        let started = rts.run(async {
            std::thread::spawn(|| this_thread_nice().unwrap())
                .join()
                .unwrap()
        });
        assert_eq!(started, main_nice);
        rts.stop();
    }
}
