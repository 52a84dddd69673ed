//! The JSON of the API (design.md §1, §3; openapi.yaml) as typed structs, defined here
//! and not borrowed from the engine, so the client depends on the wire format only.
//!
//! Values users supply and read — a state's `data`, a result's `data`, a channel
//! value — are `serde_json::Value`. The one exception is the value of a `send` case,
//! kept as [`RawJson`]: the server keeps the exact text a client sent and, in an update,
//! compares a still-blocked select's cases with the blocked ones byte for byte, so the
//! text must survive the round trip (a `Value` would reorder keys and drop spaces).
//!
//! Every response struct ignores fields it does not know, so a newer server does not
//! break an older client.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

/// A JSON value kept as the exact text it was written in.
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Serializes `value` to JSON text.
    pub fn new<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<RawJson> {
        serde_json::value::to_raw_value(value).map(RawJson)
    }

    /// Takes JSON text as it is, after checking that it is JSON.
    pub fn from_text(text: impl Into<String>) -> serde_json::Result<RawJson> {
        RawValue::from_string(text.into()).map(RawJson)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value parsed.
    pub fn to_value(&self) -> Value {
        // The text is JSON by construction, so it parses.
        serde_json::from_str(self.get()).unwrap_or(Value::Null)
    }
}

impl From<Value> for RawJson {
    fn from(value: Value) -> Self {
        // A `Value` always serializes.
        RawJson(serde_json::value::to_raw_value(&value).expect("a Value serializes"))
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(RawJson)
    }
}

/// The derived status of a state (design.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Selects blocked, no results.
    Waiting,
    /// At least one result, not leased.
    Pending,
    /// Handed to a callback or a poller.
    Leased,
    /// No selects, no results.
    Done,
    /// Callback attempts exhausted.
    Failed,
}

impl Status {
    /// The lower-case name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Pending => "pending",
            Status::Leased => "leased",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One case of a select.
#[derive(Clone, Debug, PartialEq)]
pub enum Case {
    /// `{"op": "recv", "chan"}`.
    Recv {
        /// Channel name.
        chan: String,
    },
    /// `{"op": "send", "chan", "data"}`.
    Send {
        /// Channel name.
        chan: String,
        /// The value, as its exact text (see the module docs).
        data: RawJson,
    },
    /// `{"op": "timer", "at" | "after_ms"}`.
    Timer {
        /// Deadline (Unix ms). The server fills it in for a relative timer.
        at: Option<u64>,
        /// Delay from registration, as the client wrote it.
        after_ms: Option<u64>,
    },
    /// `{"op": "default"}`.
    Default,
}

/// A case on the wire, flat: a tagged enum would buffer the value, which a raw value
/// cannot be read from. A timer sends `at` when it has one (the server shows a
/// relative timer with both fields but takes only one), else `after_ms`.
#[derive(Serialize, Deserialize)]
struct CaseWire {
    op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<RawJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after_ms: Option<u64>,
}

impl Serialize for Case {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut wire = CaseWire {
            op: String::new(),
            chan: None,
            data: None,
            at: None,
            after_ms: None,
        };
        match self {
            Case::Recv { chan } => {
                wire.op = "recv".into();
                wire.chan = Some(chan.clone());
            }
            Case::Send { chan, data } => {
                wire.op = "send".into();
                wire.chan = Some(chan.clone());
                wire.data = Some(data.clone());
            }
            Case::Timer { at, after_ms } => {
                wire.op = "timer".into();
                wire.at = *at;
                wire.after_ms = if at.is_some() { None } else { *after_ms };
            }
            Case::Default => wire.op = "default".into(),
        }
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Case {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let wire = CaseWire::deserialize(d)?;
        let chan = || {
            wire.chan
                .clone()
                .ok_or_else(|| D::Error::missing_field("chan"))
        };
        Ok(match wire.op.as_str() {
            "recv" => Case::Recv { chan: chan()? },
            "send" => Case::Send {
                chan: chan()?,
                data: wire
                    .data
                    .clone()
                    .ok_or_else(|| D::Error::missing_field("data"))?,
            },
            "timer" => Case::Timer {
                at: wire.at,
                after_ms: wire.after_ms,
            },
            "default" => Case::Default,
            other => {
                return Err(D::Error::unknown_variant(
                    other,
                    &["recv", "send", "timer", "default"],
                ))
            }
        })
    }
}

impl Case {
    /// A receive from `chan`.
    pub fn recv(chan: impl Into<String>) -> Case {
        Case::Recv { chan: chan.into() }
    }

    /// A send of `value` on `chan`.
    pub fn send(chan: impl Into<String>, value: Value) -> Case {
        Case::Send {
            chan: chan.into(),
            data: value.into(),
        }
    }

    /// A timer firing at `at` (Unix ms, log time).
    pub fn timer_at(at: u64) -> Case {
        Case::Timer {
            at: Some(at),
            after_ms: None,
        }
    }

    /// A timer firing `ms` after the select is registered.
    pub fn timer_after(ms: u64) -> Case {
        Case::Timer {
            at: None,
            after_ms: Some(ms),
        }
    }
}

/// A select: one blocked goroutine of a state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Select {
    /// Names the goroutine within its state.
    pub id: String,
    /// The cases, in order; a result's `case` indexes them.
    pub cases: Vec<Case>,
}

impl Select {
    /// A select with no cases yet; add them with [`Select::case`].
    pub fn new(id: impl Into<String>) -> Select {
        Select {
            id: id.into(),
            cases: Vec::new(),
        }
    }

    /// Adds a case.
    pub fn case(mut self, case: Case) -> Select {
        self.cases.push(case);
        self
    }
}

/// What a completed select produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectResult {
    /// Increases within a state.
    pub seq: u64,
    /// Id of the select that completed.
    pub select: String,
    /// Index of the case taken.
    pub case: usize,
    /// `recv`, `send`, `timer` or `default`.
    pub op: String,
    /// Channel of a recv or send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chan: Option<String>,
    /// The value received (null otherwise).
    #[serde(default)]
    pub data: Value,
    /// False for a receive from, or a send on, a closed channel.
    pub ok: bool,
    /// "send on closed channel" for a send on a closed channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Log time of completion (Unix ms).
    pub at: u64,
}

/// A callback: where the leader POSTs the state when it turns pending.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    /// http(s) URL.
    pub url: String,
    /// How long one attempt may take (server default 10 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A lease on a pending state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The token an update, an extension or a release must carry.
    pub token: Uuid,
    /// When the lease lapses (Unix ms, log time).
    pub expires_at: u64,
    /// When the lease was taken (Unix ms, log time).
    #[serde(default)]
    pub granted_at: u64,
}

/// A state: one process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// State id.
    pub id: String,
    /// Derived status.
    pub status: Status,
    /// The process's data; `None` in listing summaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Blocked selects.
    #[serde(default)]
    pub selects: Vec<Select>,
    /// Results not yet consumed.
    #[serde(default)]
    pub results: Vec<SelectResult>,
    /// Callback, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
    /// Increased by every change.
    #[serde(default)]
    pub version: u64,
    /// The current lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Creation time (Unix ms).
    #[serde(default)]
    pub created_at: u64,
    /// Last change (Unix ms).
    #[serde(default)]
    pub updated_at: u64,
    /// Callback attempts since the last update.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Leases granted since the last update (less failed callback attempts).
    #[serde(default)]
    pub deliveries: u32,
    /// Deliveries after which a state still not updated turns `failed` (0: no limit).
    #[serde(default)]
    pub max_deliveries: u32,
    /// A `done` state is deleted this long after its last change (0: kept).
    #[serde(default)]
    pub retain_ms: u64,
    /// Last callback failure, or "max deliveries reached".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Not delivered until resumed.
    #[serde(default)]
    pub paused: bool,
    /// 0–9; polls hand out higher first.
    #[serde(default)]
    pub priority: u8,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The body of `PUT /state/{id}`: a new state, or an update under a lease.
///
/// In an update a field left `None` keeps its value on the server; `data: Some(null)`
/// and `callback: Some(None)` clear it. Selects still blocked on the server must be
/// sent back unchanged (take them from the leased [`State::selects`]); others are new.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StateBody {
    /// The process's data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Selects: blocked ones unchanged, and new ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selects: Option<Vec<Select>>,
    /// The callback; `Some(None)` removes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<Option<Callback>>,
    /// 0–9.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Deliveries without an update before the state turns `failed` (0: no limit;
    /// the server's `--max-deliveries` if never set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u32>,
    /// Milliseconds a `done` state is kept before it is deleted (0: for ever; the
    /// server's `--retain-done` if never set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retain_ms: Option<u64>,
}

impl StateBody {
    /// An empty body: creates a `done` state, or, as an update, consumes the results
    /// and changes nothing else.
    pub fn new() -> StateBody {
        StateBody::default()
    }

    /// Sets the data.
    pub fn data(mut self, data: Value) -> StateBody {
        self.data = Some(data);
        self
    }

    /// Adds a select (and makes `selects` present, so an update sends the list).
    pub fn select(mut self, select: Select) -> StateBody {
        self.selects.get_or_insert_with(Vec::new).push(select);
        self
    }

    /// Sets the whole list of selects; an empty list finishes the process.
    pub fn selects(mut self, selects: Vec<Select>) -> StateBody {
        self.selects = Some(selects);
        self
    }

    /// Sets the callback.
    pub fn callback(mut self, url: impl Into<String>, timeout_ms: Option<u64>) -> StateBody {
        self.callback = Some(Some(Callback {
            url: url.into(),
            timeout_ms,
        }));
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: u8) -> StateBody {
        self.priority = Some(priority);
        self
    }

    /// Sets how many deliveries without an update the state may have before it turns
    /// `failed` (0: no limit).
    pub fn max_deliveries(mut self, max_deliveries: u32) -> StateBody {
        self.max_deliveries = Some(max_deliveries);
        self
    }

    /// Sets how long the state is kept once `done` (0: for ever).
    pub fn retain_ms(mut self, retain_ms: u64) -> StateBody {
        self.retain_ms = Some(retain_ms);
        self
    }
}

/// What `DELETE /states` deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// States deleted.
    pub deleted: u64,
    /// Matching states remain: call again.
    pub more: bool,
}

/// One page of `GET /states`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatePage {
    /// The states (summaries without `data` unless `full`).
    pub states: Vec<State>,
    /// The cursor of the next page (`after=`), if there is one.
    #[serde(default)]
    pub next: Option<String>,
}

/// One page of `GET /chans`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChanPage {
    /// The channels.
    pub chans: Vec<Chan>,
    /// The cursor of the next page (`after=`), if there is one.
    #[serde(default)]
    pub next: Option<String>,
}

/// One event of a state's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Numbers the state's events in order.
    pub seq: u64,
    /// Log time (Unix ms).
    pub at: u64,
    /// Raft index of the entry that produced it.
    pub index: u64,
    /// `created`, `select_registered`, `case_completed`, `leased`, ...
    pub event: String,
    /// The event's own fields (`select`, `case`, `token`, `expires_at`, ...).
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

/// A page of a state's history, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Up to `limit` events, newest first.
    pub events: Vec<HistoryEvent>,
    /// `before=` for the next (older) page, if any.
    #[serde(default)]
    pub next: Option<u64>,
}

/// A channel's counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chan {
    /// Channel name.
    pub name: String,
    /// Buffer capacity (0: unbuffered).
    pub capacity: u64,
    /// Values in the buffer.
    pub len: u64,
    /// Whether the channel is closed (it may still hold values to drain).
    pub closed: bool,
    /// Blocked senders.
    pub senders: u64,
    /// Blocked receivers.
    pub receivers: u64,
    /// Detached sends its close discarded.
    #[serde(default)]
    pub discarded: u64,
}

/// What `POST /chan/{name}/close` discarded: parked detached sends, whose senders are
/// gone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Closed {
    /// The first 100 discarded values, oldest first.
    #[serde(default)]
    pub discarded: Vec<Discarded>,
    /// How many were discarded in all.
    #[serde(default)]
    pub discarded_count: u64,
}

/// One discarded detached send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Discarded {
    /// The value.
    pub data: Value,
    /// When it was sent (Unix ms, log time).
    pub sent_at: u64,
}

/// How `POST /chan/{name}/send` waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    /// A durable send that waits for no one (`go func() { ch <- v }()`).
    Detached,
    /// Completes now or fails with [`super::Error::WouldBlock`].
    Try,
    /// Blocks up to this many seconds (1–300), then [`super::Error::Timeout`].
    Wait(u64),
}

/// What a send did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sent {
    /// A receiver (or the buffer) took the value.
    Sent,
    /// A detached send is parked until a receiver takes it.
    Parked,
}

/// `{"status": "sent" | "parked"}`.
#[derive(Deserialize)]
pub(super) struct SendAnswer {
    pub status: Sent,
}

/// What a receive got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Received {
    /// The value (null when `ok` is false).
    pub data: Value,
    /// False once the channel is closed and drained.
    pub ok: bool,
}

/// A node's view of the cluster (`GET /cluster`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The node asked.
    pub id: u64,
    /// The leader it knows, if any.
    #[serde(default)]
    pub leader: Option<u64>,
    /// Raft term.
    #[serde(default)]
    pub term: u64,
    /// Voters: id → address.
    #[serde(default)]
    pub members: BTreeMap<String, String>,
    /// Learners: id → address.
    #[serde(default)]
    pub learners: BTreeMap<String, String>,
    /// Last log index on the node.
    #[serde(default)]
    pub last_log_index: Option<u64>,
    /// Last applied index on the node.
    #[serde(default)]
    pub last_applied: Option<u64>,
    /// `Leader`, `Follower`, `Candidate` or `Learner`.
    #[serde(default)]
    pub state: String,
    /// The node's data disk (absent from nodes older than it).
    #[serde(default)]
    pub disk: Option<Disk>,
}

/// A node's data disk (`GET /cluster`'s `disk`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Bytes free for the node to write.
    pub free_bytes: u64,
    /// The free space below which writes are refused with 507 `disk_full`.
    pub reserve_bytes: u64,
    /// Whether the free space is below the reserve.
    pub low: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_send_value_keeps_its_text() {
        let case: Case =
            serde_json::from_str(r#"{"op":"send","chan":"c","data":{"b": 1, "a": 1e15}}"#).unwrap();
        let text = serde_json::to_string(&case).unwrap();
        assert_eq!(
            text,
            r#"{"op":"send","chan":"c","data":{"b": 1, "a": 1e15}}"#
        );
    }

    #[test]
    fn a_relative_timer_goes_back_as_its_deadline() {
        let case: Case =
            serde_json::from_str(r#"{"op":"timer","at":1700000000000,"after_ms":5000}"#).unwrap();
        assert_eq!(
            serde_json::to_value(&case).unwrap(),
            json!({"op": "timer", "at": 1700000000000u64})
        );
        assert_eq!(
            serde_json::to_value(Case::timer_after(5)).unwrap(),
            json!({"op": "timer", "after_ms": 5})
        );
    }

    #[test]
    fn an_update_sends_only_what_is_set() {
        let body = StateBody::new().data(Value::Null);
        assert_eq!(serde_json::to_value(&body).unwrap(), json!({"data": null}));
        let body = StateBody {
            callback: Some(None),
            ..StateBody::new().selects(vec![])
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"selects": [], "callback": null})
        );
    }

    #[test]
    fn history_events_keep_their_fields() {
        let e: HistoryEvent = serde_json::from_value(
            json!({"seq": 3, "at": 5, "index": 9, "event": "leased", "to": "poller"}),
        )
        .unwrap();
        assert_eq!(e.event, "leased");
        assert_eq!(e.details["to"], "poller");
    }
}
