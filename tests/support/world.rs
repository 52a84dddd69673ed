//! A tiny world for engine scenarios: an in-memory store, a clock that moves only when a
//! scenario says so, and short constructors for cases and selects.

#![allow(dead_code)]

use serde_json::Value;
use slct::codec;
use slct::engine::types::{Case, ChanView, Select, State};
use slct::engine::{self, Applied, Command, Data, Error, MemStore, Op, Response, Tx};
use slct::engine::{ParkedOp, RecvMode, SendMode};
use uuid::Uuid;

/// Log time at which every scenario starts.
pub const T0: u64 = 1_700_000_000_000;

pub struct World {
    pub store: MemStore,
    pub now: u64,
    pub seed: u64,
    /// The Raft index the next command is applied at.
    pub index: u64,
    /// Events kept per state.
    pub history_limit: u32,
    /// The leader term of the next command.
    pub term: u64,
}

impl World {
    pub fn new() -> Self {
        World {
            store: MemStore::new(),
            now: T0,
            seed: 1,
            index: 1,
            history_limit: 100,
            term: 1,
        }
    }

    /// Applies one op at the current time and commits it.
    pub fn apply(&mut self, op: Op) -> Applied {
        self.seed += 1;
        let cmd = Command {
            now: self.now,
            seed: self.seed,
            history_limit: self.history_limit,
            op,
        };
        let mut tx = Tx::new(&self.store);
        let applied = engine::apply(&mut tx, cmd, self.index, self.term)
            .expect("storage never fails in memory");
        self.index += 1;
        let writes = tx.into_writes();
        self.store.commit(writes);
        applied
    }

    /// Applies an op that must succeed.
    pub fn ok(&mut self, op: Op) -> Response {
        let applied = self.apply(op.clone());
        applied
            .reply
            .unwrap_or_else(|e| panic!("{op:?} failed: {e:?}"))
    }

    /// Applies an op that must fail.
    pub fn err(&mut self, op: Op) -> Error {
        match self.apply(op.clone()).reply {
            Ok(r) => panic!("{op:?} should fail, got {r:?}"),
            Err(e) => e,
        }
    }

    pub fn create(&mut self, id: &str, selects: Vec<Select>) -> State {
        match self.ok(Op::CreateState {
            id: id.into(),
            data: Data::null(),
            selects,
            callback: None,
            priority: 0,
            max_deliveries: 0,
            retain_ms: 0,
        }) {
            Response::State(s) => *s,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn state(&self, id: &str) -> State {
        let tx = Tx::new(&self.store);
        let bytes = tx
            .get(slct::engine::Table::States, id.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("no state {id}"));
        codec::decode(&bytes).unwrap()
    }

    pub fn exists(&self, id: &str) -> bool {
        Tx::new(&self.store)
            .get(slct::engine::Table::States, id.as_bytes())
            .unwrap()
            .is_some()
    }

    pub fn chan(&self, name: &str) -> Option<ChanView> {
        engine::chan_view(&self.store, name).unwrap()
    }

    /// Advances the clock and applies a tick.
    pub fn tick_to(&mut self, now: u64) -> Applied {
        self.now = now;
        self.apply(Op::Tick)
    }

    /// Detached send: parks if nobody takes it.
    pub fn send(&mut self, chan: &str, data: Value) -> Response {
        self.ok(Op::Send {
            chan: chan.into(),
            data: data.into(),
            mode: engine::SendMode::Detached,
        })
    }

    /// Try-receive.
    pub fn try_recv(&mut self, chan: &str) -> Result<Response, Error> {
        self.apply(Op::Recv {
            chan: chan.into(),
            mode: engine::RecvMode::Try,
        })
        .reply
    }

    pub fn close(&mut self, chan: &str) -> Result<Response, Error> {
        self.apply(Op::CloseChan { name: chan.into() }).reply
    }

    pub fn make(&mut self, chan: &str, capacity: u64) -> Response {
        self.ok(Op::MakeChan {
            name: chan.into(),
            capacity,
        })
    }

    /// Leases the oldest pending polled states (up to `n`) for `lease_ms`.
    pub fn poll(&mut self, n: usize, lease_ms: u64) -> Vec<State> {
        match self.ok(Op::LeasePending {
            prefix: String::new(),
            min_priority: 0,
            tokens: (0..n).map(|_| Uuid::new_v4()).collect(),
            lease_ms,
        }) {
            Response::States(states) => states,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn update(&mut self, state: &State, selects: Vec<Select>) -> Result<Response, Error> {
        let token = state.lease.as_ref().expect("leased").token;
        self.apply(Op::UpdateState {
            id: state.id.clone(),
            token,
            data: Some(state.data.clone()),
            selects: Some(selects),
            callback: Some(state.callback.clone()),
            priority: None,
            max_deliveries: None,
            retain_ms: None,
        })
        .reply
    }
}

pub fn recv(chan: &str) -> Case {
    Case::Recv { chan: chan.into() }
}

pub fn send(chan: &str, data: Value) -> Case {
    Case::Send {
        chan: chan.into(),
        data: data.into(),
    }
}

pub fn timer_at(at: u64) -> Case {
    Case::Timer { at, after_ms: None }
}

pub fn after(ms: u64) -> Case {
    Case::Timer {
        at: 0,
        after_ms: Some(ms),
    }
}

pub fn default() -> Case {
    Case::Default
}

pub fn sel(id: &str, cases: Vec<Case>) -> Select {
    Select::new(id, cases)
}

/// The selects of a state as a client would send them back.
pub fn written(state: &State) -> Vec<Select> {
    state.selects.iter().map(Select::as_written).collect()
}

/// A parked HTTP receive on `chan`, withdrawn at `deadline` (log time).
pub fn park_recv(chan: &str, id: Uuid, deadline: u64) -> Op {
    Op::Recv {
        chan: chan.into(),
        mode: RecvMode::Park(ParkedOp { id, deadline }),
    }
}

/// A try-send of the string `v` on `chan`.
pub fn try_send(chan: &str, v: &str) -> Op {
    Op::Send {
        chan: chan.into(),
        data: serde_json::json!(v).into(),
        mode: SendMode::Try,
    }
}

/// The reply of a receive that got the string `v`.
pub fn received(v: &str) -> Response {
    Response::Received {
        data: serde_json::json!(v).into(),
        ok: true,
    }
}
