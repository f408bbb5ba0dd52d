//! `GET /v1/services/{service}/releases`: a service's releases with their timelines, and its
//! environments.

use serde::{Deserialize, Serialize};

use crate::deployment::Step;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleasesView {
    pub service: String,
    /// Oldest first.
    pub releases: Vec<ReleaseView>,
    pub environments: Vec<EnvironmentView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseView {
    pub service: String,
    pub release: String,
    pub created: Step,
    pub blocked: bool,
    pub blocked_reason: Option<String>,
    pub artifact: Option<String>,
    /// When its newest commit was made (`release.created`'s `data.committed_at`).
    pub committed_at: Option<String>,
    pub notes: Option<String>,
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEntry {
    /// `created`, `blocked`, `wave.started`, `rolled_back`, … (docs/api.md lists them).
    pub kind: String,
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub env: Option<String>,
    pub deployment: Option<String>,
    pub wave: Option<String>,
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvironmentView {
    pub service: String,
    pub env: String,
    pub desired_release: Option<String>,
    pub active_deployment: Option<String>,
    pub frozen: bool,
    pub freeze_reason: Option<String>,
}
