//! The HTTP(S) probe against one-shot servers on loopback.

use super::*;
use crate::observe::check::CheckConfig;
use crate::observe::probe::build;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A one-shot HTTP server on loopback answering `response` and returning the request it saw.
async fn serve_once(response: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut req = Vec::new();
        while !contains(&req, b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        s.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    (port, task)
}

/// Probes 127.0.0.1 once with an HTTP(S) check.
async fn probe_http(check: HttpCheckConfig, timeout: Duration) -> ProbeResult {
    build(
        &CheckConfig::Http(check),
        "127.0.0.1".parse().unwrap(),
        timeout,
    )
    .unwrap()
    .probe()
    .await
}

fn http_check(port: u16) -> HttpCheckConfig {
    HttpCheckConfig {
        tls: false,
        port,
        path: "/health?x=1".to_owned(),
        method: "GET".to_owned(),
        headers: vec![("X-Probe".to_owned(), "yes".to_owned())],
        host: "www.example.test".to_owned(),
        expect_status: vec![(200, 399)],
        body_contains: None,
        tls_verify: true,
        ca_file: None,
        body_regex: None,
        body_sha256: None,
        max_latency: None,
        user_agent: None,
        ..HttpCheckConfig::new(false, 0, "")
    }
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nhealthy";

#[tokio::test]
async fn http_sends_host_of_service_to_endpoint_ip() {
    let (port, req) = serve_once(OK).await;
    let probe = build(
        &CheckConfig::Http(http_check(port)),
        "127.0.0.1".parse().unwrap(),
        Duration::from_secs(2),
    )
    .unwrap();
    let r = probe.probe().await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "HTTP 200");
    let req = req.await.unwrap().to_ascii_lowercase();
    assert!(req.starts_with("get /health?x=1 http/1.1"), "{req}");
    assert!(
        req.contains(&format!("host: www.example.test:{port}")),
        "{req}"
    );
    assert!(req.contains("x-probe: yes"), "{req}");
}

#[tokio::test]
async fn http_status_outside_expected_fails() {
    let (port, _req) = serve_once(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = probe_http(http_check(port), Duration::from_secs(2)).await;
    assert!(!r.ok);
    assert!(r.detail.contains("503"), "{}", r.detail);
}

#[tokio::test]
async fn http_body_substring() {
    for (needle, want) in [("heal", true), ("sick", false)] {
        let (port, _req) = serve_once(OK).await;
        let mut c = http_check(port);
        c.body_contains = Some(needle.to_owned());
        let r = probe_http(c, Duration::from_secs(2)).await;
        assert_eq!(r.ok, want, "{needle}: {r:?}");
    }
}

#[tokio::test]
async fn http_refused_and_timeout() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = probe_http(http_check(port), Duration::from_secs(2)).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "connection refused");

    // Accepts but never answers: the probe must give up at its timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let r = probe_http(http_check(port), Duration::from_millis(200)).await;
    assert!(!r.ok);
    assert_eq!(r.detail, "timed out after 200ms");
    drop(silent);
}

/// A TLS server with a self-signed certificate for `www.example.test`; returns the SNI it saw.
async fn tls_once() -> (u16, tokio::task::JoinHandle<Option<String>>) {
    ensure_crypto_provider();
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.test".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.ok()?;
        let sni = tls.get_ref().1.server_name().map(str::to_owned);
        let mut buf = vec![0u8; 4096];
        let _ = tls.read(&mut buf).await;
        let _ = tls.write_all(OK.as_bytes()).await;
        let _ = tls.shutdown().await;
        sni
    });
    (port, task)
}

#[tokio::test]
async fn https_sends_service_name_as_sni_and_verifies_by_default() {
    let mut c = http_check(0);
    c.tls = true;
    // tls_verify = false: the self-signed certificate is accepted, SNI is the service name.
    let (port, sni) = tls_once().await;
    c.port = port;
    c.tls_verify = false;
    let r = probe_http(c.clone(), Duration::from_secs(2)).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(sni.await.unwrap().as_deref(), Some("www.example.test"));
    // Default tls_verify = true: an untrusted certificate fails the check.
    let (port, _sni) = tls_once().await;
    c.port = port;
    c.tls_verify = true;
    let r = probe_http(c, Duration::from_secs(2)).await;
    assert!(!r.ok, "{r:?}");
    assert!(
        r.detail.to_ascii_lowercase().contains("certificate"),
        "{}",
        r.detail
    );
}

#[test]
fn expiry_warning_only_within_the_window_and_for_expired_certificates() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["www.example.test".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let der = params.self_signed(&key).unwrap().der().to_vec();
    let at = |y: u64| std::time::UNIX_EPOCH + Duration::from_secs(y);
    // 2030-01-01T00:00:00Z is 1893456000.
    let week = Duration::from_secs(7 * 86_400);
    let w = expiry_warning(&der, week, at(1_893_456_000 - 86_400)).unwrap();
    assert!(
        w.starts_with("certificate expires in 1day (")
            && w.ends_with("within cert_expiry_warning 7days"),
        "{w}"
    );
    assert_eq!(
        expiry_warning(&der, week, at(1_893_456_000 - 8 * 86_400)),
        None
    );
    let w = expiry_warning(&der, week, at(1_893_456_000 + 60)).unwrap();
    assert!(w.starts_with("certificate expired on "), "{w}");
    assert_eq!(expiry_warning(b"not a certificate", week, at(0)), None);
}

#[tokio::test]
async fn plain_http_without_redirects_takes_the_lean_exchange() {
    let (port, seen) = serve_once(OK).await;
    let check = http_check(port);
    let p = HttpProbe::new(&check, "127.0.0.1".parse().unwrap(), Duration::from_secs(2)).unwrap();
    assert!(p.is_lean(), "plain http, no redirects: hyper directly");
    let r = p.probe().await;
    assert!(r.ok && r.detail == "HTTP 200", "{r:?}");
    // The same request line and headers reqwest sent: Host with the port, User-Agent, Accept.
    let req = seen.await.unwrap().to_ascii_lowercase();
    assert!(req.starts_with("get /health?x=1 http/1.1\r\n"), "{req}");
    for line in [
        &format!("host: www.example.test:{port}\r\n"),
        "x-probe: yes\r\n",
        "accept: */*\r\n",
        "user-agent: rrguard/",
    ] {
        assert!(req.contains(line), "{line:?} missing in {req}");
    }
    // https and redirects keep the shared reqwest client.
    let redirects = HttpCheckConfig {
        follow_redirects: 1,
        ..check.clone()
    };
    let p = HttpProbe::new(
        &redirects,
        "127.0.0.1".parse().unwrap(),
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(!p.is_lean());
    let tls = HttpCheckConfig { tls: true, ..check };
    let p = HttpProbe::new(&tls, "127.0.0.1".parse().unwrap(), Duration::from_secs(2)).unwrap();
    assert!(!p.is_lean());
}

/// After the answer the lean exchange closes with a reset, leaving no `TIME_WAIT` socket: the
/// server's next read fails with "connection reset" instead of seeing end-of-stream.
#[tokio::test]
async fn the_lean_exchange_closes_with_a_reset() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut req = Vec::new();
        while !contains(&req, b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "closed before the request");
            req.extend_from_slice(&buf[..n]);
        }
        // A keep-alive answer: the server waits for a next request.
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
        s.read(&mut buf).await.map_err(|e| e.kind())
    });
    let r = probe_http(http_check(port), Duration::from_secs(2)).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        server.await.unwrap(),
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

/// A server on loopback that answers every request on every connection with `response`, counting
/// connections; after `close_after` answers on a connection it closes it.
async fn serve_counting(
    response: &'static str,
    close_after: usize,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut req = Vec::new();
                let mut answered = 0;
                while answered < close_after {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    while let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        req.drain(..end + 4);
                        if s.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                        answered += 1;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    (port, accepted)
}

fn keep_alive_probe(port: u16) -> HttpProbe {
    let check = HttpCheckConfig {
        keep_alive: true,
        ..http_check(port)
    };
    HttpProbe::new(&check, "127.0.0.1".parse().unwrap(), Duration::from_secs(2)).unwrap()
}

const KEEP: &str = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nhealthy";
const CHUNKED: &str =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhea\r\n4\r\nlthy\r\n0\r\n\r\n";

#[tokio::test]
async fn keep_alive_sends_the_next_probe_on_the_same_connection() {
    use std::sync::atomic::Ordering;
    for answer in [KEEP, CHUNKED] {
        let (port, accepted) = serve_counting(answer, usize::MAX).await;
        let p = keep_alive_probe(port);
        for _ in 0..3 {
            let r = p.probe().await;
            assert!(r.ok && r.detail == "HTTP 200", "{r:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "{answer:?}");
        // Without keep_alive: a connection per probe.
        let (port, accepted) = serve_counting(answer, usize::MAX).await;
        let p = HttpProbe::new(
            &http_check(port),
            "127.0.0.1".parse().unwrap(),
            Duration::from_secs(2),
        )
        .unwrap();
        for _ in 0..3 {
            assert!(p.probe().await.ok);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}

#[tokio::test]
async fn keep_alive_replaces_a_connection_the_server_closed_and_honours_close() {
    use std::sync::atomic::Ordering;
    // The server closes each connection after one answer, without saying so: the second probe
    // finds the kept connection closed and passes on a new one.
    let (port, accepted) = serve_counting(KEEP, 1).await;
    let p = keep_alive_probe(port);
    for _ in 0..3 {
        let r = p.probe().await;
        assert!(r.ok, "{r:?}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    // An answer with `Connection: close` is never reused, nor one whose body was not read to its
    // end (a wrong status: the judge stops before the body; the rest is drained).
    let (port, accepted) = serve_counting(OK, usize::MAX).await;
    let p = keep_alive_probe(port);
    for _ in 0..2 {
        assert!(p.probe().await.ok);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    let (port, accepted) = serve_counting(
        "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy",
        usize::MAX,
    )
    .await;
    let p = keep_alive_probe(port);
    for _ in 0..2 {
        assert_eq!(p.probe().await.detail, "HTTP 503 not in expected statuses");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "drained, then reused");
}

/// A kept connection the server closes on receiving the next request (its idle timeout raced the
/// probe) is replaced within the same probe: the probe is judged by a new connection.
#[tokio::test]
async fn keep_alive_retries_once_on_a_new_connection_when_the_kept_one_fails() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        // First connection: one answer, then the next request is met with a close.
        let (mut s, _) = listener.accept().await.unwrap();
        assert!(s.read(&mut buf).await.unwrap() > 0);
        s.write_all(KEEP.as_bytes()).await.unwrap();
        assert!(s.read(&mut buf).await.unwrap() > 0);
        drop(s);
        // Second connection: answers.
        let (mut s, _) = listener.accept().await.unwrap();
        assert!(s.read(&mut buf).await.unwrap() > 0);
        s.write_all(KEEP.as_bytes()).await.unwrap();
        let _ = s.read(&mut buf).await;
    });
    let p = keep_alive_probe(port);
    let first = p.probe().await;
    assert!(first.ok, "{first:?}");
    let second = p.probe().await;
    assert!(second.ok, "{second:?}");
    drop(p);
    server.await.unwrap();
}
