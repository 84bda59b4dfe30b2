//! `GET /metrics` of one real `rrguard run` process keeping `www.example.test` on a real Knot (TSIG,
//! RFC 2136) with real HTTP endpoints: every scrape passes `promtool check metrics` (Debian package
//! `prometheus`), and the values follow what happens: a probe that starts failing (and loses its
//! HTTP status code), the write that removes the endpoint, its latency histogram, and a record put
//! back by hand that the reconcile removes again (drift repaired).

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{
    Daemon, DnsKind, DnsServer, HttpEndpoints, free_tcp_port, required_tool, wait_until,
};

const EVENTUALLY: Duration = Duration::from_secs(30);
const E2: &str = "127.0.0.2";
const E3: &str = "127.0.0.3";

/// `GET /metrics`: the body when the answer is 200 with the exposition content type.
fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.1 200")
        && head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"))
    .then(|| body.to_owned())
}

/// Samples by their full `name{labels}` text.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// Pipes `text` to `promtool check metrics`; panics with its complaints if it finds any.
fn promtool_check(text: &str) {
    let promtool = required_tool("promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const PLAN_CHANGES: &str = r#"rrguard_plan_changes{service="www.example.test."}"#;
const DRIFT: &str = r#"rrguard_drift_repaired_total{service="www.example.test.",writer="primary"}"#;

fn http_status(ip: &str) -> String {
    format!(r#"probe_http_status_code{{service="www.example.test.",endpoint="{ip}",check="http"}}"#)
}

fn probe_success(ip: &str) -> String {
    format!(r#"probe_success{{service="www.example.test.",endpoint="{ip}",check="http"}}"#)
}

const WRITES_OK: &str =
    r#"rrguard_dns_writes_total{service="www.example.test.",writer="primary",result="ok"}"#;
const WRITE_COUNT: &str =
    r#"rrguard_dns_write_duration_seconds_count{service="www.example.test.",writer="primary"}"#;

#[test]
fn metrics_pass_promtool_and_follow_probes_and_writes() {
    let ips: Vec<IpAddr> = [E2, E3].iter().map(|s| s.parse().unwrap()).collect();
    let dns = DnsServer::start(DnsKind::Knot, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let http = HttpEndpoints::start(&ips);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dns.write_secret_file(dir.path());
    let listen = free_tcp_port("127.0.0.1".parse().unwrap());
    let config = dir.path().join("rrguard.toml");
    std::fs::write(
        &config,
        format!(
            r#"[node]
id = "metrics-node"
listen = "127.0.0.1:{listen}"
state_dir = "{state}"
max_probes_in_flight = 7

[defaults]
interval = "200ms"
timeout = "150ms"
fall = 2
rise = 2
ttl = 60
reconcile_interval = "1s"

[[writer]]
name = "primary"
type = "rfc2136"
server = "{server}"
timeout = "2s"
tsig = {{ name = "{key}", algorithm = "hmac-sha256", secret_file = "{secret}" }}

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "primary"
endpoints = ["{E2}", "{E3}"]
[service.check]
type = "http"
port = {port}
path = "/health"
"#,
            state = dir.path().display(),
            server = dns.addr,
            key = dns.key_name,
            secret = secret_file.display(),
            port = http.port,
        ),
    )
    .unwrap();
    let d = Daemon::start(&["run", "-c", config.to_str().unwrap()]);

    // Both endpoints healthy, both published: nothing to write yet.
    let mut text = String::new();
    wait_until(
        "both endpoints probed healthy and agreed up",
        EVENTUALLY,
        || {
            text = scrape(listen).unwrap_or_default();
            let s = samples(&text);
            [E2, E3].iter().all(|ip| {
                s.get(&probe_success(ip)) == Some(&1.0)
                    && s.get(&format!(
                        r#"rrguard_endpoint_up{{service="www.example.test.",endpoint="{ip}"}}"#
                    )) == Some(&1.0)
            }) && s
                .get(r#"rrguard_published_records{service="www.example.test.",writer="primary"}"#)
                == Some(&2.0)
        },
    );
    promtool_check(&text);
    let s = samples(&text);
    assert_eq!(s.get("rrguard_leader"), Some(&1.0), "{text}");
    assert_eq!(s.get("rrguard_isolated"), Some(&0.0), "{text}");
    assert_eq!(s.get("rrguard_live_nodes"), Some(&1.0), "{text}");
    // The probe engine's slots: the configured bound, never exceeded, and no wait with two
    // endpoints.
    assert_eq!(s.get("rrguard_probe_slots"), Some(&7.0), "{text}");
    assert!(
        s.get("rrguard_probes_in_flight")
            .is_some_and(|n| (0.0..=7.0).contains(n)),
        "{text}"
    );
    assert_eq!(
        s.get("rrguard_probe_slot_waits_total"),
        Some(&0.0),
        "{text}"
    );
    assert!(s.contains_key("rrguard_confirmations_shed_total"), "{text}");
    assert_eq!(
        s.get(&format!(
            r#"rrguard_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        Some(&1.0),
        "{text}"
    );
    let duration = s
        .get(r#"probe_duration_seconds{service="www.example.test.",endpoint="127.0.0.2",check="http"}"#)
        .copied()
        .unwrap_or_else(|| panic!("no probe_duration_seconds\n{text}"));
    assert!(duration > 0.0 && duration < 0.15, "{duration}\n{text}");
    // blackbox_exporter's status code, from the HTTP probe.
    assert_eq!(s.get(&http_status(E2)), Some(&200.0), "{text}");
    // At rest the plan would change nothing, and nothing drifted.
    assert_eq!(s.get(PLAN_CHANGES), Some(&0.0), "{text}");
    assert_eq!(s.get(DRIFT).copied().unwrap_or(0.0), 0.0, "{text}");
    let writes_before = s.get(WRITES_OK).copied().unwrap_or(0.0);
    let timed_before = s.get(WRITE_COUNT).copied().unwrap_or(0.0);

    // E3 stops answering: its probe fails, the cluster marks it down and the leader removes it.
    http.stop(E3.parse().unwrap());
    wait_until("E3 removed from DNS", EVENTUALLY, || {
        dns.query("www.example.test", "A") == vec![E2.to_owned()]
    });
    wait_until(
        "the metrics show the failed probe and the write",
        EVENTUALLY,
        || {
            text = scrape(listen).unwrap_or_default();
            let s = samples(&text);
            s.get(&probe_success(E3)) == Some(&0.0)
                && s.get(WRITES_OK).copied().unwrap_or(0.0) > writes_before
                && s.get(
                    r#"rrguard_published_records{service="www.example.test.",writer="primary"}"#,
                ) == Some(&1.0)
        },
    );
    promtool_check(&text);
    let s = samples(&text);
    assert_eq!(s.get(&probe_success(E2)), Some(&1.0), "{text}");
    // No HTTP answer, no status code.
    assert_eq!(s.get(&http_status(E3)), None, "{text}");
    // An ordinary write is no drift repair.
    assert_eq!(s.get(DRIFT).copied().unwrap_or(0.0), 0.0, "{text}");
    assert_eq!(
        s.get(r#"rrguard_endpoint_up{service="www.example.test.",endpoint="127.0.0.3"}"#),
        Some(&0.0),
        "{text}"
    );
    assert_eq!(
        s.get(r#"rrguard_votes{service="www.example.test.",endpoint="127.0.0.3",vote="down"}"#),
        Some(&1.0),
        "{text}"
    );
    // Every write is timed: the histogram counted it, and its +Inf bucket equals the count.
    let count = s[WRITE_COUNT];
    assert!(count > timed_before, "{text}");
    assert_eq!(
        s.get(r#"rrguard_dns_write_duration_seconds_bucket{service="www.example.test.",writer="primary",le="+Inf"}"#),
        Some(&count),
        "{text}"
    );

    // Someone puts the down endpoint back by hand: the next reconcile read finds the drift, the
    // write removes it again, and the drift counter says so.
    dns.nsupdate(&format!("update add www.example.test. 60 A {E3}"));
    wait_until("the drift repaired and counted", EVENTUALLY, || {
        text = scrape(listen).unwrap_or_default();
        samples(&text).get(DRIFT) == Some(&1.0)
    });
    assert_eq!(dns.query("www.example.test", "A"), vec![E2.to_owned()]);
    promtool_check(&text);
    d.wait_for_log("changed out of band", EVENTUALLY);
    drop(d);
}
