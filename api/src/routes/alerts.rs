//! Alerts in: Prometheus Alertmanager's webhook (payload version 4, unchanged) becomes one
//! `alert.fired` or `alert.resolved` event per alert; and the alerts as the ledger keeps them.
//!
//! An alert maps to the (service, env) its `service` and `env` labels name, and to the host its
//! `host` label names (other label names with `serve --alert-labels`); one that names none is
//! kept unmapped and listed, never dropped. Each
//! event's id derives from (source, fingerprint, startsAt, status), so the webhook Alertmanager
//! retries (it resends whole groups) writes nothing new.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, ExpectedVersion, ProposedEvent};
use fleetlog_raft::domain::ledger::validate::{check_event, check_name, is_name_char};
use fleetlog_raft::domain::limits::{ANNOTATION_CHARS_MAX, LABELS_MAX, LABEL_VALUE_CHARS_MAX, NAME_CHARS_MAX};
use fleetlog_raft::domain::records;
use fleetlog_raft::domain::rejection::RejectionCode;
use fleetlog_types as types;
use serde_json::{json, Map, Value};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::input::{canonical_data, JsonObject, Params};
use crate::state::{AlertLabels, AppState};
use crate::wire;

/// The source named in the events of this webhook.
const SOURCE: &str = "alertmanager";
/// Characters of an alert's `startsAt`, as the ledger keeps it.
const STARTS_AT_CHARS_MAX: usize = 64;
/// Alerts in one payload.
const ALERTS_PER_PAYLOAD_MAX: usize = 1_000;

fn invalid(field: &str, what: &str) -> ApiError {
    let mut error = ApiError::invalid("invalid_alert", format!("{field} {what}"));
    error.field = Some(field.to_string());
    error
}

/// `POST /v1/alerts/alertmanager`: checks the whole payload first (a malformed one writes
/// nothing), then appends each alert's event on its own, so the ones already in the ledger are
/// duplicates and the others are written.
pub async fn alertmanager(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let events = events_of_payload(&body, &app.alert_labels)?;
    let unmapped = events.iter().filter(|event| event.service.is_none()).count() as u64;
    let mut written: u64 = 0;
    for event in &events {
        let request = AppendRequest {
            events: vec![event.clone()],
            expected_version: ExpectedVersion::Any,
            actor: principal.name.clone(),
        };
        match app.append(request).await? {
            AppendOutcome::Appended { duplicate: false, .. } => written += 1,
            AppendOutcome::Appended { duplicate: true, .. } => {}
            // The same firing sent again with other annotations (they often carry a current
            // value): the firing is recorded already, and Alertmanager must not retry forever.
            AppendOutcome::Rejected(rejection) if rejection.code == RejectionCode::IdConflict => {}
            AppendOutcome::Rejected(rejection) => return Err(rejection.into()),
        }
    }
    let received = events.len() as u64;
    Ok(Json(types::AlertmanagerAnswer { received, written, duplicates: received - written, unmapped }).into_response())
}

fn events_of_payload(body: &Map<String, Value>, names: &AlertLabels) -> ApiResult<Vec<ProposedEvent>> {
    if body.get("version").and_then(Value::as_str) != Some("4") {
        return Err(invalid("version", "must be \"4\" (Alertmanager's webhook payload)"));
    }
    let Some(alerts) = body.get("alerts").and_then(Value::as_array) else {
        return Err(invalid("alerts", "must be an array"));
    };
    if alerts.len() > ALERTS_PER_PAYLOAD_MAX {
        return Err(invalid("alerts", &format!("holds at most {ALERTS_PER_PAYLOAD_MAX} alerts")));
    }
    let mut seen = HashSet::new();
    let mut events = Vec::with_capacity(alerts.len());
    for (position, alert) in alerts.iter().enumerate() {
        let path = format!("alerts[{position}]");
        let event = event_of_alert(alert, &path, names)?;
        // Every event is checked before the first is appended, so a payload the ledger would
        // refuse in part writes nothing at all.
        if let Err(rejection) = check_event(&event) {
            return Err(invalid(&path, &format!("is refused by the ledger: {}", rejection.message)));
        }
        if seen.insert(event.id.clone()) {
            events.push(event);
        }
    }
    Ok(events)
}

fn event_of_alert(alert: &Value, path: &str, names: &AlertLabels) -> ApiResult<ProposedEvent> {
    let field = |name: &str| format!("{path}.{name}");
    let Some(alert) = alert.as_object() else { return Err(invalid(path, "must be an object")) };
    let firing = match alert.get("status").and_then(Value::as_str) {
        Some("firing") => true,
        Some("resolved") => false,
        _ => return Err(invalid(&field("status"), "must be \"firing\" or \"resolved\"")),
    };
    let fingerprint = match alert.get("fingerprint").and_then(Value::as_str) {
        Some(text) if !text.is_empty() && text.chars().count() <= NAME_CHARS_MAX => text,
        _ => {
            return Err(invalid(
                &field("fingerprint"),
                &format!("must be a string of 1 to {NAME_CHARS_MAX} characters"),
            ))
        }
    };
    let starts_at = match alert.get("startsAt").and_then(Value::as_str) {
        Some(text) if text.len() <= STARTS_AT_CHARS_MAX && chrono::DateTime::parse_from_rfc3339(text).is_ok() => text,
        _ => return Err(invalid(&field("startsAt"), "must be an RFC 3339 time")),
    };
    let labels = strings(alert.get("labels"), &field("labels"), LABEL_VALUE_CHARS_MAX)?;
    let annotations = strings(alert.get("annotations"), &field("annotations"), ANNOTATION_CHARS_MAX)?;

    // Labels that are not valid names map the alert nowhere: it is kept unmapped.
    let name =
        |label: &str| labels.get(label).filter(|value| check_name(label, value, NAME_CHARS_MAX, is_name_char).is_ok());
    let (service, env, host) = match (name(&names.service), name(&names.env)) {
        (Some(service), Some(env)) => (Some(service.clone()), Some(env.clone()), name(&names.host).cloned()),
        _ => (None, None, None),
    };
    alert_event(AlertFacts { source: SOURCE, firing, fingerprint, starts_at, service, env, host, labels, annotations })
}

/// One firing or resolution of an alert, from any source.
pub(crate) struct AlertFacts<'a> {
    pub source: &'a str,
    pub firing: bool,
    pub fingerprint: &'a str,
    /// When this firing began (RFC 3339): a resolution names the firing it ends by it.
    pub starts_at: &'a str,
    pub service: Option<String>,
    pub env: Option<String>,
    pub host: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The `alert.fired` or `alert.resolved` event of `facts`. Its id derives from (source,
/// fingerprint, starts_at, status), so a source that sends the same thing again writes nothing.
pub(crate) fn alert_event(facts: AlertFacts<'_>) -> ApiResult<ProposedEvent> {
    use sha2::Digest;
    let AlertFacts { source, firing, fingerprint, starts_at, .. } = facts;
    let status = if firing { "firing" } else { "resolved" };
    let digest = sha2::Sha256::digest(format!("{source}\n{fingerprint}\n{starts_at}\n{status}").as_bytes());
    let event_type = if firing { "alert.fired" } else { "alert.resolved" };
    let mut event = ProposedEvent::new(format!("alert/{source}/{}", &hex::encode(digest)[..40]), event_type);
    event.service = facts.service;
    event.env = facts.env;
    event.host = facts.host;
    let data = json!({
        "source": source, "fingerprint": fingerprint, "starts_at": starts_at,
        "labels": facts.labels, "annotations": facts.annotations,
    });
    event.data = canonical_data(&data)?;
    Ok(event)
}

/// An object of strings, cut to what the ledger keeps: at most 64 members (the first by name),
/// each value at most `value_chars_max` characters; label names outside the ledger's set are
/// left out. Alertmanager does not take a refusal for an answer (it retries), so this keeps what
/// it can rather than refusing.
fn strings(value: Option<&Value>, field: &str, value_chars_max: usize) -> ApiResult<BTreeMap<String, String>> {
    let object = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(invalid(field, "must be an object of strings")),
    };
    let mut kept = BTreeMap::new();
    for (name, value) in object {
        let Some(text) = value.as_str() else { return Err(invalid(&format!("{field}.{name}"), "must be a string")) };
        let usable = check_name("label", name, NAME_CHARS_MAX, fleetlog_raft::domain::ledger::validate::is_stream_char);
        if usable.is_ok() && kept.len() < LABELS_MAX {
            kept.insert(name.clone(), text.chars().take(value_chars_max).collect());
        }
    }
    Ok(kept)
}

/// `GET /v1/alerts`: the alerts as the ledger keeps them (the latest firing of each).
/// `state`: `firing` (default), `resolved`, `unmapped` (every alert that named no environment) or
/// `all`; `service` and `env` narrow the list.
pub async fn list(
    State(app): State<AppState>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Json<types::AlertList>> {
    let params = Params::new(raw, &["state", "service", "env"])?;
    let state = params.text("state").unwrap_or_else(|| "firing".to_string());
    if !matches!(state.as_str(), "firing" | "resolved" | "unmapped" | "all") {
        return Err(ApiError::bad_request("invalid_parameter", "state is firing, resolved, unmapped or all"));
    }
    let (service, env) = (params.text("service"), params.text("env"));
    let alerts = app.read(params.linearizable(), move |kv| records::all_alerts(kv)).await?;
    let listed: Vec<types::AlertView> = alerts
        .iter()
        .filter(|alert| match state.as_str() {
            "firing" => alert.firing,
            "resolved" => !alert.firing,
            "unmapped" => alert.service.is_none(),
            _ => true,
        })
        .filter(|alert| service.is_none() || alert.service == service)
        .filter(|alert| env.is_none() || alert.env == env)
        .map(wire::alert)
        .collect();
    Ok(Json(types::AlertList { alerts: listed }))
}
