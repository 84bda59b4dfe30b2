//! `rrguard demo` with nothing but the binary: an empty environment (no PATH, so no DNS server or
//! other tool could be started), a fresh working directory and no configuration file. The test reads
//! the dig line the demo prints, queries the served name with dig, stops an endpoint at the demo's
//! prompt and sees the answer shrink, then quits.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{dig, rrguard_bin, wait_until};

const EVENTUALLY: Duration = Duration::from_secs(20);

/// Kills the demo if the test fails half way.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_runs_with_only_the_binary_and_the_answer_shrinks_when_an_endpoint_stops() {
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Demo(
        Command::new(rrguard_bin())
            .arg("demo")
            .env_clear()
            .env("PATH", "/nonexistent")
            .env("TMPDIR", tmp.path())
            .current_dir(cwd.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rrguard demo"),
    );
    // Every stdout line, read on a thread so the test can wait with a timeout.
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = demo.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let stderr = demo.0.stderr.take().unwrap();
    let (etx, errors) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    let mut seen = Vec::new();
    let next_line = |seen: &mut Vec<String>| -> String {
        let line = lines.recv_timeout(EVENTUALLY).unwrap_or_else(|_| {
            let log: Vec<String> = errors.try_iter().collect();
            panic!(
                "the demo printed nothing more\nstdout:\n{}\nstderr:\n{}",
                seen.join("\n"),
                log.join("\n")
            )
        });
        seen.push(line.clone());
        line
    };
    // "  dig @127.0.0.1 -p PORT www.rrguard.test A +short"
    let port: u16 = loop {
        let line = next_line(&mut seen);
        if let Some(rest) = line.trim().strip_prefix("dig @127.0.0.1 -p ") {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
    };
    while !next_line(&mut seen).starts_with("Try:") {}
    assert!(
        seen.iter()
            .any(|l| l.contains("curl http://127.0.0.1:") && l.contains("/api/v1/status")),
        "{seen:?}"
    );
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let all = vec!["127.0.0.11", "127.0.0.12", "127.0.0.13"];
    let mut last = Vec::new();
    wait_until("the demo serves all three endpoints", EVENTUALLY, || {
        last = dig(server, "www.rrguard.test", "A").unwrap_or_default();
        last == all
    });
    let stdin = demo.0.stdin.as_mut().unwrap();
    writeln!(stdin, "stop 2").unwrap();
    wait_until("endpoint 2 leaves the answer", EVENTUALLY, || {
        last = dig(server, "www.rrguard.test", "A").unwrap_or_default();
        last == vec!["127.0.0.11", "127.0.0.13"]
    });
    let stdin = demo.0.stdin.as_mut().unwrap();
    writeln!(stdin, "status").unwrap();
    loop {
        let line = next_line(&mut seen);
        if line.starts_with("endpoint 2 127.0.0.12") {
            assert!(line.ends_with("stopped"), "{line}");
            break;
        }
    }
    let stdin = demo.0.stdin.as_mut().unwrap();
    writeln!(stdin, "start 2").unwrap();
    wait_until("endpoint 2 comes back", EVENTUALLY, || {
        dig(server, "www.rrguard.test", "A").unwrap_or_default() == all
    });
    let stdin = demo.0.stdin.as_mut().unwrap();
    writeln!(stdin, "quit").unwrap();
    let mut status = None;
    wait_until("the demo exits after quit", EVENTUALLY, || {
        status = demo.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{status:?}");
    // It cleaned up its temporary directory.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
