//! Typed conveniences: each builds one domain event from a small body and appends it through
//! the same path as `POST /v1/events`. Body fields that are not envelope fields become the
//! event's `data`, so the ledger's own checks (unknown fields, required reasons) apply.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, ExpectedVersion, ProposedEvent};
use fleetlog_types as types;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::input::{canonical_data, optional_string, JsonObject, PathParams};
use crate::state::AppState;

/// One domain event built from a request.
struct Command {
    event_type: &'static str,
    /// Envelope fields read from the body.
    envelope: &'static [&'static str],
    /// Envelope fields fixed by the path.
    fixed: Vec<(&'static str, String)>,
    /// Data members added by the path.
    data: Vec<(&'static str, Value)>,
    /// Data members the body may give, with the value taken when it does not.
    defaults: Vec<(&'static str, Value)>,
}

impl Command {
    fn new(event_type: &'static str, envelope: &'static [&'static str]) -> Command {
        Command { event_type, envelope, fixed: Vec::new(), data: Vec::new(), defaults: Vec::new() }
    }

    fn fixed(mut self, name: &'static str, value: String) -> Command {
        self.fixed.push((name, value));
        self
    }

    fn data(mut self, name: &'static str, value: Value) -> Command {
        self.data.push((name, value));
        self
    }

    fn default_data(mut self, name: &'static str, value: Value) -> Command {
        self.defaults.push((name, value));
        self
    }

    fn build(self, headers: &HeaderMap, mut body: Map<String, Value>) -> ApiResult<ProposedEvent> {
        let header_key = match headers.get("idempotency-key") {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| ApiError::bad_request("invalid_parameter", "Idempotency-Key must be visible ASCII"))?
                    .to_string(),
            ),
            None => None,
        };
        let id = match optional_string(&body, "id")?.or(header_key) {
            Some(id) => id,
            None => uuid::Uuid::new_v4().to_string(),
        };
        body.remove("id");
        let mut event = ProposedEvent::new(id, self.event_type);
        event.stream = optional_string(&body, "stream")?;
        body.remove("stream");
        let set = |event: &mut ProposedEvent, name: &str, value: Option<String>| match name {
            "service" => event.service = value,
            "env" => event.env = value,
            "host" => event.host = value,
            "release" => event.release = value,
            _ => event.deployment = value,
        };
        for name in self.envelope {
            let value = optional_string(&body, name)?;
            body.remove(*name);
            set(&mut event, name, value);
        }
        for (name, value) in self.fixed {
            if body.remove(name).is_some() {
                return Err(ApiError::invalid(
                    "field_not_allowed",
                    format!("{name} comes from the path, not the body"),
                ));
            }
            set(&mut event, name, Some(value));
        }
        for (name, value) in self.data {
            if body.insert(name.to_string(), value).is_some() {
                return Err(ApiError::invalid(
                    "field_not_allowed",
                    format!("{name} comes from the path, not the body"),
                ));
            }
        }
        for (name, value) in self.defaults {
            body.entry(name.to_string()).or_insert(value);
        }
        event.data = canonical_data(&Value::Object(body))?;
        Ok(event)
    }
}

/// Appends one event and answers with it as committed (201), or the original (200, replay).
async fn run(
    app: AppState,
    principal: Principal,
    headers: HeaderMap,
    body: Map<String, Value>,
    command: Command,
) -> ApiResult<Response> {
    let event = command.build(&headers, body)?;
    // An agent acts only for the hosts its token names, whichever field names the host.
    let allowed = match &event.host {
        Some(host) => principal.require_host(host),
        None if principal.role == Role::Agent => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "an agent's command must name one of its hosts"))
        }
        None => Ok(()),
    };
    if let Err(refusal) = allowed {
        app.metrics.refused();
        return Err(refusal);
    }
    let request = AppendRequest { events: vec![event], expected_version: ExpectedVersion::Any, actor: principal.name };
    let (seq, duplicate) = match app.append(request).await? {
        AppendOutcome::Appended { events, duplicate } => (events[0].seq, duplicate),
        AppendOutcome::Rejected(rejection) => return Err(rejection.into()),
    };
    app.wait_applied(seq).await?;
    let event = app.event(seq).await?.ok_or_else(|| ApiError::internal(format!("appended event {seq} is missing")))?;
    let status = if duplicate { StatusCode::OK } else { StatusCode::CREATED };
    // The event goes out as its canonical text, the one its hash covers.
    let event = RawValue::from_string(event.canonical_json()).map_err(ApiError::internal)?;
    let body = serde_json::to_vec(&types::CommandAnswer { seq, duplicate, event }).map_err(ApiError::internal)?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn create_release(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    run(app, principal, headers, body, Command::new("release.created", &["service", "release"])).await
}

pub async fn block_release(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams((service, release)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let command = Command::new("release.blocked", &[]).fixed("service", service).fixed("release", release);
    run(app, principal, headers, body, command).await
}

pub async fn unblock_release(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams((service, release)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let command = Command::new("release.unblocked", &[]).fixed("service", service).fixed("release", release);
    run(app, principal, headers, body, command).await
}

pub async fn start_deployment(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    JsonObject(mut body): JsonObject,
) -> ApiResult<Response> {
    if !body.contains_key("deployment") {
        // A retry with the same Idempotency-Key must name the same deployment, or the ledger
        // would see another event under the same id; without a key any fresh id will do.
        let id = match headers.get("idempotency-key") {
            Some(key) => {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(key.as_bytes()))
            }
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        body.insert("deployment".into(), Value::String(format!("dep-{}", &id[..12])));
    }
    run(app, principal, headers, body, Command::new("deployment.started", &["deployment", "service", "env", "release"]))
        .await
}

pub async fn start_wave(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams((deployment, wave)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let command = Command::new("wave.started", &[]).fixed("deployment", deployment).data("wave", wave.into());
    run(app, principal, headers, body, command).await
}

pub async fn complete_wave(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams((deployment, wave)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let command = Command::new("wave.completed", &[]).fixed("deployment", deployment).data("wave", wave.into());
    run(app, principal, headers, body, command).await
}

pub async fn complete_deployment(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams(deployment): PathParams<String>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    run(app, principal, headers, body, Command::new("deployment.completed", &[]).fixed("deployment", deployment)).await
}

pub async fn abort_deployment(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams(deployment): PathParams<String>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    run(app, principal, headers, body, Command::new("deployment.aborted", &[]).fixed("deployment", deployment)).await
}

/// Halts an active deployment: no wave starts until it is resumed. `reason` is required.
pub async fn halt_deployment(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams(deployment): PathParams<String>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    run(app, principal, headers, body, Command::new("deployment.halted", &[]).fixed("deployment", deployment)).await
}

pub async fn resume_deployment(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams(deployment): PathParams<String>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let command = Command::new("deployment.resumed", &[])
        .fixed("deployment", deployment)
        .default_data("reason", Value::String("resumed".into()));
    run(app, principal, headers, body, command).await
}

/// Replaces the release-safety policy of (service, env): the body is `{"policy": {...}}`.
pub async fn set_policy(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams((service, env)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let command = Command::new("policy.set", &[]).fixed("service", service).fixed("env", env);
    run(app, principal, headers, body, command).await
}

pub async fn rollback(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    run(app, principal, headers, body, Command::new("rollback", &["service", "env", "release"])).await
}

pub async fn register_target(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    run(app, principal, headers, body, Command::new("target.registered", &["host", "service", "env"])).await
}

pub async fn deregister_target(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams((service, env, host)): PathParams<(String, String, String)>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let command =
        Command::new("target.deregistered", &[]).fixed("service", service).fixed("env", env).fixed("host", host);
    run(app, principal, headers, body, command).await
}

pub async fn report(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    run(app, principal, headers, body, Command::new("host.reported", &["host", "service", "env", "release"])).await
}

pub async fn start_freeze(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    run(app, principal, headers, body, Command::new("freeze.started", &["service", "env"])).await
}

pub async fn end_freeze(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams((service, env)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let command = Command::new("freeze.ended", &[])
        .fixed("service", service)
        .fixed("env", env)
        .default_data("reason", Value::String("freeze ended".into()));
    run(app, principal, headers, body, command).await
}

/// Sets the freeze calendar of the (service, env) the body names, or with neither the global one.
pub async fn set_calendar(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    run(app, principal, headers, body, Command::new("freeze.calendar.set", &["service", "env"])).await
}
