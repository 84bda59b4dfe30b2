//! The `tcp` check's `send` and `expect` against real listeners written here: an SMTP-style banner,
//! a Redis-style `PING`/`+PONG` exchange (the bytes sent are checked at the server), a banner sent in
//! pieces, a wrong banner, a server that closes early, one that never matches (bounded read) and one
//! that never speaks (timeout). Configuration problems are reported at the right key with the fix.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rrguard::config::{CheckConfig, ConfigError, parse};
use rrguard::observe::probe::{self, ProbeResult};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(3);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn config(check: &str) -> Result<rrguard::config::Config, ConfigError> {
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
type = "tcp"
{check}
"#
    );
    parse(std::path::Path::new("x.toml"), &text)
}

async fn run(check: &str, timeout: Duration) -> ProbeResult {
    let c = config(check).unwrap_or_else(|e| panic!("{e}"));
    let check = &c.services[0].check;
    assert!(matches!(check, CheckConfig::Tcp(_)));
    probe::build(check, LOCALHOST, timeout)
        .unwrap()
        .probe()
        .await
}

/// A listener on a free loopback port running `serve` for every connection; aborted when dropped.
struct Server {
    port: u16,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server<F, Fut>(serve: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s));
        }
    });
    Server { port, task }
}

/// Sends `banner` in `pieces` 50 ms apart, then keeps the connection open for a while.
async fn banner(banner: &'static str, pieces: usize) -> Server {
    server(move |mut s| async move {
        let bytes = banner.as_bytes();
        let step = bytes.len().div_ceil(pieces);
        for chunk in bytes.chunks(step) {
            let _ = s.write_all(chunk).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await
}

#[tokio::test]
async fn smtp_style_banner() {
    let smtp = banner("220 mx.example.test ESMTP ready\r\n", 1).await;
    let check = |p: u16| format!("port = {p}\nexpect = '^220 '");
    let r = run(&check(smtp.port), TIMEOUT).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        r.detail,
        r#"connected, got "220 mx.example.test ESMTP ready""#
    );

    // The banner arrives in pieces: read until it matches.
    let slow = banner("220 slow ESMTP\r\n", 4).await;
    let r = run(
        &format!("port = {}\nexpect = '^220 .*ESMTP'", slow.port),
        TIMEOUT,
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert!(r.latency >= Duration::from_millis(100), "{r:?}");

    // A refusal banner, connection kept open: no match until the timeout.
    let busy = banner("554 no service here\r\n", 1).await;
    let r = run(&check(busy.port), Duration::from_millis(400)).await;
    assert!(!r.ok);
    assert_eq!(
        r.detail,
        r#"timed out after 400ms before expect /^220 / matched: got "554 no service here""#
    );

    // Without expect the same server passes: the plain connect check is unchanged.
    let r = run(&format!("port = {}", busy.port), TIMEOUT).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "connected");
}

#[tokio::test]
async fn redis_style_send_and_expect() {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let redis = server(move |mut s| {
        let seen_tx = seen_tx.clone();
        async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while !got.ends_with(b"\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let reply: &[u8] = if got == b"PING\r\n" {
                b"+PONG\r\n"
            } else {
                b"-ERR unknown command\r\n"
            };
            let _ = seen_tx.send(got);
            let _ = s.write_all(reply).await;
            // Closes after answering.
        }
    })
    .await;
    let r = run(
        &format!(
            "port = {}\nsend = \"PING\\r\\n\"\nexpect = '^\\+PONG'",
            redis.port
        ),
        TIMEOUT,
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, r#"connected, got "+PONG""#);
    // TOML's \r\n escapes reached the server as CR LF.
    assert_eq!(seen_rx.recv().await.unwrap(), b"PING\r\n");

    let r = run(
        &format!(
            "port = {}\nsend = \"PONG\\r\\n\"\nexpect = '^\\+PONG'",
            redis.port
        ),
        TIMEOUT,
    )
    .await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(
        r.detail,
        r#"connection closed before expect /^\+PONG/ matched: got "-ERR unknown command""#
    );
}

#[tokio::test]
async fn reading_is_bounded() {
    // Endless output that never matches: fails after 4096 bytes, long before the timeout.
    let chatty = server(|mut s| async move {
        let block = [b'x'; 1000];
        while s.write_all(&block).await.is_ok() {}
    })
    .await;
    let start = tokio::time::Instant::now();
    let r = run(&format!("port = {}\nexpect = '^220'", chatty.port), TIMEOUT).await;
    assert!(!r.ok);
    assert!(
        r.detail
            .starts_with("expect /^220/ did not match the first 4096 bytes: \"xxxx"),
        "{r:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(1), "{r:?}");
}

#[test]
fn configuration_problems_name_the_key_and_the_fix() {
    let m: Vec<String> = match config("port = 25\nsend = \"\"\nexpect = '^(220'") {
        Err(ConfigError::Invalid { problems, .. }) => problems
            .iter()
            .map(|p| format!("{}:{} {}", p.line, p.col, p.message))
            .collect(),
        other => panic!("expected problems, got {other:?}"),
    };
    assert_eq!(m.len(), 2, "{m:#?}");
    assert!(
        m[0].starts_with("16:8 ") && m[0].contains(r#"like "PING\r\n""#),
        "{m:#?}"
    );
    assert!(
        m[1].starts_with("17:10 ") && m[1].contains("is not a valid regex"),
        "{m:#?}"
    );
}
