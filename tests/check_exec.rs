//! The `exec` check against real scripts: Monitoring Plugins exit codes, output in the detail,
//! placeholder substitution, the shell option, and a script that outlives the timeout (it and the
//! children it started are killed with their process group and leave no zombie). Configuration
//! problems are reported at the right key with the fix.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rrguard::config::{CheckConfig, ConfigError, parse};
use rrguard::observe::probe::{self, Probe, ProbeResult};
use tokio::time::Instant;

const IP: &str = "127.0.0.5";

/// Writes an executable `name` with `body` into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A config with one service `www.example.test` whose check is `check` (TOML lines), written in `dir`.
fn config(dir: &Path, check: &str) -> Result<rrguard::config::Config, ConfigError> {
    let text = format!(
        r#"
[[writer]]
name = "w"
type = "rfc2136"
server = "127.0.0.1"
tsig = {{ name = "k", algorithm = "hmac-sha256", secret = "c2VjcmV0" }}

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "w"
endpoints = ["{IP}"]
[service.check]
type = "exec"
{check}
"#
    );
    let path = dir.join("rrguard.toml");
    std::fs::write(&path, &text).unwrap();
    parse(&path, &text)
}

fn exec_probe(dir: &Path, check: &str, timeout: Duration) -> Box<dyn Probe> {
    let c = config(dir, check).unwrap_or_else(|e| panic!("{e}"));
    let check = &c.services[0].check;
    assert!(matches!(check, CheckConfig::Exec(_)));
    probe::build(check, IP.parse::<IpAddr>().unwrap(), timeout).unwrap()
}

async fn run(dir: &Path, check: &str) -> ProbeResult {
    exec_probe(dir, check, Duration::from_secs(5)).probe().await
}

#[tokio::test]
async fn exit_codes_follow_monitoring_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = script(
        dir.path(),
        "plugin.sh",
        "echo \"STATUS $1 for $2\"\nexit $1",
    );
    let cmd = |code: u8| {
        format!(
            "command = [\"{}\", \"{code}\", \"{{ip}}\"]",
            plugin.display()
        )
    };
    let r = run(dir.path(), &cmd(0)).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, format!("exit 0 (ok): STATUS 0 for {IP}"));
    let r = run(dir.path(), &cmd(1)).await;
    assert!(r.ok, "warning counts as up by default: {r:?}");
    assert_eq!(r.detail, format!("exit 1 (warning): STATUS 1 for {IP}"));
    let r = run(dir.path(), &format!("{}\nwarning_is_down = true", cmd(1))).await;
    assert!(!r.ok, "{r:?}");
    let r = run(dir.path(), &cmd(2)).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.detail, format!("exit 2 (critical): STATUS 2 for {IP}"));
    let r = run(dir.path(), &cmd(3)).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.detail, format!("exit 3 (unknown): STATUS 3 for {IP}"));
    let r = run(dir.path(), &cmd(7)).await;
    assert!(!r.ok, "{r:?}");
    assert!(
        r.detail.starts_with("exit 7 (not a plug-in status)"),
        "{r:?}"
    );
}

#[tokio::test]
async fn placeholders_output_and_shell() {
    let dir = tempfile::tempdir().unwrap();
    let echo = script(
        dir.path(),
        "args.sh",
        "echo \"$@\" >&2\nhead -c 100000 /dev/zero | tr '\\0' x\nexit 0",
    );
    // stdout holds one 100 kB line: drained without blocking, quoted bounded.
    let r = run(
        dir.path(),
        &format!(
            "command = [\"{}\", \"-H\", \"{{ip}}:{{port}}\", \"{{fqdn}}\"]\nport = 8443",
            echo.display()
        ),
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, format!("exit 0 (ok): {}", "x".repeat(200)));
    // Only stderr: it is quoted instead.
    let args = script(dir.path(), "stderr.sh", "echo \"$@\" >&2\nexit 2");
    let r = run(
        dir.path(),
        "command = [\"./stderr.sh\", \"-H\", \"{ip}:{port}\", \"{fqdn}\"]\nport = 8443",
    )
    .await;
    assert!(args.exists());
    assert_eq!(
        r.detail,
        format!("exit 2 (critical): -H {IP}:8443 www.example.test")
    );
    let r = run(
        dir.path(),
        "command = [\"echo {ip} | tr . - ; exit 1\"]\nshell = true\nwarning_is_down = true",
    )
    .await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.detail, "exit 1 (warning): 127-0-0-5");
}

/// `/proc/PID/stat` state letter, or `None` once the process is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// The leader, rrguard's own child, must be gone at once (killed and reaped); every other pid must
/// be gone within a few seconds (SIGKILL is delivered asynchronously, and init reaps orphans). They
/// would otherwise live on for 30 s or more.
async fn assert_all_gone(leader: u32, others: &[u32]) {
    assert_eq!(state(leader), None, "leader {leader} not reaped");
    let until = Instant::now() + Duration::from_secs(15);
    for &pid in others {
        while state(pid).is_some() {
            assert!(Instant::now() < until, "{pid} left as {:?}", state(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A script that starts `sleep 60` in the background and then sleeps past the timeout.
fn hanging_script(dir: &Path) -> PathBuf {
    let pids = dir.display();
    script(
        dir,
        "hang.sh",
        &format!(
            "echo $$ > {pids}/leader.pid\nsleep 60 &\necho $! > {pids}/child.pid\nsleep 30 &\necho $! > {pids}/fg.pid\necho started\nwait"
        ),
    )
}

#[tokio::test]
async fn timeout_kills_the_whole_group_and_leaves_no_zombie() {
    let dir = tempfile::tempdir().unwrap();
    let hang = hanging_script(dir.path());
    let timeout = Duration::from_millis(600);
    let p = exec_probe(
        dir.path(),
        &format!("command = [\"{}\"]", hang.display()),
        timeout,
    );
    let start = Instant::now();
    let r = p.probe().await;
    let took = start.elapsed();
    assert!(!r.ok);
    assert_eq!(r.detail, "timed out after 600ms");
    assert!(
        took >= Duration::from_millis(500) && took < timeout + Duration::from_millis(700),
        "took {took:?}"
    );
    let leader = read_pid(&dir.path().join("leader.pid"));
    let child = read_pid(&dir.path().join("child.pid"));
    let fg = read_pid(&dir.path().join("fg.pid"));
    assert_all_gone(leader, &[child, fg]).await;
}

#[tokio::test]
async fn a_dropped_probe_kills_the_group_too() {
    // The scheduler's hard timeout drops the probe future: the group must die anyway.
    let dir = tempfile::tempdir().unwrap();
    let hang = hanging_script(dir.path());
    let p = exec_probe(
        dir.path(),
        &format!("command = [\"{}\"]", hang.display()),
        Duration::from_secs(30),
    );
    let leader_file = dir.path().join("fg.pid");
    let cut = tokio::time::timeout(Duration::from_millis(500), p.probe()).await;
    assert!(cut.is_err(), "the probe should still be running");
    assert!(leader_file.exists(), "the script never started");
    let child = read_pid(&dir.path().join("child.pid"));
    let fg = read_pid(&leader_file);
    let leader = read_pid(&dir.path().join("leader.pid"));
    // The leader is reaped by the runtime in the background here, not at once.
    let until = Instant::now() + Duration::from_secs(15);
    while state(leader).is_some() {
        assert!(Instant::now() < until, "leader left as {:?}", state(leader));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_all_gone(leader, &[child, fg]).await;
}

#[tokio::test]
async fn a_background_child_left_by_a_finished_plugin_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().display();
    let s = script(
        dir.path(),
        "leaves.sh",
        &format!(
            "echo $$ > {pids}/leader.pid\nsleep 60 >/dev/null 2>&1 &\necho $! > {pids}/child.pid\necho OK\nexit 0"
        ),
    );
    let r = run(dir.path(), &format!("command = [\"{}\"]", s.display())).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "exit 0 (ok): OK");
    let leader = read_pid(&dir.path().join("leader.pid"));
    let child = read_pid(&dir.path().join("child.pid"));
    assert_all_gone(leader, &[child]).await;
}

#[tokio::test]
async fn a_background_child_holding_the_output_open_does_not_hold_the_verdict() {
    // `sleep 60 &` inherits stdout and stderr: they stay open after the plugin exits 0. The verdict
    // is the exit status, at once, and the child dies with the group.
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().display();
    let s = script(
        dir.path(),
        "holds.sh",
        &format!(
            "echo $$ > {pids}/leader.pid\nsleep 60 &\necho $! > {pids}/child.pid\necho OK\nexit 0"
        ),
    );
    let start = Instant::now();
    let r = exec_probe(
        dir.path(),
        &format!("command = [\"{}\"]", s.display()),
        Duration::from_secs(3),
    )
    .probe()
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "exit 0 (ok): OK");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let leader = read_pid(&dir.path().join("leader.pid"));
    let child = read_pid(&dir.path().join("child.pid"));
    assert_all_gone(leader, &[child]).await;
}

fn problems(dir: &Path, check: &str) -> Vec<String> {
    match config(dir, check) {
        Err(ConfigError::Invalid { problems, .. }) => problems
            .iter()
            .map(|p| format!("{}:{} {}", p.line, p.col, p.message))
            .collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn configuration_problems_name_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    script(dir.path(), "ok.sh", "exit 0");
    let p = problems(
        dir.path(),
        "command = [\"./ok.sh\", \"{ip}:{port}\", \"{host}\"]",
    );
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].starts_with("15:23 ") && p[0].contains("add port = <number>"),
        "{p:#?}"
    );
    assert!(
        p[1].starts_with("15:38 ") && p[1].contains("unknown placeholder {host}"),
        "{p:#?}"
    );
    let p = problems(dir.path(), "command = [\"./missing.sh\"]");
    assert!(
        p[0].starts_with("15:12 ") && p[0].contains("missing.sh"),
        "{p:#?}"
    );
    let p = problems(dir.path(), "command = \"./ok.sh -v\"");
    assert!(p[0].contains("command is a list"), "{p:#?}");
    // A relative program is resolved against the file's directory.
    let c = config(dir.path(), "command = [\"./ok.sh\", \"{fqdn}\"]").unwrap();
    let CheckConfig::Exec(e) = &c.services[0].check else {
        panic!()
    };
    assert_eq!(
        e.argv,
        vec![
            dir.path().join("ok.sh").display().to_string(),
            "{fqdn}".to_owned()
        ]
    );
    // Misspelt placeholders are caught in any case; an empty or unparsable shell command too.
    let p = problems(
        dir.path(),
        "command = [\"./ok.sh\", \"{IP}\", \"{ip-addr}\"]",
    );
    assert!(
        p.len() == 2
            && p[0].contains("unknown placeholder {IP}")
            && p[1].contains("unknown placeholder {ip-addr}"),
        "{p:#?}"
    );
    let p = problems(dir.path(), "shell = true\ncommand = [\"\", \" \"]");
    assert!(p.len() == 1 && p[0].contains("command is empty"), "{p:#?}");
    let p = problems(
        dir.path(),
        "shell = true\ncommand = [\"./ok.sh\", \"'{ip}\"]",
    );
    assert!(
        p.len() == 1
            && p[0].starts_with("16:11 ")
            && p[0].contains("is not a valid sh command line")
            && p[0].to_lowercase().contains("unterminated"),
        "{p:#?}"
    );
    // Shell variables and curl's write-out are not placeholders.
    config(
        dir.path(),
        "shell = true\ncommand = [\"./ok.sh\", \"${HOME}\", \"-w '%{http_code}'\", \"{ip} | awk '{print $1}'\"]",
    )
    .unwrap_or_else(|e| panic!("{e}"));
}
