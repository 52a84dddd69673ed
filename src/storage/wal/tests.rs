//! The log on a simulated disk: damage, roll-over, truncation, purging, and random power
//! losses against a model of what must survive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::record::{self, Found};
use super::sim::SimDisk;
use super::*;

const SMALL: Options = Options { segment_size: 4096 };

fn open(disk: &SimDisk) -> Result<Wal, WalError> {
    Wal::open_in(Arc::new(disk.clone()), SMALL)
}

fn payload(index: u64, tag: &str, len: usize) -> Vec<u8> {
    let mut bytes = format!("{tag}:{index}:").into_bytes();
    while bytes.len() < len {
        bytes.push(b'a' + (bytes.len() % 26) as u8);
    }
    bytes
}

fn entries(range: Range<u64>, tag: &str) -> Vec<(u64, Vec<u8>)> {
    range.map(|i| (i, payload(i, tag, 100))).collect()
}

fn append(wal: &Wal, entries: Vec<(u64, Vec<u8>)>) -> Result<(), WalError> {
    let (tx, rx) = mpsc::channel();
    wal.append(entries, SyncBy::Caller, move |r| {
        let _ = tx.send(r);
    })?;
    rx.recv().expect("callback")
}

fn save_vote(wal: &Wal, vote: &[u8]) -> Result<(), WalError> {
    let (tx, rx) = mpsc::channel();
    wal.save_vote(vote.to_vec(), move |r| {
        let _ = tx.send(r);
    })?;
    rx.recv().expect("callback")
}

fn all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    wal.read(0..u64::MAX).expect("read")
}

fn segment_files(disk: &SimDisk) -> Vec<String> {
    disk.list()
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(SEGMENT_SUFFIX))
        .collect()
}

/// Offsets of the records of a segment, and where they end.
fn record_offsets(bytes: &[u8]) -> (Vec<usize>, usize) {
    let mut offsets = Vec::new();
    let mut at = 0;
    while let Found::Record(_, next) = record::read_at(bytes, at) {
        offsets.push(at);
        at = next;
    }
    (offsets, at)
}

#[test]
fn acknowledged_entries_and_vote_survive_a_power_loss() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    append(&wal, entries(0..5, "a")).unwrap();
    save_vote(&wal, b"vote").unwrap();
    wal.save_committed(b"c3".to_vec()).unwrap();
    append(&wal, entries(5..6, "a")).unwrap();
    let disk = disk.crash(7);
    drop(wal);
    let wal = open(&disk).unwrap();
    assert_eq!(all(&wal), entries(0..6, "a"));
    let state = wal.log_state();
    assert_eq!(state.vote.as_deref(), Some(&b"vote"[..]));
    assert_eq!(state.committed.as_deref(), Some(&b"c3"[..]));
    assert_eq!((state.first_index, state.next_index), (0, 6));
}

#[test]
fn a_torn_tail_is_cut_and_the_log_goes_on() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    append(&wal, entries(0..5, "a")).unwrap();
    drop(wal);
    let name = segment_name(1);
    let (_, end) = record_offsets(&disk.contents(&name));
    // Entry 5, 1,000 bytes long, of which only the sectors before the next 512-byte
    // boundary past its start reached the disk.
    let torn = Record::Entry {
        index: 5,
        data: payload(5, "torn", 1000),
    }
    .encode();
    let kept = (end / 512 + 1) * 512 - end;
    disk.damage(&name, end as u64, &torn[..kept]);

    let wal = open(&disk).unwrap();
    assert_eq!(all(&wal), entries(0..5, "a"));
    assert_eq!(wal.log_state().next_index, 5);
    append(&wal, entries(5..7, "b")).unwrap();
    drop(wal);
    let wal = open(&disk).unwrap();
    let mut expected = entries(0..5, "a");
    expected.extend(entries(5..7, "b"));
    assert_eq!(all(&wal), expected);
}

#[test]
fn a_flipped_byte_in_the_middle_refuses_to_open_naming_file_and_offset() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    append(&wal, entries(0..10, "a")).unwrap();
    drop(wal);
    let name = segment_name(1);
    let (offsets, _) = record_offsets(&disk.contents(&name));
    // offsets[0] is the segment head; entry 3 is the fifth record.
    let at = offsets[4];
    disk.damage(&name, at as u64 + 30, b"X");
    match open(&disk) {
        Err(WalError::Corrupt { path, offset, .. }) => {
            assert!(path.ends_with(&name), "{}", path.display());
            assert_eq!(offset, at as u64);
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("opened a damaged log"),
    }
}

#[test]
fn damage_in_a_full_segment_refuses_to_open() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    append(&wal, entries(0..100, "a")).unwrap();
    drop(wal);
    let name = segment_name(1);
    let (offsets, _) = record_offsets(&disk.contents(&name));
    disk.damage(&name, offsets.last().copied().unwrap() as u64 + 20, b"X");
    assert!(matches!(open(&disk), Err(WalError::Corrupt { path, .. }) if path.ends_with(&name)));
}

#[test]
fn segments_roll_over_and_replay_in_order() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    save_vote(&wal, b"v1").unwrap();
    for i in 0..100 {
        append(&wal, entries(i..i + 1, "a")).unwrap();
    }
    // An entry larger than a segment gets a segment of its own size.
    let big = vec![(100, payload(100, "big", 10_000))];
    append(&wal, big.clone()).unwrap();
    append(&wal, entries(101..102, "a")).unwrap();
    assert!(segment_files(&disk).len() > 3, "{:?}", segment_files(&disk));
    let disk = disk.crash(3);
    drop(wal);
    let wal = open(&disk).unwrap();
    let mut expected = entries(0..100, "a");
    expected.extend(big);
    expected.extend(entries(101..102, "a"));
    assert_eq!(all(&wal), expected);
    assert_eq!(wal.read(40..43).unwrap(), entries(40..43, "a"));
    assert_eq!(wal.log_state().vote.as_deref(), Some(&b"v1"[..]));
}

#[test]
fn entries_appended_after_a_truncation_replace_the_cut_ones() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    append(&wal, entries(0..10, "a")).unwrap();
    wal.truncate(5).unwrap();
    assert_eq!(wal.log_state().next_index, 5);
    append(&wal, entries(5..8, "b")).unwrap();
    let mut expected = entries(0..5, "a");
    expected.extend(entries(5..8, "b"));
    assert_eq!(all(&wal), expected);
    let disk = disk.crash(11);
    drop(wal);
    let wal = open(&disk).unwrap();
    assert_eq!(all(&wal), expected);
    assert!(matches!(wal.truncate(9), Err(WalError::Invalid(_))));
    assert!(matches!(
        append(&wal, entries(9..10, "c")),
        Err(WalError::Invalid(_))
    ));
}

#[test]
fn held_bytes_follow_appends_truncations_purges_and_reopening() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    assert_eq!(wal.held_bytes(), 0);
    append(&wal, entries(0..10, "a")).unwrap();
    let ten = wal.held_bytes();
    assert!(ten >= 10 * 100, "{ten}");
    let per_entry = ten / 10;
    assert_eq!(wal.held_bytes_through(3), 4 * per_entry);
    assert_eq!(wal.held_bytes_through(99), ten);
    wal.truncate(6).unwrap();
    assert_eq!(wal.held_bytes(), 6 * per_entry);
    wal.purge(1, b"id1".to_vec()).unwrap();
    assert_eq!(wal.held_bytes(), 4 * per_entry);
    assert_eq!(wal.held_bytes_through(0), 0);
    assert_eq!(wal.held_bytes_through(2), per_entry);
    append(&wal, entries(6..8, "b")).unwrap();
    assert_eq!(wal.held_bytes(), 6 * per_entry);
    drop(wal);
    let wal = open(&disk).unwrap();
    assert_eq!(wal.held_bytes(), 6 * per_entry, "the same after replay");
    wal.purge(200, b"id200".to_vec()).unwrap();
    assert_eq!(wal.held_bytes(), 0);
}

#[test]
fn a_purge_drops_entries_and_deletes_whole_segments_once_durable() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    for i in 0..100 {
        append(&wal, entries(i..i + 1, "a")).unwrap();
    }
    let before = segment_files(&disk).len();
    wal.purge(60, b"id60".to_vec()).unwrap();
    assert_eq!(wal.log_state().first_index, 61);
    assert_eq!(all(&wal), entries(61..100, "a"));
    // The segments go with the next sync.
    append(&wal, entries(100..101, "a")).unwrap();
    let after = segment_files(&disk).len();
    assert!(after < before, "{before} -> {after}");
    let disk = disk.crash(5);
    drop(wal);
    let wal = open(&disk).unwrap();
    assert_eq!(all(&wal), entries(61..101, "a"));
    let state = wal.log_state();
    assert_eq!(state.purged, Some((60, b"id60".to_vec())));
    assert_eq!(state.first_index, 61);
    // A purge past the last entry moves the next index.
    wal.purge(200, b"id200".to_vec()).unwrap();
    assert_eq!(wal.log_state().next_index, 201);
    append(&wal, entries(201..202, "a")).unwrap();
    drop(wal);
    let wal = open(&disk).unwrap();
    assert_eq!(all(&wal), entries(201..202, "a"));
}

#[test]
fn a_segment_missing_from_the_middle_refuses_to_open() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    for i in 0..100 {
        append(&wal, entries(i..i + 1, "a")).unwrap();
    }
    drop(wal);
    disk.delete(&segment_name(2));
    assert!(matches!(open(&disk), Err(WalError::Corrupt { .. })));
}

#[test]
fn a_failed_fdatasync_stops_the_log_for_good() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    append(&wal, entries(0..2, "a")).unwrap();
    disk.fail_syncs();
    let failed = append(&wal, entries(2..3, "a"));
    assert!(
        matches!(&failed, Err(WalError::Io { what, .. }) if what.contains("fdatasync")),
        "{failed:?}"
    );
    assert!(matches!(
        append(&wal, entries(3..4, "a")),
        Err(WalError::Io { .. })
    ));
    assert!(matches!(save_vote(&wal, b"v"), Err(WalError::Io { .. })));
}

#[test]
fn a_lone_append_syncs_on_its_own_thread_and_is_durable_when_it_returns() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    // Opening queues a sync on the sync thread; once this append is called back, no
    // sync runs and nobody waits.
    append(&wal, entries(0..1, "a")).unwrap();
    let called_on = Arc::new(Mutex::new(None));
    let record = called_on.clone();
    wal.append(entries(1..2, "a"), SyncBy::Caller, move |r| {
        *record.lock().unwrap() = Some((std::thread::current().id(), r.is_ok()));
    })
    .unwrap();
    assert_eq!(
        *called_on.lock().unwrap(),
        Some((std::thread::current().id(), true)),
        "called back on the appending thread before append returned"
    );
    let after = open(&disk.crash(7)).unwrap();
    assert_eq!(all(&after), entries(0..2, "a"));
}

#[test]
fn an_append_handed_to_the_sync_thread_returns_before_its_sync() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    append(&wal, entries(0..1, "a")).unwrap();
    disk.hold_syncs();
    let (tx, synced) = mpsc::channel();
    wal.append(entries(1..2, "a"), SyncBy::SyncThread, move |r| {
        let _ = tx.send((std::thread::current().id(), r));
    })
    .unwrap();
    // Returned while the sync thread is held in the fdatasync that covers the entry.
    disk.await_held_sync();
    assert!(synced.try_recv().is_err(), "called back before its sync");
    assert_eq!(
        all(&wal),
        entries(0..2, "a"),
        "readable before it is durable"
    );
    disk.release_syncs();
    let (thread, result) = synced.recv().expect("callback");
    result.unwrap();
    assert_ne!(
        thread,
        std::thread::current().id(),
        "synced on the sync thread"
    );
    let after = open(&disk.crash(5)).unwrap();
    assert_eq!(all(&after), entries(0..2, "a"));
}

#[test]
fn an_append_during_a_sync_waits_for_a_sync_that_covers_it() {
    let disk = SimDisk::default();
    let wal = open(&disk).unwrap();
    append(&wal, entries(0..1, "a")).unwrap();
    disk.hold_syncs();
    // The first append syncs itself, held in its fdatasync.
    let first = {
        let wal = wal.clone();
        std::thread::spawn(move || append(&wal, entries(1..2, "a")))
    };
    disk.await_held_sync();
    // The second finds that sync running: it returns at once, and is not called back
    // by the held sync, which began before it was written.
    let (tx, second) = mpsc::channel();
    wal.append(entries(2..3, "a"), SyncBy::Caller, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    assert!(second.try_recv().is_err(), "called back before any sync");
    disk.release_syncs();
    first.join().unwrap().unwrap();
    second.recv().expect("callback").unwrap();
    let after = open(&disk.crash(11)).unwrap();
    assert_eq!(all(&after), entries(0..3, "a"));
}

#[test]
fn the_real_directory_keeps_entries_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), SMALL).unwrap();
    for i in 0..50 {
        append(&wal, entries(i..i + 1, "a")).unwrap();
    }
    save_vote(&wal, b"v").unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), SMALL).unwrap();
    assert_eq!(all(&wal), entries(0..50, "a"));
    assert_eq!(wal.log_state().vote.as_deref(), Some(&b"v"[..]));
}

/// One step of the random test.
#[derive(Clone, Debug)]
enum Step {
    Append { count: u64, len: usize, wait: bool },
    Vote { wait: bool },
    Commit,
    Truncate { back: u64 },
    Purge { ahead: u64 },
    Crash { seed: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1..4u64, 0..700usize, any::<bool>())
            .prop_map(|(count, len, wait)| Step::Append { count, len, wait }),
        1 => any::<bool>().prop_map(|wait| Step::Vote { wait }),
        1 => Just(Step::Commit),
        1 => (0..5u64).prop_map(|back| Step::Truncate { back }),
        1 => (0..8u64).prop_map(|ahead| Step::Purge { ahead }),
        1 => any::<u64>().prop_map(|seed| Step::Crash { seed }),
    ]
}

/// What the test knows the log should hold.
#[derive(Default)]
struct Model {
    /// The live entries: payload and the number of the append that wrote it.
    live: BTreeMap<u64, (Vec<u8>, u64)>,
    first: u64,
    next: u64,
    /// Every payload ever appended at each index.
    issued: HashMap<u64, HashSet<Vec<u8>>>,
    votes: Vec<Vec<u8>>,
    /// Index in `votes` of the last acknowledged vote.
    acked_vote: Option<usize>,
    max_purge: Option<u64>,
}

fn run_steps(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut disk = SimDisk::default();
    let mut wal = open(&disk).expect("open");
    let mut model = Model::default();
    // Appends acknowledged (by number; 0 stands for what a reopen found).
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::new(Mutex::new(HashSet::from([0])));
    let votes_acked: Arc<Mutex<Vec<usize>>> = Arc::default();
    for (n, step) in steps.into_iter().enumerate() {
        let op = n as u64 + 1;
        match step {
            Step::Append { count, len, wait } => {
                let batch: Vec<_> = (model.next..model.next + count)
                    .map(|i| (i, payload(i, &op.to_string(), len)))
                    .collect();
                for (i, p) in &batch {
                    model.live.insert(*i, (p.clone(), op));
                    model.issued.entry(*i).or_default().insert(p.clone());
                }
                model.next += count;
                let (tx, rx) = mpsc::channel();
                let acked = acked.clone();
                wal.append(batch, SyncBy::Caller, move |r| {
                    if r.is_ok() {
                        acked.lock().unwrap().insert(op);
                    }
                    let _ = tx.send(r);
                })
                .expect("append");
                if wait {
                    rx.recv().expect("callback").expect("durable");
                }
            }
            Step::Vote { wait } => {
                let vote = format!("vote{op}").into_bytes();
                model.votes.push(vote.clone());
                let k = model.votes.len() - 1;
                let (tx, rx) = mpsc::channel();
                let votes_acked = votes_acked.clone();
                wal.save_vote(vote, move |r| {
                    if r.is_ok() {
                        votes_acked.lock().unwrap().push(k);
                    }
                    let _ = tx.send(r);
                })
                .expect("vote");
                if wait {
                    rx.recv().expect("callback").expect("durable");
                }
            }
            Step::Commit => wal
                .save_committed(format!("c{op}").into_bytes())
                .expect("commit"),
            Step::Truncate { back } => {
                let from = model.next.saturating_sub(back).max(model.first);
                wal.truncate(from).expect("truncate");
                model.live.retain(|i, _| *i < from);
                model.next = from;
            }
            Step::Purge { ahead } => {
                let through = model.first + ahead;
                if model.max_purge.is_some_and(|p| p >= through) {
                    continue;
                }
                wal.purge(through, format!("p{through}").into_bytes())
                    .expect("purge");
                model.live.retain(|i, _| *i > through);
                model.first = through + 1;
                model.next = model.next.max(through + 1);
                model.max_purge = Some(through);
            }
            Step::Crash { seed } => {
                let survived = disk.crash(seed);
                drop(wal);
                disk = survived;
                wal = open(&disk).map_err(|e| TestCaseError::fail(e.to_string()))?;
                check_recovery(&wal, &mut model, &acked.lock().unwrap(), &votes_acked)?;
            }
        }
        let held: Vec<_> = model
            .live
            .iter()
            .map(|(i, (p, _))| (*i, p.clone()))
            .collect();
        prop_assert_eq!(all(&wal), held);
        let state = wal.log_state();
        prop_assert_eq!(
            (state.first_index, state.next_index),
            (model.first, model.next)
        );
    }
    Ok(())
}

/// After a power loss: every acknowledged append and vote is there, the log has no
/// hole and holds nothing that was never written; the model takes what was found.
fn check_recovery(
    wal: &Wal,
    model: &mut Model,
    acked: &HashSet<u64>,
    votes_acked: &Mutex<Vec<usize>>,
) -> Result<(), TestCaseError> {
    let state = wal.log_state();
    let found = all(wal);
    let indexes: Vec<u64> = found.iter().map(|(i, _)| *i).collect();
    let expected: Vec<u64> = (state.first_index..state.next_index).collect();
    prop_assert_eq!(indexes, expected, "a hole in the log");
    let found: BTreeMap<u64, Vec<u8>> = found.into_iter().collect();
    for (i, p) in &found {
        prop_assert!(model.issued[i].contains(p), "entry {} was never written", i);
    }
    for (i, (p, op)) in &model.live {
        if !acked.contains(op) {
            continue;
        }
        if *i < state.first_index {
            prop_assert!(model.max_purge.is_some_and(|m| m >= *i), "entry {} lost", i);
        } else {
            prop_assert_eq!(found.get(i), Some(p), "acknowledged entry {} lost", i);
        }
    }
    if let Some((through, _)) = &state.purged {
        prop_assert!(model.max_purge.is_some_and(|m| m >= *through));
    }
    let acked_vote = votes_acked.lock().unwrap().iter().max().copied();
    model.acked_vote = acked_vote.max(model.acked_vote);
    if let Some(k) = model.acked_vote {
        let vote = state.vote.clone().expect("a vote was acknowledged");
        let at = model
            .votes
            .iter()
            .position(|v| *v == vote)
            .expect("a saved vote");
        prop_assert!(at >= k, "acknowledged vote lost");
        model.acked_vote = Some(at);
    }
    model.live = found.into_iter().map(|(i, p)| (i, (p, 0))).collect();
    model.first = state.first_index;
    model.next = state.next_index;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn power_losses_keep_every_acknowledged_append_and_vote(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        run_steps(steps)?;
    }
}
