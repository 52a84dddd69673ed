//! Key encodings of the state machine's tables.
//!
//! Names and ids never contain control characters (design.md §1), so `0x00` separates a
//! name from what follows and a name's entries form one contiguous, ordered range.
//! Numbers are big-endian so that byte order is numeric order.

use uuid::Uuid;

use super::types::Millis;

const SEP: u8 = 0;

/// All entries of a channel in a queue or buffer table start with this.
pub fn chan_prefix(chan: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(chan.len() + 9);
    key.extend_from_slice(chan.as_bytes());
    key.push(SEP);
    key
}

/// (channel, position) in a queue or buffer table.
pub fn queue(chan: &str, pos: u64) -> Vec<u8> {
    let mut key = chan_prefix(chan);
    key.extend_from_slice(&pos.to_be_bytes());
    key
}

/// The position part of a queue key.
pub fn queue_pos(key: &[u8]) -> u64 {
    u64_at(key, key.len() - 8)
}

/// What a timer-table entry stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// A blocked select's earliest timer.
    Select {
        /// State id.
        state: String,
        /// Select id.
        select: String,
    },
    /// A parked HTTP operation's deadline.
    Op(Uuid),
}

/// (deadline, what) in the timer table.
pub fn timer(at: Millis, due: &Due) -> Vec<u8> {
    let mut key = at.to_be_bytes().to_vec();
    match due {
        Due::Select { state, select } => {
            key.push(0);
            key.extend_from_slice(state.as_bytes());
            key.push(SEP);
            key.extend_from_slice(select.as_bytes());
        }
        Due::Op(id) => {
            key.push(1);
            key.extend_from_slice(id.as_bytes());
        }
    }
    key
}

/// Decodes a timer-table key.
pub fn parse_timer(key: &[u8]) -> (Millis, Due) {
    let at = u64_at(key, 0);
    let rest = &key[9..];
    let due = if key[8] == 0 {
        let sep = rest.iter().position(|&b| b == SEP).unwrap_or(rest.len());
        Due::Select {
            state: String::from_utf8_lossy(&rest[..sep]).into_owned(),
            select: String::from_utf8_lossy(rest.get(sep + 1..).unwrap_or_default()).into_owned(),
        }
    } else {
        Due::Op(Uuid::from_slice(rest).unwrap_or_default())
    };
    (at, due)
}

/// (time, state id) in the lease and pending tables.
pub fn at_state(at: Millis, state: &str) -> Vec<u8> {
    let mut key = at.to_be_bytes().to_vec();
    key.extend_from_slice(state.as_bytes());
    key
}

/// Decodes a (time, state id) key.
pub fn parse_at_state(key: &[u8]) -> (Millis, String) {
    (
        u64_at(key, 0),
        String::from_utf8_lossy(&key[8..]).into_owned(),
    )
}

/// A byte that sorts higher priorities first.
fn rank(priority: u8) -> u8 {
    u8::MAX - priority
}

/// (priority, pending since, state id) in the polled-pending table: highest priority
/// first, oldest first within a priority.
pub fn pending(priority: u8, since: Millis, state: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(state.len() + 9);
    key.push(rank(priority));
    key.extend_from_slice(&since.to_be_bytes());
    key.extend_from_slice(state.as_bytes());
    key
}

/// Decodes a polled-pending key: (priority, since, state id).
pub fn parse_pending(key: &[u8]) -> (u8, Millis, String) {
    (
        u8::MAX - key[0],
        u64_at(key, 1),
        String::from_utf8_lossy(&key[9..]).into_owned(),
    )
}

/// (state id, priority, since) in the pending-by-id table: a state's entries start with
/// its id and a separator, so a prefix of ids is one contiguous range.
pub fn pending_by_id(state: &str, priority: u8, since: Millis) -> Vec<u8> {
    let mut key = state_prefix(state);
    key.push(rank(priority));
    key.extend_from_slice(&since.to_be_bytes());
    key
}

/// Decodes a pending-by-id key: (state id, priority, since).
pub fn parse_pending_by_id(key: &[u8]) -> (String, u8, Millis) {
    let split = key.len().saturating_sub(10);
    (
        String::from_utf8_lossy(&key[..split]).into_owned(),
        u8::MAX - key[split + 1],
        u64_at(key, split + 2),
    )
}

/// The by-status tag of paused states (statuses use their own number).
pub const PAUSED: u8 = u8::MAX;

/// (status tag, state id) in the by-status table: `Status as u8`, or [`PAUSED`].
pub fn by_status(tag: u8, state: &str) -> Vec<u8> {
    let mut key = vec![tag];
    key.extend_from_slice(state.as_bytes());
    key
}

/// All entries of one state in a per-state table start with this.
pub fn state_prefix(state: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(state.len() + 9);
    key.extend_from_slice(state.as_bytes());
    key.push(SEP);
    key
}

/// (state id, number) in the history table.
pub fn state_seq(state: &str, seq: u64) -> Vec<u8> {
    let mut key = state_prefix(state);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The number of a (state id, number) key.
pub fn seq_of(key: &[u8]) -> u64 {
    u64_at(key, key.len() - 8)
}

fn u64_at(key: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[at..at + 8]);
    u64::from_be_bytes(bytes)
}

/// Meta key of the engine's log clock.
pub const META_CLOCK: &[u8] = b"clock";
