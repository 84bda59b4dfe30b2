//! The `webhook` writer: POSTs every operation as one JSON document ([`super::plugin`], the same
//! schema a `script` gets on stdin, documented in `docs/writers.md`) to a configured URL, signed with
//! HMAC-SHA256, and takes the outcome from the status: 2xx done (with the `read` reply as body), 409
//! precondition failed, 401/403 authentication, 408/429/5xx and network failures transient, anything
//! else rejected.
//!
//! **Signature.** `X-Rrguard-Timestamp: <unix seconds>` and
//! `X-Rrguard-Signature: sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>` ([`sign`]): a
//! receiver recomputes it over the raw body, compares in constant time, and refuses timestamps far
//! from its clock, so a captured request cannot be replayed later.
//!
//! **One attempt per call.** Retries and backoff belong to the service core; redirects are not
//! followed (a 3xx is an error naming the status), no proxy is used, and a response body larger than
//! [`MAX_REPLY_BYTES`] is an error, never buffered whole.

pub mod config;

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use ring::hmac;

use super::plugin::{self, MAX_REPLY_BYTES, Outcome, Request, excerpt};
use super::{BuildError, Capabilities, Published, RecordChange, WriteError, Writer};
pub use config::{DEFAULT_WEBHOOK_TIMEOUT, RawWebhook, WebhookConfig};

/// The header carrying the request's Unix time, seconds.
pub const TIMESTAMP_HEADER: &str = "X-Rrguard-Timestamp";
/// The header carrying the signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Rrguard-Signature";

/// POSTs each operation to a URL.
#[derive(Debug)]
pub struct WebhookWriter {
    name: String,
    config: WebhookConfig,
    client: reqwest::Client,
    /// The URL as messages show it: without its query string, which may carry a token.
    shown_url: String,
}

/// The signature header value for `body` sent at `timestamp` (Unix seconds):
/// `sha256=` and the lower-case hex of HMAC-SHA256(`secret`, `"{timestamp}." + body`) (RFC 2104).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl WebhookWriter {
    /// A writer posting to `config.url`. No connection is made until first use.
    ///
    /// # Errors
    /// [`BuildError`] when the HTTP client cannot be set up (no usable TLS roots).
    pub fn new(name: &str, config: WebhookConfig) -> Result<Self, BuildError> {
        crate::observe::probe::ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("rrguard/", env!("CARGO_PKG_VERSION"), " webhook"))
            .build()
            .map_err(|e| BuildError {
                name: name.to_owned(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(WebhookWriter {
            name: name.to_owned(),
            shown_url: config::shown_url(&config.url),
            config,
            client,
        })
    }

    /// POSTs `request`; the response body on 2xx, the classified error otherwise.
    async fn call(&self, request: &Request<'_>) -> Result<Vec<u8>, WriteError> {
        let op = request.operation;
        let what = format!(
            "writer {:?}: POST {} ({} {})",
            self.name,
            self.shown_url,
            op.as_str(),
            request.fqdn
        );
        let body = request.to_json();
        // Wall-clock time: it leaves the process and the receiver compares it with its own clock.
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut req = self.client.post(self.config.url.clone());
        for (k, v) in &self.config.headers {
            req = req.header(k, v);
        }
        let mut resp = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                SIGNATURE_HEADER,
                sign(&self.config.secret, timestamp, &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| self.network_error(&what, &e))?;
        let status = resp.status();
        let mut reply = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    reply.extend_from_slice(&chunk);
                    if reply.len() > MAX_REPLY_BYTES {
                        return Err(WriteError::Rejected(format!(
                            "{what}: the response is larger than {MAX_REPLY_BYTES} bytes"
                        )));
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(self.network_error(&what, &e)),
            }
        }
        let outcome = Outcome::of_status(status.as_u16());
        if outcome == Outcome::Ok {
            return Ok(reply);
        }
        Err(plugin::error_for(
            outcome,
            op,
            format!(
                "{what} answered {status} ({}); body: {}",
                outcome.as_str(),
                excerpt(&reply)
            ),
        ))
    }

    fn network_error(&self, what: &str, e: &reqwest::Error) -> WriteError {
        if e.is_timeout() {
            return WriteError::Transient(format!(
                "{what} timed out after {}",
                humantime::format_duration(self.config.timeout)
            ));
        }
        // The innermost cause is what an operator needs ("Connection refused").
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        WriteError::Transient(format!("{what} failed: {detail}"))
    }
}

#[async_trait]
impl Writer for WebhookWriter {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            compare_and_swap: self.config.compare_and_swap,
            read_back: self.config.read_back,
            ..Capabilities::default()
        }
    }

    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError> {
        let body = self.call(&Request::read(&self.name, fqdn, zone)).await?;
        plugin::parse_read_reply(&body).map_err(|m| {
            WriteError::Rejected(format!(
                "writer {:?}: POST {} (read {fqdn}): {m}",
                self.name, self.shown_url
            ))
        })
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        let body = self.call(&Request::apply(&self.name, change)).await?;
        plugin::check_apply_reply(&body).map_err(|m| {
            WriteError::Rejected(format!(
                "writer {:?}: POST {} (apply {}): {m}",
                self.name, self.shown_url, change.fqdn
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    /// A known answer computed independently (Python's `hmac`, `openssl dgst -sha256 -hmac Jefe`).
    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        assert_eq!(
            super::sign(b"Jefe", 1700000000, b"{\"version\":1}"),
            "sha256=11c6a57e329385bb25185175112f9105b5e1927c400fbcc7bc64da526d7232c5"
        );
    }
}
