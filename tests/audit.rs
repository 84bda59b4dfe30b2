//! The audit log survives kill -9: a real `rrguard run` keeps `www.example.test` on a real Knot while
//! one endpoint flaps, so DNS writes keep coming; the daemon is killed with SIGKILL in the middle of
//! that stream, restarted on the same `state_dir`, and every write the log had committed (seen
//! through `/api/v1/events` before the kill) is still there, the database opens cleanly (the
//! restarted node logs no audit error and serves the log), and new records continue the sequence.

#[macro_use]
mod support;

use std::net::IpAddr;
use std::time::Duration;

use support::{KnotSetup, wait_until};

const EVENTUALLY: Duration = Duration::from_secs(60);
const E3: &str = "127.0.0.3";

/// Every DNS write in the log: (seq, after-records as text).
fn writes(s: &KnotSetup) -> Option<Vec<(u64, String)>> {
    let page = s.get_ok("/api/v1/events?kind=dns_updated,write_failed&limit=1000")?;
    Some(
        page["events"]
            .as_array()?
            .iter()
            .map(|e| (e["seq"].as_u64().unwrap(), e["write"]["after"].to_string()))
            .collect(),
    )
}

#[test]
fn committed_writes_survive_kill_9() {
    let s = std::sync::Arc::new(
        KnotSetup::builder("audit-node")
            .default("interval", "\"50ms\"")
            .default("timeout", "\"40ms\"")
            .default("fall", "1")
            .default("rise", "1")
            .build(),
    );
    let d = s.start_daemon();
    // E3 flaps: every 150 ms it stops or resumes, so removals and additions keep going to Knot.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flapper = {
        let stop = stop.clone();
        let h = s.clone();
        std::thread::spawn(move || {
            let e3: IpAddr = E3.parse().unwrap();
            let mut up = true;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(150));
                if up {
                    h.http.stop(e3)
                } else {
                    h.http.resume(e3)
                }
                up = !up;
            }
        })
    };
    let mut before = Vec::new();
    wait_until("at least 6 DNS writes in the audit log", EVENTUALLY, || {
        before = writes(&s).unwrap_or_default();
        before.len() >= 6
    });
    // Kill in the middle of the stream: writes keep coming while we read.
    let committed = writes(&s).unwrap();
    d.signal("KILL");
    let mut d = d;
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(128 + 9));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flapper.join().unwrap();

    let d2 = s.start_daemon();
    let mut after = Vec::new();
    wait_until(
        "the restarted node serves the audit log",
        EVENTUALLY,
        || {
            after = writes(&s).unwrap_or_default();
            !after.is_empty()
        },
    );
    for w in &committed {
        assert!(
            after.contains(w),
            "write {w:?} committed before kill -9 is gone; after: {after:?}"
        );
    }
    let log = d2.log();
    assert!(log.contains("audit log open"), "{log}");
    assert!(!log.contains("running without an audit log"), "{log}");
    // New records continue the sequence after the last one committed.
    let max_before = committed.iter().map(|(s, _)| *s).max().unwrap();
    let page = s.get_ok("/api/v1/events?limit=1").unwrap();
    assert!(
        page["events"][0]["seq"].as_u64().unwrap() >= max_before,
        "{page}"
    );
    println!(
        "{} writes committed before kill -9, all present after restart ({} in the log now)",
        committed.len(),
        after.len()
    );
}
