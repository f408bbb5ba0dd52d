//! Server-Sent Events: `GET /v1/subscribe` (the log, filtered) and `GET /v1/watch/{host}` (one
//! host's desired releases).
//!
//! Each stream is one task running [`follow`]: it catches up from disk, then follows the live
//! feed. It remembers the next seq it owes the client; a live batch that starts past it (the task
//! fell behind the feed's ring) sends it back to disk, so there is never a gap, and anything below
//! it is skipped, so there is never a duplicate. The channel to the client is small and bounded: a
//! slow client slows only its own task, which then falls behind the ring and reads from disk.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use fleetlog_raft::feed::{AppliedBatch, CommittedEvent};
use fleetlog_raft::ledger::Directive;
use fleetlog_raft::views::{self, EventFilter};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ApiError, ApiResult};
use crate::input::{Params, PathParams};
use crate::routes::events::{beyond_head, parse_filter, FILTER_PARAMS};
use crate::state::AppState;
use crate::wire;

/// A `: head <seq>` comment goes out at least this often.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Messages buffered per stream between its task and the client connection.
const STREAM_BUFFER_MESSAGES: usize = 64;
/// Events read from disk per catch-up step.
const CATCH_UP_EVENTS: usize = 1_000;

/// Holds a subscriber slot for the life of a stream.
struct Slot {
    _permit: OwnedSemaphorePermit,
    app: AppState,
}

impl Slot {
    fn take(app: &AppState) -> ApiResult<Slot> {
        let permit = app.subscribers.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable(
                "too_many_subscribers",
                "this node serves its maximum number of streams; try another node",
            )
        })?;
        app.metrics.subscribers_active.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { _permit: permit, app: app.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.app.metrics.subscribers_active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("the client went away")]
    ClientGone,
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("reading the log failed: {0}")]
    Read(ApiError),
}

/// What one kind of stream sends, from disk and from live batches.
trait Source: Send + Sync + 'static {
    /// Messages for seqs from `from` up to `until` read from disk (possibly a first part of
    /// them), and the seq owed next.
    fn read_disk(
        &self,
        app: &AppState,
        from: u64,
        until: u64,
    ) -> impl std::future::Future<Output = Result<(Vec<SseEvent>, u64), StreamEnd>> + Send;

    /// Messages of a live batch for seqs at or after `from`.
    fn read_batch(&self, batch: &AppliedBatch, from: u64) -> Vec<SseEvent>;
}

/// Starts a stream task and answers with its SSE response.
fn spawn_stream<S: Source>(app: AppState, source: S, first: Option<SseEvent>, next: u64) -> ApiResult<Response> {
    let slot = Slot::take(&app)?;
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    tokio::spawn(async move {
        let _slot = slot;
        let result = async {
            if let Some(first) = first {
                send(&sender, first).await?;
            }
            follow(&app, &source, next, &sender).await
        };
        if let Err(end) = result.await {
            tracing::debug!(%end, "stream ended");
        }
    });
    Ok(Sse::new(ReceiverStream::new(receiver).map(Ok::<_, Infallible>)).into_response())
}

async fn send(sender: &mpsc::Sender<SseEvent>, message: SseEvent) -> Result<(), StreamEnd> {
    sender.send(message).await.map_err(|_| StreamEnd::ClientGone)
}

/// Catch up from disk, follow the live feed, and go back to disk whenever the feed skipped ahead.
async fn follow<S: Source>(
    app: &AppState,
    source: &S,
    mut next: u64,
    sender: &mpsc::Sender<SseEvent>,
) -> Result<(), StreamEnd> {
    let feed = app.node.feed().clone();
    // Subscribe before reading the disk, so nothing committed in between is missed.
    let mut live = feed.subscribe();
    let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut closing = app.closing.subscribe();
    if *closing.borrow_and_update() {
        return Err(StreamEnd::ShuttingDown);
    }
    loop {
        loop {
            let head = feed.head_seq();
            if next > head {
                break;
            }
            let (messages, after) = source.read_disk(app, next, head).await?;
            for message in messages {
                send(sender, message).await?;
            }
            if after <= next {
                break;
            }
            next = after;
        }
        'live: loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(batch) => {
                        let Some(first) = batch.events.first() else { continue };
                        if first.event.seq > next {
                            break 'live;
                        }
                        if batch.head_seq < next {
                            continue;
                        }
                        for message in source.read_batch(&batch, next) {
                            send(sender, message).await?;
                        }
                        next = batch.head_seq + 1;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => break 'live,
                    Err(broadcast::error::RecvError::Closed) => return Err(StreamEnd::ShuttingDown),
                },
                _ = beat.tick() => send(sender, heartbeat(feed.head_seq())).await?,
                _ = sender.closed() => return Err(StreamEnd::ClientGone),
                _ = closing.changed() => return Err(StreamEnd::ShuttingDown),
            }
        }
    }
}

fn heartbeat(head_seq: u64) -> SseEvent {
    SseEvent::default().comment(format!("head {head_seq}"))
}

/// The seq to resume from: `Last-Event-ID` (the last seq the client saw) wins over `from_seq`.
fn resume_seq(headers: &HeaderMap, params: &Params) -> ApiResult<Option<u64>> {
    if let Some(value) = headers.get("last-event-id") {
        let text = value.to_str().unwrap_or_default();
        let seen: u64 = text.trim().parse().map_err(|_| {
            ApiError::bad_request("invalid_parameter", format!("Last-Event-ID must be a seq, not {text:?}"))
        })?;
        return Ok(Some(seen.saturating_add(1)));
    }
    params.number("from_seq")
}

/// The log, filtered.
struct LogSource {
    filter: EventFilter,
}

fn event_message(event: &CommittedEvent) -> SseEvent {
    SseEvent::default().id(event.event.seq.to_string()).event(event.event.event_type.as_str()).data(event.json.as_str())
}

impl Source for LogSource {
    async fn read_disk(&self, app: &AppState, from: u64, _until: u64) -> Result<(Vec<SseEvent>, u64), StreamEnd> {
        let filter = self.filter.clone();
        let page = app
            .read(false, move |kv| views::read_events(kv, &filter, from, CATCH_UP_EVENTS))
            .await
            .map_err(StreamEnd::Read)?;
        let messages = page.events.into_iter().map(|event| event_message(&CommittedEvent::new(event))).collect();
        Ok((messages, page.next_seq))
    }

    fn read_batch(&self, batch: &AppliedBatch, from: u64) -> Vec<SseEvent> {
        batch
            .events
            .iter()
            .filter(|event| event.event.seq >= from && self.filter.matches(&event.event))
            .map(|event| event_message(event))
            .collect()
    }
}

pub async fn subscribe(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let mut allowed = FILTER_PARAMS.to_vec();
    allowed.push("from_seq");
    let params = Params::new(raw, &allowed)?;
    let filter = parse_filter(&params)?;
    let head = app.node.feed().head_seq();
    let next = resume_seq(&headers, &params)?.unwrap_or(head + 1).max(1);
    if next > head + 1 {
        return Err(beyond_head(next, head));
    }
    spawn_stream(app, LogSource { filter }, None, next)
}

/// One host's directives.
struct HostSource {
    host: String,
}

fn directive_message(directive: &Directive) -> SseEvent {
    SseEvent::default().id(directive.seq.to_string()).event("directive").data(wire::directive(directive).to_string())
}

impl Source for HostSource {
    async fn read_disk(&self, app: &AppState, from: u64, until: u64) -> Result<(Vec<SseEvent>, u64), StreamEnd> {
        let host = self.host.clone();
        let directives = app
            .read(false, move |kv| views::directives_between(kv, &host, from, until))
            .await
            .map_err(StreamEnd::Read)?;
        Ok((directives.iter().map(directive_message).collect(), until + 1))
    }

    fn read_batch(&self, batch: &AppliedBatch, from: u64) -> Vec<SseEvent> {
        match batch.directives.get(&self.host) {
            Some(directives) => {
                directives.iter().filter(|directive| directive.seq >= from).map(directive_message).collect()
            }
            None => Vec::new(),
        }
    }
}

pub async fn watch(
    State(app): State<AppState>,
    PathParams(host): PathParams<String>,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    fleetlog_raft::ledger::validate::check_name(
        "host",
        &host,
        fleetlog_raft::limits::NAME_CHARS_MAX,
        fleetlog_raft::ledger::validate::is_name_char,
    )
    .map_err(|rejection| ApiError::bad_request("invalid_parameter", rejection.message))?;
    let params = Params::new(raw, &["from_seq"])?;
    let head = app.node.feed().head_seq();
    match resume_seq(&headers, &params)? {
        Some(from) if from > head + 1 => Err(beyond_head(from, head)),
        // Resuming: directives only; the agent has its state.
        Some(from) => spawn_stream(app, HostSource { host }, None, from.max(1)),
        None => {
            let name = host.clone();
            let (seq, records) = app.read(false, move |kv| views::watch_state(kv, &name)).await?;
            let state = json!({
                "seq": seq,
                "host": host,
                "targets": records.iter().map(wire::host).collect::<Vec<_>>(),
            });
            let first = SseEvent::default().id(seq.to_string()).event("state").data(state.to_string());
            spawn_stream(app, HostSource { host }, Some(first), seq + 1)
        }
    }
}
