//! `GET /metrics`: Prometheus text (OpenMetrics) with the series of design.md §3.5.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: typed label
//! sets, no global registry (each router has its own, so in-process test clusters do
//! not mix their numbers), and an encoder for the text format.
//!
//! Request counts and latencies are recorded by [`middleware`] with labels from a
//! closed set, so no request can add series: the method is one the API serves (`GET`,
//! `HEAD`, `PUT`, `POST`, `DELETE`) or `other`, the route is a template of the route
//! table (`/state/{id}`, never the raw path; the long-poll is `/state/poll`) or
//! `other`.
//!
//! Time a request spends waiting by design (a long-poll asleep until a state turns
//! pending, a blocking send or receive parked for a partner) is not service time: the
//! handler runs the wait under [`waiting`], and the middleware records it in
//! `http_request_wait_seconds` and only the rest in `http_request_duration_seconds`,
//! so a healthy cluster's latency is not its pollers' `wait`. A follower that relays a
//! request learns the leader's wait from the [`WAITED_HEADER`] of the answer.
//! Raft figures and table sizes are read at scrape time. Caveat: table sizes come from
//! sled's `len`, which walks the tree, so a scrape costs time proportional to the
//! number of pending, leased and waiting entries (not to the number of states).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::error::ApiError;
use super::AppState;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method, one the API serves, or `other`.
    pub method: &'static str,
    /// Route template, or `other`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method, one the API serves, or `other`.
    pub method: &'static str,
    /// Route template, or `other`.
    pub route: String,
}

/// A one-label set (`status`, `queue`, `outcome`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

type Latency = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The registry and every series.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    wait: Latency,
    raft_term: Gauge,
    raft_leader: Gauge,
    raft_last_applied: Gauge,
    raft_is_leader: Gauge,
    states: Family<KindLabel, Gauge>,
    deleted: Family<KindLabel, Gauge>,
    discarded: Gauge,
    waiters: Family<KindLabel, Gauge>,
    long_pollers: Gauge<i64, AtomicI64>,
    long_pollers_waiting: Gauge,
    callback_attempts: Family<KindLabel, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every series registered.
    pub fn new() -> Self {
        let mut m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            wait: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            raft_term: Gauge::default(),
            raft_leader: Gauge::default(),
            raft_last_applied: Gauge::default(),
            raft_is_leader: Gauge::default(),
            states: Family::default(),
            deleted: Family::default(),
            discarded: Gauge::default(),
            waiters: Family::default(),
            long_pollers: Gauge::default(),
            long_pollers_waiting: Gauge::default(),
            callback_attempts: Family::default(),
            registry: Registry::with_prefix("slct"),
        };
        let r = &mut m.registry;
        r.register(
            "http_requests",
            "HTTP requests by method, route and status",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request service time by method and route: the request's time minus its wait",
            m.latency.clone(),
        );
        r.register(
            "http_request_wait_seconds",
            "Time requests spent waiting by design (long-polls, blocking sends and receives) by method and route",
            m.wait.clone(),
        );
        r.register("raft_term", "Current Raft term", m.raft_term.clone());
        r.register(
            "raft_leader",
            "Id of the known leader (0: none)",
            m.raft_leader.clone(),
        );
        r.register(
            "raft_last_applied",
            "Last applied log index",
            m.raft_last_applied.clone(),
        );
        r.register(
            "raft_is_leader",
            "1 if this node is the leader",
            m.raft_is_leader.clone(),
        );
        r.register(
            "states",
            "States by status (waiting, pending, leased, done, failed) and in all (all)",
            m.states.clone(),
        );
        r.register(
            "states_deleted",
            "States deleted since the cluster began (kept by the state machine), by request (DELETE /state/{id}, DELETE /states) or by retention (done for retain_ms)",
            m.deleted.clone(),
        );
        r.register(
            "sends_discarded",
            "Parked detached sends discarded by closing their channel, since the cluster began (kept by the state machine)",
            m.discarded.clone(),
        );
        r.register(
            "queued",
            "Waiters in channel queues (senders: blocked and parked sends; receivers), and armed timers (timers)",
            m.waiters.clone(),
        );
        r.register(
            "long_polls",
            "Long-poll requests in progress",
            m.long_pollers.clone(),
        );
        r.register(
            "long_polls_waiting",
            "Long-polls asleep in the pollers' queue",
            m.long_pollers_waiting.clone(),
        );
        r.register(
            "callback_attempts",
            "Callback attempts by outcome (applied, deferred, failed, gave_up)",
            m.callback_attempts.clone(),
        );
        m
    }

    /// Counts a long-poll in progress until the guard is dropped.
    pub fn long_poller(&self) -> GaugeGuard {
        self.long_pollers.inc();
        GaugeGuard(self.long_pollers.clone())
    }

    /// Counts one callback attempt's outcome.
    pub fn callback(&self, outcome: &str) {
        self.callback_attempts
            .get_or_create(&KindLabel {
                kind: outcome.to_owned(),
            })
            .inc();
    }

    fn set(family: &Family<KindLabel, Gauge>, kind: &str, value: u64) {
        family
            .get_or_create(&KindLabel { kind: kind.into() })
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }

    /// Reads the scrape-time figures from the node.
    fn refresh(&self, state: &AppState) {
        let info = state.node.cluster_info();
        let gauge = |v: Option<u64>| i64::try_from(v.unwrap_or(0)).unwrap_or(i64::MAX);
        self.raft_term.set(gauge(Some(info.term)));
        self.raft_leader.set(gauge(info.leader));
        self.raft_last_applied.set(gauge(info.last_applied));
        self.raft_is_leader
            .set(i64::from(info.leader == Some(info.id)));
        // Running totals the state machine keeps: constant time however many states.
        match crate::engine::counts(state.node.store()) {
            Ok(c) => {
                Self::set(&self.states, "waiting", c.waiting);
                Self::set(&self.states, "pending", c.pending);
                Self::set(&self.states, "leased", c.leased);
                Self::set(&self.states, "done", c.done);
                Self::set(&self.states, "failed", c.failed);
                Self::set(&self.states, "all", c.states());
                Self::set(&self.deleted, "request", c.deleted_by_request);
                Self::set(&self.deleted, "retention", c.deleted_by_retention);
                self.discarded
                    .set(i64::try_from(c.discarded).unwrap_or(i64::MAX));
                Self::set(&self.waiters, "senders", c.senders);
                Self::set(&self.waiters, "receivers", c.receivers);
                Self::set(&self.waiters, "timers", c.timers);
            }
            Err(e) => tracing::warn!("metrics: cannot read the state counts: {e}"),
        }
        self.long_pollers_waiting
            .set(i64::try_from(state.hub.pollers_waiting()).unwrap_or(i64::MAX));
    }
}

/// Decrements a gauge when dropped.
pub struct GaugeGuard(Gauge<i64, AtomicI64>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

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

/// Header on a relayed answer: milliseconds the leader spent waiting (see the module
/// docs). Only on answers to forwarded requests; the relaying node removes it.
pub const WAITED_HEADER: &str = "slct-waited-ms";

tokio::task_local! {
    /// Nanoseconds the current request has waited, for [`middleware`].
    static WAITED: Arc<AtomicU64>;
}

/// Runs `wait` (a long-poll's sleep, a parked operation's wait) and counts its time as
/// the current request's wait rather than its service time.
pub async fn waiting<T>(wait: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = wait.await;
    add_wait(started.elapsed());
    out
}

/// Adds `d` to the current request's wait (no-op outside a request).
pub fn add_wait(d: Duration) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let _ = WAITED.try_with(|w| w.fetch_add(nanos, Ordering::Relaxed));
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

/// The route label: the matched template, else `other`.
fn route_label(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| template(p.as_str()))
}

/// Records every request's route, status, service time and wait.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = route_label(&req);
    let method = method_label(req.method());
    let forwarded = req.headers().contains_key(super::forward::FORWARDED);
    let started = Instant::now();
    let waited = Arc::new(AtomicU64::new(0));
    let mut response = WAITED.scope(waited.clone(), next.run(req)).await;
    let wait = Duration::from_nanos(waited.load(Ordering::Relaxed));
    let service = started.elapsed().saturating_sub(wait);
    if forwarded && !wait.is_zero() {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        response
            .headers_mut()
            .insert(WAITED_HEADER, HeaderValue::from(ms));
    }
    let labels = RouteLabels {
        method,
        route: route.clone(),
    };
    let metrics = &state.metrics;
    metrics
        .latency
        .get_or_create(&labels)
        .observe(service.as_secs_f64());
    if !wait.is_zero() {
        metrics
            .wait
            .get_or_create(&labels)
            .observe(wait.as_secs_f64());
    }
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    state.metrics.refresh(&state);
    let mut text = String::new();
    if encode(&mut text, &state.metrics.registry).is_err() {
        return ApiError::unavailable("metrics", "could not encode metrics").into_response();
    }
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
