use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::observe::health::HealthMachine;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
    ips.iter().map(|s| ip(s)).collect()
}

fn none() -> BTreeSet<IpAddr> {
    BTreeSet::new()
}

const TTL: u32 = 30;

fn policy(eps: &[&str], min_healthy: usize, all_down: AllDownPolicy) -> Policy {
    Policy {
        endpoints: eps.iter().map(|s| ip(s)).collect(),
        min_healthy,
        all_down,
        remove_unlisted: false,
        ttl: TTL,
        self_register: false,
    }
}

/// The planner with every published record at the service TTL and only an in-doubt set as doubts.
fn plan(
    policy: &Policy,
    health: &BTreeMap<IpAddr, Health>,
    published: &BTreeSet<IpAddr>,
    in_doubt: &BTreeSet<IpAddr>,
) -> Plan {
    super::plan(
        policy,
        health,
        &Published::with_ttl(published.iter().copied(), policy.ttl),
        &Doubts {
            in_doubt: in_doubt.clone(),
            ..Doubts::default()
        },
    )
}

fn health(pairs: &[(&str, Health)]) -> BTreeMap<IpAddr, Health> {
    pairs.iter().map(|(s, h)| (ip(s), *h)).collect()
}

const A: &str = "192.0.2.1";
const B: &str = "192.0.2.2";
const C: &str = "2001:db8::3";
const X: &str = "192.0.2.99";

#[test]
fn down_endpoint_is_removed_and_up_one_added() {
    let p = policy(&[A, B, C], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Up), (B, Health::Down), (C, Health::Up)]);
    let plan = plan(&p, &h, &set(&[A, B]), &none());
    assert_eq!(plan.desired, set(&[A, C]));
    assert_eq!(plan.additions(), set(&[C]));
    assert_eq!(plan.removals(), set(&[B]));
    assert_eq!(plan.policy_applied, None);
    assert_eq!(
        plan.to_string(),
        "add 2001:db8::3 (up), remove 192.0.2.2 (down)"
    );
}

#[test]
fn all_healthy_and_published_is_no_change() {
    let p = policy(&[A, B], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Up), (B, Health::Up)]);
    assert!(plan(&p, &h, &set(&[A, B]), &none()).is_empty());
}

#[test]
fn unknown_endpoints_never_cause_removal() {
    // Just after a restart: nothing known yet, nothing changes.
    let p = policy(&[A, B, C], 1, AllDownPolicy::KeepAll);
    assert!(plan(&p, &BTreeMap::new(), &set(&[A, B]), &none()).is_empty());
    // One verdict in (down) while others are unknown: still no removal.
    let h = health(&[(A, Health::Down)]);
    assert!(plan(&p, &h, &set(&[A, B]), &none()).is_empty());
    // An up endpoint is added even while others are unknown.
    let h = health(&[(C, Health::Up)]);
    assert_eq!(plan(&p, &h, &set(&[A, B]), &none()).additions(), set(&[C]));
}

#[test]
fn keep_all_publishes_every_endpoint_when_all_down() {
    let p = policy(&[A, B], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Down), (B, Health::Down)]);
    let plan = plan(&p, &h, &set(&[A]), &none());
    assert_eq!(plan.desired, set(&[A, B]));
    assert_eq!(plan.policy_applied, Some(AllDownPolicy::KeepAll));
}

#[test]
fn keep_last_keeps_published_set() {
    let p = policy(&[A, B, C], 2, AllDownPolicy::KeepLast);
    let h = health(&[(A, Health::Down), (B, Health::Down), (C, Health::Up)]);
    let plan = plan(&p, &h, &set(&[A, B]), &none());
    assert_eq!(plan.desired, set(&[A, B, C]));
    assert_eq!(plan.removals(), set(&[]));
}

#[test]
fn keep_last_falls_back_to_keep_all_below_min_healthy() {
    let p = policy(&[A, B, C], 2, AllDownPolicy::KeepLast);
    let h = health(&[(A, Health::Down), (B, Health::Down), (C, Health::Down)]);
    assert_eq!(plan(&p, &h, &set(&[A]), &none()).desired, set(&[A, B, C]));
}

#[test]
fn fail_closed_may_empty_the_set() {
    let p = policy(&[A, B], 1, AllDownPolicy::FailClosed);
    let h = health(&[(A, Health::Down), (B, Health::Down)]);
    let plan = plan(&p, &h, &set(&[A, B]), &none());
    assert!(plan.desired.is_empty());
    assert_eq!(plan.removals(), set(&[A, B]));
}

#[test]
fn unlisted_records_are_left_alone_by_default() {
    let p = policy(&[A, B], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Up), (B, Health::Down)]);
    let plan = plan(&p, &h, &set(&[A, B, X]), &none());
    assert_eq!(plan.desired, set(&[A, X]));
    assert_eq!(plan.removals(), set(&[B]));
}

#[test]
fn unlisted_records_go_with_remove_unlisted() {
    let mut p = policy(&[A, B], 1, AllDownPolicy::KeepAll);
    p.remove_unlisted = true;
    let h = health(&[(A, Health::Up), (B, Health::Up)]);
    let plan = plan(&p, &h, &set(&[A, B, X]), &none());
    assert_eq!(plan.removals(), set(&[X]));
}

#[test]
fn unlisted_records_do_not_count_towards_min_healthy() {
    let p = policy(&[A, B], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Down), (B, Health::Down)]);
    // X is published but not ours: keep_all must still publish A and B.
    assert_eq!(plan(&p, &h, &set(&[X]), &none()).desired, set(&[A, B, X]));
}

#[test]
fn restored_record_deleted_by_someone_else() {
    let p = policy(&[A, B], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Up), (B, Health::Up)]);
    assert_eq!(plan(&p, &h, &set(&[A]), &none()).additions(), set(&[B]));
}

fn endpoints_strategy() -> impl Strategy<Value = Vec<IpAddr>> {
    (1usize..6).prop_map(|n| {
        (1..=n as u8)
            .map(|i| IpAddr::from([192, 0, 2, i]))
            .collect()
    })
}

proptest! {
    /// Invariant 1: in keep_all mode, for any sequence of probe results the published set never has fewer
    /// than min_healthy of the configured endpoints, whatever was published at the start.
    #[test]
    fn keep_all_never_publishes_fewer_than_min_healthy(
        endpoints in endpoints_strategy(),
        min_frac in 0usize..=100,
        fall in 1u32..4,
        rise in 1u32..4,
        initial_mask in any::<u8>(),
        results in prop::collection::vec((any::<u8>(), any::<bool>()), 0..200),
    ) {
        let min_healthy = (endpoints.len() * min_frac).div_ceil(100).max(1);
        let p = Policy { endpoints: endpoints.clone(), min_healthy, all_down: AllDownPolicy::KeepAll, remove_unlisted: false, ttl: TTL, self_register: false };
        let mut machines: BTreeMap<IpAddr, HealthMachine> =
            endpoints.iter().map(|ip| (*ip, HealthMachine::new(fall, rise))).collect();
        let mut published: BTreeSet<IpAddr> = endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| initial_mask & (1 << i) != 0)
            .map(|(_, ip)| *ip)
            .collect();
        // The first decision may repair an under-populated set; from then on the bound must hold.
        for (pick, ok) in results {
            let ip = endpoints[pick as usize % endpoints.len()];
            machines.get_mut(&ip).unwrap().observe(ok, std::time::Duration::ZERO, "");
            let h = machines.iter().map(|(ip, m)| (*ip, m.state())).collect();
            let pl = plan(&p, &h, &published, &BTreeSet::new());
            // Applying the plan to the published set gives the desired set.
            let mut applied = published.clone();
            for (c, _) in &pl.changes {
                match c { Change::Add(ip) => { applied.insert(*ip); } Change::Remove(ip) => { applied.remove(ip); } Change::Ttl(_) | Change::Weight(_) => {} }
            }
            prop_assert_eq!(&applied, &pl.desired);
            published = applied;
            prop_assert!(published.len() >= min_healthy,
                "published {:?} has fewer than min_healthy={}", published, min_healthy);
        }
    }

    /// With every verdict known and enough endpoints up, the published set is exactly the up set.
    #[test]
    fn converges_to_exactly_the_healthy_set(
        endpoints in endpoints_strategy(),
        up_mask in any::<u8>(),
        published_mask in any::<u8>(),
    ) {
        let h: BTreeMap<IpAddr, Health> = endpoints.iter().enumerate()
            .map(|(i, ip)| (*ip, if up_mask & (1 << i) != 0 { Health::Up } else { Health::Down }))
            .collect();
        let up: BTreeSet<IpAddr> = h.iter().filter(|(_, s)| **s == Health::Up).map(|(ip, _)| *ip).collect();
        prop_assume!(!up.is_empty());
        let published: BTreeSet<IpAddr> = endpoints.iter().enumerate()
            .filter(|(i, _)| published_mask & (1 << i) != 0).map(|(_, ip)| *ip).collect();
        let p = Policy { endpoints, min_healthy: 1, all_down: AllDownPolicy::KeepAll, remove_unlisted: false, ttl: TTL, self_register: false };
        let pl = plan(&p, &h, &published, &BTreeSet::new());
        prop_assert_eq!(pl.desired, up);
    }
}

#[test]
fn removal_waits_while_the_rest_are_in_doubt() {
    // A is down; B and C are still up but failing: they may follow, and then keep_all would re-add A.
    let p = policy(&[A, B, C], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Down), (B, Health::Up), (C, Health::Up)]);
    let doubt = set(&[B, C]);
    let held = plan(&p, &h, &set(&[A, B, C]), &doubt);
    assert!(held.is_empty(), "{held}");
    assert_eq!(held.deferred, set(&[A]));
    // One confirmed-up endpoint is enough for min_healthy = 1: A goes.
    let go = plan(&p, &h, &set(&[A, B, C]), &set(&[B]));
    assert_eq!(go.removals(), set(&[A]));
    assert!(go.deferred.is_empty());
    // Without doubt (or once the caller stops passing it) A goes.
    assert_eq!(
        plan(&p, &h, &set(&[A, B, C]), &none()).removals(),
        set(&[A])
    );
}

#[test]
fn fail_closed_never_holds_removals() {
    let p = policy(&[A, B], 1, AllDownPolicy::FailClosed);
    let h = health(&[(A, Health::Down), (B, Health::Up)]);
    assert_eq!(
        plan(&p, &h, &set(&[A, B]), &set(&[B])).removals(),
        set(&[A])
    );
}

#[test]
fn a_record_with_another_ttl_is_rewritten_and_nothing_else_changes() {
    let p = policy(&[A, B, C], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Up), (B, Health::Up), (C, Health::Up)]);
    let mut published = Published::with_ttl(set(&[A, B, C]), TTL);
    published.records.insert(ip(B), 300);
    let pl = super::plan(&p, &h, &published, &Doubts::default());
    assert_eq!(pl.rettl(), set(&[B]));
    assert!(pl.additions().is_empty() && pl.removals().is_empty());
    assert_eq!(
        pl.to_string(),
        "set ttl of 192.0.2.2 (ttl 300s, service ttl is 30s)"
    );
    assert_eq!(
        pl.desired_records(),
        Published::with_ttl(set(&[A, B, C]), TTL)
    );
    // Once rewritten, nothing to do.
    assert!(super::plan(&p, &h, &pl.desired_records(), &Doubts::default()).is_empty());
}

#[test]
fn an_unsettled_endpoint_stops_holding_back_removals_but_keeps_its_place() {
    // A never reaches a verdict, B is up, C is down and published.
    let p = policy(&[A, B, C], 1, AllDownPolicy::KeepAll);
    let h = health(&[(B, Health::Up), (C, Health::Down)]);
    let published = set(&[A, B, C]);
    let blocked = plan(&p, &h, &published, &none());
    assert!(blocked.is_empty(), "{blocked}");
    assert_eq!(blocked.blocking_unknown, set(&[A]));
    let doubts = Doubts {
        unsettled: set(&[A]),
        ..Doubts::default()
    };
    let pl = super::plan(&p, &h, &Published::with_ttl(published, TTL), &doubts);
    assert_eq!(pl.removals(), set(&[C]));
    assert_eq!(pl.desired, set(&[A, B]), "A stays published, unjudged");
    assert!(pl.blocking_unknown.is_empty());
    // An unsettled endpoint that is not published is not added.
    let pl = super::plan(&p, &h, &Published::with_ttl(set(&[B, C]), TTL), &doubts);
    assert_eq!(pl.desired, set(&[B]));
}

#[test]
fn removal_of_a_recovering_endpoint_waits() {
    let p = policy(&[A, B, C], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Up), (B, Health::Down), (C, Health::Down)]);
    let doubts = Doubts {
        recovering: set(&[B]),
        ..Doubts::default()
    };
    let pl = super::plan(&p, &h, &Published::with_ttl(set(&[A, B, C]), TTL), &doubts);
    assert!(
        pl.is_empty(),
        "every removal waits, so they go together: {pl}"
    );
    assert_eq!(pl.deferred, set(&[B, C]));
    let pl = super::plan(
        &p,
        &h,
        &Published::with_ttl(set(&[A, B, C]), TTL),
        &Doubts::default(),
    );
    assert_eq!(pl.removals(), set(&[B, C]));
}

#[test]
fn reasons_print_in_config_spelling() {
    let r = Reason::AllDown {
        verdict: Health::Down,
        min_healthy: 2,
        policy: AllDownPolicy::KeepLast,
    };
    assert_eq!(
        r.to_string(),
        "down, but fewer than min_healthy=2 up: all_down=keep_last"
    );
    assert_eq!(
        Reason::FailClosed(Health::Down).to_string(),
        "down; all_down=fail_closed"
    );
}

/// The reason (machine name) of each address's standing, for short assertions.
fn standing_kinds(plan: &Plan) -> Vec<(IpAddr, bool, &'static str)> {
    plan.standing
        .iter()
        .map(|(ip, s)| (*ip, s.published, s.reason.kind()))
        .collect()
}

#[test]
fn standing_names_the_rule_for_every_endpoint_and_published_address() {
    let p = policy(&[A, B, C], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Up), (B, Health::Down)]);
    // C is unknown and not published; X is published but not configured.
    let pl = plan(&p, &h, &set(&[A, B, X]), &none());
    assert_eq!(
        standing_kinds(&pl),
        vec![
            (ip(A), true, "verdict"),
            // C unknown keeps every removal back: B waits for its verdict.
            (ip(B), true, "awaiting_verdicts"),
            (ip(X), true, "unlisted_kept"),
            (ip(C), false, "verdict"),
        ]
    );
    assert_eq!(pl.standing[&ip(C)].reason, Reason::Verdict(Health::Unknown));
    // Once C has a verdict, B goes out because it is down.
    let h = health(&[(A, Health::Up), (B, Health::Down), (C, Health::Up)]);
    let pl = plan(&p, &h, &set(&[A, B]), &none());
    assert_eq!(
        pl.standing[&ip(B)],
        Standing {
            published: false,
            reason: Reason::Verdict(Health::Down)
        }
    );
    assert_eq!(pl.standing[&ip(B)].reason.to_string(), "down");
}

#[test]
fn standing_shows_all_down_policy_hold_and_fail_closed() {
    // Everything down, keep_all: all kept by the policy.
    let p = policy(&[A, B], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Down), (B, Health::Down)]);
    let pl = plan(&p, &h, &set(&[A]), &none());
    for ipx in [A, B] {
        let s = &pl.standing[&ip(ipx)];
        assert!(s.published, "{ipx}");
        assert_eq!(
            s.reason,
            Reason::AllDown {
                verdict: Health::Down,
                min_healthy: 1,
                policy: AllDownPolicy::KeepAll
            }
        );
    }
    assert_eq!(
        pl.standing[&ip(A)].reason.to_string(),
        "down, but fewer than min_healthy=1 up: all_down=keep_all"
    );
    // fail_closed: out, and the reason says so.
    let p = policy(&[A, B], 1, AllDownPolicy::FailClosed);
    let pl = plan(&p, &h, &set(&[A]), &none());
    assert_eq!(
        pl.standing[&ip(A)],
        Standing {
            published: false,
            reason: Reason::FailClosed(Health::Down)
        }
    );
    // A removal held back because the one that would remain is in doubt.
    let p = policy(&[A, B], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Up), (B, Health::Down)]);
    let pl = plan(&p, &h, &set(&[A, B]), &set(&[A]));
    assert_eq!(pl.deferred, set(&[B]));
    assert_eq!(
        pl.standing[&ip(B)],
        Standing {
            published: true,
            reason: Reason::HeldBack(Health::Down)
        }
    );
    // An unlisted address with remove_unlisted goes.
    let mut p = policy(&[A], 1, AllDownPolicy::KeepAll);
    p.remove_unlisted = true;
    let pl = plan(&p, &health(&[(A, Health::Up)]), &set(&[A, X]), &none());
    assert_eq!(pl.standing[&ip(X)].reason, Reason::Unlisted);
    assert!(!pl.standing[&ip(X)].published);
}

#[test]
fn standing_of_an_unsettled_endpoint() {
    let p = policy(&[A, B], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Up)]);
    let pl = super::plan(
        &p,
        &h,
        &Published::with_ttl([ip(A), ip(B)], TTL),
        &Doubts {
            unsettled: set(&[B]),
            ..Doubts::default()
        },
    );
    assert_eq!(
        pl.standing[&ip(B)],
        Standing {
            published: true,
            reason: Reason::Unsettled
        }
    );
}

proptest! {
    /// Every configured endpoint and every published address has a standing, and it agrees with the
    /// desired set; a change's address stands where the change puts it.
    #[test]
    fn standing_agrees_with_desired(
        verdicts in prop::collection::vec(0u8..3, 1..6),
        published_mask in any::<u8>(),
        doubt_mask in any::<u8>(),
        unsettled_mask in any::<u8>(),
        extra in any::<bool>(),
        min_healthy in 1usize..4,
        all_down in prop_oneof![Just(AllDownPolicy::KeepAll), Just(AllDownPolicy::KeepLast), Just(AllDownPolicy::FailClosed)],
        remove_unlisted in any::<bool>(),
    ) {
        let endpoints: Vec<IpAddr> = (0..verdicts.len()).map(|i| ip(&format!("192.0.2.{}", i + 1))).collect();
        let mut p = policy(&[], min_healthy, all_down);
        p.endpoints = endpoints.clone();
        p.remove_unlisted = remove_unlisted;
        let h: BTreeMap<IpAddr, Health> = endpoints.iter().zip(&verdicts).filter_map(|(ip, v)| match v {
            0 => Some((*ip, Health::Up)), 1 => Some((*ip, Health::Down)), _ => None,
        }).collect();
        let pick = |mask: u8| -> BTreeSet<IpAddr> { endpoints.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, ip)| *ip).collect() };
        let mut published = pick(published_mask);
        if extra { published.insert(ip(X)); }
        let doubts = Doubts { in_doubt: pick(doubt_mask), unsettled: pick(unsettled_mask).into_iter().filter(|ip| !h.contains_key(ip)).collect(), recovering: BTreeSet::new(), held_out: BTreeMap::new() };
        let pl = super::plan(&p, &h, &Published::with_ttl(published.iter().copied(), TTL), &doubts);
        let all: BTreeSet<IpAddr> = endpoints.iter().copied().chain(published.iter().copied()).collect();
        prop_assert_eq!(pl.standing.keys().copied().collect::<BTreeSet<_>>(), all);
        for (ip, s) in &pl.standing {
            prop_assert_eq!(s.published, pl.desired.contains(ip), "{} {:?}", ip, s);
        }
    }
}

fn held(pairs: &[(&str, Reason)]) -> Doubts {
    Doubts {
        held_out: pairs.iter().map(|(s, r)| (ip(s), r.clone())).collect(),
        ..Doubts::default()
    }
}

#[test]
fn a_held_out_endpoint_is_removed_with_its_policy_reason() {
    let p = policy(&[A, B, C], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Up), (B, Health::Up), (C, Health::Up)]);
    let damped = Reason::Damped { penalty: 2100 };
    let pl = super::plan(
        &p,
        &h,
        &Published::with_ttl(set(&[A, B, C]), TTL),
        &held(&[(B, damped.clone())]),
    );
    assert_eq!(pl.removals(), set(&[B]));
    assert_eq!(pl.changes, vec![(Change::Remove(ip(B)), damped.clone())]);
    assert_eq!(pl.held_out, [(ip(B), damped)].into());
    assert!(pl.kept_for_min_healthy.is_empty());
}

#[test]
fn held_out_endpoints_refill_min_healthy_before_the_all_down_policy() {
    // Only B and C are up, both held out; min_healthy = 2 puts both back (published one first), and
    // the down endpoint A is not published by keep_all.
    let p = policy(&[A, B, C], 2, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Down), (B, Health::Up), (C, Health::Up)]);
    let why = Reason::ReaddDelay {
        delay: std::time::Duration::from_secs(30),
    };
    let doubts = held(&[(B, why.clone()), (C, why.clone())]);
    let pl = super::plan(&p, &h, &Published::with_ttl(set(&[A, C]), TTL), &doubts);
    assert_eq!(pl.desired, set(&[B, C]));
    assert_eq!(pl.policy_applied, None);
    assert_eq!(pl.kept_for_min_healthy, set(&[B, C]));
    assert!(pl.changes.contains(&(
        Change::Add(ip(B)),
        Reason::KeptForMinHealthy {
            min_healthy: 2,
            held_out: Box::new(why)
        }
    )));
    // With min_healthy = 1 only the published one is put back.
    let p = policy(&[A, B, C], 1, AllDownPolicy::KeepAll);
    let pl = super::plan(&p, &h, &Published::with_ttl(set(&[A, C]), TTL), &doubts);
    assert_eq!(pl.desired, set(&[C]));
}

proptest! {
    /// Whatever the policies hold out, the planner never publishes fewer than min_healthy records
    /// while that many endpoints are configured (keep_all and keep_last; DESIGN.md invariant 1).
    #[test]
    fn held_out_never_takes_the_set_below_min_healthy(
        states in proptest::collection::vec(0u8..3, 4),
        held_mask in proptest::collection::vec(any::<bool>(), 4),
        pub_mask in proptest::collection::vec(any::<bool>(), 4),
        min_healthy in 1usize..=4,
        keep_last in any::<bool>(),
    ) {
        let eps = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"];
        let all_down = if keep_last { AllDownPolicy::KeepLast } else { AllDownPolicy::KeepAll };
        let p = policy(&eps, min_healthy, all_down);
        let h: BTreeMap<IpAddr, Health> = eps.iter().zip(&states).map(|(e, s)| (ip(e), match s {
            0 => Health::Up,
            1 => Health::Down,
            _ => Health::Unknown,
        })).collect();
        let doubts = Doubts {
            held_out: eps.iter().zip(&held_mask).filter(|(_, m)| **m)
                .map(|(e, _)| (ip(e), Reason::Damped { penalty: 3000 })).collect(),
            ..Doubts::default()
        };
        let published: BTreeSet<IpAddr> =
            eps.iter().zip(&pub_mask).filter(|(_, m)| **m).map(|(e, _)| ip(e)).collect();
        let pl = super::plan(&p, &h, &Published::with_ttl(published, TTL), &doubts);
        prop_assert!(pl.desired.len() >= min_healthy, "{pl:?}");
        // Up endpoints held out stay out unless min_healthy needs them.
        let up_free = h.iter().filter(|(ip, s)| **s == Health::Up && !doubts.held_out.contains_key(ip)).count();
        if up_free >= min_healthy && h.values().all(|s| *s != Health::Unknown) {
            for ip in doubts.held_out.keys() {
                prop_assert!(!pl.desired.contains(ip) || pl.deferred.contains(ip), "{pl:?}");
            }
        }
    }
}

/// A self-registering node's policy: its own address `A` is the one endpoint, `min_healthy = 1`.
fn self_policy() -> Policy {
    Policy {
        self_register: true,
        ..policy(&[A], 1, AllDownPolicy::KeepLast)
    }
}

#[test]
fn self_registration_adds_its_address_while_up_and_leaves_the_others_alone() {
    let p = self_policy();
    let pl = plan(&p, &health(&[(A, Health::Up)]), &set(&[B, X]), &none());
    assert_eq!(pl.desired, set(&[A, B, X]));
    assert_eq!(pl.additions(), set(&[A]));
    assert!(pl.removals().is_empty());
}

#[test]
fn self_registration_removes_its_address_when_down_while_others_remain() {
    let p = self_policy();
    let pl = plan(&p, &health(&[(A, Health::Down)]), &set(&[A, B]), &none());
    assert_eq!(pl.desired, set(&[B]));
    assert_eq!(pl.removals(), set(&[A]));
    assert_eq!(
        pl.deferred,
        none(),
        "other nodes' addresses count as up: no hold"
    );
}

#[test]
fn self_registration_never_removes_the_last_record() {
    let p = self_policy();
    let pl = plan(&p, &health(&[(A, Health::Down)]), &set(&[A]), &none());
    assert_eq!(pl.desired, set(&[A]));
    assert!(pl.is_empty());
    assert_eq!(pl.policy_applied, Some(AllDownPolicy::KeepLast));
}

#[test]
fn self_registration_never_adds_a_failing_node_even_to_an_empty_name() {
    let p = self_policy();
    for published in [none(), set(&[B])] {
        let pl = plan(&p, &health(&[(A, Health::Down)]), &published, &none());
        assert!(!pl.desired.contains(&ip(A)), "{pl:?}");
        assert!(pl.is_empty(), "{pl:?}");
    }
}

#[test]
fn without_self_registration_the_others_do_not_count() {
    // The same inputs under keep_last without the flag: the down endpoint is kept (others do not
    // count towards min_healthy), which shows the flag is what lets the removal through.
    let p = policy(&[A], 1, AllDownPolicy::KeepLast);
    let pl = plan(&p, &health(&[(A, Health::Down)]), &set(&[A, B]), &none());
    assert!(pl.desired.contains(&ip(A)));
}

proptest! {
    #[test]
    fn self_registration_never_empties_a_published_rrset_nor_adds_itself_unless_up(
        state in 0u8..3,
        self_published in any::<bool>(),
        others in 0usize..3,
    ) {
        let p = self_policy();
        let v = match state { 0 => Health::Up, 1 => Health::Down, _ => Health::Unknown };
        let mut published: BTreeSet<IpAddr> = [B, X, "192.0.2.50"].iter().take(others).map(|s| ip(s)).collect();
        if self_published {
            published.insert(ip(A));
        }
        let pl = plan(&p, &health(&[(A, v)]), &published, &none());
        if !published.is_empty() {
            prop_assert!(!pl.desired.is_empty(), "{pl:?}");
        }
        if !self_published && v != Health::Up {
            prop_assert!(!pl.desired.contains(&ip(A)), "{pl:?}");
        }
        // Other nodes' addresses are never touched.
        for o in published.iter().filter(|o| **o != ip(A)) {
            prop_assert!(pl.desired.contains(o), "{pl:?}");
        }
    }
}

/// Weights: a kept address whose weight differs is rewritten, an added one carries its weight,
/// weights never change which addresses are published, and dropping the weights makes every
/// record plain again.
#[test]
fn weigh_rewrites_weights_and_never_changes_membership() {
    let p = policy(&[A, B, C], 1, AllDownPolicy::KeepAll);
    let h = health(&[(A, Health::Up), (B, Health::Up), (C, Health::Down)]);
    let mut published = Published::with_ttl([ip(A), ip(C)], TTL);
    published.weights = [(ip(A), 1), (ip(C), 7)].into_iter().collect();
    let weights: BTreeMap<IpAddr, u8> = [(ip(A), 10), (ip(B), 0), (ip(C), 7)].into_iter().collect();
    let mut planned = super::plan(&p, &h, &published, &Doubts::default());
    let before = planned.desired.clone();
    weigh(&mut planned, &published, Some(&weights));
    assert_eq!(planned.desired, before);
    assert_eq!(planned.desired, set(&[A, B]));
    assert_eq!(
        planned.weights,
        [(ip(A), 10), (ip(B), 0)]
            .into_iter()
            .collect::<BTreeMap<_, _>>()
    );
    assert!(planned.changes.contains(&(
        Change::Weight(ip(A)),
        Reason::Weight {
            from: Some(1),
            to: Some(10)
        }
    )));
    assert_eq!(planned.rettl(), set(&[A]));
    assert!(
        planned
            .changes
            .contains(&(Change::Add(ip(B)), Reason::Verdict(Health::Up)))
    );
    assert_eq!(planned.desired_records().weights, planned.weights);

    // Same weights as published: nothing to rewrite.
    let mut same = Published::with_ttl([ip(A), ip(B)], TTL);
    same.weights = [(ip(A), 10), (ip(B), 0)].into_iter().collect();
    let mut planned = super::plan(&p, &h, &same, &Doubts::default());
    weigh(&mut planned, &same, Some(&weights));
    assert!(planned.is_empty(), "{planned}");

    // Weights removed from the config (or a writer without them): weighted records become plain.
    let mut planned = super::plan(&p, &h, &same, &Doubts::default());
    weigh(&mut planned, &same, None);
    assert!(planned.weights.is_empty());
    assert_eq!(planned.rettl(), set(&[A, B]));
    assert!(
        planned.to_string().contains("the service has no weights"),
        "{planned}"
    );

    // Plain records and a service with weights: every kept record is rewritten once.
    let plain = Published::with_ttl([ip(A), ip(B)], TTL);
    let mut planned = super::plan(&p, &h, &plain, &Doubts::default());
    weigh(&mut planned, &plain, Some(&weights));
    assert_eq!(planned.rettl(), set(&[A, B]));
    assert_eq!(planned.changes.len(), 2);
}
