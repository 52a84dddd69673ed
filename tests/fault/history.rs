//! The history: every call a client made, with when it started and ended (µs since the
//! run began) and what came of it.
//!
//! An outcome is [`Outcome::Ok`] (2xx, with the body), [`Outcome::Fail`] (a definite
//! refusal: 4xx, or 507 `disk_full`, refused before it was proposed, so nothing was
//! applied — 408 on a blocking send or receive means it was withdrawn), or
//! [`Outcome::Unknown`]: a timeout, a dropped connection or any other 5xx (503
//! `outcome_unknown`, `leader_unreachable`, ...). An unknown write may or may not
//! have been applied, at any time after it started; the checker treats it so.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

/// How a channel send waits (design.md §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    /// No `wait`: durable, 200 done or 202 parked.
    Detached,
    /// `wait=0`: 409 `would_block` if it cannot complete now.
    Try,
    /// `wait=N`: 408 and withdrawn if no receiver within N s.
    Block(u64),
}

/// What a client asked.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// `PUT /state/{id}` without a lease.
    Create {
        id: String,
        data: Value,
        selects: Value,
    },
    /// `GET /state/{id}` (linearizable).
    Read { id: String },
    /// `PUT /state/{id}` under a lease.
    Update {
        id: String,
        token: String,
        data: Value,
        selects: Value,
    },
    /// `DELETE /state/{id}`.
    Delete { id: String },
    /// `GET /state/poll?prefix=`.
    Poll { prefix: String, lease_ms: u64 },
    /// `POST /state/{id}/lease`.
    Extend { id: String, token: String },
    /// `DELETE /state/{id}/lease?token=`.
    Release { id: String, token: String },
    /// `POST /chan/{chan}/send`, with `Idempotency-Key: key` if it has one (a retry of
    /// a send whose outcome was unknown is the same call again, key and all).
    Send {
        chan: String,
        value: Value,
        mode: SendMode,
        key: Option<String>,
    },
    /// `POST /chan/{chan}/recv?wait=`.
    Recv { chan: String, wait: u64 },
    /// `POST /chan/{chan}/close`.
    Close { chan: String },
    /// A final look at every state (`GET /states?full=true`), recorded so that the
    /// results and leases it shows count as observations.
    ListStates,
}

/// What came of a call.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// 2xx, with the JSON body (null if none).
    Ok { status: u16, body: Value },
    /// A definite refusal (4xx, 507) with the error code.
    Fail { status: u16, code: String },
    /// Timeout, lost connection, or a 5xx but 507: may or may not have happened.
    Unknown(String),
}

impl Outcome {
    /// The body of a success.
    pub fn ok(&self) -> Option<&Value> {
        match self {
            Outcome::Ok { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The status of a success.
    pub fn ok_status(&self) -> Option<u16> {
        match self {
            Outcome::Ok { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The code of a definite failure.
    pub fn fail_code(&self) -> Option<&str> {
        match self {
            Outcome::Fail { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the outcome is unknown.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown(_))
    }
}

/// One recorded call.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// The client (a sequential process).
    pub process: u32,
    /// The node it was sent to.
    pub node: u64,
    /// µs since the run began, when the call was made.
    pub start: u64,
    /// µs since the run began, when its outcome was known.
    pub end: u64,
    /// What was asked.
    pub call: Call,
    /// What came of it.
    pub outcome: Outcome,
}

/// The history being recorded: shared by every client.
#[derive(Clone)]
pub struct Recorder {
    began: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    /// A new, empty history whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            began: Instant::now(),
            ops: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// µs since the run began.
    pub fn now(&self) -> u64 {
        self.began.elapsed().as_micros() as u64
    }

    /// Appends an op.
    pub fn push(&self, op: Op) {
        self.ops.lock().expect("history lock").push(op);
    }

    /// The ops so far, in the order their outcomes arrived.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }
}
