//! Snapshots for the log's size, not only its length.
//!
//! openraft takes a snapshot every `--snapshot-threshold` entries and then purges the
//! log behind it, keeping that many entries. An entry carries up to 2 MiB, so 10,000
//! of them could hold gigabytes of values long since received: 100 sends of 900 KB
//! kept 117 MB of log per node (`benches/space_per_value.sh`). So each node also takes
//! a snapshot once its log holds more than [`NodeConfig::snapshot_log_bytes`] (64 MiB)
//! of applied entries, or as many as the current snapshot's tables file if that is
//! larger, and purges its log up to that snapshot. Tied to the tables' size, a snapshot
//! is never taken to free fewer bytes of log than it writes, so a large state is not
//! rewritten for a little log.
//!
//! Large values lower the limit to a quarter (16 MiB; still at least the tables'
//! size): until the log drops its entry, a large value still waiting in a channel is on
//! disk twice, in the entry and in its file, and a snapshot costs it nothing (it links
//! the file, `crate::raft::snapshot_files`). The store counts the bytes of large values
//! it writes to files, and once that many were applied since the last round, and the
//! log holds that many, a round is due. A count, not the log's size, wakes the task
//! for them: small writes alone keep the 64 MiB limit, and the task does not wake per
//! append (docs/performance.md, "Hand-offs per write").
//!
//! openraft's `purge_log` does not keep `--snapshot-threshold` entries: a follower
//! that falls behind by more gets the snapshot instead. The purge still keeps to the
//! one purge rule (design.md §4): the log store never purges past the durable applied
//! index or a durable snapshot, and a snapshot is durable once built.
//!
//! A snapshot also keeps the files of the large values it refers to, and once those
//! values are received only the snapshot holds them, until the next one. So every
//! [`HELD_ALONE_EVERY`] the task also counts those bytes and takes a snapshot once they
//! reach the lower limit: the new one does not refer to them, and their files go.
//!
//! What counts is the bytes of entries already applied, which a snapshot taken now
//! lets the log drop: entries not yet applied (a follower catching up) stay whatever
//! is done, and counting them would make snapshots back to back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

#[cfg(doc)]
use super::NodeConfig;
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::{snapshot_bytes, snapshot_bytes_held_alone};
use crate::raft::Raft;

/// How often the task counts the value files that only the snapshot still holds.
const HELD_ALONE_EVERY: Duration = Duration::from_secs(5);

/// What woke the task.
enum Woke {
    /// The log's size, Raft's metrics, or a large value written to a file of its own.
    Changed,
    /// Time to count the files only the snapshot holds.
    HeldAloneTick,
}

/// Takes snapshots for the log's size until `shutdown`: once `log` holds `min` bytes of
/// applied entries, or as many as the current snapshot in the directory `snapshots`;
/// once it holds a quarter of `min` (or that snapshot's size) while large values of as
/// many bytes were applied since the last round (`large_written` counts the bytes of
/// the value files written); and once the snapshot alone holds that many bytes of value
/// files, which a new snapshot does not refer to.
pub async fn run(
    raft: Raft,
    log: LogStore,
    min: u64,
    snapshots: PathBuf,
    mut large_written: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held = log.held_bytes();
    let mut metrics = raft.metrics();
    let mut held_alone_tick = tokio::time::interval(HELD_ALONE_EVERY);
    held_alone_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut large_at_round = *large_written.borrow_and_update();
    let mut rounds = 0u64;
    loop {
        let tables = snapshot_bytes(&snapshots);
        let limit = min.max(tables);
        let large_limit = (min / 4).max(tables);
        // Below the limit only the log reaching it wakes this task, not every append
        // and every turn of openraft's core loop (docs/performance.md, "Hand-offs per
        // write"). At or over it, Raft's metrics do as well: what is applied moves with
        // them, and a purge the log store holds back until the state machine is durable
        // (crate::raft::log_store, "Purging: one rule") is asked for again on them.
        // Large values wake it as they are applied: they are rare, and each costs far
        // more than the wake.
        log.notify_held_from(limit);
        // After a round, something must change before the next: never a busy loop.
        let mut wait = rounds > 0;
        // Why a round is due, and how many bytes it lets go.
        let (why, bytes) = loop {
            if wait {
                let over = *held.borrow() >= limit;
                let woke = tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    changed = held.changed() => changed.is_ok().then_some(Woke::Changed),
                    changed = metrics.changed(), if over => {
                        changed.is_ok().then_some(Woke::Changed)
                    }
                    changed = large_written.changed() => changed.is_ok().then_some(Woke::Changed),
                    _ = held_alone_tick.tick() => Some(Woke::HeldAloneTick),
                };
                match woke {
                    // A sender is gone: the node is stopping.
                    None => return,
                    Some(Woke::HeldAloneTick) => {
                        let alone = held_alone(&snapshots).await;
                        if alone >= large_limit {
                            break ("value files only the snapshot holds", alone);
                        }
                        continue;
                    }
                    Some(Woke::Changed) => {}
                }
            }
            wait = true;
            let applied = metrics.borrow_and_update().last_applied.map(|id| id.index);
            // Until the log drops it, a large value still waiting is on disk twice: in
            // its entry and in its file. `large_limit` is never above `limit`.
            let large = *large_written.borrow_and_update() - large_at_round;
            let (why, due_at) = if large >= large_limit {
                ("large values in the log", large_limit)
            } else {
                ("applied entries in the log", limit)
            };
            // Cheap first: the whole log, then what is applied of it.
            let held_now = *held.borrow_and_update();
            if let Some(applied) = applied.filter(|_| held_now >= due_at) {
                let bytes = log.held_bytes_through(applied);
                if bytes >= due_at {
                    break (why, bytes);
                }
            }
        };
        rounds += 1;
        // The round's snapshot covers at least what is applied now.
        large_at_round = *large_written.borrow();
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            done = round(&raft) => if !done { return },
        }
        tracing::info!(
            why,
            bytes,
            left = *held.borrow(),
            limit,
            "purged the log after a snapshot taken for its size"
        );
    }
}

/// Bytes of the value files that only the current snapshot in the directory
/// `snapshots` holds (0 if they cannot be counted: the next count tries again).
async fn held_alone(snapshots: &Path) -> u64 {
    let dir = snapshots.to_owned();
    tokio::task::spawn_blocking(move || snapshot_bytes_held_alone(&dir))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0)
}

/// Makes sure a snapshot covers what was applied when the round began, purges the log
/// up to it and waits until openraft has. False if Raft stopped.
async fn round(raft: &Raft) -> bool {
    let mut metrics = raft.metrics();
    let (applied, snapshot) = {
        let m = metrics.borrow_and_update();
        (m.last_applied, m.snapshot)
    };
    if snapshot < applied {
        if raft.trigger().snapshot().await.is_err() {
            return false;
        }
        if metrics.wait_until(|m| m.snapshot >= applied).await.is_err() {
            return false;
        }
    }
    let Some(snapshot) = metrics.borrow_watched().snapshot else {
        return true;
    };
    if raft.trigger().purge_log(snapshot.index).await.is_err() {
        return false;
    }
    // A leader purges once no replication still reads the entries.
    let purged = metrics.wait_until(|m| m.purged >= Some(snapshot)).await;
    purged.is_ok()
}
