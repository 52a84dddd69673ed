//! Commands the state machine applies, and what applying one yields.
//!
//! A [`Command`] is what goes into the Raft log: it carries the proposer's clock (`now`)
//! and a `seed` for the choice among ready cases, so that applying it is a pure function
//! of the store and the command. Every input that would otherwise need a clock or a
//! random source at apply time (lease tokens, HTTP operation ids, callback backoff with
//! jitter) is chosen by the proposer and written into the command.
//!
//! Applying yields an [`Applied`]: the reply for the caller (mapped to HTTP status codes
//! by the API) and the [`Effects`] that others on the node react to — pollers to wake,
//! callbacks to dispatch, parked HTTP sends and receives to answer — so nobody scans.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::data::Data;
use super::types::{Callback, ChanView, Lease, Millis, Select, State};
use super::Error;

/// One entry of work for the state machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The proposer's clock (Unix ms). The engine never lets log time go back.
    pub now: Millis,
    /// Seeds the uniform choice among ready cases.
    pub seed: u64,
    /// Events kept in each state's history (the proposer's `--history-limit`; 0: none).
    pub history_limit: u32,
    /// The operation, applied after log time has moved to `now`.
    pub op: Op,
}

/// How a channel send from an HTTP caller waits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SendMode {
    /// `go func() { ch <- v }()`: park durably until a receiver takes it.
    Detached,
    /// `select { case ch <- v: default: }`: complete now or fail with `would_block`.
    Try,
    /// Block on behalf of an HTTP caller until `deadline`, then withdraw.
    Park(ParkedOp),
}

/// How a channel receive from an HTTP caller waits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RecvMode {
    /// Complete now or fail with `would_block`.
    Try,
    /// Block on behalf of an HTTP caller until `deadline`, then withdraw.
    Park(ParkedOp),
}

/// A send or receive an HTTP caller is waiting on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParkedOp {
    /// Names the operation in [`Effects::ops`] and in [`Op::Withdraw`].
    pub id: Uuid,
    /// Log time at which the operation is withdrawn if still parked.
    pub deadline: Millis,
}

/// The operations of the state machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// `PUT /state/{id}` for a new state: store it and register its selects.
    CreateState {
        /// State id.
        id: String,
        /// Opaque process data.
        data: Data,
        /// Selects to register, in order.
        selects: Vec<Select>,
        /// Callback, if the state is resumed by callbacks.
        callback: Option<Callback>,
        /// 0–9: polls hand out higher priorities first.
        priority: u8,
        /// Leases granted without an update before the state turns `failed` (0: no
        /// limit).
        max_deliveries: u32,
        /// A `done` state is deleted this long after its last change (0: kept).
        retain_ms: u64,
    },
    /// `PUT /state/{id}` under a lease (design.md §3.2). A field that is `None` was
    /// omitted by the client and keeps its value.
    UpdateState {
        /// State id.
        id: String,
        /// The lease token.
        token: Uuid,
        /// New data (`null` clears it).
        data: Option<Data>,
        /// Still-blocked selects (unchanged) and new ones; omitted: the blocked ones
        /// stay and none is added.
        selects: Option<Vec<Select>>,
        /// New callback; `Some(None)` removes it.
        callback: Option<Option<Callback>>,
        /// New priority.
        priority: Option<u8>,
        /// New delivery limit.
        max_deliveries: Option<u32>,
        /// New retention.
        retain_ms: Option<u64>,
    },
    /// `POST /state/{id}/pause`: keep its selects, deliver it to no one.
    Pause {
        /// State id.
        id: String,
    },
    /// `POST /state/{id}/resume`: deliverable again.
    Resume {
        /// State id.
        id: String,
    },
    /// `DELETE /state/{id}`.
    DeleteState {
        /// State id.
        id: String,
    },
    /// One batch of `DELETE /states?prefix=&status=`: deletes up to `limit` states
    /// whose id starts with `prefix` (and that have `status`, or are paused), in id
    /// order from just after `after`. Replies [`Response::Deleted`], whose `next` is the
    /// following batch's `after`.
    DeleteStates {
        /// Only ids starting with this.
        prefix: String,
        /// Only states with this status, or `paused`.
        status: Option<String>,
        /// Most states deleted by this command.
        limit: u32,
        /// Only ids after this one (the previous batch's `next`).
        after: Option<String>,
    },
    /// A long-poll: lease up to one state per token, the best deliverable polled
    /// states whose id starts with `prefix` (highest priority, then oldest pending), as
    /// [`poll::candidates`](super::poll::candidates) finds them at apply time — so polls
    /// in one batch each get a different state. The leader proposes it only after
    /// reading its replica found one.
    LeasePending {
        /// Only states whose id starts with this.
        prefix: String,
        /// Only states with at least this priority.
        min_priority: u8,
        /// One token per state to lease; their number is the limit.
        tokens: Vec<Uuid>,
        /// Lease duration.
        lease_ms: u64,
    },
    /// `POST /state/{id}/lease`: heartbeat.
    ExtendLease {
        /// State id.
        id: String,
        /// Current token.
        token: Uuid,
        /// New expiry is `now + extend_ms`.
        extend_ms: u64,
    },
    /// `DELETE /state/{id}/lease`: give the state back.
    ReleaseLease {
        /// State id.
        id: String,
        /// Current token.
        token: Uuid,
    },
    /// A callback attempt failed: count it, and either keep the lease until the retry
    /// time (its expiry makes the state pending again) or mark the state failed.
    CallbackFailed {
        /// State id.
        id: String,
        /// The dispatcher's lease token.
        token: Uuid,
        /// What went wrong, for `last_error`.
        error: String,
        /// Attempts allowed before the state turns `failed`.
        max_attempts: u32,
        /// Delay before the next attempt (chosen by the proposer, with jitter).
        backoff_ms: u64,
        /// How long the attempt took, for the history (shown to the admin token only).
        duration_ms: u64,
    },
    /// `POST /state/{id}/retry`: re-arm a failed state.
    RetryFailed {
        /// State id.
        id: String,
    },
    /// `PUT /chan/{name}`.
    MakeChan {
        /// Channel name.
        name: String,
        /// Buffer capacity.
        capacity: u64,
    },
    /// `POST /chan/{name}/close`.
    CloseChan {
        /// Channel name.
        name: String,
    },
    /// `POST /chan/{name}/send`.
    Send {
        /// Channel name.
        chan: String,
        /// Value to send.
        data: Data,
        /// How to wait.
        mode: SendMode,
    },
    /// `POST /chan/{name}/recv`.
    Recv {
        /// Channel name.
        chan: String,
        /// How to wait.
        mode: RecvMode,
    },
    /// Withdraw a parked HTTP operation whose caller gave up.
    Withdraw {
        /// Operation id.
        id: Uuid,
    },
    /// A write sent with `Idempotency-Key` (see [`super::idempotency`]): `op` is applied
    /// at most once per key within `window_ms`; a repeat with the same `digest` gets
    /// the first reply, one with another is refused.
    Keyed {
        /// The client's key.
        key: String,
        /// Digest of the request (the proposer's SHA-256 of the encoded `op`).
        digest: Vec<u8>,
        /// How long the key is remembered, in log time.
        window_ms: u64,
        /// The write.
        op: Box<Op>,
    },
    /// Time passes: fire due timers, expire leases and parked operations. (Every command
    /// does this first; a tick does nothing else.)
    Tick,
    /// The caller of a parked receive, still connected, takes the value offered to it
    /// ([`OpOutcome::Offered`]); replies [`Response::Received`].
    Claim {
        /// Operation id.
        id: Uuid,
    },
    /// Withdraws every parked HTTP operation, as the first command of a term does
    /// ([`Ctx::enter_term`](super::ctx::Ctx)): proposed first by a leader that restarted
    /// into the term it led before (openraft restores a node whose committed vote is its
    /// own as leader of that term), whose previous process took the handlers along
    /// (design.md §3.3).
    WithdrawParked,
}

impl Op {
    /// Whether the operation goes on while a voter's disk is low on space (design.md §4,
    /// "A full disk"): it finishes an operation the log holds already (a claim, a
    /// withdrawal), or it makes room (a delete, a receive taking a value out). Each is a
    /// small entry; everything else is refused before it is proposed.
    pub fn allowed_on_low_disk(&self) -> bool {
        match self {
            Op::Claim { .. } | Op::Withdraw { .. } | Op::WithdrawParked => true,
            Op::DeleteState { .. } | Op::DeleteStates { .. } | Op::Recv { .. } => true,
            Op::Keyed { op, .. } => op.allowed_on_low_disk(),
            _ => false,
        }
    }

    /// The kind of operation, as idempotency records name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::CreateState { .. } => "create state",
            Op::UpdateState { .. } => "update state",
            Op::Pause { .. } => "pause",
            Op::Resume { .. } => "resume",
            Op::DeleteState { .. } => "delete state",
            Op::DeleteStates { .. } => "delete states",
            Op::LeasePending { .. } => "poll",
            Op::ExtendLease { .. } => "extend lease",
            Op::ReleaseLease { .. } => "release lease",
            Op::CallbackFailed { .. } => "callback failed",
            Op::RetryFailed { .. } => "retry",
            Op::MakeChan { .. } => "make channel",
            Op::CloseChan { .. } => "close channel",
            Op::Send { .. } => "send",
            Op::Recv { .. } => "receive",
            Op::Withdraw { .. } => "withdraw",
            Op::Claim { .. } => "claim",
            Op::WithdrawParked => "withdraw parked",
            Op::Keyed { .. } => "keyed",
            Op::Tick => "tick",
        }
    }

    /// The channel a channel operation names.
    pub fn chan(&self) -> Option<&str> {
        match self {
            Op::MakeChan { name, .. } | Op::CloseChan { name } => Some(name),
            Op::Send { chan, .. } | Op::Recv { chan, .. } => Some(chan),
            _ => None,
        }
    }
}

/// A successful reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Created, updated or re-armed state.
    State(Box<State>),
    /// States leased by a poll (possibly none).
    States(Vec<State>),
    /// The state leased for a callback, or `None` if it is no longer due.
    CallbackLease(Option<Box<State>>),
    /// A lease after an extension.
    Lease(Lease),
    /// A channel after `MakeChan`; `created` is false if it already existed alike.
    Chan {
        /// The channel.
        chan: ChanView,
        /// Whether this command created it.
        created: bool,
    },
    /// The send completed (a receiver took it or it went into the buffer).
    Sent,
    /// The receive completed.
    Received {
        /// Value received (null if `ok` is false).
        data: Data,
        /// False when the channel is closed and drained.
        ok: bool,
    },
    /// The operation waits in the channel's queue; its outcome comes in [`Effects::ops`].
    Parked,
    /// The channel is closed; this is what the close discarded.
    Closed(Discarded),
    /// A batch of a bulk delete.
    Deleted {
        /// States deleted.
        count: u64,
        /// Where the next batch starts, if states after it may match; `None` once
        /// the walk reached the end of the prefix.
        next: Option<String>,
    },
    /// Done, nothing to report.
    Done,
}

/// What a close discarded: parked detached sends, whose senders are gone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Discarded {
    /// The first [`MAX_DISCARDED_LISTED`](super::chan::MAX_DISCARDED_LISTED), oldest
    /// first.
    pub values: Vec<DiscardedSend>,
    /// All of them.
    pub count: u64,
}

/// One discarded detached send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscardedSend {
    /// The value.
    pub data: Data,
    /// Log time it was sent.
    pub sent_at: Millis,
}

/// What happened to a parked HTTP operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OpOutcome {
    /// The parked send was taken.
    Sent,
    /// The parked receive got a value (or `ok: false` from a closed channel).
    Received {
        /// Value.
        data: Data,
        /// False when closed.
        ok: bool,
    },
    /// The channel was closed under a parked send.
    Closed,
    /// The deadline passed or the caller withdrew it.
    Expired,
    /// A value reached the parked receive; the caller takes it with [`Op::Claim`]
    /// while it is still connected (a withdrawal puts the value back instead).
    Offered,
}

/// A state that turned deliverable: who should hear of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnedPending {
    /// State id.
    pub id: String,
    /// It has a callback and was leased to the callback dispatcher in this command
    /// (else it waits for a long-poller).
    pub callback: bool,
}

/// Side effects of applying a command that code outside the state machine reacts to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Effects {
    /// States that turned pending (not leased) during this command.
    pub pending: Vec<TurnedPending>,
    /// Parked HTTP operations that completed or expired.
    pub ops: Vec<(Uuid, OpOutcome)>,
}

impl Effects {
    /// Nothing happened that anyone waits for.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.ops.is_empty()
    }
}

/// The result of applying one command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// What the caller gets.
    pub reply: Result<Response, Error>,
    /// What others react to.
    pub effects: Effects,
}
