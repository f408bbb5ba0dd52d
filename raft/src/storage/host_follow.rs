//! One host's directives, live: resolved by the watcher itself from the layer changes of its
//! host's environments, as the feed announces them.
//!
//! A rollback costs the server one message per environment, and each watcher a little
//! arithmetic: the watcher keeps its host's registration (read from disk when its stream caught
//! up, and again whenever that registration changes) and resolves each new layer against it.
//! The server's watch stream (`/v1/watch/{host}`) and the simulator's agents both follow a host
//! this way.

use tokio::sync::broadcast;

use crate::domain::desired::{self, Directive};
use crate::domain::ledger::LayerChange;
use crate::domain::records::HostRecord;
use crate::storage::feed::{Feed, HostWatch, WatchMessage};

/// A host's live channels, and its records as of the last seq its stream covered.
pub struct HostFollower {
    watch: HostWatch,
    /// The host in each of its environments, desired release as of what was sent: only what
    /// resolving needs is kept (no labels, no report), as 10,000 watchers each hold one.
    records: Vec<HostRecord>,
}

/// What following a host yields next.
#[derive(Debug)]
pub enum FollowStep {
    /// Directives at seqs from the one owed on (maybe none), and the head they bring it to.
    Directives {
        directives: Vec<Directive>,
        head_seq: u64,
    },
    /// The stream fell behind the channels, or its host's registration changed after what it
    /// covered: what it owes must be read from disk.
    Gap,
    Closed,
}

impl HostFollower {
    /// Subscribes to `host`'s registration changes from now on; its environments are followed
    /// once [`HostFollower::caught_up`] names them.
    pub fn new(feed: &Feed, host: &str) -> HostFollower {
        HostFollower { watch: feed.watch_host(host), records: Vec::new() }
    }

    /// Takes the host's records (desired releases resolved) as of `seq`, where the stream has
    /// caught up with the disk. True when the disk must be read again: following an environment
    /// for the first time may have missed what was announced since those records were read
    /// (the environment is followed from now on, so this happens once).
    pub fn caught_up(&mut self, seq: u64, records: Vec<HostRecord>) -> bool {
        let mut newly_followed = false;
        self.records.clear();
        for mut record in records {
            newly_followed |= self.watch.follow(&record.service, &record.env);
            record.labels = Default::default();
            record.observed = None;
            self.records.push(record);
        }
        self.records.shrink_to_fit();
        newly_followed && self.watch.announced() > seq
    }

    /// The next step for a stream that owes seqs from `next` on. Cancel-safe.
    pub async fn next(&mut self, next: u64) -> FollowStep {
        loop {
            match self.watch.recv().await {
                // The registration changed after what the stream covered: read it again.
                Ok(WatchMessage::Registration(seq)) if seq >= next => return FollowStep::Gap,
                Ok(WatchMessage::Registration(_)) => continue,
                Ok(WatchMessage::Layers(batch)) => {
                    let directives = self.directives(&batch.changes, next);
                    return FollowStep::Directives { directives, head_seq: batch.head_seq };
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return FollowStep::Gap,
                Err(broadcast::error::RecvError::Closed) => return FollowStep::Closed,
            }
        }
    }

    /// The seq the disk must be read up to before the channels bring the rest (they may hear of
    /// an apply step before it is on disk).
    pub fn disk_until(&self) -> u64 {
        self.watch.announced()
    }

    /// The directives that the layer changes from `next` on make for this host.
    fn directives(&mut self, changes: &[LayerChange], next: u64) -> Vec<Directive> {
        let mut directives = Vec::new();
        for change in changes.iter().filter(|change| change.seq >= next) {
            let Some(record) =
                self.records.iter_mut().find(|record| record.service == change.service && record.env == change.env)
            else {
                continue;
            };
            let before = record.desired.as_ref().map(|desired| desired.release.as_str());
            if let Some(directive) = desired::directive_at(&change.layer, record, change.seq, before) {
                directives.push(directive);
            }
            record.desired = desired::resolve(&change.layer, record);
        }
        directives
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::records::HostRecord;

    fn registered(host: &str) -> HostRecord {
        let mut record: HostRecord = serde_json::from_value(serde_json::json!({
            "host": host, "service": "s", "env": "prod", "registered": true, "group": null, "labels": {},
            "registered_seq": 1, "desired": null, "observed": null, "running": null, "failure": null,
            "health": null, "changed_seq": 1,
        }))
        .expect("a host record");
        record.host = host.into();
        record
    }

    /// A follower caught up at seq 10 on a node that then installs a snapshot up to seq 40:
    /// the layer changes of 11..40 were never announced, so it must go back to disk.
    #[tokio::test]
    async fn a_snapshot_installed_under_a_follower_sends_it_back_to_disk() {
        let feed = Feed::new(10);
        let mut follower = HostFollower::new(&feed, "h1");
        assert!(!follower.caught_up(10, vec![registered("h1")]), "nothing announced since seq 10");
        feed.reset_head(40);
        let step = tokio::time::timeout(Duration::from_secs(5), follower.next(11)).await;
        assert!(matches!(step, Ok(FollowStep::Gap)), "expected a gap, got {step:?}");
    }

    /// A follower that already owes seqs past the snapshot's head has missed nothing.
    #[tokio::test]
    async fn a_snapshot_behind_the_follower_changes_nothing() {
        let feed = Feed::new(10);
        let mut follower = HostFollower::new(&feed, "h1");
        follower.caught_up(10, vec![registered("h1")]);
        feed.reset_head(10);
        let step = tokio::time::timeout(Duration::from_millis(200), follower.next(11)).await;
        assert!(step.is_err(), "nothing to say, got {step:?}");
    }
}
