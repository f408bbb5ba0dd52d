//! The peer protocol's receiving side: Raft RPCs, forwarded writes, read-index requests and
//! status probes from other nodes. Bodies are the raft crate's codec; every call must present
//! the cluster secret when one is configured.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
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

use crate::state::AppState;

/// Largest peer body: a replication batch (100 entries of up to 1 MiB) or a snapshot chunk.
const PEER_BODY_MAX: usize = 128 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(path::APPEND_ENTRIES, post(append_entries))
        .route(path::VOTE, post(vote))
        .route(path::INSTALL_SNAPSHOT, post(install_snapshot))
        .route(path::FORWARD_APPEND, post(forward_append))
        .route(path::READ_INDEX, post(read_index))
        .route(path::STATUS, post(status))
        .layer(DefaultBodyLimit::max(PEER_BODY_MAX))
}

/// Why a peer call was not acted on.
type Refusal = (StatusCode, String);

/// Checks the secret and decodes the body.
fn accept<T: DeserializeOwned>(app: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<T, Refusal> {
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
    codec::decode(body).map_err(|error| (StatusCode::BAD_REQUEST, format!("undecodable peer body: {error}")))
}

fn answer<T: Serialize>(value: &T) -> Response {
    match codec::encode(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn append_entries(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match accept(&app, &headers, &body) {
        Ok(request) => answer(&app.node.raft().append_entries(request).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn vote(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match accept(&app, &headers, &body) {
        Ok(request) => answer(&app.node.raft().vote(request).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn install_snapshot(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match accept(&app, &headers, &body) {
        Ok(request) => answer(&app.node.raft().install_snapshot(request).await),
        Err(refusal) => refusal.into_response(),
    }
}

/// A follower's client write, proposed here without forwarding it again.
async fn forward_append(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match accept::<AppendRequest>(&app, &headers, &body) {
        Ok(request) => answer(&app.node.append_here(request, WRITE_TIMEOUT).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn read_index(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match accept::<()>(&app, &headers, &body) {
        Ok(()) => answer(&app.node.read_index_here(WRITE_TIMEOUT).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn status(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match accept::<()>(&app, &headers, &body) {
        Ok(()) => answer(&app.node.local_status()),
        Err(refusal) => refusal.into_response(),
    }
}
