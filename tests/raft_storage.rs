//! openraft's own storage suite against slct's sled log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use slct::raft::log_store::LogStore;
use slct::raft::state_machine::StateMachine;
use slct::raft::{StorageError, TypeConfig};
use slct::store::SledStore;
use tempfile::TempDir;
use tokio::sync::broadcast;

/// Builds each test's stores in a fresh temporary directory (kept alive by the guard).
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SledStore::open(&dir.path().join("sled")).expect("open sled");
        let log = LogStore::open(&store)?;
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
        let store = SledStore::open(&dir.path().join("sled")).expect("open sled");
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
