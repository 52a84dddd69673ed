//! The write-ahead log of Raft: entries, vote, committed index, truncations and the purge
//! point, in segment files of checksummed records.
//!
//! # Why a log of our own
//! The log used to live in sled beside the state machine, so every append paid sled's
//! whole flush (its IO thread, `sync_file_range`, then `fdatasync` of the database). A
//! Raft log needs far less: append at the end, read back a range, cut the tail, drop the
//! head. Here an append is one `pwrite` into a preallocated file and one `fdatasync`
//! shared by every append waiting at that moment ([`sync`]: group commit).
//!
//! # Files
//! The log is a run of segments named by sequence number (`00000000000000000001.wal`).
//! A segment is created zero-filled and synced (as `spare.tmp`, prepared in the
//! background once the current segment is half full), so writing into it never changes the file's size and `fdatasync` has
//! no metadata to journal. Its first record ([`record::SegmentHead`]) carries the vote,
//! the committed id, the purge point and the next index as they stood when it was
//! begun, so older segments can be deleted whole. When a segment is full, it is synced,
//! the next one gets its head written and synced, is renamed into place and the
//! directory is synced: a segment that exists under its name always has a good head,
//! and every segment but the last is complete.
//!
//! Entries are appended; a truncation or a purge is a record too, applied on replay.
//! A vote is durable before [`Wal::save_vote`] calls back. The committed id, truncations
//! and purges ride on the next sync (a crash may bring back truncated entries, which
//! were never committed, or purged ones, which a snapshot holds: Raft tolerates both).
//! Purged segments are deleted only after the purge record is durable.
//!
//! # Opening
//! Every segment is read and every record checked. The end of the last segment may
//! hold a write that a crash tore: a damaged record there with no good record after it,
//! or with a whole zero sector inside it (a sector the disk never wrote while a later
//! one landed, as etcd checks), is cut off with everything after it, and the rest of the
//! segment zeroed. Any other damaged record, an entry out of sequence, or a segment
//! missing from the middle refuses to open, naming the file and the offset. Damage to
//! the very last record (or to a length field, which hides the record after it) cannot
//! be told from a torn write, and is cut as one.
//!
//! # Failures
//! An I/O error while writing or syncing stops the log for good (never retried, see
//! [`sync`]): the call, every waiter and every later call return it, and the node must
//! stop — a restart replays what is on disk.

mod fs;
mod record;
#[cfg(test)]
pub(crate) mod sim;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

pub use fs::{Dir, OsDir, SegmentFile};
use record::{Found, Record, SegmentHead};
use sync::Shared;

/// Size of a segment file (a record larger than a segment gets a segment of its own size).
pub const DEFAULT_SEGMENT_SIZE: u64 = 8 << 20;

/// The torn-write check looks for an all-zero run this long, aligned in the file.
const SECTOR: usize = 512;

/// The next segment file, zero-filled and synced ahead of need.
const SPARE: &str = "spare.tmp";
const SEGMENT_SUFFIX: &str = ".wal";

/// What can go wrong in the log.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WalError {
    /// A record is damaged or out of place: the log refuses to open.
    #[error("{}: damaged write-ahead log at offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An I/O error; on the write path it stops the log for good.
    #[error("write-ahead log: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: Arc<io::Error>,
    },
    /// A call that breaks the log's rules (an append out of sequence, a truncation below
    /// the purge point).
    #[error("write-ahead log: {0}")]
    Invalid(String),
    /// The log was closed while the call waited.
    #[error("write-ahead log closed")]
    Closed,
}

impl WalError {
    fn io(what: impl Into<String>, source: io::Error) -> WalError {
        WalError::Io {
            what: what.into(),
            source: Arc::new(source),
        }
    }
}

/// How the log is laid out.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Size of each segment file.
    pub segment_size: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// What the log holds besides entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// The first index held (entries before it are purged).
    pub first_index: u64,
    /// The index the next entry must have (the last held is one less, if any).
    pub next_index: u64,
    /// The last saved vote.
    pub vote: Option<Vec<u8>>,
    /// The last saved committed id.
    pub committed: Option<Vec<u8>>,
    /// The purge point: the last purged index and its id.
    pub purged: Option<(u64, Vec<u8>)>,
}

/// Who runs the `fdatasync` an append waits for (see [`sync`]'s "Who syncs").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncBy {
    /// The appending thread, if no sync is running and nobody waits; else the sync thread.
    Caller,
    /// Always the sync thread: the appending thread goes on at once.
    SyncThread,
}

/// The write-ahead log. Clones share it; the sync thread ends with the last clone.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    dir: Arc<dyn Dir>,
    options: Options,
    state: Mutex<State>,
    sync: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Adjacent entry records of one segment, with their indexes.
struct Run {
    file: Arc<dyn SegmentFile>,
    seq: u64,
    locs: Vec<(u64, Loc)>,
}

/// Where an entry's record is.
#[derive(Clone, Copy, Debug)]
struct Loc {
    seq: u64,
    offset: u64,
    len: u64,
}

/// Where the held entries are: `locs[i]` is index `base + i`; entries before `first`
/// are purged.
#[derive(Debug, Default)]
struct Index {
    first: u64,
    base: u64,
    locs: VecDeque<Loc>,
    /// The bytes of the records in `locs`.
    bytes: u64,
}

impl Index {
    fn next(&self) -> u64 {
        self.base + self.locs.len() as u64
    }

    fn push(&mut self, index: u64, loc: Loc) -> Result<(), String> {
        if self.locs.is_empty() && index > self.next() {
            // An empty log may begin anywhere (openraft's storage suite does).
            self.base = index;
            self.first = self.first.max(index);
        }
        if index != self.next() {
            return Err(format!(
                "entry {index} where entry {} was expected",
                self.next()
            ));
        }
        self.locs.push_back(loc);
        self.bytes += loc.len;
        Ok(())
    }

    fn truncate(&mut self, from: u64) -> Result<(), String> {
        if from < self.first || from > self.next() {
            return Err(format!(
                "truncation from {from} outside the held entries {}..{}",
                self.first,
                self.next()
            ));
        }
        let keep = from.saturating_sub(self.base) as usize;
        self.bytes -= self.locs.range(keep..).map(|l| l.len).sum::<u64>();
        if from <= self.base {
            self.locs.clear();
            self.base = from;
        } else {
            self.locs.truncate(keep);
        }
        Ok(())
    }

    fn purge(&mut self, through: u64) {
        let first = through + 1;
        if first <= self.first {
            return;
        }
        self.first = first;
        while self.base < first {
            let Some(loc) = self.locs.pop_front() else {
                break;
            };
            self.bytes -= loc.len;
            self.base += 1;
        }
        if self.locs.is_empty() {
            self.base = self.base.max(first);
        }
    }

    fn get(&self, index: u64) -> Option<Loc> {
        if index < self.first.max(self.base) {
            return None;
        }
        self.locs.get((index - self.base) as usize).copied()
    }
}

struct State {
    segments: BTreeMap<u64, Arc<dyn SegmentFile>>,
    /// The segment being written, its size, and where the next record goes.
    current: u64,
    current_len: u64,
    offset: u64,
    index: Index,
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<(u64, Vec<u8>)>,
    /// The spare segment being prepared in the background.
    spare: Option<JoinHandle<io::Result<Arc<dyn SegmentFile>>>>,
    /// Where a write's records are encoded before their one `pwrite`, kept from write
    /// to write (up to [`KEPT_WRITE_BUF_BYTES`]): a fresh buffer the size of a batch
    /// grew by doubling and touched new pages, and the page faults and the kernel's
    /// zeroing of those pages were about 2% of a follower's CPU.
    write_buf: Vec<u8>,
}

/// The largest write buffer kept between writes ([`State::write_buf`]): more than
/// Raft's appends take (a few MiB at most); a larger one is given back, not held.
const KEPT_WRITE_BUF_BYTES: usize = 4 << 20;

fn segment_name(seq: u64) -> String {
    format!("{seq:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() == 20).then(|| digits.parse().ok())?
}

impl Wal {
    /// Opens (or creates) the log in directory `path`.
    pub fn open(path: &Path, options: Options) -> Result<Wal, WalError> {
        let dir = OsDir::create(path)
            .map_err(|e| WalError::io(format!("create {}", path.display()), e))?;
        Wal::open_in(Arc::new(dir), options)
    }

    /// Opens (or creates) the log in `dir`.
    pub fn open_in(dir: Arc<dyn Dir>, options: Options) -> Result<Wal, WalError> {
        let names = dir
            .list()
            .map_err(|e| WalError::io(format!("list {}", dir.path("").display()), e))?;
        let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        seqs.sort_unstable();
        if names.iter().any(|n| n == SPARE) {
            // A spare that a crash may have left half-written; made again when needed.
            dir.remove(SPARE)
                .map_err(|e| WalError::io(format!("remove {}", dir.path(SPARE).display()), e))?;
        }
        let mut stale = Vec::new();
        // Segments before a gap are left over from a purge whose removals were cut
        // short; whether anything needed was in them shows at the end of the replay.
        if let Some(gap) = seqs.windows(2).rposition(|w| w[1] != w[0] + 1) {
            stale = seqs.drain(..=gap).collect();
        }
        let mut state = if seqs.is_empty() {
            create_first(&*dir, options)?
        } else {
            replay(&*dir, &seqs)?
        };
        let keep_from = state.oldest_needed();
        let current_file = state.segments[&state.current].clone();
        let shared = Shared::new(
            dir.clone(),
            current_file,
            dir.path(&segment_name(state.current)),
        );
        for seq in stale
            .into_iter()
            .chain(state.segments.range(..keep_from).map(|(s, _)| *s))
        {
            shared.doom(segment_name(seq), 0);
        }
        state.segments.retain(|seq, _| *seq >= keep_from);
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("wal-sync".to_owned())
                .spawn(move || sync::run(shared))
                .map_err(|e| WalError::io("start the sync thread", e))?
        };
        let wal = Wal {
            inner: Arc::new(Inner {
                dir,
                options,
                state: Mutex::new(state),
                sync: shared,
                thread: Mutex::new(Some(thread)),
            }),
        };
        // The doomed segments go with the first sync; make it now (opening syncs the
        // last segment anyway).
        wal.inner
            .sync
            .wait(wal.inner.sync.wrote(), Box::new(|_| ()));
        Ok(wal)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<(), WalError> {
        match self.inner.sync.failed() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The bytes of the records of the entries held: what a purge up to the last one
    /// would free (segment files are sized in whole segments on top).
    pub fn held_bytes(&self) -> u64 {
        self.state().index.bytes
    }

    /// The bytes of the records of the entries held up to index `through`: what a purge
    /// up to it would free.
    pub fn held_bytes_through(&self, through: u64) -> u64 {
        let state = self.state();
        let index = &state.index;
        let count = through.saturating_add(1).saturating_sub(index.base);
        index
            .locs
            .iter()
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .map(|loc| loc.len)
            .sum()
    }

    /// The index the next entry appended must have.
    pub fn next_index(&self) -> u64 {
        self.state().index.next()
    }

    /// What the log holds besides entries.
    pub fn log_state(&self) -> LogState {
        let state = self.state();
        LogState {
            first_index: state.index.first,
            next_index: state.index.next(),
            vote: state.vote.clone(),
            committed: state.committed.clone(),
            purged: state.purged.clone(),
        }
    }

    /// Appends entries (each with its index, in sequence after the last one; an empty log
    /// may begin anywhere past its end) and calls `done` once they are durable: before
    /// it returns if `by` lets it run the sync itself and it did, else on the sync thread
    /// (see [`sync`]'s "Who syncs").
    pub fn append(
        &self,
        entries: impl IntoIterator<Item = (u64, Vec<u8>)>,
        by: SyncBy,
        done: impl FnOnce(Result<(), WalError>) + Send + 'static,
    ) -> Result<(), WalError> {
        let mut state = self.state();
        let mut records = Vec::new();
        let mut next = state.index.next();
        for (index, data) in entries {
            // An empty log may begin at any index past its end.
            let begins = records.is_empty() && state.index.locs.is_empty() && index > next;
            if index != next && !begins {
                return Err(WalError::Invalid(format!(
                    "append of entry {index} where entry {next} comes next"
                )));
            }
            next = index + 1;
            records.push(Record::Entry { index, data });
        }
        let seq = self.write(&mut state, records)?;
        drop(state);
        match by {
            SyncBy::Caller => self.inner.sync.sync_here(seq, Box::new(done)),
            SyncBy::SyncThread => self.inner.sync.wait(seq, Box::new(done)),
        }
        Ok(())
    }

    /// Saves the vote and calls `done` once it is durable, as [`Wal::append`] does.
    pub fn save_vote(
        &self,
        vote: Vec<u8>,
        done: impl FnOnce(Result<(), WalError>) + Send + 'static,
    ) -> Result<(), WalError> {
        let mut state = self.state();
        let seq = self.write(&mut state, vec![Record::Vote(vote)])?;
        drop(state);
        self.inner.sync.sync_here(seq, Box::new(done));
        Ok(())
    }

    /// Saves the committed id; it becomes durable with the next sync.
    pub fn save_committed(&self, committed: Vec<u8>) -> Result<(), WalError> {
        let mut state = self.state();
        self.write(&mut state, vec![Record::Committed(committed)])?;
        Ok(())
    }

    /// Removes the entries from index `from` on.
    pub fn truncate(&self, from: u64) -> Result<(), WalError> {
        let mut state = self.state();
        if from < state.index.first || from > state.index.next() {
            return Err(WalError::Invalid(format!(
                "truncation from {from} outside the held entries {}..{}",
                state.index.first,
                state.index.next()
            )));
        }
        self.write(&mut state, vec![Record::Truncate { from }])?;
        Ok(())
    }

    /// Removes the entries up to index `through`, which `id` names, and deletes the
    /// segments that hold nothing else once the purge point is durable.
    pub fn purge(&self, through: u64, id: Vec<u8>) -> Result<(), WalError> {
        let mut state = self.state();
        if state.purged.as_ref().is_some_and(|(p, _)| *p >= through) {
            return Ok(());
        }
        let seq = self.write(&mut state, vec![Record::Purge { through, id }])?;
        let keep_from = state.oldest_needed();
        let doomed: Vec<u64> = state.segments.range(..keep_from).map(|(s, _)| *s).collect();
        for seq_doomed in doomed {
            state.segments.remove(&seq_doomed);
            self.inner.sync.doom(segment_name(seq_doomed), seq);
        }
        Ok(())
    }

    /// The held entries with indexes in `range`, in order, each checked.
    pub fn read(&self, range: Range<u64>) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
        // Runs of adjacent records in one segment, each read with one `pread`.
        let mut runs: Vec<Run> = Vec::new();
        {
            let state = self.state();
            let (first, next) = (state.index.first, state.index.next());
            for index in range.start.max(first)..range.end.min(next) {
                let Some(loc) = state.index.get(index) else {
                    continue;
                };
                match runs.last_mut() {
                    Some(run)
                        if run.seq == loc.seq
                            && run
                                .locs
                                .last()
                                .is_some_and(|(_, l)| l.offset + l.len == loc.offset) =>
                    {
                        run.locs.push((index, loc));
                    }
                    _ => runs.push(Run {
                        file: state.segments[&loc.seq].clone(),
                        seq: loc.seq,
                        locs: vec![(index, loc)],
                    }),
                }
            }
        }
        let mut entries = Vec::new();
        for Run { file, seq, locs } in runs {
            let start = locs[0].1.offset;
            let end = locs.last().map_or(start, |(_, l)| l.offset + l.len);
            let mut buf = vec![0; (end - start) as usize];
            let path = self.inner.dir.path(&segment_name(seq));
            file.read_at(&mut buf, start)
                .map_err(|e| WalError::io(format!("read {}", path.display()), e))?;
            for (index, loc) in locs {
                let at = (loc.offset - start) as usize;
                let corrupt = |reason: String| WalError::Corrupt {
                    path: path.clone(),
                    offset: loc.offset,
                    reason,
                };
                match record::read_at(&buf[..at + loc.len as usize], at) {
                    Found::Record(Record::Entry { index: i, data }, _) if i == index => {
                        entries.push((index, data));
                    }
                    Found::Record(other, _) => {
                        return Err(corrupt(format!("found {other:?} where entry {index} was")))
                    }
                    Found::End => return Err(corrupt(format!("entry {index} is zeroed"))),
                    Found::Bad { reason, .. } => return Err(corrupt(reason)),
                }
            }
        }
        Ok(entries)
    }

    /// Writes `records` at the end of the log, rolling over to a new segment when one
    /// fills; returns the write's number for [`Shared::wait`]. Any I/O error stops the log.
    fn write(&self, state: &mut State, records: Vec<Record>) -> Result<u64, WalError> {
        self.check()?;
        let result = self.write_records(state, records);
        match result {
            Ok(()) => Ok(self.inner.sync.wrote()),
            Err(e) => {
                if matches!(e, WalError::Io { .. }) {
                    tracing::error!(error = %e, "the write-ahead log stops");
                    self.inner.sync.fail(e.clone());
                }
                Err(e)
            }
        }
    }

    fn write_records(&self, state: &mut State, records: Vec<Record>) -> Result<(), WalError> {
        let mut buf = std::mem::take(&mut state.write_buf);
        let written = self.encode_and_write(state, records, &mut buf);
        buf.clear();
        if buf.capacity() <= KEPT_WRITE_BUF_BYTES {
            state.write_buf = buf;
        }
        written
    }

    /// Encodes `records` into `buf` and writes them; see [`State::write_buf`].
    fn encode_and_write(
        &self,
        state: &mut State,
        records: Vec<Record>,
        buf: &mut Vec<u8>,
    ) -> Result<(), WalError> {
        for record in records {
            let start = buf.len();
            record.encode_into(buf);
            let len = (buf.len() - start) as u64;
            if state.offset + buf.len() as u64 > state.current_len {
                let encoded = buf.split_off(start);
                self.flush_buf(state, buf)?;
                self.roll_over(state, len)?;
                buf.extend_from_slice(&encoded);
            }
            let offset = state.offset + buf.len() as u64 - len;
            state
                .apply(
                    &record,
                    Loc {
                        seq: state.current,
                        offset,
                        len,
                    },
                )
                .map_err(WalError::Invalid)?;
        }
        self.flush_buf(state, buf)?;
        if state.spare.is_none() && state.offset > state.current_len / 2 {
            state.spare = Some(prepare_spare(
                self.inner.dir.clone(),
                self.inner.options.segment_size,
            ));
        }
        Ok(())
    }

    fn flush_buf(&self, state: &mut State, buf: &mut Vec<u8>) -> Result<(), WalError> {
        if buf.is_empty() {
            return Ok(());
        }
        let file = &state.segments[&state.current];
        file.write_at(buf, state.offset).map_err(|e| {
            let path = self.inner.dir.path(&segment_name(state.current));
            WalError::io(format!("write {}", path.display()), e)
        })?;
        state.offset += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    /// Syncs the full segment and begins the next, with room for a record of `need`.
    fn roll_over(&self, state: &mut State, need: u64) -> Result<(), WalError> {
        let dir = &*self.inner.dir;
        let io = |what: &str, e| WalError::io(format!("{what} while starting a new segment"), e);
        state.segments[&state.current]
            .sync_data()
            .map_err(|e| io("fdatasync of the full segment", e))?;
        let seq = state.current + 1;
        let head = Record::Segment(state.head(seq)).encode();
        let size = self
            .inner
            .options
            .segment_size
            .max(head.len() as u64 + need);
        let spare = match state.spare.take().map(|t| t.join()) {
            Some(Ok(Ok(file))) if file.size().map_err(|e| io("stat", e))? >= size => file,
            Some(Ok(Err(e))) => return Err(io("prepare", e)),
            _ => dir
                .create_zeroed(SPARE, size)
                .map_err(|e| io("prepare", e))?,
        };
        let len = spare.size().map_err(|e| io("stat", e))?;
        spare.write_at(&head, 0).map_err(|e| io("write head", e))?;
        spare
            .sync_data()
            .map_err(|e| io("fdatasync of the head", e))?;
        dir.rename(SPARE, &segment_name(seq))
            .map_err(|e| io("rename", e))?;
        dir.sync().map_err(|e| io("sync directory", e))?;
        self.inner
            .sync
            .set_file(spare.clone(), dir.path(&segment_name(seq)));
        state.segments.insert(seq, spare);
        state.current = seq;
        state.current_len = len;
        state.offset = head.len() as u64;
        Ok(())
    }
}

impl State {
    /// The head of a segment begun now.
    fn head(&self, seq: u64) -> SegmentHead {
        SegmentHead {
            seq,
            next_index: self.index.next(),
            vote: self.vote.clone(),
            committed: self.committed.clone(),
            purged: self.purged.clone(),
        }
    }

    /// Takes a record into the in-memory state (`loc` is where it is written).
    fn apply(&mut self, record: &Record, loc: Loc) -> Result<(), String> {
        match record {
            Record::Segment(_) => return Err("segment head past a segment's start".to_owned()),
            Record::Entry { index, .. } => self.index.push(*index, loc)?,
            Record::Vote(vote) => self.vote = Some(vote.clone()),
            Record::Committed(committed) => self.committed = Some(committed.clone()),
            Record::Truncate { from } => self.index.truncate(*from)?,
            Record::Purge { through, id } => {
                if self.purged.as_ref().is_none_or(|(p, _)| p < through) {
                    self.purged = Some((*through, id.clone()));
                }
                self.index.purge(*through);
            }
        }
        Ok(())
    }

    /// The oldest segment holding a live entry (or the current one).
    fn oldest_needed(&self) -> u64 {
        self.index
            .get(self.index.first.max(self.index.base))
            .map_or(self.current, |loc| loc.seq)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.sync.stop();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        let spare = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spare
            .take();
        if let Some(spare) = spare {
            let _ = spare.join();
        }
    }
}

fn prepare_spare(dir: Arc<dyn Dir>, size: u64) -> JoinHandle<io::Result<Arc<dyn SegmentFile>>> {
    std::thread::spawn(move || dir.create_zeroed(SPARE, size))
}

/// A fresh log: one segment with an empty head, durable.
fn create_first(dir: &dyn Dir, options: Options) -> Result<State, WalError> {
    let io = |what: &str, e| WalError::io(format!("{what} while creating the log"), e);
    let file = dir
        .create_zeroed(SPARE, options.segment_size)
        .map_err(|e| io("prepare", e))?;
    let head = Record::Segment(SegmentHead {
        seq: 1,
        ..SegmentHead::default()
    })
    .encode();
    file.write_at(&head, 0).map_err(|e| io("write head", e))?;
    file.sync_data().map_err(|e| io("fdatasync", e))?;
    dir.rename(SPARE, &segment_name(1))
        .map_err(|e| io("rename", e))?;
    dir.sync().map_err(|e| io("sync directory", e))?;
    Ok(State {
        segments: BTreeMap::from([(1, file)]),
        current: 1,
        current_len: options.segment_size,
        offset: head.len() as u64,
        index: Index::default(),
        vote: None,
        committed: None,
        purged: None,
        spare: None,
        write_buf: Vec::new(),
    })
}

/// Reads segments `seqs` (consecutive) into the log's state, cutting a torn tail off the
/// last one.
fn replay(dir: &dyn Dir, seqs: &[u64]) -> Result<State, WalError> {
    let mut state: Option<State> = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let last = i + 1 == seqs.len();
        let name = segment_name(seq);
        let path = dir.path(&name);
        let io = |what: &str, e| WalError::io(format!("{what} {}", path.display()), e);
        let file = dir.open(&name).map_err(|e| io("open", e))?;
        let len = file.size().map_err(|e| io("stat", e))?;
        let mut buf = vec![0; len as usize];
        file.read_at(&mut buf, 0).map_err(|e| io("read", e))?;
        let corrupt = |offset: usize, reason: String| WalError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        let head = match record::read_at(&buf, 0) {
            Found::Record(Record::Segment(head), _) if head.seq == seq => head,
            Found::Bad { reason, .. } => return Err(corrupt(0, reason)),
            _ => return Err(corrupt(0, "no segment head".to_owned())),
        };
        let st = match &mut state {
            None => state.insert(State::from_head(&head)),
            Some(st) => {
                if head.next_index != st.index.next() {
                    return Err(corrupt(
                        0,
                        format!(
                            "segment begins at entry {} but the one before ends before {}",
                            head.next_index,
                            st.index.next()
                        ),
                    ));
                }
                st
            }
        };
        st.segments.insert(seq, file.clone());
        st.current = seq;
        st.current_len = len;
        let mut at = match record::read_at(&buf, 0) {
            Found::Record(_, next) => next,
            _ => unreachable!("the head was read above"),
        };
        loop {
            match record::read_at(&buf, at) {
                Found::Record(record, next) => {
                    let loc = Loc {
                        seq,
                        offset: at as u64,
                        len: (next - at) as u64,
                    };
                    st.apply(&record, loc)
                        .map_err(|reason| corrupt(at, reason))?;
                    at = next;
                }
                Found::End => break,
                Found::Bad { reason, extent } => {
                    if !last || !looks_torn(&buf, extent) {
                        return Err(corrupt(at, reason));
                    }
                    tracing::warn!(file = %path.display(), offset = at, %reason,
                        "cutting a torn write off the end of the write-ahead log");
                    let end = buf.iter().rposition(|&b| b != 0).map_or(at, |p| p + 1);
                    file.write_at(&vec![0; end - at], at as u64)
                        .map_err(|e| io("zero the torn tail of", e))?;
                    break;
                }
            }
        }
        st.offset = at as u64;
        if last {
            // What a crash of the process left in the page cache becomes durable before
            // anything builds on it.
            file.sync_data().map_err(|e| io("fdatasync", e))?;
        }
    }
    let state = state.expect("at least one segment");
    if state.index.first < state.index.base {
        return Err(WalError::Corrupt {
            path: dir.path(&segment_name(seqs[0])),
            offset: 0,
            reason: format!(
                "entries {}..{} are missing (a segment before this one is gone)",
                state.index.first, state.index.base
            ),
        });
    }
    Ok(state)
}

impl State {
    fn from_head(head: &SegmentHead) -> State {
        let mut index = Index {
            first: 0,
            base: head.next_index,
            locs: VecDeque::new(),
            bytes: 0,
        };
        if let Some((through, _)) = &head.purged {
            index.purge(*through);
        }
        State {
            segments: BTreeMap::new(),
            current: head.seq,
            current_len: 0,
            offset: 0,
            index,
            vote: head.vote.clone(),
            committed: head.committed.clone(),
            purged: head.purged.clone(),
            spare: None,
            write_buf: Vec::new(),
        }
    }
}

/// Whether a damaged record of the last segment is a write the crash tore: nothing
/// whole follows it (it runs to the end of the file, or what lies past it is no good
/// record), or a whole sector inside it is zeros (a sector the disk never wrote while a
/// later one landed, as etcd checks). A damaged record followed by a good one, with no
/// zero sector, was written whole and damaged since.
fn looks_torn(buf: &[u8], extent: Range<usize>) -> bool {
    if extent.end >= buf.len() || !matches!(record::read_at(buf, extent.end), Found::Record(..)) {
        return true;
    }
    let first_sector = extent.start.div_ceil(SECTOR) * SECTOR;
    (first_sector..extent.end)
        .step_by(SECTOR)
        .filter(|at| at + SECTOR <= extent.end)
        .any(|at| buf[at..at + SECTOR].iter().all(|&b| b == 0))
}
