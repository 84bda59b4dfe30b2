//! Change limits and the failback hold-down over the real planner, step by step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::config::AllDownPolicy;
use crate::decide::{Doubts, Policy};

fn ep(i: usize) -> IpAddr {
    IpAddr::from([192, 0, 2, 1 + i as u8])
}

const TTL: u32 = 30;
const INTERVAL: Duration = Duration::from_secs(1);

/// The planner, the limits and a DNS record set, driven at chosen instants.
struct Drive {
    policy: Policy,
    safety: ChangeSafety,
    published: Published,
    t0: Instant,
    /// Every applied write: when, what it added and removed, which additions went beyond the
    /// limit, and the records before it.
    writes: Vec<Write>,
    last: Option<Plan>,
}

#[derive(Debug, Clone)]
struct Write {
    at: Duration,
    added: BTreeSet<IpAddr>,
    removed: BTreeSet<IpAddr>,
    beyond_limit: BTreeSet<IpAddr>,
    before: usize,
    capped: bool,
}

impl Drive {
    fn new(
        n: usize,
        min_healthy: usize,
        all_down: AllDownPolicy,
        rate: Option<ChangeRate>,
        fraction: Option<f64>,
    ) -> Drive {
        let endpoints: Vec<IpAddr> = (0..n).map(ep).collect();
        Drive {
            policy: Policy {
                endpoints: endpoints.clone(),
                min_healthy,
                all_down,
                remove_unlisted: false,
                ttl: TTL,
                self_register: false,
            },
            safety: ChangeSafety::new(rate, fraction, INTERVAL, min_healthy),
            published: Published::with_ttl(endpoints, TTL),
            t0: Instant::now(),
            writes: Vec::new(),
            last: None,
        }
    }

    /// Plans at `at` with these verdicts and applies what the limits allow.
    fn step(&mut self, at: Duration, health: &BTreeMap<IpAddr, Health>) -> Plan {
        let now = self.t0 + at;
        let full = crate::decide::plan(&self.policy, health, &self.published, &Doubts::default());
        let limited = self.safety.limit(now, full.clone(), &self.published);
        self.safety.remember(now, &full);
        if !limited.is_empty() {
            self.writes.push(Write {
                at,
                added: limited.additions(),
                removed: limited.removals(),
                beyond_limit: limited.beyond_limit.clone(),
                before: limited.expected.len(),
                capped: limited
                    .queued
                    .iter()
                    .any(|q| matches!(q.limit, Limit::RemoveFraction { .. })),
            });
            self.published = limited.desired_records();
            self.safety.applied(now, &limited);
        }
        self.last = Some(limited.clone());
        limited
    }

    fn addresses(&self) -> BTreeSet<IpAddr> {
        self.published.addresses()
    }
}

fn up_except(n: usize, down: &[usize]) -> BTreeMap<IpAddr, Health> {
    (0..n)
        .map(|i| {
            let h = if down.contains(&i) {
                Health::Down
            } else {
                Health::Up
            };
            (ep(i), h)
        })
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn rate(max_changes: u32, window: u64) -> Option<ChangeRate> {
    Some(ChangeRate {
        max_changes,
        window: secs(window),
    })
}

#[test]
fn excess_changes_queue_and_go_first_planned_first_when_the_window_frees() {
    let mut d = Drive::new(4, 1, AllDownPolicy::KeepAll, rate(1, 60), None);
    d.step(secs(0), &up_except(4, &[]));
    // Endpoint 2 fails first, then 0 and 1 together.
    let p = d.step(secs(1), &up_except(4, &[2]));
    assert_eq!(p.removals(), [ep(2)].into());
    let p = d.step(secs(2), &up_except(4, &[0, 1, 2]));
    assert!(p.is_empty(), "{p}");
    let queued: Vec<Change> = p.queued.iter().map(|q| q.change.clone()).collect();
    assert_eq!(queued, [Change::Remove(ep(0)), Change::Remove(ep(1))]);
    assert!(
        p.to_string()
            .contains("queued: remove 192.0.2.1 (max_changes=1"),
        "{p}"
    );
    assert_eq!(p.standing[&ep(0)].reason.kind(), "queued");
    assert!(p.standing[&ep(0)].published);
    // The window frees 60 s after the first removal: then the next, 60 s later the last.
    assert_eq!(
        d.safety.next_release(d.t0 + secs(2), &p),
        Some(d.t0 + secs(61))
    );
    assert!(d.step(secs(60), &up_except(4, &[0, 1, 2])).is_empty());
    assert_eq!(
        d.step(secs(61), &up_except(4, &[0, 1, 2])).removals(),
        [ep(0)].into()
    );
    assert_eq!(
        d.step(secs(121), &up_except(4, &[0, 1, 2])).removals(),
        [ep(1)].into()
    );
    assert_eq!(d.addresses(), [ep(3)].into());
    assert!(d.last.as_ref().unwrap().queued.is_empty());
}

#[test]
fn a_queued_removal_that_is_no_longer_wanted_is_simply_gone() {
    let mut d = Drive::new(3, 1, AllDownPolicy::KeepAll, rate(1, 60), None);
    d.step(secs(0), &up_except(3, &[]));
    d.step(secs(1), &up_except(3, &[0]));
    let p = d.step(secs(2), &up_except(3, &[0, 1]));
    assert_eq!(p.queued.len(), 1);
    // Endpoint 1 recovers before its removal ran: nothing left to do, no write when the window frees.
    let p = d.step(secs(30), &up_except(3, &[0]));
    assert!(p.queued.is_empty() && p.is_empty(), "{p}");
    let writes = d.writes.len();
    d.step(secs(61), &up_except(3, &[0]));
    assert_eq!(d.writes.len(), writes);
    assert_eq!(d.addresses(), [ep(1), ep(2)].into());
}

#[test]
fn additions_that_restore_min_healthy_are_never_held_by_the_limit() {
    // min_healthy 2 of 4; 0 and 1 published, 2 and 3 out. Both published fail at once while 2
    // and 3 come up: the budget (1) takes the addition of 2, the addition of 3 goes beyond it (two
    // wanted records are needed), the removals queue.
    let mut d = Drive::new(4, 2, AllDownPolicy::KeepAll, rate(1, 60), None);
    d.published = Published::with_ttl([ep(0), ep(1)], TTL);
    d.step(secs(0), &up_except(4, &[2, 3]));
    let p = d.step(secs(10), &up_except(4, &[0, 1]));
    assert_eq!(p.additions(), [ep(2), ep(3)].into(), "{p}");
    assert_eq!(p.beyond_limit, [ep(3)].into());
    assert!(p.removals().is_empty(), "{p}");
    assert_eq!(p.queued.len(), 2, "{p}");
    // The removals follow one window apart.
    d.step(secs(70), &up_except(4, &[0, 1]));
    d.step(secs(130), &up_except(4, &[0, 1]));
    assert_eq!(d.addresses(), [ep(2), ep(3)].into());

    // A failed record left alone by the queue does not count: with the budget used up, the
    // addition of the only endpoint up goes beyond it.
    let mut d = Drive::new(3, 1, AllDownPolicy::KeepAll, rate(1, 60), None);
    d.published = Published::with_ttl([ep(0), ep(1)], TTL);
    d.step(secs(0), &up_except(3, &[2]));
    d.step(secs(1), &up_except(3, &[1, 2]));
    assert_eq!(d.addresses(), [ep(0)].into());
    let p = d.step(secs(2), &up_except(3, &[0, 1]));
    assert_eq!(p.additions(), [ep(2)].into(), "{p}");
    assert_eq!(p.beyond_limit, [ep(2)].into());
    assert!(
        p.removals().is_empty(),
        "the removal waits for the budget: {p}"
    );
    assert_eq!(d.addresses(), [ep(0), ep(2)].into());
}

#[test]
fn the_fraction_cap_removes_a_share_per_step_one_interval_apart() {
    let mut d = Drive::new(8, 1, AllDownPolicy::KeepAll, None, Some(0.25));
    d.step(secs(0), &up_except(8, &[]));
    let down = [0, 1, 2, 3, 4, 5];
    let p = d.step(secs(1), &up_except(8, &down));
    assert_eq!(p.removals().len(), 2, "a quarter of 8: {p}");
    assert_eq!(p.queued.len(), 4);
    // Within the interval after a capped step, no removal.
    let p = d.step(secs(1) + Duration::from_millis(500), &up_except(8, &down));
    assert!(p.is_empty(), "{p}");
    assert!(
        matches!(p.queued[0].limit, Limit::RemoveFraction { cap: 0 }),
        "{p:?}"
    );
    // Then ⌊6/4⌋ = 1, and at least one per step from there on.
    assert_eq!(d.step(secs(2), &up_except(8, &down)).removals().len(), 1);
    for s in 3..10 {
        d.step(secs(s), &up_except(8, &down));
    }
    assert_eq!(d.addresses(), [ep(6), ep(7)].into());
}

#[test]
fn ttl_of_a_record_kept_by_the_queue_is_still_rewritten() {
    let mut d = Drive::new(3, 1, AllDownPolicy::KeepAll, rate(1, 60), None);
    d.published = Published::with_ttl((0..3).map(ep), 300);
    let p = d.step(secs(0), &up_except(3, &[0, 1]));
    assert_eq!(p.removals().len(), 1, "{p}");
    let kept = *p
        .queued
        .iter()
        .find_map(|q| match &q.change {
            Change::Remove(ip) => Some(ip),
            _ => None,
        })
        .unwrap();
    assert!(p.rettl().contains(&kept), "{p}");
    assert_eq!(d.published.records[&kept], TTL);
}

#[test]
fn without_limits_the_plan_is_the_planners() {
    let mut d = Drive::new(4, 1, AllDownPolicy::KeepAll, None, None);
    d.step(secs(0), &up_except(4, &[]));
    let p = d.step(secs(1), &up_except(4, &[0, 1, 2]));
    assert_eq!(p.removals().len(), 3);
    assert!(p.queued.is_empty());
    // max_remove_fraction = 1 is off too.
    assert!(!ChangeSafety::new(None, Some(1.0), INTERVAL, 1).active());
}

#[test]
fn failback_holds_a_recovery_not_a_first_verdict() {
    let t0 = Instant::now();
    let mut f = Failback::new(secs(30));
    f.observe(t0, ep(0), Health::Up);
    assert!(f.held(t0).is_empty(), "unknown → up is no recovery");
    f.observe(t0 + secs(1), ep(0), Health::Down);
    f.observe(t0 + secs(2), ep(0), Health::Unknown);
    f.observe(t0 + secs(3), ep(0), Health::Up);
    assert_eq!(f.held(t0 + secs(3)), [(ep(0), t0 + secs(33))].into());
    assert_eq!(f.next_wake(), Some(t0 + secs(33)));
    // Down again during the hold-down: it ends; up again: a new one.
    f.observe(t0 + secs(10), ep(0), Health::Down);
    assert!(f.held(t0 + secs(10)).is_empty());
    f.observe(t0 + secs(12), ep(0), Health::Up);
    assert!(f.poll(t0 + secs(41)).is_empty());
    assert_eq!(f.poll(t0 + secs(42)), [ep(0)]);
    assert!(f.held(t0 + secs(42)).is_empty());
    assert_eq!(f.next_wake(), None);
}

/// A random history: each event flips one endpoint's verdict at a time offset (ms).
fn history(n: usize) -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop::collection::vec((0u64..4000, 0..n), 0..40)
}

/// Replays `events` (flips at increasing times, one plan every 100 ms) and then keeps planning
/// for `tail`; returns the drive.
fn replay(d: &mut Drive, n: usize, events: &[(u64, usize)], tail: Duration) {
    let mut down: BTreeSet<usize> = BTreeSet::new();
    let mut t = Duration::ZERO;
    let verdicts = |down: &BTreeSet<usize>| {
        let v: Vec<usize> = down.iter().copied().collect();
        up_except(n, &v)
    };
    for (gap, i) in events {
        let until = t + Duration::from_millis(*gap);
        while t < until {
            d.step(t, &verdicts(&down));
            t += Duration::from_millis(100);
        }
        if !down.remove(i) {
            down.insert(*i);
        }
    }
    let end = t + tail;
    while t <= end {
        d.step(t, &verdicts(&down));
        t += Duration::from_millis(100);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No sliding window of `change_window` sees more than `max_changes` applied changes, apart
    /// from additions made beyond the limit for min_healthy; every queued change is eventually
    /// applied or unneeded (DNS ends at the planner's own answer), and the record set never goes
    /// below min_healthy.
    #[test]
    fn no_window_sees_more_than_max_changes_and_nothing_is_lost(
        n in 2usize..6,
        min_healthy in 0usize..3,
        max_changes in 1u32..4,
        window_s in 1u64..20,
        events in history(5),
    ) {
        let n_eps = n;
        let min_healthy = min_healthy.min(n_eps);
        let events: Vec<(u64, usize)> = events.into_iter().map(|(g, i)| (g, i % n_eps)).collect();
        let window = secs(window_s);
        let mut d = Drive::new(n_eps, min_healthy, AllDownPolicy::KeepAll, rate(max_changes, window_s), None);
        // Enough time for every queued change: each window lets max_changes through.
        let tail = window * (2 * n_eps as u32 + 2);
        replay(&mut d, n_eps, &events, tail);
        for w in &d.writes {
            let counted = |x: &Write| x.added.len() + x.removed.len() - x.beyond_limit.len();
            let in_window: usize = d
                .writes
                .iter()
                .filter(|x| x.at <= w.at && w.at < x.at + window)
                .map(counted)
                .sum();
            prop_assert!(
                in_window <= max_changes as usize,
                "{in_window} changes in the window ending at {:?}: {:?}", w.at, d.writes
            );
            let after = w.before + w.added.len() - w.removed.len();
            prop_assert!(after >= min_healthy, "{after} records after {w:?}");
        }
        let last = d.last.clone().unwrap();
        prop_assert!(last.queued.is_empty(), "still queued: {last}");
        let full = crate::decide::plan(&d.policy, &{
            let mut down = BTreeSet::new();
            for (_, i) in &events { if !down.remove(i) { down.insert(*i); } }
            let v: Vec<usize> = down.into_iter().collect();
            up_except(n_eps, &v)
        }, &d.published, &Doubts::default());
        prop_assert!(full.is_empty(), "DNS is not the planner's answer: {full}");
    }

    /// One step never removes more than max(1, ⌊f × n⌋) of the n records before it; a step after
    /// a capped one removes only an interval later; nothing is lost.
    #[test]
    fn no_step_removes_more_than_the_fraction_and_nothing_is_lost(
        n in 2usize..7,
        fraction in 0.05f64..1.0,
        events in history(6),
    ) {
        let events: Vec<(u64, usize)> = events.into_iter().map(|(g, i)| (g, i % n)).collect();
        let mut d = Drive::new(n, 1, AllDownPolicy::KeepAll, None, Some(fraction));
        replay(&mut d, n, &events, secs(2 * n as u64 + 2));
        let mut capped_at: Option<Duration> = None;
        for w in &d.writes {
            let cap = ((fraction * w.before as f64).floor() as usize).max(1);
            prop_assert!(w.removed.len() <= cap, "{w:?} with cap {cap}");
            if let Some(c) = capped_at && !w.removed.is_empty() {
                prop_assert!(w.at >= c + INTERVAL, "{w:?} removes within an interval of a capped step at {c:?}");
            }
            if w.capped && !w.removed.is_empty() {
                capped_at = Some(w.at);
            }
        }
        prop_assert!(d.last.clone().unwrap().queued.is_empty());
    }
}
