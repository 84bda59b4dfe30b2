//! The writer battery: one set of checks written against the `Writer` trait, run over every back end
//! through a [`Fixture`] that changes and reads the authoritative data independently of the writer
//! (nsupdate and dig for a DNS server, the file itself for a file writer, the fake's store for an HTTP
//! API). A writer's test file implements `Fixture` and invokes `writer_battery!` once:
//!
//! ```ignore
//! #[macro_use]
//! mod support;
//! use support::battery::*;
//! writer_battery! { hosts => HostsFixture::boxed(); }
//! ```
//!
//! Checks branch on [`Capabilities`]: a writer with compare-and-swap must refuse a stale change
//! whole; one without must apply it as asked (documented), and the service core repairs after the
//! re-read (checked end to end by [`concurrent_change_converges`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rrguard::act::{Capabilities, Precondition, Published, RecordChange, WriteError, Writer};
use rrguard::daemon::converge;
use rrguard::decide::Health;
use rrguard::decide::service::{Event, ServiceCore, ServiceView, Settings};
use rrguard::observe::health::HealthMachine;

/// The name every check writes (in [`Fixture::zone`] when the fixture uses another zone).
pub const FQDN: &str = "www.example.test.";
/// The zone of [`FQDN`].
pub const ZONE: &str = "example.test.";

/// A failure the battery asks a fixture to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The back end is unreachable or fails (connection refused, HTTP 5xx, a reload command that
    /// fails): the writer must say [`WriteError::Transient`].
    ServerError,
    /// The back end refuses our credentials or permission (wrong TSIG key, HTTP 401/403): the writer
    /// must say an error that [`WriteError::needs_operator`].
    BadCredentials,
}

/// A writer under test and an independent way to change and read what it writes to.
pub trait Fixture: Send + Sync {
    /// The writer under test.
    fn writer(&self) -> &dyn Writer;
    /// Makes an out-of-band change, as an operator would: afterwards `fqdn` has exactly the A/AAAA
    /// records of `published` with their TTLs, and its CNAME if it has one.
    fn set(&self, fqdn: &str, published: &Published);
    /// What `fqdn` publishes, read without the writer.
    fn authoritative(&self, fqdn: &str) -> Published;
    /// The zone the battery writes to.
    fn zone(&self) -> &str {
        ZONE
    }
    /// A writer of the same kind facing `failure`, or `Err(why)` when the back end has no such
    /// failure (an in-memory store has no credentials); the reason is printed by the check.
    fn failing(&self, failure: Failure) -> Result<Box<dyn Writer>, &'static str>;
}

/// Addresses from text.
pub fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
    ips.iter().map(|s| s.parse().unwrap()).collect()
}

/// A record set with per-address TTLs.
pub fn published(records: &[(&str, u32)]) -> Published {
    Published {
        records: records
            .iter()
            .map(|(ip, t)| (ip.parse().unwrap(), *t))
            .collect(),
        cname: None,
        weights: Default::default(),
    }
}

/// A change of [`FQDN`] in [`ZONE`] at TTL 30.
pub fn change(expected: &[&str], add: &[&str], remove: &[&str]) -> RecordChange {
    RecordChange {
        fqdn: FQDN.to_owned(),
        zone: ZONE.to_owned(),
        ttl: 30,
        precondition: Precondition::RrsetEquals(set(expected)),
        add: set(add),
        remove: set(remove),
        rettl: BTreeSet::new(),
        weights: Default::default(),
    }
}

/// `change` of the fixture's name in the fixture's zone.
pub fn change_in(
    f: &dyn Fixture,
    expected: &[&str],
    add: &[&str],
    remove: &[&str],
) -> RecordChange {
    RecordChange {
        fqdn: name_in(f, "www"),
        zone: f.zone().to_owned(),
        ..change(expected, add, remove)
    }
}

/// `label` under the fixture's zone.
pub fn name_in(f: &dyn Fixture, label: &str) -> String {
    format!("{label}.{}", f.zone())
}

/// After a write: the authoritative data is `want`, and a read-back writer reads the same.
pub async fn assert_published(f: &dyn Fixture, fqdn: &str, want: &Published) {
    assert_eq!(&f.authoritative(fqdn), want, "authoritative data of {fqdn}");
    if f.writer().capabilities().read_back {
        assert_eq!(
            &f.writer().read(fqdn, f.zone()).await.unwrap(),
            want,
            "the writer's read of {fqdn}"
        );
    }
}

/// The addresses `fqdn` publishes, read without the writer.
pub fn addresses_of(f: &dyn Fixture, fqdn: &str) -> BTreeSet<IpAddr> {
    f.authoritative(fqdn).addresses()
}

/// Panics unless `r` is a conflict.
pub fn expect_conflict(r: Result<(), WriteError>) {
    match r {
        Err(WriteError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
}

// ---- The battery: every check takes only the fixture. ----

/// read: A and AAAA with their own TTLs; an absent name reads empty.
pub async fn reads_records_with_ttls(f: &dyn Fixture) {
    let www = name_in(f, "www");
    let want = published(&[("127.0.0.2", 60), ("127.0.0.3", 60), ("::1", 45)]);
    f.set(&www, &want);
    assert_eq!(f.writer().read(&www, f.zone()).await.unwrap(), want);
    assert_eq!(f.authoritative(&www), want);
    let fresh = name_in(f, "nothing");
    assert_eq!(
        f.writer().read(&fresh, f.zone()).await.unwrap(),
        Published::default()
    );
}

/// add and remove, A and AAAA, in one change.
pub async fn adds_and_removes_under_rrset_equals(f: &dyn Fixture) {
    let www = name_in(f, "www");
    f.set(&www, &published(&[("127.0.0.2", 60), ("127.0.0.3", 60)]));
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
    assert_published(f, &www, &want).await;
}

/// replace: the whole set changes in one write.
pub async fn replaces_the_whole_set(f: &dyn Fixture) {
    let www = name_in(f, "www");
    f.set(&www, &published(&[("127.0.0.2", 60), ("127.0.0.3", 60)]));
    f.writer()
        .apply(&change_in(
            f,
            &["127.0.0.2", "127.0.0.3"],
            &["127.0.0.7", "127.0.0.8"],
            &["127.0.0.2", "127.0.0.3"],
        ))
        .await
        .unwrap();
    let want = published(&[("127.0.0.7", 30), ("127.0.0.8", 30)]);
    assert_published(f, &www, &want).await;
    // Other names of the zone are untouched by writes to this one.
    let other = name_in(f, "other");
    f.set(&other, &published(&[("127.0.0.50", 60)]));
    f.writer()
        .apply(&change_in(
            f,
            &["127.0.0.7", "127.0.0.8"],
            &[],
            &["127.0.0.8"],
        ))
        .await
        .unwrap();
    assert_eq!(f.authoritative(&other), published(&[("127.0.0.50", 60)]));
}

/// A stale precondition: refused whole with compare-and-swap, applied as asked without.
pub async fn stale_precondition_is_refused_whole(f: &dyn Fixture) {
    let www = name_in(f, "www");
    f.set(&www, &published(&[("127.0.0.2", 60), ("127.0.0.3", 60)]));
    let read = f.writer().read(&www, f.zone()).await.unwrap();
    // Someone else changes the A RRset after our read.
    let theirs = published(&[("127.0.0.2", 60), ("127.0.0.3", 60), ("127.0.0.5", 60)]);
    f.set(&www, &theirs);
    let stale = RecordChange {
        precondition: Precondition::RrsetEquals(read.addresses()),
        ..change_in(f, &[], &["127.0.0.6", "::6"], &["127.0.0.3"])
    };
    let result = f.writer().apply(&stale).await;
    if f.writer().capabilities().compare_and_swap {
        expect_conflict(result);
        // Nothing of it was applied, not even the AAAA whose own RRset was as expected.
        assert_published(f, &www, &theirs).await;
    } else {
        result.unwrap();
        assert_eq!(
            addresses_of(f, &www),
            set(&["127.0.0.2", "127.0.0.5", "127.0.0.6", "::6"])
        );
    }
}

/// Adding to a family believed empty while it is not.
pub async fn add_to_a_family_believed_empty_conflicts(f: &dyn Fixture) {
    let www = name_in(f, "www");
    let theirs = published(&[("127.0.0.2", 60), ("::1", 60)]);
    f.set(&www, &theirs);
    let first = f
        .writer()
        .apply(&change_in(f, &[], &["127.0.0.7"], &[]))
        .await;
    let second = f
        .writer()
        .apply(&change_in(f, &["127.0.0.2"], &["::7"], &[]))
        .await;
    if f.writer().capabilities().compare_and_swap {
        expect_conflict(first);
        expect_conflict(second);
        assert_published(f, &www, &theirs).await;
    } else {
        first.unwrap();
        second.unwrap();
        assert_eq!(
            addresses_of(f, &www),
            set(&["127.0.0.2", "127.0.0.7", "::1", "::7"])
        );
    }
}

/// TTL change: kept records take the new TTL, alone and mixed with adds and removals.
pub async fn rettl_rewrites_the_whole_rrset(f: &dyn Fixture) {
    let www = name_in(f, "www");
    f.set(
        &www,
        &published(&[("127.0.0.2", 60), ("127.0.0.3", 60), ("::1", 60)]),
    );
    // Only TTLs change: Knot ignores a plain add of an existing RR with another TTL.
    let rettl = RecordChange {
        rettl: set(&["127.0.0.2", "127.0.0.3"]),
        ..change_in(f, &["127.0.0.2", "127.0.0.3", "::1"], &[], &[])
    };
    f.writer().apply(&rettl).await.unwrap();
    let want = published(&[("127.0.0.2", 30), ("127.0.0.3", 30), ("::1", 60)]);
    assert_published(f, &www, &want).await;
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
    assert_published(f, &www, &want).await;
}

/// `NameNotInUse`: allocates once with compare-and-swap; ignored without.
pub async fn name_not_in_use_allocates_once(f: &dyn Fixture) {
    let fresh = name_in(f, "fresh");
    let allocate = |ip: &str| RecordChange {
        fqdn: fresh.clone(),
        precondition: Precondition::NameNotInUse,
        ..change_in(f, &[], &[ip], &[])
    };
    f.writer().apply(&allocate("127.0.0.9")).await.unwrap();
    let want = published(&[("127.0.0.9", 30)]);
    assert_published(f, &fresh, &want).await;
    let again = f.writer().apply(&allocate("127.0.0.10")).await;
    if f.writer().capabilities().compare_and_swap {
        expect_conflict(again);
        assert_published(f, &fresh, &want).await;
    } else {
        again.unwrap();
        assert_eq!(addresses_of(f, &fresh), set(&["127.0.0.9", "127.0.0.10"]));
    }
}

/// A CNAME at the name is read, and an address added beside it does not appear.
pub async fn cname_is_read_and_blocks_addresses(f: &dyn Fixture) {
    let www = name_in(f, "www");
    let alias = Published {
        records: BTreeMap::new(),
        cname: Some(format!("lb.{}", f.zone())),
        weights: Default::default(),
    };
    f.set(&www, &alias);
    assert_eq!(f.writer().read(&www, f.zone()).await.unwrap(), alias);
    // Servers answer NOERROR and drop an address beside a CNAME; a writer either does the same or
    // refuses with an operator error. Either way nothing is added (the service core turns a silent
    // drop into an operator error through its read-back).
    match f
        .writer()
        .apply(&change_in(f, &[], &["127.0.0.2"], &[]))
        .await
    {
        Ok(()) => {}
        Err(e) => assert!(e.needs_operator(), "{e:?}"),
    }
    assert_eq!(f.authoritative(&www), alias);
}

/// What the writer declares is what it does.
pub async fn capabilities_are_honoured(f: &dyn Fixture) {
    let www = name_in(f, "www");
    let caps = f.writer().capabilities();
    f.set(&www, &published(&[("127.0.0.2", 60), ("127.0.0.3", 60)]));
    // Planned against a state that never was.
    let stale = change_in(f, &["127.0.0.9"], &["127.0.0.4"], &["127.0.0.3"]);
    let result = f.writer().apply(&stale).await;
    if caps.compare_and_swap {
        expect_conflict(result);
        assert_eq!(addresses_of(f, &www), set(&["127.0.0.2", "127.0.0.3"]));
    } else {
        // Documented: without compare-and-swap the precondition is ignored and the change applied.
        result.unwrap();
        assert_eq!(addresses_of(f, &www), set(&["127.0.0.2", "127.0.0.4"]));
    }
    if caps.read_back {
        assert_eq!(
            f.writer().read(&www, f.zone()).await.unwrap(),
            f.authoritative(&www)
        );
    }
}

/// A server error is transient (retried with backoff, never an operator error).
pub async fn server_error_is_transient(f: &dyn Fixture) {
    let w = match f.failing(Failure::ServerError) {
        Ok(w) => w,
        Err(why) => return eprintln!("not applicable to this writer: {why}"),
    };
    let www = name_in(f, "www");
    let read = w.read(&www, f.zone()).await;
    let apply = w.apply(&change_in(f, &[], &["127.0.0.2"], &[])).await;
    // A writer that cannot read fails the read; one that reads locally (a file) fails the apply.
    let err = read
        .err()
        .or(apply.err())
        .expect("a failing back end fails");
    assert!(
        matches!(err, WriteError::Transient(_)),
        "expected a transient error, got {err:?}"
    );
}

/// Wrong credentials are an operator error, with a message that says so.
pub async fn bad_credentials_need_an_operator(f: &dyn Fixture) {
    let w = match f.failing(Failure::BadCredentials) {
        Ok(w) => w,
        Err(why) => return eprintln!("not applicable to this writer: {why}"),
    };
    let www = name_in(f, "www");
    f.set(&www, &published(&[("127.0.0.2", 60)]));
    let read = w.read(&www, f.zone()).await;
    let apply = w
        .apply(&change_in(f, &["127.0.0.2"], &["127.0.0.3"], &[]))
        .await;
    let err = read.err().or(apply.err()).expect("bad credentials fail");
    assert!(
        err.needs_operator(),
        "expected an operator error, got {err:?}"
    );
    assert_eq!(addresses_of(f, &www), set(&["127.0.0.2"]));
}

/// For a file writer's `Failure::BadCredentials`: a directory holding a copy of a file, made
/// immutable (`chattr +i`, which denies even root) until dropped.
pub struct Immutable {
    dir: tempfile::TempDir,
    name: std::ffi::OsString,
}

impl Immutable {
    pub fn new(file: &std::path::Path) -> Option<Immutable> {
        let dir = tempfile::tempdir().ok()?;
        let name = file.file_name()?.to_owned();
        std::fs::copy(file, dir.path().join(&name)).ok()?;
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(Immutable { dir, name })
    }

    pub fn file(&self) -> std::path::PathBuf {
        self.dir.path().join(&self.name)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(self.dir.path())
            .output();
    }
}

/// Wraps the writer under test; before its first `apply` it makes an external change through the
/// fixture, between the core's read and its write.
struct Interferer<'a> {
    f: &'a dyn Fixture,
    applies: AtomicUsize,
    conflicts: AtomicUsize,
}

#[async_trait]
impl Writer for Interferer<'_> {
    fn name(&self) -> &str {
        self.f.writer().name()
    }
    fn capabilities(&self) -> Capabilities {
        self.f.writer().capabilities()
    }
    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError> {
        self.f.writer().read(fqdn, zone).await
    }
    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        if self.applies.fetch_add(1, Ordering::SeqCst) == 0 {
            let mut now = self.f.authoritative(&change.fqdn);
            now.records.insert("127.0.0.5".parse().unwrap(), 60);
            self.f.set(&change.fqdn, &now);
        }
        let r = self.f.writer().apply(change).await;
        if matches!(r, Err(WriteError::Conflict(_))) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

/// A concurrent external change between the core's read and its write: with compare-and-swap the
/// write is refused and re-planned; without, the core's re-read after the write sees it. Either way
/// the service converges to the plan and keeps the external record.
pub async fn concurrent_change_converges(f: &dyn Fixture) {
    let www = name_in(f, "www");
    f.set(
        &www,
        &published(&[("127.0.0.2", 30), ("127.0.0.3", 30), ("127.0.0.4", 30)]),
    );
    let w = Interferer {
        f,
        applies: AtomicUsize::new(0),
        conflicts: AtomicUsize::new(0),
    };
    let endpoints: Vec<IpAddr> = set(&["127.0.0.2", "127.0.0.3", "127.0.0.4"])
        .into_iter()
        .collect();
    let svc = super::service_config(&www, f.zone(), endpoints.clone(), 30);
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
    if w.capabilities().compare_and_swap {
        // Planned against {2,3,4}, refused because .5 appeared, re-planned against {2,3,4,5}.
        assert_eq!(w.conflicts.load(Ordering::SeqCst), 1, "{events:?}");
        assert_eq!(w.applies.load(Ordering::SeqCst), 2, "{events:?}");
    }
    assert!(
        events.iter().any(|e| matches!(e, Event::Updated(_))),
        "{events:?}"
    );
    let want = set(&["127.0.0.2", "127.0.0.4", "127.0.0.5"]);
    assert_eq!(addresses_of(f, &www), want);
    assert_eq!(core.published().map(|p| p.addresses()), Some(want));
}

/// The battery's checks, as `#[tokio::test]`s calling `battery::CHECK(&*fixture())`.
#[allow(unused_macros)]
macro_rules! battery_checks {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture = fixture();
                $crate::support::battery::$check(&*fixture).await
            }
        )*
    };
}

/// One module per writer, each running every check of the battery:
/// `writer_battery! { name => expression giving Box<dyn Fixture>; }`.
#[allow(unused_macros)]
macro_rules! writer_battery {
    ($($writer:ident => $fixture:expr;)*) => {
        $(
            mod $writer {
                #[allow(unused_imports)]
                use super::*;
                fn fixture() -> Box<dyn $crate::support::battery::Fixture> {
                    $fixture
                }
                battery_checks!(
                    reads_records_with_ttls,
                    adds_and_removes_under_rrset_equals,
                    replaces_the_whole_set,
                    stale_precondition_is_refused_whole,
                    add_to_a_family_believed_empty_conflicts,
                    rettl_rewrites_the_whole_rrset,
                    name_not_in_use_allocates_once,
                    cname_is_read_and_blocks_addresses,
                    capabilities_are_honoured,
                    server_error_is_transient,
                    bad_credentials_need_an_operator,
                    concurrent_change_converges,
                );
            }
        )*
    };
}
