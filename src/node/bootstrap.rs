//! Forming the cluster on first start (design.md §5).
//!
//! A node with data (a log or a vote) already belongs to a cluster: it just starts and
//! Raft takes it from there. Without `--peers`, a fresh node initializes a cluster of
//! itself. With `--peers`, only the node with the smallest id ever initializes, and only
//! once every other listed peer answers `/raft/status` as fresh; if any peer already
//! belongs to a cluster, the smallest node waits to be contacted like the others. Peers
//! that are not up yet are asked again until they are, so nodes may start in any order.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::BasicNode;
use tokio::sync::watch;

use super::{NodeConfig, NodeError};
use crate::raft::auth::{ClusterKey, AUTH_HEADER};
use crate::raft::server::Status;
use crate::raft::Raft;

/// How often the smallest node asks its peers whether they are fresh.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// What a first start does, decided from the configuration alone.
pub enum Plan {
    /// Initialize a one-node cluster now.
    Alone(BTreeMap<u64, BasicNode>),
    /// Initialize all peers once they are all fresh.
    Lead(BTreeMap<u64, BasicNode>),
    /// Wait to be contacted by the cluster.
    Wait,
}

/// The plan for `config`, or why it makes no sense.
pub fn plan(config: &NodeConfig) -> Result<Plan, NodeError> {
    if config.peers.is_empty() {
        let me = BasicNode::new(config.listen.to_string());
        return Ok(Plan::Alone(BTreeMap::from([(config.id, me)])));
    }
    if !config.peers.contains_key(&config.id) {
        let message = format!("--peers does not list this node's id {}", config.id);
        return Err(NodeError::Fatal(message));
    }
    let members = config
        .peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
        .collect();
    Ok(match config.peers.keys().next() {
        Some(&smallest) if smallest == config.id => Plan::Lead(members),
        _ => Plan::Wait,
    })
}

/// Carries out `plan` unless this node already has data; returns once the cluster is
/// initialized, some peer turns out to have data, or `shutdown` fires.
pub async fn run(
    raft: Raft,
    plan: Plan,
    config: NodeConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    if raft
        .is_initialized()
        .await
        .map_err(|e| NodeError::Fatal(e.to_string()))?
    {
        return Ok(());
    }
    let members = match plan {
        Plan::Alone(members) => members,
        Plan::Lead(members) => {
            let http = crate::http_client::client();
            loop {
                match peers_fresh(&http, &config).await {
                    Some(true) => break members,
                    Some(false) => return Ok(()),
                    None => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
        Plan::Wait => return Ok(()),
    };
    match raft.initialize(members).await {
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(NodeError::Fatal(e.to_string())),
    }
}

/// Whether every other peer is fresh: `Some(false)` if one has data, `None` if one did
/// not answer.
async fn peers_fresh(http: &reqwest::Client, config: &NodeConfig) -> Option<bool> {
    for (id, addr) in &config.peers {
        if *id == config.id {
            continue;
        }
        let mut request = http
            .get(format!("http://{addr}/raft/status"))
            .timeout(PROBE_INTERVAL * 5);
        let key = ClusterKey::new(config.cluster_secret.as_deref());
        if let Some(tag) = key.sign(*id, "status", &[b"", b""]) {
            request = request.header(AUTH_HEADER, tag);
        }
        let status: Status = request.send().await.ok()?.json().await.ok()?;
        if status.initialized {
            return Some(false);
        }
    }
    Some(true)
}
