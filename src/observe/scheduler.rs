//! The probe scheduler: one task per endpoint, in its owner's `JoinSet` (a service controller's), so
//! that the loops end with the generation that started them.
//!
//! Each task runs its probe every `interval`, starting after a per-endpoint offset so that the endpoints
//! of a service are spread across the interval instead of probed in a burst; from then on its regular
//! probes keep to that grid (first probe + k × `interval`). A probe never overlaps the previous one of
//! the same endpoint (the loop awaits it), and is cut off at the hard `timeout`. If a probe ends past
//! its next slot (it overran the interval, waited for a probe slot, or the runtime stalled) the next
//! one starts at once and the one after is back on the grid: missed slots are not made up, and the
//! grid does not move. Each service's grid is shifted by a phase of its own ([`Schedule::phased`]),
//! so that services with as many endpoints do not probe at the same instants.
//!
//! An endpoint whose results keep alternating gets at most 2 × `fall` + `rise` probes in a row at the
//! confirm pace ([`Pacer`]), then the plain interval until a verdict.
//!
//! **Fast confirmation**: while the endpoint's results are heading for a verdict different from its
//! current one (a failure of an up or unknown endpoint, a success of a down or unknown one), the next
//! probe starts [`Confirm::interval`] after the previous start instead of `interval`, so the `fall`/`rise`
//! streak completes quickly. The loop keeps its own copy of the endpoint's fall/rise machine
//! ([`Pacer`], sans-I/O) to know that; a steady endpoint keeps the plain interval.
//!
//! **Re-checking the siblings**: the first failure of an up endpoint (the start of a
//! `fall` streak) also kicks the probe loops of the service's other endpoints ([`Recheck`]): each
//! probes at once, but never sooner than the confirm interval after its previous start and never
//! overlapping its own probe in flight (a kick during a probe is kept and served right after it).
//! The service core waits for those results before it removes the failing endpoint
//! ([`crate::decide::service`], `recheck_bound`), so when every endpoint fails at once the all-down
//! policy sees the whole failure before the first endpoint is confirmed down, and a lone failure is
//! removed after `fall` quick probes as before. A kicked probe that finds its endpoint steady keeps
//! the endpoint's staggered slot.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::health::{Health, HealthMachine};
use super::lag::LagHandle;
use super::probe::{self, Probe, ProbeResult};
use super::pump::{ReportSink, Slot};

/// Where a probe loop sends its reports: a channel (bounded: a full one makes the loop wait), or the
/// node's [`ReportPump`](super::pump::ReportPump).
#[derive(Debug, Clone)]
pub enum ReportTx {
    /// A bounded channel.
    Channel(mpsc::Sender<ProbeReport>),
    /// The pump, through one service's route.
    Pump(ReportSink),
}

/// Room for one report, where a [`ReportTx`] sends it.
enum Room<'a> {
    Channel(mpsc::Permit<'a, ProbeReport>),
    Pump(Slot<'a>),
}

impl Room<'_> {
    /// Sends `report`; `urgent` (a verdict change) skips the pump's batching. A channel sends at
    /// once anyway.
    fn send(self, report: ProbeReport, urgent: bool) {
        match self {
            Room::Channel(permit) => permit.send(report),
            Room::Pump(slot) if urgent => slot.send_urgent(report),
            Room::Pump(slot) => slot.send(report),
        }
    }
}

impl ReportTx {
    /// Waits for room for one report; `None` once the receiver is gone. One future whichever the
    /// way, so that a probe loop's state holds the larger of the two, not both.
    fn reserve(&self) -> impl Future<Output = Option<Room<'_>>> + Send + '_ {
        match self {
            ReportTx::Channel(tx) => {
                Either::Left(async move { tx.reserve().await.ok().map(Room::Channel) })
            }
            ReportTx::Pump(sink) => Either::Right(async move {
                match sink.try_reserve() {
                    Ok(Some(slot)) => Some(Room::Pump(slot)),
                    Ok(None) => sink.reserve().await.ok().map(Room::Pump),
                    Err(_) => None,
                }
            }),
        }
    }
}

impl From<mpsc::Sender<ProbeReport>> for ReportTx {
    fn from(tx: mpsc::Sender<ProbeReport>) -> Self {
        ReportTx::Channel(tx)
    }
}

impl From<ReportSink> for ReportTx {
    fn from(sink: ReportSink) -> Self {
        ReportTx::Pump(sink)
    }
}

/// One probe result, tagged with its endpoint.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The endpoint probed.
    pub endpoint: IpAddr,
    /// What happened.
    pub result: ProbeResult,
    /// When the probe started.
    pub started: Instant,
    /// When the probe finished.
    pub at: Instant,
}

/// Timing of one endpoint's probe loop.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Time between probe starts.
    pub interval: Duration,
    /// Hard limit of one probe.
    pub timeout: Duration,
    /// Delay of the first probe.
    pub offset: Duration,
    /// Fast confirmation; `None`: always `interval`.
    pub confirm: Option<Confirm>,
    /// Links to the probe loops of the service's other endpoints; `None`: no re-checks.
    pub recheck: Option<Recheck>,
    /// The verdict the endpoint already has (carried over a reload): fast confirmation starts from
    /// it, not from unknown.
    pub known: Health,
}

/// One probe loop's link to the loops of its service's other endpoints (see the module
/// documentation): it can kick them all, and be kicked by any of them.
#[derive(Debug, Clone)]
pub struct Recheck {
    kicks: Arc<[Notify]>,
    index: usize,
}

impl Recheck {
    /// The links of a service's `count` endpoints, one per endpoint in order.
    pub fn group(count: usize) -> Vec<Recheck> {
        let kicks: Arc<[Notify]> = (0..count).map(|_| Notify::new()).collect();
        (0..count)
            .map(|index| Recheck {
                kicks: kicks.clone(),
                index,
            })
            .collect()
    }

    /// Asks every other loop of the group to probe now. A loop that is probing keeps the kick for
    /// when its probe ends; several kicks before it serves one count once.
    pub fn kick_siblings(&self) {
        for (i, kick) in self.kicks.iter().enumerate() {
            if i != self.index {
                kick.notify_one();
            }
        }
    }

    /// Resolves when a sibling kicked this loop.
    async fn kicked(&self) {
        if let Some(kick) = self.kicks.get(self.index) {
            kick.notified().await;
        }
    }
}

/// What [`Pacer::next`] decides after one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// The gap between this probe's start and the next one's.
    pub gap: Duration,
    /// This failure starts a `fall` streak of an up endpoint: re-check the siblings.
    pub recheck_siblings: bool,
    /// This result turns an up verdict into down or a down one into up: its report should reach
    /// the service without waiting to be batched. A first verdict (from unknown) is not urgent:
    /// at start every endpoint gets one.
    pub urgent: bool,
}

/// Fast confirmation settings of one probe loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirm {
    /// Time between probe starts while a verdict change is being confirmed.
    pub interval: Duration,
    /// The service's `fall`.
    pub fall: u32,
    /// The service's `rise`.
    pub rise: u32,
    /// The loss-aware fall of the service's health machines (the probe interval when on, as
    /// [`HealthMachine::with_adaptive_fall`] takes it), so that the pace follows the same verdicts.
    pub adaptive_fall: Option<Duration>,
}

/// Chooses the gap before the next probe (sans-I/O): [`Confirm::interval`] while the results are
/// heading for another verdict, the plain interval otherwise.
#[derive(Debug, Clone)]
pub struct Pacer {
    confirm: Confirm,
    machine: HealthMachine,
    /// Probes run at the confirm pace in a row since the last verdict or steady result.
    confirming: u32,
}

impl Pacer {
    /// A pacer for an endpoint without a verdict yet.
    pub fn new(confirm: Confirm) -> Self {
        Pacer::knowing(confirm, Health::Unknown)
    }

    /// A pacer for an endpoint whose verdict is `known` (carried over a reload): results that
    /// confirm it run at the plain interval from the first one.
    pub fn knowing(confirm: Confirm, known: Health) -> Self {
        Pacer {
            confirm,
            machine: HealthMachine::with_state(confirm.fall, confirm.rise, known)
                .with_adaptive_fall(confirm.adaptive_fall),
            confirming: 0,
        }
    }

    /// Most probes in a row at the confirm pace before a verdict: enough for the longest streak a
    /// verdict can need (the loss-aware fall asks for up to twice `fall`) plus a `rise`. Results
    /// that keep alternating (an endpoint that never settles) would otherwise be confirmed for
    /// ever, at ten times the probe rate; past this they wait the plain interval until a verdict.
    fn confirm_budget(&self) -> u32 {
        self.confirm
            .fall
            .saturating_mul(2)
            .saturating_add(self.confirm.rise)
    }

    /// Feeds one result; returns the gap between this probe's start and the next one's.
    pub fn next_gap(&mut self, ok: bool, interval: Duration) -> Duration {
        self.next(ok, interval).gap
    }

    /// Feeds one result; returns the gap to the next probe and whether to re-check the siblings.
    pub fn next(&mut self, ok: bool, interval: Duration) -> Pace {
        let streak_starts =
            !ok && self.machine.streaks().1 == 0 && self.machine.state() == Health::Up;
        let transition = self.machine.observe(ok, Duration::ZERO, "");
        if transition.is_some() {
            self.confirming = 0;
        }
        // The results are heading for another verdict (a failure of an up or unknown endpoint, a
        // success of a down or unknown one).
        let changing = self.machine.heading().is_some();
        if !changing {
            self.confirming = 0;
        }
        let gap = if changing && self.confirming < self.confirm_budget() {
            self.confirming += 1;
            self.confirm.interval.min(interval)
        } else {
            interval
        };
        Pace {
            gap,
            recheck_siblings: streak_starts,
            urgent: transition.is_some_and(|t| t.from != Health::Unknown),
        }
    }
}

impl Schedule {
    /// The schedule of endpoint `index` of `count`, offsets spread evenly over one interval.
    pub fn staggered(interval: Duration, timeout: Duration, index: usize, count: usize) -> Self {
        let count = count.max(1) as u32;
        Schedule {
            interval,
            timeout,
            offset: interval / count * (index as u32 % count),
            confirm: None,
            recheck: None,
            known: Health::Unknown,
        }
    }

    /// This schedule shifted by the phase of service `key` among `count` staggered endpoints: a
    /// fraction of the gap between two of them (`interval / count`), the same for every endpoint of
    /// the service and on every start (from a hash of `key`). Services staggered alike probed at
    /// the same instants: 100 services of 100 endpoints made a burst of 100 probes every 10 ms, and
    /// with few probe slots those bursts waited for slots while every endpoint answered in 1 ms.
    pub fn phased(self, key: &str, count: usize) -> Self {
        // FNV-1a: stable across runs and builds (std's hasher is seeded per process).
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let fraction = (hash >> 11) as f64 / (1u64 << 53) as f64;
        let gap = self.interval / count.max(1) as u32;
        Schedule {
            offset: self.offset + gap.mul_f64(fraction),
            ..self
        }
    }

    /// This schedule with fast confirmation at `interval` for a service's `fall` and `rise`; `None`
    /// turns it off.
    pub fn confirming(self, interval: Option<Duration>, fall: u32, rise: u32) -> Self {
        Schedule {
            confirm: interval.map(|interval| Confirm {
                interval,
                fall,
                rise,
                adaptive_fall: None,
            }),
            ..self
        }
    }

    /// This schedule's fast confirmation following health machines with the loss-aware fall on
    /// (`true`: at this schedule's interval) or off.
    pub fn adapting_fall(self, on: bool) -> Self {
        let interval = self.interval;
        Schedule {
            confirm: self.confirm.map(|c| Confirm {
                adaptive_fall: on.then_some(interval),
                ..c
            }),
            ..self
        }
    }

    /// This schedule linked to its siblings' loops (only while fast confirmation is on: a kicked
    /// probe runs at the confirm pace).
    pub fn rechecking(self, recheck: Option<Recheck>) -> Self {
        Schedule {
            recheck: recheck.filter(|_| self.confirm.is_some()),
            ..self
        }
    }

    /// This schedule for an endpoint whose verdict is already `known` (carried over a reload):
    /// fast confirmation confirms only a change from it. Without it, every endpoint's first result
    /// after a reload was confirmed at the confirm pace as if it had no verdict: at 10,000
    /// endpoints with `rise = 2`, 10,000 extra probes within one confirm interval.
    pub fn knowing(self, known: Health) -> Self {
        Schedule { known, ..self }
    }
}

/// Spawns the probe loop of one endpoint into `tasks`. It ends when `cancel` fires, the receiver is
/// dropped, or `tasks` is dropped or shut down.
pub fn spawn_probe_loop(
    tasks: &mut JoinSet<()>,
    endpoint: IpAddr,
    probe: Box<dyn Probe>,
    schedule: Schedule,
    report_tx: impl Into<ReportTx>,
    cancel: CancellationToken,
) -> AbortHandle {
    spawn_watched_probe_loop(tasks, endpoint, probe, schedule, None, report_tx, cancel)
}

/// [`spawn_probe_loop`], with the runtime's lateness watched by `lag`: a failed probe during which
/// rrguard itself was late ([`LagHandle::judge`]) abstains. It is counted in `lag` and reported to
/// nobody, so it moves neither the endpoint's health machine nor fast confirmation, and the next
/// probe comes an interval later as usual. While the runtime is overloaded
/// ([`LagHandle::overloaded`]), fast confirmation waits the plain interval (shed, counted in `lag`).
/// Each probe runs holding one of `lag`'s probe slots ([`LagHandle::slot`]), taken before the probe
/// starts, so the node never has more than `[node] max_probes_in_flight` probes in flight. The loop
/// runs on the probe engine's runtime ([`LagHandle::spawn`]).
pub fn spawn_watched_probe_loop(
    tasks: &mut JoinSet<()>,
    endpoint: IpAddr,
    probe: Box<dyn Probe>,
    schedule: Schedule,
    lag: Option<LagHandle>,
    report_tx: impl Into<ReportTx>,
    cancel: CancellationToken,
) -> AbortHandle {
    let report_tx = report_tx.into();
    match lag {
        Some(engine) => engine.spawn(tasks, |lag| {
            probe_loop(endpoint, probe, schedule, Some(lag), report_tx, cancel)
        }),
        None => tasks.spawn(probe_loop(
            endpoint, probe, schedule, None, report_tx, cancel,
        )),
    }
}

/// The loop [`spawn_watched_probe_loop`] runs, until `cancel` (at once, even mid-probe or while
/// waiting to send a report). Every endpoint has one, so its state is kept small: a report is
/// made only once the channel has room for it.
// Not an `async fn` on purpose: see the comment in the body.
#[allow(clippy::manual_async_fn)]
fn probe_loop(
    endpoint: IpAddr,
    probe: Box<dyn Probe>,
    schedule: Schedule,
    lag: Option<LagHandle>,
    report_tx: ReportTx,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    // A block, not an `async fn`: an `async fn` keeps its arguments twice in its state, as
    // arguments and as locals (rust-lang/rust#62958).
    async move {
        let mut pacer = schedule.confirm.map(|c| Pacer::knowing(c, schedule.known));
        let confirm_interval = schedule
            .confirm
            .map_or(schedule.interval, |c| c.interval.min(schedule.interval));
        // The endpoint's own grid: regular probes start at `anchor + k × interval`, whatever
        // delayed one of them, so endpoints released together (by a slot, a stall, a common
        // recovery) do not stay together.
        let now = Instant::now();
        let anchor = now.checked_add(schedule.offset).unwrap_or(now + FAR);
        let mut next = anchor;
        let mut last_start: Option<Instant> = None;
        loop {
            let kicked = tokio::select! {
                // A due slot wins over a kick; a kick left over is served at the confirm pace.
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(next) => false,
                _ = kicked(schedule.recheck.as_ref()) => true,
            };
            if kicked && let Some(earliest) = last_start.map(|t| t + confirm_interval) {
                // At the confirm pace, never faster.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(earliest) => {}
                }
            }
            // One of the node's probe slots: waiting for it delays this probe, never fails it.
            let slot = match &lag {
                Some(lag) => tokio::select! {
                    _ = cancel.cancelled() => return,
                    slot = lag.slot() => slot,
                },
                None => None,
            };
            let started = Instant::now();
            last_start = Some(started);
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = tokio::time::timeout(schedule.timeout, probe.probe()) => {
                    r.unwrap_or_else(|_| probe::timed_out(schedule.timeout))
                }
            };
            drop(slot);
            let now = Instant::now();
            if let Some(lag) = &lag
                && let Some(why) = lag.judge(&result, started, now, schedule.timeout)
            {
                lag.abstained(why);
                debug!(%endpoint, detail = %result.detail, ?why, "probe abstains: rrguard itself was late");
                next = next_slot(anchor, schedule.interval, started, now);
                continue;
            }
            let mut pace = match pacer.as_mut() {
                Some(p) => p.next(result.ok, schedule.interval),
                None => Pace {
                    gap: schedule.interval,
                    recheck_siblings: false,
                    urgent: false,
                },
            };
            if pace.gap < schedule.interval
                && let Some(lag) = &lag
                && lag.overloaded(now)
            {
                // Shed the extra probe: rrguard cannot keep up as it is.
                lag.shed_confirm();
                pace.gap = schedule.interval;
            }
            next = next_start(
                Planned {
                    anchor,
                    at: next,
                    kicked,
                },
                started,
                now,
                pace.gap,
                schedule.interval,
            );
            // Room first, then the report: `send` would keep the report in this loop's state while it
            // waits, and make every endpoint's task larger by the size of its future.
            let room = tokio::select! {
                _ = cancel.cancelled() => return,
                room = report_tx.reserve() => room,
            };
            let Some(room) = room else { return };
            room.send(
                ProbeReport {
                    endpoint,
                    result,
                    started,
                    at: now,
                },
                pace.urgent,
            );
            // After the report, so that the service core has this failure before the siblings'
            // re-checks.
            if pace.recheck_siblings
                && let Some(recheck) = &schedule.recheck
            {
                recheck.kick_siblings();
            }
        }
    }
}

/// Least time between the starts of two probes of one endpoint outside fast confirmation.
const MIN_GAP: Duration = Duration::from_millis(1);

/// What a probe loop planned for the probe that just ran.
#[derive(Debug, Clone, Copy)]
struct Planned {
    /// The start of the endpoint's grid: its first probe, `offset` after the loop began.
    anchor: Instant,
    /// When the probe was due.
    at: Instant,
    /// It ran because a sibling's failure kicked it, not because it was due.
    kicked: bool,
}

/// The next planned start after a probe that started at `started` and ended at `now`.
///
/// While a verdict change is being confirmed (`gap` < `interval`), the next probe comes `gap`
/// after this one was due (after it started, if it was kicked), or at once if that has passed: a
/// probe never overlaps the previous one. Otherwise the next probe takes [`next_slot`].
fn next_start(
    planned: Planned,
    started: Instant,
    now: Instant,
    gap: Duration,
    interval: Duration,
) -> Instant {
    if gap < interval {
        let from = if planned.kicked { started } else { planned.at };
        return (from + gap).max(now);
    }
    next_slot(planned.anchor, interval, started, now)
}

/// The regular start after a probe that started at `started` and ended at `now`: the endpoint's
/// first slot on its own grid (`anchor + k × interval`) after `started`, or at once if the probe
/// ended past that slot (it took longer than the interval, it waited for a probe slot, the
/// runtime stalled). Missed slots are not made up, and a late probe does not move the grid: the
/// probe after it is back on the endpoint's own slots. Counting from the late end instead put
/// every endpoint released by the same bottleneck on the same phase for good, each second's
/// probes in one burst (found with 300 endpoints and 20 probe slots after 100 of them hung for
/// 10 s); waiting for the slot after the missed one probed an endpoint whose `timeout` equals its
/// `interval` at half the rate while it hung.
fn next_slot(anchor: Instant, interval: Duration, started: Instant, now: Instant) -> Instant {
    on_grid(anchor, interval, started + MIN_GAP).max(now)
}

/// The first point of the grid `anchor + k × interval` (k ≥ 0) at or after `t`. Saturates far in the
/// future rather than overflow (an interval of years).
fn on_grid(anchor: Instant, interval: Duration, t: Instant) -> Instant {
    let Some(since) = t.checked_duration_since(anchor) else {
        return anchor;
    };
    let step = interval.as_nanos().max(1);
    let k = since.as_nanos().div_ceil(step);
    k.checked_mul(step)
        .and_then(|ns| u64::try_from(ns).ok())
        .and_then(|ns| anchor.checked_add(Duration::from_nanos(ns)))
        .unwrap_or_else(|| t + FAR)
}

/// "Never" for [`on_grid`]: a year (an `Instant` this far ahead cannot overflow).
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

async fn kicked(recheck: Option<&Recheck>) {
    match recheck {
        Some(r) => r.kicked().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::observe::lag::TICK;

    /// Takes `delay` per probe and records the peak number of concurrent runs.
    struct SlowProbe {
        delay: Duration,
        running: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Probe for SlowProbe {
        async fn probe(&self) -> ProbeResult {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            // A timed-out probe is dropped mid-sleep: count it as finished then too.
            let _running = Running(self.running.clone());
            tokio::time::sleep(self.delay).await;
            ProbeResult {
                ok: true,
                latency: self.delay,
                detail: "slow".to_owned(),
            }
        }
    }

    struct Running(Arc<AtomicUsize>);

    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn slow(delay: Duration) -> (Box<dyn Probe>, Arc<AtomicUsize>) {
        let peak = Arc::new(AtomicUsize::new(0));
        let p = SlowProbe {
            delay,
            running: Arc::new(AtomicUsize::new(0)),
            peak: peak.clone(),
        };
        (Box::new(p), peak)
    }

    #[tokio::test(start_paused = true)]
    async fn probes_every_interval_after_offset() {
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let (probe, _) = slow(Duration::from_millis(10));
        let start = Instant::now();
        let schedule = Schedule {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            offset: Duration::from_millis(250),
            confirm: None,
            recheck: None,
            known: Health::Unknown,
        };
        let mut tasks = JoinSet::new();
        spawn_probe_loop(
            &mut tasks,
            "192.0.2.1".parse().unwrap(),
            probe,
            schedule,
            tx,
            cancel.clone(),
        );
        let mut at = Vec::new();
        for _ in 0..3 {
            at.push(rx.recv().await.unwrap().at - start);
        }
        cancel.cancel();
        assert_eq!(
            at,
            vec![
                Duration::from_millis(260),
                Duration::from_millis(1260),
                Duration::from_millis(2260)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hard_timeout_cuts_probe_and_never_overlaps() {
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        // The probe would take 5 s; the interval is 1 s and the timeout 300 ms.
        let (probe, peak) = slow(Duration::from_secs(5));
        let schedule = Schedule {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(300),
            offset: Duration::ZERO,
            confirm: None,
            recheck: None,
            known: Health::Unknown,
        };
        let mut tasks = JoinSet::new();
        spawn_probe_loop(
            &mut tasks,
            "192.0.2.1".parse().unwrap(),
            probe,
            schedule,
            tx,
            cancel.clone(),
        );
        for _ in 0..4 {
            let r = rx.recv().await.unwrap();
            assert!(!r.result.ok);
            assert_eq!(r.result.detail, "timed out after 300ms");
        }
        cancel.cancel();
        assert_eq!(peak.load(Ordering::SeqCst), 1);
    }

    /// The times (ms from start) of the first `n` reports of one endpoint whose probes take `delay`,
    /// probed every second without fast confirmation (timeout 10 s), and the peak number of its
    /// probes running at once.
    async fn slow_reports(delay: Duration, n: usize) -> (Vec<u128>, usize) {
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let (probe, peak) = slow(delay);
        let start = Instant::now();
        let schedule = Schedule {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            offset: Duration::ZERO,
            confirm: None,
            recheck: None,
            known: Health::Unknown,
        };
        let mut tasks = JoinSet::new();
        spawn_probe_loop(
            &mut tasks,
            "192.0.2.1".parse().unwrap(),
            probe,
            schedule,
            tx,
            cancel.clone(),
        );
        let mut at = Vec::new();
        for _ in 0..n {
            at.push((rx.recv().await.unwrap().at - start).as_millis());
        }
        cancel.cancel();
        (at, peak.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn slow_probe_delays_next_instead_of_overlapping() {
        // The second probe starts at once: its slot (1 s) passed while the first ran.
        let (at, peak) = slow_reports(Duration::from_millis(1500), 2).await;
        assert_eq!(at, vec![1500, 3000]);
        assert_eq!(peak, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_just_longer_than_the_interval_is_not_halved() {
        // Each probe takes 1 ms more than the interval (a timeout equal to the interval ends just
        // after its slot): the next starts at once. Waiting for the slot after the missed one
        // probed at half the rate (1001, 3001, 5001).
        let (at, _) = slow_reports(Duration::from_millis(1001), 3).await;
        assert_eq!(at, vec![1001, 2002, 3003]);
    }

    /// Answers from a script (then ok forever), taking 10 ms per probe.
    struct ScriptProbe(std::sync::Mutex<std::collections::VecDeque<bool>>);

    #[async_trait]
    impl Probe for ScriptProbe {
        async fn probe(&self) -> ProbeResult {
            let ok = self.0.lock().unwrap().pop_front().unwrap_or(true);
            tokio::time::sleep(Duration::from_millis(10)).await;
            ProbeResult {
                ok,
                latency: Duration::from_millis(10),
                detail: String::new(),
            }
        }
    }

    /// Through the pump, the report that turns the endpoint down reaches the service as the probe
    /// ends; every other report waits for the pump's gathering, the first verdict (up) included.
    #[tokio::test(start_paused = true)]
    async fn a_verdict_change_skips_the_pumps_gathering() {
        use crate::observe::pump::{GATHER, ReportPump};
        let pump = ReportPump::new();
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(pump.clone().run(cancel.clone()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let route = pump.route(tx);
        let script = [true, true, false, false, false];
        let probe = ScriptProbe(std::sync::Mutex::new(script.iter().copied().collect()));
        let schedule =
            Schedule::staggered(Duration::from_secs(1), Duration::from_millis(500), 0, 1)
                .confirming(Some(Duration::from_millis(100)), 3, 2);
        spawn_probe_loop(
            &mut tasks,
            "192.0.2.1".parse().unwrap(),
            Box::new(probe),
            schedule,
            route.sink(),
            cancel.clone(),
        );
        let mut waited = Vec::new();
        for _ in 0..script.len() {
            let report = rx.recv().await.unwrap();
            waited.push(Instant::now() - report.at);
        }
        cancel.cancel();
        assert_eq!(
            waited,
            vec![GATHER, GATHER, GATHER, GATHER, Duration::ZERO],
            "only the third failure of an up endpoint goes at once"
        );
    }

    /// Runs `script` with interval 1 s, timeout 500 ms, offset 0 and `confirm`; returns the time of each
    /// report (ms since start) and the transitions of a health machine fed with them.
    async fn run_script(
        script: &[bool],
        confirm: Option<Duration>,
        fall: u32,
        rise: u32,
    ) -> (Vec<u64>, Vec<(u64, Health)>) {
        run_script_knowing(script, confirm, fall, rise, Health::Unknown).await
    }

    /// [`run_script`] for an endpoint whose verdict is already `known` (as after a reload).
    async fn run_script_knowing(
        script: &[bool],
        confirm: Option<Duration>,
        fall: u32,
        rise: u32,
        known: Health,
    ) -> (Vec<u64>, Vec<(u64, Health)>) {
        let (tx, mut rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let probe = ScriptProbe(std::sync::Mutex::new(script.iter().copied().collect()));
        let schedule =
            Schedule::staggered(Duration::from_secs(1), Duration::from_millis(500), 0, 1)
                .confirming(confirm, fall, rise)
                .knowing(known);
        let mut tasks = JoinSet::new();
        let start = Instant::now();
        spawn_probe_loop(
            &mut tasks,
            "192.0.2.1".parse().unwrap(),
            Box::new(probe),
            schedule,
            tx,
            cancel.clone(),
        );
        let mut machine = HealthMachine::with_state(fall, rise, known);
        let (mut at, mut verdicts) = (Vec::new(), Vec::new());
        for _ in script {
            let r = rx.recv().await.unwrap();
            let ms = (r.at - start).as_millis() as u64;
            at.push(ms);
            if let Some(t) = machine.observe(r.result.ok, r.result.latency, "") {
                verdicts.push((ms, t.to));
            }
        }
        cancel.cancel();
        (at, verdicts)
    }

    #[tokio::test(start_paused = true)]
    async fn fast_confirmation_probes_at_confirm_interval_until_verdict() {
        let script = [
            true, true, true, false, false, false, false, true, true, true,
        ];
        let (at, verdicts) = run_script(&script, Some(Duration::from_millis(100)), 3, 2).await;
        // Reports come 10 ms after each start. Unknown -> up: starts 0, 100; up -> down: failures
        // start at 2000, 2100, 2200; down -> up: 4000, 4100; steady in between: on the endpoint's
        // grid, every second from its first probe, whatever the confirmations did.
        assert_eq!(
            at,
            vec![10, 110, 1010, 2010, 2110, 2210, 3010, 4010, 4110, 5010]
        );
        assert_eq!(
            verdicts,
            vec![(110, Health::Up), (2210, Health::Down), (4110, Health::Up)]
        );
    }

    /// After a reload the endpoints keep their verdicts, and so does fast confirmation: a steady
    /// up endpoint is probed at the plain interval from its first probe (it was confirmed at the
    /// confirm pace as if new: 10,000 extra probes at once at 10,000 endpoints), and a change from
    /// the known verdict is still confirmed fast.
    #[tokio::test(start_paused = true)]
    async fn a_verdict_carried_over_a_reload_is_not_confirmed_again() {
        let confirm = Some(Duration::from_millis(100));
        let steady = [true, true, true];
        let (fresh, _) = run_script(&steady, confirm, 3, 2).await;
        assert_eq!(fresh, vec![10, 110, 1010], "no verdict yet: confirmed fast");
        let (at, verdicts) = run_script_knowing(&steady, confirm, 3, 2, Health::Up).await;
        assert_eq!(at, vec![10, 1010, 2010]);
        assert!(verdicts.is_empty());
        let failing = [false, false, false, true];
        let (at, verdicts) = run_script_knowing(&failing, confirm, 3, 2, Health::Up).await;
        assert_eq!(at, vec![10, 110, 210, 1010]);
        assert_eq!(verdicts, vec![(210, Health::Down)]);
    }

    /// Six endpoints whose probes take 300 ms each, under `lag`: the reports of the first two
    /// rounds, and the peak number of probes running at once.
    async fn six_slow_endpoints(lag: LagHandle) -> (Vec<ProbeReport>, usize) {
        let (tx, mut rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = JoinSet::new();
        for i in 0..6u8 {
            let probe = SlowProbe {
                delay: Duration::from_millis(300),
                running: running.clone(),
                peak: peak.clone(),
            };
            spawn_watched_probe_loop(
                &mut tasks,
                IpAddr::from([192, 0, 2, i]),
                Box::new(probe),
                Schedule {
                    offset: Duration::ZERO,
                    ..Schedule::staggered(Duration::from_secs(1), Duration::from_millis(500), 0, 1)
                },
                Some(lag.clone()),
                tx.clone(),
                cancel.clone(),
            );
        }
        let mut reports = Vec::new();
        for _ in 0..12 {
            reports.push(rx.recv().await.unwrap());
        }
        cancel.cancel();
        (reports, peak.load(Ordering::SeqCst))
    }

    /// Every endpoint has a probe loop for as long as it is configured: 10,000 endpoints hold
    /// 10,000 of these states. It was 968 bytes (the report kept across the wait for room in the
    /// channel, and the arguments twice, as an `async fn` keeps them); 752 with rustc 1.95, 800 since
    /// a report goes to a channel or to the pump (one future of either kind: 864 with one future
    /// of each, as two `select!`s held). The bound leaves room for compiler changes, not for
    /// another large future held across a wait.
    #[test]
    fn a_probe_loop_state_stays_small() {
        let (tx, _rx) = mpsc::channel(1);
        let pump = crate::observe::pump::ReportPump::new();
        let (pumped, _pumped_rx) = mpsc::unbounded_channel();
        let route = pump.route(pumped);
        for report_tx in [ReportTx::from(tx), route.sink().into()] {
            let state = probe_loop(
                "127.0.0.1".parse().unwrap(),
                Box::new(ScriptProbe(std::sync::Mutex::new(Default::default()))),
                Schedule::staggered(Duration::from_secs(1), Duration::from_millis(500), 0, 1),
                None,
                report_tx,
                CancellationToken::new(),
            );
            let bytes = std::mem::size_of_val(&state);
            assert!(bytes <= 848, "a probe loop's state is {bytes} bytes");
        }
    }

    /// A lag monitor with `slots` probe slots in `tasks`, on `runtime` if given, until `cancel`.
    fn monitor(
        tasks: &mut JoinSet<()>,
        cancel: &CancellationToken,
        slots: usize,
        runtime: Option<crate::runtime::ProbeThreads>,
    ) -> LagHandle {
        crate::observe::lag::spawn_lag_monitor(
            tasks,
            crate::state::NodeState::new(),
            cancel.clone(),
            slots,
            runtime,
        )
    }

    /// Reports the name of the thread it ran on.
    struct ThreadProbe;

    #[async_trait]
    impl Probe for ThreadProbe {
        async fn probe(&self) -> ProbeResult {
            ProbeResult {
                ok: true,
                latency: Duration::ZERO,
                detail: std::thread::current().name().unwrap_or("").to_owned(),
            }
        }
    }

    /// Given a runtime of its own, the probe engine runs its loops there, not on the caller's.
    #[tokio::test]
    async fn probe_loops_run_on_the_engines_own_runtime() {
        let engine = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("engine-under-test")
            .enable_all()
            .build()
            .unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let lag = monitor(
            &mut tasks,
            &cancel,
            4,
            Some(crate::runtime::ProbeThreads::one(engine.handle().clone())),
        );
        spawn_watched_probe_loop(
            &mut tasks,
            "127.0.0.1".parse().unwrap(),
            Box::new(ThreadProbe),
            Schedule::staggered(Duration::from_secs(1), Duration::from_millis(500), 0, 1),
            Some(lag),
            tx,
            cancel.clone(),
        );
        let report = rx.recv().await.unwrap();
        assert_eq!(report.result.detail, "engine-under-test");
        cancel.cancel();
        while tasks.join_next().await.is_some() {}
        engine.shutdown_background();
    }

    #[tokio::test(start_paused = true)]
    async fn probes_wait_for_a_slot_and_the_wait_never_fails_them() {
        let lag = LagHandle::bounded(Instant::now(), 2);
        let (reports, peak) = six_slow_endpoints(lag.clone()).await;
        assert_eq!(peak, 2);
        // 300 ms each against a 500 ms timeout: those that waited 600 ms for a slot still pass.
        assert!(reports.iter().all(|r| r.result.ok), "{reports:?}");
        assert!(lag.slot_waits() >= 4, "{} waits", lag.slot_waits());
        // The status document and the metrics show the slots and the waits.
        let status = lag.status(Instant::now());
        assert_eq!(status.max_probes_in_flight, 2);
        assert_eq!(status.probe_slot_waits, lag.slot_waits());
        assert!(status.probes_in_flight <= 2, "{status:?}");
        // Without the bound all six run at once.
        let (_, peak) = six_slow_endpoints(LagHandle::new(Instant::now())).await;
        assert_eq!(peak, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overloaded_runtime_sheds_fast_confirmation() {
        let (tx, mut rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let lag = LagHandle::new(start);
        // The runtime stalled for 300 ms before the first probe (at 400 ms): overloaded until 1.3 s.
        lag.tick(start, start + Duration::from_millis(300));
        let script = [true, true, true, true];
        let probe = ScriptProbe(std::sync::Mutex::new(script.iter().copied().collect()));
        let schedule = Schedule {
            offset: Duration::from_millis(400),
            ..Schedule::staggered(Duration::from_secs(1), Duration::from_millis(500), 0, 1)
                .confirming(Some(Duration::from_millis(100)), 3, 2)
        };
        let mut tasks = JoinSet::new();
        spawn_watched_probe_loop(
            &mut tasks,
            "192.0.2.1".parse().unwrap(),
            Box::new(probe),
            schedule,
            Some(lag.clone()),
            tx,
            cancel.clone(),
        );
        // The monitor's own ticks, on time from 300 ms on (the test plays the monitor).
        let ticker = {
            let lag = lag.clone();
            tokio::spawn(async move {
                let mut planned = start + Duration::from_millis(300) + TICK;
                loop {
                    tokio::time::sleep_until(planned).await;
                    lag.tick(planned, Instant::now());
                    planned += TICK;
                }
            })
        };
        let mut at = Vec::new();
        for _ in script {
            at.push((rx.recv().await.unwrap().at - start).as_millis() as u64);
        }
        cancel.cancel();
        ticker.abort();
        // The first success would be confirmed 100 ms later; overloaded, it waits the interval.
        // The endpoint is up after the second success; steady from then on.
        assert_eq!(at, vec![410, 1410, 2410, 3410]);
        assert_eq!(lag.confirms_shed(), 1);
        assert_eq!(lag.status(Instant::now()).confirmations_shed, 1);
        // Without the stall, the same script is confirmed at once.
        let (at, _) = run_script(&script, Some(Duration::from_millis(100)), 3, 2).await;
        assert_eq!(at, vec![10, 110, 1010, 2010]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_confirmation_every_probe_waits_the_interval() {
        let script = [true, true, false, false, false];
        let (at, verdicts) = run_script(&script, None, 3, 2).await;
        assert_eq!(at, vec![10, 1010, 2010, 3010, 4010]);
        assert_eq!(verdicts, vec![(1010, Health::Up), (4010, Health::Down)]);
    }

    #[tokio::test(start_paused = true)]
    async fn steady_and_noisy_endpoints_keep_the_plain_interval() {
        // Steady up after the first verdict: on the grid, 1 s apart.
        let (at, _) = run_script(&[true; 5], Some(Duration::from_millis(100)), 3, 2).await;
        assert_eq!(at, vec![10, 110, 1010, 2010, 3010]);
        // A lone failure of an up endpoint gets one quick re-check; the success that follows ends
        // the confirmation and the plain interval resumes.
        let script = [true, true, false, true, true];
        let (at, verdicts) = run_script(&script, Some(Duration::from_millis(100)), 3, 2).await;
        assert_eq!(at, vec![10, 110, 1010, 1110, 2010]);
        assert_eq!(verdicts, vec![(110, Health::Up)]);
        // Steady down: only the streak towards the first verdict is fast.
        let (at, _) = run_script(&[false; 5], Some(Duration::from_millis(100)), 3, 2).await;
        assert_eq!(at, vec![10, 110, 210, 1010, 2010]);
    }

    #[tokio::test(start_paused = true)]
    async fn confirmation_keeps_hard_timeout_and_never_overlaps() {
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        // Every probe hangs for 5 s: cut at 300 ms, and the next confirming one starts right after
        // it although the confirm interval (100 ms) has long passed. Down at 900; the next probe
        // takes the endpoint's next slot (1000).
        let (probe, peak) = slow(Duration::from_secs(5));
        let start = Instant::now();
        let schedule =
            Schedule::staggered(Duration::from_secs(1), Duration::from_millis(300), 0, 1)
                .confirming(Some(Duration::from_millis(100)), 3, 2);
        let mut tasks = JoinSet::new();
        spawn_probe_loop(
            &mut tasks,
            "192.0.2.1".parse().unwrap(),
            probe,
            schedule,
            tx,
            cancel.clone(),
        );
        let mut at = Vec::new();
        for _ in 0..4 {
            let r = rx.recv().await.unwrap();
            assert_eq!(r.result.detail, "timed out after 300ms");
            at.push((r.at - start).as_millis());
        }
        cancel.cancel();
        assert_eq!(at, vec![300, 600, 900, 1300]);
        assert_eq!(peak.load(Ordering::SeqCst), 1);
    }

    /// Passes until `fails_from` (by the probe's start), fails from then on; 10 ms per probe.
    struct FailsFrom(Instant);

    #[async_trait]
    impl Probe for FailsFrom {
        async fn probe(&self) -> ProbeResult {
            let ok = Instant::now() < self.0;
            tokio::time::sleep(Duration::from_millis(10)).await;
            ProbeResult {
                ok,
                latency: Duration::from_millis(10),
                detail: String::new(),
            }
        }
    }

    /// Is refused quickly, then times out while the runtime is starved (the clock jumps 300 ms while
    /// no task runs, as under CPU starvation), then passes.
    struct StarvedProbe(std::sync::Mutex<u32>);

    #[async_trait]
    impl Probe for StarvedProbe {
        async fn probe(&self) -> ProbeResult {
            let n = {
                let mut n = self.0.lock().unwrap();
                *n += 1;
                *n
            };
            if n == 2 {
                tokio::time::advance(Duration::from_millis(300)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if n == 2 {
                return probe::timed_out(Duration::from_millis(300));
            }
            ProbeResult {
                ok: n > 2,
                latency: Duration::from_millis(10),
                detail: format!("probe {n}"),
            }
        }
    }

    /// Two endpoints A and B of one service (offsets 0 and 500 ms), interval 1 s, confirm 100 ms,
    /// fall 3, rise 2; each fails from the given time (ms) on. Returns the report times (ms) of A and
    /// B until 3.4 s.
    async fn run_pair(a_fails: u64, b_fails: Option<u64>, recheck: bool) -> (Vec<u64>, Vec<u64>) {
        let (tx, mut rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut links = Recheck::group(2).into_iter();
        let mut tasks = JoinSet::new();
        for (i, (ip, fails)) in [(a, Some(a_fails)), (b, b_fails)].into_iter().enumerate() {
            let fails_from = start + Duration::from_millis(fails.unwrap_or(u64::MAX / 4));
            let schedule =
                Schedule::staggered(Duration::from_secs(1), Duration::from_millis(500), i, 2)
                    .confirming(Some(Duration::from_millis(100)), 3, 2)
                    .rechecking(links.next().filter(|_| recheck));
            spawn_probe_loop(
                &mut tasks,
                ip,
                Box::new(FailsFrom(fails_from)),
                schedule,
                tx.clone(),
                cancel.clone(),
            );
        }
        let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
        let end = start + Duration::from_millis(3400);
        while let Ok(Some(r)) = tokio::time::timeout_at(end, rx.recv()).await {
            let ms = (r.at - start).as_millis() as u64;
            if r.endpoint == a {
                at_a.push(ms);
            } else {
                at_b.push(ms);
            }
        }
        cancel.cancel();
        (at_a, at_b)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_failure_rechecks_the_sibling_once_and_keeps_its_pace() {
        let (a, b) = run_pair(2000, None, true).await;
        // A: up at 110, fails from its 2000 probe, down at 2210 after two 100 ms re-checks.
        assert_eq!(a, vec![10, 110, 1010, 2010, 2110, 2210, 3010]);
        // B: re-checked right after A's first failure (2010 + 10 ms), then back on its own slots.
        assert_eq!(b, vec![510, 610, 1510, 2020, 2510]);
        // Without the links, B keeps its slots only.
        let (a, b) = run_pair(2000, None, false).await;
        assert_eq!(a, vec![10, 110, 1010, 2010, 2110, 2210, 3010]);
        assert_eq!(b, vec![510, 610, 1510, 2510]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_all_at_once_failure_shows_on_the_sibling_before_the_first_is_confirmed() {
        let (a, b) = run_pair(2000, Some(2000), true).await;
        assert_eq!(a, vec![10, 110, 1010, 2010, 2110, 2210, 3010]);
        // B's re-check fails at 2020, before A's third failure (2210): the service core sees B in
        // doubt when A goes down. B's kick back to A does not make A probe faster than 100 ms.
        // Down at 2220, B goes back to its own slots (2500).
        assert_eq!(b, vec![510, 610, 1510, 2020, 2120, 2220, 2510]);
        // Without the links B's first failure comes at 2510, after A is down.
        let (_, b) = run_pair(2000, Some(2000), false).await;
        assert_eq!(b, vec![510, 610, 1510, 2510, 2610, 2710]);
    }

    /// Fast confirmation at `interval` for `fall` and `rise`, without the loss-aware fall.
    fn confirm_at(interval: Duration, fall: u32, rise: u32) -> Confirm {
        Confirm {
            interval,
            fall,
            rise,
            adaptive_fall: None,
        }
    }

    #[test]
    fn pacer_rechecks_siblings_only_when_a_fall_streak_starts() {
        let confirm = confirm_at(Duration::from_millis(100), 3, 2);
        let i = Duration::from_secs(1);
        let mut p = Pacer::new(confirm);
        let kicks: Vec<bool> = [true, true, false, false, false, false, true, false]
            .into_iter()
            .map(|ok| p.next(ok, i).recheck_siblings)
            .collect();
        // Up after two; the first failure kicks; the streak and the down endpoint's failures do
        // not; a failure right after one success of a down endpoint does not either.
        assert_eq!(
            kicks,
            vec![false, false, true, false, false, false, false, false]
        );
    }

    #[test]
    fn pacer_marks_only_a_changed_verdict_urgent() {
        let confirm = confirm_at(Duration::from_millis(100), 3, 2);
        let i = Duration::from_secs(1);
        let mut p = Pacer::new(confirm);
        let urgent: Vec<bool> = [
            true, true, // first verdict, up: not urgent
            false, false, false, // down on the third failure
            false, true, true, // up again on the second success
            false, true, false, // noise: no verdict
        ]
        .into_iter()
        .map(|ok| p.next(ok, i).urgent)
        .collect();
        assert_eq!(
            urgent,
            vec![
                false, false, false, false, true, false, false, true, false, false, false
            ]
        );
        // A first verdict of down is not urgent either.
        let mut p = Pacer::new(confirm);
        let first: Vec<bool> = [false; 3]
            .into_iter()
            .map(|ok| p.next(ok, i).urgent)
            .collect();
        assert_eq!(first, vec![false; 3]);
    }

    #[test]
    fn pacer_confirms_the_extra_failures_the_loss_aware_fall_needs() {
        let interval = Duration::from_millis(500);
        let confirm = confirm_at(Duration::from_millis(50), 3, 2);
        // Up, then one failure in five for 30 probes, then dead.
        let mut results = vec![true, true];
        results.extend((0..30).map(|i| i % 5 != 0));
        results.extend([false; 6]);
        let gaps = |confirm: Confirm| {
            let mut p = Pacer::new(confirm);
            let gaps: Vec<u64> = results
                .iter()
                .map(|&ok| p.next_gap(ok, interval).as_millis() as u64)
                .collect();
            gaps[32..].to_vec()
        };
        // Plain fall: down after the third failure, the plain interval resumes.
        assert_eq!(gaps(confirm), vec![50, 50, 500, 500, 500, 500]);
        // Loss-aware fall (the same rule as the service's health machines): flaky (6 of the 29
        // probes before the streak failed, the rate taken is 0.29), so down after the sixth, the
        // cap, each confirmed at the quick pace.
        let adaptive = Schedule::staggered(interval, interval, 0, 1)
            .confirming(Some(confirm.interval), 3, 2)
            .adapting_fall(true)
            .confirm
            .unwrap();
        assert_eq!(adaptive.adaptive_fall, Some(interval));
        assert_eq!(gaps(adaptive), vec![50, 50, 50, 50, 50, 500]);
    }

    /// Runs [`StarvedProbe`] three times (interval 1 s, timeout 500 ms), watched by a lag monitor or
    /// not; returns the reported (ms since start, detail) and the abstentions counted.
    async fn run_starved(watched: bool) -> (Vec<(u64, String)>, u64) {
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let lag = monitor(
            &mut tasks,
            &cancel,
            crate::config::DEFAULT_MAX_PROBES_IN_FLIGHT,
            None,
        );
        let start = Instant::now();
        let schedule =
            Schedule::staggered(Duration::from_secs(1), Duration::from_millis(500), 0, 1);
        spawn_watched_probe_loop(
            &mut tasks,
            "192.0.2.1".parse().unwrap(),
            Box::new(StarvedProbe(std::sync::Mutex::new(0))),
            schedule,
            watched.then(|| lag.clone()),
            tx,
            cancel.clone(),
        );
        let mut got = Vec::new();
        while got.len() < 2 {
            let r = rx.recv().await.unwrap();
            got.push(((r.at - start).as_millis() as u64, r.result.detail));
        }
        // The third probe has been judged by now (reports come in order).
        if !watched {
            let r = rx.recv().await.unwrap();
            got.push(((r.at - start).as_millis() as u64, r.result.detail));
        }
        cancel.cancel();
        let abstained = lag.abstained_total().iter().map(|(_, n)| n).sum();
        (got, abstained)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_while_rrguard_was_late_abstains() {
        let (got, abstained) = run_starved(true).await;
        // Probe 2 failed during a 300 ms stall: neither reported nor counted against the endpoint;
        // the quick failure before it and the success after it are reported.
        assert_eq!(
            got,
            vec![(10, "probe 1".to_owned()), (2010, "probe 3".to_owned())]
        );
        assert_eq!(abstained, 1);
        // Without the lag monitor the same failure counts.
        let (got, abstained) = run_starved(false).await;
        assert_eq!(
            got.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>(),
            ["probe 1", "timed out after 300ms", "probe 3"]
        );
        assert_eq!(abstained, 0);
    }

    #[test]
    fn pacer_confirm_interval_never_exceeds_interval() {
        let confirm = confirm_at(Duration::from_secs(5), 2, 2);
        let mut p = Pacer::new(confirm);
        assert_eq!(
            p.next_gap(false, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn an_endpoint_that_never_settles_is_not_confirmed_for_ever() {
        let confirm = confirm_at(Duration::from_millis(100), 3, 2);
        let i = Duration::from_secs(1);
        let fast = Duration::from_millis(100);
        // Alternating from the start: no verdict ever. 2 × fall + rise = 8 probes at the confirm
        // pace, then the plain interval.
        let mut p = Pacer::new(confirm);
        let gaps: Vec<Duration> = (0..12).map(|k| p.next_gap(k % 2 == 0, i)).collect();
        assert_eq!(gaps[..8], [fast; 8]);
        assert_eq!(gaps[8..], [i; 4]);
        // A verdict at last gives fast confirmation back for the next change.
        for _ in 0..2 {
            p.next_gap(true, i);
        }
        assert_eq!(p.next_gap(false, i), fast);
        // An up endpoint failing now and then is confirmed each time: a success ends each run.
        let mut p = Pacer::new(confirm);
        p.next_gap(true, i);
        p.next_gap(true, i);
        for _ in 0..20 {
            assert_eq!(p.next_gap(false, i), fast);
            assert_eq!(p.next_gap(true, i), i);
        }
    }

    /// Hangs every probe started before `until` until then; later ones take 10 ms.
    struct HangsUntil(Instant);

    #[async_trait]
    impl Probe for HangsUntil {
        async fn probe(&self) -> ProbeResult {
            let end = self.0.max(Instant::now() + Duration::from_millis(10));
            tokio::time::sleep_until(end).await;
            ProbeResult {
                ok: true,
                latency: Duration::from_millis(10),
                detail: String::new(),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_released_together_go_back_to_their_own_slots() {
        // Two endpoints staggered 500 ms apart whose first probes both end at 1.7 s (a shared
        // stall, a wait for one probe slot). Both missed a slot (1.0 and 1.5 s) and probe again at
        // once; counting from there put both on the same phase for good (1.7, 2.7, 3.7 s ...);
        // each goes back to its own grid instead (2.0, 3.0 and 2.5, 3.5 s).
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let until = start + Duration::from_millis(1700);
        let mut tasks = JoinSet::new();
        for i in 0..2u8 {
            spawn_probe_loop(
                &mut tasks,
                IpAddr::from([192, 0, 2, i]),
                Box::new(HangsUntil(until)),
                Schedule::staggered(Duration::from_secs(1), Duration::from_secs(5), i.into(), 2),
                tx.clone(),
                cancel.clone(),
            );
        }
        let mut at: Vec<(u8, u64)> = Vec::new();
        for _ in 0..8 {
            let r = rx.recv().await.unwrap();
            let IpAddr::V4(v4) = r.endpoint else {
                unreachable!()
            };
            at.push((v4.octets()[3], (r.at - start).as_millis() as u64));
        }
        cancel.cancel();
        at.sort_by_key(|&(_, ms)| ms);
        assert_eq!(
            at,
            vec![
                (0, 1700),
                (1, 1700),
                (0, 1710),
                (1, 1710),
                (0, 2010),
                (1, 2510),
                (0, 3010),
                (1, 3510)
            ]
        );
    }

    #[test]
    fn the_grid_takes_the_next_slot_and_never_overflows() {
        let anchor = Instant::now();
        let i = Duration::from_secs(1);
        let ms = Duration::from_millis;
        assert_eq!(on_grid(anchor, i, anchor), anchor);
        assert_eq!(on_grid(anchor, i, anchor + ms(1)), anchor + i);
        assert_eq!(on_grid(anchor, i, anchor + ms(2000)), anchor + 2 * i);
        assert_eq!(on_grid(anchor, i, anchor + ms(2001)), anchor + 3 * i);
        // Before the grid starts: its first point.
        assert_eq!(on_grid(anchor + i, i, anchor), anchor + i);
        // An interval of centuries does not overflow.
        let huge = Duration::from_secs(u64::MAX / 4);
        assert!(on_grid(anchor, huge, anchor + ms(1)) > anchor);
        // A probe on time takes the next slot, so does one that started late and ended before
        // it; one that ended past it goes at once (and the next is on the grid again).
        let planned = Planned {
            anchor,
            at: anchor + 3 * i,
            kicked: false,
        };
        let next = |started: u64, now: u64| {
            next_start(planned, anchor + ms(started), anchor + ms(now), i, i) - anchor
        };
        assert_eq!(next(3000, 3000), ms(4000));
        assert_eq!(next(3000, 3010), ms(4000));
        assert_eq!(next(3800, 3810), ms(4000));
        assert_eq!(next(4500, 4510), ms(5000));
        // A timeout equal to the interval: ended just past its slot, the next starts at once
        // (waiting for the slot after halved the probe rate of a hanging endpoint).
        assert_eq!(next(3000, 4001), ms(4001));
        assert_eq!(next(4001, 5002), ms(5002));
        // Back from a late start: the slot after it.
        assert_eq!(next(5002, 5010), ms(6000));
    }

    #[test]
    fn services_are_phased_apart_within_their_stagger() {
        let i = Duration::from_secs(1);
        let offsets = |key: &str| -> Vec<Duration> {
            (0..4)
                .map(|k| Schedule::staggered(i, i, k, 4).phased(key, 4).offset)
                .collect()
        };
        let (a, b) = (offsets("a.example.test."), offsets("b.example.test."));
        // Each keeps its endpoints 250 ms apart, within the interval, and its phase on every start.
        for o in [&a, &b] {
            assert!(
                o.windows(2)
                    .all(|w| w[1] - w[0] == Duration::from_millis(250))
            );
            assert!(o[0] < Duration::from_millis(250) && o[3] < i, "{o:?}");
        }
        assert_eq!(a, offsets("a.example.test."));
        // Two services staggered alike do not probe at the same instants.
        assert_ne!(a[0], b[0]);
        // Many services spread over the gap instead of sharing one phase.
        let phases: std::collections::BTreeSet<u128> = (0..100)
            .map(|n| offsets(&format!("s{n}.bench.test."))[0].as_millis() / 25)
            .collect();
        assert!(phases.len() >= 8, "{phases:?}");
    }

    #[test]
    fn staggered_offsets_spread_over_interval() {
        let i = Duration::from_secs(1);
        let offs: Vec<Duration> = (0..4)
            .map(|k| Schedule::staggered(i, i, k, 4).offset)
            .collect();
        assert_eq!(
            offs,
            vec![
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_millis(500),
                Duration::from_millis(750)
            ]
        );
    }
}
