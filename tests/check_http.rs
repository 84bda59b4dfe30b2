//! The http check's `body_regex`, `body_sha256`/`body_sha256_file`, `max_latency` and `user_agent`
//! against a real HTTP/1.1 server written here, serving a file from disk (re-read on every request,
//! so the test can change it), a slow page and an echo of the User-Agent. Digests are computed with
//! `sha256sum`, as an operator would. Configuration problems name the key and the fix.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rrguard::config::{CheckConfig, ConfigError, parse};
use rrguard::observe::probe::{self, ProbeResult};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(3);

fn config(dir: &Path, check: &str) -> Result<rrguard::config::Config, ConfigError> {
    let text = format!(
        r#"
[[writer]]
name = "w"
type = "rfc2136"
server = "127.0.0.1"
tsig = {{ name = "k", algorithm = "hmac-sha256", secret = "c2VjcmV0" }}

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "w"
endpoints = ["127.0.0.1"]
[service.check]
type = "http"
{check}
"#
    );
    parse(&dir.join("rrguard.toml"), &text)
}

async fn run(dir: &Path, check: &str) -> ProbeResult {
    let c = config(dir, check).unwrap_or_else(|e| panic!("{e}"));
    let check = &c.services[0].check;
    assert!(matches!(check, CheckConfig::Http(_)));
    probe::build(check, "127.0.0.1".parse().unwrap(), TIMEOUT)
        .unwrap()
        .probe()
        .await
}

/// An HTTP/1.1 server on a free loopback port: `/file` serves `file` (read per request), `/page` a
/// small HTML page, `/slow` the page after 300 ms, `/ua` the request's User-Agent. Aborted on drop.
struct Server {
    port: u16,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server(file: PathBuf) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(answer(s, file.clone()));
        }
    });
    Server { port, task }
}

async fn answer(mut s: TcpStream, file: PathBuf) {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let page = b"<html><p>build 1234 ok</p></html>".to_vec();
    let body = match path.as_str() {
        "/file" => std::fs::read(&file).unwrap(),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            page
        }
        "/ua" => head
            .lines()
            .find_map(|l| l.strip_prefix("user-agent: "))
            .unwrap_or("none")
            .as_bytes()
            .to_vec(),
        _ => page,
    };
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(reply.as_bytes()).await;
    let _ = s.write_all(&body).await;
    let _ = s.shutdown().await;
}

/// `sha256sum FILE`'s digest.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// 300 kB that are not all alike: larger than the 64 KiB kept for body_contains/body_regex, so the
/// digest needs the whole body.
fn object(version: u8) -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8 ^ version).collect()
}

#[tokio::test]
async fn body_sha256_against_a_served_file() {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served.bin");
    let reference = dir.path().join("reference.bin");
    std::fs::write(&served, object(0)).unwrap();
    std::fs::write(&reference, object(0)).unwrap();
    let web = server(served.clone()).await;
    let port = web.port;
    let hex = sha256sum(&reference);

    let by_file = format!("port = {port}\npath = \"/file\"\nbody_sha256_file = \"reference.bin\"");
    let by_hex = format!("port = {port}\npath = \"/file\"\nbody_sha256 = \"{hex}\"");
    for check in [&by_file, &by_hex] {
        let r = run(dir.path(), check).await;
        assert!(r.ok, "{check}: {r:?}");
        assert_eq!(r.detail, "HTTP 200");
    }
    // The edge serves another object now: one byte at the end changed.
    let mut changed = object(0);
    *changed.last_mut().unwrap() ^= 1;
    std::fs::write(&served, &changed).unwrap();
    let got = sha256sum(&served);
    for check in [&by_file, &by_hex] {
        let r = run(dir.path(), check).await;
        assert!(!r.ok, "{check}: {r:?}");
        assert_eq!(
            r.detail,
            format!(
                "HTTP 200, body sha256 {}… is not the expected {}…",
                &got[..12],
                &hex[..12]
            )
        );
    }
    // Upper-case hex, as some tools print it, is fine.
    std::fs::write(&served, object(0)).unwrap();
    let upper = format!(
        "port = {port}\npath = \"/file\"\nbody_sha256 = \"{}\"",
        hex.to_uppercase()
    );
    assert!(run(dir.path(), &upper).await.ok);
}

#[tokio::test]
async fn body_regex_max_latency_and_user_agent() {
    let dir = tempfile::tempdir().unwrap();
    let web = server(dir.path().join("unused")).await;
    let port = web.port;

    let r = run(
        dir.path(),
        &format!("port = {port}\npath = \"/page\"\nbody_regex = 'build \\d+ ok'"),
    )
    .await;
    assert!(r.ok, "{r:?}");
    let r = run(
        dir.path(),
        &format!("port = {port}\npath = \"/page\"\nbody_regex = 'build \\d+ failed'"),
    )
    .await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(
        r.detail,
        r"HTTP 200, body does not match /build \d+ failed/"
    );

    let r = run(
        dir.path(),
        &format!("port = {port}\npath = \"/slow\"\nmax_latency = \"100ms\""),
    )
    .await;
    assert!(!r.ok, "{r:?}");
    assert!(r.latency >= Duration::from_millis(300), "{r:?}");
    assert!(
        r.detail.starts_with("HTTP 200 in 3")
            && r.detail.ends_with("ms, slower than max_latency 100ms"),
        "{r:?}"
    );
    let r = run(
        dir.path(),
        &format!("port = {port}\npath = \"/slow\"\nmax_latency = \"2s\""),
    )
    .await;
    assert!(r.ok, "{r:?}");

    let r = run(
        dir.path(),
        &format!(
            "port = {port}\npath = \"/ua\"\nuser_agent = \"edge-probe/2.1 (ops)\"\nbody_regex = '^edge-probe/2\\.1 \\(ops\\)$'"
        ),
    )
    .await;
    assert!(r.ok, "{r:?}");
    let r = run(
        dir.path(),
        &format!("port = {port}\npath = \"/ua\"\nbody_regex = '^rrguard/\\S+ health check$'"),
    )
    .await;
    assert!(r.ok, "default user agent: {r:?}");
}

#[test]
fn configuration_problems_name_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = |check: &str| -> Vec<String> {
        match config(dir.path(), check) {
            Err(ConfigError::Invalid { problems, .. }) => problems
                .iter()
                .map(|p| format!("{}:{} {}", p.line, p.col, p.message))
                .collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    };
    let m = msgs(
        "body_sha256 = \"abc\"\nbody_regex = '(unclosed'\nuser_agent = \"bad\\nagent\"\nmax_latency = 5",
    );
    assert!(
        m.len() == 1 && m[0].contains("durations are strings"),
        "{m:#?}"
    );
    let m = msgs("body_sha256 = \"abc\"\nbody_regex = '(unclosed'\nuser_agent = \"bad\\nagent\"");
    assert_eq!(m.len(), 3, "{m:#?}");
    assert!(
        m[0].starts_with("15:15 ") && m[0].contains("64 hex digits"),
        "{m:#?}"
    );
    assert!(
        m[1].starts_with("16:14 ") && m[1].contains("not a valid regex"),
        "{m:#?}"
    );
    assert!(
        m[2].starts_with("17:14 ") && m[2].contains("without line breaks"),
        "{m:#?}"
    );
    let m = msgs("body_sha256_file = \"missing.bin\"");
    assert!(
        m[0].starts_with("15:20 ")
            && m[0].contains("cannot read body_sha256_file")
            && m[0].contains("missing.bin"),
        "{m:#?}"
    );
    std::fs::write(dir.path().join("ref.bin"), b"x").unwrap();
    let m = msgs(&format!(
        "body_sha256 = \"{}\"\nbody_sha256_file = \"ref.bin\"",
        "0".repeat(64)
    ));
    assert!(m[0].contains("not both"), "{m:#?}");
}
