//! The naming zone over DNS: a TSIG-signed zone transfer (AXFR) that reads every name, and UPDATEs
//! whose prerequisites make each step a compare-and-swap. Messages go through the `rfc2136` writer's
//! signed exchange ([`crate::act::rfc2136`]'s `wire`: size checked after signing, the whole answer
//! verified) and its one classification table; a failed prerequisite (YXDOMAIN, NXRRSET, YXRRSET) is
//! not an error here but [`Outcome::Refused`]: the caller decides what losing means.
//!
//! The UPDATEs ([`allocate`], [`rewrite`], [`free`], [`swap`], [`take_vacant_master`]) are built
//! without I/O and unit-tested below; the RFC 2136 sections they use:
//! - §2.4.5 "Name is not in use": class NONE, type ANY, TTL 0, no RDATA;
//! - §2.4.2 "RRset exists (value dependent)": the TXT RRset exactly as read, class IN, TTL 0;
//! - §2.5.3 "Delete all RRsets from a name": class ANY, type ANY; §2.5.2 "Delete an RRset": class
//!   ANY, the type; §2.5.4 "Delete an RR from an RRset": class NONE, the RDATA.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hickory_net::proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_net::proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::model::{Entry, Owner, ZoneView};
use crate::act::WriteError;
use crate::act::rfc2136::classify::{self, Context, Op};
use crate::act::rfc2136::wire::{self, SendError, Signature};
use crate::config::Rfc2136Config;

/// What the server did with an UPDATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied.
    Applied,
    /// A prerequisite failed (its rcode mnemonic): nothing was applied.
    Refused(String),
}

/// The naming zone's primary, reached with the writer's servers, key and timeout.
pub struct Client {
    writer: String,
    dns: Rfc2136Config,
    zone: Name,
    zone_text: String,
    signer: TSigner,
}

impl Client {
    /// A client of `zone` (with trailing dot) through the servers and key of `writer`.
    ///
    /// # Errors
    /// [`WriteError::Rejected`] when the zone or the key name is not a DNS name.
    pub fn new(writer: &str, dns: &Rfc2136Config, zone: &str) -> Result<Client, WriteError> {
        let signer = crate::act::rfc2136::tsig_signer(&dns.tsig).map_err(|e| {
            WriteError::Rejected(format!("writer {writer:?}: cannot set up TSIG: {e}"))
        })?;
        Ok(Client {
            writer: writer.to_owned(),
            dns: dns.clone(),
            zone: parse_name(zone)?,
            zone_text: zone.to_owned(),
            signer,
        })
    }

    /// The zone, with its trailing dot.
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    fn context<'a>(&'a self, server: SocketAddr, fqdn: &'a str, op: Op) -> Context<'a> {
        Context {
            server,
            writer: &self.writer,
            key: &self.dns.tsig.name,
            algorithm: self.dns.tsig.algorithm.as_str(),
            zone: &self.zone_text,
            fqdn,
            op,
        }
    }

    /// Runs `op` against each server in order until one does not fail transiently.
    async fn each_server<T, F, Fut>(&self, mut op: F) -> Result<T, WriteError>
    where
        F: FnMut(SocketAddr) -> Fut,
        Fut: Future<Output = Result<T, WriteError>>,
    {
        let mut last = WriteError::Transient("no server configured".to_owned());
        for &server in &self.dns.servers {
            match op(server).await {
                Err(e @ WriteError::Transient(_)) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// Sends `message` (an UPDATE of the zone) and reports whether it was applied.
    ///
    /// # Errors
    /// [`WriteError`] for anything but a failed prerequisite: network, TSIG, refusals.
    pub async fn update(&self, message: &Message) -> Result<Outcome, WriteError> {
        self.each_server(|server| async move {
            let ctx = self.context(server, &self.zone_text, Op::Update);
            let answer = wire::exchange(server, message.clone(), &self.signer, self.dns.timeout)
                .await
                .map_err(|e| send_error(&self.writer, e))?;
            match classify::classify(&ctx, &answer) {
                None => Ok(Outcome::Applied),
                Some(WriteError::Conflict(_)) => Ok(Outcome::Refused(classify::rcode_name(
                    answer.message.metadata.response_code,
                ))),
                Some(e) => Err(e),
            }
        })
        .await
    }

    /// Reads the whole zone by AXFR signed with the key (RFC 5936; every message's TSIG verified,
    /// each chained to the previous one's MAC, RFC 8945 §5.3.1).
    ///
    /// # Errors
    /// [`WriteError::Auth`] when the server refuses the transfer to the key (the message says how to
    /// allow it) or an answer is not signed; [`WriteError::Transient`] for network trouble.
    pub async fn axfr(&self) -> Result<ZoneView, WriteError> {
        self.each_server(|server| async move {
            let records = self.axfr_from(server).await?;
            Ok(view_of(&self.zone, &records))
        })
        .await
    }

    async fn axfr_from(&self, server: SocketAddr) -> Result<Vec<Record>, WriteError> {
        let zone_text = self.zone_text.clone();
        let ctx = self.context(server, &zone_text, Op::Read);
        let mut message = Message::query();
        message.metadata.id = crate::act::rfc2136::rand_id();
        message.metadata.recursion_desired = false;
        message.add_query(Query::query(self.zone.clone(), RecordType::AXFR));
        let id = message.metadata.id;
        let (bytes, mac) = wire::sign_and_encode(message, &self.signer, wire::now_secs())
            .map_err(|e| send_error(&self.writer, e))?;
        let timeout = self.dns.timeout;
        let net =
            |e: std::io::Error| WriteError::Transient(format!("{server}: zone transfer: {e}"));
        let work = async {
            let mut stream = tokio::time::timeout(timeout, TcpStream::connect(server))
                .await
                .map_err(|_| WriteError::Transient(format!("connecting to {server} timed out")))?
                .map_err(|e| WriteError::Transient(format!("cannot connect to {server}: {e}")))?;
            let len = u16::try_from(bytes.len()).expect("checked by sign_and_encode");
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            stream.write_all(&framed).await.map_err(net)?;
            let mut records = Vec::new();
            let mut previous_mac = mac;
            let mut soas = 0;
            for n in 0.. {
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).await.map_err(net)?;
                let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
                stream.read_exact(&mut answer).await.map_err(net)?;
                let message = if n == 0 {
                    let decoded = wire::decode_answer(
                        &answer,
                        id,
                        &previous_mac,
                        &self.signer,
                        wire::now_secs(),
                    )
                    .map_err(|e| send_error(&self.writer, e))?;
                    if let Some(e) = classify::classify(&ctx, &decoded) {
                        return Err(transfer_error(
                            self,
                            &ctx,
                            e,
                            decoded.message.metadata.response_code,
                        ));
                    }
                    if !matches!(decoded.signature, Signature::Verified { .. }) {
                        return Err(WriteError::Auth(format!(
                            "{server} sent an unsigned zone transfer of {}",
                            self.zone_text
                        )));
                    }
                    decoded.message
                } else {
                    let message = Message::from_vec(&answer).map_err(|e| {
                        WriteError::Transient(format!(
                            "{server}: zone transfer message does not decode: {e}"
                        ))
                    })?;
                    if message.signature().is_none() {
                        // RFC 8945 allows up to 99 unsigned messages between signed ones; Knot and
                        // BIND sign each. Verifying the gap needs a digest hickory does not expose.
                        return Err(WriteError::Rejected(format!(
                            "{server}: message {} of the zone transfer of {} is unsigned; rrguard verifies every message (Knot and BIND sign each)",
                            n + 1,
                            self.zone_text
                        )));
                    }
                    message
                };
                if n > 0 {
                    let (mac, _, _) = self
                        .signer
                        .verify_message_byte(&answer, Some(&previous_mac), false)
                        .map_err(|e| {
                            WriteError::Auth(format!(
                                "{server}: message {} of the zone transfer does not verify with key {:?}: {e}",
                                n + 1,
                                self.dns.tsig.name
                            ))
                        })?;
                    previous_mac = mac;
                } else if let Some(sig) = message.signature() {
                    previous_mac = sig.data.mac.clone();
                }
                for record in message.answers {
                    if record.record_type() == RecordType::SOA {
                        soas += 1;
                        if soas == 2 {
                            return Ok(records);
                        }
                    }
                    records.push(record);
                }
            }
            unreachable!("the loop only ends by returning")
        };
        tokio::time::timeout(timeout * 4, work).await.map_err(|_| {
            WriteError::Transient(format!(
                "{server}: zone transfer not done within {:?}",
                timeout * 4
            ))
        })?
    }
}

/// Rewords the classification of a refused transfer: the fix is a transfer ACL, not a query ACL.
fn transfer_error(
    client: &Client,
    ctx: &Context<'_>,
    e: WriteError,
    rcode: ResponseCode,
) -> WriteError {
    match rcode {
        ResponseCode::Refused | ResponseCode::NotAuth => WriteError::Auth(format!(
            "{} refused the zone transfer of {} to key {:?} ({}): allow it (Knot: acl with action transfer for the key; BIND: allow-transfer {{ key \"{}\"; }}); naming reads the whole zone this way",
            ctx.server,
            client.zone_text,
            client.dns.tsig.name,
            classify::rcode_name(rcode),
            client.dns.tsig.name.trim_end_matches('.')
        )),
        _ => e,
    }
}

fn send_error(writer: &str, e: SendError) -> WriteError {
    match e {
        SendError::TooLarge { why, .. } => WriteError::Rejected(format!(
            "writer {writer:?}: a naming message does not fit in one signed DNS message ({why}); nothing was sent"
        )),
        SendError::Network(m) | SendError::Garbled(m) => WriteError::Transient(m),
    }
}

/// The label of `name` relative to `zone` (`""` at the apex), lower case; `None` outside the zone.
fn label_of(zone: &Name, name: &Name) -> Option<String> {
    let name = name.to_lowercase();
    if !zone.zone_of(&name) {
        return None;
    }
    let full = name.to_string();
    let zone = zone.to_lowercase().to_string();
    if full == zone {
        return Some(String::new());
    }
    full.strip_suffix(&format!(".{zone}")).map(str::to_owned)
}

/// The zone view of `records` (a transfer's answers, first SOA included).
pub fn view_of(zone: &Name, records: &[Record]) -> ZoneView {
    let mut view = ZoneView::default();
    for r in records {
        let Some(label) = label_of(zone, &r.name) else {
            continue;
        };
        let e: &mut Entry = view.entries.entry(label).or_default();
        match &r.data {
            RData::A(a) => {
                e.addresses.insert(IpAddr::V4(a.0));
                e.ttl = e.ttl.max(r.ttl);
            }
            RData::AAAA(a) => {
                e.addresses.insert(IpAddr::V6(a.0));
                e.ttl = e.ttl.max(r.ttl);
            }
            RData::TXT(t) => e.txt.push(t.clone()),
            RData::CNAME(c) => {
                e.cname = Some(label_of(zone, &c.0).unwrap_or_else(|| c.0.to_string()));
            }
            _ => e.other += 1,
        }
    }
    view
}

fn parse_name(s: &str) -> Result<Name, WriteError> {
    Name::from_str(s).map_err(|e| WriteError::Rejected(format!("{s:?} is not a DNS name: {e}")))
}

/// `label` in `zone` (the apex for `""`).
pub fn fqdn(zone: &Name, label: &str) -> Name {
    if label.is_empty() {
        return zone.clone();
    }
    Name::from_str(label)
        .ok()
        .and_then(|l| l.append_domain(zone).ok())
        .unwrap_or_else(|| zone.clone())
}

/// What a node's name carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecords {
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Its ownership record.
    pub owner: Owner,
    /// TTL of what is added, seconds.
    pub ttl: u32,
}

fn empty_update(zone: &Name) -> Message {
    let mut m = Message::new(
        crate::act::rfc2136::rand_id(),
        MessageType::Query,
        OpCode::Update,
    );
    m.metadata.recursion_desired = false;
    let mut zq = Query::new();
    zq.set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    m.add_zone(zq);
    m
}

fn with_class(mut r: Record, class: DNSClass) -> Record {
    r.dns_class = class;
    r
}

/// §2.4.5 name is not in use.
fn not_in_use(name: &Name) -> Record {
    with_class(
        Record::update0(name.clone(), 0, RecordType::ANY),
        DNSClass::NONE,
    )
}

/// §2.4.2 RRset exists (value dependent), one record per TXT value as read.
fn txt_exactly(m: &mut Message, name: &Name, txt: &[TXT]) {
    for t in txt {
        m.add_pre_requisite(Record::from_rdata(name.clone(), 0, RData::TXT(t.clone())));
    }
}

/// §2.5.3 delete all RRsets from a name.
fn delete_name(name: &Name) -> Record {
    with_class(
        Record::update0(name.clone(), 0, RecordType::ANY),
        DNSClass::ANY,
    )
}

/// §2.5.2 delete an RRset.
fn delete_rrset(name: &Name, rtype: RecordType) -> Record {
    with_class(Record::update0(name.clone(), 0, rtype), DNSClass::ANY)
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// Adds `node`'s A/AAAA and TXT at `name`, and its aliases as CNAMEs to `name`.
fn add_node(m: &mut Message, zone: &Name, name: &Name, node: &NodeRecords) {
    for ip in &node.addresses {
        m.add_update(Record::from_rdata(name.clone(), node.ttl, address(*ip)));
    }
    m.add_update(Record::from_rdata(
        name.clone(),
        node.ttl,
        RData::TXT(node.owner.to_txt()),
    ));
    for a in &node.owner.aliases {
        m.add_update(Record::from_rdata(
            fqdn(zone, a),
            node.ttl,
            RData::CNAME(CNAME(name.clone())),
        ));
    }
}

/// §2.5.4: removes the CNAMEs `aliases` → `name` (and only those: an alias someone else has taken
/// since stays).
fn drop_aliases(m: &mut Message, zone: &Name, name: &Name, aliases: &[String]) {
    for a in aliases {
        m.add_update(with_class(
            Record::from_rdata(fqdn(zone, a), 0, RData::CNAME(CNAME(name.clone()))),
            DNSClass::NONE,
        ));
    }
}

/// Takes `label` for `node` if the name is not in use: its A/AAAA, ownership TXT and alias CNAMEs.
pub fn allocate(zone: &Name, label: &str, node: &NodeRecords) -> Message {
    let name = fqdn(zone, label);
    let mut m = empty_update(zone);
    m.add_pre_requisite(not_in_use(&name));
    add_node(&mut m, zone, &name, node);
    m
}

/// Rewrites `label` (renewal) if its TXT RRset is still exactly `old_txt`: A, AAAA and TXT replaced,
/// aliases `old_aliases` dropped and `node`'s added.
pub fn rewrite(
    zone: &Name,
    label: &str,
    old_txt: &[TXT],
    old_aliases: &[String],
    node: &NodeRecords,
) -> Message {
    let name = fqdn(zone, label);
    let mut m = empty_update(zone);
    txt_exactly(&mut m, &name, old_txt);
    for t in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
        m.add_update(delete_rrset(&name, t));
    }
    let gone: Vec<String> = old_aliases
        .iter()
        .filter(|a| !node.owner.aliases.contains(a))
        .cloned()
        .collect();
    drop_aliases(&mut m, zone, &name, &gone);
    add_node(&mut m, zone, &name, node);
    m
}

/// Frees `label` if its TXT RRset is still exactly `old_txt`: every record at the name and its
/// alias CNAMEs go.
pub fn free(zone: &Name, label: &str, old_txt: &[TXT], old_aliases: &[String]) -> Message {
    let name = fqdn(zone, label);
    let mut m = empty_update(zone);
    txt_exactly(&mut m, &name, old_txt);
    m.add_update(delete_name(&name));
    drop_aliases(&mut m, zone, &name, old_aliases);
    m
}

/// The master's side of a swap: what it holds now.
#[derive(Debug, Clone)]
pub struct Side<'a> {
    /// Its label.
    pub label: &'a str,
    /// Its entry as read.
    pub entry: &'a Entry,
    /// Its owner as read.
    pub owner: &'a Owner,
}

/// Change of master: if both TXT RRsets are still as read, `me` (at `mine.label`) takes
/// `master.label` with `node` (its new lease), and the master's records, TXT unchanged, move to
/// `mine.label`; each side's aliases follow it. One message: the server applies all or nothing.
pub fn swap(zone: &Name, master: &Side<'_>, mine: &Side<'_>, node: &NodeRecords) -> Message {
    let (m_name, s_name) = (fqdn(zone, master.label), fqdn(zone, mine.label));
    let mut m = empty_update(zone);
    txt_exactly(&mut m, &m_name, &master.entry.txt);
    txt_exactly(&mut m, &s_name, &mine.entry.txt);
    m.add_update(delete_name(&m_name));
    m.add_update(delete_name(&s_name));
    drop_aliases(&mut m, zone, &m_name, &master.owner.aliases);
    drop_aliases(&mut m, zone, &s_name, &mine.owner.aliases);
    add_node(&mut m, zone, &m_name, node);
    let old_master = NodeRecords {
        addresses: master.entry.addresses.iter().copied().collect(),
        owner: master.owner.clone(),
        ttl: if master.entry.ttl == 0 {
            node.ttl
        } else {
            master.entry.ttl
        },
    };
    // The old master keeps its TXT as it was (same lease): a dead master is still freed on time.
    for ip in &old_master.addresses {
        m.add_update(Record::from_rdata(
            s_name.clone(),
            old_master.ttl,
            address(*ip),
        ));
    }
    for t in &master.entry.txt {
        m.add_update(Record::from_rdata(
            s_name.clone(),
            old_master.ttl,
            RData::TXT(t.clone()),
        ));
    }
    for a in &master.owner.aliases {
        m.add_update(Record::from_rdata(
            fqdn(zone, a),
            old_master.ttl,
            RData::CNAME(CNAME(s_name.clone())),
        ));
    }
    m
}

/// Change of master when no one holds `master_label`: if it is still not in use and `mine`'s TXT is
/// as read, `node` moves there from `mine.label`.
pub fn take_vacant_master(
    zone: &Name,
    master_label: &str,
    mine: &Side<'_>,
    node: &NodeRecords,
) -> Message {
    let (m_name, s_name) = (fqdn(zone, master_label), fqdn(zone, mine.label));
    let mut m = empty_update(zone);
    m.add_pre_requisite(not_in_use(&m_name));
    txt_exactly(&mut m, &s_name, &mine.entry.txt);
    m.add_update(delete_name(&s_name));
    drop_aliases(&mut m, zone, &s_name, &mine.owner.aliases);
    add_node(&mut m, zone, &m_name, node);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Name {
        Name::from_str("nodes.test.").unwrap()
    }

    fn node(instance: &str, aliases: &[&str]) -> NodeRecords {
        NodeRecords {
            addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            owner: Owner {
                instance: instance.into(),
                lease: 1000,
                aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            },
            ttl: 60,
        }
    }

    #[test]
    fn allocation_is_conditional_on_the_name_not_in_use() {
        let m = allocate(&zone(), "svc-0", &node("a", &["db"]));
        let pre = m.prerequisites();
        assert_eq!(pre.len(), 1);
        assert_eq!(pre[0].dns_class, DNSClass::NONE);
        assert_eq!(pre[0].data, RData::Update0(RecordType::ANY));
        assert_eq!(pre[0].name.to_string(), "svc-0.nodes.test.");
        let types: Vec<_> = m.updates().iter().map(|r| r.record_type()).collect();
        assert_eq!(
            types,
            [
                RecordType::A,
                RecordType::AAAA,
                RecordType::TXT,
                RecordType::CNAME
            ]
        );
        assert_eq!(m.updates()[3].name.to_string(), "db.nodes.test.");
    }

    #[test]
    fn renewal_pins_the_txt_rrset_value_dependent() {
        let old = node("a", &["db", "old"]);
        let m = rewrite(
            &zone(),
            "svc-0",
            &[old.owner.to_txt()],
            &old.owner.aliases,
            &node("a", &["db"]),
        );
        let pre = m.prerequisites();
        assert_eq!(pre.len(), 1);
        assert_eq!(pre[0].dns_class, DNSClass::IN);
        assert_eq!(pre[0].ttl, 0);
        assert_eq!(pre[0].data, RData::TXT(old.owner.to_txt()));
        // The dropped alias is removed by value (class NONE), the kept one is added again.
        let cnames: Vec<_> = m
            .updates()
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .map(|r| (r.name.to_string(), r.dns_class))
            .collect();
        assert_eq!(
            cnames,
            [
                ("old.nodes.test.".to_owned(), DNSClass::NONE),
                ("db.nodes.test.".to_owned(), DNSClass::IN)
            ]
        );
    }

    #[test]
    fn a_swap_pins_both_names_and_moves_both_nodes() {
        let zone = zone();
        let master = node("m", &["primary"]);
        let me = node("s", &[]);
        let entry = |n: &NodeRecords, ip: &str| Entry {
            addresses: [ip.parse().unwrap()].into(),
            ttl: 30,
            txt: vec![n.owner.to_txt()],
            cname: None,
            other: 0,
        };
        let (me_entry, m_entry) = (entry(&me, "192.0.2.2"), entry(&master, "192.0.2.9"));
        let msg = swap(
            &zone,
            &Side {
                label: "db-master",
                entry: &m_entry,
                owner: &master.owner,
            },
            &Side {
                label: "db-slave-2",
                entry: &me_entry,
                owner: &me.owner,
            },
            &node("s", &[]),
        );
        let pre: Vec<_> = msg
            .prerequisites()
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(pre, ["db-master.nodes.test.", "db-slave-2.nodes.test."]);
        let at = |name: &str, t: RecordType| -> Vec<RData> {
            msg.updates()
                .iter()
                .filter(|r| {
                    r.name.to_string() == name
                        && r.record_type() == t
                        && r.dns_class == DNSClass::IN
                })
                .map(|r| r.data.clone())
                .collect()
        };
        assert_eq!(
            at("db-slave-2.nodes.test.", RecordType::A),
            [RData::A(A("192.0.2.9".parse().unwrap()))]
        );
        assert_eq!(
            at("db-slave-2.nodes.test.", RecordType::TXT),
            [RData::TXT(master.owner.to_txt())]
        );
        assert_eq!(
            at("db-master.nodes.test.", RecordType::TXT),
            [RData::TXT(me.owner.to_txt())]
        );
        assert_eq!(
            at("primary.nodes.test.", RecordType::CNAME),
            [RData::CNAME(CNAME(
                Name::from_str("db-slave-2.nodes.test.").unwrap()
            ))]
        );
    }

    #[test]
    fn the_view_is_relative_to_the_zone() {
        let zone = zone();
        let rec =
            |name: &str, data: RData| Record::from_rdata(Name::from_str(name).unwrap(), 60, data);
        let view = view_of(
            &zone,
            &[
                rec("SVC-0.nodes.test.", address("192.0.2.1".parse().unwrap())),
                rec(
                    "db.nodes.test.",
                    RData::CNAME(CNAME(Name::from_str("svc-0.nodes.test.").unwrap())),
                ),
                rec(
                    "x.nodes.test.",
                    RData::CNAME(CNAME(Name::from_str("www.example.").unwrap())),
                ),
                rec("elsewhere.test.", address("192.0.2.3".parse().unwrap())),
            ],
        );
        assert_eq!(view.entries.len(), 3);
        assert_eq!(view.entries["svc-0"].addresses.len(), 1);
        assert_eq!(view.entries["db"].cname.as_deref(), Some("svc-0"));
        assert_eq!(view.entries["x"].cname.as_deref(), Some("www.example."));
    }
}
