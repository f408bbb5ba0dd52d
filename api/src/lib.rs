//! fleetlog-api: the HTTP API (routes, JSON shapes, errors) and the client the CLI uses.
//!
//! - `routes`: handlers. `events` (append, read, stream), `stream` (SSE subscribe and watch via
//!   the router), `views` (fleet, hosts, deployments, releases), `commands` (typed conveniences),
//!   `health`, `cluster` (membership), `peer` (Raft traffic), `audit` (checkpoints, proofs,
//!   export, fleet diff), `webhooks` (registering and listing webhooks).
//! - `webhooks`: delivering the committed log to webhooks, on the leader (decision 102).
//! - `streams`: the SSE streams themselves (catch-up from disk, live channels, heartbeats), and
//!   `streams::direct`, which serves connections that start with a stream without the router.
//! - `listener`: accepts connections and sends each to the router or to `streams::direct`.
//! - `input`: reading untrusted bodies and query strings; `limits`: the HTTP layer's named
//!   bounds (connections, send timeout, shutdown grace); `error`: status + stable code;
//!   `wire`: JSON shapes of views; `state`: the shared handle and the read/write paths.
//! - `openapi`: the OpenAPI document of every route, generated from the `fleetlog-types` shapes.
//! - `client`: a small HTTP client for the CLI (JSON calls and an SSE reader).
//!
//! Only this crate knows JSON shapes (apart from the canonical event form, which is part of the
//! hash contract and lives in `fleetlog-raft`).

pub mod auth;
pub mod cdevents;
pub mod client;
pub mod error;
pub mod gate;
mod http_server;
pub mod input;
pub mod limits;
mod listener;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod streams;
pub mod tls;
pub mod webhooks;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::Router;
use fleetlog_raft::consensus::node::Node;
use tokio::net::{TcpListener, TcpSocket};

use crate::error::ApiError;
use crate::state::{ApiOptions, AppState};

/// Pending connections the listener queues (the kernel caps it at somaxconn).
pub const LISTEN_BACKLOG: u32 = 4_096;

pub fn router(state: AppState) -> Router {
    use routes::{
        alerts, audit, calendars, cdevents, cluster, commands, dashboard, dora, events, health, peer, stream, views,
        webhooks, whoami,
    };
    Router::new()
        .route("/v1/events", post(events::append).get(events::read))
        .route("/v1/events/{seq}", get(events::one))
        .route("/v1/streams/{*stream}", get(events::stream))
        .route("/v1/subscribe", get(stream::subscribe))
        .route("/v1/watch/{host}", get(stream::watch))
        .route("/v1/fleet", get(views::fleet))
        .route("/v1/fleet/diff", get(audit::fleet_diff))
        .route("/v1/checkpoint", get(audit::checkpoint))
        .route("/v1/checkpoint/key", get(audit::checkpoint_key))
        .route("/v1/proofs/inclusion", get(audit::inclusion))
        .route("/v1/proofs/consistency", get(audit::consistency))
        .route("/v1/export", get(audit::export))
        .route("/v1/hosts/{host}", get(views::host))
        .route("/v1/deployments", post(commands::start_deployment).get(views::deployments))
        .route("/v1/deployments/{id}", get(views::deployment))
        .route("/v1/deployments/{id}/waves/{wave}/start", post(commands::start_wave))
        .route("/v1/deployments/{id}/waves/{wave}/complete", post(commands::complete_wave))
        .route("/v1/deployments/{id}/complete", post(commands::complete_deployment))
        .route("/v1/deployments/{id}/abort", post(commands::abort_deployment))
        .route("/v1/deployments/{id}/halt", post(commands::halt_deployment))
        .route("/v1/deployments/{id}/resume", post(commands::resume_deployment))
        .route("/v1/deployments/{id}/decisions", get(views::decisions))
        .route("/v1/policies/{service}/{env}", get(views::policy).put(commands::set_policy))
        .route("/v1/calendars", get(calendars::list).put(commands::set_calendar))
        .route("/v1/dora", get(dora::dora))
        .route("/v1/alerts", get(alerts::list))
        .route("/v1/alerts/alertmanager", post(alerts::alertmanager))
        .route("/v1/cdevents", post(cdevents::receive))
        .route("/v1/releases", post(commands::create_release))
        .route("/v1/services/{service}/releases", get(views::releases))
        .route("/v1/services/{service}/releases/{release}/block", post(commands::block_release))
        .route("/v1/services/{service}/releases/{release}/unblock", post(commands::unblock_release))
        .route("/v1/rollbacks", post(commands::rollback))
        .route("/v1/targets", post(commands::register_target))
        .route("/v1/targets/{service}/{env}/{host}", delete(commands::deregister_target))
        .route("/v1/reports", post(commands::report))
        .route("/v1/freezes", post(commands::start_freeze))
        .route("/v1/freezes/{service}/{env}", delete(commands::end_freeze))
        .route("/v1/webhooks", post(webhooks::add).get(webhooks::list))
        .route("/v1/webhooks/{id}", delete(webhooks::remove))
        .route("/v1/whoami", get(whoami::whoami))
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/cluster/init", post(cluster::init))
        .route("/v1/cluster/learners", post(cluster::add_learner))
        .route("/v1/cluster/members", put(cluster::set_members))
        .route("/v1/cluster/members/{id}", delete(cluster::remove))
        .route("/v1/cluster/members/{id}/promote", post(cluster::promote))
        .merge(peer::routes())
        .route("/", get(dashboard::page))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(openapi::serve))
        // Only matched routes pass the gate; unknown paths and methods reach the fallbacks.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), gate::middleware))
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state)
}

/// Binds a listener with a large backlog.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves the API until `shutdown` resolves, then stops accepting and lets open requests finish
/// within the shutdown grace.
pub async fn serve(
    node: Node,
    listener: TcpListener,
    options: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(node, &options);
    webhooks::spawn(&state.node, state.webhooks.clone(), options.webhooks.clone());
    let closing = state.closing.clone();
    let app = router(state.clone());
    let shutdown = async move {
        shutdown.await;
        // Streams never finish on their own: tell them to end so the connections can drain.
        closing.send_replace(true);
    };
    let tls = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let connections = listener::split(listener, state.clone(), tls);
    let deadlines = http_server::Deadlines {
        header: options.client_timeout,
        send: options.send_timeout,
        shutdown_grace: options.shutdown_grace,
    };
    http_server::serve(connections, app, deadlines, state.metrics.clone(), shutdown).await;
    Ok(())
}
