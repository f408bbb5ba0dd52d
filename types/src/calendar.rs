//! `GET /v1/calendars`: freeze calendars with the windows open now.

use serde::{Deserialize, Serialize};

use crate::deployment::Step;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CalendarList {
    /// This node's clock, which the open windows are judged by.
    pub now: String,
    pub calendars: Vec<CalendarView>,
    /// Present when the listing was asked for one (service, env).
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = FreezeScopeMembers))]
    pub scope: Option<FreezeScope>,
}

/// Whether the (service, env) asked about is frozen now, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FreezeScope {
    pub service: String,
    pub env: String,
    pub frozen: bool,
    /// A manual freeze's reason or the open window; null when not frozen.
    pub why: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CalendarView {
    /// `service/env`, or `global`.
    pub scope: String,
    pub service: Option<String>,
    pub env: Option<String>,
    pub windows: Vec<Window>,
    pub open_now: Vec<OpenWindow>,
    pub set: Step,
}

/// A window in the shape `freeze.calendar.set` takes: recurring (`cron`, `duration`,
/// `time_zone`) or one-off (`start`, `end`); the members of the other kind are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Window {
    /// `deny` or `allow`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenWindow {
    /// The window's position in its calendar.
    pub window: u64,
    pub until: String,
}

/// How the document describes the flattened `Option<FreezeScope>` of [`CalendarList`]: the same
/// members, each absent when no (service, env) was asked for. A flattened `Option` would
/// otherwise be described as "null or a scope", which no object matches.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct FreezeScopeMembers {
    #[schema(required = false)]
    service: String,
    #[schema(required = false)]
    env: String,
    #[schema(required = false)]
    frozen: bool,
    why: Option<String>,
}
