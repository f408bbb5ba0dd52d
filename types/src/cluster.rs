//! `GET /v1/cluster` and the answers of membership changes.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterStatus {
    /// Null until the first leader has recorded it.
    pub cluster_id: Option<String>,
    /// The verifier string auditors pin.
    pub checkpoint_key: Option<String>,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub nodes: Vec<NodeView>,
    pub this_node: ThisNode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeView {
    pub id: u64,
    pub addr: String,
    /// `leader`, `follower` (a voter) or `learner`.
    pub role: String,
    /// False when the node did not answer its status probe; its indexes are then null.
    pub reachable: bool,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The leader's last log index minus the node's applied index.
    pub lag: Option<u64>,
}

/// The node that answered, as it sees itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThisNode {
    pub id: u64,
    pub leader_id: Option<u64>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}
