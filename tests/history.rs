//! Endpoint history (issue 11, item 5) against a real daemon: `www.example.test` on a real Knot with
//! two real HTTP endpoints on loopback. One endpoint is stopped and started again: its transitions
//! (agreed up, down, up; published, excluded, published) appear in order in
//! `GET /api/v1/services/{fqdn}/endpoints/{ip}/history` and in `rrguard status SERVICE ENDPOINT`,
//! with latency buckets from the probes. The daemon is stopped and started on the same `state_dir`:
//! the history is still there, and the restart adds no transition of its own. Unknown services and
//! endpoints get a 404 naming the field. A `state_dir` that cannot hold the history store logs one
//! warning and the daemon runs on, with the history in memory.

#[macro_use]
mod support;

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{KnotSetup, rrguard_bin, wait_until};

const EVENTUALLY: Duration = Duration::from_secs(60);
const E3: &str = "127.0.0.3";
const HISTORY: &str = "/api/v1/services/www.example.test/endpoints/127.0.0.3/history";

/// The transitions' states of one kind, in order: agreed (`up`/`down`) or standing
/// (`published`/`excluded`). Repeats are merged: a standing is also recorded when only its rule
/// changes (`verdict` to `held_back` while fast confirmation holds a removal back for a moment,
/// which depends on timing).
fn states(doc: &Value, agreed: bool) -> Vec<String> {
    let mut out: Vec<String> = doc["transitions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["state"].as_str().unwrap().to_owned())
                .filter(|s| (s == "up" || s == "down") == agreed)
                .collect()
        })
        .unwrap_or_default();
    out.dedup();
    out
}

#[test]
fn transitions_appear_in_order_and_survive_a_restart() {
    let e3: IpAddr = E3.parse().unwrap();
    let s = KnotSetup::builder("hist-node").build();
    let mut d = s.start_daemon();

    let mut doc = Value::Null;
    wait_until("127.0.0.3 agreed up and published", EVENTUALLY, || {
        doc = s.get_ok(HISTORY).unwrap_or_default();
        states(&doc, true) == ["up"] && states(&doc, false) == ["published"]
    });
    s.http.stop(e3);
    wait_until("127.0.0.3 agreed down and excluded", EVENTUALLY, || {
        doc = s.get_ok(HISTORY).unwrap_or_default();
        states(&doc, true) == ["up", "down"] && states(&doc, false) == ["published", "excluded"]
    });
    s.http.resume(e3);
    wait_until(
        "127.0.0.3 agreed up and published again",
        EVENTUALLY,
        || {
            doc = s.get_ok(HISTORY).unwrap_or_default();
            states(&doc, true) == ["up", "down", "up"]
                && states(&doc, false) == ["published", "excluded", "published"]
        },
    );
    // In time order, each with its rule and reason.
    let transitions = doc["transitions"].as_array().unwrap().clone();
    let times: Vec<u64> = transitions
        .iter()
        .map(|t| t["unix_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{doc:#}");
    let down = transitions.iter().find(|t| t["state"] == "down").unwrap();
    assert_eq!(down["reason_kind"], "agreed", "{doc:#}");
    assert!(
        down["reason"].as_str().unwrap().contains("hist-node"),
        "{doc:#}"
    );
    let excluded = transitions
        .iter()
        .find(|t| t["state"] == "excluded")
        .unwrap();
    assert_eq!(excluded["reason_kind"], "verdict", "{doc:#}");
    // Latency buckets from the probes, failures counted while it was stopped.
    assert_eq!(doc["resolution_ms"], 10_000);
    assert!(doc["latency"]["failures"].as_u64().unwrap() >= 2, "{doc:#}");
    assert!(doc["latency"]["mean_ms"].as_f64().unwrap() > 0.0, "{doc:#}");
    assert!(!doc["buckets"].as_array().unwrap().is_empty(), "{doc:#}");
    assert_eq!(doc["state"], "up");
    assert_eq!(doc["published"], true);

    // The CLI shows the same transitions, in the same order.
    let out = Command::new(rrguard_bin())
        .args(["status", "-c", s.config_arg(), "www.example.test", E3])
        .env_remove("RRGUARD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The STATE column: the word after "… ago".
    let rows: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "ago")?;
            words.get(at + 1).copied()
        })
        .filter(|w| ["up", "down"].contains(w))
        .collect();
    let kept = format!("TRANSITIONS ({} kept", transitions.len());
    assert!(text.contains(&kept), "{text}");
    assert!(text.contains("dns      published"), "{text}");
    assert_eq!(rows, ["up", "down", "up"], "{text}");

    // Unknown service, unknown endpoint, not an address: 404 naming the field.
    let (code, err) = s
        .get("/api/v1/services/nope.example.test/endpoints/127.0.0.3/history")
        .unwrap();
    assert_eq!((code, err["field"].as_str()), (404, Some("fqdn")), "{err}");
    for ip in ["127.0.0.9", "not-an-ip"] {
        let path = format!("/api/v1/services/www.example.test/endpoints/{ip}/history");
        let (code, err) = s.get(&path).unwrap();
        assert_eq!((code, err["field"].as_str()), (404, Some("ip")), "{err}");
        let message = err["error"].as_str().unwrap();
        assert!(
            message.contains(ip) && message.contains("127.0.0.2, 127.0.0.3"),
            "{message}"
        );
    }

    // Restart on the same state_dir: everything kept is back, and the restart adds nothing.
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0), "{}", d.log());
    let before = history_parts(&doc);
    let d2 = s.start_daemon();
    let mut after = Value::Null;
    wait_until("the restarted node serves the history", EVENTUALLY, || {
        after = s.get_ok(HISTORY).unwrap_or_default();
        !after.is_null()
    });
    let (t_after, b_after) = history_parts(&after);
    assert_eq!(t_after[..before.0.len()], before.0[..], "{after:#}");
    for (start, probes) in &before.1 {
        let kept = b_after.iter().find(|(s, _)| s == start).map(|(_, p)| *p);
        assert!(
            kept >= Some(*probes),
            "bucket {start} lost probes: {after:#}"
        );
    }
    // Probing on after the restart confirms the same states: no new transition.
    wait_until("the restarted node agrees and plans", EVENTUALLY, || {
        s.get("/api/v1/services/www.example.test")
            .is_some_and(|(_, v)| {
                v["endpoints"].as_array().is_some_and(|a| {
                    a.iter()
                        .all(|e| e["state"] == "up" && e["published"] == true)
                })
            })
    });
    std::thread::sleep(Duration::from_millis(500));
    let (t_final, _) = history_parts(&s.get_ok(HISTORY).unwrap());
    assert_eq!(t_final, before.0, "the restart added transitions");
    let log = d2.log();
    assert!(log.contains("endpoint history restored"), "{log}");
    println!(
        "{} transitions and {} buckets kept across the restart",
        before.0.len(),
        before.1.len()
    );
}

/// The transitions as (time, state, rule) and the buckets as (start, probes).
#[allow(clippy::type_complexity)]
fn history_parts(doc: &Value) -> (Vec<(u64, String, String)>, Vec<(u64, u64)>) {
    let t = doc["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["unix_ms"].as_u64().unwrap(),
                t["state"].as_str().unwrap().to_owned(),
                t["reason_kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let b = doc["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start_unix_ms"].as_u64().unwrap(),
                b["probes"].as_u64().unwrap(),
            )
        })
        .collect();
    (t, b)
}

#[test]
fn a_state_dir_that_cannot_hold_the_history_logs_one_warning_and_the_node_runs_on() {
    let s = KnotSetup::builder("hist-node").build();
    // A directory where the database file should be: redb cannot create it.
    std::fs::create_dir_all(s.state_dir().join("history.redb")).unwrap();
    let d = s.start_daemon();
    wait_until(
        "the history in memory shows probes and a transition",
        EVENTUALLY,
        || {
            s.get_ok(HISTORY).is_some_and(|doc| {
                doc["latency"]["probes"].as_u64() > Some(0) && states(&doc, true) == ["up"]
            })
        },
    );
    let log = d.log();
    let warnings = log
        .matches("running with the endpoint history in memory only")
        .count();
    assert_eq!(warnings, 1, "{log}");
    assert!(log.contains("history.redb"), "{log}");
}
