//! The read API (`/api/v1/services/{fqdn}`, `/plan`, `/events`, `/openapi.json`) and the client
//! commands (`rrguard status`, `events`, `nagios`) against one real `rrguard run` keeping
//! `www.example.test` on a real Knot (TSIG, RFC 2136) with real HTTP endpoints on loopback.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Daemon, DnsKind, DnsServer, HttpEndpoints, free_tcp_port, rrguard_bin, wait_until};

const EVENTUALLY: Duration = Duration::from_secs(30);
const E2: &str = "127.0.0.2";
const E3: &str = "127.0.0.3";
const WWW: &str = "www.example.test.";

/// `GET path`: status code and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (code, body) = get(port, path);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, v)
}

/// A Knot, two HTTP endpoints and a daemon with `[node].listen` on a free port.
struct Setup {
    dns: DnsServer,
    http: HttpEndpoints,
    port: u16,
    config: std::path::PathBuf,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

fn setup(min_healthy: usize) -> Setup {
    setup_with(min_healthy, "")
}

/// [`setup`] with `api` (an `[api]` section) in the configuration, and [`TOKEN`] in `api.token`
/// beside it.
fn setup_with(min_healthy: usize, api: &str) -> Setup {
    let ips: Vec<IpAddr> = [E2, E3].iter().map(|s| s.parse().unwrap()).collect();
    let dns = DnsServer::start(DnsKind::Knot, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let http = HttpEndpoints::start(&ips);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dns.write_secret_file(dir.path());
    let port = free_tcp_port("127.0.0.1".parse().unwrap());
    let config = dir.path().join("rrguard.toml");
    std::fs::write(dir.path().join("api.token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"[node]
id = "api-node"
listen = "127.0.0.1:{port}"
state_dir = "{state}"

{api}

[defaults]
interval = "200ms"
timeout = "150ms"
fall = 2
rise = 2
ttl = 60
min_healthy = {min_healthy}

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
    let daemon = Daemon::start(&["run", "-c", config.to_str().unwrap()]);
    wait_until("the node is ready", EVENTUALLY, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/ready").0 == 200
    });
    Setup {
        dns,
        http,
        port,
        config,
        daemon,
        _dir: dir,
    }
}

/// The API token of [`setup_with`].
const TOKEN: &str = "api-test-token-0123456789";

/// Runs `rrguard ARGS`: exit code and stdout (stderr appended after a marker).
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(rrguard_bin())
        .args(args)
        .env_remove("RRGUARD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn find_endpoint<'a>(detail: &'a Value, ip: &str) -> Option<&'a Value> {
    detail["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["endpoint"] == ip)
}

fn endpoint<'a>(detail: &'a Value, ip: &str) -> &'a Value {
    find_endpoint(detail, ip).unwrap_or_else(|| panic!("no {ip} in {detail}"))
}

#[test]
fn service_plan_and_events_follow_a_failure() {
    let s = setup(1);
    // Both up and published; each with a reason, votes and a last probe.
    let mut detail = Value::Null;
    wait_until("both endpoints up with a standing", EVENTUALLY, || {
        detail = get_json(s.port, "/api/v1/services/www.example.test").1;
        // The endpoints appear once the node has a first cluster view.
        [E2, E3].iter().all(|ip| {
            find_endpoint(&detail, ip).is_some_and(|e| {
                e["state"] == "up" && e["reason_kind"] == "verdict" && e["published"] == true
            })
        })
    });
    let e2 = endpoint(&detail, E2);
    assert_eq!(e2["votes"][0]["node"], "api-node", "{detail}");
    assert_eq!(e2["votes"][0]["vote"], "up", "{detail}");
    assert!(
        e2["votes"][0]["age_ms"].as_u64().unwrap() < 10_000,
        "{detail}"
    );
    assert!(e2["since_unix_ms"].as_u64().is_some(), "{detail}");
    assert_eq!(e2["last_probe"]["detail"], "HTTP 200", "{detail}");
    assert!(e2["last_probe"]["latency_ms"].as_f64().unwrap() > 0.0);
    let w = &detail["writers"][0];
    assert_eq!(w["name"], "primary");
    let mut records: Vec<(String, u64)> = w["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().to_owned(),
                r["ttl"].as_u64().unwrap(),
            )
        })
        .collect();
    records.sort();
    assert_eq!(
        records,
        vec![(E2.to_owned(), 60), (E3.to_owned(), 60)],
        "{detail}"
    );
    // The trailing dot is optional; the name is not case-sensitive.
    assert_eq!(get(s.port, "/api/v1/services/WWW.example.test.").0, 200);

    // E3 fails: removed from DNS, and the API says why it is out.
    s.http.stop(E3.parse().unwrap());
    wait_until("E3 removed from DNS", EVENTUALLY, || {
        s.dns.query("www.example.test", "A") == vec![E2.to_owned()]
    });
    wait_until(
        "the API shows E3 out because it is down",
        EVENTUALLY,
        || {
            detail = get_json(s.port, "/api/v1/services/www.example.test").1;
            let e3 = endpoint(&detail, E3);
            e3["state"] == "down" && e3["published"] == false && e3["reason"] == "down"
        },
    );
    assert!(
        detail["writers"][0]["last_write_unix_ms"]
            .as_u64()
            .is_some(),
        "{detail}"
    );
    assert_eq!(detail["writers"][0]["last_error"], Value::Null);
    // Nothing left to do.
    let (code, plan) = get_json(s.port, "/api/v1/plan");
    assert_eq!(code, 200);
    assert_eq!(plan["services"][0]["fqdn"], WWW, "{plan}");
    assert_eq!(plan["services"][0]["writers"][0]["planned"], true, "{plan}");
    assert_eq!(
        plan["services"][0]["writers"][0]["changes"],
        serde_json::json!([]),
        "{plan}"
    );

    // The write is in the events, with its evidence.
    let mut page = Value::Null;
    wait_until("the write is in the audit log", EVENTUALLY, || {
        page = get_json(s.port, "/api/v1/events?kind=dns_updated").1;
        !page["events"].as_array().unwrap().is_empty()
    });
    let write = &page["events"][0];
    assert_eq!(write["service"], WWW);
    assert_eq!(write["writer"], "primary");
    assert_eq!(write["node"], "api-node");
    let w = &write["write"];
    assert_eq!(w["result"], "ok", "{write}");
    assert_eq!(
        w["after"],
        serde_json::json!([{"address": E2, "ttl": 60}]),
        "{write}"
    );
    let before: Vec<&str> = w["before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(before, vec![E2, E3], "{write}");
    assert_eq!(w["changes"][0]["op"], "remove");
    assert_eq!(w["changes"][0]["address"], E3);
    assert_eq!(w["changes"][0]["reason_kind"], "verdict");
    let ev = &w["evidence"];
    assert_eq!(
        (ev["fall"].as_u64(), ev["rise"].as_u64()),
        (Some(2), Some(2)),
        "{write}"
    );
    assert_eq!(ev["min_healthy"], 1);
    assert_eq!(ev["all_down"], "keep_all");
    let v3 = ev["votes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["endpoint"] == E3)
        .unwrap();
    assert_eq!(v3["cluster_state"], "down");
    assert_eq!(v3["down_votes"], serde_json::json!(["api-node"]));
    // State changes are events too; paging and filters work.
    let (_, states) = get_json(
        s.port,
        "/api/v1/events?kind=endpoint_state&service=www.example.test",
    );
    assert!(
        states["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.3 is down")),
        "{states}"
    );
    let (_, one) = get_json(s.port, "/api/v1/events?limit=1");
    assert_eq!(one["events"].as_array().unwrap().len(), 1);
    let cursor = one["next_before"].as_u64().expect("a next page");
    let (_, next) = get_json(s.port, &format!("/api/v1/events?limit=1&before={cursor}"));
    assert!(
        next["events"][0]["seq"].as_u64().unwrap() < cursor,
        "{next}"
    );

    // The CLI shows the same.
    let cfg = s.config.to_str().unwrap();
    let (code, out, err) = cli(&["status", "-c", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node api-node  leader api-node"), "{out}");
    assert!(
        out.contains(&format!("writer primary: {E2} ttl=60")),
        "{out}"
    );
    let e3_line = out
        .lines()
        .find(|l| l.trim_start().starts_with(E3))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        e3_line.contains("down") && e3_line.contains("out: down"),
        "{out}"
    );
    let (code, out, err) = cli(&[
        "events",
        "--url",
        &format!("http://127.0.0.1:{}", s.port),
        "--kind",
        "dns_updated",
        "--since",
        "10m",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "dns_updated www.example.test. writer=primary result=ok: remove 127.0.0.3 (down)"
        ),
        "{out}"
    );
}

#[test]
fn bad_input_and_unknown_service_are_json_errors() {
    let s = setup(1);
    let (code, v) = get_json(s.port, "/api/v1/services/nope.example.test");
    assert_eq!(code, 404);
    assert_eq!(v["field"], "fqdn");
    assert!(
        v["error"].as_str().unwrap().contains("www.example.test."),
        "{v}"
    );
    for (query, field) in [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("since=-1", "since"),
        ("before=x", "before"),
        ("bogus=1", "bogus"),
    ] {
        let (code, v) = get_json(s.port, &format!("/api/v1/events?{query}"));
        assert_eq!(code, 400, "{query}: {v}");
        assert_eq!(v["field"], field, "{query}: {v}");
    }
    let (code, v) = get_json(s.port, "/api/v1/events?service=nope.example.test");
    assert_eq!((code, v["field"].as_str()), (404, Some("service")), "{v}");
    // An unknown kind, a typo, the old documented `isolation`, one bad kind among good ones: 400
    // naming `kind` and listing the kinds, instead of an empty page.
    for kinds in ["bogus", "dns_update", "isolation", "dns_updated,bogus", ""] {
        let (code, v) = get_json(s.port, &format!("/api/v1/events?kind={kinds}"));
        assert_eq!(
            (code, v["field"].as_str()),
            (400, Some("kind")),
            "{kinds}: {v}"
        );
        let error = v["error"].as_str().unwrap();
        assert!(error.starts_with("unknown event kind"), "{error}");
        for kind in real_event_kinds() {
            assert!(error.contains(&kind), "{kinds}: {error} lacks {kind}");
        }
    }
    let (code, v) = get_json(s.port, "/api/v1/events?kind=isolated,rejoined,dns_updated");
    assert_eq!(code, 200, "{v}");
    let (code, out, err) = cli(&[
        "events",
        "-c",
        s.config.to_str().unwrap(),
        "--kind",
        "dns_update",
    ]);
    assert_eq!(code, 64, "{out}{err}");
    assert!(
        err.contains("HTTP 400: unknown event kind \"dns_update\"; one of: ")
            && err.contains("dns_updated"),
        "{err}"
    );
    // The CLI: a request the node refuses (400, 404) is an error naming what is wrong, exit 64 as
    // `--help` says ("the node refused the request"), not 1 (which means it cannot be reached).
    let config = s.config.to_str().unwrap();
    let url = format!("http://127.0.0.1:{}", s.port);
    let (code, _, err) = cli(&["status", "-c", config, "nope.example.test"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no service \"nope.example.test\""), "{err}");
    let (code, _, err) = cli(&["status", "--url", &url, WWW, "127.0.0.9"]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("HTTP 404: \"127.0.0.9\" is not an endpoint of www.example.test."),
        "{err}"
    );
    let (code, _, err) = cli(&["events", "--url", &url, "--limit", "0"]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("HTTP 400: limit=0 is out of range: use 1 to 1000"),
        "{err}"
    );
    let (code, _, err) = cli(&["events", "-c", config, "--service", "nope.example.test"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("HTTP 404: no service"), "{err}");
    // Bad usage before any request: a URL that is not http://HOST:PORT.
    let (code, _, err) = cli(&["events", "--url", "127.0.0.1:1"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("bad URL"), "{err}");
    // A valid request still succeeds.
    let (code, _, err) = cli(&["events", "--url", &url, "--limit", "1"]);
    assert_eq!(code, 0, "{err}");
}

/// A node that fails (5xx) is a runtime failure, exit 1, like one that cannot be reached: the
/// request was not wrong. An HTTP server answering 500 to everything stands in for a failing node.
#[test]
fn cli_exits_1_when_the_node_fails() {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let failing = HttpEndpoints::start(&[ip]);
    let url = format!("http://127.0.0.1:{}", failing.port);
    for status in [500, 503] {
        failing.set_status(ip, status);
        for args in [
            &["events", "--url", &url][..],
            &["status", "--url", &url][..],
            &["status", "--url", &url, WWW, E2][..],
        ] {
            let (code, _, err) = cli(args);
            assert_eq!(code, 1, "{args:?}: {err}");
            assert!(err.contains(&format!("HTTP {status}")), "{args:?}: {err}");
        }
    }
    // And a 4xx from the same server is a refusal, exit 64: the code follows the answer.
    failing.set_status(ip, 404);
    let (code, _, err) = cli(&["events", "--url", &url]);
    assert_eq!(code, 64, "{err}");
}

#[test]
fn openapi_document_is_valid_and_lists_every_route() {
    let s = setup(1);
    let (code, body) = get(s.port, "/api/v1/openapi.json");
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    for path in [
        "/api/v1/services/{fqdn}",
        "/api/v1/services/{fqdn}/endpoints/{ip}/history",
        "/api/v1/plan",
        "/api/v1/events",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let file = s.daemon.dir().join("openapi.json");
    std::fs::write(&file, &body).unwrap();
    let out = Command::new("python3")
        .args(["-c", "import sys, json\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator (pip) rejects the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rows of the "Read API" table of docs/operations.md, by route: `(route, what it answers)`.
fn documented_read_api() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let section = doc
        .split("\n## Read API")
        .nth(1)
        .expect("docs/operations.md has a Read API section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `GET "))
        .map(|row| {
            let (route, rest) = row.split_once("` |").unwrap();
            (route.to_owned(), rest.to_owned())
        })
        .collect()
}

/// One row per route, every route of the read API: a route documented twice (with different
/// content) leaves the reader to guess which is true.
#[test]
fn read_api_table_has_one_row_per_route() {
    let routes: Vec<String> = documented_read_api().into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        routes,
        [
            "/api/v1/services/{fqdn}",
            "/api/v1/plan",
            "/api/v1/events",
            "/api/v1/services/{fqdn}/endpoints/{ip}/history",
            "/api/v1/openapi.json",
        ]
    );
}

/// The backticked words of `text`.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Every event kind, sorted, as the API names them.
fn real_event_kinds() -> Vec<String> {
    let mut kinds: Vec<String> = rrguard::state::EventKind::ALL
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    kinds.sort();
    kinds
}

/// The kinds docs/operations.md lists for `GET /api/v1/events` and for the alerts are exactly the
/// kinds events have: a documented kind that is never stored (`isolation`) filters out everything.
#[test]
fn documented_event_kinds_are_the_real_ones() {
    let rows = documented_read_api();
    let events = &rows
        .iter()
        .find(|(route, _)| route == "/api/v1/events")
        .expect("an events row")
        .1;
    let list = events
        .split_once("`kind=a,b` (")
        .and_then(|(_, rest)| rest.split_once(':'))
        .expect("the events row lists the kinds")
        .0;
    let mut documented = backticked(list);
    documented.sort();
    assert_eq!(documented, real_event_kinds(), "{events}");
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let alerts = doc
        .split_once("| kind | when |\n| --- | --- |\n")
        .expect("the alerts' kind table")
        .1;
    let mut documented: Vec<String> = alerts
        .lines()
        .take_while(|l| l.starts_with('|'))
        .flat_map(|l| backticked(l.split('|').nth(1).unwrap()))
        .collect();
    documented.sort();
    assert_eq!(documented, real_event_kinds(), "{alerts}");
}

#[test]
fn nagios_ok_warning_critical_and_unknown() {
    let s = setup(1);
    let url = format!("http://127.0.0.1:{}", s.port);
    let mut last = (0, String::new(), String::new());
    wait_until("nagios OK", EVENTUALLY, || {
        last = cli(&["nagios", "--url", &url]);
        last.0 == 0
    });
    assert!(
        last.1.starts_with(
            "RRGUARD OK - 1 services, 2/2 endpoints up | services=1 endpoints_up=2;;;0;2 latency="
        ),
        "{}",
        last.1
    );
    s.http.stop(E3.parse().unwrap());
    wait_until("nagios WARNING", EVENTUALLY, || {
        last = cli(&["nagios", "-c", s.config.to_str().unwrap(), WWW]);
        last.0 == 1
    });
    assert!(
        last.1
            .starts_with("RRGUARD WARNING - www.example.test.: 127.0.0.3 not up |"),
        "{}",
        last.1
    );
    assert!(last.1.contains("endpoints_up=1;;;0;2"), "{}", last.1);
    // Flapping: more writes in the last hour than allowed (the removal's write follows the verdict
    // the WARNING above saw by a few milliseconds).
    let (mut code, mut out) = (0, String::new());
    wait_until("the removal is written", EVENTUALLY, || {
        (code, out, _) = cli(&["nagios", "--url", &url, "--rotations-warning", "0"]);
        out.contains("rotations_1h=1")
    });
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DNS writes in the last hour") && out.contains("rotations_1h=1;0;;0"),
        "{out}"
    );
    s.http.stop(E2.parse().unwrap());
    wait_until("nagios CRITICAL", EVENTUALLY, || {
        last = cli(&["nagios", "--url", &url]);
        last.0 == 2
    });
    assert!(
        last.1
            .starts_with("RRGUARD CRITICAL - www.example.test.: no endpoint up"),
        "{}",
        last.1
    );
    // An unknown service, and a node that is not running: UNKNOWN.
    let (code, out, _) = cli(&["nagios", "--url", &url, "nope.example.test"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.starts_with("RRGUARD UNKNOWN - ") && out.contains("404"),
        "{out}"
    );
    let mut s = s;
    s.daemon.signal("TERM");
    assert_eq!(s.daemon.wait_exit(Duration::from_secs(30)), Some(0));
    let (code, out, _) = cli(&["nagios", "--url", &url]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("cannot reach rrguard at 127.0.0.1:"), "{out}");
    for args in [
        &["status", "--url", &url][..],
        &["events", "--url", &url][..],
    ] {
        let (code, _, err) = cli(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("cannot reach rrguard"), "{args:?}: {err}");
    }
}

/// `[api] read = "token"`: the read commands send the token of the configuration, or of
/// `--token-file`; without one the node refuses them (401, exit 77).
#[test]
fn read_commands_send_the_api_token() {
    let s = setup_with(1, "[api]\nread = \"token\"\ntoken_file = \"api.token\"\n");
    let config = s.config.to_str().unwrap();
    let url = format!("http://127.0.0.1:{}", s.port);
    assert_eq!(get(s.port, "/api/v1/status").0, 401);
    wait_until(
        "status reads with the configuration's token",
        EVENTUALLY,
        || {
            let (code, out, _) = cli(&["status", "-c", config]);
            code == 0 && out.contains("127.0.0.3")
        },
    );
    let (code, out, err) = cli(&["events", "-c", config]);
    assert_eq!(code, 0, "{out}{err}");
    // nagios read the node (UNKNOWN is what a refused read gives); the verdict itself depends on
    // how far the endpoints' first probes are.
    let (code, out, _) = cli(&["nagios", "-c", config]);
    assert!(
        !out.starts_with("RRGUARD UNKNOWN") && out.contains("services=1"),
        "{code} {out}"
    );
    // --url alone (no configuration to take a token from): refused, exit 77.
    let missing = s._dir.path().join("missing.toml");
    let (code, _, err) = cli(&["status", "-c", missing.to_str().unwrap(), "--url", &url]);
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    // --token-file: read.
    let token_file = s._dir.path().join("api.token");
    let (code, out, err) = cli(&[
        "status",
        "-c",
        missing.to_str().unwrap(),
        "--url",
        &url,
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // A token with a line break cannot go in a header line: a usage error, nothing sent.
    let broken = s._dir.path().join("broken.token");
    std::fs::write(&broken, "abc\ndef").unwrap();
    let (code, _, err) = cli(&[
        "status",
        "--url",
        &url,
        "--token-file",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("control character"), "{err}");
}
