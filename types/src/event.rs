//! Events as served, pages of them, and the answers to appends.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A committed event, as a client reads the canonical JSON text the server serves. Members are
/// declared in canonical (sorted) order, so serialising one gives back the served text for
/// ordinary data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub actor: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Map<String, Value>,
    pub deployment: Option<String>,
    pub env: Option<String>,
    /// Lowercase hex SHA-256 of the event's canonical JSON without this member.
    pub hash: String,
    pub host: Option<String>,
    pub id: String,
    pub prev_hash: String,
    pub release: Option<String>,
    pub seq: u64,
    pub service: Option<String>,
    pub stream: String,
    /// RFC 3339, UTC, six fractional digits.
    pub time: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u64,
}

/// `GET /v1/events`: a page of the log. The server splices the events' canonical texts into the
/// `events` array (it serialises this with no events); a client reads the events as [`Event`]s,
/// or as `Box<serde_json::value::RawValue>` to keep each one's exact text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventPage<E = Event> {
    pub events: Vec<E>,
    /// Where the next page starts.
    pub next_seq: u64,
    pub head_seq: u64,
}

/// `GET /v1/streams/{stream}`: a page of one stream, in version order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamPage<E = Event> {
    pub events: Vec<E>,
    pub stream: String,
    pub last_version: u64,
    pub next_version: u64,
}

/// `GET /v1/deployments/{id}/decisions`: the policy evaluator's events for one deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionList<E = Event> {
    pub events: Vec<E>,
    pub deployment: String,
}

/// The `data` of an event the policy evaluator appended: why it moved or stopped the rollout.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyEventData {
    /// The reason of a rollback or halt; none for a wave step.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub decision: Option<PolicyDecision>,
}

/// What one decision looked at. `observed`, `threshold` and `alerts` differ by gate and are kept
/// as the evaluator wrote them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyDecision {
    #[serde(default)]
    pub gate: Option<String>,
    #[serde(default)]
    pub wave: Option<String>,
    /// The alerts an alert gate counted, each with its fingerprint and labels.
    #[serde(default)]
    pub alerts: Option<Value>,
    #[serde(default)]
    pub observed: Option<Value>,
    #[serde(default)]
    pub threshold: Option<Value>,
    #[serde(default)]
    pub policy_seq: Option<u64>,
}

/// One event of an append's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendedEvent<'a> {
    pub seq: u64,
    pub id: Cow<'a, str>,
    pub hash: Cow<'a, str>,
}

/// `POST /v1/events`: the positions of the batch (201), or of the original for a replay (200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendAnswer<'a> {
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub events: Vec<AppendedEvent<'a>>,
    pub duplicate: bool,
}

/// A typed command's answer: the committed event, so the caller sees what the ledger filled in
/// (a rollback's release, a deployment's id). The server serialises it with `E` the event's
/// canonical text as a raw JSON value; a client reads it with `E = Event`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandAnswer<E = Event> {
    pub seq: u64,
    pub duplicate: bool,
    pub event: E,
}
