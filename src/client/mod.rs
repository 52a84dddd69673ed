//! A typed Rust client for slct's HTTP API (design.md §3, openapi.yaml), and a
//! [`Worker`] that long-polls states and runs a handler for each.
//!
//! The client speaks only the wire format: its structs live in [`types`], not in the
//! engine, so it sits beside `cli` in the layering and uses nothing of the server.
//!
//! # Nodes, failover and retries
//! Every node serves the whole API and forwards to the leader, so any node will do;
//! the client is given several (`Client::builder("http://a:7001,http://b:7001")`) so
//! that it survives the loss of one. It sends each request to the node that answered
//! last, and sends it again — to the next node — when that cannot do what the first
//! try did not:
//! - for any request, when it could not connect (it reached no node) or the 503's code
//!   says nothing was applied (`no_leader`, `not_leader`, `no_quorum`, `not_ready`,
//!   `clock_jump`: [`error::NOTHING_APPLIED`]);
//! - for reads (GETs, polls included: a state a lost poll leased is redelivered when
//!   its lease lapses) and idempotent writes (pause, resume, lease extension, making a
//!   channel with the same capacity), also for every other 503 and when the answer was
//!   lost after the request was sent.
//!
//! Every other write — one that may have been applied when it was answered 503
//! `outcome_unknown` (or `shutting_down`, `leader_unreachable`, ...) or when its answer
//! was lost — carries an `Idempotency-Key`, a fresh random one per call unless the
//! caller chose one ([`Client::with_idempotency_key`]), and is retried with that same
//! key: the server answers a repeat of the key and request with the first reply and
//! applies nothing (design.md §3), so a create does not come back `exists` nor a send
//! go twice. Blocking sends and receives (`wait=N`) take no key (the server refuses
//! one: their outcome reaches only the caller that waited); answered that way, they
//! are not retried, and the caller gets the error, for which [`Error::outcome_unknown`]
//! is true.
//!
//! A node that answered 503 is not asked again before its `Retry-After` (capped by
//! [`Retry::max_wait`]); one that refused the connection, not for a second. Each node
//! is tried at most [`Retry::attempts`] times per request.
//!
//! ```no_run
//! # async fn demo() -> Result<(), slct::client::Error> {
//! use serde_json::json;
//! use slct::client::{Case, Client, Select, SendMode, StateBody};
//!
//! let client = Client::builder("http://127.0.0.1:7001").token("s3cret").build()?;
//! let body = StateBody::new()
//!     .data(json!({"step": "awaiting payment"}))
//!     .select(Select::new("main").case(Case::recv("payments/order-1")));
//! client.put_state("order-1", &body).await?;
//! client.send("payments/order-1", &json!({"amount": 42}), SendMode::Detached).await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{header, Method};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

pub mod error;
pub mod types;
pub mod worker;

pub use error::Error;
pub use types::{
    Callback, Case, Chan, ChanPage, Closed, ClusterInfo, Deleted, Discarded, Disk, History,
    HistoryEvent, Lease, RawJson, Received, Select, SelectResult, SendMode, Sent, State, StateBody,
    StatePage, Status,
};
pub use worker::{Worker, WorkerConfig, WorkerStats};

/// What a client call returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How failed requests are retried (see the module docs for which are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Tries per node, the first included; 1 with one node retries nothing.
    pub attempts: u32,
    /// The longest wait between tries, whatever `Retry-After` says.
    pub max_wait: Duration,
}

impl Default for Retry {
    /// Five tries per node, at most 2 s apart: rides out a leader election (about a
    /// second).
    fn default() -> Self {
        Retry {
            attempts: 5,
            max_wait: Duration::from_secs(2),
        }
    }
}

/// Options of [`Client::poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollOptions {
    /// Only ids starting with this.
    pub prefix: String,
    /// Seconds to wait for a state (0–300).
    pub wait: u64,
    /// Most states to lease (1–100).
    pub limit: u32,
    /// Lease duration in ms.
    pub lease_ms: u64,
    /// Only states with at least this priority.
    pub min_priority: Option<u8>,
}

impl Default for PollOptions {
    /// The server's defaults: any prefix, 30 s, one state, a 30 s lease.
    fn default() -> Self {
        PollOptions {
            prefix: String::new(),
            wait: 30,
            limit: 1,
            lease_ms: 30_000,
            min_priority: None,
        }
    }
}

/// Options of [`Client::list_states`]; `None` leaves the server's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListStates {
    /// Only ids starting with this.
    pub prefix: String,
    /// Only this status (`waiting`, `pending`, `leased`, `done`, `failed`) or `paused`.
    pub status: Option<String>,
    /// Only states with at least this priority.
    pub min_priority: Option<u8>,
    /// Page size (1–1000, server default 100).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Include `data`.
    pub full: bool,
    /// Answer from the node asked, without a round to the leader.
    pub stale: bool,
}

/// Builds a [`Client`].
#[derive(Clone)]
pub struct ClientBuilder {
    servers: Vec<String>,
    token: Option<String>,
    retry: Retry,
    timeout: Duration,
}

impl ClientBuilder {
    /// Sends `Authorization: Bearer <token>` (the node's `--token`, or the admin token
    /// for membership changes).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How 503s are retried.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// How long one request may take beyond the wait it asks for (default 30 s: more
    /// than the server's write timeout, so its 503 arrives first).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client; fails if there is no server URL or one is not http(s).
    pub fn build(self) -> Result<Client> {
        let mut servers = Vec::new();
        for server in &self.servers {
            let server = server.trim().trim_end_matches('/').to_owned();
            if !(server.starts_with("http://") || server.starts_with("https://")) {
                return Err(Error::Usage(format!(
                    "server {server:?} must be an http:// or https:// URL"
                )));
            }
            servers.push(server);
        }
        if servers.is_empty() {
            return Err(Error::Usage(
                "a client needs at least one server URL".into(),
            ));
        }
        let http = crate::http_client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(crate::http_client::POOL_IDLE_TIMEOUT)
            .build()?;
        Ok(Client {
            http,
            failover: Arc::new(Mutex::new(Failover {
                current: 0,
                not_before: vec![None; servers.len()],
            })),
            servers: servers.into(),
            token: self.token,
            retry: self.retry,
            timeout: self.timeout,
            idempotency_key: None,
        })
    }
}

/// A client of one slct cluster, through any of its nodes. Cheap to clone (clones share
/// connections, and which node answers).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    servers: Arc<[String]>,
    failover: Arc<Mutex<Failover>>,
    token: Option<String>,
    retry: Retry,
    timeout: Duration,
    /// Sent as `Idempotency-Key` with every write (see
    /// [`Client::with_idempotency_key`]).
    idempotency_key: Option<Arc<str>>,
}

/// Which node to ask first, and when each may be asked again.
#[derive(Debug)]
struct Failover {
    /// The node that answered last (or the next after one that failed).
    current: usize,
    /// Per node: not before this instant (its `Retry-After`, or a second after a
    /// refused connection).
    not_before: Vec<Option<tokio::time::Instant>>,
}

/// Shows the server and whether a token is set, never the token.
impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("servers", &self.servers)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Shows the server and whether a token is set, never the token.
impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.servers)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Which 503s a request may be retried on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RetryOn {
    /// Only those that say nothing was applied.
    NothingApplied,
    /// Every 503: the request is a read or an idempotent write.
    Any503,
    /// None: the caller wants the first answer.
    Never,
}

/// One request.
struct Call {
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    lease: Option<Uuid>,
    retry: RetryOn,
    /// How long the server may hold the request on purpose (a long-poll).
    wait: Duration,
    /// The `Idempotency-Key` this call's tries share, drawn when the call is made (a
    /// write that is not a blocking send or receive), unless the client has its own.
    key: Option<String>,
}

impl Call {
    fn new(method: Method, path: String) -> Call {
        let retry = if method == Method::GET {
            RetryOn::Any503
        } else {
            RetryOn::NothingApplied
        };
        let key = (method != Method::GET).then(|| Uuid::new_v4().to_string());
        Call {
            method,
            path,
            query: Vec::new(),
            body: None,
            lease: None,
            retry,
            wait: Duration::ZERO,
            key,
        }
    }

    fn query(mut self, key: &'static str, value: impl ToString) -> Call {
        self.query.push((key, value.to_string()));
        self
    }

    fn query_opt(self, key: &'static str, value: Option<impl ToString>) -> Call {
        match value {
            Some(value) => self.query(key, value),
            None => self,
        }
    }

    fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Result<Call> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| Error::Usage(format!("the body cannot be JSON: {e}")))?;
        self.body = Some(bytes);
        Ok(self)
    }

    fn idempotent(mut self) -> Call {
        self.retry = RetryOn::Any503;
        self
    }

    fn waits(mut self, secs: u64) -> Call {
        self.wait = Duration::from_secs(secs);
        if secs > 0 {
            // A blocking send or receive cannot be replayed: the server takes no key.
            self.key = None;
        }
        self
    }
}

/// What a path segment encodes: all but letters, digits and RFC 3986's unreserved
/// `-`, `.`, `_`, `~` (so `order-9` stays readable in URLs and errors; `.` and `..`
/// are not valid ids, design.md §3.2).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment (a state id or channel name).
fn seg(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// An error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    code: String,
    message: String,
}

impl Client {
    /// A client of the nodes at `servers` — one URL (`http://127.0.0.1:7001`) or
    /// several separated by commas — with the defaults.
    pub fn new(servers: impl Into<String>) -> Result<Client> {
        Client::builder(servers).build()
    }

    /// A builder for a client of the nodes at `servers`: one URL, or several separated
    /// by commas (as `--server` and `SLCT_SERVER` take them).
    pub fn builder(servers: impl Into<String>) -> ClientBuilder {
        let servers: String = servers.into();
        Client::builder_for(servers.split(',').filter(|s| !s.trim().is_empty()))
    }

    /// A builder for a client of the nodes at these URLs.
    pub fn builder_for<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> ClientBuilder {
        ClientBuilder {
            servers: servers.into_iter().map(Into::into).collect(),
            token: None,
            retry: Retry::default(),
            timeout: Duration::from_secs(30),
        }
    }

    /// The first node's URL (the one `health` and `ready` ask).
    pub fn server(&self) -> &str {
        &self.servers[0]
    }

    /// Every node's URL, in the order given.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// A clone of this client that sends `Idempotency-Key: key` with every write, and
    /// so may repeat a write whose outcome is unknown (503 `outcome_unknown`,
    /// `leader_unreachable`, a lost answer) on the next node: the server answers a
    /// repeat of the same key and request with the first reply. Use one key per
    /// logical write (`client.with_idempotency_key(format!("pay-{order}")).send(..)`).
    pub fn with_idempotency_key(&self, key: impl Into<String>) -> Client {
        Client {
            idempotency_key: Some(key.into().into()),
            ..self.clone()
        }
    }

    // States (design.md §3.1).

    /// Creates a state (`PUT /state/{id}` without a lease) → [`Error::Exists`] if it
    /// exists. `body` is usually a [`StateBody`]; any JSON object works (the seed
    /// format too).
    pub async fn put_state<B: Serialize + ?Sized>(&self, id: &str, body: &B) -> Result<State> {
        self.json(Call::new(Method::PUT, format!("/state/{}", seg(id))).json(body)?)
            .await
    }

    /// Updates a leased state under its lease token (design.md §3.2); ends the lease.
    /// [`Error::LeaseLost`] if the lease is gone, [`Error::Unprocessable`] if a blocked
    /// select is missing or changed.
    pub async fn update_state<B: Serialize + ?Sized>(
        &self,
        id: &str,
        token: Uuid,
        body: &B,
    ) -> Result<State> {
        let mut call = Call::new(Method::PUT, format!("/state/{}", seg(id))).json(body)?;
        call.lease = Some(token);
        self.json(call).await
    }

    /// Reads a state (linearizable).
    pub async fn get_state(&self, id: &str) -> Result<State> {
        self.json(Call::new(Method::GET, format!("/state/{}", seg(id))))
            .await
    }

    /// Reads a state from the node asked, without a round to the leader.
    pub async fn get_state_stale(&self, id: &str) -> Result<State> {
        let call = Call::new(Method::GET, format!("/state/{}", seg(id))).query("stale", true);
        self.json(call).await
    }

    /// Deletes a state; its blocked selects leave every queue.
    pub async fn delete_state(&self, id: &str) -> Result<()> {
        self.empty(Call::new(Method::DELETE, format!("/state/{}", seg(id))))
            .await
    }

    /// Deletes states whose id starts with `prefix` and that have `status` (a status or
    /// `paused`) — at least one of the two — in batches: up to 100,000 a call, with
    /// `more` set if states after those may match (call again). Needs the admin token where
    /// the server has one.
    pub async fn delete_states(&self, prefix: &str, status: Option<&str>) -> Result<Deleted> {
        let call = Call::new(Method::DELETE, "/states".into())
            .query("prefix", prefix)
            .query_opt("status", status)
            .idempotent();
        self.json(call).await
    }

    /// One page of states.
    pub async fn list_states(&self, options: &ListStates) -> Result<StatePage> {
        let call = Call::new(Method::GET, "/states".into())
            .query("prefix", &options.prefix)
            .query_opt("status", options.status.as_ref())
            .query_opt("min_priority", options.min_priority)
            .query_opt("limit", options.limit)
            .query_opt("after", options.after.as_ref())
            .query("full", options.full)
            .query("stale", options.stale);
        self.json(call).await
    }

    // Resuming (design.md §3.2).

    /// Long-polls: leases and returns up to `limit` pending states (none after `wait`).
    pub async fn poll(&self, options: &PollOptions) -> Result<Vec<State>> {
        let call = Call::new(Method::GET, "/state/poll".into())
            .query("prefix", &options.prefix)
            .query("wait", options.wait)
            .query("limit", options.limit)
            .query("lease_ms", options.lease_ms)
            .query_opt("min_priority", options.min_priority)
            .waits(options.wait);
        self.json(call).await
    }

    /// Extends a lease to `extend_ms` from now (a heartbeat).
    pub async fn extend_lease(&self, id: &str, token: Uuid, extend_ms: u64) -> Result<Lease> {
        let call = Call::new(Method::POST, format!("/state/{}/lease", seg(id)))
            .json(&json!({"token": token, "extend_ms": extend_ms}))?
            .idempotent();
        self.json(call).await
    }

    /// Gives a leased state back: it is pending again.
    pub async fn release_lease(&self, id: &str, token: Uuid) -> Result<()> {
        let call =
            Call::new(Method::DELETE, format!("/state/{}/lease", seg(id))).query("token", token);
        self.empty(call).await
    }

    /// Re-arms a failed state (callback attempts exhausted).
    pub async fn retry(&self, id: &str) -> Result<State> {
        self.json(Call::new(Method::POST, format!("/state/{}/retry", seg(id))))
            .await
    }

    // Process control (design.md §3.6).

    /// Pauses a state (idempotent).
    pub async fn pause(&self, id: &str) -> Result<State> {
        let call = Call::new(Method::POST, format!("/state/{}/pause", seg(id))).idempotent();
        self.json(call).await
    }

    /// Resumes a paused state (idempotent).
    pub async fn resume(&self, id: &str) -> Result<State> {
        let call = Call::new(Method::POST, format!("/state/{}/resume", seg(id))).idempotent();
        self.json(call).await
    }

    /// A page of a state's history, newest first: at most `limit` events numbered
    /// below `before`.
    pub async fn history(
        &self,
        id: &str,
        limit: Option<u32>,
        before: Option<u64>,
    ) -> Result<History> {
        let call = Call::new(Method::GET, format!("/state/{}/history", seg(id)))
            .query_opt("limit", limit)
            .query_opt("before", before);
        self.json(call).await
    }

    // Channels (design.md §3.3).

    /// Makes a channel with a buffer of `capacity` (0: unbuffered); making it again
    /// with the same capacity is fine, another is [`Error::Exists`].
    pub async fn make_chan(&self, name: &str, capacity: u64) -> Result<Chan> {
        let call = Call::new(Method::PUT, format!("/chan/{}", seg(name)))
            .json(&json!({ "capacity": capacity }))?
            .idempotent();
        self.json(call).await
    }

    /// A channel's counts; [`Error::NotFound`] for an implicit channel holding nothing.
    pub async fn get_chan(&self, name: &str) -> Result<Chan> {
        self.json(Call::new(Method::GET, format!("/chan/{}", seg(name))))
            .await
    }

    /// Sends `value` on a channel.
    pub async fn send<V: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &V,
        mode: SendMode,
    ) -> Result<Sent> {
        let call = Call::new(Method::POST, format!("/chan/{}/send", seg(name))).json(value)?;
        let call = match mode {
            SendMode::Detached => call,
            SendMode::Try => call.query("wait", 0),
            SendMode::Wait(secs) => call.query("wait", secs).waits(secs),
        };
        let answer: types::SendAnswer = self.json(call).await?;
        Ok(answer.status)
    }

    /// Receives from a channel, blocking up to `wait` seconds (0: try-receive, then
    /// [`Error::WouldBlock`]); [`Error::Timeout`] when nothing came.
    pub async fn recv(&self, name: &str, wait: u64) -> Result<Received> {
        let call = Call::new(Method::POST, format!("/chan/{}/recv", seg(name)))
            .query("wait", wait)
            .waits(wait);
        self.json(call).await
    }

    /// Closes a channel; [`Error::Closed`] if it is closed already. Returns the parked
    /// detached sends the close discarded (their senders are gone, so the closer is
    /// told): the first 100 and how many in all.
    pub async fn close_chan(&self, name: &str) -> Result<Closed> {
        let call = Call::new(Method::POST, format!("/chan/{}/close", seg(name)));
        self.json(call).await
    }

    /// One page of stored channels.
    pub async fn list_chans(
        &self,
        prefix: &str,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<ChanPage> {
        let call = Call::new(Method::GET, "/chans".into())
            .query("prefix", prefix)
            .query_opt("limit", limit)
            .query_opt("after", after);
        self.json(call).await
    }

    // Cluster and operations (design.md §3.5).

    /// The cluster as the node asked sees it.
    pub async fn cluster(&self) -> Result<ClusterInfo> {
        self.json(Call::new(Method::GET, "/cluster".into())).await
    }

    /// Adds a learner (admin token); the same learner at the same address again is a
    /// no-op.
    pub async fn add_learner(&self, id: u64, addr: &str) -> Result<ClusterInfo> {
        let call = Call::new(Method::POST, "/cluster/learners".into())
            .json(&json!({"id": id, "addr": addr}))?
            .idempotent();
        self.json(call).await
    }

    /// Removes a learner (admin token).
    pub async fn remove_learner(&self, id: u64) -> Result<ClusterInfo> {
        self.json(Call::new(Method::DELETE, format!("/cluster/learners/{id}")))
            .await
    }

    /// Sets the voters (admin token); fewer than three only with `force`.
    pub async fn change_membership(&self, members: &[u64], force: bool) -> Result<ClusterInfo> {
        let call = Call::new(Method::POST, "/cluster/membership".into())
            .query("force", force)
            .json(&json!({ "members": members }))?
            .idempotent();
        self.json(call).await
    }

    /// `GET /healthz` on the first node: the process is up.
    pub async fn health(&self) -> Result<()> {
        let mut call = Call::new(Method::GET, "/healthz".into());
        call.retry = RetryOn::Never;
        self.json::<Value>(call).await.map(drop)
    }

    /// `GET /readyz` on the first node: it is ready (else [`Error::Unavailable`]
    /// `not_ready`, not retried).
    pub async fn ready(&self) -> Result<()> {
        let mut call = Call::new(Method::GET, "/readyz".into());
        call.retry = RetryOn::Never;
        self.json::<Value>(call).await.map(drop)
    }

    // Plumbing.

    /// Sends the call and parses the answer's JSON.
    async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T> {
        let bytes = self.send_call(&call).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Decode(format!("{} {}: {e}", call.method, call.path)))
    }

    /// Sends the call and ignores the answer's body.
    async fn empty(&self, call: Call) -> Result<()> {
        self.send_call(&call).await.map(drop)
    }

    /// Sends the call, failing over and retrying as the module docs say.
    async fn send_call(&self, call: &Call) -> Result<bytes::Bytes> {
        if call.retry == RetryOn::Never {
            return self.once(0, call).await;
        }
        let retry = match call.retry {
            RetryOn::NothingApplied if self.key_for(call).is_some() => RetryOn::Any503,
            other => other,
        };
        let nodes = self.servers.len();
        let start = self.failover().current;
        let tries = nodes * usize::try_from(self.retry.attempts.max(1)).unwrap_or(usize::MAX);
        let mut attempt = 0;
        loop {
            let index = (start + attempt) % nodes;
            let not_before = self.failover().not_before[index];
            if let Some(at) = not_before {
                let now = tokio::time::Instant::now();
                tokio::time::sleep(at.saturating_duration_since(now).min(self.retry.max_wait))
                    .await;
            }
            let error = match self.once(index, call).await {
                Ok(body) => {
                    self.failover().current = index;
                    return Ok(body);
                }
                Err(e) => e,
            };
            attempt += 1;
            if attempt >= tries || !may_retry(retry, &error) {
                return Err(error);
            }
            let wait = match &error {
                Error::Unavailable {
                    retry_after: Some(after),
                    ..
                } => *after,
                _ => Duration::from_secs(1),
            };
            let mut failover = self.failover();
            failover.not_before[index] = Some(tokio::time::Instant::now() + wait);
            if failover.current == index {
                failover.current = (index + 1) % nodes;
            }
        }
    }

    /// The idempotency key a call carries: this client's, or the call's own, on writes
    /// that take one.
    fn key_for<'a>(&'a self, call: &'a Call) -> Option<&'a str> {
        call.key.as_ref()?;
        self.idempotency_key
            .as_deref()
            .or(call.key.as_deref())
            .filter(|_| call.method != Method::GET)
    }

    fn failover(&self) -> std::sync::MutexGuard<'_, Failover> {
        // Nothing panics while holding the lock, so it is never poisoned; if it were,
        // its data (a node index and instants) is still valid.
        self.failover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One try against node `index`: the body of a 2xx, or the error of anything else.
    async fn once(&self, index: usize, call: &Call) -> Result<bytes::Bytes> {
        let server = &self.servers[index];
        let mut req = self
            .http
            .request(call.method.clone(), format!("{server}{}", call.path))
            .query(&call.query)
            .timeout(self.timeout + call.wait);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(lease) = call.lease {
            req = req.header("Slct-Lease", lease.to_string());
        }
        if let Some(key) = self.key_for(call) {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = &call.body {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let answer = req.send().await?;
        let status = answer.status();
        let retry_after = answer
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = answer.bytes().await?;
        if status.is_success() {
            return Ok(body);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => (String::new(), String::from_utf8_lossy(&body).into_owned()),
        };
        Err(Error::from_answer(
            status.as_u16(),
            code,
            message,
            retry_after,
        ))
    }
}

/// Whether a request retried `on` these terms that failed with `error` may be sent
/// again, to this node or another (the module docs' rules).
fn may_retry(on: RetryOn, error: &Error) -> bool {
    match on {
        RetryOn::NothingApplied => error.nothing_applied(),
        RetryOn::Any503 => matches!(error, Error::Unavailable { .. } | Error::Transport(_)),
        RetryOn::Never => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_what_may_have_been_applied() {
        let answer = |code: &str| Error::from_answer(503, code.into(), "m".into(), None);
        for code in [
            "no_leader",
            "not_leader",
            "no_quorum",
            "not_ready",
            "clock_jump",
        ] {
            assert!(may_retry(RetryOn::NothingApplied, &answer(code)), "{code}");
            assert!(!may_retry(RetryOn::Never, &answer(code)), "{code}");
        }
        for code in ["leader_unreachable", "outcome_unknown", "shutting_down"] {
            assert!(!may_retry(RetryOn::NothingApplied, &answer(code)), "{code}");
            assert!(may_retry(RetryOn::Any503, &answer(code)), "{code}");
        }
        let conflict = Error::from_answer(409, "lease_lost".into(), "m".into(), None);
        assert!(!may_retry(RetryOn::Any503, &conflict));
    }

    #[test]
    fn several_servers_separated_by_commas() {
        let client = Client::new("http://a:7001/, http://b:7002,").unwrap();
        assert_eq!(client.servers(), ["http://a:7001", "http://b:7002"]);
        assert_eq!(client.server(), "http://a:7001");
        assert!(Client::new(" , ").is_err());
        assert!(Client::new("http://a:7001,b:7002").is_err());
    }

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(seg("payments/order 42"), "payments%2Forder%2042");
        assert_eq!(seg("order-9_a~b.c"), "order-9_a~b.c");
    }

    #[test]
    fn only_http_servers() {
        assert!(Client::new("127.0.0.1:7001").is_err());
        let client = Client::new("http://127.0.0.1:7001/").unwrap();
        assert_eq!(client.server(), "http://127.0.0.1:7001");
    }

    #[test]
    fn debug_output_hides_the_token() {
        let builder = Client::builder("http://127.0.0.1:7001").token("s3cret");
        assert!(!format!("{builder:?}").contains("s3cret"));
        assert!(!format!("{:?}", builder.build().unwrap()).contains("s3cret"));
    }
}
