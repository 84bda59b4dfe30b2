//! The `rrguard` binary: parse arguments, set up logging, run the library, map errors to exit codes.

// One reviewed exception: `limit_malloc_arenas`.
#![deny(unsafe_code)]

mod overrides_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rrguard::config::{self, ConfigError};
use rrguard::daemon::{self, RunOptions};
use rrguard::expose::client;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Exit code for bad usage or configuration (sysexits EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Exit code for runtime failures.
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "rrguard",
    version,
    about = "Keeps DNS names pointing only at healthy servers",
    after_help = "Examples:\n  \
        rrguard demo                            # try it: nothing else needed\n  \
        rrguard check-config -c /etc/rrguard/rrguard.toml\n  \
        rrguard plan -c rrguard.toml            # probe once, print what would change\n  \
        rrguard run -c rrguard.toml --dry-run   # run, log the plans, write nothing\n  \
        rrguard run                             # run with /etc/rrguard/rrguard.toml\n  \
        rrguard status                          # ask the running node: endpoints, why in or out\n  \
        rrguard status www.example.com 192.0.2.10  # one endpoint: latency over 1h, transitions\n  \
        rrguard events --since 1h               # its events and DNS writes\n  \
        rrguard nagios www.example.com          # Monitoring Plugins check\n  \
        rrguard drain 192.0.2.10 --for 1h --comment \"kernel upgrade\"\n  \
        rrguard undrain 192.0.2.10\n\n\
        Signals: SIGTERM/SIGINT finish in-flight writes and exit 0; SIGHUP reloads the configuration.\n\
        Exit codes: 0 ok, 1 runtime failure (or the node cannot be reached, or fails), 64 bad usage or\n\
        configuration (or the node refused the request: bad input, unknown endpoint), 77 the API\n\
        token is missing or wrong, or changes are off on the node."
)]
struct Cli {
    /// Log format: `auto` is journald under systemd (when its socket exists), text otherwise.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
    Journald,
}

#[derive(Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(short, long, env = "RRGUARD_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

/// Which running node the client commands ask.
#[derive(Args)]
struct NodeArg {
    /// Configuration file of the node to ask (its `[node].listen`).
    #[arg(short, long, env = "RRGUARD_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Ask the node at this URL instead (http://HOST:PORT).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// File holding the API token, for a node with [api] read = "token" [default: the
    /// configuration's [api] token_file or token]
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl NodeArg {
    /// The node to ask, with the token reads may need: `--token-file`, else the configuration's
    /// `[api]` token (with `--url`, only if the configuration can be read: a public node needs
    /// none).
    fn node(&self) -> Result<client::Node, ClientFailure> {
        let from_file = self
            .token_file
            .as_deref()
            .map(overrides_cli::read_token_file)
            .transpose()
            .map_err(ClientFailure::usage)?;
        let (node, from_config) = if let Some(url) = &self.url {
            let token = match &from_file {
                Some(_) => None,
                None => config::load(&self.config)
                    .ok()
                    .and_then(|c| overrides_cli::api_token(&c)),
            };
            (client::Node::from_url(url)?, token)
        } else {
            let c = config::load(&self.config).map_err(|e| ClientFailure::usage(e.to_string()))?;
            let node = c.node.listen.map(client::Node::at).ok_or_else(|| {
                ClientFailure::usage(format!(
                    "{}: [node].listen is not set, so the node serves no API; set it, or pass --url",
                    self.config.display()
                ))
            })?;
            (node, overrides_cli::api_token(&c))
        };
        match from_file.or(from_config) {
            Some(token) => Ok(node.with_token(token)?),
            None => Ok(node),
        }
    }
}

/// Why a client command (`status`, `events`) failed, with the exit code `--help` promises for it.
struct ClientFailure {
    /// [`EXIT_USAGE`] when the node refused the request (4xx: bad input, unknown service or
    /// endpoint) or the command cannot find the node (bad `--url`, configuration); the
    /// `overrides_cli::EXIT_NOPERM` for a missing or wrong token; [`EXIT_FAILURE`] when the node
    /// cannot be reached, fails (5xx) or answers something else.
    code: u8,
    message: String,
}

impl ClientFailure {
    fn usage(message: String) -> Self {
        ClientFailure {
            code: EXIT_USAGE,
            message,
        }
    }
}

impl From<client::ClientError> for ClientFailure {
    fn from(e: client::ClientError) -> Self {
        let code = match &e {
            client::ClientError::Url(_) | client::ClientError::Token => EXIT_USAGE,
            client::ClientError::Status {
                code: 401 | 403, ..
            } => overrides_cli::EXIT_NOPERM,
            client::ClientError::Status {
                code: 400..=499, ..
            } => EXIT_USAGE,
            client::ClientError::Status { .. }
            | client::ClientError::Unreachable { .. }
            | client::ClientError::Malformed { .. } => EXIT_FAILURE,
        };
        ClientFailure {
            code,
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for ClientFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Probe and plan, log what would change, never write to DNS.
        #[arg(long)]
        dry_run: bool,
        /// How long SIGTERM/SIGINT wait for in-flight writes and open HTTP connections, and SIGHUP for
        /// in-flight writes, before dropping them [default: 30s]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        drain_grace: Option<std::time::Duration>,
    },
    /// Validate the configuration: exit 0, or print FILE:LINE:COL: problems and exit 64.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Probe every endpoint once and print, per service, what would change. Writes nothing.
    Plan {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Fleet naming in DNS: register, renew, release, change-master, list, hosts-sync (docs/naming.md).
    /// Exit codes: 0 ok, 1 runtime failure, 2 lost a race or nothing free, 3 not registered, 64 usage.
    Naming(rrguard::naming::cli::NamingArgs),
    /// Take an endpoint out of DNS even if healthy (never below min_healthy), until it ends.
    Drain(overrides_cli::NewOverride),
    /// Delete the drains of an endpoint.
    Undrain {
        /// The endpoint address.
        endpoint: String,
        /// Only the drain of this service.
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        target: overrides_cli::Target,
    },
    /// Maintenance window: the endpoint's failures are ignored and its DNS state kept.
    Maintenance(overrides_cli::NewOverride),
    /// Publish an endpoint as if healthy, until the override ends.
    ForceUp(overrides_cli::NewOverride),
    /// Withdraw an endpoint as if failed (never below min_healthy's all-down policy).
    ForceDown(overrides_cli::NewOverride),
    /// List the node's overrides (or delete one with --delete ID).
    Overrides {
        /// Delete the override with this id.
        #[arg(long, value_name = "ID")]
        delete: Option<String>,
        #[command(flatten)]
        target: overrides_cli::Target,
    },
    /// Show a running node's services: endpoints, state, since, last probe, why each is in or out
    /// of DNS, and the published records.
    Status {
        #[command(flatten)]
        node: NodeArg,
        /// Only this service (its fqdn).
        service: Option<String>,
        /// Only this endpoint of the service: its state, latency over the last hour and last
        /// transitions (the node's history).
        endpoint: Option<String>,
    },
    /// Show a running node's events and DNS writes (audit log), oldest first.
    Events {
        #[command(flatten)]
        node: NodeArg,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Only events this recent (e.g. 1h, 30m) [default: all kept]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only these kinds, comma-separated (dns_updated, write_failed, endpoint_state, …).
        #[arg(long)]
        kind: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Monitoring Plugins check (Nagios, Icinga): exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Nagios {
        #[command(flatten)]
        node: NodeArg,
        /// Only this service [default: all].
        service: Option<String>,
        /// WARNING above this many DNS writes in the last hour per service (flapping).
        #[arg(long, default_value_t = client::DEFAULT_ROTATIONS_WARNING)]
        rotations_warning: u64,
    },
    /// Try rrguard with nothing else installed: three built-in endpoints, a zone served by rrguard
    /// itself on loopback, and a prompt to stop and start the endpoints.
    Demo {
        /// UDP/TCP port of the served zone on 127.0.0.1 [default: a free one]
        #[arg(long, default_value_t = 0)]
        dns_port: u16,
        /// Port of the HTTP status API on 127.0.0.1 [default: a free one]
        #[arg(long, default_value_t = 0)]
        http_port: u16,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Naming(args) => {
            init_logging(cli.log_format);
            ExitCode::from(rrguard::naming::cli::run(args))
        }
        Command::Drain(o) => overrides_cli::set("drain", o),
        Command::Maintenance(o) => overrides_cli::set("maintenance", o),
        Command::ForceUp(o) => overrides_cli::set("force_up", o),
        Command::ForceDown(o) => overrides_cli::set("force_down", o),
        Command::Undrain {
            endpoint,
            service,
            target,
        } => overrides_cli::undrain(&endpoint, service.as_deref(), &target),
        Command::Overrides { delete, target } => {
            overrides_cli::overrides(delete.as_deref(), &target)
        }
        Command::Status {
            node,
            service,
            endpoint,
        } => status_command(&node, service.as_deref(), endpoint.as_deref()),
        Command::Events {
            node,
            service,
            since,
            kind,
            limit,
        } => events_command(&node, service, since, kind, limit),
        Command::Nagios {
            node,
            service,
            rotations_warning,
        } => {
            let (line, verdict) = match node.node() {
                Ok(n) => client::nagios(&n, service.as_deref(), rotations_warning, now_ms()),
                Err(e) => (format!("RRGUARD UNKNOWN - {e}"), client::Verdict::Unknown),
            };
            println!("{line}");
            ExitCode::from(verdict as u8)
        }
        Command::Demo {
            dns_port,
            http_port,
        } => {
            init_logging(cli.log_format);
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            let result = rt.block_on(rrguard::demo::run(rrguard::demo::DemoOptions {
                dns_port,
                http_port,
            }));
            // The prompt's stdin read blocks a runtime thread until a line arrives: don't wait for it.
            rt.shutdown_background();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rrguard demo: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::CheckConfig { config } => match config::load(&config.config) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!(
                        "{}:{}:{}: {}",
                        config.config.display(),
                        w.line,
                        w.col,
                        w.message
                    );
                }
                println!(
                    "{}: ok ({} writers, {} services, {} endpoints)",
                    config.config.display(),
                    c.writers.len(),
                    c.services.len(),
                    c.services.iter().map(|s| s.endpoints.len()).sum::<usize>()
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&e),
        },
        Command::Plan { config } => {
            let c = match config::load(&config.config) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            init_logging(cli.log_format);
            let reports = match runtime() {
                Ok(rt) => rt.block_on(daemon::plan_once(&c)),
                Err(code) => return code,
            };
            print!("{}", daemon::render_plan(&reports));
            if reports
                .iter()
                .any(|r| r.writers.iter().any(|w| w.published.is_err()))
            {
                ExitCode::from(EXIT_FAILURE)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Run {
            config,
            dry_run,
            drain_grace,
        } => {
            let c = match config::load(&config.config) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            init_logging(cli.log_format);
            limit_malloc_arenas();
            let rts = match rrguard::runtime::DaemonRuntimes::build() {
                Ok(rts) => rts,
                Err(e) => {
                    eprintln!("rrguard: cannot start the async runtime: {e}");
                    return ExitCode::from(EXIT_FAILURE);
                }
            };
            let ran = rts.run(daemon::run_until_signal(
                config.config,
                c,
                RunOptions {
                    dry_run,
                    drain_grace: drain_grace.unwrap_or(daemon::DRAIN_GRACE),
                    probe_runtime: Some(rts.probes.clone()),
                },
            ));
            rts.stop();
            match ran {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rrguard: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    rrguard::state::now_unix_ms()
}

fn status_command(node: &NodeArg, service: Option<&str>, endpoint: Option<&str>) -> ExitCode {
    let run = || -> Result<String, ClientFailure> {
        let n = node.node()?;
        if let (Some(f), Some(ip)) = (service, endpoint) {
            let doc = n.get(&format!(
                "/api/v1/services/{}/endpoints/{}/history",
                client::encode(f),
                client::encode(ip)
            ))?;
            return Ok(client::render_history(&doc, now_ms()));
        }
        let status = n.get("/api/v1/status")?;
        let fqdns: Vec<String> = match service {
            Some(f) => vec![f.to_owned()],
            None => status["services"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s["fqdn"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let details = fqdns
            .iter()
            .map(|f| n.get(&format!("/api/v1/services/{}", client::encode(f))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(client::render_status(&status, &details, now_ms()))
    };
    match run() {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rrguard status: {e}");
            ExitCode::from(e.code)
        }
    }
}

fn events_command(
    node: &NodeArg,
    service: Option<String>,
    since: Option<std::time::Duration>,
    kind: Option<String>,
    limit: usize,
) -> ExitCode {
    let run = || -> Result<String, ClientFailure> {
        let n = node.node()?;
        let mut path = format!("/api/v1/events?limit={limit}");
        if let Some(s) = &service {
            path += &format!("&service={}", client::encode(s));
        }
        if let Some(k) = &kind {
            path += &format!("&kind={}", client::encode(k));
        }
        if let Some(d) = since {
            path += &format!(
                "&since={}",
                now_ms().saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            );
        }
        let page = n.get(&path)?;
        Ok(client::render_events(&page))
    };
    match run() {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rrguard events: {e}");
            ExitCode::from(e.code)
        }
    }
}

fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(EXIT_USAGE)
}

/// glibc's malloc gives every thread that meets contention an arena of its own, up to 8 per CPU;
/// the probe engine allocates from the runtime's workers and blocking threads in bursts, and what
/// those arenas keep after a burst stays resident. Two arenas brought the peak RSS of 10,000 TCP
/// endpoints at 1 s from 107 MB to 84–89 MB, at the same CPU per probe (`benches/engine.rs`,
/// docs/benchmarks.md). An operator's `MALLOC_ARENA_MAX` is left as set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    /// Arenas: one per CPU on the 2-CPU machines the targets are set for (the probe engine's
    /// workers and the main runtime's share them).
    const ARENAS: libc::c_int = 2;
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` sets one of glibc's tunables under its own lock; it touches no Rust
        // memory. A failure (0) leaves the default, which is correct too.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("rrguard: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_FAILURE)
        })
}

fn init_logging(format: LogFormat) {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journald_socket = std::path::Path::new("/run/systemd/journal/socket").exists();
    let want_journald = match format {
        LogFormat::Journald => true,
        // Under systemd, stderr is already the journal; structured fields are better sent natively.
        LogFormat::Auto => journald_socket && std::env::var_os("JOURNAL_STREAM").is_some(),
        _ => false,
    };
    if want_journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .init();
                return;
            }
            Err(e) => eprintln!("rrguard: journald unavailable ({e}); logging to stderr"),
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter())
            .with(fmt.json())
            .init(),
        _ => tracing_subscriber::registry()
            .with(filter())
            .with(fmt)
            .init(),
    }
}
