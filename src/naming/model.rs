//! The naming model without I/O: which names a service's nodes take, what the ownership TXT record
//! says, which names are free or stale, and what the hosts file lists. Callers pass the zone as read
//! (by AXFR) and the wall-clock time in seconds; nothing here reads a clock or the network.
//!
//! A node's name is `SERVICE-N` (style `iterative`, N from 0) or `SERVICE-master` /
//! `SERVICE-slave-N` (style `masterful`, N from 1), a label in the naming zone. The name carries the
//! node's A/AAAA records and one ownership TXT record:
//!
//! ```text
//! svc-0.nodes.example.  60 IN TXT "rrguard-naming/1 instance=4f1c… lease=1764510000 aliases=db,cache"
//! ```
//!
//! `lease` is the wall-clock second of the last renewal; a name whose lease is older than
//! `release_after` is stale and may be freed by any node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hickory_net::proto::rr::rdata::TXT;

use super::config::Style;

/// First word of an ownership TXT record (format version 1).
pub const OWNER_TAG: &str = "rrguard-naming/1";

/// What the ownership TXT record of a name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The instance holding the name.
    pub instance: String,
    /// Wall-clock second of its last renewal (s since 1970).
    pub lease: u64,
    /// Its alias labels (CNAMEs in the zone pointing to the name).
    pub aliases: Vec<String>,
}

impl Owner {
    /// The TXT record's one character-string.
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "{OWNER_TAG} instance={} lease={}",
            self.instance, self.lease
        );
        if !self.aliases.is_empty() {
            t.push_str(" aliases=");
            t.push_str(&self.aliases.join(","));
        }
        t
    }

    /// The TXT record data.
    pub fn to_txt(&self) -> TXT {
        TXT::new(vec![self.to_text()])
    }

    /// Reads an ownership record; `None` for any other TXT.
    pub fn parse(txt: &TXT) -> Option<Owner> {
        let text: Vec<u8> = txt
            .txt_data
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        let text = std::str::from_utf8(&text).ok()?;
        let mut words = text.split_whitespace();
        if words.next()? != OWNER_TAG {
            return None;
        }
        let (mut instance, mut lease, mut aliases) = (None, None, Vec::new());
        for w in words {
            match w.split_once('=')? {
                ("instance", v) => instance = Some(v.to_owned()),
                ("lease", v) => lease = Some(v.parse().ok()?),
                ("aliases", v) => aliases = v.split(',').map(str::to_owned).collect(),
                _ => {}
            }
        }
        Some(Owner {
            instance: instance?,
            lease: lease?,
            aliases,
        })
    }

    /// Whether the lease is older than `release_after_secs` at `now` (s since 1970). Leases are
    /// stamped in whole seconds, rounded down: a lease stamped `L` was renewed at `L` or later, so
    /// `now > L + release_after` means more than `release_after` has passed since the renewal.
    pub fn is_stale(&self, now: u64, release_after_secs: u64) -> bool {
        now > self.lease.saturating_add(release_after_secs)
    }
}

/// A node's place in its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    /// `SERVICE-N` (iterative).
    Index(u32),
    /// `SERVICE-master`.
    Master,
    /// `SERVICE-slave-N` (from 1).
    Slave(u32),
}

impl Slot {
    /// The label of this slot in `service`.
    pub fn label(self, service: &str) -> String {
        match self {
            Slot::Index(n) => format!("{service}-{n}"),
            Slot::Master => format!("{service}-master"),
            Slot::Slave(n) => format!("{service}-slave-{n}"),
        }
    }

    /// The slot `label` is in `service` with `style`, if any.
    pub fn parse(service: &str, style: Style, label: &str) -> Option<Slot> {
        let rest = label.strip_prefix(service)?.strip_prefix('-')?;
        let number = |s: &str| -> Option<u32> {
            // Canonical decimal only: `svc-01` is not `svc-1`.
            (!s.is_empty()
                && (s == "0" || !s.starts_with('0'))
                && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
        };
        match style {
            Style::Iterative => number(rest).map(Slot::Index),
            Style::Masterful if rest == "master" => Some(Slot::Master),
            Style::Masterful => number(rest.strip_prefix("slave-")?)
                .filter(|n| *n >= 1)
                .map(Slot::Slave),
        }
    }

    /// Every slot of `style`, in the order they are taken.
    pub fn all(style: Style) -> impl Iterator<Item = Slot> {
        let master = (style == Style::Masterful).then_some(Slot::Master);
        master
            .into_iter()
            .chain((0..=u32::MAX).filter_map(move |n| match style {
                Style::Iterative => Some(Slot::Index(n)),
                Style::Masterful => (n >= 1).then_some(Slot::Slave(n)),
            }))
    }
}

/// Whether `label` has the shape of a generated name (`X-N`, `X-master`, `X-slave-N`): aliases must
/// not, or they could take a node's name.
pub fn is_generated(label: &str) -> bool {
    let last = label.rsplit('-').next().unwrap_or_default();
    label.contains('-')
        && (last == "master" || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())))
}

/// What one name of the zone holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Its A and AAAA records.
    pub addresses: BTreeSet<IpAddr>,
    /// Their TTL (the largest seen), seconds.
    pub ttl: u32,
    /// Its TXT records exactly as read (a compare-and-swap pins them all).
    pub txt: Vec<TXT>,
    /// Its CNAME target, relative label when in the zone, else the absolute name with a dot.
    pub cname: Option<String>,
    /// Any other record types present.
    pub other: usize,
}

impl Entry {
    /// The ownership record, when the name holds exactly one TXT record and it is one.
    pub fn owner(&self) -> Option<Owner> {
        match &self.txt[..] {
            [only] => Owner::parse(only),
            _ => None,
        }
    }
}

/// The naming zone as read: every name (label relative to the zone, `""` for the apex, lower case)
/// and what it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneView {
    /// Names and their records.
    pub entries: BTreeMap<String, Entry>,
}

/// A name of a service held by an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its label.
    pub label: String,
    /// Its slot.
    pub slot: Slot,
    /// What it holds.
    pub entry: Entry,
    /// Its ownership record.
    pub owner: Owner,
}

impl ZoneView {
    /// Every name of `service` (with `style`) that carries an ownership record, in slot order.
    pub fn members(&self, service: &str, style: Style) -> Vec<Held> {
        let mut out: Vec<Held> = self
            .entries
            .iter()
            .filter_map(|(label, entry)| {
                Some(Held {
                    slot: Slot::parse(service, style, label)?,
                    owner: entry.owner()?,
                    label: label.clone(),
                    entry: entry.clone(),
                })
            })
            .collect();
        out.sort_by_key(|h| h.slot);
        out
    }

    /// The name `instance` holds in `service`, if any (the lowest slot, should there be several).
    pub fn held_by(&self, service: &str, style: Style, instance: &str) -> Option<Held> {
        self.members(service, style)
            .into_iter()
            .find(|h| h.owner.instance == instance)
    }

    /// The slots of `service` that this view shows free, in the order they are taken.
    pub fn free_slots<'a>(
        &'a self,
        service: &'a str,
        style: Style,
    ) -> impl Iterator<Item = Slot> + 'a {
        Slot::all(style).filter(move |s| !self.entries.contains_key(&s.label(service)))
    }

    /// The names of `service` whose lease is older than `release_after_secs` at `now`.
    pub fn stale(
        &self,
        service: &str,
        style: Style,
        now: u64,
        release_after_secs: u64,
    ) -> Vec<Held> {
        self.members(service, style)
            .into_iter()
            .filter(|h| h.owner.is_stale(now, release_after_secs))
            .collect()
    }

    /// The hosts file lines for every name of the zone with addresses: `ADDRESS<TAB>FQDN SHORT
    /// [ALIAS-FQDN ALIAS]…`, aliases being the in-zone CNAMEs that point at the name. Sorted by name,
    /// then address. `zone` is the zone without a trailing dot.
    pub fn hosts_lines(&self, zone: &str) -> String {
        let mut aliases: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (label, entry) in &self.entries {
            if let Some(target) = &entry.cname
                && !target.ends_with('.')
                && !label.is_empty()
            {
                aliases.entry(target.as_str()).or_default().push(label);
            }
        }
        let fqdn = |label: &str| {
            if label.is_empty() {
                zone.to_owned()
            } else {
                format!("{label}.{zone}")
            }
        };
        let mut out = String::new();
        for (label, entry) in &self.entries {
            for ip in &entry.addresses {
                let mut names = vec![fqdn(label)];
                if !label.is_empty() {
                    names.push(label.clone());
                }
                for a in aliases.get(label.as_str()).into_iter().flatten() {
                    names.push(fqdn(a));
                    names.push((*a).to_owned());
                }
                out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(instance: &str, lease: u64, ips: &[&str]) -> Entry {
        Entry {
            addresses: ips.iter().map(|i| i.parse().unwrap()).collect(),
            ttl: 60,
            txt: vec![
                Owner {
                    instance: instance.into(),
                    lease,
                    aliases: vec![],
                }
                .to_txt(),
            ],
            cname: None,
            other: 0,
        }
    }

    #[test]
    fn owner_text_round_trips_and_foreign_txt_is_not_an_owner() {
        let o = Owner {
            instance: "abc".into(),
            lease: 1_700_000_000,
            aliases: vec!["db".into(), "cache".into()],
        };
        assert_eq!(
            o.to_text(),
            "rrguard-naming/1 instance=abc lease=1700000000 aliases=db,cache"
        );
        assert_eq!(Owner::parse(&o.to_txt()), Some(o));
        assert_eq!(Owner::parse(&TXT::new(vec!["v=spf1 -all".into()])), None);
        assert_eq!(
            Owner::parse(&TXT::new(vec!["rrguard-naming/1 lease=5".into()])),
            None
        );
    }

    #[test]
    fn a_lease_is_stale_only_strictly_after_release_after() {
        let o = Owner {
            instance: "a".into(),
            lease: 100,
            aliases: vec![],
        };
        assert!(!o.is_stale(103, 3));
        assert!(o.is_stale(104, 3));
        assert!(!o.is_stale(50, 3), "a clock behind the lease is not stale");
    }

    #[test]
    fn slots_parse_only_canonical_labels() {
        use Style::*;
        assert_eq!(Slot::parse("svc", Iterative, "svc-0"), Some(Slot::Index(0)));
        assert_eq!(
            Slot::parse("svc", Iterative, "svc-12"),
            Some(Slot::Index(12))
        );
        for bad in [
            "svc-01",
            "svc-",
            "svc",
            "svc-x",
            "svcx-1",
            "svc-master",
            "other-1",
        ] {
            assert_eq!(Slot::parse("svc", Iterative, bad), None, "{bad}");
        }
        assert_eq!(
            Slot::parse("svc", Masterful, "svc-master"),
            Some(Slot::Master)
        );
        assert_eq!(
            Slot::parse("svc", Masterful, "svc-slave-3"),
            Some(Slot::Slave(3))
        );
        for bad in ["svc-slave-0", "svc-slave-", "svc-3", "svc-slave-03"] {
            assert_eq!(Slot::parse("svc", Masterful, bad), None, "{bad}");
        }
        let labels = |style| {
            Slot::all(style)
                .take(3)
                .map(|s| s.label("db"))
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(Iterative), ["db-0", "db-1", "db-2"]);
        assert_eq!(labels(Masterful), ["db-master", "db-slave-1", "db-slave-2"]);
        assert!(is_generated("x-12") && is_generated("x-master") && !is_generated("db-primary"));
        assert!(!is_generated("web"));
    }

    #[test]
    fn free_slots_skip_every_name_in_use_and_members_need_an_owner() {
        let mut v = ZoneView::default();
        v.entries
            .insert("svc-0".into(), owned("a", 1, &["192.0.2.1"]));
        // A hand-made record takes the name, though it has no owner.
        v.entries.insert(
            "svc-2".into(),
            Entry {
                addresses: ["192.0.2.9".parse().unwrap()].into(),
                ..Entry::default()
            },
        );
        let free: Vec<_> = v.free_slots("svc", Style::Iterative).take(3).collect();
        assert_eq!(free, [Slot::Index(1), Slot::Index(3), Slot::Index(4)]);
        assert_eq!(v.members("svc", Style::Iterative).len(), 1);
        assert_eq!(
            v.held_by("svc", Style::Iterative, "a").unwrap().label,
            "svc-0"
        );
        assert!(v.held_by("svc", Style::Iterative, "b").is_none());
        assert_eq!(v.stale("svc", Style::Iterative, 100, 3).len(), 1);
        assert_eq!(v.stale("svc", Style::Iterative, 4, 3).len(), 0);
    }

    #[test]
    fn hosts_lines_list_names_short_names_and_aliases() {
        let mut v = ZoneView::default();
        v.entries
            .insert("svc-0".into(), owned("a", 1, &["192.0.2.1", "2001:db8::1"]));
        v.entries.insert(
            "db".into(),
            Entry {
                cname: Some("svc-0".into()),
                ..Entry::default()
            },
        );
        v.entries.insert(
            "ext".into(),
            Entry {
                cname: Some("elsewhere.example.".into()),
                ..Entry::default()
            },
        );
        assert_eq!(
            v.hosts_lines("nodes.test"),
            "192.0.2.1\tsvc-0.nodes.test svc-0 db.nodes.test db\n2001:db8::1\tsvc-0.nodes.test svc-0 db.nodes.test db\n"
        );
    }
}
