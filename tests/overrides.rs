//! Overrides end to end: one real `rrguard run` keeping `www.example.test` on a real Knot (TSIG,
//! RFC 2136) with real HTTP endpoints, driven through the CLI (`rrguard drain`, `undrain`,
//! `overrides`) and the raw API: a drain takes a healthy endpoint out of DNS and undrain puts it
//! back, a short drain ends by itself, auth failures and bad input get JSON errors naming the field
//! and distinct exit codes, the status document and metrics show the override, and it survives a
//! restart.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support::{Daemon, DnsKind, DnsServer, HttpEndpoints, free_tcp_port, rrguard_bin, wait_until};

const EVENTUALLY: Duration = Duration::from_secs(30);
const E2: &str = "127.0.0.2";
const E3: &str = "127.0.0.3";
const E4: &str = "127.0.0.4";
const TOKEN: &str = "test-token-0123456789abcdef";

/// One HTTP request to the node: status code and body.
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("node listening");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
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

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn cli(args: &[&str]) -> Output {
    std::process::Command::new(rrguard_bin())
        .args(args)
        .env_remove("RRGUARD_CONFIG")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_config(dir: &Path, dns: &DnsServer, http_port: u16, listen: u16) -> std::path::PathBuf {
    let secret_file = dns.write_secret_file(dir);
    std::fs::write(dir.join("api.token"), format!("{TOKEN}\n")).unwrap();
    let config = dir.join("rrguard.toml");
    std::fs::write(
        &config,
        format!(
            r#"[node]
id = "ovr-node"
listen = "127.0.0.1:{listen}"
state_dir = "{state}"

[api]
token_file = "api.token"

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
endpoints = ["{E2}", "{E3}", "{E4}"]
[service.check]
type = "http"
port = {http_port}
path = "/health"
"#,
            state = dir.join("state").display(),
            server = dns.addr,
            key = dns.key_name,
            secret = secret_file.display(),
        ),
    )
    .unwrap();
    config
}

fn published(dns: &DnsServer) -> Vec<String> {
    let mut v = dns.query("www.example.test.", "A");
    v.sort();
    v
}

fn all_up(port: u16) -> bool {
    if TcpStream::connect(("127.0.0.1", port)).is_err() {
        return false;
    }
    let (code, body) = http(port, "GET", "/api/v1/status", None, "");
    code == 200
        && json(&body)["endpoints"]
            .as_array()
            .is_some_and(|e| e.len() == 3 && e.iter().all(|x| x["cluster_state"] == "up"))
}

#[test]
fn drain_and_undrain_through_the_cli_reach_knot() {
    let ips: Vec<IpAddr> = [E2, E3, E4].iter().map(|s| s.parse().unwrap()).collect();
    let dns = DnsServer::start(
        DnsKind::Knot,
        "www A 127.0.0.2\nwww A 127.0.0.3\nwww A 127.0.0.4\n",
    );
    let endpoints = HttpEndpoints::start(&ips);
    let dir = tempfile::tempdir().unwrap();
    let listen = free_tcp_port("127.0.0.1".parse().unwrap());
    let config = write_config(dir.path(), &dns, endpoints.port, listen);
    let c = config.to_str().unwrap();
    let mut d = Daemon::start(&["run", "-c", c]);
    wait_until("every endpoint agreed up", EVENTUALLY, || all_up(listen));
    assert_eq!(published(&dns), [E2, E3, E4]);

    // Drain a healthy endpoint: it leaves DNS.
    let out = cli(&[
        "drain",
        E2,
        "--for",
        "1h",
        "--comment",
        "kernel upgrade",
        "-c",
        c,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("drain") && text(&out).contains("kernel upgrade"));
    wait_until("the drained endpoint leaves DNS", EVENTUALLY, || {
        published(&dns) == [E3, E4]
    });
    // The list, the status document, the metrics and the log show it.
    let out = cli(&["overrides", "-c", c]);
    assert!(
        out.status.success() && text(&out).contains(E2),
        "{}",
        text(&out)
    );
    let status = json(&http(listen, "GET", "/api/v1/status", None, "").1);
    let ovs = status["overrides"].as_array().unwrap();
    assert_eq!(ovs.len(), 1, "{status}");
    assert_eq!(ovs[0]["kind"], "drain");
    assert_eq!(ovs[0]["active"], true);
    assert_eq!(ovs[0]["comment"], "kernel upgrade");
    let metrics = http(listen, "GET", "/metrics", None, "").1;
    assert!(
        metrics.contains("rrguard_overrides{kind=\"drain\"} 1"),
        "{metrics}"
    );
    d.wait_for_log("override set: drain of 127.0.0.2", EVENTUALLY);
    d.wait_for_log("drained (override", EVENTUALLY);

    // Drain never goes below min_healthy (1): draining the other two leaves one of them.
    for e in [E3, E4] {
        let out = cli(&["drain", e, "--for", "1h", "--comment", "all out", "-c", c]);
        assert!(out.status.success(), "{}", text(&out));
    }
    // Which one stays depends on the order the drains arrive: a published one is kept first.
    wait_until(
        "one drained endpoint kept for min_healthy",
        EVENTUALLY,
        || published(&dns).len() == 1,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(published(&dns).len(), 1, "never empty");

    // Undrain restores them all.
    for e in [E2, E3, E4] {
        let out = cli(&["undrain", e, "-c", c]);
        assert!(out.status.success(), "{}", text(&out));
    }
    wait_until("undrained endpoints come back", EVENTUALLY, || {
        published(&dns) == [E2, E3, E4]
    });
    let out = cli(&["undrain", E2, "-c", c]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    // A short drain ends by itself.
    let out = cli(&["drain", E4, "--for", "3s", "--comment", "blip", "-c", c]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("short drain applies", EVENTUALLY, || {
        published(&dns) == [E2, E3]
    });
    wait_until(
        "short drain ends by itself",
        Duration::from_secs(10),
        || published(&dns) == [E2, E3, E4],
    );
    d.wait_for_log("override ended: drain of 127.0.0.4", EVENTUALLY);

    // Auth failures: no token, wrong token (API 401, CLI exit 77).
    let body = format!(r#"{{"endpoint":"{E2}","kind":"drain","for":"1h","comment":"x"}}"#);
    let (code, resp) = http(listen, "POST", "/api/v1/overrides", None, &body);
    assert_eq!(code, 401, "{resp}");
    assert!(json(&resp)["error"].as_str().unwrap().contains("token"));
    let (code, _) = http(
        listen,
        "POST",
        "/api/v1/overrides",
        Some("wrong-token-0000000000"),
        &body,
    );
    assert_eq!(code, 401);
    let (code, _) = http(listen, "DELETE", "/api/v1/overrides/abc", None, "");
    assert_eq!(code, 401);
    let bad_token = dir.path().join("bad.token");
    std::fs::write(&bad_token, "nope-nope-nope-nope").unwrap();
    let url = format!("http://127.0.0.1:{listen}");
    let out = cli(&[
        "drain",
        E2,
        "--for",
        "1h",
        "--comment",
        "x",
        "--url",
        &url,
        "--token-file",
        bad_token.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));

    // Bad input and unknown things: JSON errors naming the field.
    let cases = [
        (
            r#"{"endpoint":"127.0.0.2","kind":"drain","for":"1h"}"#,
            400,
            "comment",
        ),
        (
            r#"{"endpoint":"127.0.0.2","kind":"drain","comment":"x"}"#,
            400,
            "ends_unix_ms",
        ),
        (
            r#"{"endpoint":"127.0.0.2","kind":"drained","for":"1h","comment":"x"}"#,
            400,
            "kind",
        ),
        (
            r#"{"endpoint":"10.0.0.300","kind":"drain","for":"1h","comment":"x"}"#,
            400,
            "endpoint",
        ),
        (
            r#"{"endpoint":"127.0.0.9","kind":"drain","for":"1h","comment":"x"}"#,
            404,
            "endpoint",
        ),
        (
            r#"{"endpoint":"127.0.0.2","service":"nope.example.test","kind":"drain","for":"1h","comment":"x"}"#,
            404,
            "service",
        ),
    ];
    for (body, want, field) in cases {
        let (code, resp) = http(listen, "POST", "/api/v1/overrides", Some(TOKEN), body);
        assert_eq!(code, want, "{body}: {resp}");
        assert_eq!(json(&resp)["field"], field, "{body}: {resp}");
    }
    let (code, resp) = http(listen, "POST", "/api/v1/overrides", Some(TOKEN), "not json");
    assert_eq!(code, 400, "{resp}");
    let (code, resp) = http(listen, "DELETE", "/api/v1/overrides/nope", Some(TOKEN), "");
    assert_eq!(
        (code, json(&resp)["field"].clone()),
        (404, "id".into()),
        "{resp}"
    );
    let out = cli(&[
        "drain",
        "127.0.0.9",
        "--for",
        "1h",
        "--comment",
        "x",
        "-c",
        c,
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("endpoint"), "{}", text(&out));
    assert_eq!(
        published(&dns),
        [E2, E3, E4],
        "refused requests changed nothing"
    );

    // A drain survives a restart: the new process restores it and keeps the endpoint out.
    let (code, resp) = http(listen, "POST", "/api/v1/overrides", Some(TOKEN), &body);
    assert_eq!(code, 201, "{resp}");
    let id = json(&resp)["id"].as_str().unwrap().to_owned();
    wait_until("drain applies", EVENTUALLY, || published(&dns) == [E3, E4]);
    d.signal("TERM");
    assert_eq!(d.wait_exit(EVENTUALLY), Some(0));
    let d2 = Daemon::start(&["run", "-c", c]);
    d2.wait_for_log("overrides restored from the state directory", EVENTUALLY);
    wait_until("every endpoint agreed up again", EVENTUALLY, || {
        all_up(listen)
    });
    let (code, resp) = http(listen, "GET", "/api/v1/overrides", None, "");
    assert_eq!(code, 200);
    assert_eq!(json(&resp)["overrides"][0]["id"], id.as_str(), "{resp}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(published(&dns), [E3, E4], "the restart did not re-add it");
    let (code, resp) = http(
        listen,
        "DELETE",
        &format!("/api/v1/overrides/{id}"),
        Some(TOKEN),
        "",
    );
    assert_eq!(code, 200, "{resp}");
    let (code, _) = http(
        listen,
        "DELETE",
        &format!("/api/v1/overrides/{id}"),
        Some(TOKEN),
        "",
    );
    assert_eq!(code, 409, "already deleted");
    wait_until("deleted drain restores", EVENTUALLY, || {
        published(&dns) == [E2, E3, E4]
    });
}

#[test]
fn the_cli_says_when_the_node_is_not_running() {
    let port = free_tcp_port("127.0.0.1".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("t");
    std::fs::write(&token, TOKEN).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let out = cli(&[
        "overrides",
        "--url",
        &url,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("cannot reach the rrguard node"),
        "{}",
        text(&out)
    );
    let out = cli(&[
        "drain",
        E2,
        "--comment",
        "x",
        "--url",
        &url,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(64), "no end: {}", text(&out));
}
