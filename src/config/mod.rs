//! Configuration: the TOML file a user writes, parsed and validated into [`Config`].
//!
//! Contract: `load` either returns a fully validated [`Config`] (every reference resolved, every address
//! and secret parsed, every duration positive) or a [`ConfigError`] listing *all* problems found, each with
//! the `FILE:LINE:COL` of the offending value. Nothing binds a port or opens a socket before this succeeds.
//!
//! Parsing happens in two passes: serde turns the text into the raw structs of [`raw`] (catching syntax
//! errors, unknown keys and wrong types, with toml's own spans), then [`validate`] checks semantics and
//! reports errors by key path, which [`locate`] turns back into a position in the file.

mod api;
mod locate;
pub mod raw;
mod secret;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use api::{ApiSettings, MIN_API_TOKEN_LEN, RawApi, ReadAccess};
pub use validate::validate;

// The check types own their config (`crate::observe::check`); these keep the config paths working.
pub use crate::observe::check::http::{DEFAULT_HTTP_PATH, DEFAULT_HTTP_STATUS};
pub use crate::observe::check::{
    CheckConfig, DnsCheckConfig, ExecCheckConfig, HttpCheckConfig, IcmpCheckConfig, TcpCheckConfig,
};

// The writers own their config (`crate::act::rfc2136::config`); these keep the config paths working.
pub use crate::act::hosts::config::HostsConfig;
pub use crate::act::rfc2136::config::{
    DEFAULT_DNS_PORT, DEFAULT_DNS_TIMEOUT, Rfc2136Config, TsigAlgorithm, TsigConfig,
};
pub use crate::act::script::config::ScriptConfig;
pub use crate::act::serve::config::{ServeConfig, ZoneConfig as ServeZoneConfig};
pub use crate::act::webhook::config::WebhookConfig;
pub use crate::act::zonefile::config::ZonefileConfig;

// What plug-ins (checks, writers) need to validate their options and report problems by key path.
pub(crate) use locate::Seg;
pub(crate) use secret::{SecretKeys, SecretSource, SecretText, read_secret, read_secret_as};
pub(crate) use validate::{Errors, normalize_name, with};

/// Default path of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rrguard/rrguard.toml";
/// Default probe interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default hard timeout of one probe.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default number of consecutive failures that mark an endpoint down.
pub const DEFAULT_FALL: u32 = 3;
/// Default number of consecutive successes that mark an endpoint up.
pub const DEFAULT_RISE: u32 = 2;
/// `adaptive_fall` of a service that sets none (on).
pub const DEFAULT_ADAPTIVE_FALL: bool = true;
/// The shortest `interval` (as `confirm_interval`'s minimum): probing one endpoint more than 100
/// times a second measures rrguard more than the endpoint.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The shortest `timeout`: the resolution at which probes are timed.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// The longest `interval`: a probe a day.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The longest `timeout`: an hour (a plugin that runs longer is not a health check).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The largest `fall` and `rise`: a verdict after a thousand probes in a row.
pub const MAX_FALL_RISE: u32 = 1000;
/// The shortest `confirm_interval`, and the shortest default one.
pub const MIN_CONFIRM_INTERVAL: Duration = Duration::from_millis(10);
/// A service that sets no `confirm_interval` confirms at its `interval` divided by this (fast
/// confirmation is on by default; `"off"` turns it off).
pub const CONFIRM_DIVISOR: u32 = 10;
/// Default TTL of records rrguard adds.
pub const DEFAULT_TTL: u32 = 30;
/// Default minimum number of records a service keeps published.
pub const DEFAULT_MIN_HEALTHY: usize = 1;
/// Default period of the reconcile loop that repairs drift made by others.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
/// Default vote lifetime, in probe intervals (`[defaults].interval`).
pub const DEFAULT_VOTE_TTL_INTERVALS: u32 = 3;
/// Default largest clock difference accepted in peer messages.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Shortest accepted cluster secret, bytes.
pub const MIN_CLUSTER_SECRET_LEN: usize = 16;
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rrguard";
/// Default `[node].audit_max_age`: audit log records are kept 30 days.
pub const DEFAULT_AUDIT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default `[node].audit_max_size_mib`: 64 MiB of audit log records.
pub const DEFAULT_AUDIT_MAX_SIZE_MIB: u64 = 64;
/// Default `[node].max_probes_in_flight`. A probe in flight holds its future, its socket and, for
/// HTTP, hyper's buffers: about 32 KB (heaptrack, `benches/engine.rs`: 8 KB each for the write
/// buffer, the dispatch channel, the read buffer and the read that watches an idle connection),
/// so 512 bound that to ~16 MB. At 10,000 endpoints with a 1 s interval that lets probes take
/// 51 ms on average before they wait (loopback probes take ~1 ms), or 1,000 endpoints (10 %)
/// time out at the default 500 ms `timeout` while the others keep their schedule. Measured at
/// 10,000 HTTP endpoints on 2 CPUs (`docs/benchmarks.md`, "the default probe slots"): unbounded,
/// start-up put thousands of probes in flight at once (peak RSS 213 MB, probes timing out for
/// rrguard's own lateness). With a new connection per probe, where the slots fill whenever the
/// machine is behind: 98–103 MB at 1,024, 88–92 MB at 512, at the same or a higher probe rate.
pub const DEFAULT_MAX_PROBES_IN_FLIGHT: usize = 512;
/// Shortest `[node].audit_max_age`.
pub const MIN_AUDIT_MAX_AGE: Duration = Duration::from_secs(60);

/// A fully validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// This node.
    pub node: NodeConfig,
    /// Reconcile period shared by all services.
    pub reconcile_interval: Duration,
    /// DNS back ends, by name.
    pub writers: Vec<WriterConfig>,
    /// Managed names.
    pub services: Vec<ServiceConfig>,
    /// Several monitor nodes; `None` for a single node.
    pub cluster: Option<ClusterSettings>,
    /// Fleet naming (`[naming]`), when configured.
    pub naming: Option<crate::naming::config::NamingConfig>,
    /// `[api]`: who may use the HTTP API.
    pub api: ApiSettings,
    /// `[[alert]]`: where events are sent.
    pub alerts: Vec<crate::expose::alert::AlertConfig>,
    /// `[metrics]`: the StatsD push.
    pub metrics: crate::expose::statsd::MetricsConfig,
    /// Things that are valid but will not do what they say, each at its place: `[service.select]
    /// weights` on a writer without weighted records. `check-config` prints them, the daemon logs
    /// each once at start and at every reload.
    pub warnings: Vec<Problem>,
}

impl Config {
    /// The writers a service refers to, in its order. Validation guarantees they exist.
    pub fn writers_of(&self, service: &ServiceConfig) -> Vec<&WriterConfig> {
        service
            .writers
            .iter()
            .map(|name| {
                self.writers
                    .iter()
                    .find(|w| &w.name == name)
                    .expect("validated: every service names existing writers")
            })
            .collect()
    }
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Node id, unique in a cluster.
    pub id: String,
    /// HTTP listen address (peers, status API). `None`: no HTTP server (single node without `listen`).
    pub listen: Option<SocketAddr>,
    /// Where durable state lives: the audit log (`audit.redb`), served zones.
    pub state_dir: PathBuf,
    /// Audit log records older than this are dropped.
    pub audit_max_age: Duration,
    /// Audit log records beyond this many bytes are dropped, oldest first.
    pub audit_max_bytes: u64,
    /// At most this many probes run at once on this node; a probe waits for a free slot before it
    /// starts (its timeout runs from then). Read at start; a reload keeps the running value.
    pub max_probes_in_flight: usize,
}

/// What to publish when fewer than `min_healthy` endpoints are healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllDownPolicy {
    /// Publish every configured endpoint (fail open). The default.
    #[default]
    KeepAll,
    /// Keep what is published now, plus any healthy endpoint.
    KeepLast,
    /// Publish only the healthy endpoints, possibly none.
    FailClosed,
}

impl fmt::Display for AllDownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllDownPolicy::KeepAll => "keep_all",
            AllDownPolicy::KeepLast => "keep_last",
            AllDownPolicy::FailClosed => "fail_closed",
        })
    }
}

/// `[[writer]]`: a DNS back end.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterConfig {
    /// Name services refer to.
    pub name: String,
    /// Back-end specific settings.
    pub kind: WriterKind,
}

/// The back ends, chosen by `type`. Each writer owns its config beside its code (`crate::act::*`); a
/// new writer adds a variant here and in `raw::RawWriter`, and an arm to `crate::act::build`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WriterKind {
    /// RFC 2136 dynamic UPDATE signed with TSIG.
    Rfc2136(Rfc2136Config),
    /// rrguard's own authoritative DNS server.
    Serve(ServeConfig),
    /// A user command per operation, the change as JSON on stdin.
    Script(ScriptConfig),
    /// An HMAC-signed HTTP POST per operation, the change as JSON body.
    Webhook(WebhookConfig),
    /// Amazon Route 53's API, signed with AWS Signature Version 4.
    Route53(crate::act::route53::config::Route53Config),
    /// Cloudflare's API v4, with an API token.
    Cloudflare(crate::act::cloudflare::config::CloudflareConfig),
    /// DigitalOcean's Domain Records API, with an API token.
    DigitalOcean(crate::act::digitalocean::config::DigitalOceanConfig),
    /// Dynu's API, with an API key.
    Dynu(crate::act::dynu::config::DynuConfig),
    /// A zone file rendered whole, checked and reloaded.
    Zonefile(ZonefileConfig),
    /// rrguard's section of a hosts file.
    Hosts(HostsConfig),
}

impl WriterKind {
    /// The `type` of the `[[writer]]` section, as written in the configuration.
    pub fn type_name(&self) -> &'static str {
        match self {
            WriterKind::Rfc2136(_) => "rfc2136",
            WriterKind::Serve(_) => "serve",
            WriterKind::Script(_) => "script",
            WriterKind::Webhook(_) => "webhook",
            WriterKind::Route53(_) => "route53",
            WriterKind::Cloudflare(_) => "cloudflare",
            WriterKind::DigitalOcean(_) => "digitalocean",
            WriterKind::Dynu(_) => "dynu",
            WriterKind::Zonefile(_) => "zonefile",
            WriterKind::Hosts(_) => "hosts",
        }
    }
}

/// `[[service]]`: one DNS name whose A/AAAA records rrguard manages.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Fully qualified name, lower case, with trailing dot.
    pub fqdn: String,
    /// Zone apex, lower case, with trailing dot.
    pub zone: String,
    /// Names of its writers (`writer = "a"` or `writers = ["a", "b"]`), at least one, each once.
    /// Each is reconciled on its own.
    pub writers: Vec<String>,
    /// TTL of records added.
    pub ttl: u32,
    /// Configured endpoints, in file order, no duplicates.
    pub endpoints: Vec<IpAddr>,
    /// Probe interval.
    pub interval: Duration,
    /// Hard timeout of one probe.
    pub timeout: Duration,
    /// Failures in a row that mark an endpoint down.
    pub fall: u32,
    /// Successes in a row that mark an endpoint up.
    pub rise: u32,
    /// Probe interval while a verdict change is being confirmed (fast confirmation); `None`: off
    /// (`"off"`). Default: `interval` / [`CONFIRM_DIVISOR`], at least [`MIN_CONFIRM_INTERVAL`].
    pub confirm_interval: Option<Duration>,
    /// Loss-aware fall (`adaptive_fall`, default [`DEFAULT_ADAPTIVE_FALL`]): an up endpoint whose
    /// recent probes failed now and then needs more than `fall` failures in a row, up to twice
    /// `fall` ([`crate::observe::health`]).
    pub adaptive_fall: bool,
    /// Fewest records kept published.
    pub min_healthy: usize,
    /// Policy below `min_healthy`.
    pub all_down: AllDownPolicy,
    /// Remove A/AAAA records of the name that are not configured endpoints.
    pub remove_unlisted: bool,
    /// Quorum override (cluster only).
    pub quorum: Option<crate::agree::Quorum>,
    /// Selection and change-safety policies (`[service.damping]`, ...); all off by default.
    pub policies: crate::decide::Policies,
    /// `[service.self_register]`: the service's one endpoint is this node's own address, discovered
    /// at start and on reload (`endpoints` is then empty in the file and filled by the daemon).
    pub self_register: Option<crate::observe::selfaddr::SelfRegisterConfig>,
    /// How endpoints are probed.
    pub check: CheckConfig,
}

/// `[cluster]`, validated.
#[derive(Clone, PartialEq)]
pub struct ClusterSettings {
    /// Shared HMAC secret.
    pub secret: Vec<u8>,
    /// Default quorum.
    pub quorum: crate::agree::Quorum,
    /// Lifetime of a peer's votes after its last message.
    pub vote_ttl: Duration,
    /// Period of full snapshots to every peer.
    pub heartbeat: Duration,
    /// Largest accepted clock difference.
    pub max_clock_skew: Duration,
    /// Self-check targets; empty: no self-check.
    pub self_check: Vec<SocketAddr>,
    /// The other nodes.
    pub peers: Vec<PeerConfig>,
}

impl fmt::Debug for ClusterSettings {
    // Never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("quorum", &self.quorum)
            .field("vote_ttl", &self.vote_ttl)
            .field("heartbeat", &self.heartbeat)
            .field("self_check", &self.self_check)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// `[[cluster.peers]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Node id.
    pub id: String,
    /// Base URL, without trailing slash.
    pub url: String,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub col: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. Not retryable without operator action.
    #[error("{path}: cannot read configuration: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid configuration. Not retryable without operator action.
    #[error("{}", render_problems(.path, .problems))]
    Invalid {
        /// The path.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}", path.display(), p.line, p.col, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates the configuration at `path`.
///
/// # Errors
/// [`ConfigError::Read`] if the file cannot be read, [`ConfigError::Invalid`] listing every problem.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Reads a file the configuration names (a reference body, a certificate, a secret) when it is
/// loaded: only a regular file of at most `max_bytes`, so that a device (`/dev/zero`), a FIFO or a
/// huge file can neither hang the load nor take the memory.
///
/// # Errors
/// The open or read error; [`std::io::ErrorKind::InvalidInput`] for something other than a regular
/// file or a file larger than `max_bytes`, with a message saying so.
pub fn read_bounded(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let not_a_file = || {
        invalid("not a regular file (a directory, device, FIFO or socket); name a file".to_owned())
    };
    // Looked at before it is opened: opening a FIFO waits for a writer.
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_a_file());
    }
    // Non-blocking, should it have become a FIFO since; a regular file reads the same.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_a_file());
    }
    let too_large = |n: u64| {
        invalid(format!(
            "{n} bytes, more than the {max_bytes} bytes allowed here"
        ))
    };
    if meta.len() > max_bytes {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow while it is read.
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Largest certificate, key or secret file read with the configuration, bytes (1 MiB: a PEM chain
/// or a secret is a few KiB).
pub const MAX_SMALL_FILE_BYTES: u64 = 1024 * 1024;

/// Parses and validates configuration text; `path` is used for messages and relative `secret_file`s.
///
/// # Errors
/// [`ConfigError::Invalid`] listing every problem.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems,
    };
    let raw: raw::RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let at = e
                .span()
                .map_or(0, |s| locate::refine_span(text, s, e.message()));
            let (line, col) = e.span().map_or((0, 0), |_| locate::line_col(text, at));
            let message = e.message().trim_end().replace('\n', " ");
            if let Some(span) = e.span()
                && let Some(problems) = every_unknown_key(text, &span, at, &message)
            {
                return Err(invalid(problems));
            }
            return Err(invalid(vec![Problem {
                line,
                col,
                message: humanize(&message, text, at),
            }]));
        }
    };
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let located = |e: validate::PathError| {
        let (line, col) = locate::find(text, &e.path);
        Problem {
            line,
            col,
            message: e.message,
        }
    };
    let mut config = validate(raw, base_dir, path).map_err(|errors| {
        let mut problems: Vec<Problem> = errors
            .into_iter()
            .map(|e| {
                let (line, col) = locate::find(text, &e.path);
                Problem {
                    line,
                    col,
                    message: e.message,
                }
            })
            .collect();
        problems.sort_by_key(|p| (p.line, p.col));
        invalid(problems)
    })?;
    config.warnings = validate::warnings(&config)
        .into_iter()
        .map(located)
        .collect();
    Ok(config)
}

/// For toml's `unknown field `k`, expected ...` (the first unknown key it met, at `at`): one problem
/// per unknown key of that table, in file order, each with the same list of keys expected. `None`
/// for any other message, or a table that cannot be told apart.
fn every_unknown_key(
    text: &str,
    span: &std::ops::Range<usize>,
    at: usize,
    message: &str,
) -> Option<Vec<Problem>> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, expected) = rest.split_once('`')?;
    let known: Vec<&str> = expected
        .split_once("expected ")
        .map_or("", |(_, list)| list)
        .split('`')
        .skip(1)
        .step_by(2)
        .collect();
    let unknown = locate::unknown_keys(text, span, at, key, &known);
    if !unknown.iter().any(|(_, k)| k == key) {
        return None;
    }
    Some(
        unknown
            .into_iter()
            .map(|(offset, k)| {
                let (line, col) = locate::line_col(text, offset);
                Problem {
                    line,
                    col,
                    message: humanize(&format!("unknown field `{k}`{expected}"), text, offset),
                }
            })
            .collect(),
    )
}

/// Rewords serde's and toml's messages in the terms of the file: what was written, what is expected,
/// and the fix (`did you mean [[service]]?`, `write the number without quotes`). No Rust type name
/// (`u32`, `usize`, `f64`, `struct RawTsig`) is left in: a number's type is worded as its range.
fn humanize(message: &str, text: &str, at: usize) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        return match closest(field, &candidates) {
            Some(near) => {
                // A table header ([[services]]) gets the header back as the suggestion.
                let line_start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
                let line = text[line_start..].lines().next().unwrap_or("").trim_start();
                let suggestion = if line.starts_with("[[") {
                    format!("[[{near}]]")
                } else if line.starts_with('[') {
                    format!("[{near}]")
                } else {
                    format!("`{near}`")
                };
                format!("{message}; did you mean {suggestion}?")
            }
            None => message.to_owned(),
        };
    }
    // serde reads a struct from an array too, and then counts its elements.
    if let Some(rest) = message.strip_prefix("invalid length ")
        && rest
            .split_once(", expected ")
            .is_some_and(|(_, expected)| expected.starts_with("struct "))
    {
        return "expected a table, found a list".to_owned();
    }
    let (rest, invalid_value) = match message.strip_prefix("invalid type: ") {
        Some(rest) => (rest, false),
        None => match message.strip_prefix("invalid value: ") {
            Some(rest) => (rest, true),
            None => return message.to_owned(),
        },
    };
    // The found value may be a string holding ", expected ": the expected part is the last.
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let found = Found::parse(found);
    let expected = Expected::parse(expected);
    if invalid_value && matches!(expected, Expected::Other(_)) {
        // `invalid value` with an expectation of the code's own wording: already for a person.
        return message.to_owned();
    }
    // Beyond 64 bits where a number (or, in a buffered table, anything) goes: the size is the fault.
    if let Found::Integer(n) = found
        && n.parse::<i64>().is_err()
        && (matches!(expected, Expected::Number | Expected::Other(_))
            || matches!(expected, Expected::Whole { max, .. } if max >= i128::from(i64::MAX)))
    {
        return format!(
            "integer `{n}` is too large: whole numbers in TOML go from {} to {}",
            i64::MIN,
            i64::MAX
        );
    }
    format!(
        "expected {}, found {}{}",
        expected.words(&found),
        found.words(),
        fix(&found, &expected)
    )
}

/// What serde says it found, parsed enough to word the message and choose the fix.
enum Found<'a> {
    /// A whole number as written (without serde's ` as i128` for one beyond 64 bits).
    Integer(&'a str),
    /// A string: its contents as serde quotes them (`"8080"` gives `8080`).
    Text(&'a str),
    /// Anything else, as serde words it.
    Other(&'a str),
}

impl<'a> Found<'a> {
    fn parse(found: &'a str) -> Found<'a> {
        if let Some(rest) = found.strip_prefix("integer `")
            && let Some((n, _)) = rest.split_once('`')
        {
            return Found::Integer(n);
        }
        if let Some(inner) = found
            .strip_prefix("string \"")
            .and_then(|s| s.strip_suffix('"'))
        {
            return Found::Text(inner);
        }
        Found::Other(found)
    }

    fn words(&self) -> String {
        match self {
            Found::Integer(n) => format!("integer `{n}`"),
            Found::Text(s) => format!("string \"{s}\""),
            Found::Other("sequence") => "a list".to_owned(),
            Found::Other("map") => "a table".to_owned(),
            Found::Other(other) => (*other).to_owned(),
        }
    }
}

/// What serde says it expected, in the terms of the file.
enum Expected<'a> {
    /// A whole number of a Rust integer type: its range.
    Whole { min: i128, max: i128 },
    /// A float.
    Number,
    /// `true` or `false`.
    Bool,
    /// A string.
    Text,
    /// `[...]`.
    List,
    /// A table (a struct or a map).
    Table,
    /// Anything else, as the code words it.
    Other(&'a str),
}

impl<'a> Expected<'a> {
    fn parse(expected: &'a str) -> Expected<'a> {
        let whole = |min: i128, max: i128| Expected::Whole { min, max };
        match expected {
            "u8" => whole(0, u8::MAX.into()),
            "u16" => whole(0, u16::MAX.into()),
            "u32" => whole(0, u32::MAX.into()),
            "u64" => whole(0, u64::MAX.into()),
            "usize" => whole(0, usize::MAX as i128),
            "i8" => whole(i8::MIN.into(), i8::MAX.into()),
            "i16" => whole(i16::MIN.into(), i16::MAX.into()),
            "i32" => whole(i32::MIN.into(), i32::MAX.into()),
            "i64" => whole(i64::MIN.into(), i64::MAX.into()),
            "isize" => whole(isize::MIN as i128, isize::MAX as i128),
            "f32" | "f64" => Expected::Number,
            "a boolean" => Expected::Bool,
            "a string" | "a borrowed string" => Expected::Text,
            "a sequence" => Expected::List,
            "a map" => Expected::Table,
            other if other.starts_with("struct ") => Expected::Table,
            // A count read wide whose range the code states (`raw::opt_count`).
            other => other
                .strip_prefix("a whole number from ")
                .and_then(|r| r.split_once(" to "))
                .and_then(|(min, max)| Some(whole(min.parse().ok()?, max.parse().ok()?)))
                .unwrap_or(Expected::Other(other)),
        }
    }

    /// The expectation in words; a range is stated in full where the value found is outside the
    /// short wording (`of 0 or more` does not tell why 99999999999999999999 is refused).
    fn words(&self, found: &Found) -> String {
        match *self {
            Expected::Whole { min, max } => {
                let n = match found {
                    Found::Integer(n) => n.parse::<i128>().ok(),
                    _ => None,
                };
                let too_large = n.is_some_and(|n| n > max);
                let too_small = n.is_some_and(|n| n < min);
                if min == 0 && max >= i128::from(u64::MAX) && !too_large {
                    "a whole number of 0 or more".to_owned()
                } else if min <= i128::from(i64::MIN)
                    && max >= i128::from(i64::MAX)
                    && !too_large
                    && !too_small
                {
                    "a whole number".to_owned()
                } else {
                    format!("a whole number from {min} to {max}")
                }
            }
            Expected::Number => "a number".to_owned(),
            Expected::Bool => "true or false".to_owned(),
            Expected::Text => "a string".to_owned(),
            Expected::List => "a list".to_owned(),
            Expected::Table => "a table".to_owned(),
            Expected::Other(other) => other.to_owned(),
        }
    }
}

/// The fix, when there is one: quotes to drop only if what they hold would be accepted without
/// them; quotes to add only where a string is expected.
fn fix(found: &Found, expected: &Expected) -> String {
    match (found, expected) {
        (Found::Text(s), Expected::Whole { min, max }) => match s.trim().parse::<i128>() {
            Ok(n) if (*min..=*max).contains(&n) => "; write the number without quotes".to_owned(),
            _ => String::new(),
        },
        (Found::Text(s), Expected::Number) => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => "; write the number without quotes".to_owned(),
            _ => String::new(),
        },
        (Found::Text(s), Expected::Bool) => match s.trim().to_ascii_lowercase().as_str() {
            b @ ("true" | "false") if s.trim() == b => format!("; write {b} without quotes"),
            "true" | "yes" | "on" => "; write true, without quotes".to_owned(),
            "false" | "no" | "off" => "; write false, without quotes".to_owned(),
            _ => String::new(),
        },
        (Found::Integer(_), Expected::Text) => "; put the value in quotes".to_owned(),
        (Found::Other(f), Expected::Text) if f.starts_with("floating point") => {
            "; put the value in quotes".to_owned()
        }
        _ => String::new(),
    }
}

/// The candidate nearest to `word` (a plural, a typo of one or two letters), if one is near enough.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut prev = row[0];
            row[0] = i;
            for j in 1..=b.len() {
                let cur = row[j];
                row[j] = (row[j] + 1)
                    .min(row[j - 1] + 1)
                    .min(prev + usize::from(a[i - 1] != b[j - 1]));
                prev = cur;
            }
        }
        row[b.len()]
    };
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d <= 2 && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
