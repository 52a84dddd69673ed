//! A node's data directory (`--data`): who may use it, which format it is in, and the
//! engines that keep their files under it.
//!
//! # Layout (format 7)
//! - `LOCK` — held (`flock`, exclusive) by the one process using the directory. Two
//!   nodes on one directory would each overwrite what the other acknowledged, so a
//!   second process is refused at start, naming the directory; the kernel drops the
//!   lock when the holder exits, `kill -9` included, so a stale file never blocks.
//! - `FORMAT` — the format version, written (and synced) before anything else, so a
//!   directory without it is either new or from before format 2. Older formats are
//!   refused with a message that says so and what to do, and so is a newer one:
//!   - format 1: one sled database under `sled/` holding the Raft log and the state
//!     machine together, and no `FORMAT`;
//!   - format 2: this layout's `FORMAT`, but written by builds that first kept the
//!     Raft log in the sled database under `sm/` and only later in `wal/`. Opened as
//!     this layout, such a directory would start with an empty `wal/`: without the
//!     entries and the vote it had acknowledged, and without a word. Nothing tells
//!     the two kinds of format 2 apart before the damage is done, so format 3 was
//!     this layout and every format 2 is refused;
//!   - format 3: this layout, with each state's history kept as a JSON record per
//!     event (format 4 keeps one postcard record per state and command), which this
//!     version cannot read;
//!   - format 4: this layout, with every blocked waiter in its queue's table (format 5
//!     keeps a select's case at the head of an empty queue in the channel's record),
//!     whose channel records this version cannot read;
//!   - format 5: this layout, with a by-status entry for every `waiting` state (format
//!     6 indexes every status but `waiting`), entries this version would never remove,
//!     and bulk-delete commands without a cursor, which it cannot read from the log;
//!   - format 6: this layout, written by openraft 0.9 (format 7 is openraft 0.10's):
//!     its log entries, vote and snapshot metadata are encodings of 0.9's types, which
//!     this version was never tested to read back.
//! - `sm/` — the state machine in sled ([`sm`]), with its flush-generation [`marker`]
//!   and large values in files of their own (`sm/values/`).
//! - `wal/` — the Raft log ([`wal`]): segment files of checksummed records with group
//!   commit.
//! - `snapshots/` — the snapshot served to lagging nodes and the one being installed.
//!
//! The free space of the directory's filesystem is watched ([`space`]): below a reserve,
//! client writes are refused rather than left to meet `ENOSPC`.
//!
//! Every value kept in sled is [`seal`]ed with a checksum, so damage is refused, never
//! served.

pub mod marker;
pub mod seal;
pub mod sm;
pub mod space;
pub mod wal;

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The format this version reads and writes.
pub const FORMAT_VERSION: u32 = 7;

/// The lock file, held while a process uses the directory.
pub const LOCK_FILE: &str = "LOCK";
/// The file naming the directory's format.
pub const FORMAT_FILE: &str = "FORMAT";
/// The state machine's sled database.
pub const SM_DIR: &str = "sm";
/// The Raft log's write-ahead log.
pub const WAL_DIR: &str = "wal";
/// The Raft snapshots, one file each, built from the state machine.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Format 1's sled database (Raft log and state machine in one).
const FORMAT_1_DIR: &str = "sled";
/// The formats before this one that wrote a `FORMAT` file: what each says in it, and
/// why this version cannot read it.
const OLDER_FORMATS: [(&str, &str); 5] = [
    (
        "2",
        "format 2, a development build's: it may hold the Raft log and the vote in the \
         sled database under sm/, where this version does not look for them",
    ),
    (
        "3",
        "format 3: each state's history kept as a JSON record per event, which this \
         version does not read",
    ),
    (
        "4",
        "format 4: channel records without the head of their queues, which this version \
         does not read",
    ),
    (
        "5",
        "format 5: waiting states in the by-status index, and bulk deletes without a \
         cursor in the log, which this version does not read",
    ),
    (
        "6",
        "format 6: the Raft log, vote and snapshots of an openraft 0.9 build, which this \
         version (openraft 0.10) does not read",
    ),
];

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the lock.
    #[error(
        "the data directory {} is in use by another process (it holds {}): two nodes \
         must never share a data directory; stop the other one or give this one its own",
        .dir.display(), .dir.join(LOCK_FILE).display()
    )]
    InUse { dir: PathBuf },
    /// Format 1 to 5: from a version of slct that kept the Raft log in sled, or
    /// its tables in another layout.
    #[error(
        "the data directory {} was written by an earlier version of slct ({what}); \
         this version reads format {FORMAT_VERSION} only and does not migrate it. Run the \
         earlier version on it, or start this node on an empty directory: for a whole \
         cluster, start it afresh; for one node of a cluster already running this \
         version, remove it from the membership and add a node with an empty directory \
         in its place",
        .dir.display()
    )]
    OlderFormat { dir: PathBuf, what: &'static str },
    /// A format this version does not know, or a `FORMAT` file that is not one.
    #[error(
        "the data directory {} is in format {found:?} (file {}); this version of slct \
         reads format {FORMAT_VERSION} only",
        .dir.display(), .dir.join(FORMAT_FILE).display()
    )]
    OtherFormat { dir: PathBuf, found: String },
    /// Files of this format without the `FORMAT` file that is written before them.
    #[error(
        "the data directory {} holds {SM_DIR}/ but no {FORMAT_FILE} file, which is \
         written before it: the directory is damaged; restore it from a backup or replace \
         this node with an empty one",
        .dir.display()
    )]
    FormatMissing { dir: PathBuf },
    /// An I/O error on the directory itself.
    #[error("data directory {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An open data directory: locked by this process until dropped, in this format.
#[derive(Debug)]
pub struct DataDir {
    dir: PathBuf,
    /// Holds the lock; closing the file releases it.
    _lock: File,
}

impl DataDir {
    /// Creates `dir` if needed, locks it, and checks (or, if new, writes) its format.
    pub fn open(dir: &Path) -> Result<DataDir, DataDirError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DataDirError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(DataDirError::InUse {
                    dir: dir.to_owned(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        check_format(dir)?;
        Ok(DataDir {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The state machine's sled database.
    pub fn sm_dir(&self) -> PathBuf {
        self.dir.join(SM_DIR)
    }

    /// The Raft log's write-ahead log.
    pub fn wal_dir(&self) -> PathBuf {
        self.dir.join(WAL_DIR)
    }

    /// Where snapshots are kept.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir.join(SNAPSHOTS_DIR)
    }
}

/// Accepts a directory of this format; makes a new one this format.
fn check_format(dir: &Path) -> Result<(), DataDirError> {
    let path = dir.join(FORMAT_FILE);
    let found = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join(FORMAT_1_DIR).exists() {
                return Err(DataDirError::OlderFormat {
                    dir: dir.to_owned(),
                    what: "format 1: one sled database under sled/ holding the Raft log \
                           and the state machine",
                });
            }
            if dir.join(SM_DIR).exists() {
                return Err(DataDirError::FormatMissing {
                    dir: dir.to_owned(),
                });
            }
            return write_format(dir);
        }
        Err(source) => return Err(DataDirError::Io { path, source }),
    };
    let text = String::from_utf8_lossy(&found);
    let found = text.trim();
    if found == FORMAT_VERSION.to_string() {
        return Ok(());
    }
    match OLDER_FORMATS.iter().find(|(format, _)| *format == found) {
        Some(&(_, what)) => Err(DataDirError::OlderFormat {
            dir: dir.to_owned(),
            what,
        }),
        None => Err(DataDirError::OtherFormat {
            dir: dir.to_owned(),
            found: found.to_owned(),
        }),
    }
}

/// Writes `FORMAT` durably: a temporary file, synced, renamed, and the directory synced.
fn write_format(dir: &Path) -> Result<(), DataDirError> {
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DataDirError::Io { path, source }
    };
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    writeln!(file, "{FORMAT_VERSION}").map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, dir.join(FORMAT_FILE)).map_err(io(dir))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_gets_this_format_and_opens_again() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        drop(DataDir::open(&dir).unwrap());
        let format = std::fs::read_to_string(dir.join(FORMAT_FILE)).unwrap();
        assert_eq!(format, format!("{FORMAT_VERSION}\n"));
        let data = DataDir::open(&dir).unwrap();
        assert_eq!(data.sm_dir(), dir.join(SM_DIR));
    }

    #[test]
    fn a_second_opener_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap();
        let second = DataDir::open(dir.path()).unwrap_err();
        assert!(matches!(second, DataDirError::InUse { .. }), "{second}");
        assert!(second.to_string().contains("in use by another process"));
        drop(first);
        DataDir::open(dir.path()).unwrap();
    }

    #[test]
    fn a_format_1_directory_is_refused_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(FORMAT_1_DIR)).unwrap();
        let error = DataDir::open(dir.path()).unwrap_err();
        assert!(matches!(error, DataDirError::OlderFormat { .. }), "{error}");
        assert!(!dir.path().join(FORMAT_FILE).exists(), "left as it was");
    }

    /// Format 2's `FORMAT` file is also this layout's before format 3, so a directory
    /// from the builds that kept the Raft log under `sm/` cannot be told from it.
    #[test]
    fn a_format_2_directory_is_refused_naming_the_log_it_may_hold() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FORMAT_FILE), "2\n").unwrap();
        std::fs::create_dir(dir.path().join(SM_DIR)).unwrap();
        let error = DataDir::open(dir.path()).unwrap_err();
        assert!(matches!(error, DataDirError::OlderFormat { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("format 2"), "{message}");
        assert!(message.contains("Raft log"), "{message}");
        let format = std::fs::read_to_string(dir.path().join(FORMAT_FILE)).unwrap();
        assert_eq!(format, "2\n", "left as it was");
    }

    #[test]
    fn formats_3_to_6_are_refused_naming_what_changed() {
        let changes = [
            ("3", "JSON record"),
            ("4", "head of their queues"),
            ("5", "by-status index"),
            ("6", "openraft 0.9"),
        ];
        for (format, changed) in changes {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(FORMAT_FILE), format!("{format}\n")).unwrap();
            let error = DataDir::open(dir.path()).unwrap_err();
            assert!(matches!(error, DataDirError::OlderFormat { .. }), "{error}");
            let message = error.to_string();
            assert!(message.contains(&format!("format {format}")), "{message}");
            assert!(message.contains(changed), "{message}");
            assert!(message.contains("does not migrate"), "{message}");
        }
    }

    #[test]
    fn another_or_missing_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FORMAT_FILE), "8\n").unwrap();
        let error = DataDir::open(dir.path()).unwrap_err();
        assert!(
            matches!(&error, DataDirError::OtherFormat { found, .. } if found == "8"),
            "{error}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(SM_DIR)).unwrap();
        let error = DataDir::open(dir.path()).unwrap_err();
        assert!(
            matches!(error, DataDirError::FormatMissing { .. }),
            "{error}"
        );
    }
}
