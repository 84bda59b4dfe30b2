//! Fast confirmation end to end: the real `rrguard` binary, a real Knot (and BIND for the default
//! removal) and real HTTP endpoints.
//! With `interval = "2s"`, `fall = 3` an endpoint that starts failing is removed from DNS within the
//! interval it takes to notice plus two quick re-checks (by default `confirm_interval` is a tenth of
//! the interval, 200 ms here; or `"100ms"` set), instead of two more intervals; with
//! `confirm_interval = "off"` it takes at least those two intervals. The endpoints' request counts show
//! a steady endpoint is probed only every interval (plus the one re-check a failing sibling asks for).
//! The re-checks are seen where they land: the gaps between the failed probes E3's server answered.

#[macro_use]
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
    setup_on(DnsKind::Knot, confirm)
}

/// [`setup`] with the zone on `kind`.
fn setup_on(kind: DnsKind, confirm: Option<&str>) -> Setup {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\nwww A 127.0.0.3\n");
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
/// until it is gone from DNS, and the gaps between E3's failed probes up to then, as its server saw
/// them. The gaps are the property under test: the time to removal also holds the schedule's phase
/// and any failed probe that abstained because rrguard itself was late (a loaded test machine),
/// which is followed by a whole interval.
fn time_to_removal(s: &Setup) -> (Daemon, Duration, Vec<Duration>) {
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
    // A down endpoint is probed again an interval (2 s) after its verdict: every 503 so far came
    // before it.
    let failed: Vec<_> = s
        .http
        .answers(ip(E3))
        .into_iter()
        .filter(|(_, status)| *status == 503)
        .map(|(at, _)| at)
        .collect();
    assert!(
        failed.len() >= 3,
        "{} failed probes of E3\n{}",
        failed.len(),
        d.log()
    );
    let gaps: Vec<Duration> = failed.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!(
        "E3 removed {took:?} after it started failing; gaps between its failed probes {gaps:?}"
    );
    (d, took, gaps)
}

/// [`time_to_removal`] with fast confirmation on: `confirm` as in [`setup`], and the gap its
/// re-checks should come within. An overloaded daemon runs fast confirmation at the plain interval
/// on purpose, and says so (`shed`, logged within `LOG_EVERY`, 10 s); it sheds only re-checks it
/// would have made, so with fast confirmation off it never says it. A run whose failed probes all
/// came an interval apart fails unless the daemon said it shed them; then it is measured once
/// more, and if that run is overloaded too, the shed is the evidence that fast confirmation is on
/// (its pace is then left to the scheduler's unit tests with paused time).
fn removal_with_quick_rechecks(
    kind: DnsKind,
    confirm: Option<&str>,
    quick: Duration,
) -> (Setup, Daemon, Duration) {
    const SHED: &str = "fast confirmations in the last";
    let mut run = 1;
    loop {
        let s = setup_on(kind, confirm);
        let (d, took, gaps) = time_to_removal(&s);
        if gaps.iter().any(|g| *g < quick) {
            return (s, d, took);
        }
        // Fails here, with the log, if the daemon never says it shed: confirmation is off.
        eprintln!("no re-check within {quick:?} (gaps {gaps:?}): waiting for the daemon's shed");
        d.wait_for_log(SHED, Duration::from_secs(12));
        if run == 2 {
            eprintln!("overloaded in both runs: the daemon shed the re-checks it would have made");
            return (s, d, took);
        }
        eprintln!("run {run}: the daemon was overloaded and shed its re-checks; again");
        run += 1;
    }
}

knot_and_bind!(a_failing_endpoint_is_removed_after_quick_rechecks_by_default);

/// On Knot and on BIND: confirmation is the prober's, the write only follows it.
fn a_failing_endpoint_is_removed_after_quick_rechecks_by_default(kind: DnsKind) {
    // The re-checks after the first failure come a tenth of the interval apart, 200 ms. Without
    // confirmation failed probes come an interval apart, 2 s (`off` below), so this fails if fast
    // confirmation is not on by default. Any gap: a failed probe that abstained on a loaded
    // machine is followed by a whole interval.
    let (_s, d, took) = removal_with_quick_rechecks(kind, None, Duration::from_millis(700));
    // One interval until the first failed probe, the re-checks, the UPDATE; one more interval if
    // a failed probe abstained; two if the re-checks were shed.
    assert!(
        took < Duration::from_millis(8500),
        "took {took:?}\n{}",
        d.log()
    );
}

#[test]
fn a_failing_endpoint_is_removed_after_quick_rechecks() {
    // Re-checks 100 ms apart, against 2 s without confirmation.
    let (s, d, took) =
        removal_with_quick_rechecks(DnsKind::Knot, Some("100ms"), Duration::from_millis(500));
    assert!(
        took < Duration::from_millis(8500),
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
    let (d, took, gaps) = time_to_removal(&s);
    assert!(took >= Duration::from_secs(4), "took {took:?}\n{}", d.log());
    // Every failed probe a whole interval after the one before.
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(1800)),
        "gaps {gaps:?}\n{}",
        d.log()
    );
}

/// A reload keeps the endpoints' verdicts, and fast confirmation starts from them: a steady endpoint
/// is probed every interval after a reload too, not confirmed again at the confirm pace as if new
/// (at 10,000 endpoints, 10,000 extra probes at once after every reload).
#[test]
fn a_reload_does_not_confirm_known_verdicts_again() {
    let s = setup(None);
    let d = Daemon::start(&["run", "-c", s.config.to_str().unwrap()]);
    wait_until("both endpoints up", Duration::from_secs(30), || {
        d.log().matches("endpoint is up").count() >= 2
    });
    d.signal("HUP");
    d.wait_for_log("configuration reloaded", Duration::from_secs(30));
    let before = s.http.answers(ip(E2)).len();
    wait_until(
        "three probes of E2 after the reload",
        Duration::from_secs(30),
        || s.http.answers(ip(E2)).len() >= before + 3,
    );
    let after = &s.http.answers(ip(E2))[before..];
    let gaps: Vec<Duration> = after.windows(2).map(|w| w[1].0 - w[0].0).collect();
    // Every 2 s; 200 ms (the default confirm pace) after the first one before the fix.
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(1500)),
        "gaps between E2's probes after the reload {gaps:?}\n{}",
        d.log()
    );
    assert_eq!(
        d.log().matches("endpoint is up").count(),
        2,
        "the verdicts carried over the reload\n{}",
        d.log()
    );
}
