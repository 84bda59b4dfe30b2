//! Per-endpoint health state machine (sans-I/O).
//!
//! An endpoint starts [`Health::Unknown`]. `rise` consecutive successes make it [`Health::Up`], `fall`
//! consecutive failures make it [`Health::Down`]; any other result resets the opposite streak. This
//! hysteresis is what keeps one real state change from causing several DNS changes (no flapping).

use std::fmt;
use std::time::Duration;

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

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        })
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
        }
    }

    /// A machine that already holds a verdict (used by one-shot `plan`).
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

    /// Consecutive successes and failures so far.
    pub fn streaks(&self) -> (u32, u32) {
        (self.successes, self.failures)
    }

    /// Feeds one probe result; returns the transition if the verdict changed.
    pub fn observe(&mut self, ok: bool, latency: Duration, detail: &str) -> Option<Transition> {
        self.last_latency = Some(latency);
        detail.clone_into(&mut self.last_detail);
        let from = self.state;
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
            if self.state != Health::Down && self.failures >= self.fall {
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
