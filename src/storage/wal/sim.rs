//! A disk that forgets, for tests: it keeps what was written but not yet synced apart,
//! and a simulated power loss keeps only a prefix of it — in the order it was written,
//! the last kept write torn at a 512-byte sector boundary — and only a prefix of the
//! directory changes made since the directory was last synced.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::fs::{Dir, SegmentFile};

const SECTOR: u64 = 512;

/// One disk; [`SimDisk::crash`] gives the disk that a power loss would leave.
#[derive(Clone, Default)]
pub struct SimDisk(Arc<Mutex<Disk>>, Arc<SyncGate>);

/// Holds every `fdatasync` until released ([`SimDisk::hold_syncs`]).
#[derive(Default)]
struct SyncGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    held: bool,
    /// Syncs waiting at the gate.
    waiting: usize,
}

impl SyncGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, state: MutexGuard<'a, GateState>) -> MutexGuard<'a, GateState> {
        self.changed.wait(state).unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once syncs are not held.
    fn pass(&self) {
        let mut state = self.lock();
        state.waiting += 1;
        self.changed.notify_all();
        while state.held {
            state = self.wait(state);
        }
        state.waiting -= 1;
    }
}

#[derive(Default)]
struct Disk {
    crashed: bool,
    /// Fail every `fdatasync` from now on.
    fail_syncs: bool,
    next_id: u64,
    files: HashMap<u64, FileData>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    dir_changes: Vec<DirChange>,
}

#[derive(Clone, Default)]
struct FileData {
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
}

enum DirChange {
    Link(String, u64),
    Rename(String, String),
    Unlink(String),
}

fn apply_write(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(bytes);
}

impl FileData {
    fn view(&self) -> Vec<u8> {
        let mut data = self.durable.clone();
        for (offset, bytes) in &self.pending {
            apply_write(&mut data, *offset, bytes);
        }
        data
    }
}

fn change(names: &mut BTreeMap<String, u64>, change: &DirChange) {
    match change {
        DirChange::Link(name, id) => {
            names.insert(name.clone(), *id);
        }
        DirChange::Rename(from, to) => {
            if let Some(id) = names.remove(from) {
                names.insert(to.clone(), id);
            }
        }
        DirChange::Unlink(name) => {
            names.remove(name);
        }
    }
}

/// A small deterministic generator for the crash's choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 {
            0
        } else {
            self.0 % n
        }
    }
}

fn crashed() -> io::Error {
    io::Error::other("the simulated disk lost power")
}

impl SimDisk {
    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let disk = self.lock();
        if disk.crashed {
            return Err(crashed());
        }
        Ok(disk)
    }

    /// From now on every `fdatasync` fails with EIO.
    pub fn fail_syncs(&self) {
        self.lock().fail_syncs = true;
    }

    /// From now on every `fdatasync` waits until [`SimDisk::release_syncs`].
    pub fn hold_syncs(&self) {
        self.1.lock().held = true;
    }

    /// Lets the held `fdatasync`s (and later ones) go.
    pub fn release_syncs(&self) {
        self.1.lock().held = false;
        self.1.changed.notify_all();
    }

    /// Waits until an `fdatasync` is held.
    pub fn await_held_sync(&self) {
        let mut state = self.1.lock();
        while state.waiting == 0 {
            state = self.1.wait(state);
        }
    }

    /// Loses power: this disk stops working, and the returned one holds what survived
    /// (choices drawn from `seed`).
    pub fn crash(&self, seed: u64) -> SimDisk {
        let mut rng = Rng(seed | 1);
        let mut disk = self.lock();
        disk.crashed = true;
        let mut names = disk.durable_names.clone();
        let kept = rng.below(disk.dir_changes.len() as u64 + 1) as usize;
        for c in &disk.dir_changes[..kept] {
            change(&mut names, c);
        }
        let mut files = HashMap::new();
        for id in names.values() {
            let file = &disk.files[id];
            let mut data = file.durable.clone();
            let kept = rng.below(file.pending.len() as u64 + 1) as usize;
            for (offset, bytes) in &file.pending[..kept] {
                apply_write(&mut data, *offset, bytes);
            }
            if let Some((offset, bytes)) = file.pending.get(kept) {
                let torn_end = (offset + rng.below(bytes.len() as u64 + 1)) / SECTOR * SECTOR;
                if torn_end > *offset {
                    let n = (torn_end - offset) as usize;
                    apply_write(&mut data, *offset, &bytes[..n]);
                }
            }
            files.insert(
                *id,
                FileData {
                    durable: data,
                    pending: Vec::new(),
                },
            );
        }
        let survived = Disk {
            next_id: disk.next_id,
            files,
            names: names.clone(),
            durable_names: names,
            ..Disk::default()
        };
        SimDisk(Arc::new(Mutex::new(survived)), Arc::default())
    }

    /// The bytes of `name` as they read now.
    pub fn contents(&self, name: &str) -> Vec<u8> {
        let disk = self.lock();
        disk.files[&disk.names[name]].view()
    }

    /// Overwrites bytes of `name`, durably (damage for tests).
    pub fn damage(&self, name: &str, offset: u64, bytes: &[u8]) {
        let mut disk = self.lock();
        let id = disk.names[name];
        let file = disk.files.get_mut(&id).expect("file");
        let mut data = file.view();
        apply_write(&mut data, offset, bytes);
        *file = FileData {
            durable: data,
            pending: Vec::new(),
        };
    }

    /// Removes `name` durably (damage for tests).
    pub fn delete(&self, name: &str) {
        let mut disk = self.lock();
        disk.names.remove(name);
        disk.durable_names.remove(name);
    }
}

impl Dir for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.live()?.names.keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn SegmentFile>> {
        let disk = self.live()?;
        let id = *disk.names.get(name).ok_or(io::ErrorKind::NotFound)?;
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            id,
        }))
    }

    fn create_zeroed(&self, name: &str, len: u64) -> io::Result<Arc<dyn SegmentFile>> {
        let mut disk = self.live()?;
        disk.next_id += 1;
        let id = disk.next_id;
        disk.files.insert(
            id,
            FileData {
                durable: vec![0; len as usize],
                pending: Vec::new(),
            },
        );
        let link = DirChange::Link(name.to_owned(), id);
        change(&mut disk.names, &link);
        disk.dir_changes.push(link);
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            id,
        }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.live()?;
        if !disk.names.contains_key(from) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let rename = DirChange::Rename(from.to_owned(), to.to_owned());
        change(&mut disk.names, &rename);
        disk.dir_changes.push(rename);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.live()?;
        if !disk.names.contains_key(name) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let unlink = DirChange::Unlink(name.to_owned());
        change(&mut disk.names, &unlink);
        disk.dir_changes.push(unlink);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut disk = self.live()?;
        disk.durable_names = disk.names.clone();
        disk.dir_changes.clear();
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from("sim").join(name)
    }
}

struct SimFile {
    disk: SimDisk,
    id: u64,
}

impl SegmentFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let disk = self.disk.live()?;
        let data = disk.files[&self.id].view();
        let end = offset as usize + buf.len();
        if end > data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&data[offset as usize..end]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut disk = self.disk.live()?;
        let file = disk.files.get_mut(&self.id).expect("open file");
        file.pending.push((offset, buf.to_vec()));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.1.pass();
        let mut disk = self.disk.live()?;
        if disk.fail_syncs {
            return Err(io::Error::from_raw_os_error(5));
        }
        let file = disk.files.get_mut(&self.id).expect("open file");
        file.durable = file.view();
        file.pending.clear();
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        let disk = self.disk.live()?;
        Ok(disk.files[&self.id].view().len() as u64)
    }
}
