//! Several "hosts" on one machine: Linux network namespaces joined by a bridge, processes started inside
//! them, nftables faults, and a Knot primary listening on a namespace address.
//!
//! Layout of one [`Lab`]: a `hub` namespace holds a bridge with the address `SUBNET.1`; every host
//! namespace gets a veth pair whose far end is a port of that bridge, and its own addresses in the same
//! /24. The subnet exists only inside the lab's namespaces, so nothing touches the host's network and
//! labs of parallel tests (each with its own hub) cannot see each other even if their subnets overlap.
//! Fixed ports are therefore fine inside a lab.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); without it [`Lab::new`] panics with a clear message
//! rather than skipping, so a misconfigured CI fails loudly. Tools: `ip` (iproute2), `nft` (nftables),
//! plus whatever the test starts (knotd, dig, curl, python3).
//!
//! Cleanup: processes are [`NsProcess`]es, SIGKILLed and reaped on drop; the lab deletes its namespaces
//! on drop (also while a failed test unwinds), after killing anything still running inside them. A lab
//! also removes namespaces left behind by test processes that died without unwinding (SIGKILL), which
//! it recognises by the `rrg-PID-` prefix of a PID that no longer exists.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::dns::{KEY_NAME, TSIG_ALGORITHM, ZONE};
use super::util::{append_file, find_program, random_secret_b64, run_with_timeout};

/// Prefix of every namespace a lab creates: `rrg-PID-N-HOST`.
const NS_PREFIX: &str = "rrg-";
/// Bound on one `ip`/`nft`/`dig`/`curl` invocation; they normally take milliseconds.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long Knot may take to answer its first query (~50 ms normally; CI can be slow).
const KNOT_READY: Duration = Duration::from_secs(15);

/// Labs created by this process, so every lab gets its own names and subnet.
static LABS: AtomicUsize = AtomicUsize::new(0);

/// Absolute path of a tool, or a panic telling which package to install.
pub fn required_tool(name: &str, package: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!("`{name}` not found: the cluster tests need it; install the `{package}` package")
    })
}

/// Runs `program args` to completion; `Ok(stdout)` on success, else an error with all the output.
fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let out = run_with_timeout(Command::new(program).args(args), stdin, COMMAND_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "`{} {}` failed ({}): {}{}",
            program.display(),
            args.join(" "),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A set of namespaces joined by a bridge; see the module documentation. Dropping it deletes them.
pub struct Lab {
    ip_tool: PathBuf,
    prefix: String,
    subnet: [u8; 3],
    hub: Ns,
    hosts: Vec<Ns>,
    // Configs, logs and server data of everything in the lab; removed after the namespaces.
    dir: TempDir,
}

impl Lab {
    /// Creates the hub namespace with its bridge at `SUBNET.1`. Panics (does not skip) when namespaces
    /// cannot be created, e.g. when not running as root.
    pub fn new() -> Lab {
        let ip_tool = required_tool("ip", "iproute2");
        required_tool("nft", "nftables");
        remove_orphaned_namespaces(&ip_tool);
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{NS_PREFIX}{}-{n}", std::process::id());
        // One /24 per lab of this process; only for readable logs, isolation comes from the namespaces.
        let subnet = [10, 254, (n % 250 + 1) as u8];
        let dir = tempfile::Builder::new()
            .prefix("rrguard-lab-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let hub_name = format!("{prefix}-hub");
        if let Err(e) = run(&ip_tool, &["netns", "add", &hub_name], None) {
            panic!(
                "cannot create network namespace {hub_name}: {e}\n\
                 The cluster tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create namespaces."
            );
        }
        let hub = Ns {
            name: hub_name,
            ip_tool: ip_tool.clone(),
            addrs: vec![Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 1)],
        };
        // From here on `Drop` deletes whatever exists, even if the setup below panics.
        let lab = Lab {
            ip_tool,
            prefix,
            subnet,
            hub,
            hosts: Vec::new(),
            dir,
        };
        let hub_ip = format!("{}/24", lab.hub.addrs[0]);
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "add", "br0", "type", "bridge"],
            &["link", "set", "br0", "up"],
            &["addr", "add", &hub_ip, "dev", "br0"],
        ] {
            lab.ip_in(&lab.hub.name, args);
        }
        lab
    }

    /// The hub namespace: attached to every host, never firewalled; run clients (curl, dig) from here.
    pub fn hub(&self) -> &Ns {
        &self.hub
    }

    /// A directory for configs, logs and data, removed when the lab is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The address `SUBNET.host`.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], host)
    }

    /// Creates namespace `short` (≤ 13 characters) attached to the hub bridge, with the addresses
    /// `SUBNET.h` for each `h` in `hosts` on its `eth0`, and `lo` up.
    pub fn add_host(&mut self, short: &str, hosts: &[u8]) -> Ns {
        // The hub side of the veth is named after the host; interface names are at most 15 bytes.
        assert!(
            short.len() <= 13 && !short.is_empty(),
            "host name {short:?} must be 1-13 characters"
        );
        let name = format!("{}-{short}", self.prefix);
        run(&self.ip_tool, &["netns", "add", &name], None)
            .unwrap_or_else(|e| panic!("cannot create network namespace {name}: {e}"));
        let ns = Ns {
            name: name.clone(),
            ip_tool: self.ip_tool.clone(),
            addrs: hosts.iter().map(|h| self.addr(*h)).collect(),
        };
        self.hosts.push(ns.clone());
        let hub_end = format!("p-{short}");
        self.ip_in(
            &self.hub.name,
            &[
                "link", "add", &hub_end, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ],
        );
        self.ip_in(&self.hub.name, &["link", "set", &hub_end, "master", "br0"]);
        self.ip_in(&self.hub.name, &["link", "set", &hub_end, "up"]);
        self.ip_in(&name, &["link", "set", "lo", "up"]);
        for a in &ns.addrs {
            self.ip_in(&name, &["addr", "add", &format!("{a}/24"), "dev", "eth0"]);
        }
        self.ip_in(&name, &["link", "set", "eth0", "up"]);
        ns
    }

    /// `ip -n NS args…`, panicking with the output on failure.
    fn ip_in(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        run(&self.ip_tool, &all, None).unwrap_or_else(|e| panic!("lab setup failed: {e}"));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Never panics: it also runs while a failed test unwinds. Hosts first, so their veths go away
        // with them; the hub (and its bridge) last.
        for ns in self.hosts.iter().rev().chain([&self.hub]) {
            delete_namespace(&self.ip_tool, &ns.name);
        }
    }
}

/// Kills whatever still runs inside `name` (only processes of this lab's tests can be there), then
/// deletes it. A namespace is only freed when its last process is gone.
fn delete_namespace(ip_tool: &Path, name: &str) {
    if let Ok(pids) = run(ip_tool, &["netns", "pids", name], None) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let _ = super::util::send_signal(pid, "KILL");
        }
    }
    if let Err(e) = run(ip_tool, &["netns", "delete", name], None) {
        eprintln!("warning: cannot delete network namespace {name}: {e}");
    }
}

/// Deletes `rrg-PID-…` namespaces whose test process no longer exists (it was SIGKILLed, so its labs
/// never ran `Drop`). Namespaces of live test processes, including parallel test binaries, are kept.
fn remove_orphaned_namespaces(ip_tool: &Path) {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing network namespace {name} left behind by dead test process {pid}");
            delete_namespace(ip_tool, &name);
        }
    }
}

/// One namespace of a lab (a handle: cloning it does not create anything).
#[derive(Debug, Clone)]
pub struct Ns {
    /// The namespace's name, as `ip netns` knows it.
    pub name: String,
    ip_tool: PathBuf,
    /// Its addresses in the lab subnet.
    pub addrs: Vec<Ipv4Addr>,
}

impl Ns {
    /// The first of its addresses.
    pub fn ip(&self) -> Ipv4Addr {
        self.addrs[0]
    }

    /// `ip netns exec NS program args…` to completion: `Ok(stdout)`, or an error with all the output.
    pub fn exec(
        &self,
        program: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, String> {
        let program = program.to_str().expect("tool paths are UTF-8");
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run(&self.ip_tool, &all, stdin)
    }

    /// Loads an nftables script (`nft -f -`) in this namespace; panics with nft's output on failure.
    pub fn nft(&self, script: &str) {
        let nft = required_tool("nft", "nftables");
        if let Err(e) = self.exec(&nft, &["-f", "-"], Some(script)) {
            panic!("nft in {} failed: {e}\n--- script ---\n{script}", self.name);
        }
    }

    /// Drops, in this namespace's input hook, packets from any of `from` (to `to` if given): the
    /// senders see real timeouts. Rules accumulate in table `inet rrg` until [`Ns::heal`].
    pub fn drop_from(&self, from: &[Ipv4Addr], to: Option<Ipv4Addr>) {
        let set: Vec<String> = from.iter().map(ToString::to_string).collect();
        let daddr = to.map(|t| format!(" ip daddr {t}")).unwrap_or_default();
        self.nft(&format!(
            "table inet rrg {{\n\
             \x20   chain in {{ type filter hook input priority 0; policy accept; }}\n\
             }}\n\
             add rule inet rrg in ip saddr {{ {} }}{daddr} drop\n",
            set.join(", ")
        ));
    }

    /// Removes every rule [`Ns::drop_from`] added.
    pub fn heal(&self) {
        // Declaring the table first makes the delete succeed whether or not it exists (nft 1.0.6 has
        // no `destroy`).
        self.nft("table inet rrg\ndelete table inet rrg\n");
    }

    /// Starts `program args…` inside this namespace with stdout and stderr appended to `log`.
    pub fn spawn(&self, label: &str, log: &Path, program: &Path, args: &[&str]) -> NsProcess {
        let file = append_file(log);
        let file_err = file.try_clone().expect("cannot clone log file handle");
        // `ip netns exec` execs the program itself, so the child's pid is the program's pid.
        let child = Command::new(&self.ip_tool)
            .args(["netns", "exec", &self.name])
            .arg(program)
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} in {}: {e}", self.name));
        NsProcess {
            label: label.to_owned(),
            child: Mutex::new(child),
            log_path: log.to_owned(),
        }
    }

    /// An HTTP request with curl from inside this namespace: `(status, body)`. `Err` when no HTTP
    /// answer arrived (refused, timed out) or curl is missing.
    pub fn http(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let curl = required_tool("curl", "curl");
        let mut args = vec!["-sS", "-m", "3", "-X", method, "-w", "\n%{http_code}"];
        let header_lines: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        for h in &header_lines {
            args.extend(["-H", h]);
        }
        if body.is_some() {
            args.extend(["--data-binary", "@-"]);
        }
        args.push(url);
        let out = self.exec(&curl, &args, body)?;
        let (text, code) = out
            .rsplit_once('\n')
            .ok_or_else(|| format!("no status line in curl output {out:?}"))?;
        let code = code
            .trim()
            .parse()
            .map_err(|_| format!("bad status {code:?} from curl"))?;
        Ok((code, text.to_owned()))
    }

    /// Asks `server` over TCP with dig from inside this namespace; the answer rdata like `dig +short`,
    /// sorted. Errors on transport failure and rcodes other than NOERROR/NXDOMAIN.
    pub fn dig(&self, server: SocketAddr, name: &str, rtype: &str) -> Result<Vec<String>, String> {
        let dig = required_tool("dig", "dnsutils");
        let args = super::dns::dig_args(server, name, rtype);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.exec(&dig, &args, None)?;
        super::dns::parse_dig(&out).map_err(|e| format!("dig {name} {rtype} @{server}: {e}"))
    }
}

/// A process running inside a namespace, output appended to a log file. Dropping it SIGKILLs and
/// reaps it.
pub struct NsProcess {
    label: String,
    // A Mutex so `&self` methods can call `try_wait` (which needs `&mut Child`).
    child: Mutex<Child>,
    log_path: PathBuf,
}

impl NsProcess {
    /// What it is, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.child().try_wait(), Ok(None))
    }

    /// SIGKILL (`kill -9`) and reap. No-op if it already exited.
    pub fn kill(&self) {
        let mut child = self.child();
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` until its log contains `needle`; panics with the log on timeout or when
    /// the process exits without having logged it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if !self.is_running() && !self.log().contains(needle) {
                panic!(
                    "{} exited without logging {needle:?}\n--- log ---\n{}",
                    self.label,
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not log {needle:?} within {timeout:?}\n--- log ---\n{}",
                    self.label,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Knot primary for [`ZONE`] on `IP:53` inside a namespace, accepting UPDATEs signed with the TSIG key
/// [`KEY_NAME`] ([`TSIG_ALGORITHM`], random secret). Same config shape as the loopback harness server.
pub struct NsKnot {
    /// `IP:53`.
    pub addr: SocketAddr,
    /// The base64 TSIG secret.
    pub secret_b64: String,
    /// The server process.
    pub process: NsProcess,
}

impl NsKnot {
    /// Starts knotd in `ns` on its first address, port 53, with files under `dir`, and the zone made of
    /// the fixed header (SOA serial 1, `NS ns1`, `ns1 A` = the server's address) and `zone_body`.
    /// Returns once it answers an SOA query.
    pub fn start(ns: &Ns, dir: &Path, zone_body: &str) -> NsKnot {
        let knotd = required_tool("knotd", "knot");
        let addr = SocketAddr::from((ns.ip(), 53));
        for sub in ["run", "db", "zones"] {
            fs::create_dir_all(dir.join(sub)).expect("cannot create Knot directory");
        }
        fs::write(
            dir.join("zones/example.test.zone"),
            super::dns::zone_file_text(&ns.ip().to_string(), zone_body),
        )
        .expect("cannot write the zone file");
        let secret_b64 = random_secret_b64();
        let conf = dir.join("knot.conf");
        fs::write(
            &conf,
            super::dns::knot_config(dir, &format!("{}@53", ns.ip()), &secret_b64),
        )
        .expect("cannot write the Knot config");
        let conf = conf.to_str().expect("UTF-8 path");
        let process = ns.spawn(
            &format!("knotd in {}", ns.name),
            &dir.join("knot.log"),
            &knotd,
            &["-c", conf],
        );
        let knot = NsKnot {
            addr,
            secret_b64,
            process,
        };
        let deadline = Instant::now() + KNOT_READY;
        loop {
            match ns.dig(addr, ZONE, "SOA") {
                Ok(soa) if !soa.is_empty() => return knot,
                result => {
                    if !knot.process.is_running() || Instant::now() >= deadline {
                        panic!(
                            "Knot in {} is not answering: {result:?}\n--- log ---\n{}",
                            ns.name,
                            knot.process.log()
                        );
                    }
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes the base64 TSIG secret to `dir/tsig.secret` (mode 0600) and returns its path.
    pub fn write_secret_file(&self, dir: &Path) -> PathBuf {
        super::dns::write_secret(dir, &self.secret_b64)
    }

    /// Answer rdata of `name rtype`, asked from namespace `from`, sorted; panics if Knot does not answer.
    pub fn query(&self, from: &Ns, name: &str, rtype: &str) -> Vec<String> {
        from.dig(self.addr, name, rtype).unwrap_or_else(|e| {
            panic!(
                "query {name} {rtype} failed: {e}\n--- Knot log ---\n{}",
                self.process.log()
            )
        })
    }

    /// The zone's SOA serial, asked from namespace `from`.
    pub fn soa_serial(&self, from: &Ns) -> u32 {
        let soa = self.query(from, ZONE, "SOA");
        soa.first()
            .and_then(|rdata| rdata.split_whitespace().nth(2))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no SOA serial in answer {soa:?}"))
    }
}
