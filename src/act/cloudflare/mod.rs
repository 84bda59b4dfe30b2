//! The `cloudflare` writer: Cloudflare's API v4 DNS records endpoints, authenticated with an API
//! token (<https://developers.cloudflare.com/api/resources/dns/subresources/records/>).
//!
//! - list: `GET /zones/{zone_id}/dns_records?name=FQDN&page=N&per_page=100`, every page up to
//!   `result_info.total_pages`;
//! - create: `POST /zones/{zone_id}/dns_records` with `{type, name, content, ttl, proxied}`;
//! - delete: `DELETE /zones/{zone_id}/dns_records/{id}`;
//! - TTL: `PATCH /zones/{zone_id}/dns_records/{id}` with `{ttl}`.
//!
//! Every answer is `{success, errors: [{code, message}], result, result_info}`; a failure's
//! messages are shown as Cloudflare wrote them. Cloudflare allows 1,200 requests per five minutes:
//! the writer sends at most four a second and retries 429 after `Retry-After`.
//!
//! With `proxied = true`, records are created proxied, and Cloudflare gives proxied records TTL 1
//! ("automatic") whatever was asked. A read then reports, for a proxied record, the TTL rrguard last
//! asked for at that name (TTL 1 until it asked, for instance after a restart, which costs one TTL
//! "change" that sends nothing), so the service core does not try to re-TTL it forever.
//!
//! No compare-and-swap: see [`crate::act::api::records`].

pub mod config;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use self::config::{CloudflareConfig, DEFAULT_CLOUDFLARE_RATE};
use super::api::records::{ApiRecord, RecordApi, RecordWriter, bare};
use super::api::{self, ApiClient, Reply, RetryPolicy, Verdict};
use super::{BuildError, WriteError};

/// Records asked for per listing page.
pub const DEFAULT_CLOUDFLARE_PAGE_SIZE: u32 = 100;
/// The TTL value Cloudflare calls "automatic" (and gives every proxied record).
pub const CLOUDFLARE_AUTOMATIC_TTL: u32 = 1;

/// The `cloudflare` writer.
pub type CloudflareWriter = RecordWriter<CloudflareApi>;

/// Builds the `cloudflare` writer named `name`.
///
/// # Errors
/// [`BuildError`] when the HTTP client cannot be built.
pub fn writer(name: &str, config: CloudflareConfig) -> Result<CloudflareWriter, BuildError> {
    Ok(RecordWriter::new(name, CloudflareApi::new(name, config)?))
}

/// Cloudflare's DNS records API for one zone.
#[derive(Debug)]
pub struct CloudflareApi {
    config: CloudflareConfig,
    client: ApiClient,
    page_size: u32,
    /// (fqdn, address) → the TTL last asked for, reported for proxied records.
    proxied_ttls: Mutex<HashMap<(String, String), u32>>,
}

#[derive(Debug, Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<Message>,
    result: Option<T>,
    result_info: Option<ResultInfo>,
}

#[derive(Debug, Deserialize)]
struct Message {
    code: Option<i64>,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct ResultInfo {
    page: u32,
    total_pages: u32,
}

#[derive(Debug, Deserialize)]
struct Record {
    id: String,
    #[serde(rename = "type")]
    rtype: String,
    name: String,
    content: String,
    ttl: u32,
    #[serde(default)]
    proxied: bool,
}

impl CloudflareApi {
    /// The API of the zone `config` names, for the writer `name`.
    ///
    /// # Errors
    /// [`BuildError`] when the HTTP client cannot be built.
    pub fn new(name: &str, config: CloudflareConfig) -> Result<Self, BuildError> {
        let client = ApiClient::new(
            &format!("cloudflare writer {name:?}"),
            &config.endpoint,
            config.timeout,
            DEFAULT_CLOUDFLARE_RATE,
            RetryPolicy::default(),
        )
        .map_err(|reason| BuildError {
            name: name.to_owned(),
            reason,
        })?;
        Ok(CloudflareApi {
            config,
            client,
            page_size: DEFAULT_CLOUDFLARE_PAGE_SIZE,
            proxied_ttls: Mutex::default(),
        })
    }

    async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Result<Reply, WriteError> {
        let url = self.client.url(
            &format!("/zones/{}/dns_records{path}", self.config.zone_id),
            query,
        )?;
        let auth = format!("Bearer {}", self.config.token.expose());
        let make = |http: &reqwest::Client| {
            api::json_request(
                http,
                method.clone(),
                &url,
                ("authorization", &auth),
                body.as_ref(),
            )
        };
        self.client.send(what, make, classify).await
    }

    fn remember(&self, fqdn: &str, content: &str, ttl: u32) {
        self.proxied_ttls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((fqdn.to_ascii_lowercase(), content.to_owned()), ttl);
    }
}

/// Cloudflare's answers: `success: false` with its `errors` is a failure even under HTTP 200;
/// authentication codes are for an operator whatever the status.
fn classify(reply: &Reply) -> Verdict {
    let envelope = serde_json::from_str::<Envelope<serde_json::Value>>(&reply.body).ok();
    let ok = envelope.as_ref().is_some_and(|e| e.success);
    if reply.status.is_success() && ok {
        return Verdict::Done;
    }
    let message = match &envelope {
        Some(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|m| match m.code {
                Some(c) => format!("{} (code {c})", m.message),
                None => m.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => format!("HTTP {}: {}", reply.status, api::snippet(&reply.body)),
    };
    // 6003/6111: malformed Authorization header; 9103, 9106, 9109, 10000: bad or unauthorised token.
    let auth_code = envelope.as_ref().is_some_and(|e| {
        e.errors
            .iter()
            .any(|m| matches!(m.code, Some(6003 | 6111 | 9103 | 9106 | 9109 | 10000)))
    });
    if auth_code {
        return Verdict::Fail(WriteError::Auth(format!(
            "{message} (check the API token: it needs Zone.DNS Edit on this zone)"
        )));
    }
    if reply.status.is_success() {
        return Verdict::Fail(WriteError::Rejected(message));
    }
    if reply.status == StatusCode::UNAUTHORIZED || reply.status == StatusCode::FORBIDDEN {
        return Verdict::Fail(WriteError::Auth(format!(
            "{message} (check the API token: it needs Zone.DNS Edit on this zone)"
        )));
    }
    api::classify_status(reply.status, message)
}

fn unexpected(client: &ApiClient, what: &str, e: WriteError) -> WriteError {
    client.prefixed(what, e)
}

#[async_trait]
impl RecordApi for CloudflareApi {
    async fn list(&self, fqdn: &str, _zone: &str) -> Result<Vec<ApiRecord>, WriteError> {
        let name = bare(fqdn).to_ascii_lowercase();
        let per_page = self.page_size.to_string();
        let records = api::collect_pages(1u32, |page| {
            let (name, per_page) = (&name, &per_page);
            async move {
                let page_text = page.to_string();
                let query = [
                    ("name", name.as_str()),
                    ("page", page_text.as_str()),
                    ("per_page", per_page.as_str()),
                ];
                let reply = self
                    .call("list DNS records", Method::GET, "", &query, None)
                    .await?;
                let e: Envelope<Vec<Record>> = reply
                    .json("list DNS records")
                    .map_err(|e| unexpected(&self.client, "list DNS records", e))?;
                let next = e
                    .result_info
                    .filter(|i| i.page < i.total_pages)
                    .map(|i| i.page + 1);
                let records = e
                    .result
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| bare(&r.name).eq_ignore_ascii_case(name))
                    .map(|r| ApiRecord {
                        id: r.id,
                        rtype: r.rtype,
                        content: r.content,
                        ttl: r.ttl,
                        proxied: r.proxied,
                    })
                    .collect();
                Ok((records, next))
            }
        })
        .await?;
        Ok(records)
    }

    async fn create(
        &self,
        fqdn: &str,
        _zone: &str,
        ip: IpAddr,
        ttl: u32,
    ) -> Result<(), WriteError> {
        let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
        let proxied = self.config.proxied;
        let body = json!({
            "type": rtype,
            "name": bare(fqdn).to_ascii_lowercase(),
            "content": ip.to_string(),
            "ttl": if proxied { CLOUDFLARE_AUTOMATIC_TTL } else { ttl },
            "proxied": proxied,
        });
        self.call("create a DNS record", Method::POST, "", &[], Some(body))
            .await?;
        if proxied {
            self.remember(fqdn, &ip.to_string(), ttl);
        }
        Ok(())
    }

    async fn delete(&self, _fqdn: &str, _zone: &str, record: &ApiRecord) -> Result<(), WriteError> {
        self.call(
            "delete a DNS record",
            Method::DELETE,
            &format!("/{}", record.id),
            &[],
            None,
        )
        .await?;
        Ok(())
    }

    async fn set_ttl(
        &self,
        fqdn: &str,
        _zone: &str,
        record: &ApiRecord,
        ttl: u32,
    ) -> Result<(), WriteError> {
        if record.proxied {
            // Cloudflare keeps proxied records at "automatic"; remember what was asked instead.
            self.remember(fqdn, &record.content, ttl);
            return Ok(());
        }
        self.call(
            "change a DNS record's TTL",
            Method::PATCH,
            &format!("/{}", record.id),
            &[],
            Some(json!({ "ttl": ttl })),
        )
        .await?;
        Ok(())
    }

    fn ttl_read(&self, fqdn: &str, record: &ApiRecord) -> u32 {
        if !record.proxied || record.ttl != CLOUDFLARE_AUTOMATIC_TTL {
            return record.ttl;
        }
        self.proxied_ttls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(fqdn.to_ascii_lowercase(), record.content.clone()))
            .copied()
            .unwrap_or(record.ttl)
    }

    fn set_page_size(&mut self, n: u32) {
        self.page_size = n;
    }

    fn set_retry(&mut self, retry: RetryPolicy) {
        self.client.set_retry(retry);
    }
}
