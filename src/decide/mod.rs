//! Decide: turn verdicts and the published record set into the desired record set and a plan (sans-I/O).
//!
//! Rules, per service (A and AAAA together; the writer splits them by family):
//! - An endpoint that is [`Health::Up`] is published, one that is [`Health::Down`] is not.
//! - While any endpoint is still [`Health::Unknown`] (just after start or reload), nothing is removed:
//!   published endpoints stay and up ones are added. A restart therefore never removes records by itself.
//! - If fewer than `min_healthy` records would remain, the service's [`AllDownPolicy`] applies:
//!   `keep_all` publishes every configured endpoint, `keep_last` keeps what is published (plus the healthy
//!   ones, and falls back to `keep_all` if that is still too few), `fail_closed` publishes only healthy ones.
//! - Addresses published under the name that are not configured endpoints are left alone, unless the
//!   service sets `remove_unlisted`.
//! - Removals are held back while too few endpoints would remain *confirmed* up: when the up endpoints
//!   that would stay are themselves in doubt (by this node's own probes: failing since their last
//!   success, or not yet seen up), they may be about to go down too, and then `keep_all` would put back
//!   what was just removed — two DNS changes for one event. The caller bounds how long it passes `in_doubt` (one detection time), so a removal is
//!   delayed, never lost.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

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
}

impl Policy {
    /// The policy a service's configuration asks for.
    pub fn of(svc: &crate::config::ServiceConfig) -> Self {
        Policy {
            endpoints: svc.endpoints.clone(),
            min_healthy: svc.min_healthy,
            all_down: svc.all_down,
            remove_unlisted: svc.remove_unlisted,
        }
    }
}

/// One change to one record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Publish this address.
    Add(IpAddr),
    /// Stop publishing this address.
    Remove(IpAddr),
}

/// What the planner decided for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The record set the plan was computed against; writers use it as the compare-and-swap condition.
    pub expected: BTreeSet<IpAddr>,
    /// The record set after the plan is applied.
    pub desired: BTreeSet<IpAddr>,
    /// The changes, each with the reason for it.
    pub changes: Vec<(Change, String)>,
    /// Set when the all-down policy decided the outcome.
    pub policy_applied: Option<AllDownPolicy>,
    /// Removals held back because the endpoints that would remain are in doubt.
    pub deferred: BTreeSet<IpAddr>,
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
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return f.write_str("no change");
        }
        let parts: Vec<String> = self
            .changes
            .iter()
            .map(|(c, why)| match c {
                Change::Add(ip) => format!("add {ip} ({why})"),
                Change::Remove(ip) => format!("remove {ip} ({why})"),
            })
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// Computes the plan for one service.
///
/// `health` holds the verdict of each configured endpoint (missing means unknown); `published` is the
/// full A+AAAA record set DNS serves for the name now; `in_doubt` are endpoints this node does not see
/// solidly up (pass an empty set to stop holding removals back).
pub fn plan(
    policy: &Policy,
    health: &BTreeMap<IpAddr, Health>,
    published: &BTreeSet<IpAddr>,
    in_doubt: &BTreeSet<IpAddr>,
) -> Plan {
    let verdict = |ip: &IpAddr| health.get(ip).copied().unwrap_or(Health::Unknown);
    let managed: BTreeSet<IpAddr> = policy.endpoints.iter().copied().collect();
    let up: BTreeSet<IpAddr> = managed
        .iter()
        .copied()
        .filter(|ip| verdict(ip) == Health::Up)
        .collect();
    let published_managed: BTreeSet<IpAddr> = published.intersection(&managed).copied().collect();
    let any_unknown = managed.iter().any(|ip| verdict(ip) == Health::Unknown);

    let base: BTreeSet<IpAddr> = if any_unknown {
        published_managed.union(&up).copied().collect()
    } else {
        up.clone()
    };

    let mut policy_applied = None;
    let desired_managed = if base.len() >= policy.min_healthy {
        base
    } else {
        policy_applied = Some(policy.all_down);
        match policy.all_down {
            AllDownPolicy::KeepAll => managed.clone(),
            AllDownPolicy::KeepLast => {
                let kept: BTreeSet<IpAddr> = published_managed.union(&up).copied().collect();
                if kept.len() >= policy.min_healthy {
                    kept
                } else {
                    managed.clone()
                }
            }
            AllDownPolicy::FailClosed => base,
        }
    };

    let mut deferred = BTreeSet::new();
    let mut desired_managed = desired_managed;
    if policy.all_down != AllDownPolicy::FailClosed {
        let confirmed_up = up.iter().filter(|ip| !in_doubt.contains(ip)).count();
        let removals: Vec<IpAddr> = published_managed
            .difference(&desired_managed)
            .copied()
            .collect();
        if !removals.is_empty() && confirmed_up < policy.min_healthy {
            deferred.extend(removals.iter().copied());
            desired_managed.extend(removals);
        }
    }

    let unlisted: BTreeSet<IpAddr> = published.difference(&managed).copied().collect();
    let mut desired = desired_managed.clone();
    if !policy.remove_unlisted {
        desired.extend(unlisted.iter().copied());
    }

    let mut changes = Vec::new();
    for ip in desired.difference(published) {
        let why = match (verdict(ip), policy_applied) {
            (Health::Up, _) => "up".to_owned(),
            (h, Some(p)) => format!(
                "{h}, but fewer than min_healthy={} up: all_down={p}",
                policy.min_healthy
            ),
            (h, None) => h.to_string(),
        };
        changes.push((Change::Add(*ip), why));
    }
    for ip in published.difference(&desired) {
        let why = if unlisted.contains(ip) {
            "not a configured endpoint; remove_unlisted=true".to_owned()
        } else if policy_applied == Some(AllDownPolicy::FailClosed) {
            format!("{}; all_down=fail_closed", verdict(ip))
        } else {
            verdict(ip).to_string()
        };
        changes.push((Change::Remove(*ip), why));
    }

    Plan {
        expected: published.clone(),
        desired,
        changes,
        policy_applied,
        deferred,
    }
}
