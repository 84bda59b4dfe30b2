//! Checks: how an endpoint is probed. Each check type is a plug-in module that owns its options as
//! written (the serde form), their validation (problems reported by key path, which the config turns
//! into `FILE:LINE:COL`), its validated config and the [`Probe`] built from it:
//!
//! - [`http`]: `type = "http"` and `type = "https"`.
//! - [`tcp`]: `type = "tcp"`.
//! - [`exec`]: `type = "exec"`, a command with Monitoring Plugins exit codes.
//! - [`dns`]: `type = "dns"`, a query to the endpoint as a DNS server.
//!
//! The central config (`crate::config`) only wires them in: `RawCheck` picks the plug-in by `type`,
//! and [`CheckConfig`] is the validated choice. A new check type adds a module here, a variant to both
//! enums and an arm to [`CheckConfig::build`]; the scheduler and the health machine do not change.

pub mod dns;
pub mod exec;
pub mod http;
pub mod tcp;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

pub use dns::{DnsCheckConfig, DnsProbe, RawDnsCheck};
pub use exec::{ExecCheckConfig, ExecProbe, RawExecCheck};
pub use http::{HttpCheckConfig, HttpProbe, RawHttpCheck};
pub use tcp::{RawTcpCheck, TcpCheckConfig, TcpProbe};

use super::probe::{Probe, ProbeBuildError};

/// `[service.check]`, validated.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CheckConfig {
    /// HTTP or HTTPS request.
    Http(HttpCheckConfig),
    /// TCP connect.
    Tcp(TcpCheckConfig),
    /// A command, Monitoring Plugins style.
    Exec(ExecCheckConfig),
    /// A DNS query to the endpoint.
    Dns(DnsCheckConfig),
}

impl CheckConfig {
    /// Builds the probe of endpoint `ip`, giving up after `timeout`.
    ///
    /// # Errors
    /// [`ProbeBuildError`] if the check's client cannot be built (HTTP TLS setup).
    pub fn build(&self, ip: IpAddr, timeout: Duration) -> Result<Box<dyn Probe>, ProbeBuildError> {
        Ok(match self {
            CheckConfig::Http(h) => Box::new(h.build(ip, timeout)?),
            CheckConfig::Tcp(t) => Box::new(t.build(ip, timeout)),
            CheckConfig::Exec(e) => Box::new(e.build(ip, timeout)),
            CheckConfig::Dns(d) => Box::new(d.build(ip, timeout)),
        })
    }
}

/// A regex over bytes (the `regex` crate's syntax), compiled once; equal when written the same. Used by
/// the tcp check's `expect` and the http check's `body_regex`.
#[derive(Clone)]
pub struct Pattern(regex::bytes::Regex);

impl Pattern {
    /// Compiles `pattern` (the `regex` crate's syntax, matched against bytes).
    ///
    /// # Errors
    /// What is wrong with the pattern, on one line.
    pub fn new(pattern: &str) -> Result<Self, String> {
        regex::bytes::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map(Pattern)
            .map_err(|e| {
                // A syntax error is several lines (the pattern, a caret, "error: why"): keep the why.
                let text = e.to_string();
                text.rsplit("error: ")
                    .next()
                    .unwrap_or(&text)
                    .trim()
                    .to_owned()
            })
    }

    /// Whether it matches somewhere in `bytes`.
    pub fn is_match(&self, bytes: &[u8]) -> bool {
        self.0.is_match(bytes)
    }

    /// The regex as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.as_str())
    }
}
