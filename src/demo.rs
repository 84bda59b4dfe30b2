//! `rrguard demo`: the whole product with nothing but the binary.
//!
//! It starts three demo endpoints (tiny HTTP servers on 127.0.0.11–13, one port), writes a
//! configuration that watches them for `www.rrguard.test` and serves the zone `rrguard.test` itself
//! (the `serve` writer) on a free loopback port, runs the daemon on it, and reads commands from
//! stdin: `stop N` / `start N` break and mend endpoint N, `status` shows them and what DNS answers.
//! Everything lives under a temporary directory that is removed on exit.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config;
use crate::daemon::{self, RunOptions};

/// The demo's zone and name.
pub const ZONE: &str = "rrguard.test";
/// The managed name.
pub const NAME: &str = "www.rrguard.test";
/// The demo endpoints' addresses (all on the loopback interface on Linux).
pub const ENDPOINTS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 11),
    Ipv4Addr::new(127, 0, 0, 12),
    Ipv4Addr::new(127, 0, 0, 13),
];

/// Ports the demo uses; 0 picks a free one.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoOptions {
    /// UDP and TCP port of the served zone on 127.0.0.1.
    pub dns_port: u16,
    /// Port of the HTTP status API on 127.0.0.1.
    pub http_port: u16,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A port or address could not be bound.
    #[error("{0}")]
    Bind(String),
    /// The generated configuration was refused (a bug) or the daemon failed.
    #[error("{0}")]
    Daemon(String),
}

/// One demo endpoint: its address and, while it runs, its accept loop.
struct Endpoint {
    ip: Ipv4Addr,
    server: Option<JoinHandle<()>>,
}

/// The three endpoints, on one port.
struct Endpoints {
    port: u16,
    list: Mutex<Vec<Endpoint>>,
}

impl Endpoints {
    /// Binds every endpoint on one port free on all three addresses.
    fn start() -> Result<Arc<Self>, DemoError> {
        for _ in 0..50 {
            let first = StdTcpListener::bind((ENDPOINTS[0], 0))
                .map_err(|e| DemoError::Bind(format!("cannot bind {}: {e}", ENDPOINTS[0])))?;
            let port = first
                .local_addr()
                .map_err(|e| DemoError::Bind(e.to_string()))?
                .port();
            let mut listeners = vec![first];
            for ip in &ENDPOINTS[1..] {
                match StdTcpListener::bind((*ip, port)) {
                    Ok(l) => listeners.push(l),
                    Err(_) => break,
                }
            }
            if listeners.len() < ENDPOINTS.len() {
                continue;
            }
            let list = listeners
                .into_iter()
                .zip(ENDPOINTS)
                .map(|(l, ip)| {
                    Ok(Endpoint {
                        ip,
                        server: Some(serve(l)?),
                    })
                })
                .collect::<Result<Vec<_>, DemoError>>()?;
            return Ok(Arc::new(Endpoints {
                port,
                list: Mutex::new(list),
            }));
        }
        Err(DemoError::Bind(
            "no port is free on 127.0.0.11, 127.0.0.12 and 127.0.0.13 at once".to_owned(),
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Endpoint>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops endpoint `n` (1-based): its port refuses connections from now on.
    fn stop(&self, n: usize) -> String {
        let mut list = self.lock();
        let Some(e) = list.get_mut(n.wrapping_sub(1)) else {
            return format!("no endpoint {n}: use 1, 2 or 3");
        };
        match e.server.take() {
            Some(task) => {
                task.abort();
                format!(
                    "endpoint {n} ({}) stopped: its health checks now fail",
                    e.ip
                )
            }
            None => format!("endpoint {n} ({}) is already stopped", e.ip),
        }
    }

    /// Starts endpoint `n` (1-based) again.
    fn start_one(&self, n: usize) -> String {
        let mut list = self.lock();
        let port = self.port;
        let Some(e) = list.get_mut(n.wrapping_sub(1)) else {
            return format!("no endpoint {n}: use 1, 2 or 3");
        };
        if e.server.is_some() {
            return format!("endpoint {n} ({}) is already running", e.ip);
        }
        match StdTcpListener::bind((e.ip, port))
            .map_err(|err| DemoError::Bind(err.to_string()))
            .and_then(serve)
        {
            Ok(task) => {
                e.server = Some(task);
                format!(
                    "endpoint {n} ({}) started: its health checks pass again",
                    e.ip
                )
            }
            Err(err) => format!("endpoint {n} ({}) cannot listen again: {err}", e.ip),
        }
    }

    fn running(&self) -> Vec<(Ipv4Addr, bool)> {
        self.lock()
            .iter()
            .map(|e| (e.ip, e.server.is_some()))
            .collect()
    }
}

/// Answers every connection with `200 ok` until aborted (which closes the listener).
fn serve(listener: StdTcpListener) -> Result<JoinHandle<()>, DemoError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| DemoError::Bind(e.to_string()))?;
    let listener = TcpListener::from_std(listener).map_err(|e| DemoError::Bind(e.to_string()))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                // The request head is small; one read is enough for a health check.
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                    )
                    .await;
            });
        }
    }))
}

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_dns_port() -> Result<u16, DemoError> {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| DemoError::Bind(format!("cannot bind UDP on 127.0.0.1: {e}")))?;
        let port = udp
            .local_addr()
            .map_err(|e| DemoError::Bind(e.to_string()))?
            .port();
        if StdTcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(DemoError::Bind(
        "no port is free for both UDP and TCP on 127.0.0.1".to_owned(),
    ))
}

fn free_tcp_port() -> Result<u16, DemoError> {
    StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DemoError::Bind(format!("cannot bind TCP on 127.0.0.1: {e}")))
}

/// The demo's configuration.
fn config_text(state_dir: &std::path::Path, dns_port: u16, http_port: u16, ep_port: u16) -> String {
    let endpoints: Vec<String> = ENDPOINTS.iter().map(|ip| format!("\"{ip}\"")).collect();
    format!(
        r#"# Written by `rrguard demo`.
[node]
id = "demo"
listen = "127.0.0.1:{http_port}"
state_dir = "{state}"

[defaults]
interval = "1s"
timeout = "500ms"
fall = 2
rise = 2
ttl = 5

[[writer]]
name = "dns"
type = "serve"
listen = ["127.0.0.1:{dns_port}"]

[[writer.zone]]
name = "{ZONE}"
ns = ["ns1.{ZONE}"]

[[service]]
fqdn = "{NAME}"
zone = "{ZONE}"
writer = "dns"
endpoints = [{endpoints}]
[service.check]
type = "http"
port = {ep_port}
path = "/health"
"#,
        state = state_dir.display(),
        endpoints = endpoints.join(", "),
    )
}

/// A private directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<Self, DemoError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("rrguard-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path)
            .map_err(|e| DemoError::Bind(format!("cannot create {}: {e}", path.display())))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the demo prints at start: the dig line, the status URL and what to try.
pub fn banner(dns_port: u16, http_port: u16) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rrguard demo: {NAME} is served by rrguard itself on 127.0.0.1 port {dns_port} (UDP and TCP),"
    );
    let _ = writeln!(
        out,
        "with three demo endpoints {}, {} and {} checked over HTTP every second.\n",
        ENDPOINTS[0], ENDPOINTS[1], ENDPOINTS[2]
    );
    let _ = writeln!(out, "  dig @127.0.0.1 -p {dns_port} {NAME} A +short");
    let _ = writeln!(out, "  curl http://127.0.0.1:{http_port}/api/v1/status\n");
    let _ = writeln!(
        out,
        "Try: `stop 2` (endpoint 2 fails; after 2 failed checks it leaves the answer), `start 2`,"
    );
    let _ = writeln!(
        out,
        "`stop 1` then `stop 3` (never below the last one: all_down = keep_all), `status`, `quit`."
    );
    out
}

/// Runs the demo until `quit`, end of input followed by SIGINT/SIGTERM, or a signal.
///
/// # Errors
/// [`DemoError`] when a port cannot be bound or the daemon fails.
pub async fn run(opts: DemoOptions) -> Result<(), DemoError> {
    let dir = TempDir::create()?;
    let endpoints = Endpoints::start()?;
    let dns_port = match opts.dns_port {
        0 => free_dns_port()?,
        p => p,
    };
    let http_port = match opts.http_port {
        0 => free_tcp_port()?,
        p => p,
    };
    let path: PathBuf = dir.path().join("rrguard.toml");
    let text = config_text(dir.path(), dns_port, http_port, endpoints.port);
    std::fs::write(&path, &text).map_err(|e| DemoError::Bind(e.to_string()))?;
    let config = config::parse(&path, &text).map_err(|e| DemoError::Daemon(e.to_string()))?;
    print!("{}", banner(dns_port, http_port));
    println!("> ");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let prompt = tokio::spawn(prompt(
        endpoints.clone(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, dns_port)),
        shutdown.clone(),
    ));
    let result = daemon::run_until_signal_or(
        path,
        config,
        RunOptions {
            dry_run: false,
            drain_grace: Duration::from_secs(2),
            ..RunOptions::default()
        },
        shutdown,
    )
    .await;
    prompt.abort();
    drop(dir);
    result.map_err(|e| DemoError::Daemon(e.to_string()))
}

/// Reads commands from stdin until `quit` (which cancels `shutdown`) or end of input.
async fn prompt(
    endpoints: Arc<Endpoints>,
    dns: SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            [] => continue,
            ["stop", n] => n.parse().map_or_else(
                |_| format!("not an endpoint number: {n}"),
                |n| endpoints.stop(n),
            ),
            ["start", n] => n.parse().map_or_else(
                |_| format!("not an endpoint number: {n}"),
                |n| endpoints.start_one(n),
            ),
            ["status"] => status(&endpoints, dns).await,
            ["quit"] | ["exit"] => {
                shutdown.cancel();
                "stopping".to_owned()
            }
            _ => "commands: stop N, start N, status, quit".to_owned(),
        };
        println!("{reply}\n> ");
    }
}

/// The endpoints and what DNS answers now.
async fn status(endpoints: &Endpoints, dns: SocketAddr) -> String {
    let mut out = String::new();
    for (i, (ip, running)) in endpoints.running().iter().enumerate() {
        let _ = writeln!(
            out,
            "endpoint {} {ip}: {}",
            i + 1,
            if *running { "running" } else { "stopped" }
        );
    }
    match query_a(dns, NAME).await {
        Ok(addrs) => {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            let _ = write!(out, "{NAME} A: {}", list.join(" "));
        }
        Err(e) => {
            let _ = write!(out, "{NAME} A: no answer ({e})");
        }
    }
    out
}

/// One UDP query for the A records of `name` at `server`.
async fn query_a(server: SocketAddr, name: &str) -> Result<Vec<IpAddr>, String> {
    use hickory_net::proto::op::{Message, Query};
    use hickory_net::proto::rr::{Name, RData, RecordType};
    use std::str::FromStr;
    let mut message = Message::query();
    message.metadata.id = 0x5eed;
    message.add_query(Query::query(
        Name::from_str(name).map_err(|e| e.to_string())?,
        RecordType::A,
    ));
    let bytes = message.to_vec().map_err(|e| e.to_string())?;
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| e.to_string())?;
    socket
        .send_to(&bytes, server)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let answer = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
    let mut out: Vec<IpAddr> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}
