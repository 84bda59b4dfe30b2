//! The daemon: wires observe → agree → decide → act → expose together, handles signals and reload.
//!
//! - [`controller`]: one task per service, the I/O shell around the sans-I/O service core
//!   ([`crate::decide::service`]): probes, votes, and (on the leader) DNS reads and writes.
//! - [`agreement`]: the task that owns the agreement core, talks to peers and publishes the view.
//! - [`plan`]: the one-shot `rrguard plan`.
//!
//! The supervisor runs one *generation* per configuration: the agreement actor and a controller per
//! service. On reload it validates the new file first (a bad one is rejected and the old generation keeps
//! running), then stops the old generation (in-flight writes finish) and starts the new one, carrying
//! over the health of every endpoint whose service, address, check and thresholds are unchanged. The
//! HTTP server (peers, status) is bound once at start and reaches the current generation through the
//! shared [`crate::state::NodeState`]. On shutdown everything drains the same way, the HTTP server's
//! open connections within the same grace, and `run` returns.

pub mod agreement;
mod audit;
pub mod controller;
pub mod notify;
pub mod plan;
pub mod replicate;
mod selfreg;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use controller::converge;
pub use plan::{ServiceReport, plan_once, render_plan};

use crate::act::{self, Writer};
use crate::config::{self, CheckConfig, Config, ServiceConfig};
use crate::decide::service::{ServiceCore, Settings};
use crate::observe::health::HealthMachine;
use crate::observe::lag::LagHandle;
use crate::observe::pump::ReportPump;
use crate::state::{ConfiguredService, NodeState};
use agreement::AgreementHandle;
use controller::Controller;

pub use crate::decide::service::{BACKOFF_MAX, BACKOFF_MIN, MAX_CONFLICT_ROUNDS, OPERATOR_RETRY};
/// Default of [`RunOptions::drain_grace`]: how long shutdown and reload wait for in-flight writes.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Plan and log, but never write to DNS.
    pub dry_run: bool,
    /// How long shutdown and reload wait for in-flight writes, and shutdown for open HTTP connections.
    pub drain_grace: Duration,
    /// The threads the probe engine runs on (probe loops and the lag monitors); `None`: the runtime
    /// [`run`] is called on. `rrguard run` gives the engine one thread per CPU, whose priority stays
    /// the process's while the rest of the daemon's threads run lower ([`crate::runtime`]).
    pub probe_runtime: Option<crate::runtime::ProbeThreads>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            dry_run: false,
            drain_grace: DRAIN_GRACE,
            probe_runtime: None,
        }
    }
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Signal handlers could not be installed. Not retryable.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A writer could not be built from its configuration. Not retryable without operator action.
    #[error("{0}")]
    Writer(#[from] act::BuildError),
    /// The HTTP listen address could not be bound. Not retryable without operator action.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Health carried across a reload: the check it was measured with, and the machine.
type Carried = HashMap<(String, IpAddr), (CheckConfig, HealthMachine)>;
/// What a controller hands back when it stops.
type CarriedEntries = Vec<((String, IpAddr), (CheckConfig, HealthMachine))>;

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads `path`.
///
/// # Errors
/// [`RunError`] if signal handlers cannot be installed or the listen address cannot be bound.
pub async fn run_until_signal(
    path: PathBuf,
    config: Config,
    opts: RunOptions,
) -> Result<(), RunError> {
    run_until_signal_or(path, config, opts, CancellationToken::new()).await
}

/// [`run_until_signal`], also stopping when `shutdown` is cancelled (the demo's `quit`).
///
/// # Errors
/// As [`run_until_signal`].
pub async fn run_until_signal_or(
    path: PathBuf,
    config: Config,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let stop = shutdown.clone();
    // Aborted when `run` returns (the set is dropped).
    let mut signals = JoinSet::new();
    signals.spawn(async move {
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
    run(path, config, opts, shutdown, reload_rx).await
}

/// Runs the supervisor until `shutdown` fires. Each message on `reload_rx` reloads the file at `path`.
///
/// # Errors
/// [`RunError::Listen`] if `[node].listen` cannot be bound; [`RunError::Writer`] if a writer of the
/// starting configuration cannot be built (one of a reloaded configuration is rejected instead).
pub async fn run(
    path: PathBuf,
    mut config: Config,
    opts: RunOptions,
    shutdown: CancellationToken,
    mut reload_rx: mpsc::Receiver<()>,
) -> Result<(), RunError> {
    let state = NodeState::new();
    let notifier = notify::Notifier::from_env();
    log_warnings(&config);
    match state
        .overrides()
        .open(&config.node.state_dir, &config.node.id)
    {
        Ok(0) => {}
        Ok(n) => info!(count = n, "overrides restored from the state directory"),
        Err(e) => error!("{e}; starting without the saved overrides"),
    }
    // The audit log outlives generations (its limits and place are read once, at start). A node
    // whose state_dir cannot hold it still runs: DNS failover matters more than its record.
    let audit = {
        match crate::state::AuditLog::open(
            &config.node.state_dir,
            crate::state::audit::Limits {
                max_age: config.node.audit_max_age,
                max_bytes: config.node.audit_max_bytes,
            },
        ) {
            Ok(log) => {
                info!(path = %log.path().display(), "audit log open");
                state.attach_audit(log.clone(), &config.node.id);
                Some(log)
            }
            Err(e) => {
                error!("{e}; running without an audit log (events are kept in memory only)");
                None
            }
        }
    };
    // The endpoint history, like the audit log, is a record: without it the node runs on.
    let history = match state.open_history(&config.node.state_dir) {
        Ok(store) => {
            info!(path = %store.path().display(), "endpoint history open");
            Some(store)
        }
        Err(e) => {
            warn!("{e}; running with the endpoint history in memory only");
            None
        }
    };
    // The HTTP server outlives generations; it stops with `shutdown`, drained within the grace.
    let mut servers = JoinSet::new();
    if let Some(addr) = config.node.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Listen { addr, source })?;
        info!(%addr, "HTTP listening (peers, /api/v1/status)");
        servers.spawn(crate::expose::serve(
            listener,
            state.clone(),
            shutdown.clone(),
        ));
    }
    // systemd hears READY=1, the status line and the watchdog pings from one task for the whole run.
    notify::spawn_notifier(&notifier, &state, shutdown.clone(), &mut servers);
    // As PID 1 (a container without an init), the orphans of exec checks and scripts are ours.
    crate::subprocess::spawn_orphan_reaper(&mut servers, shutdown.clone());
    // The probe engine's lateness is watched across generations, so its counters never go back.
    let lag = crate::observe::lag::spawn_lag_monitor(
        &mut servers,
        state.clone(),
        shutdown.clone(),
        config.node.max_probes_in_flight,
        opts.probe_runtime.clone(),
    );
    // Probe reports reach the services many per wake-up of the main runtime, across generations.
    let pump = ReportPump::new();
    servers.spawn(pump.clone().run(shutdown.clone()));
    // Writers' long-lived parts (served zones, DNS listeners) outlive generations, like the HTTP server.
    let resources = act::Resources::new(Some(config.node.state_dir.clone()));
    let mut carried = Carried::new();
    // A reload is under way: systemd hears READY=1 once the new generation has started.
    let mut reloading = false;
    loop {
        let generation = shutdown.child_token();
        let mut background = JoinSet::new();
        state.set_services(configured_services(&config));
        state.overrides().set_services(
            config
                .services
                .iter()
                .map(|s| (s.fqdn.clone(), s.endpoints.clone()))
                .collect(),
        );
        state.set_api_access(api_access(&config));
        replicate::spawn_overrides(&config, &state, generation.clone(), &mut background);
        // Subscribed before anything of this generation happens.
        crate::expose::alert::spawn_alerts(
            &config.alerts,
            &config.node.id,
            &state,
            &generation,
            &mut background,
        );
        crate::expose::statsd::spawn_statsd(&config.metrics, &state, &generation, &mut background);
        let agreement =
            agreement::spawn_agreement(&config, &state, generation.clone(), &mut background);
        let mut controllers = Generation::start(
            &config,
            &opts,
            &mut carried,
            &agreement,
            &state,
            &generation,
            &resources,
            &lag,
            &pump,
            &shutdown,
        )?;
        info!(
            node = %config.node.id,
            services = config.services.len(),
            peers = config.cluster.as_ref().map_or(0, |c| c.peers.len()),
            dry_run = opts.dry_run,
            "rrguard running"
        );
        if std::mem::take(&mut reloading) {
            notifier.send("READY=1");
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    notifier.send("STOPPING=1");
                    let deadline = Instant::now() + opts.drain_grace;
                    generation.cancel();
                    drain(&mut controllers.set, opts.drain_grace).await;
                    background.shutdown().await;
                    state.set_inbox(None);
                    drain_servers(&mut servers, deadline).await;
                    if let Some(log) = audit.clone() {
                        let _ = tokio::task::spawn_blocking(move || log.flush()).await;
                    }
                    if let Some(store) = history.clone() {
                        let _ = tokio::task::spawn_blocking(move || store.flush()).await;
                    }
                    info!("stopped");
                    return Ok(());
                }
                Some(()) = reload_rx.recv() => match reload(&path, &resources, &notifier) {
                    Ok(new) => {
                        if new.node.listen != config.node.listen {
                            warn!("[node].listen changed: the new address takes effect after a restart");
                        }
                        if new.node.max_probes_in_flight != config.node.max_probes_in_flight {
                            warn!(
                                running = lag.max_in_flight(),
                                "[node].max_probes_in_flight changed: the new bound takes effect after a restart"
                            );
                        }
                        generation.cancel();
                        carried = drain(&mut controllers.set, opts.drain_grace).await;
                        background.shutdown().await;
                        // A writer gone from the file lets go of what it kept (a served zone stops
                        // answering and closes its sockets once the old generation is dropped).
                        for old in &config.writers {
                            if !new.writers.iter().any(|w| w.name == old.name) {
                                resources.remove(&old.name);
                            }
                        }
                        config = new;
                        info!(path = %path.display(), "configuration reloaded");
                        reloading = true;
                        break;
                    }
                    Err(e) => {
                        error!("reload rejected, the running configuration stays in force:\n{e}");
                        notifier.send("READY=1");
                    }
                },
                Some(joined) = controllers.set.join_next_with_id() => controllers.restart_failed(joined),
            }
        }
    }
}

/// Loads the file at `path` for a reload (after telling systemd a reload began) and builds and
/// starts its writers. Built and started before the running generation stops, so that a writer
/// that cannot start (a listen address in use) rejects the reload instead of ending the daemon;
/// starting is idempotent, the new generation starts them again.
fn reload(
    path: &Path,
    resources: &act::Resources,
    notifier: &notify::Notifier,
) -> Result<Config, String> {
    notifier.reloading();
    let new = config::load(path).map_err(|e| e.to_string())?;
    log_warnings(&new);
    let writers = act::build_all(&new.writers, resources).map_err(|e| e.to_string())?;
    writers
        .iter()
        .try_for_each(|(name, w)| w.start().map_err(|e| format!("writer {name:?}: {e}")))?;
    Ok(new)
}

/// Logs each of the configuration's warnings once ([`Config::warnings`]), at start and reload.
fn log_warnings(config: &Config) {
    for w in &config.warnings {
        warn!(
            "{}:{}:{}: {}",
            config.path.display(),
            w.line,
            w.col,
            w.message
        );
    }
}

/// The controllers of one generation, and what is needed to restart one that panicked.
struct Generation {
    set: JoinSet<CarriedEntries>,
    state: NodeState,
    services: HashMap<tokio::task::Id, ServiceConfig>,
    writers: HashMap<String, Arc<dyn Writer>>,
    reconcile_interval: Duration,
    dry_run: bool,
    agreement: AgreementHandle,
    cancel: CancellationToken,
    /// The daemon's own token: cancelled on SIGTERM/SIGINT, not on reload.
    shutdown: CancellationToken,
    lag: LagHandle,
    pump: ReportPump,
    /// Recent restarts of each service's controller after a panic, by fqdn.
    restarts: HashMap<String, Restarts>,
}

/// How often a service's controller was restarted after a panic, and when last.
#[derive(Debug, Clone, Copy)]
struct Restarts {
    count: u32,
    last: tokio::time::Instant,
}

/// The first restart of a controller that panicked waits this long; each next one twice as long,
/// up to [`RESTART_MAX`], so that a controller panicking at once (a bug met on every start) does
/// not restart thousands of times a second and fill the log.
const RESTART_MIN: Duration = Duration::from_secs(1);
/// The longest wait before restarting a controller that keeps panicking.
const RESTART_MAX: Duration = Duration::from_secs(60);
/// A controller that ran this long since its last restart starts over at [`RESTART_MIN`].
const RESTART_RESET: Duration = Duration::from_secs(600);

/// The restart record and the wait before restarting a controller that panicked at `now`, after
/// the restarts `previous`.
fn restart_delay(previous: Option<Restarts>, now: tokio::time::Instant) -> (Restarts, Duration) {
    let count = match previous {
        Some(p) if now.saturating_duration_since(p.last) < RESTART_RESET => {
            p.count.saturating_add(1)
        }
        _ => 1,
    };
    let delay = RESTART_MIN
        .saturating_mul(1u32 << (count - 1).min(16))
        .min(RESTART_MAX);
    (Restarts { count, last: now }, delay)
}

impl Generation {
    #[allow(clippy::too_many_arguments)]
    fn start(
        config: &Config,
        opts: &RunOptions,
        carried: &mut Carried,
        agreement: &AgreementHandle,
        state: &NodeState,
        cancel: &CancellationToken,
        resources: &act::Resources,
        lag: &LagHandle,
        pump: &ReportPump,
        shutdown: &CancellationToken,
    ) -> Result<Self, act::BuildError> {
        let mut writers = act::build_all(&config.writers, resources)?;
        for (name, w) in writers.iter_mut() {
            w.start().map_err(|reason| act::BuildError {
                name: name.clone(),
                reason,
            })?;
            // Changes of many services due together go out as one write per zone.
            if w.capabilities().batches {
                *w = act::batch::Batched::spawn(w.clone());
            }
        }
        let mut g = Generation {
            set: JoinSet::new(),
            state: state.clone(),
            services: HashMap::new(),
            writers,
            reconcile_interval: config.reconcile_interval,
            dry_run: opts.dry_run,
            agreement: agreement.clone(),
            cancel: cancel.clone(),
            shutdown: shutdown.clone(),
            lag: lag.clone(),
            pump: pump.clone(),
            restarts: HashMap::new(),
        };
        for svc in &config.services {
            if svc.self_register.is_some() {
                // Its endpoint is known once discovered: hand it what this service carried.
                let keys: Vec<_> = carried
                    .keys()
                    .filter(|(fqdn, _)| *fqdn == svc.fqdn)
                    .cloned()
                    .collect();
                let mine = keys
                    .into_iter()
                    .filter_map(|k| carried.remove_entry(&k))
                    .collect();
                g.spawn_self_registered(svc.clone(), mine, Duration::ZERO);
                continue;
            }
            let mut machines = BTreeMap::new();
            for ip in &svc.endpoints {
                let key = (svc.fqdn.clone(), *ip);
                let m = match carried.remove(&key) {
                    Some((check, m))
                        if check == svc.check && m.thresholds() == (svc.fall, svc.rise) =>
                    {
                        m.with_adaptive_fall(adaptive_fall(svc))
                    }
                    _ => fresh_machine(svc),
                };
                machines.insert(*ip, m);
            }
            g.spawn(svc.clone(), machines, Duration::ZERO);
        }
        Ok(g)
    }

    /// What a controller of this generation is built from.
    fn builder(&self) -> Builder {
        Builder {
            state: self.state.clone(),
            writers: self.writers.clone(),
            reconcile_interval: self.reconcile_interval,
            dry_run: self.dry_run,
            agreement: self.agreement.clone(),
            lag: self.lag.clone(),
            pump: self.pump.clone(),
        }
    }

    /// Runs `svc`'s controller from `machines`, after `delay` (a restart after a panic).
    fn spawn(
        &mut self,
        svc: ServiceConfig,
        machines: BTreeMap<IpAddr, HealthMachine>,
        delay: Duration,
    ) {
        if svc.self_register.is_some() {
            self.spawn_self_registered(svc, Carried::new(), delay);
            return;
        }
        let controller = self.builder().build(&svc, machines);
        let cancel = self.cancel.clone();
        let fqdn = svc.fqdn.clone();
        let check = svc.check.clone();
        let handle = self.set.spawn(async move {
            if !wait_unless_cancelled(delay, &cancel).await {
                return Vec::new();
            }
            let machines = controller.run(cancel).await;
            machines
                .into_iter()
                .map(|(ip, m)| ((fqdn.clone(), ip), (check.clone(), m)))
                .collect()
        });
        self.services.insert(handle.id(), svc);
    }

    /// A `[service.self_register]` service: discover this node's address (retried until the
    /// generation ends), run the controller with it as the one endpoint, and on shutdown remove it
    /// if so configured ([`selfreg`]).
    fn spawn_self_registered(&mut self, svc: ServiceConfig, mut carried: Carried, delay: Duration) {
        let builder = self.builder();
        let cancel = self.cancel.clone();
        let shutdown = self.shutdown.clone();
        let task_svc = svc.clone();
        let handle = self.set.spawn(async move {
            if !wait_unless_cancelled(delay, &cancel).await {
                return carried.into_iter().collect();
            }
            let mut svc = task_svc;
            let Some(reg) = svc.self_register.clone() else {
                return Vec::new();
            };
            let Some(ip) = selfreg::discover_until(&reg, &svc.fqdn, &cancel).await else {
                return carried.into_iter().collect();
            };
            svc.endpoints = vec![ip];
            let machine = match carried.remove(&(svc.fqdn.clone(), ip)) {
                Some((check, m))
                    if check == svc.check && m.thresholds() == (svc.fall, svc.rise) =>
                {
                    m.with_adaptive_fall(adaptive_fall(&svc))
                }
                _ => fresh_machine(&svc),
            };
            let controller = builder.build(&svc, [(ip, machine)].into());
            let machines = controller.run(cancel).await;
            if shutdown.is_cancelled() && reg.remove_on_shutdown {
                let writers: Vec<Arc<dyn Writer>> = svc
                    .writers
                    .iter()
                    .filter_map(|n| builder.writers.get(n).cloned())
                    .collect();
                selfreg::remove_on_shutdown(&svc, ip, &writers, builder.dry_run).await;
            }
            machines
                .into_iter()
                .map(|(ip, m)| ((svc.fqdn.clone(), ip), (svc.check.clone(), m)))
                .collect()
        });
        self.services.insert(handle.id(), svc);
    }

    /// A controller ends early only by panicking (a bug): log it and start it again with fresh health,
    /// so that its service is not left unmanaged.
    fn restart_failed(
        &mut self,
        joined: Result<(tokio::task::Id, CarriedEntries), tokio::task::JoinError>,
    ) {
        let Err(e) = joined else { return };
        let Some(svc) = self.services.remove(&e.id()) else {
            return;
        };
        if self.cancel.is_cancelled() {
            return;
        }
        let (restarts, delay) = restart_delay(
            self.restarts.get(&svc.fqdn).copied(),
            tokio::time::Instant::now(),
        );
        self.restarts.insert(svc.fqdn.clone(), restarts);
        error!(
            service = %svc.fqdn,
            restarts = restarts.count,
            "service controller failed ({e}); restarting it in {}",
            humantime::format_duration(delay)
        );
        let machines = svc
            .endpoints
            .iter()
            .map(|ip| (*ip, fresh_machine(&svc)))
            .collect();
        self.spawn(svc, machines, delay);
    }
}

/// Waits `delay` (at once if zero); `false` if `cancel` fired first.
async fn wait_unless_cancelled(delay: Duration, cancel: &CancellationToken) -> bool {
    if delay.is_zero() {
        return true;
    }
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// The loss-aware fall setting of `svc`'s health machines: its probe interval when on.
fn adaptive_fall(svc: &ServiceConfig) -> Option<Duration> {
    svc.adaptive_fall.then_some(svc.interval)
}

/// A health machine without a verdict for one of `svc`'s endpoints.
fn fresh_machine(svc: &ServiceConfig) -> HealthMachine {
    HealthMachine::new(svc.fall, svc.rise).with_adaptive_fall(adaptive_fall(svc))
}

/// What a service's controller is built from (cloned into a self-registered service's task, which
/// builds its controller once its address is known).
struct Builder {
    state: NodeState,
    writers: HashMap<String, Arc<dyn Writer>>,
    reconcile_interval: Duration,
    dry_run: bool,
    agreement: AgreementHandle,
    lag: LagHandle,
    pump: ReportPump,
}

impl Builder {
    fn build(&self, svc: &ServiceConfig, machines: BTreeMap<IpAddr, HealthMachine>) -> Controller {
        // One core per writer, each with the same carried-over verdicts.
        let lanes = svc
            .writers
            .iter()
            .map(|name| {
                let writer = self.writers[name].clone();
                let settings = Settings::of(
                    svc,
                    writer.capabilities(),
                    self.reconcile_interval,
                    self.dry_run,
                );
                let mut core = ServiceCore::new(settings, machines.clone(), Instant::now());
                // `fastest` starts from the latencies the history kept, so a restart or reload
                // still knows which endpoints are fast.
                for (ip, mean) in self.state.history_long_term_means(&svc.fqdn) {
                    core.seed_long_term(ip, mean);
                }
                (core, writer)
            })
            .collect();
        Controller::new(
            svc.clone(),
            lanes,
            self.state.clone(),
            self.agreement.votes_tx.clone(),
            self.agreement.view_rx.clone(),
        )
        .watched_by(self.lag.clone())
        .pumped_by(self.pump.clone())
    }
}

async fn drain(set: &mut JoinSet<CarriedEntries>, grace: Duration) -> Carried {
    let mut carried = Carried::new();
    let deadline = Instant::now() + grace;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(entries))) => carried.extend(entries),
            Ok(Some(Err(e))) => error!("service controller failed while stopping: {e}"),
            Ok(None) => return carried,
            Err(_) => {
                warn!("in-flight work did not finish within {grace:?}; abandoning it");
                set.abort_all();
                return carried;
            }
        }
    }
}

/// Waits until `deadline` for the HTTP server to finish its open connections (it stops accepting new
/// ones when `shutdown` fires), then drops the rest: a client that never completes its request must
/// not hold the exit.
async fn drain_servers(servers: &mut JoinSet<()>, deadline: Instant) {
    loop {
        match tokio::time::timeout_at(deadline, servers.join_next()).await {
            Ok(Some(Err(e))) => error!("HTTP server failed while stopping: {e}"),
            Ok(Some(Ok(()))) => {}
            Ok(None) => return,
            Err(_) => {
                warn!("HTTP connections still open at the end of the grace period; closing them");
                servers.shutdown().await;
                return;
            }
        }
    }
}

/// Who may use the API, and what authenticates peer messages, as the HTTP server needs it.
fn api_access(config: &Config) -> crate::state::ApiAccess {
    crate::state::ApiAccess {
        token: config.api.token.clone(),
        read_needs_token: config.api.read == config::ReadAccess::Token,
        peer_secret: config.cluster.as_ref().map(|c| c.secret.clone()),
        max_clock_skew: config
            .cluster
            .as_ref()
            .map_or(config::DEFAULT_MAX_CLOCK_SKEW, |c| c.max_clock_skew),
    }
}

/// What the shared state needs to know about the configured services.
fn configured_services(config: &Config) -> Vec<ConfiguredService> {
    config
        .services
        .iter()
        .map(|s| ConfiguredService {
            fqdn: s.fqdn.clone(),
            zone: s.zone.clone(),
            writers: s.writers.clone(),
            check: s.check.type_name(),
            endpoints: s.endpoints.clone(),
        })
        .collect()
}

/// Loads the configuration at `path`, for the CLI.
///
/// # Errors
/// As [`config::load`].
pub fn load(path: &Path) -> Result<Config, config::ConfigError> {
    config::load(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_that_keeps_panicking_is_restarted_ever_more_slowly() {
        let t0 = tokio::time::Instant::now();
        let s = Duration::from_secs;
        let mut previous = None;
        let mut delays = Vec::new();
        for k in 0..9 {
            let (r, d) = restart_delay(previous, t0 + s(k));
            previous = Some(r);
            delays.push(d.as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(previous.unwrap().count, 9);
        // After ten quiet minutes a panic starts over at one second.
        let (r, d) = restart_delay(previous, t0 + s(8) + RESTART_RESET);
        assert_eq!((r.count, d), (1, RESTART_MIN));
        // A count far beyond the cap neither overflows nor exceeds the maximum.
        let many = Restarts {
            count: u32::MAX,
            last: t0,
        };
        assert_eq!(restart_delay(Some(many), t0).1, RESTART_MAX);
    }
}
