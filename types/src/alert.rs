//! Alerts: Alertmanager's webhook answer and the alerts as the ledger keeps them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::deployment::Step;

/// `POST /v1/alerts/alertmanager`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertmanagerAnswer {
    pub received: u64,
    pub written: u64,
    pub duplicates: u64,
    /// Alerts that named no environment: kept, counted against none.
    pub unmapped: u64,
}

/// `GET /v1/alerts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertList {
    pub alerts: Vec<AlertView>,
}

/// The latest firing of one alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertView {
    pub source: String,
    pub fingerprint: String,
    pub starts_at: String,
    pub service: Option<String>,
    pub env: Option<String>,
    pub host: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `firing` or `resolved`.
    pub state: String,
    pub fired: Option<Step>,
    pub resolved: Option<Step>,
}
