//! The live feed of applied events: the state machine publishes each applied batch once, after
//! it is written; subscribers (SSE tails, agent watches) read it.
//!
//! Log tails share one bounded ring of batches. Agent watches do not: each watched host has its
//! own small channel, and a batch is sent only to the hosts whose desired release it changes, so
//! a rollback touching 10,000 hosts wakes exactly those watchers and a report wakes nobody.
//! A subscriber that falls behind its channel is told it lagged and goes back to reading from
//! disk, so memory per subscriber stays bounded and nobody slows the others.
//!
//! Order matters for gap-freedom: the head moves before any channel hears of a batch, and a
//! subscriber subscribes before it reads the head. Whatever it reads from disk up to that head,
//! plus what its channel delivers afterwards, covers every seq.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, watch};

use crate::event::Event;
use crate::ledger::Directive;

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
}

/// What one apply step added to the ledger.
#[derive(Debug, Default)]
pub struct AppliedBatch {
    pub events: Vec<Arc<CommittedEvent>>,
    /// Desired-release changes by host.
    pub directives: HashMap<String, Vec<Directive>>,
    /// Ledger head after this batch.
    pub head_seq: u64,
}

/// One host's desired-release changes in one apply step.
#[derive(Debug)]
pub struct HostBatch {
    pub directives: Vec<Directive>,
    /// Ledger head after the apply step: the host has no other change up to it.
    pub head_seq: u64,
}

type HostChannels = HashMap<String, broadcast::Sender<Arc<HostBatch>>>;

#[derive(Clone)]
pub struct Feed {
    batches: broadcast::Sender<Arc<AppliedBatch>>,
    head: Arc<watch::Sender<u64>>,
    hosts: Arc<Mutex<HostChannels>>,
}

impl Feed {
    pub fn new(head_seq: u64) -> Feed {
        let (batches, _) = broadcast::channel(FEED_BATCHES_MAX);
        let (head, _) = watch::channel(head_seq);
        Feed { batches, head: Arc::new(head), hosts: Arc::new(Mutex::new(HashMap::new())) }
    }

    fn hosts(&self) -> MutexGuard<'_, HostChannels> {
        // A panic while holding the lock leaves only a map of channels behind; it stays usable.
        self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn publish(&self, mut batch: AppliedBatch) {
        let head_seq = batch.head_seq;
        self.head.send_if_modified(|current| {
            let moved = head_seq > *current;
            if moved {
                *current = head_seq;
            }
            moved
        });
        let directives = std::mem::take(&mut batch.directives);
        if !directives.is_empty() {
            let hosts = self.hosts();
            for (host, directives) in directives {
                if let Some(channel) = hosts.get(&host) {
                    // No receivers left is fine: the last watcher is leaving.
                    let _ = channel.send(Arc::new(HostBatch { directives, head_seq }));
                }
            }
        }
        if !batch.events.is_empty() {
            // No receivers is fine: nobody is tailing.
            let _ = self.batches.send(Arc::new(batch));
        }
    }

    /// Resets the head after a snapshot replaced the state (it may move backwards only then).
    pub fn reset_head(&self, head_seq: u64) {
        self.head.send_replace(head_seq);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppliedBatch>> {
        self.batches.subscribe()
    }

    /// Receives the batches that change `host`'s desired release, from now on.
    pub fn watch_host(&self, host: &str) -> HostReceiver {
        let mut hosts = self.hosts();
        let receiver = match hosts.get(host) {
            Some(channel) => channel.subscribe(),
            None => {
                let (channel, receiver) = broadcast::channel(HOST_BATCHES_MAX);
                hosts.insert(host.to_string(), channel);
                receiver
            }
        };
        HostReceiver { receiver, host: host.to_string(), hosts: self.hosts.clone() }
    }

    /// Hosts with at least one watcher.
    pub fn watched_hosts(&self) -> usize {
        self.hosts().len()
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
}

impl Drop for HostReceiver {
    fn drop(&mut self) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Under the lock nobody can subscribe meanwhile; this receiver is still counted.
        if hosts.get(&self.host).is_some_and(|channel| channel.receiver_count() <= 1) {
            hosts.remove(&self.host);
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

    fn batch(head_seq: u64, hosts: &[&str]) -> AppliedBatch {
        let directives = hosts.iter().map(|host| (host.to_string(), vec![directive(host, head_seq)])).collect();
        AppliedBatch { events: Vec::new(), directives, head_seq }
    }

    #[tokio::test]
    async fn a_host_channel_gets_only_its_own_changes_and_goes_away_with_its_last_watcher() {
        let feed = Feed::new(0);
        let mut first = feed.watch_host("a");
        let second = feed.watch_host("a");
        let _other = feed.watch_host("b");
        feed.publish(batch(5, &["a", "c"]));
        feed.publish(batch(6, &["c"]));
        feed.publish(batch(7, &["a", "b"]));
        assert_eq!(feed.head_seq(), 7);
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

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_told_it_lagged() {
        let feed = Feed::new(0);
        let mut watcher = feed.watch_host("a");
        for seq in 1..=(HOST_BATCHES_MAX as u64 + 3) {
            feed.publish(batch(seq, &["a"]));
        }
        assert!(matches!(watcher.recv().await, Err(broadcast::error::RecvError::Lagged(3))));
        assert_eq!(watcher.recv().await.unwrap().head_seq, 4);
    }
}
