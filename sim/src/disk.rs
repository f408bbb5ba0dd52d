//! A simulated disk: what one node has stored, split into what reached the platter and what is
//! still in the operating system's cache.
//!
//! Every write is visible at once (as a write to a file is) and is unsynced until a sync makes
//! every write before it durable. A process crash keeps everything (the cache survives it). A
//! power loss keeps the synced state plus a prefix of the unsynced writes, as RocksDB's
//! write-ahead log recovers to a point in time: later writes never survive without the earlier
//! ones. Faults make the next writes or syncs fail, or make syncs slow.
//!
//! One copy of the stored state is kept, with an undo record for each unsynced write: a sync
//! forgets the records, a power loss plays back the ones of the writes it loses, newest first.
//!
//! A node opens the disk as one incarnation. A crash starts the next one, and from then on every
//! read and write of the crashed incarnation fails: work the dead process still had in flight
//! cannot reach the disk of its successor.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fleetlog_raft::consensus::types::{Entry, LogId, SnapshotMeta, Vote};
use fleetlog_raft::domain::kv::Writes;

use crate::kv::{Previous, SharedKv};

/// A stored snapshot: its meta and the state it holds.
#[derive(Clone, Debug)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub data: Arc<SharedKv>,
}

/// Everything a node keeps: the Raft log and its metadata, the state machine's key-value
/// spaces (which hold the applied position and membership too) and the current snapshot.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    pub log: BTreeMap<u64, Entry>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    pub state: SharedKv,
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
    /// The whole state replaced (as a snapshot install does).
    ReplaceState(SharedKv),
    Snapshot(StoredSnapshot),
    /// A snapshot install in one write, as the RocksDB store makes it: the state replaced, the
    /// log it covers purged and the snapshot kept. A power loss keeps all of it or none.
    Install(StoredSnapshot),
}

/// What puts the state back as it was before one write.
#[derive(Debug)]
enum Undo {
    /// Log entries as they were at these indexes (`None`: there was none).
    Log(Vec<(u64, Option<Entry>)>),
    /// The log entries a purge removed, and the purged position before it.
    Purge(Vec<Entry>, Option<LogId>),
    Vote(Option<Vote>),
    Committed(Option<LogId>),
    /// Values of state machine keys as they were (`None`: absent).
    State(Previous),
    ReplaceState(SharedKv),
    Snapshot(Option<StoredSnapshot>),
    /// Several undone in reverse order.
    Several(Vec<Undo>),
}

impl Stored {
    /// Makes one write, returning what undoes it.
    fn apply(&mut self, change: Change) -> Undo {
        match change {
            Change::Append(entries) => Undo::Log(
                entries
                    .into_iter()
                    .map(|entry| (entry.log_id.index, self.log.insert(entry.log_id.index, entry)))
                    .collect(),
            ),
            Change::TruncateFrom(index) => {
                Undo::Log(self.log.split_off(&index).into_iter().map(|(index, entry)| (index, Some(entry))).collect())
            }
            Change::Purge(log_id) => {
                // Never backwards: a snapshot install may have purged further already.
                if self.purged >= Some(log_id) {
                    return Undo::Purge(Vec::new(), self.purged);
                }
                let kept = self.log.split_off(&(log_id.index + 1));
                let removed = std::mem::replace(&mut self.log, kept).into_values().collect();
                Undo::Purge(removed, self.purged.replace(log_id))
            }
            Change::Vote(vote) => Undo::Vote(self.vote.replace(vote)),
            Change::Committed(committed) => Undo::Committed(std::mem::replace(&mut self.committed, committed)),
            Change::State(writes) => Undo::State(self.state.apply_undoable(writes)),
            Change::ReplaceState(state) => Undo::ReplaceState(std::mem::replace(&mut self.state, state)),
            Change::Snapshot(snapshot) => Undo::Snapshot(self.snapshot.replace(snapshot)),
            Change::Install(snapshot) => {
                let mut undone = vec![self.apply(Change::ReplaceState((*snapshot.data).clone()))];
                if let Some(last) = snapshot.meta.last_log_id {
                    undone.push(self.apply(Change::Purge(last)));
                }
                undone.push(self.apply(Change::Snapshot(snapshot)));
                Undo::Several(undone)
            }
        }
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Log(entries) => {
                for (index, entry) in entries {
                    match entry {
                        Some(entry) => self.log.insert(index, entry),
                        None => self.log.remove(&index),
                    };
                }
            }
            Undo::Purge(entries, purged) => {
                self.log.extend(entries.into_iter().map(|entry| (entry.log_id.index, entry)));
                self.purged = purged;
            }
            Undo::Vote(vote) => self.vote = vote,
            Undo::Committed(committed) => self.committed = committed,
            Undo::State(previous) => self.state.undo(previous),
            Undo::ReplaceState(state) => self.state = state,
            Undo::Snapshot(snapshot) => self.snapshot = snapshot,
            Undo::Several(undone) => {
                for undo in undone.into_iter().rev() {
                    self.undo(undo);
                }
            }
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
    /// Everything written, synced or not.
    stored: Stored,
    /// One record per unsynced write, oldest first.
    unsynced: Vec<Undo>,
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
        Ok(read(&inner.stored))
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
        let undo = inner.stored.apply(change);
        inner.unsynced.push(undo);
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
        inner.unsynced.clear();
        Ok(())
    }

    /// A node opening the disk recovers whatever the last process wrote, synced or not, and
    /// makes it durable at once, as RocksDB's recovery does (it flushes what it replays from
    /// the write-ahead log, and the node syncs after opening): a restarted node must not report
    /// as held what a power loss could still take.
    pub fn recover(&self) {
        self.lock().unsynced.clear();
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
        let DiskInner { stored, unsynced, .. } = &mut *inner;
        for undo in unsynced.drain(kept..).rev() {
            stored.undo(undo);
        }
        unsynced.clear();
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
        read(&self.lock().stored)
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

    #[tokio::test(start_paused = true)]
    async fn a_power_loss_undoes_every_kind_of_write_it_loses() {
        use fleetlog_raft::domain::kv::Space;
        use openraft::EntryPayload;
        let entry = |term: u64, index: u64| Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        };
        let state = |value: &[u8]| {
            let mut writes = Writes::new();
            writes.insert((Space::Meta, b"k".to_vec()), Some(value.to_vec()));
            writes
        };
        let disk = Disk::new(Duration::ZERO);
        let first = disk.incarnation();
        disk.write(first, Change::Append((1..=6).map(|index| entry(1, index)).collect())).unwrap();
        disk.write(first, Change::State(state(b"synced"))).unwrap();
        disk.sync(first).await.unwrap();
        let before = disk.inspect(|stored| {
            (
                stored.log.clone(),
                stored.state.iter().map(|(_, key, value)| (key.to_vec(), value.to_vec())).collect::<Vec<_>>(),
            )
        });
        disk.write(first, Change::TruncateFrom(5)).unwrap();
        disk.write(first, Change::Append(vec![entry(2, 5)])).unwrap();
        disk.write(first, Change::Purge(entry(1, 2).log_id)).unwrap();
        disk.write(first, Change::State(state(b"lost"))).unwrap();
        let mut replaced = SharedKv::new();
        replaced.apply(state(b"installed"));
        disk.write(first, Change::ReplaceState(replaced)).unwrap();
        disk.write(first, Change::Committed(Some(entry(2, 5).log_id))).unwrap();
        assert_eq!(disk.inspect(|stored| stored.log.keys().copied().collect::<Vec<_>>()), vec![3, 4, 5]);
        disk.lose_power(0);
        let after = disk.inspect(|stored| {
            (
                stored.log.clone(),
                stored.state.iter().map(|(_, key, value)| (key.to_vec(), value.to_vec())).collect::<Vec<_>>(),
            )
        });
        assert_eq!(after, before);
        assert_eq!(disk.inspect(|stored| (stored.purged, stored.committed)), (None, None));
    }
}
