//! Catching a sled database that lost writes it had made durable.
//!
//! Tried on sled 0.34.7: flip a byte in a recent record of `db`, or cut the file's tail,
//! and reopening either panics in recovery or succeeds without a word, with every write
//! from the damaged record on gone. For Raft that is the dangerous case: a node that
//! forgets entries it acknowledged, or the vote it cast, can elect a second leader or
//! lose a committed write. Checksums on values cannot see a value that is not there.
//!
//! So every durable flush carries a *generation*: [`SledStore::flush_durable`]
//! (super::sm::SledStore::flush_durable) writes the next number into the database before
//! flushing it and, once the flush is on disk, records that number in a small file
//! beside the data, `slct-flushed` (12 bytes: the number and its CRC-32). On opening,
//! the database must hold at least the recorded number; if it holds less, it lost
//! flushed writes and the node refuses to start, naming the file.
//!
//! The marker is overwritten in place and not synced: it only ever trails what is
//! durable in the database, so a marker lost or left behind by a power loss makes the
//! check weaker, never wrong. A missing or empty marker (a new database, or one created
//! just before a power loss) is accepted; a marker of the wrong size or checksum is not.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::engine::StoreError;

/// The marker's file name inside the database directory.
pub const MARKER_FILE: &str = "slct-flushed";
/// Key of the generation in sled's default tree.
pub const GENERATION_KEY: &[u8] = b"slct/flush-generation";

const MARKER_BYTES: usize = 12;

/// The marker file of one database, and the highest generation written to it.
pub struct FlushMarker {
    path: PathBuf,
    file: File,
    written: Mutex<u64>,
}

impl FlushMarker {
    /// Opens (or creates) the marker in `dir`; returns it with the generation it records
    /// (0 if none).
    pub fn open(dir: &Path) -> Result<(FlushMarker, u64), StoreError> {
        let path = dir.join(MARKER_FILE);
        let io = |source| StoreError::Io {
            file: Some(path.clone()),
            source,
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(io)?;
        let recorded = match bytes.len() {
            0 => 0,
            MARKER_BYTES => decode(&bytes).ok_or_else(|| damaged(&path))?,
            _ => return Err(damaged(&path)),
        };
        let marker = FlushMarker {
            path,
            file,
            written: Mutex::new(recorded),
        };
        Ok((marker, recorded))
    }

    /// Records that generation `generation` is durable (unless a later one already is).
    pub fn record(&self, generation: u64) -> Result<(), StoreError> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if generation <= *written {
            return Ok(());
        }
        self.file
            .write_all_at(&encode(generation), 0)
            .map_err(|source| StoreError::Io {
                file: Some(self.path.clone()),
                source,
            })?;
        *written = generation;
        Ok(())
    }

    /// Where the marker lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The generation as stored in sled (and in the marker, before its checksum).
pub fn encode_generation(generation: u64) -> [u8; 8] {
    generation.to_be_bytes()
}

/// A generation read back from sled.
pub fn decode_generation(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn encode(generation: u64) -> [u8; MARKER_BYTES] {
    let mut bytes = [0u8; MARKER_BYTES];
    bytes[..8].copy_from_slice(&encode_generation(generation));
    let sum = crc32fast::hash(&bytes[..8]);
    bytes[8..].copy_from_slice(&sum.to_be_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<u64> {
    let (generation, sum) = bytes.split_at(8);
    let sum = u32::from_be_bytes(sum.try_into().ok()?);
    (crc32fast::hash(generation) == sum).then(|| decode_generation(generation))?
}

fn damaged(path: &Path) -> StoreError {
    StoreError::Corruption {
        file: Some(path.to_owned()),
        table: None,
        key: None,
        what: "the flush marker has the wrong size or checksum".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_keeps_the_highest_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (marker, recorded) = FlushMarker::open(dir.path()).unwrap();
        assert_eq!(recorded, 0);
        marker.record(7).unwrap();
        marker.record(5).unwrap();
        drop(marker);
        assert_eq!(FlushMarker::open(dir.path()).unwrap().1, 7);
    }

    #[test]
    fn a_damaged_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        FlushMarker::open(dir.path()).unwrap().0.record(3).unwrap();
        let path = dir.path().join(MARKER_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[7] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = FlushMarker::open(dir.path()).err().unwrap();
        assert!(
            matches!(&err, StoreError::Corruption { file: Some(f), .. } if f == &path),
            "{err}"
        );
        std::fs::write(&path, &bytes[..5]).unwrap();
        assert!(FlushMarker::open(dir.path()).is_err());
    }
}
