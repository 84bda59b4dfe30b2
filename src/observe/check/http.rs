//! The `http` and `https` checks: their options as written (`RawHttpCheck`), their validation, the
//! validated [`HttpCheckConfig`] and the [`HttpProbe`] built from it.
//!
//! The probe connects to the endpoint's IP while sending the service's Host header and TLS SNI,
//! expects a status in `expect_status`, optionally looks for `body_contains` and `body_regex` in the
//! first [`MAX_BODY_BYTES`] of the body, compares the body's SHA-256 with `body_sha256` and its MD5
//! with `body_md5` (reading up to [`MAX_HASHED_BODY_BYTES`]), fails answers slower than
//! `max_latency`, warns in the detail of a certificate expiring within `cert_expiry_warning`
//! (the probe still passes), follows up to `follow_redirects` redirects, and always reads the body
//! (up to [`MAX_BODY_BYTES`]) so that its latency covers the whole answer.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::time::Instant;

use super::Pattern;
use crate::config::Seg::{Index, Key};
use crate::config::{Errors, Seg, normalize_name, with};
use crate::observe::probe::{
    Probe, ProbeBuildError, ProbeResult, ensure_crypto_provider, io_detail, timed_out,
};

mod client;
mod lean;
#[cfg(test)]
mod tests;
mod tls;

pub use client::clients_built;
pub use tls::{CaBundle, ClientIdentity};

/// Default HTTP path probed.
pub const DEFAULT_HTTP_PATH: &str = "/";
/// Default accepted HTTP status codes, inclusive.
pub const DEFAULT_HTTP_STATUS: (u16, u16) = (200, 399);
/// Largest body read: when looking for `body_contains`, or read and discarded so that the response
/// completes before the probe ends.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest body hashed for `body_sha256`; a larger body fails the check.
pub const MAX_HASHED_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most redirects `follow_redirects` may ask for.
pub const MAX_REDIRECTS: u32 = 20;
/// The User-Agent sent unless `user_agent` is set.
pub const DEFAULT_USER_AGENT: &str =
    concat!("rrguard/", env!("CARGO_PKG_VERSION"), " health check");

/// An HTTP(S) check, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheckConfig {
    /// `https` if true.
    pub tls: bool,
    /// Port on each endpoint.
    pub port: u16,
    /// Request path with query.
    pub path: String,
    /// Request method.
    pub method: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Host header and TLS SNI; the service fqdn without trailing dot by default.
    pub host: String,
    /// Accepted status ranges, inclusive.
    pub expect_status: Vec<(u16, u16)>,
    /// The body must contain this.
    pub body_contains: Option<String>,
    /// Verify the server certificate (https).
    pub tls_verify: bool,
    /// https: trust only these certificates instead of the system's roots.
    pub ca_file: Option<CaBundle>,
    /// The first [`MAX_BODY_BYTES`] of the body must match this.
    pub body_regex: Option<Pattern>,
    /// The body's SHA-256 must be this.
    pub body_sha256: Option<[u8; 32]>,
    /// The body's MD5 must be this.
    pub body_md5: Option<[u8; 16]>,
    /// An answer slower than this fails.
    pub max_latency: Option<Duration>,
    /// User-Agent header; [`DEFAULT_USER_AGENT`] if `None`.
    pub user_agent: Option<String>,
    /// Redirects followed, on the same host and endpoint; 0 (the default): a 3xx answer is judged by
    /// `expect_status` like any other.
    pub follow_redirects: u32,
    /// https: the client certificate presented.
    pub client_identity: Option<ClientIdentity>,
    /// Local address connections are made from.
    pub source_address: Option<IpAddr>,
    /// https: a server certificate that expires within this is reported in the probe detail (the
    /// probe still passes).
    pub cert_expiry_warning: Option<Duration>,
    /// Plain http without redirects: keep the connection open after a probe and send the next
    /// probe's request on it (see [`lean`]); `false` (the default): a new connection per probe.
    pub keep_alive: bool,
}

impl HttpCheckConfig {
    /// A check with every option at its default: `GET /`, statuses 200-399, certificates verified
    /// against the system roots.
    pub fn new(tls: bool, port: u16, host: &str) -> Self {
        HttpCheckConfig {
            tls,
            port,
            path: DEFAULT_HTTP_PATH.to_owned(),
            method: "GET".to_owned(),
            headers: Vec::new(),
            host: host.trim_end_matches('.').to_owned(),
            expect_status: vec![DEFAULT_HTTP_STATUS],
            body_contains: None,
            tls_verify: true,
            ca_file: None,
            body_regex: None,
            body_sha256: None,
            body_md5: None,
            max_latency: None,
            user_agent: None,
            follow_redirects: 0,
            client_identity: None,
            source_address: None,
            cert_expiry_warning: None,
            keep_alive: false,
        }
    }

    /// What the shared client of this check depends on ([`client`]).
    fn client_key(&self) -> client::ClientKey {
        client::ClientKey {
            tls: tls::TlsKey {
                verify: self.tls_verify,
                ca: self.ca_file.clone(),
                verify_as: self.host.parse().ok(),
                identity: self.client_identity.clone(),
            },
            source_address: self.source_address,
            follow_redirects: self.follow_redirects,
        }
    }
}

/// `[service.check]` options of `type = "http"` and `type = "https"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpCheck {
    /// Port; 80 or 443 by default.
    pub port: Option<u16>,
    /// Path; `/` by default.
    pub path: Option<String>,
    /// Method; `GET` by default.
    pub method: Option<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Host header and SNI.
    pub host: Option<String>,
    /// Accepted statuses: numbers or `"200-399"` ranges.
    pub expect_status: Option<Vec<StatusSpec>>,
    /// Body must contain.
    pub body_contains: Option<String>,
    /// Verify certificates.
    pub tls_verify: Option<bool>,
    /// PEM file of the certificates to trust instead of the system's.
    pub ca_file: Option<String>,
    /// Regex the body must match.
    pub body_regex: Option<String>,
    /// Expected SHA-256 of the body, hex.
    pub body_sha256: Option<String>,
    /// A file whose SHA-256 the body's must equal.
    pub body_sha256_file: Option<String>,
    /// Slower answers fail.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub max_latency: Option<Duration>,
    /// User-Agent header.
    pub user_agent: Option<String>,
    /// Expected MD5 of the body, hex.
    pub body_md5: Option<String>,
    /// A file whose MD5 the body's must equal.
    pub body_md5_file: Option<String>,
    /// Redirects followed.
    pub follow_redirects: Option<i64>,
    /// PEM client certificate (chain).
    pub client_cert_file: Option<String>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<String>,
    /// Warn when the server certificate expires within this.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub cert_expiry_warning: Option<Duration>,
    /// Local address to connect from.
    pub source_address: Option<String>,
    /// Reuse the connection from one probe to the next (plain http, no redirects).
    pub keep_alive: Option<bool>,
}

/// One entry of `expect_status`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "WrittenStatus")]
pub enum StatusSpec {
    /// `200`.
    Code(i64),
    /// `"200-299"` or `"204"`.
    Range(String),
}

/// What an `expect_status` entry may be written as, so that a wrong scalar is quoted in the
/// message (which `check-config` then points at, inside the list).
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expect_status is a list of codes like 200 or ranges like \"200-299\""
)]
enum WrittenStatus {
    Code(i64),
    Range(String),
    Bool(bool),
    Float(f64),
}

impl TryFrom<WrittenStatus> for StatusSpec {
    type Error = String;

    fn try_from(written: WrittenStatus) -> Result<Self, String> {
        let neither = |value: String| {
            format!(
                "expect_status is a list of codes like 200 or ranges like \"200-299\": `{value}` is neither"
            )
        };
        match written {
            WrittenStatus::Code(code) => Ok(StatusSpec::Code(code)),
            WrittenStatus::Range(range) => Ok(StatusSpec::Range(range)),
            WrittenStatus::Bool(b) => Err(neither(b.to_string())),
            WrittenStatus::Float(x) => Err(neither(x.to_string())),
        }
    }
}

impl HttpCheckConfig {
    /// Builds the probe of endpoint `ip`.
    ///
    /// # Errors
    /// [`ProbeBuildError::Http`] if the HTTP client cannot be built.
    pub fn build(&self, ip: IpAddr, timeout: Duration) -> Result<HttpProbe, ProbeBuildError> {
        HttpProbe::new(self, ip, timeout)
    }
}

/// Validates an http (`tls = false`) or https check of service `label` at key path `cpath`; a relative
/// `ca_file` is read from `base_dir`. Every problem goes to `errs`, and `None` is returned if there was
/// one.
pub(crate) fn validate(
    h: &RawHttpCheck,
    tls: bool,
    label: &str,
    cpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<HttpCheckConfig> {
    let before = errs.len();
    let mut at = |key: &[Seg], message: String| {
        errs.at(&with(cpath, key), format!("service {label:?}: {message}"));
    };
    let port = h.port.unwrap_or(if tls { 443 } else { 80 });
    if port == 0 {
        at(&[Key("port")], "check port must not be 0".to_owned());
    }
    let path = h
        .path
        .clone()
        .unwrap_or_else(|| DEFAULT_HTTP_PATH.to_owned());
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        at(
            &[Key("path")],
            format!("check path {path:?} must start with '/' and hold no spaces"),
        );
    }
    let method = h
        .method
        .clone()
        .unwrap_or_else(|| "GET".to_owned())
        .to_ascii_uppercase();
    if reqwest::Method::from_bytes(method.as_bytes()).is_err() || method.is_empty() {
        at(
            &[Key("method")],
            format!("{method:?} is not an HTTP method"),
        );
    }
    let headers = headers(&h.headers, &mut at);
    let host = match &h.host {
        Some(host) => {
            if normalize_name(host).is_err() && host.parse::<IpAddr>().is_err() {
                at(&[Key("host")], format!("host {host:?} is not a DNS name"));
            }
            host.trim_end_matches('.').to_owned()
        }
        None => label.trim_end_matches('.').to_owned(),
    };
    let expect_status = expect_status(h.expect_status.as_deref(), &mut at);
    if !tls && h.tls_verify.is_some() {
        at(
            &[Key("tls_verify")],
            "tls_verify only applies to type = \"https\" checks".to_owned(),
        );
    }
    let ca_file = ca_file(h, tls, base_dir, &mut at);
    let body_regex = h.body_regex.as_ref().and_then(|re| {
        Pattern::new(re)
            .map_err(|why| {
                at(
                    &[Key("body_regex")],
                    format!("body_regex {re:?} is not a valid regex: {why}"),
                );
            })
            .ok()
    });
    let body_sha256 = body_digest(
        [
            (&h.body_sha256, "body_sha256"),
            (&h.body_sha256_file, "body_sha256_file"),
        ],
        ("a SHA-256", "sha256sum"),
        sha256,
        base_dir,
        &mut at,
    );
    let body_md5 = body_digest(
        [
            (&h.body_md5, "body_md5"),
            (&h.body_md5_file, "body_md5_file"),
        ],
        ("an MD5", "md5sum"),
        md5,
        base_dir,
        &mut at,
    );
    let follow_redirects = match h.follow_redirects {
        None => 0,
        Some(n) if (0..=i64::from(MAX_REDIRECTS)).contains(&n) => n as u32,
        Some(n) => {
            at(
                &[Key("follow_redirects")],
                format!(
                    "follow_redirects = {n} must be from 0 (none, the default) to {MAX_REDIRECTS}"
                ),
            );
            0
        }
    };
    let client_identity = client_identity(h, tls, base_dir, &mut at);
    if !tls && h.cert_expiry_warning.is_some() {
        at(
            &[Key("cert_expiry_warning")],
            "cert_expiry_warning only applies to type = \"https\" checks".to_owned(),
        );
    }
    let source_address = h.source_address.as_ref().and_then(|a| {
        match a.trim().parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => Some(ip),
            _ => {
                at(
                    &[Key("source_address")],
                    format!("source_address {a:?} is not a unicast IP address of this host, like \"192.0.2.7\" or \"2001:db8::7\""),
                );
                None
            }
        }
    });
    let keep_alive = h.keep_alive.unwrap_or(false);
    if keep_alive && (tls || follow_redirects > 0) {
        at(
            &[Key("keep_alive")],
            "keep_alive applies to type = \"http\" checks without follow_redirects; remove it, or use a plain http check".to_owned(),
        );
    }
    if let Some(ua) = &h.user_agent
        && (ua.is_empty() || reqwest::header::HeaderValue::from_str(ua).is_err())
    {
        at(
            &[Key("user_agent")],
            format!(
                "user_agent {ua:?} is not a valid header value; use printable text without line breaks"
            ),
        );
    }
    if errs.len() != before {
        return None;
    }
    Some(HttpCheckConfig {
        tls,
        port,
        path,
        method,
        headers,
        host,
        expect_status,
        body_contains: h.body_contains.clone(),
        tls_verify: h.tls_verify.unwrap_or(true),
        ca_file,
        body_regex,
        body_sha256,
        body_md5,
        max_latency: h.max_latency,
        user_agent: h.user_agent.clone(),
        follow_redirects,
        client_identity,
        source_address,
        cert_expiry_warning: h.cert_expiry_warning,
        keep_alive,
    })
}

/// An expected body digest: given as hex (`[value, _]`), or the digest of a file (`[_, file]`, read
/// from `base_dir` when relative, now); not both. `(algorithm, tool)` word the messages ("a SHA-256",
/// "sha256sum").
fn body_digest<const N: usize>(
    [(value, value_key), (file, file_key)]: [(&Option<String>, &'static str); 2],
    (algorithm, tool): (&str, &str),
    hash: fn(&[u8]) -> [u8; N],
    base_dir: &Path,
    at: &mut impl FnMut(&[Seg], String),
) -> Option<[u8; N]> {
    match (value, file) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            at(
                &[Key(file_key)],
                format!(
                    "set one of {value_key} (the digest) and {file_key} (a reference copy of the body), not both"
                ),
            );
            None
        }
        (Some(hex), None) => {
            let digest = parse_hex_digest(hex.trim());
            if digest.is_none() {
                at(
                    &[Key(value_key)],
                    format!(
                        "{value_key} {hex:?} is not {algorithm} digest; write its {} hex digits, as `{tool} FILE` prints them",
                        2 * N
                    ),
                );
            }
            digest
        }
        (None, Some(file)) => {
            let path = base_dir.join(file);
            // A body longer than the probe hashes can never match its reference.
            match crate::config::read_bounded(&path, MAX_HASHED_BODY_BYTES as u64) {
                Ok(bytes) => Some(hash(&bytes)),
                Err(e) => {
                    at(
                        &[Key(file_key)],
                        format!("cannot read {file_key} {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
    }
}

fn parse_hex_digest<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn md5(bytes: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    md5::Md5::digest(bytes).into()
}

/// `client_cert_file` and `client_key_file`, read from `base_dir` when relative: both or neither,
/// https only.
fn client_identity(
    h: &RawHttpCheck,
    tls: bool,
    base_dir: &Path,
    at: &mut impl FnMut(&[Seg], String),
) -> Option<ClientIdentity> {
    let (cert, key) = match (&h.client_cert_file, &h.client_key_file) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => {
            at(
                &[Key("client_cert_file")],
                "client_cert_file needs client_key_file, the PEM file of its private key"
                    .to_owned(),
            );
            return None;
        }
        (None, Some(_)) => {
            at(
                &[Key("client_key_file")],
                "client_key_file needs client_cert_file, the PEM file of the certificate"
                    .to_owned(),
            );
            return None;
        }
    };
    if !tls {
        at(
            &[Key("client_cert_file")],
            "client_cert_file only applies to type = \"https\" checks".to_owned(),
        );
        return None;
    }
    ClientIdentity::load(&base_dir.join(cert), &base_dir.join(key))
        .map_err(|(field, m)| at(&[Key(field)], m))
        .ok()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The first 12 hex digits of `digest`, for messages.
fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The certificates of `ca_file`, read from `base_dir` when relative; reported if the file is unusable
/// or the option makes no sense (not https, or `tls_verify = false`).
fn ca_file(
    h: &RawHttpCheck,
    tls: bool,
    base_dir: &Path,
    at: &mut impl FnMut(&[Seg], String),
) -> Option<CaBundle> {
    let file = h.ca_file.as_ref()?;
    if !tls {
        at(
            &[Key("ca_file")],
            "ca_file only applies to type = \"https\" checks".to_owned(),
        );
        return None;
    }
    if h.tls_verify == Some(false) {
        at(
            &[Key("ca_file")],
            "ca_file has no effect with tls_verify = false; remove one of them".to_owned(),
        );
        return None;
    }
    CaBundle::load(&base_dir.join(file))
        .map_err(|m| at(&[Key("ca_file")], m))
        .ok()
}

/// The `Host` header value for `host` on `port`: an IPv6 address in brackets, and the port appended
/// unless it is the scheme's default (RFC 7230 §5.4, RFC 3986 §3.2.2).
pub fn host_header(host: &str, port: u16, tls: bool) -> String {
    let name = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => host.to_owned(),
    };
    if port == if tls { 443 } else { 80 } {
        name
    } else {
        format!("{name}:{port}")
    }
}

/// The valid `headers`; each invalid one is reported.
fn headers(
    raw: &BTreeMap<String, String>,
    at: &mut impl FnMut(&[Seg], String),
) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for (k, v) in raw {
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(v).is_err()
        {
            at(
                &[Key("headers")],
                format!("header {k:?}: {v:?} is not a valid HTTP header"),
            );
        } else {
            headers.push((k.clone(), v.clone()));
        }
    }
    headers
}

/// The accepted status ranges ([`DEFAULT_HTTP_STATUS`] when not given); each invalid one is reported.
fn expect_status(
    raw: Option<&[StatusSpec]>,
    at: &mut impl FnMut(&[Seg], String),
) -> Vec<(u16, u16)> {
    let Some(list) = raw else {
        return vec![DEFAULT_HTTP_STATUS];
    };
    if list.is_empty() {
        at(
            &[Key("expect_status")],
            "expect_status must not be empty".to_owned(),
        );
    }
    let mut ranges = Vec::new();
    for (i, spec) in list.iter().enumerate() {
        match status_range(spec) {
            Ok(r) => ranges.push(r),
            Err(m) => at(&[Key("expect_status"), Index(i)], m),
        }
    }
    ranges
}

fn status_range(spec: &StatusSpec) -> Result<(u16, u16), String> {
    let code = |n: i64| -> Result<u16, String> {
        if (100..=599).contains(&n) {
            Ok(n as u16)
        } else {
            Err(format!("status {n} is not an HTTP status code (100-599)"))
        }
    };
    match spec {
        StatusSpec::Code(n) => code(*n).map(|c| (c, c)),
        StatusSpec::Range(s) => {
            let bad =
                || format!("status {s:?} must be a code like 200 or a range like \"200-299\"");
            let (lo, hi) = match s.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (s.trim(), s.trim()),
            };
            let lo = code(lo.parse().map_err(|_| bad())?)?;
            let hi = code(hi.parse().map_err(|_| bad())?)?;
            if lo > hi {
                return Err(bad());
            }
            Ok((lo, hi))
        }
    }
}

/// HTTP(S) check: connects to the endpoint's IP, sends the configured Host header and TLS SNI. Its
/// client is shared with every probe of the same client configuration (see [`client`]), and the
/// rest of what it sends and expects with every endpoint of the same check ([`Prepared`]): per
/// endpoint it holds only the address and, with `keep_alive`, the connection left open.
pub struct HttpProbe {
    endpoint: IpAddr,
    check: Arc<Prepared>,
    /// The lean exchange's endpoint side (plain `http`, no redirects), when `check.lean` is set.
    peer: Option<lean::Peer>,
}

/// What every endpoint's probe of one check (and timeout) shares: at 10,000 endpoints a copy per
/// endpoint took ~1.1 KB each (11 MB), the request's headers and URI included.
struct Prepared {
    client: Arc<reqwest::Client>,
    /// The exchange without reqwest (plain `http`, no redirects), used instead of `client` when set.
    lean: Option<lean::Lean>,
    /// The URL of every endpoint when the host is a name (the shared client resolves it to the
    /// probed endpoint); `None` when it is an address, and the URL names the endpoint instead.
    url: Option<String>,
    scheme: &'static str,
    port: u16,
    path: String,
    method: reqwest::Method,
    /// Request headers of the reqwest path (empty when `lean` is set: it carries its own).
    headers: reqwest::header::HeaderMap,
    expect_status: Vec<(u16, u16)>,
    body_contains: Option<String>,
    body_regex: Option<Pattern>,
    body_sha256: Option<[u8; 32]>,
    body_md5: Option<[u8; 16]>,
    max_latency: Option<Duration>,
    cert_expiry_warning: Option<Duration>,
    keep_alive: bool,
    /// `follow_redirects` is set: a redirect that comes back as the answer could not be followed.
    follows_redirects: bool,
    timeout: Duration,
}

/// Values shared by every probe whose key is equal, held by those probes only: a value goes when
/// its last probe does (a reload that changes the key builds a new one). Entries are few (one per
/// distinct check or client configuration) and searched most recent first: a service's endpoints
/// are built one after another and find theirs at the end.
struct WeakCache<K, V>(std::sync::Mutex<Vec<(K, std::sync::Weak<V>)>>);

impl<K, V> WeakCache<K, V> {
    const fn new() -> Self {
        WeakCache(std::sync::Mutex::new(Vec::new()))
    }

    /// The value whose key `is` accepts that probes already use, or a new one from `build`, kept
    /// under `key()`. (A predicate, so that a lookup copies no key: 10,000 endpoints look one up
    /// at start-up.)
    ///
    /// # Errors
    /// `build`'s.
    fn get_or_build<E>(
        &self,
        is: impl Fn(&K) -> bool,
        key: impl FnOnce() -> K,
        build: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let mut entries = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = entries
            .iter()
            .rev()
            .find(|(k, _)| is(k))
            .and_then(|(_, v)| v.upgrade())
        {
            return Ok(found);
        }
        let value = Arc::new(build()?);
        // Builds are rare: a good time to forget values nobody uses any more.
        entries.retain(|(_, v)| v.strong_count() > 0);
        entries.push((key(), Arc::downgrade(&value)));
        Ok(value)
    }
}

impl Prepared {
    /// The shared part of check `h` with `timeout`: the one its other endpoints already use, or
    /// a new one.
    fn shared(h: &HttpCheckConfig, timeout: Duration) -> Result<Arc<Prepared>, ProbeBuildError> {
        static PREPARED: WeakCache<(HttpCheckConfig, Duration), Prepared> = WeakCache::new();
        PREPARED.get_or_build(
            |(c, t)| *t == timeout && c == h,
            || (h.clone(), timeout),
            || Prepared::new(h, timeout),
        )
    }

    fn new(h: &HttpCheckConfig, timeout: Duration) -> Result<Self, ProbeBuildError> {
        ensure_crypto_provider();
        let scheme = if h.tls { "https" } else { "http" };
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
        let agent = h.user_agent.as_deref().unwrap_or(DEFAULT_USER_AGENT);
        if let Ok(v) = reqwest::header::HeaderValue::from_str(agent) {
            headers.insert(reqwest::header::USER_AGENT, v);
        }
        let url = if h.host.parse::<IpAddr>().is_ok() {
            // A literal IP host cannot be re-resolved: connect to the endpoint, send `host` in the
            // Host header and check the certificate against it (see `tls`).
            let value = host_header(&h.host, h.port, h.tls);
            if let Ok(v) = reqwest::header::HeaderValue::from_str(&value) {
                headers.insert(reqwest::header::HOST, v);
            }
            None
        } else {
            // The shared client resolves the service name to this endpoint only (`client`): Host
            // header and SNI carry the name while the connection goes to the endpoint's IP.
            Some(format!("{scheme}://{}:{}{}", h.host, h.port, h.path))
        };
        let method =
            reqwest::Method::from_bytes(h.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let lean = (!h.tls && h.follow_redirects == 0)
            .then(|| {
                let mut headers = headers.clone();
                // reqwest sends these itself: the lean request carries them from the start.
                if !headers.contains_key(reqwest::header::HOST) {
                    headers.insert(reqwest::header::HOST, lean::host_value(&h.host, h.port)?);
                }
                if !headers.contains_key(reqwest::header::ACCEPT) {
                    headers.insert(
                        reqwest::header::ACCEPT,
                        reqwest::header::HeaderValue::from_static("*/*"),
                    );
                }
                lean::Lean::new(h.source_address, method.clone(), &h.path, headers)
            })
            .flatten();
        // The lean exchange carries its own copy.
        let headers = if lean.is_some() {
            reqwest::header::HeaderMap::new()
        } else {
            headers
        };
        Ok(Prepared {
            client: client::shared(&h.client_key())?,
            lean,
            url,
            scheme,
            port: h.port,
            path: h.path.clone(),
            method,
            headers,
            expect_status: h.expect_status.clone(),
            body_contains: h.body_contains.clone(),
            body_regex: h.body_regex.clone(),
            body_sha256: h.body_sha256,
            body_md5: h.body_md5,
            max_latency: h.max_latency,
            cert_expiry_warning: h.cert_expiry_warning.filter(|_| h.tls),
            keep_alive: h.keep_alive,
            follows_redirects: h.follow_redirects > 0,
            timeout,
        })
    }
}

impl HttpProbe {
    /// The probe of endpoint `ip` for check `h`, giving up after `timeout`.
    ///
    /// # Errors
    /// [`ProbeBuildError`] if the shared HTTP client cannot be built (TLS setup).
    pub fn new(
        h: &HttpCheckConfig,
        ip: IpAddr,
        timeout: Duration,
    ) -> Result<Self, ProbeBuildError> {
        let check = Prepared::shared(h, timeout)?;
        let peer = check
            .lean
            .as_ref()
            .map(|_| lean::Peer::new(SocketAddr::new(ip, check.port), check.keep_alive));
        Ok(HttpProbe {
            endpoint: ip,
            check,
            peer,
        })
    }

    /// Whether this probe and `other` share their check's prepared request (same check and
    /// timeout, both alive).
    pub fn shares_check_with(&self, other: &HttpProbe) -> bool {
        Arc::ptr_eq(&self.check, &other.check)
    }

    /// Whether this probe and `other` use one HTTP client (their client configurations are equal).
    pub fn shares_client_with(&self, other: &HttpProbe) -> bool {
        Arc::ptr_eq(&self.check.client, &other.check.client)
    }

    /// Whether the probe runs on hyper directly (plain `http`, no redirects) rather than reqwest.
    #[cfg(test)]
    fn is_lean(&self) -> bool {
        self.peer.is_some()
    }

    async fn run(&self) -> ProbeResult {
        let start = Instant::now();
        let failed = |detail: String| ProbeResult {
            ok: false,
            latency: start.elapsed(),
            detail,
        };
        let check = &*self.check;
        if let (Some(lean), Some(peer)) = (&check.lean, &self.peer) {
            let judged = lean
                .exchange(peer, |mut resp| async move {
                    let status = resp.status().as_u16();
                    let judged = check.judge(start, status, None, resp.body_mut()).await;
                    (judged, resp)
                })
                .await;
            return judged.unwrap_or_else(|e| failed(error_detail(&e)));
        }
        let url = match &check.url {
            Some(url) => std::borrow::Cow::Borrowed(url.as_str()),
            None => std::borrow::Cow::Owned(format!(
                "{}://{}{}",
                check.scheme,
                SocketAddr::new(self.endpoint, check.port),
                check.path
            )),
        };
        let sent = check
            .client
            .request(check.method.clone(), &*url)
            .headers(check.headers.clone())
            .timeout(check.timeout)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return check.failure(&e, failed),
        };
        let status = resp.status().as_u16();
        // The client follows these when it can; one returned as the answer had no Location it
        // could follow, and passing it as a 3xx would judge a page the check never reached.
        if check.follows_redirects && matches!(status, 301 | 302 | 303 | 307 | 308) {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
            return failed(match location {
                None => format!("HTTP {status} without a Location to follow"),
                Some(l) => format!("HTTP {status} to {l:?}, not a URL that can be followed"),
            });
        }
        // Read before the body: the certificate of the connection the answer came on.
        let expiry = check.cert_expiry_warning.and_then(|within| {
            let der = resp
                .extensions()
                .get::<reqwest::tls::TlsInfo>()?
                .peer_certificate()?;
            expiry_warning(der, within, std::time::SystemTime::now())
        });
        check.judge(start, status, expiry, &mut resp).await
    }
}

impl Prepared {
    /// Judges an answer with `status` that arrived on a probe started at `start`: its status, then
    /// its body read from `body`; `expiry` is the certificate warning to add to a passing result.
    async fn judge(
        &self,
        start: Instant,
        status: u16,
        expiry: Option<String>,
        body: &mut impl Chunks,
    ) -> ProbeResult {
        let failed = |detail: String| ProbeResult {
            ok: false,
            latency: start.elapsed(),
            detail,
        };
        if !self
            .expect_status
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
        {
            return failed(format!("HTTP {status} not in expected statuses"));
        }
        // The body is read even when nobody looks into it: the probe (and its latency) ends when the
        // response is complete, so a server that answers its headers at once and then stalls is slow.
        let keep = self.body_contains.is_some() || self.body_regex.is_some();
        let hashes = Hashes {
            sha256: self.body_sha256.is_some(),
            md5: self.body_md5.is_some(),
        };
        let body = match read_body(body, keep, hashes).await {
            Ok(body) => body,
            Err(e) if is_timeout(&e) => return timed_out(self.timeout),
            Err(e) => {
                return failed(format!(
                    "HTTP {status}, body read failed: {}",
                    error_detail(&e)
                ));
            }
        };
        if let Some(needle) = &self.body_contains
            && !contains(&body.kept, needle.as_bytes())
        {
            return failed(format!("HTTP {status}, body does not contain {needle:?}"));
        }
        if let Some(re) = &self.body_regex
            && !re.is_match(&body.kept)
        {
            return failed(format!(
                "HTTP {status}, body does not match /{}/",
                re.as_str()
            ));
        }
        if body.too_large_to_hash {
            return failed(format!(
                "HTTP {status}, body larger than {} MiB: cannot check its digest",
                MAX_HASHED_BODY_BYTES >> 20
            ));
        }
        if let (Some(expected), Some(got)) = (&self.body_sha256, &body.sha256)
            && got != expected
        {
            return failed(format!(
                "HTTP {status}, body sha256 {}… is not the expected {}…",
                short_hex(got),
                short_hex(expected)
            ));
        }
        if let (Some(expected), Some(got)) = (&self.body_md5, &body.md5)
            && got != expected
        {
            return failed(format!(
                "HTTP {status}, body md5 {}… is not the expected {}…",
                short_hex(got),
                short_hex(expected)
            ));
        }
        let latency = start.elapsed();
        if let Some(max) = self.max_latency
            && latency > max
        {
            return ProbeResult {
                ok: false,
                latency,
                detail: format!(
                    "HTTP {status} in {}, slower than max_latency {}",
                    humantime::format_duration(Duration::from_millis(latency.as_millis() as u64)),
                    humantime::format_duration(max)
                ),
            };
        }
        ProbeResult {
            ok: true,
            latency,
            detail: match expiry {
                Some(warning) => format!("HTTP {status}, warning: {warning}"),
                None => format!("HTTP {status}"),
            },
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

/// The digests to compute of a body.
#[derive(Clone, Copy)]
struct Hashes {
    sha256: bool,
    md5: bool,
}

/// What was read of a body.
struct Body {
    /// Its first [`MAX_BODY_BYTES`], if asked to keep them.
    kept: Vec<u8>,
    /// Its SHA-256, if asked for and it ended within [`MAX_HASHED_BODY_BYTES`].
    sha256: Option<[u8; 32]>,
    /// Its MD5, likewise.
    md5: Option<[u8; 16]>,
    /// A digest was asked for but the body went past [`MAX_HASHED_BODY_BYTES`].
    too_large_to_hash: bool,
}

/// Reads the body until it ends or [`MAX_BODY_BYTES`] have been read ([`MAX_HASHED_BODY_BYTES`] when
/// hashing), keeping its start if `keep`.
async fn read_body<C: Chunks>(body: &mut C, keep: bool, hashes: Hashes) -> Result<Body, C::Error> {
    use md5::Digest as _;
    let mut kept = Vec::new();
    let mut read = 0;
    let mut sha256 = hashes
        .sha256
        .then(|| ring::digest::Context::new(&ring::digest::SHA256));
    let mut md5 = hashes.md5.then(md5::Md5::new);
    let hashing = hashes.sha256 || hashes.md5;
    while let Some(chunk) = body.next_chunk().await? {
        read += chunk.len();
        if keep && kept.len() < MAX_BODY_BYTES {
            let room = MAX_BODY_BYTES - kept.len();
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if hashing && read > MAX_HASHED_BODY_BYTES {
            return Ok(Body {
                kept,
                sha256: None,
                md5: None,
                too_large_to_hash: true,
            });
        }
        if let Some(h) = &mut sha256 {
            h.update(&chunk);
        }
        if let Some(h) = &mut md5 {
            h.update(&chunk);
        }
        if !hashing && read >= MAX_BODY_BYTES {
            break;
        }
    }
    Ok(Body {
        kept,
        sha256: sha256.map(|h| {
            let mut out = [0u8; 32];
            out.copy_from_slice(h.finish().as_ref());
            out
        }),
        md5: md5.map(|h| h.finalize().into()),
        too_large_to_hash: false,
    })
}

/// The warning for a server certificate (`der`) that expires within `within` of `now`, or has expired
/// (possible with `tls_verify = false`); `None` if it does not, or cannot be parsed.
fn expiry_warning(der: &[u8], within: Duration, now: std::time::SystemTime) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = cert.validity().not_after;
    let now = now.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    let left = not_after.timestamp() - now;
    let when = not_after
        .to_rfc2822()
        .unwrap_or_else(|_| not_after.timestamp().to_string());
    if left < 0 {
        Some(format!("certificate expired on {when}"))
    } else if (left as u64) < within.as_secs() {
        // Whole minutes (rounded up) are enough to read.
        let left = Duration::from_secs((left as u64).div_ceil(60) * 60);
        Some(format!(
            "certificate expires in {} ({when}), within cert_expiry_warning {}",
            humantime::format_duration(left),
            humantime::format_duration(within)
        ))
    } else {
        None
    }
}

#[async_trait]
impl Probe for HttpProbe {
    async fn probe(&self) -> ProbeResult {
        let run = client::with_endpoint(self.endpoint, self.run());
        match tokio::time::timeout(self.check.timeout, run).await {
            Ok(r) => r,
            Err(_) => timed_out(self.check.timeout),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A response body read one chunk at a time: reqwest's (shared client) or hyper's (lean exchange).
trait Chunks: Send {
    /// The body's read error.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The next chunk; `None` at the end of the body.
    fn next_chunk(
        &mut self,
    ) -> impl Future<Output = Result<Option<bytes::Bytes>, Self::Error>> + Send;
}

impl Chunks for reqwest::Response {
    type Error = reqwest::Error;

    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, reqwest::Error> {
        self.chunk().await
    }
}

/// Whether `e` is reqwest's own timeout (the lean exchange has none: the probe's timeout cuts it).
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_timeout)
}

/// The innermost cause is what an operator needs ("connection refused", "certificate expired").
fn reqwest_detail(e: &reqwest::Error) -> String {
    error_detail(e)
}

/// [`reqwest_detail`] of any error: its innermost I/O error's wording, or its innermost cause.
fn error_detail(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut detail = e.to_string();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            detail = io_detail(io);
            break;
        }
        detail = s.to_string();
        source = s.source();
    }
    // rustls words this one as its variant name only.
    if detail.contains("CaUsedAsEndEntity") {
        detail.push_str(
            ": the server presents a CA certificate (basic constraints CA:TRUE) as its own; it must serve a certificate issued by that CA",
        );
    }
    detail
}
