//! One node's HTTP server: the client API and the `/raft/*` routes on one port, and the
//! node's callback dispatcher beside them.
//!
//! Raft traffic shares the port with clients (docs/design.md §3.5), so a node needs one
//! address and one firewall rule. The two routers keep their own layers (body limits,
//! auth): nothing is layered over the merged router.
//!
//! # Connections
//! The accept loop is ours rather than `axum::serve`'s, because a node must bound what
//! strangers can hold open (design.md §3.5, "Connections"):
//! - **At most `--max-connections`** at once, kept below the open-files limit (which
//!   [`raise_open_files_limit`] lifts to its hard maximum at start-up) so that the Raft
//!   log, the state machine and the peers always have descriptors left. A connection
//!   beyond the cap is answered `503` with `Retry-After: 1` and closed at once. A
//!   request a follower forwards to the leader holds a second connection, so it takes
//!   a second place ([`crate::api::forward::Places`]) or is answered `503`.
//! - **Header-read timeout** (`--header-read-timeout`, 10 s): a request whose head has
//!   begun must be complete within it, else the connection is closed.
//! - **Idle timeout** (`--idle-timeout`, 60 s): a connection with no request in
//!   progress and no bytes either way for that long is closed. A request in progress is
//!   never cut by it (long-polls and blocking channel operations wait by design), but
//!   its body must keep coming: a body that sends nothing for the idle timeout fails
//!   the request.
//! - **Running out of descriptors** on accept (`EMFILE`, `ENFILE`) is never fatal: the
//!   loop logs it, backs off (10 ms doubling to 1 s) and accepts again.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

use crate::api::forward::Places;
use crate::api::ApiConfig;
use crate::metrics::Metrics;
use crate::node::Node;

/// Default `--header-read-timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Descriptors kept free of client connections for the node's own files, Raft peers
/// and callbacks: a quarter of the limit, between these bounds.
const RESERVED_FDS: (u64, u64) = (64, 1024);

/// The connection limits of [`serve`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `--header-read-timeout`.
    pub header_read_timeout: Duration,
    /// `--idle-timeout`.
    pub idle_timeout: Duration,
    /// `--max-connections`.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            // Well above a channel's cap on parked operations (1,024), so that cap is
            // what a crowd of blocked receivers meets. `slct serve` and `slct dev` fit
            // it to the open-files limit at start (`cli::fit_connections`).
            max_connections: 4096,
        }
    }
}

/// Raises the soft open-files limit to the hard one; returns `(before, now)`.
pub fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    if limit.current == limit.maximum {
        return Ok((before, before));
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).map_err(io::Error::from)?;
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    Ok((before, now))
}

/// The most connections `nodes` nodes in one process may hold with `open_files`
/// descriptors, leaving [`RESERVED_FDS`].
pub fn connections_within(open_files: u64, nodes: usize) -> usize {
    let reserve = (open_files / 4).clamp(RESERVED_FDS.0, RESERVED_FDS.1);
    let per_node = open_files.saturating_sub(reserve) / nodes.max(1) as u64;
    usize::try_from(per_node).unwrap_or(usize::MAX).max(1)
}

/// Serves `node` on `listener` within `limits` until `shutdown` completes, then lets
/// in-flight requests finish; the node's callback dispatcher runs meanwhile, recording
/// into the same metrics as the API. Does not stop the node: the caller does, after
/// this returns.
pub async fn serve(
    node: Node,
    api: ApiConfig,
    limits: Limits,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let _dispatcher = crate::callbacks::start(
        node.clone(),
        api.callbacks.clone(),
        api.max_body,
        metrics.clone(),
    );
    let places = Places::new(limits.max_connections);
    let app = node
        .raft_router()
        .merge(crate::api::router_with(node, api, metrics, places.clone()));
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if backoff.is_zero() {
                    tracing::warn!("accept failed: {e}; backing off and accepting again");
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        let Some(place) = places.take() else {
            refuse(stream);
            continue;
        };
        let (app, closed) = (app.clone(), closed.clone());
        connections.spawn(async move {
            connection(stream, app, limits, closed).await;
            drop(place);
        });
    }
    closing.send_replace(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Errors of one connection that never reached `accept`'s caller properly (the peer
/// reset it first): not a reason to back off.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Answers a connection over the cap 503 (best effort, without waiting) and closes it.
fn refuse(stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
        Content-Type: application/json\r\nContent-Length: 106\r\nConnection: close\r\n\r\n\
        {\"error\":{\"code\":\"too_many_connections\",\"message\":\"this node has all the connections it may hold\"}}\n";
    let _ = stream.try_write(BUSY);
}

/// What the timers of one connection look at.
struct Activity {
    /// When the connection began, for the instants below.
    epoch: Instant,
    /// Requests being handled.
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last byte read or written, or request ended.
    last: AtomicU64,
    /// Milliseconds since `epoch` (plus one) at which the next request's head began
    /// arriving; 0 when none has.
    head_began: AtomicU64,
    /// Woken whenever `in_flight` changes or a request's head begins.
    changed: Notify,
}

impl Activity {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn io(&self, read: bool) {
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        let idle = read && self.in_flight.load(Ordering::Relaxed) == 0;
        let began = || {
            self.head_began
                .compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        };
        if idle && began() {
            self.changed.notify_one();
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_began.store(0, Ordering::Relaxed);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// When the connection is due to be closed, if nothing happens meanwhile; `None`
    /// while a request is in progress.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.head_began.load(Ordering::Relaxed) {
            0 => Some(self.at(self.last.load(Ordering::Relaxed)) + limits.idle_timeout),
            began => Some(self.at(began - 1) + limits.header_read_timeout),
        }
    }
}

/// A request in progress on a connection, until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last.store(self.0.now(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

/// Serves one connection until the client closes it, a timeout of [`Limits`] closes it,
/// or the server shuts down (then the request in progress, if any, finishes first).
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    mut closed: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity {
        epoch: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last: AtomicU64::new(0),
        head_began: AtomicU64::new(0),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
        let in_flight = requests.begin();
        let (parts, body) = request.into_parts();
        let body = tower_http::timeout::TimeoutBody::new(limits.idle_timeout, body);
        let request = hyper::Request::from_parts(parts, Body::new(body));
        let mut app = app.clone();
        async move {
            let response = app.call(request).await;
            drop(in_flight);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    loop {
        let due = activity.deadline(&limits);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = closed.wait_for(|closed| *closed) => break,
            () = activity.changed.notified() => {}
            () = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    return;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A connection's stream, noting each read and write in its [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.io(true);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.io(false);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_descriptors_for_the_node() {
        assert_eq!(connections_within(1024, 1), 768);
        assert_eq!(connections_within(256, 1), 192);
        assert_eq!(connections_within(1 << 20, 1), (1 << 20) - 1024);
        assert_eq!(connections_within(1024, 3), 256);
        assert_eq!(connections_within(10, 1), 1);
    }
}
