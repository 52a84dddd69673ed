//! A follower forwards writes and linearizable reads to the leader, so clients never
//! need to find it (design.md §3).
//!
//! Answered locally: `/healthz`, `/readyz`, `/metrics`, `GET /cluster` (not with
//! `?leader=true`), the console's static files (`GET /`, `GET /ui/...`: every node
//! serves them, and they hold no data) and reads with `?stale=true`. Everything else goes to the leader when this node knows it is not
//! the leader, or — with the body it buffered — when the handler found out half-way
//! (the write was refused before it reached the log, so replaying it is safe). The
//! leader's status, headers and body are relayed unchanged, but for the leader's
//! [`WAITED_HEADER`], which this node's metrics take as the request's wait. Long-polls
//! and blocking channel operations are forwarded too; the client's timeout covers the
//! longest wait.
//!
//! This step also reads every body, up to `--max-body` (413 beyond), for all routes
//! that are not answered locally; axum's own default body limit is off. It runs after
//! auth, so a body is read only once the token checks. The bytes of bodies held at
//! once, across all requests, are capped by `--max-inflight-bytes`: beyond it the
//! answer is 503 `overloaded` with `Retry-After`.
//!
//! A request for no route, or with a method its route does not serve, is not
//! forwarded: the router answers it 404 or 405 without reading its body.
//!
//! A relayed request holds a second connection, to the leader, for as long as it runs
//! (a forwarded long-poll, minutes). So it takes a second of the node's connection
//! places ([`Places`], design.md §3.5, "Connections"); with none left it is answered
//! 503 `too_many_connections`, and the relay keeps at most [`RELAY_IDLE_PER_HOST`]
//! idle connections, which the descriptors kept free of places cover. A follower
//! flooded with long-polls thus refuses the excess instead of running out of
//! descriptors, which its log and state machine need.
//!
//! A forwarded request carries `Slct-Forwarded`; a node never forwards such a request
//! again (two nodes each believing the other leads would otherwise bounce it between
//! them) but answers 503 `not_leader` with `Retry-After`.

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderMap, HeaderName, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, NotLeader};
use super::extract::too_large;
use super::wait::{self, WAITED_HEADER};
use super::AppState;

/// Set on a request one node forwards to another.
pub const FORWARDED: &str = "slct-forwarded";

/// Most idle connections the relay keeps to the leader once their requests are done.
pub const RELAY_IDLE_PER_HOST: usize = 16;

/// A node's places for client connections (`--max-connections`), shared by the
/// server's accept loop, which takes one per connection, and the relay, which takes
/// one more per request it forwards (module docs).
#[derive(Clone)]
pub struct Places(Arc<Semaphore>);

impl Places {
    /// `count` places.
    pub fn new(count: usize) -> Self {
        Places(Arc::new(Semaphore::new(count.min(Semaphore::MAX_PERMITS))))
    }

    /// As many places as there can be, for a router served without a connection cap.
    pub fn unbounded() -> Self {
        Self::new(Semaphore::MAX_PERMITS)
    }

    /// A place, held until dropped, if one is free.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// Hop-by-hop headers, which describe one connection and are not relayed.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::HOST,
    header::UPGRADE,
];

/// Whether this node may answer the request from its own replica.
pub fn is_local(method: &Method, path: &str, query: Option<&str>) -> bool {
    let has = |pair: &str| query.is_some_and(|q| q.split('&').any(|kv| kv == pair));
    let cluster = path == "/cluster" && !has("leader=true");
    let console = path == "/" || path.starts_with("/ui/");
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || (method == Method::GET && (cluster || console || has("stale=true")))
}

/// Serves `req` here with `next`, or on the leader (see the module docs).
pub async fn serve(state: &AppState, req: Request, next: Next) -> Response {
    let routed = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| super::serves(req.method(), p.as_str()));
    if !routed || is_local(req.method(), req.uri().path(), req.uri().query()) {
        return next.run(req).await;
    }
    let forwarded = req.headers().contains_key(FORWARDED);
    let (parts, body) = req.into_parts();
    // Held until the answer is built: the body's bytes count against
    // --max-inflight-bytes while they are in memory.
    let (bytes, _held) = match read_body(state, &parts.headers, body).await {
        Ok(read) => read,
        Err(e) => return e.into_response(),
    };
    if !state.node.is_leader() && !forwarded {
        return match state.node.leader() {
            Some((_, addr)) => relay(state, &addr, &parts, bytes).await,
            None => ApiError::from(crate::node::NodeError::NoLeader).into_response(),
        };
    }
    let local = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
    let response = next.run(local).await;
    match response.extensions().get::<NotLeader>() {
        Some(NotLeader(_, addr)) if !forwarded => relay(state, addr, &parts, bytes).await,
        _ => response,
    }
}

/// Bytes of request bodies held in memory across all requests, and the cap on them
/// (`--max-inflight-bytes`).
#[derive(Debug)]
pub struct Inflight {
    used: AtomicUsize,
    cap: usize,
}

impl Inflight {
    /// No bytes held yet, at most `cap`.
    pub fn new(cap: usize) -> Arc<Inflight> {
        Arc::new(Inflight {
            used: AtomicUsize::new(0),
            cap,
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.cap)
            })
            .is_ok()
    }
}

/// Bytes one request holds of the [`Inflight`] budget, given back when dropped.
struct Held {
    inflight: Arc<Inflight>,
    bytes: usize,
}

impl Held {
    /// Takes `n` more bytes, if the budget has them.
    fn grow(&mut self, n: usize) -> bool {
        let taken = self.inflight.take(n);
        if taken {
            self.bytes += n;
        }
        taken
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.inflight.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Reads a request body up to `--max-body` (413 beyond, at once when its
/// `Content-Length` says so), holding its bytes against `--max-inflight-bytes`: a
/// body that does not fit what other requests hold is 503 `overloaded`, at once when
/// its `Content-Length` says so, else as soon as it outgrows what is left.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Held), ApiError> {
    let max = state.config.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let mut held = Held {
        inflight: state.inflight.clone(),
        bytes: 0,
    };
    let overloaded = || {
        ApiError::unavailable(
            "overloaded",
            "this node holds as many request bytes as --max-inflight-bytes allows; retry shortly",
        )
    };
    if !held.grow(declared.unwrap_or(0)) {
        return Err(overloaded());
    }
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) if stalled(&e) => return Err(body_stalled()),
            Err(e) => {
                return Err(ApiError::invalid(format!(
                    "the request body could not be read: {e}"
                )))
            }
        };
        let total = buffer.len() + chunk.len();
        if total > max {
            return Err(too_large(max));
        }
        if total > held.bytes && !held.grow(total - held.bytes) {
            return Err(overloaded());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok((buffer.freeze(), held))
}

/// Whether reading a body failed because it stopped coming (the server's idle
/// timeout, see [`crate::server`]).
fn stalled(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// 408 `timeout` for a body that stopped coming.
fn body_stalled() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        "timeout",
        "the request body stopped coming for longer than the node's --idle-timeout",
    )
}

/// The client a follower relays requests with: hyper's, because it sends the request
/// target exactly as given (reqwest's URL parsing would drop `.` and `..` segments and
/// turn `\` into `/`, so the leader would answer another route than the client asked).
pub type RelayClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector<crate::http_client::Resolver>,
    Body,
>;

/// A [`RelayClient`] (connections pooled, names resolved as `http_client` does). A
/// pooled connection is dropped after
/// [`POOL_IDLE_TIMEOUT`](crate::http_client::POOL_IDLE_TIMEOUT) unused, well before
/// the leader's `--idle-timeout` closes it, and at once beyond
/// [`RELAY_IDLE_PER_HOST`] idle ones.
pub fn relay_client() -> RelayClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(crate::http_client::POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(RELAY_IDLE_PER_HOST)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(crate::http_client::connector(Duration::from_secs(2)))
}

/// Sends the request to `addr`, its method, path, query and headers as received, and
/// relays its answer; in a connection place of its own (module docs).
async fn relay(
    state: &AppState,
    addr: &str,
    parts: &axum::http::request::Parts,
    body: Bytes,
) -> Response {
    let Some(_place) = state.places.take() else {
        return ApiError::unavailable(
            "too_many_connections",
            "this node has all the connections it may hold, counting those it forwards on",
        )
        .into_response();
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = match format!("http://{addr}{target}").parse::<axum::http::Uri>() {
        Ok(uri) => uri,
        Err(e) => return leader_unreachable(addr, &e).into_response(),
    };
    let mut request = axum::http::Request::new(Body::from(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = strip_hop_by_hop(&parts.headers);
    // Checked here (see `browser`); the leader's own origin is another.
    request.headers_mut().remove(header::ORIGIN);
    request
        .headers_mut()
        .insert(FORWARDED, header::HeaderValue::from_static("1"));
    let exchange = async {
        let answer = state
            .relay
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = answer.into_parts();
        let body = axum::body::to_bytes(Body::new(body), usize::MAX)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((parts, body))
    };
    let (answer, body) = match tokio::time::timeout(state.config.forward_timeout, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return leader_unreachable(addr, &e).into_response(),
        Err(_) => return leader_unreachable(addr, &"no answer in time").into_response(),
    };
    let mut headers = strip_hop_by_hop(&answer.headers);
    if let Some(ms) = headers
        .remove(WAITED_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        wait::add_wait(Duration::from_millis(ms));
    }
    (answer.status, headers, body).into_response()
}

fn leader_unreachable(addr: &str, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::unavailable(
        "leader_unreachable",
        format!("the leader at {addr} could not be reached: {e}"),
    )
}

fn strip_hop_by_hop(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for h in &HOP_BY_HOP {
        out.remove(h);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_routes() {
        assert!(is_local(&Method::GET, "/healthz", None));
        assert!(is_local(&Method::GET, "/cluster", None));
        assert!(is_local(&Method::GET, "/state/x", Some("stale=true")));
        assert!(!is_local(&Method::GET, "/state/x", None));
        assert!(!is_local(&Method::GET, "/state/x", Some("stale=false")));
        assert!(!is_local(&Method::POST, "/cluster/learners", None));
        assert!(!is_local(&Method::PUT, "/state/x", Some("stale=true")));
        assert!(!is_local(&Method::GET, "/cluster", Some("leader=true")));
        assert!(is_local(&Method::GET, "/", None));
        assert!(is_local(&Method::GET, "/ui/console.js", None));
    }
}
