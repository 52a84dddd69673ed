//! The value files a snapshot shares with the store, and when they may go.
//!
//! A snapshot refers to each large value by its file (see [`super::snapshot`]). Those
//! files are the store's, which deletes one once its value is received and a checkpoint
//! covers that; the snapshot needs it for as long as it is the current snapshot, and a
//! peer may still be reading an older one. So a build hard-links every file it refers to
//! into `snapshots/values/` under the same name — one copy on disk, two names — and an
//! install writes the files it receives there before linking them into the store.
//!
//! A link is *pruned* once the current snapshot does not refer to it and no stream that
//! might read it ([`super::snapshot_data::Outgoing`]) is open. Pruning runs when a
//! build or an install has made its snapshot current, when the last open stream closes,
//! and on opening. A build or an install adds links before its snapshot becomes
//! current, so no prune runs while one is under way: it would take them for strays.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::snapshot;
use crate::storage::sm::values::Reference;

/// The directory of the links, inside the snapshot directory.
pub const FILES_DIR: &str = "values";

/// The links of one node's snapshots.
pub struct SnapshotFiles {
    dir: PathBuf,
    /// The current snapshot's tables file, which says which links to keep.
    current: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Open streams of a snapshot.
    readers: usize,
    /// A build or an install is adding links.
    changing: bool,
    /// A prune was held back by either.
    due: bool,
}

impl SnapshotFiles {
    /// The links under `snapshots` (created if missing) for the snapshot whose tables
    /// file is `current`; prunes what that snapshot does not refer to (left by a crash).
    pub fn open(snapshots: &Path, current: &Path) -> io::Result<Arc<SnapshotFiles>> {
        let dir = snapshots.join(FILES_DIR);
        std::fs::create_dir_all(&dir)?;
        let files = Arc::new(SnapshotFiles {
            dir,
            current: current.to_owned(),
            state: Mutex::default(),
        });
        files.prune(&mut files.lock())?;
        Ok(files)
    }

    /// Where the links are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the link for `reference` is.
    pub fn path(&self, reference: &Reference) -> PathBuf {
        self.dir.join(reference.file_name())
    }

    /// Links the store's value files `files` (in `store_dir`) here, durably. A link
    /// already here is the same file: a name is a random id, never reused.
    pub fn link(&self, store_dir: &Path, files: &[Reference]) -> io::Result<()> {
        for reference in files {
            let name = reference.file_name();
            match std::fs::hard_link(store_dir.join(&name), self.dir.join(&name)) {
                Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        self.sync()
    }

    /// Makes the links made so far durable.
    pub fn sync(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// Marks a build or an install under way until the guard drops (one at a time:
    /// the state machine's snapshot lock). Then prunes, unless a stream is open.
    pub fn change(self: &Arc<Self>) -> Change {
        self.lock().changing = true;
        Change(self.clone())
    }

    /// Marks a stream open until the guard drops; the last one to close prunes if a
    /// prune was held back.
    pub fn reader(self: &Arc<Self>) -> Reader {
        self.lock().readers += 1;
        Reader(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Prunes now if nothing holds it back, or marks it due. Failures are logged: a
    /// link left over costs space, and the next prune tries again.
    fn prune_when_free(&self, state: &mut State) {
        if state.readers > 0 || state.changing {
            state.due = true;
        } else if let Err(e) = self.prune(state) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "could not prune snapshot value links");
        }
    }

    /// Deletes every link the current snapshot does not refer to (any partial file
    /// too). The caller holds the state lock and nothing holds a prune back.
    fn prune(&self, state: &mut State) -> io::Result<()> {
        state.due = false;
        let keep: HashSet<String> = match File::open(&self.current) {
            Ok(file) => snapshot::read_files(&file)?
                .iter()
                .map(Reference::file_name)
                .collect(),
            Err(e) if e.kind() == ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_name().to_str().is_some_and(|n| keep.contains(n)) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}

/// Bytes of the value files that the snapshot whose tables file is `current` refers
/// to and that have no name but their link in `dir`: values received or removed since
/// it was built, which the store no longer holds. A newer snapshot lets them go.
pub fn bytes_held_alone(dir: &Path, current: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let references = match File::open(current) {
        Ok(file) => snapshot::read_files(&file)?,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut bytes = 0;
    for reference in references {
        match std::fs::metadata(dir.join(reference.file_name())) {
            Ok(metadata) if metadata.nlink() == 1 => bytes += reference.value_len(),
            Ok(_) => {}
            // Pruned meanwhile: a newer snapshot replaced `current`.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(bytes)
}

/// A build or an install under way (see [`SnapshotFiles::change`]).
pub struct Change(Arc<SnapshotFiles>);

impl Drop for Change {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.changing = false;
        self.0.prune_when_free(&mut state);
    }
}

/// An open stream of a snapshot (see [`SnapshotFiles::reader`]).
pub struct Reader(Arc<SnapshotFiles>);

impl Drop for Reader {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.readers -= 1;
        if state.due {
            self.0.prune_when_free(&mut state);
        }
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("dir", &self.0.dir).finish()
    }
}
