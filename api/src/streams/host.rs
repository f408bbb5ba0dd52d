//! One host's directives: its state first, then every change of its desired release.
//!
//! Live, a watcher follows its host with a [`HostFollower`]: it resolves its own directives from
//! the layer changes of its host's environments, so a rollback costs the server one message per
//! environment, and each watcher a little arithmetic.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fleetlog_raft::domain::ledger::Directive;
use fleetlog_raft::domain::records::HostRecord;
use fleetlog_raft::domain::views;
use fleetlog_raft::storage::feed::Feed;
use fleetlog_raft::storage::host_follow::{FollowStep, HostFollower};
use fleetlog_types as types;

use super::{push_message, Live, LiveStep, Source, StreamEnd};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::wire;

/// Directives read from disk per catch-up step (per environment of the host).
const CATCH_UP_DIRECTIVES: usize = 1_000;

pub struct HostSource {
    host: String,
    /// The host's records, read when the stream last caught up from disk.
    caught_up: Arc<Mutex<Option<CaughtUp>>>,
}

/// The host in each of its environments as of `seq`, desired releases resolved.
struct CaughtUp {
    seq: u64,
    records: Vec<HostRecord>,
}

impl HostSource {
    /// A stream resuming from a seq: it reads the host's records when it has caught up.
    pub fn resuming(host: String) -> HostSource {
        HostSource { host, caught_up: Arc::default() }
    }

    /// A fresh watch: the host's `state` message (with the seq it is as of) and a source that
    /// already holds the records it was made from, so a watch that is caught up at once reads
    /// nothing more.
    pub async fn fresh(app: &AppState, host: String) -> ApiResult<(u64, Bytes, HostSource)> {
        let name = host.clone();
        let (seq, records) = app.read(false, move |kv| views::watch_state(kv, &name)).await?;
        let state =
            types::WatchState { seq, host: host.as_str().into(), targets: records.iter().map(wire::host).collect() };
        let state = serde_json::to_string(&state).map_err(ApiError::internal)?;
        let mut text = String::new();
        push_message(&mut text, seq, "state", &state);
        let source = HostSource { host, caught_up: Arc::new(Mutex::new(Some(CaughtUp { seq, records }))) };
        Ok((seq, Bytes::from(text), source))
    }
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
        HostLive { follower: HostFollower::new(feed, &self.host), caught_up: self.caught_up.clone() }
    }

    async fn read_disk(&self, app: &AppState, from: u64, until: u64) -> Result<(Option<Bytes>, u64), StreamEnd> {
        let host = self.host.clone();
        let (directives, next) = app
            .read(false, move |kv| views::directives_between(kv, &host, from, until, CATCH_UP_DIRECTIVES))
            .await
            .map_err(StreamEnd::Read)?;
        Ok((push_directives(directives.iter()), next))
    }

    async fn caught_up(&self, app: &AppState, seq: u64) -> Result<(), StreamEnd> {
        if lock(&self.caught_up).as_ref().is_some_and(|caught_up| caught_up.seq == seq) {
            return Ok(());
        }
        let host = self.host.clone();
        let records =
            app.read(false, move |kv| views::host_state(kv, &host, Some(seq))).await.map_err(StreamEnd::Read)?;
        *lock(&self.caught_up) = Some(CaughtUp { seq, records });
        Ok(())
    }
}

fn lock(caught_up: &Mutex<Option<CaughtUp>>) -> std::sync::MutexGuard<'_, Option<CaughtUp>> {
    caught_up.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The host's live channels, and the records read when the stream last caught up, not yet taken.
pub struct HostLive {
    follower: HostFollower,
    caught_up: Arc<Mutex<Option<CaughtUp>>>,
}

impl Live for HostLive {
    async fn next(&mut self, next: u64) -> LiveStep {
        if let Some(caught_up) = lock(&self.caught_up).take() {
            if self.follower.caught_up(caught_up.seq, caught_up.records) {
                return LiveStep::Gap;
            }
        }
        match self.follower.next(next).await {
            FollowStep::Directives { directives, head_seq } => {
                LiveStep::Messages { text: push_directives(directives.iter()), head_seq }
            }
            FollowStep::Gap => LiveStep::Gap,
            FollowStep::Closed => LiveStep::Closed,
        }
    }

    fn disk_until(&self) -> u64 {
        self.follower.disk_until()
    }
}
