//! The `digitalocean` writer: DigitalOcean's Domain Records API, authenticated with an API token
//! (<https://docs.digitalocean.com/reference/api/digitalocean/#tag/Domain-Records>).
//!
//! - list: `GET /v2/domains/{domain}/records?name=FQDN&per_page=200`, following
//!   `links.pages.next` (re-rooted on the configured endpoint, so the token never goes elsewhere);
//! - create: `POST /v2/domains/{domain}/records` with `{type, name, data, ttl}`, `name` relative to
//!   the domain (`@` at the apex);
//! - delete: `DELETE /v2/domains/{domain}/records/{id}`;
//! - TTL: `PATCH /v2/domains/{domain}/records/{id}` with `{type, ttl}`.
//!
//! Errors are `{id, message}`. DigitalOcean allows 250 requests a minute (and 5,000 an hour) per
//! token and answers 429 past that, with `ratelimit-reset`: the writer sends at most four a second
//! and retries 429 after `Retry-After` when given, else with backoff.
//!
//! No compare-and-swap: see [`crate::act::api::records`].

pub mod config;

use std::net::IpAddr;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use self::config::{DEFAULT_DIGITALOCEAN_RATE, DigitalOceanConfig};
use super::api::records::{ApiRecord, RecordApi, RecordWriter, bare, relative};
use super::api::{self, ApiClient, Reply, RetryPolicy, Verdict};
use super::{BuildError, WriteError};

/// Records asked for per listing page (DigitalOcean's most).
pub const DEFAULT_DIGITALOCEAN_PAGE_SIZE: u32 = 200;

/// The `digitalocean` writer.
pub type DigitalOceanWriter = RecordWriter<DigitalOceanApi>;

/// Builds the `digitalocean` writer named `name`.
///
/// # Errors
/// [`BuildError`] when the HTTP client cannot be built.
pub fn writer(name: &str, config: DigitalOceanConfig) -> Result<DigitalOceanWriter, BuildError> {
    Ok(RecordWriter::new(name, DigitalOceanApi::new(name, config)?))
}

/// DigitalOcean's Domain Records API.
#[derive(Debug)]
pub struct DigitalOceanApi {
    config: DigitalOceanConfig,
    client: ApiClient,
    page_size: u32,
}

#[derive(Debug, Deserialize)]
struct ListAnswer {
    #[serde(default)]
    domain_records: Vec<Record>,
    links: Option<Links>,
}

#[derive(Debug, Deserialize)]
struct Links {
    pages: Option<Pages>,
}

#[derive(Debug, Deserialize)]
struct Pages {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Record {
    id: u64,
    #[serde(rename = "type")]
    rtype: String,
    name: String,
    data: String,
    ttl: u32,
}

#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    id: Option<String>,
    message: Option<String>,
}

impl DigitalOceanApi {
    /// The API as `config` says, for the writer `name`.
    ///
    /// # Errors
    /// [`BuildError`] when the HTTP client cannot be built.
    pub fn new(name: &str, config: DigitalOceanConfig) -> Result<Self, BuildError> {
        let client = ApiClient::new(
            &format!("digitalocean writer {name:?}"),
            &config.endpoint,
            config.timeout,
            DEFAULT_DIGITALOCEAN_RATE,
            RetryPolicy::default(),
        )
        .map_err(|reason| BuildError {
            name: name.to_owned(),
            reason,
        })?;
        Ok(DigitalOceanApi {
            config,
            client,
            page_size: DEFAULT_DIGITALOCEAN_PAGE_SIZE,
        })
    }

    /// The domain records of `zone` live in.
    fn domain(&self, zone: &str) -> String {
        self.config
            .domain
            .clone()
            .unwrap_or_else(|| bare(zone).to_ascii_lowercase())
    }

    /// `fqdn` as DigitalOcean names records: relative to the domain, `@` at the apex.
    fn record_name(&self, fqdn: &str, zone: &str) -> Result<String, WriteError> {
        let domain = self.domain(zone);
        relative(fqdn, &domain)
            .map(|r| r.unwrap_or_else(|| "@".to_owned()))
            .map_err(|e| self.client.prefixed("record name", e))
    }

    async fn call(
        &self,
        what: &str,
        method: Method,
        url: reqwest::Url,
        body: Option<serde_json::Value>,
    ) -> Result<Reply, WriteError> {
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

    fn records_url(
        &self,
        zone: &str,
        tail: &str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::Url, WriteError> {
        self.client.url(
            &format!("/v2/domains/{}/records{tail}", self.domain(zone)),
            query,
        )
    }
}

/// DigitalOcean's answers: `{id, message}` on failure, classified by status.
fn classify(reply: &Reply) -> Verdict {
    if reply.status.is_success() {
        return Verdict::Done;
    }
    let message = match serde_json::from_str::<ErrorAnswer>(&reply.body) {
        Ok(ErrorAnswer {
            id,
            message: Some(m),
        }) => match id {
            Some(id) => format!("{m} ({id})"),
            None => m,
        },
        _ => format!("HTTP {}: {}", reply.status, api::snippet(&reply.body)),
    };
    match api::classify_status(reply.status, message) {
        Verdict::Fail(WriteError::Auth(m)) => Verdict::Fail(WriteError::Auth(format!(
            "{m} (check the API token: it needs write scope)"
        ))),
        other => other,
    }
}

#[async_trait]
impl RecordApi for DigitalOceanApi {
    async fn list(&self, fqdn: &str, zone: &str) -> Result<Vec<ApiRecord>, WriteError> {
        let name = self.record_name(fqdn, zone)?;
        let per_page = self.page_size.to_string();
        let first = self.records_url(
            zone,
            "",
            &[
                ("name", &bare(fqdn).to_ascii_lowercase()),
                ("per_page", &per_page),
            ],
        )?;
        api::collect_pages(first, |url| {
            let name = &name;
            async move {
                let reply = self
                    .call("list domain records", Method::GET, url, None)
                    .await?;
                let answer: ListAnswer = reply
                    .json("list domain records")
                    .map_err(|e| self.client.prefixed("list domain records", e))?;
                let next = match answer.links.and_then(|l| l.pages).and_then(|p| p.next) {
                    Some(n) => Some(self.client.same_origin(&n)?),
                    None => None,
                };
                let records = answer
                    .domain_records
                    .into_iter()
                    .filter(|r| r.name.eq_ignore_ascii_case(name))
                    .map(|r| ApiRecord {
                        id: r.id.to_string(),
                        content: if r.rtype == "CNAME" && r.data == "@" {
                            format!("{}.", self.domain(zone))
                        } else {
                            r.data
                        },
                        rtype: r.rtype,
                        ttl: r.ttl,
                        proxied: false,
                    })
                    .collect();
                Ok((records, next))
            }
        })
        .await
    }

    async fn create(&self, fqdn: &str, zone: &str, ip: IpAddr, ttl: u32) -> Result<(), WriteError> {
        let body = json!({
            "type": if ip.is_ipv4() { "A" } else { "AAAA" },
            "name": self.record_name(fqdn, zone)?,
            "data": ip.to_string(),
            "ttl": ttl,
        });
        let url = self.records_url(zone, "", &[])?;
        self.call("create a domain record", Method::POST, url, Some(body))
            .await?;
        Ok(())
    }

    async fn delete(&self, _fqdn: &str, zone: &str, record: &ApiRecord) -> Result<(), WriteError> {
        let url = self.records_url(zone, &format!("/{}", record.id), &[])?;
        self.call("delete a domain record", Method::DELETE, url, None)
            .await?;
        Ok(())
    }

    async fn set_ttl(
        &self,
        _fqdn: &str,
        zone: &str,
        record: &ApiRecord,
        ttl: u32,
    ) -> Result<(), WriteError> {
        let url = self.records_url(zone, &format!("/{}", record.id), &[])?;
        let body = json!({ "type": record.rtype, "ttl": ttl });
        self.call(
            "change a domain record's TTL",
            Method::PATCH,
            url,
            Some(body),
        )
        .await?;
        Ok(())
    }

    fn set_page_size(&mut self, n: u32) {
        self.page_size = n;
    }

    fn set_retry(&mut self, retry: RetryPolicy) {
        self.client.set_retry(retry);
    }
}
