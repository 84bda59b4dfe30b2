//! The writer battery (`tests/support/battery.rs`) over `hosts`, with the file as the authority:
//! out-of-band changes edit the section's lines as an operator would, authoritative reads parse the
//! file here, independently of the writer. One row checks that glibc itself resolves the names from a
//! file rrguard wrote (bind-mounted over /etc/hosts in a private mount namespace).
//!
//! The battery's CNAME check does not apply: a hosts file cannot hold a CNAME, so its fixture cannot
//! `set` one and its reads never show one. `writer_battery!` runs every check, so the checks are listed
//! here without that one (see [`cname_cannot_be_expressed_and_is_never_read`] for what hosts does).
//!
//! Below the battery, rows for what only a hosts file has: bytes outside the section, the prefix file,
//! the backup, broken markers, a missing file or directory, a name defined outside the section.

#[macro_use]
mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rrguard::act::{Published, RecordChange, Resources, WriteError, Writer};
use support::battery::*;

/// Content outside rrguard's section, kept byte for byte: CRLF, a tab, a byte that is not UTF-8, a
/// last line without a line break.
const OUTSIDE: &[u8] = b"127.0.0.1\tlocalhost\n::1     localhost ip6-localhost\r\n# caf\xe9 \n\n10.1.2.3 db.internal # primary";

/// The section's managed lines, parsed here without the writer: `ADDR NAME… # ttl=N` between the
/// markers.
fn section_records(text: &[u8], name: &str) -> Published {
    let text = String::from_utf8_lossy(text);
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let mut out = Published::default();
    let mut inside = false;
    for line in text.lines() {
        match line.trim_end() {
            "# BEGIN rrguard" => inside = true,
            "# END rrguard" => inside = false,
            l if inside => {
                let Some((data, comment)) = l.split_once('#') else {
                    continue;
                };
                let Some(ttl) = comment
                    .trim()
                    .strip_prefix("ttl=")
                    .and_then(|t| t.parse().ok())
                else {
                    continue;
                };
                let mut f = data.split_whitespace();
                let ip = f.next().unwrap().parse().unwrap();
                if f.any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(&name)) {
                    out.records.insert(ip, ttl);
                }
            }
            _ => {}
        }
    }
    out
}

/// A `hosts` writer over a file in a temporary directory.
struct HostsFixture {
    dir: tempfile::TempDir,
    path: PathBuf,
    writer: Arc<dyn Writer>,
    /// What `failing` set up (a held lock, an immutable directory), released on drop.
    held: Mutex<Vec<Box<dyn Send>>>,
}

impl HostsFixture {
    fn start() -> HostsFixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        fs::write(&path, OUTSIDE).unwrap();
        let writer = build(dir.path(), &path, "", &Resources::default());
        HostsFixture {
            dir,
            path,
            writer,
            held: Mutex::default(),
        }
    }

    fn boxed() -> Box<dyn Fixture> {
        Box::new(HostsFixture::start())
    }

    fn bytes(&self) -> Vec<u8> {
        fs::read(&self.path).unwrap()
    }
}

/// A `hosts` writer of `path`, configured in TOML with `extra` lines, built like the daemon builds it.
fn build(dir: &Path, path: &Path, extra: &str, resources: &Resources) -> Arc<dyn Writer> {
    let text = format!(
        "[[writer]]\nname = \"local\"\ntype = \"hosts\"\npath = \"{}\"\n{extra}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"local\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n",
        path.display()
    );
    let config = rrguard::config::parse(&dir.join("rrguard.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    rrguard::act::build(&config.writers[0], resources).unwrap()
}

impl Fixture for HostsFixture {
    fn writer(&self) -> &dyn Writer {
        &*self.writer
    }

    /// Rewrites the name's lines of the section (appending a section if there is none), in place,
    /// as an operator with an editor would. A hosts file has no CNAME: asking for one is a bug in the
    /// check that asks.
    fn set(&self, fqdn: &str, published: &Published) {
        assert!(
            published.cname.is_none(),
            "a hosts file cannot hold a CNAME"
        );
        let name = fqdn.trim_end_matches('.').to_ascii_lowercase();
        let bytes = self.bytes();
        let find = |marker: &[u8]| {
            let mut at = 0;
            bytes.split_inclusive(|b| *b == b'\n').find_map(|line| {
                let start = at;
                at += line.len();
                (line.trim_ascii_end() == marker).then_some((start, at))
            })
        };
        let (head, body, tail) = match (find(b"# BEGIN rrguard"), find(b"# END rrguard")) {
            (Some((_, body)), Some((end, _))) => (
                bytes[..body].to_vec(),
                String::from_utf8_lossy(&bytes[body..end]).into_owned(),
                bytes[end..].to_vec(),
            ),
            _ => {
                let mut head = bytes.clone();
                if !head.is_empty() && !head.ends_with(b"\n") {
                    head.push(b'\n');
                }
                head.extend_from_slice(b"# BEGIN rrguard\n");
                (head, String::new(), b"# END rrguard\n".to_vec())
            }
        };
        let mine = |l: &str| {
            l.contains("# ttl=")
                && l.split('#')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .skip(1)
                    .any(|n| n == name)
        };
        let mut lines: Vec<String> = body
            .lines()
            .filter(|l| !mine(l))
            .map(str::to_owned)
            .collect();
        lines.extend(
            published
                .records
                .iter()
                .map(|(ip, ttl)| format!("{ip}  {name}  # ttl={ttl}")),
        );
        let mut out = head;
        for line in lines {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(&tail);
        fs::write(&self.path, out).unwrap();
    }

    fn authoritative(&self, fqdn: &str) -> Published {
        section_records(&self.bytes(), fqdn)
    }

    fn failing(&self, failure: Failure) -> Result<Box<dyn Writer>, &'static str> {
        match failure {
            // A hosts file has no server; its transient failure is another writer holding the file
            // (another process's flock on PATH.lock) for longer than the writer waits.
            Failure::ServerError => {
                let holder = Holder::new(&self.dir.path().join("hosts.lock"));
                self.held.lock().unwrap().push(Box::new(holder));
                Ok(Box::new(build(
                    self.dir.path(),
                    &self.path,
                    "timeout = \"200ms\"",
                    &Resources::default(),
                )))
            }
            // Tests run as root, whom file modes do not stop; an immutable directory (chattr +i)
            // refuses even root with EPERM. A copy of the hosts file lives there.
            Failure::BadCredentials => {
                let guard = Immutable::new(&self.path).ok_or(
                    "chattr +i is not supported on this file system (needs ext4/xfs/btrfs and CAP_LINUX_IMMUTABLE); root is never denied by file modes",
                )?;
                let w = build(self.dir.path(), &guard.file(), "", &Resources::default());
                self.held.lock().unwrap().push(Box::new(guard));
                Ok(Box::new(w))
            }
        }
    }
}

/// Another process holding `flock` on a file (the `flock` tool running `sleep`), killed on drop.
struct Holder(std::process::Child);

impl Holder {
    fn new(lock: &Path) -> Holder {
        // --no-fork: flock execs sleep itself, so killing the child ends the holder (a forked sleep
        // would outlive it); no stdout/stderr, so nothing keeps the test's output pipe open.
        let child = Command::new("flock")
            .arg("--no-fork")
            .arg(lock)
            .args(["sleep", "600"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("flock(1) from util-linux");
        // Wait until it holds the lock.
        support::wait_until("flock holds the lock", Duration::from_secs(5), || {
            !Command::new("flock")
                .arg("--nonblock")
                .arg(lock)
                .arg("true")
                .status()
                .unwrap()
                .success()
        });
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// Every check of `writer_battery!` but `cname_is_read_and_blocks_addresses` (see the module
// documentation).
mod hosts {
    #[allow(unused_imports)]
    use super::*;
    fn fixture() -> Box<dyn Fixture> {
        HostsFixture::boxed()
    }
    battery_checks!(
        reads_records_with_ttls,
        adds_and_removes_under_rrset_equals,
        replaces_the_whole_set,
        stale_precondition_is_refused_whole,
        add_to_a_family_believed_empty_conflicts,
        rettl_rewrites_the_whole_rrset,
        name_not_in_use_allocates_once,
        capabilities_are_honoured,
        server_error_is_transient,
        bad_credentials_need_an_operator,
        concurrent_change_converges,
    );
}

// ---- Rows only a hosts file has. ----

/// A hosts file has no CNAME: reads never report one, and addresses are written as asked.
#[tokio::test]
async fn cname_cannot_be_expressed_and_is_never_read() {
    let f = HostsFixture::start();
    // What a CNAME-like alias looks like in a hosts file (an alias on another name's line) is not a
    // managed record: rrguard neither reads it as a CNAME nor as addresses of the name.
    fs::write(
        &f.path,
        [OUTSIDE, b"\n192.0.2.7 lb.example.test www.example.test\n"].concat(),
    )
    .unwrap();
    assert_eq!(
        f.writer().read(FQDN, ZONE).await.unwrap(),
        Published::default()
    );
    // Writing the name refuses: the alias line would answer first.
    let err = f
        .writer()
        .apply(&change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Rejected(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("hosts:6: www.example.test is defined here"),
        "{err}"
    );
}

/// Several writes, then the bytes before and after the section are exactly the original ones.
#[tokio::test]
async fn content_outside_the_section_is_byte_identical() {
    let f = HostsFixture::start();
    let w = f.writer();
    w.apply(&change(&[], &["127.0.0.2", "::2"], &[]))
        .await
        .unwrap();
    let first = f.bytes();
    // The original file lacked a final line break: the section starts on a line of its own.
    assert!(first.starts_with(&[OUTSIDE, b"\n# BEGIN rrguard\n"].concat()));
    // Content after the section (an operator appended it) stays too.
    let tail = b"\n# added later\n10.9.9.9 later.internal\n";
    fs::write(&f.path, [&first[..], tail].concat()).unwrap();
    w.apply(&change(
        &["127.0.0.2", "::2"],
        &["127.0.0.3"],
        &["127.0.0.2"],
    ))
    .await
    .unwrap();
    w.apply(&change(&["127.0.0.3", "::2"], &[], &["::2"]))
        .await
        .unwrap();
    let now = f.bytes();
    assert!(now.starts_with(&[OUTSIDE, b"\n# BEGIN rrguard\n"].concat()));
    assert!(now.ends_with(&[&b"# END rrguard\n"[..], tail].concat()));
    assert_eq!(section_records(&now, FQDN), published(&[("127.0.0.3", 30)]));
}

/// The prefix file's content comes first in the section, and an edit of it shows on the next write;
/// a name it defines cannot be managed.
#[tokio::test]
async fn the_prefix_file_comes_first() {
    let f = HostsFixture::start();
    let prefix = f.dir.path().join("legacy.hosts");
    fs::write(&prefix, "10.0.0.1 legacy-a\n10.0.0.2 legacy-b").unwrap();
    let w = build(
        f.dir.path(),
        &f.path,
        "prefix_file = \"legacy.hosts\"",
        &Resources::default(),
    );
    w.apply(&change(&[], &["127.0.0.2"], &[])).await.unwrap();
    let text = String::from_utf8_lossy(&f.bytes()).into_owned();
    let section = &text[text.find("# BEGIN rrguard").unwrap()..];
    let lines: Vec<&str> = section.lines().collect();
    assert_eq!(
        &lines[2..6],
        [
            "10.0.0.1 legacy-a",
            "10.0.0.2 legacy-b",
            "127.0.0.2\twww.example.test\t# ttl=30",
            "# END rrguard"
        ],
        "{section}"
    );
    fs::write(&prefix, "10.0.0.3 legacy-c\n").unwrap();
    w.apply(&change(&["127.0.0.2"], &["127.0.0.3"], &[]))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&f.bytes()).into_owned();
    assert!(text.contains("# ttl=N\" are its records; the rest of this section is rewritten.\n10.0.0.3 legacy-c\n127.0.0.2\t"), "{text}");
    assert!(!text.contains("legacy-a"));
    // The prefix defining a managed name: refused, naming the prefix file's line; the file stays.
    let before = f.bytes();
    fs::write(&prefix, "10.0.0.3 legacy-c\n10.0.0.4 www.example.test\n").unwrap();
    let err = w
        .apply(&change(&["127.0.0.2", "127.0.0.3"], &[], &["127.0.0.3"]))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Rejected(_)), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "{}:2: www.example.test is defined here",
            prefix.display()
        )),
        "{err}"
    );
    assert_eq!(f.bytes(), before);
}

/// `PATH.bak` holds the content before the last change; with `backup = false` there is none.
#[tokio::test]
async fn backup_holds_the_previous_content() {
    let f = HostsFixture::start();
    f.writer()
        .apply(&change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap();
    let bak = f.dir.path().join("hosts.bak");
    assert_eq!(fs::read(&bak).unwrap(), OUTSIDE);
    let before = f.bytes();
    f.writer()
        .apply(&change(&["127.0.0.2"], &["127.0.0.3"], &[]))
        .await
        .unwrap();
    assert_eq!(fs::read(&bak).unwrap(), before);
    // No change, no write: neither the file nor the backup moves.
    let (file_m, bak_m) = (fs::metadata(&f.path).unwrap(), fs::metadata(&bak).unwrap());
    f.writer()
        .apply(&change(&["127.0.0.2", "127.0.0.3"], &["127.0.0.3"], &[]))
        .await
        .unwrap();
    assert_eq!(
        fs::metadata(&f.path).unwrap().mtime_nsec(),
        file_m.mtime_nsec()
    );
    assert_eq!(fs::metadata(&f.path).unwrap().ino(), file_m.ino());
    assert_eq!(fs::metadata(&bak).unwrap().ino(), bak_m.ino());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hosts");
    fs::write(&path, "127.0.0.1 localhost\n").unwrap();
    let w = build(dir.path(), &path, "backup = false", &Resources::default());
    w.apply(&change(&[], &["127.0.0.2"], &[])).await.unwrap();
    assert!(!dir.path().join("hosts.bak").exists());
}

/// A BEGIN without END: reads and writes refuse naming the file and line; the file stays.
#[tokio::test]
async fn begin_without_end_is_rejected_with_file_and_line() {
    let f = HostsFixture::start();
    let broken = [
        OUTSIDE,
        b"\n# BEGIN rrguard\n127.0.0.2\twww.example.test\t# ttl=30\n",
    ]
    .concat();
    fs::write(&f.path, &broken).unwrap();
    let want = format!(
        "{}:6: `# BEGIN rrguard` has no `# END rrguard` line below it",
        f.path.display()
    );
    for err in [
        f.writer().read(FQDN, ZONE).await.unwrap_err(),
        f.writer()
            .apply(&change(&["127.0.0.2"], &["127.0.0.3"], &[]))
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, WriteError::Rejected(_)), "{err:?}");
        assert!(err.to_string().starts_with(&want), "{err}");
    }
    assert_eq!(f.bytes(), broken);
}

/// A missing hosts file is created holding only the section; a missing directory is refused.
#[tokio::test]
async fn a_missing_file_is_created_and_a_missing_directory_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hosts");
    let w = build(dir.path(), &path, "", &Resources::default());
    assert_eq!(w.read(FQDN, ZONE).await.unwrap(), Published::default());
    w.apply(&change(&[], &["127.0.0.2"], &[])).await.unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("# BEGIN rrguard\n") && text.ends_with("# END rrguard\n"),
        "{text}"
    );
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
    assert!(!dir.path().join("hosts.bak").exists(), "nothing to back up");
    let gone = dir.path().join("gone");
    fs::create_dir(&gone).unwrap();
    let w = build(dir.path(), &gone.join("hosts"), "", &Resources::default());
    fs::remove_dir(&gone).unwrap();
    let err = w
        .apply(&change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Rejected(_)), "{err:?}");
    // check-config says it first.
    let text = format!(
        "[[writer]]\nname = \"local\"\ntype = \"hosts\"\npath = \"{}\"\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"local\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n",
        gone.join("hosts").display()
    );
    let err = rrguard::config::parse(&dir.path().join("rrguard.toml"), &text).unwrap_err();
    assert!(
        err.to_string()
            .contains("gone does not exist; create it or fix the path"),
        "{err}"
    );
}

/// A name that the file defines outside rrguard's records is refused, naming that line.
#[tokio::test]
async fn a_name_defined_outside_the_section_is_refused() {
    let f = HostsFixture::start();
    fs::write(
        &f.path,
        [&b"10.0.0.9 www.example.test\n"[..], OUTSIDE].concat(),
    )
    .unwrap();
    let err = f
        .writer()
        .apply(&change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "{}:1: www.example.test is defined here",
            f.path.display()
        )),
        "{err}"
    );
}

/// glibc resolves what rrguard wrote: the file bind-mounted over /etc/hosts in a private mount
/// namespace, `getent ahosts` answers the managed addresses.
#[tokio::test]
async fn glibc_resolves_the_names_from_the_file() {
    let f = HostsFixture::start();
    f.writer()
        .apply(&change(&[], &["127.0.0.2", "127.0.0.3", "::2"], &[]))
        .await
        .unwrap();
    let script = format!(
        "mount --bind {} /etc/hosts && getent ahosts www.example.test",
        f.path.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "unshare/getent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addresses: std::collections::BTreeSet<std::net::IpAddr> =
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
    assert_eq!(addresses, set(&["127.0.0.2", "127.0.0.3", "::2"]));
}

/// Writers of one file in this process and, through other resources, ones only the flock keeps out,
/// write different names at once: no write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_nothing() {
    let f = HostsFixture::start();
    let shared = Resources::default();
    let writers = [
        build(f.dir.path(), &f.path, "", &shared),
        build(f.dir.path(), &f.path, "", &shared),
        build(f.dir.path(), &f.path, "", &Resources::default()),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, w) in writers.iter().enumerate() {
        for n in 0..10 {
            let w = w.clone();
            tasks.spawn(async move {
                let c = RecordChange {
                    fqdn: format!("s{i}-{n}.example.test."),
                    ..change(&[], &[&format!("127.0.{i}.{}", n + 1)], &[])
                };
                w.apply(&c).await
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let bytes = f.bytes();
    for i in 0..3 {
        for n in 0..10 {
            let name = format!("s{i}-{n}.example.test.");
            assert_eq!(
                section_records(&bytes, &name).addresses(),
                set(&[&format!("127.0.{i}.{}", n + 1)]),
                "{name}"
            );
        }
    }
}
