//! The writer battery: every `Writer` back end against real servers. Today that is `rfc2136` against Knot
//! and BIND. Also the compare-and-swap path of `daemon::converge` with a real concurrent change injected
//! between its read and its write.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rrguard::act::rfc2136::Rfc2136Writer;
use rrguard::act::{Capabilities, Precondition, Published, RecordChange, WriteError, Writer};
use rrguard::config::{
    AllDownPolicy, CheckConfig, Rfc2136Config, ServiceConfig, TcpCheckConfig, TsigAlgorithm,
    TsigConfig,
};
use rrguard::daemon::converge;
use rrguard::decide::Health;
use rrguard::decide::service::{Event, ServiceCore, ServiceView, Settings};
use rrguard::observe::health::HealthMachine;
use support::{DnsKind, DnsServer};

const FQDN: &str = "www.example.test.";
const ZONE: &str = "example.test.";

fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
    ips.iter().map(|s| s.parse().unwrap()).collect()
}

fn addresses(p: Published) -> BTreeSet<IpAddr> {
    p.addresses()
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

async fn read_add_remove(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let w = writer(&dns, secret(&dns));
    assert!(w.capabilities().compare_and_swap);
    assert_eq!(
        addresses(w.read(FQDN, ZONE).await.unwrap()),
        set(&["127.0.0.2", "127.0.0.3"])
    );
    // Add an A and an AAAA (empty AAAA RRset: "does not exist" prerequisite), remove one A.
    w.apply(&change(
        &["127.0.0.2", "127.0.0.3"],
        &["127.0.0.4", "::1"],
        &["127.0.0.2"],
    ))
    .await
    .unwrap();
    assert_eq!(
        addresses(w.read(FQDN, ZONE).await.unwrap()),
        set(&["127.0.0.3", "127.0.0.4", "::1"])
    );
    assert_eq!(dns.query("www.example.test", "AAAA"), vec!["::1"]);
    assert_eq!(
        dns.query("www.example.test", "A"),
        vec!["127.0.0.3", "127.0.0.4"]
    );
    // Records added carry the service TTL (30; the zone's own records have 60).
    let out = std::process::Command::new("dig")
        .args([
            "+tcp",
            "+noall",
            "+answer",
            "@127.0.0.1",
            "-p",
            &dns.addr.port().to_string(),
        ])
        .args(["www.example.test", "AAAA"])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    let ttl: Vec<&str> = answer
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(ttl, vec!["30"], "{answer}");
    // A name with no records reads as empty.
    assert_eq!(
        w.read("nothing.example.test.", ZONE).await.unwrap(),
        Published::default()
    );
}

async fn stale_change_is_refused_whole(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let w = writer(&dns, secret(&dns));
    let read = w.read(FQDN, ZONE).await.unwrap();
    // Someone else changes the A RRset after our read.
    dns.nsupdate("update add www.example.test. 60 A 127.0.0.5");
    let serial = dns.soa_serial();
    let stale = RecordChange {
        precondition: Precondition::RrsetEquals(read.addresses()),
        ..change(&[], &["127.0.0.6"], &["127.0.0.3"])
    };
    match w.apply(&stale).await {
        Err(WriteError::Conflict(why)) => assert!(why.ends_with("answered NXRRSET"), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Nothing of the stale change was applied.
    assert_eq!(
        dns.query("www.example.test", "A"),
        vec!["127.0.0.2", "127.0.0.3", "127.0.0.5"]
    );
    assert_eq!(dns.soa_serial(), serial);
    // Adding to an RRset we believed empty also conflicts when it is not.
    match w.apply(&change(&[], &["127.0.0.7"], &[])).await {
        Err(WriteError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
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
    let svc = ServiceConfig {
        fqdn: FQDN.to_owned(),
        zone: ZONE.to_owned(),
        writer: "primary".to_owned(),
        ttl: 30,
        endpoints: endpoints.clone(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        fall: 1,
        rise: 1,
        min_healthy: 1,
        all_down: AllDownPolicy::KeepAll,
        remove_unlisted: false,
        quorum: None,
        check: CheckConfig::Tcp(TcpCheckConfig { port: 80 }),
    };
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

macro_rules! battery {
    ($($name:ident),* $(,)?) => {
        mod knot {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::DnsKind::Knot).await } )*
        }
        mod bind {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::DnsKind::Bind).await } )*
        }
    };
}

battery!(
    read_add_remove,
    stale_change_is_refused_whole,
    wrong_key_is_an_operator_error,
    unreachable_server_is_transient,
    concurrent_change_is_caught_and_replanned,
);
