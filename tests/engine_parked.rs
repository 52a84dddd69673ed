//! Random programs of parked HTTP sends and receives on one channel, run through the
//! engine and through a reference model of design.md §3.3, compared after every step.
//!
//! The model is a channel as the design describes it, in plain queues: a value that
//! reaches a parked receive is *offered* to it and leaves the channel; its caller claims
//! it, or its withdrawal puts it back at the head of the channel (to the first parked
//! receiver, else in front of the buffer, past the capacity if need be). The first
//! command of a new term withdraws every parked operation and puts the offered values
//! back in the order they were offered, before the command does its own work; so does
//! `WithdrawParked`, which a leader restarted into its old term proposes first. An
//! operation whose deadline passes in log time is withdrawn as a command begins (before
//! a new term's withdrawals), in deadline order. A channel never made with `PUT` is
//! unbuffered and not stored while it holds nothing, so its queue positions start over
//! — the case that once put values back out of order.
//!
//! After every step the engine's reply and the operations' outcomes must be the model's;
//! at the end the model itself must account for every value it accepted: received
//! once, or still in the channel or offered.

mod support;

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use serde_json::json;
use slct::engine::{Data, Error, Op, OpOutcome, ParkedOp, RecvMode, Response, SendMode};
use support::world::*;
use uuid::Uuid;

const CHAN: &str = "c";

#[derive(Clone, Debug)]
enum Step {
    /// Parks for this many ms of log time.
    ParkRecv(u64),
    ParkSend(u64),
    TrySend,
    TryRecv,
    /// Claim / withdraw the `pick`-th operation ever parked (modulo), live or not.
    Claim(usize),
    Withdraw(usize),
    /// The next command is the first of a new leader term.
    NewTerm,
    /// A leader restarted into its old term withdraws what its last process parked.
    WithdrawParked,
    Close,
    /// Log time moves on this many ms, and a tick is applied.
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => wait().prop_map(Step::ParkRecv),
        2 => wait().prop_map(Step::ParkSend),
        5 => Just(Step::TrySend),
        3 => Just(Step::TryRecv),
        3 => (0usize..64).prop_map(Step::Claim),
        3 => (0usize..64).prop_map(Step::Withdraw),
        2 => Just(Step::NewTerm),
        1 => Just(Step::WithdrawParked),
        1 => Just(Step::Close),
        2 => (1u64..30).prop_map(Step::Advance),
    ]
}

/// How long an operation parks: mostly past the end of a run, else a few ticks.
fn wait() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(3_600_000), 1 => 1u64..60]
}

/// What a step's command did: its reply (or error code) and each operation's outcome.
#[derive(Debug, PartialEq)]
struct Did {
    reply: Result<Response, &'static str>,
    outcomes: Vec<(Uuid, String)>,
}

#[derive(Default)]
struct Model {
    capacity: usize,
    closed: bool,
    buffer: VecDeque<Data>,
    receivers: VecDeque<Uuid>,
    senders: VecDeque<(Uuid, Data)>,
    /// Values offered to parked receives, in the order they were offered.
    offered: Vec<(Uuid, Data)>,
    new_term: bool,
    /// Every parked operation's deadline (log time).
    deadlines: BTreeMap<Uuid, u64>,
    outcomes: Vec<(Uuid, OpOutcome)>,
    /// Values accepted into the channel (sent, or parked as a send that was taken) and
    /// values received, for the closing account.
    accepted: Vec<Data>,
    received: Vec<Data>,
}

impl Model {
    /// Applies one command at log time `now`: the operations due withdrawn first, then
    /// a new term's withdrawals, then `op`.
    fn apply(&mut self, now: u64, op: &Op) -> Did {
        self.outcomes.clear();
        let mut due: Vec<(u64, Uuid)> = self
            .parked()
            .filter_map(|id| {
                let at = self.deadlines[&id];
                (at <= now).then_some((at, id))
            })
            .collect();
        due.sort();
        for (_, id) in due {
            self.withdraw(id);
        }
        if std::mem::take(&mut self.new_term) {
            self.enter_term();
        }
        let reply = self.run(op);
        let mut outcomes: Vec<_> = self
            .outcomes
            .drain(..)
            .map(|(id, o)| (id, format!("{o:?}")))
            .collect();
        outcomes.sort();
        Did { reply, outcomes }
    }

    fn enter_term(&mut self) {
        for id in std::mem::take(&mut self.receivers) {
            self.outcomes.push((id, OpOutcome::Expired));
        }
        for (id, _) in std::mem::take(&mut self.senders) {
            self.outcomes.push((id, OpOutcome::Expired));
        }
        let offered = std::mem::take(&mut self.offered);
        let values = offered
            .into_iter()
            .map(|(id, value)| {
                self.outcomes.push((id, OpOutcome::Expired));
                value
            })
            .collect();
        self.put_back(values);
    }

    /// The operations still parked or offered.
    fn parked(&self) -> impl Iterator<Item = Uuid> + '_ {
        let queued = self
            .receivers
            .iter()
            .chain(self.senders.iter().map(|(id, _)| id));
        queued.chain(self.offered.iter().map(|(id, _)| id)).copied()
    }

    /// Withdraws a parked operation: out of its queue, or its offered value put back.
    /// False if it is not parked.
    fn withdraw(&mut self, id: Uuid) -> bool {
        if let Some(at) = self.offered.iter().position(|(o, _)| *o == id) {
            let (_, value) = self.offered.remove(at);
            self.put_back(vec![value]);
        } else if let Some(at) = self.receivers.iter().position(|o| *o == id) {
            self.receivers.remove(at);
        } else if let Some(at) = self.senders.iter().position(|(o, _)| *o == id) {
            self.senders.remove(at);
        } else {
            return false;
        }
        self.outcomes.push((id, OpOutcome::Expired));
        true
    }

    fn run(&mut self, op: &Op) -> Result<Response, &'static str> {
        match op {
            Op::Send { data, mode, .. } => self.send(data.clone(), mode),
            Op::Recv { mode, .. } => self.recv(mode),
            Op::Claim { id } => {
                let at = self.offered.iter().position(|(o, _)| o == id);
                let (_, data) = self.offered.remove(at.ok_or("not_found")?);
                self.received.push(data.clone());
                Ok(Response::Received { data, ok: true })
            }
            Op::Withdraw { id } => match self.withdraw(*id) {
                true => Ok(Response::Done),
                false => Err("not_found"),
            },
            Op::Tick => Ok(Response::Done),
            Op::WithdrawParked => {
                self.enter_term();
                Ok(Response::Done)
            }
            Op::CloseChan { .. } => {
                if std::mem::replace(&mut self.closed, true) {
                    return Err("closed");
                }
                for id in std::mem::take(&mut self.receivers) {
                    let closed = OpOutcome::Received {
                        data: Data::null(),
                        ok: false,
                    };
                    self.outcomes.push((id, closed));
                }
                for (id, _) in std::mem::take(&mut self.senders) {
                    self.outcomes.push((id, OpOutcome::Closed));
                }
                Ok(Response::Closed(Default::default()))
            }
            other => unreachable!("not generated: {other:?}"),
        }
    }

    fn send(&mut self, data: Data, mode: &SendMode) -> Result<Response, &'static str> {
        if self.closed {
            return Err("closed");
        }
        if !self.receivers.is_empty() || self.buffer.len() < self.capacity {
            self.accepted.push(data.clone());
            self.take_send(data);
            return Ok(Response::Sent);
        }
        match mode {
            SendMode::Park(op) => {
                self.deadlines.insert(op.id, op.deadline);
                self.senders.push_back((op.id, data));
                Ok(Response::Parked)
            }
            _ => Err("would_block"),
        }
    }

    /// A ready send: offered to the first parked receive, else into the buffer.
    fn take_send(&mut self, data: Data) {
        match self.receivers.pop_front() {
            Some(id) => {
                self.outcomes.push((id, OpOutcome::Offered));
                self.offered.push((id, data));
            }
            None => self.buffer.push_back(data),
        }
    }

    fn recv(&mut self, mode: &RecvMode) -> Result<Response, &'static str> {
        let (data, ok) = if let Some(value) = self.buffer.pop_front() {
            // The first parked sender refills the buffer.
            if let Some((id, sent)) = self.senders.pop_front() {
                self.outcomes.push((id, OpOutcome::Sent));
                self.accepted.push(sent.clone());
                self.buffer.push_back(sent);
            }
            (value, true)
        } else if let Some((id, sent)) = self.senders.pop_front() {
            self.outcomes.push((id, OpOutcome::Sent));
            self.accepted.push(sent.clone());
            (sent, true)
        } else if self.closed {
            (Data::null(), false)
        } else {
            return match mode {
                RecvMode::Park(op) => {
                    self.deadlines.insert(op.id, op.deadline);
                    self.receivers.push_back(op.id);
                    Ok(Response::Parked)
                }
                RecvMode::Try => Err("would_block"),
            };
        };
        if ok {
            self.received.push(data.clone());
        }
        Ok(Response::Received { data, ok })
    }

    /// Values back at the head, first first: to the parked receivers while there are
    /// some, the rest in front of the buffer.
    fn put_back(&mut self, values: Vec<Data>) {
        let mut rest = Vec::new();
        for value in values {
            if rest.is_empty() && !self.receivers.is_empty() && !self.closed {
                self.take_send(value);
            } else {
                rest.push(value);
            }
        }
        for value in rest.into_iter().rev() {
            self.buffer.push_front(value);
        }
    }
}

fn did(applied: slct::engine::Applied) -> Did {
    let mut outcomes: Vec<_> = applied
        .effects
        .ops
        .iter()
        .map(|(id, o)| (*id, format!("{o:?}")))
        .collect();
    outcomes.sort();
    Did {
        reply: applied.reply.map_err(|e: Error| e.code()),
        outcomes,
    }
}

fn run(made: Option<usize>, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut w = World::new();
    let mut m = Model::default();
    if let Some(capacity) = made {
        w.make(CHAN, capacity as u64);
        m.capacity = capacity;
    }
    let mut ids: Vec<Uuid> = Vec::new();
    let mut values = 0u64;
    let mut value = || {
        values += 1;
        Data::from(json!(format!("v{values}")))
    };
    for (n, step) in steps.into_iter().enumerate() {
        let op = match step {
            Step::ParkRecv(wait) | Step::ParkSend(wait) => {
                // Ids in no particular order, as v4 ids are.
                let id = Uuid::from_u128(u128::from(scrambled_id(n)));
                ids.push(id);
                let parked = ParkedOp {
                    id,
                    deadline: w.now + wait,
                };
                match step {
                    Step::ParkRecv(_) => Op::Recv {
                        chan: CHAN.into(),
                        mode: RecvMode::Park(parked),
                    },
                    _ => Op::Send {
                        chan: CHAN.into(),
                        data: value(),
                        mode: SendMode::Park(parked),
                    },
                }
            }
            Step::TrySend => Op::Send {
                chan: CHAN.into(),
                data: value(),
                mode: SendMode::Try,
            },
            Step::TryRecv => Op::Recv {
                chan: CHAN.into(),
                mode: RecvMode::Try,
            },
            Step::Claim(pick) | Step::Withdraw(pick) if ids.is_empty() => {
                let _ = pick;
                continue;
            }
            Step::Claim(pick) => Op::Claim {
                id: ids[pick % ids.len()],
            },
            Step::Withdraw(pick) => Op::Withdraw {
                id: ids[pick % ids.len()],
            },
            Step::NewTerm => {
                w.term += 1;
                m.new_term = true;
                continue;
            }
            Step::Close => Op::CloseChan { name: CHAN.into() },
            Step::WithdrawParked => Op::WithdrawParked,
            Step::Advance(ms) => {
                w.now += ms;
                Op::Tick
            }
        };
        let engine = did(w.apply(op.clone()));
        let expected = m.apply(w.now, &op);
        prop_assert_eq!(engine, expected, "step {} ({:?})", n, op);
    }
    // Every value accepted is received once, or still in the channel or offered.
    let mut account: BTreeMap<String, i64> = BTreeMap::new();
    let key = |d: &Data| format!("{d:?}");
    for d in &m.accepted {
        *account.entry(key(d)).or_default() += 1;
    }
    let held = m.buffer.iter().chain(m.offered.iter().map(|(_, d)| d));
    for d in m.received.iter().chain(held) {
        *account.entry(key(d)).or_default() -= 1;
    }
    account.retain(|_, n| *n != 0);
    prop_assert!(account.is_empty(), "values unaccounted for: {:?}", account);
    Ok(())
}

/// A scrambled but distinct id for the `n`-th step, so that the ids' order is not the
/// order the operations parked in.
fn scrambled_id(n: usize) -> u64 {
    (n as u64 + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parked_operations_follow_the_model(
        made in prop::option::weighted(0.5, 0usize..3),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        run(made, steps)?;
    }
}
