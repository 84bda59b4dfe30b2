//! Self-registration: where a node finds its own address (`[service.self_register]`).
//!
//! A node that runs on the server it protects (as per-server failover daemons do) publishes its own
//! address under a service's name. [`AddressSource`] is the configured source, written
//! `interface:NAME`, `url:URL` (a service that answers with the caller's address as the body) or
//! `metadata:URL` (a cloud instance metadata URL: AWS IMDSv2 with its session token, GCP's
//! `Metadata-Flavor` and Azure's `Metadata` headers). [`discover`] asks it once; the daemon retries
//! with backoff ([`retry_delay`]) and never exits over a failed discovery. What the node then does with
//! the address is the planner's (`Policy::self_register` in [`crate::decide`]) and the daemon's.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// How long one discovery request may take.
pub const DISCOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait after a failed discovery; doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between discovery attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// Lifetime asked for an AWS IMDSv2 session token (s); one token serves one discovery.
const IMDS_TOKEN_TTL_S: u32 = 60;
/// Bytes of an answer body read at most (an address is ~40).
const MAX_BODY: usize = 4096;

/// Where this node's own address comes from, in its config spelling (`Display` prints it back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSource {
    /// `interface:NAME`: the first address of that network interface (of [`SelfRegisterConfig::family`];
    /// IPv4 first when unset; IPv6 link-local addresses are skipped).
    Interface(String),
    /// `url:URL`: an HTTP(S) GET whose body is the caller's address (e.g. `https://api.ipify.org`).
    Url(String),
    /// `metadata:URL`: a cloud metadata URL (e.g. AWS
    /// `http://169.254.169.254/latest/meta-data/public-ipv4`), asked with an IMDSv2 token when the
    /// server hands one out at `/latest/api/token`, and with the headers GCP and Azure require.
    Metadata(String),
}

impl FromStr for AddressSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| {
            format!(
                "{s:?} has no source: write \"interface:NAME\", \"url:URL\" or \"metadata:URL\""
            )
        })?;
        let rest = rest.trim();
        let url = |rest: &str| {
            if rest.starts_with("http://") || rest.starts_with("https://") {
                Ok(rest.to_owned())
            } else {
                Err(format!(
                    "{s:?}: {kind}: needs an http:// or https:// URL, got {rest:?}"
                ))
            }
        };
        match kind.trim() {
            "interface" if rest.is_empty() || rest.contains(['/', ' ']) => Err(format!(
                "{s:?}: interface: needs an interface name such as \"eth0\""
            )),
            "interface" => Ok(AddressSource::Interface(rest.to_owned())),
            "url" => url(rest).map(AddressSource::Url),
            "metadata" => url(rest).map(AddressSource::Metadata),
            other => Err(format!(
                "{s:?}: unknown source {other:?}; use \"interface:NAME\", \"url:URL\" or \"metadata:URL\""
            )),
        }
    }
}

impl fmt::Display for AddressSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressSource::Interface(n) => write!(f, "interface:{n}"),
            AddressSource::Url(u) => write!(f, "url:{u}"),
            AddressSource::Metadata(u) => write!(f, "metadata:{u}"),
        }
    }
}

/// An address family asked of the source (`family = "ipv4"` or `"ipv6"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressFamily {
    /// `"ipv4"`: an A record.
    Ipv4,
    /// `"ipv6"`: an AAAA record.
    Ipv6,
}

impl AddressFamily {
    fn matches(self, ip: &IpAddr) -> bool {
        match self {
            AddressFamily::Ipv4 => ip.is_ipv4(),
            AddressFamily::Ipv6 => ip.is_ipv6(),
        }
    }
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressFamily::Ipv4 => "ipv4",
            AddressFamily::Ipv6 => "ipv6",
        })
    }
}

/// `[service.self_register]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfRegisterConfig {
    /// Where the node's own address comes from.
    pub address: AddressSource,
    /// The family the address must have; `None`: any (an interface then gives its IPv4 address first).
    pub family: Option<AddressFamily>,
    /// Remove the node's own address on SIGTERM/SIGINT, unless it is the last record of the RRset.
    pub remove_on_shutdown: bool,
}

/// Why a discovery failed. Every variant is retried with backoff by the daemon; the message names
/// the source, what came back, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The interface does not exist on this host.
    #[error(
        "self_register address \"{from}\": no interface {name:?} on this host (it has: {available}); set address to \"interface:NAME\" with one of them"
    )]
    NoInterface {
        /// The configured source.
        from: AddressSource,
        /// The interface asked for.
        name: String,
        /// The interfaces that do exist, comma-separated.
        available: String,
    },
    /// The interface has no usable address of the family.
    #[error(
        "self_register address \"{from}\": interface {name:?} has no {wanted} address (it has: {found}); add one, or set family"
    )]
    NoAddress {
        /// The configured source.
        from: AddressSource,
        /// The interface.
        name: String,
        /// The family asked for (`ipv4`, `ipv6`, or `usable`).
        wanted: String,
        /// What the interface has, comma-separated.
        found: String,
    },
    /// The interfaces could not be listed.
    #[error("self_register address \"{from}\": cannot list the interfaces: {error}")]
    Interfaces {
        /// The configured source.
        from: AddressSource,
        /// The system error.
        error: std::io::Error,
    },
    /// The request did not get an answer (connection refused, timeout, TLS).
    #[error(
        "self_register address \"{from}\": request failed: {error}; check that the URL is reachable from this node"
    )]
    Request {
        /// The configured source.
        from: AddressSource,
        /// What failed, from the HTTP client (its source chain).
        error: String,
    },
    /// The URL answered with a status other than 2xx.
    #[error(
        "self_register address \"{from}\": HTTP {status} ({body:?}); the URL must answer 200 with the address as the body"
    )]
    Status {
        /// The configured source.
        from: AddressSource,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The body is not one IP address (or not of the asked family).
    #[error(
        "self_register address \"{from}\": the answer {body:?} is not {wanted}; the URL must answer with the caller's address alone as the body"
    )]
    NotAnAddress {
        /// The configured source.
        from: AddressSource,
        /// The start of the body.
        body: String,
        /// What was expected (`an IP address`, `an ipv4 address`).
        wanted: String,
    },
}

/// Asks `cfg`'s source for this node's address, once.
///
/// # Errors
/// [`DiscoverError`]: the source was missing, unreachable, or answered something else than one
/// address of the asked family.
pub async fn discover(cfg: &SelfRegisterConfig) -> Result<IpAddr, DiscoverError> {
    match &cfg.address {
        AddressSource::Interface(name) => from_interface(&cfg.address, name, cfg.family),
        AddressSource::Url(url) => from_url(&cfg.address, url, cfg.family, false).await,
        AddressSource::Metadata(url) => from_url(&cfg.address, url, cfg.family, true).await,
    }
}

/// The wait before discovery attempt `failures + 1`: [`RETRY_MIN`] doubling up to [`RETRY_MAX`].
pub fn retry_delay(failures: u32) -> Duration {
    RETRY_MIN
        .saturating_mul(1u32 << failures.min(16))
        .min(RETRY_MAX)
}

fn from_interface(
    source: &AddressSource,
    name: &str,
    family: Option<AddressFamily>,
) -> Result<IpAddr, DiscoverError> {
    let all = if_addrs::get_if_addrs().map_err(|error| DiscoverError::Interfaces {
        from: source.clone(),
        error,
    })?;
    let mine: Vec<IpAddr> = all
        .iter()
        .filter(|i| i.name == name)
        .map(|i| i.ip())
        .collect();
    if mine.is_empty() && !all.iter().any(|i| i.name == name) {
        let mut names: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        return Err(DiscoverError::NoInterface {
            from: source.clone(),
            name: name.to_owned(),
            available: names.join(", "),
        });
    }
    // fe80::/10 is valid on one link only: never publish it.
    let usable = |ip: &&IpAddr| match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        IpAddr::V4(_) => true,
    };
    let pick = match family {
        Some(f) => mine.iter().filter(usable).find(|ip| f.matches(ip)),
        None => mine
            .iter()
            .filter(usable)
            .find(|ip| ip.is_ipv4())
            .or_else(|| mine.iter().find(|ip| usable(ip))),
    };
    pick.copied().ok_or_else(|| DiscoverError::NoAddress {
        from: source.clone(),
        name: name.to_owned(),
        wanted: family.map_or_else(|| "usable".to_owned(), |f| f.to_string()),
        found: if mine.is_empty() {
            "none".to_owned()
        } else {
            mine.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

async fn from_url(
    source: &AddressSource,
    url: &str,
    family: Option<AddressFamily>,
    metadata: bool,
) -> Result<IpAddr, DiscoverError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let request_error = |e: reqwest::Error| DiscoverError::Request {
        from: source.clone(),
        error: error_chain(&e),
    };
    let client = reqwest::Client::builder()
        .timeout(DISCOVER_TIMEOUT)
        // A metadata service is link-local; an echo service must see this node, not a proxy.
        .no_proxy()
        .build()
        .map_err(request_error)?;
    let mut get = client.get(url);
    if metadata {
        if let Some(token) = imds_token(&client, url).await {
            get = get.header("X-aws-ec2-metadata-token", token);
        }
        get = get
            .header("Metadata-Flavor", "Google")
            .header("Metadata", "true");
    }
    let resp = get.send().await.map_err(request_error)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(request_error)?;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_BODY)]);
    let head: String = text.trim().chars().take(80).collect();
    if !status.is_success() {
        return Err(DiscoverError::Status {
            from: source.clone(),
            status: status.as_u16(),
            body: head,
        });
    }
    match text.trim().parse::<IpAddr>() {
        Ok(ip) if family.is_none_or(|f| f.matches(&ip)) => Ok(ip),
        _ => Err(DiscoverError::NotAnAddress {
            from: source.clone(),
            body: head,
            wanted: family
                .map_or_else(|| "an IP address".to_owned(), |f| format!("an {f} address")),
        }),
    }
}

/// An AWS IMDSv2 session token (`PUT /latest/api/token`), or `None` where the metadata service hands
/// none out (GCP, Azure, IMDSv1): the GET then goes without it.
async fn imds_token(client: &reqwest::Client, url: &str) -> Option<String> {
    let base = reqwest::Url::parse(url).ok()?;
    let token_url = base.join("/latest/api/token").ok()?;
    let resp = client
        .put(token_url)
        .header(
            "X-aws-ec2-metadata-token-ttl-seconds",
            IMDS_TOKEN_TTL_S.to_string(),
        )
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let token = resp.text().await.ok()?;
    let token = token.trim();
    (!token.is_empty() && token.len() < MAX_BODY).then(|| token.to_owned())
}

/// The error and its sources, `: `-joined (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests;
