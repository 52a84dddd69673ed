//! Replication: the engine's commands in an openraft 0.10 log, over HTTP.
//!
//! # How a write travels
//! A client's [`Op`](crate::engine::Op) reaches [`Node::write`](crate::node::Node::write)
//! on the leader. The node stamps it with leader time and a seed, packs it with the other
//! writes waiting at that moment into one [`Batch`] (group commit), and proposes the batch
//! as one log entry. openraft appends the entry to the [`log_store`] (answered only after
//! `fdatasync`), replicates it through [`network`] to the followers' [`server`] routes,
//! and once a majority has it, every replica's [`state_machine`] applies it: each command
//! of the batch through [`engine::apply`](crate::engine::apply) into one overlay, committed
//! in one sled transaction together with the applied index. The leader answers each
//! caller from its slot of the batch's [`Replies`].
//!
//! # Why a batch per entry
//! Every entry costs a trip through openraft's core, an append to the log with its
//! flush, and a place in a replication round, on the leader and on each follower. A
//! batch lets any number of concurrent writers share one entry: one flush and one
//! replication round; applying the batch in order keeps every command's effect exactly
//! as if it had its own entry.
//!
//! # Layout
//! - [`auth`]: the MAC on every `/raft/*` request.
//! - [`log_store`]: entries, vote, committed index and purge point, over the
//!   write-ahead log ([`crate::storage::wal`]).
//! - [`state_machine`]: applying batches, building and installing snapshots.
//! - [`snapshot`]: the snapshot file format, streamed to and from the sled trees.
//! - [`network`]: the reqwest client for `/raft/*`.
//! - [`peers`]: which peers answer it, logged once per outage.
//! - [`server`]: the axum handlers for `/raft/*`.

pub mod auth;
pub mod log_store;
pub mod log_tail;
pub mod network;
pub mod peers;
pub mod server;
pub mod snapshot;
pub mod snapshot_data;
pub mod snapshot_files;
pub mod state_machine;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::{Applied, Command};

/// One log entry's worth of commands, applied in order (group commit). Shared, not
/// copied, by whoever reads the entry from the log's tail (the replication streams, the
/// apply; docs/design.md §4, "The log's tail"); its encoding is the commands' list's.
/// A newtype because openraft wants `Display` on the log's data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Batch(pub Arc<Vec<Command>>);

impl Batch {
    /// A batch of `commands`, in the order they are to be applied.
    pub fn new(commands: Vec<Command>) -> Self {
        Batch(Arc::new(commands))
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch of {} commands", self.0.len())
    }
}

/// What applying a [`Batch`] yields: one [`Applied`] per command, in batch order.
pub type Replies = Vec<Applied>;

openraft::declare_raft_types!(
    /// The openraft type configuration of slct.
    pub TypeConfig:
        D = Batch,
        R = Replies,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// A Raft instance of slct.
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;

/// A log entry's id: its leader (term and node) and index.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;

/// The leader that proposed an entry: its term and node id.
pub type LeaderId = openraft::alias::CommittedLeaderIdOf<TypeConfig>;

/// A vote: the term, the candidate or leader, and whether a quorum granted it.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;

/// A log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;

/// What a snapshot covers: its last log id and the membership at it.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// A membership config and the log id that carried it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;

/// What openraft's storage traits return on failure: the I/O error with what was being
/// done when it happened.
pub type StorageError = std::io::Error;

/// Wraps `e` as a storage error that says what was being done (`what`).
pub fn storage_err(what: &str, e: impl fmt::Display) -> StorageError {
    std::io::Error::other(format!("{what}: {e}"))
}

/// Largest encoded command: what one client request may add to the log (a 1 MiB body,
/// the default `--max-body`, with room to spare). A request whose command would be
/// larger is refused with 413 before it is proposed.
pub const MAX_COMMAND_BYTES: usize = 2 << 20;

/// Largest log entry (a group-commit batch stops growing before it passes this).
pub const MAX_ENTRY_BYTES: usize = MAX_COMMAND_BYTES;

/// Most entries in one append request (openraft's `max_payload_entries`).
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// Entries an append request carries, in bytes: it stops before passing this (but
/// carries at least one entry). openraft gives an append the heartbeat interval to
/// complete, follower's fsync included, so a request must stay small enough to land in
/// time; what is left goes in the next one ([`network`] answers a partial success).
pub const APPEND_BUDGET_BYTES: usize = 1 << 20;

/// Largest append request a follower accepts: one entry at its largest, and framing.
pub const MAX_APPEND_BYTES: usize = MAX_ENTRY_BYTES + APPEND_BUDGET_BYTES;
