//! Extractors whose rejections are [`ApiError`]s, so that a malformed request gets the
//! same error shape as every other failure.
//!
//! [`Json`] reads the body up to `--max-body` (413 `too_large` beyond), refuses JSON
//! nested deeper than [`MAX_DEPTH`] before parsing it (400 `too_deep`: a deeply nested
//! document costs stack and time in every replica that decodes it again), and answers
//! malformed or mistyped JSON with 400 `invalid_json`. A field the body's type does not
//! know is 400 `invalid` naming it (design.md §3: a misspelt field must not be dropped
//! silently). [`Path`] and [`Query`] wrap axum's own and answer 400 `invalid`. The
//! lease bounds shared by polls and heartbeats live here too.
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

/// Deepest JSON nesting accepted in a request body.
pub const MAX_DEPTH: usize = 64;
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
        parse_object(&body(req, state).await?).map(Json)
    }
}

#[async_trait]
impl<T: DeserializeOwned> FromRequest<AppState> for AnyJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        parse(&body(req, state).await?).map(AnyJson)
    }
}

/// The request body, up to `--max-body`.
async fn body(req: Request, state: &AppState) -> Result<axum::body::Bytes, ApiError> {
    let max = state.config.max_body;
    axum::body::to_bytes(req.into_body(), max)
        .await
        .map_err(|_| too_large(max))
}

/// Parses a request body that must be a JSON object (see [`parse`]).
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    check_size_and_depth(bytes)?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the request body must be a JSON object",
        ));
    }
    deserialize(bytes)
}

/// Parses a request body: depth first, then JSON into `T`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    check_size_and_depth(bytes)?;
    deserialize(bytes)
}

/// Refuses an empty body and one nested deeper than [`MAX_DEPTH`].
fn check_size_and_depth(bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the request body must be JSON and is empty",
        ));
    }
    if depth(bytes) > MAX_DEPTH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_deep",
            format!("JSON may be nested at most {MAX_DEPTH} levels deep"),
        ));
    }
    Ok(())
}

fn deserialize<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match unknown_field(&e) {
        Some(message) => ApiError::invalid(message),
        None => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the request body is not valid: {e}"),
        ),
    })
}

/// serde's refusal of a field a `deny_unknown_fields` type does not know, as a sentence
/// naming the field, where it is, and the fields that would do.
fn unknown_field(e: &serde_json::Error) -> Option<String> {
    const HEAD: &str = "unknown field `";
    let text = e.to_string();
    let rest = text.strip_prefix(HEAD)?;
    let end = rest.find("`, ")?;
    let (name, tail) = (&rest[..end], &rest[end + 3..]);
    let expected = tail
        .find(" at line ")
        .map_or(tail, |at| &tail[..at])
        .replace('`', "");
    Some(format!(
        "unknown field {name:?} at line {} column {}: check its spelling; {expected}",
        e.line(),
        e.column()
    ))
}

/// The deepest nesting of arrays and objects in a JSON text, ignoring brackets inside
/// strings. Works on invalid JSON too (the parser rejects that afterwards).
pub fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
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
    use serde_json::Value;

    #[test]
    fn lease_bounds() {
        assert!(lease_ms(0, "x").is_err());
        assert_eq!(lease_ms(5, "x"), Ok(5));
        assert!(lease_ms(MAX_LEASE_MS + 1, "x").is_err());
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(depth(b"1"), 0);
        assert_eq!(depth(br#"{"a": [1, {"b": "[[[[\"{"}]}"#), 3);
        assert_eq!(depth(&b"[".repeat(65)), 65);
    }

    #[test]
    fn parse_sorts_failures_into_codes() {
        let code = |b: &[u8]| parse::<Value>(b).unwrap_err().code;
        assert_eq!(code(b""), "invalid_json");
        assert_eq!(code(b"{\"a\":"), "invalid_json");
        assert_eq!(code(&b"[".repeat(100)), "too_deep");
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse::<Value>(ok.as_bytes()).is_ok());
        assert_eq!(
            parse_object::<Value>(b" []").unwrap_err().code,
            "invalid_json"
        );
        assert!(parse_object::<Value>(b" {}").is_ok());
    }

    #[test]
    fn an_unknown_field_is_invalid_and_named() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            data: Option<Value>,
        }
        let e = parse_object::<Body>(br#"{"data": 1, "selectz": []}"#).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "invalid"));
        assert!(
            e.message
                .starts_with("unknown field \"selectz\" at line 1 column "),
            "{}",
            e.message
        );
        assert!(e.message.ends_with("; expected data"), "{}", e.message);
    }
}
