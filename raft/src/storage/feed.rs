//! The live feed of applied events: the state machine publishes each applied batch once, after
//! it is written; subscribers (SSE tails, agent watches) read it.
//!
//! Log tails share one bounded ring of batches, bounded in batches and in bytes
//! ([`FEED_RING_BUDGET_BYTES`]): the broadcast channel carries weak handles, and the feed keeps the
//! batches themselves alive only while they fit the budget, so a tail that stopped reading pins at
//! most that much.
//!
//! Agent watches do not: a host's desired release is resolved from its environment's desired
//! layer, so each (service, env) with watchers has one small channel that hears of the apply
//! steps changing its layer, and each watched host one that hears of its own registration
//! changes. A rollback reaching 10,000 hosts is one message on one channel; each watcher derives
//! its own directive from the layer and its host's registration. The apply step does no work per
//! host and sends nothing per host. A subscriber that falls behind its channel is told it lagged
//! and goes back to reading from disk, so memory per subscriber stays bounded and nobody slows
//! the others.
//!
//! Watch channels hear of a step as soon as its effects are computed, before they are written
//! (the entry is committed: a crash only means computing the same effects again); the head, and
//! with it what readers can see on disk, moves after the write. So a watcher, on subscribing,
//! learns the seq announced so far: it reads the disk up to at least that seq (waiting for the
//! head to get there) and takes everything later from its channels. Log tails subscribe before
//! they read the head, and batches reach their ring after the head moved.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{broadcast, watch};

use futures::future::{select_all, FutureExt};

use crate::domain::event::Event;
use crate::domain::ledger::{LayerChange, RegistrationChange};
pub use crate::domain::limits::FEED_RING_BUDGET_BYTES;

/// Applied batches the shared ring holds before slow log tails lag.
pub const FEED_BATCHES_MAX: usize = 1_024;
/// Steps each watched environment's channel, and each watched host's, holds before their
/// watchers lag.
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

/// The desired layers one apply step changed, in seq order. The same batch goes to the channel
/// of every environment it changes; a watcher following several of them skips what it has seen.
#[derive(Debug)]
pub struct LayerBatch {
    pub changes: Vec<LayerChange>,
    /// Ledger head after the apply step: no watched layer changed otherwise up to it.
    pub head_seq: u64,
}

type Environment = (String, String);

struct WatchChannels {
    environments: HashMap<Environment, broadcast::Sender<Arc<LayerBatch>>>,
    /// Seqs at which a watched host's registration began, moved or ended, or at which a
    /// snapshot replaced the whole state (which may have changed it too).
    hosts: HashMap<String, broadcast::Sender<u64>>,
    /// Every watch message up to this seq has been sent to the channels.
    announced: u64,
}

#[derive(Clone)]
pub struct Feed {
    /// Weak handles: a batch the ring let go of can no longer be read from the channel.
    batches: broadcast::Sender<Weak<AppliedBatch>>,
    ring: Arc<Mutex<Ring>>,
    ring_budget_bytes: usize,
    head: Arc<watch::Sender<u64>>,
    watches: Arc<Mutex<WatchChannels>>,
}

impl Feed {
    pub fn new(head_seq: u64) -> Feed {
        Feed::with_ring_budget(head_seq, FEED_RING_BUDGET_BYTES)
    }

    /// A feed whose ring keeps at most `ring_budget_bytes` of batches (tests use small ones).
    pub fn with_ring_budget(head_seq: u64, ring_budget_bytes: usize) -> Feed {
        let (batches, _) = broadcast::channel(FEED_BATCHES_MAX);
        let (head, _) = watch::channel(head_seq);
        let watches = WatchChannels { environments: HashMap::new(), hosts: HashMap::new(), announced: head_seq };
        Feed {
            batches,
            ring: Arc::default(),
            ring_budget_bytes,
            head: Arc::new(head),
            watches: Arc::new(Mutex::new(watches)),
        }
    }

    fn watches(&self) -> MutexGuard<'_, WatchChannels> {
        lock(&self.watches)
    }

    /// Tells watchers of an apply step's layer and registration changes: one message per
    /// changed environment with watchers, and one per watched host whose registration changed.
    /// Called once the step's effects are computed, before they are written. Registration
    /// messages go first, so a watcher hearing of a layer already has its host's news queued.
    pub fn announce(&self, layers: Vec<LayerChange>, registrations: Vec<RegistrationChange>, head_seq: u64) {
        if layers.is_empty() && registrations.is_empty() {
            return;
        }
        let mut watches = self.watches();
        for change in registrations {
            if let Some(channel) = watches.hosts.get(&change.host) {
                // No receivers left is fine: the last watcher is leaving.
                let _ = channel.send(change.seq);
            }
        }
        let mut changed: Vec<Environment> =
            layers.iter().map(|change| (change.service.clone(), change.env.clone())).collect();
        changed.sort_unstable();
        changed.dedup();
        let watched: Vec<&broadcast::Sender<Arc<LayerBatch>>> =
            changed.iter().filter_map(|environment| watches.environments.get(environment)).collect();
        if !watched.is_empty() {
            let batch = Arc::new(LayerBatch { changes: layers, head_seq });
            for channel in watched {
                let _ = channel.send(batch.clone());
            }
        }
        watches.announced = watches.announced.max(head_seq);
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
    ///
    /// The layer changes the snapshot brought were never announced, so every host watcher is
    /// told, as of the new head, that its registration may have changed: a watcher owing seqs up
    /// to that head reads them from disk again instead of resolving later layers against what
    /// it held before. (Without it, a watch on a follower that caught up by a snapshot skipped
    /// every directive the snapshot covered; the simulator found it, seed 68.)
    pub fn reset_head(&self, head_seq: u64) {
        let mut watches = self.watches();
        watches.announced = head_seq;
        for channel in watches.hosts.values() {
            // No receivers left is fine: the last watcher is leaving.
            let _ = channel.send(head_seq);
        }
        drop(watches);
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

    /// Watches `host`: its registration changes from now on, and the layer changes of the
    /// environments added with [`HostWatch::follow`].
    pub fn watch_host(&self, host: &str) -> HostWatch {
        let mut watches = self.watches();
        let registrations = match watches.hosts.get(host) {
            Some(channel) => channel.subscribe(),
            None => {
                let (channel, receiver) = broadcast::channel(HOST_BATCHES_MAX);
                watches.hosts.insert(host.to_string(), channel);
                receiver
            }
        };
        HostWatch { host: host.to_string(), registrations, environments: Vec::new(), watches: self.watches.clone() }
    }

    /// Hosts with at least one watcher.
    pub fn watched_hosts(&self) -> usize {
        self.watches().hosts.len()
    }

    /// Environments with at least one watcher.
    pub fn watched_environments(&self) -> usize {
        self.watches().environments.len()
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

fn lock(watches: &Mutex<WatchChannels>) -> MutexGuard<'_, WatchChannels> {
    // A panic while holding the lock leaves only maps of channels behind; they stay usable.
    watches.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a watcher hears.
#[derive(Debug)]
pub enum WatchMessage {
    /// The host's registration began, moved or ended at this seq, or a snapshot that may have
    /// changed it was installed up to it.
    Registration(u64),
    /// Layers changed in an apply step that changed one of the followed environments.
    Layers(Arc<LayerBatch>),
}

/// One watcher's channels: its host's, and one per environment it follows. Channels go away
/// with their last watcher.
pub struct HostWatch {
    host: String,
    registrations: broadcast::Receiver<u64>,
    environments: Vec<(Environment, broadcast::Receiver<Arc<LayerBatch>>)>,
    watches: Arc<Mutex<WatchChannels>>,
}

impl HostWatch {
    /// Follows the layer of (service, env) from now on; true when it was not followed yet.
    pub fn follow(&mut self, service: &str, env: &str) -> bool {
        let environment = (service.to_string(), env.to_string());
        if self.environments.iter().any(|(followed, _)| *followed == environment) {
            return false;
        }
        let mut watches = lock(&self.watches);
        let receiver = match watches.environments.get(&environment) {
            Some(channel) => channel.subscribe(),
            None => {
                let (channel, receiver) = broadcast::channel(HOST_BATCHES_MAX);
                watches.environments.insert(environment.clone(), channel);
                receiver
            }
        };
        self.environments.push((environment, receiver));
        true
    }

    /// The next message; registration news first. Cancel-safe.
    pub async fn recv(&mut self) -> Result<WatchMessage, broadcast::error::RecvError> {
        let HostWatch { registrations, environments, .. } = self;
        let layers = async {
            match environments.as_mut_slice() {
                [] => std::future::pending().await,
                // Most hosts are in one environment: no allocation while a watcher idles.
                [(_, receiver)] => receiver.recv().await,
                several => select_all(several.iter_mut().map(|(_, receiver)| receiver.recv().boxed())).await.0,
            }
        };
        tokio::select! {
            biased;
            seq = registrations.recv() => seq.map(WatchMessage::Registration),
            batch = layers => batch.map(WatchMessage::Layers),
        }
    }

    /// The seq up to which watch messages have been announced. Read right after subscribing (or
    /// after lagging), it is how far the disk must be read: the channels bring what follows.
    pub fn announced(&self) -> u64 {
        lock(&self.watches).announced
    }
}

impl Drop for HostWatch {
    fn drop(&mut self) {
        let mut watches = lock(&self.watches);
        // Under the lock nobody can subscribe meanwhile; this watcher's receivers still count.
        if watches.hosts.get(&self.host).is_some_and(|channel| channel.receiver_count() <= 1) {
            watches.hosts.remove(&self.host);
        }
        for (environment, _) in &self.environments {
            if watches.environments.get(environment).is_some_and(|channel| channel.receiver_count() <= 1) {
                watches.environments.remove(environment);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_change(env: &str, seq: u64) -> LayerChange {
        LayerChange { service: "s".into(), env: env.into(), seq, layer: Default::default() }
    }

    /// Announces and publishes one apply step that changes the layers of `envs` and the
    /// registrations of `hosts`.
    fn apply(feed: &Feed, head_seq: u64, envs: &[&str], hosts: &[&str]) {
        let layers = envs.iter().map(|env| layer_change(env, head_seq)).collect();
        let registrations =
            hosts.iter().map(|host| RegistrationChange { host: host.to_string(), seq: head_seq }).collect();
        feed.announce(layers, registrations, head_seq);
        feed.publish(AppliedBatch { events: Vec::new(), head_seq });
    }

    fn seq_of(message: WatchMessage) -> (&'static str, u64) {
        match message {
            WatchMessage::Registration(seq) => ("registration", seq),
            WatchMessage::Layers(batch) => ("layers", batch.head_seq),
        }
    }

    #[tokio::test]
    async fn a_watcher_hears_its_environments_and_its_own_registration_and_channels_go_with_their_last_watcher() {
        let feed = Feed::new(0);
        let mut first = feed.watch_host("a");
        assert!(first.follow("s", "prod"));
        assert!(!first.follow("s", "prod"), "followed once");
        let mut second = feed.watch_host("b");
        second.follow("s", "prod");
        let mut other = feed.watch_host("c");
        other.follow("s", "test");
        apply(&feed, 5, &["prod", "stage"], &[]);
        apply(&feed, 6, &["stage"], &["b", "z"]);
        apply(&feed, 7, &["prod"], &["a"]);
        assert_eq!(feed.head_seq(), 7);
        assert_eq!(first.announced(), 7);
        let heard: Vec<_> = [first.recv().await.unwrap(), first.recv().await.unwrap(), first.recv().await.unwrap()]
            .into_iter()
            .map(seq_of)
            .collect();
        // Registration news goes first once both are queued.
        assert_eq!(heard, [("registration", 7), ("layers", 5), ("layers", 7)]);
        assert_eq!(seq_of(second.recv().await.unwrap()), ("registration", 6));
        assert_eq!(seq_of(second.recv().await.unwrap()), ("layers", 5));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), other.recv()).await.is_err(),
            "test did not change"
        );
        assert_eq!((feed.watched_hosts(), feed.watched_environments()), (3, 2));
        drop(first);
        assert_eq!((feed.watched_hosts(), feed.watched_environments()), (2, 2));
        drop(second);
        assert_eq!((feed.watched_hosts(), feed.watched_environments()), (1, 1));
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
        watcher.follow("s", "prod");
        for seq in 1..=(HOST_BATCHES_MAX as u64 + 3) {
            apply(&feed, seq, &["prod"], &[]);
        }
        assert!(matches!(watcher.recv().await, Err(broadcast::error::RecvError::Lagged(3))));
        assert_eq!(seq_of(watcher.recv().await.unwrap()), ("layers", 4));
    }

    #[tokio::test]
    async fn a_snapshot_install_tells_every_host_watcher_its_host_may_have_changed() {
        let feed = Feed::new(5);
        let mut first = feed.watch_host("a");
        first.follow("s", "prod");
        let mut second = feed.watch_host("b");
        feed.reset_head(40);
        for watcher in [&mut first, &mut second] {
            let heard = tokio::time::timeout(std::time::Duration::from_secs(5), watcher.recv()).await;
            assert_eq!(seq_of(heard.expect("told within 5 s").unwrap()), ("registration", 40));
        }
        assert_eq!(first.announced(), 40);
    }
}
