//! Overrides: their effect on one plan, the set's merge rules, and a service core driven over
//! explicit time (start, end, expiry on time).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::act::memory::MemoryWriter;
use crate::act::{Published, Writer};
use crate::config::AllDownPolicy;
use crate::decide::service::{Action, Event, ServiceCore, ServiceView, Settings};
use crate::observe::health::HealthMachine;

const FQDN: &str = "www.example.test.";
const A: &str = "192.0.2.1";
const B: &str = "192.0.2.2";
const C: &str = "192.0.2.3";
const TTL: u32 = 30;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn policy(min_healthy: usize) -> Policy {
    Policy {
        endpoints: vec![ip(A), ip(B), ip(C)],
        min_healthy,
        all_down: AllDownPolicy::KeepAll,
        remove_unlisted: false,
        ttl: TTL,
        self_register: false,
    }
}

fn published(ips: &[&str]) -> Published {
    Published::with_ttl(ips.iter().map(|s| ip(s)), TTL)
}

fn health(pairs: &[(&str, Health)]) -> BTreeMap<IpAddr, Health> {
    pairs.iter().map(|(s, h)| (ip(s), *h)).collect()
}

fn all_up() -> BTreeMap<IpAddr, Health> {
    health(&[(A, Health::Up), (B, Health::Up), (C, Health::Up)])
}

fn window(id: &str, endpoint: &str, kind: OverrideKind, t0: Instant) -> Window {
    Window {
        id: id.to_owned(),
        endpoint: ip(endpoint),
        kind,
        start: t0,
        end: t0 + Duration::from_secs(3600),
    }
}

/// The plan with `windows` in effect at `t0`.
fn plan_with(
    windows: Vec<Window>,
    t0: Instant,
    min_healthy: usize,
    health: &BTreeMap<IpAddr, Health>,
    published: &Published,
) -> (Plan, Applied) {
    let p = policy(min_healthy);
    let applied = ServiceOverrides::from_windows(windows).apply(
        t0,
        &p,
        health,
        published,
        &Doubts::default(),
    );
    let mut plan = crate::decide::plan(&p, &applied.health, published, &applied.doubts);
    applied.explain(&mut plan);
    (plan, applied)
}

fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
    ips.iter().map(|s| ip(s)).collect()
}

#[test]
fn drain_removes_a_healthy_endpoint_and_says_why() {
    let t0 = Instant::now();
    let w = vec![window("d1", A, OverrideKind::Drain, t0)];
    let (plan, _) = plan_with(w, t0, 1, &all_up(), &published(&[A, B, C]));
    assert_eq!(plan.desired, set(&[B, C]));
    assert_eq!(
        plan.changes,
        vec![(Change::Remove(ip(A)), Reason::Drained { id: "d1".into() })]
    );
    assert_eq!(plan.to_string(), "remove 192.0.2.1 (drained (override d1))");
}

#[test]
fn drain_never_goes_below_min_healthy() {
    let t0 = Instant::now();
    // Two of three drained with min_healthy = 2: only one may go; the published one with the lowest
    // address stays, reported as kept.
    let w = vec![
        window("d1", A, OverrideKind::Drain, t0),
        window("d2", B, OverrideKind::Drain, t0),
    ];
    let (plan, applied) = plan_with(w, t0, 2, &all_up(), &published(&[A, B, C]));
    assert_eq!(plan.desired.len(), 2, "{plan}");
    assert_eq!(plan.desired, set(&[A, C]));
    assert!(applied.effects[&ip(A)].kept_for_min_healthy);
    assert!(!applied.effects[&ip(B)].kept_for_min_healthy);
    assert_eq!(plan.policy_applied, None, "no all-down fallback: {plan}");

    // Everything drained, min_healthy 1: one stays.
    let w = vec![
        window("d1", A, OverrideKind::Drain, t0),
        window("d2", B, OverrideKind::Drain, t0),
        window("d3", C, OverrideKind::Drain, t0),
    ];
    let (plan, _) = plan_with(w, t0, 1, &all_up(), &published(&[A, B, C]));
    assert_eq!(plan.desired, set(&[A]));

    // A drained endpoint that is the only healthy one stays; a down one is not brought back for it.
    let w = vec![window("d1", A, OverrideKind::Drain, t0)];
    let h = health(&[(A, Health::Up), (B, Health::Down), (C, Health::Down)]);
    let (plan, _) = plan_with(w, t0, 1, &h, &published(&[A]));
    assert_eq!(plan.desired, set(&[A]), "{plan}");
    assert!(plan.is_empty());
}

#[test]
fn drain_prefers_keeping_a_published_endpoint() {
    let t0 = Instant::now();
    // A is not published, B is: draining both with min_healthy 1 and C down keeps B, adds nothing.
    let w = vec![
        window("d1", A, OverrideKind::Drain, t0),
        window("d2", B, OverrideKind::Drain, t0),
    ];
    let h = health(&[(A, Health::Up), (B, Health::Up), (C, Health::Down)]);
    let (plan, _) = plan_with(w, t0, 1, &h, &published(&[B, C]));
    assert_eq!(plan.desired, set(&[B]), "{plan}");
}

#[test]
fn maintenance_ignores_failures_and_keeps_the_published_state() {
    let t0 = Instant::now();
    // A fails while in maintenance: it stays published.
    let h = health(&[(A, Health::Down), (B, Health::Up), (C, Health::Up)]);
    let w = vec![window("m1", A, OverrideKind::Maintenance, t0)];
    let (plan, _) = plan_with(w, t0, 1, &h, &published(&[A, B, C]));
    assert!(plan.is_empty(), "{plan}");
    // Without it, A would go: the override is what keeps it.
    let (plan, _) = plan_with(Vec::new(), t0, 1, &h, &published(&[A, B, C]));
    assert_eq!(plan.desired, set(&[B, C]));
    // A healthy endpoint in maintenance that is not published is not added.
    let w = vec![window("m1", A, OverrideKind::Maintenance, t0)];
    let (plan, _) = plan_with(w, t0, 1, &all_up(), &published(&[B, C]));
    assert!(plan.is_empty(), "{plan}");
}

#[test]
fn force_up_and_force_down_override_the_verdict() {
    let t0 = Instant::now();
    let h = health(&[(A, Health::Down), (B, Health::Up), (C, Health::Up)]);
    let w = vec![
        window("u1", A, OverrideKind::ForceUp, t0),
        window("f1", C, OverrideKind::ForceDown, t0),
    ];
    let (plan, _) = plan_with(w, t0, 1, &h, &published(&[B, C]));
    assert_eq!(plan.desired, set(&[A, B]));
    assert!(
        plan.changes
            .contains(&(Change::Add(ip(A)), Reason::ForcedUp { id: "u1".into() }))
    );
    assert!(plan.changes.contains(&(
        Change::Remove(ip(C)),
        Reason::ForcedDown { id: "f1".into() }
    )));
}

#[test]
fn force_down_below_min_healthy_falls_back_to_the_all_down_policy() {
    let t0 = Instant::now();
    // Forcing every endpoint down is the operator's word, but the safety policy still holds
    // (DESIGN.md invariant 1): keep_all publishes them all.
    let w = vec![
        window("f1", A, OverrideKind::ForceDown, t0),
        window("f2", B, OverrideKind::ForceDown, t0),
        window("f3", C, OverrideKind::ForceDown, t0),
    ];
    let (plan, _) = plan_with(w, t0, 1, &all_up(), &published(&[A, B, C]));
    assert_eq!(plan.desired, set(&[A, B, C]));
    assert_eq!(plan.policy_applied, Some(AllDownPolicy::KeepAll));
}

#[test]
fn taking_out_wins_when_overrides_overlap() {
    let t0 = Instant::now();
    let o = ServiceOverrides::from_windows(vec![
        window("a", A, OverrideKind::ForceUp, t0),
        window("b", A, OverrideKind::Drain, t0),
        window("c", A, OverrideKind::Maintenance, t0),
    ]);
    assert_eq!(o.active(t0)[&ip(A)].kind, OverrideKind::Drain);
}

#[test]
fn windows_are_active_from_start_until_end_only() {
    let t0 = Instant::now();
    let w = Window {
        start: t0 + Duration::from_secs(10),
        end: t0 + Duration::from_secs(20),
        ..window("d1", A, OverrideKind::Drain, t0)
    };
    let o = ServiceOverrides::from_windows(vec![w]);
    assert!(o.active(t0).is_empty());
    assert!(o.active(t0 + Duration::from_secs(10)).contains_key(&ip(A)));
    assert!(
        o.active(t0 + Duration::from_millis(19_999))
            .contains_key(&ip(A))
    );
    assert!(o.active(t0 + Duration::from_secs(20)).is_empty());
    assert_eq!(o.next_boundary(t0), Some(t0 + Duration::from_secs(10)));
    assert_eq!(
        o.next_boundary(t0 + Duration::from_secs(10)),
        Some(t0 + Duration::from_secs(20))
    );
    assert_eq!(o.next_boundary(t0 + Duration::from_secs(20)), None);
}

fn ov(id: &str, updated: u64, deleted: bool) -> Override {
    Override {
        id: id.to_owned(),
        endpoint: ip(A),
        service: None,
        kind: OverrideKind::Drain,
        comment: "kernel upgrade".into(),
        starts_unix_ms: 1_000,
        ends_unix_ms: 100_000,
        created_unix_ms: 1_000,
        updated_unix_ms: updated,
        origin: "mon-1".into(),
        deleted,
    }
}

#[test]
fn merge_is_last_writer_wins_and_tombstones_are_not_revived() {
    let mut s = OverrideSet::new();
    assert_eq!(s.merge([ov("x", 1_000, false)], 2_000).len(), 1);
    // The same version again changes nothing.
    assert!(s.merge([ov("x", 1_000, false)], 2_000).is_empty());
    // A deletion (newer) wins; the old live version cannot bring it back.
    let Ok(SetChange::Deleted(t)) = s.delete("x", 5_000) else {
        panic!("delete failed")
    };
    assert!(t.deleted && t.updated_unix_ms == 5_000);
    assert!(s.merge([ov("x", 1_000, false)], 6_000).is_empty());
    assert!(s.get("x").unwrap().deleted);
    // A tombstone received from a peer deletes here; a tie between live and deleted goes to deleted.
    let mut other = OverrideSet::new();
    other.merge([ov("x", 1_000, false)], 2_000);
    assert_eq!(
        other.merge([ov("x", 1_000, true)], 2_000),
        vec![SetChange::Deleted(ov("x", 1_000, true))]
    );
    // Expired entries are pruned and never accepted again.
    assert_eq!(s.prune(100_000), Vec::new(), "a tombstone ends silently");
    assert!(s.is_empty());
    assert!(s.merge([ov("y", 1_000, false)], 100_000).is_empty());
    let mut s = OverrideSet::new();
    s.merge([ov("y", 1_000, false)], 2_000);
    assert_eq!(
        s.prune(100_000),
        vec![SetChange::Expired(ov("y", 1_000, false))]
    );
    // Invalid entries from a peer are ignored.
    let mut bad = ov("z", 1_000, false);
    bad.comment = " ".into();
    assert!(s.merge([bad], 2_000).is_empty());
}

fn services() -> Services {
    [
        (FQDN.to_owned(), vec![ip(A), ip(B)]),
        ("api.example.test.".to_owned(), vec![ip(C)]),
    ]
    .into()
}

fn request(endpoint: &str) -> OverrideRequest {
    OverrideRequest {
        endpoint: endpoint.into(),
        service: None,
        kind: OverrideKind::Drain,
        comment: "disk swap".into(),
        starts_unix_ms: None,
        ends_unix_ms: None,
        duration: Some("1h".into()),
    }
}

#[test]
fn requests_are_checked_field_by_field() {
    let make = |r: OverrideRequest| r.into_override(&services(), 10_000, "mon-1", "id1".into());
    let o = make(request(A)).unwrap();
    assert_eq!((o.starts_unix_ms, o.ends_unix_ms), (10_000, 3_610_000));
    assert_eq!(o.service, None);
    let with_service = OverrideRequest {
        service: Some("WWW.example.test".into()),
        ..request(A)
    };
    assert_eq!(make(with_service).unwrap().service.as_deref(), Some(FQDN));

    let field = |r: OverrideRequest| match make(r) {
        Err(RequestError::Invalid(e)) => ("invalid", e.field),
        Err(RequestError::Unknown(e)) => ("unknown", e.field),
        Ok(o) => panic!("accepted {o:?}"),
    };
    assert_eq!(field(request("10.0.0.300")), ("invalid", "endpoint"));
    assert_eq!(field(request("192.0.2.77")), ("unknown", "endpoint"));
    assert_eq!(
        field(OverrideRequest {
            comment: "  ".into(),
            ..request(A)
        }),
        ("invalid", "comment")
    );
    assert_eq!(
        field(OverrideRequest {
            duration: None,
            ..request(A)
        }),
        ("invalid", "ends_unix_ms")
    );
    assert_eq!(
        field(OverrideRequest {
            duration: Some("soon".into()),
            ..request(A)
        }),
        ("invalid", "for")
    );
    assert_eq!(
        field(OverrideRequest {
            ends_unix_ms: Some(20_000),
            ..request(A)
        }),
        ("invalid", "for")
    );
    assert_eq!(
        field(OverrideRequest {
            duration: None,
            ends_unix_ms: Some(5_000),
            ..request(A)
        }),
        ("invalid", "ends_unix_ms")
    );
    assert_eq!(
        field(OverrideRequest {
            service: Some("nope.example.test".into()),
            ..request(A)
        }),
        ("unknown", "service")
    );
    assert_eq!(
        field(OverrideRequest {
            service: Some("api.example.test.".into()),
            ..request(A)
        }),
        ("unknown", "endpoint")
    );
}

#[test]
fn for_service_maps_wall_time_to_the_monotonic_clock() {
    let mut s = OverrideSet::new();
    let mut o = ov("x", 1_000, false);
    o.starts_unix_ms = 50_000;
    o.ends_unix_ms = 80_000;
    s.merge([o.clone()], 10_000);
    let mut other = o.clone();
    other.id = "other-service".into();
    other.service = Some("api.example.test.".into());
    s.merge([other], 10_000);
    let now = Instant::now();
    let so = s.for_service(FQDN, &[ip(A), ip(B)], now, 10_000);
    assert_eq!(
        so.windows().len(),
        1,
        "the api service's override is not ours"
    );
    assert_eq!(so.windows()[0].start, now + Duration::from_secs(40));
    assert_eq!(so.windows()[0].end, now + Duration::from_secs(70));
}

/// One leading node's core over a `MemoryWriter`, on explicit time.
struct Rig {
    core: ServiceCore,
    dns: MemoryWriter,
    now: Instant,
    health: BTreeMap<IpAddr, Health>,
    events: Vec<Event>,
    writes: usize,
}

impl Rig {
    fn new(min_healthy: usize) -> Rig {
        let mut p = policy(min_healthy);
        p.all_down = AllDownPolicy::KeepAll;
        let settings = Settings {
            fqdn: FQDN.into(),
            zone: "example.test.".into(),
            policy: p.clone(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            fall: 1,
            rise: 1,
            reconcile_interval: Duration::from_secs(3600 * 24),
            dry_run: false,
            capabilities: MemoryWriter::new("m").capabilities(),
            policies: Default::default(),
        };
        let machines = p
            .endpoints
            .iter()
            .map(|ip| (*ip, HealthMachine::new(1, 1)))
            .collect();
        let dns = MemoryWriter::new("m");
        dns.set(FQDN, published(&[A, B, C]));
        let now = Instant::now();
        let mut rig = Rig {
            core: ServiceCore::new(settings, machines, now),
            dns,
            now,
            health: BTreeMap::new(),
            events: Vec::new(),
            writes: 0,
        };
        for e in [A, B, C] {
            let a = rig
                .core
                .on_probe(now, now, ip(e), true, Duration::from_millis(1), "ok");
            rig.execute(a);
        }
        rig.view();
        rig
    }

    fn view(&mut self) {
        let view = ServiceView {
            health: self.health.clone(),
            leader: true,
            live_nodes: 1,
        };
        let a = self.core.on_view(self.now, &view);
        self.execute(a);
        self.settle();
    }

    fn execute(&mut self, actions: Vec<Action>) {
        let mut votes = false;
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Vote { endpoint, health } => {
                    self.health.insert(endpoint, health);
                    votes = true;
                }
                Action::Event(e) => self.events.push(e),
                Action::Read => {
                    let r = Ok(self.dns.read_now(FQDN));
                    queue.extend(self.core.on_read(self.now, r));
                }
                Action::Apply(change) => {
                    self.writes += 1;
                    let r = self.dns.apply_now(&change);
                    queue.extend(self.core.on_applied(self.now, r));
                }
            }
        }
        if votes {
            self.view();
        }
    }

    fn settle(&mut self) {
        loop {
            let a = self.core.poll(self.now);
            if a.is_empty() {
                return;
            }
            self.execute(a);
        }
    }

    /// Sleeps until the core's next wake-up, as the controller does, and polls.
    fn wake(&mut self) -> Instant {
        let wake = self
            .core
            .next_wake()
            .expect("the core has something to wake for");
        self.now = self.now.max(wake);
        self.settle();
        wake
    }

    fn published(&self) -> BTreeSet<IpAddr> {
        self.dns.read_now(FQDN).addresses()
    }
}

#[test]
fn a_scheduled_drain_starts_and_ends_on_time_by_the_cores_own_wake_ups() {
    let mut rig = Rig::new(1);
    assert_eq!(rig.published(), set(&[A, B, C]));
    let t0 = rig.now;
    let start = t0 + Duration::from_secs(10);
    let end = t0 + Duration::from_secs(70);
    let w = Window {
        start,
        end,
        ..window("d1", A, OverrideKind::Drain, t0)
    };
    let a = rig
        .core
        .on_overrides(rig.now, ServiceOverrides::from_windows(vec![w]));
    rig.execute(a);
    rig.settle();
    assert_eq!(rig.published(), set(&[A, B, C]), "not before its start");
    assert_eq!(rig.wake(), start);
    assert_eq!(rig.published(), set(&[B, C]), "drained at its start");
    let Some(Plan { changes, .. }) = rig.core.last_plan().cloned() else {
        panic!("no plan")
    };
    assert_eq!(
        changes,
        vec![(Change::Remove(ip(A)), Reason::Drained { id: "d1".into() })]
    );
    assert!(rig.events.iter().any(|e| matches!(
        e,
        Event::Override {
            active: true,
            kind: OverrideKind::Drain,
            ..
        }
    )));
    // The next wake-up is the end, to the millisecond; A comes back then, not before.
    assert_eq!(rig.core.next_wake(), Some(end));
    rig.now = end - Duration::from_millis(1);
    rig.settle();
    assert_eq!(rig.published(), set(&[B, C]));
    assert_eq!(rig.wake(), end);
    assert_eq!(rig.published(), set(&[A, B, C]), "back at its end");
    assert!(
        rig.events
            .iter()
            .any(|e| matches!(e, Event::Override { active: false, .. }))
    );
    assert_eq!(rig.writes, 2, "one write to drain, one to restore");
    assert!(
        rig.core
            .next_wake()
            .is_none_or(|t| t > end + Duration::from_secs(3600)),
        "nothing left to wake for soon"
    );
}

#[test]
fn removing_the_overrides_restores_at_once() {
    let mut rig = Rig::new(2);
    let t0 = rig.now;
    let a = rig.core.on_overrides(
        t0,
        ServiceOverrides::from_windows(vec![
            window("d1", A, OverrideKind::Drain, t0),
            window("d2", B, OverrideKind::Drain, t0),
        ]),
    );
    rig.execute(a);
    rig.settle();
    assert_eq!(rig.published().len(), 2, "never below min_healthy = 2");
    let a = rig.core.on_overrides(t0, ServiceOverrides::default());
    rig.execute(a);
    rig.settle();
    assert_eq!(rig.published(), set(&[A, B, C]));
}

#[test]
fn kinds_parse_and_print_in_config_spelling() {
    for k in OverrideKind::ALL {
        assert_eq!(k.to_string().parse::<OverrideKind>(), Ok(k));
        assert_eq!(
            serde_json::to_value(k).unwrap(),
            serde_json::Value::String(k.to_string())
        );
    }
    assert!("drained".parse::<OverrideKind>().is_err());
}
