//! Random channel programs run through the engine and through a reference model, written
//! separately for clarity (plain queues and vectors, no storage), compared after every
//! step; plus the invariants that must hold whatever the engine chose.
//!
//! The model cannot predict a random choice among ready cases, so it checks that the
//! engine's choice was one of the ready cases (or `default` when none was), then follows
//! it. Everything else — who is served, in which order, with which value — the model
//! decides itself, and the two must agree.
//!
//! Beyond channels and selects the model knows process control (design.md §3.6): paused
//! states keep completing selects but are never polled; polls hand out the highest
//! priority first, then the oldest pending (an expired or released lease keeps the
//! state's place), then by id; and every state keeps the last `history_limit` events,
//! which the model predicts one by one (kind, log time, Raft index, and what each
//! carries) and compares with the engine's history after every step. States with a
//! callback are leased to the dispatcher in the command that makes them deliverable;
//! their attempts may fail (with a retry after a backoff, or for good) and be re-armed.
//! The lease tokens the engine draws for the dispatcher are read from the engine, like
//! its choices among ready cases. Every lease granted counts as a delivery (a failed
//! callback attempt counts in the attempts instead); a state that turns pending again
//! after `max_deliveries` deliveries without an update is failed (the dead letter).
//! A `done` state is deleted `retain_ms` after its last change, and bulk deletes take
//! the matching states in id order, a batch at a time. Detached sends may carry an
//! idempotency key: a repeat within the window gets the first reply and sends nothing,
//! another send under the key is refused, and the key is free once the window passed.

mod support;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use serde_json::json;
use slct::codec;
use slct::engine::chan::{Side, Waiter};
use slct::engine::history::{self, Event, What};
use slct::engine::poll::candidates;
use slct::engine::types::{Callback, Case, Chan, Select, State, Status};
use slct::engine::{Applied, Data, CALLBACK_LEASE_MARGIN_MS};
use slct::engine::{Discarded, DiscardedSend};
use slct::engine::{Error, Op, RecvMode, Response, SendMode, Store, Table};
use support::world::*;
use uuid::Uuid;

const CHANS: [&str; 3] = ["a", "b", "c"];
const STATES: [&str; 4] = ["s0", "s1", "s2", "s3"];
/// Priorities states are created or updated with.
const PRIORITIES: [u8; 3] = [0, 5, 9];
/// `min_priority` of polls: mostly none, else on and just above each priority in use.
const MIN_PRIORITIES: [u8; 6] = [0, 0, 0, 1, 5, 6];
/// Events kept per state, chosen per run: none, few (truncation), more than a tail
/// holds (its chunks trimmed) or plenty.
const HISTORY_LIMITS: [u32; 5] = [0, 1, 3, 20, 100];
/// `max_deliveries` of the states of a run: no limit, or a few deliveries.
const MAX_DELIVERIES: [u32; 4] = [0, 1, 2, 4];
/// `retain_ms` of the states of a run: kept, or deleted soon after they are done.
const RETAIN_MS: [u64; 4] = [0, 0, 5, 40];
/// How long idempotency keys are remembered in the model's runs.
const KEY_WINDOW_MS: u64 = 30;
/// What a bulk delete may filter by.
const LISTED: [&str; 6] = ["waiting", "pending", "leased", "done", "failed", "paused"];
/// How long one callback attempt may take; its lease lasts this plus the engine's margin.
const CALLBACK_TIMEOUT_MS: u64 = 20;
/// A jump of time that outlasts a callback lease.
const LONG_PAUSE_MS: u64 = CALLBACK_TIMEOUT_MS + CALLBACK_LEASE_MARGIN_MS + 50;
/// What the dispatcher reports of a failed attempt.
const CALLBACK_ERROR: &str = "503 from the process";
/// How long every failed callback attempt of the model took.
const CALLBACK_DURATION_MS: u64 = 7;

#[derive(Clone, Debug)]
enum CaseSpec {
    Recv(usize),
    Send(usize),
    Timer(u64),
    Default,
}

#[derive(Clone, Debug)]
enum Step {
    Create {
        state: usize,
        selects: Vec<Vec<CaseSpec>>,
        priority: u8,
        callback: bool,
    },
    DetachedSend {
        chan: usize,
    },
    /// A detached send with an idempotency key: a retry of the key's last send, or a
    /// new value (refused while the key is live).
    KeyedSend {
        chan: usize,
        key: usize,
        retry: bool,
    },
    TryRecv {
        chan: usize,
    },
    Close {
        chan: usize,
    },
    Advance {
        ms: u64,
    },
    /// Polls one state and updates it at once, maybe adding a select and changing its
    /// priority.
    PollAndUpdate {
        min_priority: u8,
        add: Option<Vec<CaseSpec>>,
        priority: Option<u8>,
    },
    /// Polls up to `limit` states (of one state's prefix, or all) and lets the leases run.
    PollAndAbandon {
        prefix: Option<usize>,
        min_priority: u8,
        limit: usize,
        lease_ms: u64,
    },
    /// The holder of a lease (poller or callback) answers: it sends back the selects
    /// it was given (some may have completed since) and maybe a new one.
    Answer {
        pick: usize,
        add: Option<Vec<CaseSpec>>,
        priority: Option<u8>,
    },
    /// Heartbeat.
    Extend {
        pick: usize,
        ms: u64,
    },
    /// Gives the lease back.
    Release {
        pick: usize,
    },
    /// The dispatcher reports a failed attempt.
    Fail {
        pick: usize,
        max_attempts: u32,
        backoff_ms: u64,
    },
    /// Re-arms a failed state.
    Retry {
        pick: usize,
    },
    Pause {
        state: usize,
    },
    Resume {
        state: usize,
    },
    Delete {
        state: usize,
    },
    /// One batch of `DELETE /states`: a state's prefix (or all), a status or `paused`
    /// (or any), from after a state's id (or the start).
    DeleteStates {
        prefix: Option<usize>,
        status: Option<&'static str>,
        limit: u32,
        after: Option<usize>,
    },
}

fn case_spec() -> impl Strategy<Value = CaseSpec> {
    prop_oneof![
        4 => (0..CHANS.len()).prop_map(CaseSpec::Recv),
        4 => (0..CHANS.len()).prop_map(CaseSpec::Send),
        1 => (0u64..80).prop_map(CaseSpec::Timer),
        1 => Just(CaseSpec::Default),
    ]
}

/// One to three cases, at most one of them `default` (more is invalid input).
fn cases() -> impl Strategy<Value = Vec<CaseSpec>> {
    prop::collection::vec(case_spec(), 1..=3).prop_map(|mut cases| {
        let mut seen_default = false;
        cases.retain(|c| {
            !matches!(c, CaseSpec::Default) || !std::mem::replace(&mut seen_default, true)
        });
        cases
    })
}

fn priority() -> impl Strategy<Value = u8> {
    prop::sample::select(&PRIORITIES[..])
}

fn min_priority() -> impl Strategy<Value = u8> {
    prop::sample::select(&MIN_PRIORITIES[..])
}

fn state() -> impl Strategy<Value = usize> {
    0..STATES.len()
}

/// Whom an operation under a lease targets (see `Run::target`).
fn pick() -> impl Strategy<Value = usize> {
    0..3 * STATES.len()
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (state(), prop::collection::vec(cases(), 1..=2), priority(), prop::bool::weighted(0.3))
            .prop_map(|(state, selects, priority, callback)| Step::Create { state, selects, priority, callback }),
        2 => (0..CHANS.len()).prop_map(|chan| Step::DetachedSend { chan }),
        2 => (0..CHANS.len(), 0..2usize, prop::bool::weighted(0.7))
            .prop_map(|(chan, key, retry)| Step::KeyedSend { chan, key, retry }),
        2 => (0..CHANS.len()).prop_map(|chan| Step::TryRecv { chan }),
        1 => (0..CHANS.len()).prop_map(|chan| Step::Close { chan }),
        2 => prop_oneof![9 => 0u64..40, 1 => Just(LONG_PAUSE_MS)].prop_map(|ms| Step::Advance { ms }),
        3 => (min_priority(), prop::option::of(cases()), prop::option::weighted(0.3, priority()))
            .prop_map(|(min_priority, add, priority)| Step::PollAndUpdate { min_priority, add, priority }),
        2 => (prop::option::weighted(0.4, state()), min_priority(), 1usize..=3, prop_oneof![1u64..60, Just(1_000)])
            .prop_map(|(prefix, min_priority, limit, lease_ms)| Step::PollAndAbandon {
                prefix, min_priority, limit, lease_ms,
            }),
        2 => (pick(), prop::option::of(cases()), prop::option::weighted(0.3, priority()))
            .prop_map(|(pick, add, priority)| Step::Answer { pick, add, priority }),
        1 => (pick(), 1u64..60).prop_map(|(pick, ms)| Step::Extend { pick, ms }),
        1 => pick().prop_map(|pick| Step::Release { pick }),
        2 => (pick(), 1u32..=3, 1u64..60)
            .prop_map(|(pick, max_attempts, backoff_ms)| Step::Fail { pick, max_attempts, backoff_ms }),
        2 => pick().prop_map(|pick| Step::Retry { pick }),
        2 => state().prop_map(|state| Step::Pause { state }),
        2 => state().prop_map(|state| Step::Resume { state }),
        1 => state().prop_map(|state| Step::Delete { state }),
        1 => (
            prop::option::of(state()),
            prop::option::of(prop::sample::select(&LISTED[..])),
            1u32..3,
            prop::option::of(state()),
        )
            .prop_map(|(prefix, status, limit, after)| Step::DeleteStates {
                prefix,
                status,
                limit,
                after
            }),
    ]
}

// --- The reference model -------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum MWaiter {
    Select {
        state: String,
        select: String,
        case: usize,
    },
    /// A detached send: its value and when it was sent.
    Detached(Data, u64),
}

#[derive(Clone, Debug, Default)]
struct MChan {
    cap: u64,
    closed: bool,
    buf: VecDeque<Data>,
    sendq: VecDeque<MWaiter>,
    recvq: VecDeque<MWaiter>,
    /// Detached sends its close discarded.
    discarded: u64,
}

#[derive(Clone, Debug, PartialEq)]
struct MResult {
    select: String,
    case: usize,
    data: Data,
    ok: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct MLease {
    token: Uuid,
    expires_at: u64,
    /// How many of the state's results it delivered (the update consumes them).
    delivered: usize,
    /// The selects blocked when it was taken: what the holder sends back.
    seen: Vec<Select>,
}

#[derive(Clone, Debug)]
struct MState {
    selects: Vec<Select>,
    results: Vec<MResult>,
    lease: Option<MLease>,
    /// The token of the last lease, live or not (to try stale tokens with).
    last_token: Option<Uuid>,
    paused: bool,
    priority: u8,
    /// Resumed by callbacks rather than polls.
    callback: bool,
    /// Failed callback attempts since the last update.
    attempts: u32,
    /// Leases granted since the last update, less failed callback attempts.
    deliveries: u32,
    /// Deliveries after which a state that turns pending fails instead (0: no limit).
    max_deliveries: u32,
    /// Deleted this long after its last change once `done` (0: kept).
    retain_ms: u64,
    /// Log time of its creation, its last update, pause or resume (a `done` state
    /// changes no other way).
    updated_at: u64,
    /// Attempts or deliveries exhausted: delivered to no one until retried.
    failed: bool,
    /// Log time at which it last turned pending: its place among its priority.
    pending_since: Option<u64>,
    /// One more for every change: a select blocked or completed, a lease taken,
    /// expired or released, an update, a pause or resume.
    version: u64,
    /// The last `history_limit` events, oldest first.
    history: VecDeque<Event>,
    next_event: u64,
}

impl MState {
    fn new(priority: u8, callback: bool, max_deliveries: u32, retain_ms: u64, now: u64) -> MState {
        MState {
            selects: Vec::new(),
            results: Vec::new(),
            lease: None,
            last_token: None,
            paused: false,
            priority,
            callback,
            attempts: 0,
            deliveries: 0,
            max_deliveries,
            retain_ms,
            updated_at: now,
            failed: false,
            pending_since: None,
            version: 1,
            history: VecDeque::new(),
            next_event: 1,
        }
    }

    fn status(&self) -> Status {
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

    /// Has results to hand over and nobody holds them.
    fn pending(&self) -> bool {
        !self.results.is_empty() && self.lease.is_none() && !self.failed
    }

    fn deliverable(&self) -> bool {
        self.pending() && !self.paused
    }

    fn take_lease(&mut self, token: Uuid, expires_at: u64) {
        self.lease = Some(MLease {
            token,
            expires_at,
            delivered: self.results.len(),
            seen: self.selects.clone(),
        });
        self.last_token = Some(token);
        self.deliveries += 1;
        self.version += 1;
    }

    /// Delivered as often as allowed and pending again without an update.
    fn exhausted(&self) -> bool {
        self.pending() && self.max_deliveries > 0 && self.deliveries >= self.max_deliveries
    }
}

#[derive(Default)]
struct Model {
    now: u64,
    /// Raft index of the command being followed (stamped on events).
    index: u64,
    history_limit: u32,
    /// `max_deliveries` states are created with.
    max_deliveries: u32,
    /// `retain_ms` states are created with.
    retain_ms: u64,
    /// States deleted by request and by retention, ever.
    deleted_by_request: u64,
    deleted_by_retention: u64,
    /// Idempotency keys: the send they were first used for (channel, value), its reply
    /// and when the key is free again.
    keys: BTreeMap<usize, (usize, u64, Result<Response, String>, u64)>,
    chans: BTreeMap<String, MChan>,
    states: BTreeMap<String, MState>,
}

/// The op name and channel a result or event names for a case.
fn op_and_chan(case: &Case) -> (&'static str, Option<String>) {
    match case {
        Case::Recv { chan } => ("recv", Some(chan.clone())),
        Case::Send { chan, .. } => ("send", Some(chan.clone())),
        Case::Timer { .. } => ("timer", None),
        Case::Default => ("default", None),
    }
}

/// Bytes of a value's JSON text.
fn json_size(data: &Data) -> usize {
    serde_json::to_string(&data.to_value().unwrap())
        .unwrap()
        .len()
}

impl Model {
    fn chan(&mut self, name: &str) -> &mut MChan {
        self.chans.entry(name.to_owned()).or_default()
    }

    fn state(&mut self, id: &str) -> &mut MState {
        self.states.get_mut(id).unwrap()
    }

    /// Records an event in `id`'s history, keeping the last `history_limit`.
    fn note(&mut self, id: &str, what: What) {
        if self.history_limit == 0 {
            return;
        }
        let (at, index, limit) = (self.now, self.index, self.history_limit as usize);
        let st = self.state(id);
        let seq = st.next_event;
        st.history.push_back(Event {
            seq,
            at,
            index,
            what,
        });
        st.next_event += 1;
        while st.history.len() > limit {
            st.history.pop_front();
        }
    }

    /// At the end of a command: a pending state delivered `max_deliveries` times fails;
    /// a pending state that had no place in the pending order takes its place now
    /// (paused or not; resuming keeps it), and a deliverable state with a callback is
    /// leased to the dispatcher, with the token `drawn` says the engine drew.
    fn settle(&mut self, drawn: impl Fn(&str) -> Option<Uuid>) {
        let now = self.now;
        let mut dispatched = Vec::new();
        let mut exhausted = Vec::new();
        for (id, st) in &mut self.states {
            if st.exhausted() {
                st.failed = true;
                exhausted.push(id.clone());
            }
            if st.pending() && st.pending_since.is_none() {
                st.pending_since = Some(now);
            }
            if st.callback && st.deliverable() {
                let token = drawn(id).unwrap_or_default();
                let expires_at = now + CALLBACK_TIMEOUT_MS + CALLBACK_LEASE_MARGIN_MS;
                st.take_lease(token, expires_at);
                dispatched.push((id.clone(), token, expires_at));
            }
        }
        for id in exhausted {
            self.note(&id, What::Failed);
        }
        for (id, token, expires_at) in dispatched {
            let to = "callback".to_owned();
            self.note(
                &id,
                What::Leased {
                    to,
                    token,
                    expires_at,
                },
            );
        }
    }

    /// What a poll hands out, in order: deliverable states of `prefix` with at least
    /// `min_priority`, highest priority first, then oldest pending, then by id.
    fn poll_order(&self, prefix: &str, min_priority: u8) -> Vec<String> {
        let mut due: Vec<(Reverse<u8>, u64, &String)> = self
            .states
            .iter()
            .filter(|(id, s)| {
                !s.callback
                    && s.deliverable()
                    && s.priority >= min_priority
                    && id.starts_with(prefix)
            })
            .map(|(id, s)| (Reverse(s.priority), s.pending_since.expect("placed"), id))
            .collect();
        due.sort();
        due.into_iter().map(|(_, _, id)| id.clone()).collect()
    }

    fn lease(&mut self, id: &str, token: Uuid, lease_ms: u64) {
        let expires_at = self.now + lease_ms;
        self.state(id).take_lease(token, expires_at);
        let to = "poller".to_owned();
        self.note(
            id,
            What::Leased {
                to,
                token,
                expires_at,
            },
        );
    }

    /// An update under the lease: the delivered results are consumed, the lease ends.
    /// Returns the selects of `written` to register: those neither blocked nor
    /// completed during the lease.
    fn update(&mut self, id: &str, written: Vec<Select>, priority: Option<u8>) -> Vec<Select> {
        let now = self.now;
        let st = self.state(id);
        let lease = st.lease.take().unwrap();
        let known: BTreeSet<String> = st
            .selects
            .iter()
            .map(|s| s.id.clone())
            .chain(
                st.results[lease.delivered..]
                    .iter()
                    .map(|r| r.select.clone()),
            )
            .collect();
        st.results.drain(..lease.delivered);
        if let Some(p) = priority {
            st.priority = p;
        }
        st.pending_since = None;
        st.attempts = 0;
        st.deliveries = 0;
        st.updated_at = now;
        st.version += 1;
        let version = st.version;
        self.note(id, What::Updated { version });
        written
            .into_iter()
            .filter(|s| !known.contains(&s.id))
            .collect()
    }

    /// A failed callback attempt: try again when the lease lapses after `backoff_ms`, or
    /// give up after `max_attempts`.
    fn callback_failed(&mut self, id: &str, max_attempts: u32, backoff_ms: u64) {
        let now = self.now;
        let st = self.state(id);
        st.attempts += 1;
        st.deliveries = st.deliveries.saturating_sub(1);
        let attempt = st.attempts;
        let gave_up = attempt >= max_attempts;
        if gave_up {
            st.failed = true;
            st.lease = None;
        } else {
            st.lease.as_mut().unwrap().expires_at = now + backoff_ms;
        }
        st.version += 1;
        let error = CALLBACK_ERROR.to_owned();
        let duration_ms = Some(CALLBACK_DURATION_MS);
        self.note(
            id,
            What::CallbackFailed {
                attempt,
                error,
                duration_ms,
            },
        );
        if gave_up {
            self.note(id, What::Failed);
        }
    }

    /// Re-arms a failed state: `None` if there is no such state, `Some(false)` if it
    /// had not failed.
    fn retry(&mut self, id: &str) -> Option<bool> {
        let st = self.states.get_mut(id)?;
        if !st.failed {
            return Some(false);
        }
        st.failed = false;
        st.attempts = 0;
        st.deliveries = 0;
        st.version += 1;
        self.note(id, What::Retried);
        Some(true)
    }

    fn extend(&mut self, id: &str, extend_ms: u64) {
        let expires_at = self.now + extend_ms;
        self.state(id).lease.as_mut().unwrap().expires_at = expires_at;
        // The engine does not count an extension as a change of version.
        self.note(id, What::LeaseExtended { expires_at });
    }

    fn release(&mut self, id: &str) {
        let st = self.state(id);
        st.lease = None;
        st.version += 1;
        self.note(id, What::LeaseReleased);
    }

    /// Pauses or resumes; false if there is no such state.
    fn set_paused(&mut self, id: &str, paused: bool) -> bool {
        let Some(st) = self.states.get_mut(id) else {
            return false;
        };
        if st.paused != paused {
            st.paused = paused;
            st.updated_at = self.now;
            st.version += 1;
            self.note(id, if paused { What::Paused } else { What::Resumed });
        }
        true
    }

    fn ready(&mut self, case: &Case) -> bool {
        let now = self.now;
        match case {
            Case::Recv { chan } => {
                let c = self.chan(chan);
                !c.buf.is_empty() || !c.sendq.is_empty() || c.closed
            }
            Case::Send { chan, .. } => {
                let c = self.chan(chan);
                c.closed || !c.recvq.is_empty() || (c.buf.len() as u64) < c.cap
            }
            Case::Timer { at, .. } => *at <= now,
            Case::Default => false,
        }
    }

    /// Registers a select; `chosen` is the engine's case if it completed at registration.
    fn register(
        &mut self,
        state: &str,
        select: Select,
        chosen: Option<usize>,
    ) -> Result<(), String> {
        let registered = What::SelectRegistered {
            select: select.id.clone(),
        };
        self.note(state, registered);
        let ready: Vec<usize> = (0..select.cases.len())
            .filter(|&i| self.ready(&select.cases[i]))
            .collect();
        let default = select.cases.iter().position(|c| *c == Case::Default);
        let case = match (ready.is_empty(), default) {
            (false, _) => {
                let c = chosen.ok_or("engine blocked a select with a ready case")?;
                if !ready.contains(&c) {
                    return Err(format!("engine chose case {c}, ready were {ready:?}"));
                }
                c
            }
            (true, Some(d)) => {
                if chosen != Some(d) {
                    return Err(format!("engine chose {chosen:?}, expected default {d}"));
                }
                d
            }
            (true, None) => {
                if chosen.is_some() {
                    return Err(format!("engine completed {} with nothing ready", select.id));
                }
                for (i, c) in select.cases.iter().enumerate() {
                    let waiter = MWaiter::Select {
                        state: state.into(),
                        select: select.id.clone(),
                        case: i,
                    };
                    match c {
                        Case::Recv { chan } => self.chan(chan).recvq.push_back(waiter),
                        Case::Send { chan, .. } => self.chan(chan).sendq.push_back(waiter),
                        _ => {}
                    }
                }
                let st = self.state(state);
                st.selects.push(select);
                st.version += 1;
                return Ok(());
            }
        };
        let (data, ok) = match &select.cases[case] {
            Case::Recv { chan } => self.recv(chan),
            Case::Send { chan, data } => (Data::null(), self.send(chan, data.clone())),
            _ => (Data::null(), true),
        };
        self.push_result(state, &select, case, data, ok);
        Ok(())
    }

    /// Appends the result of `select` completing through `case`.
    fn push_result(&mut self, state: &str, select: &Select, case: usize, data: Data, ok: bool) {
        let (op, chan) = op_and_chan(&select.cases[case]);
        let size = json_size(&data);
        let st = self.state(state);
        st.results.push(MResult {
            select: select.id.clone(),
            case,
            data,
            ok,
        });
        st.version += 1;
        let completed = What::CaseCompleted {
            select: select.id.clone(),
            case,
            op: op.into(),
            chan,
            size,
            ok,
        };
        self.note(state, completed);
    }

    fn recv(&mut self, chan: &str) -> (Data, bool) {
        if let Some(v) = self.chan(chan).buf.pop_front() {
            if let Some(w) = self.chan(chan).sendq.pop_front() {
                let sent = self.finish(w, Data::null(), true);
                self.chan(chan).buf.push_back(sent);
            }
            return (v, true);
        }
        if let Some(w) = self.chan(chan).sendq.pop_front() {
            return (self.finish(w, Data::null(), true), true);
        }
        (Data::null(), false)
    }

    fn send(&mut self, chan: &str, v: Data) -> bool {
        if self.chan(chan).closed {
            return false;
        }
        match self.chan(chan).recvq.pop_front() {
            Some(w) => {
                self.finish(w, v, true);
            }
            None => self.chan(chan).buf.push_back(v),
        }
        true
    }

    /// Completes a waiter; returns what it was sending.
    fn finish(&mut self, w: MWaiter, data: Data, ok: bool) -> Data {
        let MWaiter::Select {
            state,
            select,
            case,
        } = w
        else {
            let MWaiter::Detached(v, _) = w else {
                unreachable!()
            };
            return v;
        };
        let st = self.state(&state);
        let i = st.selects.iter().position(|s| s.id == select).unwrap();
        let sel = st.selects.remove(i);
        self.leave_queues(&state, &select);
        let sent = match &sel.cases[case] {
            Case::Send { data, .. } => data.clone(),
            _ => Data::null(),
        };
        self.push_result(&state, &sel, case, data, ok);
        sent
    }

    /// Takes a select out of every channel queue.
    fn leave_queues(&mut self, state: &str, select: &str) {
        for c in self.chans.values_mut() {
            let mine = |x: &MWaiter| matches!(x, MWaiter::Select { state: s, select: id, .. } if s == state && id == select);
            c.sendq.retain(|x| !mine(x));
            c.recvq.retain(|x| !mine(x));
        }
    }

    /// Closes `chan`: the detached sends it discards (value, sent at), or `None` if it
    /// was closed already.
    fn close(&mut self, chan: &str) -> Option<Vec<(Data, u64)>> {
        if self.chan(chan).closed {
            return None;
        }
        self.chan(chan).closed = true;
        while let Some(w) = self.chan(chan).recvq.pop_front() {
            self.finish(w, Data::null(), false);
        }
        let mut discarded = Vec::new();
        while let Some(w) = self.chan(chan).sendq.pop_front() {
            if let MWaiter::Detached(v, at) = &w {
                discarded.push((v.clone(), *at));
            }
            self.finish(w, Data::null(), false);
        }
        self.chan(chan).discarded += discarded.len() as u64;
        Some(discarded)
    }

    /// Fires due timers in (deadline, state, select) order, then expires leases. Among
    /// timers of one select that share the earliest deadline the engine chooses
    /// uniformly, as Go does; `pick(state, select, tied)` says which it chose.
    fn advance(&mut self, pick: impl Fn(&str, &str, &[usize]) -> usize) {
        let mut due: Vec<(u64, String, String, usize)> = Vec::new();
        for (id, st) in &self.states {
            for s in &st.selects {
                let timers: Vec<(u64, usize)> = s
                    .cases
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| match c {
                        Case::Timer { at, .. } => Some((*at, i)),
                        _ => None,
                    })
                    .collect();
                let Some(at) = timers.iter().map(|t| t.0).min() else {
                    continue;
                };
                if at <= self.now {
                    let tied: Vec<usize> =
                        timers.iter().filter(|t| t.0 == at).map(|t| t.1).collect();
                    due.push((at, id.clone(), s.id.clone(), pick(id, &s.id, &tied)));
                }
            }
        }
        due.sort();
        for (_, state, select, case) in due {
            self.finish(
                MWaiter::Select {
                    state,
                    select,
                    case,
                },
                Data::null(),
                true,
            );
        }
        let now = self.now;
        let expired: Vec<String> = self
            .states
            .iter()
            .filter(|(_, st)| st.lease.as_ref().is_some_and(|l| l.expires_at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let st = self.state(&id);
            st.lease = None;
            st.version += 1;
            self.note(&id, What::LeaseExpired);
        }
        let retained: Vec<String> = self
            .states
            .iter()
            .filter(|(_, st)| {
                st.status() == Status::Done
                    && st.retain_ms > 0
                    && st.updated_at + st.retain_ms <= now
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in retained {
            self.states.remove(&id);
            self.deleted_by_retention += 1;
        }
        self.keys.retain(|_, k| k.3 > now);
    }

    /// One batch of a bulk delete: how many it deletes, and where the next batch
    /// starts. The batch walks the matching states when the status is indexed (any but
    /// `waiting`), else every state of the prefix, and names its last pick as the next
    /// start when the walk has entries after it.
    fn delete_states(
        &mut self,
        prefix: &str,
        status: Option<&str>,
        limit: u32,
        after: Option<&str>,
    ) -> (u64, Option<String>) {
        let matches = |st: &MState| match status {
            None => true,
            Some("paused") => st.paused,
            Some(s) => Status::parse(s) == Some(st.status()),
        };
        let walks_every_state = status.is_none_or(|s| s == "waiting");
        let walked: Vec<(String, bool)> = self
            .states
            .iter()
            .filter(|(id, _)| id.starts_with(prefix) && after.is_none_or(|a| id.as_str() > a))
            .map(|(id, st)| (id.clone(), matches(st)))
            .filter(|(_, matching)| *matching || walks_every_state)
            .collect();
        let picked: Vec<String> = walked
            .iter()
            .filter(|(_, matching)| *matching)
            .map(|(id, _)| id.clone())
            .take(limit as usize)
            .collect();
        let next = match picked.last() {
            Some(last) if picked.len() == limit as usize => {
                walked.iter().any(|(id, _)| id > last).then(|| last.clone())
            }
            _ => None,
        };
        let mut count = 0;
        for id in picked {
            let st = self.states.remove(&id).unwrap();
            for s in &st.selects {
                self.leave_queues(&id, &s.id);
            }
            count += 1;
        }
        self.deleted_by_request += count;
        (count, next)
    }
}

// --- Driving both --------------------------------------------------------------------

struct Run {
    world: World,
    model: Model,
    next_value: u64,
    next_token: u128,
    received: BTreeSet<u64>,
}

impl Run {
    fn new(caps: [u64; 3], history_limit: u32, max_deliveries: u32, retain_ms: u64) -> Run {
        let mut run = Run {
            world: World::new(),
            model: Model::default(),
            next_value: 0,
            next_token: 0,
            received: BTreeSet::new(),
        };
        run.world.history_limit = history_limit;
        run.model.history_limit = history_limit;
        run.model.max_deliveries = max_deliveries;
        run.model.retain_ms = retain_ms;
        run.model.now = run.world.now;
        for (name, cap) in CHANS.iter().zip(caps) {
            run.world.make(name, cap);
            run.model.chan(name).cap = cap;
        }
        run
    }

    /// Ends a command in the model, with the dispatcher's tokens the engine drew.
    fn settle(&mut self) {
        let world = &self.world;
        let drawn = |id: &str| {
            let state = world.exists(id).then(|| world.state(id))?;
            state.lease.map(|l| l.token)
        };
        self.model.settle(drawn);
    }

    /// Applies one command to the engine; the model follows it at the same index.
    fn apply(&mut self, op: Op) -> Applied {
        self.model.now = self.world.now;
        self.model.index = self.world.index;
        self.world.apply(op)
    }

    fn case(&mut self, spec: &CaseSpec) -> Case {
        match spec {
            CaseSpec::Recv(c) => recv(CHANS[*c]),
            CaseSpec::Send(c) => {
                self.next_value += 1;
                send(CHANS[*c], json!(self.next_value))
            }
            CaseSpec::Timer(ms) => after(*ms),
            CaseSpec::Default => default(),
        }
    }

    fn selects(&mut self, specs: &[Vec<CaseSpec>], first_id: usize) -> Vec<Select> {
        let mut out = Vec::new();
        for (i, cases) in specs.iter().enumerate() {
            let cases = cases.iter().map(|c| self.case(c)).collect();
            out.push(sel(&format!("g{}", first_id + i), cases));
        }
        out
    }

    /// The case each select completed through at registration, from the engine's new results.
    fn chosen(&self, before: &State, after: &State, id: &str) -> Option<usize> {
        after
            .results
            .iter()
            .find(|r| r.seq >= before.next_seq && r.select == id)
            .map(|r| r.case)
    }

    fn register_all(
        &mut self,
        state: &str,
        before: &State,
        selects: Vec<Select>,
    ) -> Result<(), String> {
        let after = self.world.state(state);
        for mut s in selects {
            let chosen = self.chosen(before, &after, &s.id);
            resolve(&mut s, self.model.now);
            // A select that blocked may have completed later in the same command (rule 7):
            // the model decides that itself, so only a completion at registration counts.
            let chosen = if self.model_ready_or_default(&s) {
                chosen
            } else {
                None
            };
            self.model.register(state, s, chosen)?;
        }
        Ok(())
    }

    fn model_ready_or_default(&mut self, s: &Select) -> bool {
        s.cases
            .iter()
            .any(|c| *c == Case::Default || self.model.ready(c))
    }

    /// Lets time pass to `now + ms` in both: the engine ticks, and the model fires the
    /// same timers, following the engine's choice among tied ones.
    fn pass(&mut self, ms: u64) -> Result<(), String> {
        self.world.now += ms;
        let reply = self.apply(Op::Tick).reply;
        let world = &self.world;
        self.model.advance(|state, select, tied| {
            engine_timer_choice(world, state, select)
                .filter(|case| tied.contains(case))
                .unwrap_or(tied[0])
        });
        self.settle();
        expect(reply, Response::Done)
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        self.pass(1)?;
        self.follow(step)?;
        self.settle();
        Ok(())
    }

    fn follow(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Create {
                state,
                selects,
                priority,
                callback,
            } => self.create(STATES[*state], selects, *priority, *callback),
            Step::DetachedSend { chan } => self.detached_send(CHANS[*chan]),
            Step::KeyedSend { chan, key, retry } => self.keyed_send(*chan, *key, *retry),
            Step::TryRecv { chan } => {
                let reply = self
                    .apply(Op::Recv {
                        chan: CHANS[*chan].into(),
                        mode: RecvMode::Try,
                    })
                    .reply;
                if !self.model.ready(&recv(CHANS[*chan])) {
                    return expect_err(reply, "would_block");
                }
                let (data, ok) = self.model.recv(CHANS[*chan]);
                if ok {
                    self.note_received(&data)?;
                }
                expect(reply, Response::Received { data, ok })
            }
            Step::Close { chan } => {
                let name = CHANS[*chan];
                let reply = self.apply(Op::CloseChan { name: name.into() }).reply;
                match self.model.close(name) {
                    Some(discarded) => {
                        let count = discarded.len() as u64;
                        let values = (discarded.into_iter())
                            .map(|(data, sent_at)| DiscardedSend { data, sent_at })
                            .collect();
                        expect(reply, Response::Closed(Discarded { values, count }))
                    }
                    None => expect_err(reply, "closed"),
                }
            }
            Step::Advance { ms } => self.pass(*ms),
            Step::PollAndUpdate {
                min_priority,
                add,
                priority,
            } => self.poll_and_update(*min_priority, add.as_deref(), *priority),
            Step::PollAndAbandon {
                prefix,
                min_priority,
                limit,
                lease_ms,
            } => {
                let prefix = prefix.map_or("", |s| STATES[s]);
                self.poll(prefix, *min_priority, *limit, *lease_ms)
                    .map(drop)
            }
            Step::Answer {
                pick,
                add,
                priority,
            } => self.answer(self.target(*pick, leased), add.as_deref(), *priority),
            Step::Extend { pick, ms } => self.extend(self.target(*pick, leased), *ms),
            Step::Release { pick } => self.release(self.target(*pick, leased)),
            Step::Fail {
                pick,
                max_attempts,
                backoff_ms,
            } => {
                let id = self.target(*pick, leased);
                self.callback_failed(id, *max_attempts, *backoff_ms)
            }
            Step::Retry { pick } => self.retry(self.target(*pick, |s| s.failed)),
            Step::Pause { state } => self.set_paused(STATES[*state], true),
            Step::Resume { state } => self.set_paused(STATES[*state], false),
            Step::Delete { state } => {
                let id = STATES[*state];
                let reply = self.apply(Op::DeleteState { id: id.into() }).reply;
                match self.model.states.remove(id) {
                    None => expect_err(reply, "not_found"),
                    Some(st) => {
                        for s in &st.selects {
                            self.model.leave_queues(id, &s.id);
                        }
                        self.model.deleted_by_request += 1;
                        expect(reply, Response::Done)
                    }
                }
            }
            Step::DeleteStates {
                prefix,
                status,
                limit,
                after,
            } => {
                let prefix = prefix.map_or("", |s| STATES[s]);
                let after = after.map(|s| STATES[s]);
                let reply = self
                    .apply(Op::DeleteStates {
                        prefix: prefix.into(),
                        status: status.map(str::to_owned),
                        limit: *limit,
                        after: after.map(str::to_owned),
                    })
                    .reply;
                let (count, next) = self.model.delete_states(prefix, *status, *limit, after);
                expect(reply, Response::Deleted { count, next })
            }
        }
    }

    fn create(
        &mut self,
        id: &str,
        specs: &[Vec<CaseSpec>],
        priority: u8,
        callback: bool,
    ) -> Result<(), String> {
        let selects = self.selects(specs, 0);
        let exists = self.model.states.contains_key(id);
        let applied = self.apply(Op::CreateState {
            id: id.into(),
            data: Data::null(),
            selects: selects.clone(),
            callback: callback.then(|| Callback {
                url: "http://process.test/resume".into(),
                timeout_ms: CALLBACK_TIMEOUT_MS,
            }),
            priority,
            max_deliveries: self.model.max_deliveries,
            retain_ms: self.model.retain_ms,
        });
        if exists {
            return expect_err(applied.reply, "exists");
        }
        applied.reply.map_err(|e| format!("create failed: {e:?}"))?;
        let (max_deliveries, retain_ms) = (self.model.max_deliveries, self.model.retain_ms);
        let st = MState::new(
            priority,
            callback,
            max_deliveries,
            retain_ms,
            self.model.now,
        );
        self.model.states.insert(id.into(), st);
        self.model.note(id, What::Created);
        let before = State {
            next_seq: 1,
            ..self.world.state(id)
        };
        self.register_all(id, &before, selects)
    }

    /// A keyed detached send: the model decides whether it is a repeat (the first
    /// reply, nothing sent), a reuse (refused) or new (sent and remembered).
    fn keyed_send(&mut self, chan: usize, key: usize, retry: bool) -> Result<(), String> {
        let live = self.model.keys.get(&key).cloned();
        let (chan, value) = match (&live, retry) {
            (Some((c, v, _, _)), true) => (*c, *v),
            _ => {
                self.next_value += 1;
                (chan, self.next_value)
            }
        };
        let op = Op::Send {
            chan: CHANS[chan].into(),
            data: Data::from(json!(value)),
            mode: SendMode::Detached,
        };
        let digest = format!("{op:?}").into_bytes();
        let reply = self
            .apply(Op::Keyed {
                key: format!("key-{key}"),
                digest,
                window_ms: KEY_WINDOW_MS,
                op: Box::new(op),
            })
            .reply;
        match live {
            Some((c, v, first, _)) if (c, v) == (chan, value) => {
                let got = reply.map_err(|e| e.code().to_owned());
                if got != first {
                    return Err(format!(
                        "repeat of key {key}: {got:?}, first reply {first:?}"
                    ));
                }
                Ok(())
            }
            Some(_) => expect_err(reply, "idempotency_key_reused"),
            None => {
                let expires_at = self.model.now + KEY_WINDOW_MS;
                // The model's own send decides the reply; the engine must agree.
                let name = CHANS[chan];
                let v = Data::from(json!(value));
                let want = if self.model.chan(name).closed {
                    Err("closed".to_owned())
                } else if self.model.ready(&Case::Send {
                    chan: name.into(),
                    data: v.clone(),
                }) {
                    self.model.send(name, v);
                    Ok(Response::Sent)
                } else {
                    let now = self.model.now;
                    self.model
                        .chan(name)
                        .sendq
                        .push_back(MWaiter::Detached(v, now));
                    Ok(Response::Parked)
                };
                let got = reply.map_err(|e| e.code().to_owned());
                if got != want {
                    return Err(format!("keyed send: {got:?}, model {want:?}"));
                }
                self.model.keys.insert(key, (chan, value, want, expires_at));
                Ok(())
            }
        }
    }

    fn detached_send(&mut self, chan: &str) -> Result<(), String> {
        self.next_value += 1;
        let v = Data::from(json!(self.next_value));
        let reply = self
            .apply(Op::Send {
                chan: chan.into(),
                data: v.clone(),
                mode: SendMode::Detached,
            })
            .reply;
        let ready = self.model.ready(&Case::Send {
            chan: chan.into(),
            data: v.clone(),
        });
        if self.model.chan(chan).closed {
            return expect_err(reply, "closed");
        }
        if ready {
            self.model.send(chan, v);
            expect(reply, Response::Sent)
        } else {
            let now = self.model.now;
            let sendq = &mut self.model.chan(chan).sendq;
            sendq.push_back(MWaiter::Detached(v, now));
            expect(reply, Response::Parked)
        }
    }

    /// A poll as the leader makes it: it reads the candidates from its store (they must
    /// be the model's, in the model's order) and, if there are any, proposes a lease
    /// command, which must lease those same states. Returns the leased states.
    fn poll(
        &mut self,
        prefix: &str,
        min_priority: u8,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<State>, String> {
        let mut want = self.model.poll_order(prefix, min_priority);
        want.truncate(limit);
        let ids = candidates(&self.world.store, prefix, min_priority, limit).unwrap();
        if ids != want {
            return Err(format!(
                "poll({prefix:?}, min_priority {min_priority}, limit {limit}) chose {ids:?}, model {want:?}"
            ));
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let leases: Vec<(String, Uuid)> = ids
            .iter()
            .map(|id| {
                self.next_token += 1;
                (id.clone(), Uuid::from_u128(self.next_token))
            })
            .collect();
        let reply = self.apply(Op::LeasePending {
            prefix: prefix.to_owned(),
            min_priority,
            tokens: leases.iter().map(|(_, token)| *token).collect(),
            lease_ms,
        });
        let Ok(Response::States(got)) = reply.reply else {
            return Err(format!("lease failed: {:?}", reply.reply));
        };
        let got_ids: Vec<&str> = got.iter().map(|s| s.id.as_str()).collect();
        if got_ids != ids {
            return Err(format!("leased {got_ids:?}, asked for {ids:?}"));
        }
        for (id, token) in leases {
            self.model.lease(&id, token, lease_ms);
        }
        self.settle();
        Ok(got)
    }

    fn poll_and_update(
        &mut self,
        min_priority: u8,
        add: Option<&[CaseSpec]>,
        priority: Option<u8>,
    ) -> Result<(), String> {
        let got = self.poll("", min_priority, 1, 10_000)?;
        match got.first() {
            Some(leased) => self.answer(&leased.id.clone(), add, priority),
            None => Ok(()),
        }
    }

    /// The holder of `id`'s lease updates it: it consumes the results it was given and
    /// sends back the selects it saw blocked (some may have completed since), plus a
    /// new one if `add`.
    fn answer(
        &mut self,
        id: &str,
        add: Option<&[CaseSpec]>,
        priority: Option<u8>,
    ) -> Result<(), String> {
        let token = self.token(id);
        let error = self.lease_error(id);
        let (mut written, fresh_id) = match self.model.states.get(id) {
            Some(st) if error.is_none() => {
                let lease = st.lease.as_ref().unwrap();
                let taken: BTreeSet<&str> = (lease.seen.iter().map(|s| s.id.as_str()))
                    .chain(st.selects.iter().map(|s| s.id.as_str()))
                    .chain(st.results.iter().map(|r| r.select.as_str()))
                    .collect();
                let fresh_id = (0..)
                    .find(|i| !taken.contains(format!("g{i}").as_str()))
                    .unwrap();
                (lease.seen.clone(), fresh_id)
            }
            _ => (Vec::new(), 0),
        };
        written.extend(
            add.map(|a| self.selects(&[a.to_vec()], fresh_id))
                .unwrap_or_default(),
        );
        let before = self.model.states.get(id).map(|_| self.world.state(id));
        let reply = self.apply(Op::UpdateState {
            id: id.into(),
            token,
            data: Some(Data::null()),
            selects: Some(written.clone()),
            callback: None,
            priority,
            max_deliveries: None,
            retain_ms: None,
        });
        if let Some(code) = error {
            return expect_err(reply.reply, code);
        }
        reply.reply.map_err(|e| format!("update failed: {e:?}"))?;
        let st = &self.model.states[id];
        let delivered = st.lease.as_ref().unwrap().delivered;
        let values: Vec<Data> = (st.results[..delivered].iter())
            .filter(|r| r.ok && matches!(r.data.to_value(), Ok(v) if v.is_u64()))
            .map(|r| r.data.clone())
            .collect();
        for v in &values {
            self.note_received(v)?;
        }
        let fresh = self.model.update(id, written, priority);
        self.register_all(id, &before.unwrap(), fresh)
    }

    /// The state an operation targets: a third of the picks name any state (which may
    /// not fit, or may not exist), the rest one that fits if any does.
    fn target(&self, pick: usize, fits: fn(&MState) -> bool) -> &'static str {
        let fit: Vec<&'static str> = STATES
            .into_iter()
            .filter(|id| self.model.states.get(*id).is_some_and(fits))
            .collect();
        if pick < STATES.len() || fit.is_empty() {
            STATES[pick % STATES.len()]
        } else {
            fit[pick % fit.len()]
        }
    }

    /// The state's live token, else its last one (stale), else one never issued.
    fn token(&self, id: &str) -> Uuid {
        let st = self.model.states.get(id);
        let live = st.and_then(|s| s.lease.as_ref()).map(|l| l.token);
        live.or(st.and_then(|s| s.last_token))
            .unwrap_or(Uuid::nil())
    }

    fn callback_failed(
        &mut self,
        id: &str,
        max_attempts: u32,
        backoff_ms: u64,
    ) -> Result<(), String> {
        let token = self.token(id);
        let reply = self
            .apply(Op::CallbackFailed {
                id: id.into(),
                token,
                error: CALLBACK_ERROR.into(),
                max_attempts,
                backoff_ms,
                duration_ms: CALLBACK_DURATION_MS,
            })
            .reply;
        if let Some(code) = self.lease_error(id) {
            return expect_err(reply, code);
        }
        self.model.callback_failed(id, max_attempts, backoff_ms);
        expect(reply, Response::Done)
    }

    fn retry(&mut self, id: &str) -> Result<(), String> {
        let reply = self.apply(Op::RetryFailed { id: id.into() }).reply;
        match self.model.retry(id) {
            None => expect_err(reply, "not_found"),
            Some(false) => expect_err(reply, "conflict"),
            Some(true) => match reply {
                Ok(Response::State(s)) if !s.failed => Ok(()),
                other => Err(format!("retry: got {other:?}")),
            },
        }
    }

    /// Why an operation under `id`'s lease must fail, if it must.
    fn lease_error(&self, id: &str) -> Option<&'static str> {
        match self.model.states.get(id) {
            None => Some("not_found"),
            Some(st) if st.lease.is_none() => Some("lease_lost"),
            Some(_) => None,
        }
    }

    fn extend(&mut self, id: &str, extend_ms: u64) -> Result<(), String> {
        let token = self.token(id);
        let reply = self
            .apply(Op::ExtendLease {
                id: id.into(),
                token,
                extend_ms,
            })
            .reply;
        if let Some(code) = self.lease_error(id) {
            return expect_err(reply, code);
        }
        self.model.extend(id, extend_ms);
        match reply {
            Ok(Response::Lease(l))
                if l.token == token && l.expires_at == self.model.now + extend_ms =>
            {
                Ok(())
            }
            other => Err(format!("extend by {extend_ms}: got {other:?}")),
        }
    }

    fn release(&mut self, id: &str) -> Result<(), String> {
        let token = self.token(id);
        let reply = self
            .apply(Op::ReleaseLease {
                id: id.into(),
                token,
            })
            .reply;
        if let Some(code) = self.lease_error(id) {
            return expect_err(reply, code);
        }
        self.model.release(id);
        expect(reply, Response::Done)
    }

    fn set_paused(&mut self, id: &str, paused: bool) -> Result<(), String> {
        let op = if paused {
            Op::Pause { id: id.into() }
        } else {
            Op::Resume { id: id.into() }
        };
        let reply = self.apply(op).reply;
        if !self.model.set_paused(id, paused) {
            return expect_err(reply, "not_found");
        }
        match reply {
            Ok(Response::State(s)) if s.paused == paused => Ok(()),
            other => Err(format!("paused {paused}: got {other:?}")),
        }
    }

    fn note_received(&mut self, data: &Data) -> Result<(), String> {
        let v = data
            .to_value()
            .ok()
            .and_then(|v| v.as_u64())
            .ok_or("received a value nobody sent")?;
        if !self.received.insert(v) {
            return Err(format!("value {v} received twice"));
        }
        Ok(())
    }
}

fn leased(state: &MState) -> bool {
    state.lease.is_some()
}

fn resolve(select: &mut Select, now: u64) {
    for c in &mut select.cases {
        if let Case::Timer {
            at,
            after_ms: Some(ms),
        } = c
        {
            *at = now + *ms;
        }
    }
}

fn expect(reply: Result<Response, Error>, want: Response) -> Result<(), String> {
    match reply {
        Ok(got) if got == want => Ok(()),
        other => Err(format!("expected {want:?}, got {other:?}")),
    }
}

fn expect_err(reply: Result<Response, Error>, code: &str) -> Result<(), String> {
    match reply {
        Err(e) if e.code() == code => Ok(()),
        other => Err(format!("expected error {code}, got {other:?}")),
    }
}

// --- Comparison and invariants --------------------------------------------------------

fn compare(run: &mut Run) -> Result<(), String> {
    for (id, m) in &run.model.states {
        let e = run.world.state(id);
        compare_state(&run.world, id, &e, m)?;
    }
    for id in STATES {
        if run.model.states.contains_key(id) {
            continue;
        }
        if run.world.exists(id) {
            return Err(format!("{id}: engine has it, model does not"));
        }
        if !history::read(&run.world.store, id, None, usize::MAX)
            .unwrap()
            .is_empty()
        {
            return Err(format!("{id}: deleted (or never created) but has history"));
        }
    }
    let polled = candidates(&run.world.store, "", 0, STATES.len() + 1).unwrap();
    let want = run.model.poll_order("", 0);
    if polled != want {
        return Err(format!("poll order {polled:?} != model {want:?}"));
    }
    compare_chans(run)?;
    let kept = slct::engine::counts(&run.world.store).unwrap();
    let got = (
        kept.deleted_by_request,
        kept.deleted_by_retention,
        kept.discarded,
    );
    let discarded = run.model.chans.values().map(|c| c.discarded).sum();
    let want = (
        run.model.deleted_by_request,
        run.model.deleted_by_retention,
        discarded,
    );
    if got != want {
        return Err(format!(
            "(deleted by request, by retention, sends discarded) {got:?} != model {want:?}"
        ));
    }
    invariants(run)
}

fn compare_state(world: &World, id: &str, e: &State, m: &MState) -> Result<(), String> {
    let e_results: Vec<MResult> = e
        .results
        .iter()
        .map(|r| MResult {
            select: r.select.clone(),
            case: r.case,
            data: r.data.clone(),
            ok: r.ok,
        })
        .collect();
    if e_results != m.results {
        return Err(format!(
            "{id}: engine results {e_results:?} != model {:?}",
            m.results
        ));
    }
    let e_sel: Vec<&str> = e.selects.iter().map(|s| s.id.as_str()).collect();
    let m_sel: Vec<&str> = m.selects.iter().map(|s| s.id.as_str()).collect();
    if e_sel != m_sel {
        return Err(format!("{id}: engine blocked {e_sel:?} != model {m_sel:?}"));
    }
    let lease = e.lease.as_ref().map(|l| (l.token, l.expires_at));
    let got = (e.status(), e.paused, e.priority, e.pending_since, lease);
    let m_lease = m.lease.as_ref().map(|l| (l.token, l.expires_at));
    let want = (m.status(), m.paused, m.priority, m.pending_since, m_lease);
    if got != want {
        return Err(format!(
            "{id}: engine (status, paused, priority, pending_since, lease) {got:?} != model {want:?}"
        ));
    }
    let got = (
        e.callback.is_some(),
        e.attempts,
        e.deliveries,
        e.max_deliveries,
    );
    let want = (m.callback, m.attempts, m.deliveries, m.max_deliveries);
    if got != want {
        return Err(format!(
            "{id}: engine (callback, attempts, deliveries, max_deliveries) {got:?} != model {want:?}"
        ));
    }
    let dead_letter = e.failed && e.last_error.as_deref() == Some("max deliveries reached");
    if m.failed && m.attempts == 0 && !dead_letter {
        return Err(format!(
            "{id}: failed without a failed callback attempt, but last_error is {:?}",
            e.last_error
        ));
    }
    if e.version != m.version {
        return Err(format!(
            "{id}: engine version {} != model {}",
            e.version, m.version
        ));
    }
    let mut events = history::read(&world.store, id, None, usize::MAX).unwrap();
    events.reverse();
    if !events.iter().eq(m.history.iter()) {
        return Err(format!(
            "{id}: engine history (oldest first)\n{events:#?}\n!= model\n{:#?}",
            m.history
        ));
    }
    Ok(())
}

fn compare_chans(run: &mut Run) -> Result<(), String> {
    for name in CHANS {
        let m = run.model.chan(name).clone();
        let e = run.world.chan(name).unwrap();
        let got = (e.len, e.senders, e.receivers, e.closed, e.discarded);
        let want = (
            m.buf.len() as u64,
            m.sendq.len() as u64,
            m.recvq.len() as u64,
            m.closed,
            m.discarded,
        );
        if got != want {
            return Err(format!(
                "chan {name}: engine (len, senders, receivers, closed, discarded) {got:?} != model {want:?}"
            ));
        }
        let buffered = slct::engine::buffered(&run.world.store, name).unwrap();
        if !m.buf.iter().eq(buffered.iter()) {
            return Err(format!(
                "chan {name}: buffer {buffered:?} != model {:?}",
                m.buf
            ));
        }
    }
    Ok(())
}

/// The timer case through which the engine last completed `select` of `state`.
fn engine_timer_choice(world: &World, state: &str, select: &str) -> Option<usize> {
    if !world.exists(state) {
        return None;
    }
    let results = world.state(state).results;
    let fired = results
        .iter()
        .rev()
        .find(|r| r.select == select && r.op == "timer");
    fired.map(|r| r.case)
}

/// The running totals kept for metrics equal a full count of the tables.
fn counts_match_the_tables(world: &World) -> Result<(), String> {
    let mut tally = slct::engine::Counts::default();
    for entry in world.store.scan_from(Table::States, &[]) {
        let state: State = codec::decode(&entry.unwrap().1).unwrap();
        use slct::engine::types::Status::*;
        *match state.status() {
            Waiting => &mut tally.waiting,
            Pending => &mut tally.pending,
            Leased => &mut tally.leased,
            Done => &mut tally.done,
            Failed => &mut tally.failed,
        } += 1;
    }
    tally.senders = world.store.len(Table::Senders) as u64;
    tally.receivers = world.store.len(Table::Receivers) as u64;
    // A queue's head may wait in its channel's record instead of the queue's table.
    for entry in world.store.scan_from(Table::Chans, &[]) {
        let chan: Chan = codec::decode(&entry.unwrap().1).unwrap();
        tally.senders += u64::from(chan.head_sender.is_some());
        tally.receivers += u64::from(chan.head_receiver.is_some());
    }
    tally.timers = world.store.len(Table::Timers) as u64;
    let kept = slct::engine::counts(&world.store).unwrap();
    // Deletions are not in the tables: the model counts them.
    tally.deleted_by_request = kept.deleted_by_request;
    tally.deleted_by_retention = kept.deleted_by_retention;
    tally.discarded = kept.discarded;
    if kept != tally {
        return Err(format!("counters {kept:?} != tables {tally:?}"));
    }
    Ok(())
}

fn invariants(run: &Run) -> Result<(), String> {
    counts_match_the_tables(&run.world)?;
    for name in CHANS {
        let mut selects_in_queues = BTreeSet::new();
        let (mut senders, mut receivers) = (0, 0);
        for (side, count) in [(Side::Send, &mut senders), (Side::Recv, &mut receivers)] {
            for waiter in slct::engine::queued(&run.world.store, name, side).unwrap() {
                *count += 1;
                if let Waiter::Select { state, select, .. } = waiter {
                    let blocked = run.world.exists(&state)
                        && run
                            .world
                            .state(&state)
                            .selects
                            .iter()
                            .any(|s| s.id == select);
                    if !blocked {
                        return Err(format!(
                            "completed select {state}/{select} still queued on {name}"
                        ));
                    }
                    selects_in_queues.insert((state, select));
                }
            }
        }
        if senders > 0 && receivers > 0 && selects_in_queues.len() != 1 {
            return Err(format!(
                "chan {name} has blocked senders and receivers of different selects"
            ));
        }
    }
    for id in run.model.states.keys() {
        let st = run.world.state(id);
        for r in &st.results {
            if r.op == "timer" && r.at < st.created_at {
                return Err(format!("{id}: timer fired before its state existed"));
            }
        }
    }
    Ok(())
}

fn cases_from_env(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    // 300 programs by default; PROPTEST_CASES=N runs more.
    #![proptest_config(ProptestConfig { cases: cases_from_env(300), ..ProptestConfig::default() })]

    #[test]
    fn the_engine_agrees_with_the_reference_model(
        caps in [0u64..3, 0u64..3, 0u64..3],
        history_limit in prop::sample::select(&HISTORY_LIMITS[..]),
        max_deliveries in prop::sample::select(&MAX_DELIVERIES[..]),
        retain_ms in prop::sample::select(&RETAIN_MS[..]),
        steps in prop::collection::vec(step(), 1..70),
    ) {
        let mut run = Run::new(caps, history_limit, max_deliveries, retain_ms);
        for (i, s) in steps.iter().enumerate() {
            let outcome = run.step(s).and_then(|_| compare(&mut run));
            prop_assert!(outcome.is_ok(), "step {i} {s:?}: {}", outcome.unwrap_err());
        }
    }
}

/// Timers never fire early: a select waiting on a timer alone completes exactly at its
/// deadline, whatever the ticks in between.
#[test]
fn timers_never_fire_before_their_deadline() {
    proptest!(|(deadline in 1u64..500, ticks in prop::collection::vec(1u64..100, 1..20))| {
        let mut w = World::new();
        w.create("p", vec![sel("g", vec![after(deadline)])]);
        for t in ticks {
            let now = w.now + t;
            w.tick_to(now);
            let st = w.state("p");
            match st.results.first() {
                None => prop_assert!(now < T0 + deadline),
                Some(r) => prop_assert!(r.at >= T0 + deadline && now >= T0 + deadline),
            }
        }
    });
}

/// No value sent is received twice across random rendezvous of many states.
#[test]
fn values_are_received_at_most_once_and_exactly_once_when_sent() {
    let mut w = World::new();
    let mut sent = BTreeSet::new();
    for i in 0..200u64 {
        if i % 3 == 0 {
            w.create(&format!("r{i}"), vec![sel("g", vec![recv("c"), recv("d")])]);
        } else {
            let chan = if i % 2 == 0 { "c" } else { "d" };
            w.create(&format!("s{i}"), vec![sel("g", vec![send(chan, json!(i))])]);
        }
    }
    let mut received = BTreeSet::new();
    for i in 0..200u64 {
        let (id, state) = if i % 3 == 0 {
            (format!("r{i}"), true)
        } else {
            (format!("s{i}"), false)
        };
        let st = w.state(&id);
        if let Some(r) = st.results.first() {
            if state {
                assert!(
                    received.insert(r.data.to_value().unwrap().as_u64().unwrap()),
                    "received twice"
                );
            } else {
                sent.insert(i);
            }
        }
    }
    assert_eq!(sent, received, "every completed send was received, once");
}
