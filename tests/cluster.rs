//! The real cluster: three `rrguard` processes, each in its own network namespace, probing three HTTP
//! endpoints in another namespace and writing to one Knot primary in a third, over a bridge in a hub
//! namespace (tests/support/netns.rs). Faults are nftables drops in the receiving namespace's input
//! hook, so probes and peers see real timeouts; crashes are SIGKILL.
//!
//! Each test builds its own lab, so tests run in parallel. Every wait is bounded by a generous deadline
//! and nothing asserts on timing; "nothing changes" is checked after a hold several times longer than
//! it takes the cluster to act (fall × interval + vote_ttl ≈ 1.6 s).
//!
//! Needs root, iproute2, nftables, knot, dnsutils, curl and python3 (the endpoints are
//! `python3 -m http.server`). A missing tool or missing privileges fail the test with a message.

mod support;

use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use rrguard::agree::override_sync::{self, OVERRIDES_PATH, OverridesMessage};
use rrguard::agree::wire::{self, Key, Message, Vote};
use rrguard::decide::overrides::{Override, OverrideKind};
use serde_json::Value;
use support::{KEY_NAME, Lab, Ns, NsKnot, NsProcess, TSIG_ALGORITHM, required_tool, rrguard_bin};

/// Generous bound for anything that should happen within a few probe intervals or vote lifetimes.
const EVENTUALLY: Duration = Duration::from_secs(30);
/// How long a buggy daemon is given to make a change it must not make: ≫ fall × interval + vote_ttl.
const HOLD: Duration = Duration::from_secs(3);
/// Port of every node's HTTP server (peers and status); fixed, it only exists inside the lab.
const NODE_PORT: u16 = 9053;
/// Port of the HTTP endpoints.
const HTTP_PORT: u16 = 8080;
const FQDN: &str = "www.example.test";
/// Host numbers in the lab's /24 (the hub bridge is .1).
const MONITORS: [u8; 3] = [11, 12, 13];
const DNS_HOST: u8 = 53;
const ENDPOINTS: [u8; 3] = [101, 102, 103];
/// Every node's `[api]` bearer token (overrides need it).
const API_TOKEN: &str = "cluster-test-token-0123456789";

/// Variations of the standard topology.
#[derive(Default)]
struct Opts {
    /// Give mon-3 `[cluster] self_check` = the DNS server.
    self_check_on_mon3: bool,
    /// Every node also serves the zone itself (`type = "serve"` on its own address, port 53), a
    /// second writer of the service beside the shared Knot primary.
    serve: bool,
}

struct Monitor {
    id: String,
    ns: Ns,
    config: PathBuf,
    log: PathBuf,
    process: NsProcess,
}

impl Monitor {
    /// Starts rrguard in the monitor's namespace; its output is appended to the monitor's log.
    fn spawn(ns: &Ns, id: &str, config: &Path, log: &Path) -> NsProcess {
        ns.spawn(
            id,
            log,
            &rrguard_bin(),
            &[
                "--log-format",
                "text",
                "run",
                "-c",
                config.to_str().unwrap(),
            ],
        )
    }
}

/// Three monitors, three endpoints, one Knot. Fields drop in order: processes first, the lab (which
/// deletes the namespaces and the directory holding the logs) last.
struct Cluster {
    monitors: Vec<Monitor>,
    endpoints: Vec<NsProcess>,
    knot: NsKnot,
    eps: Ns,
    dns: Ns,
    /// The shared cluster secret, as the nodes use it (the trimmed file contents).
    secret: Vec<u8>,
    lab: Lab,
}

impl Cluster {
    /// Cuts mon-1 off from its peers in both directions (each dropped in the receiver's input hook);
    /// it keeps reaching DNS and the endpoints.
    fn partition_mon1(&self) {
        self.monitors[0]
            .ns
            .drop_from(&[self.mon_ip(1), self.mon_ip(2)], None);
        for i in 1..3 {
            self.monitors[i].ns.drop_from(&[self.mon_ip(0)], None);
        }
    }

    /// Builds the lab, starts everything and waits until the cluster agrees every endpoint is up with
    /// mon-1 as the leader.
    fn start(opts: Opts) -> Cluster {
        for (tool, package) in [("curl", "curl"), ("dig", "dnsutils"), ("knotd", "knot")] {
            required_tool(tool, package);
        }
        let python = real_python();
        let mut lab = Lab::new();
        let monitors: Vec<Ns> = MONITORS
            .iter()
            .enumerate()
            .map(|(i, h)| lab.add_host(&format!("mon{}", i + 1), &[*h]))
            .collect();
        let dns = lab.add_host("dns", &[DNS_HOST]);
        let eps = lab.add_host("eps", &ENDPOINTS);

        // At the zone's $TTL (60), which the services' ttl matches: nothing needs a rewrite at start.
        let zone: String = eps.addrs.iter().map(|a| format!("www A {a}\n")).collect();
        let knot = NsKnot::start(&dns, &lab.dir().join("knot"), &zone);

        // python3 -m http.server serves the files of its directory: /health answers 200.
        let www = lab.dir().join("www");
        fs::create_dir(&www).unwrap();
        fs::write(www.join("health"), "ok\n").unwrap();
        let endpoints: Vec<NsProcess> = eps
            .addrs
            .iter()
            .map(|a| {
                eps.spawn(
                    &format!("endpoint {a}"),
                    &lab.dir().join(format!("endpoint-{a}.log")),
                    &python,
                    &[
                        "-m",
                        "http.server",
                        &HTTP_PORT.to_string(),
                        "--bind",
                        &a.to_string(),
                        "--directory",
                        www.to_str().unwrap(),
                    ],
                )
            })
            .collect();

        // Before any monitor starts: one probing an endpoint whose server is still starting would
        // rightly mark it down (python3 can take a second to start on a loaded machine).
        for (a, process) in eps.addrs.iter().zip(&endpoints) {
            eventually(&format!("endpoint {a} serves /health"), || {
                assert!(
                    process.is_running(),
                    "{} exited:\n{}",
                    process.label(),
                    process.log()
                );
                lab.hub()
                    .http("GET", &format!("http://{a}:{HTTP_PORT}/health"), &[], None)
                    .is_ok_and(|(code, _)| code == 200)
            });
        }

        let secret = hex(&random_bytes(24));
        let secret_file = lab.dir().join("cluster.secret");
        fs::write(&secret_file, format!("{secret}\n")).unwrap();
        let tsig_file = knot.write_secret_file(lab.dir());
        let token_file = lab.dir().join("api.token");
        fs::write(&token_file, format!("{API_TOKEN}\n")).unwrap();

        let ids: Vec<String> = (1..=3).map(|i| format!("mon-{i}")).collect();
        let monitors: Vec<Monitor> = monitors
            .into_iter()
            .enumerate()
            .map(|(i, ns)| {
                let peers: String = monitors_except(&ids, i)
                    .map(|(j, id)| {
                        format!(
                            "[[cluster.peers]]\nid = \"{id}\"\nurl = \"http://{}:{NODE_PORT}\"\n\n",
                            lab.addr(MONITORS[j])
                        )
                    })
                    .collect();
                let self_check = if opts.self_check_on_mon3 && i == 2 {
                    format!("self_check = [\"{}\"]\n", knot.addr)
                } else {
                    String::new()
                };
                let state = lab.dir().join(&ids[i]);
                fs::create_dir(&state).unwrap();
                let (serve, writers) = if opts.serve {
                    (
                        format!(
                            "[[writer]]\nname = \"dns\"\ntype = \"serve\"\nlisten = [\"{}:53\"]\n\n[[writer.zone]]\nname = \"example.test\"\nns = [\"ns1.example.test\"]\n\n",
                            ns.ip()
                        ),
                        r#"writers = ["primary", "dns"]"#,
                    )
                } else {
                    (String::new(), r#"writer = "primary""#)
                };
                let endpoints: Vec<String> = eps.addrs.iter().map(|a| format!("\"{a}\"")).collect();
                let config = format!(
                    r#"[node]
id = "{id}"
listen = "{ip}:{NODE_PORT}"
state_dir = "{state}"

[api]
token_file = "{token_file}"

[defaults]
interval = "300ms"
timeout = "200ms"
fall = 2
rise = 2
ttl = 60

[cluster]
secret_file = "{secret_file}"
heartbeat = "300ms"
vote_ttl = "1s"
{self_check}
{peers}[[writer]]
name = "primary"
type = "rfc2136"
server = "{dns}"
timeout = "1s"
tsig = {{ name = "{KEY_NAME}", algorithm = "{TSIG_ALGORITHM}", secret_file = "{tsig}" }}

{serve}[[service]]
fqdn = "{FQDN}"
zone = "example.test"
{writers}
endpoints = [{endpoints}]

[service.check]
type = "http"
port = {HTTP_PORT}
path = "/health"
"#,
                    id = ids[i],
                    ip = ns.ip(),
                    state = state.display(),
                    secret_file = secret_file.display(),
                    dns = knot.addr,
                    tsig = tsig_file.display(),
                    token_file = token_file.display(),
                    endpoints = endpoints.join(", "),
                );
                let path = lab.dir().join(format!("{}.toml", ids[i]));
                fs::write(&path, config).unwrap();
                let log = lab.dir().join(format!("{}.log", ids[i]));
                Monitor {
                    id: ids[i].clone(),
                    process: Monitor::spawn(&ns, &ids[i], &path, &log),
                    ns,
                    config: path,
                    log,
                }
            })
            .collect();

        let cluster = Cluster {
            monitors,
            endpoints,
            knot,
            eps,
            dns,
            secret: secret.into_bytes(),
            lab,
        };
        for i in 0..3 {
            cluster.wait(
                &format!(
                    "{} hears every node, mon-1 writes, all endpoints up",
                    cluster.id(i)
                ),
                || {
                    cluster.status(i).is_ok_and(|s| {
                        s["live_nodes"].as_array().map(Vec::len) == Some(3)
                            && s["leader"] == "mon-1"
                            && s["am_leader"] == (i == 0)
                            && s["endpoints"].as_array().is_some_and(|e| {
                                e.len() == 3 && e.iter().all(|e| e["cluster_state"] == "up")
                            })
                    })
                },
            );
        }
        // Nothing was down, so nothing was written: the zone is still the one Knot loaded.
        assert_eq!(cluster.a(), cluster.ep_strings(&[0, 1, 2]));
        assert_eq!(cluster.serial(), 1);
        cluster
    }

    fn id(&self, i: usize) -> &str {
        &self.monitors[i].id
    }

    fn mon_ip(&self, i: usize) -> Ipv4Addr {
        self.monitors[i].ns.ip()
    }

    fn ep(&self, e: usize) -> Ipv4Addr {
        self.eps.addrs[e]
    }

    /// Sorted addresses of endpoints `es`, as dig prints them.
    fn ep_strings(&self, es: &[usize]) -> Vec<String> {
        let mut v: Vec<String> = es.iter().map(|e| self.ep(*e).to_string()).collect();
        v.sort();
        v
    }

    /// `GET /api/v1/status` of monitor `i`, from the hub.
    fn status(&self, i: usize) -> Result<Value, String> {
        let url = format!("http://{}:{NODE_PORT}/api/v1/status", self.mon_ip(i));
        match self.lab.hub().http("GET", &url, &[], None)? {
            (200, body) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
            (code, body) => Err(format!("HTTP {code}: {body}")),
        }
    }

    fn must_status(&self, i: usize) -> Value {
        self.status(i)
            .unwrap_or_else(|e| panic!("status of {} unavailable: {e}", self.id(i)))
    }

    /// POSTs a peer message to monitor `i` from the hub: the HTTP status and body.
    fn post_votes(&self, i: usize, body: &str, mac: Option<&str>) -> (u16, String) {
        let url = format!("http://{}:{NODE_PORT}{}", self.mon_ip(i), wire::VOTES_PATH);
        let mut headers = vec![("content-type", "application/json")];
        if let Some(mac) = mac {
            headers.push((wire::MAC_HEADER, mac));
        }
        self.lab
            .hub()
            .http("POST", &url, &headers, Some(body))
            .unwrap_or_else(|e| panic!("POST to {} failed: {e}", self.id(i)))
    }

    /// The A records of the service, asked from the hub.
    fn a(&self) -> Vec<String> {
        self.knot.query(self.lab.hub(), FQDN, "A")
    }

    fn serial(&self) -> u32 {
        self.knot.soa_serial(self.lab.hub())
    }

    /// The A records monitor `i` serves itself (`Opts::serve`), asked from the hub; empty when it
    /// does not answer.
    fn served(&self, i: usize) -> Vec<String> {
        let server = std::net::SocketAddr::from((self.mon_ip(i), 53));
        self.lab.hub().dig(server, FQDN, "A").unwrap_or_default()
    }

    /// Waits until monitor `i` serves exactly endpoints `es`.
    fn wait_served(&self, i: usize, es: &[usize]) {
        let want = self.ep_strings(es);
        let mut last = Vec::new();
        self.wait(&format!("{} serves {want:?}", self.id(i)), || {
            last = self.served(i);
            last == want
        });
    }

    /// Cuts every node off from every other (a total partition).
    fn partition_all(&self) {
        for i in 0..3 {
            let others: Vec<Ipv4Addr> =
                (0..3).filter(|j| *j != i).map(|j| self.mon_ip(j)).collect();
            self.monitors[i].ns.drop_from(&others, None);
        }
    }

    /// Polls `f` every 50 ms until it is true; panics after [`EVENTUALLY`] (the logs are printed by
    /// `Drop`).
    fn wait(&self, what: &str, f: impl FnMut() -> bool) {
        eventually(what, f);
    }

    fn wait_a(&self, es: &[usize]) {
        let want = self.ep_strings(es);
        let mut last = Vec::new();
        self.wait(&format!("A records become {want:?}"), || {
            last = self.a();
            last == want
        });
    }

    /// Waits until monitor `i`'s status satisfies `f`.
    fn wait_status(&self, i: usize, what: &str, f: impl Fn(&Value) -> bool) {
        self.wait(&format!("{}: {what}", self.id(i)), || {
            // Fail at once, not after the deadline, when the node died (its log is printed by `Drop`).
            assert!(
                self.monitors[i].process.is_running(),
                "{} exited while waiting for: {what}",
                self.id(i)
            );
            self.status(i).is_ok_and(|s| f(&s))
        });
    }

    /// Drops, at the endpoints, packets from monitors `from` (to endpoint `to` only, if given).
    fn cut(&self, from: &[usize], to: Option<usize>) {
        let from: Vec<Ipv4Addr> = from.iter().map(|i| self.mon_ip(*i)).collect();
        self.eps.drop_from(&from, to.map(|e| self.ep(e)));
    }

    /// Waits until monitor `i`'s own probes have marked endpoint `e` `state` (its log says so).
    fn wait_local_verdict(&self, i: usize, e: usize, state: &str) {
        let needle = format!("endpoint={} ", self.ep(e));
        let what = format!("endpoint is {state}");
        self.wait(
            &format!("{} logs {what} for {}", self.id(i), self.ep(e)),
            || {
                self.monitors[i]
                    .process
                    .log()
                    .lines()
                    .any(|l| l.contains(&what) && l.contains(&needle))
            },
        );
    }

    /// Waits until monitor `i` has logged `needle` (a DNS change is visible to dig a moment before the
    /// leader gets to log it).
    fn wait_log(&self, i: usize, needle: &str) {
        self.monitors[i].process.wait_for_log(needle, EVENTUALLY);
    }

    /// Starts monitor `i` again (after [`NsProcess::kill`]) with the same configuration and log.
    fn restart(&mut self, i: usize) {
        let m = &mut self.monitors[i];
        assert!(!m.process.is_running(), "{} is still running", m.id);
        m.process = Monitor::spawn(&m.ns, &m.id, &m.config, &m.log);
    }

    /// An API request to monitor `i` from the hub, with the bearer token: the HTTP status and body.
    fn api(&self, i: usize, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let url = format!("http://{}:{NODE_PORT}{path}", self.mon_ip(i));
        let auth = format!("Bearer {API_TOKEN}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        self.lab
            .hub()
            .http(method, &url, &headers, body)
            .unwrap_or_else(|e| panic!("{method} {path} on {} failed: {e}", self.id(i)))
    }

    /// Sets an override on monitor `i` through the API (`extra`: the end, as JSON members); the
    /// created override.
    fn set_override(&self, i: usize, endpoint: Ipv4Addr, kind: &str, extra: &str) -> Value {
        let body = format!(
            r#"{{"endpoint": "{endpoint}", "kind": "{kind}", "comment": "set on {}", {extra}}}"#,
            self.id(i)
        );
        let (code, text) = self.api(i, "POST", "/api/v1/overrides", Some(&body));
        assert_eq!(code, 201, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The ids of the overrides monitor `i` lists (`GET /api/v1/overrides`), `None` when it does not
    /// answer.
    fn override_ids(&self, i: usize) -> Option<Vec<String>> {
        let url = format!("http://{}:{NODE_PORT}/api/v1/overrides", self.mon_ip(i));
        let (code, body) = self.lab.hub().http("GET", &url, &[], None).ok()?;
        let v: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        Some(
            v["overrides"]
                .as_array()?
                .iter()
                .filter_map(|o| o["id"].as_str().map(str::to_owned))
                .collect(),
        )
    }

    /// Waits until monitor `i` lists override `id` (`listed`) or no longer lists it.
    fn wait_listed(&self, i: usize, id: &str, listed: bool) {
        let what = if listed { "lists" } else { "no longer lists" };
        self.wait(&format!("{} {what} override {id}", self.id(i)), || {
            self.override_ids(i)
                .is_some_and(|ids| ids.iter().any(|x| x == id) == listed)
        });
    }

    /// POSTs an override-set message to monitor `i` from the hub, as a peer would.
    fn post_overrides(&self, i: usize, body: &[u8], mac: Option<&str>) -> (u16, String) {
        let url = format!("http://{}:{NODE_PORT}{OVERRIDES_PATH}", self.mon_ip(i));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(mac) = mac {
            headers.push((wire::MAC_HEADER, mac));
        }
        let body = std::str::from_utf8(body).unwrap();
        self.lab
            .hub()
            .http("POST", &url, &headers, Some(body))
            .unwrap_or_else(|e| panic!("POST to {} failed: {e}", self.id(i)))
    }

    /// Cuts monitor `i` off from its peers in both directions.
    fn partition(&self, i: usize) {
        let others: Vec<Ipv4Addr> = (0..3).filter(|j| *j != i).map(|j| self.mon_ip(j)).collect();
        self.monitors[i].ns.drop_from(&others, None);
        for j in (0..3).filter(|j| *j != i) {
            self.monitors[j].ns.drop_from(&[self.mon_ip(i)], None);
        }
    }

    /// Cuts mon-1 off, then endpoint 3 from the majority's side (mon-2, mon-3) only, and waits until
    /// their leader has removed it; returns the zone's serial then.
    fn majority_removes_endpoint_3_without_mon1(&self) -> u32 {
        self.partition_mon1();
        self.wait_status(0, "is isolated", |s| !s["isolated"].is_null());
        self.wait_status(1, "is the leader of the majority side", |s| {
            s["am_leader"] == true && s["live_nodes"] == serde_json::json!(["mon-2", "mon-3"])
        });
        self.cut(&[1, 2], Some(2));
        self.wait_a(&[0, 1]);
        self.serial()
    }

    /// Waits until mon-1 leads again, hearing everybody, then checks for [`HOLD`] that the zone keeps
    /// the majority's decision (endpoint 3 removed) at `serial`.
    fn rejoins_as_leader_changing_nothing(&self, serial: u32) {
        self.wait_status(0, "rejoins as the leader, hearing everybody", |s| {
            s["isolated"].is_null()
                && s["am_leader"] == true
                && s["live_nodes"].as_array().map(Vec::len) == Some(3)
        });
        thread::sleep(HOLD);
        self.assert_zone_kept(
            serial,
            "the rejoining leader changed the zone against the majority",
        );
    }

    /// The zone still holds the majority's decision (endpoint 3 removed), at `serial`.
    fn assert_zone_kept(&self, serial: u32, why: &str) {
        assert_eq!(self.a(), self.ep_strings(&[0, 1]), "{why}");
        assert_eq!(self.serial(), serial, "{why}");
    }

    /// Removes every drop rule of the monitors' namespaces.
    fn heal_monitors(&self) {
        for m in &self.monitors {
            m.ns.heal();
        }
    }

    fn log(&self, i: usize) -> String {
        self.monitors[i].process.log()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed assertion shows what every process said (the lab deletes the logs right after).
        if !thread::panicking() {
            return;
        }
        for m in &self.monitors {
            eprintln!(
                "--- {} (pid {}, running: {}) log ---\n{}",
                m.id,
                m.process.pid(),
                m.process.is_running(),
                m.process.log()
            );
        }
        eprintln!(
            "--- {} log ---\n{}",
            self.knot.process.label(),
            self.knot.process.log()
        );
        for e in &self.endpoints {
            let log = e.log();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            eprintln!(
                "--- {} log (last lines, newest first) ---\n{}",
                e.label(),
                tail.join("\n")
            );
        }
        eprintln!(
            "--- namespaces: hub {}, dns {}, eps {} ---",
            self.lab.hub().name,
            self.dns.name,
            self.eps.name
        );
    }
}

/// Polls `f` every 50 ms until it is true; panics after [`EVENTUALLY`].
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENTUALLY;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {EVENTUALLY:?} waiting for: {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Tally of one endpoint in a status document: (cluster_state, up_votes, down_votes).
fn tally(status: &Value, ip: Ipv4Addr) -> (String, Vec<String>, Vec<String>) {
    let e = status["endpoints"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["endpoint"] == ip.to_string().as_str()))
        .unwrap_or_else(|| panic!("no endpoint {ip} in status {status:#}"));
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    (
        e["cluster_state"].as_str().unwrap_or_default().to_owned(),
        names(&e["up_votes"]),
        names(&e["down_votes"]),
    )
}

fn rejected(status: &Value, kind: &str) -> u64 {
    status["rejected_messages"][kind].as_u64().unwrap_or(0)
}

fn monitors_except(ids: &[String], i: usize) -> impl Iterator<Item = (usize, &String)> {
    ids.iter().enumerate().filter(move |(j, _)| *j != i)
}

/// The interpreter behind `python3` (a pyenv shim would otherwise sit between `ip netns exec` and it).
fn real_python() -> PathBuf {
    let python = required_tool("python3", "python3");
    let out = Command::new(&python)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let exe = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && Path::new(&exe).is_file() {
        exe.into()
    } else {
        python
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("cannot read /dev/urandom");
    buf
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A message claiming to come from `node`, voting every endpoint down.
fn forged(c: &Cluster, node: &str, generation: u64, seq: u64, sent_at_ms: u64) -> Message {
    Message {
        v: wire::VERSION,
        node: node.to_owned(),
        generation,
        seq,
        sent_at_ms,
        isolated: false,
        settling: false,
        sees: vec!["mon-1".to_owned(), "mon-3".to_owned()],
        votes: c
            .eps
            .addrs
            .iter()
            .map(|a| Vote {
                service: format!("{FQDN}."),
                endpoint: (*a).into(),
                up: false,
            })
            .collect(),
        heard: Vec::new(),
    }
}

/// One monitor that cannot reach any endpoint is outvoted: nothing is removed. An endpoint that two of
/// three monitors cannot reach is removed, and re-added once they reach it again.
#[test]
fn minority_view_changes_nothing_majority_view_removes() {
    let c = Cluster::start(Opts::default());

    // mon-1, the leader, loses every endpoint; mon-2 and mon-3 still see them.
    c.cut(&[0], None);
    c.wait_status(0, "votes every endpoint down, cluster keeps it up", |s| {
        (0..3).all(|e| {
            let (state, up, down) = tally(s, c.ep(e));
            state == "up" && down == ["mon-1"] && up == ["mon-2", "mon-3"]
        })
    });
    // The down votes reached the peers too: the cut is real and seen cluster-wide.
    c.wait_status(1, "sees mon-1's down votes", |s| {
        (0..3).all(|e| tally(s, c.ep(e)).2 == ["mon-1"])
    });
    thread::sleep(HOLD);
    assert_eq!(
        c.a(),
        c.ep_strings(&[0, 1, 2]),
        "a minority removed records"
    );
    assert_eq!(c.serial(), 1, "a minority caused a zone change");
    let s = c.must_status(0);
    assert_eq!(s["am_leader"], true, "{s:#}");
    for e in 0..3 {
        assert_eq!(tally(&s, c.ep(e)).0, "up", "{s:#}");
    }
    assert!(!c.log(0).contains("DNS updated"), "{}", c.log(0));

    c.eps.heal();
    c.wait_status(0, "votes every endpoint up again", |s| {
        (0..3).all(|e| tally(s, c.ep(e)).2.is_empty())
    });

    // Endpoint 3 becomes unreachable from mon-1 and mon-2, not from mon-3: a majority sees it down.
    c.cut(&[0, 1], Some(2));
    c.wait_a(&[0, 1]);
    // mon-3 still sees it, and agrees with the majority anyway.
    c.wait_status(2, "is outvoted on endpoint 3", |s| {
        tally(s, c.ep(2))
            == (
                "down".to_owned(),
                vec!["mon-3".to_owned()],
                vec!["mon-1".to_owned(), "mon-2".to_owned()],
            )
    });
    c.wait_log(0, &format!("remove {} (down)", c.ep(2)));

    c.eps.heal();
    c.wait_a(&[0, 1, 2]);
    c.wait_log(0, &format!("add {} (up)", c.ep(2)));
}

/// Every node serves the zone itself (`serve`, a per-node writer) beside the shared Knot primary,
/// by the rule of docs/cluster.md: the agreed set while in the majority; its own probes while
/// isolated; never empty in a total partition.
#[test]
fn every_node_serves_the_majority_set_and_its_own_probes_when_isolated() {
    let c = Cluster::start(Opts {
        serve: true,
        ..Opts::default()
    });
    for i in 0..3 {
        c.wait_served(i, &[0, 1, 2]);
    }
    // A minority: mon-1 alone.
    c.partition_mon1();
    c.wait_status(0, "is isolated", |s| s["isolated"].is_string());
    // Endpoint 3 fails for everybody: the majority withdraws it (Knot and its own answers), and the
    // isolated mon-1 withdraws it by its own probes within fall × interval + timeout.
    c.cut(&[0, 1, 2], Some(2));
    c.wait_a(&[0, 1]);
    for i in 0..3 {
        c.wait_served(i, &[0, 1]);
    }
    c.eps.heal();
    for i in 0..3 {
        c.wait_served(i, &[0, 1, 2]);
    }
    // The stated exception: endpoint 2 fails only as seen from the majority's side. The majority
    // withdraws it; mon-1, which still reaches it, keeps serving it while it is cut off.
    c.cut(&[1, 2], Some(1));
    c.wait_served(1, &[0, 2]);
    c.wait_served(2, &[0, 2]);
    thread::sleep(HOLD);
    assert_eq!(c.served(0), c.ep_strings(&[0, 1, 2]));
    c.eps.heal();
    for m in &c.monitors {
        m.ns.heal();
    }
    for i in 0..3 {
        c.wait_served(i, &[0, 1, 2]);
    }

    // A total partition: every node is isolated and answers by its own probes.
    c.partition_all();
    for i in 0..3 {
        c.wait_status(i, "is isolated", |s| s["isolated"].is_string());
    }
    c.cut(&[0, 1, 2], Some(2));
    for i in 0..3 {
        c.wait_served(i, &[0, 1]);
    }
    // Every endpoint fails from everywhere: all_down = keep_all keeps the whole set on every node,
    // so the name stays resolvable.
    c.cut(&[0, 1, 2], None);
    for i in 0..3 {
        c.wait_served(i, &[0, 1, 2]);
    }
    thread::sleep(HOLD);
    for i in 0..3 {
        assert_eq!(c.served(i), c.ep_strings(&[0, 1, 2]), "{}", c.id(i));
    }
}

/// SIGKILL of the leader: the next node takes over and keeps converging; the old leader restarts and
/// takes its place back. SIGKILL of two nodes: the survivor is a minority, stops writing, and DNS
/// keeps the last published set.
#[test]
fn leader_crash_takeover_then_minority_freezes_dns() {
    let mut c = Cluster::start(Opts::default());
    let term_before = c.must_status(1)["term"].as_u64().unwrap();

    c.monitors[0].process.kill();
    c.wait_status(1, "takes over as leader with a new term", |s| {
        s["am_leader"] == true
            && s["leader"] == "mon-2"
            && s["term"].as_u64().is_some_and(|t| t > term_before)
    });
    c.wait_status(2, "recognises mon-2 as leader", |s| {
        s["leader"] == "mon-2" && s["am_leader"] == false && s["isolated"].is_null()
    });
    c.wait_log(1, "this node is the leader");

    // The new leader converges a new failure (every monitor loses endpoint 3), and its recovery.
    c.cut(&[0, 1, 2], Some(2));
    c.wait_a(&[0, 1]);
    c.wait_log(1, &format!("remove {} (down)", c.ep(2)));
    c.eps.heal();
    c.wait_a(&[0, 1, 2]);
    c.wait_log(1, &format!("add {} (up)", c.ep(2)));

    // mon-1 comes back with a new generation: its messages are not taken for replays, and as the
    // lowest id it is the leader again and converges the next failure.
    c.restart(0);
    c.wait_status(0, "is the leader again, hearing everybody", |s| {
        s["am_leader"] == true && s["live_nodes"].as_array().map(Vec::len) == Some(3)
    });
    c.wait_status(1, "stands by for the restarted mon-1", |s| {
        s["leader"] == "mon-1" && s["am_leader"] == false
    });
    for i in 1..3 {
        let s = c.must_status(i);
        assert_eq!(
            rejected(&s, "replay"),
            0,
            "{} rejected mon-1's messages: {s:#}",
            c.id(i)
        );
    }
    c.cut(&[0, 1, 2], Some(0));
    c.wait_a(&[1, 2]);
    c.wait_log(0, &format!("remove {} (down)", c.ep(0)));
    c.eps.heal();
    c.wait_a(&[0, 1, 2]);
    c.wait_log(0, &format!("add {} (up)", c.ep(0)));
    let serial = c.serial();
    assert!(
        serial >= 5,
        "four updates since the zone was loaded, serial {serial}"
    );

    // Two of three gone: mon-3 alone is a minority.
    c.monitors[0].process.kill();
    c.monitors[1].process.kill();
    c.wait_status(2, "is isolated and not the leader", |s| {
        !s["isolated"].is_null() && s["am_leader"] == false && s["leader"].is_null()
    });
    c.wait_log(2, "this node is isolated");
    // Endpoint 2 now fails for the survivor; it must not act on it alone.
    c.cut(&[2], Some(1));
    c.wait_local_verdict(2, 1, "down");
    thread::sleep(HOLD);
    assert_eq!(c.a(), c.ep_strings(&[0, 1, 2]), "a minority changed DNS");
    assert_eq!(c.serial(), serial, "a minority changed the zone");
    let s = c.must_status(2);
    assert!(
        s["isolated"]
            .as_str()
            .is_some_and(|w| w.contains("hears from 1 of the 2")),
        "{s:#}"
    );
    // An isolated node forgets the agreed state (the majority may decide otherwise meanwhile) and does
    // not count its own vote.
    assert_eq!(
        tally(&s, c.ep(1)),
        ("unknown".to_owned(), vec![], vec![]),
        "{s:#}"
    );
    assert!(c.monitors[2].process.is_running());
}

/// The leader loses its peers but still reaches DNS and the endpoints: it isolates itself and stops
/// writing, the majority side elects mon-2, which converges; after the partition heals mon-1 writes
/// again.
#[test]
fn partitioned_leader_stops_writing() {
    let c = Cluster::start(Opts::default());
    c.partition_mon1();
    c.wait_status(0, "is isolated and stops writing", |s| {
        s["isolated"]
            .as_str()
            .is_some_and(|w| w.contains("hears from 1 of the 2"))
            && s["am_leader"] == false
    });
    c.wait_status(1, "is the leader of the majority side", |s| {
        s["am_leader"] == true && s["live_nodes"] == serde_json::json!(["mon-2", "mon-3"])
    });

    // Everybody loses endpoint 3; only the majority side's leader may act on it.
    c.cut(&[0, 1, 2], Some(2));
    c.wait_a(&[0, 1]);
    c.wait_log(1, &format!("remove {} (down)", c.ep(2)));
    c.wait_local_verdict(0, 2, "down");
    assert!(
        !c.log(0).contains("DNS updated"),
        "the isolated mon-1 wrote"
    );

    for m in &c.monitors {
        m.ns.heal();
    }
    c.wait_status(0, "rejoins as the leader", |s| {
        s["isolated"].is_null() && s["am_leader"] == true
    });
    c.eps.heal();
    c.wait_a(&[0, 1, 2]);
    // The add is written by whoever leads at that moment: as the partition heals, mon-2 may lead one
    // more term before mon-1 takes over again (a write of mon-1 in that term is then refused by its
    // prerequisite, NXRRSET). So that write may be mon-2's; what must hold is that mon-1, leading
    // again, writes the next change.
    let add = format!("add {} (up)", c.ep(2));
    c.wait(&format!("a monitor logs that it wrote {add}"), || {
        (0..c.monitors.len()).any(|i| {
            c.log(i)
                .lines()
                .any(|l| l.contains("DNS updated") && l.contains(&add))
        })
    });
    c.wait_status(0, "leads after the partition healed", |s| {
        s["isolated"].is_null() && s["am_leader"] == true
    });
    c.cut(&[0, 1, 2], Some(2));
    c.wait_a(&[0, 1]);
    let remove = format!("remove {} (down)", c.ep(2));
    c.wait(&format!("mon-1 logs that it wrote {remove}"), || {
        c.log(0)
            .lines()
            .any(|l| l.contains("DNS updated") && l.contains(&remove))
    });
}

/// Messages with a wrong or missing MAC, replayed or stale messages, unknown senders and garbage are
/// refused with the documented status codes and counted; the forged votes never count, and the node
/// keeps working.
#[test]
fn forged_and_replayed_messages_are_rejected() {
    let c = Cluster::start(Opts::default());
    // mon-1 must already know mon-2's real generation, or an old one would look new.
    c.wait_status(0, "has heard from mon-2", |s| {
        s["peers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["id"] == "mon-2" && p["live"] == true))
    });
    let key = Key::new(&c.secret);
    let now = wall_ms();
    let mon2_generation = c.must_status(1)["generation"].as_u64().unwrap();

    // (a) Authentication: a message that would win every comparison (newest generation), with a MAC
    // under the wrong secret, with a MAC of another body, and with none.
    let newest = forged(&c, "mon-2", now + 1_000_000, 1, now);
    let (body, mac) = wire::encode(&newest, &Key::new(b"not the cluster secret at all"));
    let body = String::from_utf8(body).unwrap();
    assert_eq!(c.post_votes(0, &body, Some(&mac)).0, 401);
    let (_, other_mac) = wire::encode(&forged(&c, "mon-2", 1, 1, now), &key);
    assert_eq!(c.post_votes(0, &body, Some(&other_mac)).0, 401);
    assert_eq!(c.post_votes(0, &body, None).0, 401);

    // (b) Correctly signed, but old: an older generation, and mon-2's real generation with seq 1.
    for (generation, seq) in [(1, 1), (mon2_generation, 1)] {
        let (body, mac) = wire::encode(&forged(&c, "mon-2", generation, seq, wall_ms()), &key);
        let (code, text) = c.post_votes(0, std::str::from_utf8(&body).unwrap(), Some(&mac));
        assert_eq!(code, 409, "generation {generation} seq {seq}: {text}");
        assert!(text.contains("replayed"), "{text}");
    }
    // Signed and new, but stamped an hour ago (a captured message replayed much later).
    let stale = forged(&c, "mon-2", wall_ms() + 1_000_000, 1, wall_ms() - 3_600_000);
    let (body, mac) = wire::encode(&stale, &key);
    let (code, text) = c.post_votes(0, std::str::from_utf8(&body).unwrap(), Some(&mac));
    assert_eq!(code, 409, "{text}");
    // Signed, from a node that is not in the cluster.
    let (body, mac) = wire::encode(&forged(&c, "mon-9", 1, 1, wall_ms()), &key);
    let (code, text) = c.post_votes(0, std::str::from_utf8(&body).unwrap(), Some(&mac));
    assert_eq!(code, 409, "{text}");

    // (c) Garbage with a valid MAC.
    let garbage = "this is not a peer message";
    let (code, text) = c.post_votes(0, garbage, Some(&key.mac(garbage.as_bytes())));
    assert_eq!(code, 400, "{text}");

    // The node copies its agreement state into the status at most every 100 ms: wait for the last
    // rejection to show.
    let mut s = c.must_status(0);
    eventually("the last rejection in the status", || {
        s = c.must_status(0);
        rejected(&s, "malformed") >= 1
    });
    assert!(rejected(&s, "authentication") >= 3, "{s:#}");
    assert!(rejected(&s, "replay") >= 2, "{s:#}");
    assert!(rejected(&s, "clock") >= 1, "{s:#}");
    assert!(rejected(&s, "unknown_node") >= 1, "{s:#}");
    assert!(rejected(&s, "malformed") >= 1, "{s:#}");
    // The forged down votes never counted: mon-2 still votes up, for real.
    for e in 0..3 {
        let (state, up, down) = tally(&s, c.ep(e));
        assert_eq!(state, "up", "{s:#}");
        assert!(up.contains(&"mon-2".to_owned()) && down.is_empty(), "{s:#}");
    }
    assert!(c.log(0).contains("rejected peer message"), "{}", c.log(0));
    assert!(c.monitors[0].process.is_running());

    // The node still hears its real peers (the replays did not lock mon-2 out) and the cluster still
    // converges.
    c.cut(&[0, 1, 2], Some(2));
    c.wait_a(&[0, 1]);
    c.eps.heal();
    c.wait_a(&[0, 1, 2]);
    let s = c.must_status(0);
    assert_eq!(s["live_nodes"].as_array().map(Vec::len), Some(3), "{s:#}");
}

/// A node whose self-check target (the DNS server) is unreachable isolates itself: it reports why and
/// its votes stop counting; it rejoins once the target is reachable again.
#[test]
fn failed_self_check_isolates_the_node() {
    let c = Cluster::start(Opts {
        self_check_on_mon3: true,
        ..Opts::default()
    });
    let s = c.must_status(2);
    assert_eq!(
        s["self_check_targets"][0],
        c.knot.addr.to_string().as_str(),
        "{s:#}"
    );

    c.dns.drop_from(&[c.mon_ip(2)], None);
    c.wait_status(2, "isolated by its self-check", |s| {
        s["isolated"] == "self-check failed" && s["am_leader"] == false
    });
    assert!(c.log(2).contains("self-check failed"), "{}", c.log(2));
    // The others still hear mon-3, but its (now empty) votes no longer count.
    c.wait_status(0, "counts only mon-1 and mon-2", |s| {
        (0..3).all(|e| tally(s, c.ep(e)).1 == ["mon-1", "mon-2"])
    });
    assert_eq!(c.a(), c.ep_strings(&[0, 1, 2]));

    c.dns.heal();
    c.wait_status(2, "no longer isolated", |s| s["isolated"].is_null());
    c.wait_status(0, "counts mon-3 again", |s| {
        (0..3).all(|e| tally(s, c.ep(e)).1 == ["mon-1", "mon-2", "mon-3"])
    });
}

/// After a partition heals, the rejoining node (mon-1, the lowest id, so at once the leader again) must
/// not undo what the majority decided while it was away: endpoint 3, which mon-2 and mon-3 see down
/// but mon-1 sees up, stays removed.
///
/// Two rules make this hold: isolation forgets the agreed state (a 1-1 tie on rejoin is "unknown", not
/// the stale "up"), and a rejoining node counts votes, and settles, only on snapshots that answer a
/// message it sent after it rejoined (docs/cluster.md, "Only fresh votes count"): a snapshot delayed
/// across the healed partition does not count.
#[test]
fn rejoining_leader_keeps_the_majority_decision() {
    let c = Cluster::start(Opts::default());
    let serial = c.majority_removes_endpoint_3_without_mon1();
    c.heal_monitors();
    c.rejoins_as_leader_changing_nothing(serial);
}

/// A partition does not lose what was in flight: TCP retransmits an abandoned request's bytes once
/// the path is back, seconds late, after the sender has given up on it. Heal only mon-1's side first:
/// the others' snapshots from before the partition (endpoint 3 still up) reach mon-1, while its own
/// messages still cannot reach them, so no fresh snapshot can follow. Those stale votes must neither
/// count nor let mon-1 lead: it would re-add endpoint 3, which the majority removed meanwhile.
#[test]
fn snapshots_retransmitted_after_a_heal_change_nothing() {
    let c = Cluster::start(Opts::default());
    let serial = c.majority_removes_endpoint_3_without_mon1();
    c.monitors[0].ns.heal();
    let mut s = Value::Null;
    c.wait("mon-1: hears the others' retransmitted snapshots", || {
        s = c.status(0).unwrap_or_default();
        s["isolated"].is_null() && s["live_nodes"].as_array().is_some_and(|l| l.len() > 1)
    });
    // Heard, but not counted: they answer no message mon-1 sent since.
    let live: Vec<&Value> = s["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter(|p| p["live"] == true)
        .collect();
    assert!(!live.is_empty(), "{s:#}");
    assert!(live.iter().all(|p| p["votes_count"] == false), "{s:#}");
    thread::sleep(HOLD);
    c.assert_zone_kept(
        serial,
        "mon-1 changed the zone on snapshots older than the majority's decision",
    );
    c.heal_monitors();
    c.rejoins_as_leader_changing_nothing(serial);
}

/// Overrides across the cluster (docs/operations.md, "Overrides"): one set on any node reaches every
/// node and takes effect in the leader's plan on Knot; it ends by itself on every node, not before
/// its end; a deletion replicates; a node that was down or cut off catches up by anti-entropy (the
/// whole set on every heartbeat); a peer message without the cluster secret's MAC changes nothing.
#[test]
fn overrides_replicate_expire_and_catch_up_across_the_cluster() {
    let mut c = Cluster::start(Opts::default());

    // (a) A drain set on mon-2, which does not write DNS: it must reach the leader mon-1 to matter.
    let ends = wall_ms() + 20_000;
    let o = c.set_override(1, c.ep(0), "drain", &format!(r#""ends_unix_ms": {ends}"#));
    let drain = o["id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        c.wait_listed(i, &drain, true);
    }
    c.wait_a(&[1, 2]);
    c.wait_log(0, &format!("drained (override {drain})"));
    let s = c.must_status(0);
    let standing = &s["services"][0]["writers"][0]["standing"];
    assert!(
        standing.as_array().is_some_and(|st| {
            st.iter().any(|x| {
                x["address"] == c.ep(0).to_string().as_str() && x["reason_kind"] == "drained"
            })
        }),
        "{s:#}"
    );

    // (b) It ends by itself on every node, never before its end, and the endpoint comes back.
    for i in 0..3 {
        c.wait_listed(i, &drain, false);
        assert!(
            wall_ms() >= ends,
            "{} dropped override {drain} {} ms before its end",
            c.id(i),
            ends - wall_ms()
        );
    }
    c.wait_a(&[0, 1, 2]);
    assert!(
        wall_ms() >= ends,
        "endpoint back in DNS before the drain ended"
    );

    // (c) A deletion replicates: set on mon-3, deleted on mon-1.
    let o = c.set_override(2, c.ep(1), "drain", r#""for": "1h""#);
    let second = o["id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        c.wait_listed(i, &second, true);
    }
    c.wait_a(&[0, 2]);
    let (code, text) = c.api(0, "DELETE", &format!("/api/v1/overrides/{second}"), None);
    assert_eq!(code, 200, "{text}");
    for i in 0..3 {
        c.wait_listed(i, &second, false);
    }
    c.wait_a(&[0, 1, 2]);

    // (d) A node that was down when an override was set has it after its restart.
    c.monitors[2].process.kill();
    let o = c.set_override(0, c.ep(2), "drain", r#""for": "1h""#);
    let third = o["id"].as_str().unwrap().to_owned();
    c.wait_listed(1, &third, true);
    c.wait_a(&[0, 1]);
    c.restart(2);
    c.wait_listed(2, &third, true);

    // (e) A node cut off when an override is deleted learns the deletion once it rejoins.
    c.partition(2);
    let (code, text) = c.api(1, "DELETE", &format!("/api/v1/overrides/{third}"), None);
    assert_eq!(code, 200, "{text}");
    c.wait_listed(0, &third, false);
    c.wait_a(&[0, 1, 2]);
    thread::sleep(HOLD);
    assert_eq!(
        c.override_ids(2),
        Some(vec![third.clone()]),
        "the partition did not hold: mon-3 learned the deletion while cut off"
    );
    c.heal_monitors();
    c.wait_listed(2, &third, false);
    // Its stale copy did not revive the override anywhere.
    thread::sleep(HOLD);
    for i in 0..3 {
        assert_eq!(c.override_ids(i), Some(vec![]), "{}", c.id(i));
    }
    assert_eq!(c.a(), c.ep_strings(&[0, 1, 2]));

    // (f) A forged override set (a drain of every endpoint, as if from mon-2) is refused without the
    // cluster secret's MAC; the same message correctly signed is taken (the route works).
    let now = wall_ms();
    let forged = OverridesMessage {
        v: override_sync::VERSION,
        node: "mon-2".into(),
        sent_at_ms: now,
        overrides: (0..3)
            .map(|e| Override {
                id: format!("forged{e}"),
                endpoint: c.ep(e).into(),
                service: None,
                kind: OverrideKind::Drain,
                comment: "forged".into(),
                starts_unix_ms: now,
                ends_unix_ms: now + 3_600_000,
                created_unix_ms: now,
                updated_unix_ms: now,
                origin: "mon-2".into(),
                deleted: false,
            })
            .collect(),
    };
    let key = Key::new(&c.secret);
    let (body, mac) = override_sync::encode(&forged, &Key::new(b"not the cluster secret at all"));
    assert_eq!(c.post_overrides(0, &body, Some(&mac)).0, 401);
    assert_eq!(c.post_overrides(0, &body, None).0, 401);
    let (_, good_mac) = override_sync::encode(&forged, &key);
    let mut tampered = body.clone();
    let at = tampered.len() - 3;
    tampered[at] = b' ';
    assert_eq!(c.post_overrides(0, &tampered, Some(&good_mac)).0, 401);
    // Signed, but claiming to be the receiver itself.
    let mut own = forged.clone();
    own.node = "mon-1".into();
    let (own_body, own_mac) = override_sync::encode(&own, &key);
    assert_eq!(c.post_overrides(0, &own_body, Some(&own_mac)).0, 409);
    assert_eq!(c.override_ids(0), Some(vec![]));
    assert!(
        c.log(0).contains("rejected override message"),
        "{}",
        c.log(0)
    );
    thread::sleep(HOLD);
    assert_eq!(
        c.a(),
        c.ep_strings(&[0, 1, 2]),
        "a forged drain took effect"
    );

    // The control: signed with the cluster secret, the set is merged and replicated on.
    let (code, text) = c.post_overrides(0, &body, Some(&good_mac));
    assert_eq!(code, 204, "{text}");
    c.wait_listed(2, "forged1", true);
    // Each is counted by kind, result and reason in the metrics.
    let url = format!("http://{}:{NODE_PORT}/metrics", c.mon_ip(0));
    let (code, metrics) = c.lab.hub().http("GET", &url, &[], None).unwrap();
    assert_eq!(code, 200);
    let count = |labels: &str| -> f64 {
        let prefix = format!("rrguard_peer_messages_total{{{labels}}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        count(r#"kind="overrides",result="rejected",reason="authentication""#),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        count(r#"kind="overrides",result="rejected",reason="unknown_node""#),
        1.0,
        "{metrics}"
    );
    assert!(
        count(r#"kind="overrides",result="accepted",reason="none""#) >= 1.0,
        "{metrics}"
    );
    assert!(
        count(r#"kind="votes",result="accepted",reason="none""#) >= 1.0,
        "{metrics}"
    );
    assert!(c.monitors.iter().all(|m| m.process.is_running()));
}
