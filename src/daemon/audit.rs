//! What the controller hands to the node state for the API and the audit log: a plan's changes and
//! standing in the status schema, and the evidence behind a DNS write.

use std::net::IpAddr;

use crate::act::Published;
use crate::agree::View;
use crate::decide::service::Settings;
use crate::decide::{Change, Plan};
use crate::state::{
    ChangeStatus, Evidence, RecordStatus, StandingStatus, VoteEvidence, WriteRecord,
};

/// The records of `published`, sorted by address, with their TTLs.
pub(super) fn records(published: &Published) -> Vec<RecordStatus> {
    published
        .records
        .iter()
        .map(|(ip, ttl)| RecordStatus {
            address: ip.to_string(),
            ttl: Some(*ttl),
        })
        .collect()
}

/// The plan's changes, each with its reason.
pub(super) fn changes(plan: &Plan) -> Vec<ChangeStatus> {
    plan.changes
        .iter()
        .map(|(c, why)| {
            let (op, ip) = match c {
                Change::Add(ip) => ("add", ip),
                Change::Remove(ip) => ("remove", ip),
                Change::Ttl(ip) => ("ttl", ip),
                Change::Weight(ip) => ("weight", ip),
            };
            ChangeStatus {
                op: op.to_owned(),
                address: ip.to_string(),
                reason_kind: why.kind().to_owned(),
                reason: why.to_string(),
            }
        })
        .collect()
}

/// The changes a change limit queues, first planned first, each with the limit.
pub(super) fn queued(plan: &Plan) -> Vec<ChangeStatus> {
    plan.queued
        .iter()
        .map(|q| {
            let (op, ip) = match &q.change {
                Change::Add(ip) => ("add", ip),
                Change::Remove(ip) => ("remove", ip),
                Change::Ttl(ip) => ("ttl", ip),
                Change::Weight(ip) => ("weight", ip),
            };
            ChangeStatus {
                op: op.to_owned(),
                address: ip.to_string(),
                reason_kind: "queued".to_owned(),
                reason: format!("{}; queued: {}", q.wanted, q.limit),
            }
        })
        .collect()
}

/// Why each address is in or out.
pub(super) fn standing(plan: &Plan) -> Vec<StandingStatus> {
    plan.standing
        .iter()
        .map(|(ip, s)| StandingStatus {
            address: ip.to_string(),
            published: s.published,
            reason_kind: s.reason.kind().to_owned(),
            reason: s.reason.to_string(),
        })
        .collect()
}

/// The record of a DNS write of `plan` for the audit log: `error` is `None` when it succeeded.
pub(super) fn write_record(
    settings: &Settings,
    view: &View,
    plan: &Plan,
    error: Option<String>,
) -> WriteRecord {
    // A kept address whose TTL is rewritten had the TTL the change names; other kept ones had the
    // service's; the TTL of a removed one is not in the plan.
    let before = plan
        .expected
        .iter()
        .map(|ip| RecordStatus {
            address: ip.to_string(),
            ttl: plan
                .changes
                .iter()
                .find_map(|(c, why)| match (c, why) {
                    (Change::Ttl(t), crate::decide::Reason::Ttl { from, .. }) if t == ip => {
                        Some(*from)
                    }
                    _ => None,
                })
                .or_else(|| plan.desired.contains(ip).then_some(plan.ttl)),
        })
        .collect();
    let votes = settings
        .policy
        .endpoints
        .iter()
        .map(|ip| vote(view, &settings.fqdn, *ip))
        .collect();
    WriteRecord {
        result: if error.is_none() { "ok" } else { "error" }.to_owned(),
        error,
        before,
        after: records(&plan.desired_records()),
        changes: changes(plan),
        evidence: Evidence {
            votes,
            fall: settings.fall,
            rise: settings.rise,
            min_healthy: settings.policy.min_healthy,
            all_down: settings.policy.all_down.to_string(),
            policy_applied: plan.policy_applied.map(|p| p.to_string()),
            standing: standing(plan),
            leader: view.leader.clone(),
            term: view.term,
        },
    }
}

fn vote(view: &View, fqdn: &str, ip: IpAddr) -> VoteEvidence {
    match view.endpoints.get(&(fqdn.to_owned(), ip)) {
        Some(t) => VoteEvidence {
            endpoint: ip.to_string(),
            cluster_state: t.state.to_string(),
            up_votes: t.up.clone(),
            down_votes: t.down.clone(),
            needed: t.needed,
        },
        None => VoteEvidence {
            endpoint: ip.to_string(),
            cluster_state: "unknown".to_owned(),
            up_votes: Vec::new(),
            down_votes: Vec::new(),
            needed: 0,
        },
    }
}
