//! Webhook deliveries (decision 102): on the leader only, one task per webhook POSTs each
//! committed event its filters match, in seq order, signed, retried until acknowledged; the
//! last acknowledged seq is recorded in the log so that a restart or a new leader resumes there.
//!
//! - `mod.rs`: the supervisor, which starts and stops the tasks as leadership and the list of
//!   webhooks change, and what the deliveries tell `GET /v1/webhooks` (`Live`).
//! - `delivery.rs`: one webhook's task: read, filter, send, retry, record progress.
//! - `render.rs`: an event as a receiver is sent it, in the webhook's format.

mod delivery;
pub mod render;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetlog_raft::consensus::node::{Node, WeakNode};
use fleetlog_raft::domain::webhooks::{self, Webhook};
use tokio::task::JoinHandle;

/// Time a receiver has to answer a delivery unless configured otherwise.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between two attempts at one delivery unless configured otherwise.
pub const RETRY_PAUSE_MAX: Duration = Duration::from_secs(60);
/// How often the supervisor looks at leadership and the list when nothing is applied.
const TICK: Duration = Duration::from_millis(250);

/// Settings of the deliveries.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// Time a receiver has to answer before the attempt counts as failed.
    pub timeout: Duration,
    /// Cap of the doubling pause between attempts.
    pub retry_pause_max: Duration,
}

impl Default for WebhookOptions {
    fn default() -> WebhookOptions {
        WebhookOptions { timeout: TIMEOUT, retry_pause_max: RETRY_PAUSE_MAX }
    }
}

/// What the deliveries running on this node know beyond the log: the newest acknowledgement (the
/// log's record may be a second behind) and why the current attempt failed.
#[derive(Default)]
pub struct Live {
    states: Mutex<HashMap<String, LiveState>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveState {
    pub acknowledged_seq: u64,
    pub last_error: Option<String>,
}

impl Live {
    pub fn get(&self, id: &str) -> Option<LiveState> {
        self.lock().get(id).cloned()
    }

    fn acknowledged(&self, id: &str, seq: u64) {
        self.lock().insert(id.to_string(), LiveState { acknowledged_seq: seq, last_error: None });
    }

    fn failed(&self, id: &str, acknowledged_seq: u64, error: String) {
        self.lock().insert(id.to_string(), LiveState { acknowledged_seq, last_error: Some(error) });
    }

    fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveState>> {
        // A panicked delivery leaves a map that is still whole: each update is one insert.
        self.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Starts the supervisor for `node`; it ends when the node is gone.
pub fn spawn(node: &Node, live: Arc<Live>, options: WebhookOptions) {
    tokio::spawn(supervise(node.downgrade(), live, options));
}

/// Keeps one delivery task per webhook running while this node leads. A task ends by itself
/// when it sees leadership gone (recording its progress first); a removed webhook's task is
/// stopped here.
async fn supervise(weak: WeakNode, live: Arc<Live>, options: WebhookOptions) {
    let Some(node) = weak.upgrade() else { return };
    let mut applied = node.feed().head();
    drop(node);
    let client = match delivery::http_client() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhooks: cannot build the HTTP client; no deliveries from this node");
            return;
        }
    };
    let mut tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            changed = applied.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        applied.borrow_and_update();
        tasks.retain(|_, task| !task.is_finished());
        let Some(node) = weak.upgrade() else { break };
        if !node.is_leader() {
            continue;
        }
        let current = match current_webhooks(&node).await {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(%error, "webhooks: cannot read the list");
                continue;
            }
        };
        tasks.retain(|id, task| {
            let kept = current.iter().any(|(webhook, _)| webhook.id == *id);
            if !kept {
                task.abort();
                live.forget(id);
            }
            kept
        });
        for (webhook, secret) in current {
            if tasks.contains_key(&webhook.id) {
                continue;
            }
            let id = webhook.id.clone();
            let task = delivery::Delivery {
                node: weak.clone(),
                webhook,
                secret,
                live: live.clone(),
                options: options.clone(),
                client: client.clone(),
            };
            tasks.insert(id, tokio::spawn(task.run()));
        }
    }
    for task in tasks.values() {
        task.abort();
    }
}

/// The webhooks of the applied state, each with its secret.
async fn current_webhooks(node: &Node) -> Result<Vec<(Webhook, String)>, String> {
    let database = node.database().clone();
    let listed = tokio::task::spawn_blocking(move || webhooks::list(&database.consistent_reader()?))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let identity = node
        .identity()
        .map_err(|error| error.to_string())?
        .ok_or_else(|| "the cluster has no identity yet".to_string())?;
    Ok(listed
        .into_iter()
        .map(|webhook| {
            let secret = webhooks::secret(&identity, &webhook.id);
            (webhook, secret)
        })
        .collect())
}
