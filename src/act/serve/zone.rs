//! The data of the served zones: static records from the configuration, merged with the managed
//! A/AAAA records of the store, per owner name and type.
//!
//! Rules (documented in docs/writers.md):
//! - the SOA and the apex NS RRset come from the zone's options; the same types in the static data are
//!   ignored, with a warning;
//! - at a name rrguard has written (a *managed* name), the managed A/AAAA records replace static ones;
//!   at other names static A/AAAA records are what a read returns, so the first write of a name starts
//!   from them, as it would on a primary whose zone file had them;
//! - a CNAME excludes everything else at its name: a managed name with a static CNAME answers the
//!   CNAME only;
//! - a managed name exists even without records (NODATA, not NXDOMAIN), so that resolvers do not
//!   cache the whole name away while its endpoints are unknown or down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hickory_net::proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_net::proto::rr::{Name, RData, Record, RecordType};
use tracing::warn;

use super::config::{SoaConfig, ZoneConfig, in_zone};
use crate::act::Published;

/// RRsets by type at one owner name.
pub(crate) type RRsets = BTreeMap<RecordType, Vec<Record>>;

/// One served zone, compiled from its configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Zone {
    /// The apex, lower case with trailing dot.
    pub key: String,
    /// The apex as a name.
    pub apex: Name,
    /// SOA fields but the serial.
    pub soa: SoaConfig,
    /// TTL of SOA and NS.
    pub ttl: u32,
    /// The apex NS RRset.
    pub ns: Vec<Name>,
    /// Static RRsets by lower-case owner (with trailing dot), SOA and apex NS left out.
    pub statics: BTreeMap<String, RRsets>,
}

/// The zones of one writer.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Zones(pub Vec<Zone>);

/// Lower case with trailing dot, like config keys.
pub(crate) fn key(fqdn: &str) -> String {
    let mut k = fqdn.to_ascii_lowercase();
    if !k.ends_with('.') {
        k.push('.');
    }
    k
}

fn owner_key(name: &Name) -> String {
    key(&name.to_ascii())
}

impl Zone {
    /// Compiles `cfg`; ignored static records are logged under `writer`'s name.
    pub fn compile(writer: &str, cfg: &ZoneConfig) -> Zone {
        let apex = Name::from_ascii(&cfg.name).unwrap_or_else(|_| Name::root());
        let mut statics: BTreeMap<String, RRsets> = BTreeMap::new();
        let mut ignored = BTreeSet::new();
        for r in &cfg.records {
            let owner = owner_key(&r.name);
            let t = r.record_type();
            if t == RecordType::SOA || (t == RecordType::NS && owner == cfg.name) {
                ignored.insert(t);
                continue;
            }
            let mut r = r.clone();
            r.name = r.name.to_lowercase();
            let set = statics.entry(owner).or_default().entry(t).or_default();
            if !set.iter().any(|have| have.data == r.data) {
                set.push(r);
            }
        }
        for t in ignored {
            warn!(
                writer,
                zone = %cfg.name,
                "static {t} records at the apex are ignored: the zone's SOA and NS come from its ns and soa_* options"
            );
        }
        Zone {
            key: cfg.name.clone(),
            apex: apex.to_lowercase(),
            soa: cfg.soa.clone(),
            ttl: cfg.ttl,
            ns: cfg.ns.clone(),
            statics,
        }
    }

    /// The SOA record with `serial`, at `ttl`.
    pub fn soa_record(&self, serial: u32, ttl: u32) -> Record {
        let s = &self.soa;
        let rdata = SOA::new(
            s.mname.clone(),
            s.rname.clone(),
            serial,
            s.refresh as i32,
            s.retry as i32,
            s.expire as i32,
            s.minimum,
        );
        Record::from_rdata(self.apex.clone(), ttl, RData::SOA(rdata))
    }

    /// The TTL of the SOA in a negative answer: min(SOA TTL, MINIMUM) (RFC 2308 §3).
    pub fn negative_ttl(&self) -> u32 {
        self.ttl.min(self.soa.minimum)
    }

    /// A/AAAA and CNAME of `fqdn` in the static data, as the plan sees them.
    pub fn static_published(&self, fqdn: &str) -> Published {
        let mut out = Published::default();
        let Some(sets) = self.statics.get(&key(fqdn)) else {
            return out;
        };
        for r in sets.values().flatten() {
            match &r.data {
                RData::A(a) => {
                    out.records.insert(IpAddr::V4(a.0), r.ttl);
                }
                RData::AAAA(a) => {
                    out.records.insert(IpAddr::V6(a.0), r.ttl);
                }
                RData::CNAME(c) => out.cname = Some(c.0.to_ascii()),
                _ => {}
            }
        }
        out
    }

    /// Every name of the zone with its RRsets: static data, the apex SOA (with `serial`) and NS, and
    /// the managed records of names in this zone.
    pub fn names(
        &self,
        managed: &BTreeMap<String, Published>,
        serial: u32,
    ) -> BTreeMap<String, RRsets> {
        let mut names = self.statics.clone();
        let apex = names.entry(self.key.clone()).or_default();
        apex.insert(RecordType::SOA, vec![self.soa_record(serial, self.ttl)]);
        apex.insert(
            RecordType::NS,
            self.ns
                .iter()
                .map(|ns| {
                    Record::from_rdata(self.apex.clone(), self.ttl, RData::NS(NS(ns.clone())))
                })
                .collect(),
        );
        for (fqdn, published) in managed.iter().filter(|(n, _)| in_zone(n, &self.key)) {
            let Ok(owner) = Name::from_ascii(fqdn) else {
                continue;
            };
            let owner = owner.to_lowercase();
            let sets = names.entry(fqdn.clone()).or_default();
            sets.remove(&RecordType::A);
            sets.remove(&RecordType::AAAA);
            if let Some(target) = &published.cname
                && let Ok(target) = Name::from_ascii(key(target))
            {
                sets.insert(
                    RecordType::CNAME,
                    vec![Record::from_rdata(
                        owner.clone(),
                        self.ttl,
                        RData::CNAME(CNAME(target)),
                    )],
                );
            }
            for (ip, ttl) in &published.records {
                let (t, rdata) = match ip {
                    IpAddr::V4(v4) => (RecordType::A, RData::A(A(*v4))),
                    IpAddr::V6(v6) => (RecordType::AAAA, RData::AAAA(AAAA(*v6))),
                };
                sets.entry(t)
                    .or_default()
                    .push(Record::from_rdata(owner.clone(), *ttl, rdata));
            }
            // A managed name without records still exists: it answers NODATA, not NXDOMAIN.
        }
        // A CNAME excludes everything else at its name.
        for sets in names.values_mut() {
            if sets.contains_key(&RecordType::CNAME) && sets.len() > 1 {
                sets.retain(|t, _| *t == RecordType::CNAME);
            }
        }
        names
    }
}

impl Zones {
    /// Compiles every zone of a writer's configuration.
    pub fn compile(writer: &str, zones: &[ZoneConfig]) -> Zones {
        Zones(zones.iter().map(|z| Zone::compile(writer, z)).collect())
    }

    /// The zone `fqdn` belongs to.
    pub fn zone_of(&self, fqdn: &str) -> Option<&Zone> {
        let fqdn = key(fqdn);
        self.0.iter().find(|z| in_zone(&fqdn, &z.key))
    }

    /// The apexes, for messages.
    pub fn list(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|z| z.key.as_str()).collect();
        names.join(", ")
    }
}
