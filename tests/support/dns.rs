//! Real authoritative DNS servers (Knot, BIND) for the zone `example.test.`, with a TSIG key that may
//! send RFC 2136 UPDATEs, each on its own free port of 127.0.0.1 and in its own temporary directory.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::procnet::{Ownership, port_ownership};
use super::util::{
    append_file, claim_port, find_program, random_secret_b64, release, run_with_timeout, terminate,
};

/// The zone every harness DNS server is authoritative for.
pub const ZONE: &str = "example.test.";
/// The name of the TSIG key allowed to update [`ZONE`] (and to transfer it).
pub const KEY_NAME: &str = "upd-key";
/// The TSIG algorithm of that key, as nsupdate, Knot and BIND spell it.
pub const TSIG_ALGORITHM: &str = "hmac-sha256";

/// How long a server may take to answer its first SOA query (they need ~50-100 ms; CI can be slow).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How many fresh ports `start` tries when it loses a bind race against another process.
const PORT_TRIES: usize = 20;

/// Which DNS server implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsKind {
    /// Knot DNS (`knotd`, Debian package `knot`).
    Knot,
    /// BIND 9 (`named`, Debian package `bind9`).
    Bind,
}

impl DnsKind {
    fn program(self) -> &'static str {
        match self {
            DnsKind::Knot => "knotd",
            DnsKind::Bind => "named",
        }
    }

    fn package(self) -> &'static str {
        match self {
            DnsKind::Knot => "knot",
            DnsKind::Bind => "bind9",
        }
    }
}

/// Outcome of one attempt to bring a server up.
enum Startup {
    Ready,
    /// Another process has (part of) the port: try again, possibly on another port.
    PortTaken(String),
    /// Anything else: the config or zone is broken, retrying will not help.
    Failed(String),
}

/// A running Knot or BIND server, authoritative for [`ZONE`], that accepts UPDATEs signed with the
/// TSIG key `key_name`/`secret_b64` ([`TSIG_ALGORITHM`]). Dropping it kills the server.
pub struct DnsServer {
    /// Which implementation this is.
    pub kind: DnsKind,
    /// `127.0.0.1:PORT`, for UDP and TCP.
    pub addr: SocketAddr,
    /// Always `"example.test."` ([`ZONE`]).
    pub zone: String,
    /// Always `"upd-key"` ([`KEY_NAME`]).
    pub key_name: String,
    /// The random 32-byte hmac-sha256 secret, base64.
    pub secret_b64: String,
    program: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    // Declared last so it is removed after the fields above; `Drop` kills the child before that.
    dir: TempDir,
}

impl DnsServer {
    /// Starts a server of `kind` on a free 127.0.0.1 port with a fresh random TSIG key and the zone
    /// `example.test.` made of a header written by the harness (`$ORIGIN`, `$TTL 60`, SOA with serial
    /// 1, `NS ns1`, `ns1 A 127.0.0.1`) followed by `zone_body` (relative names are fine).
    ///
    /// Returns once the server answers an SOA query over TCP and is verified to own its port alone.
    /// Panics, with the server's output, if it cannot start; retries on another port if it lost a
    /// bind race.
    pub fn start(kind: DnsKind, zone_body: &str) -> DnsServer {
        DnsServer::start_with_ports(kind, zone_body, &mut free_dns_port)
    }

    /// `start`, taking candidate ports from `next_port` (lets the self-tests force a collision).
    pub(crate) fn start_with_ports(
        kind: DnsKind,
        zone_body: &str,
        next_port: &mut dyn FnMut() -> u16,
    ) -> DnsServer {
        let program = find_program(kind.program()).unwrap_or_else(|| {
            panic!(
                "`{}` not found: install {} (scripts/test does this)",
                kind.program(),
                kind.package()
            )
        });
        let prefix = match kind {
            DnsKind::Knot => "rrguard-knot-",
            DnsKind::Bind => "rrguard-bind-",
        };
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("cannot create a temporary directory");
        for sub in ["run", "db", "zones"] {
            fs::create_dir(dir.path().join(sub)).expect("cannot create server directory");
        }
        fs::write(
            dir.path().join("zones/example.test.zone"),
            zone_file_text("127.0.0.1", zone_body),
        )
        .expect("cannot write the zone file");
        let mut server = DnsServer {
            kind,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            zone: ZONE.to_owned(),
            key_name: KEY_NAME.to_owned(),
            secret_b64: random_secret_b64(),
            program,
            log_path: dir.path().join("server.log"),
            child: None,
            dir,
        };
        let mut lost_races = Vec::new();
        for _ in 0..PORT_TRIES {
            server.addr.set_port(next_port());
            server.write_config();
            match server.launch() {
                Startup::Ready => return server,
                Startup::PortTaken(why) => {
                    // Expected now and then under parallel load; shown with the test's output.
                    eprintln!(
                        "{kind:?} lost port {}: {why}; trying another",
                        server.port()
                    );
                    lost_races.push(why);
                }
                Startup::Failed(why) => server.fail(&why),
            }
        }
        server.fail(&format!(
            "lost the race for a free port {PORT_TRIES} times: {lost_races:#?}"
        ))
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is running (it is between `stop` and `restart`).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited after 5 s. Afterwards connections
    /// to its port are refused. Its data stays, for [`DnsServer::restart`]. No-op if stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_GRACE);
            self.log_line("stopped by the harness");
        }
    }

    /// Stops the server if it runs, then starts it again on the same port with the data it had
    /// (Knot's zone file and journal, BIND's zone file and `.jnl`) and waits until it answers.
    /// Retries for up to ~10 s if another process grabbed the port meanwhile.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.launch() {
                Startup::Ready => return,
                Startup::PortTaken(why) if Instant::now() < deadline => {
                    self.log_line(&format!("port busy, retrying: {why}"));
                    thread::sleep(Duration::from_millis(200));
                }
                Startup::PortTaken(why) | Startup::Failed(why) => {
                    self.fail(&format!("restart on port {} failed: {why}", self.port()))
                }
            }
        }
    }

    /// The rdata of the answer to `name rtype` over TCP, like `dig +short`: trimmed, sorted (TXT
    /// strings keep their quotes). Empty for NXDOMAIN or no data. Panics if the server does not answer
    /// or answers with another error (REFUSED, SERVFAIL, ...); use [`DnsServer::try_query`] to see those.
    pub fn query(&self, name: &str, rtype: &str) -> Vec<String> {
        self.try_query(name, rtype).unwrap_or_else(|e| {
            panic!(
                "query {name} {rtype} to {:?} at {} failed: {e}\n--- server log ---\n{}",
                self.kind,
                self.addr,
                self.log()
            )
        })
    }

    /// Like [`DnsServer::query`], but returns an error instead of panicking when the server cannot be
    /// reached (e.g. it is stopped) or answers with an rcode other than NOERROR or NXDOMAIN.
    pub fn try_query(&self, name: &str, rtype: &str) -> Result<Vec<String>, String> {
        dig(self.addr, name, rtype)
    }

    /// The answer to `name rtype` over TCP as `(ttl, rdata)` pairs, sorted; records owned by other names
    /// (a CNAME's target followed in-zone) are left out. Panics like [`DnsServer::query`].
    pub fn query_with_ttl(&self, name: &str, rtype: &str) -> Vec<(u32, String)> {
        dig_records(self.addr, name, rtype).unwrap_or_else(|e| {
            panic!(
                "query {name} {rtype} to {:?} at {} failed: {e}\n--- server log ---\n{}",
                self.kind,
                self.addr,
                self.log()
            )
        })
    }

    /// The zone's current SOA serial.
    pub fn soa_serial(&self) -> u32 {
        let soa = self.query(&self.zone, "SOA");
        let serial = soa
            .first()
            .and_then(|rdata| rdata.split_whitespace().nth(2))
            .and_then(|s| s.parse().ok());
        serial.unwrap_or_else(|| panic!("no SOA serial in answer {soa:?}"))
    }

    /// Sends `commands` (nsupdate syntax, e.g. `update add new.example.test. 60 A 127.0.0.9`, several
    /// lines allowed) as one TSIG-signed UPDATE over TCP. Panics with nsupdate's output if it fails.
    pub fn nsupdate(&self, commands: &str) {
        if let Err(e) = self.try_nsupdate(commands) {
            panic!(
                "nsupdate to {:?} at {} failed: {e}\n--- server log ---\n{}",
                self.kind,
                self.addr,
                self.log()
            );
        }
    }

    /// Like [`DnsServer::nsupdate`], returning nsupdate's output, or an error with its output when it
    /// fails (refused prerequisite, bad key, server down, ...).
    pub fn try_nsupdate(&self, commands: &str) -> Result<String, String> {
        self.try_nsupdate_with_secret(&self.secret_b64, commands)
    }

    /// Sends `commands` like [`DnsServer::try_nsupdate`], but signed with `secret_b64` instead of the
    /// server's key secret (same key name and algorithm): for testing authentication failures.
    pub fn try_nsupdate_with_secret(
        &self,
        secret_b64: &str,
        commands: &str,
    ) -> Result<String, String> {
        let nsupdate = tool("nsupdate");
        let script = format!(
            "server {} {}\nzone {}\n{}\nsend\n",
            self.addr.ip(),
            self.port(),
            self.zone,
            commands.trim_end()
        );
        // -v: TCP (TESTING.md: a UDP retry can turn a success into a spurious NXRRSET);
        // -t: overall timeout, so a dead server cannot hang the test.
        let key = format!("{TSIG_ALGORITHM}:{}:{secret_b64}", self.key_name);
        let out = run_with_timeout(
            Command::new(nsupdate).args(["-v", "-t", "5", "-y", &key]),
            Some(&script),
            Duration::from_secs(20),
        )?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "nsupdate {}: {}\n--- script ---\n{script}",
                out.status,
                text.trim()
            ))
        }
    }

    /// Writes the base64 secret plus a newline to `dir/tsig.secret` (mode 0600, as a real secret file
    /// would be) and returns that path.
    pub fn write_secret_file(&self, dir: &Path) -> PathBuf {
        write_secret(dir, &self.secret_b64)
    }

    /// Everything the server printed so far (stdout and stderr, across restarts), plus the harness's
    /// own `=== harness: ... ===` marker lines.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Writes the config file for the current port (idempotent, so restarts reuse it unchanged).
    fn write_config(&self) {
        let dir = self.dir.path().display();
        let (port, key, secret) = (self.port(), &self.key_name, &self.secret_b64);
        let (file, text) = match self.kind {
            DnsKind::Knot => (
                "knot.conf",
                knot_config(self.dir.path(), &format!("127.0.0.1@{port}"), secret),
            ),
            DnsKind::Bind => (
                "named.conf",
                format!(
                    r#"// Written by tests/support (rrguard test harness).
options {{
    directory "{dir}";
    pid-file "{dir}/run/named.pid";
    session-keyfile none;
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    // Without this BIND 9.18 binds TCP with SO_REUSEPORT: two instances on one port both start and
    // the kernel splits connections between them. With it a collision is a visible bind error.
    reuseport no;
    // The zone's NS (ns1 = 127.0.0.1) would otherwise get NOTIFYs on port 53 after every update.
    notify no;
}};
// Empty on purpose: otherwise named binds 127.0.0.1:953 and parallel instances collide.
controls {{ }};
key "{key}" {{ algorithm {TSIG_ALGORITHM}; secret "{secret}"; }};
zone "example.test" {{
    type primary;
    file "{dir}/zones/example.test.zone";
    allow-update {{ key "{key}"; }};
    allow-transfer {{ key "{key}"; }};
}};
"#
                ),
            ),
        };
        fs::write(self.dir.path().join(file), text).expect("cannot write server config");
    }

    fn command(&self) -> Command {
        let dir = self.dir.path();
        let mut cmd = Command::new(&self.program);
        match self.kind {
            DnsKind::Knot => cmd.arg("-c").arg(dir.join("knot.conf")),
            // -g: foreground, log to stderr; -n 1: one worker thread is plenty and cheap.
            DnsKind::Bind => cmd
                .arg("-c")
                .arg(dir.join("named.conf"))
                .args(["-g", "-n", "1"]),
        };
        cmd.current_dir(dir);
        cmd
    }

    /// Spawns the server and waits until it is ready, or classifies why it is not.
    fn launch(&mut self) -> Startup {
        self.log_line(&format!(
            "starting {} on {}",
            self.program.display(),
            self.addr
        ));
        let log_start = fs::read(&self.log_path).map_or(0, |bytes| bytes.len());
        let log = append_file(&self.log_path);
        let log_err = log.try_clone().expect("cannot clone log file handle");
        let spawned = self
            .command()
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => return Startup::Failed(format!("cannot run {:?}: {e}", self.program)),
        };
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // This attempt's output only (slicing bytes, not a lossily converted string).
            let bytes = fs::read(&self.log_path).unwrap_or_default();
            let output =
                String::from_utf8_lossy(bytes.get(log_start..).unwrap_or_default()).to_lowercase();
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let pid = self.child.as_ref().expect("child is running").id();
            let verdict = if is_port_taken(&output) {
                Some(Startup::PortTaken(matching_line(&output, is_port_taken)))
            } else if let Some(status) = exited {
                Some(Startup::Failed(format!("server exited early ({status})")))
            } else if is_zone_broken(&output) {
                Some(Startup::Failed("the zone did not load".to_owned()))
            } else {
                // Ask for the SOA only once the port is ours alone: before that the answer (or the
                // silence) could come from whoever else is on the port.
                let (verdict, why_not) = match port_ownership(pid, self.port()) {
                    Ownership::Shared(why) => (Some(Startup::PortTaken(why)), String::new()),
                    Ownership::Incomplete(why) => (None, why),
                    Ownership::Exclusive => match self.try_query(ZONE, "SOA") {
                        Ok(soa) if !soa.is_empty() => (Some(Startup::Ready), String::new()),
                        Ok(_) => (None, "empty SOA answer".to_owned()),
                        Err(e) => (None, e),
                    },
                };
                verdict.or_else(|| {
                    (Instant::now() >= deadline).then(|| {
                        Startup::Failed(format!("not ready within {READY_TIMEOUT:?}: {why_not}"))
                    })
                })
            };
            match verdict {
                Some(Startup::Ready) => return Startup::Ready,
                Some(other) => {
                    self.stop();
                    return other;
                }
                None => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Appends a harness marker line to the server log, so `log()` shows what the harness did when.
    fn log_line(&self, what: &str) {
        let _ = writeln!(append_file(&self.log_path), "=== harness: {what} ===");
    }

    fn fail(&mut self, why: &str) -> ! {
        self.stop();
        // The temporary directory is deleted while the panic unwinds: show the zone file here.
        let zone =
            fs::read_to_string(self.dir.path().join("zones/example.test.zone")).unwrap_or_default();
        panic!(
            "{:?} DNS server failed: {why}\n--- zone file ---\n{zone}--- server log ---\n{}",
            self.kind,
            self.log()
        );
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // Runs during unwinding too; `terminate` never panics.
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_GRACE);
        }
    }
}

/// The whole zone file: the fixed header (with `ns1` at `ns1_ip`), then the caller's records.
pub(crate) fn zone_file_text(ns1_ip: &str, zone_body: &str) -> String {
    format!(
        "$ORIGIN {ZONE}\n$TTL 60\n\
         @   SOA ns1 hostmaster 1 3600 600 86400 60\n\
         @   NS  ns1\n\
         ns1 A   {ns1_ip}\n\
         {}\n",
        zone_body.trim_end()
    )
}

/// Knot's configuration for the test zone: listening on `listen` (`IP@PORT`), state under `dir`, the
/// TSIG key allowed to update and transfer the zone.
pub(crate) fn knot_config(dir: &Path, listen: &str, secret_b64: &str) -> String {
    let dir = dir.display();
    format!(
        r#"# Written by tests/support (rrguard test harness).
server:
    rundir: "{dir}/run"
    listen: {listen}
log:
  - target: stderr
    any: info
database:
    storage: "{dir}/db"
key:
  - id: {KEY_NAME}
    algorithm: {TSIG_ALGORITHM}
    secret: {secret_b64}
acl:
  - id: upd
    key: {KEY_NAME}
    action: [update, transfer]
zone:
  - domain: example.test
    storage: "{dir}/zones"
    file: example.test.zone
    acl: upd
"#
    )
}

/// Writes `secret_b64` plus a newline to `dir/tsig.secret` (mode 0600, as a real secret file would be)
/// and returns that path.
pub(crate) fn write_secret(dir: &Path, secret_b64: &str) -> PathBuf {
    let path = dir.join("tsig.secret");
    fs::write(&path, format!("{secret_b64}\n")).expect("cannot write secret file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .expect("cannot chmod secret file");
    path
}

/// A port free for both TCP and UDP on 127.0.0.1 (a DNS server needs both), never handed out before
/// by this process.
fn free_dns_port() -> u16 {
    for _ in 0..100 {
        let tcp = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
        let port = tcp.local_addr().expect("local_addr").port();
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port));
        if let (Ok(udp), true) = (udp, claim_port(port)) {
            release(tcp);
            release(udp);
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on 127.0.0.1 after 100 tries");
}

/// Log lines (lower-cased) by which Knot and BIND report that their port is taken.
fn is_port_taken(output: &str) -> bool {
    [
        "address in use",
        "address already in use",
        "could not listen",
        "cannot bind",
    ]
    .iter()
    .any(|needle| output.contains(needle))
}

/// Log lines (lower-cased) by which they report a zone that will not load (they keep running).
fn is_zone_broken(output: &str) -> bool {
    [
        "not loaded due to errors", // BIND
        "zone event 'load' failed", // Knot
        "failed to parse zone",     // Knot
    ]
    .iter()
    .any(|needle| output.contains(needle))
}

/// The first line of `output` that `matches`, for error messages.
fn matching_line(output: &str, matches: fn(&str) -> bool) -> String {
    output
        .lines()
        .find(|line| matches(line))
        .unwrap_or_default()
        .to_owned()
}

/// Path of a DNS client tool, or a panic telling how to install it.
fn tool(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!("`{name}` not found: install dnsutils/bind9-dnsutils (scripts/test does this)")
    })
}

/// The A records `server` answers for `qname`, sorted, from one UDP query on `sock` (whose read
/// timeout bounds the wait): `None` if no answer to this query comes, or it is not NOERROR. No
/// process is started, unlike [`dig`]: for polling every few milliseconds (benchmarks), where a
/// `dig` (~20 ms of a core each) would take CPU from what is measured.
pub fn ask_a(sock: &std::net::UdpSocket, server: SocketAddr, qname: &str) -> Option<Vec<String>> {
    use hickory_net::proto::op::{Message, Query, ResponseCode};
    use hickory_net::proto::rr::{Name, RData, RecordType};
    let mut query = Message::query();
    // A new id per query, so that a late answer to an earlier one is not taken for this one's.
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos()
        & 0xffff) as u16;
    query.metadata.id = id;
    query.add_query(Query::query(Name::from_ascii(qname).ok()?, RecordType::A));
    sock.send_to(&query.to_vec().ok()?, server).ok()?;
    let mut buf = [0u8; 4096];
    let answer = loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let answer = Message::from_vec(&buf[..n]).ok()?;
        if answer.metadata.id == id {
            break answer;
        }
    };
    if answer.metadata.response_code != ResponseCode::NoError {
        return None;
    }
    let mut ips: Vec<String> = answer
        .answers
        .iter()
        .filter_map(|rr| match &rr.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    ips.sort();
    Some(ips)
}

/// Asks `server` over TCP with dig and returns the answer rdata like `dig +short` would, sorted.
/// Errors on transport failure and on rcodes other than NOERROR/NXDOMAIN (which `+short` would hide).
pub fn dig(server: SocketAddr, name: &str, rtype: &str) -> Result<Vec<String>, String> {
    let out = run_with_timeout(
        Command::new(tool("dig")).args(dig_args(server, name, rtype)),
        None,
        Duration::from_secs(10),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "dig {name} {rtype} @{server}: {} {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_dig(&stdout).map_err(|e| format!("dig {name} {rtype} @{server}: {e}"))
}

/// Asks `server` like [`dig`] and returns the answer records owned by `name` as `(ttl, rdata)`, with
/// their type, sorted: `(60, "A 127.0.0.2")`.
pub fn dig_records(
    server: SocketAddr,
    name: &str,
    rtype: &str,
) -> Result<Vec<(u32, String)>, String> {
    let out = run_with_timeout(
        Command::new(tool("dig")).args(dig_args(server, name, rtype)),
        None,
        Duration::from_secs(10),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_dig(&stdout).map_err(|e| format!("dig {name} {rtype} @{server}: {e}"))?;
    let owner = format!("{}.", name.trim_end_matches('.')).to_ascii_lowercase();
    let mut records: Vec<(u32, String)> = stdout
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with(';'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (who, ttl) = (fields.next()?, fields.next()?.parse().ok()?);
            let rtype = fields.nth(1)?;
            let rdata = skip_fields(line, 4)?;
            (who.to_ascii_lowercase() == owner).then(|| (ttl, format!("{rtype} {rdata}")))
        })
        .collect();
    records.sort();
    Ok(records)
}

/// The arguments of one TCP, non-recursive, single-try query that prints the status and the answer.
pub(crate) fn dig_args(server: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    let fixed = [
        "+tcp",
        "+time=2",
        "+tries=1",
        "+norecurse",
        "+nocmd",
        "+noall",
        "+comments",
        "+answer",
    ];
    let mut args: Vec<String> = fixed.iter().map(|a| a.to_string()).collect();
    args.extend([
        format!("@{}", server.ip()),
        "-p".to_owned(),
        server.port().to_string(),
        name.to_owned(),
        rtype.to_owned(),
    ]);
    args
}

/// The answer rdata of `dig_args` output, sorted; an error (with the output) unless the status is
/// NOERROR or NXDOMAIN, which `+short` would hide.
pub(crate) fn parse_dig(stdout: &str) -> Result<Vec<String>, String> {
    let status = stdout
        .lines()
        .find_map(|line| line.split_once("status: "))
        .map(|(_, rest)| rest.split(',').next().unwrap_or_default().trim());
    if !matches!(status, Some("NOERROR" | "NXDOMAIN")) {
        return Err(stdout.trim().to_owned());
    }
    let mut rdata: Vec<String> = stdout
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with(';'))
        .filter_map(|line| skip_fields(line, 4)) // name ttl class type
        .map(str::to_owned)
        .collect();
    rdata.sort();
    Ok(rdata)
}

/// What follows the first `n` whitespace-separated fields of `line`, trimmed (keeps the spacing inside
/// TXT strings, which splitting and re-joining would not).
fn skip_fields(line: &str, n: usize) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    Some(rest.trim_end()).filter(|r| !r.is_empty())
}
