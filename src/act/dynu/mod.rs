//! The `dynu` writer: Dynu's API v2, authenticated with an API key in the `API-Key` header
//! (<https://www.dynu.com/Support/API>).
//!
//! - the domain's ID: `domain_id`, else `GET /dns` and the domain named like the service's zone;
//! - list: `GET /dns/{id}/record` (every record of the domain, in one answer: Dynu documents no
//!   pagination), filtered to the name;
//! - create: `POST /dns/{id}/record` with `{nodeName, recordType, ttl, state: true, group,
//!   ipv4Address | ipv6Address}`, `nodeName` relative to the domain (empty at the apex);
//! - delete: `DELETE /dns/{id}/record/{recordId}`;
//! - TTL: `POST /dns/{id}/record/{recordId}` with the whole record and the new `ttl`.
//!
//! Answers carry `statusCode` in the body as well; an error is `{statusCode, type, message}`. Dynu
//! documents no rate limit: the writer sends at most two requests a second and retries 429 and
//! 5xx. Where Dynu's documentation is thin (the apex's `nodeName`, the update's body), the shapes
//! follow the documented examples and the fields its list returns.
//!
//! No compare-and-swap: see [`crate::act::api::records`].

pub mod config;

use std::collections::HashMap;
use std::net::IpAddr;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use self::config::{DEFAULT_DYNU_RATE, DynuConfig};
use super::api::records::{ApiRecord, RecordApi, RecordWriter, bare, relative};
use super::api::{self, ApiClient, Reply, RetryPolicy, Verdict};
use super::{BuildError, WriteError};

/// The `dynu` writer.
pub type DynuWriter = RecordWriter<DynuApi>;

/// Builds the `dynu` writer named `name`.
///
/// # Errors
/// [`BuildError`] when the HTTP client cannot be built.
pub fn writer(name: &str, config: DynuConfig) -> Result<DynuWriter, BuildError> {
    Ok(RecordWriter::new(name, DynuApi::new(name, config)?))
}

/// Dynu's DNS API.
#[derive(Debug)]
pub struct DynuApi {
    config: DynuConfig,
    client: ApiClient,
    /// Zone name (bare, lower case) → domain ID, as looked up.
    ids: Mutex<HashMap<String, u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Domains {
    #[serde(default)]
    domains: Vec<Domain>,
}

#[derive(Debug, Deserialize)]
struct Domain {
    id: u64,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Records {
    #[serde(default)]
    dns_records: Vec<Record>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    id: u64,
    #[serde(default)]
    node_name: String,
    record_type: String,
    ttl: u32,
    ipv4_address: Option<String>,
    ipv6_address: Option<String>,
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    status_code: Option<u16>,
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

impl DynuApi {
    /// The API as `config` says, for the writer `name`.
    ///
    /// # Errors
    /// [`BuildError`] when the HTTP client cannot be built.
    pub fn new(name: &str, config: DynuConfig) -> Result<Self, BuildError> {
        let client = ApiClient::new(
            &format!("dynu writer {name:?}"),
            &config.endpoint,
            config.timeout,
            DEFAULT_DYNU_RATE,
            RetryPolicy::default(),
        )
        .map_err(|reason| BuildError {
            name: name.to_owned(),
            reason,
        })?;
        Ok(DynuApi {
            config,
            client,
            ids: Mutex::default(),
        })
    }

    async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Reply, WriteError> {
        let url = self.client.url(path, &[])?;
        let key = self.config.token.expose();
        let make = |http: &reqwest::Client| {
            api::json_request(http, method.clone(), &url, ("API-Key", key), body.as_ref())
        };
        self.client.send(what, make, classify).await
    }

    /// The domain ID of `zone`: configured, or looked up once and kept.
    async fn domain_id(&self, zone: &str) -> Result<u64, WriteError> {
        if let Some(id) = self.config.domain_id {
            return Ok(id);
        }
        let name = bare(zone).to_ascii_lowercase();
        let mut ids = self.ids.lock().await;
        if let Some(id) = ids.get(&name) {
            return Ok(*id);
        }
        let reply = self.call("list domains", Method::GET, "/dns", None).await?;
        let domains: Domains = reply
            .json("list domains")
            .map_err(|e| self.client.prefixed("list domains", e))?;
        let Some(id) = domains
            .domains
            .iter()
            .find(|d| bare(&d.name).eq_ignore_ascii_case(&name))
            .map(|d| d.id)
        else {
            let names: Vec<&str> = domains.domains.iter().map(|d| d.name.as_str()).collect();
            return Err(self.client.prefixed(
                "list domains",
                WriteError::Rejected(format!(
                    "the account has no domain {name} (it has: {}); add it at Dynu, fix the service's zone, or set domain_id",
                    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                )),
            ));
        };
        ids.insert(name, id);
        Ok(id)
    }

    fn node_name(&self, fqdn: &str, zone: &str) -> Result<String, WriteError> {
        relative(fqdn, zone)
            .map(Option::unwrap_or_default)
            .map_err(|e| self.client.prefixed("record name", e))
    }

    fn body(node: &str, rtype: &str, address: &str, ttl: u32) -> serde_json::Value {
        let field = if rtype == "AAAA" {
            "ipv6Address"
        } else {
            "ipv4Address"
        };
        json!({
            "nodeName": node,
            "recordType": rtype,
            "ttl": ttl,
            "state": true,
            "group": "",
            field: address,
        })
    }
}

/// Dynu's answers: the body's `statusCode` counts as much as the HTTP status.
fn classify(reply: &Reply) -> Verdict {
    let status = serde_json::from_str::<Status>(&reply.body).ok();
    let code = status
        .as_ref()
        .and_then(|s| s.status_code)
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|_| reply.status.is_success())
        .unwrap_or(reply.status);
    if code.is_success() {
        return Verdict::Done;
    }
    let message = match status {
        Some(Status {
            message: Some(m),
            kind,
            ..
        }) => match kind {
            Some(k) => format!("{k}: {m}"),
            None => m,
        },
        _ => format!("HTTP {}: {}", reply.status, api::snippet(&reply.body)),
    };
    match api::classify_status(code, message) {
        Verdict::Fail(WriteError::Auth(m)) => Verdict::Fail(WriteError::Auth(format!(
            "{m} (check the API key, from Dynu's control panel, API Credentials)"
        ))),
        other => other,
    }
}

#[async_trait]
impl RecordApi for DynuApi {
    async fn list(&self, fqdn: &str, zone: &str) -> Result<Vec<ApiRecord>, WriteError> {
        let node = self.node_name(fqdn, zone)?;
        let id = self.domain_id(zone).await?;
        let reply = self
            .call(
                "list DNS records",
                Method::GET,
                &format!("/dns/{id}/record"),
                None,
            )
            .await?;
        let records: Records = reply
            .json("list DNS records")
            .map_err(|e| self.client.prefixed("list DNS records", e))?;
        Ok(records
            .dns_records
            .into_iter()
            .filter(|r| r.node_name.eq_ignore_ascii_case(&node))
            .map(|r| ApiRecord {
                id: r.id.to_string(),
                content: match r.record_type.as_str() {
                    "A" => r.ipv4_address.unwrap_or_default(),
                    "AAAA" => r.ipv6_address.unwrap_or_default(),
                    _ => r.host.unwrap_or_default(),
                },
                rtype: r.record_type,
                ttl: r.ttl,
                proxied: false,
            })
            .collect())
    }

    async fn create(&self, fqdn: &str, zone: &str, ip: IpAddr, ttl: u32) -> Result<(), WriteError> {
        let node = self.node_name(fqdn, zone)?;
        let id = self.domain_id(zone).await?;
        let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
        let body = Self::body(&node, rtype, &ip.to_string(), ttl);
        self.call(
            "create a DNS record",
            Method::POST,
            &format!("/dns/{id}/record"),
            Some(body),
        )
        .await?;
        Ok(())
    }

    async fn delete(&self, _fqdn: &str, zone: &str, record: &ApiRecord) -> Result<(), WriteError> {
        let id = self.domain_id(zone).await?;
        self.call(
            "delete a DNS record",
            Method::DELETE,
            &format!("/dns/{id}/record/{}", record.id),
            None,
        )
        .await?;
        Ok(())
    }

    async fn set_ttl(
        &self,
        fqdn: &str,
        zone: &str,
        record: &ApiRecord,
        ttl: u32,
    ) -> Result<(), WriteError> {
        let node = self.node_name(fqdn, zone)?;
        let id = self.domain_id(zone).await?;
        let body = Self::body(&node, &record.rtype, &record.content, ttl);
        self.call(
            "change a DNS record's TTL",
            Method::POST,
            &format!("/dns/{id}/record/{}", record.id),
            Some(body),
        )
        .await?;
        Ok(())
    }

    fn set_page_size(&mut self, _n: u32) {
        // Dynu lists a domain's records in one answer.
    }

    fn set_retry(&mut self, retry: RetryPolicy) {
        self.client.set_retry(retry);
    }
}
