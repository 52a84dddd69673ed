//! The snapshot's tables file: every state-machine table streamed to disk, and back.
//!
//! The state machine lives on disk and may be larger than memory (design.md §4), so a
//! snapshot is never one in-memory blob: it is written record by record from sled
//! iterators and read back record by record into sled batches.
//!
//! A large value kept in a file of its own (`crate::storage::sm::values`) is not copied
//! into the snapshot: the record holds its reference, and the snapshot shares the file
//! itself (a hard link, see [`super::snapshot_files`]). A waiting value is then on disk
//! once, not once in the store and again in the snapshot (design.md §4, "Snapshots").
//! What travels to a peer is this file followed by the value files it lists
//! ([`super::snapshot_data`]).
//!
//! # Format
//! `MAGIC`, then the [`Meta`] as a length-prefixed JSON record, then one record
//! per key: a tag (the table's index, with [`IN_FILE`] set for a value kept in a file),
//! key and value (each `u32` length-prefixed, big-endian; for a value in a file, its
//! reference), then `END` and the number of key records as `u64`, so a truncated file is
//! detected instead of loaded as a smaller state. Last, the references of the value
//! files in record order, and their number as `u64`: the file's last eight bytes, so
//! the list is found without reading the records. Files of the first format
//! (`SLCTSNP1`, every value inline, no list) are still read.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::engine::Table;
use crate::storage::sm::point_in_time::{Emitted, PointInTime};
use crate::storage::sm::values::{Reference, REFERENCE_BYTES};
use crate::storage::sm::SledStore;

/// Identifies the format (and its version) at the start of every snapshot file.
const MAGIC: &[u8; 8] = b"SLCTSNP2";
/// The first format: every value inline, no list of value files.
const MAGIC_V1: &[u8; 8] = b"SLCTSNP1";
/// Marks the end of the key records.
const END: u8 = 0xFF;
/// Set in a record's tag when its value is kept in a file and the record holds the
/// reference.
const IN_FILE: u8 = 0x80;
/// Keys per sled batch while loading.
const LOAD_BATCH: usize = 4096;

/// Snapshot metadata with slct's node types.
pub type Meta = super::SnapshotMeta;

/// What [`write`] wrote.
pub struct Written {
    /// Key records.
    pub records: u64,
    /// The value files the records refer to, which the snapshot must keep.
    pub files: Vec<Reference>,
}

/// Writes `meta` and every table of `view` to `file` and syncs it. The view was opened
/// at the applied index `meta` names, so the tables match it whatever is applied
/// meanwhile; the value files it lists stay in place while the view is open.
pub fn write(view: &PointInTime<'_>, meta: &Meta, file: &File) -> io::Result<Written> {
    let mut out = BufWriter::new(file);
    out.write_all(MAGIC)?;
    write_chunk(&mut out, &serde_json::to_vec(meta)?)?;
    let mut written = Written {
        records: 0,
        files: Vec::new(),
    };
    for table in Table::ALL {
        // Checked values: a damaged one fails the build rather than travel to a peer.
        view.for_each(table, |key, value| -> io::Result<()> {
            let tag = table.index() as u8;
            match value {
                Emitted::Value(value) => {
                    out.write_all(&[tag])?;
                    write_chunk(&mut out, key)?;
                    write_chunk(&mut out, &value)?;
                }
                Emitted::File(reference) => {
                    out.write_all(&[tag | IN_FILE])?;
                    write_chunk(&mut out, key)?;
                    write_chunk(&mut out, &reference.encode())?;
                    written.files.push(reference);
                }
            }
            written.records += 1;
            Ok(())
        })?;
    }
    out.write_all(&[END])?;
    out.write_all(&written.records.to_be_bytes())?;
    for reference in &written.files {
        out.write_all(&reference.encode())?;
    }
    out.write_all(&(written.files.len() as u64).to_be_bytes())?;
    out.flush()?;
    drop(out);
    file.sync_all()?;
    Ok(written)
}

/// The value files that the snapshot in `file` refers to, from the list at its end.
pub fn read_files(file: &File) -> io::Result<Vec<Reference>> {
    let mut input = file;
    input.seek(SeekFrom::Start(0))?;
    let mut magic = [0u8; MAGIC.len()];
    input.read_exact(&mut magic)?;
    if &magic == MAGIC_V1 {
        return Ok(Vec::new());
    }
    if &magic != MAGIC {
        return Err(invalid("not an slct snapshot"));
    }
    let len = file.metadata()?.len();
    let mut count = [0u8; 8];
    input.seek(SeekFrom::Start(len.saturating_sub(8)))?;
    input.read_exact(&mut count)?;
    let list = u64::from_be_bytes(count)
        .checked_mul(REFERENCE_BYTES as u64)
        .filter(|bytes| bytes.saturating_add(8) <= len)
        .ok_or_else(|| invalid("the list of value files does not fit in the snapshot"))?;
    input.seek(SeekFrom::Start(len - 8 - list))?;
    let mut bytes = Vec::new();
    input.take(list).read_to_end(&mut bytes)?;
    bytes
        .chunks(REFERENCE_BYTES)
        .map(|chunk| Reference::decode(chunk).ok_or_else(|| invalid("truncated snapshot")))
        .collect()
}

/// Reads the metadata at the start of a snapshot file.
pub fn read_meta(file: &File) -> io::Result<Meta> {
    let mut input = BufReader::new(file);
    read_header(&mut input).map(|(meta, _)| meta)
}

/// Replaces every table of `store` with the contents of the snapshot at `path`, and
/// returns its metadata. The value files it refers to are in `files` (the snapshot's
/// links); each is linked into the store. Not atomic: the caller marks the install so
/// that a crash halfway is finished on restart.
pub fn load(store: &SledStore, path: &Path, files: &Path) -> io::Result<Meta> {
    let mut input = BufReader::new(File::open(path)?);
    let (meta, version) = read_header(&mut input)?;
    store.clear().map_err(io::Error::other)?;
    let mut batches = Batches::default();
    let mut records = 0u64;
    loop {
        let tag = read_u8(&mut input)?;
        if tag == END {
            break;
        }
        let in_file = version == MAGIC && tag & IN_FILE != 0;
        let table = *Table::ALL
            .get(usize::from(if in_file { tag & !IN_FILE } else { tag }))
            .ok_or_else(|| invalid("unknown table in snapshot"))?;
        let key = read_chunk(&mut input)?;
        let value = read_chunk(&mut input)?;
        if in_file {
            let reference = Reference::decode(&value)
                .ok_or_else(|| invalid("a value file's reference is damaged"))?;
            let link = files.join(reference.file_name());
            batches.files[table.index()].push((key, reference, link));
        } else {
            batches.values[table.index()].push((key, value));
        }
        records += 1;
        batches.pending += 1;
        if batches.pending == LOAD_BATCH {
            batches.apply(store)?;
        }
    }
    batches.apply(store)?;
    let mut count = [0u8; 8];
    input.read_exact(&mut count)?;
    if u64::from_be_bytes(count) != records {
        return Err(invalid("snapshot record count does not match"));
    }
    Ok(meta)
}

/// Records read from a snapshot and not yet written, by table.
struct Batches {
    values: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    files: Vec<Vec<(Vec<u8>, Reference, PathBuf)>>,
    pending: usize,
}

impl Default for Batches {
    fn default() -> Self {
        Batches {
            values: Table::ALL.iter().map(|_| Vec::new()).collect(),
            files: Table::ALL.iter().map(|_| Vec::new()).collect(),
            pending: 0,
        }
    }
}

impl Batches {
    fn apply(&mut self, store: &SledStore) -> io::Result<()> {
        for table in Table::ALL {
            let i = table.index();
            store
                .load(table, &std::mem::take(&mut self.values[i]))
                .map_err(io::Error::other)?;
            store
                .load_files(table, &std::mem::take(&mut self.files[i]))
                .map_err(io::Error::other)?;
        }
        self.pending = 0;
        Ok(())
    }
}

fn read_header(input: &mut impl Read) -> io::Result<(Meta, &'static [u8; 8])> {
    let mut magic = [0u8; MAGIC.len()];
    input.read_exact(&mut magic)?;
    let version = match &magic {
        MAGIC => MAGIC,
        MAGIC_V1 => MAGIC_V1,
        _ => return Err(invalid("not an slct snapshot")),
    };
    Ok((serde_json::from_slice(&read_chunk(input)?)?, version))
}

fn write_chunk(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| invalid("record too large"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

fn read_chunk(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let mut bytes = Vec::new();
    input
        .take(u64::from(u32::from_be_bytes(len)))
        .read_to_end(&mut bytes)?;
    if bytes.len() != u32::from_be_bytes(len) as usize {
        return Err(invalid("truncated snapshot"));
    }
    Ok(bytes)
}

fn read_u8(input: &mut impl Read) -> io::Result<u8> {
    let mut byte = [0u8; 1];
    input.read_exact(&mut byte)?;
    Ok(byte[0])
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Store;

    /// A snapshot file of the first format, as an older node wrote it: every value
    /// inline, no list of value files, and a `snapshot_id` in the meta (which is ignored).
    fn first_format(meta: &Meta, records: &[(Table, &[u8], &[u8])]) -> Vec<u8> {
        let mut bytes = MAGIC_V1.to_vec();
        let mut json = serde_json::to_value(meta).unwrap();
        json["snapshot_id"] = "old".into();
        write_chunk(&mut bytes, &serde_json::to_vec(&json).unwrap()).unwrap();
        for (table, key, value) in records {
            bytes.push(table.index() as u8);
            write_chunk(&mut bytes, key).unwrap();
            write_chunk(&mut bytes, value).unwrap();
        }
        bytes.push(END);
        bytes.extend_from_slice(&(records.len() as u64).to_be_bytes());
        bytes
    }

    #[test]
    fn a_snapshot_of_the_first_format_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("sm")).unwrap();
        let meta = Meta {
            last_log_id: Some(crate::raft::LogId::new(
                crate::raft::LeaderId {
                    term: 2,
                    node_id: 1,
                },
                7,
            )),
            last_membership: Default::default(),
        };
        // One value large enough to go into a file of its own once loaded.
        let large = vec![7u8; crate::storage::sm::values::LARGE_VALUE_BYTES];
        let path = dir.path().join("current.snap");
        let records: [(Table, &[u8], &[u8]); 2] =
            [(Table::States, b"a", b"1"), (Table::Chans, b"c", &large)];
        std::fs::write(&path, first_format(&meta, &records)).unwrap();

        let file = File::open(&path).unwrap();
        assert_eq!(read_meta(&file).unwrap(), meta);
        assert!(
            read_files(&file).unwrap().is_empty(),
            "no value files listed"
        );
        let loaded = load(&store, &path, &dir.path().join("values")).unwrap();
        assert_eq!(loaded, meta);
        assert_eq!(store.get(Table::States, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(Table::Chans, b"c").unwrap(), Some(large));
    }
}
