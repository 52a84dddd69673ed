//! The HTTP API of DESIGN §3: states, long-poll leases, channels, cluster operations
//! and metrics, on axum.
//!
//! # Layout
//! - [`error`]: the one error type and its `{"error": {"code", "message"}}` shape.
//! - [`extract`]: JSON, path and query extractors that reject with that shape.
//! - [`states`], [`poll`], [`chans`], [`cluster`]: the handlers, one module per concern.
//! - [`hub`]: wakes long-pollers and parked channel operations from the apply path.
//! - [`forward`]: a follower replays writes and linearizable reads on the leader.
//! - [`metrics`]: Prometheus text at `/metrics`.
//!
//! # Request path
//! Every request passes, outermost first: a panic guard (a bug answers 503, never 500)
//! → metrics (route, status, latency) → bearer
//! auth (`--token`, client routes only) → forwarding (a follower sends the request to
//! the leader, unless it is answerable locally) → the handler. Handlers run on the
//! leader, write through [`Node::write`] and read from the local store after
//! [`Node::linearizable_read`]; a handler that meets "not the leader" half-way marks its
//! response and the forwarding layer replays the request on the new leader.

pub mod chans;
pub mod cluster;
pub mod error;
pub mod extract;
pub mod forward;
pub mod hub;
pub mod metrics;
pub mod poll;
pub mod states;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;

use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;

use crate::callbacks::{self, CallbackConfig};
use crate::engine::{Op, Response as Reply};
use crate::node::Node;
use error::{ApiError, ApiResult};

/// Default `--max-body`: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// How the API behaves; the `serve` flags that concern it.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest request body in bytes (`--max-body`); larger is 413.
    pub max_body: usize,
    /// Bearer token required on client routes (`--token`), if any.
    pub token: Option<String>,
    /// Longest time a forwarded request may take (covers the longest long-poll).
    pub forward_timeout: Duration,
    /// Callback delivery.
    pub callbacks: CallbackConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body: DEFAULT_MAX_BODY,
            token: None,
            forward_timeout: Duration::from_secs(poll::MAX_WAIT_SECS + 30),
            callbacks: CallbackConfig::default(),
        }
    }
}

/// What every handler gets. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The replica.
    pub node: Node,
    /// API settings.
    pub config: Arc<ApiConfig>,
    /// Waiting pollers and parked channel operations.
    pub hub: Arc<hub::Hub>,
    /// Prometheus registry and series.
    pub metrics: Arc<metrics::Metrics>,
    /// HTTP client for forwarding to the leader.
    pub client: reqwest::Client,
    /// Dropped with the last clone of the router: stops the callback dispatcher.
    _stop: Arc<watch::Sender<()>>,
}

impl AppState {
    /// Replicates `op` and returns its reply, with engine and node errors as API errors.
    pub async fn write(&self, op: Op) -> ApiResult<Reply> {
        let applied = self.node.write(op).await?;
        Ok(applied.reply?)
    }
}

/// Every client route with default settings (see [`router_with`]).
pub fn router(node: Node) -> Router {
    router_with(node, ApiConfig::default())
}

/// Every client route, with middleware. Must be called inside a tokio runtime: it
/// starts the task that wakes long-pollers from the node's effects and the callback
/// dispatcher (which works while this node leads), both of which end when the router
/// is dropped.
pub fn router_with(node: Node, config: ApiConfig) -> Router {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(config.forward_timeout)
        .build()
        .unwrap_or_default();
    let metrics = Arc::new(metrics::Metrics::new());
    let (stop, stopped) = watch::channel(());
    callbacks::spawn(
        node.clone(),
        config.callbacks.clone(),
        metrics.clone(),
        stopped,
    );
    let state = AppState {
        hub: hub::Hub::start(node.subscribe()),
        metrics,
        config: Arc::new(config),
        client,
        node,
        _stop: Arc::new(stop),
    };
    routes()
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forward::middleware,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::middleware,
        ))
        .layer(CatchPanicLayer::custom(panicked))
        .fallback(not_found)
        .with_state(state)
}

/// One route: method, axum path, handler.
type Route = (&'static str, &'static str, MethodRouter<AppState>);

/// Every client route. The router is built from this table and the openapi test
/// checks the same table, so the two cannot drift apart.
fn table() -> Vec<Route> {
    vec![
        ("get", "/state/:id", get(states::get_or_poll)),
        ("put", "/state/:id", put(states::put)),
        ("delete", "/state/:id", delete(states::delete)),
        ("post", "/state/:id/lease", post(states::extend_lease)),
        ("delete", "/state/:id/lease", delete(states::release_lease)),
        ("post", "/state/:id/retry", post(states::retry)),
        ("get", "/states", get(states::list)),
        ("put", "/chan/:name", put(chans::make)),
        ("get", "/chan/:name", get(chans::info)),
        ("post", "/chan/:name/send", post(chans::send)),
        ("post", "/chan/:name/recv", post(chans::recv)),
        ("post", "/chan/:name/close", post(chans::close)),
        ("get", "/chans", get(chans::list)),
        ("get", "/cluster", get(cluster::info)),
        ("post", "/cluster/learners", post(cluster::add_learner)),
        (
            "post",
            "/cluster/membership",
            post(cluster::change_membership),
        ),
        ("get", "/healthz", get(cluster::healthz)),
        ("get", "/readyz", get(cluster::readyz)),
        ("get", "/metrics", get(metrics::render)),
    ]
}

fn routes() -> Router<AppState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
}

/// Every `(method, path)` the router serves, in openapi.yaml's syntax
/// (`/state/{id}`). `GET /state/poll` is served by the `GET /state/{id}` handler and
/// listed on its own.
pub fn served_routes() -> Vec<(String, String)> {
    let mut routes: Vec<(String, String)> = table()
        .into_iter()
        .map(|(method, path, _)| (method.to_owned(), metrics::template(path)))
        .collect();
    routes.push(("get".into(), "/state/poll".into()));
    routes
}

/// Paths open without a token: probes and scraping.
fn is_operational(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// `--token`: `Authorization: Bearer <token>` on client routes.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = state.config.token.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if is_operational(req.uri().path()) || given.is_some_and(|g| constant_time_eq(g, token)) {
        return next.run(req).await;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this API requires Authorization: Bearer <token>",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Compares without an early exit, so the time taken does not reveal a prefix.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A handler that panicked (a bug) answers 503 in the error shape rather than 500 or a
/// dropped connection; the node carries on.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::unavailable("internal", "the request failed on a bug; it was logged").into_response()
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not served on {}", req.method(), req.uri().path()),
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

/// Wall-clock Unix ms: the leader's clock, for deadlines it proposes.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `?wait=` in seconds: 0 to `max`.
pub fn wait_secs(wait: Option<u64>, default: u64, max: u64) -> ApiResult<u64> {
    match wait.unwrap_or(default) {
        w if w <= max => Ok(w),
        _ => Err(ApiError::invalid(format!(
            "wait must be 0 to {max} seconds"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }

    #[test]
    fn wait_bounds() {
        assert_eq!(wait_secs(None, 30, 300), Ok(30));
        assert_eq!(wait_secs(Some(0), 30, 300), Ok(0));
        assert!(wait_secs(Some(301), 30, 300).is_err());
    }
}
