//! `[metrics] statsd`: a real `rrguard run` probing real local HTTP endpoints pushes StatsD lines to
//! a UDP listener in this test: rrdnsd's names (`probe.success.cnt`, `probe.failure.cnt`,
//! `probe_time_msec`, `status_change.cnt`) under the configured prefix, and rrguard's own, and they
//! follow an endpoint going down.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

use support::{Daemon, HttpEndpoints, wait_until};

const EVENTUALLY: Duration = Duration::from_secs(30);

/// Every line received so far, and the sums of the counters by name.
#[derive(Default)]
struct Seen {
    lines: Vec<String>,
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, String>,
}

impl Seen {
    fn read(&mut self, socket: &UdpSocket) {
        let mut buf = [0u8; 65_536];
        while let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8(buf[..n].to_vec()).unwrap();
            assert!(n <= 1432, "datagram of {n} bytes");
            for line in text.lines() {
                let (name, rest) = line.split_once(':').unwrap_or_else(|| panic!("{line:?}"));
                let (value, kind) = rest.split_once('|').unwrap_or_else(|| panic!("{line:?}"));
                match kind {
                    "c" => {
                        *self.counters.entry(name.to_owned()).or_default() +=
                            value.parse::<u64>().unwrap()
                    }
                    "g" => {
                        self.gauges.insert(name.to_owned(), value.to_owned());
                    }
                    "ms" => {
                        value.parse::<u64>().unwrap_or_else(|_| panic!("{line:?}"));
                    }
                    other => panic!("unexpected type {other:?} in {line:?}"),
                }
                self.lines.push(line.to_owned());
            }
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

#[test]
fn a_running_daemon_pushes_rrdnsd_and_rrguard_names() {
    let e2: IpAddr = "127.0.0.2".parse().unwrap();
    let e3: IpAddr = "127.0.0.3".parse().unwrap();
    let http = HttpEndpoints::start(&[e2, e3]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let statsd = socket.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rrguard.toml");
    std::fs::write(
        &config,
        format!(
            r#"[node]
id = "statsd-node"
state_dir = "{state}"

[defaults]
interval = "100ms"
timeout = "80ms"
fall = 2
rise = 2

[[writer]]
name = "local"
type = "hosts"
path = "{hosts}"

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "local"
endpoints = ["127.0.0.2", "127.0.0.3"]
[service.check]
type = "http"
port = {port}
path = "/health"

[metrics]
statsd = "{statsd}"
statsd_prefix = "rrdnsd"
statsd_interval = "200ms"
"#,
            state = dir.path().display(),
            hosts = dir.path().join("hosts").display(),
            port = http.port,
        ),
    )
    .unwrap();
    let d = Daemon::start(&["run", "-c", config.to_str().unwrap()]);
    let mut seen = Seen::default();
    let up = |ip: &str| format!("rrdnsd.endpoint.up.www_example_test.{ip}");
    // The status changes are counted from events and the gauges read from the status: one push
    // may carry an endpoint's gauge and the next its status change, so both are waited for.
    wait_until(
        "probe successes, both endpoints up and their status changes",
        EVENTUALLY,
        || {
            seen.read(&socket);
            seen.counter("rrdnsd.probe.success.cnt") >= 4
                && seen.gauges.get(&up("127_0_0_2")).map(String::as_str) == Some("1")
                && seen.gauges.get(&up("127_0_0_3")).map(String::as_str) == Some("1")
                && seen.counter("rrdnsd.status_change.cnt") >= 2
        },
    );
    assert_eq!(
        seen.counter("rrdnsd.probe.failure.cnt"),
        0,
        "{:?}\n{}",
        seen.lines,
        d.log()
    );
    assert!(
        seen.lines
            .iter()
            .any(|l| l.starts_with("rrdnsd.probe_time_msec:") && l.ends_with("|ms")),
        "{:?}",
        seen.lines
    );
    // Both endpoints' first agreed state counts as a status change, as rrdnsd's first computed status.
    assert_eq!(
        seen.counter("rrdnsd.status_change.cnt"),
        2,
        "{:?}",
        seen.lines
    );
    assert!(seen.counter("rrdnsd.probes.www_example_test.127_0_0_2.success") >= 2);
    assert_eq!(
        seen.gauges.get("rrdnsd.node.leader").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        seen.gauges.get("rrdnsd.node.isolated").map(String::as_str),
        Some("0")
    );

    let writes = "rrdnsd.dns.writes.www_example_test.local.ok";
    let writes_before = seen.counter(writes);
    http.stop(e3);
    wait_until(
        "failures counted, the endpoint down, the write counted",
        EVENTUALLY,
        || {
            seen.read(&socket);
            seen.counter("rrdnsd.probe.failure.cnt") >= 2
                && seen.gauges.get(&up("127_0_0_3")).map(String::as_str) == Some("0")
                && seen.counter(writes) > writes_before
        },
    );
    assert_eq!(
        seen.counter("rrdnsd.status_change.cnt"),
        3,
        "{:?}",
        seen.lines
    );
    assert!(seen.counter("rrdnsd.probes.www_example_test.127_0_0_3.failure") >= 2);
    assert_eq!(
        seen.counter("rrdnsd.probes.www_example_test.127_0_0_2.failure"),
        0
    );
}
