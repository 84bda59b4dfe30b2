//! The `tcp` check: its option as written (`RawTcpCheck`), its validation, the validated
//! [`TcpCheckConfig`] and the [`TcpProbe`] built from it. It passes when a TCP connection to the
//! endpoint's port is established within the timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::Seg::Key;
use crate::config::{Errors, Seg, with};
use crate::observe::probe::{Probe, ProbeResult, io_detail, timed_out};

/// A TCP connect check, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpCheckConfig {
    /// Port on each endpoint.
    pub port: u16,
}

/// `[service.check]` options of `type = "tcp"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcpCheck {
    /// Port.
    pub port: u16,
}

impl TcpCheckConfig {
    /// Builds the probe of endpoint `ip`; it cannot fail.
    pub fn build(&self, ip: IpAddr, timeout: Duration) -> TcpProbe {
        TcpProbe::new(SocketAddr::new(ip, self.port), timeout)
    }
}

/// Validates a tcp check of service `label` at key path `cpath`; a problem goes to `errs`, and `None`
/// is returned if there was one.
pub(crate) fn validate(
    t: &RawTcpCheck,
    label: &str,
    cpath: &[Seg],
    errs: &mut Errors,
) -> Option<TcpCheckConfig> {
    if t.port == 0 {
        errs.at(
            &with(cpath, &[Key("port")]),
            format!("service {label:?}: check port must not be 0"),
        );
        return None;
    }
    Some(TcpCheckConfig { port: t.port })
}

/// TCP connect check.
pub struct TcpProbe {
    addr: SocketAddr,
    timeout: Duration,
}

impl TcpProbe {
    /// The probe of `addr`, giving up after `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        TcpProbe { addr, timeout }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::check::CheckConfig;
    use crate::observe::probe::build;
    #[tokio::test]
    async fn tcp_connects_or_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let check = CheckConfig::Tcp(TcpCheckConfig { port });
        let p = build(&check, "127.0.0.1".parse().unwrap(), Duration::from_secs(1)).unwrap();
        assert!(p.probe().await.ok);
        drop(l);
        let r = p.probe().await;
        assert!(!r.ok);
        assert_eq!(r.detail, "connection refused");
    }
}
