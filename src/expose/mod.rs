//! Expose: the node's HTTP server on `[node].listen`, shared by every HTTP-facing capability.
//!
//! - `POST /cluster/v1/votes`: peer messages (see [`crate::agree::wire`]), handed to the current
//!   generation's agreement actor through the inbox in [`NodeState`]. 204 when accepted, 401 when
//!   authentication fails, 409 when refused by the agreement core (replay, clock, unknown node), 400
//!   when malformed, 413 when too large, 404 when this node has no `[cluster]`, 503 while the node is
//!   (re)starting.
//! - `GET /health`: 200 `{"status":"alive"}` while the process serves HTTP.
//! - `GET /ready`: 200 `{"ready":true}` once the configuration is loaded, every service has an
//!   endpoint (a self-registered one once its address is discovered), this node has probed every
//!   endpoint once and, on the leader, has read every service's published records; until then 503
//!   `{"ready":false,"waiting_for":[…]}` naming what it waits for (a DNS server that cannot be read
//!   keeps the leader not ready).
//! - `GET /api/v1/status`: [`NodeState::snapshot`] as JSON ([`crate::state::NodeStatus`]): isolation
//!   and why, leader and term, live nodes and peers, per-endpoint cluster state with the votes behind
//!   it and this node's last probe, per-service published set, plan, write and events,
//!   rejected-message counters. 503 until the agreement actor has published once.
//!
//! - `GET /api/v1/overrides`, `POST /api/v1/overrides`, `DELETE /api/v1/overrides/{id}`, and the
//!   peer route `POST /cluster/v1/overrides`: the operator's overrides ([`overrides`]), behind the
//!   bearer-token checks of [`auth`].
//!
//! - `GET /api/v1/services/{fqdn}`, `GET /api/v1/services/{fqdn}/endpoints/{ip}/history`,
//!   `GET /api/v1/plan`, `GET /api/v1/events`,
//!   `GET /api/v1/openapi.json`: the read API ([`api`]).
//! - `GET /metrics`: Prometheus text exposition ([`metrics`]): this node's probes under
//!   blackbox_exporter's names, cluster state, DNS writes and their latency under `rrguard_`.
//!
//! Beside the server: [`alert`] (`[[alert]]` webhooks and emails fed by the event stream) and
//! [`statsd`] (the `[metrics]` StatsD push), tasks the daemon starts with each configuration.
//!
//! It reads [`crate::state`] and speaks [`crate::agree::wire`]; it never imports the daemon, which
//! hands it the state and a cancellation token.

pub mod alert;
pub mod api;
pub mod auth;
pub mod client;
pub mod dashboard;
pub mod metrics;
pub mod overrides;
pub mod statsd;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::agree::wire;
use crate::state::{Inbound, InboundError, NodeState};

/// Serves until `shutdown` fires and every open connection has finished. Callers bound that wait:
/// a client that never completes its request keeps its connection open.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: NodeState,
    shutdown: CancellationToken,
) {
    // The read API follows `[api] read` like `/api/v1/status` does.
    let reads = Router::new()
        .route("/api/v1/services/{fqdn}", get(api::service))
        .route(
            "/api/v1/services/{fqdn}/endpoints/{ip}/history",
            get(api::endpoint_history),
        )
        .route("/api/v1/plan", get(api::plan))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_read,
        ));
    let app = Router::new()
        .merge(reads)
        .merge(dashboard::routes(&state, shutdown.clone()))
        .route(wire::VOTES_PATH, post(votes))
        .route(
            crate::agree::override_sync::OVERRIDES_PATH,
            post(overrides::from_peer),
        )
        .route(
            "/api/v1/overrides",
            get(overrides::list).post(overrides::create),
        )
        .route("/api/v1/overrides/{id}", delete(overrides::delete))
        .route("/api/v1/status", get(status))
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .layer(DefaultBodyLimit::max(wire::MAX_BODY_BYTES))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        error!("HTTP server failed: {e}");
    }
}

async fn health() -> Response {
    axum::Json(serde_json::json!({ "status": "alive" })).into_response()
}

async fn ready(State(state): State<NodeState>) -> Response {
    let waiting = match state.snapshot() {
        Some(status) => status.waiting_for(),
        None => vec!["the agreement actor (starting)".to_owned()],
    };
    if waiting.is_empty() {
        axum::Json(serde_json::json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "ready": false, "waiting_for": waiting })),
        )
            .into_response()
    }
}

async fn votes(State(state): State<NodeState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(inbox_tx) = state.inbox() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response();
    };
    let mac = headers
        .get(wire::MAC_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (reply, verdict) = oneshot::channel();
    let inbound = Inbound {
        body: body.to_vec(),
        mac,
        reply,
    };
    if inbox_tx.send(inbound).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "reloading").into_response();
    }
    match verdict.await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => {
            let code = match e {
                InboundError::NotClustered => StatusCode::NOT_FOUND,
                InboundError::Authentication(_) => StatusCode::UNAUTHORIZED,
                InboundError::Malformed(_) => StatusCode::BAD_REQUEST,
                InboundError::Refused(_) => StatusCode::CONFLICT,
            };
            (code, e.to_string()).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "reloading").into_response(),
    }
}

async fn status(_: auth::Reader, State(state): State<NodeState>) -> Response {
    match state.snapshot() {
        Some(status) => axum::Json(status).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response(),
    }
}

async fn metrics_text(_: auth::Reader, State(state): State<NodeState>) -> Response {
    match state.snapshot() {
        Some(status) => {
            let text = metrics::render(
                &status,
                &state.write_counters(),
                &state.peer_messages(),
                env!("CARGO_PKG_VERSION"),
            );
            (
                [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                text,
            )
                .into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response(),
    }
}

#[cfg(test)]
mod tests {
    /// The module map promises that `expose` reads `state` and never reaches into the daemon: scan
    /// every file under `src/expose` for a path into it.
    #[test]
    fn expose_never_imports_the_daemon() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/expose");
        let mut files = vec![dir];
        let mut scanned = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    files.push(entry.unwrap().path());
                }
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            scanned += 1;
            // Split so that this test does not find itself.
            for needle in [concat!("crate::", "daemon"), concat!("daemon", "::")] {
                assert!(
                    !text.contains(needle),
                    "{} mentions {needle}: expose must read crate::state instead",
                    path.display()
                );
            }
        }
        assert!(scanned > 0, "no files under src/expose");
    }
}

#[cfg(test)]
mod openapi_tests {
    use crate::state::EventKind;

    /// The OpenAPI document's description of `GET /api/v1/events?kind=` names every event kind
    /// (it is a literal, so a new kind must be added there too).
    #[test]
    fn the_events_kind_parameter_lists_every_kind() {
        let doc: serde_json::Value = serde_json::from_str(&super::api::openapi_json()).unwrap();
        let params = doc["paths"]["/api/v1/events"]["get"]["parameters"]
            .as_array()
            .expect("parameters of GET /api/v1/events");
        let kind = params
            .iter()
            .find(|p| p["name"] == "kind")
            .and_then(|p| p["description"].as_str())
            .expect("the kind parameter's description");
        for k in EventKind::ALL {
            assert!(
                kind.split([' ', ',', ':', ';'])
                    .any(|word| word == k.as_str()),
                "{} missing from {kind:?}",
                k.as_str()
            );
        }
    }
}
