//! The log, filtered: every committed event that matches, in seq order, as fleetlog events or
//! as CDEvents.

use bytes::Bytes;
use fleetlog_raft::domain::views::{self, EventFilter};
use fleetlog_raft::storage::feed::{BatchReceiver, CommittedEvent, Feed};
use tokio::sync::broadcast;

use super::{push_message, Live, LiveStep, Source, StreamEnd};
use crate::cdevents::outgoing::cloud_event;
use crate::state::AppState;

/// Events read from disk per catch-up step.
const CATCH_UP_EVENTS: usize = 1_000;

/// What each message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// The event as every endpoint serves it.
    Fleetlog,
    /// The event as a CloudEvent carrying a CDEvent; events with no CDEvents form are left out
    /// (the heartbeats still say how far the stream has read).
    CdEvents,
}

pub struct LogSource {
    filter: EventFilter,
    format: LogFormat,
}

impl LogSource {
    pub fn new(filter: EventFilter, format: LogFormat) -> LogSource {
        LogSource { filter, format }
    }
}

fn push_event(text: &mut String, event: &CommittedEvent, format: LogFormat) {
    match format {
        LogFormat::Fleetlog => push_message(text, event.event.seq, event.event.event_type.as_str(), &event.json),
        LogFormat::CdEvents => {
            if let Some(cloud) = cloud_event(&event.event) {
                let kind = cloud["type"].as_str().unwrap_or_default().to_string();
                push_message(text, event.event.seq, &kind, &cloud.to_string());
            }
        }
    }
}

fn non_empty(text: String) -> Option<Bytes> {
    (!text.is_empty()).then(|| Bytes::from(text))
}

impl Source for LogSource {
    type Live = LogLive;

    fn subscribe(&self, feed: &Feed) -> LogLive {
        LogLive { receiver: feed.subscribe(), filter: self.filter.clone(), format: self.format }
    }

    async fn read_disk(&self, app: &AppState, from: u64, _until: u64) -> Result<(Option<Bytes>, u64), StreamEnd> {
        let filter = self.filter.clone();
        let page = app
            .read(false, move |kv| views::read_events(kv, &filter, from, CATCH_UP_EVENTS))
            .await
            .map_err(StreamEnd::Read)?;
        // Sized for the page up front: growing a string of hundreds of kilobytes by doubling
        // copies it again and again.
        let mut text = String::with_capacity(page.events.iter().map(|event| event.data.len() + 700).sum());
        for event in page.events {
            push_event(&mut text, &CommittedEvent::new(event), self.format);
        }
        Ok((non_empty(text), page.next_seq))
    }
}

/// The shared ring of applied batches. Batches are contiguous, so one that starts past the seq
/// owed means the stream missed some (so does one the ring let go of: it reports a lag).
pub struct LogLive {
    receiver: BatchReceiver,
    filter: EventFilter,
    format: LogFormat,
}

impl Live for LogLive {
    async fn next(&mut self, next: u64) -> LiveStep {
        loop {
            let batch = match self.receiver.recv().await {
                Ok(batch) => batch,
                Err(broadcast::error::RecvError::Lagged(_)) => return LiveStep::Gap,
                Err(broadcast::error::RecvError::Closed) => return LiveStep::Closed,
            };
            let Some(first) = batch.events.first() else { continue };
            if first.event.seq > next {
                return LiveStep::Gap;
            }
            if batch.head_seq < next {
                continue;
            }
            let mut text = String::new();
            for event in
                batch.events.iter().filter(|event| event.event.seq >= next && self.filter.matches(&event.event))
            {
                push_event(&mut text, event, self.format);
            }
            return LiveStep::Messages { text: non_empty(text), head_seq: batch.head_seq };
        }
    }
}
