//! One battery of checks written against `&dyn Probe`, run for every check type (`http`, `https`,
//! `tcp`, `tcp` with `send`/`expect`, `dns` over TCP). Each check type brings a [`Fixture`]: how to
//! build its probe and how to make a healthy, a hanging, a slow-bodied and a garbage-speaking endpoint
//! of its kind on loopback. A new check type adds a fixture and a one-line test.
//!
//! Every server binds port 0 (or a free port) on a 127.0.0.x address and is stopped when its guard is
//! dropped.

mod support;

use std::any::Any;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rrguard::config::{CheckConfig, DnsCheckConfig, HttpCheckConfig, TcpCheckConfig};
use rrguard::observe::check::Pattern;
use rrguard::observe::probe::{self, Probe};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use support::{DnsKind, DnsServer, HttpEndpoints, free_tcp_port};

/// The timeout of probes expected to succeed.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The timeout of probes of a hanging endpoint.
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);
/// How late a timed-out probe may return on a busy 2-core machine.
const MARGIN: Duration = Duration::from_millis(700);
/// How long a slow endpoint takes to send its body after its headers.
const DRIBBLE: Duration = Duration::from_millis(300);
/// The service name sent as Host and SNI.
const HOST: &str = "www.example.test";

/// A running endpoint: its port, and whatever keeps it running until dropped.
struct Running {
    port: u16,
    _guard: Box<dyn Any>,
}

/// What the battery needs to know about one check type.
struct Fixture {
    /// Builds the probe of this check type for `ip:port`.
    probe: fn(IpAddr, u16, Duration) -> Box<dyn Probe>,
    /// An endpoint the check passes on.
    healthy: fn(IpAddr) -> Running,
    /// An endpoint the check cannot finish on (accepts TCP and never answers, or never accepts).
    hanging: fn(IpAddr) -> Running,
    /// An endpoint that sends its headers at once and the body over [`DRIBBLE`]; `None` for checks
    /// that read no body.
    slow_body: Option<fn(IpAddr) -> Running>,
    /// An endpoint that answers bytes that are not the protocol; `None` for checks that read nothing.
    garbage: Option<fn(IpAddr) -> Running>,
}

/// Runs every row of the battery against the fixture's endpoints on `ip`.
async fn battery(f: &Fixture, ip: IpAddr) {
    let healthy = (f.healthy)(ip);
    passes_with_plausible_latency(&*(f.probe)(ip, healthy.port, TIMEOUT)).await;

    let closed = free_tcp_port(ip);
    refused(&*(f.probe)(ip, closed, TIMEOUT)).await;

    let hanging = (f.hanging)(ip);
    honours_timeout(&*(f.probe)(ip, hanging.port, SHORT_TIMEOUT)).await;

    if let Some(slow_body) = f.slow_body {
        let slow = slow_body(ip);
        latency_covers_body(&*(f.probe)(ip, slow.port, TIMEOUT)).await;
    }
    if let Some(garbage) = f.garbage {
        let garbage = garbage(ip);
        fails_on_garbage(&*(f.probe)(ip, garbage.port, TIMEOUT)).await;
    }
}

async fn passes_with_plausible_latency(p: &dyn Probe) {
    let r = p.probe().await;
    assert!(r.ok, "healthy endpoint: {r:?}");
    assert!(
        r.latency > Duration::ZERO && r.latency < TIMEOUT,
        "healthy endpoint: implausible latency {r:?}"
    );
}

async fn refused(p: &dyn Probe) {
    let r = p.probe().await;
    assert!(!r.ok, "closed port: {r:?}");
    assert_eq!(r.detail, "connection refused");
}

async fn honours_timeout(p: &dyn Probe) {
    let start = Instant::now();
    let r = p.probe().await;
    let took = start.elapsed();
    assert!(!r.ok, "hanging endpoint: {r:?}");
    // The same words for every check (the lag monitor knows a timeout by them); a check may add
    // what it saw before it (a TCP banner that never matched `expect`, a DNS reply it ignored).
    assert!(r.detail.starts_with("timed out after 300ms"), "{r:?}");
    assert!(
        r.detail
            .starts_with(&probe::timed_out_detail(SHORT_TIMEOUT)),
        "{r:?}"
    );
    assert!(
        took >= SHORT_TIMEOUT && took < SHORT_TIMEOUT + MARGIN,
        "hanging endpoint: the probe took {took:?} for a timeout of {SHORT_TIMEOUT:?}"
    );
}

async fn latency_covers_body(p: &dyn Probe) {
    let r = p.probe().await;
    assert!(r.ok, "slow body: {r:?}");
    assert!(
        r.latency >= DRIBBLE,
        "slow body: latency {:?} stops before the body ended ({DRIBBLE:?})",
        r.latency
    );
}

async fn fails_on_garbage(p: &dyn Probe) {
    let r = p.probe().await;
    assert!(!r.ok, "garbage answer: {r:?}");
    assert!(!r.detail.is_empty(), "garbage answer: no detail");
}

#[tokio::test]
async fn http() {
    battery(&HTTP, "127.0.0.2".parse().unwrap()).await;
}

#[tokio::test]
async fn https() {
    battery(&HTTPS, "127.0.0.3".parse().unwrap()).await;
}

#[tokio::test]
async fn tcp() {
    battery(&TCP, "127.0.0.4".parse().unwrap()).await;
}

#[tokio::test]
async fn dns_over_tcp() {
    // The harness's Knot listens on 127.0.0.1 only.
    battery(&DNS_TCP, "127.0.0.1".parse().unwrap()).await;
}

#[tokio::test]
async fn tcp_send_expect() {
    battery(&TCP_SEND_EXPECT, "127.0.0.6".parse().unwrap()).await;
}

const HTTP: Fixture = Fixture {
    probe: |ip, port, timeout| build(CheckConfig::Http(http_check(false, port)), ip, timeout),
    healthy: |ip| {
        let endpoints = HttpEndpoints::start(&[ip]);
        Running {
            port: endpoints.port,
            _guard: Box::new(endpoints),
        }
    },
    hanging: |ip| serve(ip, None, Answer::Nothing),
    slow_body: Some(|ip| serve(ip, None, Answer::SlowBody)),
    garbage: Some(|ip| serve(ip, None, Answer::Garbage)),
};

const HTTPS: Fixture = Fixture {
    probe: |ip, port, timeout| build(CheckConfig::Http(http_check(true, port)), ip, timeout),
    healthy: |ip| serve(ip, Some(tls_acceptor()), Answer::Ok),
    // No TLS handshake at all: the probe hangs in the handshake.
    hanging: |ip| serve(ip, None, Answer::Nothing),
    slow_body: Some(|ip| serve(ip, Some(tls_acceptor()), Answer::SlowBody)),
    garbage: Some(|ip| serve(ip, Some(tls_acceptor()), Answer::Garbage)),
};

const TCP: Fixture = Fixture {
    probe: |ip, port, timeout| build(CheckConfig::Tcp(TcpCheckConfig::connect(port)), ip, timeout),
    healthy: |ip| {
        let endpoints = HttpEndpoints::start(&[ip]);
        Running {
            port: endpoints.port,
            _guard: Box::new(endpoints),
        }
    },
    hanging: full_backlog,
    // A TCP check ends at the handshake: it reads neither a body nor an answer.
    slow_body: None,
    garbage: None,
};

/// `tcp` with `send` and `expect`, speaking HTTP by hand: the whole answer, body included, must
/// arrive for `expect` to match.
const TCP_SEND_EXPECT: Fixture = Fixture {
    probe: |ip, port, timeout| {
        let check = TcpCheckConfig {
            send: Some(b"GET /health HTTP/1.1\r\nHost: www.example.test\r\n\r\n".to_vec()),
            expect: Some(
                Pattern::new(r"^HTTP/1\.1 200 [\s\S]*\r\n\r\n(ok\n|healthy)").expect("regex"),
            ),
            ..TcpCheckConfig::connect(port)
        };
        build(CheckConfig::Tcp(check), ip, timeout)
    },
    healthy: |ip| {
        let endpoints = HttpEndpoints::start(&[ip]);
        Running {
            port: endpoints.port,
            _guard: Box::new(endpoints),
        }
    },
    hanging: |ip| serve(ip, None, Answer::Nothing),
    slow_body: Some(|ip| serve(ip, None, Answer::SlowBody)),
    garbage: Some(|ip| serve(ip, None, Answer::Garbage)),
};

/// `dns` with `transport = "tcp"` (so the closed port and the silent listener are TCP's), against a
/// real Knot. No slow-body row (one DNS message, no body) and no garbage row (the battery's garbage
/// listener waits for an HTTP request head, which a DNS query never completes).
const DNS_TCP: Fixture = Fixture {
    probe: |ip, port, timeout| {
        let check = DnsCheckConfig {
            port,
            name: "ns1.example.test.".parse().expect("name"),
            record_type: "A".parse().expect("type"),
            expect_rcode: 0,
            expect_answer: vec!["127.0.0.1".to_owned()],
            tcp_only: true,
        };
        build(CheckConfig::Dns(check), ip, timeout)
    },
    healthy: |_| {
        let knot = DnsServer::start(DnsKind::Knot, "");
        Running {
            port: knot.port(),
            _guard: Box::new(knot),
        }
    },
    hanging: |ip| serve(ip, None, Answer::Nothing),
    slow_body: None,
    garbage: None,
};

fn build(check: CheckConfig, ip: IpAddr, timeout: Duration) -> Box<dyn Probe> {
    probe::build(&check, ip, timeout).expect("build probe")
}

fn http_check(tls: bool, port: u16) -> HttpCheckConfig {
    HttpCheckConfig {
        tls,
        port,
        path: "/health".to_owned(),
        method: "GET".to_owned(),
        headers: Vec::new(),
        host: HOST.to_owned(),
        expect_status: vec![(200, 399)],
        body_contains: None,
        // The battery is about the probe's behaviour, not trust; the unit tests of probe.rs cover that.
        tls_verify: false,
        ca_file: None,
        body_regex: None,
        body_sha256: None,
        max_latency: None,
        user_agent: None,
        ..HttpCheckConfig::new(false, 0, "")
    }
}

/// How a test server answers every connection.
#[derive(Clone, Copy)]
enum Answer {
    /// `200 OK` at once.
    Ok,
    /// Accepts the connection and never reads or writes.
    Nothing,
    /// `200 OK` headers at once, then the body a byte at a time over [`DRIBBLE`].
    SlowBody,
    /// Reads the request and answers with bytes that are not HTTP.
    Garbage,
}

/// Serves `answer` on `ip`, port 0, over TLS when `tls` is given. Connections run in a `JoinSet` owned
/// by the accept task, so aborting it (dropping the guard) closes them all.
fn serve(ip: IpAddr, tls: Option<tokio_rustls::TlsAcceptor>, answer: Answer) -> Running {
    let std_listener = std::net::TcpListener::bind((ip, 0)).expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let port = std_listener.local_addr().expect("local_addr").port();
    let listener = TcpListener::from_std(std_listener).expect("tokio listener");
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            connections.spawn(async move {
                match tls {
                    None => respond(tcp, answer).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            respond(stream, answer).await;
                        }
                    }
                }
            });
        }
    });
    Running {
        port,
        _guard: Box::new(AbortOnDrop(task)),
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn respond(mut s: impl AsyncRead + AsyncWrite + Unpin, answer: Answer) {
    if let Answer::Nothing = answer {
        // Hold the connection open until the server is dropped.
        std::future::pending::<()>().await;
    }
    if support::read_head(&mut s).await.is_none() {
        return;
    }
    let body = b"healthy";
    let _ = match answer {
        Answer::Nothing => unreachable!("handled above"),
        Answer::Ok => {
            let ok = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nhealthy";
            s.write_all(ok.as_bytes()).await
        }
        Answer::Garbage => {
            s.write_all(b"\x00\x01SSH-2.0-garbage\xff\xfe\r\n\r\n")
                .await
        }
        Answer::SlowBody => {
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.flush().await;
            for byte in body {
                tokio::time::sleep(DRIBBLE / body.len() as u32).await;
                let _ = s.write_all(&[*byte]).await;
                let _ = s.flush().await;
            }
            Ok(())
        }
    };
    let _ = s.shutdown().await;
}

/// A TLS acceptor with a self-signed certificate for [`HOST`].
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    probe::ensure_crypto_provider();
    let cert = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
        .expect("private key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A listener whose accept queue is full, so that the kernel drops further SYNs and a connect hangs
/// (on loopback nothing else makes a TCP connect hang without root). `listen(0)` leaves room for one
/// connection; this fills the queue with connections nobody accepts until a connect does not finish.
fn full_backlog(ip: IpAddr) -> Running {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(ip, 0)).expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("local_addr");
    let mut queued = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => queued.push(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Running {
                    port: addr.port(),
                    _guard: Box::new((listener, queued)),
                };
            }
            Err(e) => panic!("filling the accept queue of {addr}: {e}"),
        }
    }
    panic!("the accept queue of {addr} did not fill up after 16 connections");
}
