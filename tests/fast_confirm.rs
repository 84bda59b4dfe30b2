//! Fast confirmation end to end: the real `rrguard` binary, a real Knot and real HTTP endpoints.
//! With `interval = "2s"`, `fall = 3` an endpoint that starts failing is removed from DNS within the
//! interval it takes to notice plus two quick re-checks (by default `confirm_interval` is a tenth of
//! the interval, 200 ms here; or `"100ms"` set), instead of two more intervals; with
//! `confirm_interval = "off"` it takes at least those two intervals. The endpoints' request counts show
//! a steady endpoint is probed only every interval (plus the one re-check a failing sibling asks for).

mod support;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use support::{Daemon, DnsKind, DnsServer, HttpEndpoints, wait_until};

const E2: &str = "127.0.0.2";
const E3: &str = "127.0.0.3";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Setup {
    dns: DnsServer,
    http: HttpEndpoints,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

/// `confirm`: the `confirm_interval` value, or `None` to leave the key out (the default).
fn setup(confirm: Option<&str>) -> Setup {
    let dns = DnsServer::start(DnsKind::Knot, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let http = HttpEndpoints::start(&[ip(E2), ip(E3)]);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dns.write_secret_file(dir.path());
    let text = format!(
        r#"[node]
id = "test-node"
state_dir = "{state}"

[defaults]
interval = "2s"
timeout = "500ms"
fall = 3
rise = 2
ttl = 60
{confirm}

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
        confirm = confirm.map_or_else(String::new, |c| format!("confirm_interval = \"{c}\"")),
    );
    let config = dir.path().join("rrguard.toml");
    std::fs::write(&config, text).unwrap();
    Setup {
        dns,
        http,
        _dir: dir,
        config,
    }
}

/// Starts the daemon, waits until both endpoints are up, makes E3 answer 503 and returns how long
/// until it is gone from DNS.
fn time_to_removal(s: &Setup) -> (Daemon, Duration) {
    let d = Daemon::start(&["run", "-c", s.config.to_str().unwrap()]);
    wait_until("both endpoints up", Duration::from_secs(30), || {
        d.log().matches("endpoint is up").count() >= 2
    });
    let start = Instant::now();
    s.http.set_status(ip(E3), 503);
    wait_until("E3 removed", Duration::from_secs(30), || {
        s.dns.query("www.example.test", "A") == vec![E2.to_owned()]
    });
    let took = start.elapsed();
    eprintln!("E3 removed {took:?} after it started failing");
    (d, took)
}

#[test]
fn a_failing_endpoint_is_removed_after_quick_rechecks_by_default() {
    let s = setup(None);
    let (d, took) = time_to_removal(&s);
    // At worst: one interval until the first failed probe, 2 × 200 ms of re-checks (a tenth of the
    // interval), the UPDATE. Without confirmation it cannot be less than 2 intervals (`off` below),
    // so this fails if fast confirmation is not on by default.
    assert!(
        took < Duration::from_millis(3900),
        "took {took:?}\n{}",
        d.log()
    );
}

#[test]
fn a_failing_endpoint_is_removed_after_quick_rechecks() {
    let s = setup(Some("100ms"));
    let (d, took) = time_to_removal(&s);
    // At worst: one interval until the first failed probe, 2 × 100 ms of re-checks, the UPDATE.
    // Without confirmation it cannot be less than 2 intervals (the last test).
    assert!(
        took < Duration::from_millis(3900),
        "took {took:?}\n{}",
        d.log()
    );

    // A steady endpoint: E2 is probed every 2 s, not every 100 ms.
    let before = s.http.hits(ip(E2));
    std::thread::sleep(Duration::from_secs(4));
    let steady = s.http.hits(ip(E2)) - before;
    assert!((1..=3).contains(&steady), "{steady} probes of E2 in 4 s");
    // E3, down and still failing, too.
    let before = s.http.hits(ip(E3));
    std::thread::sleep(Duration::from_secs(4));
    let down = s.http.hits(ip(E3)) - before;
    assert!((1..=3).contains(&down), "{down} probes of E3 in 4 s");
}

#[test]
fn off_waits_whole_intervals() {
    let s = setup(Some("off"));
    let (d, took) = time_to_removal(&s);
    assert!(took >= Duration::from_secs(4), "took {took:?}\n{}", d.log());
}
