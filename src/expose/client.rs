//! The CLI side of the API: `rrguard status`, `rrguard events` and `rrguard nagios` fetch JSON from a
//! running node (plain HTTP/1.1 over `[node].listen`, or `--url`) and render it for a person or for a
//! monitoring system.
//!
//! `rrguard nagios` follows the Monitoring Plugins guidelines: one line `RRGUARD STATE - summary |
//! perfdata`, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Per service (all services without an
//! argument), the worst of:
//! - CRITICAL: no endpoint agreed up, or the first writer publishes no record of the service;
//! - WARNING: an endpoint down or unknown, a writer whose last write failed, this node isolated, or
//!   more DNS writes in the last hour than `--rotations-warning` (default 6: an endpoint flapping);
//! - UNKNOWN: the node cannot be reached, answers with an error, or the service is not configured.
//!
//! Perfdata: `services`, `endpoints_up` (with the endpoint count as max), `latency` (ms, mean of this
//! node's last probes), `rotations_1h` (DNS writes in the last hour).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

/// How long the CLI waits for the node.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Default `--rotations-warning` of `rrguard nagios`: DNS writes per hour per service.
pub const DEFAULT_ROTATIONS_WARNING: u64 = 6;

/// Why the node could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://HOST:PORT`. Not retryable.
    #[error("bad URL {0:?}: use http://HOST:PORT (the node's [node].listen)")]
    Url(String),
    /// The API token is empty or holds a control character (a line break). Not retryable.
    #[error(
        "the API token is empty or holds a control character (a line break?); fix the token file"
    )]
    Token,
    /// The node did not answer: not running, wrong address, firewall. Retryable.
    #[error(
        "cannot reach rrguard at {addr}: {reason} (is `rrguard run` running, and is [node].listen this address?)"
    )]
    Unreachable {
        /// host:port.
        addr: String,
        /// The socket error.
        reason: String,
    },
    /// The node answered with an error status.
    #[error("{path}: HTTP {code}: {message}")]
    Status {
        /// The request path.
        path: String,
        /// The status code.
        code: u16,
        /// The `error` field of the JSON body, or the body.
        message: String,
    },
    /// The answer is not the JSON expected. Not retryable.
    #[error("{path}: unexpected answer: {reason}")]
    Malformed {
        /// The request path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A node's HTTP address, and the API token its reads may need (`[api] read = "token"`).
#[derive(Debug, Clone)]
pub struct Node {
    host_port: String,
    token: Option<String>,
}

impl Node {
    /// The node at `addr` (`[node].listen`); an unspecified address (`0.0.0.0`, `::`) is asked on
    /// loopback.
    pub fn at(addr: SocketAddr) -> Node {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                "127.0.0.1".parse().unwrap_or(addr.ip())
            }
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => "::1".parse().unwrap_or(addr.ip()),
            ip => ip,
        };
        Node {
            host_port: SocketAddr::new(ip, addr.port()).to_string(),
            token: None,
        }
    }

    /// This node, asked with the bearer `token` (sent with every request).
    ///
    /// # Errors
    /// [`ClientError::Token`] if the token holds a control character (it goes in a header line).
    pub fn with_token(self, token: String) -> Result<Node, ClientError> {
        if token.is_empty() || token.chars().any(char::is_control) {
            return Err(ClientError::Token);
        }
        Ok(Node {
            token: Some(token),
            ..self
        })
    }

    /// The node at `http://HOST:PORT[/]`.
    ///
    /// # Errors
    /// [`ClientError::Url`] for anything else.
    pub fn from_url(url: &str) -> Result<Node, ClientError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| ClientError::Url(url.to_owned()))?;
        let host_port = rest.trim_end_matches('/');
        if host_port.is_empty() || host_port.contains('/') || !host_port.contains(':') {
            return Err(ClientError::Url(url.to_owned()));
        }
        Ok(Node {
            host_port: host_port.to_owned(),
            token: None,
        })
    }

    /// `GET path` and its JSON body.
    ///
    /// # Errors
    /// [`ClientError`] when the node cannot be reached, answers an error status or no JSON.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            addr: self.host_port.clone(),
            reason,
        };
        let addr = self
            .host_port
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("no address".to_owned()))?;
        let mut s =
            TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| unreachable(e.to_string()))?;
        s.set_read_timeout(Some(TIMEOUT))
            .and_then(|()| s.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| unreachable(e.to_string()))?;
        let authorization = self
            .token
            .as_ref()
            .map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n{authorization}Connection: close\r\n\r\n",
            self.host_port
        )
        .map_err(|e| unreachable(e.to_string()))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .map_err(|e| unreachable(e.to_string()))?;
        let malformed = |reason: &str| ClientError::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| malformed("no HTTP header"))?;
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| malformed("no HTTP status"))?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        let json: Result<Value, _> = serde_json::from_str(&body);
        if code != 200 {
            let message = json
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| body.trim().to_owned());
            return Err(ClientError::Status {
                path: path.to_owned(),
                code,
                message,
            });
        }
        json.map_err(|e| malformed(&e.to_string()))
    }
}

/// The body of a `Transfer-Encoding: chunked` answer.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `1234 ms ago` style age of a Unix-ms time, for a person.
fn ago(unix_ms: Option<u64>, now_ms: u64) -> String {
    match unix_ms {
        Some(t) => {
            let secs = now_ms.saturating_sub(t) / 1000;
            humantime::format_duration(Duration::from_secs(secs)).to_string() + " ago"
        }
        None => "-".to_owned(),
    }
}

/// Renders `rrguard status`: the node line, then per service its published records per writer and
/// a table of endpoints (state, since, last probe, reason). `details` are the
/// `/api/v1/services/{fqdn}` documents, in order.
pub fn render_status(status: &Value, details: &[Value], now_ms: u64) -> String {
    let mut out = String::new();
    let isolated = status.get("isolated").and_then(Value::as_str);
    out.push_str(&format!(
        "node {}  leader {}  term {}{}\n",
        s(status, "node"),
        status
            .get("leader")
            .and_then(Value::as_str)
            .unwrap_or("none"),
        status.get("term").and_then(Value::as_u64).unwrap_or(0),
        isolated.map_or(String::new(), |w| format!("  ISOLATED: {w}"))
    ));
    if let Some(line) = status.get("engine").and_then(engine_line) {
        out.push_str(&line);
    }
    for d in details {
        out.push_str(&format!(
            "\n{}  (zone {}, check {})\n",
            s(d, "fqdn"),
            s(d, "zone"),
            s(d, "check")
        ));
        for w in arr(d, "writers") {
            let records: Vec<String> = arr(w, "records")
                .iter()
                .map(|r| {
                    format!(
                        "{} ttl={}",
                        s(r, "address"),
                        r.get("ttl")
                            .and_then(Value::as_u64)
                            .map_or("?".to_owned(), |t| t.to_string())
                    )
                })
                .collect();
            out.push_str(&format!(
                "  writer {}: {}{}\n",
                s(w, "name"),
                if records.is_empty() {
                    "(nothing known)".to_owned()
                } else {
                    records.join(", ")
                },
                w.get("last_error")
                    .and_then(Value::as_str)
                    .map_or(String::new(), |e| format!("  LAST WRITE FAILED: {e}"))
            ));
        }
        if let Some(h) = d.get("hold").and_then(Value::as_str) {
            out.push_str(&format!("  removals held back: {h}\n"));
        }
        out.push_str(&format!(
            "  {:<40} {:<8} {:<12} {:<30} {}\n",
            "ENDPOINT", "STATE", "SINCE", "LAST PROBE", "REASON"
        ));
        for e in arr(d, "endpoints") {
            let probe = e
                .get("last_probe")
                .filter(|p| !p.is_null())
                .map_or("-".to_owned(), |p| {
                    // A streak towards another verdict: `[down 2/3]`, two of the three failures
                    // in a row that make it down.
                    let heading =
                        p.get("heading")
                            .filter(|h| !h.is_null())
                            .map_or(String::new(), |h| {
                                format!(
                                    " [{} {}/{}]",
                                    s(h, "to"),
                                    h.get("have").and_then(Value::as_u64).unwrap_or(0),
                                    h.get("need").and_then(Value::as_u64).unwrap_or(0)
                                )
                            });
                    format!(
                        "{} {:.1}ms{heading}",
                        s(p, "detail"),
                        p.get("latency_ms").and_then(Value::as_f64).unwrap_or(0.0)
                    )
                });
            let reason = match (
                e.get("published").and_then(Value::as_bool),
                e.get("reason").and_then(Value::as_str),
            ) {
                (Some(true), Some(r)) => format!("in: {r}"),
                (Some(false), Some(r)) => format!("out: {r}"),
                _ => "-".to_owned(),
            };
            out.push_str(&format!(
                "  {:<40} {:<8} {:<12} {:<30} {}\n",
                s(e, "endpoint"),
                s(e, "state"),
                ago(e.get("since_unix_ms").and_then(Value::as_u64), now_ms),
                probe,
                reason
            ));
        }
    }
    out
}

/// The `engine since start-up:` line of `rrguard status` from the status document's `engine`, when the probe
/// engine has something to say: probes that waited for a slot, fast confirmations shed or failed
/// probes abstained since start-up, or a scheduler lag of [`SHOWN_LAG_MS`] or more now. `None` when
/// all is quiet.
fn engine_line(engine: &Value) -> Option<String> {
    let n = |key: &str| engine.get(key).and_then(Value::as_u64).unwrap_or(0);
    let abstained: u64 = engine
        .get("probes_abstained")
        .and_then(Value::as_object)
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    let lag_ms = engine
        .get("scheduler_lag_ms")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let mut parts = Vec::new();
    if n("probe_slot_waits") > 0 {
        parts.push(format!(
            "{} probes waited for one of the {} probe slots ({} in flight now)",
            n("probe_slot_waits"),
            n("max_probes_in_flight"),
            n("probes_in_flight")
        ));
    }
    if n("confirmations_shed") > 0 {
        parts.push(format!(
            "{} fast confirmations waited the plain interval",
            n("confirmations_shed")
        ));
    }
    if abstained > 0 {
        parts.push(format!(
            "{abstained} failed probes abstained (rrguard itself was late)"
        ));
    }
    if parts.is_empty() && lag_ms < SHOWN_LAG_MS {
        return None;
    }
    parts.push(format!("scheduler lag now {lag_ms:.0}ms"));
    Some(format!("engine since start-up: {}\n", parts.join("; ")))
}

/// Scheduler lag shown on the `engine:` line even when no counter moved, ms: the lag monitor's
/// threshold of lateness ([`crate::observe::lag`]).
const SHOWN_LAG_MS: f64 = 100.0;

/// Columns of the latency sparkline of `rrguard status SERVICE ENDPOINT`: one per minute of the
/// last hour.
pub const SPARK_COLUMNS: u64 = 60;
const SPARK_LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last hour as two lines of [`SPARK_COLUMNS`] characters, oldest left: the mean latency of
/// each minute's passed probes (`▁` fastest to `█` slowest of the hour, blank: no passed probe) and
/// the minutes with failed probes (`x`: every probe failed, `!`: some).
fn sparkline(buckets: &[Value], now_ms: u64) -> (String, String) {
    const MINUTE: u64 = 60_000;
    let last = now_ms / MINUTE;
    let first = (last + 1).saturating_sub(SPARK_COLUMNS);
    // Per column: (probes, failures, sum of passed latencies, passed).
    let mut cols = vec![(0u64, 0u64, 0f64, 0u64); SPARK_COLUMNS as usize];
    for b in buckets {
        let minute = b["start_unix_ms"].as_u64().unwrap_or(0) / MINUTE;
        if minute < first || minute > last {
            continue;
        }
        let c = &mut cols[(minute - first) as usize];
        let probes = b["probes"].as_u64().unwrap_or(0);
        let failures = b["failures"].as_u64().unwrap_or(0);
        c.0 += probes;
        c.1 += failures;
        if let Some(mean) = b["mean_ms"].as_f64() {
            let passed = probes.saturating_sub(failures);
            c.2 += mean * passed as f64;
            c.3 += passed;
        }
    }
    let means: Vec<Option<f64>> = cols
        .iter()
        .map(|c| (c.3 > 0).then(|| c.2 / c.3 as f64))
        .collect();
    let lo = means
        .iter()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let hi = means.iter().flatten().copied().fold(0.0, f64::max);
    let bars = means
        .iter()
        .map(|m| match m {
            None => ' ',
            Some(_) if hi <= lo => SPARK_LEVELS[0],
            Some(m) => {
                let level = ((m - lo) / (hi - lo) * (SPARK_LEVELS.len() - 1) as f64).round();
                SPARK_LEVELS[(level as usize).min(SPARK_LEVELS.len() - 1)]
            }
        })
        .collect();
    let fails = cols
        .iter()
        .map(|c| match c {
            (0, ..) | (_, 0, ..) => ' ',
            (p, f, ..) if f >= p => 'x',
            _ => '!',
        })
        .collect();
    (bars, fails)
}

fn ms_text(v: &Value) -> String {
    v.as_f64().map_or("-".to_owned(), |m| format!("{m:.1}ms"))
}

/// Renders `rrguard status SERVICE ENDPOINT` from the
/// `/api/v1/services/{fqdn}/endpoints/{ip}/history` document: the current state and why it is in
/// or out of DNS, the latency of the last hour (summary and a per-minute sparkline), and the kept
/// transitions, oldest first.
pub fn render_history(doc: &Value, now_ms: u64) -> String {
    let mut out = format!(
        "{} {}  (node {})\n",
        s(doc, "fqdn"),
        s(doc, "endpoint"),
        s(doc, "node")
    );
    out.push_str(&format!(
        "  state    {} since {}\n",
        s(doc, "state"),
        ago(doc["since_unix_ms"].as_u64(), now_ms)
    ));
    let dns = match (doc["published"].as_bool(), doc["reason"].as_str()) {
        (Some(true), Some(r)) => format!("published: {r}"),
        (Some(false), Some(r)) => format!("excluded: {r}"),
        _ => "- (this node does not plan)".to_owned(),
    };
    out.push_str(&format!("  dns      {dns}\n"));
    let l = &doc["latency"];
    let span = doc["resolution_ms"].as_u64().unwrap_or(0)
        * doc["max_buckets"].as_u64().unwrap_or(0)
        / 1000;
    out.push_str(&format!(
        "  latency  last {}: {} probes, {} failed; passed min {} mean {} max {}\n",
        humantime::format_duration(Duration::from_secs(span)),
        l["probes"].as_u64().unwrap_or(0),
        l["failures"].as_u64().unwrap_or(0),
        ms_text(&l["min_ms"]),
        ms_text(&l["mean_ms"]),
        ms_text(&l["max_ms"]),
    ));
    let (bars, fails) = sparkline(arr(doc, "buckets"), now_ms);
    out.push_str(&format!(
        "  minutes  |{bars}|  ▁ fastest .. █ slowest mean, oldest left\n"
    ));
    out.push_str(&format!(
        "  failed   |{fails}|  x all failed, ! some failed\n"
    ));
    let transitions = arr(doc, "transitions");
    out.push_str(&format!(
        "\n  TRANSITIONS ({} kept, at most {}, oldest first)\n",
        transitions.len(),
        doc["max_transitions"].as_u64().unwrap_or(0)
    ));
    if transitions.is_empty() {
        out.push_str("  (none yet)\n");
        return out;
    }
    out.push_str(&format!(
        "  {:<16} {:<10} {:<16} {}\n",
        "WHEN", "STATE", "RULE", "REASON"
    ));
    for t in transitions {
        out.push_str(&format!(
            "  {:<16} {:<10} {:<16} {}\n",
            ago(t["unix_ms"].as_u64(), now_ms),
            s(t, "state"),
            s(t, "reason_kind"),
            s(t, "reason")
        ));
    }
    out
}

/// Renders `rrguard events`: one line per event, oldest first.
pub fn render_events(page: &Value) -> String {
    let mut lines: Vec<String> = arr(page, "events")
        .iter()
        .map(|e| {
            let when = e
                .get("unix_ms")
                .and_then(Value::as_u64)
                .map(|ms| {
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + Duration::from_millis(ms),
                    )
                    .to_string()
                })
                .unwrap_or_default();
            let writer = e
                .get("writer")
                .and_then(Value::as_str)
                .map_or(String::new(), |w| format!(" writer={w}"));
            let result = e
                .get("write")
                .and_then(|w| w.get("result"))
                .and_then(Value::as_str)
                .map_or(String::new(), |r| format!(" result={r}"));
            let service = match s(e, "service") {
                "" => "-",
                svc => svc,
            };
            format!(
                "{when} #{} {} {service}{writer}{result}: {}",
                e.get("seq").and_then(Value::as_u64).unwrap_or(0),
                s(e, "kind"),
                s(e, "message")
            )
        })
        .collect();
    lines.reverse();
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// A Monitoring Plugins verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// 0.
    Ok = 0,
    /// 1.
    Warning = 1,
    /// 2.
    Critical = 2,
    /// 3.
    Unknown = 3,
}

impl Verdict {
    /// The word in the output line.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warning => "WARNING",
            Verdict::Critical => "CRITICAL",
            Verdict::Unknown => "UNKNOWN",
        }
    }
}

/// Runs the `rrguard nagios` check against `node` for `service` (all when `None`): the output line
/// and the verdict (its exit code).
pub fn nagios(
    node: &Node,
    service: Option<&str>,
    rotations_warning: u64,
    now_ms: u64,
) -> (String, Verdict) {
    match nagios_checked(node, service, rotations_warning, now_ms) {
        Ok(r) => r,
        Err(e) => (format!("RRGUARD UNKNOWN - {e}"), Verdict::Unknown),
    }
}

fn nagios_checked(
    node: &Node,
    service: Option<&str>,
    rotations_warning: u64,
    now_ms: u64,
) -> Result<(String, Verdict), ClientError> {
    let status = node.get("/api/v1/status")?;
    let fqdns: Vec<String> = match service {
        Some(f) => vec![f.to_owned()],
        None => arr(&status, "services")
            .iter()
            .map(|v| s(v, "fqdn").to_owned())
            .collect(),
    };
    let hour_ago = now_ms.saturating_sub(3_600_000);
    let mut verdict = Verdict::Ok;
    let mut problems = Vec::new();
    let (mut up, mut total, mut latency_sum, mut latency_n, mut rotations) = (0, 0, 0.0, 0, 0u64);
    if let Some(why) = status.get("isolated").and_then(Value::as_str) {
        verdict = verdict.max(Verdict::Warning);
        problems.push(format!("node isolated: {why}"));
    }
    for fqdn in &fqdns {
        let d = node.get(&format!("/api/v1/services/{}", encode(fqdn)))?;
        let fqdn = s(&d, "fqdn");
        let endpoints = arr(&d, "endpoints");
        let svc_up = endpoints.iter().filter(|e| s(e, "state") == "up").count();
        total += endpoints.len();
        up += svc_up;
        for e in endpoints {
            if let Some(l) = e
                .get("last_probe")
                .and_then(|p| p.get("latency_ms"))
                .and_then(Value::as_f64)
            {
                latency_sum += l;
                latency_n += 1;
            }
        }
        let first = arr(&d, "writers").first();
        let published = first.map_or(0, |w| arr(w, "records").len());
        let known = first.is_some_and(|w| {
            w.get("published_known_unix_ms")
                .is_some_and(|v| !v.is_null())
        });
        if svc_up == 0 {
            verdict = verdict.max(Verdict::Critical);
            problems.push(format!("{fqdn}: no endpoint up"));
        } else if known && published == 0 {
            verdict = verdict.max(Verdict::Critical);
            problems.push(format!("{fqdn}: no record published"));
        } else if svc_up < endpoints.len() {
            verdict = verdict.max(Verdict::Warning);
            let down: Vec<&str> = endpoints
                .iter()
                .filter(|e| s(e, "state") != "up")
                .map(|e| s(e, "endpoint"))
                .collect();
            problems.push(format!("{fqdn}: {} not up", down.join(" ")));
        }
        for w in arr(&d, "writers") {
            if let Some(err) = w.get("last_error").and_then(Value::as_str) {
                verdict = verdict.max(Verdict::Warning);
                problems.push(format!("{fqdn}: writer {} failing: {err}", s(w, "name")));
            }
        }
        let page = node.get(&format!(
            "/api/v1/events?service={}&kind=dns_updated&since={hour_ago}&limit=1000",
            encode(fqdn)
        ))?;
        let n = arr(&page, "events").len() as u64;
        rotations += n;
        if n > rotations_warning {
            verdict = verdict.max(Verdict::Warning);
            problems.push(format!(
                "{fqdn}: {n} DNS writes in the last hour (flapping?)"
            ));
        }
    }
    let summary = if problems.is_empty() {
        format!("{} services, {up}/{total} endpoints up", fqdns.len())
    } else {
        problems.join("; ")
    };
    let latency = if latency_n == 0 {
        0.0
    } else {
        latency_sum / latency_n as f64
    };
    Ok((
        format!(
            "RRGUARD {} - {summary} | services={} endpoints_up={up};;;0;{total} latency={latency:.3}ms rotations_1h={rotations};{rotations_warning};;0",
            verdict.word(),
            fqdns.len()
        ),
        verdict,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_shows_the_engine_only_when_it_has_something_to_say() {
        let status =
            |engine: Value| serde_json::json!({"node": "mon-1", "term": 1, "engine": engine});
        let quiet = serde_json::json!({
            "scheduler_lag_ms": 2.0, "probes_abstained": {}, "max_probes_in_flight": 512,
            "probes_in_flight": 3, "probe_slot_waits": 0, "confirmations_shed": 0
        });
        let text = render_status(&status(quiet), &[], 0);
        assert!(!text.contains("engine"), "{text}");
        let busy = serde_json::json!({
            "scheduler_lag_ms": 31.4, "probes_abstained": {"lag": 5}, "max_probes_in_flight": 20,
            "probes_in_flight": 20, "probe_slot_waits": 746, "confirmations_shed": 3
        });
        let text = render_status(&status(busy), &[], 0);
        assert!(
            text.contains(
                "engine since start-up: 746 probes waited for one of the 20 probe slots (20 in \
                 flight now); 3 fast confirmations waited the plain interval; 5 failed probes \
                 abstained (rrguard itself was late); scheduler lag now 31ms\n"
            ),
            "{text}"
        );
        // A streak in progress shows after the last probe.
        let detail = serde_json::json!({
            "fqdn": "www.example.test.", "zone": "example.test.", "check": "http", "writers": [],
            "endpoints": [{
                "endpoint": "127.0.0.2", "state": "up", "published": true, "reason": "up",
                "last_probe": {"detail": "connection refused", "latency_ms": 0.3,
                               "heading": {"to": "down", "have": 2, "need": 3}}
            }]
        });
        let text = render_status(&status(serde_json::json!({})), &[detail], 0);
        assert!(
            text.contains("connection refused 0.3ms [down 2/3]"),
            "{text}"
        );
        // A lag at the monitor's threshold shows on its own.
        let late = serde_json::json!({"scheduler_lag_ms": 150.0, "probe_slot_waits": 0});
        let text = render_status(&status(late), &[], 0);
        assert!(
            text.contains("engine since start-up: scheduler lag now 150ms"),
            "{text}"
        );
    }

    #[test]
    fn the_history_renders_a_sparkline_and_the_transitions_in_order() {
        let now: u64 = 1_800_000_000_000; // a whole minute
        let minute = |ago: u64| now - ago * 60_000;
        let doc = serde_json::json!({
            "fqdn": "www.example.test.", "endpoint": "127.0.0.3", "node": "mon-1",
            "state": "up", "since_unix_ms": now - 120_000,
            "published": false, "reason_kind": "not_fastest", "reason": "not among the fastest 1",
            "resolution_ms": 10_000, "max_buckets": 360, "max_transitions": 100,
            "latency": {"probes": 7, "failures": 3, "min_ms": 1.0, "mean_ms": 5.5, "max_ms": 10.0},
            "buckets": [
                {"start_unix_ms": minute(59), "probes": 2, "failures": 0, "min_ms": 1.0, "mean_ms": 1.0, "max_ms": 1.0},
                {"start_unix_ms": minute(30), "probes": 2, "failures": 2, "min_ms": null, "mean_ms": null, "max_ms": null},
                {"start_unix_ms": minute(0), "probes": 3, "failures": 1, "min_ms": 10.0, "mean_ms": 10.0, "max_ms": 10.0},
                {"start_unix_ms": minute(90), "probes": 9, "failures": 0, "min_ms": 1.0, "mean_ms": 1.0, "max_ms": 1.0}
            ],
            "transitions": [
                {"unix_ms": now - 300_000, "state": "up", "reason_kind": "agreed", "reason": "first"},
                {"unix_ms": now - 120_000, "state": "excluded", "reason_kind": "not_fastest", "reason": "second"}
            ]
        });
        let text = render_history(&doc, now);
        let bars = format!("|▁{}█|", " ".repeat(58));
        assert!(text.contains(&bars), "{text}");
        let fails = format!("|{}x{}!|", " ".repeat(29), " ".repeat(29));
        assert!(text.contains(&fails), "{text}");
        assert!(text.contains("excluded: not among the fastest 1"), "{text}");
        assert!(text.contains("7 probes, 3 failed; passed min 1.0ms mean 5.5ms max 10.0ms"));
        let first = text.find("first").unwrap();
        assert!(first < text.find("second").unwrap(), "{text}");
    }
}
