//! openraft's own storage suite against slct's log store (the write-ahead log) and
//! state machine (sled).

use openraft::storage::RaftStateMachine;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft_legacy::network_v1::SnapshotReceiverFactory;
use slct::raft::log_store::LogStore;
use slct::raft::state_machine::StateMachine;
use slct::raft::{Batch, Entry, LeaderId, LogId, TypeConfig};
use slct::storage::sm::SledStore;
use tempfile::TempDir;
use tokio::sync::broadcast;

/// Builds each test's stores in a fresh temporary directory (kept alive by the guard).
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachine), openraft::StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SledStore::open(&dir.path().join(slct::storage::SM_DIR)).expect("open sled");
        let log = LogStore::open(&dir.path().join("wal"), &store).expect("open the log");
        let (effects, _) = broadcast::channel(16);
        let state_machine = StateMachine::open(store, &dir.path().join("snapshots"), effects)
            .expect("open the state machine");
        Ok((dir, log, state_machine))
    }
}

/// Applies `entries` in one run, as openraft hands them over, with no writer waiting.
async fn apply(sm: &mut StateMachine, entries: impl IntoIterator<Item = Entry>) {
    let run: Vec<Result<_, std::io::Error>> = entries.into_iter().map(|e| Ok((e, None))).collect();
    sm.apply(futures::stream::iter(run)).await.expect("apply");
}

/// The id of entry `index`, proposed in term 1 by node 1.
fn log_id(index: u64) -> LogId {
    LogId::new(
        LeaderId {
            term: 1,
            node_id: 1,
        },
        index,
    )
}

/// A state machine on a fresh sled store, and what a test needs to reopen it.
struct Fresh {
    _dir: TempDir,
    snapshots: std::path::PathBuf,
    store: SledStore,
    effects: broadcast::Sender<std::sync::Arc<slct::engine::Effects>>,
    sm: StateMachine,
}

impl Fresh {
    fn open() -> Fresh {
        let dir = tempfile::tempdir().expect("temporary directory");
        let snapshots = dir.path().join("snapshots");
        let store = SledStore::open(&dir.path().join(slct::storage::SM_DIR)).expect("open sled");
        let (effects, _) = broadcast::channel(16);
        let sm = StateMachine::open(store.clone(), &snapshots, effects.clone()).expect("open");
        Fresh {
            _dir: dir,
            snapshots,
            store,
            effects,
            sm,
        }
    }

    async fn build_snapshot(
        &mut self,
    ) -> openraft::alias::SnapshotOf<TypeConfig, slct::raft::snapshot_data::SnapshotData> {
        use openraft::storage::RaftSnapshotBuilder;
        let mut builder = self.sm.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("build")
    }
}

/// A record of a table: the table's index, its key and value.
type Record = (usize, (Vec<u8>, Vec<u8>));

/// Every record of every table of `store`, in order.
fn tables(store: &SledStore) -> Vec<Record> {
    use slct::engine::{Store, Table};
    Table::ALL
        .iter()
        .flat_map(|&table| {
            store
                .scan_from(table, &[])
                .map(move |entry| (table.index(), entry.expect("scan")))
        })
        .collect()
}

#[tokio::test]
async fn sled_stores_pass_openraft_suite() {
    Suite::test_all(SledBuilder).await.expect("storage suite");
}

/// A restart after a crash in the middle of installing a snapshot (tables cleared, not
/// yet reloaded) finishes the install from the saved snapshot file.
#[tokio::test]
async fn an_interrupted_install_is_finished_on_restart() {
    use openraft::storage::RaftSnapshotBuilder;
    use openraft::EntryPayload;
    use slct::engine::{Command, Op, Store, Table};

    let Fresh {
        _dir,
        snapshots,
        store,
        effects,
        mut sm,
    } = Fresh::open();
    let log_id = log_id(1);
    let create = Command {
        now: 1_000,
        seed: 7,
        history_limit: 100,
        op: Op::CreateState {
            id: "kept".to_owned(),
            data: serde_json::json!("data").into(),
            selects: vec![],
            callback: None,
            priority: 0,
            max_deliveries: 0,
            retain_ms: 0,
        },
    };
    let entry = Entry {
        log_id,
        payload: EntryPayload::Normal(Batch::new(vec![create])),
    };
    apply(&mut sm, [entry]).await;
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    drop(sm);

    std::fs::File::create(snapshots.join("installing")).expect("marker");
    store.clear().expect("clear");
    assert!(store.get(Table::States, b"kept").expect("get").is_none());

    let mut sm = StateMachine::open(store.clone(), &snapshots, effects).expect("reopen");
    assert_eq!(sm.applied_state().await.expect("applied").0, Some(log_id));
    assert!(store.get(Table::States, b"kept").expect("get").is_some());
    assert!(!snapshots.join("installing").exists());
}

/// A restart whose tables lost commits that a (synced) snapshot already holds reloads the
/// snapshot: the log behind it may be gone.
#[tokio::test]
async fn tables_behind_the_snapshot_are_reloaded_on_restart() {
    use openraft::storage::RaftSnapshotBuilder;
    use openraft::EntryPayload;

    let Fresh {
        _dir,
        snapshots,
        store,
        effects,
        mut sm,
    } = Fresh::open();
    let log_id = log_id(3);
    let blank = Entry {
        log_id,
        payload: EntryPayload::Blank,
    };
    apply(&mut sm, [blank]).await;
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    drop(sm);
    store.clear().expect("lose the tables");

    let mut sm = StateMachine::open(store, &snapshots, effects).expect("reopen");
    assert_eq!(sm.applied_state().await.expect("applied").0, Some(log_id));
}

/// A snapshot built while entries keep being applied holds the tables exactly as they
/// stood at the index it names: a state machine that installs it equals one that applied
/// the same entries up to that index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_built_while_entries_apply_holds_the_tables_at_its_index() {
    use openraft::storage::RaftSnapshotBuilder;
    use openraft::EntryPayload;
    use slct::engine::{Command, Op};

    // Entry i creates state s{i} (with an idempotency key, and a retention: records in
    // every table); from entry 1,001 on, it also deletes s{i - 1000}.
    let entry = |i: u64| {
        let command = |op| Command {
            now: 1_000 + i,
            seed: i,
            history_limit: 100,
            op,
        };
        let create = Op::CreateState {
            id: format!("s{i}"),
            data: serde_json::json!({ "i": i }).into(),
            selects: vec![],
            callback: None,
            priority: 0,
            max_deliveries: 0,
            retain_ms: 3_600_000,
        };
        let mut batch = vec![command(Op::Keyed {
            key: format!("k{i}"),
            digest: vec![1],
            window_ms: 86_400_000,
            op: Box::new(create),
        })];
        if i > 1000 {
            batch.push(command(Op::DeleteState {
                id: format!("s{}", i - 1000),
            }));
        }
        Entry {
            log_id: log_id(i),
            payload: EntryPayload::Normal(Batch::new(batch)),
        }
    };

    let mut source = Fresh::open();
    for i in 1..=2_000 {
        apply(&mut source.sm, [entry(i)]).await;
    }
    let mut builder = source.sm.get_snapshot_builder().await;
    let build = tokio::spawn(async move { builder.build_snapshot().await.expect("build") });
    let mut applied_meanwhile = 2_000;
    while !build.is_finished() && applied_meanwhile < 4_000 {
        applied_meanwhile += 1;
        apply(&mut source.sm, [entry(applied_meanwhile)]).await;
    }
    let snapshot = build.await.expect("build task");
    let index = snapshot.meta.last_log_id.expect("snapshot index").index;
    eprintln!("snapshot at index {index}; applied up to {applied_meanwhile} meanwhile");

    let mut reference = Fresh::open();
    for i in 1..=index {
        apply(&mut reference.sm, [entry(i)]).await;
    }
    let mut installed = Fresh::open();
    installed
        .sm
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(tables(&installed.store), tables(&reference.store));
    assert_eq!(
        installed.sm.applied_state().await.expect("applied").0,
        snapshot.meta.last_log_id
    );
}

/// A large value (kept in a file of its own) is on disk once, whether the store or the
/// snapshot or both hold it: the snapshot links the file. It travels to a peer with the
/// snapshot, checked, and a snapshot that no longer refers to it lets its link go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_are_shared_with_the_snapshot_and_travel_with_it() {
    use std::os::unix::fs::MetadataExt;

    use openraft::EntryPayload;
    use slct::engine::{Command, Op};
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    const LARGE: usize = 100_000;
    let entry = |i: u64, op: Op| Entry {
        log_id: log_id(i),
        payload: EntryPayload::Normal(Batch::new(vec![Command {
            now: 1_000 + i,
            seed: i,
            history_limit: 0,
            op,
        }])),
    };
    let create = |n: u64| Op::CreateState {
        id: format!("s{n}"),
        data: serde_json::json!({ "blob": format!("{n}").repeat(LARGE) }).into(),
        selects: vec![],
        callback: None,
        priority: 0,
        max_deliveries: 0,
        retain_ms: 0,
    };
    // (name, hard links) of each file in `dir`.
    let files = |dir: &std::path::Path| {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| {
                let e = e.expect("entry");
                let links = e.metadata().expect("metadata").nlink();
                (e.file_name().into_string().expect("name"), links)
            })
            .collect();
        files.sort();
        files
    };

    let mut source = Fresh::open();
    for n in 1..=3 {
        apply(&mut source.sm, [entry(n, create(n))]).await;
    }
    let snapshot = source.build_snapshot().await;
    let linked = files(&source.snapshots.join("values"));
    assert_eq!(linked.len(), 3, "one link per large value: {linked:?}");
    assert!(
        linked.iter().all(|(_, links)| *links == 2),
        "each file has two names, the store's and the snapshot's: {linked:?}"
    );
    let stored: Vec<String> = files(source.store.values_dir())
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(
        stored,
        linked.iter().map(|f| f.0.clone()).collect::<Vec<_>>()
    );
    let tables_bytes = std::fs::metadata(source.snapshots.join("current.snap"))
        .expect("current.snap")
        .len();
    assert!(
        tables_bytes < LARGE as u64,
        "the tables file holds no value ({tables_bytes} bytes)"
    );

    // Received as openraft receives one: chunks written at offsets into the file the
    // receiver opened.
    let mut received = Fresh::open();
    let mut sent = snapshot.snapshot;
    let mut into = received.sm.begin_receiving_snapshot().await.expect("begin");
    let len = sent.seek(std::io::SeekFrom::End(0)).await.expect("length");
    assert!(
        len > 3 * LARGE as u64,
        "the stream carries the values ({len} bytes)"
    );
    let mut offset = 0;
    while offset < len {
        sent.seek(std::io::SeekFrom::Start(offset))
            .await
            .expect("seek");
        let mut chunk = Vec::with_capacity(70_000);
        while chunk.len() < chunk.capacity() {
            if sent.read_buf(&mut chunk).await.expect("read") == 0 {
                break;
            }
        }
        into.seek(std::io::SeekFrom::Start(offset))
            .await
            .expect("seek");
        into.write_all(&chunk).await.expect("write");
        offset += chunk.len() as u64;
    }
    assert_eq!(offset, len);
    drop(sent);
    into.flush().await.expect("flush");

    // A damaged value is refused.
    let mut damaged = Fresh::open();
    let mut copy = damaged.sm.begin_receiving_snapshot().await.expect("begin");
    into.seek(std::io::SeekFrom::Start(0)).await.expect("seek");
    let mut bytes = Vec::new();
    into.read_to_end(&mut bytes).await.expect("read");
    let at = bytes.len() - 16 - LARGE;
    bytes[at] ^= 1;
    copy.write_all(&bytes).await.expect("write");
    copy.flush().await.expect("flush");
    let refused = damaged.sm.install_snapshot(&snapshot.meta, copy).await;
    assert!(refused.is_err(), "a flipped byte in a value was installed");

    received
        .sm
        .install_snapshot(&snapshot.meta, into)
        .await
        .expect("install");
    assert_eq!(tables(&received.store), tables(&source.store));
    let linked = files(&received.snapshots.join("values"));
    assert_eq!(linked.len(), 3);
    assert!(
        linked.iter().all(|(_, links)| *links == 2),
        "the receiver keeps each value once too: {linked:?}"
    );

    // States deleted, a new snapshot: the old links go (no stream holds them).
    for n in 1..=3 {
        let delete = Op::DeleteState {
            id: format!("s{n}"),
        };
        apply(&mut source.sm, [entry(3 + n, delete)]).await;
    }
    apply(&mut source.sm, [entry(7, create(7))]).await;
    let newer = source.build_snapshot().await;
    assert_eq!(
        files(&source.snapshots.join("values")).len(),
        4,
        "held while read"
    );
    drop(newer);
    let linked = files(&source.snapshots.join("values"));
    assert_eq!(linked.len(), 1, "only the new value's link: {linked:?}");

    // A restart keeps what the snapshot refers to, and the store reads the same.
    let before = tables(&source.store);
    drop(source.sm);
    let reopened = StateMachine::open(source.store.clone(), &source.snapshots, source.effects)
        .expect("reopen");
    assert_eq!(files(&source.snapshots.join("values")).len(), 1);
    assert_eq!(tables(&source.store), before);
    drop(reopened);
}
