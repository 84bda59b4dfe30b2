//! The dashboard's HTML, rendered from the status document: pure functions of a
//! [`NodeStatus`] and the latency rings, so that the page and its live updates show the same markup.
//!
//! Every piece of text from the state is escaped ([`esc`]); the only markup the page carries is made
//! here. An endpoint's row keeps its latency cell apart ([`SPARK_SLOT`]): latencies change with every
//! probe, the rest of the row only when the endpoint's standing does, so live updates send the small
//! cell alone most of the time.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::state::{EndpointStatus, NodeStatus, ServiceStatus};

/// Where an endpoint row's latency cell goes; replaced by [`spark_cell`] when the row is sent.
pub const SPARK_SLOT: &str = "<!--spark-->";
/// A vote fades from full opacity to [`MIN_OPACITY`] over this age, ms.
pub const VOTE_FADE_MS: u64 = 30_000;
/// The faintest a vote dot gets.
const MIN_OPACITY: f64 = 0.2;
/// Recent events shown, newest first.
pub const EVENTS_SHOWN: usize = 30;
/// Sparkline size, CSS pixels.
const SPARK_W: f64 = 80.0;
const SPARK_H: f64 = 18.0;

/// Escapes text for HTML content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-30T19:45:02Z` for a Unix time in ms.
pub fn utc(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

/// The element id of an endpoint's row: stable for a (service, endpoint) pair, safe in HTML.
pub fn row_id(service: &str, endpoint: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    };
    format!(
        "ep-{}-{}",
        clean(service.trim_end_matches('.')),
        clean(endpoint)
    )
}

/// The element id of a service's records block.
pub fn records_id(service: &str) -> String {
    format!("rec-{}", &row_id(service, "")[3..])
}

/// The vote dot's opacity for a vote `age_ms` old (unknown age: faintest), in steps of 0.1 so that a
/// row changes only when the dot visibly does.
pub fn vote_opacity(age_ms: Option<u64>) -> f64 {
    let Some(age) = age_ms else {
        return MIN_OPACITY;
    };
    let fade = (age.min(VOTE_FADE_MS) as f64) / VOTE_FADE_MS as f64;
    let o = 1.0 - fade * (1.0 - MIN_OPACITY);
    (o * 10.0).round() / 10.0
}

/// The latency cell: an inline SVG sparkline of `latencies_ms` (oldest first) and the last value.
pub fn spark_cell(latencies_ms: &VecDeque<f64>) -> String {
    let Some(last) = latencies_ms.back() else {
        return "<span class=\"lat\">–</span>".to_owned();
    };
    let max = latencies_ms
        .iter()
        .copied()
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let step = if latencies_ms.len() > 1 {
        SPARK_W / (latencies_ms.len() - 1) as f64
    } else {
        0.0
    };
    let mut points = String::new();
    for (i, l) in latencies_ms.iter().enumerate() {
        let x = i as f64 * step;
        let y = SPARK_H - 1.0 - (l / max) * (SPARK_H - 2.0);
        let _ = write!(points, "{x:.0},{y:.0} ");
    }
    format!(
        "<svg class=\"sl\" viewBox=\"0 0 {SPARK_W} {SPARK_H}\" width=\"{SPARK_W}\" height=\"{SPARK_H}\" \
         role=\"img\" aria-label=\"latency, max {max:.1} ms\"><polyline points=\"{}\"/></svg>\
         <span class=\"lat\">{last:.1} ms</span>",
        points.trim_end()
    )
}

/// What the rows need besides the status: since when each agreed state holds.
pub struct Context<'a> {
    /// The status document.
    pub status: &'a NodeStatus,
    /// (service, endpoint) → since when its agreed state holds, Unix ms.
    pub since: &'a BTreeMap<(String, String), u64>,
    /// Now, Unix ms.
    pub now_unix_ms: u64,
}

impl Context<'_> {
    /// Every node of the cluster, this one first, then its peers by id.
    fn nodes(&self) -> Vec<&str> {
        let mut peers: Vec<&str> = self.status.peers.iter().map(|p| p.id.as_str()).collect();
        peers.sort_unstable();
        std::iter::once(self.status.node.as_str())
            .chain(peers)
            .collect()
    }

    fn vote_age(&self, e: &EndpointStatus, node: &str) -> Option<u64> {
        if node == self.status.node {
            e.local
                .as_ref()
                .map(|p| self.now_unix_ms.saturating_sub(p.last_probe_unix_ms))
        } else {
            self.status
                .peers
                .iter()
                .find(|p| p.id == node)
                .and_then(|p| p.last_heard_ms_ago)
        }
    }
}

fn age_words(age_ms: Option<u64>) -> &'static str {
    match age_ms {
        None => "age unknown",
        Some(a) if a < 5_000 => "under 5 s old",
        Some(a) if a < VOTE_FADE_MS => "under 30 s old",
        Some(_) => "30 s old or more",
    }
}

/// One endpoint's row, with [`SPARK_SLOT`] where the latency cell goes.
pub fn endpoint_row(cx: &Context<'_>, svc: &ServiceStatus, e: &EndpointStatus) -> String {
    let status = cx.status;
    let mut h = String::with_capacity(1024);
    let state = esc(&e.cluster_state);
    let _ = write!(
        h,
        "<tr id=\"{}\" class=\"st-{state}\" data-service=\"{}\" data-endpoint=\"{}\">\
         <td class=\"ep\">{}</td><td><span class=\"state {state}\">{state}</span></td><td class=\"votes\">",
        row_id(&e.service, &e.endpoint),
        esc(&e.service),
        esc(&e.endpoint),
        esc(&e.endpoint),
    );
    for node in cx.nodes() {
        let vote = if e.up_votes.iter().any(|n| n == node) {
            "up"
        } else if e.down_votes.iter().any(|n| n == node) {
            "down"
        } else {
            "none"
        };
        let age = (vote != "none").then(|| cx.vote_age(e, node)).flatten();
        let opacity = if vote == "none" {
            1.0
        } else {
            vote_opacity(age)
        };
        let words = if vote == "none" {
            "no vote"
        } else {
            age_words(age)
        };
        let _ = write!(
            h,
            "<span class=\"dot {vote}\" style=\"opacity:{opacity:.1}\" title=\"{}: {vote}, {words}\"></span>",
            esc(node)
        );
    }
    let _ = write!(h, " <small>{} needed</small></td>", e.needed);
    let _ = write!(h, "<td class=\"spark\">{SPARK_SLOT}</td>");
    match cx.since.get(&(e.service.clone(), e.endpoint.clone())) {
        Some(ms) => {
            let _ = write!(
                h,
                "<td class=\"since\"><time datetime=\"{t}\">{t}</time></td>",
                t = utc(*ms)
            );
        }
        None => h.push_str("<td class=\"since\">–</td>"),
    }
    h.push_str("<td class=\"why\">");
    let standing = svc
        .writers
        .first()
        .and_then(|w| w.standing.iter().find(|s| s.address == e.endpoint));
    match standing {
        Some(s) => {
            let _ = write!(
                h,
                "<span class=\"{io}\">{io}</span> {} <small>({})</small>",
                esc(&s.reason),
                esc(&s.reason_kind),
                io = if s.published { "in" } else { "out" },
            );
        }
        None => {
            let who = status.leader.as_deref().unwrap_or("no leader yet");
            let _ = write!(h, "<small>planned by the leader ({})</small>", esc(who));
        }
    }
    if let Some(p) = &e.local {
        let _ = write!(h, "<br><small>probe: {}</small>", esc(&p.detail));
    }
    if e.damping.as_ref().is_some_and(|d| d.suppressed) {
        h.push_str(" <span class=\"badge damp\">damped</span>");
    }
    h.push_str("</td><td class=\"ovr\">");
    let ip: Option<std::net::IpAddr> = e.endpoint.parse().ok();
    for o in status
        .overrides
        .iter()
        .filter(|o| ip.is_some_and(|ip| o.o.covers(&svc.fqdn, ip)))
    {
        let kind = o.o.kind.as_str();
        let _ = write!(
            h,
            "<span class=\"badge {kind}{sched}\" title=\"{} ({}, {} to {})\">{kind}{when}</span>\
             <button type=\"button\" class=\"clear js-only\" data-id=\"{}\" title=\"clear this override\">×</button> ",
            esc(&o.o.comment),
            esc(&o.o.origin),
            utc(o.o.starts_unix_ms),
            utc(o.o.ends_unix_ms),
            esc(&o.o.id),
            sched = if o.active { "" } else { " sched" },
            when = if o.active { "" } else { " (scheduled)" },
        );
    }
    h.push_str("<button type=\"button\" class=\"set js-only\">override…</button></td></tr>");
    h
}

/// A service's published records, per writer, with TTLs and the last write's outcome.
pub fn records(svc: &ServiceStatus) -> String {
    let mut h = format!("<div class=\"records\" id=\"{}\">", records_id(&svc.fqdn));
    for w in &svc.writers {
        let _ = write!(h, "<div class=\"writer\"><b>{}</b>: ", esc(&w.name));
        if w.published_known_unix_ms.is_none() {
            h.push_str("<i>not read yet</i>");
        } else if w.records.is_empty() {
            h.push_str("<i>no records</i>");
        }
        for r in &w.records {
            let ttl = r.ttl.map_or("TTL ?".to_owned(), |t| format!("TTL {t} s"));
            let _ = write!(
                h,
                "<span class=\"rr\">{} <small>{ttl}</small></span> ",
                esc(&r.address)
            );
        }
        if let Some(t) = w.last_write_unix_ms {
            let _ = write!(h, " <small>last write {}</small>", utc(t));
        }
        if let Some(e) = &w.last_error {
            let _ = write!(h, " <span class=\"err\">write failed: {}</span>", esc(e));
        }
        h.push_str("</div>");
    }
    if let Some(hold) = &svc.hold {
        let _ = write!(h, "<div class=\"err\">held back: {}</div>", esc(hold));
    }
    h.push_str("</div>");
    h
}

/// The cluster block: this node, the leader (elected node) marked, members live or not, isolation.
pub fn members(status: &NodeStatus) -> String {
    let mut h = String::from("<section id=\"members\"><h2>Cluster</h2><ul class=\"members\">");
    let mut nodes: Vec<(&str, bool)> = vec![(status.node.as_str(), status.isolated.is_none())];
    nodes.extend(status.peers.iter().map(|p| (p.id.as_str(), p.live)));
    for (id, live) in nodes {
        let elected = status.leader.as_deref() == Some(id);
        let _ = write!(
            h,
            "<li class=\"{}{}\">{}{}{}</li>",
            if live { "live" } else { "gone" },
            if elected { " elected" } else { "" },
            esc(id),
            if id == status.node {
                " <small>(this node)</small>"
            } else {
                ""
            },
            if elected {
                " <span class=\"badge elected\">★ elected</span>"
            } else {
                ""
            },
        );
    }
    let _ = write!(h, "</ul><p><small>term {}</small>", status.term);
    if let Some(why) = &status.isolated {
        let _ = write!(h, " <span class=\"err\">isolated: {}</span>", esc(why));
    }
    h.push_str("</p></section>");
    h
}

/// The most recent events of every service, newest first.
pub fn events(status: &NodeStatus) -> String {
    let mut all: Vec<&crate::state::Event> = status
        .services
        .iter()
        .flat_map(|s| s.events.iter())
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.unix_ms));
    let mut h = String::from("<section id=\"events\"><h2>Recent events</h2><ol class=\"events\">");
    for e in all.into_iter().take(EVENTS_SHOWN) {
        let _ = write!(
            h,
            "<li><time>{}</time> <b class=\"k-{kind}\">{kind}</b> {}: {}</li>",
            utc(e.unix_ms),
            esc(&e.service),
            esc(&e.message),
            kind = e.kind.as_str(),
        );
    }
    h.push_str("</ol></section>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn row_ids_are_safe_and_distinct() {
        assert_eq!(
            row_id("www.example.test.", "127.0.0.2"),
            "ep-www-example-test-127-0-0-2"
        );
        assert_ne!(
            row_id("www.example.test", "::1"),
            row_id("www.example.test", "127.0.0.1")
        );
        assert_eq!(records_id("www.example.test"), "rec-www-example-test-");
    }

    #[test]
    fn votes_fade_with_age_in_visible_steps() {
        assert_eq!(vote_opacity(Some(0)), 1.0);
        assert_eq!(vote_opacity(Some(VOTE_FADE_MS / 2)), 0.6);
        assert_eq!(vote_opacity(Some(VOTE_FADE_MS * 10)), 0.2);
        assert_eq!(vote_opacity(None), 0.2);
        assert!(vote_opacity(Some(1_000)) > vote_opacity(Some(20_000)));
    }

    #[test]
    fn sparkline_scales_to_the_largest_latency() {
        let ring: VecDeque<f64> = [1.0, 2.0, 4.0].into_iter().collect();
        let cell = spark_cell(&ring);
        // x from 0 to the full width, the largest at the top (y = 1), the last value printed.
        assert!(cell.contains("points=\"0,13 40,9 80,1\""), "{cell}");
        assert!(cell.contains("4.0 ms"), "{cell}");
        assert!(spark_cell(&VecDeque::new()).contains('–'));
    }
}
