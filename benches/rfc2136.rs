//! RFC 2136 throughput benchmark: many services of one zone written into a real Knot (and BIND).
//!
//! Two measurements, each with the daemon's batching (`act::batch::Batched`, what `rrguard run` uses)
//! and, for comparison, one UPDATE per change (the bare writer):
//! - **reconcile from empty**: 1,000 names × 10 endpoints = 10,000 A records, every endpoint up, the
//!   zone empty. Every service's `ServiceCore` reads, plans and writes through `daemon::converge`,
//!   32 services in flight at a time. Target (issue): ≤ 5 s into Knot.
//! - **mass failure**: then one endpoint shared by all 1,000 names fails at once; every core removes
//!   it. Reported as RR changes per second (published anchor: BIND ~2,500 changes/s batched, ~320/s
//!   one per message).
//!
//! Each run checks that the zone ends exactly as planned (every name queried with dig on a sample,
//! the SOA serial, and each core's published set), so a fast wrong answer cannot pass.
//!
//! `cargo bench --bench rfc2136` (or `scripts/bench`) runs the full size. Without `--bench` on the
//! command line, as under `cargo test --all-targets`, it runs 20 names × 5 endpoints as a smoke test.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use rrguard::act::Writer;
use rrguard::act::batch::Batched;
use rrguard::act::rfc2136::Rfc2136Writer;
use rrguard::config::{Rfc2136Config, TsigAlgorithm, TsigConfig};
use rrguard::daemon::converge;
use rrguard::decide::Health;
use rrguard::decide::service::{Event, ServiceCore, ServiceView, Settings};
use rrguard::observe::health::HealthMachine;
use support::{DnsKind, DnsServer};
use tokio::sync::Semaphore;
use tokio::time::Instant;

const ZONE: &str = "example.test.";
/// Services converging at once: a bound on open TCP connections to the server, like a real fleet's
/// probe stagger.
const IN_FLIGHT: usize = 32;

struct Size {
    names: usize,
    endpoints: usize,
}

fn endpoint(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn writer(dns: &DnsServer) -> Rfc2136Writer {
    use base64::Engine as _;
    Rfc2136Writer::new(
        "primary",
        Rfc2136Config {
            servers: vec![dns.addr],
            tsig: TsigConfig {
                name: format!("{}.", dns.key_name),
                algorithm: TsigAlgorithm::HmacSha256,
                secret: base64::engine::general_purpose::STANDARD
                    .decode(&dns.secret_b64)
                    .unwrap(),
            },
            timeout: Duration::from_secs(10),
        },
    )
    .unwrap()
}

/// One core per name, every endpoint up in its machines and in its view.
fn cores(size: &Size, w: &dyn Writer) -> Vec<ServiceCore> {
    let endpoints: Vec<IpAddr> = (0..size.endpoints).map(endpoint).collect();
    (0..size.names)
        .map(|n| {
            let svc = support::service_config(&format!("n{n}.{ZONE}"), ZONE, endpoints.clone(), 60);
            let settings = Settings::of(&svc, w.capabilities(), Duration::from_secs(3600), false);
            let machines = endpoints
                .iter()
                .map(|ip| (*ip, HealthMachine::with_state(1, 1, Health::Up)))
                .collect();
            let mut core = ServiceCore::new(settings, machines, Instant::now());
            core.on_view(Instant::now(), &view(&endpoints, None));
            core
        })
        .collect()
}

fn view(endpoints: &[IpAddr], down: Option<IpAddr>) -> ServiceView {
    ServiceView {
        health: endpoints
            .iter()
            .map(|ip| {
                let h = if Some(*ip) == down {
                    Health::Down
                } else {
                    Health::Up
                };
                (*ip, h)
            })
            .collect(),
        leader: true,
        live_nodes: 1,
    }
}

/// Runs every core's due work to completion, at most [`IN_FLIGHT`] at a time; returns the cores and
/// the wall time.
async fn converge_all(
    cores: Vec<ServiceCore>,
    w: Arc<dyn Writer>,
) -> (Vec<ServiceCore>, Duration, usize) {
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut core) in cores.into_iter().enumerate() {
        let (gate, w) = (gate.clone(), w.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let mut failures = 0;
            // As the daemon does: after a failed read or write the core retries after its backoff.
            loop {
                let events = converge(&mut core, w.as_ref()).await;
                for e in &events {
                    if let Event::Failed { .. } | Event::NotApplied { .. } | Event::KeptChanging = e
                    {
                        eprintln!("{}: {e:?}", core.settings().fqdn);
                        failures += 1;
                    }
                }
                match core.next_wake() {
                    Some(at) if at < Instant::now() + Duration::from_secs(60) => {
                        tokio::time::sleep_until(at).await;
                    }
                    _ => break,
                }
            }
            (i, core, failures)
        });
    }
    let mut done = BTreeMap::new();
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, core, failed) = joined.unwrap();
        done.insert(i, core);
        failures += failed;
    }
    (done.into_values().collect(), start.elapsed(), failures)
}

/// Panics unless every core publishes `want` endpoints and a sample of names answers them in DNS.
fn check(dns: &DnsServer, cores: &[ServiceCore], want: &[IpAddr]) {
    let mut want_text: Vec<String> = want.iter().map(ToString::to_string).collect();
    want_text.sort();
    for core in cores {
        let published = core.published().map(|p| p.addresses());
        assert_eq!(
            published,
            Some(want.iter().copied().collect()),
            "{}",
            core.settings().fqdn
        );
    }
    for n in [0, cores.len() / 2, cores.len() - 1] {
        let mut got = dns.query(&format!("n{n}.example.test"), "A");
        got.sort();
        assert_eq!(got, want_text, "n{n} in DNS");
    }
}

struct Result {
    server: &'static str,
    mode: &'static str,
    reconcile: Duration,
    records: usize,
    mass_failure: Duration,
    changes: usize,
    updates: u32,
    /// Reads and writes that failed and were retried after the core's backoff.
    failures: usize,
}

async fn run(kind: DnsKind, batched: bool, size: &Size) -> Result {
    let dns = DnsServer::start(kind, "");
    let bare: Arc<dyn Writer> = Arc::new(writer(&dns));
    let w = if batched { Batched::spawn(bare) } else { bare };
    let endpoints: Vec<IpAddr> = (0..size.endpoints).map(endpoint).collect();
    let cores = cores(size, w.as_ref());
    let (mut cores, reconcile, failed_first) = converge_all(cores, w.clone()).await;
    check(&dns, &cores, &endpoints);
    // Mass failure: the first endpoint of every name fails.
    let failed = endpoints[0];
    let serial = dns.soa_serial();
    for core in &mut cores {
        let now = Instant::now();
        core.on_probe(now, now, failed, false, Duration::ZERO, "refused");
        core.on_view(Instant::now(), &view(&endpoints, Some(failed)));
    }
    let (cores, mass_failure, failed_then) = converge_all(cores, w.clone()).await;
    check(&dns, &cores, &endpoints[1..]);
    Result {
        server: match kind {
            DnsKind::Knot => "Knot",
            DnsKind::Bind => "BIND",
        },
        mode: if batched { "batched" } else { "one per change" },
        reconcile,
        records: size.names * size.endpoints,
        mass_failure,
        changes: size.names,
        updates: dns.soa_serial().wrapping_sub(serial),
        failures: failed_first + failed_then,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full {
        Size {
            names: 1000,
            endpoints: 10,
        }
    } else {
        Size {
            names: 20,
            endpoints: 5,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results = Vec::new();
    for kind in [DnsKind::Knot, DnsKind::Bind] {
        for batched in [true, false] {
            results.push(rt.block_on(run(kind, batched, &size)));
        }
    }
    println!(
        "\nrfc2136: {} names × {} endpoints in one zone, {IN_FLIGHT} services in flight",
        size.names, size.endpoints
    );
    println!(
        "{:<6} {:<15} {:>22} {:>26} {:>13} {:>9}",
        "server",
        "mode",
        "reconcile from empty",
        "mass failure (RR changes)",
        "serial steps",
        "retries"
    );
    for r in &results {
        println!(
            "{:<6} {:<15} {:>10} ms {:>6.0} RR/s {:>10} ms {:>8.0} RR/s {:>13} {:>9}",
            r.server,
            r.mode,
            r.reconcile.as_millis(),
            r.records as f64 / r.reconcile.as_secs_f64(),
            r.mass_failure.as_millis(),
            r.changes as f64 / r.mass_failure.as_secs_f64(),
            r.updates,
            r.failures,
        );
    }
    if full {
        let knot = &results[0];
        let ok = knot.reconcile <= Duration::from_secs(5);
        println!(
            "target: reconcile of {} records into Knot ≤ 5 s: {} ({} ms)",
            knot.records,
            if ok { "PASS" } else { "FAIL" },
            knot.reconcile.as_millis()
        );
        if !ok {
            std::process::exit(1);
        }
    }
}
