//! Server-Sent Events: `GET /v1/subscribe` (the log, filtered) and `GET /v1/watch/{host}` (one
//! host's desired releases), whichever server received the request (see [`direct`]).
//!
//! Each stream runs [`follow`]: it catches up from disk, then follows its live channel. It
//! remembers the next seq it owes the client; when the channel reports a gap (the stream fell
//! behind it) it goes back to disk, so there is never a gap, and anything below that seq is
//! skipped, so there is never a duplicate. Writing to a slow client slows only its own stream,
//! which then falls behind its channel and reads from disk: nothing is buffered without bound.
//! A client that stops reading altogether loses its stream once a write has made no progress for
//! the send timeout ([`StreamEnd::Stalled`]); it resumes with `Last-Event-ID`.

pub mod direct;
mod host;
mod log;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use fleetlog_raft::storage::feed::Feed;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use fleetlog_raft::domain::resume::{resume_position, ResumeError};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::gate::TokenStreamSlot;
use crate::input::Params;
use crate::routes::events::{beyond_head, parse_filter, FILTER_PARAMS};
use crate::state::AppState;

use self::host::HostSource;
use self::log::{LogFormat, LogSource};

/// A `: head <seq>` comment goes out at least this often.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Heartbeats in a row at which the node was out of contact with the cluster before a stream is
/// ended, so its client reconnects to a node that still hears the leader.
const OUT_OF_CONTACT_BEATS_MAX: u32 = 2;

/// Holds a subscriber slot for the life of a stream.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _token: TokenStreamSlot,
    app: AppState,
}

impl Slot {
    fn take(app: &AppState, principal: &Principal) -> ApiResult<Slot> {
        let token = app.gate.stream_slot(principal).inspect_err(|_| app.metrics.refused())?;
        let permit = app.subscribers.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable(
                "too_many_subscribers",
                "this node serves its maximum number of streams; try another node",
            )
        })?;
        app.metrics.subscribers_active.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { _permit: permit, _token: token, app: app.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.app.metrics.subscribers_active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    #[error("the client went away")]
    ClientGone,
    #[error("the client stopped reading: a write made no progress within the send timeout")]
    Stalled,
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("the node lost contact with the cluster")]
    OutOfContact,
    #[error("reading the log failed: {0}")]
    Read(ApiError),
}

/// What a live channel yields, already filtered for one stream.
enum LiveStep {
    /// Messages (if any) for seqs at or after the one owed, and the head they bring it to.
    Messages {
        text: Option<Bytes>,
        head_seq: u64,
    },
    /// The stream fell behind the channel: what it owes must be read from disk.
    Gap,
    Closed,
}

trait Live: Send {
    /// The next step for a stream that owes seqs from `next` on. Cancel-safe.
    fn next(&mut self, next: u64) -> impl Future<Output = LiveStep> + Send;

    /// The seq the disk must be read up to before the channel brings the rest (channels may
    /// hear of a batch before it is on disk). Zero when the head at the time of reading will do.
    fn disk_until(&self) -> u64 {
        0
    }
}

/// What one kind of stream sends, from disk and live.
trait Source: Send + Sync + 'static {
    type Live: Live;

    fn subscribe(&self, feed: &Feed) -> Self::Live;

    /// Messages for seqs from `from` up to `until` read from disk (possibly a first part of
    /// them), and the seq owed next.
    fn read_disk(
        &self,
        app: &AppState,
        from: u64,
        until: u64,
    ) -> impl Future<Output = Result<(Option<Bytes>, u64), StreamEnd>> + Send;

    /// Called once the disk has been read up to `seq`, before following the live channel again:
    /// a source whose live messages depend on stored state reads it here, as of `seq`.
    fn caught_up(&self, _app: &AppState, _seq: u64) -> impl Future<Output = Result<(), StreamEnd>> + Send {
        async { Ok(()) }
    }
}

/// Where a stream's bytes go: straight to a socket, or to a channel an HTTP body reads.
pub trait Sink: Send {
    fn send(&mut self, text: Bytes) -> impl Future<Output = Result<(), StreamEnd>> + Send;
    /// Resolves when the client is gone.
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

/// A stream whose request was accepted: it holds a slot and knows where to start.
pub struct Opened {
    _slot: Slot,
    first: Option<Bytes>,
    next: u64,
    kind: Kind,
}

enum Kind {
    Log(LogSource),
    Host(HostSource),
}

impl Opened {
    /// Sends the stream until the client leaves or the node shuts down.
    pub async fn run<K: Sink>(self, app: &AppState, sink: &mut K) -> Result<(), StreamEnd> {
        if let Some(first) = self.first {
            sink.send(first).await?;
        }
        match &self.kind {
            Kind::Log(source) => follow(app, source, self.next, sink).await,
            Kind::Host(source) => follow(app, source, self.next, sink).await,
        }
    }
}

/// Validates a stream request (path without query, query parameters, `Last-Event-ID`), takes
/// a subscriber slot and prepares the first message.
pub async fn open(
    app: &AppState,
    principal: &Principal,
    path: &str,
    mut query: HashMap<String, String>,
    last_event_id: Option<&str>,
) -> ApiResult<Opened> {
    // The gate has read the token already.
    query.remove(crate::gate::QUERY_TOKEN_PARAMETER);
    let head = app.node.feed().head_seq();
    if path == "/v1/subscribe" {
        let mut allowed = FILTER_PARAMS.to_vec();
        allowed.extend(["from_seq", "format"]);
        let params = Params::new(query, &allowed)?;
        let filter = parse_filter(&params)?;
        let format = match params.text("format").as_deref() {
            None | Some("fleetlog") => LogFormat::Fleetlog,
            Some("cdevents") => LogFormat::CdEvents,
            Some(_) => return Err(ApiError::bad_request("invalid_parameter", "format is fleetlog or cdevents")),
        };
        let next = resume_seq(last_event_id, &params, head)?.unwrap_or(head + 1);
        let slot = Slot::take(app, principal)?;
        return Ok(Opened { _slot: slot, first: None, next, kind: Kind::Log(LogSource::new(filter, format)) });
    }
    let Some(host) = path.strip_prefix("/v1/watch/") else {
        return Err(ApiError::not_found("not_found", format!("no stream at {path}")));
    };
    let host = host.to_string();
    fleetlog_raft::domain::ledger::validate::check_name(
        "host",
        &host,
        fleetlog_raft::domain::limits::NAME_CHARS_MAX,
        fleetlog_raft::domain::ledger::validate::is_name_char,
    )
    .map_err(|rejection| ApiError::bad_request("invalid_parameter", rejection.message))?;
    let params = Params::new(query, &["from_seq"])?;
    match resume_seq(last_event_id, &params, head)? {
        // Resuming: directives only; the agent has its state.
        Some(from) => {
            let slot = Slot::take(app, principal)?;
            Ok(Opened { _slot: slot, first: None, next: from, kind: Kind::Host(HostSource::resuming(host)) })
        }
        None => {
            let slot = Slot::take(app, principal)?;
            let (seq, first, source) = HostSource::fresh(app, host).await?;
            Ok(Opened { _slot: slot, first: Some(first), next: seq + 1, kind: Kind::Host(source) })
        }
    }
}

/// The seq to resume from (see [`resume_position`]).
fn resume_seq(last_event_id: Option<&str>, params: &Params, head: u64) -> ApiResult<Option<u64>> {
    resume_position(last_event_id, params.text("from_seq").as_deref(), head).map_err(|error| match error {
        ResumeError::BeyondHead { seq, head } => beyond_head(seq, head),
        other => ApiError::bad_request("invalid_parameter", other.to_string()),
    })
}

/// Catch up from disk, follow the live channel, and go back to disk whenever it reports a gap.
async fn follow<S: Source, K: Sink>(app: &AppState, source: &S, mut next: u64, sink: &mut K) -> Result<(), StreamEnd> {
    let feed = app.node.feed().clone();
    // Subscribe before reading the head, so nothing committed in between is missed.
    let mut live = source.subscribe(&feed);
    let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut out_of_contact = 0;
    let mut closing = app.closing.subscribe();
    if *closing.borrow_and_update() {
        return Err(StreamEnd::ShuttingDown);
    }
    loop {
        let disk_until = live.disk_until();
        if feed.head_seq() < disk_until {
            tokio::select! {
                _ = feed.wait_head(disk_until) => {}
                _ = closing.changed() => return Err(StreamEnd::ShuttingDown),
            }
        }
        loop {
            let head = feed.head_seq();
            if next > head {
                break;
            }
            let (text, after) = source.read_disk(app, next, head).await?;
            if let Some(text) = text {
                sink.send(text).await?;
            }
            if after <= next {
                break;
            }
            next = after;
        }
        source.caught_up(app, next - 1).await?;
        loop {
            tokio::select! {
                step = live.next(next) => match step {
                    LiveStep::Messages { text, head_seq } => {
                        if let Some(text) = text {
                            sink.send(text).await?;
                        }
                        next = next.max(head_seq + 1);
                    }
                    LiveStep::Gap => break,
                    LiveStep::Closed => return Err(StreamEnd::ShuttingDown),
                },
                _ = beat.tick() => {
                    // A node cut off from the cluster still beats, but nothing new reaches it.
                    out_of_contact = if app.node.in_contact() { 0 } else { out_of_contact + 1 };
                    if out_of_contact >= OUT_OF_CONTACT_BEATS_MAX {
                        return Err(StreamEnd::OutOfContact);
                    }
                    sink.send(heartbeat(feed.head_seq())).await?
                }
                _ = sink.closed() => return Err(StreamEnd::ClientGone),
                _ = closing.changed() => return Err(StreamEnd::ShuttingDown),
            }
        }
    }
}

fn heartbeat(head_seq: u64) -> Bytes {
    Bytes::from(format!(": head {head_seq}\n\n"))
}

/// Appends one SSE message. `data` is one line of JSON.
// Public only so `benches/streams.rs` can time it; it is not part of the crate's API.
#[doc(hidden)]
pub fn push_message(text: &mut String, id: u64, event: &str, data: &str) {
    use std::fmt::Write;
    let _ = write!(text, "id: {id}\nevent: {event}\ndata: {data}\n\n");
}

/// A stream read by an HTTP response body (requests that came through the HTTP router). The
/// channel stays full while the client reads nothing; after the send timeout the stream ends
/// (and the connection's own send deadline closes the connection).
pub struct ChannelSink {
    pub sender: mpsc::Sender<Bytes>,
    pub send_timeout: Duration,
}

impl Sink for ChannelSink {
    async fn send(&mut self, text: Bytes) -> Result<(), StreamEnd> {
        match tokio::time::timeout(self.send_timeout, self.sender.send(text)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StreamEnd::ClientGone),
            Err(_) => Err(StreamEnd::Stalled),
        }
    }

    async fn closed(&self) {
        self.sender.closed().await
    }
}
