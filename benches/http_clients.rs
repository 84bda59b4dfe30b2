//! Building the HTTP probes of 10,000 endpoints: time and memory, shared clients against the former
//! client per endpoint.
//!
//! Builds [`ENDPOINTS`] https probes of one service (one shared client, see
//! `rrguard::observe::check::http`) and prints the build time, the clients built and the resident
//! memory they added; then builds [`PER_ENDPOINT`] clients the way every endpoint used to get its own
//! (reqwest's defaults: the system roots read per client) and prints the same per endpoint. Nothing is
//! sent anywhere. Memory is the process' resident set (`/proc/self/statm`) before and after, so it
//! includes allocator slack: a rough figure.
//!
//! `cargo bench --bench http_clients` (release); `cargo test --bench http_clients` runs it unoptimized
//! (build times are then several times longer; the counts and the memory still compare).

// A plain measurement with no runtime and no paused clock: std's Instant on purpose.
#![allow(clippy::disallowed_types)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rrguard::observe::check::http::{HttpCheckConfig, HttpProbe, clients_built};
use rrguard::observe::probe::ensure_crypto_provider;

/// Endpoints of the service whose probes are built with shared clients.
const ENDPOINTS: usize = 10_000;
/// Clients built the former way (one per endpoint); fewer, since each costs ~1 ms and ~100 KB.
const PER_ENDPOINT: usize = 1_000;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn endpoint(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + 2 + i as u32))
}

fn main() {
    ensure_crypto_provider();
    let check = HttpCheckConfig::new(true, 443, "www.example.test");
    let timeout = Duration::from_millis(500);

    let (rss, built, start) = (resident_bytes(), clients_built(), Instant::now());
    let probes: Vec<HttpProbe> = (0..ENDPOINTS)
        .map(|i| HttpProbe::new(&check, endpoint(i), timeout).expect("probe"))
        .collect();
    let took = start.elapsed();
    let added = resident_bytes().saturating_sub(rss);
    println!(
        "shared clients: {ENDPOINTS} https probes built in {:.1} ms ({:.2} µs each), {} client(s) built, +{:.1} MB resident ({} bytes per endpoint)",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / ENDPOINTS as f64,
        clients_built() - built,
        added as f64 / 1e6,
        added / ENDPOINTS as u64,
    );
    assert!(probes.iter().all(|p| p.shares_client_with(&probes[0])));
    drop(probes);

    let (rss, start) = (resident_bytes(), Instant::now());
    let clients: Vec<reqwest::Client> = (0..PER_ENDPOINT)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .expect("client")
        })
        .collect();
    let took = start.elapsed();
    let added = resident_bytes().saturating_sub(rss);
    println!(
        "one client per endpoint (before): {PER_ENDPOINT} clients built in {:.1} ms ({:.0} µs each), +{:.1} MB resident ({} bytes per endpoint); at {ENDPOINTS}: ~{:.1} s, ~{:.0} MB",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / PER_ENDPOINT as f64,
        added as f64 / 1e6,
        added / PER_ENDPOINT as u64,
        took.as_secs_f64() * (ENDPOINTS / PER_ENDPOINT) as f64,
        added as f64 * (ENDPOINTS / PER_ENDPOINT) as f64 / 1e6,
    );
    drop(clients);
}
