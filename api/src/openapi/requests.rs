//! The request bodies, for the document only: the server reads each body as a JSON object and
//! checks its members itself (`input.rs`, the commands, the ledger's validation), so these types
//! are never deserialised. A typed command passes the members it does not name on as the
//! event's `data`, where the ledger checks them; the document lists the ones each command knows.
#![allow(dead_code)]

use std::collections::BTreeMap;

use fleetlog_types::Window;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// `POST /v1/events`: a batch of 1 to 1,000 events, appended atomically.
#[derive(ToSchema)]
pub struct AppendBody {
    pub events: Vec<ProposedEvent>,
    /// `"any"` (the default), `"no_stream"`, `"stream_exists"` or a version number: what the
    /// stream of every event in the batch must be at.
    #[schema(value_type = Option<Object>)]
    pub expected_version: Option<Value>,
}

/// An event to append; the server adds `seq`, `version`, `time`, `actor` and the hashes.
#[derive(ToSchema)]
pub struct ProposedEvent {
    /// The client's id of the event: the same id again is a replay, not a second event.
    pub id: String,
    /// A domain type (`deployment.started`, …) or a namespaced custom one (`myapp.config.changed`).
    #[schema(rename = "type")]
    pub event_type: String,
    pub stream: Option<String>,
    pub service: Option<String>,
    pub env: Option<String>,
    pub host: Option<String>,
    pub release: Option<String>,
    pub deployment: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub data: Option<Map<String, Value>>,
}

/// The members every typed command takes besides its own.
#[derive(ToSchema)]
pub struct CommandBody {
    /// The event's id (wins over `Idempotency-Key`); without either the node makes one up.
    pub id: Option<String>,
    pub stream: Option<String>,
    /// Why, where the event takes a reason (`abort`, `halt`, `resume`, `block`, `unblock`, the
    /// end of a freeze, a deregistration).
    pub reason: Option<String>,
    /// Overrides a guard of the ledger's rules; recorded in the deployment.
    pub force_reason: Option<String>,
    /// Overrides the release-safety policy for this step.
    pub override_reason: Option<String>,
    pub notes: Option<String>,
}

/// `POST /v1/releases`.
#[derive(ToSchema)]
pub struct ReleaseBody {
    pub id: Option<String>,
    pub service: String,
    pub release: String,
    pub artifact: Option<String>,
    pub notes: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub commits: Option<Value>,
}

/// `POST /v1/deployments`.
#[derive(ToSchema)]
pub struct DeploymentBody {
    pub id: Option<String>,
    /// The deployment's id; made up (`dep-` and 12 hex digits) when absent.
    pub deployment: Option<String>,
    pub service: String,
    pub env: String,
    pub release: String,
    pub waves: Option<Vec<WaveBody>>,
    pub description: Option<String>,
    pub force_reason: Option<String>,
    pub override_reason: Option<String>,
}

/// One wave of a deployment: its name and one selector (`hosts`, `group` or `percent`).
#[derive(ToSchema)]
pub struct WaveBody {
    pub name: String,
    pub hosts: Option<Vec<String>>,
    pub group: Option<String>,
    pub percent: Option<u8>,
}

/// `PUT /v1/policies/{service}/{env}`: the release-safety policy (docs/api.md).
#[derive(ToSchema)]
pub struct PolicyBody {
    pub id: Option<String>,
    #[schema(value_type = Object)]
    pub policy: Map<String, Value>,
}

/// `PUT /v1/calendars`: a freeze calendar, global without `service` and `env`.
#[derive(ToSchema)]
pub struct CalendarBody {
    pub id: Option<String>,
    pub service: Option<String>,
    pub env: Option<String>,
    pub windows: Vec<Window>,
}

/// `POST /v1/rollbacks`: back to `release`, or to the last release before the current one.
#[derive(ToSchema)]
pub struct RollbackBody {
    pub id: Option<String>,
    pub service: String,
    pub env: String,
    pub release: Option<String>,
    pub reason: String,
}

/// `POST /v1/targets`: a host joins a (service, env).
#[derive(ToSchema)]
pub struct TargetBody {
    pub id: Option<String>,
    pub host: String,
    pub service: String,
    pub env: String,
    pub group: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// `POST /v1/reports`: what a host runs now.
#[derive(ToSchema)]
pub struct ReportBody {
    pub id: Option<String>,
    pub host: String,
    pub service: String,
    pub env: String,
    pub release: String,
    /// `running`, `failed`, …
    pub status: Option<String>,
    /// The seq of the directive the host applied.
    pub applied_seq: Option<u64>,
    pub message: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub health: Option<Value>,
}

/// `POST /v1/freezes`.
#[derive(ToSchema)]
pub struct FreezeBody {
    pub id: Option<String>,
    pub service: String,
    pub env: String,
    pub reason: String,
}

/// `POST /v1/alerts/alertmanager`: Alertmanager's webhook payload (version 4); each alert
/// becomes one event.
#[derive(ToSchema)]
pub struct AlertmanagerBody {
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<Value>,
}

/// `POST /v1/cdevents` in structured mode: a CloudEvents 1.0 envelope whose `data` is a CDEvent
/// (v0.5.1). The batched mode (`application/cloudevents-batch+json`) sends an array of these;
/// the binary mode sends the envelope's attributes as `ce-` headers and the CDEvent as the body.
#[derive(ToSchema)]
pub struct CloudEventBody {
    /// `1.0`.
    pub specversion: String,
    pub id: String,
    pub source: String,
    /// The CDEvent's type: `dev.cdevents.service.deployed.0.3.0`, `…service.upgraded…`,
    /// `…service.rolledback…`, `…service.removed…`, `…incident.detected…` or
    /// `…incident.resolved…`.
    #[schema(rename = "type")]
    pub event_type: String,
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    /// The CDEvent: `context` (with `type` and `timestamp`) and `subject`.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// `POST /v1/cluster/init`: every member's id and `HOST:PORT`.
#[derive(ToSchema)]
pub struct InitBody {
    pub members: BTreeMap<String, String>,
}

/// `POST /v1/cluster/learners`.
#[derive(ToSchema)]
pub struct LearnerBody {
    pub node_id: u64,
    /// `HOST:PORT`.
    pub addr: String,
}

/// `PUT /v1/cluster/members`: the new set of voters.
#[derive(ToSchema)]
pub struct VotersBody {
    pub voters: Vec<u64>,
}
