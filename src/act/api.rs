//! What the HTTP API writers (`route53`, `cloudflare`, `digitalocean`, `dynu`) share: an HTTP client
//! with timeouts over rustls, the classification of answers into [`WriteError`]s, a bounded retry loop
//! that honours `Retry-After`, a client-side rate limiter, a pagination loop, an API token that never
//! shows in logs, and the config pieces every such writer has (`endpoint`, `timeout`, `token` /
//! `token_file`).
//!
//! Each writer owns its request and response shapes; this module knows only HTTP.
//!
//! Classification (the same for every API unless the writer says otherwise through its own
//! classifier): 2xx succeeds; 401 and 403 are [`WriteError::Auth`]; 429, 5xx and every network
//! failure or timeout are [`WriteError::Transient`] and retried here; any other status (400, 404,
//! 409, 422, …) is [`WriteError::Rejected`] with the API's own message.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tokio::sync::Mutex;
use tokio::time::Instant;

pub mod records;

use super::WriteError;
use crate::config::Seg::Key;
use crate::config::{Errors, SecretKeys, SecretSource, Seg, read_secret_as, with};

/// Default limit of one HTTP exchange with an API (connect, send, whole answer).
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of one request after a transient failure (so at most 1 + this many attempts).
pub const DEFAULT_MAX_RETRIES: u32 = 4;
/// Longest time one request may take with all its retries and waits.
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(30);
/// First wait before a retry when the server names none; doubled each time.
pub const DEFAULT_FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Most pages read for one listing; a server that never ends its pages is a server error.
pub const MAX_PAGES: usize = 100;

/// How a request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Limit of the whole request, waits included: a wait that would pass it is not started.
    pub deadline: Duration,
    /// Wait before the first retry when the server names none (doubled each retry).
    pub first_backoff: Duration,
    /// Longest single wait, also for a server's `Retry-After`.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: DEFAULT_MAX_RETRIES,
            deadline: DEFAULT_RETRY_DEADLINE,
            first_backoff: DEFAULT_FIRST_BACKOFF,
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// An API token (a bearer token, an API key). Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// A token from its text, surrounding whitespace (a file's newline) removed.
    pub fn new(text: &str) -> Self {
        ApiToken(text.trim().to_owned())
    }

    /// The token, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// An answer read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body (invalid UTF-8 replaced).
    pub body: String,
}

impl Reply {
    /// The body as JSON of type `T`.
    ///
    /// # Errors
    /// [`WriteError::Transient`] naming `what` when the body is not that JSON: an API that answers
    /// garbage is failing, and may answer properly next time.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, WriteError> {
        serde_json::from_str(&self.body).map_err(|e| {
            WriteError::Transient(format!(
                "{what}: unexpected answer (HTTP {}): {e}: {}",
                self.status,
                snippet(&self.body)
            ))
        })
    }

    /// The server's `Retry-After`, in seconds or as an HTTP date.
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers, SystemTime::now())
    }
}

/// What a writer's classifier makes of an answer.
#[derive(Debug)]
pub enum Verdict {
    /// Success: hand the reply to the writer.
    Done,
    /// Transient: retry (after the server's `Retry-After` if it sent one, else backoff).
    Retry(String),
    /// Final failure.
    Fail(WriteError),
}

/// The default classification of a non-2xx status, with `message` the API's own words.
pub fn classify_status(status: StatusCode, message: String) -> Verdict {
    if status.is_success() {
        Verdict::Done
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Verdict::Retry(message)
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        Verdict::Fail(WriteError::Auth(message))
    } else {
        Verdict::Fail(WriteError::Rejected(message))
    }
}

/// The first 300 characters of a body, for messages.
pub fn snippet(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_owned(),
    }
}

/// `Retry-After` of `headers` (RFC 9110 §10.2.3: seconds, or an HTTP date) as a wait from `now`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Spaces requests at least `1 / rate` apart (a token bucket of one): a writer's client-side share
/// of an API's rate limit.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// At most `per_second` requests each second (at least one).
    pub fn per_second(per_second: u32) -> Self {
        Self::every(Duration::from_secs(1) / per_second.max(1))
    }

    /// At most one request each `interval`.
    pub fn every(interval: Duration) -> Self {
        RateLimiter {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Waits for the next slot and takes it.
    pub async fn acquire(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        let at = next.map_or(now, |n| n.max(now));
        *next = Some(at + self.interval);
        drop(next);
        tokio::time::sleep_until(at).await;
    }
}

/// An HTTP client for one API: its base URL, timeouts, retry policy and rate limit.
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    limiter: RateLimiter,
    /// What failures are about, such as `cloudflare writer "cf"`.
    label: String,
}

impl ApiClient {
    /// A client for the API at `base` (no trailing slash needed), each exchange limited to
    /// `timeout`, at most `per_second` requests each second.
    ///
    /// # Errors
    /// A message when the TLS client cannot be built.
    pub fn new(
        label: &str,
        base: &Url,
        timeout: Duration,
        per_second: u32,
        retry: RetryPolicy,
    ) -> Result<Self, String> {
        crate::observe::probe::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("rrguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(ApiClient {
            http,
            base: base.clone(),
            retry,
            limiter: RateLimiter::per_second(per_second),
            label: label.to_owned(),
        })
    }

    /// The underlying client, to build requests with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Retries by `retry` from now on.
    pub fn set_retry(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    /// The label failures are prefixed with.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// `next` (a URL an API gave, such as a next-page link) re-rooted on the base URL: only its path
    /// and query are kept, so that a token is never sent to another host.
    ///
    /// # Errors
    /// [`WriteError::Transient`] when `next` is not a URL (a broken answer).
    pub fn same_origin(&self, next: &str) -> Result<Url, WriteError> {
        let next = Url::parse(next)
            .or_else(|_| self.base.join(next))
            .map_err(|e| {
                WriteError::Transient(format!("{}: bad next-page link {next:?}: {e}", self.label))
            })?;
        let mut url = self.base.clone();
        url.set_path(next.path());
        url.set_query(next.query());
        Ok(url)
    }

    /// `path` (which starts with `/`) under the base URL, with `query` pairs.
    ///
    /// # Errors
    /// [`WriteError::Rejected`] if the result is not a URL.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, WriteError> {
        let base = self.base.as_str().trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}{path}")).map_err(|e| {
            WriteError::Rejected(format!("{}: bad URL {base}{path}: {e}", self.label))
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends the request `make` builds (again for each attempt) until it succeeds, fails for good,
    /// or runs out of retries or time. `classify` judges each answer; network errors and timeouts are
    /// retried.
    ///
    /// # Errors
    /// The [`WriteError`] of the last attempt, its message prefixed with the client's label.
    pub async fn send(
        &self,
        what: &str,
        make: impl Fn(&reqwest::Client) -> Result<reqwest::Request, WriteError>,
        classify: impl Fn(&Reply) -> Verdict,
    ) -> Result<Reply, WriteError> {
        let start = Instant::now();
        let mut backoff = self.retry.first_backoff;
        let mut attempt = 0;
        loop {
            let request = make(&self.http)?;
            self.limiter.acquire().await;
            let (message, server_wait) = match self.http.execute(request).await {
                Err(e) => (network_error(&e), None),
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match response.bytes().await {
                        Err(e) => (network_error(&e), None),
                        Ok(body) => {
                            let reply = Reply {
                                status,
                                headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            };
                            match classify(&reply) {
                                Verdict::Done => return Ok(reply),
                                Verdict::Fail(e) => return Err(self.prefixed(what, e)),
                                Verdict::Retry(m) => (m, reply.retry_after()),
                            }
                        }
                    }
                }
            };
            let wait = server_wait.unwrap_or(backoff).min(self.retry.max_backoff);
            let spent = start.elapsed();
            if attempt >= self.retry.max_retries || spent + wait > self.retry.deadline {
                let tries = attempt + 1;
                return Err(WriteError::Transient(format!(
                    "{}: {what}: {message} ({tries} attempt{} in {:.1}s)",
                    self.label,
                    if tries == 1 { "" } else { "s" },
                    spent.as_secs_f64()
                )));
            }
            tracing::debug!(writer = %self.label, %what, %message, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
            attempt += 1;
        }
    }

    /// `e` with its message prefixed by the label and `what`.
    pub fn prefixed(&self, what: &str, e: WriteError) -> WriteError {
        let p = |m: String| format!("{}: {what}: {m}", self.label);
        match e {
            WriteError::Conflict(m) => WriteError::Conflict(p(m)),
            WriteError::Transient(m) => WriteError::Transient(p(m)),
            WriteError::Auth(m) => WriteError::Auth(p(m)),
            WriteError::Rejected(m) => WriteError::Rejected(p(m)),
        }
    }
}

/// A JSON API request: `method` on `url` with the header `auth` (`Authorization: Bearer …`,
/// `API-Key: …`), `Accept: application/json`, and `body` as JSON (`Content-Type: application/json`).
///
/// # Errors
/// [`WriteError::Rejected`] when the request cannot be built (a header value with a newline).
pub fn json_request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &Url,
    auth: (&str, &str),
    body: Option<&serde_json::Value>,
) -> Result<reqwest::Request, WriteError> {
    let mut builder = http
        .request(method, url.clone())
        .header(auth.0, auth.1)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(body) = body {
        builder = builder
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    builder
        .build()
        .map_err(|e| WriteError::Rejected(format!("cannot build the request: {e}")))
}

/// A network error in words, with its causes (reqwest's top level says only "error sending request").
fn network_error(e: &reqwest::Error) -> String {
    let mut message = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Reads pages until `fetch` returns no next cursor, starting at `first`, at most [`MAX_PAGES`].
///
/// # Errors
/// The first error of `fetch`; [`WriteError::Transient`] if the pages do not end.
pub async fn collect_pages<T, C, F, Fut>(first: C, mut fetch: F) -> Result<Vec<T>, WriteError>
where
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<C>), WriteError>>,
{
    let mut out = Vec::new();
    let mut cursor = Some(first);
    for _ in 0..MAX_PAGES {
        let Some(c) = cursor.take() else {
            return Ok(out);
        };
        let (items, next) = fetch(c).await?;
        out.extend(items);
        cursor = next;
    }
    if cursor.is_none() {
        return Ok(out);
    }
    Err(WriteError::Transient(format!(
        "the listing did not end after {MAX_PAGES} pages"
    )))
}

// ---- Config pieces every API writer shares. ----

/// Validates `endpoint` at `at`: an `http` or `https` URL; `default` when absent.
pub(crate) fn endpoint(
    raw: Option<&str>,
    default: &str,
    at: &[Seg],
    errs: &mut Errors,
) -> Option<Url> {
    let text = raw.unwrap_or(default);
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(_) | Err(_) => {
            errs.at(
                at,
                format!(
                    "endpoint {text:?} is not an http(s) URL; write it like \"{default}\" (or \"http://127.0.0.1:8080\" for a local test server)"
                ),
            );
            None
        }
    }
}

/// Validates the `token` / `token_file` pair of the table at `table`; `what` names the API in
/// messages ("Cloudflare API token").
pub(crate) fn token(
    inline: Option<&str>,
    file: Option<&str>,
    table: &[Seg],
    what: &str,
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<ApiToken> {
    let source = SecretSource { inline, file };
    let keys = SecretKeys {
        inline: "token",
        file: "token_file",
    };
    let missing = format!("{what} needed: set `token = \"…\"` or `token_file = \"PATH\"`");
    let text = read_secret_as(source, keys, table, what, &missing, base_dir, errs)?;
    let token = ApiToken::new(text.text());
    if token.expose().is_empty() {
        errs.at(text.at(), format!("{what} is empty"));
        return None;
    }
    if token.expose().chars().any(|c| c.is_control() || c == ' ') {
        errs.at(
            text.at(),
            format!("{what} has spaces or control characters inside; it must be one word"),
        );
        return None;
    }
    Some(token)
}

/// `timeout`, positive; [`DEFAULT_API_TIMEOUT`] when absent.
pub(crate) fn timeout(raw: Option<Duration>, table: &[Seg], errs: &mut Errors) -> Duration {
    match raw {
        Some(d) if d.is_zero() => {
            errs.at(
                &with(table, &[Key("timeout")]),
                "timeout must be more than 0",
            );
            DEFAULT_API_TIMEOUT
        }
        Some(d) => d,
        None => DEFAULT_API_TIMEOUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut h = HeaderMap::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(12));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(12)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn statuses_are_classified() {
        let kind =
            |code: u16| match classify_status(StatusCode::from_u16(code).unwrap(), "m".into()) {
                Verdict::Done => "done",
                Verdict::Retry(_) => "retry",
                Verdict::Fail(WriteError::Auth(_)) => "auth",
                Verdict::Fail(WriteError::Rejected(_)) => "rejected",
                Verdict::Fail(_) => "other",
            };
        assert_eq!(kind(200), "done");
        assert_eq!(kind(204), "done");
        assert_eq!(kind(401), "auth");
        assert_eq!(kind(403), "auth");
        assert_eq!(kind(400), "rejected");
        assert_eq!(kind(404), "rejected");
        assert_eq!(kind(422), "rejected");
        assert_eq!(kind(429), "retry");
        assert_eq!(kind(500), "retry");
        assert_eq!(kind(503), "retry");
    }

    #[test]
    fn a_token_never_shows_in_debug() {
        let t = ApiToken::new("  s3cr3t-token\n");
        assert_eq!(t.expose(), "s3cr3t-token");
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_requests() {
        let l = RateLimiter::per_second(5);
        let start = Instant::now();
        for _ in 0..6 {
            l.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn pages_are_collected_until_the_last() {
        let pages = collect_pages(
            0u32,
            |n| async move { Ok((vec![n], (n < 3).then_some(n + 1))) },
        )
        .await
        .unwrap();
        assert_eq!(pages, vec![0, 1, 2, 3]);
        let endless = collect_pages(0u32, |n| async move { Ok((vec![n], Some(n + 1))) }).await;
        assert!(matches!(endless, Err(WriteError::Transient(_))));
    }
}
