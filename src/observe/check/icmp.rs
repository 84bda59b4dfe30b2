//! The `icmp` check: ICMP (IPv4) or ICMPv6 echo to the endpoint, `count` echoes per probe sent
//! `echo_interval` apart (like ping, each echo waits for its reply until the probe's timeout while
//! the next ones go out), passing when at most `max_loss` of them went unanswered. The probe's
//! latency is the mean round-trip time of the replies; the detail gives the loss and min/avg/max RTT.
//!
//! Sockets (via `surge-ping`): an unprivileged datagram socket (`SOCK_DGRAM`, `IPPROTO_ICMP`) where
//! the process' group is within `net.ipv4.ping_group_range` (that sysctl also covers ICMPv6), else a
//! raw socket, which needs CAP_NET_RAW. When neither can be opened the probe fails with a detail that
//! says so and names both fixes. One socket per probe run, closed at its end: no state outlives a
//! probe, and a permission fixed at run time is picked up by the next probe.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Seg::Key;
use crate::config::{Errors, Seg, with};
use crate::observe::probe::{Probe, ProbeResult, io_detail, timed_out};

/// Default echoes per probe.
pub const DEFAULT_ICMP_COUNT: u32 = 3;
/// Most echoes per probe.
pub const MAX_ICMP_COUNT: u32 = 100;
/// Default time between two echoes of one probe.
pub const DEFAULT_ECHO_INTERVAL: Duration = Duration::from_millis(10);
/// Default `max_loss`, percent: with 3 echoes one may be lost.
pub const DEFAULT_MAX_LOSS_PERCENT: u8 = 50;
/// Bytes of echo payload (as `ping`'s default 56 bytes).
const PAYLOAD: [u8; 56] = [0x72; 56];

/// An ICMP echo check, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpCheckConfig {
    /// Echoes per probe, 1 to [`MAX_ICMP_COUNT`].
    pub count: u32,
    /// Time between two echoes of one probe.
    pub echo_interval: Duration,
    /// Largest share of echoes lost, percent (0 to 100), with which the probe still passes.
    pub max_loss_percent: u8,
}

impl Default for IcmpCheckConfig {
    fn default() -> Self {
        IcmpCheckConfig {
            count: DEFAULT_ICMP_COUNT,
            echo_interval: DEFAULT_ECHO_INTERVAL,
            max_loss_percent: DEFAULT_MAX_LOSS_PERCENT,
        }
    }
}

/// `[service.check]` options of `type = "icmp"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIcmpCheck {
    /// Echoes per probe.
    pub count: Option<i64>,
    /// Time between echoes.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub echo_interval: Option<Duration>,
    /// `"50%"`: the largest loss that still passes.
    #[serde(default, deserialize_with = "opt_percent")]
    pub max_loss: Option<String>,
}

/// A percentage as written (`"50%"`, checked by [`validate`]); a bare number is refused with the
/// string to write instead: `50` → `"50%"`, and a share `0.5` → `"50%"`.
fn opt_percent<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use crate::config::raw::Written;
    let percent_sign =
        || serde::de::Error::custom("percentages are strings with a percent sign, like \"50%\"");
    let bare = |written: String, percent: f64| {
        serde::de::Error::custom(format!(
            "percentages are strings with a percent sign: write \"{}%\", not `{written}`",
            percent.round()
        ))
    };
    match Written::deserialize(d).map_err(|_: D::Error| percent_sign())? {
        Written::Text(s) => Ok(Some(s)),
        Written::Integer(n) => Err(bare(n.to_string(), n as f64)),
        // A share of one (0.5) means that share in percent; anything else is taken as percent.
        Written::Float(x) if (0.0..=1.0).contains(&x) => Err(bare(x.to_string(), x * 100.0)),
        Written::Float(x) => Err(bare(x.to_string(), x)),
        Written::Bool(_) => Err(percent_sign()),
    }
}

impl IcmpCheckConfig {
    /// Builds the probe of endpoint `ip`; it cannot fail (sockets are opened per probe).
    pub fn build(&self, ip: IpAddr, timeout: Duration) -> IcmpProbe {
        IcmpProbe {
            ip,
            timeout,
            config: self.clone(),
        }
    }

    /// How long the last echo is sent after the first.
    pub fn spread(&self) -> Duration {
        self.echo_interval * self.count.saturating_sub(1)
    }
}

/// Validates an icmp check of service `label` at key path `cpath`; a problem goes to `errs`, and
/// `None` is returned if there was one. (That the echoes fit in the service's `timeout` is checked by
/// the service, which knows it.)
pub(crate) fn validate(
    c: &RawIcmpCheck,
    label: &str,
    cpath: &[Seg],
    errs: &mut Errors,
) -> Option<IcmpCheckConfig> {
    let before = errs.len();
    let count = c.count.unwrap_or(i64::from(DEFAULT_ICMP_COUNT));
    if !(1..=i64::from(MAX_ICMP_COUNT)).contains(&count) {
        errs.at(
            &with(cpath, &[Key("count")]),
            format!("service {label:?}: count = {count} must be from 1 to {MAX_ICMP_COUNT} echoes"),
        );
    }
    let max_loss_percent = match &c.max_loss {
        None => Some(DEFAULT_MAX_LOSS_PERCENT),
        Some(text) => {
            let parsed = text
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<u8>().ok())
                .filter(|p| *p <= 100);
            if parsed.is_none() {
                errs.at(
                    &with(cpath, &[Key("max_loss")]),
                    format!(
                        "service {label:?}: max_loss {text:?} must be a percentage from \"0%\" (every echo answered) to \"100%\""
                    ),
                );
            }
            parsed
        }
    };
    if errs.len() != before {
        return None;
    }
    Some(IcmpCheckConfig {
        count: count as u32,
        echo_interval: c.echo_interval.unwrap_or(DEFAULT_ECHO_INTERVAL),
        max_loss_percent: max_loss_percent?,
    })
}

/// ICMP echo probe of one endpoint.
pub struct IcmpProbe {
    ip: IpAddr,
    timeout: Duration,
    config: IcmpCheckConfig,
}

/// Identifiers of the echoes of this process (raw sockets match replies by it; the kernel sets its own
/// on datagram sockets).
fn identifier() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) ^ (std::process::id() as u16)
}

/// The wording of a socket that could not be opened: the fixes when it is a matter of permission.
fn socket_detail(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        "cannot open an ICMP socket: not permitted. Allow unprivileged echo for rrguard's group with \
         the sysctl net.ipv4.ping_group_range (it covers ICMPv6 too), or give rrguard CAP_NET_RAW \
         for a raw socket"
            .to_owned()
    } else {
        format!("cannot open an ICMP socket: {}", io_detail(e))
    }
}

impl IcmpProbe {
    async fn run(&self) -> ProbeResult {
        let start = Instant::now();
        // Replies are awaited until a little before the timeout, so that a probe with lost echoes
        // reports its loss instead of being cut off by the scheduler's hard timeout.
        let deadline = start + self.timeout - (self.timeout / 10).min(Duration::from_millis(20));
        let kind = match self.ip {
            IpAddr::V4(_) => surge_ping::ICMP::V4,
            IpAddr::V6(_) => surge_ping::ICMP::V6,
        };
        let config = surge_ping::Config::builder()
            .kind(kind)
            .sock_type_hint(socket2::Type::DGRAM)
            .build();
        let client = match surge_ping::Client::new(&config) {
            Ok(c) => c,
            Err(e) => {
                return ProbeResult {
                    ok: false,
                    latency: start.elapsed(),
                    detail: socket_detail(&e),
                };
            }
        };
        let socket = if client.get_socket().get_type() == socket2::Type::RAW {
            "raw socket"
        } else {
            "datagram socket"
        };
        let ident = surge_ping::PingIdentifier(identifier());
        let mut echoes = JoinSet::new();
        for seq in 0..self.config.count {
            let client = client.clone();
            let ip = self.ip;
            let send_at = start + self.config.echo_interval * seq;
            echoes.spawn(async move {
                tokio::time::sleep_until(send_at).await;
                let mut pinger = client.pinger(ip, ident).await;
                pinger.timeout(deadline.saturating_duration_since(Instant::now()));
                pinger
                    .ping(surge_ping::PingSequence(seq as u16), &PAYLOAD)
                    .await
                    .map(|(_, rtt)| rtt)
            });
        }
        let mut rtts = Vec::new();
        let mut error = None;
        while let Some(joined) = echoes.join_next().await {
            match joined {
                Ok(Ok(rtt)) => rtts.push(rtt),
                Ok(Err(surge_ping::SurgeError::Timeout { .. })) | Err(_) => {}
                Ok(Err(surge_ping::SurgeError::IOError(e))) => error = Some(io_detail(&e)),
                Ok(Err(e)) => error = Some(e.to_string()),
            }
        }
        self.verdict(start, &rtts, error, socket)
    }

    /// The result of a probe whose replies took `rtts`; `error` is the last send error, if any.
    fn verdict(
        &self,
        start: Instant,
        rtts: &[Duration],
        error: Option<String>,
        socket: &str,
    ) -> ProbeResult {
        let count = self.config.count as usize;
        let lost = count - rtts.len().min(count);
        let loss = (lost * 100).div_ceil(count);
        let ok = loss <= usize::from(self.config.max_loss_percent);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut detail = format!(
            "{}/{count} echo replies, {loss}% loss",
            rtts.len().min(count)
        );
        if !ok {
            detail.push_str(&format!(
                " (above max_loss {}%)",
                self.config.max_loss_percent
            ));
        }
        let latency = if rtts.is_empty() {
            start.elapsed()
        } else {
            let min = rtts.iter().min().copied().unwrap_or_default();
            let max = rtts.iter().max().copied().unwrap_or_default();
            let avg = rtts.iter().sum::<Duration>() / rtts.len() as u32;
            detail.push_str(&format!(
                ", rtt min/avg/max {:.3}/{:.3}/{:.3} ms",
                ms(min),
                ms(avg),
                ms(max)
            ));
            avg
        };
        if let Some(e) = error {
            detail.push_str(&format!(", {e}"));
        }
        detail.push_str(&format!(" ({socket})"));
        ProbeResult {
            ok,
            latency,
            detail,
        }
    }
}

#[async_trait]
impl Probe for IcmpProbe {
    async fn probe(&self) -> ProbeResult {
        // The echoes end before the timeout themselves; this bounds the socket setup too.
        match tokio::time::timeout(self.timeout, self.run()).await {
            Ok(r) => r,
            Err(_) => timed_out(self.timeout),
        }
    }
}
