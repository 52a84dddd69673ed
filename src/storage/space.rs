//! Free space on the data directory's filesystem, watched, so that a disk running full
//! refuses writes (507 `disk_full`) before a write meets `ENOSPC` and stops the node.
//!
//! An `ENOSPC` met by the log, a checkpoint or a snapshot is fatal to the node (see
//! docs/design.md, "Disk errors"): which write meets it first is the engines' business,
//! and a failed `fdatasync` is never retried. So the node does not wait for it:
//! [`DiskWatch`] reads the filesystem's free space (`statvfs`, for an unprivileged
//! process: `f_bavail`) every [`WATCH_EVERY`] and keeps a flag, *low*, set while the
//! free space is below a reserve ([`reserve`]). While it is set the node refuses client
//! writes, and while any voter's is set the leader does (`node`, docs/design.md, "A
//! full disk"). The flag clears once the free space is back above the reserve and an
//! eighth of it ([`CLEAR_MARGIN`]), so a disk at the edge does not flap between
//! refusing and accepting with every write; no restart is needed.
//!
//! `statvfs` comes from `rustix` (its `fs` feature), already a dependency for the
//! open-files limit: no `unsafe` here, where `libc` would need it, and no new crate.
//!
//! The reserve is what the engines may still write with client writes refused: the
//! log's next segment (8 MiB, zero-filled ahead of need), a sled checkpoint (it
//! appends to 8 MiB segments), a snapshot's tables file (rebuilt every
//! `--snapshot-threshold` entries and when the log holds 64 MiB; its large values are
//! links, no new bytes), and the writes already accepted when the flag sets —
//! [`RESERVE_CAP`], 128 MiB, holds the first two, a 64 MiB tables file and 40 MiB
//! more. A filesystem smaller than 1 GiB gets an eighth of
//! its size instead, so a small disk (a test's tmpfs) is not refused from its first
//! write; there a large snapshot may not fit, and a node that meets `ENOSPC` anyway
//! still exits for its supervisor to restart it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the free space is read: a `statvfs`, a few microseconds.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);
/// The largest reserve (see the module docs for how it was sized).
pub const RESERVE_CAP: u64 = 128 << 20;
/// A filesystem's reserve is at most this fraction of its size (1/8).
pub const RESERVE_FRACTION: u64 = 8;
/// The flag clears once the free space is above the reserve and `reserve /
/// CLEAR_MARGIN` more.
pub const CLEAR_MARGIN: u64 = 8;

/// The reserve of a filesystem of `size` bytes: an eighth of it, at most
/// [`RESERVE_CAP`].
pub fn reserve(size: u64) -> u64 {
    (size / RESERVE_FRACTION).min(RESERVE_CAP)
}

/// The data directory's filesystem as last read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged process may still write (`f_bavail`).
    pub free: u64,
    /// The filesystem's size in bytes.
    pub size: u64,
    /// The free space writes are refused below ([`reserve`]).
    pub reserve: u64,
    /// Whether the free space is below the reserve (or has not been back above it and
    /// its margin since).
    pub low: bool,
}

impl Space {
    /// The filesystem `path` is on, as it stands now; `was_low` is the flag so far.
    pub fn read(path: &Path, was_low: bool) -> io::Result<Space> {
        let stat = rustix::fs::statvfs(path)?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        let size = stat.f_blocks.saturating_mul(stat.f_frsize);
        Ok(Space::of(free, size, was_low))
    }

    /// The flag for `free` bytes of `size`, given the flag so far.
    pub fn of(free: u64, size: u64, was_low: bool) -> Space {
        let reserve = reserve(size);
        let low = if was_low {
            free < reserve + reserve / CLEAR_MARGIN
        } else {
            free < reserve
        };
        Space {
            free,
            size,
            reserve,
            low,
        }
    }
}

/// The flag of one data directory, kept by a task. Cheap to clone.
#[derive(Clone)]
pub struct DiskWatch {
    space: watch::Receiver<Space>,
}

impl DiskWatch {
    /// Reads `dir`'s filesystem now (an error if it cannot be read), then every
    /// [`WATCH_EVERY`] in a task that ends on `shutdown`. A reading that fails later
    /// keeps the last one (and says so once).
    pub fn start(
        dir: PathBuf,
        mut shutdown: watch::Receiver<bool>,
    ) -> io::Result<(DiskWatch, JoinHandle<()>)> {
        let first = Space::read(&dir, false)?;
        log_change(&dir, &Space::default(), &first);
        let (sender, space) = watch::channel(first);
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(WATCH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = shutdown.changed() => break,
                }
                let was = *sender.borrow();
                let path = dir.clone();
                let read = tokio::task::spawn_blocking(move || Space::read(&path, was.low)).await;
                match read {
                    Ok(Ok(now)) => {
                        failing = false;
                        log_change(&dir, &was, &now);
                        sender.send_if_modified(|old| std::mem::replace(old, now) != now);
                    }
                    Ok(Err(e)) if !failing => {
                        failing = true;
                        tracing::warn!("cannot read the free space of {}: {e}", dir.display());
                    }
                    Ok(Err(_)) => {}
                    Err(_) => break,
                }
            }
        });
        Ok((DiskWatch { space }, task))
    }

    /// The last reading.
    pub fn space(&self) -> Space {
        *self.space.borrow()
    }

    /// Whether the free space is below the reserve.
    pub fn is_low(&self) -> bool {
        self.space.borrow().low
    }
}

/// Logs the flag's setting (WARN) and clearing (INFO).
fn log_change(dir: &Path, was: &Space, now: &Space) {
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    match (was.low, now.low) {
        (false, true) => tracing::warn!(
            "the disk of {} is low on space: {:.1} MiB free of {:.1} MiB, below the reserve \
             of {:.1} MiB; client writes are refused (507 disk_full) until there is room",
            dir.display(),
            mib(now.free),
            mib(now.size),
            mib(now.reserve)
        ),
        (true, false) => tracing::info!(
            "the disk of {} has room again: {:.1} MiB free, above the reserve of {:.1} MiB; \
             writes go on",
            dir.display(),
            mib(now.free),
            mib(now.reserve)
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_reserve_is_an_eighth_of_a_small_disk_and_128_mib_of_a_large_one() {
        assert_eq!(reserve(256 * MIB), 32 * MIB);
        assert_eq!(reserve(1024 * MIB), 128 * MIB);
        assert_eq!(reserve(500 << 30), RESERVE_CAP);
        assert_eq!(reserve(0), 0);
    }

    #[test]
    fn the_flag_sets_below_the_reserve_and_clears_an_eighth_above_it() {
        let size = 256 * MIB;
        assert!(!Space::of(32 * MIB, size, false).low, "at the reserve");
        assert!(Space::of(32 * MIB - 1, size, false).low, "below it");
        assert!(Space::of(35 * MIB, size, true).low, "within the margin");
        assert!(!Space::of(36 * MIB, size, true).low, "past the margin");
        assert!(
            !Space::of(35 * MIB, size, false).low,
            "not set: stays clear"
        );
    }

    #[test]
    fn a_real_directory_reads_its_filesystem() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let space = Space::read(dir.path(), false).expect("statvfs");
        assert!(space.size > 0 && space.free <= space.size, "{space:?}");
        assert_eq!(space.reserve, reserve(space.size));
    }
}
