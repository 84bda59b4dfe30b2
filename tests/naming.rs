//! Fleet naming (`rrguard naming …`) end to end: the real binary, many processes at once, against a
//! real Knot and a real BIND (`knot_and_bind!`), the naming zone being the harness's `example.test.`
//! with the harness's TSIG key (allowed to update and to transfer the zone).
//!
//! What is checked: 20 nodes registering at the same moment get 20 distinct names without gaps
//! (iterative and masterful); re-registering keeps the name; a node whose renewals stop loses its
//! name after `release_after` and not before, and the next registrations take exactly those names;
//! two slaves changing master at the same moment leave exactly one master, the old one a slave, and a
//! poller every 10 ms never sees zero or two records at the master name; the hosts sync keeps every
//! byte outside its section, puts the legacy prefix first, and a crash between the write and the
//! rename leaves the old file.

#[macro_use]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_net::proto::op::{Message, Query};
use hickory_net::proto::rr::{Name, RData, RecordType};
use support::{DnsKind, DnsServer, rrguard_bin, wait_until};
use tempfile::TempDir;

/// How many nodes register at once.
const NODES: usize = 20;

/// A naming zone on a real server and a config pointing at it.
struct Fixture {
    server: DnsServer,
    dir: TempDir,
    config: PathBuf,
}

impl Fixture {
    fn start(kind: DnsKind) -> Fixture {
        let server = DnsServer::start(kind, "");
        let dir = tempfile::tempdir().unwrap();
        server.write_secret_file(dir.path());
        let config = dir.path().join("rrguard.toml");
        fs::write(
            &config,
            format!(
                r#"[[writer]]
name = "naming-dns"
type = "rfc2136"
server = "{addr}"
tsig = {{ name = "upd-key", algorithm = "hmac-sha256", secret_file = "tsig.secret" }}
timeout = "5s"

[naming]
writer = "naming-dns"
zone = "example.test"
service = "svc"
style = "iterative"
ttl = 30
renew_interval = "500ms"
release_after = "3s"
hosts_file = "hosts"
"#,
                addr = server.addr
            ),
        )
        .unwrap();
        Fixture {
            server,
            dir,
            config,
        }
    }

    /// `rrguard naming -c CONFIG ARGS…`, not waited for; stdout and stderr to files named `tag`.
    fn spawn(&self, tag: &str, args: &[&str]) -> Child {
        let out = fs::File::create(self.dir.path().join(format!("{tag}.out"))).unwrap();
        let err = fs::File::create(self.dir.path().join(format!("{tag}.err"))).unwrap();
        let mut cmd = Command::new(rrguard_bin());
        cmd.arg("naming");
        if args.first() != Some(&"-c") {
            cmd.arg("-c").arg(&self.config);
        }
        cmd.args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap()
    }

    /// `rrguard naming -c CONFIG ARGS…`, waited for.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(rrguard_bin())
            .arg("naming")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    fn stdout_of(&self, tag: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("{tag}.out"))).unwrap_or_default()
    }

    fn stderr_of(&self, tag: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("{tag}.err"))).unwrap_or_default()
    }

    /// The A records at `label`.
    fn addresses(&self, label: &str) -> Vec<String> {
        self.server.query(&format!("{label}.example.test"), "A")
    }

    /// The instance in the ownership TXT at `label`, and its lease.
    fn owner(&self, label: &str) -> Option<(String, u64)> {
        let txt = self.server.query(&format!("{label}.example.test"), "TXT");
        let text = txt.first()?.trim_matches('"').to_owned();
        let field = |k: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_owned))
        };
        Some((field("instance")?, field("lease")?.parse().ok()?))
    }
}

/// Children killed on drop, so a failing test leaves no process behind.
#[derive(Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn node_args(i: usize, service: &str, style: &str) -> Vec<String> {
    vec![
        "--service".into(),
        service.into(),
        "--style".into(),
        style.into(),
        "--instance-id".into(),
        format!("node-{i}"),
        "--address".into(),
        format!("127.0.1.{}", i + 1),
    ]
}

/// Starts `NODES` `register` processes at once (`extra` after the command) and returns them.
fn spawn_all(f: &Fixture, service: &str, style: &str, extra: &[&str]) -> Children {
    let mut children = Children::default();
    for i in 0..NODES {
        let mut args: Vec<String> = vec!["register".into()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.extend(node_args(i, service, style));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        children.0.push(f.spawn(&format!("{service}-{i}"), &args));
    }
    children
}

/// Waits for all one-shot registrations; returns node → name.
fn names_of(f: &Fixture, service: &str, children: &mut Children) -> BTreeMap<usize, String> {
    let mut names = BTreeMap::new();
    for (i, c) in children.0.iter_mut().enumerate() {
        let status = c.wait().unwrap();
        let tag = format!("{service}-{i}");
        assert!(
            status.success(),
            "node {i}: {status}\n{}\n--- server log ---\n{}",
            f.stderr_of(&tag),
            f.server.log()
        );
        names.insert(i, f.stdout_of(&tag).trim().to_owned());
    }
    names
}

/// The name each node's DNS records say it holds matches what it printed, with its own address.
fn assert_dns_agrees(f: &Fixture, names: &BTreeMap<usize, String>) {
    for (i, label) in names {
        assert_eq!(
            f.addresses(label),
            [format!("127.0.1.{}", i + 1)],
            "{label}"
        );
        assert_eq!(
            f.owner(label).map(|o| o.0),
            Some(format!("node-{i}")),
            "{label}"
        );
    }
}

fn twenty_iterative_nodes_take_svc_0_to_19(kind: DnsKind) {
    let f = Fixture::start(kind);
    let mut children = spawn_all(&f, "svc", "iterative", &[]);
    let names = names_of(&f, "svc", &mut children);
    let got: BTreeSet<&str> = names.values().map(String::as_str).collect();
    let want: Vec<String> = (0..NODES).map(|n| format!("svc-{n}")).collect();
    assert_eq!(
        got,
        want.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "{names:?}"
    );
    assert_dns_agrees(&f, &names);
    // Re-registering keeps the name (and renews it), from any node.
    let again = f.run(&[
        "register",
        "--instance-id",
        "node-7",
        "--address",
        "127.0.1.8",
    ]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), names[&7]);
    assert!(f.addresses("svc-20").is_empty());
}

fn twenty_masterful_nodes_take_one_master_and_slaves_1_to_19(kind: DnsKind) {
    let f = Fixture::start(kind);
    let mut children = spawn_all(&f, "db", "masterful", &[]);
    let names = names_of(&f, "db", &mut children);
    let got: BTreeSet<&str> = names.values().map(String::as_str).collect();
    let mut want: BTreeSet<String> = (1..NODES).map(|n| format!("db-slave-{n}")).collect();
    want.insert("db-master".into());
    assert_eq!(
        got,
        want.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "{names:?}"
    );
    assert_dns_agrees(&f, &names);
    let (master, _) = names.iter().find(|(_, n)| *n == "db-master").unwrap();
    let mut args = vec!["register".to_owned()];
    args.extend(node_args(*master, "db", "masterful"));
    let again = f.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(text(&again.stdout), "db-master", "{}", text(&again.stderr));
}

fn stopped_renewals_free_names_after_release_after_and_not_before(kind: DnsKind) {
    let f = Fixture::start(kind);
    let mut daemons = spawn_all(&f, "svc", "iterative", &["--daemon"]);
    let mut names = BTreeMap::new();
    wait_until("every daemon registered", Duration::from_secs(60), || {
        for i in 0..NODES {
            let out = f.stdout_of(&format!("svc-{i}"));
            if let Some(line) = out.lines().next() {
                names.insert(i, line.trim().to_owned());
            }
        }
        names.len() == NODES
    });
    let all: BTreeSet<String> = names.values().cloned().collect();
    assert_eq!(all.len(), NODES, "{names:?}");
    // Stop three nodes' renewals (SIGKILL: no release), those holding svc-3, svc-8 and svc-14.
    let victims: Vec<usize> = ["svc-3", "svc-8", "svc-14"]
        .iter()
        .map(|n| *names.iter().find(|(_, v)| v == n).unwrap().0)
        .collect();
    let mut leases = BTreeMap::new();
    for &v in &victims {
        daemons.0[v].kill().unwrap();
        daemons.0[v].wait().unwrap();
        // The last lease written: renewals have stopped, so this is final.
        let (instance, lease) = f.owner(&names[&v]).unwrap();
        assert_eq!(instance, format!("node-{v}"));
        leases.insert(names[&v].clone(), lease);
    }
    let mut freed_at = BTreeMap::new();
    wait_until("the three names are freed", Duration::from_secs(30), || {
        for label in leases.keys() {
            if !freed_at.contains_key(label) && f.owner(label).is_none() {
                freed_at.insert(label.clone(), wall());
            }
        }
        freed_at.len() == leases.len()
    });
    for (label, lease) in &leases {
        let gone = freed_at[label];
        // Not before: the lease was stamped at its renewal or earlier (whole seconds, rounded down).
        assert!(
            gone >= *lease as f64 + 3.0,
            "{label} freed at {gone:.3}, its last renewal at or after {lease}: before release_after 3 s"
        );
        // After: the next renewal tick of any live node past the deadline (0.5 s), plus slack.
        assert!(
            gone <= *lease as f64 + 3.0 + 1.0 + 5.0,
            "{label} freed only at {gone:.3}, lease {lease}"
        );
        assert!(f.addresses(label).is_empty(), "{label} still has addresses");
    }
    // The live nodes kept theirs all along.
    for (i, label) in &names {
        if !victims.contains(i) {
            assert_eq!(f.owner(label).map(|o| o.0), Some(format!("node-{i}")));
        }
    }
    // The next three registrations take exactly the freed names.
    let mut next = Children::default();
    for i in 100..103 {
        let args = node_args(i, "svc", "iterative");
        let mut all_args = vec!["register"];
        all_args.extend(args.iter().map(String::as_str));
        next.0.push(f.spawn(&format!("late-{i}"), &all_args));
    }
    let mut taken = BTreeSet::new();
    for (n, c) in next.0.iter_mut().enumerate() {
        assert!(
            c.wait().unwrap().success(),
            "{}",
            f.stderr_of(&format!("late-{}", 100 + n))
        );
        taken.insert(f.stdout_of(&format!("late-{}", 100 + n)).trim().to_owned());
    }
    assert_eq!(
        taken,
        leases.keys().cloned().collect::<BTreeSet<_>>(),
        "the gaps are filled first"
    );
}

/// A TCP proxy to `server` that holds every answer back for `delay`: the server reads and writes at
/// the moment a request arrives, but the client learns the result `delay` later. Two clients started
/// within `delay` of each other therefore both act on what they read before either wrote: a real
/// race, whatever the process start-up jitter.
struct DelayProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    fn start(server: SocketAddr, delay: Duration) -> DelayProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(upstream) = std::net::TcpStream::connect(server) else {
                    continue;
                };
                let (mut c_in, mut u_out) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut u_out);
                });
                let (mut u_in, mut c_out) = (upstream, client);
                thread::spawn(move || {
                    use std::io::{Read as _, Write as _};
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n) = u_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        thread::sleep(delay);
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        DelayProxy { addr, stop }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Counts the A records owned by `name` in a UDP answer from `server`; `None` on no answer.
fn count_a(socket: &UdpSocket, server: SocketAddr, name: &Name, id: u16) -> Option<usize> {
    let mut q = Message::query();
    q.metadata.id = id;
    q.metadata.recursion_desired = false;
    q.add_query(Query::query(name.clone(), RecordType::A));
    socket.send_to(&q.to_vec().unwrap(), server).ok()?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        let m = Message::from_vec(&buf[..n]).ok()?;
        if m.metadata.id == id {
            return Some(
                m.answers
                    .iter()
                    .filter(|r| r.name == *name && matches!(r.data, RData::A(_)))
                    .count(),
            );
        }
    }
}

fn two_slaves_change_master_at_once_one_wins(kind: DnsKind) {
    let f = Fixture::start(kind);
    for i in 0..3 {
        let mut args = vec!["register".to_owned()];
        args.extend(node_args(i, "db", "masterful"));
        let out = f.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert_eq!(f.owner("db-master").unwrap().0, "node-0");
    // The poller: every 10 ms, how many A records db-master has.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (stop, server) = (stop.clone(), f.server.addr);
        thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            let name = Name::from_ascii("db-master.example.test.").unwrap();
            let mut counts = Vec::new();
            for id in 1..=3000u16 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                counts.push(count_a(&socket, server, &name, id));
                thread::sleep(Duration::from_millis(10));
            }
            counts
        })
    };
    thread::sleep(Duration::from_millis(200));
    // Both racers reach the server through a proxy that delays answers by 300 ms, so each reads the
    // zone before the other's UPDATE lands (process start-up alone differs by tens of ms).
    let proxy = DelayProxy::start(f.server.addr, Duration::from_millis(300));
    let slow = f.dir.path().join("via-proxy.toml");
    fs::write(
        &slow,
        fs::read_to_string(&f.config)
            .unwrap()
            .replace(&f.server.addr.to_string(), &proxy.addr.to_string()),
    )
    .unwrap();
    let mut racers = Children::default();
    for i in 1..3 {
        let mut args = vec![
            "-c".to_owned(),
            slow.display().to_string(),
            "change-master".to_owned(),
        ];
        args.extend(node_args(i, "db", "masterful"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        racers.0.push(f.spawn(&format!("cm-{i}"), &args));
    }
    let codes: Vec<i32> = racers
        .0
        .iter_mut()
        .map(|c| c.wait().unwrap().code().unwrap_or(-1))
        .collect();
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let counts = poller.join().unwrap();
    let logs = format!("{}\n{}", f.stderr_of("cm-1"), f.stderr_of("cm-2"));
    assert_eq!(
        codes.iter().filter(|c| **c == 0).count(),
        1,
        "exactly one change-master wins: {codes:?}\n{logs}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == 2).count(),
        1,
        "the other loses with exit 2: {codes:?}\n{logs}"
    );
    let winner = if codes[0] == 0 { 1 } else { 2 };
    let loser = 3 - winner;
    let answered: Vec<usize> = counts.iter().flatten().copied().collect();
    assert!(answered.len() >= 20, "too few polls answered: {counts:?}");
    assert!(
        answered.iter().all(|n| *n == 1),
        "db-master had zero or two A records at some poll: {answered:?}"
    );
    assert_eq!(f.owner("db-master").unwrap().0, format!("node-{winner}"));
    assert_eq!(
        f.addresses("db-master"),
        [format!("127.0.1.{}", winner + 1)]
    );
    // The old master took the winner's slave name; the loser kept its own.
    let winner_old = format!("db-slave-{winner}");
    assert_eq!(f.owner(&winner_old).unwrap().0, "node-0");
    assert_eq!(f.addresses(&winner_old), ["127.0.1.1"]);
    assert_eq!(
        f.owner(&format!("db-slave-{loser}")).unwrap().0,
        format!("node-{loser}")
    );
    eprintln!(
        "{kind:?}: {} polls of db-master answered during the race, all with one record",
        answered.len()
    );
}

/// Content outside the naming section, kept byte for byte: CRLF, a byte that is not UTF-8, the
/// hosts writer's own section, a last line without a line break.
const BEFORE: &[u8] = b"127.0.0.1\tlocalhost\r\n# caf\xe9\n# BEGIN rrguard\n10.0.0.9\tw.example.test\t# ttl=3\n# END rrguard\n";
const AFTER: &[u8] = b"10.1.2.3 db.internal # primary";

fn hosts_sync_keeps_the_outside_and_puts_the_prefix_first(kind: DnsKind) {
    let f = Fixture::start(kind);
    for i in 0..2 {
        let out = f.run(&[
            "register",
            "--instance-id",
            &format!("h-{i}"),
            "--address",
            &format!("127.0.3.{}", i + 1),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let hosts = f.dir.path().join("hosts");
    let prefix = f.dir.path().join("legacy");
    fs::write(&prefix, "10.9.9.9 legacy-box\n").unwrap();
    fs::write(
        &f.config,
        fs::read_to_string(&f.config).unwrap() + "hosts_prefix_file = \"legacy\"\n",
    )
    .unwrap();
    let mut old = BEFORE.to_vec();
    old.extend_from_slice(b"# BEGIN rrguard-naming\nold line\n# END rrguard-naming\n");
    old.extend_from_slice(AFTER);
    fs::write(&hosts, &old).unwrap();
    // Dry run: nothing written.
    let dry = f.run(&["hosts-sync", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(text(&dry.stdout).contains("svc-1.example.test svc-1"));
    assert_eq!(fs::read(&hosts).unwrap(), old);
    let out = f.run(&["hosts-sync"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new = fs::read(&hosts).unwrap();
    assert!(new.starts_with(BEFORE), "{}", String::from_utf8_lossy(&new));
    assert!(new.ends_with(AFTER), "{}", String::from_utf8_lossy(&new));
    let section = String::from_utf8_lossy(&new[BEFORE.len()..new.len() - AFTER.len()]).into_owned();
    let lines: Vec<&str> = section.lines().collect();
    assert_eq!(lines[0], "# BEGIN rrguard-naming");
    assert_eq!(
        lines[2], "10.9.9.9 legacy-box",
        "the prefix comes first: {section}"
    );
    assert!(
        lines.contains(&"127.0.3.1\tsvc-0.example.test svc-0"),
        "{section}"
    );
    assert!(
        lines.contains(&"127.0.3.2\tsvc-1.example.test svc-1"),
        "{section}"
    );
    assert!(
        lines.contains(&"127.0.0.1\tns1.example.test ns1"),
        "{section}"
    );
    assert_eq!(*lines.last().unwrap(), "# END rrguard-naming");
    assert_eq!(fs::read(f.dir.path().join("hosts.bak")).unwrap(), old);
    // Unchanged zone: the file is not rewritten.
    let mtime = fs::metadata(&hosts).unwrap().modified().unwrap();
    let again = f.run(&["hosts-sync"]);
    assert!(
        text(&again.stdout).ends_with("unchanged"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(fs::metadata(&hosts).unwrap().modified().unwrap(), mtime);
    // The daemon picks up a new name within its interval.
    fs::write(
        &f.config,
        fs::read_to_string(&f.config).unwrap() + "hosts_interval = \"200ms\"\n",
    )
    .unwrap();
    let mut daemon = Children::default();
    daemon
        .0
        .push(f.spawn("hosts-daemon", &["hosts-sync", "--daemon"]));
    let out = f.run(&["register", "--instance-id", "h-2", "--address", "127.0.3.3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("the daemon writes svc-2", Duration::from_secs(10), || {
        String::from_utf8_lossy(&fs::read(&hosts).unwrap())
            .contains("127.0.3.3\tsvc-2.example.test svc-2")
    });
    assert!(fs::read(&hosts).unwrap().starts_with(BEFORE));
}

/// A crash after the new version is written and fsynced but before the rename: the old file is
/// intact, and the next sync works.
#[tokio::test]
async fn a_crash_between_write_and_rename_leaves_the_old_file() {
    use rrguard::naming::hosts::{HostsTarget, Synced, prepare, sync};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hosts");
    let old = [BEFORE, AFTER].concat();
    fs::write(&path, &old).unwrap();
    let target = HostsTarget {
        path: path.clone(),
        prefix_file: None,
        backup: true,
    };
    let prepared = prepare(
        &target,
        "example.test",
        "192.0.2.1\tsvc-0.example.test svc-0\n",
    )
    .unwrap()
    .expect("the content changes");
    let staged = prepared.staged_path().to_path_buf();
    assert!(staged.exists() && staged.parent() == Some(dir.path()));
    // The process dies here: nothing renames the staged file, nothing removes it.
    std::mem::forget(prepared);
    assert_eq!(fs::read(&path).unwrap(), old, "the old file is intact");
    assert!(fs::read(&staged).unwrap().windows(5).any(|w| w == b"svc-0"));
    // The next run replaces the file whole.
    let done = sync(
        &target,
        "example.test",
        "192.0.2.1\tsvc-0.example.test svc-0\n".into(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(done, Synced::Written);
    let new = fs::read(&path).unwrap();
    // The file had no section: it is appended, after a line break the last line lacked.
    assert!(new.starts_with(&old) && new.ends_with(b"# END rrguard-naming\n"));
    let _ = fs::remove_file(staged);
}

fn commands_exit_with_their_documented_codes(kind: DnsKind) {
    let f = Fixture::start(kind);
    // Dry run: the name it would take, nothing written.
    let dry = f.run(&[
        "register",
        "--dry-run",
        "--instance-id",
        "x",
        "--address",
        "127.0.4.1",
    ]);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    assert_eq!(text(&dry.stdout), "svc-0");
    assert!(f.owner("svc-0").is_none(), "a dry run wrote");
    // Not registered.
    for cmd in ["renew", "release"] {
        let out = f.run(&[cmd, "--instance-id", "x"]);
        assert_eq!(out.status.code(), Some(3), "{cmd}: {}", text(&out.stderr));
    }
    // Register, renew, --set-hostname into a file, release.
    let hostname = f.dir.path().join("hostname");
    let reg = f.run(&[
        "register",
        "--instance-id",
        "x",
        "--address",
        "127.0.4.1",
        "--set-hostname",
        "--no-sethostname",
        "--hostname-file",
        hostname.to_str().unwrap(),
    ]);
    assert_eq!(reg.status.code(), Some(0), "{}", text(&reg.stderr));
    assert_eq!(fs::read_to_string(&hostname).unwrap(), "svc-0\n");
    let renew = f.run(&["renew", "--instance-id", "x"]);
    assert_eq!(
        (renew.status.code(), text(&renew.stdout)),
        (Some(0), "svc-0".into())
    );
    assert_eq!(
        f.addresses("svc-0"),
        ["127.0.4.1"],
        "renewal without --address keeps the address"
    );
    // change-master on an iterative service is a usage error.
    let cm = f.run(&["change-master", "--instance-id", "x"]);
    assert_eq!(cm.status.code(), Some(64), "{}", text(&cm.stderr));
    let list = f.run(&["list"]);
    assert!(
        text(&list.stdout).starts_with("svc-0\t127.0.4.1\tinstance=x\tlease_age="),
        "{}",
        text(&list.stdout)
    );
    let rel = f.run(&["release", "--instance-id", "x"]);
    assert_eq!(rel.status.code(), Some(0), "{}", text(&rel.stderr));
    assert!(f.owner("svc-0").is_none() && f.addresses("svc-0").is_empty());
    // A name held by records rrguard did not write is never taken.
    f.server
        .nsupdate("update add svc-0.example.test. 60 A 192.0.2.77\n");
    let out = f.run(&["register", "--instance-id", "y", "--address", "127.0.4.2"]);
    assert_eq!(text(&out.stdout), "svc-1", "{}", text(&out.stderr));
    assert_eq!(f.addresses("svc-0"), ["192.0.2.77"]);
}

/// With sethostname(2) too, inside a private UTS namespace (the host's name is never touched).
#[test]
fn set_hostname_calls_sethostname_in_a_private_uts_namespace() {
    if !nix_root() {
        eprintln!("skipped: needs root for unshare --uts");
        return;
    }
    let f = Fixture::start(DnsKind::Knot);
    let hostname = f.dir.path().join("hostname");
    let script = format!(
        "{} naming -c {} register --instance-id u --address 127.0.5.1 --set-hostname --hostname-file {} >/dev/null && hostname",
        rrguard_bin().display(),
        f.config.display(),
        hostname.display()
    );
    let out = Command::new("unshare")
        .args(["--uts", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "svc-0");
    assert_eq!(fs::read_to_string(&hostname).unwrap(), "svc-0\n");
}

fn nix_root() -> bool {
    Path::new("/proc/self/status").exists()
        && fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

knot_and_bind!(
    twenty_iterative_nodes_take_svc_0_to_19,
    twenty_masterful_nodes_take_one_master_and_slaves_1_to_19,
    stopped_renewals_free_names_after_release_after_and_not_before,
    two_slaves_change_master_at_once_one_wins,
    hosts_sync_keeps_the_outside_and_puts_the_prefix_first,
    commands_exit_with_their_documented_codes,
);
