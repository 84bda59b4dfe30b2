//! rrguard as PID 1 of its own PID namespace (a container started without an init): the processes
//! an `exec` check leaves behind when its group is killed are re-parented to rrguard, which must reap
//! them; without it they stay zombies for ever (27 after 6 s of a plugin that forks and hangs).

mod support;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use support::{free_tcp_port, rrguard_bin};

/// `unshare --pid --fork --mount-proc --kill-child rrguard run`: killing it ends the namespace.
struct Namespace(Child);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `(pid, state, ppid)` of every process, from `/proc`.
fn processes() -> Vec<(i32, String, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        if let (Some(state), Some(Ok(ppid))) = (f.next(), f.next().map(str::parse)) {
            out.push((pid, state.to_owned(), ppid));
        }
    }
    out
}

#[test]
fn as_pid_1_rrguard_reaps_the_orphans_of_exec_checks() {
    support::required_tool("unshare", "util-linux");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("forks.sh");
    std::fs::write(&script, "#!/bin/sh\nsleep 100 &\nsleep 100\nwait\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_tcp_port("127.0.0.1".parse().unwrap());
    let config = dir.path().join("rrguard.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    write!(
        f,
        r#"[node]
id = "pid1"
state_dir = "{state}"

[defaults]
interval = "200ms"
timeout = "150ms"

[[writer]]
name = "dns"
type = "serve"
listen = ["127.0.0.1:{port}"]

[[writer.zone]]
name = "example.test"
ns = ["ns1.example.test"]

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "dns"
endpoints = ["127.0.0.1"]
[service.check]
type = "exec"
command = ["{script}"]
"#,
        state = dir.path().join("state").display(),
        script = script.display(),
    )
    .unwrap();
    let log = dir.path().join("rrguard.log");
    let out = std::fs::File::create(&log).unwrap();
    let ns = Namespace(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(rrguard_bin())
            .args(["run", "-c"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("unshare"),
    );
    let unshare = ns.0.id() as i32;
    // rrguard is the child of `unshare` (PID 1 inside).
    let started = Instant::now();
    let rrguard = loop {
        if let Some((pid, _, _)) = processes()
            .into_iter()
            .find(|(_, _, ppid)| *ppid == unshare)
        {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rrguard did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // A dozen probes time out, each leaving two orphans.
    std::thread::sleep(Duration::from_secs(3));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("rrguard runs as PID 1"), "{text}");
    assert!(text.contains("timed out after 150ms"), "{text}");
    // Zombies appear as each group is killed and go within moments: at some sample there must be
    // none (without the reaper there are ever more, 20 or so by now).
    let zombies = |pid: i32| {
        processes()
            .iter()
            .filter(|(_, state, ppid)| *ppid == pid && state == "Z")
            .count()
    };
    let samples: Vec<usize> = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            zombies(rrguard)
        })
        .collect();
    assert!(
        samples.iter().min() == Some(&0) && samples.iter().all(|n| *n <= 4),
        "zombie children of rrguard per sample: {samples:?}"
    );
    drop(ns);
}
