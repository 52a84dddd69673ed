//! The node's Prometheus series (design.md §3.5), in one registry that the HTTP API
//! (requests, long-polls, `GET /metrics`) and the callback dispatcher (attempts) both
//! record into.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: typed label
//! sets, no global registry (each node has its own, so in-process test clusters do not
//! mix their numbers), and an encoder for the text format. Labels come from closed sets
//! chosen by the callers (`api::metrics` for requests), so no request can add series.
//! Raft figures and the state machine's running totals are set at scrape time
//! ([`Metrics::refresh`]).

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use prometheus_client::registry::{Metric, Registry};

use crate::engine::Counts;
use crate::node::ClusterInfo;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method, one the API serves, or `other`.
    pub method: &'static str,
    /// Route template, or `other`.
    pub route: &'static str,
    /// Status code.
    pub status: u16,
}

/// Labels of a latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method, one the API serves, or `other`.
    pub method: &'static str,
    /// Route template, or `other`.
    pub route: &'static str,
}

/// A one-label set (`status`, `queue`, `outcome`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The status, queue or outcome counted.
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
    disk_free: Gauge,
    disk_reserve: Gauge,
    disk_low: Gauge,
    disk_low_voters: Gauge,
    body_bytes_held: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

fn latency() -> Latency {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

/// Registers `metric` under `name` with `help`, and returns it to be kept.
fn series<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

/// A gauge's value for a count (saturating).
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every series registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("slct");
        let r = &mut registry;
        Metrics {
            requests: series(
                r,
                "http_requests",
                "HTTP requests by method, route and status",
                Family::default(),
            ),
            latency: series(
                r,
                "http_request_duration_seconds",
                "HTTP request service time by method and route: the request's time minus its wait",
                latency(),
            ),
            wait: series(
                r,
                "http_request_wait_seconds",
                "Time requests spent waiting by design (long-polls, blocking sends and receives) by method and route",
                latency(),
            ),
            raft_term: series(r, "raft_term", "Current Raft term", Gauge::default()),
            raft_leader: series(
                r,
                "raft_leader",
                "Id of the known leader (0: none)",
                Gauge::default(),
            ),
            raft_last_applied: series(
                r,
                "raft_last_applied",
                "Last applied log index",
                Gauge::default(),
            ),
            raft_is_leader: series(
                r,
                "raft_is_leader",
                "1 if this node is the leader",
                Gauge::default(),
            ),
            states: series(
                r,
                "states",
                "States by status (waiting, pending, leased, done, failed) and in all (all)",
                Family::default(),
            ),
            deleted: series(
                r,
                "states_deleted",
                "States deleted since the cluster began (kept by the state machine), by request (DELETE /state/{id}, DELETE /states) or by retention (done for retain_ms)",
                Family::default(),
            ),
            discarded: series(
                r,
                "sends_discarded",
                "Parked detached sends discarded by closing their channel, since the cluster began (kept by the state machine)",
                Gauge::default(),
            ),
            waiters: series(
                r,
                "queued",
                "Waiters in channel queues (senders: blocked and parked sends; receivers), and armed timers (timers)",
                Family::default(),
            ),
            long_pollers: series(
                r,
                "long_polls",
                "Long-poll requests in progress",
                Gauge::default(),
            ),
            long_pollers_waiting: series(
                r,
                "long_polls_waiting",
                "Long-polls asleep in the pollers' queue",
                Gauge::default(),
            ),
            callback_attempts: series(
                r,
                "callback_attempts",
                "Callback attempts by outcome (applied, deferred, failed, gave_up)",
                Family::default(),
            ),
            disk_free: series(
                r,
                "disk_free_bytes",
                "Free bytes on the filesystem of this node's data directory",
                Gauge::default(),
            ),
            disk_reserve: series(
                r,
                "disk_reserve_bytes",
                "Free bytes below which this node's disk counts as low and client writes are refused (507 disk_full)",
                Gauge::default(),
            ),
            disk_low: series(
                r,
                "disk_low",
                "1 while this node's data disk is below its reserve",
                Gauge::default(),
            ),
            disk_low_voters: series(
                r,
                "disk_low_voters",
                "Voters whose disk is low as this node knows (itself, and on the leader the others that answer it); the leader refuses client writes while it is not 0",
                Gauge::default(),
            ),
            body_bytes_held: series(
                r,
                "request_body_bytes_held",
                "Bytes of request bodies this node holds now, which --max-inflight-bytes caps",
                Gauge::default(),
            ),
            registry,
        }
    }

    /// Records one request: its count by status, its service time, and its wait if it
    /// waited.
    pub fn request(&self, labels: RouteLabels, status: u16, service: Duration, wait: Duration) {
        self.latency
            .get_or_create(&labels)
            .observe(service.as_secs_f64());
        if !wait.is_zero() {
            self.wait.get_or_create(&labels).observe(wait.as_secs_f64());
        }
        let RouteLabels { method, route } = labels;
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
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
            .set(gauge_value(value));
    }

    /// Sets the scrape-time figures: Raft's and the disk's, the state machine's running
    /// totals (kept as they were if they could not be read), the long-polls asleep, the
    /// voters known to be low on disk, and the request body bytes held.
    pub fn refresh(
        &self,
        raft: &ClusterInfo,
        counts: Option<&Counts>,
        pollers_waiting: usize,
        low_voters: usize,
        body_bytes_held: usize,
    ) {
        self.body_bytes_held
            .set(gauge_value(body_bytes_held as u64));
        self.disk_free.set(gauge_value(raft.disk.free_bytes));
        self.disk_reserve.set(gauge_value(raft.disk.reserve_bytes));
        self.disk_low.set(i64::from(raft.disk.low));
        self.disk_low_voters.set(gauge_value(low_voters as u64));
        self.raft_term.set(gauge_value(raft.term));
        self.raft_leader.set(gauge_value(raft.leader.unwrap_or(0)));
        self.raft_last_applied
            .set(gauge_value(raft.last_applied.unwrap_or(0)));
        self.raft_is_leader
            .set(i64::from(raft.leader == Some(raft.id)));
        if let Some(c) = counts {
            Self::set(&self.states, "waiting", c.waiting);
            Self::set(&self.states, "pending", c.pending);
            Self::set(&self.states, "leased", c.leased);
            Self::set(&self.states, "done", c.done);
            Self::set(&self.states, "failed", c.failed);
            Self::set(&self.states, "all", c.states());
            Self::set(&self.deleted, "request", c.deleted_by_request);
            Self::set(&self.deleted, "retention", c.deleted_by_retention);
            self.discarded.set(gauge_value(c.discarded));
            Self::set(&self.waiters, "senders", c.senders);
            Self::set(&self.waiters, "receivers", c.receivers);
            Self::set(&self.waiters, "timers", c.timers);
        }
        self.long_pollers_waiting
            .set(gauge_value(pollers_waiting as u64));
    }

    /// Every series in Prometheus's text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Decrements a gauge when dropped.
pub struct GaugeGuard(Gauge<i64, AtomicI64>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
