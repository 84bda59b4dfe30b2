//! The shape many end-to-end tests start from: one service, `www.example.test`, whose endpoints
//! are real HTTP servers on loopback addresses, published by an `rrguard run` through RFC 2136 to a
//! real Knot, with `[node].listen` on a free port and `state_dir` in a temporary directory.
//!
//! [`KnotSetup::builder`] writes the configuration; the test starts the daemon when it is ready
//! (after preparing `state_dir`, say) and as often as it likes on the same files.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::{Daemon, DnsKind, DnsServer, HttpEndpoints, free_tcp_port};

/// A Knot serving `www.example.test` with every endpoint, the endpoints' HTTP servers, and the
/// daemon's configuration file. Everything is removed or stopped on drop.
pub struct KnotSetup {
    /// The Knot the daemon writes to.
    pub dns: DnsServer,
    /// The endpoints' HTTP servers (`/health`), stoppable one address at a time.
    pub http: HttpEndpoints,
    /// The daemon's HTTP port (`[node].listen` on 127.0.0.1).
    pub port: u16,
    /// The configuration file.
    pub config: PathBuf,
    /// Holds the configuration, the TSIG secret and `state/` (the daemon's `state_dir`).
    pub dir: TempDir,
}

/// Builds a [`KnotSetup`]: the node id, the endpoints and the `[defaults]` table.
pub struct KnotSetupBuilder {
    node: String,
    endpoints: Vec<IpAddr>,
    defaults: Vec<(String, String)>,
}

impl KnotSetup {
    /// A setup for node `node` with endpoints 127.0.0.2 and 127.0.0.3, probed every 100 ms
    /// (timeout 80 ms), `fall = rise = 2`, TTL 60 s.
    pub fn builder(node: &str) -> KnotSetupBuilder {
        KnotSetupBuilder {
            node: node.to_owned(),
            endpoints: ["127.0.0.2", "127.0.0.3"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            defaults: [
                ("interval", "\"100ms\""),
                ("timeout", "\"80ms\""),
                ("fall", "2"),
                ("rise", "2"),
                ("ttl", "60"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        }
    }

    /// The daemon's `state_dir` (not created: the daemon creates it).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The configuration file as a string, for command lines.
    pub fn config_arg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// Starts `rrguard run -c CONFIG`.
    pub fn start_daemon(&self) -> Daemon {
        Daemon::start(&["run", "-c", self.config_arg()])
    }

    /// `GET path` from the daemon's HTTP server: the status code and the JSON body; `None` while
    /// it does not answer or the body is not JSON.
    pub fn get(&self, path: &str) -> Option<(u16, Value)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        let code = head.get(9..12)?.parse().ok()?;
        Some((code, serde_json::from_str(body).ok()?))
    }

    /// Like [`KnotSetup::get`], the body of a 200 answer only.
    pub fn get_ok(&self, path: &str) -> Option<Value> {
        self.get(path)
            .and_then(|(code, v)| (code == 200).then_some(v))
    }
}

impl KnotSetupBuilder {
    /// The endpoints (loopback addresses), in place of 127.0.0.2 and 127.0.0.3.
    pub fn endpoints(mut self, endpoints: &[&str]) -> Self {
        self.endpoints = endpoints.iter().map(|s| s.parse().unwrap()).collect();
        self
    }

    /// Sets `key = value` in `[defaults]` (`value` as TOML: `"\"50ms\""`, `"1"`).
    pub fn default(mut self, key: &str, value: &str) -> Self {
        match self.defaults.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_owned(),
            None => self.defaults.push((key.to_owned(), value.to_owned())),
        }
        self
    }

    /// Starts Knot and the HTTP endpoints and writes the configuration; the daemon is not started.
    pub fn build(self) -> KnotSetup {
        let zone: String = self
            .endpoints
            .iter()
            .map(|ip| format!("www A {ip}\n"))
            .collect();
        let dns = DnsServer::start(DnsKind::Knot, &zone);
        let http = HttpEndpoints::start(&self.endpoints);
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dns.write_secret_file(dir.path());
        let port = free_tcp_port("127.0.0.1".parse().unwrap());
        let defaults: String = self
            .defaults
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        let endpoints = self
            .endpoints
            .iter()
            .map(|ip| format!("\"{ip}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = dir.path().join("rrguard.toml");
        std::fs::write(
            &config,
            format!(
                r#"[node]
id = "{node}"
listen = "127.0.0.1:{port}"
state_dir = "{state}"

[defaults]
{defaults}
[[writer]]
name = "primary"
type = "rfc2136"
server = "{server}"
timeout = "2s"
tsig = {{ name = "{key}", algorithm = "hmac-sha256", secret_file = "{secret}" }}

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "primary"
endpoints = [{endpoints}]
[service.check]
type = "http"
port = {hport}
path = "/health"
"#,
                node = self.node,
                state = dir.path().join("state").display(),
                server = dns.addr,
                key = dns.key_name,
                secret = secret_file.display(),
                hport = http.port,
            ),
        )
        .unwrap();
        KnotSetup {
            dns,
            http,
            port,
            config,
            dir,
        }
    }
}
