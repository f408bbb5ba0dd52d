//! Sends the agent's reports. Only the newest report matters: one that could not be delivered
//! yet is replaced by a newer one, and delivery is retried across servers until it succeeds, so
//! the fleet view converges even when reports were attempted during an outage.

use fleetlog_types as types;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::agent::servers::Servers;
use crate::agent::state::SaidHealth;
use crate::agent::Identity;
use crate::backoff::Backoff;

#[derive(Clone, Debug)]
pub struct Report {
    pub seq: u64,
    pub release: String,
    pub status: &'static str,
    pub message: Option<String>,
    /// Which start of the command this is about (a command interrupted by a crash runs again).
    pub attempt: u32,
    /// The host's health, once the agent's check has said one: every report carries it, so a
    /// report that replaces an undelivered one loses no change of health.
    pub health: Option<SaidHealth>,
}

impl Report {
    /// The event id is derived from what is reported, so a retry after an unknown outcome is
    /// recognised by the ledger as the same report instead of being recorded twice.
    fn body<'a>(&'a self, identity: &'a Identity) -> ReportBody<'a> {
        let mut hasher = Sha256::new();
        for part in [&identity.host, &identity.service, &identity.env, &self.release, self.status] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hasher.update(self.seq.to_be_bytes());
        hasher.update(self.attempt.to_be_bytes());
        if let Some(health) = &self.health {
            hasher.update([u8::from(health.healthy)]);
            hasher.update(health.changes.to_be_bytes());
        }
        let digest = hasher.finalize();
        let id = hex::encode(&digest[..16]);
        ReportBody {
            id: format!("agent-report-{id}"),
            host: &identity.host,
            service: &identity.service,
            env: &identity.env,
            release: &self.release,
            status: self.status,
            applied_seq: self.seq,
            message: self.message.as_deref(),
            health: self.health.as_ref().map(|health| if health.healthy { "healthy" } else { "unhealthy" }),
        }
    }
}

/// The body of `POST /v1/reports`.
#[derive(Serialize)]
struct ReportBody<'a> {
    id: String,
    host: &'a str,
    service: &'a str,
    env: &'a str,
    release: &'a str,
    status: &'a str,
    applied_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    /// Left out when the agent has no check: the host's health stays as it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<&'a str>,
}

pub fn spawn(servers: std::sync::Arc<Servers>, identity: Identity) -> watch::Sender<Option<Report>> {
    let (sender, mut receiver) = watch::channel::<Option<Report>>(None);
    tokio::spawn(async move {
        while receiver.changed().await.is_ok() {
            let Some(report) = receiver.borrow_and_update().clone() else { continue };
            let body = report.body(&identity);
            let mut backoff = Backoff::new();
            // One request at a time: were an older report still in flight when a newer one is
            // sent, the ledger could record them in the wrong order.
            loop {
                match servers.try_post::<types::CommandAnswer>("/v1/reports", &body).await {
                    Some(Ok(_)) => tracing::debug!(seq = report.seq, status = report.status, "reported"),
                    Some(Err(error)) => {
                        tracing::error!(%error, seq = report.seq, status = report.status, "report refused")
                    }
                    None => {
                        backoff.wait().await;
                        // A newer report replaces this one (the outer loop sees the change).
                        if !receiver.has_changed().unwrap_or(true) {
                            continue;
                        }
                    }
                }
                break;
            }
        }
    });
    sender
}
