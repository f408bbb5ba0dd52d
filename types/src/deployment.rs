//! Deployments: one deployment's view, the listing, and the policy's gates of its current wave.

use serde::{Deserialize, Serialize};

/// Who did something, when, at which seq: a deployment's start, a wave's completion, a policy's
/// setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Step {
    pub seq: u64,
    pub time: String,
    pub actor: String,
}

/// A deployment as `GET /v1/deployments` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployment {
    pub deployment: String,
    pub service: String,
    pub env: String,
    pub release: String,
    /// `active`, `completed` or `aborted`.
    pub state: String,
    pub started: Step,
    pub ended: Option<Step>,
    /// The abort reason (`rolled back: …` for a rollback).
    pub end_reason: Option<String>,
    /// The seq of the rollback that ended it.
    pub rolled_back_by: Option<u64>,
    pub selected_total: u64,
    pub halted: Option<Halt>,
    /// The guards its events overrode with `data.force_reason`.
    pub overrides: Vec<Override>,
    pub waves: Vec<Wave>,
}

/// `GET /v1/deployments/{id}`: the deployment with its failed hosts and its gates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentDetail {
    #[serde(flatten)]
    pub deployment: Deployment,
    /// Hosts counted as failed by its waves (at most 100, by name).
    pub failures: Vec<DeploymentFailure>,
    /// Null unless the deployment is active, a wave started, a policy covers it and the view is
    /// asked for now.
    pub gates: Option<GateStatus>,
}

/// `GET /v1/deployments`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentList {
    pub deployments: Vec<Deployment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Halt {
    pub reason: String,
    pub since: Step,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Override {
    pub seq: u64,
    pub guard: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Wave {
    pub name: String,
    /// `pending`, `started` or `completed`.
    pub state: String,
    pub started: Option<Step>,
    pub completed: Option<Step>,
    /// When every selected host had reported.
    pub settled: Option<String>,
    pub hosts: WaveHosts,
    pub selector: Selector,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaveHosts {
    pub selected: u64,
    pub converged: u64,
    pub unhealthy: u64,
    pub failed: u64,
}

/// Which hosts a wave selects: `{"hosts": [...]}`, `{"group": ...}` or `{"percent": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Selector {
    Hosts(Vec<String>),
    Group(String),
    Percent(u8),
}

/// A host a deployment's wave counts as failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentFailure {
    pub host: String,
    pub wave: Option<String>,
    pub observed_release: Option<String>,
    pub message: Option<String>,
    pub attempt: Option<u32>,
    pub seq: Option<u64>,
    pub time: Option<String>,
}

/// Where the current wave stands against each gate of the policy, by the thresholds the
/// policy's evaluator applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateStatus {
    pub wave: String,
    pub wave_state: String,
    pub auto_advance: bool,
    pub max_failed: MaxFailedGate,
    pub min_healthy: MinHealthyGate,
    pub bake: BakeGate,
    /// Null without a deadline.
    pub converge_deadline: Option<DeadlineGate>,
    pub alerts: AlertGate,
    pub now: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaxFailedGate {
    pub allowed: u64,
    pub failed: u64,
    pub passing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MinHealthyGate {
    pub required: u64,
    pub healthy: u64,
    /// Judged once the wave has settled.
    pub passing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BakeGate {
    pub seconds: u64,
    pub settled_since: Option<String>,
    /// Null until the wave has settled.
    pub remaining_seconds: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadlineGate {
    pub seconds: u64,
    pub elapsed_seconds: u64,
    pub passing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertGate {
    pub counted: u64,
    pub passing: bool,
}
