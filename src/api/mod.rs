//! The HTTP API of design.md §3: states, long-poll leases, channels, cluster operations
//! and metrics, on axum.
//!
//! # Layout
//! - [`error`]: the one error type and its `{"error": {"code", "message"}}` shape.
//! - [`extract`]: JSON, path and query extractors that reject with that shape.
//! - [`states`], [`poll`], [`chans`], [`cluster`]: the handlers, one module per concern.
//! - [`hub`]: wakes long-pollers and parked channel operations from the apply path.
//! - [`forward`]: a follower replays writes and linearizable reads on the leader.
//! - [`metrics`]: `GET /metrics`, and the recording of every request in the
//!   node's [`Metrics`]; [`wait`]: a request's wait, kept apart from its service time.
//! - [`console`]: the web console at `/`, static files compiled into the binary.
//!
//! # Request path
//! Every request passes, outermost first: a panic guard (a bug answers 503, never 500)
//! → [`gate`], one layer that runs, in order: metrics (route, status, latency) →
//! browser checks ([`browser`]: Host, Origin, Content-Type) → bearer auth ([`auth`]:
//! `--token`, `--admin-token`) → forwarding (a follower sends the request to the
//! leader, unless it is answerable locally) → the handler. Handlers run on the
//! leader, write through [`Node::write`] and read from the local store after
//! [`Node::linearizable_read`]; a handler that meets "not the leader" half-way marks its
//! response and the forwarding layer replays the request on the new leader.
//!
//! # Who may call what
//! | routes | no token set | `--token` | `--admin-token` |
//! |---|---|---|---|
//! | `/healthz`, `/readyz`, the console's files (`GET /`, `GET /ui/...`) | open | open | open |
//! | `/metrics` | open | API token (unless `--metrics-public`) | accepted |
//! | client API (states, channels, `GET /cluster`) | open | API token | accepted |
//! | membership (`POST /cluster/learners`, `DELETE /cluster/learners/{id}`, `POST /cluster/membership`) and bulk deletes (`DELETE /states`) | open on loopback, 403 beyond | 403 without an admin token | admin token only |
//!
//! Membership is separate because it hands out the whole log: a learner at an address
//! of the caller's choosing receives every state. The API token presented on a
//! membership route is 403 `forbidden`, as is every request there when `--token` is set
//! but no admin token is (a node that requires auth never leaves membership open), or
//! when the node listens beyond loopback without an admin token.
//!
//! Before auth, [`browser`] refuses what a web page could make a browser send: a
//! foreign `Host` or `Origin`, or a state-changing request that is not JSON.
//! A missing or unknown token is 401 `unauthorized`. Tokens are compared in constant
//! time. `/metrics` is guarded by default because its series reveal the workload
//! (request rates by route, numbers of states by status); `--metrics-public` opens it
//! for a scraper that cannot send a token.

pub mod allow;
pub mod browser;
pub mod chans;
pub mod cluster;
pub mod console;
pub mod error;
pub mod extract;
pub mod forward;
pub mod hub;
pub mod metrics;
pub mod poll;
pub mod states;
pub mod wait;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use sha2::{Digest, Sha256};

use subtle::ConstantTimeEq;
use tower_http::catch_panic::CatchPanicLayer;

use crate::callbacks::CallbackConfig;
use crate::engine::{Op, Response as Reply};
use crate::metrics::Metrics;
use crate::node::Node;
use error::{ApiError, ApiResult};

/// Default `--max-body`: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Default `--max-inflight-bytes`: 128 MiB.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 128 << 20;

/// How the API behaves; the `serve` flags that concern it.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest request body in bytes (`--max-body`); larger is 413.
    pub max_body: usize,
    /// Most request body bytes held at once across requests (`--max-inflight-bytes`);
    /// beyond it, 503 `overloaded`.
    pub max_inflight_bytes: usize,
    /// Bearer token required on client routes (`--token`), if any.
    pub token: Option<String>,
    /// Bearer token required on membership routes (`--admin-token`), if any.
    pub admin_token: Option<String>,
    /// `--metrics-public`: `/metrics` needs no token even with `--token`.
    pub metrics_public: bool,
    /// `--allow-host`: host names the node answers to besides its addresses and peers
    /// (`*`: any), see [`browser`].
    pub allow_hosts: Vec<String>,
    /// `--allow-origin`: origins of pages allowed to call the node, see [`browser`].
    pub allow_origins: Vec<String>,
    /// Longest time a forwarded request may take (covers the longest long-poll).
    pub forward_timeout: Duration,
    /// Callback delivery: the targets a PUT may name (`allow`), and how the node's
    /// dispatcher ([`crate::callbacks`]) delivers.
    pub callbacks: CallbackConfig,
    /// `max_deliveries` of a state created without one (`--max-deliveries`; 0: no
    /// limit).
    pub max_deliveries: u32,
    /// `retain_ms` of a state created without one (`--retain-done`; 0: kept).
    pub retain_done_ms: u64,
    /// How long an `Idempotency-Key` is remembered, in log time
    /// (`--idempotency-window`).
    pub idempotency_window_ms: u64,
}

/// Default of `--idempotency-window`: a day.
pub const DEFAULT_IDEMPOTENCY_WINDOW_MS: u64 = 86_400_000;

/// The header of idempotent writes.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Default of `--retain-done`: a week.
pub const DEFAULT_RETAIN_DONE_MS: u64 = 7 * 24 * 3_600_000;

/// Default of `--max-deliveries`.
pub const DEFAULT_MAX_DELIVERIES: u32 = 10;

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body: DEFAULT_MAX_BODY,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            token: None,
            admin_token: None,
            metrics_public: false,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
            forward_timeout: Duration::from_secs(poll::MAX_WAIT_SECS + 30),
            callbacks: CallbackConfig::default(),
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            retain_done_ms: DEFAULT_RETAIN_DONE_MS,
            idempotency_window_ms: DEFAULT_IDEMPOTENCY_WINDOW_MS,
        }
    }
}

/// What every handler gets: one reference-counted pointer, so the clone that the
/// middleware layer and each handler take per request is one count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// The handlers' shared context, behind [`AppState`].
pub struct AppShared {
    /// The replica.
    pub node: Node,
    /// API settings.
    pub config: Arc<ApiConfig>,
    /// Waiting pollers and parked channel operations.
    pub hub: Arc<hub::Hub>,
    /// The node's Prometheus series.
    pub metrics: Arc<Metrics>,
    /// The hosts and origins this node answers to.
    pub answers: Arc<browser::Answers>,
    /// Whether the node listens beyond loopback (membership then needs the admin token).
    pub exposed: bool,
    /// Request body bytes held now, capped by `--max-inflight-bytes`.
    pub inflight: Arc<forward::Inflight>,
    /// HTTP client for forwarding to the leader.
    pub relay: forward::RelayClient,
    /// The node's connection places, which a forwarded request takes one more of.
    pub places: forward::Places,
}

impl AppState {
    /// Replicates `op` and returns its reply, with engine and node errors as API errors.
    pub async fn write(&self, op: Op) -> ApiResult<Reply> {
        let applied = self.node.write(op).await?;
        Ok(applied.reply?)
    }

    /// Like [`AppState::write`], applied at most once per `Idempotency-Key` if the
    /// request has one (design.md §3): the key, a digest of the operation and the reply
    /// are recorded by the state machine, and a repeat within `--idempotency-window`
    /// gets the first reply without applying anything.
    pub async fn write_keyed(&self, headers: &HeaderMap, op: Op) -> ApiResult<Reply> {
        match idempotency_key(headers)? {
            None => self.write(op).await,
            Some(key) => {
                let encoded = crate::codec::encode(&op)
                    .map_err(|e| ApiError::unavailable("internal", e.to_string()))?;
                let digest = Sha256::digest(&encoded).to_vec();
                let op = Op::Keyed {
                    key,
                    digest,
                    window_ms: self.config.idempotency_window_ms,
                    op: Box::new(op),
                };
                self.write(op).await
            }
        }
    }
}

/// The request's `Idempotency-Key`, checked (1 to 128 bytes of visible ASCII).
pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))?;
    crate::engine::idempotency::check_key(key)?;
    Ok(Some(key.to_owned()))
}

/// Every client route with default settings and metrics of its own (see
/// [`router_with`]).
pub fn router(node: Node) -> Router {
    router_with(
        node,
        ApiConfig::default(),
        Arc::default(),
        forward::Places::unbounded(),
    )
}

/// Every client route, with middleware, recording into `metrics`; a request this node
/// forwards to the leader takes one of the connection `places` too
/// ([`forward::Places`]). Must be called inside a tokio runtime: it starts the task
/// that wakes long-pollers from the node's effects, which ends when the router is
/// dropped. Callbacks are not delivered by the router: the node's dispatcher runs
/// beside it ([`crate::server::serve`]).
pub fn router_with(
    node: Node,
    config: ApiConfig,
    metrics: Arc<Metrics>,
    places: forward::Places,
) -> Router {
    let answers = browser::Answers::new(
        &node.config().listen,
        node.config().peers.values(),
        &config.allow_hosts,
        &config.allow_origins,
    );
    let exposed = !node.config().listen.ip().is_loopback();
    let state = AppState(Arc::new(AppShared {
        answers: Arc::new(answers),
        inflight: forward::Inflight::new(config.max_inflight_bytes),
        exposed,
        hub: hub::Hub::start(node.subscribe()),
        metrics,
        config: Arc::new(config),
        relay: forward::relay_client(),
        places,
        node,
    }));
    routes()
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), gate))
        .layer(CatchPanicLayer::custom(panicked))
        .with_state(state)
}

/// One route: method, axum path, handler.
type Route = (&'static str, &'static str, MethodRouter<AppState>);

/// Every client route. The router is built from this table and the openapi test
/// checks the same table, so the two cannot drift apart.
fn table() -> Vec<Route> {
    vec![
        ("get", "/state/poll", get(poll::poll)),
        ("put", "/state/poll", put(states::put_reserved)),
        ("get", "/state/:id", get(states::get)),
        ("put", "/state/:id", put(states::put)),
        ("delete", "/state/:id", delete(states::delete)),
        ("post", "/state/:id/lease", post(states::extend_lease)),
        ("delete", "/state/:id/lease", delete(states::release_lease)),
        ("post", "/state/:id/retry", post(states::retry)),
        ("post", "/state/:id/pause", post(states::pause)),
        ("post", "/state/:id/resume", post(states::resume)),
        ("get", "/state/:id/history", get(states::history)),
        ("get", "/states", get(states::list)),
        ("delete", "/states", delete(states::delete_many)),
        ("put", "/chan/:name", put(chans::make)),
        ("get", "/chan/:name", get(chans::info)),
        ("post", "/chan/:name/send", post(chans::send)),
        ("post", "/chan/:name/recv", post(chans::recv)),
        ("post", "/chan/:name/close", post(chans::close)),
        ("get", "/chans", get(chans::list)),
        ("get", "/cluster", get(cluster::info)),
        ("post", "/cluster/learners", post(cluster::add_learner)),
        (
            "delete",
            "/cluster/learners/:id",
            delete(cluster::remove_learner),
        ),
        (
            "post",
            "/cluster/membership",
            post(cluster::change_membership),
        ),
        ("get", "/healthz", get(cluster::healthz)),
        ("get", "/readyz", get(cluster::readyz)),
        ("get", "/metrics", get(metrics::render)),
        ("get", "/", get(console::index)),
        ("get", "/ui/*path", get(console::asset)),
    ]
}

fn routes() -> Router<AppState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
}

/// Whether the router serves `method` on `route` (axum's syntax, `/state/:id`): the
/// requests worth reading a body for. HEAD goes where GET does.
pub fn serves(method: &Method, route: &str) -> bool {
    type Served = std::collections::BTreeSet<(String, &'static str)>;
    static SERVED: std::sync::OnceLock<Served> = std::sync::OnceLock::new();
    let served = SERVED.get_or_init(|| {
        table()
            .into_iter()
            .map(|(method, path, _)| (method.to_ascii_uppercase(), path))
            .collect()
    });
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    served.contains(&(method.to_owned(), route))
}

/// Every `(method, path)` the router serves, in openapi.yaml's syntax
/// (`/state/{id}`).
pub fn served_routes() -> Vec<(String, String)> {
    table()
        .into_iter()
        .map(|(method, path, _)| (method.to_owned(), metrics::template(path)))
        .collect()
}

/// What a request needs, by path (see "Who may call what" above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    /// Probes and the console's static files: always open.
    Probe,
    /// `/metrics`.
    Metrics,
    /// Membership changes.
    Admin,
    /// Everything else.
    Client,
}

fn guard(method: &Method, path: &str) -> Guard {
    let read = method == Method::GET || method == Method::HEAD;
    match path {
        "/states" if method == Method::DELETE => Guard::Admin,
        "/healthz" | "/readyz" => Guard::Probe,
        // The console's files are open to read; anything else sent there needs the
        // token like any other route (and is refused before a body is read).
        "/" if read => Guard::Probe,
        _ if read && path.starts_with("/ui/") => Guard::Probe,
        "/metrics" => Guard::Metrics,
        "/cluster/learners" | "/cluster/membership" => Guard::Admin,
        _ if path.starts_with("/cluster/learners/") => Guard::Admin,
        _ => Guard::Client,
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// No token, or one this node does not know: 401.
    Unauthenticated,
    /// A valid token that does not open this route: 403.
    Forbidden(&'static str),
}

/// Decides a request from the configured tokens and the bearer token `given`.
/// `exposed`: the node listens beyond loopback, where open membership is never allowed.
fn authorize(
    config: &ApiConfig,
    exposed: bool,
    guard: Guard,
    given: Option<&str>,
) -> Result<(), Refusal> {
    let is = |token: &Option<String>| matches!((token, given), (Some(t), Some(g)) if bool::from(t.as_bytes().ct_eq(g.as_bytes())));
    let (admin, client) = (is(&config.admin_token), is(&config.token));
    match guard {
        Guard::Probe => Ok(()),
        Guard::Metrics if config.metrics_public || config.token.is_none() => Ok(()),
        Guard::Client | Guard::Metrics if config.token.is_none() || client || admin => Ok(()),
        Guard::Client | Guard::Metrics => Err(Refusal::Unauthenticated),
        Guard::Admin => match (&config.admin_token, &config.token) {
            (Some(_), _) if admin => Ok(()),
            (Some(_), _) if client => Err(Refusal::Forbidden(
                "membership changes and bulk deletes need the admin token, not the API token",
            )),
            (Some(_), _) => Err(Refusal::Unauthenticated),
            (None, Some(_)) => Err(Refusal::Forbidden(
                "membership changes and bulk deletes are disabled: this node has --token but \
                 no --admin-token",
            )),
            (None, None) if exposed => Err(Refusal::Forbidden(
                "membership changes and bulk deletes need --admin-token on a node that listens \
                 beyond loopback",
            )),
            (None, None) => Ok(()),
        },
    }
}

/// `--token` and `--admin-token`: `Authorization: Bearer <token>`.
/// Whether a request carries the admin token (`--admin-token` set and presented):
/// what it may see beyond the client API, e.g. callback attempt durations.
pub fn has_admin_token(config: &ApiConfig, headers: &header::HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    matches!((&config.admin_token, given), (Some(t), Some(g)) if bool::from(t.as_bytes().ct_eq(g.as_bytes())))
}

/// Every request's way to its handler, in one layer: recorded in the metrics, checked
/// as a browser's request, authorized, then served here or forwarded to the leader
/// (see "Request path"). One layer, not four: axum clones the service behind a layer
/// for every request, and each layer's clone holds the layers inside it.
async fn gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    metrics::recorded(&state, req, |req| async {
        if let Err(e) = browser::check(&state.answers, req.method(), req.headers()) {
            return e.into_response();
        }
        if let Some(refusal) = auth(&state, &req) {
            return refusal;
        }
        forward::serve(&state, req, next).await
    })
    .await
}

/// Bearer auth: the answer refusing `req`, if it may not pass.
fn auth(state: &AppState, req: &Request) -> Option<Response> {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    authorize(
        &state.config,
        state.exposed,
        guard(req.method(), req.uri().path()),
        given,
    )
    .err()
    .map(|refusal| match refusal {
        Refusal::Forbidden(why) => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).into_response()
        }
        Refusal::Unauthenticated => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route requires Authorization: Bearer <token>",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    })
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
    let path = req.uri().path();
    let mut message = format!("no route {} {path}", req.method());
    let named = ["/state/", "/chan/"].iter().any(|p| path.starts_with(p));
    if named && path.matches('/').count() > 2 {
        message.push_str(
            "; state ids and channel names are one path segment: percent-encode `/` as %2F",
        );
    }
    ApiError::not_found(message)
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

    fn config(token: Option<&str>, admin: Option<&str>, metrics_public: bool) -> ApiConfig {
        ApiConfig {
            token: token.map(str::to_owned),
            admin_token: admin.map(str::to_owned),
            metrics_public,
            ..ApiConfig::default()
        }
    }

    #[test]
    fn routes_are_guarded_by_path() {
        assert_eq!(guard(&Method::GET, "/readyz"), Guard::Probe);
        assert_eq!(guard(&Method::GET, "/metrics"), Guard::Metrics);
        assert_eq!(guard(&Method::GET, "/"), Guard::Probe);
        assert_eq!(guard(&Method::GET, "/ui/console.js"), Guard::Probe);
        assert_eq!(guard(&Method::POST, "/ui/console.js"), Guard::Client);
        assert_eq!(guard(&Method::PUT, "/"), Guard::Client);
        assert!(serves(&Method::PUT, "/state/:id"));
        assert!(serves(&Method::HEAD, "/ui/*path"));
        assert!(!serves(&Method::POST, "/ui/*path"));
        assert!(!serves(&Method::PATCH, "/state/:id"));
        assert_eq!(guard(&Method::GET, "/cluster/learners"), Guard::Admin);
        assert_eq!(guard(&Method::GET, "/cluster/learners/4"), Guard::Admin);
        assert_eq!(guard(&Method::GET, "/cluster/membership"), Guard::Admin);
        assert_eq!(guard(&Method::GET, "/cluster"), Guard::Client);
        assert_eq!(guard(&Method::GET, "/states"), Guard::Client);
        assert_eq!(guard(&Method::DELETE, "/states"), Guard::Admin);
        assert_eq!(
            guard(&Method::GET, "/state/cluster/learners"),
            Guard::Client
        );
    }

    #[test]
    fn without_tokens_everything_is_open() {
        let open = config(None, None, false);
        for g in [Guard::Probe, Guard::Metrics, Guard::Admin, Guard::Client] {
            assert_eq!(authorize(&open, false, g, None), Ok(()));
        }
    }

    #[test]
    fn the_api_token_opens_the_client_api_and_not_membership() {
        let api = config(Some("api"), None, false);
        assert_eq!(authorize(&api, false, Guard::Client, Some("api")), Ok(()));
        assert_eq!(authorize(&api, false, Guard::Metrics, Some("api")), Ok(()));
        assert_eq!(authorize(&api, false, Guard::Probe, None), Ok(()));
        assert_eq!(
            authorize(&api, false, Guard::Client, Some("apx")),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            authorize(&api, false, Guard::Client, Some("ap")),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            authorize(&api, false, Guard::Metrics, None),
            Err(Refusal::Unauthenticated)
        );
        assert!(matches!(
            authorize(&api, false, Guard::Admin, Some("api")),
            Err(Refusal::Forbidden(_))
        ));
        let public = config(Some("api"), None, true);
        assert_eq!(authorize(&public, false, Guard::Metrics, None), Ok(()));
    }

    #[test]
    fn the_admin_token_opens_membership_and_the_rest() {
        let both = config(Some("api"), Some("root"), false);
        assert_eq!(authorize(&both, false, Guard::Admin, Some("root")), Ok(()));
        assert_eq!(authorize(&both, false, Guard::Client, Some("root")), Ok(()));
        assert!(matches!(
            authorize(&both, false, Guard::Admin, Some("api")),
            Err(Refusal::Forbidden(_))
        ));
        assert_eq!(
            authorize(&both, false, Guard::Admin, None),
            Err(Refusal::Unauthenticated)
        );
        let open = config(None, None, false);
        assert!(matches!(
            authorize(&open, true, Guard::Admin, None),
            Err(Refusal::Forbidden(_))
        ));
        assert_eq!(authorize(&open, true, Guard::Client, None), Ok(()));
        let admin_only = config(None, Some("root"), false);
        assert_eq!(authorize(&admin_only, false, Guard::Client, None), Ok(()));
        assert_eq!(
            authorize(&admin_only, false, Guard::Admin, Some("guess")),
            Err(Refusal::Unauthenticated)
        );
    }

    #[test]
    fn wait_bounds() {
        assert_eq!(wait_secs(None, 30, 300), Ok(30));
        assert_eq!(wait_secs(Some(0), 30, 300), Ok(0));
        assert!(wait_secs(Some(301), 30, 300).is_err());
    }
}
