//! The rustls configuration of the shared HTTP clients: certificate verification (system roots read
//! once per process, a `ca_file`, an IP `host`, or none) and the client certificate.
//!
//! Without a preconfigured TLS setup reqwest verifies with `rustls-platform-verifier`, which on Linux trusts the system store
//! (`rustls-native-certs`: `SSL_CERT_FILE`/`SSL_CERT_DIR` when set, else the OpenSSL locations such as
//! `/etc/ssl/certs/ca-certificates.crt`) and checks the certificate against the URL's host. rrguard
//! connects to the endpoint's address, so with an IP `host` the URL's host is the endpoint, not `host`:
//! [`VerifyAs`] checks the certificate against `host` instead. A `ca_file` replaces the system store.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::{MAX_SMALL_FILE_BYTES, read_bounded};
use crate::observe::probe::ProbeBuildError;

/// The certificates of a `ca_file`, read when the configuration is loaded.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CaBundle {
    path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
}

impl CaBundle {
    /// Reads every PEM certificate of `path`.
    ///
    /// # Errors
    /// A message naming the file if it cannot be read, holds a malformed PEM block or no certificate.
    pub fn load(path: &Path) -> Result<CaBundle, String> {
        let pem = read_bounded(path, MAX_SMALL_FILE_BYTES)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("CA file {}: {}", path.display(), pem_error(&e)))?;
        if certs.is_empty() {
            return Err(format!(
                "CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        Ok(CaBundle {
            path: path.to_owned(),
            certs,
        })
    }

    /// The file the certificates came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The certificates (at least one), in file order.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certs", &self.certs.len())
            .finish()
    }
}

/// The rustls configuration of one shared client (see [`super::client`]): the server certificate
/// checked against the system roots (one verifier for the whole process, so the system store is read
/// once), against a `ca_file`'s certificates, or not at all (`tls_verify = false`); against the
/// check's `host` when it is an IP address; and the client certificate, if any.
pub(super) fn client_config(key: &TlsKey) -> Result<rustls::ClientConfig, ProbeBuildError> {
    let provider = provider();
    let tls = |e: rustls::Error| ProbeBuildError::Tls(e.to_string());
    let mut verifier: Arc<dyn ServerCertVerifier> = if !key.verify {
        Arc::new(AcceptAnyCert(provider.clone()))
    } else {
        match &key.ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in &ca.certs {
                    roots.add(cert.clone()).map_err(tls)?;
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| ProbeBuildError::Tls(e.to_string()))?
            }
            None => system_verifier(&provider)?,
        }
    };
    if key.verify
        && let Some(ip) = key.verify_as
    {
        verifier = Arc::new(VerifyAs {
            inner: verifier,
            name: ServerName::IpAddress(ip.into()),
        });
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &key.identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key()?)
            .map_err(|e| {
                ProbeBuildError::Tls(format!(
                    "client certificate {}: {e}",
                    id.cert_path.display()
                ))
            }),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The verifier over the system's roots, built once per process: building it reads the system store
/// (~110 KB and ~1.4 ms), which used to happen for every endpoint.
fn system_verifier(
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, ProbeBuildError> {
    static SYSTEM: OnceLock<Result<Arc<rustls_platform_verifier::Verifier>, String>> =
        OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map(|v| v as Arc<dyn ServerCertVerifier>)
        .map_err(ProbeBuildError::Tls)
}

/// What one client's TLS depends on; part of [`super::client::ClientKey`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct TlsKey {
    /// Verify the server certificate.
    pub verify: bool,
    /// Trust only these instead of the system's roots.
    pub ca: Option<CaBundle>,
    /// Check the certificate against this address (an IP `host`) instead of the URL's host.
    pub verify_as: Option<IpAddr>,
    /// Present this client certificate.
    pub identity: Option<ClientIdentity>,
}

/// A client certificate (`client_cert_file`) and its private key (`client_key_file`), PEM, read when
/// the configuration is loaded. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    cert_path: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key_pem: Vec<u8>,
}

impl ClientIdentity {
    /// Reads the certificate chain of `cert` (leaf first) and the private key of `key` (PKCS#8, PKCS#1
    /// or SEC1 PEM); both may be the same file.
    ///
    /// # Errors
    /// The key at fault (`client_cert_file` or `client_key_file`) and a message naming the file, if
    /// one cannot be read, holds no certificate or key, or the key is not the certificate's.
    pub fn load(cert: &Path, key: &Path) -> Result<ClientIdentity, (&'static str, String)> {
        let cert_err = |m: String| ("client_cert_file", m);
        let key_err = |m: String| ("client_key_file", m);
        let pem = read_bounded(cert, MAX_SMALL_FILE_BYTES).map_err(|e| {
            cert_err(format!(
                "cannot read client certificate {}: {e}",
                cert.display()
            ))
        })?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                cert_err(format!(
                    "client certificate {}: {}",
                    cert.display(),
                    pem_error(&e)
                ))
            })?;
        if chain.is_empty() {
            return Err(cert_err(format!(
                "client certificate {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                cert.display()
            )));
        }
        let key_pem = read_bounded(key, MAX_SMALL_FILE_BYTES)
            .map_err(|e| key_err(format!("cannot read client key {}: {e}", key.display())))?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            key_err(format!(
                "client key {} holds no usable PEM private key (-----BEGIN PRIVATE KEY-----): {}",
                key.display(),
                pem_error(&e)
            ))
        })?;
        // Checked now rather than at every probe: a key of another certificate (or of a kind the
        // TLS library cannot use) would fail every handshake.
        match rustls::sign::CertifiedKey::from_der(chain.clone(), private, &provider()) {
            Ok(_) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(key_err(format!(
                    "client key {} is not the private key of the first certificate in {}; give the key that certificate was issued for",
                    key.display(),
                    cert.display()
                )));
            }
            Err(e) => {
                return Err(key_err(format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                )));
            }
        }
        Ok(ClientIdentity {
            cert_path: cert.to_owned(),
            chain,
            key_pem,
        })
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, ProbeBuildError> {
        PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| ProbeBuildError::Tls(format!("client key: {e}")))
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_path", &self.cert_path)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// `tls_verify = false`: any certificate is accepted, but the handshake's signatures are still
/// checked (the same as reqwest's `danger_accept_invalid_certs`, which a preconfigured client cannot
/// use).
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies certificates against a fixed name instead of the one of the connection: the check's
/// `host` while the connection goes to the endpoint's address. Everything else is `inner`'s.
#[derive(Debug)]
struct VerifyAs {
    inner: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for VerifyAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _connected_to: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The process's crypto provider, or ring's if none was installed.
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// A PEM parse error in words: the library's own shows the missing marker as a list of bytes.
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    match e {
        Error::MissingSectionEnd { end_marker } => {
            let label = text(end_marker);
            let line = if label.starts_with("-----") {
                label
            } else {
                format!("-----END {label}-----")
            };
            format!("a PEM section has no end line {line:?}; the file is cut short or damaged")
        }
        Error::IllegalSectionStart { line } => {
            format!("malformed PEM section start {:?}", text(line))
        }
        other => other.to_string(),
    }
}
