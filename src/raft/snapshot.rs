//! The snapshot file: every state-machine table streamed to disk, and back.
//!
//! The state machine lives on disk and may be larger than memory (design.md §4), so a
//! snapshot is never one in-memory blob: it is written record by record from sled
//! iterators and read back record by record into sled batches. openraft moves the file
//! between nodes in chunks.
//!
//! # Format
//! `MAGIC`, then the [`SnapshotMeta`] as a length-prefixed JSON record, then one record
//! per key: table index (`u8`), key and value (each `u32` length-prefixed, big-endian),
//! then `END` and the number of key records as `u64`, so a truncated file is detected
//! instead of loaded as a smaller state.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use openraft::{BasicNode, SnapshotMeta};

use crate::engine::Table;
use crate::storage::sm::point_in_time::PointInTime;
use crate::storage::sm::SledStore;

/// Identifies the format (and its version) at the start of every snapshot file.
const MAGIC: &[u8; 8] = b"SLCTSNP1";
/// Marks the end of the key records.
const END: u8 = 0xFF;
/// Keys per sled batch while loading.
const LOAD_BATCH: usize = 4096;

/// Snapshot metadata with slct's node types.
pub type Meta = SnapshotMeta<u64, BasicNode>;

/// Writes `meta` and every table of `view` to `file`, syncs it, and returns the number
/// of records. The view was opened
/// at the applied index `meta` names, so the tables match it whatever is applied
/// meanwhile.
pub fn write(view: &PointInTime<'_>, meta: &Meta, file: &File) -> io::Result<u64> {
    let mut out = BufWriter::new(file);
    out.write_all(MAGIC)?;
    write_chunk(&mut out, &serde_json::to_vec(meta)?)?;
    let mut records = 0u64;
    for table in Table::ALL {
        // Checked values: a damaged one fails the build rather than travel to a peer.
        view.for_each(table, |key, value| -> io::Result<()> {
            out.write_all(&[table.index() as u8])?;
            write_chunk(&mut out, key)?;
            write_chunk(&mut out, value)?;
            records += 1;
            Ok(())
        })?;
    }
    out.write_all(&[END])?;
    out.write_all(&records.to_be_bytes())?;
    out.flush()?;
    drop(out);
    file.sync_all()?;
    Ok(records)
}

/// Reads the metadata at the start of a snapshot file.
pub fn read_meta(file: &File) -> io::Result<Meta> {
    let mut input = BufReader::new(file);
    read_header(&mut input)
}

/// Replaces every table of `store` with the contents of the snapshot at `path`, and
/// returns its metadata. Not atomic: the caller marks the install so that a crash
/// halfway is finished on restart.
pub fn load(store: &SledStore, path: &Path) -> io::Result<Meta> {
    let mut input = BufReader::new(File::open(path)?);
    let meta = read_header(&mut input)?;
    store.clear().map_err(io::Error::other)?;
    let mut batches: Vec<Vec<(Vec<u8>, Vec<u8>)>> = Table::ALL.iter().map(|_| Vec::new()).collect();
    let mut pending = 0;
    let mut records = 0u64;
    loop {
        let tag = read_u8(&mut input)?;
        if tag == END {
            break;
        }
        let table = *Table::ALL
            .get(usize::from(tag))
            .ok_or_else(|| invalid("unknown table in snapshot"))?;
        let key = read_chunk(&mut input)?;
        let value = read_chunk(&mut input)?;
        batches[table.index()].push((key, value));
        records += 1;
        pending += 1;
        if pending == LOAD_BATCH {
            apply_batches(store, &mut batches)?;
            pending = 0;
        }
    }
    apply_batches(store, &mut batches)?;
    let mut count = [0u8; 8];
    input.read_exact(&mut count)?;
    if u64::from_be_bytes(count) != records {
        return Err(invalid("snapshot record count does not match"));
    }
    Ok(meta)
}

fn apply_batches(store: &SledStore, batches: &mut [Vec<(Vec<u8>, Vec<u8>)>]) -> io::Result<()> {
    for (table, batch) in Table::ALL.iter().zip(batches.iter_mut()) {
        store
            .load(*table, &std::mem::take(batch))
            .map_err(io::Error::other)?;
    }
    Ok(())
}

fn read_header(input: &mut impl Read) -> io::Result<Meta> {
    let mut magic = [0u8; MAGIC.len()];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid("not an slct snapshot"));
    }
    Ok(serde_json::from_slice(&read_chunk(input)?)?)
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
