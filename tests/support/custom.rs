//! Knot or BIND with a configuration written by the test: views, several zones, a secondary, options
//! such as `max-records-per-type`. The harness only picks the port, writes the files, starts the
//! server on 127.0.0.1 and waits until it answers; the test supplies the configuration text.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::dns::{DnsKind, dig};
use super::util::{append_file, claim_port, find_program, random_secret_b64, release, terminate};

/// What a configuration is written from.
pub struct Site<'a> {
    /// The server's directory (zone files live here, by the names given to [`CustomDns::start`]).
    pub dir: &'a Path,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The TSIG secret, base64 (hmac-sha256).
    pub secret_b64: &'a str,
}

/// A Knot or BIND server running a test-written configuration. Dropping it kills the server.
pub struct CustomDns {
    /// Which implementation.
    pub kind: DnsKind,
    /// `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    /// The random TSIG secret handed to the configuration, base64.
    pub secret_b64: String,
    log_path: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

impl CustomDns {
    /// Writes `files` (name, text) into a fresh directory, the configuration `config` returns
    /// (`knot.conf` or `named.conf`), starts the server and waits until `ready_name` has an SOA.
    /// `secret_b64` reuses a key (a secondary and its primary share one); `None` makes a fresh one.
    pub fn start(
        kind: DnsKind,
        files: &[(&str, String)],
        secret_b64: Option<&str>,
        ready_name: &str,
        config: &dyn Fn(&Site<'_>) -> String,
    ) -> CustomDns {
        let program = find_program(match kind {
            DnsKind::Knot => "knotd",
            DnsKind::Bind => "named",
        })
        .expect("knotd/named not found: install knot and bind9 (scripts/test does this)");
        let secret = secret_b64.map_or_else(random_secret_b64, str::to_owned);
        for _ in 0..10 {
            let dir = tempfile::Builder::new()
                .prefix("rrguard-custom-dns-")
                .tempdir()
                .expect("temporary directory");
            for sub in ["run", "db"] {
                fs::create_dir(dir.path().join(sub)).unwrap();
            }
            for (name, text) in files {
                fs::write(dir.path().join(name), text).unwrap();
            }
            let log_path = dir.path().join("server.log");
            let port = free_port();
            let text = config(&Site {
                dir: dir.path(),
                port,
                secret_b64: &secret,
            });
            let conf = dir.path().join(match kind {
                DnsKind::Knot => "knot.conf",
                DnsKind::Bind => "named.conf",
            });
            fs::write(&conf, text).unwrap();
            let log = append_file(&log_path);
            let mut cmd = Command::new(&program);
            cmd.arg("-c").arg(&conf);
            if kind == DnsKind::Bind {
                cmd.args(["-g", "-n", "1"]);
            }
            let child = cmd
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn DNS server");
            let mut server = CustomDns {
                kind,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                secret_b64: secret.clone(),
                log_path: log_path.clone(),
                child: Some(child),
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let exited = server
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                let log = server.log().to_lowercase();
                if log.contains("address in use") || log.contains("could not listen") {
                    break;
                }
                if exited.is_some() || Instant::now() > deadline {
                    panic!("{kind:?} did not start\n--- log ---\n{}", server.log());
                }
                if dig(server.addr, ready_name, "SOA").is_ok_and(|a| !a.is_empty()) {
                    return server;
                }
                thread::sleep(Duration::from_millis(20));
            }
            // Lost a port race: dropping the server kills it; try another port.
            eprintln!("{kind:?} lost its port, retrying");
        }
        panic!("{kind:?}: lost the race for a free port 10 times")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `dig +short`-like unsigned answer over TCP; panics on errors.
    pub fn query(&self, name: &str, rtype: &str) -> Vec<String> {
        dig(self.addr, name, rtype)
            .unwrap_or_else(|e| panic!("{e}\n--- server log ---\n{}", self.log()))
    }
}

impl Drop for CustomDns {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
    }
}

/// A port free for TCP and UDP on 127.0.0.1, never handed out before by this process.
fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if let (Ok(udp), true) = (
            std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)),
            claim_port(port),
        ) {
            release(tcp);
            release(udp);
            return port;
        }
    }
    panic!("no free port");
}

/// A zone file for `origin` (no trailing dot) with SOA and `NS ns1.example.test.`, then `body`.
pub fn zone_text(origin: &str, body: &str) -> String {
    format!(
        "$ORIGIN {origin}.\n$TTL 60\n@ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n@ NS ns1.example.test.\n{body}\n"
    )
}
