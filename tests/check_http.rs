//! The http check's `body_regex`, `body_sha256`/`body_sha256_file`, `max_latency` and `user_agent`
//! against a real HTTP/1.1 server written here, serving a file from disk (re-read on every request,
//! so the test can change it), a slow page and an echo of the User-Agent. Digests are computed with
//! `sha256sum`, as an operator would. Configuration problems name the key and the fix.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rrguard::config::{CheckConfig, ConfigError, HttpCheckConfig, parse};
use rrguard::observe::check::http::HttpProbe;
use rrguard::observe::probe::{self, Probe as _, ProbeResult};
use support::read_head;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(3);

fn config(dir: &Path, check: &str) -> Result<rrguard::config::Config, ConfigError> {
    config_of("http", dir, check)
}

fn config_of(kind: &str, dir: &Path, check: &str) -> Result<rrguard::config::Config, ConfigError> {
    // On the first line, so that the check's keys keep their line numbers; the probes are built
    // with TIMEOUT too.
    let text = format!(
        r#"defaults = {{ timeout = "3s" }}
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
type = "{kind}"
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
/// small HTML page, `/slow` the page after 300 ms, `/ua` the request's User-Agent, `/peer` the
/// client's address; `/r2` redirects to `/r1`, which redirects to `/page`, `/broken` to a malformed
/// URL, `/nowhere` without a Location, and `/away` to another
/// host. Aborted on drop.
struct Server {
    port: u16,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Listens on `ip` (a free port) and runs `handle` on every connection, each in a task of its
    /// own, until dropped.
    async fn start<F, Fut>(ip: &str, handle: F) -> Server
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let l = TcpListener::bind((ip, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(handle(s));
            }
        });
        Server { port, task }
    }
}

async fn server(file: PathBuf) -> Server {
    Server::start("127.0.0.1", move |s| answer(s, file.clone())).await
}

async fn answer(mut s: TcpStream, file: PathBuf) {
    let Some(head) = read_head(&mut s).await else {
        return;
    };
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let page = b"<html><p>build 1234 ok</p></html>".to_vec();
    let location = match path.as_str() {
        "/r2" => Some("/r1"),
        "/r1" => Some("/page"),
        "/away" => Some("http://elsewhere.example.test/page"),
        "/broken" => Some("http://[::1"),
        "/nowhere" => Some(""),
        _ => None,
    };
    if let Some(location) = location {
        let header = if location.is_empty() {
            String::new()
        } else {
            format!("Location: {location}\r\n")
        };
        let reply =
            format!("HTTP/1.1 302 Found\r\n{header}Content-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = s.write_all(reply.as_bytes()).await;
        let _ = s.shutdown().await;
        return;
    }
    let body = match path.as_str() {
        "/peer" => format!("peer={};", s.peer_addr().unwrap().ip()).into_bytes(),
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
    digest_of("sha256sum", path)
}

/// `TOOL FILE`'s digest (`sha256sum`, `md5sum`).
fn digest_of(tool: &str, path: &Path) -> String {
    let out = Command::new(tool).arg(path).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().to_owned()
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
    // Not a regular file, or larger than a body the probe hashes: refused at once, at the key,
    // without reading it (reading /dev/zero or a FIFO would never end).
    let fifo = dir.path().join("ref.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for file in ["/dev/zero", fifo.to_str().unwrap(), "."] {
        let m = msgs(&format!("body_sha256_file = \"{file}\""));
        assert!(
            m.len() == 1 && m[0].starts_with("15:20 ") && m[0].contains("not a regular file"),
            "{file}: {m:#?}"
        );
    }
    let big = std::fs::File::create(dir.path().join("big.bin")).unwrap();
    big.set_len(rrguard::observe::check::http::MAX_HASHED_BODY_BYTES as u64 + 1)
        .unwrap();
    let m = msgs("body_md5_file = \"big.bin\"");
    assert!(
        m.len() == 1
            && m[0].starts_with("15:17 ")
            && m[0].contains("16777217 bytes, more than the 16777216 bytes allowed"),
        "{m:#?}"
    );
}

/// An HTTP/1.1 server on every loopback address (port 0) that answers with the address the client
/// connected to (`ip=127.0.0.N;`), so a probe shows which endpoint it reached. Aborted on drop.
async fn whoami_server() -> Server {
    Server::start("0.0.0.0", |mut s: TcpStream| async move {
        if read_head(&mut s).await.is_none() {
            return;
        }
        let body = format!("ip={};", s.local_addr().unwrap().ip());
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(reply.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await
}

fn http_check(c: &rrguard::config::Config) -> &HttpCheckConfig {
    match &c.services[0].check {
        CheckConfig::Http(h) => h,
        other => panic!("not an http check: {other:?}"),
    }
}

#[tokio::test]
async fn a_thousand_endpoints_share_one_client() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "port = 8080").unwrap();
    let h = http_check(&c);
    let probes: Vec<HttpProbe> = (0..1000u32)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x7f00_0002 + i);
            HttpProbe::new(h, ip.into(), TIMEOUT).unwrap()
        })
        .collect();
    assert!(
        probes.iter().all(|p| p.shares_client_with(&probes[0])),
        "every probe of one check uses one client"
    );
    // Another service with the same client settings (other host, path, headers, user agent) too.
    let other = config(
        dir.path(),
        "port = 9090\npath = \"/x\"\nhost = \"other.example.test\"\nuser_agent = \"x\"\nheaders = { X-A = \"b\" }",
    )
    .unwrap();
    let p = HttpProbe::new(http_check(&other), "127.0.0.1".parse().unwrap(), TIMEOUT).unwrap();
    assert!(p.shares_client_with(&probes[0]));
    // The request and what is expected are shared by the endpoints of one check and timeout only.
    assert!(
        probes.iter().all(|p| p.shares_check_with(&probes[0])),
        "every probe of one check shares its prepared request"
    );
    assert!(!p.shares_check_with(&probes[0]));
    let slower = HttpProbe::new(h, "127.0.0.1".parse().unwrap(), TIMEOUT * 2).unwrap();
    assert!(!slower.shares_check_with(&probes[0]));
}

/// Answers 200 on the addresses whose last octet is even and 503 on the others, keeping each
/// connection open for further requests (HTTP/1.1 keep-alive).
async fn even_addresses_server() -> Server {
    Server::start("0.0.0.0", |mut s: TcpStream| async move {
        let std::net::IpAddr::V4(ip) = s.local_addr().unwrap().ip() else {
            return;
        };
        let status = if ip.octets()[3] % 2 == 0 {
            "200 OK"
        } else {
            "503 No"
        };
        let mut buf = [0u8; 2048];
        let mut head = Vec::new();
        loop {
            while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                head.drain(..end + 4);
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                if s.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}

#[tokio::test]
async fn endpoints_sharing_a_check_each_reach_their_own_address() {
    let srv = even_addresses_server().await;
    let dir = tempfile::tempdir().unwrap();
    for keep_alive in [false, true] {
        let c = config(
            dir.path(),
            &format!("port = {}\nkeep_alive = {keep_alive}", srv.port),
        )
        .unwrap();
        let h = http_check(&c);
        let probes: Vec<(u8, HttpProbe)> = (20..40u8)
            .map(|n| {
                let ip = format!("127.0.0.{n}").parse().unwrap();
                (n, HttpProbe::new(h, ip, TIMEOUT).unwrap())
            })
            .collect();
        assert!(
            probes
                .iter()
                .all(|(_, p)| p.shares_check_with(&probes[0].1))
        );
        let probes = std::sync::Arc::new(probes);
        let mut rounds = tokio::task::JoinSet::new();
        for i in 0..probes.len() {
            let probes = probes.clone();
            // All at once, three rounds: with keep_alive each endpoint's second and third probes
            // go on its own kept connection, never on another endpoint's.
            rounds.spawn(async move {
                let (n, p) = &probes[i];
                for round in 0..3 {
                    let r = p.probe().await;
                    assert_eq!(
                        r.ok,
                        n % 2 == 0,
                        "127.0.0.{n}, keep_alive {keep_alive}, round {round}: {r:?}"
                    );
                }
            });
        }
        while let Some(joined) = rounds.join_next().await {
            joined.unwrap();
        }
    }
}

#[tokio::test]
async fn a_shared_client_connects_each_probe_to_its_own_endpoint() {
    let srv = whoami_server().await;
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), &format!("port = {}", srv.port)).unwrap();
    let h = http_check(&c).clone();
    let mut probes = tokio::task::JoinSet::new();
    let built: Vec<(String, HttpProbe)> = (10..50u8)
        .map(|n| {
            let ip = format!("127.0.0.{n}");
            let mut check = h.clone();
            check.body_contains = Some(format!("ip={ip};"));
            let p = HttpProbe::new(&check, ip.parse().unwrap(), TIMEOUT).unwrap();
            (ip, p)
        })
        .collect();
    assert!(built.iter().all(|(_, p)| p.shares_client_with(&built[0].1)));
    for (ip, p) in built {
        // All at once, several rounds: concurrent probes on one client never swap endpoints.
        probes.spawn(async move {
            for _ in 0..3 {
                let r = p.probe().await;
                assert!(r.ok, "{ip}: {r:?}");
            }
        });
    }
    while let Some(joined) = probes.join_next().await {
        joined.unwrap();
    }
}

#[tokio::test]
async fn body_md5_against_a_served_file() {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served.bin");
    std::fs::write(&served, object(1)).unwrap();
    let reference = dir.path().join("reference.bin");
    std::fs::write(&reference, object(1)).unwrap();
    let srv = server(served.clone()).await;
    let md5 = digest_of("md5sum", &served);
    let by_value = format!(
        "port = {}\npath = \"/file\"\nbody_md5 = \"{md5}\"",
        srv.port
    );
    let by_file = format!(
        "port = {}\npath = \"/file\"\nbody_md5_file = \"reference.bin\"",
        srv.port
    );
    for check in [&by_value, &by_file] {
        let r = run(dir.path(), check).await;
        assert!(r.ok && r.detail == "HTTP 200", "{r:?}");
    }
    // One byte changes on the server: both fail, naming the digests.
    let mut changed = object(1);
    changed[150_000] ^= 1;
    std::fs::write(&served, &changed).unwrap();
    for check in [&by_value, &by_file] {
        let r = run(dir.path(), check).await;
        assert!(!r.ok, "{r:?}");
        assert!(
            r.detail.starts_with("HTTP 200, body md5 ")
                && r.detail
                    .contains(&format!("is not the expected {}…", &md5[..12])),
            "{r:?}"
        );
    }
    // Both digests at once: each is checked.
    std::fs::write(&served, object(1)).unwrap();
    let both = format!("{by_value}\nbody_sha256 = \"{}\"", sha256sum(&reference));
    assert!(run(dir.path(), &both).await.ok);
}

#[tokio::test]
async fn redirects_are_followed_only_when_asked_and_only_on_the_same_host() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path().join("none")).await;
    let check = |rest: &str| format!("port = {}\n{rest}", srv.port);
    // The default: not followed; a 302 is judged by expect_status.
    let r = run(dir.path(), &check("path = \"/r1\"")).await;
    assert!(r.ok && r.detail == "HTTP 302", "{r:?}");
    let r = run(dir.path(), &check("path = \"/r1\"\nexpect_status = [200]")).await;
    assert!(
        !r.ok && r.detail == "HTTP 302 not in expected statuses",
        "{r:?}"
    );
    // Followed to the page, whose body is then checked.
    let r = run(
        dir.path(),
        &check("path = \"/r1\"\nfollow_redirects = 1\nexpect_status = [200]\nbody_contains = \"build 1234\""),
    )
    .await;
    assert!(r.ok && r.detail == "HTTP 200", "{r:?}");
    // Two hops with a limit of one.
    let r = run(dir.path(), &check("path = \"/r2\"\nfollow_redirects = 1")).await;
    assert!(!r.ok && r.detail.contains("more than 1 redirect"), "{r:?}");
    let r = run(dir.path(), &check("path = \"/r2\"\nfollow_redirects = 2")).await;
    assert!(r.ok && r.detail == "HTTP 200", "{r:?}");
    // Another host is never followed: the check probes one endpoint.
    let r = run(dir.path(), &check("path = \"/away\"\nfollow_redirects = 5")).await;
    assert!(
        !r.ok
            && r.detail
                .contains("redirect to another host \"elsewhere.example.test\""),
        "{r:?}"
    );
    // A redirect that cannot be followed fails rather than pass as a 3xx.
    let r = run(
        dir.path(),
        &check("path = \"/nowhere\"\nfollow_redirects = 2"),
    )
    .await;
    assert!(
        !r.ok && r.detail == "HTTP 302 without a Location to follow",
        "{r:?}"
    );
    let r = run(
        dir.path(),
        &check("path = \"/broken\"\nfollow_redirects = 2"),
    )
    .await;
    assert!(
        !r.ok && r.detail == "HTTP 302 to \"http://[::1\", not a URL that can be followed",
        "{r:?}"
    );
    // Not followed when not asked: judged by expect_status as before.
    let r = run(dir.path(), &check("path = \"/nowhere\"")).await;
    assert!(r.ok && r.detail == "HTTP 302", "{r:?}");
}

#[tokio::test]
async fn source_address_is_the_local_end_of_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path().join("none")).await;
    let check = format!(
        "port = {}\npath = \"/peer\"\nsource_address = \"127.0.0.5\"\nbody_contains = \"peer=127.0.0.5;\"",
        srv.port
    );
    let r = run(dir.path(), &check).await;
    assert!(r.ok, "{r:?}");
    let check = format!(
        "port = {}\npath = \"/peer\"\nbody_contains = \"peer=127.0.0.5;\"",
        srv.port
    );
    assert!(
        !run(dir.path(), &check).await.ok,
        "without it the client's address is another"
    );
}

/// A test CA, its PEM in `dir/name`.
fn ca(dir: &Path, name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("rrguard test {name}"));
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join(name), issuer.pem()).unwrap();
    issuer
}

/// A certificate for `www.example.test` signed by `ca`, valid for `days` more days; with its key.
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    days: i64,
    client: bool,
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["www.example.test".to_owned()]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    params.not_after = x509_parser::prelude::ASN1Time::from_timestamp(now + days * 86_400)
        .unwrap()
        .to_datetime();
    if client {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let cert = params.signed_by(&key, ca).unwrap();
    (cert, key)
}

/// An HTTPS server on a free loopback port presenting `cert`, requiring a client certificate signed
/// by `client_ca` if given; answers like [`server`]. Aborted on drop.
async fn tls_server(
    cert: &rcgen::Certificate,
    key: &KeyPair,
    client_ca: Option<&CertifiedIssuer<'static, KeyPair>>,
) -> Server {
    probe::ensure_crypto_provider();
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = builder
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    Server::start("127.0.0.1", move |s| {
        let acceptor = acceptor.clone();
        async move {
            // A handshake the client fails ends here.
            let Ok(mut s) = acceptor.accept(s).await else {
                return;
            };
            if read_head(&mut s).await.is_none() {
                return;
            }
            let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
            let _ = s.write_all(reply.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    })
    .await
}

async fn run_https(dir: &Path, check: &str) -> ProbeResult {
    let c = config_of("https", dir, check).unwrap_or_else(|e| panic!("{e}"));
    probe::build(&c.services[0].check, "127.0.0.1".parse().unwrap(), TIMEOUT)
        .unwrap()
        .probe()
        .await
}

#[tokio::test]
async fn client_certificate_is_presented_to_a_server_that_requires_one() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca(dir.path(), "server-ca.pem");
    let client_ca = ca(dir.path(), "client-ca.pem");
    let (cert, key) = leaf(&server_ca, 90, false);
    let srv = tls_server(&cert, &key, Some(&client_ca)).await;
    let (client_cert, client_key) = leaf(&client_ca, 90, true);
    std::fs::write(dir.path().join("client.pem"), client_cert.pem()).unwrap();
    std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
    let base = format!("port = {}\nca_file = \"server-ca.pem\"", srv.port);
    let r = run_https(dir.path(), &base).await;
    assert!(
        !r.ok,
        "without a client certificate the server refuses: {r:?}"
    );
    let with =
        format!("{base}\nclient_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"");
    let r = run_https(dir.path(), &with).await;
    assert!(r.ok && r.detail == "HTTP 200", "{r:?}");
    // A certificate of another CA is refused too.
    let (other_cert, other_key) = leaf(&server_ca, 90, true);
    std::fs::write(dir.path().join("other.pem"), other_cert.pem()).unwrap();
    std::fs::write(dir.path().join("other.key"), other_key.serialize_pem()).unwrap();
    let other =
        format!("{base}\nclient_cert_file = \"other.pem\"\nclient_key_file = \"other.key\"");
    assert!(!run_https(dir.path(), &other).await.ok);
    // A key that is not the certificate's is refused when the configuration is loaded, at
    // client_key_file, instead of failing every handshake.
    let mismatched =
        format!("{base}\nclient_cert_file = \"client.pem\"\nclient_key_file = \"other.key\"");
    match config_of("https", dir.path(), &mismatched) {
        Err(ConfigError::Invalid { problems, .. }) => {
            assert_eq!(problems.len(), 1, "{problems:#?}");
            assert_eq!(problems[0].line, 18, "{problems:#?}");
            assert!(
                problems[0]
                    .message
                    .contains("is not the private key of the first certificate in"),
                "{problems:#?}"
            );
        }
        other => panic!("expected a problem, got {other:?}"),
    }
    // A certificate file cut short: said in words, not as the marker's bytes.
    let pem = client_cert.pem();
    std::fs::write(dir.path().join("cut.pem"), &pem[..pem.len() / 2]).unwrap();
    let cut = format!("{base}\nclient_cert_file = \"cut.pem\"\nclient_key_file = \"client.key\"");
    match config_of("https", dir.path(), &cut) {
        Err(ConfigError::Invalid { problems, .. }) => assert!(
            problems.len() == 1
                && problems[0].line == 17
                && problems[0]
                    .message
                    .contains("a PEM section has no end line \"-----END CERTIFICATE-----\""),
            "{problems:#?}"
        ),
        other => panic!("expected a problem, got {other:?}"),
    }
}

#[tokio::test]
async fn a_ca_certificate_served_as_the_servers_own_is_explained() {
    // Self-signed with CA:TRUE and trusted through ca_file: WebPKI refuses a CA as an end entity.
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["www.example.test".to_owned()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("self-ca.pem"), cert.pem()).unwrap();
    let srv = tls_server(&cert, &key, None).await;
    let r = run_https(
        dir.path(),
        &format!("port = {}\nca_file = \"self-ca.pem\"", srv.port),
    )
    .await;
    assert!(
        !r.ok
            && r.detail.contains("CaUsedAsEndEntity")
            && r.detail
                .contains("presents a CA certificate (basic constraints CA:TRUE) as its own"),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_certificate_expiring_in_three_days_is_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca(dir.path(), "ca.pem");
    let (cert, key) = leaf(&server_ca, 3, false);
    let srv = tls_server(&cert, &key, None).await;
    let base = format!("port = {}\nca_file = \"ca.pem\"", srv.port);
    let r = run_https(
        dir.path(),
        &format!("{base}\ncert_expiry_warning = \"14d\""),
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert!(
        r.detail
            .starts_with("HTTP 200, warning: certificate expires in 3days (")
            && r.detail.ends_with("within cert_expiry_warning 14days"),
        "{r:?}"
    );
    let r = run_https(dir.path(), &format!("{base}\ncert_expiry_warning = \"1d\"")).await;
    assert!(r.ok && r.detail == "HTTP 200", "{r:?}");
    let r = run_https(dir.path(), &base).await;
    assert!(r.ok && r.detail == "HTTP 200", "{r:?}");
}
