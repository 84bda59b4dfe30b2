//! The HTTP server of one real `rrguard run` process, without a DNS server: the status document it
//! serves from the shared state, and a shutdown that a slow client cannot hold up.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tokio::time::Instant;

use support::{Daemon, free_tcp_port, wait_until};

const EVENTUALLY: Duration = Duration::from_secs(20);

/// A node listening on a free port, with one service whose writer and endpoint port answer nothing.
fn start(extra_args: &[&str]) -> (Daemon, u16) {
    let lo = "127.0.0.1".parse().unwrap();
    let (listen, dns, check) = (free_tcp_port(lo), free_tcp_port(lo), free_tcp_port(lo));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rrguard.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[node]
id = "status-node"
listen = "127.0.0.1:{listen}"
state_dir = "{state}"

[defaults]
interval = "200ms"
timeout = "100ms"
fall = 2
rise = 2

[[writer]]
name = "primary"
type = "rfc2136"
server = "127.0.0.1:{dns}"
tsig = {{ name = "k", algorithm = "hmac-sha256", secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=" }}

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "primary"
endpoints = ["127.0.0.1"]
[service.check]
type = "tcp"
port = {check}
"#,
            state = dir.path().display()
        ),
    )
    .unwrap();
    let mut args = vec!["run", "-c", config.to_str().unwrap()];
    args.extend_from_slice(extra_args);
    let d = Daemon::start(&args);
    // The daemon has read its config once it listens; the directory may go.
    d.wait_for_log("HTTP listening", EVENTUALLY);
    drop(dir);
    (d, listen)
}

fn get_status(port: u16) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| serde_json::from_str(body).ok())
        .flatten()
}

#[test]
fn status_lists_services_and_local_probe_slots() {
    let (d, port) = start(&[]);
    let mut status = serde_json::Value::Null;
    wait_until("the endpoint is down in the status", EVENTUALLY, || {
        status = get_status(port).unwrap_or_default();
        status["endpoints"][0]["cluster_state"] == "down"
    });
    assert_eq!(status["node"], "status-node", "{status:#}");
    assert_eq!(status["leader"], "status-node", "{status:#}");
    // Deprecated aliases of the two keys above.
    assert_eq!(status["writer"], "status-node", "{status:#}");
    assert_eq!(status["am_writer"], true, "{status:#}");
    assert_eq!(status["am_leader"], true, "{status:#}");
    let e = &status["endpoints"][0];
    assert_eq!(e["endpoint"], "127.0.0.1", "{status:#}");
    assert_eq!(
        e["down_votes"],
        serde_json::json!(["status-node"]),
        "{status:#}"
    );
    // Filled by the controllers when they record probes; present either way.
    assert!(e.get("local").is_some(), "{status:#}");
    let svc = &status["services"][0];
    assert_eq!(svc["fqdn"], "www.example.test.", "{status:#}");
    assert_eq!(svc["zone"], "example.test.", "{status:#}");
    assert_eq!(svc["writer"], "primary", "{status:#}");
    assert!(svc["events"].is_array(), "{status:#}");
    drop(d);
}

/// A client that sends half a request and waits keeps its connection open; at SIGTERM the server
/// stops accepting, and after the drain grace the daemon exits 0 anyway.
#[test]
fn a_slow_client_does_not_hold_the_exit() {
    let (mut d, port) = start(&["--drain-grace", "1s"]);
    wait_until("status is served", EVENTUALLY, || {
        get_status(port).is_some()
    });
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Give the server time to accept the connection and start reading it.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    d.signal("TERM");
    let code = d.wait_exit(Duration::from_secs(15));
    assert_eq!(
        code,
        Some(0),
        "exit after {:?}\n{}",
        started.elapsed(),
        d.log()
    );
    assert!(
        d.log().contains("HTTP connections still open"),
        "{}",
        d.log()
    );
    drop(slow);
}

/// `GET path` on the node: status code and body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
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
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

#[test]
fn alive_but_not_ready_while_dns_cannot_be_read() {
    let (d, port) = start(&[]);
    wait_until("GET /health answers", EVENTUALLY, || {
        get(port, "/health").is_some_and(|(code, body)| code == 200 && body.contains("alive"))
    });
    // The endpoint is probed (refused), but the leader cannot read the zone: not ready, and it says why.
    let mut last = None;
    wait_until("GET /ready waits only for DNS", EVENTUALLY, || {
        last = get(port, "/ready");
        last.as_ref().is_some_and(|(code, body)| {
            *code == 503
                && body.contains("the records www.example.test. publishes (writer primary)")
                && !body.contains("first probe")
                && !body.contains("first verdict")
        })
    });
    let (_, body) = last.unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["ready"], false, "{json}");
    assert_eq!(
        json["waiting_for"].as_array().map(Vec::len),
        Some(1),
        "{json}"
    );
    drop(d);
}

/// A node whose one service is self-registered (`[service.self_register]`, per-node `hosts`
/// writer), with the address source given by `address`.
fn start_self_registered(address: &str, check_port: u16) -> (Daemon, u16, tempfile::TempDir) {
    let lo = "127.0.0.1".parse().unwrap();
    let listen = free_tcp_port(lo);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rrguard.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[node]
id = "self-node"
listen = "127.0.0.1:{listen}"
state_dir = "{state}"

[defaults]
interval = "200ms"
timeout = "100ms"
fall = 2
rise = 2

[[writer]]
name = "local"
type = "hosts"
path = "{state}/hosts"

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "local"
[service.self_register]
address = "{address}"
[service.check]
type = "http"
port = {check_port}
path = "/health"
"#,
            state = dir.path().display()
        ),
    )
    .unwrap();
    let d = Daemon::start(&["run", "-c", config.to_str().unwrap()]);
    d.wait_for_log("HTTP listening", EVENTUALLY);
    (d, listen, dir)
}

/// A self-registered service has no endpoint until this node has discovered its own address: until
/// then /ready says it waits for one (before the fix it named only the DNS read, and a follower,
/// which waits for no DNS read, was ready at once with nothing to probe). Once the address is known
/// and probed the node is ready: the wait ends.
#[test]
fn ready_waits_for_the_self_registered_address() {
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let http = support::HttpEndpoints::start(&[lo]);
    let waiting = "a first probe of an endpoint of www.example.test. (with self_register: once this node's address is discovered)";
    // No such interface: discovery fails and is retried, the node stays not ready and says why.
    let (d, port, _dir) = start_self_registered("interface:rrgnone0", http.port);
    d.wait_for_log("no interface", EVENTUALLY);
    let mut last = None;
    wait_until("GET /ready names the missing address", EVENTUALLY, || {
        last = get(port, "/ready");
        last.as_ref()
            .is_some_and(|(code, body)| *code == 503 && body.contains(waiting))
    });
    drop(d);
    // The address comes from a URL that answers with it: ready once it is probed and written.
    http.set_body(lo, "127.0.0.1");
    let url = format!("url:http://127.0.0.1:{}/ip", http.port);
    let (d, port, _dir) = start_self_registered(&url, http.port);
    d.wait_for_log("self_register: this node's address", EVENTUALLY);
    wait_until("GET /ready answers 200", EVENTUALLY, || {
        last = get(port, "/ready");
        last.as_ref().is_some_and(|(code, _)| *code == 200)
    });
    drop(d);
}
