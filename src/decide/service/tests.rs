//! The service core driven step by step against the in-memory writer, one node, no runtime.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::act::Writer;
use crate::act::memory::MemoryWriter;
use crate::config::AllDownPolicy;

const FQDN: &str = "www.example.test.";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One node: its core, the DNS it writes, the clock, and what happened.
struct Rig {
    core: ServiceCore,
    dns: MemoryWriter,
    now: Instant,
    t0: Instant,
    applied: Vec<(Duration, RecordChange)>,
    events: Vec<(Duration, Event)>,
    health: BTreeMap<IpAddr, Health>,
    /// Answer every write with a refused precondition, as if someone changed the set each time.
    refuse_writes: bool,
}

impl Rig {
    fn new(endpoints: &[&str], fall: u32, rise: u32, ttl: u32, published: Published) -> Rig {
        Rig::with_policies(endpoints, fall, rise, ttl, published, Policies::default())
    }

    fn with_policies(
        endpoints: &[&str],
        fall: u32,
        rise: u32,
        ttl: u32,
        published: Published,
        policies: Policies,
    ) -> Rig {
        let endpoints: Vec<IpAddr> = endpoints.iter().map(|s| ip(s)).collect();
        let settings = Settings {
            fqdn: FQDN.into(),
            zone: "example.test.".into(),
            policy: Policy {
                endpoints: endpoints.clone(),
                min_healthy: 1,
                all_down: AllDownPolicy::KeepAll,
                remove_unlisted: false,
                ttl,
                self_register: false,
            },
            policies,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            fall,
            rise,
            reconcile_interval: Duration::from_secs(60),
            dry_run: false,
            capabilities: MemoryWriter::new("m").capabilities(),
        };
        let machines = endpoints
            .iter()
            .map(|ip| (*ip, HealthMachine::new(fall, rise)))
            .collect();
        let dns = MemoryWriter::new("m");
        dns.set(FQDN, published);
        let t0 = Instant::now();
        let mut rig = Rig {
            core: ServiceCore::new(settings, machines, t0),
            dns,
            now: t0,
            t0,
            applied: Vec::new(),
            events: Vec::new(),
            health: BTreeMap::new(),
            refuse_writes: false,
        };
        let start = rig.core.start();
        rig.execute(start);
        rig.view();
        rig
    }

    fn at(&self) -> Duration {
        self.now - self.t0
    }

    /// A single node: the agreed view is this node's own verdicts, and it leads.
    fn view(&mut self) {
        let view = ServiceView {
            health: self.health.clone(),
            leader: true,
            live_nodes: 1,
        };
        let actions = self.core.on_view(self.now, &view);
        self.execute(actions);
        self.settle();
    }

    fn execute(&mut self, actions: Vec<Action>) {
        let mut votes = false;
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Vote { endpoint, health } => {
                    self.health.insert(endpoint, health);
                    votes = true;
                }
                Action::Event(e) => self.events.push((self.at(), e)),
                Action::Read => {
                    let r = Ok(self.dns.read_now(FQDN));
                    queue.extend(self.core.on_read(self.now, r));
                }
                Action::Apply(change) => {
                    let r = if self.refuse_writes {
                        Err(WriteError::Conflict("NXRRSET".into()))
                    } else {
                        self.dns.apply_now(&change)
                    };
                    self.applied.push((self.at(), change));
                    queue.extend(self.core.on_applied(self.now, r));
                }
            }
        }
        if votes {
            self.view();
        }
    }

    /// Polls until nothing is due.
    fn settle(&mut self) {
        loop {
            let actions = self.core.poll(self.now);
            if actions.is_empty() {
                return;
            }
            self.execute(actions);
        }
    }

    fn probe(&mut self, endpoint: &str, ok: bool) {
        self.probe_started(endpoint, ok, self.now);
    }

    /// A probe result handled now of a probe that started at `started`.
    fn probe_started(&mut self, endpoint: &str, ok: bool, started: Instant) {
        let latency = self.now - started;
        let actions = self
            .core
            .on_probe(self.now, started, ip(endpoint), ok, latency, "test");
        self.execute(actions);
        self.settle();
    }

    /// Advances the clock to `t` (from the start), waking the core at each deadline on the way.
    fn until(&mut self, t: Duration) {
        let end = self.t0 + t;
        while let Some(wake) = self.core.next_wake().filter(|w| *w <= end) {
            self.now = self.now.max(wake);
            self.settle();
            if self.core.next_wake() == Some(wake) {
                break;
            }
        }
        self.now = end;
        self.settle();
    }

    fn published(&self) -> std::collections::BTreeSet<IpAddr> {
        self.dns.read_now(FQDN).addresses()
    }
}

fn published(ips: &[&str], ttl: u32) -> Published {
    Published::with_ttl(ips.iter().map(|s| ip(s)), ttl)
}

#[test]
fn a_ttl_change_is_one_write_then_none() {
    let mut rig = Rig::new(
        &["127.0.0.2", "::1"],
        2,
        2,
        120,
        published(&["127.0.0.2", "::1"], 30),
    );
    for _ in 0..3 {
        rig.probe("127.0.0.2", true);
        rig.probe("::1", true);
        let t = rig.at() + Duration::from_secs(1);
        rig.until(t);
    }
    assert_eq!(
        rig.dns.read_now(FQDN),
        published(&["127.0.0.2", "::1"], 120)
    );
    assert_eq!(rig.applied.len(), 1, "{:?}", rig.applied);
    assert_eq!(rig.applied[0].1.rettl.len(), 2);
    // A reconcile later changes nothing.
    rig.until(Duration::from_secs(130));
    assert_eq!(rig.applied.len(), 1);
}

#[test]
fn an_endpoint_that_never_settles_does_not_hold_back_a_dead_one() {
    let (a, b, c) = ("127.0.0.2", "127.0.0.3", "127.0.0.4");
    let mut rig = Rig::new(&[a, b, c], 3, 2, 30, published(&[a, b, c], 30));
    let mut removed_at = None;
    for second in 0..20u32 {
        rig.probe(a, second % 2 == 0);
        rig.probe(b, true);
        rig.probe(c, false);
        if removed_at.is_none() && !rig.published().contains(&ip(c)) {
            removed_at = Some(rig.at());
        }
        let t = rig.at() + Duration::from_secs(1);
        rig.until(t);
    }
    let bound = rig.core.settings().settle_bound();
    let removed_at = removed_at.expect("the dead endpoint must be removed");
    assert!(
        removed_at <= bound + Duration::from_secs(1),
        "{removed_at:?} > {bound:?}"
    );
    assert_eq!(rig.published(), [ip(a), ip(b)].into(), "A keeps its place");
    assert!(
        rig.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Unsettled { endpoint, .. } if *endpoint == ip(a))),
        "{:?}",
        rig.events
    );
    assert!(
        rig.events
            .iter()
            .any(|(_, e)| matches!(e, Event::WaitingForVerdicts { .. })),
        "the wait is said while it lasts"
    );
    assert_eq!(rig.applied.len(), 1);
}

#[test]
fn without_the_settle_rule_the_dead_endpoint_stays() {
    let (a, b, c) = ("127.0.0.2", "127.0.0.3", "127.0.0.4");
    let mut rig = Rig::new(&[a, b, c], 3, 2, 30, published(&[a, b, c], 30));
    rig.core.set_rules(Rules {
        settle_unknown: false,
        ..Rules::default()
    });
    for second in 0..20u32 {
        rig.probe(a, second % 2 == 0);
        rig.probe(b, true);
        rig.probe(c, false);
        let t = rig.at() + Duration::from_secs(1);
        rig.until(t);
    }
    assert!(rig.published().contains(&ip(c)));
}

/// All endpoints die (keep_all keeps them), then all come back together, probed in turn.
fn mass_recovery(rules: Rules) -> Rig {
    let eps = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let mut rig = Rig::new(&eps, 2, 2, 30, published(&eps, 30));
    rig.core.set_rules(rules);
    let step = |rig: &mut Rig, ok: bool| {
        for ep in eps {
            rig.probe(ep, ok);
            let t = rig.at() + Duration::from_millis(333);
            rig.until(t);
        }
    };
    for _ in 0..3 {
        step(&mut rig, true);
    }
    for _ in 0..4 {
        step(&mut rig, false);
    }
    assert_eq!(rig.published().len(), 3, "keep_all");
    assert!(rig.applied.is_empty(), "{:?}", rig.applied);
    for _ in 0..4 {
        step(&mut rig, true);
    }
    rig
}

#[test]
fn recovery_from_all_down_never_shrinks_the_record_set() {
    let rig = mass_recovery(Rules::default());
    assert!(rig.applied.is_empty(), "{:?}", rig.applied);
    assert_eq!(rig.published().len(), 3);
}

#[test]
fn without_the_recovery_hold_the_record_set_shrinks_first() {
    let rig = mass_recovery(Rules {
        hold_recovering: false,
        ..Rules::default()
    });
    assert!(rig.applied.iter().any(|(_, c)| !c.remove.is_empty()));
}

/// One round of probes of `eps`, a third of a second apart.
fn step(rig: &mut Rig, eps: [&str; 3], ok: bool) {
    for ep in eps {
        rig.probe(ep, ok);
        let t = rig.at() + Duration::from_millis(333);
        rig.until(t);
    }
}

/// Three endpoints (`fall = rise = 2`) up, then all down: `keep_all` keeps them published.
fn all_down(eps: [&str; 3]) -> Rig {
    let mut rig = Rig::new(&eps, 2, 2, 30, published(&eps, 30));
    for _ in 0..2 {
        step(&mut rig, eps, true);
    }
    for _ in 0..3 {
        step(&mut rig, eps, false);
    }
    rig
}

/// A probe that started while the endpoints were all down and failed (timed out) after the first
/// came back has not seen its endpoint fail since: the hold stands, nothing is removed.
#[test]
fn a_failure_of_a_probe_started_before_the_recovery_does_not_end_the_hold() {
    let eps = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let mut rig = all_down(eps);
    assert!(rig.applied.is_empty(), "keep_all: {:?}", rig.applied);
    // .2 comes back, then .3: two successes each, up; the service leaves its all-down fallback.
    // Meanwhile a probe of .4 is in flight.
    let probe_of_4 = rig.now;
    for ep in &eps[..2] {
        for _ in 0..2 {
            rig.probe(ep, true);
            let t = rig.at() + Duration::from_millis(100);
            rig.until(t);
        }
    }
    assert!(rig.events.iter().any(|(_, e)| matches!(
        e,
        Event::Holding {
            reason: HoldReason::Recovering,
            ..
        }
    )));
    // .4's probe, started before .2 came back, times out now: it has not seen .4 fail since.
    rig.probe_started(eps[2], false, probe_of_4);
    let t = rig.at() + Duration::from_millis(100);
    rig.until(t);
    assert!(rig.applied.is_empty(), "{:?}", rig.applied);
    // .4 comes back too: the record set never shrank.
    for _ in 0..2 {
        rig.probe(eps[2], true);
        let t = rig.at() + Duration::from_millis(100);
        rig.until(t);
    }
    assert!(rig.applied.is_empty(), "{:?}", rig.applied);
    assert_eq!(rig.published().len(), 3);
    // Failures of probes that start later do count: .4 fails from now on and is removed (down
    // after fall = 2; the others re-checked up).
    for _ in 0..2 {
        rig.probe(eps[2], false);
        for ep in &eps[..2] {
            rig.probe(ep, true);
        }
        let t = rig.at() + Duration::from_millis(500);
        rig.until(t);
    }
    assert_eq!(rig.published().len(), 2, "{:?}", rig.events);
}

/// In a cluster the agreed state can turn up before this node's own probes do: leaving the all-down
/// fallback then starts as a hold for doubt (the endpoint that would remain is still down here), with
/// no removal in the plan. The endpoints recovering together must still be held when that doubt ends.
#[test]
fn recovery_agreed_before_the_local_probes_never_shrinks_the_record_set() {
    let eps = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let mut rig = all_down(eps);
    assert!(rig.applied.is_empty(), "{:?}", rig.applied);
    // The peers' votes make .2 up first; this node still has it down.
    rig.health.insert(ip(eps[0]), Health::Up);
    rig.view();
    for _ in 0..3 {
        step(&mut rig, eps, true);
    }
    assert!(rig.applied.is_empty(), "{:?}", rig.applied);
    assert_eq!(rig.published().len(), 3);
    assert!(rig.events.iter().any(|(_, e)| matches!(
        e,
        Event::Holding {
            reason: HoldReason::Recovering,
            ..
        }
    )));
}

#[test]
fn a_cname_at_the_name_is_an_operator_error_and_nothing_is_written() {
    let mut rig = Rig::new(
        &["127.0.0.2"],
        1,
        1,
        30,
        Published {
            records: BTreeMap::new(),
            cname: Some("lb.example.test.".into()),
            weights: Default::default(),
        },
    );
    rig.probe("127.0.0.2", true);
    rig.until(Duration::from_secs(65));
    assert!(rig.applied.is_empty());
    let failures: Vec<_> = rig
        .events
        .iter()
        .filter_map(|(at, e)| match e {
            Event::Failed { error, retry, .. } => Some((*at, error.clone(), *retry)),
            _ => None,
        })
        .collect();
    assert!(!failures.is_empty());
    assert!(
        failures.len() <= 3,
        "retried at the operator cadence: {failures:?}"
    );
    let (_, error, retry) = &failures[0];
    assert!(error.needs_operator() && error.to_string().contains("CNAME to lb.example.test."));
    assert_eq!(*retry, OPERATOR_RETRY);
}

#[test]
fn an_accepted_write_the_read_back_does_not_show_is_reported_not_spun_on() {
    // The store ignores adds beside a CNAME, as Knot and BIND do; the CNAME appears after the core
    // read the name, so the core plans an add that the store accepts and drops.
    let (a, b) = ("127.0.0.2", "127.0.0.3");
    let mut rig = Rig::new(&[a, b], 1, 1, 30, published(&[a], 30));
    let mut with_cname = published(&[a], 30);
    with_cname.cname = Some("lb.example.test.".into());
    rig.dns.set(FQDN, with_cname);
    rig.probe(a, true);
    rig.probe(b, true);
    rig.until(Duration::from_secs(20));
    assert_eq!(rig.applied.len(), 1, "{:?}", rig.applied);
    assert!(
        rig.events
            .iter()
            .any(|(_, e)| matches!(e, Event::NotApplied { .. }))
    );
    assert!(
        !rig.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Conflict(_)))
    );
}

#[test]
fn conflicts_back_off_after_max_rounds() {
    let (a, b) = ("127.0.0.2", "127.0.0.3");
    let mut rig = Rig::new(&[a, b], 1, 1, 30, published(&[a], 30));
    rig.refuse_writes = true;
    rig.probe(a, true);
    rig.probe(b, true);
    assert_eq!(rig.applied.len(), MAX_CONFLICT_ROUNDS);
    assert!(
        rig.events
            .iter()
            .any(|(_, e)| matches!(e, Event::KeptChanging))
    );
    assert!(rig.core.next_wake().unwrap() >= rig.now + BACKOFF_MIN);
    // After the backoff it tries again, and succeeds once nobody interferes.
    rig.refuse_writes = false;
    rig.until(Duration::from_secs(1));
    assert_eq!(rig.published(), [ip(a), ip(b)].into());
}

/// A view of a three-node cluster in which this node is not the leader; `isolated` as given.
fn cluster_view(isolated: bool) -> View {
    use crate::agree::{Isolation, Tally};
    let tally = |state| Tally {
        state,
        up: Vec::new(),
        down: Vec::new(),
        needed: 2,
    };
    View {
        isolated: isolated.then_some(Isolation::NoMajority {
            heard: 1,
            needed: 2,
        }),
        live: ["a", "b"].iter().map(|s| s.to_string()).collect(),
        voters: ["b".to_owned()].into(),
        leader: Some("a".to_owned()),
        term: 1,
        am_leader: false,
        endpoints: [
            ((FQDN.to_owned(), ip("192.0.2.1")), tally(Health::Up)),
            ((FQDN.to_owned(), ip("192.0.2.2")), tally(Health::Down)),
        ]
        .into_iter()
        .collect(),
    }
}

#[test]
fn shared_writers_follow_the_cluster_and_write_only_on_the_leader() {
    let local: BTreeMap<IpAddr, Health> = [(ip("192.0.2.1"), Health::Down)].into_iter().collect();
    let v = ServiceView::for_writer(&cluster_view(false), FQDN, false, &local);
    assert!(!v.leader);
    assert_eq!(v.health[&ip("192.0.2.1")], Health::Up);
    assert_eq!(v, ServiceView::of(&cluster_view(false), FQDN));
    let v = ServiceView::for_writer(&cluster_view(true), FQDN, false, &local);
    assert!(!v.leader, "an isolated node never writes a shared writer");
}

#[test]
fn per_node_writers_follow_the_majority_then_their_own_probes_when_isolated() {
    let local: BTreeMap<IpAddr, Health> = [
        (ip("192.0.2.1"), Health::Down),
        (ip("192.0.2.2"), Health::Up),
    ]
    .into_iter()
    .collect();
    // Part of the majority: the agreed states, written on this non-leader node too.
    let v = ServiceView::for_writer(&cluster_view(false), FQDN, true, &local);
    assert!(v.leader);
    assert_eq!(v.health[&ip("192.0.2.1")], Health::Up);
    assert_eq!(v.health[&ip("192.0.2.2")], Health::Down);
    assert_eq!(v.live_nodes, 2);
    // Isolated: its own verdicts, as a single node.
    let v = ServiceView::for_writer(&cluster_view(true), FQDN, true, &local);
    assert!(v.leader);
    assert_eq!(v.health, local);
    assert_eq!(v.live_nodes, 1);
}

/// Fast confirmation's pace: three endpoints up (fall = 2, rise = 2), then A starts failing; the rest
/// of the scenario is the caller's. Returns the rig at the moment of A's first failure.
fn first_failure_of_a(rules: Rules) -> Rig {
    let eps = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let mut rig = Rig::new(&eps, 2, 2, 30, published(&eps, 30));
    rig.core.set_rules(rules);
    for _ in 0..2 {
        for ep in eps {
            rig.probe(ep, true);
            let t = rig.at() + Duration::from_millis(333);
            rig.until(t);
        }
    }
    assert!(eps.iter().all(|e| rig.health[&ip(e)] == Health::Up));
    rig.probe(eps[0], false);
    rig
}

fn ms_later(rig: &mut Rig, ms: u64) {
    let t = rig.at() + Duration::from_millis(ms);
    rig.until(t);
}

/// Every endpoint fails at once. A is confirmed down 20 ms after its first failure, before the
/// others' next probes: the removal waits for them, they fail too, and the all-down policy keeps
/// the whole set. Nothing is written.
fn all_at_once(rules: Rules) -> Rig {
    let (a, b, c) = ("127.0.0.2", "127.0.0.3", "127.0.0.4");
    let mut rig = first_failure_of_a(rules);
    ms_later(&mut rig, 20);
    rig.probe(a, false);
    assert_eq!(rig.health[&ip(a)], Health::Down);
    // The re-checks of B and C, kicked by A's first failure, land 5 ms later; their own
    // confirmations 20 ms after that.
    ms_later(&mut rig, 5);
    rig.probe(b, false);
    rig.probe(c, false);
    ms_later(&mut rig, 20);
    rig.probe(b, false);
    rig.probe(c, false);
    ms_later(&mut rig, 3000);
    rig
}

#[test]
fn an_all_at_once_failure_never_shrinks_before_the_siblings_are_rechecked() {
    let rig = all_at_once(Rules::default());
    assert!(rig.applied.is_empty(), "{:?}", rig.applied);
    assert_eq!(rig.published().len(), 3);
    assert!(rig.events.iter().any(|(_, e)| matches!(
        e,
        Event::Holding {
            reason: HoldReason::Rechecking,
            ..
        }
    )));
}

#[test]
fn without_the_sibling_recheck_an_all_at_once_failure_removes_then_restores() {
    let rig = all_at_once(Rules {
        recheck_siblings: false,
        ..Rules::default()
    });
    assert!(rig.applied.len() >= 2, "{:?}", rig.applied);
    assert!(!rig.applied[0].1.remove.is_empty(), "{:?}", rig.applied);
    assert_eq!(rig.published().len(), 3, "keep_all puts them back");
}

#[test]
fn a_lone_failure_is_removed_at_its_confirmation_once_the_siblings_answer() {
    let (a, b, c) = ("127.0.0.2", "127.0.0.3", "127.0.0.4");
    let mut rig = first_failure_of_a(Rules::default());
    let failed_at = rig.at();
    ms_later(&mut rig, 5);
    rig.probe(b, true);
    rig.probe(c, true);
    ms_later(&mut rig, 15);
    rig.probe(a, false);
    assert_eq!(rig.applied.len(), 1, "{:?}", rig.applied);
    let (at, change) = &rig.applied[0];
    assert_eq!(change.remove, [ip(a)].into());
    assert_eq!(*at - failed_at, Duration::from_millis(20), "not delayed");
    assert_eq!(rig.published(), [ip(b), ip(c)].into());
}

#[test]
fn a_sibling_never_rechecked_holds_the_removal_for_the_recheck_bound_only() {
    let (a, b, c) = ("127.0.0.2", "127.0.0.3", "127.0.0.4");
    let mut rig = first_failure_of_a(Rules::default());
    let failed_at = rig.at();
    // B answers; C's probe loop is stuck and C is never probed again.
    ms_later(&mut rig, 5);
    rig.probe(b, true);
    ms_later(&mut rig, 15);
    rig.probe(a, false);
    assert_eq!(rig.health[&ip(a)], Health::Down);
    // min_healthy = 1: B, re-checked and up, is enough.
    assert_eq!(rig.applied.len(), 1, "{:?}", rig.applied);
    assert_eq!(rig.applied[0].0 - failed_at, Duration::from_millis(20));

    // Same, but neither sibling answers: the removal waits the recheck bound, then goes.
    let mut rig = first_failure_of_a(Rules::default());
    let failed_at = rig.at();
    ms_later(&mut rig, 20);
    rig.probe(a, false);
    assert!(rig.applied.is_empty(), "{:?}", rig.applied);
    let bound = rig.core.settings().recheck_bound();
    let t = rig.at() + bound;
    rig.until(t);
    assert_eq!(rig.applied.len(), 1, "{:?}", rig.applied);
    assert_eq!(rig.applied[0].0 - failed_at, bound, "removed at the bound");
    assert_eq!(rig.published(), [ip(b), ip(c)].into());
}

/// Flap damping as the acceptance of issue 11 states it: interval 1 s, fall 3, rise 2, the endpoint
/// fails three probes and passes two, forever.
mod damping {
    use super::*;
    use crate::decide::damping::{DampingConfig, DampingEvent};

    const A: &str = "127.0.0.2";
    const B: &str = "127.0.0.3";

    fn damped() -> Policies {
        Policies {
            damping: Some(DampingConfig {
                penalty: 1000.0,
                suppress: 1500.0,
                reuse: 750.0,
                half_life: Duration::from_secs(60),
                max_suppress: Duration::from_secs(600),
            }),
            ..Policies::default()
        }
    }

    /// Runs A through fail-3/pass-2 for `flap` seconds, B always up, then A up for `calm` seconds;
    /// returns the rig and the writes during the flapping.
    fn flap_then_calm(policies: Policies, b_up: bool, flap: u32, calm: u32) -> (Rig, usize) {
        let mut rig = Rig::with_policies(&[A, B], 3, 2, 30, published(&[A, B], 30), policies);
        for _ in 0..10 {
            rig.probe(A, true);
            rig.probe(B, b_up);
            let t = rig.at() + Duration::from_secs(1);
            rig.until(t);
        }
        let before = rig.applied.len();
        for second in 0..flap {
            rig.probe(A, second % 5 >= 3);
            rig.probe(B, b_up);
            let t = rig.at() + Duration::from_secs(1);
            rig.until(t);
        }
        let during = rig.applied.len() - before;
        for _ in 0..calm {
            rig.probe(A, true);
            rig.probe(B, b_up);
            let t = rig.at() + Duration::from_secs(1);
            rig.until(t);
        }
        (rig, during)
    }

    #[test]
    fn fail_three_pass_two_costs_at_most_two_writes_in_five_minutes_then_is_reused() {
        let (rig, during) = flap_then_calm(damped(), true, 300, 700);
        assert!(
            during <= 2,
            "{during} writes while flapping: {:?}",
            rig.applied
        );
        assert!(!rig.published().is_empty());
        assert_eq!(rig.published(), [ip(A), ip(B)].into(), "reused once calm");
        let suppressed = rig
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Damping(DampingEvent::Suppressed { .. })))
            .count();
        assert_eq!(suppressed, 1, "{:?}", rig.events);
        let reused_at = rig
            .events
            .iter()
            .find(|(_, e)| matches!(e, Event::Damping(DampingEvent::Reused { .. })))
            .map(|(at, _)| *at)
            .expect("a reuse event");
        // Within max_suppress of the last change (at most rise probes into the calm).
        assert!(
            reused_at <= Duration::from_secs(10 + 300 + 2 + 600 + 1),
            "{reused_at:?}"
        );
        assert_eq!(
            rig.applied.last().map(|(_, c)| c.add.clone()),
            Some([ip(A)].into()),
            "the last write puts A back"
        );
    }

    #[test]
    fn without_damping_the_same_pattern_writes_every_cycle() {
        let (rig, during) = flap_then_calm(Policies::default(), true, 300, 0);
        assert!(during >= 100, "{during} writes: {:?}", rig.applied.len());
    }

    #[test]
    fn a_suppressed_endpoint_still_counts_for_min_healthy() {
        // B is down: A is the only endpoint up, suppressed or not, so it stays.
        let (rig, _) = flap_then_calm(damped(), false, 60, 10);
        let plan = rig.core.last_plan().expect("planned");
        assert!(rig.published().contains(&ip(A)));
        assert!(!rig.published().contains(&ip(B)));
        assert_eq!(plan.kept_for_min_healthy, [ip(A)].into(), "{plan:?}");
        assert!(
            rig.core.damping(rig.now)[&ip(A)].suppressed,
            "{:?}",
            rig.core.damping(rig.now)
        );
    }
}

/// `[service.select]` driven through the core: latencies from `on_probe`, failback from `poll`.
mod select {
    use super::*;
    use crate::decide::select::{Mode, SelectConfig, SelectEvent};

    const A: &str = "127.0.0.2";
    const B: &str = "127.0.0.3";
    const C: &str = "127.0.0.4";

    fn with(mode: Mode) -> Policies {
        Policies {
            select: Some(SelectConfig {
                mode,
                ..SelectConfig::default()
            }),
            ..Policies::default()
        }
    }

    impl Rig {
        /// One probe round, each endpoint passing with its latency (ms), then one second on.
        fn round(&mut self, latencies: &[(&str, u64)]) {
            for (e, ms) in latencies {
                let actions = self.core.on_probe(
                    self.now,
                    self.now,
                    ip(e),
                    true,
                    Duration::from_millis(*ms),
                    "test",
                );
                self.execute(actions);
                self.settle();
            }
            let t = self.at() + Duration::from_secs(1);
            self.until(t);
        }
    }

    #[test]
    fn fastest_one_stays_through_shuffles_and_swaps_when_it_slows() {
        let mode = Mode::Fastest {
            count: 1,
            good_enough: Duration::from_millis(200),
        };
        let mut rig =
            Rig::with_policies(&[A, B, C], 2, 2, 30, published(&[A, B, C], 30), with(mode));
        for _ in 0..3 {
            rig.round(&[(A, 10), (B, 20), (C, 300)]);
        }
        assert_eq!(rig.published(), [ip(A)].into(), "{:?}", rig.applied);
        let writes = rig.applied.len();
        // B becomes much faster than A, A stays under good_enough: no write.
        for i in 0..20 {
            rig.round(&[(A, 150 - i), (B, 1 + i), (C, 5)]);
        }
        assert_eq!(rig.applied.len(), writes, "{:?}", rig.applied);
        // A slows past good_enough: one write, to the best of the others by their window means.
        rig.round(&[(A, 250), (B, 30), (C, 5)]);
        assert_eq!(rig.published(), [ip(C)].into());
        assert_eq!(rig.applied.len(), writes + 1);
        let plan = rig.core.last_plan().expect("planned");
        assert_eq!(plan.standing[&ip(A)].reason.kind(), "not_fastest");
    }

    #[test]
    fn priority_fails_back_when_the_hold_down_ends() {
        let mode = Mode::Priority {
            tiers: vec![vec![ip(A)], vec![ip(B)]],
            min_active: 1,
            failback_after: Duration::from_secs(30),
        };
        let mut rig = Rig::with_policies(&[A, B], 2, 2, 30, published(&[A], 30), with(mode));
        for _ in 0..3 {
            rig.probe(A, true);
            rig.probe(B, true);
            let t = rig.at() + Duration::from_secs(1);
            rig.until(t);
        }
        assert_eq!(rig.published(), [ip(A)].into());
        assert_eq!(rig.applied.len(), 0, "B is a standby: {:?}", rig.applied);
        for _ in 0..3 {
            rig.probe(A, false);
            rig.probe(B, true);
            let t = rig.at() + Duration::from_secs(1);
            rig.until(t);
        }
        assert_eq!(rig.published(), [ip(B)].into());
        for _ in 0..3 {
            rig.probe(A, true);
            rig.probe(B, true);
            let t = rig.at() + Duration::from_secs(1);
            rig.until(t);
        }
        let back = rig
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Transition { endpoint, to: Health::Up, .. } if *endpoint == ip(A)))
            .map(|(at, _)| *at)
            .next_back()
            .expect("A came back");
        assert_eq!(rig.published(), [ip(A), ip(B)].into());
        // No probes from here on: the failback comes from the core's own wake-up.
        rig.until(back + Duration::from_secs(29));
        assert_eq!(rig.published(), [ip(A), ip(B)].into());
        rig.until(back + Duration::from_secs(31));
        assert_eq!(rig.published(), [ip(A)].into());
        assert!(
            rig.events.iter().any(|(at, e)| matches!(
                e,
                Event::Select(SelectEvent::FailedBack { from: 2, to: 1, .. })
            ) && *at >= back + Duration::from_secs(30)),
            "{:?}",
            rig.events
        );
    }
}

#[test]
fn a_reconcile_that_finds_drift_repairs_it_and_says_so_once() {
    let (a, b, c) = ("127.0.0.2", "127.0.0.3", "127.0.0.4");
    let mut rig = Rig::new(&[a, b, c], 2, 2, 30, published(&[a, b, c], 30));
    let drift = |rig: &Rig| {
        rig.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::DriftRepaired))
            .count()
    };
    for _ in 0..3 {
        for e in [a, b, c] {
            rig.probe(e, true);
        }
        let t = rig.at() + Duration::from_secs(1);
        rig.until(t);
    }
    // An ordinary write (c goes down) is no drift repair.
    for _ in 0..3 {
        rig.probe(a, true);
        rig.probe(b, true);
        rig.probe(c, false);
        let t = rig.at() + Duration::from_secs(1);
        rig.until(t);
    }
    assert_eq!(rig.published(), [ip(a), ip(b)].into());
    assert_eq!(drift(&rig), 0);
    // A reconcile that finds the records as written changes nothing.
    rig.until(Duration::from_secs(70));
    assert_eq!(drift(&rig), 0);
    let writes = rig.applied.len();
    // Someone puts the down endpoint back by hand: the next reconcile removes it and says why.
    rig.dns.set(FQDN, published(&[a, b, c], 30));
    rig.until(Duration::from_secs(135));
    assert_eq!(rig.published(), [ip(a), ip(b)].into());
    assert_eq!(rig.applied.len(), writes + 1, "{:?}", rig.applied);
    assert_eq!(drift(&rig), 1, "{:?}", rig.events);
    // A healthy endpoint removed by hand comes back at the next reconcile.
    rig.dns.set(FQDN, published(&[a], 30));
    rig.until(Duration::from_secs(200));
    assert_eq!(rig.published(), [ip(a), ip(b)].into());
    assert_eq!(drift(&rig), 2, "{:?}", rig.events);
}

/// `readd_delay` and the change limits, driven through the service core.
mod safety {
    use super::*;
    use crate::decide::safety::ChangeRate;

    const A: &str = "127.0.0.2";
    const B: &str = "127.0.0.3";
    const C: &str = "127.0.0.4";

    fn readd(delay: u64) -> Policies {
        Policies {
            readd_delay: Duration::from_secs(delay),
            ..Policies::default()
        }
    }

    /// One probe of each endpoint per second for `secs` seconds, each passing as `up` says.
    fn run(rig: &mut Rig, secs: u32, up: &[(&str, bool)]) {
        for _ in 0..secs {
            for (e, ok) in up {
                rig.probe(e, *ok);
            }
            let t = rig.at() + Duration::from_secs(1);
            rig.until(t);
        }
    }

    #[test]
    fn a_recovered_endpoint_returns_after_readd_delay_not_before() {
        let mut rig = Rig::with_policies(&[A, B], 2, 2, 30, published(&[A, B], 30), readd(30));
        run(&mut rig, 3, &[(A, true), (B, true)]);
        assert!(
            rig.applied.is_empty(),
            "a first verdict of up is no recovery"
        );
        run(&mut rig, 3, &[(A, false), (B, true)]);
        assert_eq!(rig.published(), [ip(B)].into());
        // A recovers: agreed up after rise = 2 probes, then held out for 30 s.
        rig.probe(A, true);
        let t = rig.at() + Duration::from_secs(1);
        rig.until(t);
        rig.probe(A, true);
        assert_eq!(rig.health[&ip(A)], Health::Up);
        let up_at = rig.at();
        let preview = rig.core.preview(rig.now).unwrap();
        assert_eq!(preview.standing[&ip(A)].reason.kind(), "readd_delay");
        assert!(!preview.standing[&ip(A)].published);
        assert_eq!(
            rig.core.readd_held(rig.now).get(&ip(A)),
            Some(&(rig.now + Duration::from_secs(30)))
        );
        let writes = rig.applied.len();
        // next_wake wakes the core when the hold-down ends, with no probe in between.
        rig.until(up_at + Duration::from_secs(29));
        assert_eq!(rig.applied.len(), writes, "{:?}", rig.applied);
        rig.until(up_at + Duration::from_secs(30));
        assert_eq!(rig.applied.len(), writes + 1);
        assert_eq!(
            rig.applied.last().unwrap().0,
            up_at + Duration::from_secs(30)
        );
        assert_eq!(rig.published(), [ip(A), ip(B)].into());
    }

    #[test]
    fn readd_delay_never_takes_the_service_below_min_healthy() {
        // Both fail, keep_all keeps both; A recovers: it is published (never removed), so it stays,
        // and B, down, goes: A is not held out for a recovery it never needed.
        let mut rig = Rig::with_policies(&[A, B], 2, 2, 30, published(&[A, B], 30), readd(30));
        run(&mut rig, 3, &[(A, true), (B, true)]);
        run(&mut rig, 3, &[(A, false), (B, false)]);
        assert_eq!(rig.published(), [ip(A), ip(B)].into(), "keep_all");
        run(&mut rig, 3, &[(A, true), (B, false)]);
        assert_eq!(rig.published(), [ip(A)].into());

        // Removed, then the only endpoint up again: held out, yet published for min_healthy.
        let mut rig =
            Rig::with_policies(&[A, B, C], 2, 2, 30, published(&[A, B, C], 30), readd(30));
        run(&mut rig, 3, &[(A, true), (B, true), (C, false)]);
        run(&mut rig, 3, &[(A, false), (B, true), (C, false)]);
        assert_eq!(rig.published(), [ip(B)].into());
        run(&mut rig, 3, &[(A, true), (B, false), (C, false)]);
        assert_eq!(rig.published(), [ip(A)].into(), "{:?}", rig.applied);
        let plan = rig.core.last_plan().unwrap();
        assert_eq!(plan.kept_for_min_healthy, [ip(A)].into(), "{plan:?}");
        assert_eq!(plan.standing[&ip(A)].reason.kind(), "kept_for_min_healthy");
    }

    #[test]
    fn max_changes_queues_removals_and_applies_them_when_the_window_frees() {
        let policies = Policies {
            change_rate: Some(ChangeRate {
                max_changes: 1,
                window: Duration::from_secs(60),
            }),
            ..Policies::default()
        };
        let mut rig = Rig::with_policies(&[A, B, C], 2, 2, 30, published(&[A, B, C], 30), policies);
        run(&mut rig, 3, &[(A, true), (B, true), (C, true)]);
        run(&mut rig, 3, &[(A, false), (B, false), (C, true)]);
        assert_eq!(rig.applied.len(), 1, "{:?}", rig.applied);
        let first = rig.applied[0].0;
        let plan = rig.core.last_plan().unwrap().clone();
        assert_eq!(plan.queued.len(), 1, "{plan}");
        assert!(
            rig.events
                .iter()
                .any(|(_, e)| matches!(e, Event::Queued { queued, .. } if queued.len() == 1)),
            "{:?}",
            rig.events
        );
        // The next removal goes when the first leaves the window, by the core's own wake-up.
        let t = first + Duration::from_secs(60);
        rig.until(t);
        assert_eq!(rig.applied.len(), 2, "{:?}", rig.applied);
        assert_eq!(rig.applied[1].0, t);
        assert_eq!(rig.published(), [ip(C)].into());
        assert!(rig.core.last_plan().unwrap().queued.is_empty());
    }
}

/// What a lane shows of a core: the published set, the last plan and the hold.
fn shown(core: &ServiceCore) -> (Option<Published>, Option<Plan>, Option<String>) {
    (
        core.published().cloned(),
        core.last_plan().cloned(),
        core.hold().map(|(r, h)| format!("{r:?} {h:?}")),
    )
}

#[test]
fn the_revision_stays_while_probes_change_nothing_and_moves_with_every_change() {
    let mut rig = Rig::new(
        &["127.0.0.2", "127.0.0.3", "127.0.0.4"],
        2,
        2,
        30,
        published(&["127.0.0.2", "127.0.0.3", "127.0.0.4"], 30),
    );
    let mut last = (rig.core.revision(), shown(&rig.core));
    let mut moves = 0;
    // After each step: the same revision shows the same values; counts the moves.
    let mut check = |core: &ServiceCore, round: u64| {
        let now = (core.revision(), shown(core));
        if now.0 == last.0 {
            assert_eq!(now.1, last.1, "round {round}: same revision, other values");
        } else {
            moves += 1;
        }
        last = now;
    };
    // Steady probes, then 127.0.0.3 fails (removed) and recovers (added back), a second at a time.
    for round in 0..40u64 {
        let failing = (10..20).contains(&round);
        for ep in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
            rig.probe(ep, !(failing && ep == "127.0.0.3"));
            check(&rig.core, round);
        }
        let t = rig.at() + Duration::from_secs(1);
        rig.until(t);
        check(&rig.core, round);
    }
    assert!(rig.applied.len() >= 2, "{:?}", rig.applied);
    // It moved for the writes, and not on every probe (120 probes, 40 ticks).
    assert!((2..40).contains(&moves), "{moves} moves");
    // Steady state: probes that change nothing leave it alone.
    let before = rig.core.revision();
    for _ in 0..5 {
        rig.probe("127.0.0.2", true);
    }
    assert_eq!(rig.core.revision(), before);
}

/// The bounds count whole probe cycles: with a `timeout` longer than `interval` each probe of a
/// hanging endpoint takes the intervals that cover its timeout, and `fall` of them must fit.
#[test]
fn bounds_count_probe_cycles_and_never_overflow() {
    let rig = Rig::new(&["127.0.0.2"], 3, 2, 30, published(&["127.0.0.2"], 30));
    let mut s = rig.core.settings().clone();
    let ms = Duration::from_millis;
    // Defaults: 1 s interval, 500 ms timeout.
    assert_eq!(s.probe_cycle(), ms(1000));
    assert_eq!(s.settle_bound(), ms(4500));
    assert_eq!(s.hold_bound(), ms(3500));
    assert_eq!(s.recheck_bound(), ms(1500));
    // 200 ms interval, 1 s timeout: three timeouts in a row take 3 s, more than the 1.8 s that
    // counting intervals gave.
    s.interval = ms(200);
    s.timeout = ms(1000);
    assert_eq!(s.probe_cycle(), ms(1000));
    assert_eq!(s.settle_bound(), ms(5000));
    assert_eq!(s.hold_bound(), ms(4000));
    assert_eq!(s.recheck_bound(), ms(2000));
    // Not a multiple: 300 ms interval, 1 s timeout: 4 intervals.
    s.interval = ms(300);
    assert_eq!(s.probe_cycle(), ms(1200));
    // Absurd values saturate instead of overflowing (or wrapping to 0).
    s.fall = u32::MAX;
    s.rise = u32::MAX;
    assert!(s.settle_bound() >= s.hold_bound());
    assert!(s.settle_bound() > ms(1000));
    s.interval = Duration::MAX;
    assert_eq!(s.settle_bound(), Duration::MAX);
}
