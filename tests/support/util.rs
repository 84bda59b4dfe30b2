//! Small process, port and polling helpers shared by the rest of the harness.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::procnet::{socket_inode, wait_socket_gone};

/// Every port this test process has handed out. Ports are never handed out twice by one process: two
/// servers of the same test binary can then never race for one port, and a port a stopped server
/// will come back to (`restart`, `resume`) is not given to somebody else in the meantime.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Locks the registry even if a panicking test poisoned it (the set stays consistent: it only grows).
fn handed_out() -> MutexGuard<'static, BTreeSet<u16>> {
    HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records `port` as taken by this process; returns false if it already was.
pub(crate) fn claim_port(port: u16) -> bool {
    handed_out().insert(port)
}

/// A TCP port that is free on `ip` right now (the kernel picks it; the socket is closed again before
/// returning, so callers must still cope with losing a race against another process). Never returns
/// a port this process already handed out.
pub fn free_tcp_port(ip: IpAddr) -> u16 {
    for _ in 0..200 {
        let listener = TcpListener::bind((ip, 0))
            .unwrap_or_else(|e| panic!("cannot bind a TCP socket on {ip}: {e}"));
        let port = listener.local_addr().expect("local_addr").port();
        if claim_port(port) {
            release(listener);
            return port;
        }
    }
    panic!("no fresh free TCP port on {ip} after 200 tries");
}

/// Closes a probe socket and waits (briefly, bounded) until it is really gone: a child forked
/// meanwhile may hold a copy until it execs, which would keep the port busy for the caller.
pub(crate) fn release(socket: impl AsRawFd) {
    let inode = socket_inode(socket.as_raw_fd());
    drop(socket);
    if let Some(inode) = inode {
        wait_socket_gone(inode, Duration::from_secs(2));
    }
}

/// Polls `f` every 20 ms until it returns true; panics naming `what` once `timeout` has passed.
/// `f` is always called at least once, and once more at the deadline.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends signal `sig` ("TERM", "HUP", "KILL", ...) to `pid` with the shell's `kill -s` builtin
/// (std has no portable way to send anything but SIGKILL, and /bin/kill is not in every image).
pub(crate) fn send_signal(pid: u32, sig: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -s {sig} {pid}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run sh to send SIG{sig}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kill -s {sig} {pid} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running afterwards.
pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("try_wait on pid {} failed: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL and reap. Never panics, because it also runs from `Drop`
/// while a failed test is unwinding (a panic there would abort the whole test binary).
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // Only signal a child we have not reaped yet: its pid cannot have been reused.
    if send_signal(child.id(), "TERM").is_ok() && wait_child(child, grace).is_some() {
        return;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cmd` to completion with `stdin` fed to it, killing it after `timeout`. Output is drained by
/// threads so a chatty child can never block on a full pipe.
pub(crate) fn run_with_timeout(
    cmd: &mut Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Output, String> {
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let writer = stdin.map(|text| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let text = text.to_owned();
        // A child that exits early closes the pipe: ignore the resulting EPIPE, the exit status tells.
        thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        })
    });
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let status = match wait_child(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{program} did not finish within {timeout:?}"));
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Finds an executable by name in PATH and in the sbin directories (knotd, named, nft and ip live in
/// /usr/sbin, which is not on a non-root user's PATH).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `n` random bytes from the kernel (no rand crate needed for a few test secrets).
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("cannot read /dev/urandom");
    buf
}

/// Standard base64 with padding (RFC 4648), as TSIG secrets are written in Knot, BIND and nsupdate.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A fresh random 32-byte secret, base64-encoded (the key size recommended for hmac-sha256).
pub(crate) fn random_secret_b64() -> String {
    base64_encode(&random_bytes(32))
}

/// Opens `path` for appending, creating it (server and daemon logs: every restart appends).
pub(crate) fn append_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// A service for driving a `ServiceCore` directly in tests (no probing): `fqdn` in `zone` with these
/// endpoints and `ttl` (s), `fall = rise = 1`, a tcp check on port 80, the default policies.
pub fn service_config(
    fqdn: &str,
    zone: &str,
    endpoints: Vec<std::net::IpAddr>,
    ttl: u32,
) -> rrguard::config::ServiceConfig {
    use rrguard::config::{AllDownPolicy, CheckConfig, ServiceConfig, TcpCheckConfig};
    ServiceConfig {
        fqdn: fqdn.to_owned(),
        zone: zone.to_owned(),
        writers: vec!["primary".to_owned()],
        ttl,
        endpoints,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        fall: 1,
        rise: 1,
        confirm_interval: None,
        adaptive_fall: false,
        min_healthy: 1,
        all_down: AllDownPolicy::KeepAll,
        remove_unlisted: false,
        quorum: None,
        policies: Default::default(),
        self_register: None,
        check: CheckConfig::Tcp(TcpCheckConfig::connect(80)),
    }
}
