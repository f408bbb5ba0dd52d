//! Membership endpoints: `GET /v1/cluster`, `POST /v1/cluster/init`, `POST /v1/cluster/learners`,
//! `PUT /v1/cluster/members`, `POST /v1/cluster/members/{id}/promote`,
//! `DELETE /v1/cluster/members/{id}`. Changes run on the leader: a node that is not the leader
//! passes the request on to it once, so clients may send them to any node.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleetlog_raft::consensus::cluster::{ClusterStatus, MembershipError};
use fleetlog_raft::consensus::peer::client::NodeStatus;
use fleetlog_raft::consensus::types::NodeId;
use fleetlog_types as types;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::input::{only_fields, JsonObject, PathParams};
use crate::state::AppState;

/// Marks a request one node passed on to the leader, so it is never passed on twice.
const FORWARDED_HEADER: &str = "x-fleetlog-forwarded";
/// How long a new cluster may take to elect its first leader and record its id before `init`
/// answers anyway.
const FIRST_ELECTION_WAIT: Duration = Duration::from_secs(10);
/// Upper bound for a passed-on change (adding a learner waits for it to catch up).
const FORWARDED_CHANGE_TIMEOUT: Duration = Duration::from_secs(660);

pub async fn status(State(app): State<AppState>) -> Json<types::ClusterStatus> {
    Json(status_document(&app.node.cluster_status().await))
}

pub async fn init(State(app): State<AppState>, JsonObject(body): JsonObject) -> ApiResult<Json<types::ClusterStatus>> {
    only_fields(&body, &["members"], "a cluster init")?;
    let members = parse_members(body.get("members"))?;
    app.node.initialize(members).await.map_err(membership_error)?;
    // Answer with the formed cluster: a leader elected and the cluster id it records applied here.
    let formed = async {
        while !matches!(app.node.identity(), Ok(Some(_))) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let _ = tokio::time::timeout(FIRST_ELECTION_WAIT, formed).await;
    Ok(Json(status_document(&app.node.cluster_status().await)))
}

pub async fn add_learner(
    State(app): State<AppState>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    only_fields(&body, &["node_id", "addr"], "a learner")?;
    let id = node_id(body.get("node_id"), "node_id")?;
    let address = address(body.get("addr"))?;
    let forward =
        Forward { method: Method::POST, path: "/v1/cluster/learners".into(), body: Some(Value::Object(body)) };
    on_leader(&app, &headers, forward, || app.node.add_learner(id, address)).await
}

pub async fn set_members(
    State(app): State<AppState>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    only_fields(&body, &["voters"], "a membership")?;
    let voters = match body.get("voters") {
        Some(Value::Array(items)) => {
            items.iter().map(|item| node_id(Some(item), "voters")).collect::<ApiResult<BTreeSet<_>>>()?
        }
        Some(_) => return Err(ApiError::invalid("invalid_field", "voters must be an array of node ids")),
        None => return Err(ApiError::invalid("missing_field", "voters is required")),
    };
    let forward = Forward { method: Method::PUT, path: "/v1/cluster/members".into(), body: Some(Value::Object(body)) };
    on_leader(&app, &headers, forward, || app.node.set_voters(voters)).await
}

pub async fn promote(
    State(app): State<AppState>,
    headers: HeaderMap,
    PathParams(id): PathParams<u64>,
) -> ApiResult<Response> {
    let forward = Forward { method: Method::POST, path: format!("/v1/cluster/members/{id}/promote"), body: None };
    on_leader(&app, &headers, forward, || app.node.promote(id)).await
}

pub async fn remove(
    State(app): State<AppState>,
    headers: HeaderMap,
    PathParams(id): PathParams<u64>,
) -> ApiResult<Response> {
    let forward = Forward { method: Method::DELETE, path: format!("/v1/cluster/members/{id}"), body: None };
    on_leader(&app, &headers, forward, || app.node.remove(id)).await
}

/// The request as it would be passed on to the leader.
struct Forward {
    method: Method,
    path: String,
    body: Option<Value>,
}

/// Runs a membership change here, or passes the request on to the leader when this node is not it.
async fn on_leader<F, Fut>(app: &AppState, headers: &HeaderMap, forward: Forward, change: F) -> ApiResult<Response>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), MembershipError>>,
{
    match change().await {
        Ok(()) => Ok(Json(status_document(&app.node.cluster_status().await)).into_response()),
        Err(MembershipError::NotLeader { leader: Some((leader, address)) })
            if !headers.contains_key(FORWARDED_HEADER) =>
        {
            pass_on(app, leader, &address, forward).await
        }
        Err(error) => Err(membership_error(error)),
    }
}

async fn pass_on(app: &AppState, leader: NodeId, address: &str, forward: Forward) -> ApiResult<Response> {
    let mut request = app
        .node
        .peers()
        .request(forward.method, leader, address, &forward.path)
        .header(FORWARDED_HEADER, "1")
        .timeout(FORWARDED_CHANGE_TIMEOUT);
    if let Some(body) = &forward.body {
        request = request.json(body);
    }
    let unreachable = |error: reqwest::Error| {
        ApiError::unavailable("leader_unreachable", format!("cannot pass the request on to leader {leader}: {error}"))
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = response.bytes().await.map_err(unreachable)?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn membership_error(error: MembershipError) -> ApiError {
    match error {
        MembershipError::AlreadyInitialized => {
            ApiError::new(StatusCode::CONFLICT, "already_initialized", "this node already belongs to a cluster")
        }
        MembershipError::Invalid(message) => ApiError::invalid("invalid_membership", message),
        MembershipError::NotLeader { .. } => {
            ApiError::unavailable("not_leader", "no leader is known to pass the change on to")
        }
        MembershipError::Timeout(_) => ApiError::unavailable("membership_timeout", error.to_string()),
        MembershipError::Unavailable(message) => ApiError::unavailable("unavailable", message),
        MembershipError::HandingOver { .. } => ApiError::unavailable("leader_handing_over", error.to_string()),
    }
}

fn parse_members(members: Option<&Value>) -> ApiResult<BTreeMap<NodeId, String>> {
    let Some(Value::Object(members)) = members else {
        return Err(ApiError::invalid("missing_field", "members must be an object of node id to HOST:PORT"));
    };
    if members.is_empty() {
        return Err(ApiError::invalid("invalid_membership", "a cluster needs at least one member"));
    }
    let mut parsed = BTreeMap::new();
    for (id, addr) in members {
        let id =
            id.parse::<NodeId>().ok().filter(|id| *id > 0).ok_or_else(|| {
                ApiError::invalid("invalid_field", format!("member id {id:?} is not a positive integer"))
            })?;
        parsed.insert(id, address(Some(addr))?);
    }
    Ok(parsed)
}

fn node_id(value: Option<&Value>, name: &str) -> ApiResult<NodeId> {
    match value {
        Some(Value::Number(number)) => number
            .as_u64()
            .filter(|id| *id > 0)
            .ok_or_else(|| ApiError::invalid("invalid_field", format!("{name} must hold positive integers"))),
        None => Err(ApiError::invalid("missing_field", format!("{name} is required"))),
        Some(_) => Err(ApiError::invalid("invalid_field", format!("{name} must hold positive integers"))),
    }
}

/// A `HOST:PORT` peers can dial.
fn address(value: Option<&Value>) -> ApiResult<String> {
    let Some(Value::String(text)) = value else {
        return Err(ApiError::invalid("invalid_field", "a member address must be a \"HOST:PORT\" string"));
    };
    let valid = match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0) && !text.contains(['/', ' ', '@'])
        }
        None => false,
    };
    if !valid {
        return Err(ApiError::invalid("invalid_field", format!("member address {text:?} is not HOST:PORT")));
    }
    Ok(text.clone())
}

fn status_document(status: &ClusterStatus) -> types::ClusterStatus {
    let leader_log = status
        .members
        .iter()
        .find(|member| Some(member.id) == status.leader_id)
        .and_then(|member| member.report.as_ref())
        .and_then(|report| report.last_log_index);
    let nodes = status
        .members
        .iter()
        .map(|member| {
            let role = if Some(member.id) == status.leader_id {
                "leader"
            } else if member.voter {
                "follower"
            } else {
                "learner"
            };
            let report = member.report.as_ref();
            let applied = report.and_then(|report| report.applied_index);
            types::NodeView {
                id: member.id,
                addr: member.addr.clone(),
                role: role.to_string(),
                reachable: report.is_some(),
                last_log_index: report.and_then(|report| report.last_log_index),
                applied_index: applied,
                lag: leader_log.map(|head| head.saturating_sub(applied.unwrap_or(0))),
            }
        })
        .collect();
    types::ClusterStatus {
        cluster_id: status.cluster_id.clone(),
        checkpoint_key: status.checkpoint_key.clone(),
        leader_id: status.leader_id,
        term: status.term,
        nodes,
        this_node: node_document(&status.this_node),
    }
}

fn node_document(report: &NodeStatus) -> types::ThisNode {
    types::ThisNode {
        id: report.id,
        leader_id: report.leader,
        last_log_index: report.last_log_index,
        applied_index: report.applied_index,
        snapshot_index: report.snapshot_index,
        purged_index: report.purged_index,
    }
}
