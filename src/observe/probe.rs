//! Probes: one check of one endpoint, with its latency.
//!
//! A [`Probe`] is built per endpoint (so per-endpoint connection settings such as "connect to this IP
//! while sending Host/SNI of the service" are fixed once). Probes report failures as results, never as
//! errors: a probe that cannot run is a failed probe with a detail saying why. This module holds the
//! trait and what every check shares (result, timeout text, I/O error wording); the checks themselves
//! live in [`super::check`], one module each.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

use super::check::CheckConfig;

pub use super::check::http::MAX_BODY_BYTES;
pub use super::check::{HttpProbe, TcpProbe};

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

impl ProbeResult {
    /// The latency in milliseconds, rounded to the microsecond ([`ms_rounded`]).
    pub fn latency_ms(&self) -> f64 {
        ms_rounded(self.latency)
    }
}

/// `d` in milliseconds, rounded to the microsecond (3 decimals), for logs and the status document:
/// `0.89` rather than the `0.8897799999999999` that converting the nanoseconds as a float prints.
pub fn ms_rounded(d: Duration) -> f64 {
    (d.as_nanos() as f64 / 1000.0).round() / 1000.0
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
    /// The certificate verifier could not be set up (no usable root certificate). Not retryable.
    #[error("cannot set up TLS certificate verification: {0}")]
    Tls(String),
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
    check.build(ip, timeout)
}

/// The failed result of a probe cut off at `timeout`. Every timeout of a probe (the probe's own, the
/// scheduler's hard limit, `rrguard plan`) reports through this, so the detail starts the same
/// everywhere ([`crate::observe::lag::time_bound`] relies on it); a check may append what it saw
/// before the timeout (`tcp`: the bytes that did not match `expect`; `dns`: a reply it ignored).
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

/// Makes a probe's TCP connection close with a reset (`SO_LINGER` 0: an abortive close, as
/// HAProxy's health checks do) instead of the FIN handshake, once nothing the probe wrote can still
/// be unsent (it got an answer, or wrote nothing).
///
/// A gracefully closed connection leaves the closing side a `TIME_WAIT` socket for 60 s (Linux).
/// At 10,000 probes/s that is 600,000 sockets, beyond the kernel's default 131,072 slots
/// (`net.ipv4.tcp_max_tw_buckets`) after 13 s, and the handshake adds three segments per probe,
/// processed by both ends. The endpoint sees a reset where it would have seen end-of-stream; its
/// logs may say "connection reset by peer". Failing to set the option only costs the `TIME_WAIT`.
pub fn close_with_reset(socket: impl std::os::fd::AsFd) {
    let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
}

/// Short wording of a socket error, shared by every check.
pub(crate) fn io_detail(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_ms_prints_at_most_three_decimals() {
        let result = |nanos: u64| ProbeResult {
            ok: true,
            latency: Duration::from_nanos(nanos),
            detail: "HTTP 200".to_owned(),
        };
        // 889,780 ns: as_secs_f64() * 1000 prints 0.8897799999999999.
        assert_eq!(result(889_780).latency_ms().to_string(), "0.89");
        assert_eq!(format!("{:?}", result(889_780).latency_ms()), "0.89");
        assert_eq!(result(1_234_567_890).latency_ms().to_string(), "1234.568");
        assert_eq!(result(500_000_000).latency_ms().to_string(), "500");
        assert_eq!(result(999).latency_ms().to_string(), "0.001");
        assert_eq!(result(499).latency_ms().to_string(), "0");
    }
}
