//! Probes: one check of one endpoint, with its latency.
//!
//! A [`Probe`] is built per endpoint (so per-endpoint connection settings such as "connect to this IP
//! while sending Host/SNI of the service" are fixed once). Probes report failures as results, never as
//! errors: a probe that cannot run is a failed probe with a detail saying why.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::config::{CheckConfig, HttpCheckConfig};

/// Largest body read: when looking for `body_contains`, or read and discarded so that the response
/// completes before the probe ends.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Did the endpoint pass?
    pub ok: bool,
    /// Time from the start of the probe until it ended: for HTTP(S) until the body was read (up to
    /// [`MAX_BODY_BYTES`]), for TCP until the connection was established; the time until the failure
    /// otherwise (the timeout itself for a timed-out probe).
    pub latency: Duration,
    /// Short human description: `HTTP 200`, `connection refused`, `timed out after 500ms`.
    pub detail: String,
}

/// One way of checking one endpoint.
#[async_trait]
pub trait Probe: Send + Sync {
    /// Runs the check once. Implementations bound their own I/O by the configured timeout; the scheduler
    /// also enforces it as a hard limit.
    async fn probe(&self) -> ProbeResult;
}

/// Why a probe could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProbeBuildError {
    /// The HTTP client could not be created (TLS setup). Not retryable.
    #[error("cannot build HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Installs the process-wide rustls crypto provider once; reqwest needs it before building a client.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed one first; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Builds the probe for `ip` from a service's check.
///
/// # Errors
/// [`ProbeBuildError`] if the HTTP client cannot be built.
pub fn build(
    check: &CheckConfig,
    ip: IpAddr,
    timeout: Duration,
) -> Result<Box<dyn Probe>, ProbeBuildError> {
    Ok(match check {
        CheckConfig::Tcp(t) => Box::new(TcpProbe {
            addr: SocketAddr::new(ip, t.port),
            timeout,
        }),
        CheckConfig::Http(h) => Box::new(HttpProbe::new(h, ip, timeout)?),
    })
}

/// TCP connect check.
pub struct TcpProbe {
    addr: SocketAddr,
    timeout: Duration,
}

#[async_trait]
impl Probe for TcpProbe {
    async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        let outcome =
            tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(self.addr)).await;
        let latency = start.elapsed();
        match outcome {
            Ok(Ok(_stream)) => ProbeResult {
                ok: true,
                latency,
                detail: "connected".to_owned(),
            },
            Ok(Err(e)) => ProbeResult {
                ok: false,
                latency,
                detail: io_detail(&e),
            },
            Err(_) => timed_out(self.timeout),
        }
    }
}

/// The failed result of a probe cut off at `timeout`. Every timeout of a probe (the probe's own, the
/// scheduler's hard limit, `rrguard plan`) reports through this, so the detail reads the same everywhere.
pub fn timed_out(timeout: Duration) -> ProbeResult {
    ProbeResult {
        ok: false,
        latency: timeout,
        detail: timed_out_detail(timeout),
    }
}

/// `timed out after 500ms`: the detail of a probe cut off at `timeout`.
pub fn timed_out_detail(timeout: Duration) -> String {
    format!("timed out after {}", humantime::format_duration(timeout))
}

fn io_detail(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        _ => e.to_string(),
    }
}

/// HTTP(S) check: connects to the endpoint's IP, sends the configured Host header and TLS SNI.
pub struct HttpProbe {
    client: reqwest::Client,
    url: String,
    method: reqwest::Method,
    headers: reqwest::header::HeaderMap,
    expect_status: Vec<(u16, u16)>,
    body_contains: Option<String>,
    timeout: Duration,
}

impl HttpProbe {
    fn new(h: &HttpCheckConfig, ip: IpAddr, timeout: Duration) -> Result<Self, ProbeBuildError> {
        ensure_crypto_provider();
        let scheme = if h.tls { "https" } else { "http" };
        let target = SocketAddr::new(ip, h.port);
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &h.headers {
            // Validated in config; skip rather than panic if not.
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A fresh connection per probe: a pooled one could hide a dead listener.
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!(
                "rrguard/",
                env!("CARGO_PKG_VERSION"),
                " health check"
            ))
            .tls_danger_accept_invalid_certs(!h.tls_verify);
        let url = if h.host.parse::<IpAddr>().is_ok() {
            // A literal IP host cannot be re-resolved; connect to the endpoint and send the Host header.
            if let Ok(v) = reqwest::header::HeaderValue::from_str(&h.host) {
                headers.insert(reqwest::header::HOST, v);
            }
            format!("{scheme}://{target}{}", h.path)
        } else {
            // Resolve the service name to this endpoint only: Host header and SNI carry the name while
            // the connection goes to the endpoint's IP.
            builder = builder.resolve(&h.host, target);
            format!("{scheme}://{}:{}{}", h.host, h.port, h.path)
        };
        let method =
            reqwest::Method::from_bytes(h.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        Ok(HttpProbe {
            client: builder.build()?,
            url,
            method,
            headers,
            expect_status: h.expect_status.clone(),
            body_contains: h.body_contains.clone(),
            timeout,
        })
    }

    async fn run(&self) -> ProbeResult {
        let start = Instant::now();
        let failed = |detail: String| ProbeResult {
            ok: false,
            latency: start.elapsed(),
            detail,
        };
        let sent = self
            .client
            .request(self.method.clone(), &self.url)
            .headers(self.headers.clone())
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return self.failure(&e, failed),
        };
        let status = resp.status().as_u16();
        if !self
            .expect_status
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
        {
            return failed(format!("HTTP {status} not in expected statuses"));
        }
        // The body is read even when nobody looks into it: the probe (and its latency) ends when the
        // response is complete, so a server that answers its headers at once and then stalls is slow.
        let needle = self.body_contains.as_deref().map(str::as_bytes);
        let found = match read_body(&mut resp, needle).await {
            Ok(found) => found,
            Err(e) if e.is_timeout() => return timed_out(self.timeout),
            Err(e) => {
                return failed(format!(
                    "HTTP {status}, body read failed: {}",
                    reqwest_detail(&e)
                ));
            }
        };
        if let (Some(needle), false) = (&self.body_contains, found) {
            return failed(format!("HTTP {status}, body does not contain {needle:?}"));
        }
        ProbeResult {
            ok: true,
            latency: start.elapsed(),
            detail: format!("HTTP {status}"),
        }
    }

    /// The result of a request that got no response; reqwest's own timeouts read like ours.
    fn failure(&self, e: &reqwest::Error, failed: impl Fn(String) -> ProbeResult) -> ProbeResult {
        if e.is_timeout() {
            timed_out(self.timeout)
        } else {
            failed(reqwest_detail(e))
        }
    }
}

/// Reads the body until it ends, `needle` is found or [`MAX_BODY_BYTES`] have been read; returns
/// whether `needle` was found (always true without a needle).
async fn read_body(resp: &mut reqwest::Response, needle: Option<&[u8]>) -> reqwest::Result<bool> {
    let mut body = Vec::new();
    let mut read = 0;
    while let Some(chunk) = resp.chunk().await? {
        read += chunk.len();
        if let Some(needle) = needle {
            body.extend_from_slice(&chunk);
            if contains(&body, needle) {
                return Ok(true);
            }
        }
        if read >= MAX_BODY_BYTES {
            break;
        }
    }
    Ok(needle.is_none())
}

#[async_trait]
impl Probe for HttpProbe {
    async fn probe(&self) -> ProbeResult {
        match tokio::time::timeout(self.timeout, self.run()).await {
            Ok(r) => r,
            Err(_) => timed_out(self.timeout),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The innermost cause is what an operator needs ("connection refused", "certificate expired").
fn reqwest_detail(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io_detail(io);
        }
        last = s.to_string();
        source = s.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
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

    #[tokio::test]
    async fn tcp_connects_or_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let check = CheckConfig::Tcp(crate::config::TcpCheckConfig { port });
        let p = build(&check, "127.0.0.1".parse().unwrap(), Duration::from_secs(1)).unwrap();
        assert!(p.probe().await.ok);
        drop(l);
        let r = p.probe().await;
        assert!(!r.ok);
        assert_eq!(r.detail, "connection refused");
    }
}
