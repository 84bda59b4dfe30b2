//! Dashboard load time at 1,000 endpoints in a real headless Chromium.
//!
//! The real `rrguard run` keeps 10 services of 100 loopback endpoints each (TCP checks against real
//! listeners on 127.0.1.0/24 to 127.0.10.0/24, published by a `serve` writer); once every endpoint
//! has been probed, Chromium (Debian `chromium` through `chromedriver`) loads `GET /` [`LOADS`]
//! times. Per load it reads the Navigation Timing entry (`domInteractive`, `loadEventEnd`, ms from
//! the start of navigation) and the moment the dashboard's script finished wiring the page
//! (`document.body.dataset.ready`: the page is interactive), the HTML size, and how long a live update
//! replacing 10 rows takes to apply. Prints each figure's median and worst; target:
//! interactive under 1 s (issue 9). Exits non-zero if the median misses it.
//!
//! `cargo bench --bench dashboard` (or `scripts/bench`) runs the measurement. Without `--bench`, as
//! under `cargo test --all-targets`, it runs a smoke version (20 endpoints, one load) so CI keeps
//! this code working. See docs/benchmarks.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::Duration;

use support::browser::Browser;
use support::{Daemon, free_tcp_port, wait_until};

const SERVICES: usize = 10;
const PER_SERVICE: usize = 100;
const LOADS: usize = 7;
const TARGET_MS: f64 = 1000.0;

/// TCP listeners on every endpoint address, on one common port, served by ONE thread that accepts
/// (and closes) pending connections every 20 ms. `HttpEndpoints` runs a polling thread per address
/// (5 ms): at 1,000 addresses that is 200,000 wake-ups a second, a load average in the hundreds on
/// these 2 cores, and the browser never finishes a navigation; this harness would measure itself.
struct Listeners {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listeners {
    fn start(ips: &[IpAddr]) -> Listeners {
        use std::net::TcpListener;
        use std::sync::atomic::{AtomicBool, Ordering};
        for _ in 0..50 {
            let port = free_tcp_port(ips[0]);
            let bound: Result<Vec<TcpListener>, _> = ips
                .iter()
                .map(|ip| TcpListener::bind((*ip, port)))
                .collect();
            let Ok(listeners) = bound else { continue };
            for l in &listeners {
                l.set_nonblocking(true).expect("nonblocking listener");
            }
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let flag = std::sync::Arc::clone(&stop);
            let thread = std::thread::spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    for l in &listeners {
                        while let Ok((conn, _)) = l.accept() {
                            drop(conn);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            return Listeners {
                port,
                stop,
                thread: Some(thread),
            };
        }
        panic!(
            "could not bind all {} addresses on one common port in 50 tries",
            ips.len()
        );
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET path`: status code and body; code 0 when the node does not answer (yet).
fn get(port: u16, path: &str) -> (u16, String) {
    let attempt = || -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    let out = attempt().unwrap_or_default();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

fn stats(name: &str, mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    println!(
        "  {name:<34} median {median:7.1} ms   worst {:7.1} ms",
        v[v.len() - 1]
    );
    median
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (services, per) = if full {
        (SERVICES, PER_SERVICE)
    } else {
        (2, 10)
    };
    let loads = if full { LOADS } else { 1 };
    let ips: Vec<IpAddr> = (0..services)
        .flat_map(|s| {
            (0..per).map(move |e| IpAddr::V4(Ipv4Addr::new(127, 0, 1 + s as u8, 1 + e as u8)))
        })
        .collect();
    let http = Listeners::start(&ips);
    let dir = tempfile::tempdir().unwrap();
    let api = free_tcp_port("127.0.0.1".parse().unwrap());
    let dns = free_tcp_port("127.0.0.1".parse().unwrap());
    let mut text = format!(
        r#"[node]
id = "bench"
listen = "127.0.0.1:{api}"
state_dir = "{state}"

[defaults]
interval = "1s"
timeout = "500ms"
fall = 1
rise = 1
ttl = 60

[[writer]]
name = "dns"
type = "serve"
listen = ["127.0.0.1:{dns}"]

[[writer.zone]]
name = "example.test"
ns = ["ns1.example.test"]
"#,
        state = dir.path().join("state").display()
    );
    for (s, chunk) in ips.chunks(per).enumerate() {
        let eps: Vec<String> = chunk.iter().map(|e| format!("\"{e}\"")).collect();
        write!(
            text,
            "\n[[service]]\nfqdn = \"s{s}.example.test\"\nzone = \"example.test\"\nwriter = \"dns\"\nendpoints = [{}]\n[service.check]\ntype = \"tcp\"\nport = {}\n",
            eps.join(", "),
            http.port
        )
        .unwrap();
    }
    let config = dir.path().join("rrguard.toml");
    std::fs::write(&config, text).unwrap();
    let _daemon = Daemon::start(&["run", "-c", config.to_str().unwrap()]);
    wait_until("every endpoint probed", Duration::from_secs(120), || {
        get(api, "/ready").0 == 200
    });
    // Ready can come before the first cluster view lists the endpoints: wait for every row.
    let mut page = String::new();
    wait_until("every endpoint has a row", Duration::from_secs(60), || {
        page = get(api, "/").1;
        page.matches("<tr id=\"ep-").count() == ips.len()
    });
    println!(
        "dashboard: {} endpoints ({services} services), page {} KiB, {loads} loads in headless Chromium",
        ips.len(),
        page.len() / 1024
    );

    let browser = Browser::start(1280, 900);
    let url = format!("http://127.0.0.1:{api}/");
    let (mut interactive, mut ready, mut loaded, mut apply) = (vec![], vec![], vec![], vec![]);
    for _ in 0..loads {
        browser.goto(&url);
        let v = browser.eval(
            "const n = performance.getEntriesByType('navigation')[0];
             return [n.domInteractive, n.loadEventEnd, Number(document.body.dataset.ready)];",
        );
        interactive.push(v[0].as_f64().unwrap());
        loaded.push(v[1].as_f64().unwrap());
        ready.push(v[2].as_f64().unwrap());
        // A live update's typical size: 10 rows replaced, as the stream does it.
        let t = browser.eval(
            "const t0 = performance.now();
             const rows = Array.from(document.querySelectorAll('tr[id^=ep-]')).slice(0, 10);
             for (const r of rows) r.outerHTML = r.outerHTML;
             document.body.offsetHeight;
             return performance.now() - t0;",
        );
        apply.push(t.as_f64().unwrap());
    }
    let i = stats("domInteractive", interactive);
    stats("script ready (page interactive)", ready.clone());
    stats("loadEventEnd", loaded);
    stats("10 rows replaced (one update)", apply);
    let r = {
        let mut r = ready;
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    println!(
        "dashboard: interactive in {:.0} ms (median), target < {TARGET_MS:.0} ms: {}",
        r.max(i),
        if r.max(i) < TARGET_MS {
            "met"
        } else {
            "MISSED"
        }
    );
    if full && r.max(i) >= TARGET_MS {
        std::process::exit(1);
    }
}
