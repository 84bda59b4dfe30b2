//! The zone file's text: what it is rendered from ([`Frame`]), how it is rendered ([`render`]), and
//! what a file holds ([`Current`]), parsed with hickory-proto's RFC 1035 master-file parser.
//!
//! A file rrguard writes is its frame — the generated header (`$ORIGIN`, `$TTL`, SOA, NS) and the
//! include file's records, or the operator's template — with the serial filled in, and one managed
//! section between the lines [`BEGIN`] and [`END`] holding the A, AAAA and CNAME records rrguard keeps,
//! one per line with absolute owner names and explicit TTLs. Reading a file splits it the same way:
//! the records outside the section are the frame's (fixed); those inside are managed, whoever wrote
//! them. A file without the section (a hand-written zone rrguard takes over) has every A, AAAA and
//! CNAME record that the frame does not hold managed, so the first write keeps them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use hickory_net::proto::rr::{Name, RData, Record, RecordType};
use hickory_net::proto::serialize::txt::Parser;

use super::config::{Generated, ZoneSource};
use crate::act::Published;
use crate::act::file::find_section;

/// First line of the managed section.
pub const BEGIN: &str = "; BEGIN rrguard";
/// Last line of the managed section.
pub const END: &str = "; END rrguard";
/// The template placeholder for the SOA serial.
pub const SERIAL: &str = "{{serial}}";
/// The template placeholder for the managed section (alone on its line).
pub const RECORDS: &str = "{{records}}";

/// The A, AAAA and CNAME records of one name, with their TTLs (s).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRecords {
    /// Address → TTL.
    pub addresses: BTreeMap<IpAddr, u32>,
    /// CNAME target (absolute) and TTL.
    pub cname: Option<(String, u32)>,
}

impl NameRecords {
    /// What the name publishes, as the writer trait reports it.
    pub fn published(&self) -> Published {
        Published {
            records: self.addresses.clone(),
            cname: self.cname.as_ref().map(|(t, _)| t.clone()),
            weights: Default::default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.cname.is_none()
    }
}

/// The text around the managed section, `{{serial}}` still in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    before: String,
    after: String,
}

impl Frame {
    /// Builds the frame of `zone` (absolute, lower case) from its source, reading the include file or
    /// the template now: an operator's edit of either shows in the next write.
    ///
    /// # Errors
    /// What is wrong with the include file or the template, naming it.
    pub fn load(source: &ZoneSource, zone: &str) -> Result<Frame, String> {
        match source {
            ZoneSource::Generated(g) => {
                let include = match &g.include {
                    Some(p) => Some((p.as_path(), load_include(p, zone)?)),
                    None => None,
                };
                Ok(generated(g, zone, include))
            }
            ZoneSource::Template(p) => {
                let text = load_template(p, zone)?;
                Ok(split_template(&text).expect("load_template checked the placeholder"))
            }
        }
    }
}

/// The header rrguard writes, then the include file's text (relative names are relative to the
/// zone), then `$ORIGIN` and `$TTL` again so that what the include set does not reach the section.
fn generated(g: &Generated, zone: &str, include: Option<(&Path, String)>) -> Frame {
    let mut before = String::new();
    let _ = writeln!(
        before,
        "; Zone {zone}, written by rrguard. Everything outside the BEGIN and END rrguard lines comes\n; from rrguard's configuration{} and is rewritten on every change: edit it there.\n; The records between those lines may be edited here: rrguard reads them back.",
        match &include {
            Some((p, _)) => format!(" and {}", p.display()),
            None => String::new(),
        }
    );
    let ttl = g.default_ttl;
    let s = &g.soa;
    let _ = writeln!(before, "$ORIGIN {zone}\n$TTL {ttl}");
    let _ = writeln!(
        before,
        "@\tIN\tSOA\t{} {} {SERIAL} {} {} {} {}",
        s.mname, s.rname, s.refresh, s.retry, s.expire, s.minimum
    );
    for ns in &g.ns {
        let _ = writeln!(before, "@\tIN\tNS\t{ns}");
    }
    if let Some((path, text)) = include {
        let _ = writeln!(before, "; static records from {}", path.display());
        before.push_str(&text);
        if !text.ends_with('\n') {
            before.push('\n');
        }
        let _ = writeln!(before, "$ORIGIN {zone}\n$TTL {ttl}");
    }
    Frame {
        before,
        after: String::new(),
    }
}

/// A template split at its `{{records}}` line; `None` unless that placeholder is alone on one line.
fn split_template(text: &str) -> Option<Frame> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == RECORDS {
            return Some(Frame {
                before: text[..at].to_owned(),
                after: text[at + line.len()..].to_owned(),
            });
        }
        at += line.len();
    }
    None
}

/// Reads a text file that rrguard copies into the zone file.
fn read_text(path: &Path, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if let Some(n) = text
        .lines()
        .position(|l| l.trim_start().to_ascii_uppercase().starts_with("$INCLUDE"))
    {
        return Err(format!(
            "{}:{}: $INCLUDE is not supported in the {what}: copy the records in (rrguard copies this file into the zone file, where a relative path would mean something else)",
            path.display(),
            n + 1
        ));
    }
    Ok(text)
}

/// The include file's text, checked: it parses as RFC 1035 records relative to `zone`, every owner
/// is inside the zone, and it holds no SOA (rrguard writes that).
///
/// # Errors
/// What is wrong, naming the file.
pub fn load_include(path: &Path, zone: &str) -> Result<String, String> {
    let text = read_text(path, "include file")?;
    let ttl = "$TTL 3600\n"; // only for parsing: records without a TTL take the zone's $TTL
    let records =
        parse(&format!("{ttl}{text}"), zone, path).map_err(|e| format!("include file {e}"))?;
    let origin = name(zone)?;
    for r in &records {
        if r.record_type() == RecordType::SOA {
            return Err(format!(
                "include file {} holds an SOA record: rrguard writes the SOA from soa_mname, soa_rname, refresh, retry, expire and minimum; remove it",
                path.display()
            ));
        }
        if !origin.zone_of(&r.name) {
            return Err(format!(
                "include file {}: {} is not inside zone {zone}",
                path.display(),
                r.name
            ));
        }
    }
    Ok(text)
}

/// The template's text, checked: `{{serial}}` once, `{{records}}` once alone on a line, nothing else
/// in double braces, and rendered it parses with an SOA at the apex whose serial is `{{serial}}`.
///
/// # Errors
/// What is wrong, naming the file.
pub fn load_template(path: &Path, zone: &str) -> Result<String, String> {
    let text = read_text(path, "template")?;
    let p = path.display();
    for (placeholder, n) in [
        (SERIAL, text.matches(SERIAL).count()),
        (RECORDS, text.matches(RECORDS).count()),
    ] {
        if n != 1 {
            return Err(format!(
                "template {p} has {placeholder} {n} times; it needs it exactly once"
            ));
        }
    }
    let rest = text.replace(SERIAL, "").replace(RECORDS, "");
    if let Some(at) = rest.find("{{") {
        let unknown: String = rest[at..]
            .chars()
            .take_while(|c| *c != '\n')
            .take(30)
            .collect();
        return Err(format!(
            "template {p} has an unknown placeholder at {unknown:?}; only {SERIAL} and {RECORDS} exist"
        ));
    }
    let frame = split_template(&text).ok_or_else(|| {
        format!("template {p}: {RECORDS} must stand alone on its line (the managed records replace that line)")
    })?;
    let probe = 1_234_567_891;
    let rendered = render(&frame, probe, &BTreeMap::new());
    let records = parse(&rendered, zone, path).map_err(|e| format!("template {e}"))?;
    let origin = name(zone)?;
    let serial = records.iter().find_map(|r| match &r.data {
        RData::SOA(soa) if r.name == origin => Some(soa.serial),
        _ => None,
    });
    match serial {
        Some(s) if s == probe => Ok(text),
        Some(_) => Err(format!(
            "template {p}: {SERIAL} must be the serial of the SOA record at {zone}"
        )),
        None => Err(format!(
            "template {p} has no SOA record at the zone apex {zone}; the template must hold the zone's SOA (with {SERIAL} as its serial) and NS records"
        )),
    }
}

fn name(zone: &str) -> Result<Name, String> {
    Name::from_ascii(zone).map_err(|e| format!("zone {zone:?} is not a DNS name: {e}"))
}

/// Parses a zone file's text (relative names relative to `zone`); errors name `path`.
fn parse(text: &str, zone: &str, path: &Path) -> Result<Vec<Record>, String> {
    let origin = name(zone)?;
    let (_, sets) = Parser::new(text, Some(path.to_path_buf()), Some(origin))
        .parse()
        .map_err(|e| format!("{} does not parse as a zone file: {e}", path.display()))?;
    Ok(sets
        .values()
        .flat_map(|set| set.records_without_rrsigs().cloned())
        .collect())
}

/// The lower-case absolute text of a name.
fn key(name: &Name) -> String {
    let mut n = name.to_lowercase().to_ascii();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// The A, AAAA and CNAME records among `records`, by owner.
fn by_name<'a>(records: impl Iterator<Item = &'a Record>) -> BTreeMap<String, NameRecords> {
    let mut out: BTreeMap<String, NameRecords> = BTreeMap::new();
    for r in records {
        let (ip, cname) = match &r.data {
            RData::A(a) => (Some(IpAddr::V4(a.0)), None),
            RData::AAAA(a) => (Some(IpAddr::V6(a.0)), None),
            RData::CNAME(c) => (None, Some(key(&c.0))),
            _ => continue,
        };
        let owner = out.entry(key(&r.name)).or_default();
        if let Some(ip) = ip {
            owner.addresses.insert(ip, r.ttl);
        }
        if let Some(target) = cname {
            owner.cname = Some((target, r.ttl));
        }
    }
    out
}

/// Identity of a record for telling the frame's from the managed ones: owner, type and data (TTLs
/// aside).
fn identity(r: &Record) -> (String, RecordType, String) {
    (key(&r.name), r.record_type(), r.data.to_string())
}

/// What a zone file holds, as the writer needs it.
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// The SOA serial.
    pub serial: Option<u32>,
    /// Every A, AAAA and CNAME record, by owner: what the file publishes.
    pub all: BTreeMap<String, NameRecords>,
    /// Every owner name with any record of any type.
    pub in_use: BTreeSet<String>,
    /// The frame's A, AAAA and CNAME records (the template's, the include file's), by owner.
    pub fixed: BTreeMap<String, NameRecords>,
    /// The managed records, by owner.
    pub managed: BTreeMap<String, NameRecords>,
}

/// Reads what `fqdn` publishes in the file text `text` of zone `zone`.
///
/// # Errors
/// The parse error, naming `path`.
pub fn published(text: &str, zone: &str, path: &Path, fqdn: &str) -> Result<Published, String> {
    let records = parse(text, zone, path)?;
    let wanted = fqdn.to_ascii_lowercase();
    let mine = records.iter().filter(|r| key(&r.name) == wanted);
    Ok(by_name(mine)
        .remove(&wanted)
        .map(|n| n.published())
        .unwrap_or_default())
}

impl Current {
    /// Parses the file text `text` of zone `zone`; `frame` tells the fixed records of a file that has
    /// no managed section yet.
    ///
    /// # Errors
    /// A parse error, broken section markers, or managed records of a type rrguard does not keep, each
    /// naming `path`.
    pub fn parse(text: &str, zone: &str, path: &Path, frame: &Frame) -> Result<Current, String> {
        let all = parse(text, zone, path)?;
        let apex = name(zone)?;
        let section = find_section(text.as_bytes(), BEGIN, END, path).map_err(|e| e.to_string())?;
        let fixed: Vec<Record> = match section {
            Some(s) => {
                let outside = format!("{}{}", &text[..s.start], &text[s.end..]);
                parse(&outside, zone, path)?
            }
            None => {
                // The frame's records, and the file's own SOA and apex NS, which the frame replaces.
                let mut fixed = parse(&render(frame, 0, &BTreeMap::new()), zone, path)?;
                fixed.extend(
                    all.iter()
                        .filter(|r| {
                            r.name == apex
                                && matches!(r.record_type(), RecordType::SOA | RecordType::NS)
                        })
                        .cloned(),
                );
                fixed
            }
        };
        let fixed_ids: BTreeSet<_> = fixed.iter().map(identity).collect();
        let managed: Vec<&Record> = all
            .iter()
            .filter(|r| !fixed_ids.contains(&identity(r)))
            .collect();
        let other: Vec<String> = managed
            .iter()
            .filter(|r| {
                !matches!(
                    r.record_type(),
                    RecordType::A | RecordType::AAAA | RecordType::CNAME
                )
            })
            .map(|r| format!("{} {}", key(&r.name), r.record_type()))
            .collect();
        if !other.is_empty() {
            let place = if section.is_some() {
                format!("between `{BEGIN}` and `{END}`")
            } else {
                "(a file rrguard takes over)".to_owned()
            };
            return Err(format!(
                "{} holds {} {place}, which rrguard does not manage: it keeps only A, AAAA and CNAME records there; move them to the include file or the template",
                path.display(),
                other.join(", ")
            ));
        }
        let serial = all.iter().find_map(|r| match &r.data {
            RData::SOA(soa) if r.name == apex => Some(soa.serial),
            _ => None,
        });
        Ok(Current {
            serial,
            all: by_name(all.iter()),
            in_use: all.iter().map(|r| key(&r.name)).collect(),
            fixed: by_name(
                fixed
                    .iter()
                    .filter(|r| !(r.name == apex && r.record_type() == RecordType::SOA)),
            ),
            managed: by_name(managed.into_iter()),
        })
    }
}

/// The zone file: the frame with `serial`, and the managed section holding `managed`.
pub fn render(frame: &Frame, serial: u32, managed: &BTreeMap<String, NameRecords>) -> String {
    let serial = serial.to_string();
    let mut out = frame.before.replace(SERIAL, &serial);
    let _ = writeln!(
        out,
        "{BEGIN}: managed records, one per line; edits here are read back"
    );
    for (owner, records) in managed.iter().filter(|(_, r)| !r.is_empty()) {
        if let Some((target, ttl)) = &records.cname {
            let _ = writeln!(out, "{owner}\t{ttl}\tIN\tCNAME\t{target}");
        }
        for (ip, ttl) in &records.addresses {
            let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
            let _ = writeln!(out, "{owner}\t{ttl}\tIN\t{rtype}\t{ip}");
        }
    }
    let _ = writeln!(out, "{END}");
    out.push_str(&frame.after.replace(SERIAL, &serial));
    out
}
