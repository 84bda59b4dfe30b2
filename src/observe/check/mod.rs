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
