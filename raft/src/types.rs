//! The openraft type configuration of fleetlog.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::event::{AppendOutcome, LedgerCommand};

openraft::declare_raft_types!(
    /// Types of fleetlog's Raft: ledger commands in, outcomes out, snapshots as files.
    pub TypeConfig:
        D = LedgerCommand,
        R = LedgerResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

// `declare_raft_types!` names `Cursor` in its defaults even when they are overridden.
#[allow(dead_code)]
type DefaultSnapshotData = Cursor<Vec<u8>>;

/// What applying one entry produced: an outcome per request (empty for blank and membership
/// entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerResponse {
    pub outcomes: Vec<AppendOutcome>,
}

pub type NodeId = u64;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;
