//! The peer protocol's HTTP face: Raft RPCs, forwarded writes, read-index requests and status
//! probes from other nodes, and the upgrade to a leader's append stream. What each call does is
//! the raft crate's ([`fleetlog_raft::consensus::peer::server`]); this module checks the caller and moves the
//! bytes. Every call must present the cluster secret when one is configured.
//!
//! The secret is checked from the headers before a byte of the body is read, and before a stream
//! is switched to: a caller without it gets its refusal at once, whatever it claims to send. A
//! body is then read within the client timeout (408 `body_timeout`) and up to
//! [`PEER_BODY_BYTES_MAX`] (413 `body_too_large`).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fleetlog_raft::consensus::peer::append_stream::UPGRADE_PROTOCOL;
use fleetlog_raft::consensus::peer::client::{path, secret_matches, SECRET_HEADER};
use fleetlog_raft::consensus::peer::server::{self as peer_server, CallError, PeerCall};
use hyper_util::rt::TokioIo;

use crate::input::read_body;
use crate::limits::PEER_BODY_BYTES_MAX;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    let router = PeerCall::ALL.into_iter().fold(Router::new(), |router, call| {
        router.route(call.path(), post(move |state: State<AppState>, request: Request| answer(call, state, request)))
    });
    router.route(path::APPEND_STREAM, get(append_stream))
}

/// Checks the secret from the headers, then reads the body and answers the call.
async fn answer(call: PeerCall, State(app): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(refusal) = check_secret(&app, &parts.headers) {
        return refusal.into_response();
    }
    let bytes = match read_body(&parts.headers, body, PEER_BODY_BYTES_MAX, app.client_timeout).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal.into_response(),
    };
    match peer_server::answer(&app.node, call, &bytes).await {
        Ok(answer) => ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response(),
        Err(error @ CallError::Undecodable(_)) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
        Err(error @ CallError::Unencodable(_)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}

/// Switches the connection to a leader's append stream, once the secret checks out.
async fn append_stream(State(app): State<AppState>, mut request: Request) -> Response {
    if let Err(refusal) = check_secret(&app, request.headers()) {
        return refusal.into_response();
    }
    let asked = request.headers().get(header::UPGRADE).and_then(|value| value.to_str().ok());
    if asked != Some(UPGRADE_PROTOCOL) {
        return (StatusCode::UPGRADE_REQUIRED, format!("this path takes an upgrade to {UPGRADE_PROTOCOL}"))
            .into_response();
    }
    let upgrade = hyper::upgrade::on(&mut request);
    let node = app.node.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(connection) => peer_server::serve_append_stream(node, TokioIo::new(connection)).await,
            Err(error) => tracing::warn!(%error, "append stream: the upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    response
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
