//! openraft's network: replication and heartbeats go over one long-lived, pipelined stream per
//! peer ([`crate::consensus::peer::append_stream`]); votes and snapshot chunks are single POSTs to the peer's API
//! listener with a codec body (see [`crate::consensus::peer::client`]), bounded by the TTL openraft gives them. A
//! connection failure is reported as `Unreachable`, so openraft backs off instead of hammering a
//! dead peer. How much one append-entries request carries is bounded where the entries are read
//! (the log reader's byte budget), not here.

use std::sync::Arc;

use futures::Stream;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::StreamAppendResult;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, OptionalSend};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::consensus::peer::append_stream::StreamClient;
use crate::consensus::peer::client::{path, PeerError, Peers};
use crate::consensus::types::{NodeId, SnapshotMeta, TypeConfig};

#[derive(Clone)]
pub struct PeerNetwork {
    peers: Arc<Peers>,
}

impl PeerNetwork {
    pub fn new(peers: Arc<Peers>) -> PeerNetwork {
        PeerNetwork { peers }
    }
}

/// The connection to one peer: its append stream, and the shared client's pool for the rest.
pub struct PeerConnection {
    peers: Arc<Peers>,
    target: NodeId,
    address: String,
    stream: StreamClient,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            peers: self.peers.clone(),
            target,
            address: node.addr.clone(),
            stream: StreamClient::new(target, node.addr.clone()),
        }
    }
}

/// One piece of a snapshot file on its way to a peer. The receiver appends `data` at `offset`
/// to the file it keeps for (`vote`, `meta`), and installs the file when `done`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: VoteOf<TypeConfig>,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub data: Vec<u8>,
    pub done: bool,
}

/// Bytes of a snapshot file per request: well under the peer body limit, and a few round trips
/// per hundred megabytes.
const SNAPSHOT_CHUNK_BYTES: usize = 8 * 1024 * 1024;

impl PeerConnection {
    /// One request and its answer. A peer whose Raft has stopped answers with its fatal error;
    /// to this node that is a peer it cannot use for now, as a network failure is.
    async fn rpc<Request, Response>(
        &self,
        path: &str,
        request: &Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<TypeConfig>>
    where
        Request: Serialize,
        Response: DeserializeOwned,
    {
        let answer: Result<Response, RaftError<TypeConfig>> =
            self.peers.call(self.target, &self.address, path, request, option.hard_ttl()).await.map_err(rpc_error)?;
        answer.map_err(|error| RPCError::Network(NetworkError::new(&error)))
    }
}

fn rpc_error<E: std::error::Error>(error: PeerError) -> RPCError<TypeConfig, E> {
    match error {
        PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        PeerError::NoAnswer { .. } | PeerError::Refused { .. } => RPCError::Network(NetworkError::new(&error)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = tokio::fs::File;

    /// One call on its own; openraft replicates through [`Self::stream_append`] instead.
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(path::APPEND_ENTRIES, &request, &option).await
    }

    fn stream_append<'s, Input>(
        &'s mut self,
        input: Input,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        Input: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        self.stream.session(&self.peers, input)
    }

    async fn vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(path::VOTE, &request, &option).await
    }

    /// Sends the snapshot file in chunks, read from the file as they go: never whole in memory.
    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, tokio::fs::File>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut file = snapshot.snapshot;
        let mut offset = 0u64;
        let send = async {
            loop {
                let mut data = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let mut filled = 0;
                while filled < data.len() {
                    let read = file
                        .read(&mut data[filled..])
                        .await
                        .map_err(|error| StreamingError::Network(NetworkError::new(&error)))?;
                    if read == 0 {
                        break;
                    }
                    filled += read;
                }
                data.truncate(filled);
                let done = filled < SNAPSHOT_CHUNK_BYTES;
                let chunk = SnapshotChunk { vote, meta: snapshot.meta.clone(), offset, data, done };
                let answer: crate::consensus::peer::snapshot_receiver::ChunkAnswer = self
                    .peers
                    .call(self.target, &self.address, path::INSTALL_SNAPSHOT, &chunk, option.hard_ttl())
                    .await
                    .map_err(|error| match error {
                        PeerError::Unreachable { .. } => StreamingError::Unreachable(Unreachable::new(&error)),
                        _ => StreamingError::Network(NetworkError::new(&error)),
                    })?;
                match answer {
                    Ok(Some(response)) => return Ok(response),
                    Ok(None) if !done => offset += filled as u64,
                    Ok(None) => {
                        return Err(StreamingError::Network(NetworkError::new(&std::io::Error::other(
                            "the peer took the last chunk without answering with its vote",
                        ))))
                    }
                    Err(refused) => {
                        return Err(StreamingError::Network(NetworkError::new(&std::io::Error::other(refused))))
                    }
                }
            }
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = send => sent,
        }
    }
}
