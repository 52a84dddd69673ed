//! The newest entries of the log, kept decoded in memory beside the write-ahead log
//! (docs/design.md §4, "The log's tail").
//!
//! On the leader every entry is read back three times soon after it is appended: once by
//! each follower's replication stream and once to apply it; on a follower, once to apply
//! it. Read from the log, each read is a `pread` and a decode that copies every value
//! twice. The tail hands out clones of the entries as appended instead, which share each
//! entry's batch of commands ([`super::Batch`]). It holds a contiguous run of indexes
//! ending at the log's last entry, at most [`TAIL_BYTES`] of them by encoded size;
//! anything older, or anything after a restart, is read from the log.

use std::collections::VecDeque;

use super::Entry;

/// The encoded bytes of entries the tail keeps at most: a few seconds of writes at full
/// speed, ample for replication and apply to keep up without reading the log.
pub const TAIL_BYTES: usize = 8 << 20;

/// A contiguous run of the log's newest entries (see the module docs).
#[derive(Debug)]
pub struct Tail {
    /// Entries with consecutive indexes, oldest first, each with its encoded size.
    entries: VecDeque<(Entry, usize)>,
    /// The sum of the encoded sizes in `entries`.
    bytes: usize,
    /// The most `bytes` may reach.
    cap: usize,
}

impl Tail {
    /// An empty tail that keeps at most `cap` encoded bytes.
    pub fn new(cap: usize) -> Tail {
        Tail {
            entries: VecDeque::new(),
            bytes: 0,
            cap,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn next_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index + 1)
    }

    /// After the log appended `entry` (of `size` encoded bytes): an entry that replaces
    /// others drops them and everything after; one after a gap starts the run anew.
    pub fn appended(&mut self, entry: Entry, size: usize) {
        let index = entry.log_id.index;
        self.truncated(index);
        if self.next_index().is_some_and(|next| next != index) {
            self.clear();
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.bytes > self.cap {
            let Some((_, size)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= size;
        }
    }

    /// After the log dropped its entries from `index` on.
    pub fn truncated(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(e, _)| e.log_id.index >= index)
        {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// After the log dropped its entries up to `index`, inclusive.
    pub fn purged(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(e, _)| e.log_id.index <= index)
        {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries with indexes in `start..end`, if the tail holds them all and the log's
    /// next index is `log_next` (the tail ends where the log does). `end` may lie past the
    /// log's end: what the log holds is what is asked for.
    pub fn read(&self, start: u64, end: u64, log_next: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if self.next_index() != Some(log_next) || start < first {
            return None;
        }
        let end = end.min(log_next);
        let skip = usize::try_from(start - first).ok()?;
        let take = usize::try_from(end.saturating_sub(start)).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(take)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{LeaderId, LogId};
    use openraft::EntryPayload;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(LeaderId { term, node_id: 1 }, index),
            payload: EntryPayload::Blank,
        }
    }

    fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    fn tail_of(cap: usize, indexes: std::ops::Range<u64>) -> Tail {
        let mut tail = Tail::new(cap);
        for i in indexes {
            tail.appended(entry(1, i), 10);
        }
        tail
    }

    #[test]
    fn reads_what_it_holds_and_nothing_before() {
        let tail = tail_of(1000, 5..10);
        assert_eq!(
            ids(&tail.read(5, 10, 10).unwrap()),
            ids(&[5, 6, 7, 8, 9].map(|i| entry(1, i)))
        );
        assert_eq!(ids(&tail.read(7, u64::MAX, 10).unwrap()).len(), 3);
        assert_eq!(tail.read(9, 9, 10).unwrap().len(), 0);
        assert!(
            tail.read(4, 10, 10).is_none(),
            "index 4 is older than the tail"
        );
        assert!(
            tail.read(5, 10, 11).is_none(),
            "the log holds more than the tail"
        );
        assert!(Tail::new(1000).read(0, 1, 0).is_none());
    }

    #[test]
    fn keeps_at_most_its_cap_of_the_newest() {
        let tail = tail_of(35, 0..10);
        assert_eq!(tail.bytes, 30);
        assert_eq!(tail.first_index(), Some(7));
        assert_eq!(tail.next_index(), Some(10));
        let mut tail = Tail::new(5);
        tail.appended(entry(1, 0), 10);
        assert!(
            tail.read(0, 1, 1).is_none(),
            "an entry larger than the cap is not kept"
        );
    }

    #[test]
    fn a_conflicting_append_replaces_the_rest() {
        let mut tail = tail_of(1000, 0..10);
        tail.appended(entry(2, 6), 10);
        assert_eq!(tail.next_index(), Some(7));
        assert_eq!(tail.bytes, 70);
        let read = tail.read(5, 10, 7).unwrap();
        assert_eq!(ids(&read), vec![(1, 5), (2, 6)]);
    }

    #[test]
    fn a_gap_starts_anew() {
        let mut tail = tail_of(1000, 0..10);
        tail.appended(entry(1, 20), 10);
        assert_eq!(tail.first_index(), Some(20));
        assert_eq!(tail.bytes, 10);
    }

    #[test]
    fn a_read_shares_the_batch_and_the_encoding_is_the_commands_list() {
        let command = crate::engine::Command {
            now: 1,
            seed: 2,
            history_limit: 0,
            op: crate::engine::Op::DeleteState { id: "s".into() },
        };
        let batch = super::super::Batch::new(vec![command.clone()]);
        let mut tail = Tail::new(1000);
        tail.appended(
            Entry {
                log_id: LogId::new(
                    LeaderId {
                        term: 1,
                        node_id: 1,
                    },
                    0,
                ),
                payload: EntryPayload::Normal(batch.clone()),
            },
            10,
        );
        let read = tail.read(0, 1, 1).unwrap();
        let EntryPayload::Normal(shared) = &read[0].payload else {
            panic!("not a batch: {:?}", read[0].payload);
        };
        assert!(
            std::sync::Arc::ptr_eq(&shared.0, &batch.0),
            "copied, not shared"
        );
        assert_eq!(
            crate::codec::encode(&batch).unwrap(),
            crate::codec::encode(&vec![command]).unwrap(),
            "a log written before batches were shared reads the same"
        );
    }

    #[test]
    fn truncate_and_purge_follow_the_log() {
        let mut tail = tail_of(1000, 0..10);
        tail.truncated(8);
        assert_eq!(tail.next_index(), Some(8));
        tail.truncated(20);
        assert_eq!(tail.next_index(), Some(8));
        tail.purged(3);
        assert_eq!(tail.first_index(), Some(4));
        assert_eq!(tail.bytes, 40);
        tail.truncated(0);
        assert_eq!((tail.first_index(), tail.bytes), (None, 0));
        let mut tail = tail_of(1000, 0..10);
        tail.purged(9);
        assert_eq!((tail.first_index(), tail.bytes), (None, 0));
    }
}
