//! Validation of names, selects and cases, shared by the API (to answer 400 before a
//! round through Raft) and the engine (which never trusts its input).

use std::collections::BTreeSet;

use super::error::Error;
use super::types::{Case, Select, MAX_PRIORITY};

/// Longest state id, channel name or select id, in bytes.
pub const MAX_NAME: usize = 256;
/// Most cases in one select.
pub const MAX_CASES: usize = 64;
/// Most selects in one state.
pub const MAX_SELECTS: usize = 256;
/// Largest channel capacity.
pub const MAX_CAPACITY: u64 = 1 << 32;
/// Longest lease (or lease extension, or callback retry delay): one day.
pub const MAX_LEASE_MS: u64 = 86_400_000;
/// Most parked HTTP sends and receives on one channel.
pub const MAX_PARKED_PER_CHAN: u64 = 1024;

/// A state id, channel name or select id: 1–256 bytes of UTF-8 without control
/// characters, and neither `.` nor `..`.
pub fn name(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || value.len() > MAX_NAME {
        return Err(Error::Invalid(format!(
            "{what} must be 1 to {MAX_NAME} bytes long"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{what} must not contain control characters"
        )));
    }
    if is_dot_segment(value) {
        return Err(Error::Invalid(format!(
            "{what} {value:?} is not allowed: `.` and `..` are path segments that URL \
             parsers remove, so such a name could not be addressed; choose another"
        )));
    }
    Ok(())
}

/// `.` and `..`, which are never names (design.md §3.2): in a URL path they are dot
/// segments, which clients and proxies remove before the request reaches a node.
pub fn is_dot_segment(value: &str) -> bool {
    matches!(value, "." | "..")
}

/// The selects of one state: limits, unique ids, and each select's cases.
pub fn selects(selects: &[Select]) -> Result<(), Error> {
    if selects.len() > MAX_SELECTS {
        return Err(Error::Invalid(format!(
            "a state may have at most {MAX_SELECTS} selects"
        )));
    }
    let mut ids = BTreeSet::new();
    for select in selects {
        name("select id", &select.id)?;
        if !ids.insert(select.id.as_str()) {
            return Err(Error::Invalid(format!(
                "duplicate select id {:?}",
                select.id
            )));
        }
        cases(&select.id, &select.cases)?;
    }
    Ok(())
}

fn cases(select: &str, cases: &[Case]) -> Result<(), Error> {
    if cases.len() > MAX_CASES {
        return Err(Error::Invalid(format!(
            "select {select:?} has more than {MAX_CASES} cases"
        )));
    }
    if cases.iter().filter(|c| **c == Case::Default).count() > 1 {
        return Err(Error::Invalid(format!(
            "select {select:?} has more than one default case"
        )));
    }
    for case in cases {
        if let Some(chan) = case.chan() {
            name("channel name", chan)?;
        }
    }
    Ok(())
}

/// A lease duration: 1 ms to [`MAX_LEASE_MS`]. Checked in the engine too, so that no
/// entry can make a lease that never ends.
pub fn lease_ms(ms: u64) -> Result<(), Error> {
    if ms == 0 || ms > MAX_LEASE_MS {
        return Err(Error::Invalid(format!(
            "a lease lasts 1 to {MAX_LEASE_MS} ms"
        )));
    }
    Ok(())
}

/// Longest `last_error`, in bytes.
pub const MAX_LAST_ERROR: usize = 200;

/// A failed callback's `last_error` as stored and shown (and kept in history): at most
/// [`MAX_LAST_ERROR`] bytes, cut at a character boundary. The dispatcher writes short
/// fixed sentences; the engine does not trust that.
pub fn last_error(mut error: String) -> String {
    if error.len() > MAX_LAST_ERROR {
        let mut end = MAX_LAST_ERROR;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        error.truncate(end);
    }
    error
}

/// A priority: 0 to [`MAX_PRIORITY`].
pub fn priority(priority: u8) -> Result<(), Error> {
    if priority > MAX_PRIORITY {
        return Err(Error::Invalid(format!(
            "priority must be 0 to {MAX_PRIORITY}"
        )));
    }
    Ok(())
}

/// A channel capacity as given by a client.
pub fn capacity(capacity: i64) -> Result<u64, Error> {
    match u64::try_from(capacity) {
        Ok(c) if c <= MAX_CAPACITY => Ok(c),
        Ok(_) => Err(Error::Invalid(format!(
            "capacity must be at most {MAX_CAPACITY}"
        ))),
        Err(_) => Err(Error::Invalid("capacity must not be negative".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_is_cut_to_200_bytes_at_a_character_boundary() {
        assert_eq!(last_error("short".into()), "short");
        assert_eq!(last_error("x".repeat(900_000)).len(), MAX_LAST_ERROR);
        let cut = last_error(format!("{}é", "x".repeat(MAX_LAST_ERROR - 1)));
        assert_eq!(cut, "x".repeat(MAX_LAST_ERROR - 1));
    }
}
