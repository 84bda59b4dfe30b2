//! Certificate verification of `https` checks when reqwest's defaults do not fit: a `ca_file`, or a
//! `host` that is an IP address.
//!
//! By default reqwest verifies with `rustls-platform-verifier`, which on Linux trusts the system store
//! (`rustls-native-certs`: `SSL_CERT_FILE`/`SSL_CERT_DIR` when set, else the OpenSSL locations such as
//! `/etc/ssl/certs/ca-certificates.crt`) and checks the certificate against the URL's host. rrguard
//! connects to the endpoint's address, so with an IP `host` the URL's host is the endpoint, not `host`:
//! [`VerifyAs`] checks the certificate against `host` instead. A `ca_file` replaces the system store.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::HttpCheckConfig;
use crate::observe::probe::ProbeBuildError;

/// The certificates of a `ca_file`, read when the configuration is loaded.
#[derive(Clone, PartialEq, Eq)]
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
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
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

/// The rustls configuration of check `h`, or `None` where reqwest's own (system roots, certificate
/// checked against the URL's host, or no verification with `tls_verify = false`) is right.
pub(super) fn client_config(
    h: &HttpCheckConfig,
) -> Result<Option<rustls::ClientConfig>, ProbeBuildError> {
    let ip_host = h.host.parse::<IpAddr>().ok();
    if !h.tls || !h.tls_verify || (h.ca_file.is_none() && ip_host.is_none()) {
        return Ok(None);
    }
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let tls = |e: rustls::Error| ProbeBuildError::Tls(e.to_string());
    let mut verifier: Arc<dyn ServerCertVerifier> = match &h.ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in &ca.certs {
                roots.add(cert.clone()).map_err(tls)?;
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| ProbeBuildError::Tls(e.to_string()))?
        }
        None => Arc::new(rustls_platform_verifier::Verifier::new(provider.clone()).map_err(tls)?),
    };
    if let Some(ip) = ip_host {
        verifier = Arc::new(VerifyAs {
            inner: verifier,
            name: ServerName::IpAddress(ip.into()),
        });
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(config))
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
