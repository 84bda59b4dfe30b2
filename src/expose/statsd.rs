//! StatsD push: `[metrics] statsd = "HOST:PORT"` sends this node's metrics over UDP in the plain
//! StatsD line protocol (`name:value|type`, several lines per datagram) every `statsd_interval`.
//!
//! Two sets of names, both under `statsd_prefix` (default `rrguard`):
//!
//! - rrdnsd's, for dashboards built on it (rrdnsd 0.1.0 sends them with the fixed prefix `rrdnsd`,
//!   without tags, one line per probe; set `statsd_prefix = "rrdnsd"` to keep the same names):
//!   `probe.success.cnt` and `probe.failure.cnt` (counters: probes that passed / failed, over all
//!   endpoints), `probe_time_msec` (a timer sample per probe, milliseconds), `status_change.cnt`
//!   (counter: agreed endpoint state changes). Counters carry the count since the previous push,
//!   which a StatsD server sums exactly as it sums rrdnsd's `:1|c` lines; more than
//!   [`MAX_TIMINGS`] probe times in one interval are sent as a sample with `|@rate`.
//! - rrguard's own, the service and endpoint in the name (dots and colons become `_`):
//!   `endpoint.up.SERVICE.ENDPOINT` (gauge: 1 agreed up, 0 down; absent while unknown),
//!   `probe.latency_ms.SERVICE.ENDPOINT` (gauge: this node's last probe),
//!   `probes.SERVICE.ENDPOINT.success` / `.failure` (counters), `dns.writes.SERVICE.WRITER.ok` /
//!   `.error` (counters), `node.isolated`, `node.leader` (gauges 0/1), `peers.live` (gauge).
//!
//! The pusher reads [`NodeState`] only: probes and events from its streams (never blocking the
//! daemon: a pusher that falls behind loses samples), the rest from a snapshot at each push. A
//! send that fails (no listener, unresolvable host) is logged once until one succeeds again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Seg::Key;
use crate::config::{Errors, with};
use crate::state::{EventKind, NodeState, ProbeSample};

/// Default prefix of every name.
pub const DEFAULT_STATSD_PREFIX: &str = "rrguard";
/// Default period of pushes.
pub const DEFAULT_STATSD_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest accepted `statsd_interval`.
pub const MIN_STATSD_INTERVAL: Duration = Duration::from_millis(100);
/// Largest datagram, bytes: StatsD servers' advice for paths with a 1500-byte MTU.
pub const MAX_DATAGRAM: usize = 1432;
/// Probe times sent per push at most; the rest are represented by the sample rate.
pub const MAX_TIMINGS: usize = 2000;

/// `[metrics]`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// StatsD server, `HOST:PORT`.
    pub statsd: Option<String>,
    /// Prefix of every StatsD name.
    pub statsd_prefix: Option<String>,
    /// Period of pushes.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub statsd_interval: Option<Duration>,
}

/// `[metrics]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// StatsD push; `None`: off.
    pub statsd: Option<StatsdConfig>,
}

/// The StatsD push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsdConfig {
    /// `HOST:PORT`, resolved at each push.
    pub target: String,
    /// Prefix of every name, without a trailing dot; may be empty.
    pub prefix: String,
    /// Period of pushes.
    pub interval: Duration,
}

/// Validates `[metrics]`. Problems go to `errs`.
pub(crate) fn validate(raw: Option<&RawMetrics>, errs: &mut Errors) -> MetricsConfig {
    let Some(r) = raw else {
        return MetricsConfig::default();
    };
    let at = [Key("metrics")];
    let prefix = r
        .statsd_prefix
        .as_deref()
        .unwrap_or(DEFAULT_STATSD_PREFIX)
        .trim_end_matches('.')
        .to_owned();
    if !prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        errs.at(
            &with(&at, &[Key("statsd_prefix")]),
            format!("statsd_prefix {prefix:?} may use only letters, digits, '_', '-' and '.', like \"rrguard\" or \"dc1.rrguard\""),
        );
    }
    let interval = r.statsd_interval.unwrap_or(DEFAULT_STATSD_INTERVAL);
    if interval < MIN_STATSD_INTERVAL {
        errs.at(
            &with(&at, &[Key("statsd_interval")]),
            format!(
                "statsd_interval {} is below the {} minimum",
                humantime::format_duration(interval),
                humantime::format_duration(MIN_STATSD_INTERVAL)
            ),
        );
    }
    let statsd = r.statsd.as_deref().and_then(|text| {
        let ok = text
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if ok {
            Some(StatsdConfig {
                target: text.trim().to_owned(),
                prefix: prefix.clone(),
                interval,
            })
        } else {
            errs.at(
                &with(&at, &[Key("statsd")]),
                format!("statsd {text:?} is not HOST:PORT, like \"127.0.0.1:8125\" or \"statsd.example.net:8125\""),
            );
            None
        }
    });
    if statsd.is_none()
        && (r.statsd_prefix.is_some() || r.statsd_interval.is_some())
        && r.statsd.is_none()
    {
        errs.at(
            &at,
            "statsd_prefix and statsd_interval need `statsd = \"HOST:PORT\"`",
        );
    }
    MetricsConfig { statsd }
}

/// Starts the pusher in `set` if `config` has one; it subscribes to `state` now and stops when
/// `cancel` fires.
pub fn spawn_statsd(
    config: &MetricsConfig,
    state: &NodeState,
    cancel: &CancellationToken,
    set: &mut JoinSet<()>,
) {
    let Some(c) = config.statsd.clone() else {
        return;
    };
    let probes_rx = state.subscribe_probes();
    let events_rx = state.subscribe();
    set.spawn(run(c, state.clone(), probes_rx, events_rx, cancel.clone()));
}

/// What was seen since the last push.
#[derive(Debug, Default)]
struct Window {
    success: u64,
    failure: u64,
    status_changes: u64,
    /// Probe times kept, milliseconds, at most [`MAX_TIMINGS`].
    timings: Vec<u64>,
    /// Probe times seen.
    timed: u64,
    per_endpoint: BTreeMap<(String, String), (u64, u64)>,
}

impl Window {
    fn probe(&mut self, p: &ProbeSample) {
        let counts = self
            .per_endpoint
            .entry((p.service.clone(), p.endpoint.to_string()))
            .or_default();
        if p.ok {
            self.success += 1;
            counts.0 += 1;
        } else {
            self.failure += 1;
            counts.1 += 1;
        }
        self.timed += 1;
        if self.timings.len() < MAX_TIMINGS {
            self.timings
                .push(u64::try_from(p.latency.as_millis()).unwrap_or(u64::MAX));
        }
    }
}

async fn run(
    config: StatsdConfig,
    state: NodeState,
    mut probes_rx: tokio::sync::broadcast::Receiver<ProbeSample>,
    mut events_rx: tokio::sync::broadcast::Receiver<crate::state::Event>,
    cancel: CancellationToken,
) {
    info!(target = %config.target, prefix = %config.prefix, "pushing StatsD metrics");
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut window = Window::default();
    let mut writes_before = state.write_counters();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            p = probes_rx.recv() => match p {
                Ok(p) => window.probe(&p),
                Err(RecvError::Lagged(n)) => warn!(lost = n, "StatsD pusher fell behind the probes; their counts are short"),
                Err(RecvError::Closed) => return,
            },
            e = events_rx.recv() => match e {
                Ok(e) if e.kind == EventKind::EndpointState => window.status_changes += 1,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = ticker.tick() => {
                let writes = state.write_counters();
                let lines = render(&config.prefix, &std::mem::take(&mut window), &state, &writes, &writes_before);
                writes_before = writes;
                match push(&config.target, &lines).await {
                    Ok(()) => {
                        if failing {
                            info!(target = %config.target, "StatsD pushes work again");
                        }
                        failing = false;
                    }
                    Err(e) => {
                        if !failing {
                            warn!(target = %config.target, "cannot push StatsD metrics: {e}");
                        }
                        failing = true;
                    }
                }
            }
        }
    }
}

/// A name segment: dots, colons and anything else outside `[A-Za-z0-9_-]` become `_` (a trailing
/// dot of an fqdn is dropped).
pub fn segment(text: &str) -> String {
    text.trim_end_matches('.')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn render(
    prefix: &str,
    w: &Window,
    state: &NodeState,
    writes: &BTreeMap<(String, String), crate::state::WriteCounters>,
    writes_before: &BTreeMap<(String, String), crate::state::WriteCounters>,
) -> Vec<String> {
    let name = |n: &str| {
        if prefix.is_empty() {
            n.to_owned()
        } else {
            format!("{prefix}.{n}")
        }
    };
    let mut lines = Vec::new();
    // rrdnsd's names.
    lines.push(format!("{}:{}|c", name("probe.success.cnt"), w.success));
    lines.push(format!("{}:{}|c", name("probe.failure.cnt"), w.failure));
    lines.push(format!(
        "{}:{}|c",
        name("status_change.cnt"),
        w.status_changes
    ));
    let rate = if w.timed > w.timings.len() as u64 {
        format!("|@{:.4}", w.timings.len() as f64 / w.timed as f64)
    } else {
        String::new()
    };
    for ms in &w.timings {
        lines.push(format!("{}:{ms}|ms{rate}", name("probe_time_msec")));
    }
    // rrguard's own.
    for ((svc, ep), (ok, failed)) in &w.per_endpoint {
        let base = format!("probes.{}.{}", segment(svc), segment(ep));
        lines.push(format!("{}:{ok}|c", name(&format!("{base}.success"))));
        lines.push(format!("{}:{failed}|c", name(&format!("{base}.failure"))));
    }
    for ((svc, writer), c) in writes {
        let before = writes_before.get(&(svc.clone(), writer.clone()));
        let base = format!("dns.writes.{}.{}", segment(svc), segment(writer));
        let ok = c.ok - before.map_or(0, |b| b.ok.min(c.ok));
        let error = c.error - before.map_or(0, |b| b.error.min(c.error));
        lines.push(format!("{}:{ok}|c", name(&format!("{base}.ok"))));
        lines.push(format!("{}:{error}|c", name(&format!("{base}.error"))));
    }
    if let Some(s) = state.snapshot() {
        lines.push(format!(
            "{}:{}|g",
            name("node.isolated"),
            u8::from(s.isolated.is_some())
        ));
        lines.push(format!(
            "{}:{}|g",
            name("node.leader"),
            u8::from(s.am_leader)
        ));
        lines.push(format!(
            "{}:{}|g",
            name("peers.live"),
            s.peers.iter().filter(|p| p.live).count()
        ));
        for e in &s.endpoints {
            let key = format!("{}.{}", segment(&e.service), segment(&e.endpoint));
            match e.cluster_state.as_str() {
                "up" => lines.push(format!("{}:1|g", name(&format!("endpoint.up.{key}")))),
                "down" => lines.push(format!("{}:0|g", name(&format!("endpoint.up.{key}")))),
                _ => {}
            }
            if let Some(l) = &e.local {
                lines.push(format!(
                    "{}:{:.3}|g",
                    name(&format!("probe.latency_ms.{key}")),
                    l.latency_ms
                ));
            }
        }
    }
    lines
}

/// Sends `lines` to `target` in datagrams of at most [`MAX_DATAGRAM`] bytes.
async fn push(target: &str, lines: &[String]) -> std::io::Result<()> {
    let addr: SocketAddr = tokio::net::lookup_host(target)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{target} has no address")))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(addr).await?;
    let mut datagram = String::new();
    for line in lines {
        if !datagram.is_empty() && datagram.len() + 1 + line.len() > MAX_DATAGRAM {
            socket.send(datagram.as_bytes()).await?;
            datagram.clear();
        }
        if !datagram.is_empty() {
            datagram.push('\n');
        }
        datagram.push_str(line);
    }
    if !datagram.is_empty() {
        socket.send(datagram.as_bytes()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_safe_names() {
        assert_eq!(segment("www.example.test."), "www_example_test");
        assert_eq!(segment("127.0.0.2"), "127_0_0_2");
        assert_eq!(segment("2001:db8::1"), "2001_db8__1");
        assert_eq!(segment("dns-primary"), "dns-primary");
    }

    #[test]
    fn rrdnsd_names_and_sampled_timings() {
        let mut w = Window::default();
        for i in 0..(MAX_TIMINGS + 2000) {
            w.probe(&ProbeSample {
                service: "www.example.test.".to_owned(),
                endpoint: "127.0.0.2".parse().unwrap(),
                ok: i % 4 != 0,
                latency: Duration::from_millis(12),
            });
        }
        let lines = render(
            "rrdnsd",
            &w,
            &NodeState::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert!(
            lines.contains(&"rrdnsd.probe.success.cnt:3000|c".to_owned()),
            "{lines:?}"
        );
        assert!(lines.contains(&"rrdnsd.probe.failure.cnt:1000|c".to_owned()));
        assert!(lines.contains(&"rrdnsd.status_change.cnt:0|c".to_owned()));
        assert!(
            lines.contains(&"rrdnsd.probes.www_example_test.127_0_0_2.success:3000|c".to_owned())
        );
        let timings: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("probe_time_msec"))
            .collect();
        assert_eq!(timings.len(), MAX_TIMINGS);
        assert_eq!(timings[0], "rrdnsd.probe_time_msec:12|ms|@0.5000");
    }
}
