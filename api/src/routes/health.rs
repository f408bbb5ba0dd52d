//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleetlog_types as types;

use crate::error::ApiError;
use crate::state::AppState;

pub async fn healthz() -> Json<types::Health> {
    Json(types::Health { status: "ok".to_string() })
}

/// Ready when this node knows a leader and has applied everything in its log.
pub async fn readyz(State(app): State<AppState>) -> Response {
    if !app.node.is_ready() {
        return ApiError::unavailable("not_ready", "this node has no leader or is still applying its log")
            .into_response();
    }
    // A node that cannot sign checkpoints yet is not ready to serve auditors either; the
    // identity is among the first entries a new cluster applies.
    if !matches!(app.node.identity(), Ok(Some(_))) {
        return ApiError::unavailable(
            "not_ready",
            "this node has not applied the cluster's identity and checkpoint key yet",
        )
        .into_response();
    }
    let ready = types::Ready { status: "ready".to_string(), head_seq: app.node.feed().head_seq() };
    (StatusCode::OK, Json(ready)).into_response()
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    let status = app.node.local_status();
    let is_leader = status.leader == Some(status.id);
    let gauges = [
        ("fleetlog_head_seq", "Seq of the last applied event.", app.node.feed().head_seq() as f64),
        ("fleetlog_raft_term", "Current Raft term.", status.term as f64),
        (
            "fleetlog_raft_last_log_index",
            "Index of the last Raft log entry.",
            status.last_log_index.unwrap_or(0) as f64,
        ),
        (
            "fleetlog_raft_applied_index",
            "Index of the last applied Raft log entry.",
            status.applied_index.unwrap_or(0) as f64,
        ),
        ("fleetlog_raft_is_leader", "1 when this node is the leader.", if is_leader { 1.0 } else { 0.0 }),
        (
            "process_cpu_seconds_total",
            "CPU time (user + system) this process has used, in seconds.",
            crate::metrics::cpu_seconds("self"),
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory of this process.",
            crate::metrics::resident_bytes("self") as f64,
        ),
    ];
    let body = app.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
