//! Large values in files of their own, beside sled: each written once, deleted once
//! nothing durable refers to it.
//!
//! # Why
//! sled keeps every value inside its tree's leaf nodes (up to 16 entries a leaf). It
//! logs each change to a leaf as a fragment and every tenth one writes the whole leaf
//! again — into a blob file of its own once the leaf is larger than a quarter of a
//! segment — and reclaims the space of what is superseded only when its segment cleaner
//! gets to it. A large value thus lay on disk two to three times over: 100 values of
//! 900 KB, 90 MB, took 84 MB of sled's log and 105 MB of blobs
//! (`benches/space_per_value.sh`). So a value of at least [`LARGE_VALUE_BYTES`] goes
//! into a file under `values/`, and sled holds a small sealed reference to it: the
//! file's name (a random 128-bit id), the value's length and its CRC-32.
//!
//! # Durability
//! A commit writes its files and syncs them and the directory *before* the sled
//! transaction that refers to them, so whatever sled holds after a crash — flushed or
//! not — refers only to complete files. Syncing at commit costs one `fdatasync` per
//! large value, which is small beside replicating and logging that value.
//!
//! # Deletion
//! A file whose reference a commit replaced or removed is deleted only
//! - after a durable flush that covers the commit (before it, a crash would bring the
//!   reference back): [`SledStore::flush_durable`] takes the list before it flushes
//!   and deletes after;
//! - while no point-in-time view is open (a view may still read the value it replaced).
//!
//! A crash in between leaves files that nothing refers to; opening the store deletes
//! them (it reads every reference anyway). A reader that found a reference just
//! before it was replaced may find its file gone; it reads the key again, which no
//! longer holds that reference ([`SledStore::get`]).

use std::collections::HashSet;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::watch;

use super::seal;
use crate::engine::StoreError;

/// Values of at least this many bytes are kept in files of their own. Below it, sled's
/// copies cost little; above it, the file's `fdatasync` costs little beside the value.
pub const LARGE_VALUE_BYTES: usize = 64 << 10;

/// The directory of the value files, inside the store's directory.
pub const VALUES_DIR: &str = "values";

/// Bytes of a reference: the file id, the value's length and its CRC-32.
pub const REFERENCE_BYTES: usize = 16 + 8 + 4;

/// A value kept in a file: which file, and what it must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reference {
    id: u128,
    len: u64,
    crc: u32,
}

impl Reference {
    /// The reference as bytes (as a snapshot carries it; sled keeps it sealed).
    pub fn encode(&self) -> [u8; REFERENCE_BYTES] {
        let mut bytes = [0; REFERENCE_BYTES];
        bytes[..16].copy_from_slice(&self.id.to_be_bytes());
        bytes[16..24].copy_from_slice(&self.len.to_be_bytes());
        bytes[24..].copy_from_slice(&self.crc.to_be_bytes());
        bytes
    }

    /// The reference `bytes` encode, if they are one's length.
    pub fn decode(bytes: &[u8]) -> Option<Reference> {
        let bytes: &[u8; REFERENCE_BYTES] = bytes.try_into().ok()?;
        Some(Reference {
            id: u128::from_be_bytes(bytes[..16].try_into().ok()?),
            len: u64::from_be_bytes(bytes[16..24].try_into().ok()?),
            crc: u32::from_be_bytes(bytes[24..].try_into().ok()?),
        })
    }

    /// The reference that `stored` (a sealed sled value under `key`) holds, if it is
    /// one: it is not a sealed value, and it is a sealed reference. Cheap for anything
    /// else: a reference has one length.
    pub fn in_stored(key: &[u8], stored: &[u8]) -> Option<Reference> {
        if stored.len() != REFERENCE_BYTES + seal::SEAL_BYTES
            || seal::unseal(key, stored.to_vec()).is_some()
        {
            return None;
        }
        seal::unseal_reference(key, stored).and_then(Reference::decode)
    }

    /// The id of the file.
    pub fn id(&self) -> u128 {
        self.id
    }

    /// The length of the value.
    pub fn value_len(&self) -> u64 {
        self.len
    }

    /// The CRC-32 of the value.
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// The name of the file.
    pub fn file_name(&self) -> String {
        file_name(self.id)
    }
}

fn file_name(id: u128) -> String {
    format!("{id:032x}")
}

/// Why a value file could not be read.
pub enum ReadError {
    /// The file is gone: deleted since its reference was read, or lost.
    Gone(PathBuf),
    /// Anything else (damage included), as the store's error.
    Store(StoreError),
}

/// The value files of one store.
pub struct ValueFiles {
    dir: PathBuf,
    /// Files whose references commits have replaced or removed, not yet deleted.
    dropped: Mutex<Vec<u128>>,
    /// Bytes of the files written for commits so far (not those adopted from a
    /// snapshot): each such value came in a log entry.
    written: watch::Sender<u64>,
}

impl ValueFiles {
    /// The value files in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<ValueFiles, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        Ok(ValueFiles {
            dir: dir.to_owned(),
            dropped: Mutex::default(),
            written: watch::Sender::new(0),
        })
    }

    /// Where the files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Follows the bytes of the files written for commits since the store opened.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// Writes `value`, to be stored under `key`, into a new file and returns the sealed
    /// reference to store instead. Not durable until [`ValueFiles::sync_dir`].
    pub fn write(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (reference, stored) =
            self.new_reference(key, value.len() as u64, crc32fast::hash(value));
        let path = self.dir.join(reference.file_name());
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        file.write_all(value).map_err(|e| io_err(&path, e))?;
        file.sync_data().map_err(|e| io_err(&path, e))?;
        self.written
            .send_modify(|bytes| *bytes += value.len() as u64);
        Ok(stored)
    }

    /// Takes in the value file `from` (a snapshot's link to a file that holds what
    /// `reference` refers to, checked as it arrived) for a value to be stored under
    /// `key`: links it here under a new id and returns the sealed reference to store.
    /// A new id, not the snapshot's, so that no file this store already holds — or has
    /// dropped and is about to delete — is ever taken for it. Not durable until
    /// [`ValueFiles::sync_dir`].
    pub fn adopt(
        &self,
        key: &[u8],
        reference: &Reference,
        from: &Path,
    ) -> Result<Vec<u8>, StoreError> {
        let (adopted, stored) = self.new_reference(key, reference.len, reference.crc);
        let path = self.dir.join(adopted.file_name());
        std::fs::hard_link(from, &path).map_err(|e| io_err(from, e))?;
        Ok(stored)
    }

    /// A reference to a new file for a value of `len` bytes with CRC-32 `crc`, to be
    /// stored under `key`, and its sealed form.
    fn new_reference(&self, key: &[u8], len: u64, crc: u32) -> (Reference, Vec<u8>) {
        loop {
            let reference = Reference {
                id: uuid::Uuid::new_v4().as_u128(),
                len,
                crc,
            };
            let stored = seal::seal_reference(key, &reference.encode());
            // A reference must never pass for an inline value (module docs of `seal`).
            if seal::unseal(key, stored.clone()).is_none() {
                return (reference, stored);
            }
        }
    }

    /// Makes the names of the files written so far durable.
    pub fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_err(&self.dir, e))
    }

    /// The value `reference` (stored under `key`) refers to, checked.
    pub fn read(&self, key: &[u8], reference: &Reference) -> Result<Vec<u8>, ReadError> {
        let path = self.dir.join(reference.file_name());
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(ReadError::Gone(path)),
            Err(e) => return Err(ReadError::Store(io_err(&path, e))),
        };
        let mut value = Vec::with_capacity(reference.len as usize);
        file.read_to_end(&mut value)
            .map_err(|e| ReadError::Store(io_err(&path, e)))?;
        if value.len() as u64 != reference.len || crc32fast::hash(&value) != reference.crc {
            let error = StoreError::Corruption {
                file: Some(path),
                table: None,
                key: Some(key.to_vec()),
                what: format!(
                    "the value file holds {} bytes that do not match its reference \
                     ({} bytes, CRC-32 {:08x})",
                    value.len(),
                    reference.len,
                    reference.crc
                ),
            };
            tracing::error!("{error}");
            return Err(ReadError::Store(error));
        }
        Ok(value)
    }

    /// Notes that commits replaced or removed these references: their files go once a
    /// durable flush covers those commits.
    pub fn dropped(&self, references: impl IntoIterator<Item = Reference>) {
        self.lock().extend(references.into_iter().map(|r| r.id));
    }

    /// Notes that every file present is no longer referred to (the tables were
    /// cleared).
    pub fn drop_all(&self) -> Result<(), StoreError> {
        let present = self.present()?;
        self.lock().extend(present);
        Ok(())
    }

    /// The files dropped so far; for a flush to delete once it is durable.
    pub fn take_dropped(&self) -> Vec<u128> {
        std::mem::take(&mut *self.lock())
    }

    /// Hands files back to be deleted by a later flush.
    pub fn keep_dropped(&self, ids: Vec<u128>) {
        self.lock().extend(ids);
    }

    /// Deletes the files `ids`; a file already gone is fine.
    pub fn delete(&self, ids: &[u128]) -> Result<(), StoreError> {
        for &id in ids {
            let path = self.dir.join(file_name(id));
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(io_err(&path, e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Deletes every file that is not among `referenced` (on opening, before any
    /// commit): left by a crash between a commit and the deletion that was due, or
    /// written for a commit that never happened. Returns how many it deleted.
    pub fn delete_unreferenced(&self, referenced: &HashSet<u128>) -> Result<usize, StoreError> {
        let mut deleted = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let name = entry.file_name();
            let id = name
                .to_str()
                .filter(|n| n.len() == 32)
                .and_then(|n| u128::from_str_radix(n, 16).ok());
            if id.is_some_and(|id| referenced.contains(&id)) {
                continue;
            }
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// The ids of the files present.
    fn present(&self) -> Result<Vec<u128>, StoreError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| u128::from_str_radix(n, 16).ok())
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u128>> {
        self.dropped.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        file: Some(path.to_owned()),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Store, Table, WriteSet};
    use crate::storage::sm::SledStore;

    /// Commits a write and writes it into sled, where value files are made.
    fn put(store: &SledStore, key: &[u8], value: Option<Vec<u8>>) {
        let mut writes = WriteSet::default();
        writes[Table::Senders.index()].insert(key.to_vec(), value);
        store.commit(writes).unwrap();
        store.write_back().unwrap();
    }

    fn files(store: &SledStore) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(store.values_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn large(fill: u8) -> Vec<u8> {
        vec![fill; LARGE_VALUE_BYTES]
    }

    #[test]
    fn a_large_value_is_kept_once_in_a_file_and_deleted_after_the_flush_that_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        put(&store, b"small", Some(vec![1; LARGE_VALUE_BYTES - 1]));
        assert!(files(&store).is_empty(), "a small value stays in sled");
        put(&store, b"a", Some(large(7)));
        let first = files(&store);
        assert_eq!(first.len(), 1);
        let path = store.values_dir().join(&first[0]);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            large(7),
            "the value, as it is"
        );
        assert_eq!(store.get(Table::Senders, b"a").unwrap(), Some(large(7)));
        let scanned: Vec<_> = store
            .scan_from(Table::Senders, b"")
            .map(Result::unwrap)
            .collect();
        assert_eq!(scanned[0], (b"a".to_vec(), large(7)));

        // Replaced: the new value has a file of its own; the old one stays until a
        // durable flush covers the change (a crash before it would bring it back).
        put(&store, b"a", Some(large(8)));
        assert_eq!(files(&store).len(), 2);
        assert_eq!(store.get(Table::Senders, b"a").unwrap(), Some(large(8)));
        store.flush_durable().unwrap();
        let second = files(&store);
        assert_eq!(second.len(), 1);
        assert_ne!(second, first);

        // Removed (a received value): gone after the next flush.
        put(&store, b"a", None);
        assert_eq!(files(&store), second);
        store.flush_durable().unwrap();
        assert!(files(&store).is_empty());
        assert_eq!(store.get(Table::Senders, b"a").unwrap(), None);
    }

    #[test]
    fn clearing_drops_every_file_and_opening_deletes_strays() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        put(&store, b"a", Some(large(1)));
        put(&store, b"b", Some(large(2)));
        store.clear().unwrap();
        store
            .load(Table::Senders, &[(b"c".to_vec(), large(3))])
            .unwrap();
        store.flush_durable().unwrap();
        assert_eq!(files(&store).len(), 1, "only the loaded value's file");
        assert_eq!(store.get(Table::Senders, b"c").unwrap(), Some(large(3)));

        // A file nothing refers to, as a crash before its deletion leaves one.
        let stray = store.values_dir().join(file_name(42));
        std::fs::write(&stray, b"left over").unwrap();
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert!(!stray.exists());
        assert_eq!(files(&store).len(), 1);
        assert_eq!(store.get(Table::Senders, b"c").unwrap(), Some(large(3)));
    }

    #[test]
    fn a_damaged_or_missing_value_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        put(&store, b"a", Some(large(1)));
        store.flush_durable().unwrap();
        let path = store.values_dir().join(&files(&store)[0]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let names_file = |e: &StoreError| {
            matches!(e, StoreError::Corruption { file: Some(f), key: Some(k), .. }
                if f == &path && k == b"a")
        };
        let error = store.get(Table::Senders, b"a").unwrap_err();
        assert!(names_file(&error), "{error:?}");
        std::fs::remove_file(&path).unwrap();
        let error = store.get(Table::Senders, b"a").unwrap_err();
        assert!(names_file(&error), "{error:?}");
        drop(store);
        let error = match SledStore::open(dir.path()) {
            Ok(_) => panic!("a store with a missing value file opened"),
            Err(e) => e,
        };
        assert!(names_file(&error), "{error:?}");
    }
}
