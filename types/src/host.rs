//! Hosts: the host object of the fleet, host, diff and watch answers, and the watch stream's
//! messages.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One host in one (service, env). A fleet view of ten thousand hosts serialises these straight
/// from the server's records, so every text member borrows; a client reads [`Host`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostView<'a> {
    pub host: Cow<'a, str>,
    pub service: Cow<'a, str>,
    pub env: Cow<'a, str>,
    pub group: Option<Cow<'a, str>>,
    pub labels: Cow<'a, BTreeMap<String, String>>,
    pub registered: bool,
    pub desired_release: Option<Cow<'a, str>>,
    pub desired_seq: Option<u64>,
    /// `wave.started` or `rollback`.
    pub desired_cause: Option<Cow<'a, str>>,
    pub deployment: Option<Cow<'a, str>>,
    /// The release the host runs: a failed install leaves the previous one.
    pub observed_release: Option<Cow<'a, str>>,
    /// The newest report: its status, the release it was about, its message.
    pub status: Option<Cow<'a, str>>,
    pub reported_release: Option<Cow<'a, str>>,
    pub message: Option<Cow<'a, str>>,
    pub applied_seq: Option<u64>,
    pub reported_seq: Option<u64>,
    pub reported_at: Option<String>,
    pub failure: Option<FailureView<'a>>,
    /// What the host's own health check said last (agents with `--check`); null: never said.
    pub health: Option<HealthView<'a>>,
    pub converged: bool,
    pub changed_seq: u64,
}

/// A host as a client holds it.
pub type Host = HostView<'static>;

/// The newest failed install of a host that has not reported running since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailureView<'a> {
    pub release: Cow<'a, str>,
    pub message: Option<Cow<'a, str>>,
    /// Failed reports in a row for that release.
    pub attempt: u32,
    pub seq: u64,
    pub time: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthView<'a> {
    /// `healthy` or `unhealthy`.
    pub state: Cow<'a, str>,
    pub message: Option<Cow<'a, str>>,
    pub seq: u64,
    pub time: String,
}

/// `GET /v1/fleet`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetView<'a> {
    pub as_of_seq: u64,
    pub hosts: Vec<HostView<'a>>,
    pub summary: FleetSummary<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetSummary<'a> {
    /// Hosts per desired release.
    pub desired: Cow<'a, BTreeMap<String, u64>>,
    /// Hosts per observed release.
    pub observed: Cow<'a, BTreeMap<String, u64>>,
    pub converged: u64,
    /// Hosts with a failed install.
    pub failing: u64,
    pub total: u64,
}

/// `GET /v1/hosts/{host}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostDocument<'a> {
    pub host: Cow<'a, str>,
    pub as_of_seq: u64,
    /// The host in every service and env it was registered in, as of the moment.
    pub targets: Vec<HostView<'a>>,
    /// Versions of those records, newest first.
    pub history: Vec<HostView<'a>>,
}

/// The watch stream's first message (`event: state`) for a fresh watch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WatchState<'a> {
    pub seq: u64,
    pub host: Cow<'a, str>,
    pub targets: Vec<HostView<'a>>,
}

/// A watch stream's `directive` message: a host's desired release changed. Rendered once per
/// watcher of a changed host, so the server fills it with borrowed text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Directive<'a> {
    pub seq: u64,
    pub host: Cow<'a, str>,
    pub service: Cow<'a, str>,
    pub env: Cow<'a, str>,
    pub release: Cow<'a, str>,
    /// `wave.started` (with the deployment) or `rollback`.
    pub cause: Cow<'a, str>,
    pub deployment: Option<Cow<'a, str>>,
}

/// `GET /v1/fleet/diff`: hosts whose registration, desired or observed release differ between
/// two moments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetDiff<'a> {
    pub from_seq: u64,
    pub to_seq: u64,
    pub changed: u64,
    pub hosts: Vec<HostChange<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostChange<'a> {
    pub host: Cow<'a, str>,
    pub service: Cow<'a, str>,
    pub env: Cow<'a, str>,
    /// Null for a host that had no record yet at `from`.
    pub before: Option<HostView<'a>>,
    pub after: HostView<'a>,
}
