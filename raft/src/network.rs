//! openraft's network over HTTP: each RPC is one POST to the peer's API listener with a codec
//! body (see [`crate::peers`]), bounded by the TTL openraft gives it. A connection failure is
//! reported as `Unreachable`, so openraft backs off instead of hammering a dead peer. An
//! append-entries call carries at most a few megabytes; the rest goes in the next call.

use std::sync::Arc;

use openraft::error::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, EntryPayload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::peers::{path, PeerError, Peers};
use crate::types::{Entry, LogId, NodeId, SnapshotMeta, TypeConfig};

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

fn rpc_error<E: std::error::Error>(error: PeerError) -> RPCError<TypeConfig, E> {
    match error {
        PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        PeerError::NoAnswer { .. } | PeerError::Refused { .. } => RPCError::Network(NetworkError::new(&error)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = tokio::fs::File;

    async fn append_entries(
        &mut self,
        mut request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let last_sent = keep_within_budget(&mut request.entries);
        let response = self.rpc(path::APPEND_ENTRIES, &request, &option).await?;
        Ok(match (response, last_sent) {
            // The peer took everything it was sent, which was a prefix of what openraft asked for.
            (AppendEntriesResponse::Success, Some(last)) => AppendEntriesResponse::PartialSuccess(Some(last)),
            (response, _) => response,
        })
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
                let answer: crate::snapshot_receiver::ChunkAnswer = self
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

#[cfg(test)]
mod tests {
    use openraft::vote::leader_id_adv::CommittedLeaderId;
    use openraft::EntryPayload;

    use super::*;
    use crate::event::{AppendRequest, ExpectedVersion, LedgerCommand, ProposedEvent};

    fn entry(index: u64, data_bytes: usize) -> Entry {
        let mut event = ProposedEvent::new(format!("e-{index}"), "test.note");
        event.data = format!("{{\"pad\":\"{}\"}}", "x".repeat(data_bytes));
        let request = AppendRequest { events: vec![event], expected_version: ExpectedVersion::Any, actor: "t".into() };
        let command = LedgerCommand { time_micros: 1, requests: vec![request], identity: None };
        Entry {
            log_id: LogId::new(CommittedLeaderId { term: 1, node_id: 1 }, index),
            payload: EntryPayload::Normal(command),
        }
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
