//! openraft's network over HTTP: each RPC is one POST to the peer's API listener with a codec
//! body (see [`crate::peers`]), bounded by the TTL openraft gives it. A connection failure is
//! reported as `Unreachable`, so openraft backs off instead of hammering a dead peer.

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::peers::{path, PeerError, Peers};
use crate::types::{NodeId, TypeConfig};

#[derive(Clone)]
pub struct PeerNetwork {
    peers: Arc<Peers>,
}

impl PeerNetwork {
    pub fn new(peers: Arc<Peers>) -> PeerNetwork {
        PeerNetwork { peers }
    }
}

/// The connection to one peer. Connections are pooled by the shared client, so this is cheap.
pub struct PeerConnection {
    peers: Arc<Peers>,
    target: NodeId,
    address: String,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection { peers: self.peers.clone(), target, address: node.addr.clone() }
    }
}

impl PeerConnection {
    async fn rpc<Request, Response, E>(
        &self,
        path: &str,
        request: &Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Request: Serialize,
        Response: DeserializeOwned,
        E: std::error::Error,
        RaftError<NodeId, E>: DeserializeOwned,
    {
        let answer: Result<Response, RaftError<NodeId, E>> =
            self.peers.call(self.target, &self.address, path, request, option.hard_ttl()).await.map_err(rpc_error)?;
        answer.map_err(|error| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, error)))
    }
}

fn rpc_error<E: std::error::Error>(error: PeerError) -> RPCError<NodeId, BasicNode, E> {
    match error {
        PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        PeerError::NoAnswer { .. } | PeerError::Refused { .. } => RPCError::Network(NetworkError::new(&error)),
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(path::APPEND_ENTRIES, &request, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.rpc(path::INSTALL_SNAPSHOT, &request, &option).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(path::VOTE, &request, &option).await
    }
}
