//! Key encodings of the state machine's tables.
//!
//! Names and ids never contain control characters (design.md §1), so `0x00` separates a
//! name from what follows and a name's entries form one contiguous, ordered range.
//! Numbers are big-endian so that byte order is numeric order.
//!
//! A key that does not parse (too short, a name that is not UTF-8, an unknown tag) was
//! not written by these functions: the parsers report it as
//! [`StoreError::Corruption`], never guess and never panic.

use uuid::Uuid;

use super::store::StoreError;
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
pub fn parse_timer(key: &[u8]) -> Result<(Millis, Due), StoreError> {
    let at = u64_at(key, 0)?;
    let rest = key.get(9..).ok_or_else(|| short(key))?;
    let due = match key[8] {
        0 => {
            let sep = rest
                .iter()
                .position(|&b| b == SEP)
                .ok_or_else(|| StoreError::bad_key(key, "a timer key without its separator"))?;
            Due::Select {
                state: text(key, &rest[..sep])?,
                select: text(key, &rest[sep + 1..])?,
            }
        }
        1 => Due::Op(
            Uuid::from_slice(rest)
                .map_err(|_| StoreError::bad_key(key, "an operation id of the wrong length"))?,
        ),
        _ => return Err(StoreError::bad_key(key, "an unknown timer tag")),
    };
    Ok((at, due))
}

/// (time, state id) in the lease and pending tables.
pub fn at_state(at: Millis, state: &str) -> Vec<u8> {
    let mut key = at.to_be_bytes().to_vec();
    key.extend_from_slice(state.as_bytes());
    key
}

/// The time a timer, lease or pending key starts with: the deadline of a
/// deadline-ordered table.
pub fn deadline(key: &[u8]) -> Result<Millis, StoreError> {
    u64_at(key, 0)
}

/// Decodes a (time, state id) key.
pub fn parse_at_state(key: &[u8]) -> Result<(Millis, String), StoreError> {
    Ok((u64_at(key, 0)?, text(key, &key[8..])?))
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
pub fn parse_pending(key: &[u8]) -> Result<(u8, Millis, String), StoreError> {
    let since = u64_at(key, 1)?;
    Ok((u8::MAX - key[0], since, text(key, &key[9..])?))
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
pub fn parse_pending_by_id(key: &[u8]) -> Result<(String, u8, Millis), StoreError> {
    let split = key.len().checked_sub(10).ok_or_else(|| short(key))?;
    if key[split] != SEP {
        return Err(StoreError::bad_key(
            key,
            "a pending key without its separator",
        ));
    }
    Ok((
        text(key, &key[..split])?,
        u8::MAX - key[split + 1],
        u64_at(key, split + 2)?,
    ))
}

/// (status tag, state id) in the by-status table: `Status as u8`, or [`PAUSED`](super::types::PAUSED).
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

/// The position of a (channel, position) key of a queue or buffer table.
pub fn queue_pos(key: &[u8]) -> Result<u64, StoreError> {
    seq_of(key)
}

/// The number of a (state id, number) key.
pub fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    u64_at(key, key.len().checked_sub(8).ok_or_else(|| short(key))?)
}

/// The big-endian number at `at` in `key`.
fn u64_at(key: &[u8], at: usize) -> Result<u64, StoreError> {
    key.get(at..at + 8)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| short(key))
}

/// A name inside `key`.
fn text(key: &[u8], bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::bad_key(key, "a name in the key is not UTF-8"))
}

fn short(key: &[u8]) -> StoreError {
    StoreError::bad_key(key, "the key is too short for its table")
}

/// Meta key of the engine's log clock.
pub const META_CLOCK: &[u8] = b"clock";

/// Meta key of the Raft term of the latest command applied (see `Ctx::enter_term`).
pub const META_TERM: &[u8] = b"term";

/// Meta key of the number of values ever offered to parked receives: an offered
/// operation's `pos` is its number in that sequence (see `Ctx::enter_term`).
pub const META_OFFERS: &[u8] = b"offers";

#[cfg(test)]
mod tests {
    use super::*;

    fn is_bad_key(result: Result<impl std::fmt::Debug, StoreError>, key: &[u8]) -> bool {
        matches!(result, Err(StoreError::Corruption { key: Some(k), file: None, .. }) if k == key)
    }

    #[test]
    fn keys_parse_back() {
        let op = Uuid::from_u128(7);
        let select = Due::Select {
            state: "s1".into(),
            select: "x".into(),
        };
        assert_eq!(parse_timer(&timer(5, &select)).unwrap(), (5, select));
        assert_eq!(
            parse_timer(&timer(6, &Due::Op(op))).unwrap(),
            (6, Due::Op(op))
        );
        assert_eq!(deadline(&timer(6, &Due::Op(op))).unwrap(), 6);
        assert_eq!(parse_at_state(&at_state(9, "s")).unwrap(), (9, "s".into()));
        assert_eq!(
            parse_pending(&pending(3, 4, "s")).unwrap(),
            (3, 4, "s".into())
        );
        assert_eq!(
            parse_pending_by_id(&pending_by_id("s", 3, 4)).unwrap(),
            ("s".into(), 3, 4)
        );
        assert_eq!(seq_of(&state_seq("s", 11)).unwrap(), 11);
    }

    #[test]
    fn short_or_non_utf8_keys_are_corruption_not_panics_or_guesses() {
        for short in [&b""[..], b"1234567"] {
            assert!(is_bad_key(parse_timer(short), short));
            assert!(is_bad_key(parse_at_state(short), short));
            assert!(is_bad_key(parse_pending(short), short));
            assert!(is_bad_key(parse_pending_by_id(short), short));
            assert!(is_bad_key(seq_of(short), short));
            assert!(is_bad_key(deadline(short), short));
        }
        let mut not_utf8 = at_state(1, "s");
        not_utf8.push(0xff);
        assert!(is_bad_key(parse_at_state(&not_utf8), &not_utf8));
        let mut not_utf8 = pending(1, 2, "s");
        not_utf8.push(0xff);
        assert!(is_bad_key(parse_pending(&not_utf8), &not_utf8));
        let not_utf8 = pending_by_id("\u{e9}", 1, 2)[1..].to_vec();
        assert!(is_bad_key(parse_pending_by_id(&not_utf8), &not_utf8));
        let mut short_op = timer(1, &Due::Op(Uuid::nil()));
        short_op.truncate(12);
        assert!(is_bad_key(parse_timer(&short_op), &short_op));
        let mut unknown = timer(1, &Due::Op(Uuid::nil()));
        unknown[8] = 2;
        assert!(is_bad_key(parse_timer(&unknown), &unknown));
        let no_separator = [&1u64.to_be_bytes()[..], &[0], b"state"].concat();
        assert!(is_bad_key(parse_timer(&no_separator), &no_separator));
    }
}
