//! The service core: everything one service decides over time, sans-I/O.
//!
//! [`ServiceCore`] owns what a service controller holds between events: its endpoints' health
//! machines, the cluster states it follows, what DNS publishes as last read or written (addresses and
//! TTLs), the removal hold, the settle clock of unknown endpoints, backoff, sync and reconcile
//! deadlines, compare-and-swap rounds and dry-run. Inputs are probe results, cluster views, writer
//! results and `now`; outputs are [`Action`]s: vote, read, apply a change, record an [`Event`]. It never
//! reads a clock, sleeps or does I/O. The daemon's controller executes the actions against a real
//! [`crate::act::Writer`]; the simulator (`tests/sim.rs`) drives the very same type against
//! [`crate::act::memory::MemoryWriter`].
//!
//! Rules and their bounds (`interval`, `timeout`, `fall`, `rise` are the service's; "cycle" is
//! [`Settings::probe_cycle`], the interval, or with a longer `timeout` the whole intervals that
//! cover it):
//! - **Removal hold** ([`Settings::hold_bound`] = max(fall, rise) × cycle + timeout): a removal waits
//!   while the endpoints that would remain are in doubt by this node's own probes, or while the
//!   endpoints to remove may be recovering together after an all-down (this node has not seen them
//!   fail since the first one came back). After the bound the removal goes: delayed, never lost.
//! - **Re-check of the siblings** ([`Settings::recheck_bound`] = cycle + timeout): when an endpoint
//!   starts failing (its first failure while up, the start of a `fall` streak), every other
//!   endpoint counts as in doubt until this node has a probe result of it reported after that
//!   failure. With fast confirmation an endpoint can be confirmed down before the staggered probes
//!   of the others have run once; if they all failed together (a shared switch, a bad deploy), the
//!   first ones would be removed before the all-down policy could see the whole failure, and put
//!   back when it does. Waiting for one fresh result of each sibling lets the removal hold see it;
//!   the probe loops re-check the siblings at once ([`crate::observe::scheduler`]), so a lone
//!   failure is not delayed beyond a probe time. A sibling that is never probed stops counting
//!   after the bound (it is probed at least once per cycle, within its timeout).
//! - **Settle bound** ([`Settings::settle_bound`] = (max(fall, rise) + 1) × cycle + timeout): an
//!   endpoint still without a verdict that long after this node's first probe of it (or after the core
//!   started, if it has not been probed) — its results alternate and never reach `fall` or `rise` in a
//!   row, or the nodes do not agree — is *unsettled*: it is reported, keeps its place in DNS, and stops
//!   holding back the removal of other endpoints. So a dead endpoint is removed at most one settle
//!   bound after the first probes, whatever its neighbours do.
//! - **Writes**: one [`RecordChange`] at a time, conditional on the addresses read. After a write the
//!   record set is read back when the writer can ([`Capabilities::read_back`]); if the read-back does not
//!   show the change, that is an anomaly an operator must see (for instance data the server keeps
//!   beside it), retried at the operator cadence, not a conflict to spin on. Other differences (someone
//!   else wrote meanwhile) are re-planned, as is every write of a writer without compare-and-swap.
//! - **Conflicts**: a refused precondition re-reads and re-plans, [`MAX_CONFLICT_ROUNDS`] times in a row
//!   at most, then backs off.
//! - **Backoff**: transient failures retry after [`BACKOFF_MIN`], doubling to [`BACKOFF_MAX`]; failures
//!   that need an operator retry every [`OPERATOR_RETRY`].
//! - **Reconcile**: every `reconcile_interval` the published set is re-read, repairing drift.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::damping::{Damping, DampingEvent, Figure};
use super::overrides::{OverrideKind, ServiceOverrides};
use super::safety::{ChangeSafety, Failback, Queued};
use super::select::{SelectEvent, Selector};
use super::{Doubts, Health, Plan, Policies, Policy, Reason};
use crate::act::{Capabilities, Precondition, Published, RecordChange, WriteError};
use crate::agree::View;
use crate::config::ServiceConfig;
use crate::observe::health::HealthMachine;

/// First retry delay after a transient failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest retry delay after transient failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Retry delay after a failure that needs an operator (wrong key, REFUSED, a CNAME at the name).
pub const OPERATOR_RETRY: Duration = Duration::from_secs(30);
/// Re-read/re-plan rounds after compare-and-swap conflicts before backing off.
pub const MAX_CONFLICT_ROUNDS: usize = 5;

/// The settings of one service the core runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The service name, with trailing dot.
    pub fqdn: String,
    /// Its zone apex, with trailing dot.
    pub zone: String,
    /// The planner's policy (endpoints, min_healthy, all_down, remove_unlisted, ttl).
    pub policy: Policy,
    /// Selection and change-safety policies (damping, ...).
    pub policies: Policies,
    /// Probe interval.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Failures in a row that mark an endpoint down.
    pub fall: u32,
    /// Successes in a row that mark an endpoint up.
    pub rise: u32,
    /// How often the published set is re-read.
    pub reconcile_interval: Duration,
    /// Plan and report, never write.
    pub dry_run: bool,
    /// What the service's writer can do.
    pub capabilities: Capabilities,
}

impl Settings {
    /// The settings of a configured service.
    pub fn of(
        svc: &ServiceConfig,
        capabilities: Capabilities,
        reconcile_interval: Duration,
        dry_run: bool,
    ) -> Self {
        Settings {
            fqdn: svc.fqdn.clone(),
            zone: svc.zone.clone(),
            policy: Policy::of(svc),
            policies: svc.policies.clone(),
            interval: svc.interval,
            timeout: svc.timeout,
            fall: svc.fall,
            rise: svc.rise,
            reconcile_interval,
            dry_run,
            capabilities,
        }
    }

    /// Longest time between the starts of two regular probes of one endpoint: the interval, or
    /// with a `timeout` longer than the interval the whole number of intervals that covers it
    /// (a probe loop starts each regular probe on the endpoint's grid of intervals, or at once
    /// after a probe that ended past its slot; [`crate::observe::scheduler`]).
    pub fn probe_cycle(&self) -> Duration {
        let steps = self
            .timeout
            .as_nanos()
            .div_ceil(self.interval.as_nanos().max(1))
            .max(1);
        self.interval
            .saturating_mul(u32::try_from(steps).unwrap_or(u32::MAX))
    }

    /// Longest a removal is held back: max(fall, rise) × [`Self::probe_cycle`] + timeout (with
    /// `timeout` ≤ `interval`: max(fall, rise) × interval + timeout).
    pub fn hold_bound(&self) -> Duration {
        self.probe_cycle()
            .saturating_mul(self.fall.max(self.rise))
            .saturating_add(self.timeout)
    }

    /// Longest an endpoint counts as in doubt while waiting to be re-checked after a sibling started
    /// failing: [`Self::probe_cycle`] + timeout (a probe loop starts a probe at least once per
    /// cycle, and the probe ends within its timeout).
    pub fn recheck_bound(&self) -> Duration {
        self.probe_cycle().saturating_add(self.timeout)
    }

    /// How long an endpoint may stay without a verdict before it is unsettled:
    /// (max(fall, rise) + 1) × [`Self::probe_cycle`] + timeout (with `timeout` ≤ `interval`:
    /// (max(fall, rise) + 1) × interval + timeout). Three failures in a row that each take a
    /// 1 s timeout at a 200 ms interval need 3 s, not the 1.8 s the interval alone gave: a dead
    /// endpoint was reported as never settling just before it was found down.
    pub fn settle_bound(&self) -> Duration {
        self.probe_cycle()
            .saturating_mul(self.fall.max(self.rise).saturating_add(1))
            .saturating_add(self.timeout)
    }
}

/// What the cluster says about one service, as the core needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceView {
    /// Cluster state of each endpoint; missing means unknown.
    pub health: BTreeMap<IpAddr, Health>,
    /// This node is the elected leader, the one node that writes.
    pub leader: bool,
    /// Nodes the view counts as live (1 on a single node).
    pub live_nodes: usize,
}

impl ServiceView {
    /// The part of a cluster view about `fqdn`.
    pub fn of(view: &View, fqdn: &str) -> Self {
        ServiceView {
            health: view.service_health(fqdn),
            leader: view.am_leader,
            live_nodes: view.live.len(),
        }
    }

    /// What the core of one writer of `fqdn` follows.
    ///
    /// - A shared writer (one DNS for the whole cluster) follows [`ServiceView::of`]: the agreed
    ///   states, written by the leader only (DESIGN.md invariant 2).
    /// - A per-node writer ([`crate::act::Capabilities::per_node`]: this node's own served zone or
    ///   file) is written on every node. While the node is part of the majority it follows the agreed
    ///   states, so every node serves the same set. While it is isolated it follows `local`, its own
    ///   probes' verdicts, as a single node would, with the same `min_healthy` and `all_down` policy
    ///   (DESIGN.md invariant 11). So an endpoint the majority withdraws because it fails is
    ///   withdrawn by an isolated node too, within `vote_ttl` (the time to notice the isolation) plus
    ///   `fall × interval + timeout` (its own verdict), and a total partition leaves every node
    ///   answering by its own probes: the name never becomes unresolvable under `keep_all`. An
    ///   endpoint that fails only as seen from the majority's side, and works from the isolated
    ///   node's, stays in that node's answers until the partition heals.
    pub fn for_writer(
        view: &View,
        fqdn: &str,
        per_node: bool,
        local: &BTreeMap<IpAddr, Health>,
    ) -> Self {
        if !per_node {
            return ServiceView::of(view, fqdn);
        }
        if view.isolated.is_some() {
            ServiceView {
                health: local.clone(),
                leader: true,
                live_nodes: 1,
            }
        } else {
            ServiceView {
                leader: true,
                ..ServiceView::of(view, fqdn)
            }
        }
    }
}

/// Rule switches, all on by default. The simulator turns one off to show that its invariant checks
/// catch the fault the rule prevents; the daemon never changes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Hold removals back while the remaining endpoints are in doubt or recovering.
    pub hold_removals: bool,
    /// End every hold after [`Settings::hold_bound`].
    pub end_holds: bool,
    /// Stop waiting for an endpoint's verdict after [`Settings::settle_bound`].
    pub settle_unknown: bool,
    /// Hold back removals of endpoints that may be recovering together after an all-down.
    pub hold_recovering: bool,
    /// Count the other endpoints as in doubt until re-checked after an endpoint starts failing.
    pub recheck_siblings: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            hold_removals: true,
            end_holds: true,
            settle_unknown: true,
            hold_recovering: true,
            recheck_siblings: true,
        }
    }
}

/// Why removals are held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// The endpoints that would remain are failing too, by this node's own probes.
    RemainingInDoubt,
    /// The service is leaving its all-down fallback; these endpoints may be recovering together.
    Recovering,
    /// An endpoint just started failing: the others are being re-checked, to see whether they fail
    /// too (at most [`Settings::recheck_bound`]).
    Rechecking,
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HoldReason::RemainingInDoubt => "the endpoints that would remain are failing too",
            HoldReason::Recovering => "endpoints are recovering together after an all-down",
            HoldReason::Rechecking => {
                "an endpoint just started failing and the others are being re-checked"
            }
        })
    }
}

/// Something worth telling an operator; the controller logs it, the node state keeps it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// This node's verdict on an endpoint changed.
    Transition {
        /// The endpoint.
        endpoint: IpAddr,
        /// Verdict before.
        from: Health,
        /// Verdict now.
        to: Health,
        /// What the probe said.
        detail: String,
    },
    /// The cluster's state of an endpoint changed (only reported with more than one live node).
    ClusterAgrees {
        /// The endpoint.
        endpoint: IpAddr,
        /// The agreed state.
        state: Health,
    },
    /// An endpoint has had no verdict for the settle bound.
    Unsettled {
        /// The endpoint.
        endpoint: IpAddr,
        /// How long it has been without a verdict.
        after: Duration,
        /// What its last probe said.
        detail: String,
    },
    /// Removals wait for a first verdict on these endpoints (at most one settle bound).
    WaitingForVerdicts {
        /// Endpoints without a verdict.
        unknown: BTreeSet<IpAddr>,
        /// Longest wait.
        bound: Duration,
    },
    /// Removals are held back.
    Holding {
        /// Addresses whose removal waits.
        held: BTreeSet<IpAddr>,
        /// Why.
        reason: HoldReason,
        /// Longest hold.
        bound: Duration,
    },
    /// A plan was written.
    Updated(Plan),
    /// Dry run: a plan that would have been written.
    WouldUpdate(Plan),
    /// An operator's override on an endpoint took effect (`active`) or ended.
    Override {
        /// The endpoint.
        endpoint: IpAddr,
        /// What it does.
        kind: OverrideKind,
        /// Its id.
        id: String,
        /// Took effect (true) or ended (false).
        active: bool,
    },
    /// The precondition was refused: someone else changed the record set.
    Conflict(String),
    /// Conflicts [`MAX_CONFLICT_ROUNDS`] times in a row; backing off.
    KeptChanging,
    /// The write just reported by [`Event::Updated`] restored records a reconcile read found
    /// changed out of band (drift).
    DriftRepaired,
    /// A write was accepted, but reading back does not show it.
    NotApplied {
        /// What should be published.
        expected: Published,
        /// What is.
        found: Published,
    },
    /// Flap damping suppressed or reused an endpoint.
    Damping(DampingEvent),
    /// Selection failed over or back between priority tiers, or the canary kill switch moved.
    Select(SelectEvent),
    /// Change limits (`max_changes`, `max_remove_fraction`) queue changes; reported when the queue
    /// gains a change.
    Queued {
        /// Every queued change, first planned first.
        queued: Vec<Queued>,
        /// How long until the next queued change may go, if known.
        next: Option<Duration>,
    },
    /// A writer operation failed; retried after `retry`.
    Failed {
        /// What was being done.
        doing: &'static str,
        /// The failure.
        error: WriteError,
        /// When it is retried.
        retry: Duration,
    },
}

/// What the core asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish this node's verdict on an endpoint as its vote.
    Vote {
        /// The endpoint.
        endpoint: IpAddr,
        /// The verdict.
        health: Health,
    },
    /// Read what the name publishes; answer with [`ServiceCore::on_read`].
    Read,
    /// Apply this change; answer with [`ServiceCore::on_applied`].
    Apply(RecordChange),
    /// Tell the operator.
    Event(Event),
}

/// The writer operation in flight.
#[derive(Debug, Clone, PartialEq)]
enum Io {
    Idle,
    Reading,
    Applying(Plan, RecordChange),
    ReadingBack(Plan, RecordChange),
}

/// The decision state of one service. See the module documentation.
#[derive(Debug)]
pub struct ServiceCore {
    s: Settings,
    rules: Rules,
    machines: BTreeMap<IpAddr, HealthMachine>,
    /// When this node's last probe of each endpoint started, and whether it passed. The start, not
    /// the end: a probe that started before the endpoints began recovering together and failed
    /// (timed out) after has not seen the endpoint fail since (found with a 1 s timeout at a
    /// 200 ms interval: the stale failure ended the hold, the endpoint was removed and put back
    /// 30 ms later).
    last_probe: BTreeMap<IpAddr, (Instant, bool)>,
    /// Probe results taken so far: orders results exactly, also when they share an instant.
    probe_seq: u64,
    /// The sequence number of each endpoint's last probe result.
    last_seq: BTreeMap<IpAddr, u64>,
    /// Endpoints whose failure streak started while they were up: when (and at which
    /// sequence number) the streak's first failure came in. Cleared by a success.
    failing_since: BTreeMap<IpAddr, (Instant, u64)>,
    /// When the core was made: the settle clock of an endpoint runs from its first probe, or from
    /// here when it has none.
    created: Instant,
    agreed: BTreeMap<IpAddr, Health>,
    /// Since when each endpoint has had no agreed verdict.
    unknown_since: BTreeMap<IpAddr, Instant>,
    unsettled: BTreeSet<IpAddr>,
    leader: bool,
    published: Revised<Option<Published>>,
    /// What the core believed published when a reconcile dropped it, until the reconcile's read
    /// answers: a different answer is drift (records changed out of band).
    reconciling: Option<Published>,
    /// Drift was found and the write that repairs it has not succeeded yet.
    drifted: bool,
    io: Io,
    sync_at: Option<Instant>,
    not_before: Option<Instant>,
    backoff: Duration,
    reconcile_at: Instant,
    rounds: usize,
    hold_since: Option<Instant>,
    /// Why the current hold started, and what it holds.
    hold: Revised<Option<(HoldReason, BTreeSet<IpAddr>)>>,
    /// The last plan computed (as leader).
    last_plan: Revised<Option<Plan>>,
    /// The last plan was decided by the all-down policy.
    in_fallback: bool,
    recovering_since: Option<Instant>,
    waiting_reported: BTreeSet<IpAddr>,
    last_dry_run: Option<Plan>,
    /// The operator's overrides of this service ([`super::overrides`]).
    overrides: ServiceOverrides,
    /// The overrides in effect as last seen, by endpoint: (kind, id).
    overrides_active: BTreeMap<IpAddr, (OverrideKind, String)>,
    /// Override boundaries up to here have been looked at.
    overrides_checked: Instant,
    /// Flap damping, when the service has it.
    damping: Option<Damping>,
    /// Selection (`[service.select]`), when the service has it.
    select: Option<Selector>,
    /// Failback hold-down, when the service has a `readd_delay`.
    failback: Option<Failback>,
    /// `max_changes` / `max_remove_fraction` and what they remember.
    safety: ChangeSafety,
    /// The queued changes last reported, as (address, is an addition).
    queued_reported: BTreeSet<(IpAddr, bool)>,
}

impl ServiceCore {
    /// A core for one service. `machines` holds every endpoint's health machine (fresh, or carried
    /// over a reload); the first sync reads DNS as soon as this node leads.
    pub fn new(
        settings: Settings,
        machines: BTreeMap<IpAddr, HealthMachine>,
        now: Instant,
    ) -> Self {
        let unknown_since = settings
            .policy
            .endpoints
            .iter()
            .map(|ip| (*ip, now))
            .collect();
        ServiceCore {
            reconcile_at: now + settings.reconcile_interval,
            rules: Rules::default(),
            machines,
            last_probe: BTreeMap::new(),
            probe_seq: 0,
            last_seq: BTreeMap::new(),
            failing_since: BTreeMap::new(),
            created: now,
            agreed: BTreeMap::new(),
            unknown_since,
            unsettled: BTreeSet::new(),
            leader: false,
            published: Revised::default(),
            reconciling: None,
            drifted: false,
            io: Io::Idle,
            sync_at: Some(now),
            not_before: None,
            backoff: BACKOFF_MIN,
            rounds: 0,
            hold_since: None,
            hold: Revised::default(),
            last_plan: Revised::default(),
            in_fallback: false,
            recovering_since: None,
            waiting_reported: BTreeSet::new(),
            last_dry_run: None,
            overrides: ServiceOverrides::default(),
            overrides_active: BTreeMap::new(),
            overrides_checked: now,
            damping: settings.policies.damping.map(Damping::new),
            select: settings.policies.select.clone().map(Selector::new),
            failback: (!settings.policies.readd_delay.is_zero())
                .then(|| Failback::new(settings.policies.readd_delay)),
            safety: ChangeSafety::new(
                settings.policies.change_rate,
                settings.policies.max_remove_fraction,
                settings.interval,
                settings.policy.min_healthy,
            ),
            queued_reported: BTreeSet::new(),
            s: settings,
        }
    }

    /// Switches rules off (simulator mutation tests only).
    pub fn set_rules(&mut self, rules: Rules) {
        self.rules = rules;
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// The endpoints' health machines.
    pub fn machines(&self) -> &BTreeMap<IpAddr, HealthMachine> {
        &self.machines
    }

    /// The health machines, for carrying over a reload.
    pub fn into_machines(self) -> BTreeMap<IpAddr, HealthMachine> {
        self.machines
    }

    /// This node's own verdict on every endpoint (its health machines' states).
    pub fn local_health(&self) -> BTreeMap<IpAddr, Health> {
        self.machines
            .iter()
            .map(|(ip, m)| (*ip, m.state()))
            .collect()
    }

    /// What DNS publishes, as last read or written; `None` until read (or after a failure).
    pub fn published(&self) -> Option<&Published> {
        self.published.get().as_ref()
    }

    /// The last plan computed while leading, if any.
    pub fn last_plan(&self) -> Option<&Plan> {
        self.last_plan.get().as_ref()
    }

    /// Counts the assignments of what [`ServiceCore::published`], [`ServiceCore::last_plan`] and
    /// [`ServiceCore::hold`] return: while it stays the same, so do they (the converse does not
    /// hold: a value may be assigned again unchanged). Lets a reader skip comparing them (the
    /// controller's lanes, after every probe).
    pub fn revision(&self) -> u64 {
        self.published.revision() + self.last_plan.revision() + self.hold.revision()
    }

    /// The plan this core would make at `now` against what DNS publishes, as last read or written,
    /// without acting on it (for the API: what would change now, and why each address is in or
    /// out); `None` until the published records are known.
    pub fn preview(&self, now: Instant) -> Option<Plan> {
        let published = self.published.get().as_ref()?;
        let full = self.plan_with_overrides(now, published);
        Some(self.safety.limit(now, full, published))
    }

    /// Recovered endpoints still in their failback hold-down (`readd_delay`) at `now`, with when it
    /// ends (empty without `readd_delay`).
    pub fn readd_held(&self, now: Instant) -> BTreeMap<IpAddr, Instant> {
        self.failback
            .as_ref()
            .map(|f| f.held(now))
            .unwrap_or_default()
    }

    /// The current removal hold: why, and the addresses it holds back.
    pub fn hold(&self) -> Option<(HoldReason, &BTreeSet<IpAddr>)> {
        self.hold.get().as_ref().map(|(r, held)| (*r, held))
    }

    /// Every endpoint's flap-damping figure at `now` (empty without damping).
    pub fn damping(&self, now: Instant) -> BTreeMap<IpAddr, Figure> {
        self.damping
            .as_ref()
            .map(|d| d.figures(now))
            .unwrap_or_default()
    }

    /// The selection state (`[service.select]`), if the service has one.
    pub fn selector(&self) -> Option<&Selector> {
        self.select.as_ref()
    }

    /// Seeds `fastest`'s long-term mean of `endpoint` (see
    /// [`Selector::seed_long_term`]); no-op without a selection.
    pub fn seed_long_term(&mut self, endpoint: IpAddr, mean: std::time::Duration) {
        if let Some(sel) = &mut self.select {
            sel.seed_long_term(endpoint, mean);
        }
    }

    /// Endpoints reported unsettled (no verdict within the settle bound).
    pub fn unsettled(&self) -> &BTreeSet<IpAddr> {
        &self.unsettled
    }

    /// The operator's overrides this core applies.
    pub fn overrides(&self) -> &ServiceOverrides {
        &self.overrides
    }

    /// New overrides for this service (the whole set, replacing the previous one). A change in what
    /// is in effect makes a sync due on the leader; each start and end is reported.
    pub fn on_overrides(&mut self, now: Instant, overrides: ServiceOverrides) -> Vec<Action> {
        let mut out = Vec::new();
        self.overrides = overrides;
        self.track_overrides(now, &mut out);
        out
    }

    /// Reports overrides that took effect or ended by `now`, and makes a sync due if any did.
    fn track_overrides(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.overrides_checked = self.overrides_checked.max(now);
        let active: BTreeMap<IpAddr, (OverrideKind, String)> = self
            .overrides
            .active(now)
            .into_iter()
            .map(|(ip, w)| (ip, (w.kind, w.id.clone())))
            .collect();
        if active == self.overrides_active {
            return;
        }
        for (ip, (kind, id)) in &self.overrides_active {
            if active.get(ip) != Some(&(*kind, id.clone())) {
                out.push(Action::Event(Event::Override {
                    endpoint: *ip,
                    kind: *kind,
                    id: id.clone(),
                    active: false,
                }));
            }
        }
        for (ip, (kind, id)) in &active {
            if self.overrides_active.get(ip) != Some(&(*kind, id.clone())) {
                out.push(Action::Event(Event::Override {
                    endpoint: *ip,
                    kind: *kind,
                    id: id.clone(),
                    active: true,
                }));
            }
        }
        self.overrides_active = active;
        if self.leader {
            self.sync_soon(now);
        }
    }

    /// This node's current verdicts, as votes: call once when the core starts.
    pub fn start(&self) -> Vec<Action> {
        self.machines
            .iter()
            .map(|(ip, m)| Action::Vote {
                endpoint: *ip,
                health: m.state(),
            })
            .collect()
    }

    /// One probe result of `endpoint` (`latency`, `detail` as the probe reported them), of a probe
    /// that started at `started` and is handled at `now`.
    pub fn on_probe(
        &mut self,
        now: Instant,
        started: Instant,
        endpoint: IpAddr,
        ok: bool,
        latency: Duration,
        detail: &str,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let was_unchecked = self.unchecked(now, endpoint);
        let Some(m) = self.machines.get_mut(&endpoint) else {
            return out;
        };
        let was_in_doubt = m.in_doubt();
        // The first failure of an up endpoint starts a `fall` streak. (Not of an unknown one: an
        // endpoint that never settles must not keep its siblings in doubt.)
        let streak_starts = !ok && m.streaks().1 == 0 && m.state() == Health::Up;
        self.probe_seq += 1;
        self.last_seq.insert(endpoint, self.probe_seq);
        if ok {
            self.failing_since.remove(&endpoint);
        } else if streak_starts {
            self.failing_since.insert(endpoint, (now, self.probe_seq));
        }
        if self.last_probe.insert(endpoint, (started, ok)).is_none()
            && let Some(since) = self.unknown_since.get_mut(&endpoint)
            && *since == self.created
        {
            // The settle clock starts with the first probe: probe set-up and the staggered start
            // do not count against an endpoint.
            *since = now;
        }
        let transition = m.observe(ok, latency, detail);
        if self.select.is_some() {
            // A new latency may change which endpoints are the fastest.
            let before = self.leader.then(|| self.held_out(now));
            if let Some(sel) = &mut self.select {
                sel.observe_probe(endpoint, ok, latency);
            }
            if before.is_some_and(|b| b != self.held_out(now)) {
                self.sync_soon(now);
            }
        }
        let Some(m) = self.machines.get(&endpoint) else {
            return out;
        };
        if let Some(t) = transition {
            out.push(Action::Event(Event::Transition {
                endpoint,
                from: t.from,
                to: t.to,
                detail: detail.to_owned(),
            }));
            out.push(Action::Vote {
                endpoint,
                health: t.to,
            });
        } else if self.leader
            && ((self.hold_since.is_some() && (m.in_doubt() != was_in_doubt || was_unchecked))
                || (self.recovering_since.is_some() && !ok))
        {
            // A held-back removal may now go (doubt resolved, or a recovery candidate failed).
            self.sync_soon(now);
        }
        out
    }

    /// A new cluster view.
    pub fn on_view(&mut self, now: Instant, view: &ServiceView) -> Vec<Action> {
        let mut out = Vec::new();
        let changed = view.health != self.agreed;
        if changed && view.live_nodes > 1 {
            for (ip, h) in &view.health {
                let before = self.agreed.get(ip).copied().unwrap_or(Health::Unknown);
                if before != *h && *h != Health::Unknown {
                    out.push(Action::Event(Event::ClusterAgrees {
                        endpoint: *ip,
                        state: *h,
                    }));
                }
            }
        }
        for ip in &self.s.policy.endpoints {
            if view.health.get(ip).copied().unwrap_or(Health::Unknown) == Health::Unknown {
                self.unknown_since.entry(*ip).or_insert(now);
            } else {
                self.unknown_since.remove(ip);
                self.unsettled.remove(ip);
                self.waiting_reported.remove(ip);
            }
        }
        if let Some(d) = &mut self.damping {
            // Every node follows the agreed states, leader or not, so a new leader knows the penalties.
            for (ip, h) in &view.health {
                if let Some(e) = d.observe(now, *ip, *h) {
                    out.push(Action::Event(Event::Damping(e)));
                }
            }
        }
        if let Some(sel) = &mut self.select {
            // Every node follows the agreed states, so a new leader has the same tiers and switch.
            let mut moved = sel.observe_unsettled(now, &self.unsettled);
            moved.extend(sel.observe_agreed(now, &view.health));
            if !moved.is_empty() && view.leader {
                self.sync_soon(now);
            }
            out.extend(moved.into_iter().map(|e| Action::Event(Event::Select(e))));
        }
        if let Some(f) = &mut self.failback {
            for (ip, h) in &view.health {
                f.observe(now, *ip, *h);
            }
        }
        let became_leader = view.leader && !self.leader;
        self.agreed.clone_from(&view.health);
        self.leader = view.leader;
        if became_leader {
            // A new leader trusts nothing it cached while standing by.
            self.published.set(None);
            self.reconciling = None;
        }
        if !self.leader {
            // A hold belongs to the leader that started it.
            self.hold_since = None;
            self.hold.set(None);
            self.recovering_since = None;
        } else if changed || became_leader {
            self.sync_soon(now);
        }
        out
    }

    /// When the driver should call [`ServiceCore::poll`] next, if nothing else happens first.
    pub fn next_wake(&self) -> Option<Instant> {
        let sync = self
            .sync_at
            .map(|t| self.not_before.map_or(t, |nb| t.max(nb)));
        let settle = self
            .unknown_since
            .iter()
            .filter(|(ip, _)| self.rules.settle_unknown && !self.unsettled.contains(ip))
            .map(|(_, t)| *t + self.s.settle_bound())
            .min();
        let reconcile = self.leader.then_some(self.reconcile_at);
        // An override starting or ending changes the plan; boundaries already past are handled by
        // the poll that follows them.
        let overrides = self.overrides.next_boundary(self.overrides_checked);
        let damping = self.damping.as_ref().and_then(Damping::next_wake);
        let select = self.select.as_ref().and_then(Selector::next_wake);
        let failback = self.failback.as_ref().and_then(Failback::next_wake);
        [
            sync, settle, reconcile, overrides, damping, select, failback,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Does whatever is due at `now`: at most one writer operation is asked for at a time.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.settle(now, &mut out);
        self.track_overrides(now, &mut out);
        if let Some(d) = &mut self.damping {
            let reused = d.poll(now);
            if !reused.is_empty() && self.leader {
                self.sync_soon(now);
            }
            out.extend(reused.into_iter().map(|e| Action::Event(Event::Damping(e))));
        }
        if let Some(sel) = &mut self.select {
            // `settle` above may have found endpoints unsettled: priority stops waiting for them.
            let mut moved = sel.observe_unsettled(now, &self.unsettled);
            moved.extend(sel.poll(now));
            if !moved.is_empty() && self.leader {
                self.sync_soon(now);
            }
            out.extend(moved.into_iter().map(|e| Action::Event(Event::Select(e))));
        }
        if let Some(f) = &mut self.failback
            && !f.poll(now).is_empty()
            && self.leader
        {
            self.sync_soon(now);
        }
        if now >= self.reconcile_at {
            self.reconcile_at = now + self.s.reconcile_interval;
            if self.leader && self.io == Io::Idle {
                self.reconciling = self.published.take();
                self.sync_soon(now);
            }
        }
        if !self.leader || self.io != Io::Idle {
            return out;
        }
        let due =
            self.sync_at.is_some_and(|t| t <= now) && self.not_before.is_none_or(|nb| nb <= now);
        if !due {
            return out;
        }
        self.sync_at = None;
        match self.published.get().clone() {
            None => {
                self.io = Io::Reading;
                out.push(Action::Read);
            }
            Some(published) => self.plan_and_write(now, &published, &mut out),
        }
        out
    }

    /// The answer to [`Action::Read`].
    pub fn on_read(&mut self, now: Instant, result: Result<Published, WriteError>) -> Vec<Action> {
        let mut out = Vec::new();
        match (std::mem::replace(&mut self.io, Io::Idle), result) {
            (Io::Reading, Ok(p)) => {
                if let Some(believed) = self.reconciling.take() {
                    self.drifted |= believed != p;
                }
                self.published.set(Some(p));
                self.sync_soon(now);
            }
            (Io::ReadingBack(plan, _), Ok(found)) if found == plan.desired_records() => {
                self.published.set(Some(found));
                self.succeeded();
            }
            (Io::ReadingBack(plan, change), Ok(found)) => {
                if shows(&found, &change) {
                    // Our change is there, and so is someone else's: plan again from what is there.
                    self.published.set(Some(found));
                    self.conflict_round(now, &mut out);
                } else {
                    out.push(Action::Event(Event::NotApplied {
                        expected: plan.desired_records(),
                        found,
                    }));
                    self.published.set(None);
                    self.back_off(now, true);
                }
            }
            (Io::ReadingBack(..), Err(e)) => {
                self.failed(now, "reading back after the write", e, &mut out)
            }
            (_, Err(e)) => self.failed(now, "reading published records", e, &mut out),
            (io, Ok(_)) => self.io = io,
        }
        out
    }

    /// The answer to [`Action::Apply`].
    pub fn on_applied(&mut self, now: Instant, result: Result<(), WriteError>) -> Vec<Action> {
        let mut out = Vec::new();
        let Io::Applying(plan, change) = std::mem::replace(&mut self.io, Io::Idle) else {
            return out;
        };
        match result {
            Ok(()) => {
                self.safety.applied(now, &plan);
                out.push(Action::Event(Event::Updated(plan.clone())));
                if std::mem::take(&mut self.drifted) {
                    out.push(Action::Event(Event::DriftRepaired));
                }
                if self.s.capabilities.read_back {
                    self.io = Io::ReadingBack(plan, change);
                    out.push(Action::Read);
                } else {
                    self.published.set(Some(plan.desired_records()));
                    self.succeeded();
                }
            }
            Err(WriteError::Conflict(why)) => {
                out.push(Action::Event(Event::Conflict(why)));
                self.published.set(None);
                self.conflict_round(now, &mut out);
            }
            Err(e) => self.failed(now, "writing", e, &mut out),
        }
        out
    }

    fn sync_soon(&mut self, now: Instant) {
        self.sync_by(now);
    }

    /// Makes a sync due at `at` at the latest.
    fn sync_by(&mut self, at: Instant) {
        self.sync_at = Some(self.sync_at.map_or(at, |t| t.min(at)));
    }

    /// Reports endpoints that have just passed the settle bound without a verdict.
    fn settle(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.rules.settle_unknown {
            return;
        }
        let bound = self.s.settle_bound();
        let newly: Vec<(IpAddr, Instant)> = self
            .unknown_since
            .iter()
            .filter(|(ip, since)| !self.unsettled.contains(ip) && now >= **since + bound)
            .map(|(ip, since)| (*ip, *since))
            .collect();
        for (ip, since) in newly {
            self.unsettled.insert(ip);
            let detail = self
                .machines
                .get(&ip)
                .map(|m| m.last_detail().to_owned())
                .unwrap_or_default();
            out.push(Action::Event(Event::Unsettled {
                endpoint: ip,
                after: now - since,
                detail,
            }));
            if self.leader {
                self.sync_soon(now);
            }
        }
    }

    /// Whether `ip` waits to be re-checked: another endpoint started failing (within the last
    /// [`Settings::recheck_bound`]) after this node's last probe result of `ip`.
    fn unchecked(&self, now: Instant, ip: IpAddr) -> bool {
        if !self.rules.recheck_siblings {
            return false;
        }
        let last = self.last_seq.get(&ip).copied().unwrap_or(0);
        let bound = self.s.recheck_bound();
        self.failing_since
            .iter()
            .any(|(other, (at, seq))| *other != ip && *seq > last && now < *at + bound)
    }

    /// When the earliest wait for a re-check ends, if any endpoint waits.
    fn recheck_deadline(&self, now: Instant) -> Option<Instant> {
        let bound = self.s.recheck_bound();
        self.failing_since
            .values()
            .map(|(at, _)| *at + bound)
            .filter(|end| *end > now)
            .min()
    }

    fn doubts(&self, now: Instant) -> Doubts {
        let bound = self.s.hold_bound();
        let expired = |since: Instant| self.rules.end_holds && now >= since + bound;
        let in_doubt = if !self.rules.hold_removals || self.hold_since.is_some_and(expired) {
            BTreeSet::new()
        } else {
            self.machines
                .iter()
                .filter(|(ip, m)| m.in_doubt() || self.unchecked(now, **ip))
                .map(|(ip, _)| *ip)
                .collect()
        };
        let recovering = match self.recovering_since {
            Some(since) if self.rules.hold_removals && !expired(since) => self
                .s
                .policy
                .endpoints
                .iter()
                .copied()
                .filter(|ip| self.agreed.get(ip) == Some(&Health::Down))
                .filter(|ip| match self.last_probe.get(ip) {
                    Some((at, ok)) => *at < since || *ok,
                    None => true,
                })
                .collect(),
            _ => BTreeSet::new(),
        };
        Doubts {
            in_doubt,
            unsettled: self.unsettled.clone(),
            recovering,
            held_out: self.held_out(now),
        }
    }

    /// The planner over the verdicts after the overrides in effect at `now`, with the overrides'
    /// reasons on the changes they caused.
    fn plan_with_overrides(&self, now: Instant, published: &Published) -> Plan {
        let applied = self.overrides.apply(
            now,
            &self.s.policy,
            &self.agreed,
            published,
            &self.doubts(now),
        );
        let mut plan = super::plan(&self.s.policy, &applied.health, published, &applied.doubts);
        applied.explain(&mut plan);
        plan
    }

    /// Up endpoints the policies keep out, with their reasons.
    fn held_out(&self, now: Instant) -> BTreeMap<IpAddr, Reason> {
        let mut held = BTreeMap::new();
        if let Some(d) = &self.damping {
            for (ip, penalty) in d.suppressed(now) {
                held.insert(
                    ip,
                    Reason::Damped {
                        penalty: penalty.round() as u64,
                    },
                );
            }
        }
        if let Some(f) = &self.failback {
            // Only a return to DNS waits: an endpoint still published (its removal never happened)
            // stays.
            let published = |ip: &IpAddr| {
                self.published
                    .get()
                    .as_ref()
                    .is_some_and(|p| p.records.contains_key(ip))
            };
            // An operator's force_up publishes the endpoint whatever its history.
            let active = self.overrides.active(now);
            let forced_up = |ip: &IpAddr| {
                active
                    .get(ip)
                    .is_some_and(|w| w.kind == OverrideKind::ForceUp)
            };
            for ip in f
                .held(now)
                .into_keys()
                .filter(|ip| !published(ip) && !forced_up(ip))
            {
                held.entry(ip)
                    .or_insert(Reason::ReaddDelay { delay: f.delay() });
            }
        }
        if let (Some(sel), Some(published)) = (&self.select, self.published.get()) {
            let excluded: BTreeSet<IpAddr> = held.keys().copied().collect();
            for (ip, why) in sel.held_out(
                now,
                &self.s.policy.endpoints,
                &published.addresses(),
                &excluded,
            ) {
                held.entry(ip).or_insert(why);
            }
        }
        held
    }

    fn plan(&mut self, now: Instant, published: &Published) -> Plan {
        let mut plan = self.plan_with_overrides(now, published);
        // Whether or not this plan already removes something (another hold may be keeping removals
        // back for now), the service has just left its all-down fallback: endpoints may be recovering.
        let leaving_fallback = self.rules.hold_recovering
            && self.in_fallback
            && plan.policy_applied.is_none()
            && self.recovering_since.is_none();
        if leaving_fallback {
            self.recovering_since = Some(now);
            plan = self.plan_with_overrides(now, published);
        }
        if self.rules.end_holds
            && self
                .recovering_since
                .is_some_and(|t| now >= t + self.s.hold_bound())
        {
            self.recovering_since = None;
        }
        self.in_fallback = plan.policy_applied.is_some();
        let mut limited = self.safety.limit(now, plan.clone(), published);
        self.safety.remember(now, &plan);
        // Weights go only to a writer that can publish them; the others get plain records (the
        // configuration warned about it at start and reload).
        let weights = self
            .s
            .policies
            .weights
            .as_ref()
            .filter(|_| self.s.capabilities.weighted);
        super::weigh(&mut limited, published, weights);
        limited
    }

    fn plan_and_write(&mut self, now: Instant, published: &Published, out: &mut Vec<Action>) {
        let plan = self.plan(now, published);
        self.last_plan.set(Some(plan.clone()));
        self.track_queue(now, &plan, out);
        self.track_hold(now, &plan, out);
        self.report_waiting(&plan, out);
        if plan.is_empty() {
            // The records changed out of band to what the plan wants: nothing to repair.
            self.drifted = false;
            self.succeeded();
            return;
        }
        if let Some(target) = &published.cname {
            let error = WriteError::Rejected(format!(
                "{} has a CNAME to {target}, and a name with a CNAME can hold no other data (RFC 1034 §3.6.2): servers accept address records beside it and silently drop them; remove the CNAME, or point the service at the CNAME's target",
                self.s.fqdn
            ));
            self.failed(now, "planning", error, out);
            return;
        }
        if self.s.dry_run {
            if self.last_dry_run.as_ref() != Some(&plan) {
                out.push(Action::Event(Event::WouldUpdate(plan.clone())));
                self.last_dry_run = Some(plan);
            }
            self.succeeded();
            return;
        }
        let change = RecordChange {
            fqdn: self.s.fqdn.clone(),
            zone: self.s.zone.clone(),
            ttl: self.s.policy.ttl,
            precondition: Precondition::RrsetEquals(plan.expected.clone()),
            add: plan.additions(),
            remove: plan.removals(),
            rettl: plan.rettl(),
            weights: plan.weights.clone(),
        };
        self.io = Io::Applying(plan, change.clone());
        out.push(Action::Apply(change));
    }

    /// Starts or ends a hold on removals, and makes sure the hold is re-examined when it expires.
    fn track_hold(&mut self, now: Instant, plan: &Plan, out: &mut Vec<Action>) {
        if plan.deferred.is_empty() {
            self.hold_since = None;
            self.hold.set(None);
            return;
        }
        let bound = self.s.hold_bound();
        let since = match self.hold_since {
            Some(t) => t,
            None => {
                let rechecking = self.machines.iter().any(|(ip, m)| {
                    !m.in_doubt() && !plan.deferred.contains(ip) && self.unchecked(now, *ip)
                });
                let reason = if self.recovering_since.is_some() {
                    HoldReason::Recovering
                } else if rechecking {
                    HoldReason::Rechecking
                } else {
                    HoldReason::RemainingInDoubt
                };
                out.push(Action::Event(Event::Holding {
                    held: plan.deferred.clone(),
                    reason,
                    bound,
                }));
                self.hold.set(Some((reason, plan.deferred.clone())));
                self.hold_since = Some(now);
                now
            }
        };
        self.sync_by(since + bound);
        if let Some(t) = self.recovering_since {
            self.sync_by(t + bound);
        }
        // A sibling that is never re-checked stops holding the removal back at the recheck bound.
        if let Some(t) = self.recheck_deadline(now) {
            self.sync_by(t);
        }
    }

    /// Makes sure a plan runs when queued changes may go, and reports the queue when it grows.
    fn track_queue(&mut self, now: Instant, plan: &Plan, out: &mut Vec<Action>) {
        let next = self.safety.next_release(now, plan);
        if let Some(at) = next {
            self.sync_by(at);
        }
        let queued: BTreeSet<(IpAddr, bool)> = plan
            .queued
            .iter()
            .filter_map(|q| match q.change {
                super::Change::Add(ip) => Some((ip, true)),
                super::Change::Remove(ip) => Some((ip, false)),
                super::Change::Ttl(_) | super::Change::Weight(_) => None,
            })
            .collect();
        if !queued.is_subset(&self.queued_reported) {
            out.push(Action::Event(Event::Queued {
                queued: plan.queued.clone(),
                next: next.map(|t| t.saturating_duration_since(now)),
            }));
        }
        self.queued_reported = queued;
    }

    /// Says once per endpoint when removals wait for its first verdict.
    fn report_waiting(&mut self, plan: &Plan, out: &mut Vec<Action>) {
        let would_remove_down = self
            .s
            .policy
            .endpoints
            .iter()
            .any(|ip| self.agreed.get(ip) == Some(&Health::Down) && plan.expected.contains(ip));
        let fresh: BTreeSet<IpAddr> = plan
            .blocking_unknown
            .difference(&self.waiting_reported)
            .copied()
            .collect();
        if would_remove_down && !fresh.is_empty() {
            self.waiting_reported.extend(fresh);
            out.push(Action::Event(Event::WaitingForVerdicts {
                unknown: plan.blocking_unknown.clone(),
                bound: self.s.settle_bound(),
            }));
        }
    }

    fn conflict_round(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.rounds += 1;
        if self.rounds >= MAX_CONFLICT_ROUNDS {
            out.push(Action::Event(Event::KeptChanging));
            self.published.set(None);
            self.back_off(now, false);
        } else {
            self.sync_soon(now);
        }
    }

    fn succeeded(&mut self) {
        self.backoff = BACKOFF_MIN;
        self.not_before = None;
        self.rounds = 0;
    }

    fn failed(
        &mut self,
        now: Instant,
        doing: &'static str,
        error: WriteError,
        out: &mut Vec<Action>,
    ) {
        self.published.set(None);
        let slow = error.needs_operator();
        let retry = if slow { OPERATOR_RETRY } else { self.backoff };
        out.push(Action::Event(Event::Failed {
            doing,
            error,
            retry,
        }));
        self.back_off(now, slow);
    }

    fn back_off(&mut self, now: Instant, slow: bool) {
        self.rounds = 0;
        let delay = if slow { OPERATOR_RETRY } else { self.backoff };
        if !slow {
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        let at = now + delay;
        self.not_before = Some(at);
        self.sync_at = Some(at);
    }
}

/// Whether `found` shows `change`: every added and re-TTLed address with the change's TTL (and its
/// weight, or plain when the change has no weights), and no removed one.
fn shows(found: &Published, change: &RecordChange) -> bool {
    change.add.iter().chain(&change.rettl).all(|ip| {
        found.records.get(ip) == Some(&change.ttl)
            && found.weights.get(ip) == change.weights.get(ip)
    }) && change
        .remove
        .iter()
        .all(|ip| !found.records.contains_key(ip))
}

#[cfg(test)]
mod tests;

/// A field whose every assignment is counted ([`ServiceCore::revision`]). Its parts are private to
/// this module, so no assignment can skip the count.
mod revised {
    /// A value and how many times it was assigned.
    #[derive(Debug, Clone, Default)]
    pub(super) struct Revised<T> {
        value: T,
        revision: u64,
    }

    impl<T> Revised<T> {
        pub(super) fn get(&self) -> &T {
            &self.value
        }

        pub(super) fn set(&mut self, value: T) {
            self.value = value;
            self.revision += 1;
        }

        pub(super) fn revision(&self) -> u64 {
            self.revision
        }
    }

    impl<T: Default> Revised<T> {
        pub(super) fn take(&mut self) -> T {
            self.revision += 1;
            std::mem::take(&mut self.value)
        }
    }
}
use revised::Revised;
