//! A writer over a per-record DNS API (`cloudflare`, `digitalocean`, `dynu`): APIs that list the
//! records of a name and create, delete and re-TTL one record at a time, with no conditional write.
//!
//! [`RecordWriter`] holds what they share: reading a name into [`Published`], and applying a change
//! as creates first (the name never goes empty on the way), then deletes, then TTL updates of the
//! records kept in every RRset the change touches (an RRset has one TTL, RFC 2181 §5.2). Each API
//! implements [`RecordApi`]: its endpoints, its JSON, its names.
//!
//! None of these APIs can make a write conditional, so the writer declares no compare-and-swap: the
//! change's precondition is not checked, and the service core re-reads and repairs after each write.
//! A failure half-way through a change leaves part of it applied; the next read shows it and the core
//! plans the rest.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use async_trait::async_trait;

use super::RetryPolicy;
use crate::act::{Capabilities, Family, Published, RecordChange, WriteError, Writer};

/// One record as a per-record API stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRecord {
    /// The API's ID of the record.
    pub id: String,
    /// `A`, `AAAA`, `CNAME`, …
    pub rtype: String,
    /// The value (an address, a CNAME target).
    pub content: String,
    /// TTL (s) as the API reports it.
    pub ttl: u32,
    /// Served through the provider's proxy (Cloudflare's `proxied`); such records report TTL 1.
    pub proxied: bool,
}

/// One per-record DNS API.
#[async_trait]
pub trait RecordApi: Send + Sync + fmt::Debug {
    /// The records at `fqdn` (with trailing dot) in `zone`; at least every A, AAAA and CNAME
    /// record. Every page is read.
    ///
    /// # Errors
    /// [`WriteError`] classified by what the caller should do next.
    async fn list(&self, fqdn: &str, zone: &str) -> Result<Vec<ApiRecord>, WriteError>;

    /// Creates an A or AAAA record for `ip` at `fqdn` with `ttl`.
    ///
    /// # Errors
    /// As [`RecordApi::list`].
    async fn create(&self, fqdn: &str, zone: &str, ip: IpAddr, ttl: u32) -> Result<(), WriteError>;

    /// Deletes `record`.
    ///
    /// # Errors
    /// As [`RecordApi::list`].
    async fn delete(&self, fqdn: &str, zone: &str, record: &ApiRecord) -> Result<(), WriteError>;

    /// Gives `record` (an A or AAAA record at `fqdn`) the TTL `ttl`.
    ///
    /// # Errors
    /// As [`RecordApi::list`].
    async fn set_ttl(
        &self,
        fqdn: &str,
        zone: &str,
        record: &ApiRecord,
        ttl: u32,
    ) -> Result<(), WriteError>;

    /// The TTL a read reports for `record` at `fqdn` (Cloudflare's proxied records report the TTL
    /// rrguard asked for instead of "automatic").
    fn ttl_read(&self, fqdn: &str, record: &ApiRecord) -> u32 {
        let _ = fqdn;
        record.ttl
    }

    /// Asks for `n` records per listing page from now on (tests cross page boundaries with it).
    fn set_page_size(&mut self, n: u32);

    /// Retries by `retry` from now on.
    fn set_retry(&mut self, retry: RetryPolicy);
}

/// A [`Writer`] over a [`RecordApi`]: read-back, no compare-and-swap.
#[derive(Debug)]
pub struct RecordWriter<A> {
    name: String,
    api: A,
}

/// The records of a name by family and address (an address may be stored twice).
#[derive(Debug, Default)]
struct Current {
    by_family: BTreeMap<Family, BTreeMap<IpAddr, Vec<ApiRecord>>>,
    cname: Option<String>,
}

impl<A: RecordApi> RecordWriter<A> {
    /// A writer named `name` over `api`.
    pub fn new(name: &str, api: A) -> Self {
        RecordWriter {
            name: name.to_owned(),
            api,
        }
    }

    /// The API, for its own inherent methods.
    pub fn api(&self) -> &A {
        &self.api
    }

    /// The same writer asking for `n` records per listing page.
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.api.set_page_size(n.max(1));
        self
    }

    /// The same writer retrying by `retry`.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.api.set_retry(retry);
        self
    }

    async fn current(&self, fqdn: &str, zone: &str) -> Result<Current, WriteError> {
        let mut out = Current::default();
        for r in self.api.list(fqdn, zone).await? {
            match r.rtype.as_str() {
                "A" | "AAAA" => {
                    let ip: IpAddr = r.content.trim().parse().map_err(|_| {
                        WriteError::Rejected(format!(
                            "writer {:?}: {fqdn} {} record {} holds {:?}, which is not an address",
                            self.name, r.rtype, r.id, r.content
                        ))
                    })?;
                    out.by_family
                        .entry(Family::of(&ip))
                        .or_default()
                        .entry(ip)
                        .or_default()
                        .push(r);
                }
                "CNAME" => {
                    let target = r.content.trim();
                    out.cname = Some(if target.ends_with('.') {
                        target.to_owned()
                    } else {
                        format!("{target}.")
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl<A: RecordApi> Writer for RecordWriter<A> {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            compare_and_swap: false,
            read_back: true,
            ..Capabilities::default()
        }
    }

    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError> {
        let current = self.current(fqdn, zone).await?;
        let mut p = Published {
            cname: current.cname,
            ..Published::default()
        };
        for records in current.by_family.values() {
            for (ip, rs) in records {
                let ttl = rs.iter().map(|r| self.api.ttl_read(fqdn, r)).min();
                p.records.insert(*ip, ttl.unwrap_or_default());
            }
        }
        Ok(p)
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        if change.is_empty() {
            return Ok(());
        }
        let (fqdn, zone) = (change.fqdn.as_str(), change.zone.as_str());
        let current = self.current(fqdn, zone).await?;
        if let Some(target) = &current.cname
            && !change.add.is_empty()
        {
            return Err(WriteError::Rejected(format!(
                "writer {:?}: {fqdn}: a CNAME (to {target}) is at the name, and no address record may stand beside it; remove the CNAME or point the service at another name",
                self.name
            )));
        }
        let empty = BTreeMap::new();
        let have = |ip: &IpAddr| {
            current
                .by_family
                .get(&Family::of(ip))
                .unwrap_or(&empty)
                .contains_key(ip)
        };
        for ip in change.add.iter().filter(|ip| !have(ip)) {
            self.api.create(fqdn, zone, *ip, change.ttl).await?;
        }
        for ip in &change.remove {
            let records = current
                .by_family
                .get(&Family::of(ip))
                .and_then(|m| m.get(ip));
            for r in records.into_iter().flatten() {
                self.api.delete(fqdn, zone, r).await?;
            }
        }
        for family in change.families() {
            let Some(records) = current.by_family.get(&family) else {
                continue;
            };
            for (ip, rs) in records {
                if change.remove.contains(ip) {
                    continue;
                }
                for r in rs {
                    if self.api.ttl_read(fqdn, r) != change.ttl {
                        self.api.set_ttl(fqdn, zone, r, change.ttl).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `fqdn` without its trailing dot, as the JSON APIs write names.
pub fn bare(fqdn: &str) -> &str {
    fqdn.strip_suffix('.').unwrap_or(fqdn)
}

/// `fqdn` relative to `zone`: `www` for `www.example.com.` in `example.com.`, `None` at the apex.
///
/// # Errors
/// [`WriteError::Rejected`] when `fqdn` is not in `zone`.
pub fn relative(fqdn: &str, zone: &str) -> Result<Option<String>, WriteError> {
    let (f, z) = (
        bare(fqdn).to_ascii_lowercase(),
        bare(zone).to_ascii_lowercase(),
    );
    if f == z {
        return Ok(None);
    }
    match f.strip_suffix(&format!(".{z}")) {
        Some(label) if !label.is_empty() => Ok(Some(label.to_owned())),
        _ => Err(WriteError::Rejected(format!(
            "{fqdn} is not in zone {zone}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_relative_to_the_zone() {
        assert_eq!(
            relative("www.Example.com.", "example.com.").unwrap(),
            Some("www".to_owned())
        );
        assert_eq!(relative("example.com.", "example.com").unwrap(), None);
        assert_eq!(
            relative("a.b.example.com.", "example.com.").unwrap(),
            Some("a.b".to_owned())
        );
        assert!(relative("www.example.org.", "example.com.").is_err());
        assert!(relative("wwwexample.com.", "example.com.").is_err());
    }
}
