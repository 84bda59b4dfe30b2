//! The status document: what `GET /api/v1/status` returns, and the one schema the dashboard, metrics
//! and audit log will share. Plain `Serialize` structs; [`super::NodeState::snapshot`] builds them.
//!
//! Wall-clock times are `*_unix_ms` (milliseconds since the Unix epoch); durations carry their unit
//! in the name (`latency_ms`, `last_heard_ms_ago`).

use std::collections::BTreeMap;

use serde::Serialize;

/// This node's whole status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// `[node].id`.
    pub node: String,
    /// The agreement generation (wall-clock ms when the current configuration started); peers use it
    /// to tell a restart from a replay.
    pub generation: u64,
    /// Why this node neither votes nor writes, if it does not.
    pub isolated: Option<String>,
    /// `[cluster].self_check` targets.
    pub self_check_targets: Vec<String>,
    /// The leader this node recognises: the one node that writes to DNS.
    pub leader: Option<String>,
    /// Whether this node is the leader.
    pub am_leader: bool,
    /// Deprecated alias of `leader` (the elected node used to be called the writer, which is the DNS
    /// back end's name); same value. Will be removed in a future release.
    pub writer: Option<String>,
    /// Deprecated alias of `am_leader`; same value. Will be removed in a future release.
    pub am_writer: bool,
    /// Leader changes seen by this node.
    pub term: u64,
    /// Nodes heard within the vote lifetime, this node included.
    pub live_nodes: Vec<String>,
    /// The other configured nodes.
    pub peers: Vec<PeerStatus>,
    /// Rejected peer messages by reason (`authentication`, `malformed`, `replay`, `clock`,
    /// `unknown_node`, `version`).
    pub rejected_messages: BTreeMap<String, u64>,
    /// Every endpoint's cluster state and, when known, this node's own last probe.
    pub endpoints: Vec<EndpointStatus>,
    /// Every configured service: what is published, the last plan and write, recent events.
    pub services: Vec<ServiceStatus>,
    /// The operator's overrides not deleted and not ended (active or scheduled), in id order.
    pub overrides: Vec<OverrideStatus>,
    /// The probe engine's own health: its lateness and the probes it abstained from.
    pub engine: EngineStatus,
}

/// One override, as the status document shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverrideStatus {
    /// The override: id, endpoint, service (`null`: every service listing it), kind, comment,
    /// `starts_unix_ms`, `ends_unix_ms`, `created_unix_ms`, `updated_unix_ms`, origin node.
    #[serde(flatten)]
    pub o: crate::decide::overrides::Override,
    /// In effect now (false: scheduled, not started yet).
    pub active: bool,
}

/// The probe engine's own health ([`crate::observe::lag`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineStatus {
    /// How late the runtime's timers fire now (the lag monitor's last measurement), ms.
    pub scheduler_lag_ms: f64,
    /// Probes whose failure was discarded because rrguard itself was late, by reason (`lag`); they
    /// counted neither for nor against their endpoints.
    pub probes_abstained: BTreeMap<String, u64>,
    /// Probe slots (`[node] max_probes_in_flight`).
    pub max_probes_in_flight: u64,
    /// Probes running now, each holding a slot (at most `max_probes_in_flight`).
    pub probes_in_flight: u64,
    /// Probes that found every slot taken and started late, since start-up.
    pub probe_slot_waits: u64,
    /// Fast confirmations run at the plain `interval` because rrguard itself was late, since
    /// start-up.
    pub confirmations_shed: u64,
}

/// One other node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// Its `[node].id`.
    pub id: String,
    /// Heard within the vote lifetime.
    pub live: bool,
    /// Its votes count: live, not isolated, and its latest message answers a recent one of this
    /// node's (false for a few hundred ms after a start or a heal, or while only old snapshots
    /// arrive).
    pub votes_count: bool,
    /// When this node last accepted a message from it.
    pub last_heard_unix_ms: Option<u64>,
    /// How long ago that was, computed when the status is read.
    pub last_heard_ms_ago: Option<u64>,
}

/// One endpoint of one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointStatus {
    /// The service's fqdn.
    pub service: String,
    /// The endpoint's address.
    pub endpoint: String,
    /// The agreed state: `up`, `down` or `unknown`.
    pub cluster_state: String,
    /// Nodes whose up vote counted.
    pub up_votes: Vec<String>,
    /// Nodes whose down vote counted.
    pub down_votes: Vec<String>,
    /// Agreeing votes needed to change the cluster state.
    pub needed: usize,
    /// This node's own last probe, `null` until one is recorded.
    pub local: Option<LocalProbe>,
    /// Its flap-damping figure, `null` when the service has no `[service.damping]` or the endpoint
    /// has not changed state yet.
    pub damping: Option<DampingStatus>,
}

/// An endpoint's flap-damping figure (RFC 2439 figure of merit).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DampingStatus {
    /// The penalty, decayed to when the service last published its state.
    pub penalty: f64,
    /// Kept out of DNS until the penalty decays below `reuse`.
    pub suppressed: bool,
    /// When it will be reused if it changes no more, while suppressed.
    pub reuse_unix_ms: Option<u64>,
}

/// This node's last probe of an endpoint and the local verdict it led to.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LocalProbe {
    /// The local verdict: `up`, `down` or `unknown`.
    pub state: String,
    /// Whether the last probe passed.
    pub ok: bool,
    /// What the last probe saw: `HTTP 200`, `connection refused`, …
    pub detail: String,
    /// How long the last probe took.
    pub latency_ms: f64,
    /// When the current local verdict began.
    pub since_unix_ms: u64,
    /// When the last probe was recorded.
    pub last_probe_unix_ms: u64,
    /// The other verdict this node's probes are heading for, while a streak towards it is in
    /// progress (an up endpoint failing, a down one answering); `null` when the results agree with
    /// the verdict.
    pub heading: Option<Heading>,
}

/// A streak of probe results towards another verdict: `have` of the `need` results in a row that
/// make the endpoint `to` (`need` is `fall` or `rise`, or more under the loss-aware fall).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Heading {
    /// `up` or `down`.
    pub to: String,
    /// Results in a row so far.
    pub have: u32,
    /// Results in a row the verdict needs.
    pub need: u32,
}

impl LocalProbe {
    /// The HTTP status code the last probe got, when it was an HTTP(S) probe that got an answer:
    /// the HTTP check's detail always starts with `HTTP <code>` then (`HTTP 503 Service
    /// Unavailable not in expected statuses`); `None` otherwise.
    pub fn http_status(&self) -> Option<u16> {
        let rest = self.detail.strip_prefix("HTTP ")?;
        let code = rest.split(|c: char| !c.is_ascii_digit()).next()?;
        code.parse().ok().filter(|c| (100..1000).contains(c))
    }
}

/// One configured service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// The name whose records rrguard manages.
    pub fqdn: String,
    /// The zone that holds it.
    pub zone: String,
    /// How its endpoints are checked: `http`, `tcp`, `exec` or `dns`.
    pub check: String,
    /// Its first DNS writer (`[[writer]].name`); `published`, `published_known_unix_ms` and
    /// `last_write_unix_ms` describe it.
    pub writer: String,
    /// Every writer of the service in configured order, each reconciled on its own.
    pub writers: Vec<WriterStatus>,
    /// The addresses last seen published (read from DNS or written), sorted.
    pub published: Vec<String>,
    /// When this node last learned what DNS publishes for the service (a read, or a write read back);
    /// `null` until it has.
    pub published_known_unix_ms: Option<u64>,
    /// The last non-empty plan, as rendered for logs.
    pub last_plan: Option<String>,
    /// When the last successful write finished.
    pub last_write_unix_ms: Option<u64>,
    /// Why the last write failed; `null` once a write succeeds.
    pub last_error: Option<String>,
    /// Why removals are held back, while they are.
    pub hold: Option<String>,
    /// Recent events, oldest first, at most [`super::EVENTS_PER_SERVICE`].
    pub events: Vec<Event>,
    /// Whether this node has probed at least one of the service's endpoints, for readiness (an
    /// endpoint enters [`NodeStatus::endpoints`] only with a first verdict, which one that never
    /// settles never gets). Not serialized.
    #[serde(skip)]
    pub probed: bool,
}

/// One writer of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriterStatus {
    /// `[[writer]].name`.
    pub name: String,
    /// The addresses last seen published there, sorted.
    pub published: Vec<String>,
    /// When this node last learned what it publishes; `null` until it has.
    pub published_known_unix_ms: Option<u64>,
    /// When the last successful write to it finished.
    pub last_write_unix_ms: Option<u64>,
    /// Why the last write to it failed; `null` once a write succeeds.
    pub last_error: Option<String>,
    /// The records last seen published there, with their TTLs, sorted by address.
    pub records: Vec<RecordStatus>,
    /// Why each configured endpoint and published address is in or out, by the plan this node would
    /// make now (empty while this node does not plan for the writer: not the leader, or nothing read).
    pub standing: Vec<StandingStatus>,
    /// What that plan would change now (empty: nothing).
    pub pending: Vec<ChangeStatus>,
    /// Changes that plan wants but a change limit (`max_changes`, `max_remove_fraction`) holds
    /// back, first planned first; `reason` names the limit (empty: none).
    pub queued: Vec<ChangeStatus>,
}

/// One published address record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RecordStatus {
    /// The address.
    pub address: String,
    /// Its TTL, seconds (`null` when not known, as for a removed record in the audit log).
    pub ttl: Option<u32>,
}

/// Why one address is in or out of the set a writer should publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StandingStatus {
    /// The address.
    pub address: String,
    /// Whether it is in the desired set.
    pub published: bool,
    /// The rule's machine name (`verdict`, `all_down`, `fail_closed`, `held_back`,
    /// `awaiting_verdicts`, `unsettled`, `unlisted`, `unlisted_kept`, …).
    pub reason_kind: String,
    /// The rule, for a person (`down, but fewer than min_healthy=1 up: all_down=keep_all`).
    pub reason: String,
}

/// One change of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ChangeStatus {
    /// `add`, `remove` or `ttl` (rewrite with the service's TTL).
    pub op: String,
    /// The address.
    pub address: String,
    /// The reason's machine name, as in [`StandingStatus::reason_kind`].
    pub reason_kind: String,
    /// The reason, for a person.
    pub reason: String,
}

impl WriterStatus {
    /// A writer nothing is known about yet.
    pub fn new(name: &str) -> Self {
        WriterStatus {
            name: name.to_owned(),
            published: Vec::new(),
            published_known_unix_ms: None,
            last_write_unix_ms: None,
            last_error: None,
            records: Vec::new(),
            standing: Vec::new(),
            pending: Vec::new(),
            queued: Vec::new(),
        }
    }
}

/// Something that happened to a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When.
    pub unix_ms: u64,
    /// The service's fqdn.
    pub service: String,
    /// What kind of thing.
    pub kind: EventKind,
    /// For a person.
    pub message: String,
    /// The endpoint concerned (`probe_transition`, `endpoint_state`); omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The state entered (`up`, `down`; `isolated`, `joined` for the node); omitted when the kind has
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The state left (`unknown` before the first verdict); omitted when `state` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// The kinds of [`Event`], serialized in `snake_case`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// This node's verdict on an endpoint changed.
    ProbeTransition,
    /// A new plan: changes this node intends to make.
    Plan,
    /// A plan was written to DNS.
    DnsUpdated,
    /// A write failed.
    WriteFailed,
    /// Removals started or stopped being held back.
    Hold,
    /// An operator's override took effect, ended, was set or deleted.
    Override,
    /// The agreed (cluster) state of an endpoint changed between `up` and `down`, or was first
    /// agreed. On a single node it follows this node's verdicts.
    EndpointState,
    /// This node became isolated (it lost the majority of the cluster, or its self-check failed): it
    /// stops voting and writing. A node-wide event: `service` is empty.
    Isolated,
    /// This node is no longer isolated (quorum regained, self-check passes). A node-wide event:
    /// `service` is empty.
    Rejoined,
    /// Flap damping suppressed or reused an endpoint.
    Damping,
    /// Selection failed over or back between priority tiers, or the canary kill switch moved.
    Select,
    /// Anything else worth a line.
    Note,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 12] = [
        EventKind::ProbeTransition,
        EventKind::Plan,
        EventKind::DnsUpdated,
        EventKind::WriteFailed,
        EventKind::Hold,
        EventKind::Override,
        EventKind::EndpointState,
        EventKind::Isolated,
        EventKind::Rejoined,
        EventKind::Damping,
        EventKind::Select,
        EventKind::Note,
    ];

    /// The kind as serialized and written in config (`endpoint_state`, `dns_updated`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ProbeTransition => "probe_transition",
            EventKind::Plan => "plan",
            EventKind::DnsUpdated => "dns_updated",
            EventKind::WriteFailed => "write_failed",
            EventKind::Hold => "hold",
            EventKind::Override => "override",
            EventKind::EndpointState => "endpoint_state",
            EventKind::Isolated => "isolated",
            EventKind::Rejoined => "rejoined",
            EventKind::Damping => "damping",
            EventKind::Select => "select",
            EventKind::Note => "note",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown event kind {s:?}; one of: {}", names.join(", "))
            })
    }
}

impl NodeStatus {
    /// What this node still waits for before it is ready, for `GET /ready`: a first probe by this
    /// node of an endpoint of every service and of every endpoint in the view, and, on the leader, a
    /// first read of every service's published records. Empty when ready.
    ///
    /// An endpoint enters the view with this node's first verdict on it, so the view alone says
    /// nothing of a service whose endpoints have no verdict yet, or of one with
    /// `[service.self_register]` whose address this node has not discovered (nothing to probe yet):
    /// without the per-service rule a node whose services are all such would answer ready at once,
    /// on every node of a cluster (followers wait for no DNS read). A first *probe*, not a first
    /// verdict: an endpoint that never settles (results alternating, never `fall` or `rise` in a
    /// row) never gets a verdict, and must not keep the node not ready for good.
    pub fn waiting_for(&self) -> Vec<String> {
        let mut waiting: Vec<String> = self
            .services
            .iter()
            .filter(|s| !s.probed && !self.endpoints.iter().any(|e| e.service == s.fqdn))
            .map(|s| {
                format!(
                    "a first probe of an endpoint of {} (with self_register: once this node's address is discovered)",
                    s.fqdn
                )
            })
            .collect();
        waiting.extend(
            self.endpoints
                .iter()
                .filter(|e| e.local.is_none())
                .map(|e| format!("first probe of {} ({})", e.endpoint, e.service)),
        );
        if self.am_leader {
            waiting.extend(self.services.iter().flat_map(|s| {
                s.writers
                    .iter()
                    .filter(|w| w.published_known_unix_ms.is_none())
                    .map(|w| format!("the records {} publishes (writer {})", s.fqdn, w.name))
            }));
        }
        waiting
    }
}
