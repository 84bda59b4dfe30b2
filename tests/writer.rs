//! The writer battery: one set of checks written against the `Writer` trait, run over every back end
//! through a [`Fixture`] that changes and reads the authoritative data independently of the writer
//! (nsupdate and dig for a DNS server, the store itself for `memory`). Today: `rfc2136` on Knot and on
//! BIND, and `act::memory::MemoryWriter`. A new writer adds a `Fixture` and one line to
//! `writer_battery!` at the bottom.
//!
//! Below the battery, rows that only make sense for one back end: `rfc2136` authentication and
//! transport errors, key files, and the compare-and-swap path of `daemon::converge` with a real
//! concurrent change injected between its read and its write; `memory` without compare-and-swap.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rrguard::act::memory::MemoryWriter;
use rrguard::act::rfc2136::Rfc2136Writer;
use rrguard::act::{Capabilities, Precondition, Published, RecordChange, WriteError, Writer};
use rrguard::config::{Rfc2136Config, TsigAlgorithm, TsigConfig};
use rrguard::daemon::converge;
use rrguard::decide::Health;
use rrguard::decide::service::{Event, ServiceCore, ServiceView, Settings};
use rrguard::observe::health::HealthMachine;
use support::{DnsKind, DnsServer};

const FQDN: &str = "www.example.test.";
const ZONE: &str = "example.test.";

/// A writer under test and an independent way to change and read what it writes to.
trait Fixture: Send + Sync {
    /// The writer under test.
    fn writer(&self) -> &dyn Writer;
    /// Makes an out-of-band change, as an operator would: afterwards `fqdn` has exactly the A/AAAA
    /// records of `published` with their TTLs, and its CNAME if it has one.
    fn set(&self, fqdn: &str, published: &Published);
    /// What `fqdn` publishes, read without the writer.
    fn authoritative(&self, fqdn: &str) -> Published;
    /// The zone the battery writes to.
    fn zone(&self) -> &str;
}

/// `rfc2136` against a real server; out-of-band changes by nsupdate, reads by dig.
struct ServerFixture {
    dns: DnsServer,
    writer: Rfc2136Writer,
}

impl ServerFixture {
    fn start(kind: DnsKind) -> Box<dyn Fixture> {
        let dns = DnsServer::start(kind, "");
        let writer = writer(&dns, secret(&dns));
        Box::new(ServerFixture { dns, writer })
    }
}

impl Fixture for ServerFixture {
    fn writer(&self) -> &dyn Writer {
        &self.writer
    }

    fn set(&self, fqdn: &str, published: &Published) {
        let mut script: Vec<String> = ["A", "AAAA", "CNAME"]
            .iter()
            .map(|t| format!("update delete {fqdn} {t}"))
            .collect();
        for (ip, ttl) in &published.records {
            let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
            script.push(format!("update add {fqdn} {ttl} {rtype} {ip}"));
        }
        if let Some(target) = &published.cname {
            script.push(format!("update add {fqdn} 60 CNAME {target}"));
        }
        self.dns.nsupdate(&script.join("\n"));
    }

    fn authoritative(&self, fqdn: &str) -> Published {
        let mut out = Published::default();
        for rtype in ["A", "AAAA"] {
            for (ttl, rdata) in self.dns.query_with_ttl(fqdn, rtype) {
                match rdata.split_once(' ') {
                    Some(("CNAME", target)) => out.cname = Some(target.to_owned()),
                    Some((_, ip)) => {
                        out.records.insert(ip.parse().expect("an address"), ttl);
                    }
                    None => panic!("unexpected answer {rdata:?}"),
                }
            }
        }
        out
    }

    fn zone(&self) -> &str {
        &self.dns.zone
    }
}

/// `memory`: out-of-band changes and reads go to its store directly.
struct MemoryFixture(MemoryWriter);

impl MemoryFixture {
    fn boxed(capabilities: Option<Capabilities>) -> Box<dyn Fixture> {
        let w = MemoryWriter::new("memory");
        Box::new(MemoryFixture(match capabilities {
            Some(c) => w.with_capabilities(c),
            None => w,
        }))
    }
}

impl Fixture for MemoryFixture {
    fn writer(&self) -> &dyn Writer {
        &self.0
    }
    fn set(&self, fqdn: &str, published: &Published) {
        self.0.set(fqdn, published.clone());
    }
    fn authoritative(&self, fqdn: &str) -> Published {
        self.0.read_now(fqdn)
    }
    fn zone(&self) -> &str {
        ZONE
    }
}

fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
    ips.iter().map(|s| s.parse().unwrap()).collect()
}

fn addresses(p: Published) -> BTreeSet<IpAddr> {
    p.addresses()
}

/// A record set with per-address TTLs.
fn published(records: &[(&str, u32)]) -> Published {
    Published {
        records: records
            .iter()
            .map(|(ip, t)| (ip.parse().unwrap(), *t))
            .collect(),
        cname: None,
    }
}

fn writer(dns: &DnsServer, secret: Vec<u8>) -> Rfc2136Writer {
    Rfc2136Writer::new(
        "primary",
        Rfc2136Config {
            servers: vec![dns.addr],
            tsig: TsigConfig {
                name: format!("{}.", dns.key_name),
                algorithm: TsigAlgorithm::HmacSha256,
                secret,
            },
            timeout: Duration::from_secs(2),
        },
    )
    .unwrap()
}

fn secret(dns: &DnsServer) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(&dns.secret_b64)
        .unwrap()
}

fn change(expected: &[&str], add: &[&str], remove: &[&str]) -> RecordChange {
    RecordChange {
        fqdn: FQDN.to_owned(),
        zone: ZONE.to_owned(),
        ttl: 30,
        precondition: Precondition::RrsetEquals(set(expected)),
        add: set(add),
        remove: set(remove),
        rettl: BTreeSet::new(),
    }
}

/// `change` in the fixture's zone.
fn change_in(f: &dyn Fixture, expected: &[&str], add: &[&str], remove: &[&str]) -> RecordChange {
    RecordChange {
        zone: f.zone().to_owned(),
        ..change(expected, add, remove)
    }
}

/// After a write: the authoritative data is `want`, and a read-back writer reads the same.
async fn assert_published(f: &dyn Fixture, fqdn: &str, want: &Published) {
    assert_eq!(&f.authoritative(fqdn), want, "authoritative data of {fqdn}");
    if f.writer().capabilities().read_back {
        assert_eq!(
            &f.writer().read(fqdn, f.zone()).await.unwrap(),
            want,
            "the writer's read of {fqdn}"
        );
    }
}

fn expect_conflict(r: Result<(), WriteError>) {
    match r {
        Err(WriteError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
}

// ---- The battery: every check takes only the fixture. ----

async fn reads_records_with_ttls(f: &dyn Fixture) {
    let want = published(&[("127.0.0.2", 60), ("127.0.0.3", 60), ("::1", 45)]);
    f.set(FQDN, &want);
    assert_eq!(f.writer().read(FQDN, f.zone()).await.unwrap(), want);
    assert_eq!(f.authoritative(FQDN), want);
    let fresh = format!("nothing.{}", f.zone());
    assert_eq!(
        f.writer().read(&fresh, f.zone()).await.unwrap(),
        Published::default()
    );
}

async fn adds_and_removes_under_rrset_equals(f: &dyn Fixture) {
    f.set(FQDN, &published(&[("127.0.0.2", 60), ("127.0.0.3", 60)]));
    // Add an A and an AAAA (empty AAAA RRset: "does not exist"), remove one A.
    f.writer()
        .apply(&change_in(
            f,
            &["127.0.0.2", "127.0.0.3"],
            &["127.0.0.4", "::1"],
            &["127.0.0.2"],
        ))
        .await
        .unwrap();
    // An RRset that gains a record takes the change's TTL as a whole.
    let want = published(&[("127.0.0.3", 30), ("127.0.0.4", 30), ("::1", 30)]);
    assert_published(f, FQDN, &want).await;
}

async fn stale_precondition_is_refused_whole(f: &dyn Fixture) {
    f.set(FQDN, &published(&[("127.0.0.2", 60), ("127.0.0.3", 60)]));
    let read = f.writer().read(FQDN, f.zone()).await.unwrap();
    // Someone else changes the A RRset after our read.
    let theirs = published(&[("127.0.0.2", 60), ("127.0.0.3", 60), ("127.0.0.5", 60)]);
    f.set(FQDN, &theirs);
    let stale = RecordChange {
        precondition: Precondition::RrsetEquals(read.addresses()),
        ..change_in(f, &[], &["127.0.0.6", "::6"], &["127.0.0.3"])
    };
    expect_conflict(f.writer().apply(&stale).await);
    // Nothing of it was applied, not even the AAAA whose own RRset was as expected.
    assert_published(f, FQDN, &theirs).await;
}

async fn add_to_a_family_believed_empty_conflicts(f: &dyn Fixture) {
    let theirs = published(&[("127.0.0.2", 60), ("::1", 60)]);
    f.set(FQDN, &theirs);
    expect_conflict(
        f.writer()
            .apply(&change_in(f, &[], &["127.0.0.7"], &[]))
            .await,
    );
    expect_conflict(
        f.writer()
            .apply(&change_in(f, &["127.0.0.2"], &["::7"], &[]))
            .await,
    );
    assert_published(f, FQDN, &theirs).await;
}

async fn rettl_rewrites_the_whole_rrset(f: &dyn Fixture) {
    f.set(
        FQDN,
        &published(&[("127.0.0.2", 60), ("127.0.0.3", 60), ("::1", 60)]),
    );
    // Only TTLs change: Knot ignores a plain add of an existing RR with another TTL.
    let rettl = RecordChange {
        rettl: set(&["127.0.0.2", "127.0.0.3"]),
        ..change_in(f, &["127.0.0.2", "127.0.0.3", "::1"], &[], &[])
    };
    f.writer().apply(&rettl).await.unwrap();
    let want = published(&[("127.0.0.2", 30), ("127.0.0.3", 30), ("::1", 60)]);
    assert_published(f, FQDN, &want).await;
    // Mixed with an add and a removal, at yet another TTL.
    let mixed = RecordChange {
        ttl: 20,
        rettl: set(&["127.0.0.2"]),
        ..change_in(
            f,
            &["127.0.0.2", "127.0.0.3"],
            &["127.0.0.4"],
            &["127.0.0.3"],
        )
    };
    f.writer().apply(&mixed).await.unwrap();
    let want = published(&[("127.0.0.2", 20), ("127.0.0.4", 20), ("::1", 60)]);
    assert_published(f, FQDN, &want).await;
}

async fn name_not_in_use_allocates_once(f: &dyn Fixture) {
    let fresh = format!("fresh.{}", f.zone());
    let allocate = |ip: &str| RecordChange {
        fqdn: fresh.clone(),
        precondition: Precondition::NameNotInUse,
        ..change_in(f, &[], &[ip], &[])
    };
    f.writer().apply(&allocate("127.0.0.9")).await.unwrap();
    let want = published(&[("127.0.0.9", 30)]);
    assert_published(f, &fresh, &want).await;
    expect_conflict(f.writer().apply(&allocate("127.0.0.10")).await);
    assert_published(f, &fresh, &want).await;
}

async fn cname_is_read_and_blocks_addresses(f: &dyn Fixture) {
    let alias = Published {
        records: BTreeMap::new(),
        cname: Some("lb.example.test.".to_owned()),
    };
    f.set(FQDN, &alias);
    assert_eq!(f.writer().read(FQDN, f.zone()).await.unwrap(), alias);
    // Servers answer NOERROR and drop an address beside a CNAME; the writer reports Ok and the data
    // shows nothing was added (the service core turns that into an operator error).
    f.writer()
        .apply(&change_in(f, &[], &["127.0.0.2"], &[]))
        .await
        .unwrap();
    assert_published(f, FQDN, &alias).await;
}

async fn capabilities_are_honoured(f: &dyn Fixture) {
    let caps = f.writer().capabilities();
    f.set(FQDN, &published(&[("127.0.0.2", 60), ("127.0.0.3", 60)]));
    // Planned against a state that never was.
    let stale = change_in(f, &["127.0.0.9"], &["127.0.0.4"], &["127.0.0.3"]);
    let result = f.writer().apply(&stale).await;
    if caps.compare_and_swap {
        expect_conflict(result);
        assert_eq!(
            addresses(f.authoritative(FQDN)),
            set(&["127.0.0.2", "127.0.0.3"])
        );
    } else {
        // Documented: without compare-and-swap the precondition is ignored and the change applied.
        result.unwrap();
        assert_eq!(
            addresses(f.authoritative(FQDN)),
            set(&["127.0.0.2", "127.0.0.4"])
        );
    }
    if caps.read_back {
        assert_eq!(
            f.writer().read(FQDN, f.zone()).await.unwrap(),
            f.authoritative(FQDN)
        );
    }
}

/// The battery checks the data; here what a server adds: the refusal names the rcode an operator
/// knows from dig, and the zone's serial shows that no part of the UPDATE was applied.
async fn refused_update_names_the_rcode_and_leaves_the_serial(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let w = writer(&dns, secret(&dns));
    dns.nsupdate("update add www.example.test. 60 A 127.0.0.5");
    let serial = dns.soa_serial();
    let stale = change(&["127.0.0.2", "127.0.0.3"], &["127.0.0.6"], &["127.0.0.3"]);
    match w.apply(&stale).await {
        Err(WriteError::Conflict(why)) => assert!(why.ends_with("answered NXRRSET"), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(dns.soa_serial(), serial);
}

async fn wrong_key_is_an_operator_error(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\n");
    let w = writer(&dns, b"definitely-not-the-right-secret!".to_vec());
    let err = w
        .apply(&change(&["127.0.0.2"], &["127.0.0.3"], &[]))
        .await
        .unwrap_err();
    assert!(err.needs_operator(), "{err:?}");
    assert!(
        err.to_string().contains("TSIG") || err.to_string().contains("NOTAUTH"),
        "{err}"
    );
    assert_eq!(dns.query("www.example.test", "A"), vec!["127.0.0.2"]);
}

async fn unreachable_server_is_transient(kind: DnsKind) {
    let mut dns = DnsServer::start(kind, "www A 127.0.0.2\n");
    let w = writer(&dns, secret(&dns));
    dns.stop();
    match w.read(FQDN, ZONE).await {
        Err(e @ WriteError::Transient(_)) => assert!(!e.needs_operator()),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

/// A key file shared with the server often holds another key first (BIND's rndc-key): the writer
/// built from the config must sign with the key named like `tsig.name`, in BIND and Knot syntax.
async fn key_file_with_another_key_first_signs_with_the_named_key(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\n");
    let dir = tempfile::tempdir().unwrap();
    let (key, secret) = (&dns.key_name, &dns.secret_b64);
    let other = "cm5kYy1zZWNyZXQtcm5kYy1zZWNyZXQtcm5kYy1zZWM=";
    let files = [
        format!(
            "key \"rndc-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{other}\";\n}};\nkey \"{key}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"
        ),
        format!(
            "key:\n  - id: rndc-key\n    algorithm: hmac-sha256\n    secret: {other}\n  - id: {key}\n    algorithm: hmac-sha256\n    secret: {secret}\n"
        ),
    ];
    for (i, file) in files.iter().enumerate() {
        std::fs::write(dir.path().join("keys.conf"), file).unwrap();
        let text = format!(
            "[[writer]]\nname = \"primary\"\ntype = \"rfc2136\"\nserver = \"{}\"\ntsig = {{ name = \"{}\", algorithm = \"hmac-sha256\", secret_file = \"keys.conf\" }}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"primary\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n",
            dns.addr,
            key.to_uppercase()
        );
        let config = rrguard::config::parse(&dir.path().join("rrguard.toml"), &text).unwrap();
        let w = rrguard::act::build(&config.writers[0]).unwrap();
        let ip = format!("127.0.0.{}", 10 + i);
        let expected: Vec<String> = dns.query("www.example.test", "A");
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        w.apply(&change(&expected, &[&ip], &[])).await.unwrap();
        assert!(dns.query("www.example.test", "A").contains(&ip), "{file}");
    }
}

/// Wraps a writer; before the first `apply` it makes a real external change through nsupdate.
struct Interferer<'a> {
    inner: Rfc2136Writer,
    dns: &'a DnsServer,
    applies: AtomicUsize,
    conflicts: AtomicUsize,
}

#[async_trait]
impl Writer for Interferer<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError> {
        self.inner.read(fqdn, zone).await
    }
    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        if self.applies.fetch_add(1, Ordering::SeqCst) == 0 {
            self.dns
                .nsupdate("update add www.example.test. 60 A 127.0.0.5");
        }
        let r = self.inner.apply(change).await;
        if matches!(r, Err(WriteError::Conflict(_))) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

async fn concurrent_change_is_caught_and_replanned(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\nwww A 127.0.0.3\nwww A 127.0.0.4\n");
    let w = Interferer {
        inner: writer(&dns, secret(&dns)),
        dns: &dns,
        applies: AtomicUsize::new(0),
        conflicts: AtomicUsize::new(0),
    };
    let endpoints: Vec<IpAddr> = set(&["127.0.0.2", "127.0.0.3", "127.0.0.4"])
        .into_iter()
        .collect();
    let svc = support::service_config(FQDN, ZONE, endpoints.clone(), 30);
    let health: BTreeMap<IpAddr, Health> = [
        ("127.0.0.2".parse().unwrap(), Health::Up),
        ("127.0.0.3".parse().unwrap(), Health::Down),
        ("127.0.0.4".parse().unwrap(), Health::Up),
    ]
    .into_iter()
    .collect();
    let settings = Settings::of(&svc, w.capabilities(), Duration::from_secs(60), false);
    let machines = endpoints
        .iter()
        .map(|ip| (*ip, HealthMachine::with_state(1, 1, health[ip])))
        .collect();
    let mut core = ServiceCore::new(settings, machines, tokio::time::Instant::now());
    let view = ServiceView {
        health,
        leader: true,
        live_nodes: 1,
    };
    core.on_view(tokio::time::Instant::now(), &view);
    let events = converge(&mut core, &w).await;
    // The first write was planned against {2,3,4}, refused because .5 appeared, then re-planned
    // against {2,3,4,5}: .3 goes, the external .5 stays.
    assert_eq!(w.conflicts.load(Ordering::SeqCst), 1);
    assert_eq!(w.applies.load(Ordering::SeqCst), 2);
    let written: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Updated(plan) => Some(plan),
            _ => None,
        })
        .collect();
    assert_eq!(written.len(), 1, "{events:?}");
    assert_eq!(
        written[0].expected,
        set(&["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"])
    );
    assert_eq!(
        core.published().map(|p| p.addresses()),
        Some(set(&["127.0.0.2", "127.0.0.4", "127.0.0.5"]))
    );
    assert_eq!(
        dns.query("www.example.test", "A"),
        vec!["127.0.0.2", "127.0.0.4", "127.0.0.5"]
    );
}

/// Keeps the writer trait object-safe and shareable, as the daemon uses it.
#[test]
fn writer_is_shareable_trait_object() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn Writer>();
    let _: Option<Arc<dyn Writer>> = None;
}

/// The battery's checks, as `#[tokio::test]`s calling `super::CHECK(&*fixture())`.
macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture = fixture();
                super::$check(&*fixture).await
            }
        )*
    };
}

/// One module per writer, each running every check of the battery.
macro_rules! writer_battery {
    ($($writer:ident => $fixture:expr;)*) => {
        $(
            mod $writer {
                use super::*;
                fn fixture() -> Box<dyn Fixture> {
                    $fixture
                }
                checks!(
                    reads_records_with_ttls,
                    adds_and_removes_under_rrset_equals,
                    stale_precondition_is_refused_whole,
                    add_to_a_family_believed_empty_conflicts,
                    rettl_rewrites_the_whole_rrset,
                    name_not_in_use_allocates_once,
                    cname_is_read_and_blocks_addresses,
                    capabilities_are_honoured,
                );
            }
        )*
    };
}

// Every writer, one line each.
writer_battery! {
    rfc2136_knot => ServerFixture::start(DnsKind::Knot);
    rfc2136_bind => ServerFixture::start(DnsKind::Bind);
    memory => MemoryFixture::boxed(None);
}

/// `memory` declaring no compare-and-swap: preconditions are ignored and stale changes applied, as a
/// back end without conditional writes would (the core re-reads after every write instead).
#[tokio::test]
async fn memory_without_compare_and_swap_applies_stale_changes() {
    let f = MemoryFixture::boxed(Some(Capabilities {
        compare_and_swap: false,
        ..MemoryWriter::new("m").capabilities()
    }));
    assert!(!f.writer().capabilities().compare_and_swap);
    capabilities_are_honoured(&*f).await;
    // NameNotInUse is not enforced either.
    f.set(FQDN, &published(&[("127.0.0.2", 60)]));
    let allocate = RecordChange {
        precondition: Precondition::NameNotInUse,
        ..change(&[], &["127.0.0.8"], &[])
    };
    f.writer().apply(&allocate).await.unwrap();
    assert_eq!(
        f.authoritative(FQDN),
        published(&[("127.0.0.2", 30), ("127.0.0.8", 30)])
    );
}

/// Rows for `rfc2136` only, on each server.
macro_rules! rfc2136_rows {
    ($($name:ident),* $(,)?) => {
        mod rfc2136_knot_only {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::DnsKind::Knot).await } )*
        }
        mod rfc2136_bind_only {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::DnsKind::Bind).await } )*
        }
    };
}

rfc2136_rows!(
    key_file_with_another_key_first_signs_with_the_named_key,
    refused_update_names_the_rcode_and_leaves_the_serial,
    wrong_key_is_an_operator_error,
    unreachable_server_is_transient,
    concurrent_change_is_caught_and_replanned,
);
