//! Act: DNS writers.
//!
//! A [`Writer`] reads the A/AAAA record set of a name and applies a [`RecordChange`] to it. Writers that
//! can make the change conditional on the record set still being what was read (compare-and-swap) do so;
//! when the condition fails they return [`WriteError::Conflict`] and the caller re-reads and re-plans.
//!
//! - [`rfc2136`]: dynamic UPDATE signed with TSIG, prerequisites for compare-and-swap.

pub mod rfc2136;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{WriterConfig, WriterKind};

/// A change to the A/AAAA records of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordChange {
    /// The name, fully qualified with trailing dot.
    pub fqdn: String,
    /// Its zone apex, with trailing dot.
    pub zone: String,
    /// TTL of added records.
    pub ttl: u32,
    /// The full A+AAAA set the change was planned against (the compare-and-swap condition).
    pub expected: BTreeSet<IpAddr>,
    /// Addresses to add.
    pub add: BTreeSet<IpAddr>,
    /// Addresses to remove.
    pub remove: BTreeSet<IpAddr>,
}

/// Why a writer operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// The record set was no longer what the change expected. Retry after re-reading.
    #[error("record set changed since it was read: {0}")]
    Conflict(String),
    /// Network trouble, timeout or server failure. Retry with backoff.
    #[error("{0}")]
    Transient(String),
    /// The server refused our credentials or the operation (wrong TSIG key, REFUSED, NOTAUTH). Needs an
    /// operator; retried slowly.
    #[error("{0}")]
    Auth(String),
    /// The server rejected the request as malformed or out of zone. Needs an operator; retried slowly.
    #[error("{0}")]
    Rejected(String),
}

impl WriteError {
    /// Errors an operator has to fix; retrying fast would only spam the server and the logs.
    pub fn needs_operator(&self) -> bool {
        matches!(self, WriteError::Auth(_) | WriteError::Rejected(_))
    }
}

/// A DNS back end.
#[async_trait]
pub trait Writer: Send + Sync {
    /// The writer's configured name.
    fn name(&self) -> &str;

    /// Reads every A and AAAA record published for `fqdn` in `zone`, as the authoritative source sees it.
    ///
    /// # Errors
    /// [`WriteError`] classified by what the caller should do next.
    async fn read(&self, fqdn: &str, zone: &str) -> Result<BTreeSet<IpAddr>, WriteError>;

    /// Applies `change`, atomically if the back end can, and conditional on `change.expected` where the
    /// back end supports compare-and-swap.
    ///
    /// # Errors
    /// [`WriteError::Conflict`] if the condition failed; other variants as for [`Writer::read`].
    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError>;

    /// Whether [`Writer::apply`] is conditional on the expected record set.
    fn supports_compare_and_swap(&self) -> bool {
        false
    }
}

/// Builds every configured writer, by name.
pub fn build_all(configs: &[WriterConfig]) -> HashMap<String, Arc<dyn Writer>> {
    configs.iter().map(|w| (w.name.clone(), build(w))).collect()
}

/// Builds the writer a config section describes.
pub fn build(config: &WriterConfig) -> Arc<dyn Writer> {
    match &config.kind {
        WriterKind::Rfc2136(c) => Arc::new(rfc2136::Rfc2136Writer::new(&config.name, c.clone())),
    }
}
