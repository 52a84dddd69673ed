//! A running replica: Raft, the sled store, and the tasks around them.
//!
//! This is the seam between the replicated state machine ([`crate::raft`]) and the HTTP
//! API ([`crate::api`]): the API never touches openraft directly. Writes go through
//! [`Node::write`] on the leader (stamped with leader time and a seed, packed with other
//! concurrent writes into one log entry: group commit); reads go to the local
//! [`Node::reader`] after [`Node::linearizable_read`] (or without, for `?stale=true`);
//! every node hears the [`Effects`] of each command it applies through
//! [`Node::subscribe`].
//!
//! # When the cluster has no quorum
//! openraft keeps a leader that has lost its followers in office, and a proposal it
//! cannot commit waits forever. So every write, linearizable read and membership change
//! here is bounded by `--write-timeout` ([`NodeConfig::write_timeout`]): a write that
//! was proposed but not confirmed in time fails with [`NodeError::Timeout`] — its
//! outcome is unknown (it may still commit once a quorum is back) — and a read with
//! [`NodeError::NoQuorum`]. [`Node::is_ready`] is false on a leader that has not heard
//! from a quorum, and on a follower that has not heard from the leader, within the
//! election timeout.
//!
//! # When a disk is low on space
//! The leader refuses a client write with [`NodeError::DiskFull`] (507 `disk_full`)
//! while its own data directory is below its free-space reserve
//! ([`crate::storage::space`]) or a voter it hears from says its is (on every Raft
//! answer, [`crate::raft::network::DISK_LOW_HEADER`]); a follower forwards writes to
//! the leader, which answers for the cluster. Only the writes that finish an operation
//! the log holds already — taking the value offered to a parked receive, withdrawing a
//! parked operation — or make room — deletes, receives — go on
//! ([`Op::allowed_on_low_disk`]), and so do the leader's ticks: refusing them would turn
//! operations already acknowledged as parked into unknown outcomes. Nothing is
//! proposed before the refusal, so a 507 is a definite "not applied". See
//! docs/design.md, "A full disk".
//!
//! # Tasks
//! - `batcher`: group commit and leader time — every write passes through it.
//! - `ticker`: on the leader, a `tick` when the next timer, lease or parked-operation
//!   deadline passes.
//! - `bootstrap`: forms the cluster on first start (smallest id, once all peers are
//!   fresh), or leaves a node with data to rejoin.
//! - `log_size`: takes a snapshot and purges the log behind it when the log holds many
//!   bytes, however few entries.
//! - the disk watch ([`DiskWatch`]): reads the data directory's free space every
//!   100 ms.
//! - leadership: keeps [`Node::leadership`] in step with Raft, and logs at INFO each
//!   change of leader and of membership (openraft's own log is off by default, see
//!   [`crate::raft::peers`]; snapshots are logged where they are built and installed).
//!
//! All of them stop on one shutdown signal ([`Node::shutdown`]).
//!
//! # On disk
//! `data_dir` is a [`DataDir`]: locked while the node runs, in one format version.
//! `wal/` holds the Raft log, vote and committed index in the write-ahead log
//! ([`crate::raft::log_store`] over [`crate::storage::wal`]); `sm/` holds the state
//! machine's tables in one sled database. `snapshots/` holds the
//! current snapshot file ([`crate::raft::state_machine`]).

mod batcher;
mod bootstrap;
mod log_size;
mod ticker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ChangeMembershipError, ClientWriteError, LinearizableReadError, RaftError};
use openraft::storage::RaftLogReader;
use openraft::{BasicNode, ChangeMembers, Instant as _, ReadPolicy, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::codec;
use crate::engine::types::Millis;
use crate::engine::{Applied, Effects, Op, ReadOnly};
use crate::raft::auth::ClusterKey;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::peers::PeerHealth;
use crate::raft::state_machine::{Progress, StateMachine};
use crate::raft::{Raft, StorageError, TypeConfig, MAX_COMMAND_BYTES, MAX_PAYLOAD_ENTRIES};
use crate::storage::sm::SledStore;
use crate::storage::space::{DiskWatch, Space};
use crate::storage::DataDir;

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
/// Leader heartbeat interval.
const HEARTBEAT_MS: u64 = 100;
/// A follower that hears nothing from the leader for a random time in
/// `ELECTION_TIMEOUT_MIN_MS..ELECTION_TIMEOUT_MAX_MS` starts an election.
const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
/// See [`ELECTION_TIMEOUT_MIN_MS`]. Also the longest silence (from a quorum, or from the
/// leader) after which a node stops calling itself ready.
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// Default [`NodeConfig::snapshot_log_bytes`].
pub const DEFAULT_SNAPSHOT_LOG_BYTES: u64 = 64 << 20;
/// Default `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7001";
/// Default `--data`.
pub const DEFAULT_DATA_DIR: &str = "./slct-data";
/// Default `--snapshot-threshold`.
pub const DEFAULT_SNAPSHOT_THRESHOLD: u64 = 10_000;
/// Default `--history-limit`.
pub const DEFAULT_HISTORY_LIMIT: u32 = 100;
/// Default `--write-timeout`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for Raft's own state when answering `/readyz`.
const READINESS_PROBE: Duration = Duration::from_secs(1);

/// Raft node id.
pub type NodeId = u64;

/// How to run one replica.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// Address this node's HTTP server listens on (API and `/raft/*`).
    pub listen: SocketAddr,
    /// Data directory ([`DataDir`]): the sled database in `sm/`, snapshots in
    /// `snapshots/`.
    pub data_dir: PathBuf,
    /// Every member, this node included: id → `host:port`. Empty: a single-node cluster.
    pub peers: BTreeMap<NodeId, String>,
    /// Shared secret required on `/raft/*` (header `Slct-Cluster-Secret`), if set.
    pub cluster_secret: Option<String>,
    /// Log entries since the last snapshot that trigger a new one.
    pub snapshot_threshold: u64,
    /// Bytes of log that trigger a snapshot (if the current one is smaller), however
    /// few entries they are; [`DEFAULT_SNAPSHOT_LOG_BYTES`] but in tests.
    pub snapshot_log_bytes: u64,
    /// Pack concurrent writes into one log entry (off only to measure its effect).
    pub group_commit: bool,
    /// `--history-limit`: events kept per state (0: no history).
    pub history_limit: u32,
    /// `--checkpoint-interval`: how often the state machine is made durable while
    /// entries are applied (the log is replayed from the last checkpoint after a crash).
    pub checkpoint_interval: Duration,
    /// `--write-timeout`: how long a write, a linearizable read or a membership change
    /// may wait for a quorum before it fails ([`NodeError::Timeout`],
    /// [`NodeError::NoQuorum`]).
    pub write_timeout: Duration,
}

impl Default for NodeConfig {
    /// What `slct serve` runs without flags: node 1 alone on [`DEFAULT_LISTEN`], data in
    /// [`DEFAULT_DATA_DIR`], no cluster secret, group commit on, and each tuning
    /// default. The command line's defaults are these same constants.
    fn default() -> Self {
        NodeConfig {
            id: 1,
            listen: DEFAULT_LISTEN.parse().expect("a literal socket address"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            peers: BTreeMap::new(),
            cluster_secret: None,
            snapshot_threshold: DEFAULT_SNAPSHOT_THRESHOLD,
            snapshot_log_bytes: DEFAULT_SNAPSHOT_LOG_BYTES,
            group_commit: true,
            history_limit: DEFAULT_HISTORY_LIMIT,
            checkpoint_interval: crate::storage::sm::checkpoint::DEFAULT_CHECKPOINT_INTERVAL,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }
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
    /// The request's command would be this many bytes, more than a log entry may hold.
    #[error("the request makes a command of {0} bytes, more than {MAX_COMMAND_BYTES}")]
    TooLarge(usize),
    /// A write was proposed but not confirmed within `--write-timeout` (no quorum): it
    /// may or may not be applied.
    #[error("the write was not confirmed within {0:?}")]
    Timeout(Duration),
    /// A write's log entry was discarded when this node adopted another leader's log:
    /// another node may hold it and commit it, so it may or may not be applied.
    #[error("the write's log entry was discarded on a change of leader")]
    Discarded,
    /// The leader could not confirm with a quorum that it still leads (a linearizable
    /// read that cannot be served).
    #[error("no quorum")]
    NoQuorum,
    /// A storage or Raft failure; the node may be unhealthy.
    #[error("{0}")]
    Fatal(String),
    /// A client write refused, before anything was proposed, because these voters' disks
    /// are below their free-space reserve.
    #[error("the disk of node(s) {0:?} is low on space")]
    DiskFull(Vec<NodeId>),
}

/// Why a membership change was refused or failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum MembershipError {
    /// The node id is neither a voter nor a learner (404).
    #[error("node {0} is not a member or learner of this cluster")]
    Unknown(NodeId),
    /// The change contradicts the cluster as it is (409).
    #[error("{0}")]
    Conflict(String),
    /// The request makes no sense (400).
    #[error("{0}")]
    Invalid(String),
    /// The node could not serve it (503, or replayed on the leader).
    #[error(transparent)]
    Node(#[from] NodeError),
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
    /// This node's data disk: free space, the reserve below which writes are refused,
    /// and whether it is below it.
    pub disk: DiskInfo,
    /// On the leader only: for every other member, the index of the last log entry it
    /// is known to hold (`null` until it first answers). Absent on other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<BTreeMap<NodeId, Option<u64>>>,
    /// On the leader only: for every other member, whether it answers and when it last
    /// did. Absent on other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<BTreeMap<NodeId, PeerContact>>,
}

/// Whether a member answers the leader (`GET /cluster`'s `peers`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerContact {
    /// `false` once an RPC to it has failed, until it answers one again.
    pub reachable: bool,
    /// Unix ms at which it last answered an RPC; `null` if never since this node
    /// started.
    pub last_heard_ms: Option<u64>,
    /// Whether its last answer said its disk is low on space.
    #[serde(default)]
    pub disk_low: bool,
}

/// A node's data disk (`GET /cluster`'s `disk`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Bytes free for the node to write.
    pub free_bytes: u64,
    /// The free space below which client writes are refused (507 `disk_full`).
    pub reserve_bytes: u64,
    /// Whether the free space is below the reserve (it clears an eighth above it).
    pub low: bool,
}

impl From<Space> for DiskInfo {
    fn from(space: Space) -> Self {
        DiskInfo {
            free_bytes: space.free,
            reserve_bytes: space.reserve,
            low: space.low,
        }
    }
}

/// A running replica. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    config: NodeConfig,
    /// Holds the data directory's lock while the node lives.
    _data: DataDir,
    store: SledStore,
    effects: broadcast::Sender<Arc<Effects>>,
    raft: Raft,
    peers: PeerHealth,
    log: LogStore,
    disk: DiskWatch,
    proposals: mpsc::Sender<Proposal>,
    /// The applied log clock and next deadline.
    progress: watch::Receiver<Progress>,
    leadership: watch::Sender<Option<u64>>,
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
        let data = DataDir::open(&config.data_dir).map_err(|e| fatal(&e))?;
        let store = SledStore::open(&data.sm_dir()).map_err(|e| fatal(&e))?;
        let (effects, _) = broadcast::channel(EFFECTS_CAPACITY);
        let snapshots = data.snapshots_dir();
        let state_machine = StateMachine::open(store.clone(), &snapshots, effects.clone())
            .map_err(|e| fatal(&e))?;
        let log = LogStore::open(&data.wal_dir(), &store)
            .map_err(|e| fatal(&e))?
            .follow_durable(state_machine.checkpoints().durable())
            .of_node(config.id);
        let progress = state_machine.progress();
        let checkpoints = state_machine.checkpoints();
        let raft_config = raft_config(&config)?;
        let peers = PeerHealth::new(config.id);
        let key = ClusterKey::new(config.cluster_secret.as_deref());
        let network = Network::new(key, peers.clone());
        let restarted_leading = restarted_leading(&mut log.clone(), config.id)
            .await
            .map_err(|e| fatal(&e))?;
        let raft = Raft::new(config.id, raft_config, network, log.clone(), state_machine)
            .await
            .map_err(|e| fatal(&e))?;

        let (shutdown, _) = watch::channel(false);
        let (disk, watching) = DiskWatch::start(config.data_dir.clone(), shutdown.subscribe())
            .map_err(|e| NodeError::Fatal(format!("free space of {:?}: {e}", config.data_dir)))?;
        let (leadership, _) = watch::channel(None);
        let (proposals, queue) = mpsc::channel(PROPOSAL_QUEUE);
        let tasks = vec![
            watching,
            tokio::spawn(checkpoints.run(config.checkpoint_interval, shutdown.subscribe())),
            tokio::spawn(follow_leadership(
                raft.clone(),
                leadership.clone(),
                shutdown.subscribe(),
            )),
            tokio::spawn(batcher::run(
                raft.clone(),
                queue,
                leadership.subscribe(),
                progress.clone(),
                batcher::Settings {
                    group_commit: config.group_commit,
                    history_limit: config.history_limit,
                    restarted_leading,
                    synced: log.synced(),
                },
                shutdown.subscribe(),
            )),
            tokio::spawn(ticker::run(
                proposals.clone(),
                progress.clone(),
                leadership.subscribe(),
                shutdown.subscribe(),
            )),
            tokio::spawn(start_cluster(
                raft.clone(),
                plan,
                config.clone(),
                shutdown.subscribe(),
            )),
            tokio::spawn(log_size::run(
                raft.clone(),
                log.clone(),
                config.snapshot_log_bytes,
                snapshots,
                store.large_values_written(),
                shutdown.subscribe(),
            )),
        ];
        Ok(Node {
            inner: Arc::new(Inner {
                config,
                _data: data,
                store,
                effects,
                raft,
                peers,
                log,
                disk,
                proposals,
                progress,
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

    /// The bytes of the entries this node's Raft log holds.
    pub fn log_bytes(&self) -> u64 {
        *self.inner.log.held_bytes().borrow()
    }

    /// The `/raft/*` routes (vote, append, snapshot) for this node's HTTP server.
    pub fn raft_router(&self) -> axum::Router {
        crate::raft::server::router(
            self.inner.raft.clone(),
            ClusterKey::new(self.inner.config.cluster_secret.as_deref()),
            self.inner.config.id,
            self.inner.disk.clone(),
        )
    }

    /// Replicates and applies `op` (leader only), stamped with leader time and a seed;
    /// returns the applied result. On a follower: `NotLeader` with the leader's address.
    /// `DiskFull` while a voter's disk is low on space, unless `op` finishes an operation
    /// the log holds already or makes room (see the module docs).
    pub async fn write(&self, op: Op) -> Result<Applied, NodeError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let low = self.voters_low_on_disk();
        if !low.is_empty() && !op.allowed_on_low_disk() {
            return Err(NodeError::DiskFull(low));
        }
        let timeout = self.inner.config.write_timeout;
        tokio::time::timeout(timeout, propose(&self.inner.proposals, op))
            .await
            .unwrap_or(Err(NodeError::Timeout(timeout)))
    }

    /// Log time as a write proposed now would carry it, near enough: this node's clock,
    /// or the applied log clock if that is ahead (design.md §2 Time). A deadline in log
    /// time counts from here, so a leader whose clock is behind log time does not set
    /// deadlines that have already passed.
    pub fn log_now(&self) -> Millis {
        now_ms().max(self.inner.progress.borrow().clock)
    }

    /// Waits until this node may answer a linearizable read from its local store
    /// (leader only, through openraft's read index).
    pub async fn linearizable_read(&self) -> Result<(), NodeError> {
        let timeout = self.inner.config.write_timeout;
        let Ok(confirmed) = tokio::time::timeout(
            timeout,
            self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex),
        )
        .await
        else {
            return Err(NodeError::NoQuorum);
        };
        match confirmed {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(not_leader(f.leader_id, f.leader_node))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                Err(NodeError::NoQuorum)
            }
            Err(RaftError::Fatal(e)) => Err(fatal_error(e)),
        }
    }

    /// The voters whose disks are low on space as this node knows: itself from its own
    /// disk watch, the others from their last Raft answers to it (those that answer).
    pub fn voters_low_on_disk(&self) -> Vec<NodeId> {
        let me = self.inner.config.id;
        let mut low = self.inner.peers.low_on_disk();
        low.retain(|id| *id != me);
        if self.inner.disk.is_low() {
            low.push(me);
        }
        if low.is_empty() {
            // The common case, on every write: no membership to look up.
            return low;
        }
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        low.retain(|id| voters.contains(id));
        low.sort_unstable();
        low
    }

    /// The local replica of the state machine, to read (Raft alone writes it).
    pub fn reader(&self) -> ReadOnly<SledStore> {
        ReadOnly::new(self.inner.store.clone())
    }

    /// Effects of every command this node applies, in apply order. Commands whose
    /// effects are empty are not sent. A subscriber more than a few thousand effects
    /// behind gets `RecvError::Lagged` and should rescan what it watches.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Effects>> {
        self.inner.effects.subscribe()
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.inner.raft.server_metrics();
        let metrics = metrics.borrow_watched();
        let id = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&id)?;
        Some((id, node.addr.clone()))
    }

    /// Whether this node is the leader now. Read from the server metrics, which
    /// [`Node::leadership`] follows too, so the two never disagree.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.server_metrics().borrow_watched().state == ServerState::Leader
    }

    /// A watch of the term this node leads, `None` while it does not lead; it changes
    /// whenever this node becomes or stops being leader (the callback dispatcher runs
    /// only while it is `Some`).
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
        self.inner.leadership.subscribe()
    }

    /// `GET /cluster`.
    pub fn cluster_info(&self) -> ClusterInfo {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
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
            disk: self.inner.disk.space().into(),
            replication: metrics.replication.as_ref().map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.inner.config.id)
                    .map(|(id, matched)| (*id, matched.map(|l| l.index)))
                    .collect()
            }),
            peers: metrics.replication.as_ref().map(|r| {
                let heard = self.inner.peers.last_heard();
                let low = self.inner.peers.low_on_disk();
                r.keys()
                    .filter(|id| **id != self.inner.config.id)
                    .map(|id| {
                        let contact = PeerContact {
                            reachable: !self.inner.peers.is_down(*id),
                            last_heard_ms: heard.get(id).copied(),
                            disk_low: low.contains(id),
                        };
                        (*id, contact)
                    })
                    .collect()
            }),
        }
    }

    /// `GET /readyz`: a leader is known, this node has applied up to the commit index,
    /// and it is in touch — a leader heard from a quorum, a follower or learner from the
    /// leader, within [`ELECTION_TIMEOUT_MAX_MS`].
    ///
    /// The leader's figure is the time since openraft's `last_quorum_acked`, refreshed
    /// with the metrics on every Raft tick (150 ms); a follower's is the time since its
    /// vote was last confirmed by a message from the leader (every append and heartbeat
    /// does).
    pub async fn is_ready(&self) -> bool {
        let leader = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow_watched();
            let applied = metrics.last_applied.map(|id| id.index);
            let caught_up = metrics.running_state.is_ok()
                && metrics.current_leader.is_some()
                && applied >= self.inner.log.committed_index();
            if !caught_up {
                return false;
            }
            let since_quorum_ack = metrics
                .last_quorum_acked
                .map(|at| at.elapsed().as_millis() as u64);
            (metrics.state == ServerState::Leader).then_some(since_quorum_ack)
        };
        let silence_ms = match leader {
            Some(since_quorum_ack) => since_quorum_ack,
            None => self.millis_since_leader().await,
        };
        silence_ms.is_some_and(|ms| ms <= ELECTION_TIMEOUT_MAX_MS)
    }

    /// On a follower: milliseconds since the leader last confirmed its vote.
    async fn millis_since_leader(&self) -> Option<u64> {
        let asked = self.inner.raft.with_raft_state(|st| {
            st.vote_last_modified()
                .map(|at| at.elapsed().as_millis() as u64)
        });
        tokio::time::timeout(READINESS_PROBE, asked)
            .await
            .ok()?
            .ok()?
    }

    /// `POST /cluster/learners`: adds `id` at `addr` as a learner (it receives the log
    /// but does not vote). Returns once the change is committed, without waiting for
    /// the learner to catch up (or even answer). Adding a learner again at the same
    /// address changes nothing.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), MembershipError> {
        let ClusterInfo {
            members: voters,
            learners,
            ..
        } = self.membership()?;
        if voters.contains_key(&id) {
            return Err(MembershipError::Conflict(format!("node {id} is a voter")));
        }
        match learners.get(&id) {
            Some(known) if *known == addr => return Ok(()),
            Some(known) => {
                return Err(MembershipError::Conflict(format!(
                    "node {id} is already a learner at {known}; remove it first"
                )))
            }
            None => {}
        }
        let change = self.inner.raft.add_learner(id, BasicNode::new(addr), false);
        self.membership_change(change).await
    }

    /// `DELETE /cluster/learners/{id}`: removes learner `id` from the cluster.
    pub async fn remove_learner(&self, id: NodeId) -> Result<(), MembershipError> {
        let ClusterInfo {
            members: voters,
            learners,
            ..
        } = self.membership()?;
        if voters.contains_key(&id) {
            return Err(MembershipError::Conflict(format!(
                "node {id} is a voter; change the membership to leave it out first"
            )));
        }
        if !learners.contains_key(&id) {
            return Err(MembershipError::Unknown(id));
        }
        let remove = ChangeMembers::RemoveNodes([id].into());
        let change = self.inner.raft.change_membership(remove, false);
        self.membership_change(change).await
    }

    /// `POST /cluster/membership`: makes `members` the voters (each must be a voter or a
    /// learner already; voters left out leave the cluster). A change that leaves fewer
    /// than three voters needs `force`: two voters survive no failure, one is a single
    /// point of loss.
    pub async fn change_membership(
        &self,
        members: Vec<NodeId>,
        force: bool,
    ) -> Result<(), MembershipError> {
        let members: std::collections::BTreeSet<NodeId> = members.into_iter().collect();
        if members.is_empty() {
            return Err(MembershipError::Invalid(
                "members must name at least one node".into(),
            ));
        }
        let ClusterInfo {
            members: voters,
            learners,
            ..
        } = self.membership()?;
        if let Some(&unknown) = members
            .iter()
            .find(|id| !voters.contains_key(id) && !learners.contains_key(id))
        {
            return Err(MembershipError::Unknown(unknown));
        }
        let unchanged = members.iter().eq(voters.keys());
        if members.len() < 3 && !force && !unchanged {
            return Err(MembershipError::Conflict(format!(
                "this change leaves {} voter(s); fewer than three voters cannot survive the \
                 loss of a node. Add ?force=true to do it anyway",
                members.len()
            )));
        }
        let change = self.inner.raft.change_membership(members, false);
        self.membership_change(change).await
    }

    /// The membership as the leader sees it; `NotLeader` elsewhere, so the request is
    /// replayed on the leader, whose view is the one that counts.
    fn membership(&self) -> Result<ClusterInfo, NodeError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        Ok(self.cluster_info())
    }

    /// Awaits a membership change for at most `--write-timeout`.
    async fn membership_change<T>(
        &self,
        change: impl std::future::Future<
            Output = Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>,
        >,
    ) -> Result<(), MembershipError> {
        let timeout = self.inner.config.write_timeout;
        match tokio::time::timeout(timeout, change).await {
            Err(_) => Err(NodeError::Timeout(timeout).into()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(match e {
                    ChangeMembershipError::InProgress(_) => MembershipError::Conflict(
                        "another membership change is in progress; retry when it completes".into(),
                    ),
                    ChangeMembershipError::EmptyMembership(_) => {
                        MembershipError::Invalid("the cluster needs at least one voter".into())
                    }
                    ChangeMembershipError::LearnerNotFound(e) => {
                        MembershipError::Unknown(e.node_id)
                    }
                    ChangeMembershipError::UncommittedLeaderLog(_) => {
                        MembershipError::Node(NodeError::NoQuorum)
                    }
                    other => MembershipError::Conflict(other.to_string()),
                })
            }
            Ok(Err(e)) => Err(raft_write_error(e).into()),
        }
    }

    /// Resolves, with the error, once Raft has stopped on a fatal error (a storage
    /// failure, or an internal error of openraft's); never after a clean shutdown.
    ///
    /// It waits for Raft's server metrics to close, as they do once Raft has stopped and
    /// sent its last metrics, rather than waking on every metrics update (several per
    /// write, see [`follow_leadership`]).
    pub async fn raft_failed(&self) -> String {
        let mut server = self.inner.raft.server_metrics();
        while server.changed().await.is_ok() {}
        match raft_failure(&self.inner.raft) {
            Some(e) => e,
            None => std::future::pending().await,
        }
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

/// Hands `op` to the batcher and waits for its applied result; refuses an op whose
/// command would be larger than [`MAX_COMMAND_BYTES`].
async fn propose(proposals: &mpsc::Sender<Proposal>, op: Op) -> Result<Applied, NodeError> {
    let size = codec::encode(&op)
        .map_err(|e| NodeError::Fatal(e.to_string()))?
        .len();
    if size > MAX_COMMAND_BYTES {
        return Err(NodeError::TooLarge(size));
    }
    let (reply, applied) = oneshot::channel();
    proposals
        .send(Proposal { op, size, reply })
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
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
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

/// The term this node led when it stopped, if its stored vote is its own and committed:
/// openraft then restores it as leader of that term (see [`batcher::Settings`]).
async fn restarted_leading(log: &mut LogStore, me: NodeId) -> Result<Option<u64>, StorageError> {
    let vote = RaftLogReader::read_vote(log).await?;
    Ok(vote
        .filter(|v| v.is_committed() && v.leader_id().node_id == me)
        .map(|v| v.leader_id().term))
}

/// Keeps the leadership watch in step with Raft's server metrics, logs each change of
/// leader and membership at INFO, and says loudly when Raft stopped on a fatal (storage)
/// error.
///
/// It follows [`Raft::server_metrics`], which changes only with the vote, the state, the
/// leader or the membership, not [`Raft::metrics`], which openraft sends on every turn of
/// its core loop: several times per write, each a task woken for nothing
/// (docs/performance.md, "Hand-offs per write"). Snapshots are logged where they are
/// built and installed ([`crate::raft::state_machine`]).
async fn follow_leadership(
    raft: Raft,
    leadership: watch::Sender<Option<u64>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut server = raft.server_metrics();
    let mut seen = Seen::default();
    loop {
        let leader = {
            let m = server.borrow_and_update();
            seen.log_changes(&m);
            (m.state == ServerState::Leader).then_some(m.vote.leader_id().term)
        };
        leadership.send_if_modified(|was| std::mem::replace(was, leader) != leader);
        tokio::select! {
            // Closed: Raft stopped, and dropped its senders after its last metrics.
            changed = server.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    leadership.send_if_modified(|was| std::mem::take(was).is_some());
    if let Some(e) = raft_failure(&raft) {
        // `slct serve` exits on it too (`Node::raft_failed`).
        tracing::error!("raft stopped: {e}");
    }
}

/// The fatal error Raft stopped on, if it stopped on one (not on a shutdown).
fn raft_failure(raft: &Raft) -> Option<String> {
    match raft.metrics().borrow_watched().running_state.clone() {
        Err(openraft::errors::Fatal::Stopped) | Ok(()) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// What [`follow_leadership`] last logged.
#[derive(Default)]
struct Seen {
    leader: Option<NodeId>,
    membership: Option<crate::raft::LogId>,
}

impl Seen {
    /// Logs at INFO what changed in `m` since the last call.
    fn log_changes(&mut self, m: &openraft::metrics::RaftServerMetrics<TypeConfig>) {
        if m.current_leader != self.leader {
            self.leader = m.current_leader;
            let (me, term) = (m.id, m.vote.leader_id().term);
            match m.current_leader {
                Some(id) if id == me => tracing::info!("node {me} is the leader (term {term})"),
                Some(id) => tracing::info!("node {me} follows leader {id} (term {term})"),
                None => tracing::info!("node {me} knows no leader (term {term})"),
            }
        }
        let membership = m.membership_config.log_id();
        if *membership != self.membership {
            self.membership = *membership;
            let config = m.membership_config.membership();
            let voters: Vec<_> = config.voter_ids().collect();
            let learners: Vec<_> = config.learner_ids().collect();
            let index = membership.map_or(0, |l| l.index);
            tracing::info!(
                "node {}: membership voters {voters:?}, learners {learners:?} (log index \
                 {index})",
                m.id
            );
        }
    }
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
