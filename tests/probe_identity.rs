//! What an http(s) probe presents and trusts: the `Host` header it sends for an IP-literal `host`, the
//! name it checks the server certificate against, and `ca_file`. Real HTTP(S) servers on 127.0.0.x and
//! ::1, port 0, that record the Host header and SNI they saw; certificates from a throw-away test CA.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rrguard::config::{CheckConfig, HttpCheckConfig};
use rrguard::observe::check::http::{CaBundle, host_header};
use rrguard::observe::probe::{self, ProbeResult};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

const TIMEOUT: Duration = Duration::from_secs(3);

/// What a test server saw of each request: SNI (TLS only) and the Host header.
#[derive(Debug, Clone, Default, PartialEq)]
struct Seen {
    sni: Option<String>,
    host: Option<String>,
}

/// An HTTP(S) server on `ip`, port 0, answering `200 OK` to every request; aborted when dropped.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(ip: IpAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let (tls, log) = (tls.clone(), log.clone());
                connections.spawn(async move {
                    let Some(acceptor) = tls else {
                        return answer(tcp, None, &log).await;
                    };
                    // A handshake the client rejects ends here.
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let sni = stream.get_ref().1.server_name().map(str::to_owned);
                        answer(stream, sni, &log).await;
                    }
                });
            }
        });
        Server { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    mut s: impl AsyncRead + AsyncWrite + Unpin,
    sni: Option<String>,
    log: &Mutex<Vec<Seen>>,
) {
    let Some(head) = support::read_head(&mut s).await else {
        return;
    };
    let head = String::from_utf8_lossy(&head).into_owned();
    let host = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("host").then(|| v.trim().to_owned())
    });
    log.lock().unwrap().push(Seen { sni, host });
    let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    let _ = s.write_all(ok.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// A test CA and its certificate as a PEM file (kept until dropped).
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: tempfile::NamedTempFile,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rrguard test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let mut pem = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut pem, issuer.pem().as_bytes()).unwrap();
        Ca { issuer, pem }
    }

    fn bundle(&self) -> CaBundle {
        CaBundle::load(self.pem.path()).unwrap()
    }

    /// A TLS acceptor presenting a certificate for `names` (DNS names or IP addresses) signed by the CA.
    fn acceptor(&self, names: &[&str]) -> tokio_rustls::TlsAcceptor {
        probe::ensure_crypto_provider();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

fn check(tls: bool, host: &str, port: u16, ca_file: Option<CaBundle>) -> HttpCheckConfig {
    HttpCheckConfig {
        tls,
        port,
        path: "/health".to_owned(),
        method: "GET".to_owned(),
        headers: Vec::new(),
        host: host.to_owned(),
        expect_status: vec![(200, 399)],
        body_contains: None,
        tls_verify: true,
        ca_file,
        body_regex: None,
        body_sha256: None,
        max_latency: None,
        user_agent: None,
        ..HttpCheckConfig::new(false, 0, "")
    }
}

async fn probe(check: HttpCheckConfig, endpoint: IpAddr) -> ProbeResult {
    probe::build(&CheckConfig::Http(check), endpoint, TIMEOUT)
        .expect("build probe")
        .probe()
        .await
}

fn assert_certificate_rejected(r: &ProbeResult) {
    assert!(!r.ok, "an unverifiable certificate was accepted: {r:?}");
    assert!(
        r.detail.to_ascii_lowercase().contains("certificate"),
        "{}",
        r.detail
    );
}

#[test]
fn host_header_brackets_ipv6_and_drops_only_the_default_port() {
    assert_eq!(host_header("::1", 8080, false), "[::1]:8080");
    assert_eq!(host_header("::1", 80, false), "[::1]");
    assert_eq!(host_header("2001:db8::1", 443, true), "[2001:db8::1]");
    assert_eq!(host_header("127.0.0.2", 8080, false), "127.0.0.2:8080");
    assert_eq!(host_header("127.0.0.2", 443, true), "127.0.0.2");
    assert_eq!(host_header("127.0.0.2", 80, true), "127.0.0.2:80");
    assert_eq!(
        host_header("www.example.test", 8443, true),
        "www.example.test:8443"
    );
}

#[tokio::test]
async fn ipv6_literal_host_is_sent_in_brackets_with_port() {
    let ip: IpAddr = "::1".parse().unwrap();
    let server = Server::start(ip, None).await;
    let port = server.addr.port();
    let r = probe(check(false, "::1", port, None), ip).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(server.seen()[0].host, Some(format!("[::1]:{port}")));
}

#[tokio::test]
async fn ipv4_literal_host_is_sent_with_port() {
    let ip: IpAddr = "127.0.0.2".parse().unwrap();
    let server = Server::start(ip, None).await;
    let port = server.addr.port();
    let r = probe(check(false, "127.0.0.2", port, None), ip).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(server.seen()[0].host, Some(format!("127.0.0.2:{port}")));
}

/// The endpoint (127.0.0.6) presents a certificate for 127.0.0.5 only: it passes when `host` is
/// 127.0.0.5, whatever address the connection went to, and fails for any other `host`.
#[tokio::test]
async fn https_ip_host_is_verified_against_host_not_endpoint() {
    let ca = Ca::new();
    let endpoint: IpAddr = "127.0.0.6".parse().unwrap();
    let server = Server::start(endpoint, Some(ca.acceptor(&["127.0.0.5"]))).await;
    let port = server.addr.port();

    let r = probe(check(true, "127.0.0.5", port, Some(ca.bundle())), endpoint).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        server.seen(),
        vec![Seen {
            // No SNI for an IP address (RFC 6066 §3).
            sni: None,
            host: Some(format!("127.0.0.5:{port}")),
        }]
    );

    let r = probe(check(true, "127.0.0.7", port, Some(ca.bundle())), endpoint).await;
    assert_certificate_rejected(&r);
}

/// A certificate for the service name from a private CA: trusted with `ca_file`, rejected by the
/// default (system) roots.
#[tokio::test]
async fn https_ca_file_is_trusted_instead_of_system_roots() {
    let ca = Ca::new();
    let endpoint: IpAddr = "127.0.0.8".parse().unwrap();
    let server = Server::start(endpoint, Some(ca.acceptor(&["www.example.test"]))).await;
    let port = server.addr.port();

    let r = probe(
        check(true, "www.example.test", port, Some(ca.bundle())),
        endpoint,
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        server.seen(),
        vec![Seen {
            sni: Some("www.example.test".to_owned()),
            host: Some(format!("www.example.test:{port}")),
        }]
    );

    let r = probe(check(true, "www.example.test", port, None), endpoint).await;
    assert_certificate_rejected(&r);

    // The right CA but a certificate for another name still fails.
    let r = probe(
        check(true, "api.example.test", port, Some(ca.bundle())),
        endpoint,
    )
    .await;
    assert_certificate_rejected(&r);
}

/// A `ca_file` of another CA: the endpoint's certificate is not trusted, even though the system
/// roots are not involved.
#[tokio::test]
async fn https_ca_file_of_another_ca_fails() {
    let (ca, other) = (Ca::new(), Ca::new());
    let endpoint: IpAddr = "127.0.0.9".parse().unwrap();
    let server = Server::start(endpoint, Some(ca.acceptor(&["127.0.0.9"]))).await;
    let port = server.addr.port();
    let r = probe(
        check(true, "127.0.0.9", port, Some(other.bundle())),
        endpoint,
    )
    .await;
    assert_certificate_rejected(&r);
    let r = probe(check(true, "127.0.0.9", port, Some(ca.bundle())), endpoint).await;
    assert!(r.ok, "{r:?}");
}

#[test]
fn ca_bundle_rejects_files_without_certificates() {
    let empty = tempfile::NamedTempFile::new().unwrap();
    let e = CaBundle::load(empty.path()).unwrap_err();
    assert!(e.contains("no PEM certificate"), "{e}");
    let e = CaBundle::load(std::path::Path::new("/nonexistent/ca.pem")).unwrap_err();
    assert!(e.contains("cannot read CA file /nonexistent/ca.pem"), "{e}");
}

/// `ca_file` in a configuration file, relative to the file's directory, ends up in the check.
#[test]
fn ca_file_is_read_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    std::fs::copy(ca.pem.path(), dir.path().join("ca.pem")).unwrap();
    let text = r#"
[[writer]]
name = "primary"
type = "rfc2136"
server = "127.0.0.1:5300"
tsig = { name = "k", algorithm = "hmac-sha256", secret = "c2VjcmV0" }

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "primary"
endpoints = ["127.0.0.2"]
[service.check]
type = "https"
ca_file = "ca.pem"
"#;
    let config = rrguard::config::parse(&dir.path().join("rrguard.toml"), text).unwrap();
    let CheckConfig::Http(h) = &config.services[0].check else {
        panic!("not an http check: {:?}", config.services[0].check);
    };
    let bundle = h.ca_file.as_ref().expect("ca_file");
    assert_eq!(bundle.path(), dir.path().join("ca.pem"));
    assert_eq!(bundle.certs(), ca.bundle().certs());
    assert_eq!(bundle.certs().len(), 1);
}
