//! A running replica: Raft, the sled store, and the tasks around them.
//!
//! This is the seam between the replicated state machine ([`crate::raft`]) and the HTTP
//! API ([`crate::api`]): the API never touches openraft directly. Writes go through
//! [`Node::write`] on the leader (stamped with leader time and a seed, packed with other
//! concurrent writes into one log entry: group commit); reads go to the local
//! [`Node::store`] after [`Node::linearizable_read`] (or without, for `?stale=true`);
//! every node hears the [`Effects`] of each command it applies through
//! [`Node::subscribe`].
//!
//! # Tasks
//! - `batcher`: group commit and leader time — every write passes through it.
//! - `ticker`: on the leader, a `tick` when the next timer, lease or parked-operation
//!   deadline passes.
//! - `bootstrap`: forms the cluster on first start (smallest id, once all peers are
//!   fresh), or leaves a node with data to rejoin.
//! - leadership: keeps [`Node::leadership`] in step with Raft.
//!
//! All of them stop on one shutdown signal ([`Node::shutdown`]).
//!
//! # On disk
//! `data_dir/sled` holds one sled database: the Raft log, vote and committed index
//! ([`crate::raft::log_store`]) and the state machine tables. `data_dir/snapshots`
//! holds the current snapshot file ([`crate::raft::state_machine`]).

mod batcher;
mod bootstrap;
mod ticker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::engine::{Applied, Effects, Op};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::raft::Raft;
use crate::store::SledStore;

use batcher::{fatal_error, raft_write_error, Proposal};

/// Ops waiting for the batcher before writers wait for room.
const PROPOSAL_QUEUE: usize = 4096;
/// Effects a slow subscriber may fall behind by before it misses some (`Lagged`).
const EFFECTS_CAPACITY: usize = 4096;
/// Largest snapshot chunk per `/raft/snapshot` request: small enough to cross a slow
/// link well within [`SNAPSHOT_RPC_TIMEOUT_MS`] (1 MiB: about 85 ms at 100 Mbit/s); on
/// loopback, 4 MiB chunks caught a follower up no faster (`benches/snapshot_catchup.sh`).
const SNAPSHOT_CHUNK: u64 = 1 << 20;
/// How long one `/raft/snapshot` request may take. A timeout makes the whole snapshot
/// start over, and the reply to the last chunk waits until the follower has cleared and
/// reloaded its tables — seconds to a minute for millions of states — so openraft's
/// 200 ms default would keep a far-behind follower from ever catching up.
const SNAPSHOT_RPC_TIMEOUT_MS: u64 = 120_000;
/// Most entries per append request.
const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// Raft node id.
pub type NodeId = u64;

/// How to run one replica.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// Address this node's HTTP server listens on (API and `/raft/*`).
    pub listen: SocketAddr,
    /// Data directory: the sled database in `sled/`, snapshots in `snapshots/`.
    pub data_dir: PathBuf,
    /// Every member, this node included: id → `host:port`. Empty: a single-node cluster.
    pub peers: BTreeMap<NodeId, String>,
    /// Shared secret required on `/raft/*` (header `Slct-Cluster-Secret`), if set.
    pub cluster_secret: Option<String>,
    /// Log entries since the last snapshot that trigger a new one.
    pub snapshot_threshold: u64,
    /// Pack concurrent writes into one log entry (off only to measure its effect).
    pub group_commit: bool,
}

/// Why a request could not be served by this node.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NodeError {
    /// This node is not the leader; the leader's id and address if known.
    #[error("not the leader")]
    NotLeader(Option<(NodeId, String)>),
    /// No leader is known (election in progress, no quorum).
    #[error("no leader")]
    NoLeader,
    /// The node is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A storage or Raft failure; the node may be unhealthy.
    #[error("{0}")]
    Fatal(String),
}

/// What `GET /cluster` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// This node's id.
    pub id: NodeId,
    /// Current leader, if known.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Voters: id → address.
    pub members: BTreeMap<NodeId, String>,
    /// Learners: id → address.
    pub learners: BTreeMap<NodeId, String>,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Last applied index.
    pub last_applied: Option<u64>,
    /// `Leader|Follower|Candidate|Learner`.
    pub state: String,
}

/// A running replica. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    config: NodeConfig,
    store: SledStore,
    effects: broadcast::Sender<Arc<Effects>>,
    raft: Raft,
    log: LogStore,
    proposals: mpsc::Sender<Proposal>,
    leadership: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Node {
    /// Opens the store, starts Raft and the background tasks (group-commit batcher,
    /// leader ticker), and bootstraps or rejoins the cluster. Does not serve HTTP: the
    /// caller mounts [`Node::raft_router`] and the API on `config.listen`.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let plan = bootstrap::plan(&config)?;
        let fatal = |e: &dyn std::fmt::Display| NodeError::Fatal(e.to_string());
        let store = SledStore::open(&config.data_dir.join("sled")).map_err(|e| fatal(&e))?;
        let (effects, _) = broadcast::channel(EFFECTS_CAPACITY);
        let log = LogStore::open(&store).map_err(|e| fatal(&e))?;
        let snapshots = config.data_dir.join("snapshots");
        let state_machine = StateMachine::open(store.clone(), &snapshots, effects.clone())
            .map_err(|e| fatal(&e))?;
        let progress = state_machine.progress();
        let raft_config = raft_config(&config)?;
        let network = Network::new(config.cluster_secret.clone());
        let raft = Raft::new(config.id, raft_config, network, log.clone(), state_machine)
            .await
            .map_err(|e| fatal(&e))?;

        let (shutdown, _) = watch::channel(false);
        let (leadership, _) = watch::channel(false);
        let (proposals, queue) = mpsc::channel(PROPOSAL_QUEUE);
        let tasks = vec![
            tokio::spawn(follow_leadership(
                raft.clone(),
                leadership.clone(),
                shutdown.subscribe(),
            )),
            tokio::spawn(batcher::run(
                raft.clone(),
                queue,
                progress.clone(),
                config.group_commit,
                shutdown.subscribe(),
            )),
            tokio::spawn(ticker::run(
                proposals.clone(),
                progress,
                leadership.subscribe(),
                shutdown.subscribe(),
            )),
            tokio::spawn(start_cluster(
                raft.clone(),
                plan,
                config.clone(),
                shutdown.subscribe(),
            )),
        ];
        Ok(Node {
            inner: Arc::new(Inner {
                config,
                store,
                effects,
                raft,
                log,
                proposals,
                leadership,
                shutdown,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// This node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The `/raft/*` routes (vote, append, snapshot) for this node's HTTP server.
    pub fn raft_router(&self) -> axum::Router {
        crate::raft::server::router(
            self.inner.raft.clone(),
            self.inner.config.cluster_secret.clone(),
        )
    }

    /// Replicates and applies `op` (leader only), stamped with leader time and a seed;
    /// returns the applied result. On a follower: `NotLeader` with the leader's address.
    pub async fn write(&self, op: Op) -> Result<Applied, NodeError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        propose(&self.inner.proposals, op).await
    }

    /// Waits until this node may answer a linearizable read from its local store
    /// (leader only, through openraft's read index).
    pub async fn linearizable_read(&self) -> Result<(), NodeError> {
        match self.inner.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(not_leader(f.leader_id, f.leader_node))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(NodeError::NoLeader)
            }
            Err(RaftError::Fatal(e)) => Err(fatal_error(e)),
        }
    }

    /// The local replica of the state machine, for reads.
    pub fn store(&self) -> &SledStore {
        &self.inner.store
    }

    /// Effects of every command this node applies, in apply order. Commands whose
    /// effects are empty are not sent. A subscriber more than a few thousand effects
    /// behind gets `RecvError::Lagged` and should rescan what it watches.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Effects>> {
        self.inner.effects.subscribe()
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let id = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&id)?;
        Some((id, node.addr.clone()))
    }

    /// Whether this node is the leader now.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// A watch that changes whenever this node becomes or stops being leader (the
    /// callback dispatcher runs only while it is `true`).
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.leadership.subscribe()
    }

    /// `GET /cluster`.
    pub fn cluster_info(&self) -> ClusterInfo {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let addr = |id: u64| {
            let node = membership.get_node(&id);
            (id, node.map(|n| n.addr.clone()).unwrap_or_default())
        };
        ClusterInfo {
            id: self.inner.config.id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            members: membership.voter_ids().map(addr).collect(),
            learners: membership.learner_ids().map(addr).collect(),
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|id| id.index),
            state: format!("{:?}", metrics.state),
        }
    }

    /// `GET /readyz`: a leader is known and this node has applied up to the commit index.
    pub fn is_ready(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let applied = metrics.last_applied.map(|id| id.index);
        metrics.running_state.is_ok()
            && metrics.current_leader.is_some()
            && applied >= self.inner.log.committed_index()
    }

    /// `POST /cluster/learners`.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), NodeError> {
        self.inner
            .raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .map(drop)
            .map_err(raft_write_error)
    }

    /// `POST /cluster/membership`.
    pub async fn change_membership(&self, members: Vec<NodeId>) -> Result<(), NodeError> {
        let members: std::collections::BTreeSet<NodeId> = members.into_iter().collect();
        self.inner
            .raft
            .change_membership(members, false)
            .await
            .map(drop)
            .map_err(raft_write_error)
    }

    /// Stops Raft and the background tasks and flushes the store.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!("raft did not stop cleanly: {e}");
        }
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::warn!("background task failed: {e}");
            }
        }
        if let Err(e) = self.inner.store.flush_durable() {
            tracing::error!("final flush failed: {e}");
        }
    }

    /// `NotLeader` with the leader's address if one is known, else `NoLeader`.
    fn not_leader(&self) -> NodeError {
        match self.leader() {
            Some(leader) => NodeError::NotLeader(Some(leader)),
            None => NodeError::NoLeader,
        }
    }
}

/// Hands `op` to the batcher and waits for its applied result.
async fn propose(proposals: &mpsc::Sender<Proposal>, op: Op) -> Result<Applied, NodeError> {
    let (reply, applied) = oneshot::channel();
    proposals
        .send(Proposal { op, reply })
        .await
        .map_err(|_| NodeError::ShuttingDown)?;
    applied.await.map_err(|_| NodeError::ShuttingDown)?
}

/// openraft's "forward to" as the node's error.
fn not_leader(id: Option<NodeId>, node: Option<BasicNode>) -> NodeError {
    match (id, node) {
        (Some(id), Some(node)) => NodeError::NotLeader(Some((id, node.addr))),
        (Some(_), None) => NodeError::NotLeader(None),
        (None, _) => NodeError::NoLeader,
    }
}

/// openraft's configuration for `config`: heartbeats every 100 ms, elections after
/// 300–600 ms of silence, a snapshot every `snapshot_threshold` entries, and the log
/// purged behind it except for the last `snapshot_threshold` entries (so a follower
/// that is briefly behind catches up from the log, one that is far behind by snapshot).
fn raft_config(config: &NodeConfig) -> Result<Arc<openraft::Config>, NodeError> {
    let threshold = config.snapshot_threshold.max(1);
    let raft_config = openraft::Config {
        cluster_name: "slct".to_owned(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(threshold),
        max_in_snapshot_log_to_keep: threshold,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK,
        install_snapshot_timeout: SNAPSHOT_RPC_TIMEOUT_MS,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    let valid = raft_config
        .validate()
        .map_err(|e| NodeError::Fatal(format!("raft configuration: {e}")))?;
    Ok(Arc::new(valid))
}

/// Keeps the leadership watch in step with Raft's metrics, and says loudly when Raft
/// stopped on a fatal (storage) error.
async fn follow_leadership(
    raft: Raft,
    leadership: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    loop {
        let (leader, stopped) = {
            let m = metrics.borrow_and_update();
            (
                m.state == ServerState::Leader,
                m.running_state.clone().err(),
            )
        };
        leadership.send_if_modified(|was| std::mem::replace(was, leader) != leader);
        match stopped {
            None => {}
            Some(openraft::error::Fatal::Stopped) => break,
            Some(e) => {
                tracing::error!("raft stopped: {e}; this node serves no writes until restarted");
                break;
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    leadership.send_if_modified(|was| std::mem::replace(was, false));
}

/// Runs the bootstrap plan, logging why it failed if it did.
async fn start_cluster(
    raft: Raft,
    plan: bootstrap::Plan,
    config: NodeConfig,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = bootstrap::run(raft, plan, config, shutdown).await {
        tracing::error!("cluster bootstrap failed: {e}");
    }
}
