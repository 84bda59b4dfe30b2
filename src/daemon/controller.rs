//! The service controller: one task per service, the I/O shell around [`ServiceCore`].
//!
//! It runs its endpoints' probe loops and hands every result to one lane per writer of the service.
//! A lane is a task with its own core: it follows the cluster [`View`] and executes what its core
//! asks for: votes (first lane only) go to the agreement actor, reads and writes to its [`Writer`],
//! events to the log. Every decision (when to sync, hold, back off, re-plan, reconcile) is the
//! core's; see [`crate::decide::service`]. On a node that does not lead, a lane of a shared writer
//! only probes and votes; a lane of a per-node writer writes there too
//! ([`ServiceView::for_writer`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::act::{WriteError, Writer};
use crate::agree::{View, VoteKey};
use crate::config::ServiceConfig;
use crate::decide::Health;
use crate::decide::service::{Action, Event, ServiceCore, ServiceView};
use crate::observe::health::HealthMachine;
use crate::observe::lag::LagHandle;
use crate::observe::probe;
use crate::observe::pump::{ReportPump, Route};
use crate::observe::scheduler::{
    ProbeReport, Recheck, ReportTx, Schedule, spawn_watched_probe_loop,
};
use crate::state::{self, EventKind, NodeState};

/// Drives one service: its probe loops, and one [`Lane`] per writer of the service.
pub(super) struct Controller {
    pub(super) svc: Arc<ServiceConfig>,
    lanes: Vec<Lane>,
    /// Failed probes while rrguard itself was late abstain ([`crate::observe::lag`]).
    lag: Option<LagHandle>,
    /// Carries the probe reports to the lanes, many per wake-up ([`crate::observe::pump`]);
    /// `None`: a channel of the controller's own.
    pump: Option<ReportPump>,
}

impl Controller {
    /// `lanes` pairs each writer of the service with its core, in configured order; the first lane
    /// votes for the service (every lane's core sees the same probes, so they agree).
    pub(super) fn new(
        svc: ServiceConfig,
        lanes: Vec<(ServiceCore, Arc<dyn Writer>)>,
        state: NodeState,
        votes_tx: mpsc::UnboundedSender<(VoteKey, Health)>,
        view_rx: watch::Receiver<Arc<View>>,
    ) -> Self {
        let svc = Arc::new(svc);
        let lanes = lanes
            .into_iter()
            .enumerate()
            .map(|(i, (core, writer))| Lane {
                svc: svc.clone(),
                per_node: writer.capabilities().per_node,
                local: svc.self_register.is_some(),
                core,
                writer,
                state: state.clone(),
                votes_tx: (i == 0).then(|| votes_tx.clone()),
                view_rx: view_rx.clone(),
                isolated: false,
                seen: None,
                shown: Shown::default(),
            })
            .collect();
        Controller {
            svc,
            lanes,
            lag: None,
            pump: None,
        }
    }

    /// This controller with its probe loops watched by `lag`: a failure while rrguard itself was
    /// late abstains instead of counting against the endpoint.
    pub(super) fn watched_by(self, lag: LagHandle) -> Self {
        Controller {
            lag: Some(lag),
            ..self
        }
    }

    /// This controller, its probe reports carried by `pump`.
    pub(super) fn pumped_by(self, pump: ReportPump) -> Self {
        Controller {
            pump: Some(pump),
            ..self
        }
    }

    /// Runs until `cancel`; returns the first lane's health machines, to carry over a reload.
    pub(super) async fn run(self, cancel: CancellationToken) -> BTreeMap<IpAddr, HealthMachine> {
        let probes = cancel.child_token();
        let count = self.svc.endpoints.len();
        // Each lane runs as its own task: a writer that is slow or failing never delays another
        // (DESIGN.md invariant 10). Reports reach every lane; a lane that is busy writing gets them
        // queued (unbounded, but bounded in practice by the probe rate over one write's timeout).
        let (lane_txs, lane_rxs): (Vec<_>, Vec<_>) =
            self.lanes.iter().map(|_| mpsc::unbounded_channel()).unzip();
        // With the pump, a service with one writer gets its reports straight into its lane's
        // queue; with several, through this task, which copies them to every lane. Without it,
        // through a channel with room for a few rounds of results: a full one makes probe loops
        // wait, never overlap.
        let (report_tx, mut inbox, route): (ReportTx, Inbox, Option<Route>) =
            match (&self.pump, lane_txs.as_slice()) {
                (Some(pump), [only]) => {
                    let route = pump.route(only.clone());
                    (route.sink().into(), Inbox::None, Some(route))
                }
                (Some(pump), _) => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let route = pump.route(tx);
                    (route.sink().into(), Inbox::Unbounded(rx), Some(route))
                }
                (None, _) => {
                    let (tx, rx) = mpsc::channel(count * 4 + 8);
                    (tx.into(), Inbox::Bounded(rx), None)
                }
            };
        // The probe loops live in this controller's set: they end with it, whatever happens.
        let mut probe_tasks = JoinSet::new();
        // A failure being confirmed re-checks the other endpoints at once (fast confirmation only).
        let mut rechecks = Recheck::group(count).into_iter();
        // The verdicts carried over a reload (unknown at start): fast confirmation starts from them.
        let known: BTreeMap<IpAddr, Health> = self
            .lanes
            .first()
            .map(|l| {
                l.core
                    .machines()
                    .iter()
                    .map(|(ip, m)| (*ip, m.state()))
                    .collect()
            })
            .unwrap_or_default();
        for (i, ip) in self.svc.endpoints.iter().enumerate() {
            let recheck = rechecks.next();
            match probe::build(&self.svc.check, *ip, self.svc.timeout) {
                Ok(p) => {
                    let schedule =
                        Schedule::staggered(self.svc.interval, self.svc.timeout, i, count)
                            .phased(&self.svc.fqdn, count)
                            .confirming(self.svc.confirm_interval, self.svc.fall, self.svc.rise)
                            .adapting_fall(self.svc.adaptive_fall)
                            .rechecking(recheck)
                            .knowing(known.get(ip).copied().unwrap_or(Health::Unknown));
                    spawn_watched_probe_loop(
                        &mut probe_tasks,
                        *ip,
                        p,
                        schedule,
                        self.lag.clone(),
                        report_tx.clone(),
                        probes.clone(),
                    );
                }
                Err(e) => error!(service = %self.svc.fqdn, endpoint = %ip, "cannot probe: {e}"),
            }
        }
        drop(report_tx);
        let mut lane_tasks = JoinSet::new();
        for (i, (lane, rx)) in self.lanes.into_iter().zip(lane_rxs).enumerate() {
            let cancel = cancel.clone();
            lane_tasks.spawn(async move { (i, lane.run(cancel, rx).await) });
        }
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                // Lanes end only when cancelled: one that ends now panicked. Take the controller
                // down with it, so that the supervisor restarts the whole service (fresh lanes)
                // instead of leaving one writer unmanaged until the next reload.
                Some(joined) = lane_tasks.join_next() => {
                    if let Err(e) = joined
                        && e.is_panic()
                    {
                        probes.cancel();
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
                Some(report) = inbox.recv() => {
                    // The last lane takes the report itself: with one writer, no copy per probe.
                    if let Some((last, others)) = lane_txs.split_last() {
                        for tx in others {
                            let _ = tx.send(report.clone());
                        }
                        let _ = last.send(report);
                    }
                }
            }
        }
        probes.cancel();
        // Cancelled loops return at once, even mid-probe; one waiting to send a report gets an error
        // once the receiver is gone.
        drop(inbox);
        while probe_tasks.join_next().await.is_some() {}
        drop(route);
        drop(lane_txs);
        let mut first = BTreeMap::new();
        while let Some(joined) = lane_tasks.join_next().await {
            match joined {
                Ok((0, machines)) => first = machines,
                Ok(_) => {}
                // A panicking lane takes the service down with it, to be restarted by the supervisor.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        first
    }
}

/// Where a controller takes its service's probe reports from, to copy them to its lanes.
enum Inbox {
    /// Its own bounded channel (no pump).
    Bounded(mpsc::Receiver<ProbeReport>),
    /// The pump's route (several lanes).
    Unbounded(mpsc::UnboundedReceiver<ProbeReport>),
    /// Nothing: the pump sends the reports straight to the only lane.
    None,
}

impl Inbox {
    /// The next report; never, for [`Inbox::None`] or once every sender is gone.
    async fn recv(&mut self) -> Option<ProbeReport> {
        match self {
            Inbox::Bounded(rx) => rx.recv().await,
            Inbox::Unbounded(rx) => rx.recv().await,
            Inbox::None => std::future::pending().await,
        }
    }
}

/// Most probe reports a lane takes in a row before it converges and publishes: bounds how long a
/// view change or a due write waits behind a flood of reports.
const MAX_REPORT_BATCH: usize = 256;

/// One writer of a service: its [`ServiceCore`] and the writer it executes against.
struct Lane {
    svc: Arc<ServiceConfig>,
    core: ServiceCore,
    writer: Arc<dyn Writer>,
    per_node: bool,
    /// A self-registered service (`[service.self_register]`): per node, it follows this node's own
    /// verdicts and writes on every node, whatever the cluster says (each node manages only its own
    /// address; `decide::Policy::self_register`).
    local: bool,
    state: NodeState,
    /// The first lane votes and reports probes and health events; the others only write.
    votes_tx: Option<mpsc::UnboundedSender<(VoteKey, Health)>>,
    view_rx: watch::Receiver<Arc<View>>,
    /// The last view said this node is isolated (a per-node lane then follows its own probes).
    isolated: bool,
    /// The part of the last view this lane acted on (see [`Seen`]).
    seen: Option<Seen>,
    /// What [`Lane::publish`] last put into the node state.
    shown: Shown,
}

/// What a lane last published into the node state. [`Lane::publish`] runs after every probe and
/// skips a round in which none of it changed and the writer was not used: formatting a service's
/// addresses and plan into the status costs more than the probe itself (at 10,000 endpoints it was
/// a third of rrguard's CPU).
#[derive(Debug, Default)]
struct Shown {
    /// The writer was read or written since the last publish (the published set is known anew).
    io: bool,
    /// The core's [`ServiceCore::revision`] when this was taken: while it is the same, the rest is
    /// too, and the lane skips comparing them (after every probe).
    revision: Option<u64>,
    published: Option<crate::act::Published>,
    plan: Option<crate::decide::Plan>,
    hold: Option<(crate::decide::service::HoldReason, BTreeSet<IpAddr>)>,
    /// When the lane last updated the node state.
    at: Option<Instant>,
    /// A change waits for [`PUBLISH_GAP`] to pass since `at`: the lane wakes then.
    due: Option<Instant>,
}

/// Shortest time between two status updates of one lane. Each one plans the service again (the
/// status's pending changes) and rewrites its part of the node state; at start-up, when every
/// endpoint gets its first verdict within a second or two, one per verdict took a tenth of the
/// CPU at 10,000 endpoints (perf), while probes were due. The status is at most this much behind.
const PUBLISH_GAP: Duration = Duration::from_millis(100);

/// The part of a [`View`] one service's core follows, as last handed to it. The agreement actor
/// publishes a new view after every batch of verdicts, and every lane of every service wakes for it;
/// a lane whose service's tallies (the same shared table: `Arc::ptr_eq`), leadership, live node
/// count and isolation did not change skips the round instead of rebuilding its service's states
/// and comparing them. At 10,000 endpoints in 100 services, start-up (one verdict per endpoint)
/// otherwise cost 100 such rebuilds per verdict.
struct Seen {
    table: Option<Arc<BTreeMap<IpAddr, crate::agree::Tally>>>,
    leader: bool,
    live: usize,
    isolated: bool,
}

impl Seen {
    fn of(view: &View, fqdn: &str) -> Self {
        Seen {
            table: view.endpoints.service_table(fqdn).cloned(),
            leader: view.am_leader,
            live: view.live.len(),
            isolated: view.isolated.is_some(),
        }
    }

    fn same(&self, other: &Seen) -> bool {
        let table = match (&self.table, &other.table) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        table
            && self.leader == other.leader
            && self.live == other.live
            && self.isolated == other.isolated
    }
}

impl Lane {
    fn primary(&self) -> bool {
        self.votes_tx.is_some()
    }

    async fn run(
        mut self,
        cancel: CancellationToken,
        mut reports: mpsc::UnboundedReceiver<ProbeReport>,
    ) -> BTreeMap<IpAddr, HealthMachine> {
        // Register every endpoint with its current (possibly carried-over) verdict.
        let start = self.core.start();
        self.execute(start).await;
        // Act on the view as it is now, not only on later changes (a single node leads at once).
        self.on_view().await;
        let mut overrides_rx = self.state.overrides().subscribe();
        overrides_rx.mark_changed();
        loop {
            self.drive().await;
            let wake = match (self.core.next_wake(), self.shown.due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(report) = reports.recv() => {
                    self.on_report(report).await;
                    // Take the reports already queued before converging and publishing once for
                    // all of them (the loop's `drive`): at start-up each endpoint's first verdict
                    // comes within a second or two, and a plan and a status update of the whole
                    // service after each one took a fifth of the CPU at 10,000 endpoints (perf).
                    for _ in 1..MAX_REPORT_BATCH {
                        match reports.try_recv() {
                            Ok(report) => self.on_report(report).await,
                            Err(_) => break,
                        }
                    }
                }
                Ok(()) = self.view_rx.changed() => self.on_view_changed().await,
                Ok(()) = overrides_rx.changed() => {
                    let set = overrides_rx.borrow_and_update().clone();
                    self.on_overrides(&set).await;
                }
                _ = sleep_until_opt(wake) => {}
            }
        }
        self.core.into_machines()
    }

    /// A new view was published: act on it unless this service's part of it is what the core
    /// already has. (A self-registered lane follows only its own probes.)
    async fn on_view_changed(&mut self) {
        let seen = Seen::of(&self.view_rx.borrow_and_update(), &self.svc.fqdn);
        if self.local || self.seen.as_ref().is_some_and(|s| s.same(&seen)) {
            return;
        }
        self.on_view().await;
    }

    async fn on_view(&mut self) {
        let view = self.view_rx.borrow_and_update().clone();
        self.seen = Some(Seen::of(&view, &self.svc.fqdn));
        self.isolated = view.isolated.is_some();
        let local = self.core.local_health();
        let service_view = if self.local {
            ServiceView {
                health: local,
                leader: true,
                live_nodes: 1,
            }
        } else {
            ServiceView::for_writer(&view, &self.svc.fqdn, self.per_node, &local)
        };
        let actions = self.core.on_view(Instant::now(), &service_view);
        self.execute(actions).await;
    }

    /// The operator's overrides changed: hand this service's part to the core, its wall-clock
    /// windows placed on the monotonic clock now.
    async fn on_overrides(&mut self, set: &crate::decide::overrides::OverrideSet) {
        let now = Instant::now();
        let mine = set.for_service(
            &self.svc.fqdn,
            &self.svc.endpoints,
            now,
            state::now_unix_ms(),
        );
        let actions = self.core.on_overrides(now, mine);
        self.execute(actions).await;
    }

    async fn on_report(&mut self, report: ProbeReport) {
        let r = &report.result;
        if self.primary() {
            debug!(service = %self.svc.fqdn, endpoint = %report.endpoint, ok = r.ok, latency_ms = r.latency_ms(), detail = %r.detail, "probe");
        }
        let actions = self.core.on_probe(
            Instant::now(),
            report.started,
            report.endpoint,
            r.ok,
            r.latency,
            &r.detail,
        );
        if self.primary()
            && let Some(m) = self.core.machines().get(&report.endpoint)
        {
            self.state
                .record_probe(&self.svc.fqdn, report.endpoint, r, m.state(), m.heading());
        }
        self.execute(actions).await;
        // An isolated per-node lane follows its own verdicts, which only probes change.
        if (self.per_node && self.isolated) || self.local {
            self.on_view().await;
        }
    }

    /// Polls the core until nothing is due.
    async fn drive(&mut self) {
        let mut out = Performed::default();
        converge_into(&mut self.core, self.writer.as_ref(), &mut out).await;
        self.shown.io |= out.io;
        self.record_writes(&out);
        for e in &out.events {
            self.report(e);
        }
        self.publish();
    }

    /// Keeps how long each write took, for the write-duration metric.
    fn record_writes(&self, out: &Performed) {
        for took in &out.writes {
            self.state
                .record_write_duration(&self.svc.fqdn, self.writer.name(), *took);
        }
    }

    /// Logs an event and keeps it in the node state. Health events (the same in every lane) come
    /// from the first lane only.
    fn report(&self, event: &Event) {
        let fqdn = self.svc.fqdn.as_str();
        let writer = self.writer.name();
        let health_event = matches!(
            event,
            Event::Transition { .. }
                | Event::ClusterAgrees { .. }
                | Event::Unsettled { .. }
                | Event::WaitingForVerdicts { .. }
                | Event::Override { .. }
                | Event::Damping(_)
                | Event::Select(_)
        );
        if health_event && !self.primary() {
            return;
        }
        log_event(fqdn, writer, event);
        match event {
            Event::Updated(plan) => {
                // The plan first, so that the write's event names it (publish() runs only after the
                // whole converge round).
                self.state
                    .record_plan(fqdn, &plan.to_string(), self.hold_text().as_deref());
                self.state.record_write(fqdn, writer, Ok(()));
                self.audit_write(plan, &plan.to_string(), None);
            }
            Event::Failed { doing, error, .. } => {
                let why = format!("{doing}: {error}");
                self.state.record_write(fqdn, writer, Err(why.clone()));
                // Only a write that was sent counts as a DNS write (not a failed read or plan).
                if *doing == "writing"
                    && let Some(plan) = self.core.last_plan().filter(|p| !p.is_empty())
                {
                    self.audit_write(&plan.clone(), &why, Some(why.clone()));
                }
            }
            Event::DriftRepaired => {
                self.state.record_drift_repaired(fqdn, writer);
                self.state.push_event(state::Event::now(
                    fqdn,
                    EventKind::Note,
                    format!("records at writer {writer} had been changed out of band; repaired"),
                ));
            }
            Event::NotApplied { expected, found } => self.state.record_write(
                fqdn,
                writer,
                Err(format!(
                    "the server accepted the update but does not publish it: expected {expected}, found {found}"
                )),
            ),
            Event::Unsettled {
                endpoint, detail, ..
            } => self.state.push_event(state::Event::now(
                fqdn,
                EventKind::Note,
                format!("{endpoint} never settles (last probe: {detail}); it no longer holds back removals"),
            )),
            Event::WaitingForVerdicts { unknown, .. } => self.state.push_event(state::Event::now(
                fqdn,
                EventKind::Note,
                format!("removals wait for a first verdict on {}", list(unknown)),
            )),
            Event::Override {
                endpoint,
                kind,
                id,
                active,
            } => self.state.push_event(state::Event::now(
                fqdn,
                EventKind::Override,
                format!(
                    "{kind} of {endpoint} {} (override {id})",
                    if *active { "in effect" } else { "ended" }
                ),
            )),
            Event::Damping(e) => self.state.push_event(state::Event::now(
                fqdn,
                EventKind::Damping,
                e.to_string(),
            )),
            Event::Select(e) => self.state.push_event(state::Event::now(
                fqdn,
                EventKind::Select,
                e.to_string(),
            )),
            Event::Queued { queued, .. } => self.state.push_event(state::Event::now(
                fqdn,
                EventKind::Note,
                format!(
                    "change limits queue {} at writer {writer}",
                    queued_text(queued)
                ),
            )),
            Event::KeptChanging | Event::Conflict(_) => self.state.push_event(state::Event::now(
                fqdn,
                EventKind::Note,
                format!("record set at writer {writer} changed by someone else; re-planned"),
            )),
            _ => {}
        }
    }

    /// Records a DNS write (or a failed one) with its evidence in the audit log.
    fn audit_write(&self, plan: &crate::decide::Plan, message: &str, error: Option<String>) {
        let view = self.view_rx.borrow().clone();
        let record = super::audit::write_record(self.core.settings(), &view, plan, error);
        self.state
            .audit_write(&self.svc.fqdn, self.writer.name(), message, record);
    }

    /// Publishes what the core knows into the node state: published set, last plan, hold.
    fn publish(&mut self) {
        let revision = self.core.revision();
        if !self.shown.io && self.shown.revision == Some(revision) {
            self.shown.due = None;
            return;
        }
        let now = Instant::now();
        if let Some(at) = self.shown.at
            && now < at + PUBLISH_GAP
        {
            self.shown.due = Some(at + PUBLISH_GAP);
            return;
        }
        self.shown.due = None;
        self.shown.revision = Some(revision);
        let unchanged = !self.shown.io
            && self.shown.published.as_ref() == self.core.published()
            && self.shown.plan.as_ref() == self.core.last_plan()
            && self.shown.hold.as_ref().map(|(r, h)| (*r, h)) == self.core.hold();
        if unchanged {
            return;
        }
        self.shown = Shown {
            io: false,
            revision: Some(revision),
            published: self.core.published().cloned(),
            plan: self.core.last_plan().cloned(),
            hold: self.core.hold().map(|(r, h)| (r, h.clone())),
            at: Some(now),
            due: None,
        };
        let fqdn = self.svc.fqdn.as_str();
        if let Some(p) = self.core.published() {
            self.state
                .set_published(fqdn, self.writer.name(), p.records.keys().copied());
        }
        let (standing, pending, queued) = self
            .core
            .preview(Instant::now())
            .map(|plan| {
                (
                    super::audit::standing(&plan),
                    super::audit::changes(&plan),
                    super::audit::queued(&plan),
                )
            })
            .unwrap_or_default();
        self.state
            .set_writer_queue(fqdn, self.writer.name(), queued);
        self.state.set_writer_plan(
            fqdn,
            self.writer.name(),
            self.core
                .published()
                .map(super::audit::records)
                .unwrap_or_default(),
            standing,
            pending,
        );
        if !self.primary() {
            return;
        }
        if self.svc.policies.damping.is_some() {
            let now = Instant::now();
            let wall = state::now_unix_ms();
            let figures = self
                .core
                .damping(now)
                .into_iter()
                .map(|(ip, f)| {
                    let status = state::DampingStatus {
                        penalty: f.penalty,
                        suppressed: f.suppressed,
                        reuse_unix_ms: f.reuse_at.map(|t| {
                            wall + u64::try_from(t.saturating_duration_since(now).as_millis())
                                .unwrap_or(u64::MAX / 2)
                        }),
                    };
                    (ip, status)
                })
                .collect();
            self.state.set_damping(fqdn, figures);
        }
        let plan = self
            .core
            .last_plan()
            .filter(|p| !p.is_empty())
            .map_or_else(String::new, ToString::to_string);
        self.state
            .record_plan(fqdn, &plan, self.hold_text().as_deref());
    }

    /// Why removals are held back, for the node state; `None` when they are not.
    fn hold_text(&self) -> Option<String> {
        self.core
            .hold()
            .map(|(reason, held)| format!("{reason}: {}", list(held)))
    }

    /// Executes actions: votes go to the agreement actor (first lane only), events to the log,
    /// writer work to the writer.
    async fn execute(&mut self, actions: Vec<Action>) {
        let mut out = Performed::default();
        perform(&mut self.core, self.writer.as_ref(), actions, &mut out).await;
        self.shown.io |= out.io;
        self.record_writes(&out);
        if let Some(votes_tx) = &self.votes_tx {
            for (endpoint, health) in out.votes {
                let _ = votes_tx.send(((self.svc.fqdn.clone(), endpoint), health));
            }
        }
        for e in &out.events {
            self.report(e);
        }
    }
}

/// What [`perform`] collected for the caller to pass on.
#[derive(Debug, Default)]
struct Performed {
    votes: Vec<(IpAddr, Health)>,
    events: Vec<Event>,
    /// How long each `apply` took.
    writes: Vec<Duration>,
    /// The writer was read or written.
    io: bool,
}

/// Executes `actions` against `writer`, feeding each result back into `core`, until none is left.
async fn perform(
    core: &mut ServiceCore,
    writer: &dyn Writer,
    actions: Vec<Action>,
    out: &mut Performed,
) {
    let mut queue = VecDeque::from(actions);
    while let Some(action) = queue.pop_front() {
        match action {
            Action::Vote { endpoint, health } => out.votes.push((endpoint, health)),
            Action::Event(e) => out.events.push(e),
            Action::Read => {
                out.io = true;
                let result = writer
                    .read(&core.settings().fqdn, &core.settings().zone)
                    .await;
                queue.extend(core.on_read(Instant::now(), result));
            }
            Action::Apply(change) => {
                out.io = true;
                let started = Instant::now();
                let result = writer.apply(&change).await;
                out.writes.push(started.elapsed());
                queue.extend(core.on_applied(Instant::now(), result));
            }
        }
    }
}

/// Does the writer work that is due for `core` now — read, plan, compare-and-swap write, read back,
/// re-plan on conflicts — until nothing more is due, and returns what happened. The controller calls
/// it after every input; tests call it to drive a core against a real writer.
pub async fn converge(core: &mut ServiceCore, writer: &dyn Writer) -> Vec<Event> {
    let mut out = Performed::default();
    converge_into(core, writer, &mut out).await;
    out.events
}

/// [`converge`], collecting into `out`.
async fn converge_into(core: &mut ServiceCore, writer: &dyn Writer, out: &mut Performed) {
    loop {
        let actions = core.poll(Instant::now());
        if actions.is_empty() {
            return;
        }
        perform(core, writer, actions, out).await;
    }
}

/// A duration as a person reads it, to the millisecond: `4s 500ms`.
fn human(d: std::time::Duration) -> humantime::FormattedDuration {
    humantime::format_duration(std::time::Duration::from_millis(d.as_millis() as u64))
}

/// Addresses as a person writes them: `192.0.2.1 192.0.2.2`.
fn list(ips: &BTreeSet<IpAddr>) -> String {
    let parts: Vec<String> = ips.iter().map(ToString::to_string).collect();
    parts.join(" ")
}

/// Queued changes as a person reads them: `remove 192.0.2.1 (max_changes=2 per change_window=1m used up)`.
fn queued_text(queued: &[crate::decide::safety::Queued]) -> String {
    let parts: Vec<String> = queued
        .iter()
        .map(|q| match q.change {
            crate::decide::Change::Add(ip) => format!("add {ip} ({})", q.limit),
            crate::decide::Change::Remove(ip) => format!("remove {ip} ({})", q.limit),
            crate::decide::Change::Ttl(ip) => format!("set ttl of {ip} ({})", q.limit),
            crate::decide::Change::Weight(ip) => format!("set weight of {ip} ({})", q.limit),
        })
        .collect();
    parts.join(", ")
}

/// Logs one core event, with fields in their config spelling.
pub(super) fn log_event(service: &str, writer: &str, event: &Event) {
    match event {
        Event::Transition {
            endpoint,
            from,
            to,
            detail,
        } => {
            info!(service = %service, endpoint = %endpoint, from = %from, to = %to, detail = %detail, "endpoint is {to}")
        }
        Event::ClusterAgrees { endpoint, state } => {
            info!(service = %service, endpoint = %endpoint, state = %state, "cluster agrees endpoint is {state}");
        }
        Event::Unsettled {
            endpoint,
            after,
            detail,
        } => warn!(service = %service,
            endpoint = %endpoint,
            last = %detail,
            "endpoint never settles: no verdict for {} (its results never reached fall failures or rise successes in a row, or the nodes do not agree on it); it keeps its place in DNS and no longer holds back removals of other endpoints",
            human(*after)

        ),
        Event::WaitingForVerdicts { unknown, bound } => info!(service = %service,
            unknown = %list(unknown),
            "removals wait for a first verdict on {} (at most {})",
            list(unknown),
            human(*bound)
        ),
        Event::Holding {
            held,
            reason,
            bound,
        } => info!(service = %service,
            held = %list(held),
            "holding removal back: {reason} (at most {})",
            human(*bound)
        ),
        Event::Updated(plan) => {
            let policy = plan
                .policy_applied
                .map_or_else(|| "none".to_owned(), |p| p.to_string());
            info!(service = %service, writer = %writer, plan = %plan, policy = %policy, "DNS updated");
        }
        Event::Override {
            endpoint,
            kind,
            id,
            active,
        } => {
            if *active {
                info!(service = %service, endpoint = %endpoint, kind = %kind, id = %id, "override in effect: {kind} of {endpoint}");
            } else {
                info!(service = %service, endpoint = %endpoint, kind = %kind, id = %id, "override ended: {kind} of {endpoint}");
            }
        }
        Event::WouldUpdate(plan) => {
            info!(service = %service, plan = %plan, "dry run: would change DNS")
        }
        Event::Conflict(why) => info!(service = %service,
            "record set changed by someone else since it was read ({why}); re-reading and re-planning"
        ),
        Event::Damping(e) => warn!(service = %service, "{e}"),
        Event::Select(e @ crate::decide::select::SelectEvent::CanariesWithdrawn { .. }) => {
            warn!(service = %service, "{e}")
        }
        Event::Select(e) => info!(service = %service, "{e}"),
        Event::DriftRepaired => warn!(service = %service, writer = %writer,
            "the records had been changed out of band since the last reconcile; the write above restored them"
        ),
        Event::Queued { queued, next } => warn!(service = %service,
            writer = %writer,
            queued = queued.len(),
            "change limits queue {}; next may go in {}",
            queued_text(queued),
            next.map_or_else(|| "one interval".to_owned(), |d| human(d).to_string())
        ),
        Event::KeptChanging => warn!(service = %service,
            "record set kept changing under us for {} rounds; backing off",
            crate::decide::service::MAX_CONFLICT_ROUNDS
        ),
        Event::NotApplied { expected, found } => error!(service = %service,
            writer = %writer,
            expected = %expected,
            found = %found,
            "the server accepted the update but does not publish it: something at the name keeps the records out (a CNAME, a zone cut, a server policy); retrying in {}",
            human(crate::decide::service::OPERATOR_RETRY)
        ),
        Event::Failed {
            doing,
            error,
            retry,
        } => log_failure(service, writer, doing, error, *retry),
    }
}

/// Logs a failed writer operation: an error when it needs an operator, a warning otherwise.
fn log_failure(service: &str, writer: &str, doing: &str, e: &WriteError, retry: Duration) {
    let retry = human(retry);
    if e.needs_operator() {
        error!(service = %service, writer = %writer, "configuration error while {doing}: {e}; retrying in {retry}");
    } else {
        warn!(service = %service, writer = %writer, "{doing} failed: {e}; retrying in {retry}");
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
