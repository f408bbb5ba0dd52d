//! `GET /v1/dora`: DORA's four keys over a window, with their bands.

use serde::{Deserialize, Serialize};

use crate::deployment::Step;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DoraReport {
    pub service: Option<String>,
    pub env: Option<String>,
    pub since: String,
    pub until: String,
    pub days: f64,
    pub bands_from: String,
    pub deployment_frequency: DeploymentFrequency,
    pub change_lead_time: MedianDuration,
    pub change_fail_rate: ChangeFailRate,
    pub failed_deployment_recovery_time: MedianDuration,
    /// Every deployment the figures counted (at most 1,000).
    pub deployments: Vec<DoraDeployment>,
    pub recoveries: Vec<DoraRecovery>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentFrequency {
    pub completed: u64,
    pub per_day: f64,
    pub per_week: f64,
    pub band: String,
}

/// A median over samples; null figures without any.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MedianDuration {
    pub median_seconds: Option<f64>,
    pub samples: u64,
    pub band: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeFailRate {
    pub started: u64,
    pub failed: u64,
    pub rate: Option<f64>,
    pub band: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DoraDeployment {
    pub deployment: String,
    pub service: String,
    pub env: String,
    pub release: String,
    pub started_seq: u64,
    pub ended_seq: Option<u64>,
    pub completed_in_window: bool,
    pub failed: bool,
    pub lead_seconds: Option<f64>,
    /// `commit` or `creation`; null without a lead time.
    pub lead_from: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DoraRecovery {
    pub service: String,
    pub env: String,
    pub deployment: Option<String>,
    pub target: String,
    pub failure: Step,
    pub recovered: Step,
    pub seconds: f64,
}
