//! A running replica: Raft, the sled store, and the tasks around them.
//!
//! This is the seam between the replicated state machine ([`crate::raft`]) and the HTTP
//! API ([`crate::api`]): the API never touches openraft directly. Writes go through
//! [`Node::write`] on the leader (stamped with leader time and a seed, packed with other
//! concurrent writes into one log entry: group commit); reads go to the local
//! [`Node::store`] after [`Node::linearizable_read`] (or without, for `?stale=true`);
//! every node hears the [`Effects`] of each command it applies through
//! [`Node::subscribe`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::engine::{Applied, Effects, Op};
use crate::store::SledStore;

/// Raft node id.
pub type NodeId = u64;

/// How to run one replica.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// Address this node's HTTP server listens on (API and `/raft/*`).
    pub listen: SocketAddr,
    /// Data directory (one sled database).
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
}

impl Node {
    /// Opens the store, starts Raft and the background tasks (group-commit batcher,
    /// leader ticker), and bootstraps or rejoins the cluster. Does not serve HTTP: the
    /// caller mounts [`Node::raft_router`] and the API on `config.listen`.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let _ = config;
        todo!("raft layer")
    }

    /// This node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The `/raft/*` routes (vote, append, snapshot) for this node's HTTP server.
    pub fn raft_router(&self) -> axum::Router {
        todo!("raft layer")
    }

    /// Replicates and applies `op` (leader only), stamped with leader time and a seed;
    /// returns the applied result. On a follower: `NotLeader` with the leader's address.
    pub async fn write(&self, op: Op) -> Result<Applied, NodeError> {
        let _ = op;
        todo!("raft layer")
    }

    /// Waits until this node may answer a linearizable read from its local store
    /// (leader only, through openraft's read index).
    pub async fn linearizable_read(&self) -> Result<(), NodeError> {
        todo!("raft layer")
    }

    /// The local replica of the state machine, for reads.
    pub fn store(&self) -> &SledStore {
        &self.inner.store
    }

    /// Effects of every command this node applies, in apply order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Effects>> {
        self.inner.effects.subscribe()
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        todo!("raft layer")
    }

    /// Whether this node is the leader now.
    pub fn is_leader(&self) -> bool {
        todo!("raft layer")
    }

    /// A watch that changes whenever this node becomes or stops being leader (the
    /// callback dispatcher runs only while it is `true`).
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        todo!("raft layer")
    }

    /// `GET /cluster`.
    pub fn cluster_info(&self) -> ClusterInfo {
        todo!("raft layer")
    }

    /// `GET /readyz`: a leader is known and this node has applied up to the commit index.
    pub fn is_ready(&self) -> bool {
        todo!("raft layer")
    }

    /// `POST /cluster/learners`.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), NodeError> {
        let _ = (id, addr);
        todo!("raft layer")
    }

    /// `POST /cluster/membership`.
    pub async fn change_membership(&self, members: Vec<NodeId>) -> Result<(), NodeError> {
        let _ = members;
        todo!("raft layer")
    }

    /// Stops Raft and the background tasks and flushes the store.
    pub async fn shutdown(&self) {
        todo!("raft layer")
    }
}
