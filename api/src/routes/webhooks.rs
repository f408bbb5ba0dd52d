//! Webhooks (decision 102): `POST /v1/webhooks` registers one and answers its secret, once;
//! `GET /v1/webhooks` lists them with their delivery progress; `DELETE /v1/webhooks/{id}`
//! removes one. Registrations are events (`webhook.added`, `webhook.removed`) checked by the
//! ledger like any other, so nothing is answered before it is committed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, ExpectedVersion, ProposedEvent};
use fleetlog_raft::domain::webhooks::{self, Format, Webhook};
use fleetlog_types as types;
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::input::{canonical_data, JsonObject, PathParams};
use crate::state::AppState;

/// Members of the body of `POST /v1/webhooks`.
const ADD_FIELDS: [&str; 3] = ["url", "events", "format"];

pub async fn add(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonObject(mut body): JsonObject,
) -> ApiResult<(StatusCode, Json<types::WebhookCreated>)> {
    if let Some(unknown) = body.keys().find(|name| !ADD_FIELDS.contains(&name.as_str())) {
        return Err(ApiError::invalid("unknown_field", format!("a webhook has no field {unknown:?}")));
    }
    body.entry("format").or_insert_with(|| Value::String(Format::Fleetlog.as_str().into()));
    if let Some(Value::String(url)) = body.get("url") {
        // The ledger checks the scheme and host; the delivering client must be able to parse it too.
        if reqwest::Url::parse(url).is_err() {
            return Err(ApiError::invalid("invalid_field", format!("url {url:?} is not a URL")));
        }
    }
    // The secret comes from the cluster's identity: without one (a cluster not yet formed) the
    // webhook could not be told its secret, so nothing is written.
    let identity = app
        .node
        .identity()
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::unavailable("no_identity", "the cluster has not recorded its identity yet"))?;
    let id = format!("wh-{}", hex::encode(rand::random::<[u8; 8]>()));
    body.insert("webhook".into(), Value::String(id.clone()));
    let mut event = ProposedEvent::new(uuid::Uuid::new_v4().to_string(), webhooks::ADDED);
    event.stream = Some(webhooks::stream(&id));
    event.data = canonical_data(&Value::Object(body))?;
    let seq = append_one(&app, principal, event).await?;
    let listed = app.read(true, webhooks::list).await?;
    let webhook = listed
        .iter()
        .find(|webhook| webhook.id == id)
        .ok_or_else(|| ApiError::internal(format!("webhook {id} added at seq {seq} is not in the list")))?;
    let secret = webhooks::secret(&identity, &id);
    Ok((StatusCode::CREATED, Json(types::WebhookCreated { webhook: view(&app, webhook), secret })))
}

pub async fn list(State(app): State<AppState>) -> ApiResult<Json<types::WebhookList>> {
    let listed = app.read(true, webhooks::list).await?;
    Ok(Json(types::WebhookList { webhooks: listed.iter().map(|webhook| view(&app, webhook)).collect() }))
}

pub async fn remove(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams(id): PathParams<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<types::WebhookRemoved>> {
    if let Some(unknown) = body.keys().next() {
        return Err(ApiError::invalid("unknown_field", format!("removing a webhook takes no field, not {unknown:?}")));
    }
    let listed = app.read(true, webhooks::list).await?;
    if !listed.iter().any(|webhook| webhook.id == id) {
        return Err(ApiError::not_found("unknown_webhook", format!("no webhook {id:?}")));
    }
    // One id per webhook: a retried removal is a duplicate, answered with the first one's seq.
    let mut event = ProposedEvent::new(format!("webhook-removed:{id}"), webhooks::REMOVED);
    event.stream = Some(webhooks::stream(&id));
    event.data = canonical_data(&json!({ "webhook": id }))?;
    let seq = append_one(&app, principal, event).await?;
    Ok(Json(types::WebhookRemoved { id, seq }))
}

/// Appends one event as the caller and waits until this node has applied it.
async fn append_one(app: &AppState, principal: Principal, event: ProposedEvent) -> ApiResult<u64> {
    let request = AppendRequest { events: vec![event], expected_version: ExpectedVersion::Any, actor: principal.name };
    let seq = match app.append(request).await? {
        AppendOutcome::Appended { events, .. } => events[0].seq,
        AppendOutcome::Rejected(rejection) => return Err(rejection.into()),
    };
    app.wait_applied(seq).await?;
    Ok(seq)
}

/// A webhook as listed: its recorded progress, or what the delivery running here knows.
fn view(app: &AppState, webhook: &Webhook) -> types::WebhookView {
    let live = app.webhooks.get(&webhook.id);
    let acknowledged_seq =
        live.as_ref().map_or(webhook.acknowledged_seq, |live| live.acknowledged_seq.max(webhook.acknowledged_seq));
    types::WebhookView {
        id: webhook.id.clone(),
        url: webhook.url.clone(),
        events: webhook.events.clone(),
        format: webhook.format.as_str().to_string(),
        added_seq: webhook.added_seq,
        added_by: webhook.added_by.clone(),
        acknowledged_seq,
        last_error: live.and_then(|live| live.last_error),
    }
}
