//! A running fleetlog node: storage, the Raft instance, and the operations the API calls.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};

use crate::error::{Error, Result};
use crate::event::{AppendOutcome, AppendRequest, LedgerCommand};
use crate::feed::Feed;
use crate::network::SingleNodeNetwork;
use crate::storage::{Database, LogStore, SnapshotFiles, StateMachine};
use crate::types::{NodeId, Raft};

/// How long a write may wait for commit before its outcome is reported unknown.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries between snapshots. A snapshot dumps the whole ledger, so this is large; the Raft log
/// behind the last snapshot is purged.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 500_000;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Address peers and clients reach this node at.
    pub advertise: String,
}

/// Why a write did not produce an outcome.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("the write was not committed within {0:?}; its outcome is unknown, retry with the same ids")]
    Timeout(Duration),
    #[error("the node cannot write: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    id: NodeId,
    raft: Raft,
    database: Database,
    feed: Feed,
}

fn raft_config() -> Result<Config> {
    let config = Config {
        cluster_name: "fleetlog".into(),
        heartbeat_interval: 100,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: 10_000,
        ..Config::default()
    };
    config.validate().map_err(|error| Error::Raft(error.to_string()))
}

impl Node {
    /// Opens storage and starts Raft. A single-node cluster initialises itself on first start.
    pub async fn start_single(config: NodeConfig) -> Result<Node> {
        std::fs::create_dir_all(&config.data_dir)?;
        let database = Database::open(&config.data_dir.join("db"))?;
        let snapshots = SnapshotFiles::new(config.data_dir.join("snapshots"))?;
        let state_machine = StateMachine::open(database.clone(), snapshots)?;
        let feed = state_machine.feed().clone();
        let log_store = LogStore::new(database.clone());
        let raft = Raft::new(config.node_id, Arc::new(raft_config()?), SingleNodeNetwork, log_store, state_machine)
            .await
            .map_err(|error| Error::Raft(error.to_string()))?;
        let initialized = raft.is_initialized().await.map_err(|error| Error::Raft(error.to_string()))?;
        if !initialized {
            let mut members = BTreeMap::new();
            members.insert(config.node_id, BasicNode { addr: config.advertise.clone() });
            raft.initialize(members).await.map_err(|error| Error::Raft(error.to_string()))?;
            tracing::info!(node = config.node_id, "initialised a new single-node cluster");
        }
        Ok(Node { inner: Arc::new(NodeInner { id: config.node_id, raft, database, feed }) })
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn database(&self) -> &Database {
        &self.inner.database
    }

    pub fn feed(&self) -> &Feed {
        &self.inner.feed
    }

    /// Proposes one request and waits until it is committed on a majority and applied.
    pub async fn append(&self, request: AppendRequest) -> std::result::Result<AppendOutcome, WriteError> {
        let command = LedgerCommand { time_micros: now_micros(), requests: vec![request] };
        let written = tokio::time::timeout(WRITE_TIMEOUT, self.inner.raft.client_write(command))
            .await
            .map_err(|_| WriteError::Timeout(WRITE_TIMEOUT))?;
        match written {
            Ok(response) => response
                .data
                .outcomes
                .into_iter()
                .next()
                .ok_or_else(|| WriteError::Unavailable("the state machine returned no outcome".into())),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(WriteError::NotLeader { leader: forward.leader_id.zip(forward.leader_node.map(|node| node.addr)) })
            }
            Err(error) => Err(WriteError::Unavailable(error.to_string())),
        }
    }

    /// Confirms leadership and waits until the state machine has applied everything committed
    /// before this call: reads after it are linearizable.
    pub async fn ensure_linearizable(&self) -> std::result::Result<(), WriteError> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.inner.raft.ensure_linearizable()).await {
            Err(_) => Err(WriteError::Timeout(WRITE_TIMEOUT)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(forward)))) => {
                Err(WriteError::NotLeader { leader: forward.leader_id.zip(forward.leader_node.map(|node| node.addr)) })
            }
            Ok(Err(error)) => Err(WriteError::Unavailable(error.to_string())),
        }
    }

    /// True when this node knows a leader and has applied what it knows to be committed.
    pub fn is_ready(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics.current_leader.is_some() && metrics.last_applied.map(|id| id.index) >= metrics.last_log_index
    }

    pub fn metrics(&self) -> openraft::RaftMetrics<NodeId, BasicNode> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// Stops Raft; the database closes when the last handle is dropped.
    pub async fn shutdown(&self) {
        if let Err(error) = self.inner.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown");
        }
        if let Err(error) = self.inner.database.sync_wal() {
            tracing::warn!(%error, "final WAL sync");
        }
    }
}

/// The leader's clock, read once per proposal.
pub fn now_micros() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_micros() as i64
}
