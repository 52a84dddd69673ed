//! Snapshots for the log's size, not only its length.
//!
//! openraft takes a snapshot every `--snapshot-threshold` entries and then purges the
//! log behind it, keeping that many entries. An entry carries up to 2 MiB, so 10,000
//! of them could hold gigabytes of values long since received: 100 sends of 900 KB
//! kept 117 MB of log per node (`benches/space_per_value.sh`). So each node also takes
//! a snapshot once its log holds more than [`NodeConfig::snapshot_log_bytes`] (64 MiB)
//! or the current snapshot's size, whichever is larger, and purges its log up to that
//! snapshot. Tied to the
//! snapshot's size, a snapshot is never taken to free fewer bytes of log than it
//! writes, so a large state is not rewritten for a little log.
//!
//! openraft's `purge_log` does not keep `--snapshot-threshold` entries: a follower
//! that falls behind by more gets the snapshot instead. The purge still keeps to the
//! one purge rule (design.md §4): the log store never purges past the durable applied
//! index or a durable snapshot, and a snapshot is durable once built.
//!
//! After a round, the next one waits for the log to reach the limit again, or — if
//! the log still holds more (entries not yet applied when the snapshot was built) —
//! to grow by half the limit, so a backlog never makes snapshots back to back.

use std::path::PathBuf;

use tokio::sync::watch;

#[cfg(doc)]
use super::NodeConfig;
use crate::raft::state_machine::snapshot_bytes;
use crate::raft::Raft;

/// Takes snapshots for the log's size (`held` follows it) until `shutdown`: once it
/// holds `min` bytes or the size of the current snapshot in the directory `snapshots`.
pub async fn run(
    raft: Raft,
    mut held: watch::Receiver<u64>,
    min: u64,
    snapshots: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut after_round = 0;
    loop {
        let limit = min.max(snapshot_bytes(&snapshots));
        let trigger = limit.max(after_round + limit / 2);
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            reached = held.wait_for(|bytes| *bytes >= trigger) => if reached.is_err() { return },
        }
        let bytes = *held.borrow();
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            done = round(&raft) => if !done { return },
        }
        after_round = *held.borrow();
        tracing::info!(
            before = bytes,
            after = after_round,
            limit,
            "purged the log after a snapshot taken for its size"
        );
    }
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
