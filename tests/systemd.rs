//! systemd's notification protocol (`Type=notify-reload`), end to end: a real `rrguard run` keeping
//! `www.example.test` on a real Knot, with `NOTIFY_SOCKET` pointing at a unix datagram socket this
//! test binds, and `WATCHDOG_USEC` set. Checked: `READY=1` comes only once the node is ready (the
//! condition of `GET /ready`), with a `STATUS=` line; `WATCHDOG=1` keeps coming well within the
//! watchdog timeout; SIGHUP brings `RELOADING=1` with a plausible `MONOTONIC_USEC`, then `READY=1`;
//! SIGTERM brings `STOPPING=1` and a clean exit.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use support::{Daemon, DnsKind, DnsServer, HttpEndpoints, free_tcp_port};

const EVENTUALLY: Duration = Duration::from_secs(30);
/// The watchdog timeout given to rrguard: it must ping at least this often (it aims at half).
const WATCHDOG: Duration = Duration::from_secs(2);

/// One received notification: when, and its `KEY=VALUE` lines.
struct Note {
    at: Instant,
    lines: Vec<String>,
}

impl Note {
    fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

struct Listener {
    socket: UnixDatagram,
    notes: Vec<Note>,
}

impl Listener {
    fn bind(dir: &Path) -> Listener {
        let socket = UnixDatagram::bind(dir.join("notify.sock")).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Listener {
            socket,
            notes: Vec::new(),
        }
    }

    /// Receives until a notification satisfies `f` (it is returned, and kept with the others).
    fn until(&mut self, what: &str, d: &Daemon, f: impl Fn(&Note) -> bool) -> usize {
        let deadline = Instant::now() + EVENTUALLY;
        let mut buf = [0u8; 4096];
        loop {
            assert!(
                Instant::now() < deadline,
                "no notification {what} within {EVENTUALLY:?}; got {:?}\n--- log ---\n{}",
                self.notes
                    .iter()
                    .map(|n| n.lines.join(" "))
                    .collect::<Vec<_>>(),
                d.log()
            );
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let note = Note {
                    at: Instant::now(),
                    lines: text.lines().map(str::to_owned).collect(),
                };
                let hit = f(&note);
                self.notes.push(note);
                if hit {
                    return self.notes.len() - 1;
                }
            }
        }
    }
}

fn http(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("node listening");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

/// CLOCK_MONOTONIC now, µs (the clock MONOTONIC_USEC is read from).
fn monotonic_usec() -> u64 {
    rrguard::daemon::notify::monotonic_usec()
}

#[test]
fn notify_reload_protocol_ready_status_watchdog_reload_stop() {
    let ips: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let dns = DnsServer::start(DnsKind::Knot, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let endpoints = HttpEndpoints::start(&ips);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dns.write_secret_file(dir.path());
    let listen = free_tcp_port("127.0.0.1".parse().unwrap());
    let config = dir.path().join("rrguard.toml");
    std::fs::write(
        &config,
        format!(
            r#"[node]
id = "sd-node"
listen = "127.0.0.1:{listen}"
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
endpoints = ["127.0.0.2", "127.0.0.3"]
[service.check]
type = "http"
port = {port}
path = "/health"
"#,
            state = dir.path().join("state").display(),
            server = dns.addr,
            key = dns.key_name,
            secret = secret_file.display(),
            port = endpoints.port,
        ),
    )
    .unwrap();
    let mut sock = Listener::bind(dir.path());
    let notify_socket = dir.path().join("notify.sock");
    let watchdog_usec = WATCHDOG.as_micros().to_string();
    let mut d = Daemon::start_with_env(
        &["run", "-c", config.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", notify_socket.to_str().unwrap()),
            ("WATCHDOG_USEC", &watchdog_usec),
        ],
    );

    // READY=1 once, and only when GET /ready says so; a status line with it.
    let ready = sock.until("READY=1", &d, |n| n.has("READY=1"));
    let (code, body) = http(listen, "/ready");
    assert_eq!(code, 200, "READY=1 sent while /ready says {body}");
    let status = sock.notes[..=ready]
        .iter()
        .rev()
        .find_map(|n| n.value("STATUS"))
        .unwrap_or_else(|| panic!("no STATUS= up to READY=1"))
        .to_owned();
    assert!(
        status.starts_with("1 service, ") && status.ends_with(", leader"),
        "{status}"
    );
    assert!(
        sock.notes[..ready]
            .iter()
            .all(|n| !n.has("READY=1") && !n.has("RELOADING=1")),
        "notifications before READY: {:?}",
        sock.notes
            .iter()
            .map(|n| n.lines.join(" "))
            .collect::<Vec<_>>()
    );
    // Both endpoints agreed up shows in the status line (at once, or in a later one).
    if status != "1 service, 2/2 endpoints up, leader" {
        sock.until("STATUS= with 2/2 endpoints up", &d, |n| {
            n.value("STATUS")
                .is_some_and(|s| s == "1 service, 2/2 endpoints up, leader")
        });
    }

    // The watchdog: six pings, never further apart than the timeout (rrguard aims at half of it).
    let first = sock.until("WATCHDOG=1", &d, |n| n.has("WATCHDOG=1"));
    let mut last = sock.notes[first].at;
    for _ in 0..5 {
        let i = sock.until("WATCHDOG=1", &d, |n| n.has("WATCHDOG=1"));
        let gap = sock.notes[i].at - last;
        assert!(
            gap < WATCHDOG,
            "watchdog pings {gap:?} apart, the timeout is {WATCHDOG:?}"
        );
        last = sock.notes[i].at;
    }
    let pings = sock.notes.iter().filter(|n| n.has("WATCHDOG=1")).count();
    println!("watchdog: {pings} pings for WATCHDOG_USEC={watchdog_usec}");

    // A status change is announced: an endpoint goes down.
    endpoints.stop(ips[1]);
    sock.until("STATUS= with 1/2 endpoints up", &d, |n| {
        n.value("STATUS")
            .is_some_and(|s| s == "1 service, 1/2 endpoints up, leader")
    });

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC on the same clock as ours, then READY=1.
    let before = monotonic_usec();
    d.signal("HUP");
    let r = sock.until("RELOADING=1", &d, |n| n.has("RELOADING=1"));
    let after = monotonic_usec();
    let usec: u64 = sock.notes[r]
        .value("MONOTONIC_USEC")
        .unwrap_or_else(|| {
            panic!(
                "RELOADING=1 without MONOTONIC_USEC: {:?}",
                sock.notes[r].lines
            )
        })
        .parse()
        .unwrap();
    assert!(
        before <= usec && usec <= after,
        "MONOTONIC_USEC={usec} not between {before} and {after}"
    );
    sock.until("READY=1 after the reload", &d, |n| n.has("READY=1"));
    d.wait_for_log("configuration reloaded", EVENTUALLY);

    // A reload that is rejected (a broken file) still ends with READY=1: the old config runs on.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("[[service]]", "[[servic]]")).unwrap();
    d.signal("HUP");
    sock.until("RELOADING=1", &d, |n| n.has("RELOADING=1"));
    sock.until("READY=1 after the rejected reload", &d, |n| {
        n.has("READY=1")
    });
    d.wait_for_log("reload rejected", EVENTUALLY);

    // SIGTERM: STOPPING=1, then a clean exit.
    d.signal("TERM");
    sock.until("STOPPING=1", &d, |n| n.has("STOPPING=1"));
    assert_eq!(d.wait_exit(EVENTUALLY), Some(0), "{}", d.log());
}
