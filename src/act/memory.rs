//! The `memory` writer: an in-memory authoritative store with the semantics of an RFC 2136 primary.
//!
//! It backs the deterministic simulator and the tests that need a [`Writer`] without a DNS server,
//! and it passes the same writer battery as `rfc2136` on Knot and BIND. Its rules follow what those
//! servers do (measured on Knot 3.2.6 and BIND 9.18):
//! - a [`Precondition::RrsetEquals`] is checked per touched RRset, TTLs ignored; a failure changes
//!   nothing and is a [`WriteError::Conflict`] (NXRRSET);
//! - an address added beside a CNAME is ignored without an error, as both servers do;
//! - an RRset that gains a record, or whose records are rewritten, takes the change's TTL as a whole
//!   (RFC 2181 §5.2); a removal leaves the remaining records' TTL alone.
//!
//! Several [`MemoryWriter`]s made with [`MemoryWriter::sharing`] see one store, like several nodes
//! writing to one primary. The synchronous [`MemoryWriter::read_now`] and [`MemoryWriter::apply_now`]
//! serve the simulator, which has no runtime.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Capabilities, Family, Precondition, Published, RecordChange, WriteError, Writer};

#[derive(Debug, Default)]
struct Store {
    names: BTreeMap<String, Published>,
    accepted: u64,
    refused: u64,
}

/// An in-memory writer. Names are compared case-insensitively, with a trailing dot.
#[derive(Debug, Clone)]
pub struct MemoryWriter {
    name: String,
    store: Arc<Mutex<Store>>,
    capabilities: Capabilities,
}

fn key(fqdn: &str) -> String {
    let mut k = fqdn.to_ascii_lowercase();
    if !k.ends_with('.') {
        k.push('.');
    }
    k
}

fn in_zone(fqdn: &str, zone: &str) -> bool {
    let (name, zone) = (key(fqdn), key(zone));
    name == zone || name.ends_with(&format!(".{zone}"))
}

impl MemoryWriter {
    /// An empty store, with compare-and-swap and read-back.
    pub fn new(name: &str) -> Self {
        MemoryWriter {
            name: name.to_owned(),
            store: Arc::default(),
            capabilities: Capabilities {
                compare_and_swap: true,
                read_back: true,
                weighted: false,
                per_node: false,
                batches: false,
            },
        }
    }

    /// Another writer named `name` on the same store.
    pub fn sharing(&self, name: &str) -> Self {
        MemoryWriter {
            name: name.to_owned(),
            ..self.clone()
        }
    }

    /// The same store, declaring other capabilities. Without compare-and-swap, preconditions are
    /// ignored, as a back end that cannot check them would.
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces what `fqdn` publishes, out of band (as an operator or another tool would).
    pub fn set(&self, fqdn: &str, published: Published) {
        self.store().names.insert(key(fqdn), published);
    }

    /// What `fqdn` publishes now.
    pub fn read_now(&self, fqdn: &str) -> Published {
        self.store()
            .names
            .get(&key(fqdn))
            .cloned()
            .unwrap_or_default()
    }

    /// Accepted changes so far (each one that changed something or not, like a server's NOERROR).
    pub fn accepted(&self) -> u64 {
        self.store().accepted
    }

    /// Changes refused so far (failed preconditions).
    pub fn refused(&self) -> u64 {
        self.store().refused
    }

    /// Applies `change` now; see the module documentation for the rules.
    ///
    /// # Errors
    /// [`WriteError::Conflict`] when the precondition fails (with compare-and-swap);
    /// [`WriteError::Rejected`] when the name is not in the change's zone (NOTZONE).
    pub fn apply_now(&self, change: &RecordChange) -> Result<(), WriteError> {
        if !in_zone(&change.fqdn, &change.zone) {
            return Err(WriteError::Rejected(format!(
                "{} is not in zone {} (NOTZONE)",
                change.fqdn, change.zone
            )));
        }
        let mut store = self.store();
        let current = store
            .names
            .get(&key(&change.fqdn))
            .cloned()
            .unwrap_or_default();
        if self.capabilities.compare_and_swap
            && let Err(why) = check(&current, change)
        {
            store.refused += 1;
            return Err(WriteError::Conflict(why));
        }
        let next = applied(current, change);
        store.accepted += 1;
        if next == Published::default() {
            store.names.remove(&key(&change.fqdn));
        } else {
            store.names.insert(key(&change.fqdn), next);
        }
        Ok(())
    }
}

/// Checks `change.precondition` against `current`: `Err` says which part failed. Shared with the
/// `serve` writer, whose store follows the same rules.
pub(crate) fn check(current: &Published, change: &RecordChange) -> Result<(), String> {
    match &change.precondition {
        Precondition::NameNotInUse => {
            if current.records.is_empty() && current.cname.is_none() {
                Ok(())
            } else {
                Err("the name is in use (YXDOMAIN)".to_owned())
            }
        }
        Precondition::RrsetEquals(expected) => {
            for family in change.families() {
                let have: Vec<_> = current
                    .records
                    .keys()
                    .filter(|ip| Family::of(ip) == family)
                    .collect();
                let want: Vec<_> = expected
                    .iter()
                    .filter(|ip| Family::of(ip) == family)
                    .collect();
                if have != want {
                    return Err(format!("the {family} RRset differs (NXRRSET)"));
                }
            }
            Ok(())
        }
    }
}

/// `current` after `change` (see the module documentation for the rules). Shared with `serve`.
pub(crate) fn applied(mut current: Published, change: &RecordChange) -> Published {
    for ip in &change.remove {
        current.records.remove(ip);
    }
    let adds_ignored = current.cname.is_some();
    let mut retouched = std::collections::BTreeSet::new();
    if !adds_ignored {
        for ip in change.add.iter().chain(&change.rettl) {
            current.records.insert(*ip, change.ttl);
            retouched.insert(Family::of(ip));
        }
    }
    for (ip, ttl) in current.records.iter_mut() {
        if retouched.contains(&Family::of(ip)) {
            *ttl = change.ttl;
        }
    }
    current
}

#[async_trait]
impl Writer for MemoryWriter {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError> {
        if !in_zone(fqdn, zone) {
            return Err(WriteError::Rejected(format!(
                "{fqdn} is not in zone {zone}"
            )));
        }
        Ok(self.read_now(fqdn))
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        self.apply_now(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    fn ips(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn change(expected: &[&str], add: &[&str], remove: &[&str], rettl: &[&str]) -> RecordChange {
        RecordChange {
            fqdn: "www.example.test.".into(),
            zone: "example.test.".into(),
            ttl: 120,
            precondition: Precondition::RrsetEquals(ips(expected)),
            add: ips(add),
            remove: ips(remove),
            rettl: ips(rettl),
            weights: Default::default(),
        }
    }

    #[test]
    fn an_rrset_takes_the_ttl_of_an_add_but_not_of_a_removal() {
        let w = MemoryWriter::new("m");
        w.set(
            "www.example.test.",
            Published::with_ttl(ips(&["192.0.2.1", "192.0.2.2", "2001:db8::1"]), 30),
        );
        w.apply_now(&change(
            &["192.0.2.1", "192.0.2.2", "2001:db8::1"],
            &[],
            &["192.0.2.2"],
            &[],
        ))
        .unwrap();
        assert_eq!(
            w.read_now("www.example.test.").records.values().max(),
            Some(&30)
        );
        w.apply_now(&change(
            &["192.0.2.1", "2001:db8::1"],
            &["192.0.2.3"],
            &[],
            &[],
        ))
        .unwrap();
        let p = w.read_now("www.example.test.");
        assert_eq!(p.records[&"192.0.2.1".parse().unwrap()], 120);
        assert_eq!(
            p.records[&"2001:db8::1".parse().unwrap()],
            30,
            "AAAA untouched"
        );
    }

    #[test]
    fn a_failed_precondition_changes_nothing() {
        let w = MemoryWriter::new("m");
        w.set(
            "www.example.test.",
            Published::with_ttl(ips(&["192.0.2.1"]), 30),
        );
        let e = w
            .apply_now(&change(&["192.0.2.9"], &[], &["192.0.2.1"], &[]))
            .unwrap_err();
        assert!(matches!(e, WriteError::Conflict(_)));
        assert_eq!(
            w.read_now("www.example.test.").addresses(),
            ips(&["192.0.2.1"])
        );
        assert_eq!((w.accepted(), w.refused()), (0, 1));
    }

    #[test]
    fn an_add_beside_a_cname_is_ignored_like_the_servers_do() {
        let w = MemoryWriter::new("m");
        w.set(
            "www.example.test.",
            Published {
                records: BTreeMap::new(),
                cname: Some("lb.example.test.".into()),
                weights: Default::default(),
            },
        );
        w.apply_now(&change(&[], &["192.0.2.1"], &[], &[])).unwrap();
        assert!(w.read_now("www.example.test.").records.is_empty());
    }
}
