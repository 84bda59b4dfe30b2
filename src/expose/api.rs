//! The read API under `/api/v1` (besides `/api/v1/status`): one service in detail, the plan, the
//! events, and the OpenAPI 3.1 document describing them, generated from these types by `utoipa`.
//!
//! - `GET /api/v1/services/{fqdn}`: [`ServiceDetail`]; 404 [`ApiError`] for a service that is not
//!   configured (the trailing dot of the fqdn is optional).
//! - `GET /api/v1/services/{fqdn}/endpoints/{ip}/history`: [`EndpointHistoryDocument`], one
//!   endpoint's latency buckets and state transitions from the node's history; 404 [`ApiError`]
//!   naming `fqdn` or `ip` for a service or endpoint that is not configured.
//! - `GET /api/v1/plan`: [`PlanDocument`], what each writer of each service would change now.
//! - `GET /api/v1/events?service=&kind=&since=&before=&limit=`: [`Page`], newest first, from the
//!   audit log (or, without one, from the in-memory rings); 400 [`ApiError`] naming the parameter
//!   for bad input (an unknown `kind` too: the message lists the kinds).
//! - `GET /api/v1/openapi.json`: the document.
//!
//! Errors are JSON `{"error": "...", "field": "..."}`. 503 until the agreement actor has published
//! once (as `/api/v1/status`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::state::audit::{MAX_PAGE, Page, Query};
use crate::state::history::{
    BUCKETS, BucketRecord, LatencySummary, RESOLUTION_MS, TRANSITIONS, TransitionRecord,
};
use crate::state::{
    AuditRecord, ChangeStatus, EventKind, Evidence, LocalProbe, NodeState, NodeStatus,
    RecordStatus, StandingStatus, VoteEvidence, WriteRecord,
};

/// Events returned when `limit` is not given.
pub const DEFAULT_EVENTS_LIMIT: usize = 100;

/// An error, for a program and a person.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// What is wrong and how to fix it.
    pub error: String,
    /// The path or query parameter at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

fn error(code: StatusCode, field: Option<&str>, message: impl Into<String>) -> Response {
    (
        code,
        Json(ApiError {
            error: message.into(),
            field: field.map(str::to_owned),
        }),
    )
        .into_response()
}

fn starting() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "the node is starting; try again in a moment",
    )
}

/// One service in detail.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceDetail {
    /// The name whose records rrguard manages.
    pub fqdn: String,
    /// Its zone.
    pub zone: String,
    /// How its endpoints are checked.
    pub check: String,
    /// `[node].id` of the node answering.
    pub node: String,
    /// The leader (the node that writes shared DNS).
    pub leader: Option<String>,
    /// Whether the answering node is the leader (only the leader plans: `standing` and `pending`
    /// are empty elsewhere).
    pub am_leader: bool,
    /// Why the answering node neither votes nor writes, if it does not.
    pub isolated: Option<String>,
    /// Every configured endpoint.
    pub endpoints: Vec<EndpointDetail>,
    /// Every writer of the service, in configured order.
    pub writers: Vec<WriterDetail>,
    /// Why removals are held back, while they are.
    pub hold: Option<String>,
    /// The last non-empty plan, as rendered for logs.
    pub last_plan: Option<String>,
}

/// One endpoint of a service.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointDetail {
    /// The address.
    pub endpoint: String,
    /// The agreed state: `up`, `down` or `unknown`.
    pub state: String,
    /// Since when this node sees that agreed state (Unix ms).
    pub since_unix_ms: Option<u64>,
    /// Agreeing votes needed to change it.
    pub needed: usize,
    /// The votes that counted, with their age.
    pub votes: Vec<VoteDetail>,
    /// This node's last probe (detail, latency) and local verdict.
    pub last_probe: Option<LocalProbe>,
    /// Whether the first writer's plan publishes it (`null` while this node does not plan).
    pub published: Option<bool>,
    /// Why, machine name (`verdict`, `all_down`, `held_back`, …).
    pub reason_kind: Option<String>,
    /// Why, for a person.
    pub reason: Option<String>,
}

/// One node's vote on an endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct VoteDetail {
    /// `[node].id`.
    pub node: String,
    /// `up` or `down`.
    pub vote: String,
    /// How old the vote is: for this node, since its last probe of the endpoint; for a peer,
    /// since its last accepted message (votes travel in those). `null` when unknown.
    pub age_ms: Option<u64>,
}

/// One writer of a service.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriterDetail {
    /// `[[writer]].name`.
    pub name: String,
    /// The records last seen published there, with TTLs.
    pub records: Vec<RecordStatus>,
    /// When this node last learned them (Unix ms).
    pub published_known_unix_ms: Option<u64>,
    /// When the last successful write finished (Unix ms).
    pub last_write_unix_ms: Option<u64>,
    /// Why the last write failed; `null` once one succeeds.
    pub last_error: Option<String>,
    /// Why each address is in or out.
    pub standing: Vec<StandingStatus>,
    /// What would change now.
    pub pending: Vec<ChangeStatus>,
    /// Changes a change limit (`max_changes`, `max_remove_fraction`) holds back, first planned
    /// first.
    pub queued: Vec<ChangeStatus>,
}

/// One endpoint's history on the answering node: its current state, its latency over the last
/// hour in buckets, and its last transitions.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointHistoryDocument {
    /// The service's fqdn, as configured.
    pub fqdn: String,
    /// The address.
    pub endpoint: String,
    /// `[node].id` of the node answering (the latencies are its probes).
    pub node: String,
    /// The agreed state now: `up`, `down` or `unknown`.
    pub state: String,
    /// Since when this node sees that agreed state (Unix ms).
    pub since_unix_ms: Option<u64>,
    /// Whether the first writer's plan publishes it now (`null` while this node does not plan).
    pub published: Option<bool>,
    /// Why, machine name.
    pub reason_kind: Option<String>,
    /// Why, for a person.
    pub reason: Option<String>,
    /// Width of a bucket, ms.
    pub resolution_ms: u64,
    /// Buckets the node keeps (`resolution_ms` × this is the span: one hour).
    pub max_buckets: usize,
    /// Transitions the node keeps, newest last.
    pub max_transitions: usize,
    /// Totals over the buckets below.
    pub latency: LatencySummary,
    /// The buckets that saw probes, oldest first; latency figures over passed probes.
    pub buckets: Vec<BucketRecord>,
    /// The last transitions, oldest first: agreed `up`/`down`, `published`/`excluded` by the
    /// first writer's plan.
    pub transitions: Vec<TransitionRecord>,
}

/// What would change now.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanDocument {
    /// `[node].id` of the node answering.
    pub node: String,
    /// Whether it is the leader (only the leader plans shared writers).
    pub am_leader: bool,
    /// Per service.
    pub services: Vec<ServicePlan>,
}

/// What would change for one service.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServicePlan {
    /// The service's fqdn.
    pub fqdn: String,
    /// Per writer, in configured order.
    pub writers: Vec<WriterPlan>,
}

/// What would change at one writer.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriterPlan {
    /// `[[writer]].name`.
    pub name: String,
    /// Whether this node knows what the writer publishes (else it has nothing to plan against).
    pub planned: bool,
    /// The changes, each with its reason (empty: nothing to change).
    pub changes: Vec<ChangeStatus>,
    /// Changes a change limit (`max_changes`, `max_remove_fraction`) holds back, first planned
    /// first (empty: none).
    pub queued: Vec<ChangeStatus>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "rrguard API",
        description = "Read API of a running rrguard node: services, endpoints and why each is in or out of DNS, the plan, the events and DNS writes of the audit log."
    ),
    paths(service, endpoint_history, plan, events),
    components(schemas(
        ServiceDetail,
        EndpointHistoryDocument,
        BucketRecord,
        LatencySummary,
        TransitionRecord,
        EndpointDetail,
        VoteDetail,
        WriterDetail,
        PlanDocument,
        ServicePlan,
        WriterPlan,
        ApiError,
        Page,
        AuditRecord,
        WriteRecord,
        Evidence,
        VoteEvidence,
        RecordStatus,
        StandingStatus,
        ChangeStatus,
        LocalProbe
    ))
)]
struct ApiDoc;

/// The OpenAPI 3.1 document, as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

pub(super) async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
        .into_response()
}

fn find_service<'a>(status: &'a NodeStatus, fqdn: &str) -> Option<&'a crate::state::ServiceStatus> {
    let want = fqdn.trim_end_matches('.');
    status
        .services
        .iter()
        .find(|s| s.fqdn.trim_end_matches('.').eq_ignore_ascii_case(want))
}

/// One service: its endpoints with state, votes, last probe and standing; its writers' records,
/// plans and last writes.
#[utoipa::path(
    get,
    path = "/api/v1/services/{fqdn}",
    params(("fqdn" = String, Path, description = "The service's name (trailing dot optional)")),
    responses(
        (status = 200, description = "The service", body = ServiceDetail),
        (status = 404, description = "No such service", body = ApiError),
        (status = 503, description = "The node is starting", body = ApiError),
    )
)]
pub(super) async fn service(State(state): State<NodeState>, Path(fqdn): Path<String>) -> Response {
    let Some(status) = state.snapshot() else {
        return starting();
    };
    let Some(svc) = find_service(&status, &fqdn) else {
        let known: Vec<&str> = status.services.iter().map(|s| s.fqdn.as_str()).collect();
        return error(
            StatusCode::NOT_FOUND,
            Some("fqdn"),
            format!(
                "no service {fqdn:?} is configured on this node; configured: {}",
                known.join(", ")
            ),
        );
    };
    let since = state.cluster_since();
    let first = svc.writers.first();
    let local_age = |p: &Option<LocalProbe>| {
        p.as_ref()
            .map(|p| crate::state::now_unix_ms().saturating_sub(p.last_probe_unix_ms))
    };
    let peer_age = |node: &str| {
        status
            .peers
            .iter()
            .find(|p| p.id == node)
            .and_then(|p| p.last_heard_ms_ago)
    };
    let endpoints = status
        .endpoints
        .iter()
        .filter(|e| e.service == svc.fqdn)
        .map(|e| {
            let vote = |node: &String, v: &str| VoteDetail {
                node: node.clone(),
                vote: v.to_owned(),
                age_ms: if *node == status.node {
                    local_age(&e.local)
                } else {
                    peer_age(node)
                },
            };
            let standing = first.and_then(|w| w.standing.iter().find(|s| s.address == e.endpoint));
            EndpointDetail {
                endpoint: e.endpoint.clone(),
                state: e.cluster_state.clone(),
                since_unix_ms: since.get(&(e.service.clone(), e.endpoint.clone())).copied(),
                needed: e.needed,
                votes: e
                    .up_votes
                    .iter()
                    .map(|n| vote(n, "up"))
                    .chain(e.down_votes.iter().map(|n| vote(n, "down")))
                    .collect(),
                last_probe: e.local.clone(),
                published: standing.map(|s| s.published),
                reason_kind: standing.map(|s| s.reason_kind.clone()),
                reason: standing.map(|s| s.reason.clone()),
            }
        })
        .collect();
    let writers = svc
        .writers
        .iter()
        .map(|w| WriterDetail {
            name: w.name.clone(),
            records: w.records.clone(),
            published_known_unix_ms: w.published_known_unix_ms,
            last_write_unix_ms: w.last_write_unix_ms,
            last_error: w.last_error.clone(),
            standing: w.standing.clone(),
            pending: w.pending.clone(),
            queued: w.queued.clone(),
        })
        .collect();
    Json(ServiceDetail {
        fqdn: svc.fqdn.clone(),
        zone: svc.zone.clone(),
        check: svc.check.clone(),
        node: status.node.clone(),
        leader: status.leader.clone(),
        am_leader: status.am_leader,
        isolated: status.isolated.clone(),
        endpoints,
        writers,
        hold: svc.hold.clone(),
        last_plan: svc.last_plan.clone(),
    })
    .into_response()
}

/// One endpoint's history: its latency in 10 s buckets over the last hour (this node's probes) and
/// its last state transitions, which survive a restart.
#[utoipa::path(
    get,
    path = "/api/v1/services/{fqdn}/endpoints/{ip}/history",
    params(
        ("fqdn" = String, Path, description = "The service's name (trailing dot optional)"),
        ("ip" = String, Path, description = "One of its endpoints, as configured"),
    ),
    responses(
        (status = 200, description = "The endpoint's history", body = EndpointHistoryDocument),
        (status = 404, description = "No such service, or no such endpoint of it", body = ApiError),
        (status = 503, description = "The node is starting", body = ApiError),
    )
)]
pub(super) async fn endpoint_history(
    State(state): State<NodeState>,
    Path((fqdn, ip)): Path<(String, String)>,
) -> Response {
    let Some(status) = state.snapshot() else {
        return starting();
    };
    let Some(svc) = find_service(&status, &fqdn) else {
        let known: Vec<&str> = status.services.iter().map(|s| s.fqdn.as_str()).collect();
        return error(
            StatusCode::NOT_FOUND,
            Some("fqdn"),
            format!(
                "no service {fqdn:?} is configured on this node; configured: {}",
                known.join(", ")
            ),
        );
    };
    let now = crate::state::now_unix_ms();
    let found = match ip.parse::<std::net::IpAddr>() {
        // The older buckets are read from the store: off the runtime's workers.
        Ok(addr) => {
            let (state, fqdn) = (state.clone(), svc.fqdn.clone());
            tokio::task::spawn_blocking(move || state.endpoint_history(&fqdn, addr, now))
                .await
                .ok()
                .flatten()
                .map(|doc| (addr, doc))
        }
        Err(_) => None,
    };
    let Some((addr, (buckets, latency, transitions))) = found else {
        let known: Vec<&str> = status
            .endpoints
            .iter()
            .filter(|e| e.service == svc.fqdn)
            .map(|e| e.endpoint.as_str())
            .collect();
        return error(
            StatusCode::NOT_FOUND,
            Some("ip"),
            format!(
                "{ip:?} is not an endpoint of {}; its endpoints: {}",
                svc.fqdn,
                known.join(", ")
            ),
        );
    };
    let endpoint = addr.to_string();
    // The state now is read after the transitions, so it is never older than the last of them: a
    // snapshot taken before the history read could still say `down` next to a newer `up`.
    let status = state.snapshot().unwrap_or(status);
    let Some(svc) = find_service(&status, &fqdn) else {
        // Removed by a reload meanwhile.
        return error(
            StatusCode::NOT_FOUND,
            Some("fqdn"),
            format!("service {fqdn:?} was removed from this node's configuration"),
        );
    };
    let agreed = status
        .endpoints
        .iter()
        .find(|e| e.service == svc.fqdn && e.endpoint == endpoint);
    let standing = svc
        .writers
        .first()
        .and_then(|w| w.standing.iter().find(|s| s.address == endpoint));
    Json(EndpointHistoryDocument {
        fqdn: svc.fqdn.clone(),
        since_unix_ms: state
            .cluster_since()
            .get(&(svc.fqdn.clone(), endpoint.clone()))
            .copied(),
        endpoint,
        node: status.node.clone(),
        state: agreed.map_or_else(|| "unknown".to_owned(), |e| e.cluster_state.clone()),
        published: standing.map(|s| s.published),
        reason_kind: standing.map(|s| s.reason_kind.clone()),
        reason: standing.map(|s| s.reason.clone()),
        resolution_ms: RESOLUTION_MS,
        max_buckets: BUCKETS,
        max_transitions: TRANSITIONS,
        latency,
        buckets,
        transitions,
    })
    .into_response()
}

/// What each writer of each service would change now, with the reason for each change.
#[utoipa::path(
    get,
    path = "/api/v1/plan",
    responses(
        (status = 200, description = "The plan", body = PlanDocument),
        (status = 503, description = "The node is starting", body = ApiError),
    )
)]
pub(super) async fn plan(State(state): State<NodeState>) -> Response {
    let Some(status) = state.snapshot() else {
        return starting();
    };
    Json(PlanDocument {
        node: status.node.clone(),
        am_leader: status.am_leader,
        services: status
            .services
            .iter()
            .map(|s| ServicePlan {
                fqdn: s.fqdn.clone(),
                writers: s
                    .writers
                    .iter()
                    .map(|w| WriterPlan {
                        name: w.name.clone(),
                        planned: !w.standing.is_empty(),
                        changes: w.pending.clone(),
                        queued: w.queued.clone(),
                    })
                    .collect(),
            })
            .collect(),
    })
    .into_response()
}

/// Parses the events query: every parameter is checked, unknown ones refused.
fn events_query(params: &HashMap<String, String>) -> Result<Query, Box<Response>> {
    let bad = |field: &str, message: String| {
        Box::new(error(StatusCode::BAD_REQUEST, Some(field), message))
    };
    let number = |field: &str| -> Result<Option<u64>, Box<Response>> {
        params
            .get(field)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    bad(
                        field,
                        format!("{field}={v:?} is not a non-negative integer"),
                    )
                })
            })
            .transpose()
    };
    for key in params.keys() {
        if !matches!(
            key.as_str(),
            "service" | "kind" | "since" | "before" | "limit"
        ) {
            return Err(bad(
                key,
                format!("unknown parameter {key:?}: use service, kind, since, before or limit"),
            ));
        }
    }
    let limit = number("limit")?.map_or(Ok(DEFAULT_EVENTS_LIMIT), |n| {
        if n == 0 || n > MAX_PAGE as u64 {
            Err(bad(
                "limit",
                format!("limit={n} is out of range: use 1 to {MAX_PAGE}"),
            ))
        } else {
            Ok(n as usize)
        }
    })?;
    // A misspelt kind would match nothing and look like a quiet log: refuse it, naming the kinds.
    let kinds = params
        .get("kind")
        .map(|k| {
            k.split(',')
                .map(|one| {
                    one.trim()
                        .parse::<EventKind>()
                        .map(|kind| kind.name())
                        .map_err(|e| bad("kind", e))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(Query {
        service: params.get("service").cloned(),
        kinds,
        since_unix_ms: number("since")?,
        before: number("before")?,
        limit,
    })
}

/// Events, newest first: endpoint state changes, plans, holds, isolation, and DNS writes with their
/// evidence. Page with `before` (the previous page's `next_before`).
#[utoipa::path(
    get,
    path = "/api/v1/events",
    params(
        ("service" = Option<String>, Query, description = "Only this service (its fqdn as configured)"),
        ("kind" = Option<String>, Query, description = "Only these kinds, comma-separated: probe_transition, plan, dns_updated, write_failed, hold, override, endpoint_state, isolated, rejoined, damping, select, note; an unknown kind is a 400 naming `kind` and listing the kinds"),
        ("since" = Option<u64>, Query, description = "Only events at or after this time, Unix ms"),
        ("before" = Option<u64>, Query, description = "Only events older than this sequence number (paging cursor)"),
        ("limit" = Option<u64>, Query, description = "At most this many, 1 to 1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "One page of events", body = Page),
        (status = 400, description = "A bad parameter", body = ApiError),
        (status = 503, description = "The node is starting", body = ApiError),
    )
)]
pub(super) async fn events(
    State(state): State<NodeState>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Response {
    let mut q = match events_query(&params) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let Some(status) = state.snapshot() else {
        return starting();
    };
    if let Some(s) = &q.service {
        match find_service(&status, s) {
            Some(svc) => q.service = Some(svc.fqdn.clone()),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    Some("service"),
                    format!("no service {s:?} is configured on this node"),
                );
            }
        }
    }
    match state.audit_log() {
        Some(log) => match tokio::task::spawn_blocking(move || log.query(&q)).await {
            Ok(Ok(page)) => Json(page).into_response(),
            Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()),
        },
        None => Json(memory_events(&status, &q)).into_response(),
    }
}

/// Without an audit log: the in-memory rings, newest first (no sequence numbers, one page).
fn memory_events(status: &NodeStatus, q: &Query) -> Page {
    let mut events: Vec<AuditRecord> = status
        .services
        .iter()
        .filter(|s| q.service.as_ref().is_none_or(|want| *want == s.fqdn))
        .flat_map(|s| s.events.iter())
        .filter(|e| q.since_unix_ms.is_none_or(|t| e.unix_ms >= t))
        .filter(|e| q.kinds.is_empty() || q.kinds.contains(&e.kind.name()))
        .map(|e| AuditRecord {
            seq: 0,
            unix_ms: e.unix_ms,
            node: status.node.clone(),
            service: e.service.clone(),
            kind: e.kind.name(),
            message: e.message.clone(),
            writer: None,
            write: None,
        })
        .collect();
    events.sort_by_key(|e| std::cmp::Reverse(e.unix_ms));
    events.truncate(q.limit);
    Page {
        events,
        next_before: None,
    }
}
