//! The writer battery (`tests/support/battery.rs`) over `zonefile`, against a real Knot that serves the
//! file: the writer's `reload_command` is `knotc zone-reload`, its `check_command` `named-checkzone`.
//! Out-of-band changes edit the managed lines of the file as an operator would (and raise the serial,
//! and reload); authoritative reads ask Knot with dig, after checking that Knot serves the file's
//! serial and that `named-checkzone` accepts the file.
//!
//! Below the battery, rows for what only a zone file has: the serial, writing only on change, the
//! check and reload commands, atomic replacement with a directory fsync (seen with strace), several
//! writers of one file, and the file loading in BIND as well.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rrguard::act::{Precondition, Published, RecordChange, Resources, WriteError, Writer};
use support::battery::*;
use support::{CustomDns, DnsKind, Site, zone_text};

/// Where a program is: on PATH or in the sbin directories, which are not on every user's PATH.
fn program(name: &str) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(PathBuf::from)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate.display().to_string();
        }
    }
    panic!("`{name}` not found: install knot, bind9 and strace (scripts/test does this)")
}

/// Knot serving `DIR/example.test.zone` from the file alone: it never writes the file itself.
fn knot_config(site: &Site<'_>) -> String {
    let dir = site.dir.display();
    format!(
        "server:\n    rundir: \"{dir}/run\"\n    listen: 127.0.0.1@{port}\nlog:\n  - target: stderr\n    any: info\ndatabase:\n    storage: \"{dir}/db\"\ntemplate:\n  - id: default\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\nzone:\n  - domain: example.test\n    storage: \"{dir}\"\n    file: example.test.zone\n",
        port = site.port
    )
}

/// Static records of the include file: the name server's address.
const STATIC: &str = "ns1 A 127.0.0.1\n";

/// A `zonefile` writer over the zone file a real Knot serves.
struct ZoneFixture {
    knot: CustomDns,
    path: PathBuf,
    resources: Resources,
    writer: Arc<dyn Writer>,
    /// Directories made immutable for `failing(BadCredentials)`, made mutable again on drop.
    immutable: Mutex<Vec<Immutable>>,
}

impl ZoneFixture {
    /// Knot with a hand-written zone (serial 1), which the writer takes over on its first write.
    fn start() -> ZoneFixture {
        let knot = CustomDns::start(
            DnsKind::Knot,
            &[
                (
                    "example.test.zone",
                    zone_text("example.test", "ns1 A 127.0.0.1"),
                ),
                ("static.zone", STATIC.to_owned()),
            ],
            None,
            ZONE,
            &knot_config,
        );
        let path = knot.dir().join("example.test.zone");
        let resources = Resources::default();
        let writer = build_writer(knot.dir(), &path, &commands(knot.dir()), &resources);
        ZoneFixture {
            writer,
            knot,
            path,
            resources,
            immutable: Mutex::default(),
        }
    }

    fn boxed() -> Box<dyn Fixture> {
        Box::new(ZoneFixture::start())
    }

    /// The fixture writer's commands (named-checkzone, knotc), as TOML lines.
    fn commands(&self) -> String {
        commands(self.knot.dir())
    }

    fn socket(&self) -> PathBuf {
        self.knot.dir().join("run/knot.sock")
    }

    fn reload_with(&self, socket: &Path) -> String {
        reload_with(socket)
    }

    /// A writer of the fixture's file, configured in TOML with `extra` lines, built like the daemon
    /// builds it.
    fn writer_with(&self, extra: &str, resources: &Resources) -> Arc<dyn Writer> {
        self.writer_of(&self.path, extra, resources)
    }

    fn writer_of(&self, path: &Path, extra: &str, resources: &Resources) -> Arc<dyn Writer> {
        build_writer(self.knot.dir(), path, extra, resources)
    }

    fn text(&self) -> String {
        fs::read_to_string(&self.path).unwrap()
    }

    /// The serial of the file's SOA.
    fn file_serial(&self) -> u32 {
        serial_in(&self.text())
    }

    /// The serial Knot serves.
    fn served_serial(&self) -> u32 {
        let soa = self.knot.query(ZONE, "SOA");
        soa[0].split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    fn reload(&self) {
        let out = Command::new(program("knotc"))
            .arg("-s")
            .arg(self.socket())
            .args(["-b", "zone-reload", "example.test"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "knotc: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            self.knot.log()
        );
    }
}

/// `check_command` with named-checkzone and `reload_command` with knotc on the Knot of `dir`, as TOML
/// lines.
fn commands(dir: &Path) -> String {
    format!(
        "check_command = [\"{}\", \"{{zone}}\", \"{{path}}\"]\n{}",
        program("named-checkzone"),
        reload_with(&dir.join("run/knot.sock"))
    )
}

/// `reload_command` with knotc on `socket`, as a TOML line.
fn reload_with(socket: &Path) -> String {
    format!(
        "reload_command = [\"{}\", \"-s\", \"{}\", \"-b\", \"zone-reload\", \"{{zone}}\"]\n",
        program("knotc"),
        socket.display()
    )
}

/// A `zonefile` writer of `path` (include `dir/static.zone`), configured in TOML with `extra` lines
/// and built like the daemon builds it.
fn build_writer(dir: &Path, path: &Path, extra: &str, resources: &Resources) -> Arc<dyn Writer> {
    let text = format!(
        "[[writer]]\nname = \"edge\"\ntype = \"zonefile\"\npath = \"{}\"\nzone = \"example.test\"\nns = [\"ns1.example.test\"]\ndefault_ttl = 60\ninclude = \"static.zone\"\n{extra}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"edge\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n",
        path.display()
    );
    let config = rrguard::config::parse(&dir.join("rrguard.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    rrguard::act::build(&config.writers[0], resources).unwrap()
}

/// The serial of the SOA line in a zone file's text.
fn serial_in(text: &str) -> u32 {
    text.lines()
        .find_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let soa = t.iter().position(|w| *w == "SOA")?;
            t.get(soa + 3)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no SOA in\n{text}"))
}

/// `text` with its SOA serial replaced.
fn with_serial(text: &str, serial: u32) -> String {
    let old = serial_in(text);
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if line.split_whitespace().any(|w| w == "SOA") {
            out.push_str(&line.replacen(&format!(" {old} "), &format!(" {serial} "), 1));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Runs named-checkzone on a file; its output on failure.
fn named_checkzone(path: &Path) -> Result<(), String> {
    let out = Command::new(program("named-checkzone"))
        .arg("example.test")
        .arg(path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Answer records owned by `name` as (TTL, type, rdata), asked over TCP.
fn dig_records(
    server: std::net::SocketAddr,
    name: &str,
    rtype: &str,
) -> Vec<(u32, String, String)> {
    let out = Command::new(program("dig"))
        .args([
            "+tcp",
            "+norecurse",
            "+time=2",
            "+tries=1",
            "+noall",
            "+answer",
        ])
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), name, rtype])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let owner = name.to_ascii_lowercase();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5 && f[0].eq_ignore_ascii_case(&owner))
                .then(|| (f[1].parse().unwrap(), f[3].to_owned(), f[4..].join(" ")))
        })
        .collect()
}

impl Fixture for ZoneFixture {
    fn writer(&self) -> &dyn Writer {
        &*self.writer
    }

    /// Rewrites the managed lines of `fqdn` in place, raises the serial and reloads Knot, as an
    /// operator editing the file would.
    fn set(&self, fqdn: &str, published: &Published) {
        let fqdn = fqdn.to_ascii_lowercase();
        let relative = fqdn
            .strip_suffix(&format!(".{ZONE}"))
            .unwrap_or(&fqdn)
            .to_owned();
        let text = self.text();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| {
                let owner = l.split_whitespace().next().unwrap_or_default();
                l.starts_with(char::is_whitespace)
                    || !(owner.eq_ignore_ascii_case(&fqdn) || owner.eq_ignore_ascii_case(&relative))
            })
            .map(str::to_owned)
            .collect();
        let mut mine: Vec<String> = published
            .records
            .iter()
            .map(|(ip, ttl)| {
                let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
                format!("{fqdn}\t{ttl}\tIN\t{rtype}\t{ip}")
            })
            .collect();
        if let Some(target) = &published.cname {
            mine.push(format!("{fqdn}\t60\tIN\tCNAME\t{target}"));
        }
        let at = lines
            .iter()
            .position(|l| l.starts_with("; END rrguard"))
            .unwrap_or(lines.len());
        lines.splice(at..at, mine);
        let edited = lines.join("\n") + "\n";
        let edited = with_serial(&edited, serial_in(&edited).wrapping_add(1));
        fs::write(&self.path, edited).unwrap();
        self.reload();
    }

    /// What Knot answers, once it serves the file's serial and named-checkzone accepts the file.
    fn authoritative(&self, fqdn: &str) -> Published {
        let file = self.file_serial();
        support::wait_until(
            "Knot serves the serial of the file",
            Duration::from_secs(5),
            || self.served_serial() == file,
        );
        if let Err(e) = named_checkzone(&self.path) {
            panic!("named-checkzone refuses the file: {e}\n{}", self.text());
        }
        let mut out = Published::default();
        for rtype in ["A", "AAAA"] {
            for (ttl, t, rdata) in dig_records(self.knot.addr, fqdn, rtype) {
                match t.as_str() {
                    "CNAME" => out.cname = Some(rdata),
                    _ => {
                        out.records.insert(rdata.parse().unwrap(), ttl);
                    }
                }
            }
        }
        out
    }

    fn failing(&self, failure: Failure) -> Result<Box<dyn Writer>, &'static str> {
        match failure {
            // knotc finds no server on the socket: the reload fails as when Knot is down.
            Failure::ServerError => {
                let absent = self.knot.dir().join("run/absent.sock");
                let extra = self.reload_with(&absent);
                Ok(Box::new(self.writer_with(&extra, &self.resources)))
            }
            // Tests run as root, whom file modes do not stop; an immutable directory (chattr +i)
            // refuses even root with EPERM. A copy of the zone file lives there.
            Failure::BadCredentials => {
                let guard = Immutable::new(&self.path).ok_or(
                    "chattr +i is not supported on this file system (needs ext4/xfs/btrfs and CAP_LINUX_IMMUTABLE); root is never denied by file modes",
                )?;
                let w = self.writer_of(&guard.file(), "", &Resources::default());
                self.immutable.lock().unwrap().push(guard);
                Ok(Box::new(w))
            }
        }
    }
}

writer_battery! {
    zonefile_knot => ZoneFixture::boxed();
}

// ---- Rows only a zone file has. ----

fn www_change(expected: &[&str], add: &[&str], remove: &[&str]) -> RecordChange {
    change(expected, add, remove)
}

/// The serial increases with every write, also past a serial an operator raised by hand far above
/// the clock, and Knot serves every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_always_increases_also_past_an_out_of_band_raise() {
    let f = ZoneFixture::start();
    let w = f.writer();
    w.apply(&www_change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap();
    let first = f.file_serial();
    assert!(first > 1_600_000_000, "unixtime serial, got {first}");
    w.apply(&www_change(&["127.0.0.2"], &["127.0.0.3"], &[]))
        .await
        .unwrap();
    let second = f.file_serial();
    assert!(second > first, "{second} > {first}");
    assert_eq!(f.served_serial(), second);
    // An operator sets a date-style serial (far above the clock's) and reloads.
    let raised = 2_099_123_100u32;
    fs::write(&f.path, with_serial(&f.text(), raised)).unwrap();
    f.reload();
    w.apply(&www_change(
        &["127.0.0.2", "127.0.0.3"],
        &[],
        &["127.0.0.2"],
    ))
    .await
    .unwrap();
    assert_eq!(f.file_serial(), raised + 1);
    assert_eq!(f.served_serial(), raised + 1);
    assert_eq!(addresses_of(&f, FQDN), set(&["127.0.0.3"]));
}

/// A change that changes nothing writes nothing: same inode, same mtime, and no reload (counted by a
/// reload command that logs each run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_and_no_reload_when_the_content_is_unchanged() {
    let f = ZoneFixture::start();
    let count = f.knot.dir().join("reloads");
    let reload = format!(
        "reload_command = [\"sh\", \"-c\", \"echo run >> {} && exec {} -s {} -b zone-reload {{zone}}\"]\n",
        count.display(),
        program("knotc"),
        f.socket().display()
    );
    let w = f.writer_with(&reload, &Resources::default());
    w.apply(&www_change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap();
    let before = fs::metadata(&f.path).unwrap();
    let text = f.text();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The same address again, an empty change, and a removal of an absent address.
    w.apply(&www_change(&["127.0.0.2"], &["127.0.0.2"], &[]))
        .await
        .unwrap();
    w.apply(&www_change(&["127.0.0.2"], &[], &[]))
        .await
        .unwrap();
    w.apply(&www_change(&["127.0.0.2"], &[], &["127.0.0.9"]))
        .await
        .unwrap();
    let after = fs::metadata(&f.path).unwrap();
    assert_eq!(
        (before.ino(), before.mtime(), before.mtime_nsec()),
        (after.ino(), after.mtime(), after.mtime_nsec())
    );
    assert_eq!(f.text(), text);
    assert_eq!(fs::read_to_string(&count).unwrap().lines().count(), 1);
    // A real change writes and reloads.
    w.apply(&www_change(&["127.0.0.2"], &["127.0.0.3"], &[]))
        .await
        .unwrap();
    assert_eq!(fs::read_to_string(&count).unwrap().lines().count(), 2);
    assert_eq!(addresses_of(&f, FQDN), set(&["127.0.0.2", "127.0.0.3"]));
}

/// named-checkzone refusing the new file (an NS without an address) is an operator error quoting it;
/// the old file stays byte for byte, no temporary file is left, Knot keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_command_failure_is_rejected_and_leaves_the_old_file() {
    let f = ZoneFixture::start();
    f.writer()
        .apply(&www_change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap();
    let text = f.text();
    let serial = f.served_serial();
    // Same file, but the operator added a second name server that has no address.
    let dir = f.knot.dir();
    let toml = format!(
        "[[writer]]\nname = \"edge\"\ntype = \"zonefile\"\npath = \"{}\"\nzone = \"example.test\"\nns = [\"ns1.example.test\", \"ns2.example.test\"]\ndefault_ttl = 60\ninclude = \"static.zone\"\n{}\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"edge\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n",
        f.path.display(),
        f.commands()
    );
    let config = rrguard::config::parse(&dir.join("rrguard.toml"), &toml).unwrap();
    let w = rrguard::act::build(&config.writers[0], &Resources::default()).unwrap();
    let err = w
        .apply(&www_change(&["127.0.0.2"], &["127.0.0.3"], &[]))
        .await
        .unwrap_err();
    match &err {
        WriteError::Rejected(m) => {
            assert!(m.contains("check_command refused the new zone file"), "{m}");
            assert!(
                m.contains("ns2.example.test") && m.contains("has no address records"),
                "{m}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(f.text(), text);
    assert_eq!(f.served_serial(), serial);
    assert_eq!(addresses_of(&f, FQDN), set(&["127.0.0.2"]));
    let leftovers: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("rrguard-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A reload that fails is transient; the previous file is put back so that the retry writes and
/// reloads again, with a serial above the one of the failed attempt (which the server may have seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_failure_is_transient_and_the_retry_reloads() {
    let f = ZoneFixture::start();
    let resources = Resources::default();
    let date = "serial = \"date\"\n";
    let good = f.writer_with(&format!("{date}{}", f.commands()), &resources);
    good.apply(&www_change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap();
    let before = f.text();
    let served = f.served_serial();
    // The same path and resources, with a reload that cannot reach Knot; the check command keeps a
    // copy of what the failed attempt wrote.
    let attempt = f.knot.dir().join("attempt.zone");
    let extra = format!(
        "{date}check_command = [\"cp\", \"{{path}}\", \"{}\"]\n{}",
        attempt.display(),
        f.reload_with(&f.knot.dir().join("run/absent.sock"))
    );
    let failing = f.writer_with(&extra, &resources);
    let change = www_change(&["127.0.0.2"], &["127.0.0.3"], &[]);
    match failing.apply(&change).await {
        Err(WriteError::Transient(m)) => {
            assert!(
                m.contains("reload_command") && m.contains("previous file is back"),
                "{m}"
            )
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    assert_eq!(f.text(), before, "the previous file is back");
    let attempted = serial_in(&fs::read_to_string(&attempt).unwrap());
    assert!(attempted > served);
    // The retry (the service core re-reads: the file shows the old set, so it plans the change again).
    assert_eq!(
        good.read(FQDN, ZONE).await.unwrap().addresses(),
        set(&["127.0.0.2"])
    );
    good.apply(&change).await.unwrap();
    assert!(
        f.file_serial() > attempted,
        "{} > {attempted}",
        f.file_serial()
    );
    assert_eq!(addresses_of(&f, FQDN), set(&["127.0.0.2", "127.0.0.3"]));
}

/// A reload command that hangs is killed at the timeout; the write is transient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_timeout_kills_the_command_and_is_transient() {
    let f = ZoneFixture::start();
    let w = f.writer_with(
        "reload_command = [\"sleep\", \"60\"]\ntimeout = \"300ms\"\n",
        &Resources::default(),
    );
    let before = f.text();
    let started = tokio::time::Instant::now();
    match w.apply(&www_change(&[], &["127.0.0.2"], &[])).await {
        Err(WriteError::Transient(m)) => assert!(m.contains("was killed"), "{m}"),
        other => panic!("expected Transient, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(f.text(), before);
}

/// A file edited while the check command runs (after the writer read it) is not overwritten: the
/// write is a conflict, the edit stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_between_read_and_rename_is_a_conflict() {
    let f = ZoneFixture::start();
    f.writer()
        .apply(&www_change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap();
    let extra = format!(
        "check_command = [\"sh\", \"-c\", \"echo '; edited by someone' >> {}\"]\n",
        f.path.display()
    );
    let w = f.writer_with(&extra, &Resources::default());
    let err = w
        .apply(&www_change(&["127.0.0.2"], &["127.0.0.3"], &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Conflict(_)), "{err:?}");
    assert!(f.text().ends_with("; edited by someone\n"));
    assert_eq!(
        w.read(FQDN, ZONE).await.unwrap().addresses(),
        set(&["127.0.0.2"])
    );
}

/// While the writer replaces the file again and again, a reader never sees a partial file: every
/// read is a whole zone with one of the written serials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_partial_file() {
    let f = ZoneFixture::start();
    // Large enough that a non-atomic write would be observed half done.
    let many: Vec<String> = (1..=250)
        .map(|i| format!("127.0.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let w = f.writer_with("", &Resources::default());
    w.apply(&www_change(&[], &many, &[])).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (path, stop) = (f.path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            let mut serials = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let text = fs::read_to_string(&path).unwrap();
                assert!(
                    text.starts_with("; Zone example.test.") && text.ends_with("; END rrguard\n"),
                    "partial file after {reads} reads:\n{text}"
                );
                serials.insert(serial_in(&text));
                reads += 1;
            }
            (reads, serials)
        })
    };
    let extras: Vec<String> = (1..=40).map(|i| format!("127.1.0.{i}")).collect();
    let mut have: BTreeSet<&str> = many.iter().copied().collect();
    for (ip, extra) in many.iter().zip(&extras) {
        let expected: Vec<&str> = have.iter().copied().collect();
        let change = www_change(&expected, &[extra.as_str()], &[ip]);
        w.apply(&change).await.unwrap();
        have.remove(ip);
        have.insert(extra);
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, serials) = reader.join().unwrap();
    assert!(reads > 40, "the reader ran alongside ({reads} reads)");
    assert!(serials.len() > 1, "it saw several versions");
    let leftovers = fs::read_dir(f.knot.dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("rrguard-tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
    assert_eq!(named_checkzone(&f.path), Ok(()));
}

/// Two writers of one file — this process's and, through another set of resources, one that only
/// the flock keeps out, like a second rrguard — write different names at the same time; no write is
/// lost and Knot serves them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_services_and_writers_share_one_file() {
    let f = ZoneFixture::start();
    let shared = Resources::default();
    let writers = [
        f.writer_with("", &shared),
        f.writer_with("", &shared),
        f.writer_with("", &Resources::default()),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, w) in writers.iter().enumerate() {
        for n in 0..8 {
            let w = w.clone();
            tasks.spawn(async move {
                let fqdn = format!("s{i}-{n}.example.test.");
                let change = RecordChange {
                    fqdn,
                    precondition: Precondition::RrsetEquals(BTreeSet::new()),
                    ..www_change(&[], &[&format!("127.0.{i}.{}", n + 1)], &[])
                };
                w.apply(&change).await
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    f.reload();
    for i in 0..3 {
        for n in 0..8 {
            let name = format!("s{i}-{n}.example.test.");
            assert_eq!(
                addresses_of(&f, &name),
                set(&[&format!("127.0.{i}.{}", n + 1)]),
                "{name}"
            );
        }
    }
}

/// A missing file is created (no reload: no server serves it yet), a missing directory is an
/// operator error, and the file loads in BIND as well as in Knot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_is_created_and_loads_in_bind() {
    let f = ZoneFixture::start();
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("example.test.zone");
    let w = f.writer_of(&fresh, "", &Resources::default());
    assert_eq!(w.read(FQDN, ZONE).await.unwrap(), Published::default());
    w.apply(&www_change(&[], &["127.0.0.2", "::1"], &[]))
        .await
        .unwrap();
    assert_eq!(named_checkzone(&fresh), Ok(()));
    let text = fs::read_to_string(&fresh).unwrap();
    assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o644);
    let bind = CustomDns::start(
        DnsKind::Bind,
        &[("example.test.zone", text)],
        None,
        ZONE,
        &|site| {
            let d = site.dir.display();
            format!(
                "options {{ directory \"{d}\"; pid-file \"{d}/run/named.pid\"; session-keyfile none; listen-on port {} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no; dnssec-validation no; notify no; }};\ncontrols {{ }};\nzone \"example.test\" {{ type primary; file \"{d}/example.test.zone\"; }};\n",
                site.port
            )
        },
    );
    assert_eq!(bind.query(FQDN, "A"), vec!["127.0.0.2"]);
    assert_eq!(bind.query(FQDN, "AAAA"), vec!["::1"]);
    assert_eq!(bind.query("ns1.example.test.", "A"), vec!["127.0.0.1"]);
    // A directory that disappears after check-config accepted it.
    let gone = dir.path().join("gone");
    fs::create_dir(&gone).unwrap();
    let lost = f.writer_of(&gone.join("z.zone"), "", &Resources::default());
    fs::remove_dir(&gone).unwrap();
    let err = lost
        .apply(&www_change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("create the directory"), "{err}");
}

/// The steps of a write as the kernel sees them (strace of a child running one write): the temporary
/// file is fsynced before the rename, and the directory is opened and fsynced after it.
#[test]
fn the_rename_is_preceded_by_a_file_fsync_and_followed_by_a_directory_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let out = Command::new(program("strace"))
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,fsync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "strace_child_one_write",
            "--ignored",
            "--test-threads=1",
        ])
        .env("RRGUARD_STRACE_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let zone = dir.path().join("example.test.zone");
    let dir_text = format!("\"{}\"", dir.path().display());
    let trace = fs::read_to_string(&trace).unwrap();
    let mut fds = std::collections::HashMap::new();
    let mut steps = Vec::new();
    for line in trace.lines() {
        let call = line.split_once(' ').map_or(line, |(_, c)| c).trim_start();
        let result = call
            .rsplit_once(" = ")
            .map(|(_, r)| r.split_whitespace().next().unwrap_or(""));
        if call.starts_with("openat(") {
            let path = call.split('"').nth(1).unwrap_or_default().to_owned();
            if let Some(fd) = result.and_then(|r| r.parse::<i32>().ok()) {
                fds.insert(fd, path);
            }
        } else if let Some(rest) = call.strip_prefix("fsync(") {
            let fd: i32 = rest.split(')').next().unwrap().parse().unwrap();
            steps.push(format!(
                "fsync {}",
                fds.get(&fd).cloned().unwrap_or_default()
            ));
        } else if call.starts_with("rename") && call.contains(&format!("{}\"", zone.display())) {
            steps.push(format!(
                "rename {}",
                call.split('"').nth(1).unwrap_or_default()
            ));
        }
    }
    let rename = steps
        .iter()
        .position(|s| s.starts_with("rename"))
        .unwrap_or_else(|| panic!("no rename: {steps:?}\n{trace}"));
    let temp = steps[rename].trim_start_matches("rename ").to_owned();
    assert!(temp.contains("rrguard-tmp"), "{temp}");
    assert!(
        steps[..rename].contains(&format!("fsync {temp}")),
        "{steps:?}"
    );
    let dir_path = dir_text.trim_matches('"');
    assert!(
        steps[rename..].contains(&format!("fsync {dir_path}")),
        "{steps:?}"
    );
}

/// Run by the test above under strace: one write to a fresh zone file in `RRGUARD_STRACE_DIR`.
#[test]
#[ignore = "run by the_rename_is_preceded_by_a_file_fsync_and_followed_by_a_directory_fsync"]
fn strace_child_one_write() {
    let dir = PathBuf::from(std::env::var("RRGUARD_STRACE_DIR").expect("RRGUARD_STRACE_DIR"));
    let text = String::from(
        "[[writer]]\nname = \"edge\"\ntype = \"zonefile\"\npath = \"example.test.zone\"\nzone = \"example.test\"\nns = [\"ns1.example.test\"]\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"edge\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n",
    );
    let config = rrguard::config::parse(&dir.join("rrguard.toml"), &text).unwrap();
    let w = rrguard::act::build(&config.writers[0], &Resources::default()).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(w.apply(&www_change(&[], &["127.0.0.2"], &[])))
        .unwrap();
}

/// `knotc -b zone-reload` returns once Knot has loaded the file: the very next query shows the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_reloads_a_running_knot() {
    let f = ZoneFixture::start();
    for (expected, add) in [(&[][..], "127.0.0.2"), (&["127.0.0.2"][..], "127.0.0.3")] {
        f.writer()
            .apply(&www_change(expected, &[add], &[]))
            .await
            .unwrap();
        // No waiting: the reload is done when the write returns.
        assert_eq!(f.served_serial(), f.file_serial());
        assert!(f.knot.query(FQDN, "A").contains(&add.to_owned()));
    }
    assert!(f.knot.log().contains("received command 'zone-reload'"));
}

/// The same with BIND and `rndc reload`, over a control channel with its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_reloads_a_running_bind_with_rndc() {
    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=";
    let control = support::free_tcp_port("127.0.0.1".parse().unwrap());
    let key = format!("key \"rndc-key\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n");
    let bind = CustomDns::start(
        DnsKind::Bind,
        &[
            (
                "example.test.zone",
                zone_text("example.test", "ns1 A 127.0.0.1"),
            ),
            ("static.zone", STATIC.to_owned()),
            ("rndc.key", key.clone()),
        ],
        None,
        ZONE,
        &|site| {
            let d = site.dir.display();
            format!(
                "{key}controls {{ inet 127.0.0.1 port {control} allow {{ 127.0.0.1; }} keys {{ \"rndc-key\"; }}; }};\noptions {{ directory \"{d}\"; pid-file \"{d}/run/named.pid\"; session-keyfile none; listen-on port {} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no; dnssec-validation no; notify no; }};\nzone \"example.test\" {{ type primary; file \"{d}/example.test.zone\"; }};\n",
                site.port
            )
        },
    );
    let path = bind.dir().join("example.test.zone");
    let extra = format!(
        "check_command = [\"{}\", \"{{zone}}\", \"{{path}}\"]\nreload_command = [\"{}\", \"-k\", \"{}\", \"-s\", \"127.0.0.1\", \"-p\", \"{control}\", \"reload\", \"{{zone}}\"]\n",
        program("named-checkzone"),
        program("rndc"),
        bind.dir().join("rndc.key").display()
    );
    let w = build_writer(bind.dir(), &path, &extra, &Resources::default());
    w.apply(&www_change(&[], &["127.0.0.2", "::2"], &[]))
        .await
        .unwrap();
    let serial = serial_in(&fs::read_to_string(&path).unwrap());
    // rndc queues the reload: BIND serves the new file moments later.
    support::wait_until("BIND serves the new serial", Duration::from_secs(5), || {
        let soa = bind.query(ZONE, "SOA");
        soa[0].split_whitespace().nth(2) == Some(&serial.to_string())
    });
    assert_eq!(bind.query(FQDN, "A"), vec!["127.0.0.2"]);
    assert_eq!(bind.query(FQDN, "AAAA"), vec!["::2"]);
    // A key BIND does not know: rndc fails, the write is transient and the file put back.
    fs::write(
        bind.dir().join("wrong.key"),
        key.replace(secret, "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3I="),
    )
    .unwrap();
    let wrong = build_writer(
        bind.dir(),
        &path,
        &extra.replace("rndc.key", "wrong.key"),
        &Resources::default(),
    );
    let before = fs::read_to_string(&path).unwrap();
    let err = wrong
        .apply(&www_change(&["127.0.0.2"], &["127.0.0.3"], &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Transient(_)), "{err:?}");
    assert_eq!(fs::read_to_string(&path).unwrap(), before);
}
