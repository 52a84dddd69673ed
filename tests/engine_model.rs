//! Random channel programs run through the engine and through a reference model, written
//! separately for clarity (plain queues and vectors, no storage), compared after every
//! step; plus the invariants that must hold whatever the engine chose.
//!
//! The model cannot predict a random choice among ready cases, so it checks that the
//! engine's choice was one of the ready cases (or `default` when none was), then follows
//! it. Everything else — who is served, in which order, with which value — the model
//! decides itself, and the two must agree.

mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use serde_json::{json, Value};
use slct::engine::chan::Waiter;
use slct::engine::types::{Case, Select, State};
use slct::engine::{keys, Error, Op, RecvMode, Response, SendMode, Store, Table};
use support::world::*;

const CHANS: [&str; 3] = ["a", "b", "c"];
const STATES: [&str; 4] = ["s0", "s1", "s2", "s3"];

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
    },
    DetachedSend {
        chan: usize,
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
    PollAndUpdate {
        add: Option<Vec<CaseSpec>>,
    },
    PollAndAbandon {
        lease_ms: u64,
    },
    Delete {
        state: usize,
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

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..STATES.len(), prop::collection::vec(cases(), 1..=2))
            .prop_map(|(state, selects)| Step::Create { state, selects }),
        2 => (0..CHANS.len()).prop_map(|chan| Step::DetachedSend { chan }),
        2 => (0..CHANS.len()).prop_map(|chan| Step::TryRecv { chan }),
        1 => (0..CHANS.len()).prop_map(|chan| Step::Close { chan }),
        2 => (0u64..40).prop_map(|ms| Step::Advance { ms }),
        3 => prop::option::of(cases()).prop_map(|add| Step::PollAndUpdate { add }),
        1 => (1u64..60).prop_map(|lease_ms| Step::PollAndAbandon { lease_ms }),
        1 => (0..STATES.len()).prop_map(|state| Step::Delete { state }),
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
    Detached(Value),
}

#[derive(Clone, Debug, Default)]
struct MChan {
    cap: u64,
    closed: bool,
    buf: VecDeque<Value>,
    sendq: VecDeque<MWaiter>,
    recvq: VecDeque<MWaiter>,
}

#[derive(Clone, Debug, PartialEq)]
struct MResult {
    select: String,
    case: usize,
    data: Value,
    ok: bool,
}

#[derive(Clone, Debug, Default)]
struct MState {
    selects: Vec<Select>,
    results: Vec<MResult>,
    lease: Option<(u64, usize)>,
}

#[derive(Default)]
struct Model {
    now: u64,
    chans: BTreeMap<String, MChan>,
    states: BTreeMap<String, MState>,
}

impl Model {
    fn chan(&mut self, name: &str) -> &mut MChan {
        self.chans.entry(name.to_owned()).or_default()
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
                self.states.get_mut(state).unwrap().selects.push(select);
                return Ok(());
            }
        };
        let (data, ok) = match &select.cases[case] {
            Case::Recv { chan } => self.recv(chan),
            Case::Send { chan, data } => (Value::Null, self.send(chan, data.clone())),
            _ => (Value::Null, true),
        };
        let result = MResult {
            select: select.id.clone(),
            case,
            data,
            ok,
        };
        self.states.get_mut(state).unwrap().results.push(result);
        Ok(())
    }

    fn recv(&mut self, chan: &str) -> (Value, bool) {
        if let Some(v) = self.chan(chan).buf.pop_front() {
            if let Some(w) = self.chan(chan).sendq.pop_front() {
                let sent = self.finish(w, Value::Null, true);
                self.chan(chan).buf.push_back(sent);
            }
            return (v, true);
        }
        if let Some(w) = self.chan(chan).sendq.pop_front() {
            return (self.finish(w, Value::Null, true), true);
        }
        (Value::Null, false)
    }

    fn send(&mut self, chan: &str, v: Value) -> bool {
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
    fn finish(&mut self, w: MWaiter, data: Value, ok: bool) -> Value {
        let MWaiter::Select {
            state,
            select,
            case,
        } = w
        else {
            let MWaiter::Detached(v) = w else {
                unreachable!()
            };
            return v;
        };
        let st = self.states.get_mut(&state).unwrap();
        let i = st.selects.iter().position(|s| s.id == select).unwrap();
        let sel = st.selects.remove(i);
        for c in self.chans.values_mut() {
            let mine = |x: &MWaiter| matches!(x, MWaiter::Select { state: s, select: id, .. } if *s == state && *id == select);
            c.sendq.retain(|x| !mine(x));
            c.recvq.retain(|x| !mine(x));
        }
        let sent = match &sel.cases[case] {
            Case::Send { data, .. } => data.clone(),
            _ => Value::Null,
        };
        self.states.get_mut(&state).unwrap().results.push(MResult {
            select,
            case,
            data,
            ok,
        });
        sent
    }

    fn close(&mut self, chan: &str) -> bool {
        if self.chan(chan).closed {
            return false;
        }
        self.chan(chan).closed = true;
        while let Some(w) = self.chan(chan).recvq.pop_front() {
            self.finish(w, Value::Null, false);
        }
        while let Some(w) = self.chan(chan).sendq.pop_front() {
            self.finish(w, Value::Null, false);
        }
        true
    }

    /// Fires due timers in (deadline, state, select) order and expires leases.
    fn advance(&mut self) {
        let mut due: Vec<(u64, String, String, usize)> = Vec::new();
        for (id, st) in &self.states {
            for s in &st.selects {
                let timers = s.cases.iter().enumerate().filter_map(|(i, c)| match c {
                    Case::Timer { at, .. } => Some((*at, i)),
                    _ => None,
                });
                if let Some((at, i)) = timers.min() {
                    if at <= self.now {
                        due.push((at, id.clone(), s.id.clone(), i));
                    }
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
                Value::Null,
                true,
            );
        }
        let now = self.now;
        for st in self.states.values_mut() {
            if st.lease.is_some_and(|(expires, _)| expires <= now) {
                st.lease = None;
            }
        }
    }
}

// --- Driving both --------------------------------------------------------------------

struct Run {
    world: World,
    model: Model,
    next_value: u64,
    received: BTreeSet<u64>,
}

impl Run {
    fn new(caps: [u64; 3]) -> Run {
        let mut run = Run {
            world: World::new(),
            model: Model::default(),
            next_value: 0,
            received: BTreeSet::new(),
        };
        run.model.now = run.world.now;
        for (name, cap) in CHANS.iter().zip(caps) {
            run.world.make(name, cap);
            run.model.chan(name).cap = cap;
        }
        run
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

    fn step(&mut self, step: &Step) -> Result<(), String> {
        self.world.now += 1;
        self.model.now = self.world.now;
        self.model.advance();
        match step {
            Step::Create { state, selects } => {
                let id = STATES[*state];
                let selects = self.selects(selects, 0);
                let exists = self.model.states.contains_key(id);
                let applied = self.world.apply(Op::CreateState {
                    id: id.into(),
                    data: Value::Null,
                    selects: selects.clone(),
                    callback: None,
                });
                if exists {
                    return expect_err(applied.reply, "exists");
                }
                applied.reply.map_err(|e| format!("create failed: {e:?}"))?;
                self.model.states.insert(id.into(), MState::default());
                let before = State {
                    next_seq: 1,
                    ..self.world.state(id)
                };
                self.register_all(id, &before, selects)
            }
            Step::DetachedSend { chan } => {
                self.next_value += 1;
                let v = json!(self.next_value);
                let reply = self
                    .world
                    .apply(Op::Send {
                        chan: CHANS[*chan].into(),
                        data: v.clone(),
                        mode: SendMode::Detached,
                    })
                    .reply;
                let ready = self.model.ready(&send(CHANS[*chan], v.clone()));
                if self.model.chan(CHANS[*chan]).closed {
                    return expect_err(reply, "closed");
                }
                if ready {
                    self.model.send(CHANS[*chan], v);
                    expect(reply, Response::Sent)
                } else {
                    self.model
                        .chan(CHANS[*chan])
                        .sendq
                        .push_back(MWaiter::Detached(v));
                    expect(reply, Response::Parked)
                }
            }
            Step::TryRecv { chan } => {
                let reply = self
                    .world
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
                let reply = self.world.close(CHANS[*chan]);
                if self.model.close(CHANS[*chan]) {
                    expect(reply, Response::Done)
                } else {
                    expect_err(reply, "closed")
                }
            }
            Step::Advance { ms } => {
                self.world.now += ms;
                self.model.now = self.world.now;
                self.model.advance();
                expect(self.world.apply(Op::Tick).reply, Response::Done)
            }
            Step::PollAndUpdate { add } => self.poll_and_update(add.as_deref()),
            Step::PollAndAbandon { lease_ms } => {
                let got = self.world.poll(1, *lease_ms);
                let expected = self.model_pending_oldest();
                self.check_poll(&got, expected, *lease_ms)
            }
            Step::Delete { state } => {
                let id = STATES[*state];
                let reply = self.world.apply(Op::DeleteState { id: id.into() }).reply;
                match self.model.states.remove(id) {
                    None => expect_err(reply, "not_found"),
                    Some(st) => {
                        for s in &st.selects {
                            for c in self.model.chans.values_mut() {
                                let mine = |x: &MWaiter| matches!(x, MWaiter::Select { state, select, .. } if state == id && *select == s.id);
                                c.sendq.retain(|x| !mine(x));
                                c.recvq.retain(|x| !mine(x));
                            }
                        }
                        expect(reply, Response::Done)
                    }
                }
            }
        }
    }

    /// The model does not order pending states by time; any pending state may be leased,
    /// and the invariants below check the engine's pick was pending.
    fn model_pending_oldest(&self) -> Vec<String> {
        self.model
            .states
            .iter()
            .filter(|(_, s)| !s.results.is_empty() && s.lease.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn check_poll(
        &mut self,
        got: &[State],
        pending: Vec<String>,
        lease_ms: u64,
    ) -> Result<(), String> {
        match got.first() {
            None if pending.is_empty() => Ok(()),
            None => Err(format!(
                "poll returned nothing, model has pending {pending:?}"
            )),
            Some(s) if pending.contains(&s.id) => {
                let st = self.model.states.get_mut(&s.id).unwrap();
                st.lease = Some((self.model.now + lease_ms, st.results.len()));
                Ok(())
            }
            Some(s) => Err(format!(
                "poll leased {} which the model does not hold pending",
                s.id
            )),
        }
    }

    fn poll_and_update(&mut self, add: Option<&[CaseSpec]>) -> Result<(), String> {
        let got = self.world.poll(1, 10_000);
        let pending = self.model_pending_oldest();
        self.check_poll(&got, pending, 10_000)?;
        let Some(leased) = got.into_iter().next() else {
            return Ok(());
        };
        for r in &leased.results {
            if r.op == "recv" && r.ok {
                self.note_received(&r.data)?;
            }
        }
        let mut selects = written(&leased);
        let used: BTreeSet<&str> = leased.selects.iter().map(|s| s.id.as_str()).collect();
        let fresh_id = (0..)
            .find(|i| !used.contains(format!("g{i}").as_str()))
            .unwrap();
        let fresh = add
            .map(|a| self.selects(&[a.to_vec()], fresh_id))
            .unwrap_or_default();
        selects.extend(fresh.iter().cloned());
        let before = self.world.state(&leased.id);
        let reply = self.world.update(&leased, selects);
        reply.map_err(|e| format!("update failed: {e:?}"))?;
        let st = self.model.states.get_mut(&leased.id).unwrap();
        let (_, delivered) = st.lease.take().unwrap();
        st.results.drain(..delivered);
        self.register_all(&leased.id.clone(), &before, fresh)
    }

    fn note_received(&mut self, data: &Value) -> Result<(), String> {
        let v = data.as_u64().ok_or("received a value nobody sent")?;
        if !self.received.insert(v) {
            return Err(format!("value {v} received twice"));
        }
        Ok(())
    }
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
    }
    for name in CHANS {
        let m = run.model.chan(name).clone();
        let e = run.world.chan(name).unwrap();
        let got = (e.len, e.senders, e.receivers, e.closed);
        let want = (
            m.buf.len() as u64,
            m.sendq.len() as u64,
            m.recvq.len() as u64,
            m.closed,
        );
        if got != want {
            return Err(format!(
                "chan {name}: engine (len, senders, receivers, closed) {got:?} != model {want:?}"
            ));
        }
        let buffered: Vec<Value> = entries(&run.world, Table::Buffers, name)
            .into_iter()
            .map(|v| serde_json::from_slice(&v).unwrap())
            .collect();
        if !m.buf.iter().eq(buffered.iter()) {
            return Err(format!(
                "chan {name}: buffer {buffered:?} != model {:?}",
                m.buf
            ));
        }
    }
    invariants(run)
}

fn entries(world: &World, table: Table, chan: &str) -> Vec<Vec<u8>> {
    let prefix = keys::chan_prefix(chan);
    world
        .store
        .scan_from(table, &prefix)
        .map(Result::unwrap)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| v)
        .collect()
}

/// The running totals kept for metrics equal a full count of the tables.
fn counts_match_the_tables(world: &World) -> Result<(), String> {
    let mut tally = slct::engine::Counts::default();
    for entry in world.store.scan_from(Table::States, &[]) {
        let state: State = serde_json::from_slice(&entry.unwrap().1).unwrap();
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
    tally.timers = world.store.len(Table::Timers) as u64;
    let kept = slct::engine::counts(&world.store).unwrap();
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
        for (table, count) in [
            (Table::Senders, &mut senders),
            (Table::Receivers, &mut receivers),
        ] {
            for bytes in entries(&run.world, table, name) {
                *count += 1;
                if let Waiter::Select { state, select, .. } =
                    serde_json::from_slice(&bytes).unwrap()
                {
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
        steps in prop::collection::vec(step(), 1..50),
    ) {
        let mut run = Run::new(caps);
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
                assert!(received.insert(r.data.as_u64().unwrap()), "received twice");
            } else {
                sent.insert(i);
            }
        }
    }
    assert_eq!(sent, received, "every completed send was received, once");
}
