//! Act: DNS writers.
//!
//! A [`Writer`] reads what a name publishes that matters to the plan ([`Published`]: A and AAAA records
//! with their TTLs, and data at the name that makes address records impossible, such as a CNAME) and
//! applies a [`RecordChange`] to it. A change carries a typed [`Precondition`]; writers that can make
//! the change conditional on it (compare-and-swap) do so and return [`WriteError::Conflict`] when it
//! fails, and the caller re-reads and re-plans. What a writer can do is declared by
//! [`Writer::capabilities`], and the service core acts on it (see [`Capabilities`]).
//!
//! - [`rfc2136`]: dynamic UPDATE signed with TSIG, prerequisites for compare-and-swap.
//! - [`serve`]: rrguard's own authoritative DNS server (UDP and TCP) for zones delegated to the
//!   nodes; every node answers from its own store.
//! - [`route53`]: Amazon Route 53's API; one change batch of DELETE-as-read plus CREATE is a
//!   compare-and-swap.
//! - [`cloudflare`]: Cloudflare's API v4 (per-record, no compare-and-swap).
//! - [`digitalocean`]: DigitalOcean's Domain Records API (per-record, no compare-and-swap).
//! - [`dynu`]: Dynu's API v2 (per-record, no compare-and-swap).
//! - [`memory`]: an in-memory zone with the same semantics, for the simulator and tests.
//! - [`script`]: runs a user command per operation, the change as JSON on stdin ([`plugin`]).
//! - [`webhook`]: POSTs the same JSON, HMAC-signed, to a URL.
//! - [`zonefile`]: renders a whole zone file (SOA serial, NS, static records, managed records),
//!   replaces it atomically, optionally checks it and has the DNS server reload it.
//! - [`hosts`]: keeps rrguard's marked section of a hosts file.
//!
//! [`batch::Batched`] wraps a writer that [`Capabilities::batches`] so that changes of many services
//! due together go out in one write per zone; [`api`] holds what the HTTP API writers share (client,
//! retries, rate limit, token); [`file`] what the file writers share (atomic replacement, the
//! per-path lock, marked sections).

pub mod api;
pub mod batch;
pub mod cloudflare;
pub mod digitalocean;
pub mod dynu;
pub mod file;
pub mod hosts;
pub mod memory;
pub mod plugin;
pub mod rfc2136;
pub mod route53;
pub mod script;
pub mod serve;
pub mod webhook;
pub mod zonefile;

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::config::{WriterConfig, WriterKind};

/// What a name publishes, as far as the plan is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Published {
    /// Every A and AAAA record at the name: address → TTL in seconds.
    pub records: BTreeMap<IpAddr, u32>,
    /// The target of a CNAME at the name, if there is one. A CNAME excludes every other type at its
    /// owner name (RFC 1034 §3.6.2, RFC 2181 §10.1): servers silently ignore an address added beside it.
    pub cname: Option<String>,
    /// The weight (0..=255) of each address published as a weighted record (Route 53 weighted
    /// routing, one record set per address); empty when the records are plain. Only writers that
    /// declare [`Capabilities::weighted`] fill it.
    pub weights: BTreeMap<IpAddr, u8>,
}

impl Published {
    /// A record set with these addresses, each with `ttl` (s), and no conflicting data.
    pub fn with_ttl(addresses: impl IntoIterator<Item = IpAddr>, ttl: u32) -> Self {
        Published {
            records: addresses.into_iter().map(|ip| (ip, ttl)).collect(),
            cname: None,
            weights: BTreeMap::new(),
        }
    }

    /// The published addresses, A and AAAA together.
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.records.keys().copied().collect()
    }
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(target) = &self.cname {
            write!(f, "CNAME {target}")?;
            if !self.records.is_empty() {
                f.write_str(", ")?;
            }
        }
        if self.records.is_empty() && self.cname.is_none() {
            return f.write_str("(none)");
        }
        let parts: Vec<String> = self
            .records
            .iter()
            .map(|(ip, ttl)| match self.weights.get(ip) {
                Some(w) => format!("{ip} (ttl {ttl}, weight {w})"),
                None => format!("{ip} (ttl {ttl})"),
            })
            .collect();
        f.write_str(&parts.join(" "))
    }
}

/// The address family of an RRset: A or AAAA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4, `A` records.
    V4,
    /// IPv6, `AAAA` records.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "A",
            Family::V6 => "AAAA",
        })
    }
}

/// What must hold at the name for a change to apply. Writers with compare-and-swap check it atomically
/// with the change; others ignore it (and the core re-reads after every write instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The A and AAAA records at the name are exactly these addresses (TTLs are not compared). A writer
    /// pins only the RRsets the change touches (RFC 2136 §2.4.2 "RRset exists (value dependent)", or
    /// §2.4.3 "RRset does not exist" for an empty family).
    RrsetEquals(BTreeSet<IpAddr>),
    /// Nothing of any type exists at the name (RFC 2136 §2.4.5 "Name is not in use"). For allocating
    /// a fresh name race-free.
    NameNotInUse,
}

/// A change to the A/AAAA records of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordChange {
    /// The name, fully qualified with trailing dot.
    pub fqdn: String,
    /// Its zone apex, with trailing dot.
    pub zone: String,
    /// TTL (s) of added records, and of every RRset the change touches afterwards (an RRset has one
    /// TTL, RFC 2181 §5.2).
    pub ttl: u32,
    /// What must hold for the change to apply.
    pub precondition: Precondition,
    /// Addresses to add.
    pub add: BTreeSet<IpAddr>,
    /// Addresses to remove.
    pub remove: BTreeSet<IpAddr>,
    /// Addresses kept whose TTL must become `ttl` (or, for a weighted writer, whose weight must
    /// become the one in `weights`). Written as "delete this RR, add it with the new TTL"
    /// in the same message: Knot ignores an add of an existing RR with another TTL, while delete + add
    /// re-TTLs the RRset on Knot and BIND (measured on Knot 3.2.6 and BIND 9.18).
    pub rettl: BTreeSet<IpAddr>,
    /// The weight (0..=255) of every address the name publishes after the change, for writers that
    /// declare [`Capabilities::weighted`] (`[service.select] weights`); empty: plain records. Other
    /// writers ignore it.
    pub weights: BTreeMap<IpAddr, u8>,
}

impl RecordChange {
    /// True when the change would not alter anything.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.rettl.is_empty()
    }

    /// The RRsets (families) the change touches.
    pub fn families(&self) -> BTreeSet<Family> {
        self.add
            .iter()
            .chain(&self.remove)
            .chain(&self.rettl)
            .map(Family::of)
            .collect()
    }
}

/// Why a writer operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// The precondition no longer held. Retry after re-reading.
    #[error("record set changed since it was read: {0}")]
    Conflict(String),
    /// Network trouble, timeout or server failure. Retry with backoff.
    #[error("{0}")]
    Transient(String),
    /// The server refused our credentials or the operation (wrong TSIG key, REFUSED, NOTAUTH). Needs an
    /// operator; retried slowly.
    #[error("{0}")]
    Auth(String),
    /// The server rejected the request as malformed or out of zone, or the data at the name makes the
    /// change impossible. Needs an operator; retried slowly.
    #[error("{0}")]
    Rejected(String),
}

impl WriteError {
    /// Errors an operator has to fix; retrying fast would only spam the server and the logs.
    pub fn needs_operator(&self) -> bool {
        matches!(self, WriteError::Auth(_) | WriteError::Rejected(_))
    }
}

/// What a writer can do; the service core acts on each flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// [`Writer::apply`] checks the change's [`Precondition`] atomically with the change. Without it
    /// the core re-reads and re-plans after every write, so a concurrent change by someone else is
    /// repaired on the next round instead of being refused; in a cluster only the elected node writes,
    /// so that race is with other tools, never with another rrguard node that follows the quorum.
    pub compare_and_swap: bool,
    /// [`Writer::read`] right after [`Writer::apply`] shows the change (read-your-writes). Without it
    /// the core takes the written set as published and leaves verification to the reconcile read.
    pub read_back: bool,
    /// The back end publishes weighted records ([`RecordChange::weights`], [`Published::weights`]):
    /// Route 53's weighted routing. The service core passes `[service.select] weights` only to such
    /// writers; for the others the weights are ignored, with a warning at start and reload
    /// ([`crate::config::Config::warnings`]).
    pub weighted: bool,
    /// Every node writes its own copy (its own served zone, its own file), so every node of a cluster
    /// applies the agreed decision to it, not only the elected leader.
    pub per_node: bool,
    /// [`Writer::apply_batch`] puts changes of one zone into fewer writes than one per change. The
    /// daemon then queues every service's changes to this writer and hands over, in one batch,
    /// whatever queued while the previous batch was being written ([`batch::Batched`]).
    pub batches: bool,
}

/// A DNS back end.
#[async_trait]
pub trait Writer: Send + Sync {
    /// The writer's configured name.
    fn name(&self) -> &str;

    /// What this writer can do. The default is the least: no compare-and-swap, no read-back.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Reads what `fqdn` in `zone` publishes (A and AAAA records with TTLs, and any CNAME), as the
    /// source the writer will change sees it.
    ///
    /// # Errors
    /// [`WriteError`] classified by what the caller should do next.
    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError>;

    /// Applies `change`, atomically if the back end can, and conditional on its precondition where the
    /// back end supports compare-and-swap.
    ///
    /// # Errors
    /// [`WriteError::Conflict`] if the precondition failed; other variants as for [`Writer::read`].
    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError>;

    /// Applies several changes, each as [`Writer::apply`] would, and returns one result per change in
    /// the same order. A writer that declares [`Capabilities::batches`] writes the changes of one zone
    /// together (one RFC 2136 UPDATE, one API batch) and, when that fails on a precondition, falls
    /// back to one write per change so that each change gets its own verdict. The default applies
    /// them one by one.
    async fn apply_batch(&self, changes: &[RecordChange]) -> Vec<Result<(), WriteError>> {
        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            results.push(self.apply(change).await);
        }
        results
    }

    /// Starts what the writer needs while the daemon runs (the `serve` writer's DNS listeners). The
    /// daemon calls it once per configuration generation, after [`build_all`] and before any read;
    /// `check-config`, `plan` and the validation of a reload never do, so building stays free of side
    /// effects. Long-lived parts belong in the [`Resources`] given to [`build`], which outlive
    /// reloads. The default does nothing.
    ///
    /// # Errors
    /// A message naming what could not start and how to fix it (an address already in use).
    fn start(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A shared writer is a writer: every call goes to the one it points to (so an `Arc<dyn Writer>` can
/// be boxed, wrapped or handed on where a `Writer` is expected).
#[async_trait]
impl<W: Writer + ?Sized> Writer for Arc<W> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }

    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError> {
        (**self).read(fqdn, zone).await
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        (**self).apply(change).await
    }

    async fn apply_batch(&self, changes: &[RecordChange]) -> Vec<Result<(), WriteError>> {
        (**self).apply_batch(changes).await
    }

    fn start(&self) -> Result<(), String> {
        (**self).start()
    }
}

/// What writers keep across configuration reloads, owned by the daemon for its whole run: one entry
/// per writer name (the `serve` writer's zone data and listeners), so a SIGHUP neither empties a
/// served zone nor rebinds its sockets. Dropping the last clone drops every entry.
#[derive(Clone, Default)]
pub struct Resources {
    entries: Arc<Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>>,
    state_dir: Option<PathBuf>,
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resources")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl Resources {
    /// Resources whose writers may keep files under `state_dir` (`[node].state_dir`).
    pub fn new(state_dir: Option<PathBuf>) -> Self {
        Resources {
            entries: Arc::default(),
            state_dir,
        }
    }

    /// The node's state directory, if one is configured.
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        self.state_dir.as_deref()
    }

    /// Forgets the entry `key` (a writer removed from the configuration); it is dropped once its last
    /// user (the old generation's writer) is.
    pub fn remove(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The entry `key` of type `T`, made by `make` the first time (or when the entry held another
    /// type, which replaces it).
    pub fn get_or_insert_with<T: Any + Send + Sync>(
        &self,
        key: &str,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = entries.get(key).cloned()
            && let Ok(entry) = found.downcast::<T>()
        {
            return entry;
        }
        let entry = Arc::new(make());
        entries.insert(key.to_owned(), entry.clone());
        entry
    }
}

/// Why a writer could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("writer {name:?}: {reason}")]
pub struct BuildError {
    /// The writer's configured name.
    pub name: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

/// Builds every configured writer, by name.
///
/// # Errors
/// The first [`BuildError`].
pub fn build_all(
    configs: &[WriterConfig],
    resources: &Resources,
) -> Result<HashMap<String, Arc<dyn Writer>>, BuildError> {
    configs
        .iter()
        .map(|w| Ok((w.name.clone(), build(w, resources)?)))
        .collect()
}

/// Builds the writer a config section describes.
///
/// # Errors
/// [`BuildError`] when the section cannot make a working writer (for `rfc2136`: a TSIG key name that
/// is not a DNS name).
pub fn build(config: &WriterConfig, resources: &Resources) -> Result<Arc<dyn Writer>, BuildError> {
    match &config.kind {
        WriterKind::Rfc2136(c) => Ok(Arc::new(rfc2136::Rfc2136Writer::new(
            &config.name,
            c.clone(),
        )?)),
        WriterKind::Script(c) => Ok(Arc::new(script::ScriptWriter::new(&config.name, c.clone()))),
        WriterKind::Webhook(c) => Ok(Arc::new(webhook::WebhookWriter::new(
            &config.name,
            c.clone(),
        )?)),
        WriterKind::Serve(c) => Ok(Arc::new(serve::ServeWriter::new(
            &config.name,
            c.clone(),
            resources,
        ))),
        WriterKind::Zonefile(c) => Ok(Arc::new(zonefile::ZonefileWriter::new(
            &config.name,
            c.clone(),
            resources,
        ))),
        WriterKind::Route53(c) => Ok(Arc::new(route53::Route53Writer::new(
            &config.name,
            c.clone(),
        )?)),
        WriterKind::Cloudflare(c) => Ok(Arc::new(cloudflare::writer(&config.name, c.clone())?)),
        WriterKind::DigitalOcean(c) => Ok(Arc::new(digitalocean::writer(&config.name, c.clone())?)),
        WriterKind::Dynu(c) => Ok(Arc::new(dynu::writer(&config.name, c.clone())?)),
        WriterKind::Hosts(c) => Ok(Arc::new(hosts::HostsWriter::new(
            &config.name,
            c.clone(),
            resources,
        ))),
    }
}

/// Whether writers of this kind publish weighted records ([`Capabilities::weighted`]), known
/// without building the writer (for `check-config` and the warnings of a reload): only `route53`.
pub fn weighted(kind: &WriterKind) -> bool {
    matches!(kind, WriterKind::Route53(_))
}
