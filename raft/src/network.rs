//! openraft's network over HTTP: each RPC is one POST to the peer's API listener with a codec
//! body (see [`crate::peers`]), bounded by the TTL openraft gives it. A connection failure is
//! reported as `Unreachable`, so openraft backs off instead of hammering a dead peer. An
//! append-entries call carries at most a few megabytes; the rest goes in the next call.

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, EntryPayload};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::peers::{path, PeerError, Peers};
use crate::types::{Entry, LogId, NodeId, TypeConfig};

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

/// Most bytes of entries one append-entries call carries. openraft gives every such call one
/// heartbeat interval (100 ms) to finish, the follower's fsync included, and bounds calls by entry
/// count only, while one entry may hold a megabyte of events.
const APPEND_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Rough bytes of an entry or event beyond the events' data.
const OVERHEAD_BYTES: usize = 256;

/// Drops the entries after the byte budget (always keeping the first) and returns the log id of
/// the last one kept when any were dropped.
fn keep_within_budget(entries: &mut Vec<Entry>) -> Option<LogId> {
    let mut bytes = 0;
    let mut kept = 0;
    for entry in entries.iter() {
        bytes += entry_bytes(entry);
        if kept > 0 && bytes > APPEND_BYTES_MAX {
            break;
        }
        kept += 1;
    }
    if kept == entries.len() {
        return None;
    }
    entries.truncate(kept);
    entries.last().map(|entry| entry.log_id)
}

fn entry_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(command) => command
            .requests
            .iter()
            .flat_map(|request| &request.events)
            .map(|event| event.data.len() + OVERHEAD_BYTES)
            .sum::<usize>()
            .max(OVERHEAD_BYTES),
        EntryPayload::Blank | EntryPayload::Membership(_) => OVERHEAD_BYTES,
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
        mut request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let last_sent = keep_within_budget(&mut request.entries);
        let response = self.rpc(path::APPEND_ENTRIES, &request, &option).await?;
        Ok(match (response, last_sent) {
            // The peer took everything it was sent, which was a prefix of what openraft asked for.
            (AppendEntriesResponse::Success, Some(last)) => AppendEntriesResponse::PartialSuccess(Some(last)),
            (response, _) => response,
        })
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::event::{AppendRequest, ExpectedVersion, LedgerCommand, ProposedEvent};

    fn entry(index: u64, data_bytes: usize) -> Entry {
        let mut event = ProposedEvent::new(format!("e-{index}"), "test.note");
        event.data = format!("{{\"pad\":\"{}\"}}", "x".repeat(data_bytes));
        let request = AppendRequest { events: vec![event], expected_version: ExpectedVersion::Any, actor: "t".into() };
        let command = LedgerCommand { time_micros: 1, requests: vec![request], identity: None };
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(command) }
    }

    #[test]
    fn small_batches_go_whole() {
        let mut entries: Vec<Entry> = (1..=100).map(|index| entry(index, 300)).collect();
        assert_eq!(keep_within_budget(&mut entries), None);
        assert_eq!(entries.len(), 100);
    }

    #[test]
    fn large_batches_are_cut_after_the_budget_but_never_empty() {
        let mut entries: Vec<Entry> = (1..=10).map(|index| entry(index, 900 * 1024)).collect();
        let last = keep_within_budget(&mut entries).expect("cut");
        assert_eq!(entries.len(), 2);
        assert_eq!(last.index, 2);
        let mut huge = vec![entry(7, 5 * 1024 * 1024)];
        assert_eq!(keep_within_budget(&mut huge), None, "a single entry always goes");
        assert_eq!(huge.len(), 1);
    }
}
