//! End-to-end scenarios: the real `rrguard` binary keeps `www.example.test` healthy on a real Knot and a
//! real BIND (TSIG, RFC 2136 over TCP) while real HTTP endpoints on 127.0.0.x/::1 stop and start.
//! The same battery runs against both servers.

#[macro_use]
mod support;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use support::{Daemon, DnsKind, DnsServer, HttpEndpoints, wait_until};

/// Generous bound for anything that should happen within a few probe intervals; never a performance
/// assertion (benchmarks measure speed).
const EVENTUALLY: Duration = Duration::from_secs(30);

const E2: &str = "127.0.0.2";
const E3: &str = "127.0.0.3";
const E4: &str = "127.0.0.4";
const ZONE_BODY: &str = "www A 127.0.0.2\nwww A 127.0.0.3\nwww A 127.0.0.4\n";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A DNS server, endpoints and a config file; the daemon is started by the scenario.
struct Setup {
    dns: DnsServer,
    http: HttpEndpoints,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

struct Opts<'a> {
    endpoints: &'a [&'a str],
    zone_body: &'a str,
    /// Extra `[[service]]` keys.
    service_extra: &'a str,
    reconcile: &'a str,
    /// Override the TSIG secret in the config (wrong-key scenario).
    secret: Option<&'a str>,
    /// Extra `[[service]]` sections appended to the config; `PORT` is replaced by the endpoints' port.
    more_services: &'a str,
    /// How the service names its writers.
    writers: &'a str,
    /// Extra `[[writer]]` sections.
    more_writers: String,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            endpoints: &[E2, E3, E4],
            zone_body: ZONE_BODY,
            service_extra: "",
            reconcile: "60s",
            secret: None,
            more_services: "",
            writers: r#"writer = "primary""#,
            more_writers: String::new(),
        }
    }
}

impl Setup {
    fn new(kind: DnsKind, opts: Opts<'_>) -> Setup {
        let dns = DnsServer::start(kind, opts.zone_body);
        let ips: Vec<IpAddr> = opts.endpoints.iter().map(|s| ip(s)).collect();
        let http = HttpEndpoints::start(&ips);
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dns.write_secret_file(dir.path());
        let tsig = match opts.secret {
            Some(s) => format!(r#"secret = "{s}""#),
            None => format!(r#"secret_file = "{}""#, secret_file.display()),
        };
        let endpoints: Vec<String> = opts.endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let text = format!(
            r#"[node]
id = "test-node"
state_dir = "{state}"

[defaults]
interval = "200ms"
timeout = "150ms"
fall = 2
rise = 2
# The harness zone's $TTL: no record needs a TTL rewrite at start.
ttl = 60
reconcile_interval = "{reconcile}"

[[writer]]
name = "primary"
type = "rfc2136"
server = "{server}"
timeout = "2s"
tsig = {{ name = "{key}", algorithm = "hmac-sha256", {tsig} }}
{more_writers}
[[service]]
fqdn = "www.example.test"
zone = "example.test"
{writers}
endpoints = [{endpoints}]
{extra}
[service.check]
type = "http"
port = {port}
path = "/health"
"#,
            state = dir.path().display(),
            reconcile = opts.reconcile,
            server = dns.addr,
            key = dns.key_name,
            endpoints = endpoints.join(", "),
            extra = opts.service_extra,
            port = http.port,
            more_writers = opts.more_writers,
            writers = opts.writers,
        );
        let text = text + &opts.more_services.replace("PORT", &http.port.to_string());
        let config = dir.path().join("rrguard.toml");
        std::fs::write(&config, text).unwrap();
        Setup {
            dns,
            http,
            _dir: dir,
            config,
        }
    }

    fn start(&self, extra_args: &[&str]) -> Daemon {
        let config = self.config.to_str().unwrap();
        let mut args = vec!["run", "-c", config];
        args.extend_from_slice(extra_args);
        Daemon::start(&args)
    }

    fn a(&self) -> Vec<String> {
        self.dns.query("www.example.test", "A")
    }

    fn aaaa(&self) -> Vec<String> {
        self.dns.query("www.example.test", "AAAA")
    }

    fn wait_a(&self, want: &[&str]) {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        let mut last = Vec::new();
        wait_until(&format!("A records become {want:?}"), EVENTUALLY, || {
            last = self.a();
            last == want
        });
    }
}

fn count(d: &Daemon, needle: &str) -> usize {
    d.log().matches(needle).count()
}

/// Waits until every configured endpoint has a verdict (so the daemon is steady).
fn wait_verdicts(d: &Daemon, n: usize) {
    wait_until("every endpoint has a verdict", EVENTUALLY, || {
        count(d, "endpoint is up") + count(d, "endpoint is down") >= n
    });
}

fn endpoint_stops_and_comes_back(kind: DnsKind) {
    let s = Setup::new(kind, Opts::default());
    let d = s.start(&[]);
    wait_verdicts(&d, 3);
    s.http.stop(ip(E3));
    s.wait_a(&[E2, E4]);
    s.http.resume(ip(E3));
    s.wait_a(&[E2, E3, E4]);
    // Each write is logged after the server applied it: wait for the lines rather than race them.
    d.wait_for_log("remove 127.0.0.3 (down)", EVENTUALLY);
    d.wait_for_log("add 127.0.0.3 (up)", EVENTUALLY);
}

fn all_down_keep_all_keeps_every_record(kind: DnsKind) {
    let s = Setup::new(kind, Opts::default());
    let d = s.start(&[]);
    wait_until("three endpoints up", EVENTUALLY, || {
        count(&d, "endpoint is up") >= 3
    });
    let serial = s.dns.soa_serial();
    // All three at once: with one stop after another (each waits for its socket to be gone), fast
    // confirmation rightly sees a rolling failure and removes the first endpoints.
    s.http.stop_all(&[ip(E2), ip(E3), ip(E4)]);
    wait_until("all three endpoints down", EVENTUALLY, || {
        count(&d, "endpoint is down") >= 3
    });
    // Give a buggy daemon several intervals to do the wrong thing.
    std::thread::sleep(Duration::from_millis(1000));
    // Probes are staggered, so the endpoints are seen down one after another; removing the first ones
    // would only have keep_all put them back. The zone must not change at all.
    assert_eq!(s.a(), vec![E2, E3, E4]);
    assert_eq!(
        s.dns.soa_serial(),
        serial,
        "keep_all must hold the set without flapping:\n{}",
        d.log()
    );
    // What keeps the set: either the first failure re-checks the other endpoints at once (fast
    // confirmation) so all three go down together, or the removal is held back until they are
    // re-checked; without both, the staggered probes remove the first ones.
}

fn all_down_fail_closed_removes_them(kind: DnsKind) {
    let s = Setup::new(
        kind,
        Opts {
            service_extra: "all_down = \"fail_closed\"",
            ..Opts::default()
        },
    );
    let d = s.start(&[]);
    wait_verdicts(&d, 3);
    for e in [E2, E3, E4] {
        s.http.stop(ip(e));
    }
    s.wait_a(&[]);
    d.wait_for_log("all_down=fail_closed", EVENTUALLY);
}

fn record_deleted_by_someone_else_is_restored(kind: DnsKind) {
    let s = Setup::new(
        kind,
        Opts {
            reconcile: "500ms",
            ..Opts::default()
        },
    );
    let d = s.start(&[]);
    wait_verdicts(&d, 3);
    s.dns
        .nsupdate("update delete www.example.test. A 127.0.0.3");
    // Restored by the reconcile loop, not by any health change.
    s.wait_a(&[E2, E3, E4]);
    d.wait_for_log("add 127.0.0.3 (up)", EVENTUALLY);
}

fn unmanaged_record_is_left_alone(kind: DnsKind) {
    let s = Setup::new(
        kind,
        Opts {
            zone_body: "www A 127.0.0.2\nwww A 127.0.0.3\nwww A 127.0.0.4\nwww A 127.0.0.99\n",
            ..Opts::default()
        },
    );
    let d = s.start(&[]);
    wait_verdicts(&d, 3);
    s.http.stop(ip(E3));
    s.wait_a(&[E2, E4, "127.0.0.99"]);
    for e in [E2, E4] {
        s.http.stop(ip(e));
    }
    // All managed endpoints down: keep_all restores them, and 127.0.0.99 is still untouched.
    wait_until("all three endpoints down", EVENTUALLY, || {
        count(&d, "endpoint is down") >= 3
    });
    s.wait_a(&[E2, E3, E4, "127.0.0.99"]);
}

fn aaaa_on_ipv6_endpoint(kind: DnsKind) {
    let s = Setup::new(
        kind,
        Opts {
            endpoints: &[E2, "::1"],
            zone_body: "www A 127.0.0.2\n",
            ..Opts::default()
        },
    );
    let d = s.start(&[]);
    wait_until("AAAA ::1 added", EVENTUALLY, || s.aaaa() == vec!["::1"]);
    s.http.stop(ip("::1"));
    wait_until("AAAA ::1 removed", EVENTUALLY, || s.aaaa().is_empty());
    // The A RRset was never touched.
    assert_eq!(s.a(), vec![E2]);
    d.wait_for_log("remove ::1 (down)", EVENTUALLY);
}

fn wrong_tsig_secret_is_reported_and_changes_nothing(kind: DnsKind) {
    let s = Setup::new(
        kind,
        Opts {
            // Valid base64, wrong key.
            secret: Some("d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw=="),
            ..Opts::default()
        },
    );
    let mut d = s.start(&[]);
    let serial = s.dns.soa_serial();
    s.http.stop(ip(E3));
    d.wait_for_log("rejected the TSIG signature", EVENTUALLY);
    let log = d.log();
    // Reads are signed too, so the wrong key shows at the first read, before any write is tried.
    assert!(
        log.contains("configuration error while reading published records"),
        "{log}"
    );
    assert!(log.contains("check that key \"upd-key.\""), "{log}");
    assert_eq!(
        d.wait_exit(Duration::from_millis(500)),
        None,
        "daemon must keep running:\n{log}"
    );
    assert_eq!(s.a(), vec![E2, E3, E4]);
    assert_eq!(s.dns.soa_serial(), serial);
}

fn dns_server_restart_converges(kind: DnsKind) {
    let mut s = Setup::new(kind, Opts::default());
    let d = s.start(&[]);
    wait_verdicts(&d, 3);
    s.dns.stop();
    s.http.stop(ip(E3));
    wait_until("a failed write attempt", EVENTUALLY, || {
        let log = d.log();
        log.contains("writing failed") || log.contains("reading published records failed")
    });
    s.dns.restart();
    s.wait_a(&[E2, E4]);
}

fn restart_with_everything_healthy_writes_nothing(kind: DnsKind) {
    let s = Setup::new(kind, Opts::default());
    let mut d = s.start(&[]);
    wait_until("three endpoints up", EVENTUALLY, || {
        count(&d, "endpoint is up") >= 3
    });
    let serial = s.dns.soa_serial();
    d.signal("TERM");
    assert_eq!(
        d.wait_exit(EVENTUALLY),
        Some(0),
        "SIGTERM must exit 0:\n{}",
        d.log()
    );
    let d2 = s.start(&[]);
    wait_until("three endpoints up again", EVENTUALLY, || {
        count(&d2, "endpoint is up") >= 3
    });
    // Several more intervals with everything steady.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        s.dns.soa_serial(),
        serial,
        "a restart must make no DNS write:\n{}",
        d2.log()
    );
    assert!(!d2.log().contains("DNS updated"), "{}", d2.log());
}

fn sighup_reload_keeps_health_and_rejects_bad_config(kind: DnsKind) {
    let s = Setup::new(kind, Opts::default());
    let d = s.start(&[]);
    wait_until("three endpoints up", EVENTUALLY, || {
        count(&d, "endpoint is up") >= 3
    });
    // A broken file is rejected; the old configuration keeps running.
    let good = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, good.replace("fall = 2", "fall = \"two\"")).unwrap();
    d.signal("HUP");
    d.wait_for_log("reload rejected", EVENTUALLY);
    // A valid change: drop endpoint .4 from the service. Unchanged endpoints keep their health.
    std::fs::write(&s.config, good.replace(r#", "127.0.0.4""#, "")).unwrap();
    d.signal("HUP");
    d.wait_for_log("configuration reloaded", EVENTUALLY);
    let ups_before = count(&d, "endpoint is up");
    // The dropped endpoint is now an unlisted record: left alone.
    s.http.stop(ip(E3));
    s.wait_a(&[E2, E4]);
    assert_eq!(
        count(&d, "endpoint is up"),
        ups_before,
        "carried-over endpoints must not re-enter `unknown`:\n{}",
        d.log()
    );
}

fn dry_run_writes_nothing(kind: DnsKind) {
    let s = Setup::new(kind, Opts::default());
    let d = s.start(&["--dry-run"]);
    wait_verdicts(&d, 3);
    let serial = s.dns.soa_serial();
    s.http.stop(ip(E3));
    d.wait_for_log("dry run: would change DNS", EVENTUALLY);
    assert!(d.log().contains("remove 127.0.0.3 (down)"), "{}", d.log());
    assert_eq!(s.dns.soa_serial(), serial);
    assert_eq!(s.a(), vec![E2, E3, E4]);
}

fn plan_command_prints_plan_and_writes_nothing(kind: DnsKind) {
    let s = Setup::new(kind, Opts::default());
    // `plan` decides on a single probe: give it a timeout a loaded CI machine cannot miss.
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("timeout = \"150ms\"", "timeout = \"3s\""),
    )
    .unwrap();
    s.http.stop(ip(E3));
    let serial = s.dns.soa_serial();
    let out = std::process::Command::new(support::rrguard_bin())
        .args(["plan", "-c", s.config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("www.example.test. (writer primary)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("published: 127.0.0.2 127.0.0.3 127.0.0.4"),
        "{stdout}"
    );
    assert!(stdout.contains("plan: remove 127.0.0.3 (down)"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("127.0.0.3") && l.contains("connection refused")),
        "{stdout}"
    );
    assert_eq!(s.dns.soa_serial(), serial);
}

fn two_services_share_zone_and_writer(kind: DnsKind) {
    let s = Setup::new(
        kind,
        Opts {
            endpoints: &[E2, E3],
            zone_body: "www A 127.0.0.2\nwww A 127.0.0.3\napi A 127.0.0.3\napi A 127.0.0.4\n",
            more_services: r#"
[[service]]
fqdn = "api.example.test"
zone = "example.test"
writer = "primary"
endpoints = ["127.0.0.3", "127.0.0.4"]
[service.check]
type = "tcp"
port = PORT
"#,
            ..Opts::default()
        },
    );
    // The endpoint server only listens on .2 and .3: .4 is down for `api` from the start.
    let d = s.start(&[]);
    wait_until("api loses 127.0.0.4", EVENTUALLY, || {
        s.dns.query("api.example.test", "A") == vec!["127.0.0.3"]
    });
    // One endpoint shared by both names: both lose it, each in its own update.
    s.http.stop(ip(E3));
    s.wait_a(&[E2]);
    // api is now all down: keep_all publishes both of its endpoints again.
    wait_until("api keeps all", EVENTUALLY, || {
        s.dns.query("api.example.test", "A") == vec!["127.0.0.3", "127.0.0.4"]
    });
    // Fields print as plain values, in config spelling: not quoted.
    assert!(d.log().contains("service=api.example.test."), "{}", d.log());
}

/// A minimal HTTP/1.1 request on loopback; returns the status code and body.
/// A mass failure: one endpoint shared by 30 names of one zone stops. The daemon batches the changes
/// of the names that are due together, so the zone takes far fewer UPDATEs than names.
fn mass_failure_is_batched_per_zone(kind: DnsKind) {
    const NAMES: usize = 30;
    let mut zone = String::new();
    let mut more = String::new();
    for i in 0..NAMES {
        zone.push_str(&format!("n{i} A 127.0.0.2\nn{i} A 127.0.0.3\n"));
        more.push_str(&format!(
            "[[service]]\nfqdn = \"n{i}.example.test\"\nzone = \"example.test\"\nwriter = \"primary\"\nendpoints = [\"127.0.0.2\", \"127.0.0.3\"]\n[service.check]\ntype = \"tcp\"\nport = PORT\n"
        ));
    }
    zone.push_str(ZONE_BODY);
    let s = Setup::new(
        kind,
        Opts {
            zone_body: &zone,
            more_services: &more,
            ..Opts::default()
        },
    );
    let d = s.start(&[]);
    wait_verdicts(&d, 3 + 2 * NAMES);
    let serial = s.dns.soa_serial();
    let log_before = s.dns.log().len();
    s.http.stop(ip(E3));
    wait_until("every name loses 127.0.0.3", EVENTUALLY, || {
        (0..NAMES).all(|i| s.dns.query(&format!("n{i}.example.test"), "A") == vec![E2])
    });
    s.wait_a(&[E2, E4]);
    let updates = match kind {
        // Knot may apply several queued UPDATE messages in one commit (one serial step): count the
        // messages it reports instead ("DDNS, processing N updates").
        DnsKind::Knot => s.dns.log()[log_before..]
            .lines()
            .filter_map(|l| l.split("DDNS, processing ").nth(1))
            .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
            .sum(),
        DnsKind::Bind => s.dns.soa_serial().wrapping_sub(serial) as usize,
    };
    let names = NAMES + 1;
    assert!(
        updates * 2 <= names,
        "{updates} UPDATEs for {names} names: changes due together were not batched\n{}",
        d.log()
    );
}

/// A `[[writer]]` section for `dns`, TSIG secret inline.
fn writer_section(name: &str, dns: &DnsServer, timeout: &str) -> String {
    format!(
        "[[writer]]\nname = \"{name}\"\ntype = \"rfc2136\"\nserver = \"{}\"\ntimeout = \"{timeout}\"\ntsig = {{ name = \"{}\", algorithm = \"hmac-sha256\", secret = \"{}\" }}\n",
        dns.addr, dns.key_name, dns.secret_b64
    )
}

/// A service with two writers (two real servers) keeps both in step, each reconciled on its own.
fn two_writers_both_follow(kind: DnsKind) {
    let other = DnsServer::start(kind, ZONE_BODY);
    let s = Setup::new(
        kind,
        Opts {
            writers: r#"writers = ["primary", "second"]"#,
            more_writers: writer_section("second", &other, "2s"),
            reconcile: "1s",
            ..Opts::default()
        },
    );
    let d = s.start(&[]);
    wait_verdicts(&d, 3);
    s.http.stop(ip(E3));
    s.wait_a(&[E2, E4]);
    wait_until("the second writer's server follows", EVENTUALLY, || {
        other.query("www.example.test", "A") == vec![E2, E4]
    });
    // Someone deletes a record at the second server only: only that writer repairs it.
    let serial = s.dns.soa_serial();
    other.nsupdate(&format!("update delete www.example.test. A {E4}"));
    wait_until("the second writer restores its record", EVENTUALLY, || {
        other.query("www.example.test", "A") == vec![E2, E4]
    });
    assert_eq!(
        s.dns.soa_serial(),
        serial,
        "the first server was not written"
    );
}

/// One writer whose server is gone never holds back another: the working one follows the endpoints
/// while the broken one keeps failing (and says so), and the daemon keeps running.
fn failing_writer_never_blocks_another(kind: DnsKind) {
    // A port nobody listens on: every exchange is refused at once... or times out; both are failures.
    let dead = support::free_tcp_port(ip("127.0.0.1"));
    let broken = format!(
        "[[writer]]\nname = \"broken\"\ntype = \"rfc2136\"\nserver = \"127.0.0.1:{dead}\"\ntimeout = \"2s\"\ntsig = {{ name = \"k\", algorithm = \"hmac-sha256\", secret = \"c2VjcmV0\" }}\n"
    );
    let s = Setup::new(
        kind,
        Opts {
            // The broken writer first: the first lane also votes, and must not hold back the other.
            writers: r#"writers = ["broken", "primary"]"#,
            more_writers: broken,
            ..Opts::default()
        },
    );
    let mut d = s.start(&[]);
    wait_verdicts(&d, 3);
    s.http.stop(ip(E3));
    s.wait_a(&[E2, E4]);
    s.http.resume(ip(E3));
    s.wait_a(&[E2, E3, E4]);
    d.wait_for_log("writer=broken", EVENTUALLY);
    d.wait_for_log("failed", EVENTUALLY);
    let log = d.log();
    assert_eq!(d.wait_exit(Duration::from_millis(200)), None, "{log}");
}

fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body; a reset then is fine.
    let _ = s.write_all(body);
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

fn single_node_status_api(kind: DnsKind) {
    let s = Setup::new(kind, Opts::default());
    let port = support::free_tcp_port("127.0.0.1".parse().unwrap());
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace(
            "id = \"test-node\"",
            &format!("id = \"test-node\"\nlisten = \"127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    let d = s.start(&[]);
    wait_until("three endpoints up", EVENTUALLY, || {
        count(&d, "endpoint is up") >= 3
    });
    let mut status = serde_json::Value::Null;
    wait_until("status shows every endpoint up", EVENTUALLY, || {
        let (code, body) = http(port, "GET", "/api/v1/status", b"");
        status = serde_json::from_str(&body).unwrap_or_default();
        code == 200
            && status["endpoints"]
                .as_array()
                .is_some_and(|e| e.len() == 3 && e.iter().all(|e| e["cluster_state"] == "up"))
    });
    assert_eq!(status["node"], "test-node", "{status:#}");
    assert_eq!(status["am_leader"], true, "{status:#}");
    // Alive at once; ready once every endpoint was probed and the leader has read DNS.
    assert_eq!(http(port, "GET", "/health", b"").0, 200);
    wait_until("GET /ready answers 200", EVENTUALLY, || {
        let (code, body) = http(port, "GET", "/ready", b"");
        code == 200 && body.contains("\"ready\":true")
    });
    assert!(status["isolated"].is_null(), "{status:#}");
    // Peer messages to a node without [cluster] are refused, oversized bodies too; the node carries on.
    let (code, body) = http(port, "POST", "/cluster/v1/votes", b"{}");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("not in a cluster"), "{body}");
    let (code, _) = http(
        port,
        "POST",
        "/cluster/v1/votes",
        &vec![b'x'; 5 * 1024 * 1024],
    );
    assert_eq!(code, 413);
    s.http.stop(ip(E3));
    s.wait_a(&[E2, E4]);
}

knot_and_bind!(
    endpoint_stops_and_comes_back,
    all_down_keep_all_keeps_every_record,
    all_down_fail_closed_removes_them,
    record_deleted_by_someone_else_is_restored,
    unmanaged_record_is_left_alone,
    aaaa_on_ipv6_endpoint,
    wrong_tsig_secret_is_reported_and_changes_nothing,
    dns_server_restart_converges,
    restart_with_everything_healthy_writes_nothing,
    sighup_reload_keeps_health_and_rejects_bad_config,
    dry_run_writes_nothing,
    plan_command_prints_plan_and_writes_nothing,
    two_services_share_zone_and_writer,
    single_node_status_api,
    two_writers_both_follow,
    failing_writer_never_blocks_another,
    mass_failure_is_batched_per_zone,
);
