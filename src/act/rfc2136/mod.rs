//! The `rfc2136` writer: DNS dynamic UPDATE (RFC 2136) signed with TSIG (RFC 8945), over TCP.
//!
//! **Every exchange is signed**, reads included, and every answer is verified with the writer's key
//! ([`wire`]). A server that picks a view by key (BIND `match-clients { key K; }`) therefore answers
//! reads from the view the UPDATEs change, and an unsigned or forged answer is never used. Each answer is
//! read whole — rcode, TSIG error field, signed or not — and classified by one table ([`classify`]).
//!
//! **The zone is checked before anything is read or written.** An SOA query for the service's name
//! names the zone that holds it (in the answer at an apex, in the authority section otherwise, or a
//! referral below a cut the server does not serve). When that is not the configured zone the writer
//! refuses ([`WriteError::Rejected`] naming both zones): an UPDATE to the parent for a name below a
//! zone cut is accepted by Knot and BIND but changes nothing anyone resolves.
//!
//! **Compare-and-swap.** A change is one UPDATE whose prerequisite section pins each touched RRset (A
//! and/or AAAA) to exactly the records that were read — "RRset exists (value dependent)", RFC 2136
//! §2.4.2 — or to "RRset does not exist" (§2.4.3) when it was empty. If anyone changed the RRset in
//! between, the server answers NXRRSET (or YXRRSET) and nothing is applied: [`WriteError::Conflict`].
//!
//! **Large record sets.** That prerequisite grows with the RRset: hickory compresses at most 120 names
//! per message, so each further A record costs 32 bytes and ~2,000 of them fill a 64 KiB message.
//! Every message is measured *after* signing and never leaves truncated or unsigned. When the
//! RRset-pinned UPDATE does not fit, the writer pins the zone's SOA record instead (value dependent:
//! one record, whatever the RRset's size): it reads the SOA, the RRset, and the SOA again; if the two
//! SOAs match and the RRset is the one the change was planned against, the RRset was that at that SOA,
//! and an UPDATE conditional on the SOA applies only if nothing in the zone changed since. When the
//! update section itself does not fit, the change goes as several such UPDATEs, each pinned to the SOA
//! read after the previous one, additions first, then re-TTLs, then removals, so every intermediate
//! state still holds every address the change keeps. Between two of them another writer can slip in;
//! the core's read-back then sees a set it did not plan and re-plans. An unrelated change elsewhere in
//! the zone costs a spurious conflict (re-read, re-plan), never a wrong write.
//!
//! **Reads are never partial**: an answer with TC set is an error, not a record set. BIND's
//! `max-records-per-type` (default 100) refuses a larger RRset with SERVFAIL; the writer, which knows
//! how large the RRset would become, reports that as an operator error naming the option.
//!
//! **Secondaries.** Reads and the UPDATE of one operation go to the same server: the first configured
//! one that answers. When that is a secondary forwarding UPDATEs to its primary, it serves an accepted
//! change only after its transfer (1–2 s); so after every accepted UPDATE the writer waits (at most
//! [`WRITE_VISIBLE_WITHIN`]) until that server's zone serial moves, and the core's read-back then sees
//! the write instead of a stale set to re-plan against.
//!
//! A fresh connection per exchange keeps the writer oblivious to server restarts; TCP throughout, as a
//! UDP retry after a lost reply could turn a success into a spurious NXRRSET.

// `pub(crate)`: fleet naming (`crate::naming`) sends its UPDATEs and zone transfers through them.
pub(crate) mod classify;
pub(crate) mod wire;

pub mod config;
pub mod key_file;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use hickory_net::proto::op::{Message, OpCode, Query, UpdateMessage};
use hickory_net::proto::rr::rdata::{A, AAAA};
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

use super::{
    BuildError, Capabilities, Family, Precondition, Published, RecordChange, WriteError, Writer,
};
use crate::config::{Rfc2136Config, TsigAlgorithm};
use classify::{Context, Op};
use wire::SendError;

/// Allowed clock difference for TSIG, seconds (RFC 8945 recommends 300).
const TSIG_FUDGE: u16 = 300;

/// RFC 2136 + TSIG writer.
pub struct Rfc2136Writer {
    name: String,
    config: Rfc2136Config,
}

impl Rfc2136Writer {
    /// A writer for the given servers and key. No connection is made until first use.
    ///
    /// # Errors
    /// [`BuildError`] when the TSIG key cannot be set up (its name is not a DNS name).
    pub fn new(name: &str, config: Rfc2136Config) -> Result<Self, BuildError> {
        let writer = Rfc2136Writer {
            name: name.to_owned(),
            config,
        };
        writer.signer().map_err(|e| BuildError {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(writer)
    }

    fn signer(&self) -> Result<TSigner, WriteError> {
        tsig_signer(&self.config.tsig).map_err(|e| {
            WriteError::Rejected(format!("writer {:?}: cannot set up TSIG: {e}", self.name))
        })
    }

    /// Runs `op` against each server in order until one does not fail transiently.
    async fn each_server<'a, T, F, Fut>(&'a self, mut op: F) -> Result<T, WriteError>
    where
        F: FnMut(SocketAddr) -> Fut,
        Fut: Future<Output = Result<T, WriteError>> + 'a,
    {
        let mut last = WriteError::Transient("no server configured".to_owned());
        for &server in &self.config.servers {
            match op(server).await {
                Err(e @ WriteError::Transient(_)) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    fn algorithm_name(&self) -> &'static str {
        match self.config.tsig.algorithm {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }

    fn context<'a>(
        &'a self,
        server: SocketAddr,
        zone: &'a str,
        fqdn: &'a str,
        op: Op,
    ) -> Context<'a> {
        Context {
            server,
            writer: &self.name,
            key: &self.config.tsig.name,
            algorithm: self.algorithm_name(),
            zone,
            fqdn,
            op,
        }
    }

    /// Signs and sends `message`, reads the whole answer and classifies it; the answer only when it is
    /// a verified success.
    async fn ask(&self, ctx: &Context<'_>, message: Message) -> Result<Message, WriteError> {
        let signer = self.signer()?;
        let answer = wire::exchange(ctx.server, message, &signer, self.config.timeout)
            .await
            .map_err(|e| self.send_error(ctx, e))?;
        match classify::classify(ctx, &answer) {
            Some(e) => Err(e),
            None => Ok(answer.message),
        }
    }

    fn send_error(&self, ctx: &Context<'_>, e: SendError) -> WriteError {
        match e {
            SendError::TooLarge { bytes, why } => WriteError::Rejected(format!(
                "writer {:?}: the {} for {} does not fit in one signed DNS message ({}{why}); nothing was sent",
                self.name,
                match ctx.op {
                    Op::Read => "query",
                    Op::Update => "UPDATE",
                },
                ctx.fqdn,
                bytes.map_or(String::new(), |b| format!(
                    "{b} bytes, at most {}: ",
                    wire::MAX_MESSAGE
                )),
            )),
            SendError::Network(m) | SendError::Garbled(m) => WriteError::Transient(m),
        }
    }

    /// A signed, non-recursive query for `name`/`rtype`; a truncated answer is an error, never part of
    /// a record set.
    async fn query(
        &self,
        ctx: &Context<'_>,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Message, WriteError> {
        let mut message = Message::query();
        message.metadata.id = rand_id();
        message.add_query(Query::query(name.clone(), rtype));
        message.metadata.recursion_desired = false;
        let answer = self.ask(ctx, message).await?;
        if answer.metadata.truncation {
            return Err(WriteError::Rejected(format!(
                "{} truncated its answer for {name} {rtype} ({} records shown): the record set is larger than one DNS message (64 KiB); rrguard never acts on part of a record set: publish fewer addresses at {name}",
                ctx.server,
                answer.answers.len()
            )));
        }
        Ok(answer)
    }

    /// The zone that holds `fqdn` on `server`, by an SOA query for the name: the SOA in the answer (the
    /// name is an apex) or in the authority section (RFC 2308 negative answer) names it; a referral
    /// (NS in the authority section, no SOA) means the name lies below a zone cut the server does not
    /// serve. Returns the zone's SOA record.
    async fn holding_zone(
        &self,
        server: SocketAddr,
        fqdn: &Name,
        zone: &str,
    ) -> Result<Record, WriteError> {
        let fqdn_text = fqdn.to_string();
        let ctx = self.context(server, zone, &fqdn_text, Op::Read);
        let answer = self.query(&ctx, fqdn, RecordType::SOA).await?;
        let soa = answer
            .answers
            .iter()
            .chain(&answer.authorities)
            .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(fqdn));
        if let Some(soa) = soa {
            return Ok(soa.clone());
        }
        let cut = answer
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::NS)
            .map(|r| r.name.to_string());
        Err(WriteError::Rejected(match cut {
            Some(cut) => format!(
                "{server}: {fqdn} lies below the zone cut {cut}, delegated away from zone {zone}: set the service's zone to {cut} and point writer {:?} at a primary of {cut}; rrguard never writes below a zone cut",
                self.name
            ),
            None => format!(
                "{server} names no zone holding {fqdn} in its answer to an SOA query: point writer {:?} at a primary of {zone}",
                self.name
            ),
        }))
    }

    /// [`Self::holding_zone`], refused unless it is the configured `zone`.
    async fn check_zone(
        &self,
        server: SocketAddr,
        fqdn: &Name,
        zone: &str,
    ) -> Result<Record, WriteError> {
        let soa = self.holding_zone(server, fqdn, zone).await?;
        let configured = parse_name(zone)?;
        if soa.name != configured {
            return Err(WriteError::Rejected(format!(
                "{server}: {fqdn} is held by zone {}, not by the configured zone {zone} (there is a zone cut between them): set zone = \"{}\" for the service; rrguard never writes below a zone cut",
                soa.name, soa.name
            )));
        }
        Ok(soa)
    }

    /// The A and AAAA records (and any CNAME) at `fqdn`, without the zone check.
    async fn read_records(
        &self,
        server: SocketAddr,
        fqdn: &Name,
        zone: &str,
    ) -> Result<Published, WriteError> {
        let fqdn_text = fqdn.to_string();
        let ctx = self.context(server, zone, &fqdn_text, Op::Read);
        let mut out = Published::default();
        for rtype in [RecordType::A, RecordType::AAAA] {
            let resp = self.query(&ctx, fqdn, rtype).await?;
            if !resp.metadata.authoritative {
                return Err(WriteError::Rejected(format!(
                    "{server} is not authoritative for {fqdn}: point writer {:?} at the zone's primary server",
                    self.name
                )));
            }
            // Only records owned by the name: a CNAME answer also carries the target's addresses
            // when the target is in the zone.
            for record in resp.answers.iter().filter(|r| r.name == *fqdn) {
                match &record.data {
                    RData::A(a) => {
                        out.records.insert(IpAddr::V4(a.0), record.ttl);
                    }
                    RData::AAAA(a) => {
                        out.records.insert(IpAddr::V6(a.0), record.ttl);
                    }
                    RData::CNAME(target) => out.cname = Some(target.0.to_string()),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    async fn read_from(
        &self,
        server: SocketAddr,
        fqdn: &Name,
        zone: &str,
    ) -> Result<Published, WriteError> {
        self.check_zone(server, fqdn, zone).await?;
        self.read_records(server, fqdn, zone).await
    }

    async fn apply_to(&self, server: SocketAddr, change: &RecordChange) -> Result<(), WriteError> {
        let fqdn = parse_name(&change.fqdn)?;
        let soa = self.check_zone(server, &fqdn, &change.zone).await?;
        let ctx = self.context(server, &change.zone, &change.fqdn, Op::Update);
        let message = update_message(change)?;
        if fits(&message, &self.signer()?) {
            self.send_update(&ctx, change, message).await?;
            self.await_own_write(server, &fqdn, &change.zone, &soa)
                .await?;
            return Ok(());
        }
        // Too large with the RRset pinned record by record: pin the zone's SOA instead, which was read
        // together with the RRset (see the module doc).
        let Precondition::RrsetEquals(expected) = &change.precondition else {
            return Err(self.send_error(
                &ctx,
                SendError::TooLarge {
                    bytes: None,
                    why: "too many records".to_owned(),
                },
            ));
        };
        let current = self.read_records(server, &fqdn, &change.zone).await?;
        let soa_after = self.check_zone(server, &fqdn, &change.zone).await?;
        if soa_after != soa {
            return Err(WriteError::Conflict(format!(
                "{server}: zone {} changed while {} was read",
                change.zone, change.fqdn
            )));
        }
        if &current.addresses() != expected {
            return Err(WriteError::Conflict(format!(
                "{server}: {} no longer publishes the addresses read",
                change.fqdn
            )));
        }
        let units = update_units(change, &fqdn);
        let signer = self.signer()?;
        let zone = parse_name(&change.zone)?;
        let mut soa = soa;
        let mut next = 0;
        while next < units.len() {
            let mut n = units.len() - next;
            let message = loop {
                let m = soa_pinned_message(&zone, &soa, &units[next..next + n]);
                if fits(&m, &signer) {
                    break m;
                }
                if n == 1 {
                    return Err(self.send_error(
                        &ctx,
                        SendError::TooLarge {
                            bytes: None,
                            why: "one record does not fit".to_owned(),
                        },
                    ));
                }
                n = (n * 2 / 3).max(1);
            };
            self.send_update(&ctx, change, message).await?;
            next += n;
            soa = self
                .await_own_write(server, &fqdn, &change.zone, &soa)
                .await?;
        }
        Ok(())
    }

    /// Writes `changes` (all of one zone, each non-empty, together fitting one signed message) as one
    /// UPDATE to `server`: the zone check for every name first (never below a zone cut), then the
    /// message, then the wait until the server shows it.
    async fn apply_pack_to(
        &self,
        server: SocketAddr,
        changes: &[&RecordChange],
    ) -> Result<(), WriteError> {
        let zone_text = &changes[0].zone;
        let zone = parse_name(zone_text)?;
        for change in changes {
            self.check_zone(server, &parse_name(&change.fqdn)?, &change.zone)
                .await?;
        }
        let soa = self.check_zone(server, &zone, zone_text).await?;
        let what = format!("{} names of {zone_text}", changes.len());
        let ctx = self.context(server, zone_text, &what, Op::Update);
        self.ask(&ctx, batch_message(changes)?).await?;
        self.await_own_write(server, &zone, zone_text, &soa).await?;
        Ok(())
    }

    /// Waits until `server` shows a zone serial other than the one `before` the accepted UPDATE, at
    /// most [`WRITE_VISIBLE_WITHIN`], and returns the SOA it then shows. A secondary that forwarded
    /// the UPDATE to its primary serves the change only after NOTIFY and IXFR (Knot 1.0–1.8 s, BIND
    /// up to ~1 s, measured): reading back before that would show the old set, and the core would
    /// take the write as not applied, or re-plan against stale data and send UPDATEs the primary
    /// refuses. Reads and writes go to the same server, so after this the read-back sees the write.
    async fn await_own_write(
        &self,
        server: SocketAddr,
        fqdn: &Name,
        zone: &str,
        before: &Record,
    ) -> Result<Record, WriteError> {
        let deadline = tokio::time::Instant::now() + WRITE_VISIBLE_WITHIN;
        loop {
            let soa = self.check_zone(server, fqdn, zone).await?;
            if serial(&soa) != serial(before) || tokio::time::Instant::now() >= deadline {
                return Ok(soa);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn send_update(
        &self,
        ctx: &Context<'_>,
        change: &RecordChange,
        message: Message,
    ) -> Result<(), WriteError> {
        match self.ask(ctx, message).await {
            Ok(_) => Ok(()),
            Err(WriteError::Transient(why)) if why.contains("SERVFAIL") => match over_cap(change) {
                Some((family, count)) => Err(WriteError::Rejected(format!(
                    "{why}: the change leaves {count} {family} records at {}, and BIND refuses more than max-records-per-type (default 100 since 9.18.28) records of one type (\"too many records\"), rolling back the whole UPDATE: raise max-records-per-type in named.conf, or list fewer endpoints",
                    change.fqdn
                ))),
                None => Err(WriteError::Transient(why)),
            },
            Err(e) => Err(e),
        }
    }
}

/// The signer of `tsig` (fudge [`TSIG_FUDGE`]).
///
/// # Errors
/// Why hickory refuses the key (its name is not a DNS name).
pub(crate) fn tsig_signer(tsig: &crate::config::TsigConfig) -> Result<TSigner, String> {
    let algorithm = match tsig.algorithm {
        TsigAlgorithm::HmacSha256 => hickory_net::proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
        TsigAlgorithm::HmacSha512 => hickory_net::proto::rr::rdata::tsig::TsigAlgorithm::HmacSha512,
    };
    let key_name = Name::from_str(&tsig.name)
        .map_err(|e| format!("{:?} is not a DNS name: {e}", tsig.name))?;
    TSigner::new(tsig.secret.clone(), algorithm, key_name, TSIG_FUDGE).map_err(|e| e.to_string())
}

/// How long an accepted UPDATE may take to show at the server that took it (a secondary forwarding to
/// its primary), before the writer returns and leaves the verdict to the read-back. An UPDATE that
/// changed nothing (the serial stays) waits this long too; the core does not send those.
pub const WRITE_VISIBLE_WITHIN: Duration = Duration::from_secs(5);

fn serial(soa: &Record) -> Option<u32> {
    match &soa.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    }
}

/// BIND's default `max-records-per-type`.
const BIND_MAX_RECORDS_PER_TYPE: usize = 100;

/// The family `change` leaves with more records than BIND takes by default, and how many.
fn over_cap(change: &RecordChange) -> Option<(Family, usize)> {
    let expected = match &change.precondition {
        Precondition::RrsetEquals(set) => set.clone(),
        Precondition::NameNotInUse => Default::default(),
    };
    [Family::V4, Family::V6].into_iter().find_map(|family| {
        let after = expected
            .iter()
            .chain(&change.add)
            .filter(|ip| Family::of(ip) == family && !change.remove.contains(ip))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        (after > BIND_MAX_RECORDS_PER_TYPE).then_some((family, after))
    })
}

/// Whether `message`, signed with `signer`, fits in one DNS message.
fn fits(message: &Message, signer: &TSigner) -> bool {
    wire::sign_and_encode(message.clone(), signer, wire::now_secs()).is_ok()
}

/// The update section of `change` as units that must share a message, in the order they may be
/// applied one message at a time: additions first, then re-TTLs (delete and add of one record
/// together), then removals. Every intermediate state then still holds every address the change keeps.
fn update_units(change: &RecordChange, fqdn: &Name) -> Vec<Vec<Record>> {
    let delete = |ip: &IpAddr| {
        let mut r = Record::from_rdata(fqdn.clone(), 0, rdata(*ip));
        r.dns_class = DNSClass::NONE;
        r
    };
    let add = |ip: &IpAddr| Record::from_rdata(fqdn.clone(), change.ttl, rdata(*ip));
    let adds = change.add.iter().map(|ip| vec![add(ip)]);
    let rettls = change.rettl.iter().map(|ip| vec![delete(ip), add(ip)]);
    let removes = change.remove.iter().map(|ip| vec![delete(ip)]);
    adds.chain(rettls).chain(removes).collect()
}

/// An UPDATE of `units` whose one prerequisite is the zone's SOA exactly as read (RFC 2136 §2.4.2
/// "RRset exists (value dependent)" on the SOA RRset): it applies only if nothing in the zone changed
/// since, whatever the size of the RRset.
fn soa_pinned_message(zone: &Name, soa: &Record, units: &[Vec<Record>]) -> Message {
    let mut message = Message::new(
        rand_id(),
        hickory_net::proto::op::MessageType::Query,
        OpCode::Update,
    );
    message.metadata.recursion_desired = false;
    let mut zq = Query::new();
    zq.set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    message.add_zone(zq);
    let mut pre = soa.clone();
    pre.ttl = 0;
    pre.dns_class = DNSClass::IN;
    message.add_pre_requisite(pre);
    for record in units.iter().flatten() {
        message.add_update(record.clone());
    }
    message
}

fn parse_name(s: &str) -> Result<Name, WriteError> {
    Name::from_str(s).map_err(|e| WriteError::Rejected(format!("{s:?} is not a DNS name: {e}")))
}

fn rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

fn rtype(family: Family) -> RecordType {
    match family {
        Family::V4 => RecordType::A,
        Family::V6 => RecordType::AAAA,
    }
}

/// Builds the compare-and-swap UPDATE for `change`.
///
/// # Errors
/// [`WriteError::Rejected`] if a name does not parse.
pub fn update_message(change: &RecordChange) -> Result<Message, WriteError> {
    let mut message = empty_update(&parse_name(&change.zone)?);
    add_change(&mut message, change)?;
    Ok(message)
}

/// Builds one UPDATE carrying every change (all of one zone): each change's prerequisites and
/// updates, as [`update_message`] would write them alone. The server applies all or nothing (RFC
/// 2136 §3.4: a failed prerequisite refuses the whole message).
///
/// # Errors
/// [`WriteError::Rejected`] if a name does not parse or the changes are not all of one zone.
pub fn batch_message(changes: &[&RecordChange]) -> Result<Message, WriteError> {
    let Some(first) = changes.first() else {
        return Err(WriteError::Rejected("an empty batch".to_owned()));
    };
    let zone = parse_name(&first.zone)?;
    let mut message = empty_update(&zone);
    for change in changes {
        if parse_name(&change.zone)? != zone {
            return Err(WriteError::Rejected(format!(
                "{} is in zone {}, not {zone}: one UPDATE changes one zone",
                change.fqdn, change.zone
            )));
        }
        add_change(&mut message, change)?;
    }
    Ok(message)
}

/// An UPDATE of `zone` with nothing in it yet.
fn empty_update(zone: &Name) -> Message {
    let mut message = Message::new(
        rand_id(),
        hickory_net::proto::op::MessageType::Query,
        OpCode::Update,
    );
    message.metadata.recursion_desired = false;
    let mut zq = Query::new();
    zq.set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    message.add_zone(zq);
    message
}

/// Adds `change`'s prerequisites (compare-and-swap) and updates to `message`.
fn add_change(message: &mut Message, change: &RecordChange) -> Result<(), WriteError> {
    let fqdn = parse_name(&change.fqdn)?;
    match &change.precondition {
        Precondition::NameNotInUse => {
            // §2.4.5: name is not in use — class NONE, type ANY, TTL 0, empty RDATA.
            let mut r = Record::update0(fqdn.clone(), 0, RecordType::ANY);
            r.dns_class = DNSClass::NONE;
            message.add_pre_requisite(r);
        }
        Precondition::RrsetEquals(expected) => {
            for family in change.families() {
                let pinned: Vec<&IpAddr> = expected
                    .iter()
                    .filter(|ip| Family::of(ip) == family)
                    .collect();
                if pinned.is_empty() {
                    // §2.4.3: RRset does not exist — class NONE, TTL 0, empty RDATA.
                    let mut r = Record::update0(fqdn.clone(), 0, rtype(family));
                    r.dns_class = DNSClass::NONE;
                    message.add_pre_requisite(r);
                } else {
                    // §2.4.2: RRset exists (value dependent) — every RR of the set, class IN, TTL 0.
                    for ip in pinned {
                        message.add_pre_requisite(Record::from_rdata(fqdn.clone(), 0, rdata(*ip)));
                    }
                }
            }
        }
    }
    // §2.5.4: delete an RR from an RRset — class NONE, TTL 0. A re-TTLed record is deleted and added
    // again in the same message: Knot ignores an add of an existing RR that differs only in TTL.
    for ip in change.remove.iter().chain(&change.rettl) {
        let mut r = Record::from_rdata(fqdn.clone(), 0, rdata(*ip));
        r.dns_class = DNSClass::NONE;
        message.add_update(r);
    }
    for ip in change.add.iter().chain(&change.rettl) {
        message.add_update(Record::from_rdata(fqdn.clone(), change.ttl, rdata(*ip)));
    }
    Ok(())
}

pub(crate) fn rand_id() -> u16 {
    // Message ids only need to be unpredictable enough to pair replies on our own TCP connection.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .subsec_nanos();
    (nanos ^ (nanos >> 16)) as u16
}

#[async_trait]
impl Writer for Rfc2136Writer {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            compare_and_swap: true,
            read_back: true,
            batches: true,
            ..Capabilities::default()
        }
    }

    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError> {
        let name = parse_name(fqdn)?;
        self.each_server(|server| {
            let name = name.clone();
            async move { self.read_from(server, &name, zone).await }
        })
        .await
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        if change.is_empty() {
            return Ok(());
        }
        self.each_server(|server| async move { self.apply_to(server, change).await })
            .await
    }

    /// Changes of one zone go out packed into as few UPDATEs as fit one signed message each (RFC 2136
    /// §3.4: all or nothing per message). A pack refused for any reason but a transient one is
    /// written again one change per UPDATE, so that each change gets its own verdict (one stale
    /// precondition must not fail its neighbours). A change too large to share a message goes alone,
    /// by [`Writer::apply`].
    async fn apply_batch(&self, changes: &[RecordChange]) -> Vec<Result<(), WriteError>> {
        let mut results: Vec<Option<Result<(), WriteError>>> = vec![None; changes.len()];
        let mut by_zone: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, change) in changes.iter().enumerate() {
            if change.is_empty() {
                results[i] = Some(Ok(()));
            } else {
                by_zone
                    .entry(change.zone.to_ascii_lowercase())
                    .or_default()
                    .push(i);
            }
        }
        let signer = match self.signer() {
            Ok(s) => s,
            Err(e) => return changes.iter().map(|_| Err(e.clone())).collect(),
        };
        for mut rest in by_zone.into_values() {
            while !rest.is_empty() {
                // The longest prefix that fits one message, shrinking by a third.
                let mut n = rest.len();
                while n > 1 {
                    let pack: Vec<&RecordChange> = rest[..n].iter().map(|&i| &changes[i]).collect();
                    if batch_message(&pack).is_ok_and(|m| fits(&m, &signer)) {
                        break;
                    }
                    n = (n * 2 / 3).max(1);
                }
                let pack: Vec<usize> = rest.drain(..n).collect();
                if let [only] = pack[..] {
                    results[only] = Some(self.apply(&changes[only]).await);
                    continue;
                }
                let refs: Vec<&RecordChange> = pack.iter().map(|&i| &changes[i]).collect();
                let refs = &refs;
                match self
                    .each_server(|server| async move { self.apply_pack_to(server, refs).await })
                    .await
                {
                    Ok(()) => pack.iter().for_each(|&i| results[i] = Some(Ok(()))),
                    Err(e @ WriteError::Transient(_)) => {
                        pack.iter().for_each(|&i| results[i] = Some(Err(e.clone())));
                    }
                    Err(_) => {
                        for &i in &pack {
                            results[i] = Some(self.apply(&changes[i]).await);
                        }
                    }
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn change(expected: &[&str], add: &[&str], remove: &[&str]) -> RecordChange {
        let set = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect();
        RecordChange {
            fqdn: "www.example.test.".to_owned(),
            zone: "example.test.".to_owned(),
            ttl: 30,
            precondition: Precondition::RrsetEquals(set(expected)),
            add: set(add),
            remove: set(remove),
            rettl: BTreeSet::new(),
            weights: Default::default(),
        }
    }

    #[test]
    fn prerequisites_pin_exactly_the_touched_rrsets() {
        let m = update_message(&change(
            &["192.0.2.1", "192.0.2.2", "2001:db8::1"],
            &[],
            &["192.0.2.2"],
        ))
        .unwrap();
        assert_eq!(m.metadata.op_code, OpCode::Update);
        // Only the A RRset is touched: both A records pinned, AAAA untouched.
        let pre = m.prerequisites();
        assert_eq!(pre.len(), 2);
        assert!(pre.iter().all(|r| r.record_type() == RecordType::A
            && r.dns_class == DNSClass::IN
            && r.ttl == 0));
        let upd = m.updates();
        assert_eq!(upd.len(), 1);
        assert_eq!(upd[0].dns_class, DNSClass::NONE);
        assert_eq!(upd[0].data, RData::A(A("192.0.2.2".parse().unwrap())));
    }

    #[test]
    fn empty_rrset_is_pinned_as_not_existing() {
        let m = update_message(&change(&["192.0.2.1"], &["2001:db8::5"], &[])).unwrap();
        let pre = m.prerequisites();
        assert_eq!(pre.len(), 1);
        assert_eq!(pre[0].dns_class, DNSClass::NONE);
        assert_eq!(pre[0].data, RData::Update0(RecordType::AAAA));
        let upd = m.updates();
        assert_eq!(upd[0].dns_class, DNSClass::IN);
        assert_eq!(upd[0].ttl, 30);
    }
}
