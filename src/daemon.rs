//! The daemon: one controller task per service, a supervisor that owns them, signals and reload.
//!
//! A service controller owns its endpoints' probe loops and health machines. It reads the published record
//! set from its writer at start, then re-plans on every health transition and on every reconcile tick
//! (which re-reads DNS first, so drift made by others is repaired). Each plan is applied as one
//! compare-and-swap write; on a conflict the controller re-reads and re-plans; after a write it reads back
//! and confirms. Transient failures back off exponentially; failures that need an operator (wrong key,
//! REFUSED) are logged as configuration errors and retried slowly. Nothing here ends the daemon.
//!
//! The supervisor starts a generation of controllers per configuration. On reload it validates the new
//! file first (a bad one is rejected and the old generation keeps running), then stops the old generation
//! (in-flight writes finish) and starts the new one, carrying over the health of every endpoint whose
//! service, address, check and thresholds are unchanged. On shutdown it drains the same way and returns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::act::{self, RecordChange, WriteError, Writer};
use crate::config::{self, CheckConfig, Config, ServiceConfig};
use crate::decide::{self, Health, Plan, Policy};
use crate::observe::health::HealthMachine;
use crate::observe::probe;
use crate::observe::scheduler::{ProbeReport, Schedule, spawn_probe_loop};

/// First retry delay after a transient failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest retry delay after transient failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Retry delay after a failure that needs an operator (wrong key, REFUSED).
pub const OPERATOR_RETRY: Duration = Duration::from_secs(30);
/// Re-read/re-plan rounds after compare-and-swap conflicts before backing off.
pub const MAX_CONFLICT_ROUNDS: usize = 5;
/// How long shutdown and reload wait for in-flight writes.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// How the daemon runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Plan and log, but never write to DNS.
    pub dry_run: bool,
}

/// Health carried across a reload: the check it was measured with, and the machine.
type Carried = HashMap<(String, IpAddr), (CheckConfig, HealthMachine)>;

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads `path`.
///
/// # Errors
/// Only if signal handlers cannot be installed.
pub async fn run_until_signal(path: PathBuf, config: Config, opts: RunOptions) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM: finishing in-flight writes, then exiting"); stop.cancel(); return; }
                _ = int.recv() => { info!("SIGINT: finishing in-flight writes, then exiting"); stop.cancel(); return; }
                _ = hup.recv() => {
                    info!("SIGHUP: reloading configuration");
                    let _ = reload_tx.try_send(());
                }
            }
        }
    });
    run(path, config, opts, shutdown, reload_rx).await;
    Ok(())
}

/// Runs the supervisor until `shutdown` fires. Each message on `reload_rx` reloads the file at `path`.
pub async fn run(
    path: PathBuf,
    mut config: Config,
    opts: RunOptions,
    shutdown: CancellationToken,
    mut reload_rx: mpsc::Receiver<()>,
) {
    let mut carried = Carried::new();
    loop {
        let generation = shutdown.child_token();
        let mut set = start_generation(&config, opts, &mut carried, &generation);
        info!(
            node = %config.node.id,
            services = config.services.len(),
            dry_run = opts.dry_run,
            "rrguard running"
        );
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    generation.cancel();
                    drain(&mut set).await;
                    info!("stopped");
                    return;
                }
                Some(()) = reload_rx.recv() => match config::load(&path) {
                    Ok(new) => {
                        generation.cancel();
                        carried = drain(&mut set).await;
                        config = new;
                        info!(path = %path.display(), "configuration reloaded");
                        break;
                    }
                    Err(e) => {
                        error!("reload rejected, the running configuration stays in force:\n{e}");
                    }
                },
                Some(joined) = set.join_next() => {
                    // A controller only ends when cancelled; anything else is a bug worth shouting about.
                    if let Err(e) = joined {
                        error!("service controller ended unexpectedly: {e}");
                    }
                }
            }
        }
    }
}

fn start_generation(
    config: &Config,
    opts: RunOptions,
    carried: &mut Carried,
    cancel: &CancellationToken,
) -> JoinSet<Vec<((String, IpAddr), (CheckConfig, HealthMachine))>> {
    let writers: HashMap<String, Arc<dyn Writer>> =
        config.writers.iter().map(|w| (w.name.clone(), act::build(w))).collect();
    let mut set = JoinSet::new();
    for svc in &config.services {
        let mut machines = BTreeMap::new();
        for ip in &svc.endpoints {
            let key = (svc.fqdn.clone(), *ip);
            let m = match carried.remove(&key) {
                Some((check, m)) if check == svc.check && m.thresholds() == (svc.fall, svc.rise) => m,
                _ => HealthMachine::new(svc.fall, svc.rise),
            };
            machines.insert(*ip, m);
        }
        let controller = Controller::new(
            svc.clone(),
            writers[&svc.writer].clone(),
            machines,
            config.reconcile_interval,
            opts.dry_run,
        );
        let cancel = cancel.clone();
        set.spawn(async move {
            let svc = controller.svc.clone();
            let machines = controller.run(cancel).await;
            machines
                .into_iter()
                .map(|(ip, m)| ((svc.fqdn.clone(), ip), (svc.check.clone(), m)))
                .collect()
        });
    }
    set
}

async fn drain(set: &mut JoinSet<Vec<((String, IpAddr), (CheckConfig, HealthMachine))>>) -> Carried {
    let mut carried = Carried::new();
    let deadline = Instant::now() + DRAIN_GRACE;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(entries))) => carried.extend(entries),
            Ok(Some(Err(e))) => error!("service controller failed while stopping: {e}"),
            Ok(None) => return carried,
            Err(_) => {
                warn!("in-flight work did not finish within {DRAIN_GRACE:?}; abandoning it");
                set.abort_all();
                return carried;
            }
        }
    }
}

/// Drives one service: probes in, DNS writes out.
struct Controller {
    svc: ServiceConfig,
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
}

impl Controller {
    fn new(
        svc: ServiceConfig,
        writer: Arc<dyn Writer>,
        machines: BTreeMap<IpAddr, HealthMachine>,
        reconcile_interval: Duration,
        dry_run: bool,
    ) -> Self {
        Controller {
            policy: Policy {
                endpoints: svc.endpoints.clone(),
                min_healthy: svc.min_healthy,
                all_down: svc.all_down,
                remove_unlisted: svc.remove_unlisted,
            },
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
        }
    }

    async fn run(mut self, cancel: CancellationToken) -> BTreeMap<IpAddr, HealthMachine> {
        let probes = cancel.child_token();
        // Room for a few rounds of results; a full channel makes probe loops wait, never overlap.
        let (report_tx, mut report_rx) = mpsc::channel(self.svc.endpoints.len() * 4 + 8);
        let count = self.svc.endpoints.len();
        for (i, ip) in self.svc.endpoints.iter().enumerate() {
            match probe::build(&self.svc.check, *ip, self.svc.timeout) {
                Ok(p) => {
                    let schedule = Schedule::staggered(self.svc.interval, self.svc.timeout, i, count);
                    spawn_probe_loop(*ip, p, schedule, report_tx.clone(), probes.clone());
                }
                Err(e) => error!(service = %self.svc.fqdn, endpoint = %ip, "cannot probe: {e}"),
            }
        }
        drop(report_tx);
        let mut reconcile =
            tokio::time::interval_at(Instant::now() + self.reconcile_interval, self.reconcile_interval);
        reconcile.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            let wake = self.next_sync.map(|t| self.not_before.map_or(t, |nb| t.max(nb)));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(report) = report_rx.recv() => self.on_report(report),
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

    fn schedule_sync(&mut self) {
        let now = Instant::now();
        self.next_sync = Some(self.next_sync.map_or(now, |t| t.min(now)));
    }

    fn on_report(&mut self, report: ProbeReport) {
        let Some(m) = self.machines.get_mut(&report.endpoint) else {
            return;
        };
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
            self.schedule_sync();
        }
    }

    fn health(&self) -> BTreeMap<IpAddr, Health> {
        self.machines.iter().map(|(ip, m)| (*ip, m.state())).collect()
    }

    /// Converges DNS towards the plan; schedules a retry on failure.
    async fn sync(&mut self) {
        let health = self.health();
        let outcome = converge(
            self.writer.as_ref(),
            &self.svc,
            &self.policy,
            &health,
            &mut self.published,
            self.dry_run,
        )
        .await;
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
    /// DNS already matched the plan.
    NoChange,
    /// This plan was written and read back.
    Applied(Plan),
    /// Dry run: this plan would have been written.
    DryRun(Plan),
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
        let plan = decide::plan(policy, health, &current);
        if plan.is_empty() {
            return Ok(Converged::NoChange);
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

/// What `rrguard plan` found for one service.
#[derive(Debug, Clone)]
pub struct ServiceReport {
    /// The service.
    pub fqdn: String,
    /// Writer name.
    pub writer: String,
    /// Each endpoint with its one-probe verdict and detail.
    pub endpoints: Vec<(IpAddr, Health, Duration, String)>,
    /// The published set, or why it could not be read.
    pub published: Result<BTreeSet<IpAddr>, WriteError>,
    /// The plan, when the published set was read.
    pub plan: Option<Plan>,
}

/// Probes every endpoint once and plans every service against what DNS publishes; writes nothing.
/// A single probe decides each endpoint (`fall`/`rise` are not waited for).
pub async fn plan_once(config: &Config) -> Vec<ServiceReport> {
    let writers: HashMap<String, Arc<dyn Writer>> =
        config.writers.iter().map(|w| (w.name.clone(), act::build(w))).collect();
    let mut reports = Vec::new();
    for svc in &config.services {
        let mut probes = JoinSet::new();
        for ip in svc.endpoints.clone() {
            let check = svc.check.clone();
            let timeout = svc.timeout;
            probes.spawn(async move {
                let r = match probe::build(&check, ip, timeout) {
                    Ok(p) => tokio::time::timeout(timeout, p.probe()).await.unwrap_or_else(|_| probe::ProbeResult {
                        ok: false,
                        latency: timeout,
                        detail: "timed out".to_owned(),
                    }),
                    Err(e) => probe::ProbeResult {
                        ok: false,
                        latency: Duration::ZERO,
                        detail: e.to_string(),
                    },
                };
                (ip, r)
            });
        }
        let writer = writers[&svc.writer].clone();
        let published = writer.read(&svc.fqdn, &svc.zone).await;
        let mut results: BTreeMap<IpAddr, probe::ProbeResult> = BTreeMap::new();
        while let Some(joined) = probes.join_next().await {
            if let Ok((ip, r)) = joined {
                results.insert(ip, r);
            }
        }
        let endpoints: Vec<(IpAddr, Health, Duration, String)> = svc
            .endpoints
            .iter()
            .map(|ip| match results.get(ip) {
                Some(r) => (*ip, if r.ok { Health::Up } else { Health::Down }, r.latency, r.detail.clone()),
                None => (*ip, Health::Unknown, Duration::ZERO, "probe did not finish".to_owned()),
            })
            .collect();
        let health: BTreeMap<IpAddr, Health> = endpoints.iter().map(|(ip, h, _, _)| (*ip, *h)).collect();
        let policy = Policy {
            endpoints: svc.endpoints.clone(),
            min_healthy: svc.min_healthy,
            all_down: svc.all_down,
            remove_unlisted: svc.remove_unlisted,
        };
        let plan = published.as_ref().ok().map(|p| decide::plan(&policy, &health, p));
        reports.push(ServiceReport {
            fqdn: svc.fqdn.clone(),
            writer: svc.writer.clone(),
            endpoints,
            published,
            plan,
        });
    }
    reports
}

/// Renders `plan_once` results for a person.
pub fn render_plan(reports: &[ServiceReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(out, "{} (writer {})", r.fqdn, r.writer);
        for (ip, h, latency, detail) in &r.endpoints {
            let _ = writeln!(
                out,
                "  {:<39} {:<7} {:>9}  {}",
                ip.to_string(),
                h.to_string(),
                format!("{:.1}ms", latency.as_secs_f64() * 1000.0),
                detail
            );
        }
        match &r.published {
            Ok(p) => {
                let list: Vec<String> = p.iter().map(ToString::to_string).collect();
                let _ = writeln!(out, "  published: {}", if list.is_empty() { "(none)".to_owned() } else { list.join(" ") });
            }
            Err(e) => {
                let _ = writeln!(out, "  published: cannot read: {e}");
            }
        }
        if let Some(plan) = &r.plan {
            let _ = writeln!(out, "  plan: {plan}");
            if let Some(p) = plan.policy_applied {
                let _ = writeln!(out, "  note: fewer endpoints up than min_healthy; all_down = {p} decided");
            }
        }
    }
    out
}

/// Loads the configuration at `path`, for the CLI.
///
/// # Errors
/// As [`config::load`].
pub fn load(path: &Path) -> Result<Config, config::ConfigError> {
    config::load(path)
}
