//! Which pending states a poll should lease: read from a replica, outside apply.
//!
//! A poll reads first and proposes [`Op::LeasePending`](super::Op::LeasePending) only
//! when it found something (design.md §3.2: a poll that finds nothing writes nothing). The
//! choice need not be deterministic — apply re-checks each state it is given — so it is
//! made here, by whichever of two scans finishes first:
//! - the pending states of every prefix in poll order (highest priority first, then
//!   oldest), skipping other prefixes, which ends as soon as `limit` states match or
//!   the priorities fall below `min_priority` (quick when the prefix is common);
//! - the pending states of this prefix only, by id, all of them, then ordered (quick
//!   when the prefix is rare, however many other states are pending).
//!
//! Run in lock step, the search costs about twice the cheaper of the two, so a worker
//! polling a rare prefix is not slowed by a backlog elsewhere, nor one polling a common
//! prefix by how many states its prefix has.

use std::cmp::Reverse;

use super::keys;
use super::store::{Store, StoreError, Table};
use super::types::Millis;

/// Up to `limit` ids of deliverable, polled states whose id starts with `prefix` and
/// whose priority is at least `min_priority`: highest priority first, oldest pending
/// first within a priority.
pub fn candidates<S: Store + ?Sized>(
    store: &S,
    prefix: &str,
    min_priority: u8,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut in_order = store.scan_from(Table::PendingPoll, &[]);
    let mut by_id = store.scan_from(Table::PendingPollIds, prefix.as_bytes());
    let mut found = Vec::new();
    let mut of_prefix: Vec<(Reverse<u8>, Millis, String)> = Vec::new();
    loop {
        match in_order.next().transpose()? {
            None => return Ok(found),
            Some((key, _)) => {
                let (priority, _, id) = keys::parse_pending(&key)?;
                if priority < min_priority {
                    return Ok(found);
                }
                if id.starts_with(prefix) {
                    found.push(id);
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
        }
        match by_id.next().transpose()? {
            Some((key, _)) if key.starts_with(prefix.as_bytes()) => {
                let (id, priority, since) = keys::parse_pending_by_id(&key)?;
                if priority >= min_priority {
                    of_prefix.push((Reverse(priority), since, id));
                }
            }
            _ => {
                of_prefix.sort();
                let best = of_prefix.into_iter().take(limit);
                return Ok(best.map(|(_, _, id)| id).collect());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemStore;
    use crate::engine::Tx;

    fn store(pending: &[(&str, u8, Millis)]) -> MemStore {
        let mut store = MemStore::new();
        let mut tx = Tx::new(&store);
        for (id, priority, since) in pending {
            let in_order = keys::pending(*priority, *since, id);
            tx.put(Table::PendingPoll, in_order, Vec::new());
            let by_id = keys::pending_by_id(id, *priority, *since);
            tx.put(Table::PendingPollIds, by_id, Vec::new());
        }
        let writes = tx.into_writes();
        store.commit(writes);
        store
    }

    #[test]
    fn oldest_first_within_the_prefix_whichever_scan_ends_first() {
        let mut pending: Vec<(String, u8, Millis)> =
            (0..50).map(|i| (format!("other-{i}"), 0, i)).collect();
        pending.push(("job-b".into(), 0, 70));
        pending.push(("job-a".into(), 0, 80));
        pending.push(("job-c".into(), 0, 60));
        let refs: Vec<(&str, u8, Millis)> = pending
            .iter()
            .map(|(id, p, t)| (id.as_str(), *p, *t))
            .collect();
        let store = store(&refs);
        assert_eq!(
            candidates(&store, "job-", 0, 2).unwrap(),
            ["job-c", "job-b"],
            "rare prefix: found by id, ordered by time"
        );
        assert_eq!(candidates(&store, "", 0, 1).unwrap(), ["other-0"]);
        assert_eq!(
            candidates(&store, "other-4", 0, 3).unwrap(),
            ["other-4", "other-40", "other-41"]
        );
        assert!(candidates(&store, "none", 0, 5).unwrap().is_empty());
    }

    #[test]
    fn higher_priorities_first_and_none_below_the_minimum() {
        let store = store(&[("a", 0, 1), ("b", 5, 9), ("c", 5, 3), ("d", 9, 20)]);
        assert_eq!(candidates(&store, "", 0, 4).unwrap(), ["d", "c", "b", "a"]);
        assert_eq!(candidates(&store, "b", 0, 4).unwrap(), ["b"]);
        assert_eq!(candidates(&store, "", 5, 4).unwrap(), ["d", "c", "b"]);
        assert!(candidates(&store, "a", 1, 4).unwrap().is_empty());
    }
}
