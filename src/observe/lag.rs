//! The probe engine's own lateness, so that rrguard's overload is never taken for an endpoint's failure.
//!
//! A monitor task ([`spawn_lag_monitor`]) sleeps [`TICK`] at a time on each of the probe engine's
//! threads and records every wake-up that came more than [`STALL_MIN`] late as a **stall** of that
//! thread: time in which no task of the thread ran on time (CPU starvation, a busy thread, the whole
//! process descheduled). A probe is judged by the stalls of the thread it runs on.
//! A probe loop asks [`LagHandle::judge`] about each failed probe: if stalls overlapped the probe by at
//! least [`LagHandle::threshold`] of its timeout (a tenth, at least 10 ms), the failure may be
//! rrguard's own lateness — the answer may have arrived and waited unread, or the timer fired late —
//! so the probe **abstains**: its result counts neither as a success nor as a failure. Only failures
//! that lateness can cause abstain ([`time_bound`]: a timeout, an answer slower than `max_latency`);
//! a refused or reset connection, a wrong status or body, and every success always count, so
//! overload never hides an endpoint that refuses.
//!
//! **Shedding**: while the runtime lost at least [`SHED_LOST`] to stalls within the last
//! [`SHED_WINDOW`] ([`LagHandle::overloaded`]), fast confirmation waits the plain interval
//! ([`crate::observe::scheduler`]): confirming probes are extra load, and at start-up, when every
//! endpoint's first success would be confirmed at once, they doubled what 10,000 endpoints asked
//! of the machine. Verdicts then take the plain `fall`/`rise` × interval, as without fast
//! confirmation; sheds are counted and logged like abstentions.
//!
//! Abstentions are counted by reason, logged at most once per [`LOG_EVERY`] with their number, the
//! most time any of them lost to stalls (the figure the rule above compares with a tenth of the
//! timeout) and the longest single stall, and published in the node state (`probes_abstained`, `scheduler_lag_ms` in the
//! status document; `rrguard_probes_abstained_total{reason}` and `rrguard_scheduler_lag_seconds` in
//! the metrics). So are the probe slots (`max_probes_in_flight`, `probes_in_flight`,
//! `probe_slot_waits`) and the shed confirmations (`confirmations_shed`), once a second
//! ([`LagHandle::status`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::observe::probe::ProbeResult;
use crate::runtime::ProbeThreads;
use crate::state::{EngineStatus, NodeState};

/// Whether a failed result is one that rrguard's own lateness can cause: a timeout (every check
/// reports it through [`crate::observe::probe::timed_out`]) or an answer slower than `max_latency`.
pub fn time_bound(result: &ProbeResult) -> bool {
    result.detail.starts_with("timed out after")
        || result.detail.contains("slower than max_latency")
}

/// The monitor's sleep between two measurements.
pub const TICK: Duration = Duration::from_millis(10);
/// A wake-up later than this is recorded as a stall (timer granularity and ordinary scheduling
/// noise stay below it).
pub const STALL_MIN: Duration = Duration::from_millis(5);
/// Stalls remembered, newest last: at one per tick, the last ~40 s, longer than any probe.
const STALLS_KEPT: usize = 4096;
/// At most one log line about abstentions per this period.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Smallest overlap with stalls that makes a failed probe abstain.
const MIN_THRESHOLD: Duration = Duration::from_millis(10);
/// The recent past [`LagHandle::overloaded`] looks at.
pub const SHED_WINDOW: Duration = Duration::from_secs(1);
/// Stalls within [`SHED_WINDOW`] from which the engine counts as overloaded (a tenth of it).
pub const SHED_LOST: Duration = Duration::from_millis(100);

/// Why a probe's result was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abstain {
    /// rrguard itself was late while the probe ran, by `lost` in all.
    Lag {
        /// Time the runtime lost to stalls during the probe.
        lost: Duration,
    },
}

impl Abstain {
    /// The reason as a label value: `lag`.
    pub fn reason(&self) -> &'static str {
        match self {
            Abstain::Lag { .. } => "lag",
        }
    }
}

/// Shared view of the probe engine's lateness; cheap to clone. Made by [`spawn_lag_monitor`], or
/// by [`LagHandle::new`] and fed by hand (tests).
///
/// The engine may run on several threads, each a runtime of its own ([`ProbeThreads`]), and a
/// busy thread is late for its own tasks only: each thread has its own monitor and its own
/// record of stalls (a *clock*). A handle reads and feeds the clock of the thread its tasks run
/// on ([`LagHandle::spawn`] gives each task the handle of its thread); the counters are shared.
#[derive(Debug, Clone)]
pub struct LagHandle {
    inner: Arc<Inner>,
    /// The engine thread (index into `inner.clocks`) this handle's tasks run on.
    thread: usize,
}

/// What one engine thread's monitor measured.
#[derive(Debug, Default)]
struct Clock {
    /// When the monitor last woke up, ns since `epoch`.
    last_tick_ns: AtomicU64,
    /// Lateness of the monitor's last wake-up, ns.
    last_lag_ns: AtomicU64,
    /// (planned, woke) of recent late wake-ups, ordered.
    stalls: Mutex<VecDeque<(Instant, Instant)>>,
}

impl Clock {
    /// When this thread's monitor last woke up.
    fn last_tick(&self, epoch: Instant) -> Instant {
        epoch + Duration::from_nanos(self.last_tick_ns.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    /// One per engine thread.
    clocks: Box<[Clock]>,
    /// Worst lateness of any thread since the last log line, ns.
    worst_lag_ns: AtomicU64,
    /// Probes abstained because of lag.
    abstained_lag: AtomicU64,
    /// The most time a probe that abstained since the last log line lost to stalls, ns.
    most_lost_ns: AtomicU64,
    /// Fast confirmations run at the plain interval because of lag.
    confirm_shed: AtomicU64,
    /// Probe slots: a probe holds one while it runs ([`LagHandle::slot`]).
    slots: Semaphore,
    /// How many slots there are (`[node] max_probes_in_flight`).
    max_in_flight: usize,
    /// Probes that found every slot taken and waited.
    slot_waits: AtomicU64,
    /// The threads the probe engine's tasks run on ([`LagHandle::spawn`]); `None`: the caller's
    /// runtime, watched as one.
    threads: Option<ProbeThreads>,
}

impl LagHandle {
    /// A handle with no stall recorded, whose monitor last ran at `now`, and no practical bound on
    /// probes in flight.
    pub fn new(now: Instant) -> Self {
        Self::bounded(now, Semaphore::MAX_PERMITS)
    }

    /// [`LagHandle::new`], with at most `max_in_flight` probes running at once (at least 1).
    pub fn bounded(now: Instant, max_in_flight: usize) -> Self {
        Self::engine(now, max_in_flight, None)
    }

    /// [`LagHandle::bounded`], whose tasks run on `threads` if given ([`LagHandle::spawn`]), with
    /// one clock per thread.
    fn engine(now: Instant, max_in_flight: usize, threads: Option<ProbeThreads>) -> Self {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        let clocks = threads.as_ref().map_or(1, ProbeThreads::len);
        LagHandle {
            thread: 0,
            inner: Arc::new(Inner {
                epoch: now,
                clocks: (0..clocks).map(|_| Clock::default()).collect(),
                worst_lag_ns: AtomicU64::new(0),
                abstained_lag: AtomicU64::new(0),
                most_lost_ns: AtomicU64::new(0),
                confirm_shed: AtomicU64::new(0),
                slots: Semaphore::new(max_in_flight),
                max_in_flight,
                slot_waits: AtomicU64::new(0),
                threads,
            }),
        }
    }

    /// Spawns the task `make` builds, a part of the probe engine, into `set`: on the next of the
    /// engine's threads in turn when [`spawn_lag_monitor`] was given them, else on the caller's
    /// runtime. `make` gets the handle of that thread, whose lateness its judgements must use.
    pub fn spawn<F>(&self, set: &mut JoinSet<()>, make: impl FnOnce(LagHandle) -> F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let thread = self.inner.threads.as_ref().map_or(0, ProbeThreads::next);
        self.spawn_on(set, thread, make)
    }

    /// [`LagHandle::spawn`] on engine thread `thread`.
    fn spawn_on<F>(
        &self,
        set: &mut JoinSet<()>,
        thread: usize,
        make: impl FnOnce(LagHandle) -> F,
    ) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let lag = LagHandle {
            inner: self.inner.clone(),
            thread,
        };
        match &self.inner.threads {
            Some(threads) => set.spawn_on(make(lag), threads.handle(thread)),
            None => set.spawn(make(lag)),
        }
    }

    /// The clock of this handle's engine thread.
    fn clock(&self) -> &Clock {
        &self.inner.clocks[self.thread]
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.inner.epoch).as_nanos() as u64
    }

    /// Records one wake-up of this thread's monitor, planned for `planned`, happening at `woke`.
    pub fn tick(&self, planned: Instant, woke: Instant) {
        let late = woke.saturating_duration_since(planned);
        let c = self.clock();
        c.last_tick_ns.store(self.ns(woke), Ordering::Relaxed);
        c.last_lag_ns
            .store(late.as_nanos() as u64, Ordering::Relaxed);
        self.inner
            .worst_lag_ns
            .fetch_max(late.as_nanos() as u64, Ordering::Relaxed);
        if late > STALL_MIN {
            let mut stalls = c.stalls.lock().unwrap_or_else(PoisonError::into_inner);
            if stalls.len() == STALLS_KEPT {
                stalls.pop_front();
            }
            stalls.push_back((planned, woke));
        }
    }

    /// Time in `[start, end]` during which this handle's engine thread was stalled: recorded
    /// stalls, and a stall in progress if its monitor has not woken up for longer than a tick plus
    /// [`STALL_MIN`] (it is starved too, and cannot have recorded it yet).
    pub fn lost_during(&self, start: Instant, end: Instant) -> Duration {
        let overlap = |a: Instant, b: Instant| b.min(end).saturating_duration_since(a.max(start));
        let mut lost = Duration::ZERO;
        let c = self.clock();
        {
            let stalls = c.stalls.lock().unwrap_or_else(PoisonError::into_inner);
            for &(a, b) in stalls.iter().rev() {
                if b <= start {
                    break;
                }
                lost += overlap(a, b);
            }
        }
        let last = c.last_tick(self.inner.epoch);
        let due = last + TICK;
        if end.saturating_duration_since(due) > STALL_MIN {
            lost += overlap(due, end);
        }
        lost
    }

    /// The overlap with stalls that makes a failed probe with `timeout` abstain: a tenth of the
    /// timeout, at least 10 ms.
    pub fn threshold(timeout: Duration) -> Duration {
        (timeout / 10).max(MIN_THRESHOLD)
    }

    /// Whether a probe that ran from `start` to `end` with `timeout` and gave `result` must abstain.
    /// Only a failure that lateness can cause does: a timeout, or an answer slower than
    /// `max_latency`. A success, a refused or reset connection, a wrong status or body always count,
    /// stall or not (the all-down hold relies on seeing the other endpoints fail too).
    pub fn judge(
        &self,
        result: &ProbeResult,
        start: Instant,
        end: Instant,
        timeout: Duration,
    ) -> Option<Abstain> {
        if result.ok || !time_bound(result) {
            return None;
        }
        let lost = self.lost_during(start, end);
        (lost >= Self::threshold(timeout)).then_some(Abstain::Lag { lost })
    }

    /// Whether this handle's engine thread lost at least [`SHED_LOST`] to stalls in the last [`SHED_WINDOW`]
    /// before `now`: the engine is asked for more than the machine gives it, and extra probes
    /// (fast confirmation) would only make every probe later.
    pub fn overloaded(&self, now: Instant) -> bool {
        self.lost_during(now.checked_sub(SHED_WINDOW).unwrap_or(now), now) >= SHED_LOST
    }

    /// Waits for one of the probe slots and holds it until the returned permit is dropped. A probe
    /// takes it before it starts (its timeout runs from then): waiting for a slot delays a probe,
    /// it never fails it. A wait is counted ([`LagHandle::slot_waits`]) and logged by the monitor.
    pub async fn slot(&self) -> Option<SemaphorePermit<'_>> {
        if let Ok(permit) = self.inner.slots.try_acquire() {
            return Some(permit);
        }
        self.inner.slot_waits.fetch_add(1, Ordering::Relaxed);
        // Never closed: `None` cannot happen, and would only let the probe run unbounded.
        self.inner.slots.acquire().await.ok()
    }

    /// Probes that found every slot taken so far.
    pub fn slot_waits(&self) -> u64 {
        self.inner.slot_waits.load(Ordering::Relaxed)
    }

    /// Probe slots (`[node] max_probes_in_flight`).
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight
    }

    /// Counts one fast confirmation shed (run at the plain interval) while overloaded.
    pub fn shed_confirm(&self) {
        self.inner.confirm_shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Fast confirmations shed so far.
    pub fn confirms_shed(&self) -> u64 {
        self.inner.confirm_shed.load(Ordering::Relaxed)
    }

    /// Counts one abstention.
    pub fn abstained(&self, why: Abstain) {
        match why {
            Abstain::Lag { lost } => {
                self.inner.abstained_lag.fetch_add(1, Ordering::Relaxed);
                self.inner
                    .most_lost_ns
                    .fetch_max(lost.as_nanos() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Abstentions so far, by reason.
    pub fn abstained_total(&self) -> Vec<(&'static str, u64)> {
        vec![("lag", self.inner.abstained_lag.load(Ordering::Relaxed))]
    }

    /// Probes holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.inner.max_in_flight - self.inner.slots.available_permits()
    }

    /// The engine's health at `now`, as the status document and the metrics show it.
    pub fn status(&self, now: Instant) -> EngineStatus {
        EngineStatus {
            // To the microsecond, as probe latencies.
            scheduler_lag_ms: crate::observe::probe::ms_rounded(self.current_lag(now)),
            probes_abstained: self
                .abstained_total()
                .into_iter()
                .map(|(reason, n)| (reason.to_owned(), n))
                .collect(),
            max_probes_in_flight: self.inner.max_in_flight as u64,
            probes_in_flight: self.in_flight() as u64,
            probe_slot_waits: self.slot_waits(),
            confirmations_shed: self.confirms_shed(),
        }
    }

    /// The latest measured lateness of the latest engine thread: for each, its monitor's last
    /// measurement, or the time since it was due if it is late now.
    pub fn current_lag(&self, now: Instant) -> Duration {
        let i = &self.inner;
        i.clocks
            .iter()
            .map(|c| {
                let last = c.last_tick(i.epoch);
                let overdue = now.saturating_duration_since(last + TICK);
                Duration::from_nanos(c.last_lag_ns.load(Ordering::Relaxed)).max(overdue)
            })
            .max()
            .unwrap_or_default()
    }

    /// The worst lateness since the last call, and resets it.
    fn take_worst(&self) -> Duration {
        Duration::from_nanos(self.inner.worst_lag_ns.swap(0, Ordering::Relaxed))
    }

    /// The most time a probe that abstained since the last call lost to stalls, and resets it.
    fn take_most_lost(&self) -> Duration {
        Duration::from_nanos(self.inner.most_lost_ns.swap(0, Ordering::Relaxed))
    }
}

/// The log line about `n` probes that abstained in the last `period`: the most time one of them
/// lost to stalls (`lost`, what [`LagHandle::judge`] compares with a tenth of the timeout, so it
/// is never below the threshold the docs give) and the longest single stall (`worst`, which may be
/// shorter: several short stalls add up).
fn abstained_line(n: u64, period: Duration, lost: Duration, worst: Duration) -> String {
    format!(
        "{n} failed probes in the last {}s ran while rrguard itself was late (stalls took up to {} ms of a probe, each at least a tenth of its timeout; longest single stall {} ms: CPU starvation or too many endpoints for this machine); they count neither for nor against their endpoints",
        period.as_secs(),
        lost.as_millis(),
        worst.as_millis()
    )
}

/// Spawns the monitors into `set`: one on each of `threads` if given (the probe engine's own,
/// which the returned handle's [`LagHandle::spawn`] then deals every probe loop out to), or else one
/// on the caller's runtime; they stop when `cancel` fires. Every second the first publishes the lag
/// and the abstention counters into `state`; it logs abstentions at most once per [`LOG_EVERY`].
pub fn spawn_lag_monitor(
    set: &mut JoinSet<()>,
    state: NodeState,
    cancel: CancellationToken,
    max_in_flight: usize,
    threads: Option<ProbeThreads>,
) -> LagHandle {
    let lag = LagHandle::engine(Instant::now(), max_in_flight, threads);
    for thread in 0..lag.inner.clocks.len() {
        let reporter = (thread == 0).then(|| state.clone());
        let cancel = cancel.clone();
        lag.spawn_on(set, thread, move |lag| watch(lag, reporter, cancel));
    }
    lag
}

/// One engine thread's monitor: ticks [`LagHandle::tick`] on `lag`'s thread until `cancel`; with a
/// `reporter`, also publishes and logs for the whole engine.
async fn watch(lag: LagHandle, reporter: Option<NodeState>, cancel: CancellationToken) {
    let mut planned = Instant::now() + TICK;
    let mut next_publish = Instant::now();
    let mut next_log = Instant::now() + LOG_EVERY;
    let mut logged = 0u64;
    let mut shed_logged = 0u64;
    let mut waits_logged = 0u64;
    let mut worst = Duration::ZERO;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(planned) => {}
        }
        let now = Instant::now();
        lag.tick(planned, now);
        planned = now + TICK;
        let Some(state) = &reporter else { continue };
        if now >= next_publish {
            next_publish = now + Duration::from_secs(1);
            worst = worst.max(lag.take_worst());
            state.set_engine(lag.status(now));
        }
        if now >= next_log {
            next_log = now + LOG_EVERY;
            let total: u64 = lag.abstained_total().iter().map(|(_, n)| n).sum();
            worst = worst.max(lag.take_worst());
            let shed = lag.confirms_shed();
            if shed > shed_logged {
                warn!(
                    shed = shed - shed_logged,
                    "{} fast confirmations in the last {}s waited the plain interval: rrguard itself was late (CPU starvation or too many endpoints for this machine), and extra probes would make every probe later",
                    shed - shed_logged,
                    LOG_EVERY.as_secs()
                );
                shed_logged = shed;
            }
            let waits = lag.slot_waits();
            if waits > waits_logged {
                warn!(
                    waited = waits - waits_logged,
                    max_probes_in_flight = lag.max_in_flight(),
                    "{} probes in the last {}s waited for one of the {} probe slots and started late: endpoints slow to answer or timing out hold them, or the machine cannot keep up; raise [node] max_probes_in_flight if memory allows (about 32 KB per HTTP probe in flight)",
                    waits - waits_logged,
                    LOG_EVERY.as_secs(),
                    lag.max_in_flight()
                );
                waits_logged = waits;
            }
            let lost = lag.take_most_lost();
            if total > logged {
                warn!(
                    abstained = total - logged,
                    lost_ms = lost.as_millis() as u64,
                    worst_lag_ms = worst.as_millis() as u64,
                    "{}",
                    abstained_line(total - logged, LOG_EVERY, lost, worst)
                );
                logged = total;
            }
            worst = Duration::ZERO;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timed_out() -> ProbeResult {
        crate::observe::probe::timed_out(500 * MS)
    }

    fn refused() -> ProbeResult {
        ProbeResult {
            ok: false,
            latency: 2 * MS,
            detail: "connection refused".to_owned(),
        }
    }

    fn passed() -> ProbeResult {
        ProbeResult {
            ok: true,
            latency: 2 * MS,
            detail: "connected".to_owned(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_during_a_stall_abstains_success_and_refusal_do_not() {
        let t0 = Instant::now();
        let lag = LagHandle::new(t0);
        // The monitor runs on time until 100 ms, then wakes up 300 ms late.
        for k in 1..=10 {
            lag.tick(t0 + TICK * k, t0 + TICK * k);
        }
        lag.tick(t0 + 110 * MS, t0 + 410 * MS);
        for k in 42..=60 {
            lag.tick(t0 + TICK * k, t0 + TICK * k);
        }
        let timeout = 500 * MS;
        // A timed-out probe over the stall: 300 ms lost ≥ 50 ms.
        let (a, b) = (t0 + 50 * MS, t0 + 550 * MS);
        assert_eq!(
            lag.judge(&timed_out(), a, b, timeout),
            Some(Abstain::Lag { lost: 300 * MS })
        );
        // The same probe passing counts, and so does a refusal, even during the stall: lateness
        // cannot refuse a connection.
        assert_eq!(lag.judge(&passed(), a, b, timeout), None);
        assert_eq!(lag.judge(&refused(), a, b, timeout), None);
        // A timeout overlapping only 20 ms of it: below a tenth of the timeout.
        let (a, b) = (t0 + 390 * MS, t0 + 415 * MS);
        assert_eq!(lag.judge(&timed_out(), a, b, timeout), None);
        // With a 100 ms timeout the threshold is 10 ms: the same 20 ms overlap abstains.
        assert!(lag.judge(&timed_out(), a, b, 100 * MS).is_some());
        // A timeout after the stall counts.
        let (a, b) = (t0 + 420 * MS, t0 + 590 * MS);
        assert_eq!(lag.judge(&timed_out(), a, b, timeout), None);
    }

    /// Several short stalls add up: the line about abstentions states the time a probe lost (what
    /// the rule compares with a tenth of the timeout), not only the longest stall, which alone is
    /// below the threshold.
    #[tokio::test(start_paused = true)]
    async fn the_abstention_line_states_the_time_lost_not_only_the_longest_stall() {
        let t0 = Instant::now();
        let lag = LagHandle::new(t0);
        // Three stalls of 30 ms within one probe (at 100, 230 and 360 ms): 90 ms lost, no stall
        // over 30 ms; the monitor on time otherwise, up to 690 ms.
        let mut now = t0;
        for k in 0..60 {
            let planned = now + TICK;
            let late = if k % 10 == 9 && k < 30 {
                30 * MS
            } else {
                Duration::ZERO
            };
            lag.tick(planned, planned + late);
            now = planned + late;
        }
        let timeout = 500 * MS;
        let why = lag
            .judge(&timed_out(), t0 + 50 * MS, t0 + 550 * MS, timeout)
            .expect("90 ms lost of a 500 ms timeout abstains");
        assert_eq!(why, Abstain::Lag { lost: 90 * MS });
        assert!(30 * MS < LagHandle::threshold(timeout));
        lag.abstained(why);
        lag.abstained(Abstain::Lag { lost: 60 * MS });
        let (lost, worst) = (lag.take_most_lost(), lag.take_worst());
        assert_eq!((lost, worst), (90 * MS, 30 * MS));
        let line = abstained_line(2, LOG_EVERY, lost, worst);
        assert!(
            line.starts_with("2 failed probes in the last 10s ran while rrguard itself was late (stalls took up to 90 ms of a probe, each at least a tenth of its timeout; longest single stall 30 ms"),
            "{line}"
        );
        // Reset for the next period.
        assert_eq!(lag.take_most_lost(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn overloaded_while_recent_stalls_reach_a_tenth_of_the_window() {
        let t0 = Instant::now();
        let lag = LagHandle::new(t0);
        for k in 1..=100 {
            lag.tick(t0 + TICK * k, t0 + TICK * k);
        }
        let t1 = t0 + TICK * 100;
        assert!(!lag.overloaded(t1));
        // 60 ms late: not yet a tenth of the last second.
        lag.tick(t1 + TICK, t1 + TICK + 60 * MS);
        assert!(!lag.overloaded(t1 + TICK + 60 * MS));
        // Another 60 ms within the same second: 120 ms lost.
        let t2 = t1 + 200 * MS;
        lag.tick(t2, t2 + 60 * MS);
        assert!(lag.overloaded(t2 + 60 * MS));
        // More than a second later, with the monitor on time, it has passed.
        let t3 = t2 + 60 * MS + SHED_WINDOW;
        lag.tick(t3, t3);
        assert!(!lag.overloaded(t3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_in_progress_counts_before_the_monitor_records_it() {
        let t0 = Instant::now();
        let lag = LagHandle::new(t0);
        lag.tick(t0, t0);
        // The monitor has not run for 400 ms: it is starved as well.
        let lost = lag.lost_during(t0 + 100 * MS, t0 + 400 * MS);
        assert_eq!(lost, 300 * MS);
        assert!(
            lag.judge(&timed_out(), t0 + 100 * MS, t0 + 400 * MS, 500 * MS)
                .is_some()
        );
        assert_eq!(lag.current_lag(t0 + 400 * MS), 390 * MS);
        // On time: nothing lost.
        assert_eq!(lag.lost_during(t0, t0 + 12 * MS), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_monitor_records_a_starved_runtime() {
        let state = NodeState::new();
        let cancel = CancellationToken::new();
        let mut set = JoinSet::new();
        let lag = spawn_lag_monitor(&mut set, state, cancel.clone(), 16, None);
        tokio::time::sleep(100 * MS).await;
        let start = Instant::now();
        // The clock jumps 300 ms while no task runs: what a starved runtime looks like to it.
        tokio::time::advance(300 * MS).await;
        tokio::time::sleep(50 * MS).await;
        let end = Instant::now();
        let lost = lag.lost_during(start, end);
        assert!(lost >= 250 * MS, "lost {lost:?}");
        cancel.cancel();
        // On time afterwards: a later window has nothing lost.
        let later = Instant::now();
        assert_eq!(lag.lost_during(later, later + MS), Duration::ZERO);
    }

    /// On an engine of two threads, a task that holds one thread for a second stalls that thread
    /// only: its probes may abstain, the other thread's may not, and the status shows the stall.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_engine_thread_stalls_only_its_own_probes() {
        let (threads, engine) = crate::runtime::start_engine(2).unwrap();
        let cancel = CancellationToken::new();
        let mut set = JoinSet::new();
        let lag = spawn_lag_monitor(
            &mut set,
            NodeState::new(),
            cancel.clone(),
            16,
            Some(threads),
        );
        // Two tasks, dealt to the two threads in turn, hand back their thread's handle.
        let mut handles = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            lag.spawn(&mut set, move |lag| async move {
                let _ = tx.send(lag);
            });
            handles.push(rx.await.unwrap());
        }
        let (calm, busy) = (&handles[0], &handles[1]);
        assert_eq!((calm.thread, busy.thread), (0, 1));
        tokio::time::sleep(50 * MS).await;
        let start = Instant::now();
        lag.spawn_on(&mut set, 1, |_| async {
            // Blocks its thread: what a thread that cannot keep up looks like to its monitor.
            std::thread::sleep(Duration::from_secs(1));
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // While it lasts, the status sees it.
        assert!(lag.current_lag(Instant::now()) >= 300 * MS);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let end = Instant::now();
        let timeout = Duration::from_secs(1);
        assert!(busy.lost_during(start, end) >= 900 * MS);
        assert!(busy.judge(&timed_out(), start, end, timeout).is_some());
        // The other thread went on: its lateness is the machine's noise, far below the stall.
        let lost = calm.lost_during(start, end);
        assert!(lost < 500 * MS, "the calm thread lost {lost:?}");
        cancel.cancel();
        while set.join_next().await.is_some() {}
        drop(engine);
    }
}
