//! The overrides API and the peer route that replicates overrides.
//!
//! - `GET /api/v1/overrides` ([`Reader`]): `{"overrides": [Override + "active"]}`, every override not
//!   deleted or ended, in id order; `active` says whether it is in effect now (a scheduled window may
//!   not have started).
//! - `POST /api/v1/overrides` ([`Writer`]): a JSON [`OverrideRequest`]; 201 with the override and its
//!   new `id`. 400 for bad input, 404 for an unknown service or endpoint, 409 when too many are set,
//!   500 when the state file cannot be written (nothing changed then).
//! - `DELETE /api/v1/overrides/{id}` ([`Writer`]): 200 with the deleted override; 404 for an unknown
//!   (or ended) id, 409 when it is already deleted.
//! - `POST /cluster/v1/overrides`: a peer's override set ([`crate::agree::override_sync`]), merged;
//!   204, or 401 (MAC), 400 (malformed), 409 (refused: clock, version, own id), 404 without
//!   `[cluster]`.
//!
//! Errors are [`ApiError`]s: `{"error": "…", "field": "…"}`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::warn;

use super::auth::{ApiError, Reader, Writer};
use crate::agree::override_sync::{self, SyncError};
use crate::agree::wire::{self, Key, WireError};
use crate::decide::overrides::{
    DeleteError, Override, OverrideKind, OverrideRequest, RequestError,
};
use crate::state::overrides::CreateError;
use crate::state::{NodeState, now_unix_ms};

/// One override as the API shows it.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// The override.
    #[serde(flatten)]
    pub o: Override,
    /// In effect now.
    pub active: bool,
}

/// `GET /api/v1/overrides`.
pub async fn list(_: Reader, State(state): State<NodeState>) -> Response {
    let now = now_unix_ms();
    let overrides: Vec<Shown> = state
        .overrides()
        .list()
        .into_iter()
        .map(|o| Shown {
            active: o.active_at(now),
            o,
        })
        .collect();
    Json(serde_json::json!({ "overrides": overrides })).into_response()
}

/// `POST /api/v1/overrides`.
pub async fn create(_: Writer, State(state): State<NodeState>, body: Bytes) -> Response {
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match state.overrides().create(request) {
        Ok(o) => {
            let active = o.active_at(now_unix_ms());
            (StatusCode::CREATED, Json(Shown { o, active })).into_response()
        }
        Err(CreateError::Request(RequestError::Invalid(e))) => {
            ApiError::field(StatusCode::BAD_REQUEST, e.field, e.to_string()).into_response()
        }
        Err(CreateError::Request(RequestError::Unknown(e))) => {
            ApiError::field(StatusCode::NOT_FOUND, e.field, e.to_string()).into_response()
        }
        Err(CreateError::Full(e)) => ApiError::new(StatusCode::CONFLICT, e).into_response(),
        Err(CreateError::Persist(e)) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
        }
    }
}

/// `DELETE /api/v1/overrides/{id}`.
pub async fn delete(_: Writer, State(state): State<NodeState>, Path(id): Path<String>) -> Response {
    match state.overrides().delete(&id) {
        Ok(Ok(o)) => Json(Shown { o, active: false }).into_response(),
        Ok(Err(e @ DeleteError::NotFound(_))) => {
            ApiError::field(StatusCode::NOT_FOUND, "id", e.to_string()).into_response()
        }
        Ok(Err(e @ DeleteError::AlreadyDeleted(_))) => {
            ApiError::field(StatusCode::CONFLICT, "id", e.to_string()).into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// `POST /cluster/v1/overrides`.
pub async fn from_peer(
    State(state): State<NodeState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let access = state.api_access();
    let Some(secret) = &access.peer_secret else {
        state.record_peer_message("overrides", Some("not_clustered"));
        return (
            StatusCode::NOT_FOUND,
            "this node is not in a cluster (no [cluster] section)",
        )
            .into_response();
    };
    let mac = headers.get(wire::MAC_HEADER).and_then(|v| v.to_str().ok());
    let me = state.overrides().node();
    match override_sync::decode(
        &body,
        mac,
        &Key::new(secret),
        &me,
        now_unix_ms(),
        access.max_clock_skew,
    ) {
        Ok(msg) => {
            state.record_peer_message("overrides", None);
            state.overrides().merge(msg.overrides, &msg.node);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            state.record_peer_message("overrides", Some(e.reason()));
            let code = match &e {
                SyncError::Wire(WireError::BadMac | WireError::MissingMac) => {
                    StatusCode::UNAUTHORIZED
                }
                SyncError::Wire(_) => StatusCode::BAD_REQUEST,
                SyncError::Refused(..) => StatusCode::CONFLICT,
            };
            let now = Instant::now();
            let gate = REJECT_LOG.get_or_init(|| Mutex::new(LogGate::default()));
            let admitted = gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(e.reason(), now);
            match admitted {
                Some(0) => warn!("rejected override message from a peer: {e}"),
                Some(n) => warn!(
                    "rejected override message from a peer: {e} ({n} more with this reason in the last {}s were not logged; all are counted in rrguard_peer_messages_total)",
                    REJECT_LOG_WINDOW.as_secs()
                ),
                None => {}
            }
            (code, e.to_string()).into_response()
        }
    }
}

/// How often a rejected peer message is logged per reason: the first one at once, then at most one
/// line per window with the number left out. A misconfigured or hostile peer that retries every
/// heartbeat would otherwise write a warning per request; every rejection is still counted in
/// `rrguard_peer_messages_total{result="rejected"}`.
const REJECT_LOG_WINDOW: Duration = Duration::from_secs(60);

/// The gate of this process's "rejected override message" warnings.
static REJECT_LOG: OnceLock<Mutex<LogGate>> = OnceLock::new();

/// Rate limit for a repeated warning, per reason ([`REJECT_LOG_WINDOW`]).
#[derive(Debug, Default)]
struct LogGate {
    /// Per reason: when a line was last written, and how many were left out since.
    reasons: HashMap<&'static str, (Instant, u64)>,
}

impl LogGate {
    /// Whether to log an occurrence of `reason` at `now`: `Some(n)` with `n` occurrences left out
    /// since the last line, or `None` to leave this one out (it is counted).
    fn admit(&mut self, reason: &'static str, now: Instant) -> Option<u64> {
        match self.reasons.get_mut(reason) {
            Some((last, left_out)) if now.saturating_duration_since(*last) < REJECT_LOG_WINDOW => {
                *left_out += 1;
                None
            }
            Some((last, left_out)) => {
                *last = now;
                Some(std::mem::take(left_out))
            }
            None => {
                self.reasons.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

/// Reads a request body field by field, so that every error names its field.
fn parse_request(body: &[u8]) -> Result<OverrideRequest, ApiError> {
    let bad = |field: &'static str, msg: &str| ApiError::field(StatusCode::BAD_REQUEST, field, msg);
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}; send an object like {{\"endpoint\": \"192.0.2.10\", \"kind\": \"drain\", \"for\": \"1h\", \"comment\": \"why\"}}"),
        )
    })?;
    let Some(obj) = value.as_object() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        ));
    };
    const FIELDS: [&str; 7] = [
        "endpoint",
        "service",
        "kind",
        "comment",
        "starts_unix_ms",
        "ends_unix_ms",
        "for",
    ];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown field {k:?}; fields are {}", FIELDS.join(", ")),
        ));
    }
    let text = |field: &'static str, required: bool| -> Result<Option<String>, ApiError> {
        match obj.get(field) {
            None | Some(serde_json::Value::Null) if !required => Ok(None),
            None | Some(serde_json::Value::Null) => Err(bad(field, "is required")),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(field, "must be a string")),
        }
    };
    let number = |field: &'static str| -> Result<Option<u64>, ApiError> {
        match obj.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(field, "must be a whole number of milliseconds since 1970")),
        }
    };
    let kind = text("kind", true)?
        .unwrap_or_default()
        .parse::<OverrideKind>()
        .map_err(|e| bad("kind", &e))?;
    Ok(OverrideRequest {
        endpoint: text("endpoint", true)?.unwrap_or_default(),
        service: text("service", false)?,
        kind,
        comment: text("comment", true)?.unwrap_or_default(),
        starts_unix_ms: number("starts_unix_ms")?,
        ends_unix_ms: number("ends_unix_ms")?,
        duration: text("for", false)?,
    })
}

#[cfg(test)]
mod log_gate_tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{LogGate, REJECT_LOG_WINDOW};

    #[test]
    fn a_repeated_rejection_is_logged_once_per_window_with_the_count_left_out() {
        let mut gate = LogGate::default();
        let t0 = Instant::now();
        assert_eq!(gate.admit("authentication", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(
                gate.admit("authentication", t0 + Duration::from_secs(i)),
                None
            );
        }
        // Another reason has its own window.
        assert_eq!(gate.admit("refused", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(
            gate.admit("authentication", t0 + REJECT_LOG_WINDOW),
            Some(5)
        );
        assert_eq!(
            gate.admit("authentication", t0 + REJECT_LOG_WINDOW * 2),
            Some(0)
        );
    }
}
