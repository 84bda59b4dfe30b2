//! systemd's service notification protocol (`sd_notify(3)`), for `Type=notify-reload` units.
//!
//! The protocol is one unix datagram per notification, sent to the socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`), holding newline-separated
//! `KEY=VALUE` assignments. It is a few lines, so it is written here rather than taken from a crate.
//! What rrguard sends, and when:
//!
//! - `READY=1` and a `STATUS=` line once the node is ready: the condition of `GET /ready` (every
//!   endpoint probed once; as the leader, every writer's records read). `STATUS=` again whenever
//!   the line changes (`3 services, 12/14 endpoints up, leader`).
//! - `WATCHDOG=1` every half of `$WATCHDOG_USEC` when it is set (and `$WATCHDOG_PID`, when set, is
//!   this process), from the same task that watches the node state: a wedged runtime stops the
//!   pings and systemd restarts the service.
//! - On SIGHUP, `RELOADING=1` with `MONOTONIC_USEC=` (`CLOCK_MONOTONIC` in µs, which
//!   `notify-reload` requires), then `READY=1` once the reload is done (taken or rejected).
//! - `STOPPING=1` when shutdown begins.
//!
//! Without `$NOTIFY_SOCKET` every call is a no-op. A failed send is logged once and never stops the
//! daemon.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::state::{NodeState, NodeStatus};

/// How often the notifier looks at the node state (readiness, the status line).
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// A handle on `$NOTIFY_SOCKET`; cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    target: Option<Arc<Target>>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// A send has failed (logged once).
    failed: AtomicBool,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names; a no-op one when it is unset or unusable (logged).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            match open(&path) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    warn!("NOTIFY_SOCKET={path} cannot be used, systemd will not hear from rrguard: {e}");
                    None
                }
            }
        });
        Notifier { target }
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification (`KEY=VALUE` lines).
    pub fn send(&self, message: &str) {
        let Some(t) = &self.target else { return };
        debug!("sd_notify: {}", message.replace('\n', " "));
        if let Err(e) = t.socket.send_to_addr(message.as_bytes(), &t.addr)
            && !t.failed.swap(true, Ordering::Relaxed)
        {
            warn!("cannot notify systemd through NOTIFY_SOCKET: {e}");
        }
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, as `Type=notify-reload` wants it before a reload.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }
}

fn open(path: &str) -> std::io::Result<Target> {
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None if path.starts_with('/') => SocketAddr::from_pathname(path)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract name (@…)",
            ));
        }
    };
    Ok(Target {
        socket: UnixDatagram::unbound()?,
        addr,
        failed: AtomicBool::new(false),
    })
}

/// `CLOCK_MONOTONIC` now, in µs.
pub fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000
}

/// Half of `$WATCHDOG_USEC` (the ping interval systemd recommends), when the watchdog is on for
/// this process (`$WATCHDOG_PID` unset or this pid).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_string_lossy().trim() != std::process::id().to_string()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The `STATUS=` line: `3 services, 12/14 endpoints up, leader`.
pub fn status_line(s: &NodeStatus) -> String {
    let up = s
        .endpoints
        .iter()
        .filter(|e| e.cluster_state == "up")
        .count();
    let role = if let Some(why) = &s.isolated {
        format!("isolated ({why})")
    } else if s.am_leader {
        "leader".to_owned()
    } else {
        match &s.leader {
            Some(l) => format!("following {l}"),
            None => "no leader".to_owned(),
        }
    };
    format!(
        "{} service{}, {up}/{} endpoints up, {role}",
        s.services.len(),
        if s.services.len() == 1 { "" } else { "s" },
        s.endpoints.len()
    )
}

/// Spawns the task that sends `READY=1` once the node is ready, the status line when it changes
/// and the watchdog pings, into `set`; it stops with `cancel`. Nothing is spawned without
/// `$NOTIFY_SOCKET`.
pub fn spawn_notifier(
    notifier: &Notifier,
    state: &NodeState,
    cancel: CancellationToken,
    set: &mut JoinSet<()>,
) {
    if !notifier.enabled() {
        return;
    }
    let watchdog = watchdog_interval();
    let notifier = notifier.clone();
    let state = state.clone();
    set.spawn(async move {
        let mut ready = false;
        let mut shown = String::new();
        let mut look = tokio::time::interval(LOOK_EVERY);
        // Without a watchdog this timer is never polled (the select branch is disabled).
        let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut lines = Vec::new();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ping.tick(), if watchdog.is_some() => lines.push("WATCHDOG=1".to_owned()),
                _ = look.tick() => {
                    if let Some(status) = state.snapshot() {
                        if !ready && status.waiting_for().is_empty() {
                            ready = true;
                            lines.push("READY=1".to_owned());
                        }
                        let line = status_line(&status);
                        if line != shown {
                            lines.push(format!("STATUS={line}"));
                            shown = line;
                        }
                    }
                }
            }
            if !lines.is_empty() {
                notifier.send(&lines.join("\n"));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agree::Tally;
    use crate::observe::health::Health;
    use crate::state::{ClusterStatus, ConfiguredService};

    #[test]
    fn the_status_line_counts_services_endpoints_up_and_names_the_role() {
        let state = NodeState::new();
        state.set_services([ConfiguredService {
            fqdn: "www.example.test.".into(),
            zone: "example.test.".into(),
            writers: vec!["primary".into()],
            check: "http".into(),
            endpoints: vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
        }]);
        assert!(
            state.snapshot().is_none(),
            "no line before the cluster is known"
        );
        let endpoint = |ip: &str, state: Health| {
            let key = ("www.example.test.".to_owned(), ip.parse().unwrap());
            let tally = Tally {
                state,
                up: vec![],
                down: vec![],
                needed: 2,
            };
            (key, tally)
        };
        let cluster = ClusterStatus {
            node: "mon-2".into(),
            generation: 1,
            isolated: None,
            self_check_targets: vec![],
            leader: Some("mon-1".into()),
            am_leader: false,
            term: 1,
            live_nodes: vec!["mon-1".into(), "mon-2".into()],
            peers: vec![],
            rejected_messages: Default::default(),
            tallies: [
                endpoint("192.0.2.1", Health::Up),
                endpoint("192.0.2.2", Health::Down),
            ]
            .into_iter()
            .collect(),
        };
        state.set_cluster(cluster.clone());
        let s = state.snapshot().unwrap();
        assert_eq!(
            status_line(&s),
            "1 service, 1/2 endpoints up, following mon-1"
        );
        assert!(
            !s.waiting_for().is_empty(),
            "not ready before a first probe"
        );
        state.set_cluster(ClusterStatus {
            am_leader: true,
            leader: Some("mon-2".into()),
            ..cluster.clone()
        });
        assert_eq!(
            status_line(&state.snapshot().unwrap()),
            "1 service, 1/2 endpoints up, leader"
        );
        state.set_cluster(ClusterStatus {
            isolated: Some("self-check failed".into()),
            ..cluster
        });
        assert_eq!(
            status_line(&state.snapshot().unwrap()),
            "1 service, 1/2 endpoints up, isolated (self-check failed)"
        );
    }

    #[test]
    fn a_notifier_without_a_socket_sends_nothing_and_a_bad_path_is_refused() {
        assert!(!Notifier { target: None }.enabled());
        Notifier { target: None }.send("READY=1");
        assert!(open("relative/path").is_err());
        assert!(open("/tmp/any.sock").is_ok());
        assert!(open("@abstract-name").is_ok());
        assert!(monotonic_usec() > 0);
    }

    #[test]
    fn a_datagram_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(Arc::new(open(path.to_str().unwrap()).unwrap())),
        };
        n.reloading();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
    }
}
