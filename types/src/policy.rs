//! `GET /v1/policies/{service}/{env}`: a release-safety policy as set, every member filled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Number;

use crate::deployment::Step;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyView {
    pub service: String,
    pub env: String,
    pub policy: Policy,
    /// The `policy.set` in force.
    pub set: Step,
    /// The seq asked about; null for now.
    pub as_of_seq: Option<u64>,
}

/// A policy in the shape `policy.set` takes in `data.policy`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Policy {
    #[serde(flatten)]
    pub defaults: WaveGates,
    pub first_wave_extra_bake_seconds: u64,
    /// Settings of particular waves, by wave name; absent when none has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<BTreeMap<String, WaveGates>>,
    /// Label matchers; absent: every alert of the (service, env) counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<BTreeMap<String, String>>>,
    /// `rollback`, `halt` or `none`.
    pub on_trip: String,
    pub auto_advance: bool,
    /// `halt` or `ignore`.
    pub no_data: String,
}

/// The gates of a wave; a member a wave's own settings leave out is absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaveGates {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converge_deadline_seconds: Option<u64>,
}

/// A number of hosts: `{"count": N}`, or a share `{"percent": P}` (min_healthy) or
/// `{"ratio": R}` (max_failed), whole shares written whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Amount {
    Count(u64),
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    Percent(Number),
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    Ratio(Number),
}
