//! The flags of `serve` and `dev` that shape the HTTP API and callback delivery.

use std::time::Duration;

use clap::Args;

use crate::api::extract::MAX_LEASE_MS;
use crate::api::{ApiConfig, DEFAULT_MAX_BODY, DEFAULT_MAX_DELIVERIES};
use crate::callbacks::allow::CallbackAllow;
use crate::callbacks::{
    CallbackConfig, DEFAULT_CONCURRENCY, DEFAULT_DEFER_MS, DEFAULT_MAX_ATTEMPTS,
};
use crate::engine::wire::MAX_RETAIN_MS;
use crate::server::Limits;

/// API flags.
#[derive(Clone, Debug, Args)]
pub struct ApiArgs {
    /// Require `Authorization: Bearer <token>` on the client API (and `/metrics`).
    /// With it and no `--admin-token`, membership changes are refused (403).
    #[arg(long, env = "SLCT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Require `Authorization: Bearer <admin token>` on membership changes
    /// (`/cluster/learners`, `/cluster/membership`); it opens the client API too.
    /// A node that listens beyond loopback refuses membership changes without it.
    #[arg(long, env = "SLCT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve `/metrics` without a token even when `--token` is set.
    #[arg(long, env = "SLCT_METRICS_PUBLIC")]
    pub metrics_public: bool,
    /// Host names this node answers to besides IP addresses, `localhost`, and the hosts
    /// of `--listen` and `--peers`, comma-separated (`*`: any). A request with another
    /// `Host` is refused (403 `host_not_allowed`: DNS rebinding). Name here what clients
    /// use to reach the node, such as a load balancer's or a Service's name.
    #[arg(long, env = "SLCT_ALLOW_HOST", value_delimiter = ',')]
    pub allow_host: Vec<String>,
    /// Origins of web pages that may call this node, comma-separated
    /// (`https://ops.example.com`). A request with any other `Origin` than the node's
    /// own is refused (403 `origin_not_allowed`: cross-site requests); the console is
    /// same-origin and needs none.
    #[arg(long, env = "SLCT_ALLOW_ORIGIN", value_delimiter = ',')]
    pub allow_origin: Vec<String>,
    /// How long a client may take to send a request's head once it has begun, e.g.
    /// `10s`; the connection is closed after that.
    #[arg(long, env = "SLCT_HEADER_READ_TIMEOUT", default_value = super::duration_flag(crate::server::DEFAULT_HEADER_READ_TIMEOUT),
          value_parser = super::parse_duration)]
    pub header_read_timeout: Duration,
    /// How long a connection may sit with no request in progress and no bytes either way
    /// before it is closed, e.g. `60s`. A request in progress (a long-poll) is never cut,
    /// but its body must not stall longer than this.
    #[arg(long, env = "SLCT_IDLE_TIMEOUT", default_value = super::duration_flag(crate::server::DEFAULT_IDLE_TIMEOUT),
          value_parser = super::parse_duration)]
    pub idle_timeout: Duration,
    /// Most client connections a node holds at once; one more is answered 503 and
    /// closed. Default and ceiling: the open-files limit (raised to its hard maximum
    /// at start) less a quarter (64 to 1024) kept for the node's files and peers,
    /// shared among the nodes of `slct dev`.
    #[arg(long, env = "SLCT_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Most bytes of request bodies a node holds in memory at once, across all
    /// requests; a body that does not fit is answered 503 `overloaded` with
    /// `Retry-After` (at once when its `Content-Length` says so).
    #[arg(long, env = "SLCT_MAX_INFLIGHT_BYTES", default_value_t = crate::api::DEFAULT_MAX_INFLIGHT_BYTES)]
    pub max_inflight_bytes: usize,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, env = "SLCT_MAX_BODY", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Sign callbacks: `Slct-Timestamp: <unix ms>` and
    /// `Slct-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
    #[arg(long, env = "SLCT_CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,
    /// Hosts and networks callbacks may target, comma-separated: CIDRs (`10.0.0.0/8`),
    /// IP addresses, host names (`hooks.example.com`) and `*.example.com`; `*` alone for
    /// any http(s) URL. A PUT naming another target is refused (422). Required when
    /// `--listen` is not loopback; without it on loopback, any target.
    #[arg(long, env = "SLCT_CALLBACK_ALLOW", default_value = "")]
    pub callback_allow: CallbackAllow,
    /// Failed callback attempts before a state turns `failed`.
    #[arg(long, env = "SLCT_CALLBACK_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub callback_max_attempts: u32,
    /// Callback attempts in flight at once, across targets (at most 8 per target
    /// `host:port`; a slow target's other states wait in its own queue).
    #[arg(long, env = "SLCT_CALLBACK_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub callback_concurrency: usize,
    /// After a callback answers 202 or 204, milliseconds the receiver has to PUT the
    /// update with its lease.
    #[arg(long, env = "SLCT_CALLBACK_DEFER_MS", default_value_t = DEFAULT_DEFER_MS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_LEASE_MS))]
    pub callback_defer_ms: u64,
    /// Leases a state may be granted without an update before it turns `failed` with
    /// "max deliveries reached" (the dead letter), unless its PUT sets
    /// `max_deliveries`; 0: no limit.
    #[arg(long, env = "SLCT_MAX_DELIVERIES", default_value_t = DEFAULT_MAX_DELIVERIES)]
    pub max_deliveries: u32,
    /// How long a `done` state is kept (in log time, after its last change) before it
    /// is deleted, unless its PUT sets `retain_ms`: e.g. `7d`, `12h`, `30m`; 0 keeps
    /// done states for ever.
    #[arg(long, env = "SLCT_RETAIN_DONE", default_value = "7d", value_parser = parse_retention)]
    pub retain_done: u64,
    /// How long (in log time) a write's `Idempotency-Key` is remembered: a repeat of the
    /// same key and request within it gets the first reply and applies nothing
    /// (e.g. `24h`; at most `7d`).
    #[arg(long, env = "SLCT_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = parse_window)]
    pub idempotency_window: u64,
}

/// An idempotency window in ms: a duration of 1 ms to 7 days.
fn parse_window(text: &str) -> Result<u64, String> {
    let ms = parse_retention(text)?;
    crate::engine::idempotency::check_window(ms)
        .map(|()| ms)
        .map_err(|e| e.to_string())
}

/// A retention in ms: `0`, or a number with a unit (`ms`, `s`, `m`, `h`, `d`).
fn parse_retention(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(0);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m, h or d (e.g. 7d), or is 0"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 7d"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(unit_ms)
        .filter(|ms| *ms <= MAX_RETAIN_MS)
        .ok_or_else(|| format!("{text:?} is too long"))
}

impl ApiArgs {
    /// The connection limits these flags ask for (`--max-connections` is fitted to the
    /// open-files limit at start).
    pub fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self
                .max_connections
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(usize::MAX),
        }
    }

    /// The API settings these flags ask for.
    pub fn config(&self) -> ApiConfig {
        ApiConfig {
            max_body: self.max_body,
            max_inflight_bytes: self.max_inflight_bytes,
            token: self.token.clone().filter(|t| !t.is_empty()),
            admin_token: self.admin_token.clone().filter(|t| !t.is_empty()),
            metrics_public: self.metrics_public,
            allow_hosts: self.allow_host.clone(),
            allow_origins: self.allow_origin.clone(),
            callbacks: CallbackConfig {
                secret: self.callback_secret.clone().filter(|s| !s.is_empty()),
                allow: self.callback_allow.clone(),
                max_attempts: self.callback_max_attempts,
                concurrency: self.callback_concurrency,
                defer_ms: self.callback_defer_ms,
            },
            max_deliveries: self.max_deliveries,
            retain_done_ms: self.retain_done,
            idempotency_window_ms: self.idempotency_window,
            ..ApiConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions() {
        assert_eq!(parse_retention("0"), Ok(0));
        assert_eq!(parse_retention("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_retention("250ms"), Ok(250));
        assert!(parse_retention("7").is_err());
        assert!(parse_retention("7w").is_err());
        assert_eq!(parse_window("24h"), Ok(86_400_000));
        assert!(parse_window("0").is_err());
        assert!(parse_window("8d").is_err());
    }
}
