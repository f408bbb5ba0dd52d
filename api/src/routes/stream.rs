//! `GET /v1/subscribe` and `GET /v1/watch/{host}` when they arrive through the HTTP router (a
//! stream requested on a connection that already carried other requests). Connections that
//! start with a stream are served by [`crate::streams::direct`] instead; both run the same
//! stream code.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::input::PathParams;
use crate::state::AppState;
use crate::streams::{self, ChannelSink, Opened};

/// Messages buffered per stream between its task and the response body.
const STREAM_BUFFER_MESSAGES: usize = 16;

fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<&str>> {
    match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::bad_request("invalid_parameter", "Last-Event-ID must be text")),
        None => Ok(None),
    }
}

fn respond(app: AppState, opened: Opened) -> Response {
    let (sender, receiver) = mpsc::channel::<Bytes>(STREAM_BUFFER_MESSAGES);
    tokio::spawn(async move {
        let mut sink = ChannelSink { sender, send_timeout: app.send_timeout };
        if let Err(end) = opened.run(&app, &mut sink).await {
            tracing::debug!(%end, "stream ended");
        }
    });
    let body = Body::from_stream(ReceiverStream::new(receiver).map(Ok::<_, Infallible>));
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

pub async fn subscribe(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let opened = streams::open(&app, &principal, "/v1/subscribe", query, last_event_id(&headers)?).await?;
    Ok(respond(app, opened))
}

pub async fn watch(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParams(host): PathParams<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let opened = streams::open(&app, &principal, &format!("/v1/watch/{host}"), query, last_event_id(&headers)?).await?;
    Ok(respond(app, opened))
}
