//! The Raft network client: openraft's RPCs as POSTs to a peer's `/raft/*` routes.
//!
//! Votes and appends are one request each, openraft's own request type in the binary
//! [`codec`] as the body; the peer answers with the `Result` its Raft returned, encoded
//! the same way (see [`super::server`]). Every request carries the MAC of
//! [`super::auth`]. A peer that cannot be connected to, or that answers with an error
//! status (401 for a wrong secret, 413, 5xx), is reported as [`Unreachable`], which
//! makes openraft back off instead of retrying in a tight loop; any other transport
//! failure is a [`NetworkError`], retried on the next heartbeat. A peer's error result
//! (say, a higher vote) comes back as a [`RemoteError`]. Whether each peer answers is
//! recorded in [`PeerHealth`], which logs a peer's going and coming back once each.
//! So is whether a peer is low on disk space: a node whose disk is below its reserve
//! says so on every answer with [`DISK_LOW_HEADER`], and a leader refuses client
//! writes while a voter does (docs/design.md, "A full disk"). Riding on the RPCs the
//! leader sends anyway (a heartbeat every 100 ms) costs no request of its own.
//!
//! An append carries entries up to [`APPEND_BUDGET_BYTES`] (openraft allows an
//! append only the heartbeat interval); when it had to leave some out, a success is
//! reported as a partial success up to the last entry sent, and openraft sends the rest
//! next.
//!
//! Snapshots use openraft's chunked transport: `install_snapshot` carries one chunk of
//! the snapshot file per request, so the file is never held whole in memory. A chunk
//! travels as a raw `application/octet-stream` body, with the rest of the request (vote,
//! snapshot meta, offset, done) as JSON in the `Slct-Snapshot` header
//! ([`encode_snapshot_chunk`], [`decode_snapshot_chunk`]). Binary because as JSON the
//! chunk's bytes would be an array of numbers: more than three times their size to send
//! (and to parse, within openraft's per-chunk timeout). The header stays small: the meta
//! holds the membership, a few addresses.

use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::BasicNode;
use openraft_legacy::network_v1::{
    Adapter, InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, RaftNetwork,
    SnapshotMeta,
};
use reqwest::header::{HeaderValue, InvalidHeaderValue, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::auth::{digest, ClusterKey, AUTH_HEADER, DIGEST_HEADER};
use super::peers::PeerHealth;
use super::snapshot_data::SnapshotData;
use super::{LogId, TypeConfig, Vote, APPEND_BUDGET_BYTES};
use crate::codec::{self, CodecError};

/// Header carrying a snapshot chunk's request, but for its bytes, on `/raft/snapshot`.
pub const SNAPSHOT_HEADER: &str = "Slct-Snapshot";

/// Set (to `1`) on every `/raft/*` answer of a node whose disk is below its free-space
/// reserve ([`crate::storage::space`]).
pub const DISK_LOW_HEADER: &str = "slct-disk-low";

/// How long to back off from an unreachable peer before trying again.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(200);

/// Creates one [`PeerClient`] per replication target; all share a connection pool.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    key: ClusterKey,
    health: PeerHealth,
}

impl Network {
    /// A network authenticating its requests with `key`, recording in `health` which
    /// peers answer.
    pub fn new(key: ClusterKey, health: PeerHealth) -> Self {
        Network {
            http: crate::http_client::client(),
            key,
            health,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    /// Our one-request-per-RPC client, with snapshots in chunks, behind openraft's
    /// adapter for such clients.
    type Network = Adapter<TypeConfig, PeerClient, SnapshotData>;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        PeerClient {
            network: self.clone(),
            target,
            node: node.clone(),
        }
        .into_v2()
    }
}

/// The RPC client for one peer.
pub struct PeerClient {
    network: Network,
    target: u64,
    node: BasicNode,
}

type RpcResult<T, E = openraft::errors::Infallible> =
    Result<T, RPCError<TypeConfig, RaftError<TypeConfig, E>>>;

impl PeerClient {
    /// A POST of `body` to the peer's `/raft/{route}`, authenticated, with `option`'s
    /// deadline; `header` is a snapshot chunk's request header.
    fn request(
        &self,
        route: &str,
        option: &RPCOption,
        header: Option<HeaderValue>,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let url = format!("http://{}/raft/{route}", self.node.addr);
        let header_bytes = header.as_ref().map_or(&[][..], HeaderValue::as_bytes);
        let digest = digest(&body);
        let tag = self
            .network
            .key
            .sign(self.target, route, &[header_bytes, digest.as_bytes()]);
        let mut http = self
            .network
            .http
            .post(url)
            .timeout(option.hard_ttl())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(DIGEST_HEADER, digest);
        if let Some(tag) = tag {
            http = http.header(AUTH_HEADER, tag);
        }
        if let Some(header) = header {
            http = http.header(SNAPSHOT_HEADER, header);
        }
        http.body(body)
    }

    /// Sends `http` and decodes the `Result` the peer's Raft returned; records whether
    /// the peer answered.
    async fn send<Resp, E>(&self, http: reqwest::RequestBuilder) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result = self.exchange(http).await;
        let health = &self.network.health;
        match &result {
            Ok(_) | Err(RPCError::RemoteError(_)) => health.answered(self.target, &self.node.addr),
            Err(e) => health.failed(self.target, &self.node.addr, e),
        }
        result
    }

    /// [`Self::send`] but for the record.
    async fn exchange<Resp, E>(&self, http: reqwest::RequestBuilder) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let response = http.send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let status = response.status();
        let disk_low = response.headers().contains_key(DISK_LOW_HEADER);
        self.network
            .health
            .disk(self.target, &self.node.addr, disk_low);
        if !status.is_success() {
            let refused = openraft::AnyError::error(format!("peer answered HTTP {status}"));
            return Err(RPCError::Unreachable(Unreachable::new(&refused)));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let result: Result<Resp, RaftError<TypeConfig, E>> =
            codec::decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
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
    ) -> RpcResult<AppendEntriesResponse<TypeConfig>> {
        let network_err = |e: CodecError| RPCError::Network(NetworkError::new(&e));
        let Budgeted {
            rpc,
            cut,
            entry_bytes,
        } = within_budget(rpc).map_err(network_err)?;
        let body = codec::encode_with_capacity(&rpc, entry_bytes + APPEND_HEAD_BYTES)
            .map_err(network_err)?;
        let answer = self
            .send(self.request("append", &option, None, body))
            .await?;
        Ok(match (answer, cut) {
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (answer, _) => answer,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<TypeConfig>, InstallSnapshotError> {
        let (header, data) =
            encode_snapshot_chunk(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(self.request("snapshot", &option, Some(header), data))
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        let body = codec::encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(self.request("vote", &option, None, body)).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}

/// Room for an append's encoding besides its entries (vote, log ids, entry count) on
/// top of [`within_budget`]'s sum: 84 bytes with the largest ids and terms.
const APPEND_HEAD_BYTES: usize = 128;

/// An append cut to its budget by [`within_budget`].
struct Budgeted {
    /// The request with the entries that fit.
    rpc: AppendEntriesRequest<TypeConfig>,
    /// If entries were cut: the last log id kept, for a partial success.
    cut: Option<LogId>,
    /// The encoded size of the entries kept.
    entry_bytes: usize,
}

/// Cuts `rpc` to the entries that fit [`APPEND_BUDGET_BYTES`] (at least one).
fn within_budget(mut rpc: AppendEntriesRequest<TypeConfig>) -> Result<Budgeted, CodecError> {
    let mut bytes = 0;
    let mut keep = 0;
    for entry in &rpc.entries {
        let size = codec::encoded_len(entry)?;
        if keep > 0 && bytes + size > APPEND_BUDGET_BYTES {
            break;
        }
        bytes += size;
        keep += 1;
    }
    let cut = if keep == rpc.entries.len() {
        None
    } else {
        rpc.entries.truncate(keep);
        rpc.entries.last().map(|e| e.log_id)
    };
    Ok(Budgeted {
        rpc,
        cut,
        entry_bytes: bytes,
    })
}

/// A snapshot chunk's request without its bytes: the `Slct-Snapshot` header.
#[derive(Serialize, Deserialize)]
struct ChunkHeader {
    vote: Vote,
    meta: SnapshotMeta<TypeConfig>,
    offset: u64,
    done: bool,
}

/// Why a snapshot chunk's header could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum ChunkHeaderError {
    /// The request has no `Slct-Snapshot` header.
    #[error("missing {SNAPSHOT_HEADER} header")]
    Missing,
    /// The header is not the JSON of a chunk's request.
    #[error("{SNAPSHOT_HEADER} header: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON holds a byte not allowed in a header value.
    #[error("{SNAPSHOT_HEADER} header: {0}")]
    Value(#[from] InvalidHeaderValue),
}

/// Splits `rpc` into its `Slct-Snapshot` header and its chunk's bytes, the request body.
pub fn encode_snapshot_chunk(
    rpc: InstallSnapshotRequest<TypeConfig>,
) -> Result<(HeaderValue, Vec<u8>), ChunkHeaderError> {
    let header = ChunkHeader {
        vote: rpc.vote,
        meta: rpc.meta,
        offset: rpc.offset,
        done: rpc.done,
    };
    let header = HeaderValue::from_bytes(&serde_json::to_vec(&header)?)?;
    Ok((header, rpc.data))
}

/// Joins a `Slct-Snapshot` header and a request body back into openraft's request.
pub fn decode_snapshot_chunk(
    header: Option<&HeaderValue>,
    data: Vec<u8>,
) -> Result<InstallSnapshotRequest<TypeConfig>, ChunkHeaderError> {
    let header = header.ok_or(ChunkHeaderError::Missing)?;
    let ChunkHeader {
        vote,
        meta,
        offset,
        done,
    } = serde_json::from_slice(header.as_bytes())?;
    Ok(InstallSnapshotRequest {
        vote,
        meta,
        offset,
        data,
        done,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::Membership;

    use super::*;
    use crate::raft::{Batch, Entry, LeaderId, StoredMembership};

    /// An append of `n` entries of about 400 KiB each, the largest ids and terms.
    fn append(n: u64) -> AppendEntriesRequest<TypeConfig> {
        let leader = LeaderId {
            term: u64::MAX,
            node_id: u64::MAX,
        };
        let entry = |i: u64| Entry {
            log_id: LogId::new(leader, u64::MAX - 10 + i),
            payload: openraft::EntryPayload::Normal(Batch::new(vec![crate::engine::Command {
                now: u64::MAX,
                seed: u64::MAX,
                history_limit: 0,
                op: crate::engine::Op::DeleteState {
                    id: "x".repeat(400 << 10),
                },
            }])),
        };
        AppendEntriesRequest {
            vote: Vote::new_committed(u64::MAX, u64::MAX),
            prev_log_id: Some(LogId::new(leader, u64::MAX - 11)),
            entries: (0..n).map(entry).collect(),
            leader_commit: Some(LogId::new(leader, u64::MAX - 11)),
        }
    }

    #[test]
    fn an_append_is_cut_to_its_budget_and_encoded_in_the_room_measured() {
        let kept = within_budget(append(4)).unwrap();
        assert_eq!(kept.rpc.entries.len(), 2, "three of 400 KiB pass 1 MiB");
        assert_eq!(kept.cut, Some(kept.rpc.entries[1].log_id));
        let room = kept.entry_bytes + APPEND_HEAD_BYTES;
        let body = codec::encode_with_capacity(&kept.rpc, room).unwrap();
        assert_eq!(body, codec::encode(&kept.rpc).unwrap());
        assert_eq!(
            body.capacity(),
            room,
            "the head fits the room left for it: the buffer never grew"
        );
        let whole = within_budget(append(2)).unwrap();
        assert_eq!((whole.rpc.entries.len(), whole.cut), (2, None));
    }

    fn request(data: Vec<u8>) -> InstallSnapshotRequest<TypeConfig> {
        let log_id = LogId::new(
            LeaderId {
                term: 3,
                node_id: 1,
            },
            40_000,
        );
        let nodes: BTreeMap<u64, BasicNode> = (1..=3)
            .map(|id| (id, BasicNode::new(format!("10.0.0.{id}:7000"))))
            .collect();
        let members = BTreeSet::from([1, 2, 3]);
        let membership = Membership::new(vec![members], nodes).unwrap();
        InstallSnapshotRequest {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id),
                last_membership: StoredMembership::new(Some(log_id), membership),
                snapshot_id: "3-1-40000-7".to_owned(),
            },
            offset: 5 << 20,
            data,
            done: true,
        }
    }

    #[test]
    fn a_snapshot_chunk_travels_as_its_raw_bytes_and_comes_back_whole() {
        let mut data: Vec<u8> = (0..=255u8).collect();
        data.extend((0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        let sent = request(data.clone());

        let (header, body) = encode_snapshot_chunk(sent.clone()).expect("encode");
        assert_eq!(body, data, "the body is the chunk's bytes, not JSON");
        assert!(header.len() < 1024, "small header: {} bytes", header.len());

        let received = decode_snapshot_chunk(Some(&header), body).expect("decode");
        assert_eq!(received, sent);
    }

    #[test]
    fn a_chunk_without_its_header_is_refused() {
        let missing = decode_snapshot_chunk(None, vec![1, 2, 3]);
        assert!(matches!(missing, Err(ChunkHeaderError::Missing)));
        let garbled = decode_snapshot_chunk(Some(&HeaderValue::from_static("{")), vec![]);
        assert!(matches!(garbled, Err(ChunkHeaderError::Json(_))));
    }
}
