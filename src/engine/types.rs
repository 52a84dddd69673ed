//! Domain types: states, selects, cases, results, leases and channels.
//!
//! These are the *validated* forms the engine works with and stores (in the binary
//! [`crate::codec`], so they carry no JSON-only serde attributes). What clients send is
//! parsed by [`super::wire`] (which also accepts the seed format of the original slct)
//! and turned into these types by [`super::validate`]. The output form is lower-case
//! JSON, produced by the view types ([`StateView`] and the views it holds), which borrow
//! from the stored forms: bookkeeping the engine keeps for itself (queue positions, the
//! lease's result watermark) never leaks to clients, and nothing is copied to answer.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::data::Data;

/// Milliseconds since the Unix epoch, in *log time* (the leader's clock as written into
/// the Raft log; see design.md §2 Time).
pub type Millis = u64;

/// One case of a select.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Case {
    /// `v, ok := <-chan`
    Recv {
        /// Channel name.
        chan: String,
    },
    /// `chan <- data`
    Send {
        /// Channel name.
        chan: String,
        /// The value sent (any JSON, `null` included).
        data: Data,
    },
    /// `<-time.After(...)`: ready once log time reaches `at`.
    Timer {
        /// Absolute deadline in Unix ms (log time).
        at: Millis,
        /// The relative form the client gave, if any; kept so that a client may send
        /// the select back exactly as it first wrote it.
        after_ms: Option<u64>,
    },
    /// `default:`: taken when no other case is ready at registration.
    Default,
}

impl Case {
    /// The channel this case operates on, if any.
    pub fn chan(&self) -> Option<&str> {
        match self {
            Case::Recv { chan } | Case::Send { chan, .. } => Some(chan),
            Case::Timer { .. } | Case::Default => None,
        }
    }

    /// The op name used in results and listings.
    pub fn op_name(&self) -> &'static str {
        match self {
            Case::Recv { .. } => "recv",
            Case::Send { .. } => "send",
            Case::Timer { .. } => "timer",
            Case::Default => "default",
        }
    }

    /// Whether a case written by a client denotes this (stored) case. Timers written
    /// relatively match by `after_ms`, since their absolute deadline was fixed at
    /// registration; everything else must be equal.
    pub fn same_as_written(&self, written: &Case) -> bool {
        match (self, written) {
            (
                Case::Timer { at, after_ms },
                Case::Timer {
                    at: w_at,
                    after_ms: w_after,
                },
            ) => at == w_at || (w_after.is_some() && after_ms == w_after),
            _ => self == written,
        }
    }
}

/// A blocked goroutine: a select statement and, once queued, where its cases wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Select {
    /// Names the goroutine within its state; unique among the state's selects.
    pub id: String,
    /// The cases, in the order the client wrote them (results refer to this index).
    pub cases: Vec<Case>,
    /// Where a blocked select waits: (case index, position in that channel's queue).
    /// Engine bookkeeping: never shown, and never taken from a command (registering a
    /// select starts it afresh).
    pub queued: Vec<(usize, u64)>,
}

impl Select {
    /// A select as a client wrote it.
    pub fn new(id: impl Into<String>, cases: Vec<Case>) -> Self {
        Select {
            id: id.into(),
            cases,
            queued: Vec::new(),
        }
    }

    /// The select without engine bookkeeping.
    pub fn as_written(&self) -> Select {
        Select::new(self.id.clone(), self.cases.clone())
    }

    /// The client-facing form.
    pub fn view(&self) -> SelectView<'_> {
        SelectView {
            id: &self.id,
            cases: self.cases.iter().map(Case::view).collect(),
        }
    }
}

impl Case {
    /// The client-facing form.
    pub fn view(&self) -> CaseView<'_> {
        match self {
            Case::Recv { chan } => CaseView::Recv { chan },
            Case::Send { chan, data } => CaseView::Send { chan, data },
            Case::Timer { at, after_ms } => CaseView::Timer {
                at: *at,
                after_ms: *after_ms,
            },
            Case::Default => CaseView::Default,
        }
    }
}

/// A select as clients see it.
#[derive(Debug, Serialize)]
pub struct SelectView<'a> {
    /// Select id.
    pub id: &'a str,
    /// Cases as written (timers with their absolute deadline).
    pub cases: Vec<CaseView<'a>>,
}

/// A case as clients see it: `{"op": "recv", "chan": ...}` and so on.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum CaseView<'a> {
    /// `{"op": "recv", "chan"}`
    Recv {
        /// Channel name.
        chan: &'a str,
    },
    /// `{"op": "send", "chan", "data"}`
    Send {
        /// Channel name.
        chan: &'a str,
        /// The value sent.
        data: &'a Data,
    },
    /// `{"op": "timer", "at"[, "after_ms"]}`
    Timer {
        /// Deadline (log time).
        at: Millis,
        /// The relative form the client gave.
        #[serde(skip_serializing_if = "Option::is_none")]
        after_ms: Option<u64>,
    },
    /// `{"op": "default"}`
    Default,
}

/// What a completed select produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectResult {
    /// Increases within a state.
    pub seq: u64,
    /// Id of the select that completed.
    pub select: String,
    /// Index of the case taken in the select's `cases`.
    pub case: usize,
    /// `recv`, `send`, `timer` or `default`.
    pub op: String,
    /// Channel of a `recv` or `send` case.
    pub chan: Option<String>,
    /// Value received (null for sends, timers, default and receives from a closed channel).
    pub data: Data,
    /// False for a receive from a closed channel and for a send on a closed channel.
    pub ok: bool,
    /// Set for a send on a closed channel: Go's panic, as a value.
    pub error: Option<String>,
    /// Log time at which the select completed.
    pub at: Millis,
}

impl SelectResult {
    /// The client-facing form.
    pub fn view(&self) -> ResultView<'_> {
        ResultView {
            seq: self.seq,
            select: &self.select,
            case: self.case,
            op: &self.op,
            chan: self.chan.as_deref(),
            data: &self.data,
            ok: self.ok,
            error: self.error.as_deref(),
            at: self.at,
        }
    }
}

/// A result as clients see it.
#[derive(Debug, Serialize)]
pub struct ResultView<'a> {
    /// Increases within a state.
    pub seq: u64,
    /// Id of the select that completed.
    pub select: &'a str,
    /// Index of the case taken.
    pub case: usize,
    /// `recv`, `send`, `timer` or `default`.
    pub op: &'a str,
    /// Channel of a `recv` or `send` case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chan: Option<&'a str>,
    /// Value received.
    pub data: &'a Data,
    /// False for a receive from or send on a closed channel.
    pub ok: bool,
    /// Go's panic on a send to a closed channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// Log time of completion.
    pub at: Millis,
}

/// How a pending state with a callback is resumed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    /// URL the leader POSTs the state to.
    pub url: String,
    /// How long one attempt may take.
    pub timeout_ms: u64,
}

/// A lease: who may update a pending state, and until when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Proof of holding the lease; generated by the proposer, so replicas agree.
    pub token: Uuid,
    /// Log time after which the lease is void and the state pending again.
    pub expires_at: Millis,
    /// Log time at which the lease was taken (extensions keep it).
    pub granted_at: Millis,
    /// Results with `seq` up to this one were delivered under this lease and are
    /// consumed by the update; later ones arrived during the lease and are kept.
    pub through_seq: u64,
}

/// The derived status of a state (design.md §1); never written by clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Selects blocked, no results.
    Waiting,
    /// At least one result, not leased.
    Pending,
    /// Handed to a callback or a poller.
    Leased,
    /// No selects and no results.
    Done,
    /// Callback attempts or deliveries exhausted; re-armed by `POST /state/{id}/retry`.
    Failed,
}

impl Status {
    /// Parses a status's lower-case name.
    pub fn parse(name: &str) -> Option<Status> {
        Some(match name {
            "waiting" => Status::Waiting,
            "pending" => Status::Pending,
            "leased" => Status::Leased,
            "done" => Status::Done,
            "failed" => Status::Failed,
            _ => return None,
        })
    }
}

/// What `GET /states?status=` selects: a status, or the paused states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    /// States with this status.
    Status(Status),
    /// Paused states, whatever their status.
    Paused,
}

impl Listed {
    /// Parses the `?status=` value.
    pub fn parse(name: &str) -> Option<Listed> {
        match name {
            "paused" => Some(Listed::Paused),
            other => Status::parse(other).map(Listed::Status),
        }
    }

    /// Its tag in the by-status table.
    pub fn tag(self) -> u8 {
        match self {
            Listed::Status(status) => status as u8,
            Listed::Paused => PAUSED,
        }
    }

    /// Whether the by-status table lists these states. `waiting` is the one status it
    /// leaves out: most states spend their life in it, so its entry would be a key
    /// written with nearly every new state and rewritten at each wake-up, for listings
    /// and bulk deletes that can walk the states instead (design.md §3.1).
    pub fn indexed(self) -> bool {
        self != Listed::Status(Status::Waiting)
    }

    /// Whether `state` is one of these.
    pub fn matches(self, state: &State) -> bool {
        match self {
            Listed::Status(status) => state.status() == status,
            Listed::Paused => state.paused,
        }
    }
}

/// Highest priority.
pub const MAX_PRIORITY: u8 = 9;

/// One process, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// State id (same rules as channel names).
    pub id: String,
    /// The process's own dump; opaque to slct.
    pub data: Data,
    /// Selects still blocked.
    pub selects: Vec<Select>,
    /// Results not yet consumed, in `seq` order.
    pub results: Vec<SelectResult>,
    /// Where to POST the state when it turns pending; `None` for polled states.
    pub callback: Option<Callback>,
    /// Increases with every change but a lease extension (a heartbeat keeps
    /// `Idempotency-Key: {id}:{version}` of a callback delivery the same).
    pub version: u64,
    /// The current lease, if any (it may have expired in wall time but not yet in log time).
    pub lease: Option<Lease>,
    /// Creation log time.
    pub created_at: Millis,
    /// Last change log time.
    pub updated_at: Millis,
    /// Next result `seq`.
    pub next_seq: u64,
    /// Log time at which the state last turned pending (orders polling oldest-first).
    pub pending_since: Option<Millis>,
    /// Callback attempts since the last successful update.
    pub attempts: u32,
    /// Leases granted (to pollers or the callback dispatcher) since the last successful
    /// update, less the failed callback attempts (those count in `attempts`).
    pub deliveries: u32,
    /// Deliveries after which a state still not updated turns `failed` (0: no limit).
    pub max_deliveries: u32,
    /// A `done` state is deleted this long after its last change, in log time (0: kept).
    pub retain_ms: u64,
    /// Last callback failure (or "max deliveries reached"), for operators.
    pub last_error: Option<String>,
    /// Callback attempts or deliveries exhausted.
    pub failed: bool,
    /// Paused: its selects still complete, but it is delivered to no one (§3.6).
    pub paused: bool,
    /// 0–9; polls hand out higher priorities first.
    pub priority: u8,
    /// Number of the next event in its history.
    pub next_event: u64,
}

impl State {
    /// The status clients see, derived from the stored fields.
    pub fn status(&self) -> Status {
        if self.failed {
            Status::Failed
        } else if self.lease.is_some() {
            Status::Leased
        } else if !self.results.is_empty() {
            Status::Pending
        } else if !self.selects.is_empty() {
            Status::Waiting
        } else {
            Status::Done
        }
    }

    /// When a `done` state with a retention is deleted (log time), else `None`.
    pub fn delete_at(&self) -> Option<Millis> {
        (self.status() == Status::Done && self.retain_ms > 0)
            .then(|| self.updated_at.saturating_add(self.retain_ms))
    }

    /// The client-facing form (full, or a summary without `data`).
    pub fn view(&self, full: bool) -> StateView<'_> {
        StateView {
            id: &self.id,
            status: self.status(),
            data: full.then_some(&self.data),
            selects: self.selects.iter().map(Select::view).collect(),
            results: self.results.iter().map(SelectResult::view).collect(),
            callback: self.callback.as_ref(),
            version: self.version,
            lease: self.lease.as_ref().map(|l| LeaseView {
                token: l.token,
                expires_at: l.expires_at,
                granted_at: l.granted_at,
            }),
            created_at: self.created_at,
            updated_at: self.updated_at,
            attempts: self.attempts,
            deliveries: self.deliveries,
            max_deliveries: self.max_deliveries,
            retain_ms: self.retain_ms,
            last_error: self.last_error.as_deref(),
            paused: self.paused,
            priority: self.priority,
        }
    }
}

/// A lease as clients see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeaseView {
    /// The token to send back with the update.
    pub token: Uuid,
    /// Unix ms (log time) when the lease lapses.
    pub expires_at: Millis,
    /// Unix ms (log time) when the lease was taken.
    pub granted_at: Millis,
}

/// A state as clients see it.
#[derive(Debug, Serialize)]
pub struct StateView<'a> {
    /// State id.
    pub id: &'a str,
    /// Derived status.
    pub status: Status,
    /// The process's data; absent in summaries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a Data>,
    /// Blocked selects.
    pub selects: Vec<SelectView<'a>>,
    /// Unconsumed results.
    pub results: Vec<ResultView<'a>>,
    /// Callback, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<&'a Callback>,
    /// Version, increased by every change.
    pub version: u64,
    /// Current lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseView>,
    /// Creation time (Unix ms).
    pub created_at: Millis,
    /// Last change (Unix ms).
    pub updated_at: Millis,
    /// Callback attempts since the last successful update.
    #[serde(skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Leases granted since the last update.
    pub deliveries: u32,
    /// Deliveries before the state turns `failed` (0: no limit).
    pub max_deliveries: u32,
    /// A `done` state is deleted this long after its last change (0: kept).
    pub retain_ms: u64,
    /// Last callback failure, or "max deliveries reached".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<&'a str>,
    /// Paused: not delivered until resumed.
    pub paused: bool,
    /// 0–9, higher polled first.
    pub priority: u8,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A channel's stored metadata. Values and waiters live in their own tables, except
/// the head of a queue that a select's case joined while it was empty (design.md §4).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Chan {
    /// Buffer capacity (0: unbuffered).
    pub capacity: u64,
    /// `close(ch)` was applied.
    pub closed: bool,
    /// Made with `PUT /chan/{name}`; kept even when empty.
    pub explicit: bool,
    /// Values in the buffer.
    pub len: u64,
    /// Blocked senders (state selects, detached and HTTP sends).
    pub senders: u64,
    /// Blocked receivers.
    pub receivers: u64,
    /// Of the senders and receivers, those that are parked HTTP operations.
    pub parked: u64,
    /// Next position in this channel's buffer and queues; keeps FIFO order.
    pub next_pos: u64,
    /// Detached sends its close discarded.
    pub discarded: u64,
    /// The first blocked sender, when it is a select's case that found the senders'
    /// queue empty: kept here rather than in the queue's table, which holds only the
    /// senders behind it.
    pub head_sender: Option<QueuedCase>,
    /// The first blocked receiver, kept here on the same terms as `head_sender`.
    pub head_receiver: Option<QueuedCase>,
}

/// A select's case waiting at the head of a channel queue, in the channel's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedCase {
    /// Its position in the channel, as if it were in the queue's table.
    pub pos: u64,
    /// State id.
    pub state: String,
    /// Select id.
    pub select: String,
    /// Case index.
    pub case: usize,
}

impl Chan {
    /// An implicit, open, empty channel with no waiters is not stored at all.
    pub fn is_vacant(&self) -> bool {
        !self.explicit && !self.closed && self.len == 0 && self.senders == 0 && self.receivers == 0
    }
}

/// A channel as clients see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChanView {
    /// Channel name.
    pub name: String,
    /// Buffer capacity.
    pub capacity: u64,
    /// Values in the buffer.
    pub len: u64,
    /// Whether the channel is closed (it may still hold values to drain).
    pub closed: bool,
    /// Blocked senders.
    pub senders: u64,
    /// Blocked receivers.
    pub receivers: u64,
    /// Detached sends that its close discarded (their senders were gone).
    pub discarded: u64,
}

/// The by-status tag of paused states (statuses use their own number).
pub const PAUSED: u8 = u8::MAX;
