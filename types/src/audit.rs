//! RFC 9162 proofs. Hashes are base64. (Checkpoints are signed notes, served as text.)

use serde::{Deserialize, Serialize};

/// `GET /v1/proofs/inclusion`: the audit path of the event `seq` in the tree of `tree_size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InclusionProof {
    pub seq: u64,
    pub leaf_index: u64,
    pub tree_size: u64,
    pub hashes: Vec<String>,
}

/// `GET /v1/proofs/consistency`: the tree of `from_size` events is a prefix of `to_size`'s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsistencyProof {
    pub from_size: u64,
    pub to_size: u64,
    pub hashes: Vec<String>,
}
