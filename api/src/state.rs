//! What every handler shares: the node, metrics and limits, and the two paths every request
//! takes: a write through Raft, or a read from one consistent snapshot of the state machine.

use std::sync::Arc;
use std::time::Duration;

use fleetlog_raft::consensus::node::{Node, WRITE_TIMEOUT};
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, Event};
use fleetlog_raft::domain::kv::KvRead;
use fleetlog_raft::domain::ledger::validate;
use fleetlog_raft::domain::records;
use tokio::sync::{watch, Semaphore};

use crate::error::{ApiError, ApiResult};
use crate::gate::{Gate, GateOptions};
use crate::limits::{CONNECTIONS_MAX, SEND_TIMEOUT, SHUTDOWN_GRACE};
use crate::metrics::Metrics;
use crate::webhooks::{self, WebhookOptions};

/// Concurrent SSE streams (subscribe and watch) one node serves unless configured otherwise.
/// A process may hold 20,000 open files here; the rest is headroom for peers and other requests.
pub const SUBSCRIBERS_MAX: usize = 15_000;

/// Time a client has to send a request head or a body unless configured otherwise.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Concurrent SSE streams beyond which a new one gets 503 `too_many_subscribers`.
    pub subscribers_max: usize,
    /// Tokens and per-token limits.
    pub gate: GateOptions,
    /// Time a client has to send a request head, and again its body; a connection that sends
    /// nothing at first is dropped after it too (slow-loris defence).
    pub client_timeout: Duration,
    /// Open connections beyond which a new one gets 503 `too_many_connections`.
    pub connections_max: usize,
    /// Time a write to a client may make no progress before its connection is closed.
    pub send_timeout: Duration,
    /// Time shutdown waits for open connections before dropping them.
    pub shutdown_grace: Duration,
    /// Serve TLS with this configuration (certificate and key given).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Which labels of an incoming alert name its service, env and host.
    pub alert_labels: AlertLabels,
    /// Timeouts and retries of webhook deliveries.
    pub webhooks: WebhookOptions,
}

/// The label names an incoming alert is mapped by. Every node of a cluster should be given the
/// same: the node that receives a webhook maps its alerts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertLabels {
    pub service: String,
    pub env: String,
    pub host: String,
}

impl Default for AlertLabels {
    fn default() -> AlertLabels {
        AlertLabels { service: "service".into(), env: "env".into(), host: "host".into() }
    }
}

impl Default for ApiOptions {
    fn default() -> ApiOptions {
        ApiOptions {
            subscribers_max: SUBSCRIBERS_MAX,
            gate: GateOptions::default(),
            client_timeout: CLIENT_TIMEOUT,
            connections_max: CONNECTIONS_MAX,
            send_timeout: SEND_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
            tls: None,
            alert_labels: AlertLabels::default(),
            webhooks: WebhookOptions::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub node: Node,
    pub metrics: Arc<Metrics>,
    pub subscribers: Arc<Semaphore>,
    pub gate: Arc<Gate>,
    pub client_timeout: Duration,
    /// One permit per open connection (see `listener`).
    pub connections: Arc<Semaphore>,
    /// Time a write to a client may make no progress before the stream or connection ends.
    pub send_timeout: Duration,
    /// Turns true when the server shuts down, so open streams end and connections drain.
    pub closing: Arc<watch::Sender<bool>>,
    pub alert_labels: Arc<AlertLabels>,
    /// What this node's webhook deliveries know beyond the log (while it leads).
    pub webhooks: Arc<webhooks::Live>,
}

impl AppState {
    pub fn new(node: Node, options: &ApiOptions) -> AppState {
        AppState {
            node,
            metrics: Arc::new(Metrics::default()),
            subscribers: Arc::new(Semaphore::new(options.subscribers_max)),
            gate: Arc::new(Gate::new(options.gate.clone())),
            client_timeout: options.client_timeout,
            connections: Arc::new(Semaphore::new(options.connections_max)),
            send_timeout: options.send_timeout,
            closing: Arc::new(watch::channel(false).0),
            alert_labels: Arc::new(options.alert_labels.clone()),
            webhooks: Arc::new(webhooks::Live::default()),
        }
    }

    /// Checks the request statically, then proposes it and waits for its outcome.
    pub async fn append(&self, request: AppendRequest) -> ApiResult<AppendOutcome> {
        if let Err(rejection) = validate::check_request(&request) {
            self.metrics.rejected(rejection.code);
            return Err(rejection.into());
        }
        let outcome = self.node.append(request).await?;
        match &outcome {
            AppendOutcome::Appended { events, duplicate } => self.metrics.appended(events.len(), *duplicate),
            AppendOutcome::Rejected(rejection) => self.metrics.rejected(rejection.code),
        }
        Ok(outcome)
    }

    /// Runs `query` on a blocking thread against one consistent snapshot. Linearizable unless
    /// the client asked for local reads: the leader confirms it still leads and waits until it
    /// has applied everything committed before the read began.
    pub async fn read<T, F>(&self, linearizable: bool, query: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KvRead) -> fleetlog_raft::Result<T> + Send + 'static,
    {
        if linearizable {
            self.node.ensure_linearizable().await?;
        }
        let database = self.node.database().clone();
        tokio::task::spawn_blocking(move || {
            let reader = database.consistent_reader()?;
            query(&reader)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
    }

    /// Waits until this node has applied `seq`. A write acknowledged through a follower is
    /// committed, but the follower may apply it a moment after the leader answered.
    pub async fn wait_applied(&self, seq: u64) -> ApiResult<()> {
        let mut head = self.node.feed().head();
        let reached = tokio::time::timeout(WRITE_TIMEOUT, head.wait_for(|head| *head >= seq))
            .await
            .map(|waited| waited.map(|_| ()));
        match reached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ApiError::unavailable("unavailable", "the node is shutting down")),
            Err(_) => Err(ApiError::unavailable(
                "apply_timeout",
                format!("seq {seq} is committed but this node has not applied it within {WRITE_TIMEOUT:?}"),
            )),
        }
    }

    /// Reads one committed event.
    pub async fn event(&self, seq: u64) -> ApiResult<Option<Event>> {
        self.read(false, move |kv| fleetlog_raft::domain::views::event(kv, seq)).await
    }

    /// Seq of the ledger head in this node's applied state.
    pub async fn head_seq(&self) -> ApiResult<u64> {
        self.read(false, |kv| Ok(records::head(kv)?.seq)).await
    }
}
