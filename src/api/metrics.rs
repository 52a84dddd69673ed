//! `GET /metrics` and the recording of every request in the node's
//! [`Metrics`] (design.md §3.5).
//!
//! Request labels come from a closed set, so no request can add series: the method is
//! one the API serves (`GET`, `HEAD`, `PUT`, `POST`, `DELETE`) or `other`, the route is
//! a template of the route table (`/state/{id}`, never the raw path; the long-poll is
//! `/state/poll`) or `other`. A request's wait ([`super::wait`]) is recorded apart from
//! its service time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::forward::FORWARDED;
use super::wait::{self, WAITED_HEADER};
use super::AppState;
use crate::metrics::RouteLabels;

/// An axum route (`/state/:id`, `/ui/*path`) in openapi.yaml's syntax (`/state/{id}`,
/// `/ui/{path}`).
pub fn template(route: &str) -> String {
    route
        .split('/')
        .map(
            |s| match s.strip_prefix(':').or_else(|| s.strip_prefix('*')) {
                Some(name) => format!("{{{name}}}"),
                None => s.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The method label: one the API serves, else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// The route label: the matched route's template, else `other`. The templates are
/// made once, from the route table, so recording a request allocates nothing.
fn route_label(req: &Request) -> &'static str {
    static TEMPLATES: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    let templates = TEMPLATES.get_or_init(|| {
        let mut templates = HashMap::new();
        for (_, route, _) in super::table() {
            templates
                .entry(route)
                .or_insert_with(|| &*Box::leak(template(route).into_boxed_str()));
        }
        templates
    });
    req.extensions()
        .get::<MatchedPath>()
        .and_then(|p| templates.get(p.as_str()).copied())
        .unwrap_or("other")
}

/// Serves `req` with `serve` and records its route, status, service time and wait; on
/// an answer to a forwarded request, tells the relaying node the wait in
/// [`WAITED_HEADER`].
pub async fn recorded<F, Fut>(state: &AppState, req: Request, serve: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let labels = RouteLabels {
        method: method_label(req.method()),
        route: route_label(&req),
    };
    let forwarded = req.headers().contains_key(FORWARDED);
    let started = Instant::now();
    let (mut response, wait) = wait::measured(serve(req)).await;
    let service = started.elapsed().saturating_sub(wait);
    if forwarded && !wait.is_zero() {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        response
            .headers_mut()
            .insert(WAITED_HEADER, HeaderValue::from(ms));
    }
    let status = response.status().as_u16();
    state.metrics.request(labels, status, service, wait);
    response
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    let counts = crate::engine::counts(&state.node.reader())
        .map_err(|e| tracing::warn!("metrics: cannot read the state counts: {e}"))
        .ok();
    let metrics = &state.metrics;
    metrics.refresh(
        &state.node.cluster_info(),
        counts.as_ref(),
        state.hub.pollers_waiting(),
        state.node.voters_low_on_disk().len(),
        state.inflight.used(),
    );
    let Ok(text) = metrics.encode() else {
        return ApiError::unavailable("metrics", "could not encode metrics").into_response();
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates() {
        assert_eq!(template("/state/:id/lease"), "/state/{id}/lease");
        assert_eq!(template("/states"), "/states");
        assert_eq!(template("/ui/*path"), "/ui/{path}");
    }

    #[test]
    fn methods_come_from_a_closed_set() {
        assert_eq!(method_label(&Method::PUT), "PUT");
        assert_eq!(method_label(&Method::PATCH), "other");
        let invented = Method::from_bytes(b"FROB").unwrap();
        assert_eq!(method_label(&invented), "other");
    }
}
