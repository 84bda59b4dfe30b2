//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4), rendered by hand from one
//! [`NodeStatus`] snapshot and the write counters of [`crate::state::NodeState`].
//!
//! Hand-written rather than through `prometheus-client`: every value already lives in the typed
//! state, so a registry would only hold copies that must be kept in step; the format is a few lines
//! of text per family. The contract kept here: one `# HELP` and one `# TYPE` line per family,
//! families never repeated, label values escaped (`\\`, `\"`, `\n`), counters end in `_total`,
//! histograms have cumulative `_bucket{le=…}` lines ending in `+Inf`, then `_sum` and `_count`.
//!
//! Endpoint state: `rrguard_endpoint_up` is 1 (up) or 0 (down) and absent while the cluster state is
//! unknown; `rrguard_endpoint_state{state="up|down|unknown"}` is the same as a state set (one series
//! per state, 1 for the current one), so unknown endpoints can be counted and alerted on.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::state::{Histogram, NodeStatus, PeerMessageCounters, WriteCounters};

/// The `Content-Type` of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the whole exposition for one snapshot, `writes` by (service, writer), the received
/// peer messages and the build's `version`.
pub fn render(
    status: &NodeStatus,
    writes: &BTreeMap<(String, String), WriteCounters>,
    peers: &PeerMessageCounters,
    version: &str,
) -> String {
    let mut out = Exposition::default();
    let check_of: BTreeMap<&str, &str> = status
        .services
        .iter()
        .map(|s| (s.fqdn.as_str(), s.check.as_str()))
        .collect();

    out.family(
        "probe_success",
        "gauge",
        "Whether this node's last probe of the endpoint passed (1) or failed (0).",
    );
    for e in &status.endpoints {
        if let Some(p) = &e.local {
            let check = check_of.get(e.service.as_str()).copied().unwrap_or("");
            out.sample(
                "probe_success",
                &[
                    ("service", &e.service),
                    ("endpoint", &e.endpoint),
                    ("check", check),
                ],
                f64::from(u8::from(p.ok)),
            );
        }
    }
    out.family(
        "probe_duration_seconds",
        "gauge",
        "How long this node's last probe of the endpoint took, in seconds.",
    );
    for e in &status.endpoints {
        if let Some(p) = &e.local {
            let check = check_of.get(e.service.as_str()).copied().unwrap_or("");
            out.sample(
                "probe_duration_seconds",
                &[
                    ("service", &e.service),
                    ("endpoint", &e.endpoint),
                    ("check", check),
                ],
                p.latency_ms / 1000.0,
            );
        }
    }

    out.family(
        "probe_http_status_code",
        "gauge",
        "HTTP status code of this node's last HTTP(S) probe of the endpoint; absent when it got no answer.",
    );
    for e in &status.endpoints {
        if let Some(code) = e.local.as_ref().and_then(|p| p.http_status()) {
            let check = check_of.get(e.service.as_str()).copied().unwrap_or("");
            out.sample(
                "probe_http_status_code",
                &[
                    ("service", &e.service),
                    ("endpoint", &e.endpoint),
                    ("check", check),
                ],
                f64::from(code),
            );
        }
    }

    out.family(
        "rrguard_overrides",
        "gauge",
        "Operator overrides in effect on this node, by kind (drain, maintenance, force_up, force_down).",
    );
    for kind in crate::decide::overrides::OverrideKind::ALL {
        let n = status
            .overrides
            .iter()
            .filter(|o| o.active && o.o.kind == kind)
            .count();
        out.sample("rrguard_overrides", &[("kind", kind.as_str())], n as f64);
    }
    out.family(
        "rrguard_override_active",
        "gauge",
        "1 for each override in effect, by endpoint, service (\"*\": every service listing it), kind and id.",
    );
    for o in status.overrides.iter().filter(|o| o.active) {
        let endpoint = o.o.endpoint.to_string();
        out.sample(
            "rrguard_override_active",
            &[
                ("endpoint", &endpoint),
                ("service", o.o.service.as_deref().unwrap_or("*")),
                ("kind", o.o.kind.as_str()),
                ("id", &o.o.id),
            ],
            1.0,
        );
    }

    out.family(
        "rrguard_endpoint_up",
        "gauge",
        "The endpoint's agreed state: 1 up, 0 down; absent while unknown.",
    );
    for e in &status.endpoints {
        let v = match e.cluster_state.as_str() {
            "up" => 1.0,
            "down" => 0.0,
            _ => continue,
        };
        out.sample(
            "rrguard_endpoint_up",
            &[("service", &e.service), ("endpoint", &e.endpoint)],
            v,
        );
    }
    out.family("rrguard_endpoint_state", "gauge", "The endpoint's agreed state as a state set: 1 for the current state (up, down or unknown), 0 for the others.");
    for e in &status.endpoints {
        for state in ["up", "down", "unknown"] {
            let v = f64::from(u8::from(e.cluster_state == state));
            out.sample(
                "rrguard_endpoint_state",
                &[
                    ("service", &e.service),
                    ("endpoint", &e.endpoint),
                    ("state", state),
                ],
                v,
            );
        }
    }
    out.family(
        "rrguard_votes",
        "gauge",
        "Votes counted for the endpoint's agreed state, by vote (up or down).",
    );
    for e in &status.endpoints {
        for (vote, n) in [("up", e.up_votes.len()), ("down", e.down_votes.len())] {
            out.sample(
                "rrguard_votes",
                &[
                    ("service", &e.service),
                    ("endpoint", &e.endpoint),
                    ("vote", vote),
                ],
                n as f64,
            );
        }
    }
    out.family(
        "rrguard_votes_needed",
        "gauge",
        "Agreeing votes needed to change the endpoint's agreed state (the quorum).",
    );
    for e in &status.endpoints {
        out.sample(
            "rrguard_votes_needed",
            &[("service", &e.service), ("endpoint", &e.endpoint)],
            e.needed as f64,
        );
    }

    out.family(
        "rrguard_endpoint_penalty",
        "gauge",
        "The endpoint's flap-damping penalty (RFC 2439 figure of merit); only with [service.damping].",
    );
    for e in &status.endpoints {
        if let Some(d) = &e.damping {
            out.sample(
                "rrguard_endpoint_penalty",
                &[("service", &e.service), ("endpoint", &e.endpoint)],
                d.penalty,
            );
        }
    }
    out.family(
        "rrguard_endpoint_suppressed",
        "gauge",
        "Whether flap damping keeps the endpoint out of DNS (1); only with [service.damping].",
    );
    for e in &status.endpoints {
        if let Some(d) = &e.damping {
            out.sample(
                "rrguard_endpoint_suppressed",
                &[("service", &e.service), ("endpoint", &e.endpoint)],
                f64::from(u8::from(d.suppressed)),
            );
        }
    }

    out.single(
        "rrguard_isolated",
        "gauge",
        "Whether this node is isolated (1): it then neither votes nor writes.",
        f64::from(u8::from(status.isolated.is_some())),
    );
    out.single(
        "rrguard_leader",
        "gauge",
        "Whether this node is the leader, the one node that writes to DNS (1).",
        f64::from(u8::from(status.am_leader)),
    );
    out.single(
        "rrguard_term",
        "gauge",
        "Leader changes seen by this node.",
        status.term as f64,
    );
    out.single(
        "rrguard_live_nodes",
        "gauge",
        "Nodes heard within the vote lifetime, this node included.",
        status.live_nodes.len() as f64,
    );
    out.family(
        "rrguard_peer_messages_rejected_total",
        "counter",
        "Peer messages rejected, by reason.",
    );
    for (reason, n) in &status.rejected_messages {
        out.sample(
            "rrguard_peer_messages_rejected_total",
            &[("reason", reason)],
            *n as f64,
        );
    }

    out.family(
        "rrguard_peer_messages_total",
        "counter",
        "Peer messages received, by kind (votes, overrides), result (accepted, rejected) and reason (none when accepted).",
    );
    for ((kind, result, reason), n) in peers {
        out.sample(
            "rrguard_peer_messages_total",
            &[("kind", kind), ("result", result), ("reason", reason)],
            *n as f64,
        );
    }

    out.family(
        "rrguard_plan_changes",
        "gauge",
        "Changes (add, remove, TTL rewrite) the plan this node would make now, summed over the service's writers; 0 when none or when this node does not plan (not the leader).",
    );
    for s in &status.services {
        let n: usize = s.writers.iter().map(|w| w.pending.len()).sum();
        out.sample("rrguard_plan_changes", &[("service", &s.fqdn)], n as f64);
    }
    out.family(
        "rrguard_drift_repaired_total",
        "counter",
        "DNS writes that restored records changed out of band (found by a reconcile read), by service and writer.",
    );
    for ((service, writer), c) in writes {
        out.sample(
            "rrguard_drift_repaired_total",
            &[("service", service), ("writer", writer)],
            c.drift_repaired as f64,
        );
    }

    out.family(
        "rrguard_published_records",
        "gauge",
        "Addresses last seen published for the service through the writer.",
    );
    for s in &status.services {
        for w in &s.writers {
            if w.published_known_unix_ms.is_some() {
                out.sample(
                    "rrguard_published_records",
                    &[("service", &s.fqdn), ("writer", &w.name)],
                    w.published.len() as f64,
                );
            }
        }
    }
    out.family(
        "rrguard_changes_queued",
        "gauge",
        "Record changes a change limit (max_changes, max_remove_fraction) holds back for the service at the writer.",
    );
    for s in &status.services {
        for w in &s.writers {
            if !w.standing.is_empty() {
                out.sample(
                    "rrguard_changes_queued",
                    &[("service", &s.fqdn), ("writer", &w.name)],
                    w.queued.len() as f64,
                );
            }
        }
    }
    out.family(
        "rrguard_dns_writes_total",
        "counter",
        "DNS writes by service, writer and result (ok, or error for a failed attempt).",
    );
    for ((service, writer), c) in writes {
        for (result, n) in [("ok", c.ok), ("error", c.error)] {
            out.sample(
                "rrguard_dns_writes_total",
                &[("service", service), ("writer", writer), ("result", result)],
                n as f64,
            );
        }
    }
    out.family(
        "rrguard_dns_write_duration_seconds",
        "histogram",
        "How long DNS writes took, in seconds, whatever their result.",
    );
    for ((service, writer), c) in writes {
        out.histogram(
            "rrguard_dns_write_duration_seconds",
            &[("service", service), ("writer", writer)],
            &c.duration,
        );
    }

    out.single(
        "rrguard_scheduler_lag_seconds",
        "gauge",
        "How late the probe engine's timers fire now, in seconds (rrguard's own overload).",
        status.engine.scheduler_lag_ms / 1000.0,
    );
    out.family(
        "rrguard_probes_abstained_total",
        "counter",
        "Failed probes discarded because rrguard itself was late while they ran, by reason; they counted neither for nor against their endpoints.",
    );
    for (reason, n) in &status.engine.probes_abstained {
        out.sample(
            "rrguard_probes_abstained_total",
            &[("reason", reason)],
            *n as f64,
        );
    }

    out.single(
        "rrguard_probe_slots",
        "gauge",
        "Probe slots ([node] max_probes_in_flight): at most this many probes run at once.",
        status.engine.max_probes_in_flight as f64,
    );
    out.single(
        "rrguard_probes_in_flight",
        "gauge",
        "Probes running now, each holding a probe slot.",
        status.engine.probes_in_flight as f64,
    );
    out.single(
        "rrguard_probe_slot_waits_total",
        "counter",
        "Probes that found every probe slot taken and started late.",
        status.engine.probe_slot_waits as f64,
    );
    out.single(
        "rrguard_confirmations_shed_total",
        "counter",
        "Fast confirmations run at the plain interval because rrguard itself was late.",
        status.engine.confirmations_shed as f64,
    );

    out.family(
        "rrguard_build_info",
        "gauge",
        "Always 1; the version label names the running build.",
    );
    out.sample("rrguard_build_info", &[("version", version)], 1.0);
    out.text
}

/// The text being built.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// A family of one sample without labels.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        for (le, n) in h.cumulative() {
            let le = number(le);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, n as f64);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }
}

/// A value as the format spells it: `+Inf`, `-Inf`, `NaN`, otherwise Rust's shortest round-trip form.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

/// A label value: backslash, double quote and line feed escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Help text: backslash and line feed escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests;
