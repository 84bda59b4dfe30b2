//! Flap damping: an endpoint whose agreed state keeps changing is kept out of DNS until it calms down.
//!
//! This is route flap damping as BGP routers do it (RFC 2439, "BGP Route Flap Damping", §2 and §4.2),
//! applied to endpoints instead of routes:
//! - each change of an endpoint's agreed state (up → down or down → up, and a first agreed state of
//!   down; unknown does not count) adds
//!   [`DampingConfig::penalty`] to its figure of merit, which decays exponentially with
//!   [`DampingConfig::half_life`];
//! - when the penalty exceeds [`DampingConfig::suppress`] the endpoint is *suppressed*: the planner
//!   keeps it out of the record set ([`super::Reason::Damped`]) even while it is up;
//! - once the penalty has decayed below [`DampingConfig::reuse`] it is reused (back in DNS if up);
//! - the penalty never exceeds the ceiling `reuse × 2^(max_suppress / half_life)` (RFC 2439 §4.2,
//!   "maximum hold down time"), so an endpoint that stops flapping is reused at most
//!   [`DampingConfig::max_suppress`] after its last change.
//!
//! Removing a suppressed endpoint never takes the service below `min_healthy`: the planner refills
//! from kept-out endpoints that are up before its all-down policy applies (see [`super::plan`]).
//!
//! Sans-I/O: every method takes `now`; [`Damping::next_wake`] says when the next reuse is due.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::Health;

/// Default penalty added per change of state (RFC 2439 examples and common router defaults).
pub const DEFAULT_PENALTY: f64 = 1000.0;
/// Default suppress threshold.
pub const DEFAULT_SUPPRESS: f64 = 2000.0;
/// Default reuse threshold.
pub const DEFAULT_REUSE: f64 = 750.0;
/// Default half-life of the penalty.
pub const DEFAULT_HALF_LIFE: Duration = Duration::from_secs(15 * 60);
/// Default longest suppression after an endpoint stops flapping.
pub const DEFAULT_MAX_SUPPRESS: Duration = Duration::from_secs(60 * 60);

/// `[service.damping]`: the damping parameters of one service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DampingConfig {
    /// Penalty added per change of agreed state.
    pub penalty: f64,
    /// Above this penalty the endpoint is suppressed.
    pub suppress: f64,
    /// Below this penalty a suppressed endpoint is reused. Less than `suppress`.
    pub reuse: f64,
    /// Time for the penalty to halve.
    pub half_life: Duration,
    /// Longest an endpoint stays suppressed after its last change (sets the penalty ceiling).
    pub max_suppress: Duration,
}

impl Default for DampingConfig {
    fn default() -> Self {
        DampingConfig {
            penalty: DEFAULT_PENALTY,
            suppress: DEFAULT_SUPPRESS,
            reuse: DEFAULT_REUSE,
            half_life: DEFAULT_HALF_LIFE,
            max_suppress: DEFAULT_MAX_SUPPRESS,
        }
    }
}

impl DampingConfig {
    /// Highest penalty kept: `reuse × 2^(max_suppress / half_life)` (RFC 2439 §4.2), so that the
    /// penalty decays below `reuse` within `max_suppress` of the last change.
    pub fn ceiling(&self) -> f64 {
        let halvings = self.max_suppress.as_secs_f64() / self.half_life.as_secs_f64();
        // Clamped: a huge ratio would overflow to infinity and never decay.
        (self.reuse * 2f64.powf(halvings.min(60.0))).max(self.suppress)
    }
}

/// One endpoint's damping figure, as the status shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    /// The decayed penalty now.
    pub penalty: f64,
    /// Kept out of DNS until the penalty decays below `reuse`.
    pub suppressed: bool,
    /// When it will be reused, while suppressed.
    pub reuse_at: Option<Instant>,
}

/// What damping did, for events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DampingEvent {
    /// The endpoint's penalty passed `suppress`: kept out of DNS.
    Suppressed {
        /// The endpoint.
        endpoint: IpAddr,
        /// Its penalty.
        penalty: f64,
        /// How long until reuse if it changes no more.
        for_at_most: Duration,
    },
    /// The endpoint's penalty decayed below `reuse`: it may be published again.
    Reused {
        /// The endpoint.
        endpoint: IpAddr,
        /// Its penalty.
        penalty: f64,
    },
}

impl std::fmt::Display for DampingEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DampingEvent::Suppressed {
                endpoint,
                penalty,
                for_at_most,
            } => write!(
                f,
                "{endpoint} flaps: damping penalty {penalty:.0} above suppress; kept out of DNS for up to {} unless it keeps changing",
                humantime::format_duration(Duration::from_secs(for_at_most.as_secs()))
            ),
            DampingEvent::Reused { endpoint, penalty } => write!(
                f,
                "{endpoint}: damping penalty decayed to {penalty:.0}, below reuse; published again while up"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Penalty at `at`.
    penalty: f64,
    at: Instant,
    suppressed: bool,
    /// Last agreed state that was up or down.
    last: Option<Health>,
}

/// The damping state of one service's endpoints.
#[derive(Debug, Clone)]
pub struct Damping {
    cfg: DampingConfig,
    entries: BTreeMap<IpAddr, Entry>,
}

impl Damping {
    /// No penalties yet.
    pub fn new(cfg: DampingConfig) -> Self {
        Damping {
            cfg,
            entries: BTreeMap::new(),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &DampingConfig {
        &self.cfg
    }

    fn decayed(&self, e: &Entry, now: Instant) -> f64 {
        let halvings =
            now.saturating_duration_since(e.at).as_secs_f64() / self.cfg.half_life.as_secs_f64();
        e.penalty * 0.5f64.powf(halvings)
    }

    /// When a suppressed entry's penalty falls to `reuse`: `at + half_life × log2(penalty / reuse)`.
    fn reuse_at(&self, e: &Entry) -> Instant {
        let halvings = (e.penalty / self.cfg.reuse).log2().max(0.0);
        e.at + self.cfg.half_life.mul_f64(halvings)
    }

    /// The agreed state of `endpoint` at `now`. A change between up and down adds the penalty;
    /// returns the suppression it starts, if any.
    pub fn observe(
        &mut self,
        now: Instant,
        endpoint: IpAddr,
        state: Health,
    ) -> Option<DampingEvent> {
        if state == Health::Unknown {
            return None;
        }
        let fresh = Entry {
            penalty: 0.0,
            at: now,
            suppressed: false,
            last: None,
        };
        let mut e = self.entries.get(&endpoint).copied().unwrap_or(fresh);
        // A first verdict of down counts as a change too: the endpoint was configured to serve.
        let changed = match e.last {
            Some(last) => last != state,
            None => state == Health::Down,
        };
        e.last = Some(state);
        let mut event = None;
        if changed {
            e.penalty = (self.decayed(&e, now) + self.cfg.penalty).min(self.cfg.ceiling());
            e.at = now;
            if !e.suppressed && e.penalty > self.cfg.suppress {
                e.suppressed = true;
                event = Some(DampingEvent::Suppressed {
                    endpoint,
                    penalty: e.penalty,
                    for_at_most: self.reuse_at(&e) - now,
                });
            }
        }
        self.entries.insert(endpoint, e);
        event
    }

    /// Reuses every suppressed endpoint whose penalty has decayed below `reuse` by `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<DampingEvent> {
        let due: Vec<IpAddr> = self
            .entries
            .iter()
            .filter(|(_, e)| e.suppressed && now >= self.reuse_at(e))
            .map(|(ip, _)| *ip)
            .collect();
        due.into_iter()
            .map(|endpoint| {
                let e = self.entries.get_mut(&endpoint).expect("listed above");
                e.suppressed = false;
                let e = *e;
                DampingEvent::Reused {
                    endpoint,
                    penalty: self.decayed(&e, now),
                }
            })
            .collect()
    }

    /// The suppressed endpoints and their penalty at `now`.
    pub fn suppressed(&self, now: Instant) -> BTreeMap<IpAddr, f64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.suppressed)
            .map(|(ip, e)| (*ip, self.decayed(e, now)))
            .collect()
    }

    /// Every endpoint with a penalty, as the status shows it.
    pub fn figures(&self, now: Instant) -> BTreeMap<IpAddr, Figure> {
        self.entries
            .iter()
            .map(|(ip, e)| {
                let figure = Figure {
                    penalty: self.decayed(e, now),
                    suppressed: e.suppressed,
                    reuse_at: e.suppressed.then(|| self.reuse_at(e)),
                };
                (*ip, figure)
            })
            .collect()
    }

    /// When [`Damping::poll`] should run next: the earliest reuse.
    pub fn next_wake(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.suppressed)
            .map(|e| self.reuse_at(e))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    fn cfg() -> DampingConfig {
        DampingConfig {
            half_life: Duration::from_secs(60),
            max_suppress: Duration::from_secs(240),
            ..DampingConfig::default()
        }
    }

    #[test]
    fn one_failover_is_never_suppressed_with_the_defaults() {
        // suppress = 2 × penalty and any time between two changes decays the first: a down and the
        // up that follows stay below suppress, however quickly the up comes.
        let mut d = Damping::new(DampingConfig::default());
        let t0 = Instant::now();
        assert_eq!(d.observe(t0, ip(), Health::Up), None);
        assert_eq!(
            d.observe(t0 + Duration::from_secs(3), ip(), Health::Down),
            None
        );
        assert_eq!(
            d.observe(t0 + Duration::from_secs(5), ip(), Health::Up),
            None
        );
        assert!(d.suppressed(t0 + Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn flapping_suppresses_until_the_penalty_decays_below_reuse() {
        let mut d = Damping::new(cfg());
        let t0 = Instant::now();
        d.observe(t0, ip(), Health::Up);
        let mut t = t0;
        let mut events = Vec::new();
        for i in 0..6 {
            t += Duration::from_secs(2);
            let h = if i % 2 == 0 { Health::Down } else { Health::Up };
            events.extend(d.observe(t, ip(), h));
        }
        assert!(
            matches!(events[..], [DampingEvent::Suppressed { .. }]),
            "{events:?}"
        );
        let figure = d.figures(t)[&ip()];
        assert!(figure.suppressed);
        assert!(figure.penalty <= cfg().ceiling() + 1e-9);
        let reuse_at = d.next_wake().unwrap();
        assert!(d.poll(reuse_at - Duration::from_millis(1)).is_empty());
        let reused = d.poll(reuse_at);
        assert!(
            matches!(reused[..], [DampingEvent::Reused { penalty, .. }] if penalty <= cfg().reuse + 1e-6)
        );
        assert!(d.suppressed(reuse_at).is_empty());
        assert_eq!(d.next_wake(), None);
        // Reused at most max_suppress after the last change.
        assert!(reuse_at <= t + cfg().max_suppress + Duration::from_millis(1));
    }

    #[test]
    fn unknown_is_no_change() {
        let mut d = Damping::new(cfg());
        let t0 = Instant::now();
        d.observe(t0, ip(), Health::Up);
        d.observe(t0, ip(), Health::Unknown);
        d.observe(t0, ip(), Health::Up);
        assert_eq!(d.figures(t0)[&ip()].penalty, 0.0);
    }
}
