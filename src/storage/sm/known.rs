//! Which state ids and channel names sled may hold: a Bloom filter per table, so that a
//! read of a key that is certainly absent does not ask sled.
//!
//! Why: most writes create a state and name a channel that does not exist yet, and
//! each apply reads both keys to find them absent. A read that misses the in-memory
//! layers goes to sled, and sled makes every read wait while a write-back's transaction
//! holds its lock (design.md §4, "Reads beside a write-back"). The filter answers those
//! reads at once.
//!
//! The filter only ever skips a read whose answer is "absent", so it cannot change what
//! an apply computes: every key that reaches sled is added before it can be there. A
//! commit adds the keys it puts before they enter a layer, a snapshot's load adds the
//! keys it writes, and opening adds every key found in the two tables. Deleted keys stay
//! in (a false positive only costs the read that would have happened anyway).
//!
//! Its size is set when the store opens, for twice the keys found then (at least
//! [`MIN_CAPACITY`]). Past that the share of false positives grows, and reads go to
//! sled as they did without a filter, until the next start sizes it anew.

use std::hash::{DefaultHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::engine::Table;

/// The fewest keys per table a filter is sized for.
pub const MIN_CAPACITY: usize = 1 << 18;
/// Bits per key of capacity; with [`PROBES`] probes, about 2.4% false positives at
/// capacity.
const BITS_PER_KEY: usize = 8;
/// Bits set and tested per key.
const PROBES: u64 = 4;

/// The filtered tables' filters.
pub(super) struct KnownKeys {
    filters: RwLock<[Filter; 2]>,
}

impl KnownKeys {
    /// Empty filters sized for `keys` keys per table (at least [`MIN_CAPACITY`]).
    pub(super) fn with_capacity(keys: [usize; 2]) -> KnownKeys {
        KnownKeys {
            filters: RwLock::new(keys.map(Filter::with_capacity)),
        }
    }

    /// Replaces the filters with ones sized for twice the keys given (as their
    /// [`hash`]es, per filtered table) and holding them.
    pub(super) fn fill(&self, hashes: [Vec<u64>; 2]) {
        let filled = hashes.map(|hashes| {
            let filter = Filter::with_capacity(2 * hashes.len());
            hashes.into_iter().for_each(|hash| filter.add_hash(hash));
            filter
        });
        *self.filters.write().unwrap_or_else(|e| e.into_inner()) = filled;
    }

    /// Notes that sled may now hold `key` in `table`.
    pub(super) fn add(&self, table: Table, key: &[u8]) {
        if let Some(i) = slot(table) {
            self.read()[i].add(key);
        }
    }

    /// Whether sled may hold `key` in `table`; `false` means it certainly does not.
    pub(super) fn may_hold(&self, table: Table, key: &[u8]) -> bool {
        slot(table).is_none_or(|i| self.read()[i].may_hold(key))
    }

    /// Forgets every key (the tables were emptied), keeping the filters' sizes.
    pub(super) fn clear(&self) {
        let mut filters = self.filters.write().unwrap_or_else(|e| e.into_inner());
        for filter in filters.iter_mut() {
            *filter = Filter::with_capacity(filter.capacity);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, [Filter; 2]> {
        self.filters.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The hash a filter keeps of `key`.
pub(super) fn hash(key: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(key);
    hasher.finish()
}

/// The filtered tables: the two whose keys an apply most often reads only to find them
/// absent.
pub(super) fn slot(table: Table) -> Option<usize> {
    match table {
        Table::States => Some(0),
        Table::Chans => Some(1),
        _ => None,
    }
}

/// A Bloom filter whose bits are set without a lock.
struct Filter {
    bits: Vec<AtomicU64>,
    /// The bit count less one (a power of two less one).
    mask: u64,
    capacity: usize,
}

impl Filter {
    fn with_capacity(keys: usize) -> Filter {
        let capacity = keys.max(MIN_CAPACITY);
        let bits = (capacity * BITS_PER_KEY).next_power_of_two();
        Filter {
            bits: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits as u64 - 1,
            capacity,
        }
    }

    fn add(&self, key: &[u8]) {
        self.add_hash(hash(key));
    }

    fn add_hash(&self, hash: u64) {
        for bit in self.probes(hash) {
            self.bits[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Release);
        }
    }

    fn may_hold(&self, key: &[u8]) -> bool {
        self.probes(hash(key)).all(|bit| {
            self.bits[(bit / 64) as usize].load(Ordering::Acquire) & (1 << (bit % 64)) != 0
        })
    }

    /// The bits of a key's hash: double hashing, the second hash its halves swapped.
    fn probes(&self, hash: u64) -> impl Iterator<Item = u64> + '_ {
        let step = hash.rotate_left(32) | 1;
        (0..PROBES).map(move |i| hash.wrapping_add(i.wrapping_mul(step)) & self.mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_key_is_always_held_and_other_tables_are_never_filtered() {
        let known = KnownKeys::with_capacity([0, 0]);
        let keys: Vec<Vec<u8>> = (0..10_000).map(|i| format!("s-{i}").into_bytes()).collect();
        for key in &keys {
            known.add(Table::States, key);
        }
        assert!(keys.iter().all(|k| known.may_hold(Table::States, k)));
        assert!(known.may_hold(Table::Timers, b"never added"));
        let absent = (0..10_000)
            .filter(|i| known.may_hold(Table::Chans, format!("s-{i}").as_bytes()))
            .count();
        assert_eq!(absent, 0, "the tables have filters of their own");
    }

    #[test]
    fn a_filled_filter_holds_the_hashed_keys_and_is_sized_for_twice_them() {
        let known = KnownKeys::with_capacity([0, 0]);
        let chans: Vec<u64> = (0..MIN_CAPACITY)
            .map(|i| hash(format!("c-{i}").as_bytes()))
            .collect();
        known.fill([Vec::new(), chans]);
        assert!(
            (0..MIN_CAPACITY).all(|i| known.may_hold(Table::Chans, format!("c-{i}").as_bytes()))
        );
        assert!(!known.may_hold(Table::States, b"c-1"));
        assert_eq!(known.read()[1].capacity, 2 * MIN_CAPACITY);
    }

    #[test]
    fn few_absent_keys_pass_at_capacity_and_clear_forgets() {
        let known = KnownKeys::with_capacity([MIN_CAPACITY, 0]);
        for i in 0..MIN_CAPACITY {
            known.add(Table::States, format!("in-{i}").as_bytes());
        }
        let passed = (0..100_000)
            .filter(|i| known.may_hold(Table::States, format!("out-{i}").as_bytes()))
            .count();
        assert!(passed < 5_000, "{passed} of 100,000 absent keys passed");
        known.clear();
        assert!(!known.may_hold(Table::States, b"in-1"));
    }
}
