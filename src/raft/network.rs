//! The Raft network client: openraft's RPCs as JSON POSTs to a peer's `/raft/*` routes.
//!
//! Each RPC is one request with openraft's own request type as the body; the peer answers
//! with the `Result` its Raft returned, serialized as is (see [`super::server`]). A peer
//! that cannot be connected to is reported as [`Unreachable`], which makes openraft back
//! off instead of retrying in a tight loop while a node is down; any other transport
//! failure is a [`NetworkError`], retried on the next heartbeat. A peer's error result
//! (say, a higher vote) comes back as a [`RemoteError`].
//!
//! Snapshots use openraft's chunked transport: `install_snapshot` carries one chunk of
//! the snapshot file per request, so the file is never held whole in memory.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{TypeConfig, SECRET_HEADER};

/// How long to back off from an unreachable peer before trying again.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(200);

/// Creates one [`PeerClient`] per replication target; all share a connection pool.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    secret: Option<String>,
}

impl Network {
    /// A network sending `secret` (if any) in the `Slct-Cluster-Secret` header.
    pub fn new(secret: Option<String>) -> Self {
        Network {
            http: reqwest::Client::new(),
            secret,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            network: self.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// The RPC client for one peer.
pub struct PeerClient {
    network: Network,
    target: u64,
    node: BasicNode,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl PeerClient {
    async fn post<Req, Resp, E>(
        &self,
        route: &str,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("http://{}/raft/{route}", self.node.addr);
        let mut http = self
            .network
            .http
            .post(url)
            .timeout(option.hard_ttl())
            .json(request);
        if let Some(secret) = &self.network.secret {
            http = http.header(SECRET_HEADER, secret);
        }
        let response = http.send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let response = response
            .error_for_status()
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let result: Result<Resp, RaftError<u64, E>> = response
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        self.post("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.post("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        self.post("vote", &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
