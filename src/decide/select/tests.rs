use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::act::Published;
use crate::config::AllDownPolicy;
use crate::decide::{Doubts, Policy};

fn ip(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}

fn ips(ns: &[u8]) -> Vec<IpAddr> {
    ns.iter().map(|n| ip(*n)).collect()
}

fn set(ns: &[u8]) -> BTreeSet<IpAddr> {
    ns.iter().map(|n| ip(*n)).collect()
}

fn all_up(ns: &[u8]) -> BTreeMap<IpAddr, Health> {
    ns.iter().map(|n| (ip(*n), Health::Up)).collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn fastest(count: usize) -> SelectConfig {
    SelectConfig {
        mode: Mode::Fastest {
            count,
            good_enough: ms(200),
        },
        ..SelectConfig::default()
    }
}

/// The endpoints a selector publishes out of the up ones `up` (of `eps`), given `published`.
fn chosen(sel: &Selector, now: Instant, eps: &[u8], published: &[u8]) -> BTreeSet<IpAddr> {
    let held = sel.held_out(now, &ips(eps), &set(published), &BTreeSet::new());
    eps.iter()
        .map(|n| ip(*n))
        .filter(|ip| sel.agreed.get(ip) == Some(&Health::Up) && !held.contains_key(ip))
        .collect()
}

#[test]
fn all_mode_keeps_nothing_out() {
    let mut sel = Selector::new(SelectConfig::default());
    let now = Instant::now();
    sel.observe_agreed(now, &all_up(&[1, 2, 3]));
    assert!(
        sel.held_out(now, &ips(&[1, 2, 3]), &set(&[]), &BTreeSet::new())
            .is_empty()
    );
}

#[test]
fn fastest_picks_the_best_scores_and_is_sticky() {
    let now = Instant::now();
    let mut sel = Selector::new(fastest(2));
    sel.observe_agreed(now, &all_up(&[1, 2, 3, 4]));
    for (n, l) in [(1, 50), (2, 10), (3, 30), (4, 150)] {
        sel.observe_probe(ip(n), true, ms(l));
    }
    // Nothing published: the two best scores.
    assert_eq!(chosen(&sel, now, &[1, 2, 3, 4], &[]), set(&[2, 3]));
    let held = sel.held_out(now, &ips(&[1, 2, 3, 4]), &set(&[]), &BTreeSet::new());
    assert_eq!(held[&ip(1)], Reason::NotFastest { count: 2 });
    // 1 and 4 published and under good_enough: they stay although 2 and 3 are faster.
    assert_eq!(chosen(&sel, now, &[1, 2, 3, 4], &[1, 4]), set(&[1, 4]));
    // 4 slows past good_enough: its place goes to the best of the rest.
    sel.observe_probe(ip(4), true, ms(250));
    assert_eq!(chosen(&sel, now, &[1, 2, 3, 4], &[1, 4]), set(&[1, 2]));
    // A failed probe is no sample: the health machine judges failures (fall).
    sel.observe_probe(ip(1), false, ms(0));
    assert_eq!(chosen(&sel, now, &[1, 2, 3, 4], &[1, 2]), set(&[1, 2]));
}

#[test]
fn among_slow_endpoints_published_ones_stay() {
    let now = Instant::now();
    let mut sel = Selector::new(fastest(2));
    sel.observe_agreed(now, &all_up(&[1, 2, 3, 4]));
    for (n, l) in [(1, 300), (2, 10), (3, 250), (4, 260)] {
        sel.observe_probe(ip(n), true, ms(l));
    }
    // 1 is slow but published; 3 and 4, slow too and faster, do not take its place.
    assert_eq!(chosen(&sel, now, &[1, 2, 3, 4], &[1, 2]), set(&[1, 2]));
    // A good-enough one does.
    sel.observe_probe(ip(4), true, ms(50));
    assert_eq!(chosen(&sel, now, &[1, 2, 3, 4], &[1, 2]), set(&[2, 4]));
}

#[test]
fn score_orders_by_last_sample_then_window_then_long_term() {
    let mut sel = Selector::new(fastest(1));
    // 1: fast on average but its last sample is slow; 2: slower on average, last sample good.
    for l in [10, 10, 10, 300] {
        sel.observe_probe(ip(1), true, ms(l));
    }
    for l in [150, 150] {
        sel.observe_probe(ip(2), true, ms(l));
    }
    let g = ms(200);
    assert_eq!(
        sel.score(ip(2), g).cmp(&sel.score(ip(1), g)),
        std::cmp::Ordering::Less
    );
    // Same last-sample class: the windowed mean decides.
    sel.observe_probe(ip(3), true, ms(100));
    assert_eq!(
        sel.score(ip(3), g).cmp(&sel.score(ip(2), g)),
        std::cmp::Ordering::Less
    );
    // The window forgets: after WINDOW fast samples an old slow one no longer counts, the
    // long-term mean still does.
    for _ in 0..WINDOW {
        sel.observe_probe(ip(4), true, ms(20));
        sel.observe_probe(ip(5), true, ms(20));
    }
    sel.observe_probe(ip(5), true, ms(20));
    let (s4, s5) = (sel.score(ip(4), g), sel.score(ip(5), g));
    assert_eq!(s4.window_mean, s5.window_mean);
    // No samples: worst.
    assert!(sel.score(ip(9), g).slow && sel.score(ip(9), g).window_mean.is_infinite());
}

fn priority(tiers: &[&[u8]], min_active: usize, failback: Duration) -> SelectConfig {
    SelectConfig {
        mode: Mode::Priority {
            tiers: tiers.iter().map(|t| ips(t)).collect(),
            min_active,
            failback_after: failback,
        },
        ..SelectConfig::default()
    }
}

fn health(up: &[u8], down: &[u8]) -> BTreeMap<IpAddr, Health> {
    up.iter()
        .map(|n| (ip(*n), Health::Up))
        .chain(down.iter().map(|n| (ip(*n), Health::Down)))
        .collect()
}

#[test]
fn priority_fails_over_at_once_and_back_after_the_hold_down() {
    let t0 = Instant::now();
    let eps = [1, 2, 3];
    let mut sel = Selector::new(priority(&[&[1, 2], &[3]], 1, Duration::from_secs(60)));
    // Tier 1 not probed yet: standby tiers stay out meanwhile.
    assert!(sel.observe_agreed(t0, &health(&[3], &[])).is_empty());
    assert_eq!(chosen(&sel, t0, &eps, &[]), set(&[]));
    assert_eq!(
        sel.held_out(t0, &ips(&eps), &set(&[]), &BTreeSet::new())[&ip(3)],
        Reason::StandbyTier { tier: 2, active: 1 }
    );
    sel.observe_agreed(t0, &health(&[1, 2, 3], &[]));
    assert_eq!(sel.active_tiers(t0), Some(1));
    assert_eq!(chosen(&sel, t0, &eps, &[1, 2]), set(&[1, 2]));
    // One of tier 1 down: still min_active.
    sel.observe_agreed(t0, &health(&[2, 3], &[1]));
    assert_eq!(chosen(&sel, t0, &eps, &[1, 2]), set(&[2]));
    // Both down: tier 2 at once.
    let t1 = t0 + Duration::from_secs(5);
    let ev = sel.observe_agreed(t1, &health(&[3], &[1, 2]));
    assert_eq!(ev, vec![SelectEvent::FailedOver { from: 1, to: 2 }]);
    assert_eq!(chosen(&sel, t1, &eps, &[1, 2]), set(&[3]));
    // Tier 1 back: tier 2 stays until the hold-down has passed.
    let t2 = t1 + Duration::from_secs(5);
    assert!(sel.observe_agreed(t2, &health(&[1, 3], &[2])).is_empty());
    assert_eq!(chosen(&sel, t2, &eps, &[3]), set(&[1, 3]));
    assert_eq!(sel.next_wake(), Some(t2 + Duration::from_secs(60)));
    // A break in the hold-down restarts it.
    let t3 = t2 + Duration::from_secs(30);
    sel.observe_agreed(t3, &health(&[3], &[1, 2]));
    let t4 = t3 + Duration::from_secs(1);
    sel.observe_agreed(t4, &health(&[1, 3], &[2]));
    assert!(sel.poll(t2 + Duration::from_secs(61)).is_empty());
    assert_eq!(sel.active_tiers(t2 + Duration::from_secs(61)), Some(2));
    let t5 = t4 + Duration::from_secs(60);
    assert_eq!(
        sel.poll(t5),
        vec![SelectEvent::FailedBack {
            from: 2,
            to: 1,
            after: Duration::from_secs(60)
        }]
    );
    assert_eq!(chosen(&sel, t5, &eps, &[1, 3]), set(&[1]));
    assert_eq!(sel.next_wake(), None);
}

#[test]
fn an_unsettled_endpoint_does_not_keep_standby_tiers_out_for_ever() {
    // Tier 1 holds one endpoint whose results alternate: it never gets a verdict. Hoped up at
    // first, it must stop counting once the service core reports it unsettled (simulator seed 19).
    let t0 = Instant::now();
    let eps = [1, 2, 3];
    let mut sel = Selector::new(priority(&[&[1], &[2, 3]], 1, Duration::from_secs(5)));
    let agreed: BTreeMap<IpAddr, Health> = [
        (ip(1), Health::Unknown),
        (ip(2), Health::Up),
        (ip(3), Health::Up),
    ]
    .into_iter()
    .collect();
    assert!(sel.observe_agreed(t0, &agreed).is_empty());
    assert_eq!(sel.active_tiers(t0), Some(1));
    assert_eq!(chosen(&sel, t0, &eps, &[1, 2, 3]), set(&[]));
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(
        sel.observe_unsettled(t1, &set(&[1])),
        vec![SelectEvent::FailedOver { from: 0, to: 2 }]
    );
    assert_eq!(sel.active_tiers(t1), Some(2));
    assert_eq!(chosen(&sel, t1, &eps, &[1, 2, 3]), set(&[2, 3]));
    // The same report again changes nothing; later views keep tier 2 while 1 has no verdict.
    assert!(sel.observe_unsettled(t1, &set(&[1])).is_empty());
    assert!(sel.observe_agreed(t1, &agreed).is_empty());
    assert_eq!(sel.active_tiers(t1 + Duration::from_secs(60)), Some(2));
    // Once it is agreed up, failback waits for the hold-down as usual.
    let t2 = t1 + Duration::from_secs(1);
    sel.observe_unsettled(t2, &BTreeSet::new());
    sel.observe_agreed(t2, &all_up(&[1, 2, 3]));
    assert_eq!(sel.active_tiers(t2), Some(2));
    assert_eq!(
        sel.poll(t2 + Duration::from_secs(5)),
        vec![SelectEvent::FailedBack {
            from: 2,
            to: 1,
            after: Duration::from_secs(5)
        }]
    );
}

#[test]
fn priority_adds_tiers_until_min_active() {
    let t0 = Instant::now();
    let eps = [1, 2, 3, 4, 5];
    let mut sel = Selector::new(priority(
        &[&[1, 2], &[3], &[4, 5]],
        2,
        Duration::from_secs(1),
    ));
    sel.observe_agreed(t0, &health(&[2, 4, 5], &[1, 3]));
    // 1 up in tier 1, 1 in tiers 1-2, 3 in tiers 1-3.
    assert_eq!(sel.active_tiers(t0), Some(3));
    assert_eq!(chosen(&sel, t0, &eps, &[]), set(&[2, 4, 5]));
}

fn with_canaries(cfg: SelectConfig, canaries: &[u8], max: usize) -> SelectConfig {
    SelectConfig {
        canaries: ips(canaries),
        canary_max_failing: max,
        ..cfg
    }
}

#[test]
fn a_canary_replaces_the_last_selected_endpoint() {
    let now = Instant::now();
    let eps = [1, 2, 3, 9];
    let mut sel = Selector::new(with_canaries(SelectConfig::default(), &[9], 0));
    sel.observe_agreed(now, &all_up(&eps));
    // All published: the last in configured order gives way.
    let held = sel.held_out(now, &ips(&eps), &set(&[1, 2, 3]), &BTreeSet::new());
    assert_eq!(
        held,
        BTreeMap::from([(ip(3), Reason::ReplacedByCanary { canary: ip(9) })])
    );
    // Once replaced, the same one stays out (the unpublished one gives way first).
    let held = sel.held_out(now, &ips(&eps), &set(&[1, 2, 9]), &BTreeSet::new());
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), vec![ip(3)]);
    // With a single endpoint selected, the canary goes beside it.
    sel.observe_agreed(now, &health(&[1, 9], &[2, 3]));
    assert!(
        sel.held_out(now, &ips(&eps), &set(&[1]), &BTreeSet::new())
            .is_empty()
    );
}

#[test]
fn the_kill_switch_withdraws_every_canary_until_all_pass() {
    let now = Instant::now();
    let eps = [1, 2, 3, 8, 9];
    let mut sel = Selector::new(with_canaries(SelectConfig::default(), &[8, 9], 0));
    sel.observe_agreed(now, &all_up(&eps));
    assert_eq!(
        chosen(&sel, now, &eps, &[1, 2, 3]),
        set(&[1, 8, 9]),
        "two canaries replace two endpoints"
    );
    let ev = sel.observe_agreed(now, &health(&[1, 2, 3, 9], &[8]));
    assert!(
        matches!(&ev[..], [SelectEvent::CanariesWithdrawn { failing, max: 0 }] if *failing == set(&[8]))
    );
    assert_eq!(
        sel.held_out(now, &ips(&eps), &set(&[1, 2, 9]), &BTreeSet::new())[&ip(9)],
        Reason::CanaryWithdrawn { max_failing: 0 }
    );
    assert_eq!(chosen(&sel, now, &eps, &[1, 2, 9]), set(&[1, 2, 3]));
    // 8 unknown (not yet passing): still withdrawn.
    assert!(
        sel.observe_agreed(now, &health(&[1, 2, 3, 9], &[]))
            .is_empty()
    );
    assert!(sel.canaries_withdrawn());
    assert_eq!(
        sel.observe_agreed(now, &all_up(&eps)),
        vec![SelectEvent::CanariesRestored]
    );
    assert_eq!(chosen(&sel, now, &eps, &[1, 2, 3]), set(&[1, 8, 9]));
}

#[test]
fn canary_max_failing_tolerates_that_many() {
    let now = Instant::now();
    let mut sel = Selector::new(with_canaries(SelectConfig::default(), &[7, 8, 9], 1));
    assert!(
        sel.observe_agreed(now, &health(&[1, 2, 7, 8], &[9]))
            .is_empty()
    );
    assert!(!sel.canaries_withdrawn());
    assert_eq!(
        sel.observe_agreed(now, &health(&[1, 2, 7], &[8, 9])).len(),
        1
    );
    assert!(sel.canaries_withdrawn());
}

#[test]
fn the_planner_puts_selected_out_endpoints_back_for_min_healthy() {
    let now = Instant::now();
    let mut sel = Selector::new(fastest(1));
    sel.observe_agreed(now, &all_up(&[1, 2, 3]));
    for (n, l) in [(1, 10), (2, 20), (3, 30)] {
        sel.observe_probe(ip(n), true, ms(l));
    }
    let policy = Policy {
        endpoints: ips(&[1, 2, 3]),
        min_healthy: 2,
        all_down: AllDownPolicy::KeepAll,
        remove_unlisted: false,
        ttl: 30,
        self_register: false,
    };
    let published = Published::with_ttl(set(&[1, 2, 3]), 30);
    let doubts = Doubts {
        held_out: sel.held_out(now, &policy.endpoints, &set(&[1, 2, 3]), &BTreeSet::new()),
        ..Doubts::default()
    };
    let plan = crate::decide::plan(&policy, &all_up(&[1, 2, 3]), &published, &doubts);
    assert_eq!(plan.desired, set(&[1, 2]));
    assert_eq!(
        plan.standing[&ip(3)].reason,
        Reason::NotFastest { count: 1 }
    );
    assert_eq!(plan.standing[&ip(3)].reason.kind(), "not_fastest");
    assert!(matches!(
        plan.standing[&ip(2)].reason,
        Reason::KeptForMinHealthy { .. }
    ));
}

proptest! {
    /// Sticky `fastest = count`: once the selection is published, any new latencies that keep every
    /// published endpoint under good_enough change nothing, however the ranks shuffle.
    #[test]
    fn rank_shuffles_under_good_enough_cause_no_change(
        n in 2usize..8,
        count_seed in 0usize..8,
        first in proptest::collection::vec(1u64..400, 8),
        rounds in proptest::collection::vec((proptest::collection::vec(1u64..400, 8), any::<proptest::sample::Index>()), 1..20),
    ) {
        let count = 1 + count_seed % (n - 1);
        let eps: Vec<u8> = (1..=n as u8).collect();
        let now = Instant::now();
        let mut sel = Selector::new(fastest(count));
        sel.observe_agreed(now, &all_up(&eps));
        // Published: whatever the first round selects, with every selected one under good_enough.
        for (i, e) in eps.iter().enumerate() {
            sel.observe_probe(ip(*e), true, ms(first[i] % 199 + 1));
        }
        let held = sel.held_out(now, &ips(&eps), &BTreeSet::new(), &BTreeSet::new());
        let published: BTreeSet<IpAddr> = ips(&eps).into_iter().filter(|ip| !held.contains_key(ip)).collect();
        prop_assert_eq!(published.len(), count);
        let policy = Policy {
            endpoints: ips(&eps),
            min_healthy: 1,
            all_down: AllDownPolicy::KeepAll,
            remove_unlisted: false,
            ttl: 30,
            self_register: false,
        };
        let records = Published::with_ttl(published.clone(), 30);
        for (lat, pick) in rounds {
            // A permutation of the latencies over the endpoints, published ones kept under 200 ms.
            let mut lat: Vec<u64> = lat[..n].to_vec();
            let k = pick.index(n);
            lat.rotate_left(k);
            for (i, e) in eps.iter().enumerate() {
                let mut l = lat[i];
                if published.contains(&ip(*e)) {
                    l = l % 199 + 1;
                }
                sel.observe_probe(ip(*e), true, ms(l));
            }
            let doubts = Doubts {
                held_out: sel.held_out(now, &policy.endpoints, &published, &BTreeSet::new()),
                ..Doubts::default()
            };
            let plan = crate::decide::plan(&policy, &all_up(&eps), &records, &doubts);
            prop_assert!(plan.is_empty(), "{}", plan);
        }
    }

    /// When no endpoint is good enough, the published ones stay whatever their latencies do.
    #[test]
    fn rank_shuffles_among_slow_endpoints_cause_no_change(
        n in 2usize..8,
        count_seed in 0usize..8,
        rounds in proptest::collection::vec(proptest::collection::vec(200u64..2000, 8), 1..20),
        pubmask in any::<u8>(),
    ) {
        let count = 1 + count_seed % (n - 1);
        let eps: Vec<u8> = (1..=n as u8).collect();
        let now = Instant::now();
        let mut sel = Selector::new(fastest(count));
        sel.observe_agreed(now, &all_up(&eps));
        // Any `count` of them published.
        let mut published: Vec<u8> = eps.iter().copied().filter(|e| pubmask & (1 << (e - 1)) != 0).collect();
        published.extend(eps.iter().copied().filter(|e| pubmask & (1 << (e - 1)) == 0));
        published.truncate(count);
        for lat in rounds {
            for (i, e) in eps.iter().enumerate() {
                sel.observe_probe(ip(*e), true, ms(lat[i]));
            }
            prop_assert_eq!(chosen(&sel, now, &eps, &published), set(&published));
        }
    }

    /// Whatever the latencies and the published set, `fastest` never selects more than `count`, and
    /// selects `count` when that many are up.
    #[test]
    fn fastest_selects_exactly_count(
        n in 1usize..8,
        count_seed in 0usize..8,
        lat in proptest::collection::vec(proptest::option::of(1u64..400), 8),
        pubmask in any::<u8>(),
    ) {
        let count = 1 + count_seed % n;
        let eps: Vec<u8> = (1..=n as u8).collect();
        let now = Instant::now();
        let mut sel = Selector::new(fastest(count));
        sel.observe_agreed(now, &all_up(&eps));
        for (i, e) in eps.iter().enumerate() {
            match lat[i] {
                Some(l) => sel.observe_probe(ip(*e), true, ms(l)),
                None => sel.observe_probe(ip(*e), false, ms(0)),
            }
        }
        let published: Vec<u8> = eps.iter().copied().filter(|e| pubmask & (1 << (e - 1)) != 0).collect();
        prop_assert_eq!(chosen(&sel, now, &eps, &published).len(), count);
    }
}

#[test]
fn a_seeded_long_term_mean_ranks_endpoints_before_their_first_probe() {
    let now = Instant::now();
    let g = ms(200);
    // Without a seed, endpoints without samples tie: the first in configured order wins.
    let mut fresh = Selector::new(fastest(1));
    fresh.observe_agreed(now, &all_up(&[1, 2]));
    assert_eq!(chosen(&fresh, now, &[1, 2], &[]), set(&[1]));
    // The history says 2 is the fast one: it is chosen before any probe of this run.
    let mut sel = Selector::new(fastest(1));
    sel.seed_long_term(ip(1), ms(80));
    sel.seed_long_term(ip(2), ms(5));
    sel.observe_agreed(now, &all_up(&[1, 2]));
    assert_eq!(chosen(&sel, now, &[1, 2], &[]), set(&[2]));
    assert_eq!(sel.score(ip(2), g).long_mean, 0.005);
    assert!(sel.score(ip(2), g).slow, "a seed is no fresh sample");
    // Fresh samples move the mean on from the seed, and a later seed does not replace it.
    sel.observe_probe(ip(2), true, ms(105));
    let moved = 0.005 + LONG_TERM_WEIGHT * (0.105 - 0.005);
    assert!((sel.score(ip(2), g).long_mean - moved).abs() < 1e-12);
    sel.seed_long_term(ip(2), ms(1));
    assert!((sel.score(ip(2), g).long_mean - moved).abs() < 1e-12);
}
