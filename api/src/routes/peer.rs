//! The peer protocol's receiving side: Raft RPCs, forwarded writes, read-index requests and
//! status probes from other nodes. Bodies are the raft crate's codec; every call must present
//! the cluster secret when one is configured.
//!
//! The secret is checked from the headers before a byte of the body is read: a caller without it
//! gets its refusal at once, whatever it claims to send. A body is then read within the client
//! timeout (408 `body_timeout`) and up to [`PEER_BODY_BYTES_MAX`] (413 `body_too_large`).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use fleetlog_raft::codec;
use fleetlog_raft::event::AppendRequest;
use fleetlog_raft::node::WRITE_TIMEOUT;
use fleetlog_raft::peers::{path, secret_matches, SECRET_HEADER};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::input::read_body;
use crate::limits::PEER_BODY_BYTES_MAX;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(path::APPEND_ENTRIES, post(append_entries))
        .route(path::VOTE, post(vote))
        .route(path::INSTALL_SNAPSHOT, post(install_snapshot))
        .route(path::FORWARD_APPEND, post(forward_append))
        .route(path::READ_INDEX, post(read_index))
        .route(path::STATUS, post(status))
}

/// Checks the secret from the headers, then reads the body and decodes it.
async fn accept<T: DeserializeOwned>(app: &AppState, request: Request) -> Result<T, Response> {
    let (parts, body) = request.into_parts();
    check_secret(app, &parts.headers).map_err(IntoResponse::into_response)?;
    let bytes = read_body(&parts.headers, body, PEER_BODY_BYTES_MAX, app.client_timeout)
        .await
        .map_err(IntoResponse::into_response)?;
    codec::decode(&bytes)
        .map_err(|error| (StatusCode::BAD_REQUEST, format!("undecodable peer body: {error}")).into_response())
}

/// Whether the headers carry what a peer call needs: the cluster secret, when one is set.
fn check_secret(app: &AppState, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    match app.node.peers().secret() {
        Some(configured) => {
            let presented = headers.get(SECRET_HEADER).and_then(|value| value.to_str().ok()).unwrap_or("");
            if !secret_matches(configured, presented) {
                return Err((StatusCode::UNAUTHORIZED, "peer call without the cluster secret".to_string()));
            }
        }
        // A server with tokens but no secret (a single node) takes no peer calls at all: they
        // would be a way around its tokens (forwarded appends carry their own actor).
        None if !app.gate.is_open() => {
            return Err((
                StatusCode::FORBIDDEN,
                "this node takes no peer calls: it has tokens but no cluster secret".into(),
            ))
        }
        None => {}
    }
    Ok(())
}

fn answer<T: Serialize>(value: &T) -> Response {
    match codec::encode(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn append_entries(State(app): State<AppState>, request: Request) -> Response {
    match accept(&app, request).await {
        Ok(request) => answer(&app.node.raft().append_entries(request).await),
        Err(refusal) => refusal,
    }
}

async fn vote(State(app): State<AppState>, request: Request) -> Response {
    match accept(&app, request).await {
        Ok(request) => answer(&app.node.raft().vote(request).await),
        Err(refusal) => refusal,
    }
}

async fn install_snapshot(State(app): State<AppState>, request: Request) -> Response {
    match accept(&app, request).await {
        Ok(chunk) => answer(&app.node.receive_snapshot_chunk(chunk).await),
        Err(refusal) => refusal,
    }
}

/// A follower's client write, proposed here without forwarding it again.
async fn forward_append(State(app): State<AppState>, request: Request) -> Response {
    match accept::<AppendRequest>(&app, request).await {
        Ok(request) => answer(&app.node.append_here(request, WRITE_TIMEOUT).await),
        Err(refusal) => refusal,
    }
}

async fn read_index(State(app): State<AppState>, request: Request) -> Response {
    match accept::<()>(&app, request).await {
        Ok(()) => answer(&app.node.read_index_here(WRITE_TIMEOUT).await),
        Err(refusal) => refusal,
    }
}

async fn status(State(app): State<AppState>, request: Request) -> Response {
    match accept::<()>(&app, request).await {
        Ok(()) => answer(&app.node.local_status()),
        Err(refusal) => refusal,
    }
}
