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
//! The probe engine is one single-threaded runtime per CPU, not one work-stealing runtime: a probe
//! loop stays on the thread it was dealt to ([`ProbeThreads`], round-robin), so a probe's timer, its
//! socket and its report are handled by the thread that runs it, without waking another worker to
//! look for work. With a new connection per probe at 10,000 HTTP endpoints (1 s, 2 CPUs, 30 s runs
//! of each build alternately): scheduling jitter p99 from start 1–17 ms in 11 runs against 2–302
//! ms (above the 50 ms target in 5 of 9), involuntary context switches of the probe threads
//! 2,400–2,550/s against 4,360–4,650/s, 7 % less CPU per probe with `Connection: close`
//! (docs/benchmarks.md). Each thread's lateness is watched on its own ([`crate::observe::lag`]).
//!
//! The main runtime still gets its share when both are busy (CFS weights: 1024 for the probe
//! threads, 335 at nice +5, so about a quarter of the CPU), and all of it when the probes are
//! idle, which at steady state is most of the time. Its threads are named `rrguard-main`, the
//! engine's `rrguard-probe` (`top -H`, `ps -L`).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

/// How much lower than the process the main runtime's threads run: nice +5 (weight 335 against
/// 1024 under Linux's CFS/EEVDF). At 10,000 HTTP endpoints with `keep_alive` (20 s runs), +2
/// left jitter p99 at 4–34 ms and +5 at 4–8 ms; with a new connection per probe, where the machine
/// is full, neither changed the probes per second beyond the run-to-run spread.
pub const BOOKKEEPING_NICE: i32 = 5;

/// How long stopping waits for the probe engine's threads to finish what they run.
const PROBES_STOP: Duration = Duration::from_secs(1);

/// The runtimes of `rrguard run`.
#[derive(Debug)]
pub struct DaemonRuntimes {
    /// Runs the daemon ([`crate::daemon::run`]) and all but the probe engine.
    pub main: Runtime,
    /// Runs the probe engine: given to the daemon as
    /// [`crate::daemon::RunOptions::probe_runtime`].
    pub probes: ProbeThreads,
    /// Each engine thread, to stop it.
    engine: Vec<EngineThread>,
}

/// One probe engine thread started by [`start_engine`]: it runs until told to stop or until this
/// is dropped.
#[derive(Debug)]
pub(crate) struct EngineThread {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// The probe engine's threads, each running a single-threaded runtime of its own; cheap to clone.
/// Tasks are dealt out in turn ([`ProbeThreads::next`]) and stay on their thread.
#[derive(Debug, Clone)]
pub struct ProbeThreads {
    handles: Arc<[Handle]>,
    dealt: Arc<AtomicUsize>,
}

impl ProbeThreads {
    /// The engine as one runtime: `handle`'s (tests, and a caller that runs the engine itself).
    pub fn one(handle: Handle) -> Self {
        Self::of(vec![handle])
    }

    fn of(handles: Vec<Handle>) -> Self {
        assert!(!handles.is_empty(), "a probe engine needs a thread");
        ProbeThreads {
            handles: handles.into(),
            dealt: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many threads (at least 1).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never: an engine has at least one thread (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The index of the thread the next task goes to: each in turn.
    pub fn next(&self) -> usize {
        self.dealt.fetch_add(1, Ordering::Relaxed) % self.handles.len()
    }

    /// The runtime of thread `i` (`i < len()`).
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn handle(&self, i: usize) -> &Handle {
        &self.handles[i]
    }
}

impl DaemonRuntimes {
    /// Builds the main runtime with one worker per CPU and one probe engine thread per CPU. A
    /// thread whose priority cannot be lowered (a system that refuses it) keeps the process's and
    /// says so at debug level: the daemon runs the same, only without the preference.
    ///
    /// # Errors
    /// The I/O error of a runtime or thread that cannot start (threads, the I/O driver).
    pub fn build() -> io::Result<DaemonRuntimes> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (probes, engine) = start_engine(cpus)?;
        let main = Builder::new_multi_thread()
            .thread_name("rrguard-main")
            .on_thread_start(|| {
                if let Err(e) = lower_this_thread(BOOKKEEPING_NICE) {
                    tracing::debug!("cannot lower the priority of a main runtime thread: {e}");
                }
            })
            .enable_all()
            .build()?;
        Ok(DaemonRuntimes {
            main,
            probes,
            engine,
        })
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

    /// Stops the probe engine's threads, waiting at most [`PROBES_STOP`] for what each runs (the
    /// daemon has already stopped every probe loop when [`crate::daemon::run`] returns).
    pub fn stop(self) {
        let threads: Vec<JoinHandle<()>> = self
            .engine
            .into_iter()
            .map(|t| {
                let _ = t.stop.send(());
                t.thread
            })
            .collect();
        for thread in threads {
            // A panic of the thread's runtime was already reported by the panic hook.
            let _ = thread.join();
        }
        drop(self.main);
    }
}

/// Starts `threads` probe engine threads (at least 1), each running a single-threaded runtime
/// until stopped ([`DaemonRuntimes::stop`]) or dropped; then it waits at most [`PROBES_STOP`] for
/// its blocking tasks. Returns the threads' handles and the threads.
///
/// # Errors
/// The I/O error of a runtime or thread that cannot start.
pub(crate) fn start_engine(threads: usize) -> io::Result<(ProbeThreads, Vec<EngineThread>)> {
    let mut handles = Vec::with_capacity(threads);
    let mut engine = Vec::with_capacity(threads);
    for _ in 0..threads.max(1) {
        let rt = Builder::new_current_thread()
            // The name of its blocking threads.
            .thread_name("rrguard-probe")
            .enable_all()
            .build()?;
        handles.push(rt.handle().clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("rrguard-probe".into())
            .spawn(move || {
                // A stop, or the sender dropped.
                let _ = rt.block_on(stopped);
                rt.shutdown_timeout(PROBES_STOP);
            })?;
        engine.push(EngineThread { stop, thread });
    }
    Ok((ProbeThreads::of(handles), engine))
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

    /// The nice value and thread name of a task run on `on`.
    fn seen_from(rts: &DaemonRuntimes, on: &Handle) -> (i32, String) {
        rts.main
            .block_on(on.spawn(async {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                (this_thread_nice().unwrap(), name)
            }))
            .unwrap()
    }

    #[test]
    fn the_main_runtime_runs_below_the_probe_engine() {
        let base = this_thread_nice().unwrap();
        let rts = DaemonRuntimes::build().unwrap();
        let (probe_nice, probe_thread) = seen_from(&rts, rts.probes.handle(0));
        let (main_nice, main_thread) = seen_from(&rts, rts.main.handle());
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

    /// One engine thread per CPU; tasks go to each in turn and run on that thread only, and
    /// stopping ends them, even tasks that would never end by themselves.
    #[test]
    fn probe_tasks_are_dealt_to_each_engine_thread_in_turn() {
        let rts = DaemonRuntimes::build().unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(rts.probes.len(), cpus);
        let ran_on: Vec<std::thread::ThreadId> = (0..2 * cpus)
            .map(|_| {
                let h = rts.probes.handle(rts.probes.next());
                rts.main
                    .block_on(h.spawn(async {
                        let before = std::thread::current().id();
                        // Across an await point, still the same thread.
                        tokio::task::yield_now().await;
                        assert_eq!(std::thread::current().id(), before);
                        before
                    }))
                    .unwrap()
            })
            .collect();
        let distinct: std::collections::HashSet<_> = ran_on.iter().collect();
        assert_eq!(distinct.len(), cpus, "{ran_on:?}");
        assert_eq!(ran_on[..cpus], ran_on[cpus..], "dealt in turn: {ran_on:?}");
        assert!(!ran_on.contains(&std::thread::current().id()));
        for i in 0..cpus {
            rts.probes.handle(i).spawn(std::future::pending::<()>());
        }
        rts.stop();
    }
}
