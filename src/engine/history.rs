//! Each state's history (design.md §3.6): what happened to the process, newest first.
//!
//! Operations note events on the command's [`Ctx`](super::ctx) as they go; when the
//! context flushes, each state's events are numbered from the state's own counter and
//! written to [`Table::History`] under (state id, number), with the command's log time
//! and Raft index. Only the last `history_limit` events of a state are kept — the
//! command carries the limit (the leader's `--history-limit`), so every replica keeps
//! the same — and older ones are deleted in the same command. A deleted state's history
//! goes with it. With a limit of 0 nothing is recorded.
//!
//! Events are stored as JSON: they are read by operators, not on the hot path, and so
//! the stored form is the form shown. A completed case records its value's size, not
//! the value (the state's results hold values while they matter).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys;
use super::store::{Store, StoreError, Table, Tx};
use super::types::Millis;
use crate::codec::CodecError;

/// One event in a state's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Numbers a state's events in order (1, 2, ...).
    pub seq: u64,
    /// Log time of the command that produced it.
    pub at: Millis,
    /// Raft index of the entry that produced it.
    pub index: u64,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// What happened to a state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum What {
    /// The state was created.
    Created,
    /// A select was registered (it may complete in the same command).
    SelectRegistered {
        /// Select id.
        select: String,
    },
    /// A select completed through one of its cases.
    CaseCompleted {
        /// Select id.
        select: String,
        /// Index of the case.
        case: usize,
        /// `recv`, `send`, `timer` or `default`.
        op: String,
        /// Channel of a recv or send.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chan: Option<String>,
        /// Size in bytes of the value received (JSON text).
        size: usize,
        /// False for a receive from or send on a closed channel.
        ok: bool,
    },
    /// A lease was taken.
    Leased {
        /// `poller` or `callback`.
        to: String,
        /// The lease token.
        token: Uuid,
        /// When it lapses (log time).
        expires_at: Millis,
    },
    /// A lease was extended.
    LeaseExtended {
        /// The new expiry (log time).
        expires_at: Millis,
    },
    /// The holder gave the lease back.
    LeaseReleased,
    /// The lease lapsed.
    LeaseExpired,
    /// An update was applied under the lease.
    Updated {
        /// The state's version after it.
        version: u64,
    },
    /// A callback attempt failed.
    CallbackFailed {
        /// Attempt number.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// How long the attempt took. The API shows it to the admin token only: it
        /// tells a closed port from a silent one (design.md §3.4).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
    },
    /// Callback attempts were exhausted: the state is `failed`.
    Failed,
    /// A failed state was re-armed.
    Retried,
    /// The state was paused.
    Paused,
    /// The state was resumed.
    Resumed,
}

/// Writes `events` of state `id` as numbers `next..`, and deletes its events older than
/// the last `limit`. Returns the next number.
pub fn write<S: Store + ?Sized>(
    tx: &mut Tx<'_, S>,
    id: &str,
    mut next: u64,
    events: Vec<(Millis, u64, What)>,
    limit: u32,
) -> Result<u64, StoreError> {
    for (at, index, what) in events {
        let event = Event {
            seq: next,
            at,
            index,
            what,
        };
        let bytes = serde_json::to_vec(&event).map_err(CodecError::from)?;
        tx.put(Table::History, keys::state_seq(id, next), bytes);
        next += 1;
    }
    let keep_from = next.saturating_sub(u64::from(limit));
    let prefix = keys::state_prefix(id);
    let mut old = Vec::new();
    for entry in tx.scan_prefix(Table::History, &prefix) {
        let (key, _) = entry?;
        if keys::seq_of(&key)? >= keep_from {
            break;
        }
        old.push(key);
    }
    for key in old {
        tx.delete(Table::History, key);
    }
    Ok(next)
}

/// Deletes every event of state `id`.
pub fn delete_all<S: Store + ?Sized>(tx: &mut Tx<'_, S>, id: &str) -> Result<(), StoreError> {
    let prefix = keys::state_prefix(id);
    let all: Vec<Vec<u8>> = tx
        .scan_prefix(Table::History, &prefix)
        .map(|e| e.map(|(k, _)| k))
        .collect::<Result<_, _>>()?;
    for key in all {
        tx.delete(Table::History, key);
    }
    Ok(())
}

/// Up to `limit` events of state `id` numbered below `before` (all if `None`), newest
/// first.
pub fn read<S: Store + ?Sized>(
    store: &S,
    id: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let prefix = keys::state_prefix(id);
    let tx = Tx::new(store);
    let mut events: Vec<Event> = Vec::new();
    for entry in tx.scan_prefix(Table::History, &prefix) {
        let (key, bytes) = entry?;
        let seq = keys::seq_of(&key)?;
        if before.is_some_and(|b| seq >= b) {
            break;
        }
        let event = serde_json::from_slice(&bytes).map_err(CodecError::from)?;
        events.push(event);
    }
    events.reverse();
    events.truncate(limit);
    Ok(events)
}
