//! openraft's own storage suite against slct's log store (the write-ahead log) and
//! state machine (sled).

use openraft::testing::{StoreBuilder, Suite};
use slct::raft::log_store::LogStore;
use slct::raft::state_machine::StateMachine;
use slct::raft::{StorageError, TypeConfig};
use slct::storage::sm::SledStore;
use tempfile::TempDir;
use tokio::sync::broadcast;

/// Builds each test's stores in a fresh temporary directory (kept alive by the guard).
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SledStore::open(&dir.path().join(slct::storage::SM_DIR)).expect("open sled");
        let log = LogStore::open(&dir.path().join("wal"), &store)?;
        let (effects, _) = broadcast::channel(16);
        let state_machine = StateMachine::open(store, &dir.path().join("snapshots"), effects)?;
        Ok((dir, log, state_machine))
    }
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
}

#[test]
fn sled_stores_pass_openraft_suite() {
    Suite::test_all(SledBuilder).expect("storage suite");
}

/// A restart after a crash in the middle of installing a snapshot (tables cleared, not
/// yet reloaded) finishes the install from the saved snapshot file.
#[tokio::test]
async fn an_interrupted_install_is_finished_on_restart() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use slct::engine::{Command, Op, Store, Table};

    let Fresh {
        _dir,
        snapshots,
        store,
        effects,
        mut sm,
    } = Fresh::open();
    let log_id = LogId::new(CommittedLeaderId::new(1, 1), 1);
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
    let entry = Entry::<TypeConfig> {
        log_id,
        payload: EntryPayload::Normal(vec![create]),
    };
    sm.apply([entry]).await.expect("apply");
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
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    let Fresh {
        _dir,
        snapshots,
        store,
        effects,
        mut sm,
    } = Fresh::open();
    let log_id = LogId::new(CommittedLeaderId::new(1, 1), 3);
    let blank = Entry::<TypeConfig> {
        log_id,
        payload: EntryPayload::Blank,
    };
    sm.apply([blank]).await.expect("apply");
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
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use slct::engine::{Command, Op, Store, Table};

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
        Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(batch),
        }
    };
    let tables = |store: &SledStore| {
        Table::ALL
            .iter()
            .flat_map(|&table| {
                store
                    .scan_from(table, &[])
                    .map(move |entry| (table.index(), entry.expect("scan")))
            })
            .collect::<Vec<_>>()
    };

    let mut source = Fresh::open();
    for i in 1..=2_000 {
        source.sm.apply([entry(i)]).await.expect("apply");
    }
    let mut builder = source.sm.get_snapshot_builder().await;
    let build = tokio::spawn(async move { builder.build_snapshot().await.expect("build") });
    let mut applied_meanwhile = 2_000;
    while !build.is_finished() && applied_meanwhile < 4_000 {
        applied_meanwhile += 1;
        source
            .sm
            .apply([entry(applied_meanwhile)])
            .await
            .expect("apply");
    }
    let snapshot = build.await.expect("build task");
    let index = snapshot.meta.last_log_id.expect("snapshot index").index;
    eprintln!("snapshot at index {index}; applied up to {applied_meanwhile} meanwhile");

    let mut reference = Fresh::open();
    for i in 1..=index {
        reference.sm.apply([entry(i)]).await.expect("apply");
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
