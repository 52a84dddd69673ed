//! The engine's one error type.
//!
//! Every variant is *deterministic*: given the same store and command, every replica
//! returns the same error, so errors travel through the Raft log's responses and become
//! HTTP statuses in the API. Storage failures are not here: they are fatal to apply
//! (a replica that cannot write must stop rather than diverge) and surface as
//! [`super::StoreError`].

use serde::{Deserialize, Serialize};

/// A command could not be carried out as asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// Malformed or invalid input (400).
    #[error("{0}")]
    Invalid(String),
    /// Unknown state or channel (404).
    #[error("{0}")]
    NotFound(String),
    /// The state or channel already exists (409 `exists`).
    #[error("{0}")]
    Exists(String),
    /// The lease token is unknown or expired (409 `lease_lost`).
    #[error(
        "the lease is unknown or has expired, and nothing changed: another holder may have \
         the state now; read it (or poll again) before working on it"
    )]
    LeaseLost,
    /// The channel is closed (409 `closed`).
    #[error("channel {0:?} is closed")]
    Closed(String),
    /// A try-send or try-receive could not complete now (409 `would_block`).
    #[error("the operation would block: no partner is ready; retry, or wait with ?wait=N")]
    WouldBlock,
    /// The request conflicts with the state's current status (409 `conflict`).
    #[error("{0}")]
    Conflict(String),
    /// An update breaks the rules of design.md §3.2 (422 `invalid_update`).
    #[error("{0}")]
    InvalidUpdate(String),
    /// The channel already has as many parked HTTP operations as it may (429
    /// `too_many_waiters`).
    #[error("channel {0:?} has too many parked HTTP operations; retry later")]
    TooManyWaiters(String),
    /// The `Idempotency-Key` was used for another request within its window (422
    /// `idempotency_key_reused`). Nothing was applied.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// The command's time jumps too far ahead of log time: the proposing leader's clock
    /// is wrong (503 `clock_jump`). Nothing was applied.
    #[error("{0}")]
    ClockJump(String),
}

impl Error {
    /// The snake_case code of the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid",
            Error::NotFound(_) => "not_found",
            Error::Exists(_) => "exists",
            Error::LeaseLost => "lease_lost",
            Error::Closed(_) => "closed",
            Error::WouldBlock => "would_block",
            Error::Conflict(_) => "conflict",
            Error::InvalidUpdate(_) => "invalid_update",
            Error::TooManyWaiters(_) => "too_many_waiters",
            Error::IdempotencyKeyReused(_) => "idempotency_key_reused",
            Error::ClockJump(_) => "clock_jump",
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid(_) => 400,
            Error::NotFound(_) => 404,
            Error::Exists(_)
            | Error::LeaseLost
            | Error::Closed(_)
            | Error::WouldBlock
            | Error::Conflict(_) => 409,
            Error::InvalidUpdate(_) | Error::IdempotencyKeyReused(_) => 422,
            Error::TooManyWaiters(_) => 429,
            Error::ClockJump(_) => 503,
        }
    }
}
