//! Reading every table as it stood at one instant, while commits go on.
//!
//! sled 0.34 has no snapshots: an iterator sees each key as it is when the iterator
//! reaches it. A Raft snapshot must hold the tables exactly as they were at its applied
//! index, and holding every apply back for the whole scan stalled writes for seconds
//! with a few hundred thousand states. So while a [`PointInTime`] is open, a commit
//! first keeps the *pre-image* (the value before its first change, or its absence) of
//! every key it is about to change that the scan has not passed yet. The scan reads
//! each table in key order and, key by key:
//! - a key with a kept pre-image is skipped; the pre-images are emitted after the
//!   table's scan (a deleted key comes back, a key created since is left out);
//! - any other key had not changed when it was read, so it is emitted as read;
//! - the scan's position moves past the key, so later changes to it keep nothing.
//!
//! Checking for a pre-image and moving the position happen under the same lock under
//! which a commit decides what to keep, and a commit keeps its pre-images before it
//! writes. So a value the scan reads is either unchanged since the instant the view
//! opened, or the commit that changed it kept the older value first. Memory grows with
//! the keys changed ahead of the scan while it runs, not with the tables.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use sled::IVec;

use super::values::Reference;
use super::SledStore;
use crate::engine::{StoreError, Table, WriteSet};

/// What commits keep for an open [`PointInTime`]; `None` when none is open.
#[derive(Clone, Default)]
pub(super) struct Capture(Arc<Mutex<Option<Kept>>>);

/// Pre-images kept so far, and how far the scan has got in each table.
struct Kept {
    /// Per table: key → its stored (sealed) value when the view opened, `None` if absent.
    pre_images: Vec<HashMap<Vec<u8>, Option<IVec>>>,
    /// Per table: how far the scan has got.
    scan: Vec<Position>,
}

/// How far the scan has got in one table.
enum Position {
    /// Not started: every change keeps its pre-image.
    Before,
    /// Keys up to and including this one are settled.
    Passed(IVec),
    /// The table is written out: changes keep nothing.
    Done,
}

impl Position {
    fn settled(&self, key: &[u8]) -> bool {
        match self {
            Position::Before => false,
            Position::Passed(last) => key <= last.as_ref(),
            Position::Done => true,
        }
    }
}

impl Capture {
    fn lock(&self) -> MutexGuard<'_, Option<Kept>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a view is open.
    pub(super) fn is_open(&self) -> bool {
        self.lock().is_some()
    }

    /// Keeps the pre-image of every key in `writes` that an open view still needs;
    /// called by a commit before it writes.
    pub(super) fn keep_pre_images(
        &self,
        store: &SledStore,
        writes: &WriteSet,
    ) -> Result<(), StoreError> {
        let mut kept = self.lock();
        let Some(kept) = kept.as_mut() else {
            return Ok(());
        };
        for (table, staged) in Table::ALL.iter().zip(writes) {
            let i = table.index();
            for key in staged.keys() {
                if kept.scan[i].settled(key) || kept.pre_images[i].contains_key(key) {
                    continue;
                }
                let before = store.tree(*table).get(key).map_err(|e| store.read_err(e))?;
                kept.pre_images[i].insert(key.clone(), before);
            }
        }
        Ok(())
    }
}

/// The tables as they stood when [`SledStore::point_in_time`] opened it; commits keep
/// what it needs until it is dropped. One at a time per store.
pub struct PointInTime<'a> {
    store: &'a SledStore,
}

impl SledStore {
    /// Opens a view of the tables as they stand now. The caller makes sure no commit is
    /// under way as it opens (the state machine holds applies back for that instant).
    /// Commits held in memory are written into sled first: the view reads sled, and
    /// write-backs from then on keep pre-images like commits.
    pub fn point_in_time(&self) -> Result<PointInTime<'_>, StoreError> {
        let _one = self.overlay.one_write_back();
        self.write_back_held()?;
        let mut kept = self.capture.lock();
        if kept.is_some() {
            return Err(StoreError::Invariant(
                "a point-in-time view is already open".into(),
            ));
        }
        *kept = Some(Kept {
            pre_images: Table::ALL.iter().map(|_| HashMap::new()).collect(),
            scan: Table::ALL.iter().map(|_| Position::Before).collect(),
        });
        Ok(PointInTime { store: self })
    }
}

/// A value as [`PointInTime::for_each`] gives it.
#[derive(Debug, PartialEq, Eq)]
pub enum Emitted {
    /// Kept in sled: the value, checked.
    Value(Vec<u8>),
    /// Kept in a value file (see [`super::values`]): the reference to it, checked. The
    /// file is not read; it stays in place while the view is open.
    File(Reference),
}

impl PointInTime<'_> {
    /// Where the value files that [`Emitted::File`] refers to are.
    pub fn values_dir(&self) -> &std::path::Path {
        self.store.values_dir()
    }

    /// Calls `emit` with every key and value `table` held when the view opened: first
    /// those unchanged since, in key order, then the rest in no particular order.
    /// Each table is read once.
    /// A storage failure (a damaged value among them) is an `io::Error` like the
    /// emitter's own.
    pub fn for_each(
        &self,
        table: Table,
        mut emit: impl FnMut(&[u8], Emitted) -> io::Result<()>,
    ) -> io::Result<()> {
        let (store, i) = (self.store, table.index());
        let tree = store.tree(table);
        let emitted = |key: &[u8], stored: IVec| -> io::Result<Emitted> {
            match Reference::in_stored(key, &stored) {
                Some(reference) => Ok(Emitted::File(reference)),
                None => store
                    .unseal(tree, key, stored)
                    .map(Emitted::Value)
                    .map_err(io::Error::other),
            }
        };
        for entry in tree.iter() {
            let (key, stored) = entry.map_err(|e| io::Error::other(store.read_err(e)))?;
            let unchanged = {
                let mut kept = store.capture.lock();
                let kept = kept.as_mut().ok_or_else(closed).map_err(io::Error::other)?;
                let unchanged = !kept.pre_images[i].contains_key(key.as_ref());
                kept.scan[i] = Position::Passed(key.clone());
                unchanged
            };
            if unchanged {
                emit(&key, emitted(&key, stored)?)?;
            }
        }
        let pre_images = {
            let mut kept = store.capture.lock();
            let kept = kept.as_mut().ok_or_else(closed).map_err(io::Error::other)?;
            kept.scan[i] = Position::Done;
            std::mem::take(&mut kept.pre_images[i])
        };
        for (key, stored) in pre_images {
            if let Some(stored) = stored {
                emit(&key, emitted(&key, stored)?)?;
            }
        }
        Ok(())
    }
}

impl Drop for PointInTime<'_> {
    fn drop(&mut self) {
        *self.store.capture.lock() = None;
    }
}

fn closed() -> StoreError {
    StoreError::Invariant("the point-in-time view was closed".into())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::engine::Store;

    type Tables = BTreeMap<(usize, Vec<u8>), Vec<u8>>;

    /// A write of `key` in `table`: a value, or `None` to delete it.
    type Change<'a> = (Table, &'a [u8], Option<&'a [u8]>);

    /// Commits `changes` and writes them into sled, as the checkpoints that run
    /// while a view is open do.
    fn commit(store: &SledStore, changes: &[Change<'_>]) {
        commit_in_memory(store, changes);
        store.write_back().expect("write back");
    }

    /// Commits `changes`, leaving them in memory (see [`super::super::overlay`]).
    fn commit_in_memory(store: &SledStore, changes: &[Change<'_>]) {
        let mut writes = WriteSet::default();
        for (table, key, value) in changes {
            writes[table.index()].insert(key.to_vec(), value.map(<[u8]>::to_vec));
        }
        store.commit(writes).expect("commit");
    }

    fn contents(store: &SledStore) -> Tables {
        let mut all = Tables::new();
        for table in Table::ALL {
            for entry in store.scan_from(table, &[]) {
                let (key, value) = entry.expect("scan");
                all.insert((table.index(), key), value);
            }
        }
        all
    }

    /// Reads the view, calling `during(table, n)` before emitting the n-th record of
    /// each table; fails on a key emitted twice.
    fn read(view: &PointInTime<'_>, mut during: impl FnMut(Table, usize)) -> Tables {
        let mut seen = Tables::new();
        for table in Table::ALL {
            let mut n = 0;
            view.for_each(table, |key, value| {
                during(table, n);
                n += 1;
                let Emitted::Value(value) = value else {
                    panic!("{table:?} {key:?}: only small values here, kept in sled");
                };
                let again = seen.insert((table.index(), key.to_vec()), value);
                assert!(again.is_none(), "{table:?} {key:?} emitted twice");
                Ok(())
            })
            .expect("for_each");
        }
        seen
    }

    #[test]
    fn the_view_holds_the_tables_as_they_were_whatever_commits_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let (states, chans) = (Table::States, Table::Chans);
        // Held in memory when the view opens: the view writes them into sled first.
        commit_in_memory(
            &store,
            &[
                (states, b"a", Some(b"1")),
                (states, b"c", Some(b"3")),
                (states, b"e", Some(b"5")),
                (states, b"g", Some(b"7")),
                (chans, b"x", Some(b"9")),
            ],
        );
        let before = contents(&store);
        let view = store.point_in_time().unwrap();
        let seen = read(&view, |table, n| {
            if table == states && n == 1 {
                // The scan has passed "a" and read "c".
                commit(
                    &store,
                    &[
                        (states, b"a", Some(b"passed, changed")),
                        (states, b"c", None),
                        (states, b"d", Some(b"new, ahead")),
                        (states, b"e", Some(b"ahead, changed")),
                        (states, b"g", None),
                        (chans, b"x", None),
                        (chans, b"y", Some(b"new, later table")),
                    ],
                );
            }
        });
        assert_eq!(seen, before);
        drop(view);
        let after = contents(&store);
        assert_eq!(after[&(states.index(), b"e".to_vec())], b"ahead, changed");
        assert!(!after.contains_key(&(chans.index(), b"x".to_vec())));
    }

    #[test]
    fn a_closed_view_keeps_nothing_and_one_view_opens_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let view = store.point_in_time().unwrap();
        assert!(store.point_in_time().is_err());
        drop(view);
        commit(&store, &[(Table::States, b"k", Some(b"v"))]);
        assert!(store.capture.lock().is_none());
        assert!(store.point_in_time().is_ok());
    }

    /// A change: table (0..3 of `Table::ALL`), key (0..24), new value or delete.
    fn change() -> impl Strategy<Value = (usize, u8, Option<u8>)> {
        (0..3usize, 0..24u8, proptest::option::of(any::<u8>()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random tables, random commits at random points of the scan: the view reads
        /// exactly the tables as they were when it opened, each key once.
        #[test]
        fn commits_during_a_scan_never_show_in_the_view(
            initial in proptest::collection::vec(change(), 0..60),
            commits in proptest::collection::vec(
                (0..3usize, 0..30usize, proptest::collection::vec(change(), 1..6)),
                0..20,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path()).unwrap();
            // Keys and values are one byte each.
            let apply = |changes: &[(usize, u8, Option<u8>)]| {
                let bytes: Vec<([u8; 1], Option<[u8; 1]>)> =
                    changes.iter().map(|&(_, k, v)| ([k], v.map(|v| [v]))).collect();
                let borrowed: Vec<Change<'_>> = changes
                    .iter()
                    .zip(&bytes)
                    .map(|(&(t, _, _), (k, v))| (Table::ALL[t], &k[..], v.as_ref().map(|v| &v[..])))
                    .collect();
                commit(&store, &borrowed);
            };
            apply(&initial);
            let before = contents(&store);
            let view = store.point_in_time().unwrap();
            let seen = read(&view, |table, n| {
                for (at_table, at, changes) in &commits {
                    if Table::ALL[*at_table] == table && *at == n {
                        apply(changes);
                    }
                }
            });
            prop_assert_eq!(seen, before);
        }
    }

    #[test]
    fn an_open_view_keeps_the_value_files_it_may_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let large = vec![1u8; crate::storage::sm::values::LARGE_VALUE_BYTES];
        let files = || std::fs::read_dir(store.values_dir()).unwrap().count();
        commit(&store, &[(Table::Senders, b"a", Some(&large))]);
        let view = store.point_in_time().unwrap();
        commit(&store, &[(Table::Senders, b"a", None)]);
        store.flush_durable().unwrap();
        let mut seen = Vec::new();
        view.for_each(Table::Senders, |k, v| {
            let Emitted::File(reference) = v else {
                panic!("a large value is kept in a file: {v:?}");
            };
            let file = store.values_dir().join(reference.file_name());
            seen.push((k.to_vec(), std::fs::read(file).unwrap()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(b"a".to_vec(), large)]);
        drop(view);
        assert_eq!(files(), 1, "kept while the view was open");
        store.flush_durable().unwrap();
        assert_eq!(files(), 0, "deleted by the next flush");
    }
}
