//! Lease exclusivity by the server's own clock: no two leases on one state overlap in
//! log time.
//!
//! Every lease any answer showed (polls, reads, updates, listings) is collected with
//! its `granted_at` and the earliest `expires_at` seen (the workload only ever extends
//! a lease to end later). A lease ends at its expiry or, earlier, when an update under
//! it succeeds (at that update's `updated_at`) or it is given back. So for two leases
//! L1, L2 on one incarnation of a state with L1 granted first, L2 must be granted no
//! earlier than L1's expiry or its successful update — unless an update or release
//! with L1's token whose log time is unknown (a release, or an unknown outcome) was
//! made before L2 was seen, which could have ended L1 in time; or a delete of the
//! state between the two.

use std::collections::{BTreeMap, HashMap};

use super::super::history::{Call, Op, Outcome};
use super::linear::describe;
use super::{seen_states, Report};

#[derive(Debug)]
struct Lease {
    granted_at: u64,
    expires_at: u64,
    /// Real time (µs) by which the lease was certainly granted: the end of the first
    /// op that showed it.
    seen_by: u64,
    /// Real time (µs) when the first op that showed it began.
    first_seen: u64,
    /// An op that showed it.
    index: usize,
}

/// Runs the check.
pub fn check(ops: &[Op], report: &mut Report) {
    // incarnation -> token -> lease
    let mut leases: BTreeMap<(String, u64), HashMap<String, Lease>> = BTreeMap::new();
    for seen in seen_states(ops) {
        let lease = &seen.state["lease"];
        let (Some(token), Some(granted_at), Some(expires_at)) = (
            lease["token"].as_str(),
            lease["granted_at"].as_u64(),
            lease["expires_at"].as_u64(),
        ) else {
            continue;
        };
        let entry = leases
            .entry(seen.incarnation())
            .or_default()
            .entry(token.to_owned())
            .or_insert(Lease {
                granted_at,
                expires_at,
                seen_by: seen.op.end,
                first_seen: seen.op.start,
                index: seen.index,
            });
        entry.expires_at = entry.expires_at.min(expires_at);
        entry.seen_by = entry.seen_by.min(seen.op.end);
        entry.first_seen = entry.first_seen.min(seen.op.start);
        if granted_at != entry.granted_at {
            report.violation(format!(
                "lease {token} on {} showed granted_at {} and {granted_at}: {} ; {}",
                seen.id(),
                entry.granted_at,
                describe(&ops[entry.index]),
                describe(seen.op)
            ));
        }
    }
    // token -> log time of a successful update under it
    let mut consumed: HashMap<&str, u64> = HashMap::new();
    // token -> earliest real start of an op that may have ended it at an unknown time
    let mut maybe_ended: HashMap<&str, u64> = HashMap::new();
    for op in ops {
        let (token, update) = match &op.call {
            Call::Update { token, .. } => (token.as_str(), true),
            Call::Release { token, .. } => (token.as_str(), false),
            _ => continue,
        };
        match (&op.outcome, update) {
            (Outcome::Ok { body, .. }, true) => {
                if let Some(at) = body["updated_at"].as_u64() {
                    consumed.insert(token, at);
                }
            }
            (Outcome::Ok { .. }, false) | (Outcome::Unknown(_), _) => {
                let start = maybe_ended.entry(token).or_insert(op.start);
                *start = (*start).min(op.start);
            }
            (Outcome::Fail { .. }, _) => {}
        }
    }
    // state id -> (start, end) of deletes that may have happened; a delete ends every
    // lease on the state. (While log time stands still, a state deleted and made again
    // has the same `created_at`, so incarnations alone cannot tell leases apart.)
    let mut deletes: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for op in ops {
        if let (Call::Delete { id }, false) = (&op.call, matches!(op.outcome, Outcome::Fail { .. }))
        {
            let end = if op.outcome.is_unknown() {
                u64::MAX
            } else {
                op.end
            };
            deletes
                .entry(id.as_str())
                .or_default()
                .push((op.start, end));
        }
    }
    let mut pairs = 0usize;
    let mut count = 0usize;
    for ((id, _), by_token) in &leases {
        let mut list: Vec<(&String, &Lease)> = by_token.iter().collect();
        list.sort_by_key(|(_, l)| l.granted_at);
        count += list.len();
        for (i, (t1, l1)) in list.iter().enumerate() {
            for (t2, l2) in &list[i + 1..] {
                pairs += 1;
                let overlaps = |(ta, a): (&str, &Lease), b: &Lease| {
                    let end = consumed
                        .get(ta)
                        .map_or(a.expires_at, |u| (*u).min(a.expires_at));
                    let deleted = deletes.get(id.as_str()).is_some_and(|d| {
                        d.iter()
                            .any(|(start, end)| *start < b.seen_by && *end > a.first_seen)
                    });
                    let given_back = maybe_ended.get(ta).is_some_and(|start| *start < b.seen_by);
                    b.granted_at < end && !deleted && !given_back
                };
                // Granted at the same log time (a clock that stood still), either may
                // have come first: only a pair that overlaps both ways is an anomaly.
                let tie = l1.granted_at == l2.granted_at;
                if !overlaps((t1, l1), l2) || tie && !overlaps((t2, l2), l1) {
                    continue;
                }
                let end = consumed
                    .get(t1.as_str())
                    .map_or(l1.expires_at, |u| (*u).min(l1.expires_at));
                report.violation(format!(
                    "two leases on {id} overlap in log time: {t1} granted at {} lasting to {end}, \
                     {t2} granted at {}: {} ; {}",
                    l1.granted_at,
                    l2.granted_at,
                    describe(&ops[l1.index]),
                    describe(&ops[l2.index])
                ));
            }
        }
    }
    report.checked.push(format!(
        "lease exclusivity: {count} leases on {} state incarnations, {pairs} pairs",
        leases.len()
    ));
}
