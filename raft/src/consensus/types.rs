//! The openraft type configuration of fleetlog.

use serde::{Deserialize, Serialize};

use crate::domain::event::{AppendOutcome, LedgerCommand};

openraft::declare_raft_types!(
    /// Types of fleetlog's Raft: ledger commands in, outcomes out.
    pub TypeConfig:
        D = LedgerCommand,
        R = LedgerResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

/// What applying one entry produced: an outcome per request (empty for blank and membership
/// entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerResponse {
    pub outcomes: Vec<AppendOutcome>,
}

use openraft::type_config::alias;

pub type NodeId = u64;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
pub type StorageError = openraft::StorageError<TypeConfig>;
#[cfg(feature = "storage")]
pub type Raft = openraft::Raft<TypeConfig, crate::storage::StateMachine>;
