//! Self-registration end to end (`[service.self_register]`): the real `rrguard` binary, on a real Knot
//! (TSIG, RFC 2136), publishes its own address under `www.example.test` beside another node's address.
//! The address comes from a loopback URL that echoes the caller's address, or from the `lo` interface;
//! either way it is 127.0.0.1, where a real HTTP endpoint answers the service's check.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use support::{Daemon, DnsKind, DnsServer, HttpEndpoints, wait_until};

/// Generous bound for what should happen within a few probe intervals (never a performance figure).
const EVENTUALLY: Duration = Duration::from_secs(30);
/// This node's address, as the echo URL and `lo` give it.
const SELF: &str = "127.0.0.1";
/// Another node's self-registered address, already in the zone.
const OTHER: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A real HTTP server on 127.0.0.1:0 answering every request with the caller's address, as
/// `https://api.ipify.org` and the like do. Its thread ends with the test process.
fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = conn.read(&mut buf);
            let body = conn
                .peer_addr()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("url:http://{addr}/ip")
}

struct Setup {
    dns: DnsServer,
    http: HttpEndpoints,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(zone_body: &str, address: &str, remove_on_shutdown: bool) -> Setup {
        let dns = DnsServer::start(DnsKind::Knot, zone_body);
        let http = HttpEndpoints::start(&[ip(SELF)]);
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dns.write_secret_file(dir.path());
        let text = format!(
            r#"[node]
id = "web-1"
state_dir = "{state}"

[defaults]
interval = "200ms"
timeout = "150ms"
fall = 2
rise = 2
ttl = 60

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

[service.self_register]
address = "{address}"
remove_on_shutdown = {remove_on_shutdown}

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

    fn start(&self) -> Daemon {
        Daemon::start(&["run", "-c", self.config.to_str().unwrap()])
    }

    fn a(&self) -> Vec<String> {
        self.dns.query("www.example.test", "A")
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

#[test]
fn adds_itself_while_its_check_passes_and_never_removes_the_last_record() {
    let s = Setup::new(&format!("www A {OTHER}\n"), &echo_server(), false);
    let d = s.start();
    d.wait_for_log("self_register: this node's address", EVENTUALLY);
    // Up: its own address joins the other node's, which it leaves alone.
    s.wait_a(&[SELF, OTHER]);
    // Its check fails: it withdraws, the other node's address remains.
    s.http.set_status(ip(SELF), 503);
    s.wait_a(&[OTHER]);
    // Back up: it returns.
    s.http.set_status(ip(SELF), 200);
    s.wait_a(&[SELF, OTHER]);
    // The other node's record goes; now this node's is the last one, and it stays while failing.
    s.dns
        .nsupdate(&format!("update delete www.example.test. A {OTHER}"));
    s.wait_a(&[SELF]);
    let serial = s.dns.soa_serial();
    s.http.set_status(ip(SELF), 503);
    wait_until("this node's endpoint is down", EVENTUALLY, || {
        d.log().matches("endpoint is down").count() >= 2
    });
    // Give a buggy daemon several intervals to remove it.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.a(), vec![SELF], "{}", d.log());
    assert_eq!(s.dns.soa_serial(), serial, "{}", d.log());
}

#[test]
fn removes_itself_on_sigterm_while_others_remain_but_keeps_the_last_record() {
    // From the `lo` interface this time.
    let s = Setup::new(&format!("www A {OTHER}\n"), "interface:lo", true);
    let mut d = s.start();
    s.wait_a(&[SELF, OTHER]);
    d.signal("TERM");
    assert_eq!(d.wait_exit(EVENTUALLY), Some(0), "{}", d.log());
    assert_eq!(s.a(), vec![OTHER], "{}", d.log());
    assert!(
        d.log()
            .contains("self_register: removed this node's address on shutdown"),
        "{}",
        d.log()
    );
    // Alone in the RRset: a restart adds it back, and SIGTERM keeps it.
    let mut d = s.start();
    s.wait_a(&[SELF, OTHER]);
    s.dns
        .nsupdate(&format!("update delete www.example.test. A {OTHER}"));
    s.wait_a(&[SELF]);
    d.signal("TERM");
    assert_eq!(d.wait_exit(EVENTUALLY), Some(0), "{}", d.log());
    assert_eq!(s.a(), vec![SELF], "{}", d.log());
    assert!(
        d.log().contains("is the last record; kept on shutdown"),
        "{}",
        d.log()
    );
}

#[test]
fn a_failing_discovery_is_reported_and_retried_not_fatal() {
    let s = Setup::new(&format!("www A {OTHER}\n"), "interface:no-such-if0", false);
    let mut d = s.start();
    d.wait_for_log("no interface \"no-such-if0\" on this host", EVENTUALLY);
    d.wait_for_log("retrying in 2s", EVENTUALLY);
    assert_eq!(s.a(), vec![OTHER]);
    d.signal("TERM");
    assert_eq!(d.wait_exit(EVENTUALLY), Some(0), "{}", d.log());
}
