//! A running fleetlog node: storage, the Raft instance, and the operations the API calls.
//!
//! Any node accepts writes and linearizable reads. A follower forwards a write to the leader
//! (over [`crate::consensus::peer::client`]) and, for a read, asks the leader for its read index and waits until
//! its own state machine has applied that far.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{LinearizableReadError, RaftError};
use openraft::{BasicNode, Config, ReadPolicy, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::consensus::batcher::Batcher;
use crate::consensus::peer::client::{path, PeerError, Peers};
use crate::consensus::peer::network::PeerNetwork;
use crate::consensus::peer::network::SnapshotChunk;
use crate::consensus::peer::snapshot_receiver::{ChunkAnswer, SnapshotReceiver};
use crate::consensus::types::{NodeId, Raft, TypeConfig};
use crate::domain::event::{AppendOutcome, AppendRequest, ClusterIdentity, LedgerCommand};
use crate::error::{Error, Result};
use crate::storage::disk::DiskGuard;
use crate::storage::feed::Feed;
use crate::storage::{Database, LogStore, SnapshotFiles, StateMachine};

/// How long a write may wait for commit before its outcome is reported unknown.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of entries between snapshots. A snapshot dumps the whole ledger, so this is
/// large; the Raft log behind the last snapshot is purged.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 500_000;
/// Entries kept in the log behind a snapshot, so a briefly absent follower catches up from the
/// log rather than with a whole snapshot.
const LOG_KEPT_BEHIND_SNAPSHOT: u64 = 10_000;
/// Pause between attempts while no leader is known or the known one is unreachable.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How a node comes to belong to a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// The embedded default: a cluster of this one node, initialised on first start.
    SingleNode,
    /// A cluster member: waits to be initialised (`/v1/cluster/init`) or added as a learner.
    AwaitMembership,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Address peers and clients reach this node at.
    pub advertise: String,
    pub bootstrap: Bootstrap,
    /// Where to dial particular peers instead of their member address (proxies, tunnels).
    pub peer_routes: HashMap<NodeId, String>,
    /// Required on every peer call when set.
    pub cluster_secret: Option<String>,
    pub snapshot_every: u64,
    /// Free bytes below which this node refuses appends (see [`crate::storage::disk`]).
    pub disk_reserve_bytes: u64,
    /// Dial peers with https, trusting this CA (PEM); None: plain HTTP.
    pub peer_ca_pem: Option<Vec<u8>>,
}

impl NodeConfig {
    /// The embedded single-node default.
    pub fn single(data_dir: PathBuf, advertise: String) -> NodeConfig {
        NodeConfig {
            node_id: 1,
            data_dir,
            advertise,
            bootstrap: Bootstrap::SingleNode,
            peer_routes: HashMap::new(),
            cluster_secret: None,
            snapshot_every: SNAPSHOT_EVERY_ENTRIES,
            disk_reserve_bytes: crate::storage::disk::RESERVE_BYTES,
            peer_ca_pem: None,
        }
    }
}

/// Why a write (or a linearizable read) did not produce an outcome. Travels between nodes when
/// a follower forwards a write.
#[derive(Clone, Debug, thiserror::Error, Serialize, Deserialize)]
pub enum WriteError {
    #[error("no leader is known; the cluster may be electing one or may have lost its majority")]
    NoLeader,
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("the write was not committed within {0:?}; its outcome is unknown, retry with the same ids")]
    Timeout(Duration),
    #[error("the node cannot write: {0}")]
    Unavailable(String),
    #[error("{0}")]
    DiskFull(String),
}

/// A leader not acknowledged by a quorum for this long counts as cut off (see [`Node::in_contact`]).
pub const QUORUM_CONTACT_MAX: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

/// A handle that does not keep the node alive: background tasks hold this, so dropping the last
/// `Node` closes the database even while they run.
#[derive(Clone)]
pub struct WeakNode {
    inner: std::sync::Weak<NodeInner>,
}

impl WeakNode {
    pub fn upgrade(&self) -> Option<Node> {
        self.inner.upgrade().map(|inner| Node { inner })
    }
}

struct NodeInner {
    id: NodeId,
    advertise: String,
    raft: Raft,
    database: Database,
    feed: Feed,
    peers: Arc<Peers>,
    batcher: Batcher,
    disk: DiskGuard,
    snapshot_receiver: SnapshotReceiver,
}

fn raft_config(snapshot_every: u64) -> Result<Config> {
    let config = Config {
        cluster_name: "fleetlog".into(),
        // Tuned for 2-core machines: a busy node still answers heartbeats within an election
        // timeout. Failover takes about a leader lease (= the maximum) plus one election timeout,
        // ~1.1 s (decision 82).
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 600,
        // The last chunk of a snapshot is answered after the whole ledger is installed.
        install_snapshot_timeout: 120_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every.max(1)),
        max_in_snapshot_log_to_keep: snapshot_every.min(LOG_KEPT_BEHIND_SNAPSHOT),
        max_payload_entries: 100,
        // Neither the state machine nor the committed log id is fsynced when written (only log
        // appends fsync the shared WAL), so a leader restarted after a power cut could come back
        // as leader with a stale commit index and answer a linearizable read from it. Without
        // restore, a restarted node learns the commit index from an election or a leader first.
        enable_leader_restore: Some(false),
        ..Config::default()
    };
    config.validate().map_err(|error| Error::Raft(error.to_string()))
}

fn raft_error(error: impl std::fmt::Display) -> Error {
    Error::Raft(error.to_string())
}

impl Node {
    /// Opens storage and starts Raft. A single-node cluster initialises itself on first start.
    pub async fn start(config: NodeConfig) -> Result<Node> {
        std::fs::create_dir_all(&config.data_dir)?;
        let database = Database::open(&config.data_dir.join("db"))?;
        let snapshots = SnapshotFiles::new(config.data_dir.join("snapshots"))?;
        let state_machine = StateMachine::open(database.clone(), snapshots.clone())?;
        let feed = state_machine.feed().clone();
        let log_store = LogStore::new(database.clone(), snapshots.clone());
        let snapshot_receiver = SnapshotReceiver::new(snapshots);
        let peers = Arc::new(Peers::new(
            config.peer_routes.clone(),
            config.cluster_secret.clone(),
            config.peer_ca_pem.as_deref(),
        )?);
        let network = PeerNetwork::new(peers.clone());
        let raft_config = Arc::new(raft_config(config.snapshot_every)?);
        let raft =
            Raft::new(config.node_id, raft_config, network, log_store, state_machine).await.map_err(raft_error)?;
        let node = Node {
            inner: Arc::new(NodeInner {
                id: config.node_id,
                advertise: config.advertise.clone(),
                batcher: Batcher::start(raft.clone()),
                disk: DiskGuard::new(config.data_dir.clone(), config.disk_reserve_bytes),
                raft,
                database,
                feed,
                peers,
                snapshot_receiver,
            }),
        };
        if config.bootstrap == Bootstrap::SingleNode && !node.raft().is_initialized().await.map_err(raft_error)? {
            node.raft()
                .initialize(BTreeMap::from([(config.node_id, BasicNode { addr: config.advertise.clone() })]))
                .await
                .map_err(raft_error)?;
            tracing::info!(node = config.node_id, "initialised a new single-node cluster");
        }
        tokio::spawn(record_identity_when_leading(node.clone()));
        crate::consensus::policy_runner::spawn(&node);
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn downgrade(&self) -> WeakNode {
        WeakNode { inner: Arc::downgrade(&self.inner) }
    }

    /// Whether this node is the leader it knows of.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow_watched().current_leader == Some(self.inner.id)
    }

    pub fn advertise(&self) -> &str {
        &self.inner.advertise
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn database(&self) -> &Database {
        &self.inner.database
    }

    /// Takes one chunk of a snapshot the leader sends (see [`SnapshotReceiver`]).
    pub async fn receive_snapshot_chunk(&self, chunk: SnapshotChunk) -> ChunkAnswer {
        self.inner.snapshot_receiver.receive(&self.inner.raft, chunk).await
    }

    pub fn feed(&self) -> &Feed {
        &self.inner.feed
    }

    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    /// The leader this node knows of, with its address.
    /// Whether this node is in contact with a working cluster: it knows a leader and, if it is
    /// that leader (of more than one voter), a quorum acknowledged it within
    /// [`QUORUM_CONTACT_MAX`]. A follower cut off from the majority stops knowing a leader within
    /// an election timeout; a leader cut off keeps its role for a while (openraft has no check-quorum) but
    /// stops hearing from a quorum. Streams on a node out of contact go stale, so they are ended.
    pub fn in_contact(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        let Some(leader) = metrics.current_leader else { return false };
        if leader != self.inner.id || metrics.membership_config.membership().voter_ids().count() <= 1 {
            return true;
        }
        metrics
            .last_quorum_acked
            .as_ref()
            .is_some_and(|acked| openraft::Instant::elapsed(&**acked) < QUORUM_CONTACT_MAX)
    }

    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        let leader = metrics.current_leader?;
        let address = metrics.membership_config.membership().get_node(&leader)?.addr.clone();
        Some((leader, address))
    }

    /// Proposes one request and waits until it is committed on a majority and applied, on the
    /// leader: a follower forwards it. Retrying is safe because every event carries an id the
    /// ledger deduplicates, so a retry after a lost leader yields the original positions.
    pub async fn append(&self, request: AppendRequest) -> std::result::Result<AppendOutcome, WriteError> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = match self.append_here(request.clone(), remaining).await {
                Err(WriteError::NotLeader { leader: Some((leader, address)) }) if leader != self.id() => {
                    self.forward_append(leader, &address, &request, remaining).await
                }
                other => other,
            };
            match attempt {
                // Nothing was written by this attempt; another leader may be taking over.
                Err(WriteError::NoLeader | WriteError::NotLeader { .. }) if Instant::now() + RETRY_PAUSE < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(WriteError::NotLeader { .. }) => return Err(WriteError::NoLeader),
                other => return other,
            }
        }
    }

    /// Proposes on this node without forwarding (gathered with concurrent requests into one
    /// entry); the endpoint followers forward to calls this.
    pub async fn append_here(
        &self,
        request: AppendRequest,
        timeout: Duration,
    ) -> std::result::Result<AppendOutcome, WriteError> {
        // Checked where the request arrives and again on the leader it is forwarded to: each
        // node that would store the entry refuses while its own disk is short.
        if let Some(shortage) = self.inner.disk.shortage() {
            return Err(WriteError::DiskFull(shortage));
        }
        self.inner.batcher.append(request, timeout).await
    }

    async fn forward_append(
        &self,
        leader: NodeId,
        address: &str,
        request: &AppendRequest,
        timeout: Duration,
    ) -> std::result::Result<AppendOutcome, WriteError> {
        self.ask_leader(leader, address, path::FORWARD_APPEND, request, timeout).await
    }

    /// One call to the leader whose answer is itself a write result. A request that never left
    /// is as good as no leader (the caller tries again); one that got no answer has an unknown
    /// outcome.
    async fn ask_leader<Request: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        leader: NodeId,
        address: &str,
        path: &str,
        request: &Request,
        timeout: Duration,
    ) -> std::result::Result<T, WriteError> {
        let answer =
            self.peers().call::<_, std::result::Result<T, WriteError>>(leader, address, path, request, timeout).await;
        match answer {
            Ok(result) => result,
            Err(PeerError::Unreachable { .. }) => Err(WriteError::NoLeader),
            Err(PeerError::NoAnswer { .. }) => Err(WriteError::Timeout(WRITE_TIMEOUT)),
            Err(error @ PeerError::Refused { .. }) => Err(WriteError::Unavailable(error.to_string())),
        }
    }

    /// Waits until reads on this node are linearizable: everything committed before this call
    /// is applied here. The leader confirms its leadership with a quorum (read index); a
    /// follower asks the leader for that index and waits until it has applied it.
    pub async fn ensure_linearizable(&self) -> std::result::Result<(), WriteError> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let read_index = match self.leader() {
                Some((leader, _)) if leader == self.id() => self.read_index_here(remaining).await,
                Some((leader, address)) => self.ask_leader(leader, &address, path::READ_INDEX, &(), remaining).await,
                None => Err(WriteError::NoLeader),
            };
            match read_index {
                Ok(index) => return self.wait_applied(index, deadline).await,
                Err(WriteError::NoLeader | WriteError::NotLeader { .. }) if Instant::now() + RETRY_PAUSE < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(WriteError::NotLeader { .. }) => return Err(WriteError::NoLeader),
                Err(error) => return Err(error),
            }
        }
    }

    /// On the leader: the log index a linearizable read must see applied.
    pub async fn read_index_here(&self, timeout: Duration) -> std::result::Result<Option<u64>, WriteError> {
        match tokio::time::timeout(timeout, self.inner.raft.get_read_log_id(ReadPolicy::ReadIndex)).await {
            Err(_) => Err(WriteError::Timeout(WRITE_TIMEOUT)),
            Ok(Ok((read_log_id, _applied))) => Ok(Some(read_log_id.index())),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)))) => {
                Err(WriteError::NotLeader { leader: forward.leader_id.map(|leader| (leader, String::new())) })
            }
            Ok(Err(error)) => Err(WriteError::Unavailable(error.to_string())),
        }
    }

    async fn wait_applied(&self, index: Option<u64>, deadline: Instant) -> std::result::Result<(), WriteError> {
        let Some(index) = index else { return Ok(()) };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.inner
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|_| WriteError::Timeout(WRITE_TIMEOUT))
    }

    /// True when this node knows a leader and has applied what it knows to be committed.
    pub fn is_ready(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.current_leader.is_some() && metrics.last_applied.map(|id| id.index) >= metrics.last_log_index
    }

    pub fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.inner.raft.metrics().borrow_watched().clone()
    }

    /// The cluster's identity, once recorded.
    pub fn identity(&self) -> Result<Option<ClusterIdentity>> {
        crate::domain::ledger::cluster_identity(&self.inner.database.consistent_reader()?)
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

/// Whenever this node leads a cluster that has no identity yet, it proposes one. Ends once the
/// identity is applied here.
async fn record_identity_when_leading(node: Node) {
    let mut metrics = node.raft().metrics();
    loop {
        match node.identity() {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot read the cluster identity"),
        }
        let leading = metrics.borrow_watched().state == ServerState::Leader;
        if leading {
            let identity = new_identity();
            let command = LedgerCommand { time_micros: now_micros(), requests: Vec::new(), identity: Some(identity) };
            match tokio::time::timeout(WRITE_TIMEOUT, node.raft().client_write(command)).await {
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => tracing::warn!(%error, "cannot record the cluster identity yet"),
                Err(_) => tracing::warn!("recording the cluster identity timed out"),
            }
        }
        // Wake on any change of role or applied index, and look again now and then regardless.
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(1), metrics.changed()).await {
            return; // Raft stopped.
        }
    }
}

/// A fresh cluster id and checkpoint signing key, from the operating system's randomness.
fn new_identity() -> ClusterIdentity {
    use rand::RngCore;
    let mut id = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let mut signing_seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut signing_seed);
    ClusterIdentity { cluster_id: hex::encode(id), signing_seed }
}

/// The leader's clock, read once per proposal.
pub fn now_micros() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_micros() as i64
}
