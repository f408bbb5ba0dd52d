//! One host's directives: its state first, then every change of its desired release.

use bytes::Bytes;
use fleetlog_raft::feed::{Feed, HostReceiver};
use fleetlog_raft::ledger::Directive;
use fleetlog_raft::views;
use serde_json::json;
use tokio::sync::broadcast;

use super::{push_message, Live, LiveStep, Source, StreamEnd};
use crate::error::ApiResult;
use crate::state::AppState;
use crate::wire;

/// Directives read from disk per catch-up step (per environment of the host).
const CATCH_UP_DIRECTIVES: usize = 1_000;

pub struct HostSource {
    host: String,
}

impl HostSource {
    pub fn new(host: String) -> HostSource {
        HostSource { host }
    }
}

/// The `state` message a fresh watch starts with: the host's desired state in every
/// environment as of the seq it names.
pub async fn state_message(app: &AppState, host: &str) -> ApiResult<(u64, Bytes)> {
    let name = host.to_string();
    let (seq, records) = app.read(false, move |kv| views::watch_state(kv, &name)).await?;
    let state = json!({
        "seq": seq,
        "host": host,
        "targets": records.iter().map(wire::host).collect::<Vec<_>>(),
    });
    let mut text = String::new();
    push_message(&mut text, seq, "state", &state.to_string());
    Ok((seq, Bytes::from(text)))
}

fn push_directives<'a>(directives: impl Iterator<Item = &'a Directive>) -> Option<Bytes> {
    let mut text = String::new();
    for directive in directives {
        push_message(&mut text, directive.seq, "directive", &wire::directive_json(directive));
    }
    (!text.is_empty()).then(|| Bytes::from(text))
}

impl Source for HostSource {
    type Live = HostLive;

    fn subscribe(&self, feed: &Feed) -> HostLive {
        HostLive { receiver: feed.watch_host(&self.host) }
    }

    async fn read_disk(&self, app: &AppState, from: u64, until: u64) -> Result<(Option<Bytes>, u64), StreamEnd> {
        let host = self.host.clone();
        let (directives, next) = app
            .read(false, move |kv| views::directives_between(kv, &host, from, until, CATCH_UP_DIRECTIVES))
            .await
            .map_err(StreamEnd::Read)?;
        Ok((push_directives(directives.iter()), next))
    }
}

/// The host's own channel: it only carries batches that change this host, so a gap can only
/// be told by the channel itself (it lagged).
pub struct HostLive {
    receiver: HostReceiver,
}

impl Live for HostLive {
    async fn next(&mut self, next: u64) -> LiveStep {
        match self.receiver.recv().await {
            Ok(batch) => LiveStep::Messages {
                text: push_directives(batch.directives.iter().filter(|directive| directive.seq >= next)),
                head_seq: batch.head_seq,
            },
            Err(broadcast::error::RecvError::Lagged(_)) => LiveStep::Gap,
            Err(broadcast::error::RecvError::Closed) => LiveStep::Closed,
        }
    }

    fn disk_until(&self) -> u64 {
        self.receiver.announced()
    }
}
