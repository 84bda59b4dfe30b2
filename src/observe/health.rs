//! Per-endpoint health state machine (sans-I/O).
//!
//! An endpoint starts [`Health::Unknown`]. `rise` consecutive successes make it [`Health::Up`], `fall`
//! consecutive failures make it [`Health::Down`]; any other result resets the opposite streak. This
//! hysteresis is what keeps one real state change from causing several DNS changes (no flapping).
//!
//! **Loss-aware fall** ([`HealthMachine::with_adaptive_fall`], config `adaptive_fall`, on by default):
//! an endpoint that loses some probes at random (a lossy link, an overloaded accept queue) but serves
//! is flaky, not dead. With plain `fall = 3` and independent 20 % loss, 0.2² of all streaks that start
//! complete, about one false "down" (two DNS writes) a minute at a 500 ms interval. The machine keeps
//! the outcomes of the last [`WINDOW`] probes of the endpoint while it is up, as a bitmask (O(1), no
//! allocation). When an up endpoint's failure streak reaches `fall` and the probes before the streak
//! held failures that did not become a verdict, it estimates the failure rate `p` from them and
//! requires the smallest streak `k ≥ fall` for which `p^k × probes per minute` falls below
//! [`FALSE_DOWNS_PER_MINUTE`], at most [`ADAPTIVE_FALL_FACTOR`] × `fall`. `p` is the upper end of
//! the Wilson score interval of their share of failures at [`RATE_Z`] standard errors, not the
//! share itself: ~29 probes often show 20 % loss as 10 % or less (3 failures or fewer in one window
//! of seven), and with the share alone a simulation of independent 20 % loss at a 500 ms interval
//! gave 0.13 false downs a minute against the 0.05 aimed at; with the bound 0.02 (at 10 % loss
//! 0.06 against 0.01). A clean window keeps exactly `fall`, so a dead endpoint that had been
//! healthy is removed as fast as before; a flaky endpoint that dies is removed after at most
//! `(2 × fall − fall)` more failures, which fast confirmation runs at `confirm_interval`. `rise`
//! is not adapted: a down endpoint that answers most probes should come back as fast as
//! configured.

use std::fmt;
use std::time::Duration;

/// Probes of an up endpoint the loss-aware fall remembers (one bit each).
pub const WINDOW: u32 = 32;
/// Fewest remembered probes before a failure streak for the loss-aware fall to estimate a failure
/// rate from; with fewer, plain `fall` applies.
pub const MIN_SAMPLES: u32 = 8;
/// The false "down" verdicts per minute the loss-aware fall aims below for an endpoint whose probes
/// fail independently at the observed rate: `p^k × probes per minute` (one every 20 minutes; each
/// costs two DNS writes, a removal and a re-add).
pub const FALSE_DOWNS_PER_MINUTE: f64 = 0.05;
/// The loss-aware fall never requires more than this many times `fall` failures in a row.
pub const ADAPTIVE_FALL_FACTOR: u32 = 2;
/// Standard errors above the observed share of failures at which the loss-aware fall takes the
/// failure rate: the upper end of the Wilson score interval (one-sided, ~84 %). At `fall = 3`
/// and a 500 ms interval, from 29 remembered probes: 0 failures keep 3; 1 or 2 need 4; 3 need 5;
/// 4 or more need the cap, 6.
pub const RATE_Z: f64 = 1.0;

/// The upper end of the Wilson score interval for `failures` of `n` trials at `z` standard errors
/// (E. B. Wilson, 1927): `(p̂ + z²/2n + z·√(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n)` with
/// `p̂ = failures / n`; 0 when nothing failed (a clean window is not loss), 1 when `n` is 0.
fn wilson_upper(failures: u32, n: u32, z: f64) -> f64 {
    if failures == 0 {
        return 0.0;
    }
    if n == 0 {
        return 1.0;
    }
    let n = f64::from(n);
    let share = f64::from(failures) / n;
    let z2 = z * z;
    let spread = z * (share * (1.0 - share) / n + z2 / (4.0 * n * n)).sqrt();
    ((share + z2 / (2.0 * n) + spread) / (1.0 + z2 / n)).min(1.0)
}

/// What the checks currently say about an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Health {
    /// No verdict yet (fewer than `rise` successes or `fall` failures in a row since start).
    Unknown,
    /// Serving.
    Up,
    /// Not serving.
    Down,
}

impl Health {
    /// The verdict as the status and logs spell it: `unknown`, `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: Health,
    /// After.
    pub to: Health,
}

/// Fall/rise hysteresis plus simple latency statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthMachine {
    state: Health,
    fall: u32,
    rise: u32,
    successes: u32,
    failures: u32,
    last_latency: Option<Duration>,
    /// Exponentially weighted moving average of successful probes' latency.
    avg_latency: Option<Duration>,
    last_detail: String,
    /// Loss-aware fall: the nominal probe interval the probes per minute are derived from; `None`:
    /// plain `fall`.
    adaptive_interval: Option<Duration>,
    /// Outcomes of the last probes observed while up, newest in bit 0; 1 = failed. The failures of a
    /// streak that became a "down" verdict are dropped from it.
    window: u32,
    /// Valid bits in `window` (at most [`WINDOW`]).
    window_len: u32,
    /// Failures in a row the current streak needs for "down" (`fall`, or more once the loss-aware
    /// fall has judged the endpoint flaky when the streak reached `fall`).
    fall_needed: u32,
}

impl HealthMachine {
    /// A machine in [`Health::Unknown`]. `fall` and `rise` are clamped to at least 1.
    pub fn new(fall: u32, rise: u32) -> Self {
        HealthMachine {
            state: Health::Unknown,
            fall: fall.max(1),
            rise: rise.max(1),
            successes: 0,
            failures: 0,
            last_latency: None,
            avg_latency: None,
            last_detail: String::new(),
            adaptive_interval: None,
            window: 0,
            window_len: 0,
            fall_needed: fall.max(1),
        }
    }

    /// This machine with the loss-aware fall (see the module documentation) on for an endpoint probed
    /// every `interval`, or off with `None`. Keeps the verdict, the streaks and the remembered
    /// probes, so a reload can switch it.
    pub fn with_adaptive_fall(self, interval: Option<Duration>) -> Self {
        HealthMachine {
            adaptive_interval: interval.filter(|i| !i.is_zero()),
            ..self
        }
    }

    /// Whether the loss-aware fall is on.
    pub fn adaptive_fall(&self) -> bool {
        self.adaptive_interval.is_some()
    }

    /// Failures in a row the current streak needs to mark the endpoint down: `fall`, or more while
    /// the loss-aware fall holds the endpoint for flaky.
    pub fn fall_needed(&self) -> u32 {
        if self.failures >= self.fall {
            self.fall_needed
        } else {
            self.fall
        }
    }

    /// The failure rate of the remembered probes before the current streak of `streak` failures,
    /// taken high ([`wilson_upper`] at [`RATE_Z`]; 0 when none of them failed), or `None` with fewer
    /// than [`MIN_SAMPLES`] of them.
    fn failure_rate_before(&self, streak: u32) -> Option<f64> {
        let n = self.window_len.checked_sub(streak)?;
        if n < MIN_SAMPLES {
            return None;
        }
        let before = self.window.checked_shr(streak).unwrap_or(0);
        Some(wilson_upper(before.count_ones(), n, RATE_Z))
    }

    /// The streak the loss-aware fall requires once a streak reaches `fall`: the smallest
    /// `k` in `fall ..= ADAPTIVE_FALL_FACTOR × fall` with `p^k × probes per minute <
    /// FALSE_DOWNS_PER_MINUTE`, or the cap when none is.
    fn required_fall(&self) -> u32 {
        let Some(interval) = self.adaptive_interval else {
            return self.fall;
        };
        let Some(p) = self.failure_rate_before(self.fall) else {
            return self.fall;
        };
        let per_minute = 60.0 / interval.as_secs_f64();
        let cap = self.fall.saturating_mul(ADAPTIVE_FALL_FACTOR);
        (self.fall..=cap)
            .find(|&k| {
                p.powi(i32::try_from(k).unwrap_or(i32::MAX)) * per_minute < FALSE_DOWNS_PER_MINUTE
            })
            .unwrap_or(cap)
    }

    /// Remembers one outcome of an up endpoint.
    fn remember(&mut self, ok: bool) {
        self.window = (self.window << 1) | u32::from(!ok);
        self.window_len = (self.window_len + 1).min(WINDOW);
    }

    /// A machine that already holds a verdict (one-shot `plan`; a probe loop's pacer after a
    /// reload).
    pub fn with_state(fall: u32, rise: u32, state: Health) -> Self {
        HealthMachine {
            state,
            ..Self::new(fall, rise)
        }
    }

    /// The current verdict.
    pub fn state(&self) -> Health {
        self.state
    }

    /// The thresholds this machine runs with.
    pub fn thresholds(&self) -> (u32, u32) {
        (self.fall, self.rise)
    }

    /// Latency of the last probe, successful or not.
    pub fn last_latency(&self) -> Option<Duration> {
        self.last_latency
    }

    /// Moving average latency of successful probes.
    pub fn avg_latency(&self) -> Option<Duration> {
        self.avg_latency
    }

    /// What the last probe said.
    pub fn last_detail(&self) -> &str {
        &self.last_detail
    }

    /// Not solidly up: down, unknown, or up but with failed probes since its last success (it may be
    /// about to go down).
    pub fn in_doubt(&self) -> bool {
        self.state != Health::Up || self.failures > 0
    }

    /// The other verdict the current streak leads to, with the results in a row so far and the
    /// number needed: an up endpoint failing (`Down`, failures, [`Self::fall_needed`]), a down one
    /// answering (`Up`, successes, `rise`), an unknown one either way; `None` when the results
    /// agree with the verdict.
    pub fn heading(&self) -> Option<(Health, u32, u32)> {
        match self.state {
            Health::Up if self.failures > 0 => {
                Some((Health::Down, self.failures, self.fall_needed()))
            }
            Health::Down if self.successes > 0 => Some((Health::Up, self.successes, self.rise)),
            Health::Unknown if self.successes > 0 => Some((Health::Up, self.successes, self.rise)),
            Health::Unknown if self.failures > 0 => {
                Some((Health::Down, self.failures, self.fall_needed()))
            }
            _ => None,
        }
    }

    /// Consecutive successes and failures so far.
    pub fn streaks(&self) -> (u32, u32) {
        (self.successes, self.failures)
    }

    /// Feeds one probe result; returns the transition if the verdict changed.
    pub fn observe(&mut self, ok: bool, latency: Duration, detail: &str) -> Option<Transition> {
        self.last_latency = Some(latency);
        detail.clone_into(&mut self.last_detail);
        let from = self.state;
        if from == Health::Up {
            self.remember(ok);
        }
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            self.avg_latency = Some(match self.avg_latency {
                None => latency,
                Some(avg) => (avg * 7 + latency) / 8,
            });
            if self.state != Health::Up && self.successes >= self.rise {
                self.state = Health::Up;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures == self.fall {
                self.fall_needed = if from == Health::Up {
                    self.required_fall()
                } else {
                    self.fall
                };
            }
            if self.state != Health::Down && self.failures >= self.fall_needed() {
                if from == Health::Up {
                    // These failures became a verdict: they say nothing about intermittent loss.
                    let streak = self.failures.min(self.window_len);
                    self.window = self.window.checked_shr(streak).unwrap_or(0);
                    self.window_len -= streak;
                }
                self.state = Health::Down;
            }
        }
        (from != self.state).then_some(Transition {
            from,
            to: self.state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn heading_shows_the_streak_towards_another_verdict() {
        let mut m = HealthMachine::new(3, 2);
        assert_eq!(m.heading(), None);
        feed(&mut m, &[true]);
        assert_eq!(m.heading(), Some((Health::Up, 1, 2)));
        feed(&mut m, &[true]);
        assert_eq!(m.heading(), None, "up, and the results agree");
        feed(&mut m, &[false, false]);
        assert_eq!(m.heading(), Some((Health::Down, 2, 3)));
        feed(&mut m, &[false]);
        assert_eq!(m.state(), Health::Down);
        assert_eq!(m.heading(), None);
        feed(&mut m, &[true]);
        assert_eq!(m.heading(), Some((Health::Up, 1, 2)));
        let mut u = HealthMachine::new(3, 2);
        feed(&mut u, &[false]);
        assert_eq!(u.heading(), Some((Health::Down, 1, 3)));
    }

    fn feed(m: &mut HealthMachine, results: &[bool]) -> Vec<Transition> {
        results
            .iter()
            .filter_map(|&ok| m.observe(ok, MS, ""))
            .collect()
    }

    #[test]
    fn unknown_until_first_verdict() {
        let mut m = HealthMachine::new(3, 2);
        assert_eq!(feed(&mut m, &[true]), vec![]);
        assert_eq!(m.state(), Health::Unknown);
        assert_eq!(
            feed(&mut m, &[true]),
            vec![Transition {
                from: Health::Unknown,
                to: Health::Up
            }]
        );
        let mut m = HealthMachine::new(3, 2);
        feed(&mut m, &[false, false]);
        assert_eq!(m.state(), Health::Unknown);
        feed(&mut m, &[false]);
        assert_eq!(m.state(), Health::Down);
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let mut m = HealthMachine::new(3, 2);
        feed(&mut m, &[true, true]);
        assert_eq!(feed(&mut m, &[false, false, true, false, false]), vec![]);
        assert_eq!(m.state(), Health::Up);
        assert_eq!(
            feed(&mut m, &[false]),
            vec![Transition {
                from: Health::Up,
                to: Health::Down
            }]
        );
    }

    #[test]
    fn rise_needs_consecutive_successes() {
        let mut m = HealthMachine::new(1, 3);
        feed(&mut m, &[false]);
        assert_eq!(m.state(), Health::Down);
        assert_eq!(feed(&mut m, &[true, true, false, true, true]), vec![]);
        assert_eq!(m.state(), Health::Down);
        assert_eq!(feed(&mut m, &[true]).len(), 1);
        assert_eq!(m.state(), Health::Up);
    }

    #[test]
    fn one_transition_per_real_change_even_with_noise() {
        // Alternating results never satisfy fall=2/rise=2 from Up: no flapping.
        let mut m = HealthMachine::new(2, 2);
        feed(&mut m, &[true, true]);
        let noise: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
        assert_eq!(feed(&mut m, &noise), vec![]);
    }

    #[test]
    fn in_doubt_unless_up_without_failures() {
        let mut m = HealthMachine::new(3, 1);
        assert!(m.in_doubt(), "unknown is not solidly up");
        feed(&mut m, &[true]);
        assert!(!m.in_doubt());
        feed(&mut m, &[false]);
        assert!(m.in_doubt());
        feed(&mut m, &[true]);
        assert!(!m.in_doubt());
        feed(&mut m, &[false, false, false]);
        assert_eq!(m.state(), Health::Down);
        assert!(m.in_doubt());
    }

    /// A seeded stream of probe outcomes, each failing with probability `percent` / 100
    /// independently (splitmix64).
    fn iid(seed: u64, percent: u64, n: usize) -> Vec<bool> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                z % 100 >= percent
            })
            .collect()
    }

    fn downs(m: &mut HealthMachine, results: &[bool]) -> usize {
        feed(m, results)
            .iter()
            .filter(|t| t.to == Health::Down)
            .count()
    }

    const HALF_SECOND: Option<Duration> = Some(Duration::from_millis(500));

    #[test]
    fn adaptive_fall_cuts_false_downs_under_random_loss() {
        for seed in [1, 2, 3] {
            let loss = iid(seed, 20, 10_000);
            let mut plain = HealthMachine::new(3, 2);
            let mut adaptive = HealthMachine::new(3, 2).with_adaptive_fall(HALF_SECOND);
            let (plain, adaptive) = (downs(&mut plain, &loss), downs(&mut adaptive, &loss));
            // Plain fall = 3: ~10,000 × 0.8 × 0.2 × 0.2² ≈ 64 false downs; the loss-aware fall,
            // with p taken high from ~29 probes, a tenth of that or less (seeds 1-3: 6 of 58,
            // 2 of 54, 1 of 56; 15 of 58 for seed 1 with the share itself).
            assert!(
                plain >= 40,
                "seed {seed}: plain fall gave only {plain} downs"
            );
            assert!(
                adaptive * 3 <= plain,
                "seed {seed}: adaptive fall gave {adaptive} downs, plain {plain}"
            );
        }
    }

    #[test]
    fn adaptive_fall_keeps_false_downs_under_its_aim() {
        // 120,000 probes at 500 ms: 1,000 minutes, and the aim is at most 50 false downs. Taking
        // the failure rate as the share of the ~29 remembered probes gave 128 at 20 % loss
        // (seed 1); its upper bound gives 23-25 at 20 % and 8-12 at 10 %.
        let minutes = 1_000.0;
        for (seed, percent) in [(1, 20), (2, 20), (3, 10), (4, 10)] {
            let loss = iid(seed, percent, 120_000);
            let mut m = HealthMachine::new(3, 2).with_adaptive_fall(HALF_SECOND);
            let downs = downs(&mut m, &loss);
            assert!(
                downs as f64 <= FALSE_DOWNS_PER_MINUTE * minutes,
                "seed {seed}, {percent} % loss: {downs} false downs in {minutes} minutes"
            );
        }
    }

    #[test]
    fn the_rate_is_taken_at_the_upper_bound_of_the_window() {
        // Up, then 29 probes with `failures` of them failed (never two in a row), then a streak.
        for (failures, needed) in [(0, 3), (1, 4), (2, 4), (3, 5), (4, 6), (5, 6)] {
            let mut m = HealthMachine::new(3, 2).with_adaptive_fall(HALF_SECOND);
            feed(&mut m, &[true, true]);
            let window: Vec<bool> = (0..29).map(|i| !(i % 4 == 1 && i / 4 < failures)).collect();
            assert_eq!(window.iter().filter(|ok| !**ok).count(), failures);
            assert_eq!(feed(&mut m, &window), vec![]);
            let mut streak = 0;
            while m.state() == Health::Up && streak < 10 {
                m.observe(false, MS, "refused");
                streak += 1;
            }
            assert_eq!(
                streak, needed,
                "{failures} failures of 29 before the streak"
            );
        }
        assert!((wilson_upper(6, 29, RATE_Z) - 0.291).abs() < 0.001);
        assert_eq!(wilson_upper(0, 29, RATE_Z), 0.0);
        assert_eq!(wilson_upper(3, 0, RATE_Z), 1.0);
        // z = 0 is the share itself.
        assert!((wilson_upper(6, 29, 0.0) - 6.0 / 29.0).abs() < 1e-12);
    }

    #[test]
    fn adaptive_fall_off_is_plain_fall() {
        let loss = iid(7, 20, 2_000);
        let mut plain = HealthMachine::new(3, 2);
        let mut off = HealthMachine::new(3, 2).with_adaptive_fall(None);
        assert!(!off.adaptive_fall());
        assert_eq!(feed(&mut plain, &loss), feed(&mut off, &loss));
    }

    #[test]
    fn clean_endpoint_that_dies_goes_down_after_exactly_fall() {
        for fall in [1, 2, 3, 5] {
            let mut m = HealthMachine::new(fall, 2).with_adaptive_fall(HALF_SECOND);
            feed(&mut m, &[true; 40]);
            assert_eq!(feed(&mut m, &vec![false; fall as usize - 1]), vec![]);
            assert_eq!(m.fall_needed(), fall);
            assert_eq!(downs(&mut m, &[false]), 1, "fall {fall}");
            // Back up, and dead again: the failures that made the first verdict do not count as
            // loss, so the second removal is as fast.
            feed(&mut m, &[true; 10]);
            assert_eq!(m.state(), Health::Up);
            assert_eq!(feed(&mut m, &vec![false; fall as usize - 1]), vec![]);
            assert_eq!(downs(&mut m, &[false]), 1, "fall {fall}, second death");
        }
    }

    #[test]
    fn flaky_endpoint_that_dies_goes_down_within_the_cap() {
        let fall = 3;
        // Up, then one failure in five for 30 probes: p ≈ 0.2 before the streak.
        let mut m = HealthMachine::new(fall, 2).with_adaptive_fall(HALF_SECOND);
        feed(&mut m, &[true, true]);
        let flaky: Vec<bool> = (0..30).map(|i| i % 5 != 0).collect();
        assert_eq!(feed(&mut m, &flaky), vec![]);
        let mut failures = 0;
        while m.state() == Health::Up {
            m.observe(false, MS, "refused");
            failures += 1;
            assert!(failures <= ADAPTIVE_FALL_FACTOR * fall, "still up");
        }
        // 6 failures of the 29 before the streak: the rate taken is 0.29 (Wilson, z = 1), and
        // 0.29^k × 120/min < 0.05 at no k up to the cap: 6.
        assert_eq!(failures, ADAPTIVE_FALL_FACTOR * fall);
        // Heavier loss: held at the cap, never longer.
        let mut m = HealthMachine::new(fall, 2).with_adaptive_fall(HALF_SECOND);
        feed(&mut m, &[true, true]);
        let lossy: Vec<bool> = (0..30).map(|i| i % 2 == 1).collect();
        feed(&mut m, &lossy);
        assert_eq!(m.state(), Health::Up);
        let mut failures = 0;
        while m.state() == Health::Up && failures < 100 {
            m.observe(false, MS, "refused");
            failures += 1;
        }
        assert_eq!(failures, ADAPTIVE_FALL_FACTOR * fall);
    }

    #[test]
    fn too_few_remembered_probes_keep_plain_fall() {
        let mut m = HealthMachine::new(3, 2).with_adaptive_fall(HALF_SECOND);
        // Up after two successes, then 1 failure in 5 probes: fewer than MIN_SAMPLES before the
        // streak.
        feed(&mut m, &[true, true, true, false, true, true, true]);
        assert_eq!(downs(&mut m, &[false, false, false]), 1);
    }

    #[test]
    fn adaptive_fall_survives_a_switch_and_keeps_state() {
        let mut m = HealthMachine::new(3, 2);
        feed(&mut m, &[true, true]);
        let m = m.with_adaptive_fall(HALF_SECOND);
        assert!(m.adaptive_fall());
        assert_eq!(m.state(), Health::Up);
        assert_eq!(m.thresholds(), (3, 2));
    }

    #[test]
    fn latency_average_tracks_successes_only() {
        let mut m = HealthMachine::new(1, 1);
        m.observe(true, Duration::from_millis(80), "ok");
        m.observe(false, Duration::from_millis(500), "timeout");
        assert_eq!(m.avg_latency(), Some(Duration::from_millis(80)));
        assert_eq!(m.last_latency(), Some(Duration::from_millis(500)));
        assert_eq!(m.last_detail(), "timeout");
    }
}
