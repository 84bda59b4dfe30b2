//! The dashboard (`GET /`, `GET /dashboard/events`) in a real headless Chromium (Debian `chromium`
//! driven through `chromedriver`) against one real `rrguard run` keeping `www.example.test` on a
//! real Knot (TSIG, RFC 2136) with real HTTP endpoints on loopback: it renders the services, follows
//! an endpoint going down without a reload, sets and clears a drain through the page, and keeps a
//! screenshot as a test artifact.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use support::browser::{Browser, artifact_dir};
use support::{Daemon, DnsKind, DnsServer, HttpEndpoints, free_tcp_port, wait_until};

const EVENTUALLY: Duration = Duration::from_secs(30);
const E2: &str = "127.0.0.2";
const E3: &str = "127.0.0.3";
const TOKEN: &str = "dashboard-test-token-0123456789";
const ROW_E2: &str = "#ep-www-example-test-127-0-0-2";
const ROW_E3: &str = "#ep-www-example-test-127-0-0-3";

/// `GET path` with optional extra header lines: status code and body.
fn get(port: u16, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

struct Setup {
    dns: DnsServer,
    http: HttpEndpoints,
    port: u16,
    _daemon: Daemon,
    _dir: tempfile::TempDir,
}

/// A Knot, two HTTP endpoints and a daemon with `[node].listen` on a free port and an API token;
/// reads are `read` (`public` or `token`).
fn setup(read: &str) -> Setup {
    let ips: Vec<IpAddr> = [E2, E3].iter().map(|s| s.parse().unwrap()).collect();
    let dns = DnsServer::start(DnsKind::Knot, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let http = HttpEndpoints::start(&ips);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dns.write_secret_file(dir.path());
    std::fs::write(dir.path().join("api.token"), TOKEN).unwrap();
    let port = free_tcp_port("127.0.0.1".parse().unwrap());
    let config = dir.path().join("rrguard.toml");
    std::fs::write(
        &config,
        format!(
            r#"[node]
id = "dash-node"
listen = "127.0.0.1:{port}"
state_dir = "{state}"

[api]
token_file = "{token}"
read = "{read}"

[defaults]
interval = "200ms"
timeout = "150ms"
fall = 2
rise = 2
ttl = 60
min_healthy = 1

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
            token = dir.path().join("api.token").display(),
            server = dns.addr,
            key = dns.key_name,
            secret = secret_file.display(),
            hport = http.port,
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&["run", "-c", config.to_str().unwrap()]);
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    wait_until("the node is ready", EVENTUALLY, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/ready", &auth).0 == 200
    });
    Setup {
        dns,
        http,
        port,
        _daemon: daemon,
        _dir: dir,
    }
}

/// The text of the first element matching `css`, or null.
fn text(b: &Browser, css: &str) -> Value {
    b.eval(&format!(
        "const e = document.querySelector({css:?}); return e ? e.textContent : null;"
    ))
}

#[test]
fn dashboard_renders_follows_a_failure_and_drains_through_the_page() {
    let s = setup("public");
    let b = Browser::start(1280, 900);
    let url = format!("http://127.0.0.1:{}/", s.port);
    wait_until("both endpoints up and published", EVENTUALLY, || {
        s.dns.query("www.example.test", "A").len() == 2
    });
    b.goto(&url);

    // Renders the service, its published records with TTL, both endpoints up with this node's
    // vote, the elected node, and the live stream connected.
    wait_until("the page shows both endpoints up", EVENTUALLY, || {
        text(&b, &format!("{ROW_E2} .state")) == "up"
            && text(&b, &format!("{ROW_E3} .state")) == "up"
    });
    let records = text(&b, "#rec-www-example-test-").to_string();
    assert!(
        records.contains("primary") && records.contains(E2) && records.contains("TTL 60 s"),
        "{records}"
    );
    assert!(
        text(&b, "#members .elected")
            .to_string()
            .contains("dash-node"),
        "{}",
        text(&b, "#members")
    );
    let dot = b.eval(&format!(
        "const d = document.querySelector('{ROW_E2} .dot.up'); return d && d.title;"
    ));
    assert!(dot.to_string().contains("dash-node: up"), "{dot}");
    wait_until("a latency sparkline", EVENTUALLY, || {
        b.eval(&format!(
            "return document.querySelectorAll('{ROW_E2} .spark polyline').length;"
        )) == 1
    });

    // E3's listener stops: the row turns down and out without a reload (the marker set in this
    // document survives, and updates were applied).
    b.eval("window.__noReload = 'still here'; return null;");
    s.http.stop(E3.parse().unwrap());
    wait_until("the page shows E3 down and out", EVENTUALLY, || {
        text(&b, &format!("{ROW_E3} .state")) == "down"
            && text(&b, &format!("{ROW_E3} .why .out")) == "out"
    });
    assert_eq!(b.eval("return window.__noReload;"), "still here");
    assert!(
        b.eval("return Number(document.body.dataset.updates);")
            .as_u64()
            > Some(0)
    );
    wait_until("the events list the change", EVENTUALLY, || {
        text(&b, "#events").to_string().contains("down")
    });

    // E3 back, then drained through the form. Without the token the API refuses and the form says so.
    s.http.resume(E3.parse().unwrap());
    wait_until("the page shows E3 up again", EVENTUALLY, || {
        text(&b, &format!("{ROW_E3} .state")) == "up"
            && text(&b, &format!("{ROW_E3} .why .in")) == "in"
    });
    b.click(&format!("{ROW_E3} button.set"));
    b.type_into("#override-form [name=comment]", "kernel upgrade");
    b.type_into("#override-form [name=for]", "10m");
    b.click("#override-form [type=submit]");
    wait_until("the form shows the refusal", EVENTUALLY, || {
        text(&b, "#ov-error").to_string().contains("401")
    });
    b.type_into("#override-form [name=token]", TOKEN);
    b.click("#override-form [type=submit]");
    wait_until("a drain badge on E3", EVENTUALLY, || {
        text(&b, &format!("{ROW_E3} .badge.drain")) == "drain"
    });
    assert_eq!(b.eval("return window.__noReload;"), "still here");
    let (_, list) = get(s.port, "/api/v1/overrides", "");
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["overrides"][0]["kind"], "drain", "{list}");
    assert_eq!(list["overrides"][0]["comment"], "kernel upgrade", "{list}");
    assert_eq!(list["overrides"][0]["endpoint"], E3, "{list}");
    wait_until("E3 drained out of DNS", EVENTUALLY, || {
        s.dns.query("www.example.test", "A") == vec![E2.to_owned()]
    });
    wait_until("the page says E3 is out", EVENTUALLY, || {
        text(&b, &format!("{ROW_E3} .why .out")) == "out"
    });
    let shot = b.screenshot(&artifact_dir().join("dashboard.png"));
    println!("dashboard screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    // Cleared with the row's × button: the badge goes, the override is deleted, E3 returns to DNS.
    b.click(&format!("{ROW_E3} button.clear"));
    wait_until("the drain badge gone", EVENTUALLY, || {
        text(&b, &format!("{ROW_E3} .badge.drain")).is_null()
    });
    let (_, list) = get(s.port, "/api/v1/overrides", "");
    assert!(list.contains("\"overrides\":[]"), "{list}");
    wait_until("E3 back in DNS", EVENTUALLY, || {
        s.dns.query("www.example.test", "A").len() == 2
    });
    assert_eq!(b.eval("return window.__noReload;"), "still here");
}

#[test]
fn page_reads_without_javascript_and_follows_read_access() {
    let s = setup("token");
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    // `read = "token"`: the page and its stream need the token like the API does.
    assert_eq!(get(s.port, "/", "").0, 401);
    assert_eq!(get(s.port, "/dashboard/events?v=0&layout=0", "").0, 401);
    // The server-rendered HTML alone carries the service, records with TTL and each endpoint's
    // state and reason (what a browser without JavaScript shows).
    let mut page = String::new();
    wait_until("the page lists both endpoints up", EVENTUALLY, || {
        let (code, body) = get(s.port, "/", &auth);
        page = body;
        code == 200 && page.matches("class=\"state up\"").count() == 2
    });
    assert!(page.contains("<h3>www.example.test"), "{page}");
    assert!(page.contains("127.0.0.2 <small>TTL 60 s</small>"), "{page}");
    assert!(page.contains("<span class=\"in\">in</span>"), "{page}");
    assert!(!page.contains("<script src"), "assets are embedded");
    // A bad stream cursor is refused with the fix.
    let (code, body) = get(s.port, "/dashboard/events?v=x", &auth);
    assert_eq!(code, 400, "{body}");
}
