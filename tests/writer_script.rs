//! The writer battery (`tests/support/battery.rs`) over the `script` writer with real scripts in
//! Python 3 that keep the zone in a JSON file, which the fixture reads and writes directly:
//! - `script_cas`: a test script that enforces the precondition per touched RRset (as RFC 2136
//!   servers do), declared with `compare_and_swap = true`;
//! - `script_plain`: the same script ignoring preconditions, declared without compare-and-swap;
//! - `script_example`: the shipped `etc/examples/rrguard-script-example.py` (compare-and-swap under
//!   a file lock, writes the request's `desired` set).
//!
//! Below the battery, rows for what only a process has: timeouts that kill the process group, a
//! cancelled operation, bounded output, replies that are not JSON, the exact stdin document, the
//! environment and working directory, exit codes and signals, a missing program.

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rrguard::act::script::{ScriptConfig, ScriptWriter};
use rrguard::act::{Precondition, Published, RecordChange, WriteError, Writer};
use support::battery::*;
use tokio::time::Instant;

/// The test's zone script: reads and applies with the semantics of an RFC 2136 primary (an RRset
/// that gains or re-TTLs a record takes the change's TTL; an address beside a CNAME is dropped);
/// checks the precondition per touched RRset only with `ZONE_CAS=1`; exits `FAIL_WITH` at once when
/// set, after two lines on stderr.
const ZONE_SCRIPT: &str = r#"#!/usr/bin/env python3
import fcntl, ipaddress, json, os, sys

request = json.load(sys.stdin)
if os.environ.get("FAIL_WITH"):
    print("simulated back-end failure", file=sys.stderr)
    print("second line of stderr", file=sys.stderr)
    sys.exit(int(os.environ["FAIL_WITH"]))
path = os.environ["ZONE_FILE"]
cas = os.environ.get("ZONE_CAS") == "1"

def family(address):
    return ipaddress.ip_address(address).version

with open(path + ".lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with open(path) as f:
            zone = json.load(f)
    except FileNotFoundError:
        zone = {}
    fqdn = request["fqdn"]
    entry = zone.get(fqdn, {"records": [], "cname": None})
    if request["operation"] == "read":
        json.dump({"records": entry["records"], "cname": entry["cname"]}, sys.stdout)
        sys.exit(0)
    records = {r["address"]: r["ttl"] for r in entry["records"]}
    touched = {family(a) for a in request["add"] + request["remove"] + request["rettl"]}
    pre = request["precondition"]
    if cas and "rrset_equals" in pre:
        for v in touched:
            now = {a for a in records if family(a) == v}
            expected = {a for a in pre["rrset_equals"] if family(a) == v}
            if now != expected:
                print(f"IPv{v} RRset is {sorted(now)}, not {sorted(expected)}", file=sys.stderr)
                sys.exit(4)
    if cas and pre.get("name_not_in_use") and (records or entry["cname"]):
        print("name in use", file=sys.stderr)
        sys.exit(4)
    add = [] if entry["cname"] else request["add"]
    ttl = request["ttl"]
    for a in request["remove"]:
        records.pop(a, None)
    rewritten = add + [a for a in request["rettl"] if a in records]
    for a in rewritten:
        records[a] = ttl
    grown = {family(a) for a in rewritten}
    for a in records:
        if family(a) in grown:
            records[a] = ttl
    entry = {"records": [{"address": a, "ttl": t} for a, t in records.items()], "cname": entry["cname"]}
    if entry["records"] or entry["cname"]:
        zone[fqdn] = entry
    else:
        zone.pop(fqdn, None)
    with open(path + ".tmp", "w") as f:
        json.dump(zone, f)
    os.replace(path + ".tmp", path)
"#;

/// A config directory with `rrguard.toml` naming one `script` writer.
struct ScriptDir {
    dir: tempfile::TempDir,
}

impl ScriptDir {
    fn new() -> Self {
        ScriptDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes an executable file `name` in the directory. The executable itself is written by a
    /// `cp` child: had this process opened it for writing, a process forked meanwhile by another
    /// test thread could hold that descriptor until its exec, and running the script would fail
    /// with ETXTBSY ("Text file busy").
    fn script(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        let source = self.path().join(format!("{name}.source"));
        std::fs::write(&source, text).unwrap();
        let cp = std::process::Command::new("cp")
            .arg(&source)
            .arg(&path)
            .status()
            .unwrap();
        assert!(cp.success(), "cp {}", path.display());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// The writer `name` that `options` (TOML lines of its `[[writer]]` section) describe, built
    /// through the configuration as the daemon builds it.
    fn writer(&self, name: &str, options: &str) -> Arc<dyn Writer> {
        let text = format!(
            "[[writer]]\nname = \"{name}\"\ntype = \"script\"\n{options}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"{name}\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n"
        );
        let config = rrguard::config::parse(&self.path().join("rrguard.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        rrguard::act::build(&config.writers[0], &Default::default()).unwrap()
    }
}

/// The battery's fixture: a writer running `command`, with the zone in `zone.json`.
struct ScriptFixture {
    dir: ScriptDir,
    command: String,
    options: String,
    writer: Arc<dyn Writer>,
}

impl ScriptFixture {
    /// The test's zone script, enforcing preconditions and declaring it when `cas`.
    fn zone_script(cas: bool) -> Box<dyn Fixture> {
        let dir = ScriptDir::new();
        dir.script("zone.py", ZONE_SCRIPT);
        let options = format!("compare_and_swap = {cas}");
        let env = format!(
            "ZONE_FILE = \"zone.json\", ZONE_CAS = \"{}\"",
            u8::from(cas)
        );
        Self::boxed(dir, "\"./zone.py\"", &env, &options)
    }

    /// The shipped example script, by its absolute path.
    fn example() -> Box<dyn Fixture> {
        let dir = ScriptDir::new();
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/examples/rrguard-script-example.py");
        let command = format!("{:?}", example.display().to_string());
        let env = "RRGUARD_EXAMPLE_ZONE = \"zone.json\"";
        Self::boxed(dir, &command, env, "compare_and_swap = true")
    }

    fn boxed(dir: ScriptDir, command: &str, env: &str, options: &str) -> Box<dyn Fixture> {
        // Generous: the battery is not about timeouts, and Python starts slowly on a loaded machine.
        let options = format!("{options}\ntimeout = \"30s\"");
        let writer = dir.writer(
            "script",
            &format!("command = [{command}]\nenv = {{ {env} }}\n{options}"),
        );
        Box::new(ScriptFixture {
            command: command.to_owned(),
            options: format!("env = {{ {env}, FAIL_WITH = \"CODE\" }}\n{options}"),
            dir,
            writer,
        })
    }

    fn zone_file(&self) -> PathBuf {
        self.dir.path().join("zone.json")
    }

    fn zone(&self) -> serde_json::Map<String, serde_json::Value> {
        match std::fs::read(self.zone_file()) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
            Err(_) => serde_json::Map::new(),
        }
    }
}

impl Fixture for ScriptFixture {
    fn writer(&self) -> &dyn Writer {
        &*self.writer
    }

    fn set(&self, fqdn: &str, published: &Published) {
        let mut zone = self.zone();
        let records: Vec<serde_json::Value> = published
            .records
            .iter()
            .map(|(ip, ttl)| serde_json::json!({"address": ip.to_string(), "ttl": ttl}))
            .collect();
        zone.insert(
            fqdn.to_owned(),
            serde_json::json!({"records": records, "cname": published.cname}),
        );
        let tmp = self.zone_file().with_extension("fixture");
        std::fs::write(&tmp, serde_json::to_vec(&zone).unwrap()).unwrap();
        std::fs::rename(tmp, self.zone_file()).unwrap();
    }

    fn authoritative(&self, fqdn: &str) -> Published {
        let mut out = Published::default();
        let Some(entry) = self.zone().remove(fqdn) else {
            return out;
        };
        for r in entry["records"].as_array().unwrap() {
            let ip: IpAddr = r["address"].as_str().unwrap().parse().unwrap();
            out.records
                .insert(ip, u32::try_from(r["ttl"].as_u64().unwrap()).unwrap());
        }
        out.cname = entry["cname"].as_str().map(str::to_owned);
        out
    }

    fn failing(&self, failure: Failure) -> Result<Box<dyn Writer>, &'static str> {
        if self.command.contains("rrguard-script-example") {
            return Err(
                "the example script has no failure switch; the zone script covers exit codes 1 and 3",
            );
        }
        // Exit 1 is the documented "transient", exit 3 "authentication".
        let code = match failure {
            Failure::ServerError => "1",
            Failure::BadCredentials => "3",
        };
        let options = format!(
            "command = [{}]\n{}",
            self.command,
            self.options.replace("CODE", code)
        );
        let w = self.dir.writer("failing", &options);
        Ok(Box::new(w))
    }
}

writer_battery! {
    script_cas => ScriptFixture::zone_script(true);
    script_plain => ScriptFixture::zone_script(false);
    script_example => ScriptFixture::example();
}

// ---- Rows for the script writer only. ----

/// A process that has exited (reaped, or a zombie waiting for a parent that is not this test).
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses.
        Ok(stat) => matches!(
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next()),
            Some(Some('Z' | 'X'))
        ),
    }
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Waits (bounded) until `pid` is gone.
async fn wait_gone(pid: u32) -> bool {
    for _ in 0..100 {
        if is_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A script that starts a child, records both pids, and sleeps: on timeout both die. `script.pid`
/// appears whole (renamed into place), after `child.pid` is written.
const SLEEPER: &str = "#!/bin/sh\nsleep 60 &\necho $! > child.pid\necho $$ > script.tmp\nmv script.tmp script.pid\nsleep 60\n";

#[tokio::test]
async fn timeout_kills_the_script_and_its_child() {
    let dir = ScriptDir::new();
    dir.script("sleeper.sh", SLEEPER);
    let w = dir.writer("slow", "command = [\"./sleeper.sh\"]\ntimeout = \"700ms\"");
    let start = Instant::now();
    let err = w.read(FQDN, ZONE).await.unwrap_err();
    let took = start.elapsed();
    match &err {
        WriteError::Transient(m) => assert!(
            m.contains("timed out after 700ms") && m.contains("sleeper.sh"),
            "{m}"
        ),
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let script = read_pid(&dir.path().join("script.pid"));
    let child = read_pid(&dir.path().join("child.pid"));
    assert!(wait_gone(script).await, "the script {script} still runs");
    assert!(wait_gone(child).await, "its child {child} still runs");
}

/// Dropping the operation (daemon shutdown, a caller's own timeout) kills the group too.
#[tokio::test]
async fn a_cancelled_operation_kills_the_process_group() {
    let dir = ScriptDir::new();
    dir.script("sleeper.sh", SLEEPER);
    let w = dir.writer("slow", "command = [\"./sleeper.sh\"]\ntimeout = \"30s\"");
    let child_pid = dir.path().join("child.pid");
    let outer = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            r = w.read(FQDN, ZONE) => panic!("the script ended: {r:?}"),
            () = async {
                while !dir.path().join("script.pid").exists() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } => {}
        }
    });
    outer.await.unwrap();
    let script = read_pid(&dir.path().join("script.pid"));
    let child = read_pid(&child_pid);
    assert!(wait_gone(script).await, "the script {script} still runs");
    assert!(wait_gone(child).await, "its child {child} still runs");
}

/// Endless output is cut at the bound and the script killed at once, not at the timeout.
#[tokio::test]
async fn output_beyond_the_bound_is_an_error_not_a_buffer() {
    let dir = ScriptDir::new();
    let w = dir.writer(
        "chatty",
        "command = [\"yes\", \"0123456789abcdef\"]\ntimeout = \"20s\"",
    );
    let start = Instant::now();
    let err = w.read(FQDN, ZONE).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    match &err {
        WriteError::Rejected(m) => assert!(
            m.contains("printed more than 1048576 bytes on stdout and was killed"),
            "{m}"
        ),
        other => panic!("expected an operator error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reply_that_is_not_json_says_what_was_expected() {
    let dir = ScriptDir::new();
    dir.script(
        "chat.sh",
        "#!/bin/sh\ncat > /dev/null\necho 'updated www, all good'\n",
    );
    let w = dir.writer("chat", "command = [\"./chat.sh\"]");
    let read = w.read(FQDN, ZONE).await.unwrap_err().to_string();
    for says in [
        "writer \"chat\": script",
        "chat.sh (read www.example.test.)",
        "not the documented read reply {\"records\":[{\"address\":\"192.0.2.1\",\"ttl\":30}],\"cname\":null}",
        "\"updated www, all good\"",
        "anything else on stderr",
    ] {
        assert!(read.contains(says), "{read}\nlacks {says}");
    }
    let apply = w
        .apply(&change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap_err();
    assert!(matches!(apply, WriteError::Rejected(_)), "{apply:?}");
    assert!(
        apply.to_string().contains("must be empty or a JSON object"),
        "{apply}"
    );
}

/// The exact bytes on stdin, as documented in docs/writers.md.
const GOLDEN_APPLY: &str = r#"{"version":1,"operation":"apply","writer":"dns-hook","fqdn":"www.example.test.","zone":"example.test.","ttl":30,"precondition":{"rrset_equals":["127.0.0.2","127.0.0.3","::1"]},"add":["127.0.0.4"],"remove":["127.0.0.2"],"rettl":["127.0.0.3"],"expected":["127.0.0.2","127.0.0.3","::1"],"families":["A"],"desired":[{"address":"127.0.0.3","ttl":30},{"address":"127.0.0.4","ttl":30}]}"#;
const GOLDEN_NOT_IN_USE: &str = r#"{"version":1,"operation":"apply","writer":"dns-hook","fqdn":"www.example.test.","zone":"example.test.","ttl":30,"precondition":{"name_not_in_use":true},"add":["127.0.0.9","2001:db8::9"],"remove":[],"rettl":[],"expected":[],"families":["A","AAAA"],"desired":[{"address":"127.0.0.9","ttl":30},{"address":"2001:db8::9","ttl":30}]}"#;
const GOLDEN_READ: &str = r#"{"version":1,"operation":"read","writer":"dns-hook","fqdn":"www.example.test.","zone":"example.test."}"#;

#[tokio::test]
async fn stdin_is_the_documented_document_byte_for_byte() {
    let dir = ScriptDir::new();
    dir.script(
        "dump.sh",
        "#!/bin/sh\ncat > \"stdin.$1\"\n[ \"$1\" = read ] && echo '{\"records\":[]}'\nexit 0\n",
    );
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/writers.md"))
            .unwrap();
    let stdin = |n: &str| std::fs::read_to_string(dir.path().join(format!("stdin.{n}"))).unwrap();

    let read = dir.writer("dns-hook", "command = [\"./dump.sh\", \"read\"]");
    assert_eq!(read.read(FQDN, ZONE).await.unwrap(), Published::default());
    assert_eq!(stdin("read"), format!("{GOLDEN_READ}\n"));

    let apply = dir.writer("dns-hook", "command = [\"./dump.sh\", \"apply\"]");
    let change = RecordChange {
        rettl: set(&["127.0.0.3"]),
        ..change(
            &["127.0.0.2", "127.0.0.3", "::1"],
            &["127.0.0.4"],
            &["127.0.0.2"],
        )
    };
    apply.apply(&change).await.unwrap();
    assert_eq!(stdin("apply"), format!("{GOLDEN_APPLY}\n"));
    let allocate = RecordChange {
        precondition: Precondition::NameNotInUse,
        ..change_with(&["127.0.0.9", "2001:db8::9"])
    };
    apply.apply(&allocate).await.unwrap();
    assert_eq!(stdin("apply"), format!("{GOLDEN_NOT_IN_USE}\n"));
    for golden in [GOLDEN_READ, GOLDEN_APPLY, GOLDEN_NOT_IN_USE] {
        assert!(
            docs.contains(golden),
            "docs/writers.md does not show {golden}"
        );
    }
}

fn change_with(add: &[&str]) -> RecordChange {
    change(&[], add, &[])
}

/// `env` reaches the script, rrguard's own environment too; the working directory is the config's.
#[tokio::test]
async fn env_and_working_directory() {
    let dir = ScriptDir::new();
    dir.script(
        "env.sh",
        "#!/bin/sh\ncat > /dev/null\nprintf '%s\\n%s\\n%s\\n' \"$API_TOKEN\" \"$(pwd -P)\" \"${PATH:+has-path}\" > seen\necho '{\"records\":[]}'\n",
    );
    let w = dir.writer(
        "env",
        "command = [\"./env.sh\"]\nenv = { API_TOKEN = \"s3cret token\" }",
    );
    w.read(FQDN, ZONE).await.unwrap();
    let seen = std::fs::read_to_string(dir.path().join("seen")).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(lines, ["s3cret token", cwd.to_str().unwrap(), "has-path"]);
}

/// Exit codes 2, 4 and others, and a signal, each with the first lines of stderr in the message.
#[tokio::test]
async fn exit_codes_and_signals_are_classified() {
    let dir = ScriptDir::new();
    dir.script(
        "exit.sh",
        "#!/bin/sh\ncat > /dev/null\necho \"line one: code $1\" >&2\necho 'line two' >&2\n[ \"$1\" = signal ] && kill -9 $$\nexit \"$1\"\n",
    );
    let run = |code: &str| {
        let w = dir.writer("codes", &format!("command = [\"./exit.sh\", \"{code}\"]"));
        async move {
            let apply = w
                .apply(&change(&[], &["127.0.0.2"], &[]))
                .await
                .unwrap_err();
            let read = w.read(FQDN, ZONE).await.unwrap_err();
            (apply, read)
        }
    };
    let kind = |e: &WriteError| match e {
        WriteError::Conflict(_) => "conflict",
        WriteError::Transient(_) => "transient",
        WriteError::Auth(_) => "auth",
        WriteError::Rejected(_) => "rejected",
    };
    for (code, on_apply, on_read, says) in [
        ("1", "transient", "transient", "exited with 1"),
        ("2", "rejected", "rejected", "exited with 2 (rejected)"),
        ("3", "auth", "auth", "exited with 3 (authentication failed)"),
        (
            "4",
            "conflict",
            "transient",
            "exited with 4 (precondition failed)",
        ),
        ("9", "transient", "transient", "exited with 9"),
        ("signal", "transient", "transient", "was killed by a signal"),
    ] {
        let (apply, read) = run(code).await;
        assert_eq!(kind(&apply), on_apply, "{code}: {apply}");
        assert_eq!(kind(&read), on_read, "{code}: {read}");
        let m = apply.to_string();
        assert!(m.contains(says), "{m}");
        assert!(
            m.contains(&format!("stderr: \"line one: code {code}\\nline two\"")),
            "{m}"
        );
    }
}

/// A program that disappeared after the configuration was loaded: rejected, naming the path.
#[tokio::test]
async fn a_missing_program_is_rejected_naming_its_path() {
    let dir = ScriptDir::new();
    let missing = dir.path().join("gone.py");
    let w = ScriptWriter::new(
        "gone",
        ScriptConfig {
            program: missing.clone(),
            args: vec![],
            dir: dir.path().to_path_buf(),
            timeout: Duration::from_secs(5),
            env: BTreeMap::new(),
            compare_and_swap: false,
            read_back: true,
        },
    );
    let err = w.read(FQDN, ZONE).await.unwrap_err();
    assert!(err.needs_operator(), "{err:?}");
    let m = err.to_string();
    assert!(
        m.contains(&format!("cannot run {}", missing.display()))
            && m.contains("No such file")
            && m.contains("fix `command`"),
        "{m}"
    );
    // check-config says it before anything runs, at the command's position.
    let text = "[[writer]]\nname = \"gone\"\ntype = \"script\"\ncommand = [\"./gone.py\"]\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"gone\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n";
    let err = rrguard::config::parse(&dir.path().join("rrguard.toml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rrguard.toml:4:12: cannot use program") && err.contains("gone.py"),
        "{err}"
    );
}

/// The example script refuses to add beside a CNAME with exit 2 (an operator error); its
/// compare-and-swap pins only the touched RRsets, and it leaves the others alone, TTL included.
#[tokio::test]
async fn example_script_refusals_and_untouched_rrsets() {
    let f = ScriptFixture::example();
    let alias = Published {
        records: BTreeMap::new(),
        cname: Some("lb.example.test.".to_owned()),
        weights: Default::default(),
    };
    f.set(FQDN, &alias);
    let err = f
        .writer()
        .apply(&change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::Rejected(m) if m.contains("is a CNAME to lb.example.test.")),
        "{err:?}"
    );
    f.set(FQDN, &published(&[("127.0.0.2", 60), ("::1", 60)]));
    // The A RRset it was planned against is not the one published: refused, nothing changed.
    let stale = change(&["127.0.0.5", "::1"], &["127.0.0.3"], &[]);
    expect_conflict(f.writer().apply(&stale).await);
    // Only A is touched: a stale view of AAAA does not matter, and AAAA keeps its records and TTL.
    let ok = change(&["127.0.0.2", "::2"], &["127.0.0.3"], &[]);
    f.writer().apply(&ok).await.unwrap();
    assert_eq!(
        f.authoritative(FQDN),
        published(&[("127.0.0.2", 30), ("127.0.0.3", 30), ("::1", 60)])
    );
}
