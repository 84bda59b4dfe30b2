//! Answers, sans I/O: a [`Snapshot`] of every response the served zones can give, prebuilt in wire
//! format whenever the data changes, and [`respond`], the per-query path that picks one, patches the
//! query's ID, flags, question case and type into it, adds EDNS and truncates it to the transport's
//! limit. A query costs one hash lookup and one copy; nothing is decoded into hickory's types.
//!
//! Behaviour (RFC references in docs/writers.md):
//! - AA on every answer from a served zone; REFUSED (without AA) for names outside them, for classes
//!   other than IN and for zone transfers; NOTIMP for opcodes other than QUERY; FORMERR for a query
//!   that does not parse (no response at all to fewer than 12 bytes or to a response).
//! - NXDOMAIN when the name and every name below it have no data, NODATA (NOERROR, empty answer)
//!   when it has data of other types or is an empty non-terminal; both with the zone's SOA in the
//!   authority section at TTL min(SOA TTL, MINIMUM) (RFC 2308 §3, §5).
//! - A CNAME is answered for every type and followed inside its zone (RFC 1034 §4.3.2, RFC 6604 for
//!   the rcode at the end of the chain).
//! - ANY gets one RRset, the one of the lowest type number at the name (RFC 8482 §4.1), or NODATA.
//! - EDNS (RFC 6891): an OPT is answered with an OPT advertising [`MAX_UDP_PAYLOAD`], DO copied;
//!   version > 0 gets BADVERS. Over UDP a response is limited to 512 bytes without EDNS and to the
//!   client's payload size (at least 512, at most [`MAX_UDP_PAYLOAD`]) with it; a larger one keeps
//!   the RRsets that fit whole and sets TC (RFC 2181 §9), so the client retries over TCP.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hickory_net::proto::op::Query;
use hickory_net::proto::rr::{Name, RData, Record, RecordType};
use hickory_net::proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::config::in_zone;
use super::zone::{RRsets, Zone, Zones, key};
use crate::act::Published;

/// The largest UDP response sent, and the payload size advertised in our OPT: the DNS Flag Day 2020
/// value, which avoids IP fragmentation on common paths (Knot's and BIND's default too).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// How many CNAMEs an answer follows before it stops (a loop guard).
const MAX_CHAIN: usize = 8;

const HEADER: usize = 12;
const RCODE_NOERROR: u8 = 0;
const RCODE_FORMERR: u8 = 1;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;
const RCODE_REFUSED: u8 = 5;
const FLAG_QR: u8 = 0x80;
const FLAG_AA: u8 = 0x04;
const FLAG_TC: u8 = 0x02;
const FLAG_RD: u8 = 0x01;
const FLAG_CD: u8 = 0x10;
const TYPE_OPT: u16 = 41;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const OPT_LEN: usize = 11;

/// How a query arrived; it decides the size limit of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes, or the EDNS payload size.
    Udp,
    /// TCP: 65,535 bytes (RFC 1035 §4.2.2 length prefix).
    Tcp,
}

/// A response prefix at an RRset boundary: truncation cuts here.
#[derive(Debug, Clone, Copy)]
struct Cut {
    len: usize,
    an: u16,
    ns: u16,
}

/// One prebuilt response: ID 0, question in lower case; `cuts` from the bare question to the whole.
#[derive(Debug)]
struct Prebuilt {
    bytes: Box<[u8]>,
    cuts: Box<[Cut]>,
    /// False when the whole answer did not fit in 65,535 bytes: TC is set even over TCP.
    complete: bool,
}

/// The responses for one existing name.
#[derive(Debug)]
struct Entry {
    /// By query type, for the types the name answers.
    by_type: Box<[(u16, Prebuilt)]>,
    /// Every other type: NODATA, or the CNAME chain.
    other: Prebuilt,
    /// Index into `by_type` of the ANY answer; `None`: `other`.
    any: Option<usize>,
}

/// What a served zone needs for an NXDOMAIN.
#[derive(Debug)]
struct ZoneNx {
    /// The apex in lower-case wire format.
    apex: Box<[u8]>,
    /// The negative SOA record without its owner name (type, class, TTL, RDLENGTH, RDATA), names
    /// uncompressed so it can go anywhere.
    soa_tail: Box<[u8]>,
}

/// Every response of the served zones at one moment; rebuilt on every change, shared read-only.
#[derive(Debug, Default)]
pub struct Snapshot {
    names: HashMap<Box<[u8]>, Entry>,
    zones: Vec<ZoneNx>,
}

/// A name in lower-case wire format.
fn wire(name: &Name) -> Box<[u8]> {
    name.to_lowercase()
        .to_bytes()
        .unwrap_or_default()
        .into_boxed_slice()
}

impl Snapshot {
    /// The responses of `zones` with the `managed` records of the store and SOA serial `serial`.
    pub(crate) fn build(
        zones: &Zones,
        managed: &BTreeMap<String, Published>,
        serial: u32,
    ) -> Snapshot {
        let mut snap = Snapshot::default();
        for zone in &zones.0 {
            let names = zone.names(managed, serial);
            let negative = zone.soa_record(serial, zone.negative_ttl());
            // Every name with data, and every empty non-terminal between one and the apex.
            let mut exists: BTreeSet<String> = names.keys().cloned().collect();
            let apex_labels = usize::from(zone.apex.num_labels());
            for owner in names.keys() {
                let Ok(name) = Name::from_ascii(owner) else {
                    continue;
                };
                for n in apex_labels + 1..usize::from(name.num_labels()) {
                    exists.insert(key(&name.trim_to(n).to_ascii()));
                }
            }
            let empty = RRsets::new();
            for owner in &exists {
                let Ok(qname) = Name::from_ascii(owner) else {
                    continue;
                };
                let qname = qname.to_lowercase();
                let sets = names.get(owner).unwrap_or(&empty);
                let entry = entry(zone, &names, &exists, &qname, sets, &negative);
                snap.names.insert(wire(&qname), entry);
            }
            let mut tail = Vec::new();
            let mut enc = BinEncoder::new(&mut tail);
            enc.set_name_encoding(NameEncoding::Uncompressed);
            let mut soa = negative.clone();
            soa.name = Name::root();
            if soa.emit(&mut enc).is_ok() {
                // Drop the owner (the root, one zero byte): the answer writes a pointer there.
                snap.zones.push(ZoneNx {
                    apex: wire(&zone.apex),
                    soa_tail: tail[1..].into(),
                });
            }
        }
        snap
    }
}

/// The responses of one name.
fn entry(
    zone: &Zone,
    names: &BTreeMap<String, RRsets>,
    exists: &BTreeSet<String>,
    qname: &Name,
    sets: &RRsets,
    negative: &Record,
) -> Entry {
    let neg = std::slice::from_ref(negative);
    let mut by_type: Vec<(u16, Prebuilt)> = Vec::new();
    if let Some(cname) = sets.get(&RecordType::CNAME) {
        // Follow the chain inside the zone (RFC 1034 §4.3.2 step 3.b).
        let mut chain: Vec<&[Record]> = vec![cname];
        let mut seen = BTreeSet::from([key(&qname.to_ascii())]);
        let mut end: Option<&RRsets> = None;
        let mut rcode = RCODE_NOERROR;
        let mut negative_end = false;
        let mut target = cname_target(cname);
        for _ in 0..MAX_CHAIN {
            let Some(t) = target.take() else { break };
            let tkey = key(&t.to_ascii());
            if !in_zone(&tkey, &zone.key) || !seen.insert(tkey.clone()) {
                break;
            }
            match names.get(&tkey) {
                Some(tsets) => match tsets.get(&RecordType::CNAME) {
                    Some(next) => {
                        chain.push(next);
                        target = cname_target(next);
                    }
                    None => {
                        end = Some(tsets);
                        negative_end = true;
                    }
                },
                None => {
                    negative_end = true;
                    if !exists.contains(&tkey) {
                        rcode = RCODE_NXDOMAIN;
                    }
                }
            }
        }
        by_type.push((
            u16::from(RecordType::CNAME),
            prebuild(qname, RecordType::CNAME, RCODE_NOERROR, &[cname], &[]),
        ));
        for (t, set) in end.into_iter().flatten() {
            let mut answer = chain.clone();
            answer.push(set);
            by_type.push((
                u16::from(*t),
                prebuild(qname, *t, RCODE_NOERROR, &answer, &[]),
            ));
        }
        let authority: &[&[Record]] = if negative_end { &[neg] } else { &[] };
        let other = prebuild(qname, RecordType::A, rcode, &chain, authority);
        by_type.sort_by_key(|(t, _)| *t);
        let any = by_type
            .iter()
            .position(|(t, _)| *t == u16::from(RecordType::CNAME));
        return Entry {
            by_type: by_type.into(),
            other,
            any,
        };
    }
    for (t, set) in sets {
        by_type.push((
            u16::from(*t),
            prebuild(qname, *t, RCODE_NOERROR, &[set], &[]),
        ));
    }
    by_type.sort_by_key(|(t, _)| *t);
    Entry {
        any: (!by_type.is_empty()).then_some(0),
        by_type: by_type.into(),
        other: prebuild(qname, RecordType::A, RCODE_NOERROR, &[], &[neg]),
    }
}

fn cname_target(set: &[Record]) -> Option<Name> {
    set.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.clone()),
        _ => None,
    })
}

/// Encodes a response (ID 0, flags QR AA, `rcode`) with compression, recording a cut after the
/// question and after each RRset; stops at the last RRset that fits in 65,535 bytes.
fn prebuild(
    qname: &Name,
    qtype: RecordType,
    rcode: u8,
    answer: &[&[Record]],
    authority: &[&[Record]],
) -> Prebuilt {
    let mut buf = Vec::with_capacity(512);
    let mut cuts = Vec::new();
    let mut complete = true;
    {
        let mut enc = BinEncoder::new(&mut buf);
        let header = [0, 0, FLAG_QR | FLAG_AA, rcode, 0, 1, 0, 0, 0, 0, 0, 0];
        let question = enc
            .emit_vec(&header)
            .and_then(|()| Query::query(qname.clone(), qtype).emit(&mut enc));
        if question.is_ok() {
            cuts.push(Cut {
                len: enc.offset(),
                an: 0,
                ns: 0,
            });
        }
        let (mut an, mut ns) = (0u16, 0u16);
        'sections: for (in_answer, sets) in [(true, answer), (false, authority)] {
            for set in sets.iter().filter(|s| !s.is_empty()) {
                for r in set.iter() {
                    if r.emit(&mut enc).is_err() {
                        complete = false;
                        break 'sections;
                    }
                }
                let n = u16::try_from(set.len()).unwrap_or(u16::MAX);
                if in_answer {
                    an = an.saturating_add(n);
                } else {
                    ns = ns.saturating_add(n);
                }
                cuts.push(Cut {
                    len: enc.offset(),
                    an,
                    ns,
                });
            }
        }
    }
    let whole = cuts.last().map_or(0, |c| c.len);
    buf.truncate(whole);
    Prebuilt {
        bytes: buf.into(),
        cuts: cuts.into(),
        complete,
    }
}

/// The EDNS part of a query.
#[derive(Debug, Clone, Copy)]
struct Edns {
    payload: u16,
    version: u8,
    dnssec_ok: bool,
}

/// A parsed query: the lower-cased name and where its parts are in the message.
struct Parsed {
    /// The name in wire format, lower case.
    lower: [u8; 255],
    /// Its length, root label included.
    qlen: usize,
    /// Offsets (in the name) where labels start; `labels` of them.
    label_starts: [u8; 128],
    labels: usize,
    qtype: u16,
    qclass: u16,
    edns: Option<Edns>,
}

/// Writes into `out` the response to `query` arriving over `transport`; `false` when nothing is
/// to be sent (fewer than 12 bytes, or the message is itself a response). Never panics, whatever the
/// bytes.
pub fn respond(snap: &Snapshot, query: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
    out.clear();
    if query.len() < HEADER || query[2] & FLAG_QR != 0 {
        return false;
    }
    let opcode = (query[2] >> 3) & 0x0f;
    let flags = query[2] & FLAG_RD;
    let cd = query[3] & FLAG_CD;
    if opcode != 0 {
        header_only(out, query, RCODE_NOTIMP);
        out[2] |= opcode << 3;
        return true;
    }
    let Some(p) = parse(query) else {
        header_only(out, query, RCODE_FORMERR);
        return true;
    };
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => match p.edns {
            None => 512,
            Some(e) => usize::from(e.payload.clamp(512, MAX_UDP_PAYLOAD)),
        },
    };
    let question = &query[HEADER..HEADER + p.qlen + 4];
    if let Some(e) = p.edns
        && e.version > 0
    {
        // BADVERS (16): the upper bits go in the OPT (RFC 6891 §6.1.3).
        bare(out, query, question, RCODE_NOERROR, 0, p.edns);
        push_opt(out, e, 1);
        return true;
    }
    if p.qclass != CLASS_IN || matches!(p.qtype, 251 | 252) {
        bare(out, query, question, RCODE_REFUSED, 0, p.edns);
        return true;
    }
    if matches!(p.qtype, 41 | 249 | 250 | 253 | 254) {
        bare(out, query, question, RCODE_NOTIMP, 0, p.edns);
        return true;
    }
    let lower = &p.lower[..p.qlen];
    if let Some(entry) = snap.names.get(lower) {
        let pre = if p.qtype == TYPE_ANY {
            entry.any.map_or(&entry.other, |i| &entry.by_type[i].1)
        } else {
            entry
                .by_type
                .iter()
                .find(|(t, _)| *t == p.qtype)
                .map_or(&entry.other, |(_, pre)| pre)
        };
        assemble(out, pre, query, &p, flags, cd, limit);
        return true;
    }
    let zone = snap.zones.iter().find(|z| {
        let alen = z.apex.len();
        alen <= p.qlen
            && lower[p.qlen - alen..] == *z.apex
            && (alen == p.qlen || p.label_starts[..p.labels].contains(&((p.qlen - alen) as u8)))
    });
    match zone {
        Some(z) => nxdomain(out, query, question, &p, z, limit),
        None => bare(out, query, question, RCODE_REFUSED, 0, p.edns),
    }
    true
}

/// Parses the header counts, the question and the OPT record; `None`: FORMERR.
fn parse(q: &[u8]) -> Option<Parsed> {
    let count = |at: usize| u16::from_be_bytes([q[at], q[at + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 {
        return None;
    }
    let mut p = Parsed {
        lower: [0; 255],
        qlen: 0,
        label_starts: [0; 128],
        labels: 0,
        qtype: 0,
        qclass: 0,
        edns: None,
    };
    let mut at = HEADER;
    loop {
        let len = usize::from(*q.get(at)?);
        if len > 63 {
            // A pointer (or a reserved label type) in the question: RFC 1035 allows none there.
            return None;
        }
        if p.qlen + 1 + len > 255 || p.labels >= p.label_starts.len() {
            return None;
        }
        let label = q.get(at + 1..at + 1 + len)?;
        p.label_starts[p.labels] = p.qlen as u8;
        p.labels += 1;
        p.lower[p.qlen] = len as u8;
        for (dst, src) in p.lower[p.qlen + 1..p.qlen + 1 + len].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        p.qlen += 1 + len;
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    let fixed = q.get(at..at + 4)?;
    p.qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    p.qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    at += 4;
    for _ in 0..u32::from(an) + u32::from(ns) {
        at = skip_record(q, at)?.0;
    }
    for _ in 0..ar {
        let (next, rtype, root_owner, class, ttl) = skip_record(q, at)?;
        if rtype == TYPE_OPT {
            if p.edns.is_some() || !root_owner {
                return None;
            }
            p.edns = Some(Edns {
                payload: class,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
            });
        }
        at = next;
    }
    Some(p)
}

/// Skips one resource record at `at`: (next offset, type, owner is the root, class, TTL).
fn skip_record(q: &[u8], mut at: usize) -> Option<(usize, u16, bool, u16, u32)> {
    let start = at;
    loop {
        let len = *q.get(at)?;
        match len {
            0 => {
                at += 1;
                break;
            }
            1..=63 => at += 1 + usize::from(len),
            0xC0..=0xFF => {
                at += 2;
                break;
            }
            _ => return None,
        }
    }
    let root_owner = at == start + 1;
    let fixed = q.get(at..at + 10)?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let class = u16::from_be_bytes([fixed[2], fixed[3]]);
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let next = at + 10 + rdlen;
    if next > q.len() {
        return None;
    }
    Some((next, rtype, root_owner, class, ttl))
}

/// A header with the query's ID, opcode 0, RD copied and `rcode`, no records.
fn header_only(out: &mut Vec<u8>, query: &[u8], rcode: u8) {
    out.extend_from_slice(&[
        query[0],
        query[1],
        FLAG_QR | (query[2] & FLAG_RD),
        rcode,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
}

/// Header, the query's question, and an OPT if the query had one; `aa` is 0 or [`FLAG_AA`].
fn bare(out: &mut Vec<u8>, query: &[u8], question: &[u8], rcode: u8, aa: u8, edns: Option<Edns>) {
    header_only(out, query, rcode);
    out[2] |= aa;
    out[3] |= query[3] & FLAG_CD;
    out[5] = 1;
    out.extend_from_slice(question);
    if let Some(e) = edns {
        // BADVERS callers add their own OPT.
        if e.version == 0 {
            push_opt(out, e, 0);
        }
    }
}

/// Appends our OPT record (RFC 6891 §6.1.2) and counts it.
fn push_opt(out: &mut Vec<u8>, edns: Edns, ext_rcode: u8) {
    let [hi, lo] = MAX_UDP_PAYLOAD.to_be_bytes();
    let flags = if edns.dnssec_ok { 0x80 } else { 0 };
    out.extend_from_slice(&[0, 0, TYPE_OPT as u8, hi, lo, ext_rcode, 0, flags, 0, 0, 0]);
    let ar = u16::from_be_bytes([out[10], out[11]]) + 1;
    out[10..12].copy_from_slice(&ar.to_be_bytes());
}

/// The prebuilt response patched for this query, cut to `limit`.
fn assemble(
    out: &mut Vec<u8>,
    pre: &Prebuilt,
    query: &[u8],
    p: &Parsed,
    rd: u8,
    cd: u8,
    limit: usize,
) {
    let opt = if p.edns.is_some() { OPT_LEN } else { 0 };
    let (cut, truncated) = if pre.bytes.len() + opt <= limit {
        (pre.cuts.last().copied(), !pre.complete)
    } else {
        let fits = pre.cuts.iter().rev().find(|c| c.len + opt <= limit);
        (fits.or(pre.cuts.first()).copied(), true)
    };
    let Some(cut) = cut else {
        // Never happens: every prebuilt has its question cut. Answer like a server in trouble.
        header_only(out, query, 2);
        return;
    };
    out.extend_from_slice(&pre.bytes[..cut.len]);
    out[0] = query[0];
    out[1] = query[1];
    out[2] = FLAG_QR | FLAG_AA | rd | if truncated { FLAG_TC } else { 0 };
    out[3] = (out[3] & 0x0f) | cd;
    out[6..8].copy_from_slice(&cut.an.to_be_bytes());
    out[8..10].copy_from_slice(&cut.ns.to_be_bytes());
    out[10] = 0;
    out[11] = 0;
    // The client's spelling of the name (RFC 1034 §3.1: case is preserved), and its type.
    let q = HEADER + p.qlen;
    out[HEADER..q].copy_from_slice(&query[HEADER..q]);
    out[q..q + 2].copy_from_slice(&p.qtype.to_be_bytes());
    if let Some(e) = p.edns {
        push_opt(out, e, 0);
    }
}

/// NXDOMAIN with the zone's SOA in the authority section, its owner a pointer into the question.
fn nxdomain(
    out: &mut Vec<u8>,
    query: &[u8],
    question: &[u8],
    p: &Parsed,
    z: &ZoneNx,
    limit: usize,
) {
    bare(out, query, question, RCODE_NXDOMAIN, FLAG_AA, None);
    let opt = if p.edns.is_some() { OPT_LEN } else { 0 };
    let owner = if z.apex.len() == 1 { 1 } else { 2 };
    if out.len() + owner + z.soa_tail.len() + opt <= limit {
        if owner == 1 {
            out.push(0);
        } else {
            let at = (HEADER + p.qlen - z.apex.len()) as u16;
            out.extend_from_slice(&(0xC000 | at).to_be_bytes());
        }
        out.extend_from_slice(&z.soa_tail);
        out[9] = 1;
    } else {
        out[2] |= FLAG_TC;
    }
    if let Some(e) = p.edns {
        push_opt(out, e, 0);
    }
}

#[cfg(test)]
mod tests;
