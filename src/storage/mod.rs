//! The node's data directory: the engines that own its files.
//!
//! - [`wal`]: the write-ahead log of Raft — entries, vote, committed index, truncations
//!   and the purge point — in checksummed, preallocated segment files with group commit.

pub mod wal;
