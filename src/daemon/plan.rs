//! `rrguard plan`: probe every endpoint once and show what would change, without writing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::act::{self, Published, WriteError};
use crate::config::Config;
use crate::decide::{self, Doubts, Health, Plan, Policy};
use crate::observe::probe;

/// What `rrguard plan` found for one service.
#[derive(Debug, Clone)]
pub struct ServiceReport {
    /// The service.
    pub fqdn: String,
    /// Each endpoint with its one-probe verdict and detail.
    pub endpoints: Vec<(IpAddr, Health, Duration, String)>,
    /// Per writer of the service, in its order: what it publishes and the plan against it.
    pub writers: Vec<WriterReport>,
}

/// What `rrguard plan` found at one writer of a service.
#[derive(Debug, Clone)]
pub struct WriterReport {
    /// Writer name.
    pub name: String,
    /// What the name publishes there, or why it could not be read.
    pub published: Result<Published, WriteError>,
    /// The plan, when the published set was read.
    pub plan: Option<Plan>,
}

/// Probes every endpoint once and plans every service against what DNS publishes; writes nothing.
/// A single probe decides each endpoint (`fall`/`rise` are not waited for).
pub async fn plan_once(config: &Config) -> Vec<ServiceReport> {
    let mut reports = Vec::new();
    for svc in &config.services {
        let mut probes = JoinSet::new();
        for ip in svc.endpoints.clone() {
            let check = svc.check.clone();
            let timeout = svc.timeout;
            probes.spawn(async move {
                let r = match probe::build(&check, ip, timeout) {
                    Ok(p) => tokio::time::timeout(timeout, p.probe())
                        .await
                        .unwrap_or_else(|_| probe::timed_out(timeout)),
                    Err(e) => probe::ProbeResult {
                        ok: false,
                        latency: Duration::ZERO,
                        detail: e.to_string(),
                    },
                };
                (ip, r)
            });
        }
        let mut reads = Vec::new();
        for w in config.writers_of(svc) {
            let published = match act::build(w, &act::Resources::default()) {
                Ok(writer) => writer.read(&svc.fqdn, &svc.zone).await,
                Err(e) => Err(WriteError::Rejected(e.to_string())),
            };
            reads.push((w.name.clone(), published));
        }
        let mut results: BTreeMap<IpAddr, probe::ProbeResult> = BTreeMap::new();
        while let Some(joined) = probes.join_next().await {
            if let Ok((ip, r)) = joined {
                results.insert(ip, r);
            }
        }
        let endpoints: Vec<(IpAddr, Health, Duration, String)> = svc
            .endpoints
            .iter()
            .map(|ip| match results.get(ip) {
                Some(r) => (
                    *ip,
                    if r.ok { Health::Up } else { Health::Down },
                    r.latency,
                    r.detail.clone(),
                ),
                None => (
                    *ip,
                    Health::Unknown,
                    Duration::ZERO,
                    "probe did not finish".to_owned(),
                ),
            })
            .collect();
        let health: BTreeMap<IpAddr, Health> =
            endpoints.iter().map(|(ip, h, _, _)| (*ip, *h)).collect();
        let policy = Policy::of(svc);
        let writers = reads
            .into_iter()
            .map(|(name, published)| WriterReport {
                plan: published
                    .as_ref()
                    .ok()
                    .map(|p| decide::plan(&policy, &health, p, &Doubts::default())),
                name,
                published,
            })
            .collect();
        reports.push(ServiceReport {
            fqdn: svc.fqdn.clone(),
            endpoints,
            writers,
        });
    }
    reports
}

/// Renders `plan_once` results for a person.
pub fn render_plan(reports: &[ServiceReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let names: Vec<&str> = r.writers.iter().map(|w| w.name.as_str()).collect();
        let several = names.len() > 1;
        let _ = writeln!(
            out,
            "{} ({} {})",
            r.fqdn,
            if several { "writers" } else { "writer" },
            names.join(", ")
        );
        for (ip, h, latency, detail) in &r.endpoints {
            let _ = writeln!(
                out,
                "  {:<39} {:<7} {:>9}  {}",
                ip.to_string(),
                h.to_string(),
                format!("{:.1}ms", latency.as_secs_f64() * 1000.0),
                detail
            );
        }
        for w in &r.writers {
            render_writer(&mut out, &r.fqdn, w, several);
        }
    }
    out
}

/// The published set and plan at one writer; prefixed with the writer's name when there are several.
fn render_writer(out: &mut String, fqdn: &str, w: &WriterReport, several: bool) {
    let at = if several {
        format!("  [{}] ", w.name)
    } else {
        "  ".to_owned()
    };
    match &w.published {
        Ok(p) => {
            let list: Vec<String> = p.records.keys().map(ToString::to_string).collect();
            let ttls: std::collections::BTreeSet<u32> = p.records.values().copied().collect();
            let ttls: Vec<String> = ttls.iter().map(|t| format!("{t}s")).collect();
            let _ = writeln!(
                out,
                "{at}published: {}",
                if list.is_empty() {
                    "(none)".to_owned()
                } else {
                    format!("{} (ttl {})", list.join(" "), ttls.join(", "))
                }
            );
            if let Some(target) = &p.cname {
                let _ = writeln!(
                    out,
                    "{at}conflict: {fqdn} has a CNAME to {target}; address records cannot be published beside it: remove the CNAME or point the service at {target}",
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "{at}published: cannot read: {e}");
        }
    }
    if let Some(plan) = &w.plan {
        let _ = writeln!(out, "{at}plan: {plan}");
        if let Some(p) = plan.policy_applied {
            let _ = writeln!(
                out,
                "{at}note: fewer endpoints up than min_healthy; all_down = {p} decided"
            );
        }
    }
}
