//! Expose: the node's HTTP server on `[node].listen`, shared by every HTTP-facing capability.
//!
//! - `POST /cluster/v1/votes`: peer messages (see [`crate::agree::wire`]). 204 when accepted, 401 when
//!   authentication fails, 409 when refused by the agreement core (replay, clock, unknown node), 400
//!   when malformed, 413 when too large, 404 when this node has no `[cluster]`, 503 while the node is
//!   (re)starting.
//! - `GET /api/v1/status`: this node's view as JSON: isolation and why, writer and term, live nodes,
//!   per-endpoint cluster state with the votes behind it, rejected-message counters.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::agree::wire;
use crate::daemon::CurrentAgreement;
use crate::daemon::agreement::{Inbound, InboundError};

/// Serves until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    current: CurrentAgreement,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route(wire::VOTES_PATH, post(votes))
        .route("/api/v1/status", get(status))
        .layer(DefaultBodyLimit::max(wire::MAX_BODY_BYTES))
        .with_state(current);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        error!("HTTP server failed: {e}");
    }
}

fn handle(current: &CurrentAgreement) -> Option<crate::daemon::agreement::AgreementHandle> {
    current.read().unwrap_or_else(|e| e.into_inner()).clone()
}

async fn votes(
    State(current): State<CurrentAgreement>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(h) = handle(&current) else {
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
    if h.inbox_tx.send(inbound).await.is_err() {
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

async fn status(State(current): State<CurrentAgreement>) -> Response {
    let Some(h) = handle(&current) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response();
    };
    let (tx, rx) = oneshot::channel();
    if h.status_tx.send(tx).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "reloading").into_response();
    }
    match rx.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "reloading").into_response(),
    }
}
