//! Extractors whose rejections are [`ApiError`]s, so that a malformed request gets the
//! same error shape as every other failure.
//!
//! [`Json`] reads the body up to `--max-body` (413 `too_large` beyond) and parses it
//! with [`crate::json`]'s limits, answering a refusal with 400 and its code: `too_deep`,
//! `invalid_json`, or `invalid` for a field the body's type does not know. [`Path`] and
//! [`Query`] wrap axum's own and answer 400 `invalid`. The lease bounds shared by polls
//! and heartbeats live here too.
//!
//! The content type is not checked: `curl -d` sends `application/x-www-form-urlencoded`
//! and a user of a JSON-only API should not have to care.

use axum::async_trait;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::engine::validate;
use crate::json;

/// Longest lease a client may ask for: one day.
pub const MAX_LEASE_MS: u64 = crate::engine::validate::MAX_LEASE_MS;

/// 30 s, the default lease of polls and heartbeats.
pub fn default_lease_ms() -> u64 {
    30_000
}

/// A lease duration given by a client (`lease_ms` of a poll, `extend_ms` of a
/// heartbeat): 1 ms to a day.
pub fn lease_ms(ms: u64, what: &str) -> Result<u64, ApiError> {
    if ms == 0 || ms > MAX_LEASE_MS {
        return Err(ApiError::invalid(format!(
            "{what} must be 1 to {MAX_LEASE_MS}"
        )));
    }
    Ok(ms)
}

/// A JSON object body, parsed with the API's limits. Anything but an object is refused
/// (serde would otherwise read `[]` as a struct whose fields all have defaults).
#[derive(Debug)]
pub struct Json<T>(pub T);

/// A body that may be any JSON value (the value of a send), parsed with the API's limits.
#[derive(Debug)]
pub struct AnyJson<T>(pub T);

/// 413 `too_large`.
pub fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the request body is larger than {max} bytes"),
    )
}

#[async_trait]
impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Ok(Json(json::parse_object(&body(req, state).await?)?))
    }
}

#[async_trait]
impl<T: DeserializeOwned> FromRequest<AppState> for AnyJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Ok(AnyJson(json::parse(&body(req, state).await?)?))
    }
}

/// The request body, up to `--max-body`.
async fn body(req: Request, state: &AppState) -> Result<axum::body::Bytes, ApiError> {
    let max = state.config.max_body;
    axum::body::to_bytes(req.into_body(), max)
        .await
        .map_err(|_| too_large(max))
}

/// Path parameters (percent-decoded by axum); a rejection is 400 `invalid`, and so is
/// a parameter that is `.` or `..` (never a name, design.md §3.2), on every route.
#[derive(Debug)]
pub struct Path<T>(pub T);

#[async_trait]
impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("bad path: {}", e.body_text())))?;
        if let Some((_, dots)) = raw.iter().find(|(_, v)| validate::is_dot_segment(v)) {
            return Err(ApiError::invalid(format!(
                "{dots:?} is not a state id or channel name: `.` and `..` are path segments \
                 that URL parsers remove, so they are never names"
            )));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::invalid(format!("bad path: {}", e.body_text())))
    }
}

/// Query parameters; a rejection is 400 `invalid`.
#[derive(Debug)]
pub struct Query<T>(pub T);

#[async_trait]
impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::invalid(format!("bad query: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_bounds() {
        assert!(lease_ms(0, "x").is_err());
        assert_eq!(lease_ms(5, "x"), Ok(5));
        assert!(lease_ms(MAX_LEASE_MS + 1, "x").is_err());
    }
}
