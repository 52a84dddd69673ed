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

#[test]
fn sled_stores_pass_openraft_suite() {
    Suite::test_all(SledBuilder).expect("storage suite");
}
