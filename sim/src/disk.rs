//! A simulated disk: what one node has stored, split into what reached the platter and what is
//! still in the operating system's cache.
//!
//! Every write is visible at once (as a write to a file is) and joins a queue of unsynced
//! changes; a sync makes the whole queue durable, in order. A process crash keeps everything
//! (the cache survives it). A power loss keeps the durable state plus a prefix of the queue, as
//! RocksDB's write-ahead log recovers to a point in time: later writes never survive without the
//! earlier ones. Faults make the next writes or syncs fail, or make syncs slow.
//!
//! A node opens the disk as one incarnation. A crash starts the next one, and from then on every
//! read and write of the crashed incarnation fails: work the dead process still had in flight
//! cannot reach the disk of its successor.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fleetlog_raft::consensus::types::{Entry, LogId, SnapshotMeta, Vote};
use fleetlog_raft::domain::kv::{MemoryKv, Writes};

/// A stored snapshot: its meta and its bytes.
#[derive(Clone, Debug)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub data: Arc<Vec<u8>>,
}

/// Everything a node keeps: the Raft log and its metadata, the state machine's key-value
/// spaces (which hold the applied position and membership too) and the current snapshot.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    pub log: BTreeMap<u64, Entry>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    pub state: MemoryKv,
    pub snapshot: Option<StoredSnapshot>,
}

/// One write, as the queue of unsynced changes holds it.
#[derive(Clone, Debug)]
pub enum Change {
    Append(Vec<Entry>),
    /// Removes the entries from this index on.
    TruncateFrom(u64),
    /// Removes the entries up to this log id and records it as purged (unless purged further).
    Purge(LogId),
    Vote(Vote),
    Committed(Option<LogId>),
    /// State machine writes of one apply step.
    State(Writes),
    /// A snapshot install: the whole state replaced.
    ReplaceState(MemoryKv),
    Snapshot(StoredSnapshot),
}

impl Stored {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Append(entries) => {
                for entry in entries {
                    self.log.insert(entry.log_id.index, entry.clone());
                }
            }
            Change::TruncateFrom(index) => {
                self.log.split_off(index);
            }
            Change::Purge(log_id) => {
                // Never backwards: a snapshot install may have purged further already.
                if self.purged < Some(*log_id) {
                    self.log = self.log.split_off(&(log_id.index + 1));
                    self.purged = Some(*log_id);
                }
            }
            Change::Vote(vote) => self.vote = Some(*vote),
            Change::Committed(committed) => self.committed = *committed,
            Change::State(writes) => self.state.apply(writes.clone()),
            Change::ReplaceState(state) => self.state = state.clone(),
            Change::Snapshot(snapshot) => self.snapshot = Some(snapshot.clone()),
        }
    }
}

/// Faults the disk is told to show.
#[derive(Clone, Debug, Default)]
pub struct DiskFaults {
    /// How long a sync takes.
    pub sync_latency: Duration,
    /// How many of the next syncs fail.
    pub failing_syncs: u32,
    /// How many of the next writes fail.
    pub failing_writes: u32,
}

/// The disk of one node. Clones share it.
#[derive(Clone, Default)]
pub struct Disk {
    inner: Arc<Mutex<DiskInner>>,
}

#[derive(Default)]
struct DiskInner {
    visible: Stored,
    durable: Stored,
    unsynced: Vec<Change>,
    faults: DiskFaults,
    incarnation: u64,
    /// The last incarnation an injected failure hit.
    injected_failure_hit: Option<u64>,
}

fn crashed() -> io::Error {
    io::Error::other("the process that opened this disk has crashed")
}

impl Disk {
    pub fn new(sync_latency: Duration) -> Disk {
        let disk = Disk::default();
        disk.lock().faults.sync_latency = sync_latency;
        disk
    }

    fn lock(&self) -> MutexGuard<'_, DiskInner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The incarnation a node opening the disk now works as.
    pub fn incarnation(&self) -> u64 {
        self.lock().incarnation
    }

    /// Reads what incarnation `incarnation` sees: everything written, synced or not.
    pub fn read<T>(&self, incarnation: u64, read: impl FnOnce(&Stored) -> T) -> io::Result<T> {
        let inner = self.lock();
        if inner.incarnation != incarnation {
            return Err(crashed());
        }
        Ok(read(&inner.visible))
    }

    /// Writes without syncing.
    pub fn write(&self, incarnation: u64, change: Change) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.incarnation != incarnation {
            return Err(crashed());
        }
        if inner.faults.failing_writes > 0 {
            inner.faults.failing_writes -= 1;
            inner.injected_failure_hit = Some(incarnation);
            return Err(io::Error::other("injected write failure"));
        }
        inner.visible.apply(&change);
        inner.unsynced.push(change);
        Ok(())
    }

    /// Makes every write so far durable, after the sync latency.
    pub async fn sync(&self, incarnation: u64) -> io::Result<()> {
        let latency = self.lock().faults.sync_latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut inner = self.lock();
        if inner.incarnation != incarnation {
            return Err(crashed());
        }
        if inner.faults.failing_syncs > 0 {
            inner.faults.failing_syncs -= 1;
            inner.injected_failure_hit = Some(incarnation);
            return Err(io::Error::other("injected fsync failure"));
        }
        let DiskInner { durable, unsynced, .. } = &mut *inner;
        for change in unsynced.drain(..) {
            durable.apply(&change);
        }
        Ok(())
    }

    /// Writes, then syncs.
    pub async fn write_synced(&self, incarnation: u64, change: Change) -> io::Result<()> {
        self.write(incarnation, change)?;
        self.sync(incarnation).await
    }

    /// The process crashed: its incarnation ends, and what it wrote stays (unsynced).
    pub fn crash(&self) {
        self.lock().incarnation += 1;
    }

    /// The power failed: the incarnation ends, and of the unsynced writes only the first `kept`
    /// survive (they may have reached the platter before the cut).
    pub fn lose_power(&self, kept: usize) {
        let mut inner = self.lock();
        inner.incarnation += 1;
        let kept = kept.min(inner.unsynced.len());
        let DiskInner { durable, unsynced, visible, .. } = &mut *inner;
        for change in unsynced.drain(..).take(kept) {
            durable.apply(&change);
        }
        *visible = durable.clone();
    }

    /// An injected failure hit the current incarnation: a node stopping now is expected.
    pub fn injected_failure_hit(&self) -> bool {
        let inner = self.lock();
        inner.injected_failure_hit == Some(inner.incarnation)
    }

    /// Unsynced writes waiting.
    pub fn unsynced_len(&self) -> usize {
        self.lock().unsynced.len()
    }

    pub fn set_faults(&self, change: impl FnOnce(&mut DiskFaults)) {
        change(&mut self.lock().faults);
    }

    /// What is stored now, synced or not, whatever the incarnation: for the checks.
    pub fn inspect<T>(&self, read: impl FnOnce(&Stored) -> T) -> T {
        read(&self.lock().visible)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_raft::consensus::types::NodeId;
    use openraft::vote::leader_id_adv::CommittedLeaderId;
    use openraft::vote::RaftLeaderId;

    fn vote(term: u64) -> Vote {
        Vote::new(term, 1 as NodeId)
    }

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[tokio::test(start_paused = true)]
    async fn power_loss_keeps_the_synced_writes_and_a_prefix_of_the_rest() {
        let disk = Disk::new(Duration::from_millis(2));
        let first = disk.incarnation();
        disk.write_synced(first, Change::Vote(vote(1))).await.unwrap();
        disk.write(first, Change::Vote(vote(2))).unwrap();
        disk.write(first, Change::Committed(Some(log_id(4)))).unwrap();
        disk.write(first, Change::Vote(vote(3))).unwrap();
        disk.lose_power(1);
        let second = disk.incarnation();
        assert_ne!(first, second);
        assert!(disk.read(first, |_| ()).is_err(), "the crashed incarnation can no longer read");
        let (voted, committed) = disk.read(second, |stored| (stored.vote, stored.committed)).unwrap();
        assert_eq!(voted.map(|vote| vote.leader_id().term()), Some(2));
        assert_eq!(committed, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_crash_keeps_unsynced_writes_and_injected_failures_fail_once_each() {
        let disk = Disk::new(Duration::ZERO);
        let first = disk.incarnation();
        disk.write(first, Change::Vote(vote(5))).unwrap();
        disk.crash();
        let second = disk.incarnation();
        assert!(disk.write(first, Change::Vote(vote(6))).is_err());
        assert_eq!(disk.read(second, |stored| stored.vote).unwrap(), Some(vote(5)));
        disk.set_faults(|faults| {
            faults.failing_syncs = 1;
            faults.failing_writes = 1;
        });
        assert!(disk.write(second, Change::Vote(vote(7))).is_err());
        disk.write(second, Change::Vote(vote(8))).unwrap();
        assert!(disk.sync(second).await.is_err());
        disk.sync(second).await.unwrap();
        disk.lose_power(0);
        assert_eq!(disk.read(disk.incarnation(), |stored| stored.vote).unwrap(), Some(vote(8)));
    }
}
