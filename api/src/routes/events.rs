//! The log itself: append, read with filters, one event, one stream.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use fleetlog_raft::domain::event::{push_hex, AppendOutcome, AppendRequest};
use fleetlog_raft::domain::views::{self, EventFilter};
use fleetlog_types as types;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::input::{parse_append, JsonObject, Params, PathParams};
use crate::state::AppState;
use crate::wire;

/// Events one read returns at most (SPEC section 4).
pub const READ_LIMIT_MAX: u64 = 10_000;
const READ_LIMIT_DEFAULT: u64 = 100;
/// Characters of one filter value.
const FILTER_CHARS_MAX: usize = 256;

pub const FILTER_PARAMS: [&str; 10] =
    ["type", "stream", "service", "env", "host", "release", "deployment", "actor", "since", "until"];

pub async fn append(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let (events, expected_version) = parse_append(&body)?;
    // Webhooks are admin's, and their progress the cluster's: their events take their own paths.
    if let Some(event) = events.iter().find(|event| event.event_type.starts_with("webhook.")) {
        return Err(ApiError::invalid(
            "reserved_type",
            format!("{:?} events are written through /v1/webhooks, not appended", event.event_type),
        ));
    }
    let request = AppendRequest { events, expected_version, actor: principal.name };
    outcome_response(app.append(request).await?)
}

/// 201 with the positions of a new batch, 200 for an exact replay:
/// `{"first_seq","last_seq","events":[{"seq","id","hash"}],"duplicate"}`.
pub fn outcome_response(outcome: AppendOutcome) -> ApiResult<Response> {
    match outcome {
        AppendOutcome::Appended { events, duplicate } => {
            let status = if duplicate { StatusCode::OK } else { StatusCode::CREATED };
            // Serialised straight from the outcome, without a JSON value tree: every append
            // answers this, and building one cost a noticeable share of a loaded leader's CPU.
            let answer = types::AppendAnswer {
                first_seq: events.first().map(|event| event.seq),
                last_seq: events.last().map(|event| event.seq),
                events: events
                    .iter()
                    .map(|event| types::AppendedEvent {
                        seq: event.seq,
                        id: Cow::Borrowed(&event.id),
                        hash: Cow::Owned(hex_hash(&event.hash)),
                    })
                    .collect(),
                duplicate,
            };
            let body = serde_json::to_vec(&answer).map_err(ApiError::internal)?;
            Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        AppendOutcome::Rejected(rejection) => Err(rejection.into()),
    }
}

pub fn hex_hash(hash: &[u8; 32]) -> String {
    let mut out = String::with_capacity(64);
    push_hex(&mut out, hash);
    out
}

/// Reads the filter parameters shared by `GET /v1/events`, subscribe and `fleetlog history`.
pub fn parse_filter(params: &Params) -> ApiResult<EventFilter> {
    let text = |name: &str| -> ApiResult<Option<String>> {
        match params.text(name) {
            Some(value)
                if value.is_empty()
                    || value.chars().count() > FILTER_CHARS_MAX
                    || value.chars().any(char::is_control) =>
            {
                Err(ApiError::bad_request(
                    "invalid_parameter",
                    format!("{name} must be 1 to {FILTER_CHARS_MAX} characters without control characters"),
                ))
            }
            other => Ok(other),
        }
    };
    Ok(EventFilter {
        event_type: text("type")?,
        stream: text("stream")?,
        service: text("service")?,
        env: text("env")?,
        host: text("host")?,
        release: text("release")?,
        deployment: text("deployment")?,
        actor: text("actor")?,
        since_micros: params.time("since")?,
        until_micros: params.time("until")?,
    })
}

pub fn beyond_head(seq: u64, head: u64) -> ApiError {
    ApiError::not_found("seq_beyond_head", format!("seq {seq} is beyond the head of the ledger ({head})"))
}

pub async fn read(State(app): State<AppState>, Query(raw): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let mut allowed = FILTER_PARAMS.to_vec();
    allowed.extend(["from_seq", "limit"]);
    let params = Params::new(raw, &allowed)?;
    let filter = parse_filter(&params)?;
    let from_seq = params.number("from_seq")?.unwrap_or(1);
    let limit = params.limit(READ_LIMIT_DEFAULT, READ_LIMIT_MAX)?;
    let page = app
        .read(params.linearizable(), move |kv| {
            let head = views::head(kv)?.seq;
            if from_seq > head + 1 {
                return Ok(Err(beyond_head(from_seq, head)));
            }
            Ok(Ok(views::read_events(kv, &filter, from_seq, limit)?))
        })
        .await??;
    let events: Vec<String> = page.events.iter().map(|event| event.canonical_json()).collect();
    let page =
        types::EventPage { events: Vec::<types::Event>::new(), next_seq: page.next_seq, head_seq: page.head_seq };
    let body = wire::events_document(&events, &page)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub fn parse_seq(text: &str) -> ApiResult<u64> {
    text.parse::<u64>()
        .ok()
        .filter(|seq| *seq >= 1)
        .ok_or_else(|| ApiError::bad_request("invalid_parameter", format!("a seq is a whole number ≥ 1, not {text:?}")))
}

pub async fn one(State(app): State<AppState>, PathParams(seq): PathParams<String>) -> ApiResult<Response> {
    let seq = parse_seq(&seq)?;
    let (event, head) = app.read(true, move |kv| Ok((views::event(kv, seq)?, views::head(kv)?.seq))).await?;
    match event {
        Some(event) => Ok(([(header::CONTENT_TYPE, "application/json")], event.canonical_json()).into_response()),
        None => Err(beyond_head(seq, head)),
    }
}

pub async fn stream(
    State(app): State<AppState>,
    PathParams(stream): PathParams<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    fleetlog_raft::domain::ledger::validate::check_stream_name(&stream)
        .map_err(|rejection| ApiError::bad_request("invalid_parameter", rejection.message))?;
    let params = Params::new(raw, &["from_version", "limit"])?;
    let from_version = params.number("from_version")?.unwrap_or(0);
    let limit = params.limit(READ_LIMIT_DEFAULT, READ_LIMIT_MAX)?;
    let name = stream.clone();
    let (events, last_version) =
        app.read(params.linearizable(), move |kv| views::read_stream(kv, &name, from_version, limit)).await?;
    let Some(last_version) = last_version else {
        return Err(ApiError::not_found("stream_not_found", format!("stream {stream:?} has no events")));
    };
    let next_version = events.last().map_or(from_version, |event| event.version + 1);
    let texts: Vec<String> = events.iter().map(|event| event.canonical_json()).collect();
    let page = types::StreamPage { events: Vec::<types::Event>::new(), stream, last_version, next_version };
    let body = wire::events_document(&texts, &page)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
