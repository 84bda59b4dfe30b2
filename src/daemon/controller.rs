//! The service controller: one task per service.
//!
//! It owns its endpoints' probe loops and health machines and reports every verdict change to the
//! agreement actor as this node's vote. It follows the cluster [`View`]: when it is the writer and the
//! cluster state of its endpoints changes (or on every reconcile tick, which re-reads DNS first), it
//! converges DNS with [`converge`]: plan, one compare-and-swap write, read back. On a conflict it re-reads
//! and re-plans. Transient failures back off exponentially; failures that need an operator are logged as
//! configuration errors and retried slowly. A node that is not the writer only probes and votes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{BACKOFF_MAX, BACKOFF_MIN, MAX_CONFLICT_ROUNDS, OPERATOR_RETRY};
use crate::act::{RecordChange, WriteError, Writer};
use crate::agree::{View, VoteKey};
use crate::config::ServiceConfig;
use crate::decide::{self, Health, Plan, Policy};
use crate::observe::health::HealthMachine;
use crate::observe::probe;
use crate::observe::scheduler::{ProbeReport, Schedule, spawn_probe_loop};

/// Drives one service: probes in, votes out; DNS writes when this node is the writer.
pub(super) struct Controller {
    pub(super) svc: ServiceConfig,
    policy: Policy,
    writer: Arc<dyn Writer>,
    machines: BTreeMap<IpAddr, HealthMachine>,
    reconcile_interval: Duration,
    dry_run: bool,
    /// The record set DNS publishes, as last read or written; `None` forces a read.
    published: Option<BTreeSet<IpAddr>>,
    /// When to sync next; `None` means nothing is pending.
    next_sync: Option<Instant>,
    /// No sync before this (backoff after failures).
    not_before: Option<Instant>,
    backoff: Duration,
    last_dry_run: Option<Plan>,
    votes_tx: mpsc::UnboundedSender<(VoteKey, Health)>,
    view_rx: watch::Receiver<Arc<View>>,
    /// Cluster states of this service's endpoints in the last view, and whether this node was writer.
    agreed: BTreeMap<IpAddr, Health>,
    am_writer: bool,
    /// Since when removals are held back because the remaining endpoints are in doubt.
    deferring_since: Option<Instant>,
}

impl Controller {
    pub(super) fn new(
        svc: ServiceConfig,
        writer: Arc<dyn Writer>,
        machines: BTreeMap<IpAddr, HealthMachine>,
        reconcile_interval: Duration,
        dry_run: bool,
        votes_tx: mpsc::UnboundedSender<(VoteKey, Health)>,
        view_rx: watch::Receiver<Arc<View>>,
    ) -> Self {
        Controller {
            policy: Policy::of(&svc),
            svc,
            writer,
            machines,
            reconcile_interval,
            dry_run,
            published: None,
            next_sync: Some(Instant::now()),
            not_before: None,
            backoff: BACKOFF_MIN,
            last_dry_run: None,
            votes_tx,
            view_rx,
            agreed: BTreeMap::new(),
            am_writer: false,
            deferring_since: None,
        }
    }

    pub(super) async fn run(
        mut self,
        cancel: CancellationToken,
    ) -> BTreeMap<IpAddr, HealthMachine> {
        // Register every endpoint with its current (possibly carried-over) verdict.
        for (ip, m) in &self.machines {
            let _ = self
                .votes_tx
                .send(((self.svc.fqdn.clone(), *ip), m.state()));
        }
        // Act on the view as it is now, not only on later changes (a single node is writer at once).
        self.on_view();
        let probes = cancel.child_token();
        // Room for a few rounds of results; a full channel makes probe loops wait, never overlap.
        let (report_tx, mut report_rx) = mpsc::channel(self.svc.endpoints.len() * 4 + 8);
        let count = self.svc.endpoints.len();
        for (i, ip) in self.svc.endpoints.iter().enumerate() {
            match probe::build(&self.svc.check, *ip, self.svc.timeout) {
                Ok(p) => {
                    let schedule =
                        Schedule::staggered(self.svc.interval, self.svc.timeout, i, count);
                    spawn_probe_loop(*ip, p, schedule, report_tx.clone(), probes.clone());
                }
                Err(e) => error!(service = %self.svc.fqdn, endpoint = %ip, "cannot probe: {e}"),
            }
        }
        drop(report_tx);
        let mut reconcile = tokio::time::interval_at(
            Instant::now() + self.reconcile_interval,
            self.reconcile_interval,
        );
        reconcile.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            let wake = self
                .next_sync
                .map(|t| self.not_before.map_or(t, |nb| t.max(nb)));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(report) = report_rx.recv() => self.on_report(report),
                Ok(()) = self.view_rx.changed() => self.on_view(),
                _ = reconcile.tick() => {
                    debug!(service = %self.svc.fqdn, "reconcile: re-reading published records");
                    self.published = None;
                    self.schedule_sync();
                }
                _ = sleep_until_opt(wake) => {
                    self.next_sync = None;
                    self.sync().await;
                }
            }
        }
        probes.cancel();
        self.machines
    }

    fn on_view(&mut self) {
        let view = self.view_rx.borrow_and_update().clone();
        let agreed = view.service_health(&self.svc.fqdn);
        let became_writer = view.am_writer && !self.am_writer;
        let changed = agreed != self.agreed;
        if changed {
            for (ip, h) in &agreed {
                if self.agreed.get(ip).copied().unwrap_or(Health::Unknown) != *h
                    && *h != Health::Unknown
                    && view.live.len() > 1
                {
                    info!(service = %self.svc.fqdn, endpoint = %ip, state = %h, "cluster agrees endpoint is {h}");
                }
            }
        }
        self.agreed = agreed;
        self.am_writer = view.am_writer;
        if became_writer {
            // A new writer trusts nothing it cached while standing by.
            self.published = None;
        }
        if self.am_writer && (changed || became_writer) {
            self.schedule_sync();
        }
    }

    fn schedule_sync(&mut self) {
        let now = Instant::now();
        self.next_sync = Some(self.next_sync.map_or(now, |t| t.min(now)));
    }

    fn on_report(&mut self, report: ProbeReport) {
        let Some(m) = self.machines.get_mut(&report.endpoint) else {
            return;
        };
        let was_in_doubt = m.in_doubt();
        let r = &report.result;
        debug!(service = %self.svc.fqdn, endpoint = %report.endpoint, ok = r.ok, latency_ms = r.latency.as_secs_f64() * 1000.0, detail = %r.detail, "probe");
        if let Some(t) = m.observe(r.ok, r.latency, &r.detail) {
            info!(
                service = %self.svc.fqdn,
                endpoint = %report.endpoint,
                from = %t.from,
                to = %t.to,
                detail = %r.detail,
                "endpoint is {}",
                t.to
            );
            let _ = self
                .votes_tx
                .send(((self.svc.fqdn.clone(), report.endpoint), t.to));
        } else if self.deferring_since.is_some() && m.in_doubt() != was_in_doubt {
            // A held-back removal may now go (doubt resolved) or must keep waiting.
            self.schedule_sync();
        }
    }

    /// Endpoints this node's own probes do not show solidly up; empty once removals have been held back
    /// for a full detection time, so that a removal is delayed, never lost.
    fn in_doubt(&self) -> BTreeSet<IpAddr> {
        let max_hold = self.svc.interval * self.svc.fall + self.svc.timeout;
        if self
            .deferring_since
            .is_some_and(|t| t.elapsed() >= max_hold)
        {
            return BTreeSet::new();
        }
        self.machines
            .iter()
            .filter(|(_, m)| m.in_doubt())
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Converges DNS towards the plan; schedules a retry on failure. Only the writer writes.
    async fn sync(&mut self) {
        if !self.am_writer {
            // A hold belongs to the writer that started it.
            self.deferring_since = None;
            return;
        }
        let health = self.agreed.clone();
        let in_doubt = self.in_doubt();
        let outcome = converge(
            self.writer.as_ref(),
            &self.svc,
            &self.policy,
            &health,
            &in_doubt,
            &mut self.published,
            self.dry_run,
        )
        .await;
        if let Ok(done) = &outcome {
            self.track_deferral(done.deferred());
        }
        match outcome {
            Ok(Converged::DryRun(plan)) => {
                if self.last_dry_run.as_ref() != Some(&plan) {
                    info!(service = %self.svc.fqdn, plan = %plan, "dry run: would change DNS");
                    self.last_dry_run = Some(plan);
                }
                self.succeeded();
            }
            Ok(_) => self.succeeded(),
            Err(ConvergeError::Write { doing, error }) => self.failed(doing, error),
            Err(ConvergeError::KeptChanging) => {
                warn!(service = %self.svc.fqdn, "record set kept changing under us for {MAX_CONFLICT_ROUNDS} rounds; backing off");
                self.back_off(false);
            }
        }
    }

    /// Starts or ends a hold on removals, and makes sure the hold is re-examined when it expires.
    fn track_deferral(&mut self, deferred: &BTreeSet<IpAddr>) {
        if deferred.is_empty() {
            self.deferring_since = None;
            return;
        }
        let since = *self.deferring_since.get_or_insert_with(|| {
            info!(service = %self.svc.fqdn, held = ?deferred, "holding removal back: the endpoints that would remain are failing too");
            Instant::now()
        });
        let until = since + self.svc.interval * self.svc.fall + self.svc.timeout;
        self.next_sync = Some(self.next_sync.map_or(until, |t| t.min(until)));
    }

    fn succeeded(&mut self) {
        self.backoff = BACKOFF_MIN;
        self.not_before = None;
    }

    fn failed(&mut self, doing: &str, e: WriteError) {
        if e.needs_operator() {
            error!(service = %self.svc.fqdn, writer = %self.writer.name(), "configuration error while {doing}: {e}; retrying in {}", humantime::format_duration(OPERATOR_RETRY));
        } else {
            warn!(service = %self.svc.fqdn, writer = %self.writer.name(), "{doing} failed: {e}; retrying in {}", humantime::format_duration(self.backoff));
        }
        self.back_off(e.needs_operator());
    }

    fn back_off(&mut self, slow: bool) {
        let delay = if slow { OPERATOR_RETRY } else { self.backoff };
        if !slow {
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        let at = Instant::now() + delay;
        self.not_before = Some(at);
        self.next_sync = Some(at);
    }
}

/// What [`converge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Converged {
    /// DNS already matched the plan (which may hold removals back: [`Plan::deferred`]).
    NoChange(Plan),
    /// This plan was written and read back.
    Applied(Plan),
    /// Dry run: this plan would have been written.
    DryRun(Plan),
}

impl Converged {
    /// Removals the plan held back.
    pub fn deferred(&self) -> &BTreeSet<IpAddr> {
        match self {
            Converged::NoChange(p) | Converged::Applied(p) | Converged::DryRun(p) => &p.deferred,
        }
    }
}

/// Why [`converge`] stopped short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvergeError {
    /// A writer operation failed; see [`WriteError::needs_operator`] for how soon to retry.
    #[error("{doing} failed: {error}")]
    Write {
        /// What was being done.
        doing: &'static str,
        /// The failure.
        error: WriteError,
    },
    /// Compare-and-swap failed [`MAX_CONFLICT_ROUNDS`] times in a row. Retry later.
    #[error("record set kept changing for {MAX_CONFLICT_ROUNDS} rounds")]
    KeptChanging,
}

/// Reads (if `published` is `None`), plans and writes with compare-and-swap until DNS matches the plan.
///
/// On a conflict the record set is re-read and the plan recomputed, up to [`MAX_CONFLICT_ROUNDS`] times.
/// After a write the record set is read back; `published` holds what DNS publishes afterwards, or `None`
/// when that is unknown.
///
/// # Errors
/// [`ConvergeError`] when a writer operation fails or the record set keeps changing.
pub async fn converge(
    writer: &dyn Writer,
    svc: &ServiceConfig,
    policy: &Policy,
    health: &BTreeMap<IpAddr, Health>,
    in_doubt: &BTreeSet<IpAddr>,
    published: &mut Option<BTreeSet<IpAddr>>,
    dry_run: bool,
) -> Result<Converged, ConvergeError> {
    let fail = |published: &mut Option<BTreeSet<IpAddr>>, doing, error| {
        *published = None;
        Err(ConvergeError::Write { doing, error })
    };
    for _round in 0..MAX_CONFLICT_ROUNDS {
        let current = match published.clone() {
            Some(p) => p,
            None => match writer.read(&svc.fqdn, &svc.zone).await {
                Ok(p) => {
                    *published = Some(p.clone());
                    p
                }
                Err(e) => return fail(published, "reading published records", e),
            },
        };
        let plan = decide::plan(policy, health, &current, in_doubt);
        if plan.is_empty() {
            return Ok(Converged::NoChange(plan));
        }
        if dry_run {
            return Ok(Converged::DryRun(plan));
        }
        let change = RecordChange {
            fqdn: svc.fqdn.clone(),
            zone: svc.zone.clone(),
            ttl: svc.ttl,
            expected: plan.expected.clone(),
            add: plan.additions(),
            remove: plan.removals(),
        };
        match writer.apply(&change).await {
            Ok(()) => {
                info!(service = %svc.fqdn, writer = %writer.name(), plan = %plan, policy = ?plan.policy_applied, "DNS updated");
                match writer.read(&svc.fqdn, &svc.zone).await {
                    Ok(now) if now == plan.desired => {
                        *published = Some(now);
                        return Ok(Converged::Applied(plan));
                    }
                    Ok(now) => {
                        warn!(service = %svc.fqdn, expected = ?plan.desired, found = ?now, "read-back differs from what was written; re-planning");
                        *published = Some(now);
                    }
                    Err(e) => return fail(published, "reading back after the write", e),
                }
            }
            Err(WriteError::Conflict(why)) => {
                info!(service = %svc.fqdn, "record set changed by someone else since it was read ({why}); re-reading and re-planning");
                *published = None;
            }
            Err(e) => return fail(published, "writing", e),
        }
    }
    *published = None;
    Err(ConvergeError::KeptChanging)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
