//! Reading untrusted input: bodies (size, UTF-8, JSON), append batches and query parameters.
//! Every failure is an [`ApiError`] with a stable code; nothing here panics on bad input.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use fleetlog_raft::domain::event::{ExpectedVersion, ProposedEvent};
use fleetlog_raft::domain::limits::{BATCH_EVENTS_MAX, EVENT_DATA_BYTES_MAX};
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest request body accepted (SPEC section 7).
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

/// Envelope fields a client may send with an event.
const EVENT_FIELDS: [&str; 9] = ["id", "type", "stream", "service", "env", "host", "release", "deployment", "data"];

/// A request body that is a JSON object (an empty body reads as `{}`).
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> ApiResult<JsonObject> {
        let (parts, body) = request.into_parts();
        let bytes = read_body(&parts.headers, body, BODY_BYTES_MAX, app.client_timeout).await?;
        parse_object(&bytes).map(JsonObject)
    }
}

/// Bytes of a too-long body that are still read, and dropped, before the 413 is sent: a client
/// that sends a little too much then reads the 413 instead of a broken pipe (the answer to a body
/// left unread closes the connection under the client's feet).
const OVERFLOW_DRAIN_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Reads a request body of at most `max_bytes` that must arrive within `timeout`: 408
/// `body_timeout` when it does not, 413 `body_too_large` beyond the size (refused before reading
/// when the `Content-Length` says it is far beyond), 400 `bad_request` when the client breaks off.
pub async fn read_body(headers: &HeaderMap, body: Body, max_bytes: usize, timeout: Duration) -> ApiResult<Vec<u8>> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("bodies here are limited to {max_bytes} bytes"),
        )
    };
    let drain_limit = max_bytes.saturating_add(OVERFLOW_DRAIN_BYTES_MAX);
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > drain_limit as u64) {
        return Err(too_large());
    }
    let read = async {
        // A declared length within the limit is allocated once (it can only be that large).
        let capacity = declared.filter(|length| *length <= max_bytes as u64).unwrap_or(0) as usize;
        let mut bytes = Vec::with_capacity(capacity);
        let mut received = 0usize;
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|error| {
                ApiError::bad_request("bad_request", format!("the request body could not be read: {error}"))
            })?;
            received = received.saturating_add(chunk.len());
            if received > drain_limit {
                return Err(too_large());
            }
            if received <= max_bytes {
                bytes.extend_from_slice(&chunk);
            }
        }
        if received > max_bytes {
            return Err(too_large());
        }
        Ok::<Vec<u8>, ApiError>(bytes)
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {timeout:?}"),
        )
    })?
}

/// Path parameters; a malformed path (such as invalid UTF-8 in a percent escape) is a 400 with
/// the API's error shape instead of axum's plain-text rejection.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<PathParams<T>> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParams(value)),
            Err(rejection) => Err(ApiError::bad_request("invalid_parameter", rejection.body_text())),
        }
    }
}

pub fn parse_object(bytes: &[u8]) -> ApiResult<Map<String, Value>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|error| ApiError::bad_request("invalid_utf8", format!("the body is not UTF-8: {error}")))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("malformed_json", "the body must be a JSON object")),
        Err(error) => Err(ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {error}"))),
    }
}

/// Fails with `unknown_field` when `map` has a key outside `allowed`.
pub fn only_fields(map: &Map<String, Value>, allowed: &[&str], what: &str) -> ApiResult<()> {
    match map.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(ApiError::invalid("unknown_field", format!("{what} has no field {key:?}"))),
        None => Ok(()),
    }
}

/// An optional string field; `null` counts as absent.
pub fn optional_string(map: &Map<String, Value>, name: &str) -> ApiResult<Option<String>> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::invalid("invalid_field", format!("{name} must be a string"))),
    }
}

pub fn required_string(map: &Map<String, Value>, name: &str) -> ApiResult<String> {
    optional_string(map, name)?.ok_or_else(|| ApiError::invalid("missing_field", format!("{name} is required")))
}

/// Parses `POST /v1/events`: `{"events": [...], "expected_version"?: ...}`.
pub fn parse_append(body: &Map<String, Value>) -> ApiResult<(Vec<ProposedEvent>, ExpectedVersion)> {
    only_fields(body, &["events", "expected_version"], "an append")?;
    let items = match body.get("events") {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err(ApiError::invalid("missing_field", "events is required")),
        Some(_) => return Err(ApiError::invalid("invalid_field", "events must be an array")),
    };
    if items.is_empty() {
        return Err(ApiError::invalid("empty_batch", "a batch needs at least one event"));
    }
    if items.len() > BATCH_EVENTS_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("a batch holds at most {BATCH_EVENTS_MAX} events, this one has {}", items.len()),
        ));
    }
    let expected = parse_expected_version(body.get("expected_version"))?;
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(ApiError::invalid("invalid_field", "each event must be a JSON object").at(index));
        };
        events.push(parse_event(map).map_err(|error| error.at(index))?);
    }
    Ok((events, expected))
}

fn parse_expected_version(value: Option<&Value>) -> ApiResult<ExpectedVersion> {
    match value {
        None | Some(Value::Null) => Ok(ExpectedVersion::Any),
        Some(Value::String(text)) => match text.as_str() {
            "any" => Ok(ExpectedVersion::Any),
            "no_stream" => Ok(ExpectedVersion::NoStream),
            "exists" => Ok(ExpectedVersion::Exists),
            _ => Err(invalid_expected_version()),
        },
        Some(Value::Number(number)) => number.as_u64().map(ExpectedVersion::Exact).ok_or_else(invalid_expected_version),
        Some(_) => Err(invalid_expected_version()),
    }
}

fn invalid_expected_version() -> ApiError {
    ApiError::invalid(
        "invalid_field",
        "expected_version is \"any\", \"no_stream\", \"exists\" or the stream's last version (a whole number)",
    )
}

/// One event object of an append. A missing id gets a fresh UUID (then a retry is not
/// idempotent: clients that retry send their own ids).
pub fn parse_event(map: &Map<String, Value>) -> ApiResult<ProposedEvent> {
    only_fields(map, &EVENT_FIELDS, "an event")?;
    let id = optional_string(map, "id")?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut event = ProposedEvent::new(id, required_string(map, "type")?);
    event.stream = optional_string(map, "stream")?;
    event.service = optional_string(map, "service")?;
    event.env = optional_string(map, "env")?;
    event.host = optional_string(map, "host")?;
    event.release = optional_string(map, "release")?;
    event.deployment = optional_string(map, "deployment")?;
    event.data = match map.get("data") {
        None | Some(Value::Null) => "{}".to_string(),
        Some(data @ Value::Object(_)) => canonical_data(data)?,
        Some(_) => return Err(ApiError::invalid("data_not_object", "data must be a JSON object")),
    };
    Ok(event)
}

/// Canonical text of an event's data, within the size limit.
pub fn canonical_data(data: &Value) -> ApiResult<String> {
    let text = fleetlog_raft::domain::canonical::to_canonical_string(data)
        .map_err(|error| ApiError::invalid("unsafe_number", format!("data: {error}")))?;
    if text.len() > EVENT_DATA_BYTES_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "event_too_large",
            format!("data is {} bytes encoded; the limit is {EVENT_DATA_BYTES_MAX}", text.len()),
        ));
    }
    Ok(text)
}

/// Query parameters, checked against the names an endpoint accepts.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn new(raw: HashMap<String, String>, allowed: &[&str]) -> ApiResult<Params> {
        if let Some(unknown) = raw.keys().find(|key| !allowed.contains(&key.as_str()) && key.as_str() != "consistency")
        {
            return Err(ApiError::bad_request("invalid_parameter", format!("unknown query parameter {unknown:?}")));
        }
        if let Some(consistency) = raw.get("consistency") {
            if consistency != "local" && consistency != "linearizable" {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    "consistency is \"linearizable\" (the default) or \"local\"",
                ));
            }
        }
        Ok(Params(raw))
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    pub fn number(&self, name: &str) -> ApiResult<Option<u64>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(text) => text.parse::<u64>().map(Some).map_err(|_| {
                ApiError::bad_request("invalid_parameter", format!("{name} must be a whole number, not {text:?}"))
            }),
        }
    }

    pub fn time(&self, name: &str) -> ApiResult<Option<i64>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(text) => fleetlog_raft::domain::event::parse_time(text).map(Some).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("{name} must be an RFC 3339 time such as 2026-11-28T06:00:00Z, not {text:?}"),
                )
            }),
        }
    }

    /// `limit`, defaulting to `default` and refused above `maximum`.
    pub fn limit(&self, default: u64, maximum: u64) -> ApiResult<usize> {
        let limit = self.number("limit")?.unwrap_or(default);
        if limit == 0 || limit > maximum {
            return Err(ApiError::bad_request("invalid_parameter", format!("limit must be 1 to {maximum}")));
        }
        Ok(limit as usize)
    }

    /// True unless the client asked for `consistency=local`.
    pub fn linearizable(&self) -> bool {
        self.0.get("consistency").map(String::as_str) != Some("local")
    }
}
