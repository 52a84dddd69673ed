//! Commits held in memory between checkpoints, in front of sled.
//!
//! A sled transaction costs far more than the writes in it: each one pins sled's log,
//! which writes sled's IO buffer out twice on sled's thread pool, and at one connection
//! that was a fifth of the leader's CPU for a commit that nobody flushes (a crash
//! replays the Raft log from the last checkpoint anyway). So a commit goes into an
//! in-memory *layer* of the tables, written into sled in one transaction (a
//! *write-back*) when it has grown (see "Write-back size") and by each checkpoint
//! before it flushes: one sled transaction per write-back, not per apply, and a key
//! written by many commands in between (a channel's counters, the applied index) is
//! written once.
//!
//! Reads see the layers first (newest first), then sled. There are at most two layers:
//! the *active* one that commits go into, and the *frozen* one a write-back is copying
//! into sled. Freezing swaps the active layer for an empty one, under the lock a commit
//! holds while it writes into a layer, so each commit lands whole in one layer. A
//! frozen layer never changes; it is dropped only once sled holds everything in it.
//!
//! # Write-back size
//! sled's transaction holds a process-wide lock that every sled read also takes, for
//! as long as it inserts its keys: the apply task, reading a key no layer holds, waits
//! for the whole write-back. So a layer is written back when it holds
//! [`WRITE_BACK_SOON_KEYS`] keys, not only at checkpoints: at 64 connections a
//! 100-ms layer was thousands of keys, and waiting for them put 20–30 ms on the p99 of
//! writes. At one connection a layer rarely grows that large between checkpoints.
//!
//! # Scans
//! A scan takes the layers as they are when it starts and reads them as it goes, one
//! key at a time, beside sled's own iterator. A layer that is written back and dropped
//! meanwhile stays readable by the scan, so a key that moves from a layer into sled
//! behind the scan's position is still seen (from the layer), never missed. Commits
//! after the scan started are seen only once written back, as a sled iterator sees
//! some changes made while it runs and not others: the engine, which writes, never
//! scans while it commits; readers never needed a scan to be a snapshot.

use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::engine::{Table, WriteSet};

/// The bytes of keys and values in the active layer at which a commit writes the
/// layers back itself instead of waiting for the next checkpoint: memory stays
/// bounded when checkpoints fall behind (a slow disk) or do not run.
pub const WRITE_BACK_BYTES: usize = 64 << 20;

/// The keys in the active layer at which a commit asks for a write-back before the
/// next checkpoint (see "Write-back size").
pub const WRITE_BACK_SOON_KEYS: usize = 512;

/// What a commit asks of the write-back.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pressure {
    /// Nothing: the next checkpoint writes the layer back.
    None,
    /// A write-back soon, not waiting for the checkpoint.
    Soon,
    /// A write-back now, before the commit returns.
    Now,
}

/// A layer: per table, key → value (`None`: deleted).
#[derive(Default)]
pub(super) struct Layer {
    tables: RwLock<WriteSet>,
}

impl Layer {
    /// The writes in this layer, read-locked (a frozen layer's no longer change).
    pub(super) fn writes(&self) -> RwLockReadGuard<'_, WriteSet> {
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The layers in front of sled.
#[derive(Default)]
pub(super) struct Overlay {
    layers: RwLock<Layers>,
    /// One write-back (or clearing) at a time.
    write_back: Mutex<()>,
    /// Told when the active layer asks for a write-back soon.
    grown: tokio::sync::Notify,
}

#[derive(Default)]
struct Layers {
    active: Arc<Layer>,
    /// Keys in `active` (0: it is empty).
    active_keys: usize,
    /// Bytes of keys and values committed into `active` (a key written twice counts
    /// twice).
    active_bytes: usize,
    frozen: Option<Arc<Layer>>,
}

/// What a lookup found in the layers.
pub(super) enum Found {
    /// The key's newest value (`None`: deleted) is in a layer.
    InLayer(Option<Vec<u8>>),
    /// No layer has the key: sled holds its newest value.
    NotInLayers,
}

impl Overlay {
    fn layers(&self) -> RwLockReadGuard<'_, Layers> {
        self.layers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn layers_mut(&self) -> RwLockWriteGuard<'_, Layers> {
        self.layers.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the right to write back (or clear); held until the guard drops.
    pub(super) fn one_write_back(&self) -> MutexGuard<'_, ()> {
        self.write_back.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `writes` into the active layer; what the layer's size asks for. A
    /// write-back asked for soon is also told to [`Overlay::grown`].
    pub(super) fn commit(&self, writes: WriteSet) -> Pressure {
        let mut layers = self.layers_mut();
        let (mut keys, mut bytes) = (0, 0);
        {
            let mut active = layers
                .active
                .tables
                .write()
                .unwrap_or_else(|e| e.into_inner());
            for (table, staged) in active.iter_mut().zip(writes) {
                for (key, value) in staged {
                    bytes += key.len() + value.as_ref().map_or(0, Vec::len);
                    keys += usize::from(table.insert(key, value).is_none());
                }
            }
        }
        layers.active_keys += keys;
        layers.active_bytes += bytes;
        if layers.active_bytes >= WRITE_BACK_BYTES {
            Pressure::Now
        } else if layers.active_keys >= WRITE_BACK_SOON_KEYS {
            self.grown.notify_one();
            Pressure::Soon
        } else {
            Pressure::None
        }
    }

    /// Waits until a commit asks for a write-back soon (at once if one asked since
    /// the last wait).
    pub(super) async fn grown(&self) {
        self.grown.notified().await;
    }

    /// The newest value of `key` in the layers.
    pub(super) fn get(&self, table: Table, key: &[u8]) -> Found {
        let layers = self.layers();
        for layer in layers.newest_first() {
            if let Some(value) = layer.writes()[table.index()].get(key) {
                return Found::InLayer(value.clone());
            }
        }
        Found::NotInLayers
    }

    /// The layers' entries of `table` from `from` on, as they are now and as they will
    /// be read (see "Scans"): a layer dropped meanwhile stays readable.
    pub(super) fn scan(&self, table: Table, from: &[u8]) -> LayerScan {
        let layers = self.layers();
        LayerScan {
            layers: layers.newest_first().cloned().collect(),
            table: table.index(),
            from: from.to_vec(),
            last: None,
        }
    }

    /// Freezes the layer to write back next: the frozen one if a write-back of it
    /// failed, else the active one (`None` if it is empty). The caller holds
    /// [`Overlay::one_write_back`].
    pub(super) fn freeze(&self) -> Option<Arc<Layer>> {
        let mut layers = self.layers_mut();
        if let Some(frozen) = &layers.frozen {
            return Some(frozen.clone());
        }
        if layers.active_keys == 0 {
            return None;
        }
        let frozen = std::mem::take(&mut layers.active);
        layers.active_keys = 0;
        layers.active_bytes = 0;
        layers.frozen = Some(frozen.clone());
        Some(frozen)
    }

    /// Drops the frozen layer, which sled now holds. The caller holds
    /// [`Overlay::one_write_back`].
    pub(super) fn written_back(&self) {
        self.layers_mut().frozen = None;
    }

    /// Drops every layer (the tables are being replaced). The caller holds
    /// [`Overlay::one_write_back`].
    pub(super) fn clear(&self) {
        *self.layers_mut() = Layers::default();
    }
}

impl Layers {
    fn newest_first(&self) -> impl Iterator<Item = &Arc<Layer>> {
        std::iter::once(&self.active).chain(&self.frozen)
    }
}

/// The layers' entries of one table in key order, the newest layer's value for each
/// key (`None`: deleted), read one key at a time.
pub(super) struct LayerScan {
    layers: Vec<Arc<Layer>>,
    table: usize,
    from: Vec<u8>,
    /// The last key given, or `None` before the first.
    last: Option<Vec<u8>>,
}

impl Iterator for LayerScan {
    type Item = (Vec<u8>, Option<Vec<u8>>);

    fn next(&mut self) -> Option<Self::Item> {
        let start = match &self.last {
            Some(last) => Bound::Excluded(last.as_slice()),
            None => Bound::Included(self.from.as_slice()),
        };
        let mut next: Option<(Vec<u8>, Option<Vec<u8>>)> = None;
        for layer in &self.layers {
            let tables = layer.writes();
            let Some((key, value)) = tables[self.table]
                .range::<[u8], _>((start, Bound::Unbounded))
                .next()
            else {
                continue;
            };
            // Newest first: an older layer's entry wins only with a smaller key.
            if next.as_ref().is_none_or(|(found, _)| key < found) {
                next = Some((key.clone(), value.clone()));
            }
        }
        self.last = next.as_ref().map(|(key, _)| key.clone());
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(entries: &[(&str, Option<&str>)]) -> WriteSet {
        let mut writes = WriteSet::default();
        for (key, value) in entries {
            writes[Table::States.index()].insert(
                key.as_bytes().to_vec(),
                value.map(|v| v.as_bytes().to_vec()),
            );
        }
        writes
    }

    fn scanned(scan: LayerScan) -> Vec<(String, Option<String>)> {
        scan.map(|(k, v)| {
            (
                String::from_utf8(k).unwrap(),
                v.map(|v| String::from_utf8(v).unwrap()),
            )
        })
        .collect()
    }

    fn pair(key: &str, value: Option<&str>) -> (String, Option<String>) {
        (key.to_owned(), value.map(str::to_owned))
    }

    #[test]
    fn the_newest_layer_wins_and_a_scan_merges_both_in_order() {
        let overlay = Overlay::default();
        overlay.commit(writes(&[
            ("a", Some("1")),
            ("c", Some("1")),
            ("e", Some("1")),
        ]));
        let _one = overlay.one_write_back();
        overlay.freeze().expect("a layer to freeze");
        overlay.commit(writes(&[("b", Some("2")), ("c", None), ("e", Some("2"))]));
        assert!(matches!(overlay.get(Table::States, b"a"), Found::InLayer(Some(v)) if v == b"1"));
        assert!(matches!(
            overlay.get(Table::States, b"c"),
            Found::InLayer(None)
        ));
        assert!(matches!(overlay.get(Table::States, b"e"), Found::InLayer(Some(v)) if v == b"2"));
        assert!(matches!(
            overlay.get(Table::States, b"d"),
            Found::NotInLayers
        ));
        assert!(matches!(
            overlay.get(Table::Chans, b"a"),
            Found::NotInLayers
        ));
        assert_eq!(
            scanned(overlay.scan(Table::States, b"b")),
            vec![pair("b", Some("2")), pair("c", None), pair("e", Some("2"))]
        );
    }

    #[test]
    fn a_scan_keeps_reading_a_layer_written_back_behind_it() {
        let overlay = Overlay::default();
        overlay.commit(writes(&[("a", Some("1")), ("b", Some("1"))]));
        let mut scan = overlay.scan(Table::States, b"");
        assert_eq!(scan.next(), Some((b"a".to_vec(), Some(b"1".to_vec()))));
        {
            let _one = overlay.one_write_back();
            overlay.freeze().expect("a layer to freeze");
            overlay.written_back();
        }
        assert!(matches!(
            overlay.get(Table::States, b"b"),
            Found::NotInLayers
        ));
        assert_eq!(scan.next(), Some((b"b".to_vec(), Some(b"1".to_vec()))));
        assert_eq!(scan.next(), None);
    }

    #[test]
    fn a_failed_write_back_is_frozen_again_before_the_active_layer() {
        let overlay = Overlay::default();
        let _one = overlay.one_write_back();
        assert!(overlay.freeze().is_none(), "nothing to write back");
        overlay.commit(writes(&[("a", Some("1"))]));
        let first = overlay.freeze().expect("a layer to freeze");
        overlay.commit(writes(&[("b", Some("2"))]));
        let again = overlay.freeze().expect("the same layer again");
        assert!(Arc::ptr_eq(&first, &again));
        overlay.written_back();
        let next = overlay.freeze().expect("the active layer");
        assert!(next.writes()[Table::States.index()].contains_key(b"b".as_slice()));
    }

    #[test]
    fn a_commit_says_when_the_active_layer_asks_for_a_write_back() {
        let overlay = Overlay::default();
        let big = "x".repeat(WRITE_BACK_BYTES / 2);
        assert_eq!(overlay.commit(writes(&[("a", Some(&big))])), Pressure::None);
        assert_eq!(overlay.commit(writes(&[("b", Some(&big))])), Pressure::Now);
        overlay.clear();
        let keys: Vec<String> = (0..WRITE_BACK_SOON_KEYS).map(|k| k.to_string()).collect();
        let mut pressure = Vec::new();
        for key in &keys[..keys.len() - 1] {
            pressure.push(overlay.commit(writes(&[(key, Some("v"))])));
            pressure.push(overlay.commit(writes(&[(key, Some("w"))])));
        }
        assert!(
            pressure.iter().all(|p| *p == Pressure::None),
            "a key rewritten counts once"
        );
        let last = &keys[keys.len() - 1];
        assert_eq!(overlay.commit(writes(&[(last, Some("v"))])), Pressure::Soon);
        overlay.clear();
        assert!(matches!(
            overlay.get(Table::States, b"a"),
            Found::NotInLayers
        ));
    }
}
