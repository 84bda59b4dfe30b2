//! The probe engine at scale: thousands of endpoints on 127.0.0.0/8, probed by the real `rrguard run`
//! (release build), measured from the endpoints' side.
//!
//! A few listener processes (this same binary, re-run with `ENGINE_LISTENER=1`) each bind one
//! wildcard TCP port and answer on every loopback address; service `s` probes listener `s % L`. Each
//! listener counts what it serves per second, remembers per endpoint (the local address a connection
//! arrived on) its first probe and its previous probe, and keeps a histogram of the gap between two
//! consecutive probes of one endpoint minus the interval: the scheduling jitter, from start.
//! rrguard writes to its own `serve` writer (no DNS server to wait for) and runs with the defaults
//! (`fall = 3`, `rise = 2`, timeout 500 ms). Every endpoint is healthy the whole time, so every
//! "endpoint is down" in rrguard's log is a false verdict and every removal in a "DNS updated" plan is
//! a healthy endpoint withdrawn from DNS.
//!
//! Modes: `http-keepalive` (the listener keeps connections open; whether rrguard reuses them is up
//! to rrguard: with its defaults it does not), `http-reuse` (the same listener, and the check sets
//! `keep_alive = true`: rrguard sends each probe on the connection the last one left open),
//! `http-close` (the listener answers `Connection: close` and closes: a new connection
//! per probe whatever rrguard does), `tcp` (accept and close). Then the overload run:
//! `ENGINE_OVERLOAD_MODE` (`http-close`) at `ENGINE_OVERLOAD` times the probe rate (the interval
//! divided by it), asking for more than the machine can probe.
//!
//! `floor` (not in the default modes) runs no rrguard: a reference client (this binary again, with
//! `ENGINE_FLOOR=1`) probes the same endpoints on the same schedule against the `http-keepalive`
//! listeners with the fewest system calls a new-connection HTTP probe can make: blocking `connect`,
//! one `write` of a fixed request, `read` until the answer is in, close with a reset, from 32
//! threads and no event loop. Its CPU per 1,000 probes is what this machine's kernel charges a
//! prober for a new loopback connection, and the rest of its row shows how much of the two CPUs is
//! left for everything else (docs/benchmarks.md, "the floor of a new connection").
//!
//! Printed per run: probes/s counted per second after a warm-up, probes/s from the gaps (the
//! endpoints times the number of gaps between two probes of one endpoint that ended in the same
//! window, divided by their summed length: exact whatever the phases, where the count also moves
//! by the probes whose jitter took them across the window's edges; the probes/s target is judged
//! on it, to the nearest whole probe per second), rrguard's CPU-seconds per 1,000 probes
//! (`/proc/PID/stat`), its peak RSS (`VmHWM`), jitter p50/p99/max from start, the time from spawning
//! rrguard until every endpoint had its first probe, false down verdicts, healthy endpoints
//! withdrawn, probes rrguard abstained from (its own overload), and the load average (the machine
//! may be shared: other load lowers rrguard's figures, never raises them).
//!
//! `ENGINE_TIMELINE=1` also prints, per second from start, the probes served and the gaps longer
//! than the interval plus the jitter target, the connections the listeners accepted (with
//! `http-reuse`, one per endpoint when every kept connection was reused), and rrguard's RSS
//! (`VmRSS`) at the end of each second.
//!
//! Sizes (environment): `ENGINE_SERVICES` (100) × `ENGINE_PER_SERVICE` (100) endpoints,
//! `ENGINE_INTERVAL_MS` (1000), `ENGINE_SECONDS` per run (60), `ENGINE_MODES`
//! (`http-keepalive,http-reuse,http-close,tcp`), `ENGINE_OVERLOAD` (2; 0 skips the overload run),
//! `ENGINE_LISTENERS` (2), and `ENGINE_MAX_IN_FLIGHT` (rrguard's `[node] max_probes_in_flight`;
//! unset: its default). `ENGINE_KEEP_LOG=DIR` copies each run's rrguard log there
//! (`MODE-ENDPOINTS.log`). Every run stops by itself.
//!
//! `cargo bench --bench engine` (or `scripts/bench`) measures; without `--bench`, as under
//! `cargo test --all-targets`, a smoke run of 2 × 10 endpoints for a few seconds checks that
//! every endpoint is probed and none is withdrawn. Targets and results: docs/benchmarks.md.

// The listener measures real time from the endpoints' side, outside any tokio clock.
#![allow(clippy::disallowed_types)]

// The harness the integration tests use: the daemon process, free ports.
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::free_tcp_port;

/// Endpoint `i` is `BASE + i`: 127.1.0.0, 127.1.0.1, …
const BASE: u32 = 0x7f01_0000;
/// Jitter histogram: 1 ms buckets from -`JIT_LOW` ms to +`JIT_HIGH` ms (clamped at both ends).
const JIT_LOW: i64 = 10_000;
const JIT_HIGH: i64 = 60_000;
/// Per-second counters kept by a listener (longer runs fold into the last one).
const SECONDS_KEPT: usize = 4096;

// Targets of issue 10 on a 2-core machine.
const TARGET_PROBES_PER_S: f64 = 10_000.0;
const TARGET_RSS_MB: f64 = 100.0;
const TARGET_JITTER_P99_MS: i64 = 50;
const TARGET_FIRST_PROBE_S: f64 = 2.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn endpoint(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(BASE + i as u32)
}

// ---------------------------------------------------------------------------------------------
// The listener process.

/// What one listener counts; shared by its connection tasks.
struct Stats {
    t0: std::time::Instant,
    base_sec: u64,
    interval_ms: i64,
    per_second: Vec<AtomicU64>,
    /// Per second, the gaps longer than the interval + the jitter target (ENGINE_TIMELINE).
    late_per_second: Vec<AtomicU64>,
    /// Per second, the gaps between two probes of one endpoint that ended in it: how many, and
    /// their sum in ns.
    gaps_per_second: Vec<AtomicU64>,
    gap_ns_per_second: Vec<AtomicU64>,
    first_ms: Vec<AtomicU64>,
    /// Monotonic ns since `t0` of the previous probe, plus one (0: never).
    last_ns: Vec<AtomicU64>,
    jitter: Vec<AtomicU64>,
    connections: AtomicU64,
}

impl Stats {
    fn new(endpoints: usize, interval_ms: i64) -> Self {
        let atomics = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Stats {
            t0: std::time::Instant::now(),
            base_sec: unix_ms() / 1000,
            interval_ms,
            per_second: atomics(SECONDS_KEPT),
            late_per_second: atomics(SECONDS_KEPT),
            gaps_per_second: atomics(SECONDS_KEPT),
            gap_ns_per_second: atomics(SECONDS_KEPT),
            first_ms: atomics(endpoints),
            last_ns: atomics(endpoints),
            jitter: atomics((JIT_LOW + JIT_HIGH + 1) as usize),
            connections: AtomicU64::new(0),
        }
    }

    /// The endpoint index of a local address, if it is one of ours.
    fn index(&self, local: IpAddr) -> Option<usize> {
        let IpAddr::V4(v4) = local else { return None };
        let i = u32::from(v4).checked_sub(BASE)? as usize;
        (i < self.first_ms.len()).then_some(i)
    }

    fn hit(&self, idx: Option<usize>) {
        let now_ms = unix_ms();
        let sec = (now_ms / 1000).saturating_sub(self.base_sec) as usize;
        self.per_second[sec.min(SECONDS_KEPT - 1)].fetch_add(1, Ordering::Relaxed);
        let Some(i) = idx else { return };
        let _ = self.first_ms[i].compare_exchange(0, now_ms, Ordering::Relaxed, Ordering::Relaxed);
        let now_ns = self.t0.elapsed().as_nanos() as u64 + 1;
        let prev = self.last_ns[i].swap(now_ns, Ordering::Relaxed);
        if prev != 0 {
            let gap_ms = (now_ns.saturating_sub(prev) / 1_000_000) as i64;
            let b = (gap_ms - self.interval_ms).clamp(-JIT_LOW, JIT_HIGH) + JIT_LOW;
            self.jitter[b as usize].fetch_add(1, Ordering::Relaxed);
            if gap_ms - self.interval_ms > TARGET_JITTER_P99_MS {
                self.late_per_second[sec.min(SECONDS_KEPT - 1)].fetch_add(1, Ordering::Relaxed);
            }
            let s = sec.min(SECONDS_KEPT - 1);
            self.gaps_per_second[s].fetch_add(1, Ordering::Relaxed);
            self.gap_ns_per_second[s].fetch_add(now_ns.saturating_sub(prev), Ordering::Relaxed);
        }
    }

    /// The report the parent parses.
    fn report(&self) -> String {
        let mut out = String::new();
        let seen: Vec<u64> = self
            .first_ms
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .collect();
        writeln!(out, "seen {}", seen.len()).unwrap();
        writeln!(out, "first_max_ms {}", seen.iter().max().unwrap_or(&0)).unwrap();
        writeln!(
            out,
            "connections {}",
            self.connections.load(Ordering::Relaxed)
        )
        .unwrap();
        for (s, c) in self.per_second.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            if c > 0 {
                writeln!(out, "sec {} {c}", self.base_sec + s as u64).unwrap();
            }
        }
        for (s, c) in self.late_per_second.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            if c > 0 {
                writeln!(out, "late {} {c}", self.base_sec + s as u64).unwrap();
            }
        }
        for (s, c) in self.gaps_per_second.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            if c > 0 {
                let ns = self.gap_ns_per_second[s].load(Ordering::Relaxed);
                writeln!(out, "gaps {} {c} {ns}", self.base_sec + s as u64).unwrap();
            }
        }
        for (b, c) in self.jitter.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            if c > 0 {
                writeln!(out, "jit {} {c}", b as i64 - JIT_LOW).unwrap();
            }
        }
        out
    }
}

const KEEP_ALIVE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
const CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok";

async fn serve_http(mut s: tokio::net::TcpStream, idx: Option<usize>, st: Arc<Stats>, close: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    loop {
        let n = match s.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            st.hit(idx);
            if s.write_all(if close { CLOSE } else { KEEP_ALIVE })
                .await
                .is_err()
            {
                return;
            }
            if close {
                let _ = s.shutdown().await;
                return;
            }
            buf.copy_within(end + 4..filled, 0);
            filled -= end + 4;
        }
        if filled == buf.len() {
            return;
        }
    }
}

/// `ENGINE_LISTENER=1 engine MODE ENDPOINTS INTERVAL_MS MAX_SECONDS`: binds 0.0.0.0:0, prints
/// `port N`, serves until stdin closes (or `MAX_SECONDS` pass), then prints its report.
fn listener_main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args[1].clone();
    let endpoints: usize = args[2].parse().unwrap();
    let interval_ms: i64 = args[3].parse().unwrap();
    let max_secs: u64 = args[4].parse().unwrap();
    let st = Arc::new(Stats::new(endpoints, interval_ms));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The kernel's longest accept queue (`net.core.somaxconn`, 4096 here) rather than tokio's 1024:
    // a queue that overflows drops SYNs, which the client retries after 1 s, a timeout that would
    // be this harness's and not the prober's.
    let listener = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("0.0.0.0:0".parse().unwrap()).unwrap();
        socket.listen(4096).unwrap()
    });
    println!("port {}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        // EOF or "stop" on stdin ends the run.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = stop_tx.send(());
    });
    let st2 = st.clone();
    rt.block_on(async move {
        let accept = async {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                st2.connections.fetch_add(1, Ordering::Relaxed);
                let idx = s.local_addr().ok().and_then(|a| st2.index(a.ip()));
                if mode == "tcp" {
                    st2.hit(idx);
                    drop(s);
                } else {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve_http(s, idx, st2.clone(), mode == "http-close"));
                }
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = stop_rx => {}
            _ = tokio::time::sleep(Duration::from_secs(max_secs)) => {}
        }
    });
    print!("{}", st.report());
    println!("end");
    std::io::stdout().flush().unwrap();
    // Open connections are not waited for.
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------------
// The floor client.

/// Threads of the floor client: enough that a connection waiting on the listener does not hold the
/// schedule of the others.
const FLOOR_THREADS: usize = 32;

/// `ENGINE_FLOOR=1 engine PORTS ENDPOINTS INTERVAL_MS SECONDS`: probes endpoint `i` (on listener
/// port `PORTS[s % L]` of its service `s = i / ENGINE_PER_SERVICE`) every interval from offset
/// `interval × i / ENDPOINTS`, as rrguard's staggered schedule does, with a new blocking connection
/// per probe, for `SECONDS`, then exits.
fn floor_main() {
    let args: Vec<String> = std::env::args().collect();
    let ports: Vec<u16> = args[1].split(',').map(|p| p.parse().unwrap()).collect();
    let n: usize = args[2].parse().unwrap();
    let interval = Duration::from_millis(args[3].parse().unwrap());
    let seconds: u64 = args[4].parse().unwrap();
    let per_service: usize = env_or("ENGINE_PER_SERVICE", 100);
    let start = std::time::Instant::now();
    let stop = start + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..FLOOR_THREADS)
        .map(|t| {
            let ports = ports.clone();
            std::thread::spawn(move || {
                let mine: Vec<usize> = (t..n).step_by(FLOOR_THREADS).collect();
                let mut answer = [0u8; 512];
                for round in 0u32.. {
                    for &i in &mine {
                        let due = start + interval * round + interval.mul_f64(i as f64 / n as f64);
                        let now = std::time::Instant::now();
                        if now >= stop {
                            return;
                        }
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let port = ports[(i / per_service) % ports.len()];
                        floor_probe(
                            std::net::SocketAddr::new(endpoint(i).into(), port),
                            &mut answer,
                        );
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// One new-connection HTTP probe with the fewest system calls: connect, write, read the answer,
/// close with a reset (as rrguard does: no `TIME_WAIT`). Failures are not counted: the listener
/// counts what it served.
fn floor_probe(to: std::net::SocketAddr, answer: &mut [u8]) {
    use std::io::Read as _;
    let Ok(mut stream) = std::net::TcpStream::connect(to) else {
        return;
    };
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nhost: floor\r\nuser-agent: floor\r\n\r\n")
        .is_err()
    {
        return;
    }
    let mut got = 0;
    while got < KEEP_ALIVE.len() {
        match stream.read(&mut answer[got..]) {
            Ok(0) | Err(_) => return,
            Ok(k) => got += k,
        }
    }
}

/// A listener process seen from the parent; killed on drop.
struct Listener {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<std::process::ChildStdout>,
    port: u16,
}

impl Listener {
    fn start(mode: &str, endpoints: usize, interval_ms: u64, max_secs: u64) -> Listener {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                mode,
                &endpoints.to_string(),
                &interval_ms.to_string(),
                &max_secs.to_string(),
            ])
            .env("ENGINE_LISTENER", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start a listener process");
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("listener said {line:?}"));
        Listener {
            child,
            stdin,
            out,
            port,
        }
    }

    /// Stops it and returns its report lines.
    fn stop(&mut self) -> Vec<String> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let mut lines = Vec::new();
        let mut line = String::new();
        while self.out.read_line(&mut line).unwrap_or(0) > 0 {
            if line.trim() == "end" {
                break;
            }
            lines.push(line.trim().to_owned());
            line.clear();
        }
        let _ = self.child.wait();
        lines
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: one run per mode.

/// The rrguard binary measured: `ENGINE_RRGUARD` if set (to compare builds), else the one cargo
/// built for this benchmark.
fn rrguard() -> std::path::PathBuf {
    std::env::var_os("ENGINE_RRGUARD").map_or_else(support::rrguard_bin, Into::into)
}

/// `rrguard run -c CONFIG`, its output in `log`; killed on drop.
struct Rrguard {
    child: Child,
    log: std::path::PathBuf,
}

impl Rrguard {
    fn start(config: &std::path::Path, log: std::path::PathBuf) -> Rrguard {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(rrguard())
            .args(["run", "-c"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", rrguard().display()));
        Rrguard { child, log }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }
}

impl Drop for Rrguard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy)]
struct Size {
    services: usize,
    per_service: usize,
    interval_ms: u64,
    seconds: u64,
    listeners: usize,
}

impl Size {
    fn endpoints(&self) -> usize {
        self.services * self.per_service
    }
}

/// A port free for TCP and UDP on 127.0.0.1 (for `serve`).
fn free_dns_port() -> u16 {
    let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
    for _ in 0..100 {
        let port = free_tcp_port(lo);
        if UdpSocket::bind((lo, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for TCP and UDP on 127.0.0.1");
}

fn config(state: &std::path::Path, size: Size, mode: &str, ports: &[u16]) -> String {
    let dns_port = free_dns_port();
    let api_port = free_tcp_port(Ipv4Addr::LOCALHOST.into());
    let mut text = format!(
        r#"[node]
id = "bench"
listen = "127.0.0.1:{api_port}"
state_dir = "{state}"
{in_flight}
[defaults]
interval = "{interval}ms"
timeout = "500ms"
fall = 3
rise = 2
ttl = 60

[[writer]]
name = "dns"
type = "serve"
listen = ["127.0.0.1:{dns_port}"]

[[writer.zone]]
name = "bench.test"
ns = ["ns1.bench.test"]
"#,
        state = state.display(),
        interval = size.interval_ms,
        in_flight = std::env::var("ENGINE_MAX_IN_FLIGHT")
            .map(|n| format!("max_probes_in_flight = {n}\n"))
            .unwrap_or_default(),
    );
    let check = if mode == "tcp" { "tcp" } else { "http" };
    for s in 0..size.services {
        let eps: Vec<String> = (0..size.per_service)
            .map(|k| format!("\"{}\"", endpoint(s * size.per_service + k)))
            .collect();
        write!(
            text,
            "\n[[service]]\nfqdn = \"s{s}.bench.test\"\nzone = \"bench.test\"\nwriter = \"dns\"\nendpoints = [{}]\n[service.check]\ntype = \"{check}\"\nport = {}\n{}",
            eps.join(", "),
            ports[s % ports.len()],
            if mode == "http-reuse" {
                "keep_alive = true\n"
            } else {
                ""
            },
        )
        .unwrap();
    }
    text
}

/// rrguard's CPU time (user + system), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // clock ticks: 100 per second on Linux (USER_HZ).
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// A `/proc/PID/status` field in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Outcome {
    mode: String,
    size: Size,
    asked: f64,
    sustained: f64,
    /// Probes/s from each endpoint's gaps in the window ([`run`]).
    from_gaps: f64,
    cpu_per_1000: f64,
    rss_mb: f64,
    jitter: (i64, i64, i64),
    first_all_s: Option<f64>,
    probed: usize,
    false_downs: usize,
    withdrawn: usize,
    abstained: usize,
    load_before: String,
    load_after: String,
    listener_cpu: f64,
}

fn percentile(hist: &BTreeMap<i64, u64>, p: f64) -> i64 {
    let total: u64 = hist.values().sum();
    if total == 0 {
        return 0;
    }
    let want = ((total as f64) * p).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (&k, &c) in hist {
        acc += c;
        if acc >= want {
            return k;
        }
    }
    *hist.keys().last().unwrap()
}

/// What probes in a run: rrguard, or the floor client.
enum Prober {
    Rrguard(Rrguard),
    Floor(Child),
}

impl Prober {
    fn pid(&self) -> u32 {
        match self {
            Prober::Rrguard(r) => r.child.id(),
            Prober::Floor(c) => c.id(),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        if let Prober::Floor(c) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(mode: &str, size: Size) -> Outcome {
    let n = size.endpoints();
    // The floor client makes a new connection per probe to listeners that would keep it.
    let served = if mode == "floor" {
        "http-keepalive"
    } else {
        mode
    };
    let mut listeners: Vec<Listener> = (0..size.listeners)
        .map(|_| Listener::start(served, n, size.interval_ms, size.seconds + 120))
        .collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.port).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rrguard.toml");
    std::fs::write(&path, config(&dir.path().join("state"), size, mode, &ports)).unwrap();
    let load_before = loadavg();
    let listener_cpu0: f64 = listeners.iter().map(|l| cpu_seconds(l.child.id())).sum();
    let started_ms = unix_ms();
    let prober = if mode == "floor" {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        Prober::Floor(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    ports.join(","),
                    n.to_string(),
                    size.interval_ms.to_string(),
                    size.seconds.to_string(),
                ])
                .env("ENGINE_FLOOR", "1")
                .stdin(Stdio::null())
                .spawn()
                .expect("cannot start the floor client"),
        )
    } else {
        Prober::Rrguard(Rrguard::start(&path, dir.path().join("rrguard.log")))
    };
    let pid = prober.pid();
    // RSS each second (ENGINE_TIMELINE), to see when the peak comes.
    let mut rss_timeline = Vec::new();
    if std::env::var_os("ENGINE_TIMELINE").is_some() {
        for _ in 0..size.seconds {
            std::thread::sleep(Duration::from_secs(1));
            rss_timeline.push(status_kb(pid, "VmRSS:") / 1024);
        }
    } else {
        std::thread::sleep(Duration::from_secs(size.seconds));
    }
    let cpu = cpu_seconds(pid);
    let rss_mb = status_kb(pid, "VmHWM:") as f64 / 1024.0;
    let listener_cpu = listeners
        .iter()
        .map(|l| cpu_seconds(l.child.id()))
        .sum::<f64>()
        - listener_cpu0;
    let ended_ms = unix_ms();
    let load_after = loadavg();
    let mut prober = prober;
    let (log, exited) = match &mut prober {
        Prober::Rrguard(daemon) => (daemon.log(), daemon.child.try_wait().ok().flatten()),
        Prober::Floor(_) => (String::new(), None),
    };
    drop(prober);
    if let Some(keep) = std::env::var_os("ENGINE_KEEP_LOG") {
        let to = std::path::Path::new(&keep).join(format!("{mode}-{n}.log"));
        if let Err(e) = std::fs::write(&to, &log) {
            eprintln!("cannot keep the log in {}: {e}", to.display());
        }
    }
    if exited.is_some() || std::env::var_os("ENGINE_SHOW_LOG").is_some() {
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!(
            "rrguard {}; last lines of its log:",
            exited.map_or_else(
                || "still running".to_owned(),
                |s| format!("exited early ({s})")
            )
        );
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }

    let mut per_second: BTreeMap<u64, u64> = BTreeMap::new();
    let mut late: BTreeMap<u64, u64> = BTreeMap::new();
    // Per second: gaps that ended in it, and their sum in ns.
    let mut gaps: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut jitter: BTreeMap<i64, u64> = BTreeMap::new();
    let (mut probed, mut first_max, mut connections) = (0usize, 0u64, 0u64);
    for l in &mut listeners {
        for line in l.stop() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["seen", c] => probed += c.parse::<usize>().unwrap(),
                ["connections", c] => connections += c.parse::<u64>().unwrap(),
                ["first_max_ms", t] => first_max = first_max.max(t.parse().unwrap()),
                ["sec", s, c] => {
                    *per_second.entry(s.parse().unwrap()).or_default() += c.parse::<u64>().unwrap()
                }
                ["late", s, c] => {
                    *late.entry(s.parse().unwrap()).or_default() += c.parse::<u64>().unwrap()
                }
                ["gaps", s, c, ns] => {
                    let e = gaps.entry(s.parse().unwrap()).or_default();
                    e.0 += c.parse::<u64>().unwrap();
                    e.1 += ns.parse::<u64>().unwrap();
                }
                ["jit", b, c] => {
                    *jitter.entry(b.parse().unwrap()).or_default() += c.parse::<u64>().unwrap()
                }
                _ => {}
            }
        }
    }
    // Sustained: whole seconds after a warm-up of a third of the run (at most 10 s), up to the
    // last whole second before the end.
    let warm = (size.seconds / 3).min(10);
    let (from, to) = (started_ms / 1000 + 1 + warm, ended_ms / 1000);
    let window: Vec<u64> = (from..to)
        .map(|s| per_second.get(&s).copied().unwrap_or(0))
        .collect();
    if std::env::var_os("ENGINE_TIMELINE").is_some() {
        let all: Vec<String> = (started_ms / 1000..=ended_ms / 1000)
            .map(|s| per_second.get(&s).copied().unwrap_or(0).to_string())
            .collect();
        eprintln!("{mode}: probes per second from start: {}", all.join(" "));
        let late: Vec<String> = (started_ms / 1000..=ended_ms / 1000)
            .map(|s| late.get(&s).copied().unwrap_or(0).to_string())
            .collect();
        eprintln!(
            "{mode}: gaps over interval + {TARGET_JITTER_P99_MS} ms per second from start: {}",
            late.join(" ")
        );
        eprintln!("{mode}: connections accepted: {connections}");
        let rss: Vec<String> = rss_timeline.iter().map(u64::to_string).collect();
        eprintln!("{mode}: RSS MB at each second: {}", rss.join(" "));
    }
    let sustained = if window.is_empty() {
        0.0
    } else {
        window.iter().sum::<u64>() as f64 / window.len() as f64
    };
    // Each endpoint's probes per second over the gaps that ended in the window, times the
    // endpoints: a gap's length is measured, so a probe that jitter moves across the window's
    // edges changes both the count and the time they cover.
    let (count, ns) = (from..to)
        .filter_map(|s| gaps.get(&s))
        .fold((0u64, 0u64), |(c, t), (gc, gt)| (c + gc, t + gt));
    let from_gaps = if ns == 0 {
        f64::NAN
    } else {
        n as f64 * count as f64 / (ns as f64 / 1e9)
    };
    let total: u64 = per_second.range(..=ended_ms / 1000).map(|(_, c)| *c).sum();
    let (mut false_downs, mut withdrawn, mut abstained) = (0, 0, 0);
    for line in log.lines() {
        if line.contains("endpoint is down") {
            false_downs += 1;
        }
        if line.contains("DNS updated") {
            withdrawn += line.matches("remove 127.").count();
        }
        if line.contains("abstain") {
            abstained += line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("abstained="))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1);
        }
    }
    Outcome {
        mode: mode.to_owned(),
        size,
        asked: n as f64 * 1000.0 / size.interval_ms as f64,
        sustained,
        from_gaps,
        cpu_per_1000: if total == 0 {
            f64::NAN
        } else {
            cpu / total as f64 * 1000.0
        },
        rss_mb,
        jitter: (
            percentile(&jitter, 0.5),
            percentile(&jitter, 0.99),
            jitter.keys().last().copied().unwrap_or(0),
        ),
        first_all_s: (probed == n).then(|| first_max.saturating_sub(started_ms) as f64 / 1000.0),
        probed,
        false_downs,
        withdrawn,
        abstained,
        load_before,
        load_after,
        listener_cpu,
    }
}

fn print_row(o: &Outcome) {
    let first = o.first_all_s.map_or_else(
        || format!("never ({} probed)", o.probed),
        |s| format!("{s:.2}"),
    );
    println!(
        "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.3} | {:.0} | {} / {} / {} | {} | {} | {} | {} | {:.1} | {} → {} |",
        o.mode,
        o.size.endpoints(),
        o.size.interval_ms,
        o.asked,
        o.sustained,
        o.from_gaps,
        o.cpu_per_1000,
        o.rss_mb,
        o.jitter.0,
        o.jitter.1,
        o.jitter.2,
        first,
        o.false_downs,
        o.withdrawn,
        o.abstained,
        o.listener_cpu,
        o.load_before,
        o.load_after,
    );
}

fn main() {
    if std::env::var_os("ENGINE_LISTENER").is_some() {
        listener_main();
        return;
    }
    if std::env::var_os("ENGINE_FLOOR").is_some() {
        floor_main();
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full {
        Size {
            services: env_or("ENGINE_SERVICES", 100),
            per_service: env_or("ENGINE_PER_SERVICE", 100),
            interval_ms: env_or("ENGINE_INTERVAL_MS", 1000),
            seconds: env_or("ENGINE_SECONDS", 60),
            listeners: env_or("ENGINE_LISTENERS", 2),
        }
    } else {
        Size {
            services: 2,
            per_service: 10,
            interval_ms: 500,
            seconds: 5,
            listeners: 1,
        }
    };
    let modes: String = if full {
        env_or(
            "ENGINE_MODES",
            "http-keepalive,http-reuse,http-close,tcp".to_owned(),
        )
    } else {
        "http-close".to_owned()
    };
    let overload: u64 = if full {
        env_or("ENGINE_OVERLOAD", 2)
    } else {
        0
    };
    println!(
        "rrguard probe engine benchmark ({}): rrguard {}, {} CPUs",
        if full {
            "full"
        } else {
            "smoke, run with --bench for the full measurement"
        },
        rrguard().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "| mode | endpoints | interval ms | asked probes/s | probes/s counted | probes/s from gaps | CPU-s per 1,000 probes | peak RSS MB | jitter p50 / p99 / max ms | first probe of all (s) | false downs | healthy withdrawn | abstained | listeners CPU-s | load avg before → after |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
    let mut outcomes = Vec::new();
    for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        assert!(
            ["http-keepalive", "http-reuse", "http-close", "tcp", "floor"].contains(&mode),
            "unknown mode {mode:?} in ENGINE_MODES"
        );
        let o = run(mode, size);
        print_row(&o);
        outcomes.push(o);
    }
    if overload > 1 {
        let over = Size {
            interval_ms: size.interval_ms / overload,
            ..size
        };
        let mode: String = env_or("ENGINE_OVERLOAD_MODE", "http-close".to_owned());
        let o = run(&mode, over);
        print_row(&o);
        outcomes.push(o);
    }
    if !full {
        let o = &outcomes[0];
        assert_eq!(o.probed, size.endpoints(), "every endpoint is probed");
        assert_eq!(o.withdrawn, 0, "no healthy endpoint is withdrawn");
        println!("smoke: ok");
        return;
    }
    // Verdicts: the overload run is judged only on what must hold at any load.
    let mut missed = Vec::new();
    // The floor is a reference, not rrguard: it has no targets.
    for o in outcomes.iter().filter(|o| o.mode != "floor") {
        let tag = format!("{} {}×{}ms", o.mode, o.size.endpoints(), o.size.interval_ms);
        if o.withdrawn > 0 {
            missed.push(format!(
                "{tag}: {} healthy endpoints withdrawn (target 0)",
                o.withdrawn
            ));
        }
        if o.size.interval_ms != size.interval_ms {
            continue;
        }
        // Judged on the rate from the gaps, to the nearest whole probe per second (the target's
        // precision): the count of probes in the window also moves by the probes whose jitter
        // took them across its two edges (±0.5/s at 10,000 endpoints over 20 s), which says
        // nothing about the prober, while one probe a second late or missed among the 200,000 of
        // a 20 s window moves the rate from the gaps by 0.05. An empty window (NaN) is a miss too.
        let rate = o.from_gaps;
        if o.asked >= TARGET_PROBES_PER_S && (rate.is_nan() || rate.round() < TARGET_PROBES_PER_S) {
            missed.push(format!(
                "{tag}: {rate:.1} probes/s from the gaps, {:.1} counted (target ≥ {TARGET_PROBES_PER_S})",
                o.sustained
            ));
        }
        if o.rss_mb > TARGET_RSS_MB {
            missed.push(format!(
                "{tag}: peak RSS {:.0} MB (target ≤ {TARGET_RSS_MB})",
                o.rss_mb
            ));
        }
        if o.jitter.1 > TARGET_JITTER_P99_MS {
            missed.push(format!(
                "{tag}: jitter p99 {} ms (target ≤ {TARGET_JITTER_P99_MS})",
                o.jitter.1
            ));
        }
        if o.first_all_s.is_none_or(|s| s > TARGET_FIRST_PROBE_S) {
            let after = o
                .first_all_s
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s"));
            missed.push(format!(
                "{tag}: first probe of every endpoint {after} after start (target ≤ {TARGET_FIRST_PROBE_S} s)"
            ));
        }
    }
    if missed.is_empty() {
        println!("all targets met");
    } else {
        println!("targets missed:");
        for m in &missed {
            println!("- {m}");
        }
        std::process::exit(1);
    }
}
