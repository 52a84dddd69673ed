//! Snapshots for the log's size, not only its length.
//!
//! openraft takes a snapshot every `--snapshot-threshold` entries and then purges the
//! log behind it, keeping that many entries. An entry carries up to 2 MiB, so 10,000
//! of them could hold gigabytes of values long since received: 100 sends of 900 KB
//! kept 117 MB of log per node (`benches/space_per_value.sh`). So each node also takes
//! a snapshot once its log holds more than [`NodeConfig::snapshot_log_bytes`] (16 MiB)
//! of applied entries, or as many as the current snapshot's tables file if that is
//! larger, and purges its log up to that snapshot. Tied to the tables' size, a snapshot
//! is never taken to free fewer bytes of log than it writes, so a large state is not
//! rewritten for a little log; large values cost a snapshot no bytes (it links their
//! files, `crate::raft::snapshot_files`), so the limit can be low: until the log drops
//! an entry, a value it carries that still waits in a channel is on disk twice.
//!
//! openraft's `purge_log` does not keep `--snapshot-threshold` entries: a follower
//! that falls behind by more gets the snapshot instead. The purge still keeps to the
//! one purge rule (design.md §4): the log store never purges past the durable applied
//! index or a durable snapshot, and a snapshot is durable once built.
//!
//! A snapshot also keeps the files of the large values it refers to, and once those
//! values are received only the snapshot holds them, until the next one. So every
//! [`HELD_ALONE_EVERY`] the task also counts those bytes and takes a snapshot once they
//! reach the same limit: the new one does not refer to them, and their files go.
//!
//! What counts is the bytes of entries already applied, which a snapshot taken now
//! lets the log drop: entries not yet applied (a follower catching up) stay whatever
//! is done, and counting them would make snapshots back to back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

#[cfg(doc)]
use super::NodeConfig;
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::{snapshot_bytes, snapshot_bytes_held_alone};
use crate::raft::Raft;

/// How often the task counts the value files that only the snapshot still holds.
const HELD_ALONE_EVERY: Duration = Duration::from_secs(5);

/// Takes snapshots for the log's size until `shutdown`: once `log` holds `min` bytes of
/// applied entries, or as many as the current snapshot in the directory `snapshots`.
/// Also once the snapshot alone holds that many bytes of value files: a new snapshot
/// refers to none of them, and their links go.
pub async fn run(
    raft: Raft,
    log: LogStore,
    min: u64,
    snapshots: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held = log.held_bytes();
    let mut metrics = raft.metrics();
    let mut held_alone_tick = tokio::time::interval(HELD_ALONE_EVERY);
    held_alone_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = 0u64;
    loop {
        let limit = min.max(snapshot_bytes(&snapshots));
        // Below the limit only the log reaching it wakes this task, not every append
        // and every turn of openraft's core loop (docs/performance.md, "Hand-offs per
        // write"). At or over it, Raft's metrics do as well: what is applied moves with
        // them, and a purge the log store holds back until the state machine is durable
        // (crate::raft::log_store, "Purging: one rule") is asked for again on them.
        log.notify_held_from(limit);
        // After a round, something must change before the next: never a busy loop.
        let mut wait = rounds > 0;
        // Why a round is due, and how many bytes it lets go.
        let (why, bytes) = loop {
            if wait {
                let over = *held.borrow() >= limit;
                let count_held_alone = tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    changed = held.changed() => if changed.is_err() { return } else { false },
                    changed = metrics.changed(), if over => if changed.is_err() { return } else { false },
                    _ = held_alone_tick.tick() => true,
                };
                if count_held_alone {
                    let alone = held_alone(&snapshots).await;
                    if alone >= limit {
                        break ("value files only the snapshot holds", alone);
                    }
                    continue;
                }
            }
            wait = true;
            let applied = metrics.borrow_and_update().last_applied;
            // Cheap first: the whole log, then what is applied of it.
            if *held.borrow_and_update() >= limit {
                if let Some(applied) = applied {
                    let bytes = log.held_bytes_through(applied.index);
                    if bytes >= limit {
                        break ("applied entries in the log", bytes);
                    }
                }
            }
        };
        rounds += 1;
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
        if metrics.wait_for(|m| m.snapshot >= applied).await.is_err() {
            return false;
        }
    }
    let Some(snapshot) = metrics.borrow().snapshot else {
        return true;
    };
    if raft.trigger().purge_log(snapshot.index).await.is_err() {
        return false;
    }
    // A leader purges once no replication still reads the entries.
    let purged = metrics.wait_for(|m| m.purged >= Some(snapshot)).await;
    purged.is_ok()
}
