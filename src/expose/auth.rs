//! API authentication and error bodies, reusable by every route of the HTTP server.
//!
//! - [`Writer`] (an extractor) admits a mutation only with `Authorization: Bearer TOKEN` matching
//!   `[api] token_file`: 401 when the header is missing or the token is wrong, 403 when no token is
//!   configured (mutations are then off; the message says how to turn them on).
//! - [`Reader`] (an extractor) and [`require_read`] (a middleware, for putting a whole router behind
//!   it with `axum::middleware::from_fn_with_state`) admit a read when `[api] read = "public"` (the
//!   default), or with the token when `read = "token"`.
//! - [`ApiError`] is every API error: a status and the JSON body `{"error": "…", "field": "…"}`
//!   (`field` names the request field at fault, or is `null`).
//!
//! Tokens are compared in constant time: both sides are HMAC-SHA256'd under a key drawn at start, and
//! the tags compared with `ring::hmac::verify`, so neither the content nor the length of the
//! configured token leaks through timing.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::state::{ApiAccess, NodeState};

/// An API error: its status and `{"error": …, "field": …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What is wrong and how to fix it.
    pub error: String,
    /// The request field at fault, if one is.
    pub field: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    field: Option<&'static str>,
}

impl ApiError {
    /// An error with `status` about no field in particular.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field: None,
        }
    }

    /// An error with `status` about the request field `field`.
    pub fn field(status: StatusCode, field: &'static str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field: Some(field),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(Body {
                error: &self.error,
                field: self.field,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"rrguard\""),
            );
        }
        resp
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read.
    Read,
    /// Change something.
    Write,
}

/// Admits or refuses a request with `headers` that needs `need`, under `access`.
///
/// # Errors
/// [`ApiError`] with 401 (no or wrong token) or 403 (mutations without a configured token).
pub fn check(access: &ApiAccess, headers: &HeaderMap, need: Need) -> Result<(), ApiError> {
    if need == Need::Read && !access.read_needs_token {
        return Ok(());
    }
    let Some(expected) = &access.token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "changes through the API are off: set [api] token_file = \"PATH\" (a file holding a token of at least 16 bytes) in the configuration, reload, and send it as `Authorization: Bearer TOKEN`",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this needs the API token: send `Authorization: Bearer TOKEN` with the token of [api] token_file",
        ));
    };
    if !same_token(presented.as_bytes(), expected) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong API token: it must match [api] token_file on this node",
        ));
    }
    Ok(())
}

/// Constant-time comparison (see the module documentation).
fn same_token(presented: &[u8], expected: &[u8]) -> bool {
    static KEY: OnceLock<ring::hmac::Key> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            // No random source: a fixed key still compares in constant time.
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"rrguard-api"))
    });
    let tag = ring::hmac::sign(key, expected);
    ring::hmac::verify(key, presented, tag.as_ref()).is_ok()
}

/// Extractor: the request may change things (bearer token required).
#[derive(Debug, Clone, Copy)]
pub struct Writer;

impl FromRequestParts<NodeState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &NodeState) -> Result<Self, ApiError> {
        check(&state.api_access(), &parts.headers, Need::Write).map(|()| Writer)
    }
}

/// Extractor: the request may read (public, or with the token under `read = "token"`).
#[derive(Debug, Clone, Copy)]
pub struct Reader;

impl FromRequestParts<NodeState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &NodeState) -> Result<Self, ApiError> {
        check(&state.api_access(), &parts.headers, Need::Read).map(|()| Reader)
    }
}

/// Middleware: refuses reads the configuration does not allow (`read = "token"` without the token).
pub async fn require_read(State(state): State<NodeState>, req: Request, next: Next) -> Response {
    match check(&state.api_access(), req.headers(), Need::Read) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn tokens_are_checked_per_need() {
        let open = ApiAccess::default();
        assert_eq!(check(&open, &HeaderMap::new(), Need::Read), Ok(()));
        assert_eq!(
            check(&open, &headers("Bearer x"), Need::Write)
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        let access = ApiAccess {
            token: Some(b"0123456789abcdef".to_vec()),
            ..ApiAccess::default()
        };
        assert_eq!(check(&access, &HeaderMap::new(), Need::Read), Ok(()));
        for bad in [
            "",
            "Bearer",
            "Basic 0123456789abcdef",
            "Bearer 0123456789abcdeF",
            "Bearer 0123456789abcdef0",
        ] {
            let h = if bad.is_empty() {
                HeaderMap::new()
            } else {
                headers(bad)
            };
            assert_eq!(
                check(&access, &h, Need::Write).unwrap_err().status,
                StatusCode::UNAUTHORIZED,
                "{bad:?}"
            );
        }
        assert_eq!(
            check(&access, &headers("bearer  0123456789abcdef "), Need::Write),
            Ok(())
        );
        let closed = ApiAccess {
            read_needs_token: true,
            ..access
        };
        assert_eq!(
            check(&closed, &HeaderMap::new(), Need::Read)
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            check(&closed, &headers("Bearer 0123456789abcdef"), Need::Read),
            Ok(())
        );
    }
}
