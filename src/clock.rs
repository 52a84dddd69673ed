//! This machine's wall clock, in one place.
//!
//! The engine never reads it (log time travels in each command, design.md §2, "Time");
//! the leader does, to stamp the commands it proposes and the deadlines it sets, and so
//! do callbacks' signatures and the peers' "last heard" times.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix ms (0 on a clock set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
