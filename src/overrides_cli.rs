//! The override commands of the binary (`drain`, `undrain`, `maintenance`, `force-up`,
//! `force-down`, `overrides`): HTTP clients of a running node's `/api/v1/overrides`.
//!
//! The node is found by `--url`, or by `[node].listen` of the configuration (`-c`); the token by
//! `--token-file`, or `[api] token_file` of the configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use rrguard::config;
use serde_json::Value;

/// Exit code when the node refuses the request as wrong (400, 404, 409) or the usage is bad.
pub const EXIT_USAGE: u8 = 64;
/// Exit code when the node cannot be reached or fails.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code when the token is missing or wrong, or changes are off on the node (401, 403).
pub const EXIT_NOPERM: u8 = 77;

/// How to reach the node.
#[derive(Args, Debug)]
pub struct Target {
    /// Configuration file: the node is at its [node].listen, the token in its [api] token_file.
    #[arg(short, long, env = "RRGUARD_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// The node's base URL (instead of [node].listen), like http://127.0.0.1:9053.
    #[arg(long)]
    pub url: Option<String>,
    /// File holding the API token (instead of [api] token_file).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// What a new override says.
#[derive(Args, Debug)]
pub struct NewOverride {
    /// The endpoint address.
    pub endpoint: String,
    /// Only this service (fqdn); default: every service that lists the endpoint.
    #[arg(long)]
    pub service: Option<String>,
    /// How long, from its start: 30m, 1h, 2d.
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: Option<String>,
    /// When it ends: an RFC 3339 time (2026-12-01T06:00:00Z), or a duration from now (3h).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// When it starts: an RFC 3339 time, or a duration from now; default: now.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Why (required; shown in status, logs and on every node).
    #[arg(long)]
    pub comment: String,
    #[command(flatten)]
    pub target: Target,
}

struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// The API token in file `p` (`--token-file`), trimmed.
///
/// # Errors
/// The message to print when the file cannot be read.
pub fn read_token_file(p: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("cannot read the token file {}: {e}", p.display()))
}

/// The configuration's `[api]` token (`token_file` or `token`, trimmed when loaded), as text.
pub fn api_token(c: &config::Config) -> Option<String> {
    c.api
        .token
        .as_ref()
        .map(|t| String::from_utf8_lossy(t).into_owned())
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("rrguard: {msg}");
    ExitCode::from(code)
}

impl Client {
    fn new(t: &Target) -> Result<Client, ExitCode> {
        let token_from_file = |p: &PathBuf| read_token_file(p).map_err(|e| fail(EXIT_USAGE, e));
        let (base, token) = match (&t.url, &t.token_file) {
            (Some(url), Some(file)) => (url.clone(), Some(token_from_file(file)?)),
            _ => {
                let c = match config::load(&t.config) {
                    Ok(c) => c,
                    Err(e) if t.url.is_some() => {
                        eprintln!(
                            "rrguard: note: no token: {}",
                            e.to_string().lines().next().unwrap_or_default()
                        );
                        return Ok(Client::with(t.url.clone().unwrap_or_default(), None));
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        return Err(ExitCode::from(EXIT_USAGE));
                    }
                };
                let base = match &t.url {
                    Some(u) => u.clone(),
                    None => {
                        let Some(mut addr) = c.node.listen else {
                            return Err(fail(
                                EXIT_USAGE,
                                format!(
                                    "{} has no [node].listen: the node serves no API; set it, or pass --url",
                                    t.config.display()
                                ),
                            ));
                        };
                        if addr.ip().is_unspecified() {
                            addr.set_ip(if addr.is_ipv4() {
                                std::net::Ipv4Addr::LOCALHOST.into()
                            } else {
                                std::net::Ipv6Addr::LOCALHOST.into()
                            });
                        }
                        format!("http://{addr}")
                    }
                };
                let token = match &t.token_file {
                    Some(f) => Some(token_from_file(f)?),
                    None => api_token(&c),
                };
                (base, token)
            }
        };
        Ok(Client::with(base, token))
    }

    fn with(base: String, token: Option<String>) -> Client {
        rrguard::observe::probe::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .user_agent(concat!("rrguard/", env!("CARGO_PKG_VERSION"), " cli"))
            .build()
            .unwrap_or_default();
        Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        }
    }

    /// Sends one request; the JSON answer, or the exit code with the error printed.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ExitCode> {
        let url = format!("{}{path}", self.base);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(EXIT_FAILURE, format!("cannot start the async runtime: {e}")))?;
        rt.block_on(async {
            let mut req = self.http.request(method, &url);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            let resp = req.send().await.map_err(|e| {
                fail(
                    EXIT_FAILURE,
                    format!("cannot reach the rrguard node at {}: {e}; is `rrguard run` running, and is this its [node].listen?", self.base),
                )
            })?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
            if status.is_success() {
                return Ok(value);
            }
            let error = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or(text.trim())
                .to_owned();
            let field = value.get("field").and_then(Value::as_str);
            let msg = match field {
                Some(f) => format!("the node refused ({status}): {f}: {error}"),
                None => format!("the node refused ({status}): {error}"),
            };
            let code = match status.as_u16() {
                401 | 403 => EXIT_NOPERM,
                400 | 404 | 409 | 422 => EXIT_USAGE,
                _ => EXIT_FAILURE,
            };
            Err(fail(code, msg))
        })
    }
}

/// A time given as RFC 3339 or as a duration from now, in Unix ms.
fn time_arg(flag: &str, text: &str) -> Result<u64, ExitCode> {
    let now = SystemTime::now();
    let at = match humantime::parse_duration(text.trim()) {
        Ok(d) => now + d,
        Err(_) => humantime::parse_rfc3339_weak(text.trim()).map_err(|e| {
            fail(
                EXIT_USAGE,
                format!("--{flag} {text:?} is neither an RFC 3339 time (2026-12-01T06:00:00Z) nor a duration (3h): {e}"),
            )
        })?,
    };
    Ok(at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn describe(o: &Value) -> String {
    let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let n = |k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
    let service = o
        .get("service")
        .and_then(Value::as_str)
        .unwrap_or("*")
        .to_owned();
    let active = if o.get("active").and_then(Value::as_bool) == Some(true) {
        "active"
    } else {
        "scheduled"
    };
    format!(
        "{}  {:<11}  {:<15}  {:<24}  {} .. {}  {}  {}",
        s("id"),
        s("kind"),
        s("endpoint"),
        service,
        when(n("starts_unix_ms")),
        when(n("ends_unix_ms")),
        active,
        s("comment")
    )
}

/// `rrguard drain|maintenance|force-up|force-down`.
pub fn set(kind: &str, o: NewOverride) -> ExitCode {
    let client = match Client::new(&o.target) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut body = serde_json::json!({
        "endpoint": o.endpoint,
        "kind": kind,
        "comment": o.comment,
    });
    if let Some(s) = &o.service {
        body["service"] = s.clone().into();
    }
    if let Some(f) = &o.from {
        match time_arg("from", f) {
            Ok(ms) => body["starts_unix_ms"] = ms.into(),
            Err(code) => return code,
        }
    }
    match (&o.duration, &o.until) {
        (Some(_), Some(_)) => return fail(EXIT_USAGE, "give either --for or --until, not both"),
        (None, None) => {
            return fail(
                EXIT_USAGE,
                "an override needs an end: --for 1h, or --until TIME; it ends by itself then",
            );
        }
        (Some(d), None) => body["for"] = d.clone().into(),
        (None, Some(u)) => match time_arg("until", u) {
            Ok(ms) => body["ends_unix_ms"] = ms.into(),
            Err(code) => return code,
        },
    }
    match client.call(reqwest::Method::POST, "/api/v1/overrides", Some(body)) {
        Ok(v) => {
            println!("{}", describe(&v));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn list_values(client: &Client) -> Result<Vec<Value>, ExitCode> {
    let v = client.call(reqwest::Method::GET, "/api/v1/overrides", None)?;
    Ok(v.get("overrides")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// `rrguard undrain ENDPOINT [--service FQDN]`: deletes the endpoint's drains.
pub fn undrain(endpoint: &str, service: Option<&str>, target: &Target) -> ExitCode {
    let client = match Client::new(target) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let all = match list_values(&client) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let want_service = service.map(|s| {
        let s = s.to_ascii_lowercase();
        if s.ends_with('.') { s } else { format!("{s}.") }
    });
    let Ok(ip) = endpoint.trim().parse::<std::net::IpAddr>() else {
        return fail(EXIT_USAGE, format!("{endpoint:?} is not an IP address"));
    };
    let drains: Vec<&Value> = all
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("drain"))
        .filter(|o| {
            o.get("endpoint")
                .and_then(Value::as_str)
                .and_then(|e| e.parse::<std::net::IpAddr>().ok())
                == Some(ip)
        })
        .filter(|o| {
            want_service
                .as_deref()
                .is_none_or(|s| o.get("service").and_then(Value::as_str) == Some(s))
        })
        .collect();
    if drains.is_empty() {
        return fail(EXIT_USAGE, format!("{endpoint} is not drained"));
    }
    for o in drains {
        let id = o.get("id").and_then(Value::as_str).unwrap_or_default();
        if let Err(code) = client.call(
            reqwest::Method::DELETE,
            &format!("/api/v1/overrides/{id}"),
            None,
        ) {
            return code;
        }
        println!("deleted {}", describe(o));
    }
    ExitCode::SUCCESS
}

/// `rrguard overrides [--delete ID]`.
pub fn overrides(delete: Option<&str>, target: &Target) -> ExitCode {
    let client = match Client::new(target) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(id) = delete {
        return match client.call(
            reqwest::Method::DELETE,
            &format!("/api/v1/overrides/{id}"),
            None,
        ) {
            Ok(v) => {
                println!("deleted {}", describe(&v));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        };
    }
    match list_values(&client) {
        Ok(all) => {
            if all.is_empty() {
                println!("no overrides");
            }
            for o in &all {
                println!("{}", describe(o));
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
