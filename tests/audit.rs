//! The audit log survives kill -9: a real `rrguard run` keeps `www.example.test` on a real Knot while
//! one endpoint flaps, so DNS writes keep coming; the daemon is killed with SIGKILL in the middle of
//! that stream, restarted on the same `state_dir`, and every write the log had committed (seen
//! through `/api/v1/events` before the kill) is still there, the database opens cleanly (the
//! restarted node logs no audit error and serves the log), and new records continue the sequence.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use support::{Daemon, DnsKind, DnsServer, HttpEndpoints, free_tcp_port, wait_until};

const EVENTUALLY: Duration = Duration::from_secs(60);
const E2: &str = "127.0.0.2";
const E3: &str = "127.0.0.3";

fn get_json(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| serde_json::from_str(body).ok())?
}

/// Every DNS write in the log: (seq, after-records as text).
fn writes(port: u16) -> Option<Vec<(u64, String)>> {
    let page = get_json(
        port,
        "/api/v1/events?kind=dns_updated,write_failed&limit=1000",
    )?;
    Some(
        page["events"]
            .as_array()?
            .iter()
            .map(|e| (e["seq"].as_u64().unwrap(), e["write"]["after"].to_string()))
            .collect(),
    )
}

#[test]
fn committed_writes_survive_kill_9() {
    let ips: Vec<IpAddr> = [E2, E3].iter().map(|s| s.parse().unwrap()).collect();
    let dns = DnsServer::start(DnsKind::Knot, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let http = HttpEndpoints::start(&ips);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dns.write_secret_file(dir.path());
    let port = free_tcp_port("127.0.0.1".parse().unwrap());
    let config = dir.path().join("rrguard.toml");
    std::fs::write(
        &config,
        format!(
            r#"[node]
id = "audit-node"
listen = "127.0.0.1:{port}"
state_dir = "{state}"

[defaults]
interval = "50ms"
timeout = "40ms"
fall = 1
rise = 1
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
endpoints = ["{E2}", "{E3}"]
[service.check]
type = "http"
port = {hport}
path = "/health"
"#,
            state = dir.path().join("state").display(),
            server = dns.addr,
            key = dns.key_name,
            secret = secret_file.display(),
            hport = http.port,
        ),
    )
    .unwrap();
    let args = ["run", "-c", config.to_str().unwrap()];
    let d = Daemon::start(&args);
    // E3 flaps: every 150 ms it stops or resumes, so removals and additions keep going to Knot.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flapper = {
        let stop = stop.clone();
        let http = std::sync::Arc::new(http);
        let h = http.clone();
        let t = std::thread::spawn(move || {
            let e3: IpAddr = E3.parse().unwrap();
            let mut up = true;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(150));
                if up {
                    h.stop(e3)
                } else {
                    h.resume(e3)
                }
                up = !up;
            }
        });
        (t, http)
    };
    let mut before = Vec::new();
    wait_until("at least 6 DNS writes in the audit log", EVENTUALLY, || {
        before = writes(port).unwrap_or_default();
        before.len() >= 6
    });
    // Kill in the middle of the stream: writes keep coming while we read.
    let committed = writes(port).unwrap();
    d.signal("KILL");
    let mut d = d;
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(128 + 9));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flapper.0.join().unwrap();

    let d2 = Daemon::start(&args);
    let mut after = Vec::new();
    wait_until(
        "the restarted node serves the audit log",
        EVENTUALLY,
        || {
            after = writes(port).unwrap_or_default();
            !after.is_empty()
        },
    );
    for w in &committed {
        assert!(
            after.contains(w),
            "write {w:?} committed before kill -9 is gone; after: {after:?}"
        );
    }
    let log = d2.log();
    assert!(log.contains("audit log open"), "{log}");
    assert!(!log.contains("running without an audit log"), "{log}");
    // New records continue the sequence after the last one committed.
    let max_before = committed.iter().map(|(s, _)| *s).max().unwrap();
    let page = get_json(port, "/api/v1/events?limit=1").unwrap();
    assert!(
        page["events"][0]["seq"].as_u64().unwrap() >= max_before,
        "{page}"
    );
    println!(
        "{} writes committed before kill -9, all present after restart ({} in the log now)",
        committed.len(),
        after.len()
    );
}
