//! The servers an agent talks to: it sticks to one until it fails, then moves on to the next with
//! a growing, jittered pause, so a fleet of agents does not reconnect in lockstep after a node dies.

use anyhow::{bail, Result};
use fleetlog_api::client::{Client, ClientError, Credentials};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backoff::Backoff;

pub struct Servers {
    clients: Vec<Client>,
    current: AtomicUsize,
}

impl Servers {
    /// `urls` is the comma-separated `--server` list. `spread` picks the first server, so agents
    /// started with the same list do not all land on the same node.
    pub fn new(urls: &str, credentials: &Credentials, spread: &str) -> Result<Servers> {
        let clients = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| Client::configured(url, credentials))
            .collect::<Result<Vec<_>, _>>()?;
        if clients.is_empty() {
            bail!("--server needs at least one URL");
        }
        let first = spread.bytes().fold(0usize, |hash, byte| hash.wrapping_mul(31).wrapping_add(byte as usize));
        Ok(Servers { current: AtomicUsize::new(first % clients.len()), clients })
    }

    pub fn current(&self) -> &Client {
        &self.clients[self.current.load(Ordering::Relaxed) % self.clients.len()]
    }

    /// Moves on to the next server after `failed` did not work.
    pub fn next_after(&self, failed: &Client) {
        let failed = self.clients.iter().position(|client| client.base() == failed.base()).unwrap_or(0);
        let _ = self.current.compare_exchange(
            failed,
            (failed + 1) % self.clients.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Posts until some server answers. Unreachable servers and 503s (no leader, shutting down)
    /// move on to the next server; any other answer, success or refusal, is returned.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        let mut backoff = Backoff::new();
        loop {
            if let Some(answer) = self.try_post(path, body).await {
                return answer;
            }
            backoff.wait().await;
        }
    }

    /// One attempt on the current server: `None` when it did not answer usefully (and the next
    /// server is now current).
    pub async fn try_post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Option<Result<T, ClientError>> {
        let client = self.current();
        match client.post_as(path, body).await {
            Err(ClientError::Transport { url, reason }) => {
                tracing::warn!(%url, %reason, "server unreachable; trying the next one");
            }
            Err(ClientError::Api { status: 503, code, message }) => {
                tracing::warn!(server = client.base(), %code, %message, "server unavailable; trying the next one");
            }
            answered => return Some(answered),
        }
        self.next_after(client);
        None
    }
}
