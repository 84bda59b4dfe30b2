//! The `rfc2136` writer: DNS dynamic UPDATE (RFC 2136) signed with TSIG (RFC 8945), over TCP.
//!
//! Reads are plain queries to the primary (the first configured server that answers). Writes are one
//! UPDATE per change whose prerequisite section pins each touched RRset (A and/or AAAA) to exactly the
//! records that were read — "RRset exists (value dependent)", RFC 2136 §2.4.2 — or to "RRset does not
//! exist" (§2.4.3) when it was empty. If anyone changed the RRset in between, the server answers NXRRSET
//! (or YXRRSET) and nothing is applied: [`WriteError::Conflict`].
//!
//! TCP is used for every exchange: a UDP retry after a lost reply could turn a success into a spurious
//! NXRRSET. A fresh connection per operation keeps the writer oblivious to server restarts.

pub mod config;
pub mod key_file;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use hickory_net::client::Client;
use hickory_net::proto::op::{
    DnsRequest, DnsResponse, Message, OpCode, Query, ResponseCode, UpdateMessage,
};
use hickory_net::proto::rr::rdata::{A, AAAA};
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::xfer::DnsHandle;
use hickory_net::{DnsError, DnsMultiplexer, NetError};

use super::{
    BuildError, Capabilities, Family, Precondition, Published, RecordChange, WriteError, Writer,
};
use crate::config::{Rfc2136Config, TsigAlgorithm};

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
        let algorithm = match self.config.tsig.algorithm {
            TsigAlgorithm::HmacSha256 => {
                hickory_net::proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256
            }
            TsigAlgorithm::HmacSha512 => {
                hickory_net::proto::rr::rdata::tsig::TsigAlgorithm::HmacSha512
            }
        };
        let key_name = parse_name(&self.config.tsig.name)?;
        TSigner::new(
            self.config.tsig.secret.clone(),
            algorithm,
            key_name,
            TSIG_FUDGE,
        )
        .map_err(|e| {
            WriteError::Rejected(format!("writer {:?}: cannot set up TSIG: {e}", self.name))
        })
    }

    async fn connect(
        &self,
        server: SocketAddr,
        signed: bool,
    ) -> Result<Client<TokioRuntimeProvider>, WriteError> {
        let timeout = self.config.timeout;
        let (stream, sender) =
            TcpClientStream::new(server, None, Some(timeout), TokioRuntimeProvider::default());
        let stream = match tokio::time::timeout(timeout, stream).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(WriteError::Transient(format!(
                    "cannot connect to {server}: {e}"
                )));
            }
            Err(_) => {
                return Err(WriteError::Transient(format!(
                    "connecting to {server} timed out"
                )));
            }
        };
        let mut mux = DnsMultiplexer::new(stream, sender).with_timeout(timeout);
        if signed {
            mux = mux.with_signer(self.signer()?);
        }
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(mux);
        tokio::spawn(bg);
        Ok(client)
    }

    /// Sends one message and returns the first response, classified.
    async fn exchange(
        &self,
        client: &Client<TokioRuntimeProvider>,
        server: SocketAddr,
        message: Message,
    ) -> Result<DnsResponse, WriteError> {
        let mut responses = client.send(DnsRequest::from(message));
        let first = tokio::time::timeout(self.config.timeout * 2, responses.next()).await;
        match first {
            Err(_) => Err(WriteError::Transient(format!(
                "{server}: no answer within {:?}",
                self.config.timeout
            ))),
            Ok(None) => Err(WriteError::Transient(format!(
                "{server}: connection closed without an answer"
            ))),
            Ok(Some(Ok(resp))) => Ok(resp),
            Ok(Some(Err(e))) => Err(self.classify_error(server, &e)),
        }
    }

    fn classify_error(&self, server: SocketAddr, e: &NetError) -> WriteError {
        if let NetError::Dns(DnsError::ResponseCode(code)) = e {
            return self.classify_rcode(server, *code);
        }
        let text = e.to_string();
        let lower = text.to_ascii_lowercase();
        if lower.contains("tsig")
            || lower.contains("signature")
            || lower.contains("mac")
            || lower.contains("unsigned")
        {
            // A server that rejects our key answers BADKEY/BADSIG with an empty MAC, which hickory reports
            // as an unverifiable response; its wording would only confuse an operator.
            tracing::debug!(%server, error = %text, "TSIG verification of the answer failed");
            return WriteError::Auth(self.tsig_hint(
                server,
                "its answer was not signed with our key: BADKEY or BADSIG",
            ));
        }
        WriteError::Transient(format!("{server}: {text}"))
    }

    fn tsig_hint(&self, server: SocketAddr, what: &str) -> String {
        format!(
            "{server} rejected the TSIG signature of writer {:?} ({what}): check that key {:?}, its algorithm and its secret match the server's key, and that the server allows this key to update the zone (Knot answers BADKEY when its ACL does not)",
            self.name, self.config.tsig.name
        )
    }

    fn classify_rcode(&self, server: SocketAddr, code: ResponseCode) -> WriteError {
        match code {
            ResponseCode::NXRRSet
            | ResponseCode::YXRRSet
            | ResponseCode::NXDomain
            | ResponseCode::YXDomain => {
                WriteError::Conflict(format!("{server} answered {}", rcode_name(code)))
            }
            ResponseCode::NotAuth => WriteError::Auth(format!(
                "{server} answered NOTAUTH to writer {:?}: the server is not authoritative for the zone, the TSIG key {:?} is unknown or its secret is wrong, or the server's ACL does not allow this key to update the zone",
                self.name, self.config.tsig.name
            )),
            ResponseCode::Refused => WriteError::Auth(format!(
                "{server} answered REFUSED to writer {:?}: allow updates from key {:?} in the server's zone configuration (Knot: acl with action update; BIND: allow-update or update-policy)",
                self.name, self.config.tsig.name
            )),
            ResponseCode::BADSIG | ResponseCode::BADKEY | ResponseCode::BADTIME => {
                WriteError::Auth(self.tsig_hint(server, &rcode_name(code)))
            }
            ResponseCode::NotZone | ResponseCode::FormErr | ResponseCode::NotImp => {
                WriteError::Rejected(format!(
                    "{server} answered {} to writer {:?}: check that the service's zone is a zone this server is primary for",
                    rcode_name(code),
                    self.name
                ))
            }
            ResponseCode::ServFail => WriteError::Transient(format!("{server} answered SERVFAIL")),
            other => WriteError::Transient(format!("{server} answered {}", rcode_name(other))),
        }
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

    async fn read_from(&self, server: SocketAddr, fqdn: &Name) -> Result<Published, WriteError> {
        let client = self.connect(server, false).await?;
        let mut out = Published::default();
        for rtype in [RecordType::A, RecordType::AAAA] {
            let mut message = Message::query();
            message.add_query(Query::query(fqdn.clone(), rtype));
            message.metadata.recursion_desired = false;
            let resp = self.exchange(&client, server, message).await?;
            match resp.response_code {
                ResponseCode::NoError | ResponseCode::NXDomain => {}
                code => return Err(self.classify_rcode(server, code)),
            }
            if !resp.metadata.authoritative {
                return Err(WriteError::Rejected(format!(
                    "{server} is not authoritative for {fqdn}: point writer {:?} at the zone's primary server",
                    self.name
                )));
            }
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

    async fn apply_to(&self, server: SocketAddr, message: Message) -> Result<(), WriteError> {
        let client = self.connect(server, true).await?;
        let resp = self.exchange(&client, server, message).await?;
        match resp.response_code {
            ResponseCode::NoError => Ok(()),
            code => Err(self.classify_rcode(server, code)),
        }
    }
}

/// The standard mnemonic (RFC 2136 / RFC 8945 tables) that operators know from dig and server logs,
/// rather than hickory's prose ("RR Set does not exist").
fn rcode_name(code: ResponseCode) -> String {
    let name = match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        ResponseCode::BADSIG => "BADSIG",
        ResponseCode::BADKEY => "BADKEY",
        ResponseCode::BADTIME => "BADTIME",
        other => return format!("rcode {}", u16::from(other)),
    };
    name.to_owned()
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
    let zone = parse_name(&change.zone)?;
    let fqdn = parse_name(&change.fqdn)?;
    let mut message = Message::new(
        rand_id(),
        hickory_net::proto::op::MessageType::Query,
        OpCode::Update,
    );
    message.metadata.recursion_desired = false;
    let mut zq = Query::new();
    zq.set_name(zone)
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    message.add_zone(zq);

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
    Ok(message)
}

fn rand_id() -> u16 {
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
            weights: false,
        }
    }

    async fn read(&self, fqdn: &str, _zone: &str) -> Result<Published, WriteError> {
        let name = parse_name(fqdn)?;
        self.each_server(|server| {
            let name = name.clone();
            async move { self.read_from(server, &name).await }
        })
        .await
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        if change.is_empty() {
            return Ok(());
        }
        let message = update_message(change)?;
        self.each_server(|server| {
            let message = message.clone();
            async move { self.apply_to(server, message).await }
        })
        .await
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
    fn rcodes_use_standard_mnemonics() {
        assert_eq!(rcode_name(ResponseCode::NXRRSet), "NXRRSET");
        assert_eq!(rcode_name(ResponseCode::NotZone), "NOTZONE");
        assert_eq!(rcode_name(ResponseCode::Unknown(3841)), "rcode 3841");
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
