//! Channel values: nothing acknowledged is lost, nothing is received twice, nothing is
//! invented, nothing refused gets through, and channels are FIFO.
//!
//! Every value the workload sends is unique. A value is
//! - **acknowledged** if its HTTP send answered 200 or 202 (a 202 on a channel that
//!   was closed is not: closing drops parked senders, as Go's close panics them), or a
//!   state's send case was seen completed with `ok: true`;
//! - **refused** if its HTTP send definitely failed (408 withdrawn, 409 `would_block`
//!   or `closed`, ...) or a state's send was seen completed with `ok: false`;
//! - otherwise **maybe sent** (unknown outcome, or a state send never seen completed).
//!
//! A value sent under an `Idempotency-Key` may have been sent several times (retries of
//! an unknown outcome, with the same key): its attempts are one send, whose fate is the
//! answer the server gave to any of them — the answers under one key must agree — and
//! it must be received at most once like any value. The report counts those retries.
//!
//! A value is received by an HTTP receive that answered it, or by a state whose result
//! shows it (each result counted once, by state incarnation and `seq`). Receiving over
//! HTTP is at-most-once: an HTTP receive whose outcome is unknown may have taken a
//! value, so on each channel at most that many acknowledged values may be missing.
//!
//! FIFO: if send A was acknowledged before send B was made (real time), or A's state
//! send completed before B's in log time, then B must not be received before A — by
//! HTTP receives that did not overlap, or by state receives in log time.
//!
//! One documented exception (README, Guarantees; design.md §3.3): a value handed at once
//! (200) to a parked HTTP receive whose caller never took it goes back to the head of
//! the channel when that receive is withdrawn, so values sent in the meantime may be
//! received first. Such a receive was parked when the value was sent, so it is a
//! blocking receive (`wait` > 0) on the value's channel that began before the send
//! ended, and it answered no value. Its withdrawal comes before its answer (408 and
//! other refusals), or, when its caller gave up without one, once its node sees the
//! caller gone (at once on a leader that goes on leading, or in the first entry after
//! its commits stalled, as the withdrawal is proposed again; a leader that stopped has its
//! parked receives withdrawn by its successor's first command, before any send of the
//! new term, or by its own first entry if it restarted into its old term). So such a value A counts as sent when the last receive that overlapped
//! A's send and answered no value ended; a receive that ended before A's send began
//! excuses nothing. (Not covered: a caller gone and its node not yet aware, a network
//! delay, while a value reaches the receive and the handler stops between the offer
//! and its claim — the checker would report that history.)

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::super::history::{Call, Op, Outcome};
use super::linear::describe;
use super::{seen_states, show, Report};

/// What became of a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Acked,
    Refused,
    Maybe,
}

/// One value's send.
#[derive(Clone, Debug)]
struct Sent {
    chan: String,
    fate: Fate,
    /// Real-time interval of an HTTP send (µs).
    http: Option<(u64, u64)>,
    /// Log time at which a state send completed.
    at: Option<u64>,
    /// History index of the op that sent it (or registered it).
    index: usize,
}

/// One receipt of a value.
#[derive(Clone, Debug)]
struct Received {
    chan: String,
    /// Real-time interval of an HTTP receive.
    http: Option<(u64, u64)>,
    /// Log time of a state receive.
    at: Option<u64>,
    index: usize,
}

/// Runs the checks of this module.
pub fn check(ops: &[Op], report: &mut Report) {
    let closed: Vec<&str> = ops
        .iter()
        .filter_map(|op| match &op.call {
            Call::Close { chan } => Some(chan.as_str()),
            _ => None,
        })
        .collect();
    let (mut sent, keyed) = http_sends(ops, &closed, report);
    let registered = state_sends(ops, &mut sent);
    let (received, unknown_recvs) = receipts(ops, &registered, report);

    let mut lost: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut acked = 0;
    for (value, send) in &sent {
        let got = received.get(value).map_or(0, Vec::len);
        match send.fate {
            Fate::Acked => {
                acked += 1;
                if got == 0 {
                    lost.entry(&send.chan).or_default().push(value);
                }
            }
            Fate::Refused if got > 0 => report.violation(format!(
                "value {value} was received though its send was refused: send {} ; receipt {}",
                describe(&ops[send.index]),
                describe(&ops[received[value][0].index])
            )),
            _ => {}
        }
    }
    for (value, receipts) in &received {
        let Some(send) = sent.get(value) else {
            report.violation(format!(
                "value {value} was received but never sent: {}",
                describe(&ops[receipts[0].index])
            ));
            continue;
        };
        if receipts.len() > 1 {
            let evidence: Vec<String> = receipts.iter().map(|r| describe(&ops[r.index])).collect();
            let under = keyed.keys.get(value).map_or(String::new(), |(key, n)| {
                format!(" (sent under Idempotency-Key {key}, {n} attempts)")
            });
            report.violation(format!(
                "value {value}{under} was received {} times: {}",
                receipts.len(),
                evidence.join(" ; ")
            ));
        }
        if let Some(r) = receipts.iter().find(|r| r.chan != send.chan) {
            report.violation(format!(
                "value {value} sent on {} was received on {}",
                send.chan, r.chan
            ));
        }
    }
    for (chan, values) in &lost {
        let allowed = unknown_recvs.get(*chan).copied().unwrap_or(0);
        if values.len() > allowed {
            report.violation(format!(
                "{} acknowledged values sent on {chan} were never received, and only {allowed} \
                 HTTP receives on it had an unknown outcome: {}",
                values.len(),
                values
                    .iter()
                    .take(10)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let keyed_once = keyed
        .keys
        .keys()
        .filter(|v| sent[*v].fate == Fate::Acked && received.get(*v).map(Vec::len) == Some(1))
        .count();
    let keyed_twice = keyed
        .keys
        .keys()
        .filter(|v| received.get(*v).map_or(0, Vec::len) > 1)
        .count();
    let [r_acked, r_refused, r_maybe] = keyed.retried_fates;
    report.checked.push(format!(
        "keyed sends: {} values sent under an Idempotency-Key, {} of them sent again after \
         an unknown outcome ({} retries; in the end {r_acked} acknowledged, {r_refused} \
         refused, {r_maybe} unknown); answers compared under each key; {keyed_once} \
         acknowledged keyed values received exactly once, {keyed_twice} more than once",
        keyed.values, keyed.retried, keyed.retries,
    ));
    let fifo_pairs = check_fifo(ops, &sent, &received, report);
    let missing: usize = lost.values().map(Vec::len).sum();
    report.checked.push(format!(
        "channel values: {} sent ({acked} acknowledged, {} refused, {} maybe), {} received; \
         {missing} acknowledged unreceived against {} unknown HTTP receives; \
         {fifo_pairs} ordered pairs checked for FIFO",
        sent.len(),
        sent.values().filter(|s| s.fate == Fate::Refused).count(),
        sent.values().filter(|s| s.fate == Fate::Maybe).count(),
        received.values().map(Vec::len).sum::<usize>(),
        unknown_recvs.values().sum::<usize>(),
    ));
}

/// What the sends under Idempotency-Keys came to (see [`http_sends`]).
#[derive(Debug, Default)]
struct Keyed {
    /// Values sent under a key.
    values: usize,
    /// Of those, values sent more than once (after an unknown outcome).
    retried: usize,
    /// Attempts beyond the first, in all.
    retries: usize,
    /// Retried values by their fate in the end: acknowledged, refused, unknown.
    retried_fates: [usize; 3],
    /// The key of each keyed value, with its number of attempts.
    keys: HashMap<String, (String, usize)>,
}

/// Values sent over HTTP, and what the keyed ones came to.
///
/// A value sent under an `Idempotency-Key` may have several attempts: the workload sends
/// it again while the outcome is unknown. Every answer the server gave under one key is
/// the reply of the key's one application (design.md §3), so the answers must agree —
/// same status, same code — or it is a violation; the value's fate is that answer's. A
/// refused connection (`unreachable`) or a write refused for a full disk (507
/// `disk_full`, before the key was looked up) is no answer: it leaves the fate to the
/// other attempts, or refuses the value if every attempt was refused so. An acknowledged
/// value counts as sent from its first attempt's start to the answer's end.
fn http_sends(ops: &[Op], closed: &[&str], report: &mut Report) -> (HashMap<String, Sent>, Keyed) {
    let mut attempts: HashMap<String, Vec<usize>> = HashMap::new();
    let mut order = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        let Call::Send { value, .. } = &op.call else {
            continue;
        };
        let list = attempts.entry(show(value)).or_default();
        if list.is_empty() {
            order.push(show(value));
        }
        list.push(index);
    }
    let mut sent = HashMap::new();
    let mut keyed = Keyed::default();
    for value in order {
        let list = &attempts[&value];
        let first = &ops[list[0]];
        let Call::Send { chan, key, .. } = &first.call else {
            unreachable!("attempts are sends");
        };
        let answers: Vec<usize> = list
            .iter()
            .copied()
            .filter(|i| match &ops[*i].outcome {
                Outcome::Ok { .. } => true,
                Outcome::Fail { code, .. } => code != "unreachable" && code != "disk_full",
                Outcome::Unknown(_) => false,
            })
            .collect();
        let same = |a: &Outcome, b: &Outcome| match (a, b) {
            (Outcome::Ok { status: x, .. }, Outcome::Ok { status: y, .. }) => x == y,
            (Outcome::Fail { status: x, code: c }, Outcome::Fail { status: y, code: d }) => {
                x == y && c == d
            }
            _ => false,
        };
        if let Some(other) = answers
            .iter()
            .find(|i| !same(&ops[**i].outcome, &ops[answers[0]].outcome))
        {
            report.violation(format!(
                "the answers under Idempotency-Key {} disagree: {} ; {}",
                key.as_deref().unwrap_or("(none)"),
                describe(&ops[answers[0]]),
                describe(&ops[*other])
            ));
        }
        let (index, fate) = match answers.first() {
            Some(i) => {
                let fate = match &ops[*i].outcome {
                    Outcome::Ok { status: 202, .. } if closed.contains(&chan.as_str()) => {
                        Fate::Maybe
                    }
                    Outcome::Ok { .. } => Fate::Acked,
                    _ => Fate::Refused,
                };
                (*i, fate)
            }
            None if list.iter().all(|i| !ops[*i].outcome.is_unknown()) => (list[0], Fate::Refused),
            None => (list[list.len() - 1], Fate::Maybe),
        };
        if let Some(key) = key {
            keyed.values += 1;
            keyed.keys.insert(value.clone(), (key.clone(), list.len()));
            if list.len() > 1 {
                keyed.retried += 1;
                keyed.retries += list.len() - 1;
                let slot = match fate {
                    Fate::Acked => 0,
                    Fate::Refused => 1,
                    Fate::Maybe => 2,
                };
                keyed.retried_fates[slot] += 1;
            }
        }
        let http = (fate == Fate::Acked).then_some((first.start, ops[index].end));
        let send = Sent {
            chan: chan.clone(),
            fate,
            http,
            at: None,
            index,
        };
        sent.insert(value, send);
    }
    (sent, keyed)
}

/// Values in states' send cases: (select id → (chan, value)), registering each as maybe
/// sent, then acknowledged or refused once a result shows the send completed.
fn state_sends(
    ops: &[Op],
    sent: &mut HashMap<String, Sent>,
) -> HashMap<String, Vec<(String, String)>> {
    let mut registered: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (index, op) in ops.iter().enumerate() {
        let selects = match &op.call {
            Call::Create { selects, .. } | Call::Update { selects, .. } => selects,
            _ => continue,
        };
        for select in selects.as_array().into_iter().flatten() {
            let id = select["id"].as_str().unwrap_or_default().to_owned();
            let mut cases = Vec::new();
            for case in select["cases"].as_array().into_iter().flatten() {
                let chan = case["chan"].as_str().unwrap_or_default().to_owned();
                if case["op"] == "send" {
                    let value = show(&case["data"]);
                    sent.entry(value.clone()).or_insert(Sent {
                        chan: chan.clone(),
                        fate: Fate::Maybe,
                        http: None,
                        at: None,
                        index,
                    });
                    cases.push((chan, value));
                } else {
                    cases.push((chan, String::new()));
                }
            }
            registered.insert(id, cases);
        }
    }
    for seen in seen_states(ops) {
        for result in seen.state["results"].as_array().into_iter().flatten() {
            if result["op"] != "send" {
                continue;
            }
            let select = result["select"].as_str().unwrap_or_default();
            let case = result["case"].as_u64().unwrap_or_default() as usize;
            let Some((_, value)) = registered.get(select).and_then(|c| c.get(case)) else {
                continue;
            };
            if let Some(send) = sent.get_mut(value) {
                send.fate = if result["ok"] == true {
                    Fate::Acked
                } else {
                    Fate::Refused
                };
                send.at = result["at"].as_u64();
            }
        }
    }
    registered
}

/// Every receipt of every value, and per channel the HTTP receives of unknown outcome.
fn receipts(
    ops: &[Op],
    registered: &HashMap<String, Vec<(String, String)>>,
    report: &mut Report,
) -> (HashMap<String, Vec<Received>>, HashMap<String, usize>) {
    let mut received: HashMap<String, Vec<Received>> = HashMap::new();
    let mut unknown: HashMap<String, usize> = HashMap::new();
    for (index, op) in ops.iter().enumerate() {
        let Call::Recv { chan, .. } = &op.call else {
            continue;
        };
        match &op.outcome {
            Outcome::Ok { body, .. } if body["ok"] == true => {
                received
                    .entry(show(&body["data"]))
                    .or_default()
                    .push(Received {
                        chan: chan.clone(),
                        http: Some((op.start, op.end)),
                        at: None,
                        index,
                    });
            }
            Outcome::Unknown(_) => *unknown.entry(chan.clone()).or_default() += 1,
            _ => {}
        }
    }
    let mut counted: HashMap<(String, u64, u64), ()> = HashMap::new();
    for seen in seen_states(ops) {
        let (id, created) = seen.incarnation();
        for result in seen.state["results"].as_array().into_iter().flatten() {
            if result["op"] != "recv" || result["ok"] != true {
                continue;
            }
            let seq = result["seq"].as_u64().unwrap_or_default();
            if counted.insert((id.clone(), created, seq), ()).is_some() {
                continue;
            }
            let chan = result["chan"].as_str().unwrap_or_default().to_owned();
            let select = result["select"].as_str().unwrap_or_default();
            let case = result["case"].as_u64().unwrap_or_default() as usize;
            let expected = registered.get(select).and_then(|c| c.get(case));
            if expected.is_some_and(|(c, _)| *c != chan) {
                report.violation(format!(
                    "state {id} result seq {seq} says channel {chan}, but its select {select} \
                     case {case} named another: {}",
                    describe(seen.op)
                ));
            }
            received
                .entry(show(&result["data"]))
                .or_default()
                .push(Received {
                    chan,
                    http: None,
                    at: result["at"].as_u64(),
                    index: seen.index,
                });
        }
    }
    (received, unknown)
}

/// When an HTTP send answered 200 may have gone back to the head of its channel: the
/// latest end of a blocking HTTP receive on that channel that overlapped the send and
/// answered no value, or whose outcome is unknown (see the module docs); `None` when no
/// receive could have been offered the value.
fn put_back_by(ops: &[Op], send: &Sent) -> Option<u64> {
    let (start, end) = send.http?;
    if !matches!(ops[send.index].outcome, Outcome::Ok { status: 200, .. }) {
        return None;
    }
    ops.iter()
        .filter(|op| match &op.call {
            Call::Recv { chan, wait } => *chan == send.chan && *wait > 0,
            _ => false,
        })
        .filter(|op| op.start <= end && op.end >= start)
        .filter(|op| !matches!(&op.outcome, Outcome::Ok { body, .. } if body["ok"] == true))
        .map(|op| op.end)
        .max()
}

/// FIFO over every ordered pair of acknowledged sends on one channel; returns how many
/// ordered pairs with comparable receipts were checked.
fn check_fifo(
    ops: &[Op],
    sent: &HashMap<String, Sent>,
    received: &HashMap<String, Vec<Received>>,
    report: &mut Report,
) -> usize {
    type Entry<'a> = (&'a String, &'a Sent, &'a Received, Option<u64>);
    let mut by_chan: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
    for (value, send) in sent {
        if send.fate != Fate::Acked {
            continue;
        }
        if let Some([only]) = received.get(value).map(Vec::as_slice) {
            by_chan.entry(&send.chan).or_default().push((
                value,
                send,
                only,
                put_back_by(ops, send),
            ));
        }
    }
    let mut pairs = 0;
    for list in by_chan.values() {
        for (va, sa, ra, put_back) in list {
            for (vb, sb, rb, _) in list {
                let a_before_b = match (sa.http, sb.http, sa.at, sb.at) {
                    (Some((_, a_end)), Some((b_start, _)), _, _) => {
                        a_end.max(put_back.unwrap_or(0)) < b_start
                    }
                    (_, _, Some(a_at), Some(b_at)) => a_at < b_at,
                    _ => false,
                };
                if !a_before_b {
                    continue;
                }
                let b_got_first = match (ra.http, rb.http, ra.at, rb.at) {
                    (Some((a_start, _)), Some((_, b_end)), _, _) => Some(b_end < a_start),
                    (_, _, Some(a_at), Some(b_at)) => Some(b_at < a_at),
                    _ => None,
                };
                let Some(b_got_first) = b_got_first else {
                    continue;
                };
                pairs += 1;
                if b_got_first {
                    report.violation(format!(
                        "FIFO broken on {}: {va} was sent before {vb} but received after it: \
                         send {} ; send {} ; receipt {} ; receipt {}",
                        sa.chan,
                        describe(&ops[sa.index]),
                        describe(&ops[sb.index]),
                        describe(&ops[rb.index]),
                        describe(&ops[ra.index]),
                    ));
                }
            }
        }
    }
    pairs
}

/// A value as the workload makes them (for hand-made histories in tests).
pub fn value(s: &str) -> Value {
    Value::String(s.to_owned())
}
