//! Checks: how an endpoint is probed. Each check type is a plug-in module that owns its options as
//! written (the serde form), their validation (problems reported by key path, which the config turns
//! into `FILE:LINE:COL`), its validated config and the [`Probe`] built from it:
//!
//! - [`http`]: `type = "http"` and `type = "https"`.
//! - [`tcp`]: `type = "tcp"`.
//! - [`exec`]: `type = "exec"`, a command with Monitoring Plugins exit codes.
//! - [`dns`]: `type = "dns"`, a query to the endpoint as a DNS server.
//! - [`icmp`]: `type = "icmp"`, ICMP/ICMPv6 echo.
//! - [`multi`]: several checks of one service (`[[service.check]]`), combined by `check_mode`.
//!
//! The central config (`crate::config`) only wires them in: `RawCheck` picks the plug-in by `type`,
//! and [`CheckConfig`] is the validated choice. A new check type adds a module here, a variant to both
//! enums and an arm to [`CheckConfig::build`]; the scheduler and the health machine do not change.

pub mod dns;
pub mod exec;
pub mod http;
pub mod icmp;
pub mod multi;
pub mod tcp;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

pub use dns::{DnsCheckConfig, DnsProbe, RawDnsCheck};
pub use exec::{ExecCheckConfig, ExecProbe, RawExecCheck};
pub use http::{HttpCheckConfig, HttpProbe, RawHttpCheck};
pub use icmp::{IcmpCheckConfig, IcmpProbe, RawIcmpCheck};
pub use multi::{CheckMode, MultiCheckConfig, MultiProbe};
pub use tcp::{RawTcpCheck, TcpCheckConfig, TcpProbe};

use super::probe::{Probe, ProbeBuildError};

/// `[service.check]`, validated.
// One per service (and per check of several), never in a hot path: boxing the http variant would only
// make every match and construction noisier.
#[allow(clippy::large_enum_variant)]
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
    /// ICMP/ICMPv6 echo.
    Icmp(IcmpCheckConfig),
    /// Several of the above (`[[service.check]]`), combined by `check_mode`.
    Several(MultiCheckConfig),
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
            CheckConfig::Icmp(i) => Box::new(i.build(ip, timeout)),
            CheckConfig::Several(m) => Box::new(m.build(ip, timeout)?),
        })
    }

    /// The check's `type` as written (`"http"` for https too); several checks are their types joined
    /// by `+` in file order (`"http+tcp"`). This is the status document's `check` field and the
    /// metrics' `check` label.
    pub fn type_name(&self) -> String {
        match self {
            CheckConfig::Http(_) => "http".to_owned(),
            CheckConfig::Tcp(_) => "tcp".to_owned(),
            CheckConfig::Exec(_) => "exec".to_owned(),
            CheckConfig::Dns(_) => "dns".to_owned(),
            CheckConfig::Icmp(_) => "icmp".to_owned(),
            CheckConfig::Several(m) => m
                .checks
                .iter()
                .map(CheckConfig::type_name)
                .collect::<Vec<_>>()
                .join("+"),
        }
    }

    /// The single checks: itself, or each of several.
    pub fn each(&self) -> &[CheckConfig] {
        match self {
            CheckConfig::Several(m) => &m.checks,
            one => std::slice::from_ref(one),
        }
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
