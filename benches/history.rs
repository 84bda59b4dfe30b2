//! The endpoint history at 10,000 endpoints (issue 11, item 5): memory and the cost of the probe
//! hook.
//!
//! Builds a `state::history::History` of `HISTORY_SERVICES` services × `HISTORY_PER_SERVICE`
//! endpoints (default 100 × 100), then measures, by the growth of this process's resident set
//! (`/proc/self/statm`):
//! - with a store (`history.redb` in a temporary directory), as the daemon runs: an hour of probes
//!   committed every 3 buckets (the store's 30 s), after which only the recent buckets stay in
//!   memory; also the file's size, the time spent committing, and the time to read one endpoint's
//!   hour back as the API does;
//! - without a store (memory only): every endpoint configured, no probe yet; after a full hour of
//!   probes (every bucket used) and 10 transitions per endpoint with reasons of a typical length
//!   (60 bytes); every transition ring full (100) of an endpoint flapping (its two reasons
//!   repeating); the worst case: every ring full of distinct reasons of the longest kept length
//!   (160 bytes).
//!
//! And the time per `History::record_probe` call (the hook on the probe path: two hash lookups and a
//! bucket update), over 10 million calls round-robin across every endpoint.
//! Without `--bench` (as under `cargo test --all-targets`) a smoke run of 2 × 10 endpoints checks
//! that it works and prints no verdict.
//! Targets: under 10 KiB per endpoint for the full hour with typical transitions in memory only
//! (100 MB at 10,000 endpoints), under 4 KiB with a store. `cargo bench --bench history` (release)
//! or `--profile dev` for a quick look.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use std::sync::{Arc, Mutex};

use rrguard::state::history::{self, BUCKETS, History, HistoryStore, RESOLUTION_MS, TRANSITIONS};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One probe of every endpoint in bucket `b` of the hour from `t0` (every tenth failed).
fn probe_every_endpoint_once(h: &mut History, names: &[String], eps: &[IpAddr], t0: u64, b: u64) {
    for s in names {
        for (i, ip) in eps.iter().enumerate() {
            let ok = !(b + i as u64).is_multiple_of(10);
            h.record_probe(
                s,
                *ip,
                ok,
                Duration::from_micros(500 + b),
                t0 + b * RESOLUTION_MS,
            );
        }
    }
}

fn main() {
    // Without `--bench` (`cargo test --all-targets`, unoptimised): a smoke run of 2 × 10 endpoints
    // that checks the paths work; per-endpoint figures of so few endpoints mean nothing.
    let full = std::env::args().any(|a| a == "--bench");
    let services = env("HISTORY_SERVICES", if full { 100 } else { 2 });
    let per_service = env("HISTORY_PER_SERVICE", if full { 100 } else { 10 });
    let calls = if full { 10_000_000u64 } else { 100_000 };
    let n = services * per_service;
    let names: Vec<String> = (0..services)
        .map(|i| format!("s{i}.example.test."))
        .collect();
    let eps: Vec<IpAddr> = (0..per_service)
        .map(|i| IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]))
        .collect();
    let t0: u64 = 1_800_000_000_000;

    // With a store, as the daemon runs with a `state_dir`: an hour of probes, committed every 3
    // buckets (the store's 30 s), after which only the recent buckets stay in memory. Measured
    // first, since freed memory is not always given back to the system.
    let base = rss_bytes();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stored = Arc::new(Mutex::new(History::default()));
    let store = HistoryStore::open(dir.path(), stored.clone(), t0).expect("the history store");
    stored
        .lock()
        .unwrap()
        .retain(names.iter().map(|s| (s.as_str(), eps.as_slice())));
    let commit_start = Instant::now();
    for b in 0..BUCKETS as u64 {
        probe_every_endpoint_once(&mut stored.lock().unwrap(), &names, &eps, t0, b);
        if b % 3 == 2 {
            store.flush();
        }
    }
    store.flush();
    let commits = commit_start.elapsed();
    let with_store = rss_bytes() - base;
    let file = std::fs::metadata(store.path()).map_or(0, |m| m.len());
    let read_start = Instant::now();
    let reads = 1000;
    for i in 0..reads {
        let doc = history::read(
            &stored,
            Some(&store),
            &names[i % services],
            eps[i % per_service],
            t0 + (BUCKETS as u64 - 1) * RESOLUTION_MS,
        )
        .expect("a configured endpoint");
        assert_eq!(doc.0.len(), BUCKETS);
    }
    let per_read = read_start.elapsed() / reads as u32;
    drop(store);
    drop(stored);

    let base = rss_bytes();
    let mut h = History::default();
    h.retain(names.iter().map(|s| (s.as_str(), eps.as_slice())));
    let allocated = rss_bytes() - base;

    // One hour: one probe per endpoint per bucket (every tenth failed).
    for b in 0..BUCKETS as u64 {
        probe_every_endpoint_once(&mut h, &names, &eps, t0, b);
    }
    let reason = "x".repeat(60);
    for k in 0..10u64 {
        for s in &names {
            for ip in &eps {
                h.record_agreed(s, *ip, k % 2 == 0, &reason, t0 + k);
            }
        }
    }
    let typical = rss_bytes() - base;

    // Flapping: every ring full, the endpoint's two reasons repeating (as an endpoint that goes up
    // and down with the same votes does).
    for k in 0..TRANSITIONS as u64 {
        for s in &names {
            for ip in &eps {
                let reason = format!(
                    "{ip} is {} (agreed by mon-1, mon-2, mon-3; was {})",
                    if k % 2 == 0 { "up" } else { "down" },
                    if k % 2 == 0 { "down" } else { "up" }
                );
                h.record_agreed(s, *ip, k % 2 == 0, &reason, t0 + 100 + k);
            }
        }
    }
    let flapping = rss_bytes() - base;
    // Worst: every ring full of distinct reasons of the longest kept length.
    for k in 0..TRANSITIONS as u64 {
        for s in &names {
            for ip in &eps {
                let reason = format!("{s} {ip} {k} {}", "y".repeat(200));
                h.record_standing(s, *ip, k % 2 == 0, "not_fastest", &reason, t0 + 1000 + k);
            }
        }
    }
    let worst = rss_bytes() - base;

    let now = t0 + BUCKETS as u64 * RESOLUTION_MS;
    let start = Instant::now();
    for c in 0..calls {
        let i = (c as usize) % n;
        let s = &names[i / per_service];
        let ip = eps[i % per_service];
        h.record_probe(
            black_box(s),
            black_box(ip),
            true,
            Duration::from_micros(700),
            now + c / 1000,
        );
    }
    let per_call = start.elapsed().as_nanos() as f64 / calls as f64;
    black_box(&h);

    let kib = |b: u64| b as f64 / 1024.0 / n as f64;
    println!("endpoint history, {n} endpoints ({services} services x {per_service}):");
    println!(
        "  with a store, 1 h of probes committed: {:>8.1} MB  ({:.2} KiB per endpoint; file {:.1} MB; {:.1} s of commits)",
        with_store as f64 / 1e6,
        kib(with_store),
        file as f64 / 1e6,
        commits.as_secs_f64()
    );
    println!(
        "  reading one endpoint's hour (API):     {:>8.2} ms",
        per_read.as_secs_f64() * 1000.0
    );
    println!("  without a store (memory only):");
    println!(
        "  configured, no probe yet:              {:>8.1} MB  ({:.2} KiB per endpoint)",
        allocated as f64 / 1e6,
        kib(allocated)
    );
    println!(
        "  1 h of probes + 10 transitions (60 B): {:>8.1} MB  ({:.2} KiB per endpoint)",
        typical as f64 / 1e6,
        kib(typical)
    );
    println!(
        "  + full rings of 100, flapping:         {:>8.1} MB  ({:.2} KiB per endpoint)",
        flapping as f64 / 1e6,
        kib(flapping)
    );
    println!(
        "  + full rings, distinct 160 B reasons:  {:>8.1} MB  ({:.2} KiB per endpoint)",
        worst as f64 / 1e6,
        kib(worst)
    );
    println!("  record_probe: {per_call:.0} ns per call ({calls} calls round-robin)");
    if !full {
        println!("  smoke, run with --bench for the full measurement");
        return;
    }
    let target = kib(typical) < 10.0 && kib(with_store) < 4.0;
    println!(
        "  target < 10 KiB per endpoint with an hour of probes, < 4 KiB with a store: {}",
        if target { "met" } else { "MISSED" }
    );
    if !target {
        std::process::exit(1);
    }
}
