use std::collections::BTreeMap;

use super::*;
use crate::state::{EndpointStatus, EngineStatus, LocalProbe, ServiceStatus, WriterStatus};

fn status() -> NodeStatus {
    let endpoint = |ip: &str, state: &str, local: Option<bool>| EndpointStatus {
        service: "www.example.test.".to_owned(),
        endpoint: ip.to_owned(),
        cluster_state: state.to_owned(),
        up_votes: if state == "up" {
            vec!["n1".to_owned()]
        } else {
            vec![]
        },
        down_votes: if state == "down" {
            vec!["n1".to_owned()]
        } else {
            vec![]
        },
        needed: 1,
        local: local.map(|ok| LocalProbe {
            state: state.to_owned(),
            ok,
            detail: if ok {
                "HTTP 200 OK".to_owned()
            } else {
                "HTTP 503 Service Unavailable not in expected statuses".to_owned()
            },
            latency_ms: 12.5,
            since_unix_ms: 1,
            last_probe_unix_ms: 2,
            heading: None,
        }),
        damping: None,
    };
    let mut writer = WriterStatus::new("primary");
    writer.published = vec!["192.0.2.1".to_owned(), "192.0.2.2".to_owned()];
    writer.published_known_unix_ms = Some(3);
    writer.pending = ["add", "remove"]
        .iter()
        .map(|op| crate::state::ChangeStatus {
            op: (*op).to_owned(),
            address: "192.0.2.9".to_owned(),
            reason_kind: "verdict".to_owned(),
            reason: "up".to_owned(),
        })
        .collect();
    let change = |op: &str, reason_kind: &str| crate::state::ChangeStatus {
        op: op.to_owned(),
        address: "192.0.2.2".to_owned(),
        reason_kind: reason_kind.to_owned(),
        reason: String::new(),
    };
    writer.standing = vec![crate::state::StandingStatus {
        address: "192.0.2.2".to_owned(),
        published: true,
        reason_kind: "queued".to_owned(),
        reason: String::new(),
    }];
    writer.queued = vec![change("remove", "queued")];
    NodeStatus {
        node: "n1".to_owned(),
        generation: 1,
        isolated: None,
        self_check_targets: vec![],
        leader: Some("n1".to_owned()),
        am_leader: true,
        writer: Some("n1".to_owned()),
        am_writer: true,
        term: 4,
        live_nodes: vec!["n1".to_owned()],
        peers: vec![],
        rejected_messages: BTreeMap::from([("replay".to_owned(), 3)]),
        endpoints: vec![
            EndpointStatus {
                damping: Some(crate::state::DampingStatus {
                    penalty: 1800.5,
                    suppressed: true,
                    reuse_unix_ms: Some(9),
                }),
                ..endpoint("192.0.2.1", "up", Some(true))
            },
            endpoint("192.0.2.2", "down", Some(false)),
            endpoint("192.0.2.3", "unknown", None),
        ],
        services: vec![ServiceStatus {
            fqdn: "www.example.test.".to_owned(),
            zone: "example.test.".to_owned(),
            check: "http".to_owned(),
            writer: "primary".to_owned(),
            writers: vec![writer],
            published: vec![],
            published_known_unix_ms: None,
            last_plan: None,
            last_write_unix_ms: None,
            last_error: None,
            hold: None,
            events: vec![],
            probed: true,
        }],
        overrides: vec![crate::state::OverrideStatus {
            o: crate::decide::overrides::Override {
                id: "d1".to_owned(),
                endpoint: "192.0.2.1".parse().unwrap(),
                service: None,
                kind: crate::decide::overrides::OverrideKind::Drain,
                comment: "disk swap".to_owned(),
                starts_unix_ms: 1,
                ends_unix_ms: 10,
                created_unix_ms: 1,
                updated_unix_ms: 1,
                origin: "n1".to_owned(),
                deleted: false,
            },
            active: true,
        }],
        engine: EngineStatus {
            scheduler_lag_ms: 12.0,
            probes_abstained: BTreeMap::from([("lag".to_owned(), 7)]),
            max_probes_in_flight: 1024,
            probes_in_flight: 17,
            probe_slot_waits: 3,
            confirmations_shed: 5,
        },
    }
}

#[test]
fn engine_lag_and_abstentions_are_exposed() {
    let text = render(&status(), &writes(), &peers(), "0.1.0");
    assert!(
        text.contains("\nrrguard_scheduler_lag_seconds 0.012\n"),
        "{text}"
    );
    assert!(
        text.contains("\nrrguard_probes_abstained_total{reason=\"lag\"} 7\n"),
        "{text}"
    );
    for line in [
        "rrguard_probe_slots 1024",
        "rrguard_probes_in_flight 17",
        "rrguard_probe_slot_waits_total 3",
        "rrguard_confirmations_shed_total 5",
    ] {
        assert!(text.contains(&format!("\n{line}\n")), "{line}:\n{text}");
    }
}

fn writes() -> BTreeMap<(String, String), WriteCounters> {
    let mut c = WriteCounters {
        ok: 2,
        error: 1,
        drift_repaired: 3,
        ..WriteCounters::default()
    };
    c.duration = Histogram::new(&[0.1, 1.0]);
    for v in [0.05, 0.5, 0.5, 2.0] {
        c.duration.observe(v);
    }
    BTreeMap::from([(("www.example.test.".to_owned(), "primary".to_owned()), c)])
}

fn peers() -> crate::state::PeerMessageCounters {
    let key = |k: &str, r: &str, why: &str| (k.to_owned(), r.to_owned(), why.to_owned());
    BTreeMap::from([
        (key("votes", "accepted", "none"), 40),
        (key("votes", "rejected", "replay"), 3),
        (key("overrides", "rejected", "authentication"), 2),
    ])
}

#[test]
fn http_status_peer_messages_plan_size_and_drift_are_exposed() {
    let text = render(&status(), &writes(), &peers(), "1.0");
    let l = lines(&text);
    let sw = r#"service="www.example.test.",writer="primary""#;
    for want in [
        r#"probe_http_status_code{service="www.example.test.",endpoint="192.0.2.1",check="http"} 200"#.to_owned(),
        r#"probe_http_status_code{service="www.example.test.",endpoint="192.0.2.2",check="http"} 503"#.to_owned(),
        r#"rrguard_peer_messages_total{kind="votes",result="accepted",reason="none"} 40"#.to_owned(),
        r#"rrguard_peer_messages_total{kind="votes",result="rejected",reason="replay"} 3"#.to_owned(),
        r#"rrguard_peer_messages_total{kind="overrides",result="rejected",reason="authentication"} 2"#.to_owned(),
        r#"rrguard_plan_changes{service="www.example.test."} 2"#.to_owned(),
        format!("rrguard_drift_repaired_total{{{sw}}} 3"),
    ] {
        assert!(l.contains(&want.as_str()), "missing {want}\n{text}");
    }
    // No status code without an HTTP answer.
    assert!(
        !text
            .contains(r#"probe_http_status_code{service="www.example.test.",endpoint="192.0.2.3""#)
    );
}

#[test]
fn http_status_is_read_from_the_http_probe_detail_only() {
    let probe = |detail: &str| LocalProbe {
        state: "up".to_owned(),
        ok: true,
        detail: detail.to_owned(),
        latency_ms: 1.0,
        since_unix_ms: 1,
        last_probe_unix_ms: 1,
        heading: None,
    };
    assert_eq!(probe("HTTP 200 OK").http_status(), Some(200));
    assert_eq!(
        probe("HTTP 404 Not Found not in expected statuses").http_status(),
        Some(404)
    );
    assert_eq!(
        probe("HTTP 200 OK, body does not contain \"x\"").http_status(),
        Some(200)
    );
    assert_eq!(probe("connection refused").http_status(), None);
    assert_eq!(probe("timed out after 200ms").http_status(), None);
    assert_eq!(probe("HTTP 42").http_status(), None);
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn label_values_escape_backslash_quote_and_newline() {
    assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
    assert_eq!(escape_label("two\nlines"), "two\\nlines");
    assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
    let mut s = status();
    s.rejected_messages = BTreeMap::from([("we\"ird\\re\nason".to_owned(), 1)]);
    let text = render(&s, &BTreeMap::new(), &BTreeMap::new(), "1.0");
    assert!(
        text.contains(
            "rrguard_peer_messages_rejected_total{reason=\"we\\\"ird\\\\re\\nason\"} 1\n"
        ),
        "{text}"
    );
}

#[test]
fn histogram_buckets_are_cumulative_with_sum_and_count() {
    let text = render(&status(), &writes(), &peers(), "1.0");
    let l = lines(&text);
    let labels = r#"service="www.example.test.",writer="primary""#;
    for want in [
        format!("rrguard_dns_write_duration_seconds_bucket{{{labels},le=\"0.1\"}} 1"),
        format!("rrguard_dns_write_duration_seconds_bucket{{{labels},le=\"1\"}} 3"),
        format!("rrguard_dns_write_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 4"),
        format!("rrguard_dns_write_duration_seconds_sum{{{labels}}} 3.05"),
        format!("rrguard_dns_write_duration_seconds_count{{{labels}}} 4"),
        format!("rrguard_dns_writes_total{{{labels},result=\"ok\"}} 2"),
        format!("rrguard_dns_writes_total{{{labels},result=\"error\"}} 1"),
    ] {
        assert!(l.contains(&want.as_str()), "missing {want}\n{text}");
    }
    assert!(text.contains("# TYPE rrguard_dns_write_duration_seconds histogram\n"));
}

#[test]
fn probe_and_cluster_values_follow_the_snapshot() {
    let text = render(&status(), &writes(), &peers(), "1.2.3");
    let l = lines(&text);
    let e = |ip: &str| format!(r#"service="www.example.test.",endpoint="{ip}""#);
    for want in [
        format!("probe_success{{{},check=\"http\"}} 1", e("192.0.2.1")),
        format!("probe_success{{{},check=\"http\"}} 0", e("192.0.2.2")),
        format!(
            "probe_duration_seconds{{{},check=\"http\"}} 0.0125",
            e("192.0.2.1")
        ),
        format!("rrguard_endpoint_up{{{}}} 1", e("192.0.2.1")),
        format!("rrguard_endpoint_up{{{}}} 0", e("192.0.2.2")),
        format!(
            "rrguard_endpoint_state{{{},state=\"unknown\"}} 1",
            e("192.0.2.3")
        ),
        format!(
            "rrguard_endpoint_state{{{},state=\"up\"}} 0",
            e("192.0.2.3")
        ),
        format!("rrguard_votes{{{},vote=\"down\"}} 1", e("192.0.2.2")),
        format!("rrguard_endpoint_penalty{{{}}} 1800.5", e("192.0.2.1")),
        format!("rrguard_endpoint_suppressed{{{}}} 1", e("192.0.2.1")),
        "rrguard_leader 1".to_owned(),
        "rrguard_isolated 0".to_owned(),
        "rrguard_term 4".to_owned(),
        "rrguard_live_nodes 1".to_owned(),
        "rrguard_build_info{version=\"1.2.3\"} 1".to_owned(),
        r#"rrguard_published_records{service="www.example.test.",writer="primary"} 2"#.to_owned(),
        r#"rrguard_changes_queued{service="www.example.test.",writer="primary"} 1"#.to_owned(),
    ] {
        assert!(l.contains(&want.as_str()), "missing {want}\n{text}");
    }
    // Unknown: no up/down sample, and no probe sample before a first probe.
    assert!(
        !text.contains(&format!("rrguard_endpoint_up{{{}}}", e("192.0.2.3"))),
        "{text}"
    );
    assert!(
        !text.contains(&format!("probe_success{{{}", e("192.0.2.3"))),
        "{text}"
    );
    // Damping figures only where the service has damping.
    assert!(
        !text.contains(&format!("rrguard_endpoint_penalty{{{}}}", e("192.0.2.2"))),
        "{text}"
    );
}

#[test]
fn every_family_has_help_and_type_once_and_every_sample_a_family() {
    let text = render(&status(), &writes(), &peers(), "1.0");
    let mut typed = BTreeMap::new();
    let mut helped = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} typed twice"
            );
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_once(' ').unwrap().0;
            assert!(
                helped.insert(name.to_owned(), ()).is_none(),
                "{name} helped twice"
            );
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(typed.contains_key(family), "{line}: no TYPE before it");
            if typed[family] == "counter" {
                assert!(family.ends_with("_total"), "{family}");
            }
        }
    }
    assert_eq!(typed.len(), helped.len());
    assert_eq!(typed.len(), 30, "{typed:?}");
}

#[test]
fn overrides_are_counted_by_kind_and_listed_per_endpoint() {
    let text = render(&status(), &writes(), &peers(), "1.0.0");
    let l = lines(&text);
    assert!(
        l.contains(&r#"rrguard_overrides{kind="drain"} 1"#),
        "{text}"
    );
    assert!(
        l.contains(&r#"rrguard_overrides{kind="force_up"} 0"#),
        "{text}"
    );
    assert!(
        l.contains(
            &r#"rrguard_override_active{endpoint="192.0.2.1",service="*",kind="drain",id="d1"} 1"#
        ),
        "{text}"
    );
}
