//! Every error answer: `{"error": {"code", "message", "event_index"?, "field"?}}`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, for programs.
    pub code: String,
    /// For people.
    pub message: String,
    /// The position of the offending event in its batch, when one event is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_index: Option<u32>,
    /// The field to blame, as a path (`data.policy.min_healthy.percent`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
