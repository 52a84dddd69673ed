//! Log time: timers never fire before their deadline, none is left overdue, and log
//! time never goes back.
//!
//! - A timer's deadline is the `at` its case shows while blocked (absolute, log time);
//!   a result through that case must carry `at` no earlier.
//! - In the last listing of the run (taken when the replicas agree and are idle), no
//!   select may still be blocked on a timer whose deadline is at or before a log time
//!   the listing itself shows (a state's `updated_at`, a result's `at`, a lease's
//!   `granted_at`): every command fires everything due before it does its own work.
//! - The log time a write carries (a created or updated state's `updated_at`, a poll's
//!   `granted_at`) is never earlier than that of a write that completed before it was
//!   made — across leader changes, with a skewed clock on the leader.

use std::collections::HashMap;

use super::super::history::{Call, Op};
use super::linear::describe;
use super::{seen_states, Report};

/// Runs the checks.
pub fn check(ops: &[Op], report: &mut Report) {
    deadlines(ops, report);
    overdue(ops, report);
    monotonic(ops, report);
}

fn deadlines(ops: &[Op], report: &mut Report) {
    // (incarnation, select, case) -> deadline
    let mut deadline: HashMap<(String, u64, String, usize), u64> = HashMap::new();
    let seen = seen_states(ops);
    for s in &seen {
        let (id, created) = s.incarnation();
        for select in s.state["selects"].as_array().into_iter().flatten() {
            let sid = select["id"].as_str().unwrap_or_default().to_owned();
            for (i, case) in select["cases"].as_array().into_iter().flatten().enumerate() {
                if let (true, Some(at)) = (case["op"] == "timer", case["at"].as_u64()) {
                    deadline.insert((id.clone(), created, sid.clone(), i), at);
                }
            }
        }
    }
    let mut checked = 0;
    let mut fired = HashMap::new();
    for s in &seen {
        let (id, created) = s.incarnation();
        for result in s.state["results"].as_array().into_iter().flatten() {
            if result["op"] != "timer" {
                continue;
            }
            let sid = result["select"].as_str().unwrap_or_default().to_owned();
            let case = result["case"].as_u64().unwrap_or_default() as usize;
            let key = (id.clone(), created, sid, case);
            let (Some(due), Some(at)) = (deadline.get(&key), result["at"].as_u64()) else {
                continue;
            };
            if fired.insert(key, ()).is_some() {
                continue;
            }
            checked += 1;
            if at < *due {
                report.violation(format!(
                    "timer of {id} select {} fired at log time {at}, {} ms before its \
                     deadline {due}: {}",
                    result["select"],
                    due - at,
                    describe(s.op)
                ));
            }
        }
    }
    report.checked.push(format!(
        "timer deadlines: {checked} fired timers with a known deadline, {} deadlines seen",
        deadline.len()
    ));
}

fn overdue(ops: &[Op], report: &mut Report) {
    let Some((index, last)) = ops
        .iter()
        .enumerate()
        .rev()
        .find(|(_, op)| op.call == Call::ListStates && op.outcome.ok().is_some())
    else {
        report
            .inconclusive
            .push("overdue timers: no final listing".into());
        return;
    };
    let states = last.outcome.ok().and_then(|b| b["states"].as_array());
    let states = states.map(Vec::as_slice).unwrap_or_default();
    let mut clock = 0;
    for s in states {
        clock = clock.max(s["updated_at"].as_u64().unwrap_or(0));
        clock = clock.max(s["lease"]["granted_at"].as_u64().unwrap_or(0));
        for r in s["results"].as_array().into_iter().flatten() {
            clock = clock.max(r["at"].as_u64().unwrap_or(0));
        }
    }
    let mut blocked = 0;
    for s in states {
        for select in s["selects"].as_array().into_iter().flatten() {
            for case in select["cases"].as_array().into_iter().flatten() {
                let Some(at) = case["at"].as_u64() else {
                    continue;
                };
                blocked += 1;
                if at <= clock {
                    report.violation(format!(
                        "final listing (op #{index}): {} select {} still waits on a timer due \
                         at {at}, though the listing shows log time {clock}",
                        s["id"], select["id"]
                    ));
                }
            }
        }
    }
    report.checked.push(format!(
        "overdue timers: {} states in the final listing, {blocked} blocked timers, log time {clock}",
        states.len()
    ));
}

/// The log time a successful write carried, if its answer shows it.
fn write_time(op: &Op) -> Option<u64> {
    let body = op.outcome.ok()?;
    match &op.call {
        Call::Create { .. } | Call::Update { .. } => body["updated_at"].as_u64(),
        Call::Poll { .. } => body
            .as_array()?
            .iter()
            .filter_map(|s| s["lease"]["granted_at"].as_u64())
            .max(),
        _ => None,
    }
}

fn monotonic(ops: &[Op], report: &mut Report) {
    let mut writes: Vec<(usize, &Op, u64)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| write_time(op).map(|t| (i, op, t)))
        .collect();
    let mut by_end: Vec<(u64, u64, usize)> =
        writes.iter().map(|(i, op, t)| (op.end, *t, *i)).collect();
    by_end.sort();
    writes.sort_by_key(|(_, op, _)| op.start);
    let mut k = 0;
    let mut max_before: Option<(u64, usize)> = None;
    let mut reported = 0;
    for (i, op, t) in &writes {
        while k < by_end.len() && by_end[k].0 < op.start {
            if max_before.is_none_or(|(m, _)| by_end[k].1 > m) {
                max_before = Some((by_end[k].1, by_end[k].2));
            }
            k += 1;
        }
        if let Some((m, j)) = max_before {
            if *t < m && reported < 20 {
                reported += 1;
                report.violation(format!(
                    "log time went back: op #{i} carries {t} but op #{j}, completed before it \
                     began, carried {m} ({} ms later): {} ; {}",
                    m - t,
                    describe(&ops[j]),
                    describe(op)
                ));
            }
        }
    }
    report.checked.push(format!(
        "log time monotonic: {} writes carrying log time",
        writes.len()
    ));
}
