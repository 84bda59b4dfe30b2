//! Selection: which of a service's up endpoints are published (`[service.select]`, issue 11).
//!
//! A selection policy keeps some *up* endpoints out of the record set, each with a [`Reason`]; the
//! service core hands them to the planner as [`super::Doubts::held_out`]. The planner puts held-out
//! endpoints back (published first, then configured order) before the all-down policy applies, so no
//! selection ever takes a service below `min_healthy` while enough endpoints are up.
//!
//! Modes ([`Mode`]):
//! - `all` (the default): every up endpoint.
//! - `fastest`: the `count` best up endpoints by a latency [`Score`] from this node's own probes:
//!   first whether the last successful probe took less than `good_enough`, then the mean of the
//!   last [`WINDOW`] successful probes, then a long-term mean (exponentially weighted,
//!   [`LONG_TERM_WEIGHT`], seeded at start from the endpoint history: [`Selector::seed_long_term`]).
//!   Failed probes are no samples: failures are the health machine's to
//!   judge (`fall`), so one lost probe does not swap an endpoint out.
//!   Sticky: a published endpoint keeps its place while it is up and good enough, whatever its
//!   rank, so a shuffle of ranks among good-enough endpoints changes nothing. Only the free places go
//!   to the best of the rest, and among endpoints that are not good enough a published one goes
//!   first: an unpublished endpoint must be good enough to take a slow one's place, so ranks
//!   shuffling among slow endpoints change nothing either.
//! - `priority`: tiers of endpoints (active/standby). The fewest leading tiers whose up endpoints
//!   number at least `min_active` are published: tier 1 alone while it has `min_active` up, tiers 1
//!   and 2 when it has fewer, and so on. Failing over to more tiers is immediate; failing back to
//!   fewer waits until the smaller set has had `min_active` up for `failback_after` without a break
//!   (hold-down). Until every endpoint of the tiers it would publish has a first verdict (just after
//!   start or reload), the selection counts unknown endpoints of those tiers as if up, so a restart
//!   does not publish standby tiers while the first tier is still being probed. That wait ends with
//!   the service core's settle bound ([`super::service::Settings::settle_bound`]): an endpoint still
//!   without a verdict past it (*unsettled*, [`Selector::observe_unsettled`]) counts as not up, so an
//!   endpoint that never settles cannot keep the standby tiers out for ever.
//!
//! Canaries (`canaries`, any mode): endpoints that are not ranked and belong to no tier. While a
//! canary is up it is published and replaces one selected endpoint: the last in the selection's
//! order, which lists published endpoints before unpublished ones (so an endpoint not yet in DNS
//! gives way first, and a replacement does not move from one probe to the next), and within each the
//! worst ranked (fastest: the slowest; priority: the last of the last active tier; all: the last in
//! configured order). A canary never replaces the last selected endpoint: with a single one left, the
//! canary is published beside it. Kill switch: when more than `canary_max_failing` canaries are
//! agreed down, every canary is withdrawn ([`Reason::CanaryWithdrawn`]) until all of them are agreed
//! up again (or the configuration is reloaded).
//!
//! Selection reads the agreed verdicts (before operator overrides): a drained endpoint still counts
//! in its tier and in the ranking; the overrides then apply on top of the selection.
//!
//! Sans-I/O: every method takes `now`; [`Selector::next_wake`] says when a failback is due.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::{Health, Reason};

/// Successful probes in the windowed mean of `fastest`.
pub const WINDOW: usize = 10;
/// Weight of a new sample in the long-term mean of `fastest` (exponentially weighted moving
/// average: about the last 1 / weight = 50 samples count).
pub const LONG_TERM_WEIGHT: f64 = 0.02;
/// Default `good_enough` of `mode = "fastest"`.
pub const DEFAULT_GOOD_ENOUGH: Duration = Duration::from_millis(200);
/// Default `min_active` of `mode = "priority"`.
pub const DEFAULT_MIN_ACTIVE: usize = 1;
/// Default `failback_after` of `mode = "priority"`.
pub const DEFAULT_FAILBACK_AFTER: Duration = Duration::from_secs(60);
/// Default `canary_max_failing`: one failing canary withdraws them all.
pub const DEFAULT_CANARY_MAX_FAILING: usize = 0;
/// Weight of an endpoint that `weights` does not list, when the service has weights. Route 53
/// weights run from 0 to 255; an address gets its weight's share of the sum of the weights of the
/// published addresses
/// (<https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/routing-policy-weighted.html>).
pub const DEFAULT_WEIGHT: u8 = 1;
/// Largest weight Route 53 takes.
pub const MAX_WEIGHT: u64 = 255;

/// How the endpoints to publish are chosen among the up ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Every up endpoint.
    All,
    /// The `count` best by latency, sticky while good enough.
    Fastest {
        /// How many to publish.
        count: usize,
        /// A published endpoint whose last successful probe took less than this keeps its place.
        good_enough: Duration,
    },
    /// Active/standby tiers.
    Priority {
        /// The tiers, first = most preferred; every non-canary endpoint in exactly one.
        tiers: Vec<Vec<IpAddr>>,
        /// Fewest up endpoints the published tiers must have before fewer tiers are used.
        min_active: usize,
        /// How long the smaller set of tiers must have had `min_active` up before failing back.
        failback_after: Duration,
    },
}

/// `[service.select]`: a service's selection policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectConfig {
    /// The mode.
    pub mode: Mode,
    /// Canary endpoints (each also a configured endpoint), in configured order.
    pub canaries: Vec<IpAddr>,
    /// More canaries agreed down than this withdraws every canary.
    pub canary_max_failing: usize,
}

impl Default for SelectConfig {
    fn default() -> Self {
        SelectConfig {
            mode: Mode::All,
            canaries: Vec::new(),
            canary_max_failing: DEFAULT_CANARY_MAX_FAILING,
        }
    }
}

/// What selection did, for events and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectEvent {
    /// Priority: more tiers are published (fewer than `min_active` up in the tiers before).
    FailedOver {
        /// Tiers published before (`0`: none decided yet).
        from: usize,
        /// Tiers published now.
        to: usize,
    },
    /// Priority: fewer tiers are published, after the hold-down.
    FailedBack {
        /// Tiers published before.
        from: usize,
        /// Tiers published now.
        to: usize,
        /// The hold-down that passed.
        after: Duration,
    },
    /// The canary kill switch tripped: every canary is withdrawn.
    CanariesWithdrawn {
        /// Canaries agreed down.
        failing: BTreeSet<IpAddr>,
        /// The configured `canary_max_failing`.
        max: usize,
    },
    /// Every canary is up again: the kill switch is reset.
    CanariesRestored,
}

impl fmt::Display for SelectEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectEvent::FailedOver { from, to } => write!(
                f,
                "priority: too few endpoints up in tiers 1..{from}; publishing tiers 1..{to}"
            ),
            SelectEvent::FailedBack { from, to, after } => write!(
                f,
                "priority: tiers 1..{to} have been up for failback_after={}; publishing them only (was tiers 1..{from})",
                humantime::format_duration(*after)
            ),
            SelectEvent::CanariesWithdrawn { failing, max } => {
                let list: Vec<String> = failing.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "canary kill switch: {} canaries failing ({}), more than canary_max_failing={max}; every canary withdrawn until all pass again",
                    failing.len(),
                    list.join(", ")
                )
            }
            SelectEvent::CanariesRestored => {
                f.write_str("canary kill switch reset: every canary passes again")
            }
        }
    }
}

/// The latency figures of one endpoint, from this node's probes.
#[derive(Debug, Clone, Default, PartialEq)]
struct Samples {
    /// The latency of the last successful probe.
    last: Option<Duration>,
    /// The last [`WINDOW`] successful latencies, seconds.
    window: VecDeque<f64>,
    /// Long-term mean of successful latencies, seconds.
    long: Option<f64>,
}

/// The ranking key of an endpoint under `fastest`: lower is better.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// No successful probe yet, or the last one took `good_enough` or more.
    pub slow: bool,
    /// Mean of the last [`WINDOW`] successful latencies, seconds (infinite without samples).
    pub window_mean: f64,
    /// Long-term mean, seconds (infinite without samples).
    pub long_mean: f64,
}

impl Score {
    fn cmp(&self, other: &Score) -> std::cmp::Ordering {
        self.slow
            .cmp(&other.slow)
            .then(self.window_mean.total_cmp(&other.window_mean))
            .then(self.long_mean.total_cmp(&other.long_mean))
    }
}

/// The selection state of one service. See the module documentation.
#[derive(Debug, Clone)]
pub struct Selector {
    cfg: SelectConfig,
    samples: BTreeMap<IpAddr, Samples>,
    /// Priority: tiers published (`None` until every endpoint of the tiers to publish has a verdict).
    level: Option<usize>,
    /// Priority: for each number of leading tiers k (index k - 1), since when they have had
    /// `min_active` up without a break.
    enough_since: Vec<Option<Instant>>,
    /// The agreed states last seen.
    agreed: BTreeMap<IpAddr, Health>,
    /// The canary kill switch is tripped.
    canaries_withdrawn: bool,
    /// Endpoints without a verdict past the service core's settle bound: not hoped up.
    unsettled: BTreeSet<IpAddr>,
}

impl Selector {
    /// A selector with no samples, no tier decided and the kill switch reset.
    pub fn new(cfg: SelectConfig) -> Self {
        let tiers = match &cfg.mode {
            Mode::Priority { tiers, .. } => tiers.len(),
            _ => 0,
        };
        Selector {
            cfg,
            samples: BTreeMap::new(),
            level: None,
            enough_since: vec![None; tiers],
            agreed: BTreeMap::new(),
            canaries_withdrawn: false,
            unsettled: BTreeSet::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SelectConfig {
        &self.cfg
    }

    /// Whether the canary kill switch is tripped.
    pub fn canaries_withdrawn(&self) -> bool {
        self.canaries_withdrawn
    }

    /// Priority: the number of leading tiers published at `now` (`None` in other modes).
    pub fn active_tiers(&self, now: Instant) -> Option<usize> {
        matches!(self.cfg.mode, Mode::Priority { .. }).then(|| self.level_at(now))
    }

    /// One probe result of this node: only a successful probe is a latency sample.
    pub fn observe_probe(&mut self, endpoint: IpAddr, ok: bool, latency: Duration) {
        if !ok {
            return;
        }
        let s = self.samples.entry(endpoint).or_default();
        s.last = Some(latency);
        let secs = latency.as_secs_f64();
        if s.window.len() == WINDOW {
            s.window.pop_front();
        }
        s.window.push_back(secs);
        s.long = Some(match s.long {
            Some(m) => m + LONG_TERM_WEIGHT * (secs - m),
            None => secs,
        });
    }

    /// Seeds the long-term mean of `endpoint` with `mean` (from the endpoint history kept over a
    /// restart) unless this selector has samples of it already. Until its first successful probe,
    /// the endpoint stays `slow` with no windowed mean, so among endpoints without fresh samples
    /// the seeded mean decides the ranking; afterwards the mean moves on from the seed.
    pub fn seed_long_term(&mut self, endpoint: IpAddr, mean: Duration) {
        let s = self.samples.entry(endpoint).or_default();
        if s.long.is_none() {
            s.long = Some(mean.as_secs_f64());
        }
    }

    /// The ranking score of `endpoint` under `good_enough`.
    pub fn score(&self, endpoint: IpAddr, good_enough: Duration) -> Score {
        let Some(s) = self.samples.get(&endpoint) else {
            return Score {
                slow: true,
                window_mean: f64::INFINITY,
                long_mean: f64::INFINITY,
            };
        };
        let window_mean = if s.window.is_empty() {
            f64::INFINITY
        } else {
            s.window.iter().sum::<f64>() / s.window.len() as f64
        };
        Score {
            slow: s.last.is_none_or(|l| l >= good_enough),
            window_mean,
            long_mean: s.long.unwrap_or(f64::INFINITY),
        }
    }

    /// New agreed states: moves the priority level (failover is immediate, failback waits for the
    /// hold-down) and the canary kill switch. Returns what changed.
    pub fn observe_agreed(
        &mut self,
        now: Instant,
        agreed: &BTreeMap<IpAddr, Health>,
    ) -> Vec<SelectEvent> {
        self.agreed.clone_from(agreed);
        let mut events = Vec::new();
        if let Mode::Priority { .. } = self.cfg.mode {
            for k in 1..=self.enough_since.len() {
                let enough = self.up_in(k, false) >= self.min_active();
                let since = &mut self.enough_since[k - 1];
                match (enough, *since) {
                    (true, None) => *since = Some(now),
                    (false, _) => *since = None,
                    _ => {}
                }
            }
            events.extend(self.commit_level(now));
        }
        if !self.cfg.canaries.is_empty() {
            let failing: BTreeSet<IpAddr> = self
                .cfg
                .canaries
                .iter()
                .copied()
                .filter(|ip| self.agreed.get(ip) == Some(&Health::Down))
                .collect();
            let all_up = self
                .cfg
                .canaries
                .iter()
                .all(|ip| self.agreed.get(ip) == Some(&Health::Up));
            if !self.canaries_withdrawn && failing.len() > self.cfg.canary_max_failing {
                self.canaries_withdrawn = true;
                events.push(SelectEvent::CanariesWithdrawn {
                    failing,
                    max: self.cfg.canary_max_failing,
                });
            } else if self.canaries_withdrawn && all_up {
                self.canaries_withdrawn = false;
                events.push(SelectEvent::CanariesRestored);
            }
        }
        events
    }

    /// The endpoints the service core reports unsettled now (no verdict within its settle bound,
    /// [`super::service::Settings::settle_bound`]). Priority: while the first tiers wait for first
    /// verdicts, an unsettled endpoint is no longer hoped up and no longer waited for, so the level
    /// is decided without it. Returns what changed.
    pub fn observe_unsettled(
        &mut self,
        now: Instant,
        unsettled: &BTreeSet<IpAddr>,
    ) -> Vec<SelectEvent> {
        if self.unsettled == *unsettled {
            return Vec::new();
        }
        self.unsettled.clone_from(unsettled);
        self.commit_level(now).into_iter().collect()
    }

    /// Time passed: a failback whose hold-down ended at or before `now` takes effect.
    pub fn poll(&mut self, now: Instant) -> Vec<SelectEvent> {
        self.commit_level(now).into_iter().collect()
    }

    /// When the next failback hold-down ends, if one is running.
    pub fn next_wake(&self) -> Option<Instant> {
        let Mode::Priority { failback_after, .. } = self.cfg.mode else {
            return None;
        };
        let level = self.level?;
        self.enough_since
            .iter()
            .take(level.saturating_sub(1))
            .flatten()
            .map(|since| *since + failback_after)
            .min()
    }

    fn min_active(&self) -> usize {
        match self.cfg.mode {
            Mode::Priority { min_active, .. } => min_active,
            _ => 0,
        }
    }

    fn tiers(&self) -> &[Vec<IpAddr>] {
        match &self.cfg.mode {
            Mode::Priority { tiers, .. } => tiers,
            _ => &[],
        }
    }

    /// Up endpoints in the first `k` tiers; with `hopeful`, unknown ones that are not unsettled
    /// count as up.
    fn up_in(&self, k: usize, hopeful: bool) -> usize {
        self.tiers()
            .iter()
            .take(k)
            .flatten()
            .filter(
                |ip| match self.agreed.get(ip).copied().unwrap_or(Health::Unknown) {
                    Health::Up => true,
                    Health::Unknown => hopeful && !self.unsettled.contains(ip),
                    Health::Down => false,
                },
            )
            .count()
    }

    /// The fewest leading tiers with `min_active` up (all tiers when none has).
    fn wanted(&self, hopeful: bool) -> usize {
        let n = self.tiers().len();
        (1..=n)
            .find(|k| self.up_in(*k, hopeful) >= self.min_active())
            .unwrap_or(n)
    }

    /// The tiers published at `now`, by the committed level and the hold-downs that have passed.
    fn level_at(&self, now: Instant) -> usize {
        let Mode::Priority { failback_after, .. } = self.cfg.mode else {
            return 0;
        };
        let Some(level) = self.level else {
            return self.wanted(true);
        };
        let want = self.wanted(false);
        if want >= level {
            return want;
        }
        (want..level)
            .find(|k| self.enough_since[k - 1].is_some_and(|t| now >= t + failback_after))
            .unwrap_or(level)
    }

    /// Commits the level at `now`, reporting a failover or failback.
    fn commit_level(&mut self, now: Instant) -> Option<SelectEvent> {
        let Mode::Priority {
            failback_after,
            ref tiers,
            ..
        } = self.cfg.mode
        else {
            return None;
        };
        if self.level.is_none() {
            // Decided once every endpoint of the tiers it would publish has a verdict or is
            // unsettled (no verdict within the settle bound: it will not get one soon).
            let hopeful = self.wanted(true);
            let settled = tiers.iter().take(hopeful).flatten().all(|ip| {
                self.unsettled.contains(ip)
                    || self.agreed.get(ip).is_some_and(|h| *h != Health::Unknown)
            });
            if !settled {
                return None;
            }
            let to = self.wanted(false);
            self.level = Some(to);
            return (to > 1).then_some(SelectEvent::FailedOver { from: 0, to });
        }
        let from = self.level?;
        let to = self.level_at(now);
        self.level = Some(to);
        match to.cmp(&from) {
            std::cmp::Ordering::Greater => Some(SelectEvent::FailedOver { from, to }),
            std::cmp::Ordering::Less => Some(SelectEvent::FailedBack {
                from,
                to,
                after: failback_after,
            }),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// The up endpoints selection keeps out at `now`, each with its reason. `endpoints` are the
    /// service's endpoints in configured order, `published` the addresses DNS publishes now,
    /// `excluded` the endpoints another policy keeps out already (flap damping): they take no place
    /// in the selection.
    pub fn held_out(
        &self,
        now: Instant,
        endpoints: &[IpAddr],
        published: &BTreeSet<IpAddr>,
        excluded: &BTreeSet<IpAddr>,
    ) -> BTreeMap<IpAddr, Reason> {
        let up = |ip: &IpAddr| self.agreed.get(ip) == Some(&Health::Up);
        let canaries: BTreeSet<IpAddr> = self.cfg.canaries.iter().copied().collect();
        let candidates: Vec<IpAddr> = endpoints
            .iter()
            .copied()
            .filter(|ip| up(ip) && !canaries.contains(ip) && !excluded.contains(ip))
            .collect();
        let mut held = BTreeMap::new();
        // The selection, best first.
        let selected: Vec<IpAddr> = match &self.cfg.mode {
            Mode::All => candidates,
            Mode::Fastest { count, good_enough } => {
                let by_score = |list: &mut Vec<IpAddr>| {
                    list.sort_by(|a, b| {
                        self.score(*a, *good_enough)
                            .cmp(&self.score(*b, *good_enough))
                    })
                };
                let (mut sticky, mut rest): (Vec<IpAddr>, Vec<IpAddr>) = candidates
                    .into_iter()
                    .partition(|ip| published.contains(ip) && !self.score(*ip, *good_enough).slow);
                by_score(&mut sticky);
                by_score(&mut rest);
                // Among the endpoints not good enough, published ones first (stable sort: by score
                // within each group).
                rest.sort_by_key(|ip| {
                    let slow = self.score(*ip, *good_enough).slow;
                    (slow, slow && !published.contains(ip))
                });
                sticky.extend(rest);
                for ip in sticky.iter().skip(*count) {
                    held.insert(*ip, Reason::NotFastest { count: *count });
                }
                sticky.truncate(*count);
                sticky
            }
            Mode::Priority { tiers, .. } => {
                let level = self.level_at(now);
                let mut selected = Vec::new();
                for (i, tier) in tiers.iter().enumerate() {
                    for ip in tier.iter().filter(|ip| candidates.contains(ip)) {
                        if i < level {
                            selected.push(*ip);
                        } else {
                            held.insert(
                                *ip,
                                Reason::StandbyTier {
                                    tier: i + 1,
                                    active: level,
                                },
                            );
                        }
                    }
                }
                selected
            }
        };
        // Replacement order: published before unpublished, each best first; canaries take from the end.
        let (mut order, unpublished): (Vec<IpAddr>, Vec<IpAddr>) =
            selected.into_iter().partition(|ip| published.contains(ip));
        order.extend(unpublished);
        for canary in self
            .cfg
            .canaries
            .iter()
            .filter(|ip| up(ip) && !excluded.contains(ip))
        {
            if self.canaries_withdrawn {
                held.insert(
                    *canary,
                    Reason::CanaryWithdrawn {
                        max_failing: self.cfg.canary_max_failing,
                    },
                );
            } else if order.len() > 1
                && let Some(replaced) = order.pop()
            {
                held.insert(replaced, Reason::ReplacedByCanary { canary: *canary });
            }
        }
        held
    }
}

#[cfg(test)]
mod tests;
