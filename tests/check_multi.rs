//! Several checks per service (`[[service.check]]`) in a real `rrguard run`: an HTTP and a TCP check
//! on the same endpoints, the TCP port open on one endpoint only. With `check_mode = "all"` (the
//! default) the other endpoint goes down and its detail names the failing check; with `"any"` it
//! stays up. The status document's `check` and the metrics' `check` label read `http+tcp`.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::time::Duration;

use support::{Daemon, HttpEndpoints, free_tcp_port, wait_until};

const EVENTUALLY: Duration = Duration::from_secs(20);

/// `GET path` on the node: the body of a 200 answer.
fn get(port: u16, path: &str) -> Option<String> {
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
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The local probe (`state`, `detail`) of `endpoint` of `service` in the status document.
fn local(status: &serde_json::Value, service: &str, endpoint: &str) -> Option<(String, String)> {
    let e = status["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["service"] == service && e["endpoint"] == endpoint)?;
    Some((
        e["local"]["state"].as_str()?.to_owned(),
        e["local"]["detail"].as_str()?.to_owned(),
    ))
}

#[test]
fn a_failing_check_among_several_takes_the_endpoint_down_and_is_named() {
    let (good, bad): (IpAddr, IpAddr) =
        ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
    let http = HttpEndpoints::start(&[good, bad]);
    // The TCP check's port is open on `good` only: `bad` refuses it.
    let tcp = TcpListener::bind((good, 0)).unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let (listen, dns) = (free_tcp_port(lo), free_tcp_port(lo));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rrguard.toml");
    let service = |name: &str, mode: &str| {
        format!(
            r#"
[[service]]
fqdn = "{name}.example.test"
zone = "example.test"
writer = "primary"
endpoints = ["{good}", "{bad}"]
check_mode = "{mode}"
[[service.check]]
type = "http"
port = {http}
path = "/health"
[[service.check]]
type = "tcp"
port = {tcp_port}
"#,
            http = http.port
        )
    };
    std::fs::write(
        &config,
        format!(
            r#"
[node]
id = "multi-node"
listen = "127.0.0.1:{listen}"
state_dir = "{state}"

[defaults]
interval = "200ms"
timeout = "150ms"
fall = 2
rise = 2

[[writer]]
name = "primary"
type = "rfc2136"
server = "127.0.0.1:{dns}"
tsig = {{ name = "k", algorithm = "hmac-sha256", secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=" }}
{all}{any}"#,
            state = dir.path().display(),
            all = service("all", "all"),
            any = service("any", "any"),
        ),
    )
    .unwrap();
    let d = Daemon::start(&["run", "-c", config.to_str().unwrap()]);
    d.wait_for_log("HTTP listening", EVENTUALLY);

    let mut status = serde_json::Value::Null;
    wait_until("every endpoint has a local verdict", EVENTUALLY, || {
        status = get(listen, "/api/v1/status")
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default();
        ["all", "any"].iter().all(|s| {
            [good, bad].iter().all(|ip| {
                local(&status, &format!("{s}.example.test."), &ip.to_string())
                    .is_some_and(|(state, _)| state != "unknown")
            })
        })
    });
    let (good, bad) = (good.to_string(), bad.to_string());
    let (state, detail) = local(&status, "all.example.test.", &bad).unwrap();
    assert_eq!(state, "down", "{status:#}");
    assert!(
        detail.starts_with("failed tcp: connection refused; passed http: HTTP 200"),
        "{detail}"
    );
    let (state, detail) = local(&status, "all.example.test.", &good).unwrap();
    assert_eq!(state, "up", "{status:#}");
    assert_eq!(detail, "passed http: HTTP 200; passed tcp: connected");
    // "any": one passing check is enough.
    let (state, detail) = local(&status, "any.example.test.", &bad).unwrap();
    assert_eq!(state, "up", "{status:#}");
    assert!(
        detail.starts_with("passed http: HTTP 200; failed tcp"),
        "{detail}"
    );

    let services = status["services"].as_array().unwrap();
    assert!(
        services.iter().all(|s| s["check"] == "http+tcp"),
        "{status:#}"
    );
    let metrics = get(listen, "/metrics").unwrap();
    let sample = metrics.lines().find(|l| {
        l.contains("probe_success{")
            && l.contains("service=\"all.example.test.\"")
            && l.contains(&format!("endpoint=\"{bad}\""))
    });
    assert!(
        sample.is_some_and(|l| l.contains("check=\"http+tcp\"") && l.ends_with(" 0")),
        "{sample:?} in\n{metrics}"
    );
    drop(tcp);
}
