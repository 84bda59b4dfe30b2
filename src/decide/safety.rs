//! Change safety: how fast a service's record set may change (sans-I/O).
//!
//! Three policies of a service, all off by default, applied by the service core around the planner
//! (verdicts → overrides → selection → damping → failback hold-down → `min_healthy`/all-down →
//! change limits):
//! - [`Failback`] (`readd_delay`, a failback hold-down): an endpoint whose *agreed* state goes from
//!   down to up stays out of DNS until it has been up for `readd_delay`. Only a recovery counts: the
//!   first agreed state after a start or reload (unknown → up) does not, and an endpoint still
//!   published (its removal never happened) is not taken out. It is held out through
//!   [`super::Doubts::held_out`], so the planner puts it back before the service would go below
//!   `min_healthy`.
//! - `max_changes` per `change_window` ([`ChangeRate`]): no sliding window of `change_window` sees
//!   more than `max_changes` record changes (one address added or removed; a TTL rewrite is no
//!   membership change and is not counted) applied by this node. Changes beyond the limit queue and
//!   go later, first planned first.
//! - `max_remove_fraction`: a *step* is one write of the record set; one step removes at most
//!   max(1, ⌊`max_remove_fraction` × n⌋) records, n being the records published at the name before
//!   it. When removals had to wait, the next step that removes anything comes no sooner than one
//!   probe `interval` after the capped one, so every endpoint is probed again in between.
//!
//! Both limits work on the planner's full plan ([`ChangeSafety::limit`]): the changes it wants are
//! remembered with the time they were first planned; each plan takes as many as the limits allow, in
//! that order, and queues the rest ([`super::Plan::queued`]). The queue is rebuilt from every new
//! plan, so a queued change that the latest plan no longer wants (an endpoint that recovers before its
//! removal ran) is simply gone: the latest decision wins, nothing wanted is ever dropped.
//!
//! The one exception, for safety: additions are never held by `max_changes` while fewer than
//! `min_healthy` (or, when the plan itself publishes fewer, that many) of the records that would
//! remain are ones the plan wants; a record whose removal is queued does not count. Holding them
//! could leave the name with only failed records, or none. They still count in the window
//! ([`super::Plan::beyond_limit`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::{Change, Health, Plan, Reason, Standing};
use crate::act::Published;

/// `readd_delay`: the failback hold-down of one service's endpoints.
#[derive(Debug, Clone)]
pub struct Failback {
    delay: Duration,
    /// Last agreed state that was up or down.
    last: BTreeMap<IpAddr, Health>,
    /// Recovered endpoints and when their hold-down ends.
    until: BTreeMap<IpAddr, Instant>,
}

impl Failback {
    /// No recoveries yet; `delay` is the service's `readd_delay`.
    pub fn new(delay: Duration) -> Self {
        Failback {
            delay,
            last: BTreeMap::new(),
            until: BTreeMap::new(),
        }
    }

    /// The hold-down.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The agreed state of `endpoint` at `now`. Down → up (unknown in between does not matter)
    /// starts its hold-down; down ends it.
    pub fn observe(&mut self, now: Instant, endpoint: IpAddr, state: Health) {
        if state == Health::Unknown {
            return;
        }
        let before = self.last.insert(endpoint, state);
        match (before, state) {
            (Some(Health::Down), Health::Up) => {
                self.until.insert(endpoint, now + self.delay);
            }
            (_, Health::Down) => {
                self.until.remove(&endpoint);
            }
            _ => {}
        }
    }

    /// Endpoints still in their hold-down at `now`, with its end.
    pub fn held(&self, now: Instant) -> BTreeMap<IpAddr, Instant> {
        self.until
            .iter()
            .filter(|(_, end)| **end > now)
            .map(|(ip, end)| (*ip, *end))
            .collect()
    }

    /// Forgets the hold-downs that ended by `now` and returns their endpoints.
    pub fn poll(&mut self, now: Instant) -> Vec<IpAddr> {
        let ended: Vec<IpAddr> = self
            .until
            .iter()
            .filter(|(_, end)| **end <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &ended {
            self.until.remove(ip);
        }
        ended
    }

    /// When the earliest hold-down ends.
    pub fn next_wake(&self) -> Option<Instant> {
        self.until.values().min().copied()
    }
}

/// `max_changes` per `change_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeRate {
    /// Most record changes applied within any `window`.
    pub max_changes: u32,
    /// The sliding window.
    pub window: Duration,
}

/// Which limit holds a change back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_changes` per `change_window` is used up.
    MaxChanges(ChangeRate),
    /// `max_remove_fraction`: this step may remove at most `cap` records (0 while the step after a
    /// capped one waits for its `interval`).
    RemoveFraction {
        /// Removals this step allows.
        cap: usize,
    },
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::MaxChanges(r) => write!(
                f,
                "max_changes={} per change_window={} used up",
                r.max_changes,
                humantime::format_duration(r.window)
            ),
            Limit::RemoveFraction { cap: 0 } => {
                f.write_str("max_remove_fraction: the next removals wait one interval")
            }
            Limit::RemoveFraction { cap } => {
                write!(
                    f,
                    "max_remove_fraction: at most {cap} removals in this step"
                )
            }
        }
    }
}

/// A change the planner wants that a limit postpones, as [`Plan::queued`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The change ([`Change::Add`] or [`Change::Remove`]).
    pub change: Change,
    /// Why the planner wants it.
    pub wanted: Reason,
    /// The limit that holds it.
    pub limit: Limit,
    /// When it was first planned (the queue's order).
    pub since: Instant,
}

/// One wanted change, as remembered between plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    add: bool,
    since: Instant,
    seq: u64,
}

/// The change limits of one service and what they remember: see the module documentation.
#[derive(Debug, Clone)]
pub struct ChangeSafety {
    rate: Option<ChangeRate>,
    remove_fraction: Option<f64>,
    /// Least time between a capped step and the next step that removes: the probe interval.
    step_spacing: Duration,
    min_healthy: usize,
    /// When each counted change was applied, oldest first, within the last window.
    applied: VecDeque<Instant>,
    /// When the last step that left removals waiting for the fraction cap was applied.
    capped_at: Option<Instant>,
    /// Wanted changes, by address, with the time they were first planned.
    pending: BTreeMap<IpAddr, Pending>,
    seq: u64,
}

impl ChangeSafety {
    /// Limits as configured; `step_spacing` is the service's probe interval.
    pub fn new(
        rate: Option<ChangeRate>,
        remove_fraction: Option<f64>,
        step_spacing: Duration,
        min_healthy: usize,
    ) -> Self {
        ChangeSafety {
            rate,
            remove_fraction: remove_fraction.filter(|f| *f < 1.0),
            step_spacing,
            min_healthy,
            applied: VecDeque::new(),
            capped_at: None,
            pending: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Whether any limit is on.
    pub fn active(&self) -> bool {
        self.rate.is_some() || self.remove_fraction.is_some()
    }

    /// Changes counted in the window that ends at `now`.
    fn in_window(&self, now: Instant) -> usize {
        match self.rate {
            Some(r) => self.applied.iter().filter(|t| now < **t + r.window).count(),
            None => 0,
        }
    }

    /// The plan as the limits allow it at `now`: `full` is the planner's plan against `published`.
    /// Pure; [`ChangeSafety::remember`] keeps the order of what it queued.
    pub fn limit(&self, now: Instant, full: Plan, published: &Published) -> Plan {
        if !self.active() {
            return full;
        }
        // The membership changes, oldest wanted first (plan order for new ones: additions first).
        let mut seq = self.seq;
        let mut wanted: Vec<(Change, Reason, Pending)> = full
            .changes
            .iter()
            .filter_map(|(c, why)| {
                let (ip, add) = match c {
                    Change::Add(ip) => (*ip, true),
                    Change::Remove(ip) => (*ip, false),
                    Change::Ttl(_) | Change::Weight(_) => return None,
                };
                let p = match self.pending.get(&ip) {
                    Some(p) if p.add == add => *p,
                    _ => {
                        seq += 1;
                        Pending {
                            add,
                            since: now,
                            seq,
                        }
                    }
                };
                Some((c.clone(), why.clone(), p))
            })
            .collect();
        wanted.sort_by_key(|(_, _, p)| (p.since, p.seq));

        let mut budget = self.rate.map_or(usize::MAX, |r| {
            (r.max_changes as usize).saturating_sub(self.in_window(now))
        });
        let remove_cap = match self.remove_fraction {
            None => usize::MAX,
            Some(_) if self.capped_at.is_some_and(|t| now < t + self.step_spacing) => 0,
            Some(f) => ((f * full.expected.len() as f64).floor() as usize).max(1),
        };
        let mut taken = vec![false; wanted.len()];
        let mut limits: Vec<Option<Limit>> = vec![None; wanted.len()];
        let mut removed = 0;
        for (i, (c, _, _)) in wanted.iter().enumerate() {
            let remove = matches!(c, Change::Remove(_));
            if budget == 0 {
                limits[i] = self.rate.map(Limit::MaxChanges);
            } else if remove && removed >= remove_cap {
                limits[i] = Some(Limit::RemoveFraction { cap: remove_cap });
            } else {
                taken[i] = true;
                budget -= 1;
                removed += usize::from(remove);
            }
        }
        // Safety first: additions go beyond max_changes while fewer than min_healthy of the records
        // left would be ones the plan wants (a record whose removal is queued does not count).
        let size = |taken: &[bool]| {
            let adds = wanted
                .iter()
                .zip(taken)
                .filter(|((c, _, _), t)| **t && matches!(c, Change::Add(_)))
                .count();
            full.expected.intersection(&full.desired).count() + adds
        };
        let floor = self.min_healthy.min(full.desired.len());
        let mut beyond_limit = BTreeSet::new();
        for i in 0..wanted.len() {
            if size(&taken) >= floor {
                break;
            }
            if let (Change::Add(ip), false) = (&wanted[i].0, taken[i]) {
                taken[i] = true;
                limits[i] = None;
                beyond_limit.insert(*ip);
            }
        }
        if taken.iter().all(|t| *t) {
            return full;
        }

        let mut plan = full;
        let mut queued = Vec::new();
        for (i, (c, why, p)) in wanted.into_iter().enumerate() {
            if taken[i] {
                continue;
            }
            let limit = limits[i].expect("a change not taken has a limit");
            let (ip, now_in) = match &c {
                Change::Add(ip) => (*ip, false),
                Change::Remove(ip) => (*ip, true),
                Change::Ttl(_) | Change::Weight(_) => {
                    unreachable!("only membership changes are limited")
                }
            };
            if now_in {
                plan.desired.insert(ip);
            } else {
                plan.desired.remove(&ip);
            }
            plan.changes.retain(|(pc, _)| *pc != c);
            if now_in && let Some(from) = published.records.get(&ip).copied() {
                // Kept for now: it takes the service's TTL like every record that stays.
                if from != plan.ttl {
                    plan.changes
                        .push((Change::Ttl(ip), Reason::Ttl { from, to: plan.ttl }));
                }
            }
            let reason = Reason::Queued {
                limit,
                wanted: Box::new(why.clone()),
            };
            plan.standing.insert(
                ip,
                Standing {
                    published: now_in,
                    reason,
                },
            );
            queued.push(Queued {
                change: c,
                wanted: why,
                limit,
                since: p.since,
            });
        }
        plan.queued = queued;
        plan.beyond_limit = beyond_limit;
        plan
    }

    /// Keeps the order of the changes `full` (the planner's plan at `now`) wants, for the next
    /// [`ChangeSafety::limit`]: a change keeps its place while every plan wants it, and is forgotten
    /// once one does not.
    pub fn remember(&mut self, now: Instant, full: &Plan) {
        if !self.active() {
            return;
        }
        let mut next = BTreeMap::new();
        for (c, _) in &full.changes {
            let (ip, add) = match c {
                Change::Add(ip) => (*ip, true),
                Change::Remove(ip) => (*ip, false),
                Change::Ttl(_) | Change::Weight(_) => continue,
            };
            let p = match self.pending.get(&ip) {
                Some(p) if p.add == add => *p,
                _ => {
                    self.seq += 1;
                    Pending {
                        add,
                        since: now,
                        seq: self.seq,
                    }
                }
            };
            next.insert(ip, p);
        }
        self.pending = next;
    }

    /// `plan` (as limited) was applied at `now`: its changes count in the window, and a step that
    /// left removals waiting for the fraction cap delays the next removing step.
    pub fn applied(&mut self, now: Instant, plan: &Plan) {
        if !self.active() {
            return;
        }
        let changed = plan.additions().len() + plan.removals().len();
        if self.rate.is_some() {
            self.applied.extend(std::iter::repeat_n(now, changed));
        }
        let capped = plan
            .queued
            .iter()
            .any(|q| matches!(q.limit, Limit::RemoveFraction { .. }));
        if capped && !plan.removals().is_empty() {
            self.capped_at = Some(now);
        }
        for ip in plan.additions().iter().chain(&plan.removals()) {
            self.pending.remove(ip);
        }
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        if let Some(r) = self.rate {
            while self.applied.front().is_some_and(|t| now >= *t + r.window) {
                self.applied.pop_front();
            }
        }
    }

    /// When a change queued in `plan` (limited at `now`) may go: the oldest counted change leaves
    /// the window, or the interval after a capped step ends. `None` when nothing is queued.
    pub fn next_release(&self, now: Instant, plan: &Plan) -> Option<Instant> {
        plan.queued
            .iter()
            .filter_map(|q| match q.limit {
                Limit::MaxChanges(r) => self
                    .applied
                    .iter()
                    .find(|t| now < **t + r.window)
                    .map(|t| *t + r.window),
                Limit::RemoveFraction { .. } => self
                    .capped_at
                    .map(|t| t + self.step_spacing)
                    .filter(|t| *t > now),
            })
            .min()
            // Nothing to wait for (e.g. the capped step's write failed): plan again within an
            // interval.
            .or_else(|| (!plan.queued.is_empty()).then(|| now + self.step_spacing))
    }
}

#[cfg(test)]
mod tests;
