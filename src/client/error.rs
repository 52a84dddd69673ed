//! The client's [`Error`]: one variant per error the API documents, from its body
//! `{"error": {"code", "message"}}` and its status, plus transport failures.
//!
//! A 503 is [`Error::Unavailable`] with its code; [`Error::nothing_applied`] says
//! whether the code (or a connection that could not be made) guarantees the request
//! changed nothing (so it may be sent again, to any node), which is what the client's
//! retries and failover go by (see [`super`]).

use std::time::Duration;

/// Codes of a 503 that guarantee the request was not applied: it never reached the
/// log (no leader, or this node is not the leader), the node was not ready, or the
/// leader refused it before proposing (its clock ran ahead of log time).
pub const NOTHING_APPLIED: [&str; 5] = [
    "no_leader",
    "not_leader",
    "no_quorum",
    "not_ready",
    "clock_jump",
];

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: a malformed request or an invalid field (`invalid`, `invalid_json`,
    /// `too_deep`).
    #[error("invalid request ({code}): {message}")]
    Invalid {
        /// The error code the server answered (its `error.code`).
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// 401 `unauthorized`: no token, or not one the node knows.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 403 `forbidden`: the token may not do this (membership needs the admin token).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404 `not_found`: no such state, channel or member.
    #[error("not found: {0}")]
    NotFound(String),
    /// 408 `timeout`: a blocking send or receive found no partner; it was withdrawn.
    #[error("timeout: {0}")]
    Timeout(String),
    /// 409 `exists`: the state exists (a PUT without a lease), or the channel exists
    /// with another capacity.
    #[error("exists: {0}")]
    Exists(String),
    /// 409 `lease_lost`: the lease expired or is not the current one; nothing changed.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// 409 `closed`: the channel is closed.
    #[error("closed: {0}")]
    Closed(String),
    /// 409 `would_block`: a try-send or try-receive could not complete now.
    #[error("would block: {0}")]
    WouldBlock(String),
    /// 409 `conflict`: another conflict (a retry of a state that has not failed, a
    /// membership change that is not allowed).
    #[error("conflict: {0}")]
    Conflict(String),
    /// 413 `too_large`: the body, or the command it makes, is too large.
    #[error("too large: {0}")]
    TooLarge(String),
    /// 422: an update that breaks the rules (`invalid_update`), or a callback outside
    /// `--callback-allow` (`callback_not_allowed`).
    #[error("unprocessable ({code}): {message}")]
    Unprocessable {
        /// The error code the server answered (its `error.code`).
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// 429 `too_many_waiters`: the channel or node has all the parked HTTP
    /// operations it may.
    #[error("too many waiters: {0}")]
    TooManyWaiters(String),
    /// 507 `disk_full`: a voter's disk is low on space; the write was refused before it
    /// was proposed (nothing applied). Not retried: it lasts until room is made there.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// 503: no leader, no quorum, shutting down, ... or `outcome_unknown` (a write not
    /// confirmed in time, which may have been applied). See [`Error::nothing_applied`].
    #[error("unavailable ({code}): {message}")]
    Unavailable {
        /// The error code the server answered (its `error.code`).
        code: String,
        /// The server's sentence.
        message: String,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Any other status (a proxy's answer, or a code this client does not know).
    #[error("HTTP {status} ({code}): {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The code, or empty if the body had none.
        code: String,
        /// The server's sentence, or the body.
        message: String,
    },
    /// The request could not be sent or its answer not read (connection refused,
    /// timed out, reset). A write that failed after connecting may have been applied.
    /// Shown with its cause (see [`transport_cause`]).
    #[error("{}", transport_cause(.0))]
    Transport(#[from] reqwest::Error),
    /// A 2xx answer whose body is not what the API documents.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The client was given something it cannot send (a bad server URL).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The error from a non-2xx answer: `status`, its code and message, and
    /// `Retry-After`.
    pub fn from_answer(
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    ) -> Error {
        match (status, code.as_str()) {
            (400, _) => Error::Invalid { code, message },
            (401, _) => Error::Unauthorized(message),
            (403, _) => Error::Forbidden(message),
            (404, _) => Error::NotFound(message),
            (408, _) => Error::Timeout(message),
            (409, "exists") => Error::Exists(message),
            (409, "lease_lost") => Error::LeaseLost(message),
            (409, "closed") => Error::Closed(message),
            (409, "would_block") => Error::WouldBlock(message),
            (409, _) => Error::Conflict(message),
            (413, _) => Error::TooLarge(message),
            (422, _) => Error::Unprocessable { code, message },
            (429, _) => Error::TooManyWaiters(message),
            (507, _) => Error::DiskFull(message),
            (503, _) => Error::Unavailable {
                code,
                message,
                retry_after,
            },
            _ => Error::Status {
                status,
                code,
                message,
            },
        }
    }

    /// The API's error code (`not_found`, `lease_lost`, ...); empty for transport,
    /// decode and usage errors.
    pub fn code(&self) -> &str {
        match self {
            Error::Invalid { code, .. }
            | Error::Unprocessable { code, .. }
            | Error::Unavailable { code, .. }
            | Error::Status { code, .. } => code,
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Timeout(_) => "timeout",
            Error::Exists(_) => "exists",
            Error::LeaseLost(_) => "lease_lost",
            Error::Closed(_) => "closed",
            Error::WouldBlock(_) => "would_block",
            Error::Conflict(_) => "conflict",
            Error::TooLarge(_) => "too_large",
            Error::TooManyWaiters(_) => "too_many_waiters",
            Error::DiskFull(_) => "disk_full",
            Error::Transport(_) | Error::Decode(_) | Error::Usage(_) => "",
        }
    }

    /// Whether the request certainly changed nothing, so sending it again is safe
    /// whatever it was: a 503 whose code says so ([`NOTHING_APPLIED`]), or a
    /// connection that could not be made (the request reached no node).
    pub fn nothing_applied(&self) -> bool {
        match self {
            Error::Unavailable { code, .. } => NOTHING_APPLIED.contains(&code.as_str()),
            Error::Transport(e) => e.is_connect(),
            _ => false,
        }
    }

    /// Whether a write that failed this way may nevertheless have been applied: 503
    /// `outcome_unknown` and any other 503 not in [`NOTHING_APPLIED`], or a transport
    /// failure after the connection was made. Read the state before repeating a write that is not idempotent.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Transport(_) => !self.nothing_applied(),
            _ => false,
        }
    }
}

/// A transport failure as a sentence that names the cause — the server that could not
/// be reached and why (connection refused, name not resolved, timed out) — rather than
/// reqwest's "error sending request for url (...)", whose cause is buried in its source
/// chain.
pub fn transport_cause(e: &reqwest::Error) -> String {
    let server = e.url().map_or_else(
        || "the server".to_owned(),
        |u| u.origin().ascii_serialization(),
    );
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let deepest = causes.last().cloned().unwrap_or_else(|| e.to_string());
    let dns = causes
        .iter()
        .any(|c| c.contains("dns error") || c.contains("lookup address"));
    if e.is_timeout() {
        format!("no answer from {server} in time (timed out): is the node overloaded or cut off?")
    } else if dns {
        format!("cannot resolve the host of {server} ({deepest}): check --server (SLCT_SERVER)")
    } else if e.is_connect() {
        format!(
            "cannot connect to {server} ({deepest}): is a node running there? check --server \
             (SLCT_SERVER)"
        )
    } else {
        format!("the request to {server} failed ({deepest}); it may or may not have been applied")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str) -> Error {
        Error::from_answer(status, code.into(), "m".into(), None)
    }

    #[test]
    fn codes_map_to_variants() {
        assert!(matches!(answer(404, "not_found"), Error::NotFound(_)));
        assert!(matches!(answer(409, "lease_lost"), Error::LeaseLost(_)));
        assert!(matches!(answer(409, "would_block"), Error::WouldBlock(_)));
        assert!(matches!(answer(409, "conflict"), Error::Conflict(_)));
        assert!(matches!(
            answer(422, "invalid_update"),
            Error::Unprocessable { .. }
        ));
        assert!(matches!(
            answer(418, "teapot"),
            Error::Status { status: 418, .. }
        ));
        for code in ["lease_lost", "exists", "too_large", "timeout"] {
            let status = match code {
                "too_large" => 413,
                "timeout" => 408,
                _ => 409,
            };
            assert_eq!(answer(status, code).code(), code);
        }
    }

    #[test]
    fn only_some_503s_say_nothing_was_applied() {
        assert!(answer(503, "no_leader").nothing_applied());
        assert!(!answer(503, "no_leader").outcome_unknown());
        for code in [
            "outcome_unknown",
            "shutting_down",
            "leader_unreachable",
            "storage",
        ] {
            assert!(!answer(503, code).nothing_applied(), "{code}");
            assert!(answer(503, code).outcome_unknown(), "{code}");
        }
        assert!(!answer(409, "lease_lost").outcome_unknown());
    }
}
