//! Field faults, replayed end to end: the real `rrguard` binary against a real Knot and a real BIND
//! (TSIG, RFC 2136 over TCP) and real HTTP endpoints on 127.0.0.x/::1. Each scenario is a fault seen
//! in the field, and asserts the value the service core (`src/decide/service.rs`) promises for it:
//!
//! - a TTL change reaches DNS, in one UPDATE, within one reconcile interval, and again after a reload;
//! - an endpoint whose checks never settle does not block the removal of a dead neighbour for longer
//!   than the settle bound;
//! - recovery from all-down never shrinks the record set;
//! - a service's state (published set, last plan, events, probe latency) shows in `/api/v1/status`.
//!
//! The same battery runs against both servers.

#[macro_use]
mod support;

use std::net::IpAddr;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use support::{Daemon, DnsKind, DnsServer, HttpEndpoints, wait_until};
use tokio::time::Instant;

/// Generous bound for anything that should happen within a few probe intervals; never a performance
/// assertion.
const EVENTUALLY: Duration = Duration::from_secs(30);

const E2: &str = "127.0.0.2";
const E3: &str = "127.0.0.3";
const E4: &str = "127.0.0.4";
const FQDN: &str = "www.example.test";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A DNS server, HTTP endpoints, a status port and a config file; the daemon is started by the test.
struct Setup {
    dns: DnsServer,
    http: HttpEndpoints,
    /// `[node] listen` port of the status API.
    status_port: u16,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

struct Opts<'a> {
    /// Configured endpoints.
    endpoints: &'a [&'a str],
    /// Addresses the HTTP helper listens on (a configured endpoint missing here has no listener).
    listening: &'a [&'a str],
    zone_body: &'a str,
    /// The `[defaults]` keys besides `reconcile_interval`.
    defaults: &'a str,
    reconcile: &'a str,
    /// Extra `[[service]]` keys.
    service_extra: &'a str,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            endpoints: &[E2, E3, E4],
            listening: &[E2, E3, E4],
            zone_body: "www A 127.0.0.2\nwww A 127.0.0.3\nwww A 127.0.0.4\n",
            defaults: "interval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nttl = 60",
            reconcile: "60s",
            service_extra: "",
        }
    }
}

impl Setup {
    fn new(kind: DnsKind, opts: Opts<'_>) -> Setup {
        let dns = DnsServer::start(kind, opts.zone_body);
        let ips: Vec<IpAddr> = opts.listening.iter().map(|s| ip(s)).collect();
        let http = HttpEndpoints::start(&ips);
        let status_port = support::free_tcp_port(ip("127.0.0.1"));
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dns.write_secret_file(dir.path());
        let endpoints: Vec<String> = opts.endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let text = format!(
            r#"[node]
id = "test-node"
state_dir = "{state}"
listen = "127.0.0.1:{status_port}"

[defaults]
{defaults}
reconcile_interval = "{reconcile}"

[[writer]]
name = "primary"
type = "rfc2136"
server = "{server}"
timeout = "2s"
tsig = {{ name = "{key}", algorithm = "hmac-sha256", secret_file = "{secret}" }}

[[service]]
fqdn = "{FQDN}"
zone = "example.test"
writer = "primary"
endpoints = [{endpoints}]
{extra}
[service.check]
type = "http"
port = {port}
path = "/health"
"#,
            state = dir.path().display(),
            defaults = opts.defaults,
            reconcile = opts.reconcile,
            server = dns.addr,
            key = dns.key_name,
            secret = secret_file.display(),
            endpoints = endpoints.join(", "),
            extra = opts.service_extra,
            port = http.port,
        );
        let config = dir.path().join("rrguard.toml");
        std::fs::write(&config, text).unwrap();
        Setup {
            dns,
            http,
            status_port,
            _dir: dir,
            config,
        }
    }

    fn start(&self) -> Daemon {
        Daemon::start(&["run", "-c", self.config.to_str().unwrap()])
    }

    fn a(&self) -> Vec<String> {
        self.dns.query(FQDN, "A")
    }

    /// The A and AAAA records with their TTLs.
    /// The name's A and AAAA records as `(ttl, address)`.
    fn records(&self) -> Vec<(u32, String)> {
        let mut all = self.dns.query_with_ttl(FQDN, "A");
        all.extend(self.dns.query_with_ttl(FQDN, "AAAA"));
        // query_with_ttl answers `TYPE RDATA`; only the address matters here.
        all.into_iter()
            .map(|(ttl, rr)| match rr.split_once(' ') {
                Some((_, addr)) => (ttl, addr.to_owned()),
                None => (ttl, rr),
            })
            .collect()
    }

    /// Replaces `from` by `to` in the config file (which must contain it).
    fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "{from:?} not in\n{text}");
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }

    /// `GET /api/v1/status` as JSON (`Null` until the node answers).
    fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(self.status_port, "/api/v1/status");
        if code == 200 {
            serde_json::from_str(&body).unwrap_or_default()
        } else {
            serde_json::Value::Null
        }
    }
}

/// A minimal HTTP/1.1 GET on loopback; returns the status code (0 if none) and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if s.write_all(head.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Log lines containing `needle`.
fn lines(d: &Daemon, needle: &str) -> Vec<String> {
    d.log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

fn count(d: &Daemon, needle: &str) -> usize {
    lines(d, needle).len()
}

/// The service's entry in a status document.
fn service(status: &serde_json::Value) -> &serde_json::Value {
    status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["fqdn"] == format!("{FQDN}.")))
        .unwrap_or(&serde_json::Value::Null)
}

/// The entry of `endpoint` of the service in a status document.
fn endpoint<'a>(status: &'a serde_json::Value, endpoint: &str) -> &'a serde_json::Value {
    status["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["endpoint"] == endpoint))
        .unwrap_or(&serde_json::Value::Null)
}

/// Field fault: a TTL change in the config never reached DNS (the planner compared addresses only).
/// Right: `rrguard plan` announces it; every A and AAAA record has the service TTL within one
/// reconcile interval, in one UPDATE (A and AAAA go in one message), and nothing more is written;
/// after an edit and SIGHUP the new TTL arrives the same way.
fn ttl_change_reaches_dns(kind: DnsKind) {
    let reconcile = Duration::from_secs(1);
    let s = Setup::new(
        kind,
        Opts {
            endpoints: &[E2, "::1"],
            listening: &[E2, "::1"],
            zone_body: "www 30 A 127.0.0.2\nwww 30 AAAA ::1\n",
            reconcile: "1s",
            service_extra: "ttl = 120",
            ..Opts::default()
        },
    );
    assert_eq!(
        s.records(),
        vec![(30, E2.to_owned()), (30, "::1".to_owned())]
    );

    // `plan` says what will change before anything does.
    let out = std::process::Command::new(support::rrguard_bin())
        .args(["plan", "-c", s.config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for addr in [E2, "::1"] {
        assert!(
            stdout.contains(&format!("set ttl of {addr} (ttl 30s, service ttl is 120s)")),
            "{stdout}"
        );
    }
    assert_eq!(s.records()[0].0, 30, "plan must not write");

    let started = Instant::now();
    let d = s.start();
    let want = |ttl: u32| vec![(ttl, E2.to_owned()), (ttl, "::1".to_owned())];
    wait_until("every record has ttl 120", EVENTUALLY, || {
        s.records() == want(120)
    });
    eprintln!("ttl 120 after {:?}", started.elapsed());
    // Steady for three reconcile intervals: the re-reads find nothing to do.
    thread::sleep(reconcile * 3);
    assert_eq!(s.records(), want(120));
    let updates = lines(&d, "DNS updated");
    assert_eq!(updates.len(), 1, "one UPDATE for both RRsets:\n{}", d.log());
    assert!(updates[0].contains("set ttl of 127.0.0.2"), "{updates:?}");
    assert!(updates[0].contains("set ttl of ::1"), "{updates:?}");

    s.edit_config("ttl = 120", "ttl = 60");
    d.signal("HUP");
    d.wait_for_log("configuration reloaded", EVENTUALLY);
    wait_until("every record has ttl 60", EVENTUALLY, || {
        s.records() == want(60)
    });
    thread::sleep(reconcile * 3);
    assert_eq!(s.records(), want(60));
    assert_eq!(
        count(&d, "DNS updated"),
        2,
        "one more UPDATE for the reload:\n{}",
        d.log()
    );
}

/// Field fault: an endpoint whose checks alternate (200, 503, 200, …) never reaches `fall` or `rise`
/// in a row, so it stays unknown, and an unknown endpoint held back every removal: a dead neighbour
/// stayed in DNS for good. Right: the dead one goes within the settle bound, the unsettled one keeps
/// its place, and the log and the status API say why.
fn unsettled_endpoint_does_not_block_removal(kind: DnsKind) {
    let interval = Duration::from_secs(1);
    let timeout = Duration::from_millis(500);
    let (fall, rise) = (3u32, 2u32);
    let s = Setup::new(
        kind,
        Opts {
            // E4 has no listener: dead from the start.
            listening: &[E2, E3],
            defaults: "interval = \"1s\"\ntimeout = \"500ms\"\nfall = 3\nrise = 2\nttl = 60",
            ..Opts::default()
        },
    );
    s.http.set_alternate(ip(E2), true);
    let settle_bound = interval * (fall.max(rise) + 1) + timeout;
    let started = Instant::now();
    let d = s.start();
    // Bounded: the fault was a removal blocked for ever. The slack (3 intervals past the settle
    // bound, which starts with the first probe) absorbs start-up and a loaded machine.
    let bound = settle_bound + 3 * interval;
    wait_until(
        "the dead endpoint is removed within the settle bound",
        bound,
        || s.a() == vec![E2, E3],
    );
    eprintln!("removed after {:?} (bound {bound:?})", started.elapsed());
    let unsettled = lines(&d, "no longer holds back removals");
    assert!(
        unsettled
            .iter()
            .any(|l| l.contains("endpoint=127.0.0.2") && l.contains("never settles")),
        "{}",
        d.log()
    );
    let removal = lines(&d, "DNS updated");
    assert_eq!(removal.len(), 1, "{}", d.log());
    assert!(
        removal[0].contains("remove 127.0.0.4 (down)"),
        "{removal:?}"
    );
    assert!(!removal[0].contains("127.0.0.2"), "{removal:?}");

    // The unsettled endpoint keeps its place for many more intervals.
    let mut status = serde_json::Value::Null;
    wait_until("status shows the unsettled endpoint", EVENTUALLY, || {
        status = s.status();
        endpoint(&status, E2)["local"]["state"] == "unknown"
            && service(&status)["events"].as_array().is_some_and(|e| {
                e.iter().any(|e| {
                    e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("127.0.0.2 never settles"))
                })
            })
    });
    assert_eq!(
        endpoint(&status, E2)["cluster_state"],
        "unknown",
        "{status:#}"
    );
    assert_eq!(endpoint(&status, E3)["cluster_state"], "up", "{status:#}");
    assert_eq!(endpoint(&status, E4)["cluster_state"], "down", "{status:#}");
    assert_eq!(
        service(&status)["published"],
        serde_json::json!([E2, E3]),
        "{status:#}"
    );
    thread::sleep(interval * 3);
    assert_eq!(s.a(), vec![E2, E3], "{}", d.log());
    assert_eq!(count(&d, "DNS updated"), 1, "{}", d.log());
}

/// Field fault: after an all-down (keep_all publishing every endpoint) the endpoints came back
/// together, the first one seen up made the others look removable, and DNS shrank to one address
/// before growing back. Right: the set never drops below three, nothing is removed, and no UPDATE is
/// made at all (every endpoint stays published throughout, so no transition needs one).
fn recovery_from_all_down_never_shrinks(kind: DnsKind) {
    let s = Setup::new(kind, Opts::default());
    let d = s.start();
    wait_until("three endpoints up", EVENTUALLY, || {
        count(&d, "endpoint is up") >= 3
    });
    s.http.stop_all(&[ip(E2), ip(E3), ip(E4)]);
    wait_until("all three endpoints down", EVENTUALLY, || {
        count(&d, "endpoint is down") >= 3
    });
    assert_eq!(s.a(), vec![E2, E3, E4], "keep_all:\n{}", d.log());
    for e in [E2, E3, E4] {
        s.http.resume(ip(e));
    }
    // Poll DNS through the recovery and well beyond the hold bound (2 × 200 ms + 150 ms).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut smallest = 3;
    while Instant::now() < deadline {
        let a = s.a();
        smallest = smallest.min(a.len());
        assert!(a.len() >= 3, "record set shrank to {a:?}:\n{}", d.log());
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(smallest, 3);
    assert!(count(&d, "endpoint is up") >= 6, "{}", d.log());
    let updates = lines(&d, "DNS updated");
    assert!(
        updates.iter().all(|l| !l.contains("remove")),
        "{updates:#?}"
    );
    assert!(
        updates.is_empty(),
        "no transition needed an UPDATE: {updates:#?}"
    );
}

/// A failover shows in `/api/v1/status`: the published set, the last plan, the events of the write
/// and the probes' latency.
fn status_shows_a_failover(kind: DnsKind) {
    let s = Setup::new(kind, Opts::default());
    let d = s.start();
    wait_until("three endpoints up", EVENTUALLY, || {
        count(&d, "endpoint is up") >= 3
    });
    s.http.stop(ip(E3));
    wait_until("E3 removed", EVENTUALLY, || s.a() == vec![E2, E4]);
    let mut status = serde_json::Value::Null;
    wait_until("status shows the failover", EVENTUALLY, || {
        status = s.status();
        service(&status)["published"] == serde_json::json!([E2, E4])
    });
    let svc = service(&status);
    assert_eq!(svc["last_plan"], "remove 127.0.0.3 (down)", "{status:#}");
    let events = svc["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["kind"] == "dns_updated"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("remove 127.0.0.3"))),
        "{status:#}"
    );
    assert!(
        events.iter().any(|e| e["kind"] == "probe_transition"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("127.0.0.3 is down"))),
        "{status:#}"
    );
    assert!(svc["last_error"].is_null(), "{status:#}");
    assert!(svc["last_write_unix_ms"].as_u64().is_some(), "{status:#}");
    for e in [E2, E4] {
        let latency = endpoint(&status, e)["local"]["latency_ms"].as_f64();
        assert!(latency.is_some_and(|l| l > 0.0), "{e}: {status:#}");
        assert_eq!(endpoint(&status, e)["local"]["state"], "up", "{status:#}");
    }
    assert_eq!(
        endpoint(&status, E3)["local"]["state"],
        "down",
        "{status:#}"
    );
}

knot_and_bind!(
    ttl_change_reaches_dns,
    unsettled_endpoint_does_not_block_removal,
    recovery_from_all_down_never_shrinks,
    status_shows_a_failover,
);
