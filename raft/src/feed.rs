//! The live feed of applied events: the state machine publishes each applied batch once, after
//! it is written; subscribers (SSE tails, agent watches) read it.
//!
//! Log tails share one bounded ring of batches, bounded in batches and in bytes
//! ([`FEED_RING_BUDGET_BYTES`]): the broadcast channel carries weak handles, and the feed keeps the
//! batches themselves alive only while they fit the budget, so a tail that stopped reading pins at
//! most that much. Agent watches do not: each watched host has its own small channel, and a batch is sent only to the hosts whose desired release it changes, so
//! a rollback touching 10,000 hosts wakes exactly those watchers and a report wakes nobody.
//! A subscriber that falls behind its channel is told it lagged and goes back to reading from
//! disk, so memory per subscriber stays bounded and nobody slows the others.
//!
//! Host channels hear of a batch as soon as its effects are computed, before they are written
//! (the entry is committed: a crash only means computing the same effects again); the head, and
//! with it what readers can see on disk, moves after the write. So a watcher, on subscribing,
//! learns the seq announced so far: it reads the disk up to at least that seq (waiting for the
//! head to get there) and takes everything later from its channel. Log tails subscribe before
//! they read the head, and batches reach their ring after the head moved.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{broadcast, watch};

use crate::event::Event;
use crate::ledger::Directive;
pub use crate::limits::FEED_RING_BUDGET_BYTES;

/// Applied batches the shared ring holds before slow log tails lag.
pub const FEED_BATCHES_MAX: usize = 1_024;
/// Batches each watched host's channel holds before its watchers lag.
pub const HOST_BATCHES_MAX: usize = 8;

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

    /// An event with its canonical JSON already rendered (by the apply step; the ledger's tests
    /// check that text is `Event::canonical_json`).
    pub fn rendered(event: Event, json: String) -> CommittedEvent {
        CommittedEvent { event, json }
    }

    /// Memory this event holds, estimated: the rendered JSON, and as much again for the decoded
    /// event (whose strings are all part of that text), plus the fixed parts.
    pub fn approx_bytes(&self) -> usize {
        2 * self.json.len() + std::mem::size_of::<CommittedEvent>()
    }
}

/// What one apply step added to the ledger.
#[derive(Debug, Default)]
pub struct AppliedBatch {
    pub events: Vec<Arc<CommittedEvent>>,
    /// Ledger head after this batch.
    pub head_seq: u64,
}

impl AppliedBatch {
    /// Memory the batch holds, estimated (see [`CommittedEvent::approx_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        self.events.iter().map(|event| event.approx_bytes()).sum::<usize>() + std::mem::size_of::<AppliedBatch>()
    }
}

/// The batches log tails may still need, newest last: what keeps them alive. Bounded by
/// [`FEED_BATCHES_MAX`] and by [`FEED_RING_BUDGET_BYTES`] (the newest batch is kept whatever its
/// size, so live tails always get it).
#[derive(Default)]
struct Ring {
    batches: VecDeque<(Arc<AppliedBatch>, usize)>,
    bytes: usize,
}

impl Ring {
    fn push(&mut self, batch: Arc<AppliedBatch>, bytes: usize, budget_bytes: usize) {
        self.batches.push_back((batch, bytes));
        self.bytes += bytes;
        while self.batches.len() > FEED_BATCHES_MAX || (self.bytes > budget_bytes && self.batches.len() > 1) {
            if let Some((_, dropped)) = self.batches.pop_front() {
                self.bytes -= dropped;
            }
        }
    }
}

/// One host's desired-release changes in one apply step.
#[derive(Debug)]
pub struct HostBatch {
    pub directives: Vec<Directive>,
    /// Ledger head after the apply step: the host has no other change up to it.
    pub head_seq: u64,
}

struct HostChannels {
    channels: HashMap<String, broadcast::Sender<Arc<HostBatch>>>,
    /// Every host batch up to this seq has been sent to the channels.
    announced: u64,
}

#[derive(Clone)]
pub struct Feed {
    /// Weak handles: a batch the ring let go of can no longer be read from the channel.
    batches: broadcast::Sender<Weak<AppliedBatch>>,
    ring: Arc<Mutex<Ring>>,
    ring_budget_bytes: usize,
    head: Arc<watch::Sender<u64>>,
    hosts: Arc<Mutex<HostChannels>>,
}

impl Feed {
    pub fn new(head_seq: u64) -> Feed {
        Feed::with_ring_budget(head_seq, FEED_RING_BUDGET_BYTES)
    }

    /// A feed whose ring keeps at most `ring_budget_bytes` of batches (tests use small ones).
    pub fn with_ring_budget(head_seq: u64, ring_budget_bytes: usize) -> Feed {
        let (batches, _) = broadcast::channel(FEED_BATCHES_MAX);
        let (head, _) = watch::channel(head_seq);
        let hosts = HostChannels { channels: HashMap::new(), announced: head_seq };
        Feed {
            batches,
            ring: Arc::default(),
            ring_budget_bytes,
            head: Arc::new(head),
            hosts: Arc::new(Mutex::new(hosts)),
        }
    }

    fn hosts(&self) -> MutexGuard<'_, HostChannels> {
        // A panic while holding the lock leaves only a map of channels behind; it stays usable.
        self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends an apply step's directives to the watchers of the hosts they change. Called once
    /// the step's effects are computed, before they are written.
    pub fn announce(&self, directives: HashMap<String, Vec<Directive>>, head_seq: u64) {
        if directives.is_empty() {
            return;
        }
        let mut hosts = self.hosts();
        for (host, directives) in directives {
            if let Some(channel) = hosts.channels.get(&host) {
                // No receivers left is fine: the last watcher is leaving.
                let _ = channel.send(Arc::new(HostBatch { directives, head_seq }));
            }
        }
        hosts.announced = hosts.announced.max(head_seq);
    }

    /// Publishes an apply step once its effects are written: the head moves, then log tails
    /// get the batch.
    pub fn publish(&self, batch: AppliedBatch) {
        let head_seq = batch.head_seq;
        self.head.send_if_modified(|current| {
            let moved = head_seq > *current;
            if moved {
                *current = head_seq;
            }
            moved
        });
        // Nobody tailing: nothing to keep. A tail subscribing meanwhile misses no batch: it
        // reads the disk up to the head, which already covers this one.
        if batch.events.is_empty() || self.batches.receiver_count() == 0 {
            return;
        }
        let bytes = batch.approx_bytes();
        let batch = Arc::new(batch);
        let handle = Arc::downgrade(&batch);
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(batch, bytes, self.ring_budget_bytes);
        let _ = self.batches.send(handle);
    }

    /// Resets the head after a snapshot replaced the state (it may move backwards only then).
    pub fn reset_head(&self, head_seq: u64) {
        self.hosts().announced = head_seq;
        self.head.send_replace(head_seq);
    }

    /// Waits until the head reaches `seq` (what was announced is then on disk).
    pub async fn wait_head(&self, seq: u64) {
        let mut head = self.head.subscribe();
        let _ = head.wait_for(|head| *head >= seq).await;
    }

    /// Receives the applied batches published from now on.
    pub fn subscribe(&self) -> BatchReceiver {
        BatchReceiver { receiver: self.batches.subscribe() }
    }

    /// Receives the batches that change `host`'s desired release, announced from now on.
    pub fn watch_host(&self, host: &str) -> HostReceiver {
        let mut hosts = self.hosts();
        let receiver = match hosts.channels.get(host) {
            Some(channel) => channel.subscribe(),
            None => {
                let (channel, receiver) = broadcast::channel(HOST_BATCHES_MAX);
                hosts.channels.insert(host.to_string(), channel);
                receiver
            }
        };
        HostReceiver { receiver, host: host.to_string(), hosts: self.hosts.clone() }
    }

    /// Hosts with at least one watcher.
    pub fn watched_hosts(&self) -> usize {
        self.hosts().channels.len()
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

/// A log tail's view of the ring.
pub struct BatchReceiver {
    receiver: broadcast::Receiver<Weak<AppliedBatch>>,
}

impl BatchReceiver {
    /// The next batch. A tail that fell behind by more than the ring holds, in batches or in
    /// bytes, gets `Lagged` and reads from disk. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Arc<AppliedBatch>, broadcast::error::RecvError> {
        let handle = self.receiver.recv().await?;
        // Let go of by the ring's byte budget before this tail got to it.
        handle.upgrade().ok_or(broadcast::error::RecvError::Lagged(1))
    }
}

/// A watcher's view of one host's channel; the channel goes away with its last watcher.
pub struct HostReceiver {
    receiver: broadcast::Receiver<Arc<HostBatch>>,
    host: String,
    hosts: Arc<Mutex<HostChannels>>,
}

impl HostReceiver {
    pub async fn recv(&mut self) -> Result<Arc<HostBatch>, broadcast::error::RecvError> {
        self.receiver.recv().await
    }

    /// The seq up to which batches have been announced. Read right after subscribing (or
    /// after lagging), it is how far the disk must be read: the channel brings what follows.
    pub fn announced(&self) -> u64 {
        self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).announced
    }
}

impl Drop for HostReceiver {
    fn drop(&mut self) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Under the lock nobody can subscribe meanwhile; this receiver is still counted.
        if hosts.channels.get(&self.host).is_some_and(|channel| channel.receiver_count() <= 1) {
            hosts.channels.remove(&self.host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(host: &str, seq: u64) -> Directive {
        Directive {
            host: host.into(),
            service: "s".into(),
            env: "e".into(),
            release: format!("r{seq}"),
            seq,
            cause: "rollback".into(),
            deployment: None,
        }
    }

    /// Announces and publishes one apply step that changes `hosts`.
    fn apply(feed: &Feed, head_seq: u64, hosts: &[&str]) {
        let directives = hosts.iter().map(|host| (host.to_string(), vec![directive(host, head_seq)])).collect();
        feed.announce(directives, head_seq);
        feed.publish(AppliedBatch { events: Vec::new(), head_seq });
    }

    #[tokio::test]
    async fn a_host_channel_gets_only_its_own_changes_and_goes_away_with_its_last_watcher() {
        let feed = Feed::new(0);
        let mut first = feed.watch_host("a");
        let second = feed.watch_host("a");
        let _other = feed.watch_host("b");
        apply(&feed, 5, &["a", "c"]);
        apply(&feed, 6, &["c"]);
        apply(&feed, 7, &["a", "b"]);
        assert_eq!(feed.head_seq(), 7);
        assert_eq!(first.announced(), 7);
        let seqs: Vec<u64> = [first.recv().await.unwrap(), first.recv().await.unwrap()]
            .iter()
            .map(|batch| batch.directives[0].seq)
            .collect();
        assert_eq!(seqs, [5, 7]);
        assert_eq!(feed.watched_hosts(), 2);
        drop(first);
        assert_eq!(feed.watched_hosts(), 2);
        drop(second);
        assert_eq!(feed.watched_hosts(), 1);
    }

    /// A batch of one event whose data is `data_bytes` long.
    fn large_batch(seq: u64, data_bytes: usize) -> AppliedBatch {
        let event = Event {
            seq,
            id: format!("e{seq}"),
            stream: "s".into(),
            version: seq,
            event_type: "app.note".into(),
            time_micros: 0,
            actor: "a".into(),
            service: None,
            env: None,
            host: None,
            release: None,
            deployment: None,
            data: format!("{{\"x\":\"{}\"}}", "x".repeat(data_bytes)),
            prev_hash: [0; 32],
            hash: [0; 32],
        };
        AppliedBatch { events: vec![Arc::new(CommittedEvent::new(event))], head_seq: seq }
    }

    #[tokio::test]
    async fn a_tail_behind_by_more_than_the_ring_budget_lags_and_the_ring_lets_go() {
        let budget = 1024 * 1024;
        let feed = Feed::with_ring_budget(0, budget);
        let mut tail = feed.subscribe();
        // Ten batches of ~400 KiB (counted twice, rendered and decoded): far fewer batches than
        // the ring holds, but more bytes than its budget.
        let batches: Vec<Weak<AppliedBatch>> = (1..=10u64)
            .map(|seq| {
                feed.publish(large_batch(seq, 200 * 1024));
                let ring = feed.ring.lock().unwrap();
                assert!(ring.bytes <= budget, "the ring holds {} bytes", ring.bytes);
                Arc::downgrade(&ring.batches.back().unwrap().0)
            })
            .collect();
        assert!(batches[0].upgrade().is_none(), "the oldest batch is no longer kept");
        assert!(batches[9].upgrade().is_some(), "the newest batch is kept");
        assert!(matches!(tail.recv().await, Err(broadcast::error::RecvError::Lagged(_))));
        // What is still kept arrives, in order, ending with the newest.
        let mut last = 0;
        while last < 10 {
            match tail.recv().await {
                Ok(batch) => {
                    assert!(batch.head_seq > last);
                    last = batch.head_seq;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => assert_eq!(last, 0, "lagging after a kept batch"),
                Err(broadcast::error::RecvError::Closed) => panic!("the feed closed"),
            }
        }
    }

    #[test]
    fn without_tails_the_feed_keeps_no_batch() {
        let feed = Feed::new(0);
        feed.publish(large_batch(1, 1024));
        assert_eq!(feed.head_seq(), 1);
        assert!(feed.ring.lock().unwrap().batches.is_empty());
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_told_it_lagged() {
        let feed = Feed::new(0);
        let mut watcher = feed.watch_host("a");
        for seq in 1..=(HOST_BATCHES_MAX as u64 + 3) {
            apply(&feed, seq, &["a"]);
        }
        assert!(matches!(watcher.recv().await, Err(broadcast::error::RecvError::Lagged(3))));
        assert_eq!(watcher.recv().await.unwrap().head_seq, 4);
    }
}
