//! Shared, typed node state: the one place the daemon publishes what this node knows and the outside
//! (`expose`: the status API now; the dashboard, metrics and audit log later) reads it.
//!
//! It owns:
//! - the cluster part, written by the agreement actor after every recompute ([`NodeState::set_cluster`]):
//!   view, leader, peers, rejected-message counters, per-endpoint tallies;
//! - per service, written by its controller: the published set, the last plan and hold, the last write
//!   and a bounded ring of [`Event`]s ([`NodeState::record_plan`], [`NodeState::record_write`],
//!   [`NodeState::set_published`], [`NodeState::push_event`]);
//! - per endpoint, this node's last probe ([`NodeState::record_probe`]) and its bounded history:
//!   latency buckets and state transitions ([`history`], persisted by [`NodeState::open_history`],
//!   read with [`NodeState::endpoint_history`]);
//! - per (service, writer), DNS write counters and a write-duration histogram for metrics
//!   ([`NodeState::record_write`], [`NodeState::record_write_duration`], [`NodeState::write_counters`]);
//! - the current generation's peer inbox ([`NodeState::set_inbox`], [`inbox`]);
//! - the event stream: every [`Event`] recorded in a ring is also sent to the subscribers of
//!   [`NodeState::subscribe`] (alerts), and every probe to those of [`NodeState::subscribe_probes`]
//!   (StatsD). Both are `tokio::sync::broadcast` channels: sending never waits, and a subscriber that
//!   falls more than [`EVENT_STREAM_CAPACITY`] (or [`PROBE_STREAM_CAPACITY`]) behind loses the oldest
//!   and is told how many (`RecvError::Lagged`), so a slow consumer never slows the daemon.
//!
//! Two kinds of event are derived here from what the agreement actor publishes
//! ([`NodeState::set_cluster`]), because only this state outlives a reload: `endpoint_state` when an
//! endpoint's agreed state changes between up and down (or is first agreed), and `isolated` /
//! `rejoined` when this node loses or regains its place in the cluster. A reload starts a fresh
//! agreement core that knows nothing yet; comparing with what this state remembers keeps it from
//! reporting every endpoint again, and from reporting the moments every new generation spends
//! hearing its peers as an isolation.
//!
//! Readers get a consistent copy with [`NodeState::snapshot`], a [`NodeStatus`] that serializes to the
//! status document. Updates never wait on readers for long: every method holds a `std` lock for a few
//! field updates and never across an `.await`. Times that leave the process are wall-clock Unix
//! milliseconds (`*_unix_ms`); nothing here decides anything.
//!
//! Calls about a service that [`NodeState::set_services`] did not list are ignored, so a controller of
//! an old generation cannot resurrect a removed service.

pub mod audit;
mod counters;
pub mod history;
pub mod inbox;
pub mod overrides;
mod status;
mod store;

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc};

use crate::agree::Tallies;
use crate::observe::health::Health;
use crate::observe::probe::ProbeResult;

pub use audit::{AuditLog, AuditRecord, Evidence, VoteEvidence, WriteRecord};
pub use counters::{Histogram, PeerMessageCounters, WRITE_DURATION_BUCKETS, WriteCounters};
pub use inbox::{Inbound, InboundError};
pub use status::{
    ChangeStatus, DampingStatus, EndpointStatus, EngineStatus, Event, EventKind, Heading,
    LocalProbe, NodeStatus, OverrideStatus, PeerStatus, RecordStatus, ServiceStatus,
    StandingStatus, WriterStatus,
};

/// Events kept per service; older ones are dropped.
pub const EVENTS_PER_SERVICE: usize = 50;
/// Events a subscriber of [`NodeState::subscribe`] may fall behind before it loses the oldest.
pub const EVENT_STREAM_CAPACITY: usize = 1024;
/// Probe samples a subscriber of [`NodeState::subscribe_probes`] may fall behind before it loses the
/// oldest.
pub const PROBE_STREAM_CAPACITY: usize = 8192;

/// One probe of one endpoint, as [`NodeState::subscribe_probes`] delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSample {
    /// The service's fqdn.
    pub service: String,
    /// The endpoint probed.
    pub endpoint: IpAddr,
    /// Whether the probe passed.
    pub ok: bool,
    /// How long it took.
    pub latency: Duration,
}

/// Milliseconds since the Unix epoch, by the wall clock (0 if the clock is before 1970).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl EventKind {
    /// The kind as serialized (`snake_case`), as the API and the audit log name it.
    pub fn name(self) -> String {
        self.as_str().to_owned()
    }
}

impl Event {
    /// An event stamped now.
    pub fn now(service: &str, kind: EventKind, message: impl Into<String>) -> Event {
        Event::at(now_unix_ms(), service, kind, message)
    }

    /// An event stamped `unix_ms`, with no endpoint or state.
    pub fn at(unix_ms: u64, service: &str, kind: EventKind, message: impl Into<String>) -> Event {
        Event {
            unix_ms,
            service: service.to_owned(),
            kind,
            message: message.into(),
            endpoint: None,
            state: None,
            previous: None,
        }
    }

    /// This event about `endpoint`, which went from `previous` to `state`.
    pub fn about(mut self, endpoint: &str, state: &str, previous: &str) -> Event {
        self.endpoint = Some(endpoint.to_owned());
        self.state = Some(state.to_owned());
        self.previous = Some(previous.to_owned());
        self
    }
}

/// What the agreement actor knows, as it publishes it with [`NodeState::set_cluster`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    /// `[node].id`.
    pub node: String,
    /// The agreement generation.
    pub generation: u64,
    /// Why this node is isolated, if it is.
    pub isolated: Option<String>,
    /// `[cluster].self_check` targets.
    pub self_check_targets: Vec<String>,
    /// The leader this node recognises: the one node that writes to DNS.
    pub leader: Option<String>,
    /// Whether that is this node.
    pub am_leader: bool,
    /// Leader changes seen.
    pub term: u64,
    /// Nodes heard within the vote lifetime, this node included.
    pub live_nodes: Vec<String>,
    /// The other nodes (`last_heard_ms_ago` is recomputed by [`NodeState::snapshot`]).
    pub peers: Vec<PeerStatus>,
    /// Rejected peer messages by reason.
    pub rejected_messages: BTreeMap<String, u64>,
    /// Per-endpoint tallies, shared with the agreement's view (each service's table is an `Arc`):
    /// the status document's `endpoints[]` are made from them on request, with this node's own
    /// probes ([`NodeState::snapshot`]), instead of a copy of 10,000 entries kept up to date.
    pub tallies: Tallies,
}

/// A configured service, as [`NodeState::set_services`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredService {
    /// The service's fqdn, as the controllers spell it.
    pub fqdn: String,
    /// Its zone.
    pub zone: String,
    /// Its DNS writers' names, in configured order (at least one).
    pub writers: Vec<String>,
    /// Its check type (`http`, `tcp`, `exec`, `dns`).
    pub check: String,
    /// Its endpoints.
    pub endpoints: Vec<IpAddr>,
}

/// The shared handle: cheap to clone, one per daemon, kept across reloads.
#[derive(Debug, Clone)]
pub struct NodeState {
    inner: Arc<RwLock<Inner>>,
    inbox: Arc<RwLock<Option<mpsc::Sender<Inbound>>>>,
    overrides: overrides::OverrideStore,
    api: Arc<RwLock<ApiAccess>>,
    events_tx: broadcast::Sender<Event>,
    probes_tx: broadcast::Sender<ProbeSample>,
    /// Per-endpoint history, behind its own lock so that the probe path never waits on readers of
    /// `inner`, nor `inner`'s writers on the history store's copies. Lock order: `inner`, then
    /// `history`.
    history: Arc<Mutex<history::History>>,
    /// Its persistent copy, once opened.
    history_store: Arc<Mutex<Option<history::HistoryStore>>>,
}

/// Who may use the HTTP API, as `[api]` configures it; kept here so that a reload takes effect
/// without rebinding, and so that `expose` never reads the configuration.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiAccess {
    /// The bearer token mutations (and, with `read_needs_token`, reads) need; `None`: mutations are
    /// refused (403).
    pub token: Option<Vec<u8>>,
    /// Reads need the token too (`[api] read = "token"`).
    pub read_needs_token: bool,
    /// The cluster's shared secret, which authenticates peer messages other than votes (overrides).
    pub peer_secret: Option<Vec<u8>>,
    /// Largest accepted clock difference in peer messages.
    pub max_clock_skew: Duration,
}

impl std::fmt::Debug for ApiAccess {
    // Never print the token or the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAccess")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("read_needs_token", &self.read_needs_token)
            .field(
                "peer_secret",
                &self.peer_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            inner: Arc::default(),
            inbox: Arc::default(),
            overrides: overrides::OverrideStore::default(),
            api: Arc::default(),
            events_tx: broadcast::channel(EVENT_STREAM_CAPACITY).0,
            probes_tx: broadcast::channel(PROBE_STREAM_CAPACITY).0,
            history: Arc::default(),
            history_store: Arc::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    cluster: Option<ClusterStatus>,
    /// This node's last probe, by service then endpoint. Updated in place on every probe (the hot
    /// path at 10,000 endpoints: no allocation once an endpoint has its entry).
    local: BTreeMap<String, BTreeMap<IpAddr, LocalProbe>>,
    services: BTreeMap<String, Service>,
    /// DNS write counters by (service, writer); kept across reloads so that counters never go back.
    writes: BTreeMap<(String, String), WriteCounters>,
    /// The last agreed `up`/`down` per (service, endpoint as text), kept across reloads.
    agreed: BTreeMap<(String, String), String>,
    /// What the isolation events have said so far.
    isolation: IsolationMemo,
    engine: EngineStatus,
    /// Flap-damping figures by service, then endpoint as text.
    damping: BTreeMap<String, BTreeMap<String, DampingStatus>>,
    /// The durable audit log and this node's id, once attached.
    audit: Option<Audited>,
    /// Per (service, endpoint as text): the agreed state and since when (Unix ms).
    cluster_since: BTreeMap<(String, String), (String, u64)>,
    /// Peer messages received, kept across reloads so that counters never go back.
    peer_messages: PeerMessageCounters,
}

/// The audit log and the node id its records carry.
#[derive(Debug, Clone)]
struct Audited {
    log: AuditLog,
    node: String,
}

impl Audited {
    fn event(&self, event: &Event) -> AuditRecord {
        AuditRecord {
            seq: 0,
            unix_ms: event.unix_ms,
            node: self.node.clone(),
            service: event.service.clone(),
            kind: event.kind.name(),
            message: event.message.clone(),
            writer: None,
            write: None,
        }
    }
}

/// Remembers enough to report isolation once per episode, and not the start of each generation.
#[derive(Debug, Default)]
struct IsolationMemo {
    /// The agreement generation last published.
    generation: u64,
    /// That generation has been part of the cluster (not isolated) at least once.
    joined: bool,
    /// An `isolated` event was sent and no `rejoined` since.
    reported: bool,
}

#[derive(Debug)]
struct Service {
    /// Everything but `events`, which live in the ring.
    status: ServiceStatus,
    events: VecDeque<Event>,
    /// Where events also go, durably.
    audit: Option<Audited>,
}

impl Service {
    /// Adds `event` to the ring, to the audit log, and sends it to the subscribers.
    fn push(&mut self, events_tx: &broadcast::Sender<Event>, event: Event) {
        // DNS writes reach the audit log with their evidence ([`NodeState::audit_write`]).
        if let Some(a) = &self.audit
            && !matches!(event.kind, EventKind::DnsUpdated | EventKind::WriteFailed)
        {
            a.log.append(a.event(&event));
        }
        // An error only means nobody subscribes.
        let _ = events_tx.send(event.clone());
        self.remember(event);
    }

    /// Adds `event` to the ring only, dropping the oldest beyond [`EVENTS_PER_SERVICE`].
    fn remember(&mut self, event: Event) {
        if self.events.len() == EVENTS_PER_SERVICE {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

impl NodeState {
    /// An empty state: no cluster status yet, no services, no inbox.
    pub fn new() -> NodeState {
        NodeState::default()
    }

    /// The operator's overrides ([`overrides::OverrideStore`]).
    pub fn overrides(&self) -> &overrides::OverrideStore {
        &self.overrides
    }

    /// Sets who may use the API (at start and on every reload).
    pub fn set_api_access(&self, access: ApiAccess) {
        *self.api.write().unwrap_or_else(PoisonError::into_inner) = access;
    }

    /// Who may use the API.
    pub fn api_access(&self) -> ApiAccess {
        self.api
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn history(&self) -> MutexGuard<'_, history::History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the persistent endpoint history in `state_dir` and restores what it holds (call once,
    /// before [`NodeState::set_services`], which keeps the configured endpoints' part). From then
    /// on its thread commits the history's changes every [`history::PERSIST_INTERVAL`].
    ///
    /// # Errors
    /// [`history::HistoryError`] when `state_dir` cannot hold it; the history then stays in memory
    /// only.
    pub fn open_history(
        &self,
        state_dir: &std::path::Path,
    ) -> Result<history::HistoryStore, history::HistoryError> {
        let store = history::HistoryStore::open(state_dir, self.history.clone(), now_unix_ms())?;
        *self
            .history_store
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(store.clone());
        Ok(store)
    }

    /// One endpoint's history at `now_unix_ms`: the kept latency buckets (oldest first), their
    /// summary and the kept transitions (oldest first); `None` for an endpoint not configured.
    /// Buckets older than the last minute come from the store (a read of `history.redb`): call
    /// from a blocking context.
    pub fn endpoint_history(
        &self,
        service: &str,
        endpoint: IpAddr,
        now_unix_ms: u64,
    ) -> Option<history::Document> {
        let store = self
            .history_store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        history::read(
            &self.history,
            store.as_ref(),
            service,
            endpoint,
            now_unix_ms,
        )
    }

    /// Per endpoint of `service`, the mean latency of this node's passed probes in the history
    /// (for `fastest`'s long-term mean after a restart or reload).
    pub fn history_long_term_means(&self, service: &str) -> Vec<(IpAddr, Duration)> {
        self.history().long_term_means(service, now_unix_ms())
    }

    /// Sets the configured services (at start and on every reload). Services and endpoints still
    /// configured keep their history; the others are forgotten.
    pub fn set_services(&self, services: impl IntoIterator<Item = ConfiguredService>) {
        let mut inner = self.write();
        let audit = inner.audit.clone();
        let mut old = std::mem::take(&mut inner.services);
        let mut keep_local = std::collections::BTreeSet::new();
        let mut configured: Vec<(String, Vec<IpAddr>)> = Vec::new();
        for s in services {
            configured.push((s.fqdn.clone(), s.endpoints.clone()));
            keep_local.extend(
                s.endpoints
                    .iter()
                    .map(|ip| (s.fqdn.clone(), ip.to_string())),
            );
            let entry = match old.remove(&s.fqdn) {
                Some(mut kept) => {
                    kept.status.zone = s.zone;
                    kept.status.check = s.check;
                    kept.status.writer = s.writers.first().cloned().unwrap_or_default();
                    let mut old_writers = std::mem::take(&mut kept.status.writers);
                    kept.status.writers = s
                        .writers
                        .iter()
                        .map(
                            |name| match old_writers.iter().position(|w| &w.name == name) {
                                Some(i) => old_writers.swap_remove(i),
                                None => WriterStatus::new(name),
                            },
                        )
                        .collect();
                    kept
                }
                None => Service {
                    status: ServiceStatus {
                        fqdn: s.fqdn.clone(),
                        zone: s.zone,
                        check: s.check,
                        writer: s.writers.first().cloned().unwrap_or_default(),
                        writers: s.writers.iter().map(|n| WriterStatus::new(n)).collect(),
                        published: Vec::new(),
                        published_known_unix_ms: None,
                        last_plan: None,
                        last_write_unix_ms: None,
                        last_error: None,
                        hold: None,
                        events: Vec::new(),
                        probed: false,
                    },
                    events: VecDeque::new(),
                    audit: None,
                },
            };
            let mut entry = entry;
            entry.audit = audit.clone();
            inner.services.insert(s.fqdn, entry);
        }
        inner.local.retain(|service, probes| {
            probes.retain(|ip, _| keep_local.contains(&(service.clone(), ip.to_string())));
            !probes.is_empty()
        });
        self.history().retain(
            configured
                .iter()
                .map(|(fqdn, eps)| (fqdn.as_str(), eps.as_slice())),
        );
        inner
            .cluster_since
            .retain(|key, _| keep_local.contains(key));
        inner.agreed.retain(|key, _| keep_local.contains(key));
    }

    /// Attaches the durable audit log: from now on every event, and every DNS write with
    /// [`NodeState::audit_write`], is also appended there, stamped with `node`. Call before
    /// [`NodeState::set_services`].
    pub fn attach_audit(&self, log: AuditLog, node: &str) {
        let audited = Audited {
            log,
            node: node.to_owned(),
        };
        let mut inner = self.write();
        for svc in inner.services.values_mut() {
            svc.audit = Some(audited.clone());
        }
        inner.audit = Some(audited);
    }

    /// The audit log, if one is attached.
    pub fn audit_log(&self) -> Option<AuditLog> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .audit
            .as_ref()
            .map(|a| a.log.clone())
    }

    /// Records one DNS write of `service` through `writer` in the audit log, with its records and
    /// evidence (`message` is the event's line for a person). No-op without an audit log.
    pub fn audit_write(&self, service: &str, writer: &str, message: &str, write: WriteRecord) {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let Some(a) = &inner.audit else { return };
        let kind = if write.result == "ok" {
            EventKind::DnsUpdated
        } else {
            EventKind::WriteFailed
        };
        a.log.append(AuditRecord {
            seq: 0,
            unix_ms: now_unix_ms(),
            node: a.node.clone(),
            service: service.to_owned(),
            kind: kind.name(),
            message: message.to_owned(),
            writer: Some(writer.to_owned()),
            write: Some(write),
        });
    }

    /// Publishes what the agreement actor knows. Called by the actor after every recompute that
    /// changed something.
    ///
    /// Adds an [`EventKind::EndpointState`] event to the service's ring for every endpoint whose
    /// agreed state is now `up` or `down` and differs from the last one agreed (`unknown` — no
    /// agreement, votes expired, this node isolated — is no change). Sends an
    /// [`EventKind::Isolated`] event when this node becomes isolated after its current agreement
    /// generation had been part of the cluster, and [`EventKind::Rejoined`] when an isolation so
    /// reported ends; both node-wide events are also added to every service's ring and, once, to the
    /// audit log. Keeps, per endpoint, since when its agreed state (`unknown` included) is in force.
    pub fn set_cluster(&self, cluster: ClusterStatus) {
        self.set_cluster_at(cluster, now_unix_ms());
    }

    fn set_cluster_at(&self, cluster: ClusterStatus, now_unix_ms: u64) {
        let mut inner = self.write();
        let Inner {
            services,
            agreed,
            isolation,
            cluster_since,
            audit,
            ..
        } = &mut *inner;
        for ((service, ip), t) in cluster.tallies.iter() {
            let state = t.state.as_str();
            let key = (service.to_owned(), ip.to_string());
            if cluster_since
                .get(&key)
                .is_none_or(|(since_state, _)| since_state != state)
            {
                cluster_since.insert(key.clone(), (state.to_owned(), now_unix_ms));
            }
            if !matches!(t.state, Health::Up | Health::Down) {
                continue;
            }
            let Some(svc) = services.get_mut(service) else {
                continue;
            };
            let previous = agreed.get(&key).map_or("unknown", String::as_str);
            if previous == state {
                continue;
            }
            let votes = if t.state == Health::Up {
                &t.up
            } else {
                &t.down
            };
            let message = format!(
                "{ip} is {state} (agreed by {}; was {previous})",
                votes.join(", ")
            );
            self.history()
                .record_agreed(service, ip, t.state == Health::Up, &message, now_unix_ms);
            let event = Event::at(now_unix_ms, service, EventKind::EndpointState, message)
                .about(&key.1, state, previous);
            svc.push(&self.events_tx, event);
            agreed.insert(key, state.to_owned());
        }
        if isolation.generation != cluster.generation {
            isolation.generation = cluster.generation;
            isolation.joined = false;
        }
        let node_event = match &cluster.isolated {
            None => {
                isolation.joined = true;
                std::mem::take(&mut isolation.reported).then(|| {
                    (
                        EventKind::Rejoined,
                        "this node is part of the cluster again: it votes and may write".to_owned(),
                        "joined",
                        "isolated",
                    )
                })
            }
            Some(why) if isolation.joined && !isolation.reported => {
                isolation.reported = true;
                Some((
                    EventKind::Isolated,
                    format!("this node is isolated ({why}): it stops voting and writing"),
                    "isolated",
                    "joined",
                ))
            }
            Some(_) => None,
        };
        if let Some((kind, message, state, previous)) = node_event {
            let mut event = Event::at(now_unix_ms, "", kind, message);
            event.state = Some(state.to_owned());
            event.previous = Some(previous.to_owned());
            if let Some(a) = audit {
                a.log.append(a.event(&event));
            }
            let _ = self.events_tx.send(event.clone());
            for (fqdn, svc) in services.iter_mut() {
                svc.remember(Event {
                    service: fqdn.clone(),
                    ..event.clone()
                });
            }
        }
        inner.cluster = Some(cluster);
    }

    /// Per (service, endpoint as text), since when (Unix ms) the agreed state shown in the status is
    /// in force, as this node saw it change.
    pub fn cluster_since(&self) -> BTreeMap<(String, String), u64> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .cluster_since
            .iter()
            .map(|(k, (_, since))| (k.clone(), *since))
            .collect()
    }

    /// Sets, for `service` through `writer`, the records last seen published with their TTLs, and
    /// what this node would plan now: why each address is in or out, and the pending changes. For
    /// the first writer, a change of an endpoint's standing (published or excluded, and the rule)
    /// is also a transition in its history.
    pub fn set_writer_plan(
        &self,
        service: &str,
        writer: &str,
        records: Vec<RecordStatus>,
        standing: Vec<StandingStatus>,
        pending: Vec<ChangeStatus>,
    ) {
        let now = now_unix_ms();
        let mut inner = self.write();
        let Some(svc) = inner.services.get_mut(service) else {
            return;
        };
        // The history follows the first writer's plan, as the service-level fields do.
        if svc.status.writer == writer {
            let mut history = self.history();
            for s in &standing {
                if let Ok(ip) = s.address.parse() {
                    history.record_standing(
                        service,
                        ip,
                        s.published,
                        &s.reason_kind,
                        &s.reason,
                        now,
                    );
                }
            }
        }
        if let Some(w) = svc.status.writers.iter_mut().find(|w| w.name == writer) {
            w.records = records;
            w.standing = standing;
            w.pending = pending;
        }
    }

    /// A receiver of every event recorded from now on: each one added to a service's ring, and the
    /// node-wide ones (`isolated`, `rejoined`, with an empty `service`) once. A receiver more than
    /// [`EVENT_STREAM_CAPACITY`] events behind loses the oldest (`RecvError::Lagged`); senders never
    /// wait for it.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events_tx.subscribe()
    }

    /// A receiver of every probe recorded from now on ([`NodeState::record_probe`]), for metrics
    /// pushed elsewhere. Lags like [`NodeState::subscribe`], beyond [`PROBE_STREAM_CAPACITY`].
    pub fn subscribe_probes(&self) -> broadcast::Receiver<ProbeSample> {
        self.probes_tx.subscribe()
    }

    /// Sets, for `service` through `writer`, the changes a change limit queues (see
    /// [`WriterStatus::queued`]).
    pub fn set_writer_queue(&self, service: &str, writer: &str, queued: Vec<ChangeStatus>) {
        let mut inner = self.write();
        if let Some(w) = inner
            .services
            .get_mut(service)
            .and_then(|s| s.status.writers.iter_mut().find(|w| w.name == writer))
        {
            w.queued = queued;
        }
    }

    /// Records this node's latest probe of `endpoint` of `service` and the local verdict after it
    /// (`verdict`: the endpoint's `HealthMachine` state), with the streak in progress after it
    /// (`heading`, as [`crate::observe::health::HealthMachine::heading`] gives it; shown as
    /// `local.heading`). A changed verdict restarts `since_unix_ms` and adds a
    /// [`EventKind::ProbeTransition`] event.
    pub fn record_probe(
        &self,
        service: &str,
        endpoint: IpAddr,
        result: &ProbeResult,
        verdict: Health,
        heading: Option<(Health, u32, u32)>,
    ) {
        self.record_probe_at(service, endpoint, result, verdict, heading, now_unix_ms());
    }

    fn record_probe_at(
        &self,
        service: &str,
        endpoint: IpAddr,
        result: &ProbeResult,
        verdict: Health,
        heading: Option<(Health, u32, u32)>,
        now_unix_ms: u64,
    ) {
        self.history()
            .record_probe(service, endpoint, result.ok, result.latency, now_unix_ms);
        let mut inner = self.write();
        let Inner {
            local, services, ..
        } = &mut *inner;
        let Some(svc) = services.get_mut(service) else {
            return;
        };
        if self.probes_tx.receiver_count() > 0 {
            let _ = self.probes_tx.send(ProbeSample {
                service: service.to_owned(),
                endpoint,
                ok: result.ok,
                latency: result.latency,
            });
        }
        let state = verdict.as_str();
        // To the microsecond: the status document shows `0.89`, not `0.8897799999999999`.
        let latency_ms = result.latency_ms();
        // Borrowed lookups: the service's and endpoint's entries are created once.
        let probes = match local.get_mut(service) {
            Some(probes) => probes,
            None => local.entry(service.to_owned()).or_default(),
        };
        let probe = probes.entry(endpoint).or_insert_with(|| LocalProbe {
            state: Health::Unknown.as_str().to_owned(),
            ok: result.ok,
            detail: String::new(),
            latency_ms,
            since_unix_ms: now_unix_ms,
            last_probe_unix_ms: now_unix_ms,
            heading: None,
        });
        if probe.state != state {
            svc.push(
                &self.events_tx,
                Event::at(
                    now_unix_ms,
                    service,
                    EventKind::ProbeTransition,
                    format!(
                        "{endpoint} is {state} by this node's probes ({}; was {})",
                        result.detail, probe.state
                    ),
                )
                .about(&endpoint.to_string(), state, &probe.state),
            );
            state.clone_into(&mut probe.state);
            probe.since_unix_ms = now_unix_ms;
        }
        probe.ok = result.ok;
        // Reuses the buffer: a steady endpoint's detail does not change.
        if probe.detail != result.detail {
            probe.detail.clone_from(&result.detail);
        }
        probe.latency_ms = latency_ms;
        probe.last_probe_unix_ms = now_unix_ms;
        probe.heading = heading.map(|(to, have, need)| Heading {
            to: to.as_str().to_owned(),
            have,
            need,
        });
    }

    /// Records the plan the controller just computed for `service`: `plan` as rendered for logs
    /// (empty when nothing would change) and `hold`, why removals are held back (`None` when they are
    /// not). A new non-empty plan adds a [`EventKind::Plan`] event, a change of hold a
    /// [`EventKind::Hold`] event; repeating the same plan adds nothing.
    pub fn record_plan(&self, service: &str, plan: &str, hold: Option<&str>) {
        let now = now_unix_ms();
        let mut inner = self.write();
        let Some(svc) = inner.services.get_mut(service) else {
            return;
        };
        if !plan.is_empty() && svc.status.last_plan.as_deref() != Some(plan) {
            svc.status.last_plan = Some(plan.to_owned());
            svc.push(
                &self.events_tx,
                Event::at(now, service, EventKind::Plan, plan.to_owned()),
            );
        }
        if svc.status.hold.as_deref() != hold {
            let message = match hold {
                Some(why) => format!("removals held back: {why}"),
                None => "removals no longer held back".to_owned(),
            };
            svc.status.hold = hold.map(str::to_owned);
            svc.push(
                &self.events_tx,
                Event::at(now, service, EventKind::Hold, message),
            );
        }
    }

    /// Records the outcome of a DNS write for `service` through `writer`: `Ok(())` sets
    /// `last_write_unix_ms`, clears `last_error` and adds a [`EventKind::DnsUpdated`] event (with the
    /// last plan); `Err(why)` sets `last_error` and adds a [`EventKind::WriteFailed`] event unless the
    /// same error was the last one (retries with backoff do not flood the ring). The service-level
    /// fields follow the first writer; its `last_error` is the first failing writer's (named when
    /// the service has several).
    pub fn record_write(&self, service: &str, writer: &str, outcome: Result<(), String>) {
        let now = now_unix_ms();
        let mut inner = self.write();
        let Inner {
            services, writes, ..
        } = &mut *inner;
        let Some(svc) = services.get_mut(service) else {
            return;
        };
        let several = svc.status.writers.len() > 1;
        let named = |m: &str| {
            if several {
                format!("writer {writer}: {m}")
            } else {
                m.to_owned()
            }
        };
        let Some(w) = svc.status.writers.iter_mut().find(|w| w.name == writer) else {
            return;
        };
        let counters = writes
            .entry((service.to_owned(), writer.to_owned()))
            .or_default();
        if outcome.is_ok() {
            counters.ok += 1;
        } else {
            counters.error += 1;
        }
        match outcome {
            Ok(()) => {
                w.last_write_unix_ms = Some(now);
                w.last_error = None;
                let message = svc
                    .status
                    .last_plan
                    .clone()
                    .unwrap_or_else(|| "records written".to_owned());
                svc.push(
                    &self.events_tx,
                    Event::at(now, service, EventKind::DnsUpdated, named(&message)),
                );
            }
            Err(why) => {
                let repeated = w.last_error.as_deref() == Some(why.as_str());
                w.last_error = Some(why.clone());
                if !repeated {
                    svc.push(
                        &self.events_tx,
                        Event::at(now, service, EventKind::WriteFailed, named(&why)),
                    );
                }
            }
        }
        let status = &mut svc.status;
        status.last_write_unix_ms = status.writers.first().and_then(|w| w.last_write_unix_ms);
        status.last_error = status.writers.iter().find_map(|w| {
            w.last_error.as_ref().map(|e| {
                if several {
                    format!("writer {}: {e}", w.name)
                } else {
                    e.clone()
                }
            })
        });
    }

    /// Records how long one DNS write (one `apply` call, whatever its outcome) of `service` through
    /// `writer` took.
    pub fn record_write_duration(&self, service: &str, writer: &str, took: Duration) {
        let mut inner = self.write();
        if !inner.services.contains_key(service) {
            return;
        }
        inner
            .writes
            .entry((service.to_owned(), writer.to_owned()))
            .or_default()
            .duration
            .observe(took.as_secs_f64());
    }

    /// Counts one write of `service` through `writer` that restored records changed out of band.
    pub fn record_drift_repaired(&self, service: &str, writer: &str) {
        let mut inner = self.write();
        if !inner.services.contains_key(service) {
            return;
        }
        inner
            .writes
            .entry((service.to_owned(), writer.to_owned()))
            .or_default()
            .drift_repaired += 1;
    }

    /// Counts one received peer message of `kind` (`votes`, `overrides`): accepted (`rejected` is
    /// `None`) or rejected for the reason given (see [`PeerMessageCounters`]).
    pub fn record_peer_message(&self, kind: &str, rejected: Option<&str>) {
        let (result, reason) = match rejected {
            None => ("accepted", "none"),
            Some(reason) => ("rejected", reason),
        };
        *self
            .write()
            .peer_messages
            .entry((kind.to_owned(), result.to_owned(), reason.to_owned()))
            .or_default() += 1;
    }

    /// The peer message counters, for metrics.
    pub fn peer_messages(&self) -> PeerMessageCounters {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .peer_messages
            .clone()
    }

    /// The DNS write counters, by (service, writer), for metrics.
    pub fn write_counters(&self) -> BTreeMap<(String, String), WriteCounters> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .writes
            .clone()
    }

    /// Sets the addresses of `service` last seen published through `writer` (read, or written and
    /// read back). The service-level `published` follows its first writer.
    pub fn set_published(
        &self,
        service: &str,
        writer: &str,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) {
        let mut addrs: Vec<IpAddr> = addrs.into_iter().collect();
        addrs.sort();
        addrs.dedup();
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        let now = now_unix_ms();
        let mut inner = self.write();
        if let Some(svc) = inner.services.get_mut(service) {
            if svc.status.writer == writer {
                svc.status.published = addrs.clone();
                svc.status.published_known_unix_ms = Some(now);
            }
            if let Some(w) = svc.status.writers.iter_mut().find(|w| w.name == writer) {
                w.published = addrs;
                w.published_known_unix_ms = Some(now);
            }
        }
    }

    /// Sets the flap-damping figures of `service`'s endpoints (replacing the previous ones).
    pub fn set_damping(&self, service: &str, figures: BTreeMap<IpAddr, DampingStatus>) {
        let figures = figures
            .into_iter()
            .map(|(ip, f)| (ip.to_string(), f))
            .collect();
        self.write().damping.insert(service.to_owned(), figures);
    }

    /// Adds an event to its service's ring (see [`Event::now`]); the oldest is dropped beyond
    /// [`EVENTS_PER_SERVICE`].
    pub fn push_event(&self, event: Event) {
        let mut inner = self.write();
        if let Some(svc) = inner.services.get_mut(&event.service) {
            svc.push(&self.events_tx, event);
        }
    }

    /// A consistent copy of everything, or `None` until the agreement actor has published once.
    pub fn snapshot(&self) -> Option<NodeStatus> {
        self.snapshot_at(now_unix_ms())
    }

    fn snapshot_at(&self, now_unix_ms: u64) -> Option<NodeStatus> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let c = inner.cluster.clone()?;
        let peers = c
            .peers
            .into_iter()
            .map(|p| PeerStatus {
                last_heard_ms_ago: p.last_heard_unix_ms.map(|t| now_unix_ms.saturating_sub(t)),
                ..p
            })
            .collect();
        let endpoints = c
            .tallies
            .iter()
            .map(|((service, ip), t)| {
                let endpoint = ip.to_string();
                EndpointStatus {
                    local: inner
                        .local
                        .get(service)
                        .and_then(|probes| probes.get(&ip))
                        .cloned(),
                    damping: inner
                        .damping
                        .get(service)
                        .and_then(|m| m.get(&endpoint))
                        .cloned(),
                    service: service.to_owned(),
                    endpoint,
                    cluster_state: t.state.as_str().to_owned(),
                    up_votes: t.up.clone(),
                    down_votes: t.down.clone(),
                    needed: t.needed,
                }
            })
            .collect();
        let services = inner
            .services
            .values()
            .map(|s| ServiceStatus {
                events: s.events.iter().cloned().collect(),
                probed: inner
                    .local
                    .get(&s.status.fqdn)
                    .is_some_and(|probes| !probes.is_empty()),
                ..s.status.clone()
            })
            .collect();
        Some(NodeStatus {
            node: c.node,
            generation: c.generation,
            isolated: c.isolated,
            self_check_targets: c.self_check_targets,
            writer: c.leader.clone(),
            am_writer: c.am_leader,
            leader: c.leader,
            am_leader: c.am_leader,
            term: c.term,
            live_nodes: c.live_nodes,
            peers,
            rejected_messages: c.rejected_messages,
            endpoints,
            services,
            overrides: {
                self.overrides
                    .list()
                    .into_iter()
                    .map(|o| OverrideStatus {
                        active: o.active_at(now_unix_ms),
                        o,
                    })
                    .collect()
            },
            engine: inner.engine.clone(),
        })
    }

    /// Records the probe engine's own health ([`crate::observe::lag::LagHandle::status`]).
    pub fn set_engine(&self, engine: EngineStatus) {
        self.write().engine = engine;
    }

    /// Sets the peer inbox of the current generation's agreement actor (`None` while there is none).
    pub fn set_inbox(&self, inbox_tx: Option<mpsc::Sender<Inbound>>) {
        *self.inbox.write().unwrap_or_else(PoisonError::into_inner) = inbox_tx;
    }

    /// The current generation's peer inbox, `None` while the node is starting.
    pub fn inbox(&self) -> Option<mpsc::Sender<Inbound>> {
        self.inbox
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests;
