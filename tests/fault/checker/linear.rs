//! Linearizability of each state's `data`, by a Wing–Gong search with Lowe's memo
//! (the algorithm of Knossos' `wgl` and of porcupine), one state id at a time
//! (P-compositionality: a history is linearizable iff each key's is).
//!
//! A state is a register that may be absent: create sets it if absent (else 409
//! `exists`), an update under a lease sets it (409 `lease_lost` leaves it), delete
//! removes it, and reads and polls return it. Selects, results and leases change a
//! state's version but never its `data`, so the model ignores them: every write the
//! workload makes carries a value no other write carries, which also keeps the search
//! short. An op whose outcome is unknown has no return (it may take effect at any time
//! after its call, or never): its return event sits after every other event, and the
//! model lets it be either applied or not.
//!
//! No maintained Rust crate fits: `stateright`'s tester checks histories it generates
//! itself, `todc-utils` has one release and no notion of a call without a return, and
//! the search is a hundred lines.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::super::history::{Call, Op, Outcome};
use super::Report;

/// Search steps per state id before the search gives up (inconclusive, reported).
const BUDGET: u64 = 20_000_000;

/// One operation on one register.
#[derive(Clone, Debug, PartialEq)]
pub enum RegOp {
    /// Create with this value: `Some(true)` 201, `Some(false)` 409 exists, `None` unknown.
    Create(u64, Option<bool>),
    /// Read or poll: `Some(v)` saw v, `None` saw 404.
    Read(Option<u64>),
    /// Update: `Some(true)` 200, `Some(false)` 409 lease lost (exists, unchanged),
    /// `None` unknown; [`RegOp::Absent`] for a 404.
    Update(u64, Option<bool>),
    /// Delete: `Some(true)` 204, `None` unknown; [`RegOp::Absent`] for a 404.
    Delete(Option<bool>),
    /// A 404 from an update or delete: the state did not exist.
    Absent,
}

/// One timed operation: µs interval, `end` `None` if the outcome is unknown.
#[derive(Clone, Debug)]
pub struct Timed {
    /// Call time.
    pub start: u64,
    /// Return time, `None` for unknown outcomes.
    pub end: Option<u64>,
    /// The operation.
    pub op: RegOp,
    /// Index in the full history (for reporting).
    pub index: usize,
}

/// The register's value: `None` absent.
type Reg = Option<u64>;

/// The states `op` may lead to from `reg` (empty: `op` cannot happen here).
fn step(reg: Reg, op: &RegOp) -> Vec<Reg> {
    match (op, reg) {
        (RegOp::Create(v, Some(true)), None) => vec![Some(*v)],
        (RegOp::Create(_, Some(true)), Some(_)) => vec![],
        (RegOp::Create(_, Some(false)), Some(_)) => vec![reg],
        (RegOp::Create(_, Some(false)), None) => vec![],
        (RegOp::Create(v, None), None) => vec![Some(*v), None],
        (RegOp::Create(_, None), Some(_)) => vec![reg],
        (RegOp::Read(seen), _) => {
            if *seen == reg {
                vec![reg]
            } else {
                vec![]
            }
        }
        (RegOp::Update(v, Some(true)), Some(_)) => vec![Some(*v)],
        (RegOp::Update(_, Some(false)), Some(_)) => vec![reg],
        (RegOp::Update(v, None), Some(_)) => vec![Some(*v), reg],
        (RegOp::Update(_, None), None) => vec![None],
        (RegOp::Update(_, Some(_)), None) => vec![],
        (RegOp::Delete(Some(_)), Some(_)) => vec![None],
        (RegOp::Delete(Some(_)), None) => vec![],
        (RegOp::Delete(None), Some(_)) => vec![None, reg],
        (RegOp::Delete(None), None) => vec![None],
        (RegOp::Absent, None) => vec![None],
        (RegOp::Absent, Some(_)) => vec![],
    }
}

/// What the search concluded.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists; the ops (history indexes) of the longest prefix the search could
    /// linearize, and the op it could not place after it.
    NotLinearizable { longest: Vec<usize>, stuck: usize },
    /// The search gave up after its step budget.
    Inconclusive,
}

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

/// Checks one register's history, starting absent, within `budget` search steps.
pub fn check(ops: &[Timed], budget: u64) -> Verdict {
    // Events in time order; at equal times calls first, so touching ops count as
    // concurrent. Unknown returns go last.
    let mut events: Vec<(u64, u8, Event)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((
            op.start,
            0,
            Event {
                op: i,
                is_call: true,
            },
        ));
        let end = op.end.unwrap_or(u64::MAX);
        events.push((
            end,
            1,
            Event {
                op: i,
                is_call: false,
            },
        ));
    }
    events.sort_by_key(|(t, kind, e)| (*t, *kind, e.op));
    // A doubly linked list over the events; node 0 is the head sentinel.
    let n = events.len() + 1;
    let mut next: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| i.saturating_sub(1)).collect();
    next[n - 1] = usize::MAX;
    let node = |i: usize| events[i - 1].2;
    let mut return_of = vec![0usize; ops.len()];
    for i in 1..n {
        if !node(i).is_call {
            return_of[node(i).op] = i;
        }
    }
    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = i;
        if nx != usize::MAX {
            prev[nx] = i;
        }
    };

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Reg)> = HashSet::new();
    let mut stack: Vec<(usize, Reg, usize)> = Vec::new();
    let mut reg: Reg = None;
    let mut entry = next[0];
    let mut first_choice = 0;
    let mut steps = 0u64;
    let mut longest: Vec<usize> = Vec::new();
    let mut stuck = 0;
    while next[0] != usize::MAX {
        steps += 1;
        if steps > budget {
            return Verdict::Inconclusive;
        }
        let ev = node(entry);
        if ev.is_call {
            let options = step(reg, &ops[ev.op].op);
            let mut placed = false;
            for (choice, after) in options.iter().enumerate().skip(first_choice) {
                let mut lin = linearized.clone();
                lin[ev.op / 64] |= 1 << (ev.op % 64);
                if cache.insert((lin.clone(), *after)) {
                    stack.push((entry, reg, choice));
                    reg = *after;
                    linearized = lin;
                    lift(&mut next, &mut prev, entry);
                    lift(&mut next, &mut prev, return_of[ev.op]);
                    entry = next[0];
                    first_choice = 0;
                    placed = true;
                    break;
                }
            }
            if !placed {
                entry = next[entry];
                first_choice = 0;
            }
        } else {
            if stack.len() >= longest.len() {
                longest = stack
                    .iter()
                    .map(|(e, _, _)| ops[node(*e).op].index)
                    .collect();
                stuck = ops[ev.op].index;
            }
            let Some((call, before, choice)) = stack.pop() else {
                return Verdict::NotLinearizable { longest, stuck };
            };
            let op = node(call).op;
            reg = before;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut next, &mut prev, return_of[op]);
            unlift(&mut next, &mut prev, call);
            entry = call;
            first_choice = choice + 1;
        }
    }
    Verdict::Linearizable
}

/// Interns values as small integers.
#[derive(Default)]
pub struct Interner {
    ids: HashMap<String, u64>,
}

impl Interner {
    /// The id of `value`.
    pub fn id(&mut self, value: &str) -> u64 {
        let next = self.ids.len() as u64;
        *self.ids.entry(value.to_owned()).or_insert(next)
    }
}

/// Checks every state whose id starts with `prefix` and adds the verdicts to `report`.
pub fn check_states(ops: &[Op], prefix: &str, report: &mut Report) {
    let mut values = Interner::default();
    let mut by_id: BTreeMap<String, Vec<Timed>> = BTreeMap::new();
    for (index, op) in ops.iter().enumerate() {
        for (id, reg_op) in register_ops(op, &mut values) {
            if id.starts_with(prefix) {
                let end = (!op.outcome.is_unknown()).then_some(op.end);
                let timed = Timed {
                    start: op.start,
                    end,
                    op: reg_op,
                    index,
                };
                by_id.entry(id).or_default().push(timed);
            }
        }
    }
    let total: usize = by_id.values().map(Vec::len).sum();
    for (id, timed) in &by_id {
        match check(timed, BUDGET) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => report.inconclusive.push(format!(
                "state {id}: linearizability search gave up after {BUDGET} steps ({} ops)",
                timed.len()
            )),
            Verdict::NotLinearizable { longest, stuck } => {
                let tail: Vec<String> = longest
                    .iter()
                    .rev()
                    .take(6)
                    .rev()
                    .map(|i| describe(&ops[*i]))
                    .collect();
                report.violation(format!(
                    "state {id} is not linearizable: after linearizing {} ops (last: {}), \
                     no order admits op #{stuck}: {}",
                    longest.len(),
                    tail.join(" ; "),
                    describe(&ops[stuck])
                ));
            }
        }
    }
    report.checked.push(format!(
        "linearizability of data: {} states ({prefix}*), {total} create/read/update/delete/poll ops",
        by_id.len()
    ));
}

/// One op in a line.
pub fn describe(op: &Op) -> String {
    let outcome = match &op.outcome {
        Outcome::Ok { status, body } => {
            let data = if body["data"].is_null() {
                String::new()
            } else {
                format!(" data={}", body["data"])
            };
            format!("{status}{data}")
        }
        Outcome::Fail { status, code } => format!("{status} {code}"),
        Outcome::Unknown(why) => format!("unknown ({why})"),
    };
    format!(
        "[p{} n{} {:.3}s-{:.3}s] {:?} -> {outcome}",
        op.process,
        op.node,
        op.start as f64 / 1e6,
        op.end as f64 / 1e6,
        op.call
    )
}

/// What `op` means for the registers it touches: (state id, operation).
fn register_ops(op: &Op, values: &mut Interner) -> Vec<(String, RegOp)> {
    let o = &op.outcome;
    let status = o.ok_status();
    let code = o.fail_code();
    let one = |id: &String, r: Option<RegOp>| r.map(|r| vec![(id.clone(), r)]).unwrap_or_default();
    match &op.call {
        Call::Create { id, data, .. } => {
            let v = values.id(&data.to_string());
            let r = match (status, code) {
                (Some(_), _) => Some(RegOp::Create(v, Some(true))),
                (_, Some("exists")) => Some(RegOp::Create(v, Some(false))),
                (_, Some(_)) => None,
                _ => Some(RegOp::Create(v, None)),
            };
            one(id, r)
        }
        Call::Update { id, data, .. } => {
            let v = values.id(&data.to_string());
            let r = match (status, code) {
                (Some(_), _) => Some(RegOp::Update(v, Some(true))),
                (_, Some("lease_lost")) => Some(RegOp::Update(v, Some(false))),
                (_, Some("not_found")) => Some(RegOp::Absent),
                (_, Some(_)) => None,
                _ => Some(RegOp::Update(v, None)),
            };
            one(id, r)
        }
        Call::Delete { id } => {
            let r = match (status, code) {
                (Some(_), _) => Some(RegOp::Delete(Some(true))),
                (_, Some("not_found")) => Some(RegOp::Absent),
                (_, Some(_)) => None,
                _ => Some(RegOp::Delete(None)),
            };
            one(id, r)
        }
        Call::Read { id } => {
            let r = match (o.ok(), code) {
                (Some(body), _) => Some(RegOp::Read(Some(values.id(&body["data"].to_string())))),
                (_, Some("not_found")) => Some(RegOp::Read(None)),
                _ => None,
            };
            one(id, r)
        }
        Call::Poll { .. } => o
            .ok()
            .and_then(Value::as_array)
            .map(|states| {
                states
                    .iter()
                    .filter_map(|s| {
                        let id = s["id"].as_str()?.to_owned();
                        let v = values.id(&s["data"].to_string());
                        Some((id, RegOp::Read(Some(v))))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(start: u64, end: Option<u64>, op: RegOp) -> Timed {
        Timed {
            start,
            end,
            op,
            index: start as usize,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let ops = [
            op(0, Some(1), RegOp::Create(1, Some(true))),
            op(2, Some(3), RegOp::Read(Some(1))),
            op(4, Some(5), RegOp::Update(2, Some(true))),
            op(6, Some(7), RegOp::Read(Some(2))),
            op(8, Some(9), RegOp::Delete(Some(true))),
            op(10, Some(11), RegOp::Read(None)),
        ];
        assert_eq!(check(&ops, 1_000_000), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_is_caught() {
        let ops = [
            op(0, Some(1), RegOp::Create(1, Some(true))),
            op(2, Some(3), RegOp::Update(2, Some(true))),
            op(4, Some(5), RegOp::Read(Some(1))),
        ];
        assert!(matches!(
            check(&ops, 1_000_000),
            Verdict::NotLinearizable { stuck: 4, .. }
        ));
    }

    #[test]
    fn concurrent_read_may_see_either() {
        let ops = [
            op(0, Some(1), RegOp::Create(1, Some(true))),
            op(2, Some(6), RegOp::Update(2, Some(true))),
            op(3, Some(4), RegOp::Read(Some(2))),
            op(5, Some(7), RegOp::Read(Some(2))),
        ];
        assert_eq!(check(&ops, 1_000_000), Verdict::Linearizable);
    }

    #[test]
    fn unknown_write_may_apply_late_or_never() {
        let applied = [
            op(0, Some(1), RegOp::Create(1, Some(true))),
            op(2, None, RegOp::Update(2, None)),
            op(10, Some(11), RegOp::Read(Some(1))),
            op(20, Some(21), RegOp::Read(Some(2))),
        ];
        assert_eq!(check(&applied, 1_000_000), Verdict::Linearizable);
        let never = [
            op(0, Some(1), RegOp::Create(1, Some(true))),
            op(2, None, RegOp::Update(2, None)),
            op(10, Some(11), RegOp::Read(Some(1))),
        ];
        assert_eq!(check(&never, 1_000_000), Verdict::Linearizable);
        // But not before it was called.
        let early = [
            op(0, Some(1), RegOp::Create(1, Some(true))),
            op(2, Some(3), RegOp::Read(Some(2))),
            op(5, None, RegOp::Update(2, None)),
        ];
        assert!(matches!(
            check(&early, 1_000_000),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn value_back_after_overwrite_is_caught() {
        let ops = [
            op(0, Some(1), RegOp::Create(1, Some(true))),
            op(2, Some(3), RegOp::Update(2, Some(true))),
            op(4, Some(5), RegOp::Read(Some(2))),
            op(6, Some(7), RegOp::Read(Some(1))),
        ];
        assert!(matches!(
            check(&ops, 1_000_000),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn create_over_existing_is_caught() {
        let ops = [
            op(0, Some(1), RegOp::Create(1, Some(true))),
            op(2, Some(3), RegOp::Create(2, Some(true))),
        ];
        assert!(matches!(
            check(&ops, 1_000_000),
            Verdict::NotLinearizable { .. }
        ));
    }
}
