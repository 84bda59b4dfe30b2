//! Decide: turn verdicts and the published record set into the desired record set and a plan (sans-I/O).
//!
//! - [`plan`]: the pure planner, below.
//! - [`overrides`]: an operator's drain, maintenance, force-up and force-down, applied between the
//!   verdicts and the planner.
//! - [`service`]: the service core, the state machine around the planner that the daemon's controller
//!   and the simulator both drive (hold, backoff, reconcile, conflicts, read-back).
//!
//! Rules of the planner, per service (A and AAAA together; the writer splits them by family):
//! - An endpoint that is [`Health::Up`] is published, one that is [`Health::Down`] is not.
//! - While an endpoint is still [`Health::Unknown`] (just after start or reload), nothing is removed:
//!   published endpoints stay and up ones are added. A restart therefore never removes records by
//!   itself. An endpoint that stays unknown past the settle bound (its results never settle) is
//!   [`Doubts::unsettled`]: it keeps its place but no longer holds back the removal of others.
//! - If fewer than `min_healthy` records would remain, the service's [`AllDownPolicy`] applies:
//!   `keep_all` publishes every configured endpoint, `keep_last` keeps what is published (plus the healthy
//!   ones, and falls back to `keep_all` if that is still too few), `fail_closed` publishes only healthy ones.
//! - Addresses published under the name that are not configured endpoints are left alone, unless the
//!   service sets `remove_unlisted`.
//! - Removals are held back while too few endpoints would remain *confirmed* up: when the up endpoints
//!   that would stay are themselves in doubt (by this node's own probes: failing since their last
//!   success, or not yet seen up), they may be about to go down too, and then `keep_all` would put back
//!   what was just removed — two DNS changes for one event. Removals also wait while any endpoint is
//!   [`Doubts::recovering`] (endpoints recovering together after an all-down). The service core
//!   bounds both holds, so a removal is delayed, never lost.
//! - Every record at the name ends with the service's TTL: a record whose TTL differs is rewritten
//!   ([`Change::Ttl`]); an RRset has one TTL (RFC 2181 §5.2).

pub mod damping;
pub mod overrides;
pub mod safety;
pub mod select;
pub mod service;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::act::Published;
use crate::config::AllDownPolicy;
pub use crate::observe::health::Health;

/// The settings of a service the planner needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Configured endpoints.
    pub endpoints: Vec<IpAddr>,
    /// Fewest records kept while that many endpoints are configured.
    pub min_healthy: usize,
    /// What to do below `min_healthy`.
    pub all_down: AllDownPolicy,
    /// Remove addresses that are not endpoints.
    pub remove_unlisted: bool,
    /// TTL (s) of every record at the name.
    pub ttl: u32,
    /// Self-registration (`[service.self_register]`): the endpoints are this node's own address, the
    /// other addresses at the name belong to other nodes and count towards `min_healthy` (they are
    /// never probed here, so they count as up); below it, what is published is kept and nothing
    /// down is added (`keep_last` without its `keep_all` fallback), so the last record of the RRset
    /// is never removed and a failing node never adds itself.
    pub self_register: bool,
}

impl Policy {
    /// The policy a service's configuration asks for.
    pub fn of(svc: &crate::config::ServiceConfig) -> Self {
        Policy {
            endpoints: svc.endpoints.clone(),
            min_healthy: svc.min_healthy,
            all_down: svc.all_down,
            remove_unlisted: svc.remove_unlisted,
            ttl: svc.ttl,
            self_register: svc.self_register.is_some(),
        }
    }
}

/// The selection and change-safety policies of a service (issue 11), applied by the service core
/// around [`plan`]; all off by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    /// `[service.damping]`: flap damping; `None`: off.
    pub damping: Option<damping::DampingConfig>,
    /// `[service.select]`: selection mode and canaries; `None`: every up endpoint.
    pub select: Option<select::SelectConfig>,
    /// `readd_delay`: failback hold-down ([`safety::Failback`]); zero: off.
    pub readd_delay: Duration,
    /// `max_changes` per `change_window` ([`safety::ChangeSafety`]); `None`: off.
    pub change_rate: Option<safety::ChangeRate>,
    /// `max_remove_fraction`, in (0, 1]; `None` (or 1): off.
    pub max_remove_fraction: Option<f64>,
    /// `[service.select] weights`: the weight of every configured endpoint (those not listed get
    /// [`select::DEFAULT_WEIGHT`]), passed to writers with weighted records ([`weigh`]); `None`: no
    /// weights, plain records.
    pub weights: Option<BTreeMap<IpAddr, u8>>,
}

/// One change to one record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Publish this address.
    Add(IpAddr),
    /// Stop publishing this address.
    Remove(IpAddr),
    /// Keep this address, but rewrite it with the service's TTL.
    Ttl(IpAddr),
    /// Keep this address, but rewrite it with the weight `[service.select] weights` gives it (or as
    /// a plain record when the service has no weights); only for writers with weighted records
    /// ([`weigh`]).
    Weight(IpAddr),
}

/// Why a change is in the plan, and why an address is in or out of the published set
/// ([`Standing`]). Displayed in config spelling (`all_down=keep_all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The endpoint's verdict: up for an add, down for a removal, unknown for an add by fallback.
    Verdict(Health),
    /// Published although not up, because fewer than `min_healthy` endpoints are up.
    AllDown {
        /// The endpoint's verdict.
        verdict: Health,
        /// The service's `min_healthy`.
        min_healthy: usize,
        /// The policy that decided.
        policy: AllDownPolicy,
    },
    /// Removed although the service is below `min_healthy`: `all_down = fail_closed`.
    FailClosed(Health),
    /// Not a configured endpoint, and the service sets `remove_unlisted = true`.
    Unlisted,
    /// An operator drained the endpoint ([`overrides`]): out of DNS although healthy.
    Drained {
        /// The override's id.
        id: String,
    },
    /// The endpoint is in maintenance ([`overrides`]): failures ignored, published state kept.
    Maintenance {
        /// The override's id.
        id: String,
    },
    /// An operator forced the endpoint up ([`overrides`]).
    ForcedUp {
        /// The override's id.
        id: String,
    },
    /// An operator forced the endpoint down ([`overrides`]).
    ForcedDown {
        /// The override's id.
        id: String,
    },
    /// The record's TTL (s) is not the service's.
    Ttl {
        /// Published TTL, seconds.
        from: u32,
        /// The service's TTL, seconds.
        to: u32,
    },
    /// The record's weight is not the one the service gives it ([`weigh`]).
    Weight {
        /// Published weight; `None`: a plain record.
        from: Option<u8>,
        /// The service's weight; `None`: the service has no weights, the record becomes plain.
        to: Option<u8>,
    },
    /// Published although its verdict says otherwise: its removal is held back while the endpoints
    /// that would remain are in doubt or endpoints are recovering ([`Plan::deferred`]).
    HeldBack(Health),
    /// Published although down: removals wait for a first verdict on the endpoints still unknown
    /// ([`Plan::blocking_unknown`]).
    AwaitingVerdicts(Health),
    /// Unknown for longer than the settle bound: kept if published, never added.
    Unsettled,
    /// Published, not a configured endpoint, left alone (`remove_unlisted = false`).
    UnlistedKept,
    /// Kept out although up: its agreed state changed so often that its flap-damping penalty passed
    /// `suppress`; it returns once the penalty decays below `reuse` ([`damping`], RFC 2439).
    Damped {
        /// The penalty when the plan was made (rounded).
        penalty: u64,
    },
    /// Kept out although up: it recovered less than `readd_delay` ago (failback hold-down).
    ReaddDelay {
        /// The service's `readd_delay`.
        delay: Duration,
    },
    /// Kept out although up: `[service.select] mode = "fastest"` publishes `count` others, each
    /// still good enough or faster ([`select`]).
    NotFastest {
        /// The service's `count`.
        count: usize,
    },
    /// Kept out although up: it is in a standby tier of `mode = "priority"` ([`select`]).
    StandbyTier {
        /// Its tier (1 = first).
        tier: usize,
        /// The leading tiers published now.
        active: usize,
    },
    /// Kept out although up: a canary that passes takes its place ([`select`]).
    ReplacedByCanary {
        /// The canary.
        canary: IpAddr,
    },
    /// A canary kept out although up: more than `canary_max_failing` canaries failed, and not all
    /// of them pass again yet (the canary kill switch, [`select`]).
    CanaryWithdrawn {
        /// The service's `canary_max_failing`.
        max_failing: usize,
    },
    /// The planner wants this change, but a change limit postpones it ([`safety`]): queued, in
    /// [`Plan::queued`].
    Queued {
        /// The limit that holds it.
        limit: safety::Limit,
        /// Why the planner wants the change.
        wanted: Box<Reason>,
    },
    /// A policy keeps it out, but it is published so that `min_healthy` records remain.
    KeptForMinHealthy {
        /// The service's `min_healthy`.
        min_healthy: usize,
        /// Why the policy would keep it out.
        held_out: Box<Reason>,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Verdict(h) => write!(f, "{h}"),
            Reason::AllDown {
                verdict,
                min_healthy,
                policy,
            } => write!(
                f,
                "{verdict}, but fewer than min_healthy={min_healthy} up: all_down={policy}"
            ),
            Reason::FailClosed(h) => write!(f, "{h}; all_down=fail_closed"),
            Reason::Unlisted => f.write_str("not a configured endpoint; remove_unlisted=true"),
            Reason::Drained { id } => write!(f, "drained (override {id})"),
            Reason::Maintenance { id } => write!(f, "in maintenance (override {id})"),
            Reason::ForcedUp { id } => write!(f, "forced up (override {id})"),
            Reason::ForcedDown { id } => write!(f, "forced down (override {id})"),
            Reason::Ttl { from, to } => write!(f, "ttl {from}s, service ttl is {to}s"),
            Reason::Weight { from, to } => {
                match from {
                    Some(w) => write!(f, "weight {w}")?,
                    None => f.write_str("plain record")?,
                }
                match to {
                    Some(w) => write!(f, ", service weight is {w}"),
                    None => f.write_str(", the service has no weights"),
                }
            }
            Reason::HeldBack(h) => write!(f, "{h}, removal held back"),
            Reason::AwaitingVerdicts(h) => {
                write!(
                    f,
                    "{h}, removal waits for a first verdict on unknown endpoints"
                )
            }
            Reason::Unsettled => f.write_str("unknown past the settle bound (unsettled)"),
            Reason::UnlistedKept => {
                f.write_str("not a configured endpoint; kept (remove_unlisted=false)")
            }
            Reason::Damped { penalty } => {
                write!(f, "up, but damped: flap penalty {penalty} above suppress")
            }
            Reason::ReaddDelay { delay } => write!(
                f,
                "up, but recovered less than readd_delay={} ago",
                humantime::format_duration(*delay)
            ),
            Reason::NotFastest { count } => {
                write!(f, "up, but not among the fastest count={count}")
            }
            Reason::StandbyTier { tier, active } => write!(
                f,
                "up, but in standby tier {tier} (tiers 1..{active} published)"
            ),
            Reason::ReplacedByCanary { canary } => {
                write!(f, "up, but replaced by canary {canary}")
            }
            Reason::CanaryWithdrawn { max_failing } => write!(
                f,
                "canary up, but withdrawn: more than canary_max_failing={max_failing} canaries failed and not all pass again yet"
            ),
            Reason::KeptForMinHealthy {
                min_healthy,
                held_out,
            } => write!(f, "{held_out}; kept for min_healthy={min_healthy}"),
            Reason::Queued { limit, wanted } => write!(f, "{wanted}; queued: {limit}"),
        }
    }
}

/// What the planner knows besides the verdicts: the service core's doubts about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Doubts {
    /// Endpoints this node does not see solidly up. Removals wait while fewer than `min_healthy` up
    /// endpoints outside this set would remain. Empty: no hold.
    pub in_doubt: BTreeSet<IpAddr>,
    /// Unknown endpoints that have had no verdict for longer than the settle bound: they stay
    /// published if they are, are not added, and no longer hold back removals of other endpoints.
    pub unsettled: BTreeSet<IpAddr>,
    /// Down endpoints that may be recovering (the service is leaving its all-down fallback and this
    /// node has not seen them fail since). While there is one, every removal waits, so that the
    /// removals that do follow go together in one change.
    pub recovering: BTreeSet<IpAddr>,
    /// Up endpoints a policy keeps out of the record set (flap damping, failback hold-down,
    /// selection), each with its reason. They are treated as not up, except that the planner puts
    /// them back (preferring published ones, then configured order) before the all-down policy
    /// applies, so that no policy takes the service below `min_healthy` while enough endpoints are up.
    pub held_out: BTreeMap<IpAddr, Reason>,
}

impl Reason {
    /// A stable machine name for the reason, `snake_case` (`verdict`, `all_down`, `fail_closed`,
    /// `unlisted`, `ttl`, `weight`, `held_back`, `awaiting_verdicts`, `unsettled`, `unlisted_kept`, `drained`,
    /// `maintenance`, `forced_up`, `forced_down`, `damped`, `readd_delay`, `not_fastest`,
    /// `standby_tier`, `replaced_by_canary`, `canary_withdrawn`, `kept_for_min_healthy`, `queued`),
    /// for the API and the audit log; [`fmt::Display`] is the sentence for a person.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Verdict(_) => "verdict",
            Reason::AllDown { .. } => "all_down",
            Reason::FailClosed(_) => "fail_closed",
            Reason::Unlisted => "unlisted",
            Reason::Ttl { .. } => "ttl",
            Reason::Weight { .. } => "weight",
            Reason::HeldBack(_) => "held_back",
            Reason::AwaitingVerdicts(_) => "awaiting_verdicts",
            Reason::Unsettled => "unsettled",
            Reason::UnlistedKept => "unlisted_kept",
            Reason::Drained { .. } => "drained",
            Reason::Maintenance { .. } => "maintenance",
            Reason::ForcedUp { .. } => "forced_up",
            Reason::ForcedDown { .. } => "forced_down",
            Reason::Damped { .. } => "damped",
            Reason::ReaddDelay { .. } => "readd_delay",
            Reason::NotFastest { .. } => "not_fastest",
            Reason::StandbyTier { .. } => "standby_tier",
            Reason::ReplacedByCanary { .. } => "replaced_by_canary",
            Reason::CanaryWithdrawn { .. } => "canary_withdrawn",
            Reason::KeptForMinHealthy { .. } => "kept_for_min_healthy",
            Reason::Queued { .. } => "queued",
        }
    }
}

/// Why one address is in or out of the desired record set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// Whether the address is in [`Plan::desired`].
    pub published: bool,
    /// The rule that put it there or kept it out.
    pub reason: Reason,
}

/// What the planner decided for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The addresses the plan was computed against; writers use them as the compare-and-swap condition.
    pub expected: BTreeSet<IpAddr>,
    /// The addresses after the plan is applied.
    pub desired: BTreeSet<IpAddr>,
    /// TTL (s) of every desired record.
    pub ttl: u32,
    /// The changes, each with the reason for it.
    pub changes: Vec<(Change, Reason)>,
    /// Set when the all-down policy decided the outcome.
    pub policy_applied: Option<AllDownPolicy>,
    /// Removals held back because the endpoints that would remain are in doubt, or because the
    /// endpoints are recovering.
    pub deferred: BTreeSet<IpAddr>,
    /// Endpoints still unknown that keep every removal back (none once they are unsettled).
    pub blocking_unknown: BTreeSet<IpAddr>,
    /// Every configured endpoint and every published address: in or out of `desired`, and why.
    pub standing: BTreeMap<IpAddr, Standing>,
    /// Up endpoints a policy keeps out of `desired`, each with its reason (see [`Doubts::held_out`]).
    pub held_out: BTreeMap<IpAddr, Reason>,
    /// Endpoints a policy would keep out, published to keep `min_healthy` records.
    pub kept_for_min_healthy: BTreeSet<IpAddr>,
    /// Changes the planner wants that a change limit postpones, first planned first
    /// ([`safety::ChangeSafety::limit`]); not in `changes`.
    pub queued: Vec<safety::Queued>,
    /// Additions made beyond `max_changes` because `min_healthy` needs them.
    pub beyond_limit: BTreeSet<IpAddr>,
    /// The weight of each desired address for a writer with weighted records ([`weigh`]); empty:
    /// plain records.
    pub weights: BTreeMap<IpAddr, u8>,
}

impl Plan {
    /// True when nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Addresses to add.
    pub fn additions(&self) -> BTreeSet<IpAddr> {
        self.desired.difference(&self.expected).copied().collect()
    }

    /// Addresses to remove.
    pub fn removals(&self) -> BTreeSet<IpAddr> {
        self.expected.difference(&self.desired).copied().collect()
    }

    /// Kept addresses to rewrite with the service's TTL or weight.
    pub fn rettl(&self) -> BTreeSet<IpAddr> {
        self.changes
            .iter()
            .filter_map(|(c, _)| match c {
                Change::Ttl(ip) | Change::Weight(ip) => Some(*ip),
                _ => None,
            })
            .collect()
    }

    /// What DNS publishes once the plan is applied.
    pub fn desired_records(&self) -> Published {
        Published {
            weights: self.weights.clone(),
            ..Published::with_ttl(self.desired.iter().copied(), self.ttl)
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let describe = |c: &Change, why: &dyn fmt::Display| match c {
            Change::Add(ip) => format!("add {ip} ({why})"),
            Change::Remove(ip) => format!("remove {ip} ({why})"),
            Change::Ttl(ip) => format!("set ttl of {ip} ({why})"),
            Change::Weight(ip) => format!("set weight of {ip} ({why})"),
        };
        let parts: Vec<String> = self
            .changes
            .iter()
            .map(|(c, why)| describe(c, why))
            .collect();
        if parts.is_empty() {
            f.write_str("no change")?;
        } else {
            f.write_str(&parts.join(", "))?;
        }
        if !self.queued.is_empty() {
            let queued: Vec<String> = self
                .queued
                .iter()
                .map(|q| describe(&q.change, &q.limit))
                .collect();
            write!(f, "; queued: {}", queued.join(", "))?;
        }
        Ok(())
    }
}

/// The sets the planner works with, derived once from its inputs.
struct Sets {
    managed: BTreeSet<IpAddr>,
    up: BTreeSet<IpAddr>,
    /// Up endpoints a policy keeps out, in refill order (published first, then configured order).
    up_held: Vec<IpAddr>,
    addresses: BTreeSet<IpAddr>,
    published_managed: BTreeSet<IpAddr>,
    blocking_unknown: BTreeSet<IpAddr>,
    /// Published addresses of other nodes that count towards `min_healthy` (self-registration only).
    others: usize,
}

impl Sets {
    fn new(
        policy: &Policy,
        verdict: &impl Fn(&IpAddr) -> Health,
        published: &Published,
        doubts: &Doubts,
    ) -> Sets {
        let addresses = published.addresses();
        let managed: BTreeSet<IpAddr> = policy.endpoints.iter().copied().collect();
        let up = managed
            .iter()
            .copied()
            .filter(|ip| verdict(ip) == Health::Up && !doubts.held_out.contains_key(ip))
            .collect();
        let published_managed: BTreeSet<IpAddr> =
            addresses.intersection(&managed).copied().collect();
        let held_up = |ip: &&IpAddr| verdict(ip) == Health::Up && doubts.held_out.contains_key(ip);
        let up_held = policy
            .endpoints
            .iter()
            .filter(held_up)
            .filter(|ip| published_managed.contains(ip))
            .chain(
                policy
                    .endpoints
                    .iter()
                    .filter(held_up)
                    .filter(|ip| !published_managed.contains(ip)),
            )
            .copied()
            .collect();
        let blocking_unknown = managed
            .iter()
            .copied()
            .filter(|ip| verdict(ip) == Health::Unknown && !doubts.unsettled.contains(ip))
            .collect();
        let others = if policy.self_register {
            addresses.difference(&managed).count()
        } else {
            0
        };
        Sets {
            managed,
            up,
            up_held,
            addresses,
            published_managed,
            blocking_unknown,
            others,
        }
    }
}

/// Computes the plan for one service.
///
/// `health` holds the verdict of each configured endpoint (missing means unknown); `published` is what
/// DNS serves for the name now (A and AAAA with TTLs); `doubts` are the service core's doubts (pass
/// `Doubts::default()` for none).
pub fn plan(
    policy: &Policy,
    health: &BTreeMap<IpAddr, Health>,
    published: &Published,
    doubts: &Doubts,
) -> Plan {
    let verdict = |ip: &IpAddr| health.get(ip).copied().unwrap_or(Health::Unknown);
    let sets = Sets::new(policy, &verdict, published, doubts);
    let (base, mut desired, policy_applied, kept_for_min_healthy) =
        managed_target(policy, &verdict, &sets, doubts);
    let deferred = hold_back(policy, &verdict, &sets, doubts, &mut desired);
    let unlisted: BTreeSet<IpAddr> = sets.addresses.difference(&sets.managed).copied().collect();
    if !policy.remove_unlisted {
        desired.extend(unlisted.iter().copied());
    }
    let changes = changes(
        policy,
        &verdict,
        published,
        &desired,
        &unlisted,
        policy_applied,
        doubts,
        &kept_for_min_healthy,
    );
    let standing = standing(
        policy,
        &verdict,
        &sets,
        doubts,
        &base,
        &desired,
        &deferred,
        policy_applied,
        &kept_for_min_healthy,
    );
    let held_out = doubts
        .held_out
        .iter()
        .filter(|(ip, _)| !desired.contains(ip))
        .map(|(ip, why)| (*ip, why.clone()))
        .collect();
    Plan {
        expected: sets.addresses,
        desired,
        ttl: policy.ttl,
        changes,
        policy_applied,
        deferred,
        blocking_unknown: sets.blocking_unknown,
        standing,
        held_out,
        kept_for_min_healthy,
        queued: Vec::new(),
        beyond_limit: BTreeSet::new(),
        weights: BTreeMap::new(),
    }
}

/// Gives `plan` the weights of a service whose writer publishes weighted records
/// ([`crate::act::Capabilities::weighted`]): `weights` is `[service.select] weights` with every
/// endpoint filled in ([`Policies::weights`]; `None`: the service has no weights, so records are
/// plain). A desired address that is not an endpoint (an unlisted address kept at the name) keeps
/// the weight it is published with, else gets [`select::DEFAULT_WEIGHT`]. Every kept address whose
/// published weight differs (or that is plain where weights are wanted, or weighted where they
/// are not) gets a [`Change::Weight`], written like a TTL change (the writer replaces its record
/// set). Weights never change which addresses are published: selection, `min_healthy` and the
/// all-down policies decide that first, and a weight of 0 still publishes the address.
pub fn weigh(plan: &mut Plan, published: &Published, weights: Option<&BTreeMap<IpAddr, u8>>) {
    plan.weights = match weights {
        None => BTreeMap::new(),
        Some(w) => plan
            .desired
            .iter()
            .map(|ip| {
                let weight = w
                    .get(ip)
                    .or_else(|| published.weights.get(ip))
                    .copied()
                    .unwrap_or(select::DEFAULT_WEIGHT);
                (*ip, weight)
            })
            .collect(),
    };
    let kept: Vec<IpAddr> = plan
        .desired
        .iter()
        .filter(|ip| published.records.contains_key(ip))
        .copied()
        .collect();
    for ip in kept {
        let from = published.weights.get(&ip).copied();
        let to = plan.weights.get(&ip).copied();
        if from != to {
            plan.changes
                .push((Change::Weight(ip), Reason::Weight { from, to }));
        }
    }
}

/// Why each configured endpoint and each published address is in or out of `desired`, by the same
/// rules that built it: `base` is what the endpoints' verdicts alone keep (before the all-down
/// policy), `deferred` the removals held back.
#[allow(clippy::too_many_arguments)]
fn standing(
    policy: &Policy,
    verdict: &impl Fn(&IpAddr) -> Health,
    sets: &Sets,
    doubts: &Doubts,
    base: &BTreeSet<IpAddr>,
    desired: &BTreeSet<IpAddr>,
    deferred: &BTreeSet<IpAddr>,
    policy_applied: Option<AllDownPolicy>,
    kept: &BTreeSet<IpAddr>,
) -> BTreeMap<IpAddr, Standing> {
    sets.managed
        .union(&sets.addresses)
        .map(|ip| {
            let published = desired.contains(ip);
            let v = verdict(ip);
            let reason = if !sets.managed.contains(ip) {
                if published {
                    Reason::UnlistedKept
                } else {
                    Reason::Unlisted
                }
            } else if published && kept.contains(ip) {
                Reason::KeptForMinHealthy {
                    min_healthy: policy.min_healthy,
                    held_out: Box::new(
                        doubts
                            .held_out
                            .get(ip)
                            .cloned()
                            .unwrap_or(Reason::Verdict(v)),
                    ),
                }
            } else if !published && let Some(why) = doubts.held_out.get(ip) {
                why.clone()
            } else if deferred.contains(ip) {
                Reason::HeldBack(v)
            } else if published {
                match (v, policy_applied) {
                    (Health::Up, _) => Reason::Verdict(Health::Up),
                    (_, Some(p)) if !base.contains(ip) => Reason::AllDown {
                        verdict: v,
                        min_healthy: policy.min_healthy,
                        policy: p,
                    },
                    (Health::Unknown, _) if doubts.unsettled.contains(ip) => Reason::Unsettled,
                    (Health::Unknown, _) => Reason::Verdict(Health::Unknown),
                    (Health::Down, _) => Reason::AwaitingVerdicts(Health::Down),
                }
            } else if policy_applied == Some(AllDownPolicy::FailClosed) && v != Health::Unknown {
                Reason::FailClosed(v)
            } else if v == Health::Unknown && doubts.unsettled.contains(ip) {
                Reason::Unsettled
            } else {
                Reason::Verdict(v)
            };
            (*ip, Standing { published, reason })
        })
        .collect()
}

/// What the verdicts alone keep (with held-out endpoints put back to keep `min_healthy`), the
/// configured endpoints to publish, the all-down policy if it decided, and the held-out endpoints put
/// back.
fn managed_target(
    policy: &Policy,
    verdict: &impl Fn(&IpAddr) -> Health,
    sets: &Sets,
    doubts: &Doubts,
) -> (
    BTreeSet<IpAddr>,
    BTreeSet<IpAddr>,
    Option<AllDownPolicy>,
    BTreeSet<IpAddr>,
) {
    let mut base: BTreeSet<IpAddr> = if sets.blocking_unknown.is_empty() {
        let kept_unsettled = sets
            .published_managed
            .iter()
            .copied()
            .filter(|ip| verdict(ip) == Health::Unknown && doubts.unsettled.contains(ip));
        sets.up.iter().copied().chain(kept_unsettled).collect()
    } else {
        sets.published_managed.union(&sets.up).copied().collect()
    };
    // A policy keeps up endpoints out only while enough others remain: put them back first.
    let mut kept = BTreeSet::new();
    for ip in &sets.up_held {
        if base.len() + sets.others >= policy.min_healthy {
            break;
        }
        if base.insert(*ip) {
            kept.insert(*ip);
        }
    }
    if base.len() + sets.others >= policy.min_healthy {
        return (base.clone(), base, None, kept);
    }
    let up_all: BTreeSet<IpAddr> = sets.up.iter().chain(&sets.up_held).copied().collect();
    if policy.self_register {
        // The last record stays; a node that fails its own check never adds itself.
        let target = sets.published_managed.union(&up_all).copied().collect();
        return (base, target, Some(AllDownPolicy::KeepLast), kept);
    }
    let target = match policy.all_down {
        AllDownPolicy::KeepAll => sets.managed.clone(),
        AllDownPolicy::KeepLast => {
            let kept: BTreeSet<IpAddr> = sets.published_managed.union(&up_all).copied().collect();
            if kept.len() >= policy.min_healthy {
                kept
            } else {
                sets.managed.clone()
            }
        }
        AllDownPolicy::FailClosed => base.clone(),
    };
    (base, target, Some(policy.all_down), kept)
}

/// Puts back into `desired` the removals that must wait, and returns them.
fn hold_back(
    policy: &Policy,
    verdict: &impl Fn(&IpAddr) -> Health,
    sets: &Sets,
    doubts: &Doubts,
    desired: &mut BTreeSet<IpAddr>,
) -> BTreeSet<IpAddr> {
    let mut deferred = BTreeSet::new();
    if policy.all_down == AllDownPolicy::FailClosed {
        return deferred;
    }
    // Endpoints that would remain and that this node sees solidly up (or, unsettled, has stopped
    // doubting once the hold ended: the caller then passes no in-doubt set), and other nodes'
    // self-registered addresses, which this node does not probe.
    let confirmed_up = desired
        .iter()
        .filter(|ip| {
            (verdict(ip) == Health::Up || doubts.unsettled.contains(ip))
                && !doubts.in_doubt.contains(ip)
        })
        .count()
        + sets.others;
    let removals: Vec<IpAddr> = sets
        .published_managed
        .difference(desired)
        .copied()
        .collect();
    for ip in removals {
        // While any endpoint may be recovering, every removal waits: they go together, in one
        // change, once the recovering ones are up or seen failing.
        if confirmed_up < policy.min_healthy || !doubts.recovering.is_empty() {
            deferred.insert(ip);
            desired.insert(ip);
        }
    }
    deferred
}

/// The changes from `published` to `desired`, each with its reason.
#[allow(clippy::too_many_arguments)]
fn changes(
    policy: &Policy,
    verdict: &impl Fn(&IpAddr) -> Health,
    published: &Published,
    desired: &BTreeSet<IpAddr>,
    unlisted: &BTreeSet<IpAddr>,
    policy_applied: Option<AllDownPolicy>,
    doubts: &Doubts,
    kept_for_min_healthy: &BTreeSet<IpAddr>,
) -> Vec<(Change, Reason)> {
    let addresses = published.addresses();
    let mut changes = Vec::new();
    for ip in desired.difference(&addresses) {
        let why = match (verdict(ip), policy_applied) {
            (Health::Up, _) if kept_for_min_healthy.contains(ip) => Reason::KeptForMinHealthy {
                min_healthy: policy.min_healthy,
                held_out: Box::new(doubts.held_out[ip].clone()),
            },
            (Health::Up, _) => Reason::Verdict(Health::Up),
            (h, Some(p)) => Reason::AllDown {
                verdict: h,
                min_healthy: policy.min_healthy,
                policy: p,
            },
            (h, None) => Reason::Verdict(h),
        };
        changes.push((Change::Add(*ip), why));
    }
    for ip in addresses.difference(desired) {
        let why = if unlisted.contains(ip) {
            Reason::Unlisted
        } else if let Some(held) = doubts.held_out.get(ip)
            && verdict(ip) == Health::Up
        {
            held.clone()
        } else if policy_applied == Some(AllDownPolicy::FailClosed) {
            Reason::FailClosed(verdict(ip))
        } else {
            Reason::Verdict(verdict(ip))
        };
        changes.push((Change::Remove(*ip), why));
    }
    for ip in desired.intersection(&addresses) {
        let from = published.records[ip];
        if from != policy.ttl {
            changes.push((
                Change::Ttl(*ip),
                Reason::Ttl {
                    from,
                    to: policy.ttl,
                },
            ));
        }
    }
    changes
}
