//! The live feed of applied events: the state machine publishes each applied batch once, after
//! it is written; subscribers (SSE tails, agent watches) read it. The channel is a bounded ring
//! shared by all subscribers: a subscriber that falls behind it is told it lagged and goes back
//! to reading from disk, so memory per subscriber stays bounded and nobody slows the others.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::event::Event;
use crate::ledger::Directive;

/// Applied batches the ring holds before slow subscribers lag.
pub const FEED_BATCHES_MAX: usize = 1_024;

/// An event with its served JSON rendered once for every subscriber.
#[derive(Debug)]
pub struct CommittedEvent {
    pub event: Event,
    pub json: String,
}

impl CommittedEvent {
    pub fn new(event: Event) -> CommittedEvent {
        let json = event.canonical_json();
        CommittedEvent { event, json }
    }
}

/// What one apply step added to the ledger.
#[derive(Debug, Default)]
pub struct AppliedBatch {
    pub events: Vec<Arc<CommittedEvent>>,
    /// Desired-release changes by host, so a watcher finds its own without scanning others.
    pub directives: HashMap<String, Vec<Directive>>,
    /// Ledger head after this batch.
    pub head_seq: u64,
}

#[derive(Clone)]
pub struct Feed {
    batches: broadcast::Sender<Arc<AppliedBatch>>,
    head: Arc<watch::Sender<u64>>,
}

impl Feed {
    pub fn new(head_seq: u64) -> Feed {
        let (batches, _) = broadcast::channel(FEED_BATCHES_MAX);
        let (head, _) = watch::channel(head_seq);
        Feed { batches, head: Arc::new(head) }
    }

    pub fn publish(&self, batch: AppliedBatch) {
        let head_seq = batch.head_seq;
        if !batch.events.is_empty() {
            // No receivers is fine: nobody is tailing.
            let _ = self.batches.send(Arc::new(batch));
        }
        self.head.send_if_modified(|current| {
            let moved = head_seq > *current;
            if moved {
                *current = head_seq;
            }
            moved
        });
    }

    /// Resets the head after a snapshot replaced the state (it may move backwards only then).
    pub fn reset_head(&self, head_seq: u64) {
        self.head.send_replace(head_seq);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppliedBatch>> {
        self.batches.subscribe()
    }

    pub fn head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    pub fn head_seq(&self) -> u64 {
        *self.head.borrow()
    }

    pub fn subscriber_count(&self) -> usize {
        self.batches.receiver_count()
    }
}
