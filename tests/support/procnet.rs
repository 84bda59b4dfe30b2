//! Who owns a local port, read from Linux /proc.
//!
//! Why: BIND 9.18 binds with SO_REUSEPORT by default, and both BIND (UDP, SO_REUSEADDR) and Knot (UDP,
//! SO_REUSEPORT) can share a UDP port with another instance. A server that started on a port another
//! test's server already had would then answer, or steal, that test's queries without any error. So
//! after a DNS server becomes ready the harness checks that every socket on its loopback port belongs
//! to its own child process.

use std::collections::HashSet;
use std::fs;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::thread;
use std::time::{Duration, Instant};

/// Inodes of all sockets process `pid` has open (from the `socket:[INODE]` links in /proc/PID/fd);
/// `None` if that directory cannot be read.
fn socket_inodes_of(pid: u32) -> Option<HashSet<u64>> {
    let entries = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        entries
            .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
            .filter_map(|target| {
                let target = target.to_string_lossy().into_owned();
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect(),
    )
}

/// Whether a /proc/net local address (hex, kernel word order) is one that overlaps 127.0.0.1: the
/// address itself or a wildcard, in IPv4 or IPv4-mapped/any IPv6 form.
fn overlaps_loopback_1(hex_addr: &str) -> bool {
    matches!(
        hex_addr,
        "0100007F"
            | "00000000"
            | "00000000000000000000000000000000"
            | "0000000000000000FFFF00000100007F"
            | "0000000000000000FFFF000000000000"
    )
}

/// Inodes of sockets bound to 127.0.0.1:`port` (or a wildcard on that port) that serve: TCP sockets
/// in LISTEN state, UDP sockets that are not connected to a peer (a client's connected socket that
/// happens to use the port as its source port does not receive our traffic).
fn serving_sockets(port: u16) -> Vec<(&'static str, u64)> {
    let mut found = Vec::new();
    for (table, is_tcp) in [
        ("tcp", true),
        ("tcp6", true),
        ("udp", false),
        ("udp6", false),
    ] {
        let Ok(text) = fs::read_to_string(format!("/proc/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 {
                continue;
            }
            let (Some((local_ip, local_port)), Some((_, remote_port))) =
                (fields[1].split_once(':'), fields[2].split_once(':'))
            else {
                continue;
            };
            if u16::from_str_radix(local_port, 16) != Ok(port) || !overlaps_loopback_1(local_ip) {
                continue;
            }
            let serving = if is_tcp {
                fields[3] == "0A" // TCP_LISTEN
            } else {
                remote_port == "0000"
            };
            if let (true, Ok(inode)) = (serving, fields[9].parse()) {
                found.push((table, inode));
            }
        }
    }
    found
}

/// Who serves 127.0.0.1:`port`, from the point of view of process `pid`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// `pid` has a listening TCP socket and a UDP socket there, and nobody else has any.
    Exclusive,
    /// Nobody else is there, but `pid` does not serve both TCP and UDP (yet).
    Incomplete(String),
    /// Another process has a socket there.
    Shared(String),
}

/// Classifies the sockets serving 127.0.0.1:`port` (see [`Ownership`]).
pub(crate) fn port_ownership(pid: u32, port: u16) -> Ownership {
    // The sockets first, then the fd table: a socket the server creates in between is then merely
    // not seen yet, instead of looking foreign.
    let sockets = serving_sockets(port);
    // Unreadable or socket-less while the server starts up: knotd, for one, is briefly not
    // "dumpable" (its set*id calls clear the flag until it sets it again), which hides /proc/PID/fd.
    let ours = match socket_inodes_of(pid) {
        Some(ours) if !ours.is_empty() => ours,
        _ => {
            return Ownership::Incomplete(format!(
                "cannot see the sockets of pid {pid} (yet) in /proc/{pid}/fd"
            ));
        }
    };
    let foreign: Vec<_> = sockets
        .iter()
        .filter(|(_, inode)| !ours.contains(inode))
        .collect();
    if !foreign.is_empty() {
        return Ownership::Shared(format!(
            "port {port} is shared with another process: foreign sockets {foreign:?}"
        ));
    }
    let has = |proto: &str| sockets.iter().any(|(t, _)| t.starts_with(proto));
    if !has("tcp") || !has("udp") {
        return Ownership::Incomplete(format!(
            "pid {pid} does not serve both TCP and UDP on port {port} (yet): {sockets:?}"
        ));
    }
    Ownership::Exclusive
}

/// The inode of socket `fd` of this process (stat through /proc/self/fd follows to the socket).
pub(crate) fn socket_inode(fd: RawFd) -> Option<u64> {
    fs::metadata(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|m| m.ino())
}

/// Waits until no socket with `inode` exists any more, up to `timeout`; false on timeout.
///
/// Why: closing a socket does not release it while a copy of the descriptor lives in a child that
/// was forked but has not exec'd yet (CLOEXEC only acts at exec). Tests here spawn dig, nsupdate and
/// servers all the time, so for a few milliseconds after `close` a "closed" listener can still
/// accept connections, and a "free" port can still be in use.
pub(crate) fn wait_socket_gone(inode: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let needle = inode.to_string();
    loop {
        let exists = ["tcp", "tcp6", "udp", "udp6"].iter().any(|table| {
            fs::read_to_string(format!("/proc/net/{table}")).is_ok_and(|text| {
                text.lines()
                    .skip(1)
                    .any(|line| line.split_whitespace().nth(9) == Some(needle.as_str()))
            })
        });
        if !exists {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
}
