//! The responder against hickory's own message decoder: every response below is decoded by
//! `Message::from_vec`, so a malformed one fails the test.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_net::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_net::proto::rr::{Name, RData, RecordType};
use proptest::prelude::*;

use super::*;
use crate::act::serve::zone::Zones;
use crate::config::WriterKind;

/// The zones of a one-writer config with `zone_extra` in its `[[writer.zone]]` table.
fn zones(zone_extra: &str) -> Zones {
    let text = format!(
        "[[writer]]\nname = \"dns\"\ntype = \"serve\"\nlisten = [\"127.0.0.1:5353\"]\n[[writer.zone]]\nname = \"example.test\"\nns = [\"ns1.example.test\", \"ns2.elsewhere.test\"]\nttl = 300\nminimum = \"60s\"\n{zone_extra}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"dns\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n"
    );
    let config = crate::config::parse(std::path::Path::new("/nonexistent/rrguard.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let WriterKind::Serve(c) = &config.writers[0].kind else {
        panic!("not serve")
    };
    Zones::compile("dns", &c.zones)
}

fn managed(names: &[(&str, &[&str], u32)]) -> BTreeMap<String, Published> {
    names
        .iter()
        .map(|(n, ips, ttl)| {
            (
                n.to_string(),
                Published::with_ttl(ips.iter().map(|s| s.parse::<IpAddr>().unwrap()), *ttl),
            )
        })
        .collect()
}

fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn ask(snap: &Snapshot, q: &[u8], transport: Transport) -> Message {
    let mut out = Vec::new();
    assert!(respond(snap, q, transport, &mut out), "no response");
    Message::from_vec(&out).unwrap_or_else(|e| panic!("bad response {out:?}: {e}"))
}

fn snapshot() -> Snapshot {
    let z = zones(
        "records = [\"mail 600 MX 10 mx.example.test.\", \"a.b.c 60 TXT hello\", \"alias CNAME www\", \"out CNAME www.elsewhere.test.\", \"dangling CNAME nothing\", \"www 60 TXT static\", \"www 60 A 192.0.2.99\"]",
    );
    let m = managed(&[
        ("www.example.test.", &["127.0.0.2", "127.0.0.3", "::1"], 30),
        ("down.example.test.", &[], 30),
    ]);
    Snapshot::build(&z, &m, 42)
}

fn addresses(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[test]
fn managed_addresses_replace_static_ones_and_keep_their_ttl() {
    let snap = snapshot();
    let m = ask(
        &snap,
        &query("WwW.Example.TEST.", RecordType::A, None),
        Transport::Udp,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert!(m.metadata.recursion_desired, "RD is copied");
    assert!(!m.metadata.recursion_available);
    assert_eq!(m.metadata.id, 0xbeef);
    assert_eq!(addresses(&m), ["127.0.0.2", "127.0.0.3"]);
    assert!(m.answers.iter().all(|r| r.ttl == 30));
    // The question and the owners keep the client's spelling.
    assert_eq!(m.queries[0].name().to_ascii(), "WwW.Example.TEST.");
    assert_eq!(m.answers[0].name.to_ascii(), "WwW.Example.TEST.");
    let aaaa = ask(
        &snap,
        &query("www.example.test.", RecordType::AAAA, None),
        Transport::Udp,
    );
    assert_eq!(addresses(&aaaa), ["::1"]);
    let txt = ask(
        &snap,
        &query("www.example.test.", RecordType::TXT, None),
        Transport::Udp,
    );
    assert_eq!(
        txt.answers.len(),
        1,
        "static data beside managed addresses is served"
    );
}

#[test]
fn nxdomain_and_nodata_carry_the_soa_at_the_negative_ttl() {
    let snap = snapshot();
    // NODATA at a name with other data, at an empty non-terminal, and at a managed name without
    // addresses.
    for name in [
        "mail.example.test.",
        "b.c.example.test.",
        "c.example.test.",
        "down.example.test.",
    ] {
        let m = ask(&snap, &query(name, RecordType::A, None), Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.answers.is_empty(), "{name}");
        assert_eq!(m.authorities.len(), 1, "{name}");
        let soa = &m.authorities[0];
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert_eq!(soa.ttl, 60, "min(SOA TTL 300, minimum 60)");
        let RData::SOA(s) = &soa.data else { panic!() };
        assert_eq!(s.serial, 42);
        assert_eq!(s.mname.to_ascii(), "ns1.example.test.");
        assert_eq!(s.rname.to_ascii(), "hostmaster.example.test.");
    }
    for name in [
        "nothing.example.test.",
        "x.b.c.example.test.",
        "a.mail.example.test.",
    ] {
        let m = ask(
            &snap,
            &query(name, RecordType::A, Some(1232)),
            Transport::Udp,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.metadata.authoritative);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(m.authorities[0].name.to_ascii(), "example.test.");
        assert_eq!(m.authorities[0].ttl, 60);
        assert!(m.edns.is_some(), "OPT echoed");
    }
}

#[test]
fn apex_answers_soa_and_ns_and_outside_names_are_refused() {
    let snap = snapshot();
    let soa = ask(
        &snap,
        &query("example.test.", RecordType::SOA, None),
        Transport::Tcp,
    );
    assert_eq!(soa.answers.len(), 1);
    assert_eq!(soa.answers[0].ttl, 300);
    let ns = ask(
        &snap,
        &query("example.test.", RecordType::NS, None),
        Transport::Tcp,
    );
    let mut names: Vec<String> = ns
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::NS(n) => n.0.to_ascii(),
            other => panic!("{other:?}"),
        })
        .collect();
    names.sort();
    assert_eq!(names, ["ns1.example.test.", "ns2.elsewhere.test."]);
    for name in ["example.org.", "test.", "xexample.test."] {
        let m = ask(&snap, &query(name, RecordType::A, None), Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(!m.metadata.authoritative);
    }
}

#[test]
fn cnames_are_followed_inside_the_zone() {
    let snap = snapshot();
    let m = ask(
        &snap,
        &query("alias.example.test.", RecordType::A, None),
        Transport::Udp,
    );
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(addresses(&m), ["127.0.0.2", "127.0.0.3"]);
    let out = ask(
        &snap,
        &query("out.example.test.", RecordType::A, None),
        Transport::Udp,
    );
    assert_eq!(out.answers.len(), 1);
    assert!(out.authorities.is_empty());
    let dangling = ask(
        &snap,
        &query("dangling.example.test.", RecordType::A, None),
        Transport::Udp,
    );
    assert_eq!(
        dangling.metadata.response_code,
        ResponseCode::NXDomain,
        "RFC 6604"
    );
    assert_eq!(dangling.answers.len(), 1);
    let nodata = ask(
        &snap,
        &query("alias.example.test.", RecordType::MX, None),
        Transport::Udp,
    );
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert_eq!(nodata.answers.len(), 1);
    assert_eq!(nodata.authorities.len(), 1);
}

#[test]
fn any_gets_one_rrset() {
    let snap = snapshot();
    let m = ask(
        &snap,
        &query("www.example.test.", RecordType::ANY, None),
        Transport::Tcp,
    );
    assert_eq!(m.answers.len(), 2, "the A RRset only: {m:?}");
    assert!(m.answers.iter().all(|r| r.record_type() == RecordType::A));
    assert_eq!(m.queries[0].query_type(), RecordType::ANY);
    let ent = ask(
        &snap,
        &query("c.example.test.", RecordType::ANY, None),
        Transport::Udp,
    );
    assert!(ent.answers.is_empty());
    assert_eq!(ent.authorities.len(), 1);
}

#[test]
fn large_answers_truncate_over_udp_and_fit_over_tcp() {
    let ips: Vec<String> = (0..60).map(|i| format!("10.0.0.{i}")).collect();
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    let snap = Snapshot::build(&zones(""), &managed(&[("big.example.test.", &ips, 30)]), 1);
    let plain = ask(
        &snap,
        &query("big.example.test.", RecordType::A, None),
        Transport::Udp,
    );
    assert!(plain.metadata.truncation);
    assert!(plain.answers.is_empty(), "whole RRsets only");
    let small = ask(
        &snap,
        &query("big.example.test.", RecordType::A, Some(512)),
        Transport::Udp,
    );
    assert!(small.metadata.truncation);
    assert!(small.edns.is_some(), "OPT even when truncated");
    let edns = ask(
        &snap,
        &query("big.example.test.", RecordType::A, Some(4096)),
        Transport::Udp,
    );
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 60);
    assert_eq!(edns.edns.as_ref().unwrap().max_payload(), MAX_UDP_PAYLOAD);
    let tcp = ask(
        &snap,
        &query("big.example.test.", RecordType::A, None),
        Transport::Tcp,
    );
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 60);
}

#[test]
fn odd_queries_get_the_documented_rcodes() {
    let snap = snapshot();
    let mut q = query("www.example.test.", RecordType::A, Some(1232));
    // EDNS version 1: the OPT's TTL field is ext-rcode, version, flags.
    let opt_ttl = q.len() - 6;
    q[opt_ttl + 1] = 1;
    let mut out = Vec::new();
    assert!(respond(&snap, &q, Transport::Udp, &mut out));
    let m = Message::from_vec(&out).unwrap();
    // BADVERS and BADSIG share the value 16 (RFC 6891 §9, RFC 8945 §5.3.2).
    assert_eq!(u16::from(m.metadata.response_code), 16);
    let axfr = ask(
        &snap,
        &query("example.test.", RecordType::AXFR, None),
        Transport::Tcp,
    );
    assert_eq!(axfr.metadata.response_code, ResponseCode::Refused);
    let mut update = query("example.test.", RecordType::SOA, None);
    update[2] |= 5 << 3;
    let m = ask(&snap, &update, Transport::Udp);
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    assert_eq!(m.metadata.op_code, OpCode::Update);
    let mut two = query("www.example.test.", RecordType::A, None);
    two[5] = 2;
    assert_eq!(
        ask(&snap, &two, Transport::Udp).metadata.response_code,
        ResponseCode::FormErr
    );
    // A response is never answered (no reflection loops), nor are fewer than 12 bytes.
    let mut response = query("www.example.test.", RecordType::A, None);
    response[2] |= 0x80;
    assert!(!respond(&snap, &response, Transport::Udp, &mut out));
    assert!(!respond(&snap, &[1, 2, 3], Transport::Udp, &mut out));
}

proptest! {
    /// Whatever arrives, the responder neither panics nor answers with something a decoder rejects.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let snap = snapshot();
        let mut out = Vec::new();
        if respond(&snap, &bytes, Transport::Udp, &mut out) {
            prop_assert!(out.len() >= 12);
            prop_assert!(out.len() <= usize::from(MAX_UDP_PAYLOAD));
        }
    }

    /// Valid queries with a few bytes changed: still no panic, and an answer that decodes.
    #[test]
    fn mutated_queries_never_panic(
        name in prop::sample::select(vec!["www.example.test.", "alias.example.test.", "x.example.test.", "example.org."]),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let snap = snapshot();
        let mut q = query(name, RecordType::A, Some(1232));
        for (at, byte) in edits {
            let n = q.len();
            q[at % n] = byte;
        }
        q.truncate(cut % (q.len() + 1));
        let mut out = Vec::new();
        if respond(&snap, &q, Transport::Tcp, &mut out) {
            prop_assert!(Message::from_vec(&out).is_ok(), "{:?} -> {:?}", q, out);
        }
    }
}
